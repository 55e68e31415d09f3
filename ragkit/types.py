"""The data that flows through ragkit: :class:`Corpus`, :class:`Ranking`, :class:`State`.

Everything is columnar and batched.  Inside the library a document is addressed by its
row number in the corpus (``int64``); string ids appear only at the edges (YAML, CLI,
LangChain, TREC run files).  A batch of queries is a list of rankings, one per query.
"""

from __future__ import annotations

import copy as _copy
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

# The public names of the modules this one was split into, importable from here as before (``X as X``: re-exported)
from ragkit._checks import (
    ID_BREAK as ID_BREAK,
    ID_BREAK_NAMES as ID_BREAK_NAMES,
    _as_ids,
    _as_rows,
    _count,
    _kind,
    check_id_breaks as check_id_breaks,
    check_id_nul as check_id_nul,
    check_id_surrogates as check_id_surrogates,
    check_texts as check_texts,
    ids_and_texts as ids_and_texts,
    int_positions,
    series_ids as series_ids,
)
from ragkit._corpus import (
    Corpus as Corpus,
    FullTexts as FullTexts,
    unknown_filter_field as unknown_filter_field,
    unsaveable as unsaveable,
)
from ragkit._qrels import (
    GRADE_MAX as GRADE_MAX,
    GRADE_MIN as GRADE_MIN,
    QRELS_COLUMNS as QRELS_COLUMNS,
    Qrels as Qrels,
    as_qrels as as_qrels,
    check_qrels as check_qrels,
    check_qrels_nul as check_qrels_nul,
    grade_range_error as grade_range_error,
    ids_once as ids_once,
)
from ragkit._queries import (
    Queries as Queries,
    TrainSet as TrainSet,
    normalised_text as normalised_text,
    usable_or_refused as usable_or_refused,
    usable_query_ids as usable_query_ids,
    warn_same_text as warn_same_text,
)
from ragkit.errors import DataError, InputTypeError, repeated, some_ids


def field_fits(col: Any, n: int) -> bool:
    """Whether a :attr:`Ranking.fields` column is one entry per row (``n`` rows): sized, not a 0-d array (which
    has ``__len__`` and raises on it)."""
    return hasattr(col, "__len__") and getattr(col, "ndim", 1) != 0 and len(col) == n


def field_length_error(who: str, key: str, col: Any, n: int) -> str:
    """The message for a :attr:`Ranking.fields` column ``key`` that is not one entry per row (``n`` rows)."""
    if hasattr(col, "__len__") and getattr(col, "ndim", 1) == 0:
        has = f"is a 0-d {type(col).__name__} ({col!r:.40}), a single value"
    else:
        has = f"has {len(col)} entries" if hasattr(col, "__len__") else f"is {type(col).__name__} {col!r:.40}"
    return (f"{who}: fields[{key!r}] {has} for {n} rows; expected one entry per row (a field is an "
            "aligned column that take / head / TopK cut with the rows)")


_ROWS_HINT = ("; map document ids to rows with corpus.row_of(ids), and a boolean mask with np.flatnonzero(mask)")

__all__ = ["Corpus", "Queries", "Ranking", "State", "TrainSet", "TraceEvent", "Qrels"]


def read_only(x: np.ndarray) -> np.ndarray:
    """A read-only view of ``x`` (``x`` itself, the caller's array, stays writeable); ``x`` when read-only already
    (``setflags``: half the time of ``flags.writeable = False``, paid per ranking)."""
    if not x.flags.writeable:
        return x
    x = x.view()
    x.setflags(write=False)
    return x


