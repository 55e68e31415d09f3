"""``ragkit eval`` review: judged queries whose ranking is empty (stopwords only for BM25) said and listed in the
JSON (a TREC run file cannot hold them, so a tool scoring the --run file averages over fewer queries); a corpus
and qrels of different id spaces refused before the fit (every score 0), a partial miss still warned of; the
missing documents counted as documents, not judgement lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ragkit import load_beir
from ragkit.errors import DataError

DOCS = [("d1", "Vitamin D", "Vitamin D prevents fractures in elderly people."),
        ("d2", "Cats", "Cats sleep most of the day."),
        ("d3", "Dogs", "Dogs bark at strangers."),
        ("d4", "Hips", "Fractures of the hip are common.")]
QUERIES = [("q1", "does vitamin D prevent fractures"), ("q2", "why do cats sleep"), ("q3", "the of and"),
           ("q4", "dog barking"), ("q5", "and the of")]
TEST = "q1\td1\t1\nq2\td2\t1\nq3\td3\t1\nq4\td3\t1\nq5\td4\t1\n"


def _cli(*args: object, columns: int = 200):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns)})


def _tiny(root: Path, *, prefix: str = "", test: str = TEST) -> Path:
    """A four-document BEIR folder (each corpus id written after ``prefix``) and its test split ``test``."""
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": prefix + i, "title": t, "text": x}) + "\n"
                                               for i, t, x in DOCS), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in QUERIES),
                                        encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + test, encoding="utf-8")
    return root


# ------------------------------------------------------------------ 1. queries whose ranking is empty
def test_queries_with_an_empty_ranking_are_said_and_listed(tmp_path: Path):
    """Old code: q3 and q5 (stopwords only) returned nothing and scored 0 without a word; the --run file has no
    line for them, so BEIR scoring it averages over 3 queries, not 5."""
    data = _tiny(tmp_path / "ds")
    out, run = tmp_path / "r.json", tmp_path / "r.trec"
    res = _cli("eval", "--data", data, "-p", "bm25", "-m", "ndcg@10", "-o", out, "--run", run)
    assert res.exit_code == 0, res.output
    said = " ".join(res.stderr.split())
    assert ("note: 2 of the 5 judged queries returned no document (e.g. 'q3', 'q5'); they score 0 on every metric "
            "here (as trec_eval -c scores a query its run lacks), but a TREC run file cannot hold an empty ranking"
            in said), res.stderr
    assert "averages over 2 fewer" in said, res.stderr
    got = json.loads(out.read_text())
    assert got["empty_queries"] == ["q3", "q5"] and got["n_queries"] == 5
    assert got["per_query"]["ndcg@10"]["q3"] == 0.0
    assert {line.split()[0] for line in run.read_text().splitlines()} == {"q1", "q2", "q4"}


def test_no_note_when_every_query_returns_documents(tmp_path: Path):
    data = _tiny(tmp_path / "ds", test="q1\td1\t1\nq2\td2\t1\n")
    out = tmp_path / "r.json"
    res = _cli("eval", "--data", data, "-p", "bm25", "-m", "ndcg@10", "-o", out)
    assert res.exit_code == 0, res.output
    assert "returned no document" not in res.stderr
    assert json.loads(out.read_text())["empty_queries"] == []


def test_several_datasets_list_each_ones_empty_queries(tmp_path: Path):
    a, b = _tiny(tmp_path / "a"), _tiny(tmp_path / "b", test="q1\td1\t1\nq3\td3\t1\n")
    out = tmp_path / "r.json"
    res = _cli("eval", "--data", f"{a},{b}", "-p", "bm25", "-m", "ndcg@10", "-o", out)
    assert res.exit_code == 0, res.output
    said = " ".join(res.stderr.split())
    assert "note: a: 2 of the 5 judged queries returned no document" in said, res.stderr
    assert "note: b: 1 of the 2 judged queries returned no document (e.g. 'q3'); it scores 0" in said, res.stderr
    subsets = json.loads(out.read_text())["subsets"]
    assert subsets["a"]["empty_queries"] == ["q3", "q5"] and subsets["b"]["empty_queries"] == ["q3"]


# ------------------------------------------------------------------ 2. a corpus and qrels of other id spaces
def test_eval_refuses_qrels_none_of_whose_relevant_documents_the_corpus_holds(tmp_path: Path):
    """Old code: fitted, scored every metric 0.0000, warned after the work and wrote the result, exit 0."""
    data = _tiny(tmp_path / "ds", prefix="doc")
    out = tmp_path / "r.json"
    res = _cli("eval", "--data", data, "-p", "bm25", "-m", "ndcg@10", "-o", out)
    assert res.exit_code == 2, res.output
    said = " ".join(res.output.split())
    assert ("test.tsv: none of the 4 documents the qrels judge relevant (graded 1 or more; 5 judgements; e.g. 'd1', "
            "judged for query 'q1' on line 2) are in") in said
    assert "no run can retrieve one, so every metric would be 0 for every query" in said
    assert "'docd1'" in said  # (the corpus's ids: written otherwise than the qrels')
    assert "fitting" not in said and not out.exists()


def test_eval_refusal_gives_the_respelling_hint(tmp_path: Path):
    data = _tiny(tmp_path / "ds")  # corpus ids '1' to '4', judged as '01' and '02'
    (data / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"{n}", "title": t, "text": x}) + "\n"
                                               for n, (_, t, x) in enumerate(DOCS, 1)), encoding="utf-8")
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t01\t1\nq2\t02\t1\n", encoding="utf-8")
    res = _cli("eval", "--data", data, "-p", "bm25")
    assert res.exit_code == 2, res.output
    said = " ".join(res.output.split())
    assert "none of the 2 documents the qrels judge relevant" in said
    assert "is '1' meant?" in said and "leading zeros" in said, said


def test_a_partial_miss_is_still_a_warning(tmp_path: Path):
    data = _tiny(tmp_path / "ds", test=TEST + "q1\tghost\t1\n")
    res = _cli("eval", "--data", data, "-p", "bm25", "-m", "ndcg@10")
    assert res.exit_code == 0, res.output
    assert "1 judged document is not in corpus.jsonl (e.g. 'ghost', judged for query 'q1')" in res.output


def test_python_keeps_the_warning_and_the_eval_read_refuses(tmp_path: Path, caplog):
    """Python's BeirDataset.qrels stays warning-only (as BEIR keeps judgements the corpus lacks); the read
    ragkit eval makes (_qrels with refuse) refuses before any work."""
    data = _tiny(tmp_path / "ds", prefix="doc")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert load_beir(data).qrels("test")["q1"] == {"d1": 1}
    assert "not in corpus.jsonl" in caplog.text
    with pytest.raises(DataError, match=r"none of the 4 documents the qrels judge relevant"):
        load_beir(data)._qrels("test", refuse=True)


def test_qrels_of_grade_0_only_are_not_refused(tmp_path: Path):
    """Nothing relevant is judged at all: level_note's case, not another id space."""
    data = _tiny(tmp_path / "ds", prefix="doc", test="q1\td1\t0\nq2\td2\t0\n")
    assert load_beir(data)._qrels("test", refuse=True) == {"q1": {"d1": 0}, "q2": {"d2": 0}}


