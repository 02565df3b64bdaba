"""An IntentBench-shaped benchmark of synthetic questions: `IntentBench/qa.json` + `IntentBench/videos/*.mp4`.

    python -m omni_jax.eval.synthetic_bench --out /tmp/synth_eval --n 50
    python -m omni_jax.eval --ckpt workdir/default/checkpoints@0 --ckpt workdir/default/checkpoints \\
        --bench intentbench --data_dir /tmp/synth_eval --out /tmp/synth_eval/results

The questions are those of the default training data (`omni_jax.data.synthetic`) drawn with another
seed (1000 by default; training draws seed 0), so none of them was trained on. Each clip is encoded
as a real H.264 + AAC mp4 with ffmpeg (the imageio-ffmpeg binary, else `ffmpeg` on PATH) and read
back through the same decoders as a real benchmark. `Type` is the question's kind (colour,
direction, count, pitch, beeps), IntentBench's category field.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import tempfile
import wave

import numpy as np

from omni_jax.data import synthetic

HELD_OUT_SEED = 1000


def _ffmpeg() -> str:
    try:
        import imageio_ffmpeg  # optional: ships an ffmpeg binary (requirements-test.txt)

        return imageio_ffmpeg.get_ffmpeg_exe()
    except ImportError:
        exe = shutil.which("ffmpeg")
        if exe is None:
            raise RuntimeError("writing mp4 files needs ffmpeg: pip install imageio-ffmpeg, or put ffmpeg on PATH")
        return exe


def write_mp4(path, frames: np.ndarray, fps: float, audio: np.ndarray | None = None, sampling_rate: int = 16000):
    """Encode uint8[T, H, W, 3] frames (and a mono float waveform) as H.264 (+ AAC) mp4."""
    t, h, w, _ = frames.shape
    with tempfile.TemporaryDirectory() as tmp:
        args = [_ffmpeg(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                "-r", str(fps), "-i", "-"]
        if audio is not None:
            wav = pathlib.Path(tmp) / "a.wav"
            with wave.open(str(wav), "wb") as f:
                f.setnchannels(1)
                f.setsampwidth(2)
                f.setframerate(sampling_rate)
                f.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
            args += ["-i", str(wav), "-c:a", "aac", "-shortest"]
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)]
        subprocess.run(args, input=np.ascontiguousarray(frames, np.uint8).tobytes(), check=True)
    return pathlib.Path(path)


def write_bench(root, n: int = 50, seed: int = HELD_OUT_SEED, *, folder: str = "IntentBench",
                with_audio: bool = True) -> pathlib.Path:
    """Write `n` synthetic questions under `root/folder` in IntentBench's layout; returns qa.json's path."""
    base = pathlib.Path(root) / folder
    (base / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rec = synthetic.make_record(i, seed)
        name = f"{rec['id']}.mp4"
        if not (base / "videos" / name).exists():
            write_mp4(base / "videos" / name, rec["video"], rec["video_fps"], rec["audio"] if with_audio else None)
        rows.append({"qid": rec["id"], "video": name, "data_type": "video", "problem": rec["problem"],
                     "problem_type": rec["problem_type"], "options": rec["options"],
                     "solution": f"<answer>{rec['answer']}</answer>",
                     "Type": synthetic.QUESTION_KINDS[i % len(synthetic.QUESTION_KINDS)]})
    qa = base / "qa.json"
    qa.write_text(json.dumps(rows, indent=1) + "\n")
    return qa


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m omni_jax.eval.synthetic_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="root folder (IntentBench/ is written under it)")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    args = ap.parse_args(argv)
    print(write_bench(args.out, args.n, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
