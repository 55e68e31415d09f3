"""The foundation's checks (review s55): a Ranking's rows are row numbers, not ids or a mask; its fields and
scores are one per row; a State's entries are one per query; Run checks what it is given; a ranking is
read-only; a step that reads rankings refuses a state without them, all alike; Params refuse non-finite
floats at any depth."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import word_corpus

from ragkit import Corpus, Operator, Params, Ranking, State
from ragkit.errors import DataError
from ragkit.retrievers import BM25

QUERIES = ["w1 w2 w3", "w4 w5"]


class _NoParams(Params):
    pass


@pytest.fixture(scope="module")
def corpus():
    return word_corpus(40)


def _with(state: State, **changes) -> State:
    out = state.copy()
    for key, value in changes.items():
        setattr(out, key, value)
    return out


def _step(name: str, kind: str, call, **attrs) -> Operator:
    """An operator (a class not registered) whose ``_call`` is ``call(self, state)``."""
    cls = type(name, (Operator,), {"name": f"s55_{name.lower()}", "kind": kind, "Params": _NoParams,
                                   "__annotations__": {"params": _NoParams}, "stateless": kind != "retriever",
                                   "reads_rankings": kind != "retriever", "_call": call, **attrs})
    return cls()


# ---------------------------------------------------------------------- 1. rows are row numbers
@pytest.mark.parametrize("rows, shown", [(["3", "4"], "<U1 values such as '3'"), (["d1", "d2"], "'d1'"),
                                         (np.array([b"3", b"4"]), "b'3'"), (np.array([True, False]), "bool"),
                                         (np.array(["3", None], dtype=object), "object values such as '3'")])
def test_ids_and_masks_are_not_rows(rows, shown):
    """Ranking(["3", "4"], s) was rows 3 and 4 (SciFact's ids are numeric strings: the wrong documents,
    silently), a mask rows 0/1, and "d1" numpy's raw ValueError."""
    with pytest.raises(DataError, match=rf"Ranking: rows are corpus row numbers \(integers\), got .*{shown}.*"
                                        r"corpus\.row_of\(ids\)"):
        Ranking(rows, [2.0, 1.0])


def test_integer_rows_in_any_form_are_still_rows():
    for rows in ([3, 4], np.array([3, 4], np.int32), np.array([3, 4], dtype=object), np.array([3.0, 4.0]), []):
        r = Ranking(rows, [2.0, 1.0][:len(rows)])
        assert r.rows.dtype == np.int64 and r.rows.tolist() == list(map(int, rows))


def test_a_retriever_returning_numeric_ids_fails_at_its_step():
    corpus = Corpus(ids=["5", "4", "3", "2", "1", "0"], texts=["a"] * 6)
    ids = _step("IdRows", "retriever",
                lambda self, s: _with(s, rankings=[Ranking(self.corpus_.ids[:2].astype(str), [2.0, 1.0])
                                                      for _ in s.queries]))
    with pytest.raises(DataError, match=r"s55_idrows.*Ranking: rows are corpus row numbers.*'5'"):
        ids.fit(corpus).search(["q"])


# ---------------------------------------------------------------------- 4. one score, one field entry per row
def test_scores_and_fields_are_one_per_row():
    with pytest.raises(DataError, match=r"Ranking: 3 rows and 2 scores; expected one score per row"):
        Ranking(np.arange(3), np.zeros(2))
    for col, has in ((np.arange(5), "has 5 entries"), (np.arange(1), "has 1 entries"), (7, "is int 7")):
        with pytest.raises(DataError, match=rf"Ranking: fields\['x'\] {has} for 3 rows; expected one entry per row"):
            Ranking(np.arange(3), np.zeros(3), {"x": col})


@pytest.mark.parametrize("extra", [2, -2])
def test_a_field_set_after_the_ranking_is_refused_naming_the_step(corpus, extra):
    """A field longer than the rows survived TopK misaligned; a shorter one was TopK's raw IndexError."""
    def call(self, s):
        out = s.copy()
        out.rankings = [Ranking(r.rows, r.scores) for r in s.rankings]
        for r in out.rankings:
            r.fields["x"] = np.arange(len(r) + extra)
        return out

    from ragkit.filters import TopK
    pipe = BM25(k=5) | _step("LateField", "reranker", call) | TopK(k=2)
    with pytest.raises(DataError, match=r"pipeline\[1\]\.s55_latefield: LateField\._call \('s55_latefield'\) "
                                        rf"returned rankings\[0\]: fields\['x'\] has {5 + extra} entries for 5 rows"):
        pipe.fit(corpus).search(QUERIES)


# ---------------------------------------------------------------------- 5. a State's entries are one per query
@pytest.mark.parametrize("kw, words", [
    ({"rankings": [Ranking.empty()]}, r"State: 1 rankings for 2 queries; expected one per query"),
    ({"rankings": Ranking.empty()}, r"State: rankings is Ranking, expected a list of one Ranking per query"),
    ({"values": {"query_text": ["x"]}}, r"State: values\['query_text'\] holds 1 entries for 2 queries"),
    ({"values": {"route": "x"}}, r"State: values\['route'\] is str 'x', expected a list of one entry per query"),
    ({"vectors": {"enc": np.zeros((1, 4))}}, r"State: vectors\['enc'\] of shape \(1, 4\) for 2 queries"),
    ({"branches": [("a", [Ranking.empty()])]}, r"State: branch 'a' holds 1 rankings for 2 queries"),
])
def test_a_state_refuses_entries_not_one_per_query(kw, words):
    """Accepted, and the operator called next was blamed ("TopK._call returned 1 rankings for 2 queries ...
    return a State: out = state.copy()"), with advice that did not apply."""
    with pytest.raises(DataError, match=words):
        State(["a", "b"], **kw)


def test_a_state_of_queries_is_checked_too():
    from ragkit.types import Queries
    with pytest.raises(DataError, match=r"State: 1 rankings for 2 queries"):
        State(Queries(["x", "y"], ["a", "b"]), rankings=[Ranking.empty()])
    s = State(["a", "b"], rankings=[Ranking.empty()] * 2, values={"v": [1, 2]}, vectors={"e": np.zeros((2, 3))})
    assert len(s.subset([1])) == 1 and len(State.merge(s, [([1], s.subset([1]))])) == 2
