"""The copies of a pipeline RagkitRetriever makes (an unfitted one for a refit, one sharing the caller's read-only
data for its own) and the checks that choose between them: same documents, steps trained on queries, a corpus
appended to."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Any, Mapping, TypeVar

import numpy as np

from ragkit.errors import ParamError
from ragkit.metadata import is_missing
from ragkit.operator import Operator
from ragkit.types import Corpus


def _holds_index(op: Operator) -> bool:
    """Whether a fit of ``op`` changes what it holds: one of its leaves is not stateless (a composite is
    stateless itself, whatever its leaves hold)."""
    from ragkit.pipelines.yaml import walk_leaves

    return any(not leaf.stateless for _, leaf in walk_leaves(op))


def _trained_steps(op: Operator) -> list[tuple[str, Operator, int]]:
    """``(path, leaf, n)`` for each fitted leaf of ``op`` that learned from (or read) ``n`` training queries at
    its last fit (a learned fuser's weights, a Cosine Adapter's threshold, a ``dbnorm`` query bank): what a
    refit without ``train`` drops.  Paths as in :meth:`Pipeline.learned` and errors."""
    from ragkit.pipelines.yaml import walk_leaves

    return [(where, leaf, len(taught)) for where, leaf in walk_leaves(op)
            if (taught := getattr(leaf, "trained_on_", None)) is not None and leaf.is_fitted]


def _same_documents(a: Corpus, b: Corpus) -> bool:
    """Whether ``a`` and ``b`` hold the same documents in the same order: ids, texts, titles and metadata
    (one array comparison per column; a missing value (:func:`~ragkit.metadata.is_missing`: ``None``, ``NaN``,
    ``pandas.NA``, ``NaT``) equals any other missing value, in a numeric column and at any depth of an object
    column's values (``{"v": nan}``, ``[1, None]``): two corpora built apart from the same records are the
    same documents)."""
    if a is b:
        return True
    if len(a) != len(b) or set(a.metadata) != set(b.metadata):
        return False
    return (_same_column(a.ids, b.ids) and _same_column(a.texts, b.texts) and _same_column(a.titles, b.titles)
            and all(_same_column(a.metadata[key], b.metadata[key]) for key in a.metadata))


def _same_column(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether two columns of one value per document are equal, missing values equal to each other: one array
    comparison; in an object column, the values the comparison finds different (a ``NaN`` inside a dict is not
    ``==`` another ``NaN``) are looked at again one by one (:func:`_same_value`)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        return False
    if x.dtype.kind in "fc" and y.dtype.kind in "fc":
        return bool(np.array_equal(x, y, equal_nan=True))
    if x.dtype.kind in "mM" and y.dtype.kind in "mM":
        nat = np.isnat(x)
        return bool(np.array_equal(nat, np.isnat(y)) and np.array_equal(x[~nat], y[~nat]))
    if x.dtype != object and y.dtype != object:
        return bool(np.array_equal(x, y))
    try:
        equal = np.asarray(x == y)
    except Exception:  # noqa: BLE001  (a value whose == raises, pandas.NA's truth value: looked at one by one)
        equal = np.zeros(x.shape, dtype=bool)
    if equal.shape != x.shape or equal.dtype != bool:  # (an element's == gave no bool)
        equal = np.zeros(x.shape, dtype=bool)
    differ = np.flatnonzero(~equal)  # only values == called different: a loop over those alone
    return all(_same_value(x.flat[i], y.flat[i]) for i in differ.tolist())


def _same_value(u: Any, v: Any) -> bool:
    """Whether two metadata values are equal, missing values (:func:`~ragkit.metadata.is_missing`) equal to
    each other at any depth: dicts key by key, lists and tuples item by item, arrays element by element."""
    if is_missing(u) or is_missing(v):
        return is_missing(u) and is_missing(v)
    if isinstance(u, Mapping) or isinstance(v, Mapping):
        return (isinstance(u, Mapping) and isinstance(v, Mapping) and u.keys() == v.keys()
                and all(_same_value(u[key], v[key]) for key in u))
    if isinstance(u, np.ndarray) or isinstance(v, np.ndarray):
        u, v = np.asarray(u), np.asarray(v)
        return u.shape == v.shape and _same_column(u.reshape(-1), v.reshape(-1))
    if isinstance(u, (list, tuple)) or isinstance(v, (list, tuple)):
        return (isinstance(u, (list, tuple)) and isinstance(v, (list, tuple)) and len(u) == len(v)
                and all(_same_value(p, q) for p, q in zip(u, v)))
    try:
        return bool(u == v)
    except Exception:  # noqa: BLE001  (an == that raises or gives no truth value: not the same)
        return False


_T = TypeVar("_T")


def _sharing_copy(obj: _T, memo: dict[int, Any] | None = None) -> _T:
    """A deep copy of ``obj`` (a fitted operator, or a retriever's state holding one) that shares with it what no
    edit of either changes in place, so that a large pipeline is not held twice and a memory-mapped one
    (``Operator.load(..., mmap=True)``) is not read into memory: its read-only arrays (:func:`_frozen_array`:
    memory maps opened read-only, a corpus's columns) and its :class:`Corpus` objects (immutable: ``add`` /
    ``remove`` make new ones).  An edit of the copy (the retriever's ``add_documents`` / ``delete``) replaces those
    arrays rather than writing into them, and writing into a read-only array fails whoever tries it, so the
    caller's pipeline searches as before.  ``memo``: the memo of an enclosing :func:`copy.deepcopy`.

    A vector index (:class:`~ragkit.retrievers._index.VectorIndex`) copies itself (its ``__deepcopy__``): its
    HNSW graph, which an ``add`` grows in place, is the copy's own (a fresh view of the file it maps, unchanged
    since ``load``, else ``Index.copy``), and its float vectors file (``rescore``) stays the caller's: the copy
    writes a grown one to its own scratch folder, and never grows or deletes the caller's."""
    from ragkit.retrievers._index_files import _frozen_array

    memo = {} if memo is None else memo
    for item in _reachable(obj):
        if isinstance(item, Corpus) or (isinstance(item, np.ndarray) and _frozen_array(item)):
            memo.setdefault(id(item), item)
    return copy.deepcopy(obj, memo)


#: containers longer than this are data (a vocabulary, a list of ids), not the structure of a pipeline:
#: :func:`_reachable` does not look into them (what they hold is copied)
_REACHABLE_MAX_ITEMS = 256


def _reachable(root: Any, max_depth: int = 12) -> Iterator[Any]:
    """The objects reachable from ``root`` through instance attributes (``__dict__``) and small lists,
    tuples and dicts (:data:`_REACHABLE_MAX_ITEMS`), each once, not looking into numpy arrays, :class:`Corpus`
    objects, strings, numbers, classes, modules or functions: where :func:`_sharing_copy` finds what it
    shares."""
    import types

    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(root, 0)]
    leaf_types = (str, bytes, int, float, complex, bool, type(None), type, types.ModuleType, types.FunctionType,
                  types.BuiltinFunctionType, types.MethodType)
    while stack:
        obj, depth = stack.pop()
        if id(obj) in seen or isinstance(obj, leaf_types):
            continue
        seen.add(id(obj))
        yield obj
        if depth >= max_depth or isinstance(obj, (np.ndarray, Corpus)):
            continue
        if isinstance(obj, dict):
            items: Iterable[Any] = obj.values() if len(obj) <= _REACHABLE_MAX_ITEMS else ()
        elif isinstance(obj, (list, tuple, set, frozenset)):
            items = obj if len(obj) <= _REACHABLE_MAX_ITEMS else ()
        else:
            items = (vars(obj).values() if isinstance(getattr(obj, "__dict__", None), dict) else ())
        stack.extend((item, depth + 1) for item in list(items))


