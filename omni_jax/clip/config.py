"""CLIP configuration, read from a Hugging Face `config.json` of `CLIPModel` (model_type "clip").

Field names and defaults follow transformers' CLIPTextConfig / CLIPVisionConfig / CLIPConfig, so
the two can be read side by side. The OpenAI ViT-B/32 and ViT-L/14 layouts ship as
`omni_jax/assets/hf_configs/clip_vit_b32.json` and `clip_vit_l14.json` (`preset_config`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

PRESETS_DIR = pathlib.Path(__file__).resolve().parent.parent / "assets" / "hf_configs"
PRESETS = {"vit_b32": "clip_vit_b32.json", "vit_l14": "clip_vit_l14.json"}


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 49406
    # 2 (the OpenAI checkpoints' value) means "pool at the largest token id", as HF does.
    eos_token_id: int = 49407


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        return self.num_channels * self.patch_size**2


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    text: CLIPTextConfig = CLIPTextConfig()
    vision: CLIPVisionConfig = CLIPVisionConfig()
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    dtype: str = "float32"  # compute dtype (not stored in the checkpoint)
    param_dtype: str = "float32"
    hf_config: dict[str, Any] | None = dataclasses.field(default=None, compare=False, repr=False)


def _pick(d: dict, cls) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in d.items():
        if key in names and value is not None:
            if isinstance(value, (list, tuple)):  # image_size / patch_size may be [h, w]
                if len(set(value)) != 1:
                    raise ValueError(f"CLIP config {key}={value}: only square images and patches are supported")
                value = value[0]
            out[key] = value
    return out


def from_hf_dict(config: dict[str, Any], **options) -> CLIPConfig:
    """CLIPConfig from a parsed HF config.json of a CLIPModel. `options`: dtype, param_dtype."""
    if config.get("model_type") != "clip":
        raise ValueError(f"unsupported model_type {config.get('model_type')!r}: expected a CLIPModel config "
                         "(model_type 'clip', e.g. openai/clip-vit-base-patch32)")
    # Old configs carry the real values in *_config_dict (transformers lets those win).
    text = {**(config.get("text_config") or {}), **(config.get("text_config_dict") or {})}
    vision = {**(config.get("vision_config") or {}), **(config.get("vision_config_dict") or {})}
    top = {k: config[k] for k in ("projection_dim", "logit_scale_init_value") if config.get(k) is not None}
    return CLIPConfig(text=CLIPTextConfig(**_pick(text, CLIPTextConfig)),
                      vision=CLIPVisionConfig(**_pick(vision, CLIPVisionConfig)),
                      hf_config=config, **top, **options)


def load_config(path: str | pathlib.Path, **options) -> CLIPConfig:
    """CLIPConfig from a directory holding config.json, or the file itself."""
    p = pathlib.Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.exists():
        raise FileNotFoundError(f"no config.json at {p}: give a local HF CLIPModel directory")
    return from_hf_dict(json.loads(p.read_text()), **options)


def preset_config(name: str, **options) -> CLIPConfig:
    """The shipped OpenAI layouts: "vit_b32" or "vit_l14"."""
    if name not in PRESETS:
        raise ValueError(f"unknown CLIP preset {name!r}: one of {sorted(PRESETS)}")
    return load_config(PRESETS_DIR / PRESETS[name], **options)
