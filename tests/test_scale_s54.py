"""Session 54's fixes of the scale-out layer on Ray: a Ray fit of bm25 shards weighs each shard on a worker (none in
the driver), ..."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit._sharded import Sharded
from ragkit.retrievers.bm25 import BM25
from ragkit.types import Corpus


def _corpus(n: int = 120, seed: int = 0) -> Corpus:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(60)])
    return Corpus.from_texts([" ".join(rng.choice(words, int(rng.integers(3, 12)))) for _ in range(n)],
                             ids=[f"d{i}" for i in range(n)])


_QUERIES = ["w1 w2", "w3", "w4 w5 w6", "w7 w0"]


def test_ray_fit_of_bm25_shards_weighs_no_shard_in_the_driver(local_ray, monkeypatch):
    """A Ray fit of bm25 shards gave every shard the whole corpus's statistics in the driver (set_collection, its
    float64 weights computed there, then saved): the whole index's weights alive in the driver at once.  Each shard
    is weighed and saved again by a Ray task of its own: BM25._weigh never runs in the driver, and the merge still
    equals one index's ranking."""
    corpus = _corpus()
    calls = []
    real = BM25._weigh

    def spy(self):
        calls.append(len(self._dl))
        return real(self)

    monkeypatch.setattr(BM25, "_weigh", spy)
    sh = Sharded(retriever={"bm25": {}}, n_shards=3, k=10, backend="ray").fit(corpus)
    assert calls == []
    monkeypatch.setattr(BM25, "_weigh", real)
    one = BM25(k=10).fit(corpus)
    got, want = sh.search(_QUERIES), one.search(_QUERIES)
    assert [list(d) for d in got.doc_ids] == [list(d) for d in want.doc_ids]
    np.testing.assert_allclose(np.concatenate(got.scores), np.concatenate(want.scores), rtol=1e-6)
    for shard in sh.shards_:  # (memory-mapped, their saved weights the whole corpus's)
        assert shard.collection_ is not None


def test_ray_fit_fills_the_workers_caches_for_sharded_retrievers_built_on_ray(monkeypatch):
    """fit(backend="ray") encoded the whole corpus on Ray (ray_encode) for a sharded retriever's per-shard dense and
    collected the (n, dim) vectors into the driver's cache, though its shards, built on Ray, read their slices on
    the workers: a sharded-only pipeline has the actor pool fill the workers' caches only (fill_only=True: no vector
    comes back, none is cached here); a sharded one with backend local, fitted in this process, is still collected,
    and so is a model a step fitted here also reads."""
    from ragkit import _ray_fit
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers.dense import Dense

    encoded, checked, cached = [], [], []
    monkeypatch.setattr(_ray_fit, "_check_model", lambda model, batch_size, where: checked.append(model) or 8)
    monkeypatch.setattr(_ray_fit, "ray_encode",
                        lambda model, texts, fill_only=False, **kw: encoded.append((model, fill_only))
                        or (None if fill_only else np.zeros((len(texts), 8), np.float32)))
    monkeypatch.setattr(_ray_fit, "_cache_vectors", lambda model, digests, vectors: cached.append(model) or 0)
    monkeypatch.setattr(_ray_fit, "_uncached", lambda model, digests: np.arange(len(digests)))
    monkeypatch.setattr(_ray_fit, "_ray", lambda: None)
    for backend in ("auto", "ray"):
        pipe = Pipeline([Sharded(retriever={"dense": {"model": "m-s54"}}, backend=backend)])
        monkeypatch.setattr(pipe, "fit", lambda corpus, train, **kw: pipe)
        assert _ray_fit.fit_pipeline(pipe, _corpus(20), None) is pipe
    assert encoded == [("m-s54", True), ("m-s54", True)] and cached == [] and checked == ["m-s54", "m-s54"]
    encoded.clear()
    pipe = Pipeline([Sharded(retriever={"dense": {"model": "m-s54"}}, backend="local")])
    monkeypatch.setattr(pipe, "fit", lambda corpus, train, **kw: pipe)
    _ray_fit.fit_pipeline(pipe, _corpus(20), None)
    assert encoded == [("m-s54", False)] and cached == ["m-s54"]
    encoded.clear()
    pipe = Sharded(retriever={"dense": {"model": "m-s54"}}, backend="ray") + Dense(model="m-s54")
    monkeypatch.setattr(pipe, "fit", lambda corpus, train, **kw: pipe)
    _ray_fit.fit_pipeline(pipe, _corpus(20), None)
    assert encoded == [("m-s54", False)] and cached == ["m-s54", "m-s54"]


