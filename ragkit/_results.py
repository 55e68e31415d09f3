"""The checks of what an operator's ``_call`` returns (:func:`check_result`): a :class:`~ragkit.types.State` of the
same queries, one ranking per query of the corpus's rows, each once, by finite scores sorted best first
(:func:`score_rises`, the one rule of "sorted" across ragkit)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ragkit import registry
from ragkit.errors import DataError
from ragkit.types import Corpus, Ranking, State, field_fits, field_length_error

if TYPE_CHECKING:
    from ragkit.operator import Operator

__all__ = ["check_result", "SORT_TOLERANCE", "score_rises"]


def check_result(op: Operator, state: State, out: Any, *, corpus_before: Any = None) -> State:
    """``out``, what ``op._call(state)`` returned, when it is what an operator returns: a :class:`State` of
    the same number of queries, whose ``rankings`` are ``None`` (not for a retriever, nor for a step given
    rankings) or one :class:`Ranking` per query, with as many scores as rows and every row a row of the
    corpus searched (``op``'s own, or the search's), once per query, by finite scores sorted best first
    (ties allowed, and a rise of float rounding: 1e-6 of the score).  Otherwise a :class:`DataError` naming
    ``op``'s class and the first query at fault, instead of an error, or a wrong result, from the step after
    it; a problem the query's input ranking already had is not ``op``'s doing and passes (a state made by
    hand, called on directly).

    A retriever's ranking longer than its :meth:`~ragkit.operator.Operator.k_for` (the ``k`` parameter, raised by a
    per-call ``k``, or its own ``k`` option) is cut to it: every retriever takes ``k`` as a run-time option,
    also one whose ``_call`` reads ``self.params.k``.  Vectorised over the batch: one concatenation of the
    rows and scores; for an operator of one's own (not a built-in, which the conformance suite holds to it)
    also a hash pass over the ``(query, row)`` pairs (:func:`_repeated`), about 5-14 ms of CPU for 300
    queries x 1,000 documents.  A ranking handed back as it was given (the same object: a router's,
    a judge's) is not checked again.  ``corpus_before``: ``op.corpus_`` when the call began; a row outside the
    corpus searched is said to be likely the work of an edit on another thread where ``op.corpus_`` is another
    object now, or is not the corpus the search began with."""
    cls = type(op).__name__
    how = "return a State: out = state.copy(); out.rankings = [Ranking(rows, scores), ...] (one per query)"
    if not isinstance(out, State):
        raise DataError(f"{cls}._call ({op.name!r}) returned {type(out).__name__} {out!r:.60}, expected a ragkit "
                        f"State; {how}")
    n = len(state.queries)
    if len(out.queries) != n:
        raise DataError(f"{cls}._call ({op.name!r}) returned a State of {len(out.queries)} queries for the {n} it "
                        f"was given; {how}")
    _check_same_queries(op, state, out, how)
    for key in ("query_text", "lexical_query"):  # (State.texts zips them with the queries: one too few went unseen,
        text = out.values.get(key)  # and the step after it was blamed for too few rankings; an array failed there
        if text is None or text is state.values.get(key):  # with numpy's "truth value ... is ambiguous")
            continue
        if not isinstance(text, (list, tuple)):
            raise DataError(f"{cls}._call ({op.name!r}) returned values[{key!r}] as {type(text).__name__} "
                            f"{text!r:.60}; expected a list of one str per query (None for a query it leaves as it "
                            f"is), as every State.values entry is a list: out.values[{key!r}] = [...]")
        if len(text) != n:
            raise DataError(f"{cls}._call ({op.name!r}) returned values[{key!r}] of {len(text)} entries for {n} "
                            f"queries; expected one str per query (None for a query it leaves as it is)")
    rankings = out.rankings
    if rankings is None:
        if op.kind == "retriever":
            raise DataError(f"{cls}._call ({op.name!r}) is a retriever but returned a State without rankings "
                            f"(rankings None); {how}")
        if state.rankings is not None:
            raise DataError(f"{cls}._call ({op.name!r}) was given rankings but returned a State without them "
                            f"(rankings None), which would leave the search no results for any query; keep them "
                            f"(out = state.copy() does), or, to drop a query's documents, give it Ranking.empty()")
        return out
    if not isinstance(rankings, (list, tuple)) or len(rankings) != n:
        got = len(rankings) if isinstance(rankings, (list, tuple)) else type(rankings).__name__
        raise DataError(f"{cls}._call ({op.name!r}) returned {got} rankings for {n} queries, expected a list of one "
                        f"Ranking per query; {how}")
    for i, r in enumerate(rankings):  # (one pass; the rows and scores are checked on them all at once below)
        if not isinstance(r, Ranking):
            raise DataError(f"{cls}._call ({op.name!r}) returned rankings[{i}] = {type(r).__name__} {r!r:.60}, "
                            "expected a ragkit Ranking(rows, scores)")
        if len(r.rows) != len(r.scores) or r.rows.ndim != 1 or r.scores.ndim != 1:
            raise DataError(f"{cls}._call ({op.name!r}) returned rankings[{i}] with rows of shape {r.rows.shape} "
                            f"and scores of shape {r.scores.shape}; expected one score per row, both one-dimensional")
        for key, col in r.fields.items():  # (a dict: set after the Ranking checked them)
            if not field_fits(col, len(r.rows)):
                raise DataError(field_length_error(f"{cls}._call ({op.name!r}) returned rankings[{i}]", key, col,
                                                   len(r.rows)))
    if op.kind == "retriever" and rankings:
        out = _cut_to_k(op, state, out)
        rankings = out.rankings
    from ragkit.pipelines._compose import _TRACE_IDS

    ids = _TRACE_IDS.get()  # the search's corpus (a stateless step's corpus_ may be an earlier one, or none)
    corpus = None if ids is not None or op.stateless else getattr(op, "corpus_", None)
    n_docs = len(ids) if ids is not None else len(corpus) if isinstance(corpus, Corpus) else None
    if not rankings:
        return out
    lengths = np.fromiter((len(r) for r in rankings), np.int64, len(rankings))
    if not lengths.sum():
        return out
    rows = np.concatenate([r.rows for r in rankings])
    if n_docs is not None and (rows.min() < 0 or rows.max() >= n_docs):
        row = int(rows.min()) if rows.min() < 0 else int(rows.max())
        now = None if op.stateless else op.__dict__.get("corpus_")
        edited = isinstance(now, Corpus) and (
            (corpus_before is not None and now is not corpus_before) or (ids is not None and now.ids is not ids))
        why = (f"; {op.name!r}'s documents changed during the search (add / remove on another thread, now "
               f"{len(now):,} documents), the likely cause: search again between edits, or edit through "
               "RagkitRetriever (add_documents / delete), whose edits every search waits for"
               if edited and isinstance(now, Corpus) else "")
        raise DataError(f"{cls}._call ({op.name!r}) returned row {row}, not a row of the corpus of {n_docs:,} "
                        f"documents searched; a Ranking's rows are corpus row numbers 0..{n_docs - 1}{why}")
    given = state.rankings if isinstance(state.rankings, (list, tuple)) and len(state.rankings) == n else None
    idx = np.arange(n)  # the queries whose rankings are checked: not one handed back as it was given (the input's)
    if given is not None:
        mine = np.fromiter((r is not g for r, g in zip(rankings, given)), bool, n)
        if not mine.all():
            idx = np.flatnonzero(mine)
            lengths = lengths[idx]
            if not lengths.sum():
                return out
            rows = np.concatenate([rankings[j].rows for j in idx])
    scores = np.concatenate([rankings[j].scores for j in idx])
    # duplicates (a hash pass, the one check that costs: 1.2 s and ~365 MB at 7,000 x 1,000) are asked of
    # operators of one's own; the built-in ones are held to it by the conformance suite
    checks = ("finite", "sorted") + (() if registry._builtin(type(op)) else ("duplicate",))
    for problem in checks:
        at = _ranking_problem(rows, scores, lengths, problem)
        if at is None:
            continue
        if given is not None and all(isinstance(given[j], Ranking) for j in idx):
            g_len = np.fromiter((len(given[j]) for j in idx), np.int64, len(idx))
            if g_len.sum():  # a problem its input ranking already had: not this step's doing
                g_rows = np.concatenate([given[j].rows for j in idx])
                g_scores = np.concatenate([given[j].scores for j in idx]).astype(np.float32, copy=False)
                had = _ranking_problem(g_rows, g_scores, g_len, problem, every=True)
                q_at = np.searchsorted(np.cumsum(lengths), at, side="right")
                at = at[~had[q_at]] if had is not None else at
                if not len(at):
                    continue  # (and on to the other problems: a query may have another of its own)
        _raise_ranking_problem(op, state, problem, int(at[0]), rows, scores, lengths, idx)
    return out


def _same_items(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two sequences of the same length hold equal strings: the same object, or two lists compared (items
    by identity first), else (a tuple, an array) item by item."""
    if a is b:
        return True
    if type(a) is list and type(b) is list:
        return a == b
    return all(x == y for x, y in zip(a, b))


def same_query_text(given: State, got: State, who: str) -> bool:
    """Whether ``got`` (what a step returned for ``given``) searches the query texts ``given`` does
    (:meth:`State.texts <ragkit.types.State.texts>`: a rewriter's ``values["query_text"]``, else the query).  Cheap
    where nothing was rewritten: the same ``query_text`` object, then two lists of the same length compared item by
    item (:func:`_same_items`; ``state.copy()`` copies the list, not its strings, so they compare by identity), and
    only then each query's text.  A ``query_text``
    that is not a list (or tuple) of one text per query, as every ``State.values`` entry is (a numpy array, whose
    ``==`` is not one answer), is a :class:`DataError` naming ``who`` (the step that returned it)."""
    a, b = given.values.get("query_text"), got.values.get("query_text")
    if a is b:
        return True
    for value, how in ((b, "returned"), (a, "was given")):
        if value is not None and not isinstance(value, (list, tuple)):
            raise DataError(f"{who} {how} values['query_text'] as {type(value).__name__} {value!r:.60}; expected a "
                            f"list of one str per query (None for a query it leaves as it is), as every State.values "
                            f"entry is a list: out.values['query_text'] = [...]")
    if a is not None and b is not None and len(a) == len(b) and _same_items(a, b):
        return True
    return got.texts() == given.texts()


def _check_same_queries(op: Operator, state: State, out: State, how: str) -> None:
    """A :class:`DataError` where ``out`` (what ``op._call(state)`` returned, as many queries) holds other query ids
    or texts than ``state``: the search would report its rankings under the wrong queries.  A rewriter changes
    what later steps search in ``values["query_text"]`` (``values["lexical_query"]`` for term matching), never in
    ``queries``.  Cheap: the same lists (``state.copy()`` copies them, so each item is the same object), then a
    list comparison, whose items compare by identity first."""
    if _same_items(out.query_ids, state.query_ids):
        if _same_items(out.queries, state.queries):
            return
        what, got, given = "query texts", out.queries, state.queries
    else:
        what, got, given = "query ids", out.query_ids, state.query_ids
    i = next(j for j, (a, b) in enumerate(zip(got, given)) if a != b)
    cls = type(op).__name__
    fix = (" (a rewriter writes the new text in out.values['query_text'], which State.texts() and the retrievers "
           "after it read; out.values['lexical_query'] for term matching only)" if what == "query texts" else "")
    raise DataError(f"{cls}._call ({op.name!r}) returned a State of other {what} than it was given: {got[i]!r:.60} "
                    f"at batch position {i}, given {given[i]!r:.60}; the search reports each ranking under the query "
                    f"it was given, so keep them{fix}; {how}")


def _raise_ranking_problem(op: Operator, state: State, problem: str, i: int, rows: np.ndarray, scores: np.ndarray,
                           lengths: np.ndarray, idx: np.ndarray) -> None:
    """The :class:`DataError` of :func:`check_result` for ``problem`` at position ``i`` of the concatenated
    rankings (those of the queries ``idx``, ``lengths`` each), naming the operator, the query and the fix."""
    cls = type(op).__name__
    starts = np.cumsum(lengths) - lengths
    k = int(np.searchsorted(starts + lengths, i, side="right"))
    pos, q = i - int(starts[k]), int(idx[k])
    where = f"for query {state.query_ids[q]!r} (batch position {q})"
    if problem == "finite":
        what = (f"the score {float(scores[i])} at position {pos} (row {int(rows[i])}) {where}; expected finite "
                f"scores: NaN and ±inf break the cut-offs (top_k, thresholds), score fusion and evaluate; drop such "
                f"documents or give them a finite score")
    elif problem == "sorted":
        what = (f"scores not sorted best first {where}: {float(scores[i]):.9g} at position {pos} before "
                f"{float(scores[i + 1]):.9g}; a Ranking lists its documents by non-increasing score (top_k keeps "
                f"its head, rrf fuses by position): sort them, e.g. order = np.argsort(-scores, kind='stable')")
    else:
        what = (f"row {int(rows[i])} more than once {where}; a Ranking lists each document at most once "
                f"(keep its best score)")
    raise DataError(f"{cls}._call ({op.name!r}) returned {what}")


#: The rise of a score over the one before it that a ranking "sorted best first" may have: float
#: rounding, this fraction of the score (at least this much in absolute terms).
SORT_TOLERANCE = 1e-6


def score_rises(scores: np.ndarray) -> np.ndarray:
    """``(n - 1,)`` bool: where ``scores[i + 1]`` is above ``scores[i]`` by more than float rounding
    (:data:`SORT_TOLERANCE` of ``|scores[i]|``, at least :data:`SORT_TOLERANCE`).  A NaN rises nowhere.

    The one rule of "sorted best first" across ragkit: :func:`check_result` (every operator's output),
    the score cut-offs (score_threshold, relative_threshold) and the cosine checks of the filters.
    Callers mask the pairs that straddle two rankings.  Vectorised: one pass, in ``scores``' dtype."""
    scores = np.asarray(scores)
    if len(scores) < 2:
        return np.zeros(0, bool)
    prev = scores[:-1]
    tol = np.asarray(SORT_TOLERANCE, dtype=scores.dtype if scores.dtype.kind == "f" else np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # (an input's ±inf, asked whether it was sorted)
        return np.asarray(scores[1:] - prev > tol * np.maximum(np.abs(prev), np.ones((), tol.dtype)))


def _ranking_problem(rows: np.ndarray, scores: np.ndarray, lengths: np.ndarray, problem: str,
                     every: bool = False) -> np.ndarray | None:
    """Where a batch of rankings (concatenated ``rows`` and ``scores``, ``lengths`` per ranking) has
    ``problem``, or None: ``"finite"`` (a NaN or ±inf score), ``"sorted"`` (a score above the one before it in
    its ranking, by more than 1e-6 of it (at least 1e-6); the positions before it) or ``"duplicate"`` (a row
    twice in one ranking; its later positions).  ``every``: a mask, per ranking, of those that have it,
    instead of the positions."""
    ends = np.cumsum(lengths)
    if problem == "finite":
        bad = np.flatnonzero(~np.isfinite(scores))
    elif problem == "sorted":
        up = score_rises(scores)  # (a rise of float rounding passes: the conformance suite's too)
        inner = ends[(ends > 0) & (ends < len(scores))] - 1  # the last of a ranking, the next's first after it
        up[inner] = False
        bad = np.flatnonzero(up)
    else:
        lo = int(rows.min())
        key = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths) * (int(rows.max()) - lo + 1) + (rows - lo)
        bad = _repeated(key)
    if not len(bad):
        return None
    if every:
        mask = np.zeros(len(lengths), bool)
        mask[np.searchsorted(ends, bad, side="right")] = True
        return mask
    return bad


#: multipliers of the hashes that narrow :func:`_repeated`'s candidates (odd 64-bit constants)
_HASH_SALTS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)


