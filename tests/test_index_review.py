"""VectorIndex review fixes: b1 graph shortlist, filtered graph search, the live-slot counter, int8
calibration memory, float16 range, and compact()."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from ragkit.errors import DataError
from ragkit.retrievers._index import VectorIndex


def _brute(q: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` rows of each query by cosine, ``(n_q, k)``."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    return np.argsort(-(qn @ xn.T), axis=1, kind="stable")[:, :k]


def _recall(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max(int((b >= 0).sum()), 1)
                          for a, b in zip(got, ref)]))


def _anisotropic(n: int, nq: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Documents whose dimensions differ in scale, and queries near some of them: the signs of a query
    lose most of what ranks them (Hamming is poor), the float query against the bits much less."""
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.uniform(-1, 0.5, d)).astype(np.float32)
    x = (rng.standard_normal((n, d)) * scales).astype(np.float32)
    q = (x[rng.integers(0, n, nq)] + 0.7 * rng.standard_normal((nq, d)) * scales).astype(np.float32)
    return x, q


@pytest.mark.parametrize("rescore", [True, False])
def test_b1_graph_shortlist_ranks_like_exact(rescore):
    """A b1 graph re-ranks a wide Hamming set by the float query against the bits before cutting to
    oversample * k (the Hamming top-40 went straight to the float rescore: recall 0.86 vs 0.96 exact)."""
    x, q = _anisotropic(3000, 100, 64, 0)
    ref = _brute(q, x, 10)
    rec = {}
    for search in ("exact", "hnsw"):
        ix = VectorIndex(dtype="b1", search=search, rescore=rescore, oversample=4, threads=1).build(x)
        rec[search] = _recall(ix.search(q, 10)[0], ref)
    # 3,000 SciFact MiniLM docs: 0.951 (exact 0.960) with rescore, was 0.862; these synthetic vectors are
    # harder for Hamming: 0.486 / 0.572 (was 0.294) with rescore, 0.319 / 0.335 (was 0.264) without
    assert rec["hnsw"] >= (0.8 if rescore else 0.9) * rec["exact"], rec


def test_filtered_graph_search_fetches_few_codes(monkeypatch):
    """A broad filter on a graph goes through the graph (oversampled), not through usearch ``get`` of every
    passing row (20,000 Python objects a call); a selective one is answered exactly; recall holds."""
    rng = np.random.default_rng(1)
    n, d = 20_000, 32
    cent = rng.standard_normal((100, d)).astype(np.float32) * 2
    x = (cent[rng.integers(0, 100, n)] + rng.standard_normal((n, d))).astype(np.float32)
    q = (cent[rng.integers(0, 100, 30)] + rng.standard_normal((30, d))).astype(np.float32)
    graph = VectorIndex(search="hnsw", exact_max=n, threads=1).build(x)
    exact = VectorIndex(search="exact").build(x)
    fetched = []
    real_get = VectorIndex._get
    monkeypatch.setattr(VectorIndex, "_get", lambda self, slots: fetched.append(len(slots)) or real_get(self, slots))
    for frac in (0.5, 0.1, 0.01, 0.001):
        mask = rng.random(n) < frac
        fetched.clear()
        got, scores = graph.search(q, 10, mask=mask)
        ref, ref_scores = exact.search(q, 10, mask=mask)
        assert (got >= 0).all() and mask[got].all(), frac
        assert _recall(got, ref) >= 0.97, frac
        if mask.sum() <= 1000:  # selective: exact on the passing rows, as an exact index answers
            np.testing.assert_array_equal(got, ref)
            np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
        assert sum(fetched) <= 4096, (frac, sum(fetched))


def test_n_alive_is_a_counter(tmp_path):
    """``n_alive`` is kept by build / add / remove / load / compact, not re-summed per call."""
    rng = np.random.default_rng(2)
    ix = VectorIndex(search="exact").build(rng.standard_normal((50, 8)).astype(np.float32))
    assert ix._n_alive == ix.n_alive == 50
    ix.add(rng.standard_normal((7, 8)).astype(np.float32))
    ix.remove(np.array([0, 3, 55]))
    assert ix.n_alive == int(ix.alive.sum()) == 54 and ix._n_alive == 54
    ix.save(tmp_path / "a")
    back = VectorIndex.load(tmp_path / "a")
    assert back.n_alive == 54 and back._n_alive == 54
    back.compact()
    assert back.n_alive == back.n_slots == 54


