"""The diversity review's fixes: kNN-Embed's k budget and degenerate clusterings, its ``filter`` parameter,
MMR's capped pool and repeated rows, the diversity measures' k and scale, the bench's fallback choice."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import bench_module

from ragkit.errors import DataError, ParamError
from ragkit.eval import diversity as div
from ragkit.eval.metrics import evaluate
from ragkit.filters.mmr import MMR
from ragkit.retrievers.knn_embed import KnnEmbed, largest_remainder
from ragkit.run import Run
from ragkit.types import Corpus, Ranking, State

D = 32
REPO = Path(__file__).resolve().parents[1]


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def blobs():
    """4 separated clusters of 60 docs (orthogonal centres), a ``colour`` column; (corpus, vectors)."""
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 60)
    vecs = _unit(np.eye(D, dtype=np.float32)[truth] + 0.05 * rng.standard_normal((len(truth), D)))
    colour = np.array(["red", "blue"], dtype=object)[rng.integers(0, 2, len(truth))]
    return Corpus.from_texts([f"doc {i}" for i in range(len(truth))], colour=colour), vecs


def _queries(n=6):
    """Queries between two clusters: never collapsed to one component."""
    e = np.eye(D)
    return _unit(np.stack([e[i % 4] + e[(i + 1) % 4] for i in range(n)]))


def _state(op, q, **options):
    return State([f"q{i}" for i in range(len(q))], vectors={op.dense.encoder.key: q}, options=options)


def _ragkit_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "ragkit" and r.levelno == logging.WARNING]


# ---------------------------------------------------------------------- 1. the k budget
def test_knn_embed_warns_once_when_the_call_keeps_only_anchor_results(blobs, caplog):
    """k=40, anchor_share 0.5, merge score searched with k=10: the top 10 are the anchor's dense top 10
    (silently before); a warning says so once per operator object, naming the ways out."""
    corpus, vecs = blobs
    op = KnnEmbed(k=40, n_clusters=4, n_init=2, anchor_share=0.5, weight_floor=0.0).fit_vectors(corpus, vecs)
    q = _queries()
    dense_top = np.argsort(-(q @ vecs.T), axis=1, kind="stable")[:, :10]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        out = op(_state(op, q, k=10)).rankings
        op(_state(op, q, k=10))
    assert [sorted(r.rows[:10].tolist()) for r in out] == [sorted(t.tolist()) for t in dense_top]
    msgs = _ragkit_warnings(caplog)
    assert len(msgs) == 1, msgs
    assert "top 10 are plain dense" in msgs[0] and "k=10" in msgs[0] and "interleave" in msgs[0]
    # no warning where the top-k is diversified: the call's k above the anchor's 20, its own k, interleave
    for other, options, diverse in ((op.with_params(), {"k": 25}, False),
                                    (op.with_params(), {"k": 10, "knn_embed": {"k": 10}}, True),
                                    (op.with_params(merge="interleave"), {"k": 10}, True),
                                    (op.with_params(), {}, False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ragkit"):
            res = other(_state(other, q, **options)).rankings
        assert _ragkit_warnings(caplog) == [], options
        if diverse:  # the ways out the warning names do diversify the top 10
            assert all(set(r.rows[:10].tolist()) != set(t.tolist()) for r, t in zip(res, dense_top))


def test_knn_embed_is_quiet_when_a_later_step_reads_its_whole_ranking(blobs, caplog):
    """The same k=40 / anchor 0.5 operator searched with k=10: a reranker or fuser after it reads all 40
    results (the advice k=10 would cut MMR's pool or the fusion's input to 10), so no warning; searched alone,
    last, or before a filter that keeps its order (top_k), the warning stays, and a top_k cutting to the dense
    slots before the reranker warns that it reranks plain dense results."""
    from ragkit.filters import TopK
    from ragkit.pipelines import RRF, Pipeline
    from ragkit.pipelines._compose import ranked_later

    corpus, vecs = blobs
    op = KnnEmbed(k=40, n_clusters=4, n_init=2, anchor_share=0.5, weight_floor=0.0).fit_vectors(corpus, vecs)
    q = _queries()

    def warnings_of(pipe):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ragkit"):
            out = pipe(_state(op, q, k=10))
        assert not ranked_later()  # set only while the steps run
        return _ragkit_warnings(caplog), out

    fresh = op.with_params  # a new operator object each time (the warning is once per object)
    quiet = [fresh() | _mmr(blobs, k=10),
             (fresh() + fresh()) | RRF(k=60),
             Pipeline([fresh(), TopK(k=30), _mmr(blobs, k=10)]),  # MMR reads 30: 10 beyond the 20 dense slots
             Pipeline([Pipeline([fresh(), TopK(k=30)]), _mmr(blobs, k=10)])]  # the reranker in the outer pipeline
    for pipe in quiet:
        msgs, out = warnings_of(pipe)
        assert msgs == [], (pipe, msgs)
    # a top_k cutting to the 20 dense slots before the reranker: MMR reranks plain dense results (a review found
    # these quiet: ranked_later was a flag carried back through the cut)
    for pipe in (Pipeline([fresh(), TopK(k=20), _mmr(blobs, k=10)]),
                 Pipeline([Pipeline([fresh(), TopK(k=20)]), _mmr(blobs, k=10)])):
        msgs, _ = warnings_of(pipe)
        assert len(msgs) == 1 and "reorders or fuses only its top 20" in msgs[0], (pipe, msgs)
    # without a call's k too: the cut is the pipeline's own (README: a plain search() warns; a review found it
    # quiet, the early return asked for the call's k before looking at the later step)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        Pipeline([fresh(), TopK(k=20), _mmr(blobs, k=10)])(_state(op, q))
    msgs = _ragkit_warnings(caplog)
    assert len(msgs) == 1 and "reorders or fuses only its top 20" in msgs[0], msgs
    # the MMR pipeline reads knn_embed's 40 results: its top 10 is not dense's
    dense_top = np.argsort(-(q @ vecs.T), axis=1, kind="stable")[:, :10]
    out = warnings_of(fresh() | _mmr(blobs, k=10, lambda_mult=0.5))[1]
    assert sum(set(r.rows.tolist()) == set(t.tolist()) for r, t in zip(out.rankings, dense_top)) == 0
    for pipe in (fresh(), Pipeline([fresh()]), fresh() | TopK(k=10), Pipeline([Pipeline([fresh()])])):
        msgs, _ = warnings_of(pipe)
        assert len(msgs) == 1 and "top 10 are plain dense" in msgs[0], (pipe, msgs)


def test_knn_embed_k_is_documented_as_the_shared_budget():
    desc = KnnEmbed.Params.model_fields["k"].description
    assert "anchor_share * k" in desc and "interleave" in desc
    assert "search(k=10)" in KnnEmbed.__doc__


# ---------------------------------------------------------------------- 7. degenerate clusterings
def test_knn_embed_warns_when_no_two_clusters_can_be_components(blobs, caplog):
    corpus, vecs = blobs
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        KnnEmbed(n_clusters=50, n_init=1).fit_vectors(corpus.subset(np.arange(20)), vecs[:20])
    msgs = _ragkit_warnings(caplog)  # the 50 clusters asked cut to the 20 documents, then what that leaves
    assert msgs[0] == ("knn_embed.fit: n_clusters=50 but the corpus has 20 documents; using 20 clusters "
                       "(one per document)")
    assert len(msgs) == 2 and "every query is answered as plain dense" in msgs[1] and "n_clusters" in msgs[1]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):  # 240 documents, 120 clusters: few reach 5 documents
        KnnEmbed(n_clusters=120, n_init=1).fit_vectors(corpus, vecs)
    msgs = _ragkit_warnings(caplog)
    assert len(msgs) == 1 and "most queries are answered as plain dense" in msgs[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):  # a sound clustering says nothing
        KnnEmbed(n_clusters=4, n_init=1).fit_vectors(corpus, vecs)
    assert _ragkit_warnings(caplog) == []


def test_knn_embed_identical_documents_say_it_in_ragkit_words(caplog):
    corpus = Corpus.from_texts(["the same text"] * 30)
    vecs = np.tile(_unit(np.arange(1, D + 1, dtype=np.float32)), (30, 1))
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="ragkit"):
        warnings.simplefilter("always")
        op = KnnEmbed(n_clusters=4, n_init=1).fit_vectors(corpus, vecs)
    assert [str(w.message) for w in caught if "ConvergenceWarning" in type(w.message).__name__] == []
    msgs = _ragkit_warnings(caplog)
    assert any("1 distinct cluster of the 4 asked" in m for m in msgs), msgs
    assert any("all alike" in m for m in msgs), msgs
    assert [len(set(r.rows.tolist())) for r in op(_state(op, vecs[:2])).rankings] == [30, 30]  # k: 100
    # a top-level k on a State is the final number, as search's (d22b0fc)
    assert [len(set(r.rows.tolist())) for r in op(_state(op, vecs[:2], k=10)).rankings] == [10, 10]


# ---------------------------------------------------------------------- 8. the filter parameter
def test_knn_embed_filter_parameter(blobs):
    corpus, vecs = blobs
    op = KnnEmbed(k=20, n_clusters=4, n_init=2, filter={"colour": "red"}).fit_vectors(corpus, vecs)
    assert op.params.filter == {"colour": "red"}
    red = np.flatnonzero(corpus.metadata["colour"] == "red")
    rankings = op(_state(op, _queries())).rankings
    assert all(np.isin(r.rows, red).all() and len(r) == 20 for r in rankings)
    # the same as the run-time option on an unfiltered operator
    free = KnnEmbed(k=20, n_clusters=4, n_init=2).fit_vectors(corpus, vecs)
    for r, w in zip(rankings, free(_state(free, _queries(), filter={"colour": "red"})).rankings):
        np.testing.assert_array_equal(r.rows, w.rows)
    assert "Metadata filter" in KnnEmbed.Params.model_fields["filter"].description
    with pytest.raises(ParamError, match=r"knn_embed.filter: .*year"):  # checked against the corpus at fit
        KnnEmbed(n_clusters=4, filter={"year": 2000}).fit_vectors(corpus, vecs)
    with pytest.raises(ParamError, match=r"knn_embed.filter: .*year"):
        KnnEmbed(n_clusters=4, filter={"year": 2000}).fit(corpus)


# ---------------------------------------------------------------------- 10. largest remainder ties
def test_largest_remainder_breaks_remainder_ties_by_column():
    """Kept as it was (columns are in weight order, so a tie goes to the heavier component); documented."""
    w = np.array([[0.5, 0.35, 0.15]])  # remainders of 0.35 * 10 and 0.15 * 10 tie at 0.5: the earlier column
    assert largest_remainder(w, 10)[0].tolist() == [5, 4, 1]
    assert largest_remainder(w[:, ::-1].copy(), 10)[0].tolist() == [2, 3, 5]
    assert "earlier column" in largest_remainder.__doc__ and "cluster id" in largest_remainder.__doc__


# ---------------------------------------------------------------------- 2, 9. MMR
def _mmr(blobs, **kw):
    corpus, vecs = blobs
    op = MMR(**kw)
    op.corpus_, op.vectors_ = corpus, vecs
    return op


def _mmr_state(op, q, rankings):
    return State([f"q{i}" for i in range(len(q))], vectors={op.encoder.key: q}, rankings=rankings)


def test_mmr_warns_once_when_the_pool_is_capped_by_the_retriever(blobs, caplog):
    op = _mmr(blobs, k=5, fetch_k=50)
    q = _queries(2)
    short = [Ranking(np.arange(10), np.linspace(1, 0, 10)) for _ in q]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        op(_mmr_state(op, q, short))
        op(_mmr_state(op, q, short))
    msgs = _ragkit_warnings(caplog)
    assert len(msgs) == 1 and "at most 10 documents" in msgs[0] and "fetch_k=50" in msgs[0], msgs
    # (a filter or a query matching few documents also cuts the pool: the message said only "raise the k")
    assert "a filter or a query matching few documents" in msgs[0] and "k must be at least 50" in msgs[0]
    for other, rankings in ((_mmr(blobs, k=5, fetch_k=50), [Ranking(np.arange(60), np.linspace(1, 0, 60))] * 2),
                            (_mmr(blobs, k=5, fetch_k=500), [Ranking(np.arange(240), np.linspace(1, 0, 240))] * 2),
                            (_mmr(blobs, k=5, fetch_k=50), [Ranking.empty()] * 2),
                            (_mmr(blobs, k=5), short),  # (fetch_k not set: the pool is what comes in,
                            (_mmr(blobs, k=20), short)):  # even below k: it warned "fetch_k=None")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ragkit"):  # a full pool, the whole corpus, nothing at all
            other(_mmr_state(other, q, rankings))
        assert _ragkit_warnings(caplog) == []
    desc = MMR.Params.model_fields["fetch_k"].description
    assert "retriever before MMR" in desc


def test_mmr_drops_repeated_rows(blobs):
    """[0, 0, 1] came back as [0, 1, 0]: a row the incoming ranking repeats is one candidate, at its first place."""
    corpus, _ = blobs
    op = MMR(k=3, fetch_k=3, lambda_mult=0.5)
    op.corpus_, op.vectors_ = Corpus.from_texts(list("abcd")), np.eye(4, dtype=np.float32)
    q = np.array([[1, .5, 0, 0]], np.float32)
    out = op(_mmr_state(op, q, [Ranking(np.array([0, 0, 1]), np.array([3, 2, 1], np.float32),
                                        {"tag": np.array([10, 11, 12])})])).rankings[0]
    assert out.rows.tolist() == [0, 1]
    assert out.fields["tag"].tolist() == [10, 12]  # the first occurrence's fields
    # a batch with repeats in some rows only, padded rows, and the same answer as the de-duplicated input
    big = _mmr(blobs, k=4, fetch_k=8, lambda_mult=0.5)
    q2 = _queries(3)
    rep = [Ranking(np.array([5, 5, 70, 5, 130, 70, 190]), np.linspace(1, 0, 7)),
           Ranking(np.array([3, 4]), np.array([1., .5])), Ranking(np.array([9, 9]), np.array([1., .5]))]
    ded = [Ranking(np.array([5, 70, 130, 190]), np.linspace(1, 0, 4)),
           Ranking(np.array([3, 4]), np.array([1., .5])), Ranking(np.array([9]), np.array([1.]))]
    got = big(_mmr_state(big, q2, rep)).rankings
    want = big(_mmr_state(big, q2, ded)).rankings
    assert [r.rows.tolist() for r in got] == [r.rows.tolist() for r in want]
    assert all(len(set(r.rows.tolist())) == len(r) for r in got)


# ---------------------------------------------------------------------- 5, 6. the measures
def test_subtopic_measures_refuse_k_below_one():
    run = Run.from_dict({"q": {"a": 3.0, "b": 2.0, "c": 1.0}})
    sub = {"q": {"a": ["t1"], "b": ["t1"], "c": ["t2"]}}
    for k in (0, -1):
        with pytest.raises(DataError, match="alpha_ndcg: k must be >= 1"):
            div.alpha_ndcg(run, sub, k)
        with pytest.raises(DataError, match="subtopic_recall: k must be >= 1"):
            div.subtopic_recall(run, sub, k)
    assert div.subtopic_recall(run, sub, 1) == {"q": 0.5}


def test_subtopic_measures_check_the_labels_as_evaluate_checks_qrels():
    """A string instead of a list was read as its characters (S-recall@1 0.857 instead of 0.5), integer doc
    ids scored 0.0 and an integer query id left the run's "1" unscored: ids are now strings as in qrels, and
    a document's labels must be a list, tuple or set."""
    run = Run.from_dict({"q1": {"a": 2.0, "b": 1.0}})
    for measure in (div.alpha_ndcg, div.subtopic_recall):
        name = measure.__name__
        with pytest.raises(DataError, match=rf"{name}: subtopics\['q1'\]\['a'\] is one string \('topic1'\)"):
            measure(run, {"q1": {"a": "topic1", "b": "topic2"}}, k=1)
        for bad, where in (({"q1": {"a": None}}, r"\['q1'\]\['a'\] is None"),
                           ({"q1": {"a": 3}}, r"\['q1'\]\['a'\] is an int"),
                           ({"q1": {"a": [["t"]]}}, r"\['q1'\]\['a'\] holds a list"),
                           ({"q1": ["a", "b"]}, r"subtopics\['q1'\] is a list"),
                           ([("q1", "a", "t")], "subtopics must be a mapping"),
                           ({"q1": {1: ["t"], "1": ["u"]}}, "names a document twice"),
                           ({1: {"a": ["t"]}, "1": {"a": ["u"]}}, "name a query twice")):
            with pytest.raises(DataError, match=rf"{name}: .*{where}"):
                measure(run, bad, k=2)
    # integer ids meet the run's string ids, as in qrels
    assert div.alpha_ndcg(Run.from_dict({"q1": {"1": 2.0, "2": 1.0}}), {"q1": {1: ["t"], 2: ["u"]}}, k=2) == {"q1": 1.0}
    assert div.alpha_ndcg(Run.from_dict({"1": {"a": 2.0}}), {1: {"a": ["t"]}}, k=2) == {"1": 1.0}
    assert div.subtopic_recall(Run.from_dict({"1": {"a": 2.0}}), {1: {"a": ["t"], "b": ["u"]}}, k=1) == {"1": 0.5}
    # tuples, sets and 1-d arrays are lists of labels; the same values as a list
    want = div.subtopic_recall(run, {"q1": {"a": ["t1"], "b": ["t2"]}}, k=1)
    assert want == {"q1": 0.5}
    for labels in (("t1",), {"t1"}, frozenset(["t1"]), np.array(["t1"])):
        assert div.subtopic_recall(run, {"q1": {"a": labels, "b": ["t2"]}}, k=1) == want
    assert div.alpha_ndcg(run, {"q1": {"a": ("t1", "t1"), "b": {"t2"}}}, k=2) == \
        div.alpha_ndcg(run, {"q1": {"a": ["t1"], "b": ["t2"]}}, k=2)


