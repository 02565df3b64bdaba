"""Decode throughput: omni_jax.rollout.generate vs transformers generate, same ~100M text config, CPU.

    python benchmarks/bench_decode.py [--batch 8] [--prompt 64] [--new 128]
    OMNI_JAX_KERNEL_CXXFLAGS=-march=haswell python benchmarks/bench_decode.py   # the AVX2-only build

Same weights, same prompts, greedy, EOS disabled so both decode exactly --new tokens per row.
Also prints the weight-bytes / memory-bandwidth floor measured on this machine (a streaming read,
on every core, of a buffer the size of the weights a decode step touches), and the time of one
step's weight matmuls alone in jax and in torch (what bounds both systems here).
"""

from __future__ import annotations

import argparse
import os
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


def matmul_seconds(shapes, batch: int, repeat: int = 20) -> tuple[float, float, float | None]:
    """One decode step's weight matmuls alone ([batch, k] @ [k, n] for each (k, n, count)), each matrix
    timed on its own, repeatedly (so cache-warm where it fits the last-level cache): (XLA's dot,
    torch, omni_jax's matrix kernel on packed weights or None where it does not build) s."""
    import jax
    import jax.numpy as jnp
    import torch

    from omni_jax.kernels import cpu_gemv

    rng = np.random.default_rng(0)
    out = []
    for lib in ("jax", "torch", "kernel"):
        if lib == "kernel" and not cpu_gemv.available():
            out.append(None)
            continue
        total = 0.0
        for k, n, count in shapes:
            x, w = rng.standard_normal((batch, k), np.float32), rng.standard_normal((k, n), np.float32)
            if lib == "jax":
                f, x, w = jax.jit(jnp.matmul), jnp.asarray(x), jnp.asarray(w)
                call = lambda: f(x, w).block_until_ready()  # noqa: E731
            elif lib == "kernel":
                f, x, w = jax.jit(cpu_gemv.matmul), jnp.asarray(x), jax.jit(cpu_gemv.pack)(jnp.asarray(w))
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
    return out[0], out[1], out[2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--new_short", type=int, default=16,
                    help="a second, shorter run of each system: (time(new) - time(new_short)) / (new - new_short) "
                         "is the decode step alone (prefill and per-call costs cancel)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each system (median reported)")
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

    from omni_jax.kernels import cpu_gemv

    def run_ours(kernel, new=args.new):
        out = generate(ours, dict(input_ids=ids, attention_mask=mask), max_new_tokens=new, temperature=0.0,
                       cpu_decode_kernel=kernel)
        return np.asarray(jax.block_until_ready(out.tokens))

    def timed(fn, *a):
        fn(*a)  # compile / warm up
        times, result = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = fn(*a)
            times.append(time.perf_counter() - t0)
        return float(np.median(times)), result

    kernel = args.dtype == "float32" and cpu_gemv.available()  # timed wherever it builds
    default_kernel = cpu_gemv.usable([jax.devices()[0]], args.dtype)
    xla_s, xla_tokens = timed(run_ours, False)
    ours_s, ours_tokens = timed(run_ours, True) if kernel else (xla_s, xla_tokens)
    xla_short, _ = timed(run_ours, False, args.new_short)
    ours_short, _ = timed(run_ours, True, args.new_short) if kernel else (xla_short, None)

    t_ids, t_mask = torch.tensor(ids), torch.tensor(mask)

    def run_hf(new=args.new):
        with torch.no_grad():
            return hf.generate(input_ids=t_ids, attention_mask=t_mask, max_new_tokens=new, min_new_tokens=new,
                               do_sample=False, eos_token_id=None, pad_token_id=0)[:, args.prompt:].numpy()

    hf_s, hf_tokens = timed(run_hf)
    hf_short, _ = timed(run_hf, args.new_short)

    decode_params = sum(p.numel() for n, p in hf.named_parameters()
                        if n.startswith(("model.layers", "model.norm", "lm_head")))
    itemsize = 2 if args.dtype == "bfloat16" else 4
    floor_step = bandwidth_floor(decode_params * itemsize)
    n_tok = args.batch * args.new
    agree = float((ours_tokens == hf_tokens).mean())
    agree_xla = float((xla_tokens == hf_tokens).mean())
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}; {args.dtype}")
    if kernel:
        cal = cpu_gemv.calibration() if args.dtype == "float32" else None
        print(f"CPU decode kernel build: {' '.join(cpu_gemv.FLAGS[:2])} {os.environ.get('OMNI_JAX_KERNEL_CXXFLAGS', '')}; register tile "
              f"{cpu_gemv.tile_shape()[0]} floats x {cpu_gemv.tile_shape()[1]} rows; calibration: products "
              f"{cal['kernel_s'] * 1e3:.2f} ms vs XLA's dot {cal['xla_s'] * 1e3:.2f} ms; the default decodes with "
              f"{'the kernel' if default_kernel else 'XLA' + chr(39) + 's dot'}")
    print(f"batch {args.batch}, prompt {args.prompt}, {args.new} new tokens; weights read per step "
          f"{decode_params * itemsize / 1e6:.0f} MB")
    print("| system | seconds | tokens/s | vs transformers |")
    print("|---|---|---|---|")
    print(f"| transformers generate (greedy) | {hf_s:.2f} | {n_tok / hf_s:,.0f} | 1.00x |")
    print(f"| omni_jax generate, XLA's dot (cpu_decode_kernel=False) | {xla_s:.2f} | {n_tok / xla_s:,.0f} | "
          f"{hf_s / xla_s:.2f}x |")
    if kernel:
        print(f"| omni_jax generate, fused CPU decode kernel (cpu_decode_kernel=True) | {ours_s:.2f} | "
              f"{n_tok / ours_s:,.0f} | {hf_s / ours_s:.2f}x |")
    else:
        print(f"| omni_jax generate, fused CPU decode kernel (unavailable: {cpu_gemv.build_error()}) | | | |")
    print(f"| weight-bytes / bandwidth floor | {floor_step * args.new:.2f} | {n_tok / (floor_step * args.new):,.0f} | "
          f"{hf_s / (floor_step * args.new):.2f}x |")
    steps = args.new - args.new_short
    step = {name: (long - short) / steps for name, long, short in
            (("hf", hf_s, hf_short), ("xla", xla_s, xla_short), ("ours", ours_s, ours_short))}
    print(f"decode step alone ((time({args.new}) - time({args.new_short})) / {steps}): transformers "
          f"{step['hf'] * 1e3:.1f} ms ({args.batch / step['hf']:,.0f} tok/s); omni_jax, XLA's dot {step['xla'] * 1e3:.1f} "
          f"ms ({step['hf'] / step['xla']:.2f}x); the kernel {step['ours'] * 1e3:.1f} ms "
          f"({step['hf'] / step['ours']:.2f}x); floor {floor_step * 1e3:.1f} ms ({step['hf'] / floor_step:.2f}x)")
    print(f"per call besides the steps (prefill, packing): transformers {(hf_s - args.new * step['hf']) * 1e3:.0f} ms, "
          f"omni_jax XLA's dot {(xla_s - args.new * step['xla']) * 1e3:.0f} ms, kernel "
          f"{(ours_s - args.new * step['ours']) * 1e3:.0f} ms")
    print(f"greedy tokens identical to transformers: {agree:.1%} (kernel), {agree_xla:.1%} (XLA's dot); "
          f"median of {args.repeats} timed runs each")
    t = config["text_config"]
    d, f, v = t["hidden_size"], t["intermediate_size"], t["vocab_size"]
    kv = t["num_key_value_heads"] * d // t["num_attention_heads"]
    layers = t["num_hidden_layers"]
    shapes = [(d, d, 2 * layers), (d, kv, 2 * layers), (d, f, 2 * layers), (f, d, layers), (d, v, 1)]
    jax_mm, torch_mm, kernel_mm = matmul_seconds(shapes, args.batch)
    print(f"one step's weight matmuls alone ([{args.batch}, k] @ [k, n], one jitted call each, repeated, summed; "
          "cache-warm: a matrix read again and again stays in L3 where it fits): "
          f"XLA's dot {jax_mm * 1e3:.1f} ms, torch {torch_mm * 1e3:.1f} ms"
          + (f", CPU decode kernel {kernel_mm * 1e3:.1f} ms" if kernel_mm is not None else "")
          + f"; decode step: omni_jax {ours_s / args.new * 1e3:.1f} ms (XLA's dot {xla_s / args.new * 1e3:.1f} ms), "
          f"transformers {hf_s / args.new * 1e3:.1f} ms, floor {floor_step * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
