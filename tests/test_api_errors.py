"""Wrong inputs to the Python API give errors that say what was expected, not an ``AttributeError`` from
inside: calling an operator on queries instead of a ``State``, slips in the composite constructors
(a fuser's name or class, a lone operator), paths that are not paths, and ``~`` in paths.  Also the
operators' constructor signatures as ``inspect`` / ``help`` show them."""

from __future__ import annotations

import inspect
import os
import pydoc
from pathlib import Path

import pytest

from ragkit import Pipeline, load_beir, registry
from ragkit.errors import ParamError
from ragkit.eval.beir import beir_qrels, beir_subsets, cache_dir, write_beir
from ragkit.filters import TopK
from ragkit.operator import Operator
from ragkit.pipelines import RRF, Loop, MaxOnly, Parallel, Route, RuleRouter, TopKStable, WeightedFusion
from ragkit.retrievers import BM25
from ragkit.types import Corpus, State

DOCS = ["stem cells grow", "protein folding in cells", "a study of cell growth", "folding proteins fast"]


@pytest.fixture()
def corpus() -> Corpus:
    return Corpus(ids=[f"d{i}" for i in range(len(DOCS))], texts=DOCS)


def _router() -> RuleRouter:
    return RuleRouter(rules=[{"label": "short", "max_words": 2}], default="long")


# ---------------------------------------------------------------------- calling on queries, not a State
def _composites(corpus: Corpus) -> list[Operator]:
    return [
        (BM25(k=3) | TopK(k=2)).fit(corpus),
        BM25(k=3).fit(corpus),
        Parallel([BM25(k=3), BM25(k=2)]).fit(corpus),
        Route(_router(), {"short": BM25(k=3), "long": BM25(k=2)}).fit(corpus),
        Loop(BM25(k=3), until=MaxOnly(), max_iters=2).fit(corpus),
    ]


@pytest.mark.parametrize("given", [["stem cells"], "stem cells", None])
def test_calling_an_operator_on_queries_says_to_use_search(corpus, given):
    for op in _composites(corpus):
        expected = rf"{type(op).__name__}\.__call__ takes a ragkit State.*\.search\(queries\)"
        with pytest.raises(TypeError, match=expected):
            op(given)
        out = op(State.of(["stem cells"]))  # a State still works
        assert isinstance(out, State) and len(out) == 1
        assert op.search(["stem cells"]).to_dict()  # and search is what was meant


def test_an_unfitted_operator_called_on_a_list_gets_the_state_error_first():
    with pytest.raises(TypeError, match=r"BM25\.__call__ takes a ragkit State"):
        BM25()(["q"])


