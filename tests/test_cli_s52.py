"""CLI review s52: ``compare`` options that score TREC run files refused where eval JSON files record otherwise,
``--alpha``'s open range said by its parser, compare's messages in the command line's words, and notes through one
helper."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli as _cli, tiny_beir as _tiny


@pytest.fixture
def evaluated(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """Two 'ragkit eval -o' JSON files of BM25 on a tiny dataset's test split (relevance level 1, identical ids
    ignored)."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    ds = _tiny(tmp_path / "tiny")
    out = []
    for name in ("a.json", "b.json"):
        res = _cli("eval", "--pipeline", "bm25", "--data", ds, "-o", tmp_path / name)
        assert res.exit_code == 0, res.output
        out.append(tmp_path / name)
    return out[0], out[1]


# ------------------------------------------------------------------ 1. scoring options against eval JSON files


@pytest.mark.parametrize("args, said", [
    (["--relevance-level", "2"], "--relevance-level 2: {a} was scored with relevance_level 1"),
    (["--split", "train"], "--split train: {a} holds results of split 'test'"),
    (["--keep-identical-ids"], "--keep-identical-ids: {a} was scored with ignore_identical_ids true"),
])
def test_compare_refuses_a_scoring_option_that_eval_json_files_record_otherwise(evaluated, args, said, tmp_path):
    """``compare a.json b.json --relevance-level 2`` (or ``--split train``, ``--keep-identical-ids``) compared the
    files' values as they were scored and wrote ``relevance_level: 2`` in its ``-o`` JSON; now refused (exit 2),
    naming the option, the value given, the file and what it records, and nothing is written."""
    a, b = evaluated
    res = _cli("compare", a, b, *args, "-o", tmp_path / "cmp.json")
    assert res.exit_code == 2, res.output
    message = " ".join(res.output.split())
    assert said.format(a=a) in message, message
    assert "scores TREC run files" in message and not (tmp_path / "cmp.json").exists()


def test_compare_takes_scoring_options_that_eval_json_files_record_alike(evaluated, tmp_path):
    """Given and agreeing with what every file records: compared, and the JSON records it."""
    a, b = evaluated
    res = _cli("compare", a, b, "--split", "test", "--relevance-level", "1", "-o", tmp_path / "cmp.json")
    assert res.exit_code == 0, res.output
    written = json.loads((tmp_path / "cmp.json").read_text(encoding="utf-8"))
    assert written["split"] == "test" and written["relevance_level"] == 1


# ------------------------------------------------------------------ 2. --alpha's open range


def test_compare_alpha_says_its_open_range_in_help_and_refuses_its_bounds_by_the_parser(evaluated, monkeypatch):
    """``--alpha``'s help and range error said "a number from 0 to 1", but 0 and 1 were refused afterwards by a
    check in the command's body ("strictly between"); the parser now says and applies the open range."""
    import importlib

    a, b = evaluated
    assert "[a number strictly between 0 and 1]" in " ".join(_cli("compare", "--help").output.split())

    def refuse(*args, **kwargs):
        raise AssertionError("a result was read: --alpha should have been refused by its parser")

    monkeypatch.setattr(importlib.import_module("ragkit.eval.compare"), "load_result", refuse)
    for bound in ("0", "1"):
        res = _cli("compare", a, b, "--alpha", bound)
        assert res.exit_code == 2, res.output
        message = " ".join(res.output.split())
        assert f"Invalid value for '--alpha': expected a number strictly between 0 and 1, got '{bound}'" in message


def test_ranged_parser_with_exclusive_bounds():
    """``_range_parser(..., exclusive=True)``: the bounds refused, what lies between taken; one bound alone said
    as ``>`` / ``<``."""
    import typer

    from ragkit.cli._options import _range_parser, _range_text

    parse = _range_parser("--alpha", float, 0.0, 1.0, exclusive=True)
    assert parse("0.05") == 0.05 and parse(0.999) == 0.999
    for bad in ("0", "1", "nan", "-0.1"):
        with pytest.raises(typer.BadParameter, match="strictly between 0 and 1"):
            parse(bad)
    assert _range_text(float, 0.0, None, exclusive=True) == "a number > 0"
    assert _range_text(int, None, 10, exclusive=True) == "an integer < 10"
    assert _range_text(float, 0.0, 1.0) == "a number from 0 to 1"  # (closed, as before)


