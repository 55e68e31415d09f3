"""A new user's path through the README's commands: mistakes get a clear error before any work,
and the commands do only the work their output needs (no language model behind a score)."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from ragkit import evaluate
from ragkit.run import Run

DOCS = [("d1", "Vitamin D", "Vitamin D prevents fractures in elderly people."),
        ("d2", "Cats", "Cats sleep most of the day."),
        ("d3", "Dogs", "Dogs bark at strangers."),
        ("é4", "Café", "Un café au lait à Paris."),
        ("d5", "", "Fractures of the hip are common.")]
QUERIES = [("q1", "does vitamin D prevent fractures"), ("q2", "why do cats sleep"), ("q3", "dog barking"),
           ("q4", "café à Paris"), ("q5", "hip fracture"), ("q6", "sleeping cats"), ("q7", "barking dogs"),
           ("q8", "vitamin for bones")]
TEST = "q1\td1\t1\nq2\td2\t1\nq4\té4\t1\n"
TRAIN = "q3\td3\t1\nq5\td5\t1\nq6\td2\t1\nq7\td3\t1\nq8\td1\t1\n"
GENERATE_FIRST = ("pipeline[0].generate: generate (generator) works on the rank"
                  "ings of the steps before it, and none before it retrieves anything")
GENERATE_YAML = "pipeline:\n  - bm25: {k: 10}\n  - generate: {max_new_tokens: 2, top_k: 2}\n"


def _cli(*args: object, columns: int = 200):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns)})


def _tiny(root: Path, queries: bool = True) -> Path:
    """A five-document BEIR folder (a unicode id among them), or its corpus.jsonl alone."""
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i, t, x in DOCS:
            f.write(json.dumps({"_id": i, "title": t, "text": x}, ensure_ascii=False) + "\n")
    if not queries:
        (root / "qrels").rmdir()
        return root
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        for i, t in QUERIES:
            f.write(json.dumps({"_id": i, "text": t}, ensure_ascii=False) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + TEST, encoding="utf-8")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + TRAIN, encoding="utf-8")
    return root


class _FakeEngine:
    """Stands for the local LLM: answers "ok" at once."""

    def generate(self, question: str, chunks: list[str], *, on_token=None, **kw) -> str:
        if on_token is not None:
            on_token("ok")
        return "ok"


@pytest.fixture
def no_llm(monkeypatch) -> list[int]:
    """``generate`` fits a fake engine; calling it in a scored command is a failure (``calls`` counts)."""
    from ragkit.generators.operator import Generate

    calls: list[int] = []

    def call(self, state):
        calls.append(len(state.queries))
        raise AssertionError("the language model ran")

    monkeypatch.setattr(Generate, "_fit", lambda self, corpus, train, upstream: setattr(self, "engine_", _FakeEngine()))
    monkeypatch.setattr(Generate, "_call", call)
    monkeypatch.setattr(Generate, "check_ready", lambda self, **kw: None)  # (no model package needed either)
    return calls


def test_eval_scores_the_rankings_before_a_generate_step_without_running_the_llm(tmp_path, no_llm):
    data = _tiny(tmp_path / "tiny")
    (tmp_path / "rag.yaml").write_text(GENERATE_YAML)
    res = _cli("eval", "--data", data, "-p", tmp_path / "rag.yaml", "-o", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    assert not no_llm and "generate step (and any step after it) is not run" in res.output
    out = json.loads((tmp_path / "r.json").read_text())
    assert out["metrics"]["ndcg@10"] == pytest.approx(1.0) and "generate" not in out["pipeline"]
    # a saved, fitted pipeline with a generate step is scored the same way
    from ragkit import load_beir
    from ragkit.generators.operator import Generate
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25

    pipe = Pipeline([BM25(k=10), Generate(max_new_tokens=2)])
    pipe.fit(load_beir(data).corpus)
    pipe.save(tmp_path / "saved")
    res = _cli("eval", "--data", data, "-p", tmp_path / "saved")
    assert res.exit_code == 0 and not no_llm, res.output


def test_eval_and_train_refuse_a_pipeline_that_starts_with_generate_before_any_fit(tmp_path, no_llm):
    data = _tiny(tmp_path / "tiny")
    (tmp_path / "g.yaml").write_text("pipeline:\n  - generate: {}\n  - bm25: {}\n")
    for cmd in (("eval",), ("train", "--out", tmp_path / "out")):
        res = _cli(*cmd, "--data", data, "-p", tmp_path / "g.yaml")
        assert res.exit_code == 2, res.output
        # (refused when the file loads)
        assert f"{tmp_path / 'g.yaml'}: line 2: {GENERATE_FIRST}" in res.output, res.output
        assert "ndcg" not in res.output and not (tmp_path / "out").exists()


ROUTED_GENERATE_YAML = """pipeline:
  - bm25: {k: 10}
  - route:
      router: {rule_router: {rules: [{label: short, max_words: 3}], default: long}}
      branches:
        short: [generate: {max_new_tokens: 2, top_k: 2}]
        long: [top_k: {k: 10}]
