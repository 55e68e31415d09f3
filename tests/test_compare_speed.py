"""ragkit compare's resampling at 200,000 resamples: sign flips as random bits and one matrix product per block,
the bootstrap as counts of drawn queries times the differences (one matrix product per block), both on a grid of
exact sums.  The statistics are the old ones (checked against exact enumeration and slow one-resample-at-a-time
references within Monte Carlo error), memory is bounded by the block, and the seed reproduces the numbers."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

from ragkit.errors import ParamError
from ragkit.eval.compare import SystemResult, _bootstrap_ci, _uniform_indices, compare
from ragkit.eval.metrics import _exact_grid, paired_randomization_test, sign_flip_pvalues


def _se(p: float, r: int) -> float:
    return float(np.sqrt(max(p * (1 - p), 1 / r) / r))


def test_known_p_values_identical_systems_and_a_constant_shift():
    """Identical systems: every resample reaches the observed 0 (p = 1); a constant shift on all queries is
    reached only when every sign agrees (2 of 2**40 patterns): the smallest p-value, 1 / (R + 1)."""
    r = 3000
    diff = np.column_stack([np.zeros(40), np.full(40, 0.05), np.full(40, -0.3)])
    assert sign_flip_pvalues(diff, n_resamples=r).tolist() == [1.0, 1 / (r + 1), 1 / (r + 1)]
    same = {f"q{i}": 0.5 for i in range(40)}
    assert paired_randomization_test(same, same, n_resamples=r) == 1.0


def test_ties_are_counted_as_the_exact_randomisation_distribution_counts_them():
    """Discrete differences (recall-like 0, +-0.5, +-1, +-1/3) make many sign patterns reach the observed |mean|
    exactly: the p-value is the exact enumeration's (all 2**14 patterns, ties counted) within 3 standard errors,
    for the plain and the weighted (several datasets) statistic."""
    rng = np.random.default_rng(5)
    d = rng.choice([0.0, 0.5, -0.5, 1.0, -1.0, 1 / 3, -1 / 3], size=14, p=[0.3, 0.2, 0.1, 0.15, 0.05, 0.15, 0.05])
    w = np.where(np.arange(14) < 4, 1 / (2 * 4), 1 / (2 * 10))  # two datasets of 4 and 10 queries
    patterns = np.array(list(itertools.product([-1.0, 1.0], repeat=14)))
    r = 100_000
    for x in (d, d * w * 14):  # the weighted mean as a plain mean of rescaled differences
        exact = float(np.mean(np.abs(patterns @ x) >= abs(x.sum()) - 1e-9))
        assert 0.05 < exact < 0.95
        if x is d:  # real ties: 8% of the patterns reach the observed |mean| exactly
            assert np.mean(np.isclose(np.abs(patterns @ x), abs(x.sum()))) > 0.05
        p = sign_flip_pvalues(x[:, None], n_resamples=r, seed=3)[0]
        assert abs(p - exact) < 3 * _se(exact, r)
    qs = [f"q{i:02d}" for i in range(14)]
    pw = paired_randomization_test(dict(zip(qs, d)), dict.fromkeys(qs, 0.0), n_resamples=r, seed=3,
                                   weights=dict(zip(qs, w)))
    exact_w = float(np.mean(np.abs(patterns @ (d * w)) >= abs((d * w).sum()) - 1e-12))
    assert abs(pw - exact_w) < 3 * _se(exact_w, r)


def test_p_values_agree_with_a_slow_reference_within_monte_carlo_error():
    """One resample at a time, signs from numpy's choice (an independent implementation and random stream):
    every column's p-value within 3 standard errors of the two estimates."""
    rng = np.random.default_rng(11)
    diff = np.column_stack([rng.normal(0.02, 0.2, 60), rng.normal(0.0, 0.1, 60), rng.normal(0.05, 0.3, 60)])
    r = 20_000
    ref_rng = np.random.default_rng(99)
    hits = np.zeros(3)
    for _ in range(r):
        signs = ref_rng.choice([-1.0, 1.0], size=60)
        hits += np.abs(signs @ diff / 60) >= np.abs(diff.mean(0)) - 1e-12
    ref = (hits + 1) / (r + 1)
    got = sign_flip_pvalues(diff, n_resamples=r, seed=1)
    for p, q in zip(got, ref):
        assert abs(p - q) < 3 * np.hypot(_se(p, r), _se(q, r))


