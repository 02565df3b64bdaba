"""A short supervised warm-start on synthetic demonstrations (the tiny default job only).

A randomly initialised tiny Thinker cannot discover the <context>/<think>/<answer> form by
sampling, so the default config first fits it to demonstrations built from each synthetic
record's own solution. The demonstrations vary how many sentences about the people they hold
(0–3), so the warm-started policy samples a range of people_focus scores and GRPO has a signal
to climb.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from omni_jax.grpo.logprobs import Sequences, completion_logprobs

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
    """int32[B, M] demonstration ids ending in <|im_end|> (padded) and bool[B, M] mask."""
    rng = np.random.default_rng(seed)
    ids = np.full((len(records), max_new_tokens), tokenizer.pad_token_id, np.int32)
    mask = np.zeros((len(records), max_new_tokens), bool)
    for i, rec in enumerate(records):
        toks = tokenizer(demonstration(rec, rng))["input_ids"][: max_new_tokens - 1] + [tokenizer.eos_token_id]
        ids[i, :len(toks)] = toks
        mask[i, :len(toks)] = True
    return ids, mask


def build_sft_step(graphdef, optimizer, logits_chunk: int = 256, out_shardings=None):
    """sft_step(params, opt_state, frozen, inputs, ids, mask, next_position) -> (params, opt_state, loss).

    Cross-entropy of the demonstration tokens given the prompt (encoders run inside, frozen).
    """

    def loss_fn(params, frozen, inputs, ids, mask, next_position):
        model = nnx.merge(graphdef, params, frozen)
        embeds = jax.lax.stop_gradient(model.embed(inputs))
        seqs = Sequences(embeds, inputs.position_ids, inputs.attention_mask, ids, mask, next_position)
        logp, _ = completion_logprobs(model, seqs, logits_chunk=logits_chunk)
        m = mask.astype(jnp.float32)
        return -(logp * m).sum() / jnp.maximum(m.sum(), 1.0)

    def step(params, opt_state, frozen, inputs, ids, mask, next_position):
        loss, grads = jax.value_and_grad(loss_fn)(params, frozen, inputs, ids, mask, next_position)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    if out_shardings is not None:
        out_shardings = (*out_shardings, None)
    return jax.jit(step, donate_argnums=(0, 1), out_shardings=out_shardings)
