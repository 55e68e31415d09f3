"""Review fixes of generation (review s50): a variant recomputed in full is no reuse of it, the chunk cache's
flush writes only what changed, decoding runs no pass past its last token, the GGUF file is fingerprinted once,
and the settings' checks are shared.

The tests use the tiny 4-layer checkpoints of ``tests/test_cachecraft.py`` (seconds).
"""

from __future__ import annotations

from test_cachecraft import TINY_CHUNKS, TINY_Q, tiny  # noqa: F401


def test_a_variant_recomputed_in_full_is_not_counted_as_reused(tiny):  # noqa: F811
    """A variant whose rows were all recomputed (fraction=1.0 in another order) reused nothing: its reuse count,
    which ranks it for eviction, stayed 0 (it rose to 1, ranking it ~100x above a fresh exact variant)."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0]).load()
    a, b = TINY_CHUNKS[:2]
    g.prefill(g.segments(TINY_Q, [a, b]), "cachecraft", fraction=1.0)  # misses: A() and B(A) stored
    p = g.prefill(g.segments(TINY_Q, [b, a]), "cachecraft", fraction=1.0)  # both found, both recomputed in full
    assert p.chunk_fraction == [1.0, 1.0] and p.cost.chunks_reused == 0
    cache = g.chunk_cache
    ka, kb = (cache.key(g.segments(TINY_Q, [c]).chunks[0]) for c in (a, b))
    old = [v for v in cache.lookup(ka) if v.prefix_ids == ()] + [v for v in cache.lookup(kb) if v.prefix_ids == (ka,)]
    assert len(old) == 2
    assert [v.reuse for v in old] == [0.0, 0.0] and [v.cfo_n for v in old] == [0, 0]
    # a reuse that keeps rows is still counted
    q = g.prefill(g.segments(TINY_Q, [a, b]), "cachecraft", fraction=0.0)
    assert q.chunk_fraction == [0.0, 0.0] and q.cost.chunks_reused == 2
    assert [v.reuse for v in old] == [1.0, 1.0]

