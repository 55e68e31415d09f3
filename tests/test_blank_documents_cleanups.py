"""Blank documents (empty, whitespace or invisible characters only, title and text): a PCA over none of them says
so, ``dbnorm_dense`` of blank documents only describes its (empty) banks as ``dbnorm`` does, and ``dense``'s
document vectors are zero rows for them whether the index keeps its floats or they are encoded again."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.encoders import HashingEncoder, register_encoder
from ragkit.errors import DataError, ParamError
from ragkit.filters.dbnorm import DBNorm, DBNormDense
from ragkit.pipelines import Pipeline
from ragkit.retrievers import Dense
from ragkit.types import Corpus, TrainSet

register_encoder("blank-cleanups-hash", HashingEncoder(dim=32), replace=True)
BLANK = Corpus(ids=[f"b{i}" for i in range(6)], texts=["", " ", "\n", "\u200b", "", "\ufeff"],
               titles=["", "", "\u200b", "", "  ", ""])


def test_a_pca_over_blank_documents_only_says_every_document_is_blank():
    """It said "reduce='pca:4': PCA needs at least 2 vectors to fit, got 0", naming no document."""
    with pytest.raises(DataError, match=r"dense\.fit: reduce 'pca:4' fits 4 principal components on the documents "
                                        r"with text, and all 6 documents of the corpus are blank \(empty, whitespace "
                                        r"or invisible characters only, title and text\), which are never indexed; "
                                        r"expected at least 5 documents with text: give documents with text, or fit "
                                        r"with reduce: none"):
        Dense(model="blank-cleanups-hash", reduce="pca:4").fit(BLANK)
    with pytest.raises(DataError, match=r"all 6 documents of the corpus are blank"):  # (a pipeline checks its steps)
        Pipeline([Dense(model="blank-cleanups-hash", reduce="pca:4")]).fit(BLANK)
    with pytest.raises(DataError, match=r"all 3 documents of the corpus are blank"):  # fewer than dims: blank first
        Dense(model="blank-cleanups-hash", reduce="pca:4").fit(BLANK[:3])
    with pytest.raises(ParamError, match=r"which has 0 documents"):  # (none at all: the count, as before)
        Dense(model="blank-cleanups-hash", reduce="pca:4").fit(BLANK[:0])
    Dense(model="blank-cleanups-hash").fit(BLANK)  # without a PCA: fits, and finds nothing


def test_dbnorm_dense_of_blank_documents_only_describes_its_banks_as_dbnorm_does():
    """Its info lacked the activation sets' sizes that dbnorm's (and every other fit's) holds."""
    train = TrainSet({"q1": "cell protein"}, {"q1": {"b0": 1}})
    dense = DBNormDense(model="blank-cleanups-hash", k=5).fit(BLANK, train)
    rerank = DBNorm(model="blank-cleanups-hash").fit(BLANK, train)
    assert dense.info_ == {**rerank.info_, "penalty_shift": 0.0}
    assert dense.info_["active_q"] == dense.info_["active_g"] == 0 and dense.info_["blank_docs"] == 6
    untrained = DBNormDense(model="blank-cleanups-hash", k=5).fit(BLANK)  # (no error: nothing to retrieve)
    assert untrained.info_ == dense.info_
    assert (untrained.log_z_q_ == 0).all() and (untrained.log_z_g_ == 0).all()
    assert untrained.search(["cell protein"]).doc_ids[0].tolist() == []
    none = DBNormDense(model="blank-cleanups-hash", k=5).fit(BLANK[:0])
    assert none.info_["n_docs"] == 0 and "blank_docs" not in none.info_ and none.info_["active_q"] == 0


@pytest.mark.parametrize("kw", [{}, {"dtype": "i8"}, {"search": "hnsw"}, {"dtype": "b1", "rescore": True}])
def test_dense_document_vectors_are_zero_for_blank_documents(kw):
    texts = ["", "cell protein", "\u200b", "folding of enzymes", "apoptosis", " "]
    corpus = Corpus(ids=[str(i) for i in range(6)], texts=texts)
    dense = Dense(model="blank-cleanups-hash", **kw).fit(corpus)
    vecs = dense.document_vectors()
    blank = corpus.blank
    assert vecs.shape == (6, 32) and (vecs[blank] == 0).all() and (np.abs(vecs[~blank]).sum(axis=1) > 0).all()
    full = Dense(model="blank-cleanups-hash").fit(corpus.subset(~blank)).document_vectors()
    np.testing.assert_allclose(vecs[~blank], full, rtol=1e-6, atol=1e-6)
