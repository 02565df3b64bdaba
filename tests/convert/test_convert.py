"""HF ↔ Orbax conversion: bit-exact round trips, transformers loads the export, full Omni, bad input."""

import copy
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import omni_jax
from omni_jax.checkpoint import CheckpointStore
from omni_jax.convert.__main__ import main as cli
from omni_jax.weights.hf_load import WeightMismatchError
from omni_jax.convert.hf_to_orbax import hf_to_orbax
from omni_jax.convert.orbax_to_hf import orbax_to_hf
from omni_jax.weights.safetensors_io import SafetensorsReader
from omni_jax.checkpoint.loading import abstract_params
from tests.helpers import tiny_hf as th

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZER_DIR = os.path.join(REPO, "omni_jax", "assets", "tiny_tokenizer")


@pytest.fixture(scope="module")
def hf():
    return th.build_hf_thinker("b", seed=5)  # variant b: tied embeddings, kv=1, three vision blocks


@pytest.fixture(scope="module")
def hf_dir(hf, tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_b")
    hf.save_pretrained(path, max_shard_size="60KB")
    return path


def _tensors(directory):
    """name -> (dtype, raw bytes, shape) of every tensor, read independently of our reader."""
    from safetensors import safe_open

    out = {}
    index = json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"]
    for fname in sorted(set(index.values())):
        with safe_open(str(directory / fname), framework="pt") as f:
            for k in f.keys():
                t = f.get_tensor(k)
                out[k] = (t.dtype, t.view(torch.uint8).numpy().tobytes() if t.dim() else t.numpy().tobytes(), tuple(t.shape))
    return out


def _text_inputs():
    ids, mask = th.left_pad([th.expand("conversion test prompt"), th.expand("xyz")])
    return dict(input_ids=ids, attention_mask=mask)


def _hf_logits(model, inputs):
    with torch.no_grad():
        return model(**{k: torch.tensor(v) for k, v in inputs.items()}).logits.float().numpy()


@pytest.mark.parametrize("torch_dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_hf_to_orbax_to_hf_is_bit_exact(hf, tmp_path, torch_dtype):
    src = tmp_path / "src"
    copy.deepcopy(hf).to(torch_dtype).save_pretrained(src, max_shard_size="60KB")
    meta = hf_to_orbax(src, tmp_path / "orbax", progress=False)
    assert meta["param_dtype"] == {torch.float32: "float32", torch.bfloat16: "bfloat16"}[torch_dtype]
    orbax_to_hf(tmp_path / "orbax", tmp_path / "back", max_shard_bytes=100_000, progress=False)
    want, got = _tensors(src), _tensors(tmp_path / "back")
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], f"{name} differs after the round trip"
    # Shards respect the cap; a tensor larger than the cap stands alone.
    weight_map = json.loads((tmp_path / "back" / "model.safetensors.index.json").read_text())["weight_map"]
    shards = {}
    for name, fname in weight_map.items():
        shards.setdefault(fname, []).append(name)
    assert len(shards) > 1
    for fname, names in shards.items():
        data = sum(len(got[n][1]) for n in names)
        assert data <= 100_000 or len(names) == 1, (fname, data, names)


def test_conversion_dtype_matches_torch_rounding(hf, hf_dir, tmp_path):
    hf_to_orbax(hf_dir, tmp_path / "orbax", dtype="bfloat16", progress=False)
    orbax_to_hf(tmp_path / "orbax", tmp_path / "bf16", progress=False)
    got = _tensors(tmp_path / "bf16")
    assert sorted(got) == sorted(_tensors(hf_dir))  # tied lm_head: not saved either side
    state = hf.state_dict()
    for name in got:
        want = state[name].to(torch.bfloat16)
        assert got[name][0] == torch.bfloat16
        assert got[name][1] == want.view(torch.uint8).numpy().tobytes(), name
    # Casting at export: a float32 checkpoint exported as bfloat16 rounds like torch does.
    hf_to_orbax(hf_dir, tmp_path / "orbax32", progress=False)
    orbax_to_hf(tmp_path / "orbax32", tmp_path / "bf16_export", dtype="bfloat16", progress=False)
    assert _tensors(tmp_path / "bf16_export") == got
    # Exporting float32 from a bfloat16 checkpoint is exact (widening).
    orbax_to_hf(tmp_path / "orbax", tmp_path / "f32", dtype="float32", progress=False)
    reader = SafetensorsReader(tmp_path / "f32")
    name = "model.layers.1.mlp.down_proj.weight"
    np.testing.assert_array_equal(reader.read(name), hf.state_dict()[name].to(torch.bfloat16).float().numpy())


def test_export_loads_in_transformers_with_equal_logits(hf, hf_dir, tmp_path):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    assert cli(["hf2jax", "--hf_dir", str(hf_dir), "--out", str(tmp_path / "orbax")]) == 0
    ours = omni_jax.load_thinker(tmp_path / "orbax", progress=False)
    assert cli(["jax2hf", "--ckpt", str(tmp_path / "orbax"), "--out", str(tmp_path / "hf"),
                "--base_hf_dir", TOKENIZER_DIR]) == 0
    for name in ("config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
                 "tokenizer_config.json"):
        assert (tmp_path / "hf" / name).exists(), name
    exported = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        tmp_path / "hf", dtype=torch.float32, attn_implementation="eager").eval()
    inputs = _text_inputs()
    valid = inputs["attention_mask"].astype(bool)
    assert np.abs(_hf_logits(exported, inputs) - ours(**inputs))[valid].max() <= 1e-4
    assert np.abs(_hf_logits(exported, inputs) - _hf_logits(hf, inputs))[valid].max() == 0


