"""Batched helpers for filters and rerankers: rankings <-> flat arrays without per-document loops."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ragkit._results import score_rises
from ragkit.errors import DataError, ParamError
from ragkit.options import count_option
from ragkit.types import Ranking, read_only as _read_only

__all__ = ["flatten", "split_counts", "cut_prefix", "leading_run", "check_rows_in_corpus", "check_cosines",
           "check_dense_rankings", "first_unsorted", "unsorted_at", "pad_rows", "first_positions", "read_count",
           "first_time_for"]


def flatten(rankings: list[Ranking]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate a batch of rankings.

    Returns ``(rows int64 (N,), scores float32 (N,), lengths (B,), starts (B,), qidx (N,))``
    where ``qidx[i]`` is the query (batch position) of flat entry ``i``.
    """
    lengths = np.fromiter((len(r) for r in rankings), dtype=np.int64, count=len(rankings))
    starts = np.zeros(len(rankings), np.int64)
    if len(rankings) > 1:
        starts[1:] = np.cumsum(lengths)[:-1]
    if lengths.sum() == 0:
        return (np.empty(0, np.int64), np.empty(0, np.float32), lengths, starts, np.empty(0, np.int64))
    rows = np.concatenate([r.rows for r in rankings])
    scores = np.concatenate([r.scores for r in rankings]).astype(np.float32, copy=False)
    qidx = np.repeat(np.arange(len(rankings)), lengths)
    return rows, scores, lengths, starts, qidx


def split_counts(x: np.ndarray, counts: np.ndarray | Sequence[int], read_only: bool = False) -> list[np.ndarray]:
    """``x`` (``sum(counts)`` entries, one query's after another) cut into one view per query, ``counts[i]``
    entries for query ``i``: slices at the running totals, as ``np.split(x, np.cumsum(counts)[:-1])`` cuts it
    (for at least one query) but ~5x faster (10k queries: 1.5 ms, not 8 ms).  No query: no piece.
    ``read_only``: the pieces are views of one read-only view of ``x`` (``x`` itself stays as it is), so that
    a :class:`~ragkit.types.Ranking` made of them takes them as they are, with no view of its own."""
    if read_only:
        x = _read_only(x)
    ends = np.cumsum(counts, dtype=np.int64).tolist()
    return [x[a:b] for a, b in zip([0, *ends[:-1]], ends)]


def pad_rows(rankings: Sequence[Ranking], width: int, fill: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The first ``width`` rows of each ranking as one ``(n_q, width)`` int64 matrix, ``fill`` past a shorter
    ranking's end, and the ``(n_q, width)`` bool mask of the real entries (each ranking's first
    ``min(len, width)``): one concatenation, no per-document loop.  MMR's pools and the diversity measures'
    top-k use it, and maxsim's candidates (``pad_rows(rankings, longest, -1)[0]``)."""
    lens = np.fromiter((min(len(r), width) for r in rankings), np.int64, len(rankings))
    rows = np.full((len(rankings), width), fill, np.int64)
    valid = np.arange(width)[None, :] < lens[:, None]
    if lens.sum():
        rows[valid] = np.concatenate([np.asarray(r.rows[:width], np.int64) for r in rankings])
    return rows, valid


