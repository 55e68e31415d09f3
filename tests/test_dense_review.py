"""A second review of the dense index: the HNSW int8 graph's scale (it clipped a third of MiniLM's
documents, and the large documents an inner product favours), non-finite vectors refused before
normalising them, a wrong-length mask refused by ``Dense.search_vectors``, equal vectors scored
equal by the float rescore, ``b1`` with ``metric="ip"`` warned without ``rescore``, and the HNSW
beam width and the shortlist multiplier as search-time options."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
from conftest import HashedEncoder

from ragkit.encoders import register_encoder
from ragkit.errors import DataError, ParamError
from ragkit.operator import Operator
from ragkit.retrievers import Dense
from ragkit.retrievers._index import VectorIndex
from ragkit.types import Corpus, State

register_encoder("dense-review-hashed", HashedEncoder("dense-review-hashed-v1", 24), replace=True)
MODEL = "dense-review-hashed"


def _corpus(n: int) -> Corpus:
    return Corpus([f"d{i}" for i in range(n)], [f"text {i} word{i % 7} w{i % 11}" for i in range(n)],
                  metadata={"src": [f"s{i % 3}" for i in range(n)]})


def _outlier_unit_vectors(n: int = 3000, d: int = 48, seed: int = 0) -> np.ndarray:
    """Unit vectors with two outlier dimensions (4x the spread of the others), as MiniLM has."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[:, :2] *= 4
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ------------------------------------------------------------------ 1. the int8 graph's scale
def test_a_cosine_int8_graph_clips_few_documents():
    """``127 / p99.9(|x|)`` clipped a coordinate of 31.7% of SciFact's MiniLM documents (outlier
    dimensions hold most of the largest values); the scale now clips at most a few percent."""
    x = _outlier_unit_vectors(1000, 384)  # 384 dims: the top 0.1% of the values, 0.38 a document
    ix = VectorIndex(dtype="i8", search="hnsw", threads=1).build(x)
    clipped_docs = (np.abs(x) * ix.i8_scale > 127.5).any(axis=1).mean()
    assert clipped_docs < 0.05, clipped_docs  # p99.9: 0.35 of these documents


