"""Orbax `CheckpointStore` step → HF safetensors directory, one tensor at a time.

Each HF tensor is read from the checkpoint as one slice (one layer of a stacked parameter),
turned back into the torch layout with the same mapping table used for loading, and written
straight into its shard, so memory holds about one tensor.

With a base HF directory the export is ready to publish: its tokenizer / processor /
chat-template files are copied, and if the base is a full Qwen2.5-Omni (talker + token2wav)
the result is a full checkpoint whose `thinker.*` tensors are ours and whose other tensors,
config.json and speaker file are the base's, untouched.
"""

from __future__ import annotations

import logging
import pathlib
import re
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omni_jax import checkpoint
from omni_jax.model import lora
from omni_jax.model.config import ThinkerConfig, from_hf_dict
from omni_jax.model.thinker import abstract_thinker
from omni_jax.weights import hf_load, hf_write, mapping, peft
from omni_jax.weights.hf_load import WeightMismatchError
from omni_jax.weights.safetensors_io import LazyTensor, SafetensorsReader

# Tokenizer, processor and chat-template files a base HF directory contributes.
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.json", "chat_template.jinja", "preprocessor_config.json",
                   "processor_config.json", "video_preprocessor_config.json")
# The full model's speaker embeddings (a torch file): copied byte for byte, never unpickled here.
SPEAKER_FILE = "spk_dict.pt"
# Large tensors are read and written this many bytes at a time.
BLOCK_BYTES = 64 * 2**20


def orbax_to_hf(ckpt, out, *, step: int | None = None, base_hf_dir=None, dtype: str | None = None,
                overwrite: bool = False, max_shard_bytes: int = hf_write.DEFAULT_MAX_SHARD_BYTES,
                progress: bool = True, adapter_only: bool = False) -> dict[str, Any]:
    """Export one step of the store `ckpt` (local or gs://) to an HF directory `out` (local).

    step: default the latest committed step. dtype: "bfloat16" / "float32" for the thinker
    tensors (default: as stored). base_hf_dir: see the module docstring. A LoRA run's step is
    written merged (W + (α/r)·A B), or with `adapter_only` as a PEFT adapter directory
    (`omni_jax.weights.peft`). Returns a summary.
    """
    if "://" in str(out):
        raise ValueError(f"jax2hf writes a local directory, not {out}; export locally, then copy it (gsutil, hf upload)")
    out = pathlib.Path(out)
    hf_write.refuse_existing(out, overwrite)
    with _QuietOrbax() as quiet:  # Orbax warns about every item it is not asked for, twice
        store, directory, step, meta = checkpoint.open_thinker_step(ckpt, step)
        cfg = from_hf_dict(meta["hf_config"])
        handles = {hf_load.path_of(kp): h for kp, h in jax.tree_util.tree_flatten_with_path(store.open_params(step))[0]}
    handles, adapters = peft.split_adapters(handles)
    if adapter_only:
        return _export_adapter(out, overwrite, adapters, meta, step, directory, base_hf_dir, dtype)
    _check_params(handles, cfg, f"step {step} of {directory}")
    merge = peft.merge_fn(adapters, lora.LoRAConfig.from_dict(meta["lora"])) if adapters else None

    base = _Base(pathlib.Path(base_hf_dir)) if base_hf_dir else None
    full = base is not None and base.is_full
    tensors = _thinker_tensors(handles, cfg, "thinker." if full else "", dtype, merge)
    thinker_dtype = tensors[0][1].dtype
    if full:
        base.check_matches(cfg, tensors)
        tensors += base.other_tensors()
    tensors.sort(key=lambda item: hf_write.natural_key(item[0]))
    config = base.config if full else thinker_only_config(meta["hf_config"], thinker_dtype)
    generation_config = ((base.generation_config() if base else None) or meta.get("generation_config")
                         or default_generation_config(config))

    def write(tmp: pathlib.Path) -> None:
        hf_write.write_hf_weights(tmp, tensors, max_shard_bytes, progress)
        hf_write.write_json(tmp / "config.json", config)
        hf_write.write_json(tmp / "generation_config.json", generation_config)
        for src in base.files_to_copy() if base else ():
            shutil.copy2(src, tmp / src.name)

    hf_write.publish_dir(out, overwrite, write)
    return {"out": str(out), "step": step, "full_model": full, "tensors": len(tensors),
            "bytes": sum(t.nbytes for _, t in tensors), "not_exported": sorted(quiet.items)}


