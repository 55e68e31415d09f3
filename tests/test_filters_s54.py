"""Filters and filter evaluation, review s54: the cosine adapter's float32 scores keep the dense order (no ties the
cosines did not have), random_skewness draws no (queries, n_docs) matrix, k_occurrence counts a document once per
list, filter_report of emptied runs, RelativeThreshold's bar in float64, DBNorm drops blank candidates, and the
cosine adapter's saved threshold is checked."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ragkit.encoders import HashingEncoder, register_encoder
from ragkit.eval import evaluate
from ragkit.filters import CosineAdapter
from ragkit.filters.cosine_adapter import ordered_float32
from ragkit.retrievers import Dense
from ragkit.types import Corpus, Queries, TrainSet

register_encoder("s54-bow", HashingEncoder(dim=64), replace=True)


def _saturating_case():
    """A dense step and an adapter fitted without an L2 penalty on near-duplicate queries: its probabilities
    saturate (1.0 at the top, 0.0 further down) in float32."""
    docs = [f"item{i} " + " ".join(f"w{(i * 7 + j) % 30}" for j in range(1 + i % 4)) for i in range(80)]
    corpus = Corpus.from_texts(docs)
    train = TrainSet(Queries.from_texts(docs[:50]), {f"q{i}": {str(i): 1} for i in range(50)})
    pipe = (Dense(k=20, model="s54-bow") | CosineAdapter(model="s54-bow", target_value=0.9, l2=0.0)).fit(
        corpus, train)
    test = Queries.from_texts([docs[i] + " extra" for i in range(50, 80)])
    qrels = {test.ids[j]: {str(50 + j): 2, str((50 + j + 7) % 80): 1} for j in range(len(test))}
    return pipe, test, qrels


def test_adapter_scores_keep_the_dense_order_when_they_saturate(caplog):
    caplog.set_level(logging.ERROR)
    pipe, test, qrels = _saturating_case()
    dense = pipe.steps[0] if hasattr(pipe, "steps") else pipe[0]
    d = dense.search(test)
    a = pipe.search(test, cosine_adapter={"threshold": 0.0})
    probs = a.rankings
    saturated = sum(int(np.sum((r.scores == 0.0) | (r.scores == 1.0))) for r in probs)
    assert saturated  # the case saturates: exact float32 rounding would give 0.0 and 1.0 ties
    for r, rd in zip(a.rankings, d.rankings):
        assert r.rows.tolist() == rd.rows.tolist()
        assert np.all((r.scores >= 0) & (r.scores <= 1))
        c = r.fields["cosine"]
        falls = np.diff(c) < 0
        assert np.all(np.diff(r.scores)[falls] < 0), "a strict cosine fall must be a strict score fall"
        assert np.all(np.diff(r.scores)[np.diff(c) == 0] == 0)
    assert evaluate(a, qrels, ["ndcg@10"]).scores["ndcg@10"] == evaluate(d, qrels, ["ndcg@10"]).scores["ndcg@10"]


def test_ordered_float32_moves_only_the_rounding_ties():
    p = np.array([1 - 1e-12, 1 - 1e-10, 0.5, 0.25, 0.25, 1e-60, 1e-70,   # query 0 (0.25 twice: a cosine tie)
                  0.9, 0.8,                                               # query 1: nothing to move
                  1e-50])                                                 # query 3 (query 2 is empty)
    c = np.array([.9, .8, .7, .6, .6, .5, .4, .7, .6, .3], np.float32)
    lengths = np.array([7, 2, 0, 1])
    starts = np.array([0, 7, 9, 9])
    qidx = np.repeat(np.arange(4), lengths)
    got = ordered_float32(p, c, lengths, starts, qidx)
    assert got.dtype == np.float32
    assert got[0] == 1.0 and got[1] == np.nextafter(np.float32(1), np.float32(0))
    assert got[2:5].tolist() == [0.5, 0.25, 0.25]
    assert got[5] > got[6] == 0.0 and got[5] < 1e-44  # the last may stay 0.0, the one above it lifted
    assert got[7:9].tolist() == np.float32([0.9, 0.8]).tolist()
    assert got[9] == 0.0  # a single candidate keeps its rounding
    assert ordered_float32(np.empty(0), np.empty(0, np.float32), np.zeros(2, np.int64), np.zeros(2, np.int64),
                           np.empty(0, np.int64)).shape == (0,)


def test_random_skewness_draws_no_matrix_as_wide_as_the_corpus():
    import tracemalloc

    from ragkit.eval.hubness import random_skewness

    tracemalloc.start()
    try:
        random_skewness(300, 5183, 10, repeats=2, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 300 * 5183 * 8 // 8  # a (300, 5183) float64 draw is 12 MB; counts and draws here are < 1 MB


@pytest.mark.parametrize("n_docs, m", [(20, 5), (7, 7), (30, 1)])
def test_floyd_subsets_are_uniform_and_distinct(n_docs, m):
    from ragkit.eval.hubness import _floyd_counts

    n_q = 60_000
    counts = _floyd_counts(np.random.default_rng(1), n_q, n_docs, m)
    assert counts.sum() == n_q * m
    p = m / n_docs
    if p == 1:
        assert counts.tolist() == [n_q] * n_docs  # m distinct documents per query
    sd = np.sqrt(n_q * p * (1 - p))
    assert np.all(np.abs(counts - n_q * p) <= 5 * sd + 1e-9), (counts, n_q * p)


def test_random_skewness_near_n_docs_counts_the_complement():
    from ragkit.eval.hubness import random_skewness, skewness

    assert random_skewness(10, 12, 12) == skewness(np.full(12, 10))  # every document in every top-12: 0
    # a top-49 of 50 leaves one document out: N_k = n_q minus the counts of a top-1 drawn from the same stream
    for seed in range(3):
        assert random_skewness(400, 50, 49, repeats=2, seed=seed) == pytest.approx(
            -random_skewness(400, 50, 1, repeats=2, seed=seed), rel=1e-12, abs=1e-12)


def test_k_occurrence_refuses_a_document_twice_in_one_top_k():
    from ragkit.errors import DataError
    from ragkit.eval.hubness import hubness, k_occurrence
    from ragkit.run import Run
    from ragkit.types import Ranking

    with pytest.raises(DataError, match=r"^k_occurrence: ranking 1 lists row 2 twice \(ranks 1 and 3\); expected "
                                        r"each document at most once per ranking \(a copy would count its query"):
        k_occurrence([Ranking([0], [1.0]), Ranking([2, 1, 2], [.9, .8, .7])], 4, 10)
    run = Run(["qa"], [np.array(["d2", "d2"], dtype=object)], [np.array([.9, .8])],
              rankings=[Ranking([2, 2], [.9, .8])])
    with pytest.raises(DataError, match=r"^hubness: query 'qa' lists row 2 twice"):
        hubness(run, 4, k=10)
    # past the cut-off a repeat is not counted, nor refused
    assert k_occurrence([Ranking([2, 1, 2], [.9, .8, .7])], 4, 2).tolist() == [0, 1, 1, 0]


def test_filter_report_of_a_run_every_list_of_which_was_emptied():
    from ragkit.errors import DataError
    from ragkit.eval.filtering import filter_report
    from ragkit.run import Run

    ref = Run.from_dict({"q1": {"d1": 0.9, "d2": 0.5}, "q2": {"d3": 0.8}})
    qrels = {"q1": {"d1": 1}, "q2": {"d3": 1}}
    empty = Run.from_dict({})  # every list emptied, read back from a TREC file: no query at all
    for rep in (filter_report(empty, qrels), filter_report(empty, qrels, ref)):
        assert rep.to_dict() == {"precision": 0.0, "recall": 0.0, "mean_kept": 0.0, "empty": 1.0, "n_queries": 2}
    one = Run.from_dict({"q1": {"d1": 0.9}})
    assert filter_report(one, qrels).to_dict() == {"precision": 1.0, "recall": 0.5, "mean_kept": 0.5, "empty": 0.5,
                                                    "n_queries": 2}
    with pytest.raises(DataError, match=r"^filter_report: none of the run's 1 queries \('x'\) is judged in the qrels, "
                                        r"which judge 2 other queries \('q1', 'q2'\); are these the judgements of "
                                        "another split"):
        filter_report(Run.from_dict({"x": {"d1": 0.9}}), qrels)
    with pytest.raises(DataError, match=r"^filter_report: no query has judgements \(the qrels judge none\)"):
        filter_report(empty, {})
    with pytest.raises(DataError, match=r"^filter_report: none of the run's 2 queries \('q1', 'q2'\) is judged in "
                                        r"the qrels, which judge 1 other queries \('z'\)"):  # (the reference's)
        filter_report(empty, {"z": {"d1": 1}}, ref)


def test_relative_threshold_decides_the_boundary_exactly():
    from ragkit.filters import RelativeThreshold
    from ragkit.types import Ranking, State

    rng = np.random.default_rng(0)
    cases = 0
    for _ in range(300):
        alpha = float(np.round(rng.uniform(0.05, 1), 2))
        top = np.float32(rng.uniform(0.05, 1))
        s = np.float32(alpha * float(top))  # the boundary score, rounded to float32, and its neighbours
        for cand in (s, np.nextafter(s, np.float32(0)), np.nextafter(s, np.float32(2))):
            if cand > top:
                continue
            cases += 1
            kept = len(RelativeThreshold(alpha=alpha)(State(["q"], rankings=[Ranking([0, 1], [top, cand])]))
                       .rankings[0])
            assert (kept == 2) == (float(cand) >= alpha * float(top)), (alpha, float(top), float(cand))
    assert cases > 800
    # a negative top: score >= top - (1 - alpha) * |top|, in float64 of the float32 scores
    top, alpha = np.float32(-0.3), 0.5
    bar = float(top) - 0.5 * abs(float(top))
    for cand in (np.float32(bar), np.nextafter(np.float32(bar), np.float32(-1)), np.nextafter(np.float32(bar), top)):
        kept = len(RelativeThreshold(alpha=alpha)(State(["q"], rankings=[Ranking([0, 1], [top, cand])])).rankings[0])
        assert (kept == 2) == (float(cand) >= bar)


@pytest.mark.parametrize("method", ["dualis", "ddis", "qbnorm", "is"])
def test_dbnorm_leaves_blank_candidates_out(method):
    from ragkit.filters import DBNorm
    from ragkit.types import Ranking, State

    texts = ["red apples", "green pears", "ripe red cherries", "a fruit market", "apple pie recipe", "", "   "]
    train = TrainSet({"q1": "red fruit", "q2": "baked apples", "q3": "pears market"}, {"q1": {"2": 1}})
    op = DBNorm(model="s54-bow", method=method).fit(Corpus.from_texts(texts), train)
    st = State(["a", "b", "c", "d", "e"], rankings=[
        Ranking([3], [0.5]), Ranking([0, 1, 2], [0.4, 0.4, 0.4]), Ranking([], []),
        Ranking([0, 5, 1], [0.6, 0.5, 0.45]), Ranking([6, 5], [0.3, 0.2])])
    out = op(st)
    ref = op(State(["a", "b", "c", "d", "e"], rankings=[
        Ranking([3], [0.5]), Ranking([0, 1, 2], [0.4, 0.4, 0.4]), Ranking([], []), Ranking([0, 1], [0.6, 0.45]),
        Ranking([], [])]))
    assert [r.rows.tolist() for r in out.rankings] == [r.rows.tolist() for r in ref.rankings]
    assert sorted(out.rankings[3].rows.tolist()) == [0, 1] and len(out.rankings[4]) == 0
    for r, rr in zip(out.rankings, ref.rankings):
        assert r.scores.tolist() == rr.scores.tolist()
        assert r.fields.get("cosine", np.empty(0)).tolist() == rr.fields.get("cosine", np.empty(0)).tolist()
    every = op(State(["e"], rankings=[Ranking([6, 5], [0.3, 0.2])]))  # nothing left: an empty list
    assert len(every.rankings[0]) == 0


def _save_adapter(tmp_path_factory, model: str):
    """A CosineAdapter over encoder ``model`` fitted on 40 texts and 30 judged queries, saved: its folder."""
    corpus = Corpus.from_texts([f"notes on topic{i}" for i in range(40)])
    train = TrainSet(Queries.from_texts([f"topic{i}" for i in range(30)]), {f"q{i}": {str(i): 1} for i in range(30)})
    folder = tmp_path_factory.mktemp("ca") / "ca"
    CosineAdapter(model=model, target_value=0.9).fit(corpus, train).save(folder)
    return folder


@pytest.fixture(scope="module")
def saved_adapter(tmp_path_factory):
    return _save_adapter(tmp_path_factory, "s54-bow")


@pytest.mark.parametrize("bad", [None, "nan", float("nan"), 2.5, -0.1, True, [0.5]])
def test_adapter_load_checks_the_saved_threshold(saved_adapter, tmp_path, bad):
    import shutil

    from conftest import edit_json, reseal

    from ragkit.errors import ArtifactError

    folder = tmp_path / "ca"
    shutil.copytree(saved_adapter, folder)
    edit_json(folder / "adapter.json", lambda m: m.update(threshold=bad))
    reseal(folder)
    with pytest.raises(ArtifactError, match=r"adapter\.json: threshold must be a number in \[0, 1\], got "
                                            + repr(bad).replace("[", r"\[").replace("]", r"\]")):
        CosineAdapter.load(folder)


def test_adapter_load_checks_the_feature_std_length(saved_adapter, tmp_path):
    import shutil

    from conftest import reseal

    from ragkit.errors import ArtifactError

    folder = tmp_path / "ca"
    shutil.copytree(saved_adapter, folder)
    np.save(folder / "adapter_feat_std.npy", np.load(folder / "adapter_feat_std.npy")[:-1])
    reseal(folder)
    with pytest.raises(ArtifactError, match=r"adapter_feat_std holds \d+ values, adapter_feat_mean \d+; expected one "
                                            "of each per feature"):
        CosineAdapter.load(folder)
    assert CosineAdapter.load(saved_adapter).threshold_ is not None  # the saved one loads


def _subtopic_recall_per_query(run, subtopics, k=10):
    """subtopic_recall as it was: a set of subtopics per query."""
    from ragkit.eval.diversity import _doc_lists, check_subtopics

    lists = _doc_lists(run, k, "subtopic_recall")
    out = {}
    for q, judged in check_subtopics(subtopics, "subtopic_recall").items():
        topics = {t for ts in judged.values() for t in ts}
        if topics:
            got = {t for d in lists.get(q, []) for t in judged.get(d, ())}
            out[q] = len(got & topics) / len(topics)
    return out


def test_subtopic_recall_batched_is_the_per_query_sets():
    import random

    from ragkit.eval.diversity import subtopic_recall

    rng = random.Random(0)
    for _ in range(300):
        sub, run = {}, {}
        for qi in range(rng.randint(0, 6)):
            docs = {f"d{j}": [rng.choice(["a", "b", 1, 1.0, True, "c", 7]) for _ in range(rng.randint(0, 3))]
                    for j in rng.sample(range(12), rng.randint(0, 6))}
            if rng.random() < 0.9:
                sub[f"q{qi}"] = docs
            if rng.random() < 0.8:
                run[f"q{qi}"] = {f"d{j}": rng.random() for j in rng.sample(range(14), rng.randint(0, 8))}
        if rng.random() < 0.2:
            run["unjudged"] = {"d1": 0.5}
        k = rng.randint(1, 6)
        want, got = _subtopic_recall_per_query(run, sub, k), subtopic_recall(run, sub, k)
        assert got == want and list(got) == list(want)
