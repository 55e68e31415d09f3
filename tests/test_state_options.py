"""An operator (or pipeline) called directly on a ``State`` reads ``State.options`` as ``search`` reads its
keywords: the same names refused (with the same suggestion), and a top-level ``k`` that is the final number
of results per query, not only a lower bound on each step's depth."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from ragkit.errors import ParamError
from ragkit.filters import TopK
from ragkit.pipelines import Parallel, Pipeline
from ragkit.retrievers import BM25
from ragkit.types import Corpus, State

WORDS = ["cancer", "cells", "tumour", "growth", "protein", "gene", "blood", "immune", "virus", "drug"]
QUERIES = ["cancer cells", "immune virus drug", "gene protein growth"]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    rng = np.random.default_rng(7)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))) for _ in range(300)]
    return Corpus.from_texts(texts)


def _rows(rankings) -> list[list[int]]:
    return [r.rows.tolist() for r in rankings]


def _refusal(call) -> str:
    with pytest.raises(ParamError) as err:
        call()
    return str(err.value)


@pytest.mark.parametrize("key, hint", [("kk", "'k'"), ("filtr", "'filter'")])
def test_a_leaf_refuses_an_unknown_top_level_option_as_search_does(corpus, key, hint):
    """``BM25()(State(q, options={'kk': 5}))`` returned a State, while ``search(q, kk=5)`` refuses it."""
    bm = BM25().fit(corpus)
    on_state = _refusal(lambda: bm(State(QUERIES, options={key: 5})))
    by_search = _refusal(lambda: bm.search(QUERIES, **{key: 5}))
    assert on_state.startswith(f"options {key!r}: not an option; expected k, filter, or an operator name: bm25")
    assert f"(did you mean {hint}?)" in on_state
    assert on_state.removeprefix("options ") == by_search.removeprefix("search option ")


def test_a_leaf_checks_the_top_level_k_by_the_rule_of_the_calls_k(corpus):
    bm = BM25().fit(corpus)
    for bad in (0, True, 3.0, "3"):
        with pytest.raises(ParamError, match=r"^options\.k: expected a positive integer"):
            bm(State(QUERIES, options={"k": bad}))


@pytest.mark.parametrize("options", [{"k": 5}, {"k": 5, "bm25": {"k": 40}}, {"bm25": {"k": 5}}])
def test_a_leaf_on_a_state_returns_what_search_returns(corpus, options):
    """``k`` on a State is the final number of results, as ``search(q, k=5)``'s: it returned 100."""
    bm = BM25().fit(corpus)
    out = bm(State(QUERIES, options=options))
    run = bm.search(QUERIES, **options)
    assert [len(r) for r in out.rankings] == [5] * len(QUERIES)
    assert _rows(out.rankings) == _rows(run.rankings)


def test_a_pipeline_on_a_state_returns_what_search_returns(corpus):
    """``(BM25() | TopK(k=50))(State(q, options={'k': 5}))`` returned 50 per query."""
    pipe = Pipeline([BM25(), TopK(k=50)]).fit(corpus)
    out = pipe(State(QUERIES, options={"k": 5}))
    assert [len(r) for r in out.rankings] == [5] * len(QUERIES)
    assert _rows(out.rankings) == _rows(pipe.search(QUERIES, k=5).rankings)
    assert [len(r) for r in pipe(State(QUERIES)).rankings] == [50] * len(QUERIES)  # no k: no cut


def test_only_the_outermost_call_cuts_so_a_fusion_sees_every_branchs_candidates(corpus):
    """The steps inside still fetch at least ``k`` (not exactly ``k``): fused as ``search`` fuses them."""
    par = Parallel([BM25(k=30), BM25(k=30, b=0.2)]).fit(corpus)
    out = par(State(QUERIES, options={"k": 4}))
    run = par.search(QUERIES, k=4)
    assert [len(r) for r in out.rankings] == [4] * len(QUERIES)
    assert _rows(out.rankings) == _rows(run.rankings)
    np.testing.assert_allclose(np.concatenate([r.scores for r in out.rankings]),
                               np.concatenate([r.scores for r in run.rankings]), rtol=1e-6)


def test_the_given_state_is_not_changed_and_other_operators_names_pass_a_leaf(corpus):
    """A leaf is also called with the options of the pipeline around it (a shard's retriever on a Ray
    worker): another operator's name passes, and the caller's State keeps its options and rankings."""
    bm = BM25(k=20).fit(corpus)
    given = State(QUERIES, options={"k": np.int64(3), "rrf": {"anything": 1}})
    before = copy.deepcopy(given.options)
    out = bm(given)
    assert [len(r) for r in out.rankings] == [3] * len(QUERIES)
    assert given.options == before and given.rankings is None
    assert out.options["k"] == 3 and type(out.options["k"]) is int
