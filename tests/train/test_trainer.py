"""The training loop end to end on the tiny default: outputs, exact resume after kill -9, multi-host.

One reference run (one process, a 4-device fsdp mesh) is what the other runs are compared with: the
run killed with -9 and resumed, and the same mesh split over two processes. It is trained once per
test session, by whichever xdist worker needs it first (the others wait for it), and the killed and
resumed runs load its executables from the suite's compilation cache.
"""

import fcntl
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from configs import default

ROOT = pathlib.Path(__file__).resolve().parents[2]
# A few steps of the default config, small enough for CI. people_focus scores the whole text so
# the barely warm-started policy already gets rewards that differ within a group: real updates.
SMALL = ["--config.rewards.people_focus.missing_think=whole_text", "--config.total_steps=5", "--config.warmstart.steps=3", "--config.checkpoint_every_steps=1",
         "--config.batch_prompts=2", "--config.rollout.num_generations=4", "--config.rollout.max_new_tokens=16",
         "--config.sample_every_steps=2"]
TIMING = ("time/", "perf/")
# The reference run's mesh: 4 CPU devices in one process, or 2 in each of two processes.
MESH4 = ["--config.mesh.data=1", "--config.mesh.fsdp=4", "--config.mesh.tp=1"]
ONE_PROCESS = [*MESH4, "--config.mesh.cpu_devices=4"]


def _train(workdir, *extra, env=None, wait=True):
    cmd = [sys.executable, "-m", "omni_jax.train", f"--workdir={workdir}", *SMALL, *extra]
    env = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    CONSOLE[str(workdir)] = proc.stderr
    return proc


CONSOLE = {}  # workdir -> stderr of its last finished _train


def step_lines(metrics: pathlib.Path) -> int:
    """Complete metrics lines of steps >= 1 (a GRPO run's warm-start rows have step 0)."""
    n = 0
    for line in metrics.read_text().splitlines():
        try:
            n += json.loads(line)["step"] > 0
        except ValueError:  # a line being written
            pass
    return n


def kill_after(proc, metrics: pathlib.Path, steps: int):
    """kill -9 `proc` once the metrics of `steps` steps (not counting the warm-start's) are written."""
    deadline = time.time() + 600
    while time.time() < deadline:
        if metrics.exists() and step_lines(metrics) >= steps:
            break
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be killed:\n" + proc.stdout.read()[-3000:])
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _metrics(workdir, *, grpo_only=False):
    rows = [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows if not grpo_only or r["step"] > 0]


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, shared by its xdist workers
    workdir = root / "reference_run"
    with open(root / "reference_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker trains; another waits, then reads the same run
        console = root / "reference_run.console"
        if not console.exists():
            shutil.rmtree(workdir, ignore_errors=True)
            _train(workdir, *ONE_PROCESS)
            console.write_text(CONSOLE[str(workdir)])
    CONSOLE[str(workdir)] = console.read_text()
    return workdir


def test_outputs_of_a_run(reference_run):
    warm = [r for r in _metrics(reference_run) if r["step"] == 0]  # the warm-start's loss, before step 1
    assert [r["warmstart/step"] for r in warm] == [1, 2, 3] and all(r["warmstart/loss"] > 0 for r in warm)
    rows = _metrics(reference_run, grpo_only=True)
    assert any(r["grad_norm"] > 0 for r in rows), "no step updated the policy: the tests below would prove nothing"
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    console = CONSOLE[str(reference_run)]
    assert console.index("warm-start: compiling") < console.index("compiling the rollout and the GRPO step")
    needed = ["reward/total/mean", "reward/format/mean", "reward/format/std", "reward/accuracy/mean",
              "reward/people_focus/mean", "reward/counters/people_focus/no_think_block", "kl", "clip_fraction",
              "entropy", "completion/length_mean", "loss", "grad_norm"]
    for key in needed:
        assert all(key in r for r in rows), key
    # Every reward metric is a component's mean / std or one of the reward function's counters.
    reward_keys = {k for r in rows for k in r if k.startswith("reward")}
    assert all(re.fullmatch(r"reward/[a-z_]+/(mean|std)|reward/counters/[a-z_]+/.+", k) for k in reward_keys), \
        sorted(reward_keys)
    raw = json.loads((reference_run / "metrics.jsonl").read_text().splitlines()[len(warm)])  # GRPO step 1
    for key in ("time/step_s", "time/rollout_s", "time/update_s", "perf/generated_tokens_per_s"):
        assert key in raw
    assert (reference_run / "reward_curves.png").stat().st_size > 1000
    events = list((reference_run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and b"warmstart/loss" in b"".join(p.read_bytes() for p in events)
    assert "=== step 2 samples ===" in (reference_run / "samples.txt").read_text()
    steps = sorted(int(p.name) for p in (reference_run / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 5 and len(steps) == default.get_config().keep_checkpoints  # the oldest were deleted


def test_kill_9_then_resume_gives_the_same_metrics(reference_run, tmp_path):
    workdir = tmp_path / "killed"
    proc = _train(workdir, *ONE_PROCESS, wait=False)
    kill_after(proc, workdir / "metrics.jsonl", 3)  # mid-run: step 3's save may be in flight
    _train(workdir, *ONE_PROCESS)  # same command: resumes from the newest complete checkpoint
    assert _metrics(workdir) == _metrics(reference_run)
    assert CONSOLE[str(workdir)].count("resumed from step") == 1  # one logger, one line

    def outputs():  # every file of the workdir, with its size and time
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in workdir.rglob("*") if p.is_file()}

    before = outputs()
    _train(workdir, *ONE_PROCESS)  # finished: says so once, changes nothing (no bar, no new TensorBoard file, same PNG)
    console = CONSOLE[str(workdir)]
    assert console.count("already finished at step 5") == 1 and "GRPO:" not in console, console[-2000:]
    assert outputs() == before


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(workdir, devices_each, *extra):
    port = _free_port()
    procs = [_train(workdir, *extra, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                    f"--process_id={i}", f"--config.mesh.cpu_devices={devices_each}", wait=False) for i in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]


def _assert_same_metrics(a, b):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-6), (ra["step"], k)


def test_two_processes_equal_one(reference_run, tmp_path):
    # The reference's 4-device fsdp mesh split over two processes with 2 CPU devices each: the same
    # steps, checkpoints written by both processes, the same metrics. (With one CPU device per
    # process the first save failed inside Orbax, "input arrays must have one shard each", jax
    # 0.10.2 / orbax 0.12.8: hence 2 per process.)
    two = tmp_path / "two"
    _two_processes(two, 2, *MESH4)
    _assert_same_metrics(_metrics(reference_run), _metrics(two))


@pytest.mark.slow
def test_two_processes_equal_one_on_8_devices(tmp_path):
    mesh = ["--config.mesh.data=1", "--config.mesh.fsdp=8", "--config.mesh.tp=1"]
    one = tmp_path / "one"
    _train(one, *mesh, "--config.mesh.cpu_devices=8")
    two = tmp_path / "two"
    _two_processes(two, 4, *mesh)
    _assert_same_metrics(_metrics(one), _metrics(two))
