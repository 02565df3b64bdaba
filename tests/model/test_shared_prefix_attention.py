"""Attention over a prompt read once per run of rows equals attention over [prompt, own keys] per row."""

import jax.numpy as jnp
import numpy as np
import pytest

from omni_jax.model.layers import CausalMask, attention, shared_prefix_attention


@pytest.mark.parametrize("t", [1, 3])
def test_equals_attention_over_the_concatenated_keys(t):
    rng = np.random.default_rng(0)
    b, g, p, s, heads, kvh, h = 2, 3, 7, 5, 4, 2, 8
    n = b * g
    q = jnp.asarray(rng.normal(size=(n, t, heads, h)), jnp.float32)
    pk, pv = (jnp.asarray(rng.normal(size=(b, p, kvh, h)), jnp.float32) for _ in range(2))
    k, v = (jnp.asarray(rng.normal(size=(n, s, kvh, h)), jnp.float32) for _ in range(2))
    p_valid = jnp.asarray(np.arange(p)[None] >= np.array([[0], [3]]))  # prompt 1 is left padded by 3
    written = 3  # own positions 0..2 written; queries at own positions written - t .. written - 1
    own_valid = jnp.asarray(np.broadcast_to(np.arange(s) < written, (n, s)))
    q_own = jnp.broadcast_to(jnp.arange(written - t, written), (n, t))
    got = shared_prefix_attention(q, pk, pv, p_valid, k, v, CausalMask(q_own, own_valid))

    # Reference: each row's prompt copied in front of its own keys, one causal mask over both.
    rows = lambda a: jnp.repeat(a, g, axis=0)  # noqa: E731
    kk, vv = jnp.concatenate([rows(pk), k], 1), jnp.concatenate([rows(pv), v], 1)
    valid = jnp.concatenate([rows(p_valid), own_valid], 1)
    want = attention(q, kk, vv, CausalMask(q_own + p, valid))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6)
    # And it can fail: rows read their own group's prompt only.
    wrong = shared_prefix_attention(q, pk[::-1], pv[::-1], p_valid[::-1], k, v, CausalMask(q_own, own_valid))
    assert np.abs(np.asarray(wrong) - np.asarray(want)).max() > 1e-2
