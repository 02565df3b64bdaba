"""Cloud TPU accelerator types: parse `v5p-8`, `v5litepod-16`, ... into chips, VMs and a runtime.

Facts from the Cloud TPU docs (https://cloud.google.com/tpu/docs/runtimes, .../v5e, .../v6e):
- v4 and v5p names count TensorCores (2 per chip) and a VM holds 4 chips: v5p-8 is 4 chips, 1 VM.
- v5e (`v5litepod-N`) and v6e names count chips (1 TensorCore each); slices up to 8 chips are one
  VM, larger slices are made of 4-chip VMs (v6e-16 is 4 VMs).
- Runtime images the docs name for JAX: v6e `v2-alpha-tpuv6e`, v5p `v2-alpha-tpuv5`,
  v5e `v2-alpha-tpuv5-lite`, v4 `tpu-ubuntu2204-base`.
"""

from __future__ import annotations

import dataclasses
import re


class LaunchError(ValueError):
    """A launch request that cannot work; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class Generation:
    gcloud_prefix: str  # gcloud spells the accelerator type f"{gcloud_prefix}-{N}"
    cores_per_chip: int  # N counts TensorCores; this turns N into chips
    runtime_version: str  # default --runtime-version for JAX
    sizes: tuple[int, ...] | None  # allowed N; None: any multiple of 8 (the 3D-torus families)


GENERATIONS = {
    "v4": Generation("v4", 2, "tpu-ubuntu2204-base", None),
    "v5p": Generation("v5p", 2, "v2-alpha-tpuv5", None),
    "v5e": Generation("v5litepod", 1, "v2-alpha-tpuv5-lite", (1, 4, 8, 16, 32, 64, 128, 256)),
    "v6e": Generation("v6e", 1, "v2-alpha-tpuv6e", (1, 4, 8, 16, 32, 64, 128, 256)),
}
_GENERATION_BY_PREFIX = {g.gcloud_prefix: name for name, g in GENERATIONS.items()} | {"v5e": "v5e"}
_CHIPS_PER_VM = 4  # in every multi-host slice of these generations
_SINGLE_VM_MAX_CHIPS = 8  # v5e / v6e slices of up to 8 chips sit on one VM


@dataclasses.dataclass(frozen=True)
class TpuSlice:
    """One slice. `accelerator_type` is gcloud's spelling (`v5e-16` becomes `v5litepod-16`)."""

    accelerator_type: str
    generation: str
    chips: int
    workers: int  # TPU VMs; every command of a run goes to each of them (--worker=all)
    runtime_version: str

    @property
    def multi_host(self) -> bool:
        return self.workers > 1


def parse_accelerator_type(name: str) -> TpuSlice:
    """`"v5p-8"` -> TpuSlice(chips=4, workers=1, ...). `"v5e-N"` is read as `"v5litepod-N"`."""
    match = re.fullmatch(r"(v4|v5p|v5litepod|v5e|v6e)-(\d+)", name)
    if not match:
        known = ", ".join(f"{g.gcloud_prefix}-N" for g in GENERATIONS.values())
        raise LaunchError(
            f"unknown accelerator type {name!r}: use one of {known}, for example v5p-8, "
            "v5litepod-16, v6e-8 or v4-8")
    generation = _GENERATION_BY_PREFIX[match.group(1)]
    spec = GENERATIONS[generation]
    size = int(match.group(2))
    if spec.sizes is None:
        if size < 8 or size % 8:
            raise LaunchError(
                f"accelerator type {name!r}: {spec.gcloud_prefix} sizes count TensorCores in "
                f"multiples of 8 ({spec.gcloud_prefix}-8 is the smallest slice: one VM, 4 chips)")
    elif size not in spec.sizes:
        raise LaunchError(
            f"accelerator type {name!r}: {spec.gcloud_prefix} slices have {list(spec.sizes)} chips")
    chips = size // spec.cores_per_chip
    if spec.sizes is not None and chips <= _SINGLE_VM_MAX_CHIPS:
        workers = 1
    else:
        workers = chips // _CHIPS_PER_VM
    return TpuSlice(f"{spec.gcloud_prefix}-{size}", generation, chips, workers,
                    spec.runtime_version)
