"""Clear errors for wrong input to the run, qrels and BEIR readers and writers (reviewer's reproductions)."""
from __future__ import annotations

from pathlib import Path

import pytest

from ragkit.errors import DataError, InputTypeError
from ragkit.eval import evaluate
from ragkit.eval.beir import read_qrels, read_queries, write_beir
from ragkit.run import Run
from ragkit.types import Corpus, check_qrels


@pytest.mark.parametrize("bad, said", [
    (None, "got None"), ("x", "got a str ('x')"),
    ({"q": ["a"]}, "run['q'] is a list (['a']), expected a mapping {doc_id: score}"),
])
def test_run_from_dict_not_a_mapping(bad: object, said: str) -> None:
    with pytest.raises(DataError, match="Run.from_dict") as e:
        Run.from_dict(bad)  # type: ignore[arg-type]
    assert said in str(e.value)


def test_read_trec_not_a_path() -> None:
    with pytest.raises(InputTypeError, match=r"Run.read_trec: path: expected a path .*got int 5"):
        Run.read_trec(5)  # type: ignore[arg-type]


def test_write_beir_flat_qrels_and_bad_queries(tmp_path: Path) -> None:
    corpus = Corpus(ids=["a"], texts=["x"])
    with pytest.raises(InputTypeError, match=r"expected \{split: \{query_id: \{doc_id: grade\}\}\}.*flat qrels: "
                       r"pass \{\"test\": qrels\}"):
        write_beir(tmp_path / "wb1", corpus, {"q": "t"}, {"q": {"a": 1}})  # type: ignore[dict-item]
    with pytest.raises(InputTypeError, match=r"write_beir: queries: .*got a list \(\['x'\]\)"):
        write_beir(tmp_path / "wb2", corpus, ["x"], {"test": {"q": {"a": 1}}})  # type: ignore[arg-type]
    with pytest.raises(DataError, match="outside the range ragkit evaluates"):
        write_beir(tmp_path / "wb3", corpus, {"q": "t"}, {"test": {"q": {"a": 1001}}})
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_remove_a_corpus_or_none() -> None:
    corpus = Corpus(ids=["a", "b"], texts=["x", "y"])
    with pytest.raises(InputTypeError, match="bm25.remove: expected document ids .*got a Corpus; pass corpus.ids"):
        corpus.rows_to_remove(corpus[:1], "bm25.remove")
    with pytest.raises(InputTypeError, match="expected document ids .*got None"):
        corpus.rows_to_remove(None, "bm25.remove")
    assert corpus.rows_to_remove(["b"], "bm25.remove").tolist() == [1]


@pytest.mark.parametrize("line", ["q1 d1", "q1,d1,1"])
def test_one_line_qrels_read_as_header(tmp_path: Path, line: str) -> None:
    path = tmp_path / "one.tsv"
    path.write_text(line + "\n")
    with pytest.raises(DataError, match=f"its only line {line!r} was read as a header.*expected tab-separated "
                       "query-id, corpus-id, score"):
        read_qrels(path)


def test_read_qrels_reads_csv_by_header(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("qid,docid,rel\nq1,d1,1\nq1,d2,0\n")
    assert read_qrels(path) == {"q1": {"d1": 1, "d2": 0}}


def test_query_text_not_a_string_shows_it(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_text('{"_id": "q1", "text": 5}\n')
    with pytest.raises(DataError, match=r"queries.jsonl:1: query 'q1' has 'text' int '5'; 'text' must be a string"):
        read_queries(path)


@pytest.mark.parametrize("grade", [1001, 65535, 2**31, 2**63, -2**31 - 1, 10**20])
def test_grade_beyond_c_int_refused(tmp_path: Path, grade: int) -> None:
    with pytest.raises(DataError, match=r"evaluate: qrels\['q1'\]\['d1'\]: relevance grade .*outside the range"):
        evaluate(Run.from_dict({"q1": {"d1": 1.0}}), {"q1": {"d1": grade}})
    path = tmp_path / "qrels.tsv"
    path.write_text(f"query-id\tcorpus-id\tscore\nq1\td1\t{grade}\n")
    with pytest.raises(DataError, match=r"qrels.tsv:2: query 'q1', document 'd1': relevance grade .*outside"):
        read_qrels(path)


def test_grade_limits_kept() -> None:
    assert check_qrels({"q": {"a": 1000, "b": -2**31}}, "evaluate") == {"q": {"a": 1000, "b": -2**31}}


@pytest.mark.parametrize("name", ["corpus.jsonl", "queries.jsonl"])
def test_nul_in_a_jsonl_id_is_refused_naming_the_line(tmp_path: Path, name: str) -> None:
    """A NUL in a corpus or queries ``_id`` was refused only when the Corpus / Queries was built (no file, no
    line), or not at all by ``read_queries``; qrels and run files named the line."""
    from ragkit.eval.beir import read_corpus, read_queries

    path = tmp_path / name
    path.write_text('{"_id": "a", "text": "x"}\n{"_id": "b\\u0000c", "text": "y"}\n')
    read = read_corpus if name == "corpus.jsonl" else read_queries
    with pytest.raises(DataError, match=rf"{name}:2: '_id' 'b\\x00c' holds a NUL character"):
        read(path)
