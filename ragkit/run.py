"""A retrieval run: the rankings of a batch of queries, addressed by string ids.

A :class:`Run` is what ``pipeline.search(queries)`` returns and what
:func:`ragkit.evaluate` scores.  It converts to the ``{qid: {doc_id: score}}`` dict that
pytrec_eval and BEIR use, and reads/writes TREC run files
(``qid Q0 docid rank score tag``).
"""

from __future__ import annotations

import numbers
import operator
import os
import re
from dataclasses import InitVar, dataclass, field
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence, TextIO

import numpy as np

from ragkit._checks import _a, _as_ids, _key_ids, _kind, _utf8_clean, check_id_breaks
from ragkit._files import text_output, utf8_lines
from ragkit._flat import split_counts
from ragkit._qrels import ids_once
from ragkit.errors import DataError, InputTypeError, repeated, some_ids
from ragkit.types import Corpus, Ranking, TraceEvent, check_id_nul, check_id_surrogates, normalised_text

if TYPE_CHECKING:  # pandas is optional
    import pandas as pd

__all__ = ["Run", "trec_order", "trec_head", "check_trec_ids"]


def _f32(x: np.ndarray) -> np.ndarray:
    """``x`` at float32, as trec_eval stores run scores: one beyond float32's range becomes +-inf, as trec_eval
    reads it, without numpy's "overflow encountered in cast" warning reaching the user."""
    with np.errstate(over="ignore"):
        return np.asarray(x).astype(np.float32)


