"""Review of the Ray / scale-out features: failed refits keep the earlier fit, search_distributed takes
every query form, relative paths reach Ray workers, loaded Ray shards are mapped, the encoder pool's
size, failed Ray fits leave nothing behind, shard failures name the shard, ``workdir`` as a Path."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import file_mapped

from ragkit import _ray_encode, _ray_fit, _sharded, scale
from ragkit.errors import ParamError
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25
from ragkit.scale import Sharded, ShardError, search_distributed
from ragkit.types import Corpus


def _corpus(n: int, offset: int = 0) -> Corpus:
    """``n`` short documents over a small vocabulary (ids ``d<offset + i>``), model-free."""
    rng = np.random.default_rng(offset)
    words = np.array([f"w{i}" for i in range(40)])
    texts = [" ".join(rng.choice(words, size=8)) for _ in range(n)]
    return Corpus.from_texts(texts, ids=[f"d{offset + i}" for i in range(n)])


QUERIES = ["w1 w2 w3", "w4 w5", "w7 w11 w13", "w20 w21"]


def _ranked(run) -> tuple[list[list[str]], list[list[float]]]:  # noqa: ANN001
    return [list(d) for d in run.doc_ids], [np.asarray(s).tolist() for s in run.scores]


@pytest.fixture(scope="module")
def ray_elsewhere(tmp_path_factory):
    """A local Ray on 2 CPUs whose workers run in a folder of their own (not the tests' folder, as on a
    cluster started elsewhere); shut down after this module's tests."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("Ray already running in this process")
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ray-workers-cwd"))  # the workers keep the folder Ray started in
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        os.chdir(here)
    yield ray
    ray.shutdown()


# ---------------------------------------------------------------- 1. a failed refit keeps the earlier fit
@pytest.mark.parametrize("error", [RuntimeError("worker lost"), KeyboardInterrupt()])
def test_a_failed_sharded_refit_keeps_the_earlier_fit(tmp_path, monkeypatch, error):
    """A refit on a same-size corpus whose second shard fails (an error, Ctrl-C) left the first fit's shards
    under the new corpus's ids (a search returned B's ids for A's documents) and deleted the first fit's
    folders; now the earlier fit stays whole (its ids, scores, folders) and the new folder is removed."""
    a, b = _corpus(60), _corpus(60, offset=1000)
    sh = Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend="local", workdir=str(tmp_path / "w")).fit(a)
    before, folders = _ranked(sh.search(QUERIES)), list(sh.folders_)
    real, calls = _sharded._fit_shard, []

    def flaky(node, corpus, folder):  # noqa: ANN001, ANN202
        calls.append(folder)
        if len(calls) == 2:
            raise error
        return real(node, corpus, folder)

    monkeypatch.setattr(_sharded, "_fit_shard", flaky)
    expected = ShardError if isinstance(error, Exception) else KeyboardInterrupt
    with pytest.raises(expected) as got:
        sh.fit(b)
    if expected is ShardError:
        assert "shard 1 (documents 30..59) failed to build: RuntimeError: worker lost" in str(got.value)
    monkeypatch.undo()
    assert sh.corpus_ is a and sh.folders_ == folders and all(Path(f).is_dir() for f in folders)
    assert _ranked(sh.search(QUERIES)) == before
    assert [p.name for p in (tmp_path / "w").iterdir()] == [Path(folders[0]).parent.name]  # the new one is gone
    sh.fit(b)  # a refit that succeeds replaces the earlier shards and removes their folder
    assert not Path(folders[0]).parent.exists()
    assert _ranked(sh.search(QUERIES)) == _ranked(BM25(k=5).fit(b).search(QUERIES))


def test_a_fit_that_raises_leaves_any_operator_as_it_was(monkeypatch):
    """Operator.fit set corpus_ before _fit: a BM25 whose _fit raised after building the new index looked
    fitted on the new corpus (a first fit that raised looked fitted too)."""
    a, b = _corpus(50), _corpus(50, offset=1000)
    bm = BM25(k=5).fit(a)
    before = _ranked(bm.search(QUERIES))
    real = BM25._fit

    def midway(self, corpus, train, upstream):  # noqa: ANN001, ANN202
        real(self, corpus, train, upstream)  # the new state assigned, then a failure
        raise MemoryError("simulated")

    monkeypatch.setattr(BM25, "_fit", midway)
    with pytest.raises(MemoryError):
        bm.fit(b)
    fresh = BM25(k=5)
    with pytest.raises(MemoryError):
        fresh.fit(a)
    monkeypatch.undo()
    assert bm.corpus_ is a and _ranked(bm.search(QUERIES)) == before
    assert not fresh.is_fitted


