"""The data that flows through ragkit: :class:`Corpus`, :class:`Ranking`, :class:`State`.

Everything is columnar and batched.  Inside the library a document is addressed by its
row number in the corpus (``int64``); string ids appear only at the edges (YAML, CLI,
LangChain, TREC run files).  A batch of queries is a list of rankings, one per query.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import json
import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence, cast, overload

import numpy as np

from ragkit._files import atomic_file, file_above, save_unwritable, user_path
from ragkit.errors import ArtifactError, DataError, InputTypeError, ParamError, repeated, some_ids
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

__all__ = ["Corpus", "Queries", "Ranking", "State", "TrainSet", "TraceEvent", "Qrels"]

#: ``{query_id: {doc_id: relevance}}`` as in BEIR and pytrec_eval.
Qrels = dict[str, dict[str, int]]


def _as_str_array(values: Iterable[Any], what: str) -> np.ndarray:
    """A column given for a :class:`Corpus` (one value per document) as a 1-D object array.  One string
    (its characters would be the documents), a mapping (its keys would be) or something that is no
    collection is a :class:`DataError` saying what to pass."""
    if isinstance(values, (str, bytes)):
        raise DataError(f"{what}: expected a list (one value per document), got one {type(values).__name__} "
                        f"({values!r:.60}); wrap it in a list")
    if isinstance(values, Mapping):
        raise DataError(f"{what}: expected a list (one value per document), got a {type(values).__name__} (its keys "
                        "would be the values); for {id: text} use Corpus.from_texts(mapping), else pass "
                        "list(mapping.values())")
    if not isinstance(values, Iterable):
        raise DataError(f"{what}: expected a list (one value per document), got {type(values).__name__} "
                        f"({values!r:.60})")
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=object)
    if arr.ndim != 1:
        raise DataError(f"{what} must be a 1-D sequence of strings, got an array of shape {arr.shape}")
    return arr


def _as_ids(values: Iterable[Any], what: str) -> np.ndarray:
    """Ids as strings (``10`` and ``"10"`` name the same document or query, before and after a save).

    A float id of an integral value is its integer's string (``1.0`` -> ``"1"``: the id a qrels file or a
    pandas column read as float names; ``"1.0"`` would match no judgement); a NaN or infinite id (a missing
    value of a pandas column) is a :class:`DataError` naming its position, as a NaN text is."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f" and values.ndim == 1:
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise DataError(f"{what}[{int(bad[0])}] is {float(values[bad[0]])!r}, not an id ({len(bad)} such); a "
                            "missing id (NaN) names nothing: drop those rows or give them ids")
        integral = values == np.trunc(values)
        return np.array([str(int(x)) if i else str(x) for x, i in zip(values.tolist(), integral.tolist())],
                        dtype=object)
    arr = _as_str_array(values, what)
    if len(arr) and not all(type(x) is str for x in arr.tolist()):
        arr = np.array([_id_string(x, what, i) for i, x in enumerate(arr.tolist())], dtype=object)
    return arr


def _id_string(x: Any, what: str, i: int) -> str:
    """One id as a string (:func:`_as_ids`): a float of an integral value as its integer's; NaN, infinity and
    another missing value (``None``, ``pandas.NA``) refused, naming ``what[i]``."""
    if type(x) is str:
        return x
    if isinstance(x, (float, np.floating)):
        if not math.isfinite(x):
            raise DataError(f"{what}[{i}] is {x!r}, not an id; a missing id (NaN) names nothing: drop that row or "
                            "give it an id")
        if float(x).is_integer():
            return str(int(x))
    elif is_missing(x):
        raise DataError(f"{what}[{i}] is {x!r}, not an id; a missing id names nothing: drop that row or give it "
                        "an id")
    return str(x)


#: what an id may not hold: a tab or a line break splits the columns or lines of a qrels TSV or a TREC run file
#: naming it (:func:`check_id_breaks`; the BEIR reader's and writer's checks, :mod:`ragkit.eval.beir`)
ID_BREAK = re.compile(r"[\t\n\r]")

#: the name of each character :data:`ID_BREAK` finds, for the messages refusing it ("holds a <name>")
ID_BREAK_NAMES = {"\t": "tab", "\n": "line feed (\\n)", "\r": "carriage return (\\r)"}


def check_id_breaks(ids: Sequence[str], what: str, noun: str) -> None:
    """Refuse an empty id (``""``), or one holding a tab, a line feed or a carriage return, naming ``what[i]``
    (a ``noun``'s id): a qrels TSV or a TREC run file could not name it (its columns are tab- or space-separated,
    one line each), so it would break or go missing there, long after the corpus was built; or one holding a NUL
    (:func:`check_id_nul`: trec_eval would read it cut there).  Batched: one ``in`` scan for ``""`` and one
    ``str.join`` searched for the characters (C code, no Python loop); only a refused column is looked at id by
    id."""
    ids = ids if isinstance(ids, list) else list(ids)
    if "" in ids:
        i = ids.index("")
        raise DataError(f"{what}[{i}] is '', an empty id; expected a non-empty id for each {noun} (a qrels line or "
                        "a run file cannot name one without)")
    joined = "\x00".join(ids)
    if "\t" in joined or "\n" in joined or "\r" in joined:
        i, hit = next((i, h) for i, x in enumerate(ids) if (h := ID_BREAK.search(x)) is not None)
        raise DataError(f"{what}[{i}] is {ids[i]!r:.60}, which holds a {ID_BREAK_NAMES[hit.group()]}; expected an id "
                        f"without tabs or line breaks (they would split the columns or lines of a qrels or run file "
                        f"naming this {noun})")
    if joined.count("\x00") != len(ids) - 1:  # (the join's own NULs aside: an id holds one)
        check_id_nul(ids, what, noun)
    if not _utf8_clean(joined):
        check_id_surrogates(ids, what, noun)


def check_id_nul(ids: Sequence[Any], what: str, noun: str) -> None:
    """Refuse an id holding a NUL character (``"\\x00"``), naming ``what[i]`` (a ``noun``'s id): trec_eval, which
    scores every run (pytrec_eval), reads ids as C strings that end at the first NUL, so ``"a\\x00b"`` and
    ``"a\\x00c"`` would name one document there and the scores would silently be wrong.  Batched: one
    ``str.join`` searched in C; only a refused list is looked at id by id.  Ids that are no strings are left to
    the caller."""
    ids = ids if isinstance(ids, list) else list(ids)
    try:
        joined = "".join(ids)
    except TypeError:  # (some id is no string)
        joined = "".join(x for x in ids if isinstance(x, str))
    if "\x00" not in joined:
        return
    i = next(i for i, x in enumerate(ids) if isinstance(x, str) and "\x00" in x)
    raise DataError(f"{what}[{i}] is {ids[i]!r:.60}, which holds a NUL character ('\\x00') at character "
                    f"{ids[i].index(chr(0)) + 1}; expected an id without one (trec_eval, which scores runs, reads ids "
                    f"as C strings that end at a NUL, so two ids differing after it would name one {noun})")


