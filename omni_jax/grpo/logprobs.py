"""Per-token log-probs and entropies of sampled completions under a model (policy or reference).

The prompt arrives as embeddings (encoder outputs already spliced in: with frozen towers the
rollout's prefill embeddings are reused, so the towers run once per question), the completion as
token ids. Logits are produced in chunks of the completion length and never stored whole:
[N, M, vocab] in float32 would be gigabytes at real scale.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from omni_jax.model.text import causal_mask


@struct.dataclass
class Sequences:
    """Prompt + completion rows for scoring. N rows (B prompts × G candidates).

    prompt_embeds: [N, T, D]; prompt_positions: int32[3, N, T]; prompt_mask: bool[N, T];
    completions: int32[N, M]; completion_mask: bool[N, M]; next_position: int32[N] (the TMRoPE
    id of the first completion token).
    """

    prompt_embeds: jax.Array
    prompt_positions: jax.Array
    prompt_mask: jax.Array
    completions: jax.Array
    completion_mask: jax.Array
    next_position: jax.Array


def _chunked_token_logprobs(model, hidden, targets, temperature: float, chunk: int):
    """hidden: [N, M, D]; targets: int32[N, M] → (logp, entropy) float32[N, M]."""
    n, m, d = hidden.shape
    chunk = min(chunk, m) if chunk > 0 else m
    pad = -m % chunk
    h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(n, -1, chunk, d).swapaxes(0, 1)
    t = jnp.pad(targets, ((0, 0), (0, pad))).reshape(n, -1, chunk).swapaxes(0, 1)

    @jax.checkpoint  # recompute each chunk's logits in the backward pass instead of keeping them
    def one(args):
        h_c, t_c = args
        logits = model.logits(h_c) / temperature
        lse = jax.nn.logsumexp(logits, axis=-1)
        tok = jnp.take_along_axis(logits, t_c[..., None], axis=-1)[..., 0]
        probs = jax.nn.softmax(logits, axis=-1)
        entropy = lse - (probs * logits).sum(-1)
        return tok - lse, entropy

    logp, ent = jax.lax.map(one, (h, t))
    unchunk = lambda x: x.swapaxes(0, 1).reshape(n, -1)[:, :m]  # noqa: E731
    return unchunk(logp), unchunk(ent)


def completion_logprobs(model, seqs: Sequences, *, temperature: float = 1.0, logits_chunk: int = 256,
                        prefix_share: int = 1):
    """(logp, entropy): float32[N, M] for each completion token under `model` (a Thinker).

    prefix_share > 1: each run of `prefix_share` consecutive rows continues the same prompt (GRPO's candidates
    of one question: `experience.collect` repeats each prompt's rows). The prompt then goes
    through the decoder once per run, not once per row, and the rows' completions attend to its
    keys and values; the result equals the per-row pass (to float rounding), gradients too. With
    long video prompts and short completions this divides the step's work by up to `prefix_share`.
    Only valid when those rows' prompt fields are equal: the caller vouches for it.
    """
    n, t = seqs.prompt_mask.shape
    m = seqs.completions.shape[1]
    dtype = model.model.dtype
    completion_pos = seqs.next_position[:, None] + jnp.arange(m)[None, :]
    kv_valid = jnp.concatenate([seqs.prompt_mask, seqs.completion_mask], axis=1)
    completion_embeds = model.model.embed_tokens(seqs.completions).astype(dtype)
    if prefix_share > 1:
        if n % prefix_share:
            raise ValueError(f"{n} rows do not split into runs of {prefix_share} rows sharing a prompt")
        first = lambda a, axis=0: jnp.take(  # noqa: E731
            a.reshape(*a.shape[:axis], n // prefix_share, prefix_share, *a.shape[axis + 1:]), 0, axis=axis + 1)
        p_mask = first(seqs.prompt_mask)
        prompt = (first(seqs.prompt_embeds), first(seqs.prompt_positions, axis=1),
                  causal_mask(p_mask, jnp.broadcast_to(jnp.arange(t), p_mask.shape)))
        rest = (completion_embeds, jnp.broadcast_to(completion_pos[None], (3, n, m)),
                causal_mask(kv_valid, jnp.broadcast_to(t + jnp.arange(m), (n, m))))
        p_hidden, c_hidden = model.shared_prompt_hidden_states(prompt, rest, prefix_share)
        # The prompt's last position predicts completion token 0; completion position j predicts j + 1.
        last = jnp.repeat(p_hidden[:, t - 1:], prefix_share, axis=0)
        hidden = jnp.concatenate([last, c_hidden[:, :m - 1]], axis=1)
        return _chunked_token_logprobs(model, hidden, seqs.completions, temperature or 1.0, logits_chunk)
    x = jnp.concatenate([seqs.prompt_embeds.astype(dtype), completion_embeds], axis=1)
    positions = jnp.concatenate([seqs.prompt_positions, jnp.broadcast_to(completion_pos[None], (3, n, m))], axis=2)
    q_index = jnp.broadcast_to(jnp.arange(t + m), (n, t + m))
    hidden, _ = model.hidden_states(x, positions, causal_mask(kv_valid, q_index))
    # Position T-1+j predicts completion token j.
    return _chunked_token_logprobs(model, hidden[:, t - 1:t + m - 1], seqs.completions, temperature or 1.0,
                                   logits_chunk)
