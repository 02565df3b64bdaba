"""Examples -> one batch: prompts left-padded to a bucketed length, media concatenated in order."""

from __future__ import annotations

import bisect

import numpy as np

from omni_jax.data.processor import concat, stack_audio


def bucket_length(length: int, buckets) -> int:
    """The smallest bucket >= length. Raises ValueError when the prompt is longer than all of them."""
    buckets = sorted(buckets)
    k = bisect.bisect_left(buckets, length)
    if k == len(buckets):
        raise ValueError(f"prompt of {length} tokens is longer than the largest bucket {buckets[-1]}: "
                         "max_prompt_tokens must not exceed the last prompt bucket")
    return buckets[k]


def collate(examples: list[dict], buckets, pad_token_id: int) -> dict:
    """Batch `processor.prepare` outputs the way Qwen2_5OmniProcessor batches a list of prompts.

    input_ids / attention_mask: int32[B, L], left-padded with pad_token_id / 0 to L = the bucket
    of the longest prompt. pixel_values_videos, video_grid_thw, video_second_per_grid (and the
    image keys) are concatenated in example order; input_features / feature_attention_mask are
    stacked, frames zero-padded (mask 0) to the longest. `records`: the examples' metadata.
    """
    lengths = [ex["input_ids"].shape[1] for ex in examples]
    L = bucket_length(max(lengths), buckets)
    B = len(examples)
    input_ids = np.full((B, L), pad_token_id, np.int32)
    attention_mask = np.zeros((B, L), np.int32)
    for b, (ex, n) in enumerate(zip(examples, lengths)):
        input_ids[b, L - n :] = ex["input_ids"][0]
        attention_mask[b, L - n :] = ex["attention_mask"][0]
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    for key in ("pixel_values_videos", "video_grid_thw", "video_second_per_grid", "pixel_values", "image_grid_thw"):
        parts = [ex[key] for ex in examples if key in ex]
        if parts:
            batch[key] = concat(parts)
    audios = [(f, m) for ex in examples if "input_features" in ex
              for f, m in zip(ex["input_features"], ex["feature_attention_mask"])]
    if audios:
        batch["input_features"], batch["feature_attention_mask"] = stack_audio(audios)
    flags = {bool(ex["use_audio_in_video"]) for ex in examples}
    if len(flags) != 1:
        raise ValueError("examples disagree on use_audio_in_video; one batch takes one mode")
    batch["use_audio_in_video"] = flags.pop()
    batch["records"] = [ex["record"] for ex in examples]
    return batch
