"""CPU decode kernels as XLA FFI custom calls: a decode step that streams the weights once.

A decode step multiplies a few rows of activations by every weight matrix of the decoder: it reads
each weight once and is bound by memory bandwidth. XLA:CPU runs such a `[8, k] @ [k, n]` dot on
one thread, at one core's share of the bandwidth (measured: 5.6 to 7.4 GB/s where a 2-thread
streaming read does 16.5; benchmarks/RESULTS.md), and the ~25 small ops around each layer's dots
cost as much again. `cpu_gemv.cc` streams weights packed into 32-column strips instead, on the
calling thread and helpers it schedules on XLA's own intra-op thread pool (no thread of its own).

Use: `pack(w)` a [K, N] weight, or a stack [L, K, N] of them (one per decoder layer), once (outside
the decode loop) into a `PackedKernel` [L, ceil(N / 32), K, 32]; `matmul(x, packed.at_layer(i))`
then computes x @ w[i] in float32 for any number of rows, reading layer i in place (no slice is
copied), and `decoder_layer(...)` runs a whole Qwen2 decoder layer for one new token per row in
one call (norms, q/k/v, rotary, attention over the prompt's and the row's own cache, o, SwiGLU).
`omni_jax.rollout.sampler` decodes that way on a single CPU device in float32 (see
`omni_jax.kernels.cpu_decode`), packing a copy of the decoder's weights once per set of weights.

The library is compiled on first use with the system's C++ compiler (`$CXX`, default g++, with
-O3 -march=native, then `$OMNI_JAX_KERNEL_CXXFLAGS`, e.g. -march=haswell for an AVX2-only build)
against jaxlib's FFI headers, and cached under `$OMNI_JAX_KERNEL_CACHE` (default
~/.cache/omni_jax/kernels), keyed by the source, compiler, flags, jax version and CPU. Its register
tile follows the vector extension it is built for (`tile_shape()`). Loading a library runs its
code, and the cache path is computable by anyone, so only a private cache is used: the directory
is created 0700 and must be the user's own and not writable by group or others (else the library
is built into a fresh private temporary directory for this process), and an entry that is a link,
not the user's, or writable by others is deleted and rebuilt, never loaded. Where it cannot be
built or loaded (any failure, a library without the kernel's symbols included), `available()` is
False (the reason is logged once) and callers keep XLA's ops. Where it builds, decoding uses it by
default only if a short calibration at first use (`calibration()`, cached with the build) measured
its products faster than XLA's dot on this CPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import pathlib
import platform
import shlex
import shutil
import stat
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
LAYER_TARGET = "omni_jax_decoder_layer_f32"
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


def decoder_layer(x: jax.Array, cos: jax.Array, sin: jax.Array, *, input_norm: jax.Array,
                  q: tuple[PackedKernel, jax.Array], k: tuple[PackedKernel, jax.Array],
                  v: tuple[PackedKernel, jax.Array], o: PackedKernel, post_norm: jax.Array, gate: PackedKernel,
                  up: PackedKernel, down: PackedKernel, prompt: tuple[jax.Array, jax.Array, jax.Array],
                  cache: tuple[jax.Array, jax.Array], step: jax.Array, eps: float):
    """One Qwen2 decoder layer for one new token per row, in one custom call (float32).

    x: [R, D], the rows' hidden states; cos, sin: [R, H], the token's rotary tables; input_norm,
    post_norm: the RMSNorm weights [D]; q, k, v: (packed weight, bias); o, gate, up, down: packed
    weights (all of the same layer of their stacks). prompt: (keys, values: [P, K, T, H], valid:
    bool[P, T]), the prompts' cache, rows r·G … r·G+G-1 continuing prompt r (G = R / P); cache:
    (keys, values: [R, K, S, H]), the rows' own cache, positions < `step` (an int32 scalar) written.
    The token attends to its prompt's valid keys, its own cache's first `step` keys and itself,
    in that order, with one softmax. Returns (x after the layer [R, D], the token's key after
    rotary and its value [R, K, H]) for the caller to write at position `step` of the cache.
    """
    load()
    r, d = x.shape
    pk, pv, p_valid = prompt
    ck, cv = cache
    kvh, h = pk.shape[1], pk.shape[3]
    layers = {w.layer for w in (q[0], k[0], v[0], o, gate, up, down)}
    if len(layers) != 1:
        raise ValueError(f"decoder_layer: the packed weights name different layers {sorted(layers)}")
    if ck.shape[:2] != (r, kvh) or ck.shape[3] != h or cv.shape != ck.shape or pv.shape != pk.shape:
        raise ValueError(f"decoder_layer: caches {ck.shape} / {pk.shape} do not fit x {x.shape}")
    f32 = lambda a: a.astype(jnp.float32)  # noqa: E731
    out = (jax.ShapeDtypeStruct((r, d), jnp.float32), jax.ShapeDtypeStruct((r, kvh, h), jnp.float32),
           jax.ShapeDtypeStruct((r, kvh, h), jnp.float32))
    call = jax.ffi.ffi_call(LAYER_TARGET, out, vmap_method="sequential")
    return call(f32(x), f32(cos), f32(sin), f32(input_norm), q[0].data, f32(q[1]), k[0].data, f32(k[1]), v[0].data,
                f32(v[1]), o.data, f32(post_norm), gate.data, up.data, down.data, f32(pk), f32(pv),
                p_valid.astype(bool), f32(ck), f32(cv), jnp.asarray(step, jnp.int32), layer=np.int64(layers.pop()),
                eps=np.float32(eps))


def _cpu_id() -> str:
    """The CPU's model and feature flags (the library is built with -march=native)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [line for line in text.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(keep)))


