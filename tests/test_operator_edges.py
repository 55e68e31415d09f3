"""Edges of knn_embed, dbnorm, cosine_adapter and muvera found in review: a cosine reader after an interleaving
knn_embed, a cosine adapter's threshold on a one-document or identical-documents corpus, cross-field refusals
located at the field, dbnorm's inverse temperatures at the ends of float range, knn_embed's one-document words."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from ragkit.encoders import HashingEncoder, register_encoder, unregister_encoder
from ragkit.errors import ConfigError, ParamError
from ragkit.filters import CosineAdapter, DBNorm, DBNormDense
from ragkit.filters.cosine_adapter import choose_threshold, threshold_reached
from ragkit.pipelines import load_yaml
from ragkit.retrievers import Dense, Muvera
from ragkit.retrievers.knn_embed import KnnEmbed
from ragkit.types import Corpus, TrainSet

MODEL = "edges-bow"
WORDS = "apple pear cherry grape melon lemon lime kiwi plum peach fig date".split()


@pytest.fixture(autouse=True)
def bow():
    register_encoder(MODEL, HashingEncoder(dim=32), replace=True)
    yield
    unregister_encoder(MODEL)


def _fruit(n: int = 60, seed: int = 0) -> tuple[Corpus, TrainSet]:
    rng = np.random.default_rng(seed)
    corpus = Corpus(ids=[str(i) for i in range(n)], texts=[" ".join(rng.choice(WORDS, 3)) for _ in range(n)])
    train = TrainSet({f"t{i}": " ".join(rng.choice(WORDS, 2)) for i in range(30)},
                     {f"t{i}": {str(i): 1} for i in range(30)})
    return corpus, train


# ----------------------------------------------------------------------------- 1. knn_embed merge: interleave
@pytest.mark.parametrize("reader", [DBNorm, CosineAdapter])
def test_a_cosine_reader_after_an_interleaving_knn_embed_is_refused_at_fit(reader):
    """Its scores are rank scores (k - i) / k: the pipeline fitted, then every search failed ("as after mmr")."""
    corpus, train = _fruit()
    knn = KnnEmbed(model=MODEL, k=20, n_clusters=4, min_cluster_size=2, collapse_at=1.0, merge="interleave")
    pipe = knn | reader(model=MODEL)
    with pytest.raises(ConfigError, match="merge: interleave") as got:
        pipe.fit(corpus, train)
    assert "set merge: score on pipeline[0].knn_embed" in str(got.value)
    assert got.value.path == f"pipeline[1].{reader.name}"
    assert not knn.is_fitted  # refused before any work
    ok = KnnEmbed(model=MODEL, k=20, n_clusters=4, min_cluster_size=2, collapse_at=1.0) | reader(model=MODEL)
    assert len(ok.fit(corpus, train).search(["apple pear"])) == 1  # merge: score (the default) gives cosines


def test_a_cosine_reader_after_an_interleaving_knn_embed_is_refused_in_yaml(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("pipeline:\n  - knn_embed: {k: 20, merge: interleave}\n  - dbnorm: {}\n")
    with pytest.raises(ConfigError, match=r"line 3: pipeline\[1\]\.dbnorm: .*merge: interleave.*set merge: score"):
        load_yaml(path)


# ----------------------------------------------------------------------------- 2. cosine_adapter's threshold
def test_cut_below_is_the_logit_midpoint_and_keeps_the_cut_offs_candidates():
    from ragkit.filters.cosine_adapter import cut_below

    probs = np.array([0.95, 0.9, 0.8, 0.8, 0.3, 0.2])
    labels = np.array([1, 0, 1, 0, 0, 1])
    t = choose_threshold(probs, labels, "recall", 0.6)
    assert t == 0.8
    cut = cut_below(probs, t)
    logit = np.log(cut / (1 - cut))
    assert logit == pytest.approx((np.log(0.8 / 0.2) + np.log(0.3 / 0.7)) / 2)
    assert 0.3 < cut < 0.8 and threshold_reached(probs, labels, cut) == threshold_reached(probs, labels, t)
    assert cut_below(probs, 0.2) == 0.0  # nothing below: keeps every candidate
    assert cut_below(np.array([1.0, 0.0]), 1.0) == 0.5  # (logit inf and -inf)
    edge = np.nextafter(0.5, 0.0)
    assert cut_below(np.array([0.5, edge]), 0.5) == 0.5  # a gap of one ulp: its upper edge


def test_a_one_document_corpus_keeps_its_document_for_the_training_query(caplog):
    """Every candidate relevant: the threshold was the out-of-fold probability itself, 0.9999944832057563, and
    a search in a batch of two rounded the training query's probability below it: [[], []]."""
    corpus = Corpus(ids=["a"], texts=["only doc"])
    train = TrainSet({f"q{i}": "only" for i in range(12)}, {f"q{i}": {"a": 1} for i in range(12)})
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe = (Dense(model=MODEL, k=5) | CosineAdapter(model=MODEL)).fit(corpus, train)
    assert pipe.steps[1].threshold_ == 0.0
    assert pipe.search(["only", "zzz"]).doc_ids[0].tolist() == ["a"]
    assert pipe.search(["only"]).doc_ids[0].tolist() == ["a"]
    said = " ".join(r.getMessage() for r in caplog.records if r.name == "ragkit")
    assert "every retrieved training candidate is relevant" in said and "keeps every candidate" in said


def test_identical_documents_are_kept_together():
    """Five identical documents, one judged relevant: every probability alike (0.2000099), the threshold that
    probability, and the final adapter's rounding below it kept none."""
    corpus = Corpus(ids=list("abcde"), texts=["same"] * 5)
    train = TrainSet({f"q{i}": "same" for i in range(12)}, {f"q{i}": {"a": 1} for i in range(12)})
    pipe = (Dense(model=MODEL, k=5) | CosineAdapter(model=MODEL)).fit(corpus, train)
    assert sorted(pipe.search(["same"]).doc_ids[0].tolist()) == list("abcde")


