"""A ``Dense.remove`` of an HNSW index builds the graph once, however many thresholds it crosses.

A remove that left more slots dead than live (at least ``COMPACT_MIN``) built the graph twice: the index's
``remove`` rebuilt it because its dead nodes passed ``GRAPH_DEAD_FRACTION``, then ``Dense.remove`` compacted
the index, which built it again from the same live codes (20,000 documents, 12,000 removed in one call:
two builds of the 8,000 live nodes, 1.5 s each).  The README prices a large removal at "the cost of one
build".  Now the index's ``remove`` is told a compaction follows (``compact_next``) and leaves the graph to it.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HashedEncoder

from ragkit.encoders import register_encoder
from ragkit.operator import Operator
from ragkit.retrievers import Dense, _index as IX
from ragkit.retrievers.dense import COMPACT_MIN
from ragkit.types import Corpus

register_encoder("remove-rebuild-hashed", HashedEncoder("remove-rebuild-hashed-v1", 32), replace=True)
MODEL = "remove-rebuild-hashed"
N = 300
QUERIES = [f"query {i}" for i in range(12)] + [f"text {i}" for i in range(250, 262)]


def _corpus(n: int, start: int = 0) -> Corpus:
    return Corpus([f"d{start + i}" for i in range(n)], [f"text {start + i}" for i in range(n)])


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The node count of each HNSW graph build (``VectorIndex._new_graph_from``) from now on."""
    seen: list[int] = []
    real = IX.VectorIndex._new_graph_from

    def counted(self: IX.VectorIndex, keys: np.ndarray, codes: np.ndarray) -> None:
        seen.append(len(keys))
        real(self, keys, codes)

    monkeypatch.setattr(IX.VectorIndex, "_new_graph_from", counted)
    return seen


def _answers(d: Dense) -> tuple[list[list[str]], np.ndarray]:
    """The ids of each query's answers, and their scores (one row a query)."""
    out = d.search(QUERIES)
    return ([d.corpus_.ids[r.rows].tolist() for r in out.rankings],
            np.array([r.scores for r in out.rankings], dtype=np.float64))


def _same(a: Dense, b: Dense) -> bool:
    """The same answers, ids in order and scores to 1e-5 (exact and graph kernels differ in the last digits)."""
    (ia, sa), (ib, sb) = _answers(a), _answers(b)
    return ia == ib and sa.shape == sb.shape and bool(np.allclose(sa, sb, rtol=0, atol=1e-5))


def _hnsw(**kw: object) -> Dense:
    """An HNSW dense built on one thread: usearch's multi-threaded inserts make the graph (and its answers among
    the hashed encoder's tied scores) depend on timing, so a rebuilt and a fresh graph differed under load."""
    return Dense(model=MODEL, k=10, dtype="f32", search="hnsw", threads=1, **kw)


def test_a_remove_past_both_thresholds_builds_the_graph_once(builds):
    """Two thirds removed in one call (dead past a quarter of the graph, more dead than live, over
    ``COMPACT_MIN``): one build of the live nodes (before: two), the index compacted, and the answers those
    of a fresh fit on the documents left (a 100-node graph searched at ``expansion_search`` 64 is exact)."""
    d = _hnsw().fit(_corpus(N))
    gone = [f"d{i}" for i in range(200)]
    assert len(gone) >= COMPACT_MIN and len(gone) > N - len(gone) > 0
    builds.clear()
    d.remove(gone)
    assert builds == [N - 200]
    ix = d.index_
    assert ix.n_slots == ix.n_alive == len(ix.usearch) == N - 200  # compacted: no dead node left
    assert d.slots_.tolist() == list(range(N - 200))
    builds.clear()
    fresh = _hnsw().fit(_corpus(N - 200, start=200))
    assert _same(d, fresh)
    exact = Dense(model=MODEL, k=10, dtype="f32", search="exact").fit(_corpus(N - 200, start=200))
    assert _same(d, exact)


def test_a_remove_past_the_dead_share_only_still_rebuilds_once(builds):
    """A remove whose dead nodes pass ``GRAPH_DEAD_FRACTION`` without outnumbering the live ones still
    rebuilds the graph (slots kept, no compaction), once."""
    d = _hnsw().fit(_corpus(N))
    builds.clear()
    d.remove([f"d{i}" for i in range(100)])  # a third dead: past a quarter, fewer than the live
    assert builds == [N - 100]
    assert d.index_.n_slots == N and len(d.index_.usearch) == N - 100
    assert _same(d, _hnsw().fit(_corpus(N - 100, start=100)))


def test_a_compacting_remove_then_add_builds_once(builds):
    """Remove (compacting) then add: the one build of the remove, and the add only inserts."""
    d = _hnsw().fit(_corpus(N))
    builds.clear()
    d.remove([f"d{i}" for i in range(200)])
    d.add(_corpus(20, start=N))
    assert builds == [N - 200]
    assert _same(d, _hnsw().fit(_corpus(N - 200 + 20, start=200)))


def test_a_memory_mapped_graph_compacts_with_one_build(builds, tmp_path):
    """An HNSW index loaded with ``mmap=True`` (a read-only view of its usearch file) is compacted by a
    large remove too, with one build."""
    _hnsw().fit(_corpus(N)).save(tmp_path / "m")
    d = Operator.load(tmp_path / "m", mmap=True)
    assert isinstance(d, Dense) and d.index_._view
    builds.clear()
    d.remove([f"d{i}" for i in range(200)])
    assert builds == [N - 200]
    assert d.index_.n_slots == N - 200
    assert _same(d, _hnsw().fit(_corpus(N - 200, start=200)))


def test_the_index_leaves_the_graph_to_a_compaction_that_follows(builds):
    """``VectorIndex.remove(..., compact_next=True)`` keeps the dead nodes (searches skip them) for the
    ``compact`` that follows, which builds the graph once; without the flag it rebuilds as before."""
    x = np.random.default_rng(0).standard_normal((N, 16)).astype(np.float32)
    told = IX.VectorIndex(search="hnsw", threads=1).build(x)
    plain = IX.VectorIndex(search="hnsw", threads=1).build(x)
    builds.clear()
    told.remove(np.arange(200), compact_next=True)
    assert builds == [] and len(told.usearch) == N
    got, _ = told.search(x[200:], 1)
    assert (got[:, 0] == np.arange(200, N)).all()  # the dead nodes are skipped
    remap = told.compact()
    assert builds == [N - 200]
    plain.remove(np.arange(200))
    assert builds == [N - 200, N - 200]
    assert np.array_equal(plain.compact(), remap)
    assert builds == [N - 200] * 3  # (the old two-build path)
    a, sa = told.search(x[200:], 10)
    b, sb = plain.search(x[200:], 10)
    assert np.array_equal(a, b) and np.allclose(sa, sb, atol=1e-6)
