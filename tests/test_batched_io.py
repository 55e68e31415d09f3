"""Batched run and corpus conversions give what the per-query / per-document code gave: ``Run.to_dict``, the
corpus JSON Lines written by ``Corpus.save`` (byte for byte) and read by ``read_corpus`` (records, and every error
message for a bad line), against copies of the code before the change kept here; and a NUL in an id of a qrels or
TREC run file refused naming the file and line."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

import ragkit._corpus as T
from ragkit import Corpus
from ragkit._corpus import _jsonable
from ragkit._files import shell_quote, utf8_lines
from ragkit.errors import DataError
from ragkit.eval import _lines, _read, beir
from ragkit.eval.beir import read_qrels
from ragkit.run import Run


# ----------------------------------------------------------------------------- the code before the change
def _old_write_jsonl(corpus: Corpus, f: Any) -> None:
    """``Corpus._write_jsonl`` before the change: one ``json.dumps`` per document."""
    keys = list(corpus.metadata)
    for i, (d, t, x) in enumerate(zip(corpus.ids.tolist(), corpus.titles.tolist(), corpus.texts.tolist())):
        rec: dict[str, Any] = {"_id": d, "title": t, "text": x}
        if keys:
            try:
                rec["metadata"] = {k: _jsonable(corpus.metadata[k][i], k) for k in keys}
            except DataError as e:
                raise DataError(str(e).replace("Corpus.save: ", f"Corpus.save: document {d!r}: ", 1)
                                + "; or remove the document") from None
        f.write(json.dumps(rec, ensure_ascii=False, allow_nan=False) + "\n")


def _old_read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``ragkit.eval._lines._read_jsonl`` before the change: one ``json.loads`` per line."""
    if not path.is_file():
        raise _lines._not_found(path)
    _lines._refuse_gzip(path)
    first = True
    for n, raw, line in utf8_lines(path, "BEIR files are UTF-8 JSON lines"):
        if not line.strip():
            continue
        if first and line.lstrip().startswith("["):
            raise DataError(f"{path}:{n}: this is a JSON array; expected JSON Lines: one object per line "
                            "({\"_id\": ..., ...} on each line, no enclosing [ ]); convert it, e.g. "
                            f"jq -c '.[]' {shell_quote(str(path))} > new{path.suffix or '.jsonl'}")
        first = False
        try:
            rec = json.loads(text := line.rstrip("\r\n"))
        except json.JSONDecodeError as e:
            if "\r" in text:
                raise _lines._cr_endings(path, n, text) from None
            raise _lines._malformed_line(path, n, text, e) from None
        if not isinstance(rec, dict) or "_id" not in rec:
            raise DataError(f"{path}:{n}: expected an object with an '_id' field, got {line.strip()[:80]!r}")
        if not isinstance(rec["_id"], (str, int)) or isinstance(rec["_id"], bool):
            raise DataError(f"{path}:{n}: '_id' must be a string (or an integer), got {type(rec['_id']).__name__} "
                            f"{rec['_id']!r:.40}")
        if isinstance(rec["_id"], str):
            _lines._check_id(rec["_id"], path, n)
        if _lines._SURROGATE.search(raw):
            _lines._check_no_lone_surrogate(rec, path, n)
        yield n, rec


def _old_read_corpus(path: Path) -> Corpus:
    """``read_corpus`` before the change, over :func:`_old_read_jsonl`."""
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    metas: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for n, rec in _old_read_jsonl(path):
        did = str(rec["_id"])
        if did in seen:
            raise DataError(f"{path}:{n}: duplicate document id {did!r} (first on line {seen[did]})")
        seen[did] = n
        if "text" not in rec and "title" not in rec:
            raise DataError(f"{path}:{n}: document {did!r} has neither a 'text' nor a 'title' field (keys: "
                            f"{sorted(rec)}); a BEIR corpus line is {{\"_id\", \"title\", \"text\"}}")
        ids.append(did)
        titles.append(_read._text(rec.get("title"), path, n, "title"))
        texts.append(_read._text(rec.get("text"), path, n, "text"))
        meta = rec.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise DataError(f"{path}:{n}: document {did!r} has 'metadata' {str(meta)[:60]!r} ({type(meta).__name__}); "
                            "expected an object of field -> value")
        metas.append(meta or {})
    if not ids:
        raise DataError(f"{path}: the corpus is empty")
    keys = sorted({k for m in metas if isinstance(m, dict) for k in m})
    meta = {k: np.fromiter((m.get(k) if isinstance(m, dict) else None for m in metas), dtype=object, count=len(metas))
            for k in keys}
    return Corpus(ids=np.array(ids, dtype=object), texts=np.array(texts, dtype=object),
                  titles=np.array(titles, dtype=object), metadata=meta)



# ----------------------------------------------------------------------------- tests
def _run(n_q: int, n_docs: int, depth: int, seed: int = 0) -> Run:
    rng = np.random.default_rng(seed)
    ids = np.array([f"d{i}" for i in range(n_docs)], dtype=object)
    rows = np.argsort(rng.random((n_q, n_docs)), axis=1)[:, :depth]
    scores = -np.sort(-rng.random((n_q, depth)).astype(np.float32), axis=1)
    return Run([f"q{i}" for i in range(n_q)], [ids[r] for r in rows], list(scores))