@dataclass(eq=False)
class Ranking:
    """The ranked documents of one query, best first.

    Attributes
    ----------
    rows : ndarray of int64, shape (n,)
        Corpus row numbers (read-only: a new ranking is made, never an old one changed in place).
    scores : ndarray of float32, shape (n,)
        Scores, non-increasing (read-only, as ``rows``).
    fields : dict of str -> ndarray, shape (n,) each
        Extra aligned columns that travel with the documents, e.g. each fused branch's
        rank and score (``"bm25.rank"``, ``"bm25.score"``).

    ``rows`` or ``scores`` that are not one-dimensional (scores of shape ``(n, 1)``) are a
    :class:`~ragkit.errors.DataError` here.
    """

    rows: np.ndarray
    scores: np.ndarray
    fields: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rows = self.rows
        if not (isinstance(rows, np.ndarray) and rows.dtype.kind in "iu"):  # (the common case: no check)
            given = np.asarray(rows)
            if given.dtype.kind in "fc" and given.size and not np.array_equal(given, np.trunc(given.real)):
                bad = given.reshape(-1)[~np.equal(given.reshape(-1), np.trunc(given.reshape(-1).real))][0]
                raise InputTypeError(f"Ranking: rows are row numbers (integers), got {given.dtype} values such as "
                                     f"{bad.item()!r}; are rows and scores swapped? Ranking(rows, scores)")
            if given.dtype.kind in "bUSO" and given.size:  # ids "3", "4" read as rows 3 and 4; a mask as rows 0/1
                rows = int_positions(given, "Ranking: rows are corpus row numbers (integers)", _ROWS_HINT)
        # read-only (a read-only view of a writeable array, O(1): the caller's arrays stay writeable; a read-only
        # one as it is, e.g. a slice of another ranking's, or of a flat array a helper made read-only once): a step
        # that changed its input ranking in place and handed it back (r.scores *= -1) skipped every check of what it
        # returns, and changed the ranking for every other holder of it (a Parallel's branches share their input);
        # now it fails at its own line
        rows = np.asarray(rows, dtype=np.int64)
        scores = np.asarray(self.scores, dtype=np.float32)
        if rows.ndim != 1 or scores.ndim != 1:  # (else: errors far from here, e.g. TopK's or evaluate's)
            flat = scores.size == rows.size
            raise DataError(f"Ranking: expected rows and scores one-dimensional (one score per row), got rows of "
                            f"shape {rows.shape} and scores of shape {scores.shape}"
                            + ("; flatten them (e.g. scores.ravel())" if flat else ""))
        self.rows, self.scores = rows, scores = read_only(rows), read_only(scores)
        n = len(rows)
        if len(scores) != n:  # (else: take / head / TopK fail with numpy's IndexError, naming no one)
            raise DataError(f"Ranking: {n} rows and {len(scores)} scores; expected one score per row")
        if self.fields:  # (else: a longer field survives TopK misaligned, a shorter one is TopK's IndexError)
            for key, col in self.fields.items():
                if not field_fits(col, n):
                    raise DataError(field_length_error("Ranking", key, col, n))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[np.ndarray]:
        """``rows``, then ``scores``: unpack as ``rows, scores = ranking``."""
        return iter((self.rows, self.scores))

    def __repr__(self) -> str:
        head = ", ".join(f"{r}:{s:.3f}" for r, s in zip(self.rows[:3].tolist(), self.scores[:3].tolist()))
        return f"Ranking({len(self)} docs: {head}{', ...' if len(self) > 3 else ''})"

    def take(self, idx: np.ndarray) -> "Ranking":
        """The ranking restricted/reordered to positions ``idx`` (fields follow)."""
        return Ranking(self.rows[idx], self.scores[idx], {k: v[idx] for k, v in self.fields.items()})

    def head(self, k: int) -> "Ranking":
        """The first ``k`` documents (fields follow); ``self`` itself when it holds ``k`` or fewer."""
        if len(self) <= k:
            return self
        # (slices: read-only views of read-only arrays, which the new Ranking takes as they are; fields copied, as
        # take copies them: they are not read-only)
        return Ranking(self.rows[:k], self.scores[:k], {n: np.array(v[:k]) for n, v in self.fields.items()})

    def equals(self, other: "Ranking") -> bool:
        """Whether both rank the same rows with the same scores, in the same order (``fields`` are not
        compared)."""
        return bool(np.array_equal(self.rows, other.rows) and np.array_equal(self.scores, other.scores))

    @classmethod
    def empty(cls) -> "Ranking":
        """A ranking of no documents (rows int64 and scores float32, both of shape ``(0,)``)."""
        return cls(np.empty(0, np.int64), np.empty(0, np.float32))


@dataclass
class TraceEvent:
    """One operator's step in a traced run: wall time, candidates in/out, recall@100 and nDCG@10 after it."""

    path: str
    operator: str
    seconds: float
    n_queries: int
    candidates_in: float
    candidates_out: float
    recall: float | None = None
    ndcg: float | None = None
    n_judged: int = 0  # queries with judgements the recall and nDCG average over
    #: a composite's own event (a loop's output): its time includes the events of the steps inside it
    inclusive: bool = False


#: ``State.values`` keys that rewrite the query text: they stay inside the parallel branch that
#: wrote them, and a route fills them in for the queries its other branches left unchanged.
QUERY_REWRITES = ("query_text", "lexical_query")


