"""What makes a restored checkpoint trustworthy: per-array checksums written at save, finite values.

`checksums(tree)` gives, for every array leaf, `[dtype, checksum]` with the checksum a 32-bit
position-weighted sum of the array's raw bits, computed by one jitted reduction on the arrays where
they live (sharded arrays included: every process gets the same global value, so the meta JSON is
the same on every host). Flipping any bytes of a saved file changes it with probability 1 - 2^-32.
`problems(tree, expected)` compares a restored tree with the saved checksums and checks that every
floating-point value is finite; it returns what is wrong, leaf by leaf.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_MULT = np.uint32(2654435761)  # Knuth's multiplicative hash constant: weights differ per position


class DamagedCheckpoint(Exception):
    """A step whose files are missing, truncated, or whose values differ from what was saved."""


class CheckpointMismatch(KeyError):
    """A whole step that does not fit the run asking for it (another config's items)."""

    def __str__(self):  # KeyError would print the message quoted
        return str(self.args[0])


def _bits(x):
    """uint32[N] holding the raw bits of x (16- and 8-bit dtypes widened, 64-bit split in two)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    size = x.dtype.itemsize
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[size]
    bits = jax.lax.bitcast_convert_type(x, unsigned)  # 8-byte dtypes gain a trailing axis of 2
    return bits.astype(jnp.uint32).reshape(-1)


def _one(x):
    bits = _bits(x)
    weights = jnp.arange(bits.shape[0], dtype=jnp.uint32) * _MULT + jnp.uint32(1)
    checksum = jnp.sum(bits * weights, dtype=jnp.uint32)  # wraps modulo 2^32, the same everywhere
    finite = jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)
    return checksum, finite


@functools.partial(jax.jit)
def _reduce(leaves):
    return [_one(x) for x in leaves]


def _array_leaves(tree):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in flat if isinstance(leaf, (jax.Array, np.ndarray))]


def _dtype_name(x) -> str:
    return str(x.dtype)


def _one_host(x: np.ndarray, chunk: int = 1 << 24) -> tuple[int, bool]:
    """`_one` in numpy, a chunk at a time (host arrays stay on the host, memory stays bounded)."""
    size = x.dtype.itemsize
    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
    flat = np.ascontiguousarray(x).reshape(-1).view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint32}[size])
    total = np.uint32(0)
    finite = True
    inexact = np.issubdtype(x.dtype, np.inexact) or x.dtype.kind == "V"  # bfloat16 & co. are void-like
    for start in range(0, flat.shape[0], chunk):
        bits = flat[start:start + chunk].astype(np.uint32)
        weights = np.arange(start, start + bits.shape[0], dtype=np.uint32) * _MULT + np.uint32(1)
        total = np.uint32((int(total) + int(np.sum(bits * weights, dtype=np.uint32))) & 0xFFFFFFFF)
    if inexact or jnp.issubdtype(x.dtype, jnp.inexact):
        finite = bool(np.all(np.isfinite(x.astype(np.float32) if x.dtype.kind == "V" or x.dtype.itemsize < 4 else x)))
    return int(total), finite


def summarize(tree) -> dict[str, tuple[str, int, bool]]:
    """keypath -> (dtype, checksum, all finite) for every array leaf: jax arrays by one jitted
    reduction where they live, numpy arrays on the host."""
    leaves = _array_leaves(tree)
    on_device = [(path, x) for path, x in leaves if not isinstance(x, np.ndarray)]
    out = {}
    if on_device:
        results = jax.device_get(_reduce([x for _, x in on_device]))
        out.update({path: (_dtype_name(x), int(c), bool(f)) for (path, x), (c, f) in zip(on_device, results)})
    for path, x in leaves:
        if isinstance(x, np.ndarray):
            out[path] = (_dtype_name(x), *_one_host(x))
    return {path: out[path] for path, _ in leaves}


def checksums(tree) -> dict[str, list]:
    """keypath -> [dtype, checksum] for every array leaf: what `CheckpointStore.save` writes into the meta."""
    return {path: [dtype, checksum] for path, (dtype, checksum, _) in summarize(tree).items()}


def problems(tree, expected: dict[str, list] | None) -> list[str]:
    """What is wrong with a restored tree: non-finite values, and checksums that differ from the saved ones
    (leaves restored as another dtype than saved are only checked for finite values)."""
    out = []
    for path, (dtype, checksum, finite) in summarize(tree).items():
        if not finite:
            out.append(f"{path} holds NaN or infinite values")
        want = (expected or {}).get(path)
        if want is not None and want[0] == dtype and int(want[1]) != checksum:
            out.append(f"{path} differs from what was saved (checksum {checksum:#010x}, saved {int(want[1]):#010x})")
    return out
