"""Retrieval metrics with trec_eval semantics, computed by pytrec_eval as BEIR does.

Metric names: ``ndcg@k``, ``recall@k``, ``map@k``, ``mrr@k``, ``p@k``, and BEIR's ``r_cap@k``, ``hole@k``,
``acc@k`` (case-insensitive; ir_measures' ``R@k``, ``AP@k`` and ``RR@k`` are read as ``recall@k``, ``map@k`` and
``mrr@k``, the same measures).  Like BEIR's ``EvaluateRetrieval.evaluate``, a document whose id equals the
query id is ignored (``ignore_identical_ids=True``).  The aggregate is the mean over every judged query
(every query of the qrels with at least one judgement): a judged query the run lacks (or answers with
nothing) counts as 0, as trec_eval's ``-c`` does, and :func:`evaluate` warns of the judged queries the
run lacks.  BEIR's ``evaluate`` averages over the queries that are both in the run and judged (those
pytrec_eval scores) instead, so a judged query the run lacks changes nothing there; the two agree
whenever every judged query is searched, as in ``ragkit eval``.  Run queries the qrels do not judge are
skipped by both.  Per-query values are kept for significance tests.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Mapping, Sequence, cast

import numpy as np

from ragkit._checks import _a, _key_ids, _kind
from ragkit._files import first_time
from ragkit._flat import split_counts
from ragkit.errors import DataError, ParamError, some_ids
from ragkit.run import Run, _f32, _flat, _trec_permutation, check_run_queries, check_scores, nan_score_at, string_ids
from ragkit.types import Ranking, State, as_qrels, check_id_nul, check_qrels

if TYPE_CHECKING:  # pandas is optional
    import os

    import pandas as pd

__all__ = ["evaluate", "EvalResult", "parse_metric", "parse_metrics", "paired_randomization_test", "sign_flip_pvalues",
           "check_relevance_level", "per_query_ndcg", "per_query_metrics", "drop_identical_ids"]

_log = logging.getLogger(__name__)

_TREC = {"ndcg": "ndcg_cut", "recall": "recall", "map": "map_cut", "p": "P"}
DEFAULT_METRICS = ("ndcg@10", "recall@100", "map@10", "mrr@10", "p@10")


_MAX_CUTOFF = 2**31 - 1


_FAMILIES = ("ndcg", "recall", "map", "mrr", "p", "r_cap", "hole", "acc")
#: ir_measures' names of metrics ragkit names otherwise, read as those (``R@100`` is ``recall@100``): each is the
#: same trec_eval measure (``R@k``: ``recall_k``; ``AP@k``: ``map_cut_k``, which ``map@k`` is; ``RR@k``:
#: ``recip_rank`` of the top k, which ``mrr@k`` is; ``Success@k``: a relevant document in the top k, which
#: ``acc@k`` is).  ``P@k`` and ``nDCG@k`` are ragkit's names already.
_IR_MEASURES = {"r": "recall", "ap": "map", "rr": "mrr", "success": "acc"}
#: other spellings of the metric names (trec_eval's, longer words), offered as "did you mean" hints only
_ALIASES = {"precision": "p", "ndcg_cut": "ndcg", "map_cut": "map", "recip_rank": "mrr",
            "accuracy": "acc", "top_k_accuracy": "acc", "rcap": "r_cap", "capped_recall": "r_cap"}
_DEFAULT_CUT = {name.split("@")[0]: int(name.split("@")[1]) for name in DEFAULT_METRICS}
_EXPECTED = f"expected one of {', '.join(f'{f}@k' for f in _FAMILIES)} with 1 <= k <= {_MAX_CUTOFF}"
_METRIC = re.compile(rf"\s*({'|'.join([*_FAMILIES, *_IR_MEASURES])})\s*@\s*(\d+)\s*")


def _family(word: str) -> tuple[str | None, bool]:
    """The metric family ``word`` names, and whether it names it exactly (``("ndcg", True)``); a close
    spelling or another name of one (``"ndgc"``, ``"precision"``: difflib, cutoff 0.65) gives ``(family,
    False)``, anything else ``(None, False)``."""
    if word in _FAMILIES:
        return word, True
    if word in _IR_MEASURES:  # (read as its family: exact)
        return _IR_MEASURES[word], True
    if word in _ALIASES:
        return _ALIASES[word], False
    close = difflib.get_close_matches(word, [*_FAMILIES, *_IR_MEASURES, *_ALIASES], n=1, cutoff=0.65)
    return ({**_ALIASES, **_IR_MEASURES}.get(close[0], close[0]) if close else None), False


def _metric_problem(name: str) -> tuple[str, str | None]:
    """Why ``name`` (a string :data:`_METRIC` does not read, or reads with a cut-off out of range) is no metric,
    and the full spelling it likely meant (``'ndcg@10'``) or ``None``."""
    s = name.strip().lower()
    m = _METRIC.fullmatch(s)
    if m:  # a known metric, its cut-off out of range
        k = int(m.group(2))
        if k < 1:
            return f"the cut-off must be an integer >= 1, got {k}", None
        return f"the cut-off must be at most {_MAX_CUTOFF} (trec_eval reads it as a C int), got {k}", None
    if not s:
        return "the name is empty", None
    if "@" in s:
        word, _, cut = (x.strip() for x in s.partition("@"))
        if not word:
            return "the metric's name is missing before '@'", None
        fam, exact = _family(word)
        integral = re.fullmatch(r"([+-]?\d+)(?:\.0*)?", cut)  # (10.0: 10; +10: 10)
        given = int(integral.group(1)) if integral else None
        good = given is not None and 1 <= given <= _MAX_CUTOFF
        hint = f"{fam}@{given if good else _DEFAULT_CUT.get(fam, 10)}" if fam else None
        if not exact:
            return f"no metric is named {word!r}", hint
        if not cut:
            return "the cut-off is missing after '@'", hint
        if given is not None and given < 1:
            return f"the cut-off must be an integer >= 1, got {given}", None
        if good:  # an integer in range, written otherwise ('+10', '10.0')
            return f"write the cut-off in digits alone (e.g. {given}), got {cut!r}", hint
        return f"the cut-off must be an integer >= 1, got {cut!r}", None
    joined = re.fullmatch(r"([a-z][a-z_\- ]*?)[\s_.:\-]*(\d+)", s)  # ndcg10, trec_eval's ndcg_cut_10, P_10
    if joined:
        fam, _ = _family(joined.group(1).strip())
        k = int(joined.group(2))
        if fam:
            return "no '@' between the name and the cut-off", f"{fam}@{k if 1 <= k <= _MAX_CUTOFF else 10}"
    fam, exact = _family(s)
    hint = f"{fam}@{_DEFAULT_CUT.get(fam, 10)}" if fam else None
    if exact:
        return "the cut-off is missing", hint
    return f"no metric is named {s!r}", hint


def parse_metric(name: str) -> tuple[str, int]:
    """``"nDCG@10"`` -> ``("ndcg", 10)``; ir_measures' names of the same measures are read as ragkit's (``"R@100"``
    -> ``("recall", 100)``, ``"AP@10"`` -> ``("map", 10)``, ``"RR@10"`` -> ``("mrr", 10)``); anything else is a
    :class:`DataError` saying what was given, why it is no metric (an unknown name, a cut-off missing, not an
    integer or out of range), the close spelling it likely meant (``'ndgc@10'``: did you mean ``'ndcg@10'``?) and
    the accepted forms."""
    return parse_metrics([name])[0]


def parse_metrics(names: Iterable[str]) -> list[tuple[str, int]]:
    """:func:`parse_metric` of every name of ``names``, in order; the names it cannot read are refused together,
    in one :class:`DataError` naming each with why (an unknown name, a cut-off missing or out of range) and the
    close spelling it likely meant (``unknown metrics 'foo@5' (no metric is named 'foo'), 'recal@100' (no metric
    is named 'recal'; did you mean 'recall@100'?); expected one of ...``).  Names of the same metric
    (``'nDCG@10'``, ``'ndcg@10'``) are each read: :func:`_named_twice` finds them for the callers that refuse
    them (:func:`evaluate`, :func:`~ragkit.eval.compare.compare`, ``ragkit eval -m``)."""
    given = [names] if isinstance(names, str) else list(names)  # (a string is one name, not its letters)
    out: list[tuple[str, int]] = []
    bad: list[tuple[Any, str, str | None]] = []
    for name in given:
        if not isinstance(name, str):
            bad.append((name, f"{_a(type(name).__name__)}, not a name", None))
            continue
        m = _METRIC.fullmatch(name.lower())
        if m and 1 <= int(m.group(2)) <= _MAX_CUTOFF:  # trec_eval reads the cut-off as a C int
            out.append((_IR_MEASURES.get(m.group(1), m.group(1)), int(m.group(2))))  # (R@100: recall@100)
        else:
            bad.append((name, *_metric_problem(name)))
    if len(bad) == 1 and not isinstance(bad[0][0], str):
        raise DataError(f"metric {bad[0][0]!r} is {_a(type(bad[0][0]).__name__)}; expected a name such as 'ndcg@10'")
    if len(bad) == 1:
        what, why, hint = bad[0]
        raise DataError(f"unknown metric {what!r}: {why}" + (f" (did you mean {hint!r}?)" if hint else "")
                        + f"; {_EXPECTED}")
    if bad:
        raise DataError("unknown metrics " + ", ".join(
            f"{what!r} ({why}" + (f"; did you mean {hint!r}?)" if hint else ")") for what, why, hint in bad)
            + f"; {_EXPECTED}")
    return out


def _named_twice(names: Sequence[str], parsed: Sequence[tuple[str, int]]) -> list[list[str]]:
    """The names of ``names`` that name one metric with another of them (``parsed``: their
    :func:`parse_metrics`, so ``'nDCG@10'`` and ``'ndcg@10 '`` are twins of ``'ndcg@10'``), one group per
    metric, in the order given: ``[['ndcg@10', 'nDCG@10'], ['recall@10', 'recall@10 ']]``; ``[]`` when every
    metric is named once."""
    groups: dict[tuple[str, int], list[str]] = {}
    for name, metric in zip(names, parsed):
        groups.setdefault(metric, []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def _twice_said(groups: list[list[str]], say: Callable[[str], str] = repr) -> str:
    """:func:`_named_twice`'s groups for an error: ``'ndcg@10', 'nDCG@10' name the same metric; 'recall@10',
    'recall@10 ' another; name each once`` (``say``: how a name is written, ``repr`` or ``str``)."""
    said = [", ".join(map(say, g)) for g in groups]
    return f"{said[0]} name the same metric" + "".join(f"; {s} another" for s in said[1:]) + "; name each once"


@dataclass
class EvalResult:
    """Aggregate and per-query metric values.

    Attributes
    ----------
    scores : dict of str -> float
        Mean over evaluated queries, e.g. ``{"ndcg@10": 0.66}``.
    per_query : dict of str -> dict of str -> float
        ``{metric: {query_id: value}}``.
    ignored_judged : int
        Judged-relevant documents whose id is their query's id, dropped from the run by
        ``ignore_identical_ids`` (so counted as not found); 0 when the option is off.
    relevance_level, ignore_identical_ids : int, bool or None
        The :func:`evaluate` arguments it was scored with (``None``: unknown, an ``EvalResult`` built by
        hand); :func:`~ragkit.eval.compare.compare` refuses results scored with different ones.
    qrels_fingerprint : str or None
        The judgements it was scored against: :func:`~ragkit.eval.compare.scored_qrels_fingerprint` of those of
        the queries it scored (``"sha256-scored:..."``, what ``ragkit eval -o`` records as
        ``settings.qrels_fingerprint``; ``None``: unknown, an ``EvalResult`` built by hand);
        :func:`~ragkit.eval.compare.compare` refuses results scored against different judgements.
    """

    scores: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(repr=False)
    #: judged-relevant documents that have their query's id, dropped from the run by ``ignore_identical_ids``
    #: (so counted as not found); 0 when the option is off
    ignored_judged: int = 0
    relevance_level: int | None = None
    ignore_identical_ids: bool | None = None
    qrels_fingerprint: str | None = None

    def __getitem__(self, metric: str) -> float:
        """The mean of ``metric`` in any spelling ``parse_metric`` reads (``"nDCG@10"`` finds ``"ndcg@10"``)."""
        if metric in self.scores:
            return self.scores[metric]
        want = parse_metric(metric)
        for name, value in self.scores.items():
            if parse_metric(name) == want:
                return value
        raise KeyError(f"{metric!r}: not evaluated; this result holds {', '.join(self.scores)}")

    def to_dict(self) -> dict[str, object]:
        """The mean scores, ``{metric: float}``, with the per-query values under ``"per_query"``
        (``{metric: {query_id: value}}``)."""
        return {**self.scores, "per_query": self.per_query}


_NO_DOC = "\tragkit: no document"


def check_run_mapping(run: Any, who: str, got: str | None = None) -> None:
    """Refuse, with a :class:`DataError` starting ``who:``, a ``run`` that is neither a :class:`Run` nor a
    mapping ``{query_id: {doc_id: score}}`` (``got``: how to describe it, by default its type), or a mapping
    one of whose queries maps to something other than a mapping."""
    if isinstance(run, Run):
        return
    if not isinstance(run, Mapping):
        raise DataError(f"{who}: run must be a Run (what search returns) or a mapping {{query_id: {{doc_id: "
                        f"score}}}}, got {got or _kind(run)}")
    check_run_queries(run, who)


def _clean_run(run: Run | Mapping[str, Mapping[str, float]], ignore_identical_ids: bool,
               depth: int | None = None) -> dict[str, dict[str, float]]:
    """``run`` as pytrec_eval's dicts, checked (no NaN score, no document twice); each query longer than
    ``depth`` (the deepest cut-off + 1) is cut first to the documents scoring at least its depth-th best score,
    ties kept (:func:`_cut_run`, :func:`_ties_kept`), which scores as the whole list: a run of 1,000 documents
    per query scored at 10 hands pytrec_eval ~11 each."""
    if isinstance(run, Run):
        flat = np.concatenate([np.asarray(s, np.float64) for s in run.scores]) if len(run) else np.zeros(0)
        lens = np.fromiter(map(len, run.scores), np.int64, len(run))
        found = nan_score_at(lens, flat)  # the query and document of the first NaN
        bad = None if found is None else (run.query_ids[found[0]],
                                          run.doc_ids[found[0]][found[1] - int(lens[:found[0]].sum())])
        d = (run if depth is None else _cut_run(run, depth)).to_dict() if bad is None else {}
    else:
        check_run_mapping(run, "evaluate")
        check_scores(run, "evaluate")  # (None, "1.0", 1j, 10**400: a DataError naming the query and document)
        # (ids written as qrels' are: 1.0 and 1 as "1"; {1: .1, "1": .9} lists one document twice)
        written = string_ids(run, "evaluate")
        check_id_nul(list(written), "evaluate: run's query ids", "query")  # (a Run refuses them when made)
        if "\x00" in "".join(chain.from_iterable(written.values())):
            nul = next(q for q, docs in written.items() if "\x00" in "".join(docs))
            check_id_nul(list(written[nul]), f"evaluate: run[{nul!r}]'s document ids", "document")
        lens, flat_ids, s64 = _flat(written)
        found = nan_score_at(lens, s64)  # the query and document of the first NaN
        bad = None if found is None else (list(written)[found[0]], flat_ids[found[1]])
        if bad is not None:
            d = {}
        else:
            owner = np.repeat(np.arange(len(lens)), lens)
            if depth is not None and len(lens) and lens.max() > depth:  # (ties kept: trec_eval cuts them)
                keep = _ties_kept(lens, _f32(s64), owner, depth)
                flat_ids, s64, lens = flat_ids[keep], s64[keep], np.bincount(owner[keep], minlength=len(lens))
            ends = np.cumsum(lens).tolist()
            ids, values = flat_ids.tolist(), s64.tolist()
            d = {q: dict(zip(ids[a:b], values[a:b])) for q, a, b in zip(written, [0, *ends[:-1]], ends)}
    if bad is not None:  # NaN has no order: sorting on it scrambles the query's other documents too
        raise DataError(f"evaluate: query {bad[0]!r} gives document {bad[1]!r} the score NaN; expected numbers")
    if ignore_identical_ids:
        for qid, docs in d.items():  # (the dicts are this function's own)
            docs.pop(qid, None)
    return d


def evaluate(
    run: Run | Mapping[str, Mapping[str, float]],
    qrels: Mapping[Any, Mapping[Any, int]] | pd.DataFrame | str | os.PathLike[str],
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    *, ignore_identical_ids: bool = True, relevance_level: int = 1, annotated: Iterable[Any] | None = None,
) -> EvalResult:
    """Score a run against judgements.

    Parameters
    ----------
    run : Run or dict ``{qid: {doc_id: score}}``
        The rankings to score: what a pipeline's ``search`` returns, or a mapping of each query id to its
        documents' scores (higher is better; a NaN score or a document listed twice is a :class:`DataError`).
    qrels : mapping ``{qid: {doc_id: relevance}}``, pandas DataFrame, or path
        What :class:`~ragkit.types.TrainSet` accepts, read the same way (:func:`~ragkit.types.as_qrels`): a
        mapping; a ``DataFrame`` with one row per judgement, columns ``query-id``, ``corpus-id``, ``score``
        (BEIR's) or another spelling of :data:`~ragkit.types.QRELS_COLUMNS` (``query_id``, ``doc_id``,
        ``relevance``; ``qid``, ``docno``, ``label``; ...); the path of a qrels file (BEIR's TSV or trec_eval's,
        :func:`~ragkit.eval.read_qrels`; a ``.csv`` file read by its header).  Ids are read as strings (``1`` and
        ``"1"`` name one query), grades as integers (``1``, ``1.0``, ``"1"``, negative ones too; 0.5 and
        ``True`` are refused).  Another shape (a list of rows, ``None``, the arguments swapped) is a
        :class:`DataError` naming the argument and the shape expected.
    metrics : str or list of str, default ``("ndcg@10", "recall@100", "map@10", "mrr@10", "p@10")``
        ``ndcg@k``, ``recall@k``, ``map@k``, ``mrr@k``, ``p@k``, and BEIR's ``r_cap@k``, ``hole@k``,
        ``acc@k`` (at least one; names are read case-insensitively, ``"nDCG@10"`` is ``ndcg@10``, and
        ir_measures' ``R@k``, ``AP@k`` and ``RR@k`` as ``recall@k``, ``map@k`` and ``mrr@k``).
        ``ndcg@k``'s gain is linear: a document's gain is its grade (trec_eval's ``ndcg_cut``, the nDCG that
        pytrec_eval and BEIR report), discounted by ``log2(rank + 1)``, not the exponential ``2**grade - 1``
        some toolkits use; the two agree on binary qrels and differ on graded ones (example below).
        ``mrr@k``, ``acc@k``, ``r_cap@k`` and ``hole@k`` rank tied scores in trec_eval's order, as the
        others do (score descending compared as float32, then document id descending), where BEIR's
        ``evaluate_custom`` keeps the run's insertion order among ties: on tied scores they can differ
        from BEIR's numbers.  The three BEIR metrics are defined as BEIR's ``custom_metrics`` intend them,
        and averaged like every other metric, over the judged queries (below); BEIR's own code differs:

        * ``r_cap@k``: relevant documents in the top k over ``min(k, relevant documents judged)``; a judged
          query with no relevant judgement scores 0.  BEIR's ``recall_cap`` raises (``KeyError``) on a run
          query that the qrels lack and divides by zero on one with no relevant judgement.
        * ``hole@k``: the share of the top k that no judgement of the qrels names, for any query (nor
          ``annotated``).  BEIR's ``hole`` divides the sum by the number of queries of the run, unjudged
          ones included.
        * ``acc@k``: 1 when a relevant document is in the top k, else 0.  BEIR's ``top_k_accuracy`` sorts
          each query's document ids by their second character, not by score (``sorted(doc_scores.keys(),
          key=lambda item: item[1])``), so its numbers are not a top-k accuracy.
    ignore_identical_ids : bool, default True
        Drop from the run every document whose id is its query's id (BEIR's convention, for datasets
        where a query is also a document: ArguAna, Quora); see below.
    relevance_level : int, default 1
        The lowest grade counted as relevant by the binary measures (recall, MAP, MRR, precision, and
        ``r_cap``/``acc``; trec_eval's ``-l``): 2 on graded qrels where 1 means "partly relevant".  nDCG reads
        the grades themselves.  An integer >= 1; a level above every grade of the qrels (2 on SciFact's binary
        qrels) is a :class:`ParamError`: it would score those metrics 0.
    annotated : iterable of str, optional
        The ids of documents judged elsewhere, which ``hole@k`` counts as judged too: where ``qrels`` are the
        judgements of some of a split's queries, the documents the whole split judges (``{d for rel in
        split_qrels.values() for d in rel}``), so that hole@k is what it is in a run of the whole split.  Other
        metrics do not read it.

    Returns
    -------
    EvalResult
        ``scores`` (the mean of each metric over the judged queries) and ``per_query`` (``{metric: {query_id:
        value}}``), keyed by the metric names as given, surrounding whitespace removed.  ``result[name]`` looks a
        metric up in any spelling :func:`parse_metric` reads (case-insensitive: ``result["nDCG@10"]`` after
        asking for ``"ndcg@10"``); the dicts ``result.scores`` and ``result.per_query`` hold the names as given.
        ``relevance_level``, ``ignore_identical_ids`` and ``qrels_fingerprint`` (of the judgements of the queries
        scored: :func:`~ragkit.eval.compare.scored_qrels_fingerprint`, one pass over them, ~0.5-0.9 s per million
        judgements) record how it was scored: :func:`~ragkit.eval.compare.compare` refuses results scored otherwise
        or against other judgements.

    Notes
    -----
    ``ignore_identical_ids`` drops a document whose id is the query's id from the run; where the qrels
    judge such a document relevant it then counts as not found (``EvalResult.ignored_judged`` counts them,
    and a warning on the ``ragkit`` logger says how many: on MS MARCO-like numeric ids a query and
    the passage judged for it can share an id by chance; ``ignore_identical_ids=False`` scores them).
    A run searched as deep as the deepest cut-off loses one document per query that found itself:
    :func:`~ragkit.eval.drop_identical_ids` on a run one deeper keeps the cut-off full, as BEIR's search does.

    Queries in the qrels that the run lacks count as 0 (trec_eval's ``-c``), as is
    standard when reporting BEIR numbers, and a warning on the ``ragkit`` logger says how many (a run
    of some of the queries, ``pipe.search(queries[:10])``, is scored over every judged query: pass
    ``{q: qrels[q] for q in run.query_ids if q in qrels}`` to score only its own; it names the run's queries
    that are judged nowhere, and asks about ``'1'`` for a judged ``'001'``); queries the qrels lack, or hold
    with no judged document, are skipped (as pytrec_eval does).  A judged query with no judgement at or above
    ``relevance_level`` scores 0 on the binary measures whatever the run (one judged only 0, on nDCG too), as
    in trec_eval: a warning says how many (once per set of judgements).  A run that shares no
    query with the qrels is a :class:`DataError` (judgements of another split, not a score of 0).  A run none
    of whose document ids is judged at all (for any query, at any grade) scores 0 everywhere: a warning says so,
    with the hint query ids get (``'04983' is judged as '4983'?``).  A document
    listed twice for one query is a :class:`DataError`, as in trec_eval.

    A run that a fitted pipeline's ``search`` returned knows which of its queries the pipeline learned from
    (its ``learned_from`` attribute, :class:`~ragkit.Run`; given in ``fit(corpus, train=...)``): when some are
    scored, a warning on the ``ragkit`` logger says how many (their scores measure what was taught, not held-out
    quality; ``ragkit eval`` refuses them); another names, once, the scored queries that have the text of a query
    it learned from under another id (its ``learned_text_from``: not held out if they ask the same question).  A
    run built by hand or read from a TREC file knows none.

    Examples
    --------
    >>> from ragkit import Run, evaluate
    >>> run = Run.from_dict({"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d3": 0.5}})
    >>> result = evaluate(run, {"q1": {"d2": 1}, "q2": {"d3": 1}}, ["ndcg@10", "recall@10"])
    >>> round(result["nDCG@10"], 4), result["recall@10"]
    (0.8155, 1.0)
    >>> result.per_query["recall@10"]
    {'q1': 1.0, 'q2': 1.0}

    nDCG's gain is the grade itself (linear), not ``2**grade - 1`` (which would give 0.308 here):

    >>> graded = evaluate(Run.from_dict({"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}}),
    ...                   {"q1": {"d1": 1, "d2": 2, "d4": 3}}, "ndcg@10")
    >>> round(graded["ndcg@10"], 4)  # (1/log2(2) + 2/log2(3)) / (3/log2(2) + 2/log2(3) + 1/log2(4))
    0.475
    """
    result = _evaluate_noted(run, qrels, metrics, ignore_identical_ids=ignore_identical_ids,
                             relevance_level=relevance_level, annotated=_annotated_ids(annotated), fingerprint=True)
    _note_learned(run, result)
    return result


def _annotated_ids(annotated: Iterable[Any] | None) -> frozenset[str] | None:
    """:func:`evaluate`'s ``annotated`` as a set of string ids (``None`` as it is); a string, a mapping (qrels:
    their document ids are asked for) or a non-iterable is a :class:`DataError` saying what to pass."""
    if annotated is None:
        return None
    if isinstance(annotated, (str, bytes, Mapping)) or not isinstance(annotated, Iterable):
        hint = (": for judgements, pass their document ids, {d for rel in qrels.values() for d in rel}"
                if isinstance(annotated, Mapping) else "")
        raise DataError(f"evaluate: annotated must be a collection of document ids (a set of strings), got "
                        f"{_kind(annotated)}{hint}")
    return frozenset(x if type(x) is str else str(x) for x in annotated)


def _note_learned(run: Run | Mapping[str, Mapping[str, float]], result: EvalResult) -> None:
    """Warn (``ragkit`` logger) when queries the pipeline that made ``run`` learned from
    (:attr:`Run.learned_from <ragkit.run.Run.learned_from>`) are among the queries ``result`` scores: their
    scores are not held out; and, once, those under another id with the text of a learned query
    (:attr:`Run.learned_text_from <ragkit.run.Run.learned_text_from>`), not held out if they ask the same question."""
    learned = run.learned_from if isinstance(run, Run) else None
    twins = run.learned_text_from if isinstance(run, Run) else None
    if not learned and not twins:
        return
    from ragkit._queries import warn_same_text

    scored = next(iter(result.per_query.values()), {})  # every judged query, whatever the run holds
    # a learned question under another id (Run.learned_text_from), as Operator.learned_from warns of it
    warn_same_text([q for q in twins or () if q in scored], len(scored), "evaluate",
                   "a query the pipeline that made this run learned from")
    taught = [q for q in learned or () if q in scored]
    if taught:
        n = len(taught)
        _log.warning(f"evaluate: {n} of the {len(scored)} scored queries {'were' if n > 1 else 'was'} learned from by "
                     f"the pipeline that made this run ({some_ids(taught)}); scores on {'them' if n > 1 else 'it'} "
                     "are not held out: score queries it did not learn from (pipeline.learned_from(queries) lists "
                     "those it did)")


def _evaluate_noted(
    run: Run | Mapping[str, Mapping[str, float]],
    qrels: Mapping[Any, Mapping[Any, int]] | pd.DataFrame | str | os.PathLike[str],
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    *, ignore_identical_ids: bool = True, relevance_level: int = 1, note_unsearched: bool = True,
    note_level: bool = True, note_identical: bool = True, qrels_checked: bool = False, who: str = "evaluate",
    annotated: Collection[str] | None = None, fingerprint: bool = False,
) -> EvalResult:
    """:func:`evaluate`, whose warning of judged queries the run lacks is left out with ``note_unsearched=False``
    and whose warning of queries with no judgement at ``relevance_level`` (:func:`level_note`) with
    ``note_level=False`` (:func:`~ragkit.eval.compare.load_result` says both in the words of ``ragkit compare``),
    and whose warning of judged documents with their query's id (``EvalResult.ignored_judged``) with
    ``note_identical=False`` (``ragkit compare`` says it per run file, in its options' words);
    ``qrels_checked`` and ``annotated``: as :func:`_evaluate`.  When every value but hole@k's is 0, a warning
    starting ``who`` says whether none of the run's documents is judged at all (:func:`unjudged_docs_note`).
    ``fingerprint``: set the result's ``qrels_fingerprint``, the
    :func:`~ragkit.eval.compare.scored_qrels_fingerprint` of the judgements of the queries it scored (one pass over
    them, ~0.5-0.9 s per million judgements; callers that compute it on their own leave it out)."""
    judgements: Mapping[str, Mapping[str, int]] = cast("Mapping[str, Mapping[str, int]]", qrels)
    if not qrels_checked and not isinstance(qrels, Run):  # once, for the scores and the note (a Run: refused below)
        try:  # (a DataFrame, a path: read as TrainSet does)
            judgements, qrels_checked = as_qrels(qrels, "evaluate"), True
        except DataError as e:
            if "is not an integer relevance grade" in str(e) and _all_grades(run):
                raise DataError(f"{e}; the run holds only integer values, like grades: are the arguments swapped? "
                                "evaluate(run, qrels)") from None
            raise
    result, ignored = _evaluate(run, judgements, metrics, ignore_identical_ids=ignore_identical_ids,
                                relevance_level=relevance_level, qrels_checked=qrels_checked, annotated=annotated)
    if fingerprint:  # (compare refuses results of other judgements by it; compare imports this module)
        from ragkit.eval.compare import scored_qrels_fingerprint

        result.qrels_fingerprint = scored_qrels_fingerprint(judgements, next(iter(result.per_query.values()), {}))
    if note_unsearched:
        _note_unsearched(run, result)
    zero = all(not any(v.values()) for m, v in result.per_query.items() if parse_metric(m)[0] != "hole")
    if zero:  # (only then: the documents of a run that scores anything are judged somewhere)
        docs = unjudged_docs_note(run, judgements)
        if docs:
            _log.warning(f"{who}: {docs}")
    if note_level:
        said = level_note(judgements, relevance_level)
        if said:
            say_once(said, f"evaluate: {said}", logging.WARNING)
    n = result.ignored_judged
    # once per set of judgements: a learner evaluates the same ones many times
    if note_identical and n and ignored not in _WARNED:
        if len(_WARNED) > 1000:
            _WARNED.clear()
        _WARNED.add(ignored)
        _log.warning(f"evaluate: {n} judged-relevant document{'s have their' if n > 1 else ' has its'} query's id "
                     f"and {'are' if n > 1 else 'is'} never scored as retrieved (ignore_identical_ids=True drops a "
                     "document with its query's id from the run, as BEIR does for ArguAna and Quora), so "
                     f"{'they count' if n > 1 else 'it counts'} as not found; pass ignore_identical_ids=False "
                     "(ragkit eval and compare: --keep-identical-ids) to score "
                     f"{'them' if n > 1 else 'it'} (EvalResult.ignored_judged counts them)")
    return result


def _all_grades(run: Any) -> bool:
    """Whether ``run`` is a mapping of mappings whose values are all whole numbers (``1``, ``2.0``; no bool), as
    judgements' grades are: given as the run while the qrels hold scores (0.7), the arguments were swapped."""
    if isinstance(run, Run) or not isinstance(run, Mapping) or not all(isinstance(v, Mapping) for v in run.values()):
        return False
    values = list(chain.from_iterable(docs.values() for docs in run.values()))
    return bool(values) and all(
        not isinstance(v, (bool, np.bool_)) and (isinstance(v, (int, np.integer))
                                                 or (isinstance(v, (float, np.floating)) and float(v).is_integer()))
        for v in values)


def _note_unsearched(run: Run | Mapping[str, Mapping[str, float]], result: EvalResult) -> None:
    """Warn (``ragkit`` logger, once per call) when judged queries of ``result`` are not in ``run``: they
    count as 0 in every mean (trec_eval's ``-c``), which a run of a few of the queries does not expect.  The
    run's queries that are judged nowhere are named too (:func:`unjudged_note`): ``'1'`` for a judged ``'001'``
    scores 0 where the query was searched."""
    scored = next(iter(result.per_query.values()), {})  # every judged query, whatever the run holds
    ran_ids = list(run.query_ids) if isinstance(run, Run) else _key_ids(run, "evaluate: run's query ids")
    ran = set(ran_ids)
    lacking = [q for q in scored if q not in ran]
    if lacking:
        missing = len(lacking)
        ids = "run.query_ids" if isinstance(run, Run) else "run"
        unjudged, misspelled = unjudged_note(ran_ids, scored, lacking)
        subset = f"to score only the run's queries pass {{q: qrels[q] for q in {ids} if q in qrels}}"
        fix = unjudged if misspelled else "; ".join(x for x in (unjudged, subset) if x)
        _log.warning(f"evaluate: {missing} of the {len(scored)} judged queries {'are' if missing > 1 else 'is'} not in "
                     f"the run and count{'' if missing > 1 else 's'} as 0 (trec_eval -c), so each mean is over all "
                     f"{len(scored)}; {fix}")


def _respelling(qid: str) -> str:
    """``qid`` as :func:`respelled` compares it: in Unicode's composed form (NFC: ``'e\\u0301'``, an ``e`` and a
    combining accent, is ``'\\xe9'``, as one id may be written by one tool and the other by another), surrounding
    spaces dropped, case folded, and each run of digits without its leading zeros (``'Q007'`` -> ``'q7'``)."""
    return re.sub(r"\d+", lambda m: m.group().lstrip("0") or "0", unicodedata.normalize("NFC", qid).strip().casefold())


def normal_form(text: str) -> str:
    """The Unicode normalization form ``text`` is in, for a message: ``'NFC'`` (composed: ``'\\xe9'``), ``'NFD'``
    (decomposed: ``'e\\u0301'``), or ``'neither NFC nor NFD'`` (a mix)."""
    if unicodedata.is_normalized("NFC", text):
        return "NFC"
    return "NFD" if unicodedata.is_normalized("NFD", text) else "neither NFC nor NFD"


def respelt_pair(given: str, known: str, verb: str = "is judged as", where: str = "") -> str:
    """``"'1' is judged as '001'?"``: an id ``given`` that names ``known`` once written alike (:func:`respelled`),
    for a hint (``verb`` between them, ``where`` after the second: ``"'1' is '0001' in queries.jsonl?"``).  Where
    the two differ only in their Unicode normalization form (``'caf\\xe9'``, composed, and ``'cafe\\u0301'``,
    decomposed, look alike on screen) they are shown with :func:`ascii`, with the form of each and how to write one
    as the other (``unicodedata.normalize``)."""
    if unicodedata.normalize("NFC", given) != unicodedata.normalize("NFC", known):
        return f"{given!r} {verb} {known!r}{where}?"
    want = normal_form(known)
    fix = f"unicodedata.normalize({want!r}, id)" if want in ("NFC", "NFD") else "one normalization form for both"
    return (f"{ascii(given)} {verb} {ascii(known)}{where}? (one text in two Unicode normalization forms, "
            f"{normal_form(given)} and {want}, which look alike: write both in one, e.g. {fix})")


def respelled(unjudged: Sequence[str], judged: Iterable[str]) -> list[tuple[str, str]]:
    """``(run id, judged id)`` for each id of ``unjudged`` that names one of ``judged`` once leading zeros,
    case, surrounding spaces and Unicode normalization are set aside (``'1'`` and ``'001'``, ``'Q7'`` and ``'q07'``,
    ``'caf\\xe9'`` and ``'cafe\\u0301'``), in the order of ``unjudged``: query ids rewritten on the way (a
    spreadsheet dropping zeros) score 0 silently."""
    by_key: dict[str, str] = {}
    for q in judged:
        by_key.setdefault(_respelling(q), q)
    return [(u, by_key[k]) for u in unjudged if (k := _respelling(u)) in by_key]


def unjudged_note(run_ids: Sequence[str], judged: Collection[str], lacking: Sequence[str],
                  where: str = "") -> tuple[str, bool]:
    """The clause naming the queries of a run (``run_ids``) that ``judged`` lacks (``""`` when there are none),
    and whether one of them is a judged id the run lacks (``lacking``) spelled otherwise (:func:`respelled`):
    ``"10 of the run's 42 queries are not judged ('1', '3', ...): '1' is judged as '001'? (...)"``.  ``where``
    follows "judged" (``"in split 'dev'"``)."""
    unjudged = [q for q in run_ids if q not in judged]
    if not unjudged:
        return "", False
    n = len(unjudged)
    said = (f"{n} of the run's {len(run_ids)} queries {'are' if n > 1 else 'is'} not judged"
            f"{' ' + where if where else ''} ({some_ids(unjudged)})")
    hint = respelled_hint(unjudged, lacking, "query", " that the run lacks")
    return said + (f": {hint}" if hint else ""), bool(hint)


def refuse_other_queries(who: str, run_ids: Sequence[str], judged: Mapping[str, Any]) -> None:
    """Refuse a run none of whose queries ``run_ids`` (non-empty) is among the ``judged`` ones: every query would
    count 0, the judgements being another run's or split's.  The :class:`~ragkit.errors.DataError` (prefixed
    ``who``) names some ids of each and, where they are respelled ids of judged queries (``'001'`` for ``'1'``,
    ``'caf\\xe9'`` for ``'cafe\\u0301'``), says so (:func:`respelled_hint`)."""
    if not run_ids or judged.keys() & set(run_ids):
        return
    hint = respelled_hint(list(run_ids), judged, "query")
    raise DataError(f"{who}: none of the run's {len(run_ids)} queries ({some_ids(run_ids)}) is judged in the qrels, "
                    f"which judge {len(judged)} other queries ({some_ids(judged)}); "
                    + (hint or "are these the judgements of another split?"))


def respelled_hint(unjudged: Sequence[str], judged: Iterable[str], noun: str, lacks: str = "") -> str:
    """``"'1' is judged as '001'? (3 of the run's unjudged ids name judged queries ...)"``: the clause on the ids of
    ``unjudged`` (a run's) that name one of ``judged`` once leading zeros, case, spaces and Unicode normalization
    are set aside (:func:`respelled`: shown with :func:`respelt_pair`), ``""`` when none does.  ``noun`` is what
    the ids name (``"query"``, ``"document"``), ``lacks`` follows it (``" that the run lacks"``).  Query ids and
    document ids are hinted at in the same words."""
    pairs = respelled(unjudged, judged)
    if not pairs:
        return ""
    u, j = pairs[0]
    many = len(pairs) > 1
    plural = {"query": "queries"}.get(noun, noun + "s")
    return (f"{respelt_pair(u, j)} ({len(pairs)} of the run's unjudged ids "
            f"{f'name judged {plural}' if many else f'names a judged {noun}'}{lacks} once "
            f"leading zeros, case, spaces and Unicode normalization are set aside; write the run's {noun} ids as the "
            "judgements do)")


#: :func:`unjudged_docs_note`: a run of fewer queries, or retrieving fewer distinct document ids, may miss every
#: judged document by chance (its note says so too)
_FEW_QUERIES, _FEW_IDS = 10, 100


def unjudged_docs_note(run: Run | Mapping[str, Mapping[str, float]], judged: Mapping[str, Mapping[str, int]]) -> str:
    """A sentence when none of the document ids ``run`` retrieves (a :class:`Run` or ``{query_id: {doc_id:
    score}}``) is judged at all (at any grade, for any query) in ``judged``, ``""`` otherwise: every metric of such
    a run is 0 (a run of another corpus, or of document ids rewritten on the way: ``'04983'`` for ``'4983'``), which
    a score of 0 alone does not tell.  Names some of the run's ids and the judgements', with the hint
    :func:`respelled_hint` gives query ids.  The test is on the whole run (set operations, no loop over queries): a
    run that retrieves a judged document for any of its queries is said nothing of."""
    if isinstance(run, Run):
        flat = np.concatenate(run.doc_ids).tolist() if any(len(d) for d in run.doc_ids) else []
        retrieved = set(flat)
        n_q = len(run)
    else:
        retrieved = set().union(*string_ids(run, "evaluate").values()) if run else set()
        n_q = len(run)
    retrieved.discard(_NO_DOC)
    known: set[str] = set().union(*judged.values()) if judged else set()
    if not retrieved or not known or not retrieved.isdisjoint(known):
        return ""
    ids = sorted(map(str, retrieved))
    hint = respelled_hint(ids, known, "document")
    # a run this small can miss every judged document by chance: another corpus is then only one of the causes
    small = n_q < _FEW_QUERIES or len(retrieved) < _FEW_IDS
    n_d, n_k = len(retrieved), len(known)
    return (f"none of the {n_d} document id{'s' * (n_d != 1)} the run retrieves for its {n_q} "
            f"quer{'ies' if n_q != 1 else 'y'} ({some_ids(ids)}) is judged in the qrels, which judge {n_k} "
            f"document{'s' * (n_k != 1)} ({some_ids(sorted(known))}), so every metric but hole@k is 0 for every "
            "query; "
            + (hint or "is it a run of another corpus, or are its document ids written otherwise than the "
                       "judgements'" + (", or did it simply miss them?" if small else "?")))


def level_note(qrels: Mapping[str, Mapping[str, int]], relevance_level: int, label: str = "the relevance level") -> str:
    """A sentence on the judged queries of ``qrels`` (checked: integer grades) with no judgement at or above
    ``relevance_level``, ``""`` when there are none: whatever the run, they score 0 on the binary metrics
    (recall, MAP, MRR, P, r_cap, acc) as trec_eval scores them, and those judged only 0 on nDCG too, which
    caps each mean below 1 (16 of 42 queries with a grade 2: recall 0.3810 at most, at level 2).  ``label`` names
    the level (``"--relevance-level"``)."""
    judged = {q: rel for q, rel in qrels.items() if rel}
    top = dict(zip(judged, (max(rel.values()) for rel in judged.values())))
    below = [q for q, g in top.items() if g < relevance_level]
    if not below:
        return ""
    k, n = len(below), len(judged)
    head = (f"{k} of the {n} judged queries {'have' if k > 1 else 'has'} no judgement >= {relevance_level} "
            f"({label}; e.g. {some_ids(below, 2)})")
    cap = f"{n - k}/{n} = {(n - k) / n:.4f}"
    if relevance_level <= 1:
        return (f"{head}, only {_grades_seen(judged[q] for q in below)}: {'they score' if k > 1 else 'it scores'} 0 "
                f"on every metric but hole@k whatever the run (as trec_eval), so no such mean exceeds {cap}")
    zero = [q for q in below if top[q] < 1]
    return (f"{head}: {'they score' if k > 1 else 'it scores'} 0 on recall, MAP, MRR, P, r_cap and acc whatever the "
            f"run (as trec_eval), so none of those means exceeds {cap}; nDCG still counts their lower grades"
            + (f" ({len(zero)} judged only {_grades_seen(judged[q] for q in zero).removeprefix('grade ')} score"
               f"{'' if len(zero) > 1 else 's'} 0 on it too)" if zero else ""))


def _grades_seen(judgements: Iterable[Mapping[str, int]]) -> str:
    """``"grade 0"``, ``"grades -1 and 0"``, ``"grades -2, -1 and 0"``: the distinct grades of ``judgements``."""
    seen = sorted({int(g) for rel in judgements for g in rel.values()})
    words = [str(g) for g in seen]
    return f"grade {words[0]}" if len(words) == 1 else f"grades {', '.join(words[:-1])} and {words[-1]}"


def qrels_fingerprint(qrels: Mapping[str, Mapping[str, int]]) -> str:
    """``"sha256:<64 hex digits>"`` identifying a set of judgements (checked: string ids, integer grades, as
    :func:`~ragkit.types.check_qrels` returns them): the SHA-256 of every ``query<TAB>document<TAB>grade`` line,
    sorted, queries with no judgement left out.  The grades are hashed as read, before any ``relevance_level``
    (which :func:`~ragkit.eval.compare.compare` checks on its own); the order of the file, of the queries and of
    their documents changes nothing.  :func:`~ragkit.eval.compare.scored_qrels_fingerprint` applies it to the
    judgements of the queries a result was scored on (``"sha256-scored:..."``), which ``ragkit eval`` records as
    ``settings.qrels_fingerprint``; ``ragkit compare`` refuses results whose fingerprints of one kind differ
    (judgements of another copy of the dataset)."""
    import hashlib

    lines = sorted(f"{q}\t{d}\t{int(g)}\n" for q, rel in qrels.items() for d, g in rel.items())
    return "sha256:" + hashlib.sha256("".join(lines).encode("utf-8", "surrogatepass")).hexdigest()


#: Sentences :func:`say_once` has logged: each is said once (a learner, or ``ragkit compare`` of several run files,
#: evaluates the same judgements many times)
_SAID: set[str] = set()


def say_once(key: str, message: str, level: int = logging.INFO) -> None:
    """Log ``message`` on the ``ragkit`` logger at ``level``, unless a message of the same ``key`` was logged
    (thread-safe: :func:`~ragkit._files.first_time`; past 1000 keys, the record of them starts afresh)."""
    if first_time(_SAID, key, limit=1000):
        _log.log(level, message)


#: The ``(relevance_level, query ids)`` of judged documents ignored for their query's id that :func:`evaluate`
#: has warned of: each set is said once (fusion weights are learned by evaluating hundreds of candidates)
_WARNED: set[tuple[int, tuple[str, ...]]] = set()


def _evaluate(
    run: Run | Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    *, ignore_identical_ids: bool = True, relevance_level: int = 1, qrels_checked: bool = False,
    annotated: Collection[str] | None = None, who: str = "evaluate",
) -> tuple[EvalResult, tuple[int, tuple[str, ...]]]:
    """:func:`evaluate` without its warning of ignored judged documents (the traces' many calls, and
    ``ragkit eval``, which says it in its own words), and ``(relevance_level, the ids of the queries whose
    judged-relevant document was ignored)``.  ``qrels_checked``: ``qrels`` is what
    :func:`~ragkit.types.check_qrels` returns (string ids, integer grades), not checked again: a learner
    checks its judgements once and evaluates hundreds of candidates on them (~20% of each evaluation).
    ``annotated``: document ids (strings, a set for speed) hole@k counts as judged besides those ``qrels`` judge
    (the whole split's, where ``qrels`` are those of some of its queries: ``ragkit eval --limit``).  ``who``: the
    public function called, for the error of a metric named twice."""
    import pytrec_eval

    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, Iterable) or isinstance(metrics, Mapping):
        raise DataError(f"evaluate: metrics must be a metric name or a list of them (e.g. ['ndcg@10']), got "
                        f"{metrics!r:.60}")
    metrics = list(metrics)  # (every unreadable name refused at once)
    families = parse_metrics(metrics)
    twice = _named_twice(metrics, families)  # ("ndcg@10 " is "ndcg@10", not a metric of its own)
    if twice:
        raise DataError(f"{who}: metrics {_twice_said(twice)}")
    parsed = [(name.strip(), fam, k) for name, (fam, k) in zip(metrics, families)]
    if not parsed:
        raise DataError(f"evaluate: no metric asked for; give at least one, e.g. {list(DEFAULT_METRICS[:2])}")
    if isinstance(qrels, Run):
        raise DataError("evaluate: qrels must be a mapping {query_id: {doc_id: grade}}, got a Run; the arguments "
                        "are evaluate(run, qrels)")
    # a query whose judgement dict is empty is no judged query (pytrec_eval drops it)
    judged = {q: rel for q, rel in (qrels if qrels_checked else check_qrels(qrels, "evaluate")).items() if rel}
    if not judged:
        raise DataError(f"evaluate: every one of the {len(qrels)} queries of the qrels has an empty judgement list"
                        if qrels else "evaluate: qrels are empty")
    relevance_level = check_relevance_level(judged, relevance_level)  # (an integer grade >= 1 some grade reaches)
    # (a NUL in an id, which trec_eval would read cut there, is refused by check_qrels: above, or by the caller's
    # check_qrels / as_qrels where qrels_checked)
    trec_judged = _trec_grades(judged)
    d = _clean_run(run, ignore_identical_ids, max(k for _, _, k in parsed) + 1 if parsed else None)
    refuse_other_queries("evaluate", list(d), judged)  # every query would count 0: judgements of other queries
    d_full = {q: d.get(q, {}) for q in judged}
    # pytrec_eval drops queries with an empty run; give them a dummy non-relevant doc so they count as 0
    # (its id holds a tab, which no qrels id can: a TSV column, or a whitespace-separated one)
    d_full = {q: (docs if docs else {_NO_DOC: 0.0}) for q, docs in d_full.items()}
    measures = {f"{_TREC[fam]}.{k}" for _, fam, k in parsed if fam in _TREC}  # MRR@k and BEIR's own: below
    per_query: dict[str, dict[str, float]] = {}
    res = (pytrec_eval.RelevanceEvaluator(trec_judged, measures, relevance_level=relevance_level).evaluate(d_full)
           if measures else {})
    # MRR@k and BEIR's own: every query's top k in trec_eval's order at once (one sort of all the entries)
    beir_cuts = [k for _, fam, k in parsed if fam in _BEIR_CUSTOM]
    if beir_cuts:
        tops = _beir_tops(d_full, judged, max(beir_cuts), relevance_level, annotated,
                          holes=any(fam == "hole" for _, fam, _ in parsed))  # (only hole@k reads unjudged)
    for name, fam, k in parsed:
        if fam in _BEIR_CUSTOM:
            per_query[name] = dict(zip(d_full, _BEIR_CUSTOM[fam](*tops, k).tolist()))
        else:
            key = f"{_TREC[fam]}_{k}"
            per_query[name] = {q: float(v[key]) for q, v in res.items()}
    scores = {name: float(np.mean(list(v.values()))) if v else 0.0 for name, v in per_query.items()}
    ignored = tuple(q for q, rel in judged.items() if rel.get(q, 0) >= relevance_level) if ignore_identical_ids else ()
    result = EvalResult(scores=scores, per_query=per_query, ignored_judged=len(ignored),
                        relevance_level=relevance_level, ignore_identical_ids=bool(ignore_identical_ids))
    return result, (relevance_level, ignored)


def _trec_grades(judged: Mapping[str, Mapping[str, int]]) -> Mapping[str, Mapping[str, int]]:
    """``judged`` (checked, no query without a judgement) as pytrec_eval may be given it: each grade below -1
    raised to -1, which changes no trec_eval measure.  trec_eval reads every negative grade alike (a document in
    the pool but unjudged: ``form_res_rels.c``) but sizes a table by the query's highest grade + 1, so a query
    judged only below -1 (TREC Web's -2, junk) wrote out of its bounds and crashed the process.  One pass over the
    grades; only the queries holding such a grade are copied."""
    if min(chain.from_iterable(rel.values() for rel in judged.values())) >= -1:
        return judged
    out = dict(judged)
    for q in [q for q, rel in judged.items() if min(rel.values()) < -1]:
        out[q] = {d: max(g, -1) for d, g in judged[q].items()}
    return out


def _trec_heads(run: Mapping[str, Mapping[str, float]], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query of ``run`` cut to the documents scoring at least its k-th best float32 score (ties kept:
    its top ``k`` in trec_eval's order are among them) and put in trec_eval's order, flat: ``(lens, doc_ids,
    scores)`` as :func:`~ragkit.run._flat`.  All queries at once (one partition, one sort), as
    :func:`~ragkit.run.trec_head` orders one."""
    return _flat_heads(*_flat(run), k)


def _flat_heads(lens: np.ndarray, docs: np.ndarray, s64: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_trec_heads` of a run given flat: ``(lens, doc_ids, scores)`` as :func:`~ragkit.run._flat` gives
    them (a :class:`Run`'s arrays concatenated, say); no NaN score."""
    s32 = _f32(s64)  # (a score beyond float32's range is inf there, as trec_eval reads it: no numpy warning)
    owner = np.repeat(np.arange(len(lens)), lens)
    keep = _ties_kept(lens, s32, owner, k)
    if not keep.all():
        owner, docs, s64, s32 = owner[keep], docs[keep], s64[keep], s32[keep]
        lens = np.bincount(owner, minlength=len(lens))
    order = _trec_permutation(owner, docs, s32)
    return lens, docs[order], s64[order]


def _beir_tops(run: Mapping[str, Mapping[str, float]], judged: Mapping[str, Mapping[str, int]], k: int,
               relevance_level: int, annotated: Collection[str] | None = None, *,
               holes: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Each query's top ``k`` of ``run`` (its queries in order, each in trec_eval's order) as ``(relevant,
    unjudged, n_relevant)``: ``(n_q, k)`` booleans, a document judged ``>= relevance_level`` for its query,
    a retrieved document that no query's judgements name (padding, where fewer than ``k`` were retrieved, is
    neither), and ``(n_q,)`` the query's relevant judgements.  ``annotated``: document ids counted as judged
    besides those of ``judged`` (the whole split's); ``holes``: compute ``unjudged`` (``None`` without it: only
    hole@k reads it, and it costs a set of every judged id).  No loop over queries but the lookups of the top
    documents' judgements."""
    lens, docs, _ = _trec_heads(run, k)
    n_q = len(lens)
    owner = np.repeat(np.arange(n_q), lens)
    keep = np.arange(len(owner)) - np.repeat(np.cumsum(lens) - lens, lens) < k
    keep[keep] = docs[keep] != _NO_DOC  # (the placeholder of a query the run does not answer: no document)
    owner, docs = owner[keep], docs[keep].tolist()
    rank = np.arange(len(owner)) - np.searchsorted(owner, owner)  # (owner is sorted)
    qids = list(run)
    empty: Mapping[str, int] = {}
    grades = [judged.get(q, empty) for q in qids]
    relevant = np.zeros((n_q, k), bool)
    relevant[owner, rank] = np.fromiter((grades[i].get(d, 0) >= relevance_level for i, d in zip(owner.tolist(), docs)),
                                        bool, len(docs))
    unjudged = None
    if holes:
        named = {d for rel in judged.values() for d in rel}
        also: Collection[str] = annotated if annotated is not None else ()
        unjudged = np.zeros((n_q, k), bool)
        unjudged[owner, rank] = np.fromiter((d not in named and d not in also for d in docs), bool, len(docs))
    n_rel = np.array([sum(g >= relevance_level for g in rel.values()) for rel in grades], np.int64)
    return relevant, unjudged, n_rel


def _r_cap(relevant: np.ndarray, unjudged: np.ndarray | None, n_rel: np.ndarray, k: int) -> np.ndarray:
    """Capped recall: relevant documents in the top ``k`` over ``min(k, relevant judged)`` (0 without any)."""
    return relevant[:, :k].sum(1) / np.maximum(np.minimum(n_rel, k), 1)


def _hole(relevant: np.ndarray, unjudged: np.ndarray | None, n_rel: np.ndarray, k: int) -> np.ndarray:
    """Hole: documents of the top ``k`` that no query's judgements name, over ``k`` (as BEIR divides)."""
    assert unjudged is not None, "_beir_tops(..., holes=True) computes unjudged for hole@k"
    return unjudged[:, :k].sum(1) / k


def _mrr(relevant: np.ndarray, unjudged: np.ndarray | None, n_rel: np.ndarray, k: int) -> np.ndarray:
    """MRR@k: 1 / the rank of the first relevant document in the top ``k``, 0 without one (trec_eval's
    ``recip_rank`` of the top k, BEIR's ``mrr@k``)."""
    hit = relevant[:, :k]
    return np.where(hit.any(1), 1.0 / (hit.argmax(1) + 1), 0.0)


def _acc(relevant: np.ndarray, unjudged: np.ndarray | None, n_rel: np.ndarray, k: int) -> np.ndarray:
    """Top-k accuracy: 1 when a relevant document is in the top ``k``, else 0."""
    return np.asarray(relevant[:, :k].any(1), np.float64)


#: BEIR's ``evaluate_custom`` metrics beyond trec_eval's cut-off measures, computed from each query's top k in
#: trec_eval's order (:func:`_beir_tops`): MRR@k (trec_eval's ``recip_rank`` of the top k), capped recall, hole and
#: top-k accuracy (Thakur et al., "BEIR", NeurIPS 2021 Datasets and Benchmarks; Hole@10 measures unjudged documents)
_BEIR_CUSTOM: dict[str, Callable[[np.ndarray, np.ndarray | None, np.ndarray, int], np.ndarray]] = {
    "mrr": _mrr, "r_cap": _r_cap, "hole": _hole, "acc": _acc}


def check_relevance_level(qrels: Mapping[str, Mapping[str, int]] | None, relevance_level: int,
                          where: str = "evaluate", zero: str = "recall, MAP, MRR and P would all be 0") -> int:
    """``relevance_level`` as an ``int``, or a :class:`ParamError` (``where`` names the caller in the message): a
    level that is no integer grade >= 1 (``0``, ``1.5``, ``"2"``, ``True``), or one above 1 that no judgement of
    ``qrels`` reaches (2 on SciFact's binary qrels), naming the level and the qrels' highest grade: recall, MAP,
    MRR and P would all score 0 while nDCG, which reads the grades, would not change.  Level 1 is never refused
    (qrels of only 0 grades hold no relevant document whatever the level).  :func:`evaluate`,
    :func:`~ragkit.eval.relevance_labels` and :func:`~ragkit.eval.filter_report` call it; call it before a long
    search to fail early.  ``qrels=None`` (no judgements at hand yet): the first check only.  ``zero``: what the
    message says would score 0 (a search's trace computes recall alone)."""
    if isinstance(relevance_level, bool) or not isinstance(relevance_level, (int, np.integer)) or relevance_level < 1:
        raise ParamError(f"{where}: relevance_level must be an integer grade >= 1, got {relevance_level!r}")
    relevance_level = int(relevance_level)
    if relevance_level <= 1 or qrels is None:
        return relevance_level
    grades = np.fromiter((int(g) for rel in qrels.values() for g in rel.values()), np.int64)
    top = int(grades.max()) if len(grades) else 0
    if top < relevance_level:
        raise ParamError(f"{where}: relevance_level {relevance_level} counts no judgement as relevant: the qrels' "
                         f"highest grade is {top}, so {zero}"
                         + (f"; give a level of at most {top}" if top >= 1 else ""))
    return relevance_level


def paired_randomization_test(a: Mapping[str, float], b: Mapping[str, float], *, n_resamples: int = 10000,
                              seed: int = 0, weights: Mapping[str, float] | None = None) -> float:
    """Two-sided p-value of a paired randomisation (sign-flip) test on per-query values.

    The test Smucker, Allan & Carterette recommend for IR ("A Comparison of Statistical Significance Tests
    for Information Retrieval Evaluation", CIKM 2007): under the null hypothesis the two systems are
    exchangeable on each query, so the sign of each paired difference is flipped at random and the
    p-value is the share of resamples whose mean difference is at least as far from 0 as the observed one
    (``(1 + count) / (1 + n_resamples)``, never 0).  Where at most ``SIGN_FLIP_EXACT_MAX`` (20) of the
    differences are non-zero, it is the exact p-value instead: the share of all ``2**m`` sign patterns of
    those ``m`` (never below ``2**(1 - m)``; ``n_resamples`` and ``seed`` do not change it).

    Parameters
    ----------
    a, b : mapping of str -> float
        Per-query values of the two systems, ``{query_id: value}`` (``EvalResult.per_query[metric]``).
    n_resamples : int, default 10000
        Random sign flips drawn (a positive integer); the smallest p-value possible is
        ``1 / (1 + n_resamples)``.  Unused where the p-value is exact (at most 20 non-zero differences).
    seed : int, default 0
        Seed of the random signs: the same seed and values give the same p-value.
    weights : mapping of str -> float, optional
        A positive weight per shared query (below); ``None``: every query alike.

    Only queries present in both ``a`` and ``b`` are used; a NaN or infinite value among them is
    a :class:`DataError` naming the queries (it would make the p-value meaningless).  The
    statistic is the mean difference, or with ``weights`` (positive, per query; normalised to sum
    to 1) the weighted mean ``sum_i w_i (a_i - b_i)``: e.g. ``1 / (n_datasets * n_queries_of_its
    dataset)`` tests BEIR's mean over several datasets (CQADupStack; a sign flip moves no query
    out of its dataset, so each keeps its weight).  Vectorised: sign patterns or resamples in
    blocks of ``(block, n_queries)`` random signs, each block one matrix product (memory bounded by ~2 MB
    of signs whatever the number of queries).  :func:`~ragkit.eval.sign_flip_pvalues` tests several columns of
    differences with the same signs at once.
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ParamError(f"paired_randomization_test: n_resamples must be a positive integer, got {n_resamples!r}")
    qs = sorted(set(a) & set(b))
    if not qs:
        raise DataError("paired_randomization_test: the two results share no query")
    diff = np.array([a[q] - b[q] for q in qs], dtype=np.float64)
    bad = [qs[i] for i in np.flatnonzero(~np.isfinite(diff))]
    if bad:  # a NaN difference makes every comparison false: p would come out as small as it can be
        raise DataError(f"paired_randomization_test: {len(bad)} of the {len(qs)} shared queries have a value that "
                        f"is not a finite number in a or b ({some_ids(bad)}), e.g. a diversity measure of an empty "
                        "ranking; drop those queries or give them a value")
    if weights is not None:
        w = np.array([weights.get(q, np.nan) for q in qs], dtype=np.float64)
        if not (np.isfinite(w) & (w > 0)).all():
            raise DataError(f"paired_randomization_test: weights must give every shared query a positive finite "
                            f"weight; {int((~(np.isfinite(w) & (w > 0))).sum())} of the {len(qs)} have none")
        diff = diff * (w * (len(diff) / w.sum()))  # the weighted mean, as a plain mean of rescaled differences
    return float(sign_flip_pvalues(diff[:, None], n_resamples=n_resamples, seed=seed)[0])


#: Columns of :func:`sign_flip_pvalues` with at most this many non-zero differences get the exact p-value: all
#: ``2**m`` sign patterns of their ``m`` non-zero differences counted (meet in the middle: ~``2**(m / 2)`` work
#: and memory per column, each column by its own ``m``; at ``m = 20`` ~1 ms and ~50 kB a column, 500 columns
#: ~0.4 s), not a random sample of them (whose p-value could fall below the exact test's least, ``2**(1 - m)``).
SIGN_FLIP_EXACT_MAX = 20


def sign_flip_pvalues(diff: np.ndarray, *, n_resamples: int = 10000, seed: int = 0,
                      block: int | None = None) -> np.ndarray:
    """Two-sided sign-flip p-values of the mean of each column of ``diff`` (``(n_queries, k)`` float64
    paired differences, finite): ``(k,)`` float64.  Every column is tested with the same random signs, so
    column ``c`` gets exactly what :func:`paired_randomization_test` gives its differences alone (same
    ``seed``, queries in its sorted order): one draw of signs serves every (system, metric) of a comparison.

    A column with ``m <= SIGN_FLIP_EXACT_MAX`` (20) non-zero differences gets the exact p-value,
    ``#{sign patterns with |mean| >= observed} / 2**m`` over all ``2**m`` patterns of its non-zero
    differences (a zero contributes nothing whatever its sign; never below ``2**(1 - m)``, the observed signs
    and their opposite; ``n_resamples``, ``seed`` and ``block`` do not change it), counted column by column
    in ~``2**(m / 2)`` steps (meet in the middle: each half's signed sums, one sorted and searched).  Any
    other column gets the Monte Carlo p-value ``(1 + #{resamples with |mean| >= observed}) / (1 + n_resamples)``
    (never 0), the same whatever other columns are given.

    The random signs are random bits (one 64-bit word of the seeded PCG64 stream per 64 queries of a
    resample, so the numbers do not depend on ``block``), each block of ``block`` resamples (default: ~2 MB of
    ``(block, n_queries)`` float64 bits) one matrix product with every such column at once.  The differences
    are put on a grid (each moved by under ``9e-16 * sum |diff|``) on which every sum
    of them is exact, so a column's count does not depend on the other columns or on the BLAS; a pattern or
    resample within ``1e-9`` of the largest ``|difference|`` of the observed mean counts as reaching it (ties).
    5,000 queries x 200,000 resamples: ~0.7 s for 2 columns, ~1.3 s for 8 (signs drawn as int64: ~7 s)."""
    diff = np.asarray(diff, np.float64)
    n, k = diff.shape
    if block is not None and (isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1):
        raise ParamError(f"sign_flip_pvalues: block must be a positive number of resamples, got {block!r}")
    on_grid, step = _exact_grid(diff, 4 * np.abs(diff).sum(0))  # 2 * (bits @ grid) - total: exact
    total = on_grid.sum(0)
    observed = np.abs(total)
    tol = n * 1e-9 * np.abs(diff).max(0)  # |mean| within 1e-9 of the largest |difference|, on the sum
    nonzero = diff != 0
    m = nonzero.sum(0)
    exact = m <= SIGN_FLIP_EXACT_MAX
    p = np.empty(k)
    if exact.any():
        p[exact] = _exact_sign_flip(on_grid[:, exact], nonzero[:, exact], step[exact], observed[exact] - tol[exact])
    sampled = np.flatnonzero(~exact)
    if not len(sampled):
        return p
    width = 64 * -(-n // 64)  # queries padded to whole 64-bit words of random bits
    grid = np.zeros((width, len(sampled)))
    grid[:n] = on_grid[:, sampled]
    bits = np.random.default_rng(seed).bit_generator
    block = int(block) if block is not None else max(1, (1 << 18) // width)  # 2 MB: cache-sized, one BLAS thread
    extreme = np.zeros(len(sampled), np.int64)
    with _one_blas_thread():
        for start in range(0, n_resamples, block):  # blocks of resamples, not queries
            b = min(block, n_resamples - start)
            words = bits.random_raw(b * (width // 64)).astype("<u8", copy=False)
            ones = np.unpackbits(words.view(np.uint8), bitorder="little").reshape(b, width)  # 0/1: +1 signs
            null = np.abs(2 * (ones.astype(np.float64) @ grid) - total[sampled])  # |sum of signed differences|
            extreme += np.sum(null >= observed[sampled] - tol[sampled], axis=0)
    p[sampled] = (extreme + 1) / (n_resamples + 1)
    return p


def _exact_sign_flip(on_grid: np.ndarray, nonzero: np.ndarray, step: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """Exact two-sided sign-flip p-values of :func:`sign_flip_pvalues`'s columns with few non-zero differences:
    ``on_grid`` ``(n_queries, c)`` float64 differences on the exact grid, ``nonzero`` ``(n_queries, c)`` bool,
    ``step`` ``(c,)`` each column's grid step, ``reach`` ``(c,)`` the ``|sum|`` a pattern must reach (observed
    less the tie tolerance): ``(c,)`` float64, the share of the ``2**m_j`` sign patterns of column ``j``'s own
    ``m_j`` non-zero differences whose ``|sum|`` reaches it.

    Meet in the middle, per column: the differences as integers (multiples of ``step``), split into halves
    ``A`` (``m_j // 2``) and ``B``; all ``2**|A|`` signed sums ``sA`` and the sorted ``2**|B|`` sums ``sB``; a
    pattern reaches iff ``sA + sB >= R`` or ``sA + sB <= -R`` with ``R = ceil(reach / step)`` (integer sums
    are exact, so this is ``|sum| >= reach`` exactly), counted by two searches per ``sA``; ``R <= 0``: every
    pattern.  At most ``1,024 x 1,024`` per column (``m_j <= 20``): ~0.1 ms and ~50 kB each, whatever the
    other columns' ``m``."""
    c = on_grid.shape[1]
    m = nonzero.sum(0)
    p = np.ones(c)
    reach_steps = np.ceil(reach / step)  # exact: step is a power of 2
    for j in np.flatnonzero(reach_steps > 0):  # columns (system x metric), each ~2**(m_j / 2): not a hot loop
        vals = np.round(on_grid[nonzero[:, j], j] / step[j]).astype(np.int64)  # exact: |sum| < 2**52
        half = int(m[j]) // 2
        sums_a, sums_b = _signed_sums(vals[:half]), np.sort(_signed_sums(vals[half:]))
        r = np.int64(reach_steps[j])
        hits = (len(sums_b) - np.searchsorted(sums_b, r - sums_a, side="left")).sum()  # sB >= R - sA
        hits += np.searchsorted(sums_b, -r - sums_a, side="right").sum()  # sB <= -R - sA (disjoint: R > 0)
        p[j] = int(hits) / float(1 << int(m[j]))
    return p


def _signed_sums(vals: np.ndarray) -> np.ndarray:
    """All ``2**len(vals)`` sums ``sum(+-vals)`` of ``vals`` (``(a,)`` int64): ``(2**a,)`` int64."""
    sums = np.zeros(1, np.int64)
    for v in vals:
        sums = np.concatenate([sums + v, sums - v])
    return sums


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """A context in which BLAS runs on one thread (threadpoolctl, which scikit-learn brings; without it, no
    change): the resampling loops make thousands of small ``(block, n_queries) @ (n_queries, k)`` products,
    which a second BLAS thread slows down as soon as another process holds a core (2 cores, one busy: 2 x 4
    columns took 40 s instead of 1 s)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _exact_grid(x: np.ndarray, reach: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(on_grid, step)``: each column of ``x`` (``(n, k)`` float64) rounded to a multiple of its
    ``step`` (``(k,)``, a power of 2), chosen so that any value up to ``reach`` (``(k,)``, a bound on every
    partial sum to be computed, e.g. ``sum |x|``) is an integer multiple of it below ``2**52``: products of
    small integers with ``on_grid`` and their sums, in any order (any BLAS kernel, any number of columns),
    are then exact.  The rounding moves a value by at most ``step / 2`` (below ``reach * 2.3e-16``)."""
    reach = np.asarray(reach, np.float64)
    _, e = np.frexp(np.where(reach > 0, reach, 1.0))  # reach < 2**e
    step = np.ldexp(1.0, e - 52)
    return np.round(x / step) * step, step


def per_query_ndcg(state: State, qrels: Mapping[str, Mapping[str, int]], corpus_ids: np.ndarray,
                   k: int = 10) -> np.ndarray:
    """nDCG@k (trec_eval's, through :func:`evaluate`) of each judged query of a pipeline ``state``.

    In state order, queries without judgements skipped: ``(n_judged,)`` float64.  What the
    learners (fusion weights, routers, loop judges) maximise and what traces report per step.
    ``corpus_ids``: ``(n_docs,)`` array of str, the document id of each corpus row (``corpus.ids``), which
    turns the rows of the state's rankings into the ids the qrels judge.
    """
    return per_query_metrics(state, qrels, corpus_ids, [f"ndcg@{k}"])[f"ndcg@{k}"]


def per_query_metrics(state: State, qrels: Mapping[str, Mapping[str, int]], corpus_ids: np.ndarray,
                      metrics: Sequence[str], *, relevance_level: int = 1,
                      ignore_identical_ids: bool = True) -> dict[str, np.ndarray]:
    """Each metric (``"ndcg@10"``, ``"recall@100"``, ...) of each judged query of a pipeline ``state``,
    computed by :func:`evaluate` (trec_eval's rules: its tie order, a document whose id is the query
    id ignored unless ``ignore_identical_ids=False``, binary metrics counting grades from
    ``relevance_level``): ``{metric: (n_judged,) float64}`` in state order, queries without judgements
    skipped."""
    return _per_query_metrics(state, qrels, corpus_ids, metrics, relevance_level=relevance_level,
                              ignore_identical_ids=ignore_identical_ids, who="per_query_metrics")


def _per_query_metrics(state: State, qrels: Mapping[str, Mapping[str, int]], corpus_ids: np.ndarray,
                       metrics: Sequence[str], *, relevance_level: int = 1, ignore_identical_ids: bool = True,
                       qrels_checked: bool = False, ids_checked: bool = False,
                       who: str = "evaluate") -> dict[str, np.ndarray]:
    """:func:`per_query_metrics`; ``qrels_checked``: ``qrels`` is what :func:`~ragkit.types.check_qrels`
    returns, not checked again (a learner's many calls on one set of judgements, a traced search's steps);
    ``ids_checked``: ``corpus_ids`` are a :class:`~ragkit.types.Corpus`'s ids, which it checked, not checked
    again as the run's document ids; ``who``: as :func:`_evaluate`'s."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    twice = _named_twice(metrics, parse_metrics(metrics))  # (refused where no query is judged too)
    if twice:
        raise DataError(f"{who}: metrics {_twice_said(twice)}")
    qids = [q for q in state.query_ids if qrels.get(q)]
    if not qids:
        return {m: np.zeros(0, np.float64) for m in metrics}
    rankings = state.rankings if state.rankings is not None else [Ranking.empty() for _ in state.query_ids]
    # trec_eval cuts at k in its own order (ties by doc id, not by ragkit's rank): keep every
    # document scoring at least the k-th score (k: the deepest metric), so a tie straddling the cut
    # is cut by trec_eval, and what the learners maximise is what evaluate reports (the full lists
    # cost ~10x more); one more document per query covers one ignored for having the query's id
    k = max(parse_metric(m)[1] for m in metrics) + 1
    doc_ids, scores = _with_ties_at(rankings, k, corpus_ids, state.query_ids)
    run = Run(list(state.query_ids), doc_ids, scores, _nan_checked=True,  # (_with_ties_at refused NaN)
              _ids_checked=ids_checked)
    # hole@k: a document judged for a query the state lacks is no hole (evaluate on the whole qrels says the same)
    annotated = ({d if type(d) is str else str(d) for rel in qrels.values() for d in rel}
                 if any(parse_metric(m)[0] == "hole" for m in metrics) and len(qids) < len(qrels) else None)
    pq = _evaluate(run, {q: qrels[q] for q in qids}, list(metrics), relevance_level=relevance_level,
                   ignore_identical_ids=ignore_identical_ids, qrels_checked=qrels_checked,
                   annotated=annotated, who=who)[0].per_query
    return {m: np.array([pq[m][q] for q in qids], dtype=np.float64) for m in metrics}


def _with_ties_at(rankings: Sequence[Ranking], k: int, corpus_ids: np.ndarray,
                  query_ids: Sequence[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per ranking, the ids and scores of its documents scoring at least its k-th best score
    (float32, as trec_eval), in ranking order; a ranking of at most ``k`` documents is kept whole.
    Vectorised over the rankings (one padded score matrix and one partition)."""
    n = len(rankings)
    lens = np.fromiter((len(r) for r in rankings), np.int64, n)
    if lens.sum() == 0:
        return [corpus_ids[:0] for _ in rankings], [np.zeros(0, np.float32) for _ in rankings]
    flat = np.concatenate([r.scores for r in rankings]).astype(np.float32)
    rows = np.concatenate([r.rows for r in rankings])
    owner = np.repeat(np.arange(n), lens)
    nan = np.flatnonzero(np.isnan(flat))
    if len(nan):  # as evaluate refuses it (the cut below would drop it silently)
        i = int(nan[0])
        raise DataError(f"evaluate: query {query_ids[owner[i]]!r} gives document {corpus_ids[rows[i]]!r} the score "
                        "NaN; expected numbers")
    keep = _ties_kept(lens, flat, owner, k)
    counts = np.bincount(owner[keep], minlength=n)
    return split_counts(corpus_ids[rows[keep]], counts), split_counts(flat[keep], counts)


def _ties_kept(lens: np.ndarray, flat: np.ndarray, owner: np.ndarray, k: int) -> np.ndarray:
    """``(n_entries,)`` bool over the concatenated float32 scores ``flat`` of rankings of lengths ``lens``
    (``owner``: each entry's ranking): the entries scoring at least their ranking's k-th best score
    (every entry of a ranking of at most ``k``).  One padded matrix of the long rankings, one partition."""
    long = np.flatnonzero(lens > k)
    if not len(long):
        return np.ones(len(flat), bool)
    starts = np.cumsum(lens) - lens
    width = int(lens[long].max())
    padded = np.full((len(long), width), -np.inf, np.float32)
    col = np.arange(width)
    inside = col[None, :] < lens[long][:, None]
    padded[inside] = flat[(starts[long][:, None] + col[None, :])[inside]]
    at = np.full(len(lens), -np.inf, np.float32)
    at[long] = -np.partition(-padded, k - 1, axis=1)[:, k - 1]
    return (flat >= at[owner]) | (lens[owner] <= k)


def _repeats_a_row(rows: np.ndarray, owner: np.ndarray, lens: np.ndarray) -> bool:
    """Whether some ranking lists a row twice: ``rows`` the concatenated rankings (``owner``: each entry's
    ranking, of lengths ``lens``).  Each ranking is sorted in a padded ``(n_rankings, longest)`` matrix
    (distinct negative pads), neighbours compared: 2.2x faster than one sort of ``owner * n + rows`` over
    the whole batch (5,000 queries x 1,000); that sort where padding would more than double the cells."""
    width = int(lens.max())
    if len(lens) * width > 2 * len(rows):  # uneven rankings: one flat sort
        key = np.sort(owner * (int(rows.max()) + 1) + rows)  # (a sort: numpy's hashed unique is 5x slower here)
        return bool((key[1:] == key[:-1]).any())
    col = np.arange(len(rows)) - np.repeat(np.cumsum(lens) - lens, lens)
    padded = np.broadcast_to(-1 - np.arange(width, dtype=np.int64), (len(lens), width)).copy()
    padded[owner, col] = rows
    padded.sort(axis=1)
    return bool((padded[:, 1:] == padded[:, :-1]).any())


def _cut_run(run: Run, k: int) -> Run:
    """``run`` with each query cut to the documents scoring at least its k-th best score (ties kept), which
    every metric cut at ``k - 1`` or less scores as the whole run (trec_eval cuts ties in its own order; one
    more document covers one ignored for having the query's id).  A run listing a document twice for a query
    longer than ``k`` is returned whole, for :meth:`Run.to_dict` to name it (the whole list is looked at):
    found from integer rows for a pipeline's run (with rankings); a run read from a TREC file or made by
    :meth:`Run.from_dict` lists each document once by construction (``Run._unique_ids_known``: not looked at);
    any other run by one ``set`` of each such query's ids.  A k=1000 run scored at 100: ~3x faster to
    evaluate; 3,000 queries x 1,000 documents read from a file, scored at 10 and 100: ~4x."""
    lens = np.fromiter((len(s) for s in run.scores), np.int64, len(run.scores))
    if not len(lens) or lens.max() <= k:
        return run
    owner = np.repeat(np.arange(len(lens)), lens)
    every_query_checked = run._unique_ids_known()  # (the rankings' rows below, or made with each id once)
    if run.rankings is not None and all(len(r) == n for r, n in zip(run.rankings, lens.tolist())):
        every_query_checked = True
        if _repeats_a_row(np.concatenate([r.rows for r in run.rankings]), owner, lens):
            return run  # a document twice for one query: to_dict names it
    elif not every_query_checked and \
            any(len(set(d.tolist())) != len(d) for d, n in zip(run.doc_ids, lens.tolist()) if n > k):
        return run  # (a query no longer than k is kept whole, for to_dict to look at)
    scores = np.concatenate(run.scores)
    keep = _ties_kept(lens, scores.astype(np.float32, copy=False), owner, k)
    counts = np.bincount(owner[keep], minlength=len(lens))
    return Run(run.query_ids, split_counts(np.concatenate(run.doc_ids)[keep], counts),
               split_counts(scores[keep], counts),  # (run's own ids and scores, checked when it was made)
               _nan_checked=True, _ids_checked=True,  # (a query kept whole unchecked: not known to hold each id once)
               _unique_ids=every_query_checked)


def drop_identical_ids(run: Run, k: int | None = None) -> Run:
    """``run`` without the documents whose id is their query's id (what :func:`evaluate` ignores with
    ``ignore_identical_ids``), each query then cut to its first ``k`` (``None``: not cut), ranks
    closing up.  BEIR's searches on ArguAna and Quora return the top ``k`` other documents (they fetch
    ``k + 1`` and skip the query's own): searching ``k + 1`` and calling this gives the same, so that
    recall@k counts ``k`` documents, not ``k - 1``.  The rankings (when the run has them), values, trace,
    time and ``learned_from`` are kept; a run with nothing to drop or cut is returned as it
    is.  One pass over the concatenated ids (no loop over queries but the split into per-query arrays)."""
    n = len(run.query_ids)
    lens = np.fromiter((len(d) for d in run.doc_ids), np.int64, n)
    if not n or not lens.sum():
        return run
    docs = np.concatenate(run.doc_ids)
    flat = docs.astype(object, copy=False)
    owner = np.repeat(np.arange(n), lens)
    keep = flat != np.asarray(run.query_ids, dtype=object)[owner]  # elementwise: str == str
    if k is not None:  # the rank of each kept document among its query's kept ones, from 1
        kept = np.cumsum(keep)
        starts = np.cumsum(lens) - lens
        before = np.where(starts > 0, kept[np.maximum(starts - 1, 0)], 0)
        keep &= (kept - before[owner]) <= k
    if keep.all():
        return run
    counts = np.bincount(owner[keep], minlength=n)
    # the positions of the kept documents, per query
    at = split_counts(np.flatnonzero(keep) - np.repeat(np.cumsum(lens) - lens, lens)[keep], counts)
    rankings = None if run.rankings is None or any(len(r) != m for r, m in zip(run.rankings, lens.tolist())) else [
        r.take(i) for r, i in zip(run.rankings, at)]
    return Run(list(run.query_ids), split_counts(docs[keep], counts),
               split_counts(np.concatenate(run.scores)[keep], counts), rankings=rankings, values=run.values,
               trace=run.trace, seconds=run.seconds, learned_from=run.learned_from,
               learned_text_from=run.learned_text_from,
               _nan_checked=True, _ids_checked=True)  # (run's own ids and scores, checked when it was made)