def check_id_surrogates(ids: Sequence[Any], what: str, noun: str) -> None:
    """Refuse an id holding a lone surrogate (bytes decoded with ``errors="surrogateescape"``, as Python decodes
    a non-UTF-8 command line or file name): no UTF-8 file (a run, qrels, a saved corpus) can hold it, so writing
    one would fail with a bare :class:`UnicodeEncodeError` long after the id came in.  A :class:`DataError` naming
    ``what[i]`` (a ``noun``'s id), as :func:`check_texts` names a text.  Batched (:func:`_first_surrogate`): one
    ``str.join`` and one UTF-8 test per chunk of ids; only a refused chunk is looked at id by id.  Ids that are
    no strings are left to the caller (they are written with ``str``)."""
    ids = ids if isinstance(ids, list) else list(ids)
    found = _first_surrogate(ids)
    if found is None:
        return
    i, hit = found
    raise DataError(f"{what}[{i}] is {ids[i]!r:.60}, which holds a lone surrogate {hit.group()!r} at character "
                    f"{hit.start()}, which is no Unicode text (bytes decoded with errors='surrogateescape'?); no "
                    f"UTF-8 file (a run, qrels, a saved corpus) could name this {noun}: decode the source with its "
                    "real encoding")


def _key_ids(keys: Iterable[Any], what: str) -> list[str]:
    """The keys of a mapping as ids (:func:`_id_string`: ``1.0`` -> ``"1"``, NaN refused naming
    ``what[position]``); keys that are all strings as they are, strings and ints with ``str`` alone."""
    keys = list(keys)
    types = set(map(type, keys))
    if types <= _PLAIN_IDS:  # (strings and ints: nothing to refuse, no call per key)
        return keys if types <= {str} else [k if type(k) is str else str(k) for k in keys]
    return [_id_string(k, what, i) for i, k in enumerate(keys)]


#: the types of ids :func:`_key_ids` writes with ``str`` alone
_PLAIN_IDS = frozenset({str, int})


#: a lone surrogate: what text decoded with ``errors="surrogateescape"`` holds, and no UTF-8 file can
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_texts(values: Sequence[Any], what: str, ids: Sequence[Any] | np.ndarray | None = None, *,
                noun: str = "document", missing_ok: bool = False, surrogates: bool = False,
                chunk: int = 8192) -> list[Any]:
    """``values`` (texts, titles, queries) checked to be strings (``numpy.str_`` too), as a list.

    A value that is no string is a :class:`DataError` naming ``what[position]`` and its id
    (``ids[position]``, a ``noun``'s), except a missing value (:func:`is_missing`: ``None``, NaN,
    ``pandas.NA``) where ``missing_ok``: it becomes ``""`` (a missing title).  ``surrogates=True`` also
    refuses a lone surrogate (text decoded with ``errors="surrogateescape"``: no UTF-8 file, and so no
    save, can hold it, and tokenizers fail on it).

    Batched: one ``str.join`` per ``chunk`` values (C code; it refuses any value that is no string, so
    a column of strings costs no Python loop) and one surrogate test of the joined chunk
    (:func:`_utf8_clean`); only a chunk holding a non-string (or a surrogate) is looked at value by
    value.  (A whole column joined at once peaked at
    5x the text's size once one character above Latin-1 widened the joined string: +1.2 GB for 235 MB
    of text.)  ``values`` itself is returned when nothing was replaced, else a new list.
    """
    values = values if isinstance(values, list) else list(values)
    fixed: list[Any] | None = None
    for a in range(0, len(values), chunk):
        part = values[a:a + chunk]
        try:
            joined = "\x00".join(part)
        except TypeError:  # a value that is no string in this chunk: found one by one
            for i, v in enumerate(part):
                if isinstance(v, str):
                    continue
                if missing_ok and is_missing(v):
                    part[i] = ""
                    continue
                row = a + i
                at = f" ({noun} {ids[row]!r})" if ids is not None else ""
                hint = ("; decode it" if isinstance(v, (bytes, bytearray)) else
                        "; for a document without text give '' (or leave the document out)"
                        if is_missing(v) and noun == "document" else "")
                raise DataError(f"{what}[{row}]{at} is {_kind(v)}, expected a string{hint}")
            if fixed is None:
                fixed = list(values)
            fixed[a:a + chunk] = part
            joined = "\x00".join(part)
        if surrogates and (found := _first_surrogate(part, joined=joined)) is not None:
            row, hit = a + found[0], found[1]
            at = f" ({noun} {ids[row]!r})" if ids is not None else ""
            raise DataError(f"{what}[{row}]{at} holds a lone surrogate {hit.group()!r} at "
                            f"character {hit.start()}, which is no Unicode text (bytes decoded with "
                            "errors='surrogateescape'?); decode the source with its real encoding")
    return values if fixed is None else fixed


def _joined(values: list[Any]) -> str:
    """``values`` joined with NULs, for a surrogate test (:func:`_first_surrogate`); values that are no strings
    by their ``str``."""
    try:
        return "\x00".join(values)
    except TypeError:
        return "\x00".join(map(str, values))


def _first_surrogate(values: list[Any], chunk: int = 8192, *, join: Callable[[list[Any]], str] = _joined,
                     text: Callable[[Any], str] = str,
                     joined: str | None = None) -> "tuple[int, re.Match[str]] | None":
    """``(row, match)`` of the first value of ``values`` holding a lone surrogate (:data:`_SURROGATE`), else
    ``None``: the one scan behind :func:`check_texts`, :func:`check_id_surrogates` and :func:`_check_meta_text`,
    whose callers keep their own messages.

    Per ``chunk`` values (a whole column joined at once costs up to 5x its text, :func:`check_texts`), their
    text joined (``join``: C code, no Python loop) and one UTF-8 test (:func:`_utf8_clean`); only a chunk that
    fails is searched value by value (``text(value)``: a value's text; the joined text may hold NULs, so a row
    is not read off it).  ``joined`` is ``join(values)`` where the caller has made it already (``values`` is
    then one chunk)."""
    if joined is not None:
        chunk = max(len(values), 1)
    for a in range(0, len(values), chunk):
        part = values[a:a + chunk]
        if _utf8_clean(joined if joined is not None else join(part)):
            continue
        for i, v in enumerate(part):
            hit = _SURROGATE.search(text(v))
            if hit is not None:
                return a + i, hit
    return None


