"""Read BEIR's files: a corpus, queries (and query files of other layouts) and qrels, each checked."""

from __future__ import annotations

import codecs
import itertools
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ragkit._files import (
    user_path,
    utf8_lines,
)
from ragkit._qrels import _QRELS_ROLE, _csv_qrels, _qrels_columns
from ragkit.errors import DataError, some_ids
from ragkit.eval._lines import (
    Piped,
    _cr_endings,
    _fix_command,
    _jsonl_blocks,
    _not_found,
    _read_jsonl,
    _refuse_nul,
    _refuse_packed,
    _shown,
)
from ragkit.types import (
    GRADE_MAX,
    GRADE_MIN,
    Corpus,
    Qrels,
    Queries,
    check_qrels,
    grade_range_error,
)

_log = logging.getLogger("ragkit.eval.beir")  # (the logger it used before the split)


def read_corpus(path: str | os.PathLike[str], *, allow_empty: bool = False) -> Corpus:
    """Read a BEIR ``corpus.jsonl`` (a few hundred ms for SciFact's 5,183 documents).

    An empty file is a :class:`DataError` unless ``allow_empty`` (a saved operator whose
    documents were all removed).  A line's ``metadata`` object becomes the corpus's metadata; other top-level
    fields (``"source"`` beside ``"text"``) are not read, and one warning on the ``ragkit`` logger names them and
    the file, as :meth:`Corpus.from_records <ragkit.Corpus.from_records>` warns of the keys it drops."""
    path = user_path(path, "read_corpus: path")
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    metas: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    fields: set[str] = set()  # every record's keys (for the warning naming the fields not read)
    for lines, recs in _jsonl_blocks(path, kept=_CORPUS_KEYS):
        fields.update(*map(dict.keys, recs))  # (in C)
        if _corpus_block(lines, recs, seen, (ids, titles, texts, metas)):
            continue
        for n, rec in zip(lines, recs):  # (a block with something to refuse, or to convert, record by record)
            did = str(rec["_id"])
            if did in seen:
                raise DataError(f"{path}:{n}: duplicate document id {did!r} (first on line {seen[did]})")
            seen[did] = n
            if "text" not in rec and "title" not in rec:  # another layout (Pyserini's 'contents'): not empty
                raise DataError(f"{path}:{n}: document {did!r} has neither a 'text' nor a 'title' field (keys: "
                                f"{sorted(rec)}); a BEIR corpus line is {{\"_id\", \"title\", \"text\"}}")
            ids.append(did)
            titles.append(_text(rec.get("title"), path, n, "title"))
            texts.append(_text(rec.get("text"), path, n, "text"))
            meta = rec.get("metadata")
            if meta is not None and not isinstance(meta, dict):  # dropped without a word before
                raise DataError(f"{path}:{n}: document {did!r} has 'metadata' {str(meta)[:60]!r} "
                                f"({type(meta).__name__}); expected an object of field -> value")
            metas.append(meta or {})
    if not ids and not allow_empty:
        raise DataError(f"{path}: the corpus is empty")
    dropped = sorted(fields - _CORPUS_KEYS)
    if dropped:  # (once per file, as Corpus.from_records warns of the records' keys it drops)
        _log.warning(f"{path}: dropped the documents' fields {', '.join(map(repr, dropped))} (a BEIR corpus line "
                     "holds '_id', 'title', 'text' and optionally 'metadata'); put other fields in its 'metadata' "
                     f"(an object: \"metadata\": {{{json.dumps(dropped[0])}: ...}}) to keep them")
    keys = sorted({k for m in metas if isinstance(m, dict) for k in m})
    meta = {k: np.fromiter((m.get(k) if isinstance(m, dict) else None for m in metas), dtype=object, count=len(metas))
            for k in keys}  # fromiter: equal-length list values stay one column, not a 2-D array
    return Corpus(ids=np.array(ids, dtype=object), texts=np.array(texts, dtype=object),
                  titles=np.array(titles, dtype=object), metadata=meta)


