"""The SFT loop: data → prompts + target completions → supervised step → metrics and checkpoints.

Read top to bottom, like the GRPO trainer, whose pieces it shares: the same mesh, model building
(a LoRA run adds adapters on the base), trainable split, optimizer and train state
(`grpo.pieces.build_run`), mixture stream (`grpo.pieces.data_stream`), row sharding, checkpoint
save and resume (`checkpoint.resume`: params, optimizer state, counters, data position; resume
is exact after kill -9 or SIGTERM), SIGTERM handling (`grpo.guards.Preemption`), metrics.jsonl +
TensorBoard, tqdm progress and a loss curve PNG. The step is `grpo.supervised` (the GRPO
warm-start runs the same one). A record's target is its `solution` (or `response`, see
`sft.target_field`); records without one are counted and skipped.
"""

from __future__ import annotations

import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from omni_jax import config_utils, metrics as metrics_lib, parallel
from omni_jax.checkpoint import CheckpointStore
from omni_jax.checkpoint.resume import restore_train_state, save_train_state
from omni_jax.grpo.experience import shard_rows
from omni_jax.grpo.guards import Preemption
from omni_jax.grpo.pieces import RunPieces, build_run, counters, data_stream, run_meta
from omni_jax.grpo.supervised import completion_tokens, jit_sft_step, target_text
from omni_jax.model.inputs import next_position_ids, prepare_inputs
from omni_jax.rollout.sampler import input_shardings
from omni_jax.tokenizer import load_tokenizer

log = logging.getLogger("omni_jax.sft")


def validate(config, num_devices: int) -> None:
    """Raise ValueError naming each inconsistent SFT setting."""
    problems = []
    rows, accum = int(config.batch_prompts), int(config.optim.grad_accum)
    if rows < 1 or accum < 1 or rows % accum:
        problems.append(f"batch_prompts = {rows} rows must split into optim.grad_accum = {accum} equal micro-batches")
    else:
        try:
            shape = config_utils.mesh_shape(config, num_devices)
            if (rows // accum) % (shape["data"] * shape["fsdp"]):
                problems.append(f"a micro-batch of {rows // accum} rows does not divide over data × fsdp = "
                                f"{shape['data'] * shape['fsdp']} devices")
        except ValueError as e:
            problems.append(str(e))
    if config.sft.target_field not in ("auto", "solution", "response"):
        problems.append(f"sft.target_field must be auto|solution|response (got {config.sft.target_field!r})")
    if config.sft.max_completion_tokens < 2:
        problems.append("sft.max_completion_tokens must be >= 2")
    if config.total_steps < 1 or config.checkpoint_every_steps < 1:
        problems.append("total_steps and checkpoint_every_steps must be >= 1")
    if problems:
        raise ValueError("invalid SFT config:\n  " + "\n  ".join(problems))


def _targets(records, tokenizer, config) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(ids, mask, rows without a target, truncated rows) of a batch; a row without a target gets an
    all-False mask (it contributes nothing; counted)."""
    texts = [target_text(r, config.sft.target_field) for r in records]
    ids, mask, truncated = completion_tokens([t or "" for t in texts], tokenizer, int(config.sft.max_completion_tokens))
    missing = [i for i, t in enumerate(texts) if t is None]
    mask[missing] = False
    return ids, mask, len(missing), truncated


def run(config, workdir: str) -> dict:
    """Supervised fine-tuning per `config` in `workdir`. Returns a summary (with "preempted": True when
    SIGTERM stopped it after a save)."""
    preemption = Preemption.install()  # first: a SIGTERM during the set-up is not lost
    workdir = str(workdir)
    is_main = jax.process_index() == 0
    validate(config, jax.device_count())
    tokenizer = load_tokenizer(config.tokenizer or config.model.init)
    pieces = build_run(config, tokenizer)
    data = data_stream(config, tokenizer, config.batch_prompts)
    store = CheckpointStore(pathlib.Path(workdir) / "checkpoints", max_to_keep=config.keep_checkpoints)
    meta = run_meta(config, pieces, source={"kind": "sft"})
    counts = {"missing_target": 0, "truncated": 0}

    saved = restore_train_state(store, params=pieces.checkpoint_params(), opt_state=pieces.state.opt_state,
                                counters=counters(pieces.state), config_json=meta["config"])
    if saved is not None:
        start = saved.step
        pieces = pieces.restored(saved.params, saved.opt_state, saved.counters)
        data.restore(saved.data_state)
        counts.update(saved.extra.get("sft_counts", {}))
        if is_main:
            log.info("resumed from step %d of %s", start, workdir)
    else:
        start = 0
        _save(store, 0, pieces, pieces.state, data, meta, counts)

    state = pieces.state
    sft_step = jit_sft_step(pieces.graphdef, pieces.optimizer, parallel.shardings_of(state), pieces.layout,
                            logits_chunk=config.sft.logits_chunk, grad_accum=int(config.optim.grad_accum),
                            dropout_seed=int(config.seed))
    writer = metrics_lib.MetricWriter(workdir, enabled=is_main, resume_step=start)
    bar = tqdm(range(start, config.total_steps), initial=start, total=config.total_steps, desc="SFT",
               disable=not is_main, dynamic_ncols=True)
    losses, preempted = [], False
    for step in bar:
        t0 = time.perf_counter()
        batch = next(data)
        records = batch.pop("records")
        inputs = prepare_inputs(pieces.model_cfg, **batch)
        ids, mask, missing, truncated = _targets(records, tokenizer, config)
        counts["missing_target"] += missing
        counts["truncated"] += truncated
        rows = shard_rows((jnp.asarray(ids), jnp.asarray(mask),
                           next_position_ids(inputs.position_ids, inputs.attention_mask)), pieces.layout)
        state, m = sft_step(state, pieces.frozen, jax.device_put(inputs, input_shardings(inputs, pieces.layout)),
                            *rows)
        m = {k: float(v) for k, v in jax.device_get(m).items()}
        seconds = time.perf_counter() - t0
        scalars = {**m, "time/step_s": seconds, "perf/target_tokens_per_s": m["target_tokens"] / max(seconds, 1e-9),
                   "sft/missing_target_rows": counts["missing_target"], "sft/truncated_rows": counts["truncated"],
                   **{f"data/{k}": float(v) for k, v in data.counters().items()}}
        writer.write(step + 1, scalars)
        losses.append(m["loss"])
        if is_main:
            bar.set_postfix(loss=f"{m['loss']:.3f}")
        done = step + 1 == config.total_steps
        if (step + 1) % config.checkpoint_every_steps == 0 or done or preemption.requested \
                or store.reached_preemption(step + 1):
            _save(store, step + 1, pieces, state, data, meta, counts)
            if preemption.requested or (not done and store.reached_preemption(step + 1)):
                store.wait()
                preempted = not done
                if is_main:
                    log.warning("preempted: saved step %d, exiting", step + 1)
                break
    store.close()
    writer.close()
    data.close()
    if is_main and writer.path.exists():
        metrics_lib.plot_curves(metrics_lib.read_jsonl(writer.path), ["loss"], pathlib.Path(workdir) / "loss_curve.png",
                                title="SFT loss (mean over target tokens)")
    return {"steps_run": len(losses), "final_step": int(state.step) + int(state.skipped),
            "final_loss": losses[-1] if losses else None, "preempted": preempted, **counts}


def _save(store, step: int, pieces: RunPieces, state, data, meta: dict, counts: dict) -> None:
    save_train_state(store, step, pieces.checkpoint_params(state.params), state.opt_state, counters(state),
                     data.state(), meta=meta, extra={"sft_counts": dict(counts)})