def _utf8_clean(text: str) -> bool:
    """``text`` holds no surrogate code point (:data:`_SURROGATE`): ASCII text is known to (``isascii`` is
    a flag CPython keeps), other text encodes to UTF-8, which fails exactly on a surrogate (4x faster than
    the regular expression on ASCII text, 2.6x with a tenth of the documents non-ASCII)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _a(noun: str) -> str:
    """``noun`` with its indefinite article (``"an int"``, ``"a float"``)."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` with its noun, singular for one: ``"1 query"``, ``"3 queries"``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _clip(text: str, n: int = 40) -> str:
    """``text`` cut to ``n`` characters (an ellipsis marks a cut), for a summary."""
    return text if len(text) <= n else text[:n - 3] + "..."


def _callable(f: Any) -> str:
    """A function or method named for an error message: ``"the method BeirDataset.queries"``."""
    return f"the {type(f).__name__} {getattr(f, '__qualname__', repr(f)[:60])}"


def _kind(v: Any) -> str:
    """What ``v`` is, for an error message: ``"None"``, ``"an int (5)"``, ``"a list (['a', 'b'])"``; a long
    value previewed by :func:`_preview`."""
    return "None" if v is None else f"{_a(type(v).__name__)} ({_preview(v)})"


def _preview(v: Any, n: int = 60) -> str:
    """``repr(v)`` in at most about ``n`` characters for an error message, cut at an element boundary and
    closed with ``...``: ``{'11': {'32587939': 3}, '14': {'641786': 3}, ...}`` (where ``{v!r:.60}`` cut
    ``'2294278`` mid-id), a long string as ``'its first characters'...``, another value at a space or a
    comma.  Only the elements shown are looked at (a mapping of a million queries costs nothing)."""
    text = repr(v) if not isinstance(v, (Mapping, list, tuple, set, frozenset)) or len(v) <= 8 else None
    if text is not None and len(text) <= n:
        return text
    if isinstance(v, str):
        return repr(v[:max(n - 8, 1)]) + "..."
    if isinstance(v, (Mapping, list, tuple, set, frozenset)):
        opening, closing = (("{", "}") if isinstance(v, (Mapping, set, frozenset)) else
                            ("(", ")") if isinstance(v, tuple) else ("[", "]"))
        if isinstance(v, (set, frozenset)) and type(v) is not set:
            opening, closing = f"{type(v).__name__}({{", "})"
        parts: list[str] = []
        used = len(opening) + len(closing) + 5  # (", ...")
        items = iter(v.items()) if isinstance(v, Mapping) else iter(v)
        for item in itertools.islice(items, n):
            room = max(n - used, 12)
            part = (f"{_preview(item[0], room)}: {_preview(item[1], room)}" if isinstance(v, Mapping)
                    else _preview(item, room))
            if parts and used + len(part) > n:
                break
            parts.append(part)
            used += len(part) + 2
            if used >= n:
                break
        if len(parts) < len(v):
            parts.append("...")
        elif isinstance(v, tuple) and len(v) == 1:
            parts[0] += ","
        return opening + ", ".join(parts) + closing
    assert text is not None
    flat = " ".join(text.split())  # (a DataFrame's repr: one line)
    if len(flat) <= n:
        return flat
    cut = max(flat.rfind(" ", 0, n - 3), flat.rfind(",", 0, n - 3) + 1)
    return flat[:cut if cut > n // 2 else n - 3].rstrip(" ,") + " ..."


def _check_encodable(col: np.ndarray, what: str, ids: np.ndarray, chunk: int = 8192) -> None:
    """Refuse a value of ``col`` that is no string, or holds a lone surrogate (:func:`check_texts`)."""
    check_texts(col.tolist(), what, ids, surrogates=True, chunk=chunk)


def _text_column(col: np.ndarray, what: str, ids: np.ndarray, missing_ok: bool = False) -> np.ndarray:
    """``col`` checked by :func:`check_texts` (missing values as ``""`` where ``missing_ok``): ``col``
    itself when nothing was replaced, else a new object array."""
    values = col.tolist()
    out = check_texts(values, what, ids, missing_ok=missing_ok, surrogates=True)
    return col if out is values else _column(out)


def series_ids(series: Any, what: str = "Series.index") -> list[str] | None:
    """The ids a pandas ``Series`` of texts holds in its index (as strings), or ``None`` where its index is row
    numbers: ids are an index of strings, or an integer or float index with a name
    (``df.set_index('_id')['text']``: pandas reads SciFact's ``_id`` column as int64, as float64 where a value
    is missing).  A float id of an integral value is its integer's string (``1.0`` -> ``"1"``), a NaN one a
    :class:`DataError` naming ``what[position]`` (:func:`_as_ids`).  An unnamed integer index is row labels,
    also after a ``df.sample(...)`` or a train/test split (not a ``RangeIndex`` any more): read as ids,
    SciFact's query ``'1053'`` would get the text of row 1053."""
    import pandas as pd

    index = series.index
    if isinstance(index, pd.RangeIndex):
        return None
    if index.inferred_type == "string" or (index.name is not None and pd.api.types.is_integer_dtype(index.dtype)):
        return [str(k) for k in index]
    if index.name is not None and pd.api.types.is_float_dtype(index.dtype):
        ids: list[str] = _as_ids(index.to_numpy(dtype=np.float64, na_value=np.nan), what).tolist()
        return ids
    return None


def ids_and_texts(values: Any, what: str) -> tuple[list[str] | None, list[Any]]:
    """``(ids or None, texts)`` of a collection of texts given where a batch is expected.

    A mapping ``{id: text}`` (what BEIR's loaders and notebooks hold) gives ids (as strings) and texts; a pandas
    ``Series`` its index as ids where :func:`series_ids` finds them there, else its values alone; a list, tuple,
    numpy array or other iterable its items (ids ``None``: the caller numbers them). One string or bytes (its
    characters would be the texts), a pandas ``DataFrame`` (its column names would be), ``None`` or anything
    that is no collection (a method not called: ``data.queries`` for ``data.queries("test")``) is a
    :class:`DataError` saying what to pass.  So is a ``set`` (``frozenset``): its order, so the ids ``q0, q1, ...``
    (``0, 1, ...``) its texts would be numbered with, changes from run to run (string hashing is salted per
    process); pass a list (``sorted(texts)``) or a mapping.
    The texts themselves are not checked here (:func:`check_texts` does, where they enter).
    """
    if isinstance(values, (str, bytes)):
        raise DataError(f"{what}: expected a list of texts, got one {type(values).__name__} ({values!r:.60}); wrap it "
                        "in a list" + (" (decoded)" if isinstance(values, bytes) else ""))
    if isinstance(values, (set, frozenset)):
        kind = type(values).__name__
        raise DataError(f"{what}: got a {kind} of {len(values)} texts, whose order (so the id each text gets by its "
                        f"position) changes from run to run; pass a list (sorted(...) of the {kind}) or a mapping "
                        "{id: text}")
    if isinstance(values, Mapping):  # (keys as ids: 1.0 -> "1", as Queries and Corpus read ids; NaN refused)
        return _key_ids(values, f"{what}: the mapping's keys"), list(values.values())
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(values, pd.DataFrame):
        raise DataError(f"{what}: got a pandas DataFrame (its column names would be the texts); pass its text column "
                        "(df['text']), or ids and texts: dict(zip(df['id'], df['text']))")
    if pd is not None and isinstance(values, pd.Series):
        return series_ids(values, f"{what}: the Series' index"), values.tolist()
    if callable(values) and not isinstance(values, Iterable):
        raise DataError(f"{what}: got {_callable(values)}, not texts; call it (e.g. data.queries('test'), not "
                        "data.queries)")
    if values is None or not isinstance(values, Iterable):
        raise DataError(f"{what}: expected a list of texts (or a mapping {{id: text}}), got {values!r:.60}")
    return None, values.tolist() if isinstance(values, np.ndarray) else list(values)


def _column(values: Iterable[Any]) -> np.ndarray:
    """A 1-D object column, even when every value is a list of one length (``np.array`` made that 2-D)."""
    values = list(values)
    return np.fromiter(values, dtype=object, count=len(values))


#: the types of metadata values a corpus keeps as they are (anything else is looked at value by value)
_PLAIN_META = frozenset({str, int, bool, type(None), list, dict})


def _meta_column(col: np.ndarray) -> np.ndarray:
    """A metadata column as a saved corpus reads it back, so that filters answer the same before and after a
    save: in an object column, a 1-D numpy array value (what ``pandas.read_parquet`` gives for a list
    column) or a tuple as a list, and a missing value (NaN, ``pandas.NA``, ``NaT``) as ``None``.  A column
    of another dtype (numbers, strings) is kept as it is; in an object column, one pass over the values'
    types, and a look at the values of other types than str, int, bool, None, list and dict only."""
    return _meta_kept(col)[0]


def _meta_kept(col: np.ndarray) -> tuple[np.ndarray, list[Any] | None, set[type] | None]:
    """:func:`_meta_column`'s column, with its values as a list and the set of their types (``None``, ``None`` for
    a column that is not of objects), which :func:`_check_meta_text` reads rather than listing them again."""
    if col.dtype != object:
        return col, None, None
    values = col.tolist()
    types = set(map(type, values))
    odd = types - _PLAIN_META
    if not odd:
        return col, values, types
    out = [_meta_value(v) if type(v) in odd else v for v in values]
    if all(a is b for a, b in zip(out, values)):
        return col, values, types
    return _column(out), out, set(map(type, out))


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


def _meta_value(v: Any) -> Any:
    """One metadata value as :func:`_meta_column` keeps it."""
    if isinstance(v, np.ndarray) and v.ndim == 1:
        return v.tolist()
    if isinstance(v, tuple):
        return list(v)
    return None if is_missing(v) else v


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


def _pandas(who: str) -> Any:
    """The pandas module, imported for ``who``; absent, an :class:`ImportError` saying so."""
    try:
        import pandas
    except ImportError:
        raise ImportError(f"{who} needs pandas, which is not installed: pip install pandas") from None
    return pandas


def _other_constructor(given: Any) -> str:
    """The constructor of :class:`Corpus` that takes ``given``, as the end of an error message."""
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(given, pd.DataFrame):
        return ("; for a DataFrame: Corpus(ids=df['id'], texts=df['text'], titles=df['title'], metadata={...}), or "
                "Corpus.from_records(df.to_dict('records')) for columns '_id' (or 'id'), 'text' and 'title'")
    if isinstance(given, Mapping):
        return "; for {doc_id: text}: Corpus.from_texts(mapping)"
    if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
        return ""
    first = next(iter(given), None)
    if isinstance(first, Mapping):
        return "; for dicts with '_id' and 'text': Corpus.from_records(records)"
    if isinstance(first, str):
        return "; for texts: Corpus.from_texts(texts)"
    if hasattr(first, "page_content"):
        return "; for LangChain Documents: Corpus.from_documents(docs)"
    return ""


def _one_argument(cls: str, given: Any) -> str:
    """The message for ``Corpus(x)`` or ``Queries(x)``: one argument where ids and texts are expected."""
    hint = _other_constructor(given) if cls == "Corpus" else (
        "; for texts (numbered 'q0', 'q1', ...) or {query_id: text}: Queries.from_texts(texts)")
    pd = sys.modules.get("pandas")
    what = (f"a pandas {type(given).__name__} (columns {[str(c) for c in given.columns][:6]})"
            if pd is not None and isinstance(given, pd.DataFrame) else _kind(given))
    return (f"{cls}(ids, texts): got one argument, {what}, expected ids and texts (one per "
            f"{'document' if cls == 'Corpus' else 'query'}){hint or f'; see {cls}.from_texts'}")


def _as_rows(idx: Any, n: int, who: str = "rows") -> np.ndarray:
    """Row numbers from integer positions or a boolean mask of length ``n`` (a mask is not 0/1 rows).

    One position (``5``) is an :class:`InputTypeError` from ``who`` saying to pass a list (``[5]``): a
    subset is of rows, and ``np.asarray(5)`` has no rows to iterate."""
    arr = np.asarray(idx)
    if arr.ndim == 0:
        one = f"; for one row pass a list of one: [{idx!r}]" if arr.dtype.kind in "iu" else ""
        raise InputTypeError(f"{who}: expected a list of row positions (or a boolean mask), got {_kind(idx)}{one}")
    if arr.ndim != 1:
        raise DataError(f"{who}: expected a 1-D list of row positions (or a boolean mask), got an array of shape "
                        f"{arr.shape}")
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise DataError(f"a boolean mask selects rows of {n}, got one of shape {arr.shape}")
        return np.flatnonzero(arr)
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.dtype == object:  # Python ints in an object array
        arr = np.asarray(arr.tolist())
    if arr.dtype.kind not in "iu":  # 1.7 would silently become row 1
        raise DataError(f"rows must be integer positions (or a boolean mask), got {arr.dtype} values such as "
                        f"{arr.reshape(-1)[0].item()!r}")
    rows = arr.astype(np.int64)
    if rows.max() >= n or rows.min() < -n:
        bad = int(rows.max()) if rows.max() >= n else int(rows.min())
        raise DataError(f"row {bad} is out of range for {n} rows (valid: 0..{n - 1}, or -{n}..-1 from the end)")
    return rows


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
            col, values, types = _meta_kept(_column(col) if not isinstance(col, np.ndarray) or col.ndim != 1 else col)
            if len(col) != len(ids):
                raise DataError(
                    f"Corpus metadata field {key!r} has {len(col)} values, expected {len(ids)} (one per document)"
                )
            _check_meta_text(key, col, ids, values, types)
            meta[key] = _frozen(col, self.metadata[key])
        self._hold(_frozen(ids, self.ids), _frozen(texts, self.texts), _frozen(titles, self.titles), meta)

    def _hold(self, ids: np.ndarray, texts: np.ndarray, titles: np.ndarray, meta: dict[str, np.ndarray]) -> None:
        """Keep the (read-only) columns, and empty caches of what is derived from them."""
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "texts", texts)
        object.__setattr__(self, "titles", titles)
        object.__setattr__(self, "metadata", _Columns(meta))
        object.__setattr__(self, "_row_of", None)
        object.__setattr__(self, "_codes", {})  # metadata field -> (codes, value -> code), built by mask()
        object.__setattr__(self, "_kinds", {})  # metadata field -> its kinds (ragkit.metadata.held_kinds)

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
            did = r.get("_id", r.get("id"))
            if did is None:
                raise DataError(f"record {i} has no '_id' (or 'id') field: {dict(r)!r:.200}")
            ids.append(str(did))
            keys_seen.update(r.keys())
            with_text += "text" in r
            texts.append(r.get("text", ""))  # (checked by the constructor: None would be the text "None")
            title = r.get("title")
            titles.append("" if is_missing(title) else title if isinstance(title, str) else str(title))
            metas.append(r.get("metadata") or {})
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
        records = []
        for d in docs:  # lists, dicts and sets copied: the caller's documents stay theirs to change
            meta = {k: copy.deepcopy(v) if isinstance(v, (list, dict, set)) else v
                    for k, v in (getattr(d, "metadata", {}) or {}).items()}
            did = getattr(d, "id", None)
            if not did:
                did = meta.pop("id", None)
            elif "id" in meta and str(meta["id"]) == str(did):
                del meta["id"]  # the id written into metadata too (get_by_ids's documents): not a field of its own
            records.append({"_id": None if did is None else str(did), "text": d.page_content,
                            "title": meta.pop("title", ""), "metadata": meta})
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
        strings), for an operator's ``remove``; an unknown id is a :class:`DataError` naming ``who``.  ``None``, a
        :class:`Corpus` (whose ids are ``corpus.ids``) or another value that is neither an id nor an iterable of
        ids is an :class:`InputTypeError` naming ``who``."""
        if isinstance(ids, Corpus) or ids is None or not isinstance(ids, (str, bytes, int, np.integer, Iterable)):
            hint = "; pass corpus.ids" if isinstance(ids, Corpus) else ""
            raise InputTypeError(f"{who}: expected document ids (an id, or a list of ids), got "
                                 f"{'a Corpus' if isinstance(ids, Corpus) else _kind(ids)}{hint}")
        one = isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable)  # any other iterable lists ids
        ids = [str(i) for i in cast(Iterable[Any], [ids] if one else ids)]
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
        check_filter(where)
        keep = np.ones(len(self), dtype=bool)
        for key, want in where.items():
            key, column = self._filter_column(key)
            # any collection of values (a list, a set, a range, dict keys, a numpy array or pandas
            # Series) means membership; a string or a single value means equality
            wants = [None if is_missing(w) else w for w in filter_values(want)]  # pandas.NA, NaT: as None
            if column is self.titles:  # strings only ('' for none): one vectorised membership test
                strings = [w for w in wants if isinstance(w, str)]
                if not strings:  # a number for a title (title: 2020) matches no document: refused, as for a field
                    check_kinds(key, dict.fromkeys(self.titles[:1].tolist(), 0), wants)
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
        check_filter(where)
        for key, want in where.items():
            key, column = self._filter_column(key)
            wants = [None if is_missing(w) else w for w in filter_values(want)]
            if column is self.titles:
                if not any(isinstance(w, str) for w in wants):
                    check_kinds(key, dict.fromkeys(self.titles[:1].tolist(), 0), wants)
            elif key != "_id":
                if column.dtype.kind == "f":  # (None matches a float column's NaN)
                    wants = [w for w in wants if w is not None]
                coded = self._coded(key, column)
                if coded is not None and not any(hashable(w) and w in coded[1] for w in wants):
                    check_kinds(key, coded[1], wants)

    def _filter_column(self, key: str) -> tuple[str, np.ndarray]:
        """The field a filter's ``key`` names, and its column: ``"_id"`` (``"id"`` too, where no metadata field
        has that name) the ids, a metadata field its column, ``"title"`` (where no metadata field has that name)
        the titles; any other name is a :class:`DataError` listing the fields."""
        if key == "id" and "id" not in self.metadata:  # as a returned Document's metadata names it
            key = "_id"
        if key == "_id":
            return key, self.ids
        if key in self.metadata:
            return key, self.metadata[key]
        if key == "title":  # the documents' titles (BEIR's field; where a Document's metadata title goes)
            return key, self.titles
        raise DataError(f"filter {unknown_filter_field(key, self.metadata)}")

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
        earlier one stays whole when the save fails."""
        path = user_path(path, "Corpus.save: path")
        blocker = file_above(path)
        if blocker is not None:
            raise ArtifactError(f"Corpus.save: {path}: {blocker} is a file, not a folder; the corpus cannot be written "
                                "below it")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _unwritable(path, e, f"creating the folder {path.parent}") from e
        with atomic_file(path) as tmp:
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
    if isinstance(v, (np.floating,)) and v.dtype != np.float64:
        return float(str(v))
    if isinstance(v, np.generic) and not isinstance(v, (np.datetime64, np.timedelta64)):  # (a datetime64's item()
        v = v.item()  # is a date, or an int of nanoseconds: refused below, as a Timestamp is; bytes and complex too)
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


