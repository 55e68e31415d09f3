"""How :class:`~ragkit.retrievers._index.VectorIndex` searches: exact blocked scoring and top-k merging, the
usearch graph (beam width, filters, dead nodes) and the second stage (float rescoring, b1 re-ranking).  The
functions taking ``self`` are :class:`VectorIndex` methods (assigned in its class body)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ragkit._topk import desc_order, fix_cut_ties
from ragkit.retrievers._quantize import BLOCK, STORED_DTYPES, _f16_queries, _i8_symmetric

if TYPE_CHECKING:
    from ragkit.retrievers._index import VectorIndex

#: score cells per block of the exact search (queries are chunked to keep ``queries x BLOCK`` under it)
EXACT_CELLS = 1 << 24
#: bytes of the float32 temporaries of the second stage (rescore / b1 re-ranking): the gathered
#: ``(queries, candidates, dims)`` block and the distinct candidates' vectors; the query batch is
#: scored in chunks that keep both under this
SECOND_STAGE_BYTES = 64 << 20
#: a filtered HNSW search whose filter passes at most this many live rows scores them exactly, their codes
#: fetched from usearch (~2 us a row); more go through the graph, oversampled by the filter's selectivity
FILTER_EXACT_MAX = 4_096
#: exact b1 search scores a batch of at most this many queries by a byte lookup table (:func:`_b1_lut_scores`),
#: more by unpacking the bits to a ±1 float32 block for one matrix product (a fixed cost per block, shared by the
#: batch).  Measured per 16,384 x 384 block on 2 busy cores: 1 query 1.5-1.9 ms vs 28-44 ms, 4 queries 9-20 ms vs
#: 59-72 ms, 8 queries 30-46 ms vs 53-83 ms, 16 queries 54-80 ms vs 55-107 ms
B1_LUT_QUERIES = 8
#: the bits of each byte value, most significant first (``np.unpackbits``' order): ``(256, 8)`` float32
_BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32)


def _block_topk(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest of each row of ``s`` ``(n_q, m)`` (``k < m``), ties at the cut by lower column.

    Returns ``(scores float32 (n_q, k), columns int64 (n_q, k))``, unordered.  ``torch.topk`` picks
    the ``k`` largest (multi-threaded, ~3x numpy's ``argpartition``) but keeps an arbitrary few of
    the entries tied with the k-th score; :func:`~ragkit._topk.fix_cut_ties` re-picks the rows
    where such a tie straddles the cut.  Needs ``k < m``.
    """
    import torch

    s = np.ascontiguousarray(s, dtype=np.float32)
    # the k + 1 largest, sorted: a row's tie straddles the cut exactly when its (k+1)-th score
    # equals its k-th, which spares a comparison pass over the whole block to find those rows
    top_t, part_t = torch.topk(torch.from_numpy(s), k + 1, dim=1, sorted=True)
    top, part = top_t.numpy(), part_t.numpy()
    tied = np.flatnonzero((top[:, k] == top[:, k - 1]) & ~np.isnan(top).any(axis=1))  # NaN rows: as before
    top, part = np.ascontiguousarray(top[:, :k]), np.ascontiguousarray(part[:, :k])
    fix_cut_ties(s, top, part, k, tied=tied)
    return top, part.astype(np.int64, copy=False)


