"""A chunk cache served from a folder that cannot be written (one shipped read-only: an image, a shared mount).

Its stored chunks are reused; the warning that chunks computed now are not kept is said once per folder and
process (old code: once per check, four times in one ``ragkit ask``); and nothing is ever written, deleted or
trimmed there: no spill, no flush, no write as the store closes (old code: at the exit, ``ragkit: the chunk
cache ... could not be written when it was closed (SafetensorError ... Read-only file system ...)`` although
nothing new had been computed; a spill or a variant cap mid-run raised).

The tests run as root here, whom a ``chmod a-w`` does not stop: the folder is made to answer as one on a
read-only file system would (``os.access`` says it cannot be written; every write, rename or delete below it
fails with EROFS and is recorded)."""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from ragkit.caches.chunk_kv import ChunkKVCache, ChunkVariant, _flush_dropped, check_cache_dir

NOT_KEPT = "chunks computed now are not kept"


def _variant(n: int = 6, prefix: tuple[str, ...] = (), seed: int = 0) -> ChunkVariant:
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(2, 1, n, 4, generator=g)
    return ChunkVariant(keys=k, values=k * 2, start=3, prefix_ids=prefix, prefix_lens=tuple(4 for _ in prefix),
                        inter=np.ones((2, len(prefix)), np.float32), intra=np.full(2, 3.0, np.float32))


def _filled(folder: Path, keys: tuple[str, ...] = ("k1",)) -> None:
    """A chunk cache in ``folder`` holding one variant of each of ``keys``, written and closed."""
    store = ChunkKVCache("m", "t", disk_dir=folder)
    for i, key in enumerate(keys):
        store.put(key, _variant(seed=i))
    store.flush()


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _read_only(monkeypatch, folder: Path) -> list[str]:
    """Make ``folder`` (and what is below it) answer as a read-only file system would; returns the list that
    records each write tried there."""
    root = os.path.realpath(folder)
    tried: list[str] = []

    def below(path) -> bool:
        p = os.path.realpath(os.fspath(path))
        return p == root or p.startswith(root + os.sep)

    def refuse(what: str, path) -> None:
        tried.append(f"{what} {path}")
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    real_access, real_save, real_rename, real_replace = os.access, safetensors.torch.save_file, os.rename, os.replace
    real_unlink, real_mkdir, real_write_text, real_open = Path.unlink, Path.mkdir, Path.write_text, os.open

    def access(path, mode, *a, **kw):
        if mode & os.W_OK and below(path):
            return False
        return real_access(path, mode, *a, **kw)

    def save_file(tensors, filename, *a, **kw):
        if below(filename):
            refuse("save_file", filename)
        return real_save(tensors, filename, *a, **kw)

    def rename(src, dst, *a, **kw):
        if below(src) or below(dst):
            refuse("rename", src)
        return real_rename(src, dst, *a, **kw)

    def replace(src, dst, *a, **kw):
        if below(src) or below(dst):
            refuse("replace", src)
        return real_replace(src, dst, *a, **kw)

    def unlink(self, missing_ok=False):
        if below(self):
            refuse("unlink", self)
        return real_unlink(self, missing_ok=missing_ok)

    def mkdir(self, *a, **kw):
        if below(self) and not self.is_dir():
            refuse("mkdir", self)
        return real_mkdir(self, *a, **kw)

    def write_text(self, *a, **kw):
        if below(self):
            refuse("write_text", self)
        return real_write_text(self, *a, **kw)

    def open_(path, flags, *a, **kw):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and below(path):
            refuse("open", path)
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(os, "open", open_)
    return tried


def _not_kept_lines(caplog, err: str) -> int:
    """How many times "not kept" was said: log records, plus standard-error lines other than the command line's
    echo of a log record (``note: ...``, its handler on the ``ragkit`` logger, which stays for the process once
    a command ran in it: counted in ``caplog`` already)."""
    echoed = sum(NOT_KEPT in line for line in err.splitlines() if line.startswith("note: "))
    return sum(NOT_KEPT in r.getMessage() for r in caplog.records) + err.count(NOT_KEPT) - echoed


