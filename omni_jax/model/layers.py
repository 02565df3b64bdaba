"""Small building blocks shared by the text decoder and the two encoders.

Every parameter is an `nnx.Param` whose `out_sharding` metadata holds *logical* axis names
(mapped to mesh axes by `omni_jax.parallel`). Parameters are stored in `param_dtype`; compute
happens in `dtype` (float32 unless the config says bfloat16). Normalisations and softmax always
run in float32, as HF does. Matmul precision follows JAX's global `jax_default_matmul_precision`
(exact float32 on CPU).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx, struct

from omni_jax.model.flash import flash_attention

Axes = tuple[str | None, ...]


def param(rngs: nnx.Rngs | None, shape: Sequence[int], axes: Axes, init: str, dtype) -> nnx.Param:
    """A parameter with logical axes. init: "normal" (std 0.02), "zeros" or "ones"."""
    if len(axes) != len(shape):
        raise ValueError(f"axes {axes} do not match shape {tuple(shape)}")
    if init == "normal":
        value = 0.02 * jax.random.normal(rngs.params(), shape, jnp.float32)
    elif init == "zeros":
        value = jnp.zeros(shape, jnp.float32)
    elif init == "ones":
        value = jnp.ones(shape, jnp.float32)
    else:
        raise ValueError(f"unknown init {init!r}")
    # eager_sharding=False: placement is decided by the caller from the logical axes, not at init.
    return nnx.Param(value.astype(dtype), out_sharding=tuple(axes), eager_sharding=False)


class Dense(nnx.Module):
    """y = x @ kernel (+ bias) (+ lora(x): an optional low-rank adapter, `omni_jax.model.lora`).

    kernel: [in, out] (HF stores its transpose).
    """

    lora = None  # set by omni_jax.model.lora.add_adapters

    def __init__(self, in_features: int, out_features: int, axes: Axes, *, bias: bool,
                 rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        self.kernel = param(rngs, (in_features, out_features), axes, "normal", param_dtype)
        self.bias = param(rngs, (out_features,), axes[1:], "zeros", param_dtype) if bias else None
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...].astype(self.dtype)
        if self.bias is None:
            y = linear(x.astype(self.dtype), kernel)
        else:
            y = linear_bias(x.astype(self.dtype), kernel, self.bias[...].astype(self.dtype))
        return y if self.lora is None else y + self.lora(x)


@jax.custom_vjp
def linear(x, kernel):
    """x @ kernel with the kernel's gradient written as one contraction over the tokens of x and dy.

    Autodiff gives the same values; written out, XLA:CPU transposes the (materialised) input x for
    the kernel gradient instead of the incoming gradient, which it otherwise transposes inside
    the fused loop that produces it (e.g. the rotary backward of q and k).
    """
    return jnp.dot(x, kernel)


def _linear_fwd(x, kernel):
    return jnp.dot(x, kernel), (x, kernel)


def _linear_bwd(res, dy):
    x, kernel = res
    flat = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
    return jnp.dot(dy, kernel.T), jnp.einsum("td,tf->df", flat(x), flat(dy))


linear.defvjp(_linear_fwd, _linear_bwd)


@jax.custom_vjp
def linear_bias(x, kernel, bias):
    """x @ kernel + bias, with `linear`'s backward (and the bias gradient summed over the tokens)."""
    return jnp.dot(x, kernel) + bias


def _linear_bias_fwd(x, kernel, bias):
    return jnp.dot(x, kernel) + bias, (x, kernel)


def _linear_bias_bwd(res, dy):
    dx, dk = _linear_bwd(res, dy)
    return dx, dk, dy.reshape(-1, dy.shape[-1]).sum(0)


linear_bias.defvjp(_linear_bias_fwd, _linear_bias_bwd)


class RMSNorm(nnx.Module):
    """HF's Qwen2 RMSNorm: normalise in float32, cast back, then scale."""

    def __init__(self, dim: int, axis_name: str, *, eps: float, rngs: nnx.Rngs | None = None,
                 param_dtype=jnp.float32):
        self.weight = param(rngs, (dim,), (axis_name,), "ones", param_dtype)
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.weight[...].astype(x.dtype) * x32.astype(x.dtype)


