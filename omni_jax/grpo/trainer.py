"""The GRPO training loop: data → rollout → rewards → advantages → reference log-probs → update.

Read top to bottom: `run(config, workdir)` builds the mesh, tokenizer, policy, optimizer, data
stream and checkpoint store, resumes from the newest checkpoint in `workdir` if there is one,
and loops. Everything random is a function of (seed, step) and the data position is part of the
checkpoint, so a run killed at any step and resumed continues exactly.

Every process prepares the same global batch of prompts (the mixture read with one shard), so
the multi-host program is the single-host program: rewards, advantages and metrics are identical
on every host, and a 2-process run equals a 1-process run on the same number of devices.
"""

from __future__ import annotations

import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from omni_jax import config_utils, metrics as metrics_lib, parallel
from omni_jax.chips import PEAK_FLOPS
from omni_jax.checkpoint import CheckpointStore, thinker_meta
from omni_jax.checkpoint import resume as resume_lib
from omni_jax.checkpoint.resume import restore_run
from omni_jax.data import mixture_from_config
from omni_jax.eval.training import TrainingEval
from omni_jax.grpo import warmstart as warmstart_lib
from omni_jax.grpo.experience import collect, shard_rows
from omni_jax.grpo.guards import Preemption, SkippedUpdates
from omni_jax.grpo.policy import build_model, fold_adapters, reference_params
from omni_jax.grpo.step import TrainState, init_opt_state, jit_logprob_fn, jit_train_step, make_optimizer, \
    optimizer_from_config, step_config_from_config, trainable_filter
from omni_jax.grpo.supervised import jit_sft_step
from omni_jax.model import lora
from omni_jax.model.inputs import next_position_ids, prepare_inputs
from omni_jax.rewards import RewardFn
from omni_jax.rollout.sampler import input_shardings
from omni_jax.tokenizer import load_tokenizer

log = logging.getLogger("omni_jax.train")



def _reward_fn(config, tokenizer):
    """(texts, ids, mask, records) -> ({"total": ..., component: ...}, stats) around rewards.RewardFn."""
    fn = RewardFn(tokenizer, config.rewards)

    def call(texts, ids, mask, records):
        total, components, stats = fn(texts, ids, mask, records)
        return {"total": total, **components}, stats

    return call


