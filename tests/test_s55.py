"""Session 55's changes: search_distributed searches a saved pipeline's folder where it is (no save per call), ..."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.errors import ParamError
from ragkit.retrievers.bm25 import BM25
from ragkit.types import Corpus


def _corpus(n: int = 80, seed: int = 0) -> Corpus:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(40)])
    return Corpus.from_texts([" ".join(rng.choice(words, int(rng.integers(3, 10)))) for _ in range(n)],
                             ids=[f"d{i}" for i in range(n)])


_QUERIES = {f"q{i}": q for i, q in enumerate(["w1 w2", "w3", "w4 w5 w6", "w7 w0", "w9 w8"])}


def test_search_distributed_searches_a_saved_folder_where_it_is_without_saving_it(local_ray, tmp_path, monkeypatch):
    """search_distributed saved the pipeline to a temporary folder on every call, even one already saved on storage
    the workers read (a 1M-vector dense index written again per query batch).  Given the folder of a saved pipeline,
    it loads and checks it once and the workers read it where it is: nothing is saved, the run equals pipe.search."""
    from ragkit.pipelines import Pipeline
    from ragkit.scale import search_distributed

    pipe = Pipeline([BM25(k=5)]).fit(_corpus())
    pipe.save(tmp_path / "saved")
    saves = []
    monkeypatch.setattr(Pipeline, "save", lambda self, *a, **kw: saves.append(a))
    want = pipe.search(_QUERIES)
    for given in (tmp_path / "saved", str(tmp_path / "saved")):
        got = search_distributed(given, _QUERIES, n_chunks=2)
        assert saves == []
        assert list(got.query_ids) == list(want.query_ids)
        assert [d.tolist() for d in got.doc_ids] == [d.tolist() for d in want.doc_ids]
        assert [s.tolist() for s in got.scores] == [s.tolist() for s in want.scores]


def test_search_distributed_of_a_folder_refuses_workdir_and_a_folder_without_a_save(tmp_path):
    """workdir= is where an object pipe is saved for the workers: with a folder it would be ignored, so it is
    refused; a folder holding no save is the load's own error, before Ray starts."""
    from ragkit.scale import search_distributed

    with pytest.raises(ParamError, match="workdir=.*read where it is"):
        search_distributed(tmp_path, ["w1"], workdir=tmp_path / "w")
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="empty: no manifest.json: not a folder written by Pipeline.save"):
        search_distributed(tmp_path / "empty", ["w1"])


def test_dense_add_names_the_row_of_a_nan_vector_as_given_after_blank_documents(tmp_path, monkeypatch):
    """dense.add(vectors=) named the first NaN row by its place among the non-blank documents (blank ones are not
    indexed): row 0 for the vector given at row 1 after a blank document.  It names the row of the vectors given."""
    from ragkit.encoders.custom import HashingEncoder, register_encoder
    from ragkit.errors import DataError
    from ragkit.retrievers import Dense

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    register_encoder("s55-hash", HashingEncoder(dim=16), replace=True)
    dense = Dense(model="s55-hash", search="exact").fit(Corpus.from_texts(["a b", "c d"], ids=["a", "b"]))
    vectors = np.ones((3, 16), np.float32)
    vectors[2] = np.nan
    with pytest.raises(DataError, match=r"hold 1 of the 2 non-blank document vectors .*the first at row 2, "
                                        r"document 'z'"):
        dense.add(Corpus.from_texts(["", "x y", "z w"], ids=["y", "x", "z"]), vectors=vectors)


def test_a_blank_route_label_is_refused_as_blank():
    """A route label ' ' was refused with "branch labels must be non-empty and hold no '.', '[' or ']'", which ' '
    is and does: it says non-blank, as a parallel's branch names do."""
    from ragkit.pipelines import Pipeline

    with pytest.raises(ParamError, match="branch labels must be non-blank") as caught:
        Pipeline.from_yaml("pipeline:\n  - route:\n      router: {rule_router: {default: ' '}}\n"
                           "      branches:\n        ' ': [bm25]\n")
    assert "got [' ']" in str(caught.value)


# ---------------------------------------------------------------------- knn_embed / mmr edits: the re-review's four
def _knn_vectors(n: int = 120, d: int = 16) -> tuple[Corpus, np.ndarray]:
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), n // 4)
    vecs = (np.eye(d)[truth] + 0.05 * rng.standard_normal((n, d))).astype(np.float32)
    return Corpus.from_texts([f"d{i}" for i in range(n)], ids=[f"d{i}" for i in range(n)]), vecs


