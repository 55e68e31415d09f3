"""Pipeline review, stop 54 (second pass): a rewriter of some queries (``State.subset`` + ``State.merge``) kept the
query vectors of the text it replaced (copies, not the same arrays); an ndarray ``values["query_text"]`` raised
numpy's "truth value of an array is ambiguous"; fit kept every learning step's input alive; what a learner's fit
adds to its input reached the learners after it."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from test_compose_s54 import corpus, train  # noqa: F401  (fixtures: the 8-text corpus, its 4 judged queries)

from ragkit.encoders import HashingEncoder, register_encoder
from ragkit.errors import DataError
from ragkit.filters import TopK
from ragkit.operator import Operator
from ragkit.params import Params
from ragkit.pipelines import Pipeline
from ragkit.retrievers import Dense
from ragkit.types import Corpus, State, TrainSet

register_encoder("s54b-hash", HashingEncoder(dim=32), replace=True)


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


def test_a_rewrite_of_some_queries_by_subset_and_merge_drops_their_old_vectors(corpus):  # noqa: F811
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


def test_a_query_text_array_is_a_data_error_naming_the_step(corpus):  # noqa: F811
    pipe = Pipeline([_dense(), _ArrayRewrite(), TopK(k=2), _dense()]).fit(corpus)
    # old: ValueError "The truth value of an array with more than one element is ambiguous", no step named
    with pytest.raises(DataError, match=r"^pipeline\[1\]\.s54b_array_rewrite: _ArrayRewrite\._call "
                                        r"\('s54b_array_rewrite'\) returned values\['query_text'\] as ndarray .*"
                                        r"expected a list of one str per query"):
        pipe.search(["fast cars", "red apples"])


# ----------------------------------------------------------------------------- 3./4. the inputs of fit's learners
class _LearnerParams(Params):
    pass


class _Learner(Operator):
    """A learning filter that learns nothing: its fit records what it was given (a weak reference to its first
    ranking, whether it sees a value or query vectors a learner before it wrote) and, with ``leak``, writes both
    into the input it was given."""

    name = "s54b_learner"
    kind = "filter"
    Params = _LearnerParams
    needs_train = True
    wants_upstream = True
    seen: list[tuple[weakref.ref[object], bool, bool]] = []
    leak = False
    checks: list[bool] = []

    def _fit(self, corpus, train, upstream):  # noqa: F811
        gc.collect()
        # each earlier learner's first ranking: dead once a later learner's input is made (old: every one alive)
        type(self).checks.append(all(ref() is None for ref, _, _ in type(self).seen[:-1]))
        type(self).seen.append((weakref.ref(upstream.rankings[0]), "_leak" in upstream.values,
                                "s54b-leak" in upstream.vectors))
        if self.leak:
            upstream.values["_leak"] = [1] * len(upstream)
            upstream.vectors["s54b-leak"] = np.ones((len(upstream), 2), np.float32)

    def _call(self, state):
        return state


def _three_learners(corpus: Corpus, train: TrainSet) -> None:  # noqa: F811
    _Learner.seen, _Learner.checks = [], []
    leaking = _Learner()
    leaking.leak = True
    pipe = Pipeline([Dense(model="s54b-hash", k=5), leaking, TopK(k=4), _Learner(), TopK(k=3), _Learner()])
    pipe.fit(corpus, train)
    assert len(_Learner.seen) == 3


def test_fit_keeps_only_the_latest_learners_input(corpus, train):  # noqa: F811
    _three_learners(corpus, train)
    # by the third learner's fit, the first learner's input is gone (old: the fit kept every learner's input)
    assert _Learner.checks == [True, True, True]


def test_what_a_learners_fit_adds_to_its_input_reaches_no_learner_after_it(corpus, train):  # noqa: F811
    """The first learner's fit writes a value and query vectors into the input it was given; fit hands each learner
    a copy of the kept input, so the learners after it see neither (without the copies they saw both)."""
    _three_learners(corpus, train)
    assert [(values, vectors) for _, values, vectors in _Learner.seen] == [(False, False)] * 3
