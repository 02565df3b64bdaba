"""The GRPO policy loss: per-token clipped importance ratio, KL to a frozen reference, aggregation.

    ratio_t = exp(logp_t − old_logp_t)
    pg_t    = −min(ratio_t · A, clip(ratio_t, 1 − ε_low, 1 + ε_high) · A)
    kl_t    = k3: exp(ref − logp) − (ref − logp) − 1      (HumanOmniV2, TRL)
              k1: logp − ref
    loss_t  = pg_t + β_t · kl_t

Aggregation (a config string, each a small function):
    seq-mean-token-mean  mean over sequences of each sequence's token mean (HumanOmniV2)
    token-mean           all tokens of the batch weigh the same (DAPO)
    dr_grpo              sum over tokens / (sequences · max completion length) (Dr. GRPO)
Each takes explicit global normalisers so that summing micro-batch losses (gradient
accumulation) gives exactly the loss of the whole batch.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

AGGREGATIONS = ("seq-mean-token-mean", "token-mean", "dr_grpo")
KL_ESTIMATORS = ("k1", "k3")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The GRPO loss's settings: clipping ε, the KL weight β (its estimator and decay), and how tokens are averaged."""
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    beta: float = 0.04
    kl_estimator: str = "k3"
    beta_decay: bool = False  # HumanOmniV2: β falls linearly to 0.25β over the first half of training
    aggregation: str = "seq-mean-token-mean"

    def __post_init__(self):
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"loss aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        if self.epsilon_low < 0 or self.epsilon_high < 0 or self.beta < 0:
            raise ValueError("epsilon_low, epsilon_high and beta must be >= 0")


def beta_at(cfg: LossConfig, step, total_steps: int):
    """β for this optimizer step (the decay schedule when enabled)."""
    if not cfg.beta_decay:
        return jnp.float32(cfg.beta)
    half = max(total_steps / 2.0, 1.0)
    frac = jnp.minimum(step / half, 1.0)
    return jnp.float32(cfg.beta) * (1.0 - 0.75 * frac)


def kl_per_token(logp, ref_logp, estimator: str):
    """Per-token KL(π‖π_ref) estimate from the two log-probs: k1 = logp − ref_logp, or k3 (Schulman's, ≥ 0)."""
    if estimator == "k1":
        return logp - ref_logp
    d = ref_logp - logp
    return jnp.exp(d) - d - 1.0


@struct.dataclass
class Normalisers:
    """Whole-batch counts, so micro-batch losses sum to the batch loss."""

    num_sequences: float  # sequences in the whole batch
    num_tokens: float  # valid completion tokens in the whole batch
    max_length: float  # completion budget M (dr_grpo's constant)


def per_token_loss(cfg: LossConfig, logp, old_logp, ref_logp, advantages, beta):
    """float32[N, M] per-token loss and the pieces used for metrics. advantages: float32[N]."""
    a = advantages[:, None]
    ratio = jnp.exp(logp - old_logp)
    clipped = jnp.clip(ratio, 1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high)
    pg = -jnp.minimum(ratio * a, clipped * a)
    kl = kl_per_token(logp, ref_logp, cfg.kl_estimator) if ref_logp is not None else jnp.zeros_like(logp)
    is_clipped = ((ratio < 1.0 - cfg.epsilon_low) & (a < 0)) | ((ratio > 1.0 + cfg.epsilon_high) & (a > 0))
    return pg + beta * kl, dict(kl=kl, ratio=ratio, clipped=is_clipped.astype(jnp.float32))


def aggregate(cfg: LossConfig, values, mask, norm: Normalisers):
    """Reduce float32[N, M] per-token values of one micro-batch to its share of the batch loss."""
    m = mask.astype(jnp.float32)
    if cfg.aggregation == "seq-mean-token-mean":
        per_seq = (values * m).sum(-1) / jnp.maximum(m.sum(-1), 1.0)
        return per_seq.sum() / norm.num_sequences
    if cfg.aggregation == "token-mean":
        return (values * m).sum() / jnp.maximum(norm.num_tokens, 1.0)
    return (values * m).sum() / (norm.num_sequences * norm.max_length)


def grpo_loss(cfg: LossConfig, logp, old_logp, ref_logp, advantages, mask, norm: Normalisers, beta):
    """(loss scalar, metrics dict of this micro-batch's shares). Shapes: float32[N, M], mask bool[N, M]."""
    tok_loss, parts = per_token_loss(cfg, logp, old_logp, ref_logp, advantages, beta)
    loss = aggregate(cfg, tok_loss, mask, norm)
    m = mask.astype(jnp.float32)
    token_share = lambda x: (x * m).sum() / jnp.maximum(norm.num_tokens, 1.0)  # noqa: E731
    metrics = {
        "kl": token_share(parts["kl"]),
        "clip_fraction": token_share(parts["clipped"]),
        "ratio_mean": token_share(parts["ratio"]),
    }
    return loss, jax.tree.map(jax.lax.stop_gradient, metrics)
