"""Loading HF checkpoints: sharded, full Omni (thinker.* keys), bad weights, pickles, bad inputs."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import omni_jax
from omni_jax.weights.hf_load import WeightMismatchError
from omni_jax.weights.safetensors_io import SafetensorsReader
from omni_jax.model.rope import PlaceholderError
from tests.helpers import tiny_hf as th


@pytest.fixture(scope="module")
def hf():
    return th.build_hf_thinker("a", seed=3)


def _text_inputs():
    ids, mask = th.left_pad([th.expand("loading test prompt"), th.expand("xy")])
    return dict(input_ids=ids, attention_mask=mask)


def _logits(hf, inputs):
    with torch.no_grad():
        return hf(**{k: torch.tensor(v) for k, v in inputs.items()}).logits.numpy()


def _save_full_omni(hf, path, shard_bytes=None):
    """A full Qwen2.5-Omni layout: thinker.* tensors, a talker tensor, a nested config, sharded."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"thinker.{k}": v.contiguous() for k, v in hf.state_dict().items()}
    tensors["talker.model.norm.weight"] = torch.ones(8)
    tensors["token2wav.code_embedding.weight"] = torch.zeros(4, 2)
    names = sorted(tensors)
    shards = [names[i::3] for i in range(3)]
    weight_map = {}
    for i, group in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-00003.safetensors"
        save_file({k: tensors[k] for k in group}, str(path / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in group})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    cfg = {"model_type": "qwen2_5_omni", "thinker_config": th.thinker_config_dict("a"), "talker_config": {}}
    (path / "config.json").write_text(json.dumps(cfg))


def test_full_omni_sharded_checkpoint_loads(hf, tmp_path):
    _save_full_omni(hf, tmp_path / "omni")
    model = omni_jax.load_thinker(tmp_path / "omni", progress=False)
    inputs = _text_inputs()
    diff = np.abs(model(**inputs) - _logits(hf, inputs))[inputs["attention_mask"].astype(bool)].max()
    assert diff < 1e-4


def test_thinker_only_sharded_save_pretrained_loads(hf, tmp_path):
    hf.save_pretrained(tmp_path, max_shard_size="50KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    model = omni_jax.load_thinker(tmp_path, progress=False)
    inputs = _text_inputs()
    assert np.abs(model(**inputs) - _logits(hf, inputs))[inputs["attention_mask"].astype(bool)].max() < 1e-4


def test_mismatched_weights_are_listed_in_one_error(hf, tmp_path):
    hf.save_pretrained(tmp_path)
    (f,) = tmp_path.glob("*.safetensors")
    reader = SafetensorsReader(tmp_path)
    tensors = {k: torch.from_numpy(np.array(reader.read(k))) for k in reader.keys()}
    del reader
    tensors.pop("model.layers.1.mlp.up_proj.weight")
    tensors.pop("visual.blocks.0.attn.q.bias")
    tensors["audio_tower.proj.weight"] = torch.zeros(3, 3)
    tensors["model.layers.0.extra.weight"] = torch.zeros(2)
    save_file(tensors, str(f), metadata={"format": "pt"})
    with pytest.raises(WeightMismatchError) as err:
        omni_jax.load_thinker(tmp_path, progress=False)
    msg = str(err.value)
    for name in ("model.layers.1.mlp.up_proj.weight", "visual.blocks.0.attn.q.bias", "audio_tower.proj.weight",
                 "model.layers.0.extra.weight"):
        assert name in msg
    assert "2 missing" in msg and "1 mis-shaped" in msg and "1 unexpected" in msg


def test_pytorch_pickles_are_refused_not_unpickled(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(th.thinker_config_dict("a")))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not even a pickle")
    with pytest.raises(FileNotFoundError, match="never unpickles"):
        omni_jax.load_thinker(tmp_path, progress=False)


def test_placeholder_mismatch_fails_before_tracing(hf, tmp_path):
    hf.save_pretrained(tmp_path)
    model = omni_jax.load_thinker(tmp_path, progress=False)
    grid = [(1, 4, 4)]
    ids = th.expand("a <|vision_bos|><|IMAGE|><|vision_eos|>", grids_image=grid)
    rng = np.random.default_rng(0)
    with pytest.raises(PlaceholderError, match="4 image placeholder tokens .* give 16"):
        model(input_ids=np.array([ids]), pixel_values=th.pixels(rng, [(1, 8, 8)]), image_grid_thw=np.array([(1, 8, 8)]))
    with pytest.raises(ValueError, match="do not match the grids"):
        model(input_ids=np.array([ids]), pixel_values=th.pixels(rng, [(1, 4, 2)]), image_grid_thw=np.array(grid))
    with pytest.raises(TypeError, match="unexpected model inputs"):
        model(input_ids=np.array([ids]), pixel_value=1)
