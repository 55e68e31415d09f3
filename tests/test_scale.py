"""Scale-out: sharded retrieval equals one index; Ray encoding/fit/search equal the local results."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import file_mapped

from ragkit import _distributed, _ray, _ray_encode, _ray_fit, _sharded, scale
from ragkit.encoders import DEFAULT_MODEL
from ragkit.errors import ArtifactError, DataError, NotFittedError, ParamError
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25, Dense
from ragkit.scale import Sharded, ShardError, merge_rankings, ray_encode, search_distributed
from ragkit.types import Ranking


class _HashEncoder:
    """A registered (per-process) encoder: hashed bag of words, 16 dimensions."""

    key = "test-scale-hash-v1"
    dim = 16

    def encode(self, texts, **kw):
        import hashlib

        out = np.full((len(texts), 16), 1e-3, np.float32)
        for i, t in enumerate(texts):
            for w in str(t).lower().split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 16] += 1
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    encode_queries = encode


@pytest.fixture
def hash_encoder():
    """The name of a registered encoder (unregistered after the test)."""
    from ragkit.encoders import register_encoder, unregister_encoder

    name = "test-scale-hash"
    register_encoder(name, _HashEncoder(), replace=True)
    try:
        yield name
    finally:
        unregister_encoder(name)


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if anything starts (or joins) Ray."""
    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started")

    for module in (_ray_encode, _sharded, _distributed):
        monkeypatch.setattr(module, "ray_init", refuse)


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray instance on 2 CPUs for the tests of this module that need one; shut down after them."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


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


def test_sharded_bm25_over_a_corpus_without_a_term_answers_as_one_index():
    """A corpus of stopwords, punctuation and blanks has no term: one index answers empty rankings, and
    the shards did not fit (their shared average length 0 was refused by set_collection)."""
    from ragkit.types import Corpus

    corpus = Corpus.from_texts(["the and of", "!!! ...", "", "a an the"])
    single = BM25(k=3).fit(corpus).search(["the cat"])
    sharded = Sharded(retriever={"bm25": {"k": 3}}, n_shards=2, k=3, backend="local").fit(corpus)
    assert single.doc_ids[0].tolist() == sharded.search(["the cat"]).doc_ids[0].tolist() == []


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
def test_ray_fit_and_search_equal_local(slice_data, tmp_path, ray_session):
    corpus, queries, _, _ = slice_data
    yaml = {"pipeline": [{"sharded": {"retriever": {"dense": {"k": 10}}, "n_shards": 2, "k": 10}}]}
    local = Pipeline.from_yaml({"pipeline": [{"dense": {"k": 10}}]}).fit(corpus).search(queries)
    on_ray = Pipeline.from_yaml(yaml).fit(corpus, backend="ray")
    got = on_ray.search(queries)
    for r1, r2 in zip(local.rankings, got.rankings):
        np.testing.assert_array_equal(r1.rows, r2.rows)
    # Ray restarted under the fitted pipeline: its shard actors died with the old cluster and are made
    # again (the stale handles failed every search)
    ray_session.shutdown()
    ray_session.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    assert [r.rows.tolist() for r in on_ray.search(queries).rankings] == [r.rows.tolist() for r in got.rankings]
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
    dist = search_distributed(on_ray, queries, n_chunks=2)
    assert dist.query_ids == local.query_ids
    for d1, d2, r1, r2 in zip(local.doc_ids, dist.doc_ids, local.rankings, dist.rankings):
        assert d1.tolist() == d2.tolist() and r1.rows.tolist() == r2.rows.tolist()
    with pytest.raises(ParamError, match=r"sharded\.retriever\.dense\.model: .*no-such-model"):  # before Ray's tasks
        Sharded(retriever={"dense": {"model": str(tmp_path / "no-such-model")}}, n_shards=2, k=5,
                backend="ray", max_retries=0).fit(corpus)
    # an empty shard's actor (loaded from its folder, it knows no metadata fields) is not asked: a
    # filtered search answers as the local one
    tiny = corpus.subset(np.arange(2))  # buckets 0 and 1
    sparse = Sharded(retriever={"bm25": {"k": 3}}, n_shards=3, k=3, backend="ray").fit(tiny)
    assert [r.rows.tolist() for r in sparse.search(queries[:3], filter={"bucket": 1}).rankings] == \
        [r.rows.tolist() for r in BM25(k=3).fit(tiny).search(queries[:3], filter={"bucket": 1}).rankings]


