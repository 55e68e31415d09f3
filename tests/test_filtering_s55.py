"""filter_report counts by query in one pass over all the pairs (np.bincount), not in loops over the queries: its
results are those of the per-query implementation it replaced (copied below as the reference), on random runs with
judged queries the filtered run lacks, documents with their query's id, empty lists and empty runs, queries the
qrels do not judge, with and without a reference run."""

from __future__ import annotations

from itertools import chain

import numpy as np
import pytest

from ragkit.errors import DataError
from ragkit.eval.filtering import FilterReport, filter_report, relevance_labels
from ragkit.eval.metrics import check_relevance_level, refuse_other_queries
from ragkit.run import Run
from ragkit.types import as_qrels


# ------------------------------------------------------------------ the per-query implementation, as it was
def _old_relevance_labels(run, qrels, relevance_level=1, ignore_identical_ids=True):
    lens = np.fromiter(map(len, run.doc_ids), np.int64, len(run.doc_ids))
    n = int(lens.sum())
    if not n:
        return [np.zeros(0, bool) for _ in run.doc_ids]
    relevant = {(q, d) for q in run.query_ids for d, g in qrels.get(q, {}).items() if g >= relevance_level}
    owners = np.repeat(np.array(run.query_ids, dtype=object), lens)
    docs = np.empty(n, dtype=object)
    docs[:] = list(chain.from_iterable(d.tolist() for d in run.doc_ids))
    labels = np.fromiter(map(relevant.__contains__, zip(owners.tolist(), docs.tolist())), bool, n)
    if ignore_identical_ids:
        labels &= docs != owners
    return np.split(labels, np.cumsum(lens)[:-1])


def _old_filter_report(filtered, qrels, reference=None, *, relevance_level=1, ignore_identical_ids=True):
    qrels = as_qrels(qrels, "filter_report")
    level = check_relevance_level(qrels, relevance_level, "filter_report")
    f_at = {q: i for i, q in enumerate(filtered.query_ids)}
    judged = [q for q in filtered.query_ids if q in qrels]
    if reference is None:
        refuse_other_queries("filter_report", list(filtered.query_ids), qrels)
        judged = [q for q, rel in qrels.items() if rel]
    else:
        refuse_other_queries("filter_report", list(reference.query_ids), qrels)
        ref_at = {q: i for i, q in enumerate(reference.query_ids)}
        missing = [q for q in judged if q not in ref_at]
        if missing:
            raise DataError(f"filter_report: {len(missing)} judged queries of the filtered run are not in the "
                            f"reference run (e.g. {missing[:3]}); expected the unfiltered run of the same queries")
        judged = [q for q in reference.query_ids if q in qrels]
    if not judged:
        raise DataError("filter_report: no query has judgements")
    labels = _old_relevance_labels(filtered, qrels, level, ignore_identical_ids)
    none = np.zeros(0, dtype=object)
    docs = {q: filtered.doc_ids[f_at[q]] if q in f_at else none for q in judged}
    if ignore_identical_ids:
        docs = {q: d[d != q] if len(d) else d for q, d in docs.items()}
        rel = {q: labels[f_at[q]][filtered.doc_ids[f_at[q]] != q] if q in f_at else np.zeros(0, bool) for q in judged}
    else:
        rel = {q: labels[f_at[q]] if q in f_at else np.zeros(0, bool) for q in judged}
    kept = np.array([len(docs[q]) for q in judged])
    hits = float(sum(rel[q].sum() for q in judged))
    tp = hits
    if reference is not None:
        ref_labels = _old_relevance_labels(reference, qrels, level, ignore_identical_ids)
        total = float(sum(ref_labels[ref_at[q]].sum() for q in judged))
        ref_rel = {q: set(reference.doc_ids[ref_at[q]][ref_labels[ref_at[q]]].tolist()) for q in judged}
        tp = float(sum(d in ref_rel[q] for q in judged for d in docs[q][rel[q]].tolist()))
    else:
        total = float(sum(sum(v >= level for v in qrels[q].values()) for q in judged))
    return FilterReport(
        precision=float(hits / kept.sum()) if kept.sum() else 0.0, recall=tp / total if total else 0.0,
        mean_kept=float(kept.mean()), empty=float(np.mean(kept == 0)), n_queries=len(judged),
    )


# ------------------------------------------------------------------ random runs
def _run(lists):
    """A Run of ``{qid: [doc ids]}`` in that order (lists may be empty), scores decreasing."""
    qids = list(lists)
    docs = [np.array(lists[q], dtype=object) for q in qids]
    return Run(qids, docs, [np.arange(len(d), 0, -1, dtype=np.float32) for d in docs])


