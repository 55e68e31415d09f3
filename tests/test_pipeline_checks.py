"""Structural checks of what reaches a step, refused when a pipeline is built from YAML (``ragkit validate``)
and when a pipeline built in Python is fitted or searched, before any work: a ``prf`` whose expansion the next
retriever does not read (or reads with other text analysis), a ``dbnorm`` / ``cosine_adapter`` after scores that
are not cosines, a branch that retrieves nothing when nothing was retrieved before it, a ranking reader before
the first retriever, a route default that can never run; and the step paths of fit and search errors."""

from __future__ import annotations

import pytest

from ragkit import registry
from ragkit.errors import ConfigError, DataError, ParamError
from ragkit.filters import CosineAdapter, DBNorm, TopK
from ragkit.operator import Operator
from ragkit.pipelines import PRF, Parallel, Pipeline, Route, RuleRouter, ScoreRouter
from ragkit.pipelines._checks import unranked_router
from ragkit.pipelines.yaml import load_yaml
from ragkit.retrievers import BM25, Dense
from ragkit.types import Corpus, Queries, State, TrainSet


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    texts = ["cats chase mice in the garden", "dogs chase cats", "the properties of bundles of fibres",
             "mice eat cheese", "a garden of roses and tulips", "fibre bundles have properties"]
    return Corpus([f"d{i}" for i in range(len(texts))], texts)


def refused(yaml_steps: str, path: str, match: str | None = None) -> ConfigError:
    """The ConfigError loading ``pipeline: <yaml_steps>`` raises, checked to be at ``path``."""
    with pytest.raises(ConfigError, match=match) as e:
        load_yaml(f"pipeline: {yaml_steps}")
    assert e.value.path == path, str(e.value)
    assert str(e.value).startswith(path), str(e.value)
    return e.value


# ----------------------------------------------------------------------------- 1. prf and the bm25 that reads it
@pytest.mark.parametrize("field,value", [("stemmer", "none"), ("fields", "text"), ("tokenizer", "unicode"),
                                         ("stopwords", "none")])
def test_prf_analysis_must_be_that_of_the_bm25_reading_it(field, value):
    e = refused(f"[bm25: {{{field}: {value}}}, prf: {{}}, bm25: {{{field}: {value}}}]", f"pipeline[1].prf.{field}",
                match=rf"pipeline\[2\]\.bm25, which reads its expanded query, with {field}: {value}")
    assert f"give prf the same ({field}: {value})" in str(e)
    load_yaml(f"pipeline: [bm25: {{{field}: {value}}}, prf: {{{field}: {value}}}, bm25: {{{field}: {value}}}]")
    # the bm25 that reads it is the next one, not the one that ranked the feedback documents
    load_yaml(f"pipeline: [bm25: {{}}, prf: {{{field}: {value}}}, bm25: {{{field}: {value}}}]")
    # in a loop's body: the retriever after it, else the body's first (the next iteration's)
    refused(f"[loop: {{body: [prf: {{}}, bm25: {{{field}: {value}}}], until: {{max_only: {{}}}}}}]",
            f"pipeline[0].loop.body[0].prf.{field}")
    refused(f"[loop: {{body: [bm25: {{{field}: {value}}}, prf: {{}}], until: {{max_only: {{}}}}}}]",
            f"pipeline[0].loop.body[1].prf.{field}")
    # a sharded bm25 reads it too
    refused(f"[bm25: {{}}, prf: {{}}, sharded: {{retriever: {{bm25: {{{field}: {value}}}}}}}]",
            f"pipeline[1].prf.{field}")


@pytest.mark.parametrize("after", ["dense: {k: 50}", "muvera: {k: 50}", "knn_embed: {k: 50}",
                                   "parallel: {branches: [dense: {}, muvera: {}]}"])
def test_prf_before_a_retriever_that_does_not_read_its_expansion_is_refused(after):
    e = refused(f"[bm25: {{k: 50}}, prf: {{fb_docs: 5}}, {after}]", "pipeline[1].prf",
                match="only bm25 reads, but the next retriever after it, pipeline\\[2\\]")
    assert "prf would change nothing" in str(e)


def test_prf_pipelines_that_are_read_by_a_bm25_are_accepted():
    for steps in ["[bm25: {}, prf: {}, bm25: {}]",
                  "[bm25: {}, prf: {}, sharded: {retriever: {bm25: {}}}]",
                  "[bm25: {}, prf: {}, top_k: {k: 5}, bm25: {}]",
                  "[bm25: {}, prf: {}, parallel: {branches: [bm25: {}, dense: {}]}]",  # its bm25 branch reads it
                  "[loop: {body: [prf: {}, bm25: {}], until: {topk_stable: {k: 10}}}]",
                  "[loop: {body: [bm25: {}, prf: {}], until: {topk_stable: {k: 10}}}]",
                  "[bm25: {}, route: {router: {rule_router: {rules: [{label: a, max_words: 3}], default: b}}, "
                  "branches: {a: [prf: {}], b: []}}, bm25: {}]"]:
        load_yaml(f"pipeline: {steps}")


