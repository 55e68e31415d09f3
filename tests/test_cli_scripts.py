"""``ragkit`` driven from shell scripts: ``-o -`` gives a JSON that parses (``compare`` too), notes go to
stderr with their dataset, ``--trace`` lines stay whole in a pipe, a usage error is one ``error:`` line,
Python warnings read as ``warning:`` lines, ``RAGKIT_CACHE_QUERIES`` refuses what it does not understand,
and Ctrl-C while the command line loads exits 130 with ``interrupted``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from ragkit.errors import ParamError

DOCS = [("1", "Vitamin D prevents fractures in elderly people."), ("2", "Cats sleep most of the day."),
        ("3", "Vitamin D and fractures of the hip."), ("4", "Dogs bark at strangers."),
        ("5", "Cats and dogs sleep.")]
QUERIES = [("1", "vitamin D fractures"), ("2", "cats sleep"), ("q3", "dogs bark")]
# query 1's judged document 1 has the query's id (the identical-id note); only query 1 has a grade 2 (the
# --relevance-level 2 note); five documents (the depth note at --k 10)
QRELS = "query-id\tcorpus-id\tscore\n1\t1\t2\n1\t3\t1\n2\t2\t1\nq3\t4\t1\n"


def _cli(*args: object, env: dict[str, str] | None = None):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})


def _script(*args: object, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m ragkit ARGS`` as a script runs it: stdout and stderr pipes (80 columns), no terminal."""
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run([sys.executable, "-m", "ragkit", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={**base, "RAGKIT_CACHE": str(cwd / "cache"), **(env or {})})


def _tiny(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in DOCS))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in QUERIES))
    (root / "qrels" / "test.tsv").write_text(QRELS)
    return root


# ------------------------------------------------------------------ 1. compare -o -
def test_compare_dash_writes_the_json_alone_to_stdout(tmp_path, monkeypatch):
    """``ragkit compare a.json b.json -o -`` wrote a file named ``-`` and the table on stdout."""
    data = _tiny(tmp_path / "d")
    for name, k in (("a", "3"), ("b", "10")):
        (tmp_path / f"{name}.yaml").write_text(f"pipeline:\n  - bm25: {{k: {k}}}\n")
        res = _cli("eval", "--data", data, "-p", tmp_path / f"{name}.yaml", "-o", tmp_path / f"{name}.json")
        assert res.exit_code == 0, res.output
    monkeypatch.chdir(tmp_path)
    res = _cli("compare", "a.json", "b.json", "-o", "-", "--resamples", "100")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metrics"] == ["ndcg@10", "recall@100"], res.stdout
    assert not (tmp_path / "-").exists()
    assert "baseline a" in res.stderr and "ndcg@10" in res.stderr and "wrote" not in res.output


def test_eval_of_several_datasets_dash_keeps_the_wide_table_off_stdout(tmp_path):
    """The table of several datasets, wider than 80 columns, was printed on stdout beside ``-o -``'s JSON."""
    _tiny(tmp_path / "d1"), _tiny(tmp_path / "d2")
    res = _cli("eval", "--data", f"{tmp_path / 'd1'},{tmp_path / 'd2'}", "-p", "bm25", "--k", "10,100,1000", "-o", "-",
               env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.stdout)["subsets"]) == {"d1", "d2"}
    assert "mean" in res.stderr


# ------------------------------------------------------------------ 2. eval's notes on stderr
def test_eval_notes_go_to_stderr_after_their_datasets_line_with_its_name(tmp_path):
    data = _tiny(tmp_path / "d1")
    res = _cli("eval", "--data", data, "-p", "bm25", "--k", "3,10", "--relevance-level", "2")
    assert res.exit_code == 0, res.output
    assert "note:" not in res.stdout and "metric" in res.stdout
    for said in ("1 judged-relevant document(s) have their query's id", "the pipeline returned at most",
                 "2 of the 3 judged queries have no judgement >= 2 (--relevance-level"):
        assert f"note: {said}" in res.stderr, res.stderr
    _tiny(tmp_path / "d2")
    res = _cli("eval", "--data", f"{tmp_path / 'd1'},{tmp_path / 'd2'}", "-p", "bm25", "--k", "3,10")
    assert res.exit_code == 0, res.output
    assert "note:" not in res.stdout
    out = res.output  # (stdout and stderr as they came)
    for name in ("d1", "d2"):
        said = out.index(f"note: {name}: 2 judged-relevant document(s) have their query's id")
        assert out.index(f"{name} / test (3 queries)") < said, out
    assert out.index("note: d1: 2 judged") < out.index("d2 / test")


# ------------------------------------------------------------------ 3, 4, 7: the script
def test_a_script_gets_whole_trace_lines_and_one_line_usage_errors(tmp_path):
    data = _tiny(tmp_path / "d")
    out = _script("eval", "--data", data, "-p", "bm25", "--trace", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if "call(s)" in x)  # (a pipe: 80 columns)
    assert len(line) > 80 and line.rstrip().endswith(tuple("0123456789-")) and "nDCG@10" in line, out.stdout
    for args, said in ((("--k", "10,100,abcdefghijklmnop"), "Invalid value for --k: expected comma-separated "
                        "integers such as 10,100, got '10,100,abcdefghijklmnop'"),
                       (("--kk", "3"), "No such option: --kk")):
        out = _script("eval", "--data", data, "--pipeline", "bm25", *args, cwd=tmp_path)
        assert out.returncode == 2 and out.stdout == "", out
        assert out.stderr.startswith(f"error: {said}") and out.stderr.count("\n") == 1, out.stderr
        assert out.stderr.endswith(" (see 'ragkit eval --help')\n") and "╭" not in out.stderr