def test_a_ray_fit_leaves_the_driver_its_shards_memory_mapped(slice_data, ray_session):
    """After a fit on Ray the actors search; the driver's copies of the shards only save (and share
    BM25's collection statistics).  They were loaded into memory, so the driver held every shard's
    index: now they are memory-mapped from the fit's folders, BM25's weights too (saved with the whole
    corpus's idf), and the searches are those of a local fit."""
    corpus, queries, _, _ = slice_data
    for node, arrays in (({"bm25": {"k": 10}}, lambda s: [s._counts.data, s._counts.indices, s._wt.data]),
                         ({"dense": {"k": 10}}, lambda s: [s.index_.codes])):
        on_ray = Sharded(retriever=node, n_shards=2, k=10, backend="ray").fit(corpus)
        assert all(file_mapped(a) for s in on_ray.shards_ for a in arrays(s))
        local = Sharded(retriever=node, n_shards=2, k=10, backend="local").fit(corpus)
        pairs = [(on_ray, local), *zip(on_ray.shards_, local.shards_)]  # the driver's mapped shards score alike
        for mine, theirs in pairs:
            got, want = mine.search(queries), theirs.search(queries)
            assert [r.rows.tolist() for r in got.rankings] == [r.rows.tolist() for r in want.rankings]
            np.testing.assert_allclose(np.concatenate([r.scores for r in got.rankings]),
                                       np.concatenate([r.scores for r in want.rankings]), rtol=1e-6)


def test_sharded_load_with_mmap_maps_every_shard(slice_data, tmp_path):
    from ragkit.operator import Operator

    corpus, queries, _, _ = slice_data
    sh = Sharded(retriever={"dense": {"k": 10, "search": "hnsw"}}, n_shards=2, k=10, backend="local").fit(corpus)
    sh.save(tmp_path / "s")
    mapped = Operator.load(tmp_path / "s", mmap=True)
    assert all(s.index_._view for s in mapped.shards_)
    assert [r.rows.tolist() for r in mapped.search(queries).rankings] == \
        [r.rows.tolist() for r in Operator.load(tmp_path / "s").search(queries).rankings]


def test_sharded_with_more_shards_than_documents_searches_the_ones_it_has():
    from ragkit.types import Corpus

    c = Corpus.from_texts(["apple banana", "banana cherry"], year=[2020, 2021])
    one = BM25(k=3).fit(c).search(["banana"], filter={"year": 2020})
    sh = Sharded(retriever={"bm25": {"k": 3}}, n_shards=3, k=3, backend="local").fit(c)
    assert list(np.diff(sh.bounds_)) == [0, 1, 1]
    got = sh.search(["banana", "cherry"], filter={"year": 2020})
    assert got.doc_ids[0].tolist() == one.doc_ids[0].tolist() == ["0"] and len(got.doc_ids[1]) == 0
    empty = Sharded(retriever={"bm25": {"k": 3}}, n_shards=2, k=3, backend="local").fit(c.subset(np.arange(0)))
    assert [len(r) for r in empty.search(["banana", "x"]).rankings] == [0, 0]


def test_sharded_fits_never_share_shard_folders(slice_data, tmp_path):
    """Two sharded retrievers with one workdir (or a refit) each write their own folder inside it:
    the folders Ray actors load from always hold that operator's shards; each folder goes with
    its operator (refit or garbage collection)."""
    import gc

    from ragkit.operator import Operator

    corpus, queries, _, _ = slice_data
    work = tmp_path / "shared-disk"
    node = {"retriever": {"bm25": {"k": 5}}, "n_shards": 2, "k": 5, "backend": "local", "workdir": str(work)}
    a = Sharded(**node).fit(corpus.subset(np.arange(0, 60)))
    b = Sharded(**node).fit(corpus.subset(np.arange(60, 120)))
    assert not set(a.folders_) & set(b.folders_)
    assert all(str(work) in f for f in a.folders_ + b.folders_)
    assert a.shards_[1].terms() != b.shards_[1].terms()
    for op in (a, b):  # what an actor would load is this operator's own shard
        assert Operator.load(op.folders_[1], corpus=op.shards_[1].corpus_).terms() == op.shards_[1].terms()
    old = Path(a.folders_[0]).parent
    a.fit(corpus.subset(np.arange(0, 60)))
    assert not old.exists() and Path(a.folders_[0]).exists()
    del a, b, op
    gc.collect()
    assert list(work.iterdir()) == []


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


# ---------------------------------------------------------------------- review fixes
def test_sharded_refuses_a_retriever_that_fine_tunes():
    """Shards get no training split (and each would tune its own model): refused at construction."""
    with pytest.raises(ParamError, match=r"shards cannot fine-tune.*tuned model folder as 'model'") as err:
        Sharded(retriever={"dense": {"k": 10, "adapt": {"max_steps": 1}}}, n_shards=2)
    assert err.value.path == "sharded.retriever"
    Sharded(retriever={"dense": {"k": 10}}, n_shards=2)  # without adapt: accepted


def test_ray_fit_keeps_an_explicit_local_backend(slice_data, no_ray):
    corpus, queries, _, _ = slice_data
    local = Sharded(retriever={"bm25": {"k": 5}}, n_shards=2, k=5, backend="local")
    Pipeline([local]).fit(corpus, backend="ray")  # bm25: nothing to encode, and its shards stay local
    assert not local._use_ray()
    assert local.search(queries[:2]).rankings[0].rows.size == 5
    auto = Sharded(retriever={"bm25": {"k": 5}}, n_shards=2, k=5)  # backend auto: on Ray after a Ray fit
    with pytest.raises(AssertionError, match="Ray was started"):
        Pipeline([auto]).fit(corpus, backend="ray")


