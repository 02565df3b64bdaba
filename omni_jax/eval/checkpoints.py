"""Open a checkpoint for answering questions: the model, its tokenizer and its prompt settings.

    loaded = open_checkpoint("workdir/default/checkpoints", step=0)
    loaded.model, loaded.tokenizer, loaded.data_cfg, loaded.name

A checkpoint is an omni_jax store (a training run or a conversion, any step) or an HF directory
(see `omni_jax.checkpoint.loading.load_thinker`). A training run's checkpoint carries its config: the
tokenizer it trained with and its data settings (system prompt, frame and pixel caps), which are
used here so the model is asked questions the way it learned them. Everything else (an HF
directory, a conversion) gets the recipe's data settings, i.e. HumanOmniV2's prompt. In both
cases the question layout is HumanOmniV2's evaluation one (`prompt_style="eval"`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re

import jax
import ml_collections

from omni_jax import checkpoint, parallel
from omni_jax.data.config import data_defaults
from omni_jax.checkpoint.loading import load_thinker
from omni_jax.tokenizer import load_tokenizer


@dataclasses.dataclass
class Loaded:
    model: object  # omni_jax Thinker
    tokenizer: object
    data_cfg: ml_collections.ConfigDict
    name: str  # short name for files and tables: "<run>-step<N>" or the HF directory's name
    path: str
    step: int | None


def parse_spec(spec: str) -> tuple[str | None, str, int | None]:
    """`[NAME=]PATH[@STEP]` -> (name or None, path, step or None)."""
    name = None
    m = re.match(r"^([A-Za-z0-9_.\-]+)=(.+)$", spec)
    if m and "://" not in m.group(1):
        name, spec = m.group(1), m.group(2)
    step = None
    m = re.match(r"^(.*)@(\d+)$", spec)
    if m:
        spec, step = m.group(1), int(m.group(2))
    return name, spec, step


def _training_config(meta: dict) -> dict | None:
    raw = meta.get("config")
    if not raw:
        return None
    try:
        return json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError):
        return None


def data_config_for(train_config: dict | None) -> ml_collections.ConfigDict:
    """The data settings to ask questions with: the run's own (if any) with HumanOmniV2's eval layout."""
    cfg = data_defaults()
    if train_config and isinstance(train_config.get("data"), dict):
        saved = train_config["data"]
        for key in cfg.keys():
            if key in saved and not isinstance(cfg[key], ml_collections.ConfigDict):
                value = saved[key]
                cfg[key] = tuple(value) if isinstance(cfg[key], tuple) else value
    cfg.prompt_style = "eval"
    return cfg


def default_name(path: str, step: int | None) -> str:
    p = pathlib.PurePosixPath(str(path).rstrip("/"))
    if re.fullmatch(r"\d+", p.name):  # a step directory
        step, p = int(p.name) if step is None else step, p.parent
    if p.name == "checkpoints" and p.parent.name:
        p = p.parent
    base = re.sub(r"[^A-Za-z0-9_.\-]+", "_", p.name) or "model"
    return base if step is None else f"{base}-step{step}"


def check_exists(spec: str) -> None:
    """FileNotFoundError / ValueError now when `spec` names no loadable checkpoint (cheap: meta only)."""
    _, path, step = parse_spec(spec)
    if checkpoint.is_checkpoint(path):
        checkpoint.open_thinker_step(path, step)
    elif not os.path.exists(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path} is neither an omni_jax checkpoint nor an HF directory (no config.json)")


def open_checkpoint(spec: str, *, step: int | None = None, tokenizer: str | None = None, dtype: str = "float32",
                    layout=None, progress: bool = True, name: str | None = None) -> Loaded:
    """Load `spec` (`[NAME=]PATH[@STEP]`, see `parse_spec`) with its tokenizer and data settings.

    tokenizer: a tokenizer directory or "tiny"; default: the run's own, else the HF directory's,
    else the converted directory's source. layout: the `parallel.Layout` (mesh + rules) to place
    the parameters on; a bare Mesh is `Layout(mesh)` (the default rules); None: one device.
    """
    spec_name, path, spec_step = parse_spec(spec)
    step = spec_step if step is None else step
    name = name or spec_name
    train_config = None
    source_dir = None
    if checkpoint.is_checkpoint(path):
        _, _, step, meta = checkpoint.open_thinker_step(path, step)
        train_config = _training_config(meta)
        source_dir = (meta.get("source") or {}).get("hf_dir")
    elif step is not None:
        raise ValueError(f"{path} is an HF directory: it has no steps (drop @{step})")
    if tokenizer is None:
        if train_config and train_config.get("tokenizer"):
            tokenizer = train_config["tokenizer"]
        elif not checkpoint.is_checkpoint(path) and os.path.exists(os.path.join(path, "tokenizer.json")):
            tokenizer = path
        elif source_dir and os.path.exists(os.path.join(source_dir, "tokenizer.json")):
            tokenizer = source_dir
        else:
            raise ValueError(f"cannot tell which tokenizer {path} uses: pass --tokenizer (a directory with "
                             "tokenizer.json, or 'tiny')")
    options = {}
    if train_config and isinstance(train_config.get("model"), dict):
        layer_loop = train_config["model"].get("layer_loop")
        if layer_loop:
            options["layer_loop"] = layer_loop
    model = load_thinker(path, dtype, layout=layout, progress=progress, step=step, **options)
    return Loaded(model=model, tokenizer=load_tokenizer(tokenizer), data_cfg=data_config_for(train_config),
                  name=name or default_name(path, step), path=str(path), step=step)


def layout_from_arg(text: str = "auto") -> parallel.Layout | None:
    """--mesh 'auto' | 'none' | 'data=1,fsdp=-1,tp=1' -> a Layout of that mesh and the default
    rules, or None for one device.

    auto: every device, the batch split over them (data × fsdp) and the weights FSDP-sharded, as in
    training; None on a single device (the fastest CPU path).
    """
    if text == "none" or (text == "auto" and jax.device_count() == 1):
        return None
    if text == "auto":
        return parallel.Layout(parallel.make_mesh({"data": 1, "fsdp": -1, "tp": 1}))
    try:
        shape = {k.strip(): int(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise ValueError(f"mesh {text!r}: expected auto, none or e.g. data=1,fsdp=-1,tp=1") from None
    return parallel.Layout(parallel.make_mesh(shape))