def _state_texts(given: Any) -> list[str]:
    """``State.queries`` as a list of strings: a list, tuple, numpy array or other iterable of them; one
    string, bytes, a mapping, a pandas ``DataFrame``, ``None`` or anything that is no collection of strings (a
    ``Queries``' ``(id, text)`` pairs as a list) a :class:`DataError` saying what ``State`` takes."""
    takes = ("State takes a list of query texts (query_ids=[...] for their ids), or Queries(ids, texts); "
             "State.of(...) also takes a mapping {query_id: text}")
    pd = sys.modules.get("pandas")
    if (isinstance(given, (str, bytes, Mapping)) or not isinstance(given, Iterable)
            or (pd is not None and isinstance(given, pd.DataFrame))):
        hint = "; wrap it in a list" if isinstance(given, str) else ""
        raise DataError(f"State.queries: got {_kind(given)}; {takes}{hint}")
    texts = given.tolist() if isinstance(given, np.ndarray) else list(given)
    try:  # (one str.join per chunk, in C: no Python loop over the queries)
        return check_texts(texts, "State.queries")
    except DataError as e:
        raise DataError(f"{e}; {takes}") from None


def _state_ids(given: Any) -> list[str]:
    """``State.query_ids`` as a list of strings, checked as :class:`Queries` checks its ids: a list (tuple, array,
    iterable) of ids, a number or a float of an integral value as its string (``1`` -> ``"1"``, as qrels name it),
    no id missing (``None``, NaN), empty or holding a tab or line break, none repeated; one string, bytes or a
    mapping is a :class:`DataError` (its characters, or keys, would be the ids).  Empty (or ``None``): none
    given.  In C but for a list that holds no strings only (one ``str.join``, one ``set``): ``State.copy`` checks
    them again."""
    if given is None:
        return []
    if isinstance(given, (str, bytes, Mapping)) or not isinstance(given, Iterable):
        hint = "; wrap it in a list" if isinstance(given, (str, bytes)) else ""
        raise DataError(f"State.query_ids: expected a list of query ids (one per query), got {_kind(given)}{hint}")
    if isinstance(given, np.ndarray):  # (a 2-D array refused, float ids as Queries reads them)
        ids = _as_ids(given, "State.query_ids").tolist()
    else:
        ids = given if type(given) is list else list(given)
        try:
            "".join(ids)  # (a TypeError where one is no string: each is then written as Queries writes it)
        except TypeError:
            ids = _as_ids(ids, "State.query_ids").tolist()
    if not ids:
        return ids
    check_id_breaks(ids, "State.query_ids", "query")
    if len(set(ids)) != len(ids):
        raise DataError(f"State.query_ids: {repeated(ids)[0]!r} is repeated; expected one id per query, each once "
                        "(runs and judgements are keyed by query id)")
    return ids


