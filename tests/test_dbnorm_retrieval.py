"""DBNormDense (``dbnorm_dense``): retrieval by the (dual) inverted softmax score over the whole corpus
(ALGORITHMS.md section 3, "Fit / compute", option 2), checked against a brute-force ranking by the formula."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ragkit.encoders import register_encoder, unregister_encoder
from ragkit.errors import ParamError
from ragkit.filters import DBNorm
from ragkit.filters.dbnorm import DBNormDense
from ragkit.operator import Operator
from ragkit.pipelines import Pipeline
from ragkit.pipelines.yaml import load_yaml
from ragkit.retrievers import Dense
from ragkit.types import Corpus, State, TrainSet

MODEL = "test-dbnorm-lookup"
D, N_DOCS, N_TRAIN, N_TEST = 16, 80, 60, 30


class _Lookup:
    """Each text's vector from a table (the synthetic space below); unknown texts are refused."""

    key, dim = "test-dbnorm-lookup-v1", D

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def encode(self, texts, **kw):
        return np.array([self.table[t] for t in texts], np.float32).reshape(len(texts), D)

    encode_queries = encode


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _space():
    """Documents and queries that share a common direction ``m``; document 0 *is* ``m``: a hub, close to every
    query, that crowds each query's own documents out of a short raw top-k."""
    rng = np.random.default_rng(7)
    m = _unit(rng.standard_normal(D))
    docs = _unit(rng.standard_normal((N_DOCS, D)) + 1.2 * m)
    docs[0] = m
    targets = rng.integers(1, N_DOCS, N_TRAIN + N_TEST)
    queries = _unit(docs[targets] + 0.5 * _unit(rng.standard_normal((N_TRAIN + N_TEST, D))) + 0.6 * m)
    return docs, queries[:N_TRAIN], queries[N_TRAIN:]


DOCS, TRAIN_Q, TEST_Q = _space()
CORPUS = Corpus.from_texts([f"doc {i}" for i in range(N_DOCS)], year=[2000 + i % 4 for i in range(N_DOCS)])
TRAIN = TrainSet({f"t{i}": f"train {i}" for i in range(N_TRAIN)}, {"t0": {"1": 1}})
TESTS = [f"test {i}" for i in range(N_TEST)]


@pytest.fixture(autouse=True)
def _encoder():
    table = {f"doc {i}": v for i, v in enumerate(DOCS)} | {f"train {i}": v for i, v in enumerate(TRAIN_Q)}
    table |= {f"test {i}": v for i, v in enumerate(TEST_Q)}
    register_encoder(MODEL, _Lookup(table), replace=True)
    yield
    unregister_encoder(MODEL)


def _log_z(bank, beta, drop_self=False):
    """Brute force, float64: ``log sum_b exp(beta * <b, g>)`` of every document, the self term left out."""
    s = beta * (bank.astype(np.float64) @ DOCS.astype(np.float64).T)
    if drop_self:
        np.fill_diagonal(s, -np.inf)
    top = s.max(axis=0)
    return top + np.log(np.exp(s - top).sum(axis=0))


def _brute(method="dualis", beta=20.0, beta1=0.5, beta2=3.0):
    """``(n_test, n_docs)`` float64 normalised scores of the test queries against every document."""
    cos = TEST_Q.astype(np.float64) @ DOCS.astype(np.float64).T
    if method == "is":
        return beta * cos - _log_z(TRAIN_Q, beta)
    return (beta1 + beta2) * cos - _log_z(TRAIN_Q, beta1) - _log_z(DOCS, beta2, drop_self=True)


def _top(scores, k):
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("method,kw", [("dualis", {}), ("dualis", {"beta1": 1.0, "beta2": 6.0}),
                                       ("is", {"beta": 10.0})])
