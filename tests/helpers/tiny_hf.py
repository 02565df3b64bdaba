"""Tiny random transformers Qwen2.5-Omni Thinkers and hand-built inputs: the parity oracle.

Token ids of the tiny vocabulary (160): text 1..149, then the multimodal specials below.
"""

from __future__ import annotations

import re
import types

import numpy as np

PAD, AUDIO, IMAGE, VIDEO, V_BOS, V_EOS, A_BOS, A_EOS = 0, 150, 151, 152, 153, 154, 155, 156
NAMES = {"<|AUDIO|>": AUDIO, "<|IMAGE|>": IMAGE, "<|VIDEO|>": VIDEO, "<|vision_bos|>": V_BOS,
         "<|vision_eos|>": V_EOS, "<|audio_bos|>": A_BOS, "<|audio_eos|>": A_EOS}

# Three small configs that differ where the architecture has choices.
VARIANTS = {
    "a": dict(mrope=[1, 1, 2], heads=4, kv=2, window=112, fullatt=[1], depth=2, n_window=10, mel=20,
              tie=False, vision_act="silu"),
    "b": dict(mrope=[2, 1, 1], heads=4, kv=1, window=56, fullatt=[0, 2], depth=3, n_window=8, mel=16,
              tie=True, vision_act="silu"),
    "c": dict(mrope=[2, 4, 2], heads=2, kv=2, window=84, fullatt=[2], depth=3, n_window=13, mel=24,
              tie=False, vision_act="gelu_pytorch_tanh"),
}


def thinker_config_dict(variant: str = "a") -> dict:
    v = VARIANTS[variant]
    hidden = 32
    head_dim = hidden // v["heads"]
    assert sum(v["mrope"]) * 2 == head_dim
    return {
        "model_type": "qwen2_5_omni_thinker",
        "audio_token_index": AUDIO, "image_token_index": IMAGE, "video_token_index": VIDEO,
        "vision_start_token_id": V_BOS, "vision_end_token_id": V_EOS,
        "audio_start_token_id": A_BOS, "audio_end_token_id": A_EOS,
        "position_id_per_seconds": 25, "seconds_per_chunk": 2,
        "tie_word_embeddings": v["tie"],
        "text_config": {
            "vocab_size": 160, "hidden_size": hidden, "intermediate_size": 48, "num_hidden_layers": 2,
            "num_attention_heads": v["heads"], "num_key_value_heads": v["kv"], "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": v["mrope"]},
            "pad_token_id": PAD, "max_position_embeddings": 4096,
        },
        "vision_config": {
            "depth": v["depth"], "hidden_size": 32, "intermediate_size": 40, "num_heads": 4,
            "patch_size": 14, "temporal_patch_size": 2, "spatial_merge_size": 2, "window_size": v["window"],
            "out_hidden_size": hidden, "fullatt_block_indexes": v["fullatt"], "hidden_act": v["vision_act"],
        },
        "audio_config": {
            "num_mel_bins": v["mel"], "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 40,
            "d_model": 24, "n_window": v["n_window"], "output_dim": hidden, "max_source_positions": 64,
        },
    }


