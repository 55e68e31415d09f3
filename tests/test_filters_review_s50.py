"""A review of the filters: MMR's memory bound counting the gathered documents (and its cosines the values it
ranked by), MMR's near-ties going to the incoming rank, the cosine adapter warning of lists shorter than at
training, the shared repeat / padding helpers, MaxSim's k read by ``resolve_k``, ``check_cosines`` naming where
and what, and the per-call counts ``fetch_k`` / ``k_min`` held to the rule of a per-call ``k``."""

from __future__ import annotations

import tracemalloc

import numpy as np

from ragkit.encoders import HashingEncoder, register_encoder
from ragkit.filters.mmr import MMR
from ragkit.types import Corpus, Ranking, State

register_encoder("review-s50-hash768", HashingEncoder(dim=768), replace=True)
register_encoder("review-s50-hash64", HashingEncoder(dim=64), replace=True)


# ---------------------------------------------------------------------- 1. MMR's memory bound
def test_mmr_memory_bound_counts_the_gathered_document_block():
    """The block size bounded the (n_q, F, F) similarities only: 2,000 queries of a 100-document pool at dim 768
    gathered a (2000, 100, 768) float32 block (586 MiB) in one piece.  Now the gathered documents and the
    similarities together stay near 256 MiB (tracemalloc sees the numpy gather, not torch's products)."""
    rng = np.random.default_rng(0)
    n_docs, n_q, f = 3000, 2000, 100
    corpus = Corpus([str(i) for i in range(n_docs)], [f"doc w{i % 97} v{i % 89} u{i}" for i in range(n_docs)])
    op = MMR(k=10, lambda_mult=0.5, model="review-s50-hash768").fit(corpus)
    rankings = [Ranking(rng.choice(n_docs, f, replace=False), np.linspace(1, 0, f, dtype=np.float32))
                for _ in range(n_q)]
    state = State([f"w{i % 97} v{i % 13}" for i in range(n_q)], rankings=rankings)
    tracemalloc.start()
    try:
        out = op(state)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 300 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert len(out.rankings) == n_q and all(len(r) == 10 for r in out.rankings)
    v = op.vectors_
    q = HashingEncoder(dim=768).encode(state.texts())
    r = out.rankings[7]
    np.testing.assert_allclose(r.fields["cosine"], v[r.rows] @ q[7], atol=1e-5)  # the cosines q . d (float32 rounding)
