"""HF safetensors → Orbax `CheckpointStore` (step 0), tensor by tensor.

Two ways to place the parameters, same files on disk:
- streamed (no layout): each parameter is a `StreamedArray`, written one HF tensor (one layer of a
  stacked parameter) at a time; peak host memory is about one tensor, never the model.
- on a `parallel.Layout` (a mesh and its rules): each parameter is built on its target sharding
  with `jax.make_array_from_callback` (every process reads only the slices its devices hold) and
  Orbax writes the shards; the model lives in device memory, host memory holds one tensor slice at
  a time.
"""

from __future__ import annotations

import atexit
import contextlib
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx
from tqdm import tqdm

from omni_jax import parallel
from omni_jax.checkpoint import CheckpointStore, StreamedArray, thinker_meta
from omni_jax.checkpoint.store import absolute
from omni_jax.checkpoint.loading import param_shardings
from omni_jax.model import lora
from omni_jax.model.config import load_config
from omni_jax.model.thinker import abstract_thinker
from omni_jax.weights import hf_load, hf_write, mapping, peft
from omni_jax.weights.safetensors_io import SafetensorsReader

CONVERTED_STEP = 0


def hf_to_orbax(hf_dir, out, *, dtype: str | None = None,
                layout: parallel.Layout | jax.sharding.Mesh | None = None, overwrite: bool = False, progress: bool = True, adapter=None) -> dict[str, Any]:
    """Convert the HF Qwen2.5-Omni (or thinker-only) checkpoint in `hf_dir` to a store at `out`.

    hf_dir: local directory with config.json and *.safetensors (single or sharded with an index);
      full Omni checkpoints keep their talker / token2wav tensors out of the result.
    out: local path or gs:// URL; refused if it exists and is not empty, unless overwrite.
    dtype: "bfloat16" / "float32" storage dtype (default: the checkpoint's own, from its embedding).
    layout: place parameters on their shardings (logical axes → mesh axes) before writing; a bare
      Mesh is `parallel.Layout(mesh)` (the default rules); None streams from host memory.
    adapter: a PEFT LoRA adapter directory written with the base (its adapters, meta["lora"]).
    Returns the meta written with step 0.
    """
    hf_dir, layout = pathlib.Path(hf_dir), parallel.as_layout(layout)
    if "://" in str(hf_dir) or not hf_dir.is_dir():
        raise FileNotFoundError(f"HF checkpoint directory {hf_dir} does not exist (it must be on local disk)")
    reader = SafetensorsReader(hf_dir)
    prefix = hf_load.thinker_prefix(reader)
    dtype = jnp.dtype(dtype or reader.dtype(prefix + "model.embed_tokens.weight")).name
    cfg = load_config(hf_dir, dtype=dtype, param_dtype=dtype)
    _, abstract_state = nnx.split(abstract_thinker(cfg))
    shapes = hf_load.param_shapes(abstract_state)
    rows = {row.flax_path(): row for row in hf_load.check_weights(reader, cfg, shapes)}

    store_dir = prepare_output(out, overwrite)
    total = sum(int(np.prod(s)) for s in shapes.values()) * jnp.dtype(dtype).itemsize
    bar = tqdm(total=total, desc=f"hf2jax {hf_dir.name}", unit="B", unit_scale=True,
               disable=not progress or jax.process_index() != 0)
    if layout is None:
        params = _streamed_params(reader, cfg, rows, shapes, prefix, jnp.dtype(dtype), bar)
    else:
        shardings = jax.tree.leaves(param_shardings(abstract_state, layout),
                                    is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
        state = hf_load.load_params(reader, cfg, abstract_state, shardings,
                                    progress=lambda row: bar.update(_row_bytes(row, shapes, dtype)))
        params = state.to_pure_dict()
    meta = thinker_meta(cfg, source=_provenance(hf_dir, reader), generation_config=hf_write.read_json(hf_dir / "generation_config.json"))
    if adapter is not None:
        lora_cfg, adapters = peft.read_adapter(adapter, cfg.text.num_hidden_layers)
        for proj, ab in adapters.items():  # small: host arrays, one copy per process
            sub, attr = lora.PROJECTIONS[proj]
            params["model"]["layers"][sub][attr]["lora"] = {k: v.astype(dtype) for k, v in ab.items()}
        meta["lora"] = lora_cfg.to_dict()
        meta["source"]["adapter"] = str(adapter)
    try:
        with CheckpointStore(store_dir, async_save=False) as store:
            store.save(CONVERTED_STEP, params=params, meta=meta)
    except BaseException:
        if jax.process_index() == 0:  # an unfinished step never loads; do not leave it behind
            _discard_unfinished_steps(store_dir)
        raise
    finally:
        bar.close()
    reader.close()
    return meta


def _row_bytes(row: mapping.Row, shapes, dtype) -> int:
    return int(np.prod(shapes[row.flax_path()])) * jnp.dtype(dtype).itemsize


def _streamed_params(reader, cfg, rows, shapes, prefix, dtype, bar) -> dict:
    """The params pure dict with a StreamedArray per leaf, read through the mapping table."""
    params: dict = {}
    for path, shape in shapes.items():
        def read(index, row=rows[path]):
            out = hf_load.read_param(reader, row, cfg, prefix, dtype, index)
            bar.update(out.nbytes)
            return out
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = StreamedArray(shape, dtype, read, layers=rows[path].stacked)
    return params


def _unfinished_steps(out: epath.Path) -> list[epath.Path]:
    """Orbax's temporary step directories in `out`: a save that never finished."""
    return [child for child in out.iterdir() if ".orbax-checkpoint-tmp" in child.name]


def _remove_unfinished_steps(out: epath.Path) -> None:
    for child in _unfinished_steps(out) if out.is_dir() else []:
        child.rmtree() if child.is_dir() else child.unlink()


def _discard_unfinished_steps(out: epath.Path, tries: int = 5) -> None:
    """After a failed save: remove its unfinished step without ever raising over the failure.
    Writes already in flight may still land in it for a moment, so removal is repeated until the
    directory stays clean through a pause, and once more when the process exits (after Python's
    writer threads have ended)."""
    atexit.register(_quietly_remove_unfinished_steps, out)
    for attempt in range(tries):
        _quietly_remove_unfinished_steps(out)
        time.sleep(0.2 * 2 ** attempt)
        with contextlib.suppress(OSError):
            if not (out.is_dir() and _unfinished_steps(out)):
                return
    print(f"warning: could not remove the unfinished step in {out} yet; the next conversion to it removes it",
          file=sys.stderr)


def _quietly_remove_unfinished_steps(out: epath.Path) -> None:
    with contextlib.suppress(OSError):
        _remove_unfinished_steps(out)


def prepare_output(out, overwrite: bool) -> epath.Path:
    """`out` as an empty directory to write into; an existing non-empty one only with overwrite.
    A directory holding nothing but an unfinished step (a conversion killed mid-write) is reused."""
    out = absolute(out)
    if jax.process_index() == 0 and out.is_dir() and (unfinished := _unfinished_steps(out)) \
            and len(unfinished) == len(list(out.iterdir())):
        print(f"{out}: removing {', '.join(p.name for p in unfinished)} left by an interrupted conversion",
              file=sys.stderr)
        _remove_unfinished_steps(out)
    _sync("omni_jax_reuse_output")
    if out.exists() and (not out.is_dir() or any(True for _ in out.iterdir())):
        if not overwrite:
            raise FileExistsError(f"output {out} already exists; pass --overwrite (overwrite=True) to replace it")
        if jax.process_index() == 0:
            out.rmtree() if out.is_dir() else out.unlink()
    _sync("omni_jax_prepare_output")
    return out


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _provenance(hf_dir: pathlib.Path, reader: SafetensorsReader) -> dict[str, Any]:
    files = sorted({reader.file_of(k) for k in reader.keys()})
    return {"kind": "hf", "hf_dir": str(hf_dir.resolve()),
            "files": [{"name": f.name, "bytes": f.stat().st_size} for f in files],
            "tensors": len(reader.keys())}
