"""The :class:`~ragkit.types.Queries` and :class:`~ragkit.types.TrainSet` and the checks of a training set."""

from __future__ import annotations

import inspect
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence, overload

import numpy as np

from ragkit._checks import (
    _as_ids,
    _as_rows,
    _clip,
    _count,
    _kind,
    _one_argument,
    check_id_breaks,
    check_texts,
    ids_and_texts,
    series_ids,
)
from ragkit._corpus import Corpus
from ragkit._qrels import _QRELS_ROLE, Qrels, as_qrels
from ragkit.errors import DataError, InputTypeError, repeated, some_ids

if TYPE_CHECKING:  # the constructors' hints only: pandas is optional
    import pandas as pd


@dataclass(frozen=True)
class Queries:
    """A batch of queries: aligned ``ids`` and ``texts`` (lists of str).

    Ids are kept as strings (``1`` and ``"1"`` name one query, as in qrels); each text must be a
    string (``numpy.str_`` too, kept as ``str``): another value (``None``, a number, bytes) is a
    :class:`DataError` naming its position and query id.  One string for ``ids`` or ``texts``, or a
    mapping, is refused (its characters, or keys, would be the queries): :meth:`from_texts` takes a
    mapping ``{query_id: text}``.
    """

    ids: list[str]
    texts: list[str]

    if not TYPE_CHECKING:  # (the generated constructor's signature is the one type checkers see)
        def __new__(cls, *args: Any, **kwargs: Any) -> "Queries":
            """Refuse one argument without ``texts`` (``Queries(["a", "b"])``) naming :meth:`from_texts`, where
            the dataclass said "missing 1 required positional argument: 'texts'"."""
            if len(args) == 1 and "texts" not in kwargs:
                raise InputTypeError(_one_argument("Queries", args[0]))
            return super().__new__(cls)

        def _init(ids: Iterable[Any], texts: Iterable[Any]) -> None:
            """The constructor's parameters: one id and one text per query."""

        # what ``inspect.signature(Queries)`` and ``help(Queries)`` show: ``__new__`` takes ``*args, **kwargs``
        __signature__ = inspect.signature(_init)
        del _init

    def __post_init__(self) -> None:
        for what, given in (("ids", self.ids), ("texts", self.texts)):
            if isinstance(given, (str, bytes)) or isinstance(given, Mapping) or not isinstance(given, Iterable):
                hint = ("; wrap it in a list" if isinstance(given, (str, bytes)) else
                        "; for {query_id: text} use Queries.from_texts(mapping)" if isinstance(given, Mapping) else "")
                raise DataError(f"Queries.{what}: expected a list (one per query), got {_kind(given)}{hint}")
        ids = _as_ids(self.ids, "Queries.ids").tolist()  # a 2-D array refused, float ids as Corpus reads them
        check_id_breaks(ids, "Queries.ids", "query")
        texts = list(self.texts)
        if len(ids) != len(texts):
            raise DataError(f"Queries: {len(ids)} ids but {len(texts)} texts")
        if len(set(ids)) != len(ids):
            dup = repeated(ids)[0]
            raise DataError(f"Queries ids must be unique; {dup!r} is repeated (runs and judgements are keyed by "
                            "query id)")
        # (a lone surrogate: bytes decoded with errors="surrogateescape", as Python decodes a non-UTF-8
        # command line; tokenizers fail on it with a TypeError, no file can hold it)
        texts = check_texts(texts, "query", ids, noun="id", surrogates=True)
        if not all(type(t) is str for t in texts):  # numpy.str_ (from an array) as str
            texts = [t if type(t) is str else str(t) for t in texts]
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "texts", texts)

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """``(query_id, text)`` per query, in order (``for qid, text in queries``)."""
        return zip(self.ids, self.texts)

    def __repr__(self) -> str:
        head = ", ".join(f"{q!r}: {_clip(t)!r}" for q, t in zip(self.ids[:3], self.texts[:3]))
        more = ", ..." if len(self) > 3 else ""
        return f"Queries({_count(len(self), 'query', 'queries')}{': ' + head + more if head else ''})"

    @overload
    def __getitem__(self, idx: int | np.integer) -> tuple[str, str]: ...
    @overload
    def __getitem__(self, idx: slice | Sequence[int] | np.ndarray) -> "Queries": ...
    def __getitem__(self, idx: int | np.integer | slice | Sequence[int] | np.ndarray) -> "tuple[str, str] | Queries":
        """``queries[i]``: the ``(query_id, text)`` of the ``i``-th query (as iterating yields them; an
        :class:`IndexError` past the end); a slice, a list of positions or a boolean mask: those queries, as
        :class:`Queries`."""
        if isinstance(idx, (int, np.integer)) and not isinstance(idx, (bool, np.bool_)):
            n = len(self)
            if not -n <= idx < n:
                raise IndexError(f"Queries index {idx} is out of range for {_count(n, 'query', 'queries')}")
            return self.ids[int(idx)], self.texts[int(idx)]
        if isinstance(idx, slice):
            return Queries(self.ids[idx], self.texts[idx])
        if isinstance(idx, (str, bytes)):
            raise InputTypeError(f"Queries[...]: takes positions (an int, a slice, a list of ints or a boolean mask), "
                                 f"got {_kind(idx)}; for the text of query id {idx!r:.60}: dict(queries)[{idx!r:.60}]")
        rows = _as_rows(idx, len(self), "Queries[...]").tolist()
        return Queries([self.ids[i] for i in rows], [self.texts[i] for i in rows])

    @classmethod
    def from_texts(cls, texts: Sequence[str] | Mapping[Any, str] | Iterable[str]) -> "Queries":
        """Queries from texts, numbered ``"q0", "q1", ...``; a mapping ``{query_id: text}`` (or a pandas
        ``Series`` indexed by string ids) gives its own ids (:func:`ids_and_texts`).  One string is a
        :class:`DataError`: wrap it in a list."""
        ids, texts = ids_and_texts(texts, "Queries.from_texts")
        return cls([f"q{i}" for i in range(len(texts))] if ids is None else ids, texts)