def test_alpha_ndcg_documents_its_ideal_tie_rule_and_mixture_its_zero_rows():
    assert "largest document id" in div.alpha_ndcg.__doc__
    # two documents of equal gain: the ideal takes "b" first; either order gives the ideal's DCG here
    sub = {"q": {"a": ["t1"], "b": ["t2"]}}
    assert div.alpha_ndcg(Run.from_dict({"q": {"a": 2.0, "b": 1.0}}), sub, k=1) == {"q": 1.0}
    doc = KnnEmbed.mixture.__doc__
    assert "weight_floor" in doc and "row of zeros" in doc and "collapsed" in doc


def test_pairwise_measures_are_cosines_at_any_scale():
    rng = np.random.default_rng(3)
    v = _unit(rng.standard_normal((6, 8)))
    v[5] = v[0]
    r = [Ranking(np.arange(6), np.linspace(1, 0, 6).astype(np.float32)), Ranking(np.array([0, 5]), np.ones(2))]
    ild, ndr = div.intra_list_diversity(r, v, 6), div.near_duplicate_rate(r, v, 6)
    scale = rng.uniform(0.1, 5, (6, 1)).astype(np.float32)
    np.testing.assert_allclose(div.intra_list_diversity(r, 3 * v, 6), ild, atol=1e-6)  # was -0.18 vs 0.87
    np.testing.assert_allclose(div.intra_list_diversity(r, v * scale, 6), ild, atol=1e-6)
    np.testing.assert_array_equal(div.near_duplicate_rate(r, 0.5 * v, 6), ndr)  # was 0: cosine 0.25 < 0.95
    # unit vectors pass unchanged: the values of the plain product
    cos = v @ v.T
    np.testing.assert_allclose(ild[0], 1 - cos[np.triu_indices(6, 1)].mean(), atol=1e-6)
    # a zero vector: cosine 0 with every document
    z = np.vstack([v[:3], np.zeros((1, 8), np.float32)])
    got = div.intra_list_diversity([Ranking(np.array([0, 3]), np.ones(2)), Ranking(np.array([0, 1, 3]), np.ones(3))],
                                   2 * z, 3)
    np.testing.assert_allclose(got, [1.0, 1 - (v[0] @ v[1]) / 3], atol=1e-6)