def _case(seed):
    """A reference run, a filtered run (a random subset of each list, some queries dropped or emptied, some
    queries added that the qrels do not judge, its queries in another order) and graded qrels (some queries judged
    that no run holds, some grades 0, some query's own id judged relevant and retrieved)."""
    rng = np.random.default_rng(seed)
    n_q, n_d = int(rng.integers(1, 30)), int(rng.integers(1, 60))
    qids = [f"q{i}" for i in range(n_q)]
    pool = [f"d{i}" for i in range(n_d)] + qids  # a query's own id may be retrieved (and judged)
    ref = {}
    for q in qids:
        k = int(rng.integers(0, min(len(pool), 25) + 1))
        ref[q] = list(rng.choice(pool, k, replace=False))
    filt = {}
    for q in rng.permutation(qids).tolist():
        if rng.random() < 0.2:  # a query the filter emptied, as a TREC file reads it back: absent
            continue
        keep = rng.random(len(ref[q])) < rng.random()
        filt[q] = [d for d, k in zip(ref[q], keep) if k]
        if rng.random() < 0.2:  # a document the reference never retrieved
            filt[q].append(f"x{q}")
    qrels = {}
    for q in qids + [f"u{i}" for i in range(int(rng.integers(0, 3)))]:  # u*: judged, in no run
        if rng.random() < 0.15:
            continue  # a query of the runs the qrels do not judge
        cand = pool + [f"x{q}", q]
        m = int(rng.integers(1, 8))
        qrels[q] = {str(d): int(rng.integers(0, 3)) for d in rng.choice(cand, m)}
    if not any(q in qrels for q in qids):
        qrels[qids[0]] = {pool[0]: 1}
    return _run(ref), _run(filt), qrels


def _both(filtered, qrels, reference=None, **kw):
    try:
        want = _old_filter_report(filtered, qrels, reference, **kw)
    except DataError:
        with pytest.raises(DataError):
            filter_report(filtered, qrels, reference, **kw)
        return None
    got = filter_report(filtered, qrels, reference, **kw)
    assert got == want  # every field exactly, not approximately
    return got


@pytest.mark.parametrize("seed", range(60))
@pytest.mark.parametrize("ignore", [True, False])
@pytest.mark.parametrize("level", [1, 2])
def test_filter_report_is_the_per_query_implementation_on_random_runs(seed, ignore, level):
    ref, filt, qrels = _case(seed)
    kw = {"relevance_level": level, "ignore_identical_ids": ignore}
    _both(filt, qrels, **kw)
    _both(filt, qrels, ref, **kw)
    _both(ref, qrels, ref, **kw)  # nothing filtered: recall within the reference is 1 where any was relevant
    q2 = as_qrels(qrels, "t")
    assert [a.tolist() for a in relevance_labels(filt, q2, relevance_level=level, ignore_identical_ids=ignore)] == [
        a.tolist() for a in _old_relevance_labels(filt, q2, level, ignore)]


def test_filter_report_cases_named():
    ref = _run({"q1": ["q1", "a", "b", "c"], "q2": ["d", "q2"], "q3": ["e"]})
    qrels = {"q1": {"q1": 2, "a": 1, "c": 2}, "q2": {"d": 1, "q2": 1}, "q3": {"e": 1}, "q4": {"f": 1}}
    # q3 emptied (absent), q4 judged but in no run; q1 keeps its own id
    filt = _run({"q2": ["q2"], "q1": ["q1", "c", "z"]})
    for ignore in (True, False):
        for reference in (None, ref):
            _both(filt, qrels, reference, ignore_identical_ids=ignore)
    rep = _both(filt, qrels)
    # kept (own ids dropped): q1 [c, z], q2 [], q3 [], q4 [] -> 2 kept, 1 relevant; relevant judged: 7 (own ids too)
    assert rep == FilterReport(precision=0.5, recall=1 / 7, mean_kept=0.5, empty=0.75, n_queries=4)
    rep = _both(filt, qrels, ref)  # within the reference: a, c of q1, d of q2, e of q3 -> 1 of 4
    assert rep == FilterReport(precision=0.5, recall=0.25, mean_kept=2 / 3, empty=2 / 3, n_queries=3)


@pytest.mark.parametrize("ignore", [True, False])
def test_filter_report_of_empty_runs(ignore):
    ref = _run({"q1": ["a", "b"], "q2": ["c"]})
    qrels = {"q1": {"a": 1}, "q2": {"c": 1}}
    for filt in (_run({}), _run({"q1": [], "q2": []}), _run({"q2": []})):
        for reference in (None, ref):
            rep = _both(filt, qrels, reference, ignore_identical_ids=ignore)
            assert rep == FilterReport(precision=0.0, recall=0.0, mean_kept=0.0, empty=1.0, n_queries=2)
    empty_ref = _run({"q1": [], "q2": []})
    rep = _both(_run({}), qrels, empty_ref, ignore_identical_ids=ignore)
    assert rep == FilterReport(precision=0.0, recall=0.0, mean_kept=0.0, empty=1.0, n_queries=2)
    assert relevance_labels(_run({"q1": [], "q2": []}), qrels, ignore_identical_ids=ignore)[1].tolist() == []
