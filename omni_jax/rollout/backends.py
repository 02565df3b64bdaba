"""The two ways the decode loop runs one token through the decoder: XLA's ops, or the fused CPU
decode kernel (`omni_jax.kernels.cpu_decode`). `backend(...)` is the one place that chooses.

    be = backend(model, cpu_decode_kernel=..., unroll_layers=..., packed=...)   # before the loop
    cache, prompt_cache = be.caches(cache, prompt_cache)                  # laid out as it reads them
    hidden, cache = be.step(tokens, positions, kv_valid, prompt, cache, step)
    logits = be.logits(hidden)
"""

from __future__ import annotations

import jax.numpy as jnp

from omni_jax.kernels import cpu_decode
from omni_jax.model.rope import mrope_cos_sin
from omni_jax.model.text import causal_mask
from omni_jax.model.thinker import Thinker


class XlaDecode:
    """The model's own layers (a scan over the stacked weights, or unrolled on slices made once)."""

    def __init__(self, model: Thinker, unroll_layers: bool):
        self.model = model
        # Sliced once, outside the loop (see TextModel.unstacked_layers).
        self.layers = model.model.unstacked_layers() if unroll_layers else None

    def caches(self, cache: dict, prompt_cache: dict) -> tuple[dict, dict]:
        return cache, prompt_cache

    def step(self, tok, pos, kv_valid, prompt: tuple, cache, step):
        """tok int32[R], pos int32[R] (this token's position), kv_valid bool[R, M] with `step` set."""
        rows = tok.shape[0]
        x = self.model.model.embed_tokens(tok[:, None])
        pos = jnp.broadcast_to(pos[None, :, None], (3, rows, 1))
        q_index = jnp.full((rows, 1), step)
        hidden, cache = self.model.hidden_states(x, pos, causal_mask(kv_valid, q_index), cache, step,
                                                 layers=self.layers, prompt_cache=prompt)
        return hidden[:, 0], cache

    def logits(self, hidden):
        return self.model.logits(hidden)


class CpuKernelDecode:
    """Every decoder layer one fused CPU custom call on weights packed by `cpu_decode.pack`, and the
    output projection by the kernel's matrix product (float32, one CPU device)."""

    def __init__(self, model: Thinker, packed: tuple):
        layer_state, self.head = packed
        self.model = model
        self.layers = cpu_decode.unstack(model.model, layer_state)  # sliced once, outside the loop

    def caches(self, cache: dict, prompt_cache: dict) -> tuple[dict, dict]:
        # Both caches as one [rows, K, S, H] array per layer (the prompt's transposed and split once, here).
        return cpu_decode.heads_major(cache), cpu_decode.heads_major(prompt_cache)

    def step(self, tok, pos, kv_valid, prompt: tuple, cache, step):
        t = self.model.cfg.text
        positions = jnp.broadcast_to(pos[None, :, None], (3, tok.shape[0], 1))  # a text token: three equal rows
        cos, sin = mrope_cos_sin(positions, t.kv_head_dim, t.rope_theta, t.mrope_section)
        return cpu_decode.decode_token(self.model.model, self.model.model.embed_tokens(tok), cos[:, 0], sin[:, 0],
                                       self.layers, prompt, cache, step)

    def logits(self, hidden):
        return cpu_decode.project(hidden, self.head)


def backend(model: Thinker, *, cpu_decode_kernel: bool, unroll_layers: bool, packed: tuple | None = None):
    """The decode backend: the CPU kernel's on `packed` (from `cpu_decode.pack`), else XLA's ops."""
    return CpuKernelDecode(model, packed) if cpu_decode_kernel else XlaDecode(model, unroll_layers)

