"""layer_loop="unrolled" (CPU) computes what the layer scan computes: logits and parameter gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omni_jax.model import Thinker, from_hf_dict
from omni_jax.model.inputs import prepare_inputs
from tests.helpers import tiny_hf as th


def _loss_and_grads(layer_loop, remat, inputs):
    cfg = from_hf_dict(th.thinker_config_dict("b"), layer_loop=layer_loop, remat=remat)
    model = Thinker(cfg, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = prepare_inputs(cfg, **inputs)

    @jax.jit
    def f(params):
        logits = nnx.merge(graphdef, params, rest).forward(x)
        return jnp.sum(jax.nn.log_softmax(logits)[..., 3] * x.attention_mask), logits

    (loss, logits), grads = jax.value_and_grad(f, has_aux=True)(params)
    return np.asarray(logits), jax.tree.map(np.asarray, grads)


@pytest.mark.parametrize("remat", ["none", "full"])
def test_unrolled_layers_equal_the_scan(remat):
    ids, mask = th.left_pad([th.expand("hello there, a few words"), th.expand("hi")])
    inputs = dict(input_ids=ids, attention_mask=mask)
    ref_logits, ref_grads = _loss_and_grads("scan", "none", inputs)
    logits, grads = _loss_and_grads("unrolled", remat, inputs)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
    flat_ref, flat = jax.tree.leaves(ref_grads), jax.tree.leaves(grads)
    assert len(flat) == len(flat_ref)
    assert any(np.abs(g).max() > 0 for g in flat_ref)
    for g, r in zip(flat, flat_ref):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-4)


def test_unknown_layer_loop_is_refused():
    with pytest.raises(ValueError, match="layer_loop must be scan|unrolled"):
        Thinker(from_hf_dict(th.thinker_config_dict("a"), layer_loop="loop"), rngs=nnx.Rngs(0))
