"""The embedding cache stays bounded in files and descriptors (ragkit/encoders/cache.py).

``EmbeddingCache.put`` wrote one new shard per call and every shard was memory-mapped (a descriptor and a
mapping each, for the life of the reader): a service adding one document or caching one query per call grew
by 2 files and 1 descriptor per call, for good (100 x one-document add + search: 203 files, 107 descriptors; a
fresh process on that folder opened them all), until ``ulimit -n``.  Now small shards are read into memory and
merged once there are more than ``MAX_SMALL_SHARDS`` of them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ragkit.encoders import cache as cache_mod
from ragkit.encoders.cache import MAX_SMALL_SHARDS, SMALL_SHARD_BYTES, EmbeddingCache

KEY = "test-model@shards"


def _digests(n: int, seed: int = 0) -> np.ndarray:
    return np.frombuffer(np.random.default_rng(seed).bytes(16 * n), dtype="V16").copy()


def _vectors(n: int, dim: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _shards(cache: EmbeddingCache) -> list[Path]:
    return sorted(cache.folder.glob("*.keys.npy"))


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def _cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))


def _put_one_by_one(cache: EmbeddingCache, digests: np.ndarray, vectors: np.ndarray) -> None:
    for i in range(len(digests)):  # (the pattern under test: one encode call per text)
        cache.put(digests[i:i + 1], vectors[i:i + 1])


def _assert_all_found(cache: EmbeddingCache, digests: np.ndarray, vectors: np.ndarray) -> None:
    got, hit = cache.get(digests)
    assert hit.all(), f"{int((~hit).sum())} of {len(hit)} cached vectors not found"
    assert got is not None
    np.testing.assert_array_equal(got, vectors)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc/self/fd")
def test_two_hundred_single_puts_keep_files_and_descriptors_bounded(tmp_path):
    """Old code: 200 shards (400 files) and 200 more descriptors."""
    n, dim = 200, 16
    digests, vectors = _digests(n), _vectors(n, dim)
    cache = EmbeddingCache(tmp_path, KEY)
    cache.put(digests[:1], vectors[:1])
    cache.get(digests[:1])  # (the index loaded, the folder swept: the descriptors counted from here)
    before = _fds()
    _put_one_by_one(cache, digests[1:], vectors[1:])
    _assert_all_found(cache, digests, vectors)
    assert len(_shards(cache)) <= MAX_SMALL_SHARDS + 1
    assert _fds() - before <= 4

    fresh_before = _fds()
    fresh = EmbeddingCache(tmp_path, KEY)
    _assert_all_found(fresh, digests, vectors)
    assert _fds() - fresh_before <= 4


def test_a_reader_loaded_before_a_compaction_still_reads_right(tmp_path):
    """A second cache whose index listed the small shards a compaction then removed: its lookups use what it
    read (in memory), and a new reader finds everything in the merged shard."""
    n, dim = MAX_SMALL_SHARDS + 6, 8
    digests, vectors = _digests(n, 3), _vectors(n, dim, 4)
    writer = EmbeddingCache(tmp_path, KEY)
    _put_one_by_one(writer, digests[:MAX_SMALL_SHARDS], vectors[:MAX_SMALL_SHARDS])
    reader = EmbeddingCache(tmp_path, KEY)
    _assert_all_found(reader, digests[:MAX_SMALL_SHARDS], vectors[:MAX_SMALL_SHARDS])
    old_names = {p.name for p in _shards(writer)}
    _put_one_by_one(writer, digests[MAX_SMALL_SHARDS:], vectors[MAX_SMALL_SHARDS:])
    assert not old_names & {p.name for p in _shards(writer)}, "the small shards were not merged"
    assert len(_shards(writer)) <= MAX_SMALL_SHARDS + 1
    _assert_all_found(reader, digests[:MAX_SMALL_SHARDS], vectors[:MAX_SMALL_SHARDS])
    _assert_all_found(writer, digests, vectors)
    _assert_all_found(EmbeddingCache(tmp_path, KEY), digests, vectors)


def test_a_shard_removed_after_listing_is_skipped(tmp_path):
    """A reader that lists a shard whose files a compaction removes before it reads them skips it (the
    ``FileNotFoundError`` is one of UNREADABLE): its texts are computed again, nothing fails."""
    cache = EmbeddingCache(tmp_path, KEY)
    d, v = _digests(3, 5), _vectors(3, 8, 6)
    _put_one_by_one(cache, d, v)
    gone = _shards(cache)[0]
    (gone.parent / gone.name.replace(".keys.npy", ".npy")).unlink()  # (keys listed, vectors gone)
    got, hit = EmbeddingCache(tmp_path, KEY).get(d)
    assert hit.sum() == 2 and got is not None
    np.testing.assert_array_equal(got[hit], v[hit])


def test_a_damaged_small_shard_is_skipped_and_left_alone(tmp_path):
    """A damaged shard among many small ones: compaction merges the others, readers skip it."""
    cache = EmbeddingCache(tmp_path, KEY)
    bad_d = _digests(2, 7)
    cache.put(bad_d, _vectors(2, 8, 8))
    bad = _shards(cache)[0]
    vec_file = bad.parent / bad.name.replace(".keys.npy", ".npy")
    vec_file.write_bytes(vec_file.read_bytes()[:100])  # truncated
    n = MAX_SMALL_SHARDS + 5
    digests, vectors = _digests(n, 9), _vectors(n, 8, 10)
    _put_one_by_one(cache, digests, vectors)
    assert len(_shards(cache)) <= MAX_SMALL_SHARDS + 1
    assert bad.exists() and vec_file.exists()
    for reader in (cache, EmbeddingCache(tmp_path, KEY)):
        _assert_all_found(reader, digests, vectors)
        assert not reader.get(bad_d)[1].any()


def test_shards_of_another_width_are_not_merged(tmp_path):
    """Vectors of two widths in one folder (never written so by ragkit): the most common width is merged, the
    others stay as they are; nothing fails."""
    cache = EmbeddingCache(tmp_path, KEY)
    odd_d, odd_v = _digests(3, 11), _vectors(3, 5, 12)
    _put_one_by_one(cache, odd_d, odd_v)
    odd_files = {p.name for p in _shards(cache)}
    n = MAX_SMALL_SHARDS + 3
    digests, vectors = _digests(n, 13), _vectors(n, 8, 14)
    _put_one_by_one(cache, digests, vectors)
    names = {p.name for p in _shards(cache)}
    assert odd_files <= names and len(names) <= MAX_SMALL_SHARDS + 1
    merged = [np.load(p.parent / p.name.replace(".keys.npy", ".npy")) for p in _shards(cache)
              if p.name not in odd_files]
    assert all(m.dtype == np.float32 and m.shape[1] == 8 for m in merged)
    _assert_all_found(EmbeddingCache(tmp_path, KEY), digests, vectors)


def test_a_text_in_several_shards_keeps_one_row(tmp_path):
    """The same digest written again (the same text, the same model): one row of it in the merged shard."""
    cache = EmbeddingCache(tmp_path, KEY)
    n = MAX_SMALL_SHARDS + 1
    digests, vectors = _digests(n, 15), _vectors(n, 8, 16)
    cache.put(digests[:1], vectors[:1])
    _put_one_by_one(cache, digests, vectors)
    keys = np.concatenate([np.load(p) for p in _shards(cache)])
    assert len(keys) == n and len(np.unique(keys.view("S16"))) == n
    _assert_all_found(EmbeddingCache(tmp_path, KEY), digests, vectors)


@pytest.mark.skipif(cache_mod._files.FCNTL is None, reason="flock")
def test_no_compaction_while_another_holds_the_folder_lock(tmp_path):
    """Another process compacting (the folder's flock held): this writer does not wait nor compact."""
    cache = EmbeddingCache(tmp_path, KEY)
    n = MAX_SMALL_SHARDS + 2
    digests, vectors = _digests(n, 17), _vectors(n, 8, 18)
    cache.put(digests[:1], vectors[:1])
    with cache_mod._compaction_lock(cache.folder) as held:
        assert held
        _put_one_by_one(cache, digests[1:-1], vectors[1:-1])
        assert len(_shards(cache)) == n - 1
    cache.put(digests[-1:], vectors[-1:])
    assert len(_shards(cache)) == 1
    _assert_all_found(cache, digests, vectors)


def test_small_shards_are_read_large_ones_mapped(tmp_path):
    """Old code: every shard was memory-mapped."""
    cache = EmbeddingCache(tmp_path, KEY)
    big_rows = SMALL_SHARD_BYTES // (4 * 64) + 1
    cache.put(_digests(big_rows, 19), _vectors(big_rows, 64, 20))
    cache.put(_digests(2, 21), _vectors(2, 64, 22))
    shards = EmbeddingCache(tmp_path, KEY).locate(_digests(1, 23))[1]
    assert sorted(isinstance(s, np.memmap) for s in shards) == [False, True]


def test_a_folder_of_many_large_shards_is_not_scanned_again_at_every_put(tmp_path, monkeypatch):
    """More than MAX_SMALL_SHARDS shards of which few are small: each put listed the shards' sizes (two stats
    per shard) and found nothing to merge; a shard found large is remembered (a shard never shrinks)."""
    monkeypatch.setattr(cache_mod, "SMALL_SHARD_BYTES", 300)
    monkeypatch.setattr(cache_mod, "MAX_SMALL_SHARDS", 4)
    cache = EmbeddingCache(tmp_path, "m")
    for i in range(6):  # large shards (over 300 bytes)
        cache.put(_digests(8, seed=10 + i), _vectors(8, 16, seed=i))
    scans = []
    real = EmbeddingCache._small_shards
    monkeypatch.setattr(EmbeddingCache, "_small_shards", lambda self: scans.append(1) or real(self))
    for i in range(3):  # small ones, fewer than MAX_SMALL_SHARDS: nothing to merge, no scan
        cache.put(_digests(1, seed=100 + i), _vectors(1, 16, seed=100 + i))
    assert len(scans) <= 1, scans
