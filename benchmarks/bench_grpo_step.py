"""A whole GRPO step: omni_jax vs TRL's GRPOTrainer, same tiny model, batch and reward, CPU.

    pip install -r benchmarks/requirements-bench.txt   # trl, for this benchmark only
    python benchmarks/bench_grpo_step.py [--prompts 8] [--generations 8] [--new 64] [--steps 6]

Both sides: the tiny default's text decoder (same weights: a Qwen2 causal LM for TRL, the same
tensors inside a Thinker for omni_jax), `prompts` text prompts per step, `generations` samples
each, `new` completion tokens (EOS disabled on both sides so lengths match), temperature 1, the
same reward (people_focus of the whole completion, the plain-Python reference), β = 0, one
optimizer step per generation round. A step = sampling + reward + advantages + update. The first
step (compilation / warm-up) is excluded from the median. omni_jax runs as the trainer does (a
question's candidates share one prompt pass in the update) and once more with a prompt pass per
row (grpo.prefix_share=False), the way TRL computes it.
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


def _configs(tok):
    from omni_jax.model.presets import tiny_config_dict
    from omni_jax.tokenizer import special_token_ids

    thinker = tiny_config_dict(len(tok), special_token_ids(tok))
    t = thinker["text_config"]
    qwen2 = dict(vocab_size=t["vocab_size"], hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
                 num_hidden_layers=t["num_hidden_layers"], num_attention_heads=t["num_attention_heads"],
                 num_key_value_heads=t["num_key_value_heads"], rope_theta=t["rope_parameters"]["rope_theta"],
                 max_position_embeddings=t["max_position_embeddings"], tie_word_embeddings=True,
                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return thinker, qwen2


def build_models(tok, workdir: str, seed: int = 0):
    """(HF Qwen2ForCausalLM for TRL, omni_jax Thinker) with identical text weights."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2_5OmniThinkerConfig, \
        Qwen2_5OmniThinkerForConditionalGeneration

    import omni_jax

    thinker_cfg, qwen2_cfg = _configs(tok)
    torch.manual_seed(seed)
    lm = Qwen2ForCausalLM(Qwen2Config(**qwen2_cfg)).eval()
    thinker = Qwen2_5OmniThinkerForConditionalGeneration(
        Qwen2_5OmniThinkerConfig(**{k: v for k, v in thinker_cfg.items() if k != "model_type"}))
    state = {k: v for k, v in lm.state_dict().items() if not k.startswith("lm_head")}
    missing = thinker.load_state_dict(state, strict=False)
    assert not [k for k in missing.missing_keys if k.startswith("model.")], missing.missing_keys
    thinker.save_pretrained(workdir)
    # layer_loop as configs/default.py (the tiny CPU run) sets it.
    return lm.train(), omni_jax.load_thinker(workdir, progress=False, layer_loop="unrolled")


