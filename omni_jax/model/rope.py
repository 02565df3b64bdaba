"""Rotary position embeddings: TMRoPE position ids (host, NumPy) and cos/sin tables (device).

Position ids follow HF's `get_rope_index` for Qwen2.5-Omni: text tokens count up on all three
rows (time, height, width); an image/video block takes (t, h, w) grid positions offset by the next
free id, with t in units of `position_id_per_seconds` per second of video; audio counts up; the
next text starts after the largest id used so far. With `use_audio_in_video` the video and its
audio share a start id and are interleaved in chunks of `seconds_per_chunk`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from omni_jax.model.config import ThinkerConfig


class PlaceholderError(ValueError):
    """input_ids' placeholder tokens disagree with the grids / audio lengths given."""


def audio_output_length(feature_length: np.ndarray | int) -> np.ndarray:
    """Tokens an audio of `feature_length` mel frames becomes (25 per second)."""
    after_conv = (np.asarray(feature_length) - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


def chunk_bounds(values: np.ndarray, per_chunk: int) -> list[tuple[int, int]]:
    """Split a non-decreasing sequence where values cross successive multiples of `per_chunk`.

    Matches HF's chunking exactly, including its behaviour of advancing one chunk boundary per
    token (a jump over several boundaries still closes only one chunk).
    """
    bounds, start, chunk = [], 0, 1
    for i, v in enumerate(values):
        if v >= chunk * per_chunk:
            bounds.append((start, i))
            start, chunk = i, chunk + 1
    bounds.append((start, len(values)))
    return bounds


def _vision_grid_positions(grid_thw, merge: int, t_index: np.ndarray) -> np.ndarray:
    """[3, t*h*w/merge²] (t, h, w) positions of one image/video, zero-based."""
    _, gh, gw = (int(v) for v in grid_thw)
    h, w = gh // merge, gw // merge
    t = np.repeat(t_index.astype(np.int64), h * w)
    hh = np.tile(np.repeat(np.arange(h), w), len(t_index))
    ww = np.tile(np.arange(w), len(t_index) * h)
    return np.stack([t, hh, ww])


def _video_t_index(grid_t: int, second_per_grid: float, per_second: int) -> np.ndarray:
    # float32 arithmetic in HF's order (index * seconds) * rate, truncated.
    t = np.arange(grid_t, dtype=np.float32) * np.float32(second_per_grid)
    return (t * np.float32(per_second)).astype(np.int64)


def _place_audio_in_video(cfg, ids, out, i, nxt, grid, second_per_grid, audio_len, row):
    """Positions of one interleaved video+audio block starting at ids[i] = <|vision_bos|>.

    Returns (index after the block, next free position id).
    """
    out[:, i:i + 2] = nxt  # <|vision_bos|><|audio_bos|>
    start = nxt + 1
    rate = cfg.position_id_per_seconds
    video = _vision_grid_positions(grid, cfg.vision.spatial_merge_size,
                                   _video_t_index(int(grid[0]), second_per_grid, rate)) + start
    audio = np.broadcast_to(np.arange(audio_len) + start, (3, audio_len))
    per_chunk = int(rate * cfg.seconds_per_chunk)
    v_bounds = chunk_bounds(video[0] - start, per_chunk)
    a_bounds = chunk_bounds(audio[0] - start, per_chunk)
    pieces, kinds = [], []
    for j in range(max(len(v_bounds), len(a_bounds))):
        for bounds, pos, tok in ((v_bounds, video, cfg.video_token_id), (a_bounds, audio, cfg.audio_token_id)):
            if j < len(bounds):
                s, e = bounds[j]
                pieces.append(pos[:, s:e])
                kinds.append(np.full(e - s, tok))
    block, kinds = np.concatenate(pieces, axis=1), np.concatenate(kinds)
    n = block.shape[1]
    body = ids[i + 2:i + 2 + n]
    tail = ids[i + 2 + n:i + 4 + n]
    if len(body) != n or not np.array_equal(body, kinds) or list(tail) != [cfg.audio_end_token_id, cfg.vision_end_token_id]:
        raise PlaceholderError(
            f"row {row}: the interleaved video+audio block at position {i} does not match grid "
            f"{tuple(int(g) for g in grid)} and {audio_len} audio tokens in {cfg.seconds_per_chunk} s chunks"
        )
    out[:, i + 2:i + 2 + n] = block
    eos = pieces[-1].max() + 1  # HF continues from the last chunk placed, not the overall max
    out[:, i + 2 + n:i + 4 + n] = eos
    return i + 4 + n, eos + 1


def get_rope_index(
    cfg: ThinkerConfig,
    input_ids: np.ndarray,
    attention_mask: np.ndarray | None = None,
    image_grid_thw: np.ndarray | None = None,
    video_grid_thw: np.ndarray | None = None,
    video_second_per_grid: np.ndarray | None = None,
    audio_lengths: np.ndarray | None = None,
    use_audio_in_video: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """TMRoPE position ids.

    input_ids: int[B, T]; attention_mask: int[B, T] (0 = left padding); audio_lengths: int[A] mel
    frames per audio (feature_attention_mask.sum(-1)). Images, videos and audios are consumed in
    order across the batch, as the HF processor lays them out.
    Returns position_ids int32[3, B, T] (padding positions are 1, as HF) and rope_deltas int32[B]
    (the offset between a row's next position id and its unpadded length; decoding position =
    index among valid tokens + delta).
    """
    input_ids = np.asarray(input_ids)
    b, t = input_ids.shape
    mask = np.ones((b, t), bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    positions = np.ones((3, b, t), np.int64)
    deltas = np.zeros((b,), np.int64)
    if image_grid_thw is None and video_grid_thw is None:
        # HF's text/audio-only path: a running count over valid tokens.
        pos = np.cumsum(mask, axis=-1) - 1
        pos = np.where(mask, pos, 1)
        positions[:] = pos[None]
        deltas = pos.max(-1) + 1 - mask.sum(-1)
        return positions.astype(np.int32), deltas.astype(np.int32)

    merge = cfg.vision.spatial_merge_size
    rate = cfg.position_id_per_seconds
    images = iter(np.asarray(image_grid_thw) if image_grid_thw is not None else [])
    videos = iter(np.asarray(video_grid_thw) if video_grid_thw is not None else [])
    seconds = iter(np.asarray(video_second_per_grid, np.float64)
                   if video_second_per_grid is not None else [])
    audios = iter(np.asarray(audio_lengths) if audio_lengths is not None else [])

    def take(it, what, row):
        try:
            return next(it)
        except StopIteration:
            raise PlaceholderError(f"row {row}: more {what} blocks in input_ids than {what} inputs given") from None

    for row in range(b):
        ids = input_ids[row][mask[row]]
        out = np.zeros((3, len(ids)), np.int64)
        nxt = 0  # HF's st_idx: one past the largest id of the last piece placed
        i = 0

        def expect_run(start: int, n: int, tok: int, what: str):
            run = ids[start:start + n]
            if len(run) != n or not np.all(run == tok) or (start + n < len(ids) and ids[start + n] == tok):
                raise PlaceholderError(
                    f"row {row}: expected {n} consecutive {what} tokens at position {start}; the prompt's "
                    "placeholders do not match the grids / audio lengths (was the prompt built by omni_jax.data?)"
                )

        while i < len(ids):
            tok = ids[i]
            if tok == cfg.image_token_id or (tok == cfg.video_token_id and not use_audio_in_video):
                is_image = tok == cfg.image_token_id
                grid = take(images if is_image else videos, "image" if is_image else "video", row)
                if is_image:
                    t_index = np.arange(int(grid[0]), dtype=np.int64) * rate
                else:
                    t_index = _video_t_index(int(grid[0]), float(take(seconds, "video_second_per_grid", row)), rate)
                block = _vision_grid_positions(grid, merge, t_index) + nxt
                expect_run(i, block.shape[1], tok, "image" if is_image else "video")
                out[:, i:i + block.shape[1]] = block
                nxt = block.max() + 1
                i += block.shape[1]
            elif tok == cfg.audio_token_id:
                n = int(audio_output_length(take(audios, "audio", row)))
                expect_run(i, n, tok, "audio")
                out[:, i:i + n] = np.arange(n) + nxt
                nxt += n
                i += n
            elif use_audio_in_video and tok == cfg.vision_start_token_id and i + 1 < len(ids) \
                    and ids[i + 1] == cfg.audio_start_token_id:
                i, nxt = _place_audio_in_video(cfg, ids, out, i, nxt, take(videos, "video", row),
                                               float(take(seconds, "video_second_per_grid", row)),
                                               int(audio_output_length(take(audios, "audio", row))), row)
            elif tok == cfg.video_token_id:
                raise PlaceholderError(
                    f"row {row}: with use_audio_in_video=True every video must sit in a "
                    "<|vision_bos|><|audio_bos|> ... <|audio_eos|><|vision_eos|> block"
                )
            else:
                out[:, i] = nxt
                nxt += 1
                i += 1
        positions[:, row, mask[row]] = out
        deltas[row] = (out.max() + 1 if out.size else 0) - len(ids)
    for it, what in ((images, "image"), (videos, "video"), (audios, "audio")):
        if next(it, None) is not None:
            raise PlaceholderError(f"more {what} inputs than {what} blocks in input_ids")
    return positions.astype(np.int32), deltas.astype(np.int32)


def mrope_cos_sin(position_ids: jax.Array, head_dim: int, theta: float,
                  mrope_section: tuple[int, int, int]) -> tuple[jax.Array, jax.Array]:
    """Multimodal RoPE tables.

    position_ids: int[3, B, T] (time, height, width rows). Frequency j of the head_dim/2 uses row
    (the index of the mrope_section slice j falls in) % 3. Returns cos, sin: float32[B, T, head_dim].
    """
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    rows = np.concatenate([np.full(n, k % 3) for k, n in enumerate(mrope_section)])
    pos = position_ids.astype(jnp.float32)[rows]  # [H/2, B, T]: each frequency's own row
    freqs = jnp.moveaxis(pos, 0, -1) * inv_freq  # [B, T, H/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def vision_cos_sin(hw_positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """2-D RoPE of the ViT. hw_positions: int[N, 2] (row, column of each patch).

    head_dim/4 frequencies per axis: [h·f, w·f] repeated twice. Returns float32[N, head_dim] each.
    """
    dim = head_dim // 2
    inv_freq = 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    freqs = hw_positions.astype(jnp.float32)[:, :, None] * inv_freq  # [N, 2, dim/2]
    freqs = freqs.reshape(freqs.shape[0], -1)  # [N, dim]: h freqs then w freqs
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)
