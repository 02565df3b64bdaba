"""omni_jax.clip against transformers' CLIPModel (tiny random configs, float32, CPU)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omni_jax.clip import config as clip_config
from omni_jax.weights.clip_load import load_clip, save_hf, to_hf
from omni_jax.clip.model import abstract_clip, num_params
from omni_jax.weights.hf_load import WeightMismatchError
from omni_jax.weights.safetensors_io import SafetensorsReader, write_safetensors
from tests.clip.tiny_clip import clip_config_dict, save_hf_clip


def _inputs(variant, rng):
    cfg = clip_config_dict(variant)
    size = cfg["vision_config"]["image_size"]
    pixels = rng.standard_normal((3, 3, size, size)).astype(np.float32)
    ids = rng.integers(3, 90, size=(4, 11))
    mask = np.ones_like(ids)
    eos = cfg["text_config"]["eos_token_id"]
    for row, length in enumerate((11, 7, 5, 9)):
        ids[row, length - 1] = 98 if eos == 2 else eos  # the largest id / the eos id ends each text
        ids[row, length:] = 1
        mask[row, length:] = 0
    return ids, mask, pixels


@pytest.mark.parametrize("variant", ["openai", "eos_id"])
def test_embeds_and_logits_match_transformers(tmp_path, variant):
    import torch

    hf = save_hf_clip(tmp_path, variant)
    ids, mask, pixels = _inputs(variant, np.random.default_rng(1))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), pixel_values=torch.tensor(pixels))
    graphdef, state = nnx.split(load_clip(tmp_path))

    @jax.jit  # one compile for the forward and the unnormalised image features (what the post-processor batches)
    def forward(state, ids, pixels, mask):
        model = nnx.merge(graphdef, state)
        return model(ids, pixels, mask), model.get_image_features(pixels)

    out, features = forward(state, jnp.asarray(ids), jnp.asarray(pixels), jnp.asarray(mask))
    for key in ("image_embeds", "text_embeds", "logits_per_image", "logits_per_text"):
        np.testing.assert_allclose(np.asarray(out[key]), getattr(ref, key).numpy(), atol=1e-4, rtol=1e-4, err_msg=key)
    with torch.no_grad():
        img = hf.get_image_features(pixel_values=torch.tensor(pixels)).pooler_output.numpy()
    np.testing.assert_allclose(np.asarray(features), img, atol=1e-4, rtol=1e-4)


def test_table_round_trips_hf_weights(tmp_path):
    hf = save_hf_clip(tmp_path / "hf")
    model = load_clip(tmp_path / "hf")
    exported = to_hf(model)
    state = {k: v.numpy() for k, v in hf.state_dict().items() if not k.endswith("position_ids")}
    assert sorted(exported) == sorted(state)
    for name, value in state.items():
        np.testing.assert_array_equal(exported[name], value, err_msg=name)
    # And what save_hf writes, transformers reads back to the same outputs.
    import torch
    from transformers import CLIPModel

    save_hf(model, tmp_path / "back")
    again = CLIPModel.from_pretrained(tmp_path / "back").eval()
    for name, value in again.state_dict().items():
        if not name.endswith("position_ids"):
            np.testing.assert_array_equal(value.numpy(), state[name], err_msg=name)
    assert isinstance(again.logit_scale, torch.nn.Parameter)


def test_mismatched_checkpoint_names_every_problem(tmp_path):
    save_hf_clip(tmp_path)
    reader = SafetensorsReader(tmp_path)
    tensors = {k: reader.read(k) for k in reader.keys()}
    reader.close()
    del tensors["text_projection.weight"]
    tensors["vision_model.post_layernorm.weight"] = np.ones(7, np.float32)
    tensors["extra.weight"] = np.ones(2, np.float32)
    for f in tmp_path.glob("*.safetensors"):
        f.unlink()
    write_safetensors(tmp_path / "model.safetensors", sorted(tensors.items()))
    with pytest.raises(WeightMismatchError) as e:
        load_clip(tmp_path)
    msg = str(e.value)
    assert "text_projection.weight" in msg and "vision_model.post_layernorm.weight" in msg and "extra.weight" in msg


def test_not_a_clip_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_omni"}))
    with pytest.raises(ValueError, match="CLIPModel config"):
        load_clip(tmp_path)


@pytest.mark.parametrize("preset", ["vit_b32", "vit_l14"])
def test_real_layouts_have_transformers_parameter_count(preset):
    import torch
    from transformers import CLIPConfig, CLIPModel

    hf_dict = json.loads((clip_config.PRESETS_DIR / clip_config.PRESETS[preset]).read_text())
    with torch.device("meta"):
        hf = CLIPModel(CLIPConfig(**hf_dict))
    expected = sum(p.numel() for p in hf.parameters())
    ours = num_params(abstract_clip(clip_config.preset_config(preset)))
    assert ours == expected
    assert expected == {"vit_b32": 151_277_313, "vit_l14": 427_616_513}[preset]


def test_remote_directory_is_cached_locally(tmp_path, monkeypatch):
    """A gs:// directory is read through etils.epath into $OMNI_JAX_CACHE (here epath's gs:// is
    pointed at a local folder: the copy and cache logic is what runs)."""
    from etils import epath

    save_hf_clip(tmp_path / "bucket" / "clip")
    real_path = epath.Path
    monkeypatch.setattr(epath, "Path", lambda p: real_path(str(p).replace("gs://", str(tmp_path / "bucket") + "/")))
    monkeypatch.setenv("OMNI_JAX_CACHE", str(tmp_path / "cache"))
    model = load_clip("gs://clip")
    cached = list((tmp_path / "cache" / "remote").iterdir())
    assert len(cached) == 1 and (cached[0] / "model.safetensors").exists() and (cached[0] / "config.json").exists()
    assert model.cfg.projection_dim == 16
    stamp = (cached[0] / "model.safetensors").stat().st_mtime_ns
    load_clip("gs://clip")  # second load: the cached copy is reused, not copied again
    assert (cached[0] / "model.safetensors").stat().st_mtime_ns == stamp
