"""Session 54's second round of fixes of the scale-out layer on Ray: a late shard task writes nothing into a fit's
folder that is gone, ..."""

from __future__ import annotations

import numpy as np
import pytest
from test_scale_s54 import _QUERIES, _corpus

from ragkit.retrievers.bm25 import BM25


def test_a_late_set_collection_task_does_not_make_a_removed_fit_folder_anew(tmp_path, monkeypatch):
    """_set_shard_collection (a Ray task of a sharded bm25 fit) saved its shard again without checking that the
    fit's folder was still there: a late task whose fit had failed and removed its folder made it anew (the save's
    mkdir(parents=True)), left behind.  It raises ArtifactNotFoundError and writes nothing, as _fit_shard does."""
    import shutil

    from ragkit._sharded import _set_shard_collection
    from ragkit.errors import ArtifactNotFoundError

    corpus = _corpus(30)
    fit_dir = tmp_path / "fit"
    folder = fit_dir / "shard-000"
    one = BM25(k=5).fit(corpus)
    one.save(folder)
    real = BM25.set_collection

    def removed_meanwhile(self, idf, avgdl):
        real(self, idf, avgdl)
        shutil.rmtree(fit_dir)  # (the fit failed meanwhile and removed its folder)

    monkeypatch.setattr(BM25, "set_collection", removed_meanwhile)
    idf = np.ones(len(one.vocab_))
    with pytest.raises(ArtifactNotFoundError, match=r"^sharded: the fit's folder .*fit is gone \(the fit failed "
                                                    r"or was interrupted and removed it\); shard shard-000 is not "
                                                    r"written$"):
        _set_shard_collection(str(folder), corpus, idf, 5.0)
    assert not fit_dir.exists()


def test_ray_encode_fill_only_brings_no_vector_back(monkeypatch):
    """ray_encode's fill_only mode (a Ray fit's encoding for sharded retrievers built on Ray): its actors return
    each batch's rows only, their vectors left in the cache, and the driver gathers no (n, dim) matrix; it needs
    the cache."""
    from ragkit import _ray_encode
    from ragkit.errors import ParamError

    class _Encoder:
        def encode(self, texts, progress=False, cache=True):
            assert cache
            return np.ones((len(texts), 3), np.float32)

    monkeypatch.setattr("ragkit.encoders.get_encoder", lambda model, batch_size=64: _Encoder())
    batch = {"i": np.arange(2), "text": np.array(["a", "b"])}
    assert set(_ray_encode._EncoderActor("m", 8, True, False)(batch)) == {"i"}
    assert set(_ray_encode._EncoderActor("m", 8)(batch)) == {"i", "vec"}
    assert _ray_encode._collect([{"i": np.arange(2)}], 2, 0, "m").shape == (2, 0)
    with pytest.raises(ParamError, match=r"^ray_encode: fill_only=True fills the actors' embedding caches, so cache "
                                         r"must be True, got cache=False$"):
        _ray_encode.ray_encode("m", ["a"], cache=False, fill_only=True)


def test_search_distributed_raises_a_chunks_ragkit_error_as_it_is(local_ray, monkeypatch):
    """A chunk's DataError was a ShardError ('chunk 0 (queries ...) failed: DataError: ...', not a ValueError)
    while a plain ValueError was raised as it was: only the errors Ray would retry (an ArtifactError, a path's)
    are a ShardError; a DataError or ParamError reaches the caller as it was raised."""
    from ragkit import _distributed
    from ragkit._ray import ShardError
    from ragkit.errors import ArtifactError, DataError, ParamError
    from ragkit.pipelines import Pipeline
    from ragkit.scale import search_distributed

    pipe = Pipeline([BM25(k=5)]).fit(_corpus())
    for error in (DataError, ParamError):
        def chunk_fails(*args, error=error, **kw):
            raise error("a chunk's own error")

        monkeypatch.setattr(_distributed, "_search_chunk", chunk_fails)
        with pytest.raises(error, match=r"^a chunk's own error$") as err:
            search_distributed(pipe, _QUERIES, n_chunks=2)
        assert not isinstance(err.value, ShardError)

    def artifact_fails(*args, **kw):
        raise ArtifactError("a shard file is gone")

    monkeypatch.setattr(_distributed, "_search_chunk", artifact_fails)
    chunk = r"(0 \(queries 0\.\.1|1 \(queries 2\.\.3)\)"  # (both fail at once: the first to end is reported)
    with pytest.raises(ShardError, match=rf"^search_distributed: chunk {chunk} failed: ArtifactError: a shard file "
                                         r"is gone$"):
        search_distributed(pipe, _QUERIES, n_chunks=2)


