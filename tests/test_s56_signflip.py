"""Sign-flip p-values of columns with few non-zero differences are exact (all 2**m sign patterns counted),
never a Monte Carlo estimate below the exact test's least p-value 2**(1 - m)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ragkit.eval import compare, paired_randomization_test, sign_flip_pvalues
from ragkit.eval.compare import SystemResult


def _brute(col: np.ndarray) -> float:
    """The exact two-sided sign-flip p-value by enumeration (itertools), ties within 1e-9 as reaching."""
    nz = col[col != 0]
    obs = abs(col.sum())
    tol = len(col) * 1e-9 * (np.abs(col).max() if len(col) else 0.0)
    hits = sum(abs(sum(s * x for s, x in zip(signs, nz))) >= obs - tol
               for signs in itertools.product((1.0, -1.0), repeat=len(nz)))
    return hits / 2 ** len(nz)


def _brute_np(col: np.ndarray) -> float:
    """:func:`_brute` for up to ~20 non-zero differences: every one of the ``2**m`` sign patterns' sums, in
    numpy blocks of patterns (a (patterns, m) +-1 matrix times the differences), counted."""
    nz = col[col != 0]
    m = len(nz)
    obs = abs(col.sum())
    tol = len(col) * 1e-9 * np.abs(col).max()
    hits = 0
    for start in range(0, 1 << m, 1 << 14):
        idx = np.arange(start, min(start + (1 << 14), 1 << m))
        signs = 1.0 - 2.0 * ((idx[:, None] >> np.arange(m)) & 1)
        hits += int((np.abs(signs @ nz) >= obs - tol).sum())
    return hits / 2 ** m


def test_three_differences_exact_quarter() -> None:
    diff = np.array([[-.1], [-.2], [-.05], [0.0], [0.0]])
    assert sign_flip_pvalues(diff, n_resamples=200, seed=3)[0] == 0.25  # old: 0.2139 (sampled)


def test_two_differences_never_below_half() -> None:
    diff = np.array([[0.3], [0.1], [0.0]])
    for seed in range(5):
        assert sign_flip_pvalues(diff, n_resamples=1000, seed=seed)[0] == 0.5


def test_five_differences_exact_not_below_005() -> None:
    diff = np.array([[0.1], [0.2], [0.3], [0.15], [0.05], [0.0]])  # all one sign: exact p = 2 / 32
    ps = [sign_flip_pvalues(diff, n_resamples=100, seed=s)[0] for s in range(20)]
    assert all(p == 0.0625 for p in ps)


def test_exact_matches_brute_force_with_ties() -> None:
    rng = np.random.default_rng(7)
    for trial in range(25):
        n = int(rng.integers(1, 13))
        col = rng.choice([-0.3, -0.1, 0.0, 0.0, 0.1, 0.2, 0.3], size=n)  # many ties and zeros
        got = sign_flip_pvalues(col[:, None], n_resamples=50, seed=trial)[0]
        assert got == _brute(col), (trial, col)
        a = {f"q{i}": float(x) for i, x in enumerate(col)}
        b = {q: 0.0 for q in a}
        assert paired_randomization_test(a, b, n_resamples=50, seed=trial) == _brute(col)


def test_exact_columns_batched_together_match_alone() -> None:
    rng = np.random.default_rng(1)
    diff = rng.choice([-0.2, 0.0, 0.0, 0.0, 0.1, 0.25], size=(30, 4))
    diff[:, 0] = 0.0
    diff[:3, 0] = [0.1, 0.2, 0.3]
    together = sign_flip_pvalues(diff, n_resamples=10, seed=0)
    for c in range(4):
        assert together[c] == sign_flip_pvalues(diff[:, [c]], n_resamples=10, seed=0)[0]
        if np.count_nonzero(diff[:, c]) <= 12:
            assert together[c] == _brute(diff[:, c])


def test_large_m_column_unchanged_by_small_m_column() -> None:
    rng = np.random.default_rng(5)
    big = rng.normal(0.02, 0.1, size=(200, 2))  # every difference non-zero: sampled
    small = np.zeros((200, 1))
    small[:4, 0] = [0.1, 0.2, -0.05, 0.3]
    alone = sign_flip_pvalues(big, n_resamples=2000, seed=11)
    mixed = sign_flip_pvalues(np.hstack([small, big[:, [0]], small, big[:, [1]]]), n_resamples=2000, seed=11)
    assert mixed[1] == alone[0] and mixed[3] == alone[1]
    assert mixed[0] == mixed[2] == _brute(small[:, 0])
    # sampled: a multiple of 1 / (1 + n_resamples), the random path's
    assert (alone * 2001 == np.round(alone * 2001)).all()


def test_exact_threshold_boundary() -> None:
    rng = np.random.default_rng(3)
    col = np.zeros(40)
    col[:20] = rng.normal(0.05, 0.1, 20)
    p20 = sign_flip_pvalues(col[:, None], n_resamples=7, seed=0)[0]
    assert p20 == _brute_np(col)  # exact: every one of the 2**20 patterns counted
    assert p20 * 8 != round(p20 * 8)  # not the sampled path's multiple of 1 / 8
    assert p20 == sign_flip_pvalues(col[:, None], n_resamples=999, seed=4)[0]
    col[20] = 0.07
    p21 = sign_flip_pvalues(col[:, None], n_resamples=7, seed=0)[0]
    assert p21 * 8 == round(p21 * 8)  # 21 non-zero: sampled


def test_exact_mixed_m_matches_brute_force_with_ties() -> None:
    """Columns with 0 to 12 non-zero differences (ties, zeros, sums landing exactly on the observed one) next
    to a 20-difference column: each column's own exact count, as alone and as enumerated."""
    rng = np.random.default_rng(11)
    n = 24
    cols = [np.zeros(n)]
    for m in list(range(0, 13)) * 2:
        col = np.zeros(n)
        col[rng.choice(n, m, replace=False)] = rng.integers(-3, 4, m) / 7.0  # ties; some zeros stay zero
        cols.append(col)
    cols[0][:20] = rng.normal(0.02, 0.1, 20)
    diff = np.stack(cols, axis=1)
    got = sign_flip_pvalues(diff, n_resamples=9, seed=2)
    for j in range(1, diff.shape[1]):
        assert got[j] == _brute(diff[:, j]), (j, diff[:, j])
        assert got[j] == sign_flip_pvalues(diff[:, [j]], n_resamples=9, seed=5)[0]
    assert got[0] == _brute_np(diff[:, 0])


