"""Shared helpers for the benchmark scripts: timing and a text-only ~100M Thinker config."""

from __future__ import annotations

import os
import pathlib
import platform
import statistics
import time


def machine() -> str:
    try:
        import jax
        dev = jax.devices()[0].device_kind
    except Exception:  # noqa: BLE001 - description only
        dev = "?"
    return (f"{cpu_model()} ({vector_extensions()}), {platform.machine()} {os.cpu_count()} cores, "
            f"{platform.python_version()}, jax device: {dev}")


def _cpuinfo() -> str:
    try:
        return pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name (as lscpu shows it)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def vector_extensions() -> str:
    """The CPU's widest float vector extensions, e.g. "AVX-512, AVX2, FMA" or "AVX2, FMA (no AVX-512)"."""
    flags = {f for line in _cpuinfo().splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    if not flags:
        return "vector extensions unknown"
    names = [name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("fma", "FMA")) if flag in flags]
    if "avx512f" not in flags:
        names.append("no AVX-512")
    return ", ".join(names)


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


def text_only_config(*, vocab: int, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int,
                     mrope_section: list[int], tie: bool) -> dict:
    """HF thinker config.json with the given text decoder and minimal towers (text-only benchmarks)."""
    return {
        "model_type": "qwen2_5_omni_thinker",
        "audio_token_index": vocab - 7, "image_token_index": vocab - 6, "video_token_index": vocab - 5,
        "vision_start_token_id": vocab - 4, "vision_end_token_id": vocab - 3,
        "audio_start_token_id": vocab - 2, "audio_end_token_id": vocab - 1, "tie_word_embeddings": tie,
        "text_config": {
            "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "max_position_embeddings": 32768,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope_section},
        },
        "vision_config": {"depth": 1, "hidden_size": 32, "intermediate_size": 32, "num_heads": 2,
                          "out_hidden_size": hidden, "fullatt_block_indexes": [0]},
        "audio_config": {"num_mel_bins": 16, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 32,
                         "d_model": 32, "output_dim": hidden, "max_source_positions": 64},
    }


def text_100m_config(vocab: int = 32000) -> dict:
    """HF thinker config.json whose text decoder is ~110M parameters; the towers are minimal."""
    return text_only_config(vocab=vocab, hidden=640, intermediate=2560, layers=12, heads=10, kv_heads=2,
                            mrope_section=[8, 12, 12], tie=False)


def build_hf(config: dict, seed: int = 0):
    import torch
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Qwen2_5OmniThinkerConfig(**{k: v for k, v in config.items() if k != "model_type"})
    cfg._attn_implementation = "sdpa"
    return Qwen2_5OmniThinkerForConditionalGeneration(cfg).eval()
