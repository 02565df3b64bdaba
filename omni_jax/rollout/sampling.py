"""Token sampling: temperature, top-k, top-p (nucleus), greedy.

Order as transformers applies them: divide by temperature, keep the top k, keep the smallest set
of tokens whose probability reaches top_p. Temperature 0 means greedy.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next token is drawn: temperature (0: greedy), top_k (0: off), top_p (1: off).
    ValueError for a negative temperature or top_p outside (0, 1].
    """
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k truncation
    top_p: float = 1.0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def filtered_logits(self, logits: jax.Array) -> jax.Array:
        """float32[B, V]: logits / T with the truncated tokens set to -inf."""
        x = logits.astype(jnp.float32) / (self.temperature or 1.0)
        neg = jnp.finfo(jnp.float32).min
        if self.top_k and self.top_k < x.shape[-1]:
            kth = jax.lax.top_k(x, self.top_k)[0][:, -1:]
            x = jnp.where(x < kth, neg, x)
        if self.top_p < 1.0:
            order = jnp.argsort(-x, axis=-1)
            sorted_x = jnp.take_along_axis(x, order, axis=-1)
            probs = jax.nn.softmax(sorted_x, axis=-1)
            mass_before = jnp.cumsum(probs, axis=-1) - probs  # probability of strictly better tokens
            keep_sorted = mass_before < self.top_p  # the best token is always kept
            keep = jnp.zeros_like(keep_sorted).at[jnp.arange(x.shape[0])[:, None], order].set(keep_sorted)
            x = jnp.where(keep, x, neg)
        return x

    def next_tokens(self, logits: jax.Array, rng: jax.Array) -> jax.Array:
        """int32[B] sampled from logits float[B, V]."""
        if self.greedy:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        # Inverse CDF with one uniform per row: the first token whose cumulative probability
        # reaches u. Exact, like the Gumbel-max trick of jax.random.categorical, which draws a
        # random number per vocabulary entry (3x slower per decode step on CPU at vocab 1,408).
        # Truncated tokens have probability 0, so the cumulative sum never stops on them.
        probs = jax.nn.softmax(self.filtered_logits(logits), axis=-1)
        cdf = jnp.cumsum(probs, axis=-1)
        u = (1.0 - jax.random.uniform(rng, (logits.shape[0], 1))) * cdf[:, -1:]  # in (0, total]
        return jnp.minimum(jnp.sum(cdf < u, axis=-1), logits.shape[-1] - 1).astype(jnp.int32)

    def logprobs(self, logits: jax.Array, tokens: jax.Array) -> jax.Array:
        """float32[B]: log-prob of `tokens` under softmax(logits / T), the policy the GRPO loss uses
        (before top-k / top-p truncation; T = 1 when greedy)."""
        lp = jax.nn.log_softmax(logits.astype(jnp.float32) / (self.temperature or 1.0), axis=-1)
        return jnp.take_along_axis(lp, tokens[:, None], axis=-1)[:, 0]
