"""Writing an HF checkpoint directory: size-capped safetensors shards + index, published atomically.

The directory is assembled under a hidden sibling (`.<name>.partial-<id>`) and renamed to its
final name only when every file is written, so an interrupted export never leaves a directory
at `out` that loads as complete.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import uuid
from typing import Callable, Sequence

from tqdm import tqdm

from omni_jax.weights.safetensors_io import LazyTensor, write_safetensors

# Hugging Face's default max_shard_size ("5GB" = 5 * 10**9 bytes).
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
INDEX_FILE = "model.safetensors.index.json"


def natural_key(name: str) -> list:
    """Sort key that orders layers numerically (layers.2 before layers.10)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def plan_shards(tensors: Sequence[tuple[str, LazyTensor]], max_shard_bytes: int) -> list[list[tuple[str, LazyTensor]]]:
    """Consecutive groups of tensors, each at most max_shard_bytes (a bigger tensor goes alone)."""
    shards: list[list] = [[]]
    size = 0
    for name, tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, tensor))
        size += tensor.nbytes
    return [s for s in shards if s]


def refuse_existing(out: pathlib.Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise FileExistsError(f"output {out} already exists; pass --overwrite (overwrite=True) to replace it")


def publish_dir(out, overwrite: bool, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """Run write(tmp_dir) and move tmp_dir to `out` only if it finished."""
    out = pathlib.Path(out)
    refuse_existing(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    tmp = out.parent / f".{out.name}.partial-{token}"
    tmp.mkdir()
    try:
        write(tmp)
        if out.exists():
            old = out.parent / f".{out.name}.replaced-{token}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_hf_weights(directory: pathlib.Path, tensors: Sequence[tuple[str, LazyTensor]], max_shard_bytes: int,
                     progress: bool = True) -> dict:
    """Shards `model-0000k-of-0000n.safetensors` and their index into `directory`; returns the index."""
    shards = plan_shards(tensors, max_shard_bytes)
    total = sum(t.nbytes for _, t in tensors)
    weight_map = {}
    with tqdm(total=total, desc=f"writing {len(shards)} safetensors shard(s)", unit="B", unit_scale=True,
              disable=not progress) as bar:
        for k, shard in enumerate(shards, start=1):
            fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
            write_safetensors(directory / fname, shard, metadata={"format": "pt"},
                              progress=lambda _, n: bar.update(n))
            weight_map.update({name: fname for name, _ in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index


def read_json(path: pathlib.Path, default=None):
    """The parsed JSON file at `path`, or `default` when there is none."""
    return json.loads(path.read_text()) if path.exists() else default


def write_json(path: pathlib.Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
