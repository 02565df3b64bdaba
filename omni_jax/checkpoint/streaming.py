"""Orbax leaves that are never whole in host memory: written chunk by chunk, read by slices.

`StreamedArray` is a host array produced piece by piece while Orbax writes it (one decoder layer
of a stacked parameter, or one storage chunk of a large matrix, at a time), so converting a
checkpoint holds a few HF tensors' worth of bytes (INFLIGHT_BYTES) instead of whole `[layers, ...]`
arrays. On disk it is an ordinary Orbax array: any Orbax reader restores it as `np.ndarray` or as
a sharded `jax.Array`.

Restoring with `restore_type=TensorStoreLeaf` gives each leaf as an open `tensorstore.TensorStore`
instead of data, so an exporter reads one layer (`leaf[i].read().result()`) at a time.

Both go through Orbax's public extension point (a TypeHandler in a registry handed to
`PyTreeCheckpointHandler`); the global Orbax registry is not modified.
"""

from __future__ import annotations

import asyncio
import dataclasses
import weakref
from typing import Any, Callable

import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from orbax.checkpoint import type_handlers


@dataclasses.dataclass(frozen=True, eq=False)
class StreamedArray:
    """A host array of `shape` / `dtype` produced piece by piece while Orbax writes it.

    read(index) -> np.ndarray: the part `index` (a tuple of slices, one per axis) in `dtype`;
    called from Orbax's writer thread. layers=True marks axis 0 as stacked layers: each layer is
    stored as its own chunk and read on its own. Otherwise arrays above CHUNK_BYTES are stored in
    chunks of about that size and read chunk by chunk; smaller ones are read whole.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    read: Callable[[tuple[slice, ...]], np.ndarray]
    layers: bool = False

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if not self.shape:
            raise ValueError("StreamedArray needs rank >= 1")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def block(self, index: tuple[slice, ...]) -> np.ndarray:
        out = np.asarray(self.read(index))
        want = tuple(len(range(*s.indices(d))) for s, d in zip(index, self.shape))
        if out.shape != want or out.dtype != self.dtype:
            raise ValueError(f"StreamedArray part {index} came back {out.shape} {out.dtype}, expected {want} {self.dtype}")
        return out


class TensorStoreLeaf:
    """Marker restore type: restore a leaf as an open, lazily read `tensorstore.TensorStore`."""


# Storage chunk size for large non-layered StreamedArrays (embedding, lm_head).
CHUNK_BYTES = 64 * 2**20
# Whole chunks are grouped into blocks of up to this size (small stacked arrays: one write).
BLOCK_BYTES = 32 * 2**20
# Bytes of blocks read but not yet written, across all arrays of a save. Small parameters share
# it and commit together; a block larger than this is written alone.
INFLIGHT_BYTES = 128 * 2**20


class _ByteBudget:
    """Admit blocks while their bytes fit the budget (one block is always admitted)."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self.cond = asyncio.Condition()

    async def acquire(self, n: int) -> None:
        async with self.cond:
            await self.cond.wait_for(lambda: self.used == 0 or self.used + n <= self.limit)
            self.used += n

    async def release(self, n: int) -> None:
        async with self.cond:
            self.used -= n
            self.cond.notify_all()


class _StreamedArrayHandler(type_handlers.NumpyHandler):
    """Writes a StreamedArray block by block under a byte budget shared by the whole save.

    The on-disk form and type string are those of a numpy array, so no custom code is needed to
    read it back.
    """

    def __init__(self, inflight_bytes: int = INFLIGHT_BYTES):
        super().__init__(deepcopy_host_arrays=False)
        self._inflight_bytes = inflight_bytes
        self._budgets: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _budget(self) -> _ByteBudget:
        loop = asyncio.get_running_loop()  # asyncio primitives belong to one event loop
        if loop not in self._budgets:
            self._budgets[loop] = _ByteBudget(self._inflight_bytes)
        return self._budgets[loop]

    async def _open_and_write(self, value, tspec: dict[str, Any], ts_context: ts.Context):
        if not isinstance(value, StreamedArray):
            return await super()._open_and_write(value, tspec, ts_context)
        budget = self._budget()
        store = await ts.open(ts.Spec(tspec), create=True, open=True, context=ts_context)

        async def write(index, block: np.ndarray) -> None:
            try:
                await store[index].write(block, can_reference_source_data_indefinitely=True)
            finally:
                await budget.release(block.nbytes)

        pending = None
        for index in _blocks(value, tuple(store.chunk_layout.write_chunk.shape)):
            nbytes = value.dtype.itemsize * int(np.prod([len(range(*s.indices(d))) for s, d in zip(index, value.shape)]))
            await budget.acquire(nbytes)
            try:
                block = await asyncio.to_thread(value.block, index)
            except BaseException:
                await budget.release(nbytes)
                raise
            if pending is not None:
                await pending  # keep this array's writes in order, one in flight
            pending = asyncio.ensure_future(write(index, block))
            del block
        await pending


def _blocks(value: StreamedArray, chunk: tuple[int, ...]):
    """Index tuples covering `value` in whole storage chunks along the first axis chunks split.

    Each block spans full extents of the other axes, so it is a union of whole chunks and a write
    never has to read back and merge a partly written chunk.
    """
    split = [i for i, (c, d) in enumerate(zip(chunk, value.shape)) if c < d]
    if not split:
        yield tuple(slice(0, d) for d in value.shape)
        return
    axis = split[0]
    chunk_bytes = value.nbytes * chunk[axis] // value.shape[axis]
    step = chunk[axis] * max(1, BLOCK_BYTES // max(chunk_bytes, 1))
    for start in range(0, value.shape[axis], step):
        index = [slice(0, d) for d in value.shape]
        index[axis] = slice(start, min(start + step, value.shape[axis]))
        yield tuple(index)


class _OpenTensorStoreHandler(type_handlers.NumpyHandler):
    """Restores a saved array as an open TensorStore (no data read yet)."""

    def typestr(self) -> str:
        return "omni_jax.TensorStoreLeaf"

    async def deserialize(self, infos, args=None):
        opened = []
        for info in infos:
            await info.await_path_creation()
            spec = type_handlers.get_json_tspec_read(info, use_ocdbt=bool(info.is_ocdbt_checkpoint))
            opened.append(ts.open(ts.Spec(spec), open=True, read=True, context=info.ts_context))
        return await asyncio.gather(*opened)


class _Registry(type_handlers.TypeHandlerRegistry):
    """Our two handlers first, then Orbax's global registry for everything else."""

    def __init__(self):
        self._own = ((StreamedArray, _StreamedArrayHandler()), (TensorStoreLeaf, _OpenTensorStoreHandler()))

    def add(self, ty, handler, func=None, override=False, ignore_warnings=False):
        raise NotImplementedError("register types with orbax.checkpoint.type_handlers.register_type_handler")

    def get(self, ty):
        if isinstance(ty, str):
            if ty == self._own[1][1].typestr():
                return self._own[1][1]
        elif isinstance(ty, type):
            for own_type, handler in self._own:
                if issubclass(ty, own_type):
                    return handler
        return type_handlers.get_type_handler(ty)

    def has(self, ty) -> bool:
        try:
            self.get(ty)
            return True
        except ValueError:
            return False


REGISTRY = _Registry()


def pytree_handler() -> ocp.PyTreeCheckpointHandler:
    """The PyTree handler every omni_jax pytree item uses (knows StreamedArray, TensorStoreLeaf)."""
    return ocp.PyTreeCheckpointHandler(type_handler_registry=REGISTRY)
