"""Encoder domain adaptation: mined pairs, a short seeded fine-tune, cache keyed by the tuned model."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.encoders import Encoder
from ragkit.encoders.adapt import AdaptConfig, fine_tune, mine_pairs
from ragkit.errors import DataError
from ragkit.types import Queries, TrainSet


def test_mine_pairs_excludes_judged_documents(slice_data):
    corpus, _, _, train = slice_data
    anchors, pos, neg = mine_pairs(corpus, train, "all-MiniLM-L6-v2")
    assert len(anchors) == len(pos) == len(neg) >= len(train.queries)
    texts = corpus.full_texts
    for q, n in zip(anchors, neg):
        qid = train.queries.ids[train.queries.texts.index(q)]
        judged_texts = {texts[r] for r in corpus.row_of(list(train.qrels[qid]), missing="drop")}
        assert n not in judged_texts


def test_mine_pairs_refuses_no_positives(slice_data):
    corpus, _, _, train = slice_data
    bad = TrainSet.__new__(TrainSet)
    object.__setattr__(bad, "queries", Queries(["x"], ["nothing"]))
    object.__setattr__(bad, "qrels", {"x": {corpus.ids[0]: 0}})
    with pytest.raises(DataError, match="positive"):
        mine_pairs(corpus, bad, "all-MiniLM-L6-v2")


@pytest.mark.slow
def test_fine_tune_is_seeded_and_changes_the_cache_key(slice_data, tmp_path):
    corpus, _, _, train = slice_data
    cfg = AdaptConfig(batch_size=8, max_steps=2, seed=3)
    a = fine_tune("all-MiniLM-L6-v2", corpus, train, tmp_path / "a", cfg, progress=False)
    b = fine_tune("all-MiniLM-L6-v2", corpus, train, tmp_path / "b", cfg, progress=False)
    texts = corpus.full_texts[:5]
    va = Encoder(str(a), cache=False).encode(texts)
    vb = Encoder(str(b), cache=False).encode(texts)
    base = Encoder(cache=False).encode(texts)
    np.testing.assert_allclose(va, vb, atol=1e-5)
    assert not np.allclose(va, base, atol=1e-4)
    assert Encoder(str(a)).key != Encoder().key


def test_dense_adapt_needs_a_training_split(slice_data):
    from ragkit.retrievers import Dense

    corpus, _, _, _ = slice_data
    with pytest.raises(DataError, match="adapt"):
        Dense(k=5, adapt={"max_steps": 1}).fit(corpus)


@pytest.mark.slow
def test_dense_adapt_fits_caches_saves_and_loads(slice_data, tmp_path, monkeypatch):
    from ragkit.encoders import adapt as adapt_mod
    from ragkit.operator import Operator
    from ragkit.retrievers import Dense

    corpus, queries, _, train = slice_data
    op = Dense(k=10, adapt={"batch_size": 8, "max_steps": 2, "seed": 1}).fit(corpus, train)
    assert op.model_path_ and op.encoder.key != Dense(k=10).encoder.key
    # a second fit with the same inputs reuses the cached tuned model: no training
    monkeypatch.setattr(adapt_mod, "fine_tune", lambda *a, **k: pytest.fail("trained twice"))
    again = Dense(k=10, adapt={"batch_size": 8, "max_steps": 2, "seed": 1}).fit(corpus, train)
    assert again.model_path_ == op.model_path_
    before = op.search(queries)
    op.save(tmp_path / "d")
    assert (tmp_path / "d" / "model" / "modules.json").is_file()
    loaded = Operator.load(tmp_path / "d")
    assert loaded.encoder.key == op.encoder.key          # content-keyed: the copied model keeps its cache
    after = loaded.search(queries)
    for a, b in zip(before.rankings, after.rankings):
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)


@pytest.mark.slow
def test_token_operators_share_the_tuned_encoder(slice_data, tmp_path):
    """muvera with the same ``adapt`` settings as dense uses the same tuned model (trained once) for its tokens."""
    from ragkit.operator import Operator
    from ragkit.retrievers import Dense, Muvera

    corpus, queries, _, train = slice_data
    adapt = {"batch_size": 8, "max_steps": 2, "seed": 1}
    dense = Dense(k=10, adapt=adapt).fit(corpus, train)
    mv = Muvera(k=10, candidates=20, adapt=adapt).fit(corpus, train)
    assert mv.model_path_ == dense.model_path_
    assert mv.token_encoder.key != Muvera(k=10).token_encoder.key
    before = mv.search(queries)
    mv.save(tmp_path / "m")
    loaded = Operator.load(tmp_path / "m")
    for a, b in zip(before.rankings, loaded.search(queries).rankings):
        np.testing.assert_array_equal(a.rows, b.rows)
    with pytest.raises(DataError, match="muvera.adapt"):
        Muvera(k=10, adapt=adapt).fit(corpus)
