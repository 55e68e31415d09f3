"""Peak memory of the main paths, measured with tracemalloc (numpy's allocations are traced) and
compared with the sizes of the arrays involved, never with machine-specific numbers."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import traced_peak

from ragkit.retrievers._index import VectorIndex
from ragkit.types import Corpus, State


@pytest.fixture(scope="module")
def vecs():
    """40,000 x 128 float32 (20 MB): more rows than one block of the index's build."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((40_000, 128), dtype=np.float32) * np.linspace(0.2, 2, 128, dtype=np.float32)


def test_pca_build_makes_no_float64_copies_of_the_sample(vecs, monkeypatch):
    """The PCA fit summed mean and covariance over a whole float64 copy of the sample and a centred
    float64 copy of it (4x the float32 vectors); then projected a centred copy of all of them."""
    from ragkit.retrievers import _quantize

    monkeypatch.setattr(_quantize, "PCA_CHUNK_BYTES", 4 << 20, raising=False)  # several blocks at this size
    _, peak = traced_peak(lambda: VectorIndex(reduce="pca:32", search="exact").build(vecs))
    assert peak < 2.5 * vecs.nbytes  # the normalised copy, a float64 block, the projection and its blocks (was 6x)


def test_int8_build_makes_one_temporary_of_the_vectors(vecs):
    """int8 codes were made through several float32 temporaries of the whole matrix, and the
    percentile of |x| copied |x| again."""
    _, peak = traced_peak(lambda: VectorIndex(dtype="i8", metric="ip", search="exact").build(vecs))
    assert peak < 1.4 * vecs.nbytes  # |x| for the scale's percentile + the uint8 codes (was 2x and more)


