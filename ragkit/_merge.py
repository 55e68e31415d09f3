"""Merging per-shard rankings of the same queries by score (:func:`merge_rankings`), on flat arrays."""

from __future__ import annotations

from typing import Sequence, cast

import numpy as np

from ragkit._flat import split_counts
from ragkit.types import Ranking


def merge_rankings(parts: Sequence[list[Ranking]], k: int) -> list[Ranking]:
    """Merge per-shard rankings of the same queries by score (rows already global), top ``k`` each.

    ``parts``: one list of rankings per shard, in shard order (a shard's rows below the next shard's), each
    ranking best first.  Documents of equal score keep the shards' own order: a lower shard's first, and within
    a shard the order the shard ranked them in (its retriever may break a tie of float32 scores by a finer score,
    e.g. bm25's float64 one).  See :func:`_merge_flat`.  ``k``: a positive integer
    (:class:`~ragkit.errors.ParamError` otherwise); every part must hold one ranking per query, as many as the first
    (:class:`~ragkit.errors.DataError` naming the part otherwise).
    """
    from ragkit.errors import DataError
    from ragkit.options import positive_k

    k = positive_k(k, "merge_rankings: k", path="k")
    if not parts:
        return []
    want = len(parts[0])
    for i, part in enumerate(parts):
        if len(part) != want:
            raise DataError(f"merge_rankings: part {i} (shard {i}) holds {len(part)} rankings, expected {want} (as "
                            f"part 0): one ranking per query, the same queries in every part, in the same order")
    return _split(*_merge_flat([_flatten(p) for p in parts], k))


#: Cells (queries x candidates) merged at once by :func:`_merge_flat` (its temporaries: ~20 bytes each).
_MERGE_CELLS = 1 << 22


def _refine_ties(neg: np.ndarray, rows: np.ndarray, shard: np.ndarray, kk: int, fine: np.ndarray) -> None:
    """Re-sort in place, by finer score then row, the queries (rows of the sorted ``neg`` / ``rows`` / ``shard``
    arrays) where a run of equal float32 scores that reaches into the top ``kk`` holds candidates of two shards
    (anywhere in the run: its first places may all be one shard's, the other shard's just past the cut); ordered by
    (float32, finer, row), which is the order by (finer, row): float32 rounding never reverses two scores.  The
    finer scores are ``fine`` (float64, aligned with ``neg``: what the shards sent with their candidates), read
    only for the candidates of such runs (float32 score at least the ``kk``-th's); the rest keep places below the
    top ``kk``."""
    if kk < 1 or neg.shape[1] < 2:
        return
    cut = neg[:, kk - 1:kk]
    cut = np.where(np.isnan(cut), np.float32(np.inf), cut)  # fewer than kk candidates: every one is in the top
    # in a run of equal scores the candidates lie shard after shard (a stable sort of the shards' concatenation),
    # so it holds two shards' exactly when two neighbours in it differ in shard
    tie = (neg[:, 1:] == neg[:, :-1]) & (shard[:, 1:] != shard[:, :-1]) & (neg[:, :-1] <= cut)
    flagged = np.flatnonzero(tie.any(axis=1))
    if not len(flagged):
        return
    n, r = neg[flagged], rows[flagged]
    top = n <= cut[flagged]  # (NaN pads: False)
    f = np.where(top, fine[flagged], 0.0)
    order = np.lexsort((r, -f, n), axis=1)
    neg[flagged] = np.take_along_axis(n, order, axis=1)
    rows[flagged] = np.take_along_axis(r, order, axis=1)


