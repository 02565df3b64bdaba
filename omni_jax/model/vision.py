"""The Qwen2.5-VL vision encoder of the Thinker.

Patch embedding (a linear map of each 3·2·14·14 patch), 2-D rotary attention in windows of
`window_size` px with full attention (within one temporal grid of 2 frames, never across time) at
`fullatt_block_indexes`, RMSNorm, gated MLP, and a 2×2 patch merger into the text width.
The ragged window / frame groups come from `layout.vision_layout` (host side).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from omni_jax import parallel
from omni_jax.model.config import VisionConfig
from omni_jax.model.layers import Dense, GatedMLP, PaddingMask, RMSNorm, activation, apply_rotary, attention
from omni_jax.model.rope import vision_cos_sin


def grouped_attention(q, k, v, index, valid, inverse, query_chunk: int = 0, key_chunk: int = 0):
    """Attention inside ragged groups of one sequence.

    q, k, v: [N, heads, hd]; index/valid: [G, S]; inverse: int[N]. Returns [N, heads, hd].
    Groups are independent, so they are spread over the batch mesh axes like rows of a batch.
    """
    qg, kg, vg = (parallel.constrain(x[index], ("batch", None, "act_heads", None)) for x in (q, k, v))
    out = attention(qg, kg, vg, PaddingMask(valid), query_chunk=query_chunk, key_chunk=key_chunk)
    return out.reshape(-1, *out.shape[2:])[inverse]


class VisionAttention(nnx.Module):
    """Multi-head self-attention of a vision block within groups of patches (windows, or whole frames in the full-attention blocks), with 2-D rotary."""

    def __init__(self, cfg: VisionConfig, *, rngs, dtype, param_dtype):
        d = cfg.hidden_size
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.q = Dense(d, d, ("vision_embed", "vision_heads"), bias=True, **kw)
        self.k = Dense(d, d, ("vision_embed", "vision_heads"), bias=True, **kw)
        self.v = Dense(d, d, ("vision_embed", "vision_heads"), bias=True, **kw)
        self.proj = Dense(d, d, ("vision_heads", "vision_embed"), bias=True, **kw)
        self.num_heads = cfg.num_heads

    def __call__(self, x, cos, sin, groups, query_chunk, key_chunk):
        n, d = x.shape
        q, k, v = (f(x).reshape(n, self.num_heads, -1) for f in (self.q, self.k, self.v))
        # HF rotates in float32 and casts back.
        q = apply_rotary(q.astype(jnp.float32), cos, sin).astype(x.dtype)
        k = apply_rotary(k.astype(jnp.float32), cos, sin).astype(x.dtype)
        out = grouped_attention(q, k, v, *groups, query_chunk=query_chunk, key_chunk=key_chunk)
        return self.proj(out.reshape(n, d))


class VisionBlock(nnx.Module):
    """One vision encoder block: RMSNorm, attention, RMSNorm, gated MLP (hidden_act), each with a residual."""

    def __init__(self, cfg: VisionConfig, *, rngs, dtype, param_dtype):
        self.norm1 = RMSNorm(cfg.hidden_size, "norm", eps=1e-6, param_dtype=param_dtype)
        self.norm2 = RMSNorm(cfg.hidden_size, "norm", eps=1e-6, param_dtype=param_dtype)
        self.attn = VisionAttention(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, ("vision_embed", "vision_mlp"), bias=True,
                            act=cfg.hidden_act, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, x, cos, sin, groups, query_chunk, key_chunk):
        x = x + self.attn(self.norm1(x), cos, sin, groups, query_chunk, key_chunk)
        return parallel.constrain(x + self.mlp(self.norm2(x)), ("vision_tokens", "act_embed"))


class PatchMerger(nnx.Module):
    """spatial_merge_size² neighbouring patches → one token of the decoder's width (RMSNorm, two-layer GELU MLP)."""

    def __init__(self, cfg: VisionConfig, *, rngs, dtype, param_dtype):
        wide = cfg.hidden_size * cfg.spatial_merge_size**2
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.ln_q = RMSNorm(cfg.hidden_size, "norm", eps=1e-6, param_dtype=param_dtype)
        self.mlp_0 = Dense(wide, wide, ("vision_mlp", "vision_embed"), bias=True, **kw)
        self.mlp_2 = Dense(wide, cfg.out_hidden_size, ("vision_embed", "embed"), bias=True, **kw)
        self.wide = wide

    def __call__(self, x):
        x = self.ln_q(x).reshape(-1, self.wide)
        return self.mlp_2(activation("gelu", self.mlp_0(x)))


class VisionEncoder(nnx.Module):
    """HF's Qwen2_5OmniVisionEncoder (`thinker.visual`)."""

    def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                 query_chunk: int = 0, key_chunk: int = 0):
        self.patch_embed = Dense(cfg.patch_dim, cfg.hidden_size, ("vision_patch", "vision_embed"), bias=False,
                                 rngs=rngs, dtype=dtype, param_dtype=param_dtype)

        @nnx.split_rngs(splits=cfg.depth)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_blocks(rngs):
            return VisionBlock(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

        self.blocks = make_blocks(rngs)
        self.merger = PatchMerger(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.full_attention = tuple(bool(i in cfg.fullatt_block_indexes) for i in range(cfg.depth))
        self.cfg = cfg
        self.query_chunk, self.key_chunk = query_chunk, key_chunk

    def __call__(self, pixel_values: jax.Array, layout) -> jax.Array:
        """pixel_values: [N, C·T·P·P]; layout: a VisionLayout of device arrays.

        Returns [N / merge², out_hidden_size] in the processor's (grid) order.
        """
        cfg = self.cfg
        unit = cfg.spatial_merge_size**2
        x = self.patch_embed(pixel_values)
        n, d = x.shape
        # Patches are independent outside attention: spread them over the batch mesh axes.
        x = parallel.constrain(x.reshape(n // unit, unit, d)[layout.window_index].reshape(n, d),
                               ("vision_tokens", "act_embed"))
        cos, sin = (parallel.constrain(a, ("vision_tokens", None))
                    for a in vision_cos_sin(layout.hw_positions, d // cfg.num_heads, cfg.rope_theta))
        windows = (layout.windows.index, layout.windows.valid, layout.windows.inverse)
        frames = (layout.frames.index, layout.frames.valid, layout.frames.inverse)
        graphdef, state = nnx.split(self.blocks)
        chunks = (self.query_chunk, self.key_chunk)

        def body(h, xs):
            block_state, full = xs
            block = nnx.merge(graphdef, block_state)
            h = jax.lax.cond(full,
                             lambda h: block(h, cos, sin, frames, *chunks),
                             lambda h: block(h, cos, sin, windows, *chunks), h)
            return h, None

        x, _ = jax.lax.scan(body, x, (state, jnp.asarray(self.full_attention)))
        merged = self.merger(x)
        return merged[layout.reverse_index]
