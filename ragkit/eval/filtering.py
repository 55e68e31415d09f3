"""Measures of relevance filters: precision/recall of the kept set, empty lists, calibration, PR curves."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from ragkit._flat import split_counts
from ragkit.errors import DataError
from ragkit.eval.metrics import check_relevance_level, refuse_other_queries
from ragkit.run import Run
from ragkit.types import Qrels, as_qrels

__all__ = ["FilterReport", "filter_report", "relevance_labels", "expected_calibration_error", "pr_curve",
           "precision_at_recall", "plot_pr_curves"]


def relevance_labels(run: Run, qrels: Qrels | Any, *, relevance_level: int = 1,
                     ignore_identical_ids: bool = True) -> list[np.ndarray]:
    """Per query of ``run``, a boolean array: is each retrieved document judged relevant, at a grade of at least
    ``relevance_level``.  ``qrels`` takes what :func:`~ragkit.eval.evaluate` takes
    (:func:`~ragkit.types.as_qrels`); ``relevance_level`` and ``ignore_identical_ids`` mean what they mean there
    (a document whose id is its query's id is labelled not relevant, as evaluate counts it not found)."""
    who = "relevance_labels"
    qrels = as_qrels(qrels, who)
    relevance_level = check_relevance_level(qrels, relevance_level, who)
    return _relevance_labels(run, qrels, relevance_level, ignore_identical_ids)


def _relevance_labels(run: Run, qrels: Mapping[str, Mapping[str, int]], relevance_level: int = 1,
                      ignore_identical_ids: bool = True) -> list[np.ndarray]:
    """:func:`relevance_labels` of ``qrels`` already converted (what :func:`~ragkit.types.as_qrels` returns): not
    converted, nor checked, again (:func:`filter_report` converts its judgements once, for both of its runs)."""
    pairs = _pairs(run, qrels, relevance_level, ignore_identical_ids)
    if not len(pairs.labels):
        return [np.zeros(0, bool) for _ in run.doc_ids]
    return split_counts(pairs.labels, pairs.lens)


class _Pairs(NamedTuple):
    """Every (query, document) pair of a run, flat, every query's one after the other (``n`` pairs, ``n_q``
    queries)."""

    labels: np.ndarray  #: bool (n,): judged relevant (a document with its query's id not, when those are ignored)
    docs: np.ndarray  #: object (n,): the document ids
    owners: np.ndarray  #: int64 (n,): each pair's query, as its position in ``run.query_ids``
    lens: np.ndarray  #: int64 (n_q,): each query's list length
    other: np.ndarray  #: bool (n,): the document's id is not its query's (all True when those are not ignored)


def _pairs(run: Run, qrels: Mapping[str, Mapping[str, int]], relevance_level: int,
           ignore_identical_ids: bool) -> _Pairs:
    """The labels of :func:`_relevance_labels`, flat, with what :func:`filter_report` counts by query.  One set of
    the relevant (query, document) pairs and one pass over all the run's pairs (no loop over queries or
    documents in Python)."""
    lens = np.fromiter(map(len, run.doc_ids), np.int64, len(run.doc_ids))
    n = int(lens.sum())
    owners = np.repeat(np.arange(len(lens)), lens)
    if not n:
        return _Pairs(np.zeros(0, bool), np.zeros(0, dtype=object), owners, lens, np.zeros(0, bool))
    relevant = {(q, d) for q in run.query_ids for d, g in qrels.get(q, {}).items() if g >= relevance_level}
    owner_ids = np.array(run.query_ids, dtype=object)[owners]
    docs = np.empty(n, dtype=object)
    docs[:] = list(chain.from_iterable(d.tolist() for d in run.doc_ids))
    labels = np.fromiter(map(relevant.__contains__, zip(owner_ids.tolist(), docs.tolist())), bool, n)
    other = np.ones(n, bool)
    if ignore_identical_ids:  # (evaluate drops them from the run: never found)
        other = docs != owner_ids
        labels &= other
    return _Pairs(labels, docs, owners, lens, other)


@dataclass
class FilterReport:
    """What a filter kept, against judgements.

    Attributes
    ----------
    precision : float
        Relevant kept / kept, pooled over queries (micro).
    recall : float
        Relevant kept / relevant in the reference (the unfiltered candidates when given,
        else all judged relevant documents), pooled.
    mean_kept : float
        Mean kept-list length.
    empty : float
        Share of queries whose list is empty.
    n_queries : int
    """

    precision: float
    recall: float
    mean_kept: float
    empty: float
    n_queries: int

    def to_dict(self) -> dict:
        """The fields by name (``precision``, ``recall``, ``mean_kept``, ``empty``: float; ``n_queries``: int),
        e.g. for a JSON report."""
        return asdict(self)


def filter_report(filtered: Run, qrels: Qrels | Any, reference: Run | None = None, *, relevance_level: int = 1,
                  ignore_identical_ids: bool = True) -> FilterReport:
    """Precision and recall of the kept set of ``filtered`` (only queries present in ``qrels``).

    With ``reference`` (the unfiltered run), recall is relative to the relevant documents
    the reference retrieved ("recall within the top-K"), over the reference's judged queries;
    otherwise to all judged relevant, over every query the qrels judge (as :func:`evaluate`
    counts them, trec_eval's ``-c``).  Either way a judged query the filtered run lacks kept
    nothing: a TREC run file cannot hold the empty list of a query the filter emptied (a filter that emptied
    every list gives a run of no query: precision and recall 0, ``empty`` 1).  Without ``reference``, a run
    holding queries none of which the qrels judge is a :class:`DataError` (the qrels of other queries); with it,
    a reference none of whose queries is judged.  ``qrels`` takes what
    :func:`~ragkit.eval.evaluate` takes (a mapping, a DataFrame, a qrels file's path: :func:`~ragkit.types.as_qrels`).
    ``relevance_level`` (the lowest grade counted relevant) and ``ignore_identical_ids`` (a document whose id is
    its query's id is dropped from both runs: not kept, never found, though still among the judged relevant)
    mean what they mean in :func:`~ragkit.eval.evaluate`, with the same defaults.
    """
    qrels = as_qrels(qrels, "filter_report")
    level = check_relevance_level(qrels, relevance_level, "filter_report")
    f_at = {q: i for i, q in enumerate(filtered.query_ids)}
    judged = [q for q in filtered.query_ids if q in qrels]
    if reference is None:
        refuse_other_queries("filter_report", list(filtered.query_ids), qrels)  # queries, none judged: the qrels
        # of another run
        # every judged query, the filtered run holding it or not (one it lacks kept nothing: a run read back from
        # a TREC file holds no query whose list the filter emptied, and none at all when it emptied every list)
        judged = [q for q, rel in qrels.items() if rel]
    else:
        refuse_other_queries("filter_report", list(reference.query_ids), qrels)  # (the reference's queries, none
        # judged: the qrels of another run, as above)
        ref_at = {q: i for i, q in enumerate(reference.query_ids)}
        missing = [q for q in judged if q not in ref_at]
        if missing:
            raise DataError(f"filter_report: {len(missing)} judged queries of the filtered run are not in the "
                            f"reference run (e.g. {missing[:3]}); expected the unfiltered run of the same queries")
        # a judged query of the reference that the filtered run lacks kept nothing (a TREC file, say,
        # cannot hold an empty list): it counts as an empty list, not as a query that never ran
        judged = [q for q in reference.query_ids if q in qrels]
    if not judged:
        raise DataError("filter_report: no query has judgements (" + ("the qrels judge none" if reference is None
                        else f"none of the {len(reference.query_ids)} queries of the reference run") + "); expected "
                        "qrels judging the run's queries")
    # every count in one pass over all the pairs (np.bincount by query), then read at the judged queries'
    # positions: ``at`` maps each to its position in the filtered run, or to a slot past the end that counts 0
    # for a judged query the filtered run lacks (it kept nothing)
    f = _pairs(filtered, qrels, level, ignore_identical_ids)
    nf = len(f.lens)
    at = np.fromiter((f_at.get(q, nf) for q in judged), np.int64, len(judged))
    # a document with its query's id is not kept (evaluate drops it from the run), nor relevant (its label False)
    kept = np.bincount(f.owners[f.other], minlength=nf + 1)[at]
    hits = float(np.bincount(f.owners[f.labels], minlength=nf + 1)[at].sum())  # kept relevant: precision's numerator
    tp = hits
    if reference is not None:
        r = _pairs(reference, qrels, level, ignore_identical_ids)
        r_at = np.fromiter((ref_at[q] for q in judged), np.int64, len(judged))
        total = float(np.bincount(r.owners[r.labels], minlength=len(r.lens))[r_at].sum())
        # recall within the reference: a kept relevant document the reference never retrieved does not count.
        # A kept relevant document is in the reference's list exactly when it is among the reference's
        # relevant ones: one set of those few (query, document) pairs, and a look-up of each kept relevant pair
        # (matched by its query's id: the runs may order their queries differently).  Every kept relevant pair
        # is a judged query's: its query is in the qrels, so in the reference (or refused above)
        r_qids, f_qids = np.array(reference.query_ids, dtype=object), np.array(filtered.query_ids, dtype=object)
        r_rel = set(zip(r_qids[r.owners[r.labels]].tolist(), r.docs[r.labels].tolist()))
        tp = float(sum(map(r_rel.__contains__, zip(f_qids[f.owners[f.labels]].tolist(), f.docs[f.labels].tolist()))))
    else:
        total = float(sum(sum(v >= level for v in qrels[q].values()) for q in judged))
    return FilterReport(
        precision=float(hits / kept.sum()) if kept.sum() else 0.0, recall=tp / total if total else 0.0,
        mean_kept=float(kept.mean()), empty=float(np.mean(kept == 0)), n_queries=len(judged),
    )


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width bins on [0, 1]: ``sum_b |B_b|/n * |mean(y) - mean(p)|``.

    Naeini, Cooper & Hauskrecht, "Obtaining Well Calibrated Probabilities Using Bayesian Binning", AAAI 2015
    (the measure), in the equal-width form of Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern
    Neural Networks", ICML 2017 (15 bins by default, as there).

    ``probs``: predicted probabilities of relevance, float in ``[0, 1]``, any shape (flattened), ``(n,)``;
    ``labels``: the outcomes, 0/1 (bool or numbers), as many as ``probs``.  Returns a float in ``[0, 1]``
    (0 for no predictions).  A probability outside ``[0, 1]`` or not finite is a :class:`DataError`."""
    probs = np.asarray(probs, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    if probs.shape != labels.shape:
        raise DataError(f"expected_calibration_error: {probs.shape} probabilities for {labels.shape} labels")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise DataError(f"expected_calibration_error: n_bins must be a positive integer, got {n_bins!r}")
    if probs.size == 0:
        return 0.0
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        bad = ~np.isfinite(probs) | (probs < 0) | (probs > 1)
        raise DataError(f"expected_calibration_error: probabilities must be finite and lie in [0, 1]; {int(bad.sum())} "
                        f"of {probs.size} are not (e.g. {probs[bad][:3].tolist()}); drop padding (NaN) first")
    b = np.minimum((probs * n_bins).astype(np.int64), n_bins - 1)
    cnt = np.bincount(b, minlength=n_bins)
    sp = np.bincount(b, weights=probs, minlength=n_bins)
    sy = np.bincount(b, weights=labels, minlength=n_bins)
    nz = cnt > 0
    return float(np.sum(np.abs(sy[nz] - sp[nz])) / probs.size)


def pr_curve(scores: np.ndarray, labels: np.ndarray, n_relevant: int | None = None) -> tuple[np.ndarray, ...]:
    """Precision-recall of one global threshold swept over pooled ``scores``.

    Parameters
    ----------
    scores : ndarray of float, shape (n,)
        The scores of every (query, document) pair pooled, any shape (flattened); finite (drop padding
        first: a NaN or inf is a :class:`DataError`).
    labels : ndarray, shape (n,)
        1 (or ``True``) for a relevant pair, 0 otherwise, one per score (another count is a
        :class:`DataError`).
    n_relevant : int, optional
        The recall denominator: the relevant documents there are, retrieved or not (default:
        ``labels.sum()``, the relevant ones among the scores).

    Returns
    -------
    precision, recall, thresholds : ndarray of float64, shape (m,) each
        One point per distinct score (``m`` of them, ``m <= n``), highest threshold first: point ``i``
        keeps the pairs scoring at least ``thresholds[i]``.  Empty (shape ``(0,)``) for no scores; recall
        is 0 where the denominator is 0.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    if scores.shape != labels.shape:
        raise DataError(f"pr_curve: {scores.shape[0]} scores for {labels.shape[0]} labels; expected one label per "
                        "score")
    if not np.isfinite(scores).all():
        raise DataError(f"pr_curve: {int((~np.isfinite(scores)).sum())} non-finite scores; expected finite scores "
                        "(drop padding first)")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1] if len(s) else np.empty(0, np.int64)
    total = labels.sum() if n_relevant is None else n_relevant
    prec = tp[last] / (last + 1)
    rec = tp[last] / total if total else np.zeros(len(last))
    return prec, rec, s[last]


def precision_at_recall(precision: np.ndarray, recall: np.ndarray, target: float) -> float:
    """The best precision among thresholds reaching recall >= ``target`` (0 when none does)."""
    ok = recall >= target - 1e-12
    return float(precision[ok].max()) if ok.any() else 0.0


def plot_pr_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *,
                   points: Mapping[str, tuple[float, float]] | None = None, title: str = "") -> Path:
    """Plot ``{name: (recall, precision)}`` curves (and ``{name: (recall, precision)}`` points) to a PNG
    (needs matplotlib: ``pip install 'ragkit[plot]'``)."""
    try:
        import matplotlib
    except ImportError:  # (one installed that fails to import raises its own ImportError)
        from ragkit.errors import require

        require(["matplotlib"], extra="plot", what="plot_pr_curves needs matplotlib, which is not installed")
        raise

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (rec, prec) in curves.items():
        ax.plot(rec, prec, label=name, lw=1.5)
    for name, (r, p) in (points or {}).items():
        ax.plot([r], [p], "o", label=name)
    ax.set_xlabel("recall (relevant documents within the candidates)")
    ax.set_ylabel("precision of the kept set")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
