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


def test_operator_help_documents_every_parameter():
    """``help(BM25)`` lists each parameter with its type, bounds, default and description, generated from
    the parameter model at registration (one source of truth), before the class's ``Examples``."""
    import inspect

    from ragkit import registry

    registry.load_all()
    for name in registry.names():
        cls = registry.get(name)
        doc = inspect.getdoc(cls) or ""
        for field, info in cls.Params.model_fields.items():
            assert f"\n{field} : " in doc, f"{name}: help() does not document {field!r}"
            assert (info.description or "").split()[0] in doc, f"{name}.{field}: description missing"
        if "Examples\n--------" in doc and cls.Params.model_fields:
            assert doc.index("Parameters\n----------") < doc.index("Examples\n--------"), name
        assert f"``{name}:`` in YAML" in (cls.Params.__doc__ or ""), f"{name}: its Params has no docstring"
    bm25 = inspect.getdoc(registry.get("bm25")) or ""
    assert "k1 : float (>= 0), default 0.9\n    Term-frequency saturation" in bm25
    assert "variant : {'lucene', 'okapi'}, default 'lucene'" in bm25
    assert "filter : mapping or None, default None" in bm25
