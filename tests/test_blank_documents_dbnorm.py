"""Blank documents (empty, whitespace or invisible characters only) and the rerankers ``dbnorm`` and ``maxsim``:
``dbnorm`` fits its banks on the other documents, as ``dbnorm_dense`` does (one place: ``fit_banks``), so a blank
document neither shrinks the pseudo-query bank below the size asked for nor puts copies of the model's bias
direction in the gallery bank; ``maxsim`` gives a blank document no tokens, so it has no similarity and is
left out (scored 0 before, it ranked above candidates of negative Chamfer score)."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.errors import DataError
from ragkit.filters import MaxSim
from ragkit.filters.dbnorm import DBNorm, DBNormDense, pseudo_queries
from ragkit.types import Corpus, Ranking, State, TrainSet

TEXTS = [f"cell protein apoptosis {i}" if i % 2 else f"folding study of enzymes {i}" for i in range(12)]
BLANK = ["", " ", "\n", "\u200b"]


def _corpus() -> Corpus:  # 12 documents with text, 4 blank ones first, between and last
    ids = ["b0", *[str(i) for i in range(6)], "b1", "b2", *[str(i) for i in range(6, 12)], "b3"]
    texts = [BLANK[0], *TEXTS[:6], BLANK[1], BLANK[2], *TEXTS[6:], BLANK[3]]
    return Corpus(ids=ids, texts=texts)


def _is_blank(corpus: Corpus) -> np.ndarray:
    return np.array([str(i).startswith("b") for i in corpus.ids])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_dbnorm_pseudo_query_bank_has_the_size_asked_for(seed):
    """It was 4/5/6/5 for seeds 0-3: pseudo-queries drawn from blank documents were dropped after the draw."""
    corpus = _corpus()
    op = DBNorm(method="is", query_bank_size=6, seed=seed).fit(corpus)
    dense = DBNormDense(method="is", query_bank_size=6, seed=seed).fit(corpus)
    assert op.info_["query_bank_size"] == dense.info_["query_bank_size"] == 6
    assert op.info_["n_docs"] == 16 and op.info_["blank_docs"] == 4
    np.testing.assert_array_equal(op.log_z_q_, dense.log_z_q_)


def test_dbnorm_gallery_bank_leaves_blank_documents_out():
    """It held all 16 documents, the 4 blank ones as 4 identical bias-direction vectors: one fake hub."""
    corpus = _corpus()
    op = DBNorm(method="dualis").fit(corpus)
    dense = DBNormDense(method="dualis").fit(corpus)
    assert op.info_["gallery_bank_size"] == dense.info_["gallery_bank_size"] == 12
    blank = _is_blank(corpus)
    for arr in (op.log_z_q_, op.log_z_g_):
        assert (arr[blank] == 0).all() and (arr[~blank] != 0).all()
    np.testing.assert_array_equal(op.log_z_q_, dense.log_z_q_)
    np.testing.assert_array_equal(op.log_z_g_, dense.log_z_g_)


def test_dbnorm_blank_documents_are_in_no_activation_set():
    corpus = _corpus()
    op = DBNorm(method="ddis").fit(corpus)
    blank = _is_blank(corpus)
    assert not op.active_q_[blank].any() and not op.active_g_[blank].any()
    assert len(op.active_q_) == len(op.active_g_) == 16


def test_dbnorm_ranks_as_without_the_blank_documents():
    """The penalties of the documents with text are those of a fit without the blank ones."""
    corpus = _corpus()
    blank = _is_blank(corpus)
    train = TrainSet({"q1": "cell protein", "q2": "enzymes"}, {"q1": {"1": 1}, "q2": {"0": 1}})
    with_blank = DBNorm().fit(corpus, train)
    without = DBNorm().fit(corpus.subset(~blank), train)
    np.testing.assert_array_equal(with_blank.log_z_q_[~blank], without.log_z_q_)
    np.testing.assert_array_equal(with_blank.log_z_g_[~blank], without.log_z_g_)


def test_dbnorm_of_blank_documents_only():
    corpus = Corpus(ids=["a", "b"], texts=["", "\u200b"])
    with pytest.raises(DataError, match=r"dbnorm\.fit: the query bank is empty.*all 2 are blank"):
        DBNorm().fit(corpus)
    op = DBNorm().fit(corpus, TrainSet({"q1": "cell protein"}, {"q1": {"a": 1}}))
    assert (op.log_z_q_ == 0).all() and (op.log_z_g_ == 0).all() and not op.active_q_.any()
    assert op.info_["blank_docs"] == 2
    dense = DBNormDense(k=5).fit(corpus)  # nothing to retrieve: no error
    assert [len(r) for r in dense.search(["cell protein"]).rankings] == [0]


def test_pseudo_query_of_a_document_with_an_invisible_text_is_its_title():
    corpus = Corpus(ids=["a", "b"], texts=["\u200b", "cell protein. More."], titles=["Enzymes", "T"])
    texts, rows = pseudo_queries(corpus, 2)
    assert texts == ["Enzymes", "cell protein."] and rows.tolist() == [0, 1]


def test_maxsim_leaves_a_blank_row_of_an_input_ranking_out():
    corpus = _corpus()
    op = MaxSim().fit(corpus)
    ids = corpus.ids.tolist()
    rows = np.array([ids.index("b1"), ids.index("1"), ids.index("b3"), ids.index("2")])
    state = State(queries=["cell protein"], rankings=[Ranking(rows, np.array([4, 3, 2, 1], np.float32))])
    r = op(state).rankings[0]
    assert [ids[i] for i in r.rows] == ["1", "2"] and (r.scores > 0).all()
