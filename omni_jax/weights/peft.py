"""LoRA adapters ↔ PEFT adapter directories, and the merged export of a LoRA checkpoint.

A PEFT LoRA adapter for `Qwen2_5OmniThinkerForConditionalGeneration` is a directory with

    adapter_config.json         {"peft_type": "LORA", "r", "lora_alpha", "lora_dropout", "target_modules", ...}
    adapter_model.safetensors   base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight  [r, in]
                                base_model.model.model.layers.{i}.self_attn.q_proj.lora_B.weight  [out, r]

(torch Linear layout, one tensor per layer). Ours are stacked on the layer axis and transposed:
a [L, in, r] = stack(lora_A)ᵀ, b [L, r, out] = stack(lora_B)ᵀ; PEFT's scale α / r is ours.
`target_modules` is written as a regex over the decoder layers only, so PEFT does not also put
adapters on the vision and audio towers' like-named projections.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Callable

import numpy as np

from omni_jax.weights.safetensors_io import SafetensorsReader, write_safetensors
from omni_jax.model import lora

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_LAYER = "model.layers.{i}.{sub}.{proj}"


def peft_name(proj: str, layer: int, which: str) -> str:
    """PEFT's tensor name of adapter `which` ("a" or "b") of projection `proj` in decoder layer `layer`."""
    sub = lora.PROJECTIONS[proj][0]
    return f"{_PREFIX}{_LAYER.format(i=layer, sub=sub, proj=proj)}.lora_{which.upper()}.weight"


def target_regex(targets) -> str:
    subs = sorted({lora.PROJECTIONS[t][0] for t in targets})
    return rf"model\.layers\.\d+\.({'|'.join(subs)})\.({'|'.join(targets)})"


