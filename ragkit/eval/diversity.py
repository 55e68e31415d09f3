"""Diversity measures for rankings: intra-list diversity, cluster coverage, near-duplicates, alpha-nDCG, S-recall.

All vector-based measures take the rankings' row numbers and the corpus's document vectors ``(N, d)``
(cosines: each gathered row is scaled to unit length first, so any scale gives the same values; a zero
vector has cosine 0 with every document), return one value per query (``float64`` array, ``nan`` for
an empty ranking where the measure is undefined) and are batched with numpy (no loop over document pairs).

* ILD@k (Ziegler et al., WWW 2005): ``1 - mean_{i<j} cos(d_i, d_j)`` over the top-k.
* distinct clusters@k and the entropy (nats) of the cluster histogram of the top-k.
* near-duplicate rate@k: share of top-k pairs with cosine above a threshold (0.95).
* alpha-nDCG@k (Clarke et al., SIGIR 2008) and S-recall@k (Zhai et al., SIGIR 2003) when subtopic
  labels exist: ``{query_id: {doc_id: [subtopic, ...]}}``, checked as ``evaluate`` checks qrels (ids
  written as strings, ``1`` as ``"1"``; each document's labels a list, tuple or set, never one string).
  These two read document ids, so they take a run as ``evaluate`` does: a ``Run`` or
  ``{query_id: {doc_id: score}}``.
"""

from __future__ import annotations

from itertools import chain, islice, repeat
from typing import Any, Collection, Hashable, Mapping, NamedTuple, Sequence

import numpy as np

from ragkit._checks import _kind
from ragkit._flat import first_positions, pad_rows
from ragkit.errors import DataError
from ragkit.eval.metrics import _flat_heads, check_run_mapping
from ragkit.metadata import hashable
from ragkit.run import Run, _check_unique, check_no_nan
from ragkit.types import Ranking, ids_once

__all__ = [
    "intra_list_diversity", "distinct_clusters", "cluster_entropy", "near_duplicate_rate",
    "alpha_ndcg", "subtopic_recall", "padded_rows", "check_subtopics",
]

#: ``{query_id: {doc_id: [subtopic, ...]}}`` (ids other than strings are written as strings: :func:`check_subtopics`)
Subtopics = Mapping[Any, Mapping[Any, Collection[Hashable]]]


def _rankings(rankings: Run | Sequence[Ranking]) -> Sequence[Ranking]:
    if isinstance(rankings, Run):
        if rankings.rankings is None:
            raise DataError("diversity: this Run has no row-number rankings (read from a file?); pass rankings")
        return rankings.rankings
    return rankings


def padded_rows(rankings: Run | Sequence[Ranking], k: int, who: str = "diversity",
                why: str = "a copy would count as a second, identical document") -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows of each ranking as ``(n_q, k)`` int64 (0 where padded) and a validity mask.

    A ranking whose top-``k`` lists one document (row) twice is a :class:`DataError` naming the query
    (its id for a :class:`Run`, else its position) and both ranks, as :func:`alpha_ndcg` and ``evaluate``
    refuse a run listing a document twice: the copy would count as a pair of cosine 1 (ILD) or a second
    document of its cluster.  Errors are said as ``who``'s, ``why`` telling what a copy would do there
    (:func:`~ragkit.eval.hubness.k_occurrence`: count its query twice)."""
    _check_k(k, who)
    rows, valid = pad_rows(_rankings(rankings), k)
    _refuse_repeats(rankings, rows, valid, who, why)
    return rows, valid


def _check_k(k: Any, who: str) -> None:
    """Refuse a cut-off ``k`` that is no integer >= 1 (``2.5`` failed as a slice index, ``True`` counted as 1),
    said as ``who``'s."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"{who}: k must be >= 1 and an integer (the cut-off), got {k!r}")


def _check_vectors(vectors: Any) -> np.ndarray:
    """``vectors`` as an array, refused unless it is 2-d ``(N, d)``, one row per corpus document."""
    v = np.asarray(vectors)
    if v.ndim != 2:
        raise DataError(f"diversity: vectors of shape {v.shape}; expected a 2-d array (n_docs, dim), one vector per "
                        "corpus document (a single vector is vectors[None])")
    return v


def _refuse_repeats(rankings: Run | Sequence[Ranking], rows: np.ndarray, valid: np.ndarray, who: str = "diversity",
                    why: str = "a copy would count as a second, identical document") -> None:
    """A :class:`DataError` for the first ranking whose valid ``rows`` hold one row twice (vectorised:
    :func:`~ragkit._flat.first_positions`), naming its smallest repeated row and that row's first two
    ranks, said as ``who``'s (``why``: what the copy would do there).  Negative rows are left to the range check
    that follows."""
    firsts = first_positions(rows, valid)
    again = firsts != np.arange(rows.shape[1])
    if not again.any():
        return
    i = int(np.flatnonzero(again.any(axis=1))[0])
    js = np.flatnonzero(again[i])  # the repeats of ranking i, in rank order
    second = int(js[np.argmin(rows[i, js])])  # the smallest repeated row's second rank (argmin: the first)
    first, row = int(firsts[i, second]), int(rows[i, second])
    ids = rankings.query_ids if isinstance(rankings, Run) else None
    where = f"query {ids[i]!r}" if ids is not None else f"ranking {i}"
    raise DataError(f"{who}: {where} lists row {row} twice (ranks {first + 1} and {second + 1}); "
                    f"expected each document at most once per ranking ({why}), as alpha_ndcg and evaluate require")