def test_subtopic_measures_refuse_a_document_listed_twice():
    """alpha-nDCG@3 of ["d1", "d1", "d2"] was 1.31 (d1 gained twice, alpha 0) where evaluate refuses the run."""
    run = Run(["q"], [np.array(["d1", "d1", "d2"], dtype=object)], [np.array([3, 2, 1], np.float32)])
    sub = {"q": {"d1": ["A"], "d2": ["B"]}}
    with pytest.raises(DataError, match="retrieves document 'd1' more than once"):
        evaluate(run, {"q": {"d1": 1, "d2": 1}}, ["ndcg@3"])
    with pytest.raises(DataError, match=r"alpha_ndcg: query 'q' retrieves document 'd1' more than once"):
        div.alpha_ndcg(run, sub, k=3, alpha=0.0)
    with pytest.raises(DataError, match=r"subtopic_recall: query 'q' retrieves document 'd1' more than once"):
        div.subtopic_recall(run, sub, k=3)
    ok = Run(["q"], [np.array(["d1", "d2"], dtype=object)], [np.array([3, 2], np.float32)])
    assert div.alpha_ndcg(ok, sub, k=3, alpha=0.0) == {"q": 1.0}


def test_subtopic_measures_take_a_run_as_evaluate_does():
    """A dict {qid: {doc: score}}, which evaluate takes, failed with "not enough values to unpack (expected 3,
    got 1)", and so did a list of Rankings: a mapping is now read as evaluate reads it (ranked by score, ids
    as strings), anything else is a DataError saying what was given and what is expected."""
    as_dict = {"q": {"d3": 1.0, "d1": 3.0, 2: 2.0}}  # not in rank order; an integer document id
    run = Run.from_dict({"q": {"d1": 3.0, "2": 2.0, "d3": 1.0}})
    sub = {"q": {"d1": ["A"], "2": ["A"], "d3": ["B"]}}
    for measure in (div.alpha_ndcg, div.subtopic_recall):
        name = measure.__name__
        for k in (1, 2, 3):
            assert measure(as_dict, sub, k=k) == measure(run, sub, k=k)
        rankings = [Ranking(np.array([0, 1]), np.array([2.0, 1.0], np.float32))]
        with pytest.raises(DataError, match=rf"^{name}: run must be a Run \(what search returns\) or a mapping "
                                            r"\{query_id: \{doc_id: score\}\}, got a list of 1 Ranking, whose row "
                                            r"numbers name no document id"):
            measure(rankings, sub)
        for bad, what in ((None, "got None"), ([("q", "d1", 1.0)], r"got a list \(\[\('q'"),
                          ({"q": ["d1", "d3"]}, r"run\['q'\] is a list \(\['d1', 'd3'\]\), expected a mapping "
                                                r"\{doc_id: score\}"),
                          ({"q": {"d1": float("nan")}}, "query 'q' gives document 'd1' the score nan; expected "
                                                         "numbers"),
                          ({"q": {"d1": "high"}}, r"query 'q' gives document 'd1' the score 'high' \(a str\); a score "
                                                  "must be a real number"),
                          ({"q": {1: 2.0, "1": 1.0}}, r"run\['q'\] names a document twice once its ids are strings"),
                          ({1: {"d1": 1.0}, "1": {"d1": 1.0}}, "run names a query twice once its ids are strings")):
            with pytest.raises(DataError, match=rf"^{name}: (run must be .*)?{what}"):
                measure(bad, sub)


