"""accuracy reward: does the completion's <answer> match the record's ground truth?

Rules by the record's `problem_type` (HumanOmniV2's `accuracy_reward`, per record rather than by the
batch's first record, with the differences marked *):
- "multiple choice": stripped strings equal ("A" == "A"; "A." ≠ "A", as HumanOmniV2: the prompt
  asks for the letter only);
- "numerical": 0 when exactly one of the two has a "." or ","; otherwise float(x without ",")
  rounded to 2 decimals must be equal;
- "emer_ov_mc": F1 between the comma-separated label *sets* (* labels stripped of whitespace,
  duplicates ignored; HumanOmniV2 compares unstripped lists, so "A, B" scored 0.5 against "A,B");
- "free-form": * normalised exact match (lower case, punctuation and the articles a/an/the dropped,
  whitespace collapsed) instead of HumanOmniV2's LLM judge;
- "OCR": 1 − word error rate, clipped to [0, 1];
- "regression": 1 − min(1, |out − gt| / |gt|) (with HumanOmniV2's 1e-9 guards);
- "judge": * the first whole word "yes"/"no" of each must agree (HumanOmniV2 tested substrings, so
  "not" and "know" counted as "no").

The ground truth is the <answer> of the record's `solution` (HumanOmniV2 data), else its `answer`.
A completion without an <answer> block, or with a number that does not parse, scores 0 and the
reason is counted. An unknown problem_type is an error naming the record: zeros would silently
take the accuracy signal out of training; validate the data up front with `check_records`.
"""

from __future__ import annotations

import collections
import re
import string
import unicodedata

import numpy as np

PROBLEM_TYPES = ("multiple choice", "numerical", "emer_ov_mc", "free-form", "OCR", "regression", "judge")
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_YES_NO = re.compile(r"\b(yes|no)\b")


def extract_answer(text: str) -> str | None:
    """The stripped content of the first <answer>…</answer>, or None without one."""
    match = _ANSWER.search(text)
    return match.group(1).strip() if match else None


def ground_truth(record: dict, index: int = 0) -> str:
    """The reference answer of a record: <answer> of `solution`, else `answer`."""
    solution = record.get("solution")
    if isinstance(solution, str) and (found := extract_answer(solution)) is not None:
        return found
    if record.get("answer") is not None:
        return str(record["answer"]).strip()
    raise ValueError(
        f"record {index} (problem_type {record.get('problem_type')!r}) has no ground truth: it needs "
        "a 'solution' with <answer>…</answer> or an 'answer' field"
    )


def check_records(records: list[dict]) -> None:
    """Raise a clear error for the first record that accuracy cannot score."""
    for i, record in enumerate(records):
        if record.get("problem_type") not in PROBLEM_TYPES:
            raise ValueError(
                f"record {i} has problem_type {record.get('problem_type')!r}; accuracy supports "
                f"{list(PROBLEM_TYPES)}: fix the data source or drop these records"
            )
        ground_truth(record, i)


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def _labels(text: str) -> set[str]:
    return {label.strip() for label in text.split(",") if label.strip()}


def _normalise(text: str) -> str:
    text = "".join(" " if unicodedata.category(c).startswith("P") or c in string.punctuation else c
                   for c in text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def _word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = reference.split(), hypothesis.split()
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(previous[j - 1] if r == h else 1 + min(previous[j], current[j - 1], previous[j - 1]))
        previous = current
    return previous[-1] / max(1, len(ref))


def score(problem_type: str, output: str, truth: str) -> tuple[float, str | None]:
    """(reward in [0, 1], reason for a forced 0 or None) of one extracted answer."""
    if problem_type == "multiple choice":
        return float(output == truth), None
    if problem_type == "numerical":
        if any(c in truth for c in ".,") != any(c in output for c in ".,"):
            return 0.0, None
        gt, out = _number(truth), _number(output)
        if gt is None or out is None:
            return 0.0, "unparsable_number"
        return float(round(gt, 2) == round(out, 2)), None
    if problem_type == "emer_ov_mc":
        gt, out = _labels(truth), _labels(output)
        hits = len(gt & out)
        return (2 * hits / (len(gt) + len(out)) if hits else 0.0), None
    if problem_type == "free-form":
        return float(_normalise(output) == _normalise(truth)), None
    if problem_type == "OCR":
        return min(1.0, max(0.0, 1.0 - _word_error_rate(truth, output))), None
    if problem_type == "regression":
        gt, out = _number(truth), _number(output)
        if gt is None or out is None:
            return 0.0, "unparsable_number"
        return 1.0 - min(1.0, (abs(out - gt) + 1e-9) / (abs(gt) + 1e-9)), None
    if problem_type == "judge":
        gt, out = _YES_NO.search(truth.lower()), _YES_NO.search(output.lower())
        return float(gt is not None and out is not None and gt.group(1) == out.group(1)), None
    raise ValueError(f"unknown problem_type {problem_type!r}; supported: {list(PROBLEM_TYPES)}")


def accuracy_rewards(completions: list[str], records: list[dict]) -> tuple[np.ndarray, collections.Counter]:
    """float32[N] accuracy of N completions against their records, and counted zero reasons
    ("no_answer", "unparsable_number")."""
    if len(completions) != len(records):
        raise ValueError(f"{len(completions)} completions but {len(records)} records")
    check_records(records)
    rewards = np.zeros(len(completions), np.float32)
    reasons: collections.Counter = collections.Counter()
    for i, (completion, record) in enumerate(zip(completions, records)):
        output = extract_answer(completion)
        if output is None:
            reasons["no_answer"] += 1
            continue
        rewards[i], reason = score(record["problem_type"], output, ground_truth(record, i))
        if reason:
            reasons[reason] += 1
    return rewards, reasons
