"""The SFT step: its loss is the cross-entropy of the target tokens alone (checked against the model's
plain forward over prompt + target), accumulation equals one batch, LoRA updates adapters only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omni_jax.grpo.step import TrainState, make_optimizer, trainable_filter
from omni_jax.grpo.supervised import build_sft_step, completion_tokens, target_text
from omni_jax.model import Thinker, from_hf_dict, lora, prepare_inputs
from omni_jax.tokenizer import load_tokenizer
from tests.helpers import tiny_hf as th

PROMPTS = np.array([[3, 9, 27, 81, 17], [5, 25, 12, 60, 44], [8, 64, 40, 20, 10], [1, 2, 4, 16, 32]])
TARGETS = np.array([[11, 12, 13, 14], [21, 22, 0, 0], [31, 32, 33, 0], [41, 0, 0, 0]])
MASK = TARGETS > 0


@pytest.fixture(scope="module")
def model():
    return Thinker(from_hf_dict(th.thinker_config_dict("a")), rngs=nnx.Rngs(0))


def _batch(cfg):
    inputs = prepare_inputs(cfg, input_ids=PROMPTS, attention_mask=np.ones(PROMPTS.shape))
    next_pos = np.asarray(inputs.position_ids).max(axis=(0, 2)) + 1
    return inputs, jnp.asarray(TARGETS, jnp.int32), jnp.asarray(MASK), jnp.asarray(next_pos, jnp.int32)


def _oracle_loss(model):
    """−mean log p(target token) from the full forward of each row's prompt + targets."""
    total, count = 0.0, 0
    for prompt, target, mask in zip(PROMPTS, TARGETS, MASK):
        seq = np.concatenate([prompt, target[mask]])[None]
        logits = np.asarray(model(input_ids=seq, attention_mask=np.ones(seq.shape)), np.float64)[0]
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - logits.max(-1, keepdims=True)
        for j, tok in enumerate(target[mask]):
            total -= logp[len(prompt) - 1 + j, tok]
            count += 1
    return total / count


def _run(model, grad_accum, lr, adapters=False):
    graphdef, params, frozen = nnx.split(model, trainable_filter(adapters=adapters), ...)
    opt = make_optimizer(learning_rate=lr, total_steps=10, schedule="constant")
    step = jax.jit(build_sft_step(graphdef, opt, logits_chunk=4, grad_accum=grad_accum))
    state = TrainState(jnp.int32(0), params, opt.init(params), jnp.int32(0))
    new, metrics = step(state, frozen, *_batch(model.cfg))
    return state, new, metrics, frozen


def test_loss_is_the_target_tokens_cross_entropy(model):
    _, _, metrics, _ = _run(model, 1, 0.0)
    np.testing.assert_allclose(float(metrics["loss"]), _oracle_loss(model), rtol=1e-5)
    assert float(metrics["target_tokens"]) == MASK.sum()


def test_accumulation_equals_one_batch(model):
    _, one, m1, _ = _run(model, 1, 1e-2)
    _, two, m2, _ = _run(model, 2, 1e-2)
    np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(two.params)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-4)


def test_lora_sft_updates_adapters_only_and_lowers_the_loss(model):
    m = nnx.merge(*nnx.split(model))
    lora.add_adapters(m, lora.LoRAConfig(rank=4, alpha=8))
    graphdef, params, frozen = nnx.split(m, trainable_filter(adapters=True), ...)
    opt = make_optimizer(learning_rate=2e-2, total_steps=10, schedule="constant")
    step = jax.jit(build_sft_step(graphdef, opt, logits_chunk=4))
    state = TrainState(jnp.int32(0), params, opt.init(params), jnp.int32(0))
    losses = []
    for _ in range(4):
        state, metrics = step(state, frozen, *_batch(m.cfg))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 0.05, losses
    assert sum(x.size for x in jax.tree.leaves(state.params)) == lora.count(m)


def test_targets_from_solution_or_response():
    tok = load_tokenizer("tiny")
    assert target_text({"solution": "<answer>A</answer>", "response": "x"}) == "<answer>A</answer>"
    assert target_text({"solution": "", "response": "<answer>B</answer>"}) == "<answer>B</answer>"
    assert target_text({"problem": "?"}) is None
    assert target_text({"solution": "s", "response": "r"}, "response") == "r"
    ids, mask, truncated = completion_tokens(["<answer>A</answer>", "a b c d e f g h i j k l"], tok, 8)
    n = len(tok("<answer>A</answer>")["input_ids"])
    assert ids[0, n] == tok.eos_token_id and mask[0].sum() == n + 1 and truncated == 1 and mask[1].all()
