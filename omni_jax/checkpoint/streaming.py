"""Orbax leaves that are never whole in host memory: written in row blocks, read by slices.

`StreamedArray` is a host array produced block by block along axis 0 while Orbax writes it (one
decoder layer at a time for stacked parameters), so converting a checkpoint holds one HF tensor
at a time instead of a whole `[layers, ...]` array. On disk it is an ordinary Orbax array: any
Orbax reader restores it as `np.ndarray` or as a sharded `jax.Array`.

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
    """A host array of `shape` / `dtype` whose rows come from `read_rows(start, stop)` at write time.

    read_rows(start, stop) -> array[stop - start, *shape[1:]] of `dtype`; called for consecutive
    blocks of `block_rows` rows (the last may be shorter), from Orbax's writer thread.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    read_rows: Callable[[int, int], np.ndarray]
    block_rows: int

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if not self.shape or self.block_rows < 1:
            raise ValueError(f"StreamedArray needs rank >= 1 and block_rows >= 1, got {self.shape}, {self.block_rows}")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def block(self, start: int, stop: int) -> np.ndarray:
        out = np.asarray(self.read_rows(start, stop))
        if out.shape != (stop - start, *self.shape[1:]) or out.dtype != self.dtype:
            raise ValueError(f"StreamedArray rows {start}:{stop} came back {out.shape} {out.dtype}, "
                             f"expected {(stop - start, *self.shape[1:])} {self.dtype}")
        return out


class TensorStoreLeaf:
    """Marker restore type: restore a leaf as an open, lazily read `tensorstore.TensorStore`."""


# Bytes of StreamedArray blocks read but not yet written, across all arrays of a save. Small
# parameters share it and commit together; a block larger than this is written alone.
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
        row_bytes = value.nbytes // max(value.shape[0], 1)

        async def write(start: int, stop: int, block: np.ndarray) -> None:
            try:
                await store[start:stop].write(block, can_reference_source_data_indefinitely=True)
            finally:
                await budget.release((stop - start) * row_bytes)

        pending = None
        for start in range(0, value.shape[0], value.block_rows):
            stop = min(start + value.block_rows, value.shape[0])
            await budget.acquire((stop - start) * row_bytes)
            try:
                block = await asyncio.to_thread(value.block, start, stop)
            except BaseException:
                await budget.release((stop - start) * row_bytes)
                raise
            if pending is not None:
                await pending  # keep this array's writes in order, one in flight
            pending = asyncio.ensure_future(write(start, stop, block))
            del block
        await pending


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
