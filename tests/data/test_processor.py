import types

import numpy as np
import pytest

from omni_jax.data import audio, config, example, processor, prompt, synthetic, video
from omni_jax.data.errors import BadRecord
from omni_jax.tokenizer import load_tokenizer, special_token_ids

TORCHVISION_REASON = ("needs torchvision built for the installed torch (the HF processor's video path); "
                      "no CPU build of it loads with torch 2.13 CPU")
HF_TOKENS = {"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
             "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
             "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}


def small_cfg(**over):
    cfg = config.data_defaults()
    cfg.max_frames, cfg.min_pixels, cfg.max_pixels = 4, 3136, 112 * 84
    for k, v in over.items():
        cfg[k] = v
    return cfg


def test_placeholders_expand_like_hf(media_dir):
    tok = load_tokenizer("tiny")
    cfg = small_cfg()
    rec = {"id": "x", "source": "t", "data_type": "video", "video": str(media_dir / "av.mp4"),
           "problem": "What is shown?", "problem_type": "multiple choice", "options": ["A. bars", "B. cat"],
           "solution": "<answer>A</answer>"}
    out = example.prepare_record(rec, cfg, tok)
    ids = out["input_ids"][0].tolist()
    grid = out["video_grid_thw"][0]
    n_video = int(np.prod(grid)) // 4
    n_audio = audio.audio_token_count(int(out["feature_attention_mask"][0].sum()))
    # Oracle: the rendered text with each placeholder string repeated, tokenized in one go.
    messages = prompt.build_messages(dict(rec, image=None, audio=None), has_audio=True)
    text = prompt.render_chat(messages)
    text = text.replace("<|VIDEO|>", "<|VIDEO|>" * n_video, 1).replace("<|AUDIO|>", "<|AUDIO|>" * n_audio, 1)
    assert ids == tok(text)["input_ids"]
    sp = special_token_ids(tok)
    assert ids.count(sp["video_token_id"]) == n_video and ids.count(sp["audio_token_id"]) == n_audio
    # 3 s clip -> 6 frames at 2 fps, capped at 4: the true sample fps is 4 / 75 * 25
    assert grid[0] == 2 and out["video_second_per_grid"][0] == pytest.approx(2 / (4 / 75 * 25))
    assert out["pixel_values_videos"].shape == (int(np.prod(grid)), 1176)
    assert out["input_ids"].dtype == np.int32 and out["video_grid_thw"].dtype == np.int64
    assert out["input_features"].dtype == np.float32 and out["feature_attention_mask"].dtype == np.int32
    assert out["attention_mask"].sum() == len(ids) and out["use_audio_in_video"] is False


def hf_interleave(text, grid, spg, n_audio, tok):
    """transformers' own Qwen2_5OmniProcessor.replace_multimodal_special_tokens, on a stand-in self."""
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import Qwen2_5OmniProcessor

    fake = types.SimpleNamespace(**{k: v for k, v in HF_TOKENS.items()},
                                 image_processor=types.SimpleNamespace(merge_size=2),
                                 video_processor=types.SimpleNamespace(merge_size=2))
    fake.get_chunked_index = lambda idx, n: Qwen2_5OmniProcessor.get_chunked_index(fake, idx, n)
    return Qwen2_5OmniProcessor.replace_multimodal_special_tokens(
        fake, [text], iter([n_audio]), iter([]), iter([np.asarray(grid)]), video_second_per_grid=iter([spg]),
        use_audio_in_video=True, position_id_per_seconds=25, seconds_per_chunk=2.0)[0]


@pytest.mark.parametrize("max_frames", [4, 8])
def test_interleaved_layout_matches_hf(media_dir, max_frames):
    tok = load_tokenizer("tiny")
    cfg = small_cfg(use_audio_in_video=True, max_frames=max_frames)
    messages = [{"role": "user", "content": [{"type": "video", "video": str(media_dir / "av.mp4")},
                                             {"type": "text", "text": "Describe."}]}]
    out = processor.prepare(messages, cfg, tok)
    assert out["use_audio_in_video"] is True
    n_audio = audio.audio_token_count(int(out["feature_attention_mask"][0].sum()))
    want = hf_interleave(prompt.render_chat(messages), out["video_grid_thw"][0], out["video_second_per_grid"][0],
                         n_audio, tok)
    assert out["input_ids"][0].tolist() == tok(want)["input_ids"]
    # 6 frames (8 allowed) span two 2 s chunks: video, audio, video, audio
    assert ("<|AUDIO|><|VIDEO|>" in want) == (max_frames == 8)


def test_interleaved_without_track_is_a_counted_skip(media_dir):
    cfg = small_cfg(use_audio_in_video=True)
    rec = {"id": "s", "data_type": "video", "video": str(media_dir / "silent.mp4"), "problem": "Q?",
           "problem_type": "free-form", "options": [], "solution": "<answer>x</answer>"}
    with pytest.raises(BadRecord) as e:
        example.prepare_record(rec, cfg)
    assert e.value.reason == "no_audio_stream"
    out = example.prepare_record(rec, small_cfg())  # default mode: fine, and the prompt says so
    assert "input_features" not in out
    assert "there is no audio information" in load_tokenizer("tiny").decode(out["input_ids"][0])


def test_image_pixels_match_hf_image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)
    cfg = config.data_defaults()
    out = processor.prepare([{"role": "user", "content": [{"type": "image", "image": img},
                                                          {"type": "text", "text": "What?"}]}], cfg)
    hf = Qwen2VLImageProcessorPil(min_pixels=cfg.image_min_pixels, max_pixels=cfg.image_max_pixels)(
        images=[img], return_tensors="np")
    np.testing.assert_array_equal(out["image_grid_thw"], hf["image_grid_thw"])
    np.testing.assert_allclose(out["pixel_values"], hf["pixel_values"], atol=1e-5)
    n = int(np.prod(hf["image_grid_thw"][0])) // 4
    assert out["input_ids"][0].tolist().count(special_token_ids(load_tokenizer("tiny"))["image_token_id"]) == n


