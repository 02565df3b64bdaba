"""Key events of a `<think>` block: what to look for in the frames, and where to write the mark.

An `Event` has an *anchor* (an exact span of the completion: `start`/`end` offsets, where the
timestamp goes) and a *query* (a cleaned phrase for CLIP). Two extractors:

- `rule_events`: clauses of the think block (split at . ! ? ; , and newlines, and their CJK
  forms) that mention people or actions, i.e. hold a word of a positive-weight keyword category of
  the people_focus reward (`rewards.config`: person, woman, face, ... / smile, walk, look, ...),
  and are not about the question (question, option, answer), the reasoner ("I'm looking at",
  "let me") or a conclusion ("based on", "this suggests").
  Discourse openers ("Now,", "I notice that", "It seems") are dropped from the query, and any
  timestamp mark already in the text is left out of both anchor and query.
- `prompt_events`: a prompt to a language model (our Thinker, or the judge endpoint: any
  `generate(prompt) -> str`) that answers one JSON object per line {"anchor": ..., "query": ...};
  anchors are located in the think block exactly, else case-insensitively.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Callable

from omni_jax.rewards import keywords as kw
from omni_jax.rewards.people_focus import count_words

OPEN, CLOSE = "<think>", "</think>"
MARK = re.compile(r"\s*\[Frame \d+: \d+(?:\.\d+)?s\]")
_CLAUSE_END = re.compile(r"[.!?;,\n。！？；，、]+")
_OPENERS = re.compile(
    r"^(?:(?:and|but|so|then|now|first|next|finally|also|meanwhile|later|here|again|okay|ok|well)\b[\s,]*"
    r"|(?:i\s+(?:see|notice|observe|can see|think)|it\s+(?:seems|looks like|appears)|we\s+see|"
    r"the\s+video\s+shows|in\s+the\s+video)\b(?:\s+that)?[\s,]*)+", re.IGNORECASE)


class NoThinkBlock(ValueError):
    """The completion has no complete <think>…</think> block."""


@dataclasses.dataclass(frozen=True)
class Event:
    anchor: str  # exact text of completion[start:end] ("" when only the query is known)
    query: str  # what CLIP looks for
    start: int = -1  # offsets into the completion; -1: not located
    end: int = -1


def think_span(completion: str) -> tuple[int, int]:
    """(start, end) offsets of the think block's content: first "<think>", first "</think>" after it."""
    start = completion.find(OPEN)
    end = completion.find(CLOSE, start + len(OPEN)) if start >= 0 else -1
    if start < 0 or end < 0:
        raise NoThinkBlock("the completion has no complete <think>…</think> block: nothing to timestamp")
    return start + len(OPEN), end


def _mentions_people(text: str, spec: kw.PeopleFocusSpec) -> bool:
    counts = count_words(kw.words_with_joins(text.encode("utf-8")), spec)
    return any(c > 0 and w > 0 for c, w in zip(counts, spec.weights))


def clean_query(text: str) -> str:
    """A clause → a CLIP query: no timestamp marks, no opener, no trailing punctuation."""
    text = MARK.sub("", text).strip()
    text = _OPENERS.sub("", text).strip(" \t\"'()[]:-")
    return re.sub(r"\s+", " ", text)


# Clauses about the question rather than the video ("the question asks how the man feels"), about
# the reasoner ("I'm looking at this scene", "let me focus on the man") or drawing conclusions
# ("based on her body language").
_META = re.compile(r"\b(?:question|questions|answer|answers|option|options|choice|choices)\b", re.IGNORECASE)
_NOT_A_SCENE = re.compile(
    r"^(?:i|i'm|i’m|i am|i've|i have|i'll|let me|let's|we|we're|based on|given|considering|overall|"
    r"in summary|this (?:suggests|indicates|means|shows)|which (?:suggests|indicates|means))\b", re.IGNORECASE)


