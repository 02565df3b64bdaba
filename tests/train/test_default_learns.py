"""The embedded default (`python -m omni_jax.train`) learns: last-10-step reward clearly above the
first 10; so does its LoRA variant (`--config configs/default.py:lora`), GRPO training adapters only.

About 8–9 minutes each on 2 CPU cores, hence `slow`: run with `pytest -m slow tests/train/test_default_learns.py`.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from omni_jax.checkpoint import CheckpointStore

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _train(cwd, *args):
    proc = subprocess.run([sys.executable, "-m", "omni_jax.train", *args], cwd=cwd,
                          env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _rows(workdir):
    return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def _first_and_last_10(rows):
    totals = np.array([r["reward/total/mean"] for r in rows if r["step"] > 0])  # step 0: the warm-start's loss
    first, last = totals[:10].mean(), totals[-10:].mean()
    print(f"mean total reward: first 10 steps {first:.3f}, last 10 steps {last:.3f}")
    return first, last


@pytest.mark.slow
def test_default_run_raises_the_reward(tmp_path):
    # Exactly the README's main command: no arguments, so the default (relative) workdir/default.
    _train(tmp_path)
    tmp_path = tmp_path / "workdir" / "default"
    assert (tmp_path / "checkpoints").is_dir()
    first, last = _first_and_last_10(_rows(tmp_path))
    assert last > first + 0.3, (first, last)
    assert (tmp_path / "reward_curves.png").exists()


@pytest.mark.slow
def test_lora_variant_raises_the_reward(tmp_path):
    _train(ROOT, f"--config={ROOT / 'configs' / 'default.py'}:lora", f"--workdir={tmp_path}")
    rows = _rows(tmp_path)
    warm = [r["warmstart/loss"] for r in rows if r["step"] == 0]
    assert warm[-1] < 1.0, warm[-1]  # the base's own weights learned the answer form (adapters alone stall near 5)
    store = CheckpointStore(tmp_path / "checkpoints", read_only=True)
    assert store.meta(store.latest_step())["lora"]["rank"] == 8
    first, last = _first_and_last_10(rows)
    assert last > first + 0.3, (first, last)
