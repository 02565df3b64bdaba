"""Hand-written backward passes (layers.swiglu, linear, linear_bias) equal autodiff and a NumPy chain rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_jax.model.layers import Dense, linear, linear_bias, swiglu


def _plain(x, wg, wu, wd):
    return (jax.nn.silu(x @ wg) * (x @ wu)) @ wd


def _numpy_grads(x, wg, wu, wd, dy):
    """Gradients of sum(y * dy) by the chain rule in float64."""
    x, wg, wu, wd, dy = (np.asarray(a, np.float64) for a in (x, wg, wu, wd, dy))
    g, u = x @ wg, x @ wu
    sig = 1 / (1 + np.exp(-g))
    h = g * sig * u
    dh = dy @ wd.T
    dg = dh * u * (sig + g * sig * (1 - sig))
    du = dh * g * sig
    t = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
    return dg @ wg.T + du @ wu.T, t(x).T @ t(dg), t(x).T @ t(du), t(h).T @ t(dy)


def _inputs(dtype, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(3, 5, 16), (16, 24), (16, 24), (24, 16), (3, 5, 16)]
    return [jnp.asarray(rng.standard_normal(s) * (0.5 if len(s) == 2 else 1.0), dtype) for s in shapes]


def test_values_and_gradients_equal_autodiff_and_numpy():
    x, wg, wu, wd, dy = _inputs(jnp.float32)
    np.testing.assert_allclose(swiglu(x, wg, wu, wd), _plain(x, wg, wu, wd), rtol=1e-6, atol=1e-6)
    ours = jax.vjp(swiglu, x, wg, wu, wd)[1](dy)
    auto = jax.vjp(_plain, x, wg, wu, wd)[1](dy)
    ref = _numpy_grads(x, wg, wu, wd, dy)
    for name, a, b, r in zip(("x", "w_gate", "w_up", "w_down"), ours, auto, ref):
        assert a.shape == b.shape == r.shape, name
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("remat", [False, True])
def test_bfloat16_and_remat(remat):
    x, wg, wu, wd, dy = _inputs(jnp.bfloat16, seed=1)
    f = jax.checkpoint(swiglu) if remat else swiglu
    ours = jax.vjp(f, x, wg, wu, wd)[1](dy)
    ref = _numpy_grads(x, wg, wu, wd, dy)
    for a, r in zip(ours, ref):
        assert a.dtype == jnp.bfloat16
        scale = np.abs(r).max()
        assert np.abs(np.asarray(a, np.float64) - r).max() <= 0.03 * scale


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 0.03)])
def test_linear_and_bias_gradients(dtype, tol):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, 7, 12)), dtype)
    w = jnp.asarray(rng.standard_normal((12, 5)) * 0.3, dtype)
    b = jnp.asarray(rng.standard_normal(5), dtype)
    dy = jnp.asarray(rng.standard_normal((2, 7, 5)), dtype)
    x64, w64, dy64 = (np.asarray(a, np.float64) for a in (x, w, dy))
    want = {"x": dy64 @ w64.T, "w": x64.reshape(-1, 12).T @ dy64.reshape(-1, 5), "b": dy64.sum((0, 1))}
    y, vjp = jax.vjp(linear_bias, x, w, b)
    got = dict(zip("xwb", vjp(dy)))
    y2, vjp2 = jax.vjp(linear, x, w)
    got2 = dict(zip("xw", vjp2(dy)))
    auto = dict(zip("xwb", jax.vjp(lambda x, w, b: x @ w + b, x, w, b)[1](dy)))
    np.testing.assert_allclose(np.asarray(y, np.float64), x64 @ w64 + np.asarray(b, np.float64), rtol=tol, atol=tol)
    for name, g in [*got.items(), *(("2" + k, v) for k, v in got2.items())]:
        key = name[-1]
        assert g.dtype == dtype and g.shape == want[key].shape, name
        scale = max(np.abs(want[key]).max(), 1.0)
        assert np.abs(np.asarray(g, np.float64) - want[key]).max() <= tol * scale, name
        assert np.abs(np.asarray(g, np.float64) - np.asarray(auto[key], np.float64)).max() <= tol * scale, name


def test_dense_uses_the_kernel_and_bias():
    from flax import nnx

    layer = Dense(4, 3, ("embed", "mlp"), bias=True, rngs=nnx.Rngs(0))
    layer.bias[...] = jnp.arange(3.0)
    x = jnp.ones((2, 4))
    np.testing.assert_allclose(layer(x), x @ layer.kernel[...] + jnp.arange(3.0), rtol=1e-6)
