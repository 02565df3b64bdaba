"""Thinker-specific conventions on top of the store: the meta dict and finding a store on disk."""

from __future__ import annotations

import re
from typing import Any

from etils import epath

from omni_jax.checkpoint.store import CheckpointStore

FORMAT = "omni_jax.thinker.v1"
_STEP_MARKERS = ("_CHECKPOINT_METADATA", "params")


def thinker_meta(cfg, *, source: dict[str, Any] | None = None, generation_config: dict[str, Any] | None = None,
                 **fields) -> dict[str, Any]:
    """The `meta` item every Thinker checkpoint step carries.

    cfg: the ThinkerConfig the parameters belong to (its `hf_config` is written back on export).
    source: provenance, e.g. {"kind": "hf", "hf_dir": ..., "files": [...]} or {"kind": "train", ...}.
    generation_config: the HF generation_config.json dict, written back on export.
    fields: anything else JSON-serialisable to keep with the step.
    """
    if cfg.hf_config is None:
        raise ValueError("this ThinkerConfig was not read from an HF config.json (cfg.hf_config is None); load it with "
                         "omni_jax.model.config.load_config / from_hf_dict so checkpoints can be exported")
    return {"format": FORMAT, "hf_config": cfg.hf_config, "param_dtype": cfg.param_dtype,
            "generation_config": generation_config, "source": source or {}, **fields}


def _is_step_dir(path: epath.Path) -> bool:
    return bool(re.fullmatch(r"\d+", path.name)) and any((path / m).exists() for m in _STEP_MARKERS)


def is_checkpoint(path) -> bool:
    """True when `path` is a CheckpointStore directory (or one step of it), not an HF directory.

    Remote paths (gs://...) are always taken as stores: HF checkpoints are read from local disk.
    """
    text = str(path)
    if "://" in text:
        return True
    p = epath.Path(path)
    if not p.is_dir() or (p / "config.json").exists():
        return False
    if _is_step_dir(p):
        return True
    return any(child.is_dir() and (re.fullmatch(r"\d+", child.name) or ".orbax-checkpoint-tmp" in child.name)
               for child in p.iterdir())


def locate(path, step: int | None = None) -> tuple[epath.Path, int | None]:
    """(store directory, step) for a store directory or a step directory inside one."""
    p = epath.Path(path)
    if _is_step_dir(p):
        if step is not None and int(step) != int(p.name):
            raise ValueError(f"{p} is step {p.name}, but step={step} was asked for")
        return p.parent, int(p.name)
    return p, step


def open_thinker_step(path, step: int | None = None):
    """(read-only store, its directory, the resolved step, that step's meta) for a Thinker checkpoint.

    `path`: a store directory or one step of it; step None: the latest committed step. Refuses a
    step whose meta has no HF config (not written by omni_jax).
    """
    directory, step = locate(path, step)
    store = CheckpointStore(directory, read_only=True)
    step = store.resolve_step(step)
    meta = store.meta(step)
    if "hf_config" not in meta:
        raise ValueError(f"step {step} of {directory} has no 'hf_config' in its meta; it was not written by omni_jax")
    return store, directory, step, meta
