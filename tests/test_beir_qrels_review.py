"""A BEIR dataset's qrels (a review's findings): read once per call, a folder without ``qrels/`` names the split it
lacks, and a DataFrame column named ``document`` is no document id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragkit.errors import DataError


def _dataset(root: Path, qrels: str | None) -> Path:
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "", "text": "vitamin d"}) + "\n")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "vitamin"}) + "\n")
    if qrels is not None:
        (root / "qrels").mkdir()
        (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


@pytest.fixture
def parses(monkeypatch) -> list[Path]:
    """The qrels files parsed (``_read_qrels``, which ``read_qrels`` calls too), in order."""
    from ragkit.eval import _read, beir

    calls: list[Path] = []
    parse = _read._read_qrels

    def counted(path):
        calls.append(path)
        return parse(path)

    monkeypatch.setattr(_read, "_read_qrels", counted)
    monkeypatch.setattr(beir, "_read_qrels", counted)
    return calls


def _loaded(root: Path):
    from ragkit.eval.beir import BeirDataset, read_corpus

    return BeirDataset(root, read_corpus(root / "corpus.jsonl"))


def test_qrels_of_a_split_are_parsed_once_when_a_judged_document_is_unknown(tmp_path, parses, caplog):
    data = _loaded(_dataset(tmp_path / "d", "q1\td1\t1\nq1\td9\t1\n"))
    with caplog.at_level("WARNING", logger="ragkit"):
        assert data.qrels("test") == {"q1": {"d1": 1, "d9": 1}}
    assert len(parses) == 1
    said = [r.getMessage() for r in caplog.records if "not in corpus.jsonl" in r.getMessage()]
    assert len(said) == 1 and "'d9' is judged for query 'q1' on line 3 of test.tsv" in said[0]


def test_an_unknown_judged_query_is_named_at_its_line_from_one_parse(tmp_path, parses):
    data = _loaded(_dataset(tmp_path / "d", "q1\td1\t1\nq7\td1\t1\n"))
    with pytest.raises(DataError, match=r"test\.tsv:3: query id 'q7', judged on this line, is not in"):
        data.qrels("test")
    assert len(parses) == 1


def test_a_folder_without_qrels_names_the_split_it_lacks(tmp_path):
    from ragkit.eval.beir import _qrels_file

    root = _dataset(tmp_path / "d", None)
    with pytest.raises(DataError, match=r"no qrels for split 'test'; available splits: \[\]"):
        _qrels_file(root, "test")
    with pytest.raises(DataError, match=r"no qrels for split 'test'"):
        _loaded(root).qrels("test")


def test_compare_with_data_lacking_qrels_is_an_error_not_a_traceback(tmp_path):
    from typer.testing import CliRunner

    from ragkit.cli import app

    root = _dataset(tmp_path / "d", None)
    for name in ("a.run", "b.run"):
        (tmp_path / name).write_text("q1 Q0 d1 1 1.0 x\n")
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "a.run"), str(tmp_path / "b.run"), "--data", str(root)],
                             env={"COLUMNS": "300"})
    said = " ".join(res.output.split())
    assert res.exit_code != 0 and not isinstance(res.exception, FileNotFoundError), said
    assert "no qrels for split 'test'" in said, said


@pytest.mark.parametrize("header", ["query-id\tcorpus-id\tscore", "Query_ID\tCorpus-Id\tSCORE",
                                    " query_id \tcorpus_id\tScore"])
def test_beirs_header_however_spelt_reads_its_lines_by_position(tmp_path, header):
    from ragkit.eval._read import _named_columns
    from ragkit.eval.beir import read_qrels

    assert _named_columns(header.split("\t"), tmp_path / "test.tsv", 1) is None
    path = tmp_path / "test.tsv"
    path.write_text(header + "\nq1\td1\t1\nq2 0 d2 2\n")  # (trec_eval's 4 columns under it, as always)
    assert read_qrels(path) == {"q1": {"d1": 1}, "q2": {"d2": 2}}


def test_a_frame_column_named_document_is_no_document_id():
    pd = pytest.importorskip("pandas")
    from ragkit.types import as_qrels

    frame = pd.DataFrame({"qid": ["q1"], "document": ["some long text"], "label": [1]})  # (texts, not ids)
    with pytest.raises(DataError, match=r"none named as document ids .*if 'document' holds the document ids: "
                                        r"df\.rename\(columns=\{'document': 'corpus-id'\}\)"):
        as_qrels(frame, "evaluate")
    assert as_qrels(frame.rename(columns={"document": "document_id"}), "evaluate") == {"q1": {"some long text": 1}}
