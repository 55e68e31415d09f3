"""Centroid interaction: a token codebook and the approximate MaxSim it scores (PLAID).

Every document token is replaced by the id of its nearest centroid in a codebook of ``C``
unit vectors (spherical k-means over a sample of the corpus's tokens); a document keeps only
its set of distinct ids.  A query's tokens are scored once against the codebook, ``S = Q C^T``
``(query tokens, C)``, and a candidate document's approximate Chamfer similarity is

    ``CI(Q, P) = sum_{q in Q} max_{c in codes(P)} S[q, c]``,

i.e. MaxSim with every document token moved to its centroid.  It needs no document vectors
and no dot products per candidate, only a gather and a max over ``|codes(P)|`` entries per
query token, so it cheaply cuts a long FDE shortlist down to the few documents worth the
exact rerank.  Used by :class:`ragkit.retrievers.Muvera` (``prune``).

Reference: Santhanam, Khattab, Potts, Zaharia, "PLAID: An Efficient Engine for Late
Interaction Retrieval", CIKM 2022 (centroid interaction and centroid pruning), arXiv 2205.09707.
"""

from __future__ import annotations

import hashlib
import logging
import warnings

import numpy as np

from ragkit._topk import group_positions
from ragkit.encoders.cache import UNREADABLE, load_npy, write_cache_files
from ragkit.errors import DataError
from ragkit.retrievers.fde import check_pair_rows, check_q_weights

_log = logging.getLogger("ragkit")
_CODEBOOK_FILES = ("codebook", "codes", "code_offsets")  # the offsets are written last: their presence = complete
_SAMPLE_PER_CENTROID = 32  # fit_codebook's default sample, per centroid
_MAX_ITER = 10  # fit_codebook's default Lloyd iterations

__all__ = ["spherical_kmeans", "fit_codebook", "assign_codes", "code_sets", "centroid_pairs", "build_codes",
           "damaged_codes"]


def spherical_kmeans(x: np.ndarray, n_clusters: int, *, seed: int = 0, n_init: int = 1, init: str = "k-means++",
                     max_iter: int = 300, threads: int | None = None, where: str | None = None,
                     what: str = "vectors") -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn ``KMeans`` over the rows of ``x``, its centroids scaled to unit length (nearest then means
    largest inner product for unit rows): ``(centroids (n_clusters, d) float32, labels (len(x),) int32)``.

    The k-means step of :func:`fit_codebook` and :class:`~ragkit.retrievers.knn_embed.KnnEmbed`.  ``threads``
    limits the OpenMP / BLAS threads (``threadpoolctl``; None: the library's own default).  Fewer distinct rows
    than ``n_clusters`` (duplicate documents) leave some clusters empty (never nearest): scikit-learn's
    ``ConvergenceWarning`` is silenced, and with ``where`` (the caller, e.g. ``"muvera.fit"``) a warning on the
    ``ragkit`` logger says it, naming the rows as ``what`` (``"token vectors"``)."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads), warnings.catch_warnings():
        # fewer distinct vectors than clusters (duplicate documents): scikit-learn's ConvergenceWarning, said below
        # in ragkit's words (the clusters it could not fill stay empty and are never used)
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=n_clusters, init=init, n_init=n_init, max_iter=max_iter, random_state=seed).fit(x)
    labels = km.labels_.astype(np.int32)
    used = len(np.unique(labels))
    if where is not None and used < n_clusters:
        _log.warning(f"{where}: k-means found {used} distinct cluster{'s' * (used != 1)} of the {n_clusters} "
                     f"asked (the {len(x)} {what} hold fewer distinct points: duplicate documents); the other "
                     f"{n_clusters - used} are empty and never used")
    c = km.cluster_centers_.astype(np.float32)
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12), labels


