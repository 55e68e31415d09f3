"""Edited HNSW graphs keep finding their live nodes (VectorIndex add / remove / rebuild).

usearch's ``remove`` frees a node that its next ``add`` reuses (``index_gt::update``), clearing the node's
links: a node whose only incoming link came from it dropped out of the graph, unfindable even by its own
vector at a beam of 500.  VectorIndex now keeps dead nodes in the graph (searches skip them) and rebuilds
the graph from the live codes once they pass ``GRAPH_DEAD_FRACTION`` of its nodes.
"""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.retrievers import _index
from ragkit.retrievers._index import VectorIndex


def _outlier_scenario(seed: int, dtype: str = "f32", d: int = 32, m: int = 6) -> tuple[VectorIndex, list, np.ndarray]:
    """A tight cluster; ``m`` outliers added one by one, each just beyond its nearest cluster point (its
    one link, both ways); those neighbours removed; ``m`` vectors added on the far side of the cluster.
    Returns the index, the outliers' slots and their vectors."""
    rng = np.random.default_rng(seed)
    mu = np.zeros(d, np.float32)
    mu[0] = 1
    x = (mu + 0.05 * rng.standard_normal((200, d))).astype(np.float32)
    ix = VectorIndex(dtype=dtype, search="hnsw", threads=1).build(x)
    slots, vecs, used = [], [], set()
    for t in range(m):
        order = np.argsort(-x[:, 1 + t])
        r = int(next(j for j in order if j not in used))  # the cluster point furthest along axis 1 + t
        used.add(r)
        a = x[r].copy()
        a[1 + t] += 0.15
        slots.append(int(ix.add(a[None])[0]))
        vecs.append(a)
    ix.remove(np.array(sorted(used)))
    for t in range(m):
        b = mu + 0.05 * rng.standard_normal(d)
        b[1 + t] -= 0.2
        ix.add(b[None].astype(np.float32))
    return ix, slots, np.stack(vecs)


@pytest.mark.parametrize("dtype", ["f32", "f16", "i8"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_outlier_survives_removal_of_its_neighbour(seed, dtype):
    """An added vector whose one neighbour is removed, then more vectors added, is still found by itself
    (before: none of the six, at a beam of 500)."""
    ix, slots, vecs = _outlier_scenario(seed, dtype)
    for ef in (None, 500):
        got, _ = ix.search(vecs, 10, expansion_search=ef)
        assert [s in row for s, row in zip(slots, got.tolist())] == [True] * len(slots), ef
        assert ix.alive[got[got >= 0]].all()  # no dead slot comes back


def _correlated(seed: int, n: int, d: int = 64, c: float = 12.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (c * rng.standard_normal(d) + rng.standard_normal((n, d))).astype(np.float32)


def _self_misses(ix: VectorIndex, x: np.ndarray) -> set[int]:
    live = np.flatnonzero(ix.alive)
    got, _ = ix.search(x[live], 10)
    return set(live[~(got == live[:, None]).any(axis=1)].tolist())


@pytest.mark.parametrize("seed", [5])
def test_edit_rounds_lose_no_live_node(seed):
    """Rounds of add one / remove the oldest on correlated vectors: every live vector the graph found by
    itself with the adds alone is found with the removals too (before: one more was lost)."""
    n, rounds = 500, 100
    x = _correlated(seed, n + rounds)
    edited = VectorIndex(search="hnsw", threads=1).build(x[:n])
    adds = VectorIndex(search="hnsw", threads=1).build(x[:n])
    for j in range(rounds):
        edited.add(x[n + j: n + j + 1])
        adds.add(x[n + j: n + j + 1])
        edited.remove(np.array([j]))
    assert edited.n_alive == n and edited.n_slots == n + rounds
    assert _self_misses(edited, x) <= _self_misses(adds, x)


def test_dead_share_rebuilds_graph_keeping_slots():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 24)).astype(np.float32)
    ix = VectorIndex(search="hnsw", threads=1).build(x)
    limit = int(_index.GRAPH_DEAD_FRACTION * 400)
    ix.remove(np.arange(0, limit))  # at the share: kept
    assert len(ix.usearch) == 400 and ix.n_alive == 400 - limit
    got, _ = ix.search(x[:5], 5)
    assert (got >= limit).all()  # dead slots never come back
    ix.remove(np.array([limit]))  # past it: rebuilt from the live codes, slots unchanged
    assert len(ix.usearch) == ix.n_alive == 400 - limit - 1 and ix.n_slots == 400
    live = np.flatnonzero(ix.alive)
    assert not _self_misses(ix, x)
    new = ix.add(x[:3] + 0.01)
    np.testing.assert_array_equal(new, [400, 401, 402])
    got, _ = ix.search(x[:3] + 0.01, 1)
    np.testing.assert_array_equal(got[:, 0], new)
    assert set(np.asarray(ix.usearch.keys).tolist()) == set(live.tolist()) | {400, 401, 402}


def test_filtered_search_skips_dead_nodes():
    """A mask passing dead slots (the graph still holds their nodes) never returns them, on the graph path."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((600, 16)).astype(np.float32)
    ix = VectorIndex(search="hnsw", threads=1, exact_max=50).build(x)
    dead = rng.choice(600, 100, replace=False)
    ix.remove(dead)
    mask = np.ones(600, bool)
    mask[:300] = False
    got, s = ix.search(x[300:340], 10, mask=mask)
    assert (got >= 300).all() and ix.alive[got].all()
    exact = VectorIndex(search="exact").build(x)
    exact.remove(dead)
    want, _ = exact.search(x[300:340], 10, mask=mask)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), want.tolist())]) > 0.95
    got, _ = ix.search(x[:40], 10)
    assert ix.alive[got].all()


@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_keeps_dead_nodes(tmp_path, mmap):
    ix, slots, vecs = _outlier_scenario(0)
    before, before_s = ix.search(vecs, 10)
    ix.save(tmp_path / "s")
    back = VectorIndex.load(tmp_path / "s", mmap=mmap)
    assert len(back.usearch) == len(ix.usearch) > back.n_alive
    got, got_s = back.search(vecs, 10)
    np.testing.assert_array_equal(got, before)
    np.testing.assert_allclose(got_s, before_s, rtol=1e-6)
    assert not back._graph_free
    back.add(vecs[:1] * 0.5)
    got, _ = back.search(vecs, 10)
    assert all(s in row for s, row in zip(slots, got.tolist()))


def test_graph_removed_by_usearch_is_rebuilt_before_add(tmp_path):
    """A graph saved by an earlier version, whose dead nodes usearch removed: the first add rebuilds it
    (an add into usearch's freed nodes would cut their neighbours' links)."""
    rng = np.random.default_rng(0)
    d = 32
    mu = np.zeros(d, np.float32)
    mu[0] = 1
    x = (mu + 0.05 * rng.standard_normal((200, d))).astype(np.float32)
    ix = VectorIndex(search="hnsw", threads=1).build(x)
    r = int(np.argmax(x[:, 1]))
    a = x[r].copy()
    a[1] += 0.15
    slot = int(ix.add(a[None])[0])
    ix.remove(np.array([r]))
    ix.usearch.remove(np.array([r], np.uint64))  # what earlier versions did
    ix.save(tmp_path / "old")
    back = VectorIndex.load(tmp_path / "old")
    assert back._graph_free and len(back.usearch) == back.n_alive
    b = mu.copy()
    b[1] -= 0.2
    back.add(b[None])
    assert not back._graph_free and len(back.usearch) == back.n_alive
    got, _ = back.search(a[None], 10, expansion_search=500)
    assert slot in got[0]
