"""What the public docstrings tell users to import can be imported, and they document what they say.

A docstring that says "compare ``values["answer_skipped"]`` with ``NO_DOCUMENT``" or "call
``drop_identical_ids``" sends the reader to a name that must be importable from the package they
use (``ragkit.generators``, ``ragkit.eval``), not only from a module inside it; a reference to a
private helper (``ragkit.retrievers._index.VectorIndex``) sends them nowhere they should go.
"""

from __future__ import annotations

import importlib
import inspect
import re

import numpy as np
import pytest

PUBLIC_MODULES = [
    "ragkit", "ragkit.retrievers", "ragkit.filters", "ragkit.pipelines", "ragkit.caches", "ragkit.eval",
    "ragkit.generators", "ragkit.eval.metrics", "ragkit.eval.diversity", "ragkit.eval.hubness",
    "ragkit.eval.filtering", "ragkit.generators.operator", "ragkit.retrievers.bm25", "ragkit.retrievers.dense",
]

REF = re.compile(r":(func|class|data|exc|meth|attr|mod):`([^`]+)`")


@pytest.mark.parametrize("modname", PUBLIC_MODULES)
def test_every_name_in_all_is_importable(modname: str) -> None:
    mod = importlib.import_module(modname)
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, f"{modname}.__all__ lists names it does not hold: {missing}"


def test_generate_docstring_names_are_exported_from_ragkit_generators() -> None:
    import ragkit.generators as g
    from ragkit.generators import operator

    for name in ("NO_DOCUMENT", "NO_TEXT", "PrefillCost"):
        assert name in g.__all__, name
    from ragkit.generators import NO_DOCUMENT, NO_TEXT, PrefillCost

    assert NO_DOCUMENT == operator.NO_DOCUMENT and NO_TEXT == operator.NO_TEXT
    from ragkit.generators.local import PrefillCost as Defined

    assert PrefillCost is Defined


def test_evaluate_docstring_names_are_exported_from_ragkit_eval() -> None:
    import ragkit.eval as ev
    from ragkit.eval import metrics

    for name in metrics.__all__:  # every public name of the metrics module, from the package
        assert name in ev.__all__, name
        assert getattr(ev, name) is getattr(metrics, name), name


def _refs(doc: str) -> list[tuple[str, str]]:
    out = []
    for kind, target in REF.findall(doc or ""):
        t = target
        if "<" in t and t.endswith(">"):
            t = t[t.index("<") + 1:-1]
        out.append((kind, t.lstrip("~.!").rstrip("()")))
    return out


