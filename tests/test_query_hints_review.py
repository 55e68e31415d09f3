"""The shell commands that messages about query, corpus and qrels files suggest (a review's findings): a path is
quoted for the shell (``cut -f1,2 'my q.tsv'``), and ``ragkit search --queries -`` names standard input, not a
temporary file, with the fix in pipe form (``iconv ... | ragkit search ... --queries -``)."""

from __future__ import annotations

import gzip
import json
import logging
import os

import pytest

from ragkit.errors import DataError

#: (the quoting expected is a POSIX shell's: on Windows, shell_quote quotes as cmd.exe's programs read)
_POSIX = pytest.mark.skipif(os.name == "nt", reason="quoting for a POSIX shell")


@_POSIX
def test_a_three_column_query_tsv_warning_quotes_the_file_name(tmp_path, caplog):
    from ragkit.eval.beir import read_query_file

    path = tmp_path / "my q.tsv"
    path.write_text("q1\tvitamin d\tgold\n")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        read_query_file(path)
    said = [r.getMessage() for r in caplog.records if "tab-separated columns" in r.getMessage()]
    assert len(said) == 1 and "cut -f1,2 'my q.tsv' > queries.tsv" in said[0]


@_POSIX
def test_a_spaced_id_warning_quotes_the_file_name(tmp_path, caplog):
    from ragkit.eval.beir import read_query_file

    path = tmp_path / "my q.txt"
    path.write_text("1 vitamin d\n2 statins\n")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        read_query_file(path)
    said = [r.getMessage() for r in caplog.records if "separated by spaces" in r.getMessage()]
    assert len(said) == 1 and "sed 's/ /\\t/' 'my q.txt' > queries.tsv" in said[0]


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
    assert "jq -c . 'my corpus.jsonl' > fixed.jsonl" in str(e.value)
    corpus.write_text('[{"_id": "d1", "text": "x"}]\n')
    with pytest.raises(DataError) as e:
        read_corpus(corpus)
    assert "jq -c '.[]' 'my corpus.jsonl' > new.jsonl" in str(e.value)