# ----------------------------------------------------------------------------- 3. cross-field refusals
@pytest.mark.parametrize("text, path, says", [
    ("  - dense: {k: 10}\n  - dbnorm: {beta: 10}\n", "pipeline[1].dbnorm.beta",
     "beta=10.0 has no effect without method: is or qbnorm"),
    ("  - muvera: {d_final: 20000}\n", "pipeline[0].muvera.d_final", "d_final (20000) must be smaller"),
    ("  - muvera: {k: 300}\n", "pipeline[0].muvera.k", "candidates (200) must be >= k (300)"),
    ("  - muvera: {r_reps: 20000}\n", "pipeline[0].muvera.r_reps", "r_reps * 2**k_sim * d_proj = 20000 * 2**5 * 16"),
    ("  - knn_embed: {prior: local, local_depth: 2}\n", "pipeline[0].knn_embed.local_depth",
     "local_depth (2) must be >= n_neighbors"),
    ("  - dense: {k: 10}\n  - dbnorm: {query_bank: pseudo, query_bank_size: 1}\n",
     "pipeline[1].dbnorm.query_bank_size", "query_bank_size=1 with query_bank='pseudo'"),
])
def test_cross_field_refusals_name_the_field(tmp_path, text, path, says):
    """They named the operator (``pipeline[1].dbnorm: beta=10.0 ...``) and ended with the whole mapping
    (``got {'beta': 10}``)."""
    file = tmp_path / "p.yaml"
    file.write_text("pipeline:\n" + text)
    with pytest.raises(ParamError) as got:
        load_yaml(file)
    assert got.value.path == path
    assert f"{path}: " in str(got.value) and says in str(got.value)
    assert "got {" not in str(got.value)


def test_cross_field_refusals_in_python_name_the_field():
    with pytest.raises(ParamError) as got:
        DBNorm(beta=10)
    assert got.value.path == "dbnorm.beta" and str(got.value).startswith("dbnorm.beta: beta=10")
    with pytest.raises(ParamError) as got:
        Muvera(d_final=20000)
    assert got.value.path == "muvera.d_final" and "got {" not in str(got.value)


# ----------------------------------------------------------------------------- 4. dbnorm's inverse temperatures
@pytest.mark.parametrize("make", [lambda b: DBNormDense(method="is", beta=b), lambda b: DBNorm(method="is", beta=b),
                                  lambda b: DBNormDense(beta1=b), lambda b: DBNorm(beta2=b)])
@pytest.mark.parametrize("beta", [1e-300, 1e-7, 1e38, 1e300])
def test_betas_beyond_float_range_are_refused_when_built(make, beta):
    """beta=1e-300 overflowed float32 in dbnorm_dense's fit ("RuntimeWarning: overflow encountered in cast",
    then "VectorIndex.build: the vectors contain NaN or infinite values"); 1e300 overflowed the reranker's
    bank scores and was reported as documents with no bank term."""
    with pytest.raises(ParamError, match=r"expected a value (>= 1e-06|< 1e\+37)") as got:
        make(beta)
    assert got.value.path.split(".")[-1] in ("beta", "beta1", "beta2")


def test_dbnorm_dense_ranks_exactly_at_a_small_beta(tmp_path):
    """Its penalty coordinate was log Z / beta: at beta=1e-5 about 4e5, rounded in float32 to ~0.03, more than the
    cosines' differences, so it ranked by rounding; centred, it holds (log Z - shift) / beta, within [-2, 2]."""
    corpus, train = _fruit(40, seed=3)
    beta = 1e-5
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        op = DBNormDense(model=MODEL, method="is", beta=beta, k=10).fit(corpus, train)
    queries = ["apple pear", "kiwi fig lime", "melon"]
    run = op.search(queries)
    enc = HashingEncoder(dim=32)
    d = enc.encode(list(corpus.texts)).astype(np.float64)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    q = enc.encode(queries).astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact = (beta * (q @ d.T) - op.log_z_q_) / beta  # the score over beta: the order, at cosine resolution
    for i, ranking in enumerate(run.rankings):
        got = exact[i, ranking.rows]
        assert np.all(np.diff(got) <= 1e-6)  # in exact order
        rest = np.delete(exact[i], ranking.rows)
        assert got.min() >= rest.max() - 1e-6  # and the exact top 10
        assert np.abs(ranking.fields["cosine"] - (q[i] @ d[ranking.rows].T)).max() < 1e-5
    op.save(tmp_path / "dd")
    back = DBNormDense.load(tmp_path / "dd")
    again = back.search(queries)
    for a, b in zip(run.rankings, again.rankings):
        assert a.rows.tolist() == b.rows.tolist() and np.array_equal(a.scores, b.scores)


# ----------------------------------------------------------------------------- 5. knn_embed's words
def test_knn_embed_on_one_document_says_so_in_the_singular(caplog):
    corpus = Corpus(ids=["a"], texts=["only doc"])
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        run = KnnEmbed(model=MODEL, k=10, n_clusters=2).fit(corpus).search(["only"])
    assert run.doc_ids[0].tolist() == ["a"]
    said = [r.getMessage() for r in caplog.records if r.name == "ragkit"]
    assert any("the corpus has 1 document; using 1 cluster (one per document)" in m for m in said), said
    assert any("the corpus has one document, so there is nothing to mix" in m for m in said), said
    assert not any("1 documents" in m or "1 clusters" in m or "all alike" in m for m in said), said
