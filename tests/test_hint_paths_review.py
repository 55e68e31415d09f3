"""A review's findings on the messages about query and corpus files: the command a fix suggests names the file as
the user gave it (``jq -c . 'sub/my corpus.jsonl'``, not the bare name, which fails from another folder)."""

from __future__ import annotations

import json
import os

import pytest

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
