"""Memory and disk hygiene of the embedding cache (ragkit/encoders/cache.py).

- ``EmbeddingCache.get`` gathered a shard's hits in one fancy index: a temporary copy of them (the whole
  corpus, for a corpus read back) beside the result, 2x the result at peak.
- The digest index was a dict of 16-byte digests to ``(shard, row)`` tuples, ~171 bytes per cached text for
  the life of the process, and ``locate`` built a list of tuples per call.
- A writer killed midway left its temporary shard file (954 MB each seen) in the cache for good.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import subprocess
import sys
import time
import tracemalloc
import uuid

import numpy as np
import pytest
from conftest import traced_peak

from ragkit.encoders import cache as cache_mod
from ragkit.encoders.cache import EmbeddingCache, text_digests
from ragkit.encoders.tokens import TokenCache, TokenVectors


def _digests(n: int, seed: int = 0) -> np.ndarray:
    return np.frombuffer(np.random.default_rng(seed).bytes(16 * n), dtype="V16").copy()


def _write_old_format(root, key: str, shards: list[tuple[np.ndarray, np.ndarray]]):
    """A cache folder as the earlier code wrote it: ``MODEL``, ``<uuid>.npy`` float32 vectors and
    ``<uuid>.keys.npy`` V16 digests per shard."""
    folder = root / hashlib.sha1(key.encode()).hexdigest()[:16]
    folder.mkdir(parents=True)
    (folder / "MODEL").write_text(key, encoding="utf-8")
    for keys, vecs in shards:
        name = uuid.uuid4().hex
        np.save(folder / f"{name}.npy", vecs.astype(np.float32))
        np.save(folder / f"{name}.keys.npy", keys)
    return folder


# ------------------------------------------------------------------------------------------ get's peak
def test_reading_back_a_whole_corpus_holds_no_second_copy_of_it(tmp_path):
    """Old code: peak 2.0x the result (the gather's temporary, then the copy into the result)."""
    n, dim = 20_000, 256
    keys = _digests(n)
    vecs = np.random.default_rng(1).standard_normal((n, dim), dtype=np.float32)
    _write_old_format(tmp_path, "m", [(keys, vecs)])
    cache = EmbeddingCache(tmp_path, "m")
    cache.locate(keys[:1])  # (the index loaded outside the measurement)
    (got, hit), peak = traced_peak(lambda: cache.get(keys))
    assert hit.all()
    np.testing.assert_array_equal(got, vecs)
    assert peak < 1.25 * got.nbytes, (peak, got.nbytes)


def test_scattered_hits_are_gathered_in_blocks(tmp_path, monkeypatch):
    """Hits spread over the request (a shuffled corpus, misses between): gathered a block at a time."""
    monkeypatch.setattr(cache_mod, "GATHER_BYTES", 1 << 20, raising=False)
    n, dim = 20_000, 256
    keys = _digests(n)
    vecs = np.random.default_rng(2).standard_normal((n, dim), dtype=np.float32)
    _write_old_format(tmp_path, "m", [(keys[: n // 4], vecs[: n // 4]), (keys[n // 4:], vecs[n // 4:])])
    order = np.random.default_rng(3).permutation(n)
    ask = np.concatenate([keys[order], _digests(500, seed=9)])  # 500 absent
    cache = EmbeddingCache(tmp_path, "m")
    cache.locate(keys[:1])
    (got, hit), peak = traced_peak(lambda: cache.get(ask))
    assert hit[:n].all() and not hit[n:].any()
    np.testing.assert_array_equal(got[:n], vecs[order])
    assert not got[n:].any()
    assert peak < got.nbytes + (4 << 20), (peak, got.nbytes)  # old code: + the 15 MB of the larger shard's hits


# ------------------------------------------------------------------------------------------ the index
def test_the_digest_index_holds_about_24_bytes_per_text(tmp_path):
    """Old code: a dict of bytes -> tuple, ~171 bytes per cached text."""
    n = 200_000
    keys = _digests(n)
    _write_old_format(tmp_path, "m", [(keys[:50_000], np.zeros((50_000, 1))),
                                      (keys[50_000:], np.zeros((n - 50_000, 1)))])
    cache = EmbeddingCache(tmp_path, "m")
    tracemalloc.start()
    try:
        cache._load_index()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 40 * n, held / n
    where, shards = cache.locate(keys)
    assert (where[:, 0] >= 0).all() and len(shards) == 2


def _reference(parts):
    """The earlier index: a dict updated shard by shard (later shards, and later rows, win)."""
    index: dict[bytes, tuple[int, int]] = {}
    for s, keys in enumerate(parts):
        index.update(zip(keys.tolist(), ((s, r) for r in range(len(keys)))))
    return index


def test_lookups_match_the_earlier_dict_index_with_repeats_and_appends():
    rng = np.random.default_rng(5)
    pool = _digests(300, seed=6)
    parts = [pool[rng.integers(0, len(pool), size)] for size in (40, 0, 120, 7, 200, 1)]  # repeats within, across
    index = cache_mod.DigestIndex([(k, s) for s, k in enumerate(parts[:3])])
    for s, k in enumerate(parts[3:], start=3):
        index.add(k, s)
    ref = _reference(parts)
    ask = np.concatenate([pool, _digests(50, seed=7)])
    want = np.array([ref.get(d, (-1, -1)) for d in ask.tolist()], dtype=np.int64)
    np.testing.assert_array_equal(index.find(ask), want)
    assert len(index) == len(ref)
    assert index.find(pool[:0]).shape == (0, 2)
    assert (cache_mod.DigestIndex().find(pool[:3]) == -1).all()


def test_a_cache_written_earlier_reads_back_and_the_largest_shard_then_the_newest_wins(tmp_path):
    texts = [f"t{i}" for i in range(6)]
    d = text_digests(texts)
    small = np.full((3, 2), 1.0, np.float32)  # t0 t1 t2
    large = np.full((5, 2), 2.0, np.float32)  # t1 .. t5
    _write_old_format(tmp_path, "m", [(d[:3], small), (d[1:], large)])
    cache = EmbeddingCache(tmp_path, "m")
    got, n_new = cache.fetch_or_compute(texts, lambda ts: pytest.fail(f"encoded {ts}"))
    assert n_new == 0
    np.testing.assert_array_equal(got[:, 0], [1, 2, 2, 2, 2, 2])  # the larger shard serves t1, t2
    cache.put(d[2:3], np.full((1, 2), 3.0, np.float32))  # written by this reader: it serves t2 now
    got, _ = cache.get(d)
    np.testing.assert_array_equal(got[:, 0], [1, 2, 3, 2, 2, 2])
    assert cache.whole(d[1:]) is not None and cache.whole(d[:2]) is None
    fresh = EmbeddingCache(tmp_path, "m")  # another reader: 3 shards on disk, t2's newest is smallest
    np.testing.assert_array_equal(fresh.get(d)[0][:, 0], [1, 2, 2, 2, 2, 2])


def test_a_keys_file_that_holds_no_digests_is_ignored(tmp_path):
    d = text_digests(["a", "b"])
    folder = _write_old_format(tmp_path, "m", [(d, np.ones((2, 3)))])
    np.save(folder / "bad.keys.npy", np.arange(2, dtype=np.int64))
    np.save(folder / "bad.npy", np.ones((2, 3), np.float32))
    got, hit = EmbeddingCache(tmp_path, "m").get(d)
    assert hit.all() and (got == 1).all()


# ------------------------------------------------------------------------------------------ stale temporary files
_KILLED_WRITER = """
import os, sys
from pathlib import Path
import numpy as np
from ragkit.encoders.cache import write_shard

def fill(tmp):
    np.save(tmp, np.zeros((1000, 64), np.float32))
    os._exit(9)  # killed midway: the temporary file stays

write_shard(Path(sys.argv[1]), "m", [(".npy", fill)])
"""


def _ended_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_writers_temporary_file_is_removed_by_the_next_writer(tmp_path, caplog):
    """Old code: the killed writer's ``.<name>.<pid>-<hex>.tmp.npy`` stayed in the cache for good."""
    key = "m"
    folder = tmp_path / hashlib.sha1(key.encode()).hexdigest()[:16]
    run = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(folder)], capture_output=True, text=True)
    assert run.returncode == 9, run.stderr
    left = [p for p in folder.iterdir() if ".tmp" in p.name]
    assert len(left) == 1
    size = left[0].stat().st_size
    assert size > 256_000
    live = folder / f".{uuid.uuid4().hex}.{os.getpid()}@{socket.gethostname()}-0123abcd.tmp.npy"  # this process
    other = folder / f".{uuid.uuid4().hex}.keys.{_ended_pid()}@another-host-x-0123abcd.tmp.npy"  # a shared disk's
    for p in (live, other):
        p.write_bytes(b"x" * 10)
    with caplog.at_level(logging.INFO, logger="ragkit"):
        EmbeddingCache(tmp_path, key).put(text_digests(["a"]), np.ones((1, 4), np.float32))
    assert not left[0].exists() and live.exists() and other.exists()
    assert any("temporary file" in r.getMessage() and f"{size:,} bytes freed" in r.getMessage()
               for r in caplog.records), caplog.text


def test_untagged_temporary_files_of_earlier_versions_go_once_a_day_old(tmp_path):
    """Files named ``.<stem>.<pid>-<hex>.tmp.npy`` (no host: ragkit before this change) of a process that runs
    nowhere here are removed once nobody has written them for a day; newer ones and live processes' stay."""
    folder = tmp_path / "c"
    folder.mkdir()
    dead = _ended_pid()
    stem = uuid.uuid4().hex
    old_dead = folder / f".{stem}.{dead}-0123abcd.tmp.npy"
    new_dead = folder / f".{stem}.keys.{dead}-89abcdef.tmp.npy"
    old_live = folder / f".{stem}.offsets.{os.getpid()}-01234567.tmp.npy"
    not_ours = folder / f".{stem}.{dead}-zzzz.tmp.npy"
    for p in (old_dead, new_dead, old_live, not_ours):
        p.write_bytes(b"y" * 100)
    day_ago = time.time() - 25 * 3600
    for p in (old_dead, old_live, not_ours):
        os.utime(p, (day_ago, day_ago))
    freed = cache_mod.sweep_stale_tempfiles(folder)
    assert freed == 100 and not old_dead.exists() and new_dead.exists() and old_live.exists() and not_ours.exists()
    assert cache_mod.sweep_stale_tempfiles(folder) == 0  # once per folder and process


def test_the_token_cache_sweeps_its_folder_too(tmp_path):
    tc = TokenCache(tmp_path, "m")
    tc.folder.mkdir(parents=True)
    stale = tc.folder / f".{uuid.uuid4().hex}.{_ended_pid()}@{socket.gethostname()}-0123abcd.tmp.npy"
    stale.write_bytes(b"z" * 50)
    tv = TokenVectors(np.ones((3, 4), np.float16), np.array([0, 1, 3]))
    tc.put(text_digests(["a", "b"]), tv)
    assert not stale.exists()
    assert not [p for p in tc.folder.iterdir() if ".tmp" in p.name]
