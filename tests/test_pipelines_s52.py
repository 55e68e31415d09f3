"""Review findings (s52) on pipelines, a section each: a learning fuser given weights compares the learned ones
against them (it compared against equal weights and threw the given ones away)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ragkit import Corpus, Pipeline, TrainSet
from ragkit.encoders import HashingEncoder, register_encoder, unregister_encoder
from ragkit.eval import evaluate
from ragkit.pipelines import RRF, Parallel, WeightedFusion
from ragkit.retrievers import BM25, Dense
from ragkit.types import Queries

TEXTS = ["aspirin lowers the risk of heart attack", "statins lower cholesterol", "vitamin D and bone fractures",
         "exercise improves sleep quality", "aspirin and stomach bleeding", "cholesterol diet and heart disease",
         "sleep and heart health", "bone density in the elderly", "stomach ulcers from aspirin",
         "diet and exercise for cholesterol"]
JUDGED = [("q1", "does aspirin prevent heart attacks", ["d0"]), ("q2", "what lowers cholesterol", ["d1", "d5"]),
          ("q3", "vitamin D fractures", ["d2"]), ("q4", "aspirin side effects", ["d4", "d8"]),
          ("q5", "sleep quality", ["d3"]), ("q6", "bone elderly", ["d7"])]
QRELS = {q: {d: 1 for d in r} for q, _, r in JUDGED}


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.from_records([{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS)])


@pytest.fixture(scope="module")
def train() -> TrainSet:
    return TrainSet({q: t for q, t, _ in JUDGED}, QRELS)


@pytest.fixture(scope="module")
def hashing():
    register_encoder("s52-hash", HashingEncoder(dim=32), replace=True)
    yield "s52-hash"
    unregister_encoder("s52-hash")


# ------------------------------------------------------------------ 1. given weights are the baseline of learning
def _train_ndcg(pipe: Pipeline) -> float:
    queries = Queries([q for q, _, _ in JUDGED], [t for _, t, _ in JUDGED])
    return evaluate(pipe.search(queries), QRELS, ["ndcg@10"]).scores["ndcg@10"]


@pytest.mark.parametrize("fuser", [RRF, WeightedFusion])
def test_a_learning_fuser_keeps_its_given_weights_unless_learned_ones_beat_them(corpus, train, hashing, fuser, caplog):
    """RRF(weights=[1.0, 0.0], learn=True) compared the learned weights with equal ones only and kept [0.5, 0.5]:
    nDCG@10 0.9489 on its own training queries, below the 0.9795 of the weights it was given; its warning said
    "do not beat equal weights".  The given weights are the baseline: kept on a tie, never scored below."""
    def pipe(**kw) -> Pipeline:
        return Pipeline([Parallel([BM25(k=10), Dense(model=hashing, k=10)], fuse=fuser(weights=[1.0, 0.0], **kw))])

    given = _train_ndcg(pipe().fit(corpus))
    learning = pipe(learn=True, folds=2)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        learning.fit(corpus, train=train)
    learned = next(iter(learning.learned().values()))
    assert _train_ndcg(learning) >= given - 1e-12, learned
    assert learned["train_ndcg@10"] >= learned["given_ndcg@10"] == pytest.approx(given, abs=1e-12)
    assert "uniform_ndcg@10" not in learned, learned
    if learned.get("kept"):  # the baseline kept: the given weights themselves, said so
        assert learned["kept"] == "given" and learned["weights"] == [1.0, 0.0], learned
        said = [r.getMessage() for r in caplog.records if "learning fusion weights" in r.getMessage()]
        assert said and all("the given weights [1.0, 0.0]" in m and "equal weights" not in m for m in said), said
    if fuser is RRF:  # the reviewer's reproducer: the given weights are kept
        assert learned["weights"] == [1.0, 0.0] and learned["kept"] == "given", learned


def test_given_weights_off_the_grid_are_searched_kept_exactly_and_reported(corpus):
    """Weights off the 0.1 grid ([1, 7]: 0.125, 0.875) are a point of the search, kept as they are (not
    rounded to a grid fraction when averaged), and the report names them the given ones."""
    from ragkit.pipelines.weights import learn_weights
    from ragkit.types import Ranking, State

    qids = [f"q{i}" for i in range(8)]
    same = [Ranking(np.arange(5), np.linspace(1, 0, 5).astype(np.float32)) for _ in qids]
    st = State([f"query {q}" for q in qids], query_ids=list(qids), branches=[("a", same), ("b", same)])
    qrels = {q: {"d0": 1} for q in qids}  # every weight ties: the baseline wins
    base = np.array([1.0, 7.0])
    found = learn_weights(lambda s, w: RRF()._prepare(st, with_fields=False)(w, None), st, qrels,
                          np.array(corpus.ids), folds=2, baseline=base)
    assert found.weights.tolist() == [0.125, 0.875] and found.compared_with == "given"
    assert found.fold_picks.tolist() == [[0.125, 0.875]] * 2 and found.kept == "learned"
    equal = learn_weights(lambda s, w: RRF()._prepare(st, with_fields=False)(w, None), st, qrels,
                          np.array(corpus.ids), folds=2, baseline=np.array([3.0, 3.0]))
    assert equal.weights.tolist() == [0.5, 0.5] and equal.compared_with == "uniform"  # equal weights given


# ------------------------------------------------------------------ 2. PRF's column terms, built once
def test_prf_builds_its_column_terms_at_fit_and_load_not_at_each_call(corpus, monkeypatch, tmp_path):
    """PRF read ``_terms``, which nothing set since 645cf6b: every call sorted the whole vocabulary again (SciFact's
    26k terms: 2-10 ms of a ~12 ms call).  They are built with the counts, at fit and at load; a call sorts
    nothing, and its LexicalCounts name the PRF's own array."""
    import ragkit.pipelines.prf as prf_module
    from ragkit import Operator
    from ragkit.pipelines import PRF
    from ragkit.types import State

    prf = PRF(fb_docs=2, fb_terms=3).fit(corpus)
    assert "_terms" in vars(prf) and prf._terms.tolist() == sorted(prf.vocab_, key=prf.vocab_.__getitem__)
    prf.save(tmp_path / "prf")
    loaded = Operator.load(tmp_path / "prf")
    assert "_terms" in vars(loaded) and loaded._terms.tolist() == prf._terms.tolist()
    state = BM25(k=5).fit(corpus)(State.of(["aspirin heart", "cholesterol diet"]))
    sizes: list[int] = []  # of what the call sorts (a query's own few tokens, not the vocabulary)

    def counting_sorted(items, **kwargs):
        items = list(items)
        sizes.append(len(items))
        return sorted(items, **kwargs)

    monkeypatch.setattr(prf_module, "sorted", counting_sorted, raising=False)
    for op in (prf, loaded):
        out = op(state.copy())
        assert out.values["lexical_counts"][0].batch.terms is op._terms
    assert sizes and max(sizes) < len(prf.vocab_) == 24, sizes


