"""GRPO loss options against a NumPy reference: values and gradients w.r.t. the policy log-probs."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_jax.grpo import loss as L


def _np_reference(cfg, logp, old, ref, adv, mask, beta):
    """Loss and d loss / d logp, written out by hand."""
    a = adv[:, None]
    ratio = np.exp(logp - old)
    lo, hi = 1 - cfg.epsilon_low, 1 + cfg.epsilon_high
    clipped = np.clip(ratio, lo, hi)
    unclipped_term, clipped_term = ratio * a, clipped * a
    use_unclipped = unclipped_term <= clipped_term
    pg = -np.minimum(unclipped_term, clipped_term)
    # d pg / d logp: the min picks one branch; the clipped branch has zero gradient when clipping is active.
    clip_active = (ratio < lo) | (ratio > hi)
    d_pg = np.where(use_unclipped, -ratio * a, np.where(clip_active, 0.0, -ratio * a))
    if cfg.kl_estimator == "k3":
        d = ref - logp
        kl, d_kl = np.exp(d) - d - 1, -np.exp(d) + 1
    else:
        kl, d_kl = logp - ref, np.ones_like(logp)
    tok, d_tok = pg + beta * kl, d_pg + beta * d_kl
    m = mask.astype(np.float64)
    n, mlen = logp.shape
    if cfg.aggregation == "seq-mean-token-mean":
        w = m / np.maximum(m.sum(1, keepdims=True), 1) / n
    elif cfg.aggregation == "token-mean":
        w = m / m.sum()
    else:
        w = m / (n * mlen)
    return (tok * w).sum(), d_tok * w


CASES = list(itertools.product(L.AGGREGATIONS, L.KL_ESTIMATORS, [(0.2, 0.2), (0.2, 0.28)], [0.0, 0.04]))


@pytest.mark.parametrize("aggregation,kl,eps,beta", CASES)
def test_loss_and_gradient_match_numpy(aggregation, kl, eps, beta):
    cfg = L.LossConfig(epsilon_low=eps[0], epsilon_high=eps[1], beta=beta, kl_estimator=kl, aggregation=aggregation)
    rng = np.random.default_rng(hash((aggregation, kl, eps, beta)) % 2**32)
    n, m = 6, 9
    logp = rng.normal(-2, 0.5, size=(n, m))
    old = logp + rng.normal(0, 0.3, size=(n, m))  # ratios on both sides of the clip range
    ref = logp + rng.normal(0, 0.3, size=(n, m))
    adv = rng.normal(size=n)
    mask = rng.random((n, m)) < 0.8
    mask[0] = False  # an all-masked row must not divide by zero
    norm = L.Normalisers(float(n), float(mask.sum()), float(m))

    def f(lp):
        return L.grpo_loss(cfg, lp, jnp.asarray(old), jnp.asarray(ref), jnp.asarray(adv), jnp.asarray(mask), norm,
                           jnp.float32(beta))[0]

    value, grad = jax.value_and_grad(f)(jnp.asarray(logp, jnp.float32))
    ref_value, ref_grad = _np_reference(cfg, logp, old, ref, adv, mask, beta)
    np.testing.assert_allclose(value, ref_value, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=2e-4, atol=1e-7)


def test_micro_batch_losses_sum_to_the_batch_loss():
    rng = np.random.default_rng(1)
    n, m = 8, 5
    logp, old, ref = (jnp.asarray(rng.normal(-1, 0.3, (n, m)), jnp.float32) for _ in range(3))
    adv = jnp.asarray(rng.normal(size=n), jnp.float32)
    mask = jnp.asarray(rng.random((n, m)) < 0.7)
    for agg in L.AGGREGATIONS:
        cfg = L.LossConfig(aggregation=agg)
        norm = L.Normalisers(float(n), float(mask.sum()), float(m))
        full = L.grpo_loss(cfg, logp, old, ref, adv, mask, norm, 0.04)[0]
        parts = sum(L.grpo_loss(cfg, logp[i:i + 2], old[i:i + 2], ref[i:i + 2], adv[i:i + 2], mask[i:i + 2], norm,
                                0.04)[0] for i in range(0, n, 2))
        np.testing.assert_allclose(parts, full, rtol=1e-6)


def test_on_policy_ratio_is_one_and_gradient_is_minus_advantage():
    # num_iterations = 1: old = logp detached, so d loss / d logp = -A per token (times the weights).
    logp = jnp.asarray([[-1.0, -2.0], [-0.5, -0.1]])
    adv = jnp.asarray([2.0, -1.0])
    mask = jnp.ones((2, 2), bool)
    cfg = L.LossConfig(beta=0.0, aggregation="token-mean")
    norm = L.Normalisers(2.0, 4.0, 2.0)
    g = jax.grad(lambda lp: L.grpo_loss(cfg, lp, jax.lax.stop_gradient(lp), None, adv, mask, norm, 0.0)[0])(logp)
    np.testing.assert_allclose(g, [[-0.5, -0.5], [0.25, 0.25]])


def test_beta_decay_schedule():
    cfg = L.LossConfig(beta=0.04, beta_decay=True)
    np.testing.assert_allclose([L.beta_at(cfg, s, 100) for s in (0, 25, 50, 80)], [0.04, 0.025, 0.01, 0.01], rtol=1e-6)
    assert float(L.beta_at(L.LossConfig(beta=0.04), 80, 100)) == pytest.approx(0.04)


def test_bad_loss_config():
    with pytest.raises(ValueError, match="aggregation"):
        L.LossConfig(aggregation="sum")
    with pytest.raises(ValueError, match="kl_estimator"):
        L.LossConfig(kl_estimator="k2")