def test_a_refused_knn_embed_refit_leaves_the_earlier_fit_whole():
    """fit_vectors set corpus_ before its vectors were refused (NaN): the corpus was the refused one's beside the
    earlier vectors, every search said 'the index was edited during the search' and a later add misaligned."""
    from ragkit.errors import DataError
    from ragkit.retrievers.knn_embed import KnnEmbed
    from ragkit.types import State

    corpus, vecs = _knn_vectors()
    k = KnnEmbed(k=5, n_clusters=4, min_cluster_size=2).fit_vectors(corpus, vecs)
    q = State(["q"], vectors={k.dense.encoder.key: vecs[:1]})
    before = k(q).rankings[0].rows.tolist()
    bad = vecs[:30].copy()
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        k.fit_vectors(corpus.subset(np.arange(30)), bad)
    assert len(k.corpus_) == len(k.vectors_) == 120
    assert k(q).rankings[0].rows.tolist() == before


@pytest.mark.parametrize("search", ["auto", "partitioned", "masked"])
def test_a_knn_embed_search_pinned_before_a_refit_reads_its_own_clusters(search):
    """A search pinned on a view read the live centroids' count: a refit to another number of clusters meanwhile
    made it fail (numpy's 'cannot reshape array of size 4 into shape (1,2)').  It answers from its own view."""
    from ragkit.operator import pinned_view
    from ragkit.pipelines._compose import _TRACE_IDS
    from ragkit.retrievers.knn_embed import KnnEmbed
    from ragkit.types import State

    corpus, vecs = _knn_vectors()
    k = KnnEmbed(k=10, n_clusters=4, min_cluster_size=2, search=search).fit_vectors(corpus, vecs)
    q = np.eye(16, dtype=np.float32)[[1]] + np.eye(16, dtype=np.float32)[[3]]
    st = State(["q"], vectors={k.dense.encoder.key: q / np.linalg.norm(q)})
    before = k(st).rankings[0].rows.tolist()
    with pinned_view(k):
        token = _TRACE_IDS.set(corpus.ids)
        try:
            k.params = k.params.model_copy(update={"n_clusters": 2})
            k.fit_vectors(corpus, vecs)
            assert k(st).rankings[0].rows.tolist() == before
        finally:
            _TRACE_IDS.reset(token)


def test_an_edit_lets_go_of_dead_buffers_and_per_cluster_copies(tmp_path, monkeypatch):
    """After a remove (or a refit), MMR's and knn_embed's append buffer (1.25x the vectors) stayed alive beside the
    new rows until the next add, and knn_embed kept the earlier view's per-cluster copies until the next partitioned
    search (4x the vectors at its peak)."""
    from ragkit.encoders.custom import HashingEncoder, register_encoder
    from ragkit.filters.mmr import MMR
    from ragkit.retrievers.knn_embed import KnnEmbed
    from ragkit.types import State

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    register_encoder("s55-h32", HashingEncoder(dim=32), replace=True)
    corpus = Corpus.from_texts([f"document {i} about topic {i % 7}" for i in range(200)],
                               ids=[f"d{i}" for i in range(200)])
    extra = Corpus.from_texts(["extra one"], ids=["x1"])
    m = MMR(model="s55-h32").fit(corpus)
    m.add(extra)
    assert m._rows.data is not None and m.vectors_.base is m._rows.data
    m.remove(["x1"])
    assert m._rows.data is None
    k = KnnEmbed(model="s55-h32", k=5, n_clusters=4, search="partitioned").fit(corpus)
    k._part(k._view, 0)  # (what a partitioned search builds on its first mixed query)
    assert k.__dict__.get("_parts") is not None
    k.add(extra)
    assert k.__dict__.get("_parts") is None and k._rows.data is not None
    k.remove(["x1"])
    assert k._rows.data is None
    assert k(State(["topic 3"])).rankings[0].rows.tolist() == \
        KnnEmbed(model="s55-h32", k=5, n_clusters=4, search="partitioned").fit(corpus)(State(["topic 3"])) \
        .rankings[0].rows.tolist()


