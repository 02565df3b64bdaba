"""On a GPU: decode step time against its bandwidth floor, and train-step MFU.

    python benchmarks/bench_gpu.py                # 1.5B-size text decoder (Qwen2.5-1.5B widths), bf16
    python benchmarks/bench_gpu.py --size tiny    # a seconds-long smoke run (any machine, CPU too)

On an H100 / H200: both parts use the product's own code,
`omni_jax.rollout.generate` and the GRPO train step (`grpo.step.build_train_step`), on a randomly
initialised Thinker whose text decoder has the named size and whose towers are minimal (the
towers do not run in either part: decode is text only, and the train step takes prompt
embeddings, as the trainer does).

Decode: per-token step time = (time for `--new` tokens − time for `--new_short` tokens) /
(difference), so the prefill cancels out. Floor = bytes one step must read (the text weights +
the KV cache at its mean length) / HBM bandwidth, both the chip's specification and a measured
streaming read. Train: one GRPO step (forward + backward + AdamW) on `--rows` rows of `--prompt`
prompt + `--completion` completion tokens; MFU = 3 × forward matmul FLOPs of the text decoder per
token × tokens / step time / peak bf16 FLOP/s; also the FLOPs counted on the step's jaxpr
(attention and recomputation included).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, text_only_config  # noqa: E402

# Text decoder widths: Qwen2.5-1.5B's (28 layers, 1536 wide, tied embeddings); "tiny" for smoke runs.
SIZES = {
    "1.5b": dict(vocab=151936, hidden=1536, intermediate=8960, layers=28, heads=12, kv_heads=2,
                 mrope_section=[16, 24, 24], tie=True),
    "tiny": dict(vocab=512, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, mrope_section=[2, 3, 3],
                 tie=True),
}
# HBM bandwidth per device (bytes/s), from the vendors' specification sheets (SXM parts).
BANDWIDTH = {"NVIDIA H100 80GB HBM3": 3.35e12, "NVIDIA H200": 4.8e12}


def measured_bandwidth(nbytes: int) -> float:
    """Bytes/s of a jitted sum over a device buffer of `nbytes` (best of 5)."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((nbytes // 4,), jnp.float32)
    f = jax.jit(jnp.sum)
    f(x).block_until_ready()
    best = min(_timed(lambda: f(x).block_until_ready()) for _ in range(5))
    return nbytes / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_decode(model, args, batch: int) -> dict:
    import jax

    from omni_jax.rollout import generate

    cfg = model.cfg.text
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size - 8, size=(batch, args.decode_prompt))
    inputs = dict(input_ids=ids, attention_mask=np.ones_like(ids))

    def run(new):
        out = generate(model, inputs, max_new_tokens=new, temperature=0.0)
        return jax.block_until_ready(out.tokens)

    seconds = {}
    for new in (args.new_short, args.new):
        run(new)  # compile
        seconds[new] = statistics.median(_timed(lambda: run(new)) for _ in range(3))
    step = (seconds[args.new] - seconds[args.new_short]) / (args.new - args.new_short)
    itemsize = np.dtype(model.cfg.dtype).itemsize
    t = cfg
    head = t.kv_head_dim
    weights = itemsize * (t.num_hidden_layers * (t.hidden_size * (t.num_attention_heads + 2 * t.num_key_value_heads)
                                                 * head + t.num_attention_heads * head * t.hidden_size
                                                 + 3 * t.hidden_size * t.intermediate_size + 2 * t.hidden_size)
                          + t.hidden_size * t.vocab_size)
    mean_len = args.decode_prompt + (args.new + args.new_short) / 2
    kv = itemsize * 2 * t.num_hidden_layers * batch * mean_len * t.num_key_value_heads * head
    kind = jax.devices()[0].device_kind
    spec = BANDWIDTH.get(kind)
    measured = measured_bandwidth(min(int(weights + kv), 2 << 30))
    return {"batch": batch, "prompt": args.decode_prompt, "step_s": step,
            "tokens_per_s": batch / step, "bytes_per_step": weights + kv,
            "floor_spec_s": (weights + kv) / spec if spec else None, "floor_measured_s": (weights + kv) / measured,
            "measured_bandwidth": measured}


