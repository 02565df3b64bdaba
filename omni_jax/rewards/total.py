"""The recipe's reward: total = w_format·format + w_accuracy·accuracy + w_people·people_focus.

`RewardFn(tokenizer, cfg.rewards)` is built once (it compiles the on-device people_focus); the
GRPO trainer calls it once per step on the whole batch of sampled completions.
"""

from __future__ import annotations

import collections

import ml_collections
import numpy as np

from omni_jax.rewards import accuracy, format as format_lib, keywords, people_focus
from omni_jax.rewards.judge import Judge

COMPONENTS = ("format", "accuracy", "people_focus")


class RewardFn:
    """`fn(completions, completion_ids, completion_mask, records) -> (total, components, stats)`.

    completions: N decoded completions (skip_special_tokens=True), for format and accuracy;
    completion_ids: int32[N, T] and completion_mask: bool[N, T], the sampled ids (host or device
      arrays) for people_focus on the device; pass None for both to score people_focus from the
      text with the Python reference instead (same numbers, slower);
    records: N dataset records with `problem_type` and `solution` / `answer`.
    Returns total float32[N], {component: float32[N]} and counters {"<group>/<name>": float} (why
    accuracy was 0, judge requests and failures, completions without a think block); the trainer
    logs them as `reward/counters/<group>/<name>` next to each component's `reward/<component>/mean|std`.
    Compiles people_focus once per (N, T).
    """

    def __init__(self, tokenizer, cfg: ml_collections.ConfigDict):
        unknown = set(cfg.weights.keys()) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"rewards.weights has unknown components {sorted(unknown)}; known: {COMPONENTS}")
        self.weights = {name: float(cfg.weights.get(name, 0.0)) for name in COMPONENTS}
        self.require_context = bool(cfg.format.require_context)
        self.spec = keywords.resolve(cfg.people_focus)
        self.people_focus_fn = people_focus.build(tokenizer, self.spec) if tokenizer is not None else None
        self.judge = Judge(cfg.judge) if cfg.judge.enabled else None

    def _people_focus(self, completions, completion_ids, completion_mask) -> np.ndarray:
        if completion_ids is None:
            return np.array([people_focus.score_text(c, self.spec) for c in completions], np.float32)
        if self.people_focus_fn is None:
            raise ValueError("this RewardFn was built without a tokenizer: pass completion_ids=None")
        scores = np.asarray(self.people_focus_fn(completion_ids, completion_mask), np.float32)
        if scores.shape != (len(completions),):
            raise ValueError(f"completion_ids hold {scores.shape[0]} rows for {len(completions)} completions")
        return scores

    def __call__(self, completions, completion_ids, completion_mask, records):
        stats: collections.Counter = collections.Counter()
        components = {"format": format_lib.format_rewards(completions, self.require_context)}
        components["accuracy"], reasons = accuracy.accuracy_rewards(completions, records)
        stats.update({f"accuracy/{k}": v for k, v in reasons.items()})
        keyword_scores = self._people_focus(completions, completion_ids, completion_mask)
        if self.judge is not None:
            components["people_focus"], judge_stats = self.judge(completions, keyword_scores, self.spec.missing_think)
            stats.update(judge_stats)
            components["people_focus_keywords"] = keyword_scores
        else:
            components["people_focus"] = keyword_scores
        stats["people_focus/no_think_block"] = sum(
            people_focus.think_block(c.encode("utf-8", "surrogatepass")) is None for c in completions)
        total = sum(self.weights[name] * components[name] for name in COMPONENTS).astype(np.float32)
        return total, components, {k: float(v) for k, v in stats.items()}