@pytest.mark.parametrize("k", [None, 1])
def test_to_dict_names_the_first_query_listing_a_document_twice(k: Any) -> None:
    run = Run(["a", "b", "c"], [np.array(["x", "y"]), np.array(["x", "z", "x"]), np.array(["w", "w"])],
              [np.array([2.0, 1.0]), np.array([3.0, 2, 1]), np.array([1.0, 0.5])])
    with pytest.raises(DataError, match="query 'b'"):
        run.to_dict(k)


def _both_written(corpus: Corpus) -> str:
    new, old = io.StringIO(), io.StringIO()
    errors = []
    for write in (corpus._write_jsonl, lambda f: _old_write_jsonl(corpus, f)):
        try:
            write(new if not errors else old)
            errors.append(None)
        except DataError as e:
            errors.append(str(e))
    assert errors[0] == errors[1]
    if errors[0] is None:
        assert new.getvalue() == old.getvalue()
    return errors[0] or new.getvalue()


TEXTS = ["a\nb", 'q"uo\\te', "caf\u00e9 \u2028 x\ty", "", "{} {{x}}", "\x01\x1f", "emoji \U0001F600", "}, {"]


@pytest.mark.parametrize("block", [1, 3, 10000])
def test_saved_corpus_is_byte_identical(block: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(T, "_JSONL_BLOCK", block)
    ids = [f"d{i}" for i in range(8)]
    assert _both_written(Corpus(ids=ids, texts=TEXTS, titles=TEXTS[::-1])).count("\n") == 8
    md = {"i": np.arange(8), "f": np.array([0.1, np.nan, 1e300, -0.0, 2, 3, 4, 5.5]), "b": np.array([True, False] * 4),
          "o": np.array(["x", None, 3, True, "y", "z", "\n", "w"], dtype=object),
          "f32": np.array([0.1] * 8, np.float32),
          "lst": np.array([[1, "a"], None, {"k": [1, 2]}, [], "s", 1.5, float("nan"), [0.1]], dtype=object),
          'we{ir}d"key': np.array(["v"] * 8, dtype=object)}
    corpus = Corpus(ids=ids, texts=TEXTS, metadata=md)
    text = _both_written(corpus)
    assert [json.loads(line)["metadata"]["lst"] for line in text.split("\n")[:-1]][:3] == [[1, "a"], None, {"k": [1, 2]}]  # noqa: E501
    corpus.save(tmp_path / "c.jsonl")
    assert (tmp_path / "c.jsonl").read_text(encoding="utf-8") == text


@pytest.mark.parametrize("block", [1, 3, 10000])
def test_save_names_the_first_document_whose_metadata_fails(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T, "_JSONL_BLOCK", block)
    ids = [f"d{i}" for i in range(8)]
    inf_at_2 = np.array([1.0, 2, np.inf, 1, 1, 1, 1, 1])
    inf_from_5 = np.array([1.0] * 5 + [np.inf] * 3)
    date_at_4 = np.array(["a", "b", "c", "d", np.datetime64("2020-01-01"), "x", "y", "z"], dtype=object)
    for md, doc in (({"ok": np.arange(8), "bad": inf_at_2}, "d2"), ({"late": inf_from_5, "bad": date_at_4}, "d4")):
        assert f"document '{doc}'" in _both_written(Corpus(ids=ids, texts=TEXTS, metadata=md))


good = ['{"_id": "d%d", "title": "t%d", "text": "x %d"}' % (i, i, i) for i in range(7)]
cases = {
 "plain": "\n".join(good) + "\n",
 "noeol": "\n".join(good),
 "crlf": "\r\n".join(good) + "\r\n",
 "bom": "\ufeff" + "\n".join(good),
 "blank": "\n".join(good[:2] + ["", "  "] + good[2:]),
 "cronly": "\r".join(good),
 "dup": "\n".join(good + [good[1]]),
 "dup_within": "\n".join(good[:2] + [good[0]] + good[2:]),
 "nulltitle": "\n".join(good + ['{"_id": "z", "title": null, "text": "a"}', '{"_id": "y", "text": "b"}']),
 "neither": "\n".join(good + ['{"_id": "z", "title": null}', '{"_id": "w", "contents": "b"}']),
 "neither2": "\n".join(good + ['{"_id": "w", "contents": "b"}']),
 "numtext": "\n".join(good + ['{"_id": "z", "text": 5}']),
 "intid": "\n".join(good + ['{"_id": 5, "text": "a"}', '{"_id": "5", "text": "b"}']),
 "boolid": "\n".join(good + ['{"_id": true, "text": "a"}']),
 "emptyid": "\n".join(good + ['{"_id": "", "text": "a"}']),
 "tabid": "\n".join(good + ['{"_id": "a\\tb", "text": "a"}']),
 "noid": "\n".join(good + ['{"text": "a"}']),
 "array": "[\n" + ",\n".join(good) + "\n]",
 "array1": "[" + ",".join(good) + "]",
 "malformed": "\n".join(good[:4] + ['{"_id": "z", "text": "a"'] + good[4:]),
 "span": "\n".join(good[:2] + ['{"_id": "z", "t": [[', ']], "text": "q"}', '{"_id": "a1", "text": "x"}, {"_id": "a2", "text": "y"}'] + good[2:]),  # noqa: E501
 "twoper": "\n".join(good[:2] + ['{"_id": "a1", "text": "x"}, {"_id": "a2", "text": "y"}'] + good[2:]),
 "notobj": "\n".join(good + ['[1]']),
 "meta": "\n".join(good + ['{"_id": "m", "text": "a", "metadata": {"k": [1, 2], "j": null}}', '{"_id": "m2", "text": "a", "metadata": null}', '{"_id": "m3", "text": "a", "metadata": {"k": [3, 4]}}']),  # noqa: E501
 "badmeta": "\n".join(good + ['{"_id": "m", "text": "a", "metadata": [1]}']),
 "surrogate": "\n".join(good + ['{"_id": "m", "text": "a \\ud800 b"}']),
 "surrogate_ok": "\n".join(good + ['{"_id": "m", "text": "a \\ud83d\\ude00 b"}']),
 "strings": "\n".join(good + [json.dumps({"_id": "s", "text": "a\"}\n{[\\", "title": "]}\\\\"})]),
 "nan": "\n".join(good + ['{"_id": "n", "text": "a", "metadata": {"v": NaN}}']),
 "notutf8": b"\n".join([g.encode() for g in good[:4]] + [b'{"_id": "z", "text": "\xff"}'] + [g.encode() for g in good[4:]]),  # noqa: E501
 "bom_mid": "\n".join(good[:4] + ["\ufeff" + good[4]]),
 "uniblank": "\n".join(good[:4] + ["\u00a0", "\x1c"] + good[4:]),
 "bare_cr_inside": "\n".join(good[:4] + ['{"_id": "z",\r "text": "a"}'] + good[4:]),
 "empty": "",
}


def _read_both(path: Path) -> tuple:
    out = []
    for read in (beir.read_corpus, _old_read_corpus):
        try:
            c = read(path)
            out.append(("ok", c.ids.tolist(), c.titles.tolist(), c.texts.tolist(),
                        {k: v.tolist() for k, v in c.metadata.items()}))
        except DataError as e:
            out.append(("error", str(e)))
    assert out[0] == out[1]
    return out[0]


@pytest.mark.parametrize("block", [1, 2, 3, 10000])
@pytest.mark.parametrize("name", sorted(cases))
def test_read_corpus_gives_what_it_gave_line_by_line(name: str, block: int, monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setattr(_lines, "_JSONL_BLOCK", block)
    text = cases[name]
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    got = _read_both(path)
    if name in ("span", "twoper", "malformed", "notutf8", "bom_mid", "dup_within", "boolid"):
        assert got[0] == "error" and f"{path}:" in got[1]


def test_saved_corpus_reads_back(tmp_path: Path) -> None:
    corpus = Corpus(ids=[f"d{i}" for i in range(25)], texts=[f"text {i}" for i in range(25)],
                    metadata={"year": np.arange(25), "tag": np.array(["a", None] * 12 + ["b"], dtype=object)})
    corpus.save(tmp_path / "c.jsonl")
    got = _read_both(tmp_path / "c.jsonl")
    assert got[1] == corpus.ids.tolist() and got[4]["year"] == list(range(25))


def test_nul_in_a_qrels_id_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td\x002\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test.tsv:3: document id 'd\\x002' holds a NUL character .* at character 2"):
        read_qrels(path)
    path.write_text("q\x001 0 d1 1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test.tsv:1: query id 'q\\x001' holds a NUL"):
        read_qrels(path)


def test_nul_in_a_run_file_id_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    path.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d\x00x 2 1.0 t\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"run.trec:2: document id 'd\\x00x' holds a NUL character"):
        Run.read_trec(path)
    path.write_text("q1 Q0 d1 1 2.0 t\nq\x00 Q0 d1 2 1.0 t\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"run.trec:2: query id 'q\\x00' holds a NUL"):
        Run.read_trec(path)


def test_lines_close_reads_strings_as_the_json_parser_does() -> None:
    rng = np.random.default_rng(0)
    alphabet = list('ab"\\{}[]\n\t,: \u00e9\U0001F600')
    for _ in range(300):
        recs = [{"_id": f"d{i}", "text": "".join(rng.choice(alphabet, int(rng.integers(0, 12)))),
                 "m": {"k": ["".join(rng.choice(alphabet, 3))]}} for i in range(int(rng.integers(1, 6)))]
        lines = [json.dumps(r, ensure_ascii=bool(rng.integers(2))) for r in recs]
        assert _lines._lines_close("\n".join(lines).encode())
        cut = json.dumps(recs[0]).replace(', "m"', ',\n"m"', 1)  # one record over two lines
        assert not _lines._lines_close("\n".join([cut, *lines[1:]]).encode())
