"""The shard folders of a :class:`~ragkit._sharded.Sharded` retriever: a loaded operator's private
hard-linked copy, and a copy's borrowed handle on its original's folder (removed once no one holds it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any


def _private_dir(src: Path, workdir: Path | None) -> tempfile.TemporaryDirectory[str]:
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
            return tempfile.TemporaryDirectory(prefix="ragkit-shards-", dir=place, ignore_cleanup_errors=True)
        except OSError:  # (a read-only folder): the next place
            continue
    return tempfile.TemporaryDirectory(prefix="ragkit-shards-", dir=places[-1], ignore_cleanup_errors=True)


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

    It never removes the folder itself (``cleanup`` does nothing); borrowing the owner's
    ``TemporaryDirectory`` (``tmp``, in this process) keeps it: the owner's refit releases it
    (:func:`_release_dir`) only once no copy still borrows it, else the last copy to go removes it.  A
    pickled one names the folder only (no ``tmp``): the original's process owns it."""

    def __init__(self, name: str, tmp: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.name, self.tmp = name, tmp
        if tmp is not None:
            _borrowers(tmp).add(self)
            weakref.finalize(self, _borrower_gone, tmp)

    def cleanup(self) -> None:
        """Nothing: the folder is its owner's."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedDir:
        return _SharedDir(self.name, self.tmp)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_SharedDir, (self.name,))


def _borrowers(tmp: tempfile.TemporaryDirectory[str]) -> weakref.WeakSet[_SharedDir]:
    """The copies' handles (:class:`_SharedDir`) that borrow the shard folder ``tmp``."""
    return tmp.__dict__.setdefault("_ragkit_borrowers", weakref.WeakSet())


def _release_dir(folder: tempfile.TemporaryDirectory[str] | _SharedDir) -> None:
    """Remove a refitted :class:`Sharded`'s earlier shard folder, unless a copy still borrows it (the last
    copy to go removes it then); a copy's own handle removes nothing."""
    if isinstance(folder, _SharedDir):
        return
    folder.__dict__["_ragkit_released"] = True
    if not list(_borrowers(folder)):
        folder.cleanup()


def _borrower_gone(tmp: tempfile.TemporaryDirectory[str]) -> None:
    """A copy's handle on ``tmp`` is gone: remove the folder if its owner released it and no copy is left."""
    if tmp.__dict__.get("_ragkit_released") and not list(_borrowers(tmp)):
        tmp.cleanup()
