"""The instruction-following probe: six instructions appended to a sample of questions.

The recipe's plan tested the base model with six instructions and found it followed 1 of 6
(the people-focus one); the same six are re-run after training so that general instruction
following can be shown not to drop. Each instruction has an automatic checker of the whole
completion (`check(output) -> bool`). The rules, decided here since the plan gives only the
instructions:

- people_focus: the people_focus keyword score of the <think> block (the reward's own definition,
  recipe defaults) is ≥ `PEOPLE_FOCUS_THRESHOLD` = 0.5, i.e. a weighted keyword count of ≥ 10 with
  the default normaliser 20. The plan saw 3–5 people words without the instruction and 12–18 with
  it; the threshold sits between the two.
- timestamps: at least one mark written exactly as asked, `[Frame N: T.XXs]` (N and the seconds
  are digits, exactly two decimals, "Frame" capitalised).
- numbered_steps: "Step 1" and "Step 2" (any case, "Step 1:" and "Step 1." also count) appear, and
  the step numbers in order of first appearance run 1, 2, 3, … with no gap or jump back.
- bold: at least one non-empty `**…**` span on one line.
- chinese: the completion (tags removed) is mostly Chinese: CJK ideographs are ≥ 50 % of its
  letters (`text.cjk_share`); an MC answer letter alone does not change that much.
- short_think: a complete <think> block with fewer than 100 words (`text.word_count`: a CJK
  ideograph counts as a word). A completion without a <think> block fails: the instruction asks
  to shorten the block, not to drop it.

`probe_rows(rows, per_instruction, seed)` draws one seeded sample of `per_instruction` questions
and pairs each with all six instructions (the same questions for every instruction and every
checkpoint, so rates compare). The runner appends "\\n" + row["instruction"] to the user's text.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np

from omni_jax.eval import text
from omni_jax.rewards import people_focus

PEOPLE_FOCUS_THRESHOLD = 0.5
MAX_THINK_WORDS = 100
MIN_CJK_SHARE = 0.5

_TIMESTAMP = re.compile(r"\[Frame \d+: \d+\.\d{2}s\]")
_STEP = re.compile(r"\bstep\s+(\d+)\b", re.IGNORECASE)
_BOLD = re.compile(r"\*\*(?=[^*\n]*[^\s*])[^*\n]+\*\*")


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One probe instruction: its short name, the text appended to the question, its checker."""

    name: str
    text: str
    check: Callable[[str], bool]


def follows_people_focus(output: str) -> bool:
    return people_focus.score_text(output) >= PEOPLE_FOCUS_THRESHOLD


def follows_timestamps(output: str) -> bool:
    return _TIMESTAMP.search(output) is not None


def follows_numbered_steps(output: str) -> bool:
    order: list[int] = []
    for match in _STEP.finditer(output):
        number = int(match.group(1))
        if number not in order:
            order.append(number)
    return len(order) >= 2 and order == list(range(1, len(order) + 1))


def follows_bold(output: str) -> bool:
    return _BOLD.search(output) is not None


def follows_chinese(output: str) -> bool:
    share = text.cjk_share(output)
    return share is not None and share >= MIN_CJK_SHARE


def follows_short_think(output: str) -> bool:
    think = text.think_text(output)
    return think is not None and text.word_count(think) < MAX_THINK_WORDS


INSTRUCTIONS: tuple[Instruction, ...] = (
    Instruction("people_focus",
                "Focus on people in the video and describe their actions, expressions, and interactions in detail",
                follows_people_focus),
    Instruction("timestamps", "Include timestamp for key observations using format [Frame N: T.XXs]",
                follows_timestamps),
    Instruction("numbered_steps", "Number your reasoning steps as Step 1, Step 2, etc.", follows_numbered_steps),
    Instruction("bold", "Highlight important observations using **bold**", follows_bold),
    Instruction("chinese", "Answer in Chinese", follows_chinese),
    Instruction("short_think", "Keep <think> under 100 words", follows_short_think),
)
BY_NAME = {instruction.name: instruction for instruction in INSTRUCTIONS}


def check(name: str, output: str) -> bool:
    """Whether `output` follows the probe instruction `name`."""
    if name not in BY_NAME:
        raise ValueError(f"unknown probe instruction {name!r}; known: {list(BY_NAME)}")
    return bool(BY_NAME[name].check(output))


def probe_rows(rows: list[dict], per_instruction: int, seed: int) -> list[dict]:
    """Copies of `min(per_instruction, len(rows))` seeded-sampled rows for each instruction, with
    `probe` (name), `instruction` (text) and `id` = "<row id>#probe:<name>" (the original id kept
    as `probe_of`). Sampled rows keep their order in `rows`; the output is grouped by instruction.
    """
    if per_instruction < 0:
        raise ValueError(f"per_instruction must be ≥ 0, got {per_instruction}")
    for index, row in enumerate(rows):
        if "id" not in row:
            raise ValueError(f"row {index} has no 'id'; give every row an id before sampling probe rows")
    count = min(per_instruction, len(rows))
    picked = np.sort(np.random.default_rng(seed).choice(len(rows), size=count, replace=False))
    out = []
    for instruction in INSTRUCTIONS:
        for index in picked:
            row = dict(rows[int(index)])
            row.update(probe=instruction.name, instruction=instruction.text,
                       probe_of=row["id"], id=f"{row['id']}#probe:{instruction.name}")
            out.append(row)
    return out