def cache_root() -> pathlib.Path:
    """Where built libraries are kept: `$OMNI_JAX_KERNEL_CACHE` or ~/.cache/omni_jax/kernels."""
    return pathlib.Path(os.environ.get("OMNI_JAX_KERNEL_CACHE", pathlib.Path.home() / ".cache/omni_jax/kernels"))


def _library_path(root: pathlib.Path | None = None) -> tuple[pathlib.Path, list[str]]:
    cxx = os.environ.get("CXX", "g++")
    cmd = [cxx, *FLAGS, *shlex.split(os.environ.get("OMNI_JAX_KERNEL_CXXFLAGS", "")), "-isystem",
           jax.ffi.include_dir()]
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *cmd, jax.__version__, platform.machine(),
                                    _cpu_id()]).encode()).hexdigest()[:16]
    return (cache_root() if root is None else root) / f"cpu_gemv-{key}.so", cmd


def _untrusted(info: os.stat_result, kind: str) -> str | None:
    """Why a file or directory with this (l)stat may hold someone else's code; None if it cannot."""
    is_kind = stat.S_ISDIR if kind == "directory" else stat.S_ISREG
    if not is_kind(info.st_mode):
        return f"not a {kind}"
    if info.st_uid != os.getuid():
        return f"owned by uid {info.st_uid}, not this user ({os.getuid()})"
    if info.st_mode & 0o022:
        return f"writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _private_root() -> tuple[pathlib.Path, bool]:
    """(the cache directory, made 0700 if missing; whether it is a fresh temporary one, used
    because the configured one may hold libraries planted by others)."""
    root = cache_root()
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            root.mkdir(mode=0o700)
        why = _untrusted(os.lstat(root), "directory")
    except OSError as e:
        why = str(e)
    if why is None:
        return root, False
    log.warning("omni_jax kernel cache %s is not private (%s): building into a temporary directory "
                "instead; `chmod 700` it if it is yours, or set OMNI_JAX_KERNEL_CACHE", root, why)
    return pathlib.Path(tempfile.mkdtemp(prefix="omni_jax_kernels-")), True


def _drop_if_untrusted(path: pathlib.Path) -> None:
    """Delete `path` if it is there but is a link, not the user's, or writable by others."""
    try:
        why = _untrusted(os.lstat(path), "file")
    except FileNotFoundError:
        return
    if why is not None:
        log.warning("omni_jax kernel cache entry %s is %s: deleting it and rebuilding", path, why)
        path.unlink()


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
        root, temporary = _private_root()
        try:
            path, cmd = _library_path(root)
            _drop_if_untrusted(path)
            if not path.exists():
                _build(path, cmd)
                os.chmod(path, 0o700)  # a linker that creates its output anew applies the umask (002: group-writable)
            why = _untrusted(os.lstat(path), "file")  # the directory is private: no one swaps it now
            if why is not None:
                raise RuntimeError(f"{path} is {why}; not loaded")
            lib = ctypes.cdll.LoadLibrary(str(path))
        finally:
            if temporary:  # the loaded library stays mapped
                shutil.rmtree(root, ignore_errors=True)
        try:
            targets = {TARGET: lib.OmniJaxPackedGemvF32, PACK_TARGET: lib.OmniJaxPackF32,
                       LAYER_TARGET: lib.OmniJaxDecoderLayerF32}
        except AttributeError as e:
            raise RuntimeError(f"{path} is not this version's kernel ({e}); delete it to rebuild") from e
        for name, fn in targets.items():
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(fn), platform="cpu")
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
    except Exception as e:  # any build or load failure keeps XLA's ops
        _state["error"] = str(e)
        log.warning("omni_jax CPU decode kernel unavailable, decoding with XLA's dot: %s", e)
        return False


