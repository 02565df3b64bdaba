"""The embedded default (`python -m omni_jax.train`) learns: last-10-step reward clearly above the first 10.

About 8–9 minutes on 2 CPU cores, hence `slow`: run with `pytest -m slow tests/train/test_default_learns.py`.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_default_run_raises_the_reward(tmp_path):
    # Exactly the README's main command: no arguments, so the default (relative) workdir/default.
    proc = subprocess.run([sys.executable, "-m", "omni_jax.train"], cwd=tmp_path,
                          env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tmp_path = tmp_path / "workdir" / "default"
    assert (tmp_path / "checkpoints").is_dir()
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    totals = np.array([r["reward/total/mean"] for r in rows if r["step"] > 0])  # step 0: the warm-start's loss
    first, last = totals[:10].mean(), totals[-10:].mean()
    print(f"mean total reward: first 10 steps {first:.3f}, last 10 steps {last:.3f}")
    assert last > first + 0.3, (first, last)
    assert (tmp_path / "reward_curves.png").exists()
