"""BEIR datasets: read the standard folder layout, or download an official archive by name.

Layout (Thakur et al., "BEIR", NeurIPS 2021 Datasets and Benchmarks)::

    <name>/corpus.jsonl        {"_id", "title", "text", "metadata"?} per line
    <name>/queries.jsonl       {"_id", "text"} per line
    <name>/qrels/<split>.tsv   query-id <TAB> corpus-id <TAB> score, with a header line

``load_beir("scifact")`` looks for a folder of that name in ``$RAGKIT_BEIR_DIR``, the
ragkit cache and ``../shared/data/beir``; otherwise it downloads
``{base_url}/{name}.zip`` (``$RAGKIT_BEIR_URL`` overrides the official address) into the
cache and unzips it.  Every error names the file and line.

Only the dataset's files (``corpus.jsonl``, ``queries.jsonl``, ``qrels/*.tsv``, per dataset folder) are unpacked
from an archive, downloaded or local; one whose files would unpack to more than 64 GiB
(``$RAGKIT_BEIR_MAX_UNZIPPED`` changes it: ``200G``), or a member to over 100 times its compressed size (a zip
bomb), is refused before anything is written.  A split is a name (``qrels/<split>.tsv``), never a path.

Some archives hold several datasets, one folder each (CQADupStack: ``cqadupstack/<forum>/``
for 12 forums, reported as the mean of each metric over them).  ``beir_subsets("cqadupstack")``
lists them and ``load_beir("cqadupstack/android")`` loads one, downloading the whole archive
once when it is not found locally.
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
import logging
import lzma
import os
import re
import shutil
import sys
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ragkit._checks import _kind
from ragkit._corpus import _JSONL_BLOCK
from ragkit._files import (
    file_above,
    first_time,
    remove_stale_tempdirs,
    share_like_umask,
    shared_tempdir,
    user_path,
    utf8_lines,
)
from ragkit._qrels import _QRELS_ROLE, _csv_qrels, _qrels_columns
from ragkit.errors import DataError, InputTypeError, ParamError, some_ids
from ragkit.eval.metrics import respelled, respelt_pair
from ragkit.types import (
    GRADE_MAX,
    GRADE_MIN,
    ID_BREAK,
    ID_BREAK_NAMES,
    Corpus,
    Qrels,
    Queries,
    TrainSet,
    check_qrels,
    grade_range_error,
)

_log = logging.getLogger(__name__)

__all__ = ["BeirDataset", "load_beir", "beir_qrels", "beir_subsets", "read_corpus", "read_queries", "read_query_file",
           "read_qrels", "download_beir", "cache_dir", "write_beir"]

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"


class DownloadError(DataError):
    """A BEIR archive's download that failed: the server could not be reached or refused it, the transfer was
    cut short, or what came is no zip archive or a damaged one.  A :class:`DataError` (as before), told apart
    so that ``ragkit`` exits 1 on it (a failure while running, worth trying again), not 2 (bad input).
    ``missing`` is true when the server answered that it has no such archive (HTTP 404, no such file)."""

    missing: bool = False


def cache_dir() -> Path:
    """ragkit's cache folder: ``$RAGKIT_CACHE`` (a leading ``~`` is the home folder) or, where it is unset or empty
    (``RAGKIT_CACHE=``: the working folder before), ``~/.cache/ragkit``."""
    return Path(os.path.expanduser(os.environ.get("RAGKIT_CACHE") or "~/.cache/ragkit"))


_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _check_no_lone_surrogate(rec: dict, path: Path, n: int) -> None:
    for key, value in rec.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise DataError(f"{path}:{n}: field {key!r} holds an unpaired surrogate escape "
                                f"(\\u{ord(value[e.start]):04x} at character {e.start + 1}), which is not text; "
                                "fix or drop that escape") from None


def _json_problem(e: json.JSONDecodeError) -> str:
    """``e``'s message and column: "Expecting ',' delimiter at column 12".  Some messages end in their own
    position already ("Unterminated string starting at": the column is of the string's start)."""
    return f"{e.msg} column {e.colno}" if e.msg.endswith(" at") else f"{e.msg} at column {e.colno}"


def _malformed_line(path: Path, n: int, text: str, e: json.JSONDecodeError) -> DataError:
    """The error for line ``n`` of ``path`` (``text``, its ending stripped) that is no JSON value (``e``); where
    the value runs on past the line, which ends opening an object or array or after a ``,`` or ``:`` (a JSON
    record spread over several lines, pretty-printed: ``{`` alone on line 1), it says how to write one per line."""
    said = f"{path}:{n}: malformed JSON line ({_json_problem(e)})"
    if e.pos >= len(text.rstrip()) and text.rstrip().endswith(("{", "[", ",", ":")):
        said += (": the object does not close on this line, as in a JSON record spread over several lines "
                 f"(pretty-printed); expected JSON Lines, one object per line: convert it, e.g. jq -c . {path.name} "
                 "> fixed.jsonl")
    return DataError(said)


def _cr_endings(path: Path, n: int, text: str) -> DataError:
    """The error for a line (its ending stripped) holding a carriage return: a file with CR-only (old Mac)
    line endings reads as one line, whose records or columns would run together."""
    ext = path.suffix or ".txt"
    return DataError(f"{path}:{n}: a carriage return (\\r) inside the line, at column {text.index(chr(13)) + 1}: the "
                     "file has CR (old Mac) line endings; expected lines ending in \\n (or \\r\\n): convert them, "
                     f"e.g. tr '\\r' '\\n' < old{ext} > new{ext}")


def _refuse_nul(path: str | os.PathLike[str], n: int, named: Sequence[tuple[str, str]]) -> None:
    """Refuse, naming ``path:n``, the first id of ``named`` (``(what, id)`` pairs: ``("query id", "q1")``) holding
    a NUL character: trec_eval, which scores runs, reads ids as C strings that end at a NUL, so two ids differing
    after it would name one query or document.  Called only on a line holding a NUL."""
    for what, value in named:
        if "\x00" in value:
            raise DataError(f"{path}:{n}: {what} {value!r:.60} holds a NUL character ('\\x00') at character "
                            f"{value.index(chr(0)) + 1}; expected an id without one (trec_eval, which scores runs, "
                            "reads ids as C strings that end at a NUL, so two ids differing after it would be one)")


def _gz_hint(path: Path) -> str:
    """``"; found corpus.jsonl.gz beside it: gunzip it ..."`` where the missing file ``path`` is there gzip-compressed
    (BEIR's files are read as plain text), else ``""``."""
    gz = path.with_name(path.name + ".gz")
    return f"; found {gz.name} beside it: gunzip it (gunzip -k {gz}), BEIR files are read uncompressed" \
        if gz.is_file() else ""


def _not_found(path: Path, what: str = "") -> DataError:
    """The error for a file ``path`` that is not there (:func:`_gz_hint`; ``what`` follows)."""
    return DataError(f"{path}: file not found{_gz_hint(path)}{what}")


def _refuse_gzip(path: Path) -> None:
    """Refuse a gzip-compressed ``path`` (it begins with gzip's magic bytes), which would read as "not UTF-8"."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        how = f"gunzip -k {path}" if path.suffix == ".gz" else f"zcat {path} > plain{path.suffix}"
        raise DataError(f"{path}: is gzip-compressed; expected plain UTF-8 text: gunzip it first ({how})")


def _refuse_utf16(path: Path, head: bytes) -> None:
    """Refuse ``path`` when its first bytes ``head`` are a UTF-16 or UTF-32 byte-order mark (a file saved as
    "Unicode" by Windows tools), which would read as "not UTF-8 (byte 0xff ...)"."""
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
                      (b"\xfe\xff", "UTF-16")):
        if head.startswith(bom):
            raise DataError(f"{path}: is {name} text (byte-order mark {bom.hex(' ')}); expected UTF-8: convert it, "
                            f"e.g. iconv -f {name} -t UTF-8 {path} > {path.stem}-utf8{path.suffix}")


def _refuse_packed(path: Path) -> None:
    """Refuse a ``path`` that is gzip-compressed (:func:`_refuse_gzip`) or UTF-16 / UTF-32 text
    (:func:`_refuse_utf16`), naming the encoding and how to convert it, before its lines are read."""
    _refuse_gzip(path)
    with open(path, "rb") as f:
        _refuse_utf16(path, f.read(4))


def _check_id(did: str, path: Path, n: int) -> None:
    """Refuse the ``_id`` on line ``n`` of ``path`` when it is empty or holds a tab, a line feed or a carriage
    return: qrels and run files, whose columns are tab- or space-separated, could not name it; or a NUL
    (:func:`_refuse_nul`)."""
    if "\x00" in did:
        _refuse_nul(path, n, [("'_id'", did)])
    if not did:
        raise DataError(f"{path}:{n}: '_id' is empty; expected a non-empty id (a qrels line or a run file cannot "
                        "name a record without one)")
    hit = ID_BREAK.search(did)
    if hit is not None:
        raise DataError(f"{path}:{n}: '_id' {did!r:.60} holds a {ID_BREAK_NAMES[hit.group()]} (at character "
                        f"{hit.start() + 1}), which would split the columns or lines of the qrels and run files "
                        "naming it; expected an id without tabs or line breaks")


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of each record of the JSON Lines file ``path`` (:func:`_jsonl_blocks`)."""
    for lines, recs in _jsonl_blocks(path):
        yield from zip(lines, recs)


def _jsonl_blocks(path: Path) -> Iterator[tuple[Sequence[int], list[dict[str, Any]]]]:
    """The records of the JSON Lines file ``path`` (objects with an ``_id``, a string or an integer; blank lines
    skipped) with their line numbers, in blocks: :data:`~ragkit._corpus._JSONL_BLOCK` lines decoded and parsed at
    once (:func:`_parse_block`).  A block that fails there (a bad line, a blank one, a BOM past line 1, a surrogate
    escape, ...) is read line by line as before (:func:`_jsonl_line`), one record per block, so that every error is
    the one that line gave, naming the file and the line, and raised before any later line is read."""
    if not path.is_file():
        raise _not_found(path)
    _refuse_packed(path)
    first = True  # no record read yet (a file whose first line opens a JSON array is refused)
    done = 0  # lines read before this block
    with open(path, "rb") as f:
        while raws := list(itertools.islice(f, _JSONL_BLOCK)):
            recs = _parse_block(raws, done == 0)
            if recs is not None:
                first = False
                yield range(done + 1, done + len(raws) + 1), recs
            else:
                for n, raw in enumerate(raws, done + 1):
                    rec = _jsonl_line(path, n, raw, first)
                    if rec is not None:
                        first = False
                        yield (n,), [rec]
            done += len(raws)


#: +1 for a byte that opens a JSON array or object, -1 for one that closes it, 0 for any other byte
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("{"), ord("[")]] = 1
_OPEN[[ord("}"), ord("]")]] = -1
#: the bytes :func:`_lines_close` looks at: brackets, braces, quotes, backslashes and line feeds
_MARKUP = _OPEN != 0
_MARKUP[[ord('"'), ord("\\"), ord("\n")]] = True


def _lines_close(data: bytes) -> bool:
    """Whether every bracket and brace of ``data`` (JSON text the parser accepted, lines of it) that is outside
    a string closes on its own line: no value runs on past a line feed.  In numpy over the bytes (a UTF-8
    continuation byte is never an ASCII one): a quote is a string's start or end unless an odd run of
    backslashes comes before it; what lies between an opening and a closing quote is left out."""
    pos = np.flatnonzero(_MARKUP[np.frombuffer(data, np.uint8)]).astype(np.int32)  # (a few % of the bytes)
    b = np.frombuffer(data, np.uint8)[pos]
    at = np.arange(len(b), dtype=np.int32)
    quotes = np.flatnonzero(b == 34)
    if len(quotes):  # the backslashes right before each quote (in the bytes: adjacent there too)
        last_plain = np.maximum.accumulate(np.where(b == 92, -1, at))
        gap = pos - at  # (equal along a stretch of adjacent bytes)
        start = np.maximum.accumulate(np.where(np.r_[True, gap[1:] != gap[:-1]], at, 0))
        plain_before = np.maximum(last_plain[np.maximum(quotes - 1, 0)], start[quotes] - 1)
        before = np.where(quotes > 0, quotes - 1 - plain_before, 0)
        flip = np.zeros(len(b) + 1, np.int8)
        flip[quotes[before % 2 == 0] + 1] = 1
        inside = (np.cumsum(flip[:-1], dtype=np.int32) & 1).astype(bool)
    else:
        inside = np.zeros(len(b), bool)
    step = np.where(inside, 0, _OPEN[b])
    return not np.cumsum(step, dtype=np.int32)[b == 10].any()


