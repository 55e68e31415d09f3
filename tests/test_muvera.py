"""MUVERA: FDE construction, exact Chamfer/MaxSim, token store, and the multi-vector operators."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ragkit.encoders.tokens import TokenCache, TokenVectors, gather_index
from ragkit.errors import DataError, ParamError
from ragkit.retrievers.fde import (
    FDEConfig,
    ball_carve,
    chamfer_pairs,
    chamfer_scores,
    draw_matrices,
    fde_dim,
    fde_documents,
    fde_queries,
)


def _sets(rng, n, lo, hi, d=32, centres=None):
    lens = rng.integers(lo, hi, n)
    off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    if centres is None:
        x = rng.standard_normal((off[-1], d))
    else:  # clustered tokens: each token near one of a few centres
        x = centres[rng.integers(0, len(centres), off[-1])] + 0.35 * rng.standard_normal((off[-1], centres.shape[1]))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), off


def _naive_fde(x, off, cfg, is_query):
    """Per-set, per-repetition loop implementation of the spec (reference for the vectorised one)."""
    d = x.shape[1]
    g, s = draw_matrices(cfg, d)
    k, B = cfg.k_sim, cfg.buckets
    dp = cfg.proj_dim(d)
    out = np.zeros((len(off) - 1, cfg.r_reps * B * dp))
    for j in range(len(off) - 1):
        P = x[off[j]:off[j + 1]].astype(np.float64)
        for r in range(cfg.r_reps):
            bits = (P @ g[:, r * k:(r + 1) * k]) > 0
            ids = [int("".join("1" if b else "0" for b in row) or "0", 2) for row in bits]
            proj = P @ s[:, r * dp:(r + 1) * dp] if s is not None else P
            for b in range(B):
                members = [i for i, v in enumerate(ids) if v == b]
                blk = slice(r * B * dp + b * dp, r * B * dp + (b + 1) * dp)
                if members:
                    out[j, blk] = proj[members].sum(0) if is_query else proj[members].mean(0)
                elif not is_query and cfg.fill_empty and len(P):
                    pat = np.array([(b >> (k - 1 - i)) & 1 for i in range(k)], bool)
                    ham = [(row != pat).sum() for row in bits]
                    best = int(np.argmin(ham))  # first minimum = lowest token index
                    out[j, blk] = proj[best]
    if cfg.d_final is None and cfg.mean_weight > 0:  # mean channel, per set
        tail = np.array([x[off[j]:off[j + 1]].astype(np.float64).sum(0) for j in range(len(off) - 1)])
        if is_query:
            tail *= cfg.mean_weight * cfg.r_reps
        else:
            norm = np.linalg.norm(tail, axis=1, keepdims=True)
            tail /= np.where(norm > 0, norm, 1)
        out = np.concatenate([out, tail], axis=1)
    return out


# ------------------------------------------------------------------------------ FDE
@pytest.mark.parametrize("cfg,d,want", [
    (FDEConfig(k_sim=5, d_proj=16, r_reps=20), 384, 20 * 32 * 16),
    (FDEConfig(k_sim=3, d_proj=8, r_reps=2), 64, 2 * 8 * 8),
    (FDEConfig(k_sim=2, r_reps=3, projection="identity"), 24, 3 * 4 * 24),
    (FDEConfig(k_sim=4, d_proj=16, r_reps=10, d_final=1000), 64, 1000),
    (FDEConfig(k_sim=2, r_reps=3, projection="identity", mean_weight=1.0), 24, 3 * 4 * 24 + 24),
    (FDEConfig(k_sim=4, d_proj=16, r_reps=10, d_final=1000, mean_weight=0.5), 64, 1000 + 64),
])
def test_fde_dimension_formula(cfg, d, want):
    rng = np.random.default_rng(0)
    x, off = _sets(rng, 5, 1, 9, d=d)
    assert fde_dim(cfg, d) == want
    assert fde_documents(x, off, cfg).shape == (5, want)
    assert fde_queries(x, off, cfg).shape == (5, want)


@pytest.mark.parametrize("cfg", [
    FDEConfig(k_sim=3, d_proj=8, r_reps=3, seed=5),
    FDEConfig(k_sim=2, r_reps=2, projection="identity", seed=1),
    FDEConfig(k_sim=3, d_proj=6, r_reps=2, projection="countsketch"),
    FDEConfig(k_sim=3, d_proj=6, r_reps=2, fill_empty=False),
    FDEConfig(k_sim=2, d_proj=6, r_reps=3, mean_weight=0.7),
])
def test_fde_matches_naive_loop_implementation(cfg):
    rng = np.random.default_rng(1)
    x, off = _sets(rng, 12, 0, 11, d=16)  # includes empty sets
    np.testing.assert_allclose(fde_documents(x, off, cfg), _naive_fde(x, off, cfg, False), atol=1e-5)
    np.testing.assert_allclose(fde_queries(x, off, cfg), _naive_fde(x, off, cfg, True), atol=1e-5)


def test_query_sum_document_mean_asymmetry():
    rng = np.random.default_rng(2)
    x, off = _sets(rng, 6, 1, 12, d=16)
    one = FDEConfig(k_sim=0, r_reps=1, projection="identity")  # one bucket: sum vs mean exactly
    q, p = fde_queries(x, off, one), fde_documents(x, off, one)
    for j in range(6):
        np.testing.assert_allclose(q[j], x[off[j]:off[j + 1]].sum(0), atol=1e-5)
        np.testing.assert_allclose(p[j], x[off[j]:off[j + 1]].mean(0), atol=1e-6)
    cfg = FDEConfig(k_sim=4, r_reps=2, projection="identity")
    q, p = fde_queries(x, off, cfg).reshape(6, -1, 16), fde_documents(x, off, cfg).reshape(6, -1, 16)
    # documents fill every bucket, queries leave empty buckets at zero
    assert (np.abs(p).sum(-1) > 0).all()
    assert (np.abs(q).sum(-1) == 0).any()
    q_nonzero = (np.abs(q).sum(-1) > 0).sum(1)
    assert (q_nonzero <= 2 * np.diff(off)).all()  # at most one bucket per token per repetition


def test_fde_mean_channel_adds_weighted_single_vector_similarity():
    """FDE ip with the mean channel = ip without it + mean_weight * r_reps * <sum q, unit mean of P>,
    with or without a final sketch (the channel is appended after it, never sketched)."""
    rng = np.random.default_rng(12)
    D, Doff = _sets(rng, 9, 0, 14, d=16)                   # includes empty documents: channel 0
    Q, Qoff = _sets(rng, 4, 1, 6, d=16)
    for base in (FDEConfig(k_sim=3, d_proj=8, r_reps=4), FDEConfig(k_sim=3, d_proj=8, r_reps=4, d_final=50)):
        plain = fde_queries(Q, Qoff, base) @ fde_documents(D, Doff, base).T
        cfg = FDEConfig(**{**vars(base), "mean_weight": 0.25})
        with_mean = fde_queries(Q, Qoff, cfg) @ fde_documents(D, Doff, cfg).T
        qsum = np.array([Q[Qoff[i]:Qoff[i + 1]].sum(0) for i in range(4)])
        dsum = np.array([D[Doff[j]:Doff[j + 1]].sum(0) for j in range(9)])
        dnorm = np.linalg.norm(dsum, axis=1, keepdims=True)
        want = plain + 0.25 * 4 * qsum @ (dsum / np.where(dnorm > 0, dnorm, 1)).T
        np.testing.assert_allclose(with_mean, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ParamError, match="mean_weight"):
        FDEConfig(mean_weight=-1.0)


def test_fde_deterministic_under_seed():
    rng = np.random.default_rng(3)
    x, off = _sets(rng, 8, 1, 10, d=16)
    a = fde_documents(x, off, FDEConfig(k_sim=3, d_proj=8, r_reps=4, seed=7))
    b = fde_documents(x, off, FDEConfig(k_sim=3, d_proj=8, r_reps=4, seed=7))
    c = fde_documents(x, off, FDEConfig(k_sim=3, d_proj=8, r_reps=4, seed=8))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    # repetition r depends only on seed + r: the first reps of a longer FDE are the shorter FDE
    d = fde_documents(x, off, FDEConfig(k_sim=3, d_proj=8, r_reps=2, seed=7))
    np.testing.assert_allclose(a[:, :d.shape[1]], d, atol=1e-5)


def test_fde_inner_product_tracks_chamfer():
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((40, 32))
    D, Doff = _sets(rng, 200, 20, 60, centres=centres)
    Q, Qoff = _sets(rng, 20, 4, 16, centres=centres)
    ch = chamfer_scores(Q, Qoff, D, Doff)
    cfg = FDEConfig(k_sim=5, d_proj=16, r_reps=20)  # the paper's operating point (10,240 dims at d=128)
    ip = fde_queries(Q, Qoff, cfg) @ fde_documents(D, Doff, cfg).T
    corr = np.corrcoef(ip.ravel(), ch.ravel())[0, 1]
    assert corr > 0.85, corr  # measured 0.94
    # the FDE top-60 (30% of the corpus) holds most of the exact top-10 (chance: 0.30)
    top_fde = np.argsort(-ip, 1)[:, :60]
    top_ex = np.argsort(-ch, 1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_fde, top_ex)])
    assert recall > 0.75, recall  # measured 0.885
    # swapping the roles (document = sum, query = mean) breaks the approximation
    bad = fde_documents(Q, Qoff, cfg) @ fde_queries(D, Doff, cfg).T
    assert np.corrcoef(bad.ravel(), ch.ravel())[0, 1] < corr - 0.1
    # the final Count-Sketch projection (shared by queries and documents) keeps the approximation
    small = FDEConfig(k_sim=5, d_proj=16, r_reps=20, d_final=4096)
    ip_f = fde_queries(Q, Qoff, small) @ fde_documents(D, Doff, small).T
    assert fde_queries(Q, Qoff, small).shape[1] == 4096
    assert np.corrcoef(ip_f.ravel(), ch.ravel())[0, 1] > corr - 0.1


def test_fde_rejects_bad_input():
    with pytest.raises(ParamError, match="k_sim"):
        FDEConfig(k_sim=40)
    with pytest.raises(DataError, match="offsets"):
        fde_documents(np.zeros((5, 4), np.float32), np.array([0, 2, 4]), FDEConfig(k_sim=1, d_proj=2, r_reps=1))


# -------------------------------------------------------------------------- Chamfer
def test_chamfer_scores_and_pairs_match_naive():
    rng = np.random.default_rng(5)
    D, Doff = _sets(rng, 30, 0, 20, d=16)  # some empty documents
    Q, Qoff = _sets(rng, 4, 1, 7, d=16)
    naive = np.zeros((4, 30), np.float32)
    for i in range(4):
        for j in range(30):
            P = D[Doff[j]:Doff[j + 1]]
            naive[i, j] = (Q[Qoff[i]:Qoff[i + 1]] @ P.T).max(1).sum() if len(P) else 0.0
    full = chamfer_scores(Q, Qoff, D, Doff, chunk_elems=500)  # force many chunks
    np.testing.assert_allclose(full, naive, atol=1e-5)
    rows = rng.integers(0, 30, (4, 9))
    rows[1, 5:] = -1
    pairs = chamfer_pairs(Q, Qoff, D, Doff, rows, chunk_elems=1000)
    want = np.take_along_axis(naive, np.maximum(rows, 0), 1)
    want[np.diff(Doff)[np.maximum(rows, 0)] == 0] = -np.inf  # a document without tokens: no similarity (s53)
    np.testing.assert_allclose(pairs[rows >= 0], want[rows >= 0], atol=1e-5)
    assert np.isneginf(pairs[1, 5:]).all()


def test_chamfer_on_float16_memory_map_matches_float32(tmp_path):
    """The stored form (float16, read-only memory map) scores as its float32 upcast, with no warning."""
    rng = np.random.default_rng(12)
    D, Doff = _sets(rng, 40, 0, 30, d=16)
    Q, Qoff = _sets(rng, 6, 1, 9, d=16)
    np.save(tmp_path / "d.npy", D.astype(np.float16))
    D16 = np.load(tmp_path / "d.npy", mmap_mode="r")
    D32 = np.asarray(D16, np.float32)
    rows = rng.integers(0, 40, (6, 11))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = chamfer_scores(Q, Qoff, D16, Doff, chunk_elems=700)
        pairs = chamfer_pairs(Q, Qoff, D16, Doff, rows, chunk_elems=2000)
    np.testing.assert_allclose(full, chamfer_scores(Q, Qoff, D32, Doff), atol=1e-5)
    want = np.take_along_axis(full, rows, 1)
    want[np.diff(Doff)[rows] == 0] = -np.inf  # chamfer_pairs: a document without tokens has no similarity (s53)
    np.testing.assert_allclose(pairs, want, atol=1e-5)


def test_chamfer_rejects_mismatched_input():
    rng = np.random.default_rng(13)
    D, Doff = _sets(rng, 5, 1, 4, d=16)
    Q, Qoff = _sets(rng, 2, 1, 4, d=8)
    with pytest.raises(DataError, match="8 dimensions, document tokens 16"):
        chamfer_scores(Q, Qoff, D, Doff)
    with pytest.raises(DataError, match="8 dimensions, document tokens 16"):
        chamfer_pairs(Q, Qoff, D, Doff, np.zeros((2, 1), np.int64))
    Q, Qoff = _sets(rng, 2, 1, 4, d=16)
    with pytest.raises(DataError, match="document 5, but there are 5 documents"):
        chamfer_pairs(Q, Qoff, D, Doff, np.array([[0, 5], [1, 2]]))


def test_ball_carving_keeps_token_weight():
    rng = np.random.default_rng(6)
    D, Doff = _sets(rng, 20, 3, 15, d=16)
    Q, Qoff = _sets(rng, 5, 2, 9, d=16)
    c, co, w = ball_carve(Q, Qoff, 1.01)  # nothing merges: identical to the plain query
    np.testing.assert_allclose(chamfer_scores(c, co, D, Doff, q_weights=w), chamfer_scores(Q, Qoff, D, Doff), atol=1e-5)
    c, co, w = ball_carve(Q, Qoff, -1.0)  # everything merges: one centre = the sum of the tokens
    assert np.array_equal(co, np.arange(6))
    for i in range(5):
        s = Q[Qoff[i]:Qoff[i + 1]].sum(0)
        np.testing.assert_allclose(c[i] * w[i], s, atol=1e-5)
    c, co, w = ball_carve(Q, Qoff, 0.2)
    assert len(c) == co[-1] and len(w) == len(c) and np.all(np.diff(co) >= 1)  # a centre per query at least
    assert co[-1] < Qoff[-1]  # some tokens merged at this radius


def test_d_proj_equal_to_d_is_the_identity_projection():
    """The spec: "if d_proj = d, psi is the identity" (ams and countsketch alike)."""
    rng = np.random.default_rng(3)
    x, off = _sets(rng, 6, 1, 9, d=16)
    ident = fde_documents(x, off, FDEConfig(k_sim=2, r_reps=3, projection="identity"))
    for projection in ("ams", "countsketch"):
        cfg = FDEConfig(k_sim=2, d_proj=16, r_reps=3, projection=projection)
        assert draw_matrices(cfg, 16)[1] is None
        np.testing.assert_array_equal(fde_documents(x, off, cfg), ident)


def test_fill_empty_at_many_buckets_matches_the_reference():
    """k_sim 10 (1,024 buckets): the token chunk shrinks with the bucket count; same FDEs as the spec."""
    rng = np.random.default_rng(5)
    x, off = _sets(rng, 4, 0, 12, d=8)
    cfg = FDEConfig(k_sim=10, d_proj=4, r_reps=1)
    np.testing.assert_allclose(fde_documents(x, off, cfg), _naive_fde(x, off, cfg, False), atol=1e-5)


def test_ball_carve_in_chunks_equals_all_at_once():
    rng = np.random.default_rng(9)
    q, qoff = _sets(rng, 40, 0, 30, d=16)
    whole = ball_carve(q, qoff, 0.3)
    chunked = ball_carve(q, qoff, 0.3, max_bytes=1)  # one query per chunk
    for a, b in zip(whole, chunked):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------- token store
def test_token_vectors_take_and_cache(tmp_path):
    rng = np.random.default_rng(7)
    x, off = _sets(rng, 10, 0, 6, d=8)
    tv = TokenVectors(x.astype(np.float16), off)
    sub = tv.take([3, 0, 3, 9])
    for i, j in enumerate([3, 0, 3, 9]):
        assert np.array_equal(sub[i], tv[j])
    idx, new_off = gather_index(off, np.array([2, 1]))
    assert np.array_equal(idx, np.r_[np.arange(off[2], off[3]), np.arange(off[1], off[2])])
    cache = TokenCache(tmp_path, "model-x")
    keys = np.array([bytes([i]) * 16 for i in range(10)], dtype="V16")
    cache.put(keys, tv)
    cache2 = TokenCache(tmp_path, "model-x")
    parts, hit = cache2.get(keys[[4, 2]])
    assert hit.all() and len(parts) == 1
    assert np.array_equal(parts[0][1][0], tv[4]) and np.array_equal(parts[0][1][1], tv[2])
    parts, hit = cache2.get(keys)
    assert isinstance(parts[0][1].data, np.memmap)  # the whole shard in order stays memory-mapped
    with pytest.raises(DataError, match="offsets"):
        TokenVectors(x, off[:-1])


def test_query_memo_forgets_the_least_recently_used_and_keeps_the_batch():
    """The query memo past memo_size drops its oldest entries, never the batch being answered
    (clearing it under a batch that repeated a memoised query was a KeyError)."""
    from ragkit.encoders.tokens import TokenEncoder

    forwarded = []

    class Fake(TokenEncoder):
        dim = 4

        def _forward(self, texts, progress=False):
            forwarded.extend(texts)
            n = np.array([len(t) for t in texts])
            data = np.repeat(np.array([[len(t), 0, 0, 0] for t in texts], np.float16), n, axis=0)
            return TokenVectors(data, np.r_[0, np.cumsum(n)])

    enc = Fake(cache=False)
    enc.memo_size = 4
    enc.encode_queries(["a", "bb", "ccc"])
    out = enc.encode_queries(["a", "dddd", "eeeee", "a"])  # 3 memoised + 2 new > 4
    assert out.lengths.tolist() == [1, 4, 5, 1] and [m[0, 0] for m in (out[0], out[1], out[3])] == [1, 4, 1]
    assert list(enc._memo) == ["ccc", "a", "dddd", "eeeee"]  # "bb" (least recently used) forgotten
    forwarded.clear()
    enc.encode_queries(["bb", "a"])
    assert forwarded == ["bb"] and len(enc._memo) == 4
    big = enc.encode_queries([f"q{i}" for i in range(10)])  # a batch larger than the memo
    assert big.lengths.tolist() == [2] * 10 and len(enc._memo) == 4


def test_query_token_vectors_are_not_counted_as_documents_and_cached_when_asked(tmp_path, monkeypatch):
    """``ragkit eval`` reported a learned MUVERA pipeline's 807 training queries as "807 documents
    encoded": encode_queries counted its texts in ``n_encoded``.  Queries are not counted now, and
    their token vectors go to the disk cache where ``caching_queries`` asks (as sentence vectors do)."""
    from ragkit.encoders import caching_queries
    from ragkit.encoders.tokens import TokenEncoder, TokenVectors

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("RAGKIT_CACHE_QUERIES", raising=False)
    forwarded: list[str] = []

    class Fake(TokenEncoder):
        dim = 4
        key = "fake"

        def _forward(self, texts, progress=False):
            forwarded.extend(texts)
            n = np.array([len(t) for t in texts])
            data = np.repeat(np.array([[len(t), 0, 0, 0] for t in texts], np.float16), n, axis=0)
            return TokenVectors(data, np.r_[0, np.cumsum(n)])

    enc = Fake()
    enc.encode_queries(["a", "bb"])
    assert enc.n_encoded == 0 and forwarded == ["a", "bb"] and not (tmp_path / "tokens").exists()
    enc.encode(["doc one", "doc two"])
    assert enc.n_encoded == 2
    with caching_queries():
        Fake().encode_queries(["ccc", "dddd"])
        forwarded.clear()
        again = Fake().encode_queries(["dddd", "ccc"])  # a fresh memo: read back from disk
    assert forwarded == [] and again.lengths.tolist() == [4, 3]
    assert Fake().n_encoded == 0


def test_max_seq_length_never_leaks_into_another_encoder(tmp_path, monkeypatch):
    """Encoders of one model with different truncation never share a model object: a short
    max_seq_length used first must not truncate the default encoders (nor their cache entries)."""
    from ragkit.encoders import get_encoder
    from ragkit.encoders.tokens import get_token_encoder

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    long = "vitamin d deficiency and the risk of fractures in older adults " * 4
    n_full = len(get_token_encoder().encode([long], cache=False)[0])
    dense_full = get_encoder().encode_queries([long])
    assert len(get_token_encoder(max_seq_length=8).encode([long], cache=False)[0]) == 8
    get_encoder(max_seq_length=8).encode_queries(["x"])
    assert len(get_token_encoder().encode([long])[0]) == n_full > 8
    np.testing.assert_allclose(get_encoder().encode_queries([long]), dense_full, atol=1e-6)
    assert get_encoder().model.max_seq_length > 8


# --------------------------------------------------------------------------- operators
@pytest.fixture(scope="module")
def tiny(slice_data):
    corpus, queries, qrels, _ = slice_data
    return corpus.subset(np.arange(60)), queries[:5]


def test_muvera_rerank_equals_brute_force_when_candidates_cover_corpus(tiny):
    from ragkit.retrievers import MaxSimExact, Muvera

    corpus, queries = tiny
    exact = MaxSimExact(k=10).fit(corpus).search(queries)
    mu = Muvera(k=10, candidates=len(corpus), k_sim=3, d_proj=8, r_reps=4).fit(corpus).search(queries)
    for a, b in zip(exact.rankings, mu.rankings):
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)


def test_maxsim_reranker_equals_exact_on_its_candidates(tiny):
    from ragkit.filters import MaxSim
    from ragkit.retrievers import BM25, MaxSimExact

    corpus, queries = tiny
    run = (BM25(k=15) | MaxSim()).fit(corpus).search(queries)
    exact = MaxSimExact(k=len(corpus)).fit(corpus).search(queries)
    bm = BM25(k=15).fit(corpus).search(queries)
    for r, e, b in zip(run.rankings, exact.rankings, bm.rankings):
        assert set(r.rows.tolist()) == set(b.rows.tolist())
        keep = np.isin(e.rows, b.rows)
        np.testing.assert_array_equal(r.rows, e.rows[keep])
    # fields of a fused ranking (each branch's rank and score) travel with their documents
    from ragkit.pipelines import RRF

    fused_pipe = ((BM25(k=15) + BM25(k=15, variant="okapi")) | RRF(k=60)).fit(corpus)
    fused = fused_pipe.search(queries)
    reranked = (fused_pipe | MaxSim()).fit(corpus).search(queries)
    for r, f in zip(reranked.rankings, fused.rankings):
        assert f.fields and set(f.fields) <= set(r.fields)
        at = {row: i for i, row in enumerate(f.rows.tolist())}
        for name, col in f.fields.items():
            np.testing.assert_array_equal(r.fields[name], col[[at[x] for x in r.rows.tolist()]])


def test_muvera_save_load_reproduces_query_fdes_bit_for_bit(tiny, tmp_path):
    from ragkit.operator import Operator
    from ragkit.retrievers import Muvera

    corpus, queries = tiny
    mu = Muvera(k=5, candidates=20, k_sim=3, d_proj=8, r_reps=4, fde_dtype="f16", seed=3, mean_weight=1.0).fit(corpus)
    mu.save(tmp_path / "mu")
    back = Operator.load(tmp_path / "mu", mmap=True)
    q = mu.token_encoder.encode_queries(queries.texts)
    assert np.array_equal(back.query_fde(q), mu.query_fde(q))
    qf = mu.query_fde(q)
    for a, b in zip(back.index_.search(qf, 7), mu.index_.search(qf, 7)):
        assert np.array_equal(a, b)
    for a, b in zip(back.search(queries).rankings, mu.search(queries).rankings):
        assert a.equals(b)


def test_muvera_loads_a_save_from_before_the_mean_channel(tiny, tmp_path):
    """A muvera.json written before ``mean_weight`` existed loads as ``mean_weight=0``; a save
    whose FDE config disagrees with the parameters is refused."""
    import json

    from ragkit.errors import ArtifactError
    from ragkit.operator import Operator
    from ragkit.retrievers import Muvera

    corpus, queries = tiny
    mu = Muvera(k=5, candidates=20, k_sim=2, d_proj=8, r_reps=2).fit(corpus)
    mu.save(tmp_path / "mu")
    meta_path = tmp_path / "mu" / "muvera.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["mean_weight"]
    meta_path.write_text(json.dumps(meta))
    (tmp_path / "mu" / "checksums.json").unlink()  # such a save also predates the folder's checksums:
    with pytest.raises(ArtifactError, match="no checksums.json"):  # loading it unchecked is asked for
        Operator.load(tmp_path / "mu")
    back = Operator.load(tmp_path / "mu", verify=False)
    for a, b in zip(back.search(queries).rankings, mu.search(queries).rankings):
        assert a.equals(b)
    meta["config"]["mean_weight"] = 2.0
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="does not match"):
        Operator.load(tmp_path / "mu", verify=False)


def test_muvera_int8_graph_ranks_by_fde_inner_product(tiny):
    """FDEs stored as an int8 HNSW graph: query FDEs (token sums) are far larger than document
    FDEs (token means); the shortlist must still follow the FDE inner product, on its scale."""
    from ragkit.retrievers import Muvera

    corpus, queries = tiny
    kw = dict(k=10, k_sim=3, d_proj=8, r_reps=4, mean_weight=1.0, rerank=False)
    ref = Muvera(**kw).fit(corpus).search(queries)
    got = Muvera(**kw, fde_dtype="i8", search="hnsw").fit(corpus).search(queries)
    assert np.mean([len(set(a.rows) & set(b.rows)) / 10 for a, b in zip(got.rankings, ref.rankings)]) >= 0.9
    for a, b in zip(got.rankings, ref.rankings):
        np.testing.assert_allclose(a.scores[0], b.scores[0], rtol=0.05)


def test_muvera_without_rerank_answers_a_huge_k_with_the_corpus(tiny):
    """``search(k=...)`` is user input: the FDE search asks the index for at most its documents
    (a k of 5e7 allocated k result slots per query)."""
    from ragkit.retrievers import Muvera

    corpus, queries = tiny
    import tracemalloc

    op = Muvera(k=10, k_sim=3, d_proj=8, r_reps=4, rerank=False).fit(corpus)
    op.search(queries)  # loads the token model
    tracemalloc.start()
    run = op.search(queries, k=50_000_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert all(len(r) == len(corpus) for r in run.rankings) and peak < 64 << 20
    # an empty corpus answers empty rankings, with or without rerank, as every retriever does
    for rerank in (False, True):
        kw = {"candidates": 20} if rerank else {}  # (without rerank, candidates is refused: it does nothing)
        empty = Muvera(k=5, k_sim=2, d_proj=4, r_reps=2, rerank=rerank, **kw).fit(corpus.subset(np.arange(0)))
        assert [len(r) for r in empty.search(queries).rankings] == [0] * len(queries)


def test_muvera_params_cross_checks():
    from ragkit.retrievers import Muvera

    with pytest.raises(ParamError, match="candidates"):
        Muvera(k=100, candidates=50)
    with pytest.raises(ParamError, match="d_final"):
        Muvera(k_sim=3, d_proj=8, r_reps=2, d_final=500)
    with pytest.raises(ParamError, match="ball_carve_tau"):
        Muvera(ball_carve_tau=2.0)
    # an FDE no machine holds (a typo for r_reps: 20) is refused at construction, not at fit
    product = r"r_reps \* 2\*\*k_sim \* d_proj = 40000 \* 2\*\*5 \* 16 = 20,480,000 dimensions"
    with pytest.raises(ParamError, match=r"muvera.r_reps: .*" + product):
        Muvera(r_reps=40_000, k_sim=5, d_proj=16)


def test_muvera_identity_fde_size_checked_before_encoding(slice_data, monkeypatch):
    """With projection: identity the FDE size needs the token dimension: fit checks it before encoding."""
    from ragkit.encoders.tokens import TokenEncoder
    from ragkit.retrievers import Muvera

    corpus = slice_data[0]

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded before the size check")

    monkeypatch.setattr(TokenEncoder, "encode", no_encoding)
    with pytest.raises(ParamError, match=r"the 384-d tokens \(projection: identity\) = 3,145,728 dimensions"):
        Muvera(projection="identity", k_sim=3, r_reps=1024, k=5, candidates=10).fit(corpus)


def test_chamfer_pairs_padding_never_wins():
    """Short documents are padded inside a chunk; a padded slot must not beat a negative true max."""
    rng = np.random.default_rng(11)
    lens = np.array([1, 7, 3, 12, 0])                       # the last document is empty
    D = rng.standard_normal((int(lens.sum()), 8)).astype(np.float32)
    Doff = np.concatenate([[0], np.cumsum(lens)])
    Q = -np.abs(D[:2]) - 1.0                                 # every similarity with these is strongly negative
    D = np.abs(D)
    Qoff = np.array([0, 2])
    rows = np.array([[0, 1, 2, 3, 4]])
    got = chamfer_pairs(Q, Qoff, D, Doff, rows)
    want = [(Q @ D[Doff[j]:Doff[j + 1]].T).max(1).sum() if lens[j] else -np.inf for j in range(5)]  # (s53)
    np.testing.assert_allclose(got[0], want, rtol=1e-5)
    assert (got[0, :4] < 0).all()


# ------------------------------------------------------------- centroid interaction (prune)
def test_code_sets_are_distinct_sorted_codes_per_document():
    from ragkit.retrievers.centroids import code_sets

    codes = np.array([3, 1, 3, 0, 2, 2, 5, 1], np.int32)
    off = np.array([0, 3, 3, 6, 8])  # second document empty
    data, co = code_sets(codes, off)
    assert co.tolist() == [0, 2, 2, 4, 6]
    assert data.tolist() == [1, 3, 0, 2, 1, 5] and data.dtype == np.uint16


def test_codebook_is_unit_deterministic_and_assignment_is_argmax():
    from ragkit.retrievers.centroids import assign_codes, fit_codebook

    rng = np.random.default_rng(4)
    x, _ = _sets(rng, 40, 5, 15, d=16, centres=rng.standard_normal((6, 16)))
    cb = fit_codebook(x, 8, seed=1)
    assert cb.shape == (8, 16) and np.allclose(np.linalg.norm(cb, axis=1), 1, atol=1e-5)
    assert np.array_equal(cb, fit_codebook(x, 8, seed=1))
    assert np.array_equal(assign_codes(x.astype(np.float16), cb, chunk=7),
                          np.argmax(x.astype(np.float16).astype(np.float32) @ cb.T, axis=1))
    with pytest.raises(DataError, match="n_centroids"):
        fit_codebook(x, len(x) + 1)


def test_centroid_pairs_match_naive_and_equal_chamfer_with_exact_codebook():
    """Centroid interaction = Chamfer with every document token moved to its centroid; with a
    codebook that holds every token it is exact Chamfer.  Padding, empty documents, weights."""
    from ragkit.retrievers.centroids import centroid_pairs, code_sets

    rng = np.random.default_rng(8)
    D, Doff = _sets(rng, 25, 0, 12, d=16)  # some empty documents
    Q, Qoff = _sets(rng, 5, 1, 9, d=16)
    cb = _sets(rng, 1, 11, 12, d=16)[0]
    codes = np.argmax(D @ cb.T, axis=1)
    cd, co = code_sets(codes, Doff)
    rows = rng.integers(0, 25, (5, 8))
    rows[2, 4:] = -1
    rows[3] = -1  # a query with no candidate: a chunk without pairs
    w = rng.uniform(0.5, 2.0, len(Q)).astype(np.float32)
    got = centroid_pairs(Q, Qoff, cb, cd, co, rows, q_weights=w, chunk_elems=300)  # force many chunks
    moved = cb[codes]
    for i in range(5):
        for j in range(8):
            d = rows[i, j]
            if d < 0:
                assert np.isneginf(got[i, j])
                continue
            P = moved[Doff[d]:Doff[d + 1]]
            want = ((Q[Qoff[i]:Qoff[i + 1]] @ P.T).max(1) * w[Qoff[i]:Qoff[i + 1]]).sum() if len(P) else -np.inf
            assert got[i, j] == pytest.approx(want, abs=1e-5)
    exact_cd, exact_co = code_sets(np.arange(len(D)), Doff)  # codebook = the tokens themselves
    np.testing.assert_allclose(centroid_pairs(Q, Qoff, D, exact_cd, exact_co, np.maximum(rows, 0)),
                               chamfer_pairs(Q, Qoff, D, Doff, np.maximum(rows, 0)), atol=1e-5)
    with pytest.raises(DataError, match="rows"):
        centroid_pairs(Q, Qoff, cb, cd, co, rows[:2])


def test_muvera_prune_keeps_the_centroid_best_and_reranks_them_exactly(tiny, tmp_path):
    from ragkit.operator import Operator
    from ragkit.retrievers import Muvera
    from ragkit.types import State

    corpus, queries = tiny
    kw = dict(k=5, candidates=30, k_sim=3, d_proj=8, r_reps=4, mean_weight=1.0)
    full = Muvera(**kw).fit(corpus)
    same = Muvera(**kw, prune=30, centroids=32).fit(corpus)  # prune = candidates: nothing cut
    for a, b in zip(full.search(queries).rankings, same.search(queries).rankings):
        assert a.equals(b)
    mu = Muvera(**kw, prune=8, centroids=32).fit(corpus)
    got = mu.search(queries)
    q = mu.token_encoder.encode_queries(queries.texts)
    rows, _ = mu.index_.search(mu.query_fde(q), 30)
    qd = np.asarray(q.data, np.float32)
    kept = mu.prune_candidates(qd, q.offsets, None, rows, 8)
    for i, (r, kp) in enumerate(zip(got.rankings, kept)):
        assert set(r.rows.tolist()) <= set(kp.tolist()) and len(r) == 5
        # the kept 8 are the best 8 by a naive centroid interaction: per query token, its best
        # centroid among the document's codes, summed
        qt = qd[q.offsets[i]:q.offsets[i + 1]]
        naive = np.array([(qt @ mu.codebook_[mu.codes_[mu.code_offsets_[d]:mu.code_offsets_[d + 1]]].T).max(1).sum()
                          for d in rows[i]])
        best = np.sort(naive)[::-1]
        assert np.sort(naive[np.isin(rows[i], kp)])[::-1] == pytest.approx(best[:8], abs=1e-4)
    mu.save(tmp_path / "mu")
    back = Operator.load(tmp_path / "mu", mmap=True)
    for a, b in zip(back.search(queries).rankings, got.rankings):
        assert a.equals(b)
    # run-time override needs a codebook: refused by search before any work (no FDE search), and by a
    # direct call of the operator
    searched = []
    real = full.index_.search
    full.index_.search = lambda *a, **kw: searched.append(1) or real(*a, **kw)
    with pytest.raises(ParamError, match=r"search option muvera.prune: pruning to 6 candidates needs a token codebook"):
        full.search(queries, muvera={"prune": 6})
    assert not searched
    assert len(same.search(queries, muvera={"prune": 6}).rankings[0]) == 5  # fitted with a codebook: accepted
    with pytest.raises(DataError, match="codebook"):
        full(State.of(queries.texts[:1], options={"muvera": {"prune": 6}}))
    with pytest.raises(DataError, match="centroids"):
        Muvera(**kw, prune=8, centroids=10**7).fit(corpus)


def test_muvera_prune_params_cross_checks():
    from ragkit.retrievers import Muvera

    with pytest.raises(ParamError, match="prune"):
        Muvera(k=10, candidates=50, prune=5)
    with pytest.raises(ParamError, match="prune"):
        Muvera(k=10, candidates=50, prune=60)
    with pytest.raises(ParamError, match="prune"):
        Muvera(k=10, candidates=50, prune=20, rerank=False)


def test_codebook_cache_is_read_back_and_a_bad_entry_rebuilt(tmp_path, monkeypatch):
    """build_codes stores its result under the cache key; the next call reads it (no k-means);
    a stored codebook of the wrong shape is rebuilt, not used."""
    import ragkit.retrievers.centroids as cen

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    rng = np.random.default_rng(2)
    x, off = _sets(rng, 30, 1, 12, d=16)
    first = cen.build_codes(x, off, 8, seed=3, cache_key="k1")
    fits = []
    real = cen.fit_codebook
    monkeypatch.setattr(cen, "fit_codebook", lambda *a, **kw: fits.append(1) or real(*a, **kw))
    again = cen.build_codes(x, off, 8, seed=3, cache_key="k1")
    assert not fits and all(np.array_equal(a, b) for a, b in zip(first, again))
    (folder,) = (tmp_path / "codebooks").iterdir()
    np.save(folder / "codebook.npy", np.zeros((3, 16), np.float32))  # wrong shape: rebuilt
    rebuilt = cen.build_codes(x, off, 8, seed=3, cache_key="k1")
    assert fits == [1] and all(np.array_equal(a, b) for a, b in zip(first, rebuilt))
    cen.build_codes(x, off, 8, seed=3, cache_key=None)  # no key: nothing read or written
    assert fits == [1, 1] and len(list((tmp_path / "codebooks").iterdir())) == 1


def test_a_codebook_cache_that_cannot_be_written_warns_and_keeps_the_codebook(tmp_path, monkeypatch):
    """fit(prune=...) raised NotADirectoryError after its k-means, losing the codebook it had built."""
    import ragkit.retrievers.centroids as cen

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("RAGKIT_CACHE", str(blocker / "cache"))  # under a file: cannot be made
    x, off = _sets(np.random.default_rng(2), 30, 1, 12, d=16)
    with pytest.warns(RuntimeWarning, match=r"cannot be written \(NotADirectoryError.*codebook is used but not cached"):
        got = cen.build_codes(x, off, 8, seed=3, cache_key="k1")
    want = cen.build_codes(x, off, 8, seed=3, cache_key=None)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


def test_maxsim_reranker_keeps_what_the_call_asks_for(tiny):
    """Its k ignored the call's k (5 results for search(k=10), where top_k gives 10), and it had no k option."""
    from ragkit.filters import MaxSim
    from ragkit.retrievers import MaxSimExact

    corpus, queries = tiny
    pipe = (MaxSimExact(k=20) | MaxSim(k=5)).fit(corpus)
    assert [len(r) for r in pipe.search(queries).rankings] == [5] * len(queries)
    assert [len(r) for r in pipe.search(queries, k=10).rankings] == [10] * len(queries)
    assert [len(r) for r in pipe.search(queries, maxsim={"k": 3}).rankings] == [3] * len(queries)
    keep_all = (MaxSimExact(k=20) | MaxSim()).fit(corpus)
    assert [len(r) for r in keep_all.search(queries).rankings] == [20] * len(queries)


