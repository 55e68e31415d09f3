"""A readers-writer lock: many searches at once, or one edit (``RagkitRetriever``'s add / delete), and the
lock of each operator tree a retriever edits, shared by every node of it (:func:`lock_of`, :func:`guarded`)."""

from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext
from typing import Any, ContextManager, Iterator

__all__ = ["ReadWriteLock", "lock_of", "guarded", "guarded_any", "MODEL_LOADING"]

#: held around every model load ragkit makes (transformers' ``from_pretrained``, ``SentenceTransformer(...)``):
#: a load patches globals for its duration (``PreTrainedModel.tie_weights``, ``torch.nn.init``'s functions) and
#: restores what it found, so two at once in one process can leave them patched for good: tying disabled, the
#: next model with tied embeddings (SmolLM2) loaded its ``embed_tokens`` as random weights.  Reentrant.
MODEL_LOADING = threading.RLock()


class ReadWriteLock:
    """Any number of readers at once, or one writer alone.

    A writer waiting for the readers to finish stops new readers from starting, so a stream of
    searches cannot starve an edit; readers waiting for a writer all start when it is done, before any
    next writer (the same thread writing again at once included): a stream of edits cannot starve the
    searches either.  The turns so alternate under load: the readers waiting when a writer leaves, then
    the next writer, then the readers that came meanwhile, and so on.

    Reentrant where that cannot deadlock: a thread already reading may read again (a search inside a
    search: ``RagkitRetriever`` holds it around ``pipeline.search``, which takes it too) without waiting
    for a waiting writer (which waits for that thread's outer read: waiting would deadlock); the
    writing thread may read or write again.  A thread that holds the read side and asks to write
    would wait for itself: that is a ``RuntimeError`` at once, not a hang.

    A lock :func:`lock_of` merged into another (one tree joining two that had locks of their own)
    forwards every later ``reading`` / ``writing`` to it, those waiting at the time of the merge too.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0  # threads holding the read side
        self._held: dict[int, int] = {}  # thread id -> depth of its reads
        self._writer: int | None = None  # the thread writing
        self._depth = 0  # of its writes
        self._writers_waiting = 0
        self._readers_waiting = 0  # threads waiting to read (not reading already)
        # the readers' turn: each writer leaving with readers waiting starts a new turn (``_turn`` + 1) that
        # lets those ``_admit`` readers in before any writer, the writers waiting notwithstanding
        self._turn = 0
        self._admit = 0
        self._merging = 0  # merges waiting for the write side (``ahead``): they go before the readers of a turn
        self._into: ReadWriteLock | None = None  # the lock this one was merged into (set under _cond, once)

    def final(self) -> "ReadWriteLock":
        """The lock this one forwards to: itself unless :func:`lock_of` merged it into another."""
        lock = self
        while lock._into is not None:
            lock = lock._into
        return lock

    def _acquire_read(self) -> tuple["ReadWriteLock", bool]:
        """Take the read side of :meth:`final`; returns that lock and whether this thread writes it already."""
        me = threading.get_ident()
        lock = self.final()
        while True:
            with lock._cond:
                if lock._into is None:
                    as_writer = lock._writer == me  # the writer reads what it holds alone
                    if as_writer:
                        return lock, True
                    if me not in lock._held and (lock._writer is not None or lock._writers_waiting):
                        lock._wait_to_read()
                    if lock._into is None:
                        if me not in lock._held:
                            lock._readers += 1
                        lock._held[me] = lock._held.get(me, 0) + 1
                        return lock, False
            lock = lock.final()  # merged meanwhile: wait on the lock it forwards to

    def _wait_to_read(self) -> None:
        """Wait (holding ``_cond``) until a writer leaving starts the readers' turn, or no writer holds or waits
        for the lock, or it was merged into another."""
        turn = self._turn
        self._readers_waiting += 1
        try:
            while self._into is None and (self._writer is not None or self._merging
                                          or self._writers_waiting and self._turn == turn):
                self._cond.wait()
        finally:
            self._readers_waiting -= 1
            if self._turn != turn and self._admit:  # one of the readers this turn lets in (or gone meanwhile)
                self._admit -= 1
                if not self._admit:
                    self._cond.notify_all()  # (the writers waiting for the turn to end)

    def _release_read(self, as_writer: bool) -> None:
        if as_writer:
            return
        me = threading.get_ident()
        with self._cond:
            depth = self._held[me] - 1
            if depth:
                self._held[me] = depth
            else:
                del self._held[me]
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the lock shared for the ``with`` block."""
        lock, as_writer = self._acquire_read()
        try:
            yield
        finally:
            lock._release_read(as_writer)

    def _acquire_write(self, ahead: bool = False) -> "ReadWriteLock":
        """Take the write side of :meth:`final` (once the readers have left); returns that lock.  ``ahead``: before
        the readers of a turn in progress (a merge, :func:`_merge`: once, so the readers it holds back take the
        lock merged into, not this one)."""
        me = threading.get_ident()
        lock = self.final()
        while True:
            with lock._cond:
                if lock._into is None:
                    if lock._writer == me:
                        lock._depth += 1
                        return lock
                    if me in lock._held:
                        raise RuntimeError("ReadWriteLock.writing: this thread holds the lock to read; writing would "
                                           "wait for itself (take the write side before reading, not inside)")
                    lock._writers_waiting += 1
                    lock._merging += ahead  # (holds back the readers of a turn not in yet: they take the merged lock)
                    try:  # (the readers of a turn in progress first: ``_admit``)
                        while lock._into is None and (lock._writer is not None or lock._readers
                                                      or lock._admit and not ahead):
                            lock._cond.wait()
                    except BaseException:  # (interrupted: the readers it held back go on)
                        lock._writers_waiting -= 1
                        lock._merging -= ahead
                        lock._cond.notify_all()
                        raise
                    lock._writers_waiting -= 1
                    lock._merging -= ahead
                    if lock._into is None:
                        lock._writer, lock._depth = me, 1
                        return lock
                    lock._cond.notify_all()  # (readers held back by this writer's wait)
            lock = lock.final()

    def _release_write(self) -> None:
        with self._cond:
            self._depth -= 1
            if not self._depth:
                self._writer = None
                if self._readers_waiting:  # their turn: they all start before the next writer
                    self._turn += 1
                    self._admit = self._readers_waiting
                self._cond.notify_all()

    @contextmanager
    def writing(self, *, _ahead: bool = False) -> Iterator[None]:
        """Hold the lock alone for the ``with`` block (after the readers inside it have left)."""
        lock = self._acquire_write(_ahead)
        try:
            yield
        finally:
            lock._release_write()


