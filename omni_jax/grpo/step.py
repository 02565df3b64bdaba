"""The GRPO train step: one donated, jitted update `(state, batch) -> (state, metrics)`.

Gradient accumulation scans over micro-batches (each a slice of the rows) and sums gradients;
the loss normalisers are whole-batch counts, so the sum equals the full-batch loss. Only the
trainable parameters (the text decoder and lm_head by default) have optimizer state; frozen ones
(vision and audio towers) are passed separately and never updated. A non-finite gradient skips
the update and is counted.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import NamedSharding, PartitionSpec

from omni_jax import parallel
from omni_jax.grpo import loss as loss_lib
from omni_jax.grpo.logprobs import Sequences, completion_logprobs
from omni_jax.model import lora


@struct.dataclass
class TrainState:
    """What the train step carries: the step count, the trainable parameters, the optimizer
    state and how many updates were skipped (non-finite gradients).
    """
    step: jax.Array  # int32, optimizer steps taken
    params: Any  # trainable parameters (float32 master copy)
    opt_state: Any
    skipped: jax.Array  # int32, updates skipped for non-finite gradients


@struct.dataclass
class GRPOBatch:
    """The rows of one optimizer step (N = prompts × num_generations).

    advantages: float32[N]; old_logp: float32[N, M] or None (on-policy: the current log-probs,
    detached); ref_logp: float32[N, M] or None (beta = 0).
    """

    seqs: Sequences
    advantages: jax.Array
    old_logp: jax.Array | None
    ref_logp: jax.Array | None


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The static configuration of the GRPO train step (`step_config_from_config` makes it from a
    run's config): the loss, gradient accumulation, the run's length (β's decay), the sampling
    temperature, the logits chunk, and how many consecutive rows share one prompt pass (`prefix_share`).
    """
    loss: loss_lib.LossConfig
    grad_accum: int
    total_steps: int
    temperature: float
    logits_chunk: int = 256
    # Runs of this many consecutive rows share one prompt pass (see the function `prefix_share`);
    # 1: every row runs its own prompt.
    prefix_share: int = 1
    dropout_seed: int = 0  # LoRA dropout keys: a function of (dropout_seed, step, micro-batch)


def trainable_filter(adapters: bool = False):
    """nnx filter of the parameters the optimizer updates: the text decoder and lm_head (the vision
    and audio towers are always frozen). With LoRA `adapters`: the adapters only (every base weight
    frozen)."""
    if adapters:
        return lora.TRAINABLE
    return nnx.All(nnx.Param, lambda path, _: path[0] in ("model", "lm_head"))


def make_optimizer(*, learning_rate: float, total_steps: int, warmup_steps: int = 0, schedule: str = "linear",
                   b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                   max_grad_norm: float = 1.0) -> optax.GradientTransformation:
    """AdamW with warmup then constant / linear / cosine decay, after global-norm clipping."""
    decay_steps = max(total_steps - warmup_steps, 1)
    if schedule == "constant":
        after = optax.constant_schedule(learning_rate)
    elif schedule == "linear":
        after = optax.linear_schedule(learning_rate, 0.0, decay_steps)
    elif schedule == "cosine":
        after = optax.cosine_decay_schedule(learning_rate, decay_steps)
    else:
        raise ValueError(f"schedule must be constant|linear|cosine, got {schedule!r}")
    lr = optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup_steps), after], [warmup_steps]) \
        if warmup_steps else after
    return optax.chain(optax.clip_by_global_norm(max_grad_norm),
                       optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))


def opt_state_shardings(optimizer: optax.GradientTransformation, params):
    """Shardings of `optimizer.init(params)`: each moment takes its parameter's sharding, counters are replicated.

    A plain `jax.jit(optimizer.init)` leaves the choice to the compiler, which puts the whole
    state on one device (zeros do not depend on the parameters' values). None when `params`
    carry no mesh shardings (single device).
    """
    shardings = jax.tree.map(lambda x: x.sharding, params)
    first = jax.tree.leaves(shardings)
    if not first or not isinstance(first[0], NamedSharding):
        return None
    replicated = NamedSharding(first[0].mesh, PartitionSpec())
    return optax.tree_map_params(optimizer, lambda _, s: s, jax.eval_shape(optimizer.init, params), shardings,
                                 transform_non_params=lambda _: replicated)


def init_opt_state(optimizer: optax.GradientTransformation, params):
    """`optimizer.init(params)` born sharded like the parameters (see `opt_state_shardings`)."""
    return jax.jit(optimizer.init, out_shardings=opt_state_shardings(optimizer, params))(params)


