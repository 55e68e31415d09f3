"""Input files as users write them (a review's findings): JSON Lines of queries named otherwise than ``.jsonl``,
ids separated by spaces, a third TSV column (warned of), ids a TREC run cannot hold, judged documents spelled
otherwise, a byte-order mark before an eval JSON, underscores in numbers, pretty-printed JSON, gzip and UTF-16."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from ragkit.errors import DataError

DOCS = [("d1", "vitamin d and cancer risk"), ("14717500 ", "statins lower cholesterol"),
        ("d3", "exercise and sleep quality"), ("d4", "coffee and heart disease")]
QUERIES = [("q1", "vitamin d cancer"), ("q2", "statins cholesterol"), ("q3", "sleep exercise")]
#: :data:`DOCS` with ids a run file can hold
PLAIN = [("d1", DOCS[0][1]), ("d2", DOCS[1][1]), *DOCS[2:]]


def _cli(*args: object, input: bytes | None = None):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], input=input, env={"COLUMNS": "300"})


def _dataset(root: Path, docs: list[tuple[str, str]] = DOCS, qrels: str = "q1\td1\t1\nq2\td4\t1\nq3\td3\t1\n") -> Path:
    """A small BEIR folder: ``docs``, :data:`QUERIES`, and the test split's ``qrels`` lines under BEIR's header."""
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


def _jsonl_queries() -> str:
    return "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES)


# 1. JSON Lines of queries are told by their content (and by .jsonl / .ndjson / .json, case aside), as stdin is

@pytest.mark.parametrize("name", ["q.json", "q.JSONL", "q.ndjson", "q.txt", "queries"])
def test_query_file_of_json_lines_is_read_as_such_whatever_its_name(tmp_path, name):
    from ragkit.eval.beir import read_query_file

    path = tmp_path / name
    path.write_text("\n" + _jsonl_queries())  # (a blank line first: the first character that is not blank counts)
    queries = read_query_file(path)
    assert queries.ids == ["q1", "q2", "q3"]
    assert list(queries.texts) == [t for _, t in QUERIES]


def test_search_reads_a_json_named_query_file_as_json_lines(tmp_path):
    from ragkit.eval.beir import read_corpus
    from retrievers.bm25 import BM25

    data = _dataset(tmp_path / "d", docs=PLAIN)
    BM25(k=2).fit(read_corpus(data / "corpus.jsonl")).save(tmp_path / "ix")
    (tmp_path / "q.json").write_text(_jsonl_queries())
    res = _cli("search", "--index", tmp_path / "ix", "--queries", tmp_path / "q.json", "--run", "-", "--k", "1")
    assert res.exit_code == 0, res.output
    assert [line.split()[0] for line in res.stdout.splitlines() if " Q0 " in line] == ["q1", "q2", "q3"]


# 2. ids separated by spaces are warned of; a third TSV column is refused

def test_query_lines_of_an_id_and_a_space_are_warned_of(tmp_path, caplog):
    from ragkit.eval.beir import read_query_file

    path = tmp_path / "q.tsv"
    path.write_text("1 vitamin d cancer\n3 statins cholesterol\n")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        queries = read_query_file(path)
    assert queries.ids == ["1", "2"]  # (read as before: one query per line)
    said = [r.getMessage() for r in caplog.records if "separated by spaces" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"{path}:1: ") and "a tab as the separator" in said[0]


def test_plain_queries_not_starting_with_numbers_are_not_warned_of(tmp_path, caplog):
    from ragkit.eval.beir import read_query_file

    path = tmp_path / "q.txt"
    path.write_text("1 vitamin d cancer\nstatins and cholesterol\n")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        read_query_file(path)
    assert not [r for r in caplog.records if "separated by spaces" in r.getMessage()]


def test_a_query_tsv_line_of_three_columns_is_warned_of_naming_it(tmp_path, caplog):
    from ragkit.eval.beir import read_query_file

    path = tmp_path / "q.tsv"
    path.write_text("q1\tvitamin d cancer\nq2\tstatins cholesterol\tgold answer\n")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        queries = read_query_file(path)
    assert list(queries.texts) == ["vitamin d cancer", "statins cholesterol\tgold answer"]  # (kept, as before)
    said = [r.getMessage() for r in caplog.records if "got 3 tab-separated columns" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"{path}:2: expected 'id<TAB>text'") and "cut -f1,2" in said[0]
    caplog.clear()
    path.write_text("q1\tvitamin d cancer\t\n")  # (a trailing tab ends no column)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert list(read_query_file(path).texts) == ["vitamin d cancer"]
    assert not [r for r in caplog.records if "columns" in r.getMessage()]


# 3. ids a TREC run cannot hold are refused before any work, naming the file and the line

def test_eval_run_refuses_a_corpus_id_with_whitespace_naming_its_line(tmp_path, monkeypatch):
    from retrievers.bm25 import BM25

    def no_fit(*a, **k):
        raise AssertionError("fitted before the ids were checked")

    monkeypatch.setattr(BM25, "fit", no_fit)
    data = _dataset(tmp_path / "d")
    monkeypatch.chdir(tmp_path)
    res = _cli("eval", "--data", data, "-p", "bm25", "--run", "t.run", "-o", "o.json")
    assert res.exit_code != 0
    assert (f"{data / 'corpus.jsonl'}:2: --run t.run: cannot write a TREC run file: document id '14717500 ' holds "
            "whitespace (' ' at character 9 of 9, its end)") in " ".join(res.output.split())
    assert not (tmp_path / "t.run").exists() and not (tmp_path / "o.json").exists()


def test_search_run_refuses_an_index_id_with_whitespace_naming_it(tmp_path):
    from ragkit.eval.beir import read_corpus
    from retrievers.bm25 import BM25

    data = _dataset(tmp_path / "d")
    BM25(k=2).fit(read_corpus(data / "corpus.jsonl")).save(tmp_path / "ix")
    res = _cli("search", "--index", tmp_path / "ix", "vitamin", "--run", tmp_path / "t.run")
    said = " ".join(res.output.split())
    assert res.exit_code != 0 and "document id '14717500 ' holds whitespace" in said
    assert "(its corpus)" in said or "corpus.jsonl:" in said
    assert not (tmp_path / "t.run").exists()


# 4. a judged document the corpus lacks, spelled otherwise: its line and the respelling

def test_unknown_judged_document_names_its_line_and_the_id_meant(tmp_path, caplog):
    from ragkit.eval.beir import load_beir

    data = _dataset(tmp_path / "d", docs=[("d1", DOCS[0][1]), ("14717500", DOCS[1][1]), *DOCS[2:]],
                    qrels="q1\td1\t1\nq2\t14717500 \t1\nq3\td3\t1\n")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        load_beir(data).qrels("test")
    said = [r.getMessage() for r in caplog.records if "not in corpus.jsonl" in r.getMessage()]
    assert len(said) == 1
    assert "'14717500 ' is judged for query 'q2' on line 3 of test.tsv" in said[0]
    assert "is '14717500' meant?" in said[0]


# 5. an eval JSON saved with a UTF-8 byte-order mark is read as one

def test_compare_reads_an_eval_json_with_a_byte_order_mark(tmp_path):
    from ragkit.eval.compare import load_result

    data = _dataset(tmp_path / "d", docs=PLAIN)
    res = _cli("eval", "--data", data, "-p", "bm25", "-o", tmp_path / "a.json")
    assert res.exit_code == 0, res.output
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "a.json").read_bytes())
    assert load_result(bom).per_query == load_result(tmp_path / "a.json").per_query


# 6. underscores in numbers, pretty-printed JSON, gzip and UTF-16 files

def test_a_run_score_with_an_underscore_is_refused(tmp_path):
    from ragkit.run import Run

    path = tmp_path / "r.trec"
    path.write_text("q1 Q0 d1 1 2.5 x\nq1 Q0 d2 2 1_0 x\n")
    with pytest.raises(DataError, match=r"r\.trec:2: score '1_0' holds an underscore"):
        Run.read_trec(path)


def test_a_qrels_grade_with_an_underscore_is_refused(tmp_path):
    from ragkit.eval.beir import read_qrels

    path = tmp_path / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1_0\n")
    with pytest.raises(DataError, match=r"test\.tsv:3: relevance '1_0' holds an underscore"):
        read_qrels(path)


def test_a_pretty_printed_corpus_record_is_told_how_to_convert(tmp_path):
    from ragkit.eval.beir import read_corpus

    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"_id": "d1", "text": "x"}, indent=2) + "\n" + json.dumps({"_id": "d2", "text": "y"}))
    with pytest.raises(DataError, match=r"corpus\.jsonl:1: malformed JSON line .*jq -c \. \S*corpus\.jsonl > "
                                        r"fixed\.jsonl"):
        read_corpus(path)
    path.write_text('{"_id": "d1", "text": "x"}\n{"_id": "d2", "text": "cut sh\n')  # (a line cut short: no hint)
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: malformed JSON line") as e:
        read_corpus(path)
    assert "jq" not in str(e.value)


def test_gzip_and_utf16_query_files_are_named_as_such(tmp_path):
    from ragkit.eval.beir import read_query_file

    gz = tmp_path / "q.jsonl.gz"
    gz.write_bytes(gzip.compress(_jsonl_queries().encode()))
    with pytest.raises(DataError, match=r"q\.jsonl\.gz: is gzip-compressed.*gunzip -k"):
        read_query_file(gz)
    utf16 = tmp_path / "q.tsv"
    utf16.write_bytes("q1\tvitamin d\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"q\.tsv: is UTF-16 text .*iconv -f UTF-16 -t UTF-8"):
        read_query_file(utf16)


def test_a_utf16_qrels_file_is_named_as_such(tmp_path):
    from ragkit.eval.beir import read_qrels

    path = tmp_path / "test.tsv"
    path.write_bytes("query-id\tcorpus-id\tscore\nq1\td1\t1\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"test\.tsv: is UTF-16 text"):
        read_qrels(path)


def test_search_names_gzip_on_standard_input(tmp_path):
    from ragkit.eval.beir import read_corpus
    from retrievers.bm25 import BM25

    data = _dataset(tmp_path / "d", docs=PLAIN)
    BM25(k=2).fit(read_corpus(data / "corpus.jsonl")).save(tmp_path / "ix")
    res = _cli("search", "--index", tmp_path / "ix", "--queries", "-", "--run", "-",
               input=gzip.compress(_jsonl_queries().encode()))
    assert res.exit_code != 0 and "gzip-compressed" in res.output


# 7. load_beir's docstring

def test_load_beir_documents_its_parameters():
    from ragkit.eval.beir import load_beir

    doc = load_beir.__doc__ or ""
    for part in ("Parameters", "name_or_path :", "download :", "base_url :", "Returns", "Examples", ".cache/ragkit"):
        assert part in doc, part
