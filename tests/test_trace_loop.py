"""A traced loop's rows: one per iteration, each row's figures over the queries its count says.

``ragkit train``'s held-out table showed a loop's ``prf`` at nDCG@10 0.3869 and its ``bm25`` at 0.8356, as if
``prf`` (which passes rankings through) wrecked the ranking: the first iteration has no ranking to score, so
the ``prf`` row averaged the second iteration's one query while the ``bm25`` row averaged both iterations'
17; ``ragkit eval --trace`` said "81 queries" on a row whose figures came from 21.
"""

from __future__ import annotations

import pytest
from rich.console import Console

from ragkit import evaluate
from ragkit.operator import Operator
from ragkit.pipelines import PRF, Loop, Pipeline
from ragkit.pipelines.trace import aggregate_trace, print_stages, print_trace, stage_table, trace_table
from ragkit.retrievers import BM25
from ragkit.types import Corpus, Queries, State

DOCS = ["red apple pie with cream", "green apple tart", "red cars and fast cars", "blue sky over the sea",
        "apple orchards in spring", "fast red trains", "sea shells on the shore", "cream cakes and pies"]
IDS = [f"d{i}" for i in range(len(DOCS))]
QUERIES = Queries(["q1", "q2", "q3", "q4"], ["red apple", "fast cars", "blue sea", "cream pie"])
QRELS = {"q1": {"d0": 1, "d4": 1}, "q2": {"d2": 1}, "q3": {"d3": 1, "d6": 1}, "q4": {"d7": 1, "d0": 1}}


class _StopIds(Operator):
    """A judge stopping the queries of ``stop`` after their first iteration, the others at ``max_iters``."""

    name = "stop_ids_test"
    kind = "judge"
    stateless = True

    def __init__(self, stop: set[str]) -> None:
        super().__init__()
        self.stop = stop

    def _call(self, state: State) -> State:
        out = state.copy()
        out.values["done"] = [q in self.stop for q in state.query_ids]
        return out


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.from_texts(DOCS, ids=IDS)


def _loop(corpus: Corpus, max_iters: int = 2) -> Pipeline:
    body = [PRF(fb_docs=2, fb_terms=3), BM25(k=5)]
    return Pipeline([Loop(body, until=_StopIds({"q1", "q2"}), max_iters=max_iters)]).fit(corpus)


def _row(rows, path_end: str, iteration: tuple[int, ...]):
    return next(r for r in rows if r.path.endswith(path_end) and r.iteration == iteration)


def test_a_loops_steps_get_a_row_per_iteration_whose_figures_cover_its_queries(corpus):
    run = _loop(corpus).search(QUERIES, trace=True, qrels=QRELS)
    rows = aggregate_trace(run.trace)
    # every row's queries were searched once in it (was: prf and bm25 counted 6 query-iterations of 4 queries)
    assert all(r.queries <= len(QUERIES) and r.scored <= r.queries for r in rows), rows
    first_prf, second_prf = _row(rows, ".prf", (1,)), _row(rows, ".prf", (2,))
    assert (first_prf.queries, first_prf.scored, first_prf.recall, first_prf.ndcg) == (4, 0, None, None)
    assert (second_prf.queries, second_prf.scored) == (2, 2)  # q3, q4 loop again
    # prf passes its input through: on iteration 2 it scores what the first iteration gave q3 and q4
    once = _loop(corpus, max_iters=1).search(QUERIES, trace=True, qrels=QRELS)
    again = {q: QRELS[q] for q in ("q3", "q4")}
    assert second_prf.ndcg == pytest.approx(evaluate(once, again, ["ndcg@10"])["ndcg@10"], abs=1e-12)
    second_bm25 = _row(rows, ".bm25", (2,))  # the same two queries after the second round: what the loop gave them
    assert (second_bm25.queries, second_bm25.scored) == (2, 2)
    assert second_bm25.ndcg == pytest.approx(evaluate(run, again, ["ndcg@10"])["ndcg@10"], abs=1e-12)
    first_bm25 = _row(rows, ".bm25", (1,))
    assert (first_bm25.queries, first_bm25.scored) == (4, 4)
    assert first_bm25.ndcg == pytest.approx(evaluate(once, QRELS, ["ndcg@10"])["ndcg@10"], abs=1e-12)
    loop = _row(rows, "pipeline[0].loop", ())
    assert loop.inclusive and loop.queries == loop.scored == 4
    assert loop.ndcg == pytest.approx(evaluate(run, QRELS, ["ndcg@10"])["ndcg@10"], abs=1e-12)


