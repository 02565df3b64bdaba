"""The train step: accumulation equals one big batch, frozen towers, non-finite skips, on-policy log-probs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omni_jax.grpo import loss as L
from omni_jax.grpo.logprobs import Sequences, completion_logprobs
from omni_jax.grpo.step import GRPOBatch, StepConfig, TrainState, build_train_step, make_optimizer, trainable_filter
from omni_jax.model import Thinker, from_hf_dict, prepare_inputs
from omni_jax.rollout import generate
from tests.helpers import tiny_hf as th

G, M = 4, 6


@pytest.fixture(scope="module")
def setup():
    cfg = from_hf_dict(th.thinker_config_dict("a"))
    model = Thinker(cfg, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    gv = [(2, 4, 4)]
    ids = th.expand("q <|vision_bos|><|VIDEO|><|vision_eos|> answer", grids_video=gv)
    inputs = prepare_inputs(cfg, input_ids=np.array([ids, ids]), attention_mask=np.ones((2, len(ids))),
                            pixel_values_videos=th.pixels(rng, gv + gv), video_grid_thw=np.array(gv + gv),
                            video_second_per_grid=np.array([1.0, 1.0]))
    out = generate(model, inputs, num_samples=G, max_new_tokens=M, temperature=1.0, seed=1, eos_token_ids=[5])
    n = 2 * G
    seqs = Sequences(
        prompt_embeds=jnp.repeat(out.prompt_embeds, G, axis=0),
        prompt_positions=jnp.repeat(jnp.asarray(inputs.position_ids), G, axis=1),
        prompt_mask=jnp.repeat(jnp.asarray(inputs.attention_mask), G, axis=0),
        completions=out.tokens, completion_mask=out.mask,
        next_position=jnp.repeat(jnp.asarray(inputs.position_ids).max(axis=(0, 2)) + 1, G))
    adv = jnp.asarray(np.random.default_rng(1).normal(size=n), jnp.float32)
    return model, out, seqs, adv


def _step(model, batch, grad_accum, loss_cfg=L.LossConfig(beta=0.0)):
    graphdef, params, frozen = nnx.split(model, trainable_filter(False), ...)
    opt = make_optimizer(learning_rate=1e-2, total_steps=10)
    cfg = StepConfig(loss=loss_cfg, grad_accum=grad_accum, total_steps=10, temperature=1.0, logits_chunk=4)
    step = jax.jit(build_train_step(graphdef, cfg, opt))
    state = TrainState(jnp.int32(0), params, opt.init(params), jnp.int32(0))
    new, metrics = step(state, frozen, batch)
    return state, new, metrics, frozen


def test_sampler_logprobs_equal_the_learner_logprobs(setup):
    model, out, seqs, _ = setup
    logp, _ = completion_logprobs(model, seqs, temperature=1.0, logits_chunk=4)
    mask = np.asarray(seqs.completion_mask)
    diff = np.abs(np.asarray(logp) - np.asarray(out.logprobs))[mask].max()
    assert diff < 1e-4, diff


def test_accumulation_equals_one_batch_and_towers_stay_frozen(setup):
    model, out, seqs, adv = setup
    batch = GRPOBatch(seqs, adv, old_logp=None, ref_logp=None)
    _, one, m1, frozen = _step(model, batch, 1)
    _, four, m4, _ = _step(model, batch, 4)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
    np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-4)
    assert int(one.step) == 1 and int(one.skipped) == 0
    # Only the text decoder has optimizer state; the towers are not in the trainable tree at all.
    paths = {p[0] for p, _ in nnx.to_flat_state(one.params)}
    assert paths == {"model", "lm_head"}
    assert {p[0] for p, _ in nnx.to_flat_state(frozen)} == {"visual", "audio_tower"}


def test_non_finite_gradient_skips_the_update(setup):
    model, out, seqs, adv = setup
    bad = GRPOBatch(seqs, adv.at[0].set(jnp.nan), old_logp=None, ref_logp=None)
    before, after, metrics, _ = _step(model, bad, 2)
    assert int(after.skipped) == 1 and int(after.step) == 0
    assert float(metrics["update_skipped"]) == 1.0
    for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(after.params)):
        np.testing.assert_array_equal(a, b)


def test_positive_advantage_raises_that_completion_probability(setup):
    model, out, seqs, _ = setup
    adv = jnp.asarray([1.0] + [-1.0 / 7] * 7, jnp.float32)
    batch = GRPOBatch(seqs, adv, old_logp=None, ref_logp=None)
    before, after, _, frozen = _step(model, batch, 2)
    graphdef, _, _ = nnx.split(model, trainable_filter(False), ...)
    lp = lambda params: completion_logprobs(nnx.merge(graphdef, params, frozen), seqs)[0]  # noqa: E731
    mask = np.asarray(seqs.completion_mask[0])
    gain = (np.asarray(lp(after.params))[0] - np.asarray(lp(before.params))[0])[mask].sum()
    assert gain > 0