"""


def test_a_generate_step_inside_a_route_is_not_run_by_eval_train_or_search(tmp_path, monkeypatch):
    """Only a pipeline's own generate step was cut: one inside a route branch (or a parallel, a loop)
    ran the language model on every query of ``eval`` (hours on SciFact) for answers nobody reads."""
    from ragkit.generators.operator import Generate

    class _Refuses(_FakeEngine):
        def generate(self, *a, **kw) -> str:
            raise AssertionError("the language model ran")

    monkeypatch.setattr(Generate, "_fit", lambda self, corpus, train, upstream: setattr(self, "engine_", _Refuses()))
    monkeypatch.setattr(Generate, "_engine", lambda self: setattr(self, "engine_", _Refuses()))  # (what load calls)
    data = _tiny(tmp_path / "tiny")
    (tmp_path / "rag.yaml").write_text(ROUTED_GENERATE_YAML)
    res = _cli("eval", "--data", data, "-p", tmp_path / "rag.yaml", "-o", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["ndcg@10"] > 0
    res = _cli("train", "--data", data, "-p", tmp_path / "rag.yaml", "--out", tmp_path / "out", "--report")
    assert res.exit_code == 0, res.output
    res = _cli("search", "--index", tmp_path / "out", "cats")  # one word: the route's generate branch
    assert res.exit_code == 0 and "d2" in res.output, res.output
    # in Python the same option: generate={"answer": False} passes the rankings on
    from ragkit.errors import ParamError
    from ragkit.pipelines import Pipeline

    pipe = Pipeline.load(tmp_path / "out")
    with pytest.raises(AssertionError, match="the language model ran"):
        pipe.search(["cats"])
    assert pipe.search(["cats"], generate={"answer": False}).doc_ids[0].tolist()[0] == "d2"
    with pytest.raises(ParamError, match="generate.answer: expected true or false, got str 'no'"):
        pipe.search(["cats"], generate={"answer": "no"})


def test_train_report_scores_without_the_llm_and_saves_the_generate_step(tmp_path, no_llm):
    data = _tiny(tmp_path / "tiny")
    (tmp_path / "rag.yaml").write_text(GENERATE_YAML)
    res = _cli("train", "--data", data, "-p", tmp_path / "rag.yaml", "--out", tmp_path / "out", "--report")
    assert res.exit_code == 0, res.output
    assert not no_llm and "held-out 1 of 5 train queries" in res.output
    assert "generate" in (tmp_path / "out" / "pipeline.yaml").read_text()  # ask answers with it


def test_commands_to_copy_and_timings_stay_on_one_line_at_80_columns(tmp_path):
    data = _tiny(tmp_path / "a folder with a rather long name for its tiny dataset")
    out = tmp_path / "and a saved pipeline with a name as long"
    res = _cli("train", "--data", data, "-p", "bm25", "--out", out, "--no-report", columns=80)
    assert res.exit_code == 0, res.output
    assert f"(evaluate with: ragkit eval --data '{data}' --pipeline '{out}')" in res.output
    res = _cli("eval", "--data", data, "-p", out, "-o", tmp_path / "r.json", columns=80)
    assert res.exit_code == 0, res.output
    timings = next(line for line in res.output.splitlines() if line.startswith("load "))
    assert "total" in timings and f"wrote {tmp_path / 'r.json'}" in res.output
    (tmp_path / "p.yaml").write_text("pipeline:\n  - bm25: {k: 100}\n  - generate: {max_new_tokens: 2, top_k: 2, "
                                     "mode: full}\n")
    res = _cli("validate", tmp_path / "p.yaml", columns=80)
    assert "pipeline[1].generate  Generate(top_k=2, mode='full', max_new_tokens=2)" in res.output, res.output


@pytest.mark.parametrize("part", ["corpus.jsonl", "qrels/test.tsv"])
def test_a_file_given_as_data_is_refused_naming_its_folder(tmp_path, part):
    data = _tiny(tmp_path / "tiny")
    (tmp_path / "r.json").write_text("{}")
    (tmp_path / "r.trec").write_text("q1 Q0 d1 1 1.0 x\n")
    for cmd in (("eval", "-p", "bm25"), ("train", "-p", "bm25", "--out", tmp_path / "out"),
                ("compare", tmp_path / "r.trec", tmp_path / "r.json")):
        res = _cli(*cmd, "--data", data / part)
        assert res.exit_code == 2, res.output
        assert (f"--data {data / part}: a file; expected a BEIR folder (corpus.jsonl, queries.jsonl and "
                f"qrels/<split>.tsv) or a dataset name such as scifact (this file's dataset: --data {data})"
                in res.output), res.output


def test_compare_refuses_an_empty_result_file_instead_of_scoring_it_zero(tmp_path):
    data = _tiny(tmp_path / "tiny")
    res = _cli("eval", "--data", data, "-p", "bm25", "-o", tmp_path / "bm25.json")
    assert res.exit_code == 0, res.output
    (tmp_path / "cut.trec").write_text("\n  \n")
    res = _cli("compare", tmp_path / "cut.trec", tmp_path / "bm25.json", "--data", data)
    assert res.exit_code == 2 and "mean" not in res.output
    assert f"RESULTS: {tmp_path / 'cut.trec'}: an empty file" in res.output


def test_ask_fits_on_a_folder_that_holds_only_a_corpus(tmp_path, monkeypatch):
    from ragkit.generators.operator import Generate

    monkeypatch.setattr(Generate, "_fit", lambda self, corpus, train, upstream: setattr(self, "engine_", _FakeEngine()))
    folder = _tiny(tmp_path / "docs", queries=False)
    res = _cli("ask", "-p", "bm25", "--data", folder, "--max-new-tokens", "2", "Does vitamin D prevent fractures?")
    assert res.exit_code == 0, res.output
    assert res.output.startswith("ok\n") and "sources: d1 (Vitamin D)" in res.output


def test_ask_and_search_name_a_path_that_does_not_exist(tmp_path):
    res = _cli("ask", "-p", "bm25", "--data", tmp_path / "docs" / "corpus.json", "why?")
    assert res.exit_code == 2
    assert (f"--data {tmp_path / 'docs' / 'corpus.json'}: no such file or folder; expected a BEIR dataset name or "
            "folder, or a corpus.jsonl file") in res.output
    res = _cli("search", "--index", tmp_path / "saved", "cats")
    assert res.exit_code == 2 and f"--index {tmp_path / 'saved'}: no such folder" in res.output


def test_compare_refuses_to_write_over_one_of_its_results(tmp_path):
    data = _tiny(tmp_path / "tiny")
    for name, k1 in (("bm25", "0.9"), ("tuned", "1.5")):
        (tmp_path / f"{name}.yaml").write_text(f"pipeline:\n  - bm25: {{k1: {k1}}}\n")
        res = _cli("eval", "--data", data, "-p", tmp_path / f"{name}.yaml", "--k", "5", "-o", tmp_path / f"{name}.json")
        assert res.exit_code == 0, res.output
    kept = (tmp_path / "bm25.json").read_bytes()
    res = _cli("compare", tmp_path / "bm25.json", tmp_path / "tuned.json", "-m", "ndcg@5", "-o", tmp_path / "bm25.json")
    assert res.exit_code == 2 and f"--output {tmp_path / 'bm25.json'}: one of the RESULTS" in res.output, res.output
    assert (tmp_path / "bm25.json").read_bytes() == kept and "mean" not in res.output


def test_eval_refuses_to_write_over_its_pipeline_or_its_dataset(tmp_path):
    data = _tiny(tmp_path / "tiny")
    (tmp_path / "p.yaml").write_text("pipeline:\n  - bm25: {k: 10}\n")
    kept = {f: f.read_bytes() for f in (tmp_path / "p.yaml", data / "qrels" / "test.tsv", data / "corpus.jsonl")}
    for opt, path, what in (("--output", tmp_path / "p.yaml", "the --pipeline file"),
                            ("--run", data / "qrels" / "test.tsv", f"a file of --data {data}"),
                            ("--output", data / "corpus.jsonl", f"a file of --data {data}")):
        res = _cli("eval", "--data", data, "-p", tmp_path / "p.yaml", opt, path)
        assert res.exit_code == 2, res.output
        assert f"{opt} {path}: is {what}; writing there would replace it" in res.output, res.output
        assert "ndcg" not in res.output
    assert all(f.read_bytes() == b for f, b in kept.items())


def test_a_pipeline_without_a_retriever_is_refused_before_any_fit(tmp_path, monkeypatch, no_llm):
    from ragkit.generators.operator import Generate
    from ragkit.pipelines import Pipeline

    fitted: list[str] = []
    monkeypatch.setattr(Generate, "fit", lambda self, *a, **kw: fitted.append("generate") or self)
    monkeypatch.setattr(Pipeline, "fit", lambda self, *a, **kw: fitted.append("pipeline") or self)
    data = _tiny(tmp_path / "tiny")
    for args in (("eval", "--data", data, "-p", "mmr"),
                 ("train", "--data", data, "-p", "top_k", "--out", tmp_path / "o"),
                 ("ask", "--data", data, "-p", "generate", "why?")):
        res = _cli(*args)
        assert res.exit_code == 2, res.output
        op = args[args.index("-p") + 1]
        assert (f"--pipeline {op}: the pipeline has no retriever (its operators: {op}), so no query would get a "
                "document") in res.output, res.output
    (tmp_path / "g.yaml").write_text("pipeline:\n  - generate: {}\n  - bm25: {}\n")
    res = _cli("ask", "--data", data, "-p", tmp_path / "g.yaml", "why?")
    assert res.exit_code == 2 and GENERATE_FIRST in res.output, res.output
    assert fitted == [] and not (tmp_path / "o").exists()


def test_validate_refuses_what_eval_would_refuse(tmp_path):
    (tmp_path / "p.yaml").write_text("pipeline:\n  - mmr: {}\n  - top_k: {k: 10}\n")
    res = _cli("validate", tmp_path / "p.yaml")
    assert res.exit_code == 2 and "ok" not in res.output, res.output
    assert f"{tmp_path / 'p.yaml'}: the pipeline has no retriever (its operators: mmr, top_k)" in res.output
    (tmp_path / "g.yaml").write_text("pipeline:\n  - generate: {}\n  - bm25: {}\n")
    res = _cli("validate", tmp_path / "g.yaml")
    assert res.exit_code == 2 and GENERATE_FIRST in res.output, res.output


def test_validate_takes_an_operator_name_as_eval_does(tmp_path, monkeypatch):
    """``ragkit eval --pipeline bm25`` works, ``ragkit validate bm25`` said 'no such file'."""
    monkeypatch.chdir(tmp_path)
    res = _cli("validate", "bm25")
    assert res.exit_code == 0 and "ok bm25: 1 operator" in res.output, res.output
    res = _cli("validate", "mmr")
    assert res.exit_code == 2 and "mmr: the pipeline has no retriever" in res.output, res.output
    res = _cli("validate", "nosuch")
    assert res.exit_code == 2 and "nosuch: no such file or folder, and unknown operator 'nosuch'" in res.output
    res = _cli("validate", "nosuch.yaml")
    assert res.exit_code == 2 and "no such file" in res.output and "unknown operator" not in res.output


def test_ask_refuses_a_question_that_retrieves_nothing_before_loading_the_llm(tmp_path, monkeypatch):
    from ragkit.generators.operator import Generate

    monkeypatch.setattr(Generate, "_fit", lambda self, corpus, train, upstream: setattr(self, "engine_", _FakeEngine()))
    data = _tiny(tmp_path / "tiny")
    res = _cli("ask", "-p", "bm25", "--data", data, "what is the of and")
    assert res.exit_code == 2 and "ok" not in res.output and "sources" not in res.output, res.output
    assert "no document of the 5 matched the question 'what is the of and', so there is nothing to answer from" \
        in res.output
    res = _cli("ask", "-p", "bm25", "--data", data, "sleeping cats?")
    assert res.exit_code == 0 and "sources: d2 (Cats)" in res.output, res.output


def test_a_pipeline_that_learns_nothing_is_said_so_and_train_skips_its_report(tmp_path):
    data = _tiny(tmp_path / "tiny")
    res = _cli("train", "--data", data, "-p", "bm25", "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    assert ("note: --pipeline bm25: no operator learns from training queries (dense or muvera adapt, learn: true, "
            "cosine_adapter and dbnorm do), so ragkit train fits it as ragkit eval would; the held-out report is "
            "skipped") in res.output and "held-out 1" not in res.output
    res = _cli("train", "--data", data, "-p", "bm25", "--out", tmp_path / "b", "--report")
    assert res.exit_code == 0 and "held-out 1 of 5 train queries" in res.output and "is skipped" not in res.output
    res = _cli("eval", "--data", data, "-p", "bm25", "--train-split", "train")
    assert res.exit_code == 0 and "so --train-split train changes nothing" in res.output, res.output
    (tmp_path / "d.yaml").write_text("pipeline:\n  - bm25: {k: 5}\n  - dbnorm: {}\n")  # its query bank: train
    res = _cli("eval", "--data", data, "-p", tmp_path / "d.yaml", "--train-split", "train")
    assert "no operator learns" not in res.output, res.output
    (tmp_path / "r.yaml").write_text("pipeline:\n  - parallel: {branches: [bm25: {}, bm25: {k1: 1.5}], "
                                     "fuse: {rrf: {learn: true}}}\n")
    res = _cli("train", "--data", data, "-p", tmp_path / "r.yaml", "--out", tmp_path / "c")
    assert res.exit_code == 0 and "held-out 1 of 5" in res.output and "no operator learns" not in res.output


def test_eval_refuses_training_queries_that_are_also_evaluated_before_any_fit(tmp_path, monkeypatch):
    from ragkit.pipelines import Pipeline

    data = _tiny(tmp_path / "tiny")
    (data / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + TRAIN + "q2\td2\t1\n")
    (tmp_path / "r.yaml").write_text("pipeline:\n  - parallel: {branches: [bm25: {}, bm25: {k1: 1.5}], "
                                     "fuse: {rrf: {learn: true}}}\n")
    fitted: list[int] = []
    monkeypatch.setattr(Pipeline, "fit", lambda self, *a, **kw: fitted.append(1) or self)
    res = _cli("eval", "--data", data, "-p", tmp_path / "r.yaml", "--train-split", "train", "-o", tmp_path / "r.json")
    assert res.exit_code == 2 and fitted == [] and not (tmp_path / "r.json").exists(), res.output
    assert ("--train-split train: holds 1 of the evaluated --split test query ('q2'), whose scores would not be "
            "held out") in res.output
    monkeypatch.undo()
    res = _cli("eval", "--data", data, "-p", tmp_path / "r.yaml", "--train-split", "train", "--limit", "1")
    assert res.exit_code == 0, res.output  # q1 alone is evaluated: it was not learned from


def test_eval_refuses_a_saved_pipeline_on_the_queries_it_learned_from(tmp_path):
    """``ragkit train --split train --out M`` then ``ragkit eval --pipeline M --split train`` printed
    the training queries' nDCG@10 as a result; the saved steps now record (as digests) the queries
    they learned from, and eval refuses to score those before any search."""
    from ragkit import load_beir
    from ragkit.operator import Operator
    from ragkit.pipelines import Pipeline

    data = _tiny(tmp_path / "tiny")
    (tmp_path / "r.yaml").write_text("pipeline:\n  - parallel: {branches: [bm25: {}, bm25: {k1: 1.5}], "
                                     "fuse: {rrf: {learn: true}}}\n")
    res = _cli("train", "--data", data, "-p", tmp_path / "r.yaml", "--out", tmp_path / "m", "--no-report")
    assert res.exit_code == 0, res.output
    res = _cli("eval", "--data", data, "-p", tmp_path / "m", "--split", "train", "-o", tmp_path / "r.json")
    assert res.exit_code == 2 and not (tmp_path / "r.json").exists(), res.output
    assert ("--pipeline " + str(tmp_path / "m") + ": learned from 5 of the evaluated --split train queries ('q3', "
            "'q5', 'q6', ...) when it was fitted, whose scores would not be held out") in res.output
    res = _cli("eval", "--data", data, "-p", tmp_path / "m", "--split", "test")
    assert res.exit_code == 0, res.output
    ds = load_beir(data)
    pipe = Pipeline.load(tmp_path / "m")
    assert pipe.learned_from(ds.queries("train")) == ["q3", "q5", "q6", "q7", "q8"]
    assert pipe.learned_from(ds.queries("test")) == []
    renamed = ds.queries("train")  # the same ids with other texts are other queries (another dataset's)
    assert pipe.learned_from(type(renamed)(renamed.ids, [t + "?" for t in renamed.texts])) == []
    bm25 = Operator.load(tmp_path / "m" / "ops" / "00-bm25", corpus=ds.corpus, verify=False)
    assert bm25.learned_from(ds.queries("train")) == []  # it learns nothing from them
    pipe.fit(ds.corpus)  # a refit without training queries forgets them
    assert pipe.learned_from(ds.queries("train")) == []


def test_an_output_that_is_a_socket_is_refused_not_replaced(tmp_path):
    """A socket would be replaced by the renamed file: refused.  (A pipe or a character device, /dev/null or
    >(cmd), is written straight into: tests/test_cli_output_review.py.)"""
    import shutil
    import socket
    import stat

    data = _tiny(tmp_path / "tiny")
    sock_path = tmp_path / "out.json"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(sock_path))
    except OSError:  # (a path too long for a socket's address)
        import pytest

        pytest.skip("socket path too long")
    res = _cli("eval", "--data", data, "-p", "bm25", "--k", "5", "-o", tmp_path / "a.json")
    assert res.exit_code == 0, res.output
    shutil.copy(tmp_path / "a.json", tmp_path / "b.json")
    for args in (("eval", "--data", data, "-p", "bm25", "-o", sock_path),
                 ("eval", "--data", data, "-p", "bm25", "--run", sock_path),
                 ("compare", tmp_path / "a.json", tmp_path / "b.json", "-m", "ndcg@5", "-o", sock_path)):
        res = _cli(*args)
        assert res.exit_code == 2 and "ndcg" not in res.output, res.output
        assert f"{sock_path}: not a regular file, character device or pipe" in res.output
    assert stat.S_ISSOCK(sock_path.stat().st_mode)
    sock.close()


def test_eval_on_several_datasets_holds_one_corpus_at_a_time(tmp_path, monkeypatch):
    """Every dataset of a list (or an archive) is read and checked before any fit, and then held only in
    its turn: all of them stayed in memory (BEIR's larger corpora hold millions of documents each)."""
    import gc
    import weakref

    import ragkit

    read, alive_at_read = [], []

    def load_beir(*args, **kwargs):
        gc.collect()
        alive_at_read.append(sum(r() is not None for r in read))
        ds = real(*args, **kwargs)
        read.append(weakref.ref(ds.corpus))
        return ds

    real = ragkit.load_beir
    monkeypatch.setattr(ragkit, "load_beir", load_beir)
    data = ",".join(str(_tiny(tmp_path / name)) for name in ("a", "b", "c"))
    res = _cli("eval", "--data", data, "-p", "bm25", "-o", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    assert len(read) == 6 and alive_at_read == [0] * 6  # checked: 3 reads; evaluated: 3 more, one at a time
    timings = json.loads((tmp_path / "r.json").read_text())["subsets"]["c"]["timings"]
    assert timings["load_s"] > 0  # both of its reads


def test_eval_on_a_list_of_datasets_reports_each_and_their_mean(tmp_path):
    """``--data a,b`` evaluates each dataset as an archive's (BEIR's average over datasets), writes JSON
    that ``compare`` reads as one multi-dataset result, and refuses what cannot be such a list before
    any fit: a blank or repeated item, an archive inside it, a saved pipeline or ``--run``."""
    from ragkit.eval.compare import load_result

    a, b = _tiny(tmp_path / "a"), _tiny(tmp_path / "x" / "b")
    (b / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td3\t1\nq5\td5\t1\n", encoding="utf-8")
    both = f"{a},{b}"
    res = _cli("eval", "--data", both, "-p", "bm25", "-o", tmp_path / "bm25.json", columns=80)
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "bm25.json").read_text())
    assert out["dataset"] == "a,b" and list(out["subsets"]) == ["a", "b"]
    assert [out["subsets"][s]["n_queries"] for s in ("a", "b")] == [3, 2]
    means = out["metrics"]["ndcg@10"]
    assert means == pytest.approx((out["subsets"]["a"]["metrics"]["ndcg@10"]
                                   + out["subsets"]["b"]["metrics"]["ndcg@10"]) / 2)
    alone = _cli("eval", "--data", b, "-p", "bm25", "--k", "10", "-o", tmp_path / "b.json")
    assert alone.exit_code == 0, alone.output
    assert json.loads((tmp_path / "b.json").read_text())["metrics"]["ndcg@10"] == pytest.approx(
        out["subsets"]["b"]["metrics"]["ndcg@10"])
    assert "2 datasets, 5 queries" in res.output and "mean" in res.output
    assert "…" not in res.output and "recall@100" in res.output  # 12 columns printed whole, not cut to 80
    res = _cli("eval", "--data", both, "-p", "bm25", "--k", "10", "-o", tmp_path / "bm25b.json")
    cmp = _cli("compare", tmp_path / "bm25.json", tmp_path / "bm25b.json", "-m", "ndcg@10")
    assert cmp.exit_code == 0 and "5 queries of 2 datasets, each weighted equally" in cmp.output, cmp.output
    _cli("eval", "--data", f"{b},{a}", "-p", "bm25", "--k", "10", "-o", tmp_path / "ba.json")  # listed the other way
    cmp = _cli("compare", tmp_path / "bm25.json", tmp_path / "ba.json", "-m", "ndcg@10")
    assert cmp.exit_code == 0 and "5 queries of 2 datasets" in cmp.output, cmp.output
    assert load_result(tmp_path / "bm25.json").dataset == "a,b"
    cqa = tmp_path / "cqa"
    _tiny(cqa / "android"), _tiny(cqa / "gis")
    for data, message in ((f"{a},,{b}", "an empty item in the comma-separated list"),
                          (f"{a},{tmp_path / 'y' / 'a'}", "are both called 'a'"),
                          (f"{a},{cqa}", r"holds 2 datasets \(android, gis\); BEIR averages them first")):
        bad = _cli("eval", "--data", data, "-p", "bm25")
        assert bad.exit_code == 2 and re.search(message, bad.output), bad.output
    bad = _cli("eval", "--data", both, "-p", "bm25", "--run", tmp_path / "r.trec")
    assert bad.exit_code == 2 and "names 2 datasets (a, b) whose query ids may repeat" in bad.output, bad.output
    assert f"--data {a} --run" in bad.output


def test_search_says_when_a_query_finds_nothing(tmp_path):
    """A query that matched no document printed an empty table, saying nothing."""
    from ragkit.eval.beir import read_corpus
    from ragkit.retrievers import BM25

    BM25(k=5).fit(read_corpus(_tiny(tmp_path / "d") / "corpus.jsonl")).save(tmp_path / "ix")
    res = _cli("search", "--index", tmp_path / "ix", "the of and", "cats")
    assert res.exit_code == 0, res.output
    assert "the of and: no document found (BM25 returns only documents sharing a term with the query)" in res.output
    assert "Cats" in res.output and res.output.count("no document found") == 1


def test_the_notes_on_fewer_documents_name_the_steps_of_the_pipeline(tmp_path):
    """'returned at most N documents ... BM25 returns only documents sharing a term' blamed BM25 for a dense
    pipeline whose filter cut the lists (examples/filtered.yaml: dense | cosine_adapter), and ``ragkit search``
    named both BM25 and a filter whatever the pipeline held; each now names the steps the pipeline has."""
    import numpy as np

    from ragkit.eval.beir import read_corpus
    from ragkit.filters import ScoreThreshold
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25, Dense

    data = _tiny(tmp_path / "d")
    (tmp_path / "cut.yaml").write_text("pipeline:\n  - dense: {k: 3}\n  - score_threshold: {threshold: 0.999}\n")
    res = _cli("eval", "--data", data, "-p", tmp_path / "cut.yaml", "--k", "10")
    assert res.exit_code == 0, res.output
    note = res.output[res.output.index("note: the pipeline returned at most"):]
    assert ("what limits it: a step's k (pipeline[0].dense k=3: give it a larger one to measure that depth), or a "
            "step that returns fewer: a filter step returns only those that pass it\n") in note, note
    assert "BM25" not in note
    res = _cli("eval", "--data", data, "-p", "bm25", "--k", "10")
    note = res.output[res.output.index("note: the pipeline returned at most"):]
    assert "what limits it: a step that returns fewer: BM25 returns only documents sharing a term with the query\n" \
        in note, note
    assert "a step's k" not in note  # (bm25's k, 100, is not what cut the lists below 10: said before, falsely)
    corpus = read_corpus(data / "corpus.jsonl")
    corpus = type(corpus)(ids=corpus.ids, texts=corpus.texts, titles=corpus.titles,
                          metadata={"lang": np.array(["en", "en", "en", "fr", "en"], dtype=object)})
    Pipeline([Dense(k=3), ScoreThreshold(threshold=0.999)]).fit(corpus).save(tmp_path / "ix")
    res = _cli("search", "--index", tmp_path / "ix", "cats")
    assert res.exit_code == 0, res.output
    assert "cats: no document found (a filter step returns only those that pass it)" in res.output, res.output
    res = _cli("search", "--index", tmp_path / "ix", "cats", "--output", tmp_path / "out.json")  # (said no reason)
    assert res.exit_code == 0, res.output
    assert "; 1 found no document (a filter step returns only those that pass it)" in res.output, res.output
    BM25(k=3, filter={"lang": "fr"}).fit(corpus).save(tmp_path / "ix2")
    res = _cli("search", "--index", tmp_path / "ix2", "cats")
    assert ("cats: no document found (BM25 returns only documents sharing a term with the query; a metadata filter "
            "returns only documents that match it)") in res.output, res.output


def test_eval_depth_identical_ids_and_the_settings_it_ran_with(tmp_path):
    """A BEIR user could not retrieve deeper than the pipeline's k from the command line (recall@1000 of a
    k=100 BM25 equalled its recall@100), judged documents with their query's id were dropped without a
    word (ragkit's nDCG disagreed with trec_eval on ragkit's own run file), and the JSON did not say what
    it was run with (--train-split, --limit)."""
    root = tmp_path / "ids"
    (root / "qrels").mkdir(parents=True)
    docs = [(str(i), f"cell protein topic{i} " + " ".join(f"w{j}" for j in range(i))) for i in range(1, 31)]
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": str(i), "text": f"cell protein topic{i}"}) + "\n"
                                                for i in (1, 2, 3)))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\t1\t2\n2\t2\t1\n3\t10\t1\n")
    yaml = tmp_path / "bm25.yaml"
    yaml.write_text("pipeline:\n  - bm25: {k: 5}\n")
    res = _cli("eval", "--data", root, "-p", yaml, "--k", "5,20", "-o", tmp_path / "a.json",
               "--run", tmp_path / "a.trec")
    assert res.exit_code == 0, res.output
    assert "2 judged-relevant document(s) have their query's id" in res.output and "--keep-identical-ids" in res.output
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["settings"]["ignore_identical_ids"] is True and a["settings"]["depth"] is None
    assert a["settings"]["limit"] is None and a["settings"]["data"] == str(root) and a["settings"]["backend"] == "local"
    kept = _cli("eval", "--data", root, "-p", yaml, "--k", "5,20", "--keep-identical-ids", "-o", tmp_path / "b.json",
                "--run", tmp_path / "b.trec")  # (the run file holds the run as scored: a.trec lacks the dropped ids)
    b = json.loads((tmp_path / "b.json").read_text())
    assert "have their query's id" not in kept.output and b["metrics"]["ndcg@5"] > a["metrics"]["ndcg@5"]
    import pytrec_eval  # ragkit's numbers with the option are trec_eval's on ragkit's own run file

    run: dict[str, dict[str, float]] = {}
    for line in (tmp_path / "b.trec").read_text().splitlines():
        q, _, d, _, s, _ = line.split()
        run.setdefault(q, {})[d] = float(s)
    ev = pytrec_eval.RelevanceEvaluator({"1": {"1": 2}, "2": {"2": 1}, "3": {"10": 1}}, {"ndcg_cut.5"})
    want = sum(v["ndcg_cut_5"] for v in ev.evaluate(run).values()) / 3
    assert b["metrics"]["ndcg@5"] == pytest.approx(want, abs=1e-9)
    deep = _cli("eval", "--data", root, "-p", yaml, "--k", "5,20", "--depth", "20", "-o", tmp_path / "c.json")
    c = json.loads((tmp_path / "c.json").read_text())
    assert deep.exit_code == 0 and c["settings"]["depth"] == 20
    assert a["metrics"]["recall@20"] == a["metrics"]["recall@5"] < c["metrics"]["recall@20"]  # doc 10 found deeper


