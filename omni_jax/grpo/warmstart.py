"""A short supervised warm-start on synthetic demonstrations (the tiny default job only).

A randomly initialised tiny Thinker cannot discover the <context>/<think>/<answer> form by
sampling, so the default config first fits it to demonstrations built from each synthetic
record's own solution. The demonstrations vary how many sentences about the people they hold
(0–3), so the warm-started policy samples a range of people_focus scores and GRPO has a signal
to climb. The steps are the SFT step (`omni_jax.grpo.supervised`), as `python -m omni_jax.sft` runs.

`warm_start` runs them before GRPO's step 0 (`config.warmstart`): on SIGTERM it saves its
progress apart (`checkpoint.resume.save_warmstart`) and the next run continues it exactly.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from tqdm import tqdm

from omni_jax import parallel
from omni_jax.checkpoint import resume as resume_lib
from omni_jax.grpo.experience import shard_rows
from omni_jax.grpo.pieces import RunPieces, data_stream
from omni_jax.grpo.policy import fold_adapters
from omni_jax.grpo.step import TrainState, init_opt_state, make_optimizer, trainable_filter
from omni_jax.grpo.supervised import completion_tokens, jit_sft_step
from omni_jax.model import lora
from omni_jax.model.inputs import next_position_ids, prepare_inputs
from omni_jax.rollout.sampler import input_shardings

log = logging.getLogger("omni_jax.train")

# Sentences a demonstration may add inside <think>; people and action words the reward counts.
PEOPLE_SENTENCES = (
    "The person has a calm facial expression.",
    "The man looks at the camera and smiles.",
    "The woman nods and her posture is relaxed.",
    "Each person makes a small gesture with the hands.",
    "The people turn to each other in a friendly interaction.",
    "Her eyes follow the other person as they walk.",
)


def demonstration(record: dict, rng: np.random.Generator) -> str:
    """The record's solution, its <context> cut to the first sentence (short completions keep the
    CPU run fast), with 0–3 people sentences inserted at the start of <think>."""
    solution = record["solution"]
    head, sep, rest = solution.partition("</context>")
    if sep and ". " in head:
        solution = head[:head.index(". ") + 1] + sep + rest
    k = int(rng.integers(0, 4))
    extra = " ".join(rng.choice(PEOPLE_SENTENCES, size=k, replace=False)) if k else ""
    if extra and "<think>" in solution:
        solution = solution.replace("<think>", "<think>" + extra + " ", 1)
    return solution


def demonstration_tokens(records: list[dict], tokenizer, max_new_tokens: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """int32[B, M] demonstration ids ending in <|im_end|> (padded) and bool[B, M] mask: the SFT
    step's targets (`supervised.completion_tokens`)."""
    rng = np.random.default_rng(seed)
    ids, mask, _ = completion_tokens([demonstration(rec, rng) for rec in records], tokenizer, max_new_tokens)
    return ids, mask


def warm_start(config, pieces: RunPieces, tokenizer, save_dir, meta: dict, preemption):
    """Supervised steps on synthetic demonstrations before GRPO, from `pieces`' parameters. Returns
    GRPO's starting pieces (the warm-started parameters, a fresh optimizer state; with LoRA the
    warm-started adapters folded into the base, which is then GRPO's reference, and fresh adapters
    on top; with `warmstart.lora` off the base's own weights are what the warm-start trains) and
    each step's loss (device scalars). On SIGTERM (`preemption.requested`) the progress
    is saved in save_dir and None returned; the next call continues from it exactly."""
    # The run's own prompt settings (system prompt, caps, buckets) on the synthetic source, whose
    # records carry demonstrations; a seed apart from the GRPO stream's.
    stream = data_stream(config, tokenizer, config.warmstart.batch_prompts, seed=int(config.seed) + 1000,
                         mixture=ml_collections.ConfigDict({"synthetic": 1.0}))
    opt = make_optimizer(learning_rate=config.warmstart.learning_rate, total_steps=config.warmstart.steps,
                         warmup_steps=min(10, config.warmstart.steps // 10), schedule="cosine")
    graphdef, params, frozen, layout = pieces.graphdef, pieces.state.params, pieces.frozen, pieces.layout
    if pieces.lora_cfg is not None and not config.warmstart.lora:  # the base's weights learn; adapters stay B = 0
        graphdef, params, frozen = nnx.split(pieces.policy(), nnx.All(trainable_filter(), nnx.Not(lora.TRAINABLE)), ...)
    state, frozen = layout.place((TrainState(jnp.int32(0), params, init_opt_state(opt, params), jnp.int32(0)),
                                  frozen))
    sft_step = jit_sft_step(graphdef, opt, parallel.shardings_of(state), layout, logits_chunk=config.grpo.logits_chunk,
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
        inputs = prepare_inputs(pieces.model_cfg, **batch)
        ids, mask = demonstration_tokens(records, tokenizer, config.rollout.max_new_tokens, seed=config.seed * 7919 + i)
        # Rows over the batch mesh axes, as the GRPO batches (one device held them all before).
        rows = shard_rows((jnp.asarray(ids), jnp.asarray(mask),
                           next_position_ids(inputs.position_ids, inputs.attention_mask)), layout)
        state, metrics = sft_step(state, frozen, jax.device_put(inputs, input_shardings(inputs, layout)), *rows)
        losses.append(metrics["loss"])
        if i % 10 == 0:
            bar.set_postfix(loss=f"{float(metrics['loss']):.3f}")
    stream.close()
    return _grpo_start(pieces, nnx.merge(graphdef, state.params, frozen), state.params, int(config.seed)), losses


def _grpo_start(pieces: RunPieces, warmed, params, seed: int) -> RunPieces:
    """GRPO's starting pieces from the warm-started model `warmed` (its trained `params`); with LoRA
    the warm-started model is GRPO's base and reference, with fresh adapters."""
    if pieces.lora_cfg is not None:
        model = fold_adapters(warmed, seed, pieces.layout)
        graphdef, params, frozen = nnx.split(model, pieces.trainable, ...)
        pieces = dataclasses.replace(pieces, model=model, graphdef=graphdef, frozen=pieces.layout.place(frozen))
    return pieces.with_params(params)