def test_classify_reads_every_ray_error_one_way():
    """One classifier of the errors ray.get raises (_was_retried, _raised_by_task, _reason and sharded's _kind were
    four readings of it with different edges): a _Permanent cause is permanent, an exception a task's own code
    raised (not a Ray class) is raised, anything else is Ray's own."""
    from ray.exceptions import RayTaskError, WorkerCrashedError

    from ragkit._ray import _Permanent, _raised_by_task, _reason, _was_retried, classify
    from ragkit._sharded import _kind

    def task_error(cause):
        return RayTaskError("f", "Traceback ...", cause)

    bad, disk, final = ValueError("bad query"), OSError("the disk went away"), _Permanent("DataError: bad id")
    crash = WorkerCrashedError()
    assert classify(task_error(bad)) == ("raised", bad)
    assert classify(task_error(final)) == ("permanent", final)
    assert classify(crash) == ("ray", crash)
    assert [_was_retried(task_error(e)) for e in (bad, disk, final)] + [_was_retried(crash)] == [
        False, True, False, True]
    assert _raised_by_task(task_error(bad)) is bad and _raised_by_task(task_error(final)) is None
    assert _reason(task_error(bad)) == "ValueError: bad query" and _reason(task_error(final)) == "DataError: bad id"
    assert [_kind(task_error(bad)), _kind(task_error(final)), _kind(crash)] == [
        "ValueError", "DataError", "WorkerCrashedError"]


def test_search_distributed_raises_a_chunks_own_error_as_it_is(local_ray, monkeypatch):
    """A retriever's ValueError in a search_distributed chunk was a ShardError ('chunk 0 (queries ...) failed:
    ValueError: ...'); a sharded retriever's search on Ray raises it as it is, and so does search_distributed now."""
    from ragkit import _distributed
    from ragkit._ray import ShardError
    from ragkit.pipelines import Pipeline
    from ragkit.scale import search_distributed

    def chunk_fails(*args, **kw):
        raise ValueError("a retriever's own error")

    monkeypatch.setattr(_distributed, "_search_chunk", chunk_fails)
    pipe = Pipeline([BM25(k=5)]).fit(_corpus())
    with pytest.raises(ValueError, match=r"^a retriever's own error$") as err:
        search_distributed(pipe, _QUERIES, n_chunks=2)
    assert not isinstance(err.value, ShardError)



def test_a_search_distributed_chunk_returns_flat_arrays_not_a_list_per_query(tmp_path):
    """A chunk returned its query ids, one document-id array per query and one (rows, scores) pair per query,
    pickled back per query object: it returns three flat arrays (rows, scores, lengths) and the values, and the
    driver maps the rows to document ids through the corpus it holds."""
    from ragkit._distributed import _search_chunk
    from ragkit.pipelines import Pipeline

    corpus = _corpus()
    pipe = Pipeline([BM25(k=5)]).fit(corpus)
    pipe.save(tmp_path / "p")
    got = _search_chunk(str(tmp_path / "p"), [f"q{i}" for i in range(len(_QUERIES))], _QUERIES, 5, {}, None, corpus)
    assert len(got) == 4 and isinstance(got[3], dict)
    rows, scores, lens = got[:3]
    assert all(isinstance(a, np.ndarray) for a in (rows, scores, lens))
    assert rows.dtype == np.int64 and scores.dtype == np.float32 and lens.tolist() == [5] * len(_QUERIES)
    want = pipe.search(_QUERIES, k=5)
    np.testing.assert_array_equal(rows, np.concatenate([r.rows for r in want.rankings]))
    np.testing.assert_array_equal(scores, np.concatenate([r.scores for r in want.rankings]))


