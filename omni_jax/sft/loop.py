"""The SFT loop: data → prompts + target completions → supervised step → metrics and checkpoints.

Read top to bottom, like the GRPO trainer, whose pieces it shares: the same model building (a
LoRA run adds adapters on the base), mixture stream, mesh and row sharding, optimizer, Orbax
store (params, optimizer state, counters, data position: resume is exact after kill -9 or
SIGTERM), metrics.jsonl + TensorBoard, tqdm progress and a loss curve PNG. The step is
`grpo.supervised` (the GRPO warm-start runs the same one). A record's target is its `solution`
(or `response`, see `sft.target_field`); records without one are counted and skipped.
"""

from __future__ import annotations

import logging
import pathlib
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from omni_jax import config_utils, metrics as metrics_lib, parallel
from omni_jax.checkpoint import CheckpointStore, thinker_meta
from omni_jax.grpo.experience import shard_rows
from omni_jax.grpo.policy import build_model
from omni_jax.grpo.step import TrainState, init_opt_state, optimizer_from_config, trainable_filter
from omni_jax.grpo.supervised import completion_tokens, jit_sft_step, target_text
from omni_jax.model import lora
from omni_jax.data import mixture_from_config
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


class _Preemption:
    """SIGTERM (TPU preemption) sets a flag; the loop checkpoints and exits."""

    def __init__(self):
        self.requested = False
        try:
            signal.signal(signal.SIGTERM, lambda *_: setattr(self, "requested", True))
        except ValueError:  # not the main thread
            pass


def _targets(records, tokenizer, config) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(ids, mask, rows without a target, truncated rows) of a batch; a row without a target gets an
    all-False mask (it contributes nothing; counted)."""
    texts = [target_text(r, config.sft.target_field) for r in records]
    ids, mask, truncated = completion_tokens([t or "" for t in texts], tokenizer, int(config.sft.max_completion_tokens))
    missing = [i for i, t in enumerate(texts) if t is None]
    mask[missing] = False
    return ids, mask, len(missing), truncated


def run(config, workdir: str) -> dict:
    """Supervised fine-tuning per `config` in `workdir`. Returns a summary."""
    workdir = str(workdir)
    is_main = jax.process_index() == 0
    validate(config, jax.device_count())
    shape = config_utils.mesh_shape(config, jax.device_count())
    mesh = parallel.make_mesh(shape)
    rules = config_utils.mesh_rules(config)
    tokenizer = load_tokenizer(config.tokenizer or config.model.init)
    model = build_model(config, tokenizer, mesh, rules)
    cfg = model.cfg
    lora_cfg = lora.config_from(config)
    trainable = trainable_filter(adapters=lora_cfg is not None)
    graphdef, params, frozen = nnx.split(model, trainable, ...)
    optimizer = optimizer_from_config(config)
    frozen = parallel.on_mesh(frozen, mesh)
    state = parallel.on_mesh(TrainState(jnp.int32(0), params, init_opt_state(optimizer, params), jnp.int32(0)), mesh)
    data_cfg = config.data.copy_and_resolve_references()
    with data_cfg.unlocked():
        data_cfg.batch_size = int(config.batch_prompts)
    data = mixture_from_config(data_cfg, tokenizer, process_index=0, process_count=1)  # every process: the global batch
    store = CheckpointStore(pathlib.Path(workdir) / "checkpoints", max_to_keep=config.keep_checkpoints)
    meta = thinker_meta(cfg, source={"kind": "sft"})
    meta["config"] = config.to_json_best_effort()
    if lora_cfg is not None:
        meta["lora"] = lora_cfg.to_dict()
    counts = {"missing_target": 0, "truncated": 0}

    start = store.latest_step()
    if start is not None:
        restored = store.restore(start, params_abstract=_abstract(nnx.state(model, nnx.Param).to_pure_dict()),
                                 extra_abstract={"opt_state": _abstract(state.opt_state),
                                                 "counters": _abstract({"step": state.step, "skipped": state.skipped})})
        nnx.replace_by_pure_dict(params_state := nnx.state(model, nnx.Param), restored.params)
        nnx.update(model, params_state)
        graphdef, params, frozen = nnx.split(model, trainable, ...)
        c = restored.extra["counters"]
        state = TrainState(c["step"], params, restored.extra["opt_state"], c["skipped"])
        data.restore(restored.extra["data"])
        counts.update(restored.extra.get("sft_counts", {}))
        if is_main:
            log.info("resumed from step %d of %s", start, workdir)
    else:
        start = 0
        _save(store, 0, graphdef, state, frozen, meta, data, counts)

    sft_step = jit_sft_step(graphdef, optimizer, parallel.shardings_of(state), logits_chunk=config.sft.logits_chunk,
                            grad_accum=int(config.optim.grad_accum), dropout_seed=int(config.seed))
    writer = metrics_lib.MetricWriter(workdir, enabled=is_main, resume_step=start)
    preemption = _Preemption()
    bar = tqdm(range(start, config.total_steps), initial=start, total=config.total_steps, desc="SFT",
               disable=not is_main, dynamic_ncols=True)
    losses = []
    for step in bar:
        t0 = time.perf_counter()
        batch = next(data)
        records = batch.pop("records")
        inputs = prepare_inputs(cfg, **batch)
        ids, mask, missing, truncated = _targets(records, tokenizer, config)
        counts["missing_target"] += missing
        counts["truncated"] += truncated
        rows = shard_rows((jnp.asarray(ids), jnp.asarray(mask),
                           next_position_ids(inputs.position_ids, inputs.attention_mask)), mesh, rules)
        state, m = sft_step(state, frozen, jax.device_put(inputs, input_shardings(inputs, mesh, rules)), *rows)
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
            _save(store, step + 1, graphdef, state, frozen, meta, data, counts)
            if preemption.requested or (not done and store.reached_preemption(step + 1)):
                store.wait()
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
            "final_loss": losses[-1] if losses else None, **counts}


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _save(store, step, graphdef, state, frozen, meta, data, counts):
    params = nnx.state(nnx.merge(graphdef, state.params, frozen), nnx.Param).to_pure_dict()
    store.save(step, params=params, meta=meta,
               extra={"opt_state": state.opt_state, "counters": {"step": state.step, "skipped": state.skipped},
                      "data": data.state(), "sft_counts": dict(counts)})
