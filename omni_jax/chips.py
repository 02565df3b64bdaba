"""Accelerator chips: per-chip memory, bandwidth and peak FLOP/s, one table for the fit check and
the training loop's MFU.

TPU specs are Google's published per-chip numbers (Cloud TPU docs, system architecture pages):

    chip   HBM      HBM bandwidth   peak bf16
    v4     32 GiB   1200 GB/s       275 TFLOP/s
    v5e    16 GiB    819 GB/s       197 TFLOP/s
    v5p    95 GiB   2765 GB/s       459 TFLOP/s
    v6e    32 GiB   1638 GB/s       918 TFLOP/s

HBM is taken as GiB (the v4 page says GiB; the others say "GB" for the same power-of-two parts).
A v4 chip's two TensorCores run as one device ("megacore"), as JAX sees a v4 VM.
"""

from __future__ import annotations

import dataclasses

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator chip: its HBM (bytes, bytes/s), peak dense bf16 FLOP/s and libtpu chip config."""
    name: str
    hbm_bytes: int
    hbm_bandwidth: float  # bytes/s
    peak_flops: float  # dense bf16 FLOP/s
    chip_config: str  # libtpu's chip config: "megacore" (v4) or "default"


CHIPS = {
    "v4": Chip("v4", 32 * GIB, 1200e9, 275e12, "megacore"),
    "v5e": Chip("v5e", 16 * GIB, 819e9, 197e12, "default"),
    "v5p": Chip("v5p", 95 * GIB, 2765e9, 459e12, "default"),
    "v6e": Chip("v6e", 32 * GIB, 1638e9, 918e12, "default"),
}

# jax's `device_kind` → peak dense bf16 FLOP/s per chip, for the MFU estimate (a kind not listed,
# e.g. a CPU, has no MFU). TPU kinds take their chip's number above; NVIDIA's dense bf16 numbers.
PEAK_FLOPS = {
    "TPU v4": CHIPS["v4"].peak_flops,
    "TPU v5 lite": CHIPS["v5e"].peak_flops, "TPU v5e": CHIPS["v5e"].peak_flops,
    "TPU v5p": CHIPS["v5p"].peak_flops, "TPU v5": CHIPS["v5p"].peak_flops,
    "TPU v6 lite": CHIPS["v6e"].peak_flops, "TPU v6e": CHIPS["v6e"].peak_flops,
    "NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H200": 989e12,
}
