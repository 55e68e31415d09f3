"""The foundation's checks (review s55): a Ranking's rows are row numbers, not ids or a mask; its fields and
scores are one per row; a State's entries are one per query; Run checks what it is given; a ranking is
read-only; a step that reads rankings refuses a state without them, all alike; Params refuse non-finite
floats at any depth."""

from __future__ import annotations

import re
from typing import Any

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


# ---------------------------------------------------------------------- 3. Run checks what it is given
def _obj(*ids):
    return np.array(list(ids), dtype=object)


def test_a_run_with_rankings_is_checked_as_one_without():
    """With rankings= the NaN and id checks were skipped: NaN written by write_trec (and refused by read_trec),
    int ids kept (pytrec_eval's raw TypeError in evaluate)."""
    from ragkit import Run
    with pytest.raises(DataError, match=r"Run: query 'q' gives document 'a' the score nan"):
        Run(["q"], [_obj("a")], [np.array([np.nan], np.float32)], rankings=[Ranking([0], [0.0])])
    run = Run(["q"], [_obj(1, 2)], [np.array([2, 1], np.float32)], rankings=[Ranking([0, 1], [2.0, 1.0])])
    assert run.doc_ids[0].tolist() == ["1", "2"]
    run = Run.from_rankings(["q"], [Ranking([0], [1.0])], _obj(7, 8))
    assert run.doc_ids[0].tolist() == ["7"]
    with pytest.raises(DataError, match=r"Run: query 'q' gives document 'd0' the score nan"):
        Run.from_rankings(["q"], [Ranking([0, 1], [np.nan, 1.0])], _obj("d0", "d1"))


@pytest.mark.parametrize("row", [-1, 3])
def test_from_rankings_refuses_a_row_that_is_no_corpus_row(row):
    """-1 was the last document, 3 (of 3) numpy's raw IndexError."""
    from ragkit import Run
    with pytest.raises(DataError, match=rf"Run\.from_rankings: rankings\[1\] \(query 'b'\) holds row {row}, not a row "
                                        r"of the 3 corpus ids given \(0\.\.2\)"):
        Run.from_rankings(["a", "b"], [Ranking([0], [1.0]), Ranking([1, row], [2.0, 1.0])], _obj("d0", "d1", "d2"))


def test_write_trec_refuses_a_document_twice_in_a_query(tmp_path):
    """write_trec wrote it, read_trec refused the file it wrote."""
    import io

    from ragkit import Run
    run = Run(["q", "r"], [_obj("a", "b"), _obj("a", "b", "a")], [np.array([2, 1], np.float32),
                                                                  np.array([3, 2, 1], np.float32)])
    with pytest.raises(DataError, match=r"Run\.write_trec: query 'r' retrieves document 'a' more than once"):
        run.write_trec(tmp_path / "run.trec")
    assert not (tmp_path / "run.trec").exists()
    with pytest.raises(DataError, match=r"Run\.to_trec: query 'r' retrieves document 'a' more than once"):
        run.to_trec(io.StringIO())


def test_search_still_gives_a_run_of_string_ids(corpus):
    run = BM25(k=3).fit(corpus).search(QUERIES)
    assert all(isinstance(d, str) for ids in run.doc_ids for d in ids.tolist()) and len(run.doc_ids[0]) == 3


# ---------------------------------------------------------------------- 2. a ranking is read-only
def test_a_rankings_arrays_are_read_only_and_the_callers_stay_writeable():
    rows, scores = np.arange(3), np.array([3.0, 2.0, 1.0], np.float32)
    r = Ranking(rows, scores)
    assert not r.rows.flags.writeable and not r.scores.flags.writeable
    assert rows.flags.writeable and scores.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        r.scores[0] = 9.0
    assert np.shares_memory(r.rows, rows)  # (a view: O(1), nothing copied)
    assert r.take(np.array([1])).rows.tolist() == [1] and r.head(2).scores.tolist() == [3.0, 2.0]


def test_a_step_changing_its_input_ranking_in_place_fails_at_its_own_line(corpus):
    """``r.scores *= -1; r.rows[0] = r.rows[-1]`` handed back the same object, whose checks were skipped: BM25 | it
    | TopK returned unsorted scores with a repeated row."""
    def call(self, s):
        for r in s.rankings:
            r.scores *= -1
        return s.copy()

    from ragkit.filters import TopK
    with pytest.raises(ValueError, match="read-only"):
        (BM25(k=5) | _step("InPlace", "reranker", call) | TopK(k=2)).fit(corpus).search(QUERIES)


# ---------------------------------------------------------------------- 6. one rule for a step given no rankings
def _reading_kinds():
    from ragkit import registry
    return sorted(n for n in registry.names() if registry.get(n).kind in ("reranker", "filter", "generator"))