def _parse_block(raws: list[bytes], at_start: bool) -> list[dict[str, Any]] | None:
    """The records of the lines ``raws`` (``at_start``: the file's first lines, whose byte-order mark is dropped),
    parsed at once, or ``None`` where the block must be read line by line (:func:`_jsonl_line`): it is not UTF-8,
    holds a surrogate escape, a blank line, a line that is not one JSON value, or a value that is not an object
    whose ``_id`` is a non-empty string (or an integer) without a tab or line break.  One decode of the block, one
    ``json.loads`` of its lines joined into an array, and numpy passes over its bytes checking that the brackets
    outside strings close at the end of every line (:func:`_lines_close`): no value spans lines, so, the values
    being as many as the lines, each line is one value, as it is when parsed alone."""
    data = b"".join(raws)
    if at_start and data.startswith(codecs.BOM_UTF8):  # (line 1 is read as utf-8-sig)
        data = data[len(codecs.BOM_UTF8):]
    if _SURROGATE.search(data) or b"\\u0000" in data:  # (a NUL, perhaps in an id: refused line by line, at its line)
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    try:
        recs = json.loads("[" + ",".join(lines) + "]")
    except (ValueError, RecursionError):
        return None
    if len(recs) != len(lines) or set(map(type, recs)) != {dict}:
        return None
    if not _lines_close(data):  # a value that runs on past the end of its line
        return None
    ids: list[Any] = list(map(dict.get, recs, itertools.repeat("_id")))
    kinds = set(map(type, ids))
    if not kinds <= {str, int}:
        return None
    named = ids if kinds == {str} else [x for x in ids if type(x) is str]
    if "" in named or ID_BREAK.search("\x00".join(named)):
        return None
    return recs


#: keys that hold a record's id in other layouts than BEIR's '_id' (casefolded, '-' as '_'), for the rename hint
_ID_KEYS = frozenset({"_id", "id", "doc_id", "docid", "docno", "corpus_id", "query_id", "queryid", "qid", "q_id"})


def _jsonl_line(path: Path, n: int, raw: bytes, first: bool) -> dict[str, Any] | None:
    """The record of line ``n`` of ``path`` (its bytes ``raw``; ``first``: no record read before it), ``None`` for
    a blank line; a line that is not UTF-8, not JSON, a JSON array's opening line (the first), no object with an
    ``_id`` that is a string or an integer, a bad ``_id`` (:func:`_check_id`) or a lone surrogate is a
    :class:`DataError` naming ``path:n``."""
    try:
        line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{n}: not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                        "BEIR files are UTF-8 JSON lines") from None
    if not line.strip():
        return None
    if first and line.lstrip().startswith("["):  # '[{...},' per line, pretty-printed, or all on one line
        raise DataError(f"{path}:{n}: this is a JSON array; expected JSON Lines: one object per line "
                        "({\"_id\": ..., ...} on each line, no enclosing [ ]); convert it, e.g. "
                        f"jq -c '.[]' {path.name} > new{path.suffix or '.jsonl'}")
    try:
        rec = json.loads(text := line.rstrip("\r\n"))  # an unclosed last object: its column, not "line 2 column 1"
    except json.JSONDecodeError as e:
        if "\r" in text:  # CR-only line endings: the whole file is one line ("Extra data at column 151")
            raise _cr_endings(path, n, text) from None
        raise _malformed_line(path, n, text, e) from None
    if not isinstance(rec, dict) or "_id" not in rec:
        named = [k for k in rec if k.strip().casefold().replace("-", "_") in _ID_KEYS] if isinstance(rec, dict) else []
        rename = (f"; it has {named[0]!r}: rename that key to '_id' (BEIR's name for the id: "
                  f"{{\"_id\": ..., \"text\": ...}})" if named else "")
        raise DataError(f"{path}:{n}: expected an object with an '_id' field, got {line.strip()[:80]!r}{rename}")
    if not isinstance(rec["_id"], (str, int)) or isinstance(rec["_id"], bool):  # None / {} became 'None'
        raise DataError(f"{path}:{n}: '_id' must be a string (or an integer), got {type(rec['_id']).__name__} "
                        f"{rec['_id']!r:.40}")
    if isinstance(rec["_id"], str):
        _check_id(rec["_id"], path, n)
    if _SURROGATE.search(raw):  # a \ud800-\udfff escape: JSON allows it, no UTF-8 text (or tokenizer) does
        _check_no_lone_surrogate(rec, path, n)
    return rec


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
    for lines, recs in _jsonl_blocks(path):
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
    if len(first) != len(dids) or not first.keys().isdisjoint(seen):
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
    out: dict[str, str] = {}
    seen: dict[str, int] = {}
    path = user_path(path, "read_queries: path")
    for n, rec in _read_jsonl(path):
        qid = str(rec["_id"])
        if not isinstance(rec.get("text"), str):
            v = rec.get("text")
            got = ("no 'text' string" if "text" not in rec else "'text' null" if v is None
                   else f"'text' {type(v).__name__} {str(v)[:60]!r}")
            raise DataError(f"{path}:{n}: query {qid!r} has {got}; 'text' must be a string (a JSON string)")
        if qid in seen:
            raise DataError(f"{path}:{n}: duplicate query id {qid!r} (first on line {seen[qid]})")
        seen[qid] = n
        out[qid] = rec["text"]
    if note_blank:
        blank = [q for q, text in out.items() if not text.strip()]
        if blank and _first_warning(path):
            k = len(blank)
            they, them = ("they score", "them") if k > 1 else ("it scores", "it")
            more = f"; {some_ids(blank)}" if k > 1 else ""
            _log.warning(f"{path}:{seen[blank[0]]}: {k} of the {len(out)} queries {'have' if k > 1 else 'has'} a "
                         f"blank text (the first: query {blank[0]!r}{more}); kept, but a blank query finds nothing "
                         f"(or documents by chance), so {they} 0 or by chance; give {them} a text or drop {them} "
                         "from queries.jsonl and the qrels")
    return out


#: the names (case aside) of a file of queries read as JSON Lines whatever it holds; any other is read by its content
#: (:func:`is_jsonl_query_file`)
_JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})


def starts_json_object(data: bytes) -> bool:
    """Whether ``data`` (a file's first bytes, or standard input's) begins with ``{`` once a UTF-8 byte-order mark
    and blank space (blank lines) are set aside: the first line of JSON Lines, which no query TSV's or plain query
    line is (a query would not start with a brace)."""
    return data.removeprefix(codecs.BOM_UTF8).lstrip()[:1] == b"{"


def is_jsonl_query_file(path: str | os.PathLike[str]) -> bool:
    """Whether :func:`read_query_file` reads ``path`` as JSON Lines (a BEIR ``queries.jsonl``): named ``.jsonl``,
    ``.ndjson`` or ``.json`` (case aside: ``q.JSONL``), or, whatever its name, its first character that is not blank
    (a UTF-8 byte-order mark aside) is ``{`` (:func:`starts_json_object`; ``ragkit search --queries -`` reads
    standard input by the same rule).  Otherwise it is a TSV of ``query-id<TAB>text`` or one query per line."""
    path = Path(path)
    if path.suffix.casefold() in _JSONL_SUFFIXES:
        return True
    with open(path, "rb") as f:
        head = b""
        while block := f.read(1 << 16):  # (blank lines before the first query: read on until one that is not)
            head = (head + block).removeprefix(codecs.BOM_UTF8).lstrip()
            if head:
                break
    return starts_json_object(head)


#: a line of a query file that begins with an id of digits and a space (``1 0-dimensional biomaterials ...``)
_SPACED_ID = re.compile(r"\d+ +\S")


def read_query_file(path: str | os.PathLike[str]) -> Queries:
    """Queries to search from a file: a BEIR ``queries.jsonl`` (``{"_id", "text"}`` per line), a
    TSV of ``query-id<TAB>text`` lines (Pyserini's and MS MARCO's topics), or plain text, one query
    per line, whose ids are the line numbers ("1", "2", ...).  JSON Lines are told by the file's name or content
    (:func:`is_jsonl_query_file`: ``.jsonl``, ``.ndjson``, ``.json``, or a first line that starts with ``{``).
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
    path = user_path(path, "read_query_file: path")
    if not path.is_file():
        raise DataError(f"{path}: {'not a file' if path.exists() else 'file not found'}; expected a queries.jsonl, "
                        "a TSV of query-id<TAB>text lines or a text file of one query per line")
    _refuse_packed(path)
    if is_jsonl_query_file(path):
        q = read_queries(path, note_blank=False)  # (a blank query is refused below, naming it)
        ids, texts, lines = list(q), list(q.values()), None
    else:
        ids, texts, lines = [], [], []
        wide: list[tuple[int, int]] = []  # (line, columns) of the lines of more than 2 tab-separated columns
        for n, _, line in utf8_lines(path, "a query file is UTF-8 text"):
            text = line.rstrip("\r\n")
            if "\r" in text:  # CR-only line endings: every query would be one, its ids and texts run together
                raise _cr_endings(path, n, text)
            if text.strip():
                qid, tab, rest = text.partition("\t")
                if tab and "\t" in rest.rstrip("\t"):  # (trailing tabs end no column)
                    wide.append((n, len(text.rstrip("\t").split("\t"))))
                ids.append(qid.strip() if tab else str(n))
                texts.append(rest.rstrip("\t") if tab else text)
                lines.append((n, bool(tab)))
        tabbed = {t for _, t in lines}
        if len(tabbed) == 2:
            first = next(n for n, t in lines if t != lines[0][1])
            raise DataError(f"{path}:{first}: {'a' if lines[0][1] else 'no'} tab on line {lines[0][0]} but "
                            f"{'none' if lines[0][1] else 'one'} here; expected query-id<TAB>text on every line (a "
                            "TSV) or on none (one query per line)")
        if wide:  # (kept, as before: a text may hold a tab; Anserini's and Pyserini's TSV topics read column 2 alone)
            (n, k), more = wide[0], len(wide) - 1
            _log.warning(f"{path}:{n}: expected 'id<TAB>text', got {k} tab-separated columns"
                         + (f" (and {more} more line{'s' if more > 1 else ''} of more than 2)" if more else "")
                         + "; the query text keeps the columns after the id, tabs included (Anserini and Pyserini "
                         "read the second column alone); if the others are no part of the query (a gold answer), "
                         f"cut them, e.g. cut -f1,2 {path.name} > queries.tsv")
        if tabbed == {False} and len(texts) > 1 and all(map(_SPACED_ID.match, texts)):
            _log.warning(f"{path}:{lines[0][0]}: every line starts with a number and a space ({texts[0][:40]!r}), "
                         "which looks like 'id text' separated by spaces; ragkit reads a tab as the separator "
                         "between a query id and its text, so each line was read as one query, numbered by its line "
                         "(1, 2, ...), the number kept in its text; to keep the ids, separate them with a tab, e.g. "
                         f"sed 's/ /\\t/' {path.name} > queries.tsv")
    if not texts:
        raise DataError(f"{path}: no query in the file")
    for i, (qid, text) in enumerate(zip(ids, texts)):
        where = f"{path}:{lines[i][0]}" if lines is not None else f"{path}, query {qid!r}"
        if not text.strip():
            raise DataError(f"{where}: the query text is blank; expected a question or keywords")
        if lines is not None and not qid:
            raise DataError(f"{where}: the query id before the tab is empty")
    seen: dict[str, int] = {}
    for i, qid in enumerate(ids):
        if qid in seen:
            raise DataError(f"{path}:{lines[i][0] if lines else i + 1}: query id {qid!r} repeats that of query "
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


def _beir_header(header: list[str]) -> bool:
    """Whether a qrels header row is exactly BEIR's ``query-id corpus-id score`` (case, spaces and ``_`` for ``-``
    aside): its rows are read by position, so that trec_eval's 4-column lines under it read as they always did."""
    return tuple(c.strip().lower().replace("_", "-") for c in header) == _BEIR_COLUMNS


