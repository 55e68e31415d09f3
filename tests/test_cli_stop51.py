"""CLI review (stop 51): outputs that would land inside a saved folder the command reads, ``train --out``
checked before any fit, ``-h``, notes on stderr, ``--queries -``, ``--import`` after the command, option
names in errors, exit statuses (2: bad input, 1: a failure while running), permissions kept on overwrite,
``1 query``, and the unjudged-documents hint of ``ragkit eval``."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import TINY_DOCS as DOCS, TINY_QUERIES as QUERIES


def _cli(*args: object, input: str | None = None):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"}, input=input)


def _tiny(root: Path, *, ids: tuple[str, ...] = ("d1", "d2", "d3", "d4"), judged: tuple[str, ...] = ("d1", "d2", "d3"))\
        -> Path:
    """A four-document BEIR folder with a test and a train split (``judged``: the test split's documents)."""
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n"
                                               for i, (_, t, x) in zip(ids, DOCS)), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in QUERIES),
                                        encoding="utf-8")
    head = "query-id\tcorpus-id\tscore\n"
    (root / "qrels" / "test.tsv").write_text(head + "".join(f"q{n}\t{d}\t1\n" for n, d in enumerate(judged, 1)),
                                             encoding="utf-8")
    (root / "qrels" / "train.tsv").write_text(head + f"q4\t{ids[3]}\t1\nq5\t{ids[1]}\t1\nq6\t{ids[2]}\t1\n",
                                              encoding="utf-8")
    return root


