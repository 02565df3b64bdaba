"""A short supervised warm-start on synthetic demonstrations (the tiny default job only).

A randomly initialised tiny Thinker cannot discover the <context>/<think>/<answer> form by
sampling, so the default config first fits it to demonstrations built from each synthetic
record's own solution. The demonstrations vary how many sentences about the people they hold
(0–3), so the warm-started policy samples a range of people_focus scores and GRPO has a signal
to climb. The steps are the SFT step (`omni_jax.grpo.supervised`), as `python -m omni_jax.sft` runs.
"""

from __future__ import annotations

import numpy as np

from omni_jax.grpo.supervised import completion_tokens

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
    """int32[B, M] demonstration ids ending in <|im_end|> (padded) and bool[B, M] mask: the SFT
    step's targets (`supervised.completion_tokens`)."""
    rng = np.random.default_rng(seed)
    ids, mask, _ = completion_tokens([demonstration(rec, rng) for rec in records], tokenizer, max_new_tokens)
    return ids, mask
