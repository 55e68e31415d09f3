"""Review findings (s50) on pipelines, a section each: a route whose ``default:`` is a branch label, and a save
that refuses a pipeline.yaml this ragkit would not load; a retriever after a pipeline or parallel that only makes
rankings; a route branch that several labels reach, run once; ``max_iters``, one check in Python and YAML; the
hint for route branches written as a list of steps; a parallel's names, checked once and as route labels are; a
score_threshold above the range of mmr's or cosine_adapter's scores."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from ragkit.encoders import HashingEncoder, register_encoder
from ragkit.errors import ConfigError, ParamError
from ragkit.filters import MMR, CosineAdapter, ScoreThreshold, TopK
from ragkit.pipelines import Loop, MaxOnly, Parallel, Pipeline, Route, RuleRouter, store as store_module
from ragkit.pipelines.yaml import load_yaml
from ragkit.retrievers import BM25, Dense
from ragkit.types import Corpus

TEXTS = ["the cat sat on the mat", "dogs chase cats in the park", "a quick brown fox jumps",
         "cats and dogs are pets", "the mat is red and the cat is black"]
QUERIES = ["cat mat", "dogs", "fox", "red pets cats"]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.from_texts(TEXTS)


def _ranked(pipe: Pipeline) -> list[list[str]]:
    return [list(map(str, d)) for d in pipe.search(QUERIES).doc_ids]


# ------------------------------------------------------------------ 1. a route's default label
def _default_label_route() -> Pipeline:
    return Pipeline(Route(RuleRouter(rules=[{"label": "short", "max_words": 1}]),
                          {"short": BM25(k=1), "x": BM25(k=2)}, default="x"))


def test_route_default_label_branch_reads_back_from_yaml(corpus: Corpus) -> None:
    pipe = _default_label_route().fit(corpus)
    again = Pipeline.from_yaml(pipe.to_yaml())
    assert again.to_yaml() == pipe.to_yaml()
    assert _ranked(again.fit(corpus)) == _ranked(pipe)


def test_route_default_label_branch_saves_and_loads(corpus: Corpus, tmp_path: Path) -> None:
    pipe = _default_label_route().fit(corpus)
    pipe.save(tmp_path / "p")
    assert _ranked(Pipeline.load(tmp_path / "p")) == _ranked(pipe)


def test_route_branch_no_label_reaches_still_refused_in_yaml() -> None:
    # the default label reaches 'x'; 'y' is reached by nothing
    with pytest.raises(ConfigError, match=r"^pipeline\[0\]\.route\.branches: branches \['y'\] can never run") as e:
        load_yaml("pipeline:\n- route:\n    router: {rule_router: {rules: [{label: short, max_words: 1}]}}\n"
                  "    branches: {short: [bm25: {}], x: [bm25: {}], y: [bm25: {}]}\n    default: x\n")
    assert e.value.path == "pipeline[0].route.branches"


def test_save_refuses_a_yaml_it_would_not_load_before_writing(corpus: Corpus, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = _default_label_route().fit(corpus)
    broken = pipe.to_yaml().replace("default: x", "default: y")
    assert broken != pipe.to_yaml()
    monkeypatch.setattr(store_module, "dump_yaml", lambda p: broken)
    with pytest.raises(ConfigError, match=r"(?s)not saved: the pipeline\.yaml it would write is one this "
                                          r"ragkit refuses to load.*label 'y' is not a branch") as e:
        pipe.save(tmp_path / "p")
    assert e.value.path.startswith("pipeline[0].route.")
    assert not (tmp_path / "p").exists() and list(tmp_path.iterdir()) == []


def test_save_check_says_no_route_note_again(corpus: Corpus, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe = Pipeline(Route(RuleRouter(rules=[{"label": "a", "max_words": 5}, {"label": "b", "max_words": 2}],
                                         default="c"), {"a": BM25(k=1), "b": BM25(k=2), "c": BM25(k=3)}))
    notes = [r for r in caplog.records if r.getMessage().startswith("route:")]
    assert len(notes) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe.fit(corpus).save(tmp_path / "p")
    assert [r for r in caplog.records if r.getMessage().startswith("route:")] == []
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        Pipeline.load(tmp_path / "p")  # (the load says it, as it builds the route)
    assert len([r for r in caplog.records if r.getMessage().startswith("route:")]) == 1


# ------------------------------------------------------------------ 2. a ranking discarded after a composite
@pytest.mark.parametrize(("steps", "path"), [
    ([BM25(k=3) + BM25(k=3, b=0.1), TopK(k=2), BM25(k=4, b=0.3)], "pipeline[2].bm25"),
    ([Pipeline([BM25(k=3)]), BM25(k=4, b=0.3)], "pipeline[1].bm25"),
    ([Pipeline([BM25(k=3), TopK(k=2)]), BM25(k=4, b=0.3)], "pipeline[1].bm25"),
    ([BM25(k=3) + BM25(k=3, b=0.1), Pipeline([BM25(k=4, b=0.3)])], "pipeline[1]"),
])
def test_retriever_after_a_ranking_only_composite_refused_at_fit(corpus: Corpus, steps: list, path: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(path)}: .*discarded") as e:
        Pipeline(steps).fit(corpus)
    assert e.value.path == path


@pytest.mark.parametrize(("text", "path"), [
    ("[parallel: {branches: [bm25: {k: 3}, bm25: {k: 3, b: 0.1}]}, top_k: {k: 2}, bm25: {k: 4, b: 0.3}]",
     "pipeline[2].bm25"),
    ("[[bm25: {k: 3}], bm25: {k: 4, b: 0.3}]", "pipeline[1].bm25"),
])
def test_retriever_after_a_ranking_only_composite_refused_in_yaml(text: str, path: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(path)}: bm25 \(retriever\) searches the whole corpus .*the "
                                          r"rankings pipeline\[0\](\.parallel)? makes .* are discarded") as e:
        load_yaml(f"pipeline: {text}")
    assert e.value.path == path


@pytest.mark.parametrize("text", [
    "[[bm25: {k: 3}, prf: {}], bm25: {k: 4}]",  # the composite rewrites the query the bm25 after it reads
    "[bm25: {k: 3}, [top_k: {k: 2}, maxsim: {}], top_k: {k: 1}]",  # no retriever after
    "[[bm25: {k: 3}], top_k: {k: 2}]",
    "[[bm25: {k: 3}], mmr: {}]",
])
def test_composites_that_do_more_than_rank_or_no_later_retriever_accepted(text: str) -> None:
    load_yaml(f"pipeline: {text}")


def test_a_composite_that_keeps_the_rankings_reaching_it_is_not_one_that_only_makes_rankings() -> None:
    # a branch of the parallel keeps what reaches it: the look-back stops there, as before
    load_yaml("pipeline: [bm25: {k: 10}, parallel: {branches: [[bm25: {k: 5}], [top_k: {k: 5}]]}, bm25: {k: 3}]")


# ------------------------------------------------------------------ 3. a shared route branch runs once
def _trace_counts(pipe: Pipeline, queries: list[str]) -> tuple[list[tuple[str, int]], list[list[str]], list[str]]:
    run = pipe.search(queries, trace=True)
    events = [(e.path, e.n_queries) for e in run.trace]
    return events, [list(map(str, d)) for d in run.doc_ids], list(run.values["route"])


def test_route_runs_the_default_once_for_all_labels_sent_to_it(corpus: Corpus) -> None:
    # 'x' and 'y' have no branch: both go to the default, in one batch (was: once per label)
    router = RuleRouter(rules=[{"label": "short", "max_words": 1}, {"label": "x", "max_words": 2}], default="y")
    pipe = Pipeline(Route(router, {"short": BM25(k=1)}, default=BM25(k=2))).fit(corpus)
    queries = ["cat mat", "dogs", "red pets cats", "fox", "cat mat"]
    events, ranked, labels = _trace_counts(pipe, queries)
    assert labels == ["x", "short", "y", "short", "x"]
    default_runs = [n for p, n in events if p == "pipeline[0].route.default.bm25"]
    assert default_runs == [3]
    assert [n for p, n in events if p == "pipeline[0].route.branches.short.bm25"] == [2]
    alone = Pipeline([BM25(k=2)]).fit(corpus)
    for q, labels_of, docs in zip(queries, labels, ranked):
        assert docs == (_ranked_one(alone, q) if labels_of != "short" else _ranked_one(Pipeline([BM25(k=1)]).fit(
            corpus), q))


def _ranked_one(pipe: Pipeline, query: str) -> list[str]:
    return list(map(str, pipe.search([query]).doc_ids[0]))


def test_route_runs_a_default_label_branch_once_for_its_label_and_the_unbranched(corpus: Corpus) -> None:
    router = RuleRouter(rules=[{"label": "short", "max_words": 1}, {"label": "x", "max_words": 2}], default="y")
    pipe = Pipeline(Route(router, {"short": BM25(k=1), "x": BM25(k=2)}, default="x")).fit(corpus)
    events, _, labels = _trace_counts(pipe, ["red pets cats", "cat mat", "dogs"])
    assert labels == ["y", "x", "short"]
    assert [(p, n) for p, n in events if p.endswith(".bm25")] == [
        ("pipeline[0].route.branches.x.bm25", 2), ("pipeline[0].route.branches.short.bm25", 1)]


# ------------------------------------------------------------------ 4. max_iters: one check
@pytest.mark.parametrize(("given", "n"), [("3", 3), (3.0, 3), (" 2 ", 2), (np.int64(4), 4), (7, 7)])
def test_loop_reads_max_iters_as_yaml_does(given: object, n: int) -> None:
    loop = Loop(BM25(k=3), until=MaxOnly(), max_iters=given)  # type: ignore[arg-type]
    assert loop.max_iters == n and type(loop.max_iters) is int
    assert load_yaml(f"pipeline: [loop: {{body: [bm25: {{k: 3}}], until: {{max_only: {{}}}}, max_iters: {given!r}}}]"
                     if not isinstance(given, np.integer) else
                     f"pipeline: [loop: {{body: [bm25: {{k: 3}}], until: {{max_only: {{}}}}, max_iters: {n}}}]"
                     ).steps[0].max_iters == n


@pytest.mark.parametrize("given", ["0", 1001, 3.5, True, np.True_, "x", None, [3]])
def test_loop_refuses_max_iters_as_yaml_does(given: object) -> None:
    with pytest.raises(ParamError, match=r"^loop\.max_iters: expected an integer from 1 to 1,000 \(each iteration runs "
                                         rf"the body over the queries still looping\), got {re.escape(repr(given))}$"):
        Loop(BM25(k=3), until=MaxOnly(), max_iters=given)  # type: ignore[arg-type]


def test_yaml_max_iters_error_is_placed_at_its_path() -> None:
    with pytest.raises(ConfigError, match=r"^pipeline\[1\]\.loop\.max_iters: expected an integer from 1 to 1,000 .*"
                                          r"got '0'$") as e:
        load_yaml("pipeline: [bm25: {}, loop: {body: [prf: {}, bm25: {}], until: {max_only: {}}, max_iters: '0'}]")
    assert e.value.path == "pipeline[1].loop.max_iters"


# ------------------------------------------------------------------ 5. route branches written as a list of steps
_ROUTE = "pipeline: [route: {{router: {{rule_router: {{rules: [{{label: short, max_words: 1}}], default: long}}}}, " \
         "branches: {branches}}}]"


@pytest.mark.parametrize(("branches", "suggested"), [
    ("[bm25: {}]", "{short: [bm25: {}]}"),
    ("[bm25: {k: 3}, dense: {}]", "{short: [bm25: {k: 3}], long: [dense: {}]}"),
])
def test_route_branches_written_as_steps_get_a_hint_with_labels_that_loads(branches: str, suggested: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_yaml(_ROUTE.format(branches=branches))
    said = str(e.value)
    assert said.startswith("pipeline[0].route.branches: expected a mapping of label -> pipeline, got ")
    assert "these are steps" in said and f"e.g. `branches: {suggested}`" in said, said
    assert "drop the '- '" not in said
    if "long" in suggested:  # what it suggests loads (the router gives both labels)
        load_yaml(_ROUTE.format(branches=suggested))


def test_route_branches_written_as_a_list_of_labels_keep_their_hint() -> None:
    with pytest.raises(ConfigError, match=r"drop the '- ' before each label, e\.g\. `branches: \{short: \[\{bm25: "
                                          r"\{\}\}\], long: \[\{bm25: \{\}\}\]\}`"):
        load_yaml(_ROUTE.format(branches="[short: [bm25: {}], long: [bm25: {}]]"))


# ------------------------------------------------------------------ 6. a parallel's branch names
@pytest.mark.parametrize("names", [["", "c"], [" ", "c"], ["a.b", "c"], ["a[0]", "c"], ["a", "b]"]])
def test_parallel_names_refused_as_route_labels_are(names: list[str]) -> None:
    odd = [n for n in names if n != "c" and n != "a"]
    with pytest.raises(ParamError, match=r"^parallel\.names: branch names must be non-blank and hold no '\.', '\[' or "
                                         rf"'\]' .*got {re.escape(repr(odd))}$") as e:
        Parallel([BM25(k=3), BM25(k=3, b=0.1)], names=names)
    assert e.value.path == "parallel.names"
    with pytest.raises(ConfigError, match=r"^pipeline\[0\]\.parallel\.names: branch names must be non-blank") as y:
        load_yaml(f"pipeline: [parallel: {{branches: [bm25: {{}}, bm25: {{b: 0.1}}], names: {names!r}}}]")
    assert y.value.path == "pipeline[0].parallel.names"


@pytest.mark.parametrize(("names", "said"), [
    (["a"], r"expected 2 names \(one per branch, in the order of the branches\), got 1: \['a'\]"),
    (["a", "a"], r"\['a'\] name more than one branch"),
    ("ab", r"expected a list of strings \(one per branch, in the order of the branches\), got 'ab' \(str\)"),
])
def test_parallel_names_one_check_in_python_and_yaml(names: object, said: str) -> None:
    with pytest.raises(ParamError, match=rf"^parallel\.names: {said}"):
        Parallel([BM25(k=3), BM25(k=3, b=0.1)], names=names)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=rf"^pipeline\[0\]\.parallel\.names: {said}"):
        load_yaml(f"pipeline: [parallel: {{branches: [bm25: {{}}, bm25: {{b: 0.1}}], names: {names!r}}}]")


def test_parallel_names_with_spaces_or_other_characters_still_taken(corpus: Corpus) -> None:
    pipe = Pipeline([Parallel([BM25(k=3), BM25(k=3, b=0.1)], names=["a b", "c-d"])]).fit(corpus)
    assert Pipeline.from_yaml(pipe.to_yaml()).steps[0].names == ["a b", "c-d"]


# ------------------------------------------------------------------ 7. a threshold above mmr's or cosine_adapter's
register_encoder("s50-hash", HashingEncoder(dim=32), replace=True)


@pytest.mark.parametrize("between", [MMR(k=5, model="s50-hash"), CosineAdapter(model="s50-hash")])
def test_score_threshold_above_a_bounded_step_is_refused(corpus: Corpus, between: object) -> None:
    name = "mmr" if isinstance(between, MMR) else "cosine_adapter"
    said = "mmr's rank scores (in (0, 1])" if name == "mmr" else "cosine_adapter's probabilities (in [0, 1])"
    pipe = Pipeline([Dense(k=10, model="s50-hash"), between, ScoreThreshold(threshold=2)])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=rf"^pipeline\[2\]\.score_threshold\.threshold: 2\.0 is outside \[0, 1\], "
                                          rf"where each document's score always lies on the scores reaching "
                                          rf"score_threshold: those of pipeline\[1\]\.{name}, {re.escape(said)}; so no "
                                          r"document passes it .*give a threshold within \[0, 1\] \(the scale of "
                                          r"those scores, not BM25's\)$") as e:
        pipe.fit(corpus)  # (refused before any step is fitted)
    assert e.value.path == "pipeline[2].score_threshold.threshold"
    with pytest.raises(ConfigError) as y:
        load_yaml(f"pipeline: [dense: {{k: 10, model: s50-hash}}, {name}: {{model: s50-hash}}, "
                  f"score_threshold: {{threshold: 2}}]")
    assert y.value.path == "pipeline[2].score_threshold.threshold"


def test_score_threshold_within_a_bounded_step_and_cosines_still_said_as_before(
        caplog: pytest.LogCaptureFixture) -> None:
    load_yaml("pipeline: [dense: {k: 10, model: s50-hash}, mmr: {model: s50-hash}, score_threshold: {threshold: 0.5}]")
    load_yaml("pipeline: [bm25: {k: 10}, mmr: {model: s50-hash}, score_threshold: {threshold: 0.5}]")
    with pytest.raises(ConfigError, match=r"is outside \[-1, 1\], .*, cosines \(in \[-1, 1\]\); .*\(a cosine's "
                                          r"scale, not BM25's\)$"):
        load_yaml("pipeline: [dense: {k: 10, model: s50-hash}, score_threshold: {threshold: 2}]")
    # a gap after mmr is in [0, 1]: 1.5 is above it (a score router's note, not an error); a cosines' gap is in [0, 2]
    route = ("route: {router: {score_router: {feature: gap, threshold: 1.5}}, "
             "branches: {easy: [top_k: {k: 1}], hard: [top_k: {k: 2}]}}")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        load_yaml(f"pipeline: [dense: {{k: 10, model: s50-hash}}, {route}]")
    assert not [r for r in caplog.records if "is outside" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        load_yaml(f"pipeline: [dense: {{k: 10, model: s50-hash}}, mmr: {{model: s50-hash}}, {route}]")
    said = [r.getMessage() for r in caplog.records if "is outside" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("pipeline[2].route.router.score_router.threshold: 1.5 is outside "
                                                 "[0, 1], where the gap between the top two scores"), said
