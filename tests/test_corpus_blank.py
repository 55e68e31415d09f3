"""``Corpus.blank``: which documents are blank (empty, whitespace or invisible characters only, title and text),
worked out once per corpus from its titles and texts apart, the one source the embedding retrievers and ``dbnorm``
read (each worked it out on its own from a joined copy of every document, ``dbnorm`` two or three times a fit)."""

from __future__ import annotations

import copy
import itertools
import pickle

import numpy as np
import pytest

import ragkit.encoders.sentence as sentence
from ragkit.encoders import HashingEncoder, register_encoder
from ragkit.encoders.sentence import blank_texts
from ragkit.errors import ParamError
from ragkit.filters import dbnorm as dbnorm_module
from ragkit.filters.dbnorm import DBNorm, DBNormDense
from ragkit.retrievers import Dense
from ragkit.types import Corpus, TrainSet

register_encoder("corpus-blank-hash", HashingEncoder(dim=32), replace=True)

#: blank strings (empty, spaces, a line feed, invisible characters) and strings with text
BLANKS = ["", "  ", "\n", "\u200b", "\ufeff\u200b ", "\x00"]
REAL = ["x", "cell protein", " a ", "\u200ba"]


def _every_pair() -> Corpus:
    pairs = list(itertools.product(BLANKS + REAL, BLANKS + REAL))  # (title, text): every combination
    return Corpus(ids=[f"d{i}" for i in range(len(pairs))], texts=[x for _, x in pairs], titles=[t for t, _ in pairs])


def test_blank_is_blank_texts_of_the_full_texts():
    corpus = _every_pair()
    blank = corpus.blank
    assert blank.dtype == bool and blank.shape == (len(corpus),)
    np.testing.assert_array_equal(blank, blank_texts(corpus.full_texts))
    # blank title with real text, real title with blank text, both blank: only the last is blank
    titles, texts = corpus.titles.tolist(), corpus.texts.tolist()
    for i, (t, x) in enumerate(zip(titles, texts)):
        assert blank[i] == (t in BLANKS and x in BLANKS), (t, x)
    assert blank.any() and not blank.all()


def test_blank_without_titles():
    corpus = Corpus(ids=["a", "b", "c"], texts=["", "\u200b", "text"])
    assert corpus.blank.tolist() == [True, True, False]
    assert Corpus(ids=[], texts=[]).blank.shape == (0,)


def test_blank_is_read_only_and_worked_out_once(monkeypatch):
    corpus = _every_pair()
    calls = []
    monkeypatch.setattr(sentence, "blank_texts", lambda texts: calls.append(texts) or blank_texts(texts))
    first = corpus.blank
    assert corpus.blank is first and len(calls) == 2  # titles and texts, once
    assert calls[0] is corpus.titles and calls[1] is corpus.texts  # apart: no joined copy
    assert not first.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first[0] = not first[0]
    with pytest.raises(AttributeError):
        corpus.blank = np.zeros(len(corpus), bool)  # type: ignore[misc]


def test_blank_is_carried_over_to_a_cut_and_a_grown_corpus(monkeypatch):
    corpus = _every_pair()
    blank = corpus.blank
    calls = []
    monkeypatch.setattr(sentence, "blank_texts", lambda texts: calls.append(texts) or blank_texts(texts))
    rows = np.flatnonzero(np.arange(len(corpus)) % 3 == 0)
    for cut, want in ((corpus.subset(rows), blank[rows]), (corpus[5:40], blank[5:40]),
                      (corpus.subset(blank), blank[blank]), (corpus.subset(rows[::-1]), blank[rows[::-1]])):
        assert "_blank" in cut.__dict__ and cut.__dict__["_blank"] is not None
        np.testing.assert_array_equal(cut.blank, want)
        assert not cut.blank.flags.writeable
    assert not calls  # carried over, not worked out again
    other = Corpus(ids=["n1", "n2"], texts=["", "new"], titles=["\u200b", ""])
    grown = corpus.concat(other)
    np.testing.assert_array_equal(grown.blank, np.concatenate([blank, [True, False]]))
    np.testing.assert_array_equal(grown.blank, blank_texts(grown.full_texts))
    assert not grown.blank.flags.writeable
    assert len(calls) == 2  # the added documents' only
    fresh = Corpus(ids=["a", "b"], texts=["", "y"])  # not worked out: not worked out for the cut either
    assert fresh.subset([1]).__dict__["_blank"] is None
    assert fresh.concat(other).__dict__["_blank"] is None


