"""Keyword lists → a resolved matching spec, and the byte-level word semantics both people_focus
implementations (plain Python and on-device) share.

What a word is, precisely (text is taken as its UTF-8 bytes):
- a *word* is a maximal run of ASCII letters A–Z / a–z, compared case-insensitively (ASCII
  folding only);
- every other byte separates words: digits ("person1" holds the word "person"), punctuation,
  apostrophes ("man's" → "man", "s"), control bytes and every non-ASCII byte (so "naïve" holds
  "na" and "ve", and "man’s" with a curly apostrophe still holds "man");
- a *joiner* separator is a run made only of ASCII whitespace (space, \\t, \\n, \\r, \\v, \\f)
  and hyphens; any other separator run *breaks* phrases.

A keyword is one word or a phrase of several words. A phrase occurs where its words follow each
other with joiner-only separators between them ("color scheme", "color-scheme", "color \\n
scheme", but not "color. Scheme"). Every occurrence counts (repeated words count each time),
except one lying inside an occurrence of a longer keyword: "body language" counts once, not
also as "body".
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re

import ml_collections

from omni_jax.rewards.config import people_focus_defaults

ASCII_LETTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
JOINER_BYTES = frozenset(b" \t\n\r\x0b\x0c-")
# The reasoning block people_focus scores: the first OPEN_TAG, then the first CLOSE_TAG after it.
OPEN_TAG = b"<think>"
CLOSE_TAG = b"</think>"
_ITEMS = re.compile(rb"([A-Za-z]+)|[^A-Za-z]+")
_VOWELS = "aeiou"
INFLECTIONS = ("none", "noun", "verb")
MISSING_THINK = ("zero", "whole_text")


def _plural(word: str) -> str:
    """English -s form (plural noun or third-person verb) by spelling rule."""
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in _VOWELS:
        return word[:-1] + "ies"
    return word + "s"


def _doubles_final_consonant(word: str) -> bool:
    """One-syllable consonant-vowel-consonant verbs double before -ing/-ed: nod → nodding."""
    groups = re.findall(r"[aeiou]+", word)
    return (
        len(word) >= 3
        and len(groups) == 1
        and word[-1] not in _VOWELS + "wxy"
        and word[-2] in _VOWELS
        and word[-3] not in _VOWELS
    )


def inflect(word: str, kind: str, irregular: list[str] | tuple[str, ...] = ()) -> list[str]:
    """`word` and its inflected forms: kind "none", "noun" (+plural) or "verb" (+s, -ing, -ed).

    `irregular` forms (men, sat, spoken) replace the rule-made plural of a noun or past of a verb
    ("mans", "sitted"), so no junk form is ever listed.
    """
    if kind not in INFLECTIONS:
        raise ValueError(f"inflect must be one of {INFLECTIONS}, got {kind!r}")
    if kind == "none":
        return [word]
    forms = [word]
    if kind == "verb" or not irregular:
        forms.append(_plural(word))
    if kind == "verb":
        if word.endswith("ie"):
            forms += [word[:-2] + "ying", word + "d"]
        elif word.endswith("e") and not word.endswith(("ee", "ye", "oe")):
            forms += [word[:-1] + "ing", word + "d"]
        elif word.endswith("y") and len(word) > 1 and word[-2] not in _VOWELS:
            forms += [word + "ing", word[:-1] + "ied"]
        elif _doubles_final_consonant(word):
            forms += [word + word[-1] + "ing", word + word[-1] + "ed"]
        else:
            forms += [word + "ing", word + "ed"]
        if irregular:
            forms.pop()
    forms += [w.lower() for w in irregular]
    return list(dict.fromkeys(forms))


def split_keyword(keyword: str, where: str) -> tuple[str, ...]:
    """A config keyword ("Body language") → its lower-case words; it must be letters and spaces."""
    words = tuple(keyword.lower().split())
    if not words or not all(w.isascii() and w.isalpha() for w in words):
        raise ValueError(
            f"people_focus keyword {keyword!r} in {where} must be ASCII letters, words separated "
            "by spaces: a word is a run of ASCII letters, so other characters could never match"
        )
    return words


@dataclasses.dataclass(frozen=True)
class PeopleFocusSpec:
    """A resolved people_focus config: every keyword form → its category, plus the scoring numbers.

    keywords: {("body", "language"): category index, ("smiled",): ..., ...}
    categories: category names (sorted, as ConfigDict orders them); weights: float per category.
    """

    keywords: dict[tuple[str, ...], int]
    categories: tuple[str, ...]
    weights: tuple[float, ...]
    normaliser: float
    missing_think: str

    @property
    def max_phrase_words(self) -> int:
        return max((len(k) for k in self.keywords), default=1)


def _resolve(cfg: ml_collections.ConfigDict) -> PeopleFocusSpec:
    irregular = {k.lower(): list(v) for k, v in dict(cfg.get("irregular_forms", {}) or {}).items()}
    keywords: dict[tuple[str, ...], int] = {}
    owner: dict[tuple[str, ...], str] = {}
    names = tuple(cfg.categories.keys())
    for index, name in enumerate(names):
        cat = cfg.categories[name]
        where = f"people_focus.categories.{name}.words"
        for keyword in cat.words:
            *head, last = split_keyword(keyword, where)
            for form in inflect(last, cat.inflect, irregular.get(last, ())):
                key = (*head, split_keyword(form, "people_focus.irregular_forms")[0])
                if key in owner and owner[key] != name:
                    raise ValueError(
                        f"people_focus keyword form {' '.join(key)!r} (from {keyword!r}) is in both "
                        f"categories {owner[key]!r} and {name!r}: remove it from one list"
                    )
                keywords[key], owner[key] = index, name
    if cfg.missing_think not in MISSING_THINK:
        raise ValueError(f"people_focus.missing_think must be one of {MISSING_THINK}, got {cfg.missing_think!r}")
    if not cfg.normaliser > 0:
        raise ValueError(f"people_focus.normaliser must be > 0, got {cfg.normaliser}")
    return PeopleFocusSpec(
        keywords=keywords,
        categories=names,
        weights=tuple(float(cfg.categories[n].weight) for n in names),
        normaliser=float(cfg.normaliser),
        missing_think=str(cfg.missing_think),
    )


@functools.lru_cache(maxsize=32)
def _resolve_cached(cfg_json: str) -> PeopleFocusSpec:
    return _resolve(ml_collections.ConfigDict(json.loads(cfg_json)))


def resolve(cfg: ml_collections.ConfigDict | PeopleFocusSpec | None = None) -> PeopleFocusSpec:
    """The matching spec for a people_focus config (None → the recipe's defaults)."""
    if isinstance(cfg, PeopleFocusSpec):
        return cfg
    if cfg is None:
        cfg = people_focus_defaults()
    return _resolve_cached(json.dumps(cfg.to_dict(), sort_keys=True))


def words_with_joins(data: bytes) -> list[tuple[str, bool]]:
    """The words of `data` (lower-cased) in order, each with `joined`: True when a previous word
    exists and only joiner bytes (whitespace, hyphens) stand between the two."""
    out: list[tuple[str, bool]] = []
    joined = False
    for m in _ITEMS.finditer(data):
        word = m.group(1)
        if word is not None:
            out.append((word.decode("ascii").lower(), joined))
            joined = True
        else:
            joined = bool(out) and joined and all(b in JOINER_BYTES for b in m.group(0))
    return out
