"""The GRPO training loop: data → rollout → rewards → advantages → reference log-probs → update.

Read top to bottom: `run(config, workdir)` builds the run's pieces (mesh, policy, optimizer and
train state: `grpo.pieces.build_run`), the data stream and the checkpoint store; resumes from the
newest good checkpoint in `workdir` if there is one, or else starts (the warm-start of
`grpo.warmstart`, then step 0 saved); takes GRPO's reference and jits the steps
(`_resume_or_start`, `_reference`, `_jit_steps`); and loops: rollout, the learner batch, the
update, the step's metrics, a checkpoint when due. `_summary` ends the run. Everything random is a
function of (seed, step) and the data position is part of the checkpoint, so a run killed at any
step and resumed continues exactly.

Every process prepares the same global batch of prompts (the mixture read with one shard), so
the multi-host program is the single-host program: rewards, advantages and metrics are identical
on every host, and a 2-process run equals a 1-process run on the same number of devices.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from omni_jax import config_utils, metrics as metrics_lib, parallel
from omni_jax.chips import PEAK_FLOPS
from omni_jax.checkpoint import CheckpointStore
from omni_jax.checkpoint import resume as resume_lib
from omni_jax.checkpoint.resume import restore_train_state, save_train_state
from omni_jax.eval.training import TrainingEval
from omni_jax.grpo.experience import collect, shard_rows
from omni_jax.grpo.guards import Preemption, SkippedUpdates
from omni_jax.grpo.pieces import RunPieces, build_run, counters, data_stream, run_meta
from omni_jax.grpo.policy import build_model, reference_params
from omni_jax.grpo.step import jit_logprob_fn, jit_train_step, trainable_filter
from omni_jax.grpo.warmstart import warm_start
from omni_jax.model import lora
from omni_jax.model.inputs import prepare_inputs
from omni_jax.rewards import RewardFn
from omni_jax.tokenizer import load_tokenizer

log = logging.getLogger("omni_jax.train")


def _reward_fn(config, tokenizer):
    """(texts, ids, mask, records) -> ({"total": ..., component: ...}, stats) around rewards.RewardFn."""
    fn = RewardFn(tokenizer, config.rewards)

    def call(texts, ids, mask, records):
        total, components, stats = fn(texts, ids, mask, records)
        return {"total": total, **components}, stats

    return call


def _model_flops_per_token(model_cfg) -> float:
    """2 × (text decoder parameters touched per token): a forward pass's matmul FLOPs."""
    t = model_cfg.text
    h, kv = t.num_attention_heads * t.kv_head_dim, t.num_key_value_heads * t.kv_head_dim
    per_layer = t.hidden_size * (2 * h + 2 * kv) + 3 * t.hidden_size * t.intermediate_size
    return 2.0 * (t.num_hidden_layers * per_layer + t.hidden_size * t.vocab_size)