def test_eval_writes_json_or_a_run_to_standard_output_for_scripts(tmp_path):
    """``-o -`` wrote a file named '-' (and '-o /dev/stdout' into a pipe was refused): the JSON, or with
    ``--run -`` the TREC run, now goes alone to standard output and the table to standard error."""
    from typer.testing import CliRunner

    from ragkit.cli import app

    root = _tiny(tmp_path / "d")
    res = CliRunner().invoke(app, ["eval", "--data", str(root), "-p", "bm25", "--k", "10", "-o", "-"],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["metrics"]["ndcg@10"] >= 0 and "ndcg@10" in res.stderr and not (Path.cwd() / "-").exists()
    assert "trace" not in out
    res = CliRunner().invoke(app, ["eval", "--data", str(root), "-p", "bm25", "-o", "-", "--trace"])
    rows = json.loads(res.stdout)["trace"]  # --trace's table is in the JSON too, for scripts
    assert [r["path"] for r in rows] == ["pipeline[0].bm25"] and rows[0]["queries"] == 3 and "ndcg" in rows[0]
    res = CliRunner().invoke(app, ["eval", "--data", str(root), "-p", "bm25", "--run", "-"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines and all(len(x.split()) == 6 and x.split()[1] == "Q0" for x in lines)
    res = CliRunner().invoke(app, ["eval", "--data", str(root), "-p", "bm25", "-o", "-", "--run", "-"])
    assert res.exit_code != 0 and "both name standard output" in " ".join(res.output.split())


def test_train_prints_what_it_learned_and_its_step_table_whole_in_a_narrow_terminal(tmp_path):
    """ragkit train never said what it learned (the weights sat in learned.json only), and its per-step
    table folded each path across lines in a pipe or log file ('pipeline[0].p' / 'arallel.branc')."""
    data = _tiny(tmp_path / "tiny")
    (tmp_path / "p.yaml").write_text("pipeline:\n  - parallel:\n      branches:\n        - bm25: {k: 10}\n"
                                     "        - bm25: {k: 10, variant: okapi, k1: 1.5, b: 0.75}\n"
                                     "      fuse:\n        rrf: {learn: true, folds: 2}\n")
    res = _cli("train", "--data", data, "-p", tmp_path / "p.yaml", "--out", tmp_path / "out", "--report",
               columns=60)
    assert res.exit_code == 0, res.output
    learned = next(x for x in res.output.splitlines() if x.startswith("learned: "))
    assert "pipeline[0].parallel.fuse.rrf: " in learned and "weights [" in learned
    assert "pipeline[0].parallel.branches[1].bm25" in res.output.splitlines()  # a step's path on a line of its own


def test_eval_relevance_level_and_run_tag_as_trec_eval_takes_them(tmp_path):
    """trec_eval's -l (the lowest grade the binary measures count) and a run tag were missing."""
    import pytrec_eval

    root = _tiny(tmp_path / "d")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td2\t1\nq4\té4\t2\n",
                                             encoding="utf-8")
    res = _cli("eval", "--data", root, "-p", "bm25", "--k", "10", "--relevance-level", "2", "--run-tag", "mine",
               "-o", tmp_path / "r.json", "--run", tmp_path / "r.trec")
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "r.json").read_text())
    lines = (tmp_path / "r.trec").read_text(encoding="utf-8").splitlines()
    assert lines and all(x.split()[-1] == "mine" for x in lines) and out["settings"]["relevance_level"] == 2
    run: dict[str, dict[str, float]] = {}
    for line in lines:
        q, _, d, _, sc, _ = line.split()
        run.setdefault(q, {})[d] = float(sc)
    qrels = {"q1": {"d1": 2}, "q2": {"d2": 1}, "q4": {"é4": 2}}
    for level in (1, 2):
        ev = pytrec_eval.RelevanceEvaluator(qrels, {"recall.10"}, relevance_level=level).evaluate(run)
        want = sum(v["recall_10"] for v in ev.values()) / 3
        got = evaluate(Run.read_trec(tmp_path / "r.trec"), qrels, ["recall@10"], relevance_level=level)
        assert got["recall@10"] == pytest.approx(want)
    assert out["metrics"]["recall@10"] == pytest.approx(2 / 3)  # q2's grade-1 document is not relevant at -l 2
    bad = _cli("eval", "--data", root, "-p", "bm25", "--run-tag", "my tag", "--run", tmp_path / "x.trec")
    assert bad.exit_code != 0 and "holds whitespace" in bad.output and not (tmp_path / "x.trec").exists()