def test_the_console_script_is_main():
    tomllib = pytest.importorskip("tomllib")  # (Python 3.11+; requires-python allows 3.10)

    from ragkit import __main__

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"ragkit": "ragkit.__main__:main"} and callable(__main__.main)


def test_main_returns_the_status_and_says_a_usage_error_in_one_line(tmp_path, capsys):
    from ragkit.cli import main

    assert main(["eval", "--pipeline", "bm25"]) == 2
    assert capsys.readouterr().err == "error: Missing option '--data' (see 'ragkit eval --help')\n"
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("ragkit ")
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2  # (ragkit's own errors: as before)
    assert capsys.readouterr().err.startswith("error: ")


def test_ctrl_c_while_the_command_line_loads_exits_130(monkeypatch, capsys):
    """Ctrl-C in the first second (``ragkit.cli`` importing) printed a KeyboardInterrupt traceback."""
    import ragkit.cli
    from ragkit import __main__

    def interrupted(*_args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(ragkit.cli, "main", interrupted)
    with pytest.raises(SystemExit) as stop:
        __main__.main()
    assert stop.value.code == 130 and capsys.readouterr().err == "interrupted\n"


# ------------------------------------------------------------------ 5. warnings
def test_a_python_warning_is_one_warning_line_without_python_advice(tmp_path):
    """An unwritable cache showed ``typer/main.py:1445: RuntimeWarning: ...; or pass cache=False``."""
    (tmp_path / "afile").write_text("{}")
    (tmp_path / "warn_probe_cli.py").write_text(
        "from pathlib import Path\nimport numpy as np\nfrom ragkit.encoders.cache import write_shard\n"
        f"write_shard(Path({str(tmp_path / 'afile')!r}) / 'embeddings', 'key', [('.npy', np.zeros(2))])\n")
    before = warnings.showwarning
    res = _cli("--import", tmp_path / "warn_probe_cli.py", "validate", "bm25")
    assert res.exit_code == 0, res.output
    assert warnings.showwarning is before  # (put back: a program calling the app keeps its own)
    line = next(x for x in res.stderr.splitlines() if "cannot be written" in x)
    assert line.startswith(f"warning: the cache {tmp_path / 'afile' / 'embeddings'} cannot be written"), line
    assert line.endswith("Set RAGKIT_CACHE to a writable folder") and "RuntimeWarning" not in res.stderr, line


# ------------------------------------------------------------------ 6. RAGKIT_CACHE_QUERIES
def test_ragkit_cache_queries_reads_the_usual_spellings_and_refuses_others(tmp_path, monkeypatch):
    from ragkit.encoders import caching_queries, queries_cached
    from ragkit.encoders.sentence import env_caching_queries

    for value, means in (("1", True), ("true", True), ("YES", True), ("on", True), (" On ", True), ("0", False),
                         ("false", False), ("No", False), ("off", False), ("", False)):
        monkeypatch.setenv("RAGKIT_CACHE_QUERIES", value)
        assert env_caching_queries() is means and queries_cached() is means, value
    monkeypatch.delenv("RAGKIT_CACHE_QUERIES")
    assert queries_cached() is False
    for value in ("2", "y", "enable"):
        monkeypatch.setenv("RAGKIT_CACHE_QUERIES", value)
        with pytest.raises(ParamError, match=rf"RAGKIT_CACHE_QUERIES: expected 1, true, yes or on .* or 0, false, "
                                             rf"no, off or empty .*, got '{value}'"):
            queries_cached()
        with caching_queries(), pytest.raises(ParamError, match="RAGKIT_CACHE_QUERIES"):
            queries_cached()
    res = _cli("eval", "--data", _tiny(tmp_path / "d"), "-p", "bm25", env={"RAGKIT_CACHE_QUERIES": "enable"})
    assert res.exit_code == 2 and res.stdout == "", res.output
    assert res.stderr.startswith("error: RAGKIT_CACHE_QUERIES: expected 1, true, yes or on"), res.stderr


def test_a_command_takes_its_note_handler_off_the_ragkit_logger_when_it_ends():
    """The app put its ``note: ...`` handler on the ``ragkit`` logger (and set it to INFO) and left both: after
    one in-process command (a test's CliRunner, a program calling the app), every later INFO log of the process
    printed a ``note:`` line on stderr (test_adapt_quiet failed after test_missing_extras)."""
    import logging

    log = logging.getLogger("ragkit")
    handlers, level = list(log.handlers), log.level
    res = _cli("validate", "bm25")
    assert res.exit_code == 0, res.output
    assert log.handlers == handlers and log.level == level, (log.handlers, log.level)