def test_ray_encode_refuses_before_ray_starts(tmp_path, no_ray):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ParamError, match=r"ray_encode\(.*no-such-model.*(could not load|does not exist)"):
        ray_encode(missing, ["a claim about cells"])
    with pytest.raises(ParamError, match="num_actors must be a positive integer, got 0"):
        ray_encode(DEFAULT_MODEL, ["a"], num_actors=0)


def test_ray_encode_failures_are_ragkit_errors():
    """What the actors raise reaches the caller as a RagkitError: the cause itself where Ray kept it
    (a task's RayTaskError(ParamError) carries it as ``cause``), else a ShardError naming the model."""
    class FakeRayTaskError(RuntimeError):
        def __init__(self, cause):
            super().__init__(f"ray::task failed: {cause!r}")
            self.cause = cause

    def batches(failure):
        yield {"i": np.array([1]), "vec": np.ones((1, 2), np.float32)}
        raise failure

    got = _ray_encode._collect(iter([{"i": np.array([1, 0]), "vec": np.eye(2, dtype=np.float32)}]), 2, 2, "m")
    np.testing.assert_array_equal(got, [[0, 1], [1, 0]])
    with pytest.raises(ShardError, match=r"ray_encode\('m'\): actor died"):
        _ray_encode._collect(batches(RuntimeError("actor died")), 2, 2, "m")
    with pytest.raises(DataError, match="^bad text$"):
        _ray_encode._collect(batches(FakeRayTaskError(DataError("bad text"))), 2, 2, "m")


def test_registered_encoders_never_go_to_ray_workers(slice_data, hash_encoder, no_ray, monkeypatch):
    """The register_encoder registry is per process: a Ray fit encodes such a model here, and what
    would need it in a Ray worker (ray_encode, shards built on Ray, search_distributed) is refused."""
    corpus, queries, _, _ = slice_data
    corpus = corpus.subset(np.arange(60))
    monkeypatch.setattr(_ray_fit, "ray_encode", lambda *a, **kw: pytest.fail("ray_encode was called"))
    on_ray = Pipeline([Dense(model=hash_encoder, k=5)]).fit(corpus, backend="ray")
    local = Pipeline([Dense(model=hash_encoder, k=5)]).fit(corpus)
    assert [r.rows.tolist() for r in on_ray.search(queries).rankings] == \
        [r.rows.tolist() for r in local.search(queries).rankings]
    node = {"dense": {"model": hash_encoder, "k": 5}}
    with pytest.raises(ParamError, match=r"sharded.fit: .*registered with register_encoder.*backend='local'") as err:
        Sharded(retriever=node, n_shards=2, k=5, backend="ray").fit(corpus)
    assert err.value.path == "sharded.backend"
    with pytest.raises(ParamError, match=r"fit\(backend='ray'\): .*registered with register_encoder"):
        Pipeline([Sharded(retriever=node, n_shards=2, k=5)]).fit(corpus, backend="ray")
    sharded = Sharded(retriever=node, n_shards=2, k=5, backend="local").fit(corpus)
    assert [r.rows.tolist() for r in sharded.search(queries).rankings] == \
        [r.rows.tolist() for r in local.search(queries).rankings]
    monkeypatch.undo()  # the real ray_encode: it refuses before Ray starts
    for module in (_ray_encode, _sharded, _distributed):
        monkeypatch.setattr(module, "ray_init", lambda *a, **kw: pytest.fail("Ray was started"))
    with pytest.raises(ParamError, match="registered with register_encoder"):
        ray_encode(hash_encoder, ["a"])
    with pytest.raises(ParamError, match=r"pipeline\[0\].dense.model 'test-scale-hash' is an encoder registered"):
        search_distributed(local, queries)


def test_search_distributed_refuses_before_ray_starts(slice_data, no_ray, tmp_path):
    corpus, queries, _, _ = slice_data
    pipe = Pipeline([BM25(k=5)]).fit(corpus)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ParamError, match=f"n_chunks must be a positive integer .*got {bad!r}"):
            search_distributed(pipe, queries, n_chunks=bad)
    with pytest.raises(NotFittedError, match="not fitted"):
        search_distributed(Pipeline([BM25(k=5)]), queries)
    with pytest.raises(ParamError, match="nofield"):
        search_distributed(pipe, queries, filter={"nofield": 1})
    with pytest.raises(ParamError, match="trace= is not supported"):
        search_distributed(pipe, queries, trace=True)
    afile = tmp_path / "afile"
    afile.write_text("x")
    for workdir in (afile, afile / "below"):
        with pytest.raises(ParamError, match=rf"search_distributed: workdir: '{workdir}' cannot hold the saved "
                                             rf"pipeline: {afile} is a file, not a folder") as err:
            search_distributed(pipe, queries, workdir=workdir)
        assert err.value.path == "search_distributed: workdir"