def test_alpha_ndcg_documents_that_its_greedy_ideal_can_be_beaten():
    doc = " ".join(div.alpha_ndcg.__doc__.split())
    assert "greedy" in doc and "Clarke et al. (2008)" in doc and "slightly above 1" in doc
    assert '"d2"`` before ``"d1"' in doc
    # the documented case: greedy takes d1 (2 new subtopics) first; d1, d3, d4 beats its ideal at k=3
    sub = {"q": {"d0": ["t0"], "d1": ["t0", "t2"], "d2": ["t0"], "d3": ["t1", "t3"], "d4": ["t0", "t3"]}}
    run = Run.from_dict({"q": {"d1": 3.0, "d3": 2.0, "d4": 1.0}})
    assert 1.0 < div.alpha_ndcg(run, sub, k=3)["q"] < 1.02


def test_alpha_ndcg_and_subtopic_recall_take_a_huge_k():
    """k=10**12 raised MemoryError: the discounts were built for all k ranks."""
    run = Run.from_dict({"q": {"a": 3.0, "b": 2.0, "c": 1.0}, "r": {"a": 1.0}})
    sub = {"q": {"a": ["t1"], "b": ["t1"], "c": ["t2"]}, "r": {"a": ["t1"], "b": ["t2"], "c": ["t3"], "d": ["t4"]}}
    for k in (10**12, 2**62):
        assert div.alpha_ndcg(run, sub, k=k) == div.alpha_ndcg(run, sub, k=10)
        assert div.subtopic_recall(run, sub, k=k) == div.subtopic_recall(run, sub, k=10)
    assert div.alpha_ndcg(Run([], [], []), sub, k=10**12) == {"q": 0.0, "r": 0.0}


