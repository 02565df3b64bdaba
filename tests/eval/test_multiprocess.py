"""Two JAX processes (one CPU device each) evaluate as one program: the same answers as one process,
process 0 writes the files, and a rerun with more questions resumes in both."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _cmd(store, bench_root, out, limit):
    return [sys.executable, "-m", "omni_jax.eval", "--ckpt", f"{store}@0", "--bench", "ib", "--data_dir",
            str(bench_root), "--out", str(out), "--limit", str(limit), "--probe", "0", "--max_new_tokens", "8",
            "--batch_size", "2"]


def _two_processes(cmd):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen(cmd + ["--coordinator_address", f"localhost:{port}", "--num_processes", "2",
                                     "--process_id", str(i)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)


def _answers(out):
    return {r["id"]: r["output"] for r in map(json.loads, (out / "intentbench_run-step0.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_two_processes_answer_like_one_and_resume(tiny_store, bench_root, tmp_path):
    store = tmp_path / "run" / "checkpoints"
    store.parent.mkdir()
    store.symlink_to(tiny_store)
    _two_processes(_cmd(store, bench_root, tmp_path / "two", 3))
    assert len(_answers(tmp_path / "two")) == 3
    _two_processes(_cmd(store, bench_root, tmp_path / "two", 5))  # resumes: 2 new questions
    one = tmp_path / "one"
    subprocess.run(_cmd(store, bench_root, one, 5), cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                   check=True, capture_output=True, timeout=900)
    lines = (tmp_path / "two" / "intentbench_run-step0.jsonl").read_text().splitlines()
    assert len(lines) == 5  # nothing redone, nothing written twice
    assert _answers(tmp_path / "two") == _answers(one)
