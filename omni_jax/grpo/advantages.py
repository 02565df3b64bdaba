"""Group-relative advantages, picked by the config's `scale_rewards`.

    A_i = r_i − mean(r over i's group)                       scale_rewards = "none"  (HumanOmniV2's runs)
    A_i = (r_i − mean_group) / (std_group + eps)              "group" (GRPO / TRL default)
    A_i = (r_i − mean_group) / (std over the whole batch + eps) "batch"

std is the unbiased (n−1) estimate, as torch.std in HumanOmniV2's trainer; eps = 1e-4 as there.
Rows are grouped as the sampler emits them: rows g·G … g·G+G−1 answer prompt g.
"""

from __future__ import annotations

import jax.numpy as jnp

SCALES = ("group", "batch", "none")


def group_advantages(rewards, group_size: int, scale: str = "group", eps: float = 1e-4):
    """rewards: float32[B·G] → advantages float32[B·G]."""
    if scale not in SCALES:
        raise ValueError(f"scale_rewards must be one of {SCALES}, got {scale!r}")
    if rewards.shape[0] % group_size:
        raise ValueError(f"{rewards.shape[0]} rewards do not split into groups of {group_size}")
    r = rewards.reshape(-1, group_size).astype(jnp.float32)
    centred = r - r.mean(axis=1, keepdims=True)
    if scale == "group":
        centred = centred / (_std(r, axis=1) + eps)
    elif scale == "batch":
        centred = centred / (_std(r.reshape(-1), axis=None) + eps)
    return centred.reshape(-1)


def _std(x, axis):
    n = x.size if axis is None else x.shape[axis]
    if n < 2:
        return jnp.zeros(()) if axis is None else jnp.zeros((x.shape[0], 1))
    return jnp.std(x, axis=axis, ddof=1, keepdims=axis is not None)
