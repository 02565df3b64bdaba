"""The judge against replies, servers and cache files that try to stop, stall or fool a run.

Every case must end as a judge score or a counted fallback to the keyword score: never an
exception out of the reward, never a request that outlives `timeout_s`, never the API key sent
anywhere but the configured endpoint, never a rating outside 0–10.
"""

import json
import math
import os
import stat
import threading
import time

import numpy as np
import pytest

from omni_jax.rewards.judge import Judge

from .chat_server import chat
from .test_judge import judge_cfg, think


def failures(stats):
    return {k: v for k, v in stats.items() if k.startswith("judge/error/")}


@pytest.mark.parametrize("payload", [
    b"[" * 200_000,
    b'{"choices": [{"message": {"content": ' + b"[" * 200_000 + b"}}]}",
    b"\xff\xfe not utf-8",
    json.dumps({"choices": {"0": {"message": {"content": "7"}}}}).encode(),
    json.dumps({"choices": [{"message": None}]}).encode(),
])
def test_unparseable_replies_are_counted_fallbacks(serve, payload):
    server = serve(lambda prompt, n: (200, payload, 0))
    scores, stats = Judge(judge_cfg(server.url, max_retries=1))([think("x")], np.array([0.3]))
    assert scores.tolist() == pytest.approx([0.3]) and stats["judge/fallbacks"] == 1
    assert sum(failures(stats).values()) == 2 and len(server.calls) == 2


def test_concurrent_writers_of_one_cache_entry_never_fail(serve, tmp_path):
    """Identical completions rated at the same moment write the same cache entry together."""
    server = serve(lambda prompt, n: (200, chat("6"), 0.2))  # all 20 answers arrive together
    for trial in range(5):
        cache = tmp_path / str(trial)
        judge = Judge(judge_cfg(server.url, cache_dir=str(cache), max_concurrency=20))
        scores, stats = judge([think("the same")] * 20, np.zeros(20))
        assert scores.tolist() == pytest.approx([0.6] * 20) and stats["judge/fallbacks"] == 0
        files = [p for p in cache.rglob("*") if p.is_file()]
        assert len(files) == 1 and files[0].suffix == ".json"  # no temporary file left behind


def test_an_unwritable_cache_never_stops_the_run(serve, tmp_path):
    (tmp_path / "not_a_dir").write_text("")
    server = serve(lambda prompt, n: (200, chat("6"), 0))
    judge = Judge(judge_cfg(server.url, cache_dir=str(tmp_path / "not_a_dir" / "cache")))
    scores, stats = judge([think("a"), think("b")], np.zeros(2))
    assert scores.tolist() == pytest.approx([0.6, 0.6]) and stats["judge/cache_write_errors"] == 2
    assert stats["judge/cache_damaged"] == 0  # no cache is not a damaged cache


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_never_gets_the_key(serve, monkeypatch, code):
    elsewhere = serve(lambda prompt, n: (200, chat("9"), 0))
    server = serve(lambda prompt, n: (code, b"", 0, {"Location": elsewhere.url}))
    monkeypatch.setenv("OMNI_JAX_JUDGE_API_KEY", "sekret")
    scores, stats = Judge(judge_cfg(server.url, max_retries=0))([think("x")], np.array([0.4]))
    seen = [headers for _, headers in elsewhere.calls] + elsewhere.gets
    assert not any("sekret" in str(headers) for headers in seen)
    assert scores.tolist() == pytest.approx([0.4]) and stats["judge/fallbacks"] == 1
    assert stats["judge/error/JudgeRedirectError"] == 1
    assert server.calls[0][1]["Authorization"] == "Bearer sekret"  # the endpoint itself gets it


def endless(chunk, pause, total):
    for _ in range(total // len(chunk)):
        yield chunk, pause


@pytest.mark.parametrize("headers", [{}, {"Content-Length": str(400 << 20)}])
def test_a_huge_reply_is_cut_off_unread(serve, headers):
    """64 MiB of reply (400 MiB announced in one case) against the 1 MiB default limit."""
    server = serve(lambda prompt, n: (200, endless(b" " * (64 << 10), 0, 64 << 20), 0, headers))
    start = time.monotonic()
    scores, stats = Judge(judge_cfg(server.url, max_retries=0))([think("x")], np.array([0.4]))
    assert scores.tolist() == pytest.approx([0.4]) and stats["judge/error/JudgeError"] == 1
    for _ in range(50):  # the server notices the hang-up on its next write
        if server.hung_up:
            break
        time.sleep(0.05)
    assert server.hung_up == 1 and server.sent < 16 << 20
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("raw", [False, True], ids=["body", "headers"])
def test_a_slow_drip_is_abandoned_after_timeout_s(serve, raw):
    """One byte every 50 ms never trips a socket timeout; the request's total time is bounded."""
    if raw:
        drip = [(b"HTTP/1.0 200 OK\r\n", 0)] + [(b"X-Pad: a\r\n", 0.05)] * 200
    else:
        drip = [(b" ", 0.05)] * 200
    server = serve(lambda prompt, n: (None if raw else 200, iter(drip), 0))
    start = time.monotonic()
    scores, stats = Judge(judge_cfg(server.url, timeout_s=0.5, max_retries=0))([think("x")], np.array([0.4]))
    assert time.monotonic() - start < 1.5
    assert scores.tolist() == pytest.approx([0.4]) and stats["judge/error/TimeoutError"] == 1


def tamper(cache_dir, value):
    for path in cache_dir.rglob("*.json"):
        entry = json.loads(path.read_text())
        path.write_text(json.dumps({key: value for key in entry}))


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e9, -5.0, "7", True])
def test_bad_cached_ratings_are_asked_again(serve, tmp_path, bad):
    server = serve(lambda prompt, n: (200, chat("6" if n == 1 else "3"), 0))
    cfg = judge_cfg(server.url, cache_dir=str(tmp_path))
    Judge(cfg)([think("x")], np.zeros(1))
    tamper(tmp_path, bad)
    scores, stats = Judge(cfg)([think("x")], np.zeros(1))
    assert scores.tolist() == pytest.approx([0.3]) and stats["judge/cache_damaged"] == 1
    assert stats["judge/cache_hits"] == 0 and len(server.calls) == 2
    assert Judge(cfg)([think("x")], np.zeros(1))[0].tolist() == pytest.approx([0.3])  # rewritten


