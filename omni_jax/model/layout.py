"""Host-side (NumPy) layouts that give the encoders static shapes.

HF's encoders work on ragged sequences (`cu_seqlens`). Here every ragged split is decided on the
host from the grids / audio lengths and handed to the device as small index arrays:

* vision: patches are reordered into window order; window attention and full attention (one
  temporal grid of 2 frames) run on padded groups gathered by index and scattered back.
* audio: mel frames are cut into chunks of 2·n_window frames, each padded; attention stays inside
  a chunk; valid tokens are gathered and average-pooled in pairs per audio.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from omni_jax.model.config import AudioConfig, VisionConfig


@dataclasses.dataclass(frozen=True)
class Groups:
    """Ragged groups of a sequence of length N as a padded [G, S] gather.

    index: int32[G, S] positions into the sequence (padding points at 0); valid: bool[G, S];
    inverse: int32[N] the flat slot (g·S + s) of each sequence position.
    """

    index: np.ndarray
    valid: np.ndarray
    inverse: np.ndarray


def groups_from_bounds(bounds: np.ndarray) -> Groups:
    """Groups from cumulative boundaries [0, b1, ..., N] (empty groups dropped)."""
    bounds = np.unique(np.asarray(bounds, np.int64))
    sizes = np.diff(bounds)
    g, s = len(sizes), int(sizes.max()) if len(sizes) else 1
    offs = np.arange(s)
    valid = offs[None, :] < sizes[:, None]
    index = np.where(valid, bounds[:-1, None] + offs[None, :], 0)
    n = int(bounds[-1])
    inverse = np.empty(n, np.int64)
    inverse[index[valid]] = (np.arange(g)[:, None] * s + offs[None, :])[valid]
    return Groups(index.astype(np.int32), valid, inverse.astype(np.int32))


@dataclasses.dataclass(frozen=True)
class VisionLayout:
    """Everything the ViT needs besides the pixels, for patches of all images/videos concatenated.

    window_index: int32[M] merge units in window order (M = N / merge²);
    reverse_index: int32[M] its inverse (back to the processor's order after the merger);
    hw_positions: int32[N, 2] (row, column) of every patch, already in window order;
    windows / frames: groups for window attention / full attention per temporal grid.
    """

    window_index: np.ndarray
    reverse_index: np.ndarray
    hw_positions: np.ndarray
    windows: Groups
    frames: Groups

    @property
    def num_patches(self) -> int:
        return len(self.hw_positions)


def vision_layout(grid_thw: np.ndarray, cfg: VisionConfig) -> VisionLayout:
    """grid_thw: int[num_images_or_videos, 3] in the order their patches are concatenated."""
    grid_thw = np.asarray(grid_thw, np.int64).reshape(-1, 3)
    m, ws = cfg.spatial_merge_size, cfg.merge_window
    unit = m * m
    window_index, window_bounds, frame_bounds, hw = [], [0], [0], []
    merged_offset = 0
    for t, h, w in grid_thw:
        if h % m or w % m:
            raise ValueError(f"grid {(t, h, w)}: height and width must be multiples of spatial_merge_size {m}")
        lh, lw = h // m, w // m
        ids = np.arange(t * lh * lw).reshape(t, lh, lw) + merged_offset
        # HF pads by a whole window even when the side divides evenly; empty windows vanish anyway.
        ph, pw = ws - lh % ws, ws - lw % ws
        padded = np.full((t, lh + ph, lw + pw), -1, np.int64)
        padded[:, :lh, :lw] = ids
        nh, nw = (lh + ph) // ws, (lw + pw) // ws
        wins = padded.reshape(t, nh, ws, nw, ws).transpose(0, 1, 3, 2, 4).reshape(t, nh * nw, ws * ws)
        for frame in wins:
            for win in frame:
                units = win[win >= 0]
                if len(units):
                    window_index.append(units)
                    window_bounds.append(window_bounds[-1] + len(units) * unit)
            frame_bounds.append(frame_bounds[-1] + lh * lw * unit)
        # Patch (row, col) in the processor's block-major order: merge units row-major, m×m inside.
        rows = np.arange(h).reshape(lh, m, 1, 1) * np.ones((1, 1, lw, m), np.int64)
        cols = np.arange(w).reshape(1, 1, lw, m) * np.ones((lh, m, 1, 1), np.int64)
        block = np.stack([rows.transpose(0, 2, 1, 3).reshape(-1), cols.transpose(0, 2, 1, 3).reshape(-1)], -1)
        hw.append(np.tile(block, (t, 1)))
        merged_offset += t * lh * lw
    if not window_index:
        raise ValueError("vision_layout needs at least one grid")
    window_index = np.concatenate(window_index)
    hw = np.concatenate(hw).reshape(-1, unit, 2)[window_index].reshape(-1, 2)
    return VisionLayout(
        window_index=window_index.astype(np.int32),
        reverse_index=np.argsort(window_index).astype(np.int32),
        hw_positions=hw.astype(np.int32),
        windows=groups_from_bounds(np.array(window_bounds)),
        frames=groups_from_bounds(np.array(frame_bounds)),
    )


@dataclasses.dataclass(frozen=True)
class AudioLayout:
    """Chunking of all audios of a batch.

    chunks: float32[C, mel, L] (L = 2·n_window frames, zero padded); frame_valid: bool[C, L];
    token_valid: bool[C, L2] after the stride-2 conv (L2 = (L-1)//2+1); token_index: int32[V] flat
    positions (c·L2 + i) of the valid tokens in order; pool_index: int32[P] first token of each
    averaged pair; output_lengths: int[A] tokens per audio (25 per second).
    """

    chunks: np.ndarray
    frame_valid: np.ndarray
    token_valid: np.ndarray
    token_index: np.ndarray
    pool_index: np.ndarray
    output_lengths: np.ndarray


def audio_layout(input_features: np.ndarray, feature_attention_mask: np.ndarray, cfg: AudioConfig) -> AudioLayout:
    """input_features: float[A, mel, frames]; feature_attention_mask: int[A, frames] (valid frames first)."""
    feats = np.asarray(input_features, np.float32)
    fmask = np.asarray(feature_attention_mask).astype(bool)
    if feats.ndim != 3 or feats.shape[1] != cfg.num_mel_bins:
        raise ValueError(f"input_features must be [audios, {cfg.num_mel_bins}, frames], got {feats.shape}")
    lengths = fmask.sum(-1)
    if np.any(lengths < 1):
        raise ValueError("an audio has no valid mel frames (feature_attention_mask all zero)")
    size = 2 * cfg.n_window
    after = (size - 1) // 2 + 1  # conv2: kernel 3, stride 2, padding 1
    chunks, frame_valid, token_valid, token_index, pool_index = [], [], [], [], []
    token_offset = 0
    for a, n in enumerate(lengths):
        frames = feats[a][:, fmask[a]]  # valid frames, in order
        for start in range(0, n, size):
            piece = frames[:, start:start + size]
            c = np.zeros((cfg.num_mel_bins, size), np.float32)
            c[:, :piece.shape[1]] = piece
            chunks.append(c)
            frame_valid.append(np.arange(size) < piece.shape[1])
            n_tok = (piece.shape[1] - 1) // 2 + 1
            token_valid.append(np.arange(after) < n_tok)
            token_index.append((len(chunks) - 1) * after + np.arange(n_tok))
        n_after = (n - 1) // 2 + 1
        n_out = (n_after - 2) // 2 + 1
        pool_index.append(token_offset + 2 * np.arange(n_out))
        token_offset += n_after
    return AudioLayout(
        chunks=np.stack(chunks),
        frame_valid=np.stack(frame_valid),
        token_valid=np.stack(token_valid),
        token_index=np.concatenate(token_index).astype(np.int32),
        pool_index=np.concatenate(pool_index).astype(np.int32),
        output_lengths=((lengths - 1) // 2 + 1 - 2) // 2 + 1,
    )
