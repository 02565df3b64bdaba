"""The fit check's arithmetic by hand: parameter counts and the big buffers of each step, per chip.

Independent of XLA: from the architecture's dimensions and the config alone. `omni_jax.aot`
prints it next to `compiled.memory_analysis()`, so a surprise (an array replicated that should be
sharded, a dtype doubled) shows as a gap between the two columns.

Assumptions, matching the run: parameters are stored in `param_dtype` and sharded over every chip
(FSDP on the embed axis × TP); AdamW keeps two moments in `param_dtype` for the trainable
parameters only (with LoRA: the adapters); the reference is a copy of the trainable parameters in
`reference_dtype` (with LoRA: none, the frozen base is the reference); rows are
sharded over data × fsdp; the KV cache is [L, rows, prompt + completion, kv heads, head dim].
"""

from __future__ import annotations

import dataclasses

import numpy as np

from omni_jax.model.config import AudioConfig, TextConfig, ThinkerConfig, VisionConfig


def text_params(t: TextConfig) -> tuple[int, int]:
    """(decoder + final norm + embeddings, lm_head) parameter counts of the text model."""
    d, f, hd = t.hidden_size, t.intermediate_size, t.kv_head_dim
    q, kv = t.num_attention_heads * hd, t.num_key_value_heads * hd
    layer = (d * q + q) + 2 * (d * kv + kv) + q * d + 3 * d * f + 2 * d
    model = t.num_hidden_layers * layer + t.vocab_size * d + d
    return model, 0 if t.tie_word_embeddings else t.vocab_size * d


def lora_params(t: TextConfig, rank: int, targets) -> int:
    """LoRA adapter parameters: rank × (in + out) per targeted projection and layer."""
    d, f, hd = t.hidden_size, t.intermediate_size, t.kv_head_dim
    q, kv = t.num_attention_heads * hd, t.num_key_value_heads * hd
    sizes = {"q_proj": d + q, "k_proj": d + kv, "v_proj": d + kv, "o_proj": q + d, "gate_proj": d + f,
             "up_proj": d + f, "down_proj": f + d}
    return t.num_hidden_layers * rank * sum(sizes[name] for name in targets)


def vision_params(v: VisionConfig) -> int:
    d, f = v.hidden_size, v.intermediate_size
    block = 2 * d + 4 * (d * d + d) + 2 * (d * f + f) + (f * d + d)
    wide = d * v.spatial_merge_size**2
    merger = d + (wide * wide + wide) + (wide * v.out_hidden_size + v.out_hidden_size)
    return v.patch_dim * d + v.depth * block + merger


def audio_params(a: AudioConfig) -> int:
    d, f = a.d_model, a.encoder_ffn_dim
    convs = (3 * a.num_mel_bins * d + d) + (3 * d * d + d)
    layer = 4 * d + (d * d + d) + d * d + 2 * (d * d + d) + (d * f + f) + (f * d + d)
    return convs + a.encoder_layers * layer + 2 * d + (d * a.output_dim + a.output_dim) + 2 * a.output_dim


@dataclasses.dataclass(frozen=True)
class Shapes:
    """The sizes of one optimizer step of a config on a mesh."""

    prompts: int  # B, prompts per step
    generations: int  # G, candidates per prompt
    prompt_length: int  # T, padded
    max_new_tokens: int  # M
    grad_accum: int
    patches: int  # vision patches of the whole batch (0: no video)
    audio_chunks: int  # audio encoder chunks of the whole batch
    param_shards: int  # chips a parameter is split over (fsdp × tp)
    row_shards: int  # chips the rows are split over (data × fsdp)
    with_reference: bool
    cache_dtype: str
    reference_dtype: str
    prefix_share: int = 1  # candidates sharing one prompt pass in train / reference (StepConfig.prefix_share)
    lora_rank: int = 0  # > 0: LoRA adapters train, every base weight is frozen, no reference copy
    lora_targets: tuple[str, ...] = ()


def _item(dtype: str) -> int:
    return np.dtype(dtype).itemsize


def parameter_counts(cfg: ThinkerConfig, lora_rank: int = 0, lora_targets=()) -> dict[str, int]:
    """{"trainable": n, "frozen": n}: the text decoder + lm_head train, the vision and audio towers
    are frozen. With LoRA the adapters alone train and the whole Thinker is frozen."""
    model, head = text_params(cfg.text)
    towers = vision_params(cfg.vision) + audio_params(cfg.audio)
    if lora_rank:
        return {"trainable": lora_params(cfg.text, lora_rank, lora_targets), "frozen": model + head + towers}
    return {"trainable": model + head, "frozen": towers}