def test_handed_over_vectors_are_normalised_in_place_and_kept(vecs):
    mine = vecs.copy()
    ix, peak = traced_peak(lambda: VectorIndex(search="exact").build(mine, copy=False))
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
    from ragkit.operator import warm_torch
    from ragkit.retrievers import Dense

    warm_torch()  # (fit imports PyTorch, ~55 MB of modules, when no test before this one did)
    n, d = 20_000, 384
    rng = np.random.default_rng(1)
    made = rng.standard_normal((n, d), dtype=np.float32)
    op = Dense(k=5, search="exact")
    monkeypatch.setattr(op.encoder, "encode", lambda texts, **kw: made.copy())  # a fresh array, as ragkit's own
    corpus = Corpus.from_texts([f"d{i}" for i in range(n)])
    _, peak = traced_peak(lambda: op.fit(corpus))
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

    got, peak = traced_peak(lambda: run(q))
    assert peak < 2 * 4 * n_q * n  # was ~4x the float32 score matrix (scores, negated copy, int64 indices, ...)
    for i in (0, n_q // 2, n_q - 1):  # each query answered as alone
        alone = run(q[i:i + 1])[0]
        assert np.array_equal(got[i].rows, alone.rows)
        assert np.array_equal(got[i].fields["component"], alone.fields["component"])


# ----------------------------------------------------------------------- token vectors
def _fake_forward(texts, progress=False):
    """Deterministic stand-in for the model: text ``t`` gets ``1 + len(t) % 5`` rows of 8 dims."""
    from ragkit.encoders.tokens import TokenVectors

    mats = [np.full((1 + len(t) % 5, 8), (sum(map(ord, t)) % 97) / 97, np.float16) for t in texts]
    off = np.zeros(len(texts) + 1, np.int64)
    np.cumsum([len(m) for m in mats], out=off[1:])
    return TokenVectors(np.concatenate(mats), off)


@pytest.fixture
def fake_token_encoder(tmp_path, monkeypatch):
    """A token encoder with a stand-in model, caching under ``tmp_path``."""
    from ragkit.encoders import tokens

    monkeypatch.setattr(tokens.TokenEncoder, "dim", property(lambda self: 8))
    enc = tokens.TokenEncoder()
    monkeypatch.setattr(enc, "_forward", _fake_forward)
    enc._cache = tokens.TokenCache(tmp_path, enc.key)
    return enc


def _n_shards(enc) -> int:
    return len(list(enc.store.folder.glob("*.keys.npy")))


def test_token_vectors_from_several_shards_are_served_memory_mapped(fake_token_encoder, monkeypatch):
    """MUVERA's fit held a corpus's token vectors in memory (SciFact: 910 MB, peaking at 2 GB) when the
    corpus's texts were cached in two shards (a concatenated copy, then a gathered one) or were new.  A
    large result is written as one shard, gathered step by step into the file, and served from its
    memory map; the next request for the same texts, by this reader or a new one, reads that shard."""
    from ragkit.encoders import tokens

    enc = fake_token_encoder
    texts = [f"document {i} " + "x" * (i % 7) for i in range(300)]
    enc.encode(texts[:120])
    enc.encode(texts[200:])  # two small shards, held in memory when encoded (below the threshold)
    assert _n_shards(enc) == 2
    monkeypatch.setattr(tokens, "CONSOLIDATE_BYTES", 1)  # everything counts as large from here on
    monkeypatch.setattr(tokens, "ASSEMBLE_BYTES", 8 * 16 * 10)  # ~10 tokens per step: many steps
    order = np.random.default_rng(0).permutation(300)
    mixed = [texts[i] for i in order]  # cached in two shards, in another order, 80 texts new
    got = enc.encode(mixed)
    want = _fake_forward(mixed)
    assert isinstance(got.data, np.memmap) and enc.n_encoded == 220 + 80
    np.testing.assert_array_equal(got.offsets, want.offsets)
    np.testing.assert_array_equal(got.data, want.data)
    assert _n_shards(enc) == 3
    again = enc.encode(mixed)
    assert isinstance(again.data, np.memmap) and _n_shards(enc) == 3 and enc.n_encoded == 300
    reader = tokens.TokenEncoder()  # a new process's reader: the shard is found by its texts, not rewritten
    reader._forward = _fake_forward  # type: ignore[method-assign]
    reader._cache = tokens.TokenCache(enc.store.folder.parent, enc.key)
    np.testing.assert_array_equal(reader.encode(mixed).data, want.data)
    # part of one shard (the index prefers the larger shard for these texts): written once, then found
    for _ in range(2):
        part = tokens.TokenEncoder()
        part._forward = _fake_forward  # type: ignore[method-assign]
        part._cache = tokens.TokenCache(enc.store.folder.parent, enc.key)
        sub = part.encode(mixed[50:250])
        assert isinstance(sub.data, np.memmap) and part.n_encoded == 0 and _n_shards(enc) == 4
        np.testing.assert_array_equal(sub.data, want.data[want.offsets[50]:want.offsets[250]])


def test_a_large_result_in_a_cache_that_cannot_be_written_is_assembled_in_memory(fake_token_encoder,
                                                                                monkeypatch):
    from ragkit.encoders import cache as cache_mod, tokens

    enc = fake_token_encoder
    texts = [f"text {i}" for i in range(40)]
    enc.encode(texts[:25])
    monkeypatch.setattr(tokens, "CONSOLIDATE_BYTES", 1)

    def read_only(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache_mod, "atomic_file", read_only)
    with pytest.warns(RuntimeWarning, match="cannot be written"):
        got = enc.encode(texts[::-1])
    np.testing.assert_array_equal(got.data, _fake_forward(texts[::-1]).data)
    assert not isinstance(got.data, np.memmap) and _n_shards(enc) == 1


def test_new_token_vectors_are_made_without_float32_copies_of_the_whole(monkeypatch):
    """The model's rows were concatenated, normalised and cast as float32 arrays of all the tokens
    (4 float32 copies, then float16 ones): each batch is now normalised and cast on its own."""
    from ragkit.encoders.tokens import TokenEncoder

    enc = TokenEncoder(cache=False, batch_size=8)
    texts = [f"claim {i} about " + "cells " * (20 + i % 30) for i in range(64)]
    enc.encode(texts[:2])  # the model loaded outside the measurement
    got, peak = traced_peak(lambda: enc.encode(texts))
    assert peak < 3.2 * got.data.nbytes  # the float16 batches, the result (+ one batch's float32 rows)
    ref = enc.model.encode(texts[5:7], output_value="token_embeddings", convert_to_numpy=False)
    for i, r in zip((5, 6), ref):
        r = r.float().numpy()
        np.testing.assert_allclose(got[i], r / np.linalg.norm(r, axis=1, keepdims=True), atol=2e-3)


def test_top_k_of_a_large_score_matrix_works_in_chunks_of_rows(monkeypatch):
    """topk_rows made a negated copy and an int64 index matrix of the whole score matrix (3x its size):
    a BM25 or maxsim_exact batch over a large corpus.  Rows are taken in chunks; same answer."""
    from ragkit import _topk

    rng = np.random.default_rng(5)
    scores = rng.standard_normal((400, 50_000), dtype=np.float32)
    scores[7, :] = 1.0  # ties straddling the cut: the lowest rows win
    scores[9, ::2] = -np.inf
    (rows, vals), peak = traced_peak(lambda: _topk.topk_rows(scores, 10))
    assert peak < 0.8 * scores.nbytes  # was ~3x
    monkeypatch.setattr(_topk, "TOPK_CELLS", scores.size)  # one chunk: the whole matrix at once
    want_rows, want_vals = _topk.topk_rows(scores, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(vals, want_vals)
    assert rows[7].tolist() == list(range(10))
    assert np.array_equal(rows[3], np.argsort(-scores[3], kind="stable")[:10])


def test_bm25_fit_tokenises_in_chunks(monkeypatch):
    """BM25's fit held the surface tokens of the whole corpus as Python objects at once (a list per
    text, one flat list, its term ids and row numbers): ~10x the corpus's text.  Texts are counted in
    chunks; the index answers as one built at once."""
    from ragkit.retrievers import BM25, bm25

    rng = np.random.default_rng(2)
    words = np.array([f"w{i}x{i * 7919 % 1000}" for i in range(4000)])
    texts = [" ".join(words[rng.zipf(1.3, 60) % 4000]) for _ in range(5000)]
    corpus = Corpus.from_texts(texts)
    n_bytes = sum(map(len, texts))
    monkeypatch.setattr(bm25, "COUNT_CHUNK_CHARS", n_bytes // 7)  # 7 or 8 chunks
    op, peak = traced_peak(lambda: BM25(k=10).fit(corpus))
    assert peak < 6 * n_bytes  # the counts and the weights' temporaries (was ~12x)
    monkeypatch.setattr(bm25, "COUNT_CHUNK_CHARS", 10 * n_bytes)
    whole = BM25(k=10).fit(corpus)
    queries = [texts[i][:40] for i in range(0, 5000, 250)] + ["w17x103 w5x35 nothing"]
    a, b = op.search(queries), whole.search(queries)
    for ra, rb in zip(a.rankings, b.rankings):
        np.testing.assert_array_equal(ra.rows, rb.rows)
        np.testing.assert_allclose(ra.scores, rb.scores, rtol=1e-6)
    assert sorted(op.vocab_) == sorted(whole.vocab_)


def test_exact_search_of_many_queries_works_in_chunks_of_queries(vecs, monkeypatch):
    """The exact search scored every query of a batch against a block of 16,384 vectors at once:
    10,000 queries made ~2 GB of temporaries.  Queries are chunked; same answer."""
    from ragkit.retrievers import _index_search

    ix = VectorIndex(search="exact").build(vecs)
    q = vecs[:2000] + 0.1
    assert _index_search.EXACT_CELLS // _index_search.BLOCK <= 1024
    monkeypatch.setattr(_index_search, "EXACT_CELLS", 200 * _index_search.BLOCK)  # 10 chunks
    (slots, scores), peak = traced_peak(lambda: ix.search(q, 10))
    assert peak < 0.5 * 4 * len(q) * _index_search.BLOCK  # a chunk's (scores, int64 positions); was ~3x the whole
    monkeypatch.setattr(_index_search, "EXACT_CELLS", len(q) * _index_search.BLOCK)  # one chunk
    want_slots, want_scores = ix.search(q, 10)
    np.testing.assert_array_equal(slots, want_slots)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
