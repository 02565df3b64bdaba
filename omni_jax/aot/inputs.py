"""The worst-case batch of a config, as abstract arrays (shapes and dtypes, no data).

One prompt of the recipe at its caps: a video of `max_frames` frames resized by the data
pipeline's own `smart_resize` under `max_pixels` (64 frames of 672×896 → grid (32, 48, 64) →
24,576 video tokens), its 60 s audio track (6,000 mel frames → 1,500 tokens) and ~400 text
tokens, left-padded to the config's prompt bucket. The encoders' index arrays get their shapes
from the same host-side `layout` functions the run uses.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from omni_jax.data import audio as audio_lib
from omni_jax.data import video as video_lib
from omni_jax.data.collate import bucket_length
from omni_jax.grpo.logprobs import Sequences
from omni_jax.grpo.step import GRPOBatch
from omni_jax.model import layout as layout_lib
from omni_jax.model.config import ThinkerConfig
from omni_jax.model.inputs import AudioInputs, Groups, ModelInputs, VisionInputs


@dataclasses.dataclass(frozen=True)
class Prompt:
    """The media and text of one prompt. video_grid: (t, h, w) in patches; audio_frames: valid mel frames."""

    video_grid: tuple[int, int, int] | None
    audio_frames: int
    text_tokens: int

    def video_tokens(self, merge_size: int) -> int:
        return int(np.prod(self.video_grid)) // merge_size**2 if self.video_grid else 0

    def audio_tokens(self) -> int:
        return audio_lib.audio_token_count(self.audio_frames) if self.audio_frames else 0

    def tokens(self, merge_size: int) -> int:
        return self.text_tokens + self.video_tokens(merge_size) + self.audio_tokens()


def worst_case_prompt(data_cfg, *, source_hw: tuple[int, int] = (1080, 1440), audio_seconds: float = 60.0,
                      text_tokens: int = 400) -> Prompt:
    """The largest prompt the data config lets through: `max_frames` frames of a long video.

    source_hw: the source video's frame size; 3:4 makes smart_resize land exactly on max_pixels
    for the recipe (672×896). Audio: `audio_seconds` of the video's track (100 mel frames / s).
    """
    limits = video_lib.resolve_limits(data_cfg)
    frames = int(limits.max_frames) // limits.frame_factor * limits.frame_factor
    cap = video_lib.frame_pixel_cap(limits, frames)
    h, w = video_lib.smart_resize(*source_hw, limits.factor, limits.min_pixels, cap)
    ps = int(data_cfg.patch_size)
    grid = (frames // int(data_cfg.temporal_patch_size), h // ps, w // ps)
    hop_per_second = data_cfg.sampling_rate / data_cfg.hop_length
    audio_frames = int(audio_seconds * hop_per_second) if data_cfg.with_audio else 0
    return Prompt(grid, audio_frames, int(text_tokens))


def prompt_length(prompt: Prompt, data_cfg) -> int:
    """The padded prompt length: the smallest of the config's prompt buckets that holds it."""
    return bucket_length(prompt.tokens(int(data_cfg.merge_size)), data_cfg.prompt_buckets)


def _sds(shape, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(int(s) for s in shape), jnp.dtype(dtype))


def _like(a: np.ndarray) -> jax.ShapeDtypeStruct:
    return _sds(a.shape, a.dtype)


def model_inputs(cfg: ThinkerConfig, prompt: Prompt, batch: int, length: int) -> ModelInputs:
    """Abstract `prepare_inputs` output for `batch` copies of `prompt` padded to `length` tokens."""
    if prompt.tokens(cfg.vision.spatial_merge_size) > length:
        raise ValueError(f"a prompt of {prompt.tokens(cfg.vision.spatial_merge_size)} tokens does not fit "
                         f"length {length}")
    vision = audio = None
    if prompt.video_grid:
        grids = np.asarray([prompt.video_grid] * batch)
        lay = layout_lib.vision_layout(grids, cfg.vision)
        patches = int(grids.prod(-1).sum())
        vision = VisionInputs(_sds((patches, cfg.vision.patch_dim), np.float32), _like(lay.window_index),
                              _like(lay.reverse_index), _like(lay.hw_positions),
                              Groups(*(_like(a) for a in (lay.windows.index, lay.windows.valid, lay.windows.inverse))),
                              Groups(*(_like(a) for a in (lay.frames.index, lay.frames.valid, lay.frames.inverse))))
    if prompt.audio_frames:
        feats = np.zeros((batch, cfg.audio.num_mel_bins, prompt.audio_frames), np.float32)
        lay = layout_lib.audio_layout(feats, np.ones(feats.shape[::2], np.int32), cfg.audio)
        audio = AudioInputs(*(_like(a) for a in (lay.chunks, lay.frame_valid, lay.token_valid, lay.token_index,
                                                 lay.pool_index)))
    bt = (batch, length)
    return ModelInputs(input_ids=_sds(bt, np.int32), attention_mask=_sds(bt, bool),
                       position_ids=_sds((3, *bt), np.int32), rope_deltas=_sds((batch,), np.int32),
                       feature_index=_sds(bt, np.int32), vision=vision, audio=audio)


def grpo_batch(cfg: ThinkerConfig, rows: int, length: int, max_new_tokens: int, *, with_reference: bool,
               with_old_logp: bool) -> GRPOBatch:
    """Abstract GRPO batch of `rows` = prompts × num_generations rows, as `experience.collect` builds it.

    prompt_embeds come from the prefill in the compute dtype; the rest as in `Sequences`.
    """
    n, m = rows, max_new_tokens
    seqs = Sequences(prompt_embeds=_sds((n, length, cfg.text.hidden_size), cfg.dtype),
                     prompt_positions=_sds((3, n, length), np.int32), prompt_mask=_sds((n, length), bool),
                     completions=_sds((n, m), np.int32), completion_mask=_sds((n, m), bool),
                     next_position=_sds((n,), np.int32))
    logp = _sds((n, m), np.float32)
    return GRPOBatch(seqs=seqs, advantages=_sds((n,), np.float32), old_logp=logp if with_old_logp else None,
                     ref_logp=logp if with_reference else None)


def with_shardings(tree, shardings):
    """ShapeDtypeStructs of `tree` carrying the matching sharding of `shardings` (same structure)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
