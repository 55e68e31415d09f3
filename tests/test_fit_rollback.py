"""A fit that fails leaves the whole pipeline as it was (review 1), and every node of a tree a RagkitRetriever edits
shares its lock (review 2).  Model-free (BM25, a hashed encoder)."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections import Counter
from typing import Any, Iterator

import pytest
from conftest import HashedEncoder, race
from langchain_core.documents import Document

import ragkit.operator as operator_module
import ragkit.pipelines._compose as compose_module
from ragkit import _locks
from ragkit._locks import ReadWriteLock, guarded
from ragkit.encoders.custom import register_encoder
from ragkit.filters import TopK
from ragkit.integrations.langchain import RagkitRetriever
from ragkit.operator import Operator
from ragkit.pipelines import RRF, Loop, Parallel, Pipeline
from ragkit.pipelines.judges import MaxOnly
from ragkit.retrievers import BM25, Dense
from ragkit.types import Corpus

HASHED = "fit-rollback-hashed"
register_encoder(HASHED, HashedEncoder(f"{HASHED}-v1", 16), replace=True)

A = Corpus.from_records([{"_id": f"a{i}", "text": f"apple banana word{i} cherry"} for i in range(20)])
B = Corpus.from_records([{"_id": f"b{i}", "text": f"kiwi mango word{i} lemon"} for i in range(30)])


def _corpus(n: int = 60) -> Corpus:
    words = ["cancer", "cells", "vitamin", "protein", "gene", "brain", "heart", "virus", "immune", "blood"]
    return Corpus.from_texts([f"{words[i % 10]} {words[(i * 3) % 10]} study w{i}" for i in range(n)],
                             ids=[f"d{i}" for i in range(n)])


def tree_nodes(root: Operator) -> list[Operator]:
    """Every node of ``root``'s tree, depth first, each once (as ragkit.operator.tree_nodes lists them)."""
    nodes: list[Operator] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if all(node is not seen for seen in nodes):
            nodes.append(node)
            stack.extend(reversed(node.children()))
    return nodes


# ------------------------------------------------------------------ 1. a failing fit restores the whole tree
def _failing_in(monkeypatch: pytest.MonkeyPatch, victim: Operator, error: BaseException) -> None:
    """``victim``'s ``_fit`` raises ``error``; every other BM25 fits as usual."""
    fit = BM25._fit

    def boom(self: BM25, corpus: Corpus, train: Any, upstream: Any) -> None:
        if self is victim:
            raise error
        fit(self, corpus, train, upstream)

    monkeypatch.setattr(BM25, "_fit", boom)


def _attrs(root: Operator) -> list[tuple[Operator, dict[str, Any]]]:
    return [(node, dict(vars(node))) for node in tree_nodes(root)]


def _same(before: list[tuple[Operator, dict[str, Any]]]) -> None:
    """Every node holds exactly the attribute objects it held (the same references: nothing copied)."""
    for node, attrs in before:
        assert vars(node).keys() == attrs.keys(), node
        assert all(vars(node)[k] is v for k, v in attrs.items()), node


@pytest.mark.parametrize("error", [KeyboardInterrupt("Ctrl-C in branch 2"), RuntimeError("disk full")])
def test_refit_failing_in_the_second_branch_restores_every_node(monkeypatch: pytest.MonkeyPatch,
                                                                 error: BaseException) -> None:
    """(BM25 + BM25) | RRF fitted on A, refitted on B, raising in branch 2's fit: the exception propagates as it
    was raised, and every node holds its fit on A (was: branch 1 on B, branch 2 and pipe.corpus_ on A, every
    search a DataError 'an add or remove on one of them alone?')."""
    b1, b2 = BM25(k=5), BM25(k=5, k1=1.2)
    pipe = (b1 + b2) | RRF(k=60)
    pipe.fit(A)
    expected = pipe.search(["apple word3"], k=5)
    before = _attrs(pipe)
    _failing_in(monkeypatch, b2, error)
    with pytest.raises(type(error)) as raised:
        pipe.fit(B)
    assert raised.value is error
    _same(before)
    assert pipe.corpus_ is A and b1.corpus_ is A and b2.corpus_ is A
    run = pipe.search(["apple word3"], k=5)
    assert [list(d) for d in run.doc_ids] == [list(d) for d in expected.doc_ids]


