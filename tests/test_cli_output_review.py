"""The command line's output review: encodings, uncut ids and help, Ctrl-C, ``~`` in paths, devices as outputs,
plain errors, status lines on stderr, ``ragkit`` alone, and bm25's timings line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragkit.cli import main

HERE = Path(__file__).parent


def _corpus(folder: Path, ids: list[str]) -> Path:
    """A tiny BEIR folder: documents ``ids`` about cells, two judged queries."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": d, "title": f"Title {i}", "text": f"cells neurons leptin text {i}"}) + "\n"
        for i, d in enumerate(ids)), encoding="utf-8")
    (folder / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "cells"}) + "\n" + json.dumps({"_id": "q2", "text": "leptin"}) + "\n",
        encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    for split in ("test", "train"):
        (folder / "qrels" / f"{split}.tsv").write_text(
            f"query-id\tcorpus-id\tscore\nq1\t{ids[0]}\t1\nq2\t{ids[1]}\t1\n", encoding="utf-8")
    return folder


def _script(*args: object, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m ragkit ARGS`` as the script runs, its output captured as UTF-8 text."""
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR")}
    return subprocess.run([sys.executable, "-m", "ragkit", *map(str, args)], cwd=cwd, capture_output=True,
                          env={**base, **(env or {})}, encoding="utf-8", errors="replace", timeout=300)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return _corpus(tmp_path / "d", [f"d{i}" for i in range(6)])


def _results(tmp_path: Path, data: Path) -> tuple[Path, Path]:
    """Two ``ragkit eval -o`` result files of the same queries."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["eval", "--data", str(data), "--pipeline", "bm25", "-o", str(a)]) == 0
    assert main(["eval", "--data", str(data), "--pipeline", "bm25", "--k", "10,100", "-o", str(b)]) == 0
    return a, b


# ------------------------------------------------------------------ 1. any encoding: no traceback, aligned tables
def test_ascii_terminal_gets_ascii_symbols_and_an_aligned_compare_table(tmp_path, data):
    a, b = _results(tmp_path, data)
    out = _script("compare", a, b, cwd=tmp_path, env={"PYTHONIOENCODING": "ascii"})
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert "\\u0394" not in out.stdout and "\\xb7" not in out.stdout, out.stdout
    table = [line for line in out.stdout.splitlines() if "|" in line]  # (Δ was \u0394: its column shifted)
    assert len(table) >= 5 and len({len(line) for line in table}) == 1 and " D |" in out.stdout, out.stdout
    ev = _script("eval", "--data", data, "--pipeline", "bm25", cwd=tmp_path, env={"PYTHONIOENCODING": "ascii"})
    assert ev.returncode == 0 and "Traceback" not in ev.stderr and "load " in ev.stdout + ev.stderr
    assert "\\xb7" not in ev.stdout + ev.stderr, ev.stdout


def test_latin1_error_with_unencodable_path_is_one_line(tmp_path, data):
    out = _script("eval", "--data", data, "--pipeline", "東京/x.yaml", cwd=tmp_path,
                  env={"PYTHONIOENCODING": "latin-1"})
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and out.stderr.startswith("error: "), out.stderr


def test_c_locale_without_coercion_prints_substitutes_not_a_traceback(tmp_path):
    """``LC_ALL=C PYTHONCOERCECLOCALE=0 PYTHONUTF8=0``: standard output is ASCII with ``surrogateescape``
    errors, which the fallback handler was not given (only strict ones were), so a title's en dash (``ragkit
    ask``'s sources line, ``ragkit search``'s table) failed with a traceback."""
    from ragkit.cli._console import FALLBACK_ERRORS

    folder = _corpus(tmp_path / "d", [f"d{i}" for i in range(4)])
    (folder / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": f"Bayh\u2013Dole caf\u00e9 {i}", "text": f"cells neurons leptin {i}"})
        + "\n" for i in range(4)), encoding="utf-8")
    assert main(["train", "--data", str(folder), "--pipeline", "bm25", "--no-report",
                 "--out", str(tmp_path / "idx")]) == 0
    env = {"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}
    probe = subprocess.run([sys.executable, "-c", "import sys; print(sys.stdout.errors)"], capture_output=True,
                           text=True, env={**os.environ, **env})
    assert probe.stdout.strip() == "surrogateescape"  # (what the command runs under)
    out = _script("search", "--index", tmp_path / "idx", "cells", cwd=tmp_path, env=env)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert "Bayh-Dole caf\\xe9" in out.stdout, out.stdout
    assert "\udcff\u2013".encode("ascii", FALLBACK_ERRORS) == b"\xff-"  # an undecodable byte as it was read


# ------------------------------------------------------------------ 2. ids never cut
@pytest.mark.parametrize("columns", ["80", "40"])
def test_search_shows_long_ids_whole(tmp_path, columns):
    ids = [f"urn:doc:pubmed:2019:{i:08d}-supplementary-material-section-{i}" for i in range(4)]
    folder = _corpus(tmp_path / "long", ids)
    assert main(["train", "--data", str(folder), "--pipeline", "bm25", "--no-report",
                 "--out", str(tmp_path / "idx")]) == 0
    out = _script("search", "--index", tmp_path / "idx", "cells", cwd=tmp_path, env={"COLUMNS": columns})
    assert out.returncode == 0, out.stderr
    for d in ids:
        assert d in out.stdout, out.stdout
    assert "…" not in out.stdout


# ------------------------------------------------------------------ 3. Ctrl-C
def test_ctrl_c_says_interrupted_and_exits_130(tmp_path, data, monkeypatch, capsys):
    from ragkit.cli import _eval

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_eval, "resolve_pipeline", interrupted)
    out = tmp_path / "o.json"
    assert main(["eval", "--data", str(data), "--pipeline", "bm25", "-o", str(out)]) == 130
    assert capsys.readouterr().err == "interrupted\n" and not out.exists()