#: the keys of a BEIR corpus line that :func:`read_corpus` reads (others are dropped, with a warning)
_CORPUS_KEYS = frozenset({"_id", "title", "text", "metadata"})


def _corpus_block(lines: Sequence[int], recs: list[dict[str, Any]], seen: dict[str, int],
                  into: tuple[list[str], list[str], list[str], list[dict[str, Any]]]) -> bool:
    """Add the records ``recs`` (on ``lines``) of a corpus file to ``into`` (its ids, titles, texts and metadata
    so far; ``seen``: the line of each id so far) all at once, and say so; ``False``, adding nothing, where some
    record must be looked at alone (a repeated id, a title or text that is missing or no string, metadata that is
    no object), for :func:`read_corpus` to name the first one as it always did.  No Python loop over the records:
    each field is fetched with ``map`` (in C) and checked by the set of its types."""
    get: Callable[[dict[str, Any], str], Any] = dict.get
    dids: list[Any] = list(map(get, recs, itertools.repeat("_id")))
    if set(map(type, dids)) != {str}:
        dids = list(map(str, dids))
    first = dict(zip(dids, lines))
    # (seen.keys(), not seen: given a dict, isdisjoint walks all of it, per block; given a view, the smaller side)
    if len(first) != len(dids) or not first.keys().isdisjoint(seen.keys()):
        return False
    cols: list[list[Any]] = [list(map(get, recs, itertools.repeat(key))) for key in ("title", "text")]
    for col in cols:
        kinds = set(map(type, col))
        if not kinds <= {str, type(None)}:
            return False
        if type(None) in kinds:  # null, or absent: "" (absent both: the record-by-record path says so)
            missing = np.equal(_objects(col), _NONE)
            if not (missing & _holding_none(recs, ("title", "text"))).any():
                col[:] = np.where(missing, "", _objects(col)).tolist()
            else:
                return False
    meta: list[Any] = list(map(get, recs, itertools.repeat("metadata")))
    kinds = set(map(type, meta))
    if not kinds <= {dict, type(None)}:
        return False
    seen.update(first)
    into[0].extend(dids)
    into[1].extend(cols[0])
    into[2].extend(cols[1])
    into[3].extend(meta if kinds == {dict} else itertools.repeat({}, len(meta)) if kinds == {type(None)} else
                   np.where(np.equal(_objects(meta), _NONE), _objects([{}] * len(meta)), _objects(meta)).tolist())
    return True


#: None as a 0-d object array, to compare an object array with elementwise
_NONE = np.array(None, dtype=object)


def _objects(values: list[Any]) -> np.ndarray:
    """``values`` (dicts and None) as a 1-D object array."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _holding_none(recs: list[dict[str, Any]], keys: tuple[str, ...]) -> np.ndarray:
    """Which of ``recs`` hold none of ``keys`` (``(n,)`` bool), each membership tested with ``map`` (in C)."""
    has = np.zeros(len(recs), bool)
    for key in keys:
        has |= np.fromiter(map(dict.__contains__, recs, itertools.repeat(key)), bool, len(recs))
    return ~has


def _text(v: object, path: Path, n: int, key: str) -> str:
    """A corpus record's ``title`` / ``text``: a string, or "" when absent or ``null`` (BEIR files carry null
    titles).  Anything else (a number, ``true``, a list, an object) is a :class:`DataError` naming the line, as
    ``Corpus(texts=[12345])`` refuses it: read as its digits, it would be searched as words no one wrote."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    raise DataError(f"{path}:{n}: {key!r} must be a string, got {type(v).__name__} {str(v)[:60]!r}; expected a "
                    "JSON string (or null, for none)")


#: the keys of a BEIR queries line that :func:`read_queries` reads (others are dropped)
_QUERY_KEYS = frozenset({"_id", "text"})

#: ``(file, size, modification time)`` of the ``queries.jsonl`` files :func:`read_queries` warned of blank queries
#: in: each file is warned of once (``ragkit eval`` of several datasets reads each file twice: at the checks, and
#: again when its corpus is loaded after the others were released)
_BLANK_WARNED: set[tuple[str, int, int]] = set()