def test_first_fit_failing_leaves_every_node_unfitted(monkeypatch: pytest.MonkeyPatch) -> None:
    b1, b2 = BM25(k=5), BM25(k=5)
    pipe = Pipeline([Parallel([[b1, TopK(k=3)], b2]), TopK(k=2)])
    before = _attrs(pipe)
    _failing_in(monkeypatch, b2, ValueError("bad"))
    with pytest.raises(ValueError, match="bad"):
        pipe.fit(A)
    _same(before)
    assert not b1.is_fitted and not hasattr(pipe, "corpus_")


def test_composite_fitted_alone_restores_its_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Parallel (and a Loop around it) fitted on its own, not through a Pipeline, restores its tree too."""
    b1, b2 = BM25(k=5), BM25(k=5)
    par = b1 + b2
    loop = Loop(Pipeline([BM25(k=5), TopK(k=3)]), until=MaxOnly(), max_iters=2)
    par.fit(A)
    loop.fit(A)
    before = _attrs(par) + _attrs(loop)
    _failing_in(monkeypatch, b2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        par.fit(B)
    loop_leaf = loop.body.steps[0]  # type: ignore[attr-defined]
    _failing_in(monkeypatch, loop_leaf, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        loop.fit(B)
    _same(before)


def test_the_tree_is_snapshotted_once_at_the_top(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nested fits (the pipeline's of its Parallel, the Parallel's of its branches and leaves) take no snapshot of
    their own: one, of every node, by the outermost fit."""
    snapshots: list[list[int]] = []
    real = operator_module.restored_on_failure

    def spy(ops: list[Operator]) -> Any:
        held = operator_module._RESTORING.get()
        taken = [id(op) for op in ops if id(op) not in held]
        if taken:
            snapshots.append(taken)
        return real(ops)

    monkeypatch.setattr(operator_module, "restored_on_failure", spy)
    monkeypatch.setattr(compose_module, "restored_on_failure", spy)
    pipe = Pipeline([Parallel([[BM25(k=5), TopK(k=3)], BM25(k=5)]), TopK(k=2)])
    pipe.fit(A)
    assert snapshots == [[id(node) for node in tree_nodes(pipe)]]
    assert not operator_module._RESTORING.get()
    snapshots.clear()
    leaf = BM25(k=5)
    leaf.fit(A)  # a leaf fitted alone snapshots itself, as before
    assert snapshots == [[id(leaf)]]


def test_a_successful_fit_is_unchanged() -> None:
    """Same rankings as a pipeline fitted without any snapshot: a fresh fit of the same steps."""
    pipe = (BM25(k=10) + BM25(k=10, k1=1.2)) | RRF(k=60)
    pipe.fit(A)
    pipe.fit(B)
    fresh = ((BM25(k=10) + BM25(k=10, k1=1.2)) | RRF(k=60)).fit(B)
    queries = ["kiwi word3", "mango lemon", "word7"]
    got, want = pipe.search(queries, k=10), fresh.search(queries, k=10)
    assert [list(d) for d in got.doc_ids] == [list(d) for d in want.doc_ids]
    assert all((a.scores == b.scores).all() for a, b in zip(got.rankings, want.rankings))


# ------------------------------------------------------------------ 2. every node of an edited tree shares its lock
def _edits(r: RagkitRetriever, rounds: int, stop: threading.Event) -> None:
    try:
        for i in range(rounds):
            r.add_documents([Document(page_content=f"zqxjv{i} marker{i}")], ids=[f"new{i}"])
            r.delete([f"new{i}"])
    finally:
        stop.set()


def _hybrid() -> Pipeline:
    return Pipeline([BM25(k=10) + Dense(model=HASHED, k=10), RRF()])


