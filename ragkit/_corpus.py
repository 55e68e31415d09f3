"""The :class:`~ragkit.types.Corpus` and what only it uses: its metadata columns, its views of rows and columns,
and the writing of its JSON Lines file."""

from __future__ import annotations

import datetime
import gc
import inspect
import itertools
import json
import logging
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence, cast, overload

import numpy as np

from ragkit._checks import (
    _SURROGATE,
    _as_ids,
    _as_rows,
    _as_str_array,
    _check_encodable,
    _column,
    _count,
    _first_surrogate,
    _id_string,
    _kind,
    _one_argument,
    _other_constructor,
    _text_column,
    _utf8_clean,
    check_id_breaks,
    ids_and_texts,
)
from ragkit._files import atomic_file, file_above, save_unwritable, user_path
from ragkit.errors import ArtifactError, DataError, InputTypeError, ParamError, repeated
from ragkit.metadata import (
    AllOf,
    Coded,
    check_added_kinds,
    check_filter,
    check_kinds,
    code_column,
    filter_values,
    hashable,
    held_kinds,
    is_missing,
    isin,
    warn_mixed_kinds,
)

if TYPE_CHECKING:  # the constructors' hints only: pandas is optional
    import pandas as pd


#: the types of metadata values a corpus keeps as they are (anything else is looked at value by value)
_PLAIN_META = frozenset({str, int, bool, type(None), list, dict})


def _meta_column(col: np.ndarray) -> np.ndarray:
    """A metadata column as a saved corpus reads it back, so that filters answer the same before and after a
    save: in an object column, a 1-D numpy array value (what ``pandas.read_parquet`` gives for a list
    column) or a tuple as a list, and a missing value (NaN, ``pandas.NA``, ``NaT``) as ``None``.  A float16 /
    float32 column as float64 by shortest decimals; a column of another dtype (numbers, strings) is kept as it
    is; in an object column, one pass over the values' types, and a look at the values of other types than str,
    int, bool, None, list and dict only (and inside lists and dicts, where one holds a numpy scalar)."""
    return _meta_kept(col)[0]


def _meta_kept(col: np.ndarray) -> tuple[np.ndarray, list[Any] | None, set[type] | None]:
    """:func:`_meta_column`'s column, with its values as a list and the set of their types (``None``, ``None`` for
    a column that is not of objects), which :func:`_check_meta_text` reads rather than listing them again.

    A float16 / float32 column becomes float64 by each value's shortest decimal (``np.float32(0.1)`` as ``0.1``,
    NaN kept), as a save writes it (:func:`saved_scalar`).  List and dict values (tags) are copied, so that the
    corpus's filter codes never change with the caller's own lists (``tags[1].append("x")`` after the corpus
    was made): where every one holds plain values only (no list, dict nor numpy scalar inside: one pass over
    their elements' types, in C), by ``list.copy`` / ``dict.copy``; else rebuilt value by value at any depth
    (:func:`_nested_plain`), with the numpy scalars inside (``[np.float32(0.1)]``) as :func:`_meta_value` keeps
    them."""
    if col.dtype.kind == "f" and col.dtype != np.float64:  # (str(): the shortest decimal that reads back the same)
        return col.astype(str).astype(np.float64), None, None
    if col.dtype != object:
        return col, None, None
    values = col.tolist()
    types = set(map(type, values))
    odd = types - _PLAIN_META
    nested = types & _NESTED
    if not odd and not nested:
        return col, values, types
    with _gc_paused():  # (new lists and dicts, no garbage: a collection pass per 700 of them tripled the cost)
        # (whether the lists and dicts need more than a copy, whatever else the column holds: one odd value, a NaN,
        # does not send every list through _nested_plain)
        # (a column with no list nor dict, strings beside NaN, neither looks for them nor asks each value for one)
        flat = not nested or _flat_plain(values if types <= _NESTED else [v for v in values if type(v) in _NESTED])
        if not odd and flat:
            out = (list(map(list.copy, values)) if types == {list} else list(map(dict.copy, values))
                   if types == {dict} else [v.copy() if type(v) in _NESTED else v for v in values])  # (C calls)
            return _column(out), out, types
        if not nested:
            out = [_meta_value(v) if type(v) in odd else v for v in values]
        else:
            deep = _NESTED if not flat else frozenset()
            out = [_meta_value(v) if type(v) in odd else _nested_plain(v) if type(v) in deep else
                   v.copy() if type(v) in _NESTED else v for v in values]
    if not nested and all(a is b for a, b in zip(out, values)):
        return col, values, types
    return _column(out), out, set(map(type, out))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a column's list and dict values are copied (made anew, none
    of them garbage): with it on, every 700 new containers start a collection, which made copying a column of 1M
    tags ~3x slower (790 ms where 190 ms without).  Left as it was found (off, where the caller turned it off)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


#: the types of metadata values that hold other values (:func:`_flat_plain`, :func:`_nested_plain`)
_NESTED = frozenset({list, dict})


def _flat_plain(values: list[Any]) -> bool:
    """Whether the lists and dicts ``values`` hold no list, dict nor numpy scalar (a column of tags): their
    elements chained and their types listed (C calls), so that a copy of each (``list.copy``) is all they need."""
    types = set(map(type, itertools.chain.from_iterable(v.values() if type(v) is dict else v for v in values)))
    return not types & _NESTED and not any(issubclass(t, np.generic) for t in types)


