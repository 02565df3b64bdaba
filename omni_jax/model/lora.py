"""LoRA adapters on the text decoder's projections (Hu et al. 2021), kept apart from the weights.

    y = x W + (α / r) · dropout(x) A B        A: [in, r], B: [r, out], B = 0 at init

`add_adapters(model, cfg)` puts an `Adapter` on each chosen `Dense` of the decoder layers (q, k,
v, o, gate, up, down by default); the forward then adds the low-rank term next to the frozen
matmul, unmerged (the rollout samples from base + adapters without building a merged copy).
Adapters are `nnx.LoRAParam`s (a kind of `nnx.Param`, so checkpoints hold them with the base
weights) and follow their base weight's logical axes: A takes the input axis ("embed" for q),
B the output axis ("heads"), the rank axis is replicated; the stacked layers' leading "layers"
axis too. Only adapters get gradients and optimizer state (`TRAINABLE`); the base with adapters
off is `base_graphdef(model)` merged with the same frozen weights, so no reference copy exists.

Dropout needs a key per step inside a pure step: each adapter holds a `DropoutKey` variable
(only when dropout > 0), zero outside training; `seed_dropout(model, key)` writes fresh keys inside
a traced loss function and turns dropout on for that model only (rollout, log-probs and export
never call it: dropout off). On or off is decided while tracing, not by a `lax.cond` on the keys:
under a sharded train step the cond's branches hold collectives, and XLA:CPU (jaxlib 0.10.2) ran
such a step, once loaded from the persistent compilation cache, into a collective deadlock
between its devices (aborted after 40 s; a fresh compile ran).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omni_jax.model.layers import Dense

# Projection name (HF's, which PEFT's target_modules use) → (sub-module of a decoder layer, attribute).
PROJECTIONS = {
    "q_proj": ("self_attn", "q_proj"), "k_proj": ("self_attn", "k_proj"), "v_proj": ("self_attn", "v_proj"),
    "o_proj": ("self_attn", "o_proj"), "gate_proj": ("mlp", "gate_proj"), "up_proj": ("mlp", "up_proj"),
    "down_proj": ("mlp", "down_proj"),
}
TRAINABLE = nnx.LoRAParam


class DropoutKey(nnx.Variable):
    """uint32[..., 2] raw PRNG key data of one adapter's dropout; all zeros = dropout off."""


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    rank: int = 64
    alpha: float = 128.0
    dropout: float = 0.0
    targets: tuple[str, ...] = tuple(PROJECTIONS)

    def __post_init__(self):
        unknown = [t for t in self.targets if t not in PROJECTIONS]
        if unknown or not self.targets:
            raise ValueError(f"lora.targets {list(self.targets)}: each must be one of {list(PROJECTIONS)}")
        if self.rank < 1:
            raise ValueError(f"lora.rank must be >= 1 (got {self.rank})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1) (got {self.dropout})")

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank

    def to_dict(self) -> dict:
        return {"rank": self.rank, "alpha": float(self.alpha), "dropout": float(self.dropout),
                "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: dict) -> "LoRAConfig":
        return cls(rank=int(d["rank"]), alpha=float(d["alpha"]), dropout=float(d.get("dropout", 0.0)),
                   targets=tuple(d.get("targets", PROJECTIONS)))


def config_from(c) -> LoRAConfig | None:
    """LoRAConfig from a training config's `lora` block (None when lora.rank is 0: full fine-tuning)."""
    if "lora" not in c or not c.lora.rank:
        return None
    return LoRAConfig(rank=int(c.lora.rank), alpha=float(c.lora.alpha), dropout=float(c.lora.dropout),
                      targets=tuple(t.strip() for t in str(c.lora.targets).split(",") if t.strip()))


class Adapter(nnx.Module):
    """The low-rank term of one projection: (α/r) · dropout(x) A B.

    a: [*stack, in, r] with axes (*stack, in_axis, None); b: [*stack, r, out] with (*stack, None, out_axis).
    A ~ U(-1/√in, 1/√in) (PEFT's default, kaiming-uniform with a = √5), B = 0: the model is
    unchanged at init.
    """

    def __init__(self, kernel: nnx.Param, rank: int, alpha: float, dropout: float, key: jax.Array, dtype):
        shape, axes = kernel.shape, tuple(kernel.get_metadata().get("out_sharding") or (None,) * kernel.ndim)
        stack, (d_in, d_out) = shape[:-2], shape[-2:]
        bound = 1.0 / math.sqrt(d_in)
        a = jax.random.uniform(key, (*stack, d_in, rank), jnp.float32, -bound, bound)
        self.a = nnx.LoRAParam(a.astype(kernel.dtype), out_sharding=(*axes[:-1], None), eager_sharding=False)
        self.b = nnx.LoRAParam(jnp.zeros((*stack, rank, d_out), kernel.dtype), out_sharding=(*axes[:-2], None, axes[-1]),
                               eager_sharding=False)
        self.scale = float(alpha) / rank
        self.dropout = float(dropout)
        self.dropout_key = DropoutKey(jnp.zeros((*stack, 2), jnp.uint32)) if dropout > 0 else None
        self.seeded = False  # set by seed_dropout in a traced loss: dropout on
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [..., in] → [..., out] in the compute dtype."""
        x = x.astype(self.dtype)
        if self.seeded:
            key = jax.random.wrap_key_data(self.dropout_key[...])
            keep = jax.random.bernoulli(key, 1.0 - self.dropout, x.shape)
            x = jnp.where(keep, x / (1.0 - self.dropout), 0).astype(x.dtype)
        h = jnp.dot(x, self.a[...].astype(self.dtype))
        return jnp.dot(h, self.b[...].astype(self.dtype)) * jnp.asarray(self.scale, self.dtype)

    def delta(self) -> jax.Array:
        """(α/r) · A B: float32[*stack, in, out], what merging adds to the kernel."""
        return jnp.einsum("...ir,...ro->...io", self.a[...].astype(jnp.float32),
                          self.b[...].astype(jnp.float32)) * self.scale


def _layer_projections(model) -> dict[str, Dense]:
    layer = model.model.layers  # the stacked DecoderLayer
    return {name: getattr(getattr(layer, sub), attr) for name, (sub, attr) in PROJECTIONS.items()}


def add_adapters(model, cfg: LoRAConfig, seed: int = 0):
    """Put an adapter on each of `cfg.targets` in every decoder layer of `model` (a Thinker), in place.

    Works on concrete models and on `abstract_thinker`s (inside `nnx.eval_shape`). Returns `model`.
    """
    if has_adapters(model):
        raise ValueError("the model already has LoRA adapters")
    key = jax.random.key(seed)
    for i, (name, dense) in enumerate(_layer_projections(model).items()):
        if name in cfg.targets:
            dense.lora = Adapter(dense.kernel, cfg.rank, cfg.alpha, cfg.dropout, jax.random.fold_in(key, i),
                                 dense.dtype)
    return model


def abstract_with_adapters(abstract_model, cfg: LoRAConfig):
    """`add_adapters` on an abstract model (ShapeDtypeStruct leaves): shapes and axes, no memory."""
    graphdef, state = nnx.split(abstract_model)

    def build(state):
        m = nnx.merge(graphdef, state)
        return add_adapters(m, cfg)

    return nnx.eval_shape(build, state)


def has_adapters(model) -> bool:
    return any(getattr(d, "lora", None) is not None for d in _layer_projections(model).values())


def adapter_config(model) -> LoRAConfig | None:
    """The LoRAConfig `model`'s adapters were made with (None: no adapters)."""
    found = {n: d.lora for n, d in _layer_projections(model).items() if getattr(d, "lora", None) is not None}
    if not found:
        return None
    first = next(iter(found.values()))
    rank = first.a.shape[-1]
    return LoRAConfig(rank=rank, alpha=first.scale * rank, dropout=first.dropout, targets=tuple(found))


def base_graphdef(model):
    """The graphdef of `model` without its adapters: merged with the model's non-adapter weights
    (`base_state`) it is the base model (the GRPO reference: adapters off, no copy)."""
    clone = nnx.merge(*nnx.split(model))  # new module objects, the same arrays
    for dense in _layer_projections(clone).values():
        dense.lora = None
    return nnx.graphdef(clone)


def base_state(state: nnx.State) -> nnx.State:
    """The part of a model's state that `base_graphdef` takes: every parameter but the adapters."""
    return nnx.filter_state(state, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))


