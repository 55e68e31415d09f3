"""Review findings (s50, second batch) on pipelines and filters, a section each: the labels a route's
branches-as-a-list hint suggests are the router's own; a save whose written pipeline.yaml would load as another
pipeline is refused by the save."""

from __future__ import annotations

import re

import pytest

from ragkit.errors import ConfigError
from ragkit.pipelines.yaml import load_yaml

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
