"""Blockwise (flash) attention against a NumPy softmax oracle and the plain `layers.attention`:
outputs and gradients, causal and padding masks, grouped kv heads, ragged block edges."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_jax.model.flash import flash_attention
from omni_jax.model.layers import CausalMask, PaddingMask, attention


def _oracle(q, k, v, seen):
    """Plain NumPy: softmax over the keys a query sees, float64. seen: bool[B, T, S]."""
    b, t, n, h = q.shape
    g = n // k.shape[2]
    kk, vv = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)  # kv head j serves query heads j·g … j·g+g-1
    s = np.einsum("btnh,bsnh->bnts", q, kk) / np.sqrt(h)
    s = np.where(seen[:, None], s, -np.inf)
    with np.errstate(invalid="ignore"):  # a query that sees no key: NaN, compared nowhere
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", p, vv)


def _case(seed, b=2, t=11, s=11, n=4, kvh=2, h=8, left_pad=(0, 3)):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(b, t, n, h)).astype(np.float32)
    k = rng.normal(size=(b, s, kvh, h)).astype(np.float32)
    v = rng.normal(size=(b, s, kvh, h)).astype(np.float32)
    kv_valid = np.ones((b, s), bool)
    for row, pad in enumerate(left_pad):
        kv_valid[row, :pad] = False
    q_index = np.broadcast_to(np.arange(s - t, s), (b, t)).astype(np.int32)  # queries are the last t keys
    return q, k, v, kv_valid, q_index


@pytest.mark.parametrize("qc,kc", [(4, 3), (5, 4), (11, 11), (0, 2)])
def test_causal_matches_numpy_softmax(qc, kc):
    q, k, v, kv_valid, q_index = _case(0)
    seen = kv_valid[:, None, :] & (np.arange(k.shape[1])[None, None, :] <= q_index[:, :, None])
    got = flash_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(kv_valid), jnp.asarray(q_index),
                          query_chunk=qc, key_chunk=kc)
    want = _oracle(q, k, v, seen)
    rows = seen.any(-1)  # queries on left padding see no key: their output is unused
    np.testing.assert_allclose(np.asarray(got)[rows], want[rows], atol=2e-5)


def test_padding_mask_in_groups_matches_numpy_softmax():
    q, k, v, kv_valid, _ = _case(1, b=3, t=9, s=9, left_pad=(0, 2, 8))
    kv_valid = kv_valid[:, ::-1].copy()  # encoder groups: valid slots first, padding last
    got = flash_attention(*(jnp.asarray(a) for a in (q, k, v, kv_valid)), None, query_chunk=4, key_chunk=4)
    want = _oracle(q, k, v, np.broadcast_to(kv_valid[:, None, :], (3, 9, 9)))
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)


def test_prefill_shape_queries_behind_a_longer_cache():
    # Prefill writes T prompt keys into a cache of S > T slots; unwritten slots are invalid.
    q, k, v, kv_valid, _ = _case(2, t=6, s=10)
    kv_valid[:, 6:] = False
    q_index = np.broadcast_to(np.arange(6), (2, 6)).astype(np.int32)
    mask = CausalMask(jnp.asarray(q_index), jnp.asarray(kv_valid))
    plain = attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), mask, query_chunk=4)
    flash = attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), mask, query_chunk=4, key_chunk=3)
    rows = np.asarray(mask.block(mask.q_index)).any(-1)
    np.testing.assert_allclose(np.asarray(flash)[rows], np.asarray(plain)[rows], atol=2e-6)


def test_gradients_match_the_plain_attention():
    q, k, v, kv_valid, q_index = _case(3, t=7, s=10, left_pad=(0, 2))
    mask = CausalMask(jnp.asarray(q_index), jnp.asarray(kv_valid))
    rows = np.asarray(mask.block(mask.q_index)).any(-1)
    weights = jnp.asarray(np.random.default_rng(4).normal(size=q.shape).astype(np.float32) * rows[..., None, None])

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v) * weights)  # padded query rows get no gradient, as in the model

    plain = jax.grad(lambda *a: loss(lambda q, k, v: attention(q, k, v, mask), *a), argnums=(0, 1, 2))
    flash = jax.grad(lambda *a: loss(lambda q, k, v: attention(q, k, v, mask, query_chunk=3, key_chunk=4), *a),
                     argnums=(0, 1, 2))
    args = tuple(jnp.asarray(a) for a in (q, k, v))
    for name, a, b in zip("qkv", plain(*args), flash(*args)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=3e-5, err_msg=f"d{name}")


def test_padding_mask_plain_path_equals_a_dense_mask():
    q, k, v, kv_valid, _ = _case(5, t=8, s=8)
    dense = jnp.broadcast_to(jnp.asarray(kv_valid)[:, None, :], (2, 8, 8))
    args = tuple(jnp.asarray(a) for a in (q, k, v))
    np.testing.assert_array_equal(np.asarray(attention(*args, PaddingMask(jnp.asarray(kv_valid)), query_chunk=3)),
                                  np.asarray(attention(*args, dense, query_chunk=3)))


def test_bfloat16_inputs_stay_close_to_float32():
    q, k, v, kv_valid, q_index = _case(6, t=16, s=16, left_pad=(0, 0))
    seen = np.arange(16)[None, None, :] <= q_index[:, :, None]
    bf = lambda a: jnp.asarray(a, jnp.bfloat16)  # noqa: E731
    got = flash_attention(bf(q), bf(k), bf(v), jnp.asarray(kv_valid), jnp.asarray(q_index), query_chunk=8, key_chunk=4)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), _oracle(q, k, v, seen), atol=3e-2)


def test_key_chunk_must_be_positive():
    q, k, v, kv_valid, _ = _case(7)
    with pytest.raises(ValueError, match="key_chunk"):
        flash_attention(*(jnp.asarray(a) for a in (q, k, v, kv_valid)), key_chunk=0)


def _layer_scan_grad_temp_bytes(t: int) -> int:
    """Compiled temporaries of grad(remat'd 2-layer scan of flash attention) at sequence length t."""
    b, n, kvh, h = 2, 4, 2, 32
    q_index = jnp.broadcast_to(jnp.arange(t), (b, t))
    kv_valid = jnp.ones((b, t), bool)

    def loss(x, k, v):
        def layer(c, _):
            return c + attention(c, k, v, CausalMask(q_index, kv_valid), query_chunk=256, key_chunk=256), None
        body = jax.checkpoint(layer, policy=jax.checkpoint_policies.nothing_saveable, prevent_cse=False)
        return jax.lax.scan(body, x, None, length=2)[0].sum()

    q = jax.ShapeDtypeStruct((b, t, n, h), jnp.float32)
    kv = jax.ShapeDtypeStruct((b, t, kvh, h), jnp.float32)
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, kv, kv).compile().memory_analysis().temp_size_in_bytes