def _header_roles(header: list[str]) -> list[str | None]:
    """The role (``"query-id"``, ``"corpus-id"``, ``"score"``) each column of a qrels header names
    (:data:`ragkit.types.QRELS_COLUMNS`, case aside), ``None`` for a name not among them."""
    return [_QRELS_ROLE.get(" ".join(c.split()).casefold()) for c in header]


#: where trec_eval's qrels columns ``qid iter docid rel`` stand (its second column is unused)
_TREC_COLUMNS: tuple[str | None, ...] = ("query-id", None, "corpus-id", "score")


def _named_columns(header: list[str], path: Path) -> tuple[int, int, int] | None:
    """The positions of the query id, document id and grade columns in the qrels header row ``header`` (line 1 of
    ``path``), read by the names a ``.csv`` file's header or a DataFrame's columns may have
    (:data:`ragkit.types.QRELS_COLUMNS`: ``query-id``, ``qid``, ``docno``, ``label``, ..., case aside); ``None``
    when it is exactly BEIR's ``query-id corpus-id score`` (:func:`_beir_header`), or 3 columns whose names, where
    known, are BEIR's in BEIR's order (``query doc relevance``), or 4 where trec_eval has them (``qid Q0 pid rel``,
    ``topic iteration docno relevance``): read by position; ``None`` too when it names no such column
    (:func:`_read_qrels` reads it by position with a warning naming line 1).  Any other header naming
    some of the three columns but not all (or one twice) is a :class:`DataError` listing the names accepted."""
    roles = _header_roles(header)
    positional = _BEIR_COLUMNS if len(header) == 3 else _TREC_COLUMNS if len(header) == 4 else None
    if _beir_header(header) or not any(roles) or (positional is not None and all(
            r in (None, positional[i]) for i, r in enumerate(roles))):
        # (3 columns whose names, where known, are BEIR's in BEIR's order, 'query doc relevance', or 4 where
        # trec_eval has them, 'qid Q0 pid rel': read by position, as BEIR and trec_eval read them)
        return None
    return _qrels_columns([c.strip() for c in header], "read_qrels", f"{path} (its header, line 1)",
                          how="fix the header on line 1, renaming its columns {mapping}",
                          drop="renaming {columns} in the header (to 'unused': a column not named is not read)")