def _bad_row(rankings: Run | Sequence[Ranking], rows: np.ndarray, valid: np.ndarray, n: int) -> str | None:
    """Where the first row number outside ``0..n-1`` is (``"row -1 (query 'q', rank 1)"``), else None."""
    if not valid.any():
        return None
    live = rows[valid]
    if live.min() >= 0 and live.max() < n:
        return None
    i, j = np.argwhere(valid & ((rows < 0) | (rows >= n)))[0]
    ids = rankings.query_ids if isinstance(rankings, Run) else None
    where = f"query {ids[i]!r}" if ids is not None else f"ranking {int(i)}"
    return f"row {int(rows[i, j])} ({where}, rank {int(j) + 1})"


def _refuse_nonfinite(rankings: Run | Sequence[Ranking], rows: np.ndarray, suspect: np.ndarray,
                      vectors: np.ndarray) -> None:
    """A :class:`DataError` naming the first gathered document whose vector holds NaN or inf.

    ``suspect`` ``(n_q, k)`` marks the ranked documents whose float32 norm is not finite (a NaN or inf entry,
    or a finite float64 row whose float32 squares overflow); their rows are read again from ``vectors`` in the
    given dtype, so that only a vector that is itself not finite is refused (no cosine with it is a number:
    ILD would be NaN and the near-duplicate rate would count it nobody's duplicate)."""
    if not suspect.any():
        return
    qs, ranks = np.nonzero(suspect)  # row-major: the first query, then its first rank
    src = np.asarray(vectors[rows[qs, ranks]])
    bad = ~np.isfinite(src).all(axis=1) if src.dtype.kind in "fc" else np.zeros(len(src), bool)
    if not bad.any():
        return
    j = int(np.argmax(bad))
    i, r, row = int(qs[j]), int(ranks[j]), int(rows[qs[j], ranks[j]])
    ids = rankings.query_ids if isinstance(rankings, Run) else None
    where = f"query {ids[i]!r}" if ids is not None else f"ranking {i}"
    what = "NaN" if np.isnan(src[j]).any() else "inf"
    raise DataError(f"diversity: the document vector of row {row} ({where}, rank {r + 1}) holds {what}; expected "
                    "finite vectors (no cosine with it is a number)")


def _pair_cos(rankings: Run | Sequence[Ranking], vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise cosines of each ranking's top-``k``: ``(n_q, k, k)`` float32 and the ``(n_q, k, k)`` bool
    mask of the pairs ``i < j`` of real (not padded) documents.  ``vectors`` need not be unit rows: the
    gathered rows are normalised here (a zero row stays zero, so its cosines are 0)."""
    _check_k(k, "diversity")
    v = _check_vectors(vectors)
    rows, valid = padded_rows(rankings, k)
    bad = _bad_row(rankings, rows, valid, len(v))
    if bad is not None:
        raise DataError(f"diversity: the rankings hold {bad}, outside the {len(v)} document vectors given; "
                        f"expected row numbers 0..{len(v) - 1}")
    import torch  # batched GEMM: torch.bmm runs at BLAS speed; numpy's einsum is 2-5x slower, its stacked
    # matmul erratic on a busy machine (one threaded gemm call per query)

    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        gathered = np.ascontiguousarray(v[rows], np.float32)  # (n_q, k, dim): the gather is the one copy
        norms = np.linalg.norm(gathered, axis=2, keepdims=True)
        if not np.all(np.abs(norms - 1) <= 1e-4):  # cosines whatever the scale (unit rows pass unchanged)
            _refuse_nonfinite(rankings, rows, valid & ~np.isfinite(norms[..., 0]), v)
            # a float32 norm is exact only for norms ~1e-18..1e19 (its squares over/underflow outside), and
            # the float32 cast itself loses float64 rows beyond ~1e38 or below ~1e-38: the rows whose norm is
            # outside 1e-15..1e15 (none at ordinary scales) are gathered again from ``vectors`` and scaled in
            # float64 by their largest |entry| before the cast.  A zero row stays zero: cosine 0
            odd = valid & ~((norms[..., 0] > 1e-15) & (norms[..., 0] < 1e15))
            if odd.any():
                src = np.asarray(v[rows[odd]], np.float64)  # (n_odd, dim)
                peak = np.abs(src).max(axis=1, keepdims=True) if src.shape[1] else np.zeros((len(src), 1))
                src /= np.where(peak > 0, peak, 1.0)
                gathered[odd] = src
                norms[odd] = np.linalg.norm(gathered[odd], axis=1, keepdims=True)
            np.divide(gathered, np.maximum(norms, 1e-30), out=gathered)
    d = torch.from_numpy(gathered)
    with torch.inference_mode():
        g = torch.bmm(d, d.transpose(1, 2)).numpy()  # (n_q, k, k) float32 cosines
    pair = valid[:, :, None] & valid[:, None, :] & np.triu(np.ones((k, k), bool), 1)[None]
    return g, pair


def intra_list_diversity(rankings: Run | Sequence[Ranking], vectors: np.ndarray, k: int = 10) -> np.ndarray:
    """ILD@k per query: ``1 - mean pairwise cosine`` of the top-k (nan with fewer than 2 documents).

    Intra-list diversity of Ziegler, McNee, Konstan & Lausen, "Improving Recommendation Lists Through
    Topic Diversification", WWW 2005 (there with a taxonomy similarity; here the cosine of document
    vectors).  Returns ``(n_queries,)`` float64.

    Cosines of the rows of ``vectors`` ``(N, d)`` at any scale; a zero vector counts as orthogonal to
    every document (cosine 0)."""
    g, pair = _pair_cos(rankings, vectors, k)
    n = pair.sum((1, 2))
    tot = np.where(pair, g, 0).sum((1, 2), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, 1.0 - tot / np.maximum(n, 1), np.nan)


def near_duplicate_rate(rankings: Run | Sequence[Ranking], vectors: np.ndarray, k: int = 10,
                        threshold: float = 0.95) -> np.ndarray:
    """Share of top-k pairs with cosine > ``threshold`` (nan with fewer than 2 documents).

    Cosines of the rows of ``vectors`` ``(N, d)`` at any scale; a zero vector is nobody's near-duplicate
    (cosine 0).  ``threshold``: a number in ``[-1, 1]`` (a cosine; above 1 no pair would ever count), else a
    :class:`DataError`."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) or \
            not -1 <= threshold <= 1:
        raise DataError(f"near_duplicate_rate: threshold must be a cosine in [-1, 1], got {threshold!r} (pairs of "
                        "cosine above it count as near-duplicates)")
    g, pair = _pair_cos(rankings, vectors, k)
    n = pair.sum((1, 2))
    dup = (pair & (g > threshold)).sum((1, 2))
    return np.where(n > 0, dup / np.maximum(n, 1), np.nan)


