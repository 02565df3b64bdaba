import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from omni_jax.data import config, video
from omni_jax.data.errors import BadRecord

from .media import make_video


# ---------- oracles, written from qwen-omni-utils' documented rules ----------
def qou_nframes(total, video_fps, fps=2.0, min_frames=4, max_frames=768):
    min_frames = math.ceil(min_frames / 2) * 2
    max_frames = math.floor(min(max_frames, total) / 2) * 2
    n = total / video_fps * fps
    n = min(min(max(n, min_frames), max_frames), total)
    return math.floor(n / 2) * 2


def qou_indices(total, n):
    import torch

    return torch.linspace(0, total - 1, n).round().long().numpy()


def qou_smart_resize(h, w, factor, min_pixels, max_pixels):
    h_bar = max(factor, round(h / factor) * factor)
    w_bar = max(factor, round(w / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        h_bar = math.floor(h / beta / factor) * factor
        w_bar = math.floor(w / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        h_bar = math.ceil(h * beta / factor) * factor
        w_bar = math.ceil(w * beta / factor) * factor
    return h_bar, w_bar


def limits(**over):
    cfg = config.data_defaults()
    cfg.max_frames = 768
    for k, v in over.items():
        cfg[k] = v
    return video.resolve_limits(cfg)


def test_frame_choice_matches_qou():
    rng = np.random.default_rng(0)
    cases = [(719, 30.0, 64), (75, 25.0, 768), (5, 25.0, 768), (3, 30.0, 768), (1800, 29.97, 32), (61, 24.0, 768)]
    cases += [(int(rng.integers(2, 3000)), float(rng.choice([23.976, 24, 25, 29.97, 30, 60])), int(rng.integers(2, 200)))
              for _ in range(300)]
    for total, fps, max_frames in cases:
        lim = limits(max_frames=max_frames)
        n = video.smart_nframes(total, fps, lim)
        assert n == qou_nframes(total, fps, max_frames=max_frames), (total, fps, max_frames)
        assert n % 2 == 0 and n <= max_frames
        np.testing.assert_array_equal(video.frame_indices(total, n), qou_indices(total, n))


def test_frame_choice_rules_by_hand():
    # 60 s at 30 fps, 2 fps -> 120 frames, capped at 64; 3 s clip -> 6; 1 s clip -> min 4
    assert video.smart_nframes(1800, 30.0, limits(max_frames=64)) == 64
    assert video.smart_nframes(90, 30.0, limits()) == 6
    assert video.smart_nframes(30, 30.0, limits()) == 4
    assert video.smart_nframes(7, 30.0, limits(max_frames=5)) == 4  # even, under the cap
    assert video.smart_nframes(1, 30.0, limits()) == 1  # a single frame is kept (padded later)
    np.testing.assert_array_equal(video.frame_indices(10, 4), [0, 3, 6, 9])


def test_item_caps_only_lower():
    cfg = config.data_defaults()
    lim = video.resolve_limits(cfg, {"max_frames": 1000, "max_pixels": 10**9, "total_pixels": 10**12})
    assert (lim.max_frames, lim.max_pixels, lim.total_pixels) == (cfg.max_frames, cfg.max_pixels, cfg.total_pixels)
    lim = video.resolve_limits(cfg, {"max_frames": 8, "max_pixels": 50000})
    assert (lim.max_frames, lim.max_pixels) == (8, 50000)
    assert lim.min_pixels <= lim.max_pixels
    # nframes asks for more than the cap: the cap wins
    lim = video.resolve_limits(cfg, {"nframes": 500})
    assert video.smart_nframes(10000, 30.0, lim) == cfg.max_frames


def test_smart_resize_matches_qou_and_never_exceeds_cap():
    rng = np.random.default_rng(1)
    for _ in range(2000):
        h, w = int(rng.integers(20, 4000)), int(rng.integers(20, 4000))
        if max(h, w) / min(h, w) > 200:
            continue
        lo = int(rng.integers(4, 200)) * 784
        hi = lo + int(rng.integers(0, 2000)) * 784
        got = video.smart_resize(h, w, 28, lo, hi)
        ref = qou_smart_resize(h, w, 28, lo, hi)
        assert got[0] % 28 == 0 and got[1] % 28 == 0
        assert got[0] * got[1] <= hi
        if ref[0] * ref[1] <= hi and min(ref) >= 28:
            assert got == ref, (h, w, lo, hi)
    with pytest.raises(ValueError, match="aspect"):
        video.smart_resize(10, 3000, 28, 784, 10**6)


def test_frame_pixel_cap_is_qou_share():
    lim = limits()
    for n in (4, 64, 256, 768):
        qou = max(min(768 * 784, lim.total_pixels / n * 2), int(lim.min_pixels * 1.05))
        assert video.frame_pixel_cap(lim, n) == int(qou)
    assert video.frame_pixel_cap(limits(max_pixels=3136, min_pixels=3136), 4) == 3136


def reference_patches(frames, mean, std, ps, m, tps):
    """The documented layout, written as loops over every patch entry."""
    x = frames.astype(np.float64).transpose(0, 3, 1, 2) / 255.0  # T, C, H, W
    x = (x - np.asarray(mean)[None, :, None, None]) / np.asarray(std)[None, :, None, None]
    while x.shape[0] % tps:
        x = np.concatenate([x, x[-1:]])
    T, C, H, W = x.shape
    gt, gh, gw = T // tps, H // ps, W // ps
    out = np.zeros((gt * gh * gw, C * tps * ps * ps))
    r = 0
    for t in range(gt):
        for bh in range(gh // m):
            for bw in range(gw // m):
                for mh in range(m):
                    for mw in range(m):
                        y0, x0 = (bh * m + mh) * ps, (bw * m + mw) * ps
                        block = x[t * tps:(t + 1) * tps, :, y0:y0 + ps, x0:x0 + ps]  # tps, C, ps, ps
                        out[r] = block.transpose(1, 0, 2, 3).reshape(-1)  # (C, tps, ps, ps)
                        r += 1
    return out, (gt, gh, gw)


@pytest.mark.parametrize("T", [4, 3, 1])
def test_patch_layout_and_normalisation(T):
    rng = np.random.default_rng(T)
    frames = rng.integers(0, 256, (T, 56, 84, 3), dtype=np.uint8)
    cfg = config.data_defaults()
    got, grid = video.to_patches(frames, cfg.image_mean, cfg.image_std, 14, 2, 2)
    ref, ref_grid = reference_patches(frames, cfg.image_mean, cfg.image_std, 14, 2, 2)
    assert grid == ref_grid == ((T + 1) // 2, 4, 6)
    assert got.dtype == np.float32 and got.shape == (grid[0] * 24, 3 * 2 * 14 * 14)
    np.testing.assert_allclose(got, ref, atol=2e-6)
    # The HF reshape/transpose of the (T, C, H, W) array gives the same rows.
    x = ((frames.astype(np.float32).transpose(0, 3, 1, 2) / 255 - np.array(cfg.image_mean, np.float32)[:, None, None])
         / np.array(cfg.image_std, np.float32)[:, None, None])
    if T % 2:
        x = np.concatenate([x, x[-1:]])
    hf = x.reshape(grid[0], 2, 3, 2, 2, 14, 3, 2, 14).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(got.shape)
    np.testing.assert_allclose(got, hf, atol=2e-6)


def test_load_video_file(media_dir):
    import decord

    cfg = config.data_defaults()
    frames, sample_fps = video.load_video(str(media_dir / "av.mp4"), video.resolve_limits(cfg))
    # 3 s at 25 fps = 75 frames -> 6 at 2 fps; 160x120 is under min_pixels -> scaled up to 280x392
    assert frames.shape == (6, 280, 392, 3) and frames.dtype == np.uint8
    assert sample_fps == pytest.approx(6 / 75 * 25)
    vr = decord.VideoReader(str(media_dir / "av.mp4"))
    raw = vr.get_batch(list(qou_indices(75, 6))).asnumpy()
    for k in range(6):
        want = np.asarray(Image.fromarray(raw[k]).resize((392, 280), Image.Resampling.BICUBIC))
        np.testing.assert_array_equal(frames[k], want)
    # bytes give the same frames as the path
    same, _ = video.load_video((media_dir / "av.mp4").read_bytes(), video.resolve_limits(cfg))
    np.testing.assert_array_equal(same, frames)


def test_video_without_audio_track_decodes(media_dir):
    frames, fps = video.load_video(str(media_dir / "silent.mp4"), video.resolve_limits(config.data_defaults()))
    assert frames.shape[0] == 4 and fps > 0


@pytest.mark.parametrize("name,reason", [("missing.mp4", "missing_file"), ("empty.mp4", "empty_file"),
                                         ("garbage.mp4", "corrupt_container"), ("truncated.mp4", "corrupt_container"),
                                         ("tone.m4a", "no_video_stream"), ("tone.wav", "no_video_stream")])
def test_bad_video_files(media_dir, name, reason):
    with pytest.raises(BadRecord) as e:
        video.load_video(str(media_dir / name), video.resolve_limits(config.data_defaults()))
    assert e.value.reason == reason
    assert name in str(e.value)


_PEAK = textwrap.dedent("""
    import sys
    import numpy as np
    from omni_jax.data import config, video

    def hwm():  # this process's peak RSS in kB (ru_maxrss would carry the parent's over exec)
        return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])

    cfg = config.data_defaults()
    cfg.max_frames = int(sys.argv[2])
    lim = video.resolve_limits(cfg)
    import decord; decord.VideoReader(sys.argv[1]).get_avg_fps()  # libraries loaded: the baseline
    base = hwm()
    if sys.argv[3] == "ours":
        frames, fps = video.load_video(sys.argv[1], lim)
    else:  # the control: every frame at full size, what a lost max_frames costs
        vr = decord.VideoReader(sys.argv[1])
        frames = vr.get_batch(list(range(len(vr)))).asnumpy()
    peak = hwm()
    print(frames.shape[0], frames.shape[1], frames.shape[2], (peak - base) / 1024)
""")


def peak_memory(path, max_frames, how="ours"):
    out = subprocess.run([sys.executable, "-c", _PEAK, str(path), str(max_frames), how], check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1]), int(out[2]), float(out[3])


def test_long_hd_video_is_capped_with_bounded_memory(tmp_path):
    path = make_video(tmp_path / "hd.mp4", size=(1280, 720), fps=10, frames=240, audio=False, source="testsrc2",
                      crf=40)
    n, h, w, delta_mb = peak_memory(path, 8)
    full_decode_mb = 240 * 1280 * 720 * 3 / 2**20  # what decoding every frame would hold: 633 MB
    assert n == 8 and h * w <= 602112
    assert delta_mb < 150, f"peak grew {delta_mb:.0f} MB decoding 8 of 240 720p frames"
    # the harness sees a full decode (so the bound above means something)
    assert peak_memory(path, 8, how="all")[3] > 0.8 * full_decode_mb


@pytest.mark.slow
def test_4k_719_frames_max_64(tmp_path):
    path = make_video(tmp_path / "4k.mp4", size=(3840, 2160), fps=10, frames=719, audio=False, source="testsrc2",
                      crf=40)
    n, h, w, delta_mb = peak_memory(path, 64)
    full_decode_mb = 719 * 3840 * 2160 * 3 / 2**20  # 17.4 GB
    assert n == 64 and h * w <= 602112
    # 64 resized frames (~110 MB) + one 4K frame and the decoder's buffers; never the clip.
    assert delta_mb < 700, f"peak grew {delta_mb:.0f} MB"
    assert delta_mb < full_decode_mb / 20


def test_frames_given_as_array():
    frames = np.random.default_rng(0).integers(0, 256, (10, 56, 56, 3), dtype=np.uint8)
    cfg = config.data_defaults("tiny")
    got, fps = video.load_video(frames, video.resolve_limits(cfg), video_fps=5.0)
    np.testing.assert_array_equal(got, frames[qou_indices(10, 4)])  # 2 s at 5 fps -> 4 frames, no resize
    assert fps == pytest.approx(4 / 10 * 5.0)
    with pytest.raises(BadRecord, match="video_fps"):
        video.load_video(frames, video.resolve_limits(cfg))