@pytest.mark.parametrize("name", _reading_kinds())
def test_every_step_that_reads_rankings_refuses_a_state_without_them_alike(name, monkeypatch):
    """top_k and the thresholds returned rankings=None silently; mmr, dbnorm, cosine_adapter raised DataErrors each
    worded its way; generate (and score_router) a ParamError."""
    from ragkit import registry
    cls = registry.get(name)
    monkeypatch.setattr(cls, "_check_fitted", lambda self: None)  # (the rule, not fitting, is tested)
    op = cls(**cls.example)
    with pytest.raises(DataError, match=rf"^{cls.__name__} \('{name}'\) works on the rankings of the steps before it; "
                                        r"the state has none: put a retriever before it$"):
        op(State(["q"]))


def test_score_router_and_a_custom_filter_follow_the_rule(monkeypatch):
    from ragkit import registry
    router = registry.get("score_router")
    with pytest.raises(DataError, match=r"ScoreRouter \('score_router'\) works on the rankings"):
        router(**router.example)(State(["q"]))
    keep = _step("Keep", "filter", lambda self, s: s.copy())
    with pytest.raises(DataError, match=r"Keep \('s55_keep'\) works on the rankings of the steps before it"):
        keep(State(["q"]))
    prf = registry.get("prf")
    monkeypatch.setattr(prf, "_check_fitted", lambda self: None)
    assert prf(**prf.example)(State(["q"])).rankings is None  # (a rewriter: a loop's first iteration gives it none)


# ---------------------------------------------------------------------- 7. parameters JSON can hold
class _Untyped(Params):
    opts: dict = {}
    anything: Any = None


@pytest.mark.parametrize("kw, where, shown", [({"opts": {"a": float("nan")}}, "opts.a", "nan"),
                                              ({"opts": {"a b": [1.0, float("inf")]}}, r"opts\['a b'\]\[1\]", "inf"),
                                              ({"anything": np.float64("-inf")}, "anything", "-inf"),
                                              ({"anything": (1, {"x": float("nan")})}, r"anything\[1\]\.x", "nan")])
def test_untyped_parameters_refuse_non_finite_floats_at_any_depth(kw, where, shown):
    """A dict or Any field took NaN / inf, and params.json wrote it as null (another value when loaded)."""
    from ragkit.params import FieldRefusal
    with pytest.raises(ValueError, match=rf"expected a finite number, got {shown}, which JSON cannot hold") as e:
        _Untyped(**kw)
    cause = e.value.errors()[0]["ctx"]["error"]
    assert isinstance(cause, FieldRefusal) and re.fullmatch(where, cause.field)


def test_a_nested_non_finite_parameter_is_named_by_its_path():
    from ragkit import registry
    from ragkit.errors import ParamError
    with pytest.raises(ParamError, match=r"^sharded\.retriever\.bm25\.k1: expected a finite number, got nan, which "
                                         r"JSON cannot hold"):
        registry.get("sharded")(retriever={"bm25": {"k1": float("nan")}})
    assert _Untyped(opts={"a": 1.5, "b": [2, "x", None]}).opts["a"] == 1.5


def test_a_blank_branch_name_is_refused_in_words_it_breaks():
    """' ' was refused with "must be non-empty", which ' ' is."""
    from ragkit.errors import ParamError
    from ragkit.pipelines import Parallel
    with pytest.raises(ParamError, match=r"branch names must be non-blank and hold no '\.', '\[' or '\]'.*got \[' '\]"):
        Parallel([BM25(k=3), BM25(k=3, b=0.1)], names=[" ", "c"])


# ---------------------------------------------------------------------- 8. what the rule leaves as it was (re-review)
def test_a_loops_parallel_branch_without_a_retriever_is_empty_on_the_first_iteration(corpus):
    """README: in a loop's body such a branch is the previous iteration's ranking (none on the first); the
    rule above made its top_k refuse the first iteration's state (DataError ...branches[1].top_k)."""
    from ragkit.filters import TopK
    from ragkit.pipelines import RRF, Loop, Parallel, TopKStable
    loop = Loop(Parallel([BM25(k=5), TopK(k=3)], fuse=RRF()), until=TopKStable(), max_iters=2)
    run = loop.fit(corpus).search(QUERIES)
    assert [len(d) for d in run.doc_ids] == [5, 5]
    first = Parallel([BM25(k=5), TopK(k=3)], fuse=RRF()).fit(corpus)(State(QUERIES))  # (one iteration)
    assert [r.rows.tolist() for r in first.rankings] == [r.rows.tolist() for r in BM25(k=5).fit(corpus)(
        State(QUERIES)).rankings]