@pytest.mark.parametrize("own_k", [3, 15])
def test_sharded_own_k_option_is_exact_and_the_true_top(slice_data, own_k):
    """``bm25={"k": n}`` on a sharded bm25 gives what it gives one index: n results, the true top n."""
    corpus, queries, _, _ = slice_data
    single = BM25(k=10).fit(corpus)
    sharded = Sharded(retriever={"bm25": {"k": 10}}, n_shards=3, k=10, backend="local").fit(corpus)
    one, got = single.search(queries, bm25={"k": own_k}), sharded.search(queries, bm25={"k": own_k})
    assert all(len(r.rows) == own_k for r in got.rankings)
    assert [r.rows.tolist() for r in got.rankings] == [r.rows.tolist() for r in one.rankings]
    capped = sharded.search(queries, bm25={"k": own_k}, sharded={"k": 2})  # its own k caps the merge
    assert [r.rows.tolist() for r in capped.rankings] == [r.rows[:2].tolist() for r in one.rankings]


def test_ray_fit_pre_encodes_only_sentence_vectors_of_the_corpus(slice_data, hash_encoder, no_ray, monkeypatch):
    """Pre-encoded: the models of dense, knn_embed, mmr and dbnorm (also inside sharded); not token vectors (muvera,
    maxsim), not cosine_adapter's query vectors, not registered encoders.  A sharded retriever's whose shards are
    built on Ray is encoded into the workers' caches only (fill_only: its vectors are not brought here)."""
    from ragkit.filters import MMR, CosineAdapter, DBNorm, MaxSim
    from ragkit.retrievers import Muvera

    corpus, _, _, train = slice_data
    # (dbnorm and cosine_adapter read cosines: after a sharded knn_embed, whose models are not compared)
    # (each right after the retriever: one after the other, the second would read the first one's scores)
    knn = Pipeline([Sharded(retriever={"knn_embed": {"model": "m-knn"}}), DBNorm(model="m-dbnorm")])
    knn2 = Pipeline([Sharded(retriever={"knn_embed": {"model": "m-knn"}}), CosineAdapter(model="m-adapter")])
    retrievers = (Dense(model="m-dense") + Muvera(model="m-muvera") + Dense(model=hash_encoder) + knn + knn2
                  + Sharded(retriever={"muvera": {"model": "m-mv2"}}))
    pipe = retrievers | MMR(model="m-mmr") | MaxSim(model="m-maxsim")
    assert _ray_fit.corpus_models(pipe) == ["m-dbnorm", "m-dense", "m-knn", "m-mmr"]
    encoded, cached = [], []
    monkeypatch.setattr(_ray_fit, "_check_model", lambda model, batch_size, where: 8)
    filled = []
    monkeypatch.setattr(_ray_fit, "ray_encode",
                        lambda model, texts, fill_only=False, **kw: (filled if fill_only else encoded).append(model)
                        or (None if fill_only else np.zeros((len(texts), 8), np.float32)))
    monkeypatch.setattr(_ray_fit, "_cache_vectors", lambda model, texts, vectors: cached.append(model) or 0)
    monkeypatch.setattr(pipe, "fit", lambda corpus, train, **kw: pipe)
    assert scale.fit_pipeline(pipe, corpus, train) is pipe
    assert encoded == cached == ["m-dbnorm", "m-dense", "m-mmr"] and filled == ["m-knn"]


@pytest.mark.slow
def test_deterministic_errors_are_final_for_ray():
    """A Ray task's ragkit errors and path errors are raised as _Permanent (Ray does not retry
    them); other OS errors and memory errors pass through, for Ray's retry_exceptions."""
    def raising(e):
        def fn(*args):
            raise e
        return _ray._deterministic_errors_final(fn)

    for e in [DataError("bad document 3"), ArtifactError("x.npy: truncated"),
              FileNotFoundError(2, "No such file or directory", "/data/shard-001/index.usearch"),
              PermissionError(13, "Permission denied", "/data"), IsADirectoryError(21, "Is a directory", "/d")]:
        with pytest.raises(_ray._Permanent, match=type(e).__name__):
            raising(e)()
    for e in [OSError(5, "Input/output error"), TimeoutError("the disk timed out"), ConnectionResetError(),
              MemoryError()]:
        with pytest.raises(type(e)):
            raising(e)()
    assert _ray._deterministic_errors_final(lambda a, b: a + b)(1, 2) == 3


