"""The checks of ids and texts where they enter ragkit, and the small helpers their messages are written with."""

from __future__ import annotations

import itertools
import math
import re
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ragkit.errors import DataError, InputTypeError
from ragkit.metadata import is_missing


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


def refuse_one_text(values: Any, what: str) -> None:
    """A :class:`DataError` (``what``: where) where ``values``, a list of texts expected, is one ``str`` or ``bytes``,
    whose characters would each be taken for a text (BM25's ``score_matrix("red")`` scored the queries "r", "e",
    "d"): :func:`ids_and_texts` and BM25's tokenizer and query methods refuse it so."""
    if isinstance(values, (str, bytes)):
        raise DataError(f"{what}: expected a list of texts, got one {type(values).__name__} ({values!r:.60}); wrap it "
                        "in a list" + (" (decoded)" if isinstance(values, bytes) else ""))


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
    refuse_one_text(values, what)
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


def int_positions(arr: np.ndarray, what: str, hint: str = "") -> np.ndarray:
    """``arr`` as int64 positions: integers as they are, Python ints in an object array converted; any other
    dtype (str or bytes ids, bools, floats: 1.7 would silently become row 1) a :class:`DataError` that starts
    with ``what`` and names the dtype and a value, then ``hint``.  The dtype half of :func:`_as_rows`, which
    :class:`~ragkit.types.Ranking` shares (a boolean mask is no ranking's rows)."""
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype == object and arr.size:  # Python ints in an object array
        as_list = np.asarray(arr.tolist())
        if as_list.dtype.kind in "iu":
            return as_list.astype(np.int64, copy=False)
    flat = arr.reshape(-1)
    if arr.dtype == object:  # (the first value that is no integer, not the first value: [3, "d4"] names "d4")
        shown = next((x for x in flat.tolist() if isinstance(x, bool) or not isinstance(x, (int, np.integer))),
                     flat[0] if flat.size else None)
    else:
        shown = flat[0].item() if flat.size else None
    such = f" values such as {shown!r}" if flat.size else ""
    raise DataError(f"{what}, got {arr.dtype}{such}{hint}")


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
    rows = int_positions(arr, "rows must be integer positions (or a boolean mask)")
    if rows.max() >= n or rows.min() < -n:
        bad = int(rows.max()) if rows.max() >= n else int(rows.min())
        valid = f"valid: 0..{n - 1}, or -{n}..-1 from the end" if n else "there are none"
        raise DataError(f"row {bad} is out of range for {n} rows ({valid})")
    return rows