def _first_warning(path: Path) -> bool:
    """Whether the blank queries of ``path`` (as it is now: its size and modification time) were not warned of
    yet; it is recorded as warned of."""
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    except OSError:  # (read a moment ago, gone since: warned of as read)
        key = (str(path), -1, -1)
    if key in _BLANK_WARNED:
        return False
    if len(_BLANK_WARNED) > 1000:
        _BLANK_WARNED.clear()
    _BLANK_WARNED.add(key)
    return True


def read_queries(path: str | os.PathLike[str], *, note_blank: bool = True) -> dict[str, str]:
    """Read ``queries.jsonl`` into ``{query_id: text}``.  Queries whose text is blank (``""``, spaces) are
    kept (a dataset is read as it is), with a warning on the ``ragkit`` logger naming how many and the first
    (id and line), once per file (read again unchanged, it is not repeated): such a query finds nothing, or
    documents by chance, and scores accordingly (``ragkit search --queries`` refuses them:
    :func:`read_query_file` reads with ``note_blank=False`` and refuses them itself)."""
    return _read_queries(user_path(path, "read_queries: path"), note_blank=note_blank)


def _read_queries(path: Path, *, note_blank: bool = True, piped: Piped | None = None) -> dict[str, str]:
    """:func:`read_queries` of ``path``, its messages naming ``piped`` (:class:`~ragkit.eval._lines.Piped`) where the
    file holds standard input."""
    out: dict[str, str] = {}
    seen: dict[str, int] = {}
    where = _shown(path, piped)
    for n, rec in _read_jsonl(path, kept=_QUERY_KEYS, piped=piped):
        qid = str(rec["_id"])
        if not isinstance(rec.get("text"), str):
            v = rec.get("text")
            got = ("no 'text' string" if "text" not in rec else "'text' null" if v is None
                   else f"'text' {type(v).__name__} {str(v)[:60]!r}")
            raise DataError(f"{where}:{n}: query {qid!r} has {got}; 'text' must be a string (a JSON string)")
        if qid in seen:
            raise DataError(f"{where}:{n}: duplicate query id {qid!r} (first on line {seen[qid]})")
        seen[qid] = n
        out[qid] = rec["text"]
    if note_blank:
        blank = [q for q, text in out.items() if not text.strip()]
        if blank and _first_warning(path):
            k = len(blank)
            they, them = ("they score", "them") if k > 1 else ("it scores", "it")
            more = f"; {some_ids(blank)}" if k > 1 else ""
            _log.warning(f"{where}:{seen[blank[0]]}: {k} of the {len(out)} queries {'have' if k > 1 else 'has'} a "
                         f"blank text (the first: query {blank[0]!r}{more}); kept, but a blank query finds nothing "
                         f"(or documents by chance), so {they} 0 or by chance; give {them} a text or drop {them} "
                         "from queries.jsonl and the qrels")
    return out


#: the names (case aside) of a file of queries read as JSON Lines whatever it holds; any other is read by its content
#: (:func:`is_jsonl_query_file`)
_JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})


def starts_json_object(data: bytes) -> bool:
    """Whether ``data`` (a file's first bytes, or standard input's) begins with ``{``, or with ``[`` and then
    (blank space aside) ``{``, once a UTF-8 byte-order mark and blank space (blank lines) are set aside: the first
    line of JSON Lines, or a JSON array of objects (read as JSON, it is refused as an array with the ``jq -c '.[]'``
    that converts it), which no query TSV's or plain query line is (a query would not start with a brace; one
    starting with ``[``, ``[draft] ...``, stays a query)."""
    head = data.removeprefix(codecs.BOM_UTF8).lstrip()
    return head[:1] == b"{" or (head[:1] == b"[" and head[1:].lstrip()[:1] == b"{")


