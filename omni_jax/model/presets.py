"""Architectures by name: the real 3B / 7B Thinkers and a tiny one for CPU runs and tests."""

from __future__ import annotations

import json
import pathlib

from omni_jax.model.config import ThinkerConfig, from_hf_dict
from omni_jax.tokenizer import special_token_ids

HF_CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "assets" / "hf_configs"


def tiny_config_dict(vocab_size: int, special_ids: dict[str, int]) -> dict:
    """HF-style thinker config.json of a ~1M-parameter Thinker whose token ids match `special_ids`
    (`omni_jax.tokenizer.special_token_ids`): 56×56-pixel videos and 2 s of audio become ~60 tokens."""
    vocab = -(-vocab_size // 128) * 128  # round up: tidy shapes
    return {
        "model_type": "qwen2_5_omni_thinker",
        "audio_token_index": special_ids["audio_token_id"], "image_token_index": special_ids["image_token_id"],
        "video_token_index": special_ids["video_token_id"],
        "vision_start_token_id": special_ids["vision_start_token_id"],
        "vision_end_token_id": special_ids["vision_end_token_id"],
        "audio_start_token_id": special_ids["audio_start_token_id"],
        "audio_end_token_id": special_ids["audio_end_token_id"],
        "position_id_per_seconds": 25, "seconds_per_chunk": 2, "tie_word_embeddings": True,
        "text_config": {
            "vocab_size": vocab, "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 3,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
        },
        "vision_config": {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "patch_size": 14,
                          "temporal_patch_size": 2, "spatial_merge_size": 2, "window_size": 56,
                          "out_hidden_size": 128, "fullatt_block_indexes": [1]},
        "audio_config": {"num_mel_bins": 128, "encoder_layers": 2, "encoder_attention_heads": 4,
                         "encoder_ffn_dim": 128, "d_model": 64, "n_window": 100, "output_dim": 128,
                         "max_source_positions": 1500},
    }


def hf_config_dict(architecture: str, tokenizer=None) -> dict:
    """The HF config dict of `architecture`: "tiny" (needs the tokenizer), "3b", "7b" or a config.json path."""
    if architecture == "tiny":
        if tokenizer is None:
            raise ValueError("the tiny architecture takes its vocabulary from the tokenizer")
        return tiny_config_dict(len(tokenizer), special_token_ids(tokenizer))
    if architecture in ("3b", "7b"):
        return json.loads((HF_CONFIGS / f"qwen2_5_omni_{architecture}_thinker.json").read_text())
    path = pathlib.Path(architecture)
    if path.is_dir():
        path = path / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"model.architecture {architecture!r}: not tiny/3b/7b and no config.json there")
    return json.loads(path.read_text())


def architecture_config(architecture: str, tokenizer=None, **options) -> ThinkerConfig:
    """The ThinkerConfig of `architecture` ("tiny" on `tokenizer`'s vocabulary, "3b", "7b" or a
    config.json path; see `hf_config_dict`), with ThinkerConfig `options` applied.
    """
    return from_hf_dict(hf_config_dict(architecture, tokenizer), **options)
