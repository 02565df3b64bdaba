"""Load a CLIPModel from a HF directory (local or gs://) and export it back, through `weights.clip_mapping`.

    model = load_clip("/ckpt/clip-vit-base-patch32")          # config.json + *.safetensors
    tensors = to_hf(model)                                      # {HF name: np.ndarray}, the inverse

A gs:// (or any other etils-epath URL) directory is first copied to a local cache
(`$OMNI_JAX_CACHE`, default ~/.cache/omni_jax) once; later loads reuse the copy when sizes match.
PyTorch pickle files are never read (safetensors only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omni_jax.clip.config import CLIPConfig, load_config
from omni_jax.clip.model import CLIPModel, abstract_clip
from omni_jax.weights import clip_mapping as mapping
from omni_jax.weights.hf_load import raise_mismatch
from omni_jax.weights.safetensors_io import SafetensorsReader, write_safetensors

# Files of a HF CLIP directory that loading and tokenising read.
WANTED = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
          "preprocessor_config.json", "model.safetensors.index.json")


def cache_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("OMNI_JAX_CACHE") or pathlib.Path.home() / ".cache" / "omni_jax")


def local_dir(path) -> pathlib.Path:
    """A local directory holding `path`'s files: `path` itself, or a cached copy of a remote URL."""
    text = os.fspath(path)
    if "://" not in text or text.startswith("file://"):
        return pathlib.Path(text.removeprefix("file://"))
    from etils import epath  # remote file systems (gs://) only

    src = epath.Path(text)
    if not src.is_dir():
        raise FileNotFoundError(f"{text} is not a directory (or cannot be listed with the credentials at hand)")
    dest = cache_root() / "remote" / hashlib.sha256(text.encode()).hexdigest()[:16]
    dest.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name in WANTED or f.name.endswith(".safetensors"):
            out = dest / f.name
            if not out.exists() or out.stat().st_size != f.stat().length:
                tmp = out.with_suffix(out.suffix + ".partial")
                tmp.write_bytes(f.read_bytes())
                tmp.replace(out)
    return dest


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree[int(key) if isinstance(tree, list) else key]
    tree[path[-1]] = value


def load_params(reader: SafetensorsReader, cfg: CLIPConfig, abstract_state) -> dict:
    """The pure params dict of `abstract_state` filled from `reader` (checked against the table first)."""
    missing, misshaped, seen, values = [], [], set(), {}
    shapes = {path: leaf.shape for path, leaf in _flat(abstract_state.to_pure_dict())}
    for row in mapping.clip_rows():
        shape = shapes[row.flax_path()]
        per_layer = tuple(shape[1:] if row.stacked else shape)
        names = mapping.hf_names(row, cfg)
        seen.update(names)
        bad = False
        for name in names:
            if name not in reader:
                missing.append(name)
                bad = True
            elif row.layout.flax_shape(reader.shape(name)) != per_layer:
                misshaped.append(f"{name}: checkpoint {reader.shape(name)}, config expects "
                                 f"{mapping.hf_shape(row, per_layer, cfg)}")
                bad = True
        if not bad:
            arrays = [np.asarray(row.layout.to_flax(reader.read(n)), np.float32) for n in names]
            values[row.flax_path()] = np.stack(arrays) if row.stacked else arrays[0]
    unexpected = [k for k in reader.keys() if k not in seen and not k.endswith(mapping.IGNORED_SUFFIXES)]
    raise_mismatch(f"CLIP checkpoint {reader.directory} does not fit its config:", missing, misshaped, unexpected)
    pure = abstract_state.to_pure_dict()
    dtype = jnp.dtype(cfg.param_dtype)
    for path, value in values.items():
        _set(pure, path, jnp.asarray(value, dtype))
    return pure


def _flat(tree, prefix=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flat(v, prefix + (str(k),))
    else:
        yield prefix, tree


def load_clip(path, dtype: str = "float32", param_dtype: str | None = None) -> CLIPModel:
    """A CLIPModel with the weights of the HF directory `path` (local, or gs:// copied to a cache)."""
    directory = local_dir(path)
    cfg = load_config(directory, dtype=jnp.dtype(dtype).name, param_dtype=jnp.dtype(param_dtype or dtype).name)
    reader = SafetensorsReader(directory)
    try:
        graphdef, state = nnx.split(abstract_clip(cfg))
        pure = load_params(reader, cfg, state)
    finally:
        reader.close()
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def to_hf(model: CLIPModel) -> dict[str, np.ndarray]:
    """{HF name: float array in HF's layout} for every parameter (the table read backwards)."""
    cfg = model.cfg
    pure = nnx.state(model, nnx.Param).to_pure_dict()
    flat = dict(_flat(pure))
    out = {}
    for row in mapping.clip_rows():
        value = np.asarray(jax.device_get(flat[row.flax_path()]))
        layers = list(value) if row.stacked else [value]
        for name, layer in zip(mapping.hf_names(row, cfg), layers, strict=True):
            out[name] = np.array(row.layout.to_hf(layer, mapping.hf_shape(row, layer.shape, cfg)), order="C")
    return out


def save_hf(model: CLIPModel, out_dir) -> pathlib.Path:
    """Write `model` as a HF CLIP directory (config.json + model.safetensors) that transformers loads."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = model.cfg.hf_config or _hf_config_dict(model.cfg)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    write_safetensors(out / "model.safetensors", sorted(to_hf(model).items()))
    return out


def _hf_config_dict(cfg: CLIPConfig) -> dict:
    return {"model_type": "clip", "architectures": ["CLIPModel"], "projection_dim": cfg.projection_dim,
            "logit_scale_init_value": cfg.logit_scale_init_value,
            "text_config": dataclasses.asdict(cfg.text), "vision_config": dataclasses.asdict(cfg.vision)}