def is_jsonl_query_file(path: str | os.PathLike[str]) -> bool:
    """Whether :func:`read_query_file` reads ``path`` as JSON Lines (a BEIR ``queries.jsonl``): named ``.jsonl``,
    ``.ndjson`` or ``.json`` (case aside: ``q.JSONL``), or, whatever its name, its first character that is not blank
    (a UTF-8 byte-order mark aside) is ``{``, or ``[`` followed by ``{`` (a JSON array of objects, refused as such)
    (:func:`starts_json_object`; ``ragkit search --queries -`` reads standard input by the same rule).  Otherwise it
    is a TSV of ``query-id<TAB>text`` or one query per line."""
    path = Path(path)
    if path.suffix.casefold() in _JSONL_SUFFIXES:
        return True
    with open(path, "rb") as f:
        head = b""
        while block := f.read(1 << 16):  # (blank lines before the first query, or after a '[': read on past them)
            head = (head + block).removeprefix(codecs.BOM_UTF8).lstrip()
            if head and (head[:1] != b"[" or head[1:].lstrip()):
                break
    return starts_json_object(head)


#: a line of a query file that begins with an id of digits and a space (``1 0-dimensional biomaterials ...``)
_SPACED_ID = re.compile(r"\d+ +\S")


def read_query_file(path: str | os.PathLike[str]) -> Queries:
    r"""Queries to search from a file: a BEIR ``queries.jsonl`` (``{"_id", "text"}`` per line), a
    TSV of ``query-id<TAB>text`` lines (Pyserini's and MS MARCO's topics), or plain text, one query
    per line, whose ids are the line numbers ("1", "2", ...).  JSON Lines are told by the file's name or content
    (:func:`is_jsonl_query_file`: ``.jsonl``, ``.ndjson``, ``.json``, or a first line that starts with ``{``; one
    that starts a JSON array of objects, ``[{...``, is refused with the command that converts it).
    Blank lines are skipped; a file whose lines mix the last two layouts, a blank query, or a repeated id is a
    :class:`DataError` naming the line, and so is a gzip-compressed or UTF-16 file.  Two cases are read as
    before, with a warning on the ``ragkit`` logger naming the line: a TSV line of more than two columns
    (``id<TAB>text<TAB>answer``: its text keeps the columns after the id, tabs included; tabs at the end of a
    line are dropped), and a file without a tab whose every line starts with digits and a space (``1 what is
    ...``: ids separated by spaces), read one query per line, the numbers staying in the texts.

    Examples
    --------
    >>> from pathlib import Path
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "q.tsv").write_text("q1\tvitamin D and cancer\nq2\tstatins\n")
    >>> read_query_file(folder / "q.tsv").ids
    ['q1', 'q2']
    """
    return _read_query_file(user_path(path, "read_query_file: path"))