def test_a_query_without_tokens_finds_nothing_and_keeps_a_reranked_order(tiny):
    """With special_tokens: drop an empty query has no token: every Chamfer score is 0, and the
    corpus order came back (from muvera and maxsim_exact) or replaced the incoming one (maxsim)."""
    from ragkit.filters import MaxSim
    from ragkit.retrievers import MaxSimExact, Muvera

    corpus, queries = tiny
    texts = ["", queries.texts[0]]
    for op in (MaxSimExact(k=3, special_tokens="drop"),
               Muvera(k=3, candidates=10, k_sim=2, d_proj=8, r_reps=2, special_tokens="drop")):
        got = op.fit(corpus).search(texts).rankings
        assert [len(r) for r in got] == [0, 3], op
    before = MaxSimExact(k=5).fit(corpus).search(texts).rankings  # "" keeps [CLS] and [SEP]: 5 results
    after = (MaxSimExact(k=5) | MaxSim(special_tokens="drop")).fit(corpus).search(texts).rankings
    assert after[0].equals(before[0])  # nothing to rescore with: the incoming order and scores
    assert set(after[1].rows.tolist()) == set(before[1].rows.tolist())


def test_registered_single_vector_encoders_are_refused_by_token_operators(tiny):
    from ragkit.encoders import register_encoder, unregister_encoder
    from ragkit.filters import MaxSim
    from ragkit.retrievers import MaxSimExact, Muvera

    class OneVector:
        dim, key = 4, "one-vector-4"

        def encode(self, texts, **kw):
            return np.ones((len(texts), 4), np.float32) / 2

        encode_queries = encode

    register_encoder("one-vector", OneVector(), replace=True)
    try:
        for op in (Muvera(model="one-vector"), MaxSimExact(model="one-vector"), MaxSim(model="one-vector")):
            with pytest.raises(ParamError, match=rf"{op.name}\.model: model 'one-vector' is a registered custom "
                                                 r"encoder, which gives one vector per text"):
                op.fit(tiny[0])
    finally:
        unregister_encoder("one-vector")