def bench_train(model, args) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from omni_jax.aot.flops import jaxpr_flops
    from omni_jax.grpo.logprobs import Sequences
    from omni_jax.grpo.loss import LossConfig
    from omni_jax.grpo.step import GRPOBatch, StepConfig, TrainState, build_train_step, make_optimizer, \
        trainable_filter
    from omni_jax.chips import PEAK_FLOPS
    from omni_jax.grpo.trainer import _model_flops_per_token

    cfg = model.cfg
    n, p, m = args.rows, args.prompt, args.completion
    rng = np.random.default_rng(1)
    seqs = Sequences(
        prompt_embeds=jnp.asarray(rng.standard_normal((n, p, cfg.text.hidden_size)) * 0.02, jnp.dtype(cfg.dtype)),
        prompt_positions=jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (3, n, p)),
        prompt_mask=jnp.ones((n, p), bool),
        completions=jnp.asarray(rng.integers(0, cfg.text.vocab_size - 8, (n, m)), jnp.int32),
        completion_mask=jnp.ones((n, m), bool),
        next_position=jnp.full((n,), p, jnp.int32))
    batch = GRPOBatch(seqs, jnp.asarray(rng.standard_normal(n), jnp.float32), old_logp=None, ref_logp=None)
    graphdef, params, frozen = nnx.split(model, trainable_filter(), ...)
    opt = make_optimizer(learning_rate=1e-6, total_steps=100)
    state = TrainState(jnp.int32(0), params, jax.jit(opt.init)(params), jnp.int32(0))
    step_cfg = StepConfig(LossConfig(beta=0.0), args.grad_accum, 100, 1.0)
    fn = jax.jit(build_train_step(graphdef, step_cfg, opt), donate_argnums=0)
    counted = jaxpr_flops(fn.trace(state, frozen, batch).jaxpr)
    state, metrics = fn(state, frozen, batch)  # compile
    jax.block_until_ready(metrics)
    times = []
    for _ in range(args.train_steps):
        t0 = time.perf_counter()
        state, metrics = fn(state, frozen, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    model_flops = 3 * _model_flops_per_token(cfg) * n * (p + m)
    peak = PEAK_FLOPS.get(jax.devices()[0].device_kind)
    return {"rows": n, "prompt": p, "completion": m, "grad_accum": args.grad_accum, "step_s": sec,
            "model_flops": model_flops, "counted_flops": counted, "model_tflops_per_s": model_flops / sec / 1e12,
            "mfu": model_flops / sec / peak if peak else None, "hfu": counted / sec / peak if peak else None,
            "peak_flops": peak}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=sorted(SIZES), default="1.5b")
    ap.add_argument("--dtype", default="bfloat16", help="compute dtype")
    ap.add_argument("--param_dtype", default="float32", help="master weights (decode reads them cast)")
    ap.add_argument("--decode_batch", default="8,64",
                    help="comma-separated prompt batch sizes, one decode row each (64 = the rollout's 8 x 8)")
    ap.add_argument("--decode_prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--new_short", type=int, default=32)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--completion", type=int, default=512)
    ap.add_argument("--grad_accum", type=int, default=1)
    ap.add_argument("--train_steps", type=int, default=5)
    ap.add_argument("--remat", default="full", choices=["none", "full", "dots"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import jax
    from flax import nnx

    from omni_jax.model import Thinker, from_hf_dict

    def build(dtype, param_dtype, remat):
        cfg = from_hf_dict(text_only_config(**SIZES[args.size]), dtype=dtype, param_dtype=param_dtype, remat=remat)
        return Thinker(cfg, rngs=nnx.Rngs(0))

    # Decode reads weights stored in the compute dtype (as a rollout copy would be); train keeps
    # float32 master weights and computes in bfloat16, as the stage-4 config does.
    decode_model = build(args.dtype, args.dtype, "none")
    decode = []
    for b in str(args.decode_batch).split(","):
        decode.append(bench_decode(decode_model, args, int(b)))
        print("decode row:", json.dumps(decode[-1]), file=sys.stderr, flush=True)  # kept if a later part fails
    del decode_model
    train = bench_train(build(args.dtype, args.param_dtype, args.remat), args)
    out = {"machine": machine(), "device": jax.devices()[0].device_kind, "size": args.size, "decode": decode,
           "train": train}
    if args.json:
        print(json.dumps(out))
        return out
    print(f"machine: {out['machine']}; {args.size} text decoder, compute {args.dtype}")
    for d in decode:
        floor = d["floor_spec_s"]
        print(f"decode, batch {d['batch']}, prompt {d['prompt']}: {d['step_s'] * 1e3:.2f} ms per step "
          f"({d['tokens_per_s']:,.0f} tok/s); bytes per step {d['bytes_per_step'] / 1e9:.2f} GB; floor "
              + (f"{floor * 1e3:.2f} ms at the spec bandwidth ({d['step_s'] / floor:.2f}x), " if floor else "")
              + f"{d['floor_measured_s'] * 1e3:.2f} ms at the measured {d['measured_bandwidth'] / 1e12:.2f} TB/s "
              f"({d['step_s'] / d['floor_measured_s']:.2f}x)")
    t = train
    print(f"train step, {t['rows']} rows x ({t['prompt']} + {t['completion']}) tokens, remat {args.remat}: "
          f"{t['step_s']:.3f} s, {t['model_tflops_per_s']:.1f} model TFLOP/s"
          + (f", MFU {t['mfu']:.1%} (counted FLOPs: {t['hfu']:.1%}) of {t['peak_flops'] / 1e12:.0f} TFLOP/s"
             if t["mfu"] else ", MFU: peak unknown for this device"))
    return out


if __name__ == "__main__":
    main()
