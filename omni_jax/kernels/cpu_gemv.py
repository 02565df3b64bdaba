"""A multi-threaded CPU matrix product for decode steps, as an XLA FFI custom call.

A decode step multiplies a few rows of activations by every weight matrix of the decoder: it reads
each weight once and is bound by memory bandwidth. XLA:CPU runs such a `[8, k] @ [k, n]` dot on
one thread, at one core's share of the bandwidth (measured: 5.6 to 7.4 GB/s where a 2-thread
streaming read does 16.5; benchmarks/RESULTS.md). `cpu_gemv.cc` streams weights packed into
32-column strips on a persistent thread pool instead.

Use: `pack(w)` a [K, N] weight, or a stack [L, K, N] of them (one per decoder layer), once (outside
the decode loop) into a `PackedKernel` [L, ceil(N / 32), K, 32]; `matmul(x, packed.at_layer(i))`
then computes x @ w[i] in float32 for any number of rows, reading layer i in place (no slice is
copied). `Dense` layers whose kernel holds a `PackedKernel` call it (`TextModel.unstacked_layers(
pack=True)`; `omni_jax.rollout.sampler` packs a copy of the decoder's weights per `generate` call
on a single CPU device).

The library is compiled on first use with the system's C++ compiler (`$CXX`, default g++, with
-O3 -march=native) against jaxlib's FFI headers, and cached under `$OMNI_JAX_KERNEL_CACHE`
(default ~/.cache/omni_jax/kernels), keyed by the source, compiler, flags, jax version and CPU.
Where it cannot be built, `available()` is False (the reason is logged once) and callers keep
XLA's dot. Threads: `$OMNI_JAX_GEMV_THREADS` (default: every core).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import pathlib
import platform
import subprocess
import tempfile
import threading

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

log = logging.getLogger(__name__)

SOURCE = pathlib.Path(__file__).with_name("cpu_gemv.cc")
TARGET = "omni_jax_packed_gemv_f32"
PACK_TARGET = "omni_jax_pack_f32"
STRIP = 32
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread")

_lock = threading.Lock()
_state: dict = {}  # "lib" once loaded, or "error"


@struct.dataclass
class PackedKernel:
    """A stack of [K, N] weights packed for `matmul`: data float32[L, ceil(N / 32), K, 32] (zero
    padded past column N), n = N, and `layer`, the matrix of the stack that `matmul` uses."""

    data: jax.Array
    n: int = struct.field(pytree_node=False)
    layer: int = struct.field(pytree_node=False, default=0)

    @property
    def shape(self) -> tuple[int, int]:
        """(K, N) of one matrix."""
        return self.data.shape[2], self.n

    def at_layer(self, layer: int) -> "PackedKernel":
        """The same packed stack (no copy), naming matrix `layer`."""
        if not 0 <= layer < self.data.shape[0]:
            raise IndexError(f"layer {layer} of a stack of {self.data.shape[0]}")
        return self.replace(layer=int(layer))


def pack(w: jax.Array, *, transposed: bool = False) -> PackedKernel:
    """[K, N] or a stack [L, K, N] → PackedKernel (float32), by the kernel's multi-threaded packer.

    transposed: `w` is [N, K] / [L, N, K] (e.g. a tied embedding used as the output projection).
    A copy: do it once, outside the loop that uses it.
    """
    if w.ndim not in (2, 3):
        raise ValueError(f"pack wants a [K, N] matrix or an [L, K, N] stack, got shape {w.shape}")
    load()
    stack = w.reshape(-1, *w.shape[-2:]).astype(jnp.float32)
    n, k = stack.shape[1:] if transposed else stack.shape[:0:-1]
    out = jax.ShapeDtypeStruct((stack.shape[0], -(-n // STRIP), k, STRIP), jnp.float32)
    data = jax.ffi.ffi_call(PACK_TARGET, out, vmap_method="sequential")(stack, transposed=bool(transposed))
    return PackedKernel(data, int(n))


def matmul(x: jax.Array, w: PackedKernel) -> jax.Array:
    """x [..., K] @ matrix `w.layer` of the packed stack → float32[..., N] (the custom call)."""
    load()
    k, n = w.shape
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} features, the packed weight {k}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k).astype(jnp.float32)
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((x2.shape[0], n), jnp.float32),
                            vmap_method="sequential")
    return call(x2, w.data, layer=np.int64(w.layer)).reshape(*lead, n)


def _cpu_id() -> str:
    """The CPU's model and feature flags (the library is built with -march=native)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [line for line in text.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(keep)))


def _library_path() -> tuple[pathlib.Path, list[str]]:
    cxx = os.environ.get("CXX", "g++")
    cmd = [cxx, *FLAGS, "-isystem", jax.ffi.include_dir()]
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *cmd, jax.__version__, platform.machine(),
                                    _cpu_id()]).encode()).hexdigest()[:16]
    root = pathlib.Path(os.environ.get("OMNI_JAX_KERNEL_CACHE", pathlib.Path.home() / ".cache/omni_jax/kernels"))
    return root / f"cpu_gemv-{key}.so", cmd


def _build(path: pathlib.Path, cmd: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        proc = subprocess.run([*cmd, str(SOURCE), "-o", tmp], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        os.replace(tmp, path)  # atomic: concurrent builders (pytest workers) each install a whole file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load() -> ctypes.CDLL:
    """Build (once per source, compiler and CPU), load and register the FFI target; raises on failure."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        path, cmd = _library_path()
        if not path.exists():
            _build(path, cmd)
        lib = ctypes.cdll.LoadLibrary(str(path))
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.OmniJaxPackedGemvF32), platform="cpu")
        jax.ffi.register_ffi_target(PACK_TARGET, jax.ffi.pycapsule(lib.OmniJaxPackF32), platform="cpu")
        lib.omni_jax_gemv_threads.restype = ctypes.c_int
        _state["lib"] = lib
        return lib


def available() -> bool:
    """Whether the kernel is (or can be) built and registered here; logs why not, once."""
    if "lib" in _state:
        return True
    if "error" in _state:
        return False
    try:
        load()
        return True
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        _state["error"] = str(e)
        log.warning("omni_jax CPU decode kernel unavailable, decoding with XLA's dot: %s", e)
        return False


def build_error() -> str | None:
    """Why the kernel could not be built or loaded (None if it was, or was not tried)."""
    return _state.get("error")


def threads() -> int:
    """Threads the kernel's pool uses (starts the pool)."""
    return int(load().omni_jax_gemv_threads())


def why_not(devices) -> str | None:
    """Why the kernel cannot run a decode on `devices` (None when it can: one CPU device and a
    library that builds). On several devices the product is sharded by XLA, which cannot partition
    a custom call, and the kernel's own threads would compete with the device threads."""
    devices = list(devices)
    if len(devices) != 1 or devices[0].platform != "cpu":
        return f"it runs on one CPU device, not {devices}"
    return None if available() else f"it does not build here: {build_error()}"


def usable(devices, dtype) -> bool:
    """Whether a decode on `devices` in compute `dtype` should use the kernel by default: float32,
    `why_not(devices)` is None, and `$OMNI_JAX_CPU_GEMV` is not 0."""
    if os.environ.get("OMNI_JAX_CPU_GEMV", "1") == "0" or jnp.dtype(dtype) != jnp.float32:
        return False
    return why_not(devices) is None