def test_an_inner_product_int8_graph_clips_nothing_and_scores_within_rounding():
    """With ``metric="ip"`` (MUVERA's i8 FDE graphs) the clipped documents were the large-norm ones an inner
    product ranks first: returned scores were off by up to 20.6 (here: 9); with ``127 / max|x|`` they are off
    by the codes' rounding only."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2000, 32)).astype(np.float32) * rng.uniform(0.5, 3, (2000, 1)).astype(np.float32)
    q = rng.standard_normal((100, 32)).astype(np.float32) * 2
    ix = VectorIndex(dtype="i8", metric="ip", search="hnsw", expansion_search=256, threads=1).build(x)
    assert ix.i8_clipped(x) == 0
    i, s = ix.search(q, 10)
    true = np.einsum("qd,qkd->qk", q, x[i])
    assert np.abs(s - true).max() < 0.1 * np.abs(true).max(), np.abs(s - true).max()


def test_an_int8_graph_saved_with_another_scale_loads_and_searches_as_saved(tmp_path, monkeypatch):
    """The scale is saved with the graph: an index saved with the earlier ``p99.9`` scale keeps it on load
    (its codes were made with it), and gives the results it gave before saving."""
    x = _outlier_unit_vectors(800, 32, seed=1)
    q = _outlier_unit_vectors(30, 32, seed=2)
    old = np.float32(127.0 / np.percentile(np.abs(x), 99.9))
    monkeypatch.setattr(VectorIndex, "_i8_graph_scale", lambda self, v: old)
    ix = VectorIndex(dtype="i8", search="hnsw", threads=1).build(x)
    ref = ix.search(q, 10)
    ix.save(tmp_path / "ix")
    monkeypatch.undo()
    for mmap in (False, True):
        back = VectorIndex.load(tmp_path / "ix", mmap=mmap)
        assert back.i8_scale == old
        got = back.search(q, 10)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])
    assert VectorIndex(dtype="i8", search="hnsw", threads=1).build(x).i8_scale != old  # a new build: the new scale


# ------------------------------------------------------------------ 2. non-finite vectors
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("metric", ["cos", "ip"])
def test_a_non_finite_query_or_added_vector_is_a_data_error_even_with_warnings_as_errors(bad, metric):
    """An inf was normalised first (``invalid value encountered in divide``): under ``-W error`` the user got
    that RuntimeWarning instead of the DataError that names the vector."""
    x = _outlier_unit_vectors(50, 8)
    ix = VectorIndex(metric=metric, search="exact").build(x)
    v = x[:3].copy()
    v[1, 2] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="1 of the 3 query vectors contain NaN or infinite values"):
            ix.search(v, 5)
        with pytest.raises(DataError, match="NaN or infinite"):
            ix.add(v)
    assert ix.n_slots == 50


# ------------------------------------------------------------------ 3. a wrong-length mask
def test_search_vectors_refuses_a_mask_of_another_length():
    d = Dense(model=MODEL, k=5, search="exact").fit(_corpus(40))
    q = d.query_vectors(State(["word3"]))
    for n in (39, 41):
        with pytest.raises(DataError, match=rf"one entry per document, shape \(40,\); got shape \({n},\)"):
            d.search_vectors(q, 5, mask=np.ones(n, bool))
    rows, _ = d.search_vectors(q, 5, mask=np.arange(40) % 2 == 0)
    assert (rows % 2 == 0).all()


# ------------------------------------------------------------------ 4. equal vectors rescored equal
@pytest.mark.parametrize("dtype", ["f16", "i8", "b1"])
@pytest.mark.parametrize("dims", [8, 16, 48, 384])
def test_rescored_equal_vectors_score_equal_and_rank_by_lower_slot(dtype, dims):
    """``einsum(optimize=True)`` scored a candidate by its position in the shortlist: identical vectors got
    scores one rounding step apart and were not ranked by lower slot (88 of 200 groups at 64 dims)."""
    rng = np.random.default_rng(4)
    for _ in range(10):
        x = rng.standard_normal((5, dims)).astype(np.float32)
        q = rng.standard_normal((2, dims)).astype(np.float32)
        i, s = VectorIndex(dtype=dtype, search="exact", rescore=True).build(np.concatenate([x, x, x])).search(q, 15)
        for row_i, row_s in zip(i, s):
            for g in range(5):
                sel = row_i % 5 == g
                assert len(set(row_s[sel].tolist())) == 1, (dtype, dims, row_i[sel], row_s[sel])
                assert list(row_i[sel]) == sorted(row_i[sel])


# ------------------------------------------------------------------ 5. b1 with an inner product
def test_b1_with_inner_product_warns_when_the_norms_differ(tmp_path, caplog):
    """Sign bits drop the documents' norms, which an inner product ranks by (SciFact: b1 scores 3.4-8 for
    inner products of 52-143).  It was refused at validation, which also refused loading a saved b1 + ip
    pipeline and unit vectors, where ip is cos: it warns at fit, when the norms do differ."""
    import logging

    register_encoder("dense-review-norms", HashedEncoder("dense-review-norms-v1", 24, unit=False), replace=True)
    corpus = _corpus(40)
    for model, warns in ((MODEL, False), ("dense-review-norms", True)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ragkit"):
            d = Dense(model=model, dtype="b1", metric="ip").fit(corpus)
        said = [r.getMessage() for r in caplog.records if "ignore the documents' norms" in r.getMessage()]
        assert bool(said) == warns, (model, said)
    d.save(tmp_path / "b1ip")  # a saved b1 + ip index loads (validation refused it)
    assert Operator.load(tmp_path / "b1ip").params.metric == "ip"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        Dense(model="dense-review-norms", dtype="b1", metric="ip", rescore=True).fit(corpus)
    assert not [r for r in caplog.records if "norms" in r.getMessage()]


def test_params_updated_after_the_fit_keep_searches_shared():
    """d.params = d.params.updated(expansion_search=...) made every later search a per-call width, each
    holding the index alone (8 threads: peak 1 graph search at a time): the index takes the width once."""
    d = Dense(model=MODEL, search="hnsw", expansion_search=16).fit(_corpus(300))
    d.params = d.params.updated(expansion_search=48)
    d.search(["text 3 word3"])
    assert d.index_.expansion_search == 48 and d.index_.usearch.expansion_search == 48
    seen = []
    real = d.index_._ef_lock.writing

    def spy():  # noqa: ANN202
        seen.append(1)
        return real()

    d.index_._ef_lock.writing = spy
    d.search(["text 4 word4", "text 5 word5"])
    assert seen == []  # the shared path: no exclusive hold
    d.search(["text 4 word4"], dense={"expansion_search": 80})  # a per-call width still holds it alone
    assert seen == [1] and d.index_.expansion_search == 48


# ------------------------------------------------------------------ 6. search-time options
def _ids(d: Dense, queries: list[str], **opts) -> list[list[str]]:
    return [d.corpus_.ids[r.rows].tolist() for r in d.search(queries, **opts).rankings]


def test_expansion_search_is_a_search_option_and_a_params_update_applies():
    """``dense={"expansion_search": 256}`` was refused as an unknown option, and
    ``d.params = d.params.updated(expansion_search=256)`` left the index searching at the old width."""
    c = _corpus(3000)
    queries = [f"word{i % 7} w{i % 11} text {i * 37}" for i in range(40)]
    narrow = Dense(model=MODEL, k=10, search="hnsw", expansion_search=4, threads=1).fit(c)
    wide = Dense(model=MODEL, k=10, search="hnsw", expansion_search=256, threads=1).fit(c)  # the same graph
    ref_narrow, ref_wide = _ids(narrow, queries), _ids(wide, queries)
    assert ref_narrow != ref_wide  # the width matters on this graph
    assert _ids(narrow, queries, dense={"expansion_search": 256}) == ref_wide
    assert narrow.index_.usearch.expansion_search == 4  # restored after the call
    assert _ids(narrow, queries) == ref_narrow
    narrow.params = narrow.params.updated(expansion_search=256)
    assert _ids(narrow, queries) == ref_wide
    with pytest.raises(ParamError, match="expansion_search"):
        Dense(model=MODEL, k=10, search="exact").fit(_corpus(30)).search(["q"], dense={"expansion_search": 256})
    with pytest.raises(ParamError, match="expansion_search"):
        narrow.search(["q"], dense={"expansion_search": 0})


def test_oversample_is_a_search_option(tmp_path):
    c = _corpus(400)
    queries = [f"word{i % 7} w{i % 11}" for i in range(30)]
    one = Dense(model=MODEL, k=10, search="exact", dtype="b1", rescore=True, oversample=1).fit(c)
    eight = Dense(model=MODEL, k=10, search="exact", dtype="b1", rescore=True, oversample=8).fit(c)
    assert _ids(one, queries) != _ids(eight, queries)
    assert _ids(one, queries, dense={"oversample": 8}) == _ids(eight, queries)
    one.params = one.params.updated(oversample=8)
    assert _ids(one, queries) == _ids(eight, queries)
    one.save(tmp_path / "d")  # the updated params travel with the index
    assert _ids(Operator.load(tmp_path / "d", corpus=one.corpus_), queries) == _ids(eight, queries)


def test_searches_at_other_widths_at_once_each_get_their_own():
    """usearch reads the beam width from the index: a search at another width sets it and restores it
    while no other search of the graph runs, so concurrent searches each get the width they ask for."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    q = rng.standard_normal((64, 16)).astype(np.float32)
    ix = VectorIndex(search="hnsw", expansion_search=4, threads=1).build(x)
    refs = {ef: ix.search(q, 10, expansion_search=ef)[0] for ef in (4, 16, 256)}
    assert not np.array_equal(refs[4], refs[256])
    bad: list[int] = []

    def work(ef: int) -> None:
        for _ in range(15):
            if not np.array_equal(ix.search(q, 10, expansion_search=ef)[0], refs[ef]):
                bad.append(ef)

    threads = [threading.Thread(target=work, args=(ef,)) for ef in (4, 16, 256, 4, 256)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not bad
    assert ix.usearch.expansion_search == 4
    with pytest.raises(ParamError, match="expansion_search must be a positive integer"):
        ix.search(q, 10, expansion_search=0)
    with pytest.raises(ParamError, match="oversample must be a positive integer"):
        ix.search(q, 10, oversample=0)


def test_b1_warns_when_most_coordinates_have_one_sign(caplog):
    """A non-negative embedding (ragkit's HashingEncoder adds 0.1 to every bucket) gave every document the same
    sign bits: b1 ranked in corpus order, recall@10 against f32 0.007, with nothing said.  pca centres first."""
    import logging

    from ragkit.encoders import HashingEncoder

    register_encoder("dense-review-positive", HashingEncoder(dim=64), replace=True)
    corpus = _corpus(300)
    first: list[str] = []
    for kw, warns in (({"model": "dense-review-positive"}, True),
                      ({"model": "dense-review-positive", "rescore": True}, True),
                      ({"model": "dense-review-positive", "reduce": "pca:16"}, False),
                      ({"model": MODEL}, False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ragkit"):
            Dense(dtype="b1", **kw).fit(corpus)
        said = [r.getMessage() for r in caplog.records if "same sign in at least 99%" in r.getMessage()]
        assert bool(said) == warns, (kw, said)
        first += said
    assert "set reduce: pca:<dims>" in first[0] and "64 dimensions" in first[0], first
