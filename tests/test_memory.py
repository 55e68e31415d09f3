"""Peak memory of the main paths, measured with tracemalloc (numpy's allocations are traced) and
compared with the sizes of the arrays involved, never with machine-specific numbers."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from ragkit.retrievers._index import VectorIndex
from ragkit.types import Corpus, State


def _peak(fn):
    """``(result, bytes allocated at the peak of fn() beyond what was held before)``."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def vecs():
    """40,000 x 128 float32 (20 MB): more rows than one block of the index's build."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((40_000, 128), dtype=np.float32) * np.linspace(0.2, 2, 128, dtype=np.float32)


def test_pca_build_makes_no_float64_copies_of_the_sample(vecs, monkeypatch):
    """The PCA fit summed mean and covariance over a whole float64 copy of the sample and a centred
    float64 copy of it (4x the float32 vectors); then projected a centred copy of all of them."""
    from ragkit.retrievers import _index

    monkeypatch.setattr(_index, "PCA_CHUNK_BYTES", 4 << 20, raising=False)  # several blocks at this size
    _, peak = _peak(lambda: VectorIndex(reduce="pca:32", search="exact").build(vecs))
    assert peak < 2.5 * vecs.nbytes  # the normalised copy, a float64 block, the projection and its blocks (was 6x)


def test_int8_build_makes_one_temporary_of_the_vectors(vecs):
    """int8 codes were made through several float32 temporaries of the whole matrix, and the
    percentile of |x| copied |x| again."""
    _, peak = _peak(lambda: VectorIndex(dtype="i8", metric="ip", search="exact").build(vecs))
    assert peak < 1.4 * vecs.nbytes  # |x| for the scale's percentile + the uint8 codes (was 2x and more)


def test_handed_over_vectors_are_normalised_in_place_and_kept(vecs):
    mine = vecs.copy()
    ix, peak = _peak(lambda: VectorIndex(search="exact").build(mine, copy=False))
    assert np.shares_memory(ix.codes, mine)
    assert peak < 0.2 * vecs.nbytes
    np.testing.assert_array_equal(ix.codes, VectorIndex(search="exact").build(vecs).codes)
    # without copy=False the caller's array is neither kept nor changed
    before = vecs.copy()
    ix = VectorIndex(search="exact").build(vecs)
    assert not np.shares_memory(ix.codes, vecs) and np.array_equal(vecs, before)


def test_read_only_vectors_are_not_written_even_when_handed_over(vecs):
    ro = vecs.copy()
    ro.flags.writeable = False
    ix = VectorIndex(search="exact").build(ro, copy=False)
    assert not np.shares_memory(ix.codes, ro)
    np.testing.assert_allclose(np.linalg.norm(ix.codes, axis=1), 1, rtol=1e-5)


def test_dense_fit_keeps_one_copy_of_the_corpus_vectors(monkeypatch):
    """Dense handed its encoder's vectors to the index, which normalised them into a second copy."""
    from ragkit.retrievers import Dense

    n, d = 20_000, 384
    rng = np.random.default_rng(1)
    made = rng.standard_normal((n, d), dtype=np.float32)
    op = Dense(k=5, search="exact")
    monkeypatch.setattr(op.encoder, "encode", lambda texts, **kw: made.copy())  # a fresh array, as ragkit's own
    corpus = Corpus.from_texts([f"d{i}" for i in range(n)])
    _, peak = _peak(lambda: op.fit(corpus))
    assert peak < 1.5 * made.nbytes  # the encoder's array, kept as the index (was 2x)
    q = made[:3] / np.linalg.norm(made[:3], axis=1, keepdims=True)
    rows, _ = op.search_vectors(q, 1)
    assert rows[:, 0].tolist() == [0, 1, 2]


def test_dense_fit_never_writes_a_custom_encoders_array(monkeypatch):
    from ragkit.retrievers import Dense

    kept = np.random.default_rng(2).standard_normal((50, 16), dtype=np.float32)
    before = kept.copy()
    op = Dense(k=5, search="exact")
    monkeypatch.setattr(Dense, "_encode_docs", lambda self, c: kept)  # not known to be fresh: copied
    op.fit(Corpus.from_texts([f"d{i}" for i in range(50)]))
    assert np.array_equal(kept, before) and not np.shares_memory(op.index_.codes, kept)


def test_knn_embed_search_scores_queries_in_chunks():
    """A batch's (n_q, N) score matrix and its same-sized temporaries were made whole."""
    from ragkit.retrievers.knn_embed import KnnEmbed

    n, d = 40_000, 32
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    op = KnnEmbed(k=20, n_clusters=8, n_init=1, collapse_at=1.0, weight_floor=0.03).fit_vectors(
        Corpus.from_texts([f"d{i}" for i in range(n)]), x)
    n_q = 300  # 12M score cells: three chunks
    q = x[:n_q] + 0.1 * rng.standard_normal((n_q, d), dtype=np.float32)

    def run(qv):
        return op(State([f"q{i}" for i in range(len(qv))], vectors={op.dense.encoder.key: qv})).rankings

    got, peak = _peak(lambda: run(q))
    assert peak < 2 * 4 * n_q * n  # was ~4x the float32 score matrix (scores, negated copy, int64 indices, ...)
    for i in (0, n_q // 2, n_q - 1):  # each query answered as alone
        alone = run(q[i:i + 1])[0]
        assert np.array_equal(got[i].rows, alone.rows)
        assert np.array_equal(got[i].fields["component"], alone.fields["component"])
