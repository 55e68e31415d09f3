"""Operators a user writes (subclasses of ``ragkit.Operator``): what the base class checks for them.

A retriever that does not apply the metadata ``filter`` refuses one; a fit whose learned attributes its
``_save`` / ``_load`` do not keep is refused at load; what ``_call`` returns is checked (a ``State`` of one
``Ranking`` per query, rows of the corpus), naming the operator; a retriever of one's own that reads
``state.texts(lexical=True)`` may follow ``prf``.  The operators here are not registered (nothing else in the
test session sees them): they are used as classes, and loaded with ``TheClass.load``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from conftest import word_corpus
from pydantic import Field

from ragkit import Operator, Params, Ranking, State
from ragkit.errors import ArtifactError, ConfigError, DataError, ParamError
from ragkit.pipelines import PRF, RRF, Parallel, Pipeline
from ragkit.registry import get, names
from ragkit.retrievers import BM25


class KParams(Params):
    k: int = Field(10, ge=1, description="Results per query.")


class Overlap(Operator):
    """Scores each document by the query words it holds (of ``state.texts(lexical=True)``); no filter."""

    name = "tco_overlap"
    kind = "retriever"
    Params = KParams
    params: KParams
    seen: list[list[str]] = []  # the texts each call searched (for the prf test)

    def _fit(self, corpus: Any, train: Any, upstream: Any) -> None:
        self.words_ = [set(t.split()) for t in corpus.full_texts]

    def _scores(self, state: State) -> np.ndarray:
        texts = state.texts(lexical=True)
        type(self).seen.append(texts)
        return np.array([[len(set(q.split()) & d) for d in self.words_] for q in texts], np.float32).reshape(
            len(texts), len(self.words_))

    def _rank(self, state: State, scores: np.ndarray) -> State:
        out = state.copy()
        k = self.k_for(state)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out.rankings = [Ranking(o[np.isfinite(s[o])], s[o][np.isfinite(s[o])]) for o, s in zip(order, scores)]
        return out

    def _call(self, state: State) -> State:
        return self._rank(state, self._scores(state))

    def _save(self, folder: Path) -> None:
        (folder / "words.json").write_text(json.dumps([sorted(w) for w in self.words_]))

    def _load(self, folder: Path, mmap: bool = False) -> None:
        self.words_ = [set(w) for w in json.loads((folder / "words.json").read_text())]


class FilteredOverlap(Overlap):
    """:class:`Overlap` that applies the filter, and says so."""

    name = "tco_filtered_overlap"
    applies_filter = True

    def _call(self, state: State) -> State:
        scores = self._scores(state)
        mask = self.filter_mask(state)
        if mask is not None:
            scores[:, ~mask] = -np.inf
        return self._rank(state, scores)


class LexicalOverlap(Overlap):
    """:class:`Overlap` that declares it reads prf's expanded query."""

    name = "tco_lexical_overlap"
    reads_lexical_query = True


YEARS = [2000 + i % 3 for i in range(60)]


@pytest.fixture(scope="module")
def corpus():
    return word_corpus(60, year=YEARS)


QUERIES = ["w1 w2 w3", "w4 w5", "w6 w7 w8 w9"]


# ---------------------------------------------------------------------- 1. filter
def test_every_builtin_retriever_applies_the_filter():
    assert [n for n in names() if get(n).kind == "retriever" and not get(n).applies_filter] == []


def test_a_retriever_that_does_not_apply_the_filter_refuses_one(corpus):
    op = Overlap(k=10).fit(corpus)
    assert len(op.search(QUERIES).doc_ids[0]) == 10  # without a filter it searches
    how = r"Overlap \('tco_overlap'\) is a retriever that does not apply metadata filters.*self\.filter_mask\(state\)"
    with pytest.raises(ParamError, match=f"search option filter: {how}.*applies_filter = True"):
        op.search(QUERIES, filter={"year": 2001})
    with pytest.raises(ParamError, match=f"tco_overlap.filter: {how}"):  # its own filter option
        op.search(QUERIES, tco_overlap={"filter": {"year": 2001}})
    with pytest.raises(ParamError, match=how):  # called on a State directly
        op(State.of(QUERIES, options={"filter": {"year": 2001}}))
    with pytest.raises(ParamError, match=how):
        op(State.of(QUERIES, options={"tco_overlap": {"filter": {"year": 2001}}}))
    # beside a bm25 that applies it, before any work
    pipe = Parallel([BM25(k=10), Overlap(k=10)], fuse=RRF()).fit(corpus)
    with pytest.raises(ParamError, match=f"{how}.*at pipeline\\[0\\]\\.parallel\\.branches\\[1\\]"):
        pipe.search(QUERIES, filter={"year": 2001})
    with pytest.raises(ParamError, match=how):
        pipe(State.of(QUERIES, options={"filter": {"year": 2001}}))


