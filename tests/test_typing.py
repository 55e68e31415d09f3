"""ragkit ships ``py.typed``, so its type hints are what users' type checkers see: mypy must accept
the package, the examples, the README's Python snippets and ``tests/typing/user_code.py`` (typical
user code with ``assert_type``).

mypy runs over the package laid out as installed: ``pyproject.toml`` maps ``ragkit.retrievers``,
``ragkit.filters``, ``ragkit.caches`` and ``ragkit.pipelines`` onto top-level folders, which an
editable install resolves with an import hook that mypy does not follow (every name imported from
them would be ``Any``, checking nothing)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ragkit.eval.beir import cache_dir

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # about 70 s on 2 cores with mypy's cache empty


def installed_layout(into: Path) -> dict[Path, Path]:
    """Symlink the package into ``into`` as ``pip install`` lays it out; returns {link: source folder}."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {name.split(".", 1)[1]: ROOT / folder for name, folder in config["package-dir"].items()}
    pkg = into / "ragkit"
    pkg.mkdir()
    links = {pkg / sub: folder for sub, folder in mapped.items()}
    for entry in (ROOT / "ragkit").iterdir():
        if entry.name != "__pycache__" and entry.name not in mapped:
            links[pkg / entry.name] = entry
    for link, source in links.items():
        link.symlink_to(source, target_is_directory=source.is_dir())
    for name in ("examples", "tests"):
        (into / name).symlink_to(ROOT / name, target_is_directory=True)
    return links


def readme_snippets() -> str:
    """The README's ```python blocks, in order, as one module (a later block uses an earlier one's names)."""
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.M | re.S)
    return "\n".join(blocks)


def test_installed_layout_holds_every_subpackage(tmp_path):
    assert readme_snippets().count("import") >= 3  # the README's Python is found
    installed_layout(tmp_path)
    names = {p.name for p in (tmp_path / "ragkit").iterdir()}
    assert {"retrievers", "filters", "caches", "pipelines", "eval", "encoders", "py.typed"} <= names


def test_mypy_accepts_package_examples_and_user_code(tmp_path):
    pytest.importorskip("mypy")
    installed_layout(tmp_path)
    (tmp_path / "readme_snippets.py").write_text(readme_snippets(), encoding="utf-8")
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
           "--cache-dir", str(cache_dir() / "mypy"), "--no-error-summary",
           "ragkit", "examples", "tests/typing/user_code.py", "readme_snippets.py"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "MYPY_FORCE_COLOR": "0"})
    report = proc.stdout + proc.stderr
    for sub in ("retrievers", "filters", "caches", "pipelines"):  # name the files as they are in the repository
        report = report.replace(f"ragkit/{sub}/", f"{sub}/")
    assert proc.returncode == 0, f"mypy found {report.count(': error:')} errors:\n{report[-6000:]}"