def _data_stream(config, tokenizer):
    """The global batch stream: every process reads the whole batch (see module docstring)."""
    data_cfg = config.data.copy_and_resolve_references()
    with data_cfg.unlocked():
        data_cfg.batch_size = int(config.batch_prompts)
    return mixture_from_config(data_cfg, tokenizer, process_index=0, process_count=1)


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
    shape = config_utils.mesh_shape(config, jax.device_count())
    mesh = parallel.make_mesh(shape)
    rules = config_utils.mesh_rules(config)
    store = CheckpointStore(pathlib.Path(workdir) / "checkpoints", max_to_keep=config.keep_checkpoints)
    start = store.latest_step()
    if start is not None and start >= config.total_steps:  # nothing to do: leave every output as it is
        if is_main:
            log.info("already finished at step %d of %s (total_steps=%d)", start, workdir, config.total_steps)
        store.close()
        return {"steps_run": 0, "final_step": int(start), "already_finished": True}
    tokenizer = load_tokenizer(config.tokenizer or config.model.init)
    model = build_model(config, tokenizer, mesh, rules)
    cfg = model.cfg
    lora_cfg = lora.config_from(config)
    trainable = trainable_filter(adapters=lora_cfg is not None)
    graphdef, params, frozen = nnx.split(model, trainable, ...)
    optimizer = optimizer_from_config(config)
    step_cfg = step_config_from_config(config, shape["data"] * shape["fsdp"])
    # Every array committed to the mesh up front: host-local scalars cannot be checkpointed on
    # several hosts, and uncommitted inputs would make the first step compile twice. The
    # optimizer state is born sharded like the parameters (on_mesh would replicate a plain init's).
    frozen = parallel.on_mesh(frozen, mesh)
    state = parallel.on_mesh(TrainState(jnp.int32(0), params, init_opt_state(optimizer, params), jnp.int32(0)), mesh)
    data = _data_stream(config, tokenizer)
    meta = thinker_meta(cfg)
    meta["config"] = config.to_json_best_effort()
    if lora_cfg is not None:
        meta["lora"] = lora_cfg.to_dict()
    use_reference = config.grpo.beta > 0
    # The reference lives in the checkpoint when it is not simply the loaded init (random / warm-started).
    # With LoRA it is the base with the adapters off: the frozen weights the run holds anyway.
    reference_in_ckpt = use_reference and config.model.init == "random" and lora_cfg is None
    reference = None

    warm_losses = []
    extra_abstract = {"opt_state": _abstract(state.opt_state), "counters": _abstract(
        {"skipped": state.skipped, "step": state.step})}
    if reference_in_ckpt:
        extra_abstract["reference"] = _abstract(reference_params(params, config.model.reference_dtype))
    # The newest step that restores and verifies (damaged newer ones are moved aside, with a warning).
    restored = restore_run(store, params_abstract=_abstract(nnx.state(model, nnx.Param).to_pure_dict()),
                           extra_abstract=extra_abstract, config_json=meta["config"])
    if restored is not None:
        start = restored.step
        nnx.replace_by_pure_dict(params_state := nnx.state(model, nnx.Param), restored.params)
        nnx.update(model, params_state)
        graphdef, params, frozen = nnx.split(model, trainable, ...)
        counters = restored.extra["counters"]
        state = TrainState(counters["step"], params, restored.extra["opt_state"], counters["skipped"])
        data.restore(restored.extra["data"])
        if reference_in_ckpt:
            reference = restored.extra["reference"]
        if is_main:
            log.info("resumed from step %d of %s", start, workdir)
    else:
        start = 0
        if config.warmstart.steps > 0:
            out = _warmstart(config, graphdef, params, frozen, tokenizer, cfg, mesh,
                             pathlib.Path(workdir) / "warmstart", meta, preemption)
            if out is None:  # SIGTERM: the warm-start was saved, the next run continues it
                data.close()
                store.close()
                return {"steps_run": 0, "final_step": 0, "preempted": True}
            params, warm_losses = out
            if lora_cfg is not None:  # the warm-started model is GRPO's base and reference; fresh adapters
                model = fold_adapters(nnx.merge(graphdef, params, frozen), int(config.seed), mesh, rules)
                graphdef, params, frozen = nnx.split(model, trainable, ...)
                frozen = parallel.on_mesh(frozen, mesh)
            state = parallel.on_mesh(TrainState(jnp.int32(0), params, init_opt_state(optimizer, params),
                                                jnp.int32(0)), mesh)
        if use_reference and lora_cfg is None:
            reference = reference_params(params, config.model.reference_dtype)
        _save(store, 0, graphdef, state, frozen, meta, data, reference if reference_in_ckpt else None)
        if config.warmstart.steps > 0:
            store.wait()  # step 0 holds the warm-start now: its partial saves are not needed
            resume_lib.remove_warmstart(pathlib.Path(workdir) / "warmstart")
    if use_reference and lora_cfg is not None:
        reference = lora.base_state(frozen)
    elif use_reference and reference is None:  # a loaded init: the reference is that checkpoint again
        reference = reference_params(nnx.split(build_model(config, tokenizer, mesh, rules),
                                               trainable_filter(), ...)[1],
                                     config.model.reference_dtype)

    train_step = jit_train_step(graphdef, step_cfg, optimizer, parallel.shardings_of(state))
    logprob_fn = jit_logprob_fn(graphdef, step_cfg)
    # The reference pass: with LoRA, the base graph (no adapters) on the frozen weights alone.
    ref_logprob_fn = logprob_fn if lora_cfg is None else jit_logprob_fn(lora.base_graphdef(model), step_cfg)
    ref_rest = frozen if lora_cfg is None else nnx.State({})
    reward_fn = _reward_fn(config, tokenizer)
    evaluator = TrainingEval(config, tokenizer, mesh, rules)
    writer = metrics_lib.MetricWriter(workdir, enabled=is_main, resume_step=start)
    for i, loss in enumerate(jax.device_get(warm_losses)):
        writer.write_before_start("warmstart", i + 1, {"loss": loss})
    skips = SkippedUpdates(config.max_consecutive_skipped_updates)
    rng = jax.random.key(config.seed)
    flops_per_token = _model_flops_per_token(cfg)
    peak = PEAK_FLOPS.get(jax.devices()[0].device_kind)
    summary_rewards = []

    preempted = False
    if is_main:
        log.info("compiling the rollout and the GRPO step (the first step takes longer) ...")
    bar = tqdm(range(start, config.total_steps), initial=start, total=config.total_steps, desc="GRPO",
               disable=not is_main, dynamic_ncols=True)
    for step in bar:
        t_step = time.perf_counter()
        batch = next(data)
        records = batch.pop("records")
        inputs = prepare_inputs(cfg, **batch)
        policy = nnx.merge(graphdef, state.params, frozen)
        exp = collect(policy, inputs, records, rollout_cfg=config.rollout, scale_rewards=config.grpo.scale_rewards,
                      tokenizer=tokenizer, reward_fn=reward_fn, seed=jax.random.fold_in(rng, step), mesh=mesh,
                      rules=rules)
        t_lp = time.perf_counter()
        grpo_batch = exp.batch
        if use_reference:
            grpo_batch = grpo_batch.replace(ref_logp=ref_logprob_fn(reference, ref_rest, grpo_batch.seqs))
        if config.grpo.num_iterations > 1:
            old = exp.sampler_logp if config.grpo.old_logprobs == "sampler" else \
                logprob_fn(state.params, frozen, grpo_batch.seqs)
            grpo_batch = grpo_batch.replace(old_logp=old)
        grpo_batch = shard_rows(grpo_batch, mesh, rules)
        jax.block_until_ready(grpo_batch)
        t_update = time.perf_counter()
        for _ in range(config.grpo.num_iterations):
            state, step_metrics = train_step(state, frozen, grpo_batch)
        step_metrics = jax.device_get(step_metrics)
        t_end = time.perf_counter()

        n_tokens = float(exp.lengths.sum())
        seconds = {"rollout": exp.seconds["rollout"], "reward": exp.seconds["reward"], "logprob": t_update - t_lp,
                   "update": t_end - t_update, "step": t_end - t_step}
        # Rollout: one forward per prompt+completion token; update: forward + backward (×3), each
        # prompt once per `prefix_share` candidates.
        rows = exp.batch.seqs.prompt_mask.shape[0]
        prompt_tokens = float(np.asarray(inputs.attention_mask).sum())
        learner_prompt_tokens = prompt_tokens * rows / len(records) / step_cfg.prefix_share
        flops = flops_per_token * (prompt_tokens + n_tokens + 3 * config.grpo.num_iterations
                                   * (learner_prompt_tokens + n_tokens))
        scalars = _step_scalars(exp, step_metrics, seconds, n_tokens, flops, peak, data.counters())
        scalars["skipped_updates"] = int(state.skipped)  # running count over the whole run
        if evaluator.due(step + 1, step + 1 == config.total_steps):
            t_eval = time.perf_counter()
            scalars.update(evaluator(nnx.merge(graphdef, state.params, frozen)))
            scalars["time/eval_s"] = time.perf_counter() - t_eval
        writer.write(step + 1, scalars)
        try:
            skips.update(step + 1, bool(step_metrics.get("update_skipped", 0)), int(state.skipped))
        except Exception:
            store.close()
            writer.close()
            data.close()
            raise
        summary_rewards.append(scalars["reward/total/mean"])
        if is_main:
            bar.set_postfix(reward=f"{scalars['reward/total/mean']:.3f}", kl=f"{scalars.get('kl', 0):.3g}",
                            len=f"{scalars['completion/length_mean']:.0f}")
            if config.sample_every_steps and (step + 1) % config.sample_every_steps == 0:
                writer.text(step + 1, "samples", _samples_text(records, exp, config.rollout.num_generations))
        done = step + 1 == config.total_steps
        if (step + 1) % config.checkpoint_every_steps == 0 or done or preemption.requested \
                or store.reached_preemption(step + 1):
            _save(store, step + 1, graphdef, state, frozen, meta, data, reference if reference_in_ckpt else None)
            if preemption.requested or (not done and store.reached_preemption(step + 1)):
                store.wait()
                preempted = not done
                if is_main:
                    log.warning("preempted: saved step %d, exiting", step + 1)
                break
    store.close()
    writer.close()
    data.close()
    summary = {"steps_run": len(summary_rewards), "final_step": int(state.step) + int(state.skipped),
               "preempted": preempted}
    if is_main and writer.path.exists():
        rows_all = metrics_lib.read_jsonl(writer.path)
        metrics_lib.plot_curves(rows_all, ["reward/total/mean", "reward/format/mean", "reward/accuracy/mean",
                                           "reward/people_focus/mean"], pathlib.Path(workdir) / "reward_curves.png",
                                title="GRPO rewards (mean over the step's completions)")
        totals = [r["reward/total/mean"] for r in rows_all if "reward/total/mean" in r]
        if len(totals) >= 20:
            summary.update(first10=float(np.mean(totals[:10])), last10=float(np.mean(totals[-10:])))
    return summary