def test_search_distributed_ranks_as_pipe_search_from_the_flat_chunks(local_ray):
    """The driver rebuilds every query's ranking and document ids from the chunks' flat arrays: the same run as
    pipe.search (ids, scores, rows, query ids), chunks of unequal sizes and an empty ranking included."""
    from ragkit.pipelines import Pipeline
    from ragkit.scale import search_distributed

    corpus = _corpus()
    pipe = Pipeline([BM25(k=5)]).fit(corpus)
    queries = {f"q{i}": q for i, q in enumerate([*_QUERIES, "nothing here", "w9 w8"])}
    want, got = pipe.search(queries), search_distributed(pipe, queries, n_chunks=4)
    assert list(got.query_ids) == list(want.query_ids)
    assert [d.tolist() for d in got.doc_ids] == [d.tolist() for d in want.doc_ids]
    assert [r.rows.tolist() for r in got.rankings] == [r.rows.tolist() for r in want.rankings]
    assert [s.tolist() for s in got.scores] == [s.tolist() for s in want.scores]


def test_a_sharded_search_on_ray_checks_its_filter_without_a_mask_of_the_corpus(local_ray, monkeypatch):
    """A sharded search on Ray made a mask of the whole corpus in the driver per batch (Corpus.mask) only to refuse
    a bad filter before the actors search: the filter's kinds are checked without one (the shards mask their own
    slices), and a bad filter is still refused here."""
    from ragkit.errors import DataError
    from ragkit.types import State

    rows = 120
    corpus = Corpus.from_texts(list(_corpus(rows).texts), ids=[f"d{i}" for i in range(rows)],
                               g=[i % 3 for i in range(rows)])
    sh = Sharded(retriever={"bm25": {}}, n_shards=3, k=10, backend="ray").fit(corpus)
    want = BM25(k=10).fit(corpus).search(_QUERIES, filter={"g": 1})
    masks = []
    real = Corpus.mask

    def spy(self, *a, **kw):
        masks.append(len(self))
        return real(self, *a, **kw)

    monkeypatch.setattr(Corpus, "mask", spy)
    got = sh.search(_QUERIES, filter={"g": 1})
    assert masks == []
    assert [list(d) for d in got.doc_ids] == [list(d) for d in want.doc_ids]
    for bad in ({"g": "1"}, {"nope": 1}):
        with pytest.raises(DataError):
            sh._call(State(list(_QUERIES), options={"filter": bad}))  # (past search's own check_options)


@pytest.mark.parametrize("sub", [{"bm25": {}}, {"bm25": {"k1": 1.5}}])
def test_sharded_k_is_the_shards_k_where_their_retriever_gives_none(sub):
    """Sharded(retriever={"bm25": {}}, k=10) fitted its shards with bm25's default k=100 (a knn_embed shard shares
    its k between anchor and components: a shard of k=100 searched for 10 is plain dense): the shards are built with
    the sharded retriever's k where the per-shard node gives none; one given is kept."""
    sh = Sharded(retriever=sub, n_shards=2, k=10, backend="local").fit(_corpus(30))
    assert [s.params.k for s in sh.shards_] == [10, 10]
    assert sh.params.retriever == sub  # (its parameters as given: to_yaml / save unchanged)
    given = Sharded(retriever={"bm25": {"k": 7}}, n_shards=2, backend="local").fit(_corpus(30))
    assert [s.params.k for s in given.shards_] == [7, 7] and given.params.k == 7


def _slow_first_shard_fails(node, corpus, folder):
    """A shard fit (for a Ray task): shard 0 fails after 4 s, the others at once."""
    import time

    if folder.endswith("shard-000"):
        time.sleep(4)
        raise ValueError("slow shard")
    raise ValueError("fast shard")


def test_a_ray_fit_reports_the_first_shard_to_fail(local_ray, monkeypatch):
    """The shards' tasks were read in shard order (ray.get of shard 0 first): a failure of shard 1 waited for shard
    0 to end and was not the one reported when shard 0 failed later.  The first task to fail is reported."""
    import sys

    from ray import cloudpickle

    from ragkit import _sharded
    from ragkit._ray import ShardError

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # (the workers do not import this test module)
    monkeypatch.setattr(_sharded, "_fit_shard", _slow_first_shard_fails)
    try:
        with pytest.raises(ShardError, match=r"^sharded: shard 1 \(documents 20\.\.39\) failed to build: "
                                             r"ValueError: fast shard$"):
            Sharded(retriever={"bm25": {}}, n_shards=2, k=10, backend="ray", max_retries=0).fit(_corpus(40))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
