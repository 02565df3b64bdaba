"""people_focus reward: weighted keyword counts over the <think> block, clipped to [0, 1].

Two implementations with one meaning:
- `score_text(text, cfg)`: the plain-Python reference on decoded text;
- `build(tokenizer, cfg)`: a jitted `fn(ids: int32[B, T], mask: bool[B, T]) -> float32[B]` that
  gets the same counts on the device straight from sampled token ids (no host decode),
  whatever the tokenisation (see `people_focus_device`).

Semantics (the reference below is their definition):
1. the text is taken as UTF-8 bytes; the block is the bytes between the first "<think>" and the
   first "</think>" after it (tags are exact, lower case);
2. no complete block → `missing_think` policy: "zero" gives 0, "whole_text" scores all bytes;
3. words, phrases and occurrences as in `keywords` (ASCII letter runs, case folded; phrases joined
   by whitespace/hyphens; an occurrence inside a longer keyword's occurrence does not count);
4. raw = Σ_c count_c · weight_c; score = clip(raw / normaliser, 0, 1).
"""

from __future__ import annotations

import ml_collections

from omni_jax.rewards import keywords as kw
from omni_jax.rewards import people_focus_device
from omni_jax.rewards.keywords import CLOSE_TAG, OPEN_TAG


def think_block(data: bytes) -> bytes | None:
    """Bytes between the first "<think>" and the first "</think>" after it; None if incomplete."""
    start = data.find(OPEN_TAG)
    if start < 0:
        return None
    end = data.find(CLOSE_TAG, start + len(OPEN_TAG))
    return None if end < 0 else data[start + len(OPEN_TAG) : end]


def count_words(words: list[tuple[str, bool]], spec: kw.PeopleFocusSpec) -> list[int]:
    """Counted keyword occurrences per category in a word list from `keywords.words_with_joins`."""
    lengths = sorted({len(k) for k in spec.keywords})
    found: dict[tuple[int, int], int] = {}  # (first word index, number of words) → category
    for i in range(len(words)):
        for n in lengths:
            if i + n > len(words) or not all(words[j][1] for j in range(i + 1, i + n)):
                continue
            category = spec.keywords.get(tuple(w for w, _ in words[i : i + n]))
            if category is not None:
                found[(i, n)] = category
    counts = [0] * len(spec.categories)
    for (i, n), category in found.items():
        inside_longer = any(
            (s, m) in found for m in lengths if m > n for s in range(i + n - m, i + 1)
        )
        if not inside_longer:
            counts[category] += 1
    return counts


def count_text(text: str, cfg: ml_collections.ConfigDict | kw.PeopleFocusSpec | None = None) -> list[int] | None:
    """Counts per category (order: `resolve(cfg).categories`) in the scored part of `text`.

    None when there is no complete think block and the policy is "zero".
    """
    spec = kw.resolve(cfg)
    data = text.encode("utf-8", "surrogatepass")
    block = think_block(data)
    if block is None:
        if spec.missing_think == "zero":
            return None
        block = data
    return count_words(kw.words_with_joins(block), spec)


def score_counts(counts: list[int] | None, spec: kw.PeopleFocusSpec) -> float:
    """clip(Σ count·weight / normaliser, 0, 1); 0 for None (no think block under "zero")."""
    if counts is None:
        return 0.0
    raw = sum(c * w for c, w in zip(counts, spec.weights))
    return min(max(raw / spec.normaliser, 0.0), 1.0)


def score_text(text: str, cfg: ml_collections.ConfigDict | kw.PeopleFocusSpec | None = None) -> float:
    """The reference people_focus score of one completion (cfg None → the recipe's defaults).

    cfg may also be a `keywords.PeopleFocusSpec` from `keywords.resolve(cfg)`, which skips the
    per-call config lookup when scoring many texts.
    """
    spec = kw.resolve(cfg)
    return score_counts(count_text(text, spec), spec)


def build(tokenizer, cfg: ml_collections.ConfigDict | kw.PeopleFocusSpec | None = None):
    """A jitted `fn(ids: int32[B, T], mask: bool[B, T]) -> float32[B]` equal to
    `score_text(tokenizer.decode(ids[b][mask[b]], skip_special_tokens=True), cfg)` for every row:
    the keyword counts exactly, the score up to float32 rounding (≤ 1e-6).

    Tokens where mask is False are skipped (as if cut out of the sequence); special tokens decode
    to nothing, as with skip_special_tokens=True; ids outside the tokenizer also decode to nothing.
    Needs a byte-level BPE tokenizer (Qwen2.5-Omni's is one). Building the tables takes ~2.5 s for a
    151k vocabulary; the function compiles once per (B, T). `fn.tables` holds the host tables.
    """
    return people_focus_device.build_scorer(tokenizer, kw.resolve(cfg))