def _abstract(tree):
    """ShapeDtypeStructs carrying each leaf's sharding (what CheckpointStore.restore wants)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _save(store, step, graphdef, state, frozen, meta, data, reference):
    params = nnx.state(nnx.merge(graphdef, state.params, frozen), nnx.Param).to_pure_dict()
    extra = {"opt_state": state.opt_state, "counters": {"step": state.step, "skipped": state.skipped},
             "data": data.state()}
    if reference is not None:
        extra["reference"] = reference
    store.save(step, params=params, meta=meta, extra=extra)


def _warmstart(config, graphdef, params, frozen, tokenizer, cfg, mesh, save_dir, meta, preemption):
    """Supervised steps on synthetic demonstrations before GRPO (see grpo.warmstart). Returns the
    params and each step's loss (device scalars); on SIGTERM the progress is saved in save_dir and
    None returned, and the next call continues from it exactly."""
    import ml_collections

    # The run's own prompt settings (system prompt, caps, buckets) on the synthetic source, whose
    # records carry demonstrations; a seed apart from the GRPO stream's.
    data_cfg = config.data.copy_and_resolve_references()
    with data_cfg.unlocked():
        data_cfg.batch_size = int(config.warmstart.batch_prompts)
        data_cfg.seed = int(config.seed) + 1000
        data_cfg.mixture = ml_collections.ConfigDict({"synthetic": 1.0})
    stream = mixture_from_config(data_cfg, tokenizer, process_index=0, process_count=1)
    opt = make_optimizer(learning_rate=config.warmstart.learning_rate, total_steps=config.warmstart.steps,
                         warmup_steps=min(10, config.warmstart.steps // 10), schedule="cosine")
    state, frozen = parallel.on_mesh((TrainState(jnp.int32(0), params, init_opt_state(opt, params), jnp.int32(0)),
                                      frozen), mesh)
    sft_step = jit_sft_step(graphdef, opt, parallel.shardings_of(state), logits_chunk=config.grpo.logits_chunk,
                            dropout_seed=int(config.seed))
    if jax.process_index() == 0:
        log.info("warm-start: compiling the supervised step ...")
    rest = {"opt_state": state.opt_state, "step": state.step, "skipped": state.skipped}
    first, params, rest = resume_lib.restore_warmstart(save_dir, state.params, rest, stream)
    state = TrainState(rest["step"], params, rest["opt_state"], rest["skipped"])
    bar = tqdm(range(first, config.warmstart.steps), initial=first, total=config.warmstart.steps,
               desc="warm-start (SFT)", disable=jax.process_index() != 0, dynamic_ncols=True)
    losses = []
    for i in bar:
        if preemption.requested:
            resume_lib.save_warmstart(save_dir, i, state.params, {"opt_state": state.opt_state, "step": state.step,
                                                                  "skipped": state.skipped}, stream, meta)
            stream.close()
            return None
        batch = next(stream)
        records = batch.pop("records")
        inputs = prepare_inputs(cfg, **batch)
        ids, mask = warmstart_lib.demonstration_tokens(records, tokenizer, config.rollout.max_new_tokens,
                                                       seed=config.seed * 7919 + i)
        # Rows over the batch mesh axes, as the GRPO batches (one device held them all before).
        rows = shard_rows((jnp.asarray(ids), jnp.asarray(mask),
                           next_position_ids(inputs.position_ids, inputs.attention_mask)), mesh)
        state, metrics = sft_step(state, frozen, jax.device_put(inputs, input_shardings(inputs, mesh)), *rows)
        losses.append(metrics["loss"])
        if i % 10 == 0:
            bar.set_postfix(loss=f"{float(metrics['loss']):.3f}")
    params = state.params
    stream.close()
    return params, losses


def _step_scalars(exp, m, seconds, n_tokens, flops, peak, data_counters) -> dict:
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


def _samples_text(records, exp, g: int, max_prompts: int = 2) -> str:
    lines = []
    for p, rec in enumerate(records[:max_prompts]):
        lines.append(f"Q [{rec.get('source')}/{rec.get('id')}]: {rec.get('problem')}  (answer {rec.get('answer')})")
        for j in range(min(g, 2)):
            i = p * g + j
            parts = ", ".join(f"{k}={v[i]:.2f}" for k, v in exp.rewards.items())
            lines.append(f"  [{parts}] {exp.texts[i][:600]}")
    return "\n".join(lines)