def _read_query_file(path: Path, piped: Piped | None = None) -> Queries:
    """:func:`read_query_file` of ``path``; where it holds standard input (``ragkit search --queries -``), ``piped``
    (:class:`~ragkit.eval._lines.Piped`) names the input in the messages and the warnings, and their fixes are in
    pipe form (``cut -f1,2 queries.tsv | ragkit search ... --queries -``)."""
    where = _shown(path, piped)
    if not path.is_file():
        raise DataError(f"{path}: {'not a file' if path.exists() else 'file not found'}; expected a queries.jsonl, "
                        "a TSV of query-id<TAB>text lines or a text file of one query per line")
    _refuse_packed(path, piped=piped)
    if is_jsonl_query_file(path):
        q = _read_queries(path, note_blank=False, piped=piped)  # (a blank query is refused below, naming it)
        ids, texts, lines = list(q), list(q.values()), None
    else:
        ids, texts, lines = [], [], []
        wide: list[tuple[int, int]] = []  # (line, columns) of the lines of more than 2 tab-separated columns
        for n, _, line in utf8_lines(path, "a query file is UTF-8 text", str(where)):
            text = line.rstrip("\r\n")
            if "\r" in text:  # CR-only line endings: every query would be one, its ids and texts run together
                raise _cr_endings(path, n, text, piped=piped)
            if text.strip():
                qid, tab, rest = text.partition("\t")
                if tab and "\t" in rest.rstrip("\t"):  # (trailing tabs end no column)
                    wide.append((n, len(text.rstrip("\t").split("\t"))))
                if tab and "\x00" in qid:  # (named by file and line, as a JSON '_id' is, not as Queries.ids[i])
                    _refuse_nul(where, n, [("query id", qid.strip())])
                ids.append(qid.strip() if tab else str(n))
                texts.append(rest.rstrip("\t") if tab else text)
                lines.append((n, bool(tab)))
        tabbed = {t for _, t in lines}
        if len(tabbed) == 2:
            first = next(n for n, t in lines if t != lines[0][1])
            raise DataError(f"{where}:{first}: {'a' if lines[0][1] else 'no'} tab on line {lines[0][0]} but "
                            f"{'none' if lines[0][1] else 'one'} here; expected query-id<TAB>text on every line (a "
                            "TSV) or on none (one query per line)")
        if wide:  # (kept, as before: a text may hold a tab; Anserini's and Pyserini's TSV topics read column 2 alone)
            (n, k), more = wide[0], len(wide) - 1
            _log.warning(f"{where}:{n}: expected 'id<TAB>text', got {k} tab-separated columns"
                         + (f" (and {more} more line{'s' if more > 1 else ''} of more than 2)" if more else "")
                         + "; the query text keeps the columns after the id, tabs included (Anserini and Pyserini "
                         "read the second column alone); if the others are no part of the query (a gold answer), "
                         f"cut them, e.g. {_fix_command('cut -f1,2', path, piped, 'queries.tsv', 'queries.tsv')}")
        if tabbed == {False} and len(texts) > 1 and all(map(_SPACED_ID.match, texts)):
            _log.warning(f"{where}:{lines[0][0]}: every line starts with a number and a space ({texts[0][:40]!r}), "
                         "which looks like 'id text' separated by spaces; ragkit reads a tab as the separator "
                         "between a query id and its text, so each line was read as one query, numbered by its line "
                         "(1, 2, ...), the number kept in its text; to keep the ids, separate them with a tab, e.g. "
                         + _fix_command("sed 's/ /\\t/'", path, piped, "queries.txt", "queries.tsv"))
    if not texts:
        raise DataError(f"{where}: no query in the {'input' if piped is not None else 'file'}")
    for i, (qid, text) in enumerate(zip(ids, texts)):
        at = f"{where}:{lines[i][0]}" if lines is not None else f"{where}, query {qid!r}"
        if not text.strip():
            raise DataError(f"{at}: the query text is blank; expected a question or keywords")
        if lines is not None and not qid:
            raise DataError(f"{at}: the query id before the tab is empty")
    seen: dict[str, int] = {}
    for i, qid in enumerate(ids):
        if qid in seen:
            raise DataError(f"{where}:{lines[i][0] if lines else i + 1}: query id {qid!r} repeats that of query "
                            f"{seen[qid] + 1}; runs are keyed by query id")
        seen[qid] = i
    return Queries(ids, texts)


def _is_header(row: list[str]) -> bool:
    """A qrels file's first row is a header when its relevance column is not a number."""
    try:
        float(row[-1])
    except ValueError:
        return True
    return False


#: the names of the columns of BEIR's qrels header, in the order :func:`_read_qrels` takes them
_BEIR_COLUMNS = ("query-id", "corpus-id", "score")


def _header_roles(header: list[str]) -> list[str | None]:
    """The role (``"query-id"``, ``"corpus-id"``, ``"score"``) each column of a qrels header names
    (:data:`ragkit.types.QRELS_COLUMNS`, case aside), ``None`` for a name not among them."""
    return [_QRELS_ROLE.get(" ".join(c.split()).casefold()) for c in header]


#: where trec_eval's qrels columns ``qid iter docid rel`` stand (its second column is unused)
_TREC_COLUMNS: tuple[str | None, ...] = ("query-id", None, "corpus-id", "score")