def test_every_node_of_the_edited_tree_maps_to_the_retrievers_lock() -> None:
    r = RagkitRetriever(pipeline=_hybrid(), corpus=_corpus(), k=5)
    nodes = tree_nodes(r.pipeline)
    assert len(nodes) == 5  # the pipeline, the parallel, its branches (bm25, dense) and fuser (the RRF step folded in)
    assert all(_locks._LOCKS[id(node)] is r._lock for node in nodes)


def test_inner_step_search_during_retriever_edits_never_fails() -> None:
    """pipe.steps[0].search (the inner Parallel) and a leaf's search from 2 threads during 40 add / delete rounds
    through a RagkitRetriever: every search answers (was: DataErrors, and a bare ValueError from np.bincount in
    the fuser: their lookup found no lock for an inner node)."""
    r = RagkitRetriever(pipeline=_hybrid(), corpus=_corpus(), k=5)
    pipe, stop, outcomes = r.pipeline, threading.Event(), Counter()
    inner = pipe.steps[0]
    leaf = inner.children()[1]  # the Dense branch

    def reader(op: Operator) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                op.search([f"zqxjv{i % 40} marker{i % 40}"], k=3)
                outcomes["ok"] += 1
            except Exception as e:  # noqa: BLE001 - counted: none expected
                outcomes[f"{type(e).__name__}: {e}"[:120]] += 1

    race([threading.Thread(target=reader, args=(inner,)), threading.Thread(target=reader, args=(leaf,)),
          threading.Thread(target=_edits, args=(r, 40, stop))], join_s=120)
    assert set(outcomes) == {"ok"}, outcomes


def test_inner_search_inside_a_held_read_does_not_deadlock_with_a_waiting_edit() -> None:
    """A thread holding the pipeline's lock to read searches a step (which takes the same lock again) while an
    edit waits for it: it proceeds, and the edit runs after."""
    r = RagkitRetriever(pipeline=_hybrid(), corpus=_corpus(), k=5)
    lock, done = r._lock, threading.Event()

    def edit() -> None:
        r.add_documents([Document(page_content="late doc")], ids=["late"])

    def reader() -> None:
        with lock.reading():
            w = threading.Thread(target=edit)
            w.start()
            while not lock._writers_waiting:
                time.sleep(0.001)
            r.pipeline.steps[0].search(["cancer"], k=3)
            done.set()
        w.join(10)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(20)
    assert done.is_set() and "late" in set(r.pipeline.search(["late doc"], k=100).doc_ids[0])


def test_a_step_put_in_later_gets_the_lock_at_the_next_edit() -> None:
    r = RagkitRetriever(pipeline=Pipeline([BM25(k=10), TopK(k=5)]), corpus=_corpus(), k=5)
    new = TopK(k=3)
    r.pipeline.steps[1] = new
    assert id(new) not in _locks._LOCKS  # documented: not before the retriever's next edit
    r.add_documents([Document(page_content="x y")], ids=["x"])
    assert _locks._LOCKS[id(new)] is r._lock


def test_the_lock_map_is_weak() -> None:
    """Dropping the retriever and its pipeline drops every node's entry (no leak)."""
    r = RagkitRetriever(pipeline=_hybrid(), corpus=_corpus(), k=5)
    refs = [weakref.ref(node) for node in tree_nodes(r.pipeline)]
    ids = [id(node) for node in tree_nodes(r.pipeline)]
    del r
    gc.collect()
    assert all(ref() is None for ref in refs)
    assert not set(ids) & set(_locks._LOCKS)


def test_a_tree_joining_two_locked_trees_merges_their_locks() -> None:
    """Two retrievers over one operator each, then a third over a pipeline of both: one lock for all of them (each
    earlier lock forwards to it), so an edit through either excludes searches of every node."""
    corpus = _corpus()
    bm25, dense = BM25(k=10).fit(corpus), Dense(model=HASHED, k=10).fit(corpus)
    r1, r2 = RagkitRetriever(pipeline=bm25, k=5), RagkitRetriever(pipeline=dense, k=5)
    assert r1._lock is not r2._lock
    r3 = RagkitRetriever(pipeline=Pipeline([bm25 + dense, RRF()]), k=5)
    assert r1._lock.final() is r2._lock.final() is r3._lock.final()
    entered = threading.Event()

    def search_bm25() -> None:
        with guarded(bm25):
            entered.set()

    with r2._lock.writing():  # an edit through the dense retriever's (merged) lock
        t = threading.Thread(target=search_bm25)
        t.start()
        assert not entered.wait(0.2)
    t.join(5)
    assert entered.is_set()


