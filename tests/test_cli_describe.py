"""``ragkit describe [NAME]``: the parameter reference of :mod:`ragkit._reference` on standard output, as plain
text (no markup read in it, not re-wrapped at the terminal's width, no styling); an unknown name is the
module's error with status 2; the errors that list operators or parameters point to it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_plugins import _module, scratch_registry  # noqa: F401  (a fixture: the registry as it was, after)
from typer.testing import CliRunner

from ragkit._reference import describe, table_text
from ragkit.cli import app


def _cli(*args: str, columns: int = 200):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})


def test_without_a_name_it_prints_the_operator_table():
    res = _cli("describe")
    assert res.exit_code == 0, res.output
    assert res.stdout == table_text() + "\n" and res.stderr == ""
    assert "bm25" in res.stdout and "Structural keys (not operators): loop, parallel, route." in res.stdout


@pytest.mark.parametrize("name", ["bm25", "rule_router", "parallel", "loop"])
def test_a_name_prints_its_reference_unwrapped_on_a_narrow_terminal(name):
    res = _cli("describe", name, columns=40)
    assert res.exit_code == 0, res.output
    assert res.stdout == describe(name) + "\n" and res.stderr == ""
    assert max(map(len, res.stdout.splitlines())) > 40  # (the reference's own 100-column lines, whole)


def test_the_text_is_printed_as_written_not_read_as_markup(monkeypatch):
    import ragkit._reference as reference

    text = "[bold]x[/bold] regex: [a-z]+ \\[y] [red]"
    monkeypatch.setattr(reference, "describe", lambda name: text)
    res = _cli("describe", "bm25")
    assert res.exit_code == 0 and res.stdout == text + "\n", res.output


def test_an_unknown_name_is_the_modules_error_with_status_2():
    res = _cli("describe", "bm26")
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.startswith("error: unknown operator 'bm26'; did you mean 'bm25'?"), res.stderr
    assert "Registered operators: " in res.stderr and "ragkit describe" not in res.stderr  # (no hint to itself)
    res = _cli("describe", "paralel")
    assert res.exit_code == 2 and "did you mean 'parallel' (structural key)?" in res.stderr, res.stderr


def test_help_has_examples_and_the_exit_status():
    res = _cli("describe", "--help")
    assert res.exit_code == 0
    assert "Examples:" in res.stdout and "ragkit describe rule_router" in res.stdout
    assert "Exit status: 0 success; 2 usage error" in res.stdout
    assert "describe" in _cli("--help").stdout


def test_a_plugin_imported_with_import_is_described(tmp_path, scratch_registry):  # noqa: F811
    path = _module(tmp_path, "ragkit_probe_describe", "probe_describe")
    res = _cli("--import", str(path), "describe", "probe_describe")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("probe_describe (retriever)\n") and "Ranks the documents in corpus order." \
        in res.stdout and "  k: int; default 3" in res.stdout, res.stdout
    assert "probe_describe" in _cli("describe").stdout


def test_errors_that_list_operators_or_parameters_point_to_describe(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline:\n  - bm25: {kk: 1}\n", encoding="utf-8")
    res = _cli("validate", str(bad))
    assert res.exit_code == 2
    assert "valid parameters of bm25 are: " in res.stderr and res.stderr.rstrip().endswith(
        "(ragkit describe bm25 shows each parameter's type, default, bounds and meaning)"), res.stderr
    bad.write_text("pipeline:\n  - rule_router:\n      rules: [{labell: x}]\n  - parallel: {branchs: []}\n",
                   encoding="utf-8")
    res = _cli("validate", str(bad))  # several lines: the pointer on a line of its own
    assert res.exit_code == 2 and "\n(ragkit describe rule_router" in res.stderr, res.stderr
    res = _cli("eval", "--data", str(tmp_path), "--pipeline", "bm26")
    assert res.exit_code == 2 and "Registered operators: " in res.stderr
    assert "(ragkit describe lists the operators; ragkit describe NAME shows one's parameters)" in res.stderr
    bad.write_text("pipeline:\n  - bm25: {k1: -1}\n", encoding="utf-8")
    res = _cli("validate", str(bad))  # (an error that lists nothing gets no pointer)
    assert res.exit_code == 2 and "k1: expected a value >= 0.0" in res.stderr and "describe" not in res.stderr


def test_a_colour_terminal_gets_no_styling_and_no_rewrapping(tmp_path):
    """The script on a forced colour terminal 40 columns wide: the reference exactly, no escape codes."""
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR")}
    out = subprocess.run([sys.executable, "-m", "ragkit", "describe", "rule_router"], cwd=tmp_path,
                         capture_output=True, encoding="utf-8", timeout=300,
                         env={**base, "FORCE_COLOR": "1", "TERM": "xterm-256color", "COLUMNS": "40",
                              "PYTHONIOENCODING": "utf-8"})
    assert out.returncode == 0, out.stderr
    assert out.stdout == describe("rule_router") + "\n" and "\x1b" not in out.stdout

