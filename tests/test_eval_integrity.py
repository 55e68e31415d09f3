"""Review of ``ragkit eval`` / ``ragkit compare``'s integrity: results scored against other judgements, rankings
shallower than a cut-off without ``--depth``, tied documents in run files, document ids that match nothing,
run files of different queries, blank queries, negative grades and scores beyond float32."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from ragkit import Run, evaluate
from ragkit.errors import DataError
from ragkit.eval.compare import compare, load_result

WORDS = ["apple", "banana", "cherry", "date", "elder", "fig", "grape", "honey", "iris", "juniper"]


def _dataset(root: Path, grades: dict[str, dict[str, int]] | None = None) -> Path:
    """A small BEIR folder ``root/tiny``: 30 documents, 6 queries, each query's words in some documents."""
    from ragkit.eval import write_beir
    from ragkit.types import Corpus

    ids = [str(1000 + i) for i in range(30)]
    texts = [f"{WORDS[i % 10]} {WORDS[(i * 3) % 10]} {WORDS[(i * 7 + 1) % 10]}" for i in range(30)]
    queries = {f"{i + 1}": f"{WORDS[i]} {WORDS[i + 2]}" for i in range(6)}
    qrels = grades or {q: {ids[int(q)]: 1, ids[int(q) + 10]: 2} for q in queries}
    return write_beir(root / "tiny", Corpus(ids=ids, texts=texts), queries, {"test": qrels})


def _run(*args: str):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _eval(data: Path, out: Path, pipeline: str = "bm25", *extra: str) -> Path:
    res = _run("eval", "--data", str(data), "--pipeline", pipeline, "-o", str(out), *extra)
    assert res.exit_code == 0, res.output
    return out


# 1. results scored against different qrels -------------------------------------------------------------------

