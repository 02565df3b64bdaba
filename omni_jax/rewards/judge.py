"""Optional LLM-judge people_focus (the plan's "API version"): an OpenAI-compatible
chat-completions endpoint rates each <think> block 0–10; the rating / 10 is the reward.

A run never stops for the judge: a request that times out, fails, or answers something that is not
a number in [0, 10] is retried (exponential backoff) and then replaced by the keyword score, and
counted. Ratings are cached on disk by a hash of (model, prompt), so a restarted run or a repeated
completion costs no request. At most `max_concurrency` requests are in flight.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import http.client
import json
import os
import pathlib
import re
import time
import urllib.error
import urllib.request

import ml_collections
import numpy as np

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


class JudgeError(Exception):
    """A judge answer that cannot be used (bad HTTP status, body, or rating)."""


def parse_rating(content: str) -> float:
    """The first number in the judge's reply, checked to lie in [0, 10], scaled to [0, 1]."""
    match = _NUMBER.search(content)
    if match is None:
        raise JudgeError(f"no number in the judge's reply {content[:80]!r}")
    rating = float(match.group(0))
    if not 0.0 <= rating <= 10.0:
        raise JudgeError(f"judge rating {rating} is outside [0, 10]")
    return rating / 10.0


class Judge:
    """`judge(completions, fallback) -> (float32[N] scores, stats)`; see the module docstring.

    cfg: the `rewards.judge` block (`config.judge_defaults()`).
    """

    def __init__(self, cfg: ml_collections.ConfigDict):
        self.endpoint, self.model = cfg.endpoint, cfg.model
        self.timeout_s, self.max_retries, self.backoff_s = cfg.timeout_s, cfg.max_retries, cfg.backoff_s
        self.max_concurrency, self.max_tokens = cfg.max_concurrency, cfg.max_tokens
        self.api_key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        self.cache_dir = pathlib.Path(cfg.cache_dir) if cfg.cache_dir else None
        if not str(self.endpoint).startswith(("http://", "https://")):
            raise ValueError(f"rewards.judge.endpoint must be an http(s) URL, got {self.endpoint!r}")

    def _cache_path(self, prompt: str) -> pathlib.Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(json.dumps([self.model, prompt]).encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def _request(self, prompt: str) -> float:
        body = json.dumps({
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            payload = response.read()
        try:
            content = json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise JudgeError(f"judge answered no chat completion: {payload[:80]!r}") from err
        return parse_rating(str(content))

    def rate(self, prompt: str) -> tuple[float | None, collections.Counter]:
        """(rating in [0, 1] or None after all retries failed, counters) for one prompt."""
        stats: collections.Counter = collections.Counter()
        path = self._cache_path(prompt)
        if path is not None and path.exists():
            try:
                score = float(json.loads(path.read_text())["score"])
                stats["judge/cache_hits"] += 1
                return score, stats
            except (ValueError, KeyError, TypeError):
                stats["judge/cache_damaged"] += 1  # ask again; the answer overwrites it
        for attempt in range(self.max_retries + 1):
            if attempt:
                stats["judge/retries"] += 1
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            stats["judge/requests"] += 1
            try:
                score = self._request(prompt)
            except (urllib.error.URLError, OSError, http.client.HTTPException, JudgeError) as err:
                # URLError covers HTTP error statuses; timeouts and resets are OSErrors
                stats[f"judge/error/{type(err).__name__}"] += 1
                continue
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"score": score}))
                os.replace(tmp, path)
            return score, stats
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
