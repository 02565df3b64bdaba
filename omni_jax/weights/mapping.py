"""The one HF ↔ Flax name and shape table, used by loading and by export alike.

Each row pairs a Flax parameter path with the HF tensor name (without the `thinker.` prefix a full
Qwen2.5-Omni checkpoint adds) and a layout transform. `{i}` marks a stacked layer axis: the Flax
array holds all layers on axis 0, HF stores one tensor per layer.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import numpy as np


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one tensor changes between HF (torch) and Flax layouts.

    to_flax(hf) and to_hf(flax, hf_shape) are exact inverses (pure transposes / reshapes).
    hf_rows_axis: the Flax axis that HF's axis 0 becomes, so a slice of the Flax array needs only
    those rows of the HF tensor (rows are contiguous on disk).
    """

    name: str
    to_flax: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]
    flax_shape: Callable[[tuple[int, ...]], tuple[int, ...]]
    hf_rows_axis: int


SAME = Layout("same", lambda a: a, lambda a, shape: a, lambda s: tuple(s), 0)
# torch Linear weight [out, in] ↔ Dense kernel [in, out]
LINEAR = Layout("linear", lambda a: a.T, lambda a, shape: a.T, lambda s: (s[1], s[0]), 1)
# torch Conv1d weight [out, in, k] ↔ kernel [k, in, out]
CONV1D = Layout("conv1d", lambda a: a.transpose(2, 1, 0), lambda a, shape: a.transpose(2, 1, 0),
                lambda s: (s[2], s[1], s[0]), 2)
# torch Conv3d weight [out, C, T, P, P] with kernel == stride ↔ a linear map of the flattened
# (C, T, P, P) patch, which is exactly how the processor flattens pixel_values.
PATCH = Layout("patch", lambda a: a.reshape(a.shape[0], -1).T,
               lambda a, shape: a.T.reshape(shape), lambda s: (int(np.prod(s[1:])), s[0]), 1)


@dataclasses.dataclass(frozen=True)
class Row:
    flax: str  # dotted Flax path; "{i}" after a stacked module name
    hf: str  # HF name without the "thinker." prefix
    layout: Layout

    @property
    def stacked(self) -> bool:
        return "{i}" in self.flax

    def flax_path(self) -> tuple[str, ...]:
        return tuple(p for p in self.flax.split(".") if p != "{i}")


def _linear(flax_prefix: str, hf_prefix: str, bias: bool) -> list[Row]:
    rows = [Row(f"{flax_prefix}.kernel", f"{hf_prefix}.weight", LINEAR)]
    if bias:
        rows.append(Row(f"{flax_prefix}.bias", f"{hf_prefix}.bias", SAME))
    return rows


def _norm(flax_prefix: str, hf_prefix: str, bias: bool = False) -> list[Row]:
    rows = [Row(f"{flax_prefix}.weight", f"{hf_prefix}.weight", SAME)]
    if bias:
        rows.append(Row(f"{flax_prefix}.bias", f"{hf_prefix}.bias", SAME))
    return rows


def _text_rows(tied: bool) -> list[Row]:
    layer = "model.layers.{i}"
    rows = [Row("model.embed_tokens.embedding", "model.embed_tokens.weight", SAME)]
    for proj in ("q_proj", "k_proj", "v_proj"):
        rows += _linear(f"{layer}.self_attn.{proj}", f"{layer}.self_attn.{proj}", bias=True)
    rows += _linear(f"{layer}.self_attn.o_proj", f"{layer}.self_attn.o_proj", bias=False)
    for proj in ("gate_proj", "up_proj", "down_proj"):
        rows += _linear(f"{layer}.mlp.{proj}", f"{layer}.mlp.{proj}", bias=False)
    rows += _norm(f"{layer}.input_layernorm", f"{layer}.input_layernorm")
    rows += _norm(f"{layer}.post_attention_layernorm", f"{layer}.post_attention_layernorm")
    rows += _norm("model.norm", "model.norm")
    if not tied:
        rows += _linear("lm_head", "lm_head", bias=False)
    return rows


