"""Hugging Face weights: the HF ↔ Flax name table, safetensors reading and writing, HF loading.

A low layer: it imports only the model's config (`omni_jax.model.config`) and CLIP
(`omni_jax.clip`, for `clip_mapping` / `clip_load`), so the model loader, the checkpoint store,
both conversion directions (`omni_jax.convert`) and the timestamp post-processor build on it.
"""