def test_an_unjudged_query_is_counted_out_of_the_scored_queries(corpus):
    qrels = {q: rel for q, rel in QRELS.items() if q != "q4"}
    rows = aggregate_trace(_loop(corpus).search(QUERIES, trace=True, qrels=qrels).trace)
    assert [(r.queries, r.scored) for r in rows if r.path.endswith(".bm25")] == [(4, 3), (2, 1)]
    assert all(r.scored == 0 and r.recall is None for r in aggregate_trace(_loop(corpus).search(
        QUERIES, trace=True).trace))  # no qrels: nothing scored


def test_a_loop_run_again_and_a_nested_loop_count_their_own_iterations(corpus):
    trace: list = []
    loop = Loop([BM25(k=5)], until=_StopIds({"q1"}), max_iters=3).fit(corpus)
    for part in (QUERIES[[0, 1]], QUERIES[[2, 3]]):  # one loop run twice (a search in parts, a route's parts)
        loop(State.of(part, trace=trace))
    rows = aggregate_trace(trace)
    assert [(r.iteration, r.calls, r.queries) for r in rows if r.operator == "bm25"] == [
        ((1,), 2, 4), ((2,), 2, 3), ((3,), 2, 3)]
    inner = Loop([BM25(k=5)], until=_StopIds({"q2"}), max_iters=2)
    outer = Loop([inner], until=_StopIds({"q3"}), max_iters=2).fit(corpus)
    rows = aggregate_trace(outer(State.of(QUERIES, trace=[])).trace)
    assert [(r.iteration, r.queries) for r in rows if r.operator == "bm25"] == [
        ((1, 1), 4), ((1, 2), 3), ((2, 1), 3), ((2, 2), 2)]
    assert [(r.iteration, r.queries) for r in rows if r.operator == "loop"] == [((1,), 4), ((2,), 3), ((), 4)]


def test_the_tables_show_the_iteration_and_how_many_queries_each_figure_covers(corpus):
    run = _loop(corpus).search(QUERIES, trace=True, qrels=QRELS)
    wide = Console(width=300, record=True, file=open("/dev/null", "w"))
    wide.print(trace_table(run.trace))
    lines = wide.export_text().splitlines()
    header = [c.strip() for c in next(x for x in lines if "recall@100" in x).split("┃")]
    line = next(x for x in lines if "loop.body[0].prf (iteration 1)" in x)
    cells = [c.strip() for c in line.split("│")]
    assert cells[header.index("queries")] == "4" and cells[header.index("scored")] == "0"
    assert cells[header.index("nDCG@10")] == "-"
    assert any("loop.body[0].prf (iteration 2)" in x for x in lines)
    narrow = Console(width=80, record=True, file=open("/dev/null", "w"))
    print_trace(narrow, run.trace)
    assert "nDCG@10 - (over 0 of 4 queries)" in narrow.export_text()

    once = _loop(corpus, max_iters=1).search(QUERIES, trace=True, qrels=QRELS)
    table = stage_table({"one": once.trace, "two": run.trace})
    wide = Console(width=300, record=True, file=open("/dev/null", "w"))
    wide.print(table)
    text = wide.export_text()
    steps = [c.plain for c in table.columns[0]._cells]
    # the second iteration's rows, which only "two" has, sit inside the loop, not after it
    assert steps.index("pipeline[0].loop.body[1].bm25 (iteration 2)") < steps.index("pipeline[0].loop")
    assert [c.header for c in table.columns][1:4] == ["queries one", "nDCG@10 one", "R@100 one"]
    line = next(x for x in text.splitlines() if "prf (iteration 1)" in x)
    assert [c.strip() for c in line.split("│")][2:] == ["0 of 4", "-", "-", "0 of 4", "-", "-", ""]
    narrow = Console(width=60, record=True, file=open("/dev/null", "w"))
    print_stages(narrow, {"one": once.trace, "two": run.trace})
    assert "two: nDCG@10 - · recall@100 - (over 0 of 4 queries)" in narrow.export_text()


def test_a_stage_table_of_rows_on_the_same_queries_has_no_queries_columns(corpus):
    pipe = Pipeline([BM25(k=5)]).fit(corpus)
    trace = pipe.search(QUERIES, trace=True, qrels=QRELS).trace
    assert [c.header for c in stage_table({"a": trace, "b": trace}).columns] == [
        "step", "nDCG@10 a", "R@100 a", "nDCG@10 b", "R@100 b"]