def peft_config(cfg: lora.LoRAConfig, base_model_name_or_path: str | None = None) -> dict:
    return {"peft_type": "LORA", "task_type": None, "base_model_name_or_path": base_model_name_or_path,
            "r": cfg.rank, "lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout,
            "target_modules": target_regex(cfg.targets), "bias": "none", "fan_in_fan_out": False,
            "inference_mode": True, "init_lora_weights": True, "use_rslora": False, "use_dora": False,
            "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {}}


def config_from_peft(d: dict, where: str) -> lora.LoRAConfig:
    """LoRAConfig of a PEFT adapter_config.json dict; refuses what the adapters here cannot express."""
    problems = []
    if d.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type {d.get('peft_type')!r} (only LORA)")
    for key in ("use_dora", "use_rslora", "fan_in_fan_out"):
        if d.get(key):
            problems.append(f"{key}=true")
    for key in ("rank_pattern", "alpha_pattern"):
        if d.get(key):
            problems.append(f"a per-module {key}")
    if d.get("bias", "none") != "none":
        problems.append(f"bias={d['bias']!r} (only 'none')")
    if d.get("modules_to_save"):
        problems.append(f"modules_to_save={d['modules_to_save']}")
    if problems:
        raise ValueError(f"{where}: unsupported PEFT adapter: " + "; ".join(problems))
    return lora.LoRAConfig(rank=int(d["r"]), alpha=float(d["lora_alpha"]), dropout=float(d.get("lora_dropout", 0.0)),
                           targets=tuple(lora.PROJECTIONS))  # the projections actually present are read from the file


def split_adapters(handles: dict) -> tuple[dict, dict]:
    """(base handles, {projection: {"a": handle, "b": handle}}) of a checkpoint's flat {path: handle}."""
    base, adapters = {}, {}
    for path, handle in handles.items():
        if len(path) >= 3 and path[-2] == "lora":
            adapters.setdefault(path[-3], {})[path[-1]] = handle
        else:
            base[path] = handle
    return base, adapters


def merge_fn(adapters: dict, cfg: lora.LoRAConfig) -> Callable:
    """delta(flax path, layer, kernel) -> kernel + (α/r)·A B (float32) for adapted kernels, else the kernel.

    adapters: {projection: {"a", "b"}} with `.read()`-able handles (checkpoint) or arrays; one
    layer is read at a time.
    """
    by_path = {("model", "layers", *lora.PROJECTIONS[p], "kernel"): ab for p, ab in adapters.items()}

    def read(x, layer):
        return np.asarray(x[layer].read().result() if hasattr(x, "read") else x[layer], np.float32)

    def delta(path, layer, kernel):
        ab = by_path.get(tuple(path))
        if ab is None or layer is None:
            return kernel
        return np.asarray(kernel, np.float32) + cfg.scale * (read(ab["a"], layer) @ read(ab["b"], layer))

    return delta


def write_adapter(directory: pathlib.Path, adapters: dict, cfg: lora.LoRAConfig,
                  base_model_name_or_path: str | None = None, dtype=None) -> int:
    """Write adapter_config.json + adapter_model.safetensors into `directory` (exists). Returns tensors written.

    adapters: {projection: {"a": [L, in, r], "b": [L, r, out]}} as arrays or checkpoint handles.
    """
    cfg = lora.LoRAConfig(rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout, targets=tuple(adapters))
    tensors = []
    for proj in sorted(adapters, key=list(lora.PROJECTIONS).index):
        for which in ("a", "b"):
            x = adapters[proj][which]
            full = np.asarray(x.read().result() if hasattr(x, "read") else x)
            full = full.astype(dtype or full.dtype)
            for layer in range(full.shape[0]):
                tensors.append((peft_name(proj, layer, which), np.ascontiguousarray(full[layer].T)))
    write_safetensors(directory / ADAPTER_WEIGHTS, tensors)
    (directory / ADAPTER_CONFIG).write_text(json.dumps(peft_config(cfg, base_model_name_or_path), indent=2) + "\n")
    return len(tensors)


def read_adapter(directory, num_layers: int) -> tuple[lora.LoRAConfig, dict]:
    """(LoRAConfig, {projection: {"a": float[L, in, r], "b": float[L, r, out]}}) of a PEFT adapter directory."""
    d = pathlib.Path(directory)
    config_path = d / ADAPTER_CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{d} has no {ADAPTER_CONFIG}: not a PEFT adapter directory")
    cfg = config_from_peft(json.loads(config_path.read_text()), str(config_path))
    reader = SafetensorsReader(d)
    pattern = re.compile(r"(?:base_model\.model\.)?(?:thinker\.)?model\.layers\.(\d+)\.(self_attn|mlp)\."
                         r"(\w+)\.lora_([AB])(?:\.\w+)?\.weight")
    found: dict = {}
    unexpected = []
    for key in reader.keys():
        m = pattern.fullmatch(key)
        if not m or m.group(3) not in lora.PROJECTIONS or lora.PROJECTIONS[m.group(3)][0] != m.group(2):
            unexpected.append(key)
            continue
        found.setdefault(m.group(3), {}).setdefault(m.group(4).lower(), {})[int(m.group(1))] = key
    if unexpected:
        raise ValueError(f"{d / ADAPTER_WEIGHTS}: tensors that are not LoRA A/B of the text decoder's projections: "
                         f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if not found:
        raise ValueError(f"{d / ADAPTER_WEIGHTS} holds no LoRA tensors")
    adapters = {}
    for proj, ab in found.items():
        out = {}
        for which in ("a", "b"):
            layers = ab.get(which, {})
            missing = sorted(set(range(num_layers)) - set(layers))
            if missing:
                raise ValueError(f"{d / ADAPTER_WEIGHTS}: {proj} lora_{which.upper()} missing for layers {missing}")
            out[which] = np.stack([reader.read(layers[i]).T for i in range(num_layers)])
        if out["a"].shape[-1] != cfg.rank or out["b"].shape[-2] != cfg.rank:
            raise ValueError(f"{d / ADAPTER_WEIGHTS}: {proj} has rank {out['a'].shape[-1]}, adapter_config says r={cfg.rank}")
        adapters[proj] = out
    reader.close()
    cfg = lora.LoRAConfig(rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout,
                          targets=tuple(p for p in lora.PROJECTIONS if p in adapters))
    return cfg, adapters


def attach(model, directory, seed: int = 0):
    """Put the PEFT adapter of `directory` onto `model` (a Thinker without adapters), in place."""
    cfg, adapters = read_adapter(directory, model.cfg.text.num_hidden_layers)
    lora.add_adapters(model, cfg, seed=seed)
    lora.set_adapter_params(model, adapters)
    return model