#: the grades ragkit hands trec_eval (pytrec_eval): a C int below (grades under 0 all count as judged, not relevant:
#: they reach it as -1), and at most 1,000 above: trec_eval's time grows with a query's highest grade (65,535 took
#: 0.8 s for one query, 10**6 over 20 s, 2**30 crashed the process, beyond a C int it fails with a SystemError)
GRADE_MIN, GRADE_MAX = -2**31, 1000


def grade_range_error(where: str, grade: Any) -> str:
    """The message refusing ``grade`` (at ``where``: ``"evaluate: qrels['q1']['d1']"``, ``"file:3"``) outside
    :data:`GRADE_MIN` to :data:`GRADE_MAX`."""
    return (f"{where}: relevance grade {str(grade)[:40]} is outside the range ragkit evaluates ({GRADE_MIN:,} to "
            f"{GRADE_MAX:,}: trec_eval's time grows with the highest grade, and it fails beyond a C int); grade "
            "relevance with small integers (0 not relevant, 1, 2, ... more relevant)")


def _grade(r: Any, q: Any, doc: Any, who: str = "evaluate") -> int:
    """A judgement as trec_eval's integer grade (``1``, ``1.0``, ``"1"``, ``-1``: a negative grade is legitimate in
    TREC qrels, scored as not relevant); 0.5 or "high" is a :class:`DataError` (int() would turn 0.5 into 0 and
    drop the judgement), and so is a bool (``True``: a relevance flag, not a grade; on graded qrels, 1 may not be
    what was meant)."""
    if isinstance(r, (bool, np.bool_)):
        raise DataError(f"{who}: qrels[{q!r}][{doc!r}] = {r!r} is a bool, not an integer relevance grade (0 not "
                        "relevant, 1, 2, ... more relevant); give the grade, e.g. int(flag) for relevant or not")
    g: int | None = None
    try:
        g = int(float(r))
        if g != float(r):
            g = None
    except (TypeError, ValueError, OverflowError):
        pass
    if g is not None:
        if not GRADE_MIN <= g <= GRADE_MAX:  # (a DataError, not the opaque SystemError trec_eval's reading raises)
            raise DataError(grade_range_error(f"{who}: qrels[{q!r}][{doc!r}]", r))
        return g
    raise DataError(f"{who}: qrels[{q!r}][{doc!r}] = {r!r} is not an integer relevance grade (0 not relevant, "
                    f"1, 2, ... more relevant)")