# ---------------------------------------------------------------------------------- per-object locks
# id(operator) -> the lock of the tree a RagkitRetriever edits that holds it: every node of that tree (the
# pipeline, its composites, its leaves) maps to one lock; an entry is dropped when its operator is collected
_LOCKS: dict[int, ReadWriteLock] = {}
_LOCKS_GUARD = threading.Lock()
_MERGING = threading.Lock()  # one merge of locks at a time (each takes the write side of those it merges)


def lock_of(op: Any) -> ReadWriteLock:
    """The readers-writer lock of the operator tree ``op`` (``RagkitRetriever`` edits hold it to write, its
    searches to read), made on first use, and given to every node of the tree as ``op.children()`` gives it
    now: ``op``, its composites and its leaves, so that ``search`` of any of them (:func:`guarded`) waits for an
    edit in progress.  Two retrievers wrapping one fitted pipeline, or pipelines sharing an operator, so share
    one lock and never edit at once.

    A tree holding nodes that already have a lock (another retriever's pipeline inside this one, or this one's
    steps inside another's) gets that lock; when they have two or more, those are merged: once no thread holds
    them, each forwards to the first (:meth:`ReadWriteLock.final`).  A node put into the tree later
    (``pipe.steps[0] = ...``) gets the lock when ``lock_of`` runs again: ``RagkitRetriever`` calls it before each
    edit, so the node's searches wait for the edits from the next one on (a search of it that began before
    does not); a node taken out of the tree keeps the lock.  The map is weak: a node's entry goes with it."""
    import weakref

    from ragkit.operator import tree_nodes

    nodes = tree_nodes(op)
    while True:
        with _LOCKS_GUARD:
            found: list[ReadWriteLock] = []
            for node in nodes:
                lock = _LOCKS.get(id(node))
                if lock is not None and lock.final() not in found:
                    found.append(lock.final())
            if len(found) <= 1:
                lock = found[0] if found else ReadWriteLock()
                for node in nodes:
                    if id(node) not in _LOCKS:
                        weakref.finalize(node, _LOCKS.pop, id(node), None)
                    _LOCKS[id(node)] = lock
                return lock
        _merge(found)  # then map the nodes again (every entry now forwards to one lock)


def _merge(locks: list[ReadWriteLock]) -> None:
    """Forward every lock of ``locks`` (each its own :meth:`~ReadWriteLock.final`) to the first, holding the write
    side of all of them (in the order of their ids: two merges never wait for each other) while it is set."""
    from contextlib import ExitStack

    with _MERGING, ExitStack() as stack:
        live = [lock for lock in locks if lock._into is None]  # (another merge may have done it meanwhile)
        for lock in sorted(live, key=id):
            stack.enter_context(lock.writing(_ahead=True))
        for other in live[1:]:
            with other._cond:
                other._into = live[0]
                other._cond.notify_all()


def guarded(op: Any) -> ContextManager[None]:
    """Hold the lock of the tree ``op`` belongs to (a ``RagkitRetriever`` edits it: :func:`lock_of`) to read for
    the ``with`` block: ``Pipeline.search`` / ``Operator.search`` of any node of that tree so wait for an edit in
    progress; a context that does nothing otherwise (no lock is made for a tree no retriever wraps)."""
    lock = _LOCKS.get(id(op))
    return lock.reading() if lock is not None else nullcontext()


def guarded_any(*ops: Any) -> ContextManager[None]:
    """:func:`guarded` of the first of ``ops`` that has a lock (a save of ``Pipeline([step])``: the new wrapper
    has none, the step may have); a context that does nothing when none has."""
    for op in ops:
        lock = _LOCKS.get(id(op))
        if lock is not None:
            return lock.reading()
    return nullcontext()
