"""TPU slices: names, chip counts, HBM, and libtpu's compile-only devices (when libtpu is installed)."""

import math
import os

import pytest

from omni_jax.aot import topology as T

GIB = 2**30


def test_slices_count_chips_as_cloud_tpu_names_them():
    # v4 and v5p accelerator types count TensorCores (2 per chip); v5e and v6e count chips.
    for name, s in T.SLICES.items():
        family, n = name.split("-")
        cores_per_chip = 2 if family in ("v4", "v5p") else 1
        assert s.chips * cores_per_chip == int(n), name
        assert math.prod(int(d) for d in s.topology.split(":")[1].split("x")) == s.chips
    assert T.get_slice("v5p-8").hbm_bytes == 95 * GIB and T.get_slice("v5e-16").hbm_bytes == 16 * GIB
    assert T.get_slice("v4-8").hbm_bytes == 32 * GIB and T.get_slice("v6e-8").hbm_bytes == 32 * GIB


def test_unknown_slice_names_the_known_ones():
    with pytest.raises(ValueError, match="v5p-8"):
        T.get_slice("v5p-7")


def test_without_libtpu_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(T, "libtpu_available", lambda: False)
    with pytest.raises(RuntimeError, match="pip install 'libtpu==0.0.42"):
        T.devices("v5p-8")


@pytest.mark.skipif(not T.libtpu_available(), reason="libtpu not installed (pip install -r requirements-test.txt)")
@pytest.mark.parametrize("name", ["v5p-8", "v4-8", "v5e-16", "v5e-32", "v6e-8"])
def test_libtpu_devices_of_each_slice(name):
    devices = T.devices(name)
    assert len(devices) == T.get_slice(name).chips
    assert [d is e for d, e in zip(devices, T.devices(name))] == [True] * len(devices)  # one set per slice
    assert len({d.id for d in devices}) == len(devices)
    kind = {"v4": "TPU v4", "v5p": "TPU v5", "v5e": "TPU v5 lite", "v6e": "TPU v6 lite"}[name.split("-")[0]]
    assert devices[0].device_kind == kind


@pytest.mark.skipif(not T.libtpu_available(), reason="libtpu not installed (pip install -r requirements-test.txt)")
def test_libtpu_environment_does_not_leak_to_child_processes(monkeypatch):
    for key in ("TPU_ACCELERATOR_TYPE", "TPU_WORKER_HOSTNAMES", "ALLOW_MULTIPLE_LIBTPU_LOAD"):
        monkeypatch.delenv(key, raising=False)
    T._devices.cache_clear()  # load the topology again, here
    T.devices("v5p-8")
    # omni_jax.train would take a leaked TPU_WORKER_HOSTNAMES for a TPU VM and start jax.distributed.
    assert not {"TPU_ACCELERATOR_TYPE", "TPU_WORKER_HOSTNAMES", "ALLOW_MULTIPLE_LIBTPU_LOAD"} & set(os.environ)


@pytest.mark.skipif(not T.libtpu_available(), reason="libtpu not installed (pip install -r requirements-test.txt)")
def test_a_slice_checked_twice_in_one_process_compiles_twice():
    # jit caches a trace by shapes; its sharding constraints name the first check's devices. With
    # new device objects per call the second compile failed ("incompatible devices", same ids).
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from omni_jax import parallel

    f = jax.jit(lambda x: parallel.constrain(x * 2, ("batch", None)))
    for _ in range(2):
        mesh = parallel.make_mesh({"data": 1, "fsdp": 4, "tp": 1}, devices=T.devices("v5p-8"))
        with parallel.Layout(mesh).activate():
            x = jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("fsdp")))
            f.trace(x).lower().compile()