def merged(model):
    """A new model without adapters whose kernels are W + (α/r)·A B (the base weights untouched).

    Each merged kernel is computed under jit with its base kernel's sharding as output sharding, so
    a sharded model stays sharded (no whole [L, in, out] product on one device).
    """
    clone = nnx.merge(*nnx.split(model))
    for dense in _layer_projections(clone).values():
        adapter = getattr(dense, "lora", None)
        if adapter is not None:
            w = dense.kernel[...]
            sharding = getattr(w, "sharding", None)
            merge = jax.jit(_merge_kernel, static_argnums=3,
                            out_shardings=sharding if isinstance(sharding, jax.sharding.NamedSharding) else None)
            dense.kernel = nnx.Param(merge(w, adapter.a[...], adapter.b[...], adapter.scale),
                                     **dense.kernel.get_metadata())
            dense.lora = None
    return clone


def _merge_kernel(w, a, b, scale: float):
    delta = jnp.einsum("...ir,...ro->...io", a.astype(jnp.float32), b.astype(jnp.float32)) * scale
    return (w.astype(jnp.float32) + delta).astype(w.dtype)


def seed_dropout(model, key: jax.Array) -> None:
    """Write fresh dropout keys into every adapter of `model` (traced code; a no-op without dropout)."""
    for i, dense in enumerate(_layer_projections(model).values()):
        adapter = getattr(dense, "lora", None)
        if adapter is None or adapter.dropout_key is None:
            continue
        shape = adapter.dropout_key.shape[:-1]
        n = int(np.prod(shape)) if shape else 1
        keys = jax.random.split(jax.random.fold_in(key, i), n)
        # A new variable, not an in-place write: the merged state's variables may come from an outer trace.
        adapter.dropout_key = DropoutKey(jax.random.key_data(keys).reshape(*shape, 2).astype(jnp.uint32))
        adapter.seeded = True


def adapter_params(model) -> dict[str, dict[str, jax.Array]]:
    """{projection name: {"a": [L, in, r], "b": [L, r, out]}} of the model's adapters, and "scale"."""
    out = {}
    for name, dense in _layer_projections(model).items():
        if getattr(dense, "lora", None) is not None:
            out[name] = {"a": dense.lora.a[...], "b": dense.lora.b[...]}
    return out


def set_adapter_params(model, params: dict[str, dict[str, jax.Array]]) -> None:
    """Overwrite the adapters' A and B from `adapter_params`-shaped arrays (shapes must match)."""
    dense_by_name = _layer_projections(model)
    for name, ab in params.items():
        adapter = getattr(dense_by_name[name], "lora", None)
        if adapter is None:
            raise ValueError(f"the model has no adapter on {name}")
        for k in ("a", "b"):
            var = getattr(adapter, k)
            if tuple(var.shape) != tuple(ab[k].shape):
                raise ValueError(f"adapter {name}.{k}: shape {tuple(ab[k].shape)} != the model's {tuple(var.shape)}")
            var[...] = jnp.asarray(ab[k], var.dtype)


def count(model) -> int:
    """Number of adapter parameters."""
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.LoRAParam)))
