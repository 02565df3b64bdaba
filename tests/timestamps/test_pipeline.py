"""The post-processor end to end on a tiny random CLIP and real mp4 files, and its CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from omni_jax.data import config as data_config
from omni_jax.data import video as video_lib
from omni_jax.data.synthetic_events import completion_for, make_event_video
from omni_jax.eval.probe import follows_timestamps
from omni_jax.rewards.format import format_reward
from omni_jax.timestamps import ClipMatcher, add_timestamps
from omni_jax.timestamps.__main__ import main
from omni_jax.timestamps.match import match
from tests.clip.tiny_clip import save_tiny_clip_dir

MARK = re.compile(r" \[Frame (\d+): (\d+\.\d\d)s\]")


def _write_mp4(path, frames, fps):
    import imageio_ffmpeg

    h, w = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, quality=9, macro_block_size=8)
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("ts")
    hf = save_tiny_clip_dir(d / "clip")
    video = make_event_video(0, num_frames=16, num_events=4, size=112, fps=2.0)
    _write_mp4(d / "events.mp4", video.frames, 2.0)
    return d, video, ClipMatcher.load(d / "clip", image_batch=8, text_batch=4), hf


def test_matcher_equals_transformers(setup):
    """Batched, bucketed ClipMatcher = transformers' CLIPModel + CLIPImageProcessor, unbatched."""
    import torch
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    d, video, clip, hf = setup
    texts = video.descriptions + ["a man smiles", "the woman walks"]  # 6 texts: two batches of 4
    frames = video.frames[:11]  # two batches of 8, the second padded
    sim = clip.similarity(frames, texts)
    ids, mask = clip.tokenizer(texts)
    assert ids[0, 0] == 96 and 98 in ids[0] and ids.shape == (6, 16)  # 11 tokens at most: one 16-token bucket
    pixels = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})(
        images=list(frames), return_tensors="pt")["pixel_values"]

    def texts_ref(ids, mask):
        with torch.no_grad():
            t = hf.get_text_features(input_ids=torch.tensor(ids, dtype=torch.long),
                                     attention_mask=torch.tensor(mask)).pooler_output
        return (t / t.norm(dim=-1, keepdim=True)).numpy()

    with torch.no_grad():
        i = hf.get_image_features(pixel_values=pixels).pooler_output
    i = (i / i.norm(dim=-1, keepdim=True)).numpy()
    t = texts_ref(ids, mask)
    np.testing.assert_allclose(sim, t @ i.T, atol=1e-5)
    # Padding to the bucket, not to max_length, gives the same embeddings (causal tower, end-token pooling).
    wide = np.pad(ids, ((0, 0), (0, 4)), constant_values=clip.tokenizer.pad_id)
    np.testing.assert_allclose(texts_ref(wide, np.pad(mask, ((0, 0), (0, 4)))), t, atol=1e-5)


def test_add_timestamps_on_the_thinkers_frames(setup):
    d, video, clip, _ = setup
    completion = completion_for(video)
    new, table = add_timestamps(completion, str(d / "events.mp4"), clip)
    assert table.message == "" and len(table.rows) == 4
    assert format_reward(new) == 1.0 and MARK.sub("", new) == completion
    # The evaluation's instruction probe counts the marks as written "exactly as asked".
    assert follows_timestamps(new) and not follows_timestamps(completion)
    # Frames and times are the Thinker's: the data pipeline's sampling of this file.
    sampled = video_lib.sample_video(str(d / "events.mp4"), video_lib.resolve_limits(data_config.data_defaults()))
    assert table.num_frames == len(sampled.frames)
    frames = [r.frame for r in table.rows]
    assert frames == sorted(frames)
    for r, (n, t) in zip(table.rows, MARK.findall(new)):
        assert int(n) == r.frame and float(t) == pytest.approx(sampled.times[r.frame], abs=0.005)
    # The DP's choice on the same similarity matrix.
    sim = clip.similarity(sampled.frames, [r.event for r in table.rows])
    assert match(sim).tolist() == frames
    again, table2 = add_timestamps(new, str(d / "events.mp4"), clip)
    assert again == new and {r.placement for r in table2.rows} == {"present"}


def test_interval_frames_and_argmax(setup):
    d, video, clip, _ = setup
    new, table = add_timestamps(completion_for(video), str(d / "events.mp4"), clip, interval=1.5, method="argmax")
    assert table.num_frames == 6  # 8 s at one frame per 1.5 s: 0, 1.5, ..., 7.5
    assert {r.time for r in table.rows} <= {0.0, 1.5, 3.0, 4.5, 6.0, 7.5}


@pytest.mark.parametrize("case", ["no_think", "no_events", "short_video", "unreadable", "missing"])
def test_bad_input_returns_the_completion_unchanged(setup, case, tmp_path):
    d, video, clip, _ = setup
    completion, path, interval = completion_for(video), str(d / "events.mp4"), None
    if case == "no_think":
        completion = "<answer>A</answer>"
    elif case == "no_events":
        completion = "<think>The sky is blue. So the answer is A.</think><answer>A</answer>"
    elif case == "short_video":
        interval = 30.0
    elif case == "unreadable":
        path = str(tmp_path / "bad.mp4")
        (tmp_path / "bad.mp4").write_bytes(b"not a video" * 100)
    else:
        path = str(tmp_path / "nope.mp4")
    new, table = add_timestamps(completion, path, clip, interval=interval)
    assert new == completion and table.rows == []
    expected = {"no_think": "no complete <think>", "no_events": "no events", "short_video": "shorter than one",
                "unreadable": "cannot read the video", "missing": "does not exist"}[case]
    assert expected in table.message


