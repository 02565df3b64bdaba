"""Tiny random transformers CLIPModels saved as HF directories: the parity oracle for omni_jax.clip."""

from __future__ import annotations

import json
import pathlib

VARIANTS = {
    # OpenAI-style: quick_gelu, pooled at the largest id (eos_token_id 2).
    "openai": dict(act="quick_gelu", eos=2, patch=8, image=32, text_layers=2, vision_layers=2),
    # Newer configs: pooled at the first eos_token_id, exact gelu, odd patch grid.
    "eos_id": dict(act="gelu", eos=97, patch=6, image=30, text_layers=1, vision_layers=3),
}


def clip_config_dict(variant: str = "openai") -> dict:
    v = VARIANTS[variant]
    return {
        "model_type": "clip", "architectures": ["CLIPModel"], "projection_dim": 16,
        "logit_scale_init_value": 2.6592,
        "text_config": {"vocab_size": 99, "hidden_size": 32, "intermediate_size": 48,
                        "num_hidden_layers": v["text_layers"], "num_attention_heads": 4,
                        "max_position_embeddings": 20, "hidden_act": v["act"], "layer_norm_eps": 1e-5,
                        "bos_token_id": 96, "eos_token_id": v["eos"], "pad_token_id": 1},
        "vision_config": {"hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": v["vision_layers"],
                          "num_attention_heads": 4, "num_channels": 3, "image_size": v["image"],
                          "patch_size": v["patch"], "hidden_act": v["act"], "layer_norm_eps": 1e-5},
    }


def build_hf_clip(variant: str = "openai", seed: int = 0):
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    cfg = CLIPConfig(**clip_config_dict(variant))
    cfg._attn_implementation = "eager"
    model = CLIPModel(cfg).eval()
    with torch.no_grad():  # non-default logit scale and biases, so every parameter matters
        model.logit_scale.fill_(1.7)
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def save_hf_clip(directory, variant: str = "openai", seed: int = 0):
    """A HF CLIP directory (config.json + model.safetensors) with random weights; returns the torch model."""
    model = build_hf_clip(variant, seed)
    directory = pathlib.Path(directory)
    model.save_pretrained(directory)
    cfg = json.loads((directory / "config.json").read_text())
    assert cfg["model_type"] == "clip"
    return model


WORDS = ("the person in shirt raises both arms jumps sits down waves hand a an of man woman smiles "
         "at walks looks picks up rose takes from her his red green blue yellow purple orange white black "
         "first then so answer is people stand row").split()


def save_tiny_tokenizer(directory, eot_id: int = 98, sot_id: int = 96):
    """A word-level tokenizer.json with CLIP's special tokens (start 96, end-of-text 98, the largest id)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {"<unk>": 0, "!": 1, **{w: i + 2 for i, w in enumerate(dict.fromkeys(WORDS))}}
    assert len(vocab) < sot_id
    vocab.update({"<|startoftext|>": sot_id, "<|endoftext|>": eot_id})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", sot_id), ("<|endoftext|>", eot_id)])
    tok.save(str(pathlib.Path(directory) / "tokenizer.json"))


def save_tiny_clip_dir(directory, seed: int = 0):
    """A complete tiny HF CLIP directory: weights, config, tokenizer.json, preprocessor_config.json."""
    model = save_hf_clip(directory, "openai", seed)
    save_tiny_tokenizer(directory)
    (pathlib.Path(directory) / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}))
    return model
