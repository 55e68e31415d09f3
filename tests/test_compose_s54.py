"""Pipeline review, stop 54: query vectors of the text a rewriter replaced were handed to the dense steps after it
(results depended on branch order); errors raised while fit ran the steps before a learning step named a wrong
path or none; two generators in the branches of one parallel both called the LLM and one answer was dropped; fit
ran the steps before each learning step again for every one; a nested loop removed the outer loop's
``values["iteration"]``."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ragkit.encoders import HashingEncoder, register_encoder
from ragkit.errors import ConfigError, DataError, ParamError
from ragkit.filters import TopK
from ragkit.operator import Operator
from ragkit.pipelines import RRF, Loop, MaxOnly, Parallel, Pipeline, Route, RuleRouter, ScoreReached, ScoreRouter
from ragkit.retrievers import BM25, Dense
from ragkit.types import Corpus, Queries, State, TrainSet

register_encoder("s54-hash", HashingEncoder(dim=32), replace=True)

TEXTS = ["red apples and pears", "green pears", "red cars fast", "blue sky", "apple pie recipe", "fast cars race",
         "sky is blue and clear", "pear tree garden"]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.from_texts(TEXTS, ids=[f"d{i}" for i in range(len(TEXTS))])


@pytest.fixture(scope="module")
def train() -> TrainSet:
    queries = Queries([f"t{i}" for i in range(4)], ["red apples", "fast cars", "blue sky", "pear tree"])
    return TrainSet(queries, {"t0": {"d0": 1}, "t1": {"d5": 1}, "t2": {"d3": 1}, "t3": {"d7": 1}})


class _Rewrite(Operator):
    """A plugin rewriter as the README's "Writing an operator" describes one: writes ``values["query_text"]``."""

    name = "s54_rewrite"
    kind = "rewriter"
    stateless = True

    def _call(self, state: State) -> State:
        out = state.copy()
        out.values["query_text"] = ["blue sky"] * len(state)
        return out


def _dense() -> Dense:
    return Dense(model="s54-hash", k=3)


def _ids(rows: np.ndarray, corpus: Corpus) -> list[str]:
    return [corpus.ids[r] for r in rows]


# ----------------------------------------------------------------------------- 1. no stale query vectors
def _branch_ranking(out: State, name: str, corpus: Corpus) -> list[str]:
    """The documents branch ``name`` of a parallel ranked (its ``<name>.rank`` field), best first."""
    fields, rows = out.rankings[0].fields, out.rankings[0].rows
    ranks = np.asarray(fields[f"{name}.rank"])
    order = np.argsort(np.where(ranks > 0, ranks, np.inf), kind="stable")
    return [corpus.ids[r] for r in rows[order] if ranks[r == rows].item() > 0]


def test_a_rewritten_parallel_branch_searches_the_new_text_in_either_branch_order(corpus):
    alone = Pipeline([_Rewrite(), _dense()]).fit(corpus).search(["fast cars"]).doc_ids[0].tolist()
    plain = Pipeline([_dense()]).fit(corpus).search(["fast cars"]).doc_ids[0].tolist()
    assert alone != plain  # (else the test shows nothing)
    original = _dense().fit(corpus)(State.of(["fast cars"])).vectors
    for branches, names in (([_dense(), [_Rewrite(), _dense()]], ["plain", "rewritten"]),
                            ([[_Rewrite(), _dense()], _dense()], ["rewritten", "plain"])):
        out = Parallel(branches, names=names).fit(corpus)(State.of(["fast cars"]))
        # the plain branch encoded 'fast cars' first: the rewritten branch was given its vectors (old: plain's ranking)
        assert _branch_ranking(out, "rewritten", corpus) == alone, names
        assert _branch_ranking(out, "plain", corpus) == plain, names
        # what the parallel passes on encodes the text it passes on (the rewrite stays inside its branch)
        assert [np.array_equal(v, original[k]) for k, v in out.vectors.items()] == [True] * len(original)