def _named_columns(header: list[str], path: Path, n: int) -> tuple[int, int, int] | None:
    """The positions of the query id, document id and grade columns in the qrels header row ``header`` (line ``n``
    of ``path``, its first non-blank one), read by the names a ``.csv`` file's header or a DataFrame's columns may have
    (:data:`ragkit.types.QRELS_COLUMNS`: ``query-id``, ``qid``, ``docno``, ``label``, ..., case aside); ``None``
    when it has 3 columns whose names, where known, are BEIR's in BEIR's order (BEIR's own ``query-id corpus-id
    score``, ``query_id doc relevance``), or 4 where trec_eval has them (``qid Q0 pid rel``, ``topic iteration docno
    relevance``): read by position, so that trec_eval's 4-column lines under BEIR's header read as they always did;
    ``None`` too when it names no such column
    (:func:`_read_qrels` reads it by position with a warning naming its line).  Any other header naming
    some of the three columns but not all (or one twice) is a :class:`DataError` listing the names accepted."""
    roles = _header_roles(header)
    positional = _BEIR_COLUMNS if len(header) == 3 else _TREC_COLUMNS if len(header) == 4 else None
    if not any(roles) or (positional is not None and all(
            r in (None, positional[i]) for i, r in enumerate(roles))):
        # (3 columns whose names, where known, are BEIR's in BEIR's order, 'query doc relevance', or 4 where
        # trec_eval has them, 'qid Q0 pid rel': read by position, as BEIR and trec_eval read them)
        return None
    return _qrels_columns([c.strip() for c in header], "read_qrels", f"{path} (its header, line {n})",
                          how=f"fix the header on line {n}, renaming its columns {{mapping}}",
                          drop="renaming {columns} in the header (to 'unused': a column not named is not read)")


