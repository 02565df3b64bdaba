"""The CPU decode backend: the decoder's weights packed for the fused CPU decode layer
(`cpu_gemv.decoder_layer`), and one new token per row through every layer by it.

    head_and_layers = pack(thinker)                    # once per set of weights (jit it)
    layers = unstack(thinker.model, packed_layers)     # inside the jitted decode, before its loop
    prompt_cache, cache = heads_major(prompt_cache), heads_major(cache)
    hidden, cache = decode_token(thinker.model, x, cos, sin, layers, prompt, cache, step)
    logits = project(hidden, packed_head)

`LastPacking` keeps the last packing while the same weight arrays come again.

It reads the model's modules by their attribute names (the text decoder's `layers` stack,
`norm`, each layer's `self_attn` / `mlp` projections and norms, the Thinker's `lm_head` or tied
`embed_tokens`) and imports nothing of `omni_jax.model`: the rollout chooses it or XLA's ops.
float32, on one CPU device (see `cpu_gemv.usable`).
"""

from __future__ import annotations

import weakref

import jax
import jax.numpy as jnp
from flax import nnx

from omni_jax.kernels import cpu_gemv


def pack_kernels(state: nnx.State) -> nnx.State:
    """A copy of `state` whose `kernel` parameters ([K, N], or stacks [L, K, N]) are packed for the
    CPU decode kernel (`cpu_gemv.PackedKernel`, float32), as `cpu_gemv.decoder_layer` reads them.
    A module merged with it is only a container of those weights (its layers cannot run on them).
    Inference only; pack once, before a decode loop.
    """
    def one(path, v):
        if isinstance(v, nnx.Param) and path[-1] == jax.tree_util.DictKey("kernel") and v.get_value().ndim in (2, 3):
            return v.replace(cpu_gemv.pack(v.get_value()))
        return v

    return jax.tree_util.tree_map_with_path(one, state, is_leaf=lambda v: isinstance(v, nnx.Variable))


def pack_layers(text_model) -> nnx.State:
    """The text decoder's stacked layers' state with every weight matrix packed (`pack_kernels`;
    a float32 copy of the decoder's weights)."""
    return pack_kernels(nnx.split(text_model.layers)[1])


def pack_head(thinker) -> cpu_gemv.PackedKernel:
    """The output projection [D, vocab] (lm_head, or the tied embedding) packed for `project`."""
    if thinker.lm_head is None:
        return cpu_gemv.pack(thinker.model.embed_tokens.embedding[...], transposed=True)
    return cpu_gemv.pack(thinker.lm_head.kernel[...])


def pack(thinker) -> tuple[nnx.State, cpu_gemv.PackedKernel]:
    """(packed layer stacks, packed head) of a Thinker: everything `decode_token` and `project` read."""
    return pack_layers(thinker.model), pack_head(thinker)


def unstack(text_model, packed: nnx.State) -> tuple:
    """(graphdef, [state of layer 0, layer 1, ...]) on `packed` (from `pack_layers`): each layer's
    state names its matrix of the packed stacks (no copy per layer); only the small parameters
    (norms, biases) are sliced. Slice once, before the decode loop."""
    graphdef, layer_state = nnx.split(text_model.layers)
    n_layers = jax.tree.leaves(layer_state)[0].shape[0]

    def layer(v, i):
        value = v.get_value()
        return v.replace(value.at_layer(i) if isinstance(value, cpu_gemv.PackedKernel) else value[i])

    is_var = lambda v: isinstance(v, nnx.Variable)  # noqa: E731
    return graphdef, [jax.tree.map(lambda v, i=i: layer(v, i), packed, is_leaf=is_var) for i in range(n_layers)]


def heads_major(cache: dict) -> dict:
    """{"k", "v": [L, B, S, K, H]} → {"k", "v": tuples of one [B, K, S, H] per layer}, as the fused
    layer reads a cache: each head's keys are then one sequential read."""
    return {k: tuple(jnp.swapaxes(v[i], 1, 2) for i in range(v.shape[0])) for k, v in cache.items()}


def decode_token(text_model, x, cos, sin, layers: tuple, prompt_cache: tuple, cache: dict, step):
    """One new token per row through every layer, each layer one fused CPU custom call
    (`cpu_gemv.decoder_layer`: norms, q/k/v, rotary, attention, o, MLP; float32).

    x: [R, D] the tokens' embeddings; cos, sin: [R, H]; layers: `unstack(text_model, pack_layers(
    text_model))`; prompt_cache: (k, v: tuples of one [P, K, T, H] per layer, valid: bool[P, T]),
    rows r·G … r·G+G-1 continuing prompt r; cache: {"k", "v": tuples of one [R, K, S, H] per
    layer}, the rows' own tokens, positions < `step` written (all rows advance together).
    Returns (hidden [R, D] after the final norm, the cache with this token at `step`).
    """
    graphdef, states = layers
    pk, pv, p_valid = prompt_cache
    ks, vs = list(cache["k"]), list(cache["v"])
    x = x.astype(jnp.float32)
    for i, state in enumerate(states):
        layer = nnx.merge(graphdef, state)
        att, mlp = layer.self_attn, layer.mlp
        x, k_new, v_new = cpu_gemv.decoder_layer(
            x, cos, sin, input_norm=layer.input_layernorm.weight[...],
            q=(att.q_proj.kernel.get_value(), att.q_proj.bias[...]),
            k=(att.k_proj.kernel.get_value(), att.k_proj.bias[...]),
            v=(att.v_proj.kernel.get_value(), att.v_proj.bias[...]), o=att.o_proj.kernel.get_value(),
            post_norm=layer.post_attention_layernorm.weight[...], gate=mlp.gate_proj.kernel.get_value(),
            up=mlp.up_proj.kernel.get_value(), down=mlp.down_proj.kernel.get_value(),
            prompt=(pk[i], pv[i], p_valid), cache=(ks[i], vs[i]), step=step, eps=layer.input_layernorm.eps)
        at = (0, 0, step, 0)
        ks[i] = jax.lax.dynamic_update_slice(ks[i], k_new[:, :, None].astype(ks[i].dtype), at)
        vs[i] = jax.lax.dynamic_update_slice(vs[i], v_new[:, :, None].astype(vs[i].dtype), at)
    return text_model.norm(x), {"k": tuple(ks), "v": tuple(vs)}


def project(hidden: jax.Array, head: cpu_gemv.PackedKernel) -> jax.Array:
    """[..., D] → float32[..., vocab] by the packed output projection (from `pack_head`)."""
    return cpu_gemv.matmul(hidden, head)


class LastPacking:
    """The last packing of decoder weights, reused while the same weight arrays are passed again
    (evaluation loops, benchmarks); a training step's new weights are packed again. Holds one
    packed copy at most, and weak references to the weights it was packed from."""

    def __init__(self):
        self.key, self.refs, self.value = None, (), None

    def get(self, graphdef, state, pack):
        """pack(graphdef, state), or the value kept from the last call with these same arrays."""
        leaves = jax.tree.leaves(state)
        key = (graphdef, tuple(id(a) for a in leaves))
        if self.key == key and all(r() is a for r, a in zip(self.refs, leaves)):
            return self.value
        self.key, self.refs, self.value = None, (), None
        value = pack(graphdef, state)
        try:
            refs = [weakref.ref(a) for a in leaves]
        except TypeError:  # leaves that cannot be weakly referenced: do not cache
            return value
        self.key, self.refs, self.value = key, refs, value
        return value
