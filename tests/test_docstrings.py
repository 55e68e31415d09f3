"""The ``Examples`` sections of the public modules' docstrings run as doctests (they are documentation
users copy, so they must stay true)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import ragkit


def _modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(ragkit.__path__, "ragkit.")]
    for sub in ("retrievers", "filters", "caches", "pipelines"):  # top-level folders mapped into ragkit
        names += [m.name for m in pkgutil.walk_packages(importlib.import_module(f"ragkit.{sub}").__path__,
                                                        f"ragkit.{sub}.")]
    return sorted(set(names))


def _with_examples(name: str) -> bool:
    """Whether the module has an example that runs (``+SKIP`` ones do not count)."""
    finder = doctest.DocTestFinder()
    return any(not ex.options.get(doctest.SKIP) for t in finder.find(importlib.import_module(name))
               for ex in t.examples)


MODULES = [m for m in _modules() if _with_examples(m)]


def test_examples_are_found():
    assert len(MODULES) >= 10, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    res = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                          report=True)
    assert res.failed == 0, f"{res.failed} of {res.attempted} docstring examples in {name} failed (output above)"
    assert res.attempted > 0
