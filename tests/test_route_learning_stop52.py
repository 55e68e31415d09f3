"""Learned routers and loop judges (score_router / score_reached with learn: true): they learn from the usable
training queries, as the fusers do, and a decision learned for every training query holds for every query.

1. A query judged only 0, or whose relevant documents are none of the corpus's, teaches nothing (README,
   "Your own judged queries: TrainSet"): adding such queries changes neither the learned threshold nor the
   reported figures, which average over the queries the fuser in a branch averages over; none usable is a
   DataError before the branches are fitted.
2. "Everything on the cheap side" (or the other) learned from the training queries is a threshold of
   -inf (or inf), so a new query scoring beyond every training query goes where the report says they all
   went; it saves and loads; fewer than 10 usable queries log a warning.
"""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest

from ragkit.errors import DataError
from ragkit.filters import TopK
from ragkit.pipelines import PRF, RRF, Loop, MaxOnly, Parallel, Pipeline, Route, RuleRouter, ScoreReached, ScoreRouter
from ragkit.retrievers import BM25
from ragkit.types import Corpus, Ranking, State, TrainSet

THIN = "threshold learned from little"


def _router_pipe(cost: float = 0.0, learn_fuser: bool = True) -> Pipeline:
    hard = Parallel([BM25(k=30), BM25(k=30, k1=1.5)], fuse=RRF(learn=True, folds=2) if learn_fuser else RRF())
    return Pipeline([BM25(k=30), Route(ScoreRouter(learn=True, cost=cost), {"easy": [TopK(k=3)], "hard": hard})])


def _loop_pipe(cost: float = 0.002) -> Pipeline:
    return Pipeline([Loop([PRF(), BM25(k=30)], until=ScoreReached(learn=True, cost=cost), max_iters=3)])


def _with_unusable(train: TrainSet, scifact) -> TrainSet:  # noqa: ANN001
    """``train`` plus 30 other SciFact training queries that teach nothing: 15 judged only 0, 15 judging
    relevant only a document that no corpus holds."""
    extra = scifact.queries("train")[40:70]
    qrels = scifact.qrels("train")
    more = {q: {d: 0 for d in qrels[q]} for q in extra.ids[:15]} | {q: {"absent-doc": 2} for q in extra.ids[15:]}
    texts = dict(zip(train.queries.ids, train.queries.texts)) | dict(zip(extra.ids, extra.texts))
    return TrainSet(texts, dict(train.qrels) | more)


def _thin(caplog) -> list[str]:  # noqa: ANN001
    return [r.getMessage() for r in caplog.records if THIN in r.getMessage()]


@pytest.mark.parametrize("make,learner", [(_router_pipe, "pipeline[1].route.router.score_router"),
                                          (_loop_pipe, "pipeline[0].loop.until.score_reached")])
def test_queries_that_teach_nothing_change_nothing_learned(slice_data, scifact, caplog, make, learner):
    """The old fit learned from every judged query: 30 grade-0-only or out-of-corpus queries moved the
    threshold and scaled the reported nDCG@10 by usable / judged (40 / 70)."""
    corpus, _, _, train = slice_data
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        alone = make().fit(corpus, train).learned()
    assert not _thin(caplog)  # 40 usable queries: no warning
    padded = make().fit(corpus, _with_unusable(train, scifact)).learned()
    assert set(alone) == set(padded) and learner in alone
    assert alone[learner] == padded[learner]  # the same queries, in the same order: the same floats


def test_a_router_reports_its_branch_over_the_queries_its_fuser_learned_from(slice_data, scifact):
    """Within one learned(): the router's all_below_ndcg@10 (every query on the RRF branch) is the RRF's own
    train_ndcg@10 (it was 0.574 against 0.884 on SciFact: the router divided by the judged queries)."""
    corpus, _, _, train = slice_data
    learned = _router_pipe().fit(corpus, _with_unusable(train, scifact)).learned()
    router = learned["pipeline[1].route.router.score_router"]
    fuser = learned["pipeline[1].route.branches.hard.parallel.fuse.rrf"]
    assert router["all_below_ndcg@10"] == pytest.approx(fuser["train_ndcg@10"], abs=1e-12)
    assert 0 < router["share_below"] < 1  # a real cut on this slice: the figures are those of a routing


def _learning_route() -> Route:
    return Route(ScoreRouter(learn=True), {"easy": [TopK(k=3)], "hard": [BM25(k=20)]})


def _learning_loop() -> Loop:
    return Loop([PRF(), BM25(k=20)], until=ScoreReached(learn=True), max_iters=2)


@pytest.mark.parametrize("make,where", [
    (_learning_route, r"pipeline\[1\]\.route\.branches\.x\.route\.router: learning score_router's threshold"),
    (_learning_loop, r"pipeline\[1\]\.route\.branches\.x\.loop\.until: learning score_reached's threshold")])
