"""Review of ``ragkit compare``'s reproducibility and checks: its JSON reruns the comparison (scoring settings,
``--data`` as given and resolved, versions, a date-time with its time zone, each input's SHA-256);
``compare({name: evaluate(...)})`` refuses results scored against different judgements; ir_measures' metric names
(``R@100``) are read as ragkit's."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from ragkit import Run, evaluate
from ragkit.errors import DataError
from ragkit.eval.compare import compare, load_result, scored_qrels_fingerprint
from ragkit.eval.metrics import parse_metric, parse_metrics

QUERIES = [f"q{i}" for i in range(12)]


def _dataset(root: Path) -> Path:
    """A BEIR folder of 12 queries, each judged 2 on one document and 1 on another (graded: --relevance-level 2
    counts one of them)."""
    from ragkit.eval import write_beir
    from ragkit.types import Corpus

    ids = [f"d{i}" for i in range(30)]
    qrels = {q: {f"d{i}": 2, f"d{i + 12}": 1} for i, q in enumerate(QUERIES)}
    return write_beir(root / "tiny", Corpus(ids=ids, texts=[f"text {i}" for i in range(30)]),
                      {q: f"query {q}" for q in QUERIES}, {"test": qrels})


def _trec(path: Path, hit_every: int) -> Path:
    """A run that ranks the grade-2 document first for every ``hit_every``-th query, else an unjudged one."""
    lines = []
    for i, q in enumerate(QUERIES):
        docs = [f"d{i}", "d29"] if i % hit_every == 0 else ["d29", f"d{i + 12}"]
        lines += [f"{q} Q0 {d} {r + 1} {10 - r} run" for r, d in enumerate(docs)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cli(*args: object):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, ["compare", *map(str, args)], catch_exceptions=False)


# 1. the comparison's JSON reruns it ------------------------------------------------------------------------------

def test_compare_json_records_what_reruns_it(tmp_path: Path, monkeypatch):
    """Review: ``ragkit compare a.trec b.trec --data D --relevance-level 2 -m recall@100 -o cmp.json`` wrote no
    relevance_level, ignore_identical_ids, versions or time zone, and bare file names: rerun at the default level 1
    it gave other numbers."""
    data = _dataset(tmp_path)
    a, b = _trec(tmp_path / "a.trec", 1), _trec(tmp_path / "b.trec", 3)
    monkeypatch.chdir(tmp_path)  # the files named relatively, as typed
    out = tmp_path / "cmp.json"
    res = _cli("a.trec", "b.trec", "--data", "tiny", "--relevance-level", "2", "-m", "recall@100,ndcg@10",
               "--resamples", "500", "-o", out)
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert (d["relevance_level"], d["ignore_identical_ids"]) == (2, True)
    assert (d["data"], d["data_resolved"]) == ("tiny", str(data.resolve()))
    assert d["versions"]["ragkit"] and d["versions"]["numpy"] and d["versions"]["python"]
    when = datetime.fromisoformat(d["date"])
    assert when.tzinfo is not None and abs((datetime.now().astimezone() - when).total_seconds()) < 600
    assert [(s["source"], s["source_resolved"], s["sha256"]) for s in d["systems"]] == [
        (name, str(p.resolve()), hashlib.sha256(p.read_bytes()).hexdigest()) for name, p in
        (("a.trec", a), ("b.trec", b))]
    # rerun from the JSON alone (from another folder): the same rows; at level 1 (what was lost) other ones
    monkeypatch.chdir(tmp_path.parent)
    from ragkit.eval.beir import beir_qrels

    _, qrels = beir_qrels(d["data_resolved"], d["split"])

    def rerun(level: int) -> list:
        loaded = [load_result(s["source_resolved"], qrels=qrels, metrics=d["metrics"], name=s["name"],
                              relevance_level=level, ignore_identical_ids=d["ignore_identical_ids"])
                  for s in d["systems"]]
        return compare(loaded, d["metrics"], baseline=d["baseline"], n_resamples=d["n_resamples"], seed=d["seed"],
                       alpha=d["alpha"], confidence=d["confidence"]).to_dict()["rows"]

    assert rerun(d["relevance_level"]) == d["rows"]
    assert rerun(1) != d["rows"]


def test_compare_of_json_files_records_their_scoring_and_digests(tmp_path: Path):
    """Results read from 'ragkit eval -o' files record how they were scored (their settings) and each file's
    SHA-256; a comparison built in Python of EvalResults records their scoring and no file."""
    qrels = {q: {f"d{i}": 1} for i, q in enumerate(QUERIES)}
    per_query = {"ndcg@10": {q: float(i % 3) / 2 for i, q in enumerate(QUERIES)}}
    paths = []
    for name in ("x", "y"):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps({"dataset": "tiny", "split": "test", "per_query": per_query,
                                 "settings": {"relevance_level": 1, "ignore_identical_ids": False}}))
        paths.append(p)
    d = compare([load_result(p) for p in paths], ["ndcg@10"], n_resamples=50).to_dict()
    assert (d["relevance_level"], d["ignore_identical_ids"], d["data"], d["data_resolved"]) == (1, False, None, None)
    assert [s["sha256"] for s in d["systems"]] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    run = Run.from_dict({q: {f"d{i}": 1.0} for i, q in enumerate(QUERIES)})
    py = compare({"a": evaluate(run, qrels, ["ndcg@10"], relevance_level=1),
                  "b": evaluate(run, qrels, ["ndcg@10"], relevance_level=1)}, ["ndcg@10"], n_resamples=50).to_dict()
    assert (py["relevance_level"], py["ignore_identical_ids"]) == (1, True)
    assert all("sha256" not in s and s["source"] is None for s in py["systems"])
    assert datetime.fromisoformat(py["date"]).tzinfo is not None


def test_versions_are_read_once_when_compare_runs(monkeypatch):
    """to_dict read versions() (a git status in a checkout) at each call, not when compare ran, as its date is."""
    from ragkit.eval import provenance

    calls = []
    monkeypatch.setattr(provenance, "versions", lambda: calls.append(1) or {"ragkit": "x"})
    run = Run.from_dict({q: {f"d{i}": 1.0} for i, q in enumerate(QUERIES)})
    qrels = {q: {f"d{i}": 1} for i, q in enumerate(QUERIES)}
    c = compare({"a": evaluate(run, qrels, ["ndcg@10"]), "b": evaluate(run, qrels, ["ndcg@10"])}, ["ndcg@10"],
                n_resamples=50)
    assert c.to_dict()["versions"] == c.to_dict()["versions"] == {"ragkit": "x"} and len(calls) == 1


# 2. EvalResults scored against different judgements ---------------------------------------------------------

def _runs() -> tuple[Run, Run, dict, dict]:
    qrels = {q: {f"d{i}": 1} for i, q in enumerate(QUERIES)}
    other = {q: ({d: 0 for d in rel} if i % 2 else rel) for i, (q, rel) in enumerate(qrels.items())}
    run1 = Run.from_dict({q: {"x": 2.0, f"d{i}": 1.0} for i, q in enumerate(QUERIES)})
    run2 = Run.from_dict({q: {f"d{i}": 2.0, "x": 1.0} for i, q in enumerate(QUERIES)})
    return run1, run2, qrels, other


def test_compare_refuses_evaluate_results_of_different_qrels():
    """Review: ``compare({'bm25': evaluate(run1, qrels), 'hybrid': evaluate(run2, other_qrels)})``, half the
    queries graded 0 in other_qrels, compared silently and called the difference significant."""
    run1, run2, qrels, other = _runs()
    a, b = evaluate(run1, qrels, ["ndcg@10"]), evaluate(run2, other, ["ndcg@10"])
    assert a.qrels_fingerprint == scored_qrels_fingerprint(qrels, qrels) != b.qrels_fingerprint
    with pytest.raises(DataError, match=r"compare: bm25 \(sha256-scored:[0-9a-f]{64}\) and hybrid \(sha256-scored:"
                                        r"[0-9a-f]{64}\) were scored against different qrels"):
        compare({"bm25": a, "hybrid": b}, ["ndcg@10"], n_resamples=100)
    same = compare({"bm25": a, "hybrid": evaluate(run2, qrels, ["ndcg@10"])}, ["ndcg@10"], n_resamples=100)
    assert same.significant[1, 0]
    # a query subset's judgements are fingerprinted as ragkit eval --limit's (those of the queries scored)
    some = {q: qrels[q] for q in QUERIES[:4]}
    assert evaluate(run1, some, ["ndcg@10"]).qrels_fingerprint == scored_qrels_fingerprint(qrels, QUERIES[:4])


def test_an_evaluate_result_is_checked_against_a_run_file_and_a_json_file(tmp_path: Path):
    """The fingerprint evaluate records is the one load_result computes for a run file, and the one ragkit eval
    records in its JSON: each is checked against the others."""
    run1, run2, qrels, other = _runs()
    trec = tmp_path / "run2.trec"
    run2.write_trec(trec)
    scored = load_result(trec, qrels=qrels, metrics=["ndcg@10"], name="file")
    assert compare({"py": evaluate(run1, qrels, ["ndcg@10"]), "file": scored}, ["ndcg@10"], n_resamples=50)
    with pytest.raises(DataError, match="scored against different qrels"):
        compare({"py": evaluate(run1, other, ["ndcg@10"]), "file": scored}, ["ndcg@10"], n_resamples=50)


def test_results_that_could_not_be_checked_are_warned_of(tmp_path: Path, caplog):
    """Review: the "could not be checked" note was logged at INFO, which a Python caller never sees.  An old
    'ragkit eval -o' file without a fingerprint still loads and compares, with the warning."""
    run1, run2, qrels, _ = _runs()
    a = evaluate(run1, qrels, ["ndcg@10"])
    by_hand = replace(evaluate(run2, qrels, ["ndcg@10"]), qrels_fingerprint=None)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"per_query": a.per_query}))  # (no settings: an older ragkit eval's file)
    for other, said in ((by_hand, "hand records no qrels fingerprint (a result built in Python"),
                        (load_result(old), f"{old} records no qrels fingerprint (a 'ragkit eval -o' file")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ragkit"):
            compare({"py": a, "hand": other}, ["ndcg@10"], n_resamples=50)
        warned = [r for r in caplog.records if "could not be checked" in r.getMessage()]
        assert len(warned) == 1 and warned[0].levelno == logging.WARNING, caplog.records
        assert said in warned[0].getMessage() and "as py could not be checked" in warned[0].getMessage()


# 3. ir_measures' metric names ----------------------------------------------------------------------------------

def test_ir_measures_names_are_read_as_ragkits():
    """Review: ``-m R@100`` (ir_measures' recall) was refused with "did you mean 'mrr@100'?"."""
    assert parse_metrics(["R@100", "AP@10", "RR@10", "r @ 5", "P@5", "nDCG@10", "r_cap@10", "Success@10"]) == [
        ("recall", 100), ("map", 10), ("mrr", 10), ("recall", 5), ("p", 5), ("ndcg", 10), ("r_cap", 10), ("acc", 10)]
    for bad, hint in (("R", "recall@100"), ("R@", "recall@100"), ("R100", "recall@100"), ("AP", "map@10")):
        with pytest.raises(DataError, match=rf"did you mean '{hint}'\?"):
            parse_metric(bad)
    run1, _, qrels, _ = _runs()
    ours = evaluate(run1, qrels, ["recall@1", "map@10", "mrr@10"])
    theirs = evaluate(run1, qrels, ["R@1", "AP@10", "RR@10"])
    assert list(theirs.scores.values()) == list(ours.scores.values()) and theirs["recall@1"] == ours["R@1"]
    with pytest.raises(Exception, match="name the same metric"):
        evaluate(run1, qrels, ["R@100", "recall@100"])


def test_cli_compare_reads_ir_measures_names(tmp_path: Path):
    data = _dataset(tmp_path)
    a, b = _trec(tmp_path / "a.trec", 1), _trec(tmp_path / "b.trec", 3)
    res = _cli(a, b, "--data", data, "-m", "R@100,RR@10", "--resamples", "100", "-o", tmp_path / "c.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "c.json").read_text())["metrics"] == ["recall@100", "mrr@10"]
