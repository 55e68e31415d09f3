"""BM25's top-k from the sparse product's entries (``BM25._topk``, ``_sparse_topk``): the rankings of the dense path
before it (``BM25._topk_dense``: a row of every document per query, ``topk_rows`` over all of it) exactly: ids,
float32 scores bit for bit, ties by the lower document row at the cut too, with metadata filters, removed and
added documents, ``k`` beyond the matches or the corpus, empty queries, okapi's zero-score matches, shards and
threads; and a search's memory follows its matches, not its corpus."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import traced_peak

from ragkit._topk import rankings_from_matrix
from ragkit.retrievers import BM25, bm25 as bm25_mod
from ragkit.scale import Sharded
from ragkit.types import Corpus, Ranking

WORDS = [f"w{a}{b}" for a in "abcdef" for b in "vwxyz"]  # 30 terms: many documents tie


def _corpus(n: int, seed: int, common: bool = False) -> Corpus:
    """``n`` short documents over :data:`WORDS` (lengths 0..6: equal lengths and terms tie); with ``common``, a term
    in about 70% of them (okapi's idf of it is floored at epsilon * mean, <= 0 with epsilon 0: zero-score matches)."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, int(rng.integers(0, 7)))) for _ in range(n)]
    if common:
        texts = [t + " commonword" if rng.random() < 0.7 else t for t in texts]
    bucket = rng.integers(0, 3, n).tolist()
    return Corpus(ids=[f"d{i}" for i in range(n)], texts=texts, metadata={"bucket": bucket})


def _queries(n: int, seed: int) -> list[str]:
    """``n`` queries of 0..4 words: some empty, some with unknown words only, some with the common term."""
    rng = np.random.default_rng(seed)
    pool = [*WORDS, "unknownzz", "commonword"]
    return [" ".join(rng.choice(pool, int(rng.integers(0, 5)))) for _ in range(n)]


def _same(got: list[Ranking], want: list[Ranking]) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.rows.dtype == b.rows.dtype == np.int64 and a.scores.dtype == b.scores.dtype == np.float32
        np.testing.assert_array_equal(a.rows, b.rows, err_msg=f"query {i}")
        assert a.scores.tobytes() == b.scores.tobytes(), f"query {i}"


def _brute(bm: BM25, queries: list[str], k: int, keep: np.ndarray | None) -> list[Ranking]:
    """A reference with no top-k helper: the documents holding a query term (and passing ``keep``) sorted by
    float64 score descending then row, the first ``k``."""
    q = bm.query_matrix(queries)
    scores = (q @ bm._wt).toarray()
    held = (q @ (bm._counts > 0).astype(np.float64)).toarray() > 0
    out = []
    for s, h in zip(scores, held):  # (a reference: a loop over queries is fine here)
        rows = np.flatnonzero(h if keep is None else h & keep)
        rows = rows[np.lexsort((rows, -s[rows]))][:k]
        out.append(Ranking(rows.astype(np.int64), s[rows].astype(np.float32)))
    return out


@pytest.mark.parametrize("variant,common,epsilon", [("lucene", False, 0.25), ("okapi", True, 0.0),
                                                    ("okapi", True, 0.25)])
def test_sparse_topk_equals_dense_path_and_brute_force(variant: str, common: bool, epsilon: float) -> None:
    """400 random queries over 600 tie-heavy documents, k from 1 to beyond the corpus, with and without a mask:
    ``_topk`` gives ``_topk_dense``'s rankings and the brute-force reference's."""
    corpus = _corpus(600, 1, common)
    bm = BM25(variant=variant, epsilon=epsilon).fit(corpus)
    assert (bm._hits is not None) == (epsilon == 0)  # (okapi, epsilon 0: the zero-score matches' product is run)
    queries = _queries(400, 2)
    q = bm.query_matrix(queries)
    rng = np.random.default_rng(3)
    for k in (1, 2, 5, 17, 100, 599, 600, 5000):
        for keep in (None, rng.random(600) < 0.4, np.zeros(600, bool)):
            drop = None if keep is None else ~keep
            got = rankings_from_matrix(*bm._topk(q, k, drop))
            _same(got, rankings_from_matrix(*bm._topk_dense(q, k, drop)))
            _same(got, _brute(bm, queries, k, keep))
    if epsilon == 0:  # some match scores 0 exactly, and is returned (as before)
        assert any((r.scores == 0).any() for r in rankings_from_matrix(*bm._topk(q, 600, None)))


def test_sparse_topk_ties_at_the_cut_keep_the_lower_rows() -> None:
    """Identical documents tie: the cut keeps the lowest rows, whatever their order in the product."""
    corpus = Corpus.from_texts(["apple pear"] * 50 + ["apple"] * 50 + ["pear"] * 50)
    bm = BM25().fit(corpus)
    q = bm.query_matrix(["apple pear", "pear", "apple"])
    for k in (1, 7, 50, 60, 149):
        rows, _ = bm._topk(q, k, None)
        assert rows[0, :min(k, 50)].tolist() == list(range(min(k, 50)))
        if k > 50:
            assert rows[0, 50:k].tolist() == list(range(50, k))  # ("apple" and "pear" score the same here)
        assert rows[1, :min(k, 50)].tolist() == list(range(100, 100 + min(k, 50)))  # (the shorter documents first)
        assert rows[2, :min(k, 50)].tolist() == list(range(50, 50 + min(k, 50)))
        if k > 50:
            assert rows[2, 50:min(k, 100)].tolist() == list(range(min(k, 100) - 50))


def _both(fn, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN202
    """``(fn() with the sparse path, fn() with the dense path)``."""
    new = fn()
    monkeypatch.setattr(bm25_mod, "_DENSE_TOPK", True)
    old = fn()
    monkeypatch.setattr(bm25_mod, "_DENSE_TOPK", False)
    return new, old


def test_search_equals_dense_path_with_filters_edits_threads_and_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole searches: a metadata filter, after remove and add, two threads (several blocks), and a sharded index:
    the same rankings through either path."""
    corpus = _corpus(700, 4, common=True)
    queries = _queries(300, 5)
    for params in ({}, {"variant": "okapi", "epsilon": 0.0}):
        bm = BM25(k=12, **params).fit(corpus)
        _same(*_both(lambda: bm.search(queries).rankings, monkeypatch))
        _same(*_both(lambda: bm.search(queries, k=40, filter={"bucket": 1}).rankings, monkeypatch))
        with monkeypatch.context() as m:  # (small blocks: many, on two threads)
            m.setattr(bm25_mod, "_BLOCK_CELLS", 3000)
            m.setattr(bm25_mod, "_MIN_TASK_CELLS", 500)
            assert len(bm25_mod._query_blocks(bm.query_matrix(queries), bm._wt, 2)) > 5
            _same(*_both(lambda: bm.search(queries, k=3, bm25={"n_jobs": 2}).rankings, monkeypatch))
        bm.remove([f"d{i}" for i in range(0, 700, 3)])
        bm.add(Corpus.from_texts(["wav wbx commonword", "wav", ""], ids=["n0", "n1", "n2"]))
        _same(*_both(lambda: bm.search(queries, k=1000).rankings, monkeypatch))
        _same(*_both(lambda: bm.search(queries, filter={"bucket": [0, 2]}).rankings, monkeypatch))
    sharded = Sharded(retriever={"bm25": {"k": 9}}, n_shards=3, k=9, backend="local").fit(corpus)
    _same(*_both(lambda: sharded.search(queries).rankings, monkeypatch))


def test_query_blocks_bound_the_postings_of_a_block() -> None:
    """A batch is cut into blocks of about _BLOCK_CELLS postings of its queries' terms (at most the corpus a query:
    its product's entries, or its dense row); a query above that is a block alone; every query is in exactly one
    block."""
    bm = BM25().fit(_corpus(300, 6))
    q = bm.query_matrix(_queries(5000, 7))
    bounds = bm25_mod._query_blocks(q, bm._wt, 1)
    assert bounds[0] == 0 and bounds[-1] == 5000 and all(a < b for a, b in zip(bounds[:-1], bounds[1:]))
    df = np.diff(bm._wt.indptr)
    cost = np.array([min(df[q.indices[a:b]].sum(), 300) for a, b in zip(q.indptr[:-1], q.indptr[1:])])
    cost += bm25_mod._QUERY_COST
    for a, b in zip(bounds[:-1], bounds[1:]):
        assert b - a == 1 or cost[a:b].sum() <= bm25_mod._BLOCK_CELLS + cost[b - 1]
    assert len(bm25_mod._query_blocks(q, bm._wt, 4)) - 1 >= 4


def test_search_memory_follows_the_matches_not_the_corpus() -> None:
    """60 queries of 2 matches each over 60,000 documents: the search held a dense block of 1M float64 cells
    (8 MB) and topk_rows' temporaries as large, ~30 MB at the peak; the sparse path holds the matches."""
    n = 60_000
    corpus = Corpus.from_texts([f"x{i} filler" for i in range(n)])
    bm = BM25(k=10).fit(corpus)
    queries = [f"x{i} x{i + 1}" for i in range(0, 600, 10)]
    bm.search(queries)  # (caches warm)
    run, peak = traced_peak(lambda: bm.search(queries))
    assert [len(r) for r in run.rankings] == [2] * 60
    assert peak < 2_000_000, f"peak {peak / 1e6:.1f} MB"


def _broad_corpus(n: int = 2000) -> Corpus:
    """``n`` documents of equal length (many ties): ``alpha`` in every one (okapi's idf of it is <= 0),
    ``beta`` in 40%, ``gamma`` and ``delta`` both in the same 20%, ``r<j>`` in 10 each; metadata ``tenth``."""
    i = np.arange(n)
    words = np.where(i % 5 < 2, "beta", np.where(i % 5 == 2, "gamma delta", "eps"))
    texts = [f"alpha {w} r{j}" for w, j in zip(words.tolist(), (i % (n // 10)).tolist())]
    return Corpus(ids=[f"d{j}" for j in range(n)], texts=texts, metadata={"tenth": (i % 10).tolist()})


#: ranked from dense rows (over a quarter of the corpus), then from their matches: ``gamma delta``'s terms' postings
#: are 40% of the corpus but its matches 20% (sent towards the dense rows, ranked from its matches), ``gamma`` 20%
_WIDE = ["alpha", "alpha beta", "beta gamma r3", "eps beta", "alpha r7 r9"]
_NARROW = ["r1", "r2 r3", "gamma", "gamma delta", "", "zzz", "delta r5"]


@pytest.mark.parametrize("variant,epsilon", [("lucene", 0.25), ("okapi", 0.0)])
@pytest.mark.parametrize("cells", [None, 5000])
def test_wide_queries_are_ranked_from_dense_rows_without_copying_their_matches(
        variant: str, epsilon: float, cells: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Queries matching over a quarter of the corpus (alone in a batch, or mixed with narrow ones; blocks and
    dense chunks of many rows or of two) are ranked from dense rows as ``_topk_dense`` ranks them, and none of
    their matches is gathered entry by entry (``group_positions``) on the way there: only the queries ranked from
    their matches are (c3c366d gathered every match of a wide query into a copy first, 15-20% slower than the dense
    path before it at 97% of the corpus matched).  The query whose terms' postings are wide but its matches not,
    and wide queries a filter leaves narrow, are ranked from their matches.  Rankings: the dense path's and the
    brute-force reference's, bit for bit."""
    n = 2000
    bm = BM25(variant=variant, epsilon=epsilon).fit(_broad_corpus(n))
    assert (bm._hits is not None) == (epsilon == 0)
    if cells is not None:
        monkeypatch.setattr(bm25_mod, "_BLOCK_CELLS", cells)  # (dense chunks of 2 rows; blocks of a few queries)
    gathered: list[int] = []
    ranked_from_matches: list[int] = []
    group_positions, sparse_topk = bm25_mod.group_positions, bm25_mod._sparse_topk
    monkeypatch.setattr(bm25_mod, "group_positions", lambda lens: (gathered.append(int(np.sum(lens))),
                                                                   group_positions(lens))[1])
    monkeypatch.setattr(bm25_mod, "_sparse_topk", lambda ptr, data, cols, k, **kw: (
        ranked_from_matches.append(len(ptr) - 1), sparse_topk(ptr, data, cols, k, **kw))[1])
    rng = np.random.default_rng(8)
    for queries in (_WIDE, _WIDE + _NARROW, list(rng.permutation(_WIDE * 3 + _NARROW * 2))):
        q = bm.query_matrix(queries)
        held = (q @ (bm._counts > 0).astype(np.float64)).toarray() > 0
        for keep in (None, np.arange(n) % 2 == 0, np.arange(n) % 10 == 3):
            candidates = (held if keep is None else held & keep).sum(1)
            for k in (1, 10, 399, 401, 1999, 5000):
                wide = (candidates > 0.25 * n) & (candidates > min(k, n))
                drop = None if keep is None else ~keep
                gathered.clear()
                ranked_from_matches.clear()
                got = rankings_from_matrix(*bm._topk(q, k, drop))
                assert sum(gathered) == candidates[~wide].sum(), (queries, k)  # (the narrow ones' matches only)
                assert sum(ranked_from_matches) == (~wide).sum(), (queries, k)  # (the others: dense rows)
                _same(got, rankings_from_matrix(*bm._topk_dense(q, k, drop)))
                _same(got, _brute(bm, queries, k, keep))
        assert (held.sum(1) > 0.25 * n).tolist() == [t in _WIDE for t in queries]
        _same(*_both(lambda: bm.search(queries, k=25, bm25={"n_jobs": 2}).rankings, monkeypatch))
        _same(*_both(lambda: bm.search(queries, k=600, filter={"tenth": [0, 1, 2]}).rankings, monkeypatch))


def test_query_blocks_count_a_query_at_most_the_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A query's product row holds at most every document: queries whose terms' postings exceed the corpus count as
    much as one dense row each, so a block of them holds as many as ``_topk_dense``'s blocks (``_BLOCK_CELLS`` //
    documents), not fewer (blocks of 3-4 such queries at 200,000 documents, not 5, searched slower)."""
    n = 2000
    bm = BM25().fit(_broad_corpus(n))
    monkeypatch.setattr(bm25_mod, "_BLOCK_CELLS", 20_000)
    q = bm.query_matrix(["alpha beta"] * 30 + ["r1"] * 3)  # (2,800 postings each, then 10)
    sizes = np.diff(bm25_mod._query_blocks(q, bm._wt, 1))
    assert sizes.sum() == 33 and sizes[:-1].min() >= 20_000 // (n + bm25_mod._QUERY_COST), sizes.tolist()
