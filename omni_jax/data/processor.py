"""`prepare(messages, cfg)`: chat messages with media -> the HF processor's keyword arguments.

What Qwen2_5OmniProcessor(text=apply_chat_template(messages), videos=..., audio=...) returns,
computed with numpy (no torch): the same key names, dtypes and layouts, so the model's forward
takes either. Media are read under the caps of `video.resolve_limits`; the prompt token cap is
applied here; nothing else in the package decides a limit.
"""

from __future__ import annotations

import numpy as np

from omni_jax.data import audio as audio_lib
from omni_jax.data import image as image_lib
from omni_jax.data import prompt as prompt_lib
from omni_jax.data import video as video_lib
from omni_jax.data.errors import BadRecord
from omni_jax.model.rope import chunk_bounds
from omni_jax.tokenizer import load_tokenizer, special_token_ids


def interleaved_tokens(grid_thw, second_per_grid: float, num_audio_tokens: int, merge_size: int,
                       position_id_per_seconds: float, seconds_per_chunk: float, ids: dict) -> list[int]:
    """Token ids replacing <|vision_bos|><|VIDEO|><|vision_eos|> when audio rides in the video.

    <|vision_bos|><|audio_bos|> then, per 2 s chunk j, video chunk j's <|VIDEO|> tokens and audio
    chunk j's <|AUDIO|> tokens, then <|audio_eos|><|vision_eos|> (HF's layout).
    """
    t, h, w = (int(x) for x in grid_thw)
    per_frame = (h // merge_size) * (w // merge_size)
    video_t = np.repeat(np.arange(t), per_frame) * second_per_grid * position_id_per_seconds
    per_chunk = int(position_id_per_seconds * seconds_per_chunk)
    v_chunks = chunk_bounds(video_t, per_chunk)
    a_chunks = chunk_bounds(np.arange(num_audio_tokens), per_chunk)
    out = [ids["vision_start_token_id"], ids["audio_start_token_id"]]
    for j in range(max(len(v_chunks), len(a_chunks))):
        if j < len(v_chunks):
            out += [ids["video_token_id"]] * (v_chunks[j][1] - v_chunks[j][0])
        if j < len(a_chunks):
            out += [ids["audio_token_id"]] * (a_chunks[j][1] - a_chunks[j][0])
    return out + [ids["audio_end_token_id"], ids["vision_end_token_id"]]


def _load_media(messages, cfg):
    """Walk the content items in order; returns lists of videos, images and audios (features)."""
    videos, images, audios = [], [], []
    geometry = (cfg.image_mean, cfg.image_std, cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size)
    for message in messages:
        if isinstance(message["content"], str):
            continue
        for item in message["content"]:
            kind = prompt_lib.item_kind(item)
            if kind == "video":
                limits = video_lib.resolve_limits(cfg, item)
                frames, sample_fps = video_lib.load_video(
                    item["video"], limits, decode_threads=cfg.decode_threads, video_fps=item.get("video_fps"))
                patches, grid = video_lib.to_patches(frames, *geometry)
                # Hard check of the caps on what was actually produced: a regression anywhere
                # upstream fails loudly here instead of growing memory.
                if frames.shape[0] > limits.max_frames or frames.shape[1] * frames.shape[2] > limits.max_pixels:
                    raise AssertionError(f"video caps lost: {frames.shape} under {limits}")
                videos.append((patches, grid, cfg.temporal_patch_size / sample_fps))
                if cfg.use_audio_in_video:
                    wave = item.get("video_audio")
                    if wave is None:
                        wave = audio_lib.load_audio(item["video"], cfg.sampling_rate, cfg.audio_max_seconds)
                    if wave is None:
                        raise BadRecord("no_audio_stream", "use_audio_in_video is on and the video has no audio track")
                    audios.append(audio_lib.audio_features(wave, cfg))
            elif kind == "image":
                min_px, max_px = image_lib.resolve_image_limits(cfg, item)
                img = image_lib.load_image(item["image"], cfg.patch_size * cfg.merge_size, min_px, max_px)
                patches, grid = video_lib.to_patches(img[None], *geometry)
                images.append((patches, grid))
            elif kind == "audio":
                wave = audio_lib.load_audio(item["audio"], cfg.sampling_rate, cfg.audio_max_seconds)
                if wave is None:
                    raise BadRecord("no_audio_stream", "an audio item's source has no audio track")
                audios.append(audio_lib.audio_features(wave, cfg))
    return videos, images, audios


def prepare(messages: list[dict], cfg, tokenizer=None) -> dict:
    """Messages in qwen-omni style -> the HF processor's keyword arguments as numpy arrays.

    messages: [{"role": ..., "content": str | [items]}], items {"type": "video", "video": path |
    bytes | uint8[T,H,W,3] (+ "video_fps"), optional max_frames / max_pixels / total_pixels /
    min_pixels / fps / nframes}, {"type": "audio", "audio": path | bytes | float32[S] 16 kHz},
    {"type": "image", "image": ...}, {"type": "text", "text": ...}. cfg: `data_defaults()`.
    tokenizer: defaults to the shipped tiny one.

    Returns input_ids int32[1, T], attention_mask int32[1, T], use_audio_in_video bool, and when
    present: pixel_values_videos float32[N, C*tps*ps*ps], video_grid_thw int64[V, 3],
    video_second_per_grid float32[V] (temporal_patch_size / the true sample fps),
    pixel_values float32[M, C*tps*ps*ps], image_grid_thw int64[I, 3], input_features
    float32[A, num_mel_bins, F], feature_attention_mask int32[A, F].
    Raises BadRecord for unreadable media and for prompts over cfg.max_prompt_tokens.
    """
    tokenizer = tokenizer or load_tokenizer("tiny")
    ids = special_token_ids(tokenizer)
    videos, images, audios = _load_media(messages, cfg)
    text = prompt_lib.render_chat(messages, add_generation_prompt=True)
    raw_ids = tokenizer(text)["input_ids"]

    m2 = cfg.merge_size**2
    video_iter, image_iter, audio_iter = iter(videos), iter(images), iter(audios)
    placeholders = {ids["video_token_id"]: len(videos), ids["image_token_id"]: len(images),
                    ids["audio_token_id"]: len(audios) - (len(videos) if cfg.use_audio_in_video else 0)}
    found = {k: raw_ids.count(k) for k in placeholders}
    if found != placeholders:
        raise BadRecord("malformed_row", f"placeholder tokens {found} do not match the media items {placeholders} "
                        "(does a text item contain a special token such as <|VIDEO|>?)")
    out_ids: list[int] = []
    i = 0
    while i < len(raw_ids):
        tok = raw_ids[i]
        if tok == ids["video_token_id"]:
            _, grid, spg = next(video_iter)
            if cfg.use_audio_in_video:
                n_audio = audio_lib.audio_token_count(int(next(audio_iter)[1].sum()))
                # the template put <|vision_bos|> before and <|vision_eos|> after the placeholder
                if out_ids[-1:] != [ids["vision_start_token_id"]] or raw_ids[i + 1] != ids["vision_end_token_id"]:
                    raise BadRecord("malformed_row", "a <|VIDEO|> placeholder is not between vision_bos/eos")
                out_ids.pop()
                out_ids += interleaved_tokens(grid, spg, n_audio, cfg.merge_size, cfg.position_id_per_seconds,
                                              cfg.seconds_per_chunk, ids)
                i += 2
                continue
            out_ids += [tok] * (int(np.prod(grid)) // m2)
        elif tok == ids["image_token_id"]:
            out_ids += [tok] * (int(np.prod(next(image_iter)[1])) // m2)
        elif tok == ids["audio_token_id"]:
            out_ids += [tok] * audio_lib.audio_token_count(int(next(audio_iter)[1].sum()))
        else:
            out_ids.append(tok)
        i += 1
    if len(out_ids) > cfg.max_prompt_tokens:
        raise BadRecord("prompt_over_cap", f"prompt has {len(out_ids)} tokens, over max_prompt_tokens="
                        f"{cfg.max_prompt_tokens}; lower max_frames / max_pixels or raise the cap")

    result = {
        "input_ids": np.asarray([out_ids], np.int32),
        "attention_mask": np.ones((1, len(out_ids)), np.int32),
        "use_audio_in_video": bool(cfg.use_audio_in_video),
    }
    if videos:
        result["pixel_values_videos"] = concat([v[0] for v in videos])
        result["video_grid_thw"] = np.asarray([v[1] for v in videos], np.int64)
        result["video_second_per_grid"] = np.asarray([v[2] for v in videos], np.float32)
    if images:
        result["pixel_values"] = concat([im[0] for im in images])
        result["image_grid_thw"] = np.asarray([im[1] for im in images], np.int64)
    if audios:
        result["input_features"], result["feature_attention_mask"] = stack_audio(audios)
    return result


def concat(parts: list[np.ndarray]) -> np.ndarray:
    """np.concatenate without the copy for a single part (video patches are hundreds of MB)."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def stack_audio(audios: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Stack (features [mel, F_i], mask [F_i]) pairs, zero-padding frames to the longest F.

    Padded frames carry mask 0, which is all the audio encoder reads. Returns
    (float32[A, mel, F], int32[A, F]).
    """
    frames = max(f.shape[1] for f, _ in audios)
    feats = np.zeros((len(audios), audios[0][0].shape[0], frames), np.float32)
    masks = np.zeros((len(audios), frames), np.int32)
    for k, (f, m) in enumerate(audios):
        feats[k, :, : f.shape[1]] = f
        masks[k, : m.shape[0]] = m
    return feats, masks
