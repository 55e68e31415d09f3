"""Fifth review of Ray scale-out: a bad per-shard model of a ``sharded`` retriever with ``backend: ray`` is refused
before Ray starts (as ``fit(backend="ray")`` refuses it), an error a shard's own search raises on Ray keeps its type
and the actors, and ``search_distributed`` over a Ray-searched ``sharded`` retriever searches the shards inside each
chunk (it started a set of shard actors, and linked a copy of the shard folders, per chunk: 10x slower)."""

from __future__ import annotations

import sys
import textwrap

import pytest
from conftest import ranked, word_corpus

from ragkit import _distributed, _ray_encode, _sharded, registry
from ragkit.errors import ParamError
from ragkit.pipelines import Pipeline
from ragkit.scale import Sharded, ShardError, search_distributed

QUERIES = ["w1 w2 w3", "w4 w5", "w7 w11 w13", "w20 w21", "w3 w9", "w30 w31 w1"]


# ---------------------------------------------------------------- 3. a bad model is refused before Ray starts
# (first in this file: the later tests start Ray, for the whole module)
def test_a_ray_sharded_retrievers_bad_model_is_refused_before_ray_starts(monkeypatch, tmp_path):
    """``Sharded(retriever={"dense": {"model": <missing>}}, backend="ray")`` fitted by a plain ``fit`` started Ray
    and failed 10 s later as a ShardError from a shard's task, leaving Ray running; ``fit(backend="ray")`` refused
    the same model at once.  Both refuse it now, as the same ParamError naming the per-shard model, before Ray
    starts."""
    ray = pytest.importorskip("ray")
    running = ray.is_initialized()

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started")

    for module in (_ray_encode, _sharded, _distributed):
        monkeypatch.setattr(module, "ray_init", refuse)
    missing = str(tmp_path / "no-such-model")
    c = word_corpus(40)
    for fit in (lambda: Sharded(retriever={"dense": {"model": missing}}, n_shards=2, backend="ray").fit(c),
                lambda: Pipeline([Sharded(retriever={"dense": {"model": missing}}, n_shards=2,
                                          backend="ray")]).fit(c)):
        with pytest.raises(ParamError, match=r"sharded\.retriever\.dense\.model: model '.*no-such-model' names a "
                                             r"folder that does not exist") as err:
            fit()
        assert not isinstance(err.value, ShardError)
    assert ray.is_initialized() == running


# ---------------------------------------------------------------- 2. a shard's own error keeps its type
@pytest.fixture
def boom_op(tmp_path):
    """``rr5boom``: a BM25 whose search raises ``ValueError("bad query BOOMQ")`` on a query holding BOOMQ, in a
    module file imported by path (as ``ragkit --import ./rr5ops.py`` does), so that Ray workers import it too;
    unregistered afterwards."""
    from ragkit._plugins import _import_module

    (tmp_path / "rr5ops.py").write_text(textwrap.dedent("""
        from ragkit.registry import register
        from ragkit.retrievers import BM25

        @register
        class RR5Boom(BM25):
            name = "rr5boom"

            def _call(self, state):
                if any("BOOMQ" in q for q in state.queries):
                    raise ValueError("bad query BOOMQ")
                return super()._call(state)
    """))
    _import_module(str(tmp_path / "rr5ops.py"), "--import")
    try:
        yield "rr5boom"
    finally:
        registry._REGISTRY.pop("rr5boom", None)
        sys.modules.pop("rr5ops", None)


def test_an_error_a_shards_search_raises_on_ray_keeps_its_type_and_the_actors(local_ray, boom_op):
    """A ValueError raised by a shard's search was a ShardError on Ray ('shards 0, 1 failed to search: ValueError:
    ...') and stopped every actor, though a local search raises the ValueError itself.  It is the same ValueError
    now, the remote traceback chained, and the actors stay."""
    c = word_corpus(120)
    local = Sharded(retriever={boom_op: {}}, n_shards=3, k=10, backend="local").fit(c)
    sh = Sharded(retriever={boom_op: {}}, n_shards=3, k=10, backend="ray").fit(c)
    want = ranked(local.search(QUERIES), 5)
    assert ranked(sh.search(QUERIES), 5) == want
    actors = sh._actors
    with pytest.raises(ValueError) as at_home:
        local.search(["BOOMQ w1"])
    with pytest.raises(ValueError) as on_ray:
        sh.search(["BOOMQ w1"])
    assert type(on_ray.value) is type(at_home.value) is ValueError
    assert not isinstance(on_ray.value, ShardError)
    assert str(on_ray.value) == str(at_home.value) == "bad query BOOMQ"
    assert sh._actors is actors  # kept: the next search needs no new actors
    assert ranked(sh.search(QUERIES), 5) == want and sh._actors is actors


def test_a_ray_failure_still_drops_the_actors_as_a_shard_error(local_ray, monkeypatch):
    """What Ray itself failed on (here: an object that cannot be fetched) is still a ShardError naming the shards,
    and drops the actor set (the next search starts a new one)."""
    from ray.exceptions import ObjectLostError

    sh = Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend="ray").fit(word_corpus(60))
    sh.search(QUERIES)
    actors = sh._actors
    real_get = local_ray.get

    def lost(ref, *args, **kwargs):
        if kwargs.get("timeout") == 0:  # (the drain's fetches)
            return real_get(ref, *args, **kwargs)
        raise ObjectLostError("ab" * 20, b"", "(test)")

    monkeypatch.setattr(local_ray, "get", lost)
    with pytest.raises(ShardError, match=r"sharded: shards? 0.* failed to search: .*ObjectLostError|lost"):
        sh.search(QUERIES)
    monkeypatch.setattr(local_ray, "get", real_get)
    assert sh._actors is None
    assert len(sh.search(QUERIES)) == len(QUERIES) and sh._actors is not actors


# ---------------------------------------------------------------- 1. search_distributed searches shards in the chunk
def _shard_actors(ray) -> set[str]:  # noqa: ANN001
    """The ids of every shard actor the cluster has had (dead ones included)."""
    from ray._private import state

    return {a for a, info in state.actors().items() if info["ActorClassName"] == "_ShardActor"}


def test_search_distributed_starts_no_shard_actors_in_its_chunks(local_ray, tmp_path):
    """Each chunk loaded the pipeline with its ``sharded`` retriever's ``backend: ray``, so it linked a copy of the
    shard folders and started a shard actor set of its own (4 chunks: 4 more sets, 10 times the local backend's
    time).  A chunk searches the shards itself now, with the same results."""
    c = word_corpus(300)
    pipe = Pipeline([Sharded(retriever={"bm25": {}}, n_shards=4, k=10, backend="ray")]).fit(c)
    want = ranked(pipe.search(QUERIES), 5)  # (the driver's own actors start here)
    before = _shard_actors(local_ray)
    got = search_distributed(pipe, QUERIES, n_chunks=3, workdir=tmp_path / "w")
    assert _shard_actors(local_ray) == before, "a chunk started shard actors"
    assert ranked(got, 5) == want
    local = Pipeline([Sharded(retriever={"bm25": {}}, n_shards=4, k=10, backend="local")]).fit(c)
    assert ranked(search_distributed(local, QUERIES, n_chunks=3), 5) == want
    assert pipe.steps[0]._use_ray()  # (the driver's retriever still searches on Ray)