def prefix_share(num_generations: int, rows: int, grad_accum: int, row_shards: int) -> int:
    """How many consecutive rows (candidates of one question) can share one prompt pass.

    The largest divisor of num_generations that keeps every micro-batch's runs of shared rows
    whole on one device: it must divide the rows each device holds of one micro-batch,
    rows / (grad_accum · row_shards). E.g. 64 rows of 8 candidates: one device, no accumulation →
    8; 4 devices × grad_accum 8 → 2 (each device holds 2 rows of a micro-batch).
    """
    per_device = rows // max(grad_accum * row_shards, 1)
    return max(math.gcd(int(num_generations), int(per_device)), 1)


def _split_micro(x, grad_accum: int, axis: int = 0, block: int = 1):
    """[..., N, ...] → [A, ..., N/A, ...] with the micro-batch index leading.

    Runs of `block` consecutive rows stay together: run j goes to micro-batch j % A (block 1: row
    r to micro-batch r % A). Strided, not contiguous: rows are sharded in contiguous runs over the
    devices, so every micro-batch takes the same number of rows from every device and stays
    spread over all of them (a contiguous split would put each micro-batch on a few devices).
    """
    n = x.shape[axis]
    if n % (grad_accum * block):
        raise ValueError(f"{n} rows do not split into {grad_accum} micro-batches of whole {block}-row runs")
    x = jnp.moveaxis(x, axis, 0).reshape(n // (grad_accum * block), grad_accum, block, *x.shape[:axis],
                                         *x.shape[axis + 1:])
    x = jnp.swapaxes(x, 0, 1).reshape(grad_accum, n // grad_accum, *x.shape[3:])
    return jnp.moveaxis(x, 1, axis + 1)


def _micro_batches(batch: GRPOBatch, grad_accum: int, block: int = 1) -> GRPOBatch:
    seqs = batch.seqs
    split = lambda x, axis=0: None if x is None else _split_micro(x, grad_accum, axis, block)  # noqa: E731
    return GRPOBatch(
        seqs=Sequences(split(seqs.prompt_embeds), split(seqs.prompt_positions, 1), split(seqs.prompt_mask),
                       split(seqs.completions), split(seqs.completion_mask), split(seqs.next_position)),
        advantages=split(batch.advantages), old_logp=split(batch.old_logp), ref_logp=split(batch.ref_logp))


def build_train_step(graphdef, cfg: StepConfig, optimizer: optax.GradientTransformation) -> Callable:
    """train_step(state, frozen_params, batch) -> (state, metrics). Jit it with donate_argnums=0."""

    def loss_fn(params, frozen, micro: GRPOBatch, norm: loss_lib.Normalisers, beta, key):
        model = nnx.merge(graphdef, params, frozen)
        lora.seed_dropout(model, key)  # LoRA dropout (a no-op without it)
        logp, entropy = completion_logprobs(model, micro.seqs, temperature=cfg.temperature,
                                            logits_chunk=cfg.logits_chunk, prefix_share=cfg.prefix_share)
        old = jax.lax.stop_gradient(logp) if micro.old_logp is None else micro.old_logp
        loss, metrics = loss_lib.grpo_loss(cfg.loss, logp, old, micro.ref_logp, micro.advantages,
                                           micro.seqs.completion_mask, norm, beta)
        m = micro.seqs.completion_mask.astype(jnp.float32)
        metrics["entropy"] = jax.lax.stop_gradient((entropy * m).sum() / jnp.maximum(norm.num_tokens, 1.0))
        return loss, metrics

    def train_step(state: TrainState, frozen, batch: GRPOBatch):
        mask = batch.seqs.completion_mask
        norm = loss_lib.Normalisers(num_sequences=jnp.float32(mask.shape[0]),
                                    num_tokens=mask.sum().astype(jnp.float32),
                                    max_length=jnp.float32(mask.shape[1]))
        beta = loss_lib.beta_at(cfg.loss, state.step, cfg.total_steps)
        micro = _micro_batches(batch, cfg.grad_accum, cfg.prefix_share)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        step_key = jax.random.fold_in(jax.random.key(cfg.dropout_seed), state.step)

        def accumulate(carry, xs):
            grads, loss, metrics = carry
            mb, i = xs
            (l, m), g = grad_fn(state.params, frozen, mb, norm, beta, jax.random.fold_in(step_key, i))
            return (jax.tree.map(jnp.add, grads, g), loss + l, jax.tree.map(jnp.add, metrics, m)), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        first = jax.tree.map(lambda x: x[0], micro)
        metric_zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(loss_fn, state.params, frozen, first, norm, beta,
                                                                   step_key)[1])
        (grads, loss, metrics), _ = jax.lax.scan(accumulate, (zeros, jnp.float32(0.0), metric_zeros),
                                                 (micro, jnp.arange(cfg.grad_accum)))

        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(grad_norm) & jnp.isfinite(loss)
        updates, new_opt = optimizer.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        new_state = TrainState(step=state.step + finite.astype(jnp.int32),
                               params=keep(new_params, state.params), opt_state=keep(new_opt, state.opt_state),
                               skipped=state.skipped + (~finite).astype(jnp.int32))
        metrics.update(loss=loss, grad_norm=grad_norm, param_norm=optax.global_norm(state.params),
                       update_norm=optax.global_norm(updates), beta=beta, update_skipped=(~finite).astype(jnp.float32))
        return new_state, metrics

    return train_step


