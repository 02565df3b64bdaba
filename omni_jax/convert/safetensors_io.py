"""Streaming safetensors I/O with NumPy memory maps (bfloat16 included, via ml_dtypes).

Reading never loads a whole file: each tensor is a memory-mapped view, paged in when sliced.
PyTorch pickle checkpoints (*.bin, *.pt, *.pth) are refused, never unpickled.
"""

from __future__ import annotations

import json
import os
import pathlib
import struct
from typing import Iterable, Iterator

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
        self._maps: dict[pathlib.Path, np.memmap] = {}

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

    def get(self, name: str) -> np.ndarray:
        """A read-only memory-mapped view of tensor `name` (no copy)."""
        path, meta, offset = self._entries[name]
        if path not in self._maps:
            self._maps[path] = np.memmap(path, dtype=np.uint8, mode="r")
        start, end = meta["data_offsets"]
        raw = self._maps[path][offset + start:offset + end]
        return raw.view(self.dtype(name)).reshape(meta["shape"])

    def file_of(self, name: str) -> pathlib.Path:
        return self._entries[name][0]


def write_safetensors(path: str | os.PathLike, tensors: Iterable[tuple[str, np.ndarray]],
                      metadata: dict[str, str] | None = None) -> int:
    """Write (name, array) pairs to one safetensors file, one tensor in memory at a time.

    `tensors` is consumed twice (header, then data), so pass a re-iterable (a list of lazily
    computed arrays is fine: pass callables via `LazyTensor`). Returns bytes written.
    """
    items = list(tensors)
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, arr in items:
        shape, dtype = (arr.shape, arr.dtype) if not isinstance(arr, LazyTensor) else (arr.shape, arr.dtype)
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": CODES[np.dtype(dtype)], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, arr in items:
            data = arr.materialize() if isinstance(arr, LazyTensor) else arr
            f.write(np.ascontiguousarray(data).tobytes())
    return 8 + len(blob) + offset


class LazyTensor:
    """A tensor whose bytes are produced only when written."""

    def __init__(self, shape, dtype, fn):
        self.shape, self.dtype, self._fn = tuple(shape), np.dtype(dtype), fn

    def materialize(self) -> np.ndarray:
        arr = np.asarray(self._fn())
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError(f"lazy tensor produced {arr.shape} {arr.dtype}, promised {self.shape} {self.dtype}")
        return arr


def iter_tensors(reader: SafetensorsReader) -> Iterator[tuple[str, np.ndarray]]:
    for name in reader.keys():
        yield name, reader.get(name)
