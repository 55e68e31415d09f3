"""Blank documents at load and in an HNSW graph: knn_embed reads them from ``blank.npy`` (or, for a save made
before it, from the titles and texts) without joining every title and text into a copy
(``Corpus.full_texts``: 1.5 GB at 1M SciFact-sized documents); muvera's HNSW graph is rebuilt without their
removed FDE slots, so an unfiltered search does not go through the filtered path for their dead nodes."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.retrievers import Muvera
from ragkit.retrievers.knn_embed import KnnEmbed
from ragkit.types import Corpus

TEXTS = [f"cell protein apoptosis {i}" if i % 2 else f"folding study of enzymes {i}" for i in range(12)]
QUERIES = ["what is it?", "COVID-19", "1", "cell protein"]


def _corpus() -> Corpus:
    ids = ["b0", *[str(i) for i in range(6)], "b1", *[str(i) for i in range(6, 12)], "b2"]
    texts = ["", *TEXTS[:6], " \u200b", *TEXTS[6:], "\n"]
    titles = ["", *[""] * 6, "\u200b", *[f"title {i}" for i in range(6)], ""]  # a blank title on a blank text
    return Corpus(ids=ids, texts=texts, titles=titles)


def _no_full_texts(self):  # noqa: ANN001, ANN202
    raise AssertionError("Corpus.full_texts read at load")


@pytest.mark.parametrize("old_save", [False, True])
def test_knn_embed_load_finds_blank_documents_without_joining_the_texts(tmp_path, monkeypatch, old_save):
    op = KnnEmbed(k=30, n_clusters=3, min_cluster_size=1, collapse_at=1.0, weight_floor=0.01).fit(_corpus())
    want = op.search(QUERIES)
    op.save(tmp_path / "op")
    if old_save:  # a save made before blank.npy: the blank documents are found from the titles and texts
        saved = list((tmp_path / "op").rglob("blank.npy"))
        assert len(saved) == 1
        saved[0].unlink()
    monkeypatch.setattr(Corpus, "full_texts", property(_no_full_texts))
    for mmap in (False, True):
        loaded = KnnEmbed.load(tmp_path / "op", mmap=mmap, verify=False) if old_save else \
            KnnEmbed.load(tmp_path / "op", mmap=mmap)
        assert np.flatnonzero(loaded._blank).tolist() == [0, 7, 14]
        got = loaded.search(QUERIES)
        assert [list(x) for x in got.doc_ids] == [list(x) for x in want.doc_ids]
        for ids in got.doc_ids:
            assert not any(str(d).startswith("b") for d in ids) and len(ids) == 12


def test_blank_rows_are_those_of_the_joined_texts():
    corpus = _corpus()
    from ragkit.encoders.sentence import blank_texts

    assert (blank_texts(corpus.titles) & blank_texts(corpus.texts)).tolist() == blank_texts(corpus.full_texts).tolist()


def test_muvera_hnsw_graph_holds_no_blank_document():
    words = ["cell", "protein", "enzyme", "fold", "virus", "gene", "drug", "dose", "trial", "brain"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 3)) + f" {i}" for i in range(300)]
    texts.insert(137, " \u200b ")
    corpus = Corpus(ids=[f"d{i}" for i in range(len(texts))], texts=texts)
    op = Muvera(k=20, candidates=40, search="hnsw", k_sim=3, d_proj=8, r_reps=4).fit(corpus)
    index = op.index_
    assert index.usearch is not None
    assert index._graph_dead() == 0
    assert len(index.usearch) == len(texts) - 1 and not index.alive[137]
    for ids in op.search(["what is it?", "1", "cell protein", "virus dose", ""]).doc_ids:
        assert "d137" not in list(ids)