def check_qrels(qrels: Any, who: str) -> Qrels:
    """``qrels`` as ``{query_id: {doc_id: grade}}`` with string ids and integer grades (:func:`_grade`).

    Anything of another shape is a :class:`DataError` from ``who`` naming the argument and the shape
    expected: ``None``, a list of ``(query_id, doc_id, grade)`` rows, a method not called
    (``data.qrels`` for ``data.qrels("test")``), a query mapped to one document id instead of
    ``{doc_id: grade}``; and so are two ids that name one query or document once written as strings
    (``1`` and ``"1"``)."""
    if not isinstance(qrels, Mapping):
        raise _not_qrels(qrels, who)
    out: Qrels = {}
    for position, (q, rel) in enumerate(qrels.items()):
        if not isinstance(rel, Mapping):
            hint = ("; for lists of relevant document ids: {q: {d: 1 for d in ids} for q, ids in qrels.items()}"
                    if isinstance(rel, (list, tuple, set, frozenset)) else "")
            raise DataError(f"{who}: qrels[{q!r}] is {_kind(rel)}, expected a mapping "
                            f"{{doc_id: grade}} (qrels are {{query_id: {{doc_id: grade}}}}){hint}")
        # (ids as Queries and Corpus read them: 1.0 -> "1", a NaN key refused naming its position)
        qid = q if type(q) is str else _id_string(q, f"{who}: qrels' query ids", position)
        if set(map(type, rel)) <= _PLAIN_IDS:
            docs = {d if type(d) is str else str(d): _grade(r, q, d, who) for d, r in rel.items()}
        else:
            keys = _key_ids(rel, f"{who}: qrels[{qid!r}]'s document ids")
            docs = {k: _grade(r, q, d, who) for k, (d, r) in zip(keys, rel.items())}
        ids_once(docs, rel, f"{who}: qrels[{q!r}] names a document")
        out[qid] = docs
    ids_once(out, qrels, f"{who}: qrels name a query")
    check_qrels_nul(out, who)
    return out


