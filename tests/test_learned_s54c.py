"""Learned fusion weights on the fuser's scale, stored exactly (re-review s54).

A kept baseline is stored as given; learned weights are exact means on the fuser's scale, and the warning
quotes the weights it sets aside on that scale; the fuser's seed is the project's Seed."""

import logging

import numpy as np
import pytest
from test_learned_s54 import data  # noqa: F401  (a fixture: the 12-topic corpus, queries, qrels)

from ragkit import Corpus, Parallel, Pipeline, TrainSet

# ---------------------------------------------------------------- 1. a baseline every fold picks is stored exactly

def test_given_weights_every_fold_picks_are_stored_exactly(data):  # noqa: F811
    """Two identical branches: every weight vector ranks alike, ties go to the given weights, so every fold
    picks them and the averaged weights equal them (kept "learned"); stored as (g / s) * s they came back
    [2.9999999999999996, 1.7]."""
    from ragkit.pipelines import RRF
    from ragkit.retrievers import BM25

    corpus, qs, qrels = data
    fuse = RRF(learn=True, weights=[3.0, 1.7])
    Pipeline([Parallel([BM25(k=10), BM25(k=10)], fuse=fuse)]).fit(corpus, train=TrainSet(qs, qrels))
    assert fuse.weights_.tolist() == [3.0, 1.7]
    assert fuse.learned_["weights"] == [3.0, 1.7]


# ---------------------------------------------------------------- 2. learned weights exact on the fuser's scale

def _three_branches(relevant_first_in: int):
    """Three branches over 3 documents a query: the judged one first in branch ``relevant_first_in`` only,
    last in the two others."""
    from ragkit.types import Ranking, State

    qids = [f"q{i}" for i in range(9)]
    ids = np.array([f"d{i}" for i in range(3 * len(qids))])
    orders = {"rel_first": [0, 1, 2], "rel_last": [1, 2, 0], "rel_last2": [2, 1, 0]}
    branches = []
    for b in range(3):
        order = orders["rel_first"] if b == relevant_first_in else orders["rel_last" if b < 2 else "rel_last2"]
        branches.append((f"b{b}", [Ranking(np.array([3 * j + o for o in order]), np.array([3.0, 2.0, 1.0], np.float32))
                                   for j in range(len(qids))]))
    st = State([f"question {q}" for q in qids], query_ids=list(qids), branches=branches)
    corpus = Corpus(ids=ids.tolist(), texts=[f"text {d}" for d in ids])
    train = TrainSet({q: f"question {q}" for q in qids}, {q: {f"d{3 * j}": 1} for j, q in enumerate(qids)})
    return st, corpus, train


@pytest.fixture
def every_fold_picks_7_2_1(monkeypatch):
    """Every fold picks [0.7, 0.2, 0.1] of the 3-branch grid."""
    import ragkit.pipelines.weights as weights_module

    grid = weights_module.simplex_grid(3, 0.1)
    at = int(np.argmin(np.abs(grid - [0.7, 0.2, 0.1]).sum(axis=1)))
    monkeypatch.setattr(weights_module, "best_grid_point", lambda scores, from_uniform, tol=1e-12: at)


def test_learned_weights_are_exact_on_the_fusers_scale(every_fold_picks_7_2_1):
    """[0.7, 0.2, 0.1] times 3 branches was [2.0999999999999996, 0.6000000000000001, 0.30000000000000004]:
    the exact means, multiplied by the scale in fractions, are rounded once."""
    from ragkit.pipelines import RRF

    st, corpus, train = _three_branches(0)
    fuse = RRF(learn=True, folds=3).fit(corpus, train, upstream=st)
    assert fuse.learned_.get("kept") is None
    assert fuse.learned_["weights"] == [2.1, 0.6, 0.3]
    assert fuse.weights_.tolist() == [2.1, 0.6, 0.3]


