"""A small evaluation inside the training loop (`config.eval`), as metric scalars.

    evaluator = TrainingEval(config, tokenizer, layout)  # None-safe: evaluator.due(step) is False when off
    scalars.update(evaluator(policy))                      # eval/accuracy, eval/people_focus/score, ...

The questions (`config.eval.split`: held-out synthetic questions or the first `size` of a benchmark)
are read once; each evaluation answers them greedily with the current policy through the same
runner as `python -m omni_jax.eval` (batched over the run's `parallel.Layout`: its mesh and rules,
every process the same program), with the run's own prompt settings in HumanOmniV2's evaluation
layout.
"""

from __future__ import annotations

import logging

from omni_jax import parallel
from omni_jax.eval import datasets, report, runner

log = logging.getLogger("omni_jax.train")


class TrainingEval:
    def __init__(self, config, tokenizer, layout: parallel.Layout | None = None):
        """layout: the run's mesh and rules the questions are answered on (None: one device)."""
        e = config.get("eval")
        self.every = int(e.every_steps) if e is not None else 0
        self.tokenizer, self.layout = tokenizer, layout
        if not self.every:
            return
        self.data_cfg = config.data.copy_and_resolve_references()
        with self.data_cfg.unlocked():
            self.data_cfg.prompt_style = "eval"
        self.batch_size = int(e.batch_size)
        self.max_new_tokens = int(e.max_new_tokens) or int(config.rollout.max_new_tokens)
        self.items, self.skipped = datasets.items_for_split(
            e.split, int(e.size), data_dir=e.data_dir, seed=int(e.seed), synthetic_cfg=config.data.synthetic)
        if not self.items:
            raise ValueError(f"eval.split {e.split!r}: no usable question ({len(self.skipped)} skipped)")

    def due(self, step: int, done: bool = False) -> bool:
        """Whether to evaluate after `step` optimizer steps (every `every_steps`, and at the end)."""
        return bool(self.every) and (step % self.every == 0 or done)

    def __call__(self, model) -> dict[str, float]:
        out = runner.evaluate(model, self.tokenizer, self.data_cfg, self.items, batch_size=self.batch_size,
                              max_new_tokens=self.max_new_tokens, layout=self.layout, progress=False)
        return scalars(report.summarize(out.results), out, len(self.skipped))


def scalars(summary: dict, out: runner.EvalOutput, skipped_at_load: int = 0) -> dict[str, float]:
    """Flat metric names of a `report.summarize` summary (means only)."""
    def mean(node):
        return None if not node else node.get("mean")

    values = {"eval/accuracy": mean(summary.get("accuracy")),
              "eval/questions": float(summary.get("n", 0)),
              "eval/skipped": float(len(out.skipped) + skipped_at_load),
              "eval/questions_per_s": out.questions_per_s}
    for name, node in (summary.get("people_focus") or {}).items():
        values[f"eval/people_focus/{name}"] = mean(node)
    for name, node in (summary.get("by_category") or {}).items():
        values[f"eval/category/{name}"] = mean(node)
    return {k: float(v) for k, v in values.items() if v is not None}