def test_search_writes_a_file_of_unjudged_queries_as_a_trec_run_or_json(tmp_path):
    """`ragkit search` showed tables of ad-hoc queries only: a file of unjudged queries (a submission,
    an app's batch) could not be searched into a run file or JSON from the command line."""
    from ragkit.eval.beir import read_corpus, read_query_file
    from ragkit.operator import Operator
    from ragkit.retrievers import BM25

    BM25(k=5).fit(read_corpus(_tiny(tmp_path / "d") / "corpus.jsonl")).save(tmp_path / "ix")
    pipe = Operator.load(tmp_path / "ix")
    (tmp_path / "q.tsv").write_text("a1\tvitamin fractures\n\nb 2\tcats\tsleep\n", encoding="utf-8")
    (tmp_path / "q.txt").write_text("vitamin fractures\ncats sleep\n", encoding="utf-8")
    tsv, txt = read_query_file(tmp_path / "q.tsv"), read_query_file(tmp_path / "q.txt")
    assert (tsv.ids, tsv.texts) == (["a1", "b 2"], ["vitamin fractures", "cats\tsleep"])
    assert (txt.ids, txt.texts) == (["1", "2"], ["vitamin fractures", "cats sleep"])
    assert read_query_file(tmp_path / "d" / "queries.jsonl").ids == [q for q, _ in QUERIES]

    res = _cli("search", "--index", tmp_path / "ix", "--queries", tmp_path / "d" / "queries.jsonl", "--k", 3,
               "--run", tmp_path / "out" / "r.trec", "--run-tag", "mine", "-o", tmp_path / "out" / "r.json")
    assert res.exit_code == 0, res.output
    assert "searched 8 queries" in res.output and "┃ rank" not in res.output
    expected = pipe.search(read_query_file(tmp_path / "d" / "queries.jsonl"), k=3)
    lines = [x.split() for x in (tmp_path / "out" / "r.trec").read_text(encoding="utf-8").splitlines()]
    assert [x[:4] + x[5:] for x in lines] == [[q, "Q0", d, str(r), "mine"] for q, ids, _ in expected
                                              for r, d in enumerate(ids, 1)]
    assert Run.read_trec(tmp_path / "out" / "r.trec").to_dict() == expected.to_dict()
    got = json.loads((tmp_path / "out" / "r.json").read_text(encoding="utf-8"))
    first = got["results"][0]
    assert (first["query_id"], first["query"], got["k"]) == ("q1", QUERIES[0][1], 3)
    assert [d["doc_id"] for d in first["documents"]] == list(expected.doc_ids[0])
    assert first["documents"][0]["title"] == "Vitamin D" and first["documents"][0]["rank"] == 1

    res = _cli("search", "--index", tmp_path / "ix", "--queries", tmp_path / "q.txt", "--run", "-")
    assert res.exit_code == 0 and res.stdout.splitlines()[0].startswith("1 Q0 d1 1 "), res.output
    bad = _cli("search", "--index", tmp_path / "ix", "--queries", tmp_path / "q.tsv", "--run", "-")
    assert bad.exit_code == 2 and "--run -: cannot write a TREC run file: query id 'b 2'" in bad.output, bad.output
    assert "searched" not in bad.output  # refused before the search

    bad_file = tmp_path / "mixed.txt"
    bad_file.write_text("cats\nq2\tdogs\n", encoding="utf-8")
    (tmp_path / "blank.tsv").write_text("q1\tcats\nq2\t  \n", encoding="utf-8")
    (tmp_path / "dup.tsv").write_text("q1\tcats\nq1\tdogs\n", encoding="utf-8")
    ix = ("search", "--index", tmp_path / "ix")
    for args, message in (((*ix, "cats", "--queries", tmp_path / "q.tsv"), "give one or the other"),
                          (ix, "no query: give one or more on the command line, or --queries FILE"),
                          ((*ix, "--queries", bad_file), f"{bad_file}:2: no tab on line 1 but one here"),
                          ((*ix, "--queries", tmp_path / "blank.tsv"), "blank.tsv:2: the query text is blank"),
                          ((*ix, "--queries", tmp_path / "dup.tsv"), "dup.tsv:2: query id 'q1' repeats"),
                          ((*ix, "--queries", tmp_path / "nope.txt"), "nope.txt: file not found"),
                          ((*ix, "--queries", tmp_path / "q.tsv", "-o", tmp_path / "q.tsv"), "is the --queries file"),
                          ((*ix, "cats", "--run", tmp_path / "x.trec", "--run-tag", "a b"), "--run-tag 'a b'")):
        bad = _cli(*args)
        assert bad.exit_code == 2 and message in bad.output, (args, bad.output)
    assert (tmp_path / "q.tsv").read_text(encoding="utf-8").startswith("a1\t") and not (tmp_path / "x.trec").exists()