def first_positions(rows: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(n_q, F)`` int64: for each valid entry of ``rows`` (``(n_q, F)``, as :func:`pad_rows` gives them), the
    position of the first entry of its ranking that holds the same row; an entry's own position where it is the
    first, and for padding (``valid`` False) and negative rows (left to the range checks).  The repeated entries
    are those where it differs from ``np.arange(F)``.  Vectorised: rows sorted per ranking (stable, so equal rows
    keep their order), each run of equal rows sent to its first position."""
    n_q, f = rows.shape
    out = np.broadcast_to(np.arange(f), (n_q, f)).copy()
    if f < 2 or not valid.any():
        return out
    keyed = np.where(valid & (rows >= 0), rows, -1)
    order = np.argsort(keyed, axis=1, kind="stable")  # equal rows: the earlier position first
    srt = np.take_along_axis(keyed, order, axis=1)
    start = np.ones((n_q, f), bool)  # where a run of equal rows begins in sorted order (a non-row: each alone)
    start[:, 1:] = (srt[:, 1:] != srt[:, :-1]) | (srt[:, 1:] < 0)
    run_start = np.maximum.accumulate(np.where(start, np.arange(f), 0), axis=1)
    np.put_along_axis(out, order, np.take_along_axis(order, run_start, axis=1), axis=1)
    return out


def cut_prefix(rankings: list[Ranking], n_keep: np.ndarray, new_scores: np.ndarray | None = None,
               starts: np.ndarray | None = None, fields: dict[str, np.ndarray] | None = None) -> list[Ranking]:
    """Keep the first ``n_keep[i]`` documents of ranking ``i``.

    ``new_scores`` (flat, aligned with :func:`flatten`) replaces the scores; ``fields``
    (flat arrays) are added as extra aligned columns; ``starts`` (each ranking's first position in
    them, as :func:`flatten` returns it) is computed when not given.
    """
    if new_scores is None and not fields:
        return [r.head(n) if n < len(r) else r for r, n in zip(rankings, n_keep.tolist())]
    if starts is None:
        lengths = np.fromiter((len(r) for r in rankings), np.int64, len(rankings))
        starts = np.cumsum(lengths) - lengths
    if new_scores is not None and new_scores.dtype == np.float32:  # (its slices then read-only: no view each)
        new_scores = _read_only(new_scores)
    out = []
    for i, (r, n) in enumerate(zip(rankings, n_keep.tolist())):
        s0 = int(starts[i])
        flds = {k: v[:n] for k, v in r.fields.items()}
        for name, col in (fields or {}).items():
            flds[name] = col[s0:s0 + n]
        sc = r.scores[:n] if new_scores is None else new_scores[s0:s0 + n]
        out.append(Ranking(r.rows[:n], sc, flds))
    return out


def check_rows_in_corpus(rows: np.ndarray, n_docs: int, who: str) -> None:
    """Refuse candidate ``rows`` past the ``n_docs`` documents ``who`` was fitted on (a retriever
    that grew with ``add`` after the filter was fitted): :class:`DataError`."""
    if len(rows) and rows.max() >= n_docs:
        raise DataError(f"{who}: candidate row {int(rows.max())} is outside the fitted corpus ({n_docs} documents); "
                        "refit on the current corpus")


def check_cosines(scores: np.ndarray, who: str, qidx: np.ndarray | None = None, *, given: str | None = None) -> None:
    """Raise DataError unless ``scores`` look like cosines: finite, within [-1, 1].

    ``qidx`` (the query of each score) lets the message name the first query at fault.  ``given``: what the
    scores are called where a caller handed them in directly (``"cosines"``: ``predict_proba``'s argument): the
    message then starts ``"<who>: <given> row <query>"`` and names the value, instead of speaking of the dense
    retriever step a pipeline has before ``who``."""
    if not scores.size:
        return
    bad = ~np.isfinite(scores)
    if bad.any():
        first = int(np.argmax(bad))
        if given is not None:
            row = "" if qidx is None else f" row {int(qidx[first])}"
            raise DataError(f"{who}: {given}{row} holds a non-finite value ({float(scores[first])}; {int(bad.sum())} "
                            "in all); expected raw cosine scores in [-1, 1] (NaN only as padding, at the end of a row)")
        at = "" if qidx is None else f" (first in query {int(qidx[first])} of the batch)"
        raise DataError(f"{who} expects raw cosine scores in [-1, 1] from a dense retriever step before it, got "
                        f"{int(bad.sum())} non-finite score(s){at}; a single one would spoil its list's features")
    far = np.abs(scores) > 1.0 + 1e-3
    if far.any():
        if given is not None:
            first = int(np.argmax(far))
            row = "" if qidx is None else f" row {int(qidx[first])}"
            raise DataError(f"{who}: {given}{row} holds {float(scores[first]):.4g}, outside [-1, 1]; expected "
                            "raw cosine scores in [-1, 1] (of the adapter's encoder)")
        raise DataError(
            f"{who} expects raw cosine scores in [-1, 1] from a dense retriever step before it "
            f"(e.g. `dense | {who}`), got scores up to {float(np.max(np.abs(scores))):.3g}"
        )


def check_dense_rankings(rankings: list[Ranking], c: np.ndarray, qidx: np.ndarray, who: str,
                         ordered: bool = False) -> None:
    """Raise DataError unless ``rankings`` (flattened scores ``c``, query of each ``qidx``) are a
    dense retriever's: scores that are the cosines themselves (a step that rescored them, as
    ``mmr`` or a filter's probabilities, keeps the cosine in ``fields["cosine"]``) and, with
    ``ordered``, sorted by it within each query."""
    if len(c) and rankings and all("cosine" in r.fields for r in rankings):
        cos = np.concatenate([np.asarray(r.fields["cosine"], np.float64) for r in rankings])
        if cos.shape == c.shape and not np.allclose(cos, c, atol=1e-5):
            raise DataError(f"{who} expects the cosines of a dense retriever as scores, but the step before it "
                            "rescored them (they differ from the 'cosine' field it kept, as after mmr): put "
                            f"{who} right after dense")
    if ordered:
        q = first_unsorted(c, qidx)
        if q is not None:
            raise DataError(f"{who} expects each ranking sorted by cosine, as dense returns it; query "
                            f"{q} of the batch is not: put {who} right after dense")


def leading_run(keep: np.ndarray, lengths: np.ndarray, starts: np.ndarray, qidx: np.ndarray) -> np.ndarray:
    """``(n_q,)`` int64: per ranking, how many of its documents come before the first that ``keep`` (bool over the
    flattened rankings) does not keep.  A cut-off keeps that prefix, not a count of the kept documents: a rise of
    float rounding (which the sort checks let through) may put a failing document before a passing one."""
    n_keep = np.asarray(lengths, np.int64).copy()
    fail = np.flatnonzero(~keep)
    np.minimum.at(n_keep, qidx[fail], fail - starts[qidx[fail]])
    return n_keep


def unsorted_at(c: np.ndarray, qidx: np.ndarray, *, nan_last: bool = False) -> int | None:
    """The first flat position ``i`` where the flattened scores ``c`` (query of each: ``qidx``) break a list's
    order: ``c[i + 1]``, of the same query, rises above ``c[i]`` (beyond float rounding:
    :func:`~ragkit._results.score_rises`, the rule every operator's output is held to), or with ``nan_last``
    is a number after a NaN (NaN only at the end of a list); None when every list is sorted best first."""
    up = score_rises(c)
    if nan_last and len(up):
        nan = np.isnan(c)
        up |= nan[:-1] & ~nan[1:]
    up &= qidx[1:] == qidx[:-1]
    return int(np.argmax(up)) if up.any() else None


def first_unsorted(c: np.ndarray, qidx: np.ndarray) -> int | None:
    """The first query (batch position) whose flattened scores ``c`` (query of each: ``qidx``)
    rise somewhere along its list (beyond float rounding: :func:`~ragkit._results.score_rises`, the rule
    every operator's output is held to), or None when every list is sorted best first (:func:`unsorted_at`,
    which gives the position, and with ``nan_last`` also refuses a number after a NaN)."""
    i = unsorted_at(c, qidx)
    return None if i is None else int(qidx[i + 1])


def first_time_for(op: object, key: str) -> bool:
    """Whether the warning ``key`` comes up for the first time for the object ``op`` (then it is marked in
    ``op.__dict__``, past any attribute logic of its class): a warning an operator says once per object
    (mmr's short pool, cosine_adapter's shallow lists, knn_embed's dense head), as
    :func:`ragkit._files.first_time` says one once per process."""
    if op.__dict__.get(key):
        return False
    op.__dict__[key] = True
    return True


def read_count(op: Any, key: str, value: Any, minimum: int = 1, none: bool = False) -> Any:
    """``value``, the ``key`` that ``op`` reads (``op.opt(state, key, <its parameter>)``), held to
    :func:`count_option`'s rule: ``search`` checked a per-call one already, an operator called directly on a
    :class:`State` is checked here (a :class:`~ragkit.errors.ParamError` ``options.<name>.<key>: expected ...``);
    the parameter, checked at construction, passes."""
    try:
        return count_option(minimum, none)(op, value, None)
    except (TypeError, ValueError) as e:
        raise ParamError(f"options.{op.name}.{key}: {e}", path=f"options.{op.name}.{key}") from None
