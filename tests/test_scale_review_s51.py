"""Review s51 of the sharded / Ray / distributed code: the merge's tie scores come from the shards (no dense
score rows in the driver), a Ray fit's BM25 statistics, shard folders without corpus.jsonl, the query warning
once per sharded search, search_distributed's saved folder reused, merge_rankings' checks."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit._merge import _merge_flat
from ragkit._sharded import Sharded, _pair_scores
from ragkit.retrievers.bm25 import BM25
from ragkit.types import Corpus


def _tied_corpus(n: int = 600, seed: int = 0) -> Corpus:
    """Documents of a few words, many alike: single-term queries tie (float32 and float64) across shards."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(8)]
    docs = [" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(n)]
    return Corpus.from_texts(docs, ids=[f"d{i}" for i in range(n)])


def _same(got, want) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.rows, w.rows)
        np.testing.assert_array_equal(g.scores, w.scores)


def test_tied_bm25_shards_merge_without_dense_score_rows(monkeypatch):
    """Two shards' candidates tied in float32 at the top k were re-scored by the driver through score_matrix, a
    dense (queries x whole shard) float64 row each (19.5 s vs 11.6 s for 20,000 SciFact queries): now only the
    candidates are scored.  The merged rankings equal one index's, ids and scores."""
    corpus = _tied_corpus()
    queries = [f"w{i}" for i in range(8)] + ["w1 w2", "w3 w3 w4", "w0 w5 w6 w7"]
    want = BM25(k=40).fit(corpus).search(queries).rankings
    sharded = Sharded(retriever={"bm25": {"k": 40}}, n_shards=3, k=40, backend="local").fit(corpus)

    def refuse(self, queries):
        raise AssertionError("score_matrix: a dense row of every document of a shard")

    monkeypatch.setattr(BM25, "score_matrix", refuse)
    _same(sharded.search(queries).rankings, want)


def test_pair_scores_equal_the_dense_scores_bit_for_bit(monkeypatch):
    """_pair_scores gives score_matrix's float64 values of the pairs asked, to the bit (several blocks of
    queries too)."""
    import ragkit._merge as merge_mod

    rng = np.random.default_rng(3)
    corpus = _tied_corpus(400, seed=3)
    bm = BM25().fit(corpus)
    texts = [" ".join(rng.choice([f"w{i}" for i in range(9)], rng.integers(1, 6))) for _ in range(60)]
    dense = bm.score_matrix(texts)
    q = rng.integers(0, len(texts), 3000)
    rows = rng.integers(0, len(corpus), 3000)
    for cells in (merge_mod._MERGE_CELLS, 200):  # one block; many
        monkeypatch.setattr(merge_mod, "_MERGE_CELLS", cells)
        got = _pair_scores(bm, texts, q, rows)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, dense[q, rows])


def test_merge_orders_tied_candidates_by_the_fine_scores_the_shards_sent():
    """Parts of four arrays: tied float32 scores of two shards ordered by the fourth (float64), then row."""
    one = (np.array([0, 1]), np.array([2.0, 1.0], np.float32), np.array([2]), np.array([2.0, 1.0]))
    two = (np.array([5, 6]), np.array([2.0, 1.0], np.float32), np.array([2]), np.array([2.5, 0.5]))
    rows, scores, lens = _merge_flat([one, two], 3)
    assert rows.tolist() == [5, 0, 1] and lens.tolist() == [3]


def test_tied_bm25_shards_on_ray_send_their_fine_scores(local_ray, monkeypatch):
    """On Ray the shard actors send each candidate's float64 score: the driver scores nothing (its shards,
    memory-mapped, were scored serially), and the merge equals one index's."""
    corpus = _tied_corpus(300, seed=1)
    queries = [f"w{i}" for i in range(8)] + ["w1 w2 w2"]
    want = BM25(k=30).fit(corpus).search(queries).rankings
    sharded = Sharded(retriever={"bm25": {"k": 30}}, n_shards=3, k=30, backend="ray").fit(corpus)

    def refuse(self, queries):
        raise AssertionError("score_matrix in the driver")

    monkeypatch.setattr(BM25, "score_matrix", refuse)
    monkeypatch.setattr("ragkit._sharded._pair_scores", refuse)
    _same(sharded.search(queries).rankings, want)