@pytest.mark.parametrize("composite", [
    "route: {router: {rule_router: {rules: [{label: a, max_words: 3}], default: b}}, branches: {a: [prf: {}], b: []}}",
    "parallel: {branches: [[prf: {}], [top_k: {k: 5}]]}"])
def test_a_prf_in_a_branch_is_checked_against_the_retriever_after_its_composite(composite):
    """A prf in a route or parallel branch with no retriever after it in the branch was not checked, though a
    branch's lexical_query travels on to the bm25 after the composite (here one that does not stem)."""
    where = ("pipeline[1].route.branches.a[0]" if composite.startswith("route")
             else "pipeline[1].parallel.branches[0][0]")
    refused(f"[bm25: {{}}, {composite}, bm25: {{stemmer: none}}]", f"{where}.prf.stemmer",
            match="prf analyses text with stemmer: porter but pipeline\\[2\\]\\.bm25")


def test_prf_checks_in_python_at_fit_before_anything_is_fitted(corpus):
    first = BM25(stemmer="none")
    pipe = first | PRF() | BM25(stemmer="none")
    with pytest.raises(ConfigError, match=r"^pipeline\[1\]\.prf\.stemmer: prf analyses text with stemmer: porter"):
        pipe.fit(corpus)
    assert not first.is_fitted
    (first | PRF(stemmer="none") | BM25(stemmer="none")).fit(corpus)
    with pytest.raises(ConfigError, match=r"^pipeline\[1\]\.prf: prf writes an expanded query"):
        (BM25() | PRF() | Dense()).fit(corpus)


# ----------------------------------------------------------------------------- 2. cosine readers
@pytest.mark.parametrize("steps,path,source", [
    ("[bm25: {}, dbnorm: {query_bank: pseudo}]", "pipeline[1].dbnorm", r"pipeline\[0\]\.bm25 \(bm25 scores"),
    ("[bm25: {}, cosine_adapter: {}]", "pipeline[1].cosine_adapter", r"pipeline\[0\]\.bm25 \(bm25 scores"),
    ("[parallel: {branches: [bm25: {}, dense: {}], fuse: {rrf: {}}}, cosine_adapter: {}]",
     "pipeline[1].cosine_adapter", r"pipeline\[0\]\.parallel \(scores fused by rrf"),
    ("[dense: {metric: ip}, dbnorm: {query_bank: pseudo}]", "pipeline[1].dbnorm",
     r"pipeline\[0\]\.dense with metric: ip"),
    ("[muvera: {}, top_k: {k: 5}, cosine_adapter: {}]", "pipeline[2].cosine_adapter", r"pipeline\[0\]\.muvera"),
    ("[dense: {}, bm25: {}, dbnorm: {}]", "pipeline[2].dbnorm", r"pipeline\[1\]\.bm25"),
    ("[sharded: {retriever: {bm25: {}}}, dbnorm: {}]", "pipeline[1].dbnorm", r"pipeline\[0\]\.sharded"),
    ("[route: {router: {rule_router: {rules: [{label: short, max_words: 3}], default: long}}, "
     "branches: {short: [dense: {}], long: [bm25: {}]}}, dbnorm: {}]", "pipeline[1].dbnorm",
     r"pipeline\[0\]\.route\.branches\.long\[0\]\.bm25"),
    ("[bm25: {}, loop: {body: [dbnorm: {}, dense: {}], until: {max_only: {}}}]",
     "pipeline[1].loop.body[0].dbnorm", r"pipeline\[0\]\.bm25"),
    # a step that writes scores of its own in between (accepted, then refused at the first search)
    ("[dense: {}, mmr: {}, dbnorm: {}]", "pipeline[2].dbnorm", r"pipeline\[1\]\.mmr \(mmr scores"),
    ("[dense: {}, maxsim: {}, dbnorm: {}]", "pipeline[2].dbnorm", r"pipeline\[1\]\.maxsim"),
    ("[dense: {}, dbnorm: {}, cosine_adapter: {}]", "pipeline[2].cosine_adapter", r"pipeline\[1\]\.dbnorm"),
    ("[dense: {}, cosine_adapter: {}, dbnorm: {}]", "pipeline[2].dbnorm", r"pipeline\[1\]\.cosine_adapter"),
])
def test_cosine_readers_after_scores_that_are_not_cosines_are_refused(steps, path, source):
    refused(steps, path, match=rf"reads the raw cosines .* but the scores reaching it come from {source}")


