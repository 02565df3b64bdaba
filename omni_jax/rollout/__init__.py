"""Rollout: sample N completions per prompt with a KV cache shared from one prefill."""

from omni_jax.rollout.sampler import RolloutOutput, RolloutSteps, build_rollout_steps, generate
from omni_jax.rollout.sampling import Sampling

__all__ = ["RolloutOutput", "RolloutSteps", "build_rollout_steps", "generate", "Sampling"]