def test_index_search_is_the_exhaustive_ranking_by_the_formula(method, kw):
    k = 10
    op = DBNormDense(model=MODEL, method=method, k=k, **kw).fit(CORPUS, TRAIN)
    assert op.info_["query_bank"] == "train" and op.info_["query_bank_size"] == N_TRAIN
    run = op.search(TESTS)
    brute = _brute(method, **kw)
    want = _top(brute, k)
    same = 0
    for i, r in enumerate(run.rankings):
        # the k best by the formula, in its order: exactly, but for documents whose float64 scores differ by
        # less than float32 rounding (the index scores in float32), which may swap
        np.testing.assert_allclose(brute[i, r.rows], brute[i, want[i]], rtol=0, atol=1e-5)
        same += r.rows.tolist() == want[i].tolist()
        np.testing.assert_allclose(r.scores, brute[i, r.rows], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(r.fields["cosine"], TEST_Q[i] @ DOCS[r.rows].T, atol=1e-5)
    assert same >= N_TEST - 2


def test_index_search_finds_documents_a_hub_crowded_out_of_the_reranked_top_k():
    """``dense | dbnorm`` reorders the raw top-K' only: where the hub (document 0) and its like took those slots,
    a document the normalised score ranks high is never seen.  The index retrieves it; on the raw top-K' both agree
    on the scores."""
    k = 3
    index = DBNormDense(model=MODEL, k=k).fit(CORPUS, TRAIN).search(TESTS)
    rerank = (Dense(model=MODEL, k=k) | DBNorm(model=MODEL)).fit(CORPUS, TRAIN).search(TESTS)
    raw = Dense(model=MODEL, k=k).fit(CORPUS).search(TESTS)
    hub_in_raw = sum(0 in r.rows.tolist() for r in raw.rankings)
    hub_in_index = sum(0 in r.rows.tolist() for r in index.rankings)
    assert hub_in_raw >= N_TEST // 3 and hub_in_index < hub_in_raw  # the planted hub, demoted before the cut
    missed = [i for i, (a, b) in enumerate(zip(index.rankings, rerank.rankings))
              if set(a.rows.tolist()) - set(b.rows.tolist())]
    assert missed, "the index found no document outside the reranked top-k"
    for i in missed:  # what the index found beyond the reranked candidates was never among the raw top-k
        extra = set(index.rankings[i].rows.tolist()) - set(rerank.rankings[i].rows.tolist())
        assert not extra & set(raw.rankings[i].rows.tolist())
    # on a candidate both hold, the scores agree (the same penalties, float32 rounding aside)
    for a, b in zip(index.rankings, rerank.rankings):
        common = np.intersect1d(a.rows, b.rows)
        sa = dict(zip(a.rows.tolist(), a.scores.tolist()))
        sb = dict(zip(b.rows.tolist(), b.scores.tolist()))
        for row in common.tolist():
            assert sa[row] == pytest.approx(sb[row], rel=1e-5, abs=1e-4)


def test_save_load_gives_the_same_rankings(tmp_path):
    pipe = Pipeline([DBNormDense(model=MODEL, k=7, gallery_bank_size=40)]).fit(CORPUS, TRAIN)
    before = pipe.search(TESTS)
    pipe.save(tmp_path / "p")
    for mmap in (False, True):
        after = Pipeline.load(tmp_path / "p", mmap=mmap).search(TESTS)
        for x, y in zip(before.rankings, after.rankings):
            assert x.equals(y)
    op = pipe.steps[0]
    op.save(tmp_path / "op")
    loaded = Operator.load(tmp_path / "op")
    assert isinstance(loaded, DBNormDense) and loaded.info_["gallery_bank_size"] == 40
    for x, y in zip(before.rankings, loaded.search(TESTS).rankings):
        assert x.equals(y)


def test_yaml_filter_blank_query_and_pseudo_queries():
    pipe = load_yaml({"pipeline": [{"dbnorm_dense": {"model": MODEL, "k": 5, "filter": {"year": 2001}}}]})
    pipe.fit(CORPUS, TRAIN)
    assert isinstance(pipe.steps[0], DBNormDense) and "dbnorm_dense" in pipe.to_yaml()
    run = pipe.search(TESTS[:4])
    brute = _brute()
    allowed = np.array([i % 4 == 1 for i in range(N_DOCS)])
    for i, r in enumerate(run.rankings):
        assert r.rows.tolist() == _top(np.where(allowed, brute[i:i + 1], -np.inf), 5)[0].tolist()
    # a per-call k and a blank query (a zero vector: nothing found, as dense finds nothing)
    op = DBNormDense(model=MODEL, k=5).fit(CORPUS, TRAIN)
    state = State.of([TESTS[0], "   "])
    out = op(state)
    assert len(out.rankings[0]) == 5 and len(out.rankings[1]) == 0
    assert len(op.search(TESTS[:1], k=12).rankings[0]) == 12
    # without training queries: pseudo-queries (first sentences of documents) form the query bank
    pseudo = DBNormDense(model=MODEL, k=3, query_bank_size=10).fit(CORPUS)
    assert pseudo.info_["query_bank"] == "pseudo" and pseudo.info_["query_bank_size"] == 10
    assert [len(r) for r in pseudo.search(TESTS[:3]).rankings] == [3, 3, 3]


def test_bad_params_name_the_parameters(caplog):
    for method in ("ddis", "qbnorm"):
        with pytest.raises(ParamError, match=rf"dbnorm_dense\.method.*method='{method}' is dynamic.*dualis or is.*"
                                             rf"dense \| dbnorm \(method: {method}\)"):
            DBNormDense(method=method)
    with pytest.raises(ParamError, match="beta1=1.0 has no effect without method: dualis or ddis"):
        DBNormDense(method="is", beta1=1.0)
    with pytest.raises(ParamError, match="query_bank_size=1 with query_bank='pseudo'"):
        DBNormDense(query_bank="pseudo", query_bank_size=1)
    with pytest.raises(ParamError, match="activation_k"):  # dynamic methods only: not a parameter here
        DBNormDense(activation_k=2)
    with pytest.raises(ParamError, match=r"dbnorm_dense\.query_bank_size: fit got no training queries"):
        DBNormDense(model=MODEL, query_bank_size=1).fit(CORPUS)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert DBNormDense(method="dis").params.method == "dualis"
    assert any("'dis' is read as 'dualis'" in r.getMessage() for r in caplog.records)


def test_empty_and_one_document_corpora():
    empty = DBNormDense(model=MODEL, k=3).fit(CORPUS.subset(np.arange(0)), TRAIN)
    assert [len(r) for r in empty.search(TESTS[:2]).rankings] == [0, 0]
    one = DBNormDense(model=MODEL, k=3).fit(CORPUS.subset(np.arange(1)))  # pseudo and gallery banks: no terms
    assert [r.rows.tolist() for r in one.search(TESTS[:2]).rankings] == [[0], [0]]


def test_the_whole_corpus_gallery_bank_is_the_document_matrix_not_a_copy(monkeypatch):
    """With the default gallery bank (the whole corpus) the bank handed to the log-partition is the documents'
    own matrix (a memory audit found ``docs[arange(n)]``: a copy of the corpus, 1.5 GB at 1M x 384); a sampled
    bank is its rows."""
    import ragkit.filters.dbnorm as dbn

    seen = []
    real = dbn.bank_log_partition

    def spy(docs, bank, beta, **kw):
        seen.append((kw.get("who", ""), np.shares_memory(docs, bank), len(bank)))
        return real(docs, bank, beta, **kw)

    monkeypatch.setattr(dbn, "bank_log_partition", spy)
    for size, shared in ((None, True), (20, False)):
        seen.clear()
        (Dense(model=MODEL, k=10) | DBNorm(model=MODEL, method="dualis", gallery_bank_size=size)).fit(CORPUS, TRAIN)
        gallery = [s for s in seen if "gallery" in s[0]]
        assert gallery == [("dbnorm gallery bank", shared, size or N_DOCS)], seen
