"""The frames events are matched against, with their times.

- `thinker_frames`: the very frames the Thinker saw for the answer: `omni_jax.data.video`'s
  sampling (fps, min/max frames, even count, linspace indices) and resizing under the data
  config's caps; "Frame N" is the N-th sampled frame, its time the frame number / the file's fps.
- `interval_frames`: one frame every `interval` seconds from t = 0 (at most `max_frames`), at the
  file's own resolution.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from omni_jax.data import config as data_config
from omni_jax.data import video as video_lib
from omni_jax.data.clip_image import resize_shortest_edge
from omni_jax.data.errors import BadRecord


class VideoInputError(ValueError):
    """The video cannot give frames to match (unreadable, or too short for the interval)."""


@dataclasses.dataclass(frozen=True)
class FrameSet:
    frames: np.ndarray  # uint8[N, H, W, 3]
    times: np.ndarray  # float64[N], seconds
    indices: np.ndarray  # int64[N], frame numbers in the file
    source: str  # "thinker" or "interval"


def thinker_frames(video, data_cfg=None) -> FrameSet:
    """The Thinker's frames of `video` (a path or bytes) under `data_cfg` (None: the recipe's)."""
    cfg = data_cfg if data_cfg is not None else data_config.data_defaults()
    try:
        sampled = video_lib.sample_video(video, video_lib.resolve_limits(cfg), decode_threads=int(cfg.decode_threads))
    except BadRecord as e:
        raise VideoInputError(f"cannot read the video: {e}") from None
    return FrameSet(sampled.frames, sampled.times, sampled.indices, "thinker")


def interval_frames(video, interval: float, max_frames: int = 256, shortest_edge: int | None = None) -> FrameSet:
    """One frame every `interval` seconds of `video` (a path or bytes), from t = 0.

    shortest_edge: resize each frame as it is decoded, as CLIP's preprocessing will (so memory holds
    small frames, never a clip of 4K ones; CLIP's own resize is then a no-op and the pixels equal).
    """
    if not interval > 0:
        raise ValueError(f"interval must be > 0 seconds, got {interval}")
    try:
        reader = video_lib.open_reader(video)
    except BadRecord as e:
        raise VideoInputError(f"cannot read the video: {e}") from None
    total, fps = len(reader), float(reader.get_avg_fps())
    duration = total / fps if fps > 0 else 0.0
    if total < 1 or duration < interval:
        raise VideoInputError(f"the video lasts {duration:.2f} s ({total} frames), shorter than one "
                              f"{interval:g} s interval: use a smaller --interval or the Thinker's frames")
    times = np.arange(0.0, duration, interval)[:max_frames]
    indices = np.minimum(np.round(times * fps).astype(np.int64), total - 1)
    frames = []
    for i in indices:
        try:
            frame = reader[int(i)].asnumpy()
        except Exception as e:  # decord raises its own error types for broken streams
            raise VideoInputError(f"cannot decode frame {i} of the video: {str(e).splitlines()[0][:200]}") from None
        frames.append(resize_shortest_edge(frame, shortest_edge) if shortest_edge else frame)
    frames = np.stack(frames)
    return FrameSet(frames, indices / fps, indices, "interval")
