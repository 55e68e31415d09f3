"""YAML and pipeline review, stop 56: U+0085 (NEL) in a string came back as a space from to_yaml and save; a
pipeline holding itself recursed until Python gave up and a non-operator step failed at fit with an
AttributeError; TopKStable and ScoreReached looped over the queries in Python; weights errors pointed at the
list or the operator, not the item or field; an empty top-level pipeline fitted and dumped but never loaded;
register('0x_') raised PyYAML's own error; load_yaml('bm25') gave no hint of the 'pipeline:' key."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from ragkit import registry
from ragkit.errors import ConfigError, ParamError
from ragkit.filters import TopK
from ragkit.operator import Operator
from ragkit.params import Params
from ragkit.pipelines import RRF, Parallel, Pipeline, Route, RuleRouter, TopKStable
from ragkit.pipelines.yaml import load_yaml, to_node, unfitted_copy
from ragkit.retrievers import BM25
from ragkit.types import Corpus, Ranking, State

TEXTS = ["red apples are sweet", "green pears grow on trees", "red cars drive fast", "blue sky and sea",
         "apple pie recipe with red apples", "fast green cars", "pears and apples in a basket", "sweet red cherries"]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus(ids=[f"d{i}" for i in range(len(TEXTS))], texts=TEXTS,
                  metadata={"lang": ["a\x85b", "en", "\x85", "en", "fr", "en", "a b", "en"]})


# --- 1. U+0085 survives the YAML round trip ---------------------------------------------------------------------

def _nel_pipeline() -> Pipeline:
    router = RuleRouter(rules=[{"label": "hit", "regex": "red\x85?apples"}], default="miss")
    return Pipeline([BM25(k=5, filter={"lang": ["a\x85b", "\x85"]}), Route(router, {"hit": [], "miss": []})],
                    description="caf\x85 and\x85")


def _check_nel(back: Pipeline) -> None:
    assert back.description == "caf\x85 and\x85"
    assert back.steps[0].params.filter == {"lang": ["a\x85b", "\x85"]}
    assert back.steps[1].router.params.rules[0].regex == "red\x85?apples"
    assert back.steps[1].router.labels(["red apples"]) == ["miss"]


def test_nel_survives_to_yaml() -> None:
    p = _nel_pipeline()
    _check_nel(load_yaml(p.to_yaml()))
    assert unfitted_copy(p.steps[0]).params.filter == {"lang": ["a\x85b", "\x85"]}


def test_nel_survives_save_load(corpus: Corpus, tmp_path: Path) -> None:
    p = _nel_pipeline().fit(corpus)
    p.save(tmp_path / "p")
    back = Pipeline.load(tmp_path / "p")
    _check_nel(back)
    assert sorted(back.search(["red apples"]).to_dict()["q0"]) == ["d0", "d2"]  # not d6, whose lang is "a b"


# --- 2. a tree holding itself, a step that is no operator -------------------------------------------------------

def _cyclic() -> Pipeline:
    p = Pipeline([BM25(k=5), TopK(k=3)])
    p.steps.append(p)
    return p


def test_cycle_refused_at_every_entry(corpus: Corpus, tmp_path: Path) -> None:
    p = _cyclic()
    for call in (p.to_yaml, lambda: p.fit(corpus), lambda: p.save(tmp_path / "c"), lambda: to_node(p)):
        with pytest.raises(ParamError, match=r"^pipeline\[2\]: holds the pipeline it is in \(a cycle"):
            call()
    assert not (tmp_path / "c").exists()
    assert repr(p) == "Pipeline([BM25(k=5), TopK(k=3), ...])"


def test_cycle_through_a_parallel_refused_at_search(corpus: Corpus) -> None:
    inner = Pipeline([BM25(k=5)])
    par = Parallel([inner, BM25(k=4, stemmer="none")])
    p = Pipeline([par]).fit(corpus)
    inner.steps.append(par)  # after the fit: the search is the first to walk it
    with pytest.raises(ParamError, match=r"^pipeline\[0\]\.parallel\.branches\[0\]\[1\]: holds the parallel it is in"):
        p.search(["red apples"])
    with pytest.raises(ParamError, match=r"^parallel\.branches\[0\]\[1\]: holds the parallel it is in"):
        par.fit(corpus)


def test_step_that_is_no_operator(corpus: Corpus, tmp_path: Path) -> None:
    q = Pipeline([BM25(k=5)])
    q.steps.append("top_k")
    for call in (lambda: q.fit(corpus), q.to_yaml, lambda: q.save(tmp_path / "q")):
        with pytest.raises(ParamError, match=r"^pipeline\[1\]: expected an operator, got str 'top_k'"):
            call()
    fitted = Pipeline([BM25(k=5)]).fit(corpus)
    fitted.steps.append(3)
    with pytest.raises(ParamError, match=r"^pipeline\[1\]: expected an operator, got int 3"):
        fitted.search(["red apples"])


def test_shared_operator_is_no_cycle(corpus: Corpus, tmp_path: Path) -> None:
    shared = BM25(k=5)
    p = Pipeline([Parallel([Pipeline([shared, TopK(k=3)]), Pipeline([shared, TopK(k=2)])]), TopK(k=2)])
    p.fit(corpus)
    assert len(p.search(["red apples"]).to_dict()["q0"]) == 2
    assert load_yaml(p.to_yaml()) == p
    p.save(tmp_path / "s")
    assert Pipeline.load(tmp_path / "s") == p
    aliased = load_yaml("pipeline:\n- parallel:\n    branches:\n    - &b [bm25: {k: 3}]\n    - *b\n    names: [a, b]\n")
    aliased.fit(corpus)
    assert load_yaml(aliased.to_yaml()) == aliased


def test_tree_walk_costs_little() -> None:
    import time

    from ragkit.operator import tree_nodes
    from ragkit.pipelines._compose import checked_nodes

    p = Pipeline([Parallel([Pipeline([BM25(k=5), TopK(k=i + 1)]) for i in range(200)])])
    assert [id(n) for n in checked_nodes(p)] == [id(n) for n in tree_nodes(p)]
    t0 = time.perf_counter()
    checked_nodes(p)
    assert time.perf_counter() - t0 < 0.5  # 601 nodes: about 6 ms (linear; a quadratic walk takes seconds)


# --- 3. TopKStable on one (n_q, k) array ------------------------------------------------------------------------

def _old_topk_stable(j: TopKStable, state: State) -> list[bool]:
    """TopKStable._call before it was one batch (a loop over the queries): the reference."""
    k = j.params.k
    tops = [r.rows[:k].copy() for r in state.rankings] if state.rankings is not None else [
        np.empty(0, np.int64) for _ in state.queries]
    if j.params.order == "set":
        tops = [np.sort(t) for t in tops]
    prev = state.values.get("_old") or [None] * len(state)
    state.values["_old"] = tops
    return [p is not None and np.array_equal(p, t) for p, t in zip(prev, tops)]


def _rankings(rng: np.random.Generator, n: int, like: list[Ranking] | None = None) -> list[Ranking]:
    out = []
    for i in range(n):
        if like is not None and rng.random() < 0.5:  # unchanged, reordered, or one document swapped
            rows = like[i].rows.copy()
            if len(rows) > 1 and rng.random() < 0.5:
                rows[[0, 1]] = rows[[1, 0]]
            elif len(rows) and rng.random() < 0.3:
                rows[-1] = 99
        else:
            rows = rng.permutation(40)[:int(rng.choice([0, 1, 2, 3, 5, 8, 12]))].astype(np.int64)
        out.append(Ranking(rows, np.sort(rng.random(len(rows)).astype(np.float32))[::-1].copy()))
    return out


@pytest.mark.parametrize("order", ["set", "ranked"])
@pytest.mark.parametrize("k", [1, 3, 5, 10, 1000])  # (1000: wider than every ranking, whose widths vary)
def test_topk_stable_equals_the_per_query_loop(order: str, k: int) -> None:
    rng = np.random.default_rng(k)
    j = TopKStable(k=k, order=order)
    n = 200
    ref = State([f"q{i}" for i in range(n)])
    state = State([f"q{i}" for i in range(n)])
    prev: list[Ranking] | None = None
    for _ in range(4):
        prev = _rankings(rng, n, prev)
        ref.rankings = state.rankings = prev
        want = _old_topk_stable(j, ref)
        state = j(state)
        assert state.values["done"] == want
    assert any(want) and not all(want)
    sub = state.subset([3, 1, 7])  # as a loop hands a judge the queries not done (a list of (k,) rows)
    assert j(sub).values["done"] == [True] * 3  # the rankings it remembers: stable
    none = State(["a", "b"])  # no rankings: every top list empty, stable from the second call
    assert j(j(none)).values["done"] == [True, True]
    assert j(State([])).values["done"] == []


def test_topk_stable_makes_no_per_query_numpy_call(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    state = State([f"q{i}" for i in range(500)], rankings=_rankings(rng, 500))
    calls = []
    for name in ("array_equal", "sort"):
        real = getattr(np, name)
        monkeypatch.setattr(np, name, lambda *a, _real=real, _name=name, **kw: calls.append(_name) or _real(*a, **kw))
    j = TopKStable(k=5)
    assert j._call(j._call(state)).values["done"] == [True] * 500
    assert len(calls) < 10  # (it sorted and compared each query's top list: 1,500 calls)


def test_topk_stable_memory_follows_the_rankings_not_k() -> None:
    """The batched judge allocated ``(n_queries, k)`` whatever the rankings' length: ``k: 1000000`` (the whole
    ranking) over 50 queries of 12 documents took 400 MB (``k: 10**9`` failed); it takes the longest head."""
    from conftest import traced_peak

    rng = np.random.default_rng(1)
    state = State([f"q{i}" for i in range(50)], rankings=_rankings(rng, 50))
    j = TopKStable(k=1_000_000)
    out, peak = traced_peak(lambda: j(j(state)))
    assert out.values["done"] == [True] * 50
    assert peak < 1_000_000, peak


# --- 4. a fuser's weights refused at the field, on its line ----------------------------------------------------

_ZERO = """pipeline:
  - parallel:
      branches:
        - bm25: {}
        - bm25: {b: 0.5}
      fuse:
        rrf:
          k: 60
          weights: %s