def test_a_relevance_level_no_judgement_reaches_is_refused_before_the_fit(tmp_path, monkeypatch):
    """``--relevance-level 2`` on binary qrels scored recall, MAP, MRR and P as 0 (evaluate now refuses
    it); ragkit eval says so before fitting anything, naming the highest grade."""
    from ragkit.pipelines import Pipeline

    data = _tiny(tmp_path / "tiny")  # grades: 1 only
    monkeypatch.setattr(Pipeline, "fit", lambda self, *a, **kw: pytest.fail("fitted before the check"))
    res = _cli("eval", "--data", data, "-p", "bm25", "--relevance-level", "2")
    assert res.exit_code == 2, res.output
    assert f"--relevance-level (--data {data}): relevance_level 2 counts no judgement as relevant: the qrels' " \
           "highest grade is 1" in res.output


def test_help_texts_keep_what_markdown_would_eat():
    """`ragkit search --help` said "a TSV of query-idtext lines": rich's markdown mode dropped <TAB> as an HTML tag."""
    import re

    from ragkit.cli import app

    res = _cli("search", "--help")
    assert "query-id, tab, text" in " ".join(res.output.replace("│", " ").split()), res.output
    for command in app.registered_commands:  # no help text holds an <...> that markdown would drop
        params = inspect.signature(command.callback).parameters.values()
        texts = [command.callback.__doc__ or ""] + [getattr(param.default, "help", None) or "" for param in params]
        for text in texts:
            assert not re.search(r"<[A-Za-z/][^>]*>", text), (command.name, text)