def run(config, workdir: str) -> dict:
    """Train per `config` in `workdir` (checkpoints, metrics.jsonl, TensorBoard, PNG). Returns a summary
    (with "preempted": True when SIGTERM stopped it after a save)."""
    preemption = Preemption.install()  # first: a SIGTERM during the set-up or the warm-start is not lost
    workdir = str(workdir)
    is_main = jax.process_index() == 0
    config_utils.validate(config, jax.device_count())
    store = CheckpointStore(pathlib.Path(workdir) / "checkpoints", max_to_keep=config.keep_checkpoints)
    start = store.latest_step()
    if start is not None and start >= config.total_steps:  # nothing to do: leave every output as it is
        if is_main:
            log.info("already finished at step %d of %s (total_steps=%d)", start, workdir, config.total_steps)
        store.close()
        return {"steps_run": 0, "final_step": int(start), "already_finished": True}
    tokenizer = load_tokenizer(config.tokenizer or config.model.init)
    pieces = build_run(config, tokenizer)
    data = data_stream(config, tokenizer, config.batch_prompts)
    meta = run_meta(config, pieces)
    begun = _resume_or_start(config, pieces, tokenizer, store, data, meta, workdir, preemption)
    if begun is None:  # SIGTERM: the warm-start was saved, the next run continues it
        data.close()
        store.close()
        return {"steps_run": 0, "final_step": 0, "preempted": True}
    start, pieces, reference = begun.step, begun.pieces, begun.reference
    saved_reference = reference if _reference_in_checkpoint(config, pieces) else None
    steps = _jit_steps(pieces)
    reward_fn = _reward_fn(config, tokenizer)
    evaluator = TrainingEval(config, tokenizer, pieces.layout)
    writer = metrics_lib.MetricWriter(workdir, enabled=is_main, resume_step=start)
    for i, loss in enumerate(jax.device_get(begun.warm_losses)):
        writer.write_before_start("warmstart", i + 1, {"loss": loss})
    skips = SkippedUpdates(config.max_consecutive_skipped_updates)
    rng = jax.random.key(config.seed)
    flops_per_token = _model_flops_per_token(pieces.model_cfg)
    peak = PEAK_FLOPS.get(jax.devices()[0].device_kind)
    state, steps_run, preempted = pieces.state, 0, False

    if is_main:
        log.info("compiling the rollout and the GRPO step (the first step takes longer) ...")
    bar = tqdm(range(start, config.total_steps), initial=start, total=config.total_steps, desc="GRPO",
               disable=not is_main, dynamic_ncols=True)
    for step in bar:
        t_step = time.perf_counter()
        batch = next(data)
        records = batch.pop("records")
        inputs = prepare_inputs(pieces.model_cfg, **batch)
        exp = collect(pieces.policy(state.params), inputs, records, rollout_cfg=config.rollout,
                      scale_rewards=config.grpo.scale_rewards, tokenizer=tokenizer, reward_fn=reward_fn,
                      seed=jax.random.fold_in(rng, step), layout=pieces.layout)
        t_lp = time.perf_counter()
        grpo_batch = _learner_batch(config, pieces, steps, exp, state.params, reference)
        t_update = time.perf_counter()
        for _ in range(config.grpo.num_iterations):
            state, step_metrics = steps.train(state, pieces.frozen, grpo_batch)
        step_metrics = jax.device_get(step_metrics)
        t_end = time.perf_counter()

        seconds = {"rollout": exp.seconds["rollout"], "reward": exp.seconds["reward"], "logprob": t_update - t_lp,
                   "update": t_end - t_update, "step": t_end - t_step}
        flops = _step_flops(flops_per_token, exp, inputs, len(records), pieces.step_cfg, config.grpo.num_iterations)
        scalars = _step_scalars(exp, step_metrics, seconds, flops, peak, data.counters())
        scalars["skipped_updates"] = int(state.skipped)  # running count over the whole run
        if evaluator.due(step + 1, step + 1 == config.total_steps):
            t_eval = time.perf_counter()
            scalars.update(evaluator(pieces.policy(state.params)))
            scalars["time/eval_s"] = time.perf_counter() - t_eval
        writer.write(step + 1, scalars)
        try:
            skips.update(step + 1, bool(step_metrics.get("update_skipped", 0)), int(state.skipped))
        except Exception:
            store.close()
            writer.close()
            data.close()
            raise
        steps_run += 1
        if is_main:
            bar.set_postfix(reward=f"{scalars['reward/total/mean']:.3f}", kl=f"{scalars.get('kl', 0):.3g}",
                            len=f"{scalars['completion/length_mean']:.0f}")
            if config.sample_every_steps and (step + 1) % config.sample_every_steps == 0:
                writer.text(step + 1, "samples", _samples_text(records, exp, config.rollout.num_generations))
        done = step + 1 == config.total_steps
        if (step + 1) % config.checkpoint_every_steps == 0 or done or preemption.requested \
                or store.reached_preemption(step + 1):
            _save(store, step + 1, pieces, state, data, meta, saved_reference)
            if preemption.requested or (not done and store.reached_preemption(step + 1)):
                store.wait()
                preempted = not done
                if is_main:
                    log.warning("preempted: saved step %d, exiting", step + 1)
                break
    store.close()
    writer.close()
    data.close()
    return _summary(workdir, writer, state, steps_run, preempted)


# ---- set-up: resume or start, the reference, the jitted steps ----

@dataclasses.dataclass(frozen=True)
class _Begun:
    """Where the loop starts: its first step, the pieces (restored or warm-started), GRPO's reference
    (None when beta = 0) and the warm-start's losses (device scalars; none on resume)."""
    step: int
    pieces: RunPieces
    reference: Any
    warm_losses: list


