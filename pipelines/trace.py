"""Rendering a traced run: where time and recall go, per operator.

``pipeline.search(queries, trace=True, qrels=...)`` records one
:class:`~ragkit.types.TraceEvent` per leaf operator call; a loop's body appears once per
iteration (on the queries still active) and the loop itself once (its output over all its
queries, its time including its steps'), and a route's branches once per label and the route
itself once (its output over all its queries, as a loop).  :func:`aggregate_trace` sums them per
operator path (the same paths YAML errors and ``ragkit validate`` print) and, inside a loop, per
iteration: a loop's steps get one row per iteration, each on the queries active in it, so the
rows of one iteration describe the same queries and compare step to step.  :func:`trace_table`
renders that as a ``rich`` table (``ragkit eval --trace``).
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
    """One operator path's totals over a traced run (inside a loop, one iteration's)."""

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
    #: how many of the row's ``queries`` its recall and nDCG average over: those with judgements and a ranking
    #: after the step (0 without qrels, and where the step gave no ranking: a ``prf`` opening a loop's first
    #: iteration with no ranking before it)
    scored: int = 0
    #: inside a loop, the iteration (from 1) of each enclosing loop, the outermost first; ``()`` outside loops
    iteration: tuple[int, ...] = ()

    @property
    def ms_per_query(self) -> float:
        return 1000.0 * self.seconds / self.queries if self.queries else 0.0

    @property
    def step(self) -> str:
        """The path as the tables print it: with the iteration inside a loop
        (``pipeline[0].loop.body[0].prf (iteration 2)``; nested loops ``(iteration 2, 1)``, the outermost first)."""
        if not self.iteration:
            return self.path
        return f"{self.path} (iteration {', '.join(str(i) for i in self.iteration)})"


def _within(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or a path below it (``prefix.x``, ``prefix[0]...``)."""
    return path == prefix or (path.startswith(prefix) and path[len(prefix)] in ".[")


def _iterations(events: Sequence[TraceEvent]) -> list[tuple[int, ...]]:
    """Each event's iteration of every loop around it (from 1, the outermost loop first; ``()`` outside loops).

    A loop's trace, per run: per iteration its body's events and then one event of its judge
    (``<loop>.until.<judge>``), then the loop's own event (``inclusive``, operator ``loop``).  So an event
    under ``<loop>.body`` or ``<loop>.until`` is in iteration 1 + the number of the loop's judge events since
    the loop's last own event (a search in batches, or a loop in a route run on several parts, runs a loop
    more than once)."""
    loops = sorted({e.path for e in events if e.inclusive and e.operator == "loop"}, key=len)
    enclosing: dict[str, list[str]] = {}
    current: dict[str, int] = {}
    out: list[tuple[int, ...]] = []
    for e in events:
        around = enclosing.get(e.path)
        if around is None:
            around = enclosing[e.path] = [lp for lp in loops
                                          if _within(e.path, f"{lp}.body") or _within(e.path, f"{lp}.until")]
        out.append(tuple(current.get(lp, 1) for lp in around))
        for lp in around:
            if _within(e.path, f"{lp}.until"):  # the judge: the iteration's last event
                current[lp] = current.get(lp, 1) + 1
        if e.inclusive and e.path in current:  # the loop ended: a later run of it starts at iteration 1
            del current[e.path]
    return out