def read_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read a BEIR qrels TSV (``query-id corpus-id score`` with a header) into ``{qid: {doc_id: rel}}``.

    A line without a tab is split on whitespace, so trec_eval's qrels (``qid 0 docid rel``) read too;
    tabs at the end of a line are ignored, as BEIR's reader ignores them.  The first line is a header,
    and skipped, only when its score column is not a number: a qrels file without a header keeps its
    first judgement (BEIR's own loader drops line 1 whatever it holds, so it would lose that judgement).
    A header other than BEIR's own has its columns read by name, by the names a ``.csv`` file or a DataFrame
    may use (:data:`ragkit.types.QRELS_COLUMNS`: ``docno<TAB>qid<TAB>label``, ``query-id corpus-id score
    annotators``), other columns ignored, and every line must have its number of columns (a last column left
    empty, ``q1<TAB>d1<TAB>1<TAB>``, counts); a header naming some of the three but not all is a
    :class:`DataError` listing the names accepted (unless it has 3 columns and the names known stand where BEIR's
    do, ``query doc relevance``, or 4 where trec_eval's do, ``qid Q0 pid rel``: read by position).  A line 1 taken
    for a header (its last field no number) that names none of them is read as BEIR does, the lines below by
    position, with a warning; where that field is a quoted number (``"1"``: a headerless file with quoted grades)
    it is a :class:`DataError` naming line 1.
    Otherwise (BEIR's own header, or none), a line is ``query-id corpus-id score`` (3 columns)
    or trec_eval's ``qid iter docid rel`` (4).  A file with CR-only (old Mac) line endings, or gzip-compressed, is
    a :class:`DataError` saying so.  A ``.csv`` file is read by its header's column names, as
    :class:`~ragkit.TrainSet` and :func:`~ragkit.eval.evaluate` read it (:func:`ragkit.types.as_qrels`:
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
    header: list[str] | None = None  # line 1 when it names BEIR's columns, read by name
    named: tuple[int, int, int] | None = None
    line_of: dict[tuple[str, str], int] = {}
    first_line: dict[str, int] = {}
    first: str | None = None  # line 1, when read as a header
    first_row: list[str] | None = None  # its columns
    others = False  # whether a line other than that header holds anything
    # a byte-order mark is not part of the header; a '"' in an id is part of it (no CSV quoting)
    for n, _, line in utf8_lines(path, "qrels files are UTF-8 text"):
        full = line.rstrip("\r\n")  # (its trailing tabs kept: a named header's last column may be left empty)
        text = full.rstrip("\t")
        if "\r" in text:  # one '\r'-separated file read as a single line: its columns would run together
            raise _cr_endings(path, n, text)
        # BEIR's TSV splits on tabs (an id may hold a space); trec_eval's 'qid 0 docid rel' on whitespace.
        # Trailing tabs are no columns: BEIR's csv reader reads 'q1<TAB>d1<TAB>1<TAB>' as q1, d1, 1
        row = text.split("\t") if "\t" in text else text.split()
        # line 1 is a header only when its score is no number (BEIR's loader skips line 1 whatever it holds,
        # so a headerless file loses its first judgement there; here it is kept)
        if not text.strip():
            continue
        if n == 1 and _is_header(row):
            first, first_row = text, row
            named = _named_columns(row, path)
            header = row if named is not None else None
            continue
        if first_row is not None and not others and named is None and not any(_header_roles(first_row)):
            _unknown_header(path, first_row)  # (line 1 not dropped silently: said at the first judgement)
        others = True
        if named is not None and header is not None:  # extra columns ('annotators') ignored, by name
            # a row has the header's columns when it does counting its trailing tabs as empty columns or not
            # ('q1<TAB>d1<TAB>1<TAB>' under 'query-id corpus-id score annotators': the annotators left empty)
            if not len(row) <= len(header) <= (full.count("\t") + 1 if "\t" in text else len(row)):
                sep = "tab-separated " if "\t" in text else ""
                raise DataError(f"{path}:{n}: expected {len(header)} {sep}columns {' '.join(header)!r}, as the header "
                                f"on line 1 names them, got {len(row)}: {row!r}")
            row += [""] * (len(header) - len(row))  # (the empty columns its trailing tabs end)
            q, d, s = (row[i] for i in named)
        elif len(row) not in (3, 4):
            raise DataError(f"{path}:{n}: expected 3 tab-separated columns 'query-id corpus-id score' (BEIR) "
                            f"or 4 columns 'query-id 0 doc-id relevance' (trec_eval), got {row!r}")
        else:
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


def _unknown_header(path: Path, row: list[str]) -> None:
    """Say what became of a qrels file's line 1 (its columns ``row``), taken for a header (its last field is no
    number) that names no qrels column: a :class:`DataError` where its grade is a quoted number (``"1"``: a
    headerless file whose grades are quoted would lose its first judgement), else a warning on the ``ragkit``
    logger that the lines below are read by position, as BEIR's and trec_eval's readers read them (BEIR's loader
    skips line 1 whatever it holds)."""
    shown = "\t".join(row)[:80]
    last = row[-1].strip()
    if len(last) > 1 and last[0] == last[-1] and last[0] in "\"'" and _is_number(last[1:-1]):
        raise DataError(f"{path}:1: line 1 {shown!r}: its grade {last} is quoted, so the line was taken for a "
                        f"header; qrels grades are bare integers (1, not {last}): remove the quotes from the file")
    _log.warning("%s:1: line 1 %r is read as a header (its last field is not a number) naming no qrels column "
                "(ragkit.types.QRELS_COLUMNS); the lines below are read by position, as BEIR's 'query-id "
                "corpus-id score' or trec_eval's 'qid iter docid rel'", path, shown)


def _is_number(text: str) -> bool:
    """Whether ``text`` reads as a number (``float``)."""
    return not _is_header([text])


@dataclass
class BeirDataset:
    """A BEIR dataset folder: the corpus, and queries and qrels per split.

    ``queries(split)`` returns only the queries judged in that split, in file order.

    Parameters
    ----------
    path : Path
        The dataset's folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
    corpus : Corpus
        Its documents.  :func:`load_beir` builds both, reading the query texts too; a dataset built
        here reads ``path / "queries.jsonl"`` when its queries are first asked for.
    """

    path: Path
    corpus: Corpus
    # {query id: text} of queries.jsonl (load_beir reads it; None: read when first asked for)
    _queries: dict[str, str] | None = field(init=False, repr=False, default=None)
    _warned: set[str] = field(init=False, repr=False, default_factory=set)  # splits whose unknown judged docs were said

    @property
    def name(self) -> str:
        """The dataset's name: its folder's (``"scifact"``)."""
        return self.path.resolve().name  # ("." names the folder it is)

    @property
    def splits(self) -> list[str]:
        """The splits that have judgements (``qrels/<split>.tsv``), sorted: ``["dev", "test", "train"]``."""
        return sorted(p.stem for p in (self.path / "qrels").glob("*.tsv"))

    def qrels(self, split: str = "test") -> Qrels:
        """Judgements of ``split``.  A query id that ``queries.jsonl`` lacks is a :class:`DataError`
        (that query could not be searched).  A judged document that ``corpus.jsonl`` lacks is kept,
        as BEIR and pytrec_eval keep it: no run can retrieve it, so it counts as not found (it
        lowers recall and the ideal DCG holds it), and a warning on the ``ragkit`` logger says how
        many there are (official ArguAna judges 1 such document), and how many of them are graded 0 (not
        relevant: they change no score)."""
        path = _qrels_file(self.path, split)
        qrels = read_qrels(path)
        texts = self._query_texts()
        bad_q = [q for q in qrels if q not in texts]
        if bad_q:  # (qrels keep the order queries are first judged in: bad_q[0] is the first offending row)
            n, where = len(bad_q), f"{path}:{_read_qrels(path)[1][bad_q[0]]}"  # (its line: read again, to say)
            which = (f"query id {bad_q[0]!r}, judged on this line, is" if n == 1 else
                     f"{n} judged query ids (the first, {bad_q[0]!r}, on this line) are")
            raise DataError(f"{where}: {which} not in {self.path / 'queries.jsonl'}; expected every query the qrels "
                            "judge to be there (a query without its text cannot be searched)"
                            + _respelt_queries(bad_q, texts))
        bad_d = self.unknown_judged(qrels)
        if bad_d and split not in self._warned:  # (queries(split) reads them too: said once per split)
            self._warned.add(split)
            rel = [(q, d) for q, d in bad_d if qrels[q][d] > 0]  # (one graded 0 changes no score, found or not)
            (q, d), n, r = (rel or bad_d)[0], len(bad_d), len(rel)
            docs = f"{n} judged document{'s are' if n > 1 else ' is'} not in corpus.jsonl"
            eg = f"e.g. {d!r}, judged for query {q!r}"
            they = "they count" if r > 1 else "it counts"
            if r == n:
                said = f"{docs} ({eg}); kept, as BEIR keeps them: no run can retrieve {'them' if n > 1 else 'it'}, so"
            elif r == 0:
                said = (f"{docs} ({eg}), {'all ' if n > 1 else ''}graded 0 (not relevant), so "
                        f"{'they change' if n > 1 else 'it changes'} no score; kept, as BEIR keeps them")
            else:
                said = (f"{docs}: {r} graded 1 or more ({eg}) and {n - r} graded 0 (not relevant, which change"
                        f"{'' if n - r > 1 else 's'} no score); kept, as BEIR keeps them: no run can retrieve the {r} "
                        "graded 1 or more, so")
            line = _read_qrels(path)[2].get((q, d))  # (its line: read again, to say; once per split)
            _log.warning(f"{path}: {said}" + (f" {they} as not found" if r else "")
                         + (f"; {d!r} is judged for query {q!r} on line {line} of {path.name}" if line else "")
                         + self._respelt_docs([d for _, d in (rel or bad_d)]))
        return qrels

    def _respelt_docs(self, unknown: list[str]) -> str:
        """``"; is '14717500' meant? ('14717500 ' names ...)"``: the clause on the judged document ids ``unknown``
        (which the corpus lacks) that name a document of the corpus once leading zeros, case and surrounding
        spaces are set aside (:func:`~ragkit.eval.metrics.respelled`), ``""`` when none does.  The corpus's ids are
        looked through only when it holds at most :data:`_RESPELL_MAX` documents (a warning's hint is not worth
        seconds)."""
        if len(self.corpus) > _RESPELL_MAX:
            return ""
        pairs = respelled(list(dict.fromkeys(unknown)), self.corpus.ids.tolist())
        if not pairs:
            return ""
        (u, j), k = pairs[0], len(pairs)
        return (f"; is {j!r} meant? ({respelt_pair(u, j, 'is', ' in corpus.jsonl').rstrip('?')}: {k} of the "
                f"judged ids the corpus lacks name{'' if k > 1 else 's'} a document of corpus.jsonl once leading "
                "zeros, case and spaces are set aside; write the qrels' document ids as corpus.jsonl does)")

    def unknown_judged(self, qrels: Mapping[str, Mapping[str, int]]) -> list[tuple[str, str]]:
        """``(query id, document id)`` of every judgement in ``qrels`` (any grade) whose document the
        corpus lacks, in qrels order."""
        lut = self.corpus._lookup()
        return [(q, d) for q, rel in qrels.items() for d in rel if d not in lut]

    def queries(self, split: str = "test") -> Queries:
        """The queries judged in ``split`` (:meth:`qrels`), in ``queries.jsonl`` order: a query no judgement
        of the split names is left out (BEIR scores only judged queries).  A split the folder lacks is a
        :class:`DataError` naming those it has."""
        judged = self.qrels(split)
        texts = self._query_texts()
        ids = [q for q in texts if q in judged]
        return Queries(ids, [texts[q] for q in ids])

    def _query_texts(self) -> dict[str, str]:
        """``{query id: text}`` of ``queries.jsonl``, read once (:func:`load_beir` reads it as it loads)."""
        if self._queries is None:
            self._queries = read_queries(self.path / "queries.jsonl")
        return self._queries

    def train_set(self, split: str = "train", *, allow_test: bool = False) -> TrainSet:
        """The judged queries of ``split`` as a :class:`TrainSet` for ``fit(corpus, train=...)``.

        The test split (``qrels/test.tsv``, however it is reached: a link to it under another name too) is a
        :class:`ParamError` (learning from the queries a score is reported on inflates it; ``ragkit eval
        --train-split test`` and ``ragkit train --split test`` refuse it too) unless ``allow_test=True`` says so
        on purpose.  A split is a name, never a path (:func:`check_split_name`)."""
        path = _qrels_file(self.path, split)
        if not allow_test and is_test_qrels(self.path, path):
            how = "" if split == "test" else f" (its qrels file {path} is qrels/test.tsv)"
            raise ParamError(f"train_set: split {split!r}{how} holds the queries BEIR scores are reported on; learning "
                             "from them inflates those scores (ragkit eval --train-split and ragkit train refuse it "
                             f"too). Learn from another split ({self._other_splits()}), or pass allow_test=True to "
                             "train on the test queries on purpose", "train_set.split")
        return TrainSet(self.queries(split), self.qrels(split))

    def _other_splits(self) -> str:
        """The splits other than ``test``, for an error message: ``this dataset has 'dev', 'train'``."""
        others = [s for s in self.splits if not is_test_qrels(self.path, self.path / "qrels" / f"{s}.tsv")]
        return f"this dataset has {', '.join(map(repr, others))}" if others else "this dataset has none but test"


#: the most documents a corpus may hold for :meth:`BeirDataset.qrels`'s warning of judged documents it lacks to
#: look for them spelled otherwise among its ids (a Python pass over them: about 1 s per million)
_RESPELL_MAX = 2_000_000


def _respelt_queries(judged: list[str], queries: Mapping[str, str]) -> str:
    """``"; '1' is '0001' in queries.jsonl? (...)"``: the clause on the ``judged`` query ids (of a qrels file) that
    name a query of ``queries`` once leading zeros, case and spaces are set aside (:func:`respelled`, as run
    files' ids are hinted at), ``""`` when none does."""
    pairs = respelled(judged, queries)
    if not pairs:
        return ""
    (u, j), k = pairs[0], len(pairs)
    return (f"; {u!r} is {j!r} in queries.jsonl? ({k} of the {len(judged)} ids name{'' if k > 1 else 's'} a query of "
            "queries.jsonl once leading zeros, case and spaces are set aside; write the qrels' query ids as "
            "queries.jsonl does)")


def _line_of_id(path: Path, wanted: str) -> int | None:
    """The line of ``path`` (a JSON Lines file of ``_id`` records, or a query TSV) whose id is ``wanted``, ``None``
    when none is (or the file cannot be read); for an error only: the file is read again."""
    try:
        if path.suffix.casefold() != ".tsv" and is_jsonl_query_file(path):
            return next((n for n, rec in _read_jsonl(path) if str(rec["_id"]) == wanted), None)
        return next((n for n, _, line in utf8_lines(path, "") if line.partition("\t")[0].strip() == wanted), None)
    except (OSError, DataError):
        return None


def check_run_ids(run: str, ids: Sequence[str], what: str, source: str | os.PathLike[str], *,
                  lookup: Path | None = None, fix: str | None = None) -> None:
    """Refuse, before any fit or search, an id of ``ids`` (``what``: ``"document id"``, ``"query id"``, read from
    ``source``: ``corpus.jsonl``, a ``--queries`` file, an index's corpus) that the TREC run file ``run`` (the
    option writing it: ``"--run t.run"``) could not hold: empty, or holding whitespace, which would split the
    file's columns.  One regex pass over the ids joined (:func:`ragkit.run.check_trec_ids`'s); only an id that
    fails it is looked for in ``lookup`` (a JSON Lines file or TSV), for the message to name its line.  ``fix``:
    how to mend it, when not by writing the id without whitespace in ``lookup`` (or ``source``)."""
    from ragkit.run import _unwritable

    ids = ids if isinstance(ids, list) else list(ids)
    bad = _unwritable(ids, "\x00".join(ids))
    if bad is None:
        return
    line = _line_of_id(lookup, bad) if lookup is not None and lookup.is_file() else None
    where = f"{lookup}:{line}" if line is not None else os.fspath(source)
    if not bad:
        why = "is empty"
    else:
        at = next((i for i, c in enumerate(bad) if c.isspace()), 0)
        why = (f"holds whitespace ({bad[at]!r} at character {at + 1} of {len(bad)}"
               + (", its end" if at == len(bad) - 1 else ", its start" if at == 0 else "") + ")")
    raise DataError(f"{where}: {run}: cannot write a TREC run file: {what} {bad!r} {why}, which would break the "
                    "file's columns (separated by whitespace); refused before any work: "
                    + (fix or f"write the id without whitespace in {lookup.name if lookup is not None else source}")
                    + ", or leave out --run (-o writes JSON, which holds any id)")


def is_test_qrels(folder: Path, qrels_file: Path) -> bool:
    """Whether ``qrels_file`` is the test split's judgements of the dataset ``folder`` (``qrels/test.tsv``):
    the same file, however it is named (a link, another spelling of the path), so that no split name
    reaches the test queries for training."""
    test = folder / "qrels" / "test.tsv"
    try:
        return test.is_file() and os.path.samefile(qrels_file, test)
    except OSError:
        return False


#: a split's name: the stem of ``qrels/<split>.tsv``, never a path
_SPLIT_NAME = re.compile(r"[^/\\.\x00][^/\\\x00]*")


def check_split_name(split: object, where: str, folder: Path | None = None) -> str:
    """``split`` when it names a split (``qrels/<split>.tsv``): a non-empty string without ``/``, ``\\`` or a NUL
    that does not begin with ``.``; else a :class:`DataError` starting with ``where`` that says what was given,
    what is expected and, when ``folder`` (a dataset folder) is given, the splits it has.  Every split
    ``load_beir``'s dataset, :func:`beir_qrels`, :func:`write_beir` and ``ragkit eval`` / ``train`` /
    ``compare`` take passes here: ``'./test'`` or ``'../qrels/test'`` would otherwise read the test split
    under another name."""
    if isinstance(split, str) and _SPLIT_NAME.fullmatch(split):
        return split
    have = ""
    if folder is not None and (folder / "qrels").is_dir():
        have = f"; the splits of {folder} are {sorted(p.stem for p in (folder / 'qrels').glob('*.tsv'))}"
    what = f"split name {split!r}" if isinstance(split, str) else f"split {type(split).__name__} {split!r:.60}"
    raise DataError(f"{where}: {what} is not a file name; a split names the judgements qrels/<split>.tsv of a "
                    "dataset, not a path: expected a name such as 'train', 'dev' or 'test' (no '/', '\\' or "
                    f"leading '.'){have}")


#: what a file name may not hold on Windows (NTFS, FAT): ``dev:v2.tsv`` would write the stream ``v2.tsv`` of a
#: file ``dev`` there (a trailing dot or space, which Windows drops, never ends the name ``qrels/<split>.tsv``)
_NOT_IN_WINDOWS_NAMES = re.compile(r'[:*?"<>|\x01-\x1f]')
#: the device names Windows reserves, whatever the extension (``con.tsv`` is the console)
_WINDOWS_DEVICES = frozenset({"con", "prn", "aux", "nul", *(f"{d}{i}" for d in ("com", "lpt") for i in range(1, 10))})


def _check_portable_splits(splits: Sequence[str]) -> None:
    """Refuse (:class:`DataError`, before anything is written) split names a dataset written by :func:`write_beir`
    could not keep on every system its folder may be copied to: two equal but for case (``test`` and ``Test``:
    one file ``qrels/test.tsv`` on Windows' and macOS's file systems, the second overwriting the first), a
    character Windows refuses in a file name (``: * ? " < > |``, a control character), or a name Windows
    reserves for a device (``con``, ``nul``, ``com1``, ...)."""
    import unicodedata

    seen: dict[str, str] = {}
    for split in splits:
        bad = _NOT_IN_WINDOWS_NAMES.search(split)
        if bad is not None:
            if bad.group() == ":":
                what = (f"holds ':', which Windows reads in a file name as naming a stream of another file "
                        f"(qrels/{split}.tsv would be a stream of the file qrels/{split.split(':')[0]})")
            else:
                what = f"holds {bad.group()!r}, which a file name cannot hold on Windows"
            raise DataError(f"write_beir: split name {split!r} {what}; expected a name that is a file name on every "
                            "system (letters, digits, '-', '_'), such as 'dev_v2'")
        if split.split(".")[0].lower() in _WINDOWS_DEVICES:
            raise DataError(f"write_beir: split name {split!r} is a device name on Windows (qrels/{split}.tsv "
                            "names the device there, not a file); expected another name, such as 'dev' or 'test'")
        other = seen.setdefault(unicodedata.normalize("NFC", split).lower(), split)
        if other != split:
            raise DataError(f"write_beir: split names {other!r} and {split!r} differ only in case (or in how their "
                            "accents are encoded); on Windows' and "
                            f"macOS's file systems qrels/{other}.tsv and qrels/{split}.tsv are one file (the second "
                            "would overwrite the first): give them names that differ otherwise")


def _qrels_file(folder: Path, split: str) -> Path:
    """``folder/qrels/<split>.tsv``; a split that is no name (:func:`check_split_name`), or one the folder
    lacks, is a :class:`DataError` naming those it has."""
    check_split_name(split, str(folder / "qrels"), folder)
    path = folder / "qrels" / f"{split}.tsv"
    if not path.is_file():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        other = sorted(p.name for p in (folder / "qrels").iterdir() if p.stem == split and p.is_file()
                       and p.suffix.casefold() not in (".tsv", ".gz"))
        found = (f"; found qrels/{other[0]}, but a split's judgements are read from qrels/<split>.tsv: rename "
                 "a tab-separated file, or read it with ragkit.eval.read_qrels (a .csv by its header) and write "
                 f"the folder with ragkit.eval.write_beir(folder, corpus, queries, {{{split!r}: qrels}})"
                 if other else "")
        raise DataError(f"{path}: no qrels for split {split!r}{_gz_hint(path)}{found}; available splits: {splits}")
    return path


def _check_split_qrels(qrels: Any) -> None:
    """Refuse (an :class:`InputTypeError` for :func:`write_beir`) ``qrels`` that are no mapping
    ``{split: {query_id: {doc_id: grade}}}``; flat qrels (``{query_id: {doc_id: grade}}``, what
    :func:`read_qrels` returns) are told to be wrapped in a split."""
    flat = ""
    if isinstance(qrels, Mapping):
        bad = next(((s, rel) for s, rel in qrels.items() if not isinstance(rel, Mapping)
                    or any(not isinstance(j, Mapping) for j in rel.values())), None)
        if bad is None:
            return
        if isinstance(bad[1], Mapping):  # {query: {doc: grade}}: one level short
            flat = ' (flat qrels: pass {"test": qrels})'
    raise InputTypeError("write_beir: qrels: expected {split: {query_id: {doc_id: grade}}}, got "
                         f"{_kind(qrels)}{flat}")


def write_beir(folder: str | os.PathLike[str], corpus: Corpus, queries: Mapping[str, str] | Queries,
               qrels: Mapping[str, Mapping[str, Mapping[str, int]]]) -> Path:
    """Write a BEIR folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` per split.

    For slices of a dataset, or your own judged queries in the layout every BEIR tool reads.
    Written under a temporary name and renamed into place; an existing ``folder`` is refused.  What
    :func:`load_beir` would refuse (a judged query that ``queries`` lacks, a grade that is no integer, an id
    holding a tab or a line break) is refused before anything is written; a judged document that ``corpus``
    lacks is written, as ``load_beir`` keeps it (a slice of a corpus, or BEIR's own ArguAna, judges some).
    """
    folder = user_path(folder, "write_beir: folder")
    if folder.exists():
        raise DataError(f"{folder}: already exists; write_beir does not overwrite a dataset")
    blocker = file_above(folder)
    if blocker is not None:
        raise DataError(f"{folder}: {blocker} is a file, not a folder; a dataset cannot be written below it")
    if not isinstance(corpus, Corpus):
        raise InputTypeError(f"write_beir: corpus: expected a Corpus, got {_kind(corpus)}")
    if isinstance(queries, Queries):
        queries = dict(zip(queries.ids, queries.texts))
    if not isinstance(queries, Mapping):
        raise InputTypeError(f"write_beir: queries: expected a Queries or a mapping {{query_id: text}}, got "
                             f"{_kind(queries)}")
    _check_split_qrels(qrels)
    odd = next(((q, t) for q, t in queries.items() if not isinstance(t, str)), None)
    if odd is not None:
        raise DataError(f"write_beir: query {odd[0]!r} has the text {odd[1]!r:.60}; expected a string")
    for split in qrels:  # what load_beir would refuse (or a path) is refused before writing
        check_split_name(split, "write_beir")
    _check_portable_splits(list(qrels))
    for split, rel in qrels.items():
        if not rel:
            raise DataError(f"write_beir: qrels[{split!r}] judges no query; leave the split out")
        for q, judged in rel.items():
            for d, v in judged.items():
                if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                    raise DataError(f"write_beir: qrels[{split!r}][{q!r}][{d!r}] = {v!r} is not an integer "
                                    "relevance grade (0 not relevant, 1, 2, ... more relevant)")
                if not GRADE_MIN <= v <= GRADE_MAX:
                    raise DataError(grade_range_error(f"write_beir: qrels[{split!r}][{q!r}][{d!r}]", v))
        unknown = [q for q in rel if q not in queries]
        if unknown:
            raise DataError(f"write_beir: qrels[{split!r}] names {len(unknown)} queries not in queries, "
                            f"e.g. {unknown[0]!r}")
        broken = next((x for q, judged in rel.items() for x in (q, *judged) if ID_BREAK.search(str(x))), None)
        if broken is not None:  # a tab or line break in an id would split the TSV's columns or lines
            raise DataError(f"write_beir: qrels[{split!r}] id {broken!r} holds a tab or a line break, which a qrels "
                            "TSV cannot hold")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = shared_tempdir(folder.parent, f".{folder.name}.tmp-")
    try:
        corpus.save(tmp / "corpus.jsonl")
        with open(tmp / "queries.jsonl", "w", encoding="utf-8") as f:
            for q, t in queries.items():
                f.write(json.dumps({"_id": q, "text": t}, ensure_ascii=False) + "\n")
        (tmp / "qrels").mkdir()
        for split, rel in qrels.items():
            with open(tmp / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
                f.write("query-id\tcorpus-id\tscore\n")
                f.writelines(f"{q}\t{d}\t{int(v)}\n" for q, docs in rel.items() for d, v in docs.items())
        os.replace(tmp, folder)
    except BaseException:  # nothing half-written is left beside the folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _candidates(name: str) -> list[Path]:
    out = []
    if os.environ.get("RAGKIT_BEIR_DIR"):
        out.append(Path(os.path.expanduser(os.environ["RAGKIT_BEIR_DIR"])) / name)
    out.append(cache_dir() / "beir" / name)
    here = Path.cwd()
    for base in (here, *here.parents[:3]):
        out.append(base / "shared" / "data" / "beir" / name)
    return out


#: The datasets of BEIR's archives of several, whose score is the mean over all of them (Thakur et al., 2021)
ARCHIVE_SUBSETS = {"cqadupstack": ("android", "english", "gaming", "gis", "mathematica", "physics", "programmers",
                                   "stats", "tex", "unix", "webmasters", "wordpress")}

#: A dataset's name as BEIR spells it (``scifact``, ``msmarco-v2``, ``dbpedia-entity``): a file name, never a path
_NAME = r"[A-Za-z0-9][\w.-]*"
#: ``<archive>/<sub>``: one dataset of an archive that holds several, e.g. ``cqadupstack/android``
_SUB_NAME = re.compile(rf"({_NAME})/({_NAME})")


def _folders(root: Path) -> list[str]:
    """Names of the folders directly in ``root``, sorted; hidden ones and macOS's ``__MACOSX`` left out."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))


def _subsets(folder: Path) -> list[str]:
    """The datasets of a folder that holds several (its folders with a ``corpus.jsonl``), sorted;
    ``[]`` for a single dataset (a ``corpus.jsonl`` of its own) or anything else."""
    if not folder.is_dir() or (folder / "corpus.jsonl").is_file():
        return []
    return [s for s in _folders(folder) if (folder / s / "corpus.jsonl").is_file()
            and not any((folder / s / f).is_file() for f in ("manifest.json", "params.json"))]  # (a saved pipeline)


def _is_dataset(folder: Path) -> bool:
    """Whether ``folder`` holds a BEIR dataset, or several."""
    return (folder / "corpus.jsonl").is_file() or bool(_subsets(folder))


def _lacks(folder: Path) -> list[str]:
    """What ``folder`` lacks of a whole BEIR dataset, or of a whole archive of several (every folder of it a
    dataset, when one of its folders is one): ``["queries.jsonl"]``, ``["android/qrels/<split>.tsv"]``; ``[]``
    when it is complete.  A cached download missing some is an incomplete earlier download (a copy cut short):
    downloaded again, never trusted; an unpacked archive missing some is refused (:func:`_check_layout`)."""
    if not _subsets(folder):
        return _layout_missing(folder)
    return [f"{s}/{f}" for s in _folders(folder) for f in _layout_missing(folder / s)]


def _in_cache(place: Path) -> bool:
    """Whether ``place`` (one of :func:`_candidates`) is in ragkit's own cache of downloads, not a user's folder."""
    return place.parent == cache_dir() / "beir"


#: The datasets BEIR's server distributes (Thakur et al., 2021): a name among them is downloaded when
#: not found locally, another one first checked against the local folders it may misspell
BEIR_NAMES = ("arguana", "climate-fever", "cqadupstack", "dbpedia-entity", "fever", "fiqa", "hotpotqa", "msmarco",
              "msmarco-v2", "nfcorpus", "nq", "quora", "scidocs", "scifact", "trec-covid", "webis-touche2020")


def _misspelt(name: str, roots: set[Path]) -> list[Path]:
    """The BEIR folders directly in ``roots`` whose name is close to ``name`` (a typo: ``sf_smal`` for
    ``./sf_small``; letter case aside: ``NFCorpus`` for ``nfcorpus``), closest first."""
    import difflib

    key = name.lower()
    near: list[Path] = []
    for root in sorted(r for r in roots if r.is_dir()):
        spelt: dict[str, list[str]] = {}  # (folder names, lowercase, to the folders: 'NF' and 'nf' may both be)
        for n in _folders(root):
            spelt.setdefault(n.lower(), []).append(n)
        near += [root / n for m in difflib.get_close_matches(key, list(spelt), n=3, cutoff=0.75) for n in spelt[m]
                 if _is_dataset(root / n)]
    return sorted(near, key=lambda p: -difflib.SequenceMatcher(None, key, p.name.lower()).ratio())


#: The (name, folder) pairs of BEIR names in other letters already said to be loaded lowercase (:func:`_find`)
_LOWERED: set[tuple[str, Path]] = set()


def _find(name: str, label: str, *, download: bool, base_url: str | None) -> Path:
    """The folder of dataset (or multi-dataset archive) ``name``: the first of :func:`_candidates` that
    holds it (in the cache: all of it, else it is downloaded again), else downloaded into the cache.
    ``label`` is what the caller asked for, for the errors.  A name BEIR does not distribute
    (:data:`BEIR_NAMES`) that is close to the name of a dataset folder of the user's (in the working folder,
    ``$RAGKIT_BEIR_DIR``, ``shared/data/beir``) is refused, naming the folder, before any download is tried;
    one close to a cached download's name is not (``fiqa2`` on a mirror beside a cached ``fiqa``): the
    download says whether the server has it, and its failure names the cached one.  A BEIR name in other
    letters (``SciFact``) that no folder bears is BEIR's lowercase name (``scifact``: its archives' names are
    lowercase), found or downloaded as such, with a note; never ``SciFact.zip``."""
    places = _candidates(name)
    lacking = {p: _lacks(p) for p in places if _in_cache(p) and p.exists()}
    found = next((p for p in places if (not lacking[p] if p in lacking else _is_dataset(p))), None)
    if found is not None:
        return found
    if name != name.lower() and name.lower() in BEIR_NAMES:
        found = _find(name.lower(), label, download=download, base_url=base_url)
        if first_time(_LOWERED, (name, found)):
            _log.warning(f"BEIR dataset {name!r}: no folder of that name; BEIR's dataset names are lowercase: "
                         f"loaded {name.lower()!r} ({found})")
        return found
    looked = ", ".join(str(p) + (f" (incomplete: no {', '.join(lacking[p])})" if lacking.get(p) else "")
                       for p in places)
    mine = {Path.cwd(), *(p.parent for p in places if not _in_cache(p))}
    near = [] if name.lower() in BEIR_NAMES else _misspelt(name, mine)
    if near:
        raise DataError(f"BEIR dataset {label!r}: no folder or dataset of that name (looked in {looked}); did you mean "
                        f"the folder {str(near[0])!r}? (nothing was downloaded)")
    if not download:
        incomplete = next((p for p in lacking if _is_dataset(p)), None)
        if incomplete is not None:  # nothing to replace it with: load_beir names the file it lacks
            return incomplete
        raise DataError(f"BEIR dataset {label!r} not found locally (looked in {looked}) and download=False")
    try:
        return download_beir(name, base_url=base_url)
    except (DataError, ParamError) as e:  # (ParamError: a name that is no file name, 'my data')
        cls = DownloadError if isinstance(e, DownloadError) else DataError  # (a failed download stays one)
        cached = [p for p in _misspelt(name, {cache_dir() / "beir"}) if p.name != name] if getattr(
            e, "missing", False) else []  # (one of that name is an incomplete download: 'looked in' says so)
        hint = f"; did you mean the cached dataset {cached[0].name!r} ({cached[0]})?" if cached else ""
        raise cls(f"BEIR dataset {label!r}: not found locally (looked in {looked}); {e}{hint}") from None


def _find_sub(archive: str, sub: str, *, download: bool, base_url: str | None) -> Path:
    """The folder of dataset ``sub`` of the multi-dataset archive ``archive``: found locally, else in the
    archive, downloaded whole (again, when the cache's copy of ``sub`` is incomplete).  A ``sub`` it does not
    hold is a :class:`DataError` listing those it does."""
    hit = next((p / sub for p in _candidates(archive) if (p / sub / "corpus.jsonl").is_file()
                and not (_in_cache(p) and _layout_missing(p / sub))), None)
    if hit is not None:
        return hit
    try:
        parent = _find(archive, f"{archive}/{sub}", download=download, base_url=base_url)
    except DataError as e:  # it may have been meant as a path: say that there is no such folder either
        cls = DownloadError if isinstance(e, DownloadError) else DataError  # (a failed download stays one)
        raise cls(f"{archive}/{sub}: no such folder ({Path(archive).absolute()} does not exist); as a "
                        f"dataset of a BEIR archive: {e}") from None
    subs = _subsets(parent)
    if not subs:
        raise DataError(f"BEIR dataset {archive!r} ({parent}) is a single dataset, without sub-datasets such as "
                        f"{sub!r}; load it as {archive!r}")
    if (parent / sub).is_dir():
        return parent / sub  # incomplete: load_beir names the file it lacks
    raise DataError(f"BEIR dataset {archive!r} ({parent}) has no sub-dataset {sub!r}; its {len(subs)} sub-datasets "
                    f"are {', '.join(subs)} (load one as '{archive}/{subs[0]}')")


def _not_a_folder(text: str) -> DataError:
    """The error for a path that is no folder; it lists the sub-datasets when its parent holds several."""
    parent = Path(text).parent
    subs = _subsets(parent)
    hint = f"; {parent} holds the sub-datasets {', '.join(subs)}" if subs else ""
    return DataError(f"{text}: BEIR folder not found{hint}")


def dataset_folder_of(file: Path) -> Path:
    """The dataset folder a BEIR file belongs to: its folder, or the one above ``qrels/``."""
    return file.parent.parent if file.parent.name == "qrels" else file.parent


def _locate(name_or_path: str | Path, *, download: bool, base_url: str | None) -> Path:
    """The folder ``name_or_path`` stands for: an existing folder, a dataset name (``scifact``) or
    ``<archive>/<sub>`` (``cqadupstack/android``), found locally or downloaded.  A leading ``~`` is the home
    folder."""
    path = user_path(name_or_path, "name_or_path")
    if path.is_dir():
        return path
    if path.is_file() and path.suffix.lower() == ".zip":
        return _unpacked(path)
    archive = _zip_above(path)
    if archive is not None:  # 'cqadupstack.zip/android': a folder inside a local zip, once unpacked
        return _in_archive(archive, path, name_or_path)
    if path.is_file():  # 'corpus.jsonl' in a dataset's folder would be taken for a name to download
        folder = dataset_folder_of(path.resolve())  # named only when it is a BEIR folder (not README.md's)
        hint = f": pass its folder, {str(folder)!r}" if (folder / "corpus.jsonl").is_file() else ""
        raise DataError(f"{name_or_path}: is a file; expected a BEIR dataset folder (corpus.jsonl, queries.jsonl, "
                        f"qrels/) or a dataset name{hint}")
    zip_path = next((p for p in (*reversed(path.parents), path) if p.suffix.lower() == ".zip" and not p.exists()), None)
    if zip_path is not None:  # 'fiqa.zip' is a file, never the name of a dataset to download ('fiqa.zip.zip')
        raise DataError(f"{name_or_path}: file not found ({zip_path.absolute()} does not exist); a name ending in .zip "
                        f"is a local BEIR zip archive's path; to download a dataset, give its name without .zip "
                        f"({zip_path.stem!r})")
    text = os.path.expanduser(str(name_or_path))
    # what a download killed midway left in the cache (its archive, gigabytes for some) is removed by the next
    # load by name, which may find the dataset without downloading it
    remove_stale_tempdirs(cache_dir() / "beir", _DOWNLOAD_PREFIX)
    sub = _SUB_NAME.fullmatch(text)
    if sub is not None and not Path(sub[1]).exists():  # 'data/x' beside an existing ./data is a path
        return _find_sub(sub[1], sub[2], download=download, base_url=base_url)
    if os.sep in text or "/" in text or text.startswith("."):
        raise _not_a_folder(text)
    return _find(text, text, download=download, base_url=base_url)


def _zip_above(path: Path) -> Path | None:
    """The local zip file ``path`` lies inside (``x.zip`` of ``x.zip/android``), or ``None``."""
    return next((p for p in path.parents if p.suffix.lower() == ".zip" and p.is_file()), None)


def _in_archive(archive: Path, path: Path, given: str | Path) -> Path:
    """The folder ``path`` (below the local zip ``archive``) names in the archive once unpacked, counted
    from the dataset (``cqadupstack.zip/android``) or from the archive's top folder, as a zip tool shows
    it (``cqadupstack.zip/cqadupstack/android``); one the archive lacks is a :class:`DataError` saying what
    it holds and how to load that."""
    root = _unpacked(archive)
    rest = path.relative_to(archive)
    for inner in (root / rest, root.parent / rest if rest.parts[0] == root.name else None):
        if inner is not None and inner.is_dir():
            return inner
    subs = _subsets(root)
    holds = (f"it holds the datasets {', '.join(subs)} (load one as '{archive}/{subs[0]}')" if subs else
             f"it holds one dataset, {root.name}: load it as '{archive}'")
    raise DataError(f"{given}: {archive} has no folder {rest.as_posix()!r}; {holds}")


def _sub_path(name_or_path: str | Path, folder: Path, sub: str) -> str:
    """How to load dataset ``sub`` of ``folder``, which ``name_or_path`` found: ``<name_or_path>/<sub>``
    where that loads (a folder, a name such as ``cqadupstack/android``, a path inside a zip), else the
    folder's own path."""
    given = f"{str(name_or_path).rstrip('/')}/{sub}"
    text = os.path.expanduser(given)
    if Path(text).is_dir() or _SUB_NAME.fullmatch(text) or _zip_above(Path(text)) is not None:
        return given
    return str(folder / sub)


def _check_name_or_path(value: object, caller: str) -> str | Path:
    """Refuse a ``name_or_path`` (of :func:`load_beir`, :func:`beir_qrels`, :func:`beir_subsets`: ``caller``)
    that is not a ``str`` or ``os.PathLike`` with a ``TypeError`` naming the argument (not pathlib's
    "expected str, bytes or os.PathLike object"); returns it as a ``str`` or :class:`~pathlib.Path`."""
    if not isinstance(value, (str, os.PathLike)):
        raise InputTypeError(f"{caller}: name_or_path: expected a BEIR dataset name ('scifact') or folder (a "
                             f"str or pathlib.Path), got {type(value).__name__} {value!r:.80}")
    # another os.PathLike (an os.DirEntry): a Path, so that messages name the path, not the object
    return value if isinstance(value, (str, Path)) else Path(os.fspath(value))


def _unpacked(archive: Path) -> Path:
    """The folder a local BEIR zip (``scifact.zip``, as BEIR distributes them) unpacks to, under the cache
    (``beir-zip/<hash of its path, size and time>/<name>``; checked as a download is); unpacked once per
    version of the file.  ``<name>`` is the archive's one top folder (``nfcorpus`` of a browser's
    ``nfcorpus (1).zip``), or the zip's name when its files lie at the top."""
    st = archive.stat()
    # ("v2|": folders unpacked before renamed archives were understood are not reused)
    key = hashlib.sha1(f"v2|{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = cache_dir() / "beir-zip" / key
    done = _folders(dest) if dest.is_dir() else []
    if len(done) == 1:
        remove_stale_tempdirs(dest, _UNPACKING_PREFIX)  # (a process killed after its rename, before its clean-up)
        return dest / done[0]
    try:  # opened before its folder is made: a file that is no zip leaves no empty folder in the cache
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, EOFError, ValueError):
        raise DataError(f"{archive}: not a zip archive ({st.st_size} bytes)") from None
    with zf:
        dest.mkdir(parents=True, exist_ok=True)
        _log.info(f"unpacking {archive} into {dest}")
        try:
            final = _unpack_into(zf, archive, dest)
        except BaseException:
            try:  # a damaged archive, a layout refused: no empty beir-zip/<key>/ left (another process's result stays)
                dest.rmdir()
            except OSError:
                pass
            raise
    return final


def _unpack_into(zf: zipfile.ZipFile, archive: Path, dest: Path) -> Path:
    """Unpack the local zip ``archive`` (open as ``zf``) into ``dest / <its dataset's name>`` (:func:`_unpacked`)."""
    # hidden (never taken for the result) and named after this process (shared_tempdir): one a killed process
    # left is removed by the next unpacking or load of this zip
    tmp = shared_tempdir(dest, _UNPACKING_PREFIX)
    try:
        unpacked = tmp / "unpacked"
        gzipped = _extract(zf, unpacked, str(archive), again="nothing was unpacked; download the archive again (or "
                                                            "copy it again: it is damaged)")
        root = _archive_root(unpacked, archive.stem)
        name = archive.stem if root == unpacked else root.name
        _check_layout(root, name, str(archive), gzipped)
        share_like_umask(root)  # (the permissions of a plain mkdir, whatever zipfile gave it)
        final = dest / name
        try:
            os.rename(root, final)
        except OSError:
            if not (final / "corpus.jsonl").is_file() and not _subsets(final):
                raise  # (else another process unpacked the same zip at the same time: its folder serves)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


#: the name of a local zip's temporary unpacking folder begins so (then :func:`~ragkit._files.owner_tag`)
_UNPACKING_PREFIX = ".unpacking-"


def _archive_root(unpacked: Path, name: str) -> Path:
    """The folder of an unpacked BEIR archive that is the dataset (or the folder of datasets): its
    top folder ``name``; else ``unpacked`` itself when it holds a ``corpus.jsonl``; else its one top
    folder when that is a dataset or a folder of datasets (an archive renamed: ``nfcorpus (1).zip``,
    ``fiqa-v2.zip``); else ``unpacked`` (files at the top, or several datasets side by side)."""
    if (unpacked / name).is_dir():
        return unpacked / name
    if (unpacked / "corpus.jsonl").is_file():
        return unpacked
    tops = _folders(unpacked)
    loose = [p for p in unpacked.iterdir() if p.is_file() and not p.name.startswith(".")]
    if len(tops) == 1 and not loose and _is_dataset(unpacked / tops[0]):
        return unpacked / tops[0]
    return unpacked


def load_beir(name_or_path: str | os.PathLike[str], *, download: bool = True,
              base_url: str | None = None) -> BeirDataset:
    """Load a BEIR dataset from a folder, or by name (found locally, else downloaded and cached).

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A dataset folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``); a local zip as BEIR
        distributes them (``scifact.zip``, unpacked once into ``<cache>/beir-zip/``); a dataset name
        (``"scifact"``); or, for one dataset of an archive that holds several, ``"<archive>/<sub>"``
        (``"cqadupstack/android"``; :func:`beir_subsets` lists them).  A name is looked for, in this order, in
        ``$RAGKIT_BEIR_DIR/<name>``, ``<cache>/beir/<name>`` and ``shared/data/beir/<name>`` under the working
        folder or one of its three parents.  ``<cache>`` is :func:`cache_dir`: ``$RAGKIT_CACHE``, else
        ``~/.cache/ragkit``.  A leading ``~`` in a path is the home folder.
    download : bool, default True
        Whether a name found nowhere is downloaded (``{base_url}/{name}.zip``, unpacked into
        ``<cache>/beir/<name>``, where later loads find it; a cached copy that is incomplete is downloaded
        again).  ``False``: a :class:`DataError` naming the places looked in instead.
    base_url : str, optional
        Where archives are downloaded from: ``$RAGKIT_BEIR_URL`` when unset, else BEIR's official server
        (:data:`BEIR_URL`).  A mirror, or a ``file://`` folder of zips.  To download with a longer timeout,
        call :func:`download_beir` first.

    Returns
    -------
    BeirDataset
        The dataset's ``corpus`` (read now) and query texts (read now); ``qrels(split)``, ``queries(split)`` and
        ``train_set(split)`` read a split's judgements when asked for.

    Raises
    ------
    DataError
        A folder or name holding several datasets (naming them), a file missing from the layout, or a line of
        a file that is not as BEIR writes it (naming the file and the line).

    Examples
    --------
    >>> from ragkit.eval import load_beir
    >>> ds = load_beir("scifact")  # doctest: +SKIP
    >>> len(ds.corpus), ds.splits  # doctest: +SKIP
    (5183, ['test', 'train'])
    >>> queries, qrels = ds.queries("test"), ds.qrels("test")  # doctest: +SKIP
    """
    name_or_path = _check_name_or_path(name_or_path, "load_beir")
    path = _locate_one(name_or_path, download=download, base_url=base_url)
    convert = ("convert the folder with ragkit.eval.write_beir(folder, corpus, queries, qrels) (qrels: {split: "
               "{query_id: {doc_id: grade}}}; read_query_file reads a TSV of queries, read_qrels a qrels .tsv or .csv)")
    for required in ("corpus.jsonl", "queries.jsonl"):
        if not (path / required).is_file():
            other = sorted(p.name for p in path.glob(f"{required.split('.')[0]}.*")  # (a .gz: _not_found says)
                           if p.is_file() and p.name != f"{required}.gz")
            raise _not_found(path / required, "; a BEIR folder holds corpus.jsonl, queries.jsonl and "
                                              "qrels/<split>.tsv" + (f"; found {', '.join(other)}, another format: "
                                                                     f"{convert}" if other else ""))
    if not (path / "qrels").is_dir():
        tables = sorted(p.name for p in path.iterdir() if p.suffix.casefold() in (".tsv", ".csv") and p.is_file())
        raise DataError(f"{path / 'qrels'}: folder not found; expected qrels/<split>.tsv files (BEIR's layout)"
                        + (f"; found {', '.join(tables)} beside corpus.jsonl" if tables else "") + f"; {convert}")
    corpus = read_corpus(path / "corpus.jsonl")
    _warn_empty_documents(corpus, path / "corpus.jsonl")
    data = BeirDataset(path=path, corpus=corpus)
    data._queries = read_queries(path / "queries.jsonl")  # (read now: a bad queries.jsonl is an error of the load)
    return data


def _warn_empty_documents(corpus: Corpus, path: Path) -> None:
    """One warning on the ``ragkit`` logger counting the documents with neither text nor title (``""`` or
    ``null`` both), with the first one's id; they are kept, as BEIR keeps them."""
    empty = (np.asarray(corpus.texts, dtype=object) == "") & (np.asarray(corpus.titles, dtype=object) == "")
    n = int(empty.sum())
    if n:
        first = corpus.ids[int(np.argmax(empty))]
        _log.warning(f"{path}: {n} document{'s have' if n > 1 else ' has'} no text and no title (e.g. {first!r}); "
                     f"kept, as BEIR keeps {'them' if n > 1 else 'it'}: {'they hold' if n > 1 else 'it holds'} no "
                     "words for a query to match")


def _locate_one(name_or_path: str | Path, *, download: bool, base_url: str | None) -> Path:
    """The folder of the one dataset ``name_or_path`` names (:func:`_locate`); a folder or name that holds
    several is a :class:`DataError` naming them."""
    path = _locate(name_or_path, download=download, base_url=base_url)
    subs = _subsets(path)
    if len(subs) == 1:
        raise DataError(f"{name_or_path}: holds one BEIR dataset, in its folder {subs[0]!r}; load it as "
                        f"{_sub_path(name_or_path, path, subs[0])!r}")
    if subs:
        one = _sub_path(name_or_path, path, subs[0])
        raise DataError(f"{name_or_path}: holds {len(subs)} BEIR datasets ({', '.join(subs)}), not one; load one as "
                        f"{one!r} (beir_subsets lists them; BEIR reports the mean of each metric over them)")
    return path


def beir_qrels(name_or_path: str | os.PathLike[str], split: str = "test", *, download: bool = True,
               base_url: str | None = None) -> tuple[str, Qrels]:
    """``(dataset name, judgements of split)`` of a BEIR dataset, found as :func:`load_beir` finds it,
    without reading its corpus or queries (``ragkit compare`` scores run files with them; a corpus
    can be gigabytes).  Their ids are not checked against the corpus, as ``BeirDataset.qrels`` does."""
    name_or_path = _check_name_or_path(name_or_path, "beir_qrels")
    path = _locate_one(name_or_path, download=download, base_url=base_url)
    return path.resolve().name, read_qrels(_qrels_file(path, split))


def beir_subsets(name_or_path: str | os.PathLike[str], *, download: bool = True,
                 base_url: str | None = None) -> list[str]:
    """The datasets of a BEIR archive that holds several, sorted; ``[]`` for anything else (one dataset).

    Found as :func:`load_beir` finds a dataset: a folder, or a name found locally, else downloaded
    and cached.  Load each as ``load_beir(f"{name}/{sub}")``; BEIR reports such an archive
    (CQADupStack) as the mean of each metric over its datasets.

    Examples
    --------
    >>> beir_subsets("cqadupstack")  # doctest: +SKIP
    ['android', 'english', 'gaming', 'gis', 'mathematica', 'physics', 'programmers', 'stats', 'tex', 'unix',
     'webmasters', 'wordpress']
    """
    name_or_path = _check_name_or_path(name_or_path, "beir_subsets")
    return _subsets(_locate(name_or_path, download=download, base_url=base_url))


def download_beir(name: str, *, base_url: str | None = None, dest: Path | None = None, timeout: float = 60) -> Path:
    """Download ``{base_url}/{name}.zip`` and unzip it into ``dest`` (default: the cache); returns ``dest / name``.

    The archive is unpacked in a temporary folder of ``dest`` and renamed into place, so an
    interrupted download leaves nothing half-written; the folder of a process killed midway is removed
    by the next download into ``dest`` (or load by name, for the cache) on this host.  A folder of that
    name that another process's download of the same archive filled meanwhile is kept as it is (it may
    be in use); an incomplete earlier download is replaced.  An archive of several datasets
    (``cqadupstack/<forum>/corpus.jsonl``, ...) is cached whole as ``dest / name / <forum>``,
    once every one of its folders is checked to be a complete BEIR dataset.

    ``timeout`` is the most seconds to wait for the server to answer and for each piece of the archive
    (not for the whole download): a slow or distant server may need more than the default 60; load_beir
    and ``ragkit eval --data`` download with the default, so download a dataset they time out on with a
    larger one first (it is then found in the cache).  A progress bar goes to stderr when it is a terminal.
    ``name`` is the dataset's name without ``.zip`` (``"fiqa"``; load a local zip with :func:`load_beir`).
    """
    if not isinstance(name, str) or not re.fullmatch(_NAME, name) or ".." in name:
        raise ParamError(f"download_beir: name {name!r} is not a dataset name; expected a name such as 'scifact' "
                         "(letters, digits, '-', '_', '.'; no '/', '\\' or '..': the archive <name>.zip is "
                         "unpacked into dest/<name>, never elsewhere)")
    if name.lower().endswith(".zip"):  # (else <base>/fiqa.zip.zip was fetched)
        raise ParamError(f"download_beir: name {name!r} ends in .zip; expected the dataset's name without it "
                         f"({name[:-4]!r}): the archive <name>.zip is fetched; a local zip is loaded with "
                         f"load_beir({name!r})")
    base = (base_url or os.environ.get("RAGKIT_BEIR_URL") or BEIR_URL).rstrip("/")
    dest = user_path(dest, "download_beir: dest") if dest is not None else cache_dir() / "beir"
    _refuse_not_a_download(dest / name, name)  # before fetching what may be gigabytes
    dest.mkdir(parents=True, exist_ok=True)
    url = f"{base}/{name}.zip"
    # the archive and its contents, in a folder named after this process (shared_tempdir): removed whatever
    # happens here, and by the next download or load of a dataset in dest when this process is killed
    tmp = shared_tempdir(dest, _DOWNLOAD_PREFIX)
    try:
        with _fetch_zip(url, name, timeout, tmp / "archive.zip") as archive:
            gzipped = _extract(archive, tmp / "unpacked", url, again="nothing was cached; download it again",
                               damaged=DownloadError)
        (tmp / "archive.zip").unlink()  # (the archive's bytes twice on disk no longer than needed)
        root = _archive_root(tmp / "unpacked", name)
        # the whole BEIR layout, checked before the folder moves into the cache: a partial one placed
        # there would be found by every later load_beir (which looks for corpus.jsonl) and never replaced
        _check_layout(root, name, url, gzipped)
        share_like_umask(root)  # (the permissions of a plain mkdir, whatever zipfile gave it)
        final = dest / name
        _publish_download(root, final, name, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


#: the name of download_beir's temporary folders begins so (then :func:`~ragkit._files.owner_tag`)
_DOWNLOAD_PREFIX = ".beir-download-"


def _publish_download(root: Path, final: Path, name: str, tmp: Path) -> None:
    """Rename the checked, unpacked archive ``root`` (in ``tmp``, a folder beside ``final``) to ``final``, never
    into it (a move into a folder there meanwhile nested the dataset: ``<name>/<name>/corpus.jsonl``).
    A ``final`` that holds exactly what ``root`` holds (another process downloaded the same archive
    meanwhile, and may be reading it) is kept and ``root`` dropped; an incomplete earlier download of it
    is first renamed into ``tmp`` (removed with it), never deleted where a reader may be; anything else is
    refused (:func:`_not_a_download`)."""
    for attempt in range(3):
        if final.exists() or final.is_symlink():
            if not _is_download_of(final, root):
                raise _not_a_download(final, name)
            if _holds_all_of(final, root):
                _log.info(f"{final}: already holds the BEIR download of {name!r} (an earlier one, or another "
                          "process's done meanwhile, perhaps in use): kept; the new download is dropped")
                return
            try:
                os.rename(final, tmp / f"replaced-{attempt}")  # an incomplete download: replaced
            except FileNotFoundError:
                pass
        try:
            os.replace(root, final)  # (onto a folder that is there, not empty: an OSError, never a move into it)
            return
        except OSError:
            if attempt == 2 or not (final.exists() or final.is_symlink()):
                raise
            # another process published it between the check and the rename: judged again


def _holds_all_of(final: Path, root: Path) -> bool:
    """Whether the folder ``final`` holds every file of ``root``, at every depth, each of the same size."""
    for here, _dirs, files in os.walk(root):
        there = final / Path(here).relative_to(root)
        for f in files:
            try:
                if os.stat(there / f).st_size != os.stat(Path(here) / f).st_size:
                    return False
            except OSError:
                return False
    return True


def _fetch_zip(url: str, name: str, timeout: float, into: Path) -> zipfile.ZipFile:
    """The zip archive at ``url``, streamed to the file ``into`` in 1 MiB pieces (BEIR archives reach
    gigabytes: never held in memory whole) and opened; ``timeout`` in seconds, per network read.  A progress
    bar goes to stderr when it is a terminal (:func:`_copy`)."""
    _log.info(f"{'copying' if url.startswith('file:') else 'downloading'} {url} into {into.parent.parent}")
    length = ctype = None
    size: int | None = None  # the Content-Length, when the server sent a number
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(into, "wb") as f:
            length, ctype = resp.headers.get("Content-Length"), resp.headers.get("Content-Type")
            size = int(length) if length is not None and length.strip().isdigit() else None
            _copy(resp, f, name, size)
    except Exception as e:  # URLError, HTTPError, timeouts, a connection cut short, a full disk
        err = DownloadError(f"could not download BEIR dataset {name!r} from {url}: {_why(e, name, timeout)}")
        reason = getattr(e, "reason", None)
        err.missing = getattr(e, "code", None) in (404, 410) or isinstance(reason, FileNotFoundError)
        raise err from None
    got = into.stat().st_size
    if size is not None and got < size:  # the server closed early
        raise DownloadError(f"{url}: download cut short: {got} of {size} bytes; nothing was cached; try again")
    try:
        return zipfile.ZipFile(into)
    except (zipfile.BadZipFile, EOFError, ValueError):
        raise DownloadError(_not_a_zip(url, into, ctype, sized=length is not None)) from None


def _copy(resp: Any, f: Any, name: str, total: int | None) -> None:
    """Copy the response ``resp`` into the file ``f`` in 1 MiB pieces, with a tqdm progress bar on stderr when
    stderr is a terminal (of ``total`` bytes, the Content-Length, when the server sent one); none otherwise
    (a log, a pipe, a job's output)."""
    try:
        tty = sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # (a replaced or closed stderr)
        tty = False
    bar = None
    if tty:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {name}",
                   file=sys.stderr)
    try:
        while chunk := resp.read(1 << 20):
            f.write(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()


def _why(e: BaseException, name: str, timeout: float) -> str:
    """Why a download failed, on one line (urllib's reasons may span several: a redirect loop's); a timeout says
    the limit and how to raise it."""
    if isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError):
        return (f"timed out: nothing came for {timeout:g} seconds (download_beir's timeout, per network read); "
                f"raise it with ragkit.eval.download_beir({name!r}, timeout=<seconds>), which caches the dataset "
                "for later loads")
    return " ".join(str(e).split())


def _not_a_zip(url: str, into: Path, ctype: str | None, *, sized: bool) -> str:
    """The message for a download ``into`` that is no zip archive: its size, the response's Content-Type, its first
    bytes when they are text (a web page: a login, captive portal or error page) or that it begins as a zip
    (cut short, or damaged), and, when the server sent no Content-Length (``sized``), that the transfer may have
    been cut short."""
    got = into.stat().st_size
    with open(into, "rb") as f:
        head = f.read(256)
    said = [f"{url}: not a zip archive ({got} bytes); Content-Type {ctype!r}" if ctype else
            f"{url}: not a zip archive ({got} bytes); no Content-Type"]
    text = _text_of(head)
    if got == 0:
        said.append("it is empty")
    elif head.startswith(b"PK"):
        said.append("it begins as one, but its end is missing or damaged")
    elif text is not None:
        page = text.lower().startswith(("<!doctype html", "<html")) or "html" in (ctype or "").lower()
        said.append(f"it begins {text[:80]!r}" + (" (a web page: a login or captive portal, or an error page?)"
                                                  if page else ""))
    if not sized:
        said.append("the server sent no Content-Length, so the transfer may have been cut short")
    return "; ".join(said) + "; expected a BEIR zip archive; nothing was cached; try again, or check the URL"


def _text_of(head: bytes) -> str | None:
    """``head`` (a file's first bytes) as text on one line when it reads as UTF-8 text (a character cut at its
    end allowed), else ``None``."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:
            return None
        text = head[:e.start].decode("utf-8")
    if any(c < " " and c not in "\t\n\r\f" for c in text):
        return None
    return " ".join(text.split())


#: What a damaged zip raises while it is read: a bad CRC or a truncated member (BadZipFile, EOFError), a
#: damaged deflate or lzma stream (zlib.error, lzma.LZMAError), a compression method zipfile cannot read
#: (NotImplementedError); a damaged bzip2 stream is an OSError without an errno (told apart from a full disk)
_DAMAGED_ZIP = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, ValueError, OSError)


#: What :func:`_extract` unpacks at most, in bytes as the archive declares them, unless
#: ``$RAGKIT_BEIR_MAX_UNZIPPED`` says otherwise: 64 GiB, over ten times BEIR's largest datasets (MS MARCO,
#: FEVER and Climate-FEVER, millions of documents: a few GB of JSON lines each, from archives of 1-4 GB)
MAX_UNZIPPED = 64 << 30
#: A member that unpacks to more than :data:`_BOMB_RATIO` times its compressed size, and to more than
#: :data:`_BOMB_MIN` bytes, is refused: BEIR's JSON lines and TSVs compress about 3 to 4 times, and deflate
#: at most about 1,000 times (a "zip bomb" of repeated bytes)
_BOMB_RATIO = 100
_BOMB_MIN = 64 << 20
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def max_unzipped() -> int:
    """The most bytes an archive may unpack to (:data:`MAX_UNZIPPED`, or ``$RAGKIT_BEIR_MAX_UNZIPPED``: a number
    of bytes, or one with a K, M, G or T suffix, powers of 1024: ``200G``)."""
    text = os.environ.get("RAGKIT_BEIR_MAX_UNZIPPED", "").strip()
    if not text:
        return MAX_UNZIPPED
    m = re.fullmatch(r"(\d+)\s*([KMGT]?)(?:i?B)?", text, re.IGNORECASE)
    if m is None or int(m[1]) == 0:
        raise ParamError(f"RAGKIT_BEIR_MAX_UNZIPPED={text!r}: expected a positive number of bytes, or one with a "
                         "K, M, G or T suffix (powers of 1024), such as 200G", "RAGKIT_BEIR_MAX_UNZIPPED")
    return int(m[1]) * _UNITS[m[2].upper()]


def _is_dataset_member(name: str) -> bool:
    """Whether the archive member ``name`` is a file of the BEIR layout: ``corpus.jsonl``, ``queries.jsonl`` or
    ``qrels/<split>.tsv``, at the archive's top, in its top folder (``scifact/``) or in a dataset folder of an
    archive of several (``cqadupstack/android/``); hidden files and macOS's ``__MACOSX`` are none."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or name.endswith("/") or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    if parts[-1] in ("corpus.jsonl", "queries.jsonl"):
        return len(parts) <= 3
    return len(parts) >= 2 and parts[-2] == "qrels" and parts[-1].endswith(".tsv") and len(parts) <= 4


def _gzipped_members(names: list[str]) -> list[str]:
    """The members of an archive (``names``) that are BEIR files gzip-compressed (``corpus.jsonl.gz``,
    ``qrels/test.tsv.gz``, as Hugging Face's BeIR copies hold them): left in the archive, as BEIR reads its files
    uncompressed, and named when the files they stand for are missing (:func:`_check_layout`)."""
    return [n for n in names if n.endswith(".gz") and _is_dataset_member(n[:-3])]


def _fmt_bytes(n: int) -> str:
    """``n`` bytes for a message: GiB to one decimal from 1 GiB up, MiB below (``"1.5 GiB"``, ``"0.3 MiB"``)."""
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def _extract(archive: zipfile.ZipFile, tmp: Path, url: str, *, again: str,
             damaged: type[DataError] = DataError) -> list[str]:
    """Unzip the BEIR files of ``archive`` (:func:`_is_dataset_member`; anything else it holds is left in it)
    into the folder ``tmp``, refusing it whole when a member would land outside, or before anything is
    written when those files would unpack to more than :func:`max_unzipped` bytes, or one of them to over
    :data:`_BOMB_RATIO` times its compressed size (a zip bomb).  zipfile writes no more than a member's
    declared size (and checks its CRC), so the declared sizes bound what lands on disk.  A damaged archive
    (a bad CRC, a broken compressed stream) is a ``damaged`` error (a :class:`DataError`; a
    :class:`DownloadError` for a download) naming ``url`` (the URL or file) and saying ``again`` (what to do).
    Returns the gzip-compressed BEIR files it left in the archive (:func:`_gzipped_members`), for
    :func:`_check_layout` to name."""
    inside = tmp.resolve()
    for member in archive.namelist():
        if not (inside / member).resolve().is_relative_to(inside):
            raise DataError(f"{url}: archive member {member!r} escapes the target folder")
    members = [m for m in archive.infolist() if _is_dataset_member(m.filename)]
    total, cap = sum(m.file_size for m in members), max_unzipped()
    if total > cap:
        raise DataError(f"{url}: its BEIR files would unpack to {_fmt_bytes(total)} ({total:,} bytes), over the "
                        f"limit of {_fmt_bytes(cap)}; BEIR's largest datasets unpack to a few GB; if the archive is "
                        "trusted, raise the limit with RAGKIT_BEIR_MAX_UNZIPPED (bytes, or e.g. 200G); nothing was "
                        "unpacked")
    packed = sum(m.compress_size for m in members)
    for what, size, small in [*((repr(m.filename), m.file_size, m.compress_size) for m in members),
                              ("its BEIR files", total, packed)]:
        if size > _BOMB_MIN and size > _BOMB_RATIO * max(small, 1):  # (one member, then all of them together)
            raise DataError(f"{url}: {what if what.startswith('its') else 'archive member ' + what} would unpack to "
                            f"{_fmt_bytes(size)} from {small:,} bytes ({size / max(small, 1):,.0f} times; BEIR's "
                            "files compress about 3 times, a zip bomb hundreds of times); expected a BEIR archive; "
                            "nothing was unpacked")
    try:
        archive.extractall(tmp, members=members)
    except _DAMAGED_ZIP as e:
        if isinstance(e, OSError) and e.errno is not None:  # a full disk, a permission: not the archive's fault
            raise
        raise damaged(f"{url}: the zip archive is damaged ({type(e).__name__}: {' '.join(str(e).split())}); "
                      f"{again}") from None
    tmp.mkdir(parents=True, exist_ok=True)  # (an archive without a BEIR file: its layout check says what it lacks)
    return _gzipped_members(archive.namelist())


def _not_a_download(final: Path, name: str) -> DataError:
    return DataError(f"{final}: exists and is not a BEIR download of {name!r} (it holds other files, or is not a "
                     "folder); refusing to replace it: move it, or pass another dest")


def _refuse_not_a_download(final: Path, name: str) -> None:
    """Refuse, before anything is fetched, a ``final`` that no BEIR archive could have left: a link, a file,
    or a folder holding at its top a file other than ``corpus.jsonl`` / ``queries.jsonl`` (an archive holds
    those, ``qrels/``, or dataset folders).  Whether a folder that passes is a download of the archive is
    checked once it is unpacked (:func:`_is_download_of`)."""
    if not (final.exists() or final.is_symlink()):
        return
    if final.is_symlink() or not final.is_dir():
        raise _not_a_download(final, name)
    loose = {e.name for e in os.scandir(final) if not e.is_dir(follow_symlinks=False)}
    if loose - {"corpus.jsonl", "queries.jsonl"}:
        raise _not_a_download(final, name)


def _layout_missing(root: Path) -> list[str]:
    """What ``root`` lacks of the BEIR layout: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``."""
    missing = [f for f in ("corpus.jsonl", "queries.jsonl") if not (root / f).is_file()]
    if not list((root / "qrels").glob("*.tsv")):
        missing.append("qrels/<split>.tsv")
    return missing


def _check_layout(root: Path, name: str, url: str, gzipped: list[str] | None = None) -> None:
    """Refuse an unpacked archive that is neither a whole BEIR dataset nor a folder of whole ones: when
    ``root`` has no ``corpus.jsonl`` but one of its folders has, every folder must be a dataset (:func:`_lacks`).
    ``gzipped`` (:func:`_extract`'s result): the archive's gzip-compressed BEIR files, named with how to
    uncompress them when some file is missing."""
    lacks = _lacks(root)
    if not lacks:
        return
    missing = ", ".join(f"{name}/{f}" for f in lacks)
    gz = ""
    if gzipped:
        shown = ", ".join(gzipped[:6]) + (f" and {len(gzipped) - 6} more" if len(gzipped) > 6 else "")
        gz = (f"; it holds {shown} gzip-compressed instead (as Hugging Face's BeIR copies do), which are not read: "
              "BEIR files are read uncompressed: unzip the archive, gunzip those files (gunzip -r <its folder>), "
              "then load that folder, or zip it again")
    if not _subsets(root):
        raise DataError(f"{url}: the archive has no {missing}{gz}; expected a BEIR "
                        "dataset (corpus.jsonl, queries.jsonl, qrels/<split>.tsv); nothing was cached")
    raise DataError(f"{url}: the archive holds the sub-datasets {', '.join(_folders(root))}, but has no {missing}{gz}; "
                    "each must be a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/<split>.tsv); nothing was "
                    "cached")


def _holds_only(folder: Path, names: set[str]) -> bool:
    """Whether ``folder`` is a folder (not a link) whose entries are all in ``names``."""
    return folder.is_dir() and not folder.is_symlink() and set(os.listdir(folder)) <= names


def _is_download_of(final: Path, root: Path) -> bool:
    """Whether ``final`` holds only what the unpacked archive ``root`` holds, at every depth (a
    multi-dataset archive's ``<sub>/qrels/`` is two levels down): an earlier download of it, perhaps
    incomplete, not a user's folder.  A folder that is a link is never one."""
    if not _holds_only(final, set(os.listdir(root))):
        return False
    for here, dirs, files in os.walk(final):
        rel = Path(here).relative_to(final)
        if any((Path(here) / d).is_symlink() or not (root / rel / d).is_dir() for d in dirs):
            return False
        if any(not (root / rel / f).is_file() for f in files):
            return False
    return True