@pytest.fixture(scope="module")
def full_base(tmp_path_factory):
    """A tiny random full Qwen2.5-Omni saved like the Hub release: weights, speakers, tokenizer."""
    model = th.build_hf_full_omni("a", seed=11)
    path = tmp_path_factory.mktemp("full")
    model.save_pretrained(path, max_shard_size="80KB")
    torch.save({"Chelsie": {"cond": torch.arange(4.0)}}, path / "spk_dict.pt")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOKENIZER_DIR, name), path / name)
    (path / "chat_template.jinja").write_text("{{ messages }}")
    return model, path


def test_full_omni_export_keeps_talker_and_token2wav(full_base, tmp_path, caplog):
    from transformers import Qwen2_5OmniForConditionalGeneration

    base, base_dir = full_base
    hf_to_orbax(base_dir, tmp_path / "orbax", progress=False)
    # A "trained" step: every thinker parameter changed, saved as a training run would.
    converted = CheckpointStore(tmp_path / "orbax", read_only=True)
    meta = converted.meta()
    ours = omni_jax.load_thinker(tmp_path / "orbax", progress=False)
    from flax import nnx

    params = jax.tree.map(lambda x: x * 1.01 + 0.001, nnx.state(ours, nnx.Param).to_pure_dict())
    with CheckpointStore(tmp_path / "run", async_save=False) as run:
        run.save(3, params=params, meta=meta, extra={"data": {"position": 9}})
        run.save(7, params=jax.tree.map(lambda x: x * 0, params), meta=meta)
    trained = omni_jax.load_thinker(tmp_path / "run", step=3, progress=False)
    by_step_dir = omni_jax.load_thinker(tmp_path / "run" / "3", progress=False)
    inputs = _text_inputs()
    np.testing.assert_array_equal(by_step_dir(**inputs), trained(**inputs))

    with caplog.at_level(logging.WARNING):
        summary = orbax_to_hf(tmp_path / "run", tmp_path / "export", step=3, base_hf_dir=base_dir, progress=False)
    assert summary["full_model"] and summary["step"] == 3
    # Orbax's warnings about the training state it was not asked to read become one summary field
    assert summary["not_exported"] == ["data"] and "could not be restored" not in caplog.text
    out = tmp_path / "export"
    assert json.loads((out / "config.json").read_text()) == json.loads((base_dir / "config.json").read_text())
    for name in ("spk_dict.pt", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "generation_config.json"):
        assert (out / name).read_bytes() == (base_dir / name).read_bytes(), name
    want, got = _tensors(base_dir), _tensors(out)
    assert sorted(got) == sorted(want)
    talker = [k for k in want if not k.startswith("thinker.")]
    assert any(k.startswith("talker.") for k in talker) and any(k.startswith("token2wav.") for k in talker)
    for name in talker:
        assert got[name] == want[name], f"{name} must be copied untouched"
    assert all(got[k] != want[k] for k in want if k.startswith("thinker.") and "norm" not in k)

    loaded = Qwen2_5OmniForConditionalGeneration.from_pretrained(out, dtype=torch.float32,
                                                                 attn_implementation="eager").eval()
    assert loaded.has_talker and "Chelsie" in loaded.speaker_map
    valid = inputs["attention_mask"].astype(bool)
    assert np.abs(_hf_logits(loaded.thinker, inputs) - trained(**inputs))[valid].max() <= 1e-4
    assert np.abs(_hf_logits(loaded.thinker, inputs) - _hf_logits(base.thinker, inputs))[valid].max() > 1e-3

    # Without a base the same step exports as a thinker-only checkpoint (config taken from the full one).
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    orbax_to_hf(tmp_path / "run", tmp_path / "thinker_only", step=3, progress=False)
    assert json.loads((tmp_path / "thinker_only" / "config.json").read_text())["model_type"] == "qwen2_5_omni_thinker"
    thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        tmp_path / "thinker_only", dtype=torch.float32, attn_implementation="eager").eval()
    assert np.abs(_hf_logits(thinker, inputs) - trained(**inputs))[valid].max() <= 1e-4