def _topk_merge(best_s: np.ndarray | None, best_i: np.ndarray | None, s: np.ndarray, idx: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the top-``k`` of the running best ``(n_q, <=k)`` and a new block of scores.

    ``s`` is ``(n_q, m)`` float32, ``idx`` the block's ``m`` global slots, ascending and above
    every slot of the running best (blocks are merged in slot order).  The block is cut to its
    own top ``k`` first (:func:`_block_topk`, no ``(n_q, m)`` slot matrix), so only ``(n_q, 2k)``
    is merged with the running best.  Equal scores keep the lower slot, at the cut and across
    blocks, so the result is the first ``k`` of the stable (score desc, slot asc) order.
    """
    m = s.shape[1]
    kk = min(k, m)
    if kk < m:
        s, part = _block_topk(s, kk)
        idx = idx[part]
    else:
        idx = np.broadcast_to(idx, s.shape)
    if best_s is None:
        return s, idx
    s, idx = np.concatenate([best_s, s], axis=1), np.concatenate([best_i, idx], axis=1)
    if k < s.shape[1]:
        part = np.argpartition(s, s.shape[1] - k, axis=1)[:, s.shape[1] - k:]
        kth = np.take_along_axis(s, part, axis=1).min(axis=1)
        tied = np.flatnonzero(np.count_nonzero(s >= kth[:, None], axis=1) > k)
        if len(tied):  # a tie straddles the cut: the first k of (score desc, slot asc) for those rows
            part[tied] = desc_order(s[tied], idx[tied])[:, :k]
        s, idx = np.take_along_axis(s, part, axis=1), np.take_along_axis(idx, part, axis=1)
    return s, idx


def _row_dots(g: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``(n_q, c)`` float32: the dot product of each row ``g[i, j]`` of ``g`` ``(n_q, c, d)`` with ``q[i]``
    (``q``: ``(n_q, d)``).

    Each score is one dot product of its own row (``np.vecdot``: a BLAS ``sdot`` per row), so equal vectors
    score exactly equal wherever they sit among the candidates: ``np.einsum("qcd,qd->qc", optimize=True)``
    (before) and ``np.matmul`` give them scores one rounding step apart by position, and then equal vectors
    were not ranked by lower slot.  As fast as that einsum or faster (256 queries x 40 candidates x 384 dims:
    2.3 ms vs 2.8 ms; 1,000 x 40: 19 vs 30 ms).  numpy < 2 (no ``vecdot``): the products summed along each
    row, as exact a tie but ~2x slower.
    """
    vecdot = getattr(np, "vecdot", None)
    if vecdot is not None:
        return np.asarray(vecdot(g, q[:, None, :]), dtype=np.float32)
    return (g * q[:, None, :]).sum(axis=2, dtype=np.float32)


def _sort_desc(s: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by score descending, ties by lower slot; invalid slots (-1) last."""
    s = np.where(idx < 0, -np.inf, s)
    order = desc_order(s, idx)
    return np.take_along_axis(s, order, axis=1).astype(np.float32), np.take_along_axis(idx, order, axis=1)


def _block_scores(self: VectorIndex, qr: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """First-stage scores of reduced queries ``qr`` against a block of stored codes."""
    if self.dtype == "f32":
        return qr @ np.asarray(codes, dtype=np.float32).T
    if self.dtype == "f16":
        return qr @ np.asarray(codes).astype(np.float32).T
    if self.dtype == "i8":
        if codes.dtype == np.int8:  # global-scale codes fetched from usearch
            return (qr @ codes.astype(np.float32).T) / self.i8_scale
        return codes.astype(np.float32) @ (qr * self.i8_step).T  # (n, nq); transposed below
    # b1: the float query against the ±1 bits (asymmetric; ranks at least as well as Hamming
    # on the sign-quantised query, for the same matrix-product cost in numpy)
    if len(qr) <= B1_LUT_QUERIES:
        return _b1_lut_scores(qr, np.asarray(codes), self.ndim)
    db = np.unpackbits(np.asarray(codes), axis=1)[:, : self.ndim].astype(np.float32) * 2 - 1
    return (qr @ db.T) / np.float32(np.sqrt(self.ndim))


def _b1_lut_scores(qr: np.ndarray, codes: np.ndarray, ndim: int) -> np.ndarray:
    """``(n_q, n)`` float32: the b1 scores of ``_block_scores`` (``q . (2 bits - 1) / sqrt(ndim)``) of a few queries
    ``qr`` ``(n_q, ndim)`` against packed codes ``(n, nbytes)``, by a byte lookup table: per query, the sum of its
    coordinates under the set bits of each of the 256 byte values at each byte position (``(nbytes, 256)``), then
    one lookup per code byte, summed (``s``); the score is ``(2 s - sum(q)) / sqrt(ndim)``.  No ``(n, ndim)``
    float32 matrix of ±1 is made (the bits unpacked: 100,000 x 384 took ~200 ms a batch, whatever its size).
    Equal codes sum the same lookups in the same order: equal scores, ranked by lower slot as before."""
    nq, nbytes = len(qr), codes.shape[1]
    q = np.zeros((nq, nbytes * 8), np.float32)
    q[:, :ndim] = qr  # (the pad bits past ndim, zero in the codes, weigh nothing)
    table = (q.reshape(nq, nbytes, 8) @ _BYTE_BITS.T).reshape(nq, nbytes * 256)  # [query, byte j * 256 + value]
    # (n, nbytes) into the table, intp: np.take's own index type (int32 indices were converted to a fresh int64
    # array on every query's take)
    at = codes.astype(np.intp) + np.arange(0, nbytes * 256, 256, dtype=np.intp)
    picked = np.empty(at.shape, np.float32)
    out = np.empty((nq, len(codes)), np.float32)
    for r in range(nq):  # a loop over queries (at most B1_LUT_QUERIES)
        # mode="clip": the indices are in range by construction (a byte value under 256 at its byte's 256
        # entries); the default "raise" writes into a buffer the size of ``picked``, then copies it over
        np.take(table[r], at, out=picked, mode="clip")
        picked.sum(axis=1, out=out[r])
    out *= 2
    out -= q.sum(axis=1, dtype=np.float32)[:, None]
    out /= np.float32(np.sqrt(ndim))
    return out


def _exact(self: VectorIndex, qr: np.ndarray, kk: int, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``kk`` over live slots (or over ``rows``) in blocks; returns (scores, slots), ``-inf`` / ``-1``
    where fewer than ``kk`` slots are live.

    Queries are taken in chunks of at most ``EXACT_CELLS // BLOCK`` (1,024): the score block and
    the merge's temporaries are ``(queries, BLOCK)`` each (10,000 queries: ~2 GB at once).

    Without ``rows``, the stored codes (``numpy`` backend) are read in contiguous blocks, removed slots
    included, whose scores are set to ``-inf`` before the merge (their slots are -1 in the result): a gather
    (``codes[rows]``) copies each block, which made every search of an index with one removed document
    slower (100,000 x 384, one query: f32 1.38x).  The same slots and scores come out, ties ranked by lower slot
    as before, except where a live slot scores ``-inf`` too (finite vectors whose product overflows float32:
    ``ip`` with coordinates ~1e20) and a removed slot won its tie (a result lost to a -1): the queries that picked
    a removed slot while their live picks are fewer than ``min(kk, live slots)`` are searched again on the live
    slots, gathered.  ``rows`` (a filter's) are gathered; the graph's codes (``hnsw`` backend) are fetched by
    slot, the live ones only."""
    nq = len(qr)
    numpy_backend = self.backend == "numpy"
    dead: np.ndarray | None = None  # (the removed slots, scored -inf in contiguous blocks)
    if rows is None and not self.alive.all():
        if numpy_backend:
            dead = ~self.alive
        else:
            rows = np.flatnonzero(self.alive)
    step = max(1, EXACT_CELLS // BLOCK)
    if nq > step:  # a loop over chunks of queries, each answered as alone
        parts = [self._exact(qr[a:a + step], kk, rows) for a in range(0, nq, step)]
        return np.concatenate([s for s, _ in parts]), np.concatenate([i for _, i in parts])
    n = self.n_slots if rows is None else len(rows)
    best_s: np.ndarray | None = None
    best_i: np.ndarray | None = None
    i8_const = qr @ self.i8_min if (self.dtype == "i8" and numpy_backend) else None
    for start in range(0, n, BLOCK):
        idx = np.arange(start, min(n, start + BLOCK)) if rows is None else rows[start:start + BLOCK]
        if numpy_backend:
            stored = self._stored_codes()
            codes = stored[start: start + len(idx)] if rows is None else stored[idx]
        else:
            codes = self._get(idx)
        s = self._block_scores(qr, codes)
        if i8_const is not None:
            s = s.T + i8_const[:, None]
        s = s.astype(np.float32, copy=False)
        if dead is not None:
            gone = np.flatnonzero(dead[start: start + len(idx)])
            if len(gone):
                s[:, gone] = -np.inf  # (s: the block's own scores, a new array)
        best_s, best_i = _topk_merge(best_s, best_i, s, idx.astype(np.int64), kk)
    if best_s is None or best_i is None:
        return np.full((nq, 0), -np.inf, np.float32), np.full((nq, 0), -1, np.int64)
    if dead is not None:  # (removed slots picked where fewer than kk are live: no result)
        gone = dead[best_i]
        best_i = np.where(gone, -1, best_i)
        # a live slot scoring -inf (an overflow) may have lost its tie to a removed one: those queries again,
        # on the live slots only (rare: a removed slot is picked only where the kk-th best score is -inf)
        redo = np.flatnonzero(gone.any(axis=1) & ((~gone).sum(axis=1) < min(kk, self.n_alive)))
        if len(redo):
            es, ei = self._exact(qr[redo], kk, np.flatnonzero(self.alive))
            pad = best_i.shape[1] - es.shape[1]  # (min(kk, live) columns where the blocks gave min(kk, slots))
            best_s = np.array(best_s)  # (writable: the first block's scores may be a view)
            best_s[redo] = np.pad(es, ((0, 0), (0, pad)), constant_values=-np.inf)
            best_i[redo] = np.pad(ei, ((0, 0), (0, pad)), constant_values=-1)
    return best_s, best_i


def _get(self: VectorIndex, slots: np.ndarray) -> np.ndarray:
    """Stored codes of ``slots`` fetched from the usearch index."""
    graph = self._graph()
    if not len(slots):
        return np.zeros((0, graph.ndim // 8 if self.dtype == "b1" else self.ndim),
                        dtype=np.int8 if self.dtype == "i8" else STORED_DTYPES[self.dtype])  # (usearch's int8)
    got = graph.get(np.asarray(slots, dtype=np.uint64), dtype=self.dtype)  # usearch's names are ours
    if not isinstance(got, (tuple, list)):
        return np.asarray(got).reshape(len(slots), -1)
    found = [g for g in got if g is not None]  # usearch gives None for a key it does not hold
    if len(found) != len(slots):
        raise RuntimeError(f"VectorIndex: the HNSW graph holds no vector for {len(slots) - len(found)} of the "
                           f"{len(slots)} slots asked for")
    return np.stack(found)


def _graph_search(self: VectorIndex, q: np.ndarray, kk: int, ef: int | None) -> Any:
    """usearch's ``search`` of codes ``q`` for ``kk`` neighbours with beam width ``ef`` (None: the graph's
    own).  usearch takes the width from the index only, so a search at another width holds
    ``_ef_lock`` alone, sets the graph's, and restores it; searches at the graph's width share it."""
    graph = self._graph()
    with self._ef_lock.reading():
        if ef is None or ef == graph.expansion_search:
            return graph.search(q, kk, threads=self._threads())
    with self._ef_lock.writing():
        old = graph.expansion_search
        graph.expansion_search = ef  # type: ignore[misc]  # usearch defines the setter apart from the getter
        try:
            return graph.search(q, kk, threads=self._threads())
        finally:
            graph.expansion_search = old  # type: ignore[misc]


def _hnsw(self: VectorIndex, qr: np.ndarray, kk: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The graph's top ``kk`` of reduced queries ``qr`` at beam width ``ef`` (None: the graph's own)."""
    from usearch.index import MetricKind

    graph = self._graph()
    q_scale: np.ndarray | None = None  # per query: the scale its codes carry (i8; f16 past float16's range)
    if self.dtype == "i8":  # the corpus's scale, shrunk per query where it would clip: an ``ip``
        # index's queries can be far larger than its documents (MUVERA: token sums vs means)
        q_scale = np.minimum(self.i8_scale, 127.0 / np.maximum(np.abs(qr).max(axis=1), 1e-30)).astype(np.float32)
        q = _i8_symmetric(qr, q_scale[:, None])
    elif self.dtype == "f16":
        q, q_scale = _f16_queries(qr)
    else:
        q = self._codes(qr, for_usearch=True)
    m = self._graph_search(q, kk, ef)
    keys = np.asarray(m.keys).reshape(len(qr), -1).astype(np.int64)
    dist = np.asarray(m.distances, dtype=np.float32).reshape(len(qr), -1)
    # a one-query batch comes back as ``Matches`` (already cut to the hits found), more as ``BatchMatches``
    counts = np.asarray(m.counts).reshape(len(qr)) if hasattr(m, "counts") else np.array([keys.shape[1]])
    valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
    dist = np.where(valid, dist, np.float32(0.0))  # padding past the hits holds NaN: never compute on it
    if self.dtype == "b1":
        s = -dist
    elif q_scale is not None and graph.metric_kind == MetricKind.IP:  # the dot of the scaled codes
        carried = (np.float32(self.i8_scale) * q_scale[:, None]) if self.dtype == "i8" else q_scale[:, None]
        s = (1.0 - dist) / carried
    else:  # f32 / f16 inner product (or cosine: no scale matters), or an i8 cosine graph of an earlier version
        s = 1.0 - dist
    return np.where(valid, s, -np.inf).astype(np.float32), np.where(valid, keys, -1)


def _filtered_hnsw(self: VectorIndex, qr: np.ndarray, kk: int, mask: np.ndarray | None,
                   ef: int | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Top-``kk`` of the graph among the live slots ``mask`` passes (None: every live slot, of a graph that
    still holds dead nodes): ``(scores, slots, exactly)``, ``exactly`` where every query was answered by
    :func:`_exact` (its scores, a b1 graph's float query against the bits, need no second look).

    A filter passing at most ``min(FILTER_EXACT_MAX, exact_max)`` live rows is answered exactly on
    them (their codes fetched from usearch, one Python object a row: 40,000 rows x 128 dims, a 50%
    filter took 117 ms a query, 39 ms on an exact index).  A broader one searches the graph for
    ``fetch = 2 * kk / selectivity + expansion_search`` neighbours (the selectivity among the graph's
    nodes, dead ones included) and keeps those that pass; without a filter, ``kk`` over the live share
    of the nodes, with a margin.  Queries still short of ``kk`` passing rows search again with 4x the
    width, and then exactly.
    """
    ok = self.alive if mask is None else (mask & self.alive)
    n_pass = self.n_alive if mask is None else int(np.count_nonzero(ok))
    want = min(kk, n_pass)
    if want == 0 or (mask is not None and n_pass <= min(FILTER_EXACT_MAX, self.exact_max)):
        return (*self._exact(qr, kk, np.flatnonzero(ok)), True)
    nodes = max(len(self._graph()), n_pass)
    sel = n_pass / nodes
    beam = self.expansion_search if ef is None else ef
    if mask is None:  # usearch's beam holds dead nodes too: as many more as they are (ef 64, 20% dead: 80)
        fetch = int(min(nodes, np.ceil(max(1.25 * kk, beam) / sel) + 8))
    else:
        fetch = int(min(nodes, np.ceil(2 * kk / sel) + beam))
    s, i = self._passing_hnsw(qr, fetch, kk, ok, ef)
    short = np.flatnonzero((i >= 0).sum(axis=1) < want)
    if len(short) and fetch < nodes:  # too few passed in the shortlist: search those wider
        s2, i2 = self._passing_hnsw(qr[short], int(min(nodes, 4 * fetch)), kk, ok, ef)
        s[short], i[short] = s2, i2
        short = short[(i2 >= 0).sum(axis=1) < want]
    return (*self._exact_short(qr, kk, s, i, short, np.flatnonzero(ok)), False)  # (still too few: exactly)


def _exact_short(self: VectorIndex, qr: np.ndarray, kk: int, s: np.ndarray, i: np.ndarray, short: np.ndarray,
                 rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(s, i)``, a graph search's top ``kk`` of queries ``qr`` (-1 pads; narrower where usearch cut a one-query
    batch to its hits), with the queries ``short`` (positions) answered exactly on ``rows`` (None: every live
    slot), sorted, all padded to ``kk``: those the graph gave too few results (a beam that missed nodes)."""
    if not len(short):
        return s, i
    if s.shape[1] < kk:
        s = np.pad(s, ((0, 0), (0, kk - s.shape[1])), constant_values=-np.inf)
        i = np.pad(i, ((0, 0), (0, kk - i.shape[1])), constant_values=-1)
    es, ei = self._exact(qr[short], kk, rows)
    es, ei = _sort_desc(es, ei)
    pad = kk - es.shape[1]
    s[short] = np.pad(es, ((0, 0), (0, pad)), constant_values=-np.inf)
    i[short] = np.pad(ei, ((0, 0), (0, pad)), constant_values=-1)
    return s, i


def _passing_hnsw(self: VectorIndex, qr: np.ndarray, fetch: int, kk: int, ok: np.ndarray,
                  ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The graph's top ``fetch`` of each query, the live slots ``ok`` kept, cut to ``(n_q, kk)`` (-1 pads)."""
    s, i = self._hnsw(qr, fetch, ef)
    keep = (i >= 0) & ok[np.maximum(i, 0)]
    s, i = _sort_desc(np.where(keep, s, -np.inf), np.where(keep, i, -1))
    s, i = s[:, :kk], i[:, :kk]
    if i.shape[1] < kk:
        s = np.pad(s, ((0, 0), (0, kk - s.shape[1])), constant_values=-np.inf)
        i = np.pad(i, ((0, 0), (0, kk - i.shape[1])), constant_values=-1)
    return s, i


def _second_stage(self: VectorIndex, q_full: np.ndarray, qr: np.ndarray, cand: np.ndarray,
                  use_floats: bool | None = None) -> np.ndarray:
    """Scores of candidate slots ``cand`` (nq, c), -1 = none: floats from disk (``use_floats``; default
    ``rescore``), or the float query vs ±1 bits (``b1``); ``-inf`` for -1.

    The queries go in chunks whose ``(queries, c, dims)`` float32 block of gathered vectors and
    ``(<= queries * c, dims)`` distinct candidates' vectors stay under ``SECOND_STAGE_BYTES``
    together (256 queries x 400 candidates x 384 dims would be 157 MB each at once).
    """
    nq, c = cand.shape
    use_floats = self.rescore if use_floats is None else use_floats
    dims = self.d_in if use_floats else self.ndim
    step = max(1, SECOND_STAGE_BYTES // max(2 * 4 * c * dims, 1))
    out = np.empty((nq, c), np.float32)
    for a in range(0, nq, step):
        out[a: a + step] = self._second_stage_chunk(q_full[a: a + step], qr[a: a + step], cand[a: a + step],
                                                    use_floats)
    return out


def _second_stage_chunk(self: VectorIndex, q_full: np.ndarray, qr: np.ndarray, cand: np.ndarray,
                        use_floats: bool) -> np.ndarray:
    valid = cand >= 0
    u, inv = np.unique(np.where(valid, cand, cand.max(initial=0)), return_inverse=True)
    inv = inv.reshape(cand.shape)
    if use_floats:
        vecs = np.asarray(self._float_file()[u], dtype=np.float32)
        qv = q_full
    else:  # b1 without floats: asymmetric float query x ±1 bits
        codes = self._get(u) if self.backend == "hnsw" else self._stored_codes()[u]
        vecs = np.unpackbits(codes, axis=1)[:, : self.ndim].astype(np.float32)
        vecs *= 2  # in place: one (u, ndim) float block
        vecs -= 1
        vecs /= np.sqrt(self.ndim)
        qv = qr
    s = _row_dots(vecs[inv], qv) if vecs.shape[0] else np.zeros(cand.shape, np.float32)
    return np.where(valid, s, -np.inf).astype(np.float32)
