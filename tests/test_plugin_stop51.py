"""A plugin author's operators: what ragkit refuses of them, and how it says so.

The State a ``_call`` returns must hold the queries it was given; parameters must write as JSON; one source file
imported under two module names is one operator; ``save`` refuses learned state it cannot keep and a ``_save``
that writes ragkit's own files; ``kind = "composite"`` is not for registered operators.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragkit import Corpus, Operator, Params, State, registry
from ragkit.errors import ArtifactError, DataError, ParamError
from ragkit.registry import register
from ragkit.retrievers import BM25

CORPUS = Corpus(ids=[f"d{i}" for i in range(5)], texts=["cat a", "cat b", "dog", "cat dog", "fish"])


class _P(Params):
    w: float = 1.0


def _reranker(name: str, call: Any, **attrs: Any) -> type[Operator]:
    return register(type(f"Op_{name}", (Operator,), {"name": name, "kind": "reranker", "Params": _P,
                                                      "stateless": True, "reads_rankings": True, "_call": call,
                                                      "__module__": __name__, **attrs}))


# ---------------------------------------------------------------------- 1. the queries a _call returns
def test_a_call_returning_other_query_ids_or_texts_is_refused(scratch):
    def other_ids(self, s):
        out = State(["zzz"] * len(s), [f"x{i}" for i in range(len(s))])
        out.rankings = list(s.rankings)
        return out

    def other_texts(self, s):
        out = s.copy()
        out.queries = [t.upper() for t in s.queries]
        return out

    pipe = (BM25(k=3) | _reranker("tps_other_ids", other_ids)()).fit(CORPUS)
    with pytest.raises(DataError, match=r"Op_tps_other_ids\._call \('tps_other_ids'\) returned a State of other query "
                                        r"ids than it was given: 'x0' at batch position 0, given 'A'"):
        pipe.search({"A": "cat", "B": "dog"})
    pipe = (BM25(k=3) | _reranker("tps_other_texts", other_texts)()).fit(CORPUS)
    with pytest.raises(DataError, match=r"other query texts than it was given: 'CAT' at batch position 0, given "
                                        r"'cat'.*values\['query_text'\]"):
        pipe.search(["cat", "dog"])


def test_a_rewriter_that_writes_query_text_passes(scratch):
    def rewrite(self, s):
        out = s.copy()
        out.values["query_text"] = [t + " dog" for t in s.queries]
        return out

    cls = register(type("Rewrite", (Operator,), {"name": "tps_rewrite", "kind": "rewriter", "Params": _P,
                                                 "stateless": True, "_call": rewrite, "__module__": __name__}))
    run = (cls() | BM25(k=3)).fit(CORPUS).search(["fish"])
    assert run.query_ids == ["q0"] and {"d2", "d3"} & {CORPUS.ids[int(r)] for r in run.rankings[0].rows}


# ---------------------------------------------------------------------- 2. parameters that do not write as JSON
@pytest.mark.parametrize("value, said", [
    (lambda x: x, r"got a value of type function"),
    (np.arange(3), r"got a value of type numpy\.ndarray \(array\(\[0, 1, 2\]\)\), which cannot be written as "
                  r"JSON / YAML.*array\.tolist\(\)"),
    (b"\xff", r"got a value of type bytes \(b'\\xff'\)"),
])
def test_a_parameter_that_does_not_write_as_json_is_refused_at_construction(scratch, value, said):
    class FnP(Params):
        fn: Any = None

    cls = register(type("FnOp", (Operator,), {"name": "tps_fn", "kind": "reranker", "Params": FnP,
                                              "__module__": __name__}))
    with pytest.raises(ParamError, match=rf"tps_fn\.fn: {said}"):
        cls(fn=value)
    assert repr(cls(fn="ok")) == "FnOp(fn='ok')"


def test_numpy_scalars_are_the_numbers_they_hold_at_any_depth(scratch, tmp_path):
    """Diff review: the JSON check refused ``sharded: {retriever: {bm25: {k: np.int64(5)}}}``, which
    worked before it (a grid search's ``np.arange``), and a plugin's ``Any`` field holding ``np.int64``."""
    from ragkit.scale import Sharded

    class AnyP(Params):
        x: Any = None

    cls = register(type("AnyOp", (Operator,), {"name": "tps_any", "kind": "reranker", "Params": AnyP,
                                               "__module__": __name__}))
    op = cls(x={"a": [np.int64(3), np.float32(0.5)], "b": np.bool_(True)})
    assert op.params.x == {"a": [3, 0.5], "b": True} and type(op.params.x["a"][0]) is int
    sharded = Sharded(retriever={"bm25": {"k": np.int64(5), "k1": np.float32(1.5)}}, n_shards=2, backend="local")
    assert "bm25: {k: 5, k1: 1.5}" in sharded.to_yaml()
    fitted = sharded.fit(CORPUS)
    fitted.save(tmp_path / "s")
    assert Sharded.load(tmp_path / "s").search(["fish"]).doc_ids == fitted.search(["fish"]).doc_ids


def test_repr_never_raises():
    op = BM25(k=3)
    object.__setattr__(op, "params", type(op.params).model_construct(k=object()))  # (no validation)
    assert repr(op).startswith("BM25(<parameters not shown: ")


# ---------------------------------------------------------------------- 3. one file, two module names
SOURCE = '''
from ragkit import Operator, Params
from ragkit.registry import register


class TwiceP(Params):
    w: float = 1.0


@register
class Twice(Operator):
    name = "tps_twice"
    kind = "reranker"
    Params = TwiceP
    stateless = True
    reads_rankings = True

    def _call(self, state):
        return state.copy()
'''


def test_one_source_file_imported_under_two_module_names_is_one_operator(scratch, tmp_path):
    (tmp_path / "pkg").mkdir()
    path = tmp_path / "pkg" / "operators.py"
    path.write_text(SOURCE)
    mods = []
    for name in ("operators_tps", "pkg_tps.operators"):
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)  # (the second used to be "name 'tps_twice' is taken")
        finally:
            mods.append(mod)
    try:
        assert registry.get("tps_twice") is mods[0].Twice  # the first import stays the registered class
        registry.check_registered(mods[1].Twice(), "test")  # the second import's instances still save
        other = tmp_path / "other.py"
        other.write_text(SOURCE)  # the same class name in another file is another operator
        spec = importlib.util.spec_from_file_location("other_tps", other)
        assert spec is not None and spec.loader is not None
        with pytest.raises(ParamError, match=r"operator name 'tps_twice' is taken by operators_tps\.Twice"):
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
    finally:
        for name in ("operators_tps", "pkg_tps.operators"):
            sys.modules.pop(name, None)


# ---------------------------------------------------------------------- 4. save
def _learner(name: str, **methods: Any) -> type[Operator]:
    def _fit(self, corpus, train, upstream):
        self.table_ = np.ones(len(corpus))

    return register(type(f"L_{name}", (Operator,), {"name": name, "kind": "reranker", "Params": _P,
                                                     "reads_rankings": True, "_fit": _fit,
                                                     "_call": lambda self, s: s.copy(), "__module__": __name__,
                                                     **methods}))


def test_save_refuses_learned_state_it_cannot_keep_before_writing(scratch, tmp_path):
    op = _learner("tps_nosave")().fit(CORPUS)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("earlier")
    with pytest.raises(ParamError, match=r"L_tps_nosave \('tps_nosave'\) cannot be saved: its fit set table_ .*"
                                         r"implements neither _save nor _load.*nothing was written"):
        op.save(tmp_path / "x")
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["keep.txt"]
    with pytest.raises(ParamError, match=r"cannot be saved: its fit set table_"):
        (BM25(k=3) | op).save(tmp_path / "pipe")
    assert not (tmp_path / "pipe").exists()
    rebuilt = _learner("tps_rebuilt", _load=lambda self, folder, mmap=False: setattr(  # rebuilt from the corpus
        self, "table_", np.ones(len(self.corpus_))))().fit(CORPUS)
    rebuilt.save(tmp_path / "rebuilt")
    assert type(rebuilt).load(tmp_path / "rebuilt").table_.tolist() == [1.0] * 5


@pytest.mark.parametrize("reserved", ["params.json", "checksums.json", "corpus.jsonl"])
def test_save_refuses_a_save_that_writes_ragkits_files(scratch, tmp_path, reserved):
    def _save(self, folder: Path) -> None:
        np.save(folder / "t.npy", self.table_)
        (folder / reserved).write_text("{}")

    cls = _learner("tps_clobber", _save=_save,
                   _load=lambda self, folder, mmap=False: setattr(self, "table_", np.load(folder / "t.npy")))
    with pytest.raises(ParamError, match=rf"L_tps_clobber\._save \('tps_clobber'\) wrote {reserved}, which ragkit "
                                         rf"writes beside it.*nothing was saved"):
        cls().fit(CORPUS).save(tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_load_lacking_learned_state_saved_by_this_ragkit_does_not_say_newer(scratch, tmp_path):
    half = _learner("tps_half", _save=lambda self, folder: None, _load=lambda self, folder, mmap=False: None)
    half().fit(CORPUS).save(tmp_path / "x")
    with pytest.raises(ArtifactError, match=r"lacks table_ once loaded") as e:
        half.load(tmp_path / "x")
    assert "newer" not in str(e.value) and "must implement _save" in str(e.value)
    meta = json.loads((tmp_path / "x" / "params.json").read_text())
    assert meta["learned"] == ["table_"]


# ---------------------------------------------------------------------- 6. kind
def test_kind_composite_is_refused_for_a_registered_operator(scratch):
    with pytest.raises(ParamError, match=r"\('tps_comp'\) has kind 'composite', the kind of ragkit's structural "
                                         r"operators .*give it one of retriever, .*rewriter, generator"):
        register(type("Comp", (Operator,), {"name": "tps_comp", "kind": "composite", "Params": _P,
                                            "__module__": __name__}))
    assert "composite" not in registry.KINDS and "rewriter" in (Operator.__doc__ or "")


def test_a_checkout_module_imported_beside_the_installed_one_leaves_the_builtin_registered(tmp_path):
    """``import filters.thresholds`` from a checkout (the file behind ``ragkit.filters.thresholds``) used to replace
    the registered class: YAML and saved folders then built the second class, whose Params model differs from
    the one the code imported first (``op.params == ScoreThreshold.Params(...)`` turned False)."""
    import ragkit.filters.thresholds as installed
    from ragkit.pipelines.yaml import load_yaml

    root = Path(installed.__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("checkout_filters_thresholds", root / "filters" / "thresholds.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        builtin = registry.get("score_threshold")
        assert builtin is installed.ScoreThreshold and mod.ScoreThreshold is not builtin
        (loaded,) = load_yaml("pipeline: [score_threshold: {threshold: 0.4}]").steps
        assert type(loaded) is installed.ScoreThreshold
        assert loaded.params == installed.ScoreThreshold.Params(threshold=0.4)
        registry.check_registered(mod.ScoreThreshold(threshold=0.4), "test")  # the checkout's instances still save
    finally:
        sys.modules.pop(spec.name, None)