def test_ray_failures_are_ragkit_errors(slice_data, ray_session, monkeypatch, tmp_path):
    """On a real Ray: an encoding actor's failure is a ShardError naming the model; a search chunk's own error
    (a ValueError) is raised as pipe.search raises it, a ragkit error or a Ray failure of a chunk a ShardError
    naming the chunk; search_distributed takes search's options."""
    corpus, queries, _, _ = slice_data

    class BrokenActor:
        def __init__(self, *args):
            pass

        def __call__(self, batch):
            raise ValueError("the actor broke")

    monkeypatch.setattr(_ray_encode, "_EncoderActor", BrokenActor)
    with pytest.raises(ShardError, match=r"(?s)ray_encode\('all-MiniLM-L6-v2'\): .*the actor broke"):
        ray_encode(DEFAULT_MODEL, corpus.full_texts[:8], num_actors=1)
    pipe = Pipeline([BM25(k=5)]).fit(corpus)
    local = pipe.search(queries, filter={"bucket": 1}, bm25={"k": 3})
    dist = search_distributed(pipe, queries, n_chunks=2, filter={"bucket": 1}, bm25={"k": 3})
    assert [r.rows.tolist() for r in dist.rankings] == [r.rows.tolist() for r in local.rankings]
    real = _distributed._search_chunk
    # workdir: the workers load the pipeline from a folder inside it (shared storage on a cluster), removed after
    shared, seen = tmp_path / "shared" / "work", tmp_path / "seen"

    def note_folder(pipe_dir, *args):
        with open(seen, "a") as f:
            f.write(pipe_dir + "\n")
        return real(pipe_dir, *args)

    monkeypatch.setattr(_distributed, "_search_chunk", note_folder)
    dist = search_distributed(pipe, queries, n_chunks=2, workdir=shared, filter={"bucket": 1}, bm25={"k": 3})
    assert [r.rows.tolist() for r in dist.rankings] == [r.rows.tolist() for r in local.rankings]
    folders = set(seen.read_text().split())
    assert len(folders) == 1 and Path(folders.pop()).parent.parent == shared and list(shared.iterdir()) == []

    calls = tmp_path / "calls"

    def second_chunk_fails(pipe_dir, ids, texts, k, options=None, *saved):
        with open(calls, "a") as f:  # the workers are other processes: count attempts in a file
            f.write(ids[0] + "\n")
        if ids[0] != queries.ids[0]:
            raise ValueError("this chunk failed")
        return real(pipe_dir, ids, texts, k, options, *saved)

    monkeypatch.setattr(_distributed, "_search_chunk", second_chunk_fails)
    # a deterministic error is not retried (it would fail the same way again); the chunk's own ValueError is raised
    # as it is, as pipe.search raises it (it was a ShardError naming the chunk)
    with pytest.raises(ValueError, match=r"^this chunk failed$") as err:
        search_distributed(pipe, queries, n_chunks=2)
    assert not isinstance(err.value, ShardError)
    assert calls.read_text().split().count(queries.ids[6]) == 1
    calls.unlink()

    def first_try_hits_the_disk(pipe_dir, ids, texts, k, options=None, *saved):
        with open(calls, "a") as f:
            f.write(ids[0] + "\n")
        if calls.read_text().split().count(ids[0]) == 1:
            raise OSError("the shared disk went away for a moment")
        return real(pipe_dir, ids, texts, k, options, *saved)

    artifact_calls = tmp_path / "artifact-calls"  # its own file: the calls above are all counted

    def artifact_error(pipe_dir, ids, texts, k, options=None, *saved):
        with open(artifact_calls, "a") as f:
            f.write(ids[0] + "\n")
        raise ArtifactError(f"{pipe_dir}: checksum mismatch")

    monkeypatch.setattr(_distributed, "_search_chunk", artifact_error)
    cancelled = []
    monkeypatch.setattr(ray_session, "cancel", lambda *a, **kw: cancelled.append(a))
    with pytest.raises(ShardError, match=r"chunk 0 \(queries 0\.\.5\) failed: ArtifactError: .*checksum mismatch"):
        search_distributed(pipe, queries, n_chunks=2)
    # a ragkit error is final, even an ArtifactError (an OSError): one attempt per chunk; the other
    # chunk is waited for, not cancelled (a cancel racing with a task's reply aborts Ray's driver)
    assert sorted(artifact_calls.read_text().split()) == sorted([queries.ids[0], queries.ids[6]])
    assert cancelled == []

    missing_calls = tmp_path / "missing-calls"

    def missing_file(pipe_dir, ids, texts, k, options=None, *saved):
        with open(missing_calls, "a") as f:
            f.write(ids[0] + "\n")
        raise FileNotFoundError(2, "No such file or directory", f"{pipe_dir}/gone.npy")

    monkeypatch.setattr(_distributed, "_search_chunk", missing_file)
    with pytest.raises(ShardError, match=r"chunk 0 \(queries 0\.\.5\) failed: FileNotFoundError: .*gone\.npy"):
        search_distributed(pipe, queries, n_chunks=2)
    # a missing file is an OSError that a retry cannot cure: one attempt per chunk
    assert sorted(missing_calls.read_text().split()) == sorted([queries.ids[0], queries.ids[6]])

    monkeypatch.setattr(_distributed, "_search_chunk", first_try_hits_the_disk)
    dist = search_distributed(pipe, queries, n_chunks=2)  # an OS error is retried, and the retry succeeds
    assert [r.rows.tolist() for r in dist.rankings] == [r.rows.tolist() for r in pipe.search(queries).rankings]
    assert sorted(calls.read_text().split()) == sorted([queries.ids[0], queries.ids[6]] * 2)


def test_sharded_keeps_its_retriever_as_validated():
    """The per-shard node was kept as given: k: "5" was written back as '5', and {bm25: {}} was not
    equal to the same retriever written with its default {bm25: {k: 100}}."""
    assert Sharded(retriever={"bm25": {"k": "5"}}).params.retriever == {"bm25": {"k": 5}}
    assert Sharded(retriever={"bm25": {}}) == Sharded(retriever={"bm25": {"k": 100}})


