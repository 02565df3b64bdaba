"""LoRA export and import: JAX + adapters = transformers on the merged export = transformers + peft on the
PEFT adapter export (float32, 1e-4); a PEFT adapter loads back onto the base (load_thinker, hf2jax)."""

import json

import jax
import numpy as np
import pytest
import torch
from flax import nnx

import omni_jax
from omni_jax.checkpoint import CheckpointStore, thinker_meta
from omni_jax.weights import peft as peft_io
from omni_jax.convert.__main__ import main as cli
from omni_jax.model import lora
from tests.helpers import tiny_hf as th

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny HF base and a 'LoRA run' checkpoint on it: base weights + adapters with values, meta["lora"]."""
    root = tmp_path_factory.mktemp("lora_export")
    hf = th.build_hf_thinker("a", seed=3)  # untied lm_head
    hf.save_pretrained(root / "base")
    model = omni_jax.load_thinker(root / "base", progress=False)
    cfg = lora.LoRAConfig(rank=3, alpha=12, targets=TARGETS[:4] + ("down_proj",))
    lora.add_adapters(model, cfg, seed=1)
    rng = np.random.default_rng(0)
    lora.set_adapter_params(model, {n: {"a": ab["a"], "b": 0.2 * rng.standard_normal(ab["b"].shape)}
                                    for n, ab in lora.adapter_params(model).items()})
    meta = thinker_meta(model.cfg, lora=cfg.to_dict())
    with CheckpointStore(root / "ckpt", async_save=False) as store:
        store.save(7, params=nnx.state(model, nnx.Param).to_pure_dict(), meta=meta)
    return root, hf, model, cfg


def _inputs():
    ids, mask = th.left_pad([th.expand("adapters at work"), th.expand("abc")])
    return dict(input_ids=ids, attention_mask=mask)


def _hf_logits(model, inputs):
    with torch.no_grad():
        return model(**{k: torch.tensor(v) for k, v in inputs.items()}).logits.float().numpy()


def test_merged_and_peft_exports_equal_the_jax_model(run, tmp_path):
    from peft import PeftModel
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration as HFThinker

    root, _, model, cfg = run
    inputs = _inputs()
    valid = inputs["attention_mask"].astype(bool)
    ours = model(**inputs)
    base_logits = _hf_logits(HFThinker.from_pretrained(root / "base", dtype=torch.float32,
                                                       attn_implementation="eager").eval(), inputs)
    assert np.abs(ours - base_logits)[valid].max() > 1e-2  # the adapters change the model

    assert cli(["jax2hf", "--ckpt", str(root / "ckpt"), "--out", str(tmp_path / "merged")]) == 0
    merged = HFThinker.from_pretrained(tmp_path / "merged", dtype=torch.float32, attn_implementation="eager").eval()
    assert np.abs(_hf_logits(merged, inputs) - ours)[valid].max() <= 1e-4

    assert cli(["jax2hf", "--ckpt", str(root / "ckpt"), "--out", str(tmp_path / "adapter"), "--adapter_only"]) == 0
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 3 and config["lora_alpha"] == 12 and config["peft_type"] == "LORA"
    base = HFThinker.from_pretrained(root / "base", dtype=torch.float32, attn_implementation="eager").eval()
    with_adapter = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    # PEFT put adapters on exactly the decoder projections we trained (not the towers' like-named ones).
    adapted = sorted({n.rsplit(".lora_A", 1)[0].split(".layers.0.")[-1]
                      for n, _ in with_adapter.named_parameters() if ".lora_A." in n and ".layers.0." in n})
    assert adapted == sorted(f"{lora.PROJECTIONS[t][0]}.{t}" for t in cfg.targets)
    assert sum(1 for n, _ in with_adapter.named_parameters() if "lora_" in n) == 2 * len(cfg.targets) * 2
    assert np.abs(_hf_logits(with_adapter, inputs) - ours)[valid].max() <= 1e-4


def test_peft_adapter_loads_onto_the_base(run, tmp_path):
    root, _, model, cfg = run
    assert cli(["jax2hf", "--ckpt", str(root / "ckpt"), "--out", str(tmp_path / "adapter"), "--adapter_only"]) == 0
    inputs = _inputs()
    valid = inputs["attention_mask"].astype(bool)
    ours = model(**inputs)
    loaded = omni_jax.load_thinker(root / "base", adapter=tmp_path / "adapter", progress=False)
    assert lora.adapter_config(loaded) == cfg
    np.testing.assert_allclose(loaded(**inputs)[valid], ours[valid], atol=1e-5)
    # hf2jax --adapter: a checkpoint with base + adapters that load_thinker (and training) read back.
    assert cli(["hf2jax", "--hf_dir", str(root / "base"), "--adapter", str(tmp_path / "adapter"),
                "--out", str(tmp_path / "store")]) == 0
    restored = omni_jax.load_thinker(tmp_path / "store", progress=False)
    assert lora.adapter_config(restored) == cfg
    np.testing.assert_allclose(restored(**inputs)[valid], ours[valid], atol=1e-5)


def test_adapter_only_needs_a_lora_run_and_bad_adapters_are_refused(run, tmp_path, capsys):
    root, _, _, _ = run
    assert cli(["hf2jax", "--hf_dir", str(root / "base"), "--out", str(tmp_path / "plain")]) == 0
    assert cli(["jax2hf", "--ckpt", str(tmp_path / "plain"), "--out", str(tmp_path / "x"), "--adapter_only"]) == 2
    assert "no LoRA adapters" in capsys.readouterr().err
    with pytest.raises(ValueError, match="use_dora"):
        peft_io.config_from_peft({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": True}, "x.json")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        peft_io.read_adapter(tmp_path, 2)


def test_a_lora_checkpoint_as_init_is_merged_then_gets_fresh_adapters(run):
    """GRPO (or SFT) started from a LoRA run: that run's model as a whole is the base and reference."""
    from configs import default
    from omni_jax import parallel
    from omni_jax.grpo.policy import build_model
    from omni_jax.tokenizer import load_tokenizer

    root, _, model, _ = run
    config = default.get_config()
    with config.unlocked():
        config.model.init = str(root / "ckpt")
        config.model.layer_loop = "scan"
        config.lora.rank = 2
    policy = build_model(config, load_tokenizer("tiny"),
                         parallel.Layout(parallel.make_mesh({"fsdp": 1}, devices=[jax.devices()[0]])))
    assert lora.adapter_config(policy).rank == 2
    assert all(float(abs(ab["b"]).max()) == 0 for ab in lora.adapter_params(policy).values())
    inputs = _inputs()
    valid = inputs["attention_mask"].astype(bool)
    np.testing.assert_allclose(policy(**inputs)[valid], model(**inputs)[valid], atol=1e-5)
