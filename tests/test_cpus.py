""""All cores" (``n_jobs`` / ``threads`` given as 0 or -1) is the CPUs this process may use (its affinity mask: a
container's CPU set, ``taskset``, a pinned Ray worker), not the machine's :func:`os.cpu_count`; and a shard task's
submission to Ray that fails for a reason other than pickling its documents propagates as it was, not as
"its documents could not be sent"."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from conftest import word_corpus

from ragkit._cpus import thread_count, usable_cpus
from ragkit.errors import ParamError
from ragkit.retrievers import BM25, Dense, KnnEmbed

MACHINE, USABLE = 64, 3  # a 64-CPU machine of which this process may use 3


@pytest.fixture
def few_cpus(monkeypatch: pytest.MonkeyPatch) -> int:
    """The machine has ``MACHINE`` CPUs and this process may run on ``USABLE`` of them."""
    monkeypatch.setattr(os, "cpu_count", lambda: MACHINE)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(USABLE)), raising=False)
    if hasattr(os, "process_cpu_count"):  # (Python 3.13+)
        monkeypatch.setattr(os, "process_cpu_count", lambda: USABLE)
    return USABLE


# ---------------------------------------------------------------- usable_cpus
def test_usable_cpus_counts_the_affinity_mask_not_the_machine(few_cpus):
    assert usable_cpus() == USABLE


def test_usable_cpus_prefers_process_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "process_cpu_count", lambda: 5, raising=False)  # (added on Python < 3.13)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert usable_cpus() == 5


def test_usable_cpus_falls_back_to_cpu_count_then_1(monkeypatch):
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cpus() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # (undeterminable)
    assert usable_cpus() == 1


def test_usable_cpus_is_at_least_1(monkeypatch):
    monkeypatch.setattr(os, "process_cpu_count", lambda: None, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cpus() == 1


def test_usable_cpus_on_this_machine_is_within_its_cpus():
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)


@pytest.mark.parametrize("n, expected", [(0, USABLE), (-1, USABLE), (1, 1), (2, 2), (MACHINE * 2, MACHINE * 2)])
def test_thread_count_is_the_usable_cpus_for_0_and_minus_1_else_as_given(n, expected, few_cpus):
    assert thread_count(n) == expected


# ---------------------------------------------------------------- each operator's 0 / -1
@pytest.mark.parametrize("n_jobs", [0, -1])
def test_bm25_n_jobs_all_cores_is_the_usable_cpus(n_jobs, few_cpus, monkeypatch):
    seen: list[int] = []
    search_index = BM25._search_index

    def spy(self, state, texts, k, drop, jobs, view):  # noqa: ANN001, ANN202
        seen.append(jobs)
        return search_index(self, state, texts, k, drop, jobs, view)

    corpus = word_corpus(30)
    one = BM25(k=5).fit(corpus).search(["w1 w2", "w3"])
    monkeypatch.setattr(BM25, "_search_index", spy)
    bm = BM25(k=5, n_jobs=n_jobs).fit(corpus)
    assert bm.params.n_jobs == n_jobs  # kept as written (BM25(n_jobs=0) was refused before 2026-12-06)
    run = bm.search(["w1 w2", "w3"])
    per_call = BM25(k=5).fit(corpus).search(["w1 w2", "w3"], bm25={"n_jobs": n_jobs})  # (the per-call option)
    BM25(k=5, n_jobs=2).fit(corpus).search(["w1 w2"])  # (a count given stays as given)
    assert seen == [USABLE, USABLE, 2]
    assert all(a.equals(b) and a.equals(c) for a, b, c in zip(one.rankings, run.rankings, per_call.rankings))


@pytest.mark.parametrize("threads", [0, -1])
def test_knn_embed_fit_threads_all_cores_is_the_usable_cpus(threads, few_cpus, monkeypatch):
    import threadpoolctl

    limits: list[object] = []
    real = threadpoolctl.threadpool_limits

    def spy(limits_arg=None, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        limits.append(limits_arg)
        return real(limits_arg, *a, **kw)

    monkeypatch.setattr(threadpoolctl, "threadpool_limits", spy)
    vecs = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    for value, expected in ((threads, USABLE), (None, None), (2, 2)):  # (None: the library's own default)
        KnnEmbed(k=5, n_clusters=4, fit_threads=value).fit_vectors(word_corpus(40), vecs)
        assert limits[-1] == expected, (value, limits)
    with pytest.raises(ParamError, match="fit_threads"):
        KnnEmbed(fit_threads=-2)


@pytest.mark.parametrize("threads", [0, -1])
def test_dense_threads_all_cores_is_the_usable_cpus(threads, few_cpus, monkeypatch):
    """usearch's own 0 is the machine's CPUs: ragkit passes it the count, at each add and search (a saved index
    keeps 0, so that it counts again where it is loaded)."""
    from usearch.index import Index

    calls: list[tuple[str, object]] = []
    for name in ("add", "search"):
        real = getattr(Index, name)

        def spy(self, *a, _name=name, _real=real, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
            calls.append((_name, kw.get("threads")))
            return _real(self, *a, **kw)

        monkeypatch.setattr(Index, name, spy)
    index = Dense(threads=threads, search="hnsw")._new_index()
    assert index.threads == 0 and index.config()["threads"] == 0
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    index.build(x)
    index.add(x[:4] + 0.5)
    index.search(x[:3], 5)
    assert {name for name, _ in calls} == {"add", "search"}, calls
    assert all(t == USABLE for _, t in calls), calls
    calls.clear()
    Dense(threads=2, search="hnsw")._new_index().build(x).search(x[:3], 5)
    assert calls and all(t == 2 for _, t in calls), calls


@pytest.mark.parametrize("op, field", [(BM25, "n_jobs"), (Dense, "threads"), (KnnEmbed, "fit_threads")])
def test_each_all_cores_description_says_the_cpus_this_process_may_use(op, field):
    text = " ".join((op.Params.model_fields[field].description or "").split())
    assert "0 or -1 = all cores (the CPUs this process may use)" in text, text


# ---------------------------------------------------------------- a Ray submission failing for another reason
@pytest.mark.timeout(180)
@pytest.mark.parametrize("error", [RuntimeError("Ray is not running"), TypeError("a bug: 'NoneType' is not callable"),
                                   AttributeError("a bug: no attribute 'x'"), pickle.PicklingError("elsewhere")])
def test_a_submission_failing_for_another_reason_propagates_as_it_was(error, local_ray, tmp_path, monkeypatch):
    """A shard task's ``task.remote`` failing while its arguments pickle was reported as "its documents could not
    be sent to a Ray worker ... expected metadata values of JSON types"; it now propagates as it was raised."""
    from ray.remote_function import RemoteFunction

    from ragkit.scale import Sharded

    def fail(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise error

    monkeypatch.setattr(RemoteFunction, "_remote", fail)
    wd = tmp_path / "wd"
    with pytest.raises(type(error)) as got:
        Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend="ray", workdir=str(wd)).fit(word_corpus(40))
    assert got.value is error


@pytest.mark.timeout(180)
def test_metadata_whose_pickling_fails_is_still_the_shard_error(local_ray, tmp_path):
    """A metadata value whose pickling raises PicklingError (which Ray's submission lets through unwrapped) is the
    shard's ShardError naming the document and field, as a lock's TypeError is (tests/test_ray_stop55.py)."""
    from ragkit.scale import Sharded, ShardError

    class Unpicklable:
        def __reduce__(self):  # noqa: ANN204
            raise pickle.PicklingError("no")

    with pytest.raises(ShardError) as got:
        Sharded(retriever={"bm25": {}}, n_shards=2, k=5, backend="ray",
                workdir=str(tmp_path / "wd")).fit(word_corpus(40, obj=[Unpicklable()] * 40))
    text = str(got.value)
    assert "shard 0 (documents 0..19) failed to build" in text and "document 'd0'" in text, text
    assert "'obj'" in text, text


