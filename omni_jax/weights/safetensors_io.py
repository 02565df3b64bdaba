"""Streaming safetensors I/O (bfloat16 included, via ml_dtypes).

Reading never loads a whole file: `read` copies just the requested tensor (or rows of it) with
positioned reads, so memory is returned as soon as the caller drops the array. Writing takes tensors one at a time (`LazyTensor`s
are computed only when their bytes are written).
PyTorch pickle checkpoints (*.bin, *.pt, *.pth) are refused, never unpickled.
"""

from __future__ import annotations

import json
import os
import pathlib
import struct
from typing import Callable, Iterable, Iterator

import ml_dtypes
import numpy as np

DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
CODES = {v: k for k, v in DTYPES.items()}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _read_header(path: pathlib.Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise ValueError(f"{path}: implausible safetensors header length {n}")
        header = json.loads(f.read(n))
    return header, 8 + n


class SafetensorsReader:
    """All tensors of a checkpoint directory (single file or sharded with an index), by name."""

    def __init__(self, directory: str | os.PathLike):
        d = pathlib.Path(directory)
        if not d.is_dir():
            raise FileNotFoundError(f"checkpoint directory {d} does not exist")
        index = d / "model.safetensors.index.json"
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in d.glob("*.safetensors"))
        if not files:
            pickles = sorted(p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES)
            hint = (f" It holds PyTorch pickle files {pickles[:3]}: omni_jax never unpickles them (they can run "
                    "code); convert them to safetensors first with a trusted tool.") if pickles else ""
            raise FileNotFoundError(f"no *.safetensors in {d}.{hint}")
        self.directory = d
        self._entries: dict[str, tuple[pathlib.Path, dict, int]] = {}
        for name in files:
            path = d / name
            if not path.exists():
                raise FileNotFoundError(f"{index.name} names {name}, which is missing from {d}")
            header, offset = _read_header(path)
            for key, meta in header.items():
                if key != "__metadata__":
                    self._entries[key] = (path, meta, offset)
        self._fds: dict[pathlib.Path, int] = {}

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name][1]["shape"])

    def dtype(self, name: str) -> np.dtype:
        code = self._entries[name][1]["dtype"]
        if code not in DTYPES:
            raise ValueError(f"tensor {name}: unsupported safetensors dtype {code}")
        return DTYPES[code]

    def read(self, name: str, rows: slice | None = None) -> np.ndarray:
        """A fresh array with tensor `name`, or only rows `rows` (a step-1 slice of axis 0).

        Only those bytes are read (positioned reads, no memory map), so resident memory holds
        exactly the returned array and is freed with it.
        """
        path, meta, offset = self._entries[name]
        shape, dtype = list(meta["shape"]), self.dtype(name)
        start, end = meta["data_offsets"]
        if rows is not None and shape:
            lo, hi, step = rows.indices(shape[0])
            if step != 1:
                raise ValueError(f"tensor {name}: only contiguous row slices can be read, got {rows}")
            row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
            start, shape[0] = start + lo * row_bytes, max(hi - lo, 0)
            end = start + shape[0] * row_bytes
        out = np.empty(end - start, np.uint8)
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        view, done = memoryview(out), 0
        while done < out.size:  # pread returns at most ~2 GiB per call on Linux
            n = os.preadv(fd, [view[done:]], offset + start + done)
            if n == 0:
                raise ValueError(f"{path}: file ends inside tensor {name}; the file is truncated")
            done += n
        return out.view(dtype).reshape(shape)

    def file_of(self, name: str) -> pathlib.Path:
        return self._entries[name][0]

    def nbytes(self, name: str) -> int:
        start, end = self._entries[name][1]["data_offsets"]
        return end - start

    def close(self) -> None:
        fds = getattr(self, "_fds", {})
        for fd in fds.values():
            os.close(fd)
        fds.clear()

    def __del__(self):
        self.close()


def write_safetensors(path: str | os.PathLike, tensors: Iterable[tuple[str, "np.ndarray | LazyTensor"]],
                      metadata: dict[str, str] | None = None, progress: Callable[[str, int], None] | None = None) -> int:
    """Write (name, array) pairs to one safetensors file, one tensor in memory at a time.

    Arrays may be `LazyTensor`s: only their shape and dtype are needed for the header, their
    bytes are computed when written. progress(name, nbytes) is called after each tensor.
    Returns the bytes written.
    """
    items = list(tensors)
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, arr in items:
        if np.dtype(arr.dtype) not in CODES:
            raise ValueError(f"tensor {name}: dtype {arr.dtype} has no safetensors code")
        size = int(np.prod(arr.shape)) * np.dtype(arr.dtype).itemsize
        header[name] = {"dtype": CODES[np.dtype(arr.dtype)], "shape": list(arr.shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, arr in items:
            blocks = arr.blocks() if isinstance(arr, LazyTensor) else [np.asarray(arr)]
            for data in blocks:
                # A byte view of a contiguous array: written without a second copy.
                f.write(np.ascontiguousarray(data).reshape(-1).view(np.uint8).data)
                if progress:
                    progress(name, int(data.nbytes))
                del data
    return 8 + len(blob) + offset


class LazyTensor:
    """A tensor whose bytes are produced only when written.

    read(rows) -> rows `rows` (a slice of axis 0) as an array of `dtype`. With block_rows, the
    writer asks for that many rows at a time, so a large tensor is never whole in memory.
    """

    def __init__(self, shape, dtype, read: Callable[[slice], np.ndarray], block_rows: int | None = None):
        self.shape, self.dtype, self._read = tuple(shape), np.dtype(dtype), read
        self.block_rows = block_rows

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def _checked(self, rows: slice) -> np.ndarray:
        arr = np.asarray(self._read(rows))
        want = (len(range(*rows.indices(self.shape[0]))), *self.shape[1:]) if self.shape else ()
        if arr.shape != want or arr.dtype != self.dtype:
            raise ValueError(f"lazy tensor rows {rows} came back {arr.shape} {arr.dtype}, expected {want} {self.dtype}")
        return arr

    def materialize(self) -> np.ndarray:
        return self._checked(slice(None))

    def blocks(self) -> Iterator[np.ndarray]:
        if not self.block_rows or not self.shape or self.shape[0] <= self.block_rows:
            yield self.materialize()
            return
        for start in range(0, self.shape[0], self.block_rows):
            yield self._checked(slice(start, min(start + self.block_rows, self.shape[0])))
