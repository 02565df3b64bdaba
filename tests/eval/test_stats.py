import math

import numpy as np
import pytest

from omni_jax.eval import stats


def test_bootstrap_ci_of_a_known_proportion():
    # 600 hits in 1000: the normal-approximation 95 % interval is .6 ± 1.96·sqrt(.6·.4/1000) = ±.0304
    values = np.r_[np.ones(600), np.zeros(400)]
    mean, lo, hi = stats.bootstrap_ci(values, n_boot=4000, seed=3)
    assert mean == 0.6
    assert lo == pytest.approx(0.6 - 0.0304, abs=0.006)
    assert hi == pytest.approx(0.6 + 0.0304, abs=0.006)


def test_bootstrap_is_seeded_and_level_widens():
    values = np.arange(50) % 7
    assert stats.bootstrap_ci(values, seed=5) == stats.bootstrap_ci(values, seed=5)
    assert stats.bootstrap_ci(values, seed=5) != stats.bootstrap_ci(values, seed=6)
    _, lo95, hi95 = stats.bootstrap_ci(values, level=0.95)
    _, lo50, hi50 = stats.bootstrap_ci(values, level=0.5)
    assert lo95 < lo50 < hi50 < hi95


def test_bootstrap_means_match_a_loop_with_the_same_draws():
    values = np.array([0.0, 1.0, 1.0, 0.5, 0.25])
    means = stats.bootstrap_means(values, n_boot=20, seed=9)
    draws = np.random.default_rng(9).integers(0, 5, size=(20, 5))
    assert np.allclose(means, [values[row].mean() for row in draws])


def test_bootstrap_blocks_give_the_same_resamples(monkeypatch):
    values = np.linspace(0, 1, 40)
    whole = stats.bootstrap_means(values, n_boot=30, seed=2)
    monkeypatch.setattr(stats, "_BLOCK_ENTRIES", 40 * 7)  # 7 resamples per block
    assert np.array_equal(stats.bootstrap_means(values, n_boot=30, seed=2), whole)


def test_degenerate_samples():
    assert all(math.isnan(v) for v in stats.bootstrap_ci([]))
    assert stats.bootstrap_ci([0.75]) == (0.75, 0.75, 0.75)
    assert stats.bootstrap_ci([1, 1, 1]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_ci([1, 2], level=95)


def test_paired_difference_is_b_minus_a_and_tighter_than_unpaired():
    rng = np.random.default_rng(0)
    a = (rng.random(400) < 0.5).astype(float)
    b = a.copy()
    flip = np.flatnonzero(a == 0)[:40]  # b fixes 40 questions a got wrong: +0.1 exactly
    b[flip] = 1.0
    mean, lo, hi = stats.paired_diff_ci(a, b, seed=1)
    assert mean == pytest.approx(0.1)
    assert 0.0 < lo < 0.1 < hi
    _, alo, ahi = stats.bootstrap_ci(a, seed=1)
    assert hi - lo < 0.7 * (ahi - alo)  # tighter than even one model's own interval
    assert stats.paired_diff_ci(b, a, seed=1)[0] == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="aligned"):
        stats.paired_diff_ci([1, 0], [1])