def trec_order(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """trec_eval's ranking of one query's ``{doc_id: score}``: score descending, compared in
    float32 as trec_eval stores run scores, ties by document id descending."""
    items = list(docs.items())
    if len(items) < 2:
        return items
    keys = np.empty(len(items), dtype=object)
    keys[:] = [d for d, _ in items]
    s32 = _f32(np.fromiter((v for _, v in items), np.float64, len(items)))
    return [items[i] for i in _trec_permutation(np.zeros(len(items), np.int64), keys, s32).tolist()]


def _trec_permutation(owner: np.ndarray, docs: np.ndarray, s32: np.ndarray) -> np.ndarray:
    """The permutation of the flat entries of several queries (``owner``: each entry's query number,
    ``docs``: its document id (object array), ``s32``: its float32 score) that puts them in query order and
    each query's in trec_eval's order: score descending, ties by document id descending (Python's string
    order, as ``sorted``).  One stable sort on (query, -score); only the runs of tied scores (NaNs tie
    together, as they sort) are then ordered by document id, all in one more sort: no loop over queries.  Entries
    already in (query, score descending) order without NaN (a :class:`Run`'s, best first) skip the sort: its stable
    result would be the identity."""
    if _in_score_order(owner, s32):
        order = np.arange(len(owner))
    else:
        order = np.lexsort((-s32, owner))
    so, ss = owner[order], s32[order]
    same = (so[1:] == so[:-1]) & ((ss[1:] == ss[:-1]) | (np.isnan(ss[1:]) & np.isnan(ss[:-1])))
    if same.any():
        at = np.flatnonzero(np.r_[same, False] | np.r_[False, same])  # positions (in order) within tied runs
        group = np.cumsum(np.r_[True, ~same])[at]  # which run of ties each belongs to
        tied = order[at]
        rank = _id_ranks(docs[tied], group)
        top = int(rank.max())  # group, then id descending, as one integer key (distinct within a group)
        order[at] = tied[np.argsort((group - group[0]) * (top + 1) + (top - rank), kind="stable")]
    return order


def _in_score_order(owner: np.ndarray, s32: np.ndarray) -> bool:
    """Whether ``owner`` never decreases, no score is NaN and the scores never increase within a query: the order
    :func:`_trec_permutation`'s stable sort on (query, -score) would leave as it is."""
    if len(owner) < 2:
        return not np.isnan(s32).any()
    same = owner[1:] == owner[:-1]
    return bool((owner[1:] >= owner[:-1]).all() and not np.isnan(s32).any()
                and not (same & (s32[1:] > s32[:-1])).any())


def _id_ranks(ids: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Each of ``ids`` (an object array) numbered in Python's order (``sorted``) of its distinct ids: a
    query's ranking retrieves from one corpus, so there are far fewer of them than entries (300 queries x
    1,000 of SciFact's 5,183 documents: 4x faster than sorting every entry as numpy strings).  Ids that do
    not compare with one another (ints and strings) are compared only within their run of ties (``group``)."""
    listed = ids.tolist()
    try:
        code = {x: i for i, x in enumerate(sorted(set(listed)))}
    except TypeError:  # (what sorting each query's documents compared, and no more)
        rank = np.empty(len(listed), np.int64)
        rank[sorted(range(len(listed)), key=lambda i: (group[i], listed[i]))] = np.arange(len(listed))
        return rank
    return np.fromiter(map(code.__getitem__, listed), np.int64, len(listed))


def _flat(run: Mapping[Any, Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every query's ``{doc_id: score}`` of ``run`` (queries in its order), concatenated: ``(lens, doc_ids,
    scores)``, the number of documents of each query (``(n_q,)`` int64), the ids (object) and the scores
    (float64, as given)."""
    vals = list(run.values())
    lens = np.fromiter(map(len, vals), np.int64, len(vals))
    n = int(lens.sum())
    docs = np.empty(n, dtype=object)
    docs[:] = list(chain.from_iterable(vals))
    return lens, docs, np.fromiter(chain.from_iterable(v.values() for v in vals), np.float64, n)


def _trec_flat(run: Mapping[Any, Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_flat` with each query's documents in trec_eval's order (:func:`trec_order`)."""
    lens, docs, s64 = _flat(run)
    order = _trec_permutation(np.repeat(np.arange(len(lens)), lens), docs, _f32(s64))
    return lens, docs[order], s64[order]


def nan_score_at(lens: np.ndarray, s64: np.ndarray) -> tuple[int, int] | None:
    """Where the first NaN of ``s64`` is, the scores of queries one after another (``lens[i]`` of query ``i``'s, as
    :func:`_flat` gives them): ``(the query's index, the score's index in s64)``; ``None`` where none is NaN."""
    nan = np.isnan(s64)
    if not nan.any():
        return None
    at = int(np.argmax(nan))
    return int(np.searchsorted(np.cumsum(lens), at, side="right")), at


def check_no_nan(query_ids: Sequence[Any], lens: np.ndarray, doc_ids: np.ndarray, s64: np.ndarray, who: str) -> None:
    """A :class:`DataError` starting ``who`` naming the query and document of the first NaN of ``s64`` (NaN has no
    order: sorting on it scrambles the query's other documents too); ``lens``, ``doc_ids`` and ``s64`` as
    :func:`_flat` gives them, ``query_ids`` the queries in their order."""
    found = nan_score_at(lens, s64)
    if found is not None:
        raise DataError(f"{who}: query {query_ids[found[0]]!r} gives document {doc_ids[found[1]]!r} the score nan; "
                        "expected numbers")


def trec_head(docs: Mapping[str, float], k: int) -> list[tuple[str, float]]:
    """The first ``k`` of :func:`trec_order` without ordering the rest: only the documents whose
    float32 score reaches the ``k``-th best (ties at the cut included) are sorted."""
    if len(docs) <= k:
        return trec_order(docs)
    keys = list(docs)
    s32 = _f32(np.fromiter(docs.values(), np.float64, len(keys)))
    kth = np.partition(s32, len(s32) - k)[len(s32) - k]
    return trec_order({keys[i]: docs[keys[i]] for i in np.flatnonzero(s32 >= kth)})[:k]


def _check_unique(qid: str, docs: np.ndarray | list[str], where: str) -> None:
    """trec_eval refuses a document retrieved twice for one query: so does ragkit.  ``docs``: the query's ids, a
    list where the caller has one (a set of them is built in C)."""
    ids = docs.tolist() if isinstance(docs, np.ndarray) else docs
    if len(ids) > 1 and len(set(ids)) != len(ids):
        dup = repeated(ids)[0]
        raise DataError(f"{where}: query {qid!r} retrieves document {dup!r} more than once; expected each "
                        "document at most once per query (trec_eval refuses duplicates)")


_SPACE = re.compile(r"\s")


def _unwritable(ids: list[str], joined: str) -> str | None:
    """The first id that is empty or holds whitespace (one regex pass over ``joined``, the ids joined with NULs),
    else None."""
    if "" in ids:
        return ""
    m = _SPACE.search(joined)
    if m is None:
        return None
    return joined[joined.rfind("\x00", 0, m.start()) + 1:].split("\x00", 1)[0]


def check_trec_ids(path: str | os.PathLike[str], query_ids: Sequence[str], doc_ids: Iterable[str],
                   tag: str = "ragkit") -> None:
    """Refuse ids a TREC run file cannot hold (empty, or holding whitespace: the file's columns
    are whitespace-separated, so :meth:`Run.read_trec` could not read them back; or holding a lone
    surrogate, which no UTF-8 file can hold): a :class:`DataError` naming ``path``.  ``ragkit eval --run``
    calls it on the dataset's ids before any work; :meth:`Run.write_trec` on what it writes."""
    path = os.fspath(path) if isinstance(path, os.PathLike) else path  # (an os.DirEntry's str() is its repr)
    for what, ids in (("query id", list(query_ids)), ("document id", list(doc_ids)), ("tag", [tag])):
        joined = "\x00".join(map(str, ids))
        bad = _unwritable(ids, joined)
        if bad is not None:
            raise DataError(f"{path}: cannot write a TREC run file: {what} {bad!r} is empty or holds "
                            "whitespace, which would break the file's columns")
        # The ids are looked at for surrogates here too, though a Run, a Corpus and Queries refuse them when made:
        # a Run is a plain (not frozen) dataclass whose query_ids list and doc_ids arrays can be replaced or
        # changed after __post_init__, and this function is public (the CLI calls it on a dataset's ids).  The test
        # reuses the join made for the whitespace scan above (an isascii flag for ASCII ids), so it costs no new
        # pass; only ids that fail it are looked at one by one (check_id_surrogates, which words the message).
        if not _utf8_clean(joined):
            try:
                check_id_surrogates(ids, f"{what}s", what)
            except DataError as e:
                raise DataError(f"{path}: cannot write a TREC run file: {e}") from None


def _checked_doc_ids(query_ids: Sequence[str], doc_ids: list[np.ndarray]) -> list[np.ndarray]:
    """``doc_ids`` (one 1-D object array per query of ``query_ids``) with ids that are no strings written as
    :func:`~ragkit._checks._as_ids` writes them (``1`` as ``"1"``, which a qrels' ``"1"`` matches; ``None`` and NaN
    refused naming the query): a 1-D object array may hold anything.  Then an id holding a lone surrogate
    (:func:`~ragkit.types.check_id_surrogates`) or a NUL (:func:`~ragkit.types.check_id_nul`: trec_eval would read
    it cut there) is refused, naming the query.  One ``str.join`` of all the ids (in C) tells they are strings,
    one look at that join for a NUL and one UTF-8 test the rest; only where one fails are the ids looked at (one
    check of them all, then each query, to name it)."""
    flat = list(chain.from_iterable(d.tolist() if isinstance(d, np.ndarray) else d for d in doc_ids))
    try:
        joined = "".join(flat)
    except TypeError:  # (an id that is no string: its query's ids written anew)
        doc_ids = [d if _str_list(d.tolist()) else _as_ids(d, f"Run: query {q!r}: Run.doc_ids[{i}]")
                   for i, (q, d) in enumerate(zip(query_ids, doc_ids))]
        flat = list(chain.from_iterable(d.tolist() for d in doc_ids))
        joined = "".join(flat)
    if "\x00" not in joined and _utf8_clean(joined):
        return doc_ids
    for check in (check_id_surrogates, check_id_nul):
        try:
            check(flat, "Run.doc_ids", "document")
        except DataError:
            for i, (q, d) in enumerate(zip(query_ids, doc_ids)):
                check(list(d), f"query {q!r}: Run.doc_ids[{i}]", "document")
            raise
    return doc_ids


def _not_a_score(v: Any) -> str:
    """Why ``v`` is no score, ``""`` when it is one: a real number (an int, a float, a numpy integer or float, a
    ``Fraction``) within float64's range.  A bool, a string (``"1.0"`` too: a run read from a file is parsed where
    it is read), ``None``, a complex number are refused."""
    if isinstance(v, (bool, np.bool_)):
        return "a bool"
    if isinstance(v, numbers.Real):
        try:
            float(v)
        except OverflowError:
            return "beyond float64's range"
        return ""
    return "no number" if v is None else _a(type(v).__name__)


def check_run_queries(run: Any, who: str) -> None:
    """Refuse, with a :class:`DataError` starting ``who:``, a ``run`` that is no mapping
    ``{query_id: {doc_id: score}}``, or one of whose queries maps to something other than a mapping
    (``run['q'] is a list (['a']), expected a mapping {doc_id: score}``)."""
    if not isinstance(run, Mapping):
        raise DataError(f"{who}: expected a mapping {{query_id: {{doc_id: score}}}}, got {_kind(run)}")
    bad_q = next((q for q, docs in run.items() if not isinstance(docs, Mapping)), None)
    if bad_q is not None:
        raise DataError(f"{who}: run[{bad_q!r}] is {_kind(run[bad_q])}, expected a mapping {{doc_id: score}} "
                        "(a run is {query_id: {doc_id: score}})")


def string_ids(run: Mapping[Any, Mapping[Any, Any]], who: str) -> Mapping[str, Mapping[str, Any]]:
    """``run`` (``{query_id: {doc_id: score}}``, each query a mapping) with its query and document ids written
    as qrels' are (:func:`~ragkit._checks._key_ids`: ``1.0`` -> ``"1"``, ``1`` -> ``"1"``, a NaN id refused
    naming where it is), scores as given.  Two ids of one query, or two queries, that become one string
    (``1`` and ``"1"``) are a :class:`DataError` starting ``who`` (:func:`~ragkit._qrels.ids_once`): a
    document listed twice.  ``run`` itself when every id is a string already (one ``str.join`` of the query ids
    and one of the document ids, which refuses anything else: 3 million ids in ~0.1 s, a third of a pass over
    their types); else a new dict, the queries whose document ids are all strings kept as given."""
    try:
        "".join(run)
        "".join(chain.from_iterable(run.values()))
        return run
    except TypeError:  # (an id that is no string: written below)
        pass
    out: dict[str, Mapping[str, Any]] = {}
    for q, qid, docs in zip(run, _key_ids(run, f"{who}: run's query ids"), run.values()):
        if not set(map(type, docs)) <= {str}:
            docs = dict(zip(_key_ids(docs, f"{who}: run[{q!r}]'s document ids"), docs.values()))
            ids_once(docs, run[q], f"{who}: run[{q!r}] names a document")
        out[qid] = docs
    ids_once(out, run, f"{who}: run names a query")
    return out


def check_scores(run: Mapping[Any, Mapping[Any, Any]], who: str) -> None:
    """Refuse (a :class:`DataError` starting ``who``, naming the query, the document and the value) a score of
    ``run`` (``{query_id: {doc_id: score}}``, each query a mapping) that is no real number (:func:`_not_a_score`):
    ``None``, a string (``"1.0"``), a complex number, a bool, an int beyond float64's range.  Run scores of
    Python floats and numpy numbers cost one ``set(map(type, ...))`` over all of them; values are looked at one by
    one only when some other type is there."""
    try:
        kinds = set(map(type, chain.from_iterable(docs.values() for docs in run.values())))
    except (AttributeError, TypeError):  # (no mapping of mappings: the caller says so)
        return
    if all(t is float or issubclass(t, (np.floating, np.integer)) for t in kinds):
        return
    for q, docs in run.items():
        for d, v in docs.items():
            why = "" if type(v) is float else _not_a_score(v)
            if why:
                raise DataError(f"{who}: query {q!r} gives document {d!r:.60} the score {_preview_score(v)} ({why}); "
                                "a score must be a real number (an int, a float or a numpy number)")


def _preview_score(v: Any) -> str:
    """``repr(v)`` for a message, an int of more than 30 digits by its size (``10**400`` has 401)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10 ** 30:
        return f"{'-' if v < 0 else ''}{str(abs(v))[0]}...(an int of {len(str(abs(v)))} digits)"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _f32_scores(query_ids: Sequence[str], scores: Sequence[Any]) -> list[np.ndarray]:
    """Each query's ``scores`` as a float32 array (:attr:`Run.scores`; a score beyond float32's range becomes
    +-inf, as trec_eval reads it): integers and floats of any width are cast; an array of another kind (strings,
    complex, bool) or a value that is no real number (:func:`_not_a_score`) is a :class:`DataError` naming the
    query and the value, and so are scores that are no 1-D array (looked at before their lengths are compared
    with the documents', which a 2-D array's would wrongly fail).  NaN is left to :func:`_check_nan_scores`."""
    out = []
    for q, s in zip(query_ids, scores):
        a = np.asarray(s)
        if a.ndim != 1:
            raise DataError(f"Run: query {q!r} has scores of shape {a.shape}; expected a 1-D array, one score per "
                            "document")
        bad = None
        if a.dtype.kind == "O":  # (Python numbers in an object array: each checked, then read as float64)
            bad = next(([v] for v in a.tolist() if type(v) is not float and _not_a_score(v)), None)
            if bad is None:
                a = np.asarray(a.tolist(), np.float64).reshape(a.shape)
        elif a.dtype.kind not in "fiu":  # strings, complex, bool, dates: the first value names it
            if a.size:
                bad = [a.flat[0].item()]
            else:
                a = np.zeros(a.shape)
        if bad is not None:
            raise DataError(f"Run: query {q!r} has the score {_preview_score(bad[0])} ({_not_a_score(bad[0])}); a "
                            "score must be a real number (an int, a float or a numpy number)")
        out.append(a if a.dtype == np.float32 else _f32(a))
    return out


def _check_nan_scores(query_ids: Sequence[str], doc_ids: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> None:
    """Refuse a NaN among ``scores`` (float arrays, one per query of ``query_ids``, as long as its ``doc_ids``), as
    :func:`check_no_nan` words it (naming the query and document): one ``np.isnan`` of all the scores joined; the
    ids are joined only to name a NaN found."""
    if not len(scores):
        return
    flat = np.concatenate(scores)
    if np.isnan(flat).any():
        lens = np.fromiter(map(len, scores), np.int64, len(scores))
        check_no_nan(query_ids, lens, np.concatenate(doc_ids), flat, "Run")


def _str_list(ids: Any) -> bool:
    """Whether ``ids`` is a list of strings (one ``str.join``, in C): :attr:`Run.query_ids` as it is kept."""
    if type(ids) is not list:
        return False
    try:
        "".join(ids)
    except TypeError:
        return False
    return True


class LearnedIds(list[str]):
    """:func:`learned_query_ids`' answer: the ids learned from, a list as before, with ``same_text``: the ids of the
    other queries whose text (:func:`~ragkit.types.normalised_text`: whitespace and case aside) is a learned
    query's under another id.  A :class:`Run` given it as ``learned_from`` records ``same_text`` as its
    :attr:`~Run.learned_text_from` and keeps a plain list."""

    def __init__(self, ids: Iterable[str] = (), same_text: Iterable[str] = ()) -> None:
        super().__init__(ids)
        self.same_text: list[str] = list(same_text)


def learned_query_ids(op: Any, query_ids: Sequence[str], texts: Sequence[str]) -> LearnedIds:
    """The ids of the queries ``query_ids`` (with their ``texts``), in their order, that the operator or pipeline
    ``op``, or one inside it, learned from: those :meth:`Operator.learned_from
    <ragkit.operator.Operator.learned_from>` lists, matched by id and text, without its warning of a learned
    question under another id (a search would say it on every call).  What ``search`` records in
    :attr:`Run.learned_from`; nothing is hashed when no operator learned from queries.

    Returned as a :class:`LearnedIds`, whose ``same_text`` lists, in their order, the other queries with the
    text of a learned one under another id (what the warning would name): ``search`` records them in
    :attr:`Run.learned_text_from`, and :func:`~ragkit.eval.evaluate` warns of scoring them."""
    from ragkit._fingerprints import _digest, query_id_digests, taught_digests

    taught, taught_texts = taught_digests(op)
    if not len(taught) or not len(query_ids):
        return LearnedIds()
    learned = np.isin(query_id_digests(query_ids, texts), taught)
    same: list[str] = []
    if len(taught_texts) and not learned.all():
        others = np.flatnonzero(~learned).tolist()
        digests = np.fromiter((_digest(normalised_text(texts[i])) for i in others), np.uint64, len(others))
        same = [query_ids[i] for i, hit in zip(others, np.isin(digests, taught_texts).tolist()) if hit]
    return LearnedIds([query_ids[i] for i in np.flatnonzero(learned).tolist()], same)


@dataclass(eq=False)
class Run:
    """Rankings of a batch of queries.

    Two runs are equal (``==``) when they rank the same documents with the same scores for the same
    queries in the same order; how long they took, their trace and values are not compared.

    Attributes
    ----------
    query_ids : list of str, length n_q
    doc_ids : list (length n_q) of ndarray of str (object dtype), shape (n_i,)
        Per query ``i``, its ``n_i`` document ids best first (``n_i`` may differ between queries, 0 included).
    scores : list (length n_q) of ndarray of float32, shape (n_i,)
        Per query, the scores aligned with its ``doc_ids`` (the same ``n_i``).
    rankings : list (length n_q) of Ranking, or None
        The row-number rankings the run was made from (absent for a run read from a file).
    values : dict of str -> list (length n_q)
        Per-query values the pipeline produced (answers, route labels, loop iterations).
    trace : list of TraceEvent or None
        With ``search(..., trace=True)``, one :class:`~ragkit.types.TraceEvent` per operator step, in the order
        the steps finished (a composite's own event after its steps'): its path, wall time, mean candidates per
        query in and out, and (with ``qrels``) recall@100 and nDCG@10 after it; ``None`` otherwise.
    seconds : float or None
        Wall time of the search.
    learned_from : list of str
        The ids of the run's queries that the pipeline which made it learned from (given in ``fit(corpus,
        train=...)`` with the same id and text: :meth:`Operator.learned_from
        <ragkit.operator.Operator.learned_from>`), which :func:`~ragkit.eval.evaluate` warns of scoring; empty
        for a run built by hand or read from a file.
    learned_text_from : list of str
        The ids of the other queries of the run whose text (whitespace and case aside) is that of a query the
        pipeline learned from, under another id (a test question put in the training set under a new id):
        :func:`~ragkit.eval.evaluate` warns of scoring them too (not held out if they ask the same question);
        empty for a run built by hand or read from a file.

    Examples
    --------
    >>> from ragkit import Run
    >>> run = Run.from_dict({"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d3": 0.5}})
    >>> for qid, doc_ids, scores in run:
    ...     print(qid, doc_ids.tolist(), scores.tolist())
    q1 ['d1', 'd2'] [2.0, 1.0]
    q2 ['d3'] [0.5]
    >>> run["q1"][0].tolist()
    ['d1', 'd2']
    >>> run.to_dict(k=1)
    {'q1': {'d1': 2.0}, 'q2': {'d3': 0.5}}
    """

    query_ids: list[str]
    doc_ids: list[np.ndarray]
    scores: list[np.ndarray]
    rankings: list[Ranking] | None = None
    values: dict[str, list[Any]] = field(default_factory=dict)
    trace: list[TraceEvent] | None = None
    seconds: float | None = None
    learned_from: list[str] = field(default_factory=list)
    learned_text_from: list[str] = field(default_factory=list)
    #: (private) the scores are known to hold no NaN: :meth:`from_dict` checked them, naming its own caller; a
    #: run cut from a checked run (:meth:`head`, ragkit's evaluation), or from rankings whose scores were looked at
    _nan_checked: InitVar[bool] = False
    #: (private) the document ids are strings a Run checked already (:func:`_checked_doc_ids`): a run cut from a
    #: checked run (:meth:`head`, :func:`~ragkit.eval.metrics.drop_identical_ids`), not looked at again
    _ids_checked: InitVar[bool] = False
    #: (private) each query's document ids are known to be distinct: :meth:`from_dict` made them dict keys (and
    #: :meth:`read_trec` refuses a document twice), a cut of such a run keeps that; remembered with the arrays it
    #: holds for (:meth:`_unique_ids_known`), so that a ``doc_ids`` replaced afterwards is looked at again
    _unique_ids: InitVar[bool] = False

    def __post_init__(self, _nan_checked: bool = False, _ids_checked: bool = False, _unique_ids: bool = False) -> None:
        # what a run built by hand may hold that its methods would fail on later (to_dict, evaluate, write_trec):
        # ids as Queries writes them (1 as "1", NaN refused), each query's document ids as a 1-D object array;
        # nothing to do (a join of the query ids, a look at each array's type) for what search and from_dict give
        if not _str_list(self.query_ids):
            self.query_ids = _as_ids(self.query_ids, "Run.query_ids").tolist()
        if isinstance(self.learned_from, LearnedIds):  # (search's learned_query_ids: its other-id twins kept beside)
            if not self.learned_text_from:
                self.learned_text_from = list(self.learned_from.same_text)
            self.learned_from = list(self.learned_from)
        n = len(self.query_ids)
        lens = {"doc_ids": len(self.doc_ids), "scores": len(self.scores)}
        if self.rankings is not None:
            lens["rankings"] = len(self.rankings)
        if any(v != n for v in lens.values()):
            raise DataError(f"Run: {n} query ids but " + ", ".join(f"{v} {k}" for k, v in lens.items())
                            + "; expected one list per query")
        if not all(type(d) is np.ndarray and d.dtype == object and d.ndim == 1 for d in self.doc_ids):
            self.doc_ids = [d if type(d) is np.ndarray and d.dtype == object and d.ndim == 1 else
                            _as_ids(d, f"Run: query {q!r}: Run.doc_ids[{i}]")
                            for i, (q, d) in enumerate(zip(self.query_ids, self.doc_ids))]
        # float32, as documented (trec_eval compares scores at float32; a file written with 9 digits ranks the same);
        # other scores cast (and their shape checked) before the lengths are compared
        cast = not all(type(s) is np.ndarray and s.dtype == np.float32 and s.ndim == 1 for s in self.scores)
        if cast:
            self.scores = _f32_scores(self.query_ids, self.scores)
        n_docs, n_scores = [len(d) for d in self.doc_ids], [len(s) for s in self.scores]
        if n_docs != n_scores:  # zip would drop the documents past the shorter list
            i = next(i for i, (a, b) in enumerate(zip(n_docs, n_scores)) if a != b)
            raise DataError(f"Run: query {self.query_ids[i]!r} has {n_docs[i]} document ids and {n_scores[i]} "
                            "scores; expected one score per document")
        if len(set(self.query_ids)) != n:  # to_dict would keep the last list, a TREC file both
            dup = repeated(self.query_ids)[0]
            raise DataError(f"Run: query id {dup!r} appears more than once; expected one ranking per query")
        # document ids that are no strings (an object array of ints: written as strings, as qrels' are; None
        # refused) and ids no UTF-8 file can hold (a lone surrogate): refused now, not when the run is written.  A
        # run made from rankings names the documents by a Corpus's ids, which the Corpus checked.
        # (and an empty one, or one holding a tab or a line break, which no qrels or run file could name; a NUL,
        # which trec_eval would read it cut at: check_id_breaks, as Queries checks its ids)
        check_id_breaks(self.query_ids, "Run.query_ids", "query")
        # (checked whether or not rankings are given: a Run of rankings of one's own, from_rankings, is the hand-built
        # run's case; the callers that checked them, search's, pass the flags)
        if not _ids_checked:
            self.doc_ids = _checked_doc_ids(self.query_ids, self.doc_ids)
        if cast or not _nan_checked:  # (NaN has no order: refused as from_dict does)
            _check_nan_scores(self.query_ids, self.doc_ids, self.scores)
        self._unique_for: tuple[np.ndarray, ...] | None = tuple(self.doc_ids) if _unique_ids else None

    def _unique_ids_known(self) -> bool:
        """Whether each query's document ids are known to be distinct (the run was made so, ``_unique_ids``) and
        ``doc_ids`` still holds the arrays it was made with (not a list or array put there since)."""
        known = getattr(self, "_unique_for", None)
        return known is not None and len(known) == len(self.doc_ids) and all(map(operator.is_, known, self.doc_ids))

    @classmethod
    def from_rankings(cls, query_ids: list[str], rankings: list[Ranking], corpus_ids: np.ndarray, **kw: Any) -> "Run":
        """From one :class:`~ragkit.types.Ranking` per query (aligned with ``query_ids``), its row numbers
        mapped to document ids through ``corpus_ids`` (the corpus's ids, ``(n_docs,)``, indexed by row);
        ``kw`` sets the other fields (``values``, ``trace``, ``seconds``).  A row that is not one of
        ``corpus_ids`` (``-1`` would be the last document) is a :class:`DataError` naming the query."""
        # the ids mapped once, every query's rows together (one fancy index, not one per query), then split
        counts = [len(r.rows) for r in rankings]
        lens = np.cumsum(counts)
        rows = np.concatenate([r.rows for r in rankings]) if rankings else np.zeros(0, np.int64)
        n_docs = len(corpus_ids)
        if len(rows) and (rows.min() < 0 or rows.max() >= n_docs):  # (one min and max of them all)
            at = int(np.flatnonzero((rows < 0) | (rows >= n_docs))[0])
            i = int(np.searchsorted(lens, at, side="right"))
            qid = query_ids[i] if i < len(query_ids) else i
            valid = f"0..{n_docs - 1}" if n_docs else "there are none"
            raise DataError(f"Run.from_rankings: rankings[{i}] (query {qid!r}) holds row {int(rows[at])}, not a row "
                            f"of the {n_docs:,} corpus ids given ({valid}); a Ranking's rows are corpus row "
                            "numbers")
        ids = corpus_ids[rows] if rankings else corpus_ids[:0]
        return cls(
            list(query_ids), split_counts(ids, counts), [r.scores for r in rankings],
            rankings=rankings, **kw,
        )

    @classmethod
    def from_dict(cls, run: Mapping[str, Mapping[str, float]]) -> "Run":
        """From ``{qid: {doc_id: score}}``, in trec_eval's order (:func:`trec_order`), so that
        :meth:`head` keeps what trec_eval's cut-offs keep.  Every query is ordered at once (one sort of all
        the entries, :func:`_trec_flat`).  Ids are written as qrels' are (:func:`string_ids`: ``1.0`` and ``1``
        as ``"1"``), so that they meet the judgements' in :func:`~ragkit.eval.evaluate`; two that become one
        (``{"q": {1: 0.1, "1": 0.9}}``: a document listed twice) are a :class:`DataError`.  A score that is no
        real number (``None``, ``"1.0"``, a complex number, ``10**400``) or NaN is a :class:`DataError` naming its
        query and document (:func:`check_scores`, :func:`check_no_nan`), and so is a ``run`` that is no mapping of
        mappings (:func:`check_run_queries`)."""
        return cls._from_mapping(run, "Run.from_dict")

    @classmethod
    def _from_mapping(cls, run: Mapping[Any, Mapping[Any, float]], who: str) -> "Run":
        """:meth:`from_dict`, its errors starting ``who`` (``"alpha_ndcg"`` for a run the diversity measures read)."""
        check_run_queries(run, who)
        check_scores(run, who)
        written = string_ids(run, who)
        lens, docs, s64 = _trec_flat(written)
        check_no_nan(list(written), lens, docs, s64, who)
        return cls(list(written), split_counts(docs, lens), split_counts(_f32(s64), lens), _nan_checked=True,
                   _unique_ids=True)  # (dict keys, written as strings without two becoming one: string_ids)

    def __len__(self) -> int:
        return len(self.query_ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Run):
            return NotImplemented
        return self.query_ids == other.query_ids and all(
            np.array_equal(a, b) for pair in ((self.doc_ids, other.doc_ids), (self.scores, other.scores))
            for a, b in zip(*pair))

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by content

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """``(query_id, doc_ids, scores)`` per query, in the run's order: the document ids (str) and their
        scores (float32), best first, as ``run[query_id]`` gives them."""
        return iter(zip(self.query_ids, self.doc_ids, self.scores))

    def __getitem__(self, query_id: str | int | np.integer) -> tuple[np.ndarray, np.ndarray]:
        """``(doc_ids, scores)`` of query ``query_id``, best first: what ``for qid, doc_ids, scores in run``
        gives for it.  Ids are strings (``run[1]`` is ``run["1"]``, as in qrels); an unknown id is a
        :class:`KeyError` naming some of the run's query ids."""
        if isinstance(query_id, (bool, np.bool_)) or not isinstance(query_id, (str, int, np.integer)):
            raise InputTypeError(f"Run[...]: takes a query id (a string), got {type(query_id).__name__} "
                                 f"({query_id!r:.60}); for the i-th query: run[run.query_ids[i]]")
        qid = query_id if isinstance(query_id, str) else str(query_id)
        try:
            i = self.query_ids.index(qid)
        except ValueError:
            raise KeyError(f"query id {qid!r} is not in the run of {len(self)} queries "
                           f"({some_ids(self.query_ids)})") from None
        return self.doc_ids[i], self.scores[i]

    def to_pandas(self, corpus: Corpus | None = None) -> "pd.DataFrame":
        """The run as a pandas ``DataFrame`` in long format, one row per (query, document), best first per
        query: columns ``query_id``, ``doc_id``, ``rank`` (from 1), ``score``; with the ``corpus`` the run
        searched, also each document's ``title`` and ``text`` (a document id not in it is a :class:`DataError`).
        Needs pandas (a :class:`~ragkit.errors.MissingExtraError`, an :class:`ImportError`, saying so)."""
        from ragkit._corpus import _pandas

        pd = _pandas("Run.to_pandas")
        if corpus is not None and not isinstance(corpus, Corpus):
            raise InputTypeError(f"Run.to_pandas: corpus must be a Corpus (the one searched), got "
                                 f"{type(corpus).__name__} ({corpus!r:.60})")
        sizes = np.fromiter((len(d) for d in self.doc_ids), np.int64, len(self.doc_ids))
        n = int(sizes.sum())
        doc_ids = np.concatenate(self.doc_ids).astype(object) if n else np.empty(0, object)
        starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
        cols: dict[str, np.ndarray] = {
            "query_id": np.repeat(np.array(self.query_ids, dtype=object), sizes),
            "doc_id": doc_ids,
            "rank": np.arange(1, n + 1, dtype=np.int64) - starts,
            "score": np.concatenate(self.scores).astype(np.float32) if n else np.empty(0, np.float32),
        }
        if corpus is not None:
            try:
                rows = corpus.row_of(doc_ids.tolist())
            except DataError as e:
                raise DataError(f"Run.to_pandas: {e} given (was the run made on another corpus?)") from None
            cols["title"], cols["text"] = corpus.titles[rows], corpus.texts[rows]
        return pd.DataFrame(cols)

    def __repr__(self) -> str:
        depth = max((len(d) for d in self.doc_ids), default=0)
        return f"Run({len(self)} queries, up to {depth} docs each)"

    def to_dict(self, k: int | None = None) -> dict[str, dict[str, float]]:
        """``{qid: {doc_id: score}}``, optionally cut to the top ``k``; a document twice in one
        query's list is a :class:`DataError` (the whole list is looked at, not only its top ``k``).  One
        ``tolist`` per query: measured against one concatenation sliced per query (2026-12-06), this was faster,
        most of all with ``k`` (34 vs 137 ms at 1,000 queries x 1,000 documents, ``k=10``), the dicts
        pytrec_eval reads costing the same either way."""
        out: dict[str, dict[str, float]] = {}
        for q, d, s in self:
            if k is not None:
                _check_unique(q, d, "Run")
                d, s = d[:k], s[:k]
            out[q] = dict(zip(d.tolist(), s.astype(float).tolist()))
            if len(out[q]) != len(d):  # a document twice: the dict kept one
                _check_unique(q, d, "Run")
        return out

    def head(self, k: int) -> "Run":
        """The run cut to the top ``k`` documents per query."""
        return Run(
            self.query_ids, [d[:k] for d in self.doc_ids], [s[:k] for s in self.scores],
            rankings=None if self.rankings is None else [r.head(k) for r in self.rankings],
            values=self.values, trace=self.trace, seconds=self.seconds, learned_from=self.learned_from,
            learned_text_from=self.learned_text_from,
            _nan_checked=True, _ids_checked=True,  # (this run's own ids and scores, checked when it was made)
        )

    def write_trec(self, path: str | os.PathLike[str], tag: str = "ragkit") -> None:
        """Write a TREC run file ``qid Q0 docid rank score tag`` (rank from 1; scores with 9
        significant digits, which round-trip float32, so no two scores become a tie).  Each query's documents
        are written in trec_eval's order (:func:`trec_order`: score descending at float32, ties by document id
        descending), the order every metric scores, so the rank column agrees with the scores and a tool that
        reads the file in its own order (ranx, trec_eval) ranks what ragkit scored; a pipeline's own order among
        equal scores is not kept.  The file is replaced in one step (:func:`~ragkit._files.atomic_file`); a
        character device or a named pipe (``/dev/stdout``, a shell's ``>(cmd)``) is written straight into."""
        path = Path(path)
        per_query = [d.tolist() for d in self.doc_ids]
        check_trec_ids(path, self.query_ids, set().union(*per_query), tag)  # distinct ids
        with text_output(path) as f:
            self._write_lines(f, tag, per_query, "Run.write_trec")

    def to_trec(self, f: TextIO, tag: str = "ragkit") -> None:
        """Write the run's TREC lines to the text stream ``f`` (standard output, say); ids a TREC file
        cannot hold are refused first."""
        per_query = [d.tolist() for d in self.doc_ids]
        check_trec_ids(getattr(f, "name", "<stream>"), self.query_ids, set().union(*per_query), tag)
        self._write_lines(f, tag, per_query, "Run.to_trec")

    def _write_lines(self, f: TextIO, tag: str, per_query: list[list[str]], who: str) -> None:
        """:meth:`to_trec`'s lines, the ids checked (``per_query``: each query's document ids as a list)."""
        lens = np.fromiter(map(len, per_query), np.int64, len(per_query))
        n = int(lens.sum())
        if not n:
            return
        for q, ids in zip(self.query_ids, per_query):  # (read_trec refuses a document twice, as to_dict does)
            _check_unique(q, ids, who)
        docs = np.empty(n, dtype=object)
        docs[:] = list(chain.from_iterable(per_query))
        scores = np.concatenate([np.asarray(s) for s in self.scores])
        # every query's documents in trec_eval's order at once (one sort of all the entries), ranked 1..n in it
        order = _trec_permutation(np.repeat(np.arange(len(lens)), lens), docs, _f32(scores))
        ranks = np.arange(n) - np.repeat(np.cumsum(lens) - lens, lens) + 1
        qids = np.repeat(np.array(self.query_ids, dtype=object), lens)
        docs, scores = docs[order], scores[order]
        for a in range(0, n, 1 << 16):  # formatted from Python lists (numpy scalars format 2x slower), in blocks
            b = a + (1 << 16)
            f.writelines([f"{q} Q0 {doc} {r} {score:.9g} {tag}\n" for q, doc, r, score in
                          zip(qids[a:b].tolist(), docs[a:b].tolist(), ranks[a:b].tolist(), scores[a:b].tolist())])

    @classmethod
    def read_trec(cls, path: str | os.PathLike[str]) -> "Run":
        """Read a TREC run file; malformed lines raise :class:`DataError` with the line number (a file with
        CR-only, old Mac, line endings says so, with a command converting them)."""
        run: dict[str, dict[str, float]] = {}
        if not isinstance(path, (str, os.PathLike)):
            raise InputTypeError(f"Run.read_trec: path: expected a path (a str or pathlib.Path), got "
                                 f"{type(path).__name__} {path!r:.80}")
        path = os.fspath(path)  # (errors name the path as given: an os.DirEntry's str() is its repr)
        if not Path(path).is_file():
            raise DataError(f"{path}: TREC run file not found")
        for n, _, line in utf8_lines(Path(path), "a TREC run file is UTF-8 text"):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                if "\r" in (text := line.rstrip("\r\n")):  # CR-only line endings: the whole file read as one line
                    from ragkit.eval._lines import _cr_endings

                    raise _cr_endings(Path(path), n, text)
                raise DataError(f"{path}:{n}: expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}")
            if "\x00" in line:  # (trec_eval would read the id cut at the NUL)
                from ragkit.eval._lines import _refuse_nul

                _refuse_nul(path, n, (("query id", parts[0]), ("document id", parts[2])))
            if "_" in parts[4]:  # float() reads '1_0' as 10, trec_eval's atof as 1: neither would be told
                raise DataError(f"{path}:{n}: score {parts[4]!r} holds an underscore, which Python's float() skips "
                                f"(reading {parts[4].replace('_', '')}) and trec_eval reads as the end of the number; "
                                "expected a plain number such as 12.5 or 1.25e-3")
            try:
                score = float(parts[4])
            except ValueError:
                score = float("nan")
            if score != score:  # (NaN has no order: sorting on it scrambles the query's other documents too)
                raise DataError(f"{path}:{n}: score {parts[4]!r} is not a number")
            docs = run.setdefault(parts[0], {})
            if parts[2] in docs:
                raise DataError(f"{path}:{n}: document {parts[2]!r} appears twice for query {parts[0]!r}; "
                                "expected each document at most once per query (trec_eval refuses duplicates)")
            docs[parts[2]] = score
        return cls.from_dict(run)
