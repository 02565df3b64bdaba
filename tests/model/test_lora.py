"""LoRA adapters: forward = the merged dense forward, B = 0 at init, gradients reach adapters only,
adapters follow their base weight's logical axes, dropout only when keys are seeded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omni_jax.model import lora
from omni_jax.model.config import from_hf_dict
from omni_jax.model.inputs import prepare_inputs
from omni_jax.model.thinker import Thinker
from tests.helpers.tiny_hf import thinker_config_dict

TARGETS = ("q_proj", "v_proj", "o_proj", "gate_proj", "down_proj")


def _model(variant="a", seed=0):
    cfg = from_hf_dict(thinker_config_dict(variant), dtype="float32", param_dtype="float32")
    return Thinker(cfg, rngs=nnx.Rngs(seed))


def _inputs(cfg, batch=2, length=9, seed=0):
    ids = np.random.default_rng(seed).integers(1, 149, (batch, length))
    mask = np.ones((batch, length), np.int32)
    mask[1, :3] = 0  # left padding
    return prepare_inputs(cfg, input_ids=ids, attention_mask=mask)


def _randomise_b(model, seed=1):
    """B = 0 at init makes every adapter a no-op; give B values so the adapters matter."""
    params = lora.adapter_params(model)
    rng = np.random.default_rng(seed)
    lora.set_adapter_params(model, {n: {"a": ab["a"], "b": 0.05 * rng.standard_normal(ab["b"].shape)}
                                    for n, ab in params.items()})


@jax.jit
def _forward(graphdef, state, inputs):
    return nnx.merge(graphdef, state).forward(inputs)


def _logits(model, inputs):
    return np.asarray(_forward(*nnx.split(model), inputs))


def test_zero_b_at_init_then_forward_equals_merged_dense():
    model = _model()
    inputs = _inputs(model.cfg)
    base = _logits(model, inputs)
    lora.add_adapters(model, lora.LoRAConfig(rank=4, alpha=8, targets=TARGETS), seed=3)
    assert lora.has_adapters(model)
    np.testing.assert_array_equal(_logits(model, inputs), base)  # B = 0: exactly the base model
    _randomise_b(model)
    with_adapters = _logits(model, inputs)
    assert np.abs(with_adapters - base).max() > 1e-3
    merged = lora.merged(model)
    assert not lora.has_adapters(merged) and lora.has_adapters(model)
    np.testing.assert_allclose(_logits(merged, inputs), with_adapters, rtol=1e-5, atol=1e-5)
    # The base with adapters off (the GRPO reference) is the original model, without a copy.
    graphdef = lora.base_graphdef(model)
    np.testing.assert_array_equal(np.asarray(_forward(graphdef, lora.base_state(nnx.state(model)), inputs)), base)


def test_adapter_shapes_axes_and_config_round_trip():
    model = _model()
    cfg = lora.LoRAConfig(rank=4, alpha=16, targets=TARGETS)
    lora.add_adapters(model, cfg)
    attn = model.model.layers.self_attn
    assert attn.k_proj.lora is None
    layers, d = 2, 32
    q = attn.q_proj.lora
    assert q.a.shape == (layers, d, 4) and q.b.shape == (layers, 4, attn.q_proj.kernel.shape[-1])
    assert q.a.get_metadata()["out_sharding"] == ("layers", "embed", None)
    assert q.b.get_metadata()["out_sharding"] == ("layers", None, "heads")
    down = model.model.layers.mlp.down_proj.lora
    assert down.a.get_metadata()["out_sharding"] == ("layers", "mlp", None)
    assert np.all(np.asarray(q.b[...]) == 0) and np.abs(np.asarray(q.a[...])).max() <= 1 / np.sqrt(d)
    assert np.asarray(q.a[...]).std() > 0
    assert lora.adapter_config(model) == cfg
    assert lora.LoRAConfig.from_dict(cfg.to_dict()) == cfg
    # in + out of q 32→32, v 32→16 (2 kv heads × 8), o 32→32, gate 32→48, down 48→32; rank 4.
    expected = layers * 4 * ((32 + 32) + (32 + 16) + (32 + 32) + (32 + 48) + (48 + 32))
    assert lora.count(model) == expected
    with pytest.raises(ValueError, match="lora.targets"):
        lora.LoRAConfig(targets=("qkv",))


def test_gradients_reach_adapters_only():
    model = _model("b")
    lora.add_adapters(model, lora.LoRAConfig(rank=2, alpha=4, targets=tuple(lora.PROJECTIONS)))
    _randomise_b(model)
    inputs = _inputs(model.cfg)
    graphdef, params, frozen = nnx.split(model, lora.TRAINABLE, ...)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params.to_pure_dict())[0]]
    assert paths and all("'lora'" in p for p in paths)
    assert len(paths) == 2 * len(lora.PROJECTIONS)

    def loss(params, frozen):
        return jnp.mean(jnp.square(nnx.merge(graphdef, params, frozen).forward(inputs)))

    grads = jax.jit(jax.grad(loss))(params, frozen)
    for path, g in jax.tree_util.tree_flatten_with_path(grads.to_pure_dict())[0]:
        assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0, jax.tree_util.keystr(path)


def test_dropout_only_with_seeded_keys():
    model = _model()
    lora.add_adapters(model, lora.LoRAConfig(rank=4, alpha=8, dropout=0.5, targets=("q_proj",)))
    _randomise_b(model)
    inputs = _inputs(model.cfg)
    ref = _model()
    lora.add_adapters(ref, lora.LoRAConfig(rank=4, alpha=8, targets=("q_proj",)))
    _randomise_b(ref)
    plain = _logits(ref, inputs)
    np.testing.assert_allclose(_logits(model, inputs), plain, rtol=1e-6, atol=1e-6)  # keys zero: off

    @jax.jit
    def seeded(graphdef, state, key):
        m = nnx.merge(graphdef, state)
        lora.seed_dropout(m, key)
        return m.forward(inputs)

    a = np.asarray(seeded(*nnx.split(model), jax.random.key(0)))
    b = np.asarray(seeded(*nnx.split(model), jax.random.key(1)))
    assert np.abs(a - plain).max() > 1e-4 and np.abs(a - b).max() > 1e-4


def test_dropout_adds_no_branch_to_the_step():
    # Dropout on or off is settled while tracing: a `cond` on the keys put collectives inside
    # branches of the sharded train step, which XLA:CPU deadlocked on once the step was loaded
    # from the persistent compilation cache.
    inputs = _inputs(_model().cfg)

    def conds(dropout, seeded):
        model = _model()
        lora.add_adapters(model, lora.LoRAConfig(rank=4, alpha=8, dropout=dropout, targets=TARGETS))

        def forward(graphdef, state):
            m = nnx.merge(graphdef, state)
            if seeded:
                lora.seed_dropout(m, jax.random.key(0))
            return m.forward(inputs)

        return str(jax.make_jaxpr(forward, static_argnums=0)(*nnx.split(model))).count(" cond[")

    without = conds(0.0, seeded=False)
    assert conds(0.5, seeded=True) == conds(0.5, seeded=False) == without