def fit_codebook(data: np.ndarray, n_centroids: int, seed: int = 0, sample: int | None = None,
                 max_iter: int = _MAX_ITER, where: str | None = None, threads: int | None = None) -> np.ndarray:
    """Spherical k-means codebook ``(n_centroids, d)`` float32 with unit rows.

    ``data``: ``(n_tokens, d)`` token vectors (any float dtype).  scikit-learn's ``KMeans``
    (random init, one run, ``max_iter`` Lloyd iterations) runs on ``sample`` rows drawn with
    ``seed`` (default ``min(n_tokens, 32 * n_centroids)``); the centroids are then normalised,
    so nearest means largest inner product for unit tokens.  Deterministic under ``seed``.
    ``threads``: OpenMP / BLAS threads for the k-means (None: the library's own default).
    Fewer distinct rows sampled than ``n_centroids`` (duplicate documents) leave some centroids
    empty (never nearest): scikit-learn's ``ConvergenceWarning`` is silenced, and with ``where``
    (the caller, e.g. ``"muvera.fit"``) a warning on the ``ragkit`` logger says it, as knn_embed's does
    (:func:`spherical_kmeans`, the k-means step of both).
    """
    n = len(data)
    if n_centroids < 1 or n_centroids > n:
        raise DataError(f"fit_codebook: n_centroids must be between 1 and the number of tokens ({n}), "
                        f"got {n_centroids}")
    m = min(n, sample or _SAMPLE_PER_CENTROID * n_centroids)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)
    x = np.asarray(data[rows], np.float32)
    return spherical_kmeans(x, n_centroids, seed=seed, init="random", max_iter=max_iter, threads=threads,
                            where=where, what="token vectors")[0]


