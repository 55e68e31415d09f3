"""What the base class guarantees about an operator of one's own (a plugin): the names ``register`` refuses,
what ``_call`` may return (checked, the error naming the operator and the query), and the per-call ``k``
every retriever takes, also one whose ``_call`` reads ``self.params.k``.

The operators here are not registered unless a test says so (the rest of the session must not see them):
they are used as classes.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
from conftest import word_corpus
from pydantic import Field

from ragkit import Operator, Params, Ranking, State
from ragkit.errors import DataError, ParamError
from ragkit.filters import RelativeThreshold, TopK
from ragkit.registry import names, register, structural_keys
from ragkit.retrievers import BM25

QUERIES = ["w1 w2 w3", "w4 w5", "w6 w7 w8 w9"]


class KParams(Params):
    k: int = Field(10, ge=1, description="Results per query.")


class NoParams(Params):
    pass


@pytest.fixture(scope="module")
def corpus():
    return word_corpus(60)


def _retriever(name: str, rankings: Callable[[Any, State], list[Ranking]]) -> type[Operator]:
    """A retriever class (not registered) whose ``_call`` gives ``rankings(self, state)``."""

    def _call(self: Operator, state: State) -> State:
        out = state.copy()
        out.rankings = rankings(self, state)
        return out

    return type(name, (Operator,), {"name": f"tpc_{name.lower()}", "kind": "retriever", "Params": KParams,
                                    "__annotations__": {"params": KParams}, "_call": _call})


def _filter(name: str, call: Callable[[State], State]) -> Operator:
    cls = type(name, (Operator,), {"name": f"tpc_{name.lower()}", "kind": "filter", "Params": NoParams,
                                   "__annotations__": {"params": NoParams}, "stateless": True,
                                   "reads_rankings": True, "_call": lambda self, s: call(s)})
    return cls()


# ---------------------------------------------------------------------- names
@pytest.mark.parametrize("name", ["parallel", "route", "loop"])
def test_register_refuses_the_yaml_structural_keys(name):
    """``route`` was registered, saved, and its pipeline then failed to load (``pipeline[1].route.router:
    missing``): a structural key of pipeline YAML cannot name an operator."""
    assert name in structural_keys()
    cls = type("Structural", (Operator,), {"name": name, "kind": "filter", "Params": NoParams,
                                           "__annotations__": {"params": NoParams}, "stateless": True})
    with pytest.raises(ParamError, match=rf"cannot be named '{name}': pipeline YAML reads '{name}' as its "
                                         r"structural key.*reserved"):
        register(cls)
    assert name not in names()


def test_no_builtin_operator_holds_a_structural_key():
    assert not set(structural_keys()) & set(names())


# ---------------------------------------------------------------------- what _call returns
def test_two_dimensional_scores_are_refused_where_the_ranking_is_made(corpus):
    """Scores of shape (n, 1) passed every check and failed later in TopK (a format error), rrf (numpy's
    dimension error) or evaluate (a TypeError), none naming the operator."""
    with pytest.raises(DataError, match=r"Ranking: expected rows and scores one-dimensional .* scores of shape "
                                        r"\(3, 1\); flatten them"):
        Ranking(np.arange(3), np.array([[3.0], [2.0], [1.0]]))
    with pytest.raises(DataError, match=r"rows of shape \(1, 3\)"):
        Ranking(np.arange(3)[None], np.ones(3))
    TwoD = _retriever("TwoD", lambda self, s: [Ranking(np.arange(3), np.ones((3, 1)).ravel()) for _ in s.queries])
    assert len(TwoD().fit(corpus).search(QUERIES).rankings[0]) == 3  # (flattened: fine)
    Late = _retriever("Late", lambda self, s: [_two_d_after() for _ in s.queries])
    with pytest.raises(DataError, match=r"pipeline\[0\]\.tpc_late: Late\._call \('tpc_late'\) returned rankings\[0\] "
                                        r"with rows of shape \(3,\) and scores of shape \(3, 1\)"):
        Late().fit(corpus).search(QUERIES)


def _two_d_after() -> Ranking:
    r = Ranking(np.arange(3), np.ones(3))
    r.scores = np.ones((3, 1), np.float32)  # set after construction: check_result still sees it
    return r


def test_a_step_given_rankings_may_not_return_none(corpus):
    """A filter returning ``rankings = None`` after a retriever emptied every query's results silently."""
    drop = _filter("DropAll", lambda s: State(s.queries, s.query_ids, rankings=None))
    with pytest.raises(DataError, match=r"pipeline\[1\]\.tpc_dropall: DropAll\._call \('tpc_dropall'\) was given "
                                        r"rankings but returned a State without them"):
        (BM25(k=5) | drop).fit(corpus).search(QUERIES)
    with pytest.raises(DataError, match=r"DropAll \('tpc_dropall'\) works on the rankings of the steps before it; "
                                        r"the state has none"):  # (a step before any retriever: refused, since s55)
        drop(State.of(QUERIES))
    empty = _filter("EmptyAll", lambda s: State(s.queries, s.query_ids, rankings=[Ranking.empty() for _ in s.queries]))
    assert [len(r) for r in (BM25(k=5) | empty).fit(corpus).search(QUERIES).rankings] == [0, 0, 0]