def test_train_prints_what_a_cosine_adapter_learned(tmp_path):
    """``learned:`` lines came from the fusers', routers' and judges' reports only: a pipeline whose
    Cosine Adapter (or ``dense: {adapt}`` fine-tune) learned from the queries printed none."""
    from conftest import HashedEncoder

    from ragkit.encoders import register_encoder

    register_encoder("journey-hashed", HashedEncoder("journey-hashed-v1", 16), replace=True)
    data = _tiny(tmp_path / "tiny")
    (tmp_path / "c.yaml").write_text("pipeline:\n  - dense: {k: 5, model: journey-hashed}\n"
                                     "  - cosine_adapter: {model: journey-hashed, max_iter: 20}\n")
    res = _cli("train", "--data", data, "-p", tmp_path / "c.yaml", "--out", tmp_path / "o", "--no-report")
    assert res.exit_code == 0, res.output
    learned = [x for x in res.output.splitlines() if x.startswith("learned: ")]
    assert len(learned) == 1 and learned[0].startswith("learned: pipeline[1].cosine_adapter: queries 5, threshold "), \
        res.output


def test_train_report_says_when_it_rests_on_few_queries_and_when_the_saved_values_differ(tmp_path, monkeypatch):
    """With 5 queries the report rested on 1 held-out query without a word; its title folded mid-phrase
    ("(fit\\n on the other 4)"); and the final fit on every query could save weights the report never
    scored (SciFact slice: the report's fit kept equal weights, the saved pipeline [0.84, 0.16])."""
    from ragkit.pipelines import Pipeline

    data = _tiny(tmp_path / "tiny")
    (tmp_path / "r.yaml").write_text("pipeline:\n  - parallel: {branches: [bm25: {}, bm25: {k1: 1.5}], "
                                     "fuse: {rrf: {learn: true, folds: 2}}}\n")
    res = _cli("train", "--data", data, "-p", tmp_path / "r.yaml", "--out", tmp_path / "a", columns=60)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "held-out 1 of 5 train queries (fit on the other 4)" in lines, res.output
    assert ("caution: the held-out rows rest on 1 query: a difference between them may be chance; a split with "
            "at least 50 judged queries holds out 10 or more") in lines, res.output
    assert "learned other values" not in res.output  # the same weights from 4 queries and from 5
    learned = Pipeline.learned

    def final_fit_learns_more(self):  # the fit on all 5 queries learns other weights than the report's on 4
        out = learned(self)
        for entry in out.values():
            if entry.get("weights") and len(self.steps[0].fuse.trained_on_) == 5:
                entry["weights"] = [0.84, 0.16]
        return out

    monkeypatch.setattr(Pipeline, "learned", final_fit_learns_more)
    res = _cli("train", "--data", data, "-p", tmp_path / "r.yaml", "--out", tmp_path / "b")
    assert res.exit_code == 0, res.output
    note = next(x for x in res.output.splitlines() if "learned other values" in x)
    assert note.startswith("note: the saved pipeline, fitted on all 5 queries, learned other values than the report's "
                           "fit on 4 (which the held-out rows scored): pipeline[0].parallel.fuse.rrf: weights "
                           "[0.84, 0.16] (the report's fit: [") and note.endswith("]); no held-out query scored these")


