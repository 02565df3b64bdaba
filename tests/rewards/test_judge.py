"""The LLM judge against a small OpenAI-compatible server on 127.0.0.1 (no real network)."""

import json
import time

import numpy as np
import pytest

from omni_jax.rewards import config
from omni_jax.rewards.judge import Judge, JudgeError, parse_rating

from .chat_server import chat


def judge_cfg(url, **overrides):
    cfg = config.judge_defaults()
    cfg.enabled, cfg.endpoint, cfg.timeout_s, cfg.backoff_s, cfg.max_retries = True, url, 2.0, 0.01, 2
    cfg.update(overrides)
    return cfg


def think(body):
    return f"<context>c</context><think>{body}</think><answer>A</answer>"


def test_ratings_are_parsed_and_scaled(serve, monkeypatch):
    server = serve(lambda prompt, n: (200, chat("7" if "smiles" in prompt else "Rating: 2.5/10"), 0))
    monkeypatch.setenv("OMNI_JAX_JUDGE_API_KEY", "sekret")
    judge = Judge(judge_cfg(server.url, model="judge-model"))
    scores, stats = judge([think("the man smiles"), think("a table")], np.array([0.1, 0.2]))
    np.testing.assert_allclose(scores, [0.7, 0.25])
    assert scores.dtype == np.float32 and stats["judge/rated"] == 2 and stats["judge/fallbacks"] == 0
    body, headers = server.calls[0]
    assert body["model"] == "judge-model" and headers["Authorization"] == "Bearer sekret"
    prompts = sorted(c[0]["messages"][0]["content"] for c in server.calls)
    assert prompts[0].endswith("Reasoning:\na table") and "<answer>" not in prompts[0]


@pytest.mark.parametrize(
    "status, payload, reason",
    [
        (200, chat("I think it is good"), "judge/error/JudgeError"),  # no number
        (200, chat("15"), "judge/error/JudgeError"),  # out of range
        (200, b"<html>not json</html>", "judge/error/JudgeError"),
        (200, json.dumps({"choices": []}).encode(), "judge/error/JudgeError"),
        (500, b"{}", "judge/error/HTTPError"),
        (429, b"{}", "judge/error/HTTPError"),
    ],
)
def test_failures_fall_back_to_the_keyword_score_and_are_counted(serve, status, payload, reason):
    server = serve(lambda prompt, n: (status, payload, 0))
    scores, stats = Judge(judge_cfg(server.url))([think("x"), "no think block"], np.array([0.3, 0.0]))
    np.testing.assert_allclose(scores, [0.3, 0.0])
    assert stats["judge/fallbacks"] == 1 and stats[reason] == 3 and stats["judge/retries"] == 2
    assert len(server.calls) == 3  # the completion without a think block is never sent


def test_timeouts_fall_back(serve):
    server = serve(lambda prompt, n: (200, chat("9"), 1.0))
    start = time.monotonic()
    scores, stats = Judge(judge_cfg(server.url, timeout_s=0.2, max_retries=1))([think("x")], np.array([0.4]))
    assert scores.tolist() == pytest.approx([0.4]) and stats["judge/fallbacks"] == 1
    assert stats["judge/error/TimeoutError"] + stats["judge/error/URLError"] == 2
    assert time.monotonic() - start < 1.5


def test_transient_errors_are_retried(serve):
    server = serve(lambda prompt, n: (503, b"busy", 0) if n <= 2 else (200, chat("10"), 0))
    scores, stats = Judge(judge_cfg(server.url))([think("x")], np.array([0.0]))
    assert scores.tolist() == [1.0] and stats["judge/retries"] == 2 and stats["judge/fallbacks"] == 0


def test_unreachable_endpoint_falls_back(serve):
    server = serve(lambda prompt, n: (200, chat("5"), 0))
    url = server.url
    server.close()
    scores, stats = Judge(judge_cfg(url, max_retries=0))([think("x")], np.array([0.6]))
    assert scores.tolist() == pytest.approx([0.6]) and stats["judge/fallbacks"] == 1


def test_cache_answers_repeats_without_requests(serve, tmp_path):
    server = serve(lambda prompt, n: (200, chat("6"), 0))
    cfg = judge_cfg(server.url, cache_dir=str(tmp_path))
    first, _ = Judge(cfg)([think("a"), think("b")], np.zeros(2))
    again, stats = Judge(cfg)([think("b"), think("a"), think("c")], np.zeros(3))
    assert first.tolist() == pytest.approx([0.6, 0.6]) and again.tolist() == pytest.approx([0.6] * 3)
    assert stats["judge/cache_hits"] == 2 and len(server.calls) == 3
    # a different model is a different cache key
    Judge(judge_cfg(server.url, cache_dir=str(tmp_path), model="other"))([think("a")], np.zeros(1))
    assert len(server.calls) == 4


def test_concurrency_is_bounded(serve):
    server = serve(lambda prompt, n: (200, chat("3"), 0.15))
    scores, _ = Judge(judge_cfg(server.url, max_concurrency=3))([think(str(i)) for i in range(9)], np.zeros(9))
    assert scores.tolist() == pytest.approx([0.3] * 9)
    assert server.max_in_flight == 3


def test_parse_rating():
    assert parse_rating(" 8 ") == 0.8 and parse_rating("Score: 10") == 1.0 and parse_rating("0") == 0.0
    with pytest.raises(JudgeError):
        parse_rating("-1")


def test_bad_endpoint_is_a_config_error():
    with pytest.raises(ValueError, match="http"):
        Judge(judge_cfg("localhost:8000"))