def test_no_usable_query_where_a_threshold_learns_is_a_data_error(slice_data, make, where):
    """A rule router sends a learning route / loop only queries whose relevant documents the corpus lacks:
    the old fit learned a threshold from nDCG 0 everywhere without a word."""
    corpus, _, _, train = slice_data
    qids = list(train.queries.ids)
    lost = qids[:3]
    qrels = dict(train.qrels) | {q: {"absent-doc": 1} for q in lost}
    texts = dict(zip(qids, train.queries.texts))
    rule = {"label": "x", "regex": "^(?:" + "|".join(re.escape(texts[q]) for q in lost) + ")$"}
    inner = make()
    pipe = Pipeline([BM25(k=20), Route(RuleRouter(rules=[rule], default="y"), {"x": inner, "y": [TopK(k=5)]})])
    with pytest.raises(DataError, match=where + r": none of the 3 training queries .* is usable \(with a relevant "
                                              r"document in the corpus\): 3 have judgements"):
        pipe.fit(corpus, TrainSet(texts, qrels))


def _top_query(corpus, train: TrainSet) -> TrainSet:  # noqa: ANN001
    """The training query whose BM25 top score is highest, alone: new queries score below it."""
    top1 = [r.scores[0] for r in BM25(k=5).fit(corpus)(State.of(train.queries)).rankings]
    q = train.queries.ids[int(np.argmax(top1))]
    return TrainSet({q: train.queries.texts[int(np.argmax(top1))]}, {q: train.qrels[q]})


def test_everything_above_sends_every_new_query_above_and_saves(slice_data, caplog, tmp_path):
    """Learned from one query with a cost no branch beats, every training query goes 'easy'
    (share_below 0): the old threshold was that query's top score, and most test queries scored below it
    and went 'hard'."""
    corpus, test_q, _, train = slice_data
    one = _top_query(corpus, train)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe = _router_pipe(cost=1.0, learn_fuser=False).fit(corpus, one)  # (a fuser needs 2)
    report = pipe.learned()["pipeline[1].route.router.score_router"]
    assert report["share_below"] == 0.0 and report["threshold"] == -np.inf
    said = _thin(caplog)
    assert len(said) == 1 and said[0].startswith("pipeline[1].route.router: score_router: threshold learned from "
                                                 "little: 1 usable training query (with a relevant document in the "
                                                 "corpus; at least 10 recommended)")
    assert pipe.search(test_q).values["route"] == ["easy"] * len(test_q)
    pipe.save(tmp_path / "p")
    saved = json.loads((tmp_path / "p").rglob("learned.json").__next__().read_text())
    assert saved["threshold"] == -np.inf
    back = Pipeline.load(tmp_path / "p", corpus)
    assert back.learned() == pipe.learned()
    assert back.search(test_q).values["route"] == ["easy"] * len(test_q)


def test_stopping_everything_at_once_stops_every_new_query_and_saves(slice_data, caplog, tmp_path):
    """Learned from one query with a cost no later iteration beats (mean_iterations 1): the old threshold
    was that query's lowest score, and test queries scoring below it looped on."""
    corpus, test_q, _, train = slice_data
    one = _top_query(corpus, train)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe = _loop_pipe(cost=1.0).fit(corpus, one)
    report = pipe.learned()["pipeline[0].loop.until.score_reached"]
    assert report["mean_iterations"] == 1.0 and report["threshold"] == -np.inf
    said = _thin(caplog)
    assert len(said) == 1 and said[0].startswith("pipeline[0].loop.until: score_reached: threshold learned from "
                                                 "little: 1 usable training query")
    assert pipe.search(test_q).values["iterations"] == [1] * len(test_q)
    pipe.save(tmp_path / "p")
    back = Pipeline.load(tmp_path / "p", corpus)
    assert back.learned() == pipe.learned()
    assert back.search(test_q).values["iterations"] == [1] * len(test_q)


def _state(top: list[list[float]]) -> State:
    return State([f"q{i}" for i in range(len(top))], rankings=[Ranking(list(range(len(s))), s) for s in top])


def test_everything_below_and_looping_to_the_end_hold_beyond_the_training_scores():
    """The other side: the old router's threshold sat just above the highest training feature, and the old
    judge's at the lowest candidate that kept every training query looping (a later iteration's score), so
    a new query scoring higher went 'easy' / stopped at once."""
    train = _state([[3.0, 1.0], [5.0, 2.0]])
    router = ScoreRouter(learn=True)
    router.learn_routes(train, {"easy": np.zeros(2), "hard": np.ones(2)})
    assert router.learned_["share_below"] == 1.0 and router.threshold_ == np.inf
    assert router(_state([[50.0, 1.0], [4.0, 2.0]])).values["label"] == ["hard", "hard"]

    judge = ScoreReached(learn=True)
    features = np.array([[3.0, 5.0], [8.0, 9.0]])  # the second iteration is better for both
    judge.learn_stopping(features, np.array([[0.2, 0.3], [0.6, 0.7]]))
    assert judge.learned_["mean_iterations"] == 2.0 and judge.threshold_ == np.inf
    assert judge(_state([[100.0], [4.0]])).values["done"] == [False, False]