def test_memory_stays_linear_in_length_inside_a_differentiated_layer_scan():
    # The decoder runs attention inside a remat'd `lax.scan` over layers; JAX's scan autodiff
    # hoists loop-invariant work (the masks of every tile) out of the loop and stacks it, i.e.
    # the whole [T, S] mask, unless flash ties it to the queries. Doubling T must about double
    # the temporaries (quadratic growth would quadruple them).
    small, large = _layer_scan_grad_temp_bytes(1024), _layer_scan_grad_temp_bytes(2048)
    assert large < 2.6 * small, (small, large)


def test_thinker_with_flash_attention_gives_the_same_logits():
    # Text decoder and the ViT's attention both switch to flash with attention_key_chunk > 0.
    from flax import nnx

    from omni_jax.model import Thinker, from_hf_dict
    from tests.helpers import tiny_hf as th

    rng = np.random.default_rng(8)
    grids = [(2, 8, 8)]
    ids, mask = th.left_pad([th.expand("see <|vision_bos|><|VIDEO|><|vision_eos|> now", grids_video=grids),
                             th.expand("hi")])
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values_videos=th.pixels(rng, grids),
                  video_grid_thw=np.array(grids), video_second_per_grid=np.array([1.0]))
    logits = {}
    for key_chunk in (0, 8):
        cfg = from_hf_dict(th.thinker_config_dict("a"), attention_query_chunk=8, attention_key_chunk=key_chunk)
        logits[key_chunk] = Thinker(cfg, rngs=nnx.Rngs(0))(**inputs)
    valid = mask.astype(bool)
    np.testing.assert_allclose(logits[8][valid], logits[0][valid], atol=1e-4)
