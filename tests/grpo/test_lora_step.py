"""The GRPO step with LoRA: adapters alone are updated and hold optimizer state, the reference is the
base with the adapters off (no copy), the rollout samples from base + adapters unmerged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omni_jax.grpo import loss as L
from omni_jax.grpo.logprobs import Sequences, completion_logprobs
from omni_jax.grpo.step import GRPOBatch, StepConfig, TrainState, build_train_step, jit_logprob_fn, make_optimizer, \
    trainable_filter
from omni_jax.model import Thinker, from_hf_dict, lora, prepare_inputs
from omni_jax.rollout import generate
from tests.helpers import tiny_hf as th

G, M = 4, 6


@pytest.fixture(scope="module")
def setup():
    cfg = from_hf_dict(th.thinker_config_dict("a"))
    base = Thinker(cfg, rngs=nnx.Rngs(0))
    base_graphdef, base_state = nnx.split(base)
    model = nnx.merge(base_graphdef, base_state)
    lora.add_adapters(model, lora.LoRAConfig(rank=4, alpha=8, dropout=0.1), seed=1)
    rng = np.random.default_rng(0)
    # Adapters with values (B = 0 would make them no-ops): the policy differs from the base.
    lora.set_adapter_params(model, {n: {"a": ab["a"], "b": 0.3 * rng.standard_normal(ab["b"].shape)}
                                    for n, ab in lora.adapter_params(model).items()})
    ids = np.array([[7, 8, 9, 10, 11], [12, 13, 14, 15, 16]])
    inputs = prepare_inputs(cfg, input_ids=ids, attention_mask=np.ones(ids.shape))
    out = generate(model, inputs, num_samples=G, max_new_tokens=M, temperature=1.0, seed=1, eos_token_ids=[5])
    seqs = Sequences(
        prompt_embeds=jnp.repeat(out.prompt_embeds, G, axis=0),
        prompt_positions=jnp.repeat(jnp.asarray(inputs.position_ids), G, axis=1),
        prompt_mask=jnp.repeat(jnp.asarray(inputs.attention_mask), G, axis=0),
        completions=out.tokens, completion_mask=out.mask,
        next_position=jnp.repeat(jnp.asarray(inputs.position_ids).max(axis=(0, 2)) + 1, G))
    return base, model, out, seqs


def test_rollout_samples_from_base_plus_adapters(setup):
    base, model, out, seqs = setup
    mask = np.asarray(seqs.completion_mask)
    policy = np.asarray(completion_logprobs(model, seqs, temperature=1.0, logits_chunk=4)[0])
    assert np.abs(policy - np.asarray(out.logprobs))[mask].max() < 1e-4
    merged = np.asarray(completion_logprobs(lora.merged(model), seqs, temperature=1.0, logits_chunk=4)[0])
    assert np.abs(merged - policy)[mask].max() < 1e-4
    plain = np.asarray(completion_logprobs(base, seqs, temperature=1.0, logits_chunk=4)[0])
    assert np.abs(plain - policy)[mask].max() > 1e-2  # the adapters matter


def test_reference_is_the_base_with_adapters_off(setup):
    base, model, _, seqs = setup
    graphdef, params, frozen = nnx.split(model, trainable_filter(adapters=True), ...)
    cfg = StepConfig(loss=L.LossConfig(), grad_accum=2, total_steps=1, temperature=1.0, logits_chunk=4)
    reference = lora.base_state(frozen)
    # The reference holds the very arrays of the frozen weights: no copy.
    assert {id(x) for x in jax.tree.leaves(reference)} <= {id(x) for x in jax.tree.leaves(frozen)}
    ref = jit_logprob_fn(lora.base_graphdef(model), cfg)(reference, nnx.State({}), seqs)
    want = completion_logprobs(base, seqs, temperature=1.0, logits_chunk=4)[0]
    np.testing.assert_allclose(np.asarray(ref), np.asarray(want), atol=1e-5)


def test_only_adapters_are_updated_and_hold_optimizer_state(setup):
    _, model, _, seqs = setup
    graphdef, params, frozen = nnx.split(model, trainable_filter(adapters=True), ...)
    opt = make_optimizer(learning_rate=1e-2, total_steps=10)
    cfg = StepConfig(loss=L.LossConfig(beta=0.04), grad_accum=2, total_steps=10, temperature=1.0, logits_chunk=4)
    ref = jit_logprob_fn(lora.base_graphdef(model), cfg)(lora.base_state(frozen), nnx.State({}), seqs)
    adv = jnp.asarray(np.random.default_rng(1).normal(size=2 * G), jnp.float32)
    state = TrainState(jnp.int32(0), params, opt.init(params), jnp.int32(0))
    n_adapter = lora.count(model)
    assert sum(x.size for x in jax.tree.leaves(params)) == n_adapter
    assert sum(x.size for x in jax.tree.leaves(state.opt_state)) == 2 * n_adapter + 2  # mu, nu, 2 counters
    before = jax.tree.map(np.asarray, frozen)
    new, metrics = jax.jit(build_train_step(graphdef, cfg, opt))(state, frozen, GRPOBatch(seqs, adv, None, ref))
    assert int(new.step) == 1 and float(metrics["kl"]) > 0
    for path, a, b in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(params),
                          jax.tree.leaves(new.params)):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3, jax.tree_util.keystr(path[0])
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(frozen)):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_lora_grpo_learns_a_token_reward(setup):
    """Reward = the share of completion tokens with an id below 40 (a quarter of the vocabulary): a few LoRA GRPO steps (rollout from
    base + adapters, update of the adapters alone, KL to the base) raise it well above its start."""
    from omni_jax.grpo.advantages import group_advantages

    base, _, _, _ = setup
    g, m, steps = 8, 8, 10
    model = nnx.merge(*nnx.split(base))
    # A random init's output head (std 0.02) hides the decoder's changes from the logits; a trained
    # model's does not: a head of std ~0.6 lets a few steps show.
    model.lm_head.kernel = nnx.Param(model.lm_head.kernel[...] * 30, **model.lm_head.kernel.get_metadata())
    lora.add_adapters(model, lora.LoRAConfig(rank=4, alpha=8), seed=0)
    ids = np.array([[7, 8, 9, 10, 11], [12, 13, 14, 15, 16]])
    inputs = prepare_inputs(model.cfg, input_ids=ids, attention_mask=np.ones(ids.shape))
    graphdef, params, frozen = nnx.split(model, trainable_filter(adapters=True), ...)
    opt = make_optimizer(learning_rate=3e-2, total_steps=steps, schedule="constant")
    cfg = StepConfig(loss=L.LossConfig(beta=0.01), grad_accum=1, total_steps=steps, temperature=1.0, logits_chunk=8)
    train_step = jax.jit(build_train_step(graphdef, cfg, opt))
    ref_fn = jit_logprob_fn(lora.base_graphdef(model), cfg)
    state = TrainState(jnp.int32(0), params, opt.init(params), jnp.int32(0))
    rewards = []
    for step in range(steps):
        out = generate(nnx.merge(graphdef, state.params, frozen), inputs, num_samples=g, max_new_tokens=m,
                       temperature=1.0, seed=step, cpu_decode_kernel=False)
        mask = np.asarray(out.mask)
        reward = ((np.asarray(out.tokens) < 40) & mask).sum(1) / np.maximum(mask.sum(1), 1)
        rewards.append(reward.mean())
        seqs = Sequences(jnp.repeat(out.prompt_embeds, g, axis=0), jnp.repeat(jnp.asarray(inputs.position_ids), g, 1),
                         jnp.repeat(jnp.asarray(inputs.attention_mask), g, 0), out.tokens, out.mask,
                         jnp.repeat(jnp.asarray(inputs.position_ids).max(axis=(0, 2)) + 1, g))
        adv = group_advantages(jnp.asarray(reward, jnp.float32), g, "group")
        state, _ = train_step(state, frozen, GRPOBatch(seqs, adv, None, ref_fn(lora.base_state(frozen),
                                                                                   nnx.State({}), seqs)))
    print('rewards', np.round(rewards, 3))
    assert np.mean(rewards[-3:]) > np.mean(rewards[:3]) + 0.2, rewards
