"""Review s51 of the evaluation code: run ids written as the qrels' are, one tie order for the diversity
measures, the cut of every run before pytrec_eval, filter_report's relevance level, a hint for swapped
arguments, MRR@k without a second evaluator."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ragkit import Run
from ragkit.errors import DataError
from ragkit.eval import evaluate


@pytest.fixture(autouse=True)
def _quiet():
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


# 1. run ids written as qrels' ids are (1.0 -> "1"), not with str()


def test_a_run_keyed_by_floats_meets_the_judgements_of_those_ids():
    """str(1.0) is '1.0' where the qrels write '1': a correct run scored 0, or was refused as judged nowhere."""
    assert evaluate({"q": {1.0: .5, 2.0: .3}}, {"q": {1.0: 1}}, ["ndcg@10"]).scores == {"ndcg@10": 1.0}
    assert evaluate({1.0: {"a": .5}}, {1.0: {"a": 1}}, ["ndcg@10"]).scores == {"ndcg@10": 1.0}
    assert evaluate({1: {2: .5, 3: .9}}, {"1": {"2": 1}}, ["p@1"]).scores == {"p@1": 0.0}
    assert evaluate({np.float64(7.0): {np.int64(2): .5}}, {"7": {"2": 1}}, ["p@1"]).scores == {"p@1": 1.0}


def test_two_ids_of_one_document_are_a_document_listed_twice():
    """{1: .1, "1": .9} was merged silently (the last score kept) where trec_eval refuses a document twice."""
    with pytest.raises(DataError, match=r"^evaluate: run\['q'\] names a document twice once its ids are strings: "
                                        "'1'"):
        evaluate({"q": {1: .1, "1": .9}}, {"q": {"1": 1}}, ["ndcg@10"])
    with pytest.raises(DataError, match="^evaluate: run names a query twice once its ids are strings: '1'"):
        evaluate({1: {"a": .1}, "1": {"a": .9}}, {"1": {"a": 1}}, ["ndcg@10"])
    with pytest.raises(DataError, match=r"^Run.from_dict: run\['q'\] names a document twice"):
        Run.from_dict({"q": {1.0: .1, "1": .9}})
    with pytest.raises(DataError, match=r"^evaluate: run\['q'\]'s document ids\[0\] is nan, not an id"):
        evaluate({"q": {float("nan"): .1}}, {"q": {"1": 1}}, ["ndcg@10"])


def test_run_from_dict_writes_ids_as_strings():
    """Run.from_dict kept int document ids, and evaluate then failed inside pytrec_eval with a TypeError."""
    run = Run.from_dict({1.0: {1: .5, 2.0: .7, "x": .1}})
    assert run.query_ids == ["1"]
    assert run.doc_ids[0].tolist() == ["2", "1", "x"]
    assert evaluate(run, {"1": {"1": 1}}, ["mrr@10"], ignore_identical_ids=False).scores == {"mrr@10": 0.5}
    assert Run.from_dict({"q": {"a": 1.0}}).doc_ids[0].tolist() == ["a"]
