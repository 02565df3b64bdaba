"""Model configuration, read from a Hugging Face `config.json` of Qwen2.5-Omni.

Accepts the full model (`model_type == "qwen2_5_omni"`, thinker under `thinker_config`) or a
thinker-only save (`"qwen2_5_omni_thinker"`). Field names follow HF so the two can be read side by
side. Numerics options that HF does not store (compute dtype, remat, attention chunking) live in
`ThinkerConfig` too, with defaults that reproduce HF exactly.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

SUPPORTED_MODEL_TYPES = ("qwen2_5_omni", "qwen2_5_omni_thinker")


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The Qwen2 text decoder's shape, as HF's `text_config` of the Thinker names it (defaults:
    Qwen2.5-Omni-7B). head_dim None: hidden_size / num_attention_heads (`kv_head_dim`);
    mrope_section: the rotary frequencies given to the time, height and width positions (TMRoPE).
    """
    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    mrope_section: tuple[int, int, int] = (16, 24, 24)
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768

    @property
    def kv_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """The vision encoder's shape, as HF's `vision_config` names it (defaults: Qwen2.5-Omni-7B).
    Windowed attention in every block except `fullatt_block_indexes`; `spatial_merge_size`² patches
    merge into one token of `out_hidden_size`.
    """
    depth: int = 32
    hidden_size: int = 1280
    intermediate_size: int = 3420
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: int = 112
    out_hidden_size: int = 3584
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    hidden_act: str = "silu"
    rope_theta: float = 10000.0

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def merge_window(self) -> int:
        """Window side in merged tokens (112 px / 2 / 14 = 4 for the real model)."""
        return self.window_size // self.spatial_merge_size // self.patch_size


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """The audio (Whisper-style) encoder's shape, as HF's `audio_config` names it (defaults:
    Qwen2.5-Omni-7B); `n_window`: mel frames per attention chunk is 2·n_window.
    """
    num_mel_bins: int = 128
    encoder_layers: int = 32
    encoder_attention_heads: int = 20
    encoder_ffn_dim: int = 5120
    d_model: int = 1280
    n_window: int = 100
    output_dim: int = 3584
    max_source_positions: int = 1500
    activation_function: str = "gelu"


@dataclasses.dataclass(frozen=True)
class ThinkerConfig:
    """Everything that shapes a Thinker: the three towers' configs and the special token ids (from
    the checkpoint's config.json, `from_hf_dict` / `load_config`), plus numerics and memory options
    that are not in the checkpoint (dtypes, remat, attention chunks, layer loop).
    """
    text: TextConfig = TextConfig()
    vision: VisionConfig = VisionConfig()
    audio: AudioConfig = AudioConfig()
    audio_token_id: int = 151646
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    audio_start_token_id: int = 151647
    audio_end_token_id: int = 151648
    position_id_per_seconds: int = 25
    seconds_per_chunk: int = 2
    # Numerics, not part of the HF checkpoint.
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"  # storage dtype of the parameters
    remat: str = "none"  # none | full | dots (what jax.checkpoint keeps per decoder layer)
    attention_query_chunk: int = 2048  # queries per block in long-sequence attention
    attention_key_chunk: int = 0  # > 0: blockwise (flash) attention over keys in blocks of this size
    # scan: one compiled layer body over the stacked weights (TPU/GPU). unrolled: every layer in
    # the program on its own weight slices; faster on XLA:CPU, which copies each layer's weights
    # and saved activations out of the stacked arrays inside a scan, and compiles longer.
    layer_loop: str = "scan"
    # Original HF dict, kept for export (config.json is written back from it).
    hf_config: dict[str, Any] | None = dataclasses.field(default=None, compare=False, repr=False)

    def replace(self, **changes) -> "ThinkerConfig":
        return dataclasses.replace(self, **changes)


def _pick(d: dict, cls, renames: dict[str, str] | None = None) -> dict:
    """The fields of dataclass `cls` present in HF dict `d` (with HF → our renames)."""
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in d.items():
        key = (renames or {}).get(key, key)
        if key in names:
            out[key] = tuple(value) if isinstance(value, list) else value
    return out


def _text_config(d: dict) -> TextConfig:
    kw = _pick(d, TextConfig)
    # transformers 4.x stores rope_theta and rope_scaling.mrope_section; 5.x stores rope_parameters.
    rope = dict(d.get("rope_scaling") or {})
    rope.update(d.get("rope_parameters") or {})
    if "rope_theta" in rope:
        kw["rope_theta"] = rope["rope_theta"]
    if "mrope_section" in rope:
        kw["mrope_section"] = tuple(rope["mrope_section"])
    if kw.get("num_key_value_heads") is None:
        kw["num_key_value_heads"] = d.get("num_attention_heads", TextConfig.num_attention_heads)
    cfg = TextConfig(**kw)
    if sum(cfg.mrope_section) * 2 != cfg.kv_head_dim:
        raise ValueError(
            f"mrope_section {cfg.mrope_section} must sum to head_dim/2 = {cfg.kv_head_dim // 2}"
        )
    return cfg


def _vision_config(d: dict) -> VisionConfig:
    kw = _pick(d, VisionConfig)
    rope = d.get("rope_parameters") or {}
    if "rope_theta" in rope:
        kw["rope_theta"] = rope["rope_theta"]
    return VisionConfig(**kw)


def from_hf_dict(config: dict[str, Any], **options) -> ThinkerConfig:
    """ThinkerConfig from a parsed HF config.json (full Omni or thinker-only).

    `options` set the numerics fields (dtype, param_dtype, remat, attention_query_chunk, attention_key_chunk,
    layer_loop).
    """
    model_type = config.get("model_type")
    if model_type == "qwen2_5_omni":
        thinker = config.get("thinker_config")
        if thinker is None:
            raise ValueError("a qwen2_5_omni config.json without 'thinker_config'")
    elif model_type == "qwen2_5_omni_thinker":
        thinker = config
    else:
        raise ValueError(
            f"unsupported model_type {model_type!r}: omni_jax loads Qwen2.5-Omni checkpoints "
            f"({' or '.join(SUPPORTED_MODEL_TYPES)})"
        )
    text = dict(thinker.get("text_config") or {})
    # HF ties lm_head by the thinker-level flag (default False), never by text_config's own.
    text["tie_word_embeddings"] = bool(thinker.get("tie_word_embeddings", False))
    ids = {}
    for ours, theirs in (
        ("audio_token_id", "audio_token_index"),
        ("image_token_id", "image_token_index"),
        ("video_token_id", "video_token_index"),
    ):
        if theirs in thinker:
            ids[ours] = thinker[theirs]
        elif ours in thinker:
            ids[ours] = thinker[ours]
    for key in ("vision_start_token_id", "vision_end_token_id", "audio_start_token_id", "audio_end_token_id",
                "position_id_per_seconds", "seconds_per_chunk"):
        if key in thinker:
            ids[key] = thinker[key]
    return ThinkerConfig(
        text=_text_config(text),
        vision=_vision_config(thinker.get("vision_config") or {}),
        audio=AudioConfig(**_pick(thinker.get("audio_config") or {}, AudioConfig)),
        hf_config=config,
        **ids,
        **options,
    )


def load_config(path: str | pathlib.Path, **options) -> ThinkerConfig:
    """ThinkerConfig from a directory holding config.json, or the file itself."""
    p = pathlib.Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.exists():
        raise FileNotFoundError(f"no config.json at {p}")
    return from_hf_dict(json.loads(p.read_text()), **options)
