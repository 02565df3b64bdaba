"""Preprocessing throughput: one 60 s 720p clip with audio, 32 frames, by worker count.

    python benchmarks/bench_preprocess.py [--clips 8] [--workers 1,2,4] [--peak4k]

Ours: `Mixture` (threads) running `prepare_record` (decord frame-by-frame decode + Pillow resize,
vectorised Whisper log-mel on the true length). Side by side, the way qwen-omni-utils + the HF
feature extractor do it, single-threaded: decord `get_batch` of all sampled frames at full size,
then resize, and WhisperFeatureExtractor padded to 300 s. `--peak4k` adds the peak-memory check
of a 4K 719-frame clip at max_frames 64 against decoding every sampled frame at full size.
Needs the ffmpeg binary of imageio-ffmpeg (a test dependency) to make the clips.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

from omni_jax.data import audio, config, mixture, video
from omni_jax.data.sources import ListSource

FRAMES = 32


def make_clip(path: pathlib.Path, size: str, seconds: float, fps: int, frames: int | None = None, audio_on=True):
    import imageio_ffmpeg

    args = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi",
            "-i", f"testsrc2=size={size}:rate={fps}"]
    if audio_on:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    args += ["-frames:v", str(frames)] if frames else ["-t", str(seconds)]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "60"]
    if audio_on:
        args += ["-c:a", "aac", "-shortest"]
    subprocess.run(args + [str(path)], check=True)
    return path


def record(path: pathlib.Path, i: int) -> dict:
    return {"id": f"clip{i}", "source": "bench", "data_type": "video", "video": str(path),
            "problem": "What happens in the video?", "problem_type": "multiple choice",
            "options": ["A. a", "B. b", "C. c", "D. d"], "solution": "<answer>A</answer>"}


def bench_ours(path, clips: int, workers: int) -> float:
    cfg = config.data_defaults()
    cfg.max_frames, cfg.num_workers, cfg.batch_size, cfg.prefetch_batches = FRAMES, workers, 1, 2
    src = ListSource("bench", [record(path, i) for i in range(clips + 2 * workers + 2)])
    cfg.mixture = {"bench": 1.0}
    m = mixture.from_config(cfg, process_index=0, process_count=1, sources={"bench": src})
    next(m)  # warm: libraries loaded, threads started
    c, t = cpu(), time.perf_counter()
    for _ in tqdm(range(clips), desc=f"ours, {workers} worker(s)", leave=False):
        batch = next(m)
    dt, dc = time.perf_counter() - t, cpu() - c
    m.close()
    assert batch["video_grid_thw"][0][0] * 2 == FRAMES
    return dt, dc


def bench_reference_style(path, clips: int) -> float:
    """QOU-style reading (get_batch at full size, then resize) + WhisperFeatureExtractor (300 s)."""
    import decord
    from transformers import WhisperFeatureExtractor

    cfg = config.data_defaults()
    cfg.max_frames = FRAMES
    lim = video.resolve_limits(cfg)
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=300, n_fft=400)
    c, t = cpu(), time.perf_counter()
    for _ in tqdm(range(clips), desc="reference style", leave=False):
        vr = decord.VideoReader(str(path), num_threads=1)
        n = video.smart_nframes(len(vr), vr.get_avg_fps(), lim)
        full = vr.get_batch(list(video.frame_indices(len(vr), n))).asnumpy()  # n full-size frames
        h, w = video.smart_resize(full.shape[1], full.shape[2], 28, lim.min_pixels, video.frame_pixel_cap(lim, n))
        frames = np.stack([video.resize_frame(f, h, w) for f in full])
        video.to_patches(frames, cfg.image_mean, cfg.image_std, 14, 2, 2)
        wave = audio.load_audio(str(path), 16000, 300.0)
        fe(wave, sampling_rate=16000, return_attention_mask=True, padding="max_length", return_tensors="np")
    return time.perf_counter() - t, cpu() - c


def cpu() -> float:
    """CPU seconds of this process (all threads): robust to other jobs sharing the machine."""
    t = os.times()
    return t.user + t.system


_PEAK = """
import sys, numpy as np, decord
from omni_jax.data import config, video


def hwm():  # this process's peak RSS in kB (ru_maxrss would carry the parent's over exec)
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])


cfg = config.data_defaults(); cfg.max_frames = 64
lim = video.resolve_limits(cfg)
vr = decord.VideoReader(sys.argv[1], num_threads=1); vr.get_avg_fps()
base = hwm()
if sys.argv[2] == "ours":
    frames, _ = video.load_video(sys.argv[1], lim)
else:  # every sampled frame at full size first, as QOU does
    n = video.smart_nframes(len(vr), vr.get_avg_fps(), lim)
    frames = vr.get_batch(list(video.frame_indices(len(vr), n))).asnumpy()
print(frames.shape, (hwm() - base) / 1024)
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--peak4k", action="store_true")
    parser.add_argument("--no-throughput", dest="throughput", action="store_false")
    args = parser.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    if args.throughput:
        throughput(tmp, args)
    if args.peak4k:
        peak4k(tmp)


def throughput(tmp, args):
    path = make_clip(tmp / "clip720p.mp4", "1280x720", 60.0, 30)
    print(f"clip: 60 s, 1280x720 @ 30 fps, H.264 + AAC, {path.stat().st_size / 2**20:.1f} MB; {FRAMES} frames")
    rows = []
    t_ref = bench_reference_style(path, args.clips)
    rows.append(("reference style (get_batch + 300 s Whisper)", 1, *t_ref))
    for w in (int(x) for x in args.workers.split(",")):
        rows.append(("ours (mixture, prepare_record)", w, *bench_ours(path, args.clips, w)))
    print(f"\nload average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("\n| pipeline | workers | clips/s | frames/s | wall s/clip | CPU s/clip |\n|---|---|---|---|---|---|")
    for name, w, dt, dc in rows:
        print(f"| {name} | {w} | {args.clips / dt:.2f} | {args.clips * FRAMES / dt:.1f} | {dt / args.clips:.2f} "
              f"| {dc / args.clips:.2f} |")


def peak4k(tmp):
    clip = make_clip(tmp / "4k.mp4", "3840x2160", 0, 10, frames=719, audio_on=False)
    print("\n| 4K 719 frames, max_frames 64 | frames kept | peak RSS growth (MB) |\n|---|---|---|")
    for how in ("ours", "full-size"):
        out = subprocess.run([sys.executable, "-c", _PEAK, str(clip), how], check=True, capture_output=True,
                             text=True).stdout.strip()
        shape, mb = out.rsplit(" ", 1)
        print(f"| {how} | {shape} | {float(mb):.0f} |")


if __name__ == "__main__":
    main()
