"""Pipelines that ran silently as something else, refused before any work (YAML build, fit, search): a retriever
right after another (its ranking discarded), a ``prf`` with no ranking before it (it expanded nothing); a
retriever's ``filter`` value of another type than its field's, refused at fit start (was: after the whole fit,
or never for ``title``); nested loops' structural check in linear time (was: twice the walk per level)."""

from __future__ import annotations

import time

import pytest

from ragkit.errors import ConfigError, DataError
from ragkit.pipelines import PRF, Loop, Pipeline, TopKStable, _checks
from ragkit.pipelines.yaml import load_yaml
from ragkit.retrievers import BM25, Dense
from ragkit.types import Corpus, State

TEXTS = ["cats chase mice in the garden", "dogs chase cats", "the properties of bundles of fibres",
         "mice eat cheese", "a garden of roses and tulips", "fibre bundles have properties"]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.from_texts(TEXTS, year=[2010 + i for i in range(len(TEXTS))])


def refused(steps: str, path: str) -> str:
    """The message of the ConfigError that loading ``pipeline: <steps>`` raises, checked to be at ``path``."""
    with pytest.raises(ConfigError) as e:
        load_yaml(f"pipeline: {steps}")
    assert e.value.path == path and str(e.value).startswith(f"{path}: "), str(e.value)
    return str(e.value)


# ----------------------------------------------------------------------------- 1. a retriever after a retriever
@pytest.mark.parametrize("steps,first,second", [
    ("[bm25: {k: 50, variant: okapi}, bm25: {k: 10}]", "pipeline[0].bm25", "pipeline[1].bm25"),
    ("[bm25: {k: 1000}, dense: {k: 100}]", "pipeline[0].bm25", "pipeline[1].dense"),
    ("[dense: {}, muvera: {}, top_k: {k: 5}]", "pipeline[0].dense", "pipeline[1].muvera"),
    ("[bm25: {}, sharded: {retriever: {bm25: {}}}]", "pipeline[0].bm25", "pipeline[1].sharded"),
    ("[parallel: {branches: [[bm25: {}, knn_embed: {}], dense: {}]}]", "pipeline[0].parallel.branches[0][0].bm25",
     "pipeline[0].parallel.branches[0][1].knn_embed"),
    ("[bm25: {}, loop: {body: [prf: {}, bm25: {}, maxsim_exact: {}], until: {max_only: {}}}]",
     "pipeline[1].loop.body[1].bm25", "pipeline[1].loop.body[2].maxsim_exact"),
])
def test_a_retriever_right_after_another_is_refused(steps: str, first: str, second: str) -> None:
    """It searches the whole corpus again: [bm25 okapi k50, bm25 k10] gave exactly [bm25 k10]'s run, and
    [bm25 k1000, dense k100] dense's alone (not a rerank of bm25's candidates)."""
    msg = refused(steps, second)
    assert f"the ranking of {first} right before it is discarded" in msg
    assert "parallel: {branches: [" in msg and "reranker (maxsim, mmr)" in msg


