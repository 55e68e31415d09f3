"""Pipelines: composition semantics, fusers by hand, routers/judges/PRF, YAML round trips and
malformed YAML, fit-once, save/load."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from ragkit import registry
from ragkit.errors import ArtifactError, ConfigError, DataError, ParamError
from ragkit.filters import MMR, TopK
from ragkit.operator import Operator
from ragkit.pipelines import (
    PRF,
    RRF,
    Loop,
    MaxOnly,
    Parallel,
    Pipeline,
    Route,
    RuleRouter,
    ScoreReached,
    ScoreRouter,
    TopKStable,
    WeightedFusion,
)
from ragkit.pipelines.yaml import load_yaml, walk_leaves
from ragkit.retrievers import BM25
from ragkit.types import Ranking, State


@pytest.fixture(scope="module")
def fitted_bm25(slice_data):
    return BM25(k=20).fit(slice_data[0])


def _same(a, b):
    assert a.query_ids == b.query_ids
    for ra, rb in zip(a.rankings, b.rankings):
        np.testing.assert_array_equal(ra.rows, rb.rows)
        np.testing.assert_allclose(ra.scores, rb.scores, rtol=1e-6)


def _learned_roundtrip(pipe, spec: str, queries, corpus, folder, off: str) -> Pipeline:
    """Saved and loaded, a learning pipeline ranks the same; learning without judged queries and a
    threshold-less non-learning spec (``spec`` with ``off`` replacing ``learn: true``) are refused."""
    pipe.save(folder)
    loaded = Pipeline.load(folder)
    _same(pipe.search(queries), loaded.search(queries))
    with pytest.raises(ParamError, match="learn"):
        Pipeline.from_yaml(spec).fit(corpus)
    with pytest.raises(ParamError, match="threshold"):
        Pipeline.from_yaml(spec.replace("learn: true", off))
    return loaded


# ---------------------------------------------------------------------- fusers by hand
def _branches():
    # branch a lists doc 5 twice (counts once, at rank 1); branch b misses doc 7
    a = [Ranking([5, 5, 7], [3.0, 2.0, 1.0]), Ranking([1], [1.0])]
    b = [Ranking([9, 5], [0.8, 0.4]), Ranking.empty()]
    return State(["q0", "q1"], branches=[("a", a), ("b", b)])


def test_rrf_hand_computed_with_duplicates_and_fields():
    r = RRF(k=60)(_branches()).rankings
    exp = {5: 1 / 61 + 1 / 62, 9: 1 / 61, 7: 1 / 63}
    assert r[0].rows.tolist() == [5, 9, 7]
    np.testing.assert_allclose(r[0].scores, [exp[5], exp[9], exp[7]], rtol=1e-6)
    assert r[0].fields["a.rank"].tolist() == [1, 0, 3] and r[0].fields["b.rank"].tolist() == [2, 1, 0]
    np.testing.assert_allclose(r[0].fields["a.score"], [3.0, np.nan, 1.0])
    assert r[1].rows.tolist() == [1] and r[1].fields["b.rank"].tolist() == [0]


def test_rrf_weights_and_top_k():
    r = RRF(k=10, weights=[1.0, 3.0], top_k=2)(_branches()).rankings[0]
    exp = {5: 1 / 11 + 3 / 12, 9: 3 / 11, 7: 1 / 13}
    assert r.rows.tolist() == [5, 9]
    np.testing.assert_allclose(r.scores, [exp[5], exp[9]], rtol=1e-6)
    with pytest.raises(ParamError, match="2 branches"):
        RRF(weights=[1.0, 2.0, 3.0])(_branches())


def test_weighted_minmax_and_zscore_by_hand():
    r = WeightedFusion(norm="minmax")(_branches()).rankings[0]
    # a: 5->(3-1)/2=1, 7->0 ; b: 9->1, 5->0
    got = dict(zip(r.rows.tolist(), r.scores.tolist()))
    assert got == pytest.approx({5: 1.0, 9: 1.0, 7: 0.0})
    assert r.rows.tolist() == [5, 9, 7]  # tie broken by row
    r = WeightedFusion(norm="zscore", weights=[2.0, 1.0])(_branches()).rankings[0]
    za = (np.array([3.0, 1.0]) - 2.0) / 1.0
    zb = (np.array([0.8, 0.4]) - 0.6) / 0.2
    za, zb = za - za.min(), zb - zb.min()  # each list shifted so its lowest is 0, as a document not retrieved
    got = dict(zip(r.rows.tolist(), r.scores.tolist()))
    assert got == pytest.approx({5: 2 * za[0] + zb[1], 7: 2 * za[1], 9: zb[0]}, rel=1e-5)


@pytest.mark.parametrize("norm", ["minmax", "zscore", "none"])
def test_weighted_fusion_treats_a_nan_score_as_missing(norm):
    """One NaN in a branch's list spread over the whole list (minmax: every document 1.0, zscore:
    every document 0); now it contributes 0 and the rest fuse as if it were absent."""
    a, b = Ranking([1, 2, 3], [0.9, 0.5, 0.1]), Ranking([4, 3], [0.9, 0.2])
    clean = WeightedFusion(norm=norm)(State(["q"], branches=[("a", [a]), ("b", [b])])).rankings[0]
    a_nan = Ranking([1, 2, 3, 7], [0.9, 0.5, 0.1, np.nan])
    with np.errstate(all="raise"):
        got = WeightedFusion(norm=norm)(State(["q"], branches=[("a", [a_nan]), ("b", [b])])).rankings[0]
    keep = got.rows != 7
    assert got.rows[keep].tolist() == clean.rows.tolist()
    np.testing.assert_allclose(got.scores[keep], clean.scores)
    assert np.isfinite(got.scores).all()


# ---------------------------------------------------------------------- composition semantics
class _Tag(Operator):
    """Test operator: appends its tag to values['seen'] and counts fits/calls."""

    name = "tag_test"
    kind = "filter"
    stateless = True

    def __init__(self, tag):
        super().__init__()
        self.tag, self.fits, self.calls = tag, 0, []

    def fit(self, corpus, train=None, *, upstream=None):
        self.fits += 1
        return self

    def _call(self, state):
        out = state.copy()
        self.calls.append(list(state.query_ids))
        out.values["seen"] = [f"{s or ''}{self.tag}" for s in state.values.get("seen", [None] * len(state))]
        out.rankings = [Ranking([i], [1.0]) for i in range(len(state))] if state.rankings is None else state.rankings
        return out


def test_route_preserves_order_and_runs_each_part_as_one_batch():
    a, b = _Tag("A"), _Tag("B")
    queries = ["x", "long query here with many words", "y", "another long query of words", "z"]
    route = Route(RuleRouter(rules=[{"label": "short", "max_words": 1}], default="long"), {"short": a, "long": b})
    out = route(State(queries))
    assert out.values["route"] == ["short", "long", "short", "long", "short"]
    assert out.values["seen"] == ["A", "B", "A", "B", "A"]
    assert a.calls == [["q0", "q2", "q4"]] and b.calls == [["q1", "q3"]]
    assert out.query_ids == ["q0", "q1", "q2", "q3", "q4"]


def test_route_default_branch_and_unknown_label():
    router = RuleRouter(rules=[{"label": "nobranch", "max_words": 1}], default="other")
    out = Route(router, {"other": _Tag("O")}, default=_Tag("D"))(State(["x", "two words"]))
    assert out.values["seen"] == ["D", "O"]
    with pytest.raises(ParamError, match="nobranch"):
        Route(router, {"other": _Tag("O")})(State(["x"]))


class _Never(Operator):
    name = "never_test"
    kind = "judge"
    stateless = True

    def __init__(self, stop_ids=()):
        super().__init__()
        self.stop = set(stop_ids)

    def _call(self, state):
        out = state.copy()
        out.values["done"] = [q in self.stop for q in state.query_ids]
        return out


@pytest.mark.parametrize("max_iters", [1, 2, 5])
def test_loop_stops_at_max_iters_exactly_per_query(max_iters):
    body = _Tag("i")
    out = Loop(body, until=_Never(stop_ids={"q1"}), max_iters=max_iters)(State(["a", "b", "c"], trace=[]))
    assert out.values["iterations"] == [max_iters, 1, max_iters]
    assert out.values["seen"] == ["i" * max_iters, "i", "i" * max_iters]
    assert len(body.calls) == max_iters and body.calls[1:] == [["q0", "q2"]] * (max_iters - 1)
    assert [e.n_queries for e in out.trace if e.operator == "tag_test"] == [3] + [2] * (max_iters - 1)
    assert all(e.path == "loop.body.tag_test" for e in out.trace if e.operator == "tag_test")


def test_max_only_and_score_reached_judges():
    s = State(["a", "b"], rankings=[Ranking([1, 2], [5.0, 1.0]), Ranking([3], [0.5])])
    assert MaxOnly()(s).values["done"] == [False, False]
    assert ScoreReached(threshold=1.0)(s).values["done"] == [True, False]
    assert ScoreReached(threshold=1.0, rank=2)(s).values["done"] == [True, False]
    assert ScoreReached(threshold=0.0, rank=2)(s).values["done"] == [True, False]  # too short: not done


def test_topk_stable_memory_is_cleared_after_loop(slice_data, fitted_bm25):
    corpus, queries, _, _ = slice_data
    loop = Loop(fitted_bm25, until=TopKStable(k=5), max_iters=4)
    run = (loop | Loop(fitted_bm25, until=TopKStable(k=5), max_iters=4)).search(queries)
    assert "_topk_stable" not in run.values
    assert run.values["iterations"] == [2] * len(queries)  # same ranking twice -> stable at iteration 2


def test_operator_in_two_branches_is_fitted_once():
    shared = _Tag("S")
    pipe = Parallel([Pipeline([shared, _Tag("x")]), shared]) | Loop(shared, until=MaxOnly(), max_iters=2)
    from ragkit.types import Corpus

    pipe.fit(Corpus.from_texts(["a", "b"]))
    assert shared.fits == 1


def test_parallel_keeps_branch_query_text_inside_branch(slice_data, fitted_bm25):
    corpus, queries, _, _ = slice_data
    prf = PRF(max_df=0.5).fit(corpus)
    par = Parallel([fitted_bm25, Pipeline([fitted_bm25, prf, fitted_bm25])], fuse=RRF())
    out = par(State.of(queries))
    assert "lexical_query" not in out.values and len(out.rankings) == len(queries)


def test_trace_paths_match_yaml_paths(slice_data, fitted_bm25):
    corpus, queries, qrels, _ = slice_data
    pipe = Parallel([fitted_bm25, Pipeline([fitted_bm25, TopK(k=5)])], fuse=RRF()) | TopK(k=10)
    run = pipe.search(queries, trace=True, qrels=qrels)
    assert [e.path for e in run.trace] == [p for p, _ in walk_leaves(pipe)][:2] + [
        "pipeline[0].parallel.branches[1][1].top_k", "pipeline[0].parallel.fuse.rrf", "pipeline[1].top_k"]
    assert all(e.recall is not None for e in run.trace)
    from rich.console import Console

    from ragkit.pipelines.trace import aggregate_trace

    assert [r.calls for r in aggregate_trace(run.trace)] == [1] * 5
    fuse = aggregate_trace(run.trace)[3]  # a fuser receives its branches' documents (was "0.0")
    assert fuse.path.endswith("fuse.rrf") and fuse.candidates_in == pytest.approx(
        run.trace[0].candidates_out + run.trace[2].candidates_out)
    from ragkit.pipelines.trace import print_trace

    for width in (80, 250):  # an 80-column terminal gets one block per step: no cell cut short ("tot…")
        out = Console(width=width, record=True, file=open("/dev/null", "w"))
        print_trace(out, run.trace)
        shown = out.export_text()
        assert "…" not in shown and shown.count("pipeline[0].parallel.branches[1][1].top_k") == 1
        assert ("nDCG@10 0." in shown) == (width == 80)


class _SearchesElsewhere(Operator):
    """Test filter that runs a whole search of another pipeline, on another corpus, mid-call
    (as a user's operator might, or another thread)."""

    name = "searches_elsewhere_test"
    kind = "filter"
    stateless = True

    def __init__(self, other, queries):
        super().__init__()
        self.other, self.queries = other, queries

    def _call(self, state):
        self.other.search(self.queries, trace=True)
        return state


def test_trace_scores_each_search_against_its_own_corpus(slice_data, fitted_bm25):
    """The trace's recall maps rows to ids of the search's own corpus: a search run meanwhile on
    another corpus (here nested; threads and asyncio tasks alike) no longer leaves its ids behind."""
    corpus, queries, qrels, _ = slice_data
    reversed_bm25 = BM25(k=20).fit(corpus.subset(np.arange(len(corpus))[::-1]))
    plain = (fitted_bm25 | TopK(k=10)).search(queries, trace=True, qrels=qrels)
    nested = (fitted_bm25 | _SearchesElsewhere(Pipeline([reversed_bm25]), queries) | TopK(k=10)).search(
        queries, trace=True, qrels=qrels)
    assert nested.trace[-1].recall == pytest.approx(plain.trace[-1].recall) and plain.trace[-1].recall > 0.5
    assert nested.trace[-1].ndcg == pytest.approx(plain.trace[-1].ndcg)


class _FreshState(Operator):
    """Test filter that returns a new State (as a user's operator may), without the trace list."""

    name = "fresh_state_test"
    kind = "filter"
    stateless = True

    def _call(self, state):
        return State(list(state.queries), list(state.query_ids), rankings=state.rankings)


def test_trace_records_a_step_whose_output_state_dropped_the_trace(slice_data, fitted_bm25):
    """A traced step is recorded in the search's trace list even when the operator's output state
    does not carry it, and the steps after it too (appending to the output's trace raised
    "'NoneType' object has no attribute 'append'")."""
    corpus, queries, qrels, _ = slice_data
    run = (fitted_bm25 | _FreshState() | TopK(k=5)).search(queries, trace=True, qrels=qrels)
    assert [e.operator for e in run.trace] == ["bm25", "fresh_state_test", "top_k"]


def test_learning_threshold_before_fit_is_refused_clearly():
    """``threshold`` of an unfitted ``learn: true`` router or judge says it was not learned (it raised
    "float() argument must be ... not 'NoneType'")."""
    for op in (ScoreRouter(learn=True), ScoreReached(learn=True)):
        with pytest.raises(ParamError, match="no threshold was learned"):
            op.threshold
    assert ScoreRouter(threshold=0.5).threshold == 0.5


# ---------------------------------------------------------------------- routers, PRF
def test_rule_router_rules_in_order():
    r = RuleRouter(rules=[{"label": "rx", "regex": r"^what\b"}, {"label": "kw", "keywords": ["Cancer"]},
                          {"label": "short", "max_words": 2, "min_words": 1}], default="d")
    assert r(State(["What is cancer", "cancer cells grow", "p53 gene", "a b c d"])).values["label"] == [
        "rx", "kw", "short", "d"]
    with pytest.raises(ParamError, match="rules.0"):
        RuleRouter(rules=[{"label": "x"}])
    with pytest.raises(ParamError, match="does not compile"):
        RuleRouter(rules=[{"label": "x", "regex": "("}])


def test_score_router_routes_easy_queries_past_expensive_branch(slice_data, fitted_bm25):
    corpus, queries, _, _ = slice_data
    state = fitted_bm25(State.of(queries))
    top = np.array([r.scores[0] for r in state.rankings])
    thr = float(np.median(top))
    expensive = _Tag("E")
    pipe = fitted_bm25 | Route(ScoreRouter(threshold=thr), {"easy": TopK(k=10), "hard": expensive})
    run = pipe.search(queries)
    assert run.values["route"] == ["easy" if t >= thr else "hard" for t in top]
    assert sum(len(c) for c in expensive.calls) == int((top < thr).sum())
    gaps = np.array([r.scores[0] - r.scores[1] for r in state.rankings])
    cut = float(np.median(gaps))
    gap = ScoreRouter(feature="gap", threshold=cut, above="hi", below="lo")(state).values["label"]
    assert gap == ["hi" if g >= cut else "lo" for g in gaps] and set(gap) == {"hi", "lo"}
    with pytest.raises(DataError, match="works on the rankings of the steps before it; the state has none"):
        ScoreRouter(threshold=1.0)(State(["q"]))  # (every step that reads rankings alike, s55; was a ParamError)
    # rel_gap passes 1 when the second score is negative (logits): such a threshold is a real one
    logits = State(["a", "b"], rankings=[Ranking(np.array([0, 1]), np.array([-2.0, -7.0], np.float32)),
                                         Ranking(np.array([0, 1]), np.array([-2.0, -3.0], np.float32))])
    assert ScoreRouter(feature="rel_gap", threshold=1.5)(logits).values["label"] == ["easy", "hard"]
    with pytest.raises(ParamError, match="rel_gap' must be >= 0"):
        ScoreRouter(feature="rel_gap", threshold=-0.1)


def test_a_score_router_with_no_retriever_before_its_route_is_refused_before_any_work(slice_data):
    """It would fail on the first search (or, learning, after every branch was fitted): refused
    when the YAML is loaded, at fit and at search, with the router's path."""
    from ragkit.errors import NotFittedError

    corpus, queries, _, train = slice_data
    where = r"^pipeline\[0\]\.route\.router: score_router routes on the scores .* no step before this route"
    with pytest.raises(ConfigError, match=where):
        load_yaml("pipeline: [{route: {router: {score_router: {threshold: 5}}, branches: {easy: [{bm25: {}}], "
                  "hard: [{bm25: {}}]}}}]")
    branch = BM25(k=3)
    pipe = Pipeline([Route(ScoreRouter(learn=True), {"easy": branch, "hard": BM25(k=5)})])
    with pytest.raises(ConfigError, match=where):
        pipe.fit(corpus, train)
    assert not branch.is_fitted  # before any branch was fitted
    with pytest.raises(ConfigError, match=where):
        pipe.search(queries)
    nested = "pipeline[1].loop.body[0].route.router"  # a loop's body sees the rankings of the steps before the loop
    ok = load_yaml("pipeline: [{bm25: {}}, {loop: {body: [{route: {router: {score_router: {threshold: 5}}, "
                   "branches: {easy: [], hard: [{prf: {}}, {bm25: {}}]}}}], until: {max_only: {}}, max_iters: 2}}]")
    assert [p for p, _ in walk_leaves(ok)][1].startswith(nested)
    with pytest.raises(ConfigError, match=r"^pipeline\[0\]\.parallel\.branches\[1\]\[0\]\.route\.router: "):
        load_yaml("pipeline: [{parallel: {branches: [[{bm25: {}}], [{route: {router: {score_router: {threshold: 5}}, "
                  "branches: {easy: [{bm25: {}}], hard: [{bm25: {}}]}}}]]}}]")
    # a pipeline searched with an operator left unfitted (here a route branch added after the fit)
    # names it, before any step runs
    fitted = Pipeline([BM25(k=5), Route(ScoreRouter(threshold=1e9), {"easy": TopK(k=3), "hard": TopK(k=3)})])
    fitted.fit(corpus)
    fitted.steps[1].branches["hard"] = Pipeline([BM25(k=5)])
    with pytest.raises(NotFittedError, match=r"^pipeline\[1\]\.route\.branches\.hard.*bm25 is not fitted"):
        fitted.search(queries[:2])


def test_prf_expands_with_feedback_terms_and_loop_converges(slice_data, fitted_bm25):
    corpus, queries, _, _ = slice_data
    prf = PRF(max_df=0.5).fit(corpus)
    s = fitted_bm25(State.of(queries))
    s.vectors["enc"] = np.zeros((len(queries), 3), np.float32)
    out = prf(s)
    # the weighted text is for term matching: encoders keep the query and its vectors
    assert "enc" in out.vectors and "query_text" not in out.values and out.texts() == list(queries.texts)
    assert len(out.values["lexical_query"]) == len(queries)
    assert all(len(t.split()) > len(q.split()) for t, q in zip(out.texts(lexical=True), queries.texts))
    # original_query_weight=1: the original query, weights written to within 1/resolution -> same top documents
    same = fitted_bm25(PRF(original_query_weight=1.0).fit(corpus)(s))
    for a, b in zip(same.rankings, s.rankings):
        assert set(a.rows[:5].tolist()) == set(b.rows[:5].tolist())
    run = Loop([prf, fitted_bm25], until=TopKStable(k=10), max_iters=3).search(queries, trace=True)
    assert all(1 <= i <= 3 for i in run.values["iterations"]) and "lexical_query" in run.values


def test_prf_expansion_is_not_what_a_dense_retriever_encodes(slice_data, fitted_bm25):
    """PRF's weighted bag of stems ("cerebr cerebr ... 0 0") is for BM25; a dense step after
    it encoded that text (nDCG@10 0.89 -> 0.69 in the report) and now encodes the query."""
    from ragkit.retrievers import Dense

    corpus, queries, _, _ = slice_data
    dense = Dense(k=10).fit(corpus)
    alone = dense.search(queries)
    after = Pipeline([fitted_bm25, PRF(max_df=0.5).fit(corpus), dense]).search(queries)
    assert [r.rows.tolist() for r in after.rankings] == [r.rows.tolist() for r in alone.rankings]


def test_prf_matches_a_whitespace_bm25_and_ignores_nan_feedback_scores(slice_data):
    corpus, queries, _, _ = slice_data
    bm25 = BM25(k=20, tokenizer="whitespace").fit(corpus)
    prf = PRF(tokenizer="whitespace", max_df=0.5).fit(corpus)
    s = bm25(State.of(queries))
    expanded = prf(s).texts(lexical=True)
    known = set(bm25.terms())
    words = {w for t in expanded for w in bm25.make_tokenizer()([t])[0]}
    assert words <= known, sorted(words - known)[:5]  # every word PRF writes is a term the BM25 knows
    clean = prf.expansion_weights(s)
    nan = s.rankings[0].scores.copy()  # (a Ranking's arrays are read-only: a new one with the NaN)
    nan[3] = np.nan  # one NaN feedback score: that document weighs 0, the query stays normalised
    s.rankings[0] = Ranking(s.rankings[0].rows, nan)
    w = prf.expansion_weights(s)
    np.testing.assert_allclose(np.asarray(w.sum(axis=1)).ravel(), np.asarray(clean.sum(axis=1)).ravel())
    assert np.isfinite(w.data).all()


def test_nested_loops_keep_their_own_judge_memory():
    """Both loops judged by topk_stable: the inner one overwrote the outer judge's memory, so the
    outer loop stopped after two iterations although every call changed the ranking."""
    from ragkit.operator import Operator

    calls = []

    class Drift(Operator):
        name, kind, stateless = "drift_test", "retriever", True

        def _call(self, state):
            calls.append(1)
            out = state.copy()
            c = len(calls)
            out.rankings = [Ranking([c, c + 1], [2.0, 1.0]) for _ in range(len(state))]
            return out

    inner = Loop(Drift(), until=TopKStable(k=2), max_iters=2)
    out = Loop(inner, until=TopKStable(k=2), max_iters=5)(State(["q"]))
    assert out.values["iterations"] == [5] and len(calls) == 10
    assert not any(k.startswith("_") for k in out.values)


# ---------------------------------------------------------------------- YAML round trips
@pytest.mark.parametrize("name", registry.names())
def test_yaml_round_trip_every_registered_operator(name):
    cls = registry.get(name)
    op = cls(**cls.example)
    pipe = Pipeline([op])
    again = Pipeline.from_yaml(pipe.to_yaml())
    assert again == pipe and type(again.steps[0]) is cls and again.to_yaml() == pipe.to_yaml()


COMPOSITE = """
pipeline:
  - bm25: {k: 30}
  - route:
      router:
        score_router: {feature: gap, threshold: 0.5}
      branches:
        easy:
          - top_k: {k: 20}
        hard:
          - parallel:
              branches:
                - bm25: {k: 30, variant: okapi}
                - [bm25: {k: 30}, top_k: {k: 10}]
              fuse:
                weighted: {norm: zscore, weights: [0.7, 0.3]}
              names: [okapi, lucene]
      default: hard
  - loop:
      body:
        - prf: {fb_docs: 5, max_df: 0.5}
        - bm25: {k: 30}
      until:
        topk_stable: {k: 5}
      max_iters: 2
  - top_k: {k: 10}
"""


def test_composite_yaml_round_trip_and_same_rankings(slice_data):
    corpus, queries, _, _ = slice_data
    p = Pipeline.from_yaml(COMPOSITE)
    text = p.to_yaml()
    q = Pipeline.from_yaml(text)
    assert q == p and q.to_yaml() == text
    _same(p.fit(corpus).search(queries), q.fit(corpus).search(queries))


def test_call_k_override_same_for_python_and_yaml(slice_data):
    corpus, queries, _, _ = slice_data
    py = (Parallel([BM25(k=20), BM25(k=20, variant="okapi")], fuse=RRF(k=60)) | TopK(k=5)).fit(corpus)
    ym = Pipeline.from_yaml(py.to_yaml()).fit(corpus)
    for k in (None, 3, 15):
        a, b = py.search(queries, k=k), ym.search(queries, k=k)
        _same(a, b)
        assert max(len(r) for r in a.rankings) == (5 if k is None else k)


# ---------------------------------------------------------------------- save / load
def test_save_load_identical_interrupted_save_and_checksum(slice_data, tmp_path, monkeypatch):
    corpus, queries, _, _ = slice_data
    pipe = Pipeline.from_yaml(COMPOSITE).fit(corpus)
    before = pipe.search(queries)
    pipe.save(tmp_path / "p")
    _same(before, Pipeline.load(tmp_path / "p").search(queries))
    files = sorted(str(x.relative_to(tmp_path)) for x in (tmp_path / "p").rglob("*"))

    def boom(self, folder):
        raise RuntimeError("disk full")

    monkeypatch.setattr(PRF, "_save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        pipe.save(tmp_path / "p")
    monkeypatch.undo()
    assert sorted(str(x.relative_to(tmp_path)) for x in (tmp_path / "p").rglob("*")) == files
    assert [x.name for x in tmp_path.iterdir()] == ["p"]  # no temporary folder left behind
    _same(before, Pipeline.load(tmp_path / "p").search(queries))
    victim = next((tmp_path / "p" / "ops").rglob("*.npy"))
    victim.write_bytes(victim.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        Pipeline.load(tmp_path / "p")


# ---------------------------------------------------------------------- malformed YAML
BAD = [
    # (yaml text, expected message prefix)
    ("pipeline: []", "pipeline:"),
    ("pipeline:", "pipeline:"),
    ("pipeline: {bm25: {k: 3}}", "pipeline:"),
    ("steps: [{bm25: {}}]", "steps:"),
    ("pipelin: [{bm25: {}}]", "pipelin: unknown top-level key (did you mean 'pipeline'"),
    ("version: 2\npipeline: [{bm25: {}}]", "version:"),
    ("description: x", "pipeline: missing"),
    ("pipeline: [bm25]", "pipeline[0]:"),
    ("pipeline: [3]", "pipeline[0]:"),
    ("pipeline: [{bm25: {}, dense: {}}]", "pipeline[0]: expected exactly one operator key"),
    ("pipeline: [{bm2: {k: 3}}]", "pipeline[0].bm2: unknown operator 'bm2'; did you mean 'bm25'"),
    ("pipeline: [{top_k: {}}, {denss: {}}]", "pipeline[1].denss: unknown operator 'denss'; did you mean 'dense'"),
    ("pipeline: [{bm25: {k: -3}}]", "pipeline[0].bm25.k: expected a positive integer, got -3"),
    ("pipeline: [{bm25: {k: ten}}]", "pipeline[0].bm25.k: expected an integer"),
    ("pipeline: [{bm25: {kk: 3}}]", "pipeline[0].bm25.kk: unknown parameter (did you mean k"),
    ("pipeline: [{bm25: {variant: bm42}}]", "pipeline[0].bm25.variant: expected one of"),
    ("pipeline: [{bm25: {b: 2}}]", "pipeline[0].bm25.b:"),
    ("pipeline: [{bm25: [1, 2]}]", "pipeline[0].bm25: expected a mapping of parameters"),
    ("pipeline: [{bm25: 5}]", "pipeline[0].bm25: expected a mapping of parameters"),
    ("pipeline: [{bm25: {k: 3}}, {top_k: {k: 0}}]", "pipeline[1].top_k.k: expected a positive integer, got 0"),
    ("pipeline: [{parallel: {}}]", "pipeline[0].parallel.branches: missing"),
    ("pipeline: [{parallel: {branches: []}}]", "pipeline[0].parallel.branches: expected a non-empty list"),
    ("pipeline: [{parallel: {branches: {bm25: {}}}}]", "pipeline[0].parallel.branches: expected a non-empty list"),
    ("pipeline: [{parallel: {branches: [{bm25: {}}], fuse: {top_k: {}}}}]",
     "pipeline[0].parallel.fuse: expected a fuser operator"),
    ("pipeline: [{parallel: {branches: [{bm25: {}}], fuse: {rrf: {k: -1}}}}]", "pipeline[0].parallel.fuse.rrf.k:"),
    ("pipeline: [{parallel: {branches: [{bm25: {}}], fusion: {rrf: {}}}}]",
     "pipeline[0].parallel.fusion: unknown key (did you mean 'fuse'"),
    ("pipeline: [{parallel: {branches: [{bm25: {}}, {dense: {k: -3}}]}}]",
     "pipeline[0].parallel.branches[1].dense.k: expected a positive integer, got -3"),
    ("pipeline: [{parallel: {branches: [[{bm25: {}}, {top_k: {k: x}}]]}}]",
     "pipeline[0].parallel.branches[0][1].top_k.k:"),
    ("pipeline: [{parallel: {branches: [{bm25: {}}], names: [a, b]}}]", "pipeline[0].parallel.names:"),
    ("pipeline: [{parallel: {branches: [{bm25: {}}], names: a}}]", "pipeline[0].parallel.names:"),
    ("pipeline: [{parallel: {branches: [[]]}}]", "pipeline[0].parallel.branches[0]: expected a non-empty list"),
    ("pipeline: [{route: {branches: {a: [{bm25: {}}]}}}]", "pipeline[0].route.router: missing"),
    ("pipeline: [{route: {router: {bm25: {}}, branches: {a: {bm25: {}}}}}]",
     "pipeline[0].route.router: expected a router operator"),
    ("pipeline: [{route: {router: {rule_router: {rules: []}}, branches: {a: {bm25: {}}}}}]",
     "pipeline[0].route.router.rule_router.rules:"),
    ("pipeline: [{route: {router: {rule_router: {rules: [{label: a}]}}, branches: {a: {bm25: {}}}}}]",
     "pipeline[0].route.router.rule_router.rules[0]:"),
    ("pipeline: [{route: {router: {score_router: {threshold: 1}}, branches: []}}]",
     "pipeline[0].route.branches: expected a mapping"),
    ("pipeline: [{route: {router: {score_router: {threshold: 1}}, branches: {easy: {top_k: {}}}, default: hrad}}]",
     "pipeline[0].route.default: label 'hrad' is not a branch"),
    ("pipeline: [{route: {router: {score_router: {threshold: 1}}, branches: {easy: {bm25: {k: 0}}}}}]",
     "pipeline[0].route.branches.easy.bm25.k:"),
    ("pipeline: [{loop: {body: [{bm25: {}}]}}]", "pipeline[0].loop.until: missing"),
    ("pipeline: [{loop: {body: [{bm25: {}}], until: {max_only: {}}, max_iters: 0}}]",
     "pipeline[0].loop.max_iters: expected an integer from 1 to 1,000"),
    ("pipeline: [{loop: {body: [{bm25: {}}], until: {max_only: {}}, max_iters: two}}]", "pipeline[0].loop.max_iters:"),
    ("pipeline: [{loop: {body: [{bm25: {}}], until: {bm25: {}}}}]", "pipeline[0].loop.until: expected a judge"),
    ("pipeline: [{loop: {body: [{bm25: {}}], until: {topk_stable: {k: 0}}}}]", "pipeline[0].loop.until.topk_stable.k:"),
    ("pipeline: [{loop: {body: [{prf: {original_query_weight: 2}}], until: {max_only: {}}}}]",
     "pipeline[0].loop.body[0].prf.original_query_weight:"),
    ("pipeline: [{loop: [{bm25: {}}]}]", "pipeline[0].loop: expected a mapping"),
    ("pipeline: [{bm25: {}}\n", "<text>: line"),
    ("pipeline:\n  - bm25: {k: 3\n  - top_k: {}", "<text>: line"),
    ("\tpipeline: x", "<text>: line"),
    ("just some words", "<text>: expected a mapping"),
    ("pipeline: [{bm25: {}}]\npipeline: []", "<text>: line"),
    ("pipeline: !!python/object/apply:os.system ['echo hi']", "<text>: line"),
    ("pipeline: [{bm25: !!python/object:ragkit.retrievers.BM25 {}}]", "<text>: line"),
    ("!!python/name:os.system", "<text>: line"),
    ("pipeline: [{bm25: {k: 3, k: 4}}]", "<text>: line"),
]


def test_malformed_table_is_long_enough():
    assert len(BAD) >= 30


@pytest.mark.parametrize("text, prefix", BAD, ids=[f"bad{i:02d}" for i in range(len(BAD))])
def test_malformed_yaml_rejected_with_place(text, prefix):
    with pytest.raises(ConfigError) as exc:
        load_yaml(text)
    assert str(exc.value).startswith(prefix), str(exc.value)


def test_yaml_merge_keys_share_parameters_and_explicit_keys_win():
    text = """
pipeline:
  - parallel:
      branches:
        - bm25: &base {k: 50, k1: 1.1, b: 0.4}
        - bm25: {<<: *base, b: 0.8}
"""
    a, b = load_yaml(text).steps[0].branches
    assert (a.params.k, a.params.k1, a.params.b) == (50, 1.1, 0.4)
    assert (b.params.k, b.params.k1, b.params.b) == (50, 1.1, 0.8)
    with pytest.raises(ConfigError, match="key 'b' appears twice"):  # written twice in one mapping: still refused
        load_yaml("pipeline: [{bm25: &base {k: 5}}, {bm25: {<<: *base, b: 0.8, b: 0.7}}]")


def test_yaml_dump_writes_text_as_it_is():
    pipe = Pipeline([BM25(k=5), Route(RuleRouter(rules=[{"label": "kurz", "keywords": ["größe"]}], default="lang"),
                                      {"kurz": TopK(k=3), "lang": TopK(k=5)})])
    text = pipe.to_yaml()
    assert "größe" in text and "\\x" not in text and load_yaml(text) == pipe


def test_yaml_tags_message_mentions_tags():
    with pytest.raises(ConfigError, match="tags that construct objects are not allowed"):
        load_yaml("pipeline: !!python/object/apply:os.system ['echo hi']")


def test_validate_file(tmp_path):
    from ragkit.pipelines import validate_file

    good = tmp_path / "p.yaml"
    good.write_text("pipeline: [{bm25: {k: 5}}]")
    assert validate_file(good) == Pipeline([BM25(k=5)])
    with pytest.raises(ConfigError, match="not found"):
        validate_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: [{bm25: {k: 5}]")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line 1"):
        validate_file(bad)


def test_every_bad_step_is_reported_at_once(tmp_path):
    """All steps' problems in one error (one line each, nested lists too), the file named first."""
    text = ("pipeline:\n  - bm25: {k: -3}\n  - densse: {k: 10}\n"
            "  - parallel: {branches: [{bm25: {}}, {top_k: {k: 0}}, [{bm25: {b: 7}}]]}\n")
    with pytest.raises(ConfigError) as exc:
        load_yaml(text)
    lines = str(exc.value).splitlines()
    assert [ln.split(":")[0] for ln in lines] == [
        "pipeline[0].bm25.k", "pipeline[1].densse", "pipeline[2].parallel.branches[1].top_k.k",
        "pipeline[2].parallel.branches[2][0].bm25.b"], lines
    assert exc.value.path == "pipeline[0].bm25.k"
    f = tmp_path / "two.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_yaml(f)
    assert str(exc.value).splitlines()[0] == f"{f}:" and len(str(exc.value).splitlines()) == 5
    f.write_text("pipeline: [{bm25: {k: 0}}]")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(f))}: line 1: pipeline\[0\]\.bm25\.k: "):
        load_yaml(f)


def test_pipeline_overhead_bench_quick(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench" / "pipeline_overhead.py"
    res = subprocess.run([sys.executable, str(bench), "--quick", "--queries", "100", "--out", str(tmp_path / "o.json")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "pipeline overhead" in res.stdout and (tmp_path / "o.json").is_file()


def test_registry_names_are_unique_across_families():
    """Two different classes may not share a name (the judge once shadowed the filter ``score_threshold``)."""
    from ragkit import registry
    from ragkit.operator import Operator

    registry.load_all()
    assert registry.get("score_threshold").kind == "filter" and registry.get("score_reached").kind == "judge"

    class Impostor(Operator):
        name = "score_threshold"

    Impostor.__qualname__ = "ScoreThreshold"  # same class name, other module: still refused
    with pytest.raises(ValueError, match="taken"):
        registry.register(Impostor)


def _train_ndcg(pipe, train) -> float:
    from ragkit.eval import evaluate

    return evaluate(pipe.search(train.queries), train.qrels, ["ndcg@10"])["ndcg@10"]


def test_score_router_learns_its_threshold_from_train(slice_data, tmp_path):
    """A learned threshold routes at least as well on the training queries as sending all queries one way."""
    corpus, queries, _, train = slice_data
    spec = """
pipeline:
  - bm25: {k: 100}
  - route:
      router:
        score_router: {feature: top1, learn: true}
      branches:
        easy:
          - top_k: {k: 100}
        hard: [{dense: {k: 100}}]
"""
    pipe = Pipeline.from_yaml(spec).fit(corpus, train)
    router = pipe.steps[1].router
    got = router.learned_
    assert got["train_ndcg@10"] >= max(got["all_above_ndcg@10"], got["all_below_ndcg@10"]) - 1e-12
    # checked by running the pipelines, not by the learner's own report
    actual = _train_ndcg(pipe, train)
    assert actual == pytest.approx(got["train_ndcg@10"], abs=1e-9)
    for fixed in ("threshold: -1.0e9", "threshold: 1.0e9"):  # everyone one way, then the other
        assert actual >= _train_ndcg(Pipeline.from_yaml(spec.replace("learn: true", fixed)).fit(corpus), train) - 1e-9
    loaded = _learned_roundtrip(pipe, spec, queries, corpus, tmp_path / "p", "learn: false")
    assert loaded.steps[1].router.threshold_ == router.threshold_


_STEP = "pipeline:\n  - bm25: {{k: 10}}\n  - {step}\n"
_IN_LOOP_BODY = ("pipeline:\n  - bm25: {{k: 10}}\n  - loop:\n      body:\n        - bm25: {{k: 10}}\n        - {step}\n"
                 "      until:\n        score_reached: {{threshold: 1.0}}\n")
_IN_BRANCH = ("pipeline:\n  - bm25: {{k: 10}}\n  - parallel:\n      branches:\n"
              "        - [{{bm25: {{k: 10}}}}, {step}]\n        - bm25: {{k: 5}}\n      fuse:\n        rrf: {{}}\n")
# a route branch labelled like a router's or a judge's seat is still a branch
_IN_ROUTE_BRANCH = ("pipeline:\n  - bm25: {{k: 10}}\n  - route:\n"
                    "      router: {{score_router: {{threshold: 1.0, above: router, below: until}}}}\n"
                    "      branches:\n        router: {{{step}}}\n        until: {{top_k: {{k: 5}}}}\n")


@pytest.mark.parametrize("shape,where", [(_STEP, "pipeline[1]"), (_IN_LOOP_BODY, "pipeline[1].loop.body[1]"),
                                         (_IN_BRANCH, "pipeline[1].parallel.branches[0][1]"),
                                         (_IN_ROUTE_BRANCH, "pipeline[1].route.branches.router")])
@pytest.mark.parametrize("step,home", [("score_router: {learn: true}", "router of a route"),
                                       ("score_reached: {learn: true}", "until judge of a loop")])
def test_learning_router_or_judge_out_of_place_is_refused_at_fit(shape, where, step, home, slice_data, monkeypatch):
    """Outside a route's router / a loop's until, a learning router / judge cannot learn (it used to fit,
    then fail at search with 'no threshold was learned; fit with train'), also when nested in a loop body
    or a parallel branch: a file is refused when it loads (a router or judge is no step of its own), a
    pipeline built in Python with one as a branch of its own before anything is fitted, with its path."""
    corpus, _, _, train = slice_data
    with pytest.raises(ConfigError, match=rf"{re.escape(where)}\.score_\w+: a (router|judge) is not a step of its "
                                          "own"):
        Pipeline.from_yaml(shape.format(step=step))
    learner = Pipeline.from_yaml(f"pipeline: [{{{step}}}]").steps[0]
    pipe = Pipeline([BM25(k=10), Parallel([learner, BM25(k=5)])])
    fitted = []
    monkeypatch.setattr(BM25, "_fit", lambda self, *a: fitted.append(self))
    with pytest.raises(ParamError, match=rf"pipeline\[1\]\.parallel\.branches\[0\]\.score_\w+: score_\w+ with learn: "
                                         rf"true learns only as the {home}"):
        pipe.fit(corpus, train)
    assert not fitted


def test_a_refit_without_judgements_refuses_before_refitting_any_step(slice_data):
    """A pipeline with an operator that learns only from judged queries, refitted without them on
    another corpus, refuses before any step is refitted (the steps before it were refitted on the
    new corpus, leaving a pipeline half on each corpus)."""
    corpus, queries, _, train = slice_data
    pipe = Pipeline.from_yaml("""
pipeline:
  - bm25: {k: 50}
  - route:
      router:
        score_router: {feature: top1, learn: true}
      branches:
        easy: [{top_k: {k: 10}}]
        hard: [{top_k: {k: 5}}]
""").fit(corpus, train)
    before = pipe.search(queries)
    other = corpus.subset(np.arange(40))
    with pytest.raises(ParamError, match=r"score_router.learn: the threshold is learned from judged queries"):
        pipe.fit(other)
    assert pipe.steps[0].corpus_ is corpus and pipe.corpus_ is corpus
    after = pipe.search(queries)
    assert all(a.equals(b) for a, b in zip(before.rankings, after.rankings))


def test_score_router_cost_pushes_queries_to_the_cheap_branch(slice_data):
    from ragkit.pipelines.routers import ScoreRouter
    from ragkit.types import State

    corpus, _, _, train = slice_data
    st = BM25(k=10).fit(corpus)(State.of(train.queries))
    n = len(st)
    gains = {"easy": np.full(n, 0.5), "hard": np.full(n, 0.6)}
    free = ScoreRouter(learn=True)
    free.learn_routes(st, gains)
    assert free.learned_["share_below"] == 1.0           # the better branch for everyone
    priced = ScoreRouter(learn=True, cost=0.2)
    priced.learn_routes(st, gains)
    assert priced.learned_["share_below"] == 0.0         # 0.1 better, but costs 0.2: nobody goes there


def test_score_reached_judge_learns_when_to_stop(slice_data, tmp_path):
    """The learned threshold stops the PRF loop at least as well (train nDCG@10) as always 1 or always 3 rounds."""
    corpus, queries, _, train = slice_data
    spec = """
pipeline:
  - loop:
      body:
        - prf: {fb_docs: 5, fb_terms: 10}
        - bm25: {k: 100}
      until:
        score_reached: {learn: true}
      max_iters: 3
"""
    pipe = Pipeline.from_yaml(spec).fit(corpus, train)
    judge = pipe.steps[0].until
    got = judge.learned_
    per_iter = got["ndcg@10_per_iteration"]
    assert len(per_iter) == 3 and got["train_ndcg@10"] >= max(per_iter[0], per_iter[-1]) - 1e-12
    assert 1.0 <= got["mean_iterations"] <= 3.0
    # checked by running the loops: the learned stop, always one round, always three
    actual = _train_ndcg(pipe, train)
    assert actual == pytest.approx(got["train_ndcg@10"], abs=1e-9)
    once, thrice = (Pipeline.from_yaml(spec.replace("learn: true", f)).fit(corpus) for f in
                    ("threshold: -1.0e9", "threshold: 1.0e9"))
    assert set(once.search(train.queries).values["iterations"]) == {1}
    assert set(thrice.search(train.queries).values["iterations"]) == {3}
    assert actual >= max(_train_ndcg(once, train), _train_ndcg(thrice, train)) - 1e-9
    loaded = _learned_roundtrip(pipe, spec, queries, corpus, tmp_path / "p", "learn: false")
    assert loaded.steps[0].until.threshold == judge.threshold


# ---------------------------------------------------------------------- reviewed defects
TOY_TEXTS = ["the cell divides rapidly in tissue", "protein folding and cell membranes",
             "gene expression in yeast cells", "vaccines prevent influenza infection",
             "influenza virus spreads in winter", "dna repair in cells", "heart disease and cholesterol",
             "cholesterol lowering drugs statins", "cancer cell growth and tumor", "tumor suppressor gene p53",
             "brain neurons and synapses", "synapse plasticity memory"]
TOY_TRAIN = {"t0": ("cell division", "d0"), "t1": ("influenza winter", "d4"), "t2": ("tumor p53", "d9"),
             "t3": ("cholesterol drugs", "d7")}
TWO_BM25 = "branches: [bm25: {k: 5}, bm25: {k: 5, variant: okapi}]"


def _toy_corpus():
    from ragkit.types import Corpus

    return Corpus.from_texts(TOY_TEXTS, ids=[f"d{i}" for i in range(len(TOY_TEXTS))])


def _toy_train():
    from ragkit.types import Queries, TrainSet

    ids = list(TOY_TRAIN)
    return TrainSet(Queries(ids, [TOY_TRAIN[q][0] for q in ids]), {q: {TOY_TRAIN[q][1]: 1} for q in ids})


def _config_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        load_yaml(text)
    return exc.value


def test_fuser_step_is_refused_at_load_with_the_fuse_form():
    """``(a + b) | RRF(k=10)`` in YAML is the parallel's ``fuse:``; a separate fuser step (which only failed
    at search) is refused when the file is loaded, and the message shows the form to write."""
    e = _config_error(f"pipeline:\n  - parallel: {{{TWO_BM25}}}\n  - rrf: {{k: 10}}\n")
    assert e.path == "pipeline[1].rrf" and str(e).startswith("pipeline[1].rrf: a fuser is not a step of its own")
    assert "parallel before it (pipeline[0])" in str(e) and "fuse: {rrf: {k: 10.0}}" in str(e), str(e)
    fixed = Pipeline.from_yaml(f"pipeline:\n  - parallel: {{{TWO_BM25}, fuse: {{rrf: {{k: 10}}}}}}\n")
    assert fixed == (BM25(k=5) + BM25(k=5, variant="okapi")) | RRF(k=10)
    e = _config_error(f"pipeline:\n  - parallel: {{{TWO_BM25}, fuse: {{rrf: {{}}}}}}\n  - weighted: {{}}\n")
    assert e.path == "pipeline[1].weighted" and "already fuses its branches with 'fuse: {rrf: {}}'" in str(e)
    assert _config_error("pipeline: [{bm25: {}}, {rrf: {}}]").path == "pipeline[1].rrf"
    assert _config_error("pipeline: [{parallel: {branches: [{rrf: {}}, {bm25: {}}]}}]").path == \
        "pipeline[0].parallel.branches[0].rrf"
    assert _config_error("pipeline: [{loop: {body: {weighted: {}}, until: {max_only: {}}}}]").path == \
        "pipeline[0].loop.body.weighted"
    assert Pipeline.from_yaml(RRF(k=10).to_yaml()) == Pipeline([RRF(k=10)])  # Operator.to_yaml's one-step file


def test_a_judge_or_router_step_of_its_own_is_refused_with_where_it_belongs():
    """``[bm25, topk_stable]`` and ``[rule_router, bm25]`` were accepted and scored exactly as bm25 alone:
    a judge or a router as a step writes a value nothing reads.  They are refused at load with the form."""
    e = _config_error("pipeline: [{bm25: {}}, {topk_stable: {k: 5}}]")
    assert e.path == "pipeline[1].topk_stable" and str(e).startswith(
        "pipeline[1].topk_stable: a judge is not a step of its own (it would change nothing); it belongs in a "
        "loop's 'until:'"), str(e)
    assert "`- loop: {body: [...], until: {topk_stable: {k: 5}}, max_iters: 3}`" in str(e)
    e = _config_error("pipeline: [{rule_router: {rules: [{label: a, max_words: 2}], default: b}}, {bm25: {}}]")
    assert e.path == "pipeline[0].rule_router" and "it belongs in a route's 'router:'" in str(e)
    assert _config_error("pipeline: [{parallel: {branches: [{bm25: {}}, {max_only: {}}]}}]").path == \
        "pipeline[0].parallel.branches[1].max_only"
    for op in (TopKStable(k=5), RuleRouter(rules=[{"label": "a", "max_words": 2}], default="b")):
        assert Pipeline.from_yaml(op.to_yaml()) == Pipeline([op])  # Operator.to_yaml's one-step file loads


def test_loop_max_iters_is_bounded_and_yaml_syntax_errors_point_at_the_opening():
    """``max_iters: 100000000000`` with a judge that never stops passed validation and ran for ever; an
    unclosed ``{`` / ``[`` / quote was reported where the parser gave up (the next line, or the end of
    the file), and a tab got no hint."""
    e = _config_error("pipeline: [{loop: {body: [{bm25: {}}], until: {max_only: {}}, max_iters: 100000000000}}]")
    assert e.path == "pipeline[0].loop.max_iters" and "expected an integer from 1 to 1,000" in str(e), str(e)
    with pytest.raises(ParamError, match=r"loop.max_iters: expected an integer from 1 to 1,000"):
        Loop(BM25(), until=MaxOnly(), max_iters=5000)
    assert Loop(BM25(), until=MaxOnly(), max_iters=1000).max_iters == 1000
    for text, hint in (("pipeline:\n  - bm25: {k: 100\n  - top_k: {k: 10}\n",
                        "the '{' at line 2, column 11 is not closed (is '}' missing?)"),
                       ('pipeline:\n  - bm25: {k: 100}\n  - top_k: {k: "10}\n  - mmr: {}\n',
                        "the quote at line 3, column 16 is not closed (is the closing quote missing?)"),
                       ("pipeline:\n  - parallel:\n      branches: [{bm25: {}}, {bm25: {}}\n      fuse: {rrf: {}}\n",
                        "the '[' at line 3, column 17 is not closed (is ']' missing?)"),
                       ("pipeline:\n\t- bm25: {}\n", "indent with spaces: YAML does not allow tabs")):
        with pytest.raises(ConfigError) as info:
            load_yaml(text)
        assert str(info.value).endswith(hint), str(info.value)


def test_mistakes_that_failed_at_the_first_search_are_refused_before_any_fit(monkeypatch):
    """A retriever's own ``filter`` naming a field the corpus lacks, and a reranker placed before the
    retriever it reranks, passed validation and fitted every step (a dense step encoded the corpus), then
    failed at every search without saying where.  Both are refused before anything is fitted, with the
    path; an error a step's own fit raises names the step too."""
    from ragkit.errors import DataError
    from ragkit.types import Corpus

    corpus = Corpus.from_texts(["red apples", "green pears", "heart blood", "blood cells"], topic=["f", "f", "b", "b"])
    fits = []
    real = BM25._fit
    monkeypatch.setattr(BM25, "_fit", lambda self, *a: fits.append(self) or real(self, *a))
    pipe = Pipeline.from_yaml("pipeline: [{parallel: {branches: [{bm25: {}}, {bm25: {filter: {year: 2020}}}]}}]")
    with pytest.raises(ParamError, match=r"^pipeline\[0\]\.parallel\.branches\[1\]\.bm25\.filter: field 'year' "
                                         r"is not a metadata field of the corpus; "
                                         r"available: \['topic', '_id', 'title'\]"):
        pipe.fit(corpus)
    with pytest.raises(ParamError, match=r"^bm25.filter: field 'year' is not a metadata field"):
        BM25(filter={"year": 2020}).fit(corpus)
    assert fits == []
    ok = Pipeline([BM25(filter={"topic": "b"})]).fit(corpus)
    assert set(ok.search(["blood apples"]).doc_ids[0]) == {"2", "3"}
    fits.clear()

    e = _config_error("pipeline: [{mmr: {}}, {bm25: {}}]")
    assert e.path == "pipeline[0].mmr" and str(e).startswith(
        "pipeline[0].mmr: mmr (reranker) works on the rankings of the steps before it, and none before it retrieves "
        "anything (the retriever at pipeline[1] comes after it); put it after a retriever"), str(e)
    assert _config_error("pipeline: [{top_k: {}}, {loop: {body: [{dbnorm: {}}, {bm25: {}}], until: {max_only: {}}}}]"
                         ).path == "pipeline[1].loop.body[0].dbnorm"
    with pytest.raises(ConfigError, match=r"pipeline\[0\]\.mmr: mmr \(reranker\) works on the rankings"):
        Pipeline([MMR(), BM25()]).fit(corpus)
    assert fits == []
    for fine in ("pipeline: [{mmr: {}}]", "pipeline: [{bm25: {}}, {mmr: {}}]"):
        load_yaml(fine)  # alone (Operator.to_yaml's file), or after a retriever
    # a prf with no retriever before it, outside a loop's body, expanded nothing (bm25's rankings): refused
    assert _config_error("pipeline: [{prf: {}}, {bm25: {}}]").path == "pipeline[0].prf"

    class Broken(BM25):
        def _fit(self, corpus, train, upstream):  # noqa: ANN001
            raise DataError("bm25 could not read the corpus")

    with pytest.raises(DataError, match=r"^pipeline\[0\]\.parallel\.branches\[1\]\.bm25: bm25 could not read"):
        Pipeline([BM25() + Broken()]).fit(corpus)


def test_fuser_weights_must_match_the_branches_at_load(tmp_path):
    e = _config_error(f"pipeline:\n  - parallel:\n      {TWO_BM25}\n      fuse: {{rrf: {{weights: [1, 2, 3]}}}}\n")
    assert e.path == "pipeline[0].parallel.fuse.rrf.weights"
    assert str(e).startswith("pipeline[0].parallel.fuse.rrf.weights: expected 2 weights, one per branch "
                             "(bm25, bm25_2), got 3"), str(e)
    f = tmp_path / "w.yaml"
    f.write_text(f"pipeline:\n  - parallel: {{{TWO_BM25}, fuse: {{weighted: {{weights: [1]}}}}}}\n")
    from ragkit.pipelines import validate_file

    with pytest.raises(ConfigError,
                       match=rf"^{re.escape(str(f))}: line 2: pipeline\[0\]\.parallel\.fuse\.weighted\.weights"):
        validate_file(f)
    assert Pipeline.from_yaml(f"pipeline: [{{parallel: {{{TWO_BM25}, fuse: {{rrf: {{weights: [1, 2]}}}}}}}}]")


ROUTE = """
pipeline:
  - bm25: {k: 5}
  - route:
      router:
        rule_router:
          rules: [{label: "yes", max_words: 2}]
          default: "no"
      branches:
        LABELS
"""


def test_route_labels_must_be_strings():
    """Unquoted yes/no (YAML 1.1 booleans) were silently turned into 'True'/'False' labels that never match."""
    e = _config_error(ROUTE.replace("LABELS", "yes: [top_k: {k: 1}]\n        no: [top_k: {k: 3}]"))
    assert e.path == "pipeline[1].route.branches" and "True (bool), False (bool)" in str(e)
    assert 'quote the labels, e.g. "yes":' in str(e)
    assert "1 (int)" in str(_config_error(ROUTE.replace("LABELS", '"yes": [top_k: {}]\n        1: [top_k: {}]')))
    e = _config_error(ROUTE.replace("LABELS", '"yes": [top_k: {}]\n      default: no'))
    assert e.path == "pipeline[1].route.default" and 'default: "no"' in str(e)
    e = _config_error(ROUTE.replace('label: "yes"', "label: yes").replace("LABELS", '"yes": [top_k: {}]'))
    assert "rules[0].label: expected a string, got True" in str(e) and 'quote the word you wrote, e.g. "yes"' in str(e)
    pipe = Pipeline.from_yaml(ROUTE.replace("LABELS", '"yes": [top_k: {k: 1}]\n        "no": [top_k: {k: 3}]'))
    run = pipe.fit(_toy_corpus()).search(["cell", "cell growth in tissue"])
    assert run.values["route"] == ["yes", "no"] and [len(r) for r in run.rankings] == [1, 3]
    # a label is part of the paths under its branch: "no[0]" would name what "no"'s first step is (and
    # a save keyed by those paths loaded one branch's operator into the other)
    for label in ('"no[0]"', '"v1.2"', '""'):
        e = _config_error(ROUTE.replace("LABELS", f'"yes": [top_k: {{}}]\n        {label}: [top_k: {{}}]'))
        assert e.path == "pipeline[1].route.branches" and "hold no '.', '[' or ']'" in str(e), str(e)


def test_route_without_default_needs_a_branch_for_every_router_label():
    rules = "rule_router: {rules: [{label: a, max_words: 2}, {label: b, keywords: [x]}], default: c}"
    text = f"pipeline: [{{bm25: {{}}}}, {{route: {{router: {{{rules}}}, branches: {{a: [top_k: {{}}]}}DEFAULT}}}}]"
    e = _config_error(text.replace("DEFAULT", ""))
    assert e.path == "pipeline[1].route.branches"
    assert "router 'rule_router' can label queries ['b', 'c'], which have no branch" in str(e)
    assert "branches: ['a']" in str(e) and "'default:'" in str(e)
    assert Pipeline.from_yaml(text.replace("DEFAULT", ", default: a"))
    assert Pipeline.from_yaml(text.replace("DEFAULT", ", default: [top_k: {k: 2}]"))
    e = _config_error("pipeline: [{bm25: {}}, {route: {router: {score_router: {threshold: 2}}, "
                      "branches: {easy: [top_k: {}]}}}]")
    assert "can label queries ['hard']" in str(e)
    assert RuleRouter(rules=[{"label": "a", "max_words": 1}]).possible_labels() == ["a", "default"]


def test_rule_router_keywords_match_as_phrases():
    """'covid-19' and 'heart disease' match their words in sequence (they never matched as one token)."""
    r = RuleRouter(rules=[{"label": "hit", "keywords": ["covid-19", "Heart disease", "cell"]}], default="-")
    texts = ["covid-19 vaccine", "COVID 19", "heart disease risk", "heart-disease", "heart of disease",
             "covid19", "disease heart", "xcovid-19", "covid-199", "cells", "Cell!", "covid", "19 cases", ""]
    assert r.labels(texts) == ["hit", "hit", "hit", "hit", "-", "-", "-", "-", "-", "-", "hit", "-", "-", "-"]
    assert r.labels(texts) == [r.labels([t])[0] for t in texts]           # nothing matches across queries
    exact = RuleRouter(rules=[{"label": "hit", "keywords": ["covid-19"]}], ignore_case=False, default="-")
    assert exact.labels(["COVID-19", "covid 19"]) == ["-", "hit"]
    words = RuleRouter(rules=[{"label": "short", "max_words": 2, "min_words": 1}], default="-")
    assert words.labels(["covid-19", "a b c", "", "x"]) == ["short", "-", "-", "short"]
    with pytest.raises(ParamError, match=r"rules\[0\]\.keywords: .*no word characters"):
        RuleRouter(rules=[{"label": "x", "keywords": ["++"]}])
    # a keyword's leading and trailing punctuation is part of it: 'c++' is not 'c', '.net' not 'net'
    code = RuleRouter(rules=[{"label": "code", "keywords": ["c++", "C#", ".net"]}], default="-")
    assert code.labels(["vitamin c deficiency", "hepatitis c", "net income", "learn c++ fast", "c# and .NET",
                        "asp.net"]) == ["-", "-", "-", "code", "code", "-"]
    # ignoring case never splits a word: 'İ'.lower() is 'i' + a combining dot, which is not a word character
    turkish = ["İstanbul", "istanbul", "İzmir earthquake"]
    one = RuleRouter(rules=[{"label": "one", "max_words": 1}], default="more")
    assert one.labels(turkish) == ["one", "one", "more"]
    city = RuleRouter(rules=[{"label": "city", "keywords": ["istanbul"]}], default="-")
    assert city.labels(turkish) == ["city", "city", "-"]


def test_learned_weights_tie_goes_to_uniform_weights():
    """Two identical branches score the same for every weighting: keep both (1, 1: equal weights on the unlearned
    fuser's scale), not (0, 2)."""
    pipe = Pipeline([Parallel([BM25(k=5), BM25(k=5)], fuse=RRF(learn=True, folds=2))]).fit(_toy_corpus(), _toy_train())
    np.testing.assert_allclose(pipe.steps[0].fuse.weights_, [1.0, 1.0])
    from ragkit.pipelines.weights import best_grid_point

    assert best_grid_point(np.array([0.2, 0.5, 0.5, 0.5 - 1e-3]), np.array([0.0, 0.5, 0.1, 0.0])) == 2


def test_nested_parameter_errors_name_the_nested_fields():
    e = _config_error("pipeline: [{route: {router: {rule_router: {rules: [{label: a, max_words: 3}, "
                      "{label: b, max_word: 3}]}}, branches: {a: [bm25: {}]}, default: a}}]")
    assert e.path == "pipeline[0].route.router.rule_router.rules[1].max_word"
    assert str(e) == ("pipeline[0].route.router.rule_router.rules[1].max_word: unknown parameter (did you mean "
                      "max_words, min_words?); valid parameters of rule_router.rules[1] are: label, regex, keywords, "
                      "min_words, max_words"), str(e)
    with pytest.raises(ParamError, match=r"^rule_router\.rules\[0\]\.label: required parameter is missing"):
        RuleRouter(rules=[{"max_words": 3}])
    with pytest.raises(ParamError, match=r"valid parameters of bm25 are: k, "):
        BM25(kk=3)


@pytest.mark.parametrize("key, suggestion", [("paralel", "parallel"), ("Parallel", "parallel"), ("rout", "route"),
                                             ("looop", "loop"), ("BM25", "bm25")])
def test_misspelled_structural_keys_are_suggested(key, suggestion):
    e = _config_error(f"pipeline: [{{{key}: {{}}}}]")
    assert str(e).startswith(f"pipeline[0].{key}: unknown operator {key!r}; did you mean {suggestion!r}"), str(e)
    assert str(e).endswith("; structural keys: loop, parallel, route")
    with pytest.raises(ParamError) as exc:
        registry.get(key)  # outside YAML (a saved folder, sharded.retriever) only operators are suggested
    assert "structural" not in str(exc.value)


def _toy_beir(folder):
    from ragkit.eval import write_beir

    queries = {"q0": "cell", "q1": "influenza vaccine winter", "q2": "tumor gene"} | {
        q: text for q, (text, _) in TOY_TRAIN.items()}
    return write_beir(folder, _toy_corpus(), queries, {
        "test": {"q0": {"d0": 1}, "q1": {"d4": 1}, "q2": {"d9": 1}},
        "train": {q: {d: 1} for q, (_, d) in TOY_TRAIN.items()}})


def _cli(*args):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_cli_eval_refuses_an_unknown_backend_before_loading_data(tmp_path):
    res = _cli("eval", "--data", tmp_path / "missing", "-p", "bm25", "--backend", "rayy")
    assert res.exit_code == 2 and "--backend: expected 'local' or 'ray', got 'rayy'" in res.output


def test_cli_refuses_clashing_or_impossible_options_before_any_work(tmp_path):
    """-o X --run X wrote the run over the JSON; --seed -1 was a numpy traceback after reading the data;
    --k 10**12 an 'unknown metric' after the search; an empty search query an empty table."""
    data = _toy_beir(tmp_path / "beir")
    res = _cli("eval", "--data", data, "-p", "bm25", "-o", tmp_path / "x", "--run", tmp_path / "x")
    assert res.exit_code == 2 and "--output and --run both name" in res.output and not (tmp_path / "x").exists()
    res = _cli("eval", "--data", data, "-p", "bm25", "--k", "10,1000000000000")
    assert res.exit_code == 2 and "cut-offs of at most 2,147,483,647" in res.output
    res = _cli("train", "--data", data, "-p", "bm25", "--out", tmp_path / "t", "--seed", "-1")
    assert res.exit_code == 2 and "--seed" in res.output
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    BM25(k=2).fit(Corpus.from_texts(["red apples", "green pears"])).save(tmp_path / "idx")
    res = _cli("search", "--index", tmp_path / "idx", "red", " ")
    assert res.exit_code == 2 and "query 2 is empty" in res.output


def test_cli_eval_depth_note_names_what_limits_the_depth(tmp_path):
    """It advised bm25: {k: 100} also when k was 100 and the corpus (or BM25's matches) was the limit."""
    data = _toy_beir(tmp_path / "beir")
    n_docs = len(_toy_corpus())
    res = _cli("eval", "--data", data, "-p", "dense", "--k", "10,100")  # dense returns the whole small corpus
    assert res.exit_code == 0 and f"the corpus holds {n_docs}" in res.output
    res = _cli("eval", "--data", data, "-p", "bm25", "--k", "10,100")
    assert res.exit_code == 0 and "BM25 returns only documents sharing a term" in res.output
    assert "bm25: {k: 100}" not in res.output


def test_cli_validate_names_the_params_json_of_a_bad_parameter_and_notes_a_generators_model(tmp_path):
    import json

    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    BM25(k=2).fit(Corpus.from_texts(["red apples", "green pears"])).save(tmp_path / "op")
    meta = json.loads((tmp_path / "op" / "params.json").read_text())
    meta["params"]["k"] = "x"
    (tmp_path / "op" / "params.json").write_text(json.dumps(meta))
    res = _cli("validate", tmp_path / "op")
    assert res.exit_code == 2 and "op/params.json: bm25.k: expected an integer" in res.output
    (tmp_path / "g.yaml").write_text("pipeline:\n  - bm25: {}\n  - generate: {model: nowhere/llm-nope}\n")
    res = _cli("validate", tmp_path / "g.yaml")
    assert res.exit_code == 0 and "model 'nowhere/llm-nope' is neither a local folder" in res.output
    (tmp_path / "d.yaml").write_text("pipeline:\n  - dense: {model: ./no/such/dir}\n")
    res = _cli("validate", tmp_path / "d.yaml")  # a path is not downloaded: said so
    assert res.exit_code == 0 and "model './no/such/dir' names a folder that does not exist" in res.output


def test_cli_eval_notes_learning_operators_without_a_train_split(tmp_path):
    data = _toy_beir(tmp_path / "beir")
    (tmp_path / "p.yaml").write_text("pipeline:\n  - parallel:\n      branches: [{bm25: {k: 5}}, "
                                     "{bm25: {k: 5, b: 0.9}}]\n      fuse: {rrf: {learn: true}}\n")
    res = _cli("eval", "--data", data, "-p", tmp_path / "p.yaml")
    assert res.exit_code == 0, res.output
    assert "note: pipeline[0].parallel.fuse.rrf learns from judged queries; without --train-split it fits" in res.output
    assert "learns from judged queries" not in _cli("eval", "--data", data, "-p", "bm25").output


def test_cli_prints_user_text_as_written_not_as_markup(tmp_path):
    from ragkit.types import Corpus

    corpus = Corpus.from_texts(["[bold]cell[/] growth", "tumor gene"], ids=["d[/]0", "d1"])
    Pipeline([BM25(k=2)]).fit(corpus).save(tmp_path / "idx")
    res = _cli("search", "--index", tmp_path / "idx", "cell [/] growth")
    assert res.exit_code == 0, res.output
    assert "cell [/] growth" in res.output and "d[/]0" in res.output and "[bold]cell[/] growth" in res.output
    res = _cli("validate", tmp_path / "idx")  # a saved pipeline folder: its pipeline.yaml
    assert res.exit_code == 0 and "1 operator\n" in res.output, res.output
    (tmp_path / "bad.yaml").write_text('pipeline:\n  - bm25: {k: "[/]"}\n')
    res = _cli("validate", tmp_path / "bad.yaml")
    assert res.exit_code == 2 and "'[/]'" in res.output and "Traceback" not in res.output


def test_yaml_file_path_with_an_upper_case_extension(tmp_path):
    (tmp_path / "P.YAML").write_text("pipeline:\n  - bm25: {k: 7}\n")
    assert Pipeline.from_yaml(str(tmp_path / "P.YAML")).steps[0].params.k == 7


def test_cli_eval_creates_output_folders_and_checks_them_first(tmp_path):
    data = _toy_beir(tmp_path / "beir")
    res = _cli("eval", "--data", data, "-p", "bm25", "--output", tmp_path / "a" / "b" / "res.json",
               "--run", tmp_path / "c" / "run.trec")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "a" / "b" / "res.json").read_text())["n_queries"] == 3
    assert len((tmp_path / "c" / "run.trec").read_text().splitlines()) > 0
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["res.json"]  # no temporary file left
    (tmp_path / "file").write_text("x")
    res = _cli("eval", "--data", data, "-p", "bm25", "--run", tmp_path / "file" / "run.trec")
    assert res.exit_code == 2 and "is a file, not a folder" in res.output and "ndcg" not in res.output
    res = _cli("eval", "--data", data, "-p", "bm25", "--output", tmp_path / "a")
    assert res.exit_code == 2 and "is a folder; expected a file path" in res.output
    res = _cli("eval", "--data", data, "-p", "bm25", "--limit", "-1")
    assert res.exit_code == 2 and "--limit" in res.output and "ndcg" not in res.output
    # ids a TREC file cannot hold are refused once the data is read: before the fit, nothing written
    from ragkit.eval.beir import write_beir
    from ragkit.types import Corpus

    spaced = write_beir(tmp_path / "spaced", Corpus.from_texts(["the cat sat", "a quick fox"], ids=["doc 1", "doc 2"]),
                        {"a": "cat", "b": "fox"}, {"test": {"a": {"doc 1": 1}, "b": {"doc 2": 1}}})
    res = _cli("eval", "--data", spaced, "-p", "bm25", "-o", tmp_path / "sp" / "res.json", "--run",
               tmp_path / "sp" / "run.trec")
    assert res.exit_code == 2 and "document id 'doc 1' holds whitespace" in " ".join(res.output.split())
    assert "fit" not in res.output and not (tmp_path / "sp" / "res.json").exists()


def test_cli_search_does_not_run_a_saved_pipelines_generate_step(tmp_path, monkeypatch):
    from ragkit.generators.operator import Generate

    corpus = _toy_corpus()
    pipe = Pipeline([BM25(k=3), Generate()])
    pipe.steps[0].fit(corpus)
    pipe.corpus_ = corpus
    pipe.save(tmp_path / "rag")
    monkeypatch.setattr(Generate, "_call", lambda self, state: (_ for _ in ()).throw(AssertionError("LLM ran")))
    res = _cli("search", "--index", tmp_path / "rag", "--k", "2", "cell growth")
    assert res.exit_code == 0, res.output
    assert "generate step is not run" in res.output and "rank" in res.output


def test_cli_validate_notes_the_model_of_a_sharded_retriever(tmp_path):
    (tmp_path / "p.yaml").write_text("pipeline:\n  - sharded: {retriever: {dense: {model: org/some-model}}}\n")
    res = _cli("validate", tmp_path / "p.yaml")
    assert res.exit_code == 0 and "note:" in res.output and "org/some-model" in res.output, res.output


def test_cli_pipeline_accepts_an_operator_save_folder(tmp_path):
    data = _toy_beir(tmp_path / "beir")
    BM25(k=5).fit(_toy_corpus()).save(tmp_path / "op")
    res = _cli("eval", "--data", data, "-p", tmp_path / "op")
    assert res.exit_code == 0, res.output
    assert "ndcg@10" in res.output and "fit 0.00 s" in res.output   # fitted: loaded, not refitted
    (tmp_path / "empty").mkdir()
    res = _cli("eval", "--data", data, "-p", tmp_path / "empty")
    assert res.exit_code == 2 and "neither a saved pipeline (no manifest.json) nor a saved operator" in res.output
    res = _cli("search", "--index", tmp_path / "op", "cell")                # ragkit search reads it too
    assert res.exit_code == 0 and "d0" in res.output, res.output
    res = _cli("eval", "--data", data, "-p", "parallel")
    assert res.exit_code == 2 and "structural key of pipeline YAML" in res.output


def test_cli_eval_refuses_what_a_saved_pipeline_would_ignore_or_get_wrong(tmp_path):
    """A saved pipeline answers from its own corpus: scoring it on another dataset's qrels is
    refused, as are options it would ignore (--train-split, --backend), before any search."""
    data = _toy_beir(tmp_path / "beir")
    BM25(k=5).fit(_toy_corpus()).save(tmp_path / "op")
    other = _toy_corpus().subset(np.arange(5))
    BM25(k=5).fit(other).save(tmp_path / "small")
    res = _cli("eval", "--data", data, "-p", tmp_path / "small")
    assert res.exit_code == 2 and "fitted on a corpus of 5 documents, but --data" in res.output, res.output
    assert "ndcg" not in res.output
    for extra in (["--train-split", "train"], ["--backend", "ray"]):
        res = _cli("eval", "--data", data, "-p", tmp_path / "op", *extra)
        assert res.exit_code == 2 and f"{extra[0]} {extra[1]!r} would be ignored" in res.output, res.output
    res = _cli("eval", "--data", data, "-p", "bm25", "--split", "train", "--train-split", "test")
    assert res.exit_code == 2 and "--train-split test: learning from the test split is refused" in res.output


def test_cli_train_report_on_a_split_too_small_to_hold_out(tmp_path):
    """4 judged queries: the default report is skipped with a note; an explicit --report is refused up front."""
    data = _toy_beir(tmp_path / "beir")
    res = _cli("train", "--data", data, "-p", "bm25", "--out", tmp_path / "o1")
    assert res.exit_code == 0, res.output
    assert "held-out report skipped: the train split has 4 judged queries" in res.output
    assert (tmp_path / "o1" / "manifest.json").is_file()
    res = _cli("train", "--data", data, "-p", "bm25", "--out", tmp_path / "o2", "--report")
    assert res.exit_code == 2 and "needs at least 5" in res.output and not (tmp_path / "o2").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    res = _cli("train", "--data", data, "-p", "bm25", "--out", tmp_path / "mine")  # refused before fitting
    assert res.exit_code == 2 and "not a ragkit save" in res.output and "held-out" not in res.output
    assert [f.name for f in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    (tmp_path / "afile").write_text("x")  # below a file: refused before fitting too (it was a traceback after)
    res = _cli("train", "--data", data, "-p", "bm25", "--out", tmp_path / "afile" / "model")
    assert res.exit_code == 2 and "afile is a file, not a folder" in res.output and "fitted in" not in res.output
    assert "Traceback" not in res.output


def test_python_api_refuses_what_yaml_refuses():
    """The Python constructors check what the YAML loader checks, so a pipeline built in Python
    always saves to a folder (and a ``to_yaml``) that loads back."""
    with pytest.raises(ParamError, match=r"'rrf' is a fuser.*\(a \+ b\) \| RRF"):
        BM25() | RRF()
    with pytest.raises(ParamError, match="it already fuses with 'weighted'"):
        Parallel([BM25(), BM25(variant="okapi")], fuse=WeightedFusion()) | RRF()
    with pytest.raises(ParamError, match=r"parallel.fuse.rrf.weights: expected 2 weights, one per branch"):
        (BM25() + BM25(variant="okapi")) | RRF(weights=[1, 2, 3])
    router = RuleRouter(rules=[{"label": "short", "max_words": 2}], default="long")
    with pytest.raises(ParamError, match=r"can label queries \['long'\], which have no branch"):
        Route(router, {"short": [TopK(k=1)]})
    with pytest.raises(ParamError, match=r"branch labels must be strings, got True \(bool\)"):
        Route(router, {True: [TopK(k=1)], "long": [TopK(k=2)]})
    fused = (BM25(k=3) + BM25(k=3, variant="okapi")) | RRF(k=10)
    assert isinstance(fused.steps[0], Parallel) and fused.steps[0].fuse.params.k == 10


def test_python_fuser_and_empty_steps_are_placed_or_refused_like_yaml(tmp_path):
    """A fuser step is folded into the ``a + b`` before it however the pipeline is spelled, and
    refused anywhere else (a branch, a loop body, after a parallel that fuses); an empty list is a
    pass-through only as a route branch.  What is accepted saves and loads."""
    two = BM25(k=3) + BM25(k=3, variant="okapi")
    listed = Pipeline([two, RRF(k=10)])
    assert isinstance(listed.steps[0], Parallel) and listed.steps[0].fuse.params.k == 10 and len(listed) == 1
    assert listed.to_yaml() == (two | RRF(k=10)).to_yaml()
    listed.fit(_toy_corpus()).save(tmp_path / "p")
    assert Operator.load(tmp_path / "p").to_yaml() == listed.to_yaml()
    for make, match in [
        (lambda: BM25() + RRF(), r"parallel\.branches\[1\]: 'rrf' is a fuser"),
        (lambda: two | (RRF() | BM25()), r"pipeline\[0\]: 'rrf' is a fuser"),
        (lambda: Pipeline([BM25(), RRF()]), r"pipeline\[1\]: 'rrf' is a fuser"),
        (lambda: two | RRF() | RRF(), r"pipeline\[1\]: .*already fuses with 'rrf'"),
        (lambda: BM25() | Loop([RRF()], until=MaxOnly()), r"loop\.body: 'rrf' is a fuser"),
        (lambda: BM25() | Parallel([[], BM25(k=5)]), r"parallel\.branches\[0\]: .*non-empty list .* got \[\]"),
        (lambda: Loop([], until=MaxOnly()), r"loop\.body: .*non-empty list"),
    ]:
        with pytest.raises(ParamError, match=match):
            make()


def test_adding_a_branch_keeps_the_branch_names():
    named = Parallel([BM25(k=10), BM25(k=5)], names=["x", "y"])
    assert (named + BM25(k=3)).names == ["x", "y", "bm25"]
    assert (named + Parallel([BM25(k=5), BM25(k=6)], names=["x", "z"])).names == ["x", "y", "x_2", "z"]
    assert (BM25(k=10) + BM25(k=5) + BM25(k=3)).names == ["bm25", "bm25_2", "bm25_3"]
    assert (BM25(k=10) + (BM25(k=5) + BM25(k=3))).names == ["bm25", "bm25_2", "bm25_3"]  # was bm25_2_2
    assert (BM25(k=10) + Parallel([BM25(k=5), BM25(k=3)], names=["x", "y"])).names == ["bm25", "x", "y"]


def test_a_pipeline_without_a_retriever_is_refused_at_search():
    with pytest.raises(ParamError, match=r"this pipeline has no retriever \(its operators: top_k\)"):
        Pipeline([TopK(k=3)]).fit(_toy_corpus()).search(["cell"])


@pytest.mark.parametrize("text,match", [
    ("pipeline: [{bm25: {k: yes}}]", r"pipeline\[0\]\.bm25\.k: expected an integer, got True"),
    ("pipeline: [{score_threshold: {threshold: on}}]",
     r"pipeline\[0\]\.score_threshold\.threshold: expected a number, got True"),
    ("pipeline: [{parallel: {branches: [bm25: {}, bm25: {b: 0.9}], fuse: {rrf: {weights: [1, no]}}}}]",
     r"pipeline\[0\]\.parallel\.fuse\.rrf\.weights: item 1: expected a number, got False"),
])
def test_yaml_booleans_are_refused_where_numbers_are_expected(text, match):
    with pytest.raises(ConfigError, match=match):
        Pipeline.from_yaml(text)


def test_empty_route_branch_passes_queries_through(tmp_path):
    router = RuleRouter(rules=[{"label": "short", "max_words": 1}], default="long")
    pipe = BM25(k=4) | Route(router, {"short": [], "long": [TopK(k=2)]})
    corpus = _toy_corpus()
    run = pipe.fit(corpus).search(["cell", "cell growth in tissue"])
    plain = BM25(k=4).fit(corpus).search(["cell"]).rankings[0]
    assert run.rankings[0].rows.tolist() == plain.rows.tolist() and len(run.rankings[1]) == 2
    again = Pipeline.from_yaml(pipe.to_yaml()).fit(corpus).search(["cell", "cell growth in tissue"])
    assert [r.rows.tolist() for r in again.rankings] == [r.rows.tolist() for r in run.rankings]
    pipe.save(tmp_path / "p")
    loaded = Pipeline.load(tmp_path / "p").search(["cell", "cell growth in tissue"])
    assert [r.rows.tolist() for r in loaded.rankings] == [r.rows.tolist() for r in run.rankings]
    default_through = Pipeline.from_yaml(
        "pipeline: [{bm25: {k: 4}}, {route: {router: {rule_router: {rules: [{label: a, max_words: 1}]}}, "
        "branches: {a: [top_k: {k: 1}]}, default: []}}]")
    got = default_through.fit(corpus).search(["cell", "cell growth in tissue"])
    assert len(got.rankings[0]) == 1 and got.rankings[1].rows.tolist() == \
        BM25(k=4).fit(corpus).search(["cell growth in tissue"]).rankings[0].rows.tolist()


def test_trace_quality_is_what_evaluate_reports():
    """Trace recall@100 follows trec_eval's rules (its tie order at the cut, a document with the
    query's id ignored) and a step run on several parts averages over their judged queries."""
    from ragkit import evaluate
    from ragkit.pipelines.trace import aggregate_trace
    from ragkit.types import Corpus, Queries

    ties = BM25(k=200).fit(Corpus.from_texts(["apple pie"] * 101, ids=[f"d{i:03d}" for i in range(101)]))
    texts = ["apple apple apple"] + ["apple " + " ".join(f"w{j}" for j in range(i + 1)) for i in range(100)]
    own_id = BM25(k=200).fit(Corpus.from_texts(texts, ids=["q1"] + [f"d{i}" for i in range(100)]))
    for op, qid, rel in ((ties, "q", "d100"), (own_id, "q1", "d99")):
        run = op.search(Queries([qid], ["apple"]), trace=True, qrels={qid: {rel: 1}})
        assert run.trace[0].recall == evaluate(run, {qid: {rel: 1}}, ["recall@100"])["recall@100"] == 1.0
    c = Corpus.from_texts(["apple pie", "banana split", "cherry tart", "date loaf"], ids=["d0", "d1", "d2", "d3"])
    router = RuleRouter(rules=[{"label": "one", "max_words": 1}, {"label": "three", "min_words": 3}], default="two")
    pipe = Pipeline([Route(router, {"one": [BM25(k=2)]}, default=[BM25(k=2)])]).fit(c)
    qs = Queries(["q1", "q2", "q3", "q4"], ["apple", "banana split now", "cherry tart", "date loaf"])
    # q1 and q4 unjudged; q2, q3 and q4 take the default under two labels, in one call (it ran once per label before
    # review s50: two parts, whose rows the trace merged)
    qrels = {"q2": {"d1": 1}, "q3": {"d3": 1}}
    run = pipe.search(qs, trace=True, qrels=qrels)
    *_, last, route = aggregate_trace(run.trace)  # the route's own row last: its output over all its queries
    assert last.path == "pipeline[0].route.default[0].bm25" and last.calls == 1 and last.queries == 3
    assert last.recall == route.recall == evaluate(run, qrels, ["recall@100"])["recall@100"] == 0.5
    assert route.path == "pipeline[0].route" and route.queries == 4


def test_the_calls_k_is_a_floor_and_an_operators_own_k_is_exact(slice_data):
    """``search(k=...)`` is the final number of results: it raises every step's ``k`` (retrievers
    fetch at least it, a cut-off or a reranker before the end keeps at least it), so the answer is
    the top of what ``search()`` answers; an operator's own ``k`` option sets its ``k`` exactly."""
    from ragkit.filters import MMR

    corpus, queries, _, _ = slice_data
    pipe = (BM25(k=100) | TopK(k=50) | MMR(k=10, fetch_k=50)).fit(corpus)
    full, ten = pipe.search(queries), pipe.search(queries, k=10)
    assert [d.tolist() for d in ten.doc_ids] == [d[:10].tolist() for d in full.doc_ids]
    assert {len(d) for d in pipe.search(queries, k=30).doc_ids} == {30}  # MMR's pool widens to k
    three = BM25(k=100).fit(corpus).search(queries, k=10, bm25={"k": 3})
    assert {len(d) for d in three.doc_ids} == {3}


# ---------------------------------------------------------------------- review: every problem, where it is
def _lines(e: ConfigError) -> list[str]:
    """The path each line of an error starts with."""
    return [ln.split(": ", 1)[0] for ln in str(e).splitlines()]


def test_every_problem_of_a_parallel_route_or_loop_is_reported_at_once():
    """A composite's branches, fuser, router, default, body, judge and own keys are checked in one
    pass (only the first of them was reported), each line at its own path, in the order written."""
    e = _config_error("pipeline:\n  - parallel:\n      branches: [dens: {k: 10}, bm25: {k: 0}]\n"
                      "      fuse: {rrf: {kk: 60}}\n      fusee: {}\n  - top_k: {k: 0}\n")
    assert _lines(e) == ["pipeline[0].parallel.branches[0].dens", "pipeline[0].parallel.branches[1].bm25.k",
                         "pipeline[0].parallel.fuse.rrf.kk", "pipeline[0].parallel.fusee", "pipeline[1].top_k.k"]
    assert e.path == "pipeline[0].parallel.branches[0].dens"
    e = _config_error("pipeline: [{parallel: {branches: [dens: {}, bm25: {}], fuse: {rff: {k: 60}}, names: [a]}}]")
    assert _lines(e) == ["pipeline[0].parallel.branches[0].dens", "pipeline[0].parallel.fuse.rff",
                         "pipeline[0].parallel.names"]
    e = _config_error("pipeline:\n  - route:\n      router: {rule_router: {rules: [{label: a, max_wordz: 1}]}}\n"
                      "      branches:\n        a: [bm25: {k: 0}]\n        b: [dense: {kk: 1}]\n      default: c\n")
    assert _lines(e) == ["pipeline[0].route.router.rule_router.rules[0].max_wordz",
                         "pipeline[0].route.branches.a[0].bm25.k", "pipeline[0].route.branches.b[0].dense.kk",
                         "pipeline[0].route.default"]
    e = _config_error("pipeline:\n  - bm25: {}\n  - loop:\n      body: [prf: {fb_doc: 3}]\n"
                      "      until: topk_stabel\n      max_iters: 0\n")
    assert _lines(e) == ["pipeline[1].loop.body[0].prf.fb_doc", "pipeline[1].loop.until", "pipeline[1].loop.max_iters"]
    assert "(did you mean 'topk_stable: {}'?)" in str(e)
    e = _config_error("pipeline: [{loop: {until: {max_only: {}}, max_iters: 0}}]")  # a missing key and a bad one
    assert _lines(e) == ["pipeline[0].loop.body", "pipeline[0].loop.max_iters"]
    # one problem alone reads as before
    assert str(_config_error("pipeline: [{parallel: {branches: [bm25: {}], fusion: {rrf: {}}}}]")).startswith(
        "pipeline[0].parallel.fusion: unknown key (did you mean 'fuse'?)")


def test_top_level_problems_name_the_file(tmp_path):
    """``pipline:`` or ``version: 7`` in a file started with the key, not the file; a top-level problem
    and a step's are reported together."""
    f = tmp_path / "noplist.yaml"
    for text, line, first in [
            ("pipline:\n  - bm25: {}\n", "line 1: ", "pipline: unknown top-level key (did you mean 'pipeline'?)"),
            ("version: 7\npipeline: [bm25: {}]\n", "line 1: ", "version: expected 1"),
            ("version: 1.0\npipeline: [bm25: {}]\n", "line 1: ", "version: expected 1"),
            ("description: x\n", "", "pipeline: missing"),  # (a key that is not there has no line)
            ("pipeline: []\n", "line 1: ", "pipeline: expected a non-empty list")]:
        f.write_text(text)
        with pytest.raises(ConfigError) as exc:
            load_yaml(f)
        assert str(exc.value).startswith(f"{f}: {line}{first}"), str(exc.value)
        assert str(_config_error(text)).startswith(first)  # YAML text: the path inside it is all there is
    f.write_text("version: 7\npipeline: [bm25: {k: 0}]\n")
    with pytest.raises(ConfigError) as exc:
        load_yaml(f)
    assert str(exc.value).splitlines() == [
        f"{f}:", "line 1: version: expected 1 (the pipeline file format this ragkit reads), got 7",
        "line 2: pipeline[0].bm25.k: expected a positive integer, got 0"]
    assert exc.value.path == "version"


def test_an_empty_pipeline_file_says_it_is_empty(tmp_path):
    """An empty file (or one of comments only) was 'expected a mapping with a 'pipeline' key, got NoneType None'."""
    for text in ("", "\n  \n", "# nothing yet\n"):
        f = tmp_path / "p.yaml"
        f.write_text(text)
        with pytest.raises(ConfigError, match=r"p.yaml: holds no pipeline \(nothing but blanks or comments\); expected "
                                              r"a mapping with a 'pipeline' key, e.g. 'pipeline: \[\{bm25"):
            Pipeline.from_yaml(f)


def test_from_yaml_reads_files_of_any_suffix_and_says_what_else_a_string_is(tmp_path, monkeypatch):
    """A string naming a file is read as one (it was read as YAML text unless it ended in .yaml), a
    folder is pointed to Pipeline.load, a path that names nothing says so; YAML text still works."""
    txt = tmp_path / "hybrid_pipe.txt"
    txt.write_text("pipeline:\n  - bm25: {k: 7}\n")
    assert Pipeline.from_yaml(str(txt)) == Pipeline.from_yaml(txt) == Pipeline([BM25(k=7)])
    txt.write_text("pipeline:\n  - bm25: {k: 0}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(txt))}: line 2: pipeline\[0\]\.bm25\.k: "):
        Pipeline.from_yaml(str(txt))
    BM25(k=3).save(tmp_path / "saved")
    monkeypatch.chdir(tmp_path)
    for folder in ("saved", str(tmp_path / "saved"), tmp_path / "saved"):
        with pytest.raises(ConfigError, match=r"saved is a folder, a saved operator: load it with Operator\.load\("):
            Pipeline.from_yaml(folder)
    (tmp_path / "data").mkdir()
    with pytest.raises(ConfigError, match=r"data is a folder, not a ragkit save either"):
        Pipeline.from_yaml(tmp_path / "data")
    for missing in ("pipes/missng", str(tmp_path / "nope.txt"), "missing.yml", "C:\\pipes\\p"):
        with pytest.raises(ConfigError, match=rf"^{re.escape(missing)}: no such file"):
            Pipeline.from_yaml(missing)
    with pytest.raises(ConfigError, match="^<text>: expected a mapping with a 'pipeline' key, got str 'scifact-hy"):
        Pipeline.from_yaml("scifact-hybrid")
    model = "sentence-transformers/all-MiniLM-L6-v2"  # a one-line YAML text with a / in it
    assert Pipeline.from_yaml(f"pipeline: [{{dense: {{model: {model}}}}}]").steps[0].params.model == model
    assert Pipeline.from_yaml("[{bm25: {k: 2}}]") == Pipeline.from_yaml("- bm25: {k: 2}") == Pipeline([BM25(k=2)])


def test_boolean_hints_fit_where_the_value_came_from():
    """A boolean for a number from Python does not claim it came from YAML; a positional value says
    parameters are keywords; a YAML boolean's quoting hint names yes/no as well as true/false."""
    with pytest.raises(ParamError) as exc:
        BM25(k=True)
    assert "got True; a boolean (True/False, or YAML's unquoted yes/no/on/off) is not a number" in str(exc.value)
    assert "YAML reads" not in str(exc.value)
    with pytest.raises(ConfigError, match=r"bm25\.k: expected an integer, got True; YAML reads unquoted"):
        load_yaml("pipeline: [{bm25: {k: yes}}]")
    with pytest.raises(ParamError, match=r"^bm25: BM25 takes its parameters as keyword arguments only, "
                                         r"e\.g\. BM25\(k=10\); got the positional argument 10$"):
        BM25(10)
    with pytest.raises(ParamError, match=r"TopK\(k=\.\.\.\)"):
        TopK("ten")
    e = _config_error(ROUTE.replace('label: "yes"', "label: no").replace("LABELS", '"no": [top_k: {}]'))
    assert 'quote the word you wrote, e.g. "no" (or "off", "false")' in str(e), str(e)
    e = _config_error(ROUTE.replace("LABELS", '"yes": [top_k: {}]\n      default: yes'))
    assert 'default: "yes"' in str(e) and 'default: "no"' not in str(e), str(e)
    with pytest.raises(ParamError) as exc:
        (BM25(k=3) | TopK(k=2)).fit(_toy_corpus()).search(["cell"], top_k={"k": True})
    assert "expected a positive integer, got True" in str(exc.value) and "YAML" not in str(exc.value), str(exc.value)


def test_errors_inside_a_node_point_at_its_key():
    """An error raised inside a node (a sharded retriever's, a route's default next to other problems)
    names its place from the top of the file (it started 'sharded.retriever...')."""
    e = _config_error("pipeline: [{sharded: {retriever: {bm25: {k: 0}}}}]")
    assert e.path == "pipeline[0].sharded.retriever.bm25.k" and str(e).startswith(
        "pipeline[0].sharded.retriever.bm25.k: expected a positive integer, got 0"), str(e)
    assert _config_error("pipeline: [{sharded: {retriever: {top_k: {}}}}]").path == "pipeline[0].sharded.retriever"
    e = _config_error(ROUTE.replace("LABELS", '"yes": [top_k: {k: 0}]\n      default: no'))
    assert _lines(e) == ["pipeline[1].route.branches.yes[0].top_k.k", "pipeline[1].route.default"]
    e = _config_error("pipeline: [{loop: {body: bm25, until: {max_only: {}}}}]")
    assert e.path == "pipeline[0].loop.body" and "written 'bm25: {}'" in str(e)


def test_cli_validate_takes_operator_folders_and_notes_models_it_would_download(tmp_path):
    """``ragkit validate`` refused an Operator.save folder that eval accepts, and passed a misspelled
    model name that failed only at fit (after the hub client's retries)."""
    from ragkit.types import Corpus

    BM25(k=3).fit(Corpus.from_texts(["red apples", "green pears"])).save(tmp_path / "op")
    res = _cli("validate", tmp_path / "op")
    assert res.exit_code == 0 and "1 operator\n" in res.output and "bm25" in res.output
    (tmp_path / "p.yaml").write_text("pipeline:\n  - dense: {model: all-MiniLM-L6-v3}\n  - top_k: {k: 5}\n")
    res = _cli("validate", tmp_path / "p.yaml")
    assert res.exit_code == 0 and "2 operators" in res.output
    assert "note: model 'all-MiniLM-L6-v3' is neither a local folder nor in the Hugging Face cache" in res.output
    assert "'all-MiniLM-L6-v2'" not in res.output  # the packaged model is local


def test_a_composites_repr_is_the_python_that_builds_it():
    """``repr`` of a pipeline is constructor code: evaluated, it builds an equal pipeline, with
    branch names, route labels and defaults, a loop's ``max_iters`` and the steps of list branches."""
    import ragkit.filters as filters_
    import ragkit.pipelines as pipelines_
    import ragkit.retrievers as retrievers_

    ns = {**vars(filters_), **vars(pipelines_), **vars(retrievers_)}
    pipe = Pipeline([
        Parallel([BM25(k=50), [BM25(k=20), TopK(k=5)]], fuse=RRF(k=10), names=["wide", "narrow"]),
        Route(RuleRouter(rules=[{"label": "short", "max_words": 2}], default="long"),
              {"short": [TopK(k=3)], "long": TopK(k=8), "none": []}, default="none"),
        Loop([PRF(), BM25()], until=TopKStable(k=5), max_iters=5),
    ])
    text = repr(pipe)
    assert "names=['wide', 'narrow']" in text and "default='none'" in text and "max_iters=5" in text, text
    assert eval(text, ns) == pipe
    plain = BM25() + BM25(k=30)
    assert repr(plain) == "Parallel([BM25(), BM25(k=30)])" and eval(repr(plain), ns) == plain


def test_parameters_and_files_that_could_only_fail_later_are_refused_up_front(tmp_path):
    """Each of these was accepted and failed later (or never ran): a self-referencing YAML alias
    (RecursionError), a Latin-1 file (UnicodeDecodeError), ``model: ""`` (fit failed 16 s later),
    seeds numpy refuses, a route branch no label reaches (its queries went to the default), a date
    in a saved filter (written back as a string, which matched nothing), all-zero fusion weights."""
    from datetime import date

    from ragkit.errors import ConfigError
    from ragkit.filters import DBNorm
    from ragkit.retrievers import Dense, KnnEmbed

    with pytest.raises(ConfigError, match="an alias refers to a node that contains it"):
        load_yaml("pipeline: &p\n  - bm25: {}\n  - *p\n")
    # aliases nested in aliases: 500 bytes expand to 10^8 values; the cycle check walked them all (minutes)
    laughs = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)) + "pipeline: [bm25: {}]\n"
    with pytest.raises(ConfigError, match=r"its aliases expand it to more than 1,000,000 values"):
        load_yaml(laughs)
    (tmp_path / "l1.yaml").write_bytes("pipeline:\n  - bm25: {}  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"l1\.yaml: not UTF-8"):
        load_yaml(tmp_path / "l1.yaml")
    with pytest.raises(ParamError, match="dense.model: expected a model name or folder, got an empty string"):
        Dense(model=" ")
    with pytest.raises(ParamError, match="dbnorm.seed: expected a value >= 0"):
        DBNorm(seed=-1)
    with pytest.raises(ParamError, match="knn_embed.seed: expected a value <= 4294967295"):
        KnnEmbed(seed=2**32)
    router = {"rule_router": {"rules": [{"label": "short", "max_words": 3}], "default": "long"}}
    text = {"pipeline": [{"route": {"router": router, "branches": {"short": [{"bm25": {}}], "lnog": [{"bm25": {}}]},
                                    "default": "short"}}]}
    with pytest.raises(ConfigError, match=r"gives the label 'long' .*did you mean the branch 'lnog'\? "
                                          r".*write the label as 'lnog', or name the branch 'long'"):
        load_yaml(text)
    with pytest.raises(ConfigError, match=r"'day': datetime.date\(2020, 1, 1\) is a date; .*quote it"):
        load_yaml("pipeline:\n  - bm25: {filter: {day: 2020-01-01}}\n")
    assert BM25(filter={"day": "2020-01-01"}).params.filter == {"day": "2020-01-01"}
    with pytest.raises(ParamError, match="weights are all 0"):
        RRF(weights=[0, 0])
    with pytest.raises(ParamError, match="filter"):
        BM25(filter={"day": date(2020, 1, 1)})


def test_calling_an_operator_on_a_state_checks_its_options_as_search_does(fitted_bm25, slice_data):
    """``op(State(..., options=...))`` is public (``State`` is exported, ``__call__`` is the
    protocol); it ignored a misspelt option or key that ``search`` refuses.  The outermost call
    checks them once: a composite as search does (converted as search converts them), a leaf the
    names of its own options, letting other operators' names through (a shard is called with its
    pipeline's options)."""
    corpus, queries = slice_data[0], slice_data[1]
    pipe = Pipeline([fitted_bm25, TopK(k=5)])
    pipe.corpus_ = corpus
    texts = list(queries.texts[:2])
    with pytest.raises(ParamError, match=r"^options\.bm25\.kk: unknown option .*did you mean 'k'"):
        pipe(State(texts, options={"bm25": {"kk": 3}}))
    with pytest.raises(ParamError, match=r"^options 'filtr': not an option"):
        pipe(State(texts, options={"filtr": {"bucket": 1}}))
    with pytest.raises(ParamError, match=r"^options\.filter: field 'year' is not a metadata field"):
        pipe(State(texts, options={"filter": {"year": 2020}}))
    with pytest.raises(ParamError, match=r"^options\.bm25\.kk"):
        fitted_bm25(State(texts, options={"bm25": {"kk": 3}}))
    with pytest.raises(ParamError, match=r"^options\.top_k\.k"):
        Route(RuleRouter(rules=[{"label": "a", "max_words": 1}], default="b"), {"a": [], "b": [TopK(k=2)]})(
            State(texts, rankings=[Ranking([1, 2, 3], [3.0, 2.0, 1.0])] * 2, options={"top_k": {"k": 0}}))
    # search names them as its keywords
    with pytest.raises(ParamError, match=r"^search option bm25\.kk: unknown option"):
        pipe.search(queries[:2], bm25={"kk": 3})
    # valid options run as search runs them, converted the same way; other names pass a leaf through
    out = pipe(State(texts, options={"top_k": {"k": 2}, "bm25": {"n_jobs": "1"}}))
    assert [len(r) for r in out.rankings] == [2, 2] and out.options["bm25"] == {"n_jobs": 1}
    _same(pipe.search(queries[:2], top_k={"k": 2}), pipe.search(queries[:2], top_k={"k": np.int64(2)}))
    assert len(fitted_bm25(State(texts, options={"rrf": {"anything": 1}, "k": 3})).rankings[0]) == 3  # k: the final
    # number, as search's
    with pytest.raises(ParamError, match=r"^options\.bm25: expected a mapping of options"):
        fitted_bm25(State(texts, options={"bm25": 5}))


def test_every_composite_ranks_a_batch_as_its_queries_one_by_one(slice_data, fitted_bm25):
    """Fusion (branches of different lengths, a cut branch, z-scores), a score route (a pass-through
    branch and a PRF one) and a loop whose queries stop at different iterations: a batch gets the
    rankings, route labels and iteration counts its queries get one at a time."""
    corpus, queries, _, _ = slice_data
    hybrid = Parallel([fitted_bm25, [BM25(k=8, b=0.3), TopK(k=3)]], fuse=WeightedFusion(norm="zscore", top_k=15))
    # (the z-scores shifted so each list's lowest is 0: the fused top scores lie in 5.8..7.0, 6.7 splits them)
    route = Route(ScoreRouter(threshold=6.7), {"easy": [], "hard": [PRF(fb_docs=5), BM25(k=20)]})
    loop = Loop([PRF(fb_docs=5), BM25(k=20)], until=TopKStable(k=5, order="ranked"), max_iters=4)
    pipe = Pipeline([hybrid, route, loop]).fit(corpus)
    whole = pipe.search(queries)
    assert len(set(whole.values["route"])) == 2 and len(set(whole.values["iterations"])) > 1
    for i in range(len(queries)):
        one = pipe.search(queries[[i]])
        np.testing.assert_array_equal(one.rankings[0].rows, whole.rankings[i].rows)
        np.testing.assert_allclose(one.rankings[0].scores, whole.rankings[i].scores, rtol=1e-6)
        assert (one.values["route"][0], one.values["iterations"][0]) == (
            whole.values["route"][i], whole.values["iterations"][i])


def test_a_traced_loop_reports_its_output_as_its_own_row(slice_data, fitted_bm25):
    """A loop's trace rows average its iterations (each on the queries still active), so the last row of
    ``ragkit eval --trace`` on examples/prf_loop.yaml said nDCG@10 0.6440 where the metric table said 0.6127.
    The loop now has its own row: its output over all its queries, its time holding its steps' (no share)."""
    from rich.console import Console

    from ragkit import evaluate
    from ragkit.pipelines import PRF, Loop, TopKStable
    from ragkit.pipelines.trace import aggregate_trace, print_trace, trace_table

    corpus, queries, qrels, _ = slice_data
    pipe = Pipeline([fitted_bm25, Loop(PRF(fb_docs=3, fb_terms=5) | BM25(k=100), until=TopKStable(k=5),
                                       max_iters=3)]).fit(corpus)
    run = pipe.search(queries, trace=True, qrels=qrels)
    rows = aggregate_trace(run.trace)
    loop = rows[-1]
    assert loop.path == "pipeline[1].loop" and loop.inclusive and loop.calls == 1 and loop.queries == len(queries)
    assert loop.ndcg == pytest.approx(evaluate(run, qrels, ["ndcg@10"])["ndcg@10"], abs=1e-12)
    assert loop.seconds >= sum(r.seconds for r in rows if r.path.startswith("pipeline[1].loop."))
    shown = Console(width=250, record=True, file=open("/dev/null", "w"))
    shown.print(trace_table(run.trace))
    line = next(x for x in shown.export_text().splitlines() if "pipeline[1].loop " in x)
    assert [c.strip() for c in line.split("│")][7] == "-"  # no share of the time
    narrow = Console(width=80, record=True, file=open("/dev/null", "w"))
    print_trace(narrow, run.trace)
    assert "with the steps inside" in " ".join(narrow.export_text().split())  # (wrapped where the timings end)


def test_a_pipelines_corpus_follows_its_edited_retrievers(tmp_path):
    """pipe.corpus_ kept the corpus of the fit after an add / remove on its retriever (which searches and saves
    followed): deleting ``pipe.corpus_.ids`` through a LangChain retriever left the added document findable."""
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    corpus = Corpus.from_texts({f"d{i}": f"red apple {i}" for i in range(5)})
    pipe = Pipeline([BM25(k=10), TopK(k=3)])
    with pytest.raises(AttributeError, match="not fitted"):
        pipe.corpus_  # noqa: B018
    assert not pipe.is_fitted
    pipe.fit(corpus)
    assert pipe.corpus_ is corpus
    pipe.steps[0].add(Corpus.from_texts({"new": "green pear"}))
    assert "new" in pipe.corpus_.ids.tolist() and len(pipe.corpus_) == 6
    pipe.steps[0].remove(pipe.corpus_.ids.tolist())
    assert len(pipe.corpus_) == 0
    pipe.save(tmp_path / "p")
    assert len(Pipeline.load(tmp_path / "p").corpus_) == 0