def check_qrels_nul(qrels: Mapping[str, Mapping[str, Any]], who: str) -> None:
    """Refuse (:func:`check_id_nul`, starting ``who``) a query or document id of ``qrels`` (string ids) holding a
    NUL character, which trec_eval would read cut there.  One ``str.join`` of the query ids and one of all the
    document ids; only a query whose judgements hold one is looked at id by id."""
    check_id_nul(list(qrels), f"{who}: qrels' query ids", "query")
    if "\x00" in "".join(itertools.chain.from_iterable(qrels.values())):
        q = next(q for q, rel in qrels.items() if "\x00" in "".join(rel))
        check_id_nul(list(qrels[q]), f"{who}: qrels[{q!r}]'s document ids", "document")


def _not_qrels(qrels: Any, who: str, also: str = "") -> DataError:
    """The :class:`DataError` of ``qrels`` that are no mapping ``{query_id: {doc_id: grade}}``, starting ``who``:
    what was given (a DataFrame by its rows and columns, not its flattened repr), how to make it qrels, and
    ``also``, the other forms the caller reads (``"a DataFrame ..., or a qrels file's path"``), if any."""
    expected = "qrels must be a mapping {query_id: {doc_id: grade}}"
    others = f" (or pass {also})" if also else ""
    if callable(qrels) and not isinstance(qrels, Iterable):
        return DataError(f"{who}: {expected}, got {_callable(qrels)}; call it (e.g. data.qrels('test'), not "
                         "data.qrels)")
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(qrels, (pd.DataFrame, pd.Series)):
        shape = (f"columns {[str(c) for c in qrels.columns]}" if isinstance(qrels, pd.DataFrame) else
                 f"name {qrels.name!r}")
        hint = (others if also else
                "; ragkit.evaluate and TrainSet read a DataFrame of judgements (one row per judgement, columns "
                "query-id, corpus-id, score or a common spelling): ragkit.types.as_qrels(df, 'qrels') gives the "
                "mapping")
        return DataError(f"{who}: {expected}, got a pandas {type(qrels).__name__} of {len(qrels)} rows "
                         f"({shape}){hint}")
    hint = "; build it from (query_id, doc_id, grade) rows: {q: {d: g}}" if isinstance(qrels, (list, tuple)) else ""
    return DataError(f"{who}: {expected}, got {_kind(qrels)}{hint}{others}")


def ids_once(written: Mapping[str, Any], given: Mapping[Any, Any], what: str) -> None:
    """Refuse (:class:`DataError`, starting ``what``) ids of ``given`` that name one id twice once written as
    strings (``1`` and ``"1"``): ``written``, keyed by those strings, is then shorter."""
    if len(written) != len(given):
        raise DataError(f"{what} twice once its ids are strings: "
                        f"{repeated(x if type(x) is str else _id_string(x, what, 0) for x in given)[0]!r}")


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


