"""Encoder domain adaptation: mined pairs, a short seeded fine-tune, cache keyed by the tuned model."""

from __future__ import annotations

from pathlib import Path

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


def test_mine_pairs_refuses_positives_outside_the_corpus(slice_data):
    corpus, _, _, train = slice_data
    elsewhere = TrainSet(train.queries, {q: {f"not-{d}": v for d, v in r.items()} for q, r in train.qrels.items()})
    with pytest.raises(DataError, match="none of the training queries' positive documents is in the corpus"):
        mine_pairs(corpus, elsewhere, "all-MiniLM-L6-v2")


def test_mine_pairs_never_uses_a_positive_as_the_fallback_negative():
    """Every top-ranked document judged: the random negative was drawn from the whole corpus,
    positives included (negative == positive), and seeded by the query's position."""
    from ragkit.types import Corpus

    corpus = Corpus.from_texts(["statins lower cholesterol", "statins and the liver", "aspirin and the heart"],
                               ids=["d0", "d1", "d2"])
    train = TrainSet(Queries(["q0", "q1"], ["do statins lower cholesterol", "what do statins do"]),
                     {"q0": {"d0": 1}, "q1": {"d0": 1, "d1": 1}})
    # depth 1: both miners rank a positive first, so no mined negative exists
    anchors, pos, neg = mine_pairs(corpus, train, "all-MiniLM-L6-v2", depth=1, seed=5)
    assert len(anchors) == 3 and all(p != n for p, n in zip(pos, neg))
    assert set(neg[1:]) == {"aspirin and the heart"}  # q1's only non-positive
    everything = TrainSet(Queries(["q"], ["statins"]), {"q": {"d0": 1, "d1": 1, "d2": 1}})
    assert mine_pairs(corpus, everything, "all-MiniLM-L6-v2") == ([], [], [])


def test_mine_pairs_takes_judged_non_relevant_documents_first():
    """A document judged non-relevant (qrels value 0) is a known negative: it comes before the
    mined ones, even when no miner ranks it (it was excluded as 'judged' and never used)."""
    from ragkit.types import Corpus

    corpus = Corpus.from_texts(["statins lower cholesterol", "statins and the liver", "aspirin and the heart",
                                "a history of the bicycle"], ids=["d0", "d1", "d2", "d3"])
    train = TrainSet(Queries(["q"], ["do statins lower cholesterol"]), {"q": {"d0": 1, "d3": 0, "d9": 0}})
    _, _, neg = mine_pairs(corpus, train, "all-MiniLM-L6-v2", n_neg=2)
    assert neg[0] == "a history of the bicycle"  # the judged one (d9 is not in the corpus: skipped)
    assert neg[1] in {"statins and the liver", "aspirin and the heart"}  # then the best mined one


def test_training_digest_takes_numpy_judgements(slice_data):
    from ragkit.encoders.adapt import _training_digest

    corpus, _, _, train = slice_data
    as_np = TrainSet(train.queries, {q: {d: np.int64(v) for d, v in r.items()} for q, r in train.qrels.items()})
    cfg = AdaptConfig()
    assert _training_digest("m", corpus, as_np, cfg) == _training_digest("m", corpus, train, cfg)
    # what the tuned model depends on changes the key: a judgement, a query, the settings
    q0 = train.queries.ids[0]
    d0 = next(iter(train.qrels[q0]))
    changed = TrainSet(train.queries, {**train.qrels, q0: {**train.qrels[q0], d0: 0}})
    dropped = TrainSet(train.queries[1:], {q: r for q, r in train.qrels.items() if q != q0})
    keys = {_training_digest("m", corpus, t, c) for t, c in
            ((train, cfg), (changed, cfg), (dropped, cfg), (train, AdaptConfig(seed=1)))}
    assert len(keys) == 4


def test_training_digest_follows_the_training_code(slice_data, monkeypatch):
    """A cached fine-tune is keyed by the recipe too: a new mining depth or recipe version trains again."""
    from ragkit.encoders import adapt

    corpus, _, _, train = slice_data
    before = adapt._training_digest("m", corpus, train, AdaptConfig())
    monkeypatch.setattr(adapt, "_MINE_DEPTH", adapt._MINE_DEPTH + 1)
    deeper = adapt._training_digest("m", corpus, train, AdaptConfig())
    monkeypatch.setattr(adapt, "_RECIPE", adapt._RECIPE + 1)
    newer = adapt._training_digest("m", corpus, train, AdaptConfig())
    assert len({before, deeper, newer}) == 3


