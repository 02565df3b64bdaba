"""TMRoPE position ids and rope deltas against transformers' get_rope_index."""

import numpy as np
import pytest
import torch

from omni_jax.model import from_hf_dict
from omni_jax.model.rope import PlaceholderError, get_rope_index
from tests.helpers import tiny_hf as th


@pytest.fixture(scope="module")
def hf():
    return th.build_hf_thinker("a")


CFG = from_hf_dict(th.thinker_config_dict("a"))


def _hf_index(hf, ids, mask, image_grid=None, video_grid=None, seconds=None, audio_lengths=None, aiv=False):
    t = lambda x: None if x is None else torch.tensor(np.asarray(x))
    pos, deltas = hf.get_rope_index(t(ids), t(image_grid), t(video_grid), t(mask), aiv, t(audio_lengths),
                                    t(seconds))
    return pos.numpy(), deltas.numpy().reshape(-1)


SCENARIOS = {
    "text": dict(rows=["abc", "hello there"]),
    "image+video+audio": dict(
        rows=["x <|vision_bos|><|IMAGE|><|vision_eos|> y <|vision_bos|><|VIDEO|><|vision_eos|>"
              "<|audio_bos|><|AUDIO|><|audio_eos|> z", "short"],
        image=[(1, 4, 6)], video=[(5, 4, 4)], seconds=[0.7], audio=[123]),
    "fractional seconds per grid": dict(
        rows=["<|vision_bos|><|VIDEO|><|vision_eos|>q"], video=[(7, 2, 2)], seconds=[2 / 1.7]),
    "audio in video, audio longer": dict(
        rows=["<|vision_bos|><|VIDEO|><|vision_eos|> end"], video=[(2, 4, 4)], seconds=[1.0], audio=[501], aiv=True),
    "audio in video, video longer, 2.5 s per grid": dict(
        rows=["a<|vision_bos|><|VIDEO|><|vision_eos|>b"], video=[(6, 2, 4)], seconds=[2.5], audio=[90], aiv=True),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_positions_and_deltas_equal_hf(hf, name):
    s = SCENARIOS[name]
    rows = [th.expand(r, grids_image=s.get("image", ()), grids_video=s.get("video", ()), seconds=s.get("seconds", ()),
                      audio_frames=s.get("audio", ()), use_audio_in_video=s.get("aiv", False)) for r in s["rows"]]
    ids, mask = th.left_pad(rows)
    args = dict(image_grid=s.get("image"), video_grid=s.get("video"), seconds=s.get("seconds"),
                audio_lengths=s.get("audio"), aiv=s.get("aiv", False))
    ref_pos, ref_deltas = _hf_index(hf, ids, mask, **args)
    pos, deltas = get_rope_index(CFG, ids, mask, args["image_grid"], args["video_grid"], args["seconds"],
                                 args["audio_lengths"], args["aiv"])
    np.testing.assert_array_equal(pos, ref_pos)
    np.testing.assert_array_equal(deltas, ref_deltas)


def test_wrong_number_of_placeholders_is_caught():
    ids = th.expand("x <|vision_bos|><|IMAGE|><|vision_eos|>", grids_image=[(1, 4, 4)])
    ids = [i for i in ids]
    ids.remove(th.IMAGE)  # one placeholder short
    with pytest.raises(PlaceholderError, match="consecutive image tokens"):
        get_rope_index(CFG, np.array([ids]), None, np.array([(1, 4, 4)]))
    with pytest.raises(PlaceholderError, match="more image inputs"):
        get_rope_index(CFG, np.array([[1, 2, 3]]), None, np.array([(1, 4, 4)]))