def test_the_warning_quotes_the_weights_set_aside_on_the_fusers_scale(every_fold_picks_7_2_1, caplog):
    """The "do not beat" warning quoted the averaged weights on the simplex ([0.7, 0.2, 0.1]) while learned()
    showed them on the fuser's scale ([2.1, 0.6, 0.3])."""
    from ragkit.pipelines import RRF

    st, corpus, train = _three_branches(2)  # (the judged document last in branch 0, which the pick favours)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        fuse = RRF(learn=True, folds=3).fit(corpus, train, upstream=st)
    assert fuse.learned_["kept"] == "uniform" and fuse.learned_["weights"] == [1.0, 1.0, 1.0]
    assert fuse.learned_["averaged_weights"] == [2.1, 0.6, 0.3]
    said = [r.getMessage() for r in caplog.records if "do not beat" in r.getMessage()]
    assert len(said) == 1 and f"the learned weights {fuse.learned_['averaged_weights']} do not beat" in said[0], said


# ---------------------------------------------------------------- 3. the fuser's seed is the project's Seed

@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_fusers_seed_out_of_numpys_range_is_refused_at_construction(seed):
    """RRF(learn=True, seed=-1) was accepted and failed deep in numpy's default_rng at fit."""
    from ragkit.errors import ParamError
    from ragkit.pipelines import RRF, WeightedFusion

    for fuser in (RRF, WeightedFusion):
        with pytest.raises((ParamError, ValueError), match=r"seed"):
            fuser(learn=True, seed=seed)
    assert RRF(learn=True, seed=2**32 - 1).params.seed == 2**32 - 1


# ---------------------------------------------------------------- 4. the refusals say why the feature is undefined

def test_a_learning_judge_says_too_short_or_undefined_scores():
    """Scores that are NaN or infinite were refused as "no training query's ranking reaches rank N"."""
    from ragkit.errors import DataError
    from ragkit.pipelines import ScoreReached

    gains = np.array([[0.2, 0.3], [0.6, 0.7]])
    with pytest.raises(DataError, match=r"score_reached\.rank: no training query's ranking reaches rank 1 in any of "
                                        r"the 2 iterations \(2 usable training queries\).*retrieve at least "
                                        r"1 document \(its k\)"):
        ScoreReached(learn=True, rank=1).learn_stopping(np.full((2, 2), -np.inf), gains)
    for features in (np.full((2, 2), np.nan), np.array([[np.inf, np.nan], [np.inf, -np.inf]])):
        with pytest.raises(DataError) as refused:
            ScoreReached(learn=True, rank=3).learn_stopping(features, gains)
        said = str(refused.value)
        assert "reaches rank" not in said and "retrieve at least" not in said, said
        reached = int(np.count_nonzero(~np.isneginf(features)))
        shorter = "; the others are shorter" if reached < 4 else ""  # (all 4 undefined: none is shorter)
        assert said.startswith(f"score_reached.rank: the score at rank 3 is NaN or infinite wherever a training "
                               f"query's ranking reaches it ({reached} of the 4 rankings of the 2 iterations (2 usable "
                               f"training queries){shorter})"), said
        assert "the scores of the step before it are undefined" in said, said
        assert said.endswith("give it finite scores, or set a threshold instead of learn: true"), said


def test_a_learning_router_says_one_document():
    """'retrieve at least 1 documents before the route'."""
    from ragkit.errors import DataError
    from ragkit.pipelines import ScoreRouter
    from ragkit.types import Ranking, State

    empty = Ranking(np.zeros(0, np.int64), np.zeros(0, np.float32))
    state = State(["a", "b"], query_ids=["q0", "q1"], rankings=[empty, empty])
    gains = {"easy": np.array([0.1, 0.2]), "hard": np.array([0.3, 0.4])}
    with pytest.raises(DataError, match=r"score_router\.feature: 'top1' needs a result of each query's ranking, but no "
                                        r"training query's ranking has 1 \(the longest has 0; 2 usable training "
                                        r"queries\).*retrieve at least 1 document before the route \(the k of the "
                                        r"retriever before it\)$"):
        ScoreRouter(learn=True).learn_routes(state, gains)
