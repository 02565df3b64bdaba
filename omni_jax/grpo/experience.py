"""One step's experience: rollout → rewards → group advantages → the train step's batch.

Every process holds the same global batch of prompts (see trainer), so every process computes
the same rewards from the same decoded text; device arrays are global and sharded by rows.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from omni_jax import parallel
from omni_jax.grpo.advantages import group_advantages
from omni_jax.grpo.logprobs import Sequences
from omni_jax.grpo.step import GRPOBatch
from omni_jax.model.inputs import ModelInputs, next_position_ids
from omni_jax.rollout import generate


@dataclasses.dataclass
class Experience:
    """One rollout's result for the learner: the GRPO batch (sequences, masks, advantages,
    log-probabilities) plus the rewards per component, texts, lengths and counters for logging.
    """
    batch: GRPOBatch  # device arrays, rows sharded over the batch axes
    sampler_logp: jax.Array  # float32[N, M]: the sampler's log-probs (old log-probs when reused)
    rewards: dict[str, np.ndarray]  # "total" and each component, float32[N]
    texts: list[str]
    lengths: np.ndarray  # int32[N]
    stats: dict[str, float]
    seconds: dict[str, float]


def to_host(x) -> np.ndarray:
    """The full value of a (possibly multi-process) global array on this host."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def collect(model, inputs: ModelInputs, records: list[dict], *, rollout_cfg, scale_rewards: str, tokenizer,
            reward_fn: Callable, seed, layout: parallel.Layout | None) -> Experience:
    """Sample `num_generations` completions per prompt, score them, build the GRPO batch (rows
    sharded on `layout`; None: one device)."""
    g = int(rollout_cfg.num_generations)
    t0 = time.perf_counter()
    out = generate(model, inputs, num_samples=g, max_new_tokens=int(rollout_cfg.max_new_tokens),
                   temperature=float(rollout_cfg.temperature), top_p=float(rollout_cfg.top_p),
                   top_k=int(rollout_cfg.top_k), seed=seed, eos_token_ids=[tokenizer.eos_token_id],
                   pad_token_id=tokenizer.pad_token_id, layout=layout,
                   cache_dtype=rollout_cfg.cache_dtype or None)
    tokens, mask, lengths = to_host(out.tokens), to_host(out.mask), to_host(out.lengths)
    t1 = time.perf_counter()
    texts = tokenizer.batch_decode([row[:n] for row, n in zip(tokens, lengths)], skip_special_tokens=True)
    row_records = [r for r in records for _ in range(g)]
    rewards, stats = reward_fn(texts, tokens, mask, row_records)  # host arrays: same on every process
    t2 = time.perf_counter()

    rows = lambda x, axis=0: jnp.repeat(jnp.asarray(x), g, axis=axis)  # noqa: E731
    seqs = Sequences(prompt_embeds=rows(out.prompt_embeds), prompt_positions=rows(inputs.position_ids, axis=1),
                     prompt_mask=rows(inputs.attention_mask), completions=out.tokens, completion_mask=out.mask,
                     next_position=rows(next_position_ids(inputs.position_ids, inputs.attention_mask)))
    advantages = group_advantages(jnp.asarray(rewards["total"]), g, scale_rewards)
    batch = GRPOBatch(seqs=seqs, advantages=advantages, old_logp=None, ref_logp=None)
    if layout is not None:
        batch = shard_rows(batch, layout)
    seconds = {"rollout": t1 - t0, "reward": t2 - t1}
    return Experience(batch, out.logprobs, rewards, texts, lengths, stats, seconds)


def row_shardings(tree: Any, layout: parallel.Layout):
    """NamedShardings on `layout` putting the rows of a GRPOBatch / Sequences over the batch mesh axes (positions: axis 1)."""
    def one(path, x):
        name = getattr(path[-1], "name", "")
        axes = [None] * len(x.shape)
        axes[1 if name == "prompt_positions" else 0] = "batch"
        return layout.sharding(tuple(axes), x.shape)
    return jax.tree_util.tree_map_with_path(one, tree)


def shard_rows(tree: Any, layout: parallel.Layout):
    """Place a GRPOBatch / Sequences on `layout` with rows over the batch mesh axes (positions: axis 1)."""
    return jax.device_put(tree, row_shardings(tree, layout))
