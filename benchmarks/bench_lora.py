"""A LoRA GRPO step next to a full fine-tuning step on the same model, on CPU: time and memory.

    python -m benchmarks.bench_lora                     # the default's tiny Thinker
    python -m benchmarks.bench_lora --model 100m        # a ~110M text decoder (the gap in bytes is the point)

Both runs take the same rows (prompts × candidates sampled once from the base model) and the
same jitted pieces the trainer uses: the rollout (`generate`, base + adapters unmerged for LoRA),
the reference log-prob pass (β > 0: a frozen copy for full fine-tuning, the base graph on the
frozen weights for LoRA) and the donated train step. Prints the median seconds of each piece and
the bytes the run keeps resident: trainable parameters, AdamW state, the reference copy, frozen
weights.
"""

from __future__ import annotations

import argparse
import statistics
import time


def _bytes(tree) -> int:
    import jax

    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def build(model_name: str, seed: int = 0):
    from flax import nnx

    from benchmarks.common import text_100m_config
    from omni_jax.model import Thinker, from_hf_dict, presets
    from omni_jax.tokenizer import load_tokenizer

    tok = load_tokenizer("tiny")
    if model_name == "tiny":
        cfg = presets.architecture_config("tiny", tok, layer_loop="unrolled")
    else:
        cfg = from_hf_dict(text_100m_config(vocab=-(-len(tok) // 128) * 128), layer_loop="unrolled")
    return Thinker(cfg, rngs=nnx.Rngs(seed))


def prepare(model, mode: str, args):
    """(one_step(i), summary()) of a full ("full") or LoRA ("lora") GRPO run on its own copy of `model`."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from omni_jax.grpo.advantages import group_advantages
    from omni_jax.grpo.logprobs import Sequences
    from omni_jax.grpo.loss import LossConfig
    from omni_jax.grpo.policy import reference_params
    from omni_jax.grpo.step import GRPOBatch, StepConfig, TrainState, init_opt_state, jit_logprob_fn, \
        jit_train_step, make_optimizer, trainable_filter
    from omni_jax.model import lora, prepare_inputs
    from omni_jax.rollout import generate

    model = nnx.merge(*nnx.split(model))
    model = nnx.merge(*jax.tree.map(jnp.copy, nnx.split(model)))  # its own buffers: the step donates
    if mode == "lora":
        lora.add_adapters(model, lora.LoRAConfig(rank=args.rank, alpha=2.0 * args.rank))
    graphdef, params, frozen = nnx.split(model, trainable_filter(adapters=mode == "lora"), ...)
    opt = make_optimizer(learning_rate=1e-4, total_steps=100, schedule="constant")
    state = TrainState(jnp.int32(0), params, init_opt_state(opt, params), jnp.int32(0))
    step_cfg = StepConfig(LossConfig(beta=0.04), grad_accum=1, total_steps=100, temperature=1.0, logits_chunk=256,
                          prefix_share=args.generations)
    train_step = jit_train_step(graphdef, step_cfg, opt)
    if mode == "lora":
        reference, ref_rest = lora.base_state(frozen), nnx.State({})
        ref_fn = jit_logprob_fn(lora.base_graphdef(model), step_cfg)
    else:
        reference, ref_rest = reference_params(params, "float32"), frozen
        ref_fn = jit_logprob_fn(graphdef, step_cfg)

    rng = np.random.default_rng(0)
    ids = rng.integers(1, 1000, (args.prompts, args.prompt_tokens))
    inputs = prepare_inputs(model.cfg, input_ids=ids, attention_mask=np.ones(ids.shape))
    g = args.generations
    times = {"rollout": [], "reference": [], "update": []}
    holder = {"state": state}

    def one_step(i: int) -> None:
        t0 = time.perf_counter()
        state = holder["state"]
        out = generate(nnx.merge(graphdef, state.params, frozen), inputs, num_samples=g, max_new_tokens=args.new,
                       temperature=1.0, seed=i, cpu_decode_kernel=False)
        jax.block_until_ready(out.tokens)
        t1 = time.perf_counter()
        seqs = Sequences(jnp.repeat(out.prompt_embeds, g, 0), jnp.repeat(jnp.asarray(inputs.position_ids), g, 1),
                         jnp.repeat(jnp.asarray(inputs.attention_mask), g, 0), out.tokens, out.mask,
                         jnp.repeat(jnp.asarray(inputs.position_ids).max(axis=(0, 2)) + 1, g))
        ref_logp = jax.block_until_ready(ref_fn(reference, ref_rest, seqs))
        t2 = time.perf_counter()
        reward = jnp.asarray((np.asarray(out.tokens) % 7 == 0).mean(1), jnp.float32)
        state, metrics = train_step(state, frozen, GRPOBatch(seqs, group_advantages(reward, g), None, ref_logp))
        jax.block_until_ready(metrics)
        holder["state"] = state
        t3 = time.perf_counter()
        if i:  # the first step compiles
            for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
                times[k].append(v)

    def summary() -> dict:
        state = holder["state"]
        return {"seconds": {k: statistics.median(v) for k, v in times.items()}, "trainable": _bytes(state.params),
                "optimizer": _bytes(state.opt_state), "reference": 0 if mode == "lora" else _bytes(reference),
                "frozen": _bytes(frozen), "trainable_count": sum(x.size for x in jax.tree.leaves(state.params))}

    return one_step, summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("tiny", "100m"), default="tiny")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--prompt_tokens", type=int, default=96)
    ap.add_argument("--new", type=int, default=48)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args(argv)

    from benchmarks.common import machine

    model = build(args.model)
    runs = {mode: prepare(model, mode, args) for mode in ("full", "lora")}
    for i in range(args.steps + 1):  # the two alternate step by step: the same machine load for both
        for one_step, _ in runs.values():
            one_step(i)
    full, lora_run = (runs[m][1]() for m in ("full", "lora"))
    mib = lambda b: f"{b / 2**20:.2f}"  # noqa: E731
    print(f"machine: {machine()}")
    print(f"model {args.model}; {args.prompts} prompts × {args.generations} candidates, prompt {args.prompt_tokens} "
          f"tokens, {args.new} new tokens; LoRA rank {args.rank} on q,k,v,o,gate,up,down; β = 0.04; "
          f"median of {args.steps} steps after a compiling one, full and LoRA steps alternating")
    print("| | full fine-tuning | LoRA | LoRA / full |")
    print("|---|---|---|---|")
    for k in ("rollout", "reference", "update"):
        a, b = full["seconds"][k], lora_run["seconds"][k]
        print(f"| {k} s | {a:.3f} | {b:.3f} | {b / a:.2f} |")
    a, b = sum(full["seconds"].values()), sum(lora_run["seconds"].values())
    print(f"| step s | {a:.3f} | {b:.3f} | {b / a:.2f} |")
    print(f"| trainable parameters | {full['trainable_count']:,} | {lora_run['trainable_count']:,} | "
          f"{lora_run['trainable_count'] / full['trainable_count']:.4f} |")
    for k in ("trainable", "optimizer", "reference", "frozen"):
        a, b = full[k], lora_run[k]
        print(f"| {k} MiB | {mib(a)} | {mib(b)} | {(b / a if a else float('nan')):.3f} |")
    a = sum(full[k] for k in ("trainable", "optimizer", "reference", "frozen"))
    b = sum(lora_run[k] for k in ("trainable", "optimizer", "reference", "frozen"))
    print(f"| resident MiB | {mib(a)} | {mib(b)} | {b / a:.3f} |")


if __name__ == "__main__":
    main()
