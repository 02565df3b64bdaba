"""The Qwen2 text decoder of the Thinker: GQA with q/k/v bias, RMSNorm, SwiGLU, multimodal RoPE.

Layers are stacked on a leading "layers" axis (created with `nnx.vmap`) and run with
`jax.lax.scan`, so a 28-layer model compiles one layer body. An optional KV cache is a plain
pytree `{"k": [L, B, S, K, H], "v": [L, B, S, K, H]}` written at `cache_index` (the same write
position for every row: prompts are left padded and all rows advance together) and carried
through the layer scan, so decoding updates it in place.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from omni_jax import parallel
from omni_jax.model.config import TextConfig
from omni_jax.model.layers import CausalMask, Dense, GatedMLP, RMSNorm, apply_rotary, attention, param, \
    shared_prefix_attention

KVCache = dict[str, jax.Array]


class TextAttention(nnx.Module):
    """GQA self-attention of a decoder layer: q/k/v with bias, multimodal rotary, a KV cache optional."""

    def __init__(self, cfg: TextConfig, *, rngs: nnx.Rngs, dtype, param_dtype, query_chunk: int, key_chunk: int = 0):
        d, n, k, h = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.kv_head_dim
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.q_proj = Dense(d, n * h, ("embed", "heads"), bias=True, **kw)
        self.k_proj = Dense(d, k * h, ("embed", "kv_heads"), bias=True, **kw)
        self.v_proj = Dense(d, k * h, ("embed", "kv_heads"), bias=True, **kw)
        self.o_proj = Dense(n * h, d, ("heads", "embed"), bias=False, **kw)
        self.num_heads, self.num_kv_heads, self.head_dim = n, k, h
        self.query_chunk, self.key_chunk = query_chunk, key_chunk

    def __call__(self, x, cos, sin, mask, cache=None, layer=None, cache_index=None, prefix=None,
                 prompt_cache=None):
        """x: [B, T, D]; cos/sin: [B, T, H]; mask: a CausalMask (or bool[B, T, S]).

        Without a cache S == T. With one (k, v: [L, B, S, K, H]) this layer's new keys and values
        are written in place at [layer, :, cache_index] and attention reads the layer's whole
        cache. With `prefix` = (k, v: [B / prefix_share, P, K, H], prefix_share) — keys and values of
        a shared prompt, one per `prefix_share` consecutive rows — the keys are that prompt's followed by x's own
        (S == P + T). With `prompt_cache` = (k, v: [L, B / G, P, K, H], valid: bool[B / G, P])
        next to a cache (decoding candidates of shared prompts): the cache holds only each row's own
        tokens and attention reads the prompt's keys once per G rows, then the row's cache (the
        mask covers the cache only). Returns (out [B, T, D], cache, (k, v) of x's tokens after rotary).
        """
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        cos, sin = cos.astype(q.dtype), sin.astype(q.dtype)  # HF casts the tables to the compute dtype
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        new_kv = (k, v)
        if prefix is not None:
            pk, pv, prefix_share = prefix
            rows = lambda a: parallel.constrain(jnp.repeat(a.astype(k.dtype), prefix_share, axis=0),  # noqa: E731
                                                ("batch", "length", "act_kv_heads", None))
            k = jnp.concatenate([rows(pk), k], axis=1)
            v = jnp.concatenate([rows(pv), v], axis=1)
        if cache is not None:
            at = (layer, 0, cache_index, 0, 0)
            cache = {"k": jax.lax.dynamic_update_slice(cache["k"], k[None].astype(cache["k"].dtype), at),
                     "v": jax.lax.dynamic_update_slice(cache["v"], v[None].astype(cache["v"].dtype), at)}
            k, v = cache["k"][layer], cache["v"][layer]
        q = parallel.constrain(q, ("batch", "length", "act_heads", None))
        if prompt_cache is not None:
            pk, pv, p_valid = prompt_cache
            out = shared_prefix_attention(q, pk[layer].astype(q.dtype), pv[layer].astype(q.dtype), p_valid,
                                          k.astype(q.dtype), v.astype(q.dtype), mask)
            return self.o_proj(out.reshape(b, t, -1)), cache, new_kv
        out = attention(q, k.astype(q.dtype), v.astype(q.dtype), mask, query_chunk=self.query_chunk,
                        key_chunk=self.key_chunk)
        return self.o_proj(out.reshape(b, t, -1)), cache, new_kv


class DecoderLayer(nnx.Module):
    """One Qwen2 decoder layer: RMSNorm, attention, RMSNorm, SwiGLU MLP, each with a residual."""

    def __init__(self, cfg: TextConfig, *, rngs: nnx.Rngs, dtype, param_dtype, query_chunk: int, key_chunk: int = 0):
        self.input_layernorm = RMSNorm(cfg.hidden_size, "norm", eps=cfg.rms_norm_eps, param_dtype=param_dtype)
        self.self_attn = TextAttention(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype, query_chunk=query_chunk,
                                       key_chunk=key_chunk)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, "norm", eps=cfg.rms_norm_eps, param_dtype=param_dtype)
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"), bias=False,
                            act=cfg.hidden_act, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, x, cos, sin, mask, cache=None, layer=None, cache_index=None, prefix=None, prompt_cache=None):
        h, cache, kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer, cache_index, prefix,
                                      prompt_cache)
        x = x + h
        x = x + self.mlp(self.post_attention_layernorm(x))
        return parallel.constrain(x, ("batch", "length", "act_embed")), cache, kv


_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class TextModel(nnx.Module):
    """HF's Qwen2_5OmniThinkerTextModel: embed_tokens, layers, norm."""

    def __init__(self, cfg: TextConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                 remat: str = "none", query_chunk: int = 0, key_chunk: int = 0, layer_loop: str = "scan"):
        self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, rngs=rngs, param_dtype=param_dtype)

        @nnx.split_rngs(splits=cfg.num_hidden_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_layers(rngs):
            return DecoderLayer(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype, query_chunk=query_chunk,
                                key_chunk=key_chunk)

        self.layers = make_layers(rngs)
        self.norm = RMSNorm(cfg.hidden_size, "norm", eps=cfg.rms_norm_eps, param_dtype=param_dtype)
        if remat not in ("none", *_REMAT_POLICIES):
            raise ValueError(f"remat must be none|full|dots, got {remat!r}")
        if layer_loop not in ("scan", "unrolled"):
            raise ValueError(f"layer_loop must be scan|unrolled, got {layer_loop!r}")
        self.remat = remat
        self.layer_loop = layer_loop
        self.dtype = dtype

    def unstacked_layers(self) -> tuple:
        """(graphdef, [state of layer 0, layer 1, ...]): each layer's weights sliced off the stacks.

        For a decode loop: slice once before the loop and pass them as `layers=` on every step.
        Inside a `scan` over the stacked weights XLA:CPU copies each layer's weights out of the
        stack before every matmul, which doubles a memory-bound decode step's traffic.
        (The CPU decode kernel's packed weights: `omni_jax.kernels.cpu_decode.unstack`.)
        """
        graphdef, layer_state = nnx.split(self.layers)
        n_layers = jax.tree.leaves(layer_state)[0].shape[0]
        is_var = lambda v: isinstance(v, nnx.Variable)  # noqa: E731
        return graphdef, [jax.tree.map(lambda v, i=i: v.replace(v.get_value()[i]), layer_state, is_leaf=is_var)
                          for i in range(n_layers)]

    def _run_layers(self, body, carry, layers: tuple | None):
        """carry through every layer: body(carry, (layer state, layer index)) -> (carry, None).

        A `scan` over the stacked weights, or a Python loop over `layers` (from
        `unstacked_layers()`, or made here when layer_loop is "unrolled"); remat per layer.
        """
        if layers is None and self.layer_loop == "unrolled":
            layers = self.unstacked_layers()
        if self.remat != "none":
            body = jax.checkpoint(body, policy=_REMAT_POLICIES[self.remat], prevent_cse=False)
        if layers is not None:
            for i, state in enumerate(layers[1]):
                carry, _ = body(carry, (state, i))
            return carry
        layer_state = nnx.split(self.layers)[1]
        n_layers = jax.tree.leaves(layer_state)[0].shape[0]
        return jax.lax.scan(body, carry, (layer_state, jnp.arange(n_layers)))[0]

    def _graphdef(self, layers: tuple | None):
        return layers[0] if layers is not None else nnx.graphdef(self.layers)

    def __call__(self, inputs_embeds, cos, sin, mask, cache: KVCache | None = None, cache_index=None,
                 layers: tuple | None = None, prompt_cache: tuple | None = None):
        """inputs_embeds: [B, T, D]; cos/sin: float32[B, T, H]; mask: a CausalMask over S keys.

        layers: from `unstacked_layers()`: run the layers one after another (unrolled) on those
        slices instead of scanning the stacked weights (as `layer_loop="unrolled"` does).
        prompt_cache: (k, v: [L, B / G, P, K, H], valid: bool[B / G, P]), the keys and values of
        the prompts that runs of G rows continue, read (never written) next to `cache`, which
        then holds the rows' own tokens only (see `TextAttention`).
        Returns (hidden [B, T, D] after the final norm, the updated cache or None).
        """
        graphdef = self._graphdef(layers)

        # The cache rides in the carry so each layer updates it in place (no copy per step).
        def body(carry, xs):
            x, cache = carry
            state, layer = xs
            x, cache, _ = nnx.merge(graphdef, state)(x, cos, sin, mask, cache, layer, cache_index,
                                                     prompt_cache=prompt_cache)
            return (x, cache), None

        x = parallel.constrain(inputs_embeds.astype(self.dtype), ("batch", "length", "act_embed"))
        x, cache = self._run_layers(body, (x, cache), layers)
        return self.norm(x), cache

    def shared_prompt(self, prompt: tuple, rest: tuple, prefix_share: int, layers: tuple | None = None):
        """Prompts and the rows that continue them, through the decoder side by side, layer by layer.

        prompt: (embeds [B / prefix_share, P, D], cos, sin, mask over its P keys): each prompt once;
        rest: (embeds [B, T, D], cos, sin, mask over P + T keys): the continuations, each run of
        `prefix_share` consecutive rows continuing one prompt. In every layer the prompts go first and
        the continuations then attend to that layer's prompt keys and values followed by their
        own, so the result equals running each row's prompt + continuation, while the prompt's
        work is done once per run; only one layer's prompt keys and values exist at a time.
        Differentiable: a prompt's gradient sums over the rows that continue it.
        Returns (prompt hidden [B / prefix_share, P, D], continuation hidden [B, T, D]), both after the final norm.
        """
        graphdef = self._graphdef(layers)
        p_embeds, p_cos, p_sin, p_mask = prompt
        embeds, cos, sin, mask = rest

        def body(carry, xs):
            xp, x = carry
            state, _ = xs
            layer = nnx.merge(graphdef, state)
            xp, _, (k, v) = layer(xp, p_cos, p_sin, p_mask)
            x, _, _ = layer(x, cos, sin, mask, prefix=(k, v, prefix_share))
            return (xp, x), None

        constrain = lambda a: parallel.constrain(a.astype(self.dtype), ("batch", "length", "act_embed"))  # noqa: E731
        xp, x = self._run_layers(body, (constrain(p_embeds), constrain(embeds)), layers)
        return self.norm(xp), self.norm(x)


class Embed(nnx.Module):
    """The token embedding table [vocab, D]; `attend` is its transpose as a tied output projection."""

    def __init__(self, vocab: int, dim: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.embedding = param(rngs, (vocab, dim), ("vocab", "embed"), "normal", param_dtype)

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], ids, axis=0)

    def attend(self, x: jax.Array) -> jax.Array:
        """Logits with the embedding as output projection (tied lm_head)."""
        return jnp.dot(x, self.embedding[...].astype(x.dtype).T)


def causal_mask(kv_valid: jax.Array, q_index: jax.Array) -> CausalMask:
    """Query t (at absolute index q_index[b, t]) sees key s if s <= q_index and s is valid.

    kv_valid: bool[B, S] (False on left padding and unwritten cache slots); q_index: int[B, T].
    """
    return CausalMask(q_index.astype(jnp.int32), kv_valid.astype(bool))


def init_cache(cfg: TextConfig, batch: int, length: int, dtype=jnp.bfloat16) -> KVCache:
    """A zero KV cache {"k", "v": [L, batch, length, K, H]} of `dtype` for the text decoder."""
    shape = (cfg.num_hidden_layers, batch, length, cfg.num_key_value_heads, cfg.kv_head_dim)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