class LayerNorm(nnx.Module):
    """torch.nn.LayerNorm (eps 1e-5) with weight and bias, computed in float32."""

    def __init__(self, dim: int, axis_name: str, *, eps: float = 1e-5, rngs: nnx.Rngs | None = None,
                 param_dtype=jnp.float32):
        self.weight = param(rngs, (dim,), (axis_name,), "ones", param_dtype)
        self.bias = param(rngs, (dim,), (axis_name,), "zeros", param_dtype)
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        y = y * self.weight[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(x.dtype)


class GatedMLP(nnx.Module):
    """down(act(gate(x)) * up(x)): the Qwen2 text MLP (no bias) and the ViT MLP (with bias)."""

    def __init__(self, dim: int, hidden: int, axes: tuple[str, str], *, bias: bool, act: str,
                 rngs: nnx.Rngs, dtype, param_dtype):
        embed, mlp = axes
        self.gate_proj = Dense(dim, hidden, (embed, mlp), bias=bias, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.up_proj = Dense(dim, hidden, (embed, mlp), bias=bias, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.down_proj = Dense(hidden, dim, (mlp, embed), bias=bias, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        adapters = any(p.lora is not None for p in (self.gate_proj, self.up_proj, self.down_proj))
        if self.act == "silu" and self.gate_proj.bias is None and not adapters:  # the text decoder's MLP
            dtype = self.gate_proj.dtype
            return swiglu(x.astype(dtype), *(p.kernel[...].astype(dtype)
                                             for p in (self.gate_proj, self.up_proj, self.down_proj)))
        return self.down_proj(activation(self.act, self.gate_proj(x)) * self.up_proj(x))


@jax.custom_vjp
def swiglu(x, w_gate, w_up, w_down):
    """(silu(x @ w_gate) * (x @ w_up)) @ w_down, with a hand-written backward pass.

    The same values and gradients as autodiff (to float rounding); the backward is written out so
    each weight gradient is one contraction over the tokens of tensors laid out as the forward
    made them. Autodiff's version made XLA:CPU transpose the [tokens, hidden] activations inside
    fused elementwise loops: 163 ms against 77 ms for one layer's MLP forward + backward at
    8,768 tokens, hidden 128 → 384, 2 CPU cores.
    """
    return (jax.nn.silu(x @ w_gate) * (x @ w_up)) @ w_down


def _swiglu_fwd(x, w_gate, w_up, w_down):
    g, u = x @ w_gate, x @ w_up
    return (jax.nn.silu(g) * u) @ w_down, (x, g, u, w_gate, w_up, w_down)


def _swiglu_bwd(res, dy):
    x, g, u, w_gate, w_up, w_down = res
    sig = jax.nn.sigmoid(g)
    act = g * sig
    h = act * u
    dh = dy @ w_down.T
    du = dh * act
    dg = dh * u * (sig * (1 + g * (1 - sig)))  # silu'(g)
    tokens = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
    x2 = tokens(x)
    dw_down = jnp.einsum("tf,td->fd", tokens(h), tokens(dy))
    dw_gate = jnp.einsum("td,tf->df", x2, tokens(dg))
    dw_up = jnp.einsum("td,tf->df", x2, tokens(du))
    dx = dg @ w_gate.T + du @ w_up.T
    return dx, dw_gate, dw_up, dw_down


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


def activation(name: str, x: jax.Array) -> jax.Array:
    if name == "silu":
        return jax.nn.silu(x)
    if name == "gelu":  # torch's default GELU is the exact erf form
        return jax.nn.gelu(x, approximate=False)
    if name in ("gelu_pytorch_tanh", "gelu_new", "quick_gelu"):
        if name == "quick_gelu":
            return x * jax.nn.sigmoid(1.702 * x)
        return jax.nn.gelu(x, approximate=True)
    raise ValueError(f"unsupported activation {name!r}")


def rotate_half(x: jax.Array) -> jax.Array:
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x: [..., N, H]; cos/sin: [..., H] broadcast over the head axis N."""
    return x * cos[..., None, :] + rotate_half(x) * sin[..., None, :]


@struct.dataclass
class CausalMask:
    """A causal + padding mask given by indices, built block by block inside `attention`.

    Query t of row b (at absolute position q_index[b, t] of the key sequence) sees key s when
    s <= q_index[b, t] and kv_valid[b, s]. Never materialises [B, T, S] for long prompts.
    q_index: int32[B, T]; kv_valid: bool[B, S].
    """

    q_index: jax.Array
    kv_valid: jax.Array

    def block(self, q_index: jax.Array) -> jax.Array:
        s = jnp.arange(self.kv_valid.shape[-1])
        return self.kv_valid[:, None, :] & (s[None, None, :] <= q_index[:, :, None])


@struct.dataclass
class PaddingMask:
    """Every valid key is visible to every query (encoders: attention inside padded groups).

    kv_valid: bool[B, S]. Never materialises [B, T, S].
    """

    kv_valid: jax.Array

    def block(self, rows: jax.Array) -> jax.Array:
        b, s = self.kv_valid.shape
        return jnp.broadcast_to(self.kv_valid[:, None, :], (b, rows.shape[1], s))


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask, *, query_chunk: int = 0,
              key_chunk: int = 0) -> jax.Array:
    """Softmax attention with grouped kv heads.

    q: [B, T, N, H]; k, v: [B, S, K, H] with N % K == 0; mask: bool[B, T, S] (True = attend), a
    CausalMask or a PaddingMask. Returns [B, T, N, H] in q's dtype; logits and softmax in float32.
    With `query_chunk` > 0 and T larger than it, queries are processed in blocks of that size so
    the [T, S] score matrix is never materialised whole (long video prompts). With `key_chunk` > 0
    and S larger than it (index masks only), `flash.flash_attention` also splits the keys and keeps
    a running softmax: the scores exist one [query_chunk, key_chunk] tile at a time, in the
    backward pass too.
    """
    b, t, n, h = q.shape
    kvh = k.shape[2]
    scale = h ** -0.5
    if key_chunk > 0 and k.shape[1] > key_chunk and isinstance(mask, (CausalMask, PaddingMask)):
        q_index = mask.q_index if isinstance(mask, CausalMask) else None
        return flash_attention(q, k, v, mask.kv_valid, q_index, query_chunk=query_chunk, key_chunk=key_chunk)

    def block(q_blk, mask_blk):
        if isinstance(mask, (CausalMask, PaddingMask)):
            mask_blk = mask.block(mask_blk)
        qg = q_blk.reshape(b, q_blk.shape[1], kvh, n // kvh, h)
        logits = jnp.einsum("btkgh,bskh->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
        logits = jnp.where(mask_blk[:, None, None], logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bkgts,bskh->btkgh", probs, v)
        return out.reshape(b, q_blk.shape[1], n, h)

    # What is split into query blocks: the dense mask's rows, or the causal mask's query indices.
    if isinstance(mask, CausalMask):
        rows = mask.q_index
    elif isinstance(mask, PaddingMask):
        rows = jnp.zeros((b, t), jnp.int32)  # only its shape is used
    else:
        rows = mask
    if query_chunk <= 0 or t <= query_chunk:
        return block(q, rows)
    nblk = -(-t // query_chunk)
    pad = nblk * query_chunk - t  # padded query rows are computed and dropped
    q_p = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
    r_p = jnp.pad(rows, ((0, 0), (0, pad)) + ((0, 0),) * (rows.ndim - 2))
    q_blocks = q_p.reshape(b, nblk, query_chunk, n, h).swapaxes(0, 1)
    r_blocks = r_p.reshape(b, nblk, query_chunk, *rows.shape[2:]).swapaxes(0, 1)
    out = jax.lax.map(lambda args: block(*args), (q_blocks, r_blocks))
    return out.swapaxes(0, 1).reshape(b, nblk * query_chunk, n, h)[:, :t]


def shared_prefix_attention(q: jax.Array, pk: jax.Array, pv: jax.Array, p_valid: jax.Array, k: jax.Array,
                            v: jax.Array, mask: "CausalMask") -> jax.Array:
    """Attention over a prompt shared by runs of rows, then each row's own keys (decoding N candidates).

    q: [N, T, heads, H] with N = B·G: rows i·G … i·G+G-1 continue prompt i; pk, pv: [B, P, K, H],
    the prompts' keys and values, read once per prompt (not copied per row); p_valid: bool[B, P];
    k, v: [N, S, K, H], each row's own keys (its completion so far); mask: a CausalMask over those
    S keys. Every prompt key comes before every own key. The same result as `attention` over the
    concatenation [prompt, own] (one softmax over both, in float32). Returns [N, T, heads, H].
    """
    n, t, heads, h = q.shape
    b, kvh = pk.shape[0], pk.shape[2]
    g, grp = n // b, heads // kvh
    scale = h ** -0.5
    low = jnp.finfo(jnp.float32).min
    qg = q.reshape(b, g, t, kvh, grp, h)
    lp = jnp.einsum("brtkgh,bpkh->brkgtp", qg, pk, preferred_element_type=jnp.float32) * scale
    lp = jnp.where(p_valid[:, None, None, None, None, :], lp, low).reshape(n, kvh, grp, t, -1)
    lc = jnp.einsum("ntkgh,nskh->nkgts", q.reshape(n, t, kvh, grp, h), k, preferred_element_type=jnp.float32) * scale
    lc = jnp.where(mask.block(mask.q_index)[:, None, None], lc, low)
    top = jnp.maximum(lp.max(-1, keepdims=True), lc.max(-1, keepdims=True))
    ep, ec = jnp.exp(lp - top), jnp.exp(lc - top)
    denom = ep.sum(-1, keepdims=True) + ec.sum(-1, keepdims=True)
    pp, pc = (ep / denom).astype(v.dtype), (ec / denom).astype(v.dtype)
    out = jnp.einsum("brkgtp,bpkh->brtkgh", pp.reshape(b, g, kvh, grp, t, -1), pv).reshape(n, t, kvh, grp, h)
    out = out + jnp.einsum("nkgts,nskh->ntkgh", pc, v)
    return out.reshape(n, t, heads, h)
