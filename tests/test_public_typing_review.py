"""Typed user code as a reviewer's ``mypy --strict`` and pyright saw it: the subpackages ``import ragkit`` loads are
attributes type checkers know (``ragkit.encoders``, ``ragkit.eval``), the model-loading lock has a public name
(``ragkit.MODEL_LOADING``), ``Ranking`` unpacks to arrays and ``search_distributed`` returns a ``Run`` (no ``Any``),
the path arguments of ``load_yaml``, ``validate_file``, ``Run.write_trec`` / ``read_trec`` and ``load_result`` take
any ``os.PathLike`` (an ``os.DirEntry`` too), and ``from ragkit.pipelines import *`` leaves ``typing.Sequence``
alone.  (pyright is not installed here: the redundant-alias imports it needs are checked in the source.)"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ragkit
from ragkit.eval.beir import cache_dir
from ragkit.eval.compare import eval_command, load_result
from ragkit.pipelines import Pipeline, load_yaml, validate_file
from ragkit.run import Run

ROOT = Path(__file__).resolve().parents[1]

YAML = "pipeline:\n  - bm25: {k: 10}\n"


class _FsPath:
    """An ``os.PathLike`` of a user's own (neither ``str`` nor ``pathlib.Path``)."""

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)

    def __fspath__(self) -> str:
        return self._path


def _entry(folder: Path, name: str) -> os.DirEntry[str]:
    with os.scandir(folder) as it:
        return next(e for e in it if e.name == name)


# ---------------------------------------------------------------------- paths: any os.PathLike at run time
def test_load_yaml_and_validate_file_take_a_dir_entry_and_a_pathlike(tmp_path):
    (tmp_path / "p.yaml").write_text(YAML, encoding="utf-8")
    for given in (_entry(tmp_path, "p.yaml"), _FsPath(tmp_path / "p.yaml")):
        assert isinstance(load_yaml(given), Pipeline)
        assert isinstance(validate_file(given), Pipeline)


def test_trec_round_trip_through_a_dir_entry_and_a_pathlike(tmp_path):
    run = Run.from_dict({"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d3": 0.5}})
    run.write_trec(_FsPath(tmp_path / "a.trec"))
    back = Run.read_trec(_entry(tmp_path, "a.trec"))
    assert back.to_dict() == run.to_dict()


def test_read_trec_errors_name_a_dir_entry_by_its_path(tmp_path):
    """``str(os.DirEntry)`` is ``<DirEntry 'x'>``: the error names the file's path instead."""
    (tmp_path / "bad.trec").write_text("q1 Q0 d1 1\n", encoding="utf-8")
    with pytest.raises(ragkit.DataError) as e:
        Run.read_trec(_entry(tmp_path, "bad.trec"))
    assert str(e.value).startswith(f"{tmp_path / 'bad.trec'}:1: expected 6 columns"), str(e.value)
    assert "DirEntry" not in str(e.value)


def test_load_result_takes_a_dir_entry(tmp_path):
    Run.from_dict({"q1": {"d1": 2.0, "d2": 1.0}}).write_trec(tmp_path / "a.trec")
    result = load_result(_entry(tmp_path, "a.trec"), qrels={"q1": {"d1": 1}}, metrics=["recall@10"])
    assert result.per_query["recall@10"] == {"q1": 1.0}
    assert result.source == str(tmp_path / "a.trec")


def test_eval_command_names_a_dir_entry_by_its_path(tmp_path):
    (tmp_path / "p.yaml").write_text(YAML, encoding="utf-8")
    command = eval_command(_entry(tmp_path, "p.yaml"), "scifact", output=_FsPath("out.json"))
    assert f"--pipeline {tmp_path / 'p.yaml'} -o out.json" in command, command


# ---------------------------------------------------------------------- attributes, names
def test_model_loading_has_a_public_name():
    from ragkit import _locks

    assert ragkit.MODEL_LOADING is _locks.MODEL_LOADING  # (the old name still works)
    assert "MODEL_LOADING" in ragkit.__all__
    with ragkit.MODEL_LOADING:  # reentrant, as ragkit's own loads inside the user's block take it again
        with ragkit.MODEL_LOADING:
            pass