def _repeated(key: np.ndarray) -> np.ndarray:
    """Positions of ``key`` (non-negative int64) holding a value seen at an earlier position, sorted.  In
    O(n): each round hashes the candidates into a table about twice their number and keeps those that
    share a bucket (every repeated value, and about a third of the others), then the few left are sorted;
    a sort of all keys was ten times slower (30 ms for 300,000)."""
    cand = np.arange(len(key))
    for salt in _HASH_SALTS:
        if len(cand) < 4096:
            break
        bits = len(cand).bit_length() + 1
        h = ((key[cand].view(np.uint64) * np.uint64(salt)) >> np.uint64(64 - bits)).astype(np.intp)
        cand = cand[np.bincount(h, minlength=1 << bits)[h] > 1]
    order = np.argsort(key[cand], kind="stable")  # (equal keys stay in position order: the later ones repeat)
    sorted_keys = key[cand][order]
    return np.sort(cand[order[1:][sorted_keys[1:] == sorted_keys[:-1]]])


def _cut_to_k(op: Operator, state: State, out: State) -> State:
    """``out`` with each ranking longer than ``op.k_for(state)`` cut to it (a retriever whose ``_call`` reads
    ``self.params.k`` and not :meth:`~ragkit.operator.Operator.k_for`: the per-call ``k`` it declares is then still
    honoured); ``out`` itself when none is longer or ``op`` has no ``k``."""
    own = getattr(op.params, "k", None)
    if not isinstance(own, (int, np.integer)) or isinstance(own, bool) or own < 1:
        return out  # (no k, or one of the operator's own meaning: 0 for every document)
    rankings = out.rankings or []
    lengths = np.fromiter((len(r) for r in rankings), np.int64, len(rankings))
    k = op.k_for(state)
    if not (lengths > k).any():
        return out
    cut = out.copy()
    cut.rankings = [r.head(k) for r in rankings]
    return cut