def _cluster_ids(labels: Any) -> tuple[np.ndarray, int]:
    """``labels`` (one cluster label per corpus document) as ``(n_docs,)`` int64 ids ``0..c-1`` and ``c``, the
    number of distinct labels: two documents share an id exactly when their labels are equal.

    Labels are only compared, never read as numbers, so any hashable values do: integers (negative, or past
    int64, alike), strings, bools, other hashable objects.  A float array is read only when its values are
    whole numbers (``1.0`` is the label ``1``): ``0.2`` or NaN there is a :class:`DataError` naming the dtype
    and the value, as is a label that is not hashable, a missing value among object labels (NaN, NaT, ``pd.NA``:
    ``None`` is a label like any other), a complex or other dtype, or an array that is not 1-d (a Python list or
    tuple holds one label per document, so ``[("bio", 1), ("chem", 2)]`` is two tuple labels).  Integer, bool and
    string arrays are mapped by ``np.unique`` (vectorised); object labels (and a Python list numpy would have
    coerced to float or to strings: ``2**63``, ``[1, "1"]``) by one dict pass in first-seen order."""
    try:
        arr: np.ndarray | None = np.asarray(labels)
    except ValueError:  # a ragged list: one object per document, refused below when not hashable
        arr = None
    if (arr is None or arr.ndim != 1) and isinstance(labels, (list, tuple)):
        # a Python list is one label per document, whatever each is: numpy reads equal-length tuples
        # [("bio", 1), ("chem", 2)] as a 2-d array, so the object array is filled item by item (tuples stay tuples)
        lab = np.empty(len(labels), dtype=object)
        for i, x in enumerate(labels):
            lab[i] = x
    else:
        lab = np.asarray(labels, dtype=object) if arr is None else arr
    if lab.ndim != 1:
        raise DataError(f"diversity: labels of shape {lab.shape}; expected a 1-d array, one cluster label per "
                        "corpus document")
    kind = lab.dtype.kind
    if kind == "f":
        bad = ~np.isfinite(lab)
        bad[~bad] = lab[~bad] != np.round(lab[~bad])
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"diversity: labels are {lab.dtype} and document {i}'s is {lab[i].item()!r}, not a "
                            "whole number; expected cluster labels (integers, strings or other hashable values): "
                            "a float array is read only when its values are whole numbers, which are not rounded")
    elif kind not in "biuUSO":
        raise DataError(f"diversity: labels of dtype {lab.dtype}; expected cluster labels: integers, strings or "
                        "other hashable values (floats only when whole numbers)")
    if kind == "O" or (kind in "fUS" and not isinstance(labels, np.ndarray)):
        # numpy writes a list of ints past int64 as floats (2**63 and 2**63 + 1 as one value) and [1, "1"] as
        # strings (one label): a list is read as the Python values it holds
        items = lab if kind == "O" else np.asarray(labels, dtype=object)
        ids: dict[Any, int] = {}
        try:
            inverse = np.fromiter((ids.setdefault(x, len(ids)) for x in items), np.int64, len(items))
        except TypeError:
            bad = next(x for x in items if not hashable(x))  # (a tuple holding a list is a Hashable that is not)
            raise DataError(f"diversity: labels hold {_kind(bad)}, which is not hashable; expected cluster labels "
                            "(integers, strings or other hashable values), one per corpus document") from None
        # (only the distinct labels are looked at)
        nan = next((x for x in ids if _not_self_equal(x)), _NO_LABEL)
        if nan is not _NO_LABEL:
            raise DataError(f"diversity: labels hold {nan!r}; expected cluster labels, each equal to itself "
                            "(a missing value, NaN, NaT or pd.NA, is no label: give a missing document a label of "
                            "its own)")
        return inverse, len(ids)
    uniq, inverse = np.unique(lab, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64, copy=False), len(uniq)


