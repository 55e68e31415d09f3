"""Session 54's fixes of the scale-out layer on Ray: a Ray fit of bm25 shards weighs each shard on a worker (none in
the driver), ..."""

from __future__ import annotations

import numpy as np

from ragkit._sharded import Sharded
from ragkit.retrievers.bm25 import BM25
from ragkit.types import Corpus


def _corpus(n: int = 120, seed: int = 0) -> Corpus:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(60)])
    return Corpus.from_texts([" ".join(rng.choice(words, int(rng.integers(3, 12)))) for _ in range(n)],
                             ids=[f"d{i}" for i in range(n)])


_QUERIES = ["w1 w2", "w3", "w4 w5 w6", "w7 w0"]


def test_ray_fit_of_bm25_shards_weighs_no_shard_in_the_driver(local_ray, monkeypatch):
    """A Ray fit of bm25 shards gave every shard the whole corpus's statistics in the driver (set_collection, its
    float64 weights computed there, then saved): the whole index's weights alive in the driver at once.  Each shard
    is weighed and saved again by a Ray task of its own: BM25._weigh never runs in the driver, and the merge still
    equals one index's ranking."""
    corpus = _corpus()
    calls = []
    real = BM25._weigh

    def spy(self):
        calls.append(len(self._dl))
        return real(self)

    monkeypatch.setattr(BM25, "_weigh", spy)
    sh = Sharded(retriever={"bm25": {}}, n_shards=3, k=10, backend="ray").fit(corpus)
    assert calls == []
    monkeypatch.setattr(BM25, "_weigh", real)
    one = BM25(k=10).fit(corpus)
    got, want = sh.search(_QUERIES), one.search(_QUERIES)
    assert [list(d) for d in got.doc_ids] == [list(d) for d in want.doc_ids]
    np.testing.assert_allclose(np.concatenate(got.scores), np.concatenate(want.scores), rtol=1e-6)
    for shard in sh.shards_:  # (memory-mapped, their saved weights the whole corpus's)
        assert shard.collection_ is not None