def test_the_one_sided_thresholds_keep_queries_without_a_score_where_they_always_went():
    """At -inf, a query with too few results is still routed 'below' and not done (as the parameters say)."""
    router = ScoreRouter(learn=True, cost=1.0)
    router.learn_routes(_state([[3.0], [5.0]]), {"easy": np.zeros(2), "hard": np.ones(2)})
    assert router.threshold_ == -np.inf
    assert router(_state([[0.1], []])).values["label"] == ["easy", "hard"]
    judge = ScoreReached(learn=True, cost=1.0)
    judge.learn_stopping(np.array([[3.0, 5.0], [8.0, 9.0]]), np.array([[0.2, 0.3], [0.6, 0.7]]))
    assert judge.threshold_ == -np.inf and judge.learned_["mean_iterations"] == 1.0
    assert judge(_state([[0.1], []])).values["done"] == [True, False]


@pytest.mark.parametrize("short", [-np.inf, np.nan])
def test_a_training_query_without_a_score_does_not_undo_stopping_everything_at_once(short):
    """A query whose ranking is too short (feature -inf, or NaN) is never done, whatever the threshold: the old
    judge counted its iterations against "every query done at once" and learned the lowest score (3.0), so a
    new query scoring below it looped on.  It still counts in the reported figures."""
    judge = ScoreReached(learn=True, cost=1.0)
    judge.learn_stopping(np.array([[3.0, 8.0, short], [5.0, 9.0, short]]), np.array([[.2, .6, 0], [.3, .7, 0]]))
    assert judge.threshold_ == -np.inf
    assert judge.learned_["mean_iterations"] == pytest.approx(4 / 3)  # the short query ran both iterations
    assert judge(_state([[1.0], []])).values["done"] == [True, False]
    # one whose ranking gets long enough later is done at its first iteration with a score, as at -inf
    judge.learn_stopping(np.array([[3.0, 8.0, short], [5.0, 9.0, 4.0]]), np.array([[.2, .6, 0], [.3, .7, 0]]))
    assert judge.threshold_ == -np.inf
    # a split stays a split: the third query's later iteration pays for itself
    judge.learn_stopping(np.array([[3.0, 8.0, short], [5.0, 9.0, 4.0], [6.0, 9.5, 7.0]]),
                         np.array([[.2, .6, 0], [.3, .7, 0], [.3, .7, 3.0]]))
    assert np.isfinite(judge.threshold_)


@pytest.mark.parametrize("feature,short", [("top1", []), ("gap", [9.0])])
def test_a_training_query_without_a_feature_does_not_undo_everything_above(feature, short):
    """A query with too few results (no results; one, for a gap) is routed below whatever the threshold: the old
    router could not cut below it and learned the lowest feature (3.0 / 2.0), sending a new query below it
    'hard'."""
    router = ScoreRouter(feature=feature, learn=True, cost=1.0)
    router.learn_routes(_state([[3.0, 0.0], [5.0, 2.0], short]), {"easy": np.zeros(3), "hard": np.ones(3)})
    assert router.threshold_ == -np.inf
    assert router.learned_["share_below"] == pytest.approx(1 / 3)  # the short one went below
    assert router(_state([[0.5, 0.1], short])).values["label"] == ["easy", "hard"]


def test_a_learned_route_in_a_loop_body_warns_once(caplog):
    """The loop fits its body, then again on each query's last input (``_refit_on_iterations``): the route in it
    learned twice and warned twice, where the loop's own learned judge warns once, after its last learning."""
    corpus = Corpus.from_texts(["red apples and pears", "green pears", "red cars fast", "blue sky today",
                                "apple pie recipe", "fast cars red"])
    train = TrainSet({"a": "red apple", "b": "fast car", "c": "green pear"},
                     {"a": {"0": 1}, "b": {"2": 1}, "c": {"1": 1}})
    route = Route(ScoreRouter(learn=True), {"easy": [TopK(k=1)], "hard": [TopK(k=3)]})
    pipe = Pipeline([Loop([BM25(k=5), route], until=MaxOnly(), max_iters=2)])  # (every query: 2 iterations)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe.fit(corpus, train)
    said = _thin(caplog)
    assert len(said) == 1 and said[0].startswith("pipeline[0].loop.body[1].route.router: score_router: threshold "
                                                 "learned from little: 3 usable training queries")
    # in a loop in a loop's body, fitted again by the outer loop's refit too: still once each
    caplog.clear()
    inner = Loop([BM25(k=5), Route(ScoreRouter(learn=True), {"easy": [TopK(k=1)], "hard": [TopK(k=3)]})],
                 until=MaxOnly(), max_iters=2)
    outer = Pipeline([Loop([inner], until=MaxOnly(), max_iters=2)])
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        outer.fit(corpus, train)
    assert [m.split(":")[0] for m in _thin(caplog)] == ["pipeline[0].loop.body[0].loop.body[1].route.router"]