# ---------------------------------------------------------------- 7. a local shard failure names the shard
def test_a_local_shard_failure_names_the_shard():
    c = Corpus.from_texts(["w1 w2", "w3 w4", "w5 w6", "w7 w8"], ids=list("abcd"))
    sh = Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend="local")

    def boom(self, corpus, train, upstream):  # noqa: ANN001, ANN202
        if corpus.ids[0] == "c":
            raise ValueError("bad documents")
        return real(self, corpus, train, upstream)

    real = BM25._fit
    BM25._fit = boom
    try:
        with pytest.raises(ShardError, match=r"sharded: shard 1 \(documents 2\.\.3\) failed to build: "
                                             r"ValueError: bad documents") as got:
            sh.fit(c)
    finally:
        BM25._fit = real
    assert isinstance(got.value.__cause__, ValueError) and not sh.is_fitted


# ---------------------------------------------------------------- 8. workdir as a Path
def test_sharded_workdir_takes_a_path(tmp_path):
    sh = Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend="local", workdir=tmp_path / "w")
    assert sh.params.workdir == str(tmp_path / "w")
    sh.fit(_corpus(20))
    assert all(f.startswith(str(tmp_path / "w")) for f in sh.folders_)
    assert Pipeline.from_yaml(Pipeline([sh]).to_yaml()).steps[0].params.workdir == str(tmp_path / "w")


# ---------------------------------------------------------------- 3. relative paths are made absolute
def test_relative_workdir_and_load_paths_are_absolute(tmp_path, monkeypatch):
    """Ray workers run in folders of their own: the folders a fit writes and a load reads are absolute."""
    monkeypatch.chdir(tmp_path)
    c = _corpus(30)
    sh = Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend="local", workdir="work").fit(c)
    assert all(Path(f).is_absolute() and Path(f).is_relative_to(tmp_path / "work") for f in sh.folders_)
    Pipeline([sh]).save("saved")
    loaded = Pipeline.load("saved")
    assert all(Path(f).is_absolute() and Path(f).is_relative_to(tmp_path / "saved") for f in loaded.steps[0].folders_)
    os.chdir("/")
    assert _ranked(loaded.search(QUERIES)) == _ranked(sh.search(QUERIES))


# ---------------------------------------------------------------- 6. a failed fit's straggling shard writes nothing
def test_a_straggling_shard_does_not_make_its_removed_folder_again(tmp_path):
    folder = tmp_path / "ragkit-shards-x" / "shard-001"
    with pytest.raises(FileNotFoundError, match="is gone"):
        _sharded._fit_shard({"bm25": {}}, _corpus(10), str(folder))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 5. the encoder pool's size
class _Stop(Exception):
    pass


def test_the_encoder_pool_follows_the_cluster_or_ragkit_ray_actors(monkeypatch):
    """ray_encode used 2 actors whatever the cluster (Pipeline.fit, Operator.fit, ragkit eval --backend ray
    could not change it): one per CPU of the cluster, or $RAGKIT_RAY_ACTORS, at most one per block."""
    ray_data = pytest.importorskip("ray.data")
    sizes = []

    class _Data:
        def map_batches(self, *args, compute, **kw):  # noqa: ANN001, ANN003, ANN201
            sizes.append(compute.max_size)
            raise _Stop

    class _Cluster:
        @staticmethod
        def cluster_resources():  # noqa: ANN205
            return {"CPU": 6.0, "memory": 1e9}

    monkeypatch.setattr(_ray_encode, "_check_model", lambda model, batch_size, where: 4)
    monkeypatch.setattr(_ray_encode, "ray_init", lambda *a, **kw: _Cluster)
    monkeypatch.setattr(ray_data, "from_items", lambda items: _Data())
    monkeypatch.delenv("RAGKIT_RAY_ACTORS", raising=False)
    texts = [f"text {i}" for i in range(5000)]
    for env, kw, n in ((None, {}, 5000), ("3", {}, 5000), ("3", {"num_actors": 5}, 5000), (None, {}, 300)):
        if env is None:
            monkeypatch.delenv("RAGKIT_RAY_ACTORS", raising=False)
        else:
            monkeypatch.setenv("RAGKIT_RAY_ACTORS", env)
        with pytest.raises(_Stop):
            scale.ray_encode("m", texts[:n], **kw)
    assert sizes == [6, 3, 5, 2]  # 300 texts are 2 blocks of 256
    monkeypatch.setenv("RAGKIT_RAY_ACTORS", "many")
    with pytest.raises(ParamError, match="RAGKIT_RAY_ACTORS: expected a positive integer"):
        scale.ray_encode("m", texts)