def usable_query_ids(query_ids: Iterable[str], qrels: Qrels, corpus: "Corpus | np.ndarray | None" = None,
                     min_grade: int = 1) -> list[str]:
    """The ids of ``query_ids``, in their order, that a learner can learn from: at least one judgement of
    grade ``>= min_grade`` (1: relevant, as nDCG's gains and trec_eval's ``relevance_level`` read it) of a
    document of ``corpus`` (a :class:`Corpus`, or its ids as an array; ``None``: of any document).

    A query judged only 0, or whose relevant documents are none of the corpus's (qrels of another id
    scheme: ``DOC_172`` for ``doc-172``), gives every choice the same score (nDCG 0) and no positive
    candidate: learners treat it as unjudged."""
    known: Mapping[str, int] | set[str] | None
    if corpus is None:
        known = None
    elif isinstance(corpus, Corpus):
        known = corpus._lookup()
    else:
        known = set(np.asarray(corpus).tolist())
    out = []
    for q in query_ids:
        rel = qrels.get(q)
        if rel and any(g >= min_grade and (known is None or d in known) for d, g in rel.items()):
            out.append(q)
    return out


def usable_or_refused(query_ids: Sequence[str], qrels: Qrels, corpus: "Corpus | np.ndarray", who: str) -> list[str]:
    """:func:`usable_query_ids` of ``query_ids`` (the training queries ``who`` learns from), or a
    :class:`DataError` naming ``who`` when none is usable: how many have judgements at all, and what the qrels
    are expected to hold (a fuser's weights, a router's or a loop judge's threshold say it alike)."""
    usable = usable_query_ids(query_ids, qrels, corpus)
    if not usable:
        n_judged = sum(1 for q in query_ids if qrels.get(q))
        raise DataError(f"{who}: none of the {len(query_ids)} training queries ({some_ids(query_ids)}) is usable "
                        f"(with a relevant document in the corpus): {n_judged} have judgements in the qrels given "
                        f"({len(qrels)} queries); expected qrels keyed by the training queries' ids, judging "
                        "documents of the corpus relevant (grade > 0)")
    return usable