def test_extractor_failure_is_reported(setup):
    d, video, clip, _ = setup

    def broken(_):
        raise ConnectionError("judge endpoint down")

    new, table = add_timestamps(completion_for(video), str(d / "events.mp4"), clip, extractor=broken)
    assert new == completion_for(video) and "judge endpoint down" in table.message


def test_cli_text_and_json(setup, capsys, tmp_path):
    d, video, _, _ = setup
    (tmp_path / "answer.txt").write_text(completion_for(video))
    assert main(["--video", str(d / "events.mp4"), "--clip", str(d / "clip"), "--completion_file",
                 str(tmp_path / "answer.txt"), "--max_frames", "8"]) == 0
    out = capsys.readouterr().out
    assert "<think>" in out and "[Frame" in out and "margin" in out
    assert main(["--video", str(d / "events.mp4"), "--clip", str(d / "clip"), "--completion",
                 "<answer>A</answer>", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["completion"] == "<answer>A</answer>" and result["events"] == [] and "<think>" in result["message"]


def test_flags_for_entry_points(setup):
    import argparse

    from omni_jax.timestamps.flags import add_arguments, from_args

    d, video, _, _ = setup
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert from_args(parser.parse_args([])) is None
    with pytest.raises(ValueError, match="--clip"):
        from_args(parser.parse_args(["--timestamps"]))
    cfg = data_config.data_defaults()
    cfg.max_frames = 6
    post = from_args(parser.parse_args(["--timestamps", "--clip", str(d / "clip")]), cfg)
    new, table = post(completion_for(video), str(d / "events.mp4"))
    assert table.num_frames == 6 and len(table.rows) == 4 and MARK.search(new)


def test_interval_frames_resized_at_decode_give_the_same_pixels(setup):
    from omni_jax.data.clip_image import ClipImageSpec, clip_pixel_values
    from omni_jax.timestamps.frames import interval_frames

    d, _, _, _ = setup
    full = interval_frames(str(d / "events.mp4"), 2.0)
    small = interval_frames(str(d / "events.mp4"), 2.0, shortest_edge=40)
    assert full.frames.shape[1:3] == (112, 112) and small.frames.shape[1:3] == (40, 40)
    spec = ClipImageSpec(shortest_edge=40, crop_size=32)
    np.testing.assert_array_equal(clip_pixel_values(small.frames, spec), clip_pixel_values(full.frames, spec))
    np.testing.assert_array_equal(small.times, [0.0, 2.0, 4.0, 6.0])


def test_cli_bad_clip_directory_and_missing_completion_file(tmp_path, capsys):
    assert main(["--video", "v.mp4", "--clip", str(tmp_path / "none"), "--completion", "<think>x</think>"]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["--video", "v.mp4", "--clip", str(tmp_path), "--completion_file", str(tmp_path / "a.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err


class PixelOracle:
    """A stand-in for ClipMatcher that knows the synthetic scene: event e's similarity with a decoded
    frame is minus the pixel distance, in e's slot, to the frame where e truly happens. It checks the
    plumbing (decode order, Thinker sampling, frame numbers, times, insertion) on real mp4 frames."""

    def __init__(self, video):
        from omni_jax.data.clip_image import ClipImageSpec

        self.video, self.spec = video, ClipImageSpec()

    def similarity(self, frames, texts):
        from PIL import Image

        size = self.video.frames.shape[1]
        small = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BILINEAR))
                          for f in frames]).astype(np.float32)
        slot = size // len(self.video.descriptions)
        sim = np.zeros((len(texts), len(frames)), np.float32)
        for row, text in enumerate(texts):
            e = next(i for i, d in enumerate(self.video.descriptions) if d in text)
            truth = self.video.frames[self.video.event_frames[e]].astype(np.float32)[:, e * slot:(e + 1) * slot]
            sim[row] = -np.abs(small[:, :, e * slot:(e + 1) * slot] - truth).mean(axis=(1, 2, 3))
        return sim


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_marks_land_on_the_event_frames(tmp_path, seed):
    video = make_event_video(seed, num_frames=16, num_events=4, size=112, fps=2.0)
    path = _write_mp4(tmp_path / "v.mp4", video.frames, 2.0)
    new, table = add_timestamps(completion_for(video), str(path), PixelOracle(video))
    # The Thinker samples all 16 frames of this 8 s clip at 2 fps: Frame N is frame N, at N / 2 s.
    assert table.num_frames == 16
    assert [r.frame for r in table.rows] == video.event_frames.tolist()
    for desc, f in zip(video.descriptions, video.event_frames, strict=True):
        assert f"{desc} [Frame {f}: {f / 2:.2f}s]." in new


def test_frame_embeddings_are_cached_by_content(setup):
    _, video, clip, _ = setup
    calls = []
    real = clip.encode_pixels
    clip.encode_pixels = lambda px: calls.append(len(px)) or real(px)
    try:
        a = clip.encode_frames(video.frames[:3])
        b = clip.encode_frames(video.frames[:3].copy())  # same pixels, another array: cached
        changed = video.frames[:3].copy()
        changed[0, 0, 0] ^= 255  # one pixel differs: encoded again
        c = clip.encode_frames(changed)
    finally:
        del clip.encode_pixels
    assert calls == [3, 3]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[1:], c[1:])