def assign_codes(data: np.ndarray, centroids: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Nearest centroid (largest inner product) of every row of ``data``: ``(n,)`` int32.

    Blocked GEMM (``chunk`` rows at a time, float32) + argmax; ``data`` may be float16 and
    memory-mapped.
    """
    import torch

    c = torch.from_numpy(np.ascontiguousarray(centroids, np.float32))
    if len(data) and data.shape[1] != c.shape[1]:
        raise DataError(f"assign_codes: data has {data.shape[1]} dims, the codebook {c.shape[1]}")
    out = np.empty(len(data), np.int32)
    for lo in range(0, len(data), chunk):
        x = torch.from_numpy(np.asarray(data[lo:lo + chunk], np.float32))
        out[lo:lo + len(x)] = torch.argmax(x @ c.T, dim=1).numpy()
    return out


def code_sets(codes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct codes of each document: ``(flat codes, offsets (n_docs + 1,))``, sorted per document.

    ``codes`` ``(n_tokens,)`` and ragged ``offsets`` as in :class:`ragkit.encoders.tokens.TokenVectors`.
    Vectorised: one lexsort over (document, code), one comparison with the previous entry.
    """
    offsets = np.asarray(offsets, np.int64)
    doc = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    order = np.lexsort((codes, doc))
    d, c = doc[order], np.asarray(codes)[order]
    keep = np.ones(len(c), bool)
    keep[1:] = (d[1:] != d[:-1]) | (c[1:] != c[:-1])
    out_off = np.zeros(len(offsets), np.int64)
    np.cumsum(np.bincount(d[keep], minlength=len(offsets) - 1), out=out_off[1:])
    dtype = np.uint16 if len(c) == 0 or int(c.max()) < 2**16 else np.int32
    return c[keep].astype(dtype), out_off


def build_codes(data: np.ndarray, offsets: np.ndarray, n_centroids: int, seed: int = 0,
                cache_key: str | None = None, where: str = "muvera.fit") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codebook and per-document code sets of ragged token vectors: ``(codebook, code data, code offsets)``.

    :func:`fit_codebook` + :func:`assign_codes` + :func:`code_sets` (minutes for a million
    tokens).  With ``cache_key`` (the token encoder's key and the corpus texts' digests: same
    key, same tokens) the result is kept under ``$RAGKIT_CACHE/codebooks/`` and read back by
    the next fit; a stored result whose shapes do not match is rebuilt, and so is one whose values are
    damaged (:func:`damaged_codes`; a ``RuntimeWarning`` names the file).  Files are written through
    temporary names renamed into place, the offsets last.  ``where`` names the caller in
    :func:`fit_codebook`'s warning on duplicate documents.
    """
    import sklearn

    from ragkit.eval.beir import cache_dir

    folder = None
    if cache_key is not None:
        key = (f"{cache_key}|C={n_centroids}|seed={seed}|sample={_SAMPLE_PER_CENTROID}C|iter={_MAX_ITER}"
               f"|sklearn={sklearn.__version__}")
        folder = cache_dir() / "codebooks" / hashlib.sha1(key.encode()).hexdigest()[:16]
        try:
            cb, codes, off = (load_npy(folder / f"{n}.npy") for n in _CODEBOOK_FILES)
        except UNREADABLE:
            pass  # absent, unreadable, or a header claiming more than the file holds (an ArtifactError): build it
        else:
            if cb.shape == (n_centroids, data.shape[1]) and len(off) == len(offsets) and int(off[-1]) == len(codes):
                bad = damaged_codes(cb, codes, off)
                if bad is None:
                    return cb, codes, off
                warnings.warn(f"ragkit: damaged codebook cache in {folder}: {bad}; it is rebuilt",
                              RuntimeWarning, stacklevel=2)
    cb = fit_codebook(data, n_centroids, seed=seed, where=where)
    codes, off = code_sets(assign_codes(data, cb), offsets)
    if folder is not None:  # a cache that cannot be written warns; the codebook is used uncached
        write_cache_files(folder, [(f"{name}.npy", arr) for name, arr in zip(_CODEBOOK_FILES, (cb, codes, off))],
                          "the codebook is used but not cached. Set RAGKIT_CACHE to a writable folder")
    return cb, codes, off


def damaged_codes(cb: np.ndarray, codes: np.ndarray, off: np.ndarray) -> str | None:
    """What is wrong with a stored codebook whose shapes fit (``None``: nothing): codes that are no
    centroid of ``cb`` (a torch ``IndexError`` at search), offsets that do not start at 0 or decrease, a
    codebook that is not finite.  One pass of numpy reductions over the arrays."""
    if codes.dtype.kind not in "ui" or off.dtype.kind not in "ui":
        return f"codes.npy / code_offsets.npy hold {codes.dtype} / {off.dtype}, not integers"
    if len(codes) and (int(codes.min()) < 0 or int(codes.max()) >= len(cb)):
        return (f"codes.npy holds codes {int(codes.min())}..{int(codes.max())}, outside the {len(cb)} centroids "
                f"0..{len(cb) - 1}")
    if len(off) and (int(off[0]) != 0 or bool(np.any(np.diff(off.astype(np.int64)) < 0))):
        return "code_offsets.npy does not start at 0 or decreases"
    if not np.isfinite(cb).all():
        return "codebook.npy holds NaN or infinite values"
    return None


def centroid_pairs(q_data: np.ndarray, q_off: np.ndarray, centroids: np.ndarray, code_data: np.ndarray,
                   code_off: np.ndarray, rows: np.ndarray, q_weights: np.ndarray | None = None,
                   chunk_elems: int = 4_000_000) -> np.ndarray:
    """Centroid-interaction scores of query ``i`` against documents ``rows[i, j]``: ``(n_q, k)`` float32.

    ``q_data`` ``(query tokens, d)`` with ragged ``q_off``; ``centroids`` ``(C, d)``;
    ``code_data``/``code_off`` the documents' code sets (:func:`code_sets`); ``q_weights``
    per query token (ball carving; positive), default 1.  ``rows`` entries ``-1`` (padding) score ``-inf``,
    other negative rows are refused;
    a document without tokens scores ``-inf`` too, as in :func:`ragkit.retrievers.fde.chamfer_pairs`.

    Batched over chunks of queries of similar length (sorted; no loop over queries or
    documents).  Per chunk of ``n`` queries padded to ``T`` tokens (zero rows: they score 0
    against every centroid and add 0), one GEMM writes the score table ``C @ Q^T`` as
    ``(C * n, T)`` rows, row ``code * n + query``.  The chunk's pairs, sorted by code count
    (largest first), are reduced position by position: code ``j`` of every pair that has more
    than ``j`` codes gathers its row (``index_select``) into a ``(pairs, T)`` buffer and is folded
    into the running maximum, then the maxima are summed over ``T``.  No padding of code sets,
    and with the default ``chunk_elems`` (16 MB of float32) the table the gathers read and the
    running maximum stay in cache: on SciFact (300 queries x 300 candidates, 4,096 centroids) this
    is 1.6-1.8x faster than gathering every pair's padded set of a 64 MB chunk at once, then
    halving it.  The table's GEMM is numpy's (OpenBLAS): torch's (MKL) ran ~30% slower on the AMD
    EPYC machines measured (bench/RESULTS.md).  Everything runs in one float32 scratch allocated once.
    """
    import torch

    q_off = np.asarray(q_off, np.int64)
    code_off = np.asarray(code_off, np.int64)
    nq = len(q_off) - 1
    rows = check_pair_rows(rows, nq, len(code_off) - 1, "centroid_pairs")
    q_weights = check_q_weights(q_weights, len(q_data), "centroid_pairs")
    if len(q_data) and q_data.shape[1] != centroids.shape[1]:
        raise DataError(f"centroid_pairs: query tokens have {q_data.shape[1]} dims, the codebook {centroids.shape[1]}")
    n_c, dim = centroids.shape
    out = np.full(rows.shape, -np.inf, np.float32)
    n_codes = np.diff(code_off)
    per_pair = np.where(rows >= 0, n_codes[np.maximum(rows, 0)], -1)         # codes per pair; -1 = none
    # documents without tokens keep -inf, as in chamfer_pairs (no similarity; 0 ranked them above negatives)
    ok = per_pair > 0
    if nq == 0 or not ok.any():
        return out
    q = np.asarray(q_data, np.float32)
    if q_weights is not None:
        q = q * q_weights[:, None]                                            # w <c, q> = <c, w q>
    q_len = np.diff(q_off)
    pairs = ok.sum(1)
    order = np.argsort(q_len, kind="stable")                                  # similar lengths share a chunk
    chunks, need, lo = [], 0, 0
    while lo < nq:                                                            # chunk bounds, then one scratch
        hi, t, p = lo, 1, 0
        while hi < nq:
            t2, p2 = max(t, int(q_len[order[hi]])), p + int(pairs[order[hi]])
            if hi > lo and (hi + 1 - lo) * t2 * (n_c + dim) + 2 * p2 * t2 > chunk_elems:
                break
            t, p, hi = t2, p2, hi + 1
        chunks.append((lo, hi, t))
        need = max(need, (hi - lo) * t * (n_c + dim) + 2 * p * t)
        lo = hi
    scratch = torch.empty(need, dtype=torch.float32)
    cent = np.ascontiguousarray(centroids, np.float32)
    qt = torch.from_numpy(q)
    for lo, hi, t in chunks:
        sel = order[lo:hi]
        pi, pj = np.nonzero(ok[sel])
        if len(pi) == 0:                                                      # these queries have no candidate
            continue
        n = hi - lo
        lens = q_len[sel]
        qpad = scratch[:n * t * dim].view(n * t, dim)
        qpad.zero_()
        within = group_positions(lens)                                                 # token's position
        tok = np.repeat(q_off[sel], lens) + within                                     # row in q
        slot = np.repeat(np.arange(n) * t, lens) + within                              # row in qpad
        qpad[torch.from_numpy(slot)] = qt[torch.from_numpy(tok)]
        table = scratch[n * t * dim:n * t * (dim + n_c)].view(n_c, n * t)
        np.matmul(cent, qpad.numpy().T, out=table.numpy())                   # (C, n * T), OpenBLAS
        table = table.view(n_c * n, t)                                        # row = code * n + query
        docs = rows[sel][pi, pj]
        cnt = n_codes[docs]
        by = np.argsort(-cnt, kind="stable")                                  # pairs by code count, largest first
        pi, pj, docs, cnt = pi[by], pj[by], docs[by], cnt[by]
        m = len(docs)
        alive = np.searchsorted(-cnt, -np.arange(int(cnt[0])), side="left")   # pairs with more than j codes
        start = np.zeros(len(alive) + 1, np.int64)
        np.cumsum(alive, out=start[1:])
        pair = group_positions(alive)                                         # position-major: code j of pair
        code = np.asarray(code_data[code_off[docs][pair] + np.repeat(np.arange(len(alive)), alive)], np.int64)
        look = torch.from_numpy(code * n + pi[pair])                          # table row of each (pair, code)
        rest = scratch[n * t * (dim + n_c):]
        acc, buf = rest[:m * t].view(m, t), rest[m * t:2 * m * t].view(m, t)
        torch.index_select(table, 0, look[:m], out=acc)
        for j, a in enumerate(alive[1:].tolist(), start=1):                   # code positions, not pairs
            torch.index_select(table, 0, look[start[j]:start[j + 1]], out=buf[:a])
            torch.maximum(acc[:a], buf[:a], out=acc[:a])
        out[sel[pi], pj] = acc.sum(1).numpy()
    return out
