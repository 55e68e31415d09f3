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


def _old_hash_strings(h, column):
    """hash_strings as it was before its pieces (each 65,536-string chunk joined whole)."""
    for a in range(0, len(column), 65536):
        part = list(column[a:a + 65536])
        h.update(np.fromiter(map(len, part), dtype=np.int64, count=len(part)).tobytes())
        h.update("".join(part).encode("utf-8", "surrogatepass"))


def test_hash_strings_feeds_the_same_bytes_in_pieces(monkeypatch):
    import hashlib

    from ragkit import _fingerprints

    rng = np.random.default_rng(0)
    alphabet = ["a", "é", "\u4e2d", "\U0001f600", "\ud800", "\udc00", " "]
    texts = ["".join(rng.choice(alphabet, size=int(n))) for n in rng.integers(0, 40, size=70_000)]
    texts[5] = "x" * 300  # longer than a piece: a piece of its own
    for piece in (7, 64, 1 << 22):
        monkeypatch.setattr(_fingerprints, "_HASH_PIECE", piece)
        for column in (texts, texts[:3], [], np.array(texts[:100], dtype=object)):
            new, old = hashlib.blake2b(digest_size=16), hashlib.blake2b(digest_size=16)
            _fingerprints.hash_strings(new, column)
            _old_hash_strings(old, column)
            assert new.hexdigest() == old.hexdigest(), (piece, len(column))


def test_hash_strings_holds_a_piece_not_the_chunk(monkeypatch):
    import hashlib

    from ragkit import _fingerprints

    monkeypatch.setattr(_fingerprints, "_HASH_PIECE", 1 << 20)  # (the default's 4 Mi, scaled to the test's texts)
    texts = [("document %d " % i) * 500 for i in range(2_000)]  # ~6,000 characters each: 12M in all
    chars = sum(map(len, texts))
    _, peak = _peak(_fingerprints.hash_strings, hashlib.blake2b(digest_size=16), texts)
    assert peak < chars / 4, f"{peak / 2**20:.1f} MiB to hash {chars / 2**20:.1f} M characters"
