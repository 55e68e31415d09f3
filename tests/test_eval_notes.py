"""What ``ragkit eval``, ``ragkit compare`` and :func:`evaluate` say about how a run was scored (a reviewer's
findings): a run's query ids judged nowhere (``'1'`` for a judged ``'001'``) were blamed on ``--limit``; judged
queries with no judgement at the relevance level scored 0 silently; ``--depth`` limiting a run was blamed on a
step's k; a CR-only run file read as one line of thousands of columns; the note of judged documents missing from
the corpus counted grade-0 ones as "not found"; a p-value of 1/200,001 printed as 0.0000."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from ragkit import evaluate, load_beir
from ragkit.errors import DataError
from ragkit.eval import metrics
from ragkit.eval.compare import Comparison, load_result
from ragkit.run import Run

WORDS = ["stem", "cells", "protein", "folding", "growth", "tumor", "gene", "virus"]


def _cli(*args: object):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})


@pytest.fixture(autouse=True)
def _fresh_notes(monkeypatch):
    """Every test hears the notes said once per set of judgements."""
    monkeypatch.setattr(metrics, "_SAID", set(), raising=False)


def _dataset(root: Path, qrels: str, n_docs: int = 12) -> Path:
    """A BEIR folder of ``n_docs`` documents (each holding every word, so BM25 ranks all of them), queries
    '001', '003', 'q5', 'none' and the ``dev`` judgements ``qrels`` (TSV rows)."""
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i in range(n_docs):
            text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(len(WORDS) + i % 3))
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        for q, t in (("001", "stem cells"), ("003", "protein folding"), ("q5", "tumor gene"), ("none", "virus")):
            f.write(json.dumps({"_id": q, "text": t}) + "\n")
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels, encoding="utf-8")
    return root


GRADED = "001\td1\t2\n001\td2\t1\n003\td3\t1\nq5\td4\t1\nq5\td5\t0\nnone\td6\t0\n"


# ------------------------------------------------------------------ 1. run query ids judged nowhere
def test_compare_names_unjudged_run_ids_and_asks_about_a_respelling(tmp_path: Path, caplog):
    """A run whose '001' was written '1' scored 0 on that query, and the note blamed --limit."""
    qrels = {"001": {"d1": 1}, "003": {"d3": 1}, "q5": {"d4": 1}}
    path = tmp_path / "stripped.trec"
    path.write_text("1 Q0 d1 1 2.0 x\n3 Q0 d3 1 2.0 x\nq5 Q0 d4 1 2.0 x\n")
    with caplog.at_level(logging.INFO, logger="ragkit"):
        scored = load_result(path, qrels=qrels, metrics=["ndcg@10"], split="dev")
    assert scored.values("ndcg@10") == {"001": 0.0, "003": 0.0, "q5": 1.0}  # scored as before (trec_eval -c)
    said = caplog.text
    assert "stripped.trec ranks documents for 1 of the 3 judged queries; the others score 0" in said
    assert "2 of the run's 3 queries are not judged in the split 'dev' ('1', '3')" in said
    assert "'1' is judged as '001'?" in said
    assert "--limit" not in said


def test_compare_names_extra_unjudged_run_ids(tmp_path: Path, caplog):
    qrels = {"q1": {"d1": 1}, "q2": {"d3": 1}}
    path = tmp_path / "extra.trec"
    path.write_text("q1 Q0 d1 1 2.0 x\nq2 Q0 d3 1 2.0 x\nzzz Q0 d3 1 2.0 x\n")
    with caplog.at_level(logging.INFO, logger="ragkit"):
        load_result(path, qrels=qrels, metrics=["ndcg@10"])
    assert "extra.trec: 1 of the run's 3 queries is not judged ('zzz'); they are left out" in caplog.text
    assert "is judged as" not in caplog.text


def test_compare_still_names_limit_when_every_run_id_is_judged(tmp_path: Path, caplog):
    path = tmp_path / "part.trec"
    path.write_text("q1 Q0 d1 1 2.0 x\n")
    with caplog.at_level(logging.INFO, logger="ragkit"):
        load_result(path, qrels={"q1": {"d1": 1}, "q2": {"d2": 1}}, metrics=["ndcg@10"])
    assert "1 of the 2 judged queries; the others score 0 (as trec_eval -c): a run written with --limit" in caplog.text
    assert "not judged" not in caplog.text


def test_evaluate_asks_about_a_respelled_query_id(caplog):
    qrels = {"001": {"a": 1}, "Q7": {"b": 1}, "q5": {"c": 1}}
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        evaluate({"1": {"a": 1.0}, "q07": {"b": 1.0}, "q5": {"c": 1.0}}, qrels, ["ndcg@10"])
    said = [r.getMessage() for r in caplog.records if "not in the run" in r.getMessage()]
    assert len(said) == 1
    assert "2 of the run's 3 queries are not judged ('1', 'q07'): '1' is judged as '001'? (2 of" in said[0]
    assert "qrels[q] for q in run" not in said[0]  # (scoring only the run's queries would hide the mistake)


def test_respelled_matches_zeros_case_and_spaces_only():
    assert metrics.respelled(["1", "q07", " 3", "x1", "10"], ["001", "Q7", "003", "x2", "1"]) == [
        ("1", "001"), ("q07", "Q7"), (" 3", "003")]


# ------------------------------------------------------------------ 2. queries no judgement makes relevant
def test_evaluate_notes_queries_without_a_judgement_at_the_level(caplog):
    qrels = {"a": {"d1": 2}, "b": {"d1": 1}, "c": {"d2": 1, "d3": 0}, "z": {"d4": 0}}
    run = {q: {"d1": 2.0, "d2": 1.0, "d4": 0.5} for q in qrels}
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        res = evaluate(run, qrels, ["recall@10", "ndcg@10"], relevance_level=2)
    said = [r.getMessage() for r in caplog.records if "no judgement >=" in r.getMessage()]
    assert len(said) == 1
    assert ("3 of the 4 judged queries have no judgement >= 2 (the relevance level; e.g. 'b', 'c', ...): they score 0 "
            "on recall, MAP, MRR, P, r_cap and acc whatever the run (as trec_eval), so none of those means exceeds "
            "1/4 = 0.2500; nDCG still counts their lower grades (1 judged only 0 scores 0 on it too)") in said[0]
    assert res["recall@10"] == pytest.approx(0.25) and res.per_query["ndcg@10"]["b"] == 1.0  # scored as before
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        evaluate(run, qrels, ["recall@10"])
    said = [r.getMessage() for r in caplog.records if "no judgement >=" in r.getMessage()]
    assert len(said) == 1 and "1 of the 4 judged queries has no judgement >= 1" in said[0]
    assert "only grade 0: it scores 0 on every metric but hole@k" in said[0] and "3/4 = 0.7500" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        evaluate(run, {q: qrels[q] for q in "abc"}, ["recall@10"])  # every query has a grade >= 1: no note
    assert "no judgement >=" not in caplog.text


def test_ragkit_eval_notes_queries_without_a_judgement_at_the_level(tmp_path: Path):
    data = _dataset(tmp_path / "ds", GRADED)
    res = _cli("eval", "--data", data, "--pipeline", "bm25", "--split", "dev", "--relevance-level", "2")
    assert res.exit_code == 0, res.output
    assert ("note: 3 of the 4 judged queries have no judgement >= 2 (--relevance-level; e.g. '003', 'q5', ...): "
            "they score 0 on recall, MAP, MRR, P, r_cap and acc") in res.output, res.output
    res = _cli("eval", "--data", data, "--pipeline", "bm25", "--split", "dev")
    assert "note: 1 of the 4 judged queries has no judgement >= 1 (--relevance-level; e.g. 'none'), only grade 0" \
        in res.output, res.output


def test_ragkit_compare_notes_queries_without_a_judgement_at_the_level_once(tmp_path: Path):
    data = _dataset(tmp_path / "ds", GRADED)
    runs = []
    for name in ("a", "b"):
        runs.append(tmp_path / f"{name}.trec")
        Run.from_dict({q: {"d1": 2.0, "d3": 1.0} for q in ("001", "003", "q5", "none")}).write_trec(runs[-1])
    res = _cli("compare", *runs, "--data", data, "--split", "dev", "-m", "recall@10", "--relevance-level", "2",
               "--resamples", "100")
    assert res.exit_code == 0, res.output
    assert res.output.count("3 of the 4 judged queries have no judgement >= 2") == 1, res.output


# ------------------------------------------------------------------ 3. --depth as the limit
def test_ragkit_eval_names_depth_when_it_limits_the_run(tmp_path: Path):
    data = _dataset(tmp_path / "ds", GRADED)
    res = _cli("eval", "--data", data, "--pipeline", "bm25", "--split", "dev", "--depth", "3", "--k", "5")
    assert res.exit_code == 0, res.output
    assert ("the pipeline returned at most 3 documents per query, so the @5 metrics count only those; --depth 3 "
            "limits it (give --depth 5 or more to measure that depth)") in res.output, res.output
    assert "a step's k" not in res.output


# ------------------------------------------------------------------ 4. CR-only run files
def test_a_cr_only_run_file_says_so(tmp_path: Path):
    path = tmp_path / "cr.trec"
    path.write_bytes(b"q1 Q0 d1 1 2.0 x\rq1 Q0 d2 2 1.0 x\rq2 Q0 d1 1 2.0 x\r")
    want = (r"cr\.trec:1: a carriage return \(\\r\) inside the line, at column 17: the file has CR \(old Mac\) line "
            r"endings; .* tr '\\r' '\\n' < \S*/cr\.trec > new\.trec")
    with pytest.raises(DataError, match=want):
        Run.read_trec(path)
    crlf = tmp_path / "crlf.trec"
    crlf.write_bytes(b"q1 Q0 d1 1 2.0 x\r\nq1 Q0 d2 2 1.0 x\r\n")
    assert Run.read_trec(crlf).to_dict() == {"q1": {"d1": 2.0, "d2": 1.0}}  # (\r\n endings read as before)


# ------------------------------------------------------------------ 5. judged documents missing from the corpus
def test_missing_judged_documents_count_grade_0_apart(tmp_path: Path, caplog):
    data = _dataset(tmp_path / "ds", GRADED + "003\tghost\t1\n003\tgone\t0\n")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        load_beir(data).qrels("dev")
    said = [r.getMessage() for r in caplog.records if "not in corpus.jsonl" in r.getMessage()]
    assert len(said) == 1
    assert ("2 judged documents are not in corpus.jsonl: 1 graded 1 or more (e.g. 'ghost', judged for query '003') "
            "and 1 graded 0 (not relevant, which changes no score); kept, as BEIR keeps them: no run can retrieve the "
            "1 graded 1 or more, so it counts as not found") in said[0]


def test_missing_judged_documents_of_grade_0_only_change_no_score(tmp_path: Path, caplog):
    data = _dataset(tmp_path / "ds", GRADED + "003\tgone\t0\n")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        load_beir(data).qrels("dev")
    assert ("1 judged document is not in corpus.jsonl (e.g. 'gone', judged for query '003'), graded 0 (not "
            "relevant), so it changes no score; kept, as BEIR keeps them") in caplog.text
    assert "not found" not in caplog.text


# ------------------------------------------------------------------ 6. the smallest p-values
def test_format_p():
    from ragkit.eval.compare import format_p

    assert format_p(1 / 200_001) == "<0.0001"
    assert format_p(0.00012) == "0.0001" and format_p(0.0432) == "0.0432" and format_p(1.0) == "1.0000"


def test_a_p_value_below_0_0001_is_not_printed_as_zero(tmp_path: Path):
    qids = [f"q{i}" for i in range(24)]
    qrels = {q: {"good": 1} for q in qids}
    good, bad = tmp_path / "good.trec", tmp_path / "bad.trec"
    Run.from_dict({q: {"good": 2.0, "other": 1.0} for q in qids}).write_trec(good)
    Run.from_dict({q: {"other": 2.0, "good": 1.0} for q in qids}).write_trec(bad)
    from ragkit.eval.compare import compare

    cmp = compare([load_result(p, qrels=qrels, metrics=["mrr@10"], name=p.stem) for p in (bad, good)], ["mrr@10"],
                  n_resamples=20_000)
    assert cmp.p_value[1, 0] == pytest.approx(1 / 20_001)
    assert "<0.0001  <0.0001 *" in str(cmp) and "0.0000" not in str(cmp)
    assert isinstance(cmp, Comparison)
    beir = tmp_path / "ds"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": d}) + "\n" for d in ("good", "other")))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": "x"}) + "\n" for q in qids))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\tgood\t1\n" for q in qids))
    res = _cli("compare", bad, good, "--data", beir, "-m", "mrr@10", "--resamples", "20000")
    assert res.exit_code == 0, res.output
    assert "<0.0001" in res.output and "0.0000" not in res.output, res.output
    assert np.isfinite(cmp.p_holm).sum() == 1
