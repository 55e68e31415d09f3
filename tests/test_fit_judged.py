"""Fitting on one's own few judged queries: learned fusion weights that must beat equal weights, a
corpus whose text field is misnamed, qrels in the wrong shape, ``Pipeline.learned()``, and the warnings of a
refit without ``train`` and of fine-tuning an encoder on a handful of queries."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ragkit import Corpus, TrainSet
from ragkit.errors import DataError
from ragkit.pipelines import Parallel, Pipeline
from ragkit.pipelines.fusion import RRF
from ragkit.pipelines.weights import learn_weights
from ragkit.retrievers import BM25
from ragkit.types import Ranking, State


def _synthetic(seed: int, nq: int = 12, n: int = 2):
    """Two random branches over 30 documents; each query judges 2 documents of one branch's top 12."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"d{i}" for i in range(30)])
    qids = [f"q{i}" for i in range(nq)]
    br = [(f"b{i}", [Ranking(rng.permutation(30)[:12], np.linspace(1, 0, 12).astype(np.float32)) for _ in qids])
          for i in range(n)]
    st = State(list(qids), query_ids=list(qids), branches=br)
    qrels = {q: {ids[br[j % n][1][j].rows[r]]: 1 for r in rng.choice(12, 2, replace=False)}
             for j, q in enumerate(qids)}
    return st, qrels, ids


def _search(seed: int):
    st, qrels, ids = _synthetic(seed)
    prep = RRF()._prepare(st, with_fields=False)
    return learn_weights(lambda s, w: prep(w, None), st, qrels, ids, folds=3), st, qrels, ids, prep


def test_averaged_weights_that_lose_to_equal_weights_are_not_kept(caplog):
    """The mean of the per-fold picks ([0.3, 0.7]) scores below equal weights both cross-validated (0.374 vs
    0.405 on the same held-out folds) and on the training queries (0.358 vs 0.405): it was shipped anyway,
    without a word.  Equal weights are now kept, the numbers recorded, and a warning logged."""
    from ragkit.eval.metrics import per_query_ndcg

    with caplog.at_level(logging.WARNING, logger="ragkit"):
        res, st, qrels, ids, prep = _search(17)
    assert res.kept == "uniform"
    np.testing.assert_allclose(res.weights, [0.5, 0.5])
    assert not np.allclose(res.averaged, 0.5)
    assert res.cv_ndcg < res.uniform_cv_ndcg and res.averaged_train_ndcg < res.baseline_ndcg
    shipped = st.copy()
    shipped.rankings = prep(res.weights, None)
    assert res.train_ndcg == pytest.approx(per_query_ndcg(shipped, qrels, ids).mean(), abs=1e-12)
    assert res.train_ndcg == pytest.approx(res.baseline_ndcg, abs=1e-12)
    assert res.report() == {"kept": "uniform", "averaged_weights": res.averaged.tolist(),
                            "averaged_train_ndcg@10": res.averaged_train_ndcg,
                            "uniform_cv_ndcg@10": res.uniform_cv_ndcg}
    said = [r.getMessage() for r in caplog.records if "fusion weights" in r.getMessage()]
    assert len(said) == 1 and "keeping equal weights" in said[0] and f"{res.cv_ndcg:.4f}" in said[0]


def test_averaged_weights_that_lose_cross_validated_only_are_not_kept():
    """Better on the training queries (0.442 vs 0.431) but worse held out (0.404 vs 0.431): the
    cross-validated comparison decides.  (Seed 4: the folds follow the sorted query texts since s54, and seed
    14's data no longer shows the case.)"""
    res = _search(4)[0]
    assert res.averaged_train_ndcg > res.baseline_ndcg and res.cv_ndcg < res.uniform_cv_ndcg
    assert res.kept == "uniform"
    np.testing.assert_allclose(res.weights, [0.5, 0.5])


def test_learned_weights_that_beat_equal_weights_are_kept(caplog):
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        res = _search(23)[0]
    assert res.kept == "learned" and res.report() == {}
    assert res.cv_ndcg > res.uniform_cv_ndcg and res.train_ndcg > res.baseline_ndcg
    np.testing.assert_array_equal(res.weights, res.averaged)
    assert not np.allclose(res.weights, 0.5)
    assert not [r for r in caplog.records if "fusion weights" in r.getMessage()]


@pytest.mark.parametrize("seed, kept", [(17, True), (23, False)])
def test_a_learning_fuser_fits_equal_weights_when_learning_loses(seed, kept):
    st, qrels, ids = _synthetic(seed)
    corpus = Corpus(ids=ids.tolist(), texts=[f"text {d}" for d in ids])
    train = TrainSet({q: f"query {q}" for q in st.query_ids}, qrels)
    op = RRF(learn=True, folds=3).fit(corpus, train, upstream=st)
    found = _search(seed)[0]
    # (the fuser keeps its unlearned scale: learn_weights' weights, summing to 1, times its 2 branches)
    np.testing.assert_array_equal(op.weights_, found.weights * 2)
    assert np.allclose(op.weights_, 1.0) is kept
    assert op.learned_["weights"] == (found.weights * 2).tolist()
    assert op.learned_["train_ndcg@10"] == found.train_ndcg
    assert (op.learned_.get("kept") == "uniform") is kept  # learned.json and the CLI say equal weights were kept


# ---------------------------------------------------------------- Corpus.from_records


