"""Memory bounds of whole-corpus helpers, read with tracemalloc (allocations, not time): checking that
rows are unit vectors needs no copy of the rows."""

from __future__ import annotations

import tracemalloc

import numpy as np

from ragkit.encoders import unit_rows


def _peak(f, *args):
    tracemalloc.start()
    try:
        out = f(*args)
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_unit_rows_checks_without_a_copy_of_the_rows():
    x = np.random.default_rng(0).standard_normal((20_000, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out, peak = _peak(unit_rows, x)
    assert out is x
    assert peak < x.nbytes / 8, f"{peak / 2**20:.1f} MiB for a {x.nbytes / 2**20:.1f} MiB array"


def test_unit_rows_normalises_as_before():
    x = np.random.default_rng(1).standard_normal((500, 64)).astype(np.float32) * 3
    x[7] = 0
    want = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    got = unit_rows(x)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want.astype(np.float32))
    near = np.delete(want, 7, axis=0) * np.float32(1 + 5e-4)  # norms off by more than 1e-4
    assert unit_rows(near) is not near