def test_the_read_only_warning_is_said_once_per_folder_and_process(tmp_path, monkeypatch, caplog):
    """Old code: one warning per check: the command's, the generate step's, and two as the store opened."""
    folder = tmp_path / "ro"
    _filled(folder)
    _read_only(monkeypatch, folder)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert check_cache_dir(folder)["model_id"] == "m"
        assert check_cache_dir(Path("ro"))["model_id"] == "m"  # the same folder, named relative to the cwd
        ChunkKVCache("m", "t", disk_dir=folder)
        ChunkKVCache("m", "t", disk_dir="ro")
    said = [r.getMessage() for r in caplog.records if NOT_KEPT in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(f"{folder}: the chunk-cache folder cannot be written (")


def test_the_read_only_warning_is_said_once_when_threads_check_at_once(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "shared"
    _filled(folder)
    _read_only(monkeypatch, folder)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def check() -> None:
        try:
            start.wait()
            check_cache_dir(folder)
        except BaseException as e:  # noqa: BLE001 -- reported below
            errors.append(e)

    with caplog.at_level(logging.WARNING, logger="ragkit"):
        threads = [threading.Thread(target=check) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert sum(NOT_KEPT in r.getMessage() for r in caplog.records) == 1
    other = tmp_path / "other"  # another folder is said on its own
    _filled(other)
    _read_only(monkeypatch, other)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        check_cache_dir(other)
    assert sum(NOT_KEPT in r.getMessage() and str(other) in r.getMessage() for r in caplog.records) == 1


def test_a_read_only_cache_reused_then_closed_tries_no_write(tmp_path, monkeypatch, caplog, capsys):
    """Old code: the reuses made the store dirty; its close tried to write every variant and said on stderr
    ``the chunk cache ... could not be written when it was closed (OSError ...)``."""
    folder = tmp_path / "ro"
    _filled(folder, keys=("k1", "k2"))
    before = _snapshot(folder)
    tried = _read_only(monkeypatch, folder)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        store = ChunkKVCache("m", "t", disk_dir=folder)
        for key in ("k1", "k2"):
            [v] = store.lookup(key, n_tokens=6)
            store.touch(v, 0.1)
        store.flush()  # nothing to write where nothing can be
        _flush_dropped(store.__dict__)  # what the exit (or a garbage collection) runs
    err = capsys.readouterr().err
    assert "could not be written" not in err, err
    assert tried == []
    assert _snapshot(folder) == before
    assert _not_kept_lines(caplog, err) == 1
    assert store.stats.disk_hits == 2


def test_new_chunks_in_a_read_only_cache_stay_in_memory_and_are_said_once(tmp_path, monkeypatch, caplog, capsys):
    """Old code: a spill (over the memory budget) and the cap of a chunk's variants (its disk file deleted)
    raised ``OSError: Read-only file system`` from ``put``; the close tried to write the new ones."""
    folder = tmp_path / "ro"
    _filled(folder)
    before = _snapshot(folder)
    tried = _read_only(monkeypatch, folder)
    one = _variant().nbytes
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        store = ChunkKVCache("m", "t", disk_dir=folder, budget_bytes=2 * one, max_variants=1)
        new = store.put("k1", _variant(prefix=("p",), seed=5))  # another context: the disk one would go (cap)
        assert store.lookup("k1", n_tokens=6) == [new]  # served from memory; the stored file stays
        store.put("k2", _variant(seed=6))
        store.put("k3", _variant(seed=7))  # past the budget: the least useful is dropped, not spilled
        assert store.stats.evictions == 1 and store.stats.spills == 0
        store.flush()
        _flush_dropped(store.__dict__)
    err = capsys.readouterr().err
    assert "could not be written" not in err, err
    assert tried == []
    assert _snapshot(folder) == before
    assert _not_kept_lines(caplog, err) == 1  # the opening's warning says it; not again at the close


def test_a_damaged_file_in_a_read_only_cache_is_a_miss_left_in_place(tmp_path, monkeypatch, caplog):
    """Old code: the delete of the damaged file raised ``OSError: Read-only file system`` from ``lookup``."""
    folder = tmp_path / "ro"
    _filled(folder)
    [f] = folder.glob("k1/*.safetensors")
    f.write_bytes(f.read_bytes()[:-7])  # cut short
    before = _snapshot(folder)
    tried = _read_only(monkeypatch, folder)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        store = ChunkKVCache("m", "t", disk_dir=folder)
        assert store.lookup("k1", n_tokens=6) == []
        assert store.lookup("k1", n_tokens=6) == []
    assert tried == []
    assert _snapshot(folder) == before
    said = [r.getMessage() for r in caplog.records if "damaged chunk-cache file" in r.getMessage()]
    assert len(said) == 1 and "left in place" in said[0], said