def test_bootstrap_intervals_agree_with_a_slow_reference():
    """Plain and stratified (two datasets weighted equally, resampled within each) percentile intervals match a
    one-resample-at-a-time reference within Monte Carlo error (0.1 of the resampled means' spread)."""
    rng = np.random.default_rng(2)
    diff = np.column_stack([rng.normal(0.03, 0.2, 50), rng.uniform(-0.5, 0.6, 50)])
    r = 20_000
    for strata in ([np.arange(50)], [np.arange(0, 50, 5), np.setdiff1d(np.arange(50), np.arange(0, 50, 5))]):
        ref_rng = np.random.default_rng(7)
        means = np.zeros((r, 2))
        for i in range(r):
            means[i] = np.mean([diff[ref_rng.choice(idx, len(idx))].mean(0) for idx in strata], axis=0)
        lo_ref, hi_ref = np.quantile(means, [0.025, 0.975], axis=0)
        lo, hi = _bootstrap_ci(diff, strata, 0.95, r, 0)
        spread = means.std(0)
        assert np.all(np.abs(lo - lo_ref) < 0.1 * spread) and np.all(np.abs(hi - hi_ref) < 0.1 * spread)


def test_a_dataset_whose_queries_all_gain_alike_gives_a_point_interval():
    """Stratified: one dataset every query of which gains 1, one whose queries gain 0: 0.5 in every resample."""
    diff = np.concatenate([np.ones(3), np.zeros(9)])[:, None]
    lo, hi = _bootstrap_ci(diff, [np.arange(3), np.arange(3, 12)], 0.95, 500, 0, block=7)
    assert lo[0] == pytest.approx(0.5, abs=1e-12) and hi[0] == pytest.approx(0.5, abs=1e-12)


def test_each_column_gets_bit_for_bit_its_own_numbers_and_the_seed_reproduces_them():
    """One draw serves every (system, metric): a column's p-value and interval are those it gets alone (the sums
    are exact, so no BLAS kernel or column count changes a bit); the same seed, the same numbers."""
    rng = np.random.default_rng(8)
    diff = rng.normal(0.01, 0.2, (700, 9))
    p = sign_flip_pvalues(diff, n_resamples=4000, seed=4)
    lo, hi = _bootstrap_ci(diff, [np.arange(700)], 0.95, 4000, 4)
    for c in (0, 4, 8):
        assert sign_flip_pvalues(diff[:, [c]], n_resamples=4000, seed=4)[0] == p[c]
        lo1, hi1 = _bootstrap_ci(diff[:, [c]], [np.arange(700)], 0.95, 4000, 4)
        assert (lo1[0], hi1[0]) == (lo[c], hi[c])
    assert np.array_equal(sign_flip_pvalues(diff, n_resamples=4000, seed=4), p)
    assert not np.array_equal(sign_flip_pvalues(diff, n_resamples=4000, seed=5), p)
    lo2, hi2 = _bootstrap_ci(diff, [np.arange(700)], 0.95, 4000, 4)
    assert np.array_equal(lo2, lo) and np.array_equal(hi2, hi)
    res = [SystemResult(s, {"ndcg@10": {f"q{i}": float(v) for i, v in enumerate(diff[:, j])}}) for j, s in
           enumerate("abc")]
    one, two = (compare(res, ["ndcg@10"], n_resamples=3000, seed=9) for _ in range(2))
    assert np.array_equal(one.p_value, two.p_value, equal_nan=True)
    assert np.array_equal(one.ci_low, two.ci_low, equal_nan=True)