def test_restore_onto_a_mesh_by_abstract_params(hf_dir, tmp_path):
    hf_to_orbax(hf_dir, tmp_path / "orbax", progress=False)
    from flax import nnx

    from omni_jax.model.config import from_hf_dict
    from omni_jax.model.thinker import abstract_thinker

    store = CheckpointStore(tmp_path / "orbax", read_only=True)
    _, state = nnx.split(abstract_thinker(from_hf_dict(store.meta()["hf_config"])))
    params = store.restore(params_abstract=abstract_params(state)).params
    reader = SafetensorsReader(hf_dir)
    np.testing.assert_array_equal(np.asarray(params["model"]["layers"]["self_attn"]["q_proj"]["kernel"][1]),
                                  reader.read("model.layers.1.self_attn.q_proj.weight").T)
    np.testing.assert_array_equal(np.asarray(params["visual"]["patch_embed"]["kernel"]),
                                  reader.read("visual.patch_embed.proj.weight").reshape(32, -1).T)


# ---- bad input -------------------------------------------------------------------------------


def test_mismatched_tensors_are_listed_in_one_error(hf, tmp_path):
    hf.save_pretrained(tmp_path / "src")
    (f,) = (tmp_path / "src").glob("*.safetensors")
    reader = SafetensorsReader(tmp_path / "src")
    tensors = {k: torch.from_numpy(np.array(reader.read(k))) for k in reader.keys()}
    reader.close()
    tensors.pop("model.layers.0.self_attn.k_proj.bias")
    tensors["visual.blocks.2.mlp.up_proj.weight"] = torch.zeros(3, 3)
    tensors["audio_tower.layers.0.extra.weight"] = torch.zeros(2)
    save_file(tensors, str(f), metadata={"format": "pt"})
    with pytest.raises(WeightMismatchError) as err:
        hf_to_orbax(tmp_path / "src", tmp_path / "out", progress=False)
    msg = str(err.value)
    assert "1 missing" in msg and "1 mis-shaped" in msg and "1 unexpected" in msg
    for name in ("model.layers.0.self_attn.k_proj.bias", "visual.blocks.2.mlp.up_proj.weight",
                 "audio_tower.layers.0.extra.weight"):
        assert name in msg
    assert not (tmp_path / "out").exists()


def test_export_checks_stored_params_against_the_config(hf_dir, tmp_path):
    hf_to_orbax(hf_dir, tmp_path / "orbax", progress=False)
    store = CheckpointStore(tmp_path / "orbax", read_only=True)
    meta = store.meta()
    ours = omni_jax.load_thinker(tmp_path / "orbax", progress=False)
    from flax import nnx

    params = jax.tree.map(np.asarray, nnx.state(ours, nnx.Param).to_pure_dict())
    del params["audio_tower"]["proj"]["bias"]
    params["model"]["norm"]["weight"] = np.zeros(5, np.float32)
    params["extra_head"] = {"kernel": np.zeros((2, 2), np.float32)}
    with CheckpointStore(tmp_path / "bad", async_save=False) as bad:
        bad.save(0, params=params, meta=meta)
    with pytest.raises(WeightMismatchError) as err:
        orbax_to_hf(tmp_path / "bad", tmp_path / "hf", progress=False)
    msg = str(err.value)
    assert "audio_tower.proj.bias" in msg and "model.norm.weight: stored (5,)" in msg and "extra_head.kernel" in msg
    assert not (tmp_path / "hf").exists()


