"""Video frames for the vision encoder: which frames, at what size, in which patch layout.

Frame choice and sizes follow qwen-omni-utils (QOU) `fetch_video` with decord: 2 fps, at least
`min_frames`, at most `max_frames`, an even count, indices `linspace(0, total-1, n).round()`;
frames resized by `smart_resize` to multiples of 28 within min/max/total pixels, bicubic with
antialiasing (Pillow's resampling, which torchvision's antialiased bicubic was ported from).

Memory: frames are decoded one at a time and resized at once, so a 4K 719-frame clip with
max_frames 64 holds 64 small frames plus one full-size frame, never the clip (the original
recipe's 9 GB failure). Every cap comes from one `VideoLimits`, built by `resolve_limits` only.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image

from omni_jax.data import media
from omni_jax.data.errors import BadRecord


@dataclasses.dataclass(frozen=True)
class VideoLimits:
    """The caps one video is read under. Build it with `resolve_limits`, nowhere else."""

    fps: float
    min_frames: int
    max_frames: int
    nframes: int | None  # an exact frame count asked for by the item (still capped)
    min_pixels: int
    max_pixels: int
    total_pixels: int
    factor: int  # patch_size * merge_size: frame sides are multiples of it
    frame_factor: int  # temporal_patch_size: frame counts are multiples of it


def _floor_by(x: float, f: int) -> int:
    return math.floor(x / f) * f


def _ceil_by(x: float, f: int) -> int:
    return math.ceil(x / f) * f


def resolve_limits(cfg, item: dict | None = None) -> VideoLimits:
    """The one place the video caps are decided: config caps, lowered (never raised) by the item.

    cfg: the data config (fps, min_frames, max_frames, min_pixels, max_pixels, total_pixels,
    patch_size, merge_size, temporal_patch_size). item: a message content item, which may carry
    `max_frames`, `max_pixels`, `total_pixels` (each can only lower the config's), `min_pixels`,
    `min_frames`, `fps` or `nframes` (bounded by the caps).
    """
    item = item or {}

    def lowered(key):
        cap = int(cfg[key])
        return min(cap, int(item[key])) if item.get(key) is not None else cap

    max_pixels = lowered("max_pixels")
    max_frames = lowered("max_frames")
    min_pixels = min(int(item.get("min_pixels") or cfg.min_pixels), max_pixels)
    min_frames = min(int(item.get("min_frames") or cfg.min_frames), max_frames)
    nframes = item.get("nframes")
    if item.get("fps") is not None and nframes is not None:
        raise ValueError("a video item may set fps or nframes, not both")
    return VideoLimits(
        fps=float(item.get("fps") or cfg.fps),
        min_frames=min_frames,
        max_frames=max_frames,
        nframes=None if nframes is None else int(nframes),
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        total_pixels=lowered("total_pixels"),
        factor=int(cfg.patch_size) * int(cfg.merge_size),
        frame_factor=int(cfg.temporal_patch_size),
    )


def smart_nframes(total_frames: int, video_fps: float, limits: VideoLimits) -> int:
    """How many frames to sample (QOU's rule, with max_frames as a hard cap).

    fps mode: clip(total / video_fps * fps, min_frames, max_frames, total), floored to an even
    count. nframes mode: round to even, capped. A clip shorter than frame_factor frames keeps all.
    """
    f = limits.frame_factor
    cap = _floor_by(min(limits.max_frames, total_frames), f)
    if limits.nframes is not None:
        n = min(round(limits.nframes / f) * f, cap)
    else:
        min_frames = _ceil_by(limits.min_frames, f)
        n = total_frames / video_fps * limits.fps
        n = min(min(max(n, min_frames), cap), total_frames)
        n = _floor_by(n, f)
    if n < f:
        n = min(total_frames, limits.max_frames)
    return int(n)


def frame_indices(total_frames: int, nframes: int) -> np.ndarray:
    """int64[nframes]: `torch.linspace(0, total-1, n).round()` as QOU computes it (float32).

    torch's linspace fills the first half as start + step*i and the second half as
    end - step*(n-1-i) in float32; emulating it exactly keeps the .5 ties where QOU has them.
    """
    if nframes == 1:
        return np.zeros(1, np.int64)
    start, end = np.float32(0.0), np.float32(total_frames - 1)
    step = np.float32((end - start) / np.float32(nframes - 1))
    i = np.arange(nframes)
    half = nframes // 2
    vals = np.where(
        i < half,
        start + step * i.astype(np.float32),
        end - step * (nframes - 1 - i).astype(np.float32),
    ).astype(np.float32)
    return np.round(vals).astype(np.int64)


def frame_pixel_cap(limits: VideoLimits, nframes: int) -> int:
    """Per-frame pixel cap for an n-frame video: QOU's total-pixel share, never above max_pixels."""
    share = limits.total_pixels / nframes * limits.frame_factor
    return int(min(limits.max_pixels, max(min(limits.max_pixels, share), limits.min_pixels * 1.05)))


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(h, w) multiples of `factor`, aspect kept, area within [min_pixels, max_pixels] (QOU's rule).

    QOU can overshoot max_pixels when it scales a small frame up (ceil on both sides); that case
    falls back to scaling down here so the cap always holds. Raises ValueError for aspect > 200.
    """
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.1f} is over 200")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, _floor_by(height / beta, factor))
        w_bar = max(factor, _floor_by(width / beta, factor))
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = _ceil_by(height * beta, factor)
        w_bar = _ceil_by(width * beta, factor)
        if h_bar * w_bar > max_pixels:
            beta = math.sqrt(h_bar * w_bar / max_pixels)
            h_bar = max(factor, _floor_by(h_bar / beta, factor))
            w_bar = max(factor, _floor_by(w_bar / beta, factor))
    return h_bar, w_bar


def resize_frame(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8[H, W, 3] -> uint8[height, width, 3], bicubic with antialiasing (Pillow)."""
    if frame.shape[:2] == (height, width):
        return frame
    img = Image.fromarray(np.ascontiguousarray(frame))
    return np.asarray(img.resize((width, height), Image.Resampling.BICUBIC))


def open_reader(src, decode_threads: int = 1):
    """A decord VideoReader on `src` (path or bytes); BadRecord if it cannot be opened."""
    import decord  # imported here: decord loads ffmpeg libraries, only readers need them

    opened = media.open_media(src)
    try:
        return decord.VideoReader(opened, ctx=decord.cpu(0), num_threads=decode_threads)
    except Exception as e:  # decord raises RuntimeError or its own DECORDError
        msg = str(e)
        if "cannot find video stream" in msg:
            raise BadRecord("no_video_stream", f"{media.describe(src)} has no video stream") from None
        raise BadRecord("corrupt_container", f"{media.describe(src)}: {msg.splitlines()[0][:200]}") from None


@dataclasses.dataclass(frozen=True)
class SampledVideo:
    """The frames the model sees and where they come from."""

    frames: np.ndarray  # uint8[n, h, w, 3], resized
    sample_fps: float  # n / total * video_fps: the true rate of the sampled frames
    indices: np.ndarray  # int64[n]: frame numbers in the file
    video_fps: float  # the file's own rate (indices / video_fps = seconds)
    total_frames: int

    @property
    def times(self) -> np.ndarray:
        """float64[n]: each sampled frame's time in seconds."""
        return self.indices / self.video_fps


def load_video(src, limits: VideoLimits, *, decode_threads: int = 1, video_fps: float | None = None):
    """Decode the frames the limits allow, resized as QOU would.

    src: a path, the file's bytes, or uint8[T, H, W, 3] frames already decoded (then `video_fps`
    gives their rate). Returns (uint8[n, h, w, 3] frames, sample_fps: float, the true rate of
    the sampled frames = n / total * video_fps). Raises BadRecord for unreadable input.
    """
    sampled = sample_video(src, limits, decode_threads=decode_threads, video_fps=video_fps)
    return sampled.frames, sampled.sample_fps


def sample_video(src, limits: VideoLimits, *, decode_threads: int = 1, video_fps: float | None = None) -> SampledVideo:
    """`load_video` with the frame numbers and times of the sampled frames (same arguments)."""
    if isinstance(src, np.ndarray):
        if src.ndim != 4 or src.shape[-1] != 3 or src.dtype != np.uint8:
            raise BadRecord("malformed_row", f"video array must be uint8[T, H, W, 3], got {src.dtype}{src.shape}")
        if not (video_fps or 0) > 0:
            raise BadRecord("malformed_row", "a video given as frames needs its frame rate (video_fps)")
        total, fps_in = src.shape[0], float(video_fps)
        get = lambda i: src[i]  # noqa: E731
        what = f"<array {src.shape}>"
    else:
        vr = open_reader(src, decode_threads)
        total, fps_in = len(vr), float(vr.get_avg_fps())
        get = lambda i: vr[int(i)].asnumpy()  # noqa: E731
        what = media.describe(src)
    if total < 1 or not fps_in > 0:
        raise BadRecord("corrupt_container", f"{what}: {total} frames at {fps_in} fps")
    n = smart_nframes(total, fps_in, limits)
    idx = frame_indices(total, n)
    assert n <= limits.max_frames, (n, limits)
    frames = None
    for k, i in enumerate(idx):
        try:
            frame = get(i)
        except Exception as e:
            raise BadRecord("corrupt_container", f"{what}: frame {i} of {total}: {str(e)[:200]}") from None
        if frames is None:  # every frame of a clip gets the size of the first
            try:
                h, w = smart_resize(
                    frame.shape[0], frame.shape[1], limits.factor, limits.min_pixels, frame_pixel_cap(limits, n)
                )
            except ValueError as e:
                raise BadRecord("bad_geometry", f"{what}: {e}") from None
            frames = np.empty((n, h, w, 3), np.uint8)
        frames[k] = resize_frame(frame, h, w)
    return SampledVideo(frames, n / total * fps_in, idx, fps_in, int(total))


def to_patches(frames: np.ndarray, mean, std, patch_size: int, merge_size: int, temporal_patch_size: int):
    """Normalise and cut frames into the vision encoder's flat patches (HF Qwen2-VL layout).

    frames: uint8[T, H, W, 3], H and W multiples of patch_size * merge_size. T is padded to a
    multiple of temporal_patch_size by repeating the last frame. Returns
    (float32[t*h*w, 3*tps*ps*ps] patches, (t, h, w) grid), rows ordered (t, h/m, w/m, m, m) and
    each row (C, tps, ps, ps).
    """
    t_in, H, W, C = frames.shape
    tps, ps, m = temporal_patch_size, patch_size, merge_size
    if pad := -t_in % tps:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
    gt, gh, gw = frames.shape[0] // tps, H // ps, W // ps
    # Reorder while still uint8 (a quarter of the bytes), then convert once and normalise in place.
    x = frames.reshape(gt, tps, gh // m, m, ps, gw // m, m, ps, C)
    # -> (gt, gh/m, gw/m, m_h, m_w, C, tps, ps_h, ps_w)
    x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7).reshape(gt * gh * gw, C, tps * ps * ps).astype(np.float32)
    # Rescale and normalise fused as (x - 255 mean) / (255 std), the HF processors' arithmetic.
    x -= (np.asarray(mean, np.float32) * np.float32(255.0))[:, None]
    x /= (np.asarray(std, np.float32) * np.float32(255.0))[:, None]
    return x.reshape(gt * gh * gw, C * tps * ps * ps), (gt, gh, gw)
