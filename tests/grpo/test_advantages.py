import jax.numpy as jnp
import numpy as np
import pytest

from omni_jax.grpo.advantages import group_advantages


def _reference(r, g, scale, eps=1e-4):
    r = np.asarray(r, np.float64).reshape(-1, g)
    out = r - r.mean(1, keepdims=True)
    if scale == "group":
        out = out / (r.std(1, ddof=1, keepdims=True) + eps)
    elif scale == "batch":
        out = out / (r.std(ddof=1) + eps)
    return out.reshape(-1)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_matches_numpy_reference(scale):
    r = np.random.default_rng(0).normal(size=24).astype(np.float32)
    np.testing.assert_allclose(group_advantages(jnp.asarray(r), 4, scale), _reference(r, 4, scale), rtol=1e-5, atol=1e-6)


def test_hand_checked_group():
    # Group (1, 2, 3, 6): mean 3, so the plan's plain advantage is (-2, -1, 0, 3).
    a = group_advantages(jnp.asarray([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0]), 4, "none")
    np.testing.assert_allclose(a, [-2, -1, 0, 3, 0, 0, 0, 0])
    # An all-equal group gets zero advantage even with std scaling (no division blow-up).
    a = group_advantages(jnp.asarray([5.0] * 4), 4, "group")
    np.testing.assert_allclose(a, 0.0)


def test_bad_config():
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(jnp.zeros(4), 2, "std")
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(jnp.zeros(4), 3, "none")
