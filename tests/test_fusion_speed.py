"""Fusion sorts a batch's entries once: the same rankings as a per-query reference of the documented rules.

RRF and weighted fusion merge branches by document (a document a branch lists twice counts once, at its best
rank), sum the weighted contributions branch by branch, and order each query's documents by fused score, ties by
row.  They used to sort the whole batch's entries six times (dedupe, its reordering, grouping, lexsort, two
ranking sorts); they now take one sort to dedupe and group and one per-query sort of a padded matrix to rank.
"""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.pipelines import fusion
from ragkit.pipelines.fusion import RRF, WeightedFusion, ranked_order
from ragkit.types import Ranking, State

FUSERS = [RRF(k=60), RRF(k=10, top_k=3, weights=[1.0, 0.5, 2.0]), WeightedFusion(norm="zscore"),
          WeightedFusion(norm="minmax", top_k=4), WeightedFusion(norm="none", weights=[0.0, 1.0, 3.0])]


def _branch_contributions(fuser, rows: list[int], scores: list[float]) -> dict[int, float]:
    """One branch's unit contributions to one query, by row: the documented rule, one entry at a time."""
    best: dict[int, tuple[int, float]] = {}  # row -> (1-based rank, raw score) of its first listing
    for rank, (r, s) in enumerate(zip(rows, scores), 1):
        best.setdefault(r, (rank, s))
    if isinstance(fuser, RRF):
        return {r: 1.0 / (fuser.params.k + rank) for r, (rank, _) in best.items()}
    raw = np.array([s for _, s in best.values()], np.float64)
    finite = np.isfinite(raw)  # a non-finite score is missing: it contributes 0 and takes no part in the norm
    s = np.where(finite, raw, 0.0)
    if fuser.norm == "minmax" and finite.any():
        lo, hi = s[finite].min(), s[finite].max()
        z = (s - lo) / (hi - lo) if hi > lo else np.ones_like(s)
    elif fuser.norm == "zscore" and finite.any():
        # the fuser's arithmetic: sums of the scores and their squares, on (1,) arrays (a float64 scalar's ** 2
        # is libm's pow, an array's is x * x: they can differ in the last bit)
        mean = np.add.reduce(s, keepdims=True) / finite.sum()
        std = np.sqrt(np.maximum(np.add.reduce(s * s, keepdims=True) / finite.sum() - mean**2, 0))
        z = (s - mean) / std if std[0] > 0 else np.zeros_like(s)
        z = z - z[finite].min()  # shifted so the list's lowest is 0, as a document the branch did not retrieve
    else:
        z = s
    return dict(zip(best, np.where(finite, z, 0.0).tolist()))


def reference(fuser, state: State) -> list[Ranking]:
    """The fused rankings, one query and one branch at a time in Python."""
    names = [n for n, _ in state.branches]
    w = fuser._weights(names)
    out = []
    for i in range(len(state)):
        per_branch = [_branch_contributions(fuser, b[i].rows.tolist(), b[i].scores.astype(np.float64).tolist())
                      for _, b in state.branches]
        docs = sorted(set().union(*per_branch))
        fused = {}
        for d in docs:
            total = 0.0
            for b in range(len(names)):
                total += w[b] * per_branch[b].get(d, 0.0)
            fused[d] = total
        ranked = sorted(docs, key=lambda d: (-fused[d], d))[:fuser.params.top_k]
        fields = {}
        for (name, rankings), contrib in zip(state.branches, per_branch):
            rows = rankings[i].rows.tolist()
            first = {r: rows.index(r) for r in contrib}
            fields[f"{name}.rank"] = np.array([first[d] + 1 if d in first else 0 for d in ranked], np.int64)
            fields[f"{name}.score"] = np.array([rankings[i].scores[first[d]] if d in first else np.nan
                                                for d in ranked], np.float32)
        out.append(Ranking(np.array(ranked, np.int64), np.array([fused[d] for d in ranked]), fields))
    return out


def _batch(seed: int, n_q: int = 40, skewed: bool = False) -> State:
    """Three branches over 30 rows (so they overlap), with tied scores, empty rankings, documents missing from
    some branches, a branch that lists documents twice, and non-finite scores; ``skewed``: one query far
    longer than the others."""
    rng = np.random.default_rng(seed)

    def ranking(n: int, repeats: bool, odd: bool) -> Ranking:
        rows = rng.choice(30, n, replace=repeats)
        scores = -np.sort(-np.round(rng.random(len(rows)), 1)).astype(np.float32)  # ties
        if odd and len(scores) > 2:
            scores[rng.integers(len(scores), size=2)] = rng.choice([np.nan, np.inf, -np.inf], 2)
        return Ranking(rows, scores)

    lens = rng.integers(0, 12, (3, n_q))
    lens[:, rng.integers(n_q)] = 0  # a query no branch answers
    if skewed:
        lens[:] = np.minimum(lens, 1)
        lens[:, 0] = 30
    branches = [(name, [ranking(int(n), repeats=b == 1, odd=b == 2) for n in lens[b]])
                for b, name in enumerate(["bm25", "dense", "splade"])]
    return State([f"q{i}" for i in range(n_q)], branches=branches)


