"""Saves' review s55: a re-save keeps a private folder private; a save whose final flush fails leaves no copy behind
and says why; a folder whose corpus.jsonl holds the given ids but params.json records others is named, not an
IndexError; a mount point is refused before any work, and a failed swap says an earlier save is still there only
where there was one; the parent folder is flushed after the rename (atomic_dir, and atomic_file when durable);
Corpus.save removes the temporary file a killed save left; corpus_fingerprint hashes a corpus's ids once."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest
from test_portability import TEXTS, _beside

import ragkit._files as files
import ragkit._fingerprints as fingerprints
import ragkit._saves as saves
from ragkit.errors import ArtifactError
from ragkit.operator import Operator
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25
from ragkit.types import Corpus


@pytest.fixture
def small() -> Corpus:
    return Corpus.from_texts(TEXTS)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---------------------------------------------------------------- 1: a re-save keeps the folder's permissions
@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_a_resave_keeps_a_private_folder_private(small, tmp_path):
    folder, pipe = tmp_path / "ix", tmp_path / "pipe"
    old = os.umask(0o022)
    try:
        BM25(k=3).fit(small).save(folder)
        Pipeline([BM25(k=3)]).fit(small).save(pipe)
        assert _mode(folder) == 0o755  # (a new save: a plain mkdir's permissions)
        os.chmod(folder, 0o700)
        os.chmod(pipe, 0o700)
        BM25(k=4).fit(small).save(folder)
        Pipeline([BM25(k=4)]).fit(small).save(pipe)
    finally:
        os.umask(old)
    assert _mode(folder) == 0o700  # (was 0o755: readable by others again)
    assert _mode(pipe) == 0o700
    assert Operator.load(folder).params.k == 4


# ---------------------------------------------------------------- 2: a failed flush leaves no copy, and says why
def test_a_save_whose_flush_fails_leaves_no_copy_and_says_why(small, tmp_path, monkeypatch):
    folder = tmp_path / "ix"
    BM25(k=3).fit(small).save(folder)

    def full(folder: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "fsync_tree", full)
    for _ in range(2):  # (a retry added a copy each time)
        with pytest.raises(ArtifactError, match=r"ix: the save could not be written \(No space left on device, "
                                                r"flushing its files to the disk\); an earlier save there is "
                                                r"unchanged"):
            BM25(k=4).fit(small).save(folder)
    assert _beside(folder) == []  # (was: .ix.tmp-<pid>@... per try, a whole copy of the index each)
    monkeypatch.undo()
    assert Operator.load(folder).params.k == 3


def test_another_flush_error_stays_as_it_is_and_leaves_no_copy(small, tmp_path, monkeypatch):
    folder = tmp_path / "ix"

    def failing(folder: object) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(files, "fsync_tree", failing)
    with pytest.raises(OSError) as err:
        BM25(k=4).fit(small).save(folder)
    assert err.value.errno == errno.EIO and not isinstance(err.value, ArtifactError)  # (retryable: as it is)
    assert _beside(folder) == [] and not folder.exists()


# ---------------------------------------------------------------- 3: the saved corpus.jsonl holds the given ids
def test_a_folder_whose_corpus_file_holds_the_given_ids_but_params_others_is_named(small, tmp_path):
    folder = tmp_path / "ix"
    BM25(k=3).fit(small).save(folder)
    other = Corpus.from_texts(["x y", "z w"])
    other.save(folder / "corpus.jsonl")  # (replaced: loaded unchecked)
    with pytest.raises(ArtifactError, match=r"ix: fitted on a corpus of 6 documents, but load\(corpus=\.\.\.\) was "
                                            r"given 2 documents with other ids, the very ids, in the same order, "
                                            r"that .*ix/corpus\.jsonl holds: so that file is not the corpus it was "
                                            r"fitted on either.*the folder was changed after it was saved.*fit the "
                                            r"operator again"):
        Operator.load(folder, corpus=other, verify=False)  # (was: IndexError)


def test_a_pipeline_whose_corpus_lines_were_swapped_is_named(small, tmp_path):
    folder = tmp_path / "pipe"
    Pipeline([BM25(k=3)]).fit(small).save(folder)
    lines = (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines(True)
    (folder / "corpus.jsonl").write_text("".join(reversed(lines)), encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"ops/00-bm25: fitted on a corpus of 6 documents.*the very ids, in the "
                                            r"same order, that .*pipe/corpus\.jsonl holds.*fit the pipeline again"):
        Pipeline.load(folder, verify=False)  # (was: IndexError)


def test_a_step_folder_copied_from_another_pipeline_is_named(small, tmp_path):
    import shutil

    folder, other = tmp_path / "pipe", tmp_path / "other"
    Pipeline([BM25(k=3)]).fit(small).save(folder)
    Pipeline([BM25(k=3)]).fit(Corpus.from_texts(["a b", "c d"])).save(other)
    shutil.rmtree(folder / "ops" / "00-bm25")
    shutil.copytree(other / "ops" / "00-bm25", folder / "ops" / "00-bm25")
    with pytest.raises(ArtifactError, match=r"fitted on a corpus of 2 documents, but .* was given 6 documents with "
                                            r"other ids, the very ids.*a step folder copied from another save"):
        Pipeline.load(folder, verify=False)  # (was: IndexError)


def test_other_ids_still_say_the_first_difference(small, tmp_path):
    folder = tmp_path / "ix"
    BM25(k=3).fit(small).save(folder)
    with pytest.raises(ArtifactError, match=r"with other ids; pass the corpus it was fitted on.*the first "
                                            r"difference: row 3 is document '3', only in the fitted corpus\)$"):
        Operator.load(folder, corpus=Corpus.from_texts(TEXTS[:3]))


# ---------------------------------------------------------------- 5: a mount point; a failed swap without a save
def test_a_mount_point_is_refused_before_any_work(small, tmp_path, monkeypatch):
    folder = tmp_path / "vol"
    folder.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == folder.resolve() or real(p))
    with pytest.raises(ArtifactError, match=r"vol: a mount point .*which a save cannot replace \(it renames a "
                                            r"complete folder into place\): save into a folder inside it"):
        saves.atomic_dir.check(folder)
    with pytest.raises(ArtifactError, match=r"a mount point"):
        BM25(k=3).fit(small).save(folder)  # (was: the whole save written beside it, then EBUSY at the swap)
    assert sorted(os.listdir(tmp_path)) == ["vol"] and not any(folder.iterdir())
    BM25(k=3).fit(small).save(folder / "index")  # (a folder inside it: saved)
    assert Operator.load(folder / "index").params.k == 3


def test_a_failed_swap_says_the_earlier_save_is_there_only_where_there_was_one(small, tmp_path, monkeypatch, caplog):
    folder = tmp_path / "ix"
    busy = OSError(errno.EIO, "Input/output error")  # (kept as it is, logged; EBUSY: an ArtifactError, tested below)
    rename = Path.rename

    def refuse(self: Path, target: object) -> Path:
        if ".tmp-" in self.name:
            raise busy
        return rename(self, target)  # type: ignore[arg-type]

    monkeypatch.setattr(saves, "_exchange", lambda a, b: False)
    monkeypatch.setattr(Path, "rename", refuse)
    with caplog.at_level(logging.WARNING, logger="ragkit"), pytest.raises(OSError):
        BM25(k=3).fit(small).save(folder)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert f"nothing was changed at {folder}" in said, said
    assert "the earlier save is still there" not in said  # (there was none)
    assert _beside(folder) == []
    monkeypatch.setattr(Path, "rename", rename)
    BM25(k=3).fit(small).save(folder)
    monkeypatch.setattr(Path, "rename", refuse)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"), pytest.raises(OSError):
        BM25(k=4).fit(small).save(folder)
    assert "nothing was changed: the earlier save is still there" in caplog.text


# ---------------------------------------------------------------- 6: the parent folder is flushed after the rename
def _spy_fsyncs(monkeypatch: pytest.MonkeyPatch, seen: list[tuple[Path, object]], state) -> None:  # noqa: ANN001
    """Record each ``fsync_path(p)`` as ``(p, state())``: what was on the disk's way when it ran."""
    real = files.fsync_path

    def spy(path: object) -> None:
        seen.append((Path(os.fspath(path)), state()))  # type: ignore[arg-type]
        real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(files, "fsync_path", spy)


