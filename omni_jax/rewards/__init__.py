"""Rewards of the people-focus GRPO recipe: format, accuracy, people_focus (+ optional LLM judge).

Entry point for the trainer: `RewardFn(tokenizer, config.rewards)`; defaults in `rewards.config`.
"""

from omni_jax.rewards.total import COMPONENTS, RewardFn

__all__ = ["COMPONENTS", "RewardFn"]
