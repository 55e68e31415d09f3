"""The shard folders of a :class:`~ragkit._sharded.Sharded` retriever: the folder a fit writes or a loaded
operator's private hard-linked copy (:class:`ShardDir`, removed with its operator), and a copy's borrowed handle on
its original's folder (:class:`_SharedDir`; the folder is removed once no one holds it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any


class ShardDir:
    """A shard folder of this process's own (``name``, a fresh ``ragkit-shards-*`` folder inside ``dir``, the
    temporary folder when None): removed by :meth:`cleanup` or, when this handle is garbage-collected, as quietly
    (a :class:`~ragkit._sharded.Sharded` that goes takes its folder with it, which is no leak: no
    ``ResourceWarning``, as the vector index's scratch folder, :mod:`ragkit.retrievers._index`).  ``borrowers``
    are the copies' handles (:class:`_SharedDir`) that keep it after its owner ``released`` it (a refit)."""

    def __init__(self, dir: Path | str | None = None) -> None:
        self.name = tempfile.mkdtemp(prefix="ragkit-shards-", dir=dir)
        self.borrowers: weakref.WeakSet[_SharedDir] = weakref.WeakSet()
        self.released = False
        self._remove = weakref.finalize(self, shutil.rmtree, self.name, True)

    def cleanup(self) -> None:
        """Remove the folder now (once; errors ignored, as a folder already gone)."""
        self._remove()

    def __repr__(self) -> str:
        return f"ShardDir({self.name!r})"


def _private_dir(src: Path, workdir: Path | None) -> ShardDir:
    """A fresh ``ragkit-shards-*`` folder for a loaded operator's own copy of its shard folders (in ``src``):
    inside ``workdir`` when given; else in the temporary folder when it is on ``src``'s file system (the
    files are hard links there), else beside ``src`` (the same file system, and storage the Ray workers
    read when they read ``src``), else in the temporary folder (the files are copied)."""
    places: list[Path] = [workdir] if workdir is not None else []
    tmp = Path(tempfile.gettempdir())
    try:
        same = os.stat(tmp).st_dev == os.stat(src).st_dev
    except OSError:
        same = False
    places += [tmp] if same else [src.parent, tmp]
    for place in places[:-1]:
        try:
            return ShardDir(place)
        except OSError:  # (a read-only folder): the next place
            continue
    return ShardDir(places[-1])


def _link_tree(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of the folder ``src`` whose files are hard links to ``src``'s (copies where a link
    cannot be made: another file system).  A save replaces its files (new ones, renamed over the old), so the
    linked files keep the contents they had."""
    dst.mkdir()
    for entry in os.scandir(src):
        target = dst / entry.name
        if entry.is_dir(follow_symlinks=False):
            _link_tree(Path(entry.path), target)
            continue
        try:
            os.link(entry.path, target)
        except OSError:
            shutil.copy2(entry.path, target)


class _SharedDir:
    """A copy's handle on the shard folder of the :class:`Sharded` it was copied from (``name``, its path).

    It never removes the folder itself (``cleanup`` does nothing); borrowing the owner's :class:`ShardDir`
    (``tmp``, in this process) keeps it: the owner's refit releases it (:func:`_release_dir`) only once no copy
    still borrows it, else the last copy to go removes it.  A pickled one names the folder only (no ``tmp``): the
    original's process owns it."""

    def __init__(self, name: str, tmp: ShardDir | None = None) -> None:
        self.name, self.tmp = name, tmp
        if tmp is not None:
            tmp.borrowers.add(self)
            weakref.finalize(self, _borrower_gone, tmp)

    def cleanup(self) -> None:
        """Nothing: the folder is its owner's."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedDir:
        return _SharedDir(self.name, self.tmp)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_SharedDir, (self.name,))


def _release_dir(folder: ShardDir | _SharedDir) -> None:
    """Remove a refitted :class:`Sharded`'s earlier shard folder, unless a copy still borrows it (the last
    copy to go removes it then); a copy's own handle removes nothing."""
    if isinstance(folder, _SharedDir):
        return
    folder.released = True
    if not list(folder.borrowers):
        folder.cleanup()


def _borrower_gone(tmp: ShardDir) -> None:
    """A copy's handle on ``tmp`` is gone: remove the folder if its owner released it and no copy is left."""
    if tmp.released and not list(tmp.borrowers):
        tmp.cleanup()
