"""The one supervised (SFT) step: cross-entropy of target completions given their prompts.

Used by `python -m omni_jax.sft` (full or LoRA fine-tuning on HumanOmniV2 rows) and by the GRPO
trainer's warm-start (synthetic demonstrations). The loss covers the completion tokens only
(prompt tokens are context, never targets), averaged over every target token of the batch;
gradient accumulation splits the rows into micro-batches whose sums equal the whole batch's.
The towers run once per step outside the gradient (they are frozen); only the `TrainState`'s
params (the text decoder, or the LoRA adapters alone) are updated. A non-finite gradient skips
the update and is counted, as in the GRPO step.

Completion targets come from records: `completion_tokens` tokenises a record's `solution` (or
`response`) and closes it with <|im_end|>, the token a chat turn ends with.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from omni_jax import parallel
from omni_jax.grpo.logprobs import Sequences, completion_logprobs
from omni_jax.grpo.step import TrainState, _split_micro
from omni_jax.model import lora
from omni_jax.model.inputs import ModelInputs

TARGET_FIELDS = ("solution", "response")


def target_text(record: dict, field: str = "auto") -> str | None:
    """The target completion of a record: `field`, or with "auto" `solution` then `response`."""
    for name in (TARGET_FIELDS if field == "auto" else (field,)):
        text = record.get(name)
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if isinstance(text, str) and text.strip():
            return text
    return None


def completion_tokens(texts: list[str], tokenizer, max_tokens: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(int32[B, max_tokens] ids ending in <|im_end|> (pad after), bool[B, max_tokens] mask, truncated rows).

    A text longer than max_tokens − 1 tokens is cut (its <|im_end|> falls off) and counted.
    """
    ids = np.full((len(texts), max_tokens), tokenizer.pad_token_id, np.int32)
    mask = np.zeros((len(texts), max_tokens), bool)
    truncated = 0
    for i, text in enumerate(texts):
        toks = list(tokenizer(text)["input_ids"]) + [tokenizer.eos_token_id]
        truncated += len(toks) > max_tokens
        toks = toks[:max_tokens]
        ids[i, :len(toks)] = toks
        mask[i, :len(toks)] = True
    return ids, mask, truncated


def build_sft_step(graphdef, optimizer: optax.GradientTransformation, *, logits_chunk: int = 256,
                   grad_accum: int = 1, dropout_seed: int = 0) -> Callable:
    """sft_step(state, frozen, inputs, ids, mask, next_position) -> (state, metrics).

    inputs: the prompts' ModelInputs [B, T]; ids: int32[B, M] target tokens; mask: bool[B, M]
    (True on targets); next_position: int32[B], the TMRoPE id of each first target token.
    Jit it with donate_argnums=0 (see `jit_sft_step`).
    """

    def loss_fn(params, frozen, seqs: Sequences, num_tokens, key):
        model = nnx.merge(graphdef, params, frozen)
        lora.seed_dropout(model, key)  # LoRA dropout (a no-op without it)
        logp, _ = completion_logprobs(model, seqs, logits_chunk=logits_chunk)
        return -(logp * seqs.completion_mask.astype(jnp.float32)).sum() / num_tokens

    def step(state: TrainState, frozen, inputs: ModelInputs, ids, mask, next_position):
        embeds = jax.lax.stop_gradient(nnx.merge(graphdef, state.params, frozen).embed(inputs))
        seqs = Sequences(embeds, inputs.position_ids, inputs.attention_mask, ids, mask, next_position)
        num_tokens = jnp.maximum(mask.sum().astype(jnp.float32), 1.0)
        split = lambda x, axis=0: _split_micro(x, grad_accum, axis)  # noqa: E731
        micro = Sequences(split(seqs.prompt_embeds), split(seqs.prompt_positions, 1), split(seqs.prompt_mask),
                          split(seqs.completions), split(seqs.completion_mask), split(seqs.next_position))
        step_key = jax.random.fold_in(jax.random.key(dropout_seed), state.step)
        grad_fn = jax.value_and_grad(loss_fn)

        def accumulate(carry, xs):
            grads, loss = carry
            mb, i = xs
            l, g = grad_fn(state.params, frozen, mb, num_tokens, jax.random.fold_in(step_key, i))
            return (jax.tree.map(jnp.add, grads, g), loss + l), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        (grads, loss), _ = jax.lax.scan(accumulate, (zeros, jnp.float32(0.0)), (micro, jnp.arange(grad_accum)))
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(grad_norm) & jnp.isfinite(loss)
        updates, new_opt = optimizer.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        new_state = TrainState(step=state.step + finite.astype(jnp.int32), params=keep(new_params, state.params),
                               opt_state=keep(new_opt, state.opt_state),
                               skipped=state.skipped + (~finite).astype(jnp.int32))
        metrics = {"loss": loss, "grad_norm": grad_norm, "param_norm": optax.global_norm(state.params),
                   "update_norm": optax.global_norm(updates), "target_tokens": mask.sum().astype(jnp.float32),
                   "update_skipped": (~finite).astype(jnp.float32)}
        return new_state, metrics

    return step


def jit_sft_step(graphdef, optimizer, state_shardings=None, layout: parallel.Layout | None = None, **kwargs):
    """The SFT step as runs compile it: jitted, TrainState donated, its shardings pinned (one compile),
    traced under the run's `layout` (the model's activation constraints; None: none)."""
    out = {} if state_shardings is None else {"out_shardings": (state_shardings, None)}
    return jax.jit(parallel.traced_under(layout, build_sft_step(graphdef, optimizer, **kwargs)), donate_argnums=0, **out)
