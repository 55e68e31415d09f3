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
    assert p20 * 2 ** 20 == round(p20 * 2 ** 20)  # exact: a multiple of 2**-20, not of 1 / 8
    assert p20 == sign_flip_pvalues(col[:, None], n_resamples=999, seed=4)[0]
    col[20] = 0.07
    p21 = sign_flip_pvalues(col[:, None], n_resamples=7, seed=0)[0]
    assert p21 * 8 == round(p21 * 8)  # 21 non-zero: sampled


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
