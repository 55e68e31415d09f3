"""Second review of the Ray-searched ``sharded`` retriever: a crashed shard actor restarts over large shards,
concurrent first searches share one actor set, a failed search fetches every shard's result, a dead actor is
replaced once, a copy does not own the original's folder or actors, and empty shards start no actor."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ragkit.pipelines import Pipeline
from ragkit.scale import Sharded
from ragkit.types import Corpus

QUERIES = ["w1 w2 w3", "w4 w5", "w7 w11 w13", "w20 w21"]


def _corpus(n: int, offset: int = 0, words_per_doc: int = 8) -> Corpus:
    """``n`` documents of ``words_per_doc`` words over a 40-word vocabulary (ids ``d<offset + i>``), model-free."""
    rng = np.random.default_rng(offset)
    words = np.array([f"w{i}" for i in range(40)])
    texts = [" ".join(rng.choice(words, size=words_per_doc)) for _ in range(n)]
    return Corpus.from_texts(texts, ids=[f"d{offset + i}" for i in range(n)])


def _ranked(run) -> tuple[list[list[str]], list[list[float]]]:  # noqa: ANN001
    return [list(d) for d in run.doc_ids], [np.round(np.asarray(s), 6).tolist() for s in run.scores]


@pytest.fixture(scope="module")
def ray2():
    """A local Ray on 2 CPUs, shut down after this module's tests."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("Ray already running in this process")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _shard_actors_alive(ray) -> int:  # noqa: ANN001
    from ray.util.state import list_actors

    return sum(1 for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000)
               if "_ShardActor" in a.class_name)


# ---------------------------------------------------------------- 1. a crashed actor restarts over a large shard
def test_a_crashed_shard_actor_restarts_over_a_large_shard(ray2):
    """Each shard's documents (~300 KB here) went to its actor by value, which Ray frees after the constructor:
    Ray's restart of a crashed actor (max_restarts) then failed (ReferenceCountingAssertionError) and the search
    raised ShardError.  The documents are now kept in the object store beside the actors: the same actor restarts
    and the search after the crash equals the one before."""
    sh = Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend="ray")
    pipe = Pipeline([sh]).fit(_corpus(3000, words_per_doc=30))
    ref = _ranked(pipe.search(QUERIES))
    actors = sh._actors
    time.sleep(1)
    ray2.kill(actors[0], no_restart=False)  # a crash Ray restarts (as a worker killed by the OOM killer)
    time.sleep(1)
    assert _ranked(pipe.search(QUERIES)) == ref
    assert sh._actors is actors  # restarted by Ray, not replaced
