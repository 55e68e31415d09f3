"""Pipeline review, stop 54 (second pass): a rewriter of some queries (``State.subset`` + ``State.merge``) kept the
query vectors of the text it replaced (copies, not the same arrays); an ndarray ``values["query_text"]`` raised
numpy's "truth value of an array is ambiguous"; fit kept every learning step's input alive; what a learner's fit
adds to its input reached the learners after it."""

from __future__ import annotations

import gc
import logging
import weakref

import numpy as np
import pytest

from ragkit.encoders import HashingEncoder, register_encoder
from ragkit.errors import DataError
from ragkit.filters import TopK
from ragkit.operator import Operator
from ragkit.params import Params
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25, Dense
from ragkit.types import Corpus, Queries, State, TrainSet

register_encoder("s54b-hash", HashingEncoder(dim=32), replace=True)

TEXTS = ["red apples and pears", "green pears", "red cars fast", "blue sky", "apple pie recipe", "fast cars race",
         "sky is blue and clear", "pear tree garden"]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.from_texts(TEXTS, ids=[f"d{i}" for i in range(len(TEXTS))])


@pytest.fixture(scope="module")
def train() -> TrainSet:
    queries = Queries([f"t{i}" for i in range(4)], ["red apples", "fast cars", "blue sky", "pear tree"])
    return TrainSet(queries, {"t0": {"d0": 1}, "t1": {"d5": 1}, "t2": {"d3": 1}, "t3": {"d7": 1}})


def _dense() -> Dense:
    return Dense(model="s54b-hash", k=3)


# ----------------------------------------------------------------------------- 1. a rewrite of some queries
class _SubsetRewrite(Operator):
    """A plugin rewriter of the first query only, built on the documented State.subset + State.merge: the merge
    copies the vectors it was given (the subset's are copies), so none is the same array as its input's."""

    name = "s54b_subset_rewrite"
    kind = "rewriter"
    stateless = True

    def _call(self, state: State) -> State:
        part = state.subset([0])
        part.values["query_text"] = ["blue sky"]
        return State.merge(state, [([0], part)])


def test_a_rewrite_of_some_queries_by_subset_and_merge_drops_their_old_vectors(corpus):
    queries = ["fast cars", "red apples"]
    alone = Pipeline([_SubsetRewrite(), _dense()]).fit(corpus).search(queries).doc_ids
    plain = Pipeline([_dense()]).fit(corpus).search(queries).doc_ids
    assert alone[0].tolist() != plain[0].tolist()  # (else the test shows nothing)
    listed = Pipeline([_dense(), _SubsetRewrite(), _dense()]).fit(corpus).search(queries).doc_ids
    # old: the merged copies survived, so the rewritten query was ranked by the old text's vectors
    assert [r.tolist() for r in listed] == [r.tolist() for r in alone]
    # step by step: the vectors are dropped (the unchanged query's too: one array per key)
    dense = _dense().fit(corpus)
    first = dense(State.of(queries))
    assert _SubsetRewrite()(first).vectors == {}
    # a step that changes no text keeps them
    kept = TopK(k=2).fit(corpus)(first)
    assert list(kept.vectors) == list(first.vectors)


# ----------------------------------------------------------------------------- 2. a query_text that is not a list
class _ArrayRewrite(Operator):
    """A plugin rewriter that stores its texts as a numpy array (State.values holds lists)."""

    name = "s54b_array_rewrite"
    kind = "rewriter"
    stateless = True

    def _call(self, state: State) -> State:
        out = state.copy()
        out.values["query_text"] = np.array(["blue sky"] * len(state), dtype=object)
        return out


def test_a_query_text_array_is_a_data_error_naming_the_step(corpus):
    pipe = Pipeline([_dense(), _ArrayRewrite(), TopK(k=2), _dense()]).fit(corpus)
    # old: ValueError "The truth value of an array with more than one element is ambiguous", no step named
    with pytest.raises(DataError, match=r"^pipeline\[1\]\.s54b_array_rewrite: _ArrayRewrite\._call "
                                        r"\('s54b_array_rewrite'\) returned values\['query_text'\] as ndarray .*"
                                        r"expected a list of one str per query"):
        pipe.search(["fast cars", "red apples"])
