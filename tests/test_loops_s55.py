"""Hot-path loops (session 55): the trec order skips its sort on entries already in order, internal
qrels are checked once per search, and the rankings' splits share one helper."""

from __future__ import annotations

import numpy as np
import pytest

import ragkit.run as run_mod
from ragkit.run import _id_ranks, _trec_permutation


def _old_trec_permutation(owner: np.ndarray, docs: np.ndarray, s32: np.ndarray) -> np.ndarray:
    """ragkit.run._trec_permutation before the in-order check (always one lexsort)."""
    order = np.lexsort((-s32, owner))
    so, ss = owner[order], s32[order]
    same = (so[1:] == so[:-1]) & ((ss[1:] == ss[:-1]) | (np.isnan(ss[1:]) & np.isnan(ss[:-1])))
    if same.any():
        at = np.flatnonzero(np.r_[same, False] | np.r_[False, same])
        group = np.cumsum(np.r_[True, ~same])[at]
        tied = order[at]
        rank = _id_ranks(docs[tied], group)
        top = int(rank.max())
        order[at] = tied[np.argsort((group - group[0]) * (top + 1) + (top - rank), kind="stable")]
    return order


def _case(rng: np.random.Generator, ordered: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_q = int(rng.integers(0, 6))
    lens = rng.integers(0, 9, n_q)
    owner = np.repeat(np.arange(n_q), lens)
    n = len(owner)
    pool = np.array([0.0, -0.0, 1.0, 0.5, np.float32(0.1), 0.1, np.inf, -np.inf, 1e-45, 2.0 ** -149])
    s64 = rng.choice(pool, n) if rng.random() < 0.5 else rng.random(n) * rng.choice([1.0, 1e-8])
    if rng.random() < 0.15 and n:
        s64[rng.integers(0, n)] = np.nan
    s32 = s64.astype(np.float32)
    docs = np.empty(n, dtype=object)
    for q in range(n_q):  # (distinct within a query, shared between queries)
        at = np.flatnonzero(owner == q)
        docs[at] = [f"d{i}" for i in rng.permutation(12)[:len(at)]]
    if ordered:
        order = _old_trec_permutation(owner, docs, s32)
        if rng.random() < 0.5:  # (in score order, ties in any order)
            order = np.lexsort((rng.random(n), -s32, owner)) if not np.isnan(s32).any() else order
        owner, docs, s32 = owner[order], docs[order], s32[order]
    else:
        perm = rng.permutation(n)
        owner, docs, s32 = owner[perm], docs[perm], s32[perm]
    return owner, docs, s32


@pytest.mark.parametrize("ordered", [True, False])
def test_trec_permutation_matches_the_lexsort_one(ordered: bool) -> None:
    rng = np.random.default_rng(55 + ordered)
    for _ in range(2000):
        owner, docs, s32 = _case(rng, ordered)
        np.testing.assert_array_equal(_trec_permutation(owner, docs, s32.copy()),
                                      _old_trec_permutation(owner, docs, s32.copy()))


def test_trec_permutation_of_ordered_entries_does_not_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("np.lexsort called on entries already in order")

    rng = np.random.default_rng(7)
    cases = [_case(rng, True) for _ in range(300)]
    monkeypatch.setattr(run_mod.np, "lexsort", refuse)
    sorted_ones = 0
    for owner, docs, s32 in cases:
        if np.isnan(s32).any():
            continue
        sorted_ones += 1
        _trec_permutation(owner, docs, s32)
    assert sorted_ones > 100
    # a Run (best first, tied scores included) scored through evaluate's mrr@k never sorts either
    from ragkit import Run, evaluate
    run = Run(query_ids=["q1", "q2"], doc_ids=[["a", "c", "b", "d"], ["x", "y"]],
              scores=[[3.0, 2.0, 2.0, 1.0], [1.0, 1.0]])
    res = evaluate(run, {"q1": {"b": 1}, "q2": {"x": 1}}, ["mrr@10"])
    monkeypatch.undo()
    assert res.per_query["mrr@10"] == {"q1": 1 / 3, "q2": 0.5}  # (ties: document id descending)


# ---- 2. internal qrels and corpus ids: checked once, not at every traced step or learner step ----

def _count_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call of check_qrels (wherever imported) and of the Run's document-id check, by name."""
    import sys

    import ragkit._qrels as Q

    calls: list[str] = []
    original = Q.check_qrels

    def counting(*args: object, **kwargs: object) -> object:
        calls.append("check_qrels")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("ragkit") and getattr(mod, "check_qrels", None) is original:
            monkeypatch.setattr(mod, "check_qrels", counting)
    ids_original = run_mod._checked_doc_ids

    def ids_counting(*args: object, **kwargs: object) -> object:
        calls.append("_checked_doc_ids")
        return ids_original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(run_mod, "_checked_doc_ids", ids_counting)
    return calls


def _toy() -> tuple:
    from ragkit.types import Corpus, Queries

    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(40)]
    corpus = Corpus(ids=[f"d{i}" for i in range(200)], texts=[" ".join(rng.choice(words, 8)) for _ in range(200)])
    queries = Queries([f"q{i}" for i in range(30)], [" ".join(rng.choice(words, 3)) for _ in range(30)])
    qrels = {f"q{i}": {f"d{j}": int(rng.integers(1, 3)) for j in rng.choice(200, 4, replace=False)}
             for i in range(30)}
    return corpus, queries, qrels


