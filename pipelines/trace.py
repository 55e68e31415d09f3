"""Rendering a traced run: where time and recall go, per operator.

``pipeline.search(queries, trace=True, qrels=...)`` records one
:class:`~ragkit.types.TraceEvent` per leaf operator call; a loop's body appears once per
iteration and a route's branches once per label.  :func:`aggregate_trace` sums them per
operator path (the same paths YAML errors and ``ragkit validate`` print) and
:func:`trace_table` renders that as a ``rich`` table (``ragkit eval --trace``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ragkit.types import TraceEvent

__all__ = ["TraceRow", "aggregate_trace", "trace_table"]


@dataclass
class TraceRow:
    """One operator path's totals over a traced run."""

    path: str
    operator: str
    calls: int
    queries: int
    seconds: float
    candidates_in: float
    candidates_out: float
    recall: float | None

    @property
    def ms_per_query(self) -> float:
        return 1000.0 * self.seconds / self.queries if self.queries else 0.0


def aggregate_trace(events: Sequence[TraceEvent]) -> list[TraceRow]:
    """Sum events per path, in first-seen order.

    ``calls`` counts the calls (loop iterations, route parts), ``queries`` the queries
    processed over all calls, ``seconds`` the total wall time; candidates in/out are
    query-weighted means; ``recall`` is the query-weighted mean recall@100 after the
    step (``None`` without qrels).
    """
    rows: dict[str, TraceRow] = {}
    rec_w: dict[str, float] = {}
    for e in events:
        r = rows.get(e.path)
        if r is None:
            r = rows[e.path] = TraceRow(e.path, e.operator, 0, 0, 0.0, 0.0, 0.0, None)
            rec_w[e.path] = 0.0
        n = max(e.n_queries, 0)
        tot = r.queries + n
        if tot:
            r.candidates_in = (r.candidates_in * r.queries + e.candidates_in * n) / tot
            r.candidates_out = (r.candidates_out * r.queries + e.candidates_out * n) / tot
        if e.recall is not None:
            w = rec_w[e.path]
            r.recall = ((r.recall or 0.0) * w + e.recall * n) / (w + n) if w + n else e.recall
            rec_w[e.path] = w + n
        r.calls += 1
        r.queries = tot
        r.seconds += e.seconds
    return list(rows.values())


def trace_table(events: Sequence[TraceEvent], title: str = "trace (per operator)"):
    """A ``rich.table.Table``: path, operator, calls, queries, total ms, ms/query, share of time,
    mean candidates in -> out, recall@100 after the step."""
    from rich.table import Table

    rows = aggregate_trace(events)
    total = sum(r.seconds for r in rows) or 1e-12
    table = Table(title=title)
    for col, just in (("path", "left"), ("operator", "left"), ("calls", "right"), ("queries", "right"),
                      ("total ms", "right"), ("ms/query", "right"), ("time %", "right"), ("cand. in", "right"),
                      ("cand. out", "right"), ("recall@100", "right")):
        table.add_column(col, justify=just)
    for r in rows:
        table.add_row(r.path, r.operator, str(r.calls), str(r.queries), f"{1000 * r.seconds:.1f}",
                      f"{r.ms_per_query:.3f}", f"{100 * r.seconds / total:.1f}", f"{r.candidates_in:.1f}",
                      f"{r.candidates_out:.1f}", "-" if r.recall is None else f"{r.recall:.4f}")
    return table
