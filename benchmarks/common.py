"""Shared helpers for the benchmark scripts: timing and a text-only ~100M Thinker config."""

from __future__ import annotations

import os
import platform
import statistics
import time


def machine() -> str:
    try:
        import jax
        dev = jax.devices()[0].device_kind
    except Exception:  # noqa: BLE001 - description only
        dev = "?"
    return f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}, jax device: {dev}"


def timeit(fn, *, warmup: int = 1, repeat: int = 5) -> float:
    """Median wall time of fn() in seconds (fn must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def text_100m_config(vocab: int = 32000) -> dict:
    """HF thinker config.json whose text decoder is ~110M parameters; the towers are minimal."""
    return {
        "model_type": "qwen2_5_omni_thinker",
        "audio_token_index": vocab - 7, "image_token_index": vocab - 6, "video_token_index": vocab - 5,
        "vision_start_token_id": vocab - 4, "vision_end_token_id": vocab - 3,
        "audio_start_token_id": vocab - 2, "audio_end_token_id": vocab - 1, "tie_word_embeddings": False,
        "text_config": {
            "vocab_size": vocab, "hidden_size": 640, "intermediate_size": 2560, "num_hidden_layers": 12,
            "num_attention_heads": 10, "num_key_value_heads": 2,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]},
        },
        "vision_config": {"depth": 1, "hidden_size": 32, "intermediate_size": 32, "num_heads": 2,
                          "out_hidden_size": 640, "fullatt_block_indexes": [0]},
        "audio_config": {"num_mel_bins": 16, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 32,
                         "d_model": 32, "output_dim": 640, "max_source_positions": 64},
    }


def build_hf(config: dict, seed: int = 0):
    import torch
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Qwen2_5OmniThinkerConfig(**{k: v for k, v in config.items() if k != "model_type"})
    cfg._attn_implementation = "sdpa"
    return Qwen2_5OmniThinkerForConditionalGeneration(cfg).eval()
