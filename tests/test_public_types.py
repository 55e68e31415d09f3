"""The public API as typed users see it: what ``import ragkit`` exports, the hints of the eval functions, and the
docstrings that ``help()`` and editor hovers show (their citations, examples).  mypy itself checks
``tests/typing/user_code.py`` (``tests/test_typing.py``, slow); these are the fast checks of the same promises."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping
from types import MappingProxyType

import pytest

import ragkit
from ragkit.eval import beir, metrics


@pytest.mark.parametrize("name", ["EvalResult", "BeirDataset"])
def test_what_evaluate_and_load_beir_return_is_importable_from_ragkit(name):
    import ragkit.eval

    assert name in ragkit.__all__
    assert getattr(ragkit, name) is getattr(ragkit.eval, name)


@pytest.mark.parametrize("func", [metrics.evaluate, metrics.per_query_metrics, metrics.per_query_ndcg,
                                  metrics.check_relevance_level, beir.BeirDataset.unknown_judged])
def test_eval_functions_take_read_only_qrels(func):
    """Judgements held as ``Mapping[str, Mapping[str, int]]`` (what ``search(qrels=...)`` and ``TrainSet``
    take) type-check: the hint is no ``dict[str, dict[str, int]]``, which is invariant."""
    import os

    import pandas as pd  # (the hints name it under TYPE_CHECKING: evaluate also takes a DataFrame or a path)

    hint = typing.get_type_hints(func, globalns={**vars(inspect.getmodule(func)), "pd": pd, "os": os})["qrels"]
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    hint = next(m for m in members if typing.get_origin(m) in (Mapping, dict))  # the mapping form
    inner = typing.get_args(hint)[1] if typing.get_origin(hint) is Mapping else None
    keys = (typing.get_args(hint)[0], *typing.get_args(inner)[:1]) if inner is not None else ()
    shape = (typing.get_origin(hint), typing.get_origin(inner), typing.get_args(inner)[1:])
    assert shape == (Mapping, Mapping, (int,)) and set(keys) <= {str, typing.Any}, \
        f"{func.__qualname__}: qrels is {hint}"


def test_evaluate_scores_read_only_qrels():
    run = ragkit.Run.from_dict({"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d3": 0.5}})
    qrels = MappingProxyType({"q1": MappingProxyType({"d2": 1}), "q2": MappingProxyType({"d3": 1})})
    assert ragkit.evaluate(run, qrels, ["recall@10"]).scores == {"recall@10": 1.0}


def _class_doc(cls: type) -> str:
    return cls.__doc__ or ""


@pytest.mark.parametrize("where, name, cited", [
    ("ragkit.generators.operator", "Generate", "arXiv 2502.15734"),
    ("ragkit.integrations.langchain_generate", "RagkitGenerator", "arXiv 2502.15734"),
    ("ragkit.pipelines.prf", "PRF", "Lavrenko & Croft"),
    ("ragkit.pipelines.prf", "PRF", "Abdul-Jaleel et al."),
    ("ragkit.pipelines.judges", "ScoreReached", "arXiv 2407.21059"),
])
def test_class_docstrings_cite_their_paper(where, name, cited):
    """``help(Generate)`` / a hover shows the class docstring, not the module's: the citation is there."""
    pytest.importorskip("langchain_core") if "langchain" in where else None
    import importlib

    cls = getattr(importlib.import_module(where), name)
    assert cited in " ".join(_class_doc(cls).split()), f"{name}'s docstring does not cite {cited!r}"


def test_evaluate_and_run_docstrings_end_with_examples():
    for obj in (ragkit.evaluate, ragkit.Run):
        doc = inspect.getdoc(obj) or ""
        assert "Examples\n--------\n>>> " in doc, obj


@pytest.mark.parametrize("member", [ragkit.Run.__iter__, beir.BeirDataset.queries, beir.BeirDataset.splits,
                                    beir.BeirDataset.name])
def test_public_members_have_docstrings(member):
    assert (member.__doc__ or "").strip(), member


