"""Every config file and variant builds and validates; bad variants, unknown keys, inconsistent values fail."""

import itertools
import pathlib
import subprocess
import sys

import pytest

from configs import default, stage4_people_focus
from omni_jax import config_utils
from omni_jax.grpo.loss import LossConfig, beta_at

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("arg", [None, "num_generations=2", "num_generations=4", "num_generations=8,steps=50", "lora"])
def test_default_variants_validate(arg):
    c = default.get_config(arg)
    config_utils.validate(c, num_devices=1)
    assert c.model.architecture == "tiny" and c.data.mixture.synthetic == 1.0


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def test_default_lora_variant_changes_only_what_lora_needs():
    full, lora = _flat(default.get_config().to_dict()), _flat(default.get_config("lora").to_dict())
    assert {k for k in full if full[k] != lora[k]} == {"lora.rank", "lora.alpha", "optim.learning_rate", "warmstart.lora"}
    assert lora["lora.rank"] > 0 and not lora["warmstart.lora"]  # the warm-start trains the base, as the full run's


STAGE4 = [f"model={m},num_generations={g}" for m, g in itertools.product(("3b", "7b"), (2, 4, 8))]


@pytest.mark.parametrize("arg", STAGE4)
def test_stage4_variants_validate_on_v5p_8(arg):
    c = stage4_people_focus.get_config(arg + ",topology=v5p-8")
    config_utils.validate(c, num_devices=4)  # v5p-8 = 4 chips
    assert c.model.architecture == arg.split(",")[0].split("=")[1]
    assert c.rollout.num_generations == int(arg.rsplit("=", 1)[1])


def test_stage4_holds_the_recipe():
    c = stage4_people_focus.get_config("model=7b")
    assert c.optim.learning_rate == 5e-7 and c.optim.grad_accum == 8
    assert c.rollout.num_generations == 8 and c.rollout.max_new_tokens == 1024
    assert c.rollout.temperature == 0.9 and c.rollout.top_k == 50
    assert c.grpo.beta == 0.04 and c.grpo.epsilon_low == c.grpo.epsilon_high == 0.2
    assert {k: w for k, w in c.data.mixture.items() if w} == {"social_iq2": 0.5, "emer": 0.3, "video_r1": 0.2}
    assert c.data.max_frames == 64 and c.data.max_pixels == 602112
    assert "train_towers" not in c.model  # the towers are always frozen
    assert dict(c.rewards.weights) == {"format": 1.0, "accuracy": 1.0, "people_focus": 1.0}


def test_runlocal_variant_is_small_and_valid():
    c = stage4_people_focus.get_config("runlocal")
    config_utils.validate(c, num_devices=1)
    assert c.model.architecture == "tiny" and c.model.init == "random"


@pytest.mark.parametrize("arg,match", [("model=13b", "3b or 7b"), ("num_generations=3", "2, 4 or 8"),
                                       ("modle=7b", "unknown config variant key 'modle'"),
                                       ("topology=v9-8", "unknown topology")])
def test_bad_variants(arg, match):
    with pytest.raises(ValueError, match=match):
        stage4_people_focus.get_config(arg)


def test_configs_are_locked_against_typos():
    c = default.get_config()
    with pytest.raises(AttributeError):
        c.optim.learning_rat = 1.0


@pytest.mark.parametrize("change,devices,match", [
    (dict(optim__grad_accum=3), 1, "equal micro-batches"),
    (dict(mesh__fsdp=8), 4, "needs 8 devices; 4 are available"),
    (dict(mesh__fsdp=-1, mesh__data=3), 4, "does not divide the 4 available devices"),
    (dict(batch_prompts=1, rollout__num_generations=2, mesh__fsdp=4), 4, "does not divide over data × fsdp"),
    (dict(rollout__top_p=0.0), 1, "top_p"),
    (dict(grpo__scale_rewards="std"), 1, "scale_rewards"),
    (dict(model__train_towers=True), 1, "train_towers"),
    (dict(model__layer_loop="unroll"), 1, "layer_loop must be scan|unrolled"),
])
def test_inconsistent_values_are_refused(change, devices, match):
    c = default.get_config()
    with c.unlocked():
        for key, value in change.items():
            *path, leaf = key.split("__")
            node = c
            for p in path:
                node = node[p]
            node[leaf] = value
    with pytest.raises(ValueError, match=match):
        config_utils.validate(c, num_devices=devices)


