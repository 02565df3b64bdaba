"""The train step: accumulation equals one big batch, frozen towers, non-finite skips, on-policy log-probs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omni_jax.grpo import loss as L
from omni_jax.grpo.logprobs import Sequences, completion_logprobs
from omni_jax.grpo.step import GRPOBatch, StepConfig, TrainState, _split_micro, build_train_step, jit_logprob_fn, \
    make_optimizer, trainable_filter
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
    graphdef, params, frozen = nnx.split(model, trainable_filter(), ...)
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
    # Adam's first update is about lr·sign(g) (lr 1e-2): an accumulation bug moves parameters by
    # ~1e-2; float reordering moves an element whose gradient is ~0 by a little, hence atol 1e-4.
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-4)
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
    graphdef, _, _ = nnx.split(model, trainable_filter(), ...)
    lp = lambda params: completion_logprobs(nnx.merge(graphdef, params, frozen), seqs)[0]  # noqa: E731
    mask = np.asarray(seqs.completion_mask[0])
    gain = (np.asarray(lp(after.params))[0] - np.asarray(lp(before.params))[0])[mask].sum()
    assert gain > 0


def test_logprob_fn_in_row_slices_equals_the_whole_batch(setup):
    model, out, seqs, _ = setup
    graphdef, params, frozen = nnx.split(model, trainable_filter(), ...)
    whole = completion_logprobs(model, seqs, temperature=1.0, logits_chunk=4)[0]
    cfg = StepConfig(loss=L.LossConfig(), grad_accum=4, total_steps=1, temperature=1.0, logits_chunk=4)
    sliced = jit_logprob_fn(graphdef, cfg)(params, frozen, seqs)
    np.testing.assert_allclose(np.asarray(sliced), np.asarray(whole), atol=1e-5)


def test_micro_batches_take_strided_rows():
    # Row r goes to micro-batch r % A: with rows sharded in contiguous runs over devices, every
    # micro-batch then holds the same number of rows from each device.
    x = jnp.arange(12).reshape(6, 2)
    np.testing.assert_array_equal(_split_micro(x, 3)[:, :, 0], [[0, 6], [2, 8], [4, 10]])
    positions = jnp.arange(3 * 6).reshape(3, 6)  # [3, N] positions: rows on axis 1
    np.testing.assert_array_equal(_split_micro(positions, 3, axis=1)[1], [[1, 4], [7, 10], [13, 16]])


INIT_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from omni_jax.grpo.step import init_opt_state, make_optimizer
mesh = Mesh(np.array(jax.devices()), ("fsdp",))
params = {"w": jax.device_put(jnp.ones((8, 16)), NamedSharding(mesh, P("fsdp"))),
          "b": jax.device_put(jnp.ones((16,)), NamedSharding(mesh, P()))}
opt = make_optimizer(learning_rate=1e-3, total_steps=10)
state = init_opt_state(opt, params)
adam = state[1][0]
assert adam.mu["w"].sharding.spec == P("fsdp") and adam.nu["w"].sharding.spec == P("fsdp")
assert adam.mu["b"].sharding.spec == P() and len(adam.count.sharding.device_set) == 4
"""


def test_optimizer_state_is_born_sharded_like_the_parameters():
    import os
    import pathlib
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    root = pathlib.Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", INIT_SCRIPT], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    # (A plain jit(optimizer.init) leaves every moment on one device: jax 0.10.2 on this mesh.)
    assert proc.returncode == 0, proc.stderr[-2000:]