# ------------------------------------------------------------------ 3. compare's messages in the command line's words


def _runs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A tiny dataset whose test split judges document ``q2`` (query q2's own id) relevant to q2 at grade 2, and two
    TREC run files of it."""
    ds = _tiny(tmp_path / "tiny")
    with open(ds / "corpus.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"_id": "q2", "title": "", "text": "cats sleep a lot, s52"}) + "\n")
    with open(ds / "qrels" / "test.tsv", "a", encoding="utf-8") as f:
        f.write("q2\tq2\t2\n")
    runs = []
    for name, top in (("a.trec", "d1"), ("b.trec", "d3")):
        (tmp_path / name).write_text(f"q1 Q0 {top} 1 2.0 x\nq1 Q0 d2 2 1.0 x\nq2 Q0 q2 1 2.0 x\nq2 Q0 d2 2 1.0 x\n"
                                     "q3 Q0 d3 1 2.0 x\n", encoding="utf-8")
        runs.append(tmp_path / name)
    return ds, runs[0], runs[1]


def test_compare_relevance_level_error_names_the_option_and_data(tmp_path, monkeypatch):
    """``compare x.trec y.trec --data D --relevance-level 3`` said "error: evaluate: relevance_level 3 ...", in the
    words of the Python function; now as ragkit eval says it, naming the option and --data."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    ds, a, b = _runs(tmp_path)
    res = _cli("compare", a, b, "--data", ds, "--relevance-level", "3", "--resamples", "100")
    assert res.exit_code == 2, res.output
    message = " ".join(res.output.split())
    assert f"error: --relevance-level (--data {ds}): relevance_level 3 counts no judgement as relevant" in message
    assert "evaluate:" not in message


def test_compare_identical_ids_note_says_the_cli_option_only(tmp_path, monkeypatch):
    """The note of a judged document with its query's id told a compare user to "pass ignore_identical_ids=False
    (ragkit eval and compare: --keep-identical-ids)" and "EvalResult.ignored_judged counts them", then (rewritten by
    substring) still began "evaluate:" and was said once for all run files without naming one; now compare says
    it per run file, naming the file, in ragkit eval's words (the option alone)."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    ds, a, b = _runs(tmp_path)
    res = _cli("compare", a, b, "--data", ds, "--resamples", "100")
    assert res.exit_code == 0, res.output
    message = " ".join(res.output.split())
    for run in (a, b):
        assert (f"note: {run}: 1 judged-relevant document(s) have their query's id and are never scored as "
                "retrieved") in message, message
    assert "so they count as not found; --keep-identical-ids scores them" in message
    assert "evaluate:" not in message
    assert "ignore_identical_ids" not in message and "EvalResult" not in message
    kept = _cli("compare", a, b, "--data", ds, "--resamples", "100", "--keep-identical-ids")
    assert kept.exit_code == 0, kept.output
    assert "judged-relevant document" not in kept.output


def test_load_result_counts_identical_ids_and_keeps_its_python_note(tmp_path, caplog):
    """``load_result`` of a TREC run file records how many judged documents with their query's id its scoring
    dropped (``ignored_judged``; ``None`` for an eval JSON file); a Python caller still gets evaluate's warning,
    which ``note_identical=False`` (compare's) leaves out."""
    import logging

    from ragkit.eval import metrics
    from ragkit.eval.compare import load_result

    ds, a, _ = _runs(tmp_path)
    qrels = {"q1": {"d1": 1}, "q2": {"q2": 2}}
    metrics._WARNED.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        quiet = load_result(a, qrels=qrels, note_identical=False)
    assert quiet.ignored_judged == 1 and "query's id" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        said = load_result(a, qrels=qrels)
    assert said.ignored_judged == 1 and "1 judged-relevant document has its query's id" in caplog.text
    assert load_result(a, qrels=qrels, ignore_identical_ids=False).ignored_judged == 0


# ------------------------------------------------------------------ 6. notes through one helper


def test_pipeline_note_is_escaped_under_an_ascii_stderr(tmp_path):
    """The note that no operator learns from training queries was written by ``typer.echo``: under
    ``PYTHONIOENCODING=ascii`` its pipeline path's ``ü`` went out as raw UTF-8 bytes, where every other note (Rich's
    stderr console) escapes it; now it goes through the same helper, escaped as the error lines are."""
    import os
    import subprocess
    import sys

    ds = _tiny(tmp_path / "tiny")
    (tmp_path / "pü.yaml").write_text("pipeline:\n  - bm25: {}\n", encoding="utf-8")
    env = {**{k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR", "FORCE_COLOR")},
           "PYTHONIOENCODING": "ascii", "RAGKIT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "ragkit", "eval", "--pipeline", "pü.yaml", "--data", str(ds),
                           "--train-split", "train"], cwd=tmp_path, capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.isascii(), done.stderr
    assert (b"note: --pipeline p\\xfc.yaml: no operator learns from training queries" in done.stderr), done.stderr


# ------------------------------------------------------------------ 7. a folder with a comma in a --data list


def test_eval_data_list_refuses_a_folder_whose_name_holds_a_comma(tmp_path, monkeypatch):
    """``eval --data "tiny,ti,ny"`` where ``ti,ny`` is a local folder split it into ``ti`` and ``ny`` and tried to
    download ``ti.zip``; now refused (exit 2) before anything is downloaded, naming the folder.  The folder alone is
    one dataset, as before."""
    import importlib

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    _tiny(tmp_path / "tiny")
    _tiny(tmp_path / "ti,ny")
    downloads: list[str] = []

    def no_download(name, *args, **kwargs):
        downloads.append(name)
        raise AssertionError(f"download_beir({name!r}) ran: the list should have been refused")

    monkeypatch.setattr(importlib.import_module("ragkit.eval.beir"), "download_beir", no_download)
    res = _cli("eval", "--pipeline", "bm25", "--data", "tiny,ti,ny")
    assert res.exit_code == 2, res.output
    message = " ".join(res.output.split())
    assert "--data tiny,ti,ny: 'ti,ny' is a folder whose name holds a comma" in message, message
    assert "a list cannot hold a folder name with a comma" in message and downloads == []
    assert _cli("eval", "--pipeline", "bm25", "--data", "ti,ny").exit_code == 0


def test_eval_data_list_refuses_a_file_whose_name_holds_a_comma_as_a_file(tmp_path, monkeypatch):
    """``eval --data "tiny,ti,ny"`` where ``ti,ny`` is a file (a zip archive, say): refused as for a folder, but the
    message called it "a folder name with a comma"; now it says a file name."""
    import importlib

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    _tiny(tmp_path / "tiny")
    (tmp_path / "ti,ny").write_bytes(b"PK")

    def no_download(name, *args, **kwargs):
        raise AssertionError(f"download_beir({name!r}) ran: the list should have been refused")

    monkeypatch.setattr(importlib.import_module("ragkit.eval.beir"), "download_beir", no_download)
    res = _cli("eval", "--pipeline", "bm25", "--data", "tiny,ti,ny")
    assert res.exit_code == 2, res.output
    message = " ".join(res.output.split())
    assert "--data tiny,ti,ny: 'ti,ny' is a file whose name holds a comma" in message, message
    assert "a list cannot hold a file name with a comma" in message and "folder" not in message, message


def test_compare_checks_what_eval_json_files_record_before_scoring_a_run_file(tmp_path, monkeypatch):
    """``compare a.json run.trec --data D --relevance-level 2``: the JSON file's recorded relevance_level 1 is
    refused (exit 2) before the run file is read and scored (the check ran after every run file was scored)."""
    import importlib

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    ds, run, _ = _runs(tmp_path)
    res = _cli("eval", "--pipeline", "bm25", "--data", ds, "-o", tmp_path / "a.json")
    assert res.exit_code == 0, res.output

    def no_scoring(*args, **kwargs):
        raise AssertionError("a run file was scored: the eval JSON file's settings should have been refused first")

    monkeypatch.setattr(importlib.import_module("ragkit.eval.compare"), "_evaluate_noted", no_scoring)
    res = _cli("compare", tmp_path / "a.json", run, "--data", ds, "--relevance-level", "2", "--resamples", "100")
    assert res.exit_code == 2, res.output
    message = " ".join(res.output.split())
    assert f"--relevance-level 2: {tmp_path / 'a.json'} was scored with relevance_level 1" in message, message