def test_a_retriever_that_applies_the_filter_returns_only_what_it_allows(corpus):
    op = FilteredOverlap(k=10).fit(corpus)
    for run in (op.search(QUERIES, filter={"year": 2001}),
                op.search(QUERIES, tco_filtered_overlap={"filter": {"year": 2001}}),
                (BM25(k=10) + FilteredOverlap(k=10)).fit(corpus).search(QUERIES, filter={"year": 2001})):
        years = {YEARS[r] for ids in run.doc_ids for r in corpus.row_of(list(ids))}
        assert years == {2001}


# ---------------------------------------------------------------------- 2. save / load
class NoSave(Operator):
    """Learns a table at fit, but has no ``_save`` / ``_load``."""

    name = "tco_nosave"
    kind = "retriever"
    Params = KParams
    params: KParams

    def _fit(self, corpus: Any, train: Any, upstream: Any) -> None:
        self.table_ = np.random.default_rng(0).random(len(corpus)).astype(np.float32)
        self.n_docs_ = len(corpus)

    def _call(self, state: State) -> State:
        top = np.argsort(-self.table_)[:self.k_for(state)]
        out = state.copy()
        out.rankings = [Ranking(top, self.table_[top]) for _ in state.queries]
        return out


class HalfSave(NoSave):
    """Saves ``table_`` but forgets ``n_docs_``."""

    name = "tco_halfsave"

    def _save(self, folder: Path) -> None:
        np.save(folder / "table.npy", self.table_)

    def _load(self, folder: Path, mmap: bool = False) -> None:
        self.table_ = np.load(folder / "table.npy")


class FullSave(HalfSave):
    name = "tco_fullsave"

    def _load(self, folder: Path, mmap: bool = False) -> None:
        super()._load(folder, mmap)
        self.n_docs_ = len(self.corpus_)


def test_load_refuses_an_operator_whose_load_lost_what_fit_learned(corpus, tmp_path):
    with pytest.raises(ParamError, match=r"cannot be saved: its fit set n_docs_, table_"):
        NoSave().fit(corpus).save(tmp_path / "nosave")  # refused before the folder is written
    assert not (tmp_path / "nosave").exists()
    HalfSave().fit(corpus).save(tmp_path / "half")
    with pytest.raises(ArtifactError, match=r"HalfSave \('tco_halfsave'\) lacks n_docs_ once loaded: its fit had "
                                            r"set it"):
        HalfSave.load(tmp_path / "half")
    op = FullSave(k=4).fit(corpus)
    op.save(tmp_path / "full")
    loaded = FullSave.load(tmp_path / "full")
    assert loaded.search(QUERIES) == op.search(QUERIES)
    meta = json.loads((tmp_path / "full" / "params.json").read_text())
    assert meta["learned"] == ["n_docs_", "table_"]


def test_a_builtin_operator_records_what_it_learned_and_loads(corpus, tmp_path):
    op = BM25(k=5).fit(corpus)
    op.save(tmp_path / "bm25")
    assert json.loads((tmp_path / "bm25" / "params.json").read_text())["learned"]
    assert BM25.load(tmp_path / "bm25").search(QUERIES) == op.search(QUERIES)


# ---------------------------------------------------------------------- 3. what _call returns
def _returning(name: str, ret: Callable[[State], Any]) -> Operator:
    cls = type(f"Bad_{name}", (Operator,), {"name": f"tco_bad_{name}", "kind": "reranker", "stateless": True,
                                            "reads_rankings": True, "_call": lambda self, s: ret(s)})
    return cls()