def test_unknown_override_on_the_command_line_fails_fast():
    proc = subprocess.run([sys.executable, "-m", "omni_jax.train", "--config.optim.learning_rat=1e-3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()  # one line, no traceback
    assert len(lines) == 1 and lines[0].startswith(
        "omni_jax.train: unknown config key optim.learning_rat; closest: optim.learning_rate,"), lines


_CPU_DEVICES = """
import sys
from configs import default
from omni_jax import config_utils
c = default.get_config()
c.mesh.cpu_devices = int(sys.argv[1])
config_utils.apply_cpu_devices(c)
import jax
print(jax.device_count(), jax.devices()[0].platform)
"""


@pytest.mark.parametrize("cpu_devices,xla_flags,expected", [
    (3, "", "3 cpu"),  # the config sets the count
    (0, "", "1 cpu"),  # 0: JAX's default
    (3, "--xla_force_host_platform_device_count=4", "4 cpu"),  # an explicit XLA_FLAGS count wins
])
def test_cpu_devices_sets_the_cpu_device_count(cpu_devices, xla_flags, expected):
    env = {k: v for k, v in __import__("os").environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), **({"XLA_FLAGS": xla_flags} if xla_flags else {}))
    proc = subprocess.run([sys.executable, "-c", _CPU_DEVICES, str(cpu_devices)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[-2] == expected


def test_default_config_splits_the_batch_over_two_cpu_devices():
    c = default.get_config()
    assert c.mesh.cpu_devices == 2
    config_utils.validate(c, num_devices=2)


def test_negative_cpu_devices_is_refused():
    c = default.get_config()
    with c.unlocked():
        c.mesh.cpu_devices = -2
    with pytest.raises(ValueError, match="cpu_devices must be >= 0"):
        config_utils.apply_cpu_devices(c)


def test_stage4_lowers_beta_as_humanomniv2s_trainer():
    """β·(1 − 0.75·step/(total/2)) over the first half, then 0.25·β (HumanOmniV2 grpo_trainer)."""
    c = stage4_people_focus.get_config("model=7b")
    cfg = LossConfig(beta=c.grpo.beta, beta_decay=c.grpo.beta_decay)
    total = 100
    got = [float(beta_at(cfg, step, total)) for step in (0, 25, 50, 99)]
    assert got == pytest.approx([0.04, 0.025, 0.01, 0.01])


def _keys(c, prefix=""):
    out = set()
    for k, v in c.items():
        out.add(prefix + k)
        if hasattr(v, "items"):
            out |= _keys(v, f"{prefix}{k}.")
    return out


@pytest.mark.parametrize("config", [default.get_config(None), stage4_people_focus.get_config("model=7b")],
                         ids=["default", "stage4"])
def test_configs_only_change_the_defaults_of_base_and_the_sections(config):
    """The rule of config_utils: base() has every field; a config file changes values or takes a
    section's own variant (data_defaults("tiny")), and adds no field of its own."""
    from omni_jax.data.config import data_defaults

    allowed = _keys(config_utils.base()) | {f"data.{k}" for k in _keys(data_defaults("tiny"))}
    assert _keys(config) <= allowed, sorted(_keys(config) - allowed)
    outside_data = {k for k in _keys(config_utils.base()) if not k.startswith("data.")}  # a data variant has its own mixture
    assert outside_data <= _keys(config), sorted(outside_data - _keys(config))


def test_mesh_rules_come_from_the_config():
    """Trainer, SFT and fit check take their layout from `config_utils.layout`: its rules are
    `config.mesh.rules` (default parallel.DEFAULT_RULES), an override changes that rule only, and a
    bad one is refused."""
    import jax

    from omni_jax import parallel

    c = default.get_config(None)
    assert config_utils.mesh_rules(c) == parallel.DEFAULT_RULES
    c.mesh.rules.kv_heads = "tp"
    rules = dict(config_utils.mesh_rules(c))
    assert rules.pop("kv_heads") == "tp" and rules == {k: v for k, v in parallel.DEFAULT_RULES if k != "kv_heads"}
    layout = config_utils.layout(c, jax.devices()[:1])
    assert dict(layout.rules)["kv_heads"] == "tp" and layout.shape == {"data": 1, "fsdp": 1, "tp": 1}
    config_utils.validate(c, num_devices=1)
    c.mesh.rules.kv_heads = "model"
    with pytest.raises(ValueError, match="mesh.rules.kv_heads"):
        config_utils.validate(c, num_devices=1)
