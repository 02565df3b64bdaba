"""format reward: 1.0 when the completion has <context>…</context><think>…</think><answer>…</answer>
in order, else 0.0 — HumanOmniV2's rule (`qwenomni_module.format_reward`): a regex anchored at the
start only (no leading whitespace; text after </answer> is allowed), blocks matched lazily across
lines, only whitespace between blocks.

`require_context=False` makes the <context> block optional (present or absent both pass).
"""

from __future__ import annotations

import re

import numpy as np

_WITH_CONTEXT = re.compile(r"^<context>.*?</context>\s*<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_CONTEXT_OPTIONAL = re.compile(
    r"^(?:<context>.*?</context>\s*)?<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL
)


def format_reward(completion: str, require_context: bool = True) -> float:
    """1.0 if `completion` is well formed, else 0.0."""
    pattern = _WITH_CONTEXT if require_context else _CONTEXT_OPTIONAL
    return 1.0 if pattern.search(completion) else 0.0


def format_rewards(completions: list[str], require_context: bool = True) -> np.ndarray:
    """float32[N] format rewards of N decoded completions."""
    return np.array([format_reward(c, require_context) for c in completions], np.float32)