@dataclass
class State:
    """What an operator receives and returns.

    Attributes
    ----------
    queries : list of str, length n_q
        Given as a list (tuple, array) of strings, or as :class:`Queries` (``data.queries("test")``: its
        texts, and its ids as ``query_ids``); anything else (one string, a mapping, ``(id, text)`` pairs)
        is a :class:`~ragkit.errors.DataError` saying what State takes (:meth:`State.of` takes a mapping).
    query_ids : list of str, length n_q
        ``"q0", "q1", ...`` when left out.
    rankings : list of Ranking or None
        One per query; ``None`` before any retriever ran.
    vectors : dict of str -> ndarray (n_q, d)
        Query vectors cached per encoder key, so two operators on one encoder encode once: float32 (what
        ``query_vectors`` stores, whatever the encoder returns), one row per query, a zero row for a blank query.
    values : dict of str -> list (or tuple), length n_q each
        Per-query scratch values: a route label, a loop counter, an answer, expanded query text.
    branches : list of (name, rankings) or None
        The rankings of each branch of a :class:`~ragkit.pipelines.Parallel`, for fusers.
    options : dict
        Run-time overrides, read as ``search`` reads its keywords: ``k`` (the final number of results per
        query: every step fetches or keeps at least ``k``, and the outermost operator called on the State
        cuts its rankings to ``k``), ``filter``, ``{"<op name>": {option: value}}``.  The outermost operator
        called on it checks them first (:meth:`Operator.checked_options
        <ragkit.operator.Operator.checked_options>`): a key or option ``search`` would refuse is a
        :class:`~ragkit.errors.ParamError`.
    trace : list of TraceEvent or None
        Filled when tracing is on.
    qrels : Qrels or None
        Judgements used only to report recall in the trace (never by operators).
    """

    queries: list[str]
    query_ids: list[str] = field(default_factory=list)
    rankings: list[Ranking] | None = None
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, list[Any]] = field(default_factory=dict)
    branches: list[tuple[str, list[Ranking]]] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    trace: list[TraceEvent] | None = None
    qrels: Qrels | None = None

    def __post_init__(self) -> None:
        given: Any = self.queries
        ids = _state_ids(self.query_ids)
        if isinstance(given, Queries):  # (data.queries("test")): its texts, and its ids unless others are given
            if len(ids) and ids != given.ids:
                raise DataError(f"State: query_ids ({some_ids(ids)}) differ from the ids of the Queries "
                                f"given ({some_ids(given.ids)}); leave query_ids out (the Queries' ids are kept)")
            self.queries, self.query_ids = list(given.texts), list(given.ids)
        else:
            self.queries = _state_texts(given)
            if len(ids) == 0:
                self.query_ids = [f"q{i}" for i in range(len(self.queries))]
            elif len(ids) != len(self.queries):
                raise DataError(f"State: {len(ids)} query ids for {len(self.queries)} queries; expected one id per "
                                f"query (or query_ids left out: q0, q1, ...)")
            else:
                self.query_ids = ids
        self._check_per_query()

    def _check_per_query(self) -> None:
        """Every per-query entry is one per query (O(keys), not per query): else the operator called next was
        blamed for it ("returned 1 rankings for 2 queries"), with advice that did not apply."""
        n = len(self.queries)
        per = "expected one per query"
        if self.rankings is not None:
            if not isinstance(self.rankings, (list, tuple)):
                raise DataError(f"State: rankings is {type(self.rankings).__name__}, expected a list of one Ranking "
                                "per query (or None)")
            if len(self.rankings) != n:
                raise DataError(f"State: {len(self.rankings)} rankings for {n} queries; {per} "
                                "(Ranking.empty() for a query without documents)")
        for key, vals in self.values.items():
            if not isinstance(vals, (list, tuple)):  # (a tuple as check_result takes one from a step)
                raise DataError(f"State: values[{key!r}] is {type(vals).__name__} {vals!r:.40}, expected a list of "
                                "one entry per query")
            if len(vals) != n:
                raise DataError(f"State: values[{key!r}] holds {len(vals)} entries for {n} queries; {per}")
        for key, vec in self.vectors.items():
            shape = np.shape(vec)
            if not shape or shape[0] != n:
                raise DataError(f"State: vectors[{key!r}] of shape {shape} for {n} queries; expected one row per "
                                "query")

    def __len__(self) -> int:
        return len(self.queries)

    def __repr__(self) -> str:
        """A summary: the counts, the first query ids and which of the other fields hold something (the
        names of vectors, values, branches and options; never their data)."""
        ids = ", ".join(map(repr, self.query_ids[:3])) + (", ..." if len(self) > 3 else "")
        parts = [f"{_count(len(self), 'query', 'queries')}" + (f" ({ids})" if ids else "")]
        if self.rankings is not None:
            parts.append(f"rankings: up to {max(map(len, self.rankings), default=0)} docs each")
        if self.vectors:
            parts.append("vectors: " + ", ".join(f"{k!r} {tuple(np.shape(v))}" for k, v in self.vectors.items()))
        if self.values:
            parts.append(f"values: {sorted(self.values)}")
        if self.branches is not None:
            parts.append(f"branches: {[name for name, _ in self.branches]}")
        if self.options:
            parts.append(f"options: {sorted(map(str, self.options))}")
        if self.trace is not None:
            parts.append(f"trace: {_count(len(self.trace), 'event')}")
        if self.qrels is not None:
            parts.append(f"qrels: {_count(len(self.qrels), 'query', 'queries')}")
        return f"State({', '.join(parts)})"

    def texts(self, lexical: bool = False) -> list[str]:
        """The query text per query: a rewritten ``values["query_text"]`` where set, else the original.

        ``lexical=True`` (what term-matching retrievers such as BM25 ask for) prefers
        ``values["lexical_query"]``: a weighted bag of terms written for term matching only
        (RM3's expansion), which an encoder must not read.
        """
        out = list(self.queries)
        for key in ("query_text", "lexical_query") if lexical else ("query_text",):
            rewritten = self.values.get(key)
            if rewritten:
                out = [r if r is not None else q for r, q in zip(rewritten, out)]
        return out

    @classmethod
    def of(cls, queries: "Queries | Sequence[str] | Mapping[Any, str] | str", **kw: Any) -> "State":
        """The state of a batch of queries as ``search`` receives them: :class:`Queries`, one string,
        a list (tuple, array, iterable) of strings numbered ``"q0", "q1", ...``, or a mapping
        ``{query_id: text}`` (a pandas ``Series`` with string ids as its index counts as one; see
        :func:`ids_and_texts`, which refuses a DataFrame, bytes, ``None``).  Each text must be a string
        (:class:`Queries` checks them, naming the position and query id of one that is not)."""
        if isinstance(queries, str):
            queries = [queries]
        if not isinstance(queries, Queries):
            ids, texts = ids_and_texts(queries, "search: queries")
            queries = Queries([f"q{i}" for i in range(len(texts))] if ids is None else ids, texts)
        return cls(list(queries.texts), list(queries.ids), **kw)

    def copy(self) -> "State":
        """A shallow copy whose containers can be changed without touching this one (not checked again: every
        operator copies the state it is given, and its queries and ids were checked when it was made)."""
        out = _copy.copy(self)  # (no __post_init__)
        out.queries, out.query_ids = list(self.queries), list(self.query_ids)
        out.rankings = None if self.rankings is None else list(self.rankings)
        out.vectors, out.values = dict(self.vectors), {k: list(v) for k, v in self.values.items()}
        out.branches = None if self.branches is None else list(self.branches)
        out.options = dict(self.options)
        return out

    def subset(self, idx: Sequence[int] | np.ndarray) -> "State":
        """The sub-batch of queries at positions ``idx`` (or a boolean mask; the trace list is shared)."""
        sel = _as_rows(idx, len(self), "State.subset")
        idx = sel.tolist()
        return State(
            queries=[self.queries[i] for i in idx], query_ids=[self.query_ids[i] for i in idx],
            rankings=None if self.rankings is None else [self.rankings[i] for i in idx],
            vectors={k: v[sel] for k, v in self.vectors.items()},
            values={k: [v[i] for i in idx] for k, v in self.values.items()},
            branches=None if self.branches is None else [(n, [r[i] for i in idx]) for n, r in self.branches],
            options=dict(self.options), trace=self.trace, qrels=self.qrels,
        )

    @classmethod
    def merge(cls, parent: "State", parts: Sequence[tuple[Sequence[int], "State"]]) -> "State":
        """Put sub-batches (``State.subset`` of ``parent`` then transformed) back in ``parent``'s order.

        Rows not covered by any part keep the parent's rankings, values and vectors.  A query
        vector key survives only where it stays valid for every row: a part that dropped a
        key the parent had (its query text changed) invalidates that key for the whole batch,
        and a key new in some parts is kept only when those parts cover every row.
        """
        n = len(parent)
        out = parent.copy()
        out.branches = None
        if not parts:
            return out
        covered = np.zeros(n, bool)
        for idx, _ in parts:
            covered[np.asarray(list(idx), dtype=np.int64)] = True
        # rankings
        if any(p.rankings is not None for _, p in parts) or parent.rankings is not None:
            rankings = list(parent.rankings) if parent.rankings is not None else [Ranking.empty() for _ in range(n)]
            for idx, part in parts:
                if part.rankings is not None:
                    for j, i in enumerate(idx):
                        rankings[i] = part.rankings[j]
            out.rankings = rankings
        # values
        for _, part in parts:
            for key in part.values:
                if key not in out.values:
                    out.values[key] = [None] * n
        for idx, part in parts:
            for key, vals in part.values.items():
                col = out.values[key]
                for j, i in enumerate(idx):
                    col[i] = vals[j]
        # vectors
        keys = set(parent.vectors) | {k for _, p in parts for k in p.vectors}
        vectors: dict[str, np.ndarray] = {}
        for key in keys:
            if any(key not in p.vectors for _, p in parts):
                continue
            if key in parent.vectors:
                base = np.array(parent.vectors[key], copy=True)
            elif covered.all():
                first = parts[0][1].vectors[key]
                base = np.zeros((n, first.shape[1]), first.dtype)
            else:
                continue
            for idx, part in parts:
                base[np.asarray(list(idx), dtype=np.int64)] = part.vectors[key]
            vectors[key] = base
        out.vectors = vectors
        return out