def test_cosine_readers_after_cosines_are_accepted():
    for steps in ["[dense: {}, dbnorm: {}]", "[dense: {}, top_k: {k: 5}, cosine_adapter: {}]",
                  "[knn_embed: {}, dbnorm: {}]", "[sharded: {retriever: {dense: {}}}, dbnorm: {}]",
                  "[parallel: {branches: [[dense: {}, cosine_adapter: {}], bm25: {}]}]",
                  "[dense: {}, parallel: {branches: [[dbnorm: {}], bm25: {}]}]",
                  "[cosine_adapter: {}]",  # alone (Operator.to_yaml's file): nothing to check it against
                  "[loop: {body: [dense: {}, dbnorm: {}], until: {max_only: {}}}]"]:
        load_yaml(f"pipeline: {steps}")


def test_cosine_reader_checks_in_python_before_any_fit(corpus):
    first = BM25()
    with pytest.raises(ConfigError, match=r"^pipeline\[1\]\.dbnorm: dbnorm reads the raw cosines"):
        (first | DBNorm(query_bank="pseudo")).fit(corpus)
    assert not first.is_fitted
    train = TrainSet(Queries(["q1"], ["cats"]), {"q1": {"d1": 1}})
    with pytest.raises(ConfigError, match=r"^pipeline\[1\]\.cosine_adapter: .* pipeline\[0\]\.parallel"):
        (Parallel([BM25(), Dense()]) | CosineAdapter()).fit(corpus, train)


class _Boom(Operator):
    """A filter whose call fails on the data it gets."""

    name = "boom_test"
    kind = "filter"
    stateless = True

    def _call(self, state: State) -> State:
        raise DataError("boom_test expects something else")


def test_a_data_error_at_search_names_the_step(corpus):
    pipe = Pipeline([BM25(), Parallel([TopK(k=50), Pipeline([BM25(k=3), _Boom()])])]).fit(corpus)
    with pytest.raises(DataError, match=r"^pipeline\[1\]\.parallel\.branches\[1\]\[1\]\.boom_test: boom_test "
                                        r"expects something else$"):
        pipe.search(["cats"])


# ----------------------------------------------------------------------------- 3. branches that retrieve nothing
_RULE = "{rule_router: {rules: [{label: short, max_words: 6}], default: other}}"


@pytest.mark.parametrize("steps,path", [
    (f"[route: {{router: {_RULE}, branches: {{short: [bm25: {{}}], other: []}}}}]",
     "pipeline[0].route.branches.other"),
    (f"[route: {{router: {_RULE}, branches: {{short: [bm25: {{}}]}}, default: []}}]", "pipeline[0].route.default"),
    (f"[route: {{router: {_RULE}, branches: {{short: [bm25: {{}}], other: [top_k: {{k: 5}}]}}}}]",
     "pipeline[0].route.branches.other"),
    ("[parallel: {branches: [bm25: {}, top_k: {k: 5}], fuse: {rrf: {weights: [0.5, 0.5]}}}]",
     "pipeline[0].parallel.branches[1]"),
])
def test_a_branch_without_retriever_with_nothing_retrieved_before_is_refused(steps, path):
    refused(steps, path, match="which retrieves nothing, and no step before this (route|parallel) retrieves")


def test_branches_without_retriever_after_a_retriever_are_accepted(corpus):
    load_yaml(f"pipeline: [bm25: {{}}, route: {{router: {_RULE}, branches: {{short: [dense: {{}}], other: []}}}}]")
    load_yaml(f"pipeline: [bm25: {{}}, route: {{router: {_RULE}, branches: {{short: [top_k: {{k: 3}}]}}, "
              "default: []}]")
    load_yaml("pipeline: [bm25: {}, parallel: {branches: [dense: {}, top_k: {k: 5}]}]")
    # in a loop's body a branch without a retriever fuses the previous iteration's ranking with a new search
    # (refused since the last stop, though it ran: 20 results per query)
    load_yaml("pipeline: [loop: {body: [parallel: {branches: [[top_k: {k: 20}], [prf: {}, bm25: {}]]}], "
              "until: {topk_stable: {}}, max_iters: 3}]")
    with pytest.raises(ConfigError, match=r"^pipeline\[0\]\.parallel\.branches\[1\]: a branch of top_k only"):
        Pipeline([Parallel([BM25(), TopK(k=3)])]).fit(corpus)
    route = Route(RuleRouter(rules=[{"label": "short", "max_words": 6}], default="other"), {"short": BM25()},
                  default=[])
    with pytest.raises(ConfigError, match=r"^pipeline\[0\]\.route\.default: an empty \(pass-through\) branch"):
        Pipeline([route]).search(["cats"])


# ----------------------------------------------------------------------------- 4. ranking readers before a retriever
@pytest.mark.parametrize("reader", ["maxsim: {k: 5}", "top_k: {k: 5}", "score_threshold: {threshold: 1000.0}",
                                    "relative_threshold: {alpha: 0.99}", "mmr: {k: 5}", "dbnorm: {}"])
