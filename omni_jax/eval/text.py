"""Plain-text measures of a completion shared by scoring and the probe checkers.

- `think_text(output)`: the text between the first "<think>" and the first "</think>" after it
  (the block the people_focus reward scores), stripped; None without a complete block.
- `word_count(text)`: words as a reader counts them in English or Chinese: each CJK ideograph is
  one word (Chinese has no spaces), every other whitespace-separated run that holds a letter or a
  digit is one word ("**", "-", "。" alone are not words).
- `cjk_share(text)`: CJK ideographs / (CJK ideographs + Latin letters), the tags
  `<context>`, `<think>`, `<answer>` (and their closing forms) removed first; digits, punctuation
  and spaces are neutral; None when the text has neither.
"""

from __future__ import annotations

import re

from omni_jax.rewards import people_focus

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_CJK_CHAR = re.compile(rf"[{_CJK}]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_TAGS = re.compile(r"</?(?:context|think|answer)>")


def think_text(output: str) -> str | None:
    """The stripped <think> block of a completion, or None without a complete one."""
    block = people_focus.think_block(output.encode("utf-8", "surrogatepass"))
    return None if block is None else block.decode("utf-8", "replace").strip()


def word_count(text: str) -> int:
    """Number of words in `text` (a CJK ideograph is one word)."""
    return sum(1 for token in _WORD.findall(text) if any(c.isalnum() for c in token))


def cjk_share(text: str) -> float | None:
    """Share of CJK ideographs among the letters of `text` (tags removed); None without letters."""
    text = _TAGS.sub(" ", text)
    cjk, latin = len(_CJK_CHAR.findall(text)), len(_LATIN.findall(text))
    return None if cjk + latin == 0 else cjk / (cjk + latin)
