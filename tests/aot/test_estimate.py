"""The fit check's arithmetic by hand: parameter counts against the real model, bytes against a hand count."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from omni_jax.aot import estimate as E
from omni_jax.grpo.step import trainable_filter
from omni_jax.model import presets
from omni_jax.model.config import TextConfig, ThinkerConfig
from omni_jax.model.text import init_cache
from omni_jax.model.thinker import abstract_thinker


def _count(state) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))


@pytest.mark.parametrize("arch", ["7b", "3b"])
def test_parameter_counts_match_the_model(arch):
    cfg = presets.architecture_config(arch)
    model = abstract_thinker(cfg)
    _, trainable, frozen = nnx.split(model, trainable_filter(), ...)
    counts = E.parameter_counts(cfg)
    assert counts == {"trainable": _count(trainable), "frozen": _count(frozen)}
    assert E.vision_params(cfg.vision) == _count(nnx.state(model.visual))
    assert E.audio_params(cfg.audio) == _count(nnx.state(model.audio_tower))
    if arch == "7b":  # Qwen2.5-Omni-7B's Thinker: ~7.6 B text + lm_head, ~0.68 B ViT, ~0.64 B audio
        assert 7.5e9 < counts["trainable"] < 7.7e9 and 1.2e9 < counts["frozen"] < 1.4e9


def test_text_parameters_by_hand():
    # vocab 10, width 4, MLP 6, one layer, 2 heads of 2, 1 kv head, untied head:
    # q 4·4+4, k and v 4·2+2 each, o 4·4, MLP 3·4·6, two norms 4 each → 20+20+16+72+8 = 136;
    # embeddings 10·4 = 40, final norm 4 → 180; lm_head 10·4 = 40.
    t = TextConfig(vocab_size=10, hidden_size=4, intermediate_size=6, num_hidden_layers=1, num_attention_heads=2,
                   num_key_value_heads=1, mrope_section=(1, 0, 0))
    assert E.text_params(t) == (180, 40)


def test_bytes_per_chip_by_hand():
    t = TextConfig(vocab_size=10, hidden_size=4, intermediate_size=6, num_hidden_layers=1, num_attention_heads=2,
                   num_key_value_heads=1, mrope_section=(1, 0, 0))
    cfg = ThinkerConfig(text=t, dtype="bfloat16", param_dtype="float32")
    towers = E.vision_params(cfg.vision) + E.audio_params(cfg.audio)
    s = E.Shapes(prompts=2, generations=4, prompt_length=12, max_new_tokens=4, grad_accum=2, patches=0,
                 audio_chunks=0, param_shards=2, row_shards=2, with_reference=True,
                 cache_dtype="bfloat16", reference_dtype="bfloat16")
    est = E.estimate(cfg, s)
    trainable = 220 * 4 / 2  # f32 master weights over 2 chips
    assert est["train"]["params"] == trainable + towers * 4 / 2 + 220 * 2 / 2  # + frozen towers + bf16 reference
    assert est["train"]["optimizer"] == 2 * trainable  # AdamW mu and nu, trainable parameters only
    # KV cache: k and v × 1 layer × 1 head × 2 dims × 2 bytes per position; a prompt's 12
    # positions once per prompt (1 prompt per chip), each candidate's own 4 (4 rows per chip).
    prompt_cache, own_cache = 2 * 1 * 12 * 1 * 2 * 2, 2 * 1 * 4 * 1 * 2 * 2
    prefill = est["prefill"]["activations"]
    inputs = 1 * 12 * (4 + 1 + 12 + 4)  # one prompt per chip: ids, mask, 3 position rows, feature index
    embeds, logits = 1 * 12 * 4 * 2, 4 * 10 * 4
    assert prefill == inputs + 1 * prompt_cache + logits + embeds  # the prompt's cache is the output, not copied
    assert est["prefill"]["temporaries"] == 0
    assert est["decode"]["activations"] == inputs + embeds + 1 * prompt_cache + 4 * 4 * 8 + logits
    assert est["decode"]["temporaries"] == 4 * own_cache  # made inside the decode
    # 2 prompts on 4 row shards do not divide: the cache is copied per candidate (2 rows per chip),
    # built whole on every chip first.
    copied = E.estimate(cfg, dataclasses.replace(s, row_shards=4))
    assert copied["prefill"]["temporaries"] == 2 * prompt_cache
    per_chip = copied["prefill"]["activations"] - 2 * 12 * (4 + 1 + 12 + 4) - 2 * 10 * 4 - 2 * 12 * 4 * 2
    assert per_chip == 2 * prompt_cache
    # remat checkpoints: 1 layer × (8 rows / 2 micro-batches / 2 chips) × 16 positions × width 4 × 2 bytes
    mlp = 3 * 2 * 16 * 6 * 2
    assert est["train"]["temporaries"] == 2 * trainable + 3 * trainable + 1 * 2 * 16 * 4 * 2 + mlp

    # A prompt pass shared by 2 candidates: per micro-batch and chip 2 rows → the prompt (12
    # positions) once, the completions (4 positions) twice; MLP peak: the larger of the two passes.
    shared = E.estimate(cfg, dataclasses.replace(s, prefix_share=2))
    tokens = 1 * 12 + 2 * 4
    mlp = 3 * max(12, 8) * 6 * 2
    assert shared["train"]["temporaries"] == 5 * trainable + 1 * tokens * 4 * 2 + mlp
    assert shared["train"]["temporaries"] < est["train"]["temporaries"]


def test_kv_cache_bytes_match_the_cache_the_sampler_builds():
    cfg = presets.architecture_config("7b", dtype="bfloat16")
    s = E.Shapes(prompts=1, generations=1, prompt_length=100, max_new_tokens=28, grad_accum=1, patches=0,
                 audio_chunks=0, param_shards=1, row_shards=1, with_reference=False,
                 cache_dtype="bfloat16", reference_dtype="bfloat16")
    est = E.estimate(cfg, s)
    nbytes = lambda tree: sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
    prompt_cache = nbytes(jax.eval_shape(lambda: init_cache(cfg.text, 1, 100, jax.numpy.bfloat16)))
    own_cache = nbytes(jax.eval_shape(lambda: init_cache(cfg.text, 1, 28, jax.numpy.bfloat16)))
    inputs = 100 * (4 + 1 + 12 + 4)
    embeds, logits = 100 * cfg.text.hidden_size * 2, cfg.text.vocab_size * 4
    assert est["prefill"]["activations"] == inputs + prompt_cache + logits + embeds
    assert est["decode"]["temporaries"] == own_cache