def test_a_rewriters_tuple_of_texts_is_taken_by_a_sharded_retriever_as_by_bm25(corpus):
    """check_result takes a tuple for values['query_text']; State refused one, so the rewrite worked before BM25
    and failed in Sharded (its per-shard State(..., values=dict(rewrites)))."""
    from ragkit import Pipeline
    from ragkit.retrievers import Sharded
    rw = _step("TupleRw", "rewriter", lambda self, s: _with(
        s, values={"query_text": tuple(f"{q} w7" for q in s.queries)}),
               reads_rankings=False)
    plain = Pipeline([rw, BM25(k=3)]).fit(corpus).search(QUERIES).doc_ids
    sharded = Pipeline([rw, Sharded(retriever={"bm25": {"k": 3}}, n_shards=2, k=3, backend="local")])
    assert [list(d) for d in sharded.fit(corpus).search(QUERIES).doc_ids] == [list(d) for d in plain]
    assert State(["a", "b"], values={"query_text": ("x", None)}).texts() == ["x", "b"]


def test_a_0d_field_is_refused_in_words_at_the_ranking_and_at_the_step(corpus):
    """hasattr(np.array(5), '__len__') is True: both checks raised numpy's 'len() of unsized object'."""
    words = r"fields\['a'\] is a 0-d ndarray \(array\(5\)\), a single value for 1 rows; expected one entry per row"
    with pytest.raises(DataError, match=rf"^Ranking: {words}"):
        Ranking([1], [1.0], {"a": np.array(5)})

    def call(self, s):
        out = s.copy()
        out.rankings = [Ranking(r.rows[:1], r.scores[:1]) for r in s.rankings]
        for r in out.rankings:
            r.fields["a"] = np.array(5)
        return out

    pipe = BM25(k=5) | _step("ZeroD", "reranker", call)
    with pytest.raises(DataError, match=rf"ZeroD\._call \('s55_zerod'\) returned rankings\[0\]: {words}"):
        pipe.fit(corpus).search(QUERIES)


def test_read_only_arrays_are_taken_as_they_are_and_no_callers_array_turns_read_only():
    """A view per ranking cost ~0.8 us each (10 filter steps over 10k queries 1.4-1.8x slower): a read-only input
    (a slice of another ranking's, a piece of a flat array a helper made read-only once) is kept as it is."""
    from ragkit._flat import cut_prefix, split_counts
    from ragkit._merge import _split
    r = Ranking(np.arange(5), np.linspace(1, 0, 5, dtype=np.float32), {"f": np.arange(5)})
    head = r.head(3)
    assert np.shares_memory(head.rows, r.rows) and np.shares_memory(head.scores, r.scores)  # (slices, no copy)
    assert not head.rows.flags.writeable
    assert Ranking(head.rows, head.scores).rows is head.rows
    head.fields["f"][0] = 9  # (fields are not read-only: head copies them, as take does)
    assert r.fields["f"][0] == 0
    rows, scores = np.arange(6), np.linspace(1, 0, 6, dtype=np.float32)
    pieces = _split(rows, scores, np.array([2, 4]))
    assert [p.rows.tolist() for p in pieces] == [[0, 1], [2, 3, 4, 5]]
    assert all(not p.rows.flags.writeable and not p.scores.flags.writeable for p in pieces)
    assert rows.flags.writeable and scores.flags.writeable  # (the caller's arrays: untouched)
    assert all(p.flags.writeable for p in split_counts(rows, [2, 4]))  # (Run's pieces: as before)
    new = np.full(5, 0.5, np.float32)
    cut = cut_prefix([r], np.array([2]), new_scores=new)
    assert cut[0].scores.tolist() == [0.5, 0.5] and not cut[0].scores.flags.writeable and new.flags.writeable


def test_the_messages_say_what_is_so():
    """int_positions named the first value (3), not the bad one; from_rankings over no corpus ids said
    '(0..-1)'; the score router lost its 'or use rule_router' when the rule took over its message."""
    from ragkit import Run, registry
    from ragkit._checks import _as_rows
    with pytest.raises(DataError, match=r"got object values such as 'd4'"):
        Ranking(np.array([3, "d4"], object), [0.9, 0.1])
    with pytest.raises(DataError, match=r"not a row of the 0 corpus ids given \(there are none\); a Ranking's"):
        Run.from_rankings(["q"], [Ranking([0], [1.0])], np.array([], dtype=object))
    with pytest.raises(DataError, match=r"^row 0 is out of range for 0 rows \(there are none\)$"):
        _as_rows([0], 0)
    router = registry.get("score_router")
    with pytest.raises(DataError, match=r"the state has none: put a retriever before it \(e\.g\. bm25\), or route on "
                                        r"the query text with rule_router$"):
        router(**router.example)(State(["q"]))