def _index_kind(index: Any) -> str:
    """How a pandas index reads in a message: its type, name and first labels."""
    first = ", ".join(repr(k) for k in index[:3]) + (", ..." if len(index) > 3 else "")
    return f"{type(index).__name__} [{first}], name {index.name!r}"


#: ``TrainSet(queries)``'s qrels: left out (an unlabelled set, a query bank), read as ``{}``
_NO_QRELS: Any = type("_NoQrels", (), {"__repr__": lambda self: "<no qrels>"})()


@dataclass(frozen=True)
class TrainSet:
    """Judged training queries handed to ``fit(corpus, train=...)``.

    Operators that learn (fusers' weights, routers' thresholds, the Cosine Adapter,
    encoder adaptation) read it; nothing from a test split may ever be put here.

    ``queries``: :class:`Queries`, a mapping ``{query_id: text}`` or a pandas ``Series`` of texts
    indexed by query id.  ``qrels``: ``{query_id: {doc_id: grade}}``, a pandas ``DataFrame`` with one row
    per judgement and BEIR's columns ``query-id``, ``corpus-id``, ``score`` or another spelling of
    :data:`QRELS_COLUMNS` (``query_id``, ``doc_id``, ``relevance``; ``qid``, ``docno``, ``label``; ...), or the
    path of a qrels file (BEIR TSV or trec_eval's, read with :func:`ragkit.eval.read_qrels`; a ``.csv`` file
    read by its header), read as :func:`~ragkit.eval.evaluate` reads them (:func:`as_qrels`); a grade is an
    integer (negative ones too; ``True`` and 0.5 are refused).  Queries may be
    left unjudged (qrels for one split, queries of every split): learners use the judged ones only,
    and only those are recorded as learned from (:meth:`Operator.learned_from`).  Judgements of queries
    whose text is not given teach nothing: a warning on the ``ragkit`` logger says how many (and which).
    The arguments swapped, ``TrainSet(qrels, queries)``, are a :class:`DataError` saying so.

    Without qrels (``TrainSet(queries)``, or empty qrels; ``None`` is refused) the set is unlabelled
    (:attr:`labelled` False): a query log for the query bank of ``dbnorm`` / ``dbnorm_dense``, which read the
    queries only.  A pipeline step that learns from judgements refuses it at fit.  Qrels given that judge
    nothing relevant are refused.
    """

    queries: Queries
    qrels: Qrels = _NO_QRELS  # left out: {}, unlabelled (see __init__ below)

    if TYPE_CHECKING:  # what the constructor accepts; the attributes above are what it holds
        def __init__(self, queries: Queries | Mapping[Any, str] | pd.Series,
                     qrels: Mapping[Any, Mapping[Any, int]] | pd.DataFrame | str | os.PathLike[str] = ...
                     ) -> None: ...
    else:  # what ``inspect.signature(TrainSet)`` and ``help(TrainSet)`` show: the same (the generated
        # constructor's annotations are the attributes', ``queries: Queries``)
        def _init(queries: Queries | Mapping[Any, str] | pd.Series,
                  qrels: Mapping[Any, Mapping[Any, int]] | pd.DataFrame | str | os.PathLike[str] = _NO_QRELS
                  ) -> None:
            """The constructor's parameters: the query texts, and their judgements (left out: a query bank)."""

        __signature__ = inspect.signature(_init)
        del _init

    def __post_init__(self) -> None:
        queries = self.queries
        if self.qrels is None:  # (data.qrels.get("train") of a split that has none?) said, not read as unlabelled
            raise DataError("TrainSet: qrels must be a mapping {query_id: {doc_id: grade}}, got None; for queries "
                            "without judgements (a dbnorm query bank) leave qrels out: TrainSet(queries)")
        if self.qrels is not _NO_QRELS:
            _refuse_swapped(queries, self.qrels)
        if isinstance(queries, Mapping):  # {query_id: text}
            queries = Queries.from_texts(queries)
        pd = sys.modules.get("pandas")
        if pd is not None and isinstance(queries, pd.Series):  # texts indexed by query id
            index_ids = series_ids(queries, "TrainSet.queries: the Series' index")
            if index_ids is None:
                raise DataError("TrainSet.queries: a pandas Series of texts needs the query ids as its index (the "
                                "qrels are keyed by query id), got one indexed by row number "
                                f"({_index_kind(queries.index)}); e.g. df.set_index('_id')['text'], or "
                                "dict(zip(df['_id'].astype(str), df['text']))")
            queries = Queries(index_ids, queries.tolist())
        if not isinstance(queries, Queries):
            hint = ""
            if pd is not None and isinstance(queries, pd.DataFrame):
                hint = "; from a DataFrame: Queries(df['id'].tolist(), df['text'].tolist())"
            raise DataError(f"TrainSet.queries: expected Queries(ids, texts) or a mapping {{query_id: text}} (the "
                            f"qrels are keyed by query id), got {_kind(queries)}{hint}")
        object.__setattr__(self, "queries", queries)
        object.__setattr__(self, "qrels", {} if self.qrels is _NO_QRELS else
                           as_qrels(self.qrels, "TrainSet"))  # ids str, grades int
        if not self.labelled:  # unlabelled: a query bank (dbnorm); a step that learns from judgements refuses it at fit
            return
        if not any(any(v > 0 for v in rel.values()) for rel in self.qrels.values()):
            raise DataError("TrainSet qrels contain no positive judgement (relevance > 0); nothing to learn from")
        ids = set(self.queries.ids)
        if not any(q in ids and any(v > 0 for v in rel.values()) for q, rel in self.qrels.items()):
            texts = set(self.queries.texts)
            by_text = [q for q in self.qrels if q in texts]
            if by_text:
                raise DataError(f"TrainSet: the qrels are keyed by the queries' texts ({some_ids(by_text)}: "
                                f"{len(by_text)} of the {len(self.qrels)} keys are texts of the training queries), "
                                f"not by their ids ({some_ids(self.queries.ids)}); key them by id, e.g. "
                                "{id_of[text]: rel for text, rel in qrels.items()} with "
                                "id_of = dict(zip(queries.texts, queries.ids))")
            raise DataError(f"TrainSet: none of the queries judged positive in the qrels ({some_ids(self.qrels)}) is "
                            f"one of the {len(ids)} training queries ({some_ids(self.queries.ids)}); the qrels must "
                            "be keyed by the queries' ids")
        textless = [q for q, rel in self.qrels.items() if rel and q not in ids]
        if textless:  # (judgements of queries whose text was not given teach nothing: said, not dropped silently)
            logging.getLogger("ragkit").warning(
                "TrainSet: %d of the %d queries judged in the qrels (%s) %s not among the %d training queries, "
                "whose texts were given (%s); %s not learned from: give %s in queries to learn from %s",
                len(textless), sum(1 for rel in self.qrels.values() if rel), some_ids(textless),
                "is" if len(textless) == 1 else "are", len(ids), some_ids(self.queries.ids),
                *(("its judgements are", "its text", "it") if len(textless) == 1 else
                  ("their judgements are", "their texts", "them")))

    def __repr__(self) -> str:
        judged = sum(1 for q in self.queries.ids if self.qrels.get(q))
        n = sum(len(rel) for rel in self.qrels.values())
        relevant = sum(1 for rel in self.qrels.values() for g in rel.values() if g > 0)
        ids = ", ".join(map(repr, self.queries.ids[:3])) + (", ..." if len(self.queries) > 3 else "")
        return (f"TrainSet({_count(len(self.queries), 'query', 'queries')} ({ids}), {judged} judged; qrels: "
                f"{_count(len(self.qrels), 'query', 'queries')}, {_count(n, 'judgement')}, {relevant} relevant)")

    @property
    def labelled(self) -> bool:
        """Whether the set holds judgements (qrels); ``False`` for ``TrainSet(queries)``, a query bank."""
        return any(rel for rel in self.qrels.values())

    def unlabelled_refusal(self, learner: str) -> DataError:
        """The error for ``learner`` (``"pipeline[1]: cosine_adapter"``, ``"rrf.fit"``), a step that learns from
        judgements, given this set without any (:attr:`labelled` false)."""
        return DataError(f"{learner} learns from judged queries, but the TrainSet has no judgements "
                         f"({len(self.queries)} queries, no qrels: a query bank, which dbnorm reads); give "
                         "TrainSet(queries, qrels)")

    def judged(self) -> Queries:
        """The training queries with at least one judgement (any grade, 0 too), in their order: those a
        learner reads (an unjudged query teaches nothing)."""
        keep = [i for i, q in enumerate(self.queries.ids) if self.qrels.get(q)]
        return self.queries if len(keep) == len(self.queries) else self.queries[keep]

    def usable(self, corpus: "Corpus | np.ndarray | None" = None, min_grade: int = 1) -> list[str]:
        """The ids of the training queries with a judgement ``>= min_grade`` of a document of ``corpus``
        (:func:`usable_query_ids`): those a learner can learn from."""
        return usable_query_ids(self.queries.ids, self.qrels, corpus, min_grade)

    def same_text(self, queries: Queries) -> list[str]:
        """The ids of ``queries``, in their order, whose text is that of a training query with another id
        (:func:`normalised_text`: whitespace and case aside): a training set built with test questions
        under new ids, which a check of shared ids misses.  (A query with a training query's id is not
        listed: an id check finds it.)"""
        texts, ids = {normalised_text(t) for t in self.queries.texts}, set(self.queries.ids)
        return [q for q, t in zip(queries.ids, queries.texts) if q not in ids and normalised_text(t) in texts]

    def check_corpus(self, corpus: "Corpus") -> None:
        """Refuse judgements that name no document of ``corpus``: learning would see no relevant
        document anywhere (nDCG 0 for every choice) and keep its defaults without a word.

        Training queries judged relevant (grade > 0) whose relevant documents are all missing from
        ``corpus`` are learned as unjudged, with a warning on the ``ragkit`` logger (counts and example
        ids): a sample of the judged corpus leaves such queries by design.  When more than half of them
        are lost and most of their missing documents are corpus documents in another spelling (case,
        punctuation, leading zeros: ``DOC_172`` for ``doc-172``), the qrels use another id scheme: a
        :class:`DataError` naming pairs of both spellings."""
        ids = set(self.queries.ids)
        positives = {d for q, rel in self.qrels.items() if q in ids for d, v in rel.items() if v > 0}
        if not len(corpus.row_of(positives, missing="drop")):
            missing = sorted(positives)
            respelt = _respelt(missing, corpus.ids)
            how = "the qrels must use the corpus's document ids"
            if 2 * len(respelt) > len(missing):  # every id in another scheme (zero-padded: '0001550937')
                how = (f"the qrels spell the corpus's document ids another way ({_pairs(respelt)}; {len(respelt)} of "
                       f"the {len(missing)}): rename them to the corpus's ids")
            raise DataError(f"fit: none of the {len(positives)} documents judged relevant for the training queries "
                            f"({some_ids(missing)}) is in the corpus of {len(corpus)} documents "
                            f"({some_ids(corpus.ids)}); {how}")
        relevant = self.usable()
        usable = set(self.usable(corpus))
        lost = [q for q in relevant if q not in usable]
        if not lost:
            return
        lookup = corpus._lookup()
        missing = sorted({d for q in lost for d, v in self.qrels[q].items() if v > 0 and d not in lookup})
        what = (f"{len(lost)} of the {len(relevant)} training queries judged relevant ({some_ids(lost)}) have none "
                f"of their relevant documents in the corpus of {len(corpus)} documents (they judge "
                f"{some_ids(missing)}; the corpus holds {some_ids(corpus.ids)})")
        respelt = _respelt(missing, corpus.ids) if 2 * len(lost) > len(relevant) else {}
        if 2 * len(respelt) > len(missing):
            raise DataError(f"fit: {what}; learning would read {len(usable)} quer{'y' if len(usable) == 1 else 'ies'}. "
                            f"The qrels spell the corpus's document ids another way ({_pairs(respelt)}; "
                            f"{len(respelt)} of the {len(missing)} missing ones): rename them to the corpus's ids")
        logging.getLogger("ragkit").warning("fit: %s; they are learned as unjudged (%d usable queries); check that "
                                            "the qrels use the corpus's document ids", what, len(usable))


