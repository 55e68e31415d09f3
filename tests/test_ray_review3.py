"""Third review of the Ray-searched ``sharded`` retriever: a loaded index keeps its own shards when its folder is
saved again, a ragkit error raised by a shard is raised as itself (and keeps the actors), at most one shard actor
per CPU, a failure that was not retried does not say it was, and ``shards.json`` out of step with the shard
folders is named."""

from __future__ import annotations

import json
import sys
import time

import pytest
from conftest import ranked, word_corpus

from ragkit import scale
from ragkit.errors import ArtifactError, DataError
from ragkit.operator import Operator
from ragkit.retrievers import BM25
from ragkit.scale import Sharded, ShardError

QUERIES = ["w1 w2 w3", "w4 w5", "w7 w11 w13", "w20 w21"]


# ---------------------------------------------------------------- 1. a loaded index keeps its own shards
def test_a_loaded_ray_index_is_not_reached_by_a_later_save_into_its_folder(local_ray, tmp_path):
    """The shard actors loaded the user's folder at their first search (and again when Ray restarted one):
    another index saved there after Operator.load answered every query under the loaded one's parameters, and a
    restart after such a save mixed the two indexes.  A loaded Ray index now serves hard links of its own."""
    c = word_corpus(300)
    want = ranked(BM25(k=10).fit(c).search(QUERIES), 5)
    assert want != ranked(BM25(k=10, k1=3.0, b=1.0).fit(c).search(QUERIES), 5)  # the two indexes rank apart
    x = tmp_path / "x"
    Sharded(retriever={"bm25": {}}, n_shards=3, k=10, backend="ray").fit(c).save(x)
    before = Operator.load(x)  # its actors start at its first search, after the next save
    searched = Operator.load(x)
    assert ranked(searched.search(QUERIES), 5) == want
    Sharded(retriever={"bm25": {"k1": 3.0, "b": 1.0}}, n_shards=3, k=10, backend="ray").fit(c).save(x)
    assert ranked(before.search(QUERIES), 5) == want
    local_ray.kill(searched._actors[0], no_restart=False)  # a crash Ray restarts: the actor loads its shards again
    time.sleep(1)
    assert ranked(searched.search(QUERIES), 5) == want
    assert Operator.load(x).params.retriever == {"bm25": {"k1": 3.0, "b": 1.0}}  # (the folder holds the new one)


# ---------------------------------------------------------------- 2. a shard's ragkit error is raised as itself
def test_a_bad_filter_on_ray_is_the_local_data_error_and_keeps_the_actors(local_ray):
    """A filter the metadata cannot answer was a ShardError wrapping the DataError (a local search raises the
    DataError) and stopped every actor (the next search started them all again).  It is refused as the same
    DataError now, before any actor searches, and one a shard's own documents refuse comes back as the
    DataError a local search raises; the actors stay."""
    n = 300
    c = word_corpus(n, year=[2000 + i % 5 for i in range(n)],
                tag=[i for i in range(n // 2)] + [f"t{i}" for i in range(n // 2)])  # ints in shard 0, strings after
    local = Sharded(retriever={"bm25": {}}, n_shards=2, k=10, backend="local").fit(c)
    sh = Sharded(retriever={"bm25": {}}, n_shards=2, k=10, backend="ray").fit(c)
    ref = ranked(sh.search(QUERIES), 5)
    actors = sh._actors
    for bad in ({"year": "2001"}, {"tag": "t3"}):
        with pytest.raises(DataError) as at_home:
            local.search(QUERIES, filter=bad)
        with pytest.raises(DataError) as on_ray:
            sh.search(QUERIES, filter=bad)
        assert not isinstance(on_ray.value, ShardError)
        assert str(on_ray.value) == str(at_home.value)
        assert sh._actors is actors
    assert ranked(sh.search(QUERIES), 5) == ref and sh._actors is actors
    year = {"year": 2001}
    assert ranked(sh.search(QUERIES, filter=year), 5) == ranked(local.search(QUERIES, filter=year), 5)


# ---------------------------------------------------------------- 3. at most one actor per CPU
def test_shards_share_actors_one_per_cpu_at_most(local_ray, tmp_path):
    """Each shard was an actor of its own (24 shards on 2 CPUs: 28 worker processes, 4 GiB, 16 s to a first
    search).  The shards are served by at most one actor per CPU of the cluster now, with the same rankings; a
    crashed actor serving several shards restarts over them all."""
    c = word_corpus(300)
    want = ranked(BM25(k=10).fit(c).search(QUERIES), 5)
    sh = Sharded(retriever={"bm25": {}}, n_shards=7, k=10, backend="ray").fit(c)
    assert ranked(sh.search(QUERIES), 5) == want
    assert len(sh._actors) == 2
    actors = sh._actors
    local_ray.kill(actors[1], no_restart=False)
    time.sleep(1)
    assert ranked(sh.search(QUERIES), 5) == want and sh._actors is actors
    sh.save(tmp_path / "s")
    loaded = Operator.load(tmp_path / "s")
    assert ranked(loaded.search(QUERIES), 5) == want and len(loaded._actors) == 2


# ---------------------------------------------------------------- 4. a failure that was not retried
def _shard_0_fails(node, corpus, folder):  # noqa: ANN001, ANN202
    """A Ray task (pickled by value): shard 0 raises a ValueError, which Ray does not retry."""
    from ragkit.scale import _fit_shard

    if folder.endswith("shard-000"):
        raise ValueError("bad shard")
    return _fit_shard(node, corpus, folder)


def test_a_shard_error_that_was_not_retried_does_not_say_it_was(local_ray, monkeypatch):
    """A shard failing on a ValueError (never retried) said 'failed to build (after up to 3 retries of a crashed
    worker or an OS / memory error)'; retries are said only for what Ray retries now."""
    from ray import cloudpickle

    from ragkit.scale import _retried

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(scale, "_fit_shard", _shard_0_fails)
    try:
        with pytest.raises(ShardError) as err:
            Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend="ray").fit(word_corpus(60))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert str(err.value) == "sharded: shard 0 (documents 0..29) failed to build: ValueError: bad shard"
    from ray.exceptions import WorkerCrashedError

    assert "after up to 3 retries" in _retried(3, WorkerCrashedError())


# ---------------------------------------------------------------- 5. shards.json out of step with the folders
def test_shards_json_out_of_step_with_the_shard_folders_is_named(tmp_path):
    """shards.json's bounds changed after the save (verify=False) were reported as 'load(corpus=...) was given
    150 documents', though no corpus was given: the error names shards.json's bounds now."""
    c = word_corpus(300)
    Sharded(retriever={"bm25": {}}, n_shards=3, k=10, backend="local").fit(c).save(tmp_path / "s")
    bounds_file = tmp_path / "s" / "shards.json"
    for bounds, says in (([0, 150, 200, 300], r"its bounds give shard 0 the documents 0\.\.149 \(150\), but "
                                              r"shard-000 was fitted on 100 documents"),
                         ([0, 150, 300], r"bounds \[0, 150, 300\] do not split the 300 documents into 3 shards"),
                         ([0, 100, 200, 280], r"do not split the 300 documents")):
        bounds_file.write_text(json.dumps({"bounds": bounds}))
        with pytest.raises(ArtifactError, match=r"shards\.json: .*" + says) as err:
            Operator.load(tmp_path / "s", verify=False)
        assert "load(corpus=...)" not in str(err.value)
