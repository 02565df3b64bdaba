"""Frame-matching accuracy on synthetic videos whose events happen at known frames.

    python -m benchmarks.timestamps_accuracy                    # known noisy oracle similarities
    python -m benchmarks.timestamps_accuracy --clip /ckpt/clip-vit-base-patch32   # real CLIP on the frames

Each video (`omni_jax.data.synthetic_events`) has `--events` people who each act at one known
frame of `--frames`. Similarities come from the oracle (signal 0.06 at the event's frame, 0.03
one frame off, plus Gaussian noise of each `--noise` std) or from a CLIP directory. For the
monotone DP at each `--lambdas` value and for per-event argmax, prints the share of events placed
on the exact frame and within ±1 frame; writes JSON and a PNG under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
from tqdm import tqdm

from omni_jax.data.synthetic_events import make_event_video, oracle_similarity
from omni_jax.timestamps.match import match

RESULTS = pathlib.Path(__file__).parent / "results"


def score(chosen: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    d = np.abs(chosen - truth)
    return int((d == 0).sum()), int((d <= 1).sum())


def run(videos: int, frames: int, events: int, noises, lambdas, clip=None, seed: int = 0) -> list[dict]:
    methods = [("argmax", 0.0)] + [("dp", lam) for lam in lambdas]
    noise_levels = [None] if clip is not None else list(noises)
    rows = []
    for noise in noise_levels:
        counts = {m: [0, 0] for m in methods}
        total = 0
        rng = np.random.default_rng([seed, 1])
        for i in tqdm(range(videos), desc=f"noise {noise}" if noise is not None else "clip", leave=False, mininterval=2.0):
            video = make_event_video(seed * 1_000_003 + i, num_frames=frames, num_events=events)
            if clip is None:
                sim = oracle_similarity(video, noise, rng)
            else:
                sim = clip.similarity(video.frames, video.descriptions)
            total += events
            for name, lam in methods:
                exact, near = score(match(sim, lam, name), video.event_frames)
                counts[(name, lam)][0] += exact
                counts[(name, lam)][1] += near
        for (name, lam), (exact, near) in counts.items():
            rows.append({"similarity": "clip" if clip is not None else "oracle", "noise": noise, "method": name,
                         "lambda_smooth": lam if name == "dp" else None, "events": total,
                         "exact": exact / total, "within_1": near / total})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| similarity | noise std | method | lambda_smooth | exact | ±1 frame |", "|---|---|---|---|---|---|"]
    for r in rows:
        lam = "–" if r["lambda_smooth"] is None else f"{r['lambda_smooth']:g}"
        noise = "–" if r["noise"] is None else f"{r['noise']:g}"
        lines.append(f"| {r['similarity']} | {noise} | {r['method']} | {lam} | {100 * r['exact']:.1f} % | "
                     f"{100 * r['within_1']:.1f} % |")
    return "\n".join(lines)


def plot(rows: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    keys = sorted({(r["method"], r["lambda_smooth"]) for r in rows}, key=lambda k: (k[0] != "argmax", k[1] or 0))
    for ax, metric, title in ((axes[0], "exact", "exact frame"), (axes[1], "within_1", "within ±1 frame")):
        for method, lam in keys:
            pts = [(r["noise"], r[metric]) for r in rows if (r["method"], r["lambda_smooth"]) == (method, lam)]
            label = "argmax" if method == "argmax" else f"DP λ={lam:g}"
            ax.plot(*zip(*pts), marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel("oracle noise std (signal 0.06)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of events")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=500)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--events", type=int, default=4)
    p.add_argument("--noise", type=float, nargs="+", default=[0.01, 0.02, 0.03, 0.04, 0.06])
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.002, 0.005, 0.01])
    p.add_argument("--clip", default=None, help="HF CLIP directory: real similarities instead of the oracle")
    p.add_argument("--out", default=str(RESULTS / "timestamps_accuracy"))
    args = p.parse_args(argv)
    clip = None
    if args.clip:
        from omni_jax.timestamps.encode import ClipMatcher

        clip = ClipMatcher.load(args.clip)
    rows = run(args.videos, args.frames, args.events, args.noise, args.lambdas, clip)
    print(f"{args.videos} videos × {args.events} events, {args.frames} frames each")
    print(table(rows))
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    if clip is None:
        plot(rows, out.with_suffix(".png"))
        print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