def test_a_ray_fit_leaves_the_pool_size_to_ray_encode(monkeypatch):
    from ragkit.retrievers import Dense

    seen = []

    def encode(model, texts, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.append(kw.get("num_actors"))
        raise _Stop

    monkeypatch.setattr(_ray_fit, "_check_model", lambda model, batch_size, where: 4)
    monkeypatch.setattr(_ray_fit, "ray_encode", encode)
    for fit in (lambda c: Pipeline([Dense(model="m")]).fit(c, backend="ray"),
                lambda c: Dense(model="m").fit(c, backend="ray")):
        with pytest.raises(_Stop):
            fit(_corpus(5))
    assert seen == [None, None]


# ---------------------------------------------------------------- on Ray
def test_search_distributed_takes_every_query_form(ray_elsewhere, tmp_path, monkeypatch):
    """{qid: text} was searched as its ids, renumbered q0, q1...; a Series lost its ids. A relative workdir
    was read by the workers from their own folder."""
    pd = pytest.importorskip("pandas")
    pipe = Pipeline([BM25(k=5)]).fit(_corpus(40))
    given = {"a": QUERIES[0], "b": QUERIES[1], "c": QUERIES[2]}
    monkeypatch.chdir(tmp_path)
    for queries in (given, pd.Series(given), QUERIES, QUERIES[0]):
        want = pipe.search(queries)
        got = search_distributed(pipe, queries, n_chunks=2)
        assert list(got.query_ids) == list(want.query_ids)
        assert _ranked(got) == _ranked(want)
    assert list(search_distributed(pipe, given, n_chunks=2).query_ids) == ["a", "b", "c"]
    assert _ranked(search_distributed(pipe, QUERIES, n_chunks=2, workdir="sd")) == _ranked(pipe.search(QUERIES))
    assert [p.name for p in (tmp_path / "sd").iterdir()] == []


def test_a_loaded_ray_sharded_maps_its_shards(ray_elsewhere, tmp_path):
    """Pipeline.load of a backend: ray sharded pipeline read every shard into the driver's memory (the
    actors search): mapped now, as after a Ray fit."""
    c = _corpus(60)
    pipe = Pipeline([Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend="ray")]).fit(c)
    pipe.save(tmp_path / "p")
    loaded = Pipeline.load(tmp_path / "p")
    assert all(file_mapped(s._wt.data) for s in loaded.steps[0].shards_)
    assert _ranked(loaded.search(QUERIES)) == _ranked(BM25(k=5).fit(c).search(QUERIES))


def _one_shard_fails(node, corpus, folder):  # noqa: ANN001, ANN202
    """A Ray task (pickled by value): shard 0 fails at once, the other builds 2 s later."""
    from ragkit._sharded import _fit_shard

    if folder.endswith("shard-000"):
        raise ValueError("bad shard")
    time.sleep(2)
    return _fit_shard(node, corpus, folder)


def test_a_failed_ray_fit_leaves_no_folder(ray_elsewhere, tmp_path, monkeypatch):
    """The failure was raised while the other shards' tasks ran on; a late one then made the removed
    folder again in workdir: now they end first, and the fit's folder goes with its failure."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(_sharded, "_fit_shard", _one_shard_fails)
    work = tmp_path / "w"
    sh = Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend="ray", max_retries=0, workdir=str(work))
    try:
        with pytest.raises(ShardError, match=r"shard 0 \(documents 0\.\.29\) failed to build.*bad shard"):
            sh.fit(_corpus(60))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert list(work.iterdir()) == [] and not sh.is_fitted
    time.sleep(3)
    assert list(work.iterdir()) == []