# ---------------------------------------------------------------------- review fixes (2)
def test_ray_fit_encodes_nothing_twice_when_the_workers_cache_is_another(slice_data, ray_session, monkeypatch,
                                                                        tmp_path):
    """The vectors Ray's actors return go into this process's embedding cache before the local fit,
    which then encodes nothing: the actors' cache is not this process's on a multi-node cluster (here
    they write another folder). A second Ray fit of the same corpus writes nothing more."""
    import os

    import ragkit.encoders.sentence as sentence

    corpus, queries, _, _ = slice_data
    corpus = corpus.subset(np.arange(24))
    driver, worker = tmp_path / "driver-cache", tmp_path / "worker-cache"
    monkeypatch.setenv("RAGKIT_CACHE", str(driver))
    monkeypatch.setattr(sentence, "_ENCODERS", {})  # encoders (and their stores) made afresh, on driver/
    monkeypatch.setattr(sentence, "_STORES", {})

    class OtherNodeActor(_ray_encode._EncoderActor):  # pickled by value: the actors write worker/
        def __init__(self, *args):
            os.environ["RAGKIT_CACHE"] = str(worker)
            super().__init__(*args)

    monkeypatch.setattr(_ray_encode, "_EncoderActor", OtherNodeActor)

    def shards(cache):
        return sorted(p.name for p in cache.rglob("*.keys.npy"))

    on_ray = Pipeline([Dense(k=5)]).fit(corpus, backend="ray")
    assert sum(e.n_encoded for e in sentence._ENCODERS.values()) == 0  # the old code encoded all 24 again here
    assert len(shards(worker)) >= 1 and len(shards(driver)) == 1
    Pipeline([Dense(k=5)]).fit(corpus, backend="ray")
    assert len(shards(driver)) == 1  # already there: not written again
    assert sum(e.n_encoded for e in sentence._ENCODERS.values()) == 0
    local = Dense(k=5).fit(corpus)
    assert [r.rows.tolist() for r in on_ray.search(queries).rankings] == \
        [r.rows.tolist() for r in local.search(queries).rankings]


def test_ray_fit_refuses_what_a_local_fit_refuses_before_any_work(slice_data, no_ray, monkeypatch, tmp_path):
    """Checks a local fit makes at once come before Ray starts or a model loads: a router without
    rankings, a corpus that is not a Corpus, Ray missing, a sharded workdir below a file."""
    import sys

    from ragkit.errors import ConfigError
    from ragkit.pipelines import Route
    from ragkit.pipelines.routers import ScoreRouter

    corpus, _, _, _ = slice_data
    for module in (_ray_fit, _sharded, _ray_encode):
        monkeypatch.setattr(module, "_check_model", lambda *a, **kw: pytest.fail("a model was loaded"))
    monkeypatch.setattr(_ray_fit, "ray_encode", lambda *a, **kw: pytest.fail("ray_encode was called"))
    route = Pipeline([Route(ScoreRouter(threshold=0.5), {"easy": [Dense(k=5)], "hard": [BM25(k=5)]})])
    with pytest.raises(ConfigError, match=r"pipeline\[0\]\.route\.router: score_router routes on the scores"):
        route.fit(corpus, backend="ray")
    for bad in (["x y", "y z"], None):
        with pytest.raises(TypeError, match=f"expects a ragkit Corpus, got {type(bad).__name__}"):
            Pipeline([Dense(k=5)]).fit(bad, backend="ray")
    afile = tmp_path / "afile"
    afile.write_text("x")
    for workdir in (afile / "shards", afile):
        with pytest.raises(ParamError, match=rf"sharded\.workdir: '{workdir}' cannot hold the shard folders: {afile} "
                                             r"is a file") as err:
            Pipeline([Dense(k=5) + Sharded(retriever={"bm25": {}}, workdir=str(workdir))]).fit(corpus, backend="ray")
        assert err.value.path == "sharded.workdir"
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as without the 'ray' extra
    for pipe in (Pipeline([BM25(k=5)]), Pipeline([Dense(k=5)])):
        with pytest.raises(ImportError, match=r"needs Ray: pip install 'ragkit\[ray\]' \(or pip install 'ray\[data"):
            pipe.fit(corpus, backend="ray")
        assert not pipe.is_fitted


def test_sharded_workdir_below_a_file_is_refused_before_the_fit(slice_data, tmp_path):
    corpus, _, _, _ = slice_data
    (tmp_path / "afile").write_text("x")
    sh = Sharded(retriever={"bm25": {}}, n_shards=2, backend="local", workdir=str(tmp_path / "afile" / "shards"))
    with pytest.raises(ParamError, match=r"sharded\.workdir: .*afile/shards.* cannot hold the shard folders: "
                                         r".*afile is a file, not a folder") as err:
        sh.fit(corpus)  # was a raw NotADirectoryError from inside the fit
    assert err.value.path == "sharded.workdir" and not sh.is_fitted