def aggregate_trace(events: Sequence[TraceEvent]) -> list[TraceRow]:
    """Sum events per path and, inside a loop, per iteration (:attr:`TraceRow.iteration`), in first-seen order.

    ``calls`` counts the calls (route parts, batches), ``queries`` the queries processed over all
    calls, ``seconds`` the total wall time; candidates in/out are query-weighted means;
    ``recall`` is the mean recall@100 after the step over the queries of its calls that were
    judged and ranked, ``scored`` how many those are (``None`` and 0 without qrels), ``ndcg``
    likewise for nDCG@10.  A loop's steps get a row per iteration, on the queries active in that
    iteration: the rows of one iteration cover the same queries, each row's figures the queries
    its count says (a ``prf`` in the first iteration of a loop with no ranking before it has no
    ranking to score: ``scored`` 0, no figures).
    """
    rows: dict[tuple[str, tuple[int, ...]], TraceRow] = {}
    for e, it in zip(events, _iterations(events)):
        r = rows.get((e.path, it))
        if r is None:
            r = rows[e.path, it] = TraceRow(e.path, e.operator, 0, 0, 0.0, 0.0, 0.0, None, inclusive=e.inclusive,
                                            iteration=it)
        n = max(e.n_queries, 0)
        tot = r.queries + n
        if tot:
            r.candidates_in = (r.candidates_in * r.queries + e.candidates_in * n) / tot
            r.candidates_out = (r.candidates_out * r.queries + e.candidates_out * n) / tot
        nj = max(e.n_judged, 0)
        if e.recall is not None and nj:
            w = r.scored
            r.recall = ((r.recall or 0.0) * w + e.recall * nj) / (w + nj)
            r.ndcg = ((r.ndcg or 0.0) * w + (e.ndcg or 0.0) * nj) / (w + nj)
            r.scored = w + nj
        r.calls += 1
        r.queries = tot
        r.seconds += e.seconds
    return list(rows.values())


def _scored_cell(r: TraceRow) -> str:
    """How many queries a row's figures cover: ``21``, or ``0 of 81`` where fewer than the step ran on."""
    return str(r.queries) if r.scored == r.queries else f"{r.scored} of {r.queries}"


def trace_table(events: Sequence[TraceEvent], title: str = "trace (per operator)") -> Table:
    """A ``rich.table.Table``: path (with the iteration inside a loop), operator, calls, queries, total ms,
    ms/query, share of time, mean candidates in -> out, and how many queries recall@100 and nDCG@10
    after the step average over ("scored": those judged and ranked; ``-`` without qrels), and those two."""
    from rich.table import Table
    from rich.text import Text

    rows = aggregate_trace(events)
    total = sum(r.seconds for r in rows if not r.inclusive) or 1e-12  # a loop's row holds its steps' time
    judged = any(r.recall is not None for r in rows)
    table = Table(title=title)
    columns: list[tuple[str, JustifyMethod]] = [
        ("path", "left"), ("operator", "left"), ("calls", "right"), ("queries", "right"), ("total ms", "right"),
        ("ms/query", "right"), ("time %", "right"), ("cand. in", "right"), ("cand. out", "right"),
        ("scored", "right"), ("recall@100", "right"), ("nDCG@10", "right")]
    for col, just in columns:
        table.add_column(col, justify=just, no_wrap=just == "right")
    for r in rows:
        table.add_row(Text(r.step), Text(r.operator), str(r.calls), str(r.queries), f"{1000 * r.seconds:.1f}",
                      f"{r.ms_per_query:.3f}", "-" if r.inclusive else f"{100 * r.seconds / total:.1f}",
                      f"{r.candidates_in:.1f}", f"{r.candidates_out:.1f}", str(r.scored) if judged else "-",
                      "-" if r.recall is None else f"{r.recall:.4f}", "-" if r.ndcg is None else f"{r.ndcg:.4f}")
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
    judged = any(r.recall is not None for r in rows)
    for r in rows:  # each line whole (soft_wrap): a pipe's 80 columns cut a path or a figure's line in two
        share = "with the steps inside it" if r.inclusive else f"{100 * r.seconds / total:.1f}% of the time"
        over = f" (over {_scored_cell(r)} queries)" if judged and r.scored != r.queries else ""  # (said where
        # the figures cover fewer queries than the step ran on)
        console.print(Text(r.step, style="bold"), soft_wrap=True)
        console.print(Text(
            f"  {r.operator} · {r.calls} call(s), {r.queries} queries · {1000 * r.seconds:.1f} ms "
            f"({r.ms_per_query:.3f} ms/query, {share}) · candidates "
            f"{r.candidates_in:.1f} -> {r.candidates_out:.1f} · recall@100 "
            f"{'-' if r.recall is None else f'{r.recall:.4f}'} · nDCG@10 {'-' if r.ndcg is None else f'{r.ndcg:.4f}'}"
            f"{over}"), soft_wrap=True)