def _nested_plain(v: Any) -> Any:
    """A copy of the list or dict metadata value ``v``, at any depth, with the numpy scalars in it as
    :func:`_meta_value` keeps them (``np.float32(0.1)`` as ``0.1``, NaN as None: as a save writes them): the
    corpus's own, which the caller's later changes to ``v`` do not reach."""
    if type(v) is list:
        return [_nested_plain(x) for x in v]
    if type(v) is dict:
        return {k: _nested_plain(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return _meta_value(v)
    return v


def _check_meta_text(key: Any, col: np.ndarray, ids: np.ndarray, values: list[Any] | None = None,
                     types: set[type] | None = None, chunk: int = 8192) -> None:
    """Refuse a lone surrogate (bytes decoded with ``errors="surrogateescape"``) in the metadata field name
    ``key`` or in a string of its column ``col`` (one value per document; strings inside list and dict values
    too): :meth:`Corpus.save` and every save holding the corpus (a fitted retriever's, a LangChain retriever's)
    write UTF-8 JSON, which cannot hold one, and would fail with a bare :class:`UnicodeEncodeError` naming
    neither the document nor the field.  A :class:`DataError` naming the field, the document id and its row.

    Only text (``U``) and object columns are looked at; ``values`` and ``types`` are an object column's values
    and the set of their types where the caller has them (:func:`_meta_kept`).  A column of numbers and None
    costs nothing more; otherwise :func:`_first_surrogate`: per ``chunk`` values, their text joined
    (:func:`_strings_of`: C calls, no Python loop over a column of strings or of lists of strings) and one UTF-8
    test (:func:`_utf8_clean`); values are looked at one by one only in a chunk that holds a surrogate."""
    if isinstance(key, str) and not _utf8_clean(key):
        hit = cast("re.Match[str]", _SURROGATE.search(key))
        raise DataError(f"Corpus metadata field {key!r} holds a lone surrogate {hit.group()!r} in its name, which is "
                        "no Unicode text (bytes decoded with errors='surrogateescape'?); no save could write it: "
                        "decode the name with its real encoding")
    if col.dtype.kind not in "OU":
        return
    if values is None:
        values = col.tolist()
    if col.dtype.kind == "U":
        types = {str}
    elif types is None:
        types = set(map(type, values))
    if types <= _NO_TEXT:
        return
    kinds = types
    found = _first_surrogate(values, chunk, join=lambda part: _strings_of(part, kinds),
                             text=lambda v: v if isinstance(v, str) else _json_text(v))
    if found is not None:
        row, hit = found
        raise DataError(f"Corpus metadata field {key!r} of document {ids[row]!r} (row {row}) holds a lone "
                        f"surrogate {hit.group()!r} ({_kind(values[row])}), which is no Unicode text (bytes decoded "
                        "with errors='surrogateescape'?); no save could write it: decode the source with its "
                        "real encoding, or drop the value")


#: the types of metadata values that hold no text (:func:`_strings_of` leaves them out)
_NO_TEXT = frozenset({int, float, bool, type(None)})


def _strings_of(values: list[Any], types: set[type]) -> str:
    """The text of ``values`` (metadata values, of the ``types`` or fewer) joined, for a surrogate test
    (:func:`_check_meta_text`): strings as they are, the strings of list values (tags) too, any other value but
    a number or None by :func:`_json_text`.  C calls only (``str.join``, ``filter``, ``itertools.chain``) where
    the values are strings, lists of strings, numbers and None: values that hold no text (numbers, None) are
    dropped (by ``filter`` where None is the only one, else by one comprehension); only a value of another type
    (a dict) costs a ``json.dumps``."""
    if types == {str}:
        return "\x00".join(values)
    kinds = types - _NO_TEXT
    kept: Iterable[Any] = (filter(None, values) if types - kinds <= {type(None)} else  # (None, "" and [] dropped)
                           [v for v in values if type(v) not in _NO_TEXT])
    if kinds == {str}:
        return "\x00".join(kept)
    if kinds <= {str, list}:
        kept = list(kept)
        try:
            return "\x00".join(itertools.chain.from_iterable(kept) if kinds == {list} else
                                itertools.chain.from_iterable(v if type(v) is list else (v,) for v in kept))
        except TypeError:  # a list holding other values than strings
            pass
    return _json_text(list(kept))


def _json_text(v: Any) -> str:
    """``v`` as JSON text with its strings as they are (``ensure_ascii=False``: a lone surrogate stays one), a
    value JSON has no type for by its ``repr`` and keys that are no strings skipped: what :func:`_check_meta_text`
    searches for surrogates."""
    return json.dumps(v, ensure_ascii=False, default=repr, skipkeys=True)


def saved_scalar(v: Any) -> Any:
    """``v`` as the Python value a save writes it (:func:`_jsonable`) where it is a numpy scalar: a finite float
    of another width than float64 (float32, float16) by its shortest decimal (``np.float32(0.1)`` as ``0.1``,
    where ``.item()`` gives ``0.10000000149011612``), any other numpy scalar by ``.item()``; a datetime64 /
    timedelta64 and any other value as it is.  The one rule that the metadata a corpus keeps (:func:`_meta_value`,
    :func:`_meta_kept`), what it saves (:func:`_jsonable`), what a filter asks for (:func:`_filter_wants`) and a
    filter given as an operator's parameter (:func:`ragkit.params._plain`) follow, so that ``np.float32(0.1)``
    and ``0.1`` find the same documents before a save and after."""
    if not isinstance(v, np.generic) or isinstance(v, (np.datetime64, np.timedelta64)):
        return v
    if isinstance(v, np.floating) and v.dtype != np.float64 and np.isfinite(v):
        return float(str(v))
    return v.item()


def _meta_value(v: Any) -> Any:
    """One metadata value as :func:`_meta_column` keeps it: a numpy scalar as Python's, as a save writes it
    (:func:`saved_scalar`: a float32 by its shortest repr, so that ``filter={"w": 0.1}`` finds ``np.float32(0.1)``
    before a save as after, and a returned value is JSON-serialisable); a datetime64 / timedelta64 kept."""
    if isinstance(v, np.ndarray) and v.ndim == 1:
        return v.tolist()
    if isinstance(v, tuple):
        return _nested_plain(list(v))
    if type(v) is set:  # (the corpus's own, as a list or dict value is)
        return set(v)
    v = saved_scalar(v)
    return None if is_missing(v) else v


def _filter_wants(want: Any, dtype: np.dtype | None = None, key: str = "") -> list[Any]:
    """The values a filter's ``want`` asks for (:func:`filter_values`), a missing one (pandas.NA, NaT) as None and
    a float32 / float16 scalar with its shortest decimal too (``np.float32(0.1)`` also as ``0.1``: how
    :func:`saved_scalar` makes it, as :func:`_meta_value` keeps such a value of the documents and a save writes
    it).  For a column of ``dtype`` datetime64 / timedelta64, a date or duration in any form (numpy's; Python's
    ``datetime``, ``date``, ``timedelta``; pandas' ``Timestamp``, ``Timedelta``, and so the values of a Series
    of them: :func:`_numpy_time`) as the Python value of that dtype (``.item()``: a ``date`` for
    ``datetime64[D]``, an int for ``datetime64[ns]``), which the column's filter codes hold, where it converts
    exactly.  Where none of the values given does (a string, a date with a time zone, a noon for a column of
    days: they would match no document), :class:`DataError` says why, naming ``filter.<key>`` and the dtype."""
    out: list[Any] = []
    kind = dtype.kind if dtype is not None and dtype.kind in "mM" else None
    odd: tuple[Any, Any] | None = None  # (the first value given that is no exact date / duration of the column)
    exact = False  # (whether any is one)
    for w in filter_values(want):
        if is_missing(w):
            out.append(None)
            continue
        if kind is not None:
            t = _numpy_time(w, kind)
            same = t.astype(dtype) if t is not None else None
            if same is not None and same == t:
                w, exact = same.item(), True
            elif odd is None:
                odd = (w, t)
        out.append(w)
        if isinstance(w, np.floating) and w.dtype != np.float64:  # (np.float32(0.1) == 0.1 in numpy 2, not in a
            out.append(saved_scalar(w))  # dict of the column's values, which the filter codes look up)
    if odd is not None and not exact:
        raise DataError(_time_mismatch(key, cast(np.dtype, dtype), *odd))
    return out


def _time_mismatch(key: str, dtype: np.dtype, w: Any, t: np.datetime64 | np.timedelta64 | None) -> str:
    """Why the filter value ``w`` (``t``: it as a numpy date / duration, ``None`` where it is none) matches no
    value of field ``key``, a column of ``dtype`` datetime64 / timedelta64 (:func:`_filter_wants`)."""
    what = "dates" if dtype.kind == "M" else "durations"
    head = f"filter.{key}: the field holds {what} ({dtype}); got {w!r:.80} ({type(w).__name__}), which "
    if t is not None:
        unit = np.datetime_data(dtype)[0]
        return (head + f"is not a whole {dtype} value (the field counts in {unit!r}), so it would match no "
                f"document; give it in that unit (np.{'datetime64' if dtype.kind == 'M' else 'timedelta64'}"
                f"(value, {unit!r}) rounds it down)")
    if dtype.kind == "M" and getattr(w, "tzinfo", None) is not None:
        return (head + "has a time zone; a numpy date has none (which instant would it be?): give it without "
                "one, in the zone of the field's dates (datetime: .replace(tzinfo=None); pandas Timestamp: "
                ".tz_convert(zone).tz_localize(None))")
    given = ("np.datetime64('2020-01-01'), a datetime.date / datetime or a pandas Timestamp" if dtype.kind == "M"
             else "np.timedelta64(3, 'D'), a datetime.timedelta or a pandas Timedelta")
    return head + f"is not one, so it would match no document; give one as {given}"


def _numpy_time(w: Any, kind: str) -> np.datetime64 | np.timedelta64 | None:
    """The filter value ``w`` as a numpy date (``kind`` ``"M"``) or duration (``"m"``) where it is one: numpy's
    own, pandas' (``to_datetime64`` / ``to_timedelta64``: a ``Timestamp`` to the nanosecond), Python's
    (``datetime``, ``date``, ``timedelta``); ``None`` for any other value and for a date with a time zone (a
    column of numpy dates has none: which instant would it be?)."""
    if kind == "M":
        if isinstance(w, np.datetime64):
            return w
        if getattr(w, "tzinfo", None) is not None:
            return None
        if hasattr(w, "to_datetime64"):
            return cast(np.datetime64, w.to_datetime64())
        return np.datetime64(w) if isinstance(w, datetime.date) else None
    if isinstance(w, np.timedelta64):
        return w
    if hasattr(w, "to_timedelta64"):
        return cast(np.timedelta64, w.to_timedelta64())
    return np.timedelta64(w) if isinstance(w, datetime.timedelta) else None


def _frozen(arr: np.ndarray, given: Any) -> np.ndarray:
    """``arr`` made read-only (a copy when it is the caller's own array, which stays writable)."""
    if isinstance(given, np.ndarray) and np.may_share_memory(arr, given):
        arr = arr.copy()
    arr.flags.writeable = False
    return arr


class _Columns(Mapping):
    """The read-only mapping of a :class:`Corpus`'s metadata columns (``field -> (n_docs,) array``).

    A corpus caches lookups built from its ids and columns (row numbers, filter codes), so neither
    may change after it is made: build a new corpus instead (``Corpus(..., metadata={...})``).
    """

    __slots__ = ("_cols",)

    def __init__(self, cols: dict[str, np.ndarray]) -> None:
        self._cols = cols

    def __getitem__(self, key: str) -> np.ndarray:
        return self._cols[key]

    def __iter__(self):
        return iter(self._cols)

    def __len__(self) -> int:
        return len(self._cols)

    def __repr__(self) -> str:
        return f"Columns({sorted(self._cols)})"


class _Rows(Mapping):
    """``{id: row}`` of a corpus cut or grown from another without a new Python dict of every id:
    the parent's ``base`` dict (id -> base row, never changed), ``pos`` (int64, base row -> row here,
    -1 for a row dropped) and ``extra`` (id -> row here, for the ids added since).  A removal from a
    400,000-document corpus re-maps ``pos`` in numpy (about a millisecond) where a new dict took
    ~130 ms.  Pickled (and copied) as a plain dict."""

    __slots__ = ("base", "pos", "extra", "ids")

    def __init__(self, base: dict[str, int], pos: np.ndarray, extra: dict[str, int], ids: np.ndarray) -> None:
        self.base, self.pos, self.extra, self.ids = base, pos, extra, ids

    def __getitem__(self, key: str) -> int:
        row = self.extra.get(key)
        if row is not None:
            return row
        row = int(self.pos[self.base[key]])  # KeyError: not an id of the base either
        if row < 0:
            raise KeyError(key)
        return row

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except (KeyError, TypeError):
            return False
        return True

    def __iter__(self):
        return iter(self.ids.tolist())

    def __len__(self) -> int:
        return len(self.ids)

    def __reduce__(self) -> tuple[Any, ...]:
        return dict, (dict(zip(self.ids.tolist(), range(len(self.ids)))),)


def _doc_id(given: Any, i: int, what: str = "Corpus.from_documents: ids") -> str | None:
    """The id of :meth:`Corpus.from_documents`'s document ``i`` (its ``id``, or its metadata's; any given document
    id: RagkitRetriever's ids) as the constructor writes ids (:func:`~ragkit._checks._id_string`: ``1.0`` as
    ``"1"``), ``None`` for a missing one (``None``, NaN): the document's position is its id then (no id given).
    An infinite id is a :class:`DataError` naming ``what[i]``."""
    return None if is_missing(given) else _id_string(given, what, i)


def _same_id(given: Any, did: str) -> bool:
    """Whether the metadata ``"id"`` ``given`` names the document whose own id is ``did`` (written as
    :func:`_doc_id` writes it), without refusing one that is no id (infinity): it is a field of its own then."""
    try:
        return _doc_id(given, 0) == did
    except DataError:
        return False


def _pandas(who: str) -> Any:
    """The pandas module, imported for ``who``; not installed, a :class:`~ragkit.errors.MissingExtraError` (an
    :class:`ImportError`) saying so (one installed that fails to import raises its own ``ImportError``)."""
    try:
        import pandas
    except ImportError:
        from ragkit.errors import require

        require(["pandas"], extra=None, what=f"{who} needs pandas, which is not installed",
                install="pip install pandas")
        raise
    return pandas


#: the keys of a :meth:`Corpus.from_records` record (others are dropped, with a warning)
_RECORD_KEYS = frozenset({"_id", "id", "text", "title", "metadata"})
_RECORD_KEYS_SHOWN = "'_id' (or 'id'), 'text', and optionally 'title' and 'metadata'"


class FullTexts(Sequence[str]):
    """``title + " " + text`` of each document (``text`` alone where the title is empty), joined when read.

    A view of a corpus's ``titles`` and ``texts`` arrays, not a copy: an index gives one ``str``, a slice a
    ``list[str]``; :meth:`lengths` gives their characters without joining them.  Made by
    :attr:`Corpus.full_texts_view`.

    >>> view = Corpus.from_texts(["b"], ids=["1"]).full_texts_view
    >>> len(view), view[0], view[:1]
    (1, 'b', ['b'])
    """

    __slots__ = ("_titles", "_texts")

    def __init__(self, titles: np.ndarray, texts: np.ndarray) -> None:
        self._titles, self._texts = titles, texts

    def __len__(self) -> int:
        return len(self._texts)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [f"{t} {x}" if t else x for t, x in zip(self._titles[i].tolist(), self._texts[i].tolist())]
        t, x = self._titles[i], self._texts[i]
        return f"{t} {x}" if t else str(x)

    def __iter__(self) -> Iterator[str]:
        for t, x in zip(self._titles, self._texts):
            yield f"{t} {x}" if t else str(x)

    def lengths(self) -> np.ndarray:
        """Characters of each joined text, ``(n,)`` int64, counted without joining."""
        n = len(self)
        title = np.fromiter(map(len, self._titles), np.int64, n)
        return np.fromiter(map(len, self._texts), np.int64, n) + title + (title > 0)


@dataclass(frozen=True, eq=False)
class Corpus:
    """A columnar document collection.

    Parameters
    ----------
    ids : array of str, shape (n_docs,)
        Unique document ids (the ``_id`` of a BEIR corpus).
    texts : array of str, shape (n_docs,)
        Document bodies, each a string (a value that is not, ``None`` and NaN included, is a
        :class:`DataError` naming the row and document id).
    titles : array of str, shape (n_docs,), optional
        Titles; empty strings when absent.  A missing title (``None``, NaN, ``pandas.NA``, as a
        DataFrame column holds it) is ``""``; any other value that is no string is a DataError.
    metadata : dict of str -> array of shape (n_docs,), optional
        Columnar metadata (one array per field), used by metadata filters.  Kept as a save writes it and a
        load reads it back, so that filters answer the same before and after: a numpy array or tuple value
        (a list column read by ``pandas.read_parquet``) is a list, a missing value (NaN, ``pandas.NA``,
        ``NaT``) in an object column is ``None``.  A float column keeps its NaN, which ``{field: None}``
        matches.

    A corpus is immutable: its arrays are read-only and ``metadata`` is a read-only mapping
    (row numbers and filter codes are cached from them); arrays passed in are copied, not frozen.

    Examples
    --------
    >>> c = Corpus.from_records([{"_id": "a", "text": "x"}, {"_id": "b", "text": "y", "title": "t"}])
    >>> len(c), c.row_of(["b"]).tolist()
    (2, [1])
    """

    ids: np.ndarray
    texts: np.ndarray
    titles: np.ndarray = None  # type: ignore[assignment]  # None in: empty strings (see __init__ below)
    metadata: Mapping[str, np.ndarray] = field(default_factory=dict)

    if TYPE_CHECKING:  # what the constructor accepts; the attributes above are what it holds
        def __init__(self, ids: Iterable[Any], texts: Iterable[Any], titles: Iterable[Any] | None = None,
                     metadata: Mapping[str, Iterable[Any]] | None = None) -> None: ...

        _row_of: dict[str, int] | _Rows | None = None  # id -> row, built by row_of()
        _codes: dict[str, Coded] = field(default_factory=dict)  # metadata field -> codes, built by mask()
        _kinds: dict[str, frozenset[str]] = field(default_factory=dict)  # field -> its kinds, by an add's check
        _blank: np.ndarray | None = None  # (n_docs,) bool, read-only: which documents are blank, built by blank
    else:  # (hidden from type checkers: the constructor's signature is the one above)
        def __new__(cls, *args: Any, **kwargs: Any) -> "Corpus":
            """Refuse one argument without ``texts`` (``Corpus(df)``, ``Corpus(["a", "b"])``): the dataclass's
            own error, "missing 1 required positional argument: 'texts'", says nothing of the constructors
            that take such data.  (Pickle and copy call ``__new__`` with no argument.)"""
            if len(args) == 1 and "texts" not in kwargs:
                raise InputTypeError(_one_argument("Corpus", args[0]))
            return super().__new__(cls)

        def _init(ids: Iterable[Any], texts: Iterable[Any], titles: Iterable[Any] | None = None,
                  metadata: Mapping[str, Iterable[Any]] | None = None) -> None:
            """The constructor's parameters, as the stub above gives them to type checkers."""

        # what ``inspect.signature(Corpus)`` and ``help(Corpus)`` show: ``__new__`` takes ``*args, **kwargs``
        __signature__ = inspect.signature(_init)
        del _init

    def __post_init__(self) -> None:
        ids = _as_ids(self.ids, "Corpus.ids")
        texts = _as_str_array(self.texts, "Corpus.texts")
        titles = (
            np.full(len(ids), "", dtype=object)
            if self.titles is None
            else _as_str_array(self.titles, "Corpus.titles")
        )
        if not (len(ids) == len(texts) == len(titles)):
            raise DataError(
                f"Corpus columns must have equal lengths, got ids={len(ids)}, texts={len(texts)}, "
                f"titles={len(titles)}"
            )
        # every text and title a string (a missing title, None or NaN, as ""), none with a lone surrogate
        _check_encodable(ids, "Corpus.ids", ids)
        check_id_breaks(ids.tolist(), "Corpus.ids", "document")
        texts = _text_column(texts, "Corpus.texts", ids)
        if self.titles is not None:
            titles = _text_column(titles, "Corpus.titles", ids, missing_ok=True)
        if len(set(ids.tolist())) != len(ids):
            raise DataError(f"Corpus ids must be unique; repeated: {repeated(ids.tolist(), 5)} (documents are "
                            "addressed by id in results, filters, add and remove)")
        if self.metadata is not None and not isinstance(self.metadata, Mapping):
            raise DataError(f"Corpus.metadata: expected a mapping {{field: one value per document}}, got "
                            f"{type(self.metadata).__name__} ({self.metadata!r:.60})")
        meta = {}
        for key, col in dict(self.metadata or {}).items():
            if isinstance(col, (str, bytes)) or not isinstance(col, Iterable):  # 'en' would become ['e', 'n']
                raise DataError(f"Corpus metadata field {key!r}: expected one value per document (a list or array of "
                                f"{len(ids)}), got {col!r:.60}")
            dtype = getattr(col, "dtype", None)
            if not isinstance(col, np.ndarray) and isinstance(dtype, np.dtype) and dtype.kind == "f" \
                    and dtype != np.float64:  # a pandas float32 Series: its own values (iterated, they are float64)
                col = np.asarray(col)
            col, values, types = _meta_kept(_column(col) if not isinstance(col, np.ndarray) or col.ndim != 1 else col)
            if len(col) != len(ids):
                raise DataError(
                    f"Corpus metadata field {key!r} has {len(col)} values, expected {len(ids)} (one per document)"
                )
            _check_meta_text(key, col, ids, values, types)
            meta[key] = _frozen(col, self.metadata[key])
        self._hold(_frozen(ids, self.ids), _frozen(texts, self.texts), _frozen(titles, self.titles), meta)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled or copied corpus (``pickle``, ``copy.deepcopy``), its arrays read-only again: a pickle
        does not keep numpy's ``writeable`` flag, and the cached id lookup and filter codes read these arrays."""
        self.__dict__.update(state)
        for arr in (self.ids, self.texts, self.titles, *self.metadata.values(), state.get("_blank")):
            if isinstance(arr, np.ndarray):
                arr.flags.writeable = False

    def _hold(self, ids: np.ndarray, texts: np.ndarray, titles: np.ndarray, meta: dict[str, np.ndarray]) -> None:
        """Keep the (read-only) columns, and empty caches of what is derived from them."""
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "texts", texts)
        object.__setattr__(self, "titles", titles)
        object.__setattr__(self, "metadata", _Columns(meta))
        object.__setattr__(self, "_row_of", None)
        object.__setattr__(self, "_codes", {})  # metadata field -> (codes, value -> code), built by mask()
        object.__setattr__(self, "_kinds", {})  # metadata field -> its kinds (ragkit.metadata.held_kinds)
        object.__setattr__(self, "_blank", None)  # (n_docs,) bool: which documents are blank, built by ``blank``

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> "Corpus":
        """Build from dicts with ``_id`` (or ``id``), ``text``, optional ``title`` and ``metadata``.

        A record without ``text`` has the text ``""``, but records none of which has a ``text`` are a
        :class:`DataError` naming the keys they have (a text under another name, ``body`` or ``content``,
        would give a corpus of empty documents that fits and finds nothing); other top-level keys are
        dropped, with a warning on the ``ragkit`` logger naming them (put extra fields in ``metadata``).  A
        ``text`` that is no string (``None``, NaN, a number) is a :class:`DataError`, as in the constructor.
        A missing title (absent, ``None``, NaN) is ``""``; another title is written as a string (``5`` as
        ``"5"``)."""
        pd = sys.modules.get("pandas")
        if pd is not None and isinstance(records, pd.DataFrame):
            raise DataError("Corpus.from_records: got a pandas DataFrame (its column names would be the records); "
                            "pass df.to_dict('records')")
        if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Iterable):
            raise DataError(f"Corpus.from_records: expected a list of records (dicts with '_id' and 'text'), got "
                            f"{_kind(records)}")
        ids, texts, titles, metas = [], [], [], []
        keys_seen: set[Any] = set()
        with_text = 0
        for i, r in enumerate(records):
            if not isinstance(r, Mapping):
                raise DataError(f"Corpus.from_records: record {i} is {_kind(r)}, expected a "
                                "dict with '_id' and 'text'")
            did = r.get("_id")
            # absent or missing (None; NaN in a DataFrame's records, whose rows hold every column): 'id' instead (a
            # record of LangChain's or a DataFrame's may hold both keys); a NaN '_id' alone is left to the
            # constructor, which names its position
            if is_missing(did) and (did is None or "id" in r):
                did = r.get("id")
                if is_missing(did):
                    given = [k for k in ("_id", "id") if k in r]
                    raise DataError(f"Corpus.from_records: record {i} " + (
                        f"has {' and '.join(f'{k!r}: {r[k]!r:.60}' for k in given)}, expected a document id" if given
                        else "has no '_id' (or 'id') field") + f": {dict(r)!r:.200}")
            ids.append(did)  # (written as the constructor writes ids: 1.0 as "1", NaN refused)
            keys_seen.update(r.keys())
            with_text += "text" in r
            texts.append(r.get("text", ""))  # (checked by the constructor: None would be the text "None")
            title = r.get("title")
            titles.append("" if is_missing(title) else title if isinstance(title, str) else str(title))
            meta = r.get("metadata")
            if not isinstance(meta, Mapping) and not is_missing(meta):  # (None, or NaN: a DataFrame's records)
                raise DataError(f"Corpus.from_records: record {i} (id {did!r:.60}) has the metadata {_kind(meta)}, "
                                "expected a mapping {field: value} (or None)")
            metas.append(meta if isinstance(meta, Mapping) else {})
        unknown = sorted(map(str, keys_seen - _RECORD_KEYS))
        if ids and not with_text:
            raise DataError(f"Corpus.from_records: none of the {len(ids)} records has a 'text' field (they have "
                            f"{', '.join(map(repr, sorted(map(str, keys_seen))))}); expected {_RECORD_KEYS_SHOWN}: "
                            "rename the field that holds the document text"
                            + (f" (one of {', '.join(map(repr, unknown))})" if unknown else "") + " to 'text'")
        if unknown:
            logging.getLogger("ragkit").warning(
                "Corpus.from_records: dropped the records' keys %s (a record holds %s); put other fields in its "
                "'metadata' (a dict) to keep them", ", ".join(map(repr, unknown)), _RECORD_KEYS_SHOWN)
        keys = sorted({k for m in metas for k in m})
        meta = {k: _column([m.get(k) for m in metas]) for k in keys}
        return cls(ids=ids, texts=texts, titles=titles, metadata=meta)

    @classmethod
    def from_texts(cls, texts: Sequence[str] | Mapping[Any, str] | Iterable[str], ids: Sequence[str] | None = None,
                   **metadata: Sequence[Any]) -> "Corpus":
        """Build from plain texts; ids default to ``"0", "1", ...``.

        ``texts`` may be a mapping ``{doc_id: text}`` (ids and texts, in its order) or a pandas
        ``Series`` whose index holds string ids (see :func:`ids_and_texts`); one string is a
        :class:`DataError` (its characters would be the documents): wrap it in a list."""
        given, texts = ids_and_texts(texts, "Corpus.from_texts")
        if given is not None and ids is not None:
            raise DataError("Corpus.from_texts: ids given twice: by ids= and by the keys (or index) of texts")
        ids = (given if given is not None else [str(i) for i in range(len(texts))]) if ids is None else ids
        # a string or a scalar is left for __post_init__ to refuse (list('en') would be two values)
        return cls(ids=ids, texts=texts, metadata={k: v if isinstance(v, (str, bytes)) or not isinstance(v, Iterable)
                                                   else _column(v) for k, v in metadata.items()})

    @classmethod
    def from_documents(cls, docs: Sequence[Any]) -> "Corpus":
        """Build from LangChain ``Document`` objects (``page_content``, ``id``, ``metadata``).

        The id is ``doc.id``, else ``metadata["id"]``, else the position (``"3"``, or ``"3#1"``,
        ``"3#2"``, ... where another document's own id is already ``"3"``); ``metadata["title"]``
        becomes the title; the other metadata keys become columns.
        """
        if isinstance(docs, (str, bytes, Mapping)) or not isinstance(docs, Iterable):
            raise InputTypeError(f"Corpus.from_documents: expected a list of LangChain Documents, got {_kind(docs)}"
                                 + _other_constructor(docs))
        docs = list(docs)
        bad = next((i for i, d in enumerate(docs) if not hasattr(d, "page_content")), None)
        if bad is not None:
            raise InputTypeError(f"Corpus.from_documents: document {bad} is {_kind(docs[bad])}, expected a LangChain "
                                 "Document (with page_content and metadata)" + _other_constructor([docs[bad]]))
        records: list[dict[str, Any]] = []
        for d in docs:  # (the constructor copies list, dict and set values: the caller's documents stay theirs)
            meta = dict(getattr(d, "metadata", {}) or {})
            # ids written as the constructor writes them (1.0 as "1"); a missing one (None, NaN) is no id
            did = _doc_id(getattr(d, "id", None), len(records))
            if not did:
                did = _doc_id(meta.pop("id", None), len(records))
            elif "id" in meta and _same_id(meta["id"], did):
                del meta["id"]  # the id written into metadata too (get_by_ids's documents): not a field of its own
            records.append({"_id": did, "text": d.page_content, "title": meta.pop("title", ""), "metadata": meta})
        taken = {r["_id"] for r in records if r["_id"] is not None}
        for i, r in enumerate(records):
            if r["_id"] is None:  # the position, unless a given id holds it
                did, n = str(i), 0
                while did in taken:
                    n += 1
                    did = f"{i}#{n}"
                r["_id"] = did
                taken.add(did)
        return cls.from_records(records)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        fields_ = f", metadata={sorted(self.metadata)}" if self.metadata else ""
        return f"Corpus({_count(len(self), 'doc')}{fields_})"

    #: no iteration (what would a document be?): iterate over ``ids``, ``texts`` or ``to_pandas()``; set to None
    #: so that ``__getitem__`` does not make a corpus iterable by position
    __iter__ = None

    def __getitem__(self, idx: slice | Sequence[int] | Sequence[str] | np.ndarray) -> "Corpus":
        """The sub-corpus of a slice (``corpus[:100]``), a list or array of row positions or a boolean mask
        (:meth:`subset`), or a list or array of document ids (``corpus[run.doc_ids[0]]``: the documents a query
        retrieved, in that order).  One position or id is an :class:`InputTypeError`: ``corpus[["4983"]]`` is
        the corpus of that one document."""
        if isinstance(idx, slice):
            return self.subset(np.arange(len(self))[idx])
        if isinstance(idx, (str, bytes, int, np.integer, np.str_)) or np.ndim(idx) == 0:
            raise InputTypeError(f"Corpus[...]: selects documents by a slice, a list of row positions, a boolean mask "
                                 f"or a list of document ids, and gives a Corpus; got {_kind(idx)}: for that one "
                                 f"document pass a list of one, corpus[[{idx!r:.60}]] (its text: .texts[0])")
        arr = np.asarray(idx)
        if arr.dtype.kind in "US" or (arr.dtype == object and arr.size and isinstance(arr.reshape(-1)[0], str)):
            return self.subset(self.row_of(arr.tolist()))
        return self.subset(arr)

    def to_pandas(self) -> "pd.DataFrame":
        """The corpus as a pandas ``DataFrame``, one row per document: columns ``id``, ``title``, ``text``, then one
        per metadata field (a field named ``id``, ``title`` or ``text`` as ``metadata.<name>``).  The columns
        are copies: the frame may be changed.  Needs pandas (an :class:`ImportError` saying so)."""
        pd = _pandas("Corpus.to_pandas")
        cols: dict[str, np.ndarray] = {"id": self.ids, "title": self.titles, "text": self.texts}
        for key, col in self.metadata.items():
            cols[f"metadata.{key}" if key in ("id", "title", "text") else key] = col
        return pd.DataFrame({k: v.copy() for k, v in cols.items()})

    @property
    def full_texts(self) -> list[str]:
        """``title + " " + text`` per document (what BEIR encoders and BM25 index), a new list each call: as many
        characters again as the corpus holds (at 1M SciFact-like documents about 1.5 GB); :attr:`full_texts_view`
        gives the same texts made one at a time as they are read."""
        return [f"{t} {x}" if t else x for t, x in zip(self.titles.tolist(), self.texts.tolist())]

    @property
    def full_texts_view(self) -> "FullTexts":
        """The texts of :attr:`full_texts` as a read-only sequence that joins each title and text when it is read
        (``len``, an index, a slice, iteration), so reading a large corpus in chunks holds a chunk's texts, not
        all of them (BM25's and PRF's fits)."""
        return FullTexts(self.titles, self.texts)

    @property
    def blank(self) -> np.ndarray:
        """Which documents are blank: ``(n_docs,)`` bool, read-only, ``True`` where the title and the text are both
        empty or hold nothing but whitespace and invisible characters (``""``, ``"  "``, ``"\\u200b"``:
        :func:`~ragkit.encoders.sentence.blank_texts`), which is what ``blank_texts(corpus.full_texts)`` says.

        The embedding retrievers and ``dbnorm`` never index nor bank such a document (it would encode to the
        model's bias direction, near every short query).  Worked out once per corpus, from the titles and the
        texts apart (no joined copy of every document, as :attr:`full_texts` makes), and carried over to a corpus
        cut from this one (:meth:`subset`, ``corpus[...]``) or grown from it (:meth:`concat`, where the added
        corpus's is worked out too).

        >>> c = Corpus(ids=["a", "b", "c", "d"], texts=["x", " ", "", "\\u200b"], titles=["", "", "t", "\\n"])
        >>> c.blank.tolist(), c.blank.flags.writeable
        ([False, True, False, True], False)
        """
        out = self.__dict__.get("_blank")  # (a corpus pickled before it had one: worked out here)
        if out is None:
            from ragkit.encoders.sentence import blank_texts  # (not at import: ragkit.encoders imports ragkit.types)

            out = blank_texts(cast("Sequence[str]", self.titles)) & blank_texts(cast("Sequence[str]", self.texts))
            out.flags.writeable = False
            object.__setattr__(self, "_blank", out)
        return out

    def row_of(self, ids: Iterable[str], missing: str = "raise") -> np.ndarray:
        """Row numbers of document ids: int64, shape ``(n,)``, in the order of ``ids``.

        ``missing="raise"`` (default): an id not in the corpus is a :class:`DataError` naming it;
        ``missing="drop"``: such ids are left out, so ``n`` may be less than ``len(ids)``; another ``missing``
        is a :class:`ParamError`."""
        if missing not in ("raise", "drop"):
            raise ParamError(f"Corpus.row_of: missing must be 'raise' or 'drop', got {missing!r}")
        lut = self._lookup()
        ids = list(ids)
        if missing == "drop":
            return np.array([lut[d] for d in ids if d in lut], dtype=np.int64)
        try:
            return np.array([lut[d] for d in ids], dtype=np.int64)
        except KeyError as e:
            raise DataError(f"document id {e.args[0]!r} is not in the corpus") from None

    def _lookup(self) -> Mapping[str, int]:
        """``{id: row}``, built once per corpus (or carried over from the corpus this one was cut from
        or grown from, see :class:`_Rows`)."""
        lut = self._row_of
        if lut is None:
            lut = dict(zip(self.ids.tolist(), range(len(self))))
            if len(lut) != len(self):
                raise DataError(f"Corpus has {len(self) - len(lut)} duplicate ids")
            object.__setattr__(self, "_row_of", lut)
        return lut

    def subset(self, rows: np.ndarray | Sequence[int]) -> "Corpus":
        """A new corpus made of the given rows, in that order (or the rows a boolean mask keeps).

        Rows in increasing order (a mask, a removal) are distinct without a sort, and the new corpus
        takes over this one's id lookup and metadata filter codes (re-mapped in numpy, not rebuilt
        from every document)."""
        n = len(self)
        rows = _as_rows(rows, n, "Corpus.subset")
        if len(rows) and rows.min() < 0:
            rows = np.where(rows < 0, rows + n, rows)
        # a field no row holds any more stays a field (a column of None), with the kinds of the values it held:
        # a filter on it matches nothing (a shard without the field, the last holders removed), and one of
        # another kind is refused, as on this corpus.  But a field named "id" or "title" that no row holds is
        # gone: it would hide the documents' own ids / titles from filters (a removed LangChain document's own
        # metadata["id"] left every other document without one)
        meta = {k: v[rows] for k, v in self.metadata.items()}
        emptied = [k for k, v in meta.items() if v.dtype == object and all(x is None for x in v)]  # (stops at a value)
        meta = {k: v for k, v in meta.items() if k not in emptied or k not in ("id", "title")}
        cols = (self.ids[rows], self.texts[rows], self.titles[rows], meta)
        increasing = len(rows) < 2 or bool((rows[1:] > rows[:-1]).all())
        if not increasing and len(np.unique(rows)) != len(rows):  # a row twice: the checks name the repeated id
            return Corpus(*cols)
        out = Corpus._checked(*cols)  # rows of this (checked) corpus: nothing to check again
        blank = self.__dict__.get("_blank")
        if blank is not None:  # (the same rows' flags)
            kept = blank[rows]
            kept.flags.writeable = False
            object.__setattr__(out, "_blank", kept)
        if increasing:
            self._carry_cut(out, rows)
        for key in emptied:
            if key in meta and key not in out._codes:
                self._carry_kinds(out, key)
        return out

    def _carry_kinds(self, out: "Corpus", key: str) -> None:
        """Give ``out`` (cut from this corpus) filter codes of its field ``key``, which holds no value any more,
        that keep this corpus's values of it (one code per row: the code of ``None``): a filter on ``key``
        matches nothing but ``None`` there, and a value of another kind than those values is refused
        (:func:`~ragkit.metadata.check_kinds`), as on this corpus.  Nothing where a value does not hash."""
        coded = self._codes[key] if key in self._codes else code_column(self.metadata[key])
        if coded is None:
            return
        table = dict(coded[1])  # (a copy: a value -> code table is never changed once made)
        none = table.setdefault(None, len(table))
        out._codes[key] = (np.full(len(out), none, np.int64), table)

    def _carry_cut(self, out: "Corpus", rows: np.ndarray) -> None:
        """Give ``out`` (this corpus's strictly increasing ``rows``) this corpus's id lookup and filter
        codes, re-mapped: the filters answer as on a corpus built fresh (a code whose value no row holds
        any more matches nothing)."""
        lut, codes = self._row_of, self._codes
        if lut is None and not codes:
            return
        new_row = np.full(len(self), -1, np.int64)  # row here -> row in out
        new_row[rows] = np.arange(len(rows))
        if isinstance(lut, _Rows):
            if len(rows) * 2 >= len(lut.pos):  # else (most of the base gone) rebuilt when asked, smaller
                pos = np.where(lut.pos >= 0, new_row[np.maximum(lut.pos, 0)], -1)
                keys = list(lut.extra)
                moved = new_row[np.fromiter(lut.extra.values(), np.int64, len(keys))]
                extra = {d: r for d, r in zip(keys, moved.tolist()) if r >= 0}
                object.__setattr__(out, "_row_of", _Rows(lut.base, pos, extra, out.ids))
        elif lut is not None and len(rows) * 2 >= len(self):
            object.__setattr__(out, "_row_of", _Rows(lut, new_row, {}, out.ids))
        for key, coded in codes.items():
            if coded is None or key not in out.metadata:  # rows that did not hash may be gone: coded when asked
                continue
            if len(coded) == 2:  # every value hashes, here and so in out
                out._codes[key] = (coded[0][rows], coded[1])
                continue
            listy = coded[3][rows]
            if not listy.any():  # no list left: a fresh corpus codes one value per row
                continue
            at = new_row[coded[2]]
            kept = at >= 0
            out._codes[key] = (coded[0][kept], coded[1], at[kept], listy)

    def rows_to_remove(self, ids: Any, who: str) -> np.ndarray:
        """Sorted distinct rows of the document ``ids`` (one id, or any iterable of ids; numbers as
        the constructor writes them: ``1.0`` as ``"1"``), for an operator's ``remove``; an unknown id is a
        :class:`DataError` naming ``who``.  ``None``, a :class:`Corpus` (whose ids are ``corpus.ids``) or another
        value that is neither an id nor an iterable of ids is an :class:`InputTypeError` naming ``who``."""
        if isinstance(ids, Corpus) or ids is None or not isinstance(ids, (str, bytes, int, np.integer, Iterable)):
            hint = "; pass corpus.ids" if isinstance(ids, Corpus) else ""
            raise InputTypeError(f"{who}: expected document ids (an id, or a list of ids), got "
                                 f"{'a Corpus' if isinstance(ids, Corpus) else _kind(ids)}{hint}")
        one = isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable)  # any other iterable lists ids
        ids = [_id_string(x, f"{who}: ids", n) for n, x in enumerate(cast(Iterable[Any], [ids] if one else ids))]
        lut = self._lookup()
        unknown = [d for d in ids if d not in lut]
        if unknown:
            raise DataError(f"{who}: document id(s) {unknown[:3]!r}" + (
                f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
                + f" not in the corpus of {len(self)} documents; nothing was removed")
        return np.unique(np.fromiter((lut[d] for d in ids), np.int64, len(ids)))

    def held_ids(self, other: "Corpus") -> list[str]:
        """The ids of ``other`` this corpus holds too, in ``other``'s order (an ``add``'s check for ids already
        indexed): the new ids are looked up in this corpus's cached ``{id: row}``, so the cost is theirs."""
        lut = self._lookup()
        return [d for d in other.ids.tolist() if d in lut]

    def check_addable(self, other: Any, who: str, held: str = "indexed") -> None:
        """What an operator's ``add`` checks before any work: ``other`` is a :class:`Corpus` (else an
        :class:`~ragkit.errors.InputTypeError`) holding no id this corpus holds (else a :class:`DataError`:
        ``"dense.add: 2 document ids are already indexed (e.g. ['a', 'b']); remove them first"``; ``who``
        names the operator's method, ``held`` how it holds documents)."""
        if not isinstance(other, Corpus):
            raise InputTypeError(f"{who} expects a ragkit Corpus, got {type(other).__name__}")
        dup = self.held_ids(other)  # (the cached {id: row}: the new ids only are looked up)
        if dup:
            ids_are = "document id is" if len(dup) == 1 else "document ids are"
            raise DataError(f"{who}: {len(dup)} {ids_are} already {held} (e.g. {sorted(dup)[:3]}); "
                            "remove them first")

    def concat(self, other: "Corpus", who: str = "Corpus.concat") -> "Corpus":
        """This corpus followed by ``other`` (metadata fields missing on one side become ``None``).

        Both are checked corpora: only the ids they share are looked for (an edit of a large corpus
        costs what the new documents cost, not a new check of every text).  A metadata value of ``other``
        of another kind than the field holds here (``"2005"`` where the years are numbers: a filter
        compares with ``==`` and would miss it) is a :class:`DataError` naming ``who`` (the operator whose
        ``add`` this is), the field and the document (:func:`ragkit.metadata.check_added_kinds`; this
        corpus's kinds are read once and carried over to the result)."""
        check_added_kinds(other, who, self)
        keys = sorted(set(self.metadata) | set(other.metadata))

        def col(c: Corpus, k: str) -> np.ndarray:
            return c.metadata.get(k, np.full(len(c), None, dtype=object))

        joined = {k: np.concatenate([col(self, k), col(other, k)]) for k in keys}
        # a float column joined to object values (a field the new documents lack, or hold as strings): its NaN
        # become None, as in a corpus built so (a float column's NaN would else stay beside the None)
        floats = [k for k in keys if joined[k].dtype == object
                  and any(k in c.metadata and c.metadata[k].dtype.kind == "f" for c in (self, other))]
        for k in floats:
            joined[k] = _meta_column(joined[k])
        cols = (np.concatenate([self.ids, other.ids]), np.concatenate([self.texts, other.texts]),
                np.concatenate([self.titles, other.titles]), joined)
        lut = self._lookup()
        new = other.ids.tolist()
        if any(d in lut for d in new):
            return Corpus(*cols)  # the checks name the repeated ids
        out = Corpus._checked(*cols)
        n = len(self)
        if self.__dict__.get("_blank") is not None:  # (the added documents' flags worked out: theirs to pay)
            blank = np.concatenate([self.blank, other.blank])
            blank.flags.writeable = False
            object.__setattr__(out, "_blank", blank)
        added = dict(zip(new, range(n, n + len(new))))
        if isinstance(lut, _Rows):
            if 4 * (len(lut.extra) + len(new)) <= len(lut.pos):  # else rebuilt when asked (amortised)
                object.__setattr__(out, "_row_of", _Rows(lut.base, lut.pos, {**lut.extra, **added}, out.ids))
        elif 4 * len(new) <= n:
            object.__setattr__(out, "_row_of", _Rows(cast("dict[str, int]", lut), np.arange(n, dtype=np.int64), added,
                                                     out.ids))
        else:
            object.__setattr__(out, "_row_of", {**lut, **added})
        for key, kinds in self.__dict__.get("_kinds", {}).items():  # the kinds read by the check, grown
            out._kinds[key] = kinds | held_kinds(other, key) if key in other.metadata else kinds
        for key in other.metadata:  # (a field new here: its kinds are the new documents')
            if key not in self.metadata and key in other.__dict__.get("_kinds", {}):
                out._kinds[key] = other._kinds[key]
        for key, coded in self._codes.items():  # this corpus's filter codes, the new rows' appended
            if key in floats:  # (its values changed: coded again when asked)
                continue
            if coded is None:  # an element that does not hash stays in the joined column
                out._codes[key] = None
                continue
            grown = code_column(other.metadata.get(key, np.full(len(other), None, dtype=object)), coded, n)
            if grown is not False:
                out._codes[key] = grown
        return out

    @classmethod
    def _checked(cls, ids: np.ndarray, texts: np.ndarray, titles: np.ndarray,
                 metadata: dict[str, np.ndarray]) -> "Corpus":
        """A corpus of columns already checked (new arrays cut or joined from checked corpora),
        made read-only without the checks of ``__post_init__``."""
        out = object.__new__(cls)
        for value in (ids, texts, titles, *metadata.values()):
            value.flags.writeable = False
        out._hold(ids, texts, titles, metadata)
        return out

    def mask(self, where: Mapping[str, Any] | AllOf | None) -> np.ndarray | None:
        """Boolean row mask for a metadata filter, or ``None`` when there is no filter.

        ``where`` maps a field to a value (equality) or a list/tuple/set/array of values
        (membership); fields combine with AND.  Values compare with Python's ``==`` either way
        (``1`` matches ``1.0`` and ``True``, ``"2020"`` does not match ``2020``): a filter none of whose
        values has the type of any value the field holds (``"2020"`` for a field of integers, as a web
        service receives every parameter) is a :class:`DataError` saying so, not an empty result.  ``"_id"``
        filters on document ids (given as strings or numbers; ``"id"`` too, unless a metadata field has
        that name), ``"title"`` on their titles (unless a metadata field has that name).  A list-valued
        field (tags) matches a value it holds as an element, as well as a value equal to the whole list.
        Operators such as ``{"$gte": 2020}`` are not supported and are refused.  A field no document holds
        a value of any more (its documents removed, a shard of other documents) is still a field: a filter
        on it matches nothing.  An :class:`~ragkit.metadata.AllOf` of filters (two filters naming the same
        field, :func:`~ragkit.metadata.all_filters`) is the AND of their masks.
        """
        if not where:
            return None
        if isinstance(where, AllOf):
            masks = [m for m in map(self.mask, where) if m is not None]
            return np.logical_and.reduce(masks) if masks else None
        keep = np.ones(len(self), dtype=bool)
        for key, column, wants in self._filter_parts(where):
            if column is self.titles:  # strings only ('' for none): one vectorised membership test
                strings = self._title_strings(key, wants)
                keep &= np.isin(self.titles, strings) if strings else False
            elif key == "_id":  # ids are strings; an id given as a number means the same document
                hit = np.zeros(len(self), dtype=bool)
                hit[self.row_of([str(w) for w in wants], missing="drop")] = True
                keep &= hit
            else:
                keep &= self._field_isin(key, column, wants)
        return keep

    def check_filter_kinds(self, where: Mapping[str, Any] | AllOf | None) -> None:
        """Refuse what :meth:`mask` refuses in ``where`` (its form, a field the corpus does not have, a value of
        another kind than the field's: the same :class:`DataError`), without making the mask: a search's check
        of its filters before any step runs.  The fields' filter codes it makes are those :meth:`mask` reads."""
        if not where:
            return
        if isinstance(where, AllOf):
            for part in where:
                self.check_filter_kinds(part)
            return
        for key, column, wants in self._filter_parts(where):
            if column is self.titles:
                self._title_strings(key, wants)
            elif key != "_id":
                if column.dtype.kind == "f":  # (None matches a float column's NaN)
                    wants = [w for w in wants if w is not None]
                coded = self._coded(key, column)
                if coded is not None and not any(hashable(w) and w in coded[1] for w in wants):
                    check_kinds(key, coded[1], wants)

    def _filter_parts(self, where: Mapping[str, Any]) -> Iterator[tuple[str, np.ndarray, list[Any]]]:
        """``where`` checked (:func:`~ragkit.metadata.check_filter`), then per field it names: the field
        (:func:`filter_field`), its column and the values asked for (:func:`_filter_wants`: any collection of
        values, a list, a set, a range, dict keys, a numpy array or pandas Series, means membership; a string or
        a single value means equality), as :meth:`mask` and :meth:`check_filter_kinds` read them."""
        check_filter(where)
        for key, want in where.items():
            key, column = self._filter_column(key)
            yield key, column, _filter_wants(want, column.dtype, key)

    def _title_strings(self, key: str, wants: list[Any]) -> list[str]:
        """The strings among ``wants``, a filter's values for the titles; none (``title: 2020``, which matches no
        document) is refused as for a field of strings (:func:`~ragkit.metadata.check_kinds`)."""
        strings = [w for w in wants if isinstance(w, str)]
        if not strings:
            check_kinds(key, dict.fromkeys(self.titles[:1].tolist(), 0), wants)
        return strings

    def _filter_column(self, key: str) -> tuple[str, np.ndarray]:
        """The field a filter's ``key`` names (:func:`filter_field`), and its column: the ids, a metadata field's
        column or the titles; any other name is a :class:`DataError` listing the fields."""
        field_ = filter_field(key, self.metadata)
        if field_ is None:
            raise DataError(f"filter {unknown_filter_field(key, self.metadata)}")
        return field_, (self.ids if field_ == "_id" else self.metadata[field_] if field_ in self.metadata
                        else self.titles)

    def _coded(self, key: str, column: np.ndarray) -> Coded:
        """The filter codes of the metadata field ``key`` (its ``column``), made once (with a warning where it
        holds values of several kinds)."""
        if key not in self._codes:
            self._codes[key] = code_column(column)
            warn_mixed_kinds(key, self._codes[key])
        return self._codes[key]

    def _field_isin(self, key: str, column: np.ndarray, wants: list[Any]) -> np.ndarray:
        """``column == w`` for some ``w`` in ``wants`` (see :meth:`mask`).  A column of hashable
        values is coded once (value -> small integer, keyed by a dict, so Python's equality decides
        which values share a code) and each later filter is one ``np.isin`` over the codes.  A
        list-valued column (tags) is coded element by element (a single value counts as a list of
        one), so a filter on elements is one ``np.isin`` too; a filter value that is itself a list (the
        whole list) is compared value by value."""
        coded = self._coded(key, column)
        if column.dtype.kind == "f" and any(w is None for w in wants):  # a float column's missing value is NaN
            # (a saved corpus reads it back as None): {field: None} matches it
            rest = [w for w in wants if w is not None]
            nan = np.isnan(column)
            return nan | self._field_isin(key, column, rest) if rest else nan
        if coded is None:
            return isin(column, wants)
        lut = coded[1]
        hit = [lut[w] for w in wants if hashable(w) and w in lut]
        if not hit and wants:  # nothing matches: a value of another type than the field's is refused
            check_kinds(key, lut, wants)
        if len(coded) == 2:  # one value per row; an unhashable filter value matches no hashable column value
            return coded[0] == hit[0] if len(hit) == 1 else np.isin(coded[0], hit)
        codes, rows = coded[0], coded[2]
        keep = np.zeros(len(column), dtype=bool)
        keep[rows[np.isin(codes, hit)]] = True
        whole = [w for w in wants if not hashable(w) or isinstance(w, tuple)]
        if whole:  # a list (tuple) given as one value: equal to a row's whole list, or to a list element
            keep |= isin(column, whole)
        return keep

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``corpus.jsonl`` (BEIR layout plus a ``metadata`` object per line): strict JSON (no
        ``NaN``, which other JSON readers refuse): a missing metadata value (NaN, ``pandas.NA``, ``NaT``) is
        written as ``null`` and reads back as ``None``; an infinite one, or a value JSON has no type for (a
        date, a ``Timestamp``), is a :class:`DataError` naming the field and the document.

        ``path`` is the file (a leading ``~`` is the home folder); its folder is created, with its parents,
        when missing.  A folder that cannot be created or written to (a read-only file system, no permission,
        a full disk) is an :class:`~ragkit.errors.ArtifactError` naming it and the system's reason, before any
        document is written; the file is replaced in one step (:func:`~ragkit._files.atomic_file`), so an
        earlier one stays whole when the save fails, and the temporary file a killed save left beside it is
        removed by the next save of ``path``."""
        path = user_path(path, "Corpus.save: path")
        blocker = file_above(path)
        if blocker is not None:
            raise ArtifactError(f"Corpus.save: {path}: {blocker} is a file, not a folder; the corpus cannot be written "
                                "below it")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _unwritable(path, e, f"creating the folder {path.parent}") from e
        # (its temporary file names this process: one a killed save of ``path`` left is removed by the next one)
        with atomic_file(path, owner=True, remove_stale=True, sync_folder=True) as tmp:
            try:
                out = open(tmp, "w", encoding="utf-8")
            except OSError as e:
                raise _unwritable(path, e, f"creating its temporary file in {path.parent}") from e
            with out as f:
                self._write_jsonl(f)

    def _write_jsonl(self, f: Any) -> None:
        """One JSON line per document to the open text file ``f`` (:meth:`save`), the bytes ``json.dumps(record,
        ensure_ascii=False, allow_nan=False)`` of each record ``{"_id", "title", "text"[, "metadata"]}`` would give.
        Written in blocks of :data:`_JSONL_BLOCK` documents: each column of a block is encoded by one call of the
        encoder, its values separated by a line feed (which no encoded scalar holds: JSON escapes it in strings),
        then split and put into the lines with ``map`` (no Python loop over the documents); a metadata column of
        lists or dicts is encoded value by value, and a block whose metadata needs converting value by value and
        fails is written as before, record by record, so that the error names the first document that fails."""
        keys = list(self.metadata)
        if not all(type(k) is str for k in keys):  # (json turns a non-string key into a string: the old way says it)
            return self._write_jsonl_records(f, 0, len(self.ids))
        # the line's template for str.format: its braces doubled, a {} where each encoded value goes
        named = ", ".join(json.dumps(k, ensure_ascii=False).replace("{", "{{").replace("}", "}}") + ": {}"
                          for k in keys)
        line = '{{"_id": {}, "title": {}, "text": {}' + (', "metadata": {{' + named + "}}" if keys else "") + "}}\n"
        for a in range(0, len(self.ids), _JSONL_BLOCK):
            b = min(a + _JSONL_BLOCK, len(self.ids))
            cols = [_json_values(c[a:b].tolist()) for c in (self.ids, self.titles, self.texts)]
            try:
                cols += [_json_values(_jsonable_column(self.metadata[k][a:b], k)) for k in keys]
            except DataError:  # the first document that fails, as the record-by-record save names it
                self._write_jsonl_records(f, a, b)
                raise
            f.write("".join(map(line.format, *cols)))

    def _write_jsonl_records(self, f: Any, a: int, b: int) -> None:
        """Documents ``a`` to ``b`` to ``f`` one ``json.dumps`` each (:meth:`_write_jsonl`'s way before it wrote in
        blocks): for metadata keys that are no strings, and to name the document whose metadata fails."""
        keys = list(self.metadata)
        for i, (d, t, x) in enumerate(zip(self.ids[a:b].tolist(), self.titles[a:b].tolist(),
                                          self.texts[a:b].tolist()), a):
            rec: dict[str, Any] = {"_id": d, "title": t, "text": x}
            if keys:
                try:
                    rec["metadata"] = {k: _jsonable(self.metadata[k][i], k) for k in keys}
                except DataError as e:  # which document holds it (every later save would fail on it)
                    raise DataError(str(e).replace("Corpus.save: ", f"Corpus.save: document {d!r}: ", 1)
                                    + "; or remove the document") from None
            f.write(json.dumps(rec, ensure_ascii=False, allow_nan=False) + "\n")


#: documents per block of :meth:`Corpus._write_jsonl` (and lines per block of the BEIR JSON Lines reader)
_JSONL_BLOCK = 10000
#: encodes a list of scalars with a line feed between them (:func:`_json_values`)
_LINES_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=("\n", ": "))
#: ``json.dumps(v, ensure_ascii=False, allow_nan=False)``, without building an encoder per call
_ONE_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
_SCALARS = frozenset({str, int, bool, float, type(None)})


def _json_values(values: list[Any]) -> list[str]:
    """Each of ``values`` (JSON-able: :func:`_jsonable`'s) as ``json.dumps(v, ensure_ascii=False, allow_nan=False)``
    writes it.  Scalars (strings, numbers, bools, None) are encoded in one call, with a line feed between them,
    which JSON never writes inside one (a string's line feed is escaped), and split there; a list holding lists
    or dicts is encoded value by value (their own items would be separated by line feeds too)."""
    if not values:
        return []
    if set(map(type, values)) <= _SCALARS:
        return _LINES_ENCODER.encode(values)[1:-1].split("\n")
    return list(map(_ONE_ENCODER.encode, values))


def _jsonable_column(col: np.ndarray, field: str) -> list[Any]:
    """``[_jsonable(v, field) for v in col]`` (a metadata column, or a block of it), batched where the column's
    dtype or values' types allow: integers and bools as they are; float64 with NaN as None (an infinite value: the
    value-by-value path, which refuses it); an object column of strings, ints, bools and None as it is.  Other
    columns (float32, dates, floats or lists in an object column) value by value."""
    kind = col.dtype.kind
    if kind in "biu":
        return col.tolist()
    if kind == "f" and col.dtype == np.float64 and not np.isinf(col).any():
        out = col.tolist()
        for i in np.flatnonzero(np.isnan(col)).tolist():  # (only the missing values)
            out[i] = None
        return out
    values = col.tolist() if kind == "O" else None
    if values is not None and set(map(type, values)) <= {str, int, bool, type(None)}:
        return values
    return [_jsonable(v, field) for v in col]


def filter_field(key: str, metadata: Mapping[str, Any]) -> str | None:
    """The field a filter's ``key`` names on a corpus of these ``metadata`` fields, ``None`` where none: ``"_id"``
    (``"id"`` too, where no metadata field has that name: as a returned LangChain ``Document``'s metadata names
    the ids) the document ids, a metadata field itself, ``"title"`` (where no metadata field has that name) the
    titles.  The rule of :meth:`Corpus.mask` and of :func:`ragkit.options.filter_value`."""
    if key == "id" and "id" not in metadata:
        return "_id"
    if key == "_id" or key in metadata or key == "title":
        return key
    return None


def unknown_filter_field(key: str, metadata: Mapping[str, Any]) -> str:
    """The message refusing the filter field ``key``, not one of a corpus's ``metadata`` fields, ``_id``, ``id``
    or ``title``: ``field <key> is not a metadata field of the corpus; available: [...]``, and where no metadata
    field is named ``id``, that ``id`` filters on the document ids too (as a LangChain ``Document``'s metadata
    names them).  :meth:`Corpus.mask` and :func:`ragkit.options.filter_value` raise it, each as its own
    exception."""
    ids = "" if "id" in metadata else "; 'id' filters on the document ids too, as '_id' does"
    return f"field {key!r} is not a metadata field of the corpus; available: {sorted(metadata) + ['_id', 'title']}{ids}"


def _unwritable(path: Path, e: OSError, doing: str) -> BaseException:
    """What :meth:`Corpus.save` raises for ``e``, met while ``doing`` (``creating the folder ...``): an
    :class:`ArtifactError` naming ``path`` and the system's reason where trying again cannot help (a read-only
    file system, no permission, a full disk: :func:`~ragkit._files.save_unwritable`, which
    :class:`~ragkit._saves.atomic_dir` names them with too); any other ``e`` (a network file system's EIO) as it
    is, retryable."""
    was = " and the file there is unchanged" if os.path.exists(path) else ""  # (never raises: ``e`` is kept)
    return save_unwritable(f"Corpus.save: {path}", e, doing, f"nothing was written{was}: make the folder writable "
                           "(or save elsewhere) and save again")


def _jsonable(v: Any, field: str = "") -> Any:
    """A metadata value as JSON: numpy scalars as Python's (float32 by its shortest repr, so a
    filter on ``0.1`` still matches after a save), lists and dicts (string keys) element-wise; other
    types refused."""
    if is_missing(v):  # None, NaN, pandas.NA, NaT: pandas' missing values (JSON has no NaN; null reads back as None)
        return None
    if isinstance(v, (float, np.floating)) and not np.isfinite(v):
        raise DataError(f"Corpus.save: metadata field {field!r} holds {v!r}, which JSON cannot hold; give a finite "
                        "number, or None")
    v = saved_scalar(v)  # (a datetime64 is kept: its item() is a date, or an int of nanoseconds; refused below, as a
    # Timestamp is, and so are bytes and complex)
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x, field) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
    if isinstance(v, dict) and all(isinstance(key, str) for key in v):
        return {key: _jsonable(x, field) for key, x in v.items()}
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    raise DataError(f"Corpus.save: metadata field {field!r} holds a {type(v).__name__} ({v!r:.60}); expected a "
                    "JSON value (str, number, bool, None, a list of them, a dict with string keys); convert it "
                    "(e.g. a date or Timestamp to an ISO string, value.isoformat())")


def unsaveable(corpus: "Corpus") -> tuple[str, int, str] | None:
    """The first metadata value of ``corpus`` that :meth:`Corpus.save` refuses (a date, a ``Timestamp``, an
    infinite number), as ``(field, row, what is wrong)``, or None.  One pass over the values' types per
    object column (in C: the elements' too for a column of lists); values are looked at one by one only in a
    column holding other types than strings, integers, bools, None and lists of them."""
    plain = {str, int, bool, type(None)}
    for key, col in corpus.metadata.items():
        if col.dtype.kind in "biuU" or not len(col):
            continue
        if col.dtype.kind == "f":
            rows = np.flatnonzero(np.isinf(col))[:1].tolist()
        elif col.dtype.kind != "O":  # datetime64, timedelta64, bytes, complex, void: one dtype, its first value
            rows = [0]
        else:
            values = col.tolist()
            types = set(map(type, values))
            if list in types:  # (tags: the elements' types)
                types.discard(list)
                types |= set(map(type, itertools.chain.from_iterable(v for v in values if type(v) is list)))
            if types <= plain:
                continue
            rows = list(range(len(values)))
        for i in rows:
            try:
                _jsonable(col[i], key)
            except DataError as e:
                return key, i, str(e).replace("Corpus.save: ", "", 1)
    return None
