"""The shell commands that messages about query, corpus and qrels files suggest (a review's findings): a path is
quoted for the shell (``cut -f1,2 'my q.tsv'``), and ``ragkit search --queries -`` names standard input, not a
temporary file, with the fix in pipe form (``iconv ... | ragkit search ... --queries -``)."""

from __future__ import annotations

import gzip
import json
import logging
import os

import pytest
from conftest import search_stdin

from ragkit.errors import DataError

#: (the quoting expected is a POSIX shell's: on Windows, shell_quote quotes as cmd.exe's programs read)
_POSIX = pytest.mark.skipif(os.name == "nt", reason="quoting for a POSIX shell")


@_POSIX
@pytest.mark.parametrize("name, text, warned, fix", [
    ("my q.tsv", "q1\tvitamin d\tgold\n", "tab-separated columns", "cut -f1,2 '{path}' > queries.tsv"),
    ("my q.txt", "1 vitamin d\n2 statins\n", "separated by spaces", "sed 's/ /\\t/' '{path}' > queries.tsv"),
])
def test_a_query_file_warning_quotes_the_file_name(tmp_path, caplog, name, text, warned, fix):
    from ragkit.eval.beir import read_query_file

    path = tmp_path / name
    path.write_text(text)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        read_query_file(path)
    said = [r.getMessage() for r in caplog.records if warned in r.getMessage()]
    assert len(said) == 1 and fix.format(path=path) in said[0]


@_POSIX
def test_utf16_gzip_and_pretty_printed_hints_quote_the_path(tmp_path):
    from ragkit.eval.beir import read_corpus, read_query_file

    path = tmp_path / "my q.tsv"
    path.write_bytes("q1\tvitamin d\n".encode("utf-16"))
    with pytest.raises(DataError) as e:
        read_query_file(path)
    assert f"iconv -f UTF-16 -t UTF-8 '{path}' > 'my q-utf8.tsv'" in str(e.value)
    path.write_bytes(gzip.compress(b"q1\tvitamin d\n"))
    with pytest.raises(DataError) as e:
        read_query_file(path)
    assert f"zcat '{path}' > plain.tsv" in str(e.value)
    corpus = tmp_path / "my corpus.jsonl"
    corpus.write_text(json.dumps({"_id": "d1", "text": "x"}, indent=2) + "\n")
    with pytest.raises(DataError) as e:
        read_corpus(corpus)
    assert f"jq -c . '{corpus}' > fixed.jsonl" in str(e.value)
    corpus.write_text('[{"_id": "d1", "text": "x"}]\n')
    with pytest.raises(DataError) as e:
        read_corpus(corpus)
    assert f"jq -c '.[]' '{corpus}' > new.jsonl" in str(e.value)


# ragkit search --queries -: standard input is named as such, never the temporary file that holds it, and each
# fix is a command piped into ragkit search (not one reading 'stdin.txt' or writing a file)


def _no_temporary_file(said: str) -> None:
    assert "stdin." not in said and "ragkit-stdin-" not in said, said
    assert "--queries - (standard input) >" not in said, said


@pytest.mark.parametrize("data, wanted", [
    ("q1\tvitamin d\n".encode("utf-16"),
     "--queries - (standard input): is UTF-16 text (byte-order mark ff fe); expected UTF-8: convert it on the way, "
     "e.g. iconv -f UTF-16 -t UTF-8 queries.txt | ragkit search ... --queries -"),
    (b'{\n"_id": "q1", "text": "vitamin d"}\n',
     "--queries - (standard input):1: malformed JSON line"),
    (gzip.compress(b"q1\tvitamin d\n"),
     "--queries - (standard input): is gzip-compressed; expected plain UTF-8 text: uncompress it on the way "
     "(zcat queries.jsonl.gz | ragkit search ... --queries -)"),
    (b"q1\tvitamin d\rq2\tstatins\r", "convert them on the way, e.g. tr '\\r' '\\n' < queries.txt | ragkit search"),
    (b"q1\tvitamin \xe9\n", "--queries - (standard input):1: not UTF-8 (byte 0xe9 at column 12)"),
    (b'{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n',
     "--queries - (standard input):2: duplicate query id 'q1'"),
])
def test_search_stdin_errors_name_standard_input_and_a_pipe(two_doc_index, data, wanted):
    res = search_stdin(two_doc_index, data)
    said = " ".join(res.output.split())  # (rich may wrap a long message)
    assert res.exit_code != 0 and wanted in said, said
    _no_temporary_file(said)


def test_a_pretty_printed_query_on_stdin_is_told_to_go_through_jq(two_doc_index):
    res = search_stdin(two_doc_index, '{\n"_id":"q1"}\n')
    said = " ".join(res.output.split())
    assert res.exit_code != 0 and "convert it on the way, e.g. jq -c . queries.json | ragkit search ... --queries -" \
        in said, said
    _no_temporary_file(said)


@pytest.mark.parametrize("data, warned, starts, fix", [
    ("1 a\n2 b\n", "separated by spaces", "--queries - (standard input):1: every line starts",
     "sed 's/ /\\t/' queries.txt | ragkit search ... --queries -"),
    ("q1\tvitamin d\tgold\n", "tab-separated columns", "--queries - (standard input):1: expected 'id<TAB>text'",
     "cut -f1,2 queries.tsv | ragkit search ... --queries -"),
])
def test_search_stdin_warnings_name_standard_input(two_doc_index, caplog, data, warned, starts, fix):
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        res = search_stdin(two_doc_index, data)
    assert res.exit_code == 0, res.output
    said = [r.getMessage() for r in caplog.records if warned in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(starts) and fix in said[0], said
    _no_temporary_file(said[0])
