"""A reviewer's own dataset (not BEIR): headerless qrels frames, extra corpus fields, qrels headers with other
names, folders laid out otherwise, quoted grades.  Each error or warning says what it found."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from ragkit import Queries, TrainSet
from ragkit.errors import DataError
from ragkit.eval import load_beir, read_corpus, read_qrels


def test_headerless_frame_rename_hint_uses_the_integer_labels(tmp_path: Path) -> None:
    path = tmp_path / "qrels.tsv"
    path.write_text("q1\td1\t1\nq2\td2\t1\n")
    df = pd.read_csv(path, sep="\t", header=None)
    with pytest.raises(DataError) as e:
        TrainSet(Queries(["q1", "q2"], ["a", "b"]), df)
    hint = "df.rename(columns={0: 'query-id', 1: 'corpus-id', 2: 'score'})"
    assert hint in str(e.value)
    fixed = df.rename(columns={0: "query-id", 1: "corpus-id", 2: "score"})  # the hint, applied, works
    assert TrainSet(Queries(["q1", "q2"], ["a", "b"]), fixed).qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}


def test_corpus_extra_fields_warned_once_naming_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(f'{{"_id": "d{i}", "title": "t", "text": "x", "source": "s", "year": {i}}}\n'
                            for i in range(3)))
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        corpus = read_corpus(path)
    said = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(said) == 1
    assert str(path) in said[0] and "'source', 'year'" in said[0] and "'metadata'" in said[0]
    assert list(corpus.ids) == ["d0", "d1", "d2"] and list(corpus.metadata) == []  # what is loaded: unchanged


def test_corpus_without_extra_fields_not_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "d1", "title": "t", "text": "x", "metadata": {"source": "s"}}\n')
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        corpus = read_corpus(path)
    assert not caplog.records and list(corpus.metadata) == ["source"]


def test_qrels_header_other_names_read_by_name(tmp_path: Path) -> None:
    path = tmp_path / "qrels.tsv"
    path.write_text("docno\tqid\tlabel\nd1\tq1\t1\nd2\tq1\t0\n")
    assert read_qrels(path) == {"q1": {"d1": 1, "d2": 0}}


def test_qrels_header_naming_nothing_read_by_position_with_a_warning(tmp_path: Path, caplog) -> None:
    path = tmp_path / "qrels.tsv"
    path.write_text("foo\tbar\tbaz\nq1\td1\t1\n")
    with caplog.at_level("WARNING", logger="ragkit"):
        assert read_qrels(path) == {"q1": {"d1": 1}}
    assert "qrels.tsv:1: line 1 'foo\\tbar\\tbaz' is read as a header" in caplog.text
    assert "read by position" in caplog.text


@pytest.mark.parametrize("header", ["qid\tQ0\tpid\trel", "qid iter pid rel", "query_id\tQ0\tpassage_id\trelevance",
                                    "topic\titeration\tdocno\trelevance", "topic\titer\tdocument\tjudgement",
                                    "topic\tdocument\tjudgement", "qid\t0\tdocno\trel"])
def test_trec_and_msmarco_headers_read_as_before(tmp_path: Path, header: str) -> None:
    """Headers of trec_eval's and MS MARCO's qrels (4 columns where trec_eval has them, or names ragkit knows in
    BEIR's 3 places) read by position, as before the headers were read by name."""
    path = tmp_path / "qrels.tsv"
    sep = "\t" if "\t" in header else " "
    row = sep.join(["q1", "0", "d1", "1"] if len(header.split(sep)) == 4 else ["q1", "d1", "1"])
    path.write_text(f"{header}\n{row}\n")
    assert read_qrels(path) == {"q1": {"d1": 1}}


def test_qrels_header_naming_some_columns_refused(tmp_path: Path) -> None:
    path = tmp_path / "qrels.tsv"
    path.write_text("foo\tqid\trel\nd1\tq1\t1\n")  # (qid where BEIR has the document ids: not read by position)
    with pytest.raises(DataError, match=r"none named as document ids.*if 'foo' holds the document ids: fix the "
                                        r"header on line 1, renaming its columns \{'foo': 'corpus-id'\}"):
        read_qrels(path)


def test_beir_header_still_positional(tmp_path: Path) -> None:
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\t0\td1\t1\nq1\td2\t2\n")
    assert read_qrels(path) == {"q1": {"d1": 1, "d2": 2}}


def test_quoted_grades_name_line_1(tmp_path: Path) -> None:
    path = tmp_path / "qrels.tsv"
    path.write_text('q1\td1\t"1"\nq2\td2\t"1"\n')
    with pytest.raises(DataError, match=r'qrels.tsv:1: line 1 .*its grade "1" is quoted'):
        read_qrels(path)


def _folder(tmp_path: Path) -> Path:
    d = tmp_path / "mine"
    d.mkdir()
    (d / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "x"}\n')
    return d


def test_queries_tsv_instead_of_jsonl_named(tmp_path: Path) -> None:
    d = _folder(tmp_path)
    (d / "queries.tsv").write_text("q1\thello\n")
    with pytest.raises(DataError, match=r"queries.jsonl: file not found.*found queries.tsv, another format: "
                                        r"convert the folder with ragkit.eval.write_beir\(folder, corpus, queries, "
                                        r"qrels\)"):
        load_beir(d)


def test_qrels_folder_missing_names_write_beir(tmp_path: Path) -> None:
    d = _folder(tmp_path)
    (d / "queries.jsonl").write_text('{"_id": "q1", "text": "hello"}\n')
    (d / "test.tsv").write_text("q1\td1\t1\n")
    with pytest.raises(DataError, match=r"qrels: folder not found.*found test.tsv beside corpus.jsonl; convert the "
                                        r"folder with ragkit.eval.write_beir"):
        load_beir(d)


def test_split_as_csv_named(tmp_path: Path) -> None:
    d = _folder(tmp_path)
    (d / "queries.jsonl").write_text('{"_id": "q1", "text": "hello"}\n')
    (d / "qrels").mkdir()
    (d / "qrels" / "train.tsv").write_text("q1\td1\t1\n")
    (d / "qrels" / "test.csv").write_text("query-id,corpus-id,score\nq1,d1,1\n")
    with pytest.raises(DataError, match=r"no qrels for split 'test'; found qrels/test.csv.*read_qrels.*write_beir"
                                        r".*available splits: \['train'\]"):
        load_beir(d).qrels("test")


@pytest.mark.parametrize("key", ["id", "doc_id"])
def test_corpus_id_key_rename_suggested(tmp_path: Path, key: str) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(f'{{"{key}": "d1", "title": "t", "text": "x"}}\n')
    with pytest.raises(DataError, match=f"corpus.jsonl:1: expected an object with an '_id' field.*it has {key!r}: "
                                        "rename that key to '_id'"):
        read_corpus(path)
