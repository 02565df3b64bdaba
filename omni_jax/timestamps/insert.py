"""Write `[Frame N: T.XXs]` marks into the think block, never anywhere else.

For each event, in order:
1. exact: the event's located anchor span (`Event.start/end`) or the anchor text found in the
   think block → the mark goes right after it;
2. fuzzy: the window of the think block most similar to the anchor (difflib ratio >= `min_ratio`,
   ended at a word boundary) → the mark goes after that window;
3. fallback: the line `- <query> [Frame N: T.XXs]` is added at the end of the think block, just
   before `</think>`.
A mark is never written where one already follows the anchor (or where the same fallback line
exists), so running the post-processor twice inserts nothing the second time. Marks contain no
`<` or `>`, and every insertion point lies inside the think block's content, so the
<context>/<think>/<answer> structure is unchanged.
"""

from __future__ import annotations

import difflib
import re

from omni_jax.timestamps.events import MARK, Event, locate, think_span

_WORD_END = re.compile(r"\w\b")


def mark(frame: int, time_s: float) -> str:
    return f"[Frame {frame}: {time_s:.2f}s]"


def fuzzy_find(text: str, anchor: str, min_ratio: float) -> tuple[int, int, float]:
    """(start, end, ratio) of the best window of `text` for `anchor`, or (-1, -1, best ratio)."""
    n = len(anchor)
    if n == 0 or not text:
        return -1, -1, 0.0
    best = (-1, -1, 0.0)
    lower, target = text.lower(), anchor.lower()
    matcher = difflib.SequenceMatcher(autojunk=False)
    matcher.set_seq2(target)
    for start in range(0, max(1, len(text) - n // 2)):
        if start and text[start - 1].isalnum():  # windows start at a word
            continue
        for size in {n, max(1, n - 3), n + 3}:
            window = lower[start:start + size]
            matcher.set_seq1(window)
            if matcher.real_quick_ratio() <= best[2] or matcher.quick_ratio() <= best[2]:
                continue
            ratio = matcher.ratio()
            if ratio > best[2]:
                best = (start, start + len(window), ratio)
    if best[2] < min_ratio:
        return -1, -1, best[2]
    start, end, ratio = best
    # End on a word boundary: extend over a cut word.
    while end < len(text) and text[end - 1].isalnum() and text[end].isalnum():
        end += 1
    return start, end, ratio


def insert_marks(completion: str, events: list[Event], frames, times, *, min_ratio: float = 0.8) -> tuple[str, list[str]]:
    """The completion with one mark per event, and how each was placed ("exact", "fuzzy",
    "fallback", or "present" when a mark was already there)."""
    lo, hi = think_span(completion)
    placements, spans = [], []  # spans: (position, text) to insert, applied from the end
    fallback_lines = []
    body = completion[lo:hi]
    for event, frame, t in zip(events, frames, times, strict=True):
        text = mark(int(frame), float(t))
        start, end = event.start, event.end
        if not (lo <= start < end <= hi and completion[start:end] == event.anchor):
            start, end = locate(completion, event.anchor, lo, hi)
        how = "exact"
        if start < 0:
            fs, fe, _ = fuzzy_find(body, event.anchor, min_ratio)
            start, end, how = (lo + fs, lo + fe, "fuzzy") if fs >= 0 else (-1, -1, "fallback")
        if how == "fallback":
            line = f"- {event.query} {text}"
            if line in body or line in fallback_lines:
                how = "present"
            else:
                fallback_lines.append(line)
        elif MARK.match(completion, end):
            how = "present"
        else:
            spans.append((end, " " + text))
        placements.append(how)
    out = completion
    if fallback_lines:
        tail = ("" if body.endswith("\n") else "\n") + "\n".join(fallback_lines) + "\n"
        out = out[:hi] + tail + out[hi:]
    for pos, text in sorted(spans, reverse=True):
        out = out[:pos] + text + out[pos:]
    return out, placements
