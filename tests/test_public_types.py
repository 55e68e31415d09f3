"""The public API as typed users see it: what ``import ragkit`` exports, the hints of the eval functions, and the
docstrings that ``help()`` and editor hovers show (their citations, examples).  mypy itself checks
``tests/typing/user_code.py`` (``tests/test_typing.py``, slow); these are the fast checks of the same promises."""

from __future__ import annotations

import inspect
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
    hint = typing.get_type_hints(func, globalns=vars(inspect.getmodule(func)))["qrels"]
    inner = typing.get_args(hint)[1] if typing.get_origin(hint) is Mapping else None
    assert (typing.get_origin(hint), typing.get_args(hint)[0], typing.get_origin(inner), typing.get_args(inner)) == \
        (Mapping, str, Mapping, (str, int)), f"{func.__qualname__}: qrels is {hint}"


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