def jit_train_step(graphdef, cfg: StepConfig, optimizer: optax.GradientTransformation, state_shardings=None,
                   layout: parallel.Layout | None = None):
    """The train step as the run compiles it (and `omni_jax.aot` checks it): jitted, TrainState donated.

    state_shardings: the TrainState's shardings, pinned on the new state so every step reuses one
    compilation (None: the compiler chooses). layout: the run's layout, active while the step
    traces (the model's activation constraints); None: no constraints (one device).
    """
    out = {} if state_shardings is None else {"out_shardings": (state_shardings, None)}
    return jax.jit(parallel.traced_under(layout, build_train_step(graphdef, cfg, optimizer)), donate_argnums=0, **out)


def optimizer_from_config(config) -> optax.GradientTransformation:
    """`make_optimizer` with a training config's `optim` block and total_steps."""
    o = config.optim
    return make_optimizer(learning_rate=o.learning_rate, total_steps=config.total_steps, warmup_steps=o.warmup_steps,
                          schedule=o.schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                          max_grad_norm=o.max_grad_norm)


def step_config_from_config(config, row_shards: int) -> StepConfig:
    """StepConfig from a training config's grpo / optim / rollout blocks.

    row_shards: over how many devices the rows are sharded (mesh data × fsdp), for `prefix_share`.
    """
    g = config.grpo
    loss_cfg = loss_lib.LossConfig(epsilon_low=g.epsilon_low, epsilon_high=g.epsilon_high, beta=g.beta,
                                   kl_estimator=g.kl_estimator, beta_decay=g.beta_decay, aggregation=g.aggregation)
    share = prefix_share(config.rollout.num_generations, config.batch_prompts * config.rollout.num_generations,
                         config.optim.grad_accum, row_shards) if g.prefix_share else 1
    return StepConfig(loss=loss_cfg, grad_accum=config.optim.grad_accum, total_steps=config.total_steps,
                      temperature=float(config.rollout.temperature) or 1.0, logits_chunk=g.logits_chunk,
                      prefix_share=share, dropout_seed=int(config.seed))


def build_logprob_fn(graphdef, temperature: float, logits_chunk: int = 256, micro_batches: int = 1,
                     prefix_share: int = 1):
    """logprob_fn(params, frozen, seqs) -> float32[N, M] (reference or old-policy log-probs).

    micro_batches: the rows run in that many slices one after the other (the train step's
    grad_accum split), so activations take a micro-batch's memory, not the whole batch's.
    prefix_share: runs of that many consecutive rows share one prompt pass (`StepConfig.prefix_share`).
    """

    def one(model, seqs: Sequences):
        return completion_logprobs(model, seqs, temperature=temperature, logits_chunk=logits_chunk,
                                   prefix_share=prefix_share)[0]

    def fn(params, frozen, seqs: Sequences):
        model = nnx.merge(graphdef, params, frozen)
        if micro_batches == 1:
            return one(model, seqs)
        micro = _micro_batches(GRPOBatch(seqs, seqs.next_position, None, None), micro_batches, prefix_share).seqs
        logp = jax.lax.map(lambda mb: one(model, mb), micro)  # [A, N/A, M]
        # Undo the split: micro-batch a holds runs a, a + A, ... of `prefix_share` rows each.
        n, m = seqs.completions.shape
        logp = logp.reshape(micro_batches, n // (micro_batches * prefix_share), prefix_share, m)
        return jnp.swapaxes(logp, 0, 1).reshape(n, m)

    return fn


def jit_logprob_fn(graphdef, cfg: StepConfig, layout: parallel.Layout | None = None):
    """The reference / old-policy log-prob pass as the run compiles it: in cfg.grad_accum row slices,
    under the run's `layout` (as `jit_train_step`)."""
    return jax.jit(parallel.traced_under(
        layout, build_logprob_fn(graphdef, cfg.temperature, cfg.logits_chunk, cfg.grad_accum, cfg.prefix_share)))