def test_blank_survives_pickle_and_copy_read_only():
    corpus = _every_pair()
    want = corpus.blank.copy()
    for other in (pickle.loads(pickle.dumps(corpus)), copy.deepcopy(corpus), copy.copy(corpus)):
        np.testing.assert_array_equal(other.blank, want)
        assert not other.blank.flags.writeable
    older = pickle.loads(pickle.dumps(Corpus(ids=["a", "b"], texts=["", "y"])))
    del older.__dict__["_blank"]  # (a corpus pickled before it had one)
    assert older.blank.tolist() == [True, False]


def _corpus_with_blank() -> Corpus:
    texts = [f"cell protein apoptosis {i}" if i % 2 else f"folding study of enzymes {i}" for i in range(12)]
    ids = ["b0", *[str(i) for i in range(6)], "b1", "b2", *[str(i) for i in range(6, 12)], "b3"]
    return Corpus(ids=ids, texts=["", *texts[:6], " ", "\n", *texts[6:], "\u200b"],
                  titles=["", *["t"] * 6, "\u200b", "", *[""] * 6, ""])


@pytest.mark.parametrize("make", [lambda: DBNorm(model="corpus-blank-hash", method="dualis"),
                                  lambda: DBNorm(model="corpus-blank-hash", method="ddis", query_bank_size=4),
                                  lambda: DBNormDense(model="corpus-blank-hash", method="dualis", k=5),
                                  lambda: DBNormDense(model="corpus-blank-hash", method="is", query_bank_size=1)],
                         ids=["dbnorm", "dbnorm-pseudo", "dbnorm_dense", "dbnorm_dense-checked"])
@pytest.mark.parametrize("with_train", [False, True])
def test_a_dbnorm_fit_works_the_blank_documents_out_once(make, with_train, monkeypatch):
    """It worked them out two or three times a fit, each from a joined copy of every document."""
    op = make()
    train = TrainSet({"q1": "cell protein", "q2": "enzymes"}, {"q1": {"1": 1}, "q2": {"0": 1}}) if with_train else None
    corpus = _corpus_with_blank()
    calls = []

    def counting(texts):  # noqa: ANN001, ANN202
        calls.append(texts)
        return blank_texts(texts)

    monkeypatch.setattr(sentence, "blank_texts", counting)
    monkeypatch.setattr(dbnorm_module, "blank_texts", counting)
    refused = train is None and op.params.query_bank_size == 1  # (one pseudo-query: the check counts the others)
    if refused:
        with pytest.raises(ParamError, match="query_bank_size=1"):
            op.fit(corpus, train)
    else:
        op.fit(corpus, train)
        assert op.info_["blank_docs"] == 4
    full = corpus.full_texts
    assert not any(isinstance(t, list) and t == full for t in calls)  # never of a joined copy
    assert [t is corpus.titles or t is corpus.texts for t in calls].count(True) == 2  # titles, texts: once


def test_dense_fit_and_add_read_the_corpus_blank(monkeypatch):
    corpus = _corpus_with_blank()
    calls = []
    monkeypatch.setattr(sentence, "blank_texts", lambda texts: calls.append(texts) or blank_texts(texts))
    dense = Dense(model="corpus-blank-hash", k=30).fit(corpus)
    assert (dense.slots_ < 0).tolist() == corpus.blank.tolist()
    assert len(calls) == 2 and calls[0] is corpus.titles and calls[1] is corpus.texts
    dense.add(Corpus(ids=["n1", "n2"], texts=["\u200b", "new enzymes"]))
    assert (dense.slots_ < 0).tolist() == [*corpus.blank.tolist(), True, False]
    assert not dense.corpus_.blank.flags.writeable and dense.corpus_.__dict__["_blank"] is not None  # carried over
