"""One prompt pass shared by a question's candidates equals a prompt pass per row: log-probs, gradients, steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omni_jax.grpo import loss as L
from omni_jax.grpo.logprobs import Sequences, completion_logprobs
from omni_jax.grpo.step import GRPOBatch, StepConfig, TrainState, _split_micro, build_logprob_fn, build_train_step, \
    make_optimizer, prefix_share, trainable_filter
from omni_jax.model import Thinker, from_hf_dict, prepare_inputs
from tests.helpers import tiny_hf as th

G, M = 4, 7


def _sequences(cfg, model, seed=0):
    """Two left-padded prompts of different lengths (one with a video) × G random completions.

    Built without sampling (faster to compile); completions end at random lengths.
    """
    rng = np.random.default_rng(seed)
    gv = [(2, 4, 4)]
    long = th.expand("describe <|vision_bos|><|VIDEO|><|vision_eos|> the people", grids_video=gv)
    short = th.expand("who smiles?")
    ids, mask = th.left_pad([long, short])
    inputs = prepare_inputs(cfg, input_ids=ids, attention_mask=mask, pixel_values_videos=th.pixels(rng, gv),
                            video_grid_thw=np.array(gv), video_second_per_grid=np.array([1.0]))
    n = 2 * G
    lengths = rng.integers(1, M + 1, size=n)
    pos = jnp.asarray(inputs.position_ids)
    nxt = jnp.where(jnp.asarray(inputs.attention_mask)[None], pos, -1).max(axis=(0, 2)) + 1
    graphdef, state = nnx.split(model)
    embeds = jax.jit(lambda st: nnx.merge(graphdef, st).embed(inputs))(state)
    return Sequences(prompt_embeds=jnp.repeat(embeds, G, axis=0), prompt_positions=jnp.repeat(pos, G, axis=1),
                     prompt_mask=jnp.repeat(jnp.asarray(inputs.attention_mask), G, axis=0),
                     completions=jnp.asarray(rng.integers(0, cfg.text.vocab_size, size=(n, M)), jnp.int32),
                     completion_mask=jnp.asarray(np.arange(M)[None] < lengths[:, None]),
                     next_position=jnp.repeat(nxt, G))


def _model(**options):
    cfg = from_hf_dict(th.thinker_config_dict("a"), **options)
    return cfg, Thinker(cfg, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def setup():
    cfg, model = _model()
    seqs = _sequences(cfg, model)
    assert not bool(seqs.prompt_mask.all())  # the short prompt is left padded
    return model, seqs


def _logp_and_grads(model, seqs, run):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    weights = jnp.asarray(np.random.default_rng(3).normal(size=seqs.completions.shape), jnp.float32)

    @jax.jit
    def f(params):
        logp, ent = completion_logprobs(nnx.merge(graphdef, params, rest), seqs, logits_chunk=4, prefix_share=run)
        return jnp.sum(logp * weights * seqs.completion_mask) + 0.1 * jnp.sum(ent), (logp, ent)

    (_, (logp, ent)), grads = jax.value_and_grad(f, has_aux=True)(params)
    return np.asarray(logp), np.asarray(ent), jax.tree.map(np.asarray, grads)


@pytest.mark.parametrize("options,runs", [
    (dict(layer_loop="unrolled"), (2, G)),  # as configs/default.py runs on CPU
    (dict(remat="full", attention_query_chunk=8, attention_key_chunk=8), (G,)),  # as stage 4: scan, remat, flash
])
def test_shared_prompt_pass_equals_one_per_row(setup, options, runs):
    _, seqs = setup  # the same weights: options change only how the model computes
    _, model = _model(**options)
    ref_logp, ref_ent, ref_grads = _logp_and_grads(model, seqs, 1)
    for run in runs:
        logp, ent, grads = _logp_and_grads(model, seqs, run)
        np.testing.assert_allclose(logp, ref_logp, atol=2e-5)
        np.testing.assert_allclose(ent, ref_ent, atol=2e-5)
        flat, flat_ref = jax.tree.leaves(grads), jax.tree.leaves(ref_grads)
        assert len(flat) == len(flat_ref) and any(np.abs(g).max() > 0 for g in flat_ref)
        for g, r in zip(flat, flat_ref):
            np.testing.assert_allclose(g, r, atol=2e-5, rtol=1e-4)


def test_sharing_rows_with_different_prompts_changes_the_result(setup):
    # The check above can fail: rows 3 and 4 belong to different prompts, so a run of 8 rows
    # would give row 4 the first prompt's keys.
    model, seqs = setup
    ref = np.asarray(completion_logprobs(model, seqs, prefix_share=1)[0])
    wrong = np.asarray(completion_logprobs(model, seqs, prefix_share=2 * G)[0])
    mask = np.asarray(seqs.completion_mask)
    assert np.abs(wrong - ref)[G:][mask[G:]].max() > 1e-3
    np.testing.assert_allclose(wrong[:G], ref[:G], atol=2e-5)


def test_rows_that_do_not_split_into_runs_are_refused(setup):
    model, seqs = setup
    with pytest.raises(ValueError, match="runs of 3 rows"):
        completion_logprobs(model, seqs, prefix_share=3)


def _step(model, batch, grad_accum, run):
    graphdef, params, frozen = nnx.split(model, trainable_filter(), ...)
    opt = make_optimizer(learning_rate=1e-2, total_steps=10)
    cfg = StepConfig(loss=L.LossConfig(beta=0.04), grad_accum=grad_accum, total_steps=10, temperature=1.0,
                     logits_chunk=4, prefix_share=run)
    step = jax.jit(build_train_step(graphdef, cfg, opt))
    return step(TrainState(jnp.int32(0), params, opt.init(params), jnp.int32(0)), frozen, batch)


def test_train_step_with_a_shared_prompt_equals_the_per_row_step(setup):
    model, seqs = setup
    n = seqs.completions.shape[0]
    rng = np.random.default_rng(1)
    ref_logp = jnp.asarray(rng.normal(-2.0, 0.3, size=seqs.completions.shape), jnp.float32)
    batch = GRPOBatch(seqs, jnp.asarray(rng.normal(size=n), jnp.float32), old_logp=None, ref_logp=ref_logp)
    base, m0 = _step(model, batch, 1, 1)
    for grad_accum, run in ((2, 2),):
        new, m = _step(model, batch, grad_accum, run)
        for key in ("loss", "grad_norm", "kl", "entropy"):
            np.testing.assert_allclose(m[key], m0[key], rtol=1e-4, atol=1e-6, err_msg=key)
        for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(base.params)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-4)


def test_logprob_fn_in_micro_batches_of_shared_runs_keeps_row_order(setup):
    model, seqs = setup
    graphdef, params, frozen = nnx.split(model, trainable_filter(), ...)
    whole = np.asarray(completion_logprobs(model, seqs, logits_chunk=4)[0])
    for micro, run in ((2, 2), (2, G), (4, 2)):
        got = jax.jit(build_logprob_fn(graphdef, 1.0, 4, micro, run))(params, frozen, seqs)
        np.testing.assert_allclose(np.asarray(got), whole, atol=2e-5)


def test_micro_batches_keep_runs_of_rows_together():
    x = jnp.arange(16)
    # Runs of 2: run j → micro-batch j % 2. Micro 0 holds runs 0, 2, 4, 6.
    np.testing.assert_array_equal(_split_micro(x, 2, block=2),
                                  [[0, 1, 4, 5, 8, 9, 12, 13], [2, 3, 6, 7, 10, 11, 14, 15]])
    positions = jnp.arange(3 * 8).reshape(3, 8)
    np.testing.assert_array_equal(_split_micro(positions, 2, axis=1, block=2)[1], [[2, 3, 6, 7], [10, 11, 14, 15],
                                                                                   [18, 19, 22, 23]])
    with pytest.raises(ValueError, match="whole 3-row runs"):
        _split_micro(x, 2, block=3)


@pytest.mark.parametrize("generations,rows,accum,shards,expected", [
    (8, 64, 1, 1, 8),  # one device: a whole group per prompt pass
    (8, 64, 1, 2, 8),  # 32 rows per device: 4 groups each
    (8, 64, 8, 4, 2),  # stage 4 on v5p-8: 2 rows of a micro-batch per chip
    (8, 64, 4, 16, 1),  # one row per chip: nothing to share
    (6, 48, 1, 4, 6),  # 12 rows per device: 2 groups of 6
    (6, 48, 2, 4, 6),
    (4, 32, 1, 16, 2),  # groups straddle devices: share the halves
])
def test_prefix_share_keeps_runs_on_one_device(generations, rows, accum, shards, expected):
    s = prefix_share(generations, rows, accum, shards)
    assert s == expected
    per_device = rows // (accum * shards)
    assert generations % s == 0 and per_device % s == 0