# ---------------------------------------------------------------------- the final read's findings
@pytest.mark.parametrize("knn_first", [True, False])
def test_a_failed_delete_puts_a_fit_vectors_knn_embed_back_with_its_vectors(tmp_path, monkeypatch, knn_first):
    """A delete whose later step failed undid the steps already edited with leaf.add(gone), no vectors=: a knn_embed
    fitted with fit_vectors refuses that ('undoing it failed too'), and realigned (a step not yet edited) it lost the
    documents for good.  The rows' vectors are kept for the undo: the delete's own error is raised, nothing lost."""
    from ragkit.encoders.custom import HashingEncoder, register_encoder
    from ragkit.integrations.langchain import RagkitRetriever
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers.knn_embed import KnnEmbed

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    register_encoder("s55-h32b", HashingEncoder(dim=32), replace=True)
    corpus, _ = _knn_vectors()
    vecs = np.random.default_rng(1).standard_normal((len(corpus), 32)).astype(np.float32)
    knn = KnnEmbed(model="s55-h32b", k=5, n_clusters=3).fit_vectors(corpus, vecs)
    bm25 = BM25(k=5).fit(corpus)
    steps = [knn, bm25] if knn_first else [bm25, knn]
    pipe = Pipeline(steps)
    pipe.corpus_ = corpus
    r = RagkitRetriever(pipeline=pipe, k=5)
    failing = steps[1]
    real, tries = failing.remove, []

    def broken(ids: object) -> object:  # (fails once: the undo's realignment may call it again)
        tries.append(ids)
        if len(tries) == 1:
            raise RuntimeError("disk gone")
        return real(ids)

    monkeypatch.setattr(failing, "remove", broken)
    with pytest.raises(RuntimeError, match="disk gone"):
        r.delete(["d1"])
    assert "d1" in knn.corpus_.ids.tolist() and len(knn.corpus_) == len(knn.vectors_) == len(corpus)


@pytest.mark.parametrize("which", ["mmr", "knn_embed"])
def test_an_inf_vector_given_to_an_add_is_refused_before_any_warning(tmp_path, monkeypatch, which):
    """mmr.add / knn_embed.add made the given rows unit length before their NaN / inf check: an inf row warned
    numpy's 'invalid value encountered in divide' before the DataError."""
    import warnings

    from ragkit.encoders.custom import HashingEncoder, register_encoder
    from ragkit.errors import DataError
    from ragkit.filters.mmr import MMR
    from ragkit.retrievers.knn_embed import KnnEmbed

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    register_encoder("s55-h32c", HashingEncoder(dim=32), replace=True)
    corpus = Corpus.from_texts([f"document {i} about topic {i % 5}" for i in range(60)],
                               ids=[f"d{i}" for i in range(60)])
    op = (MMR(model="s55-h32c") if which == "mmr" else KnnEmbed(model="s55-h32c", k=5, n_clusters=3)).fit(corpus)
    vectors = np.ones((2, 32), np.float32)
    vectors[1, 3] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="NaN or infinite"):
            op.add(Corpus.from_texts(["x y", "z w"], ids=["x", "z"]), vectors=vectors)
    assert len(op.corpus_) == 60


def test_learning_a_built_in_fusers_weights_checks_no_run_per_grid_point(monkeypatch):
    """The weight search of a built-in fuser (its fused heads) built a Run per grid point that checked its corpus ids
    and NaN scores again (the corpus's ids; PreparedFusion.heads' float32 scores are never NaN); same weights."""
    import ragkit.run as run_mod
    from ragkit.pipelines.fusion import RRF
    from ragkit.pipelines.weights import learn_weights
    from ragkit.types import Ranking, State

    rng = np.random.default_rng(3)
    ids = np.array([f"d{i}" for i in range(30)])
    qids = [f"q{i}" for i in range(20)]
    rankings = [[Ranking(rng.permutation(30)[:12], np.sort(rng.random(12))[::-1].astype(np.float32)) for _ in qids]
                for _ in range(2)]
    qrels = {q: {str(ids[rankings[j % 2][j].rows[r]]): 1 for r in range(3)} for j, q in enumerate(qids)}
    state = State([f"question {i}" for i in range(20)], query_ids=qids,
                  branches=[(f"b{i}", list(r)) for i, r in enumerate(rankings)])
    prepared = RRF()._prepare(state, with_fields=False)
    want = learn_weights(lambda s, w: prepared(w, None), state, qrels, ids, folds=5)
    calls: list[str] = []
    for name in ("_checked_doc_ids", "_check_nan_scores"):
        original = getattr(run_mod, name)
        monkeypatch.setattr(run_mod, name, lambda *a, _o=original, _n=name, **kw: (calls.append(_n), _o(*a, **kw))[1])
    got = learn_weights(lambda s, w: prepared(w, None), state, qrels, ids, folds=5,
                        heads=lambda w, k: prepared.heads(w, None, k))
    assert calls == []
    assert np.asarray(got.weights).tolist() == np.asarray(want.weights).tolist()
