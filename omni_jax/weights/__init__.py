"""Hugging Face weights: the HF ↔ Flax name table, safetensors reading and writing, HF loading.

A low layer: it imports only the model's config (`omni_jax.model.config`), so the model loader,
the checkpoint store and both conversion directions (`omni_jax.convert`) build on it.
"""
