"""Learning from the training split: fused weights, no test data in fit, reproducible, saved."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from ragkit.cli import app
from ragkit.eval import write_beir
from ragkit.operator import Operator
from ragkit.params import Params
from ragkit.pipelines import Pipeline
from ragkit.pipelines.weights import simplex_grid

PIPE = """
pipeline:
  - parallel:
      branches:
        - bm25: {k: 50}
        - bm25: {k: 50, variant: okapi, k1: 1.5, b: 0.75, stemmer: none, stopwords: none}
      fuse: {rrf: {learn: true, folds: 3}}
"""


def test_simplex_grid():
    import itertools
    from math import comb

    g = simplex_grid(3, 0.5)
    assert len(g) == 6 and np.allclose(g.sum(axis=1), 1)
    # the same points, in the same (lexicographic) order, as the filtered product it replaces
    for n, step in ((1, 0.5), (2, 0.1), (4, 0.25), (5, 0.1)):
        m = int(round(1 / step))
        ref = [c for c in itertools.product(range(m + 1), repeat=n) if sum(c) == m]
        np.testing.assert_array_equal(simplex_grid(n, step), np.array(ref, np.float64) / m)
    # 12 branches at step 0.1: 352,716 points, without walking 11 ** 12 tuples
    assert simplex_grid(12, 0.1).shape == (comb(21, 11), 12)


def test_learned_weights_reproducible_and_saved(slice_data, tmp_path):
    corpus, queries, qrels, train = slice_data
    a = Pipeline.from_yaml(PIPE).fit(corpus, train)
    b = Pipeline.from_yaml(PIPE).fit(corpus, train)
    wa, wb = a.steps[0].fuse.weights_, b.steps[0].fuse.weights_
    np.testing.assert_array_equal(wa, wb)
    assert np.isclose(wa.sum(), 2.0)  # the fuser's scale: as many as the branches' unlearned weights of 1
    # the learned weights favour the better branch (lucene BM25 over unstemmed okapi, on these
    # training queries) and the report is what running the pipeline gives
    from ragkit.eval import evaluate

    def train_ndcg(pipe):
        return evaluate(pipe.search(train.queries), train.qrels, ["ndcg@10"])["ndcg@10"]

    branch = [evaluate(Pipeline.from_yaml(PIPE).fit(corpus).steps[0].branches[i].search(train.queries), train.qrels,
                       ["ndcg@10"])["ndcg@10"] for i in (0, 1)]
    assert branch[0] > branch[1] and wa[0] > 0.5
    assert train_ndcg(a) == pytest.approx(a.steps[0].fuse.learned_["train_ndcg@10"], abs=1e-9)
    assert train_ndcg(a) > train_ndcg(Pipeline.from_yaml(PIPE.replace("learn: true, folds: 3", "")).fit(corpus))
    a.save(tmp_path / "p")
    loaded = Pipeline.load(tmp_path / "p")
    np.testing.assert_array_equal(loaded.steps[0].fuse.weights_, wa)
    for r1, r2 in zip(a.search(queries).rankings, loaded.search(queries).rankings):
        np.testing.assert_array_equal(r1.rows, r2.rows)


def test_without_train_nothing_is_learned(slice_data):
    """Fresh or refitted: a fit without judged queries holds no learned weights (a refit kept the
    old ones, so ``ragkit train``'s "unlearned" row of a saved pipeline had seen every query)."""
    corpus, queries, _, train = slice_data
    p = Pipeline.from_yaml(PIPE).fit(corpus)
    assert not hasattr(p.steps[0].fuse, "weights_")
    unlearned = [r.rows.tolist() for r in p.search(queries).rankings]
    p.fit(corpus, train)
    assert hasattr(p.steps[0].fuse, "weights_")
    p.fit(corpus)
    assert not any(hasattr(p.steps[0].fuse, a) for a in ("weights_", "learned_", "option_"))
    assert [r.rows.tolist() for r in p.search(queries).rankings] == unlearned


def test_learning_weights_without_any_judged_training_query_says_so(slice_data):
    import pytest

    from ragkit.errors import DataError
    from ragkit.types import Queries, TrainSet

    corpus, _, _, train = slice_data
    # refused when the training set is made, before any fit (the fit's own check came after the retrievers)
    with pytest.raises(DataError, match=r"none of the queries judged positive in the qrels .* is one of the 40 "
                                        r"training queries \('x"):
        TrainSet(Queries([f"x{q}" for q in train.queries.ids], train.queries.texts), train.qrels)


def test_judgements_naming_no_document_of_the_corpus_are_refused_before_learning(slice_data):
    """Qrels of another corpus (no judged document in this one) learned uniform weights from nDCG 0
    everywhere, without a word; now refused before anything is fitted, naming ids of both sides."""
    from ragkit.errors import DataError
    from ragkit.pipelines.yaml import load_yaml
    from ragkit.types import TrainSet

    corpus, _, _, train = slice_data
    other = TrainSet(train.queries, {q: {f"other-{d}": v for d, v in rel.items()} for q, rel in train.qrels.items()})
    pipe = load_yaml(PIPE)
    with pytest.raises(DataError, match=r"none of the \d+ documents judged relevant .* \('other-.* is in the corpus "
                                        r"of \d+ documents"):
        pipe.fit(corpus, other)
    assert not pipe.steps[0].branches[0].is_fitted  # refused before the first retriever was built
    pipe.fit(corpus)  # nothing learns without judgements: nothing to check


def test_one_judged_training_query_is_refused_before_learning_weights(slice_data):
    """Cross-validation needs two judged queries; with one, a fold trained on nothing (numpy warned
    "Mean of empty slice") and its held-out score was reported as an honest estimate."""
    from ragkit.errors import DataError
    from ragkit.pipelines.yaml import load_yaml
    from ragkit.types import TrainSet

    corpus, _, _, train = slice_data
    pipe = load_yaml(PIPE)
    with pytest.raises(DataError, match=r"pipeline\[0\]\.parallel\.fuse\.rrf: .* needs at least 2; the train set "
                                        r"has 1 usable \(with a relevant document in the corpus\) \('"):
        pipe.fit(corpus, TrainSet(train.queries[:1], train.qrels))
    assert not pipe.steps[0].branches[0].is_fitted  # refused before the first retriever was built


@pytest.mark.parametrize("n", [3, 5])
def test_identical_branches_learn_equal_weights_and_the_baseline_is_uniform(n):
    """1/3 is not on the 0.1 grid and no 0.25 point gives 5 branches all a weight: equally good
    branches learned (0.3, 0.4, 0.3) or dropped one, and the reported uniform baseline was (0.3, 0.3, 0.4)'s."""
    from ragkit.eval.metrics import per_query_ndcg
    from ragkit.pipelines.fusion import RRF
    from ragkit.pipelines.weights import learn_weights
    from ragkit.types import Ranking, State

    rng = np.random.default_rng(5)
    ids = np.array([f"d{i}" for i in range(40)])
    qids = [f"q{i}" for i in range(30)]
    same = [Ranking(rng.permutation(40)[:15], np.linspace(1, 0, 15).astype(np.float32)) for _ in qids]
    st = State(list(qids), query_ids=list(qids), branches=[(f"b{i}", same) for i in range(n)])
    qrels = {q: {ids[same[i].rows[3]]: 1} for i, q in enumerate(qids)}
    prep = RRF()._prepare(st, with_fields=False)
    res = learn_weights(lambda s, w: prep(w, None), st, qrels, ids, folds=5)
    np.testing.assert_allclose(res.weights, np.full(n, 1 / n))
    # different branches: the baseline is the fusion with equal weights
    br = [(f"b{i}", [Ranking(rng.permutation(40)[:15], np.linspace(1, 0, 15).astype(np.float32)) for _ in qids])
          for i in range(n)]
    st = State(list(qids), query_ids=list(qids), branches=br)
    qrels = {q: {ids[br[i % n][1][i].rows[j]]: 1 for j in (0, 4, 9)} for i, q in enumerate(qids)}
    prep = RRF()._prepare(st, with_fields=False)
    res = learn_weights(lambda s, w: prep(w, None), st, qrels, ids, folds=5)
    uniform = st.copy()
    uniform.rankings = prep(np.full(n, 1 / n), None)
    assert res.baseline_ndcg == pytest.approx(per_query_ndcg(uniform, qrels, ids).mean(), abs=1e-12)


def test_a_learning_fuser_with_a_short_top_k_learns_what_it_returns(slice_data):
    """With top_k 1 the weights were chosen (and train nDCG@10 reported) on the uncut fused union."""
    from ragkit.eval import evaluate

    corpus, _, _, train = slice_data
    pipe = Pipeline.from_yaml(PIPE.replace("folds: 3", "folds: 3, top_k: 1")).fit(corpus, train)
    got = evaluate(pipe.search(train.queries), train.qrels, ["ndcg@10"])["ndcg@10"]
    assert pipe.steps[0].fuse.learned_["train_ndcg@10"] == pytest.approx(got, abs=1e-9)


def test_poisoned_test_qrels_change_nothing(slice_data, tmp_path):
    """``ragkit train`` on a dataset whose test qrels are poisoned saves exactly the same pipeline."""
    corpus, test_q, test_qrels, train = slice_data
    queries = dict(zip(train.queries.ids, train.queries.texts)) | dict(zip(test_q.ids, test_q.texts))
    clean = tmp_path / "clean"
    write_beir(clean, corpus, queries, {"train": train.qrels, "test": test_qrels})
    poisoned = tmp_path / "poisoned"
    rng = np.random.default_rng(0)
    bad = {q: {str(d): 1 for d in rng.choice(corpus.ids, 5, replace=False)} for q in test_qrels}
    write_beir(poisoned, corpus, queries, {"train": train.qrels, "test": bad})
    (tmp_path / "p.yaml").write_text(PIPE)
    runner = CliRunner()
    for name in ("clean", "poisoned"):
        res = runner.invoke(app, ["train", "--data", str(tmp_path / name), "--pipeline", str(tmp_path / "p.yaml"),
                                  "--out", str(tmp_path / f"out-{name}"), "--no-report"])
        assert res.exit_code == 0, res.output
    w1 = np.load(next((tmp_path / "out-clean").rglob("weights.npy")))
    w2 = np.load(next((tmp_path / "out-poisoned").rglob("weights.npy")))
    np.testing.assert_array_equal(w1, w2)


def test_train_refuses_test_split(tmp_path):
    res = CliRunner().invoke(app, ["train", "--data", "x", "--pipeline", "bm25", "--out", str(tmp_path / "o"),
                                   "--split", "test"])
    assert res.exit_code == 2 and "test split is refused" in res.output
    # a broken pipeline is named before the dataset is read (a dataset name would be downloaded first)
    (tmp_path / "p.yaml").write_text("pipeline:\n  - bm25: {kk: 1}\n")
    res = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "no-such-data"), "--pipeline",
                                   str(tmp_path / "p.yaml"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "bm25.kk" in res.output and "no-such-data" not in res.output, res.output


def test_weighted_fusion_learns_its_normalisation(slice_data, tmp_path):
    """norm: learn tries minmax, zscore and none, each with its own weight search, and keeps the best by CV."""
    import pytest

    from ragkit.errors import ParamError

    corpus, queries, _, train = slice_data
    spec = PIPE.replace("rrf: {learn: true, folds: 3}", "weighted: {learn: true, norm: learn, folds: 3}")
    pipe = Pipeline.from_yaml(spec).fit(corpus, train)
    fuse = pipe.steps[0].fuse
    assert fuse.norm in ("minmax", "zscore", "none") and fuse.learned_["norm"] == fuse.norm
    tried = {}
    for norm in ("minmax", "zscore", "none"):
        fixed = Pipeline.from_yaml(spec.replace("norm: learn", f"norm: {norm}")).fit(corpus, train)
        tried[norm] = fixed.steps[0].fuse.learned_["cv_ndcg@10"]
    assert fuse.learned_["cv_ndcg@10"] == max(tried.values())
    pipe.save(tmp_path / "p")
    loaded = Pipeline.load(tmp_path / "p")
    assert loaded.steps[0].fuse.norm == fuse.norm
    for r1, r2 in zip(pipe.search(queries).rankings, loaded.search(queries).rankings):
        np.testing.assert_array_equal(r1.rows, r2.rows)
    with pytest.raises(ParamError, match="learn: ?true"):
        Pipeline.from_yaml(spec.replace("learn: true, norm", "norm"))


def test_train_reports_each_step_on_a_held_out_fold(slice_beir, tmp_path):
    (tmp_path / "p.yaml").write_text(PIPE)
    res = CliRunner().invoke(app, ["train", "--data", str(slice_beir), "--pipeline", str(tmp_path / "p.yaml"),
                                   "--out", str(tmp_path / "out")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "held-out 8 of 40 train queries" in res.output and "what each step does" in res.output
    rows = [ln for ln in res.output.splitlines() if "pipeline[0].parallel.branches[0].bm25" in ln]
    assert rows and len([c for c in rows[0].split("│") if c.strip()]) == 5   # step + 2 columns per run
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_operators_say_when_they_need_judged_queries():
    """``needs_train`` comes from the parameters: what ``ragkit train`` asks before an unlearned fit."""
    from ragkit.pipelines._compose import iter_leaves

    def needs(spec: str) -> list[str]:
        return [op.name for op in iter_leaves(Pipeline.from_yaml(spec)) if op.needs_train]

    assert needs(PIPE) == []                                   # learned RRF weights are optional
    assert needs(PIPE.replace("rrf: {learn: true, folds: 3}", "weighted: {learn: true, norm: learn}")) == ["weighted"]
    assert needs("pipeline: [{parallel: {branches: [{dense: {adapt: {epochs: 1.0}}}, "
                 "{muvera: {adapt: {epochs: 1.0}}}]}}]") == ["dense", "muvera"]
    assert needs("pipeline: [{bm25: {}}, {route: {router: {score_router: {learn: true}}, "
                 "branches: {easy: [{top_k: {k: 5}}], hard: [{top_k: {k: 9}}]}}}]") == ["score_router"]


def test_train_report_skips_the_unlearned_row_of_a_filter_that_always_learns(slice_beir, tmp_path):
    """cosine_adapter fits only with judged queries, so ``needs_train`` says so and ``ragkit train``'s report
    skips the unlearned row (it said False, and the command died fitting the unlearned pipeline)."""
    (tmp_path / "p.yaml").write_text("pipeline: [{dense: {k: 20}}, {cosine_adapter: {max_iter: 50}}]\n")
    res = CliRunner().invoke(app, ["train", "--data", str(slice_beir), "--pipeline", str(tmp_path / "p.yaml"),
                                   "--out", str(tmp_path / "out")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "unlearned: skipped" in res.output and (tmp_path / "out" / "manifest.json").is_file()


def _stopping_by_hand(features: np.ndarray, gains: np.ndarray, cost: float) -> tuple[float, float, float]:
    """The judge's threshold choice, one candidate and one query at a time (plain Python)."""
    iters, n = features.shape
    cands = sorted({float(v) for v in features.ravel() if np.isfinite(v)}) + [float("inf")]
    best = None
    for t in cands:
        stops = []
        for q in range(n):
            stops.append(next((i for i in range(iters) if features[i, q] >= t), iters - 1))
        gain = sum(float(gains[s, q]) for q, s in enumerate(stops)) / n if n else 0.0
        mean_iters = sum(s + 1 for s in stops) / n if n else 1.0
        key = (-round(gain - cost * mean_iters, 12), mean_iters)
        if best is None or key < best[0]:
            best = (key, t, gain, mean_iters, stops)
    # one-sided: every query stops at its first iteration with a feature (-inf, NaN: none; it goes on), or at the
    # last, learns -inf / inf (when some query has a feature before its last iteration)
    first = [next((i for i in range(iters) if features[i, q] > -np.inf), iters - 1) for q in range(n)]
    t = best[1]
    if n and iters > 1 and best[4] == first and first != [iters - 1] * n:
        t = -np.inf
    elif n and iters > 1 and best[4] == [iters - 1] * n:
        t = np.inf
    return t, best[2], best[3]


@pytest.mark.parametrize("iters,n,cost,seed", [(1, 5, 0.0, 0), (3, 40, 0.0, 1), (3, 40, 0.02, 2), (5, 200, 0.01, 3),
                                               (4, 0, 0.0, 4), (2, 30, 0.5, 5)])
def test_score_reached_learns_the_threshold_a_plain_search_finds(iters, n, cost, seed):
    """learn_stopping's one-sweep scoring of every candidate equals trying each one by hand
    (ties in the features, unreachable -inf and NaN features, a cost per iteration)."""
    from ragkit.pipelines import ScoreReached

    rng = np.random.default_rng(seed)
    features = rng.integers(0, 6, (iters, n)).astype(np.float64)  # few values: many ties
    features[rng.random((iters, n)) < 0.1] = -np.inf
    features[rng.random((iters, n)) < 0.05] = np.nan  # never reaches a threshold, as in _call
    gains = rng.random((iters, n))
    judge = ScoreReached(learn=True, cost=cost)
    judge.learn_stopping(features, gains)
    t, gain, mean_iters = _stopping_by_hand(features, gains, cost)
    assert judge.threshold_ == t
    assert judge.learned_["train_ndcg@10"] == pytest.approx(gain, abs=1e-12)
    assert judge.learned_["mean_iterations"] == pytest.approx(mean_iters, abs=1e-12)


ROUTE = """
pipeline:
  - bm25: {k: 30}
  - route:
      router: {score_router: {learn: true}}
      branches: {easy: [{top_k: {k: 10}}], hard: [{bm25: {k: 30, k1: 1.5}}]}
"""
LOOP = """
pipeline:
  - loop:
      body: [{prf: {fb_docs: 5}}, {bm25: {k: 30}}]
      until: {score_reached: {learn: true}}
      max_iters: 2
"""


@pytest.mark.parametrize("text,learner", [(ROUTE, "score_router"), (LOOP, "score_reached")])
def test_route_and_loop_learning_need_judged_queries_and_skip_empty_judgements(slice_data, text, learner):
    from ragkit.errors import DataError
    from ragkit.types import TrainSet

    corpus, _, _, train = slice_data
    with pytest.raises(DataError, match=r"TrainSet: none of the queries judged positive in the qrels \('Q"):
        TrainSet(train.queries, {"Q" + q: r for q, r in train.qrels.items()})
    # a query whose judgements are an empty dict is not judged: skipped, as fusion learning skips it
    emptied = dict(train.qrels) | {train.queries.ids[3]: {}}
    pipe = Pipeline.from_yaml(text).fit(corpus, TrainSet(train.queries, emptied))
    from ragkit.pipelines._compose import iter_leaves

    learned = [leaf for leaf in iter_leaves(pipe) if leaf.name == learner][0]
    assert learned.threshold_ == learned.learned_["threshold"]


def test_a_refused_refit_of_a_composite_changes_nothing(slice_data):
    from ragkit.errors import ParamError
    from ragkit.pipelines import Parallel, WeightedFusion
    from ragkit.retrievers import BM25

    corpus, queries, _, train = slice_data
    hyb = Parallel([BM25(k=30), BM25(k=30, k1=1.5)], fuse=WeightedFusion(learn=True, norm="learn"))
    hyb.fit(corpus, train)
    before = [r.rows.tolist() for r in Pipeline([hyb]).search(queries).rankings]
    with pytest.raises(ParamError):
        hyb.fit(corpus.subset(np.arange(50)))  # no judged queries: norm 'learn' refuses
    assert len(hyb.branches[0].corpus_) == len(corpus)  # the branches were not refitted on the 50
    assert [r.rows.tolist() for r in Pipeline([hyb]).search(queries).rankings] == before


def test_score_router_learns_only_thresholds_it_can_apply():
    """A query without a feature (no results) is below every threshold, so 'everything above' is no
    choice when there is one: the learned figures are those of the routing the threshold gives."""
    from ragkit.pipelines import ScoreRouter
    from ragkit.types import Ranking, State

    s = State(["a", "b", "c"], rankings=[Ranking([1, 2], [5.0, 1.0]), Ranking([3, 4], [9.0, 2.0]), Ranking([], [])])
    r = ScoreRouter(learn=True)
    r.learn_routes(s, {"easy": np.ones(3), "hard": np.zeros(3)})
    labels = r(s).values["label"]
    assert labels == ["easy", "easy", "hard"]
    assert r.learned_["share_below"] == labels.count("hard") / 3 and r.learned_["train_ndcg@10"] == 2 / 3


def test_examples_refuse_to_evaluate_the_split_they_learn_from():
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(repo / "examples" / "learned.py"), "--split", "train", "--limit", "2"],
                         capture_output=True, text=True, timeout=300, cwd=repo)
    # one error line and exit status 2, as the examples' other data and split errors (README, "The examples")
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "learned.py: error: --split 'train' is the split this example learns from" in out.stderr, out.stderr
    assert "training on the evaluated queries is refused" in out.stderr and "Traceback" not in out.stderr


# ------------------------------------------------------------------ learning inside a route's branches
class _SpyParams(Params):
    pass


class _TrainSpy(Operator):
    """A filter that learns nothing but records the training queries (and the upstream) its fit saw."""

    name = "train_spy"
    kind = "filter"
    Params = _SpyParams
    needs_train = True
    wants_upstream = True

    def _fit(self, corpus, train, upstream):
        self.seen_ = list(train.queries.ids)
        self.qrels_ = sorted(train.qrels)
        self.upstream_ = None if upstream is None else list(upstream.query_ids)
        self.had_rankings_ = upstream is not None and upstream.rankings is not None

    def _call(self, state):
        return state


def _short_route(short, long, *, learn_router: bool = False):
    from ragkit.pipelines import Parallel, Route, RuleRouter, ScoreRouter
    from ragkit.retrievers import BM25

    router = (ScoreRouter(feature="top1", learn=True, above="short", below="long") if learn_router
              else RuleRouter(rules=[{"label": "short", "max_words": 9}], default="long"))
    route = Route(router, {"short": short, "long": long})
    # a bm25 before the route where something reads its ranking: a score router, a branch without a retriever
    retrieving = all(isinstance(b, list) and b and (b[0].kind == "retriever" or isinstance(b[0], Parallel))
                     for b in (short, long))
    return Pipeline([BM25(k=20), route] if learn_router or not retrieving else [route])


def _labels(pipe, train):
    from ragkit.types import State

    *before, route = pipe.steps
    state = State.of(train.queries)
    for step in before:
        state = step(state)
    return [str(x) for x in route.router(state).values["label"]]


def test_a_route_branch_learns_from_the_training_queries_the_router_sends_it(slice_data):
    from ragkit.retrievers import BM25

    corpus, queries, _, train = slice_data
    a, b = _TrainSpy(), _TrainSpy()
    pipe = _short_route([BM25(k=10), a], [BM25(k=10), b]).fit(corpus, train)
    labels = _labels(pipe, train)
    short = [q for q, lab in zip(train.queries.ids, labels) if lab == "short"]
    long = [q for q, lab in zip(train.queries.ids, labels) if lab == "long"]
    assert short and long                                   # the slice's claims route both ways
    assert a.seen_ == short and a.qrels_ == sorted(short) and a.upstream_ == short and a.had_rankings_
    assert b.seen_ == long and b.qrels_ == sorted(long) and b.upstream_ == long
    # a learning operator shared by both branches learns from the union: every training query
    shared = _TrainSpy()
    _short_route([BM25(k=10), shared], [shared]).fit(corpus, train)
    assert sorted(shared.seen_) == sorted(train.queries.ids)
    # a learning router: the routing is learned from the branches, so they learn from all queries
    c = _TrainSpy()
    _short_route([c], [BM25(k=5)], learn_router=True).fit(corpus, train)
    assert c.seen_ == list(train.queries.ids)
    # a real learned fuser in one branch fits on its queries and searches
    import ragkit.pipelines.weights as weights
    from ragkit.pipelines import RRF, Parallel

    learned_on = []
    real = weights.learn_weights
    weights.learn_weights = lambda fuse, state, *a, **kw: learned_on.append(list(state.query_ids)) or real(
        fuse, state, *a, **kw)
    try:
        hyb = Parallel([BM25(k=30), BM25(k=30, k1=1.5)], fuse=RRF(learn=True))
        pipe = _short_route([hyb], [BM25(k=10)]).fit(corpus, train)
    finally:
        weights.learn_weights = real
    assert hyb.fuse.is_fitted and len(pipe.search(queries, k=5).rankings) == len(queries)
    # its weights come from the queries routed to it (a fuser with learn: true learns without needs_train)
    assert learned_on == [short]


def test_a_learning_branch_the_router_sends_no_judged_query_is_refused_by_name(slice_data):
    from ragkit.errors import DataError
    from ragkit.pipelines import Parallel
    from ragkit.retrievers import BM25
    from ragkit.types import TrainSet

    corpus, _, _, train = slice_data
    labels = _labels(_short_route([], [BM25(k=5)]).fit(corpus), train)
    judged_short_only = {q: (train.qrels[q] if lab == "short" else {}) for q, lab in zip(train.queries.ids, labels)}
    spy, first = _TrainSpy(), BM25(k=5)
    with pytest.raises(DataError, match=r"^pipeline\[0\]\.route\.branches\.long: the router 'rule_router' sends "
                                        r"\d+ of the 40 training queries here, none with a positive judgement, "
                                        r"and train_spy"):  # the whole path, as at search
        _short_route([first, _TrainSpy()], [BM25(k=5), spy]).fit(corpus, TrainSet(train.queries, judged_short_only))
    assert not first.is_fitted and not spy.is_fitted          # refused before any branch was fitted
    nested = Pipeline([Parallel([_short_route([BM25(k=5)], [BM25(k=5), _TrainSpy()]), BM25(k=5)])])
    with pytest.raises(DataError, match=r"^pipeline\[0\]\.parallel\.branches\[0\]\[0\]\.route\.branches\.long: "):
        nested.fit(corpus, TrainSet(train.queries, judged_short_only))
    alone = _short_route([BM25(k=5)], [_TrainSpy()]).steps[-1]  # a route fitted on its own has no pipeline above
    with pytest.raises(DataError, match=r"^route\.branches\.long: "):
        alone.fit(corpus, TrainSet(train.queries, judged_short_only))
    from ragkit.pipelines import RRF

    with pytest.raises(DataError, match=r"^pipeline\[0\]\.route\.branches\.long: .* and rrf in this branch learns "):
        _short_route([BM25(k=5)], [Parallel([BM25(k=5), BM25(k=5, b=0.3)], fuse=RRF(learn=True))]).fit(
            corpus, TrainSet(train.queries, judged_short_only))
    # a branch that learns nothing does not care which queries it gets
    _short_route([BM25(k=5), _TrainSpy()], [BM25(k=5)]).fit(corpus, TrainSet(train.queries, judged_short_only))


def test_a_learned_fuser_the_router_sends_one_judged_query_is_refused_by_name_before_any_fit(slice_data):
    """A route branch with a learned fuser that the router sends a single judged training query
    failed inside the fuser's fit, after the branches before it were fitted, with an error naming
    no branch; it is now refused before any branch is fitted, by the branch's path."""
    from ragkit.errors import DataError
    from ragkit.pipelines import RRF, Parallel
    from ragkit.retrievers import BM25
    from ragkit.types import TrainSet

    corpus, _, _, train = slice_data
    labels = _labels(_short_route([], [BM25(k=5)]).fit(corpus), train)
    one_long = [q for q, lab in zip(train.queries.ids, labels) if lab == "long"][0]
    qrels = {q: (train.qrels[q] if lab == "short" or q == one_long else {})
             for q, lab in zip(train.queries.ids, labels)}
    first = _TrainSpy()
    with pytest.raises(DataError, match=rf"^pipeline\[0\]\.route\.branches\.long: the router 'rule_router' sends "
                                        rf"\d+ of the 40 training queries here, 1 of them judged \('{one_long}'\), and "
                                        r"the learned fuser rrf in this branch cross-validates"):
        _short_route([BM25(k=5), first], [Parallel([BM25(k=5), BM25(k=5, b=0.3)], fuse=RRF(learn=True))]).fit(
            corpus, TrainSet(train.queries, qrels))
    assert not first.is_fitted


def test_a_loop_body_learns_from_the_iteration_whose_output_the_loop_returns(slice_data):
    """A learned fuser inside a loop body learned only from the first iteration's input.  After a
    ``prf`` at the start of the body, that input has no feedback (plain queries), while every
    ranking the loop returns (``topk_stable`` is never done at its first judgement) comes from an
    expanded query: the fuser never saw what it fuses.  It now learns from each training query's
    input to its last iteration."""
    import ragkit.pipelines.weights as weights
    from ragkit.pipelines import PRF, RRF, Loop, Parallel, TopKStable
    from ragkit.retrievers import BM25

    corpus, queries, _, train = slice_data
    judged = [q for q in train.queries.ids if train.qrels.get(q)]
    learned_on = []
    real = weights.learn_weights
    weights.learn_weights = lambda fuse, state, *a, **kw: learned_on.append(
        (list(state.query_ids), state.values.get("lexical_query"), state.values.get("iteration"))) or real(
        fuse, state, *a, **kw)
    try:
        body = [PRF(fb_docs=5), Parallel([BM25(k=30), BM25(k=30, k1=1.5)], fuse=RRF(learn=True, folds=3))]
        pipe = Pipeline([Loop(body, until=TopKStable(k=10), max_iters=3)]).fit(corpus, train)
    finally:
        weights.learn_weights = real
    assert learned_on[0][1] is None  # the first fit: no feedback yet, plain queries
    ids, expanded, iteration = learned_on[-1]  # the final fit of the fuser
    assert ids == judged and expanded is not None and all(expanded)
    assert set(iteration) <= {1, 2} and 2 in iteration  # each query's last iteration (never the first)
    run = pipe.search(queries)
    assert min(run.values["iterations"]) >= 2
    one = pipe.search(queries[[3]])
    np.testing.assert_array_equal(one.rankings[0].rows, run.rankings[3].rows)


def _check_fused_heads(prep, st, qrels, ids, top, weight_vectors):
    """What the learners score of each weight vector, from ``prep.heads``, is what they scored of the fused
    rankings: the kept (query, document, float32 score) entries of per_query_ndcg's cut (ties at its 11th score
    kept, the fuser's ``top`` cut first) and every judged query's nDCG@10."""
    from ragkit.eval import evaluate
    from ragkit.eval.metrics import _with_ties_at, per_query_ndcg
    from ragkit.pipelines.weights import _heads_run

    judged = [q for q in st.query_ids if qrels.get(q)]
    for w in weight_vectors:
        rankings = prep(w, top)
        ref_ids, ref_scores = _with_ties_at(rankings, 11, ids, st.query_ids)
        q, row, score = prep.heads(w, top, 11)
        assert q.dtype.kind == "i" and score.dtype == np.float32 and np.all(np.diff(q) >= 0)
        for i in range(len(st)):
            got = dict(zip(ids[row[q == i]].tolist(), score[q == i].tolist()))
            assert got == dict(zip(ref_ids[i].tolist(), ref_scores[i].tolist())), (w, top, i)
        ref = st.copy()
        ref.rankings = rankings
        pq = evaluate(_heads_run((q, row, score), st.query_ids, ids), {j: qrels[j] for j in judged},
                      ["ndcg@10"]).per_query["ndcg@10"]
        np.testing.assert_array_equal([pq[j] for j in judged], per_query_ndcg(ref, qrels, ids))


def _tied_branches(seed: int, n_q: int = 24, n_docs: int = 70):
    """Three branches of rankings with many tied scores, empty and short lists, a document listed twice, a
    non-finite score (missing, for weighted fusion) and a query whose id is a document's id."""
    from ragkit.types import Ranking, State

    rng = np.random.default_rng(seed)
    ids = np.array([f"d{i}" for i in range(n_docs)], dtype=object)
    qids = ["d5"] + [f"q{i}" for i in range(1, n_q)]
    branches = []
    for b in range(3):
        rankings = []
        for i in range(n_q):
            n = int(rng.choice([0, 3, 9, 11, 12, 25, 40]))
            rows = rng.choice(n_docs, n, replace=False)
            scores = np.sort(rng.integers(0, 4, n))[::-1].astype(np.float32) * (b + 1)  # ties, per branch scale
            if n > 5 and i % 3 == b:
                rows[4] = rows[1]  # listed twice: counts once, at its best rank
                scores[2] = [np.nan, np.inf, -np.inf][b]
            rankings.append(Ranking(rows, scores))
        branches.append((f"b{b}", rankings))
    qrels = {q: {ids[j]: int(rng.integers(1, 3)) for j in rng.choice(n_docs, 4, replace=False)}
             for q in qids[: n_q - 3]}
    qrels[qids[0]][ids[5]] = 2  # judged, but ignored for having the query's id
    return State(list(qids), query_ids=list(qids), branches=branches), qrels, ids


@pytest.mark.parametrize("top", [None, 1, 3, 11, 12, 20])
@pytest.mark.parametrize("fuser", ["rrf", "minmax", "zscore", "none"])
def test_learning_scores_the_fused_heads_as_it_scored_the_fused_rankings(fuser, top):
    """Learning fuser weights built every grid point's rankings (Ranking objects for every query), then
    re-cut and re-joined them to score nDCG@10: 3-6x the work (SciFact train, 3 branches, k=1000: a 27-33 s
    fit, now ~4 s).  It now scores each weight vector from the fused scores' heads (ties kept, ``top_k``
    applied); the kept documents, every per-query nDCG@10 and the learned weights and report are the same."""
    from ragkit.pipelines.fusion import RRF, WeightedFusion
    from ragkit.pipelines.weights import learn_weights

    for seed in (0, 1):
        st, qrels, ids = _tied_branches(seed)
        op = RRF(k=2) if fuser == "rrf" else WeightedFusion(norm=fuser)
        prep = op._prepare(st, with_fields=False)
        grid = np.vstack([simplex_grid(3, 0.25), np.full(3, 1 / 3), [[0.7, 0.2, 0.1]]])
        _check_fused_heads(prep, st, qrels, ids, top, grid)
        slow = learn_weights(lambda s, w: prep(w, top), st, qrels, ids, folds=3, step=0.2)
        fast = learn_weights(lambda s, w: prep(w, top), st, qrels, ids, folds=3, step=0.2,
                             heads=lambda w, k: prep.heads(w, top, k))
        assert vars(slow).keys() == vars(fast).keys()
        for key, value in vars(slow).items():
            np.testing.assert_array_equal(getattr(fast, key), value, err_msg=key)


@pytest.mark.parametrize("top", [None, 12])
def test_a_learning_fit_learns_what_scoring_its_fused_rankings_learned(slice_data, top):
    """On SciFact training queries (3 BM25 branches): every grid point's kept documents and nDCG@10, and the
    fitted fusers' learned weights, normalisation and report, equal those of scoring the fused rankings."""
    from ragkit.pipelines.fusion import RRF, WeightedFusion
    from ragkit.pipelines.weights import learn_weights
    from ragkit.retrievers import BM25
    from ragkit.types import State

    corpus, _, _, train = slice_data
    up = State.of(train.queries)
    up.branches = [(f"b{i}", r.fit(corpus)(State.of(train.queries)).rankings) for i, r in enumerate(
        [BM25(k=50), BM25(k=50, variant="okapi", stemmer="none", stopwords="none"), BM25(k=30, b=0.3)])]
    grid = np.vstack([simplex_grid(3, 0.1), np.full(3, 1 / 3)])
    _check_fused_heads(RRF()._prepare(up, with_fields=False), up, train.qrels, corpus.ids, top, grid)
    for op in (RRF(learn=True, folds=3, top_k=top), WeightedFusion(learn=True, norm="learn", folds=3, top_k=top)):
        op.fit(corpus, train, upstream=up)
        best = None
        for option in op._learnable_options():  # the reference: each option's rankings, scored
            op.option_ = option
            prep = op._prepare(up, with_fields=False)
            found = learn_weights(lambda s, w: prep(w, top), up, train.qrels, corpus.ids, folds=3, scale=3.0)
            if best is None or found.held_out_ndcg > best[1].held_out_ndcg:
                best = (option, found)
        option, found = best
        set_aside = {**found.report(), "averaged_cv_ndcg@10": found.cv_ndcg} if found.report() else {}
        # (on the fuser's scale, learn_weights' scale: 3 branches, unlearned weights of 1 each)
        used = found.weights.tolist() if found.kept == "learned" else [1.0, 1.0, 1.0]
        assert op.learned_ == {"branches": ["b0", "b1", "b2"], "weights": used, **option,
                               "cv_ndcg@10": found.held_out_ndcg, "train_ndcg@10": found.train_ndcg,
                               "uniform_ndcg@10": found.baseline_ndcg, **set_aside}


# ---------------------------------------------------------------- what a learned fuser reports


def _two_branches(seed: int, nq: int = 20):
    """Two random branches over 30 documents; each query judges 2 documents of one branch's top 12."""
    from ragkit import Corpus, TrainSet
    from ragkit.types import Ranking, State

    rng = np.random.default_rng(seed)
    ids = np.array([f"d{i}" for i in range(30)])
    qids = [f"q{i}" for i in range(nq)]
    br = [(f"b{i}", [Ranking(rng.permutation(30)[:12], np.linspace(1, 0, 12).astype(np.float32)) for _ in qids])
          for i in range(2)]
    st = State(list(qids), query_ids=list(qids), branches=br)
    qrels = {q: {ids[br[j % 2][1][j].rows[r]]: 1 for r in rng.choice(12, 2, replace=False)}
             for j, q in enumerate(qids)}
    corpus = Corpus(ids=ids.tolist(), texts=[f"text {d}" for d in ids])
    return st, corpus, TrainSet({q: f"query {q}" for q in qids}, qrels)


def test_equal_weights_kept_report_their_own_cross_validated_ndcg(caplog):
    """weighted with norm: learn kept equal weights [0.5, 0.5] but reported cv_ndcg@10 0.9114, the discarded
    averaged weights' estimate, beside uniform_cv_ndcg@10 0.9209; and its warnings (one per normalisation
    tried, different numbers each) named neither the fuser nor the normalisation."""
    import logging

    from ragkit.pipelines.fusion import WeightedFusion

    st, corpus, train = _two_branches(0)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        op = WeightedFusion(learn=True, norm="learn").fit(corpus, train, upstream=st)
    got = op.learned_
    assert got["kept"] == "uniform" and got["weights"] == [1.0, 1.0]  # (equal weights as unlearned: 1 each)
    assert got["cv_ndcg@10"] == got["uniform_cv_ndcg@10"]  # the estimate of the weights kept
    assert "averaged_cv_ndcg@10" in got and got["averaged_cv_ndcg@10"] <= got["cv_ndcg@10"]
    said = [r.getMessage() for r in caplog.records if "keeping equal weights" in r.getMessage()]
    assert said and all(m.startswith("weighted (norm: learn, trying norm: ") for m in said), said
    assert f"trying norm: {got['norm']}): learning fusion weights" in "".join(said)
    from ragkit.pipelines.fusion import RRF

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        RRF(learn=True).fit(corpus, train, upstream=_two_branches(2)[0])
    said = [r.getMessage() for r in caplog.records if "keeping equal weights" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("rrf: learning fusion weights: "), said


def test_learned_weights_are_exact_means_of_the_fold_picks(tmp_path):
    """The mean of five per-fold picks was a float sum: learned() and learned.json said
    [0.36000000000000004, 0.6399999999999999]; the weights are now the exact means, rounded once."""
    import json
    from fractions import Fraction

    from ragkit.pipelines.fusion import RRF

    st, corpus, train = _two_branches(9)
    op = RRF(learn=True).fit(corpus, train, upstream=st)
    # (on the fuser's scale, two branches of weight 1 unlearned: the exact means [0.36, 0.64] times 2)
    assert op.learned_.get("kept") is None and op.learned_["weights"] == [0.72, 1.28]
    np.testing.assert_array_equal(op.weights_, [0.72, 1.28])  # the weights used, not only the ones shown
    from ragkit.pipelines.weights import learn_weights

    prep = RRF()._prepare(st, with_fields=False)
    found = learn_weights(lambda s, w: prep(w, None), st, train.qrels, corpus.ids, folds=3)
    exact = [float(sum(Fraction(float(x)).limit_denominator(20) for x in col) / len(col))
             for col in found.fold_picks.T]
    assert found.averaged.tolist() == exact
    op.save(tmp_path / "f")
    assert json.loads((tmp_path / "f" / "learned.json").read_text())["weights"] == [0.72, 1.28]