def _set(obj: Any, **attrs: Any) -> Any:
    """``obj`` with ``attrs`` set after it was made: a State or Ranking whose constructor would refuse them (the
    check of what ``_call`` returns is tested)."""
    for key, value in attrs.items():
        setattr(obj, key, value)
    return obj


BAD = {
    "none": (lambda s: None, r"returned NoneType None, expected a ragkit State"),
    "list": (lambda s: s.rankings, r"returned list .*expected a ragkit State"),
    "count": (lambda s: _set(s.copy(), rankings=s.rankings[:1]),
              r"returned 1 rankings for 3 queries, expected a list of one Ranking per query"),
    "queries": (lambda s: State(s.queries[:1], s.query_ids[:1], rankings=s.rankings[:1]),
                r"returned a State of 1 queries for the 3"),
    "tuples": (lambda s: State(s.queries, s.query_ids, rankings=[(r.rows, r.scores) for r in s.rankings]),
               r"returned rankings\[0\] = tuple .*expected a ragkit Ranking"),
    "shapes": (lambda s: State(s.queries, s.query_ids, rankings=[_set(Ranking(r.rows, r.scores), scores=r.scores[:1])
                                                                 for r in s.rankings]),
               r"returned rankings\[0\] with rows of shape \(5,\) and scores of shape \(1,\)"),
    "rows": (lambda s: State(s.queries, s.query_ids, rankings=[Ranking(r.rows + 10**6, r.scores) for r in s.rankings]),
             r"returned row 10000\d\d, not a row of the corpus of 60 documents"),
    "negative": (lambda s: State(s.queries, s.query_ids, rankings=[Ranking(r.rows - 100, r.scores)
                                                                  for r in s.rankings]),
                 r"returned row -\d+, not a row of the corpus of 60"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_what_call_returns_is_checked_and_the_error_names_the_operator(corpus, case):
    ret, match = BAD[case]
    bad = _returning(case, ret)
    pipe = (BM25(k=5) | bad).fit(corpus)
    with pytest.raises(DataError, match=rf"Bad_{case}\._call \('tco_bad_{case}'\) {match}"):
        pipe.search(QUERIES)
    if case not in ("rows", "negative"):  # (called on its own, a stateless step knows no corpus)
        with pytest.raises(DataError, match=rf"Bad_{case}\._call"):
            bad(BM25(k=5).fit(corpus)(State.of(QUERIES)))


def test_a_retriever_must_return_rankings(corpus):
    class NoRankings(NoSave):
        name = "tco_norankings"

        def _call(self, state: State) -> State:
            return state.copy()

    with pytest.raises(DataError, match=r"NoRankings\._call \('tco_norankings'\) is a retriever but returned a "
                                        r"State without rankings"):
        NoRankings().fit(corpus).search(QUERIES)


def test_good_results_pass_unchanged(corpus):
    good = _returning("good", lambda s: s.copy())
    base = BM25(k=5).fit(corpus)
    assert (base | good).search(QUERIES) == base.search(QUERIES)
    empty = State.of(QUERIES)  # a reranker before any retriever: refused, as every step that reads rankings (s55)
    with pytest.raises(DataError, match=r"Bad_good \('tco_bad_good'\) works on the rankings of the steps before it; "
                                        r"the state has none: put a retriever before it"):
        good(empty)


# ---------------------------------------------------------------------- 4. prf before a retriever of one's own
def test_prf_may_precede_a_retriever_that_reads_the_lexical_query(corpus):
    with pytest.raises(ConfigError, match=r"only bm25 reads.*set reads_lexical_query = True on its class"):
        Pipeline([BM25(k=20), PRF(fb_docs=3), Overlap(k=10)]).fit(corpus).search(QUERIES)
    pipe = Pipeline([BM25(k=20), PRF(fb_docs=3), LexicalOverlap(k=10)]).fit(corpus)
    LexicalOverlap.seen = []
    run = pipe.search(QUERIES)
    assert len(run.doc_ids[0]) == 10
    assert LexicalOverlap.seen and LexicalOverlap.seen[-1] != QUERIES  # it searched prf's expanded queries