def test_a_save_flushes_its_parent_folder_after_the_rename(small, tmp_path, monkeypatch):
    folder = tmp_path / "ix"
    BM25(k=3).fit(small).save(folder)

    def saved_k() -> object:
        try:
            return json.loads((folder / "params.json").read_text(encoding="utf-8"))["params"]["k"]
        except OSError:
            return None

    for exchange in (True, False):  # (one atomic swap; two renames)
        if not exchange:
            monkeypatch.setattr(saves, "_exchange", lambda a, b: False)
        seen: list[tuple[Path, object]] = []
        _spy_fsyncs(monkeypatch, seen, saved_k)
        k = 4 if exchange else 5
        BM25(k=k).fit(small).save(folder)
        assert (tmp_path, k) in seen, seen  # (was: the parent never flushed: the rename could be lost)


def test_a_user_named_file_flushes_its_folder_after_the_rename(small, tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    target.write_text("old", encoding="utf-8")
    seen: list[tuple[Path, object]] = []
    _spy_fsyncs(monkeypatch, seen, lambda: target.read_text(encoding="utf-8"))
    with files.atomic_file(target, sync_folder=True) as tmp:
        tmp.write_text("new", encoding="utf-8")
    assert seen[-1] == (tmp_path, "new"), seen  # (the file, then its folder once renamed)
    seen.clear()
    for durable in (True, False):  # (a cache entry, a file in a save's temporary folder; a scratch file)
        with files.atomic_file(target, durable=durable, sync_folder=not durable) as tmp:
            tmp.write_text("newer", encoding="utf-8")
    assert all(p != tmp_path for p, _ in seen), seen
    seen.clear()
    with files.text_output(target) as f:  # (a run file, a report)
        f.write("text")
    assert seen[-1] == (tmp_path, "text"), seen
    corpus = tmp_path / "c.jsonl"
    seen.clear()
    monkeypatch.undo()
    _spy_fsyncs(monkeypatch, seen, lambda: corpus.exists())
    small.save(corpus)
    assert seen[-1] == (tmp_path, True), seen  # (was: the folder never flushed, the rename could be lost)


# ---------------------------------------------------------------- 7: Corpus.save removes what a killed save left
def _ended_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_corpus_save_removes_the_temporary_file_a_killed_save_left(small, tmp_path):
    pid = _ended_pid()
    tag = f"{pid}{files.owner_tag()[len(str(os.getpid())):]}"  # (this host's, of a process that has ended)
    stale = tmp_path / f".c.{tag}-0123abcd.tmp.jsonl"
    stale.write_text('{"_id": "partial"', encoding="utf-8")
    live = tmp_path / f".c.{files.owner_tag()}-4567cdef.tmp.jsonl"  # (a live writer's: kept)
    live.write_text("", encoding="utf-8")
    small.save(tmp_path / "c.jsonl")
    assert sorted(os.listdir(tmp_path)) == sorted(["c.jsonl", live.name])  # (was: the stale one stayed for good)


def test_corpus_save_names_its_temporary_file_after_its_owner(small, tmp_path, monkeypatch):
    names: list[str] = []
    real = Corpus._write_jsonl

    def spy(self: Corpus, f) -> None:  # noqa: ANN001
        names.append(Path(f.name).name)
        real(self, f)

    monkeypatch.setattr(Corpus, "_write_jsonl", spy)
    small.save(tmp_path / "c.jsonl")
    assert names and names[0].startswith(f".c.{files.owner_tag()}-"), names


# ---------------------------------------------------------------- 8: corpus_fingerprint hashes a corpus once
def test_corpus_fingerprint_hashes_a_corpus_once(small, monkeypatch):
    calls = []

    def sha1(data: bytes = b"") -> object:
        calls.append(len(data))
        return hashlib.sha1(data)

    monkeypatch.setattr(fingerprints, "hashlib", types.SimpleNamespace(sha1=sha1, blake2b=hashlib.blake2b))
    other = Corpus.from_texts(TEXTS)
    first = fingerprints.corpus_fingerprint(small)
    first["n"] = -1  # (a new dict each call: a caller's edit changes nothing remembered)
    again = fingerprints.corpus_fingerprint(small)
    assert len(calls) == 1  # (was: hashed on every call, ~40 ms at 1M ids, per step of a pipeline's save and load)
    assert again == fingerprints.corpus_fingerprint(other) and len(calls) == 2  # (another corpus: its own)
    monkeypatch.undo()
    assert again == {"n": 6, "ids_sha1": hashlib.sha1("\x00".join(small.ids.tolist()).encode()).hexdigest()}


# ---------------------------------------------------------------- 4: a save waiting keeps no neighbour waiting
@pytest.mark.skipif(files.FCNTL is None, reason="flock")
def test_a_save_waiting_for_loads_keeps_no_neighbours_load_or_save_waiting(small, tmp_path, monkeypatch):
    import threading
    import time

    monkeypatch.setattr(files, "FOLDER_LOCK_WAIT_S", 10.0)
    a, b = tmp_path / "a", tmp_path / "b"
    Pipeline([BM25(k=3)]).fit(small).save(a)
    BM25(k=3).fit(small).save(b)
    with files.folder_lock(a, exclusive=False) as held:  # a slow load of a
        assert held
        saver = threading.Thread(target=Pipeline([BM25(k=4)]).fit(small).save, args=(a,))
        saver.start()
        time.sleep(0.3)  # (the save of a waits for that load)
        t = time.monotonic()
        with files.folder_lock(b, exclusive=False) as got:  # a load of b, its neighbour
            assert got
        BM25(k=5).fit(small).save(b)  # a save of b
        took = time.monotonic() - t
        waiting = saver.is_alive()  # (still waiting for the load of a)
    saver.join(30)
    assert took < 3.0, took  # (was: both waited for the save of a, i.e. for the load of a: 10 s here, 60 s by default)
    assert waiting
    assert Pipeline.load(a).steps[0].params.k == 4 and Operator.load(b).params.k == 5
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]  # (no lock file)


