"""Sampling methods: greedy, temperature, top-k, top-p, checked against their distributions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_jax.rollout.sampling import Sampling


def _truncated_reference(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """The distribution transformers samples from: temperature, then top-k, then top-p (NumPy)."""
    x = logits.astype(np.float64) / temperature
    if top_k:
        kth = np.sort(x)[::-1][top_k - 1]
        x = np.where(x < kth, -np.inf, x)
    p = np.exp(x - x.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(p)  # ascending, as transformers' TopPLogitsWarper
        cum = np.cumsum(p[order])
        remove = cum <= 1 - top_p
        remove[-1] = False
        p[order[remove]] = 0
        p /= p.sum()
    return p


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (0.9, 6, 0.7)])
def test_empirical_frequencies_match_truncated_softmax(temperature, top_k, top_p):
    from scipy.stats import chisquare

    rng = np.random.default_rng(0)
    logits = rng.normal(scale=1.5, size=12).astype(np.float32)
    expected = _truncated_reference(logits, temperature, top_k, top_p)
    s = Sampling(temperature, top_k, top_p)
    n = 40000
    batch = jnp.broadcast_to(jnp.asarray(logits), (n, 12))
    draws = np.asarray(jax.jit(s.next_tokens)(batch, jax.random.key(1)))
    counts = np.bincount(draws, minlength=12)
    assert counts[expected == 0].sum() == 0, "a truncated token was sampled"
    keep = expected > 0
    stat = chisquare(counts[keep], n * expected[keep])
    assert stat.pvalue > 1e-3, (counts, n * expected)


def test_greedy_is_argmax_and_logprob_is_untruncated():
    logits = jnp.asarray([[0.1, 3.0, -1.0], [2.0, 1.0, 0.5]])
    s = Sampling(0.0)
    np.testing.assert_array_equal(s.next_tokens(logits, jax.random.key(0)), [1, 0])
    lp = s.logprobs(logits, jnp.asarray([1, 2]))
    ref = jax.nn.log_softmax(logits, -1)
    np.testing.assert_allclose(lp, [ref[0, 1], ref[1, 2]], rtol=1e-6)
    t = Sampling(0.5, top_k=1)
    np.testing.assert_allclose(t.logprobs(logits, jnp.asarray([0, 0])),
                               jax.nn.log_softmax(logits / 0.5, -1)[:, 0], rtol=1e-6)


def test_top_k_one_equals_greedy():
    logits = jax.random.normal(jax.random.key(3), (64, 50))
    draws = Sampling(1.0, top_k=1).next_tokens(logits, jax.random.key(4))
    np.testing.assert_array_equal(draws, jnp.argmax(logits, -1))


@pytest.mark.parametrize("kw,match", [(dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
                                      (dict(temperature=-1.0), "temperature"), (dict(top_k=-2), "top_k")])
def test_bad_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        Sampling(**kw)
