"""config.eval during training, and the embedded default's warm-start and final checkpoints evaluated
side by side (a shortened run of the default config: the full one is the README's command)."""

import json

import pytest

from omni_jax.eval import suite
from tests.eval.conftest import QUESTIONS


def _shortened_default(**overrides):
    from configs import default

    config = default.get_config()
    with config.unlocked():
        config.mesh.cpu_devices = 0  # JAX is already running in this process: one CPU device
        config.warmstart.steps = 2
        config.total_steps = 2
        config.checkpoint_every_steps = 2
        config.batch_prompts = 2
        config.rollout.num_generations = 2
        config.rollout.max_new_tokens = 8
        config.eval.every_steps = 1
        config.eval.size = 3
        config.eval.batch_size = 4
        for key, value in overrides.items():
            config[key] = value
    return config


def test_default_run_logs_eval_metrics_and_its_checkpoints_compare(tmp_path, bench_root):
    from omni_jax import metrics
    from omni_jax.grpo.trainer import run

    workdir = tmp_path / "run"
    run(_shortened_default(), str(workdir))
    rows = metrics.read_jsonl(workdir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert 0.0 <= row["eval/accuracy"] <= 1.0
        assert row["eval/questions"] == 3 and row["eval/skipped"] == 0
        assert {"eval/people_focus/score", "eval/people_focus/think_words", "eval/people_focus/people"} <= set(row)
        assert row["eval/questions_per_s"] > 0
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))

    # The warm-start checkpoint (step 0) and the final one, on held-out questions written as mp4.
    ckpts = workdir / "checkpoints"
    out = tmp_path / "eval"
    options = suite.SuiteOptions(batch_size=4, max_new_tokens=8, probe_per_instruction=0, progress=False)
    path = suite.run_suite([f"warmstart={ckpts}@0", f"final={ckpts}"], ["intentbench"], data_dir=str(bench_root),
                           out_dir=str(out), options=options)
    text = path.read_text()
    assert "| metric | warmstart | final | final − warmstart |" in text
    for name in ("warmstart", "final"):
        payload = json.loads((out / f"intentbench_{name}.json").read_text())
        assert len(payload["results"]) == QUESTIONS


def test_eval_config_is_checked():
    from omni_jax import config_utils

    config = _shortened_default()
    with config.unlocked():
        config.eval.split = "mmlu"
    with pytest.raises(ValueError, match="eval.split"):
        config_utils.validate(config, 1)
    with config.unlocked():
        config.eval.split = "intentbench"
    with pytest.raises(ValueError, match="eval.data_dir"):
        config_utils.validate(config, 1)