def test_a_cache_entry_others_can_write_is_not_trusted(serve, tmp_path):
    server = serve(lambda prompt, n: (200, chat("6" if n == 1 else "3"), 0))
    cfg = judge_cfg(server.url, cache_dir=str(tmp_path))
    Judge(cfg)([think("x")], np.zeros(1))
    (path,) = tmp_path.rglob("*.json")
    path.chmod(0o666)
    scores, stats = Judge(cfg)([think("x")], np.zeros(1))
    assert scores.tolist() == pytest.approx([0.3]) and stats["judge/cache_damaged"] == 1


def test_the_cache_is_keyed_by_endpoint(serve, tmp_path):
    first = serve(lambda prompt, n: (200, chat("6"), 0))
    second = serve(lambda prompt, n: (200, chat("2"), 0))
    Judge(judge_cfg(first.url, cache_dir=str(tmp_path)))([think("x")], np.zeros(1))
    scores, stats = Judge(judge_cfg(second.url, cache_dir=str(tmp_path)))([think("x")], np.zeros(1))
    assert scores.tolist() == pytest.approx([0.2]) and len(second.calls) == 1
    assert stats["judge/cache_hits"] == 0


def test_cache_files_are_owner_only(serve, tmp_path):
    server = serve(lambda prompt, n: (200, chat("6"), 0))
    cache = tmp_path / "new" / "cache"
    Judge(judge_cfg(server.url, cache_dir=str(cache)))([think("x"), think("y")], np.zeros(2))
    entries = list(cache.rglob("*"))
    assert len([p for p in entries if p.is_file()]) == 2
    for path in [cache, *entries]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_many_threads_of_one_judge_stay_within_timeout(serve):
    """The total-time bound holds per request when all of them stall at once."""
    server = serve(lambda prompt, n: (200, iter([(b" ", 0.05)] * 100), 0))
    judge = Judge(judge_cfg(server.url, timeout_s=0.4, max_retries=0, max_concurrency=8))
    start = time.monotonic()
    scores, stats = judge([think(str(i)) for i in range(8)], np.full(8, 0.1))
    assert time.monotonic() - start < 1.5 and stats["judge/error/TimeoutError"] == 8
    assert threading.active_count() < 50


def test_a_chunked_reply_within_the_limits_is_read(serve):
    body = chat("8")
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n")
    chunks = [(head, 0)] + [(b"%x\r\n%s\r\n" % (len(body[i:i + 10]), body[i:i + 10]), 0.01)
                            for i in range(0, len(body), 10)] + [(b"0\r\n\r\n", 0)]
    server = serve(lambda prompt, n: (None, iter(chunks), 0))
    scores, stats = Judge(judge_cfg(server.url))([think("x")], np.array([0.1]))
    assert scores.tolist() == pytest.approx([0.8]) and stats["judge/rated"] == 1


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_link_or_fifo_in_the_cache_is_not_read(serve, tmp_path, kind):
    server = serve(lambda prompt, n: (200, chat("6" if n == 1 else "3"), 0))
    cfg = judge_cfg(server.url, cache_dir=str(tmp_path / "cache"))
    Judge(cfg)([think("x")], np.zeros(1))
    (path,) = (tmp_path / "cache").rglob("*.json")
    path.unlink()
    if kind == "symlink":
        (tmp_path / "planted.json").write_text(json.dumps({"rating": 10}))
        path.symlink_to(tmp_path / "planted.json")
    else:
        os.mkfifo(path)  # a plain open() would block forever
    scores, stats = Judge(cfg)([think("x")], np.zeros(1))
    assert scores.tolist() == pytest.approx([0.3]) and stats["judge/cache_damaged"] == 1