# ------------------------------------------------------------------ 4. ~ in every path
def test_tilde_is_expanded_in_output_run_index_and_validate(tmp_path, data, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--data", str(data), "--pipeline", "bm25", "--output=~/x.json", "--run", "~/r.trec"]) == 0
    assert (home / "x.json").is_file() and (home / "r.trec").is_file() and not (tmp_path / "~").exists()
    assert main(["train", "--data", str(data), "--pipeline", "bm25", "--no-report",
                 "--out", "~/idx"]) == 0
    assert (home / "idx").is_dir()
    capsys.readouterr()
    assert main(["search", "--index", "~/idx", "cells"]) == 0
    assert main(["validate", "~/idx"]) == 0
    assert main(["eval", "--data", str(data), "--pipeline", "~/idx"]) == 0
    assert "no such" not in capsys.readouterr().err


# ------------------------------------------------------------------ 5. help: uncut, no blank first line, examples
@pytest.mark.parametrize("command", ["eval", "train", "search", "ask", "validate", "compare"])
def test_help_is_uncut_and_has_examples(tmp_path, command):
    out = _script(command, "--help", cwd=tmp_path, env={"COLUMNS": "60"})
    assert out.returncode == 0 and out.stdout.startswith("Usage: ragkit "), out.stdout[:200]
    assert "…" not in out.stdout and "Examples:" in out.stdout, out.stdout
    assert f"\n    ragkit {command} " in out.stdout or command == "train", out.stdout
    if command == "eval":
        for name in ("--keep-identical-ids", "--relevance-level", "ndcg@10,hole@10,"):
            assert name in out.stdout, name


# ------------------------------------------------------------------ 6. compare fits 80 columns; narrower: lines
def test_compare_fits_80_columns_and_wraps_narrower(tmp_path, data):
    a, b = _results(tmp_path, data)
    c = tmp_path / "c.json"
    c.write_text(b.read_text(encoding="utf-8"), encoding="utf-8")
    out = _script("compare", a, b, c, cwd=tmp_path, env={"COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    assert max(len(line) for line in out.stdout.splitlines()) <= 80, out.stdout
    import io

    from rich.console import Console

    from ragkit.cli import _compare

    narrow = Console(file=io.StringIO(), width=40, force_terminal=True, color_system=None, highlight=False)
    was = _compare.console
    _compare.console = narrow
    try:
        assert main(["compare", str(a), str(b), str(c)]) == 0
    finally:
        _compare.console = was
    lines = narrow.file.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 40 and any(line.startswith("    Δ ") for line in lines), lines


# ------------------------------------------------------------------ 7. devices and pipes as outputs
def test_output_to_dev_null_and_a_fifo(tmp_path, data, capsys):
    assert main(["eval", "--data", str(data), "--pipeline", "bm25", "-o", os.devnull, "--run", os.devnull]) == 0
    assert "error" not in capsys.readouterr().err
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    import threading

    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    assert main(["eval", "--data", str(data), "--pipeline", "bm25", "-o", str(fifo)]) == 0
    reader.join(timeout=60)
    assert json.loads(got[0])["metrics"] and fifo.exists() and not fifo.is_file()


# ------------------------------------------------------------------ 8. plain errors; NO_COLOR: no styling at all
def test_errors_are_plain_and_no_color_means_no_bold(tmp_path, data):
    args = ("eval", "--data", data, "--pipeline", "nosuch/x (1).yaml")
    out = _script(*args, cwd=tmp_path, env={"FORCE_COLOR": "1", "TERM": "xterm-256color"})
    assert out.returncode == 2 and "\x1b" in out.stderr, repr(out.stderr)  # (a terminal: "error:" in red)
    assert "\x1b" not in out.stderr.split("error:", 1)[1].removeprefix("\x1b[0m"), repr(out.stderr)  # ( ) / lit
    out = _script(*args, cwd=tmp_path, env={"FORCE_COLOR": "1", "TERM": "xterm-256color", "NO_COLOR": "1"})
    assert out.returncode == 2 and "\x1b" not in out.stderr, repr(out.stderr)  # (bold stayed)


# ------------------------------------------------------------------ 9. status lines on stderr
def test_status_lines_go_to_stderr(tmp_path, data):
    out = _script("eval", "--data", data, "--pipeline", "bm25", "-o", tmp_path / "o.json", cwd=tmp_path)
    assert "wrote" not in out.stdout and "wrote" in out.stderr and "ndcg@10" in out.stdout
    tr = _script("train", "--data", data, "--pipeline", "bm25", "--no-report",
                 "--out", tmp_path / "idx", cwd=tmp_path)
    assert tr.returncode == 0 and "saved to" in tr.stderr and "saved to" not in tr.stdout, tr.stdout


# ------------------------------------------------------------------ 10. ragkit alone
def test_no_arguments_prints_help_on_stderr_status_2(tmp_path):
    out = _script(cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == "" and "Usage: ragkit" in out.stderr, (out.stdout, out.stderr)


# ------------------------------------------------------------------ 11. no "(0 documents encoded)"
def test_bm25_timings_leave_out_zero_encoded(data, capsys):
    assert main(["eval", "--data", str(data), "--pipeline", "bm25"]) == 0
    out = capsys.readouterr()
    assert "fit " in out.out + out.err and "documents encoded" not in out.out + out.err