def _refuse_untrained_fit(op: Operator, given: str) -> None:
    """Refuse (:class:`ParamError`, in the retriever's terms) fitting ``op`` on ``corpus=`` without ``train=``
    when one of its steps learns only from judged queries (a ``cosine_adapter``, ``learn: true`` thresholds):
    ``fit``'s own error names ``fit(corpus, train=...)`` and the command line, not the retriever's argument."""
    from ragkit.pipelines.yaml import walk_leaves

    for where, leaf in walk_leaves(op):
        refusal = leaf.train_refusal()
        if refusal is not None:
            raise ParamError(
                f"RagkitRetriever: corpus= fits {given} on those documents, and its step {where} learns only from "
                "judged training queries (it cannot be fitted without them), but no train= was given; pass "
                "train=TrainSet(queries, qrels) with corpus= (queries "
                "judged against that corpus), or give a pipeline fitted with them (or its saved folder) without "
                "corpus=", "train")


def _corpus_of(op: Operator) -> Corpus | None:
    """The documents ``op`` searches (its fitted retrievers', after any ``add`` / ``remove``)."""
    from ragkit.pipelines._compose import shared_corpus

    return shared_corpus(op)


def _extends(new: Corpus | None, old: Corpus | None) -> bool:
    """Whether ``new`` is ``old`` with documents appended (``add``): every row of ``old`` is the same row of ``new``."""
    if new is None or old is None or len(new) < len(old):
        return False
    return bool(np.array_equal(new.ids[:len(old)], old.ids))
