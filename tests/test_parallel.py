"""`parallel.Layout`: a mesh and its logical-axis rules as one value."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from omni_jax import parallel

# Specs only read the mesh's axis sizes: a 2 × 4 × 2 mesh without 16 devices.
BIG = SimpleNamespace(shape={"data": 2, "fsdp": 4, "tp": 2})


def test_rules_default_to_the_defaults_and_a_config_rule_changes_only_its_axis():
    default = parallel.Layout(BIG)
    assert default.rules == parallel.DEFAULT_RULES
    assert default.spec(("embed", "kv_heads"), (8, 4)) == P("fsdp")  # kv_heads replicated by default
    custom = parallel.Layout(BIG, {**dict(parallel.DEFAULT_RULES), "kv_heads": "tp"})
    assert custom.spec(("embed", "kv_heads"), (8, 4)) == P("fsdp", "tp")
    assert custom.spec(("embed", "kv_heads"), (8, 3)) == P("fsdp")  # tp=2 does not divide 3 heads
    assert default.batch_shards == 8 and custom.shards("kv_heads") == 2 and default.shards("kv_heads") == 1


def test_rules_given_as_lists_or_a_dict_are_one_hashable_layout():
    mesh = parallel.make_mesh({"fsdp": 1}, devices=jax.devices()[:1])
    as_dict = parallel.Layout(mesh, {name: list(axes) if isinstance(axes, tuple) else axes
                                     for name, axes in parallel.DEFAULT_RULES})
    assert as_dict == parallel.Layout(mesh) and hash(as_dict) == hash(parallel.Layout(mesh))
    assert dict(as_dict.rules)["batch"] == ("data", "fsdp")


def test_as_layout_reads_a_bare_mesh_with_the_default_rules():
    mesh = parallel.make_mesh({"fsdp": 1}, devices=jax.devices()[:1])
    assert parallel.as_layout(mesh) == parallel.Layout(mesh, parallel.DEFAULT_RULES)
    custom = parallel.Layout(mesh, {**dict(parallel.DEFAULT_RULES), "vocab": None})
    assert parallel.as_layout(custom) is custom and parallel.as_layout(None) is None
    with pytest.raises(TypeError, match="Layout"):
        parallel.as_layout({"fsdp": 1})


def test_activate_sets_the_layout_constrain_reads_innermost_first():
    mesh = parallel.make_mesh({"fsdp": 1}, devices=jax.devices()[:1])
    outer, inner = parallel.Layout(mesh), parallel.Layout(mesh, {**dict(parallel.DEFAULT_RULES), "batch": None})
    x = jnp.ones((4, 2))
    assert parallel.current_layout() is None and parallel.constrain(x, ("batch", None)) is x
    with outer.activate() as active:
        assert active is outer and parallel.current_layout() is outer
        with inner.activate():
            assert parallel.current_layout() is inner
        assert parallel.current_layout() is outer
        y = jax.jit(lambda v: parallel.constrain(v * 2, ("batch", None)))(x)
    assert parallel.current_layout() is None
    np.testing.assert_array_equal(np.asarray(y), 2 * np.ones((4, 2)))


def test_place_commits_every_array_to_the_mesh_keeping_shardings_already_on_it():
    mesh = parallel.make_mesh({"fsdp": 1}, devices=jax.devices()[:1])
    layout = parallel.Layout(mesh)
    kept = jax.device_put(jnp.ones((4,)), NamedSharding(mesh, P("fsdp")))
    placed = layout.place({"plain": np.zeros((2, 3), np.float32), "kept": kept})
    assert placed["plain"].sharding == layout.replicated
    assert placed["kept"].sharding == kept.sharding
    assert layout.sharding(("embed",), (4,)).mesh == mesh