# ------------------------------------------------------------------ 3. a learning fuser's warnings say where it is
def test_learning_fusers_in_a_route_warn_with_their_own_paths(corpus, caplog):
    """Fuser-learning warnings started with the bare name ("rrf: learning fusion weights: ...") where a router's
    and a judge's carry their path: two learned RRFs of one route could not be told apart.  Each starts with its
    own path now, as a Parallel fitting it knows it."""
    from ragkit.pipelines import Route, RuleRouter

    # each branch's training queries share one text: each fuser warns that none can be held out
    texts = {"s1": "aspirin", "s2": "aspirin", "s3": "aspirin",
             "l1": "what lowers cholesterol", "l2": "what lowers cholesterol", "l3": "what lowers cholesterol"}
    train = TrainSet(texts, {q: {"d4" if q[0] == "s" else "d1": 1} for q in texts})

    def branch() -> Parallel:
        return Parallel([BM25(k=5), BM25(k=5, variant="okapi")], fuse=RRF(learn=True, folds=2))

    pipe = Pipeline([Route(RuleRouter(rules=[{"label": "s", "max_words": 1}], default="l"),
                           {"s": [branch()], "l": [branch()]})])
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe.fit(corpus, train=train)
    said = sorted(r.getMessage() for r in caplog.records if "learning fusion weights" in r.getMessage())
    assert len(said) == 2, said
    assert said[0].startswith("pipeline[0].route.branches.l[0].parallel.fuse.rrf: learning fusion weights: the 3 "
                              "usable training queries"), said
    assert said[1].startswith("pipeline[0].route.branches.s[0].parallel.fuse.rrf: learning fusion weights: the 3 "
                              "usable training queries"), said
    assert set(pipe.learned()) == {"pipeline[0].route.branches.l[0].parallel.fuse.rrf",
                                   "pipeline[0].route.branches.s[0].parallel.fuse.rrf"}