def rule_events(completion: str, *, people_focus_cfg=None, min_words: int = 2, max_events: int = 16) -> list[Event]:
    """The people/action clauses of the think block, in text order (at most `max_events`).

    Clauses of fewer than `min_words` words, clauses about the question, its options or the answer,
    and clauses about the reasoner or its conclusions ("let me focus on", "based on") are not events."""
    lo, hi = think_span(completion)
    spec = kw.resolve(people_focus_cfg)
    body = completion[lo:hi]
    # Marks hold ". ," etc.; blank them (same length) so clause splitting never cuts inside one.
    blanked = MARK.sub(lambda m: " " * len(m.group(0)), body)
    events, pos = [], 0
    for sep in [*_CLAUSE_END.finditer(blanked), None]:
        stop = sep.start() if sep else len(body)
        raw = blanked[pos:stop]
        pos = sep.end() if sep else len(body)
        text = raw.strip()
        if not text:
            continue
        start = lo + (stop - len(raw)) + (len(raw) - len(raw.lstrip()))
        end = start + len(text)
        query = clean_query(text)
        if (len(query.split()) < min_words or _META.search(query) or _NOT_A_SCENE.match(query)
                or not _mentions_people(query, spec)):
            continue
        events.append(Event(anchor=completion[start:end], query=query, start=start, end=end))
        if len(events) == max_events:
            break
    return events


EXTRACTION_PROMPT = """Below is a video model's reasoning. List its key visual events about people \
and their actions, in the order they are written. For each event answer one JSON object per \
line: {{"anchor": <an exact short phrase copied from the text, in its language>, "query": <a short \
English description of what the frame shows>}}. Answer only the JSON lines.

Reasoning:
{think}"""


def locate(completion: str, anchor: str, lo: int, hi: int) -> tuple[int, int]:
    """(start, end) of `anchor` in completion[lo:hi]: exact, else case-insensitive; (-1, -1) if absent."""
    i = completion.find(anchor, lo, hi) if anchor else -1
    if i < 0 and anchor:
        i = completion[lo:hi].lower().find(anchor.lower())
        i = lo + i if i >= 0 else -1
    return (i, i + len(anchor)) if i >= 0 else (-1, -1)


def prompt_events(completion: str, generate: Callable[[str], str], *, max_events: int = 16) -> list[Event]:
    """Events from a language model's answer to `EXTRACTION_PROMPT`; unparsable lines are skipped."""
    lo, hi = think_span(completion)
    answer = generate(EXTRACTION_PROMPT.format(think=completion[lo:hi].strip()))
    events = []
    for line in answer.splitlines():
        line = line.strip().rstrip(",")
        if not line.startswith("{"):
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(item, dict):
            continue
        anchor, query = str(item.get("anchor") or "").strip(), clean_query(str(item.get("query") or ""))
        query = query or clean_query(anchor)
        if not query:
            continue
        start, end = locate(completion, anchor, lo, hi)
        events.append(Event(anchor=completion[start:end] if start >= 0 else anchor, query=query, start=start, end=end))
        if len(events) == max_events:
            break
    return events


def endpoint_generate(judge_cfg, max_tokens: int = 512) -> Callable[[str], str]:
    """`generate(prompt) -> str` over an OpenAI-compatible chat endpoint, configured like the judge
    (`config.rewards.judge`: endpoint, model, api_key_env, timeout_s), for `prompt_events`."""
    import os
    import urllib.request

    endpoint = str(judge_cfg.endpoint)
    if not endpoint.startswith(("http://", "https://")):
        raise ValueError(f"judge endpoint must be an http(s) URL, got {endpoint!r}")
    api_key = os.environ.get(judge_cfg.api_key_env, "") if judge_cfg.get("api_key_env") else ""

    def generate(prompt: str) -> str:
        body = json.dumps({"model": judge_cfg.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0.0, "max_tokens": max_tokens}).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=float(judge_cfg.timeout_s)) as response:
            payload = json.loads(response.read())
        try:
            return str(payload["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"{endpoint} answered no chat completion: {str(payload)[:80]}") from None

    return generate
