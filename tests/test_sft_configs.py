"""configs/sft_lora.py: the plan's LoRA SFT stage and its tiny CPU variant build and validate; LoRA settings are checked."""

import pytest

from configs import sft_lora
from omni_jax.model import lora
from omni_jax.sft.loop import validate


def test_plan_stage_is_lora_r64_alpha128_from_a_manifest():
    c = sft_lora.get_config("model=7b,manifest=/data/sft.jsonl,media_root=/data,topology=v6e-8")
    validate(c, num_devices=8)
    assert (c.lora.rank, c.lora.alpha) == (64, 128.0)
    assert lora.config_from(c).scale == 2.0
    assert dict(c.data.mixture) == {"sft": 1.0} and c.data.manifests.sft == "/data/sft.jsonl"
    assert c.data.manifest_roots.sft == "/data" and c.data.max_frames == 64


def test_tiny_and_full_variants():
    c = sft_lora.get_config("tiny")
    validate(c, num_devices=2)
    assert c.model.architecture == "tiny" and c.lora.rank == 8 and dict(c.data.mixture) == {"synthetic": 1.0}
    assert lora.config_from(sft_lora.get_config("tiny,full")) is None


def test_bad_sft_settings_are_refused():
    c = sft_lora.get_config("tiny")
    with c.unlocked():
        c.sft.target_field = "answer"
        c.optim.grad_accum = 3
    with pytest.raises(ValueError, match="target_field") as e:
        validate(c, num_devices=1)
    assert "micro-batches" in str(e.value)
    with pytest.raises(ValueError, match="lora.targets"):
        lora.LoRAConfig(targets=("qkv_proj",))
