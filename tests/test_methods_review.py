"""Review of the method operators: DBNorm and the Cosine Adapter read the cosines of the dense retriever
before them with that retriever's model; MUVERA's d_final is checked for the identity projection; DBNorm
fits a one-document corpus; the Cosine Adapter says when L-BFGS stops without converging."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest

from ragkit.errors import ParamError
from ragkit.filters import CosineAdapter, DBNorm, TopK
from ragkit.pipelines import Parallel, Pipeline
from ragkit.pipelines._checks import encoder_mismatch
from ragkit.retrievers import BM25, Dense, Muvera
from ragkit.types import Corpus, Queries, TrainSet


class _HashEncoder:
    """A registered (per-process) encoder: hashed bag of words, 16 dimensions; ``salt`` makes another model."""

    dim = 16

    def __init__(self, salt: str) -> None:
        self.salt = salt
        self.key = f"test-methods-hash-{salt}-v1"

    def encode(self, texts, **kw):
        out = np.full((len(texts), 16), 1e-3, np.float32)
        for i, t in enumerate(texts):
            for w in str(t).lower().split():
                out[i, int(hashlib.md5((self.salt + w).encode()).hexdigest(), 16) % 16] += 1
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    encode_queries = encode


@pytest.fixture
def two_encoders():
    """Names of two registered encoders (different models), unregistered after the test."""
    from ragkit.encoders import register_encoder, unregister_encoder

    names = ("test-methods-a", "test-methods-b")
    for n in names:
        register_encoder(n, _HashEncoder(n), replace=True)
    try:
        yield names
    finally:
        for n in names:
            unregister_encoder(n)


def _small(slice_data):
    """The ~250-document slice and its 40 judged training queries (their relevant documents are in it)."""
    corpus, _, _, train = slice_data
    return corpus, train


# ----------------------------------------------------------------------------- 1. the dense retriever's model
def test_dbnorm_and_adapter_after_a_dense_of_another_model_are_refused_before_any_fit(slice_data, two_encoders):
    a, b = two_encoders
    corpus, train = _small(slice_data)
    for reader in (DBNorm(model=b, method="is"), CosineAdapter(model=b, max_iter=20)):
        dense = Dense(k=20, model=a)
        pipe = dense | reader
        with pytest.raises(ParamError, match=rf"^pipeline\[1\]\.{reader.name}\.model: {reader.name} encodes with "
                                             rf"'{b}' but pipeline\[0\]\.dense before it with '{a}'.*Set "
                                             rf"{reader.name}'s model to '{a}'") as e:
            pipe.fit(corpus, train)
        assert e.value.path == f"pipeline[1].{reader.name}.model"
        assert not dense.is_fitted  # refused before any work
        # steps between (top_k) do not hide the dense; nested pipelines are checked with their own path
        with pytest.raises(ParamError, match=rf"pipeline\[2\]\.{reader.name}\.model"):
            (Dense(k=20, model=a) | TopK(k=10) | reader).fit(corpus, train)
        nested = Pipeline([Parallel([Pipeline([Dense(k=20, model=a), reader]), BM25(k=20)])])
        assert encoder_mismatch(nested).path == f"pipeline[0].parallel.branches[0][1].{reader.name}.model"
    # the same model fits and searches
    pipe = (Dense(k=20, model=a) | DBNorm(model=a, method="is")).fit(corpus, train)
    assert len(pipe.search(train.queries[:2]).rankings[0]) == 20


def test_model_check_only_where_the_retriever_before_is_one_dense_model(two_encoders):
    a, b = two_encoders
    # (encoder_mismatch only: several of these are refused by the cosine-source check, unranked_router)
    fine = [
        Dense(model="sentence-transformers/all-MiniLM-L6-v2") | DBNorm(),  # an alias of the default
        BM25(k=20) | DBNorm(model=b),  # not cosines of a model: nothing to compare with
        Parallel([Dense(model=a), BM25()]) | DBNorm(model=b),  # a hybrid: no one model
        Muvera(k=5, candidates=10) | CosineAdapter(model=b),
        Dense(model=a) | BM25(k=20) | DBNorm(model=b),  # the nearest retriever is bm25
        Dense(model=a) | DBNorm(model=a) | CosineAdapter(model=a),
        # adapt: the adapter's query features come from the base model, its cosines (fit and search) from the tuned
        Dense(model=a, adapt={"epochs": 1.0}) | CosineAdapter(model=a),
    ]
    for pipe in fine:
        assert encoder_mismatch(pipe) is None, pipe
    # a knn_embed is a dense model's retriever too
    from ragkit.retrievers import KnnEmbed

    assert encoder_mismatch(KnnEmbed(model=a) | DBNorm(model=b)).path == "pipeline[1].dbnorm.model"
    # dbnorm after a dense that fine-tunes: its penalties would come from the base model, the cosines from the
    # tuned one, which no dbnorm model can name
    e = encoder_mismatch(Dense(model=a, adapt={"epochs": 1.0}) | DBNorm(model=a))
    assert e is not None and "fine-tunes its encoder (adapt)" in str(e) and e.path == "pipeline[1].dbnorm.model"
    e = encoder_mismatch(Dense(model=a, adapt={"epochs": 1.0}) | CosineAdapter(model=b))
    assert e is not None and e.path == "pipeline[1].cosine_adapter.model"


# ----------------------------------------------------------------------------- 2. muvera d_final, identity
def test_muvera_identity_d_final_checked(slice_data, monkeypatch):
    """projection: identity skipped both d_final checks: 5000 > the 768 dims before sketching built a
    5000-d index, 3,000,000 a 12 MB-per-document one."""
    from ragkit.encoders.tokens import TokenEncoder

    corpus = slice_data[0].subset(np.arange(20))
    with pytest.raises(ParamError, match=r"d_final \(3,000,000\) asks for more than the 1,048,576 dimensions"):
        Muvera(projection="identity", k_sim=1, r_reps=1, d_final=3_000_000, k=5, candidates=10)

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded before the d_final check")

    with monkeypatch.context() as m:
        m.setattr(TokenEncoder, "encode", no_encoding)
        with pytest.raises(ParamError, match=r"muvera\.d_final: d_final \(5,000\) must be smaller than r_reps \* "
                                             r"2\*\*k_sim \* the 384-d tokens = 768 \(projection: identity\)"):
            Muvera(projection="identity", k_sim=1, r_reps=1, d_final=5000, k=5, candidates=10).fit(corpus)
    ok = Muvera(projection="identity", k_sim=1, r_reps=1, d_final=700, k=5, candidates=10).fit(corpus)
    assert ok.dim == 700


# ----------------------------------------------------------------------------- 3. dbnorm, one document
@pytest.mark.parametrize("method", ["dualis", "ddis", "is", "qbnorm"])
def test_dbnorm_fits_a_one_document_corpus(two_encoders, method):
    """The default (dualis, and the pseudo query bank) failed on one document: "1 documents have no bank term
    once self-similarity is dropped", nothing the user could change.  A bank drawn from the corpus is empty
    then; its factor is left out (nothing can be reordered), a training query bank still applies."""
    a, _ = two_encoders
    corpus = Corpus.from_texts(["the cell cycle protein regulates apoptosis"])
    queries = Queries.from_texts(["cell protein", "apoptosis in tumours"])
    pipe = (Dense(k=5, model=a) | DBNorm(model=a, method=method)).fit(corpus)
    op = pipe.steps[1]
    assert op.log_z_q_.tolist() == [0.0] and op.log_z_g_.tolist() == [0.0]
    run = pipe.search(queries)
    assert [r.rows.tolist() for r in run.rankings] == [[0], [0]]
    assert all(np.isfinite(r.scores).all() for r in run.rankings)
    # a training query bank has terms for the one document: its factor is computed
    train = TrainSet(queries, {queries.ids[0]: {corpus.ids[0]: 1}})
    op = (Dense(k=5, model=a) | DBNorm(model=a, method=method)).fit(corpus, train).steps[1]
    assert op.info_["query_bank"] == "train" and op.log_z_q_[0] != 0.0
    assert op.log_z_g_.tolist() == [0.0]


# ----------------------------------------------------------------------------- 4. cosine adapter convergence
def test_adapter_warns_when_lbfgs_stops_unconverged(slice_data, two_encoders, caplog):
    a, _ = two_encoders
    corpus, train = _small(slice_data)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        ad = (Dense(k=20, model=a) | CosineAdapter(model=a, form="power", max_iter=3)).fit(corpus, train).steps[1]
    assert not ad.info_["converged"]
    hits = [r for r in caplog.records if r.name == "ragkit" and "cosine_adapter: L-BFGS stopped" in r.message]
    assert len(hits) == 1
    assert "form power, max_iter 3" in hits[0].message and "raise max_iter" in hits[0].message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        ad = (Dense(k=20, model=a) | CosineAdapter(model=a, max_iter=2000)).fit(corpus, train).steps[1]
    assert ad.info_["converged"]
    assert not [r for r in caplog.records if "L-BFGS stopped" in r.message]
    assert "power needs more L-BFGS iterations" in CosineAdapter.Params.model_fields["form"].description


def test_dbnorm_gallery_bank_size_says_its_cost():
    desc = DBNorm.Params.model_fields["gallery_bank_size"].description
    assert "4-5 hours at 1M" in desc and "10000" in desc


def test_ragkit_validate_reports_a_model_mismatch_its_fit_would_refuse(tmp_path, two_encoders):
    """The check ran at fit only: ``ragkit validate`` said ok to a dbnorm on another model's cosines."""
    from typer.testing import CliRunner

    from ragkit.cli import app

    a, b = two_encoders
    (tmp_path / "p.yaml").write_text(f"pipeline:\n  - dense: {{model: {a}}}\n  - dbnorm: {{model: {b}}}\n")
    res = CliRunner().invoke(app, ["validate", str(tmp_path / "p.yaml")], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "ok" not in res.output, res.output
    assert f"{tmp_path / 'p.yaml'}: line 3: pipeline[1].dbnorm.model:" in res.output
