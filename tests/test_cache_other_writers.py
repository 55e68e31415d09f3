"""A cache reader sees the shards another process wrote after it read its index (ragkit/encoders/cache.py).

Old code read a folder's index once per reader: a full SciFact encode written by a subprocess (``ragkit eval``
run by a test, a batch job beside a notebook) was computed again by the process that had read the index before
(4,783 of 4,930 documents, ~5 minutes of every cold CI run).  Now a lookup that misses lists the folder and reads
the index again where it holds shards it has not listed; a miss with nothing new keeps the index it has.
"""

from __future__ import annotations

import numpy as np

from ragkit.encoders.cache import EmbeddingCache, text_digests
from ragkit.encoders.tokens import TokenCache, TokenVectors

KEY = "test-model@other-writers"
TEXTS = [f"text {i}" for i in range(20)]


class Model:
    """A stand-in encoder: 4-wide vectors, the texts it was asked for remembered."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.asked += texts
        return np.array([[TEXTS.index(t) + 1.0, 0, 0, 1] for t in texts], np.float32)


def test_a_reader_serves_what_another_reader_wrote_since(tmp_path) -> None:
    mine, theirs = EmbeddingCache(tmp_path, KEY), EmbeddingCache(tmp_path, KEY)
    first = Model()
    mine.fetch_or_compute(TEXTS[:3], first)  # (its index read now: three texts)
    theirs.fetch_or_compute(TEXTS, Model())  # another process: the other 17 written
    again = Model()
    vecs, n = mine.fetch_or_compute(TEXTS, again)
    assert (n, again.asked) == (0, [])
    np.testing.assert_array_equal(vecs, Model()(TEXTS))


def test_a_miss_with_nothing_new_keeps_the_index(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path, KEY)
    cache.fetch_or_compute(TEXTS[:3], Model())
    index = cache._index
    cache.fetch_or_compute(TEXTS[3:6], Model())  # a miss, its own shard written: no other writer
    assert cache._index is index and len(index) == 6


def test_the_token_cache_sees_another_writer_too(tmp_path) -> None:
    digests = text_digests(["a", "b"])
    mine, theirs = TokenCache(tmp_path, "m"), TokenCache(tmp_path, "m")
    assert not mine.parts(digests)[1].any() and mine.whole(digests) is None  # (index read: nothing)
    theirs.put(digests, TokenVectors(np.ones((3, 4), np.float16), np.array([0, 1, 3])))
    whole = mine.whole(digests)
    assert whole is not None and len(whole) == 2
    assert mine.parts(digests)[1].all()