@pytest.mark.parametrize("scale", [1e-300, 1e-40, 1e-20, 1e20, 1e40, 1e300])
def test_pairwise_measures_are_cosines_at_extreme_scales(scale):
    """float64 rows at 1e20 or 1e-20 over- or underflowed in the float32 norm (or cast): every cosine 0."""
    rng = np.random.default_rng(4)
    v = rng.standard_normal((6, 8))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v[5] = v[0]
    r = [Ranking(np.arange(6), np.linspace(1, 0, 6).astype(np.float32)), Ranking(np.array([0, 5]), np.ones(2))]
    ild, ndr = div.intra_list_diversity(r, v, 6), div.near_duplicate_rate(r, v, 6)
    assert ndr[1] == 1.0 and 0 < ndr[0] < 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / underflow warnings either
        for x in (v * scale, v * np.logspace(-5, 5, 6)[:, None] * scale):  # one scale; a scale per row
            np.testing.assert_allclose(div.intra_list_diversity(r, x, 6), ild, atol=1e-6)
            np.testing.assert_array_equal(div.near_duplicate_rate(r, x, 6), ndr)
        if 1e-30 <= scale <= 1e30:  # float32 rows: the norm's squares over/underflow beyond ~1e19 / below ~1e-19
            x = (v * scale).astype(np.float32)
            np.testing.assert_allclose(div.intra_list_diversity(r, x, 6), ild, atol=1e-6)
            np.testing.assert_array_equal(div.near_duplicate_rate(r, x, 6), ndr)
        # a zero row stays cosine 0 with every document, whatever the others' scale
        z = v.copy()
        z[3] = 0
        np.testing.assert_allclose(div.intra_list_diversity(r, z * scale, 6), div.intra_list_diversity(r, z, 6),
                                   atol=1e-6)


