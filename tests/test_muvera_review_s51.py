"""Review s51 of MUVERA and KnnEmbed: the memory of document FDE encoding at large ``k_sim``, the random
draws an FDE search repeats, the checks a load repeats, one check of one option, KnnEmbed's anchor share."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from ragkit.retrievers import fde as F
from ragkit.retrievers.fde import FDEConfig, fde_document_chunks, fde_documents


def _unit_sets(rng: np.random.Generator, lens, d: int) -> tuple[np.ndarray, np.ndarray]:
    off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    x = rng.standard_normal((int(off[-1]), d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), off


# ------------------------------------------------------------------------------ FDE memory
def test_document_fdes_at_k_sim_10_stay_near_the_chunk_budget(monkeypatch):
    """Document encoding's peak stays under 1.5x ``CHUNK_BYTES`` plus the chunk of FDE rows it yields, as
    CHUNK_BYTES's docstring says.  At ``k_sim`` 10 empty-bucket filling held an int32 Hamming table, an int64
    code table and int64 temporaries, 20-28 bytes per (token, bucket), where the chunk size charged 4: 205 MiB
    at the 32 MiB budget (600 documents of 40-80 128-d tokens); now uint16 XORs and codes, the 4 charged."""
    budget = 16 * 2**20
    monkeypatch.setattr(F, "CHUNK_BYTES", budget)
    rng = np.random.default_rng(0)
    x, off = _unit_sets(rng, rng.integers(40, 80, 130), 128)
    cfg = FDEConfig(k_sim=10, d_proj=4, r_reps=2)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        largest = 0
        for _, _, rows in fde_document_chunks(x, off, cfg):
            largest = max(largest, rows.nbytes)
            del rows
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak <= 1.5 * budget + largest, (peak / 2**20, largest / 2**20)


def _reference_fill(x: np.ndarray, off: np.ndarray, cfg: FDEConfig) -> list[tuple[int, int, int, int]]:
    """Per set and repetition, each empty bucket's Hamming-nearest token (first minimum = lowest index), as
    ``(set, repetition, bucket, token row)``: the spec's rule, one set at a time."""
    g, _ = F.draw_matrices(cfg, x.shape[1])
    k, B = cfg.k_sim, cfg.buckets
    bits_all = (x @ g) > 0
    patterns = ((np.arange(B)[:, None] >> np.arange(k - 1, -1, -1)) & 1).astype(bool)
    found = []
    for j in range(len(off) - 1):
        a, b = int(off[j]), int(off[j + 1])
        if a == b:
            continue
        for r in range(cfg.r_reps):
            bits = bits_all[a:b, r * k:(r + 1) * k]
            ham = (bits[:, None, :] != patterns[None]).sum(axis=2)          # (tokens, B)
            occupied = (ham == 0).any(axis=0)
            nearest = np.argmin(ham, axis=0)
            found += [(j, r, int(e), a + int(nearest[e])) for e in np.flatnonzero(~occupied)]
    return found


@pytest.mark.parametrize("lens,k_sim", [([5000, 3, 0, 40], 10), ([2, 700, 1, 0, 90], 6), ([4100, 17], 3)])
def test_empty_buckets_take_the_nearest_token_whatever_the_code_width(lens, k_sim):
    """Empty-bucket filling copies the Hamming-nearest token's projection, ties to the lowest token index,
    with a 16-bit code (short sets) and a 32-bit one (a 5,000-token set at ``k_sim`` 10), ties plentiful."""
    rng = np.random.default_rng(3)
    x, off = _unit_sets(rng, lens, 8)
    cfg = FDEConfig(k_sim=k_sim, r_reps=2, projection="identity")
    got = fde_documents(x, off, cfg)
    B, d = cfg.buckets, x.shape[1]
    want = _reference_fill(x, off, cfg)
    assert want
    for j, r, e, tok in want:
        col = (r * B + e) * d
        np.testing.assert_array_equal(got[j, col:col + d], x[tok])


