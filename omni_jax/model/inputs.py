"""Turn the HF processor's keyword arguments into the model's static-shape device inputs.

Everything data-dependent (TMRoPE positions, which token takes which encoder output, the
encoders' ragged layouts) is computed here on the host with NumPy, and checked: placeholder
counts that disagree with the grids or audio lengths fail here, before anything is traced.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import struct

from omni_jax.model import layout as layout_lib
from omni_jax.model.config import ThinkerConfig
from omni_jax.model.rope import PlaceholderError, get_rope_index

HF_KEYS = (
    "input_ids", "attention_mask", "pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw",
    "video_second_per_grid", "input_features", "feature_attention_mask", "use_audio_in_video",
)


@struct.dataclass
class Groups:
    index: Any
    valid: Any
    inverse: Any


@struct.dataclass
class VisionInputs:
    pixel_values: Any  # float[N, patch_dim], images then videos
    window_index: Any
    reverse_index: Any
    hw_positions: Any
    windows: Groups
    frames: Groups


@struct.dataclass
class AudioInputs:
    chunks: Any
    frame_valid: Any
    token_valid: Any
    token_index: Any
    pool_index: Any


@struct.dataclass
class ModelInputs:
    """Device inputs of one forward pass.

    input_ids: int32[B, T]; attention_mask: bool[B, T]; position_ids: int32[3, B, T];
    rope_deltas: int32[B]; feature_index: int32[B, T] (-1 for text, else the row of the
    concatenated encoder outputs [audio; images; videos] that replaces the token's embedding).
    """

    input_ids: Any
    attention_mask: Any
    position_ids: Any
    rope_deltas: Any
    feature_index: Any
    vision: VisionInputs | None = None
    audio: AudioInputs | None = None


def _groups(g: layout_lib.Groups) -> Groups:
    return Groups(g.index, g.valid, g.inverse)


def next_position_ids(position_ids, attention_mask):
    """int32[B]: the TMRoPE id of each prompt's first completion token, one past its largest
    unmasked id (HF continues there). position_ids int[3, B, T], attention_mask [B, T]."""
    masked = jnp.where(attention_mask[None], position_ids, -1)
    return (masked.max(axis=(0, 2)) + 1).astype(jnp.int32)


def prepare_inputs(cfg: ThinkerConfig, **kwargs) -> ModelInputs:
    """ModelInputs (NumPy) from the HF processor's keyword arguments (numpy arrays or lists)."""
    unknown = set(kwargs) - set(HF_KEYS)
    if unknown:
        raise TypeError(f"unexpected model inputs {sorted(unknown)}; expected a subset of {HF_KEYS}")
    if kwargs.get("input_ids") is None:
        raise ValueError("input_ids is required")
    ids = np.asarray(kwargs["input_ids"]).astype(np.int32)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {ids.shape}")
    mask = kwargs.get("attention_mask")
    mask = np.ones(ids.shape, bool) if mask is None else np.asarray(mask).astype(bool)
    use_aiv = bool(np.asarray(kwargs.get("use_audio_in_video") or False))

    def arr(name, dtype=None):
        v = kwargs.get(name)
        return None if v is None else np.asarray(v, dtype)

    image_grid, video_grid = arr("image_grid_thw", np.int64), arr("video_grid_thw", np.int64)
    pixels, video_pixels = arr("pixel_values", np.float32), arr("pixel_values_videos", np.float32)
    if (pixels is None) != (image_grid is None) or (video_pixels is None) != (video_grid is None):
        raise ValueError("pixel_values / pixel_values_videos must come with image_grid_thw / video_grid_thw")
    seconds = arr("video_second_per_grid", np.float64)
    if video_grid is not None and seconds is None:
        seconds = np.full(len(video_grid), cfg.vision.temporal_patch_size / 2.0)  # HF's default fps 2
    feats, fmask = arr("input_features", np.float32), arr("feature_attention_mask")

    valid_ids = np.where(mask, ids, -1)
    audio = None
    audio_lengths = None
    counts = {}
    if feats is not None:
        if fmask is None:
            raise ValueError("input_features needs feature_attention_mask")
        lay = layout_lib.audio_layout(feats, fmask, cfg.audio)
        audio_lengths = fmask.astype(bool).sum(-1)
        audio = AudioInputs(lay.chunks, lay.frame_valid, lay.token_valid, lay.token_index, lay.pool_index)
        counts["audio"] = (cfg.audio_token_id, int(lay.output_lengths.sum()))
    vision = None
    merge2 = cfg.vision.spatial_merge_size**2
    grids = [g for g in (image_grid, video_grid) if g is not None]
    if grids:
        all_pixels = np.concatenate([p for p in (pixels, video_pixels) if p is not None])
        all_grids = np.concatenate(grids)
        if all_pixels.shape != (int(all_grids.prod(-1).sum()), cfg.vision.patch_dim):
            raise ValueError(
                f"pixel values of shape {all_pixels.shape} do not match the grids "
                f"({int(all_grids.prod(-1).sum())} patches of {cfg.vision.patch_dim})"
            )
        lay = layout_lib.vision_layout(all_grids, cfg.vision)
        vision = VisionInputs(all_pixels, lay.window_index, lay.reverse_index, lay.hw_positions,
                              _groups(lay.windows), _groups(lay.frames))
        if image_grid is not None:
            counts["image"] = (cfg.image_token_id, int(image_grid.prod(-1).sum()) // merge2)
        if video_grid is not None:
            counts["video"] = (cfg.video_token_id, int(video_grid.prod(-1).sum()) // merge2)
    for what, token in (("audio", cfg.audio_token_id), ("image", cfg.image_token_id), ("video", cfg.video_token_id)):
        found = int((valid_ids == token).sum())
        expected = counts.get(what, (token, 0))[1]
        if found != expected:
            raise PlaceholderError(
                f"{found} {what} placeholder tokens in input_ids but the {what} inputs give {expected} "
                f"features; prompts must be expanded by the processor for exactly these inputs"
            )

    # Feature rows: all audio tokens first, then image tokens, then video tokens, each in
    # row-major order of the batch (as HF's masked_scatter fills them).
    feature_index = np.full(ids.shape, -1, np.int64)
    offset = 0
    for what in ("audio", "image", "video"):
        if what in counts:
            token, n = counts[what]
            where = valid_ids == token
            feature_index[where] = offset + np.arange(n)
            offset += n

    position_ids, deltas = get_rope_index(
        cfg, ids, mask, image_grid, video_grid, seconds, audio_lengths, use_aiv)
    return ModelInputs(ids, mask, position_ids, deltas, feature_index.astype(np.int32), vision, audio)