# ---------------------------------------------------------------------- composite constructors
@pytest.mark.parametrize("make, message", [
    (lambda: Parallel([BM25(), BM25(k=3)], fuse="rrf"),
     r"^parallel\.fuse: expected a fuser operator \(RRF\(\), WeightedFusion\(\)\), got str 'rrf' .*pass the "
     r"operator, RRF\(\)"),
    (lambda: Parallel([BM25(), BM25(k=3)], fuse=RRF),
     r"^parallel\.fuse: .*got the class RRF; pass an instance, RRF\(\)$"),
    (lambda: Parallel([BM25(), BM25(k=3)], fuse=WeightedFusion),
     r"got the class WeightedFusion; pass an instance, WeightedFusion\(\)$"),
    (lambda: Parallel([BM25(), BM25(k=3)], fuse=3), r"^parallel\.fuse: expected a fuser operator .*got int 3"),
    (lambda: Parallel(BM25(), BM25(k=3)), r"^parallel\.fuse: .*got 'bm25' \(retriever\); the branches go in one list"),
    (lambda: Parallel("bm25"), r"^parallel\.branches: expected a list of branches.*got str 'bm25'"),
    (lambda: Parallel(3), r"^parallel\.branches: expected a list of branches.*got int 3"),
    (lambda: Parallel([BM25(), BM25]), r"^parallel\.branches\[1\]: .*got the class BM25; pass an instance, BM25\(\)"),
    (lambda: Parallel([BM25(), "dense"]), r"^parallel\.branches\[1\]: .*got str 'dense' .*Dense\(\)"),
    (lambda: Pipeline([BM25, TopK]), r"^pipeline\[0\]: expected an operator, got the class BM25; pass an instance"),
    (lambda: Pipeline([BM25(), "top_k"]), r"^pipeline\[1\]: expected an operator, got str 'top_k' .*TopK\(\)"),
    (lambda: Pipeline("bm25"), r"^pipeline: expected a list of operators \(or one operator\), got str 'bm25'"),
    (lambda: Route("rule_router", {"short": BM25()}),
     r"^route\.router: expected a router operator .*got str 'rule_router' .*RuleRouter\(\)"),
    (lambda: Route(RuleRouter, {"short": BM25()}),
     r"^route\.router: .*got the class RuleRouter; pass an instance, RuleRouter\(\.\.\.\)$"),
    (lambda: Route(BM25(), {"short": BM25()}),
     r"^route\.router: expected a router operator .*got 'bm25' \(retriever\)"),
    (lambda: Route(_router(), [BM25()]), r"^route\.branches: expected a mapping of label -> branch.*got list"),
    (lambda: Route(_router(), BM25()), r"^route\.branches: expected a mapping of label -> branch.*got BM25"),
    (lambda: Loop(BM25(), until="max_only"),
     r"^loop\.until: expected a judge operator \(MaxOnly\(\), .*got str 'max_only' .*MaxOnly\(\)"),
    (lambda: Loop(BM25(), until=TopKStable),
     r"^loop\.until: .*got the class TopKStable; pass an instance, TopKStable\(\)$"),
    (lambda: Loop(BM25(), until=BM25()), r"^loop\.until: expected a judge operator .*got 'bm25' \(retriever\)"),
    (lambda: Loop(BM25(), until=None), r"^loop\.until: expected a judge operator .*got NoneType None"),
])
def test_composite_constructor_slips_are_param_errors(make, message):
    with pytest.raises(ParamError, match=message):
        make()


def test_a_lone_operator_is_one_branch_as_it_is_one_step():
    bm25 = BM25(k=3)
    assert Parallel(bm25) == Parallel([bm25])
    assert Pipeline(bm25) == Pipeline([bm25])


# ---------------------------------------------------------------------- constructor signatures
def test_operator_signature_lists_its_parameters():
    sig = inspect.signature(BM25)
    params = list(sig.parameters.values())
    assert params[0].name == "params" and params[0].kind is inspect.Parameter.POSITIONAL_ONLY
    assert params[0].default is None
    fields = {p.name: p for p in params[1:]}
    assert list(fields) == list(BM25.Params.model_fields)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in fields.values())
    assert (fields["k"].default, fields["k1"].default, fields["b"].default) == (100, 0.9, 0.4)
    assert fields["k"].annotation is int and fields["b"].annotation is float
    assert "k1: float = 0.9" in pydoc.render_doc(BM25)
    required = inspect.signature(RuleRouter).parameters["rules"]
    assert required.default is inspect.Parameter.empty  # a required parameter has no default
    sig.bind(k=3, b=0.5)  # what the constructor takes binds
    sig.bind({"k": 3})
    with pytest.raises(TypeError):
        sig.bind(kk=3)


def test_every_registered_operator_signature_matches_its_params():
    for name in registry.names():
        cls = registry.get(name)
        names = list(inspect.signature(cls).parameters)
        assert names == ["params", *cls.Params.model_fields], name


def test_an_instance_signature_is_its_call_and_composites_keep_theirs():
    assert list(inspect.signature(BM25(k=3)).parameters) == ["state"]
    assert list(inspect.signature(Parallel).parameters) == ["branches", "fuse", "names"]
    assert list(inspect.signature(Loop).parameters) == ["body", "until", "max_iters"]


