import json
import pathlib
import subprocess
import sys

import pytest

from omni_jax import tokenizer as tk


def test_tiny_tokenizer_round_trips_any_text():
    tok = tk.load_tokenizer("tiny")
    text = "<|im_start|>user\n<|vision_bos|><|VIDEO|><|vision_eos|>The woman smiles. é 漢字 \x00\t 123"
    ids = tok(text).input_ids
    assert tok.decode(ids) == text
    # Special tokens are single ids, never split.
    assert ids.count(tok.convert_tokens_to_ids("<|VIDEO|>")) == 1


def test_special_ids_are_distinct_and_named():
    ids = tk.special_token_ids(tk.load_tokenizer("tiny"))
    assert len(set(ids.values())) == len(ids)
    tok = tk.load_tokenizer("tiny")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert ids["eos_token_id"] == tok.eos_token_id


def test_rebuild_is_deterministic(tmp_path):
    out = tk.build_tiny_tokenizer(tmp_path)
    shipped = json.loads((tk.TINY_TOKENIZER_DIR / "tokenizer.json").read_text())
    rebuilt = json.loads((pathlib.Path(out) / "tokenizer.json").read_text())
    assert shipped == rebuilt


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tk.load_tokenizer(str(tmp_path / "nope"))


NO_TORCH = """
import os, sys
sys.modules["torch"] = None  # an install from requirements.txt: no torch
from omni_jax.tokenizer import load_tokenizer
from omni_jax.data import audio
load_tokenizer("tiny")
audio._mel_filters(400, 128, 16000)
assert "TRANSFORMERS_NO_ADVISORY_WARNINGS" not in os.environ  # only for the import, not for the user's code
print("OK")
"""


def test_no_pytorch_notice_where_torch_is_not_needed():
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", NO_TORCH], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]
    assert "PyTorch was not found" not in proc.stderr + proc.stdout


def test_a_checkpoint_naming_another_tokenizer_class_loads_through_the_auto_classes(tmp_path):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tk.TINY_TOKENIZER_DIR, ckpt)
    config = json.loads((ckpt / "tokenizer_config.json").read_text())
    (ckpt / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "Qwen2Tokenizer"}))
    tiny, qwen = tk.load_tokenizer("tiny"), tk.load_tokenizer(str(ckpt))
    assert type(tiny).__name__ != type(qwen).__name__ == "Qwen2Tokenizer"  # the class the checkpoint names
    text = "<|im_start|>user\nwho smiles?<|im_end|>"
    assert qwen(text)["input_ids"] == tiny(text)["input_ids"] and qwen.eos_token == "<|im_end|>"


def test_an_unreadable_tokenizer_config_is_a_clear_error(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer_config.json is not readable JSON"):
        tk.load_tokenizer(str(tmp_path))