def _assert_same(got: list[Ranking], want: list[Ranking]) -> None:
    assert len(got) == len(want)
    for i, (g, r) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(g.rows, r.rows, err_msg=f"query {i}")
        np.testing.assert_array_equal(g.scores, r.scores, err_msg=f"query {i}")
        assert list(g.fields) == list(r.fields)
        for k in r.fields:
            assert g.fields[k].dtype == r.fields[k].dtype, k
            np.testing.assert_array_equal(g.fields[k], r.fields[k], err_msg=f"query {i} {k}")


@pytest.mark.parametrize("skewed", [False, True], ids=["even", "skewed"])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fuser", FUSERS, ids=repr)
def test_fusers_match_a_per_query_reference(fuser, seed, skewed):
    """Every fuser's rankings, scores and ``<branch>.rank`` / ``<branch>.score`` fields (NaN included) are the
    reference's, with ties, repeats, empty and missing rankings, and queries too uneven to pad (``skewed``)."""
    state = _batch(seed, skewed=skewed)
    _assert_same(fuser(state).rankings, reference(fuser, state))


def test_no_entries_at_all_fuse_to_empty_rankings():
    state = State(["a", "b"], branches=[(name, [Ranking([], []), Ranking([], [])]) for name in ("x", "y", "z")])
    for fuser in FUSERS:
        out = fuser(state).rankings
        assert [len(r) for r in out] == [0, 0] and out[0].fields["y.rank"].dtype == np.int64


def test_fusion_sorts_the_batch_once_and_each_query_once(monkeypatch):
    """The common case (no repeats, even queries) takes one argsort of the flat entries to dedupe and group, and
    one per-row argsort of a padded (n_queries, width) matrix to rank: no np.unique, np.lexsort or np.sort (the
    old code sorted the flat entries six times)."""
    rng = np.random.default_rng(0)
    n_q, k = 50, 20
    branches = [(name, [Ranking(rng.choice(100, k, replace=False), -np.sort(-rng.random(k))) for _ in range(n_q)])
                for name in ("a", "b")]
    state = State([f"q{i}" for i in range(n_q)], branches=branches)
    shapes: list[tuple[int, ...]] = []
    argsort = np.argsort

    def counting_argsort(a, *args, **kwargs):
        shapes.append(np.shape(a))
        return argsort(a, *args, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("the common case of fusion sorts only with np.argsort")

    monkeypatch.setattr(np, "argsort", counting_argsort)
    for name in ("unique", "lexsort", "sort"):
        monkeypatch.setattr(np, name, forbidden)
    for fuser in (RRF(), WeightedFusion(norm="zscore", top_k=5)):
        shapes.clear()
        out = fuser(state).rankings
        width = max(len(r) for r in out) if fuser.params.top_k is None else None
        assert len(shapes) == 2 and shapes[0] == (2 * n_q * k,), shapes
        assert shapes[1][0] == n_q and (width is None or shapes[1][1] == width), shapes
    monkeypatch.undo()
    _assert_same(RRF()(state).rankings, reference(RRF(), state))


@pytest.mark.parametrize("case", ["sorted", "shuffled", "uneven", "repeats"])
def test_ranked_order_is_query_then_score_descending_then_row(case):
    """:func:`ranked_order` (also read by weight learning's heads) matches one lexsort by (query, -score, row,
    position), NaN scores last in their query, on the inputs fusers give it (sorted by query then row) and
    on any other."""
    rng = np.random.default_rng(1)
    n_q = 30
    lens = rng.integers(0, 15, n_q)
    if case == "uneven":
        lens[:] = np.minimum(lens, 1)
        lens[3] = 200
    q = np.repeat(np.arange(n_q), lens)
    row = np.concatenate([np.sort(rng.choice(400, n, replace=False)) for n in lens])
    score = np.round(rng.random(len(q)), 1)
    score[rng.integers(len(q), size=5)] = np.nan
    if case == "shuffled":
        perm = rng.permutation(len(q))
        q, row, score = q[perm], row[perm], score[perm]
    if case == "repeats":  # the same (query, row) twice: kept in input order among equal scores
        q, row, score = np.r_[q, q[:20]], np.r_[row, row[:20]], np.r_[score, score[:20]]
    want = np.lexsort((np.arange(len(q)), row, -score, q))
    np.testing.assert_array_equal(ranked_order(q, row, score), want)
    assert ranked_order(q[:0], row[:0], score[:0]).shape == (0,)


def test_flatten_branches_keeps_each_documents_best_entry_in_branch_order():
    state = State(["a", "b"], branches=[("x", [Ranking([3, 1, 3], [.9, .5, .4]), Ranking([2], [.7])]),
                                        ("y", [Ranking([], []), Ranking([2, 2, 5], [.3, .2, .1])])])
    flat, names = fusion.flatten_branches(state)
    assert names == ["x", "y"]
    assert flat["q"].tolist() == [0, 0, 1, 1, 1] and flat["row"].tolist() == [3, 1, 2, 2, 5]
    assert flat["branch"].tolist() == [0, 0, 0, 1, 1] and flat["rank"].tolist() == [1, 2, 1, 1, 3]
    np.testing.assert_array_equal(flat["score"], np.float32([.9, .5, .7, .3, .1]).astype(np.float64))