# ---------------------------------------------------------------------- paths
@pytest.mark.parametrize("call, message", [
    (lambda: load_beir(None), r"^load_beir: name_or_path: expected a BEIR dataset name .*got NoneType None"),
    (lambda: load_beir(3), r"^load_beir: name_or_path: .*got int 3"),
    (lambda: beir_qrels(None), r"^beir_qrels: name_or_path"),
    (lambda: beir_subsets(1.5), r"^beir_subsets: name_or_path"),
    (lambda: Pipeline.load(None), r"^Pipeline\.load: path: expected a path .*got NoneType None"),
    (lambda: BM25.load(3), r"^BM25\.load: path: expected a path .*got int 3"),
    (lambda: Operator.load(None), r"^Operator\.load: path"),
    (lambda: Pipeline([BM25()]).save(None), r"^Pipeline\.save: path"),
    (lambda: BM25().save(None), r"^BM25\.save: path"),
    (lambda: Parallel([BM25()]).save(None), r"^Parallel\.save: path"),
])
def test_a_path_that_is_not_a_path_is_a_type_error_naming_the_argument(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_load_with_a_corpus_that_is_not_a_corpus(tmp_path, corpus):
    pipe = (BM25(k=3) | TopK(k=2)).fit(corpus)
    pipe.save(tmp_path / "p")
    with pytest.raises(TypeError, match=r"^Pipeline\.load: corpus must be the ragkit Corpus .*got list"):
        Pipeline.load(tmp_path / "p", corpus=["x"])
    BM25(k=3).fit(corpus).save(tmp_path / "b")
    with pytest.raises(TypeError, match=r"^BM25\.load: corpus must be the ragkit Corpus .*got list"):
        BM25.load(tmp_path / "b", corpus=["x"])


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A fresh home folder (``~``), and a separate current folder, which must stay empty."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path / "home"


def test_tilde_in_save_and_load_is_the_home_folder(home, corpus):
    pipe = (BM25(k=3) | TopK(k=2)).fit(corpus)
    pipe.save("~/models/pipe")
    bm25 = BM25(k=3).fit(corpus)
    bm25.save("~/models/bm25")
    Parallel([BM25(k=3), BM25(k=2)]).fit(corpus).save(Path("~/models/par"))
    assert not os.listdir(Path.cwd())  # no folder named '~' here
    assert {p.name for p in (home / "models").iterdir()} == {"pipe", "bm25", "par"}
    expected = pipe.search(["stem cells"]).to_dict()
    assert Pipeline.load("~/models/pipe").search(["stem cells"]).to_dict() == expected
    assert Operator.load("~/models/pipe").search(["stem cells"]).to_dict() == expected
    assert BM25.load("~/models/bm25").search(["stem cells"]).to_dict() == bm25.search(["stem cells"]).to_dict()
    assert Pipeline.load(Path("~/models/par")).search(["cells"]).to_dict()


def test_tilde_in_beir_paths_and_the_cache_variable(home, corpus, monkeypatch):
    queries = {"q1": "stem cells", "q2": "protein folding"}
    write_beir("~/data/tiny", corpus, queries, {"test": {"q1": {"d0": 1}, "q2": {"d1": 1}}})
    assert (home / "data" / "tiny" / "corpus.jsonl").is_file() and not os.listdir(Path.cwd())
    data = load_beir("~/data/tiny")
    assert len(data.corpus) == len(DOCS) and list(data.queries("test").ids) == ["q1", "q2"]
    assert beir_qrels("~/data/tiny")[1] == {"q1": {"d0": 1}, "q2": {"d1": 1}}
    monkeypatch.setenv("RAGKIT_CACHE", "~/cache")
    assert cache_dir() == home / "cache"


def test_tilde_in_sharded_workdir_and_generate_cache_dir(home, corpus):
    """sharded's workdir and generate's cache_dir took '~' literally (a folder named '~' here, a file below
    the home folder unnoticed)."""
    from ragkit.errors import ParamError
    from ragkit.generators import Generate
    from ragkit.scale import Sharded

    sh = Sharded(retriever={"bm25": {"k": 3}}, n_shards=2, k=3, workdir="~/shards").fit(corpus)
    assert not os.listdir(Path.cwd()) and len(list((home / "shards").iterdir())) == 1
    assert sh.search(["stem cells"]).to_dict() == BM25(k=3).fit(corpus).search(["stem cells"]).to_dict()
    (home / "kv").write_text("not a folder")
    with pytest.raises(ParamError, match="generate.cache_dir: .*kv: the chunk-cache folder .* is a file"):
        Generate(cache_dir="~/kv").check_source()