def test_records_without_a_text_field_are_refused():
    """``body`` for ``text`` gave a corpus of empty documents ('', '') that fitted and found nothing."""
    with pytest.raises(DataError, match=r"none of the 2 records has a 'text' field \(they have 'body', 'id'\).*"
                                        r"one of 'body'\) to 'text'"):
        Corpus.from_records([{"id": "a", "body": "x y"}, {"id": "b", "body": "z"}])


def test_unknown_record_keys_are_named_in_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        c = Corpus.from_records([{"_id": "a", "text": "x", "url": "u", "title": "t"}, {"_id": "b", "author": "me"}])
    assert c.texts.tolist() == ["x", ""]  # a record without text (others have one) is still an empty document
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "'author', 'url'" in said[0] and "metadata" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        Corpus.from_records([{"_id": "a", "text": "x", "title": "t", "metadata": {"k": 1}}, {"id": "b", "text": "y"}])
    assert not caplog.records


# ---------------------------------------------------------------- qrels shapes


@pytest.mark.parametrize("ids", [["d1", "d2"], {"d1", "d2"}, ("d1",)])
def test_qrels_of_id_lists_say_how_to_build_grades(ids):
    with pytest.raises(DataError, match=r"qrels\['a'\] is .*; for lists of relevant document ids: "
                                        r"\{q: \{d: 1 for d in ids\} for q, ids in qrels.items\(\)\}"):
        TrainSet({"a": "hello there"}, {"a": ids})


def test_qrels_keyed_by_query_texts_say_so():
    with pytest.raises(DataError, match=r"qrels are keyed by the queries' texts \('hello there', 'bye': 2 of the 2 "
                                        r"keys.*not by their ids \('a', 'b'\)"):
        TrainSet({"a": "hello there", "b": "bye"}, {"hello there": {"d1": 1}, "bye": {"d2": 1}})


# ---------------------------------------------------------------- Pipeline.learned and refits

CORPUS = Corpus.from_texts(["red apples", "green apple pie", "running shoes", "a runner runs", "apple runs"],
                           ids=["a", "b", "c", "d", "e"])
TRAIN = TrainSet({"q1": "apple", "q2": "runs", "q3": "red apple", "q4": "running"},
                 {"q1": {"b": 1}, "q2": {"d": 1}, "q3": {"a": 1}, "q4": {"c": 1}})
RRF_PATH = "pipeline[0].parallel.fuse.rrf"


def _pipe() -> Pipeline:
    return Pipeline([Parallel([BM25(k=5), BM25(k=5, stemmer="none")], fuse=RRF(learn=True, folds=2))])


def test_learned_after_fit_and_after_load(tmp_path):
    pipe = _pipe()
    assert pipe.learned() == {}
    pipe.fit(CORPUS, TRAIN)
    got = pipe.learned()
    fuser = pipe.steps[0].fuse
    assert list(got) == [RRF_PATH] and got[RRF_PATH] == fuser.learned_
    got[RRF_PATH]["weights"] = [1.0, 0.0]  # a copy: changing it changes nothing fitted
    assert fuser.learned_["weights"] != [1.0, 0.0]
    pipe.save(tmp_path / "p")
    assert Pipeline.load(tmp_path / "p").learned() == pipe.learned()
    assert _pipe().fit(CORPUS).learned() == {}


def test_refit_without_train_warns_that_what_was_learned_is_dropped(caplog):
    """A refit without ``train`` silently forgot the learned weights."""
    pipe = _pipe().fit(CORPUS, TRAIN)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe.fit(CORPUS, TRAIN)  # relearns: nothing to say
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe.fit(CORPUS)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and f"{RRF_PATH} (from 4 queries)" in said[0] and "dropped" in said[0]
    assert pipe.learned() == {}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe.fit(CORPUS)  # nothing learned any more: nothing to drop
    assert not caplog.records


# ---------------------------------------------------------------- encoder fine-tuning on few queries


@pytest.mark.parametrize("n, warned", [(2, True), (10, False)])
def test_adapt_on_few_judged_queries_warns(monkeypatch, caplog, tmp_path, n, warned):
    """``Dense(adapt=...)`` fine-tuned on 2 judged queries (47 s) without a word."""
    from ragkit.encoders import adapt as adapt_mod
    from ragkit.retrievers import Dense

    monkeypatch.setattr(adapt_mod, "adapted_model", lambda *a, **kw: tmp_path)  # no training here
    corpus = Corpus.from_texts([f"document {i}" for i in range(12)], ids=[f"d{i}" for i in range(12)])
    train = TrainSet({f"q{i}": f"query {i}" for i in range(n)}, {f"q{i}": {f"d{i}": 1} for i in range(n)})
    op = Dense(k=5, adapt={"epochs": 1.0})
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        op._adapt_encoder(corpus, train)
    said = [r.getMessage() for r in caplog.records if "adapt" in r.getMessage()]
    assert op.model_path_ == str(tmp_path)
    if warned:
        assert len(said) == 1 and f"fine-tuning on little: {n} usable training queries" in said[0]
        assert "at least 10 recommended" in said[0]
    else:
        assert not said


def test_an_unfitted_pipeline_that_needs_judged_queries_says_fit_with_train():
    """The message said pipeline.fit(corpus), which refuses to fit a pipeline holding such a learner."""
    from ragkit.errors import NotFittedError
    from ragkit.filters import CosineAdapter
    from ragkit.retrievers import BM25, Dense

    with pytest.raises(NotFittedError, match=r"call pipeline\.fit\(corpus, train\) first"):
        Pipeline([Dense(k=5), CosineAdapter()]).search(["q"])
    with pytest.raises(NotFittedError, match=r"call pipeline\.fit\(corpus\) first"):
        Pipeline([BM25(k=5)]).search(["q"])
