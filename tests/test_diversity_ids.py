"""The diversity measures read ids as every other reader does (:func:`ragkit._checks._key_ids`): a float id of an
integral value is its integer's (``1.0`` and ``"1"`` name one query or document), a NaN id is refused."""

from __future__ import annotations

import math

import pytest

from ragkit.errors import DataError
from ragkit.eval.diversity import alpha_ndcg, check_subtopics, subtopic_recall


def test_float_ids_of_a_run_and_subtopics_meet_their_string_ids():
    """Review: the diversity measures wrote ids with ``str``, so ``1.0`` was ``"1.0"`` there and ``"1"`` in
    qrels, ``evaluate`` and ``Run.from_dict``: a run keyed by floats scored 0 against subtopics keyed by strings."""
    subtopics = {"1": {"10": ["a"], "11": ["b"]}}
    as_strings = alpha_ndcg({"1": {"10": 2.0, "11": 1.0}}, subtopics, k=10)
    as_floats = alpha_ndcg({1.0: {10.0: 2.0, 11.0: 1.0}}, subtopics, k=10)
    assert as_floats == as_strings and as_strings["1"] > 0
    assert subtopic_recall({1.0: {10.0: 2.0}}, {1.0: {10.0: ["a"], 11.0: ["b"]}}, k=10) == {"1": 0.5}
    assert check_subtopics({1.0: {2.0: ["x"]}}, "t") == {"1": {"2": ["x"]}}
    with pytest.raises(DataError, match="twice once its ids are strings"):
        check_subtopics({1.0: {}, "1": {}}, "t")
    with pytest.raises(DataError, match="not an id"):
        check_subtopics({math.nan: {"2": ["x"]}}, "t")
    with pytest.raises(DataError, match="not an id"):
        alpha_ndcg({"1": {math.nan: 1.0}}, subtopics, k=10)