class _QuietOrbax(logging.Filter):
    """Drops absl's WARNINGs from Orbax about a read-only checkpoint and about the items a read of
    the params leaves alone (a training run's opt_state, counters, data position); `items` collects
    those items' names, for one line that says what is not exported."""

    _ITEM = re.compile(r'Item "([^"]+)" was found in the checkpoint, but could not be restored')
    _DROP = ("read_only=True", "Given directory is read only")

    def __init__(self):
        super().__init__()
        self.items: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        match = self._ITEM.search(message)
        if match:
            self.items.add(match.group(1))
            return False
        return not any(text in message for text in self._DROP)

    def __enter__(self):
        logging.getLogger("absl").addFilter(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("absl").removeFilter(self)


def _export_adapter(out, overwrite, adapters, meta, step, directory, base_hf_dir, dtype) -> dict[str, Any]:
    if not adapters or not meta.get("lora"):
        raise ValueError(f"--adapter_only: step {step} of {directory} has no LoRA adapters (not a LoRA run)")
    cfg = lora.LoRAConfig.from_dict(meta["lora"])
    count = {}

    def write(tmp: pathlib.Path) -> None:
        count["tensors"] = peft.write_adapter(tmp, adapters, cfg, str(base_hf_dir) if base_hf_dir else None,
                                              jnp.dtype(dtype) if dtype else None)

    hf_write.publish_dir(out, overwrite, write)
    return {"out": str(out), "step": step, "full_model": False, "adapter_only": True, "tensors": count["tensors"]}


def _check_params(handles: dict, cfg: ThinkerConfig, where: str) -> None:
    """The stored params must be exactly the config's Thinker parameters: one error lists all problems."""
    _, abstract_state = nnx.split(abstract_thinker(cfg))
    expected = hf_load.param_shapes(abstract_state)
    missing = sorted(".".join(p) for p in expected.keys() - handles.keys())
    unexpected = sorted(".".join(p) for p in handles.keys() - expected.keys())
    misshaped = sorted(f"{'.'.join(p)}: stored {tuple(handles[p].shape)}, config expects {expected[p]}"
                       for p in expected.keys() & handles.keys() if tuple(handles[p].shape) != expected[p])
    hf_load.raise_mismatch(f"{where}: params do not fit its hf_config:", missing, misshaped, unexpected)


def _thinker_tensors(handles: dict, cfg: ThinkerConfig, prefix: str, dtype: str | None,
                     merge=None) -> list[tuple[str, LazyTensor]]:
    """(HF name, lazily read tensor) for every Thinker tensor, through the mapping table.

    merge: `peft.merge_fn` of a LoRA checkpoint's adapters, added to their kernels layer by layer.
    """
    tensors = []
    for row in mapping.thinker_rows(cfg.text.tie_word_embeddings):
        handle = handles[row.flax_path()]
        out_dtype = jnp.dtype(dtype) if dtype else np.dtype(handle.dtype.numpy_dtype)
        per_layer = tuple(handle.shape[1:] if row.stacked else handle.shape)
        shape = mapping.hf_shape(row, per_layer, cfg)
        # Large unstacked matrices (embedding, lm_head) are read and written in blocks of HF rows.
        blockable = not row.stacked and row.layout in (mapping.SAME, mapping.LINEAR)
        block_rows = max(1, BLOCK_BYTES * shape[0] // max(int(np.prod(shape)) * out_dtype.itemsize, 1))
        for layer, name in mapping.hf_names(row, mapping.num_layers_for(row, cfg)):
            def read(rows, handle=handle, layer=layer, row=row, shape=shape, out_dtype=out_dtype):
                if layer is not None:
                    flax = handle[layer].read().result()
                    flax = merge(row.flax_path(), layer, flax) if merge else flax
                    return np.ascontiguousarray(row.layout.to_hf(np.asarray(flax, dtype=out_dtype), shape))
                index = [slice(None)] * len(handle.shape)
                index[row.layout.hf_rows_axis] = rows
                flax = np.asarray(handle[tuple(index)].read().result(), dtype=out_dtype)
                rows_shape = (flax.shape[row.layout.hf_rows_axis], *shape[1:])
                return np.ascontiguousarray(row.layout.to_hf(flax, rows_shape))
            tensors.append((prefix + name, LazyTensor(shape, out_dtype, read, block_rows if blockable else None)))
    return tensors


def thinker_only_config(hf_config: dict, dtype) -> dict:
    """A `qwen2_5_omni_thinker` config.json (from a full or thinker-only config) for `dtype` weights."""
    cfg = dict(hf_config["thinker_config"] if hf_config.get("model_type") == "qwen2_5_omni" else hf_config)
    cfg["model_type"] = "qwen2_5_omni_thinker"
    cfg["architectures"] = ["Qwen2_5OmniThinkerForConditionalGeneration"]
    cfg["torch_dtype" if "torch_dtype" in cfg else "dtype"] = jnp.dtype(dtype).name
    return cfg


def default_generation_config(config: dict) -> dict:
    """Token ids transformers would take from the model config, when no generation_config exists."""
    thinker = config.get("thinker_config", config)
    text = thinker.get("text_config", {})
    out = {"_from_model_config": True}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = text.get(key, thinker.get(key))
        if value is not None:
            out[key] = value
    return out


class _Base:
    """The base HF directory given with --base_hf_dir."""

    def __init__(self, directory: pathlib.Path):
        if not directory.is_dir():
            raise FileNotFoundError(f"base HF directory {directory} does not exist")
        self.directory = directory
        config = directory / "config.json"  # a tokenizer-only directory has none
        self.config = hf_write.read_json(config, {})
        self.is_full = self.config.get("model_type") == "qwen2_5_omni"
        # Weights are needed only to copy the talker / token2wav tensors of a full model.
        self.reader = SafetensorsReader(directory) if self.is_full else None

    def check_matches(self, cfg: ThinkerConfig, ours: list[tuple[str, LazyTensor]]) -> None:
        """The base's thinker must be the same architecture as the checkpoint's."""
        base_cfg = from_hf_dict(self.config)
        if base_cfg != cfg:
            diffs = [f"  {f}: base {getattr(base_cfg, f)!r}, checkpoint {getattr(cfg, f)!r}"
                     for f in ("text", "vision", "audio") if getattr(base_cfg, f) != getattr(cfg, f)]
            raise ValueError(f"base {self.directory} has a different thinker config than the checkpoint:\n"
                             + "\n".join(diffs or ["  (token ids or positions differ)"]))
        base = {k: self.reader.shape(k) for k in self.reader.keys() if k.startswith("thinker.")}
        mine = {name: tensor.shape for name, tensor in ours}
        problems = [f"  missing from base: {k}" for k in sorted(mine.keys() - base.keys())]
        problems += [f"  only in base: {k}" for k in sorted(base.keys() - mine.keys())]
        problems += [f"  {k}: base {base[k]}, ours {mine[k]}" for k in sorted(mine.keys() & base.keys())
                     if tuple(base[k]) != tuple(mine[k])]
        if problems:
            raise WeightMismatchError(f"base {self.directory} thinker tensors do not match ours:\n" + "\n".join(problems))

    def other_tensors(self) -> list[tuple[str, LazyTensor]]:
        """The base's non-thinker tensors (talker, token2wav), copied unchanged."""
        out = []
        for k in self.reader.keys():
            if not k.startswith("thinker."):
                shape = self.reader.shape(k)
                row_bytes = max(self.reader.nbytes(k) // max(shape[0], 1), 1) if shape else 1
                out.append((k, LazyTensor(shape, self.reader.dtype(k), lambda rows, k=k: self.reader.read(k, rows),
                                          max(1, BLOCK_BYTES // row_bytes))))
        return out

    def generation_config(self) -> dict | None:
        return hf_write.read_json(self.directory / "generation_config.json")

    def files_to_copy(self) -> list[pathlib.Path]:
        names = PROCESSOR_FILES + ((SPEAKER_FILE,) if self.is_full else ())
        return [self.directory / n for n in names if (self.directory / n).is_file()]