def test_a_retriever_after_another_is_refused_before_any_fit(corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    fits: list[object] = []
    real = BM25._fit
    monkeypatch.setattr(BM25, "_fit", lambda self, *a: fits.append(self) or real(self, *a))
    with pytest.raises(ConfigError, match=r"^pipeline\[1\]\.dense: .*ranking of pipeline\[0\]\.bm25 right before"):
        Pipeline([BM25(k=50), Dense(k=10)]).fit(corpus)
    with pytest.raises(ConfigError, match=r"^pipeline\[1\]\.bm25: "):
        (BM25(k=50, variant="okapi") | BM25(k=10)).fit(corpus)
    assert fits == []
    fitted = BM25(k=5).fit(corpus)  # steps fitted on their own, searched as a pipeline: refused at search too
    with pytest.raises(ConfigError, match=r"^pipeline\[1\]\.bm25: "):
        Pipeline([fitted, fitted]).search(["cats"])


def test_retrievers_that_read_or_do_not_follow_a_ranking_are_accepted(corpus: Corpus) -> None:
    """A prf between them (it reads the ranking), a loop body's first retriever, parallel branches, and a
    retriever of a class of one's own (which may read what reaches it)."""
    for steps in ["[bm25: {}, prf: {}, bm25: {}]", "[bm25: {}, mmr: {}]",
                  "[loop: {body: [prf: {}, bm25: {}], until: {topk_stable: {}}}, dense: {}]",
                  "[parallel: {branches: [bm25: {}, dense: {}]}]", "[bm25: {}]"]:
        load_yaml(f"pipeline: {steps}")

    class Cascade(BM25):  # not the registered bm25: it may rerank what reaches it
        def _call(self, state: State) -> State:
            return state

    out = Pipeline([BM25(k=3), Cascade(k=2)]).fit(corpus).search(["cats mice garden"])
    first = Pipeline([BM25(k=3)]).fit(corpus).search(["cats mice garden"])
    # the first ranking, kept: accepted, and cut to the cascade's own k as any retriever's rankings are (e5ae9bf)
    assert out.doc_ids[0].tolist() == first.doc_ids[0][:2].tolist()


# ----------------------------------------------------------------------------- 2. prf with no ranking before it
def test_prf_with_no_retriever_before_it_is_refused(corpus: Corpus) -> None:
    """[prf, bm25] gave exactly bm25's rankings: prf had no ranking to expand from."""
    msg = refused("[prf: {}, bm25: {k: 10}]", "pipeline[0].prf")
    assert "put a retriever before it" in msg and "inside a loop's body" in msg
    refused("[[prf: {}], bm25: {}]", "pipeline[0]")
    refused("[parallel: {branches: [[prf: {}, bm25: {}], dense: {}]}]", "pipeline[0].parallel.branches[0][0].prf")
    refused("[route: {router: {rule_router: {rules: [{label: a, max_words: 3}], default: b}}, "
            "branches: {a: [prf: {}, bm25: {}], b: [bm25: {}]}}]", "pipeline[0].route.branches.a[0].prf")
    with pytest.raises(ConfigError, match=r"^pipeline\[0\]\.prf: prf expands each query"):
        Pipeline([PRF(), BM25()]).fit(corpus)


def test_prf_after_a_retriever_or_in_a_loop_body_is_accepted(corpus: Corpus) -> None:
    for steps in ["[bm25: {}, prf: {}, bm25: {}]", "[loop: {body: [prf: {}, bm25: {}], until: {topk_stable: {}}}]",
                  "[bm25: {}, route: {router: {rule_router: {rules: [{label: a, max_words: 3}], default: b}}, "
                  "branches: {a: [prf: {}, bm25: {}], b: []}}]",
                  "[prf: {}]"]:  # alone: a step applied to a state that has rankings
        load_yaml(f"pipeline: {steps}")
    run = Pipeline([Loop([PRF(fb_docs=2), BM25(k=3)], until=TopKStable(k=2), max_iters=2)]).fit(corpus).search(
        ["cats mice garden"])
    assert len(run.doc_ids[0]) == 3


# ----------------------------------------------------------------------------- 3. a filter value of another type
def test_a_filter_value_of_another_type_is_refused_at_fit_start(corpus: Corpus,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """year: "2015" on a field of integers failed only at the first search, after the whole fit (with dense,
    after encoding the corpus)."""
    fits: list[object] = []
    real = BM25._fit
    monkeypatch.setattr(BM25, "_fit", lambda self, *a: fits.append(self) or real(self, *a))
    pipe = load_yaml("pipeline: [parallel: {branches: [bm25: {k: 5}, bm25: {k: 5, filter: {year: '2015'}}]}]")
    with pytest.raises(DataError, match=r"^pipeline\[0\]\.parallel\.branches\[1\]\.bm25\.filter\.year: the field "
                                        r"holds int values; got '2015' \(str\).*give it as a number"):
        pipe.fit(corpus)
    with pytest.raises(DataError, match=r"^pipeline\[0\]\.bm25\.filter\.title: the field holds str values; got "
                                        r"2020 \(int\)"):
        load_yaml("pipeline: [bm25: {filter: {title: 2020}}]").fit(corpus)
    assert fits == []
    ok = load_yaml("pipeline: [bm25: {filter: {year: [2011, '2012']}}]").fit(corpus)  # one value of the field's type
    assert ok.search(["cats chase"]).doc_ids[0].tolist() == ["1"]


def test_a_title_filter_value_that_is_no_string_is_a_data_error(corpus: Corpus) -> None:
    """filter={"title": 2020} was never checked and gave an empty result (titles are strings)."""
    titled = Corpus(["a", "b"], ["cats", "dogs"], titles=["Cats", ""])
    with pytest.raises(DataError, match=r"^filter\.title: the field holds str values; got 2020 \(int\)"):
        titled.mask({"title": 2020})
    assert titled.mask({"title": "Cats"}).tolist() == [True, False]
    assert titled.mask({"title": [2020, "Cats"]}).tolist() == [True, False]  # one string among them: membership
    assert titled.mask({"title": None}).tolist() == [False, False]
    bm = BM25(k=5).fit(titled)
    with pytest.raises(DataError, match="filter.title: the field holds str values"):
        bm.search(["cats"], filter={"title": 2020})


# ----------------------------------------------------------------------------- 4. nested loops, checked linearly
def _nested_loops(n: int, body: str = "[prf: {}, bm25: {}]", before: str = "") -> str:
    for _ in range(n):
        body = f"[loop: {{body: {body}, until: {{topk_stable: {{}}}}, max_iters: 2}}]"
    return f"pipeline: [{before}{body[1:-1]}]" if before else f"pipeline: {body}"


def test_nested_loops_are_checked_in_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """_score_sources walked a loop's body twice, so each nesting level doubled the walk (depth 20: 3-7 s)."""
    calls = []
    real = _checks._score_sources

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_checks, "_score_sources", counted)
    pipe = load_yaml(_nested_loops(10))
    calls.clear()
    assert _checks.cosine_source_problem(pipe) is None
    assert len(calls) < 100, len(calls)  # was 2^10 walks of the innermost body (> 4,000 calls)
    monkeypatch.undo()
    t = time.perf_counter()
    load_yaml(_nested_loops(24))
    assert time.perf_counter() - t < 5.0  # was minutes


def test_nested_loops_still_see_their_own_last_iteration_scores() -> None:
    """The second walk is kept where the body brings scores of its own: a dbnorm at the start of the innermost
    body reads dense's cosines in the first iteration, then the body's bm25's."""
    for depth in (1, 3, 6):
        with pytest.raises(ConfigError, match=r"dbnorm reads the raw cosines .* come from .*body\[1\]\.bm25"):
            load_yaml(_nested_loops(depth, "[dbnorm: {}, bm25: {}]", before="dense: {}, "))
        load_yaml(_nested_loops(depth, "[dense: {}, dbnorm: {}]"))


# ----------------------------------------------------------------------------- 4. a route's own trace row
@pytest.mark.parametrize("steps,here", [
    ("[route: {router: {rule_router: {rules: [{label: short, max_words: 12}], default: long}}, "
    "branches: {short: [bm25: {}], long: [bm25: {variant: okapi}]}}]", "pipeline[0].route"),
    ("[bm25: {k: 100}, route: {router: {rule_router: {rules: [{label: short, max_words: 12}], default: long}}, "
    "branches: {short: [], long: [top_k: {k: 5}]}}]", "pipeline[1].route"),  # a pass-through branch: no row
])
def test_a_traced_route_reports_its_output_as_its_own_row(slice_data, steps: str, here: str) -> None:
    """The last trace row of a pipeline ending in a route was one branch's, over that label's queries only
    (nDCG@10 0.939 on 54 SciFact queries where evaluate said 0.886); a pass-through ``[]`` branch had no row.
    The route now has its own row, as a loop does: its output over all its queries, equal to evaluate's."""
    from ragkit import evaluate
    from ragkit.pipelines.trace import aggregate_trace

    corpus, queries, qrels, _ = slice_data
    pipe = load_yaml(f"pipeline: {steps}").fit(corpus)
    run = pipe.search(queries, trace=True, qrels=qrels)
    rows = aggregate_trace(run.trace)
    last = rows[-1]
    assert last.path == here and last.operator == "route" and last.inclusive, [r.path for r in rows]
    assert last.calls == 1 and last.queries == len(queries)
    scores = evaluate(run, qrels, ["ndcg@10", "recall@100"])
    assert last.ndcg == pytest.approx(scores["ndcg@10"], abs=1e-12)
    assert last.recall == pytest.approx(scores["recall@100"], abs=1e-12)
    assert last.seconds >= sum(r.seconds for r in rows if r.path.startswith(f"{here}."))
    branch_rows = [r for r in rows if r.path.startswith(f"{here}.branches.")]
    assert branch_rows and all(0 < r.queries < len(queries) for r in branch_rows)  # each on its label's queries