def _resume_or_start(config, pieces: RunPieces, tokenizer, store, data, meta, workdir, preemption) -> _Begun | None:
    """The newest good checkpoint of `workdir` restored (pieces and data position), or a fresh start:
    the warm-start (`config.warmstart`), then step 0 saved. None when SIGTERM stopped the warm-start
    (its progress is saved apart; the next run continues it)."""
    keep_reference = _reference_in_checkpoint(config, pieces)
    extra = {"reference": reference_params(pieces.state.params, config.model.reference_dtype)} if keep_reference \
        else None
    # The newest step that restores and verifies (damaged newer ones are moved aside, with a warning).
    saved = restore_train_state(store, params=pieces.checkpoint_params(), opt_state=pieces.state.opt_state,
                                counters=counters(pieces.state), extra=extra, config_json=meta["config"])
    if saved is not None:
        pieces = pieces.restored(saved.params, saved.opt_state, saved.counters)
        data.restore(saved.data_state)
        if jax.process_index() == 0:
            log.info("resumed from step %d of %s", saved.step, workdir)
        return _Begun(saved.step, pieces, _reference(config, pieces, tokenizer, saved=saved.extra.get("reference")), [])
    warm_losses = []
    if config.warmstart.steps > 0:
        out = warm_start(config, pieces, tokenizer, pathlib.Path(workdir) / "warmstart", meta, preemption)
        if out is None:
            return None
        pieces, warm_losses = out
    reference = _reference(config, pieces, tokenizer, fresh=True)
    _save(store, 0, pieces, pieces.state, data, meta, reference if keep_reference else None)
    if config.warmstart.steps > 0:
        store.wait()  # step 0 holds the warm-start now: its partial saves are not needed
        resume_lib.remove_warmstart(pathlib.Path(workdir) / "warmstart")
    return _Begun(0, pieces, reference, warm_losses)


def _reference_in_checkpoint(config, pieces: RunPieces) -> bool:
    """The reference lives in the checkpoint when it is not simply the loaded init (random / warm-started).
    With LoRA it is the base with the adapters off: the frozen weights the run holds anyway."""
    return config.grpo.beta > 0 and config.model.init == "random" and pieces.lora_cfg is None


def _reference(config, pieces: RunPieces, tokenizer, *, saved=None, fresh: bool = False):
    """GRPO's frozen reference (None when beta = 0). With LoRA: the base weights, adapters off.
    Otherwise a copy of the starting parameters in model.reference_dtype: at a fresh start the
    current ones; on resume the copy the checkpoint holds (`saved`), or else the loaded init again."""
    if not config.grpo.beta > 0:
        return None
    if pieces.lora_cfg is not None:
        return lora.base_state(pieces.frozen)
    if fresh:
        return reference_params(pieces.state.params, config.model.reference_dtype)
    if saved is not None:
        return saved
    init = build_model(config, tokenizer, pieces.layout)
    return reference_params(nnx.split(init, trainable_filter(), ...)[1], config.model.reference_dtype)


@dataclasses.dataclass(frozen=True)
class _Steps:
    """The run's jitted functions: the donated update, the policy's log-probs, the reference's."""
    train: Callable  # (state, frozen, batch) -> (state, metrics)
    logprob: Callable  # (params, frozen, seqs) -> float32[N, M]
    reference_logprob: Callable  # (reference, reference_rest, seqs) -> float32[N, M]
    reference_rest: Any


def _jit_steps(pieces: RunPieces) -> _Steps:
    layout = pieces.layout  # active while each step traces: the model's activation constraints, as the fit check compiles them
    train = jit_train_step(pieces.graphdef, pieces.step_cfg, pieces.optimizer, parallel.shardings_of(pieces.state),
                           layout)
    logprob = jit_logprob_fn(pieces.graphdef, pieces.step_cfg, layout)
    if pieces.lora_cfg is None:
        return _Steps(train, logprob, logprob, pieces.frozen)
    # The reference pass with LoRA: the base graph (no adapters) on the frozen weights alone.
    return _Steps(train, logprob, jit_logprob_fn(lora.base_graphdef(pieces.model), pieces.step_cfg, layout),
                  nnx.State({}))


# ---- one step's learner batch, checkpoint, metrics; the end of the run ----

def _learner_batch(config, pieces: RunPieces, steps: _Steps, exp, params, reference):
    """The GRPO batch of `exp` with the reference's log-probs (beta > 0) and, for several iterations,
    the old policy's, its rows sharded over the batch mesh axes (computed before it returns)."""
    grpo_batch = exp.batch
    if config.grpo.beta > 0:
        grpo_batch = grpo_batch.replace(ref_logp=steps.reference_logprob(reference, steps.reference_rest,
                                                                         grpo_batch.seqs))
    if config.grpo.num_iterations > 1:
        old = exp.sampler_logp if config.grpo.old_logprobs == "sampler" else \
            steps.logprob(params, pieces.frozen, grpo_batch.seqs)
        grpo_batch = grpo_batch.replace(old_logp=old)
    grpo_batch = shard_rows(grpo_batch, pieces.layout)
    jax.block_until_ready(grpo_batch)
    return grpo_batch