#: The column names a qrels table (a pandas ``DataFrame``, a ``.csv`` file's header) may give its three columns,
#: compared whitespace and case aside: BEIR's (``query-id``, ``corpus-id``, ``score``), ir_datasets' and
#: :meth:`Run.to_pandas <ragkit.run.Run.to_pandas>`'s (``query_id``, ``doc_id``, ``relevance``), PyTerrier's
#: (``qid``, ``docno``, ``label``), and other common spellings.  (``query`` and ``text`` are not among them:
#: they usually hold query texts.)
QRELS_COLUMNS: dict[str, tuple[str, ...]] = {
    "query-id": ("query-id", "query_id", "queryid", "qid", "q_id", "topic", "topic-id", "topic_id"),
    "corpus-id": ("corpus-id", "corpus_id", "doc_id", "docid", "doc-id", "docno", "doc", "document", "document-id",
                  "document_id", "pid", "passage-id", "passage_id"),
    "score": ("score", "relevance", "grade", "label", "rel", "judgement", "judgment"),
}
_QRELS_ROLE = {name: role for role, names in QRELS_COLUMNS.items() for name in names}
_ROLE_WORDS = {"query-id": "query ids", "corpus-id": "document ids", "score": "grades"}


def _qrels_columns(names: Sequence[Any], who: str, what: str, index_name: Any = None,
                   how: str = "df.rename(columns={mapping})", first: Sequence[Any] | None = None,
                   drop: str = "df.drop(columns={columns})") -> tuple[int, int, int]:
    """The positions of the query id, document id and grade columns among a qrels table's column ``names``
    (:data:`QRELS_COLUMNS`), or a :class:`DataError` starting ``who`` naming ``what`` (``"a qrels
    DataFrame"``) with the columns it has, the names accepted and, where the table has as many unnamed columns
    as roles missing, the exact rename (``how``, its ``{mapping}`` filled in); a frame whose query ids are its
    index (``index_name``) is told ``df.reset_index()``, a run's table (a ``rank`` column) that it holds no
    judgements.  Two columns named for one role (``doc`` and ``docno``) are refused naming both, with their
    values in the table's ``first`` row where given, and the ``drop`` (its ``{columns}`` filled in) that keeps
    each: which one holds the ids is not guessed."""
    found: dict[str, list[int]] = {role: [] for role in QRELS_COLUMNS}
    for i, name in enumerate(names):
        role = _QRELS_ROLE.get(" ".join(str(name).split()).casefold())
        if role is not None:
            found[role].append(i)
    given = [str(c) for c in names]
    twice = {role: at for role, at in found.items() if len(at) > 1}
    if twice:
        role, at = next(iter(twice.items()))
        seen = ("" if first is None or len(first) != len(given) else
                " (first row: " + ", ".join(f"{given[i]}={_preview(first[i], 40)}" for i in at) + ")")
        keeps = ", ".join(f"{drop.replace('{columns}', repr([given[j] for j in at if j != i]))} keeps {given[i]!r}"
                          for i in at)
        raise DataError(f"{who}: {what} has {len(at)} columns named as {_ROLE_WORDS[role]} "
                        f"({' and '.join(repr(given[i]) for i in at)}, among {given}){seen}; keep the one that "
                        f"holds the {_ROLE_WORDS[role]} and drop the other{'s' if len(at) > 2 else ''}: {keeps}")
    if all(found.values()):
        if any(" ".join(c.split()).casefold() == "rank" for c in given):
            raise DataError(f"{who}: {what} has columns {given}, a run's (Run.to_pandas: query_id, doc_id, rank, "
                            "score), not judgements; qrels hold one integer grade per judged (query, document)")
        q, d, g = (found[role][0] for role in QRELS_COLUMNS)
        return q, d, g
    missing = [role for role, at in found.items() if not at]
    accepted = "; ".join(f"{_ROLE_WORDS[role]}: {', '.join(names_)}" for role, names_ in QRELS_COLUMNS.items())
    if index_name is not None and " ".join(str(index_name).split()).casefold() in QRELS_COLUMNS["query-id"] \
            and missing == ["query-id"]:
        raise DataError(f"{who}: {what} holds its query ids in its index ({str(index_name)!r}), not in a column "
                        f"(columns {given}); pass df.reset_index()")
    # (the labels themselves, not their strings: pd.read_csv(header=None)'s columns are the integers 0, 1, 2,
    # and a rename {'0': ...} would do nothing)
    unnamed = [c for i, c in enumerate(names) if not any(i in at for at in found.values())]
    if len(unnamed) == len(missing):  # the roles missing, in order, for the columns not named: the exact rename
        mapping = {c: role for c, role in zip(unnamed, missing)}
        holds = " and ".join(f"{c!r} holds the {_ROLE_WORDS[role]}" for c, role in mapping.items())
        fix = f"if {holds}: " + how.replace("{mapping}", repr(mapping))
    else:  # (which column holds what is not to be guessed)
        fix = "rename the column holding each: " + how.replace("{mapping}", "{" + ", ".join(
            f"'<the {_ROLE_WORDS[role]} column>': {role!r}" for role in missing) + "}")
    none = " or ".join(_ROLE_WORDS[role] for role in missing)
    raise DataError(f"{who}: {what} needs a column for each of the query id, the document id and the grade (one "
                    f"row per judgement), got columns {given}, none named as {none} (the names accepted, case "
                    f"aside: {accepted}); {fix}")


def _qrels_rows(qs: list[str], ds: list[str], gs: list[Any], who: str, what: str) -> dict[str, dict[str, Any]]:
    """``{query_id: {doc_id: grade}}`` of a qrels table's aligned columns (ids as strings, grades as given, for
    :func:`check_qrels`); a document judged twice for one query with two grades is a :class:`DataError`."""
    out: dict[str, dict[str, Any]] = {}
    for q, d, g in zip(qs, ds, gs):
        rel = out.setdefault(q, {})
        if d in rel and rel[d] != g:
            raise DataError(f"{who}: {what} judges document {d!r} for query {q!r} twice, {rel[d]!r} and {g!r}")
        rel[d] = g
    return out


