"""Logit-for-logit parity with transformers' Qwen2_5OmniThinkerForConditionalGeneration (torch CPU, float32).

Each config variant is saved with save_pretrained and loaded through omni_jax.load_thinker.
Run with -s to see the measured differences.
"""

import numpy as np
import pytest
import torch

import omni_jax
from tests.helpers import tiny_hf as th

TOL = 1e-4


@pytest.fixture(scope="module", params=sorted(th.VARIANTS))
def pair(request, tmp_path_factory):
    hf = th.build_hf_thinker(request.param, seed=list(th.VARIANTS).index(request.param))
    path = tmp_path_factory.mktemp(f"tiny_{request.param}")
    hf.save_pretrained(path)
    ours = omni_jax.load_thinker(path, progress=False)
    return request.param, hf, ours


def _reference(hf, inputs):
    tin = {k: (v if k == "use_audio_in_video" else torch.tensor(v)) for k, v in inputs.items()}
    with torch.no_grad():
        return hf(**tin).logits.numpy()


def _compare(name, hf, ours, inputs, tol=TOL):
    ref = _reference(hf, inputs)
    got = ours(**inputs)
    assert got.shape == ref.shape
    valid = np.asarray(inputs.get("attention_mask", np.ones(ref.shape[:2]))).astype(bool)
    diff = float(np.abs(got - ref)[valid].max())
    same_argmax = bool((got.argmax(-1) == ref.argmax(-1))[valid].all())
    print(f"{name:28s} max|Δlogit| = {diff:.3e}  argmax equal: {same_argmax}")
    assert diff <= tol, f"{name}: max |logit difference| {diff} > {tol}"
    assert same_argmax, f"{name}: argmax differs"
    return diff


def _one(ids):
    return np.array([ids]), np.ones((1, len(ids)), np.int64)


def cases(variant):
    """(name, inputs) for every input kind the issue lists."""
    mel = th.VARIANTS[variant]["mel"]
    rng = np.random.default_rng(7)
    out = []
    ids, mask = th.left_pad([th.expand("hello world, how are you today?"), th.expand("hi"),
                             th.expand("a longer third prompt for padding")])
    out.append(("text, left padded batch", dict(input_ids=ids, attention_mask=mask)))

    g1 = [(1, 8, 12)]
    ids, mask = _one(th.expand("look <|vision_bos|><|IMAGE|><|vision_eos|> what?", grids_image=g1))
    out.append(("one image", dict(input_ids=ids, attention_mask=mask, pixel_values=th.pixels(rng, g1),
                                  image_grid_thw=np.array(g1))))

    g2 = [(1, 8, 12), (1, 6, 4)]
    ids, mask = _one(th.expand("a <|vision_bos|><|IMAGE|><|vision_eos|> b <|vision_bos|><|IMAGE|><|vision_eos|> c",
                               grids_image=g2))
    out.append(("two images", dict(input_ids=ids, attention_mask=mask, pixel_values=th.pixels(rng, g2),
                                   image_grid_thw=np.array(g2))))

    gv = [(3, 8, 8)]
    ids, mask = _one(th.expand("v <|vision_bos|><|VIDEO|><|vision_eos|> q", grids_video=gv))
    out.append(("video (1.3 s per grid)", dict(input_ids=ids, attention_mask=mask, pixel_values_videos=th.pixels(rng, gv),
                                               video_grid_thw=np.array(gv), video_second_per_grid=np.array([1.3]))))

    feats, fm = th.audio_features(rng, [57], mel)
    ids, mask = _one(th.expand("v <|vision_bos|><|VIDEO|><|vision_eos|><|audio_bos|><|AUDIO|><|audio_eos|> q",
                               grids_video=gv, audio_frames=[57]))
    out.append(("video + separate audio", dict(
        input_ids=ids, attention_mask=mask, pixel_values_videos=th.pixels(rng, gv), video_grid_thw=np.array(gv),
        video_second_per_grid=np.array([1.0]), input_features=feats, feature_attention_mask=fm)))

    gv2 = [(4, 4, 8)]
    feats, fm = th.audio_features(rng, [310], mel)
    ids, mask = _one(th.expand("v <|vision_bos|><|VIDEO|><|vision_eos|> q", grids_video=gv2, audio_frames=[310],
                               seconds=[1.0], use_audio_in_video=True))
    out.append(("use_audio_in_video=True", dict(
        input_ids=ids, attention_mask=mask, pixel_values_videos=th.pixels(rng, gv2), video_grid_thw=np.array(gv2),
        video_second_per_grid=np.array([1.0]), input_features=feats, feature_attention_mask=fm,
        use_audio_in_video=True)))

    feats, fm = th.audio_features(rng, [57, 33], mel)
    ids, mask = th.left_pad([th.expand("x <|audio_bos|><|AUDIO|><|audio_eos|> y", audio_frames=[57]),
                             th.expand("z <|audio_bos|><|AUDIO|><|audio_eos|>", audio_frames=[33])])
    out.append(("audio only, left padded", dict(input_ids=ids, attention_mask=mask, input_features=feats,
                                                feature_attention_mask=fm)))

    g3 = [(1, 4, 4)]
    ids, mask = th.left_pad([th.expand("p <|vision_bos|><|IMAGE|><|vision_eos|> q", grids_image=g3),
                             th.expand("just some text that is longer than the first row")])
    out.append(("image + text rows, left padded", dict(input_ids=ids, attention_mask=mask,
                                                       pixel_values=th.pixels(rng, g3), image_grid_thw=np.array(g3))))
    return out


CASE_NAMES = [name for name, _ in cases("a")]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_logits_equal_transformers(pair, case):
    variant, hf, ours = pair
    inputs = dict(cases(variant))[case]
    _compare(f"[{variant}] {case}", hf, ours, inputs)


def test_bfloat16_runs_and_reports_difference(tmp_path):
    hf = th.build_hf_thinker("a")
    hf.save_pretrained(tmp_path)
    ours = omni_jax.load_thinker(tmp_path, dtype="bfloat16", progress=False)
    name, inputs = cases("a")[4]  # video + separate audio: every tower in bfloat16
    ref = _reference(hf, inputs)
    got = ours(**inputs)
    diff = float(np.abs(got - ref).max())
    agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
    print(f"bfloat16 {name}: max|Δlogit| = {diff:.3e} (logit scale {np.abs(ref).max():.2f}), argmax agreement {agree:.2%}")
    assert np.isfinite(got).all()
    assert diff < 0.1 * np.abs(ref).max()
    assert agree >= 0.8
