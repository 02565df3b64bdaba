"""Reliability of a real (tiny) training run: damaged checkpoints, a changed config, SIGTERM, NaN.

Each test trains the tiny default for one or two steps in a subprocess (a minute or more on a
2-core machine: compiles dominate), so all are marked slow; the same behaviours are tested fast on
the store (tests/checkpoint/test_damage.py), the metrics writer (tests/test_metrics.py) and the
guards (tests/grpo/test_guards.py).
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from omni_jax.grpo.guards import PREEMPTED_EXIT_CODE

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ["--config.rewards.people_focus.missing_think=whole_text", "--config.warmstart.steps=2",
        "--config.checkpoint_every_steps=1", "--config.batch_prompts=2", "--config.rollout.num_generations=4",
        "--config.rollout.max_new_tokens=8", "--config.sample_every_steps=1"]

pytestmark = pytest.mark.slow


def _cmd(workdir, *extra):
    return [sys.executable, "-m", "omni_jax.train", f"--workdir={workdir}", *TINY, *extra]


def _run(workdir, *extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(_cmd(workdir, *extra), cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


def _steps(workdir):
    """The GRPO steps in metrics.jsonl (the warm-start's rows have step 0)."""
    rows = [json.loads(l)["step"] for l in (workdir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return [s for s in rows if s > 0]


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("two") / "run"
    proc = _run(workdir, "--config.total_steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def test_a_damaged_latest_step_falls_back_to_the_step_before(two_steps, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(two_steps, workdir)
    files = [f for f in (workdir / "checkpoints" / "2" / "params").rglob("*") if f.is_file()]
    target = max(files, key=lambda f: f.stat().st_size)
    data = bytearray(target.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    target.write_bytes(bytes(data))
    proc = _run(workdir, "--config.total_steps=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "checkpoint step 2 of" in proc.stderr and "cannot be used" in proc.stderr
    assert "resuming from step 1" in proc.stderr
    assert _steps(workdir) == [1, 2, 3]
    assert (workdir / "checkpoints" / "2.damaged").is_dir()
    samples = (workdir / "samples.txt").read_text()
    assert [l for l in samples.splitlines() if l.startswith("===")] == [f"=== step {s} samples ===" for s in (1, 2, 3)]


def test_resuming_with_a_config_that_changes_the_checkpoint_says_what_differs(two_steps, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(two_steps, workdir)
    proc = _run(workdir, "--config.total_steps=3", "--config.grpo.beta=0.04")
    assert proc.returncode != 0
    assert "grpo.beta: 0.0 -> 0.04" in proc.stderr and "use a new --workdir" in proc.stderr, proc.stderr[-3000:]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == sorted(
        p.name for p in (two_steps / "checkpoints").iterdir())  # nothing moved or deleted


def test_sigterm_during_the_warm_start_saves_it_and_exits_75(tmp_path):
    workdir = tmp_path / "run"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(_cmd(workdir, "--config.total_steps=1", "--config.warmstart.steps=4"), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = bytearray()
    reader = threading.Thread(target=lambda: [seen.extend(c) for c in iter(lambda: proc.stdout.read1(4096), b"")],
                              daemon=True)
    reader.start()
    deadline = time.time() + 900
    while b"warm-start (SFT):" not in seen and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(900) == PREEMPTED_EXIT_CODE, seen.decode(errors="replace")[-3000:]
    reader.join(10)
    assert (workdir / "warmstart").is_dir() and not (workdir / "checkpoints" / "0").exists()
    again = _run(workdir, "--config.total_steps=1", "--config.warmstart.steps=4")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continuing the warm-start from step" in again.stderr
    assert not (workdir / "warmstart").exists() and _steps(workdir) == [1]


def test_a_run_whose_updates_are_all_skipped_stops(tmp_path):
    workdir = tmp_path / "run"
    # A NaN learning rate: the first update makes every weight NaN, every later update is skipped.
    proc = _run(workdir, "--config.total_steps=6", "--config.warmstart.steps=0", "--config.optim.learning_rate=nan",
                "--config.max_consecutive_skipped_updates=2")
    assert proc.returncode != 0
    assert "the last 2 updates (up to step 3) were all skipped" in proc.stderr, proc.stderr[-3000:]
    rows = [r for r in (json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()) if r["step"] > 0]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[1]["loss"] is None and rows[1]["grad_norm"] is None and "update_norm" in rows[1]
    assert [r["skipped_updates"] for r in rows] == [0, 1, 2]
