"""A review's findings on the messages about query and corpus files: the command a fix suggests names the file as
the user gave it (``jq -c . 'sub/my corpus.jsonl'``, not the bare name, which fails from another folder); a JSON
array of query objects is refused as one, from a file or standard input alike (it was searched as a plain query
line); and a NUL in a TSV query id is refused naming the file and line, as in a JSON id."""

from __future__ import annotations

import json
import os

import pytest
from conftest import search_stdin

from ragkit.errors import DataError

#: (the quoting expected is a POSIX shell's: on Windows, shell_quote quotes as cmd.exe's programs read)
_POSIX = pytest.mark.skipif(os.name == "nt", reason="quoting for a POSIX shell")


@_POSIX
@pytest.mark.parametrize("text, fix", [
    (json.dumps({"_id": "d1", "text": "x"}, indent=2) + "\n", "jq -c . 'sub/my corpus.jsonl' > fixed.jsonl"),
    ('[{"_id": "d1", "text": "x"}]\n', "jq -c '.[]' 'sub/my corpus.jsonl' > new.jsonl"),
    ('{"_id": "d1", "text": "x"}\r{"_id": "d2", "text": "y"}\r', "tr '\\r' '\\n' < 'sub/my corpus.jsonl' > new.jsonl"),
])
def test_a_corpus_fix_names_the_file_as_given(tmp_path, monkeypatch, text, fix):
    from ragkit.eval.beir import read_corpus

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "my corpus.jsonl").write_text(text, newline="")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as e:
        read_corpus("sub/my corpus.jsonl")
    assert str(e.value).startswith("sub/my corpus.jsonl:1: ") and fix in str(e.value), str(e.value)


@_POSIX
@pytest.mark.parametrize("name, text, fix", [
    ("my q.tsv", "q1\tvitamin d\tgold\n", "cut -f1,2 'sub/my q.tsv' > queries.tsv"),
    ("my q.txt", "1 vitamin d\n2 statins\n", "sed 's/ /\\t/' 'sub/my q.txt' > queries.tsv"),
])
def test_a_query_file_fix_names_the_file_as_given(tmp_path, monkeypatch, caplog, name, text, fix):
    import logging

    from ragkit.eval.beir import read_query_file

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        read_query_file(f"sub/{name}")
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"sub/{name}:1: ")]
    assert len(said) == 1 and fix in said[0], said


def test_a_fix_never_writes_over_the_file_it_reads(tmp_path, monkeypatch):
    from ragkit.eval.beir import read_query_file

    (tmp_path / "new.txt").write_bytes(b"vitamin d\rstatins\r")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as e:
        read_query_file("new.txt")
    assert "tr '\\r' '\\n' < new.txt > new-fixed.txt" in str(e.value)


# a JSON array of query objects, in a file whatever its name or on standard input: refused as an array, with the fix

_ARRAY = '[{"_id": "q1", "text": "vitamin d"}]\n'


@pytest.mark.parametrize("text", [_ARRAY, "\n[\n  {\"_id\": \"q1\", \"text\": \"vitamin d\"}\n]\n",
                                  "\ufeff" + _ARRAY])
def test_a_json_array_of_queries_in_a_text_file_is_refused_as_one(tmp_path, text):
    from ragkit.eval.beir import is_jsonl_query_file, read_query_file

    path = tmp_path / "q.txt"
    path.write_text(text, encoding="utf-8")
    assert is_jsonl_query_file(path)
    with pytest.raises(DataError, match=r"q\.txt:\d: this is a JSON array; expected JSON Lines.*jq -c '\.\[\]'"):
        read_query_file(path)


@pytest.mark.parametrize("text", ["[draft] vitamin d\n", "[1, 2]\n", "[\n", "[] statins\n"])
def test_a_query_line_opening_a_bracket_is_still_a_query(tmp_path, text):
    from ragkit.eval.beir import is_jsonl_query_file, read_query_file

    path = tmp_path / "q.txt"
    path.write_text(text)
    assert not is_jsonl_query_file(path)
    assert read_query_file(path).texts == [text.rstrip("\n")]


def test_starts_json_object_takes_an_array_of_objects():
    from ragkit.eval.beir import starts_json_object

    assert starts_json_object(b'[{"_id": "q1"}]') and starts_json_object(b'\xef\xbb\xbf \n[ \n\t{')
    assert not starts_json_object(b"[draft] x") and not starts_json_object(b"[") and not starts_json_object(b"[ ")


def test_a_json_array_far_below_its_bracket_is_told_as_one(tmp_path):
    from ragkit.eval.beir import is_jsonl_query_file

    path = tmp_path / "q.txt"
    path.write_text("[" + "\n" * 200_000 + '{"_id": "q1", "text": "x"}]\n')  # (past the first block read)
    assert is_jsonl_query_file(path)


def test_a_json_array_on_stdin_is_refused_with_the_pipe_fix(two_doc_index):
    res = search_stdin(two_doc_index, _ARRAY)
    said = " ".join(res.output.split())  # (rich may wrap a long message)
    assert res.exit_code != 0, said
    assert "--queries - (standard input):1: this is a JSON array; expected JSON Lines" in said, said
    assert "convert it on the way, e.g. jq -c '.[]' queries.json | ragkit search ... --queries -" in said, said
    assert "stdin." not in said


# a NUL in a TSV query id: the file and the line, as a JSON '_id' holding one is refused

def test_a_nul_in_a_tsv_query_id_names_the_file_and_line(tmp_path):
    from ragkit.eval.beir import read_query_file

    path = tmp_path / "q.tsv"
    path.write_text("q0\tstatins\nq\x001\tvitamin d\n")
    with pytest.raises(DataError, match=r"q\.tsv:2: query id 'q\\x001' holds a NUL character \('\\x00'\) at "
                                        r"character 2; expected an id without one"):
        read_query_file(path)


def test_a_nul_in_a_tsv_query_id_on_stdin_names_standard_input(two_doc_index):
    res = search_stdin(two_doc_index, "q\x001\tvitamin d\n")
    said = " ".join(res.output.split())
    assert res.exit_code != 0 and "--queries - (standard input):1: query id 'q\\x001' holds a NUL" in said, said
