"""Scale-out: sharded retrieval equals one index; Ray encoding/fit/search equal the local results."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.errors import ParamError
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25, Dense
from ragkit.scale import Sharded, ShardError, merge_rankings
from ragkit.types import Ranking


def test_merge_rankings_by_score():
    a = [Ranking([0, 1], [0.9, 0.2]), Ranking([], [])]
    b = [Ranking([5, 6], [0.5, 0.1]), Ranking([7], [0.3])]
    merged = merge_rankings([a, b], k=3)
    assert merged[0].rows.tolist() == [0, 5, 1]
    assert merged[1].rows.tolist() == [7]


def test_sharded_dense_equals_single_index(slice_data):
    corpus, queries, _, _ = slice_data
    single = Dense(k=10).fit(corpus).search(queries)
    sharded = Sharded(retriever={"dense": {"k": 10}}, n_shards=4, k=10, backend="local").fit(corpus).search(queries)
    for r1, r2 in zip(single.rankings, sharded.rankings):
        np.testing.assert_array_equal(r1.rows, r2.rows)
        # one GEMM vs four: float32 summation order
        np.testing.assert_allclose(r1.scores, r2.scores, rtol=1e-5, atol=1e-6)


def test_sharded_searches_the_rewritten_query_text(slice_data):
    from ragkit.pipelines import PRF

    corpus, queries, _, _ = slice_data
    q = queries[:20]
    one = Pipeline([BM25(k=10), PRF(), BM25(k=10)]).fit(corpus).search(q)
    sharded = Pipeline([BM25(k=10), PRF(), Sharded(retriever={"bm25": {"k": 10}}, n_shards=1, k=10,
                                                   backend="local")]).fit(corpus).search(q)
    plain = BM25(k=10).fit(corpus).search(q)
    assert [r.rows.tolist() for r in sharded.rankings] == [r.rows.tolist() for r in one.rankings]
    assert [r.rows.tolist() for r in sharded.rankings] != [r.rows.tolist() for r in plain.rankings]


@pytest.mark.parametrize("variant", ["lucene", "okapi"])
def test_sharded_bm25_equals_one_index(slice_data, tmp_path, variant):
    """Shards share the corpus's idf and average length, so the merge equals one index exactly."""
    corpus, queries, _, _ = slice_data
    single = BM25(k=10, variant=variant).fit(corpus).search(queries)
    node = {"bm25": {"k": 10, "variant": variant}}
    sharded = Sharded(retriever=node, n_shards=3, k=10, backend="local").fit(corpus)
    for got in (sharded.search(queries), _saved(sharded, tmp_path).search(queries)):
        for r1, r2 in zip(single.rankings, got.rankings):
            np.testing.assert_array_equal(r1.rows, r2.rows)
            np.testing.assert_allclose(r1.scores, r2.scores, rtol=1e-12)
    with pytest.raises(Exception, match="collection statistics"):
        sharded.shards_[0].add(corpus.subset(np.arange(1)))


def _saved(op, tmp_path):
    from ragkit.operator import Operator

    op.save(tmp_path / "sharded")
    return Operator.load(tmp_path / "sharded")


def test_sharded_rejects_non_retriever():
    with pytest.raises(ParamError, match="sharded.retriever"):
        Sharded(retriever={"top_k": {}})
    with pytest.raises(ParamError, match="sharded.retriever"):
        Sharded(retriever={"dense": {"k": -1}})


@pytest.mark.slow
def test_ray_fit_and_search_equal_local(slice_data, tmp_path):
    ray = pytest.importorskip("ray")
    corpus, queries, _, _ = slice_data
    yaml = {"pipeline": [{"sharded": {"retriever": {"dense": {"k": 10}}, "n_shards": 2, "k": 10}}]}
    local = Pipeline.from_yaml({"pipeline": [{"dense": {"k": 10}}]}).fit(corpus).search(queries)
    on_ray = Pipeline.from_yaml(yaml).fit(corpus, backend="ray")
    got = on_ray.search(queries)
    for r1, r2 in zip(local.rankings, got.rankings):
        np.testing.assert_array_equal(r1.rows, r2.rows)
    bm = Pipeline.from_yaml({"pipeline": [{"sharded": {"retriever": {"bm25": {"k": 10}}, "n_shards": 2, "k": 10,
                                                       "backend": "ray"}}]})
    bm.fit(corpus.subset(np.arange(0, 200)))
    bm.search(queries)  # starts the shard actors
    bm.fit(corpus)  # a refit replaces them: the search answers from the new shards
    again_local = Pipeline.from_yaml({"pipeline": [{"sharded": {"retriever": {"bm25": {"k": 10}}, "n_shards": 2,
                                                                "k": 10, "backend": "local"}}]}).fit(corpus)
    assert [r.rows.tolist() for r in bm.search(queries).rankings] == \
        [r.rows.tolist() for r in again_local.search(queries).rankings]
    on_ray.save(tmp_path / "p")
    again = Pipeline.load(tmp_path / "p").search(queries)
    for r1, r2 in zip(local.rankings, again.rankings):
        np.testing.assert_array_equal(r1.rows, r2.rows)
    from ragkit.scale import search_distributed

    dist = search_distributed(on_ray, queries, n_chunks=2)
    assert dist.query_ids == local.query_ids
    for d1, d2, r1, r2 in zip(local.doc_ids, dist.doc_ids, local.rankings, dist.rankings):
        assert d1.tolist() == d2.tolist() and r1.rows.tolist() == r2.rows.tolist()
    with pytest.raises(ShardError, match="shard 0"):
        Sharded(retriever={"dense": {"model": str(tmp_path / "no-such-model")}}, n_shards=2, k=5,
                backend="ray", max_retries=0).fit(corpus)
    ray.shutdown()


def test_sharded_load_with_mmap_maps_every_shard(slice_data, tmp_path):
    from ragkit.operator import Operator

    corpus, queries, _, _ = slice_data
    sh = Sharded(retriever={"dense": {"k": 10, "search": "hnsw"}}, n_shards=2, k=10, backend="local").fit(corpus)
    sh.save(tmp_path / "s")
    mapped = Operator.load(tmp_path / "s", mmap=True)
    assert all(s.index_._view for s in mapped.shards_)
    assert [r.rows.tolist() for r in mapped.search(queries).rankings] == \
        [r.rows.tolist() for r in Operator.load(tmp_path / "s").search(queries).rankings]


def test_sharded_checks_options_against_its_fitted_shards(slice_data):
    corpus, _, _, _ = slice_data
    sh = Sharded(retriever={"muvera": {"k": 10, "candidates": 20, "r_reps": 2}}, n_shards=2, k=10,
                 backend="local").fit(corpus.subset(np.arange(40)))
    calls = []
    original = type(sh.shards_[0])._call
    type(sh.shards_[0])._call = lambda self, state: calls.append(1) or original(self, state)
    try:
        with pytest.raises(ParamError, match=r"search option muvera\.prune: .*needs a token codebook"):
            sh.search(["vitamin d"], muvera={"prune": 15})
    finally:
        type(sh.shards_[0])._call = original
    assert calls == []  # refused before any shard searched