def build_hf_thinker(variant: str = "a", seed: int = 0):
    import torch
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Qwen2_5OmniThinkerConfig(**{k: v for k, v in thinker_config_dict(variant).items() if k != "model_type"})
    cfg._attn_implementation = "eager"
    model = Qwen2_5OmniThinkerForConditionalGeneration(cfg).eval()
    # Random init leaves norms at 1 and biases at 0: perturb every tensor so each one matters.
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def expand(text: str, *, grids_image=(), grids_video=(), audio_frames=(), seconds=(), use_audio_in_video=False,
           merge=2) -> list[int]:
    """Token ids of `text` with placeholders expanded exactly as transformers' processor does.

    `text` mixes special token names and plain words; each plain character becomes one text id.
    """
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import Qwen2_5OmniProcessor

    fake = types.SimpleNamespace(
        image_processor=types.SimpleNamespace(merge_size=merge),
        video_processor=types.SimpleNamespace(merge_size=merge, temporal_patch_size=2),
        audio_token="<|AUDIO|>", image_token="<|IMAGE|>", video_token="<|VIDEO|>",
        vision_bos_token="<|vision_bos|>", vision_eos_token="<|vision_eos|>",
        audio_bos_token="<|audio_bos|>", audio_eos_token="<|audio_eos|>",
    )
    fake.get_chunked_index = lambda idx, n: Qwen2_5OmniProcessor.get_chunked_index(fake, idx, n)
    audio_lengths = [((int(n) - 1) // 2 + 1 - 2) // 2 + 1 for n in audio_frames]
    (out,) = Qwen2_5OmniProcessor.replace_multimodal_special_tokens(
        fake, [text], iter(audio_lengths), iter([np.array(g) for g in grids_image]),
        iter([np.array(g) for g in grids_video]), video_second_per_grid=iter(list(seconds)),
        use_audio_in_video=use_audio_in_video, position_id_per_seconds=25, seconds_per_chunk=2.0)
    ids = []
    for piece in re.split(r"(<\|[A-Za-z_]+\|>)", out):
        if piece in NAMES:
            ids.append(NAMES[piece])
        else:
            ids.extend(1 + (ord(ch) % 149) for ch in piece)
    return ids


def left_pad(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    t = max(len(r) for r in rows)
    ids = np.full((len(rows), t), PAD, np.int64)
    mask = np.zeros((len(rows), t), np.int64)
    for i, r in enumerate(rows):
        ids[i, t - len(r):] = r
        mask[i, t - len(r):] = 1
    return ids, mask


def audio_features(rng: np.random.Generator, lengths, mel: int, total: int | None = None):
    total = total or max(lengths) + 7
    feats = rng.normal(size=(len(lengths), mel, total)).astype(np.float32)
    mask = np.zeros((len(lengths), total), np.int64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        feats[i, :, n:] = 0.0
    return feats, mask


def pixels(rng: np.random.Generator, grids) -> np.ndarray:
    n = int(sum(np.prod(g) for g in grids))
    return rng.normal(size=(n, 3 * 2 * 14 * 14)).astype(np.float32)


def full_omni_config_dict(variant: str = "a") -> dict:
    """A tiny full Qwen2.5-Omni config (thinker `variant` + one-layer talker + minimal token2wav).

    The talker and token2wav are as small as their constructors allow, so the whole model builds
    and saves in well under a second on CPU.
    """
    ids = dict(audio_token_index=AUDIO, image_token_index=IMAGE, video_token_index=VIDEO,
               vision_start_token_id=V_BOS, vision_end_token_id=V_EOS, audio_start_token_id=A_BOS,
               audio_end_token_id=A_EOS)
    talker = dict(vocab_size=64, embedding_size=32, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
                  tts_text_start_token_id=40, tts_text_end_token_id=41, tts_text_pad_token_id=42,
                  tts_codec_start_token_id=60, tts_codec_end_token_id=61, tts_codec_pad_token_id=62,
                  tts_codec_mask_token_id=63, **{k: v % 64 for k, v in ids.items()})
    dit = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ff_mult=1, emb_dim=16, head_dim=16,
               num_embeds=64, mel_dim=8, enc_emb_dim=16, enc_dim=16, enc_channels=[16, 16, 16, 16, 48],
               enc_attention_channels=8, enc_se_channels=8, look_ahead_layers=[1], look_backward_layers=[0])
    bigvgan = dict(mel_dim=8, upsample_initial_channel=16, resblock_kernel_sizes=[3],
                   resblock_dilation_sizes=[[1, 3, 5]], upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4])
    thinker = {k: v for k, v in thinker_config_dict(variant).items() if k != "model_type"}
    return dict(thinker_config=thinker, talker_config=talker,
                token2wav_config=dict(dit_config=dit, bigvgan_config=bigvgan))


def build_hf_full_omni(variant: str = "a", seed: int = 0):
    """A random tiny `Qwen2_5OmniForConditionalGeneration` (thinker perturbed like build_hf_thinker)."""
    import torch
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Qwen2_5OmniConfig(**full_omni_config_dict(variant))
    cfg.thinker_config._attn_implementation = "eager"
    model = Qwen2_5OmniForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model