def test_diversity_measures_refuse_negative_rows():
    """Row -1 was read as the last vector (numpy's wrap-around): ILD of rows [-1, 0] was a number."""
    v = _unit(np.random.default_rng(5).standard_normal((4, 8)))
    labels = np.array([0, 1, 2, 3])
    one = [Ranking(np.array([0, -1]), np.ones(2, np.float32))]
    for measure in (div.intra_list_diversity, div.near_duplicate_rate):
        with pytest.raises(DataError, match=r"row -1 \(ranking 0, rank 2\), outside the 4 document vectors given; "
                                            r"expected row numbers 0\.\.3"):
            measure(one, v, 2)
    for measure in (div.distinct_clusters, div.cluster_entropy):
        with pytest.raises(DataError, match=r"row -1 \(ranking 0, rank 2\); expected row numbers 0\.\.3 into the 4 "
                                            "cluster labels"):
            measure(one, labels, 2)
    # in a Run the query is named; beyond k is not looked at; too large rows as before
    rs = [Ranking(np.array([1, 2]), np.ones(2, np.float32)), Ranking(np.array([3, -2, 0]), np.ones(3, np.float32))]
    run = Run(["a", "b"], [np.array(["x", "y"], object), np.array(["x", "y", "z"], object)],
              [r.scores for r in rs], rankings=rs)
    with pytest.raises(DataError, match=r"row -2 \(query 'b', rank 2\)"):
        div.intra_list_diversity(run, v, 3)
    with pytest.raises(DataError, match=r"row -2 \(query 'b', rank 2\)"):
        div.distinct_clusters(run, labels, 3)
    assert np.isnan(div.intra_list_diversity(run, v, 1)).all()  # one document each: no pair, no error
    np.testing.assert_array_equal(div.distinct_clusters(run, labels, 1), [1.0, 1.0])
    with pytest.raises(DataError, match=r"row 4 \(ranking 0, rank 2\), outside the 4 document vectors"):
        div.intra_list_diversity([Ranking(np.array([0, 4]), np.ones(2, np.float32))], v, 2)