def tile_shape() -> tuple[int, int]:
    """The loaded build's register tile: (float lanes per vector, rows of x per tile); (16, 8) for
    AVX-512, (8, 2) for AVX2."""
    lib = load()
    return int(lib.OmniJaxTileLanes()), int(lib.OmniJaxTileRows())


def build_error() -> str | None:
    """Why the kernel could not be built or loaded (None if it was, or was not tried)."""
    return _state.get("error")


def why_not(devices) -> str | None:
    """Why the kernel cannot run a decode on `devices` (None when it can: one CPU device and a
    library that builds). On several devices the product is sharded by XLA, which cannot partition
    a custom call, and the kernel's own threads would compete with the device threads."""
    devices = list(devices)
    if len(devices) != 1 or devices[0].platform != "cpu":
        return f"it runs on one CPU device, not {devices}"
    return None if available() else f"it does not build here: {build_error()}"


def _calibration_path() -> pathlib.Path:
    """Where the calibration of this build is cached: next to the library, keyed the same."""
    lib = _library_path()[0]
    return lib.with_name(lib.stem + ".calibration.json")


# The products timed by the calibration: a decode step's shapes (8 rows; a square projection and an
# MLP's up and down), 8 MiB of weights each, more than a core's L2.
CALIBRATION_SHAPES = ((8, 1024, 2048), (8, 2048, 1024))


def _time_products(repeats: int = 15) -> tuple[float, float]:
    """(kernel, XLA's dot) seconds for one pass over CALIBRATION_SHAPES: the best of `repeats`,
    the two timed alternately so that a busy machine disturbs both alike."""
    import time

    rng = np.random.default_rng(0)
    kernel_fn, xla_fn = jax.jit(matmul), jax.jit(jnp.dot)
    cases = []
    for m, k, n in CALIBRATION_SHAPES:
        x = jnp.asarray(rng.standard_normal((m, k), np.float32))
        w = jnp.asarray(rng.standard_normal((k, n), np.float32))
        packed = pack(w)
        jax.block_until_ready((kernel_fn(x, packed), xla_fn(x, w)))  # compile, warm
        cases.append((x, w, packed))
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, (fn, arg) in enumerate(((kernel_fn, 2), (xla_fn, 1))):
            t0 = time.perf_counter()
            for case in cases:
                fn(case[0], case[arg]).block_until_ready()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best[0], best[1]


def calibration() -> dict:
    """Whether the kernel's products are faster than XLA's dot on this CPU, as measured once per
    build: {"kernel_s", "xla_s", "faster"}. Timed on first use (under a second) and cached next to
    the library, so later processes read it."""
    with _lock:
        if "calibration" in _state:
            return _state["calibration"]
    path = _calibration_path()
    try:
        # The decision picks which code runs: read it only from a file of this user's that no one
        # else can write, in a directory no one else can write (as the library itself).
        why = _untrusted(os.lstat(path.parent), "directory") or _untrusted(os.lstat(path), "file")
        if why is not None:
            log.warning("omni_jax kernel calibration %s is not trusted (%s): measuring again", path, why)
            raise ValueError(why)
        result = json.loads(path.read_text())
        if not isinstance(result.get("faster"), bool):
            raise ValueError(f"no decision in {path}")
    except (OSError, ValueError):
        kernel_s, xla_s = _time_products()
        result = {"kernel_s": kernel_s, "xla_s": xla_s, "faster": bool(kernel_s < xla_s),
                  "shapes": [list(s) for s in CALIBRATION_SHAPES]}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump(result, f)
            os.replace(tmp, path)  # atomic, as the library
        except OSError as e:
            log.warning("could not cache the CPU decode kernel's calibration in %s: %s", path, e)
        log.info("CPU decode kernel: products %.2f ms, XLA's dot %.2f ms: decoding with %s", kernel_s * 1e3,
                 xla_s * 1e3, "the kernel" if result["faster"] else "XLA's dot")
    with _lock:
        _state["calibration"] = result
    return result


def faster_than_xla() -> bool:
    """The calibration's decision (measured once per build and CPU, then read from the cache)."""
    return calibration()["faster"]


def usable(devices, dtype) -> bool:
    """Whether a decode on `devices` in compute `dtype` should use the kernel by default: float32,
    `why_not(devices)` is None, and `$OMNI_JAX_CPU_GEMV` is 1 (always), or unset and the kernel
    was measured faster than XLA's dot on this CPU (`calibration()`); 0: never."""
    setting = os.environ.get("OMNI_JAX_CPU_GEMV", "")
    if setting == "0" or jnp.dtype(dtype) != jnp.float32 or why_not(devices) is not None:
        return False
    return setting == "1" or faster_than_xla()
