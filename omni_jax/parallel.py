"""Device mesh and logical-axis sharding.

Model code names *logical* axes only ("embed", "mlp", "heads", "vocab", "layers", "batch", ...).
A rule list from the config maps each logical name to a mesh axis (data, fsdp, tp) or to None
(replicated). Changing the mesh never touches model code.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import os
from typing import Iterable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tp")

# Default rules: parameters are sharded FSDP-style on their large "embed" dimension and
# tensor-parallel on heads / mlp / vocab; activations are batch-sharded over data and fsdp.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("kv_length", None),
    ("act_embed", None),
    ("act_heads", "tp"),
    ("act_kv_heads", None),
    ("act_mlp", "tp"),
    ("act_vocab", "tp"),
    ("layers", None),
    ("embed", "fsdp"),
    ("vocab", "tp"),
    ("mlp", "tp"),
    ("heads", "tp"),
    ("kv_heads", None),
    ("norm", None),
    ("vision_tokens", ("data", "fsdp")),  # the ViT's patch axis: patches are its batch
    ("vision_embed", "fsdp"),
    ("vision_mlp", "tp"),
    ("vision_heads", "tp"),
    ("vision_patch", None),
    ("audio_embed", "fsdp"),
    ("audio_mlp", "tp"),
    ("audio_heads", "tp"),
    ("audio_mel", None),
    ("conv_width", None),
)


@dataclasses.dataclass(frozen=True)
class _Context:
    mesh: Mesh
    rules: tuple


_CONTEXT: contextvars.ContextVar[_Context | None] = contextvars.ContextVar("omni_jax_mesh", default=None)


def make_mesh(shape: dict[str, int] | Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tp) mesh. `shape` values of -1 take the remaining devices.

    shape: {"data": d, "fsdp": f, "tp": t} or (d, f, t).
    """
    devices = list(devices if devices is not None else jax.devices())
    sizes = [shape.get(a, 1) for a in MESH_AXES] if isinstance(shape, dict) else list(shape)
    if len(sizes) != len(MESH_AXES):
        raise ValueError(f"mesh shape {shape} must give sizes for {MESH_AXES}")
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh shape {shape}: at most one axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices do not divide into mesh {shape}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) > len(devices):
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices; only {len(devices)} exist"
        )
    if math.prod(sizes) != len(devices):
        devices = devices[: math.prod(sizes)]
    try:
        array = jax.experimental.mesh_utils.create_device_mesh(sizes, devices=devices)
    except Exception:  # non-TPU or irregular device sets: plain row-major order
        array = np.asarray(devices).reshape(sizes)
    return Mesh(array, MESH_AXES)


def logical_to_spec(logical_axes: Iterable[str | None], rules=DEFAULT_RULES, mesh: Mesh | None = None) -> PartitionSpec:
    """PartitionSpec for a tuple of logical names under `rules`.

    A mesh axis is used at most once per array (later dims that map to an already used axis are
    replicated), and axes of size 1 are dropped so specs stay valid on any mesh.
    """
    table = dict(rules)
    used: set[str] = set()
    out = []
    for name in logical_axes:
        target = table.get(name) if name is not None else None
        if target is None:
            out.append(None)
            continue
        axes = (target,) if isinstance(target, str) else tuple(target)
        axes = tuple(a for a in axes if a not in used and (mesh is None or mesh.shape[a] > 1))
        used.update(axes)
        out.append(axes[0] if len(axes) == 1 else (axes or None))
    return PartitionSpec(*out)


def fit_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """Drop mesh axes from dims they do not divide (e.g. 4 kv heads on tp=8): replicate instead."""
    out = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        if axes is None:
            out.append(None)
            continue
        axes_t = (axes,) if isinstance(axes, str) else tuple(axes)
        kept, size = [], 1
        for a in axes_t:
            if dim % (size * mesh.shape[a]) == 0:
                kept.append(a)
                size *= mesh.shape[a]
        out.append(None if not kept else (kept[0] if len(kept) == 1 else tuple(kept)))
    while out and out[-1] is None:  # P(None, None) and P() mean the same, but jit caches them apart
        out.pop()
    return PartitionSpec(*out)


def named_sharding(logical_axes, shape, mesh: Mesh, rules=DEFAULT_RULES) -> NamedSharding:
    """NamedSharding on `mesh` of an array of `shape` with logical axes `axes`, mapped by `rules`."""
    return NamedSharding(mesh, fit_spec(logical_to_spec(logical_axes, rules, mesh), shape, mesh))


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules=DEFAULT_RULES):
    """Activate `mesh` + `rules` for `constrain` inside traced model code."""
    token = _CONTEXT.set(_Context(mesh, tuple(rules)))
    try:
        yield mesh
    finally:
        _CONTEXT.reset(token)


def current_mesh() -> Mesh | None:
    """The mesh set by the innermost `use_mesh`, or None."""
    ctx = _CONTEXT.get()
    return ctx.mesh if ctx else None


def current_rules():
    """The logical-axis rules set by the innermost `use_mesh` (DEFAULT_RULES outside one)."""
    ctx = _CONTEXT.get()
    return ctx.rules if ctx else DEFAULT_RULES


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """Sharding constraint by logical names; a no-op when no mesh is active."""
    ctx = _CONTEXT.get()
    if ctx is None:
        return x
    return jax.lax.with_sharding_constraint(x, named_sharding(logical_axes, x.shape, ctx.mesh, ctx.rules))


def on_mesh(tree, mesh: Mesh):
    """Every array of `tree` committed to a NamedSharding of `mesh` (unplaced ones replicated).

    jit caches by input sharding: a first call with uncommitted arrays and later calls with the
    step's own outputs would otherwise compile the step twice.
    """
    def one(x):
        s = getattr(x, "sharding", None)
        if not (isinstance(s, NamedSharding) and s.mesh == mesh):
            s = NamedSharding(mesh, PartitionSpec())
        return jax.device_put(x, s)
    return jax.tree.map(one, tree)


def shardings_of(tree):
    """The sharding of every array leaf of `tree` (a tree of the same structure)."""
    return jax.tree.map(lambda x: x.sharding, tree)


def init_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> None:
    """Start JAX's multi-process runtime: from the arguments (CPU / GPU clusters), from a Cloud TPU
    VM's environment, or not at all (one process). Call before anything touches a backend."""

    if coordinator_address:
        if os.environ.get("JAX_PLATFORMS", "") in ("", "cpu"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID") is not None:
        jax.distributed.initialize()  # Cloud TPU VM: everything comes from the environment
