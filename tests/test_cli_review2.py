"""CLI review: pipelines given to ``ragkit compare`` for their results are named as such, with the commands
that write those results; errors a pipeline YAML file's fit or search raises name the file and the line,
as its load's errors do."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from conftest import cli as _cli, tiny_beir as _tiny

from ragkit.errors import DataError

LINEAR = "description: linear bm25 then top_k\npipeline:\n  - bm25: {k: 50, b: 0.4, k1: 0.9}\n  - top_k: {k: 20}\n"
FUSION = ("pipeline:\n  - parallel:\n      branches:\n        - bm25: {k: 50}\n"
          "        - [bm25: {k: 50, variant: okapi}, top_k: {k: 30}]\n      fuse: {rrf: {}}\n  - top_k: {k: 20}\n")
FILTER_MISSING = ("pipeline:\n  - parallel:\n      branches:\n        - bm25: {k: 50}\n"
                  "        - bm25: {k: 50, filter: {year: 2020}}\n")  # line 5: no 'year' in the corpus
FILTER_ERROR = ("line 5: pipeline[0].parallel.branches[1].bm25.filter: field 'year' is not a metadata field of the "
                "corpus")




def _advice(output: str) -> list[list[str]]:
    """The command lines an error advises (its lines that start with ``ragkit``), as argument lists."""
    return [shlex.split(line.strip())[1:] for line in output.splitlines() if line.strip().startswith("ragkit ")]


# ------------------------------------------------------------------ pipelines given to compare


@pytest.mark.parametrize("with_data", [False, True])
def test_compare_of_pipeline_files_says_so_and_its_advice_runs(tmp_path, monkeypatch, with_data):
    """``ragkit compare linear.yaml fusion.yaml`` said "a TREC run file holds no judgements" (with --data:
    "linear.yaml:1: expected 6 columns ... got 5"); it names them pipeline files, with a ragkit eval command
    for each and the ragkit compare of what they write, and those commands run."""
    data = _tiny(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p").mkdir()
    Path("p/linear.yaml").write_text(LINEAR, encoding="utf-8")
    Path("p/fusion.yaml").write_text(FUSION, encoding="utf-8")
    res = _cli("compare", "p/linear.yaml", "p/fusion.yaml", *(["--data", data] if with_data else []))
    assert res.exit_code == 2
    assert "RESULTS: p/linear.yaml and p/fusion.yaml are pipeline YAML files, not results" in res.output
    assert "TREC run file holds no judgements" not in res.output and "columns" not in res.output
    steps = _advice(res.output)
    where = str(data) if with_data else "DATASET"
    assert steps == [["eval", "--data", where, "--split", "test", "--pipeline", "p/linear.yaml", "-o", "linear.json"],
                     ["eval", "--data", where, "--split", "test", "--pipeline", "p/fusion.yaml", "-o", "fusion.json"],
                     ["compare", "linear.json", "fusion.json"]]
    for step in steps:
        step = [str(data) if a == "DATASET" else a for a in step] + (["--resamples", "100"] if step[0] == "compare"
                                                                     else [])
        ran = _cli(*step)
        assert ran.exit_code == 0, ran.output
    assert "ndcg@10" in ran.output


def test_compare_names_a_saved_pipeline_folder_and_keeps_the_other_inputs(tmp_path, monkeypatch):
    """A folder written by Pipeline.save was "no such file"; its eval command's JSON gets a name of its own
    when another input has that name, and the other inputs stay in the advised compare, with --data and
    the scoring options where a run file needs them."""
    from ragkit.pipelines import Pipeline

    data = _tiny(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    Pipeline.from_yaml(LINEAR).save(tmp_path / "bm25")
    res = _cli("eval", "--data", data, "-p", "bm25", "--run", "a.run", "-o", "bm25.json")
    assert res.exit_code == 0, res.output
    res = _cli("compare", "bm25.json", "bm25", "a.run", "--data", data, "--relevance-level", "2")
    assert res.exit_code == 2
    assert "RESULTS: bm25 is a saved pipeline folder, not results: evaluate it first" in res.output
    assert _advice(res.output) == [
        ["eval", "--data", str(data), "--split", "test", "--pipeline", "bm25", "-o", "bm25_2.json",
         "--relevance-level", "2"],
        ["compare", "bm25.json", "bm25_2.json", "a.run", "--data", str(data), "--split", "test",
         "--relevance-level", "2"]]


def test_load_result_refuses_a_pipeline_in_any_form(tmp_path):
    """The library's load_result: a pipeline YAML file (block or flow style, or the list of steps alone),
    a pipeline in JSON and a saved folder are refused as pipelines, with qrels or without."""
    from ragkit.eval.compare import load_result, pipeline_kind
    from ragkit.pipelines import Pipeline

    forms = {"block.yaml": LINEAR, "flow.yml": "{pipeline: [{bm25: {k: 10}}]}",
             "steps.txt": "# bm25 alone\n- bm25: {k: 10}\n", "pipe.json": json.dumps({"pipeline": [{"bm25": {}}]})}
    for name, text in forms.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    Pipeline.from_yaml(LINEAR).save(tmp_path / "saved")
    for name in [*forms, "saved"]:
        for qrels in (None, {"q1": {"d1": 1}}):
            with pytest.raises(DataError, match=rf"^{tmp_path / name} is a (pipeline YAML file|pipeline in JSON|"
                                                rf"saved pipeline folder), not results: evaluate it first "
                                                rf"\(ragkit eval --data DATASET --split test --pipeline "):
                load_result(tmp_path / name, qrels=qrels)
    assert pipeline_kind(tmp_path / "saved") == "a saved pipeline folder"


def test_run_files_and_results_read_as_before(tmp_path):
    """TREC run files (blank lines, any whitespace, even one named .yaml) and eval JSON files are no pipelines;
    a malformed run file keeps its error."""
    from ragkit.eval.compare import load_result, pipeline_kind

    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    run = "\n\nq1 Q0 d1 1 2.5 x\nq1\tQ0  d2 2 1.5 x\nq2 Q0 d2 1 3.0 x\n"
    for name in ("a.run", "a.yaml"):
        (tmp_path / name).write_text(run, encoding="utf-8")
        assert pipeline_kind(tmp_path / name) is None
        got = load_result(tmp_path / name, qrels=qrels, metrics=["ndcg@10"])
        assert got.per_query["ndcg@10"] == {"q1": 1.0, "q2": 1.0}
    (tmp_path / "r.json").write_text(json.dumps({"pipeline": LINEAR, "per_query": {"ndcg@10": {"q1": 0.5}}}))
    assert pipeline_kind(tmp_path / "r.json") is None and load_result(tmp_path / "r.json").values("ndcg@10")
    (tmp_path / "bad.run").write_text("q1 Q0 d1 1 2.5\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.run:1: expected 6 columns 'qid Q0 docid rank score tag', got 5"):
        load_result(tmp_path / "bad.run", qrels=qrels)
    with pytest.raises(DataError, match="a TREC run file holds no judgements"):
        load_result(tmp_path / "bad.run")


# ------------------------------------------------------------------ fit-time errors: file and line


def test_eval_and_train_name_the_file_and_line_of_a_fit_error(tmp_path, monkeypatch):
    """``ragkit eval --pipeline f.yaml`` printed "error: pipeline[0].parallel.branches[1].bm25.filter: ..."
    for an error of the fit, without the file or the line its load errors have."""
    data, other = _tiny(tmp_path / "data"), _tiny(tmp_path / "other")
    monkeypatch.chdir(tmp_path)
    Path("fm.yaml").write_text(FILTER_MISSING, encoding="utf-8")
    for args in (["eval", "--data", data, "-p", "fm.yaml"], ["eval", "--data", f"{data},{other}", "-p", "fm.yaml"],
                 ["train", "--data", data, "-p", "fm.yaml", "--out", "out", "--no-report"]):
        res = _cli(*args)
        assert res.exit_code == 2
        assert f"error: fm.yaml: {FILTER_ERROR}" in res.output, (args, res.output)


def test_ask_names_the_file_and_line_and_still_answers(tmp_path, monkeypatch):
    """ask appended its generate step to the pipeline as one step, so a fit error's path read
    pipeline[0][0].parallel...; it appends it to the pipeline's steps: the YAML's path, file and line."""
    from ragkit.generators.operator import Generate

    class _Engine:
        def generate(self, question, chunks, *, on_token=None, **kw):
            if on_token is not None:
                on_token("ok")
            return "ok"

    monkeypatch.setattr(Generate, "_fit", lambda self, corpus, train, upstream: setattr(self, "engine_", _Engine()))
    data = _tiny(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    Path("fm.yaml").write_text(FILTER_MISSING, encoding="utf-8")
    Path("ok.yaml").write_text(LINEAR, encoding="utf-8")
    res = _cli("ask", "-p", "fm.yaml", "--data", data, "--mode", "full", "vitamin D fractures")
    assert res.exit_code == 2 and f"error: fm.yaml: {FILTER_ERROR}" in res.output, res.output
    res = _cli("ask", "-p", "ok.yaml", "--data", data, "--mode", "full", "vitamin D fractures")
    assert res.exit_code == 0, res.output
    assert res.output.startswith("ok\n") and "sources: d1 (Vitamin D)" in res.output


def test_validate_names_the_line_of_an_encoder_mismatch(tmp_path):
    """validate's encoder check (a dbnorm on another model's cosines) named the file but not the line."""
    p = tmp_path / "mm.yaml"
    p.write_text("pipeline:\n  - dense: {model: sentence-transformers/all-MiniLM-L6-v2}\n"
                 "  - dbnorm: {model: BAAI/bge-small-en-v1.5}\n", encoding="utf-8")
    res = _cli("validate", p)
    assert res.exit_code == 2
    assert f"error: {p}: line 3: pipeline[1].dbnorm.model: dbnorm encodes with 'BAAI/bge-small-en-v1.5'" in res.output


def test_errors_that_already_name_the_file_are_unchanged(tmp_path, monkeypatch):
    """A load error (it names the file and line already, even of a file called pipeline.yaml), an error
    of a saved folder and one of an operator name are printed as before."""
    from ragkit.errors import RagkitError
    from ragkit.pipelines import Pipeline

    data = _tiny(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    Path("pipeline.yaml").write_text("pipeline:\n  - bm25: {k: 0}\n", encoding="utf-8")
    with pytest.raises(RagkitError) as e:
        Pipeline.from_yaml("pipeline.yaml")
    res = _cli("eval", "--data", data, "-p", "pipeline.yaml")
    assert res.exit_code == 2 and res.output.strip() == f"error: {e.value}"
    Pipeline.from_yaml(FILTER_MISSING).save(tmp_path / "saved")
    res = _cli("eval", "--data", data, "-p", "saved")
    assert res.exit_code == 2
    assert "error: pipeline[0].parallel.branches[1].bm25.filter: field 'year'" in res.output


# ------------------------------------------------------------------ what eval says before and after a fit
def test_eval_does_not_promise_a_fit_that_the_learner_refuses(tmp_path):
    """Old code: a note said the score_router would fit with its parameters as given, then the fit refused it."""
    yaml = tmp_path / "route.yaml"
    yaml.write_text("pipeline:\n  - bm25: {k: 5}\n  - route:\n      router: {score_router: {learn: true}}\n"
                    "      branches:\n        easy: []\n        hard: [bm25: {k: 5, variant: okapi}]\n")
    res = _cli("eval", "--data", _tiny(tmp_path / "tiny"), "--pipeline", yaml)
    assert res.exit_code == 2 and "--train-split" in res.output, res.output
    assert "note:" not in res.output, res.output


def test_eval_counts_no_documents_for_an_encoder_it_cannot_count(tmp_path):
    """Old code: '(0 documents encoded)' for a dense step on a registered encoder that encoded all four."""
    from ragkit.encoders import HashingEncoder, register_encoder, unregister_encoder

    register_encoder("hash-cli", HashingEncoder(dim=32))
    try:
        yaml = tmp_path / "dense.yaml"
        yaml.write_text("pipeline:\n  - dense: {model: hash-cli, k: 3}\n")
        out = tmp_path / "out.json"
        res = _cli("eval", "--data", _tiny(tmp_path / "tiny"), "--pipeline", yaml, "-o", out)
    finally:
        unregister_encoder("hash-cli")
    assert res.exit_code == 0, res.output
    assert "documents encoded" not in res.output and " · fit " in res.output, res.output
    assert json.loads(out.read_text())["timings"]["documents_encoded"] is None


def test_an_mmr_on_the_default_model_after_another_models_dense_is_noted(tmp_path, caplog):
    """Review: ``[dense: {model: hash}, mmr: {}]`` encoded the corpus again with MiniLM, silently."""
    import logging

    from ragkit import Corpus, Pipeline
    from ragkit.encoders import HashingEncoder, register_encoder, unregister_encoder

    p = tmp_path / "mmr.yaml"
    p.write_text("pipeline:\n  - dense: {model: hash-mmr, k: 3}\n  - mmr: {k: 2}\n", encoding="utf-8")
    res = _cli("validate", p)  # (validate loads no model: the names are compared)
    assert res.exit_code == 0 and "note: pipeline[1].mmr.model: mmr encodes with the default" in " ".join(
        res.stderr.split()), res.output
    same = tmp_path / "same.yaml"
    same.write_text("pipeline:\n  - dense: {model: hash-mmr, k: 3}\n  - mmr: {k: 2, model: hash-mmr}\n")
    assert "mmr encodes with the default" not in _cli("validate", same).output
    from ragkit.pipelines._checks import encoder_notes

    assert len(encoder_notes(Pipeline.from_yaml(p))) == 1 and encoder_notes(Pipeline.from_yaml(same)) == []
    register_encoder("hash-mmr", HashingEncoder(dim=16))
    try:
        corpus = Corpus(ids=["a", "b", "c"], texts=["red apples", "green apples", "blue sky"])
        with caplog.at_level(logging.WARNING, logger="ragkit"):
            Pipeline.from_yaml(same).fit(corpus)
        assert "mmr encodes with the default" not in caplog.text
    finally:
        unregister_encoder("hash-mmr")
