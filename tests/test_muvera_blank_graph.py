"""MUVERA with ``search: hnsw`` over a corpus holding blank documents (no tokens, never found) builds its graph once:
it built every document's node, removed the blank ones' slots, then rebuilt the graph without them.  Now the index
is built with those slots dead (``VectorIndex.build(..., dead=...)``), whose graph is the one the old build, remove
and rebuild gave: the same bytes, so the same rankings."""

from __future__ import annotations

import numpy as np
import pytest
import usearch.index

from ragkit.errors import DataError
from ragkit.retrievers import Muvera
from ragkit.retrievers._index import VectorIndex
from ragkit.retrievers.fde import fde_dim, fde_document_chunks
from ragkit.types import Corpus

TEXTS = [f"cell protein apoptosis {i}" if i % 2 else f"folding study of enzymes {i}" for i in range(12)]
QUERIES = ["what is it?", "COVID-19", "1", "cell protein", "enzymes folding"]
FDE = {"k_sim": 3, "d_proj": 8, "r_reps": 4}


def _corpus() -> Corpus:  # 12 documents with text, 4 blank ones first, between and last
    ids = ["b0", *[str(i) for i in range(6)], "b1", "b2", *[str(i) for i in range(6, 12)], "b3"]
    texts = ["", *TEXTS[:6], " ", "\n", *TEXTS[6:], "\u200b"]
    return Corpus(ids=ids, texts=texts)


@pytest.fixture
def graph_adds(monkeypatch):
    """The number of nodes added to every usearch graph made while the test runs, graph by graph."""
    added: dict[int, int] = {}
    real = usearch.index.Index.add

    def add(self, keys, vectors, **kw):  # noqa: ANN001, ANN003, ANN202
        added[id(self)] = added.get(id(self), 0) + len(np.atleast_1d(keys))
        return real(self, keys, vectors, **kw)

    monkeypatch.setattr(usearch.index.Index, "add", add)
    return added


def test_muvera_hnsw_builds_its_graph_once_without_the_blank_documents(graph_adds):
    """It added 28 nodes to two graphs (the 16 documents, then the 12 with text again)."""
    corpus = _corpus()
    op = Muvera(k=30, candidates=40, search="hnsw", **FDE).fit(corpus)
    assert list(graph_adds.values()) == [12]  # one graph, the documents with text only
    index = op.index_
    assert index.backend == "hnsw" and len(index.usearch) == 12 and index._graph_dead() == 0
    assert index.n_slots == 16 and index.alive.tolist() == (~corpus.blank).tolist()  # slots: rows of documents
    for ids in op.search(QUERIES).doc_ids:
        assert sorted(ids.tolist()) == sorted(str(i) for i in range(12))


def test_muvera_hnsw_rankings_are_those_of_the_graph_built_then_rebuilt(monkeypatch):
    """The graph is the one the former build, remove and rebuild gave (one thread: a graph built on several
    depends on their timing), byte for byte, and so are the rankings."""
    monkeypatch.setattr(VectorIndex, "_threads", lambda self: 1)
    corpus = _corpus()
    op = Muvera(k=30, candidates=40, search="hnsw", **FDE).fit(corpus)
    tv, cfg = op.tokens_, op.fde_config
    old = op._new_index().build_chunks(len(tv), fde_dim(cfg, tv.dim), lambda: fde_document_chunks(tv.data,
                                                                                                   tv.offsets, cfg))
    old.remove(np.flatnonzero(np.diff(tv.offsets) == 0))  # (the former fit's steps)
    old.rebuild_graph()
    assert bytes(op.index_.usearch.save()) == bytes(old.usearch.save())
    np.testing.assert_array_equal(op.index_.alive, old.alive)
    got = op.search(QUERIES)
    op.index_ = old
    want = op.search(QUERIES)
    for a, b in zip(got.doc_ids, want.doc_ids):
        assert a.tolist() == b.tolist()
    for a, b in zip(got.scores, want.scores):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def _rebuilt(x: np.ndarray, dead: np.ndarray, **kw) -> VectorIndex:  # noqa: ANN003
    old = VectorIndex(threads=1, **kw).build(x)
    old.remove(dead)
    old.rebuild_graph()
    return old


