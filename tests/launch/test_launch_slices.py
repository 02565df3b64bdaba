import pytest

from launch.slices import LaunchError, parse_accelerator_type

# (name, gcloud spelling, chips, TPU VMs, runtime) from the Cloud TPU docs' tables: v4/v5p names
# count TensorCores (2 per chip, 4 chips per VM); v5e/v6e names count chips, up to 8 on one VM,
# 4-chip VMs beyond.
DOCUMENTED = [
    ("v4-8", "v4-8", 4, 1, "tpu-ubuntu2204-base"),
    ("v4-32", "v4-32", 16, 4, "tpu-ubuntu2204-base"),
    ("v5p-8", "v5p-8", 4, 1, "v2-alpha-tpuv5"),
    ("v5p-16", "v5p-16", 8, 2, "v2-alpha-tpuv5"),
    ("v5p-128", "v5p-128", 64, 16, "v2-alpha-tpuv5"),
    ("v5litepod-8", "v5litepod-8", 8, 1, "v2-alpha-tpuv5-lite"),
    ("v5e-16", "v5litepod-16", 16, 4, "v2-alpha-tpuv5-lite"),
    ("v5litepod-32", "v5litepod-32", 32, 8, "v2-alpha-tpuv5-lite"),
    ("v6e-1", "v6e-1", 1, 1, "v2-alpha-tpuv6e"),
    ("v6e-8", "v6e-8", 8, 1, "v2-alpha-tpuv6e"),
    ("v6e-16", "v6e-16", 16, 4, "v2-alpha-tpuv6e"),
    ("v6e-256", "v6e-256", 256, 64, "v2-alpha-tpuv6e"),
]


@pytest.mark.parametrize("name,gcloud,chips,workers,runtime", DOCUMENTED)
def test_documented_slices(name, gcloud, chips, workers, runtime):
    tpu = parse_accelerator_type(name)
    assert (tpu.accelerator_type, tpu.chips, tpu.workers, tpu.runtime_version) == (
        gcloud, chips, workers, runtime)
    assert tpu.multi_host == (workers > 1)


@pytest.mark.parametrize("name", ["v7x-8", "v3-8", "tpu", "v5p", "V5P-8", "v5p-8 ", "v5p-8;ls",
                                  "v5p-4", "v5p-12", "v4-0", "v6e-2", "v6e-12", "v5litepod-512"])
def test_unknown_or_impossible_types_are_refused(name):
    with pytest.raises(LaunchError, match="accelerator type"):
        parse_accelerator_type(name)
