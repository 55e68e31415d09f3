"""YAML and pipeline review, stop 56: U+0085 (NEL) in a string came back as a space from to_yaml and save; a
pipeline holding itself recursed until Python gave up and a non-operator step failed at fit with an
AttributeError; TopKStable and ScoreReached looped over the queries in Python; weights errors pointed at the
list or the operator, not the item or field; an empty top-level pipeline fitted and dumped but never loaded;
register('0x_') raised PyYAML's own error; load_yaml('bm25') gave no hint of the 'pipeline:' key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragkit.pipelines import Pipeline, Route, RuleRouter
from ragkit.pipelines.yaml import load_yaml, unfitted_copy
from ragkit.retrievers import BM25
from ragkit.types import Corpus

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
