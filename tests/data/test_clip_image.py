"""CLIP preprocessing against transformers' slow CLIPImageProcessor on decoded video frames."""

from __future__ import annotations

import numpy as np
import pytest

from omni_jax.data.clip_image import ClipImageSpec, clip_pixel_values

from .media import make_video


@pytest.mark.parametrize("size", [(160, 120), (90, 200), (224, 224), (300, 225)])
def test_equal_to_transformers_on_decoded_frames(tmp_path, size):
    import decord
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    path = make_video(tmp_path / "v.mp4", seconds=0.4, size=size, fps=10, audio=False, source="testsrc2")
    frames = decord.VideoReader(str(path)).get_batch([0, 2]).asnumpy()
    ours = clip_pixel_values(frames)
    ref = CLIPImageProcessorPil()(images=list(frames), return_tensors="np")["pixel_values"]
    assert ours.shape == ref.shape == (2, 3, 224, 224)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_small_crop_and_spec_from_directory(tmp_path):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    (tmp_path / "preprocessor_config.json").write_text(
        '{"size": {"shortest_edge": 40}, "crop_size": {"height": 32, "width": 32}, '
        '"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.5, 1.0]}')
    spec = ClipImageSpec.from_dir(tmp_path)
    frames = np.random.default_rng(0).integers(0, 256, (3, 50, 77, 3), dtype=np.uint8)
    ref = CLIPImageProcessorPil(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32},
                                image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.5, 1.0])(
        images=list(frames), return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(clip_pixel_values(frames, spec), ref, atol=1e-5, rtol=0)


def test_rejects_float_frames():
    with pytest.raises(ValueError, match="uint8"):
        clip_pixel_values(np.zeros((1, 8, 8, 3), np.float32))