# ------------------------------------------------------------------------------ FDE draws
@pytest.mark.parametrize("d_final", [None, 40])
def test_a_second_encoding_with_the_same_config_draws_nothing(monkeypatch, d_final):
    """The SimHash / projection matrices (and the final sketch) are drawn once per config and token width:
    Muvera.query_fde drew them again on every search (5.5 ms, 40-50% of a one-query FDE at the paper's
    parameters).  The kept draws are read-only and encode as fresh ones did."""
    calls = []
    real = np.random.default_rng
    monkeypatch.setattr(np.random, "default_rng", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    rng = real(0)
    x, off = _unit_sets(rng, [3, 0, 7], 16)
    cfg = FDEConfig(k_sim=3, d_proj=4, r_reps=3, d_final=d_final, seed=918_273 + (d_final or 0))  # seen nowhere else
    first = F.fde_queries(x, off, cfg)
    assert len(calls) == cfg.r_reps + (d_final is not None)
    calls.clear()
    again = F.fde_queries(x, off, cfg)
    docs = F.fde_documents(x, off, cfg)
    assert calls == []
    np.testing.assert_array_equal(first, again)
    g, s = F.draw_matrices(cfg, 16)
    assert not g.flags.writeable and s is not None and not s.flags.writeable
    calls.clear()
    F._draw_matrices.cache_clear()
    F._final_sketch.cache_clear()
    np.testing.assert_array_equal(F.fde_documents(x, off, cfg), docs)  # fresh draws, same FDEs
    assert len(calls) == cfg.r_reps + (d_final is not None)


# ------------------------------------------------------------------------------ Muvera load
def _counting_crc(monkeypatch) -> list:
    from ragkit.retrievers import _index_files

    calls: list = []
    real = _index_files._crc
    monkeypatch.setattr(_index_files, "_crc", lambda path: calls.append(path) or real(path))
    return calls


def test_a_verified_load_of_muvera_reads_the_fde_index_once(tmp_path, monkeypatch):
    """Operator.load verifies the folder's SHA-256 sums (reading every file), then VectorIndex.load read every
    FDE file again for its CRC32s: now only ``Operator.load(verify=False)`` takes them (and every load checks
    the files' sizes); the loaded operator searches as the saved one."""
    from ragkit.operator import Operator
    from ragkit.retrievers import Muvera
    from ragkit.types import Corpus

    corpus = Corpus.from_texts(["the cat sat on the mat", "dogs bark loudly", "quantum physics of cats", "birds"])
    op = Muvera(k=3, candidates=4, k_sim=2, d_proj=8, r_reps=2).fit(corpus)
    want = [(r.rows.tolist(), r.scores.tolist()) for r in op.search(["cat on a mat", "dog"]).rankings]
    op.save(tmp_path / "m")
    calls = _counting_crc(monkeypatch)
    loaded = Operator.load(tmp_path / "m")
    assert calls == []
    assert [(r.rows.tolist(), r.scores.tolist()) for r in loaded.search(["cat on a mat", "dog"]).rankings] == want
    Operator.load(tmp_path / "m", verify=False)
    assert any(str(p).endswith(".npy") and "fde" in str(p) for p in calls)  # unverified: the CRC32s still


# ------------------------------------------------------------------------------ Muvera prune option
def test_a_prune_option_without_a_codebook_is_refused_by_one_check_with_one_message():
    """A run-time ``prune`` on a muvera fitted without one (no token codebook) is refused by ``search`` (a
    ParamError naming the option) and by a direct call (a DataError naming the operator), both before any
    work and in the same words; a direct call refused it only where pruning cut the candidates (prune 6 of
    20), in other words, and ran a prune of all 20 candidates that search refuses."""
    from ragkit.errors import DataError, ParamError
    from ragkit.retrievers import Muvera
    from ragkit.types import Corpus, State

    corpus = Corpus.from_texts([f"text {i} word{i % 7} term{i % 5}" for i in range(30)])
    op = Muvera(k=5, candidates=20, k_sim=2, d_proj=8, r_reps=2).fit(corpus)
    searched = []
    real = op.index_.search
    op.index_.search = lambda *a, **kw: searched.append(1) or real(*a, **kw)  # type: ignore[method-assign]
    for prune in (6, 20):
        with pytest.raises(ParamError) as by_search:
            op.search(["word1 term2"], muvera={"prune": prune})
        with pytest.raises(DataError) as by_call:
            op(State.of(["word1 term2"], options={"muvera": {"prune": prune}}))
        want = (f"pruning to {prune} candidates needs a token codebook, built by fit only when the prune parameter "
                "is set (it is None for this muvera); refit with prune set")
        assert str(by_search.value).startswith(f"search option muvera.prune: {want}")
        assert str(by_call.value) == f"muvera: options prune: {want}"
    assert not searched


# ------------------------------------------------------------------------------ KnnEmbed anchor share
@pytest.mark.parametrize("k,share,want", [(90, 0.35, 32), (10, 0.3, 3), (20, 0.25, 5), (30, 0.35, 11)])
def test_the_anchor_takes_its_share_of_k_rounded_half_up(k, share, want):
    """``anchor_share * k`` dense slots, rounded half up as the parameter says: 0.35 * 90 = 31.5 is
    31.499999999999996 in floats, which gave the anchor 31 slots, not 32 (at 0.35: k = 90, 170, 330, ...); the
    example settings (k 10, share 0.3: 3 slots) and shares such as 0.3 are unchanged (no such k to 2,000)."""
    from ragkit.retrievers.knn_embed import KnnEmbed
    from ragkit.types import Corpus, State

    rng = np.random.default_rng(0)
    d = 16
    centres = np.eye(d)[:3]
    labels = np.repeat(np.arange(3), 120)
    v = centres[labels] + 0.1 * rng.standard_normal((len(labels), d))
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    op = KnnEmbed(k=k, n_clusters=3, n_init=1, anchor_share=share, collapse_at=1.0).fit_vectors(
        Corpus.from_texts([f"d{i}" for i in range(len(labels))]), v)
    q = (centres[0] + centres[1])[None] / np.sqrt(2)
    assert not op.mixture(q.astype(np.float32))["collapsed"][0]  # two components: the mixture search runs
    r = op(State(["q"], vectors={op.dense.encoder.key: q.astype(np.float32)})).rankings[0]
    assert len(r) == k
    assert int((r.fields["component"] == -1).sum()) == want


# ------------------------------------------------------------------------------ Muvera candidates past the corpus
def test_candidates_past_the_corpus_search_the_whole_corpus():
    """Muvera passes its candidate count to VectorIndex.search unclamped: the index answers at most its slots
    (one per document) since 59ae7ab, so a million candidates over 30 documents rerank all 30, as before."""
    from ragkit.retrievers import Muvera
    from ragkit.types import Corpus

    corpus = Corpus.from_texts([f"text {i} word{i % 7} term{i % 5}" for i in range(30)] + ["", " "])
    op = Muvera(k=5, candidates=20, k_sim=2, d_proj=8, r_reps=2).fit(corpus)
    queries = ["word1 term2", "word3", "nothing here"]
    every = [(r.rows.tolist(), r.scores.tolist()) for r in op.search(queries, muvera={"candidates": 32}).rankings]
    many = [(r.rows.tolist(), r.scores.tolist()) for r in op.search(queries, muvera={"candidates": 10**6}).rankings]
    assert many == every


def test_configs_differing_only_in_what_the_draws_do_not_read_share_them(monkeypatch):
    """The random draws are kept per the fields they read: SimHash / projection matrices per (seed, k_sim, r_reps,
    d_proj, projection, d), the final sketch per (seed, d_final, its input width).  Keyed by the whole FDEConfig,
    configs differing only in mean_weight (or fill_empty, d_final) drew them again and kept a copy each.  The
    shared draws encode as fresh ones do."""
    from dataclasses import replace

    calls = []
    real = np.random.default_rng
    monkeypatch.setattr(np.random, "default_rng", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    x, off = _unit_sets(real(1), [4, 6, 0, 5], 16)
    base = FDEConfig(k_sim=3, d_proj=4, r_reps=3, d_final=40, seed=527_113)  # seen nowhere else
    first = F.fde_documents(x, off, base)
    assert len(calls) == base.r_reps + 1
    calls.clear()
    others = [replace(base, mean_weight=0.5), replace(base, fill_empty=False, mean_weight=2.0),
              replace(base, d_final=None), replace(base, d_final=24)]
    got = [F.fde_documents(x, off, c) for c in others]
    assert calls == [([base.seed, F._FINAL_STREAM],)]  # the new d_final's sketch alone
    np.testing.assert_array_equal(got[0][:, :40], first)  # the mean channel after the same blocks
    calls.clear()
    identity = FDEConfig(k_sim=3, r_reps=3, projection="identity", seed=base.seed)
    F.fde_queries(x, off, identity)
    assert len(calls) == identity.r_reps
    calls.clear()
    F.fde_queries(x, off, replace(identity, projection="ams", d_proj=16))  # d_proj == d: the identity too
    assert calls == []
    F._draw_matrices.cache_clear()
    F._final_sketch.cache_clear()
    for c, want in zip(others, got):
        np.testing.assert_array_equal(F.fde_documents(x, off, c), want)  # fresh draws, same FDEs