def test_existing_outputs_are_refused_unless_overwrite(hf_dir, tmp_path, capsys):
    (tmp_path / "orbax").mkdir()
    (tmp_path / "orbax" / "keep.txt").write_text("x")
    assert cli(["hf2jax", "--hf_dir", str(hf_dir), "--out", str(tmp_path / "orbax")]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "orbax" / "keep.txt").exists()
    assert cli(["hf2jax", "--hf_dir", str(hf_dir), "--out", str(tmp_path / "orbax"), "--overwrite"]) == 0
    assert not (tmp_path / "orbax" / "keep.txt").exists()

    (tmp_path / "hf").mkdir()
    assert cli(["jax2hf", "--ckpt", str(tmp_path / "orbax"), "--out", str(tmp_path / "hf")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli(["jax2hf", "--ckpt", str(tmp_path / "orbax"), "--out", str(tmp_path / "hf"), "--overwrite"]) == 0
    assert (tmp_path / "hf" / "config.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_pickles_are_refused_never_unpickled(hf_dir, tmp_path, capsys):
    src = tmp_path / "pickled"
    src.mkdir()
    shutil.copy(hf_dir / "config.json", src)
    (src / "pytorch_model.bin").write_bytes(b"not even a pickle")
    assert cli(["hf2jax", "--hf_dir", str(src), "--out", str(tmp_path / "o")]) == 2
    assert "never unpickles" in capsys.readouterr().err
    # A full-model base with pickled weights is refused the same way.
    hf_to_orbax(hf_dir, tmp_path / "orbax", progress=False)
    cfg = {"model_type": "qwen2_5_omni", "thinker_config": th.thinker_config_dict("b")}
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FileNotFoundError, match="never unpickles"):
        orbax_to_hf(tmp_path / "orbax", tmp_path / "hf", base_hf_dir=src, progress=False)


def test_missing_or_empty_checkpoints_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hf_to_orbax(tmp_path / "nope", tmp_path / "o", progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        orbax_to_hf(tmp_path / "nope", tmp_path / "hf", progress=False)
    with pytest.raises(ValueError, match="writes a local directory"):
        orbax_to_hf(tmp_path / "nope", "gs://bucket/export", progress=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "0.orbax-checkpoint-tmp").mkdir()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint step"):
        omni_jax.load_thinker(tmp_path / "empty", progress=False)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint step"):
        orbax_to_hf(tmp_path / "empty", tmp_path / "hf", progress=False)


# ---- interrupted writes ----------------------------------------------------------------------

SLOW_HF2JAX = r"""
import sys, time
from omni_jax.weights import safetensors_io
from omni_jax.convert.hf_to_orbax import hf_to_orbax
import threading
read, lock = safetensors_io.SafetensorsReader.read, threading.Lock()
def slow(self, *a, **k):
    with lock:  # reads run in writer threads: one at a time, so the whole write takes ~30 s
        print("reading", flush=True)
        time.sleep(0.25)
        return read(self, *a, **k)
safetensors_io.SafetensorsReader.read = slow
hf_to_orbax(sys.argv[1], sys.argv[2], progress=False)
print("finished", flush=True)
"""

SLOW_JAX2HF = r"""
import sys, time
from omni_jax.weights import safetensors_io
from omni_jax.convert.orbax_to_hf import orbax_to_hf
checked = safetensors_io.LazyTensor._checked
def slow(self, rows):
    print("writing", flush=True)
    time.sleep(0.2)
    return checked(self, rows)
safetensors_io.LazyTensor._checked = slow
orbax_to_hf(sys.argv[1], sys.argv[2], max_shard_bytes=20_000, progress=False)
print("finished", flush=True)
"""


def _run_and_kill(script, *args, marker, after_s=1.0):
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    try:
        for line in proc.stdout:
            if line.strip() == marker:
                break
        time.sleep(after_s)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the writer finished before it could be interrupted"


def test_interrupted_hf2jax_never_loads_as_complete(hf_dir, tmp_path):
    _run_and_kill(SLOW_HF2JAX, hf_dir, tmp_path / "orbax", marker="reading")
    assert (tmp_path / "orbax").exists()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint step"):
        omni_jax.load_thinker(tmp_path / "orbax", progress=False)
    assert CheckpointStore(tmp_path / "orbax", read_only=True).all_steps() == []


def test_interrupted_jax2hf_leaves_no_output_directory(hf_dir, tmp_path):
    hf_to_orbax(hf_dir, tmp_path / "orbax", progress=False)
    _run_and_kill(SLOW_JAX2HF, tmp_path / "orbax", tmp_path / "hf", marker="writing")
    assert not (tmp_path / "hf").exists()
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".hf.partial-")]
    assert partial and list(partial[0].glob("*.safetensors")), "the export was not interrupted mid-write"