"""


@pytest.mark.parametrize("weights,said", [("[0, 0]", "weights are all 0"), ("[1e7, 1]", "at most 1e6"),
                                          ("[-1, 1]", "non-negative")])
def test_fuser_weights_refused_at_the_field(weights: str, said: str, tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(_ZERO % weights)
    with pytest.raises(ConfigError, match=r"p\.yaml: line 9: pipeline\[0\]\.parallel\.fuse\.rrf\.weights: "
                                          rf".*{said}"):
        load_yaml(tmp_path / "p.yaml")
    with pytest.raises(ParamError, match=rf"^rrf\.weights: .*{said}") as e:
        RRF(weights=yaml.safe_load(weights))
    assert e.value.path == "rrf.weights"


# --- 6. operator names: lowercase snake_case, as documented; a name YAML cannot read ---------------------------

@pytest.fixture()
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    registry.load_all()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def _op_class(name: str) -> type[Operator]:
    class ProbeParams(Params):
        pass

    return type("Probe", (Operator,), {"name": name, "kind": "filter", "Params": ProbeParams, "stateless": True,
                                       "_call": lambda self, s: s.copy(), "__module__": "ragkit_probe_s56"})


@pytest.mark.parametrize("name", ["0x_", "0b_", "_a", "1st", "café", "Ab", "a-b", "a b", ""])
def test_register_refuses_a_name_that_is_no_snake_case(scratch_registry: None, name: str) -> None:
    with pytest.raises(ParamError, match=r"needs a lowercase snake_case 'name' .*starting with a letter\), got "):
        registry.register(_op_class(name))
    assert name not in registry._REGISTRY


def test_register_accepts_snake_case(scratch_registry: None) -> None:
    for name in ("probe_s56", "probe2_x", "p"):
        registry.register(_op_class(name))
        assert registry.get(name).name == name


def test_register_says_what_yaml_cannot_read(scratch_registry: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name the pipeline loader raises on (0x_: an integer int() does not read) is the registry's refusal, not
    PyYAML's ConstructorError (here with the name rule relaxed, the way 0x_ reached it before)."""
    monkeypatch.setattr(registry, "_NAME", re.compile(r".+"))
    with pytest.raises(ParamError, match=r"cannot be named '0x_': YAML reads 0x_ as no value at all \("
                                         r".*not as the string '0x_'"):
        registry.register(_op_class("0x_"))


