"""The README's Python snippet runs as written, on a tiny checkpoint and a short clip made here."""

import pathlib
import re
import shutil

import jax
import numpy as np
from flax import nnx

from tests.data.media import make_video

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _snippet(section: str) -> str:
    """The section's Python blocks, in order, as one program."""
    text = (ROOT / "README.md").read_text()
    body = text[text.index(f"\n## {section}\n") + 1:]
    body = body[: body.find("\n## ")] if "\n## " in body else body
    return "\n".join(re.findall(r"```python\n(.*?)```", body, re.S))


def _tiny_hf_checkpoint(directory: pathlib.Path) -> pathlib.Path:
    """The tiny architecture (random weights) saved as an HF directory with the shipped tokenizer."""
    import torch
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    from omni_jax.model.presets import hf_config_dict
    from omni_jax.tokenizer import TINY_TOKENIZER_DIR, load_tokenizer

    torch.manual_seed(0)
    config = Qwen2_5OmniThinkerConfig(**hf_config_dict("tiny", load_tokenizer("tiny")))
    Qwen2_5OmniThinkerForConditionalGeneration(config).save_pretrained(directory)
    for f in TINY_TOKENIZER_DIR.iterdir():
        shutil.copy(f, directory / f.name)
    return directory


def test_the_model_snippet_runs_as_written(tmp_path, capsys):
    code = _snippet("The model")
    ckpt = _tiny_hf_checkpoint(tmp_path / "ckpt")
    make_video(tmp_path / "clip.mp4", seconds=2.0, size=(64, 48), fps=8, audio=False)
    for old, new in [('"/ckpt/Qwen2.5-Omni-7B"', repr(str(ckpt))), ('"/data/clip.mp4"', repr(str(tmp_path / "clip.mp4"))),
                     ("max_new_tokens=1024", "max_new_tokens=4")]:  # the paths here, and a short run
        assert old in code, f"the README snippet no longer holds {old}"
        code = code.replace(old, new)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the snippet under test
    assert scope["logits"].shape[:2] == scope["processor_inputs"]["input_ids"].shape
    assert np.asarray(scope["out"].tokens).shape == (8, 4)
    # The sharded load and generate on a layout (every device here).
    layout = scope["layout"]
    assert {x.sharding.mesh for x in jax.tree.leaves(nnx.state(scope["model"]))} == {layout.mesh}
    assert scope["out"].tokens.sharding.mesh == layout.mesh
    printed = capsys.readouterr().out
    assert printed.startswith("[") and printed.count("'") >= 16  # 8 decoded strings
