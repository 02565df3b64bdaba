"""LoRA GRPO runs and SFT runs end to end: kill -9 then resume gives the same metrics; 2 processes = 1."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from tests.train.test_trainer import _free_port, _metrics, _train, kill_after

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Adapters with dropout and a KL term to the base (the adapters-off reference).
LORA = ["--config.lora.rank=8", "--config.lora.alpha=16", "--config.lora.dropout=0.1", "--config.grpo.beta=0.04",
        "--config.total_steps=4"]
SFT = ["--config.total_steps=4", "--config.checkpoint_every_steps=1", "--config.lora.dropout=0.1",
       "--config.sft.max_completion_tokens=48"]


@pytest.mark.slow  # ~60-70 s of three runs; the GRPO kill -9 and SFT SIGTERM tests cover resume in the default run
def test_lora_grpo_kill_9_then_resume_gives_the_same_metrics(tmp_path):
    ref = tmp_path / "ref"
    _train(ref, *LORA)
    rows = _metrics(ref)
    grpo = _metrics(ref, grpo_only=True)  # after the warm-start's step-0 rows
    assert [r["step"] for r in grpo] == [1, 2, 3, 4] and all(r["kl"] >= 0 for r in grpo)
    assert any(r["grad_norm"] > 0 for r in grpo)
    from omni_jax.checkpoint import CheckpointStore

    assert CheckpointStore(ref / "checkpoints", read_only=True).meta(4)["lora"]["rank"] == 8
    killed = tmp_path / "killed"
    proc = _train(killed, *LORA, wait=False)
    kill_after(proc, killed / "metrics.jsonl", 2)
    _train(killed, *LORA)  # the same command resumes from the newest complete checkpoint
    assert _metrics(killed) == rows


@pytest.mark.slow
def test_lora_grpo_two_processes_equal_one(tmp_path):
    mesh = ["--config.mesh.data=1", "--config.mesh.fsdp=8", "--config.mesh.tp=1"]
    one = tmp_path / "one"
    _train(one, *LORA, *mesh, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    port = _free_port()
    two = tmp_path / "two"
    procs = [_train(two, *LORA, *mesh, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                    f"--process_id={i}", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}, wait=False)
             for i in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    a, b = _metrics(one), _metrics(two)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-6), (ra["step"], k)


def _sft(workdir, *extra, wait=True):
    cmd = [sys.executable, "-m", "omni_jax.sft", f"--workdir={workdir}", *SFT, *extra]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _sft_config():
    """The config `_sft(..., "--config.mesh.cpu_devices=0")` runs, for a run in this process."""
    from configs import sft_lora

    config = sft_lora.get_config("tiny")  # python -m omni_jax.sft's default
    with config.unlocked():
        config.mesh.cpu_devices = 0  # JAX already runs in this process: its one CPU device
        config.total_steps, config.checkpoint_every_steps, config.lora.dropout = 4, 1, 0.1
        config.sft.max_completion_tokens = 48
    return config


def test_sft_lora_cli_run_then_sigterm_and_resume_give_the_same_metrics(tmp_path, monkeypatch):
    # `python -m omni_jax.sft` on one CPU device (as this test process has); then the same run in
    # this process, stopped by a real SIGTERM after step 2 (saved, "preempted"), and the same call
    # again, which resumes and ends with the CLI run's metrics. (kill -9 then resume, three
    # processes: test_sft_lora_run_outputs_and_kill_9_resume, slow.)
    from omni_jax import metrics as metrics_lib
    from omni_jax.grpo import guards
    from omni_jax.sft import run

    ref = tmp_path / "ref"
    summary = json.loads(_sft(ref, "--config.mesh.cpu_devices=0").stdout.strip().splitlines()[-1])
    assert summary["steps_run"] == 4 and summary["missing_target"] == 0 and not summary["preempted"]
    rows = _metrics(ref)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["loss"] < rows[0]["loss"]  # lr 3e-3 on the adapters: the target tokens get likelier
    assert (ref / "loss_curve.png").stat().st_size > 1000 and list((ref / "tensorboard").glob("events.out.*"))

    write = metrics_lib.MetricWriter.write

    def write_then_sigterm(self, step, scalars):  # the signal arrives while step 2 is being logged
        write(self, step, scalars)
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    stopped = tmp_path / "stopped"
    try:
        monkeypatch.setattr(guards.Preemption, "_installed", None)  # a fresh process's flag
        monkeypatch.setattr(metrics_lib.MetricWriter, "write", write_then_sigterm)
        summary = run(_sft_config(), str(stopped))
        assert summary["preempted"] and summary["steps_run"] == 2, summary
        monkeypatch.setattr(guards.Preemption, "_installed", None)
        monkeypatch.setattr(metrics_lib.MetricWriter, "write", write)
        summary = run(_sft_config(), str(stopped))
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert summary["steps_run"] == 2 and not summary["preempted"]
    assert _metrics(stopped) == rows


@pytest.mark.slow  # three processes (~75 s on 2 cores); the fast version is the SIGTERM test above
def test_sft_lora_run_outputs_and_kill_9_resume(tmp_path):
    ref = tmp_path / "ref"
    summary = json.loads(_sft(ref).stdout.strip().splitlines()[-1])
    assert summary["steps_run"] == 4 and summary["missing_target"] == 0
    rows = _metrics(ref)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["loss"] < rows[0]["loss"]  # lr 3e-3 on the adapters: the target tokens get likelier
    assert (ref / "loss_curve.png").stat().st_size > 1000 and list((ref / "tensorboard").glob("events.out.*"))
    killed = tmp_path / "killed"
    proc = _sft(killed, wait=False)
    kill_after(proc, killed / "metrics.jsonl", 2)
    _sft(killed)
    assert _metrics(killed) == rows