def test_sharded_load_verifies_each_file_once_and_none_with_verify_false(slice_data, tmp_path, monkeypatch):
    """The enclosing load's checksums cover the shards' files: they are hashed once with verify=True
    (were twice) and not at all with verify=False (were hashed whatever the caller said)."""
    import ragkit._files as files
    from ragkit.operator import Operator

    corpus, queries, _, _ = slice_data
    pipe = Pipeline([Sharded(retriever={"bm25": {"k": 5}}, n_shards=2, k=5, backend="local")]).fit(corpus)
    pipe.save(tmp_path / "p")
    pipe.steps[0].save(tmp_path / "s")
    hashed: list[str] = []
    real = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda path: hashed.append(str(path)) or real(path))
    # the shards' folders hold their own files only: the documents are saved once, by the pipeline or operator
    assert sorted(p.name for p in (tmp_path / "p").rglob("corpus.jsonl")) == ["corpus.jsonl"]
    assert [p.parent for p in (tmp_path / "s").rglob("corpus.jsonl")] == [tmp_path / "s"]
    for load, folder in ((Pipeline.load, tmp_path / "p"), (Operator.load, tmp_path / "s")):
        hashed.clear()
        got = load(folder, verify=False)
        assert hashed == []
        assert [r.rows.tolist() for r in got.search(queries).rankings] == \
            [r.rows.tolist() for r in pipe.search(queries).rankings]
        load(folder, verify=True)
        assert any("shard-001" in h for h in hashed) and len(hashed) == len(set(hashed))


def test_sharded_refuses_a_sharded_retriever_per_shard():
    """sharded of sharded was accepted, and its merge was not one index's ranking."""
    from ragkit.errors import ConfigError

    node = {"sharded": {"retriever": {"bm25": {"k": 10}}, "n_shards": 2}}
    with pytest.raises(ParamError, match=r"sharded\.retriever: a sharded retriever cannot be the per-shard "
                                         r"retriever of another.*n_shards = outer x inner") as err:
        Sharded(retriever=node, n_shards=2)
    assert err.value.path == "sharded.retriever"
    with pytest.raises(ConfigError, match=r"pipeline\[0\]\.sharded\.retriever: a sharded retriever cannot"):
        Pipeline.from_yaml({"pipeline": [{"sharded": {"retriever": node, "n_shards": 2}}]})


def test_sharded_fit_takes_a_backend(slice_data, no_ray):
    """Sharded(...).fit(corpus, backend="ray") fits as Pipeline([it]).fit(corpus, backend="ray")."""
    corpus, queries, _, _ = slice_data
    local = Sharded(retriever={"bm25": {"k": 5}}, n_shards=2, k=5, backend="local")
    assert local.fit(corpus, backend="ray") is local  # nothing to encode; its shards stay local
    assert [r.rows.tolist() for r in local.search(queries).rankings] == \
        [r.rows.tolist() for r in BM25(k=5).fit(corpus).search(queries).rankings]
    auto = Sharded(retriever={"bm25": {"k": 5}}, n_shards=2, k=5)
    with pytest.raises(AssertionError, match="Ray was started"):  # backend auto: its shards are built on Ray
        auto.fit(corpus, backend="ray")
    with pytest.raises(ParamError, match="backend must be 'local' or 'ray', got 'rayy'"):
        auto.fit(corpus, backend="rayy")


def test_a_shard_actor_that_cannot_load_fails_once_with_the_ragkit_error(slice_data, ray_session, monkeypatch,
                                                                         tmp_path):
    """A shard folder moved away after the load: the search's ShardError is one line naming the
    ArtifactError and the folder (was Ray's many-line "actor died" text), each actor tried its
    folder once (Ray retried its searches on the dead actor), and a search after the folder is back
    answers (the failed actors are not kept)."""
    import shutil

    from ragkit.operator import Operator

    corpus, queries, _, _ = slice_data
    Sharded(retriever={"bm25": {"k": 5}}, n_shards=2, k=5, backend="ray").fit(corpus).save(tmp_path / "s")
    loaded = Operator.load(tmp_path / "s")
    calls = tmp_path / "calls"

    class CountedActor(_sharded._ShardActor):  # pickled by value: counts the constructor's runs in a file
        def __init__(self, folders, *args, **kwargs):  # (kwargs: verified=, for a verified load's actors)
            with open(calls, "a") as f:
                f.write("".join(folder + "\n" for folder in folders))
            super().__init__(folders, *args, **kwargs)

    monkeypatch.setattr(_sharded, "_ShardActor", CountedActor)
    # the loaded operator's actors read its own copy of the shard folders (a save into tmp_path / "s" cannot reach
    # them): that copy is moved away
    own = Path(loaded._dir.name)
    shutil.move(own, tmp_path / "moved")
    with pytest.raises(ShardError) as err:
        loaded.search(queries)
    text = str(err.value)
    assert "\n" not in text and len(text) < 400, text
    assert re.search(rf"^sharded: shard 0 failed to search: ArtifactNotFoundError: .*/{own.name}/shard-000: "
                     r"no such folder", text)
    tried = calls.read_text().split()  # (shard 1's actor may be stopped before it starts: the search failed)
    assert tried.count(str(own / "shard-000")) == 1 and len(tried) == len(set(tried))  # one try each
    shutil.move(tmp_path / "moved", own)
    assert [r.rows.tolist() for r in loaded.search(queries).rankings] == \
        [r.rows.tolist() for r in BM25(k=5).fit(corpus).search(queries).rankings]