def test_i8_exact_build_makes_no_abs_copy():
    """An exact i8 build does not take the 99.9th percentile of |x| over all of x (a float32 temporary the
    size of x; only the graph uses that scale), and a graph takes it from a sample of a large x."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200_000, 128)).astype(np.float32)  # 102 MB
    ix = VectorIndex(dtype="i8", metric="ip", search="exact")
    tracemalloc.start()
    ix.build(x, copy=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # codes (26 MB) + the coding's temporaries of one block of rows (~22 MB); the old build also made |x| (102 MB)
    assert peak < 0.6 * x.nbytes, peak
    big = rng.standard_normal((40_000, 128)).astype(np.float32)
    full = np.float32(127.0 / np.percentile(np.abs(big), 99.99))
    g = VectorIndex(dtype="i8", metric="cos", search="hnsw")
    g.backend = "hnsw"
    assert abs(g._i8_graph_scale(big) / full - 1) < 0.01


@pytest.mark.parametrize("search", ["exact", "hnsw"])
def test_f16_refuses_values_beyond_its_range(search):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((40, 8)).astype(np.float32)
    big = x.copy()
    big[5, 2] = 1e5
    with pytest.raises(DataError, match=r"65504.*100000.*f32"):
        VectorIndex(dtype="f16", metric="ip", search=search).build(big)
    ix = VectorIndex(dtype="f16", metric="ip", search=search).build(x)
    with pytest.raises(DataError, match="f16"):
        ix.add(big[:6])
    assert ix.n_slots == 40
    VectorIndex(dtype="f16", metric="cos", search=search).build(big)  # normalised: in range


@pytest.mark.parametrize("dtype,rescore", [("f32", False), ("f16", True), ("i8", False), ("i8", True),
                                           ("b1", False), ("b1", True)])
@pytest.mark.parametrize("search", ["exact", "hnsw"])
def test_compact_keeps_results(dtype, rescore, search, tmp_path):
    """compact() drops dead rows and renumbers slots: the same rankings (mapped) and scores as before."""
    rng = np.random.default_rng(5)
    d = 24
    ix = VectorIndex(dtype=dtype, search=search, rescore=rescore, expansion_search=512, threads=1,
                     workdir=tmp_path / "w").build(rng.standard_normal((200, d)).astype(np.float32))
    for _ in range(3):
        ix.add(rng.standard_normal((40, d)).astype(np.float32))
        live = np.flatnonzero(ix.alive)
        ix.remove(rng.choice(live, 30, replace=False))
    q = rng.standard_normal((15, d)).astype(np.float32)
    mask = rng.random(ix.n_slots) < 0.5
    before, before_s = ix.search(q, 10)
    fbefore, fbefore_s = ix.search(q, 10, mask=mask)
    n_slots, n_alive, alive = ix.n_slots, ix.n_alive, ix.alive.copy()
    remap = ix.compact()
    assert remap.shape == (n_slots,) and (remap[~alive] == -1).all()
    np.testing.assert_array_equal(remap[alive], np.arange(n_alive))
    assert ix.n_slots == ix.n_alive == n_alive
    if ix.floats is not None:
        assert len(ix.floats) == n_alive
    if ix.codes is not None:
        assert len(ix.codes) == n_alive
    if ix.usearch is not None:
        assert ix.usearch.size == n_alive
    after, after_s = ix.search(q, 10)
    np.testing.assert_array_equal(after, remap[before])
    np.testing.assert_allclose(after_s, before_s, rtol=1e-5, atol=1e-6)
    fafter, fafter_s = ix.search(q, 10, mask=mask[alive])
    np.testing.assert_array_equal(fafter, remap[fbefore])
    np.testing.assert_allclose(fafter_s, fbefore_s, rtol=1e-5, atol=1e-6)
    ix.save(tmp_path / "s")
    back = VectorIndex.load(tmp_path / "s", mmap=True)
    np.testing.assert_array_equal(back.search(q, 10)[0], after)
    new = back.add(rng.standard_normal((3, d)).astype(np.float32))
    np.testing.assert_array_equal(new, np.arange(n_alive, n_alive + 3))
    assert back.compact().tolist() == list(range(n_alive + 3))  # nothing dead: the identity
