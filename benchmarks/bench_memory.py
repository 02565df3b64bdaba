"""Peak memory of input preparation: a long audio track cut to audio_max_seconds, and a 4K clip's
whole preparation path.

    python benchmarks/bench_memory.py [--minutes 60] [--no-4k]

Each case runs in a fresh process and reports the growth of that process's peak RSS (VmHWM) over
its baseline after the libraries are loaded and a small clip has been prepared once.

1. Audio: a generated `--minutes` long AAC track in an mp4, loaded with `audio_max_seconds` 300.
   Ours (`audio.load_audio`: ffmpeg decodes and keeps only the first 300 s) side by side with
   decord's AudioReader (it decodes the whole track at construction): the previous way
   (`reader[:]`, then the cut) and the decord fallback used when no ffmpeg program exists
   (`reader[:max_samples]`).
2. The whole preparation path of one record (`example.prepare_record` under the recipe's data
   config: video decode and resize to 64 frames, patches, the clip's own audio track, log-mel,
   prompt and tokens) for a 4K (3840x2160) clip of 719 frames at 10 fps with an AAC track.
Needs the ffmpeg binary of imageio-ffmpeg to make the media.
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

REPO = pathlib.Path(__file__).resolve().parents[1]

_CHILD = r"""
import sys, time
import numpy as np


def hwm():  # this process's peak RSS in kB
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])


case, path, small = sys.argv[1], sys.argv[2], sys.argv[3]
from omni_jax.data import audio, config, example, media
import decord

cfg = config.data_defaults()
rec = lambda p: {"id": "x", "source": "bench", "data_type": "video", "video": p, "problem": "What happens?",
                 "problem_type": "multiple choice", "options": ["A. a", "B. b"], "solution": "<answer>A</answer>"}
example.prepare_record(rec(small), cfg)  # libraries loaded, tokenizer cached, threads started
audio.load_audio(small, 16000, 300.0)
base = hwm()
t = time.perf_counter()
if case == "ours":
    out = audio.load_audio(path, 16000, 300.0)
elif case == "decord_whole":  # the previous way: the whole track indexed, then the cut
    r = decord.AudioReader(path, ctx=decord.cpu(0), sample_rate=16000, mono=True)
    out = np.asarray(r[:].asnumpy()[0], np.float32)[: 300 * 16000]
elif case == "decord_fallback":
    out = audio._decode_decord(media.open_media(path), path, 16000, 300 * 16000)
elif case == "prepare":
    out = example.prepare_record(rec(path), cfg)["pixel_values_videos"]
print(tuple(out.shape), (hwm() - base) / 1024, time.perf_counter() - t)
"""


def ffmpeg(*args):
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True)


def child(case, path, small):
    out = subprocess.run([sys.executable, "-c", _CHILD, case, str(path), str(small)], check=True, cwd=REPO,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    shape, mb, seconds = out.rsplit(" ", 2)
    return shape, float(mb), float(seconds)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--no-4k", dest="four_k", action="store_false")
    args = parser.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp())
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    small = tmp / "small.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10", "-f", "lavfi", "-i", "sine=frequency=440",
           "-t", "2", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
           str(small))
    long = tmp / "long.mp4"
    t = time.perf_counter()
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", str(args.minutes * 60), "-c:a", "aac",
           "-b:a", "64k", str(long))
    print(f"track: {args.minutes:g} min AAC 44.1 kHz in mp4, {long.stat().st_size / 2**20:.1f} MB "
          f"(made in {time.perf_counter() - t:.0f} s); audio_max_seconds 300")
    print("\n| reading the track | samples kept | peak RSS growth (MB) | seconds |\n|---|---|---|---|")
    for case in ("ours", "decord_fallback", "decord_whole"):
        shape, mb, s = child(case, long, small)
        print(f"| {case} | {shape} | {mb:.0f} | {s:.1f} |", flush=True)
    if args.four_k:
        clip = tmp / "4k.mp4"
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=3840x2160:rate=10", "-f", "lavfi", "-i",
               "sine=frequency=440:sample_rate=44100", "-frames:v", "719", "-c:v", "libx264", "-preset", "veryfast",
               "-pix_fmt", "yuv420p", "-g", "60", "-c:a", "aac", "-shortest", str(clip))
        shape, mb, s = child("prepare", clip, small)
        print("\n| 4K 719 frames + AAC track, recipe config | patches | peak RSS growth (MB) | seconds |\n|---|---|---|---|")
        print(f"| example.prepare_record (whole path) | {shape} | {mb:.0f} | {s:.1f} |")


if __name__ == "__main__":
    main()
