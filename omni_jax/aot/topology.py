"""Cloud TPU slices the fit check knows: their deviceless devices (libtpu) and per-chip specs.

Per-chip specs (HBM, bandwidth, peak FLOP/s) are the table in `omni_jax.chips`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os

from omni_jax.chips import CHIPS, Chip


@dataclasses.dataclass(frozen=True)
class Slice:
    """A TPU slice by its accelerator type (`v5p-8`): libtpu topology name, chips, hosts."""

    name: str
    chip: Chip
    topology: str  # libtpu topology name, e.g. "v5p:2x2x1"
    chips: int
    host_bounds: tuple[int, int, int]  # chips per host in each dimension

    @property
    def hbm_bytes(self) -> int:
        return self.chip.hbm_bytes


def _slice(name: str, topology: str, host_bounds=(2, 2, 1)) -> Slice:
    family, _, dims = topology.partition(":")
    chips = 1
    for d in dims.split("x"):
        chips *= int(d)
    return Slice(name, CHIPS[family], topology, chips, host_bounds)


# Accelerator type → topology. v4 and v5p count TensorCores in the name (2 per chip), v5e and v6e chips.
SLICES = {s.name: s for s in (
    _slice("v4-8", "v4:2x2x1"), _slice("v4-16", "v4:2x2x2"), _slice("v4-32", "v4:2x2x4"),
    _slice("v5p-8", "v5p:2x2x1"), _slice("v5p-16", "v5p:2x2x2"), _slice("v5p-32", "v5p:2x2x4"),
    _slice("v5e-4", "v5e:2x2"), _slice("v5e-8", "v5e:2x4", (2, 4, 1)), _slice("v5e-16", "v5e:4x4"),
    _slice("v5e-32", "v5e:4x8"), _slice("v5e-64", "v5e:8x8"),
    _slice("v6e-4", "v6e:2x2"), _slice("v6e-8", "v6e:2x4", (2, 4, 1)), _slice("v6e-16", "v6e:4x4"),
    _slice("v6e-32", "v6e:4x8"),
)}


def get_slice(name: str) -> Slice:
    """The TPU slice named `name` (e.g. "v5p-8"); ValueError naming the known ones."""
    if name not in SLICES:
        raise ValueError(f"unknown TPU slice {name!r}; known: {', '.join(sorted(SLICES))}")
    return SLICES[name]


def libtpu_available() -> bool:
    """True when libtpu can be imported (`pip install libtpu==0.0.42.*`, the jax[tpu] extra)."""
    try:
        import libtpu  # noqa: F401
    except ImportError:
        return False
    return True


def devices(name: str) -> list:
    """The compile-only devices of slice `name`, from libtpu, on any machine (no TPU needed).

    The same device objects on every call for a slice: jitted functions cache their traces by
    shape, and a trace holding another call's devices in its sharding constraints would not
    compile against new ones (two checks of one slice in one process, e.g. two grad_accum values).
    """
    s = get_slice(name)
    if not libtpu_available():
        raise RuntimeError(
            "the TPU fit check compiles with libtpu, which is not installed: "
            "pip install 'libtpu==0.0.42.*' (the jax[tpu]==0.10.2 extra) into this environment")
    return list(_devices(s.name))


@functools.lru_cache(maxsize=None)
def _devices(name: str) -> tuple:
    s = get_slice(name)
    from jax.experimental import topologies

    with _libtpu_env(s.name):
        topo = topologies.get_topology_desc(platform="tpu", topology_name=s.topology,
                                            chip_config_name=s.chip.chip_config, chips_per_host_bounds=s.host_bounds,
                                            num_slices=1)
    devs = list(topo.devices)
    if len(devs) != s.chips:
        raise RuntimeError(f"libtpu gave {len(devs)} devices for {s.name} ({s.topology}); expected {s.chips} chips")
    return tuple(devs)


@contextlib.contextmanager
def _libtpu_env(accelerator_type: str):
    """The environment libtpu reads when it loads, set only while it does.

    Without TPU_ACCELERATOR_TYPE / TPU_WORKER_HOSTNAMES it probes for a TPU VM and logs warnings;
    a compile-only client touches no chip, so it need not take libtpu's one-process lock either
    (parallel test workers, a fit check next to a training job). Restored afterwards: child
    processes must not think they run on a TPU VM (`omni_jax.train` starts jax.distributed then).
    """
    wanted = {"TPU_ACCELERATOR_TYPE": accelerator_type, "TPU_WORKER_HOSTNAMES": "localhost",
              "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}
    saved = {k: os.environ.get(k) for k in wanted}
    for k, v in wanted.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