@pytest.fixture
def saved(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """``(data, index)``: the tiny dataset and a bm25 pipeline fitted on it and saved, the working folder
    ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    data = _tiny(tmp_path / "tiny")
    res = _cli("train", "--data", data, "-p", "bm25", "--out", tmp_path / "idx", "--no-report")
    assert res.exit_code == 0, res.output
    return data, tmp_path / "idx"


# ------------------------------------------------------------------ 1. outputs inside a saved folder read


@pytest.mark.parametrize("command", ["search", "eval"])
@pytest.mark.parametrize("option", ["-o", "--run"])
def test_an_output_inside_the_saved_folder_read_is_refused_before_work(saved, command, option):
    """Old code: ``search --index idx q -o idx/corpus.jsonl`` (and ``eval -p idx -o idx/corpus.jsonl``) exited 0
    and the folder then failed its checksum."""
    data, idx = saved
    before = (idx / "corpus.jsonl").read_bytes()
    target = Path("idx") / ".." / "idx" / "corpus.jsonl"  # (resolved: the same file)
    args = (["search", "--index", "idx", "vitamin"] if command == "search" else
            ["eval", "--data", data, "-p", "idx"])
    res = _cli(*args, option, target)
    assert res.exit_code == 2, res.output
    what = "--index idx" if command == "search" else "--pipeline idx"
    assert f"{'--output' if option == '-o' else '--run'} {target}: inside {what}, the saved folder" in res.output
    assert (idx / "corpus.jsonl").read_bytes() == before
    assert _cli("search", "--index", "idx", "vitamin").exit_code == 0  # still loads


# ------------------------------------------------------------------ 2, 3, 4. train --out; -h; -o


def test_train_out_in_an_unwritable_folder_is_refused_before_the_dataset_is_read(tmp_path, monkeypatch):
    """Old code: ``train --out /proc/sci`` failed only after all the fitting."""
    import ragkit

    data = _tiny(tmp_path / "tiny")

    def no_read(*a, **k):
        raise AssertionError("the dataset was read")

    monkeypatch.setattr(ragkit, "load_beir", no_read)
    res = _cli("train", "--data", data, "-p", "bm25", "--out", "/proc/ragkit-sci/fitted")
    assert res.exit_code == 2, res.output
    assert "--out /proc/ragkit-sci/fitted: cannot write into the folder /proc" in res.output


def test_train_out_dash_is_refused(tmp_path, monkeypatch):
    """Old code: ``train --out -`` saved a folder named '-'."""
    monkeypatch.chdir(tmp_path)
    data = _tiny(tmp_path / "tiny")
    res = _cli("train", "--data", data, "-p", "bm25", "--out", "-", "--no-report")
    assert res.exit_code == 2 and "--out -: a fitted pipeline is saved as a folder" in res.output
    assert not Path("-").exists()


@pytest.mark.parametrize("command", [[], ["eval"], ["train"], ["search"], ["ask"], ["validate"], ["compare"]])
def test_dash_h_is_help(command):
    res = _cli(*command, "-h")
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output and "--help" in res.output


def test_train_o_is_out(saved):
    res = _cli("train", "--data", saved[0], "-p", "bm25", "-o", "idx2", "--no-report")
    assert res.exit_code == 0, res.output
    assert Path("idx2/manifest.json").is_file()


# ------------------------------------------------------------------ 5. notes on stderr


def test_search_summary_goes_to_stderr_when_o_writes_a_file(saved):
    """Old code: "searched 2 queries ...; 1 found no document" on stdout."""
    res = _cli("search", "--index", "idx", "vitamin", "zzzunknown", "-o", "out.json")
    assert res.exit_code == 0, res.output
    assert "1 found no document" in res.stderr and "found no document" not in res.stdout
    assert len(json.loads(Path("out.json").read_text())["results"]) == 2


def test_compare_notes_go_to_stderr(saved):
    """Old code: compare's ``note:`` lines (few queries differ) on stdout, with the table."""
    data, _ = saved
    Path("a.trec").write_text("q1 Q0 d1 1 2.0 a\nq2 Q0 d2 1 2.0 a\nq3 Q0 d3 1 2.0 a\n", encoding="utf-8")
    Path("b.trec").write_text("q1 Q0 d4 1 2.0 b\nq2 Q0 d2 1 2.0 b\nq3 Q0 d3 1 2.0 b\n", encoding="utf-8")
    res = _cli("compare", "a.trec", "b.trec", "--data", data, "--resamples", "100")
    assert res.exit_code == 0, res.output
    assert "note:" in res.stderr and "differ on 1 of 3 queries" in res.stderr
    assert "note:" not in res.stdout and "ndcg@10" in res.stdout


# ------------------------------------------------------------------ 6. --queries -


@pytest.mark.parametrize("text, ids", [("vitamin fractures\ncats sleep\n", ["1", "2"]),
                                       ('{"_id": "x1", "text": "cats"}\n{"_id": "x2", "text": "dogs"}\n',
                                        ["x1", "x2"]),
                                       ("t1\tcats\nt2\tdogs\n", ["t1", "t2"])])
def test_search_reads_queries_from_stdin(saved, text, ids):
    res = _cli("search", "--index", "idx", "--queries", "-", "-o", "-", input=text)
    assert res.exit_code == 0, res.output
    assert [r["query_id"] for r in json.loads(res.stdout)["results"]] == ids


def test_search_stdin_errors_name_the_option(saved):
    res = _cli("search", "--index", "idx", "--queries", "-", input="a\tb\nc\n")
    assert res.exit_code == 2 and "--queries - (standard input):2: a tab on line 1" in res.output


# ------------------------------------------------------------------ 7. --import


def test_import_after_the_command_says_where_it_goes(capsys):
    from ragkit.cli import main

    assert main(["eval", "--import", "m", "--data", "x", "-p", "bm25"]) == 2
    err = capsys.readouterr().err
    assert "No such option: --import" in err and "--import goes before the command: ragkit --import MODULE eval" in err


def test_import_of_a_data_folder_is_refused(tmp_path, monkeypatch):
    """Old code: ``ragkit --import tiny validate bm25`` imported the folder as a namespace package, silently."""
    monkeypatch.chdir(tmp_path)
    _tiny(tmp_path / "tinyds")
    monkeypatch.syspath_prepend(str(tmp_path))
    res = _cli("--import", "tinyds", "validate", "bm25")
    assert res.exit_code == 2, res.output
    assert "--import tinyds: " in res.output and "is a folder, not a Python package" in res.output


# ------------------------------------------------------------------ 8. option names in errors


def test_missing_pipeline_yaml_names_the_option_without_python_advice(tmp_path):
    res = _cli("eval", "--data", _tiny(tmp_path / "tiny"), "-p", tmp_path / "nosuch.yaml")
    assert res.exit_code == 2 and f"--pipeline {tmp_path / 'nosuch.yaml'}: no such file" in res.output
    assert "Pipeline.load(folder)" not in res.output and "RagkitRetriever" not in res.output


def test_validate_of_a_missing_file_gives_no_python_advice(tmp_path):
    res = _cli("validate", tmp_path / "nosuch.yaml")
    assert res.exit_code == 2 and f"{tmp_path / 'nosuch.yaml'}: no such file or folder" in res.output
    assert "Pipeline.load(folder)" not in res.output


def test_compare_of_a_folder_says_it_is_a_folder(saved):
    Path("a.trec").write_text("q1 Q0 d1 1 2.0 a\n", encoding="utf-8")
    res = _cli("compare", "a.trec", "tiny")
    assert res.exit_code == 2 and "RESULTS: tiny: a folder; expected" in res.output and "no such file" not in res.output


def test_ask_cache_dir_error_names_the_flag(saved):
    res = _cli("ask", "--data", "tiny", "-p", "bm25", "--cache-dir", "tiny/corpus.jsonl", "vitamin")
    assert res.exit_code == 2, res.output
    assert "--cache-dir tiny/corpus.jsonl: " in res.output and "generate.cache_dir" not in res.output


# ------------------------------------------------------------------ 9. exit statuses


def test_a_write_that_fails_while_running_exits_1(saved, monkeypatch):
    import ragkit._files as files

    def broken(path, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "atomic_file", broken)
    res = _cli("eval", "--data", saved[0], "-p", "bm25", "-o", "r.json")
    assert res.exit_code == 1, res.output
    assert "--output r.json: could not be written: No space left on device" in res.output
    assert _cli("eval", "--data", saved[0], "-p", "nosuch.yaml").exit_code == 2  # bad input: 2


def test_a_download_that_fails_exits_1(tmp_path, monkeypatch):
    import ragkit
    from ragkit.eval.beir import DownloadError

    def offline(*a, **k):
        raise DownloadError("could not download BEIR dataset 'scifact' from https://example.invalid/s.zip: offline")

    monkeypatch.setattr(ragkit, "load_beir", offline)
    res = _cli("eval", "--data", "scifact", "-p", "bm25")
    assert res.exit_code == 1 and "could not download" in res.output


# ------------------------------------------------------------------ 10. permissions kept


def test_an_overwritten_file_keeps_its_permissions(tmp_path):
    """Old code: a ``chmod 600`` results file became 644 once ``eval -o`` wrote it again."""
    from ragkit._files import atomic_file

    target = tmp_path / "p.json"
    target.write_text("{}")
    target.chmod(0o600)
    with atomic_file(target) as tmp:
        tmp.write_text('{"a": 1}')
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and json.loads(target.read_text()) == {"a": 1}
    fresh = tmp_path / "new.json"
    with atomic_file(fresh) as tmp:
        tmp.write_text("{}")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------ 11, 12. eval's header and notes


def test_eval_says_1_query(saved):
    res = _cli("eval", "--data", saved[0], "-p", "bm25", "--limit", "1")
    assert res.exit_code == 0, res.output
    assert "(1 query)" in res.output and "1 queries" not in res.output


def test_eval_gives_the_leading_zeros_hint(tmp_path):
    """Old code: all metrics 0 with only the note of judged documents missing from the corpus; Python's
    evaluate said the ids differ by leading zeros.  Since the corpus holds none of the judged documents, the
    evaluation is refused before the fit (every score would be 0), with that hint."""
    data = _tiny(tmp_path / "zeros", ids=("1", "2", "3", "4"), judged=("01", "02", "03"))
    res = _cli("eval", "--data", data, "-p", "bm25")
    assert res.exit_code == 2, res.output
    assert "none of the 3 documents the qrels judge relevant" in res.stderr
    assert "'01'" in res.stderr and "leading zeros" in res.stderr
