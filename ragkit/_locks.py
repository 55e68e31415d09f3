"""A readers-writer lock: many searches at once, or one edit (``RagkitRetriever``'s add / delete), and the
lock of each pipeline object a retriever edits (:func:`lock_of`, :func:`guarded`)."""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager, nullcontext
from typing import Any, ContextManager, Iterator

__all__ = ["ReadWriteLock", "lock_of", "existing_lock", "guarded"]


class ReadWriteLock:
    """Any number of readers at once, or one writer alone.

    A writer waiting for the readers to finish stops new readers from starting, so a stream of
    searches cannot starve an edit; readers waiting for a writer all start when it is done.

    Reentrant where that cannot deadlock: a thread already reading may read again (a search inside a
    search: ``RagkitRetriever`` holds it around ``pipeline.search``, which takes it too) without waiting
    for a waiting writer (which waits for that thread's outer read: waiting would deadlock); the
    writing thread may read or write again.  A thread that holds the read side and asks to write
    would wait for itself: that is a ``RuntimeError`` at once, not a hang.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0  # threads holding the read side
        self._held: dict[int, int] = {}  # thread id -> depth of its reads
        self._writer: int | None = None  # the thread writing
        self._depth = 0  # of its writes
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the lock shared for the ``with`` block."""
        me = threading.get_ident()
        with self._cond:
            as_writer = self._writer == me  # the writer reads what it holds alone
            if not as_writer:
                if me not in self._held:
                    while self._writer is not None or self._writers_waiting:
                        self._cond.wait()
                    self._readers += 1
                self._held[me] = self._held.get(me, 0) + 1
        try:
            yield
        finally:
            if not as_writer:
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
    def writing(self) -> Iterator[None]:
        """Hold the lock alone for the ``with`` block (after the readers inside it have left)."""
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._depth += 1
            else:
                if me in self._held:
                    raise RuntimeError("ReadWriteLock.writing: this thread holds the lock to read; writing would "
                                       "wait for itself (take the write side before reading, not inside)")
                self._writers_waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._writers_waiting -= 1
                self._writer, self._depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not self._depth:
                    self._writer = None
                    self._cond.notify_all()


# ---------------------------------------------------------------------------------- per-object locks
_LOCKS: dict[int, ReadWriteLock] = {}  # id(pipeline object) -> its lock, dropped when the object is collected
_LOCKS_GUARD = threading.Lock()


def lock_of(op: Any) -> ReadWriteLock:
    """The readers-writer lock of the pipeline object ``op`` (made on first use): one per object, so that
    two retrievers wrapping one fitted pipeline never edit it at once, and its own ``search`` waits for
    their edits (:func:`guarded`)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(id(op))
        if lock is None:
            lock = _LOCKS[id(op)] = ReadWriteLock()
            weakref.finalize(op, _LOCKS.pop, id(op), None)
        return lock


def existing_lock(op: Any) -> ReadWriteLock | None:
    """``op``'s lock if :func:`lock_of` made one (a ``RagkitRetriever`` wraps it), else ``None``."""
    return _LOCKS.get(id(op))


def guarded(op: Any) -> ContextManager[None]:
    """Hold ``op``'s lock to read for the ``with`` block when it has one (a ``RagkitRetriever`` edits it):
    ``Pipeline.search`` / ``Operator.search`` so wait for an edit in progress; a context that does
    nothing otherwise (no lock is made for a pipeline no retriever wraps)."""
    lock = _LOCKS.get(id(op))
    return lock.reading() if lock is not None else nullcontext()
