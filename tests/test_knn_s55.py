"""kNN-Embed and MMR, review s55: blank documents left out of the clustering, no torch import, collapse settings
that collapse every query refused, with_params after a default clustering, the caller's query vectors named in
their errors, mixture's checks of a given score matrix, one k-means helper, add / remove."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from ragkit.errors import ParamError
from ragkit.retrievers.knn_embed import KnnEmbed
from ragkit.types import Corpus, State

D = 16


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _blobs(n_per=20, nb=4, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(nb), n_per)
    return _unit(np.eye(D, dtype=np.float32)[truth] + noise * rng.standard_normal((len(truth), D))), truth


def _state(op, q):
    q = np.atleast_2d(q).astype(np.float32)
    return State([f"q{i}" for i in range(len(q))], vectors={op.dense.encoder.key: q})


# ------------------------------------------------------------------------------ 1: blank documents and k-means
def test_blank_documents_take_no_cluster(caplog):
    """80 documents in 4 topics and 40 blank ones (one vector, the model's bias direction): k-means clustered the
    blank ones too, gave them a cluster of their own and merged topics 1 and 3, so a query between 1 and 3 collapsed
    to plain dense.  Fit on the other documents: each topic its own label, the query mixes 1 and 3."""
    vecs, truth = _blobs()
    bias = np.eye(D, dtype=np.float32)[10]
    allv = np.vstack([vecs, np.repeat(bias[None], 40, 0)])
    corpus = Corpus.from_texts([f"doc {i}" for i in range(80)] + [""] * 40)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        op = KnnEmbed(k=10, n_clusters=4).fit_vectors(corpus, allv)
    lab = op.labels_
    assert len(lab) == 120 and lab.min() >= 0 and lab.max() < 4
    topic_labels = [set(lab[:80][truth == b].tolist()) for b in range(4)]
    assert all(len(t) == 1 for t in topic_labels) and len(set.union(*topic_labels)) == 4, topic_labels
    ref = KnnEmbed(k=10, n_clusters=4).fit_vectors(Corpus.from_texts([f"doc {i}" for i in range(80)]), vecs)
    np.testing.assert_array_equal(lab[:80], ref.labels_)
    q = _unit(np.eye(D)[1] + np.eye(D)[3])[None]
    mix = op.mixture(q)
    assert not mix["collapsed"][0]
    assert {int(truth[lab[:80] == c][0]) for c in mix["clusters"][0] if c >= 0} == {1, 3}
    got = op(_state(op, q)).rankings[0]
    assert (got.rows < 80).all() and set(truth[got.rows].tolist()) == {1, 3}
    assert not [r for r in caplog.records if "knn_embed.fit" in r.getMessage()], caplog.text


def test_default_n_clusters_and_fit_warnings_count_the_documents_that_are_not_blank(caplog):
    vecs, _ = _blobs(n_per=2, nb=4)  # 8 documents and 200 blank ones: default 4 clusters of 8, not 10 of 208
    allv = np.vstack([vecs, np.repeat(np.eye(D, dtype=np.float32)[10][None], 200, 0)])
    corpus = Corpus.from_texts([f"doc {i}" for i in range(8)] + [" "] * 200)
    op = KnnEmbed(k=5, min_cluster_size=1).fit_vectors(corpus, allv)
    assert len(op.centroids_) == 4
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        KnnEmbed(k=5, n_clusters=20).fit_vectors(corpus, allv)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "has 8 documents that are not blank (of 208); using 8 clusters" in said, said
    assert "of the 8 documents" in said, said


def test_a_corpus_of_blank_documents_only_finds_nothing(caplog):
    corpus = Corpus.from_texts(["", " ", "\n"])
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        op = KnnEmbed(k=5).fit_vectors(corpus, np.ones((3, D), np.float32))
    assert "all 3 documents are blank" in caplog.text
    assert op(_state(op, np.ones(D))).rankings[0].rows.tolist() == []


# ------------------------------------------------------------------------------ 2: no torch
_NO_TORCH = """
import sys
import numpy as np
from ragkit.retrievers.knn_embed import KnnEmbed
from ragkit.types import Corpus, State
folder = sys.argv[1]
rng = np.random.default_rng(0)
corpus = Corpus.from_texts([f"doc {i}" for i in range(40)])
KnnEmbed(k=5, n_clusters=4, min_cluster_size=1).fit_vectors(corpus, rng.standard_normal((40, 16))).save(folder)
assert "torch" not in sys.modules, "fit imported torch"
op = KnnEmbed.load(folder)
assert "torch" not in sys.modules, "load imported torch"
ranking = op(State(["q"], vectors={op.dense.encoder.key: np.ones((1, 16), np.float32)})).rankings[0]
assert len(ranking) == 5 and "torch" not in sys.modules, "search imported torch"
"""


def test_fit_load_and_search_import_no_torch(tmp_path):
    """KnnEmbed declared uses_torch, so every fit and load imported torch (load 0.94 s against 0.07 s), though its
    search is numpy only."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "RAGKIT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", _NO_TORCH, str(tmp_path / "op")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


# ------------------------------------------------------------------------------ 5: settings that collapse every query
@pytest.mark.parametrize(("kw", "field", "said"), [
    ({"collapse_at": 0.01}, "collapse_at", "collapse_at (0.01) must be above 1 / max_components (1/4 = 0.25)"),
    ({"collapse_at": 0.5, "max_components": 2}, "collapse_at", "(1/2 = 0.5)"),
    ({"max_components": 1}, "max_components", "max_components 1 keeps one component"),
    ({"max_components": 1, "collapse_at": 1.0}, "max_components", "every query would be answered as plain dense"),
])
def test_settings_under_which_every_query_collapses_are_refused(kw, field, said):
    """The kept weights are renormalised, so the top one is >= 1/max_components: collapse_at at or below it (or
    max_components 1, one component) answered every query as plain dense, without a word."""
    with pytest.raises(ParamError, match=re.escape(said)) as e:
        KnnEmbed(**kw)
    assert str(e.value).startswith(f"knn_embed.{field}: ") and "plain dense" in str(e.value)
    vecs, _ = _blobs()
    op = KnnEmbed(k=10, n_clusters=4).fit_vectors(Corpus.from_texts([f"doc {i}" for i in range(80)]), vecs)
    with pytest.raises(ParamError, match=re.escape(said)):
        op.with_params(**kw)
    KnnEmbed(collapse_at=0.26)  # above 1/4: a query whose top weight is under it still mixes
    KnnEmbed(max_components=2, collapse_at=0.51)


# ------------------------------------------------------------------------------ 7: with_params after n_clusters=None
def test_with_params_takes_the_cluster_count_a_default_fit_chose():
    vecs, _ = _blobs()
    op = KnnEmbed(k=10).fit_vectors(Corpus.from_texts([f"doc {i}" for i in range(80)]), vecs)
    c = len(op.centroids_)
    assert op.params.n_clusters is None and c == 6  # clamp(round(sqrt(80 / 2)), 4, 1024)
    same = op.with_params(n_clusters=c, k=5)
    assert same.centroids_ is op.centroids_ and same.params.k == 5
    assert op.with_params(n_clusters=None).centroids_ is op.centroids_
    with pytest.raises(ParamError, match=re.escape("['n_clusters'] change the clustering (n_clusters=7, fitted with "
                                                   "6)")):
        op.with_params(n_clusters=7)


# ------------------------------------------------------------------------------ 8: the caller's query vectors
@pytest.mark.parametrize(("q", "said"), [
    (np.ones((2, D)), "are 2 vectors for 1 query; expected one vector per query, a 2-D float array of shape (1, dim)"),
    (np.ones((1, 8)), "are vectors of 8 dimensions, but the documents were indexed with 16; query vectors must have "
                      "the width"),
    (np.ones(D), "are a 1-D array of shape (16,) for 1 query"),
])
def test_the_callers_query_vectors_are_named_as_given_not_as_the_encoders(q, said):
    """fit_vectors' route: the caller gives the query vectors in state.vectors; a wrong shape was blamed on the
    encoder ("the encoder of model '...' (Encoder).encode_queries returned 2 vectors for 1 texts"), which never ran."""
    from ragkit.errors import DataError

    vecs, _ = _blobs()
    op = KnnEmbed(k=10, n_clusters=4).fit_vectors(Corpus.from_texts([f"doc {i}" for i in range(80)]), vecs)
    key = op.dense.encoder.key
    state = State(["q"])
    state.vectors[key] = q  # (after construction: a State given vectors of another row count refuses them itself)
    with pytest.raises(DataError) as e:
        op(state)
    assert str(e.value).startswith(f"knn_embed: the query vectors given in state.vectors[{str(key)!r}] {said}"), e.value
    assert "encode_queries" not in str(e.value) and "returned" not in str(e.value)


# ------------------------------------------------------------------------------ 4: mixture's scores and checks
def _fitted_with_blanks():
    vecs, truth = _blobs(n_per=25)
    allv = np.vstack([vecs, np.repeat(np.eye(D, dtype=np.float32)[10][None], 20, 0)])
    corpus = Corpus.from_texts([f"doc {i}" for i in range(100)] + [""] * 20)
    return KnnEmbed(k=10, n_clusters=4, collapse_at=1.0).fit_vectors(corpus, allv), allv


def test_mixture_scores_queries_in_chunks(monkeypatch):
    """mixture(q) built the whole (n_q, N) score matrix at once (1.2 GB at 300 queries x 1M documents); it scores
    chunks of queries as a search does, with the same result."""
    import ragkit.retrievers.knn_embed as mod

    op, _ = _fitted_with_blanks()
    q = _unit(np.random.default_rng(5).standard_normal((9, D)))
    whole = op.mixture(q)
    seen = []
    real = mod.topk_rows
    monkeypatch.setattr(mod, "topk_rows", lambda sc, k: (seen.append(sc.shape), real(sc, k))[1])
    monkeypatch.setattr(mod, "SCORE_CELLS", 2 * 120)  # two queries per chunk
    chunked = op.mixture(q)
    assert seen and max(rows for rows, _ in seen) <= 2, seen
    for key in ("clusters", "collapsed", "top_rows"):
        np.testing.assert_array_equal(chunked[key], whole[key], err_msg=key)
    for key in ("pi", "weights", "top_scores"):  # (a matrix product of fewer rows: rounding apart)
        np.testing.assert_allclose(chunked[key], whole[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert not np.isin(chunked["top_rows"][:, :20], np.arange(100, 120)).any()  # blank documents never vote


def test_mixture_checks_a_given_score_matrix_and_top():
    from ragkit._topk import topk_rows
    from ragkit.errors import DataError

    op, allv = _fitted_with_blanks()
    q = _unit(np.random.default_rng(6).standard_normal((3, D)))
    with pytest.raises(DataError, match=re.escape("knn_embed.mixture: s has shape (1, 5), expected (3, 120)")):
        op.mixture(q, np.ones((1, 5), np.float32))
    with pytest.raises(DataError, match=re.escape("s has shape (3, 119), expected (3, 120)")):
        op.mixture(q, (q @ allv.T)[:, :119])
    s = q @ allv.T  # the blank documents scored: set to -inf in a copy (and the given top, read from them, redone)
    s_before = s.copy()
    want = op.mixture(q)
    for top in (None, topk_rows(s, 20)):
        got = op.mixture(q, s, top=top)
        for key in ("pi", "clusters", "weights", "collapsed"):
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    np.testing.assert_array_equal(s, s_before)
    masked = s.copy()
    masked[:, 100:] = -np.inf
    with pytest.raises(DataError, match=re.escape("top has shapes [(3, 5), (3, 5)], expected (rows, scores) of "
                                                  "shape (3, depth) with depth >= 20 (n_neighbors")):
        op.mixture(q, masked, top=topk_rows(masked, 5))  # fewer neighbours than n_neighbors would vote
    with pytest.raises(DataError, match=re.escape("depth >= 100 (prior local: local_depth")):
        op.with_params(prior="local", local_depth=100).mixture(q, masked, top=topk_rows(masked, 50))
    with pytest.raises(DataError, match=re.escape("top has shapes [(2, 20), (2, 20)]")):
        op.mixture(q, masked, top=topk_rows(masked[:2], 20))
    got = op.mixture(q, masked, top=topk_rows(masked, 30))
    np.testing.assert_array_equal(got["pi"], want["pi"])


# ------------------------------------------------------------------------------ 3: one k-means step
def test_one_kmeans_step_for_knn_embed_and_the_codebook(monkeypatch):
    """knn_embed and fit_codebook wrote k-means twice (ConvergenceWarning silenced, centroids renormalised by hand,
    the same warning on duplicate documents); only knn_embed limited its threads.  Both use spherical_kmeans now,
    and fit_codebook takes the thread limit."""
    import threadpoolctl

    from ragkit.retrievers import centroids

    limits: list[object] = []
    real = threadpoolctl.threadpool_limits
    monkeypatch.setattr(threadpoolctl, "threadpool_limits", lambda lim=None, *a, **kw: (limits.append(lim),
                                                                                         real(lim, *a, **kw))[1])
    calls: list[int] = []
    real_km = centroids.spherical_kmeans
    monkeypatch.setattr(centroids, "spherical_kmeans", lambda x, c, **kw: (calls.append(c), real_km(x, c, **kw))[1])
    data = np.tile(np.eye(4, dtype=np.float32), (8, 1))
    cb = centroids.fit_codebook(data, 4, threads=2)
    assert limits == [2] and calls == [4] and np.allclose(np.linalg.norm(cb, axis=1), 1)
    vecs, _ = _blobs()
    KnnEmbed(k=10, n_clusters=4, fit_threads=1).fit_vectors(Corpus.from_texts([f"doc {i}" for i in range(80)]), vecs)
    assert limits == [2, 1] and calls == [4, 4]


# ------------------------------------------------------------------------------ 6: add / remove
@pytest.fixture
def hashing(tmp_path, monkeypatch):
    from ragkit.encoders import HashingEncoder, register_encoder, unregister_encoder

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    register_encoder("s55-hash", HashingEncoder(dim=32), replace=True)
    yield "s55-hash"
    unregister_encoder("s55-hash")


_WORDS = ["cell protein", "enzyme folding", "virus vaccine", "galaxy star", "river water", "market price"]
_TEXTS = [f"{_WORDS[i % 6]} {_WORDS[(i * 5) % 6].split()[0]} note {i}" for i in range(48)]


def test_mmr_add_and_remove_follow_the_retriever(hashing, tmp_path):
    """Dense | MMR could not take added documents (MMR holds one vector row per document): add appends the new
    rows, remove drops them and renumbers, as a fit on the edited corpus holds them."""
    from ragkit.filters.mmr import MMR
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import Dense

    whole = Corpus.from_texts(_TEXTS, ids=[f"d{i}" for i in range(48)])
    first, rest = whole.subset(np.arange(48) < 40), whole.subset(np.arange(48) >= 40)
    queries = ["cell protein", "galaxy water", "market vaccine note"]

    def pipe():
        return Pipeline([Dense(model=hashing, k=20), MMR(model=hashing, k=8, lambda_mult=0.5)])

    grown = pipe().fit(first)
    for leaf in grown.steps:
        leaf.add(rest)
    fresh = pipe().fit(whole)
    np.testing.assert_array_equal(grown.steps[1].vectors_, fresh.steps[1].vectors_)
    assert [list(x) for x in grown.search(queries).doc_ids] == [list(x) for x in fresh.search(queries).doc_ids]
    gone = ["d3", "d41", "d17"]
    for leaf in grown.steps:
        leaf.remove(gone)
    kept = whole.subset(~np.isin(whole.ids, gone))
    refit = pipe().fit(kept)
    np.testing.assert_array_equal(grown.steps[1].vectors_, refit.steps[1].vectors_)
    assert [list(x) for x in grown.search(queries).doc_ids] == [list(x) for x in refit.search(queries).doc_ids]
    grown.save(tmp_path / "p")
    loaded = Pipeline.load(tmp_path / "p")
    assert [list(x) for x in loaded.search(queries).doc_ids] == [list(x) for x in refit.search(queries).doc_ids]
    mmr = grown.steps[1]
    from ragkit.errors import DataError

    with pytest.raises(DataError, match=r"mmr.add: 1 document id is already held"):
        mmr.add(Corpus.from_texts(["x"], ids=["d0"]))
    with pytest.raises(DataError, match=re.escape("mmr.add: the new documents' vectors have 8 dimensions, the fitted "
                                                  "ones 32")):
        mmr.add(Corpus.from_texts(["x"], ids=["n0"]), vectors=np.ones((1, 8), np.float32))
    with pytest.raises(DataError, match=r"mmr.remove: document id\(s\) \['nope'\] not in the corpus"):
        mmr.remove(["nope"])
    assert len(mmr.corpus_) == len(mmr.vectors_) == 45


def test_knn_embed_add_labels_new_documents_with_their_nearest_centroid(tmp_path):
    """KnnEmbed could not take added documents; a new document joins its nearest centroid's cluster, the search
    structures are rebuilt, and the search equals that of a fit on the whole corpus clustered alike (well
    separated topics: the same partition)."""
    vecs, truth = _blobs(n_per=30)
    ids = [f"d{i}" for i in range(120)]
    whole = Corpus.from_texts([f"doc {i}" for i in range(120)], ids=ids)
    first = np.arange(120) % 5 != 0  # every fifth document added later
    kw = dict(k=12, n_clusters=4, min_cluster_size=3, collapse_at=1.0, weight_floor=0.0, anchor_share=0.25)
    grown = KnnEmbed(**kw).fit_vectors(whole.subset(first), vecs[first])
    cent = grown.centroids_.copy()
    grown.add(whole.subset(~first), vectors=vecs[~first])
    assert grown.centroids_ is not None and np.array_equal(grown.centroids_, cent)
    order = np.concatenate([np.flatnonzero(first), np.flatnonzero(~first)])
    assert grown.corpus_.ids.tolist() == [ids[i] for i in order]
    fresh = KnnEmbed(**kw).fit_vectors(grown.corpus_, vecs[order])
    assert len(set(zip(grown.labels_.tolist(), fresh.labels_.tolist()))) == 4  # the same partition
    assert len(set(zip(truth[order].tolist(), grown.labels_.tolist()))) == 4
    q = _unit(np.random.default_rng(9).standard_normal((6, D)) + 2 * np.eye(D)[[0, 1, 2, 3, 0, 2]])
    got, want = grown(_state(grown, q)).rankings, fresh(_state(fresh, q)).rankings
    assert [r.rows.tolist() for r in got] == [r.rows.tolist() for r in want]
    assert any(r.fields["component"].max() >= 0 for r in got)  # (mixed, not collapsed to dense)
    # remove: rows dropped and renumbered, as a fit on what is left
    gone = ["d5", "d7", "d63"]
    grown.remove(gone)
    left = ~np.isin(np.array(ids)[order], gone)
    assert grown.corpus_.ids.tolist() == np.array(ids)[order][left].tolist() and len(grown.labels_) == 117
    refit = KnnEmbed(**kw).fit_vectors(grown.corpus_, vecs[order][left])
    got, want = grown(_state(grown, q)).rankings, refit(_state(refit, q)).rankings
    assert [r.rows.tolist() for r in got] == [r.rows.tolist() for r in want]
    grown.save(tmp_path / "k")
    loaded = KnnEmbed.load(tmp_path / "k")
    np.testing.assert_array_equal(loaded.labels_, grown.labels_)
    assert [r.rows.tolist() for r in loaded(_state(loaded, q)).rankings] == [r.rows.tolist() for r in got]


def test_knn_embed_add_of_blank_documents_and_refusals():
    from ragkit.errors import DataError

    vecs, _ = _blobs()
    op = KnnEmbed(k=10, n_clusters=4).fit_vectors(Corpus.from_texts([f"doc {i}" for i in range(80)]), vecs)
    before = (op.corpus_, op.vectors_, op.labels_)
    with pytest.raises(DataError, match=re.escape("knn_embed.add: the new documents' vectors have 8 dimensions, the "
                                                  "indexed ones 16")):
        op.add(Corpus.from_texts(["x"], ids=["n0"]), vectors=np.ones((1, 8), np.float32))
    # (the caller's vectors, no encoder's output: worded as given, review s55)
    with pytest.raises(DataError, match=re.escape("knn_embed.add: the vectors given are 2 vectors for 1 document; "
                                                  "expected one vector per document, in the corpus's order, a 2-D "
                                                  "float array of shape (1, dim)")):
        op.add(Corpus.from_texts(["x"], ids=["n0"]), vectors=np.ones((2, D), np.float32))
    with pytest.raises(DataError, match="knn_embed.add"):
        op.add(Corpus.from_texts(["x"], ids=["n0"]), vectors=np.full((1, D), np.nan, np.float32))
    with pytest.raises(DataError, match="already indexed"):
        op.add(Corpus.from_texts(["x"], ids=[op.corpus_.ids[0]]), vectors=np.ones((1, D), np.float32))
    assert all(a is b for a, b in zip((op.corpus_, op.vectors_, op.labels_), before))  # nothing changed
    op.add(Corpus.from_texts(["", "more doc"], ids=["b", "m"]), vectors=np.vstack([np.eye(D)[10], np.eye(D)[2]]))
    assert len(op.labels_) == 82 and op._blank is not None and np.flatnonzero(op._blank).tolist() == [80]
    q = np.eye(D, dtype=np.float32)[[10, 2]]
    assert all(80 not in r.rows for r in op(_state(op, q)).rankings)
    assert 81 in op(_state(op, q)).rankings[1].rows


# ------------------------------------------------------------------------------ 7: edits while another search runs
def _edit_during(monkeypatch, cls, edit):
    """Run ``edit()`` once, from inside the next search of ``cls`` (its ``k_for``, called after the search took the
    state it reads and before it scores anything)."""
    real = cls.k_for
    fired: list[int] = []

    def k_for(self, state):
        if not fired:
            fired.append(1)
            edit()
        return real(self, state)

    monkeypatch.setattr(cls, "k_for", k_for)
    return fired


def _unit_texts(model, texts):
    from ragkit.encoders import get_encoder

    v = get_encoder(model).encode(list(texts))
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


@pytest.mark.parametrize("search", ["gather", "partitioned"])
@pytest.mark.parametrize("edit", ["add", "remove"])
def test_knn_embed_edit_during_a_search_answers_from_before_it(hashing, monkeypatch, search, edit):
    """An add or remove fired while a search runs (here from inside it): the search read vectors_, labels_ and the
    per-cluster structures one at a time, and the edit set them one by one, so it failed (IndexError) or returned
    removed documents with other documents' cosines.  Now every edit publishes one view and the search reads the one
    it took when it began: the answer is the one from before the edit, each score the document's true cosine; the
    next search sees the edit, and a partitioned search's per-cluster copies are those of the view searched.  Called
    on a State (its rows mapped with the corpus after the call), a remove during the call is the "edited during the
    search" DataError."""
    from ragkit.errors import DataError

    texts = dict(zip([f"d{i}" for i in range(48)], _TEXTS))
    corpus = Corpus.from_texts(_TEXTS, ids=list(texts))
    kw = dict(model=hashing, k=8, n_clusters=3, n_init=1, min_cluster_size=3, collapse_at=1.0, weight_floor=0.0,
              anchor_share=0.25, search=search)
    op, ref = KnnEmbed(**kw).fit(corpus), KnnEmbed(**kw).fit(corpus)
    queries = ["cell protein note 5", "galaxy water", "market vaccine note"]
    qv = _unit_texts(hashing, queries)

    def check_scores(run):
        for i, (ids, sc) in enumerate(zip(run.doc_ids, run.scores)):
            np.testing.assert_allclose(sc, _unit_texts(hashing, [texts[d] for d in ids]) @ qv[i], atol=1e-5)

    want = ref.search(queries)
    added = {"n0": "cell protein note 5", "n1": "galaxy water note", "n2": "market vaccine note 9"}
    gone = sorted({d for row in want.doc_ids for d in row[:2]})
    if edit == "add":
        def do_edit():
            op.add(Corpus.from_texts(list(added.values()), ids=list(added)))
            texts.update(added)
    else:
        def do_edit():
            op.remove(gone)
    fired = _edit_during(monkeypatch, KnnEmbed, do_edit)
    got = op.search(queries)
    assert fired and [list(x) for x in got.doc_ids] == [list(x) for x in want.doc_ids]
    check_scores(got)
    after = op.search(queries)  # the next search sees the edit (and builds its own per-cluster copies)
    found = {d for row in after.doc_ids for d in row}
    assert (found & set(added)) if edit == "add" else not (found & set(gone))
    check_scores(after)
    if search == "partitioned":
        assert op._parts is not None and op._parts[0] is op._search_view()
    if edit == "remove":  # on a State: mapped with corpus_ after the call, which the remove changed
        fired.clear()
        gone = list(op.corpus_.ids[:2])
        with pytest.raises(DataError, match=r"knn_embed: the index was edited \(add / remove on another thread\) "
                                            r"during the search"):
            op(State.of(queries))


def test_knn_embed_search_of_a_corpus_edited_since_its_view_is_refused(hashing):
    """A search whose pipeline read the corpus after a remove, with the view it took before (the remove landed
    between the two): its rows would be mapped with the other corpus; refused with the "edited during the search"
    DataError, never answered wrongly.  After an add the view's rows are the same documents' rows: answered."""
    from ragkit.errors import DataError
    from ragkit.operator import pinned_view
    from ragkit.pipelines._compose import _TRACE_IDS

    corpus = Corpus.from_texts(_TEXTS, ids=[f"d{i}" for i in range(48)])
    op = KnnEmbed(model=hashing, k=6, n_clusters=3, n_init=1, collapse_at=1.0, weight_floor=0.0).fit(corpus)
    with pinned_view(op):
        op.add(Corpus.from_texts(["cell protein extra"], ids=["n0"]))
        token = _TRACE_IDS.set(op.corpus_.ids)
        try:
            got = op(State.of(["cell protein"])).rankings[0]
        finally:
            _TRACE_IDS.reset(token)
        assert len(got) == 6 and got.rows.max() < 48
        op.remove(["d0", "d1"])
        token = _TRACE_IDS.set(op.corpus_.ids)
        try:
            with pytest.raises(DataError, match=r"knn_embed: the index was edited \(add / remove on another thread\) "
                                                r"during the search"):
                op(State.of(["cell protein"]))
        finally:
            _TRACE_IDS.reset(token)


@pytest.mark.parametrize("edit", ["add", "remove"])
def test_knn_embed_edits_on_another_thread_never_fail_a_search(hashing, edit):
    """Adds (or removes) on one thread while three threads search: adds made most searches fail with IndexError,
    removes some, and a remove returned documents with other documents' cosines.  Now no add fails a search, a
    remove fails one only with the "edited during the search" DataError, and every score is its document's true
    cosine."""
    import threading

    from ragkit.encoders import get_encoder

    def text(i):
        return f"{_WORDS[i % 6]} {_WORDS[(i * 5) % 6].split()[0]} note{i}"

    n0 = 600
    corpus = Corpus.from_texts([text(i) for i in range(n0)], ids=[f"d{i}" for i in range(n0)])
    op = KnnEmbed(model=hashing, k=20, n_clusters=6, n_init=1, collapse_at=1.0, weight_floor=0.0).fit(corpus)
    enc = get_encoder(hashing)
    queries = ["cell protein note5", "galaxy water", "market vaccine"]
    qv = unit = enc.encode(queries)
    unit = qv / np.maximum(np.linalg.norm(qv, axis=1, keepdims=True), 1e-12)
    stop = threading.Event()
    errors: list[str] = []
    wrong: list[tuple[str, float, float]] = []
    searches = [0]

    def searcher():
        while not stop.is_set():
            try:
                run = op.search(queries, k=20)
            except Exception as e:  # noqa: BLE001 (counted, then asserted)
                if not (edit == "remove" and "during the search" in str(e)):
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            searches[0] += 1
            for i, (ids, sc) in enumerate(zip(run.doc_ids, run.scores)):
                dv = enc.encode([text(int(d[1:])) for d in ids])
                dv = dv / np.maximum(np.linalg.norm(dv, axis=1, keepdims=True), 1e-12)
                true = dv @ unit[i]
                wrong.extend((d, float(s), float(t)) for d, s, t in zip(ids, sc, true) if abs(s - t) > 1e-4)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for j in range(60):
            if edit == "add":
                op.add(Corpus.from_texts([text(n0 + 5 * j + t) for t in range(5)],
                                         ids=[f"d{n0 + 5 * j + t}" for t in range(5)]))
            else:
                op.remove([f"d{5 * j + t}" for t in range(5)])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert not wrong, wrong[:3]
    assert searches[0] > 0


def test_mmr_remove_during_a_pipeline_search_answers_from_before_it(hashing, monkeypatch):
    """Dense | MMR, documents removed from both steps while a search runs (after dense ranked, before MMR read its
    vectors): MMR read the renumbered vectors for the rows of the corpus from before, and reordered the results
    with other documents' vectors, silently.  Pipeline.search pins each step's view; MMR now publishes one (corpus,
    vectors) and reads it: the answer is the one from before the edit."""
    import ragkit.filters.mmr as mmr_module
    from ragkit.filters.mmr import MMR
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import Dense

    corpus = Corpus.from_texts(_TEXTS, ids=[f"d{i}" for i in range(48)])

    def pipe():
        return Pipeline([Dense(model=hashing, k=10), MMR(model=hashing, k=5, lambda_mult=0.5)]).fit(corpus)

    queries = ["cell protein note 5", "galaxy water", "market vaccine note"]
    want = [list(x) for x in pipe().search(queries, k=5).doc_ids]
    p = pipe()
    real = mmr_module.cut_k
    fired: list[int] = []

    def cut_k(op, state):
        if not fired:
            fired.append(1)
            for leaf in p.steps:
                leaf.remove(["d0", "d1", "d2", "d6"])
        return real(op, state)

    monkeypatch.setattr(mmr_module, "cut_k", cut_k)
    got = [list(x) for x in p.search(queries, k=5).doc_ids]
    assert fired and got == want
    assert not {"d0", "d1", "d2", "d6"} & {d for row in p.search(queries, k=5).doc_ids for d in row}


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_mmr_add_refuses_vectors_with_nan_or_inf(hashing, bad):
    """mmr.add(vectors=...) took NaN or infinite vectors (KnnEmbed and Dense refuse them): every cosine of that
    document was NaN, ranked last in each pool, silently.  Refused as theirs are; nothing changes."""
    from ragkit.errors import DataError
    from ragkit.filters.mmr import MMR

    corpus = Corpus.from_texts(_TEXTS, ids=[f"d{i}" for i in range(48)])
    mmr = MMR(model=hashing, k=5).fit(corpus)
    before = (mmr.corpus_, mmr.vectors_)
    v = np.ones((2, 32), np.float32)
    v[1, 3] = bad
    with pytest.raises(DataError, match=re.escape("mmr.add: 1 of the 2 document vectors contain NaN or infinite "
                                                  "values (first at position 1)")):
        mmr.add(Corpus.from_texts(["x", "y"], ids=["n0", "n1"]), vectors=v)
    assert mmr.corpus_ is before[0] and mmr.vectors_ is before[1]
    # the caller's vectors, which no encoder returned, are worded as given (not "vectors returned ... an encoder
    # returns ...")
    with pytest.raises(DataError, match=re.escape("mmr.add: the vectors given are 1 vectors for 2 documents; expected "
                                                  "one vector per document, in the corpus's order, a 2-D float array "
                                                  "of shape (2, dim)")):
        mmr.add(Corpus.from_texts(["x", "y"], ids=["n0", "n1"]), vectors=np.ones((1, 32), np.float32))
    with pytest.raises(DataError, match=r"^mmr\.add: the vectors given are a 1-D array of shape \(32,\) for 2 "
                                        r"documents; expected one vector per document"):
        mmr.add(Corpus.from_texts(["x", "y"], ids=["n0", "n1"]), vectors=np.ones(32, np.float32))


def test_knn_embed_fitted_with_fit_vectors_refuses_an_add_without_vectors(hashing, tmp_path):
    """After fit_vectors (vectors of a space no encoder of it gives), add() without vectors= encoded the new documents
    with params.model, silently: clustered and scored in another space (of the same width here).  Refused, naming
    fit_vectors, also after a save and load; add(vectors=...) is taken, and a fit by encoding adds as before."""
    from ragkit.errors import DataError

    vecs, _ = _blobs()
    corpus = Corpus.from_texts(_TEXTS[:40] + _TEXTS[:40], ids=[f"d{i}" for i in range(80)])
    op = KnnEmbed(model=hashing, k=10, n_clusters=4).fit_vectors(corpus, np.hstack([vecs, vecs]))  # (width 32)
    new = Corpus.from_texts(["cell protein"], ids=["n0"])
    said = r"knn_embed\.add: no vectors given for the 1 new document, but this retriever was fitted with fit_vectors"
    with pytest.raises(DataError, match=said):
        op.add(new)
    assert len(op.corpus_) == 80
    op.save(tmp_path / "k")
    loaded = KnnEmbed.load(tmp_path / "k")
    with pytest.raises(DataError, match=said):
        loaded.add(new)
    with pytest.raises(DataError, match=said):
        op.with_params(k=5).add(new)
    loaded.add(new, vectors=np.ones((1, 32), np.float32))
    assert len(loaded.corpus_) == 81
    encoded = KnnEmbed(model=hashing, k=10, n_clusters=4).fit(Corpus.from_texts(_TEXTS,
                                                                                ids=[f"d{i}" for i in range(48)]))
    encoded.add(new)
    assert len(encoded.corpus_) == 49


@pytest.mark.parametrize("which", ["mmr", "knn_embed"])
def test_an_add_appends_vectors_without_copying_them_all(hashing, which):
    """Each mmr / knn_embed add copied the whole vector matrix (np.concatenate: 80-88 ms for a one-document add at
    200k x 384, Dense 7 ms): the rows now grow in a buffer with room to spare (RowBuffer, Dense's amortised growth),
    so small adds share one buffer; a view published before keeps its rows; a shallow copy edited apart, and a
    pickled copy, keep their own rows."""
    import copy
    import pickle

    from ragkit.filters.mmr import MMR

    corpus = Corpus.from_texts(_TEXTS, ids=[f"d{i}" for i in range(48)])
    op = (MMR(model=hashing, k=5) if which == "mmr" else
          KnnEmbed(model=hashing, k=6, n_clusters=3, n_init=1, collapse_at=1.0, weight_floor=0.0)).fit(corpus)
    rng = np.random.default_rng(0)

    def new(tag, n=1):
        return Corpus.from_texts([f"{tag} {j}" for j in range(n)], ids=[f"{tag}{j}" for j in range(n)])

    op.add(new("a"), vectors=rng.standard_normal((1, 32)).astype(np.float32))
    first = op.vectors_
    view = op._search_view()
    held = np.array(view.vectors)
    for j in range(5):
        op.add(new(f"b{j}"), vectors=rng.standard_normal((1, 32)).astype(np.float32))
        assert np.shares_memory(op.vectors_, first)  # (the same buffer: no copy of the other rows)
    assert len(op.vectors_) == 54 and len(view.vectors) == 49 and np.array_equal(view.vectors, held)
    twin = copy.copy(op)  # (shares the buffer object): edited apart, neither writes over the other's rows
    va, vb = _unit(rng.standard_normal((1, 32))), _unit(rng.standard_normal((1, 32)))
    op.add(new("x"), vectors=va)
    twin.add(new("y"), vectors=vb)
    np.testing.assert_allclose(op.vectors_[-1], va[0], atol=1e-6)
    np.testing.assert_allclose(twin.vectors_[-1], vb[0], atol=1e-6)
    again = pickle.loads(pickle.dumps(op))
    again.add(new("z"), vectors=vb)
    np.testing.assert_allclose(op.vectors_[-1], va[0], atol=1e-6)
    assert len(again.vectors_) == 56 and len(op.vectors_) == 55


@pytest.mark.parametrize("shape", ["dense|mmr", "knn_embed"])
def test_langchain_add_encodes_once_before_the_edit(tmp_path, monkeypatch, shape):
    """RagkitRetriever encoded ahead (outside the write lock searches wait on) for Dense only: Dense | MMR encoded
    the new documents twice, MMR's inside the edit, and a knn_embed pipeline inside it.  Every step whose add takes
    vectors= now gets them encoded ahead, one encoding per encoder key: one encode, none in the edit."""
    from ragkit.encoders import HashingEncoder, register_encoder, unregister_encoder
    from ragkit.filters.mmr import MMR
    from ragkit.integrations.langchain import RagkitRetriever
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import Dense

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    calls: list[tuple[int, bool]] = []
    editing = [False]

    class Spy(HashingEncoder):
        def encode(self, texts, **kw):
            calls.append((len(texts), editing[0]))
            return super().encode(texts, **kw)

    register_encoder("s55-spy", Spy(dim=32), replace=True)
    try:
        for cls in (Dense, MMR, KnnEmbed):
            real = cls.add

            def add(self, corpus, *, vectors=None, _real=real):
                editing[0] = True
                try:
                    return _real(self, corpus, vectors=vectors)
                finally:
                    editing[0] = False

            monkeypatch.setattr(cls, "add", add)
        pipe = (Pipeline([Dense(model="s55-spy", k=10), MMR(model="s55-spy", k=5)]) if shape == "dense|mmr" else
                KnnEmbed(model="s55-spy", k=5, n_clusters=3, n_init=1, collapse_at=1.0, weight_floor=0.0))
        r = RagkitRetriever.from_texts(_TEXTS, pipeline=pipe, k=5)
        calls.clear()
        r.add_texts(["new cell protein text", "new river water text"], ids=["n1", "n2"])
        assert calls == [(2, False)], calls
        got = r.invoke("new cell protein text")
        assert got[0].id == "n1"
    finally:
        unregister_encoder("s55-spy")