def test_eval_notes_evaluated_queries_with_a_training_query_s_text_under_another_id(tmp_path):
    """--train-split refused shared ids only: a test question copied into the train split under a new id was
    learned from and scored as held out without a word (SciFact: '870' and '1292')."""
    data = _tiny(tmp_path / "tiny")
    with open(data / "queries.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"_id": "t9", "text": "Does vitamin D  prevent fractures"}) + "\n")
    (data / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + TRAIN + "t9\td1\t1\n")
    res = _cli("eval", "--data", data, "-p", "bm25", "--train-split", "train")
    assert res.exit_code == 0, res.output
    assert ("--split test: 1 of the 3 queries ('q1') has the text of a --train-split train query under another id "
            "(whitespace and case aside): scores on it are not held out if it asks the same question") in res.output


def test_an_examples_path_where_there_is_no_examples_folder_says_where_the_examples_are(tmp_path, monkeypatch):
    """The help's commands name ``examples/hybrid.yaml``, which an installed wheel does not ship: run elsewhere
    than the repository's root, the error now says so (it said only 'no such file').  Where ``examples/`` exists,
    a missing file in it is a plain 'no such file'."""
    monkeypatch.chdir(tmp_path)
    data = _tiny(tmp_path / "d")
    hint = "examples/ is a folder of ragkit's source repository, not of the installed package"
    for args in (("eval", "--data", data, "--pipeline", "examples/hybrid.yaml"), ("validate", "examples/hybrid.yaml"),
                 ("eval", "--data", data, "--pipeline", "examples/hybrid")):
        res = _cli(*args)
        assert res.exit_code == 2 and "no such file" in res.output and hint in res.output, (args, res.output)
    (tmp_path / "examples").mkdir()
    res = _cli("validate", "examples/hybrid.yaml")
    assert res.exit_code == 2 and "no such file" in res.output and hint not in res.output, res.output
    res = _cli("eval", "--data", data, "--pipeline", "other/hybrid.yaml")
    assert res.exit_code == 2 and "no such file" in res.output and hint not in res.output, res.output


def test_eval_json_dates_its_run_to_the_second_with_the_time_zone(tmp_path):
    """``ragkit eval -o``'s ``date`` was the day alone (``date.today()``); it is the moment, ISO 8601 with the time
    zone's offset, as ``ragkit compare -o`` writes it (one ``provenance.timestamp``)."""
    from datetime import datetime

    out = tmp_path / "r.json"
    res = _cli("eval", "--data", _tiny(tmp_path / "d"), "--pipeline", "bm25", "-o", out)
    assert res.exit_code == 0, res.output
    when = datetime.fromisoformat(json.loads(out.read_text(encoding="utf-8"))["date"])
    assert when.tzinfo is not None and abs((datetime.now().astimezone() - when).total_seconds()) < 600