def test_traced_search_checks_its_qrels_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from ragkit.pipelines import Pipeline

    corpus, queries, qrels = _toy()
    pipe = Pipeline.from_yaml("pipeline:\n  - bm25: {k: 50}\n  - top_k: {k: 20}\n  - top_k: {k: 10}\n").fit(corpus)
    before = [(e.recall, e.ndcg) for e in pipe.search(queries, trace=True, qrels=qrels).trace]
    calls = _count_checks(monkeypatch)
    run = pipe.search(queries, trace=True, qrels=qrels)
    assert calls.count("check_qrels") == 1  # (search's as_qrels; 3 steps re-checked them: 4)
    assert calls.count("_checked_doc_ids") == 0  # (the corpus's ids, checked by the Corpus)
    assert [(e.recall, e.ndcg) for e in run.trace] == before
    assert any(e.ndcg is not None for e in run.trace)
    # the public per_query_metrics still checks what it is given
    from ragkit.errors import DataError
    from ragkit.eval.metrics import per_query_metrics
    from ragkit.types import State

    state = State.of(queries)
    with pytest.raises(DataError):
        per_query_metrics(state, {"q0": {"d1": "very"}}, corpus.ids, ["ndcg@10"])


@pytest.mark.parametrize("text", ["""
pipeline:
  - bm25: {k: 30}
  - route:
      router: {score_router: {learn: true}}
      branches: {easy: [{top_k: {k: 10}}], hard: [{bm25: {k: 30, k1: 1.5}}]}
""", """
pipeline:
  - loop:
      body: [{prf: {fb_docs: 5}}, {bm25: {k: 30}}]
      until: {score_reached: {learn: true}}
      max_iters: 2
"""])
def test_route_and_loop_learners_do_not_check_the_train_qrels_again(monkeypatch: pytest.MonkeyPatch,
                                                                       text: str) -> None:
    from ragkit.pipelines import Pipeline
    from ragkit.types import TrainSet

    corpus, queries, qrels = _toy()
    train = TrainSet(queries, qrels)
    calls = _count_checks(monkeypatch)
    Pipeline.from_yaml(text).fit(corpus, train)
    assert calls == []


# ---- 4. one split helper: as np.split at the running totals ----

def test_split_counts_is_np_split_at_the_running_totals() -> None:
    from ragkit._flat import split_counts

    rng = np.random.default_rng(4)
    for _ in range(300):
        counts = rng.integers(0, 5, int(rng.integers(1, 12)))
        x = np.array([f"d{i}" for i in range(int(counts.sum()))], dtype=object)
        got, want = split_counts(x, counts), np.split(x, np.cumsum(counts)[:-1])
        assert len(got) == len(want) == len(counts)
        assert all(a.dtype == b.dtype and a.tolist() == b.tolist() for a, b in zip(got, want))
    assert split_counts(np.zeros(0), np.zeros(0, np.int64)) == []
