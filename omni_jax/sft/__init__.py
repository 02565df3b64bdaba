"""Supervised fine-tuning (full or LoRA) on HumanOmniV2-format rows: `python -m omni_jax.sft`."""

from omni_jax.sft.loop import run

__all__ = ["run"]