def prompts(tok, n: int, length: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = "the person looks at the man and smiles while the woman talks about the scene".split()
    return [" ".join(rng.choice(words, size=length)) for _ in range(n)]


def run_trl(lm, tok, texts, args) -> list[float]:
    import datasets
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from omni_jax.rewards.people_focus import score_text
    from omni_jax.rewards.config import people_focus_defaults

    pf = people_focus_defaults()
    pf.missing_think = "whole_text"

    def reward(completions, **kw):
        return [score_text(c, pf) for c in completions]

    times = []

    class Clock(TrainerCallback):
        def on_step_begin(self, a, s, c, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, s, c, **kw):
            times.append(time.perf_counter() - self.t0)

    ds = datasets.Dataset.from_dict({"prompt": texts * (args.steps + 2)})
    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(output_dir=out, per_device_train_batch_size=args.prompts * args.generations,
                         num_generations=args.generations, max_completion_length=args.new,
                         temperature=1.0, top_k=0, top_p=1.0, beta=0.0, learning_rate=1e-5, max_steps=args.steps,
                         logging_steps=1, report_to=[], use_cpu=True, bf16=False, save_strategy="no",
                         gradient_accumulation_steps=1, dataloader_num_workers=0,
                         generation_kwargs={"min_new_tokens": args.new})
        trainer = GRPOTrainer(model=lm, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok,
                              callbacks=[Clock()])
        trainer.train()
    return times


def run_ours(model, tok, texts, args, prefix_share: bool = True) -> list[float]:
    import jax
    import jax.numpy as jnp
    import ml_collections
    from flax import nnx

    from omni_jax import parallel
    from omni_jax.grpo import experience, step as step_lib
    from omni_jax.grpo.loss import LossConfig
    from omni_jax.grpo.step import StepConfig, TrainState, build_train_step, make_optimizer, trainable_filter
    from omni_jax.model.inputs import prepare_inputs
    from omni_jax.rewards.config import people_focus_defaults
    from omni_jax.rewards.people_focus import score_text

    pf = people_focus_defaults()
    pf.missing_think = "whole_text"

    def reward_fn(completions, ids, mask, records):
        r = np.asarray([score_text(c, pf) for c in completions], np.float32)
        return {"total": r}, {}

    layout = parallel.Layout(parallel.make_mesh({"data": 1, "fsdp": -1, "tp": 1}))
    graphdef, params, frozen = nnx.split(model, trainable_filter(), ...)
    params = jax.tree.map(jnp.copy, params)  # the step donates its state; the model is run again
    opt = make_optimizer(learning_rate=1e-5, total_steps=args.steps, schedule="linear")
    state = layout.place(TrainState(jnp.int32(0), params, jax.jit(opt.init)(params), jnp.int32(0)))
    frozen = layout.place(frozen)
    # As the trainer sets it (grpo.prefix_share): a question's candidates share one prompt pass.
    share = (step_lib.prefix_share(args.generations, len(texts) * args.generations, 1, jax.device_count())
             if prefix_share else 1)
    step_cfg = StepConfig(LossConfig(beta=0.0), 1, args.steps, 1.0, prefix_share=share)
    step_fn = jax.jit(build_train_step(graphdef, step_cfg, opt),
                      donate_argnums=0, out_shardings=(parallel.shardings_of(state), None))
    enc = tok(texts, padding=True, return_tensors="np")
    inputs = prepare_inputs(model.cfg, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    rollout = ml_collections.ConfigDict(dict(num_generations=args.generations, max_new_tokens=args.new,
                                             temperature=1.0, top_p=1.0, top_k=0, cache_dtype=""))

    class NoEos:  # EOS disabled, as min_new_tokens does on the TRL side
        eos_token_id, pad_token_id = -1, tok.pad_token_id

        @staticmethod
        def batch_decode(rows, **kw):
            return tok.batch_decode(rows, **kw)

    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        policy = nnx.merge(graphdef, state.params, frozen)
        exp = experience.collect(policy, inputs, [{}] * len(texts), rollout_cfg=rollout, scale_rewards="group", tokenizer=NoEos,
                      reward_fn=reward_fn, seed=jax.random.key(i), layout=layout)
        state, metrics = step_fn(state, frozen, exp.batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--prompt_words", type=int, default=48)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--cpu_devices", type=int, default=-1,
                    help="JAX CPU devices for omni_jax (-1: as configs/default.py sets mesh.cpu_devices)")
    args = ap.parse_args()

    import jax
    import torch

    from configs import default
    from omni_jax import config_utils

    cfg = default.get_config()
    if args.cpu_devices >= 0:
        cfg.mesh.cpu_devices = args.cpu_devices
    config_utils.apply_cpu_devices(cfg)

    from benchmarks.common import machine
    from omni_jax.tokenizer import load_tokenizer

    tok = load_tokenizer("tiny")
    texts = prompts(tok, args.prompts, args.prompt_words)
    with tempfile.TemporaryDirectory() as d:
        lm, model = build_models(tok, d)
    ours = run_ours(model, tok, texts, args)
    per_row = run_ours(model, tok, texts, args, prefix_share=False)
    trl_times = run_trl(lm, tok, texts, args)
    import trl

    o, t = statistics.median(ours[1:]), statistics.median(trl_times[1:])
    r = statistics.median(per_row[1:])
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}")
    print(f"tiny text decoder (hidden 128, 3 layers), {args.prompts} prompts × {args.generations} samples, "
          f"{args.new} new tokens, prompts ≈ {len(tok(texts[0]).input_ids)} tokens; median of steps 2..{args.steps}")
    print("| system | s / GRPO step | vs TRL |")
    print("|---|---|---|")
    print(f"| TRL {trl.__version__} GRPOTrainer (torch {torch.__version__}) | {t:.2f} | 1.00x |")
    print(f"| omni_jax, a prompt pass per row (grpo.prefix_share=False) | {r:.2f} | {t / r:.2f}x |")
    print(f"| omni_jax (jitted rollout + step, {jax.device_count()} CPU device(s)) | {o:.2f} | {t / o:.2f}x |")
    print(f"first step (compile / warm-up): omni_jax {ours[0]:.1f} s, TRL {trl_times[0]:.1f} s")


if __name__ == "__main__":
    main()
