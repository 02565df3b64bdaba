"""Decode throughput: omni_jax.rollout.generate vs transformers generate, same ~100M text config, CPU.

    python benchmarks/bench_decode.py [--batch 8] [--prompt 64] [--new 128]

Same weights, same prompts, greedy, EOS disabled so both decode exactly --new tokens per row.
Also prints the weight-bytes / memory-bandwidth floor measured on this machine (a streaming read,
on every core, of a buffer the size of the weights a decode step touches), and the time of one
step's weight matmuls alone in jax and in torch (what bounds both systems here).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import build_hf, machine, text_100m_config  # noqa: E402


def bandwidth_floor(nbytes: int) -> float:
    """Seconds to stream `nbytes` once with every core reading its share (best of 5), NumPy threads."""
    import concurrent.futures
    import os

    workers = os.cpu_count() or 1
    parts = np.array_split(np.ones(nbytes // 4, np.float32), workers)
    best = 1e9
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for _ in range(5):
            t0 = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - t0)
    return best


def matmul_seconds(shapes, batch: int, repeat: int = 20) -> tuple[float, float]:
    """One decode step's weight matmuls alone ([batch, k] @ [k, n] for each (k, n, count)): (jax, torch) s."""
    import jax
    import jax.numpy as jnp
    import torch

    rng = np.random.default_rng(0)
    out = []
    for lib in ("jax", "torch"):
        total = 0.0
        for k, n, count in shapes:
            x, w = rng.standard_normal((batch, k), np.float32), rng.standard_normal((k, n), np.float32)
            if lib == "jax":
                f, x, w = jax.jit(jnp.matmul), jnp.asarray(x), jnp.asarray(w)
                call = lambda: f(x, w).block_until_ready()  # noqa: E731
            else:
                x, w = torch.from_numpy(x), torch.from_numpy(w)
                call = lambda: torch.matmul(x, w)  # noqa: E731
            call()
            t0 = time.perf_counter()
            for _ in range(repeat):
                call()
            total += (time.perf_counter() - t0) / repeat * count
        out.append(total)
    return out[0], out[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()

    import jax
    import torch

    import omni_jax
    from omni_jax.rollout import generate

    config = text_100m_config()
    hf = build_hf(config)
    if args.dtype == "bfloat16":
        hf = hf.to(torch.bfloat16)
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = omni_jax.load_thinker(d, dtype=args.dtype, progress=False)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, config["audio_token_index"], size=(args.batch, args.prompt))
    mask = np.ones_like(ids)

    def run_ours():
        out = generate(ours, dict(input_ids=ids, attention_mask=mask), max_new_tokens=args.new, temperature=0.0)
        return np.asarray(jax.block_until_ready(out.tokens))

    run_ours()  # compile
    t0 = time.perf_counter()
    ours_tokens = run_ours()
    ours_s = time.perf_counter() - t0

    t_ids, t_mask = torch.tensor(ids), torch.tensor(mask)

    def run_hf():
        with torch.no_grad():
            return hf.generate(input_ids=t_ids, attention_mask=t_mask, max_new_tokens=args.new, min_new_tokens=args.new,
                               do_sample=False, eos_token_id=None, pad_token_id=0)[:, args.prompt:].numpy()

    run_hf()  # warm up
    t0 = time.perf_counter()
    hf_tokens = run_hf()
    hf_s = time.perf_counter() - t0

    decode_params = sum(p.numel() for n, p in hf.named_parameters()
                        if n.startswith(("model.layers", "model.norm", "lm_head")))
    itemsize = 2 if args.dtype == "bfloat16" else 4
    floor_step = bandwidth_floor(decode_params * itemsize)
    n_tok = args.batch * args.new
    agree = float((ours_tokens == hf_tokens).mean())
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}; {args.dtype}")
    print(f"batch {args.batch}, prompt {args.prompt}, {args.new} new tokens; weights read per step "
          f"{decode_params * itemsize / 1e6:.0f} MB")
    print("| system | seconds | tokens/s | vs transformers |")
    print("|---|---|---|---|")
    print(f"| transformers generate (greedy) | {hf_s:.2f} | {n_tok / hf_s:,.0f} | 1.00x |")
    print(f"| omni_jax generate (greedy) | {ours_s:.2f} | {n_tok / ours_s:,.0f} | {hf_s / ours_s:.2f}x |")
    print(f"| weight-bytes / bandwidth floor | {floor_step * args.new:.2f} | {n_tok / (floor_step * args.new):,.0f} | "
          f"{hf_s / (floor_step * args.new):.2f}x |")
    print(f"greedy tokens identical: {agree:.1%}")
    t = config["text_config"]
    d, f, v = t["hidden_size"], t["intermediate_size"], t["vocab_size"]
    kv = t["num_key_value_heads"] * d // t["num_attention_heads"]
    layers = t["num_hidden_layers"]
    shapes = [(d, d, 2 * layers), (d, kv, 2 * layers), (d, f, 2 * layers), (f, d, layers), (d, v, 1)]
    jax_mm, torch_mm = matmul_seconds(shapes, args.batch)
    print(f"one step's weight matmuls alone ([{args.batch}, k] @ [k, n], one jitted dot each, summed): "
          f"jax {jax_mm * 1e3:.1f} ms, torch {torch_mm * 1e3:.1f} ms; decode step: omni_jax "
          f"{ours_s / args.new * 1e3:.1f} ms, transformers {hf_s / args.new * 1e3:.1f} ms, "
          f"floor {floor_step * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
