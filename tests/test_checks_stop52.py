"""Fuzz review, stop 52: a ``prf``'s expansion of one query depended on the other queries of its batch (float noise
from sums taken in another order moved a weight of exactly 37.5 repetitions to 37 or 38); a retriever's ranking
was silently discarded by a following parallel, route or loop every path of which starts with a retriever; and a
``prf`` that nothing after it reads was accepted."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ragkit.encoders import HashingEncoder, register_encoder
from ragkit.errors import ConfigError
from ragkit.filters import TopK
from ragkit.operator import Operator
from ragkit.pipelines import PRF, Loop, MaxOnly, Parallel, Pipeline, Route, RuleRouter
from ragkit.pipelines.yaml import load_yaml
from ragkit.retrievers import BM25, Dense
from ragkit.types import Corpus, State

register_encoder("stop52-hash", HashingEncoder(dim=32), replace=True)

#: the first query of SciFact's queries.jsonl (id 0)
SCIFACT_Q0 = "0-dimensional biomaterials lack inductive properties."


def _hash() -> Dense:
    return Dense(model="stop52-hash")


@pytest.fixture(scope="module")
def first40(scifact) -> Corpus:
    return scifact.corpus.subset(np.arange(40))


# ----------------------------------------------------------------------------- 1. prf: batch-independent
def _same_alone_as_in_batch(pipe: Pipeline, queries: list[str]) -> None:
    """Each query's expansion (text and counts) and final ranking, run alone, equal those of it in the batch,
    bit for bit."""
    batch = pipe(State.of(queries))
    for i, q in enumerate(queries):
        alone = pipe(State.of([q]))
        assert alone.values["lexical_query"][0] == batch.values["lexical_query"][i], q
        assert alone.values["lexical_counts"][0].to_dict() == batch.values["lexical_counts"][i].to_dict(), q
        np.testing.assert_array_equal(alone.rankings[0].rows, batch.rankings[i].rows)
        np.testing.assert_array_equal(alone.rankings[0].scores, batch.rankings[i].scores)


def test_prf_expansion_does_not_depend_on_the_batch_reproducer(first40: Corpus) -> None:
    """bone/class/... were 38 repetitions alone and 37 next to SciFact query 0 (weight * 1000 / total = 37.5 up to
    1e-12): the okapi bm25 after it scored 2729.74 vs 2703.87."""
    pipe = Pipeline([BM25(k1=1.2, b=0.0), PRF(fb_docs=1), BM25(variant="okapi")]).fit(first40)
    alone = pipe(State.of(["cells"]))
    batch = pipe(State.of([SCIFACT_Q0, "cells"]))
    counts = alone.values["lexical_counts"][0].to_dict()
    assert counts["bone"] == counts["class"] == 38  # 37.5 exactly: half to even
    assert batch.values["lexical_counts"][1].to_dict() == counts
    assert batch.values["lexical_query"][1] == alone.values["lexical_query"][0]
    np.testing.assert_array_equal(batch.rankings[1].scores, alone.rankings[0].scores)
    _same_alone_as_in_batch(pipe, [SCIFACT_Q0, "cells"])


def test_prf_expansion_does_not_depend_on_the_batch_randomized(first40: Corpus, scifact) -> None:
    """Random batches of one-word queries (whose weights are simple fractions, often halves of a repetition) and
    SciFact test queries, in random order, under several bm25 / prf settings."""
    rng = np.random.default_rng(1)
    words = sorted({w for t in first40.texts for w in t.lower().split() if w.isalpha() and len(w) > 4})
    queries = list(scifact.queries("test").texts[:20])
    for _ in range(6):
        pipe = Pipeline([BM25(k1=float(rng.choice([0.9, 1.2, 2.0])), b=0.0), PRF(fb_docs=int(rng.integers(1, 3))),
                         BM25(variant="okapi")]).fit(first40)
        batch = [*rng.choice(words, 20).tolist(), *rng.choice(queries, 5).tolist()]
        _same_alone_as_in_batch(pipe, [batch[i] for i in rng.permutation(len(batch))])


def test_repetitions_round_a_half_the_same_way_whatever_its_last_bits() -> None:
    prf = PRF(resolution=1000)
    for eps in (-1e-12, 0.0, 1e-12):
        w = sp.csr_matrix(np.array([[0.0375 + eps, 0.9625 - eps], [0.0, 0.0]]))
        assert prf._repetitions(w).tolist() == [38.0, 962.0]  # 37.5 -> 38, 962.5 -> 962: half to even


# ----------------------------------------------------------------------------- 2. ranking discarded by a composite
@pytest.mark.parametrize("make,at,starts", [
    (lambda: Pipeline([BM25(), Parallel([_hash()])]), "pipeline[1].parallel", "pipeline[1].parallel.branches[0]"),
    (lambda: Pipeline([BM25(), TopK(k=5), Parallel([BM25(k1=0.0), _hash()])]), "pipeline[2].parallel",
     "pipeline[2].parallel.branches[1]"),
    (lambda: Pipeline([BM25(), Route(RuleRouter(rules=[{"label": "a", "max_words": 2}]), {"a": _hash()},
                                     default=_hash())]), "pipeline[1].route", "pipeline[1].route.default"),
    (lambda: Pipeline([BM25(), Loop(BM25(k=7), until=MaxOnly(), max_iters=2)]), "pipeline[1].loop",
     "pipeline[1].loop.body"),
])
def test_a_composite_every_path_of_which_retrieves_first_is_refused_after_a_retriever(make, at, starts) -> None:
    corpus = Corpus.from_texts(["red apples", "green pears", "red cars", "blue sky"])
    with pytest.raises(ConfigError) as e:
        make().fit(corpus)
    msg = str(e.value)
    assert e.value.path == at and msg.startswith(f"{at}: ") and "the ranking of pipeline[0].bm25" in msg, msg
    assert starts in msg and "discarded" in msg, msg


@pytest.mark.parametrize("steps,at", [
    ("[bm25: {}, parallel: {branches: [dense: {}, [top_k: {k: 5}, bm25: {}]]}]", "pipeline[1].parallel"),
    ("[dense: {}, mmr: {}, loop: {body: [top_k: {k: 3}, bm25: {}], until: {max_only: {}}}]", "pipeline[2].loop"),
    ("[bm25: {}, route: {router: {rule_router: {rules: [{label: a, max_words: 3}], default: b}}, "
     "branches: {a: [dense: {}], b: [loop: {body: [bm25: {}], until: {max_only: {}}}]}}]", "pipeline[1].route"),
    ("[bm25: {}, [parallel: {branches: [dense: {}, bm25: {}]}]]", "pipeline[1]"),
])
def test_nested_discarding_paths_are_refused_in_yaml(steps: str, at: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_yaml(f"pipeline: {steps}")
    msg = str(e.value)
    assert e.value.path == at and msg.startswith(f"{at}: ") and "discarded" in msg, msg


@pytest.mark.parametrize("steps", [
    "[bm25: {}, parallel: {branches: [dense: {}, top_k: {k: 5}]}]",  # a branch keeps (cuts) the ranking
    "[bm25: {}, parallel: {branches: [dense: {}, [mmr: {}, top_k: {k: 5}]]}]",  # a branch reranks it
    "[bm25: {}, parallel: {branches: [dense: {}, [prf: {}, bm25: {}]]}]",  # prf expands from it
    "[bm25: {}, loop: {body: [prf: {}, bm25: {}], until: {topk_stable: {}}}]",  # the standard RM3 loop
    "[bm25: {}, route: {router: {rule_router: {rules: [{label: a, max_words: 3}], default: b}}, "
    "branches: {a: [dense: {}], b: []}}]",  # a pass-through branch
    "[bm25: {}, route: {router: {rule_router: {rules: [{label: a, max_words: 3}]}}, "
    "branches: {a: [dense: {}]}, default: []}]",  # a pass-through default
    "[bm25: {}, route: {router: {score_router: {threshold: 1.0}}, branches: {easy: [dense: {}], hard: [dense: {}]}}]",
    "[parallel: {branches: [bm25: {}, dense: {}]}, top_k: {k: 5}]",
])
def test_composites_that_read_or_keep_the_ranking_are_accepted(steps: str) -> None:
    load_yaml(f"pipeline: {steps}")


# ----------------------------------------------------------------------------- 3. a prf nothing reads
@pytest.mark.parametrize("steps,at", [
    ("[bm25: {}, prf: {}]", "pipeline[1].prf"),
    ("[bm25: {}, prf: {}, top_k: {k: 5}]", "pipeline[1].prf"),
    ("[parallel: {branches: [[bm25: {}, prf: {}], bm25: {}]}]", "pipeline[0].parallel.branches[0][1].prf"),
    ("[bm25: {}, loop: {body: [top_k: {k: 5}, prf: {}], until: {max_only: {}}}]", "pipeline[1].loop.body[1].prf"),
])
def test_a_prf_that_nothing_after_it_reads_is_refused(steps: str, at: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_yaml(f"pipeline: {steps}")
    assert e.value.path == at and str(e.value).startswith(f"{at}: prf writes an expanded query"), str(e.value)
    assert "no retriever comes after it" in str(e.value)


def test_a_prf_that_nothing_reads_is_refused_at_fit() -> None:
    corpus = Corpus.from_texts(["red apples", "green pears", "red cars", "blue sky"])
    with pytest.raises(ConfigError, match=r"^pipeline\[1\]\.prf: prf writes an expanded query"):
        Pipeline([BM25(), PRF()]).fit(corpus)


@pytest.mark.parametrize("steps", [
    "[loop: {body: [bm25: {}, prf: {}], until: {topk_stable: {}}}]",  # the next iteration's bm25 reads it
    "[bm25: {}, loop: {body: [top_k: {k: 5}, prf: {}], until: {max_only: {}}}, bm25: {}]",  # the bm25 after
    "[loop: {body: [bm25: {}, loop: {body: [top_k: {k: 5}, prf: {}], until: {max_only: {}}}], "
    "until: {max_only: {}}}]",  # the outer body's bm25, in its next iteration
    "[parallel: {branches: [[bm25: {}, prf: {}], bm25: {}]}, bm25: {}]",  # the bm25 after the parallel
    "[prf: {}]",  # no retriever at all: refused by fit and search as such
])
def test_a_prf_read_later_is_accepted(steps: str) -> None:
    load_yaml(f"pipeline: {steps}")


class _ExpansionReader(Operator):
    """A step of one's own that reads the expanded query (declares it)."""

    name = "stop52_expansion_reader"
    kind = "reranker"
    stateless = True
    reads_lexical_query = True

    def _call(self, state: State) -> State:
        return state


def test_a_prf_read_by_a_step_that_declares_it_is_accepted() -> None:
    from ragkit.pipelines._checks import unranked_router

    assert unranked_router(Pipeline([BM25(), PRF(), _ExpansionReader()])) is None
    assert unranked_router(Pipeline([BM25(), PRF(), TopK(k=3)])) is not None