def _save(store, step: int, pieces: RunPieces, state, data, meta: dict, reference) -> None:
    """Checkpoint `state` at `step` (with GRPO's reference copy when it is not None)."""
    save_train_state(store, step, pieces.checkpoint_params(state.params), state.opt_state, counters(state),
                     data.state(), meta=meta, extra=None if reference is None else {"reference": reference})


def _step_flops(flops_per_token: float, exp, inputs, num_prompts: int, step_cfg, num_iterations: int) -> float:
    """Model FLOPs of one step. Rollout: one forward per prompt+completion token; update: forward +
    backward (×3), each prompt once per `prefix_share` candidates."""
    n_tokens = float(exp.lengths.sum())
    rows = exp.batch.seqs.prompt_mask.shape[0]
    prompt_tokens = float(np.asarray(inputs.attention_mask).sum())
    learner_prompt_tokens = prompt_tokens * rows / num_prompts / step_cfg.prefix_share
    return flops_per_token * (prompt_tokens + n_tokens + 3 * num_iterations * (learner_prompt_tokens + n_tokens))


def _step_scalars(exp, m, seconds, flops, peak, data_counters) -> dict:
    """A step's metrics: rewards, the update's, completions, times, throughput, data counters."""
    n_tokens = float(exp.lengths.sum())
    out = {}
    for name, values in exp.rewards.items():
        out[f"reward/{name}/mean"] = float(np.mean(values))
        out[f"reward/{name}/std"] = float(np.std(values))
    for k in ("loss", "kl", "clip_fraction", "entropy", "grad_norm", "param_norm", "update_norm", "beta",
              "ratio_mean", "update_skipped"):
        if k in m:
            out[k] = float(m[k])
    out.update({f"reward/counters/{k}": float(v) for k, v in exp.stats.items()})
    out["completion/length_mean"] = float(np.mean(exp.lengths))
    out["completion/length_max"] = float(np.max(exp.lengths))
    out.update({f"time/{k}_s": v for k, v in seconds.items()})
    out["perf/generated_tokens_per_s"] = n_tokens / max(seconds["rollout"], 1e-9)
    out["perf/model_tflops_per_s"] = flops / max(seconds["step"], 1e-9) / 1e12
    if peak:
        out["perf/mfu"] = flops / max(seconds["step"], 1e-9) / (peak * jax.device_count())
    out.update({f"data/{k}": float(v) for k, v in data_counters.items()})
    return out


def _summary(workdir, writer, state, steps_run: int, preempted: bool) -> dict:
    """The run's summary; on the main process the reward curves PNG, and first10 / last10 mean rewards
    when the run has 20 steps or more."""
    summary = {"steps_run": steps_run, "final_step": int(state.step) + int(state.skipped), "preempted": preempted}
    if jax.process_index() == 0 and writer.path.exists():
        rows_all = metrics_lib.read_jsonl(writer.path)
        metrics_lib.plot_curves(rows_all, ["reward/total/mean", "reward/format/mean", "reward/accuracy/mean",
                                           "reward/people_focus/mean"], pathlib.Path(workdir) / "reward_curves.png",
                                title="GRPO rewards (mean over the step's completions)")
        totals = [r["reward/total/mean"] for r in rows_all if "reward/total/mean" in r]
        if len(totals) >= 20:
            summary.update(first10=float(np.mean(totals[:10])), last10=float(np.mean(totals[-10:])))
    return summary


def _samples_text(records, exp, g: int, max_prompts: int = 2) -> str:
    lines = []
    for p, rec in enumerate(records[:max_prompts]):
        lines.append(f"Q [{rec.get('source')}/{rec.get('id')}]: {rec.get('problem')}  (answer {rec.get('answer')})")
        for j in range(min(g, 2)):
            i = p * g + j
            parts = ", ".join(f"{k}={v[i]:.2f}" for k, v in exp.rewards.items())
            lines.append(f"  [{parts}] {exp.texts[i][:600]}")
    return "\n".join(lines)