def test_a_ray_fit_of_bm25_shards_checks_each_shard_once_in_the_driver(local_ray, monkeypatch):
    """A Ray fit of bm25 shards loaded and SHA-256-checked every shard twice in the driver: once for its statistics
    (files this fit's tasks had just written) and again after the tasks weighed it.  The first load is unchecked:
    3 shards, 3 verifications (was 6), and the shards count as verified."""
    from ragkit import operator
    from ragkit._sharded import Sharded

    checked = []
    real = operator.verify_checksums

    def spy(folder, *args, **kw):
        checked.append(str(folder))
        return real(folder, *args, **kw)

    monkeypatch.setattr(operator, "verify_checksums", spy)
    sh = Sharded(retriever={"bm25": {}}, n_shards=3, k=10, backend="ray").fit(_corpus())
    assert len(checked) == 3 and len(set(checked)) == 3
    assert all(shard._verified for shard in sh.shards_)
    want = BM25(k=10).fit(_corpus()).search(_QUERIES)
    assert [list(d) for d in sh.search(_QUERIES).doc_ids] == [list(d) for d in want.doc_ids]


def test_search_distributed_reports_the_first_chunk_to_fail(local_ray, monkeypatch):
    """search_distributed read its chunks in submission order (ray.get of chunk 0 first): chunk 1 failing at once
    waited for chunk 0, and chunk 0's later failure was the one reported.  The chunks are read in the order they
    end (one helper with the sharded fit's): chunk 1's error is raised.  (The call still waits for chunk 0 before
    it returns: the saved pipeline's folder is removed only once no chunk reads it.)"""
    import time

    from ragkit import _distributed
    from ragkit.pipelines import Pipeline
    from ragkit.scale import search_distributed

    def chunk(pipe_dir, ids, *args):
        if ids[0] == "q0":
            time.sleep(4)
            raise ValueError("slow chunk")
        raise ValueError("fast chunk")

    monkeypatch.setattr(_distributed, "_search_chunk", chunk)
    pipe = Pipeline([BM25(k=5)]).fit(_corpus())
    with pytest.raises(ValueError, match=r"^fast chunk$"):
        search_distributed(pipe, {f"q{i}": q for i, q in enumerate(_QUERIES)}, n_chunks=2)


def test_run_from_rankings_maps_every_querys_ids_at_once():
    """Run.from_rankings mapped each query's rows to document ids on its own (a fancy index per query): they are
    mapped at once and split; the run is the same, an empty ranking and no query at all included."""
    from ragkit.run import Run
    from ragkit.types import Ranking

    ids = np.array([f"d{i}" for i in range(6)], dtype=object)
    rankings = [Ranking(np.array([3, 1]), np.array([2.0, 1.0], np.float32)),
                Ranking(np.array([], np.int64), np.array([], np.float32)),
                Ranking(np.array([5]), np.array([0.5], np.float32))]
    run = Run.from_rankings(["a", "b", "c"], rankings, ids)
    assert [d.tolist() for d in run.doc_ids] == [["d3", "d1"], [], ["d5"]]
    assert [s.tolist() for s in run.scores] == [[2.0, 1.0], [], [0.5]]
    assert len(Run.from_rankings([], [], ids)) == 0


def test_set_shard_collection_refuses_a_shard_not_bm25_without_a_second_prefix(tmp_path, monkeypatch):
    """_set_shard_collection refused a shard that is not bm25 with a ShardError starting 'sharded:', which the
    driver's own ShardError ('sharded: shard 0 (...) failed to ...: ') prefixed again: it is an ArtifactError
    naming the folder and what it holds."""
    from ragkit import _sharded
    from ragkit.errors import ArtifactError
    from ragkit.operator import Operator

    class _NotBM25:
        name = "dense"

    monkeypatch.setattr(Operator, "load", classmethod(lambda cls, *a, **kw: _NotBM25()))
    folder = str(tmp_path / "shard-000")
    with pytest.raises(ArtifactError, match=r"^.*shard-000 holds a 'dense' shard, expected a bm25 one \(its "
                                            r"statistics are the whole corpus's\); the fit's folder was changed "
                                            r"while it ran$") as err:
        _sharded._set_shard_collection(folder, _corpus(5), np.ones(3), 2.0)
    assert not str(err.value).startswith("sharded:")