@pytest.mark.parametrize("kw", [{"dtype": "f32"}, {"dtype": "f16"}, {"dtype": "i8"}, {"dtype": "b1"},
                                {"dtype": "i8", "metric": "ip", "rescore": True}, {"dtype": "f32", "reduce": "pca:8"},
                                {"dtype": "f16", "reorder": False}])
def test_a_build_with_dead_slots_is_the_build_remove_and_rebuild(kw, graph_adds):
    x = np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32)
    dead = np.array([0, 5, 6, 7, 200, 399])
    got = VectorIndex(threads=1, search="hnsw", **kw).build(x, dead=dead)
    assert list(graph_adds.values()) == [394]  # one graph, the live vectors only
    want = _rebuilt(x, dead, search="hnsw", **kw)
    assert bytes(got.usearch.save()) == bytes(want.usearch.save())
    np.testing.assert_array_equal(got.alive, want.alive)
    assert got.n_alive == 394 and got._graph_dead() == 0
    if kw["dtype"] == "i8":
        assert got.i8_scale == want.i8_scale  # (fitted on every vector, the dead ones too, as before)
    for a, b in zip(got.search(x[:20], 10), want.search(x[:20], 10)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert not np.isin(got.search(x[:50], 30)[0], dead).any()


def test_a_build_with_dead_slots_reordered_is_the_build_remove_and_rebuild():
    """Above REORDER_MIN vectors the graph's insertion order clusters the vectors: the rebuild's, of the live
    codes."""
    x = np.random.default_rng(1).standard_normal((17_000, 8)).astype(np.float32)
    dead = np.random.default_rng(2).choice(17_000, 600, replace=False)
    got = VectorIndex(threads=1, search="hnsw", dtype="f16", connectivity=8, expansion_add=32).build(x, dead=dead)
    want = _rebuilt(x, dead, search="hnsw", dtype="f16", connectivity=8, expansion_add=32)
    assert bytes(got.usearch.save()) == bytes(want.usearch.save())


@pytest.mark.parametrize("dtype", ["f32", "f16", "i8", "b1"])
def test_an_exact_build_with_dead_slots_is_the_build_and_remove(dtype):
    x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    dead = np.array([3, 4, 299])
    chunks = lambda: ((a, min(a + 64, 300), x[a:a + 64].copy()) for a in range(0, 300, 64))  # noqa: E731
    for got in (VectorIndex(dtype=dtype, metric="ip").build(x, dead=dead),
                VectorIndex(dtype=dtype, metric="ip").build_chunks(300, 16, chunks, dead=dead)):
        want = VectorIndex(dtype=dtype, metric="ip").build(x)
        want.remove(dead)
        assert got.backend == "numpy" and got.n_alive == 297
        np.testing.assert_array_equal(got.alive, want.alive)
        np.testing.assert_array_equal(got.codes, want.codes)
        for a, b in zip(got.search(x[:10], 8), want.search(x[:10], 8)):
            np.testing.assert_array_equal(a, b)


def test_a_build_refuses_dead_slots_it_does_not_build():
    x = np.ones((4, 3), np.float32)
    with pytest.raises(DataError, match=r"dead slots must be slots of the 4 vectors built, in \[0, 4\), got \[4\]"):
        VectorIndex(search="hnsw").build(x, dead=np.array([4]))
    with pytest.raises(DataError, match=r"got \[-1\]"):
        VectorIndex().build_chunks(4, 3, lambda: [(0, 4, x.copy())], dead=[-1])
    every = VectorIndex(search="hnsw").build(x, dead=np.arange(4))  # every slot dead: an empty graph
    assert every.n_alive == 0 and len(every.usearch) == 0
