"""Hubness of a run: k-occurrence N_k over all documents, its skewness, anti-hubs and top hubs.

Radovanović, Nanopoulos, Ivanović, "Hubs in Space: Popular Nearest Neighbors in High-Dimensional
Data", JMLR 11, 2010 (the k-occurrence ``N_k`` and its skewness); used as the hubness measure
of QB-Norm (Bogolin et al., CVPR 2022) and DBNorm (Wang et al., EMNLP 2023).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from ragkit.errors import DataError
from ragkit.eval.diversity import padded_rows
from ragkit.run import Run
from ragkit.types import Ranking

__all__ = ["k_occurrence", "skewness", "hubness", "HubnessReport", "random_skewness"]


def _rankings(run: Run | Sequence[Ranking]) -> list[Ranking]:
    if isinstance(run, Run):
        if run.rankings is None:
            raise DataError("hubness needs row-number rankings; this Run was read from a file (no rankings)")
        return list(run.rankings)
    return list(run)


def k_occurrence(run: Run | Sequence[Ranking], n_docs: int, k: int = 10) -> np.ndarray:
    """``N_k(g)``: the number of queries whose top-``k`` contains document ``g``; shape ``(n_docs,)`` int64.

    Every document of the corpus is counted, including those never retrieved (zeros).
    """
    return _k_occurrence(run, n_docs, k, "k_occurrence")


def _count(value: object, name: str, least: int, caller: str, what: str) -> None:
    """Refuse ``value`` unless it is an integer >= ``least`` (``True`` and ``2.5`` too: a bool counted as 1,
    a float failed as a slice index), naming ``caller``'s argument ``name`` and ``what`` it counts."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise DataError(f"{caller}: {name} must be an integer >= {least} ({what}), got {value!r}")


def _k_occurrence(run: Run | Sequence[Ranking], n_docs: int, k: int, caller: str) -> np.ndarray:
    """:func:`k_occurrence`, its errors said as ``caller``'s."""
    _count(k, "k", 1, caller, "the cut-off")
    _count(n_docs, "n_docs", 0, caller, "the corpus size")
    _rankings(run)  # (a Run without rankings refused in hubness' words)
    # a top-k listing a document twice would count its query twice
    padded, valid = padded_rows(run, k, caller, "a copy would count its query twice in N_k")
    rows = padded[valid]
    if len(rows) and (rows.max() >= n_docs or rows.min() < 0):
        bad = int(rows[(rows < 0) | (rows >= n_docs)][0])
        raise DataError(f"{caller}: row {bad} outside a corpus of {n_docs} documents; expected rows in "
                        f"[0, {n_docs})")
    return np.bincount(rows, minlength=n_docs).astype(np.int64)


