"""The jitted monotone DP against a brute-force search over every non-decreasing assignment."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from omni_jax.timestamps.match import margins, match, objective


def brute_force(sim: np.ndarray, lambda_smooth: float) -> float:
    e, f = sim.shape
    best = -np.inf
    for frames in itertools.combinations_with_replacement(range(f), e):  # every non-decreasing tuple
        best = max(best, objective(sim, frames, lambda_smooth))
    return best


@settings(max_examples=60, deadline=None)
@given(e=st.integers(1, 4), f=st.integers(1, 6), lam=st.sampled_from([0.0, 0.05, 0.3, 2.0]),
       seed=st.integers(0, 2**31 - 1), quantised=st.booleans())
def test_dp_equals_brute_force(e, f, lam, seed, quantised):
    rng = np.random.default_rng(seed)
    sim = rng.uniform(-1, 1, (e, f)).astype(np.float32)
    if quantised:  # many ties
        sim = np.round(sim * 2) / 2
    frames = match(sim, lam)
    assert frames.shape == (e,)
    assert np.all(np.diff(frames) >= 0) and frames.min() >= 0 and frames.max() < f
    np.testing.assert_allclose(objective(sim, frames, lam), brute_force(sim, lam), atol=1e-5)


def test_dp_keeps_order_where_argmax_does_not():
    sim = np.array([[0.1, 0.2, 0.9, 0.1], [0.8, 0.1, 0.1, 0.7], [0.1, 0.1, 0.2, 0.9]], np.float32)
    assert match(sim, method="argmax").tolist() == [2, 0, 3]
    assert match(sim, 0.0).tolist() == [2, 3, 3]
    # A large jump penalty holds every event on one frame.
    assert len(set(match(sim, 10.0).tolist())) == 1


def test_margins_to_runner_up():
    sim = np.array([[0.1, 0.5, 0.3], [0.9, 0.2, 0.4]], np.float32)
    np.testing.assert_allclose(margins(sim, [1, 2]), [0.2, -0.5])


def test_no_events_and_no_frames():
    assert match(np.zeros((0, 5), np.float32)).shape == (0,)
    import pytest

    with pytest.raises(ValueError, match="no frames"):
        match(np.zeros((2, 0), np.float32))