def read_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read a BEIR qrels TSV (``query-id corpus-id score`` with a header) into ``{qid: {doc_id: rel}}``.

    A line without a tab is split on whitespace, so trec_eval's qrels (``qid 0 docid rel``) read too;
    tabs at the end of a line are ignored, as BEIR's reader ignores them.  The first line (blank lines aside) is a
    header, and skipped, only when its score column is not a number: a qrels file without a header keeps its
    first judgement (BEIR's own loader drops line 1 whatever it holds, so it would lose that judgement).
    A header other than BEIR's own has its columns read by name, by the names a ``.csv`` file or a DataFrame
    may use (:data:`ragkit.types.QRELS_COLUMNS`: ``docno<TAB>qid<TAB>label``, ``query-id corpus-id score
    annotators``), other columns ignored, and every line must have its number of columns (a last column left
    empty, ``q1<TAB>d1<TAB>1<TAB>``, counts); a header naming some of the three but not all is a
    :class:`DataError` listing the names accepted (unless it has 3 columns and the names known stand where BEIR's
    do, ``query doc relevance``, or 4 where trec_eval's do, ``qid Q0 pid rel``: read by position).  A first line
    taken for a header (its last field no number) that names none of them is read as BEIR does, the lines below by
    position, with a warning; where that field is a quoted number (``"1"``: a headerless file with quoted grades)
    it is a :class:`DataError` naming that line.
    Otherwise (BEIR's own header, or none), a line is ``query-id corpus-id score`` (3 columns)
    or trec_eval's ``qid iter docid rel`` (4); in a file whose first judgement line has 3 columns, a 4-column line
    is read as trec_eval's only when its ``iter`` column is ``0`` (or ``Q0``), else it is a :class:`DataError`
    naming both lines (its grade would be read as the document id).  A file with CR-only (old Mac) line endings,
    or gzip-compressed, is a :class:`DataError` saying so.  A ``.csv`` file is read by its header's column names,
    as :class:`~ragkit.TrainSet` and :func:`~ragkit.eval.evaluate` read it (:func:`ragkit.types.as_qrels`:
    ``qid,docid,rel``, ``query-id,corpus-id,score``, ...).
    """
    csv_path = user_path(path, "read_qrels: path")
    if csv_path.suffix.casefold() == ".csv" and csv_path.is_file():
        return check_qrels(_csv_qrels(csv_path, "read_qrels"), "read_qrels")
    return _read_qrels(path)[0]


def _read_qrels(path: str | os.PathLike[str]) -> tuple[Qrels, dict[str, int], dict[tuple[str, str], int]]:
    """:func:`read_qrels`, the line on which each query id is first judged, and the line of each judgement
    ``(query id, document id)`` (for errors and warnings naming it)."""
    path = user_path(path, "read_qrels: path")
    if not path.is_file():
        raise _not_found(path)
    _refuse_packed(path)
    qrels: Qrels = {}
    header: list[str] | None = None  # the header's columns, when they are read by name (:func:`_named_columns`)
    named: tuple[int, int, int] | None = None
    line_of: dict[tuple[str, str], int] = {}
    first_line: dict[str, int] = {}
    first: str | None = None  # the first non-blank line, when read as a header
    head_at = 0  # its line number (0: no non-blank line yet)
    first_row: list[str] | None = None  # its columns
    others = False  # whether a line other than that header holds anything
    width: int | None = None  # the columns of the first judgement line read by position (3 or 4), and its line
    width_at = 0
    # a byte-order mark is not part of the header; a '"' in an id is part of it (no CSV quoting)
    for n, _, line in utf8_lines(path, "qrels files are UTF-8 text"):
        full = line.rstrip("\r\n")  # (its trailing tabs kept: a named header's last column may be left empty)
        text = full.rstrip("\t")
        if "\r" in text:  # one '\r'-separated file read as a single line: its columns would run together
            raise _cr_endings(path, n, text)
        # BEIR's TSV splits on tabs (an id may hold a space); trec_eval's 'qid 0 docid rel' on whitespace.
        # Trailing tabs are no columns: BEIR's csv reader reads 'q1<TAB>d1<TAB>1<TAB>' as q1, d1, 1
        row = text.split("\t") if "\t" in text else text.split()
        # the first non-blank line is a header only when its score is no number (BEIR's loader skips line 1
        # whatever it holds, so a headerless file loses its first judgement there; here it is kept)
        if not text.strip():
            continue
        if not head_at:  # (line 1, or the first under blank lines)
            head_at = n
            if _is_header(row):
                first, first_row = text, row
                named = _named_columns(row, path, n)
                header = row if named is not None else None
                continue
        if first_row is not None and not others and named is None and not any(_header_roles(first_row)):
            _unknown_header(path, first_row, head_at)  # (not dropped silently: said at the first judgement)
        others = True
        if named is not None and header is not None:  # extra columns ('annotators') ignored, by name
            # a row has the header's columns when it does counting its trailing tabs as empty columns or not
            # ('q1<TAB>d1<TAB>1<TAB>' under 'query-id corpus-id score annotators': the annotators left empty)
            if not len(row) <= len(header) <= (full.count("\t") + 1 if "\t" in text else len(row)):
                sep = "tab-separated " if "\t" in text else ""
                raise DataError(f"{path}:{n}: expected {len(header)} {sep}columns {' '.join(header)!r}, as the header "
                                f"on line {head_at} names them, got {len(row)}: {row!r}")
            row += [""] * (len(header) - len(row))  # (the empty columns its trailing tabs end)
            q, d, s = (row[i] for i in named)
        elif len(row) not in (3, 4):
            raise DataError(f"{path}:{n}: expected 3 tab-separated columns 'query-id corpus-id score' (BEIR) "
                            f"or 4 columns 'query-id 0 doc-id relevance' (trec_eval), got {row!r}")
        else:
            if width is None:  # the first judgement line read by position: 3 columns (BEIR) or 4 (trec_eval)
                width, width_at = len(row), n
            elif len(row) == 4 and width == 3 and row[1].casefold() not in ("0", "q0"):
                # a 4-column line among BEIR's 3-column ones is trec_eval's 'qid 0 docid rel' only with its unused
                # iteration column, 0 (Q0 in run files): else its grade would be read as the document id
                # ('q1<TAB>d2<TAB>1<TAB>0' judging document '1')
                raise DataError(f"{path}:{n}: expected 3 columns as on line {width_at} (BEIR's query-id corpus-id "
                                f"score), got 4: {row!r}; a trec_eval line 'query-id 0 doc-id relevance' has 0 in "
                                "its second column: give every line one layout")
            q, d, s = row[0], row[-2], row[-1]
        if "\x00" in text:  # (trec_eval would read the id cut at the NUL)
            _refuse_nul(path, n, (("query id", q), ("document id", d)))
        if "_" in s:  # float() reads '1_0' as 10, trec_eval's atof as 1: neither is told
            raise DataError(f"{path}:{n}: relevance {s!r} holds an underscore, which Python's float() skips (reading "
                            f"{s.replace('_', '')}) and trec_eval reads as the end of the number; expected a plain "
                            "integer grade such as 0, 1 or 2")
        try:
            value = float(s)
            rel = int(value)
        except (ValueError, OverflowError):
            raise DataError(f"{path}:{n}: relevance {s!r} is not a finite number") from None
        if rel != value:  # trec_eval's grades are integers; truncating 0.5 to 0 would drop a judgement
            raise DataError(f"{path}:{n}: relevance {s!r} is not an integer; qrels grade relevance with "
                            "integers (0 not relevant, 1, 2, ... more relevant)")
        if not GRADE_MIN <= rel <= GRADE_MAX:
            raise DataError(grade_range_error(f"{path}:{n}: query {q!r}, document {d!r}", s))
        judged = qrels.setdefault(q, {})
        if d in judged and judged[d] != rel:  # an identical repeated line is harmless
            raise DataError(f"{path}:{n}: conflicting judgements of document {d!r} for query {q!r} "
                            f"({judged[d]} on line {line_of[q, d]}, {rel} here)")
        line_of.setdefault((q, d), n)
        first_line.setdefault(q, n)
        judged[d] = rel
    header_names = {c.strip().lower().replace("_", "-") for c in re.split(r"[\t ,]+", first or "")}
    if not qrels and first is not None and not others and header is None and not header_names & set(_BEIR_COLUMNS):
        # (a one-judgement file whose grade is not the last field, not a header naming BEIR's columns)
        raise DataError(f"{path}: its only line {first[:80]!r} was read as a header (its last field is not a "
                        "number), so the file holds no judgements; expected tab-separated query-id, corpus-id, "
                        "score (BEIR: 'q1<TAB>d1<TAB>1', under a header 'query-id<TAB>corpus-id<TAB>score') or "
                        "trec_eval's 'qid 0 docid rel', the grade an integer in the last column"
                        + ("; a comma-separated file is read by its header when named .csv" if "," in first else ""))
    if not qrels:
        raise DataError(f"{path}: holds no judgements (an empty file, or a header only); expected lines "
                        "'query-id<TAB>corpus-id<TAB>score'")
    return qrels, first_line, line_of


def _unknown_header(path: Path, row: list[str], n: int) -> None:
    """Say what became of a qrels file's first non-blank line (line ``n``, its columns ``row``), taken for a header
    (its last field is no number) that names no qrels column: a :class:`DataError` where its grade is a quoted
    number (``"1"``: a headerless file whose grades are quoted would lose its first judgement), else a warning on
    the ``ragkit`` logger that the lines below are read by position, as BEIR's and trec_eval's readers read them
    (BEIR's loader skips line 1 whatever it holds)."""
    shown = "\t".join(row)[:80]
    last = row[-1].strip()
    if len(last) > 1 and last[0] == last[-1] and last[0] in "\"'" and _is_number(last[1:-1]):
        raise DataError(f"{path}:{n}: line {n} {shown!r}: its grade {last} is quoted, so the line was taken for a "
                        f"header; qrels grades are bare integers (1, not {last}): remove the quotes from the file")
    _log.warning("%s:%d: line %d %r is read as a header (its last field is not a number) naming no qrels column "
                "(ragkit.types.QRELS_COLUMNS); the lines below are read by position, as BEIR's 'query-id "
                "corpus-id score' or trec_eval's 'qid iter docid rel'", path, n, n, shown)


def _is_number(text: str) -> bool:
    """Whether ``text`` reads as a number (``float``)."""
    return not _is_header([text])
