"""Ray scale-out review: a cluster without CPUs is refused before any work (a fit blocked forever in ``ray.get``),
a shard's documents that cannot be sent to a Ray worker give the local fit's ShardError, and a search failing on
one shard's folder names that shard, not every shard its actor serves."""

from __future__ import annotations

import shutil
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import ray_session, word_corpus

from ragkit import _ray, _ray_encode, _sharded
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25
from ragkit.scale import Sharded, ShardError, ray_encode, search_distributed

QUERIES = ["w1 w2 w3", "w4 w5", "w7 w11 w13"]


# ---------------------------------------------------------------- 1. a Ray cluster without CPUs
@pytest.fixture
def cpuless_ray():
    """A local Ray with no CPU (``ray.init(num_cpus=0)``): no task or actor asking for one can ever run; shut down
    after the test (it runs before this module's 2-CPU Ray, which is module-scoped)."""
    yield from ray_session(0)


@pytest.mark.timeout(180)  # (before the check, the fit waited forever: a failure, not a hung suite)
def test_every_ray_entry_point_refuses_a_cluster_without_cpus(cpuless_ray, tmp_path, monkeypatch):
    """A sharded Ray fit on ``ray.init(num_cpus=0)`` waited forever in ``ray.get`` (Ray only logging "No available
    node types can fulfill resource request {'CPU': 1.0}") and left its ``ragkit-shards-*`` folder when stopped;
    every Ray entry point (the shards' fit, their search actors, search_distributed, ray_encode) now refuses such a
    cluster before it submits anything, naming the step and the cluster's CPUs."""
    corpus, wd = word_corpus(40), tmp_path / "wd"
    fit = Pipeline([Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend="ray", workdir=str(wd))])
    with pytest.raises(ShardError, match=r"sharded\.fit: the Ray cluster has 0 CPUs .*asks for 1.*num_cpus"):
        fit.fit(corpus)
    assert list(wd.iterdir()) == []  # nothing submitted, the fit's folder removed

    searched = Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend="local", workdir=str(wd)).fit(corpus)
    searched._backend = "ray"  # (as a loaded backend: ray index searches: its actors start at the first search)
    with pytest.raises(ShardError, match=r"sharded\.search: the Ray cluster has 0 CPUs"):
        searched.search(QUERIES)
    assert searched._actors is None

    with pytest.raises(ShardError, match=r"^search_distributed: the Ray cluster has 0 CPUs"):
        search_distributed(Pipeline([BM25(k=5)]).fit(corpus), QUERIES, workdir=tmp_path / "sd")
    assert not (tmp_path / "sd").exists()  # the pipeline not even saved

    monkeypatch.setattr(_ray_encode, "_check_model", lambda *a, **kw: 8)  # (no model to load: refused after it)
    with pytest.raises(ShardError, match=r"^ray_encode\('m'\): the Ray cluster has 0 CPUs"):
        ray_encode("m", ["a text", "another"])


def test_a_busy_cluster_is_not_refused():
    """What counts is the cluster's CPUs, not the free ones: a cluster whose CPUs are all busy runs the work later."""
    busy = SimpleNamespace(cluster_resources=lambda: {"CPU": 2.0}, available_resources=lambda: {})
    _ray._check_cpus(busy, "sharded.fit")
    none = SimpleNamespace(cluster_resources=lambda: {"memory": 1e9}, available_resources=lambda: {})
    with pytest.raises(ShardError, match=r"^sharded\.fit: the Ray cluster has 0 CPUs \(0 free\)"):
        _ray._check_cpus(none, "sharded.fit")


