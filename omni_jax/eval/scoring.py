"""Benchmark scoring: HumanOmniV2's eval rules (`eval/eval_humanomniv2.py`), with its bugs fixed.

`score(problem_type, prediction, ground_truth)` scores the extracted <answer> of a completion:

- "multiple choice": 1 when the stripped strings are equal ("A" == " A "; "A." ≠ "A"), as
  HumanOmniV2 (the prompt asks for the letter only).
- "numerical": 0 when exactly one of the two contains "." or ","; else both parsed (commas
  removed) and equal after round(…, 2); unparsable → 0. Same as HumanOmniV2 (and the training
  reward, whose rule is reused).
- "regression": mean relative accuracy, the share of thresholds θ ∈ {0.50, 0.55, …, 0.95} with
  |p − t| / (|t| + 1e-8) < 1 − θ, in float32 as HumanOmniV2's torch code computes it (so the
  boundary cases agree). Unparsable → 0. (The training reward uses 1 − relative error instead.)
- "emer_ov_mc": F1 of the comma-separated label *sets*. * HumanOmniV2 compared unstripped labels
  and divided by list lengths, so "A, E" scored 0.5 against "A,E", and "A,A" only 2/3 against
  "A"; here labels are stripped, empty labels and duplicates dropped (the training reward's
  rule, reused).
- "judge": * the first whole word "yes"/"no" of each side must agree (the training reward's rule,
  reused). HumanOmniV2 gave 1 when "yes" was a substring of both, or "no" of both: "I don't
  know" and "not sure" counted as "no", and any answer holding both words matched everything.
- "free-form" and "OCR": * normalised exact match and 1 − word error rate (the training reward's
  rules). HumanOmniV2's eval scored every other type 0.
- an empty prediction (no <answer> block, or an empty one) scores 0. * HumanOmniV2 replaced an
  empty answer with the loop variable `model_output`: the decoded completion of another
  question (the last one its rank generated), so an empty answer could score against another
  question's text, e.g. 1 on a judge question whenever that text held "no".
- an unknown problem_type raises `UnknownProblemType` (HumanOmniV2 scored it 0 silently).

`score_humanomniv2` keeps HumanOmniV2's literal rules (except the `model_output` substitution,
which depends on the run's order) so that a result row also carries the number its script would
have given (`reward_humanomniv2`) and accuracies compare with published ones.

`score_row(row, output)` turns a benchmark row and its completion into a result row: the answer,
both rewards, the <think> length in words and its people_focus counts, and the probe verdict.
"""

from __future__ import annotations

import numpy as np

from omni_jax.eval import probe, text
from omni_jax.rewards import accuracy
from omni_jax.rewards import keywords as kw
from omni_jax.rewards import people_focus

SUPPORTED_TYPES = accuracy.PROBLEM_TYPES
# float32 thresholds 0.50, 0.55, …, 0.95 (HumanOmniV2: torch.arange(0.5, 0.975, 0.05, float32)).
MRA_THRESHOLDS = np.arange(0.5, 0.95 + 0.025, 0.05).astype(np.float32)


class UnknownProblemType(ValueError):
    """A row's problem_type is none of `SUPPORTED_TYPES`."""


def _check_type(problem_type: str) -> None:
    if problem_type not in SUPPORTED_TYPES:
        raise UnknownProblemType(f"unknown problem_type {problem_type!r}; supported: {list(SUPPORTED_TYPES)}")


def extract_answer(text_: str) -> str:
    """The stripped content of the first <answer>…</answer>; "" when there is none."""
    return accuracy.extract_answer(text_) or ""


def mean_relative_accuracy(prediction: float, truth: float) -> float:
    """Share of the thresholds θ = 0.50…0.95 where |p − t| / (|t| + 1e-8) < 1 − θ (float32)."""
    p, t = np.float32(prediction), np.float32(truth)
    with np.errstate(all="ignore"):
        relative_error = np.abs(p - t) / (np.abs(t) + np.float32(1e-8))
        hits = relative_error < (np.float32(1.0) - MRA_THRESHOLDS)
    return float(hits.astype(np.float32).mean())


