"""Optional LLM-judge people_focus (the plan's "API version"): an OpenAI-compatible
chat-completions endpoint rates each <think> block 0–10; the rating / 10 is the reward.

A run never stops for the judge: a request that times out (`timeout_s` bounds the whole request),
fails, is redirected, answers more than `max_reply_bytes`, or answers anything that is not a number
in [0, 10] is retried (exponential backoff) and then replaced by the keyword score, and counted
(`judge/error/<kind>`, `judge/fallbacks`). Ratings are cached on disk by a hash of (endpoint,
model, prompt), so a restarted run or a repeated completion costs no request; cache files are the
owner's only (0600 in 0700 directories), written atomically by each writer, and a cached rating is
used only if it is a finite number in [0, 10] in a file nobody else can write. A cache that cannot
be written is counted (`judge/cache_write_errors`), never fatal. At most `max_concurrency`
requests are in flight.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import json
import math
import os
import pathlib
import re
import stat
import tempfile
import time

import ml_collections
import numpy as np

from omni_jax.rewards.judge_http import JudgeError, post
from omni_jax.rewards.people_focus import think_block

PROMPT = """You rate the reasoning of a model that answers questions about a video with audio.
Rate from 0 to 10 how much the reasoning below attends to the PEOPLE in the video: who they are,
their faces and facial expressions, gaze, gestures, posture, body language, voice, actions and
interactions with each other. 0: people are not described at all. 10: people are described in
rich, specific detail. Descriptions of the background, setting or objects do not count.
Reply with the number only.

Reasoning:
{reasoning}"""
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_MAX_CACHE_ENTRY_BYTES = 4096


def checked_rating(value) -> float:
    """`value` as a float if it is a finite number in [0, 10] (not a bool, not a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JudgeError(f"judge rating {value!r} is not a number")
    if not (math.isfinite(value) and 0.0 <= value <= 10.0):
        raise JudgeError(f"judge rating {value} is outside [0, 10]")
    return float(value)


def _rating(content: str) -> float:
    match = _NUMBER.search(content)
    if match is None:
        raise JudgeError(f"no number in the judge's reply {content[:80]!r}")
    return checked_rating(float(match.group(0)))


def parse_rating(content: str) -> float:
    """The first number in the judge's reply, checked to lie in [0, 10], scaled to [0, 1]."""
    return _rating(content) / 10.0


def _reply_content(payload: bytes) -> str:
    """The assistant message of a chat-completion body; JudgeError for anything else."""
    try:
        content = json.loads(payload)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError, RecursionError) as err:
        # RecursionError: deeply nested JSON ("[" * 200_000) exhausts the parser's stack
        raise JudgeError(f"judge answered no chat completion: {payload[:80]!r}") from err
    if not isinstance(content, str):
        raise JudgeError(f"judge's message content is {type(content).__name__}, not text")
    return content


def load_cached_rating(path: pathlib.Path) -> float | None:
    """The rating cached at `path`, None if there is none; JudgeError if the entry is damaged,
    holds no valid rating, or is a link, not the user's, or writable by group or others."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a planted FIFO must not block
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:  # ELOOP: a symbolic link
        raise JudgeError(f"judge cache entry {path} cannot be opened: {err}") from err
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise JudgeError(f"judge cache entry {path} is not a private file of this user")
        data = f.read(_MAX_CACHE_ENTRY_BYTES + 1)
    try:
        entry = json.loads(data)
        rating = entry["rating"]
    except (ValueError, KeyError, IndexError, TypeError, RecursionError) as err:
        raise JudgeError(f"judge cache entry {path} is damaged") from err
    return checked_rating(rating)


def store_rating(cache_dir: pathlib.Path, path: pathlib.Path, rating: float) -> None:
    """Write `path` atomically: a temporary file of this writer's own (0600), then a rename, so
    concurrent writers of one entry never see each other's half-written or renamed files."""
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    for directory in (cache_dir, path.parent):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:16]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"rating": rating}, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Judge:
    """`judge(completions, fallback) -> (float32[N] scores, stats)`; see the module docstring.

    cfg: the `rewards.judge` block (`config.judge_defaults()`).
    """

    def __init__(self, cfg: ml_collections.ConfigDict):
        self.endpoint, self.model = cfg.endpoint, cfg.model
        self.timeout_s, self.max_retries, self.backoff_s = cfg.timeout_s, cfg.max_retries, cfg.backoff_s
        self.max_concurrency, self.max_tokens = cfg.max_concurrency, cfg.max_tokens
        self.max_reply_bytes = cfg.max_reply_bytes
        self.api_key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        self.cache_dir = pathlib.Path(cfg.cache_dir) if cfg.cache_dir else None
        if not str(self.endpoint).startswith(("http://", "https://")):
            raise ValueError(f"rewards.judge.endpoint must be an http(s) URL, got {self.endpoint!r}")

    def _cache_path(self, prompt: str) -> pathlib.Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(json.dumps([self.endpoint, self.model, prompt]).encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def _request(self, prompt: str) -> float:
        """The rating in [0, 10] of one prompt (one request, no retry)."""
        body = json.dumps({
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "omni_jax-judge"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        payload = post(self.endpoint, body, headers, self.timeout_s, self.max_reply_bytes)
        return _rating(_reply_content(payload))

    def rate(self, prompt: str) -> tuple[float | None, collections.Counter]:
        """(rating in [0, 1] or None after all retries failed, counters) for one prompt."""
        stats: collections.Counter = collections.Counter()
        path = self._cache_path(prompt)
        if path is not None:
            try:
                rating = load_cached_rating(path)
            except JudgeError:
                rating = None
                stats["judge/cache_damaged"] += 1  # ask again; the answer replaces it
            if rating is not None:
                stats["judge/cache_hits"] += 1
                return rating / 10.0, stats
        for attempt in range(self.max_retries + 1):
            if attempt:
                stats["judge/retries"] += 1
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            stats["judge/requests"] += 1
            try:
                rating = self._request(prompt)
            except Exception as err:  # a run never stops for the judge: count, retry, fall back
                stats[f"judge/error/{type(err).__name__}"] += 1
                continue
            if path is not None:
                try:
                    store_rating(self.cache_dir, path, rating)
                except OSError:
                    stats["judge/cache_write_errors"] += 1
            return rating / 10.0, stats
        return None, stats

    def __call__(self, completions: list[str], fallback: np.ndarray, missing_think: str = "zero"):
        """float32[N] judge scores; `fallback` (the keyword scores) where no rating was had.

        Completions without a complete <think> block are not sent under missing_think="zero"
        (they keep the fallback, 0); under "whole_text" the whole completion is rated.
        """
        scores = np.asarray(fallback, np.float32).copy()
        stats: collections.Counter = collections.Counter()
        jobs = {}
        for i, text in enumerate(completions):
            block = think_block(text.encode("utf-8", "surrogatepass"))
            if block is None and missing_think == "zero":
                continue
            reasoning = text if block is None else block.decode("utf-8", "replace")
            jobs[i] = PROMPT.format(reasoning=reasoning.strip())
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, self.max_concurrency)) as pool:
            results = dict(zip(jobs, pool.map(self.rate, jobs.values())))
        for i, (score, job_stats) in results.items():
            stats.update(job_stats)
            if score is None:
                stats["judge/fallbacks"] += 1
            else:
                scores[i] = score
        stats["judge/rated"] = len(jobs) - stats["judge/fallbacks"]
        return scores, stats