def _csv_qrels(path: Path, who: str) -> dict[str, dict[str, Any]]:
    """The judgements of a comma-separated qrels file, its columns read by the header's names
    (:data:`QRELS_COLUMNS`); a file without such a header is a :class:`DataError` saying how to read it."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if any(c.strip() for c in row)]
    except UnicodeDecodeError as e:
        raise DataError(f"{who}: {path}: qrels files are UTF-8 text, got a byte that is not ({e.reason} at byte "
                        f"{e.start})") from None
    if not rows:
        raise DataError(f"{who}: {path}: the CSV qrels file holds no judgements (it is empty)")
    header = [c.strip() for c in rows[0]]
    if not any(_QRELS_ROLE.get(c.casefold()) for c in header):
        raise DataError(f"{who}: {path}: a CSV qrels file is read by its header, which must name its columns (e.g. "
                        f"query-id,corpus-id,score), got first line {header}; for a file without a header: "
                        f"pandas.read_csv(path, names=['query-id', 'corpus-id', 'score']), and pass "
                        f"the frame (to TrainSet or evaluate)")
    q, d, g = _qrels_columns(header, who, f"{path} (a CSV qrels file)",
                             how="pass pandas.read_csv(path).rename(columns={mapping}), or fix the file's header",
                             first=[c.strip() for c in rows[1]] if len(rows) > 1 else None,
                             drop="pandas.read_csv(path).drop(columns={columns}) (passed as qrels)")
    bad = next((n for n, row in enumerate(rows[1:], 2) if len(row) != len(header)), None)
    if bad is not None:
        raise DataError(f"{who}: {path}: row {bad} of the CSV file has {len(rows[bad - 1])} fields, the header "
                        f"{len(header)} ({header})")
    body = rows[1:]
    return _qrels_rows([r[q].strip() for r in body], [r[d].strip() for r in body], [r[g].strip() for r in body],
                       who, str(path))


def as_qrels(qrels: Any, who: str) -> Qrels:
    """``qrels`` as ``{query_id: {doc_id: grade}}`` with string ids and integer grades: what
    :class:`TrainSet` and :func:`~ragkit.eval.evaluate` accept, read one way.

    - a mapping ``{query_id: {doc_id: grade}}`` (:func:`check_qrels`);
    - a pandas ``DataFrame`` with one row per judgement, its columns named as :data:`QRELS_COLUMNS` lists
      (BEIR's ``query-id``, ``corpus-id``, ``score``; ``query_id``, ``doc_id``, ``relevance``; ``qid``,
      ``docno``, ``label``; ...), other columns ignored;
    - the path (``str`` or ``os.PathLike``) of a qrels file: a ``.csv`` file read by its header's names, any
      other by :func:`ragkit.eval.read_qrels` (BEIR's TSV, trec_eval's ``qid 0 docid rel``).

    Anything else, a grade that is no integer (0.5, ``True``) or a column name that is none of those, is a
    :class:`DataError` starting ``who``."""
    read = _qrels_of(qrels, who)
    if not isinstance(read, Mapping):
        raise _not_qrels(read, who, "a DataFrame with one row per judgement, or a qrels file's path")
    return check_qrels(read, who)


def _qrels_of(qrels: Any, who: str = "TrainSet") -> Any:
    """``qrels`` as :func:`check_qrels` reads them (:func:`as_qrels`): a DataFrame or a path as a mapping
    ``{query_id: {doc_id: grade}}``; anything else as given (refused there when no mapping)."""
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(qrels, pd.DataFrame):
        what = "the qrels DataFrame"
        q, d, g = _qrels_columns(list(qrels.columns), who, what, index_name=qrels.index.name,
                                 first=qrels.iloc[0].tolist() if len(qrels) else None)
        # (ids as Queries and Corpus read them: a float column's 1.0 -> "1", a NaN refused naming its row)
        qs, ds = (_as_ids(qrels.iloc[:, i].to_numpy(), f"{who}: {what}'s column {str(qrels.columns[i])!r}").tolist()
                  for i in (q, d))
        return _qrels_rows(qs, ds, qrels.iloc[:, g].tolist(), who, what)
    if isinstance(qrels, (str, os.PathLike)):
        path = Path(qrels)
        if path.suffix.casefold() == ".csv" and path.is_file():
            return _csv_qrels(path, who)
        from ragkit.eval.beir import read_qrels

        try:
            return read_qrels(path)
        except DataError as e:
            first = _first_line(path)
            if first is not None and "," in first and "\t" not in first and " " not in first.strip():
                raise DataError(f"{who}: {e}; the file looks comma-separated (CSV: {first.strip()[:60]!r}): name it "
                                ".csv to have it read by its header, or read it with pandas.read_csv(path) and pass "
                                "the DataFrame") from None
            raise
    return qrels


def _first_line(path: Path) -> str | None:
    """The first non-blank line of the file at ``path`` (its first 64 KiB), or None where it cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16).decode("utf-8", "replace")
    except OSError:
        return None
    return next((line for line in head.splitlines() if line.strip()), None)


@dataclass(eq=False)
class Ranking:
    """The ranked documents of one query, best first.

    Attributes
    ----------
    rows : ndarray of int64, shape (n,)
        Corpus row numbers.
    scores : ndarray of float32, shape (n,)
        Scores, non-increasing.
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
        self.rows = np.asarray(rows, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        if self.rows.ndim != 1 or self.scores.ndim != 1:  # (else: errors far from here, e.g. TopK's or evaluate's)
            flat = self.scores.size == self.rows.size
            raise DataError(f"Ranking: expected rows and scores one-dimensional (one score per row), got rows of "
                            f"shape {self.rows.shape} and scores of shape {self.scores.shape}"
                            + ("; flatten them (e.g. scores.ravel())" if flat else ""))

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
        return self if len(self) <= k else self.take(np.arange(k))

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
    values : dict of str -> list, length n_q each
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
        if isinstance(given, Queries):  # (data.queries("test")): its texts, and its ids unless others are given
            if self.query_ids and list(self.query_ids) != given.ids:
                raise DataError(f"State: query_ids ({some_ids(self.query_ids)}) differ from the ids of the Queries "
                                f"given ({some_ids(given.ids)}); leave query_ids out (the Queries' ids are kept)")
            self.queries, self.query_ids = list(given.texts), list(given.ids)
        else:
            self.queries = _state_texts(given)
        if not self.query_ids:
            self.query_ids = [f"q{i}" for i in range(len(self.queries))]
        if len(self.query_ids) != len(self.queries):
            raise DataError(f"State: {len(self.query_ids)} query ids for {len(self.queries)} queries")

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
        """A shallow copy whose containers can be changed without touching this one."""
        return replace(
            self, queries=list(self.queries), query_ids=list(self.query_ids),
            rankings=None if self.rankings is None else list(self.rankings),
            vectors=dict(self.vectors), values={k: list(v) for k, v in self.values.items()},
            branches=None if self.branches is None else list(self.branches), options=dict(self.options),
        )

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