def test_media_order_and_concatenation(media_dir):
    cfg = small_cfg()
    content = [{"type": "video", "video": str(media_dir / "av.mp4")},
               {"type": "audio", "audio": str(media_dir / "tone.wav")},
               {"type": "video", "video": str(media_dir / "silent.mp4"), "max_pixels": 56 * 56},
               {"type": "text", "text": "Compare."}]
    out = processor.prepare([{"role": "user", "content": content}], cfg)
    a = video.to_patches(video.load_video(str(media_dir / "av.mp4"), video.resolve_limits(cfg, content[0]))[0],
                         cfg.image_mean, cfg.image_std, 14, 2, 2)
    b = video.to_patches(video.load_video(str(media_dir / "silent.mp4"), video.resolve_limits(cfg, content[2]))[0],
                         cfg.image_mean, cfg.image_std, 14, 2, 2)
    np.testing.assert_array_equal(out["video_grid_thw"], [a[1], b[1]])
    np.testing.assert_array_equal(out["pixel_values_videos"], np.concatenate([a[0], b[0]]))
    assert b[1][1] * b[1][2] * 196 <= 56 * 56  # the item's lower max_pixels applied
    assert out["input_features"].shape[0] == 1


def test_prompt_over_cap_is_skipped():
    cfg = config.data_defaults("tiny")
    cfg.max_prompt_tokens = 100
    with pytest.raises(BadRecord) as e:
        example.prepare_record(synthetic.make_record(0), cfg)
    assert e.value.reason == "prompt_over_cap" and "max_prompt_tokens=100" in str(e.value)


def test_special_token_in_user_text_is_rejected():
    rec = dict(synthetic.make_record(1), problem="What does <|VIDEO|> mean?")
    with pytest.raises(BadRecord) as e:
        example.prepare_record(rec, config.data_defaults("tiny"))
    assert e.value.reason == "malformed_row"


def test_matches_transformers_processor(media_dir):
    pytest.importorskip("torchvision", reason=TORCHVISION_REASON)
    from transformers import PreTrainedTokenizerFast, Qwen2_5OmniProcessor, WhisperFeatureExtractor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from omni_jax.tokenizer import TINY_TOKENIZER_DIR

    cfg = config.data_defaults()
    cfg.max_frames = 8
    tok = PreTrainedTokenizerFast(tokenizer_file=str(TINY_TOKENIZER_DIR / "tokenizer.json"),
                                  extra_special_tokens=HF_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf = Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessorPil(),
        video_processor=Qwen2VLVideoProcessor(),
        feature_extractor=WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160,
                                                  chunk_length=300, n_fft=400),
        tokenizer=tok)
    path = str(media_dir / "av.mp4")
    messages = [{"role": "user", "content": [{"type": "video", "video": path}, {"type": "audio", "audio": path},
                                             {"type": "text", "text": "What happens?"}]}]
    ours = processor.prepare(messages, cfg, tok)
    # The same frames and waveform go to transformers; its resize is then a no-op.
    frames, sample_fps = video.load_video(path, video.resolve_limits(cfg))
    wave = audio.load_audio(path, 16000, 300.0)
    theirs = hf(text=prompt.render_chat(messages), videos=[frames], audio=[wave], fps=sample_fps,
                min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels, do_sample_frames=False,
                cap_pixels_per_frame=False, return_tensors="np")
    np.testing.assert_array_equal(ours["input_ids"], theirs["input_ids"])
    np.testing.assert_array_equal(ours["attention_mask"], theirs["attention_mask"])
    np.testing.assert_array_equal(ours["video_grid_thw"], theirs["video_grid_thw"])
    np.testing.assert_allclose(ours["pixel_values_videos"], theirs["pixel_values_videos"], atol=1e-5)
    np.testing.assert_allclose(ours["video_second_per_grid"], np.asarray(theirs["video_second_per_grid"]), rtol=1e-6)
    valid = int(ours["feature_attention_mask"][0].sum())
    assert valid == int(theirs["feature_attention_mask"][0].sum())
    np.testing.assert_allclose(ours["input_features"][0, :, :valid], theirs["input_features"][0, :, :valid],
                               atol=5e-5)