# ---------------------------------------------------------------------- 4. the bench's choice
def _bench():
    """bench/diversity.py as a module (conftest.bench_module: its ``_common`` leaves ``sys.modules`` again)."""
    return bench_module("diversity")


def test_bench_choice_when_nothing_qualifies():
    bench = _bench()

    def row(i, nd, ild, rec):
        return {"i": i, "ndcg@10": nd, "ild_margin": ild, "recall_margin": rec}

    # none meets the recall condition: the largest recall margin, not the first grid row
    rows = [row(0, 0.7, (-0.05, 0.01), (-0.05, 0.01)), row(1, 0.6, (0.0, 0.01), (-0.01, 0.01)),
            row(2, 0.5, (-0.01, 0.01), (-0.03, 0.01))]
    best, why = bench.choose_setting(rows, 0.0, "ndcg")
    assert best["i"] == 1 and "NO setting" in why and "not even the recall condition" in why
    # some meet recall only: the largest ILD margin among them
    rows[2]["recall_margin"] = (0.01, 0.01)
    rows[0]["recall_margin"] = (0.02, 0.01)
    best, why = bench.choose_setting(rows, 0.0, "ndcg")
    assert best["i"] == 2 and "NO setting" in why and "recall condition" in why
    # qualifying settings: the best nDCG@10, no fallback
    rows[0]["ild_margin"] = (0.02, 0.01)
    assert bench.choose_setting(rows, 0.0, "ndcg") == (rows[0], None)
    assert bench.choose_setting(rows, 0.0, "margin")[1] is None
