"""Entry points: --help exits 0 everywhere, config mistakes are one line (omni_jax.cli)."""

import os
import subprocess
import sys

import pytest

from omni_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(ROOT, "configs", "default.py")


def test_an_unknown_key_names_the_closest_existing_keys():
    problem = cli.check_config_args(["--config.optim.lr=abc"], DEFAULT)
    assert problem.startswith("unknown config key optim.lr; closest: optim.learning_rate,")
    problem = cli.check_config_args(["--config", f"{DEFAULT}:steps=3", "--config.rollout.tempreature=1"], None)
    assert problem.startswith("unknown config key rollout.tempreature; closest: rollout.temperature")
    problem = cli.check_config_args([f"--config={DEFAULT}", "--config.optimizer.learning_rate=1"], None)
    assert "optim.learning_rate" in problem  # no such parent: the nearest dotted keys
    assert cli.check_config_args(["--config.optim.learning_rate=1e-3", "--config.rollout.top_k=5"], DEFAULT) is None


def test_a_renamed_key_names_its_new_name_on_the_command_line_and_in_a_config_file(tmp_path):
    problem = cli.check_config_args(["--config.grpo.share_prompt=False"], DEFAULT)
    assert problem.startswith("unknown config key grpo.share_prompt; closest: grpo.prefix_share,"), problem
    old = tmp_path / "old.py"
    old.write_text(f"import importlib.util\n"
                   f"spec = importlib.util.spec_from_file_location('d', {DEFAULT!r})\n"
                   f"default = importlib.util.module_from_spec(spec)\n"
                   f"spec.loader.exec_module(default)\n\n"
                   f"def get_config(arg=None):\n"
                   f"    c = default.get_config(arg)\n"
                   f"    c.grpo.share_prompt = False\n"
                   f"    return c\n")
    problem = cli.check_config_args(["--config", str(old)], None)
    assert problem.startswith(f"config {old}: unknown config key grpo.share_prompt; closest: grpo.prefix_share,"), \
        problem
    assert "\n" not in problem


def test_a_missing_or_broken_config_file_is_one_line(tmp_path):
    assert cli.check_config_args(["--config", "nope.py"], DEFAULT) == "config file nope.py not found"
    assert "unknown config variant key 'foo'" in cli.check_config_args([f"--config={DEFAULT}:foo=2"], None)
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(arg=None):\n    return 1 / 0\n")
    assert cli.check_config_args(["--config", str(broken)], None) == (
        f"config {broken} does not load: ZeroDivisionError: division by zero")


ENTRY_POINTS = ["omni_jax.train", "omni_jax.aot", "omni_jax.convert", "omni_jax.data.build", "omni_jax.tokenizer",
                "launch.tpu"]


def test_help_exits_0_for_every_entry_point():
    tokenizer_files = sorted((p, os.path.getmtime(p)) for p in _tiny_tokenizer_files())
    out = {}
    for module in ENTRY_POINTS:
        proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
        assert proc.returncode == 0, f"{module} --help: {proc.returncode}\n{proc.stderr[-2000:]}"
        out[module] = proc.stdout
    for source in ("social_iq2", "emer", "video_r1", "intentbench", "synthetic_tfds"):
        assert f"\n  {source} " in out["omni_jax.data.build"]
    assert "--topology" in out["omni_jax.aot"] and "--workdir" in out["omni_jax.train"]
    # --help of the tokenizer module prints usage; it does not rebuild the shipped tokenizer
    assert "usage:" in out["omni_jax.tokenizer"]
    assert sorted((p, os.path.getmtime(p)) for p in _tiny_tokenizer_files()) == tokenizer_files


def _tiny_tokenizer_files():
    from omni_jax.tokenizer import TINY_TOKENIZER_DIR

    return [str(p) for p in TINY_TOKENIZER_DIR.iterdir()]


@pytest.mark.parametrize("argv,want", [(["x", "--help"], True), (["x", "-h"], True), (["x", "--helpfull"], True),
                                       (["x", "--config.help=1"], False), (["x"], False)])
def test_asked_for_help(argv, want):
    assert cli.asked_for_help(argv) is want