def test_adapt_refuses_a_custom_encoder_before_any_work(slice_data):
    from ragkit.encoders import register_encoder, unregister_encoder
    from ragkit.errors import ParamError
    from ragkit.retrievers import Dense

    class Counting:
        key, dim, calls = "counting-8", 8, 0

        def encode(self, texts, **_):
            Counting.calls += 1
            return np.eye(8, dtype=np.float32)[np.arange(len(texts)) % 8]

        encode_queries = encode

    corpus, _, _, train = slice_data
    register_encoder("counting-8", Counting(), replace=True)
    try:
        with pytest.raises(ParamError, match="registered custom encoder; adapt fine-tunes a sentence-transformers"):
            Dense(model="counting-8", adapt={"max_steps": 1}).fit(corpus, train)
        with pytest.raises(ParamError, match="'pca:64' asks for 64 dimensions but counting-8 embeddings have 8"):
            Dense(model="counting-8", reduce="pca:64").fit(corpus)
        assert Counting.calls == 0  # refused before encoding anything
    finally:
        unregister_encoder("counting-8")


def test_a_published_tuned_model_is_kept_when_a_second_writer_finishes(tmp_path):
    """Two processes tuning the same inputs: the second no longer deletes the first's folder
    (under its readers) nor fails with 'Directory not empty'."""
    from ragkit.encoders.adapt import _publish

    out = tmp_path / "adapt-k"
    for name in ("a", "b"):
        tmp = tmp_path / f".adapt-k.tmp-{name}"
        tmp.mkdir()
        (tmp / "modules.json").write_text(name)
        _publish(tmp, out)
        assert not tmp.exists()
    assert (out / "modules.json").read_text() == "a"
    (out / "modules.json").unlink()  # a half-written folder is replaced
    tmp = tmp_path / ".adapt-k.tmp-c"
    tmp.mkdir()
    (tmp / "modules.json").write_text("c")
    _publish(tmp, out)
    assert (out / "modules.json").read_text() == "c"


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
    assert (tmp_path / "d" / "model" / Path(op.model_path_).name / "modules.json").is_file()
    loaded = Operator.load(tmp_path / "d")
    assert loaded.encoder.key == op.encoder.key          # content-keyed: the copied model keeps its cache
    after = loaded.search(queries)
    for a, b in zip(before.rankings, after.rankings):
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    # another tuned model saved over the same folder: its load is that model, not the one this
    # process loaded from the folder before (encoders are cached per path)
    monkeypatch.undo()
    other = Dense(k=10, adapt={"batch_size": 8, "max_steps": 2, "seed": 2}).fit(corpus, train)
    other.save(tmp_path / "d")
    assert Operator.load(tmp_path / "d").encoder.key == other.encoder.key != op.encoder.key


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


def test_a_fine_tune_announces_itself_once(slice_data, tmp_path, monkeypatch, caplog):
    """Minutes of training used to start with nothing but progress bars: a note says what is tuned and
    where it is cached; a cached model loads without one."""
    import logging

    from ragkit.encoders import adapt as adapt_mod

    corpus, _, _, train = slice_data
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    trained = []

    def fake_fine_tune(model, corpus, train, folder, config, progress=True):
        trained.append(folder)
        Path(folder).mkdir(parents=True)
        (Path(folder) / "modules.json").write_text("[]")

    monkeypatch.setattr(adapt_mod, "fine_tune", fake_fine_tune)
    with caplog.at_level(logging.INFO, logger="ragkit"):
        folder = adapt_mod.adapted_model("all-MiniLM-L6-v2", corpus, train)
        adapt_mod.adapted_model("all-MiniLM-L6-v2", corpus, train)
    notes = [r.getMessage() for r in caplog.records if r.name.startswith("ragkit")]
    assert len(trained) == 1 and len(notes) == 1
    assert notes[0].startswith(f"fine-tuning all-MiniLM-L6-v2 on {len(train.qrels)} judged training queries") and \
        str(folder) in notes[0]