# --- 5. an empty top-level pipeline is not written as YAML (pipeline: [] never loads) --------------------------

def test_empty_pipeline_to_yaml_refused() -> None:
    with pytest.raises(ParamError, match=r"^pipeline: expected a pipeline of at least one operator to write as YAML, "
                                         r"got an empty Pipeline\(\[\]\)"):
        Pipeline([]).to_yaml()


def test_empty_pipeline_as_a_route_branch_still_works(corpus: Corpus, tmp_path: Path) -> None:
    router = RuleRouter(rules=[{"label": "short", "max_words": 1}], default="long")
    pipe = Pipeline([BM25(k=4), Route(router, {"short": Pipeline([]), "long": [TopK(k=2)]})]).fit(corpus)
    run = pipe.search(["red", "red apples sweet"])
    assert len(run.to_dict()["q0"]) == 4 and len(run.to_dict()["q1"]) == 2
    again = load_yaml(pipe.to_yaml())
    assert again == pipe
    pipe.save(tmp_path / "r")
    assert Pipeline.load(tmp_path / "r").search(["red", "red apples sweet"]).to_dict() == run.to_dict()


# --- 7. an operator written where the file's top-level keys go ---------------------------------------------------

@pytest.mark.parametrize("text,said", [
    ("bm25", r"got str 'bm25' \(and no file or folder has that name\); it is an operator: a pipeline file lists its "
             r"steps under 'pipeline:', e.g. `pipeline: \[bm25: \{\}\]`"),
    ("bm25: {k: 3}", r"^bm25: unknown top-level key \(an operator: a pipeline file lists its steps under 'pipeline:', "
                     r"e.g. `pipeline: \[bm25: \{k: 3\}\]`\)"),
    ("parallel", r"it is a parallel: node: .*e.g. `pipeline: \[parallel: \{\.\.\.\}\]`"),
    ("loop: {max_iters: 2}", r"^loop: unknown top-level key \(a loop: node: .*`pipeline: \[loop: \{max_iters: 2\}\]`"),
])
def test_operator_at_the_top_level_says_where_it_goes(text: str, said: str) -> None:
    with pytest.raises(ConfigError, match=said) as e:
        load_yaml(text)
    assert "pipeline: missing" not in str(e.value)  # (the hint says it)


def test_other_top_level_keys_keep_their_messages() -> None:
    with pytest.raises(ConfigError, match=r"^pipline: unknown top-level key \(did you mean 'pipeline'\?\)"):
        load_yaml("pipline: [bm25: {}]")
    with pytest.raises(ConfigError, match=r"^foo: unknown top-level key; expected one of .*\n"
                                          r"pipeline: missing"):
        load_yaml("foo: 1")
