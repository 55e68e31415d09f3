"""Learned judges / routers and zscore fusion (review s54, second part).

A learning judge's or router's refusal starts with its path in the pipeline, as a search's errors do; zscore
fusion ranks a document a branch retrieved, however low, above one it did not retrieve (as minmax does)."""

import numpy as np
import pytest
from test_learned_s54 import data  # noqa: F401  (a fixture: the 12-topic corpus, queries, qrels)

from ragkit import Pipeline, TrainSet

# ---------------------------------------------------------------- 1. a learner's refusal names its place

def test_learning_judge_refusal_starts_with_its_path(data):  # noqa: F811
    from ragkit.errors import DataError
    from ragkit.pipelines import PRF, Loop, ScoreReached
    from ragkit.retrievers import BM25

    corpus, qs, qrels = data
    pipe = Pipeline([BM25(k=5), Loop([PRF(max_df=0.5), BM25(k=5)], until=ScoreReached(learn=True, rank=8),
                                     max_iters=2)])
    with pytest.raises(DataError, match=r"^pipeline\[1\]\.loop\.until\.score_reached\.rank: no training query's "
                                        r"ranking reaches rank 8 in any of the 2 iterations"):
        pipe.fit(corpus, train=TrainSet(qs, qrels))
    # a loop fitted on its own: named from the loop, once (not placed twice by the refit's second learning)
    loop = Loop([PRF(max_df=0.5), BM25(k=5)], until=ScoreReached(learn=True, rank=8), max_iters=2)
    with pytest.raises(DataError, match=r"^loop\.until\.score_reached\.rank: no training query's ranking"):
        loop.fit(corpus, train=TrainSet(qs, qrels))


@pytest.mark.parametrize("feature", ["gap", "rel_gap"])
def test_learning_router_refusal_starts_with_its_path(data, feature):  # noqa: F811
    from ragkit.errors import DataError
    from ragkit.pipelines import Route, ScoreRouter
    from ragkit.retrievers import BM25

    corpus, qs, qrels = data
    pipe = Pipeline([BM25(k=1), Route(ScoreRouter(learn=True, feature=feature), {"easy": [], "hard": BM25(k=10)})])
    with pytest.raises(DataError, match=rf"^pipeline\[1\]\.route\.router\.score_router\.feature: '{feature}' needs "
                                        r"the top two results"):
        pipe.fit(corpus, train=TrainSet(qs, qrels))


# ---------------------------------------------------------------- 2. zscore: absent is the bottom

def test_zscore_ranks_a_document_retrieved_low_above_one_not_retrieved():
    from ragkit.pipelines import WeightedFusion
    from ragkit.types import Ranking, State

    a = Ranking([1, 2, 3, 4], np.array([10., 9., 8., 1.], np.float32))   # doc 4: retrieved by a, far below a's mean
    b = Ranking([1, 4, 5, 6], np.array([.9, .5, .45, .44], np.float32))  # and by b, below b's mean
    s = State(["q"], branches=[("a", [a]), ("b", [b])])
    for norm in ("minmax", "zscore"):
        r = WeightedFusion(norm=norm)(s).rankings[0]
        got = dict(zip(r.rows.tolist(), r.scores.tolist()))
        assert min(got.values()) == 0.0 == got[6]  # each list's last document: as not retrieved
        assert got[4] > got[5] > got[6]            # retrieved by both, low in each: above those one branch found
        assert r.rows.tolist()[-1] == 6
    # a list of one document (or of equal scores): 0 under zscore, 1 under minmax
    one = State(["q"], branches=[("a", [Ranking([7], np.array([3.], np.float32))]), ("b", [b])])
    z = dict(zip(*(x.tolist() for x in (lambda r: (r.rows, r.scores))(WeightedFusion(norm="zscore")(one).rankings[0]))))
    m = dict(zip(*(x.tolist() for x in (lambda r: (r.rows, r.scores))(WeightedFusion(norm="minmax")(one).rankings[0]))))
    assert z[7] == 0.0 and m[7] == 1.0