# ------------------------------------------------------------------ 3. documents counted, not judgement lines
@pytest.mark.parametrize("lines, said", [
    ("q1\tghost\t1\nq2\tghost\t1\nq4\tgone\t1\n",
     "2 judged documents (3 judgements) are not in corpus.jsonl (e.g. 'ghost', judged for query 'q1'); kept, as BEIR "
     "keeps them: no run can retrieve them, so they count as not found"),
    ("q1\tghost\t1\nq2\tghost\t0\nq4\tgone\t0\n",
     "2 judged documents (3 judgements) are not in corpus.jsonl: 1 judgement graded 1 or more (e.g. 'ghost', judged "
     "for query 'q1') and 2 graded 0")], ids=["all-relevant", "graded-apart"])
def test_missing_documents_are_counted_as_documents(tmp_path: Path, caplog, lines: str, said: str):
    """Old code: '3 judged documents are not in corpus.jsonl' for 2 documents judged on 3 lines; graded apart,
    the grades count judgements."""
    data = _tiny(tmp_path / "ds", test=TEST + lines)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        load_beir(data).qrels("test")
    assert said in caplog.text


# ------------------------------------------------------------------ 4. the queries the search encoded
def test_eval_counts_the_queries_its_search_encoded(tmp_path: Path, monkeypatch):
    """Old code: the timings recorded the documents the fit encoded, not the queries the search encoded (a dense
    search of 7.49 s encoding its queries, 0.04 s when they were cached, said the same)."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    data = _tiny(tmp_path / "ds")
    first, again = tmp_path / "a.json", tmp_path / "b.json"
    res = _cli("eval", "--data", data, "-p", "dense", "-m", "ndcg@10", "-o", first)
    assert res.exit_code == 0, res.output
    assert " (4 documents encoded) · search " in res.stdout and " s (5 queries encoded) (" in res.stdout, res.stdout
    assert json.loads(first.read_text())["timings"]["queries_encoded"] == 5
    res = _cli("eval", "--data", data, "-p", "dense", "-m", "ndcg@10", "-o", again)  # both read from the cache
    assert res.exit_code == 0, res.output
    assert "encoded" not in res.stdout, res.stdout
    timings = json.loads(again.read_text())["timings"]
    assert timings["documents_encoded"] == 0 and timings["queries_encoded"] == 0


def test_bm25_encodes_no_query(tmp_path: Path):
    out = tmp_path / "r.json"
    res = _cli("eval", "--data", _tiny(tmp_path / "ds"), "-p", "bm25", "-m", "ndcg@10", "-o", out)
    assert res.exit_code == 0, res.output
    assert "queries encoded" not in res.stdout and json.loads(out.read_text())["timings"]["queries_encoded"] == 0


def test_several_datasets_sum_the_queries_encoded(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    a = _tiny(tmp_path / "a")
    b = _tiny(tmp_path / "b")
    (b / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t + " again"}) + "\n"
                                             for i, t in QUERIES), encoding="utf-8")  # (not a's: encoded too)
    out = tmp_path / "r.json"
    res = _cli("eval", "--data", f"{a},{b}", "-p", "dense", "-m", "ndcg@10", "-o", out)
    assert res.exit_code == 0, res.output
    assert " s (10 queries encoded) (" in res.stdout, res.stdout
    got = json.loads(out.read_text())
    assert got["timings"]["queries_encoded"] == 10
    assert [got["subsets"][s]["timings"]["queries_encoded"] for s in ("a", "b")] == [5, 5]