_NO_LABEL = object()  # (a sentinel: None is a label like any other)


def _not_self_equal(x: Any) -> bool:
    """Whether ``x != x`` holds (NaN, NaT) or has no truth value (``pd.NA``, whose ``!=`` is ``pd.NA``): a
    missing value, which no document's label can equal."""
    try:
        return bool(x != x)
    except (TypeError, ValueError):
        return True


def _cluster_hist(rankings: Run | Sequence[Ranking], labels: Any, k: int) -> np.ndarray:
    """``(n_q, c)`` int64 counts of each cluster among each ranking's top-``k`` (``c``: distinct labels)."""
    rows, valid = padded_rows(rankings, k)
    lab, c = _cluster_ids(labels)
    if valid.any() and rows[valid].min() < 0:
        raise DataError(f"diversity: the rankings hold {_bad_row(rankings, rows, valid, len(lab))}; expected row "
                        f"numbers 0..{len(lab) - 1} into the {len(lab)} cluster labels given")
    if valid.any() and rows[valid].max() >= len(lab):
        raise DataError(f"diversity: the rankings hold row {int(rows[valid].max())} but labels cover {len(lab)} "
                        "documents; expected one cluster label per corpus document")
    n_q = len(rows)
    flat = np.nonzero(valid)[0] * c + lab[rows[valid]]  # padding never indexes labels
    return np.bincount(flat, minlength=n_q * c).reshape(n_q, c)


def distinct_clusters(rankings: Run | Sequence[Ranking], labels: np.ndarray | Sequence[Hashable],
                      k: int = 10) -> np.ndarray:
    """Number of distinct clusters (``labels[row]``) among the top-k, per query.

    ``labels``: ``(n_docs,)`` cluster labels, one per corpus row (the rows the rankings hold): integers
    (any, ``-1`` too: just another cluster), strings or other hashable values, compared only for equality;
    a float array only of whole numbers (``0.2`` or NaN is a :class:`~ragkit.errors.DataError`, never
    truncated).  Returns ``(n_q,)`` float64 counts, in ``[0, k]`` (0 for an empty list)."""
    return (_cluster_hist(rankings, labels, k) > 0).sum(1).astype(np.float64)