def _resolves(target: str, homes: list[str]) -> bool:
    """Whether ``target`` names an object: a dotted path from its module, or a name of one of ``homes``
    (the public package the object is documented under, then ``ragkit``)."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for p in parts[i:]:
                obj = getattr(obj, p)
        except AttributeError:
            return False
        return True
    for home in homes:
        obj = importlib.import_module(home)
        try:
            for p in parts:
                obj = getattr(obj, p)
        except AttributeError:
            continue
        return True
    return False


def _public_docs() -> list[tuple[str, str, str]]:
    """``(where, home package, docstring)`` of the objects whose docstrings this review rewrote."""
    import ragkit
    import ragkit.eval as ev
    import ragkit.generators as g
    import ragkit.pipelines as pl
    import ragkit.retrievers as rt

    objs = [
        ("ragkit.generators", g), ("ragkit.generators", g.Generate), ("ragkit.generators", g.Generate.check_ready),
        ("ragkit.generators", g.LocalGenerator), ("ragkit.generators", g.LocalGenerator.generate),
        ("ragkit.generators", importlib.import_module("ragkit.generators.operator")),
        ("ragkit.eval", ev.evaluate), ("ragkit.eval", ev.paired_randomization_test),
        ("ragkit.eval", ev.sign_flip_pvalues),
        ("ragkit.eval", ev.hubness), ("ragkit.eval", ev.HubnessReport),
        ("ragkit.eval", ev.alpha_ndcg), ("ragkit.eval", ev.subtopic_recall), ("ragkit.eval", ev.pr_curve),
        ("ragkit.eval", importlib.import_module("ragkit.eval.metrics")),
        ("ragkit.retrievers", rt.BM25), ("ragkit.retrievers", rt.BM25.make_tokenizer),
        ("ragkit.retrievers", rt.BM25.expansion_matrix), ("ragkit.retrievers", rt.Dense),
        ("ragkit.retrievers", rt.Dense.check_corpus),
        ("ragkit.retrievers", importlib.import_module(rt.Dense.__module__)),
        ("ragkit.pipelines", pl.Pipeline), ("ragkit.pipelines", pl.Pipeline.fit),
        ("ragkit.pipelines", pl.Pipeline.load), ("ragkit.pipelines", pl.Pipeline.__init__),
        ("ragkit.pipelines", pl.walk_leaves if hasattr(pl, "walk_leaves") else
         importlib.import_module("ragkit.pipelines.yaml").walk_leaves),
        ("ragkit", ragkit.Params),
    ]
    return [(getattr(o, "__qualname__", getattr(o, "__name__", "?")), home, o.__doc__ or "") for home, o in objs]


@pytest.mark.parametrize("where,home,doc", _public_docs(), ids=lambda v: v if isinstance(v, str) and
                         "\n" not in v and len(v) < 60 else "")
def test_docstring_references_are_public_and_resolve(where: str, home: str, doc: str) -> None:
    bad = []
    for kind, t in _refs(doc):
        if any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in t.split(".")):
            bad.append(f"{t} (private)")
        elif t.startswith("ragkit.") or ("." not in t and kind not in ("meth", "attr")):  # (those: of the class)
            if not _resolves(t, [home, "ragkit", "builtins"]):
                bad.append(f"{t} (not found under {home})")
    assert not bad, f"{where}: docstring references {bad}"


def _params_section(doc: str) -> set[str]:
    doc = inspect.cleandoc(doc)
    m = re.search(r"^Parameters\n-+\n(.*?)(?:^\w[\w ]*\n-+\n|\Z)", doc, re.S | re.M)
    assert m, "no Parameters section"
    names: set[str] = set()
    for line in re.findall(r"^(\S[^:\n]*?) :", m.group(1), re.M):
        names |= {n.strip().lstrip("*") for n in line.split(",")}
    return names


def _documented(fn, doc: str | None = None) -> None:
    sig = inspect.signature(fn)
    want = {n for n, p in sig.parameters.items() if n not in ("self", "cls")
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    have = _params_section(doc if doc is not None else fn.__doc__)
    assert want <= have, f"{fn.__qualname__}: parameters without an entry: {sorted(want - have)}"


def test_parameters_sections_cover_the_signatures() -> None:
    import ragkit.eval as ev
    from ragkit.generators.local import LocalGenerator
    from ragkit.pipelines import Pipeline

    _documented(ev.evaluate)
    _documented(ev.hubness)
    _documented(ev.paired_randomization_test)
    _documented(ev.pr_curve)
    _documented(LocalGenerator.__init__, LocalGenerator.__doc__)
    _documented(LocalGenerator.generate)
    _documented(Pipeline.__init__, Pipeline.__doc__)
    _documented(Pipeline.load)
    _documented(Pipeline.fit)


def test_evaluate_docstring_states_defaults_and_lookup() -> None:
    from ragkit import Run, evaluate
    from ragkit.eval.metrics import DEFAULT_METRICS

    doc = evaluate.__doc__ or ""
    assert all(m in doc for m in DEFAULT_METRICS)  # the default metric list is spelled out
    assert "case-insensitive" in doc
    result = evaluate(Run.from_dict({"q1": {"d1": 1.0}}), {"q1": {"d1": 1}})
    assert list(result.scores) == list(DEFAULT_METRICS)  # what the docstring says the default is
    result = evaluate(Run.from_dict({"q1": {"d1": 1.0}}), {"q1": {"d1": 1}}, ["ndcg@10"])
    assert result["nDCG@10"] == result.scores["ndcg@10"]  # looked up case-insensitively, as it says


def test_bm25_scores_are_float32_as_documented() -> None:
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    doc = BM25.__doc__ or ""
    assert "float64 products" not in doc and "float32" in doc
    bm = BM25(k=2).fit(Corpus.from_texts(["red apples", "green pears", "red cars"]))
    run = bm.search(["red apple", "green"])
    assert all(s.dtype == np.float32 for s in run.scores)
    assert run.rankings is not None and all(r.scores.dtype == np.float32 for r in run.rankings)
    assert bm.score_matrix(["red apple"]).dtype == np.float64  # the dense matrix it names, float64


@pytest.mark.parametrize("top", [-1, 2.5, True, "3"])
def test_hubness_refuses_a_top_that_is_no_count(top: object) -> None:
    """``top=-1`` listed all hubs but the last (``order[:-1]``); now refused, as ``k`` is."""
    from ragkit.errors import DataError
    from ragkit.eval import hubness
    from ragkit.types import Ranking

    with pytest.raises(DataError, match=r"hubness: top must be an integer >= 0"):
        hubness([Ranking([0, 1], [1.0, 0.5])], n_docs=3, k=2, top=top)  # type: ignore[arg-type]
    assert hubness([Ranking([0, 1], [1.0, 0.5])], n_docs=3, k=2, top=0).top_hubs == []


@pytest.mark.parametrize("k", [0, 2.5, True, "3"])
def test_hubness_and_k_occurrence_refuse_a_k_that_is_no_cut_off(k: object) -> None:
    """Review: ``k=True`` counted as 1 and ``k=2.5`` failed as a slice index (a raw TypeError); ``k`` is
    checked as ``top`` is, in the function the user called."""
    from ragkit.errors import DataError
    from ragkit.eval import hubness
    from ragkit.eval.hubness import k_occurrence
    from ragkit.types import Ranking

    rankings = [Ranking([0, 1], [1.0, 0.5])]
    with pytest.raises(DataError, match=r"^hubness: k must be an integer >= 1 \(the cut-off\), got "):
        hubness(rankings, n_docs=3, k=k)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"^k_occurrence: k must be an integer >= 1 \(the cut-off\), got "):
        k_occurrence(rankings, 3, k)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"^hubness: n_docs must be an integer >= 0 \(the corpus size\), got 2.0"):
        hubness(rankings, n_docs=2.0, k=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad, said", [
    ({"k": 2.5}, "k must be an integer >= 1"), ({"k": True}, "k must be an integer >= 1"),
    ({"n_queries": 2.5}, "n_queries must be an integer >= 1"), ({"repeats": True}, "repeats must be an integer >= 1"),
    ({"k": 60}, "need k <= n_docs"),
])
def test_random_skewness_refuses_what_is_no_count(bad: dict, said: str) -> None:
    """Review: k=2.5 gave torch's raw TypeError, repeats=True ran as 1; checked as hubness checks its counts."""
    from ragkit.errors import DataError
    from ragkit.eval.hubness import random_skewness

    args = {"n_queries": 5, "n_docs": 50, "k": 3, "repeats": 2, **bad}
    with pytest.raises(DataError, match=f"^random_skewness: {said}"):
        random_skewness(**args)
    assert random_skewness(5, 50, 3, 2) > 0


def test_describe_names_the_public_import_path_of_an_operator_defined_in_a_private_module() -> None:
    """``Sharded`` is defined in ``ragkit._sharded`` since scale.py's split: ``ragkit describe`` still names where
    users import it from, not the private module."""
    from ragkit._reference import describe, public_path
    from ragkit.pipelines import Parallel
    from ragkit.retrievers import BM25, Sharded

    assert public_path(Sharded) == "ragkit.retrievers.Sharded" and Sharded.__module__.startswith("ragkit._")
    assert "Python: ragkit.retrievers.Sharded" in describe("sharded")
    assert public_path(Parallel) == "ragkit.pipelines.Parallel"
    assert public_path(BM25) == f"{BM25.__module__}.BM25"  # a public module is kept as it is