def test_a_rewrite_in_a_list_drops_the_query_vectors_it_was_given(corpus):
    alone = Pipeline([_Rewrite(), _dense()]).fit(corpus).search(["fast cars"]).doc_ids[0].tolist()
    listed = Pipeline([_dense(), _Rewrite(), _dense()]).fit(corpus)
    assert listed.search(["fast cars"]).doc_ids[0].tolist() == alone
    # step by step: the rewriter returns no vectors of the text it replaced; a step that keeps the text keeps them
    first = listed.steps[0](State.of(["fast cars"]))
    key = listed.steps[0].encoder.key
    assert list(first.vectors) == [key]
    rewritten = listed.steps[1](first)
    assert rewritten.vectors == {} and list(first.vectors) == [key]  # (its input unchanged)
    assert _ids(listed.steps[2](rewritten).rankings[0].rows, corpus) == alone
    kept = TopK(k=2).fit(corpus)(first)
    assert kept.vectors[key] is first.vectors[key]
    # a rewrite to the text it was given keeps them (nothing changed)
    same = _Rewrite()
    again = same(State.of(["blue sky"], vectors={key: np.ones((1, 32), np.float32)}))
    assert list(again.vectors) == [key]


def test_a_route_with_a_rewriting_branch_searches_each_query_as_its_branch_alone(corpus):
    router = RuleRouter(rules=[{"label": "rewrite", "keywords": ["fast"]}], default="plain")
    branches = {"rewrite": Pipeline([_Rewrite(), _dense()]), "plain": _dense()}
    route = Pipeline([_dense(), Route(router, branches)]).fit(corpus)
    got = route.search(["fast cars", "red apples"]).doc_ids
    rewritten = Pipeline([_Rewrite(), _dense()]).fit(corpus).search(["fast cars"]).doc_ids[0].tolist()
    plain = Pipeline([_dense()]).fit(corpus).search(["red apples"]).doc_ids[0].tolist()
    assert [got[0].tolist(), got[1].tolist()] == [rewritten, plain]


# ----------------------------------------------------------------------------- 2. fit's errors at their paths
class _Boom(Operator):
    """A reranker that fails on what it gets (as dbnorm on scores that are not cosines)."""

    name = "s54_boom"
    kind = "reranker"
    stateless = True
    reads_rankings = True

    def _call(self, state: State) -> State:
        raise DataError("s54_boom: scores are not cosines")


@pytest.mark.parametrize("steps, where", [
    # the branches run for a learning fuser's input
    (lambda learn: [BM25(k=5), TopK(k=5), Parallel([[TopK(k=4), _Boom()], TopK(k=3)],
                                                   fuse=RRF(learn=learn, **({"folds": 2} if learn else {})))],
     r"pipeline\[2\]\.parallel\.branches\[0\]\[1\]\.s54_boom"),
    # the steps before a learning step, run for its upstream (old: no path at all)
    (lambda learn: [BM25(k=5), _Boom(), Parallel([TopK(k=4), TopK(k=3)],
                                                 fuse=RRF(learn=learn, **({"folds": 2} if learn else {})))],
     r"pipeline\[1\]\.s54_boom"),
    # a loop's body, run for a learning judge (old: the loop's path, without the body's)
    (lambda learn: [BM25(k=5), Loop([TopK(k=4), _Boom()], until=ScoreReached(**({"learn": True} if learn else
                                                                                {"threshold": 0.5})), max_iters=2)],
     r"pipeline\[1\]\.loop\.body\[1\]\.s54_boom"),
    # a route's branches, run for a learning router's gains (old: route.branches.hard, not at the route's step)
    (lambda learn: [BM25(k=5), Route(ScoreRouter(feature="top1", **({"learn": True} if learn else {"threshold": 1e9})),
                                     {"easy": TopK(k=4), "hard": [TopK(k=3), _Boom()]})],
     r"pipeline\[1\]\.route\.branches\.hard\[1\]\.s54_boom"),
], ids=["parallel", "upstream", "loop", "route"])
def test_an_error_of_a_step_fit_runs_names_its_path_as_search_does(steps, where, corpus, train):
    logging.disable(logging.WARNING)  # (thin training sets: warnings of no interest here)
    try:
        with pytest.raises(DataError, match=rf"^{where}: scores are not cosines$"):
            Pipeline(steps(True)).fit(corpus, train)
        searched = Pipeline(steps(False)).fit(corpus)
        with pytest.raises(DataError, match=rf"^{where}: scores are not cosines$"):
            searched.search(["red apples", "blue sky"])
    finally:
        logging.disable(logging.NOTSET)


