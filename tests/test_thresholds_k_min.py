"""A per-call ``k_min`` of ``score_threshold`` / ``relative_threshold`` is held to the rule of a per-call ``k``, as
``mmr``'s ``fetch_k`` and ``cosine_adapter``'s ``k_min`` are: ``"2"`` and ``2.0`` were converted."""

from __future__ import annotations

import pytest

from ragkit import Corpus
from ragkit.errors import ParamError
from ragkit.filters import RelativeThreshold, ScoreThreshold
from ragkit.retrievers import BM25
from ragkit.types import State


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus(ids=[f"d{i}" for i in range(6)], texts=["apple pie", "apple tart", "pear", "apple apple juice",
                                                         "plum", "apple"])


@pytest.mark.parametrize("cut", [ScoreThreshold(threshold=1e9), RelativeThreshold(alpha=1.0)])
@pytest.mark.parametrize("value", ["2", 2.0, True, -1])
def test_per_call_k_min_is_refused_unless_an_integer(corpus, cut, value):
    pipe = (BM25(k=5) | cut).fit(corpus)
    with pytest.raises(ParamError, match=f"search option {cut.name}.k_min: expected an integer >= 0"):
        pipe.search(["apple"], **{cut.name: {"k_min": value}})
    state = pipe.steps[0](State(["apple"]))
    state.options = {cut.name: {"k_min": value}}
    with pytest.raises(ParamError, match=f"options.{cut.name}.k_min: expected an integer >= 0"):
        pipe.steps[1](state)


@pytest.mark.parametrize("cut", [ScoreThreshold(threshold=1e9), RelativeThreshold(alpha=1.0)])
def test_an_integer_k_min_keeps_that_many(corpus, cut):
    pipe = (BM25(k=5) | cut).fit(corpus)
    assert len(pipe.search(["apple"], **{cut.name: {"k_min": 3}}).doc_ids[0]) == 3
    assert type(cut).Params(k_min="2").k_min == 2  # the parameter: as k's ("3" -> 3)