def _number(value: str) -> float | None:
    try:
        return float(value.replace(",", ""))
    except ValueError:
        return None


def score(problem_type: str, prediction: str, ground_truth: str) -> float:
    """Reward in [0, 1] of one extracted answer (rules in the module docstring)."""
    _check_type(problem_type)
    prediction, ground_truth = prediction.strip(), ground_truth.strip()
    if not prediction:
        return 0.0
    if problem_type == "regression":
        p, t = _number(prediction), _number(ground_truth)
        return 0.0 if p is None or t is None else mean_relative_accuracy(p, t)
    return float(accuracy.score(problem_type, prediction, ground_truth)[0])


def score_humanomniv2(problem_type: str, prediction: str, ground_truth: str) -> float:
    """HumanOmniV2's eval `reward_fn` rules as written, for comparison with published numbers.

    Differs from `score` on emer_ov_mc (unstripped labels, list lengths), judge (substrings),
    free-form / OCR (0) and an empty prediction (scored as the empty string here; HumanOmniV2
    substituted another question's completion). Unknown types still raise.
    """
    _check_type(problem_type)
    if problem_type == "emer_ov_mc":
        gt, out = ground_truth.split(","), prediction.split(",")
        hits = len(set(gt) & set(out))
        precision, recall = hits / len(out), hits / len(gt)
        return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    if problem_type == "judge":
        gt, out = ground_truth.lower(), prediction.lower()
        return float(("yes" in gt and "yes" in out) or ("no" in gt and "no" in out))
    if problem_type in ("free-form", "OCR"):
        return 0.0
    if problem_type == "multiple choice":
        return float(prediction.strip() == ground_truth.strip())
    if problem_type == "numerical":
        return float(accuracy.score(problem_type, prediction, ground_truth)[0])
    p, t = _number(prediction), _number(ground_truth)
    return 0.0 if p is None or t is None else mean_relative_accuracy(p, t)


def people_focus_of(output: str, spec: kw.PeopleFocusSpec) -> dict:
    """{"score", <category>: count …} of the completion's <think> (the reward's definition).

    Without a complete <think> block (and the default missing_think="zero") the score and the
    counts are 0.
    """
    counts = people_focus.count_text(output, spec)
    result = {"score": people_focus.score_counts(counts, spec)}
    for name, count in zip(spec.categories, counts or [0] * len(spec.categories)):
        result[name] = count
    return result


def score_row(row: dict, output: str, *, people_focus_cfg=None, index: int | None = None) -> dict:
    """A new result row: `row`'s fields plus

    output, prediction (extracted answer, "" when none), ground_truth, reward (0..1, `score`),
    reward_humanomniv2 (`score_humanomniv2`), has_think (bool), think_words (int, 0 without a
    <think>), people_focus ({"score", "people", "action", "environment"} for the default keyword
    lists), and probe_ok (bool) when row["probe"] names a probe instruction.

    A row with an unknown problem_type or without a ground truth raises ValueError naming the row
    (its id, else `index`).
    """
    name = row.get("id", index)
    problem_type = row.get("problem_type")
    try:
        _check_type(problem_type)
    except UnknownProblemType as error:
        raise UnknownProblemType(f"row {name!r}: {error}") from None
    try:
        truth = accuracy.ground_truth(row)
    except ValueError:
        raise ValueError(
            f"row {name!r} (problem_type {problem_type!r}) has no ground truth: it needs a 'solution' "
            "with <answer>…</answer> or an 'answer' field"
        ) from None
    prediction = extract_answer(output)
    think = text.think_text(output)
    result = dict(row)
    result.update(
        output=output,
        prediction=prediction,
        ground_truth=truth,
        reward=score(problem_type, prediction, truth),
        reward_humanomniv2=score_humanomniv2(problem_type, prediction, truth),
        has_think=think is not None,
        think_words=0 if think is None else text.word_count(think),
        people_focus=people_focus_of(output, kw.resolve(people_focus_cfg)),
    )
    if row.get("probe"):
        result["probe_ok"] = probe.check(row["probe"], output)
    return result