def _hints(func):
    """``func``'s type hints, with the names its module imports for type checkers only (pandas, ``Self``)."""
    import os

    pd = pytest.importorskip("pandas")
    from typing_extensions import Self

    from ragkit.pipelines import Parallel, Pipeline
    from ragkit.run import Run

    extra = {"pd": pd, "Self": Self, "Parallel": Parallel, "Pipeline": Pipeline, "Run": Run, "os": os}
    return typing.get_type_hints(func, globalns={**extra, **vars(inspect.getmodule(func))})


def _union(hint) -> set:
    return set(typing.get_args(hint)) if typing.get_args(hint) and typing.get_origin(hint) is not Mapping else {hint}


def test_parallel_takes_one_operator_as_its_branches():
    """``Parallel(a)`` (the README: equals ``Parallel([a])``) type-checks: it did not, its hint was a list only."""
    from ragkit.pipelines import Parallel
    from ragkit.retrievers import BM25

    assert ragkit.Operator in _union(_hints(Parallel.__init__)["branches"])
    assert Parallel(BM25(k=3)) == Parallel([BM25(k=3)])


@pytest.mark.parametrize("where", ["Operator", "Pipeline"])
def test_search_takes_a_pandas_series(where):
    """``pipe.search(series)`` (documented, and what ``TrainSet`` takes) type-checks under pyright, which refused
    a ``pd.Series`` for ``Queries | Sequence[str] | Mapping[str, str] | str``."""
    pd = pytest.importorskip("pandas")
    cls = getattr(ragkit, where)
    assert pd.Series in _union(_hints(cls.search)["queries"]), where


@pytest.mark.parametrize("func", ["Operator.save", "Operator.load", "Pipeline.save", "Pipeline.load",
                                  "Parallel.save"])
def test_save_and_load_paths_are_typed_alike(func):
    """Every ``save`` / ``load`` takes a ``str`` or any ``os.PathLike`` (what they accept at run time); the
    pipeline's were ``Any``, the operator's ``str | Path`` (an ``os.PathLike`` refused by type checkers)."""
    import os

    cls_name, method = func.split(".")
    cls = getattr(ragkit, cls_name, None) or getattr(ragkit.pipelines, cls_name)
    assert _union(_hints(getattr(cls, method))["path"]) == {str, os.PathLike[str]}, func


@pytest.mark.parametrize("name", ["Pipeline", "Parallel", "Route", "Loop"])
def test_composite_fit_shows_only_public_parameters(name):
    """``help(Pipeline.fit)`` / a hover shows ``Operator.fit``'s parameters, not the tree walk's own (``_seen``,
    ``_path``: now those of the internal ``_fit_at``)."""
    import ragkit.pipelines

    cls = getattr(ragkit.pipelines, name)
    assert list(inspect.signature(cls.fit).parameters) == list(inspect.signature(ragkit.Operator.fit).parameters)


def test_operator_plus_is_typed_parallel():
    """``a + b`` is a ``Parallel`` at run time and in its hint (it was ``Operator``); ``a | b`` a ``Pipeline``."""
    from ragkit.pipelines import Parallel, Pipeline
    from ragkit.retrievers import BM25

    assert _hints(ragkit.Operator.__add__)["return"] is Parallel
    assert _hints(ragkit.Operator.__or__)["return"] is Pipeline
    assert type(BM25() + BM25(k=3)) is Parallel and type(BM25() | BM25(k=3)) is Pipeline


@pytest.mark.parametrize("name, params", [
    ("Pipeline", ["steps"]),
    ("Parallel", ["branches", "fuse", "names"]),
    ("Route", ["router", "branches", "default"]),
    ("Loop", ["body", "until", "max_iters"]),
])
def test_composites_document_their_parameters(name, params):
    import ragkit.pipelines

    doc = inspect.getdoc(getattr(ragkit.pipelines, name)) or ""
    section = doc.split("Parameters\n----------\n", 1)[-1].split("\n\n", 1)[0] if "Parameters\n---" in doc else ""
    assert [p for p in params if f"\n{p} : " not in f"\n{section}"] == [], f"{name}: {doc[:300]}"


@pytest.mark.parametrize("method", ["__add__", "__or__"])
def test_composition_operators_have_docstrings(method):
    doc = getattr(ragkit.Operator, method).__doc__ or ""
    assert ("Parallel" if method == "__add__" else "Pipeline") in doc