def _spelling(doc_id: str) -> str:
    """An id with case, punctuation and the leading zeros of its numbers dropped (``DOC_0172`` -> ``doc172``)."""
    return re.sub(r"(?<![0-9])0+(?=[0-9])", "", re.sub(r"[^0-9a-z]", "", doc_id.casefold()))


def _respelt(missing: Sequence[str], corpus_ids: Iterable[Any]) -> dict[str, str]:
    """``{missing id: corpus id}`` for the ``missing`` document ids that are a corpus id spelt another way
    (:func:`_spelling`): qrels written with another id scheme than the corpus's."""
    spelt = {_spelling(str(c)): str(c) for c in corpus_ids}
    return {d: spelt[k] for d in missing if (k := _spelling(d)) in spelt and spelt[k] != d}


def _pairs(respelt: Mapping[str, str]) -> str:
    """The first three pairs of :func:`_respelt` for an error message: ``'DOC_1' for 'doc-1', ...``."""
    return ", ".join(f"{d!r} for {c!r}" for d, c in list(respelt.items())[:3])


def _qrels_like(value: Any) -> bool:
    """Whether ``value`` reads as qrels rather than query texts: a mapping whose first value is a mapping
    ``{doc_id: grade}``, or a DataFrame with a query id and a document id column (:data:`QRELS_COLUMNS`)."""
    if isinstance(value, Mapping):
        return isinstance(next(iter(value.values()), None), Mapping)
    pd = sys.modules.get("pandas")
    if pd is None or not isinstance(value, pd.DataFrame):
        return False
    roles = {_QRELS_ROLE.get(" ".join(str(c).split()).casefold()) for c in value.columns}
    return {"query-id", "corpus-id"} <= roles


