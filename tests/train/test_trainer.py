"""The training loop end to end on the tiny default: outputs, exact resume after kill -9, multi-host."""

import json
import os
import pathlib
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


def _train(workdir, *extra, env=None, wait=True):
    cmd = [sys.executable, "-m", "omni_jax.train", f"--workdir={workdir}", *SMALL, *extra]
    env = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _metrics(workdir):
    rows = [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


@pytest.fixture(scope="session")  # trained once per xdist worker, however its tests interleave with other modules
def reference_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ref")
    _train(workdir)
    return workdir


def test_outputs_of_a_run(reference_run):
    rows = _metrics(reference_run)
    assert any(r["grad_norm"] > 0 for r in rows), "no step updated the policy: the tests below would prove nothing"
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    needed = ["reward/total/mean", "reward/format/mean", "reward/format/std", "reward/accuracy/mean",
              "reward/people_focus/mean", "kl", "clip_fraction", "entropy", "completion/length_mean", "loss",
              "grad_norm"]
    for key in needed:
        assert all(key in r for r in rows), key
    raw = json.loads((reference_run / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("time/step_s", "time/rollout_s", "time/update_s", "perf/generated_tokens_per_s"):
        assert key in raw
    assert (reference_run / "reward_curves.png").stat().st_size > 1000
    assert list((reference_run / "tensorboard").glob("events.out.tfevents.*"))
    assert "=== step 2 samples ===" in (reference_run / "samples.txt").read_text()
    steps = sorted(int(p.name) for p in (reference_run / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 5 and len(steps) == default.get_config().keep_checkpoints  # the oldest were deleted


def test_kill_9_then_resume_gives_the_same_metrics(reference_run, tmp_path):
    workdir = tmp_path / "killed"
    proc = _train(workdir, wait=False)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline:  # kill -9 once step 3's metrics are written: mid-run, a save may be in flight
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail("training ended before it could be killed:\n" + proc.stdout.read()[-3000:])
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _train(workdir)  # same command: resumes from the newest complete checkpoint
    assert _metrics(workdir) == _metrics(reference_run)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    mesh = ["--config.mesh.data=1", "--config.mesh.fsdp=8", "--config.mesh.tp=1"]
    one = tmp_path / "one"
    _train(one, *mesh, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    port = _free_port()
    two = tmp_path / "two"
    procs = [_train(two, *mesh, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}",
                    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}, wait=False) for i in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    a, b = _metrics(one), _metrics(two)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-6), (ra["step"], k)