# ----------------------------------------------------------------------------- 3. one generator per parallel
def test_a_generator_in_two_branches_of_a_parallel_is_refused_in_python_and_yaml():
    """Both branches called the language model on every query; the parallel kept the first answer only."""
    from ragkit.generators.operator import Generate

    with pytest.raises(ParamError, match=r"^parallel\.branches\[2\]: a second generator \(generate\) in this parallel, "
                                         r"beside the generate of its branches\[0\]: .* drops the other") as e:
        Parallel([[TopK(k=3), Generate()], TopK(k=2), Pipeline([TopK(k=4), Generate(top_k=2)])])
    assert e.value.path == "parallel.branches[2]"
    with pytest.raises(ConfigError) as e:  # at its place in the file
        Pipeline.from_yaml("pipeline:\n  - bm25: {}\n  - parallel:\n      branches:\n        - [top_k: {k: 3}, "
                           "generate: {}]\n        - [top_k: {k: 2}, generate: {top_k: 2}]\n")
    assert e.value.path == "pipeline[1].parallel.branches[1]"
    assert str(e.value).startswith("pipeline[1].parallel.branches[1]: a second generator (generate) in this parallel")
    # one generator in a parallel, or one in each branch of a route, is fine
    Parallel([[TopK(k=3), Generate()], TopK(k=2)])
    Route(RuleRouter(rules=[{"label": "a", "max_words": 1}]), {"a": Generate(), "default": Generate(top_k=2)})


# ----------------------------------------------------------------------------- 4. the prefix runs once in fit
def test_fit_runs_the_steps_before_several_learners_once(corpus, train):
    calls: list[int] = []

    class _Counting(BM25):
        def _call(self, state: State) -> State:
            calls.append(len(state))
            return super()._call(state)

    first = _Counting(k=5)
    pipe = Pipeline([first, Parallel([TopK(k=5), BM25(k=5, stemmer="none")], fuse=RRF(learn=True, folds=2)),
                     TopK(k=5), Parallel([TopK(k=4), _dense()], fuse=RRF(learn=True, folds=2))])
    logging.disable(logging.WARNING)
    try:
        pipe.fit(corpus, train)
    finally:
        logging.disable(logging.NOTSET)
    assert calls == [len(train.queries)]  # (old: once per learning step)
    # the last learner learned from what the three steps before it make of the training queries
    prefix = Pipeline(pipe.steps[:3])(State.of(train.queries))
    alone = Parallel([TopK(k=4), _dense()], fuse=RRF(learn=True, folds=2))
    logging.disable(logging.WARNING)
    try:
        alone.fit(corpus, train, upstream=prefix)
    finally:
        logging.disable(logging.NOTSET)
    assert pipe.learned()["pipeline[3].parallel.fuse.rrf"] == alone.fuse.learned_


# ----------------------------------------------------------------------------- 5. values["iteration"] of nested loops
def test_a_nested_loop_gives_back_the_outer_loops_iteration_numbers(corpus):
    seen: list[object] = []

    class _Spy(Operator):
        """A plugin step that reads the loop's iteration number (a plugin judge may, too)."""

        name = "s54_spy"
        kind = "reranker"
        stateless = True
        reads_rankings = True

        def _call(self, state: State) -> State:
            seen.append(state.values.get("iteration"))
            return state.copy()

    inner = Loop([TopK(k=4), _Spy()], until=MaxOnly(), max_iters=2)
    outer = Loop([TopK(k=5), inner, _Spy()], until=MaxOnly(), max_iters=3)
    out = Pipeline([BM25(k=5), outer]).fit(corpus)(State.of(["red apples", "blue sky"]))
    # each outer iteration: the inner loop's two (0, 1), then the outer's own number after it (old: None)
    assert seen == [[0, 0], [1, 1], [0, 0]] + [[0, 0], [1, 1], [1, 1]] + [[0, 0], [1, 1], [2, 2]]
    assert "iteration" not in out.values and out.values["iterations"] == [3, 3]
    # a loop run on a state holding its own number (an outer body) gives that back, the same list
    given = State.of(["red apples"], values={"iteration": [7]})
    ranked = BM25(k=5).fit(corpus)(given)
    assert Loop(TopK(k=3), until=MaxOnly(), max_iters=2).fit(corpus)(ranked).values["iteration"] == [7]
