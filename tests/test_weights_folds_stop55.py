"""Learned fusion weights cross-validate with the queries of one text in one fold.

The folds were a permutation of the queries: fitted on 40 queries cv_ndcg@10 was 0.8632 against a train_ndcg@10 of
0.8649; on the same 40 plus a copy of each under ``<id>_dup``, every held-out query had its copy in the training part,
and cv_ndcg@10 equalled train_ndcg@10 (0.8649), without a word.  ``ragkit train``'s held-out fold keeps the queries
of one text (whitespace and case aside) on one side; the weight search's folds now do too.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ragkit import Corpus, TrainSet
from ragkit.pipelines.fusion import RRF, WeightedFusion
from ragkit.pipelines.weights import learn_weights
from ragkit.types import Ranking, State


def _synthetic(seed: int = 3, nq: int = 40) -> tuple[list[str], list[str], list, dict, np.ndarray]:
    """Two random branches over 30 documents, scores falling from 1 to 0 down each ranking; each query judges 3
    documents of one branch's top 12 (of the first branch for two queries in three), so that learning gains and
    the folds' picks differ from each other."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"d{i}" for i in range(30)])
    qids = [f"q{i}" for i in range(nq)]
    texts = [f"question number {i}" for i in range(nq)]
    rankings = [[Ranking(rng.permutation(30)[:12], np.sort(rng.random(12))[::-1].astype(np.float32)) for _ in qids]
                for _ in range(2)]
    qrels = {q: {str(ids[rankings[int(j % 3 == 2)][j].rows[r]]): 1 for r in rng.choice(12, 3, replace=False)}
             for j, q in enumerate(qids)}
    return qids, texts, rankings, qrels, ids


def _doubled(interleaved: bool, seed: int = 3) -> tuple[State, dict, State, dict, np.ndarray]:
    """The synthetic queries, and the same plus a copy of each under ``<id>_dup`` (its text in other case and
    whitespace, its branch rankings and judgements the same), after all of them or each after its original."""
    qids, texts, rankings, qrels, ids = _synthetic(seed)
    one = State(list(texts), query_ids=list(qids), branches=[(f"b{i}", list(r)) for i, r in enumerate(rankings)])
    order = ([(j, c) for j in range(len(qids)) for c in (False, True)] if interleaved
             else [(j, False) for j in range(len(qids))] + [(j, True) for j in range(len(qids))])
    both = State([f"  {texts[j].upper()} " if c else texts[j] for j, c in order],
                 query_ids=[f"{qids[j]}_dup" if c else qids[j] for j, c in order],
                 branches=[(f"b{i}", [r[j] for j, _ in order]) for i, r in enumerate(rankings)])
    both_qrels = {**qrels, **{f"{q}_dup": rel for q, rel in qrels.items()}}
    return one, qrels, both, both_qrels, ids


def _learn(state: State, qrels: dict, ids: np.ndarray):
    prep = RRF()._prepare(state, with_fields=False)
    return learn_weights(lambda s, w: prep(w, None), state, qrels, ids, folds=5)


@pytest.mark.parametrize("interleaved", [False, True])
def test_copies_under_other_ids_do_not_leak_into_the_held_out_folds(interleaved):
    """A copy of each query, its text in another case and spacing, changes no fold's pick and no estimate: each
    fold holds both copies or neither (the old folds scored each held-out query beside its copy's training)."""
    one, qrels, both, both_qrels, ids = _doubled(interleaved)
    alone, doubled = _learn(one, qrels, ids), _learn(both, both_qrels, ids)
    assert alone.cv_ndcg < alone.averaged_train_ndcg - 1e-3  # (held out is below training here)
    np.testing.assert_array_equal(doubled.fold_picks, alone.fold_picks)
    assert doubled.cv_ndcg == pytest.approx(alone.cv_ndcg, abs=1e-12)
    assert doubled.uniform_cv_ndcg == pytest.approx(alone.uniform_cv_ndcg, abs=1e-12)
    assert doubled.cv_ndcg < doubled.averaged_train_ndcg - 1e-3
    np.testing.assert_array_equal(doubled.weights, alone.weights)


def test_a_learning_weighted_fuser_reports_the_same_estimate_with_copies():
    """``weighted: {learn: true, norm: learn}``, as the review fitted it: its cv_ndcg@10 and weights are those of
    the queries alone, not the training score, when each query comes again under ``<id>_dup``."""
    # (seed 0: the folds follow the sorted query texts since s54; seed 3's learned weights now score the same
    # held out as on the training queries, which the last check tells apart)
    one, qrels, both, both_qrels, ids = _doubled(False, seed=0)
    corpus = Corpus(ids=ids.tolist(), texts=[f"text {d}" for d in ids])
    got = []
    for st, rel in ((one, qrels), (both, both_qrels)):
        train = TrainSet(dict(zip(st.query_ids, st.queries)), rel)
        got.append(WeightedFusion(learn=True, norm="learn", folds=5).fit(corpus, train, upstream=st).learned_)
    assert "kept" not in got[0] and "kept" not in got[1]  # (the learned weights, not equal ones)
    assert got[1]["cv_ndcg@10"] == pytest.approx(got[0]["cv_ndcg@10"], abs=1e-12)
    assert got[1]["weights"] == got[0]["weights"]
    assert got[1]["cv_ndcg@10"] != pytest.approx(got[1]["train_ndcg@10"], abs=1e-6)


def test_queries_of_one_text_keep_equal_weights_with_a_warning(caplog):
    """Usable queries that all ask one question leave no fold to hold out: equal weights are kept, with a warning
    naming the queries and the text, no estimate is made up (nan), and only equal weights are scored (the old
    folds split the copies and scored each against its twin: a cross-validated nDCG@10 of the training one)."""
    qids, _, rankings, qrels, ids = _synthetic(nq=4)
    st = State(["Same question", "same  question", " SAME question", "same question"], query_ids=qids,
               branches=[(f"b{i}", list(r)) for i, r in enumerate(rankings)])
    prep = RRF()._prepare(st, with_fields=False)
    fused: list[list[float]] = []
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        res = learn_weights(lambda s, w: fused.append(w.tolist()) or prep(w, None), st, qrels, ids, folds=5,
                            where="rrf")
    assert fused == [[0.5, 0.5]]  # (equal weights only: scored for train_ndcg)
    assert res.kept == "uniform" and res.weights.tolist() == [0.5, 0.5] and res.fold_picks.shape == (0, 2)
    assert np.isnan(res.cv_ndcg) and np.isnan(res.uniform_cv_ndcg) and np.isnan(res.held_out_ndcg)
    assert res.train_ndcg == res.baseline_ndcg > 0
    said = [r.getMessage() for r in caplog.records if "fusion weights" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("rrf: learning fusion weights: the 4 usable training queries")
    assert "'Same question'" in said[0] and "keeping equal weights" in said[0]