def test_block_bounds_memory_and_sign_flips_do_not_depend_on_it():
    """``block`` resamples at a time: the sign flips' numbers are the same for any block (whole 64-bit words of
    random bits per resample), the bootstrap's peak memory follows the block, and a bad block is refused."""
    rng = np.random.default_rng(3)
    diff = rng.normal(0.0, 0.2, (2000, 3))
    p = sign_flip_pvalues(diff, n_resamples=1000)
    for block in (1, 7, 64, 1000, 5000):
        assert np.array_equal(sign_flip_pvalues(diff, n_resamples=1000, block=block), p)

    def peak(fn, **kw) -> int:
        tracemalloc.start()
        fn(**kw)
        out = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return out

    def boot(block: int) -> None:
        _bootstrap_ci(diff, [np.arange(2000)], 0.95, 1000, 0, block=block)

    def flips(block: int) -> None:
        sign_flip_pvalues(diff, n_resamples=1000, block=block)

    assert peak(boot, block=10) < 2 << 20 < 16 << 20 < peak(boot, block=1000)  # (1000, 2000) int64: 16 MB
    assert peak(flips, block=10) < 2 << 20 < 16 << 20 < peak(flips, block=1000)
    assert peak(boot, block=None) < 8 << 20 and peak(flips, block=None) < 8 << 20  # the default: ~2 MB blocks
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ParamError, match="block must be a positive number of resamples"):
            sign_flip_pvalues(diff, n_resamples=10, block=bad)
        with pytest.raises(ParamError, match="block must be a positive number of resamples"):
            _bootstrap_ci(diff, [np.arange(2000)], 0.95, 10, 0, block=bad)


def test_the_bootstrap_keeps_one_copy_of_its_resampled_means():
    """The percentile interval's quantiles copied every resample's means of every column again (traced peak
    2.3x the ``n_resamples x k`` float64 means: ~1.3 GB at 10,000,000 resamples of 12 columns); they are taken
    column by column in place now (1.3x, the rest the blocks' draws), with the same intervals."""
    rng = np.random.default_rng(5)
    diff = rng.random((300, 8))
    n = 400_000
    tracemalloc.start()
    try:
        lo, hi = _bootstrap_ci(diff, [np.arange(300)], 0.95, n, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.6 * n * diff.shape[1] * 8, peak / (n * diff.shape[1] * 8)
    for j in (0, 5):  # a column alone gets the same interval, to the bit
        assert (lo[j], hi[j]) == tuple(x[0] for x in _bootstrap_ci(diff[:, [j]], [np.arange(300)], 0.95, n, 0))


@pytest.mark.parametrize("m", [1, 3, 5000, 65536, 70_000])
def test_bootstrap_indices_are_exactly_uniform(m: int):
    """Lemire's multiply-shift on 16-bit pieces with rejection: every index equally likely (without the rejection
    1 index of 9 at m = 5000 would come 7% too often: chi-square ~2x its degrees of freedom), in range."""
    rng = np.random.default_rng(0)
    draws = np.concatenate([_uniform_indices(rng, m, np.empty((b, m), np.uint32)).ravel() for b in (1, 40, 160)])
    assert draws.min() >= 0 and draws.max() < m
    if m > 1:
        counts = np.bincount(draws, minlength=m)
        expected = len(draws) / m
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert abs(chi2 - (m - 1)) < 5 * np.sqrt(2 * (m - 1))


def test_exact_grid_makes_sums_exact_in_any_order():
    """On the grid, a sum over any order of the terms (any BLAS kernel) is the same float, and the grid moves a
    value by at most half its step (< 2.3e-16 of the reach)."""
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (3000, 2)) * np.array([1.0, 1e-7])
    g, step = _exact_grid(x, np.abs(x).sum(0))
    assert np.all(np.abs(g - x) <= step / 2) and np.all(step < np.abs(x).sum(0) * 4.5e-16)
    sums = {float(g[rng.permutation(3000), 1].cumsum()[-1]) for _ in range(20)}
    assert len(sums) == 1 and sums.pop() == pytest.approx(x[:, 1].sum(), rel=1e-12)
    assert _exact_grid(np.zeros((4, 1)), np.zeros(1))[0].tolist() == [[0.0]] * 4