def test_every_operator_fits_with_backend_ray_as_a_pipeline_does(slice_data, hash_encoder, no_ray, monkeypatch):
    """``fit(corpus, backend="ray")`` works on any operator or composite fitted on its own (only a
    Pipeline and ``sharded`` took it: ``BM25().fit(corpus, backend="ray")`` was a TypeError), encodes
    the corpus on Ray for the models it reads, and refuses first what a local fit refuses."""
    from ragkit.errors import ConfigError
    from ragkit.pipelines import Loop, Parallel, Route
    from ragkit.pipelines.judges import MaxOnly
    from ragkit.pipelines.routers import ScoreRouter

    corpus, queries, _, _ = slice_data
    corpus = corpus.subset(np.arange(60))
    encoded = []
    monkeypatch.setattr(_ray_fit, "_check_model", lambda *a, **kw: 384)
    monkeypatch.setattr(_ray_fit, "ray_encode", lambda model, texts, **kw: encoded.append((model, len(texts))) or
                        np.zeros((len(texts), 4), np.float32))
    monkeypatch.setattr(_ray_fit, "_cache_vectors", lambda *a: 0)  # (the zeros must not reach the real cache)
    # every text counts as uncached (a warm cache, an earlier test's encode, sends none to Ray: a test of its own)
    monkeypatch.setattr(_ray_fit, "_uncached", lambda model, digests: np.arange(len(digests)))
    local = BM25(k=5).fit(corpus)
    for op in (BM25(k=5), Sharded(retriever={"bm25": {"k": 5}}, n_shards=2, k=5, backend="local"),
               Parallel([BM25(k=5), Dense(model=hash_encoder, k=5)]), Loop(BM25(k=5), until=MaxOnly(), max_iters=2)):
        assert op.fit(corpus, backend="ray") is op and op.is_fitted
    assert [r.rows.tolist() for r in op.search(queries).rankings] == \
        [r.rows.tolist() for r in local.search(queries).rankings]
    assert encoded == []  # bm25 and a registered encoder: nothing to encode on Ray
    dense = Dense(k=5)
    monkeypatch.setattr(Dense, "_fit", lambda self, corpus, train, upstream: None)  # (no local encode either)
    dense.fit(corpus, backend="ray")
    assert encoded == [(DEFAULT_MODEL, 60)]
    route = Route(ScoreRouter(threshold=0.5), {"easy": [Dense(k=5)], "hard": [BM25(k=5)]})
    with pytest.raises(ConfigError, match=r"^route\.router: score_router routes on the scores"):
        route.fit(corpus, backend="ray")
    with pytest.raises(ParamError, match="fit: backend must be 'local' or 'ray', got 'rayy'"):
        BM25().fit(corpus, backend="rayy")
    assert encoded == [(DEFAULT_MODEL, 60)] and not route.is_fitted


def test_the_per_shard_retrievers_k_is_the_merge_depth_or_must_agree_with_it(slice_data):
    """``Sharded(retriever={"bm25": {"k": 10}})`` returned 100 per query (sharded's default k; the
    per-shard k was ignored): it now sets k when k is not given, and a different k is refused."""
    corpus, queries, _, _ = slice_data
    sharded = Sharded(retriever={"bm25": {"k": 10}}, n_shards=2, backend="local")
    assert sharded.params.k == 10 and "k: 10" in Pipeline([sharded]).to_yaml()
    got = sharded.fit(corpus).search(queries)
    one = BM25(k=10).fit(corpus).search(queries)
    assert [r.rows.tolist() for r in got.rankings] == [r.rows.tolist() for r in one.rankings]
    assert Sharded(retriever={"bm25": {}}).params.k == 100  # neither given: the default
    with pytest.raises(ParamError, match=r"sharded\.retriever\.bm25\.k is 10 but sharded\.k is 20: the merge "
                                         r"returns k results per query") as err:
        Sharded(retriever={"bm25": {"k": 10}}, k=20)
    assert err.value.path == "sharded.k"
    assert len(sharded.search(queries, sharded={"k": 3}).rankings[0]) == 3  # a search's k option still applies


def test_search_distributed_records_the_queries_its_pipeline_learned_from(slice_data, ray_session):
    """``Pipeline.search`` records in ``run.learned_from`` the queries the pipeline learned from (``evaluate``
    warns of scoring them); the Ray search left it empty."""
    corpus, _, _, train = slice_data
    pipe = Pipeline.from_yaml({"pipeline": [{"parallel": {"branches": [{"bm25": {"k": 20}},
                                                                       {"bm25": {"k": 20, "k1": 0.5}}],
                                                          "fuse": {"rrf": {"learn": True}}}}]}).fit(corpus, train)
    taught = train.queries[:4]
    local = pipe.search(taught)
    dist = search_distributed(pipe, taught, n_chunks=2)
    assert local.learned_from == list(taught.ids) and dist.learned_from == local.learned_from
