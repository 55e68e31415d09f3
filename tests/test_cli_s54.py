"""CLI s54: ``validate`` refuses what eval refuses (a folder that is no save, a saved operator that retrieves
nothing), ``/dev/stdout`` onto a redirected file written into, search's JSON built only for ``-o``, a closed
standard input for ``--queries -``, no temporary file left by a killed write, and one copy of shared helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import TINY_DOCS as DOCS, cli as _cli, tiny_beir as _tiny


def _index(root: Path) -> Path:
    """A fitted, saved BM25 pipeline over :data:`DOCS`."""
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    pipe = Pipeline([BM25()])
    pipe.fit(Corpus([d[0] for d in DOCS], [d[2] for d in DOCS], [d[1] for d in DOCS]))
    pipe.save(root)
    return root


def _ragkit(*args: object, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """``python -m ragkit args`` in ``cwd`` (its own process: its own standard streams)."""
    return subprocess.run([sys.executable, "-m", "ragkit", *map(str, args)], cwd=cwd, timeout=300, **kwargs)


# ------------------------------------------------------------------ 1. validate refuses what eval refuses


def test_validate_refuses_a_folder_holding_only_a_pipeline_yaml_as_eval_does(tmp_path):
    """A hand-made folder with a pipeline.yaml but no manifest.json: eval, train and search refuse it (no save),
    validate said "ok" (it read the YAML).  Now both say it is neither a saved pipeline nor a saved operator."""
    data = _tiny(tmp_path / "tiny")
    hand = tmp_path / "hand"
    hand.mkdir()
    (hand / "pipeline.yaml").write_text("pipeline:\n  - bm25: {k: 10}\n", encoding="utf-8")
    said = "a folder, but neither a saved pipeline (no manifest.json) nor a saved operator (no params.json)"
    ev = _cli("eval", "--data", data, "--pipeline", hand, "--limit", 1)
    assert ev.exit_code == 2 and said in ev.output, ev.output
    res = _cli("validate", hand)
    assert res.exit_code == 2, res.output
    assert said in " ".join(res.output.split()) and "ok" not in res.output.split()


def test_validate_refuses_a_saved_operator_that_retrieves_nothing_as_eval_does(tmp_path):
    """A saved top_k (Operator.save: params.json) was "ok" to validate and refused by eval ("the pipeline has no
    retriever"): the saved-operator branch never reached _check_retrieves."""
    from ragkit import registry

    data = _tiny(tmp_path / "tiny")
    registry.get("top_k")(k=3).save(tmp_path / "topk")
    said = "the pipeline has no retriever (its operators: top_k)"
    ev = _cli("eval", "--data", data, "--pipeline", tmp_path / "topk", "--limit", 1)
    assert ev.exit_code == 2 and said in ev.output, ev.output
    res = _cli("validate", tmp_path / "topk")
    assert res.exit_code == 2, res.output
    assert said in " ".join(res.output.split())


def test_validate_still_takes_saved_folders_and_a_saved_retriever(tmp_path):
    """A saved pipeline (its pipeline.yaml read) and a saved bm25 operator stay valid."""
    from ragkit.retrievers import BM25

    idx = _index(tmp_path / "idx")
    BM25(k=5).save(tmp_path / "op")
    for folder in (idx, tmp_path / "op"):
        res = _cli("validate", folder)
        assert res.exit_code == 0 and "ok" in res.output and "BM25" in res.output, res.output


# ------------------------------------------------------------------ 2. /dev/stdout onto a redirected file


def test_run_to_dev_stdout_appends_to_the_file_standard_output_is_redirected_to(tmp_path):
    """``--run /dev/stdout >> log.txt`` (and ``-o /dev/stdout``) replaced log.txt with the run file (a temporary
    file renamed over /dev/stdout's target): the line already there was lost.  Now it is written as ``-`` is,
    after what the file holds, the human output on standard error."""
    import json

    idx = _index(tmp_path / "idx")
    log = tmp_path / "log.txt"
    log.write_text("line kept from an earlier run\n", encoding="utf-8")
    with open(log, "a", encoding="utf-8") as out:
        done = _ragkit("search", "--index", idx, "cats", "--run", "/dev/stdout", cwd=tmp_path, stdout=out,
                       stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0, done.stderr
    lines = log.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "line kept from an earlier run" and lines[1].split()[:3] == ["1", "Q0", "d2"], lines
    assert "searched 1 query" in done.stderr
    with open(log, "a", encoding="utf-8") as out:
        done = _ragkit("search", "--index", idx, "cats", "-o", "/dev/stdout", cwd=tmp_path, stdout=out,
                       stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0, done.stderr
    text = log.read_text(encoding="utf-8")
    assert text.startswith("line kept from an earlier run\n1 Q0 d2 ")
    payload = json.loads(text[text.index("{"):])
    assert payload["results"][0]["documents"][0]["doc_id"] == "d2"


def test_json_and_run_both_onto_standard_output_are_refused_and_dev_null_twice_is_taken(tmp_path):
    """``-o - --run /dev/stdout`` with standard output redirected to a file: the run replaced the file (the JSON
    lost); now refused, as ``-o - --run -`` is, for both would run together there.  Both to /dev/null: taken."""
    idx = _index(tmp_path / "idx")
    log = tmp_path / "o.txt"
    log.write_text("old\n", encoding="utf-8")
    with open(log, "a", encoding="utf-8") as out:
        done = _ragkit("search", "--index", idx, "cats", "-o", "-", "--run", "/dev/stdout", cwd=tmp_path,
                       stdout=out, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 2, done.stderr
    assert "--output - and --run /dev/stdout both name standard output" in " ".join(done.stderr.split())
    assert log.read_text(encoding="utf-8") == "old\n"
    res = _cli("search", "--index", idx, "cats", "-o", "-", "--run", "-")
    assert res.exit_code == 2 and "both name standard output" in " ".join(res.output.split()), res.output
    with open(os.devnull, "w") as null:
        done = _ragkit("search", "--index", idx, "cats", "-o", "/dev/null", "--run", "/dev/null", cwd=tmp_path,
                       stdout=null, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------ 3. search's JSON built only for -o


def test_search_builds_its_json_only_when_output_is_given(tmp_path, monkeypatch):
    """``search --run`` alone built the whole -o payload all the same (a dict per document, Corpus.row_of per
    query: 441 MiB at 2,000 queries and --k 1000), then threw it away.  Now nothing of it is built without -o."""
    import json

    from ragkit.types import Corpus

    idx = _index(tmp_path / "idx")
    calls: list[int] = []
    row_of = Corpus.row_of
    monkeypatch.setattr(Corpus, "row_of", lambda self, ids: calls.append(len(ids)) or row_of(self, ids))
    res = _cli("search", "--index", idx, "cats", "dogs", "--run", tmp_path / "run.trec")
    assert res.exit_code == 0, res.output
    assert calls == [] and (tmp_path / "run.trec").read_text().split()[:3] == ["1", "Q0", "d2"]
    res = _cli("search", "--index", idx, "cats", "dogs", "--run", tmp_path / "run.trec", "-o", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    assert len(calls) == 2 and json.loads((tmp_path / "r.json").read_text())["results"][1]["query"] == "dogs"


# ------------------------------------------------------------------ 4. --queries - with standard input closed


def test_search_queries_from_a_closed_standard_input_is_one_line_and_exit_2(tmp_path):
    """``ragkit search --queries - <&-``: a traceback (``'NoneType' object has no attribute 'buffer'``), exit 1.
    Now one line saying so, exit 2."""
    idx = _index(tmp_path / "idx")
    done = _ragkit("search", "--index", idx, "--queries", "-", "--run", "-", cwd=tmp_path, capture_output=True,
                   text=True, preexec_fn=lambda: os.close(0))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("error: --queries - (standard input): standard input is closed; pipe the "
                                   "queries in") and "Traceback" not in done.stderr and done.stdout == ""


def test_search_queries_from_a_standard_input_that_fails_to_read_is_a_run_failure(tmp_path):
    """A read of standard input that fails (EIO) is the command's failure, exit 1, naming --queries - (only the input
    is replaced: click's runner gives the command a standard input whose reads fail)."""
    import errno
    import io

    from click.testing import CliRunner  # (typer's takes no stream as input)
    from typer.main import get_command

    from ragkit.cli import app

    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:  # noqa: ANN001
            raise OSError(errno.EIO, "Input/output error")

    idx = _index(tmp_path / "idx")
    res = CliRunner().invoke(get_command(app), ["search", "--index", str(idx), "--queries", "-", "--run", "-"],
                             input=io.BufferedReader(Failing()), env={"COLUMNS": "200"})
    assert res.exit_code == 1, res.output
    assert "error: --queries - (standard input): could not be read: Input/output error" in res.output


# ------------------------------------------------------------------ 5. no temporary file left by a killed write


def test_an_output_a_killed_write_left_is_removed_by_the_next_write_of_it(tmp_path):
    """A write of ``-o`` / ``--run`` killed (SIGKILL, a lost machine) left its hidden temporary file beside the output
    forever (it named only a process id: never judged stale).  It now names its owner, as saves' do, and the next
    write of that output removes what an ended process left; another file's temporary files are left alone."""
    idx = _index(tmp_path / "idx")
    kill = ("import os, sys; from ragkit._files import text_output; cm = text_output(sys.argv[1]); "
            "f = cm.__enter__(); f.write('1 Q0 d9 1 0.5 half'); f.flush(); os._exit(9)")
    for target in ("run.trec", "other.trec"):
        done = subprocess.run([sys.executable, "-c", kill, target], cwd=tmp_path, timeout=120)
        assert done.returncode == 9
    left = sorted(p.name for p in tmp_path.glob(".*.tmp*"))
    assert len(left) == 2 and all("@" in name for name in left), left  # (its owner named: host and process)
    res = _cli("search", "--index", idx, "cats", "--run", tmp_path / "run.trec")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.glob(".*.tmp*")) == [n for n in left if n.startswith(".other.")]
    assert (tmp_path / "run.trec").read_text().split()[:3] == ["1", "Q0", "d2"]