# ------------------------------------------------------------------ 4. PRF's term counts stay in their branch
def test_prf_counts_stay_inside_their_parallel_branch(corpus):
    """A rewritten query text (QUERY_REWRITES) stays inside its parallel branch, but PRF's counts of it
    (``lexical_counts``) leaked out: the run showed one branch's expansion counts without its ``lexical_query``."""
    from ragkit.filters import TopK
    from ragkit.pipelines import PRF, Loop, TopKStable

    queries = [t for _, t, _ in JUDGED]
    pipe = Pipeline([BM25(k=10), Loop([Parallel([[PRF(), BM25(k=10)], [TopK(k=10)]])], until=TopKStable(k=3))])
    values = pipe.fit(corpus).search(queries).values
    assert "lexical_counts" not in values and "lexical_query" not in values, sorted(values)
    alone = Pipeline([BM25(k=10), Parallel([[PRF(), BM25(k=10)], [BM25(k=5)]])]).fit(corpus).search(queries).values
    assert "lexical_counts" not in alone and "lexical_query" not in alone, sorted(alone)


def test_prf_counts_of_a_saved_and_loaded_pipeline_compare_equal(corpus, tmp_path):
    """run.values of a PRF pipeline and of the same pipeline saved and loaded compared unequal: QueryCounts held a
    LexicalCounts compared by identity.  Equal counts, terms, texts and analysis are equal; others are not."""
    import warnings

    from ragkit import Operator
    from ragkit.pipelines import PRF

    queries = [t for _, t, _ in JUDGED]
    pipe = Pipeline([BM25(k=10), PRF(fb_docs=3), BM25(k=10)]).fit(corpus)
    pipe.save(tmp_path / "p")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (no sparse comparison warning)
        first, again = pipe.search(queries).values, Operator.load(tmp_path / "p").search(queries).values
        assert first["lexical_counts"] == again["lexical_counts"] and first == again
        other = pipe.search(queries[::-1]).values["lexical_counts"]
        assert other[0] != first["lexical_counts"][0]  # (another batch: its texts differ)
        assert hash(first["lexical_counts"][0]) == hash(again["lexical_counts"][0])


def test_expansion_matrix_tells_prf_batches_apart_without_comparing_their_contents(corpus, monkeypatch):
    """LexicalCounts compare by content (for run.values), and BM25.expansion_matrix checked its entries were one
    batch with ``batches.count(batch)``: entries of another batch of the same shape had their counts, terms and
    texts compared, once per entry (2 x 5,000 queries: 0.38 s, where identity takes 0.4 ms).  Batches are told
    apart by identity: __eq__ is never called, and two batches still read as not one (the texts are tokenised)."""
    from ragkit.pipelines import PRF
    from ragkit.retrievers.bm25 import LexicalCounts
    from ragkit.types import State

    bm = BM25(k=4).fit(corpus)
    prf = PRF(fb_docs=3, fb_terms=4, max_df=1.0).fit(corpus)
    queries = ["aspirin heart", "cholesterol diet"]
    one, two = prf(bm(State(queries))), prf(bm(State(queries)))
    a, b = one.values["lexical_counts"][0].batch, two.values["lexical_counts"][0].batch
    assert a is not b and a.counts.shape == b.counts.shape
    texts = one.texts(lexical=True)
    want = bm.expansion_matrix(one, texts)
    assert want is not None

    def refuse(self, other):  # noqa: ANN001, ANN202
        raise AssertionError("LexicalCounts.__eq__ called by expansion_matrix")

    monkeypatch.setattr(LexicalCounts, "__eq__", refuse)
    assert (bm.expansion_matrix(one, texts) != want).nnz == 0  # (one batch: read, no comparison)
    mixed = one.copy()
    mixed.values["lexical_counts"][1] = two.values["lexical_counts"][1]
    assert bm.expansion_matrix(mixed, texts) is None


def test_a_learning_fusers_warning_quotes_its_given_weights_as_given(corpus, hashing, caplog):
    """RRF(weights=[2, 1], learn=True) passed its weights to learn_weights already scaled to sum to 1 (scaled there
    again), and the warning called [0.667, 0.333] "the given weights": it quotes them as given now."""
    one_text = TrainSet({"q1": "aspirin side effects", "q2": "Aspirin  side effects"},
                        {"q1": {"d4": 1}, "q2": {"d8": 1}})
    pipe = Pipeline([Parallel([BM25(k=10), Dense(model=hashing, k=10)], fuse=RRF(weights=[2, 1], learn=True))])
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe.fit(corpus, train=one_text)  # (one text: no fold to hold out, the given weights kept, said so)
    said = [r.getMessage() for r in caplog.records if "learning fusion weights" in r.getMessage()]
    assert said and all("keeping the given weights [2.0, 1.0]" in m for m in said), said
    learned = next(iter(pipe.learned().values()))
    assert learned["weights"] == [2.0, 1.0] and learned["kept"] == "given", learned  # kept: exactly as given
