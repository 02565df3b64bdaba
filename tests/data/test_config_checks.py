"""A manifest or mixture entry the run would not use is an error that says what to set instead."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from configs import default, stage4_people_focus
from omni_jax import config_utils

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _manifest(tmp_path):
    path = tmp_path / "own.json"
    path.write_text(json.dumps([{"problem": "Who speaks?", "problem_type": "free-form",
                                 "solution": "<answer>the man</answer>", "path": "a.mp4"}]))
    return str(path)


def test_a_manifest_of_an_unweighted_source_is_an_error(tmp_path):
    c = default.get_config()
    c.data.manifests.emer = _manifest(tmp_path)
    with pytest.raises(ValueError, match=r"data.manifests.emer=.* is set but data.mixture.emer is 0.0, so the manifest "
                                         r"would never be read; to train on it set --config.data.mixture.emer=1.0 "
                                         r"\(and --config.data.mixture.synthetic=0 to train on it alone\)"):
        config_utils.validate(c, num_devices=1)
    c.data.mixture.emer = 1.0  # every source has an entry: switching one on is one flag
    c.data.mixture.synthetic = 0.0
    config_utils.validate(c, num_devices=1)


@pytest.mark.parametrize("field,value,match", [
    ("manifests.custom", "/no/such/manifest.json", r"data.manifests.custom=/no/such/manifest.json: no such file"),
    ("manifest_roots.emer", "/media", r"data.manifest_roots.emer=/media is set without data.manifests.emer"),
    ("mixture.custom", 1.0, r"data.mixture.custom=1.0 but source 'custom' has no data: set "
                            r"--config.data.manifests.custom="),
    ("mixture.synthetic", -1.0, r"data.mixture.synthetic=-1.0: weights must be >= 0"),
])
def test_entries_the_run_cannot_use_are_errors(field, value, match):
    c = default.get_config()
    group, key = field.split(".")
    c.data[group][key] = value
    if field == "manifests.custom":
        c.data.mixture.custom = 1.0
    with pytest.raises(ValueError, match=match):
        config_utils.validate(c, num_devices=1)


def test_the_recipe_config_still_validates():
    config_utils.validate(stage4_people_focus.get_config("runlocal"), num_devices=1)


@pytest.mark.slow  # builds the tiny model first: minutes on a loaded 2-core machine
def test_training_on_ones_own_manifest_from_the_command_line(tmp_path):
    """The README's one command, up to the first check of the data (a manifest with no media file)."""
    manifest = _manifest(tmp_path)
    cmd = [sys.executable, "-m", "omni_jax.train", f"--workdir={tmp_path / 'w'}", "--config.warmstart.steps=0",
           f"--config.data.manifests.custom={manifest}", "--config.data.mixture.custom=1.0",
           "--config.data.mixture.synthetic=0"]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                          timeout=600)
    # The config is accepted and the manifest read: its only row names a missing video, so the data
    # check stops the run, naming the source (no AttributeError, no silent synthetic run).
    assert proc.returncode != 0
    assert "source 'custom': the first 1 records read were all bad ({'missing_file': 1})" in proc.stderr, \
        proc.stderr[-3000:]


def test_an_unknown_source_on_the_command_line_is_named_in_words(tmp_path):
    cmd = [sys.executable, "-m", "omni_jax.train", f"--workdir={tmp_path}", "--config.data.mixture.mydata=1.0"]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode != 0
    assert "unknown config key data.mixture.mydata; closest: " in proc.stderr and "data.mixture.custom" in proc.stderr
    assert "Traceback" not in proc.stderr
