import json
import pathlib

import pytest
import torch

from omni_jax.model import abstract_thinker, count_params, from_hf_dict, load_config
from tests.helpers import tiny_hf as th

HF_CONFIGS = pathlib.Path(__file__).parents[2] / "omni_jax" / "assets" / "hf_configs"


@pytest.mark.parametrize("size", ["3b", "7b"])
def test_parameter_count_equals_transformers(size):
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    d = json.loads((HF_CONFIGS / f"qwen2_5_omni_{size}_thinker.json").read_text())
    hf_cfg = Qwen2_5OmniThinkerConfig(**{k: v for k, v in d.items() if k not in ("model_type", "architectures", "_comment")})
    with torch.device("meta"):
        hf = Qwen2_5OmniThinkerForConditionalGeneration(hf_cfg)
    expected = sum(p.numel() for p in hf.parameters())
    ours = count_params(abstract_thinker(from_hf_dict(d)))
    print(f"{size}: {ours:,} parameters")
    assert ours == expected


def test_full_omni_config_reads_the_thinker(tmp_path):
    thinker = th.thinker_config_dict("b")
    full = {"model_type": "qwen2_5_omni", "thinker_config": thinker, "talker_config": {"hidden_size": 8}}
    (tmp_path / "config.json").write_text(json.dumps(full))
    cfg = load_config(tmp_path)
    assert cfg.text.mrope_section == tuple(thinker["text_config"]["rope_parameters"]["mrope_section"])
    assert cfg.vision.fullatt_block_indexes == (0, 2)
    assert cfg.text.tie_word_embeddings is True
    assert cfg.audio.n_window == thinker["audio_config"]["n_window"]


def test_transformers_4_rope_scaling_is_read():
    d = th.thinker_config_dict("a")
    text = d["text_config"]
    text.pop("rope_parameters")
    text["rope_theta"] = 5000.0
    text["rope_scaling"] = {"mrope_section": [2, 1, 1], "type": "default"}
    cfg = from_hf_dict(d)
    assert cfg.text.rope_theta == 5000.0 and cfg.text.mrope_section == (2, 1, 1)


def test_unsupported_model_type_is_a_clear_error():
    with pytest.raises(ValueError, match="unsupported model_type 'llama'"):
        from_hf_dict({"model_type": "llama"})


def test_every_parameter_has_logical_axes_of_its_rank():
    from flax import nnx

    model = abstract_thinker(from_hf_dict(th.thinker_config_dict("a")))
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        axes = var.get_metadata()["out_sharding"]
        assert len(axes) == len(var.shape), (path, axes, var.shape)
        if "layers" in path or "blocks" in path:
            assert axes[0] == "layers", path