def _texts_like(value: Any) -> bool:
    """Whether ``value`` reads as query texts: :class:`Queries`, a pandas Series, or a mapping whose first
    value is a string."""
    pd = sys.modules.get("pandas")
    if isinstance(value, Queries) or (pd is not None and isinstance(value, pd.Series)):
        return True
    return isinstance(value, Mapping) and isinstance(next(iter(value.values()), None), str)


def _refuse_swapped(queries: Any, qrels: Any) -> None:
    """Refuse ``TrainSet(qrels, queries)``, as :func:`~ragkit.eval.evaluate` refuses its arguments swapped,
    where the texts' check said ``query[0] (id '313') is a dict ..., expected a string``."""
    if not _qrels_like(queries):
        return
    how = ("the arguments are swapped (qrels first, query texts second)" if _texts_like(qrels) else
           "the qrels go second")
    got = (_kind(queries) if isinstance(queries, Mapping) else
           f"a DataFrame with columns {[str(c) for c in queries.columns]}")
    raise DataError(f"TrainSet: queries must be the query texts (Queries or {{query_id: text}}), got qrels "
                    f"({got}); {how}: TrainSet(queries, qrels)")


def normalised_text(text: str) -> str:
    """``text`` with its whitespace collapsed and its case folded: two queries with this one text ask the
    same question, whatever their ids (:meth:`TrainSet.same_text`, :meth:`Operator.learned_from
    <ragkit.operator.Operator.learned_from>`)."""
    return " ".join(text.split()).casefold()


def warn_same_text(ids: Sequence[str], n: int, where: str, whose: str) -> None:
    """Warn (``ragkit`` logger) that ``ids``, of ``n`` queries, have the text of a query ``whose`` names (``"a
    query it learned from"``, ``"a --train-split train query"``) under another id: learning saw the question,
    a check of ids does not.  Nothing when ``ids`` is empty."""
    if len(ids):
        logging.getLogger("ragkit").warning(
            "%s: %d of the %d queries (%s) %s the text of %s under another id (whitespace and case aside): scores "
            "on %s are not held out if %s the same question", where, len(ids), n, some_ids(ids),
            "has" if len(ids) == 1 else "have", whose, "it" if len(ids) == 1 else "them",
            "it asks" if len(ids) == 1 else "they ask")
