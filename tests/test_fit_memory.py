"""Peak memory of building and growing a ``VectorIndex`` (tracemalloc, compared with the sizes of the arrays
involved): compressed exact indexes are coded a block at a time, with headroom for the first ``add``; HNSW
int8 codes are rounded and clipped in place.  Each new path gives the codes the old one gave."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import traced_peak

from ragkit.retrievers._index import VectorIndex
from ragkit.retrievers._quantize import _i8_symmetric


@pytest.fixture(scope="module")
def vecs():
    """100,000 x 64 float32 (25.6 MB, 1.5x unit length: normalising has work to do): several build blocks."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((100_000, 64), dtype=np.float32) * np.float32(1.5)


@pytest.mark.parametrize("dtype", ["f16", "i8", "b1"])
def test_compressed_exact_build_makes_no_float_copy_of_the_vectors(vecs, dtype):
    """build(copy=True) normalised every vector into a new float32 matrix before coding it, then dropped it
    (+761 MB for b1 codes of 500,000 x 384): now a block at a time, as build_chunks does."""
    ix, peak = traced_peak(lambda: VectorIndex(dtype=dtype, search="exact").build(vecs))
    codes = ix.codes.nbytes
    # the codes (with a quarter of spare rows for add) and a block's float temporaries; was vecs.nbytes + codes
    assert peak < 1.25 * codes + 0.5 * vecs.nbytes, (peak, codes, vecs.nbytes)


@pytest.mark.parametrize("metric", ["cos", "ip"])
@pytest.mark.parametrize("dtype", ["f32", "f16", "i8", "b1"])
@pytest.mark.parametrize("source", ["float32", "float64"])
def test_blockwise_build_gives_the_codes_of_the_whole_matrix_build(vecs, dtype, metric, source):
    """The handed-over path (copy=False, a writable float32 array) still normalises and codes the whole
    matrix at once: the block path's codes, calibration and search results are the same, bit for bit."""
    x = vecs[:40_000].astype(source)
    whole = VectorIndex(dtype=dtype, metric=metric, search="exact").build(x.astype(np.float32), copy=False)
    blocks = VectorIndex(dtype=dtype, metric=metric, search="exact").build(x)
    assert blocks.codes.dtype == whole.codes.dtype
    np.testing.assert_array_equal(blocks.codes, whole.codes)
    if dtype == "i8":
        np.testing.assert_array_equal(blocks.i8_min, whole.i8_min)
        np.testing.assert_array_equal(blocks.i8_step, whole.i8_step)
        assert blocks.i8_scale == whole.i8_scale and blocks.i8_fitted_n == whole.i8_fitted_n
    q = np.random.default_rng(3).standard_normal((7, x.shape[1]), dtype=np.float32)
    for a, b in zip(blocks.search(q, 10), whole.search(q, 10)):
        np.testing.assert_array_equal(a, b)
    added = np.random.default_rng(4).standard_normal((5, x.shape[1]), dtype=np.float32)
    np.testing.assert_array_equal(blocks.add(added), whole.add(added))
    np.testing.assert_array_equal(blocks.codes, whole.codes)


def test_the_block_build_keeps_the_callers_array_unchanged_and_unshared(vecs):
    before = vecs[:20_000].copy()
    mine = before.copy()
    for dtype in ("f32", "f16", "i8", "b1"):
        ix = VectorIndex(dtype=dtype, search="exact").build(mine)
        assert not np.shares_memory(ix.codes, mine)
        np.testing.assert_array_equal(mine, before)


@pytest.mark.parametrize("dtype", ["f32", "f16", "i8", "b1"])
def test_first_add_after_build_does_not_copy_the_codes(vecs, dtype):
    """The first add after a fit copied the whole codes into a buffer a quarter larger (+296 MB at 200,000 f32
    vectors of 384 dims): build now leaves the spare rows (never written, so no memory until then)."""
    ix = VectorIndex(dtype=dtype, search="exact").build(vecs)
    held = ix.codes
    slots, peak = traced_peak(lambda: ix.add(vecs[:10]))
    assert slots.tolist() == list(range(len(vecs), len(vecs) + 10))
    assert np.shares_memory(ix.codes, held)  # appended in place
    assert peak < 0.5 * held.nbytes  # (the alive flags regrow: 1 byte a row); a copy was 1.25x
    np.testing.assert_array_equal(ix.codes[-10:], ix.codes[:10])


def test_a_pickled_index_holds_its_codes_once(vecs):
    """The spare rows of the codes' buffer were pickled beside the codes (2.25x the codes after an add)."""
    ix = VectorIndex(dtype="f16", search="exact").build(vecs[:20_000])
    ix.add(vecs[:10])
    blob = pickle.dumps(ix)
    assert len(blob) < 1.1 * ix.codes.nbytes + (1 << 20)
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.codes, ix.codes)
    back.add(vecs[10:20])  # the copy regrows its own buffer
    np.testing.assert_array_equal(back.codes[-10:], ix.codes[10:20])


def test_int8_graph_codes_are_rounded_and_clipped_in_place(vecs):
    """np.clip(np.rint(x * scale)) made three float temporaries the size of x (+576 MB for an HNSW build's
    131,072-row chunk of 384 dims); now one, or none for a copy the caller hands over.  The same codes."""
    x = vecs[:50_000]
    scale = np.float32(60.0)  # clips some values (|x| * 60 > 127)
    want = np.clip(np.rint(x * scale), -127, 127).astype(np.int8)
    got, peak = traced_peak(lambda: _i8_symmetric(x, scale))
    np.testing.assert_array_equal(got, want)
    assert peak < 1.4 * x.nbytes  # x * scale and the int8 codes (was 2x and more)
    mine = x.copy()
    got, peak = traced_peak(lambda: _i8_symmetric(mine, scale, inplace=True))
    np.testing.assert_array_equal(got, want)
    assert peak < 0.4 * x.nbytes  # the int8 codes only
    per_query = np.linspace(10, 80, len(x), dtype=np.float32)[:, None]  # (the query path's per-row scale)
    np.testing.assert_array_equal(_i8_symmetric(x, per_query),
                                  np.clip(np.rint(x * per_query), -127, 127).astype(np.int8))


def test_int8_graph_holds_the_symmetric_codes_of_its_vectors():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3_000, 32), dtype=np.float32)
    ix = VectorIndex(dtype="i8", search="hnsw", threads=1).build(x)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    want = np.clip(np.rint(unit * ix.i8_scale), -127, 127).astype(np.int8)
    np.testing.assert_array_equal(ix._get(np.arange(len(x))), want)
