"""The lines of a BEIR file: its encoding checked (no BOM-less UTF-16, gzip or other packed file), JSON lines
decoded in blocks, and the messages naming a malformed line and a bad id.  Lines that came from standard input
(``ragkit search --queries -``, kept in a temporary file) are read with a :class:`Piped`: messages name the input as
the user gave it, and the fixes they suggest are in pipe form."""

from __future__ import annotations

import codecs
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterator, Sequence

import numpy as np

from ragkit._corpus import _JSONL_BLOCK
from ragkit._files import shell_quote, utf8_line
from ragkit.errors import DataError
from ragkit.types import (
    ID_BREAK,
    ID_BREAK_NAMES,
)

#: a surrogate escape (\ud800-\udfff in JSON text), or text that looks like one (``\\ud800``: an escaped backslash)
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
#: a high surrogate escape followed by a low one: one character beyond the BMP, as json.dumps escapes it (an emoji)
_SURROGATE_PAIR = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def _lone_surrogate_escape(data: bytes) -> bool:
    """Whether the JSON text ``data`` holds a lone surrogate escape, one that is not half of a pair standing for one
    character beyond the BMP (``\\ud83d\\ude00``, an emoji as ``json.dumps`` writes it).  In C: each escaped
    backslash is blanked out (read left to right, as the parser does, a run of them pairs off; an odd one left
    starts an escape), then the pairs, and what is left searched.  Exact for text the parser accepts (fuzzed
    against ``json.loads``); text it refuses is read line by line anyway."""
    if _SURROGATE.search(data) is None:
        return False
    unescaped = data.replace(b"\\\\", b"..")
    return _SURROGATE.search(_SURROGATE_PAIR.sub(b".", unescaped)) is not None


@dataclass(frozen=True)
class Piped:
    """Lines read from standard input (kept in a temporary file, whose name no message gives): ``shown`` names
    them in messages (``"--queries - (standard input)"``), and a fix is suggested as a command whose output is piped
    into ``command``, the one that reads them (``"ragkit search ... --queries -"``), not one writing a file."""

    shown: str
    command: str


def _shown(path: Path, piped: Piped | None) -> str | Path:
    """What messages call the file ``path``: itself, or the input that it holds (``piped``)."""
    return piped.shown if piped is not None else path


def _fix_command(command: str, path: Path, piped: Piped | None, sample: str, out: str) -> str:
    """The command a message suggests to fix the file ``path``: ``command`` (``jq -c .``) run on ``path`` as the user
    gave it, quoted for the shell (a bare name would fail from another folder), into ``out`` (``fixed.jsonl``; an
    ``out`` named as ``path`` is, ``new.txt``, becomes ``new-fixed.txt``); or, where ``path`` holds standard input
    (``piped``), run on the way there from a file such as ``sample``: ``jq -c . queries.json | ragkit search ...
    --queries -``."""
    if piped is not None:
        return f"{command} {sample} | {piped.command}"
    if out == path.name:  # (a shell empties the output before the command reads the file: not the file itself)
        out = f"{path.stem}-fixed{path.suffix}"
    return f"{command} {shell_quote(str(path))} > {shell_quote(out)}"


def _convert_fix(command: str, path: Path, piped: Piped | None, sample: str, out: str) -> str:
    """What follows "convert it" in a message: ``", e.g. "`` and the :func:`_fix_command`, or, where ``path`` holds
    standard input (``piped``), ``" on the way, e.g. "`` and the command piped into the one that reads it."""
    return f"{' on the way' if piped is not None else ''}, e.g. {_fix_command(command, path, piped, sample, out)}"


def _check_no_lone_surrogate(rec: dict, path: str | os.PathLike[str], n: int) -> None:
    """Refuse, naming ``path:n``, the first string of the record ``rec`` holding a lone surrogate (which a JSON
    escape such as ``\\ud800`` gives, and no UTF-8 text or tokenizer holds): a field's value, or any string nested
    in it (``"metadata": {"tags": ["\\ud800"]}``, named by where it stands: ``['tags'][0]``), or a key.  Walked
    without recursion (JSON nests as deep as its parser allows); called only on a line holding a lone surrogate
    escape (:func:`_lone_surrogate_escape`)."""
    todo: list[tuple[tuple[Any, ...], Any]] = [((), rec)]
    while todo:
        route, value = todo.pop()
        if isinstance(value, str):
            _refuse_lone_surrogate(value, route, False, path, n)
        elif isinstance(value, dict):
            for key in value:
                _refuse_lone_surrogate(key, (*route, key), True, path, n)
            todo.extend(((*route, key), v) for key, v in reversed(value.items()))
        elif isinstance(value, list):
            todo.extend(((*route, i), v) for i, v in reversed(list(enumerate(value))))