@pytest.mark.skipif(files.FCNTL is None, reason="flock")
def test_a_load_starting_between_a_saves_two_renames_waits_for_them(small, tmp_path, monkeypatch):
    import threading

    import ragkit.pipelines.store as store

    # (the load's own wait for the parent folder's lock, not restore_interrupted_save's, which waits too: a missing
    # folder with an earlier save beside it)
    monkeypatch.setattr(store, "restore_interrupted_save", lambda path: None)
    folder = tmp_path / "pipe"
    Pipeline([BM25(k=3)]).fit(small).save(folder)
    monkeypatch.setattr(saves, "_exchange", lambda a, b: False)  # (macOS, NFS: two renames, ``folder`` missing between)
    rename, between = Path.rename, threading.Event()

    def slow(self: Path, target: object) -> Path:
        if ".tmp-" in self.name:  # the second rename
            between.set()
            import time

            time.sleep(0.5)
        return rename(self, target)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "rename", slow)
    loaded: list[object] = []

    def load() -> None:
        between.wait(30)
        try:
            loaded.append(Pipeline.load(folder).steps[0].params.k)
        except Exception as e:  # noqa: BLE001 - the test's failure says it
            loaded.append(e)

    loader = threading.Thread(target=load)
    loader.start()
    Pipeline([BM25(k=4)]).fit(small).save(folder)
    loader.join(30)
    assert loaded == [4], loaded  # (not "no such folder": the load waited for the renames)