def test_token_offsets_and_positions_are_checked():
    from ragkit.retrievers.fde import chamfer_scores

    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    with pytest.raises(DataError, match=r"offsets must not decrease; offsets\[2\] = 3 < offsets\[1\] = 5"):
        chamfer_scores(x[:2], np.array([0, 2]), x, np.array([0, 5, 3, 6]))
    tv = TokenVectors(x.astype(np.float16), np.array([0, 2, 6]))
    assert tv[-1].shape == (4, 4) and np.array_equal(tv[-1], tv[1])
    with pytest.raises(IndexError):
        tv[2]
    for bad in ([-1], [5]):
        with pytest.raises(DataError, match=rf"row {bad[0]} outside the 2 texts"):
            tv.take(bad)


def test_segment_sums_match_a_loop_with_empty_segments_and_an_offset_start() -> None:
    """The FDE mean channel and brute-force Chamfer sum rows per segment with one sparse product."""
    from ragkit.retrievers.fde import _segment_sum_rows

    rng = np.random.default_rng(3)
    m = rng.standard_normal((12, 5)).astype(np.float32)
    for off in (np.array([0, 0, 3, 3, 7, 12]), np.array([2, 4, 4, 9])):
        got = _segment_sum_rows(m, off)
        want = np.stack([m[a:b].sum(axis=0) for a, b in zip(off[:-1], off[1:])])
        assert got.dtype == np.float32 and got.shape == (len(off) - 1, 5)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
