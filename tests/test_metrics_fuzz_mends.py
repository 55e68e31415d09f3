"""Mends from differential fuzzing of ragkit's metrics against pytrec_eval: grades below -1 (which crashed the
process in trec_eval), hole@k after ``--limit`` or in per-query metrics, float64 scores written to a TREC file,
NUL characters in ids, scores that are no real numbers."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ragkit import Corpus, Queries, Run, evaluate
from ragkit.errors import DataError
from ragkit.types import Ranking, State


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    """The ragkit logger at ERROR for these tests, put back after each (left at ERROR, it silenced the notes a later
    file's tests read)."""
    log = logging.getLogger("ragkit")
    level = log.level
    log.setLevel(logging.ERROR)
    yield
    log.setLevel(level)


# --- 1. grades below -1 ----------------------------------------------------------------------------------------

def test_a_query_judged_only_below_minus_one_scores_without_crashing_the_process() -> None:
    # trec_eval sized a table by the highest grade + 1: -2 (TREC Web's junk) wrote out of bounds (rc 139)
    code = textwrap.dedent("""
        import logging; logging.disable(logging.CRITICAL)
        from ragkit import evaluate
        qrels = {"q1": {"d1": 1}, "q2": {"d2": -2}, "q3": {"d4": -5, "d5": -3}}
        run = {"q1": {"d1": 1.0}, "q2": {"d3": 1.0}, "q3": {"d4": 2.0}}
        for _ in range(5):
            print(evaluate(run, qrels, ["ndcg@10", "mrr@10", "map@10", "p@1", "recall@10", "hole@10"]).per_query)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    last = res.stdout.strip().splitlines()[-1]
    assert "'ndcg@10': {'q1': 1.0, 'q2': 0.0, 'q3': 0.0}" in last
    assert "'mrr@10': {'q1': 1.0, 'q2': 0.0, 'q3': 0.0}" in last


def test_grades_below_minus_one_score_as_pytrec_eval_scores_them_where_it_does_not_crash() -> None:
    import pytrec_eval

    qrels = {"a": {"d1": -2, "d2": 1, "d3": -7, "d4": 0}, "b": {"d1": 2, "d5": -3, "d6": -1}}
    run = {"a": {"d1": 3.0, "d2": 2.0, "d3": 1.0, "d9": 0.5}, "b": {"d5": 2.0, "d6": 1.5, "d1": 1.0}}
    got = evaluate(run, qrels, ["ndcg@3", "map@3", "p@2", "recall@3"]).per_query
    want = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.3", "map_cut.3", "P.2", "recall.3"}).evaluate(run)
    for m, key in (("ndcg@3", "ndcg_cut_3"), ("map@3", "map_cut_3"), ("p@2", "P_2"), ("recall@3", "recall_3")):
        assert got[m] == pytest.approx({q: want[q][key] for q in qrels}), m


# --- 2. hole@k: documents judged for other queries of the split are no holes -----------------------------------

def _hole_folder(root: Path) -> Path:
    """A BEIR folder of six documents all holding 'cell', three queries each judging one document."""
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i in range(1, 7):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": f"cell word{i} " * i}) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        for i in range(1, 4):
            f.write(json.dumps({"_id": f"q{i}", "text": f"cell word{i}"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\n",
                                             encoding="utf-8")
    return root


def test_eval_limit_scores_hole_against_the_judgements_of_the_whole_split(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ragkit.cli import app

    root = _hole_folder(tmp_path / "ds")
    runner = CliRunner()
    full = runner.invoke(app, ["eval", "--data", str(root), "-p", "bm25", "-m", "hole@10", "-o", "-"])
    cut = runner.invoke(app, ["eval", "--data", str(root), "-p", "bm25", "-m", "hole@10", "--limit", "1", "-o", "-"])
    assert full.exit_code == 0 and cut.exit_code == 0, (full.output, cut.output)
    whole = json.loads(full.stdout)["per_query"]["hole@10"]
    limited = json.loads(cut.stdout)["per_query"]["hole@10"]
    assert list(limited) == ["q1"]
    # q1 retrieves all six documents: d4, d5, d6 are judged nowhere (d2, d3 are judged for q2, q3)
    assert limited["q1"] == whole["q1"] == pytest.approx(0.3)


def test_per_query_metrics_scores_hole_as_evaluate_does_on_the_whole_qrels() -> None:
    from ragkit.eval.metrics import per_query_metrics

    corpus_ids = np.array(["d1", "d2", "d3", "d4"], dtype=object)
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 0}}
    rk = Ranking(np.array([0, 1, 2, 3]), np.array([4.0, 3.0, 2.0, 1.0], np.float32))
    state = State(["q1 text"], ["q1"], rankings=[rk])  # one of the judged queries only
    got = per_query_metrics(state, qrels, corpus_ids, ["hole@4", "ndcg@4"])
    whole = evaluate(Run.from_rankings(["q1"], [rk], corpus_ids), qrels, ["hole@4", "ndcg@4"]).per_query
    assert got["hole@4"].tolist() == [whole["hole@4"]["q1"]] == [0.25]  # d4 alone is judged nowhere
    assert got["ndcg@4"].tolist() == [whole["ndcg@4"]["q1"]]


def test_evaluate_counts_annotated_documents_as_judged_for_hole_only() -> None:
    run = {"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}}
    alone = evaluate(run, {"q1": {"d1": 1}}, ["hole@3", "ndcg@3"])
    split = evaluate(run, {"q1": {"d1": 1}}, ["hole@3", "ndcg@3"], annotated={"d2", "d1"})
    assert alone["hole@3"] == pytest.approx(2 / 3) and split["hole@3"] == pytest.approx(1 / 3)
    assert alone["ndcg@3"] == split["ndcg@3"] == 1.0
    with pytest.raises(DataError, match="annotated must be a collection of document ids"):
        evaluate(run, {"q1": {"d1": 1}}, ["hole@3"], annotated={"q2": {"d2": 1}})
    with pytest.raises(DataError, match="annotated must be a collection of document ids"):
        evaluate(run, {"q1": {"d1": 1}}, ["hole@3"], annotated="d2")


# --- 3. float64 scores of a Run: float32, as trec_eval and a written file compare them ---------------------------

def test_a_run_of_float64_scores_ranks_the_same_written_and_read_back(tmp_path: Path) -> None:
    x = 0.723399192094803
    b = float(np.float32(0.7233992218971252))  # np.float32(x) == np.float32(b): a tie at float32
    run = Run(["q"], [np.array(["d2", "d1"], dtype=object)], [np.array([x, b])])
    assert run.scores[0].dtype == np.float32
    qrels = {"q": {"d2": 1}}
    path = tmp_path / "run.trec"
    run.write_trec(path)
    back = Run.read_trec(path)
    assert evaluate(run, qrels, ["p@1"])["p@1"] == evaluate(back, qrels, ["p@1"])["p@1"]
    assert evaluate(run.to_dict(), qrels, ["p@1"])["p@1"] == evaluate(back, qrels, ["p@1"])["p@1"]


def test_a_run_refuses_scores_that_are_no_real_numbers() -> None:
    ids = [np.array(["d1"], dtype=object)]
    for bad, kind in ((np.array(["1.0"]), "a str"), (np.array([1 + 2j]), "a complex"),
                      (np.array([True]), "a bool"), ([10 ** 400], "beyond float64's range"),
                      (np.array([None], dtype=object), "no number")):
        with pytest.raises(DataError, match=rf"Run: query 'q' has the score .*\({kind}\); a score must be a real"):
            Run(["q"], ids, [bad])
    assert Run(["q"], ids, [[3]]).scores[0].tolist() == [3.0]


# --- 4. NUL characters in ids --------------------------------------------------------------------------------------

def test_evaluate_refuses_a_nul_in_a_document_or_query_id() -> None:
    with pytest.raises(DataError, match=r"qrels\['q'\]'s document ids\[0\] is 'a\\x00b', which holds a NUL"):
        evaluate({"q": {"a\x00c": 1.0}}, {"q": {"a\x00b": 1}}, ["p@1", "mrr@1"])
    with pytest.raises(DataError, match=r"run\['q'\]'s document ids\[1\] is 'a\\x00c', which holds a NUL"):
        evaluate({"q": {"b": 2.0, "a\x00c": 1.0}}, {"q": {"b": 1}}, ["p@1"])
    with pytest.raises(DataError, match=r"qrels' query ids\[0\] is 'q\\x00', which holds a NUL"):
        evaluate({"q": {"b": 1.0}}, {"q\x00": {"b": 1}}, ["p@1"])
    with pytest.raises(DataError, match=r"run's query ids\[0\] is 'q\\x001', which holds a NUL"):
        evaluate({"q\x001": {"b": 1.0}, "q": {"b": 1.0}}, {"q": {"b": 1}}, ["p@1"])


def test_corpus_queries_and_run_refuse_a_nul_in_an_id() -> None:
    with pytest.raises(DataError, match=r"Corpus.ids\[1\] is 'd\\x002', which holds a NUL"):
        Corpus(ids=["d1", "d\x002"], texts=["a", "b"])
    with pytest.raises(DataError, match=r"Queries.ids\[0\] is 'q\\x00', which holds a NUL"):
        Queries(["q\x00"], ["text"])
    with pytest.raises(DataError, match=r"Run.query_ids\[0\] is 'q\\x00', which holds a NUL"):
        Run(["q\x00"], [np.array(["d"], dtype=object)], [np.array([1.0], np.float32)])
    with pytest.raises(DataError, match=r"query 'q': Run.doc_ids\[0\]\[0\] is 'd\\x00', which holds a NUL"):
        Run(["q"], [np.array(["d\x00"], dtype=object)], [np.array([1.0], np.float32)])


# --- 5. scores of a dict run that are no real numbers ----------------------------------------------------------------

@pytest.mark.parametrize("score,kind", [(10 ** 400, "beyond float64's range"), (None, "no number"),
                                        (1j, "a complex"), ("1.0", "a str"), (True, "a bool")],
                         ids=["10**400", "None", "1j", "'1.0'", "True"])
def test_evaluate_and_from_dict_refuse_a_score_that_is_no_real_number(score: object, kind: str) -> None:
    run = {"q": {"d0": 1.0, "d1": score}}
    for call, who in ((lambda: evaluate(run, {"q": {"d1": 1}}, ["p@1"]), "evaluate"),
                      (lambda: Run.from_dict(run), "Run.from_dict")):
        with pytest.raises(DataError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith(f"{who}: query 'q' gives document 'd1' the score "), msg
        assert f"({kind}); a score must be a real number (an int, a float or a numpy number)" in msg


def test_numpy_numbers_and_ints_are_scores() -> None:
    run = {"q": {"a": np.float32(2.0), "b": np.int64(1), "c": 0, "d": np.float16(0.5)}}
    assert evaluate(run, {"q": {"a": 1}}, ["p@1"])["p@1"] == 1.0
    assert Run.from_dict(run).doc_ids[0].tolist() == ["a", "b", "d", "c"]