def cluster_entropy(rankings: Run | Sequence[Ranking], labels: np.ndarray | Sequence[Hashable],
                    k: int = 10) -> np.ndarray:
    """Entropy (nats) of the cluster histogram of the top-k, per query (0 for one cluster).

    ``labels``: ``(n_docs,)`` cluster labels, one per corpus row, as :func:`distinct_clusters` takes them
    (integers, strings or other hashable values; floats only when whole numbers).  Returns ``(n_q,)``
    float64, in ``[0, log(k)]``; nan for an empty list."""
    h = _cluster_hist(rankings, labels, k).astype(np.float64)
    p = h / np.maximum(h.sum(1, keepdims=True), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(1)
    return np.where(h.sum(1) > 0, ent + 0.0, np.nan)  # an empty list has no histogram: nan, as documented


#: What :func:`alpha_ndcg` and :func:`subtopic_recall` take as a run (as ``evaluate`` does)
RunLike = Run | Mapping[str, Mapping[str, float]]


def _as_run(run: Any, measure: str) -> Run:
    """``run`` as a :class:`Run`: a Run as given, a mapping ``{query_id: {doc_id: score}}`` (what ``evaluate``
    takes) through :meth:`Run.from_dict` (trec_eval's order; ids written as strings).  Anything else, a
    query's entry that is not a mapping, or a score that is NaN or no number, is a :class:`DataError`."""
    if isinstance(run, Run):
        return run
    rankings = isinstance(run, (list, tuple)) and bool(run) and all(isinstance(r, Ranking) for r in run)
    check_run_mapping(run, measure, got=(f"a list of {len(run)} Ranking{'s' * (len(run) != 1)}, whose row numbers "
                                         "name no document id (subtopics name documents by id): pass the Run search "
                                         "returns, or Run.from_rankings(query_ids, rankings, corpus.ids)")
                      if rankings else None)
    # as evaluate reads a run: scores real numbers, no NaN (check_scores, check_no_nan), ids written as qrels' are
    # (1.0 and "1" alike), in trec_eval's order
    return Run._from_mapping(run, measure)


def _doc_lists(run: Any, k: int, measure: str) -> dict[str, list[str]]:
    """Each query's top ``k`` document ids (strings) in trec_eval's order, the order :func:`~ragkit.eval.evaluate`
    scores (score descending at float32, ties by document id descending), whatever order a :class:`Run` stores
    its ties in; a mapping is read by :meth:`Run.from_dict`, which puts it in that order.  A Run listing a
    document twice for a query, or giving one the score NaN, is a :class:`DataError` naming the query."""
    _check_k(k, measure)
    if not isinstance(run, Run):  # (from_dict: trec_eval's order already, each document once)
        return {q: docs[:k].tolist() for q, docs, _ in _as_run(run, measure)}
    for q, docs, _ in run:  # a document listed twice would gain twice (alpha-nDCG above 1): refused as evaluate does
        _check_unique(q, docs, measure)
    lens = np.fromiter(map(len, run.doc_ids), np.int64, len(run))
    ids = np.empty(int(lens.sum()), dtype=object)
    ids[:] = [d if type(d) is str else str(d) for d in chain.from_iterable(d.tolist() for d in run.doc_ids)]
    s64 = np.concatenate([np.asarray(s, np.float64) for s in run.scores]) if len(run) else np.zeros(0)
    check_no_nan(run.query_ids, lens, ids, s64, measure)  # (NaN has no order)
    # one partition and one sort for all queries; k beyond any list keeps every document
    lens, ids, _ = _flat_heads(lens, ids, s64, int(min(k, max(int(lens.max(initial=0)), 1))))
    ends = np.cumsum(lens).tolist()
    flat = ids.tolist()
    return {q: flat[a:min(b, a + k)] for q, a, b in zip(run.query_ids, [0, *ends[:-1]], ends)}


def check_subtopics(subtopics: Any, who: str) -> dict[str, dict[str, list[Hashable]]]:
    """``subtopics`` as ``{query_id: {doc_id: [label, ...]}}`` with string ids, converted as
    :func:`~ragkit.types.check_qrels` converts qrels (``1`` -> ``"1"``, so that they meet the run's ids)
    and each document's labels a list without repeats (first occurrence kept).

    A :class:`DataError` from ``who`` for anything else, before any scoring: ``subtopics`` or a query's
    entry not a mapping; a document's labels not a list, tuple or set (one string, whose characters would
    be the labels; ``None``; a number), naming the query and document; a label that is not hashable;
    two ids that name one query or document once written as strings.

    Batched: the common form (dicts keyed by strings, labels in lists or tuples) is checked and converted by
    C-level passes over all documents at once (:func:`_plain_subtopics`); anything else goes through the
    per-document checks (:func:`_check_subtopics_each`), which name the first problem."""
    plain = _plain_subtopics(subtopics, who)
    if plain is None:
        return _check_subtopics_each(subtopics, who)
    # each document's labels as a new list, once each (first occurrence first): copies where no label repeats
    once = bool(plain.keep.all())
    pairs = zip(plain.doc_ids, map(list, plain.given if once else map(dict.fromkeys, plain.given)))
    return {q: dict(islice(pairs, n)) for q, n in zip(plain.query_ids, plain.n_docs.tolist())}


class _SubtopicTable(NamedTuple):
    """Checked subtopics, flat: ``query_ids`` (as strings), ``n_docs[i]`` judged documents of query ``i``,
    ``doc_ids`` (str) of all queries one after another and ``given``, each one's labels as given (a list or
    tuple); ``n_labels``, ``label_start`` (int64, per document) place each document's labels in ``labels``, the
    ids (int64) of all the labels one after another (equal labels one id, as a dict keys them: ``1``, ``1.0`` and
    ``True`` alike), and ``keep`` marks each document's first occurrence of a label (a repeat counts once)."""

    query_ids: list[str]
    n_docs: np.ndarray
    doc_ids: list[str]
    given: list[Sequence[Hashable]]
    n_labels: np.ndarray
    label_start: np.ndarray
    labels: np.ndarray
    keep: np.ndarray


def _plain_subtopics(subtopics: Any, who: str) -> _SubtopicTable | None:
    """``subtopics`` as a :class:`_SubtopicTable` when it has the plain form (every query's entry a ``dict``
    keyed by strings, every document's labels a list or tuple of hashable labels), checked and converted with
    C-level passes over all the documents (``map``, ``chain``, one dict of all the distinct labels: no Python
    loop per document); None for any other form, which :func:`_check_subtopics_each` checks one document at a
    time (it raises the first problem's error, or converts an accepted form: sets, arrays, int ids).  Raises
    what :func:`_check_subtopics_each` raises first for the checks it makes here: ``subtopics`` no mapping, a
    query id that is no id, two query ids written alike."""
    if not isinstance(subtopics, Mapping):
        raise DataError(f"{who}: subtopics must be a mapping {{query_id: {{doc_id: [subtopic, ...]}}}}, got "
                        f"{_kind(subtopics)}")
    from ragkit._checks import _key_ids

    query_ids = _key_ids(subtopics, f"{who}: subtopics' query ids")
    judged = list(subtopics.values())
    if not set(map(type, judged)) <= {dict}:
        return None
    doc_ids = list(chain.from_iterable(judged))
    if not set(map(type, doc_ids)) <= {str}:  # (keys of one dict, so never two alike)
        return None
    given = list(chain.from_iterable(map(dict.values, judged)))
    if not set(map(type, given)) <= {list, tuple}:
        return None
    flat = list(chain.from_iterable(given))
    if not all(issubclass(t, Hashable) for t in set(map(type, flat))):
        return None
    try:
        ids = dict(zip(dict.fromkeys(flat), range(len(flat))))
    except TypeError:  # a label whose type is Hashable but its value is not (a tuple holding a list)
        return None
    ids_once(dict.fromkeys(query_ids), subtopics, f"{who}: subtopics name a query")
    labels = np.fromiter(map(ids.__getitem__, flat), np.int64, len(flat))
    n_labels = np.fromiter(map(len, given), np.int64, len(given))
    owner = np.repeat(np.arange(len(given)), n_labels)
    order = np.argsort(owner * (len(ids) + 1) + labels, kind="stable")  # a document's equal labels side by side
    keep = np.ones(len(flat), bool)
    keep[order[1:][(owner[order[1:]] == owner[order[:-1]]) & (labels[order[1:]] == labels[order[:-1]])]] = False
    return _SubtopicTable(query_ids, np.fromiter(map(len, judged), np.int64, len(judged)), doc_ids, given,
                          n_labels, np.cumsum(n_labels) - n_labels, labels, keep)


def _kept_per_doc(table: _SubtopicTable) -> np.ndarray:
    """How many distinct labels each document of ``table`` has (int64, aligned with ``table.doc_ids``)."""
    owner = np.repeat(np.arange(len(table.given)), table.n_labels)
    return np.bincount(owner[table.keep], minlength=len(table.given)).astype(np.int64)


def _check_subtopics_each(subtopics: Any, who: str) -> dict[str, dict[str, list[Hashable]]]:
    """:func:`check_subtopics` one query and document at a time: the path for forms other than the plain one
    (:func:`_plain_subtopics`), and the one that names the first problem of malformed subtopics."""
    if not isinstance(subtopics, Mapping):
        raise DataError(f"{who}: subtopics must be a mapping {{query_id: {{doc_id: [subtopic, ...]}}}}, got "
                        f"{_kind(subtopics)}")
    from ragkit._checks import _key_ids

    out: dict[str, dict[str, list[Hashable]]] = {}
    for q, key, judged in zip(subtopics, _key_ids(subtopics, f"{who}: subtopics' query ids"), subtopics.values()):
        if not isinstance(judged, Mapping):
            raise DataError(f"{who}: subtopics[{q!r}] is {_kind(judged)}, expected a mapping "
                            "{doc_id: [subtopic, ...]} (subtopics are {query_id: {doc_id: [subtopic, ...]}})")
        docs: dict[str, list[Hashable]] = {}
        for d, did, labels in zip(judged, _key_ids(judged, f"{who}: subtopics[{q!r}]'s document ids"),
                                  judged.values()):
            if isinstance(labels, (str, bytes)):
                raise DataError(f"{who}: subtopics[{q!r}][{d!r}] is one string ({labels!r:.60}), expected a list "
                                f"of subtopic labels: [{labels!r:.60}] for one subtopic")
            if not isinstance(labels, (list, tuple, set, frozenset, np.ndarray)) or \
                    (isinstance(labels, np.ndarray) and labels.ndim != 1):
                raise DataError(f"{who}: subtopics[{q!r}][{d!r}] is {_kind(labels)}, expected a list of "
                                "subtopic labels ([] for none)")
            items = labels.tolist() if isinstance(labels, np.ndarray) else list(labels)
            bad = next((t for t in items if not isinstance(t, Hashable)), None)
            if bad is not None:
                raise DataError(f"{who}: subtopics[{q!r}][{d!r}] holds {_kind(bad)}, expected subtopic labels "
                                "(strings or numbers)")
            docs[did] = list(dict.fromkeys(items))  # a repeated label counts once
        ids_once(docs, judged, f"{who}: subtopics[{q!r}] names a document")
        out[key] = docs
    ids_once(out, subtopics, f"{who}: subtopics name a query")
    return out


def _subtopic_table(subtopics: Any, who: str) -> _SubtopicTable:
    """``subtopics`` checked (as :func:`check_subtopics` checks them) as a :class:`_SubtopicTable`."""
    plain = _plain_subtopics(subtopics, who)
    if plain is None:  # another accepted form (sets, arrays, int ids, Mapping types): checked one by one, then flat
        plain = _plain_subtopics(_check_subtopics_each(subtopics, who), who)
        assert plain is not None  # (string ids, dicts of lists: the plain form)
    return plain


def _spans(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The positions ``starts[i] .. starts[i] + lens[i] - 1`` of every ``i``, one after another."""
    ends = np.cumsum(lens)
    return np.repeat(starts - (ends - lens), lens) + np.arange(int(ends[-1]) if len(ends) else 0)


class _Gains:
    """alpha-nDCG gains of a fixed set of documents, ``sum_t (1 - alpha)^{seen[t]}`` over each document's
    labels, summed in the document's label order one label after another (as a per-document ``+=`` loop adds
    them, so that the gains, and the greedy ideal's ties, are that loop's to the last bit): one numpy pass per
    label position, each over the documents with that many labels (sorted by label count once, so a pass is a
    slice; the work is one step per label in all)."""

    def __init__(self, starts: np.ndarray, lens: np.ndarray, pair: np.ndarray) -> None:
        self.order = np.argsort(-lens, kind="stable")
        neg = -lens[self.order]
        self.starts = starts[self.order]
        top = int(-neg[0]) if len(neg) else 0
        self.counts = np.searchsorted(neg, -np.arange(top), side="left").tolist()  # documents with > l labels
        self.pair = pair

    def __call__(self, seen: np.ndarray, power: np.ndarray) -> np.ndarray:
        g = np.zeros(len(self.starts))
        for slot, c in enumerate(self.counts):
            g[:c] += power[seen[self.pair[self.starts[:c] + slot]]]
        out = np.empty_like(g)
        out[self.order] = g
        return out


def _pair_ids(table: _SubtopicTable) -> tuple[np.ndarray, np.ndarray]:
    """One id per distinct (query, label) pair of ``table`` (a query's subtopics): ``(pair, pair_q)``, the pair id
    of each kept label (aligned with ``table.labels[table.keep]``) and the query of each pair id."""
    lab = table.labels[table.keep]
    if not len(lab):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    doc_q = np.repeat(np.arange(len(table.query_ids)), table.n_docs)
    base = int(lab.max()) + 1
    pairs, pair = np.unique(np.repeat(doc_q, _kept_per_doc(table)) * base + lab, return_inverse=True)
    return pair.reshape(-1), pairs // base


def _judged_hits(table: _SubtopicTable, lists: Mapping[str, Sequence[str]], active: np.ndarray,
                 rank_of: Mapping[str, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The run's top-k (``lists``) of the queries ``active`` (indices into ``table.query_ids``) matched to the judged
    documents of their query: ``(doc, run_q, run_rank)`` per listed document, its index in ``table.doc_ids`` (-1
    where its query did not judge it), its query's position in ``active`` and its rank (from 0).  ``rank_of``
    codes the judged ids (any one-to-one code: their first positions where None); matched by a sorted search."""
    if rank_of is None:
        rank_of = {d: i for i, d in enumerate(dict.fromkeys(table.doc_ids))}
    n_names = len(rank_of)
    doc_code = np.fromiter(map(rank_of.__getitem__, table.doc_ids), np.int64, len(table.doc_ids))
    heads = [lists.get(table.query_ids[i], ()) for i in active.tolist()]
    head_n = np.fromiter(map(len, heads), np.int64, len(heads))
    got = np.fromiter(map(rank_of.get, chain.from_iterable(heads), repeat(-1)), np.int64, int(head_n.sum()))
    run_q = np.repeat(np.arange(len(active)), head_n)
    run_rank = np.arange(len(got)) - np.repeat(np.cumsum(head_n) - head_n, head_n)
    if not len(doc_code):
        return np.full(len(got), -1, np.int64), run_q, run_rank
    slot = np.full(len(table.query_ids), -1, np.int64)
    slot[active] = np.arange(len(active))
    key = slot[np.repeat(np.arange(len(table.query_ids)), table.n_docs)] * (n_names + 1) + doc_code  # (< 0:
    # judged documents of queries not active)
    by_key = np.argsort(key)
    want = run_q * (n_names + 1) + got
    at_key = np.minimum(np.searchsorted(key[by_key], want), len(key) - 1)
    doc = np.where((got >= 0) & (key[by_key][at_key] == want), by_key[at_key], -1)
    return doc, run_q, run_rank


def alpha_ndcg(run: RunLike, subtopics: Subtopics, k: int = 10, alpha: float = 0.5) -> dict[str, float]:
    """alpha-nDCG@k per judged query (Clarke et al. 2008).

    Gain of the document at rank r: ``sum_t J(d, t) (1 - alpha)^{c_t}`` with ``c_t`` the number of
    earlier documents covering subtopic t; discount ``1 / log2(r + 1)``.  The ideal ranking is the
    conventional greedy one of Clarke et al. (2008) over the judged documents (the exact optimum is
    NP-hard): at each rank the document of largest gain given those before it, a tie going to the
    largest document id (compared as strings: ``"d9"`` before ``"d10"``, ``"d2"`` before ``"d1"``).
    Greedy is not always optimal, so a valid ranking can score slightly above 1, and where tied
    documents differ in what they leave for later ranks the tie rule can change the ideal's DCG.
    ``run`` is a :class:`~ragkit.run.Run` or, as ``evaluate`` takes, a mapping ``{query_id: {doc_id:
    score}}`` (ranked by score, as trec_eval ranks it); anything else (a list of row-number rankings,
    which name no document id) is a :class:`~ragkit.errors.DataError`.
    A run that lists one document twice for a query is a :class:`~ragkit.errors.DataError`, as in
    ``evaluate``.  Queries without subtopics are skipped; a query of ``subtopics`` absent from
    the run scores 0.  ``subtopics`` is checked first (:func:`~ragkit.eval.diversity.check_subtopics`: ids as strings, a
    document's labels a list, tuple or set, a subtopic listed twice for one document covered once).
    ``k < 1``, ``alpha`` outside [0, 1] or malformed ``subtopics`` raise :class:`~ragkit.errors.DataError`.

    Batched over all queries: the judgements are encoded once as flat arrays (one entry per judged document
    and per label, no padding to the largest query, so memory follows the input), the greedy ideal takes
    ``min(k, judged documents)`` passes each choosing one document for every query at once (a segmented
    argmax, ties to the largest id), and the run's DCG one pass per rank; gains are added in the order the
    labels are listed, in float64, so the values are those of a per-query loop bit for bit.
    """
    if not 0 <= alpha <= 1:
        raise DataError(f"alpha_ndcg: alpha must be in [0, 1], got {alpha}")
    lists = _doc_lists(run, k, "alpha_ndcg")
    table = _subtopic_table(subtopics, "alpha_ndcg")
    n_q = len(table.query_ids)
    n_lab = _kept_per_doc(table)
    doc_q = np.repeat(np.arange(n_q), table.n_docs)
    pool_n = np.bincount(doc_q, weights=n_lab > 0, minlength=n_q).astype(np.int64)  # documents with a label
    depth = max(max(map(len, lists.values()), default=0), int(pool_n.max(initial=0)))
    disc = 1.0 / np.log2(np.arange(2, min(k, depth) + 2))  # no rank beyond the longest list or ideal ranking
    active = np.flatnonzero(pool_n)  # queries without subtopics are skipped
    if not len(active):
        return {}
    power = np.array([(1 - alpha) ** c for c in range(len(disc) + 1)], np.float64)  # no count exceeds len(disc)
    # one counter per (query, label) pair
    pair = _pair_ids(table)[0]
    lab_start = np.cumsum(n_lab) - n_lab
    # document ids as their ranks among all judged ids, compared as strings (Python's order)
    names = sorted(dict.fromkeys(table.doc_ids))
    rank_of = dict(zip(names, range(len(names))))
    doc_code = np.fromiter(map(rank_of.__getitem__, table.doc_ids), np.int64, len(table.doc_ids))

    # greedy ideal: the pool (documents with a label) by query, then by id, largest first (argmax takes the first)
    pool = np.flatnonzero(n_lab)
    pool = pool[np.lexsort((-doc_code[pool], doc_q[pool]))]
    sizes = pool_n[active]
    seg_start = np.cumsum(sizes) - sizes
    seg_of = np.repeat(np.arange(len(active)), sizes)
    gains = _Gains(lab_start[pool], n_lab[pool], pair)
    seen = np.zeros(int(pair.max()) + 1, np.int64)
    alive = np.ones(len(pool), bool)
    at = np.arange(len(pool))
    norm = np.zeros(len(active))
    for r in range(min(k, int(sizes.max()))):
        g = np.where(alive, gains(seen, power), -np.inf)
        best = np.maximum.reduceat(g, seg_start)
        first = np.minimum.reduceat(np.where(g == best[seg_of], at, len(pool)), seg_start)
        live = np.flatnonzero(sizes > r)  # queries whose pool is not yet empty
        chosen = first[live]
        norm[live] += g[chosen] * disc[r]
        seen[pair[_spans(lab_start[pool[chosen]], n_lab[pool[chosen]])]] += 1
        alive[chosen] = False

    # the run's DCG: its top-k matched to the judged documents of its query, one pass per rank
    qids = [table.query_ids[i] for i in active.tolist()]
    doc, run_q, run_rank = _judged_hits(table, lists, active, rank_of)
    hit = np.flatnonzero(doc >= 0)
    hit = hit[n_lab[doc[hit]] > 0]  # (a judged document without labels gains 0)
    hit = hit[np.argsort(run_rank[hit], kind="stable")]
    per_rank = np.bincount(run_rank[hit], minlength=1)
    dcg = np.zeros(len(active))
    seen = np.zeros_like(seen)
    for r, (a, b) in enumerate(zip(np.cumsum(per_rank) - per_rank, np.cumsum(per_rank))):
        if a == b:
            continue
        d = doc[hit[a:b]]
        dcg[run_q[hit[a:b]]] += _Gains(lab_start[d], n_lab[d], pair)(seen, power) * disc[r]
        seen[pair[_spans(lab_start[d], n_lab[d])]] += 1
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(norm > 0, dcg / np.where(norm > 0, norm, 1.0), 0.0)
    return dict(zip(qids, ratio))


def subtopic_recall(run: RunLike, subtopics: Subtopics, k: int = 10) -> dict[str, float]:
    """S-recall@k per judged query: share of the query's subtopics covered by a document in the top-k.

    ``run`` as :func:`alpha_ndcg` takes it (a :class:`~ragkit.run.Run` or ``{query_id: {doc_id: score}}``);
    ``k < 1``, another ``run`` or malformed ``subtopics`` (see :func:`~ragkit.eval.diversity.check_subtopics`) raise
    :class:`~ragkit.errors.DataError`."""
    lists = _doc_lists(run, k, "subtopic_recall")
    table = _subtopic_table(subtopics, "subtopic_recall")  # batched, as alpha_ndcg: no set per query
    n_q = len(table.query_ids)
    n_lab = _kept_per_doc(table)
    pair, pair_q = _pair_ids(table)  # a query's subtopics
    if not len(pair):
        return {}
    n_topics = np.bincount(pair_q, minlength=n_q)
    active = np.flatnonzero(n_topics)
    # the run's top-k matched to the judged documents of its query (a document id once per query)
    doc = _judged_hits(table, lists, active)[0]
    docs = doc[doc >= 0]
    lab_start = np.cumsum(n_lab) - n_lab
    covered = np.zeros(len(pair_q), bool)
    if len(docs):
        covered[pair[_spans(lab_start[docs], n_lab[docs])]] = True
    got = np.bincount(pair_q[covered], minlength=n_q)
    return dict(zip([table.query_ids[i] for i in active.tolist()], (got[active] / n_topics[active]).tolist()))
