"""Rendering a traced run: where time and recall go, per operator.

``pipeline.search(queries, trace=True, qrels=...)`` records one
:class:`~ragkit.types.TraceEvent` per leaf operator call; a loop's body appears once per
iteration (on the queries still active) and the loop itself once (its output over all its
queries, its time including its steps'), and a route's branches once per label and the route
itself once (its output over all its queries, as a loop).  :func:`aggregate_trace` sums them per
operator path (the same paths YAML errors and ``ragkit validate`` print) and
:func:`trace_table` renders that as a ``rich`` table (``ragkit eval --trace``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from ragkit.types import TraceEvent

if TYPE_CHECKING:
    from rich.console import JustifyMethod
    from rich.table import Table

__all__ = ["TraceRow", "aggregate_trace", "trace_table", "print_trace", "stage_table", "print_stages"]


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
    ndcg: float | None = None
    #: a composite's row (a loop's output): its time includes the rows of its steps, so it has no share
    inclusive: bool = False

    @property
    def ms_per_query(self) -> float:
        return 1000.0 * self.seconds / self.queries if self.queries else 0.0


def aggregate_trace(events: Sequence[TraceEvent]) -> list[TraceRow]:
    """Sum events per path, in first-seen order.

    ``calls`` counts the calls (loop iterations, route parts), ``queries`` the queries
    processed over all calls, ``seconds`` the total wall time; candidates in/out are
    query-weighted means; ``recall`` is the mean recall@100 after the step over the judged
    queries of all its calls (``None`` without qrels), ``ndcg`` likewise for nDCG@10.
    """
    rows: dict[str, TraceRow] = {}
    rec_w: dict[str, float] = {}
    for e in events:
        r = rows.get(e.path)
        if r is None:
            r = rows[e.path] = TraceRow(e.path, e.operator, 0, 0, 0.0, 0.0, 0.0, None, inclusive=e.inclusive)
            rec_w[e.path] = 0.0
        n = max(e.n_queries, 0)
        tot = r.queries + n
        if tot:
            r.candidates_in = (r.candidates_in * r.queries + e.candidates_in * n) / tot
            r.candidates_out = (r.candidates_out * r.queries + e.candidates_out * n) / tot
        if e.recall is not None:
            w, nj = rec_w[e.path], max(e.n_judged, 0)
            r.recall = ((r.recall or 0.0) * w + e.recall * nj) / (w + nj) if w + nj else e.recall
            r.ndcg = ((r.ndcg or 0.0) * w + (e.ndcg or 0.0) * nj) / (w + nj) if w + nj else e.ndcg
            rec_w[e.path] = w + nj
        r.calls += 1
        r.queries = tot
        r.seconds += e.seconds
    return list(rows.values())


def trace_table(events: Sequence[TraceEvent], title: str = "trace (per operator)") -> Table:
    """A ``rich.table.Table``: path, operator, calls, queries, total ms, ms/query, share of time,
    mean candidates in -> out, recall@100 and nDCG@10 after the step."""
    from rich.table import Table
    from rich.text import Text

    rows = aggregate_trace(events)
    total = sum(r.seconds for r in rows if not r.inclusive) or 1e-12  # a loop's row holds its steps' time
    table = Table(title=title)
    columns: list[tuple[str, JustifyMethod]] = [
        ("path", "left"), ("operator", "left"), ("calls", "right"), ("queries", "right"), ("total ms", "right"),
        ("ms/query", "right"), ("time %", "right"), ("cand. in", "right"), ("cand. out", "right"),
        ("recall@100", "right"), ("nDCG@10", "right")]
    for col, just in columns:
        table.add_column(col, justify=just, no_wrap=just == "right")
    for r in rows:
        table.add_row(Text(r.path), Text(r.operator), str(r.calls), str(r.queries), f"{1000 * r.seconds:.1f}",
                      f"{r.ms_per_query:.3f}", "-" if r.inclusive else f"{100 * r.seconds / total:.1f}",
                      f"{r.candidates_in:.1f}",
                      f"{r.candidates_out:.1f}", "-" if r.recall is None else f"{r.recall:.4f}",
                      "-" if r.ndcg is None else f"{r.ndcg:.4f}")
    return table


def print_trace(console: Any, events: Sequence[TraceEvent]) -> None:
    """Print :func:`trace_table` on a ``rich`` console, or, where the console is narrower than the
    table (an 80-column terminal, a pipe), the same figures as one block per step, so no cell is
    cut short."""
    from rich.text import Text

    table = trace_table(events)
    if _fits(console, table):
        console.print(table)
        return
    console.print(Text("trace (per operator)", style="italic"))
    rows = aggregate_trace(events)
    total = sum(r.seconds for r in rows if not r.inclusive) or 1e-12
    for r in rows:  # each line whole (soft_wrap): a pipe's 80 columns cut a path or a figure's line in two
        share = "with the steps inside it" if r.inclusive else f"{100 * r.seconds / total:.1f}% of the time"
        console.print(Text(r.path, style="bold"), soft_wrap=True)
        console.print(Text(
            f"  {r.operator} · {r.calls} call(s), {r.queries} queries · {1000 * r.seconds:.1f} ms "
            f"({r.ms_per_query:.3f} ms/query, {share}) · candidates "
            f"{r.candidates_in:.1f} -> {r.candidates_out:.1f} · recall@100 "
            f"{'-' if r.recall is None else f'{r.recall:.4f}'} · nDCG@10 {'-' if r.ndcg is None else f'{r.ndcg:.4f}'}"),
            soft_wrap=True)


def stage_table(runs: dict[str, Sequence[TraceEvent]], title: str = "nDCG@10 / recall@100 after each step") -> Table:
    """A ``rich.table.Table`` comparing traced runs of the same pipeline step by step.

    ``runs`` maps a label (e.g. ``"unlearned"``, ``"learned"``) to its trace events; one row
    per operator path, one ``nDCG@10`` and one ``recall@100`` column per run.
    """
    from rich.table import Table
    from rich.text import Text

    agg = {label: {r.path: r for r in aggregate_trace(ev)} for label, ev in runs.items()}
    paths = list(dict.fromkeys(p for rows in agg.values() for p in rows))
    table = Table(title=title)
    table.add_column("step", overflow="fold")
    for label in runs:
        table.add_column(f"nDCG@10 {label}", justify="right", overflow="fold")
        table.add_column(f"R@100 {label}", justify="right", overflow="fold")
    for path in paths:
        cells = []
        for label in runs:
            r = agg[label].get(path)
            cells += ["-" if r is None or r.ndcg is None else f"{r.ndcg:.4f}",
                      "-" if r is None or r.recall is None else f"{r.recall:.4f}"]
        table.add_row(Text(path), *cells)
    return table


def print_stages(console: Any, runs: dict[str, Sequence[TraceEvent]],
                 title: str = "nDCG@10 / recall@100 after each step") -> None:
    """Print :func:`stage_table`, or, where the console is narrower than the table (a pipe, a log file), the
    same figures as one block per step (a step's path is not folded across lines), as :func:`print_trace`."""
    from rich.text import Text

    table = stage_table(runs, title)
    if _fits(console, table):
        console.print(table)
        return
    console.print(Text(title, style="italic"))
    agg = {label: {r.path: r for r in aggregate_trace(ev)} for label, ev in runs.items()}
    for path in dict.fromkeys(p for rows in agg.values() for p in rows):
        console.print(Text(path, style="bold"), soft_wrap=True)
        for label in runs:
            r = agg[label].get(path)
            ndcg = "-" if r is None or r.ndcg is None else f"{r.ndcg:.4f}"
            recall = "-" if r is None or r.recall is None else f"{r.recall:.4f}"
            console.print(Text(f"  {label}: nDCG@10 {ndcg} · recall@100 {recall}"), soft_wrap=True)


def _fits(console: Any, table: Table) -> bool:
    """Whether ``table`` prints on ``console`` at its natural width (no cell folded or cut short)."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(10_000), table).maximum <= console.width