def test_merge_rankings_refuses_a_bad_k_and_parts_of_other_query_counts():
    """merge_rankings (public) checked nothing: parts of different query counts raised numpy's ValueError, k=-1
    returned nothing, k=None a TypeError."""
    from ragkit.errors import DataError, ParamError
    from ragkit.scale import merge_rankings
    from ragkit.types import Ranking

    one = [Ranking(np.array([0]), np.array([1.0], np.float32))] * 2
    three = [Ranking(np.array([5]), np.array([2.0], np.float32))] * 3
    with pytest.raises(DataError, match=r"merge_rankings: part 1 \(shard 1\) holds 3 rankings, expected 2"):
        merge_rankings([one, three], 3)
    for bad in (-1, 0, None, 2.0, "3"):
        with pytest.raises(ParamError, match=r"merge_rankings: k: expected a positive integer, got"):
            merge_rankings([one, one], bad)  # type: ignore[arg-type]
    assert [r.rows.tolist() for r in merge_rankings([one, one[:1] * 2], 1)] == [[0], [0]]


def test_a_query_finding_nothing_is_said_once_as_one_index_says_it(caplog):
    """BM25's "query finds nothing" warning ran per shard: 3 identical warnings for 3 shards, each without
    "(the default)" (a loaded shard's parameters are all set); now once, one index's text."""
    import logging

    corpus = Corpus.from_texts([f"doc {i} about cats w{i % 5}" for i in range(30)], ids=[f"d{i}" for i in range(30)])
    queries = ["cats", "猫", "w1"]
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        BM25().fit(corpus).search(queries)
    want = [r.getMessage() for r in caplog.records if "finds nothing" in r.getMessage()]
    assert len(want) == 1 and "(the default)" in want[0]
    caplog.clear()
    sharded = Sharded(retriever={"bm25": {}}, n_shards=3, backend="local").fit(corpus)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        sharded.search(queries)
        sharded.search(queries)  # (once per retriever)
    got = [r.getMessage() for r in caplog.records if "finds nothing" in r.getMessage()]
    assert got == want


def test_verified_load_of_sharded_dense_reads_no_index_crc(tmp_path, monkeypatch) -> None:
    """A verified Operator.load of a sharded dense retriever CRC32'd every shard's index files again (the shards
    load with verify=False, outside checksums_verified: their _verified was False); verify=False keeps them."""
    from conftest import HashedEncoder

    from ragkit.encoders import register_encoder
    from ragkit.operator import Operator
    from ragkit.retrievers import _index_files
    from ragkit.scale import Sharded
    from ragkit.types import Corpus

    register_encoder("scale-s51-hashed", HashedEncoder("scale-s51-hashed-v1", 16), replace=True)
    corpus = Corpus([f"d{i}" for i in range(60)], [f"text {i} word{i % 7}" for i in range(60)])
    s = Sharded(retriever={"dense": {"model": "scale-s51-hashed", "dtype": "i8", "rescore": True}}, n_shards=3,
                backend="local").fit(corpus)
    s.save(tmp_path / "s")
    calls: list[str] = []
    orig = _index_files._crc
    monkeypatch.setattr(_index_files, "_crc", lambda path: calls.append(str(path)) or orig(path))
    back = Operator.load(tmp_path / "s")
    assert calls == [], calls
    assert back.search(["text word3"]).doc_ids[0].tolist() == s.search(["text word3"]).doc_ids[0].tolist()
    Operator.load(tmp_path / "s", verify=False)
    assert calls, "verify=False keeps the shards' CRC32s"


def test_non_ascii_queries_that_find_documents_are_not_tokenised_again(monkeypatch):
    """The no-match check (86f68aa) tokenised every non-ASCII query again over each shard, on every search, while
    the warning had not been given: with a tokenizer that keeps their letters it never is.  Only queries that
    found nothing are checked now."""
    corpus = Corpus.from_texts([f"文書 {i} über Katzen w{i % 5}" for i in range(30)], ids=[f"d{i}" for i in range(30)])
    sharded = Sharded(retriever={"bm25": {"tokenizer": "unicode"}}, n_shards=3, backend="local").fit(corpus)
    calls = []
    orig = BM25.query_matrix
    monkeypatch.setattr(BM25, "query_matrix", lambda self, texts, *a, **kw: calls.append(len(texts)) or
                        orig(self, texts, *a, **kw))
    out = sharded.search(["über Katzen", "文書 w1"])
    assert all(len(r.rows) for r in out.rankings)
    assert len(calls) == 3, calls  # (the three shards' own searches)
