"""Metadata filters: what a ``filter`` may say, how a corpus's metadata columns are coded to answer it
in one pass, and the kind checks that keep ``{"year": "2020"}`` from silently matching nothing where the
field holds numbers.  :meth:`ragkit.types.Corpus.mask` evaluates a filter with these; retrievers apply the
mask inside their search.

A filter is a mapping ``{field: value}`` (equality) or ``{field: [values]}`` (membership), all fields
and-ed; values compare with Python's ``==`` (``1 == 1.0 == True``, ``"2020" != 2020``), and a list-valued
field (tags) matches a value it holds as an element.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal, Mapping, overload

import numpy as np

from ragkit.errors import DataError

if TYPE_CHECKING:
    from ragkit.types import Corpus


def is_missing(value: Any) -> bool:
    """Whether ``value`` marks a missing value: ``None``, a float NaN (pandas' missing value in an
    object column, numpy's too), ``pandas.NA`` or a not-a-time (``pandas.NaT``, numpy's ``NaT``)."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(value != value)
    if isinstance(value, np.datetime64):
        return bool(np.isnat(value))
    pd = sys.modules.get("pandas")
    return pd is not None and (value is getattr(pd, "NA", None) or value is getattr(pd, "NaT", None))


#: a metadata column coded for filters: (code per row, value -> code); for a list-valued column
#: (tags), (code per element, value -> code, row of each element, which rows hold a list); None: not
#: codable.  The value -> code dicts are never changed once made (a cut or grown corpus shares or copies them)
Coded = tuple[np.ndarray, dict[Any, int]] | tuple[np.ndarray, dict[Any, int], np.ndarray, np.ndarray] | None


@overload
def code_column(column: np.ndarray) -> Coded: ...
@overload
def code_column(column: np.ndarray, grow: Coded, n: int) -> Coded | Literal[False]: ...
def code_column(column: np.ndarray, grow: Coded = None, n: int = 0) -> Coded | Literal[False]:
    """Codes of a metadata column for :meth:`Corpus.mask` (one pass, once per column): one code
    per row where every value hashes; else one per element of list / tuple values (a single value
    as one element), with the row of each; ``None`` where an element does not hash either.

    With ``grow`` (the codes of a column of ``n`` rows), the codes of that column with ``column``
    appended, as coding the joined column gives them (a value first seen gets the next code), in one
    pass over the new values (``grow``'s table is copied, never changed); ``False`` where the appended
    values change the column's kind (a list after hashable values only): it is coded again when asked.
    """
    values = column.tolist()
    table: dict[Any, int] = dict(grow[1]) if grow is not None else {}
    if grow is None or len(grow) == 2:
        try:
            codes = np.fromiter((table.setdefault(v, len(table)) for v in values), np.int64, len(values))
        except TypeError:  # an unhashable value (a list) in the column
            if grow is not None:
                return False
            table = {}
        else:
            return (codes if grow is None else np.concatenate([grow[0], codes])), table
    lists = [v if isinstance(v, (list, tuple)) else (v,) for v in values]
    sizes = np.fromiter((len(v) for v in lists), np.int64, len(lists))
    try:
        codes = np.fromiter((table.setdefault(e, len(table)) for v in lists for e in v), np.int64, int(sizes.sum()))
    except TypeError:  # an element that does not hash (a dict, a list of lists)
        return None
    listy = np.fromiter((isinstance(v, list) for v in values), bool, len(values))  # the rows that do not hash
    rows = np.repeat(np.arange(len(values)), sizes)
    if grow is None:
        return codes, table, rows, listy
    return (np.concatenate([grow[0], codes]), table, np.concatenate([grow[2], n + rows]),
            np.concatenate([grow[3], listy]))


def filter_problem(where: Mapping[str, Any]) -> tuple[str | None, str] | None:
    """The first thing ragkit cannot honour in a filter, as ``(field or None, what is wrong)``, or None:
    a field name that is not a string, or a query operator such as ``{"$gte": 2020}`` (which would
    otherwise match nothing, silently)."""
    for key, want in where.items():
        if not isinstance(key, str):
            return None, f"field names are strings, got {key!r}"
        if isinstance(want, Mapping):
            return key, (f"{dict(want)!r} is not supported; a filter value is a value (equality) or a list of "
                         "values (membership)")
        if _holds_nan(want):  # NaN equals nothing, itself included
            shown = repr(want) if "\n" not in repr(want) else f"{type(want).__name__}({filter_values(want)!r:.80})"
            return key, f"{shown} holds NaN, which equals no value (not even NaN): it would match nothing"
    return None


