"""A user's diversity review: a LangChain call's ``k`` over an operator's own ``k`` in ``search_kwargs``,
LangChain's MMR words (``search_type``, ``lambda_mult``, ``fetch_k``), MMR's per-call ``lambda_mult`` and
``fetch_k``, kNN-Embed's fit hint, and the vector measures refusing a ranking that repeats a document."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import HashedEncoder

from ragkit.encoders import register_encoder, unregister_encoder
from ragkit.errors import DataError, ParamError
from ragkit.eval import diversity as div
from ragkit.filters.mmr import MMR
from ragkit.options import check_options
from ragkit.retrievers import BM25
from ragkit.retrievers.knn_embed import KnnEmbed
from ragkit.run import Run
from ragkit.types import Corpus, Ranking, State

D = 16
WORDS = "apple banana cherry grape lemon mango olive peach pear plum".split()


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _docs(n=40):
    return [f"{WORDS[i % 10]} {WORDS[(i * 3) % 10]} fruit number {i}" for i in range(n)]


# ---------------------------------------------------------------------- 1. the call's k comes first
def test_langchain_call_k_raises_an_operators_own_k_from_search_kwargs():
    """search_kwargs={"bm25": {"k": 2}} then invoke(q, k=6) gave 2 documents, silently."""
    from ragkit.integrations.langchain import RagkitRetriever

    r = RagkitRetriever(pipeline=BM25(), corpus=_docs(), search_kwargs={"bm25": {"k": 2}})
    assert len(r.invoke("apple fruit")) == 2  # no call k: the operator's own k, exactly
    assert len(r.invoke("apple fruit", k=6)) == 6  # the call's k comes first
    assert [len(d) for d in r.batch(["apple fruit", "plum fruit"], k=5)] == [5, 5]
    assert len(r.invoke("apple fruit", k=1)) == 1  # a smaller call k: the final cut, as in pipeline.search
    # the operator's k given in the call itself stays exact, as in pipeline.search
    assert len(r.invoke("apple fruit", k=6, bm25={"k": 3})) == 3
    assert len(r.pipeline.search(["apple fruit"], k=6, bm25={"k": 2}).rankings[0]) == 2
    assert r.search_kwargs == {"bm25": {"k": 2}}  # the retriever's settings unchanged


# ---------------------------------------------------------------------- 2. LangChain's MMR words
def test_langchain_mmr_words_say_mmr_is_a_pipeline_step():
    from ragkit.integrations.langchain import RagkitRetriever

    r = RagkitRetriever(pipeline=BM25(), corpus=_docs())
    step = "MMR is a pipeline step"
    with pytest.raises(ValueError, match=f"search_type.*no search_type.*{step}.*mmr=") as e:
        RagkitRetriever(pipeline=r.pipeline, search_type="mmr")
    for key, value in (("lambda_mult", 0.2), ("fetch_k", 20)):
        with pytest.raises(ValueError, match=f"search_kwargs: search option '{key}': not an option.*{step}"):
            RagkitRetriever(pipeline=r.pipeline, search_kwargs={key: value})
        with pytest.raises(ParamError, match=f"'{key}'.*{step}.*mmr=") as e:
            r.invoke("apple", **{key: value})
        assert e.value.path == f"options.{key}"
        with pytest.raises(ParamError, match=step):
            r.batch(["apple", "plum"], **{key: value})
    with pytest.raises(ParamError, match=f"no search_type.*{step}"):
        r.invoke("apple", search_type="mmr")
    with pytest.raises(ValueError, match="did you mean k"):  # the other hints are unchanged
        RagkitRetriever(pipeline=r.pipeline, top_k=3)


# ---------------------------------------------------------------------- 2. MMR's per-call options
@pytest.fixture(scope="module")
def blobs():
    """4 separated clusters of 30 docs (orthogonal centres); (corpus, vectors)."""
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 30)
    vecs = _unit(np.eye(D, dtype=np.float32)[truth] + 0.05 * rng.standard_normal((len(truth), D)))
    return Corpus.from_texts([f"doc {i}" for i in range(len(truth))]), vecs


def _mmr(blobs, **kw):
    corpus, vecs = blobs
    op = MMR(**kw)
    op.corpus_, op.vectors_ = corpus, vecs
    return op


def _run(op, q, rankings, **options):
    state = State([f"q{i}" for i in range(len(q))], vectors={op.encoder.key: q}, rankings=rankings, options=options)
    return [r.rows.tolist() for r in op(state).rankings]


def test_mmr_reads_lambda_mult_and_fetch_k_per_call(blobs):
    q = _unit(np.eye(D)[[0, 1]] + 0.3 * np.eye(D)[[1, 2]])
    # each query's incoming ranking: the 20 documents of its own cluster, then 20 of the next, by cosine
    vecs = blobs[1]
    rankings = []
    for i, row in enumerate(q):
        pool = np.concatenate([np.arange(30 * i, 30 * i + 20), np.arange(30 * (i + 1), 30 * (i + 1) + 20)])
        order = pool[np.argsort(-(vecs[pool] @ row), kind="stable")]
        rankings.append(Ranking(order, np.linspace(1, 0, len(order))))
    base = _mmr(blobs, k=5, lambda_mult=0.5)
    for lam in (0.0, 1.0):
        assert _run(base, q, rankings, mmr={"lambda_mult": lam}) == _run(_mmr(blobs, k=5, lambda_mult=lam), q,
                                                                             rankings)
    assert _run(base, q, rankings, mmr={"lambda_mult": 0.0}) != _run(base, q, rankings, mmr={"lambda_mult": 1.0})
    assert _run(base, q, rankings, mmr={"fetch_k": 6}) == _run(_mmr(blobs, k=5, fetch_k=6, lambda_mult=0.5), q,
                                                                 rankings)
    assert _run(base, q, rankings, mmr={"fetch_k": 6}) != _run(base, q, rankings)
    # checked as the parameters are, before any work
    assert check_options(base, {"mmr": {"lambda_mult": "0.25", "fetch_k": 7}}) == {
        "mmr": {"lambda_mult": 0.25, "fetch_k": 7}}
    with pytest.raises(ParamError, match="lambda_mult"):
        check_options(base, {"mmr": {"lambda_mult": 2}})
    with pytest.raises(ParamError, match="fetch_k"):
        check_options(base, {"mmr": {"fetch_k": 0}})


def test_langchain_invoke_passes_mmr_lambda_mult():
    """invoke(q, mmr={"lambda_mult": 1.0}) was refused: MMR declared only k as a run-time option."""
    from ragkit.integrations.langchain import RagkitRetriever

    register_encoder("user-div-hashed", HashedEncoder("user-div-hashed-v1", D), replace=True)
    try:
        r = RagkitRetriever(pipeline=BM25(k=20) | MMR(model="user-div-hashed", k=5, lambda_mult=0.0),
                            corpus=_docs(), k=5)
        plain = [d.id for d in r.invoke("apple banana fruit")]
        relevance = [d.id for d in r.invoke("apple banana fruit", mmr={"lambda_mult": 1.0})]
        again = RagkitRetriever(pipeline=r.pipeline, k=5, search_kwargs={"mmr": {"lambda_mult": 1.0}})
        assert [d.id for d in again.invoke("apple banana fruit")] == relevance
        assert len(relevance) == 5 and relevance != plain
        cos = [d.metadata["fields"]["cosine"] for d in r.invoke("apple banana fruit", mmr={"lambda_mult": 1.0})]
        assert cos == sorted(cos, reverse=True)  # lambda_mult 1: pure relevance, cosine order
    finally:
        unregister_encoder("user-div-hashed")


# ---------------------------------------------------------------------- 3. kNN-Embed's fit hint
def test_knn_embed_fit_hint_never_suggests_fewer_than_two_clusters(caplog):
    """12 documents, min_cluster_size 5 said 'n_clusters at most ~1', a value n_clusters refuses (>= 2)."""
    rng = np.random.default_rng(1)
    vecs = _unit(rng.standard_normal((12, D)))
    corpus = Corpus.from_texts([f"doc {i}" for i in range(12)])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        op = KnnEmbed(n_init=1, min_cluster_size=5).fit_vectors(corpus, vecs)
    msgs = [r.getMessage() for r in caplog.records if r.name == "ragkit" and r.levelno == logging.WARNING]
    assert len(msgs) == 1 and "lower min_cluster_size" in msgs[0], msgs
    assert "n_clusters at most" not in msgs[0]
    c = len(op.centroids_)
    assert f"~{max(1, 12 // (2 * c))} or less for the {c} clusters of the 12 documents" in msgs[0]


# ---------------------------------------------------------------------- 4. repeats in the vector measures
def test_vector_measures_refuse_a_ranking_listing_a_document_twice():
    """Ranking([0, 0, 1]) with eye(3) gave ILD 0.667 (the copy counted as a pair of cosine 1)."""
    vecs, labels = np.eye(3, dtype=np.float32), np.array([0, 1, 2])
    ok = Ranking(np.array([0, 1, 2]), np.array([3., 2., 1.]))
    twice = Ranking(np.array([1, 0, 1]), np.array([3., 2., 1.]))
    for measure, data in ((div.intra_list_diversity, vecs), (div.near_duplicate_rate, vecs),
                          (div.distinct_clusters, labels), (div.cluster_entropy, labels)):
        with pytest.raises(DataError, match=r"ranking 1 lists row 1 twice \(ranks 1 and 3\)"):
            measure([ok, twice], data, k=3)
        assert np.all(np.isfinite(measure([ok], data, k=3)))
    assert div.intra_list_diversity([twice], vecs, k=2)[0] == pytest.approx(1.0)  # a repeat below k is not read
    run = Run.from_rankings(["qa", "qb"], [ok, twice], np.array(["a", "b", "c"]))
    with pytest.raises(DataError, match="query 'qb' lists row 1 twice"):
        div.intra_list_diversity(run, vecs, k=3)
    with pytest.raises(DataError, match=r"row -1 \(ranking 0, rank 2\)"):  # a row outside still says so
        div.intra_list_diversity([Ranking(np.array([0, -1, -1]), np.array([3., 2., 1.]))], vecs, k=3)
