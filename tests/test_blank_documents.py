"""A blank document (empty, whitespace or invisible characters only, title and text) is never found by an
embedding retriever, as a blank query finds nothing.  It encoded to the model's bias direction (MiniLM: the
vector of an empty text), which short queries are near: ``Dense`` ranked three blank documents first for
"what is it?" and "1" (cosine 0.24 / 0.48 against 0.11 / 0.14 for the best real one), and so did
``knn_embed``, ``maxsim_exact``, ``muvera`` and ``dbnorm_dense``.  BM25 never returned them."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.filters.dbnorm import DBNorm, DBNormDense
from ragkit.retrievers import Dense, MaxSimExact, Muvera
from ragkit.retrievers.knn_embed import KnnEmbed
from ragkit.types import Corpus

TEXTS = [f"cell protein apoptosis {i}" if i % 2 else f"folding study of enzymes {i}" for i in range(12)]
BLANK = ["", " ", "\n", "\u200b"]
QUERIES = ["what is it?", "COVID-19", "1", "cell protein"]
FDE = {"k_sim": 3, "d_proj": 8, "r_reps": 4}


def _corpus(with_blank: bool = True) -> Corpus:
    if not with_blank:
        return Corpus(ids=[str(i) for i in range(12)], texts=TEXTS)
    # blank documents first, between and last: their rows are not where the others' slots are
    ids = ["b0", *[str(i) for i in range(6)], "b1", "b2", *[str(i) for i in range(6, 12)], "b3"]
    texts = [BLANK[0], *TEXTS[:6], BLANK[1], BLANK[2], *TEXTS[6:], BLANK[3]]
    return Corpus(ids=ids, texts=texts)


RETRIEVERS = {
    "dense": lambda: Dense(k=30),
    "dense-hnsw": lambda: Dense(k=30, search="hnsw"),
    "dense-i8": lambda: Dense(k=30, dtype="i8"),
    "dense-b1-rescore": lambda: Dense(k=30, dtype="b1", rescore=True),
    "dense-pca": lambda: Dense(k=30, reduce="pca:4"),
    "knn_embed": lambda: KnnEmbed(k=30, n_clusters=3, min_cluster_size=1, collapse_at=1.0, weight_floor=0.01),
    "knn_embed-masked": lambda: KnnEmbed(k=30, n_clusters=3, min_cluster_size=1, collapse_at=1.0,
                                         weight_floor=0.01, search="masked"),
    "dbnorm_dense": lambda: DBNormDense(k=30),
    "dbnorm_dense-is": lambda: DBNormDense(k=30, method="is"),
    "maxsim_exact": lambda: MaxSimExact(k=30),
    "muvera": lambda: Muvera(k=30, candidates=40, **FDE),
    "muvera-fde": lambda: Muvera(k=30, rerank=False, **FDE),
    "muvera-hnsw": lambda: Muvera(k=30, candidates=40, search="hnsw", **FDE),
    "muvera-prune": lambda: Muvera(k=30, candidates=40, prune=30, centroids=16, **FDE),
}
#: those whose rankings of the other documents are those of a fit without the blank ones: all here (a PCA and an
#: int8 or b1 index fit their transforms on the others only, knn_embed its k-means; an HNSW graph is rebuilt
#: without their nodes)
SAME_AS_WITHOUT = tuple(RETRIEVERS)


def _blank_free(run, n_real: int = 12) -> None:  # noqa: ANN001
    for ids in run.doc_ids:
        assert not any(str(d).startswith("b") for d in ids), list(ids)
        assert len(ids) == n_real  # k above the corpus size: every other document, no blank one


@pytest.mark.parametrize("name", list(RETRIEVERS))
def test_a_blank_document_is_never_found(name, tmp_path):
    op = RETRIEVERS[name]().fit(_corpus())
    run = op.search(QUERIES)
    _blank_free(run)
    if name in SAME_AS_WITHOUT:
        alone = RETRIEVERS[name]().fit(_corpus(with_blank=False)).search(QUERIES)
        for got, want, s_got, s_want in zip(run.doc_ids, alone.doc_ids, run.rankings, alone.rankings):
            assert list(got) == list(want)
            np.testing.assert_allclose(s_got.scores, s_want.scores, rtol=1e-5, atol=1e-6)
    op.save(tmp_path / "op")
    loaded = type(op).load(tmp_path / "op")
    again = loaded.search(QUERIES)
    _blank_free(again)
    assert [list(x) for x in again.doc_ids] == [list(x) for x in run.doc_ids]


@pytest.mark.parametrize("name", ["dense", "knn_embed", "muvera", "maxsim_exact", "dbnorm_dense"])
def test_a_blank_document_is_not_found_under_a_filter_either(name):
    corpus = _corpus()
    corpus = Corpus.from_texts(list(corpus.texts), ids=list(corpus.ids), year=[i % 2 for i in range(len(corpus))])
    run = RETRIEVERS[name]().fit(corpus).search(QUERIES, filter={"year": [0, 1]})
    _blank_free(run)


@pytest.mark.parametrize("kw", [{}, {"search": "hnsw"}, {"dtype": "i8"}])
def test_dense_add_remove_compact_and_save_leave_blank_documents_out(kw, tmp_path):
    """``add`` of blank documents (alone or among others) indexes none of them (slot -1); ``remove`` of a blank
    one or of others, and a compaction, keep them out; a save and load too."""
    real = _corpus(with_blank=False)
    d = Dense(k=30, **kw).fit(real.subset(np.arange(12) < 8))
    d.add(Corpus(ids=["b0", "b1"], texts=["", " \t"]))  # blank only
    d.add(Corpus(ids=["8", "b2", "9", "10", "b3", "11"],
                 texts=[TEXTS[8], "\n", TEXTS[9], TEXTS[10], "\u200b", TEXTS[11]]))
    assert (d.slots_ < 0).sum() == 4 and d.index_.n_alive == 12
    _blank_free(d.search(QUERIES))
    whole = Dense(k=30, **kw).fit(real)
    if not kw:  # exact f32: the same scores as a fit on the others only
        got, want = d.search(QUERIES), whole.search(QUERIES)
        assert [list(x) for x in got.doc_ids] == [list(x) for x in want.doc_ids]
    vecs = d.document_vectors()
    assert vecs.shape == (16, 384) and not vecs[d.slots_ < 0].any() and vecs[d.slots_ >= 0].any(axis=1).all()
    d.save(tmp_path / "d")
    loaded = Dense.load(tmp_path / "d")
    np.testing.assert_array_equal(loaded.slots_, d.slots_)
    _blank_free(loaded.search(QUERIES))
    d.remove(["b1", "3"])
    _blank_free(d.search(QUERIES), 11)
    d.compact()
    assert (d.slots_ < 0).sum() == 3 and d.index_.n_alive == 11
    _blank_free(d.search(QUERIES), 11)
    d.remove(["b0", "b2", "b3"])
    assert (d.slots_ >= 0).all()
    _blank_free(d.search(QUERIES), 11)


def test_dense_of_blank_documents_only_finds_nothing():
    d = Dense(k=5).fit(Corpus(ids=["a", "b"], texts=["", " "]))
    assert d.index_.n_alive == 0 and [len(r) for r in d.search(QUERIES).rankings] == [0] * 4
    d.add(Corpus(ids=["c"], texts=["cell protein"]))
    assert [list(x) for x in d.search(QUERIES).doc_ids] == [["c"]] * 4


def test_dbnorm_pseudo_query_bank_leaves_blank_documents_out():
    """A pseudo-query drawn from a blank document was its empty text, the bias direction: one fake hub in the
    bank of ``dbnorm`` (rerank) as of ``dbnorm_dense``; such pseudo-queries are left out."""
    op = DBNorm().fit(_corpus())
    assert op.info_["query_bank_size"] == 12
