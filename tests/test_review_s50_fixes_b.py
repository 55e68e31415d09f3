"""Review findings (s50, second batch) on pipelines and filters, a section each: the labels a route's
branches-as-a-list hint suggests are the router's own; a save whose written pipeline.yaml would load as another
pipeline is refused by the save."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ragkit.errors import ConfigError
from ragkit.filters import TopK
from ragkit.pipelines import Pipeline, store as store_module
from ragkit.pipelines.yaml import load_yaml
from ragkit.retrievers import BM25
from ragkit.types import Corpus

# ------------------------------------------------------------------ 1. a route hint's labels: the router's
_SCORE = "{score_router: {threshold: 3.0}}"
_RULE = "{rule_router: {rules: [{label: q, max_words: 3}], default: other}}"


def _route(router: str, branches: str) -> str:
    """A pipeline of a route (after bm25 for a score_router, which routes on the rankings before it)."""
    before = "bm25: {}, " if "score_router" in router else ""
    return f"pipeline: [{before}route: {{router: {router}, branches: {branches}}}]"


def _suggested(said: str) -> str:
    found = re.search(r"e\.g\. `branches: (\{.*?\})`", said)
    assert found, said
    return found.group(1)


@pytest.mark.parametrize(("router", "branches", "suggested"), [
    (_SCORE, "[bm25: {}, dense: {}]", "{easy: [bm25: {}], hard: [dense: {}]}"),
    (_RULE, "[bm25: {}, dense: {}]", "{q: [bm25: {}], other: [dense: {}]}"),
    (_SCORE, "3", "{easy: [bm25: {}], hard: [dense: {}]}"),  # the hint for neither steps nor labels
    (_RULE, "3", "{q: [bm25: {}], other: [dense: {}]}"),
])
def test_route_hint_suggests_the_routers_labels_and_loads(router: str, branches: str, suggested: str) -> None:
    with pytest.raises(ConfigError, match=r"^pipeline\[\d\]\.route\.branches: expected a mapping of label") as e:
        load_yaml(_route(router, branches))
    assert _suggested(str(e.value)) == suggested
    load_yaml(_route(router, suggested))  # what it suggests loads


def test_route_hint_quotes_a_label_yaml_would_read_as_a_boolean() -> None:
    router = "{rule_router: {rules: [{label: 'yes', max_words: 3}], default: 'no'}}"
    with pytest.raises(ConfigError) as e:
        load_yaml(_route(router, "[bm25: {}, dense: {}]"))
    suggested = _suggested(str(e.value))
    assert suggested == "{'yes': [bm25: {}], 'no': [dense: {}]}"
    load_yaml(_route(router, suggested))


def test_route_hint_names_labels_past_the_routers_and_those_left_without_a_step() -> None:
    with pytest.raises(ConfigError) as e:
        load_yaml(_route(_SCORE, "[bm25: {}, dense: {}, bm25: {k: 3}]"))
    assert _suggested(str(e.value)) == "{easy: [bm25: {}], hard: [dense: {}], label3: [bm25: {k: 3}]}"
    with pytest.raises(ConfigError) as e:
        load_yaml(_route(_SCORE, "[bm25: {}]"))
    said = str(e.value)
    assert _suggested(said) == "{easy: [bm25: {}]}"
    assert "router 'score_router' also labels queries ['hard']: a branch for each, or a 'default:'" in said


# ------------------------------------------------------------------ 2. a save the load would refuse
TEXTS = ["the cat sat on the mat", "dogs chase cats in the park", "a quick brown fox jumps", "cats and dogs are pets"]


def test_save_refuses_a_yaml_whose_step_parameters_are_not_the_steps(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = Pipeline([BM25(k=3), TopK(k=2)]).fit(Corpus.from_texts(TEXTS))
    changed = pipe.to_yaml().replace("k: 3", "k: 4")
    assert changed != pipe.to_yaml()
    load_yaml(changed)  # a pipeline.yaml of its own right: only not the one of these steps
    monkeypatch.setattr(store_module, "dump_yaml", lambda p: changed)
    with pytest.raises(ConfigError, match=r"(?s)not saved: the pipeline\.yaml it would write is one this ragkit "
                                          r"refuses to load.*pipeline\[0\]\.bm25: the YAML names \{bm25: \{'k': 4\}\} "
                                          r"where the pipeline has \{bm25: \{'k': 3\}\}") as e:
        pipe.save(tmp_path / "p")  # (it saved, and Pipeline.load raised ArtifactError: 'changed after saving')
    assert e.value.path == "pipeline[0].bm25"
    assert not (tmp_path / "p").exists()
    monkeypatch.undo()
    pipe.save(tmp_path / "p")  # as written, it saves and loads
    assert Pipeline.load(tmp_path / "p").to_yaml() == pipe.to_yaml()