def test_exact_columns_memory_does_not_grow_with_many_wide_columns() -> None:
    """100 columns of 20 non-zero differences each: counted in well under 10 MB (all 2**20 patterns of all
    columns at once in blocks took (32768, 100) float64 temporaries, ~80 MB, and 400 MB at 500 columns)."""
    import tracemalloc

    rng = np.random.default_rng(4)
    diff = np.zeros((30, 100))
    diff[:20] = rng.normal(0.02, 0.1, (20, 100))
    tracemalloc.start()
    try:
        got = sign_flip_pvalues(diff, n_resamples=5, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10e6, peak
    assert got[7] == _brute_np(diff[:, 7])


def _result(name: str, vals: list[float]) -> SystemResult:
    return SystemResult(name, {"ndcg@10": {f"q{i}": v for i, v in enumerate(vals)}})


def test_compare_exact_p_has_no_monte_carlo_error() -> None:
    base = [0.5] * 8
    sys_ = [0.6, 0.7, 0.55] + [0.5] * 5
    c = compare([_result("a", base), _result("b", sys_)], ["ndcg@10"], n_resamples=200, seed=3)
    assert c.p_value[1, 0] == pytest.approx(0.25, abs=0) and c.p_se[1, 0] == 0.0
    assert not c.near_alpha.any()
    few = c.few_differ()
    assert len(few) == 1 and "exact" in few[0] and "0.25" in few[0]