def test_a_reader_waiting_on_a_lock_being_merged_moves_to_the_merged_lock() -> None:
    """A reader waiting for an edit of lock b when b is merged into a takes a's read side, not b's."""
    a, b = ReadWriteLock(), ReadWriteLock()
    inside: list[tuple[int, int]] = []
    edit_held, release = threading.Event(), threading.Event()

    def editor() -> None:
        with b.writing():
            edit_held.set()
            release.wait(5)

    def reader() -> None:
        with b.reading():
            inside.append((a._readers, b._readers))

    e = threading.Thread(target=editor)
    e.start()
    edit_held.wait(5)
    rd = threading.Thread(target=reader)
    rd.start()
    m = threading.Thread(target=_locks._merge, args=([a, b],))
    m.start()
    deadline = time.monotonic() + 5  # both wait on b before the edit ends (a fixed sleep lost the race under load)
    while not (b._readers_waiting and b._writers_waiting) and time.monotonic() < deadline:
        time.sleep(0.005)
    release.set()
    for t in (e, rd, m):
        t.join(5)
    assert b._into is a and inside == [(1, 0)]
    assert a._readers == 0 and not a._held and a._writer is None


@pytest.fixture(autouse=True)
def _no_restoring_left() -> Iterator[None]:
    yield
    assert not getattr(operator_module, "_RESTORING", None) or not operator_module._RESTORING.get()


def test_a_failed_refit_keeps_a_sharded_retrievers_earlier_shard_folder(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Any) -> None:
    """Sharded's fit removed its earlier shard folder (and stopped its Ray actors) as soon as its own fit was
    done; a pipeline whose later step then failed put back the earlier state, pointing at the deleted folder (on
    Ray: dead actors, "ShardError ... The actor died"). The earlier resources go once the whole fit succeeded."""
    from pathlib import Path

    from ragkit.scale import Sharded

    sharded = Sharded(retriever={"bm25": {"k": 5}}, n_shards=2, k=5, backend="local", workdir=str(tmp_path))
    other = BM25(k=5)
    pipe = (sharded + other) | RRF(k=60)
    pipe.fit(A)
    first = Path(sharded._dir.name)
    expected = pipe.search(["apple word3"], k=5)
    _failing_in(monkeypatch, other, RuntimeError("disk full"))
    with pytest.raises(RuntimeError, match="disk full"):
        pipe.fit(B)
    assert sharded._dir.name == str(first) and first.is_dir() and all(Path(f).is_dir() for f in sharded.folders_)
    assert [list(d) for d in pipe.search(["apple word3"], k=5).doc_ids] == [list(d) for d in expected.doc_ids]
    monkeypatch.undo()
    pipe.fit(B)  # succeeds: now the earlier folder goes
    assert not first.exists() and Path(sharded._dir.name).is_dir()



def test_after_fit_releases_run_once_the_outermost_fit_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    ran: list[str] = []
    operator_module.after_fit(lambda: ran.append("no fit: at once"))
    with pytest.raises(RuntimeError, match="boom"):
        with operator_module.restored_on_failure([BM25()]):
            operator_module.after_fit(lambda: ran.append("failed: never"))
            raise RuntimeError("boom")
    outer, inner = BM25(), BM25()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        with operator_module.restored_on_failure([outer]):
            with operator_module.restored_on_failure([inner]):
                operator_module.after_fit(lambda: ran.append("inner, at the outer's end"))
            assert ran == ["no fit: at once"]
            operator_module.after_fit(lambda: 1 / 0)  # a release that fails: said, the fit stands
    assert ran == ["no fit: at once", "inner, at the outer's end"]
    assert any("releasing the earlier fit's resources failed (ZeroDivisionError" in r.getMessage()
               for r in caplog.records)