def test_ranking_readers_before_the_first_retriever_are_refused(reader):
    name = reader.split(":")[0]
    refused(f"[{reader}, bm25: {{k: 50}}]", f"pipeline[0].{name}",
            match=rf"{name} \((reranker|filter)\) works on the rankings of the steps before it")
    load_yaml(f"pipeline: [bm25: {{k: 50}}, {reader.replace('dbnorm', 'top_k')}]")  # after it: fine
    refused("[cosine_adapter: {}, dense: {}]", "pipeline[0].cosine_adapter")


def test_every_reranker_and_filter_reads_rankings():
    kinds = {name: registry.get(name) for name in registry.names()}
    readers = [n for n, cls in kinds.items() if cls.kind in ("reranker", "filter")]
    assert {"maxsim", "top_k", "score_threshold", "relative_threshold", "cosine_adapter", "mmr",
            "dbnorm"} <= set(readers)
    assert [n for n in readers if not kinds[n].reads_rankings] == []


# ----------------------------------------------------------------------------- 5. fit errors name the step
def test_train_refusals_name_the_step(corpus):
    with pytest.raises(ParamError, match=r"^pipeline\[0\]\.parallel\.fuse\.weighted\.norm: 'learn' chooses") as e:
        load_yaml("pipeline: [parallel: {branches: [bm25: {}, bm25: {variant: okapi}], "
                  "fuse: {weighted: {learn: true, norm: learn}}}]").fit(corpus)
    assert e.value.path == "pipeline[0].parallel.fuse.weighted.norm"
    with pytest.raises(DataError, match=r"^pipeline\[0\]\.parallel\.branches\[1\]\[1\]\.cosine_adapter: "
                                        r"cosine_adapter\.fit needs judged training queries"):
        load_yaml("pipeline: [parallel: {branches: [bm25: {}, [dense: {k: 50}, cosine_adapter: {}]]}]").fit(corpus)
    with pytest.raises(ParamError, match=r"^pipeline\[1\]\.route\.router\.score_router\.learn: the threshold is "
                                         r"learned"):
        load_yaml("pipeline: [bm25: {}, route: {router: {score_router: {learn: true}}, "
                  "branches: {easy: [], hard: [top_k: {k: 3}]}}]").fit(corpus)


class _BadFit(Operator):
    """A retriever whose fit refuses one of its parameters, naming it as operators do (``name.param: ...``)."""

    name = "badfit_test"
    kind = "retriever"

    def _fit(self, corpus, train, upstream):  # noqa: ANN001
        raise ParamError("badfit_test.reduce: too many components", path="badfit_test.reduce")


def test_a_fit_error_naming_a_parameter_is_placed_once(corpus):
    with pytest.raises(ParamError, match=r"^pipeline\[1\]\.parallel\.branches\[1\]\.badfit_test\.reduce: too many "
                                         r"components$") as e:
        Pipeline([BM25(), Parallel([BM25(), _BadFit()])]).fit(corpus)
    assert e.value.path == "pipeline[1].parallel.branches[1].badfit_test.reduce"


# ----------------------------------------------------------------------------- 10. a route default that never runs
def test_a_route_default_that_can_never_run_is_refused():
    refused("[bm25: {}, route: {router: {score_router: {threshold: 0.5}}, branches: {easy: [], hard: [top_k: {k: 3}]},"
            " default: [top_k: {k: 5}]}]", "pipeline[1].route.default", match="the default can never run")
    with pytest.raises(ParamError, match=r"^route\.default: the default can never run: router 'score_router' "
                                         r"labels queries only \['easy', 'hard'\]"):
        Route(ScoreRouter(threshold=0.5), {"easy": [], "hard": TopK(k=3)}, default=TopK(k=5))
    # a default that serves a label with no branch is reachable
    Route(ScoreRouter(threshold=0.5), {"easy": []}, default=TopK(k=5))
    load_yaml("pipeline: [bm25: {}, route: {router: {score_router: {threshold: 0.5}}, branches: {easy: []}, "
              "default: [top_k: {k: 5}]}]")


def test_unranked_router_is_the_checks_entry_point():
    assert unranked_router(BM25() | PRF() | BM25()) is None
    assert unranked_router(BM25() | PRF() | Dense()).path == "pipeline[1].prf"
    # search leaves the prf check out (a pipeline of steps fitted on their own); fit and YAML make it
    assert unranked_router(BM25() | PRF() | Dense(), expansions=False) is None
    # problems inside a step are reported before the order of the steps
    assert unranked_router(Pipeline([TopK(), Pipeline([DBNorm(), BM25()])])).path == "pipeline[1][0].dbnorm"
    assert unranked_router(Pipeline([TopK(), BM25()])).path == "pipeline[0].top_k"