def skewness(x: np.ndarray) -> float:
    """Population skewness ``E[(x - mu)^3] / sigma^3`` (0 for a constant vector)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return 0.0
    if not np.isfinite(x).all():  # NaN made sd NaN, and "sd > 0" False: 0.0, a hub-free verdict
        raise DataError(f"skewness: expected finite values, got {int((~np.isfinite(x)).sum())} NaN or inf of {x.size}")
    d = x - x.mean()
    sd = np.sqrt(np.mean(d * d))
    return float(np.mean(d**3) / sd**3) if sd > 0 else 0.0


def random_skewness(n_queries: int, n_docs: int, k: int = 10, repeats: int = 20, seed: int = 0) -> float:
    """Skewness of ``N_k`` when every query's top-``k`` is ``k`` documents drawn uniformly at random.

    The floor that sampling alone puts under a measured skewness: with few queries, ``N_k`` is mostly
    zeros and ones, and even perfectly hub-free rankings give a skewed distribution (about
    ``1 / sqrt(n_queries * k / n_docs)``, the skewness of a Poisson count).  Compare a run's skewness
    with this level before reading its hubness.  Mean over ``repeats`` seeded simulations, batched over the
    queries: each query's top-``k`` is a uniform ``k``-subset drawn by Floyd's algorithm (:func:`_floyd_counts`,
    ``k`` vectorised steps of ``O(n_queries * k)``, nothing ``n_docs`` wide per query), or, when ``k`` is close
    to ``n_docs``, the ``n_docs - k`` documents it leaves out drawn so; a ``min(k, n_docs - k)`` too large for
    that (its square above ``4 * n_docs``) takes the ``k`` smallest of a ``(chunk, n_docs)`` random matrix
    (``chunk * n_docs`` about 4M).
    """
    _count(n_queries, "n_queries", 1, "random_skewness", "how many queries")
    _count(n_docs, "n_docs", 1, "random_skewness", "the corpus size")
    _count(k, "k", 1, "random_skewness", "the cut-off")
    _count(repeats, "repeats", 1, "random_skewness", "how many simulations")
    if k > n_docs:
        raise DataError(f"random_skewness: need k <= n_docs (a top-k of distinct documents), got k={k}, "
                        f"n_docs={n_docs}")
    rng = np.random.default_rng(seed)
    m = min(k, n_docs - k)
    out = []
    for _ in range(repeats):
        if m * m <= 4 * n_docs:
            counts = _floyd_counts(rng, n_queries, n_docs, m)
            if m < k:  # each query's top-k: every document but the m left out
                counts = n_queries - counts
        else:
            counts = _topk_counts(rng, n_queries, n_docs, k)
        out.append(skewness(counts))
    return float(np.mean(out))


def _floyd_counts(rng: np.random.Generator, n_queries: int, n_docs: int, m: int) -> np.ndarray:
    """``(n_docs,)`` int64: in how many of ``n_queries`` uniform random ``m``-subsets of ``range(n_docs)`` each
    document lies.  Floyd's algorithm, vectorised over the queries: for ``j`` in ``n_docs - m .. n_docs - 1``,
    draw ``t`` uniform in ``[0, j]`` and take ``t``, or ``j`` when ``t`` was taken already (every ``m``-subset
    equally likely); queries in chunks of about 4M / ``m`` draws."""
    counts = np.zeros(n_docs, np.int64)
    if m == 0:
        return counts
    chunk = max(1, (1 << 22) // m)
    for a in range(0, n_queries, chunk):
        nq = min(chunk, n_queries - a)
        chosen = np.empty((nq, m), np.int64)
        for i, j in enumerate(range(n_docs - m, n_docs)):
            t = rng.integers(0, j + 1, nq)
            taken = (chosen[:, :i] == t[:, None]).any(axis=1)
            chosen[:, i] = np.where(taken, j, t)
        counts += np.bincount(chosen.ravel(), minlength=n_docs)
    return counts


def _topk_counts(rng: np.random.Generator, n_queries: int, n_docs: int, k: int) -> np.ndarray:
    """:func:`_floyd_counts` for a ``k`` far from 0 and from ``n_docs`` (Floyd's ``k**2`` steps per query would
    cost more than ``n_docs``): each query's ``k`` smallest of ``n_docs`` uniform draws, a ``(chunk, n_docs)``
    matrix at a time."""
    import torch  # topk of a few per row: 4x numpy's argpartition, one thread or two

    counts = np.zeros(n_docs, np.int64)
    chunk = max(1, (1 << 22) // n_docs)
    for a in range(0, n_queries, chunk):
        r = rng.random((min(chunk, n_queries - a), n_docs))
        # the k smallest draws of each row (distinct floats: one set, whichever way it is found)
        top = torch.topk(torch.from_numpy(r), k, dim=1, largest=False, sorted=False)[1].numpy()
        counts += np.bincount(top.ravel(), minlength=n_docs)
    return counts


@dataclass
class HubnessReport:
    """Hubness measures of one run.

    Attributes
    ----------
    k : int
        The cut-off the k-occurrences were counted at (a document occurs for a query when it is in
        that query's top ``k``).
    skewness : float
        Skewness of N_k over **all** documents (zeros included) -- the number ragkit reports.
    skewness_nonzero : float
        Skewness over documents retrieved at least once (what the DBNorm reference code computes).
    never_retrieved : float
        Share of documents in no query's top-k ("anti-hubs").
    top1pct_share : float
        Share of all top-k slots taken by the 1% most frequent documents.
    max_occurrence : int
        The largest ``N_k``: how many queries' top-k hold the most frequent document.
    top_hubs : list of (int, int)
        ``(doc row, N_k)`` of the most frequent documents, most frequent first (ties by lower row), at most
        :func:`hubness`'s ``top`` of them; documents never retrieved are left out.
    """

    k: int
    skewness: float
    skewness_nonzero: float
    never_retrieved: float
    top1pct_share: float
    max_occurrence: int
    top_hubs: list[tuple[int, int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The fields by name (``top_hubs`` a list of ``(doc row, N_k)`` pairs), e.g. for a JSON report."""
        return asdict(self)


def hubness(run: Run | Sequence[Ranking], n_docs: int, k: int = 10, top: int = 10) -> HubnessReport:
    """Hubness report of a run over a corpus of ``n_docs`` documents.

    Radovanović, Nanopoulos, Ivanović, "Hubs in Space: Popular Nearest Neighbors in High-Dimensional Data",
    JMLR 11, 2010: hubness is the right skew of the k-occurrence distribution ``N_k`` (how many queries'
    top-k hold each document), a few "hubs" in many top-k lists and many "anti-hubs" in none.

    Parameters
    ----------
    run : Run or list of Ranking
        The rankings (row numbers into the corpus): a pipeline's ``search`` result, not a run read from a file.
    n_docs : int
        The corpus size; every document counts, the never retrieved ones as ``N_k = 0``.
    k : int, default 10
        The cut-off: a document occurs for a query when it is in that query's top ``k`` (>= 1).
    top : int, default 10
        How many of the most frequent documents :attr:`HubnessReport.top_hubs` lists (>= 0).

    Returns
    -------
    HubnessReport
        See :class:`HubnessReport`; compare its ``skewness`` with :func:`random_skewness` of the same shape.
    """
    _count(top, "top", 0, "hubness", "how many hubs to list")  # (top=-1 sliced all but one)
    nk = _k_occurrence(run, n_docs, k, "hubness")
    total = nk.sum()
    srt = np.sort(nk)[::-1]
    n1 = max(1, int(np.ceil(0.01 * n_docs)))
    order = np.lexsort((np.arange(n_docs), -nk))[:top]
    return HubnessReport(
        k=k, skewness=skewness(nk), skewness_nonzero=skewness(nk[nk > 0]),
        never_retrieved=float(np.mean(nk == 0)) if n_docs else 0.0,
        top1pct_share=float(srt[:n1].sum() / total) if total else 0.0,
        max_occurrence=int(srt[0]) if n_docs else 0,
        top_hubs=[(int(g), int(nk[g])) for g in order if nk[g] > 0],
    )