_Key = tuple[str, tuple[int, ...]]


def _stages(runs: dict[str, Sequence[TraceEvent]]) -> tuple[dict[str, dict[_Key, TraceRow]], list[_Key]]:
    """Each run's rows by (path, iteration), and the keys of all runs in pipeline order: a row one run has
    and an earlier one lacks (a loop's third iteration that only the learned run reached) comes right after
    the row before it in its own run, not at the end."""
    agg = {label: {(r.path, r.iteration): r for r in aggregate_trace(ev)} for label, ev in runs.items()}
    order: list[_Key] = []
    for rows in agg.values():
        before: _Key | None = None
        for key in rows:
            if key not in order:
                order.insert(order.index(before) + 1 if before is not None else 0, key)
            before = key
    return agg, order


def _counted(agg: dict[str, dict[_Key, TraceRow]]) -> bool:
    """Whether a stage table needs its queries columns: its rows do not all cover the same queries in full."""
    return len({_scored_cell(r) for rows in agg.values() for r in rows.values()}) > 1


def stage_table(runs: dict[str, Sequence[TraceEvent]], title: str = "nDCG@10 / recall@100 after each step") -> Table:
    """A ``rich.table.Table`` comparing traced runs of the same pipeline step by step.

    ``runs`` maps a label (e.g. ``"unlearned"``, ``"learned"``) to its trace events; one row
    per operator path (inside a loop, per path and iteration: :func:`aggregate_trace`), one
    ``nDCG@10`` and one ``recall@100`` column per run.  Where the rows do not all cover the same
    queries (a loop's later iterations run on the queries still active; a step with no ranking
    yet is not scored), a ``queries`` column per run before them says how many queries each
    figure averages over: ``21``, or ``0 of 81`` where fewer than the step ran on.
    """
    from rich.table import Table
    from rich.text import Text

    agg, order = _stages(runs)
    counted = _counted(agg)
    table = Table(title=title)
    table.add_column("step", overflow="fold")
    for label in runs:
        if counted:
            table.add_column(f"queries {label}", justify="right", overflow="fold")
        table.add_column(f"nDCG@10 {label}", justify="right", overflow="fold")
        table.add_column(f"R@100 {label}", justify="right", overflow="fold")
    for key in order:
        cells = []
        for label in runs:
            r = agg[label].get(key)
            if counted:
                cells.append("-" if r is None else _scored_cell(r))
            cells += ["-" if r is None or r.ndcg is None else f"{r.ndcg:.4f}",
                      "-" if r is None or r.recall is None else f"{r.recall:.4f}"]
        step = next(agg[label][key] for label in runs if key in agg[label]).step
        table.add_row(Text(step), *cells)
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
    agg, order = _stages(runs)
    counted = _counted(agg)
    for key in order:
        step = next(agg[label][key] for label in runs if key in agg[label]).step
        console.print(Text(step, style="bold"), soft_wrap=True)
        for label in runs:
            r = agg[label].get(key)
            ndcg = "-" if r is None or r.ndcg is None else f"{r.ndcg:.4f}"
            recall = "-" if r is None or r.recall is None else f"{r.recall:.4f}"
            over = "" if r is None or not counted else f" (over {_scored_cell(r)} queries)"
            console.print(Text(f"  {label}: nDCG@10 {ndcg} · recall@100 {recall}{over}"), soft_wrap=True)


def _fits(console: Any, table: Table) -> bool:
    """Whether ``table`` prints on ``console`` at its natural width (no cell folded or cut short)."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(10_000), table).maximum <= console.width
