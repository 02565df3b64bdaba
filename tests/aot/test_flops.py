"""The jaxpr FLOP counter against hand counts: matmuls, convolutions, scans, conds, while loops, remat."""

import jax
import jax.numpy as jnp

from omni_jax.aot.flops import jaxpr_flops


def _flops(fn, *args, **kw):
    return jaxpr_flops(jax.make_jaxpr(fn)(*args), **kw)


def test_matmul_is_two_flops_per_multiply_add():
    a, b = jnp.ones((3, 5)), jnp.ones((5, 7))
    assert _flops(lambda a, b: a @ b, a, b) == 2 * 3 * 5 * 7
    x, w = jnp.ones((2, 4, 6, 8)), jnp.ones((6, 8, 9))  # batch dims and two contracting dims
    assert _flops(lambda x, w: jnp.einsum("abcd,cde->abe", x, w), x, w) == 2 * (2 * 4 * 9) * (6 * 8)


def test_convolution_counts_each_output_times_the_kernel_volume():
    x = jnp.ones((1, 10, 3))  # [N, W, C_in]
    k = jnp.ones((3, 3, 4))  # [W, C_in, C_out]
    fn = lambda x, k: jax.lax.conv_general_dilated(x, k, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))  # noqa: E731
    assert _flops(fn, x, k) == 2 * (1 * 10 * 4) * (3 * 3)


def test_scan_multiplies_by_its_length_and_cond_takes_the_dearer_branch():
    x, w = jnp.ones((4, 8)), jnp.ones((8, 8))

    def body(c, flag):
        c = jax.lax.cond(flag, lambda c: (c @ w) @ w, lambda c: c @ w, c)
        return c, None

    fn = lambda x: jax.lax.scan(body, x, jnp.array([True, False, True]))[0]  # noqa: E731
    assert _flops(fn, x) == 3 * (2 * 2 * 4 * 8 * 8)


def test_while_loop_counts_the_given_trip_count():
    x, w = jnp.ones((2, 3)), jnp.ones((3, 3))
    fn = lambda x: jax.lax.while_loop(lambda s: s[0] < 10, lambda s: (s[0] + 1, s[1] @ w), (0, x))[1]  # noqa: E731
    assert _flops(fn, x, while_trips=7) == 7 * 2 * 2 * 3 * 3


def test_gradient_with_remat_counts_forward_recompute_and_backward():
    x, w = jnp.ones((4, 8)), jnp.ones((8, 8))

    def loss(w):
        y, _ = jax.lax.scan(jax.checkpoint(lambda c, _: (jnp.tanh(c @ w), None)), x, None, length=5)
        return y.sum()

    one = 2 * 4 * 8 * 8
    # forward 1 + recomputed forward 1 + backward 2 (input and weight gradients) per step
    assert jaxpr_flops(jax.jit(jax.grad(loss)).trace(w).jaxpr) == 5 * 4 * one
