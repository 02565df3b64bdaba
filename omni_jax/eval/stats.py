"""Bootstrap confidence intervals for benchmark means and before/after differences.

Percentile bootstrap: resample the n values with replacement `n_boot` times (seeded NumPy
generator, all resamples drawn at once in blocks), take each resample's mean, and report the
(1 − level)/2 and (1 + level)/2 quantiles of those means around the plain mean. For a before/after
comparison on the same questions, `paired_diff_ci` resamples the *questions* (the per-question
differences b − a), which is much tighter than two independent intervals when the two models
agree on most questions.

Degenerate inputs: no values → (nan, nan, nan); one value v → (v, v, v).
"""

from __future__ import annotations

import numpy as np

# Resample indices are drawn in blocks of at most this many int64 entries (~64 MiB).
_BLOCK_ENTRIES = 8_000_000


def bootstrap_means(values, *, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """float64[n_boot] means of `n_boot` resamples (with replacement) of the 1-D `values`."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("bootstrap of an empty sample")
    rng = np.random.default_rng(seed)
    rows_per_block = max(1, _BLOCK_ENTRIES // x.size)
    means = np.empty(n_boot, np.float64)
    for start in range(0, n_boot, rows_per_block):
        stop = min(n_boot, start + rows_per_block)
        means[start:stop] = x[rng.integers(0, x.size, size=(stop - start, x.size))].mean(axis=1)
    return means


def bootstrap_ci(values, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): the sample mean and its percentile-bootstrap interval at `level`."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    means = bootstrap_means(x, n_boot=n_boot, seed=seed)
    lo, hi = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return mean, float(lo), float(hi)


def paired_diff_ci(a, b, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(mean of b − a, lo, hi) over aligned samples a[i], b[i] of the same questions (a = baseline)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must be aligned: got {a.size} and {b.size} values")
    return bootstrap_ci(b - a, n_boot=n_boot, seed=seed, level=level)
