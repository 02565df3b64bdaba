"""Device mesh and logical-axis sharding.

Model code names *logical* axes only ("embed", "mlp", "heads", "vocab", "layers", "batch", ...).
A rule list from the config maps each logical name to a mesh axis (data, fsdp, tp) or to None
(replicated). Changing the mesh never touches model code.

A `Layout` is the mesh and its rules as one value, and everything that places arrays takes one:

    layout = config_utils.layout(config)               # a run's: config.mesh sizes and rules
    layout = Layout(make_mesh({"fsdp": -1}))           # DEFAULT_RULES: the one place a default applies
    layout.sharding(("embed", "mlp"), (4096, 11008))   # NamedSharding of one array
    params = layout.place(params)                      # every array committed to the mesh
    with layout.activate():                            # `constrain` in traced model code uses it
        out = step(params, batch)
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
import os
from typing import Iterable, Mapping, Sequence

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


def logical_to_spec(logical_axes: Iterable[str | None], rules, mesh: Mesh | None = None) -> PartitionSpec:
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


def _rules_tuple(rules) -> tuple:
    """Rules as a hashable tuple of (logical name, mesh axis | tuple of mesh axes | None)."""
    items = rules.items() if isinstance(rules, Mapping) else rules
    return tuple((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes) for name, axes in items)


@dataclasses.dataclass(frozen=True)
class Layout:
    """A device mesh and the logical-axis rules that map the model's axis names onto it.

    rules: (logical name, mesh axis | tuple of mesh axes | None) pairs, or a dict of them. Left
    out, they are `DEFAULT_RULES`: this is the one place a default applies. A run takes its rules
    from its config (`config_utils.layout(config)`); public entry points that accept a bare mesh
    (`load_thinker`, `generate`, `hf_to_orbax`, the eval runner) read it as `Layout(mesh)`.
    Hashable (a mesh and a tuple), so it may be a static argument or a cache key.
    """

    mesh: Mesh
    rules: tuple = DEFAULT_RULES

    def __post_init__(self):
        object.__setattr__(self, "rules", _rules_tuple(self.rules))

    @property
    def shape(self) -> dict[str, int]:
        """The mesh's axis sizes, e.g. {"data": 1, "fsdp": 4, "tp": 1}."""
        return dict(self.mesh.shape)

    def spec(self, logical_axes: Sequence[str | None], shape: Sequence[int] | None = None) -> PartitionSpec:
        """The PartitionSpec of logical axes under the rules; with `shape`, mesh axes that do not
        divide their dimension are dropped (`fit_spec`)."""
        spec = logical_to_spec(logical_axes, self.rules, self.mesh)
        return spec if shape is None else fit_spec(spec, shape, self.mesh)

    def sharding(self, logical_axes: Sequence[str | None], shape: Sequence[int]) -> NamedSharding:
        """NamedSharding on the mesh of an array of `shape` whose dimensions are `logical_axes`."""
        return NamedSharding(self.mesh, self.spec(logical_axes, shape))

    @property
    def replicated(self) -> NamedSharding:
        """Every device of the mesh holds the whole array."""
        return NamedSharding(self.mesh, PartitionSpec())

    def shards(self, logical_axis: str) -> int:
        """Over how many devices a dimension named `logical_axis` is split (1: replicated)."""
        axes = dict(self.rules).get(logical_axis) or ()
        return math.prod(self.mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))

    @property
    def batch_shards(self) -> int:
        """Over how many devices the rows of a batch are split: the mesh axes of the logical
        `batch` axis (data × fsdp under DEFAULT_RULES)."""
        return self.shards("batch")

    def place(self, tree):
        """Every array of `tree` committed to a NamedSharding of the mesh (unplaced ones replicated).

        jit caches by input sharding: a first call with uncommitted arrays and later calls with the
        step's own outputs would otherwise compile the step twice.
        """
        def one(x):
            s = getattr(x, "sharding", None)
            if not (isinstance(s, NamedSharding) and s.mesh == self.mesh):
                s = self.replicated
            return jax.device_put(x, s)
        return jax.tree.map(one, tree)

    @contextlib.contextmanager
    def activate(self):
        """Make this layout the one `constrain` uses inside traced model code (innermost wins)."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)


_ACTIVE: contextvars.ContextVar[Layout | None] = contextvars.ContextVar("omni_jax_layout", default=None)


def as_layout(layout: Layout | Mesh | None) -> Layout | None:
    """A Layout as given, a bare Mesh as `Layout(mesh)` (DEFAULT_RULES), None as None: what the
    public entry points accept."""
    if layout is None or isinstance(layout, Layout):
        return layout
    if isinstance(layout, Mesh):
        return Layout(layout)
    raise TypeError(f"expected a parallel.Layout, a jax.sharding.Mesh or None, got {type(layout).__name__}")


def traced_under(layout: Layout | None, fn):
    """`fn` with `layout` active while it runs, so a `jax.jit` of it applies the model code's
    activation constraints whenever it traces, wherever the call happens (None: `fn` as is)."""
    if layout is None:
        return fn

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with layout.activate():
            return fn(*args, **kwargs)

    return wrapped


def current_layout() -> Layout | None:
    """The layout of the innermost `Layout.activate()`, or None."""
    return _ACTIVE.get()


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """Sharding constraint by logical names; a no-op when no layout is active."""
    layout = _ACTIVE.get()
    if layout is None:
        return x
    return jax.lax.with_sharding_constraint(x, layout.sharding(logical_axes, x.shape))


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
