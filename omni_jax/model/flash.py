"""Blockwise ("flash") attention: online softmax over key blocks, never the whole [T, S] scores.

Same result as `layers.attention` (softmax in float32, masked logits filled with float32's
minimum, so a row that sees no key averages all keys exactly as the plain version does), but the
scores exist one (query block × key block) tile at a time, in the forward pass and in the
backward pass (a custom VJP recomputes each tile from the saved log-sum-exp instead of letting
autodiff keep every tile). Memory per tile: float32[B, heads, query_chunk, key_chunk].

Masks come as indices: key s is visible to query t of row b when kv_valid[b, s] and, if
q_index is given (causal), s <= q_index[b, t]. A tile no query of which can see any key (the
causal upper triangle, left padding) is skipped.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_MASKED = float(jnp.finfo(jnp.float32).min)  # a masked key: as `layers.attention` fills it
_PAD = -float("inf")  # a key added to fill the last block: never counts, not even for all-masked rows


def _blocks(x: jax.Array, size: int, axis: int, fill=0) -> jax.Array:
    """Pad `axis` to a multiple of `size` and move the block index to the front: [n, ..., size, ...]."""
    n = -(-x.shape[axis] // size)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, n * size - x.shape[axis])
    x = jnp.pad(x, pad, constant_values=fill)
    x = x.reshape(*x.shape[:axis], n, size, *x.shape[axis + 1:])
    return jnp.moveaxis(x, axis, 0)


def _unblock(x: jax.Array, axis: int, length: int) -> jax.Array:
    """Inverse of `_blocks` for a block-leading array: [n, ..., size, ...] → [..., n·size, ...][:length]."""
    x = jnp.moveaxis(x, 0, axis)
    x = x.reshape(*x.shape[:axis], -1, *x.shape[axis + 2:])
    return jax.lax.slice_in_dim(x, 0, length, axis=axis)


def _scores(q_blk, k_blk, s_pos, valid, q_pos, scale):
    """Masked scores of one tile: float32[B, K, G, tq, tk].

    q_blk: [B, tq, K, G, H]; k_blk: [B, tk, K, H]; s_pos: int32[tk] key positions (-1 = padding);
    valid: bool[B, tk]; q_pos: int32[B, tq] or None (not causal).
    """
    s = jnp.einsum("bqkgh,bskh->bkgqs", q_blk, k_blk, preferred_element_type=jnp.float32) * scale
    seen = valid[:, None, :]
    if q_pos is not None:
        seen = seen & (s_pos[None, None, :] <= q_pos[:, :, None])
    s = jnp.where(seen[:, None, None], s, _MASKED)
    return jnp.where((s_pos >= 0)[None, None, None, None, :], s, _PAD)


def _any_seen(s_pos, valid, q_pos) -> jax.Array:
    """Whether any query of the tile sees any key of it (else the tile is skipped)."""
    seen = valid & (s_pos >= 0)[None, :]
    if q_pos is not None:
        seen = seen & (s_pos[None, :] <= jnp.max(q_pos, axis=1, keepdims=True))
    return jnp.any(seen)


def _prepare(q, k, v, q_index, kv_valid, query_chunk, key_chunk):
    b, t, n, h = q.shape
    s, kvh = k.shape[1], k.shape[2]
    qc, kc = min(query_chunk or t, t), min(key_chunk, s)
    q_b = _blocks(q.reshape(b, t, kvh, n // kvh, h), qc, 1)  # [nq, B, qc, K, G, H]
    pos_b = None if q_index is None else _blocks(q_index, qc, 1)  # [nq, B, qc]
    k_b, v_b = _blocks(k, kc, 1), _blocks(v, kc, 1)  # [nk, B, kc, K, H]
    s_pos = _blocks(jnp.arange(s, dtype=jnp.int32), kc, 0, fill=-1)  # [nk, kc]
    valid_b = _blocks(kv_valid, kc, 1, fill=False)  # [nk, B, kc]
    # Inside a differentiated scan (the decoder's layers) JAX hoists whatever does not depend on
    # the loop carry out of the loop and precomputes it for every iteration: the masks of all
    # [query block × key block] tiles, i.e. the whole [T, S] mask and fill values, stacked. Tying
    # every input to q through a barrier keeps them loop-variant, so each tile is built in place.
    return jax.lax.optimization_barrier((q_b, pos_b, k_b, v_b, s_pos, valid_b))


def _forward(q, k, v, q_index, kv_valid, query_chunk, key_chunk):
    """(out [B, T, N, H] in q's dtype, lse float32[B, T, N])."""
    b, t, n, h = q.shape
    kvh = k.shape[2]
    scale = h ** -0.5
    q_b, pos_b, k_b, v_b, s_pos, valid_b = _prepare(q, k, v, q_index, kv_valid, query_chunk, key_chunk)
    qc = q_b.shape[2]

    def one_query_block(args):
        q_blk, q_pos = args

        def tile(carry, xs):
            m, l, acc = carry
            k_blk, v_blk, pos, valid = xs

            def update(_):
                sc = _scores(q_blk, k_blk, pos, valid, q_pos, scale)
                m_new = jnp.maximum(m, sc.max(-1))
                p = jnp.exp(sc - m_new[..., None])
                corr = jnp.exp(m - m_new)
                pv = jnp.einsum("bkgqs,bskh->bqkgh", p.astype(v_blk.dtype), v_blk, preferred_element_type=jnp.float32)
                corr_q = jnp.moveaxis(corr, 3, 1)[..., None]  # [B, qc, K, G, 1]
                return m_new, l * corr + p.sum(-1), acc * corr_q + pv

            return jax.lax.cond(_any_seen(pos, valid, q_pos), update, lambda _: carry, None), None

        g = n // kvh
        init = (jnp.full((b, kvh, g, qc), _MASKED, jnp.float32), jnp.zeros((b, kvh, g, qc), jnp.float32),
                jnp.zeros((b, qc, kvh, g, h), jnp.float32))
        (m, l, acc), _ = jax.lax.scan(tile, init, (k_b, v_b, s_pos, valid_b))
        l = jnp.maximum(l, jnp.finfo(jnp.float32).tiny)  # a row whose every tile was skipped: output 0
        out = acc / jnp.moveaxis(l, 3, 1)[..., None]
        return out.astype(q.dtype), m + jnp.log(l)  # [B, qc, K, G, H], [B, K, G, qc]

    out, lse = jax.lax.map(one_query_block, (q_b, pos_b))
    out = _unblock(out, 1, t).reshape(b, t, n, h)
    lse = _unblock(jnp.moveaxis(lse, 4, 2), 1, t).reshape(b, t, n)  # [nq, B, qc, K, G] → [B, T, N]
    return out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _flash(q, k, v, q_index, kv_valid, query_chunk, key_chunk):
    return _forward(q, k, v, q_index, kv_valid, query_chunk, key_chunk)[0]


def _flash_fwd(q, k, v, q_index, kv_valid, query_chunk, key_chunk):
    out, lse = _forward(q, k, v, q_index, kv_valid, query_chunk, key_chunk)
    return out, (q, k, v, q_index, kv_valid, out, lse)


def _flash_bwd(query_chunk, key_chunk, res, d_out):
    q, k, v, q_index, kv_valid, out, lse = res
    b, t, n, h = q.shape
    s, kvh = k.shape[1], k.shape[2]
    g = n // kvh
    scale = h ** -0.5
    q_b, pos_b, k_b, v_b, s_pos, valid_b = _prepare(q, k, v, q_index, kv_valid, query_chunk, key_chunk)
    qc = q_b.shape[2]
    # Per query: D = Σ_h dO·O, the softmax backward's row term; lse laid out like the scores.
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), -1)
    to_rows = lambda x: jnp.moveaxis(_blocks(x.reshape(b, t, kvh, g), qc, 1), 2, 4)  # noqa: E731  [nq, B, K, G, qc]
    do_b = _blocks(d_out.reshape(b, t, kvh, g, h), qc, 1)

    def one_query_block(carry, xs):
        dk_acc, dv_acc = carry
        q_blk, q_pos, do_blk, lse_blk, delta_blk = xs

        def tile(dq, ys):
            k_blk, v_blk, pos, valid = ys

            def grads(_):
                p = jnp.exp(_scores(q_blk, k_blk, pos, valid, q_pos, scale) - lse_blk[..., None])
                dv = jnp.einsum("bkgqs,bqkgh->bskh", p.astype(do_blk.dtype), do_blk,
                                preferred_element_type=jnp.float32)
                dp = jnp.einsum("bqkgh,bskh->bkgqs", do_blk, v_blk, preferred_element_type=jnp.float32)
                ds = (p * (dp - delta_blk[..., None]) * scale).astype(q_blk.dtype)
                dq_t = jnp.einsum("bkgqs,bskh->bqkgh", ds, k_blk, preferred_element_type=jnp.float32)
                dk = jnp.einsum("bkgqs,bqkgh->bskh", ds, q_blk, preferred_element_type=jnp.float32)
                return dq + dq_t, (dk, dv)

            def skip(_):
                zeros = jnp.zeros(k_blk.shape, jnp.float32)
                return dq, (zeros, zeros)

            return jax.lax.cond(_any_seen(pos, valid, q_pos), grads, skip, None)

        dq, (dk, dv) = jax.lax.scan(tile, jnp.zeros(q_blk.shape, jnp.float32), (k_b, v_b, s_pos, valid_b))
        return (dk_acc + dk, dv_acc + dv), dq

    zeros = jnp.zeros(k_b.shape, jnp.float32)
    (dk, dv), dq = jax.lax.scan(one_query_block, (zeros, zeros),
                                (q_b, pos_b, do_b, to_rows(lse), to_rows(delta)))
    dq = _unblock(dq, 1, t).reshape(b, t, n, h).astype(q.dtype)
    dk = _unblock(dk, 1, s).astype(k.dtype)
    dv = _unblock(dv, 1, s).astype(v.dtype)
    return dq, dk, dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_attention(q: jax.Array, k: jax.Array, v: jax.Array, kv_valid: jax.Array, q_index: jax.Array | None = None,
                    *, query_chunk: int = 0, key_chunk: int = 512) -> jax.Array:
    """Blockwise softmax attention with grouped kv heads.

    q: [B, T, N, H]; k, v: [B, S, K, H] (N % K == 0); kv_valid: bool[B, S]; q_index: int32[B, T]
    the key position of each query (causal) or None (every valid key is visible). query_chunk /
    key_chunk: tile sizes (0 = the whole length). Returns [B, T, N, H] in q's dtype.
    """
    if key_chunk <= 0:
        raise ValueError(f"flash_attention needs key_chunk > 0, got {key_chunk}")
    return _flash(q, k, v, q_index, kv_valid, int(query_chunk), int(key_chunk))