def _holds_nan(want: Any) -> bool:
    """Whether a filter's value ``want`` is NaN or holds one among the values :func:`filter_values` reads from it
    (a list, a numpy array, a pandas Series: numpy floats too).  Told by the dtype where there is one: a float
    array or Series by one ``np.isnan``, one of another dtype than objects (ints, strings, dates)
    holds none, nor does a ``range``; only a list, a set, a tuple, an object array (and what else is iterable) is
    looked at value by value.  An iterator is not read (the filter reads it once)."""
    if isinstance(want, range) or isinstance(want, Iterator):
        return False
    dtype = getattr(want, "dtype", None)
    held = isinstance(want, np.ndarray) or hasattr(want, "to_numpy")  # (a numpy scalar: one value, looked at below)
    if held and isinstance(dtype, np.dtype) and dtype.kind != "O":
        return dtype.kind == "f" and bool(np.isnan(np.asarray(want)).any())
    return any(isinstance(w, (float, np.floating)) and w != w for w in filter_values(want))


class AllOf(tuple[Mapping[str, Any], ...]):
    """Filters a document must pass all of, each read as a filter is (:meth:`Corpus.mask
    <ragkit.types.Corpus.mask>` ANDs their masks): what :func:`all_filters` gives for two filters that name the
    same field, which one mapping cannot say where the field holds lists (``{"tags": "x"}`` and ``{"tags": "y"}``:
    the documents tagged both)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"AllOf({list(self)!r})"


def all_filters(a: Mapping[str, Any] | AllOf, b: Mapping[str, Any] | AllOf) -> dict[str, Any] | AllOf:
    """The filter matching what both ``a`` and ``b`` match, as an operator's own ``filter`` and a call's both
    apply (the AND of their masks): their fields together where no field is in both, else an :class:`AllOf`
    of the two (values are not intersected: ``{"tags": "x"}`` and ``{"tags": "y"}`` match the documents tagged
    both, and a value of another kind than the field's is refused as a filter of its own would be)."""
    parts = [*(a if isinstance(a, AllOf) else (a,)), *(b if isinstance(b, AllOf) else (b,))]
    parts = [p for p in parts if p]  # (an empty filter passes every document)
    if len(parts) < 2:
        return dict(parts[0]) if parts else {}
    keys = [set(p) for p in parts]
    if sum(map(len, keys)) == len(set().union(*keys)):  # no field named twice: one filter
        return {key: want for p in parts for key, want in p.items()}
    return AllOf(parts)


def filter_values(want: Any) -> list[Any]:
    """A filter's value as the list of values it accepts: any collection of values (a list, a set, a
    range, dict keys, a numpy array or pandas Series) means membership; a string or a single value
    means equality."""
    return list(want) if isinstance(want, Iterable) and not isinstance(want, (str, bytes)) else [want]


def check_filter(where: Mapping[str, Any], path: str = "filter") -> None:
    """Raise :class:`DataError` at ``path`` for a filter :func:`filter_problem` refuses."""
    bad = filter_problem(where)
    if bad is not None:
        key, what = bad
        raise DataError(f"{path}.{key}: {what}" if key is not None else f"{path}: {what}")


def _value_kind(v: Any) -> str:
    """The kind of a metadata value a filter compares with ``==``: ``"number"`` for bools, integers and
    floats (Python and numpy: ``1 == 1.0 == True``), ``"str"``, else the type's name (:func:`_type_kind`)."""
    return _type_kind(type(v)) or type(v).__name__


def check_kinds(key: str, values: Mapping[Any, int], wants: list[Any]) -> None:
    """Refuse (:class:`DataError`) a filter on ``key`` none of whose values ``wants`` has the kind
    (:func:`_value_kind`) of any value the field holds (``values``: its distinct values): it could match
    no document whatever the corpus held (``"2001"`` for a field of integers: what a web service gets for
    every parameter), where a value of the right kind simply absent matches none.  ``None`` (no value) is
    no kind on either side."""
    asked = {_value_kind(w) for w in wants if not is_missing(w) and not isinstance(w, (list, tuple))}  # (whole
    # lists: compared with a row's whole list)
    if not asked or any(not is_missing(v) and _value_kind(v) in asked for v in values):  # (stops at the first)
        return
    held = sorted({type(v).__name__ for v in values if not is_missing(v)})  # (NaN, pandas.NA: no value either)
    if not held:  # the field holds no value at all
        return
    w = next(w for w in wants if not is_missing(w) and not isinstance(w, (list, tuple)))
    fix = (f"; give it as a number ({key!r}: {w.strip()})" if isinstance(w, str) and "number" in
           {_value_kind(v) for v in values if not is_missing(v)} and _number_text(w) else "")
    # the example compares the value given with one the field holds: its own spelling where the field has it
    # ('2001' with 2001), else the field's first value (1 with 'a')
    held_values = [v for v in values if not is_missing(v)]
    same = next((v for v in held_values if str(v) == str(w)), held_values[0])
    same = same.item() if isinstance(same, np.generic) else same  # (2001, not np.int64(2001))
    raise DataError(f"filter.{key}: the field holds {' and '.join(held)} values; got {w!r} ({type(w).__name__})"
                    + (f" among {len(wants)} values" if len(wants) > 1 else "") + ", which matches none of them (a "
                    f"filter compares with ==, and {w!r} == {same!r:.60} is false){fix}")


def _type_kind(t: type) -> str | None:
    """The kind of the values of type ``t`` (:func:`_value_kind`); ``None`` for a missing value's type (``None``,
    ``pandas.NA``, ``pandas.NaT``)."""
    if t is type(None) or t.__name__ in ("NAType", "NaTType"):
        return None
    if issubclass(t, (bool, int, float, np.bool_, np.number)):
        return "number"
    return "str" if issubclass(t, str) else t.__name__


def _values_kinds(values: list[Any]) -> set[str]:
    """The kinds (:func:`_value_kind`) of ``values``, as a filter reads them: a list or tuple value (tags)
    by its elements' kinds; a missing value (``None``, NaN, ``pandas.NA``) is no kind.  One pass over the
    values' types (in C); the values themselves are looked at only for a list, or a float beside another kind
    (NaN, pandas' missing value in a column of strings)."""
    types = set(map(type, values))
    if list in types or tuple in types:
        inner = [e for v in values if isinstance(v, (list, tuple)) for e in v]
        values = [v for v in values if not isinstance(v, (list, tuple))] + inner
        types = set(map(type, values))
    kinds = {_type_kind(t) for t in types} - {None}
    if len(kinds) > 1 and any(issubclass(t, (float, np.floating)) for t in types) \
            and all(is_missing(v) for v in values if isinstance(v, (float, np.floating))):
        kinds = {_value_kind(v) for v in values if not is_missing(v)}  # floats all NaN: no number kind
    return {k for k in kinds if k is not None}


def _column_kinds(corpus: "Corpus", key: str) -> set[str]:
    """The kinds of the metadata field ``key`` of ``corpus`` (:func:`_values_kinds`): from its filter codes
    (its distinct values) where a filter coded it, else from the column."""
    column = corpus.metadata[key]
    if column.dtype.kind in "biuf":
        return {"number"} if len(column) and not (column.dtype.kind == "f" and np.isnan(column).all()) else set()
    if column.dtype.kind in "US":
        return {"str"} if len(column) else set()
    coded = corpus._codes.get(key)
    return _values_kinds(list(coded[1]) if coded else column.tolist())


def check_metadata_kinds(new: "Corpus", who: str, held: "Corpus | None" = None) -> None:
    """Refuse (:class:`DataError`) a metadata field of ``new`` holding values of more than one kind
    (:func:`_value_kind`: numbers, bools included; strings; any other type by its name), or of another kind than
    the same field of ``held`` (the documents ``new`` is to be added to): a filter compares with ``==``
    (``"2020" == 2020`` is false), so ``filter={"year": 2020}`` would miss a document whose year is
    ``"2020"``, and a filter value of either kind would pass the check that refuses a kind the field does not
    hold.  The message names the first document of another kind, the key, the kind held and the kind given.
    A missing value (no key: ``None``; NaN; ``pandas.NA``) is allowed in any field; a list value (tags) has the
    kinds of its elements.

    A value a save cannot write (:func:`ragkit.types.unsaveable`: a date, a ``Timestamp``, an infinite number) is
    refused too, naming the document: the index it would join could not be saved while it holds it."""
    from ragkit.types import unsaveable

    bad = unsaveable(new)
    if bad is not None:
        key, row, what = bad
        raise DataError(f"{who}: document {str(new.ids[row])!r}: {what}; refused before indexing, since a save "
                        "of the index could not write it")
    check_added_kinds(new, who, held)


def held_kinds(corpus: "Corpus", key: str) -> frozenset[str]:
    """:func:`_column_kinds` of a field of ``corpus``, cached on the corpus (immutable): an add to a large corpus
    reads its kinds once, not its 1M values at every add (:meth:`ragkit.types.Corpus.concat` carries them over
    to the grown corpus)."""
    cache: dict[str, frozenset[str]] | None = corpus.__dict__.get("_kinds")
    found = cache.get(key) if cache is not None else None
    if found is None:
        found = frozenset(_column_kinds(corpus, key))
        if cache is not None:
            cache[key] = found
    return found


def check_added_kinds(new: "Corpus", who: str, held: "Corpus | None" = None) -> None:
    """The kinds check of :func:`check_metadata_kinds` alone (no check of what a save can write): an operator's
    ``add`` (through :meth:`ragkit.types.Corpus.concat`), before it changes anything.  A field of ``held``
    holding several kinds already (a corpus may be fitted so) takes new values of any of those kinds; the cost
    is the new documents' (``held``'s kinds are cached on it, :func:`held_kinds`)."""
    for key in new.metadata:
        kinds = set(held_kinds(new, key))
        have = set(held_kinds(held, key)) if held is not None and key in held.metadata else set()
        if (kinds <= have) if have else len(kinds) <= 1:
            continue
        values = new.metadata[key].tolist()
        first = None
        if not have:  # the kind of the first value given is the field's
            first = next(i for i, v in enumerate(values) if _values_kinds([v]))
            have = _values_kinds([values[first]])
        row = next(i for i, v in enumerate(values) if not _values_kinds([v]) <= have)
        given = " and ".join(_kind_name(k) for k in sorted(_values_kinds([values[row]])))
        held_as = " and ".join(_kind_name(k, plural=True) for k in sorted(have))
        source = (f"e.g. document {str(new.ids[first])!r}: {values[first]!r:.40}" if first is not None
                  else "in the documents already indexed")
        raise DataError(
            f"{who}: document {str(new.ids[row])!r}: metadata {key!r} is {values[row]!r:.60} ({given}), but the "
            f"field holds {held_as} ({source}); a filter compares with == ('2020' == 2020 is false), so "
            f"filter={{{key!r}: ...}} would find one kind and miss the other: give {key!r} as "
            f"{' or '.join(_kind_name(k) for k in sorted(have))} in every document")


def warn_mixed_kinds(key: str, coded: tuple[Any, ...] | None) -> None:
    """Warn, once per corpus and field (when a filter first codes it), that metadata ``key`` holds values of
    more than one kind (``2020`` and ``"2020"``): a filter compares with ``==``, so it finds one kind and
    misses the other.  Such a corpus loads (a BEIR file may hold it; the LangChain retriever refuses it,
    :func:`check_metadata_kinds`), so the filter is where a user meets it."""
    if coded is None:
        return
    values = list(coded[1])
    kinds = _values_kinds(values)
    if len(kinds) > 1:
        examples = ", ".join(f"{next(v for v in values if k in _values_kinds([v]))!r:.30}" for k in sorted(kinds))
        logging.getLogger("ragkit").warning(
            "filter on metadata %r: the field holds %s (e.g. %s); a filter compares with == ('2020' == 2020 is "
            "false), so it matches the documents of its own value's kind only: give %r one kind in every document",
            key, " and ".join(_kind_name(k, plural=True) for k in sorted(kinds)), examples, key)


def _kind_name(kind: str, plural: bool = False) -> str:
    """A kind of :func:`_value_kind` in words: ``a number`` / ``numbers``, ``a string`` / ``strings``."""
    names = {"number": ("a number", "numbers"), "str": ("a string", "strings")}
    one, many = names.get(kind, (f"a {kind}", f"{kind} values"))
    return many if plural else one


def _number_text(text: str) -> bool:
    """``text`` reads as a number (``"2001"``, ``" 3.5"``)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def hashable(v: Any) -> bool:
    """Whether ``hash(v)`` succeeds."""
    try:
        hash(v)
    except TypeError:
        return False
    return True


def isin(column: np.ndarray, wants: list[Any]) -> np.ndarray:
    """``column[i] == w`` for some ``w`` in ``wants``, with Python's equality (``1 == 1.0 == True``,
    ``"2020" != 2020``) whether one value or a list is given: set membership where the values
    hash (one pass over the column), else one pass per value; a list-valued ``column[i]`` (tags)
    also matches a ``w`` it holds as an element."""
    try:
        wanted = set(wants)
        return np.fromiter((v in wanted for v in column.tolist()), dtype=bool, count=len(column))
    except TypeError:  # an unhashable value (a list) in the column or the filter
        hit = np.zeros(len(column), dtype=bool)
        values = column.tolist()
        for w in wants:  # a list value also matches each of its elements (tags: ["x", "y"] matches "y")
            hit |= np.fromiter((_equal(v, w) or (isinstance(v, (list, tuple)) and any(_equal(e, w) for e in v))
                                for v in values), dtype=bool, count=len(values))
        return hit


def _equal(v: Any, w: Any) -> bool:
    """``v == w`` as one bool; a comparison that broadcasts (a numpy scalar against a list) is no match.  A list
    and a tuple of equal elements are equal (a corpus holds a tuple value as a list, as a save writes it)."""
    if isinstance(v, (list, tuple)) and isinstance(w, (list, tuple)):
        v, w = list(v), list(w)
    try:
        same = v == w
    except Exception:  # noqa: BLE001 - a type whose == raises matches nothing
        return False
    return bool(same) if isinstance(same, (bool, np.bool_)) else False