def _rows(n: int = 5) -> np.ndarray:
    return np.arange(n)


#: ranking of the second query (the first is fine) -> the error's words
BAD = {
    "nan": (Ranking(_rows(), [5, np.nan, 3, 2, 1]), r"the score nan at position 1 \(row 1\) for query 'q1' "
                                                      r"\(batch position 1\); expected finite scores"),
    "inf": (Ranking(_rows(), [np.inf, 4, 3, 2, 1]), r"the score inf at position 0 \(row 0\) for query 'q1'"),
    "-inf": (Ranking(_rows(), [5, 4, 3, 2, -np.inf]), r"the score -inf at position 4 \(row 4\) for query 'q1'"),
    "unsorted": (Ranking(_rows(), [1, 2, 3, 4, 5]), r"scores not sorted best first for query 'q1' \(batch position "
                                                    r"1\): 1 at position 0 before 2"),
    "duplicate": (Ranking([0, 1, 2, 1, 3], [5, 4, 3, 2, 1]),
                  r"row 1 more than once for query 'q1' \(batch position 1\); a Ranking lists each document"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_rankings_from_call_are_refused_naming_the_operator_and_query(corpus, case):
    """NaN, ±inf, unsorted scores and a row twice in a ranking passed: TopK kept the worst of an unsorted
    list, rrf fused wrong positions, ±inf passed everywhere, NaN and duplicates failed only in evaluate or
    Run, without naming the operator."""
    bad, match = BAD[case]
    good = Ranking(_rows(), [5, 4, 3, 2, 1])
    Bad = _retriever("Bad", lambda self, s: [good, bad, good][: len(s.queries)])
    with pytest.raises(DataError, match=rf"pipeline\[0\]\.tpc_bad: Bad\._call \('tpc_bad'\) returned {match}"):
        Bad().fit(corpus).search(QUERIES)
    with pytest.raises(DataError, match=rf"Bad\._call \('tpc_bad'\) returned {match}"):
        (Bad() | TopK(k=2)).fit(corpus).search(QUERIES)
    rerank = _filter("Rerank", lambda s: State(s.queries, s.query_ids, rankings=[s.rankings[0], bad, s.rankings[2]]))
    with pytest.raises(DataError, match=rf"Rerank\._call \('tpc_rerank'\) returned {match}"):
        (BM25(k=5) | rerank).fit(corpus).search(QUERIES)


def test_ties_and_empty_rankings_pass():
    tied = _filter("Tied", lambda s: State(s.queries, s.query_ids, rankings=[
        Ranking([3, 1, 2], [1.0, 1.0, 1.0]), Ranking.empty(), Ranking([0], [-2.5])]))
    out = tied(State(QUERIES, rankings=[Ranking.empty()] * 3))
    assert [r.rows.tolist() for r in out.rankings] == [[3, 1, 2], [], [0]]


def test_a_problem_the_input_already_had_is_not_the_steps():
    """A state made by hand with infinite scores, called on directly: the cut-off keeps them, as it was
    given them (its own tests), rather than being blamed for them."""
    inf = State(["a", "b"], rankings=[Ranking([1, 2, 3], [np.inf, np.inf, 5.0]), Ranking([4, 5], [-np.inf, -np.inf])])
    assert [r.rows.tolist() for r in RelativeThreshold(alpha=0.9)(inf).rankings] == [[1, 2], [4, 5]]
    same = _filter("Same", lambda s: s.copy())  # handed back as given (a router, a judge): not checked again
    assert same(State(["a"], rankings=[Ranking([1, 1], [np.nan, 2.0])])).rankings[0].rows.tolist() == [1, 1]
    # ... but a problem in another query than the input's is the step's
    moved = _filter("Moved", lambda s: State(s.queries, s.query_ids, rankings=[s.rankings[1], s.rankings[0]]))
    one_bad = State(["a", "b"], rankings=[Ranking([1], [np.nan]), Ranking([2], [1.0])])
    with pytest.raises(DataError, match=r"Moved\._call \('tpc_moved'\) returned the score nan .* query 'q1'"):
        moved(one_bad)


# ---------------------------------------------------------------------- per-call k
def _params_k(self: Operator, state: State) -> list[Ranking]:
    k = self.params.k  # type: ignore[attr-defined]  # (not self.k_for(state): the contract's per-call k)
    return [Ranking(np.arange(k), -np.arange(k, dtype=np.float32)) for _ in state.queries]


def _forty(self: Operator, state: State) -> list[Ranking]:
    return [Ranking(np.arange(40), -np.arange(40, dtype=np.float32)) for _ in state.queries]


def test_every_retriever_honours_the_per_call_k_it_declares(corpus):
    """A retriever that reads ``self.params.k`` returned 10 for ``search(op={"k": 3})``: the ``k`` option every
    retriever takes was silently ignored.  Its rankings are now cut to ``k_for`` (its own ``k`` option, else
    its ``k`` raised to the call's); one returning fewer stays as it is."""
    ParamsK = _retriever("ParamsK", _params_k)
    op = ParamsK().fit(corpus)
    assert [len(r) for r in op.search(QUERIES, tpc_paramsk={"k": 3}).rankings] == [3, 3, 3]
    assert len(op.search(QUERIES).rankings[0]) == 10
    assert len(op.search(QUERIES, k=30).rankings[0]) == 10  # (it makes 10: the base cannot make more)
    Forty = _retriever("Forty", _forty)
    many = Forty(k=10).fit(corpus)
    assert len(many.search(QUERIES).rankings[0]) == 10
    assert len(many.search(QUERIES, k=25).rankings[0]) == 25
    assert len(many.search(QUERIES, tpc_forty={"k": 4}).rankings[1]) == 4
    cut = many.search(QUERIES, tpc_forty={"k": 4}).rankings[1]
    assert cut.rows.tolist() == [0, 1, 2, 3] and cut.scores.tolist() == [0.0, -1.0, -2.0, -3.0]
    state = many(State(QUERIES, options={"k": 12}))  # called directly: the same
    assert [len(r) for r in state.rankings] == [12, 12, 12]


def test_a_problem_the_input_had_does_not_excuse_another_query_of_another_kind():
    """The exemption for a problem the input already had (query 0's NaN) switched off the whole check: query 1's
    unsorted, repeated rows, new from the step, passed."""
    rebuilt = _filter("Rebuilt", lambda s: State(s.queries, s.query_ids, rankings=[
        Ranking(s.rankings[0].rows.copy(), s.rankings[0].scores.copy()), Ranking([3, 3], [1.0, 2.0])]))
    one_nan = State(["a", "b"], rankings=[Ranking([1], [np.nan]), Ranking([2], [1.0])])
    with pytest.raises(DataError, match=r"Rebuilt\._call \('tpc_rebuilt'\) returned scores not sorted .* query 'q1'"):
        rebuilt(one_nan)


class AllParams(Params):
    k: int = Field(0, ge=0, description="Results per query; 0: every document.")


def test_a_k_of_the_operators_own_meaning_is_not_cut_to():
    """A plugin whose ``k: 0`` means every document: every search raised ``tpc_alldocs.k: expected a positive
    integer, got 0`` from the cut to ``k_for``, which now leaves a ``k`` below 1 to the operator."""

    def _call(self: Operator, state: State) -> State:
        out = state.copy()
        n = len(self.corpus_)
        out.rankings = [Ranking(np.arange(n), -np.arange(n, dtype=np.float32)) for _ in state.queries]
        return out

    AllDocs = type("AllDocs", (Operator,), {"name": "tpc_alldocs", "kind": "retriever", "Params": AllParams,
                                            "__annotations__": {"params": AllParams}, "_call": _call})
    op = AllDocs().fit(word_corpus(20))
    assert [len(r) for r in op.search(QUERIES[:2]).rankings] == [20, 20]


def test_repeated_rows_are_asked_of_operators_of_ones_own_only():
    """The duplicate check (a hash pass, the costly one) runs for plugins; a built-in class is held to it by the
    conformance suite and is not hash-checked on every call (its finite / sorted checks stay)."""
    twice = _filter("Twice", lambda s: State(s.queries, s.query_ids, rankings=[Ranking([4, 4], [2.0, 1.0])]))
    with pytest.raises(DataError, match=r"row 4 more than once"):
        twice(State(["a"], rankings=[Ranking.empty()]))
    builtin = type(twice)
    builtin.__module__ = "ragkit.filters.made_up"  # (as a built-in's module reads)
    assert twice(State(["a"], rankings=[Ranking.empty()])).rankings[0].rows.tolist() == [4, 4]
    unsorted = _filter("Unsorted", lambda s: State(s.queries, s.query_ids, rankings=[Ranking([4, 5], [1.0, 2.0])]))
    type(unsorted).__module__ = "ragkit.filters.made_up"
    with pytest.raises(DataError, match=r"not sorted"):
        unsorted(State(["a"], rankings=[Ranking.empty()]))