def _vision_rows() -> list[Row]:
    block = "visual.blocks.{i}"
    rows = [Row("visual.patch_embed.kernel", "visual.patch_embed.proj.weight", PATCH)]
    rows += _norm(f"{block}.norm1", f"{block}.norm1") + _norm(f"{block}.norm2", f"{block}.norm2")
    for proj in ("q", "k", "v", "proj"):
        rows += _linear(f"{block}.attn.{proj}", f"{block}.attn.{proj}", bias=True)
    for proj in ("gate_proj", "up_proj", "down_proj"):
        rows += _linear(f"{block}.mlp.{proj}", f"{block}.mlp.{proj}", bias=True)
    rows += _norm("visual.merger.ln_q", "visual.merger.ln_q")
    rows += _linear("visual.merger.mlp_0", "visual.merger.mlp.0", bias=True)
    rows += _linear("visual.merger.mlp_2", "visual.merger.mlp.2", bias=True)
    return rows


def _audio_rows() -> list[Row]:
    layer = "audio_tower.layers.{i}"
    rows = []
    for conv in ("conv1", "conv2"):
        rows += [Row(f"audio_tower.{conv}.kernel", f"audio_tower.{conv}.weight", CONV1D),
                 Row(f"audio_tower.{conv}.bias", f"audio_tower.{conv}.bias", SAME)]
    rows += _linear(f"{layer}.self_attn.q_proj", f"{layer}.self_attn.q_proj", bias=True)
    rows += _linear(f"{layer}.self_attn.k_proj", f"{layer}.self_attn.k_proj", bias=False)
    rows += _linear(f"{layer}.self_attn.v_proj", f"{layer}.self_attn.v_proj", bias=True)
    rows += _linear(f"{layer}.self_attn.out_proj", f"{layer}.self_attn.out_proj", bias=True)
    rows += _norm(f"{layer}.self_attn_layer_norm", f"{layer}.self_attn_layer_norm", bias=True)
    rows += _norm(f"{layer}.final_layer_norm", f"{layer}.final_layer_norm", bias=True)
    rows += _linear(f"{layer}.fc1", f"{layer}.fc1", bias=True)
    rows += _linear(f"{layer}.fc2", f"{layer}.fc2", bias=True)
    rows += _norm("audio_tower.ln_post", "audio_tower.ln_post", bias=True)
    rows += _linear("audio_tower.proj", "audio_tower.proj", bias=True)
    rows += [Row("audio_tower.audio_bos_eos_token", "audio_tower.audio_bos_eos_token.weight", SAME)]
    return rows


def thinker_rows(tied: bool) -> list[Row]:
    """The whole table for a Thinker (lm_head omitted when tied to the embedding)."""
    return _text_rows(tied) + _vision_rows() + _audio_rows()


def hf_names(row: Row, num_layers: int) -> Iterator[tuple[int | None, str]]:
    """(layer index or None, HF name) for every tensor a row stands for."""
    if row.stacked:
        for i in range(num_layers):
            yield i, row.hf.format(i=i)
    else:
        yield None, row.hf


def num_layers_for(row: Row, cfg) -> int:
    """How many stacked layers a row's module has under ThinkerConfig `cfg`."""
    if row.flax.startswith("model."):
        return cfg.text.num_hidden_layers
    if row.flax.startswith("visual."):
        return cfg.vision.depth
    if row.flax.startswith("audio_tower."):
        return cfg.audio.encoder_layers
    return 0


def hf_shape(row: Row, flax_shape: tuple[int, ...], cfg) -> tuple[int, ...]:
    """The HF tensor shape of one layer of `row`, from its per-layer Flax shape and the config."""
    if row.layout is PATCH:
        v = cfg.vision
        return (flax_shape[1], v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
    if row.layout in (LINEAR, CONV1D):
        return tuple(reversed(flax_shape))
    return tuple(flax_shape)


def stacked_paths() -> frozenset[tuple[str, ...]]:
    """Flax paths whose axis 0 stacks layers (one HF tensor per index)."""
    return frozenset(row.flax_path() for row in thinker_rows(tied=False) if row.stacked)
