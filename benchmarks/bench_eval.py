"""Evaluation throughput (questions/s): `omni_jax.eval` against HumanOmniV2's evaluation loop, CPU.

    python benchmarks/bench_eval.py [--questions 16] [--new 64] [--batch 8] [--ckpt workdir/default/checkpoints]

Same tiny Thinker (the default config's architecture: random weights, or `--ckpt` for a trained
omni_jax checkpoint, exported to HF for transformers), same questions (a synthetic IntentBench-shaped
set of mp4 files), same processor inputs, greedy, `--new` new tokens at most, EOS on.

- HumanOmniV2's loop (`eval/eval_humanomniv2.py`): transformers `generate` one question at a time
  (batch 1 per device), then decode. Only generate + decode are timed: its DataLoader's 8 workers
  prepare the media in parallel, so its media preparation is left out here (to its advantage).
- omni_jax: `omni_jax.eval.runner.evaluate`, timed end to end (media preparation in threads,
  batched generate, scoring, the per-question JSONL), after one warm-up run that compiles
  (the compile-included time is printed too).
Both produce the same completions (greedy parity; the agreement is printed).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402


def random_store(directory: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """A checkpoint store of the default config's tiny Thinker with random weights (norms near 1)."""
    import jax
    from flax import nnx

    from configs import default
    from omni_jax.checkpoint import CheckpointStore, thinker_meta
    from omni_jax.model import presets
    from omni_jax.model.thinker import Thinker
    from omni_jax.tokenizer import load_tokenizer

    cfg = presets.architecture_config("tiny", load_tokenizer("tiny"), layer_loop="unrolled")
    meta = thinker_meta(cfg)
    meta["config"] = default.get_config().to_json_best_effort()
    abstract = nnx.state(nnx.eval_shape(lambda: Thinker(cfg, rngs=nnx.Rngs(0))), nnx.Param).to_pure_dict()
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        names = [str(getattr(k, "key", k)) for k in path]
        is_norm = any("norm" in n or n.startswith("ln_") for n in names)
        base = 1.0 if is_norm and names[-1] == "weight" else 0.0
        return (base + (0.1 if is_norm else 0.08) * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

    store = CheckpointStore(directory, async_save=False)
    store.save(0, params=jax.tree_util.tree_map_with_path(draw, abstract), meta=meta)
    store.close()
    return directory


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--new", type=int, default=64, help="max new tokens per answer")
    ap.add_argument("--batch", type=int, default=8, help="omni_jax questions per generate call")
    ap.add_argument("--ckpt", default=None, help="an omni_jax checkpoint (default: random tiny weights)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each system (median reported)")
    ap.add_argument("--torch_threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from omni_jax.convert.orbax_to_hf import orbax_to_hf
    from omni_jax.eval import checkpoints, datasets, runner, synthetic_bench

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_eval_"))
    ckpt = args.ckpt or str(random_store(tmp / "checkpoints"))
    loaded = checkpoints.open_checkpoint(ckpt, progress=False)
    orbax_to_hf(ckpt, tmp / "hf", step=loaded.step, progress=False)
    hf = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        tmp / "hf", attn_implementation="eager", dtype=torch.float32).eval()
    synthetic_bench.write_bench(tmp / "bench", args.questions)
    items, skipped = datasets.load_bench("intentbench", str(tmp / "bench"))
    assert not skipped, skipped
    tok = loaded.tokenizer

    # HumanOmniV2's loop: one question per generate call, greedy, then decode.
    prepared = []
    for item in items:
        example = runner.prepare_item(item, loaded.data_cfg, tok)
        example.pop("record")
        example.pop("use_audio_in_video")
        prepared.append({k: torch.from_numpy(np.asarray(v, np.int64 if np.asarray(v).dtype.kind == "i" else None))
                         for k, v in example.items()})

    def run_hf():
        outputs = []
        for inputs in prepared:
            with torch.inference_mode():
                out = hf.generate(**inputs, use_audio_in_video=False, max_new_tokens=args.new, do_sample=False,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            outputs.append(tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
        return outputs

    def run_ours():
        out = runner.evaluate(loaded.model, tok, loaded.data_cfg, items, batch_size=args.batch,
                              max_new_tokens=args.new, progress=False,
                              results_path=tempfile.mktemp(suffix=".jsonl", dir=tmp))
        return [r["output"] for r in out.results], out

    t0 = time.perf_counter()
    run_ours()  # compiles
    first = time.perf_counter() - t0
    ours_times, hf_times = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ours_out, out = run_ours()
        ours_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        hf_out = run_hf()
        hf_times.append(time.perf_counter() - t0)
    ours_s, hf_s = statistics.median(ours_times), statistics.median(hf_times)
    n = len(items)
    agree = np.mean([a == b for a, b in zip(ours_out, hf_out)])
    tokens = sum(r["completion_tokens"] for r in out.results)
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}")
    print(f"{n} questions (synthetic IntentBench-shaped mp4 set), tiny Thinker "
          f"({'random weights' if not args.ckpt else args.ckpt}), greedy, at most {args.new} new tokens "
          f"({tokens / n:.1f} generated per question); median of {args.repeats} timed runs")
    print("| system | seconds | questions/s | vs HumanOmniV2's loop |")
    print("|---|---|---|---|")
    print(f"| HumanOmniV2's loop (transformers generate, one question at a time; generate + decode only) | "
          f"{hf_s:.2f} | {n / hf_s:.2f} | 1.00x |")
    print(f"| omni_jax.eval (batch {args.batch}, end to end incl. media preparation and scoring) | {ours_s:.2f} | "
          f"{n / ours_s:.2f} | {hf_s / ours_s:.2f}x |")
    print(f"| omni_jax.eval, first run (compilation included) | {first:.2f} | {n / first:.2f} | "
          f"{hf_s / first:.2f}x |")
    print(f"same completions as transformers: {agree:.0%} of questions")


if __name__ == "__main__":
    main()