def _merge_flat(parts: Sequence[_Flat | _FineFlat], k: int) -> _Flat:
    """:func:`merge_rankings` on flat ``(rows, scores, lengths)`` arrays (:data:`_Flat`), one per shard, in shard
    order: each query's candidates are laid out in a padded ``(n_q, width)`` array, shard after shard, and
    sorted row-wise by score with a stable sort (equal scores keep that order); chunks of queries of at most
    :data:`_MERGE_CELLS` cells.  Returns the merged top ``k`` of every query, flat.

    Parts of four arrays (:data:`_FineFlat`, every part) carry each candidate's finer (float64) score: documents
    of two shards whose float32 scores equal the ``k``-th's or a higher one's are then ordered by it (then by row,
    as one index breaks its ties), for those queries only: their order by float32 score alone is the shards'
    order, not the one index's ranking by its finer score (:func:`_refine_ties`)."""
    n_s = len(parts)
    n_q = len(parts[0][2]) if n_s else 0
    lens = np.stack([np.asarray(p[2], np.int64) for p in parts]) if n_s else np.zeros((0, 0), np.int64)
    total = lens.sum(axis=0)
    if n_q == 0 or not total.any():
        return np.empty(0, np.int64), np.empty(0, np.float32), np.zeros(n_q, np.int64)
    ends = [np.cumsum(p[2]) for p in parts]  # each shard's flat end of every query
    before = np.cumsum(lens, axis=0) - lens  # (n_s, n_q): a query's candidates of the shards before this one
    fines = [cast("_FineFlat", p)[3] for p in parts] if all(len(p) == 4 for p in parts) else None
    out_rows, out_scores = [], []
    step = max(1, _MERGE_CELLS // max(1, int(total.max())))
    for a in range(0, n_q, step):
        b = min(n_q, a + step)
        width = int(total[a:b].max())
        neg = np.full((b - a, width), np.nan, np.float32)  # (pads: NaN, sorted after every score, NaN or not)
        rows = np.zeros((b - a, width), np.int64)
        shard = np.full((b - a, width), -1, np.int32)
        fine = np.zeros((b - a, width), np.float64) if fines is not None else None
        for s, part in enumerate(parts):
            r, sc, ln = part[:3]
            lo = int(ends[s][a - 1]) if a else 0
            hi = int(ends[s][b - 1])
            n = np.asarray(ln[a:b], np.int64)
            q = np.repeat(np.arange(b - a), n)
            col = np.arange(hi - lo) - np.repeat(np.cumsum(n) - n, n) + np.repeat(before[s, a:b], n)
            neg[q, col] = -np.asarray(sc[lo:hi], np.float32)
            rows[q, col] = r[lo:hi]
            shard[q, col] = s
            if fine is not None and fines is not None:
                fine[q, col] = fines[s][lo:hi]
        kk = min(k, width)
        order = np.argsort(neg, axis=1, kind="stable")
        neg, rows = np.take_along_axis(neg, order, axis=1), np.take_along_axis(rows, order, axis=1)
        if fine is not None and n_s > 1:
            _refine_ties(neg, rows, np.take_along_axis(shard, order, axis=1), kk,
                         np.take_along_axis(fine, order, axis=1))
        keep = np.arange(kk) < np.minimum(total[a:b], k)[:, None]
        out_rows.append(rows[:, :kk][keep])
        out_scores.append(-neg[:, :kk][keep])
    return np.concatenate(out_rows), np.concatenate(out_scores), np.minimum(total, k)


#: One shard's rankings of a query batch as flat arrays: every query's rows (int64) and scores (float32), one
#: query after the other, and each query's number of results (int64)
_Flat = tuple[np.ndarray, np.ndarray, np.ndarray]
#: :data:`_Flat` and each candidate's finer score (float64, e.g. bm25's before its float32 rounding), which
#: :func:`_merge_flat` orders the shards' tied candidates by
_FineFlat = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _flatten(rankings: Sequence[Ranking]) -> _Flat:
    """``(rows, scores, lengths)`` of ``rankings``, flat (see :data:`_Flat`)."""
    lens = np.fromiter((len(r.rows) for r in rankings), np.int64, len(rankings))
    if not len(rankings):
        return np.empty(0, np.int64), np.empty(0, np.float32), lens
    return (np.concatenate([r.rows for r in rankings]).astype(np.int64, copy=False),
            np.concatenate([r.scores for r in rankings]).astype(np.float32, copy=False), lens)


def _split(rows: np.ndarray, scores: np.ndarray, lens: np.ndarray) -> list[Ranking]:
    """Flat ``(rows, scores, lengths)`` as one :class:`Ranking` per query (none for no query)."""
    rows, scores = rows.astype(np.int64, copy=False), scores.astype(np.float32, copy=False)
    return [Ranking(r, s) for r, s in zip(split_counts(rows, lens, True), split_counts(scores, lens, True))]