def test_an_autoscaling_cluster_may_wait_for_cpus(monkeypatch, caplog):
    """$RAGKIT_RAY_WAIT_FOR_CPUS=1 lets the work wait for a CPU node an autoscaler adds (a warning, no refusal)."""
    none = SimpleNamespace(cluster_resources=lambda: {"memory": 1e9}, available_resources=lambda: {})
    with pytest.raises(ShardError, match=r"RAGKIT_RAY_WAIT_FOR_CPUS=1"):
        _ray._check_cpus(none, "sharded.fit")
    monkeypatch.setenv("RAGKIT_RAY_WAIT_FOR_CPUS", "1")
    with caplog.at_level("WARNING", logger="ragkit"):
        _ray._check_cpus(none, "sharded.fit")
    assert "sharded.fit: the Ray cluster has 0 CPUs now; submitting anyway" in caplog.text


# ---------------------------------------------------------------- 2. documents Ray cannot send
def test_metadata_that_does_not_pickle_gives_the_local_fits_shard_error(local_ray, tmp_path):
    """A corpus whose metadata holds a lock gave Ray's raw "TypeError: Could not serialize the argument ..." from
    the shard task's submission (outside the error wrapping); it is now the ShardError a local fit gives (the shard,
    its documents, the document and the field), with no folder left."""
    corpus = word_corpus(40, obj=[threading.Lock()] * 40)
    errors = {}
    for backend in ("local", "ray"):
        wd = tmp_path / backend
        with pytest.raises(ShardError) as got:
            Pipeline([Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend=backend, workdir=str(wd))]).fit(corpus)
        errors[backend] = str(got.value)
        assert list(wd.iterdir()) == [], backend
    text = errors["ray"]
    assert text.startswith("pipeline[0].sharded: shard 0 (documents 0..19) failed to build: DataError: "), text
    assert "document 'd0'" in text and "metadata field 'obj' holds a lock" in text, text
    assert "Could not serialize" not in text
    strip = "<unlocked _thread.lock object at "  # (the lock's address differs between the two messages)
    assert errors["local"].split(strip)[0] == text.split(strip)[0]


# ---------------------------------------------------------------- 3. which shard failed to search
def test_a_missing_shard_folder_names_that_shard_only(local_ray, tmp_path):
    """Three shards on 2 CPUs: one actor serves shards 0 and 1.  With shard 1's folder gone, the search said
    "shards 0, 1 failed to search: ArtifactNotFoundError: .../shard-001: no such folder"; shard 0 is sound, and now
    only shard 1 is named."""
    corpus = word_corpus(60)
    Pipeline([Sharded(retriever={"bm25": {}}, n_shards=3, k=5, backend="ray", workdir=str(tmp_path / "wd"))]
             ).fit(corpus).save(tmp_path / "saved")
    loaded = Pipeline.load(tmp_path / "saved")
    op = loaded.steps[0]
    shutil.rmtree(op.folders_[1])
    with pytest.raises(ShardError) as got:
        loaded.search(QUERIES)
    text = str(got.value)
    assert "sharded: shard 1 failed to search: ArtifactNotFoundError: " in text and "shard-001" in text, text
    assert "shards 0, 1" not in text, text


def test_an_error_naming_no_shard_says_the_actor_serves_them():
    """A shard load failing on an actor without naming its folder: the actor's shards, said to share one worker;
    a Ray failure (the reply lost) fails them all, as before."""
    folders = ["/x/shard-000", "/x/shard-001", "/x/shard-0010"]

    def err(text: str) -> BaseException:
        e = RuntimeError("ray task failed")
        e.cause = _ray._Permanent(text)  # type: ignore[attr-defined]
        return e

    group = np.array([0, 1])
    assert _sharded._failing(group, folders, err("ImportError: no module rr")) == "shards 0, 1 (one worker serves them)"
    assert _sharded._failing(group, folders, err("ArtifactError: /x/shard-001/index.npz: bad")) == "shard 1"
    assert _sharded._failing(group, folders[:1] + ["/x/shard-00"], err("ArtifactError: /x/shard-001: gone")) == \
        "shards 0, 1 (one worker serves them)"  # (a folder whose name only begins the one named)
    assert _sharded._failing(group, folders, RuntimeError("ObjectLostError")) == "shards 0, 1"
    assert _sharded._failing(np.array([2]), folders, err("ImportError: x")) == "shard 2"