def _refuse_lone_surrogate(text: str, route: tuple[Any, ...], key: bool, path: str | os.PathLike[str], n: int) -> None:
    """Refuse ``text``, a string of a record on line ``n`` of ``path`` (``route``: the keys and indices leading to it
    from the record, its own key last where ``key``: the string is that key), where it holds a lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        at = "".join(f"[{k!r}]" for k in route[1:])
        where = (" in its name" if len(route) == 1 else f" in a key, at {at}") if key else f" at {at}" if at else ""
        of = (" of the name" if len(route) == 1 else " of the key") if key else ""
        raise DataError(f"{path}:{n}: field {route[0]!r} holds an unpaired surrogate escape{where} "
                        f"(\\u{ord(text[e.start]):04x} at character {e.start + 1}{of}), which is not text; "
                        "fix or drop that escape") from None


def _json_problem(e: json.JSONDecodeError) -> str:
    """``e``'s message and column: "Expecting ',' delimiter at column 12".  Some messages end in their own
    position already ("Unterminated string starting at": the column is of the string's start)."""
    return f"{e.msg} column {e.colno}" if e.msg.endswith(" at") else f"{e.msg} at column {e.colno}"


def _malformed_line(path: Path, n: int, text: str, e: json.JSONDecodeError, *,
                    piped: Piped | None = None) -> DataError:
    """The error for line ``n`` of ``path`` (``text``, its ending stripped; ``piped``: from standard input) that
    is no JSON value (``e``); where the value runs on past the line, which ends opening an object or array or after
    a ``,`` or ``:`` (a JSON record spread over several lines, pretty-printed: ``{`` alone on line 1), it says how to
    write one per line."""
    said = f"{_shown(path, piped)}:{n}: malformed JSON line ({_json_problem(e)})"
    if e.pos >= len(text.rstrip()) and text.rstrip().endswith(("{", "[", ",", ":")):
        fix = _convert_fix("jq -c .", path, piped, "queries.json", "fixed.jsonl")
        said += (": the object does not close on this line, as in a JSON record spread over several lines "
                 f"(pretty-printed); expected JSON Lines, one object per line: convert it{fix}")
    return DataError(said)


def _cr_endings(path: Path, n: int, text: str, *, piped: Piped | None = None) -> DataError:
    """The error for a line (its ending stripped) holding a carriage return: a file with CR-only (old Mac)
    line endings reads as one line, whose records or columns would run together (``piped``: from standard input)."""
    ext = path.suffix or ".txt"
    fix = _convert_fix("tr '\\r' '\\n' <", path, piped, "queries.txt", "new" + ext)
    return DataError(f"{_shown(path, piped)}:{n}: a carriage return (\\r) inside the line, at column "
                     f"{text.index(chr(13)) + 1}: the {'input' if piped is not None else 'file'} has CR (old Mac) "
                     f"line endings; expected lines ending in \\n (or \\r\\n): convert them{fix}")


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
    return (f"; found {gz.name} beside it: gunzip it (gunzip -k {shell_quote(str(gz))}), BEIR files are read "
            "uncompressed") if gz.is_file() else ""


def _not_found(path: Path, what: str = "") -> DataError:
    """The error for a file ``path`` that is not there (:func:`_gz_hint`; ``what`` follows)."""
    return DataError(f"{path}: file not found{_gz_hint(path)}{what}")


def _refuse_gzip(path: Path, *, piped: Piped | None = None) -> None:
    """Refuse a gzip-compressed ``path`` (it begins with gzip's magic bytes), which would read as "not UTF-8"
    (``piped``: from standard input)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        how = (f"gunzip -k {shell_quote(str(path))}" if path.suffix == ".gz" and piped is None else
               _fix_command("zcat", path, piped, "queries.jsonl.gz", "plain" + path.suffix))
        raise DataError(f"{_shown(path, piped)}: is gzip-compressed; expected plain UTF-8 text: "
                        f"{'uncompress it on the way' if piped is not None else 'gunzip it first'} ({how})")


def _refuse_utf16(path: Path, head: bytes, *, piped: Piped | None = None) -> None:
    """Refuse ``path`` when its first bytes ``head`` are a UTF-16 or UTF-32 byte-order mark (a file saved as
    "Unicode" by Windows tools), which would read as "not UTF-8 (byte 0xff ...)" (``piped``: from standard
    input)."""
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
                      (b"\xfe\xff", "UTF-16")):
        if head.startswith(bom):
            fix = _convert_fix(f"iconv -f {name} -t UTF-8", path, piped, "queries.txt",
                               f"{path.stem}-utf8{path.suffix}")
            raise DataError(f"{_shown(path, piped)}: is {name} text (byte-order mark {bom.hex(' ')}); expected UTF-8: "
                            f"convert it{fix}")


def _refuse_packed(path: Path, *, piped: Piped | None = None) -> None:
    """Refuse a ``path`` that is gzip-compressed (:func:`_refuse_gzip`) or UTF-16 / UTF-32 text
    (:func:`_refuse_utf16`), naming the encoding and how to convert it (``piped``: standard input's, on the way),
    before its lines are read."""
    _refuse_gzip(path, piped=piped)
    with open(path, "rb") as f:
        _refuse_utf16(path, f.read(4), piped=piped)


def _check_id(did: str, path: str | os.PathLike[str], n: int) -> None:
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


def _read_jsonl(path: Path, *, kept: Collection[str] | None = None,
                piped: Piped | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of each record of the JSON Lines file ``path`` (:func:`_jsonl_blocks`)."""
    for lines, recs in _jsonl_blocks(path, kept=kept, piped=piped):
        yield from zip(lines, recs)


def _jsonl_blocks(path: Path, *, kept: Collection[str] | None = None,
                  piped: Piped | None = None) -> Iterator[tuple[Sequence[int], list[dict[str, Any]]]]:
    """The records of the JSON Lines file ``path`` (objects with an ``_id``, a string or an integer; blank lines
    skipped) with their line numbers, in blocks: :data:`~ragkit._corpus._JSONL_BLOCK` lines decoded and parsed at
    once (:func:`_parse_block`).  A block that fails there (a bad line, a blank one, a BOM past line 1, a lone
    surrogate escape, ...) is read line by line as before (:func:`_jsonl_line`), one record per block, so that every
    error is the one that line gave, naming the file (or ``piped``, the input it holds) and the line, and raised
    before any later line is read.  ``kept``: the fields the reader keeps (``None``: all), the only ones refused for
    a lone surrogate (:func:`_jsonl_line`)."""
    if not path.is_file():
        raise _not_found(path)
    _refuse_packed(path, piped=piped)
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
                    rec = _jsonl_line(path, n, raw, first, kept=kept, piped=piped)
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
    holds a lone surrogate escape (:func:`_lone_surrogate_escape`; a pair, an escaped emoji, is parsed here), a
    blank line, a line that is not one JSON value, or a value that is not an object whose ``_id`` is a non-empty
    string (or an integer) without a tab or line break.  One decode of the block, one
    ``json.loads`` of its lines joined into an array, and numpy passes over its bytes checking that the brackets
    outside strings close at the end of every line (:func:`_lines_close`): no value spans lines, so, the values
    being as many as the lines, each line is one value, as it is when parsed alone."""
    data = b"".join(raws)
    if at_start and data.startswith(codecs.BOM_UTF8):  # (line 1 is read as utf-8-sig)
        data = data[len(codecs.BOM_UTF8):]
    # (a lone surrogate, refused line by line: escaped emoji, \ud83d\ude00, stay in the block; a NUL, perhaps in an id)
    if _lone_surrogate_escape(data) or b"\\u0000" in data:
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


def _jsonl_line(path: Path, n: int, raw: bytes, first: bool, *, kept: Collection[str] | None = None,
                piped: Piped | None = None) -> dict[str, Any] | None:
    """The record of line ``n`` of ``path`` (its bytes ``raw``; ``first``: no record read before it), ``None`` for
    a blank line; a line that is not UTF-8, not JSON, a JSON array's opening line (the first), no object with an
    ``_id`` that is a string or an integer, a bad ``_id`` (:func:`_check_id`) or a lone surrogate in a field of
    ``kept`` (the fields the reader keeps, ``None``: all; one it drops is dropped whatever it holds) is a
    :class:`DataError` naming ``path:n`` (``piped``: the input it holds, :class:`Piped`)."""
    where = _shown(path, piped)
    line = utf8_line(raw, n, where, "BEIR files are UTF-8 JSON lines")
    if not line.strip():
        return None
    if first and line.lstrip().startswith("["):  # '[{...},' per line, pretty-printed, or all on one line
        fix = _convert_fix("jq -c '.[]'", path, piped, "queries.json", "new" + (path.suffix or ".jsonl"))
        raise DataError(f"{where}:{n}: this is a JSON array; expected JSON Lines: one object per line "
                        f"({{\"_id\": ..., ...}} on each line, no enclosing [ ]); convert it{fix}")
    try:
        rec = json.loads(text := line.rstrip("\r\n"))  # an unclosed last object: its column, not "line 2 column 1"
    except json.JSONDecodeError as e:
        if "\r" in text:  # CR-only line endings: the whole file is one line ("Extra data at column 151")
            raise _cr_endings(path, n, text, piped=piped) from None
        raise _malformed_line(path, n, text, e, piped=piped) from None
    if not isinstance(rec, dict) or "_id" not in rec:
        named = [k for k in rec if k.strip().casefold().replace("-", "_") in _ID_KEYS] if isinstance(rec, dict) else []
        rename = (f"; it has {named[0]!r}: rename that key to '_id' (BEIR's name for the id: "
                  f"{{\"_id\": ..., \"text\": ...}})" if named else "")
        raise DataError(f"{where}:{n}: expected an object with an '_id' field, got {line.strip()[:80]!r}{rename}")
    if not isinstance(rec["_id"], (str, int)) or isinstance(rec["_id"], bool):  # None / {} became 'None'
        raise DataError(f"{where}:{n}: '_id' must be a string (or an integer), got {type(rec['_id']).__name__} "
                        f"{rec['_id']!r:.40}")
    if isinstance(rec["_id"], str):
        _check_id(rec["_id"], where, n)
    if _lone_surrogate_escape(raw):  # JSON allows a lone \ud800-\udfff escape, no UTF-8 text (or tokenizer) does
        _check_no_lone_surrogate(rec if kept is None else {k: v for k, v in rec.items() if k in kept}, where, n)
    return rec