def estimate(cfg: ThinkerConfig, s: Shapes) -> dict[str, dict[str, float]]:
    """Per step ("prefill", "decode", "train", "reference"): bytes per chip of the big buffers.

    Each step maps "params" (policy, towers, reference), "optimizer", "activations" (inputs,
    KV cache, GRPO batch, outputs: the step's arguments and results other than weights) and
    "temporaries" (only the terms known for sure: in prefill, when the prompts do not divide over
    the row shards, their cache before it is copied per candidate; in decode the candidates'
    caches of their own completions; in train the gradient accumulator and one micro-batch's
    gradients, AdamW's new moments and update, the remat checkpoints of every layer, and one
    layer's MLP intermediates).
    """
    t = cfg.text
    counts = parameter_counts(cfg, s.lora_rank, s.lora_targets)
    p_item, c_item, a_item = _item(cfg.param_dtype), _item(s.cache_dtype), _item(cfg.dtype)
    # Adapters counted whole on every chip: an upper bound (their embed side is FSDP-sharded, the
    # rank side never is); they are ~2 % of the 7B decoder at rank 64.
    trainable = counts["trainable"] * p_item / (1 if s.lora_rank else s.param_shards)
    frozen = counts["frozen"] * p_item / s.param_shards
    # LoRA's reference is the frozen base itself: no copy.
    reference = counts["trainable"] * _item(s.reference_dtype) / s.param_shards \
        if s.with_reference and not s.lora_rank else 0.0
    optimizer = 2 * trainable  # AdamW mu and nu, in param_dtype, trainable only
    params = trainable + frozen + reference
    b, rows, T, M = s.prompts, s.prompts * s.generations, s.prompt_length, s.max_new_tokens

    def per_row(n_rows: float) -> float:  # rows split over the row shards, or replicated when they do not divide
        return n_rows / s.row_shards if n_rows % s.row_shards == 0 else n_rows

    kv_per_position = 2 * t.num_hidden_layers * t.num_key_value_heads * t.kv_head_dim * c_item
    prompt_kv, own_kv = T * kv_per_position, M * kv_per_position  # a prompt's cache; a candidate's own
    # The sampler keeps a prompt's cache once when the prompts divide over the row shards, else
    # copies it per candidate (rows divide) after building it whole on every chip.
    shared_cache = b % s.row_shards == 0
    prompt_caches = per_row(b) * prompt_kv if shared_cache else per_row(rows) * prompt_kv
    # Model inputs: ids, mask, 3 position rows, feature index; float32 pixels split over the
    # row shards (the ViT's patch axis); mel chunks replicated.
    prompt_inputs = per_row(b) * T * (4 + 1 + 12 + 4) + per_row(s.patches) * cfg.vision.patch_dim * 4 \
        + s.audio_chunks * cfg.audio.num_mel_bins * 2 * cfg.audio.n_window * 4
    prompt_embeds = per_row(b) * T * t.hidden_size * a_item
    next_logits = per_row(rows) * t.vocab_size * 4
    batch = per_row(rows) * (T * (t.hidden_size * a_item + 12 + 1) + M * (4 + 1 + 4 * s.with_reference) + 8)
    micro = rows / s.grad_accum
    # Tokens through the decoder per micro-batch and chip: the prompt once per `prefix_share` rows.
    prompt_tokens, completion_tokens = per_row(micro / s.prefix_share) * T, per_row(micro) * M
    checkpoints = t.num_hidden_layers * (prompt_tokens + completion_tokens) * t.hidden_size * a_item
    grads = 2 * trainable  # the accumulator and one micro-batch's gradients, in param_dtype
    update = 3 * trainable  # AdamW's new mu and nu and the update, before they replace the old ones
    # gate, up, their product of one layer: of the prompt pass, or of the completions' pass after it
    mlp = 3 * max(prompt_tokens, completion_tokens) if s.prefix_share > 1 else 3 * (prompt_tokens + completion_tokens)
    mlp *= t.intermediate_size * a_item
    return {
        # The prompts' cache is prefill's output and decode's input, once per prompt (not per
        # candidate); decode adds each candidate's cache of its own completion.
        "prefill": {"params": params, "optimizer": optimizer,
                    "temporaries": 0.0 if shared_cache else per_row(b) * prompt_kv,
                    "activations": prompt_inputs + prompt_caches + next_logits + prompt_embeds},
        "decode": {"params": params, "optimizer": optimizer, "temporaries": per_row(rows) * own_kv,
                   "activations": prompt_inputs + prompt_embeds + prompt_caches + per_row(rows) * M * 8
                   + next_logits},
        "train": {"params": params, "optimizer": optimizer, "temporaries": grads + update + checkpoints + mlp,
                  "activations": batch},
        "reference": {"params": params, "optimizer": optimizer, "temporaries": 0.0,
                      "activations": batch + per_row(rows) * M * 4},
    }
