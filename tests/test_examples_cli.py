"""The example scripts' command line (examples/_common.py): ``--limit`` below 1 refused, langchain_app's
``--all``, a ragkit error as one message (exit 2) instead of a traceback, the docstring shown as written
by ``--help``, and query vectors cached as ``ragkit eval`` caches them.  Argument checks only, or tiny
slices: fast."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import sys
from pathlib import Path

import pytest
from conftest import SCIFACT, bench_module, run_script

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(f"example_cli_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _exit(path: Path, *args: str) -> tuple[object, str, str]:
    """Run the script in-process with ``args``; ``(exit code, stdout, stderr)``; it must end in SystemExit."""
    return run_script(path, *args, must_exit=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("limit", ["-3", "0", "ten"])
def test_limit_below_one_is_refused_before_any_work(script, limit):
    """``--limit -3`` used to evaluate ``queries[:-3]`` (297 queries, exit 0) and ``--limit 0`` ended in a
    traceback ("qrels are empty"); ``ragkit eval --limit`` refuses both."""
    code, _, err = _exit(script, "--data", str(SCIFACT), "--limit", limit, "--json")
    assert code == 2, err
    assert "--limit" in err and "at least 1" in err and limit in err, err


def test_langchain_app_evaluates_the_full_split_with_all():
    ap = _module(EXAMPLES / "langchain_app.py").parser()
    assert ap.parse_args([]).limit == 20  # the quick default (what the tests run)
    assert ap.parse_args(["--limit", "7"]).limit == 7
    assert ap.parse_args(["--all"]).limit is None  # load() then keeps every query and document
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        ap.parse_args(["--all", "--limit", "5"])
    assert exc.value.code == 2 and "not allowed with argument --all" in err.getvalue()
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        ap.parse_args(["--ask", "-1"])  # (a negative count sliced the questions from the end)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_missing_data_folder_is_one_message_with_a_hint(script, tmp_path):
    missing = tmp_path / "no-such-beir"
    code, out, err = _exit(script, "--data", str(missing), "--limit", "3", "--json")
    assert code == 2
    assert f"error: {missing}: BEIR folder not found" in err, err
    assert "--data" in err and "such as scifact" in err and "Traceback" not in err, err
    assert out == ""


def test_unknown_split_is_one_message():
    code, _, err = _exit(EXAMPLES / "rm3.py", "--data", str(SCIFACT), "--split", "dev", "--limit", "3")
    assert code == 2 and "error:" in err and "no qrels for split 'dev'" in err, err


def test_default_data_falls_back_to_the_dataset_name(tmp_path):
    common = _module(EXAMPLES / "_common.py")
    assert common.default_data(tmp_path) == tmp_path
    assert common.default_data(tmp_path / "missing") == Path("scifact")  # found in the cache, or downloaded


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_help_shows_the_docstring_as_written(script):
    code, out, _ = _exit(script, "--help")
    assert code == 0
    doc = _module(script).__doc__
    for line in doc.strip().splitlines():  # the usage line stays on its own line, not run into the prose
        assert line.rstrip() in out, line


def test_run_searches_with_query_vectors_cached():
    """``_common.run`` fits and searches inside ``caching_queries()``, as ``ragkit eval`` does."""
    from ragkit.encoders import queries_cached
    from ragkit.retrievers import BM25

    common = _module(EXAMPLES / "_common.py")
    seen = []

    class Spy:
        def __init__(self):
            self.pipe = BM25(k=100)

        def fit(self, corpus, train=None):
            seen.append(("fit", queries_cached()))
            self.pipe.fit(corpus, train)

        def search(self, queries):
            seen.append(("search", queries_cached()))
            return self.pipe.search(queries)

    args = argparse.Namespace(data=SCIFACT, split="test", limit=3, json=True)
    with contextlib.redirect_stdout(io.StringIO()):
        out = common.run(Spy(), args, "spy")
    assert out["queries"] == 3 and seen == [("fit", True), ("search", True)]


def test_a_script_run_leaves_sys_path_and_modules_as_they_were():
    """Review: _exit left examples/ on sys.path and examples/_common.py in sys.modules, so a later bench import
    took the examples' _common (ImportError: cannot import name 'OUT' from '_common')."""
    path_before, common_before = list(sys.path), sys.modules.get("_common")
    _exit(EXAMPLES / "rm3.py", "--help")
    assert sys.path == path_before and sys.modules.get("_common") is common_before
    assert bench_module("bm25").OUT  # (bench/_common's, not examples/_common's)
