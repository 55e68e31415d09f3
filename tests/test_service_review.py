"""Serving saved pipelines from a threaded service (review): saves during edits, searches of the wrapped pipeline
during edits, the read lock taken again, non-UTF-8 queries, loads during a save by another process, the start-up
import of a search, and filters given as strings.  Model-free (BM25, a hashed encoder)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from conftest import HashedEncoder, race
from langchain_core.documents import Document

from ragkit._files import folder_lock
from ragkit._locks import ReadWriteLock, guarded, lock_of
from ragkit.encoders.custom import register_encoder
from ragkit.encoders.sentence import as_texts, blank_texts
from ragkit.errors import ArtifactError, DataError
from ragkit.integrations.langchain import RagkitRetriever
from ragkit.operator import Operator
from ragkit.pipelines import RRF, Pipeline, store as store_module
from ragkit.retrievers import BM25, Dense
from ragkit.types import Corpus, Queries

HASHED = "service-review-hashed"
register_encoder(HASHED, HashedEncoder(f"{HASHED}-v1", 16), replace=True)

#: a query as Python decodes a non-UTF-8 command line argument (errors="surrogateescape")
SURROGATE_QUERY = b"caf\xe9 cancer".decode("utf-8", "surrogateescape")


def _corpus(n: int = 60) -> Corpus:
    words = ["cancer", "cells", "vitamin", "protein", "gene", "brain", "heart", "virus", "immune", "blood"]
    return Corpus.from_records([
        {"_id": f"d{i}", "title": f"title {i}", "text": f"{words[i % 10]} {words[(i * 3) % 10]} study number w{i}",
         "metadata": {"year": 2000 + i % 5, "group": "abc"[i % 3]}} for i in range(n)])


def _edits(r: RagkitRetriever, rounds: int, stop: threading.Event, after: threading.Event | None = None) -> None:
    """``rounds`` add / delete rounds through ``r``, then ``stop`` set; once ``after`` is set, where given (the
    other side's first call done: the two surely overlap, however the threads are scheduled)."""
    try:
        if after is not None:
            after.wait(60)
        for i in range(rounds):
            r.add_documents([Document(page_content=f"zqxjv{i} new words{i} marker{i}")], ids=[f"new{i}"])
            r.delete([f"new{i}"])
    finally:
        stop.set()


# ------------------------------------------------------------------ 1. saves during edits
@pytest.mark.parametrize("hybrid", [False, True])
def test_retriever_save_during_edits_leaves_loadable_folders(tmp_path: Path, hybrid: bool) -> None:
    """RagkitRetriever.save while another thread adds / deletes: every save succeeds and every folder loads
    (was: BM25's folders refused to load, "fitted on a corpus of 501 documents ... other ids"; hybrid saves
    failed 644 of 684 times)."""
    op = (Pipeline([BM25(k=20) + Dense(model=HASHED, k=20), RRF()]) if hybrid else BM25(k=20))
    r = RagkitRetriever(pipeline=op, corpus=_corpus(), k=5)
    stop, outcomes, saved_once = threading.Event(), Counter(), threading.Event()

    def saver() -> None:
        j = 0
        while not stop.is_set():
            try:
                r.save(tmp_path / f"s{j % 3}")
                outcomes["ok"] += 1
            except Exception as e:  # noqa: BLE001 - counted
                outcomes[f"{type(e).__name__}: {e}"[:160]] += 1
            j += 1
            saved_once.set()

    race([threading.Thread(target=_edits, args=(r, 40, stop, saved_once)), threading.Thread(target=saver)])
    assert set(outcomes) == {"ok"}, outcomes
    for j in range(min(3, outcomes["ok"])):
        back = RagkitRetriever.load(tmp_path / f"s{j}")
        assert len(back.invoke("cancer")) == 5


def test_save_pipeline_refuses_a_step_edited_while_saving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step whose documents change while the pipeline is written (an add right after its files): the save is
    refused with a DataError before it replaces the earlier save, which still loads as it was."""
    bm = BM25().fit(_corpus())
    pipe = Pipeline([bm])
    pipe.save(tmp_path / "idx")
    real = BM25.save_into

    def edited_after(self: BM25, folder: Path, with_corpus: bool) -> None:
        real(self, folder, with_corpus)
        self.add(Corpus.from_texts(["a document added during the save"], ids=["late"]))

    monkeypatch.setattr(BM25, "save_into", edited_after)
    with pytest.raises(DataError, match="changed while the pipeline was being written"):
        pipe.save(tmp_path / "idx")
    monkeypatch.undo()
    back = Operator.load(tmp_path / "idx")
    assert len(back.corpus_) == 60 and not list(tmp_path.glob(".idx.tmp-*"))


# ------------------------------------------------------------------ 2. the wrapped pipeline searched directly
def test_bm25_search_during_an_edit_is_a_data_error() -> None:
    """A BM25 search whose query was counted before an add grew the vocabulary: a DataError saying the index
    was edited during the search (was: ValueError "matmul: dimension mismatch")."""
    bm = BM25().fit(_corpus())
    q = bm.query_matrix(["cancer zqxjv"])
    bm.add(Corpus.from_texts(["zqxjv brand new words"], ids=["new"]))
    bm.remove(["d0"])  # (vocabulary and documents both changed)
    bm.add(Corpus.from_texts(["more unseen terms here"], ids=["new2"]))
    with pytest.raises(DataError, match="edited .* during the search"):
        bm._topk(q, 5, None)


def test_pipe_search_during_retriever_edits_fails_only_with_data_error() -> None:
    """pipe.search on the pipeline a retriever edits, from 3 threads during 60 add / delete rounds: any failure is
    BM25's DataError (was: 3,337 of 6,004 raised ValueError: matmul: dimension mismatch), and searches holding
    the pipeline's lock (ragkit._locks.lock_of) never fail."""
    r = RagkitRetriever(pipeline=BM25(k=10), corpus=_corpus(), k=5)
    pipe, stop, outcomes, locked_once = r.pipeline, threading.Event(), Counter(), threading.Event()

    def reader(t: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if t == 0:
                    with lock_of(pipe).reading():
                        pipe.search([f"zqxjv{i % 60} marker"], k=3)
                    outcomes["locked ok"] += 1
                    locked_once.set()
                else:
                    pipe.search([f"zqxjv{i % 60} marker"], k=3)
                    outcomes["ok"] += 1
            except DataError as e:
                outcomes["locked DataError" if t == 0 else "DataError"] += 1
                assert "edited" in str(e) or "documents changed" in str(e), e
            except Exception as e:  # noqa: BLE001 - counted: none expected
                outcomes[f"{type(e).__name__}: {e}"[:120]] += 1

    race([*(threading.Thread(target=reader, args=(t,)) for t in range(3)),
           threading.Thread(target=_edits, args=(r, 60, stop, locked_once))])
    assert set(outcomes) <= {"ok", "DataError", "locked ok"}, outcomes
    assert outcomes["locked ok"] > 0


def test_pipe_search_waits_for_retriever_edits() -> None:
    """With Pipeline.search taking the pipeline's lock, pipe.search never fails during edits made through a
    retriever (nor deadlocks: the retriever's own search holds the lock around it)."""
    r = RagkitRetriever(pipeline=Pipeline([BM25(k=10)]), corpus=_corpus(), k=5)
    pipe, stop, outcomes = r.pipeline, threading.Event(), Counter()

    def reader(t: int) -> None:
        while not stop.is_set():
            try:
                pipe.search(["zqxjv3 marker"], k=3) if t else r.invoke("zqxjv3 marker")
                outcomes["ok"] += 1
            except Exception as e:  # noqa: BLE001 - counted
                outcomes[type(e).__name__] += 1

    race([*(threading.Thread(target=reader, args=(t,)) for t in range(3)),
           threading.Thread(target=_edits, args=(r, 40, stop))])
    assert set(outcomes) == {"ok"}, outcomes


def test_read_lock_taken_again_with_a_writer_waiting_does_not_deadlock() -> None:
    """A thread reading takes the read side again while a writer waits (RagkitRetriever._search holding the lock
    around a pipeline.search that takes it too): it proceeds (was: a deadlock), and the writer runs after."""
    lock, order = ReadWriteLock(), []
    inner_done = threading.Event()

    def writer() -> None:
        with lock.writing():
            order.append("write")

    def reader() -> None:
        with lock.reading():
            w = threading.Thread(target=writer)
            w.start()
            while not lock._writers_waiting:  # the writer now waits for this reader
                time.sleep(0.001)
            with lock.reading():
                order.append("inner read")
            inner_done.set()
        w.join(30)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(30)
    assert inner_done.is_set() and order == ["inner read", "write"]


def test_rw_lock_writer_may_read_and_reader_may_not_write() -> None:
    lock = ReadWriteLock()
    with lock.writing():
        with lock.reading():  # the writer reads what it holds alone
            with lock.writing():
                pass
    with lock.reading():
        with pytest.raises(RuntimeError, match="wait for itself"):
            with lock.writing():
                pass
    with lock.writing():  # released cleanly: a new writer gets it
        pass
    assert lock._readers == 0 and lock._writer is None and not lock._held


def test_guarded_makes_no_lock_for_an_unwrapped_pipeline() -> None:
    from ragkit import _locks

    op = BM25()
    with guarded(op):
        assert id(op) not in _locks._LOCKS
    lock = lock_of(op)
    with guarded(op):
        assert lock._readers == 1


# ------------------------------------------------------------------ 3. non-UTF-8 query text
def test_query_with_a_lone_surrogate_is_a_data_error() -> None:
    """A query decoded with errors="surrogateescape" (non-UTF-8 argv): a DataError naming the query and the
    position, as a document's (was: BM25 searched it; dense / hybrid crashed in the tokenizer with TypeError)."""
    with pytest.raises(DataError, match=r"query\[1\] \(id 'b'\) holds a lone surrogate '\\udce9' at character 3"):
        Queries(["a", "b"], ["cancer", SURROGATE_QUERY])
    bm = BM25().fit(_corpus())
    with pytest.raises(DataError, match=r"query\[0\].*lone surrogate"):
        bm.search([SURROGATE_QUERY])
    r = RagkitRetriever(pipeline=bm, k=3)
    with pytest.raises(DataError, match="lone surrogate"):
        r.invoke(SURROGATE_QUERY)
    assert len(bm.search(["café cancer"]).doc_ids[0])  # real non-ASCII text is searched as before


def test_encoder_inputs_with_a_lone_surrogate_are_refused() -> None:
    with pytest.raises(DataError, match=r"encode_queries: text\[1\] holds a lone surrogate"):
        as_texts(["ok", SURROGATE_QUERY], "encode_queries")
    with pytest.raises(DataError, match=r"query\[0\] holds a lone surrogate"):
        blank_texts([SURROGATE_QUERY])
    assert as_texts(["café", "x"], "encode") == ["café", "x"]


# ------------------------------------------------------------------ 4. loads during a save by another process
def _two_saves(tmp_path: Path) -> tuple[Pipeline, Pipeline, Path]:
    """Two fitted pipelines (60 and 61 documents), the first saved in the folder returned."""
    a = Pipeline([BM25().fit(_corpus(60))])
    b = Pipeline([BM25().fit(_corpus(61))])
    folder = tmp_path / "shared"
    a.save(folder)
    return a, b, folder


def _without_flock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loads as where ``flock`` is missing (Windows, some network file systems): no shared lock for a save to
    wait for, the identity check alone.  (These tests save from inside a load on the same thread, standing in
    for another process; with the lock, that save would wait for the load to end.)"""

    @contextmanager
    def no_lock(path: Path, **_: object) -> Iterator[bool]:
        yield False

    monkeypatch.setattr(store_module, "folder_lock", no_lock)


def test_load_during_a_replacing_save_loads_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder replaced (saved again) while a load read it: the load notices (manifest.json's identity) and
    loads again, giving the new save whole (was: a mix of both, or "checksum mismatch" / "truncated")."""
    _without_flock(monkeypatch)
    _, b, folder = _two_saves(tmp_path)
    real, calls = store_module._load_pipeline, []

    def replaced_midway(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        out = real(*args, **kwargs)
        if not calls:
            b.save(folder)  # another process's save lands after this load read the old files
        calls.append(1)
        return out

    monkeypatch.setattr(store_module, "_load_pipeline", replaced_midway)
    pipe = Pipeline.load(folder)
    assert len(calls) == 2 and len(pipe.corpus_) == 61


def test_load_of_a_folder_replaced_every_time_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _without_flock(monkeypatch)
    a, b, folder = _two_saves(tmp_path)
    real, n = store_module._load_pipeline, [0]

    def always_replaced(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        n[0] += 1
        (a if n[0] % 2 else b).save(folder)
        raise ArtifactError(f"{folder}: checksum mismatch")

    monkeypatch.setattr(store_module, "_load_pipeline", always_replaced)
    with pytest.raises(ArtifactError, match="replaced .* during each of 5 tries .* retry") as e:
        Pipeline.load(folder)
    assert "checksum mismatch" in str(e.value) and n[0] == store_module.LOAD_TRIES
    monkeypatch.setattr(store_module, "_load_pipeline", real)
    assert len(Pipeline.load(folder).corpus_) in (60, 61)


def test_load_errors_of_an_unchanged_folder_are_raised_at_once(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Not retried: one load, no pause (a wall-clock bound here had 55 ms between 'at once' and 'retried')."""
    (tmp_path / "plain").mkdir()
    real, calls, pauses = store_module._load_pipeline, [], []

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "_load_pipeline", counted)
    monkeypatch.setattr(store_module.time, "sleep", pauses.append)
    with pytest.raises(ArtifactError, match="no manifest.json"):
        Pipeline.load(tmp_path / "plain")
    assert calls == [1] and pauses == []


def test_loads_while_another_thread_saves_never_fail(tmp_path: Path) -> None:
    """Loads in a loop while another thread re-saves the folder (two states, alternately) for ~1.5 s: every load
    succeeds, with one state's documents whole (was: ~25% failed with checksum / truncation errors)."""
    a, b, folder = _two_saves(tmp_path)
    stop, outcomes = threading.Event(), Counter()

    def saver() -> None:
        i = 0
        while not stop.is_set():
            (b if i % 2 else a).save(folder)
            i += 1

    t = threading.Thread(target=saver)
    t.start()
    try:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 1.5:
            try:
                p = Operator.load(folder)
                outcomes[f"ok {len(p.corpus_)}"] += 1
            except Exception as e:  # noqa: BLE001 - counted
                outcomes[f"{type(e).__name__}: {e}"[:160]] += 1
    finally:
        stop.set()
        t.join(30)
    assert set(outcomes) <= {"ok 60", "ok 61"}, outcomes


def test_a_save_waits_for_the_loads_of_the_folder_it_replaces(tmp_path: Path) -> None:
    """A load holds a shared flock on the folder; a save's swap waits for it, so no load reads two saves'
    files (CI once saw a load give up after 5 tries while another thread saved back to back)."""
    _, b, folder = _two_saves(tmp_path)
    with folder_lock(folder, exclusive=False) as held:
        assert held
        t = threading.Thread(target=b.save, args=(folder,))
        t.start()
        t.join(0.5)
        assert t.is_alive() and (folder / "corpus.jsonl").read_text().count("\n") == 60  # not swapped yet
    t.join(30)
    assert not t.is_alive() and len(Pipeline.load(folder).corpus_) == 61


def test_a_load_waiting_for_a_swap_locks_the_new_folder(tmp_path: Path) -> None:
    """A shared lock asked for while a save holds the exclusive one is taken on the folder at the path once
    the save is done (the new save), not on the replaced folder it opened."""
    a, b, folder = _two_saves(tmp_path)
    ino = folder.stat().st_ino
    got: list[int] = []
    with folder_lock(folder, exclusive=True):
        def load() -> None:
            with folder_lock(folder, exclusive=False):
                got.append(folder.stat().st_ino)

        t = threading.Thread(target=load)
        t.start()
        t.join(0.3)
        assert t.is_alive() and not got
        tmp = tmp_path / "elsewhere" / "next"  # (a save beside ``folder`` would wait for this lock's turnstile)
        b.save(tmp)
        os.rename(tmp, tmp_path / "old")
        os.rename(folder, tmp_path / "old2")
        os.rename(tmp_path / "old", folder)  # (a save's swap, done by hand under the exclusive lock)
    t.join(30)
    assert got == [folder.stat().st_ino] and got[0] != ino


def test_loads_back_to_back_do_not_keep_a_save_waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads loading in a loop always left a shared lock held, so a save's exclusive one never found a gap
    and waited its whole wait (60 s), then swapped under them: the folder's parent is now a turnstile."""
    import ragkit._files as files
    import ragkit._saves as saves_module

    monkeypatch.setattr(files, "FOLDER_LOCK_WAIT_S", 5.0)
    _, b, folder = _two_saves(tmp_path)
    held: list[bool] = []
    real = saves_module.folder_lock

    @contextmanager
    def recorded(path: Path, **kw: object) -> Iterator[bool]:
        with real(path, **kw) as h:  # type: ignore[arg-type]
            held.append(h)
            yield h

    monkeypatch.setattr(saves_module, "folder_lock", recorded)
    stop = threading.Event()

    def loader() -> None:
        while not stop.is_set():
            Pipeline.load(folder)

    loaders = [threading.Thread(target=loader) for _ in range(3)]
    for t in loaders:
        t.start()
    try:
        time.sleep(0.3)
        b.save(folder)
    finally:
        stop.set()
        for t in loaders:
            t.join(60)
    assert held == [True] and len(Pipeline.load(folder).corpus_) == 61


def test_a_second_save_waiting_does_not_swap_under_a_load(tmp_path: Path) -> None:
    """Two saves at once: the second took its exclusive lock on the folder it opened before the first swapped
    (the replaced one) and swapped at once, under a load of the new folder."""
    from ragkit._saves import _exchange

    _, b, folder = _two_saves(tmp_path)
    staged = tmp_path / "staged"
    Pipeline([BM25().fit(_corpus(62))]).save(staged)
    seen: dict[str, object] = {}
    with folder_lock(folder, exclusive=True) as held:  # the first save's swap
        assert held
        second = threading.Thread(target=b.save, args=(folder,))
        second.start()
        time.sleep(0.3)
        assert _exchange(staged, folder)

        def load() -> None:
            with folder_lock(folder, exclusive=False) as h:
                ino = os.stat(folder).st_ino
                time.sleep(1.0)  # (reading the files)
                seen["held"], seen["swapped under the load"] = h, os.stat(folder).st_ino != ino

        reader = threading.Thread(target=load)
        reader.start()
        time.sleep(0.2)
    second.join(60)
    reader.join(60)
    assert seen == {"held": True, "swapped under the load": False}
    assert len(Pipeline.load(folder).corpus_) in (61, 62)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_during_a_load_does_not_keep_its_lock(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A process forked while a thread loaded inherited the folder's shared lock and kept it for its life: a
    save waited for the child to end."""
    import ragkit._files as files

    _, b, folder = _two_saves(tmp_path)
    with folder_lock(folder, exclusive=False):
        pid = os.fork()
        if pid == 0:  # the child: lives on past the parent's load
            time.sleep(4)
            os._exit(0)
    try:
        monkeypatch.setattr(files, "FOLDER_LOCK_WAIT_S", 1.0)
        with folder_lock(folder, exclusive=True, wait_s=1.0) as held:
            assert held
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_a_missing_folder_loads_with_an_error_of_its_own() -> None:
    """folder_lock yielded inside its except clause: every load error carried a FileNotFoundError context."""
    with pytest.raises(ArtifactError) as e:
        Pipeline.load("/no/such/ragkit/folder")
    assert e.value.__context__ is None or not isinstance(e.value.__context__, FileNotFoundError)


# ------------------------------------------------------------------ 5. start-up of a search
def test_cosine_adapter_import_leaves_scipy_optimize_unloaded() -> None:
    """``ragkit search --index`` imports every operator module; only cosine_adapter's fit needs scipy.optimize
    (~120 ms to import): it is imported there."""
    code = "import sys, ragkit.filters.cosine_adapter, ragkit.cli; print('scipy.optimize' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ 6. a filter value of the wrong type
def test_filter_of_another_type_than_the_field_is_refused() -> None:
    """filter={"year": "2001"} on a field of integers (a web service gets every parameter as a string): a DataError
    saying the field holds int values (was: 0 documents, silently); well-typed filters return what they did."""
    c = _corpus()
    with pytest.raises(DataError, match=r"filter\.year: the field holds int values; got '2001' \(str\).*"
                                        r"give it as a number \('year': 2001\)"):
        c.mask({"year": "2001"})
    with pytest.raises(DataError, match=r"filter\.group: the field holds str values; got 1 \(int\)"):
        c.mask({"group": 1})
    assert c.mask({"year": 2001}).sum() == 12 and c.mask({"year": 2001.0}).sum() == 12
    assert c.mask({"year": ["2001", 2002]}).sum() == 12  # one value of the field's type: membership as before
    assert c.mask({"year": 1999}).sum() == 0 and c.mask({"group": "z"}).sum() == 0  # absent values: empty
    tags = Corpus.from_records([{"_id": "x", "text": "t", "metadata": {"tags": ["a", "b"]}}])
    assert tags.mask({"tags": [["a", "b"]]}).tolist() == [True]  # a whole list still compares with the whole list
    bm = BM25(k=50).fit(c)
    with pytest.raises(DataError, match="holds int values"):
        bm.search(["cancer"], filter={"year": "2001"})
    got = bm.search(["cancer study"], filter={"year": 2001}).doc_ids[0]
    assert len(got) and all(int(d[1:]) % 5 == 1 for d in got)
    assert np.array_equal(c.mask({"group": ["a", "b"]}), np.array([i % 3 < 2 for i in range(60)]))


def test_an_operator_folder_replaced_during_its_load_loads_again(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A single operator's folder had the re-save race a pipeline folder no longer has: a save landing while a
    load read its files mixed both.  Operator.load notes checksums.json's identity and loads again."""
    _without_flock(monkeypatch)
    folder = tmp_path / "op"
    BM25().fit(_corpus(60)).save(folder)
    newer, real, calls = BM25().fit(_corpus(61)), BM25._load, []

    def replaced_midway(self, path, mmap=False):  # noqa: ANN001, ANN202
        real(self, path, mmap=mmap)
        if not calls:
            newer.save(folder)  # another process's save lands after this load read the old files
        calls.append(1)

    monkeypatch.setattr(BM25, "_load", replaced_midway)
    assert len(Operator.load(folder).corpus_) == 61 and len(calls) == 2


def test_an_operator_save_during_an_edit_is_refused_and_keeps_the_earlier_save(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An add on another thread while Operator.save wrote the files could leave a folder of two states: the save
    is refused before it replaces anything."""
    folder = tmp_path / "op"
    bm = BM25().fit(_corpus(60))
    bm.save(folder)
    real = BM25._save

    def edited_midway(self, path):  # noqa: ANN001, ANN202
        real(self, path)
        self.add(Corpus(["late"], ["an added document"]))

    monkeypatch.setattr(BM25, "_save", edited_midway)
    with pytest.raises(DataError, match="documents changed while it was written"):
        bm.save(folder)
    monkeypatch.setattr(BM25, "_save", real)
    assert len(Operator.load(folder).corpus_) == 60  # the earlier save, whole