def test_pipelines_star_import_leaves_sequence_alone():
    ns: dict[str, object] = {}
    exec("from typing import Sequence\nfrom ragkit.pipelines import *", ns)
    import typing

    assert ns["Sequence"] is typing.Sequence and "Pipeline" in ns
    from ragkit.pipelines import Sequence  # still importable by name

    assert Sequence is Pipeline


def test_subpackages_are_imported_in_the_form_type_checkers_read_as_public():
    """pyright knows ``ragkit.encoders`` / ``ragkit.eval`` after a bare ``import ragkit`` only when ragkit's
    ``__init__`` imports them itself, in the ``from ragkit import X as X`` form (a py.typed package's re-export)."""
    tree = ast.parse((ROOT / "ragkit" / "__init__.py").read_text(encoding="utf-8"))
    aliased = {a.name for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "ragkit" and not n.level
               for a in n.names if a.asname == a.name}
    assert {"encoders", "eval"} <= aliased, aliased


def test_import_ragkit_loads_no_more_than_before():
    """``import ragkit`` (which names ``encoders`` and ``eval``) loads no model library, no Ray, no pandas; nor
    scipy.special (~0.1 s, the Cosine Adapter's math) or urllib.request (~35 ms, downloads), imported on use."""
    code = ("import sys, ragkit; assert ragkit.encoders.caching_queries and ragkit.eval.download_beir; "
            "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    modules = set(out.stdout.split())
    loaded = {m.split(".")[0] for m in modules}
    heavy = {"torch", "transformers", "sentence_transformers", "usearch", "ray", "pandas", "sklearn",
             "langchain_core", "llama_cpp", "datasets", "accelerate", "huggingface_hub"}
    assert not loaded & heavy, sorted(loaded & heavy)
    on_use = {"scipy.special", "urllib.request", "ragkit.eval.provenance"}  # (provenance: compare() reads it)
    assert not modules & on_use, sorted(modules & on_use)


# ---------------------------------------------------------------------- mypy --strict on user code
USER_CODE = '''
import os
from typing import Sequence

import ragkit
from ragkit.eval import load_beir, load_result, read_qrels
from ragkit.pipelines import *  # noqa: F403
from ragkit.pipelines import load_yaml, validate_file
from ragkit.run import Run
from ragkit.scale import search_distributed
from ragkit.types import Ranking


def first(xs: Sequence[int]) -> int:  # typing.Sequence, not ragkit's Pipeline alias
    return xs[0]


class MyPath:
    def __fspath__(self) -> str:
        return "p.yaml"


def paths(entry: "os.DirEntry[str]", run: Run) -> Pipeline:
    run.write_trec(MyPath())
    Run.read_trec(entry)
    load_result(entry)
    validate_file(MyPath())
    load_beir(entry, download=False)
    read_qrels(MyPath())
    return load_yaml(entry)


def unpacked(ranking: Ranking) -> int:
    rows, scores = ranking
    return rows.size + scores.size  # (Any under --strict: "Returning Any")


def distributed(pipe: Pipeline, texts: list[str]) -> Run:
    return search_distributed(pipe, texts, n_chunks=2)


def own_load() -> None:
    with ragkit.MODEL_LOADING:
        pass
    with ragkit.encoders.caching_queries():
        pass
    print(ragkit.eval.download_beir)
'''

MYPY_INI = """\
[mypy]
python_version = 3.11
strict = True
ignore_missing_imports = True

[mypy-ragkit.*]
ignore_errors = True
"""


@pytest.mark.slow  # about 70 s on 2 cores with mypy's cache empty
def test_mypy_strict_accepts_typed_user_code(tmp_path):
    pytest.importorskip("mypy")
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from test_typing import installed_layout
    finally:
        sys.path.remove(str(ROOT / "tests"))
    installed_layout(tmp_path)
    (tmp_path / "user_app.py").write_text(textwrap.dedent(USER_CODE), encoding="utf-8")
    (tmp_path / "mypy.ini").write_text(MYPY_INI, encoding="utf-8")
    cmd = [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir", str(cache_dir() / "mypy-strict"),
           "--no-error-summary", "user_app.py"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "MYPY_FORCE_COLOR": "0"})
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mypy --strict found {report.count(': error:')} errors:\n{report[-6000:]}"


def test_ranking_unpacks_to_its_arrays():
    ranking = ragkit.Ranking(np.array([3, 1]), np.array([0.5, 0.25]))
    rows, scores = ranking
    assert rows is ranking.rows and scores is ranking.scores