# ---------------------------------------------------------------- s55b 1: a read-only save folder is re-saved
def _as_a_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleting an entry of a folder without owner write permission fails, as it does for any user but root (the
    tests may run as root, whom permissions do not stop): ``os.unlink`` / ``os.rmdir`` raise EACCES there."""
    real_unlink, real_rmdir = os.unlink, os.rmdir

    def refused(path: object, dir_fd: int | None) -> bool:
        holder = os.fstat(dir_fd) if dir_fd is not None else os.stat(os.path.dirname(os.fspath(path)) or ".")  # type: ignore[arg-type]
        return not holder.st_mode & stat.S_IWUSR

    def unlink(path, *, dir_fd=None):  # noqa: ANN001, ANN202
        if refused(path, dir_fd):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_unlink(path, dir_fd=dir_fd)

    def rmdir(path, *, dir_fd=None):  # noqa: ANN001, ANN202
        if refused(path, dir_fd):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_rmdir(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(os, "remove", unlink)
    monkeypatch.setattr(os, "rmdir", rmdir)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_a_read_only_save_folder_is_resaved_and_stays_read_only(small, tmp_path, monkeypatch):
    folder, pipe = tmp_path / "ix", tmp_path / "pipe"
    BM25(k=3).fit(small).save(folder)
    Pipeline([BM25(k=3)]).fit(small).save(pipe)
    os.chmod(folder, 0o555)  # (the user protects the saves from edits: chmod a-w)
    os.chmod(pipe, 0o555)
    try:
        with saves.atomic_dir(folder) as tmp:
            assert _mode(tmp) & stat.S_IWUSR  # (was 0o555 from the start: a non-root save failed on its first file)
            for f in folder.iterdir():  # (the same save again: written into the temporary folder)
                (tmp / f.name).write_bytes(f.read_bytes())
        assert _mode(folder) == 0o555  # (given after the block: the folder stays read-only)
        _as_a_user(monkeypatch)  # (the replaced 555 folder: deleted by a non-root user too)
        BM25(k=4).fit(small).save(folder)
        Pipeline([BM25(k=4)]).fit(small).save(pipe)
        assert _mode(folder) == 0o555 and _mode(pipe) == 0o555
        assert _beside(folder) == [] and _beside(pipe) == []  # (was: .ix.tmp-<pid>@..., the earlier save, for ever)
        monkeypatch.undo()
        assert Operator.load(folder).params.k == 4 and Pipeline.load(pipe).steps[0].params.k == 4
    finally:
        for p in (folder, pipe):
            if p.exists():
                os.chmod(p, 0o755)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_remove_tree_deletes_read_only_folders_but_leaves_the_parent_as_it_is(tmp_path, monkeypatch):
    top = tmp_path / "t"
    (top / "a" / "b").mkdir(parents=True)
    for p in (top / "x", top / "a" / "y", top / "a" / "b" / "z"):
        p.write_text("1")
        os.chmod(p, 0o444)
    for p in (top / "a" / "b", top / "a", top):
        os.chmod(p, 0o555)  # (chmod -R a-w)
    os.chmod(tmp_path, 0o755)
    _as_a_user(monkeypatch)
    files.remove_tree(top)
    assert not top.exists()
    assert _mode(tmp_path) == 0o755


# ---------------------------------------------------------------- s55b 3: the turnstile file compared is the one locked
@pytest.mark.skipif(files.FCNTL is None, reason="flock")
@pytest.mark.parametrize("manifest", ["link", "folder"])
def test_a_save_lock_takes_the_record_it_locked_for_the_folders_own(tmp_path, manifest):
    import time

    folder = tmp_path / "P"
    folder.mkdir()
    (folder / "params.json").write_text("{}")
    if manifest == "link":
        (folder / "manifest.json").symlink_to("params.json")
    else:
        (folder / "manifest.json").mkdir()
    t, cpu = time.monotonic(), time.process_time()
    with files.folder_lock(folder, exclusive=True, wait_s=3.0) as held:
        took, spent = time.monotonic() - t, time.process_time() - cpu
    assert held
    assert took < 0.5, took  # (was: 3 s, the whole wait, at 100% CPU: params.json locked, manifest.json compared)
    assert spent < 0.5, spent


# ---------------------------------------------------------------- s55b 2: first saves racing wait for the loads
@pytest.mark.skipif(files.FCNTL is None, reason="flock")
def test_a_first_save_racing_another_waits_for_the_loads_of_the_folder_it_made(tmp_path):
    import threading
    import time

    for trial in range(3):
        folder = tmp_path / f"P{trial}"
        said: list[bool] = []
        loading = threading.Event()

        def second_save() -> None:
            with files.folder_lock(folder, exclusive=True):
                said.append(loading.is_set())

        with files.folder_lock(folder, exclusive=True):  # the first save's swap (no folder yet: nothing to lock)
            saver = threading.Thread(target=second_save)
            saver.start()
            time.sleep(0.3)  # (the second save: no record, no folder, waits for the parent)
            folder.mkdir()
            (folder / "params.json").write_text("{}")  # (the first save's rename: its folder in place)
        with files.folder_lock(folder, exclusive=False) as held:  # a load of the first save
            assert held
            loading.set()
            time.sleep(0.3)
            loading.clear()
        saver.join(30)
        assert said == [False], trial  # (was: the second save swapped its folder under the load, every time)


# ---------------------------------------------------------------- s55b 6: EBUSY at the swap says it is a mount point
def test_a_busy_folder_at_the_swap_is_said_to_be_a_mount_point(small, tmp_path, monkeypatch):
    folder = tmp_path / "ix"
    rename = Path.rename

    def busy(self: Path, target: object) -> Path:  # (a bind mount of a folder of the same file system: ismount
        if Path(os.fspath(target)).name == "ix" or self.name == "ix":  # says no, the rename onto it EBUSY)
            raise OSError(errno.EBUSY, "Device or resource busy", os.fspath(self))
        return rename(self, target)  # type: ignore[arg-type]

    monkeypatch.setattr(saves, "_exchange", lambda a, b: False)
    monkeypatch.setattr(Path, "rename", busy)
    with pytest.raises(ArtifactError, match=r"ix: the new save could not replace the folder \(Device or resource "
                                            r"busy\): it is busy, typically a mount point .*save into a folder "
                                            r"inside it, e\.g\. .*ix/index\. The new save was not kept and nothing "
                                            r"was changed at .*ix$"):
        BM25(k=3).fit(small).save(folder)  # (was: the bare OSError, no hint)
    assert _beside(folder) == [] and not folder.exists()
    monkeypatch.setattr(Path, "rename", rename)
    BM25(k=3).fit(small).save(folder)
    monkeypatch.setattr(Path, "rename", busy)
    with pytest.raises(ArtifactError, match=r"mount point .*The new save was not kept and nothing was changed: the "
                                            r"earlier save is still there$"):
        BM25(k=4).fit(small).save(folder)
    assert _beside(folder) == []
    monkeypatch.undo()
    assert Operator.load(folder).params.k == 3
