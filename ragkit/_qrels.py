"""Relevance judgements (qrels): their grades, and reading and checking them in every form ragkit takes."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ragkit._checks import _PLAIN_IDS, _as_ids, _callable, _id_string, _key_ids, _kind, _preview, check_id_nul
from ragkit.errors import DataError, repeated

#: ``{query_id: {doc_id: relevance}}`` as in BEIR and pytrec_eval.
Qrels = dict[str, dict[str, int]]


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


#: The column names a qrels table (a pandas ``DataFrame``, a ``.csv`` file's header) may give its three columns,
#: compared whitespace and case aside: BEIR's (``query-id``, ``corpus-id``, ``score``), ir_datasets' and
#: :meth:`Run.to_pandas <ragkit.run.Run.to_pandas>`'s (``query_id``, ``doc_id``, ``relevance``), PyTerrier's
#: (``qid``, ``docno``, ``label``), and other common spellings.  (``query``, ``document`` and ``text`` are not
#: among them: they usually hold query and document texts.)
QRELS_COLUMNS: dict[str, tuple[str, ...]] = {
    "query-id": ("query-id", "query_id", "queryid", "qid", "q_id", "topic", "topic-id", "topic_id"),
    "corpus-id": ("corpus-id", "corpus_id", "doc_id", "docid", "doc-id", "docno", "doc", "document-id",
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