def test_qrels_fingerprint_ignores_order_and_sees_grades():
    from ragkit.eval.metrics import qrels_fingerprint

    a = {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    b = {"q2": {"d3": 2}, "q1": {"d2": 0, "d1": 1}, "q3": {}}  # another order, a query with no judgement
    assert qrels_fingerprint(a) == qrels_fingerprint(b) and qrels_fingerprint(a).startswith("sha256:")
    assert qrels_fingerprint(a) != qrels_fingerprint({"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 2}})


def test_compare_refuses_results_scored_against_other_qrels(tmp_path: Path):
    """Review: a copy of a dataset (same name, queries and split) with other grades, the same run evaluated
    against each: ``ragkit compare`` accepted the two silently, JSON against JSON and TREC run file against JSON."""
    one = _dataset(tmp_path / "one")
    other = tmp_path / "two" / "tiny"
    shutil.copytree(one, other)
    qrels = (other / "qrels" / "test.tsv").read_text().splitlines()
    (other / "qrels" / "test.tsv").write_text("\n".join([qrels[0]] + [r[:-1] + "1" for r in qrels[1:]]) + "\n")
    a = _eval(one, tmp_path / "a.json", "bm25", "--run", str(tmp_path / "a.trec"))
    b = _eval(other, tmp_path / "b.json")
    fa, fb = (json.loads(p.read_text())["settings"]["qrels_fingerprint"] for p in (a, b))
    assert fa and fb and fa != fb
    res = _run("compare", str(a), str(b), "--resamples", "100")
    assert res.exit_code != 0 and "different qrels" in res.output, res.output
    assert str(a) in res.output.replace("\n", "") and str(b) in res.output.replace("\n", "")
    res = _run("compare", str(tmp_path / "a.trec"), str(b), "--data", str(one), "--resamples", "100")
    assert res.exit_code != 0 and "different qrels" in res.output, res.output
    # the same judgements: compared, a TREC run file scored here as the JSON was
    res = _run("compare", str(tmp_path / "a.trec"), str(a), "--data", str(one), "--resamples", "100")
    assert res.exit_code == 0, res.output
    # a JSON file of an older ragkit eval (no fingerprint) still loads; the check is said not to be made
    old = json.loads(a.read_text())
    del old["settings"]["qrels_fingerprint"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    with_old = compare([load_result(tmp_path / "old.json"), load_result(b)], ["ndcg@10"], n_resamples=10)
    assert with_old.n_queries == 6


def test_eval_fingerprints_the_judgements_of_the_queries_it_scored(tmp_path: Path):
    """``--limit`` evaluates fewer queries: its fingerprint is of their judgements (the queries are checked on
    their own by compare), as load_result's of a run file scored against those judgements."""
    data = _dataset(tmp_path)
    full = json.loads(_eval(data, tmp_path / "full.json").read_text())["settings"]["qrels_fingerprint"]
    some = json.loads(_eval(data, tmp_path / "some.json", "bm25", "--limit", "2").read_text())
    from ragkit.eval.beir import beir_qrels
    from ragkit.eval.compare import scored_qrels_fingerprint

    qrels = beir_qrels(data, "test")[1]
    assert full == scored_qrels_fingerprint(qrels, qrels) and full.startswith("sha256-scored:")
    assert some["settings"]["qrels_fingerprint"] == scored_qrels_fingerprint(qrels, ["1", "2"]) != full


def test_a_limit_run_scored_against_its_queries_judgements_compares_with_its_json(tmp_path: Path, caplog):
    """Review: ``ragkit eval --limit 3 -o a.json --run a.trec``, then a.trec scored in Python against the
    judgements of those 3 queries: compare refused the two as "scored against different qrels" (eval fingerprinted
    the whole split, load_result the qrels given)."""
    from ragkit.eval.beir import beir_qrels

    data = _dataset(tmp_path)
    a = _eval(data, tmp_path / "a.json", "bm25", "--limit", "3", "--run", str(tmp_path / "a.trec"))
    qrels = beir_qrels(data, "test")[1]
    sub = {q: qrels[q] for q in ["1", "2", "3"]}
    run = load_result(tmp_path / "a.trec", qrels=sub, metrics=["ndcg@10"], dataset="tiny", split="test")
    c = compare([load_result(a), run], ["ndcg@10"], n_resamples=10)
    assert c.n_queries == 3 and c.means[0, 0] == c.means[1, 0]
    # other grades of those queries: still refused
    other = {q: {d: 3 - g for d, g in rel.items()} for q, rel in sub.items()}
    worse = load_result(tmp_path / "a.trec", qrels=other, metrics=["ndcg@10"], name="other")
    with pytest.raises(DataError, match="scored against different qrels"):
        compare([load_result(a), worse], ["ndcg@10"], n_resamples=10)
    # a file of an older ragkit eval (a fingerprint of the whole split): not checked, and said so
    old = json.loads(a.read_text())
    old["settings"]["qrels_fingerprint"] = "sha256:" + "0" * 64
    (tmp_path / "old.json").write_text(json.dumps(old))
    with caplog.at_level(logging.INFO, logger="ragkit"):
        c = compare([load_result(tmp_path / "old.json"), run], ["ndcg@10"], n_resamples=10)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "records a fingerprint of its whole split (sha256" in said and "could not be checked" in said, said


def test_the_missing_fingerprint_note_says_what_the_input_is(tmp_path: Path, caplog):
    """Review: an EvalResult given to compare was said to be "a 'ragkit eval -o' file written before it was
    recorded".  (evaluate records the fingerprint now: one without it is built by hand, or by an older ragkit.)"""
    from dataclasses import replace

    from ragkit import load_beir

    data = _dataset(tmp_path)
    a = _eval(data, tmp_path / "a.json", "bm25", "--run", str(tmp_path / "a.trec"))
    ev = replace(evaluate(Run.read_trec(tmp_path / "a.trec"), load_beir(data).qrels("test"), ["ndcg@10"]),
                 qrels_fingerprint=None)
    with caplog.at_level(logging.INFO, logger="ragkit"):
        compare({"py": ev, "json": load_result(a)}, ["ndcg@10"], n_resamples=10)
    said = " ".join(r.getMessage() for r in caplog.records if "fingerprint" in r.getMessage())
    assert "py records no qrels fingerprint (a result built in Python" in said and "'ragkit eval -o' file" not in said


# 2. the shallow mark without --depth ---------------------------------------------------------------------------

def test_compare_marks_a_pipeline_shallower_than_the_cut_off_without_depth(tmp_path: Path):
    """Review: a pipeline whose last step keeps 10 (``bm25: {k: 10}``), evaluated without ``--depth``, compared on
    recall@100 got no ``!`` (settings.depth is null)."""
    data = _dataset(tmp_path)
    (tmp_path / "k3.yaml").write_text("pipeline:\n  - bm25: {k: 3}\n")
    deep = _eval(data, tmp_path / "deep.json", "bm25", "--depth", "20")
    k3 = _eval(data, tmp_path / "k3.json", str(tmp_path / "k3.yaml"))
    assert json.loads(k3.read_text())["max_ranked"] == 3
    c = compare([load_result(deep), load_result(k3)], ["ndcg@10"], n_resamples=10)
    assert c.shallow[:, 0].tolist() == [False, True] and c.depths == (20, None) and c.max_ranked[1] == 3
    res = _run("compare", str(deep), str(k3), "-m", "ndcg@10", "--resamples", "100")
    out = " ".join(res.output.split())
    assert res.exit_code == 0 and "ndcg@10 ! deep" in out and "k3 !" in out, res.output
    assert "warning: ! ndcg@10: k3 ranked at most 3 documents per query, fewer than its cut-off of 10 (rankings " \
           "shorter than the cut-off: the pipeline's k, or few documents matching)" in out, res.output


def test_rankings_shorter_than_the_depth_searched_are_not_marked_shallow(tmp_path: Path):
    """Review: BM25 on a 30-document dataset ranks at most 18; ``--depth 100`` and ``--depth 200`` compared on
    recall@100 were both marked ``!`` and told to "evaluate every system with --depth 100 or more", which they
    were.  And the comparison's JSON wrote max_ranked as ``depth``."""
    data = _dataset(tmp_path)
    a = _eval(data, tmp_path / "a.json", "bm25", "--depth", "100")
    b = _eval(data, tmp_path / "b.json", "bm25", "--depth", "200")
    ranked = json.loads(a.read_text())["max_ranked"]
    assert ranked < 100
    c = compare([load_result(a), load_result(b)], ["recall@100"], n_resamples=10)
    assert not c.shallow.any() and not c.warnings()
    res = _run("compare", str(a), str(b), "-m", "recall@100", "--resamples", "100", "-o", str(tmp_path / "c.json"))
    assert res.exit_code == 0 and "!" not in res.output and "--depth" not in res.output, res.output
    systems = json.loads((tmp_path / "c.json").read_text())["systems"]
    assert [(s["depth"], s["max_ranked"]) for s in systems] == [(100, ranked), (200, ranked)]
    # a depth below the cut-off is marked, worded by the depth searched
    d5 = _eval(data, tmp_path / "d5.json", "bm25", "--depth", "5")
    [w] = compare([load_result(a), load_result(d5)], ["recall@10"], n_resamples=10).warnings()
    assert w.startswith(f"! recall@10: {d5} ranked at most 5 documents per query, fewer than its cut-off of 10: its "
                        "values count only those, so a difference on recall@10 measures the depth searched"), w


# 3. run files in trec_eval's order -------------------------------------------------------------------------------

def test_run_files_list_tied_documents_in_trec_eval_order(tmp_path: Path):
    """Review: write_trec kept the pipeline's order among tied scores, so the rank column contradicted the order
    ragkit scores (score descending, then document id descending) and ranx's MAP differed from ragkit's."""
    run = Run(["q1", "q2"], [np.array(["a", "c", "b", "d"], dtype=object), np.array(["x", "y"], dtype=object)],
              [np.array([2.0, 1.0, 1.0, 3.0], np.float32), np.array([1.0, 1.0], np.float32)])
    run.write_trec(tmp_path / "r.trec")
    lines = [ln.split() for ln in (tmp_path / "r.trec").read_text().splitlines()]
    assert [(q, d, r) for q, _, d, r, _, _ in lines] == [("q1", "d", "1"), ("q1", "a", "2"), ("q1", "c", "3"),
                                                          ("q1", "b", "4"), ("q2", "y", "1"), ("q2", "x", "2")]
    back = Run.read_trec(tmp_path / "r.trec")
    assert [d.tolist() for d in back.doc_ids] == [["d", "a", "c", "b"], ["y", "x"]]


# 4. document ids that match nothing --------------------------------------------------------------------------

def test_a_run_of_no_judged_document_is_warned_of_with_the_near_id_hint(tmp_path: Path, caplog):
    """Review: document ids zero-padded on the way ('04983' for '4983') scored 0 everywhere without a word."""
    qrels = {"1": {"4983": 1, "5000": 0}, "2": {"17": 2}}
    padded = {"1": {"04983": 2.0, "099": 1.0}, "2": {"017": 1.0}}
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        res = evaluate(padded, qrels, ["ndcg@10"])
    assert res["ndcg@10"] == 0.0
    said = [r.getMessage() for r in caplog.records if "is judged in the qrels" in r.getMessage()]
    assert len(said) == 1 and "none of the 3 document ids the run retrieves" in said[0], said
    assert "'017' is judged as '17'? (2 of the run's unjudged ids name judged documents" in said[0], said
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        evaluate({"1": {"4983": 2.0, "099": 1.0}, "2": {"017": 1.0}}, qrels, ["ndcg@10"])
    assert not [r for r in caplog.records if "is judged in the qrels" in r.getMessage()]  # one judged: no word
    (tmp_path / "pad.trec").write_text("1 Q0 04983 1 2 x\n1 Q0 099 2 1 x\n2 Q0 017 1 1 x\n")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        load_result(tmp_path / "pad.trec", qrels=qrels, metrics=["ndcg@10"])
    said = [r.getMessage() for r in caplog.records if "is judged in the qrels" in r.getMessage()]
    assert said and said[-1].startswith(str(tmp_path / "pad.trec")) and "'017' is judged as '17'?" in said[-1]


# polish -----------------------------------------------------------------------------------------------------------

def test_compare_warns_of_run_files_of_mostly_other_queries(tmp_path: Path):
    """Review: two run files ranking 3 of 6 judged queries each, none in common, were compared with a p-value and
    a note only (a ``--limit`` JSON file is refused: it is scored on its queries only)."""
    qrels = {str(q): {f"d{q}": 1} for q in range(6)}
    (tmp_path / "a.trec").write_text("".join(f"{q} Q0 d{q} 1 1 x\n" for q in range(3)))
    (tmp_path / "b.trec").write_text("".join(f"{q} Q0 d{q} 1 1 x\n" for q in range(3, 6)))
    (tmp_path / "c.trec").write_text("".join(f"{q} Q0 d{q} 1 1 x\n" for q in range(6)))
    a, b, c = (load_result(tmp_path / f"{n}.trec", qrels=qrels, metrics=["ndcg@10"]) for n in "abc")
    said = compare([a, b], ["ndcg@10"], n_resamples=10).warnings()
    assert any("both rank documents for only 0 of the 6 queries" in w for w in said), said
    assert not [w for w in compare([c, a], ["ndcg@10"], n_resamples=10).warnings() if "both rank" in w]


def test_blank_queries_of_a_dataset_are_warned_of(tmp_path: Path, caplog):
    from ragkit import load_beir

    data = _dataset(tmp_path)
    lines = (data / "queries.jsonl").read_text().splitlines()
    lines[1] = json.dumps({"_id": "2", "text": "   "})
    (data / "queries.jsonl").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        load_beir(data)
    said = [r.getMessage() for r in caplog.records if "blank text" in r.getMessage()]
    assert len(said) == 1 and "1 of the 6 queries has a blank text (the first: query '2')" in said[0], said


def test_blank_queries_are_warned_of_once_per_dataset_of_an_archive(tmp_path: Path):
    """Review: ``ragkit eval`` of an archive of two datasets, each with a blank query, warned of each twice (its
    queries.jsonl read at the checks, and again when its corpus is read after the others were released)."""
    arch = tmp_path / "arch"
    for name in ("x", "y"):
        data = _dataset(tmp_path / name)
        lines = (data / "queries.jsonl").read_text().splitlines()
        lines[1] = json.dumps({"_id": "2", "text": "   "})
        (data / "queries.jsonl").write_text("\n".join(lines) + "\n")
        shutil.copytree(data, arch / name)
    res = _run("eval", "--data", str(arch), "--pipeline", "bm25", "-o", str(tmp_path / "new.json"))
    assert res.exit_code == 0, res.output
    said = [ln for ln in res.output.splitlines() if "blank text" in ln]
    assert len(said) == 2 and any("x/queries.jsonl" in s for s in said) and any("y/queries" in s for s in said), said
    # its fingerprint is of the new kind: a file of an older ragkit eval (whole splits, "sha256:") is not refused
    new = json.loads((tmp_path / "new.json").read_text())
    assert new["settings"]["qrels_fingerprint"].startswith("sha256-scored:")
    new["settings"]["qrels_fingerprint"] = "sha256:" + "0" * 64
    (tmp_path / "old.json").write_text(json.dumps(new))
    assert compare([load_result(tmp_path / "new.json"), load_result(tmp_path / "old.json")], ["ndcg@10"],
                   n_resamples=10).n_datasets == 2


def test_the_level_note_names_the_grades_seen(caplog):
    """Review: a query judged only at grade -1 was said to hold 'only grade 0'."""
    from ragkit.eval.metrics import level_note

    said = level_note({"a": {"d1": -1}, "b": {"d2": 1}}, 1)
    assert "only grade -1:" in said and "grade 0" not in said
    assert "only grades -1 and 0:" in level_note({"a": {"d1": -1, "d3": 0}, "b": {"d2": 1}}, 1)
    assert "only grade 0:" in level_note({"a": {"d1": 0}, "b": {"d2": 1}}, 1)


def test_scores_beyond_float32_raise_no_numpy_warning():
    run = {"q": {"d1": 1e39, "d2": 1.0}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = evaluate(run, {"q": {"d1": 1}}, ["mrr@10", "acc@10", "ndcg@10"])
    assert res["mrr@10"] == 1.0 and res["ndcg@10"] == 1.0
    with pytest.raises(DataError):  # (unchanged: a NaN score is refused)
        evaluate({"q": {"d1": float("nan")}}, {"q": {"d1": 1}}, ["ndcg@10"])
