"""Caches and saved folders on shared disks, interrupted runs and other systems.

Temporary files of a writer in another PID namespace of the same host (containers sharing a folder) are not
taken for an ended writer's; an interrupted encode keeps the chunks it finished; a shard's vectors left without
their keys file are removed once old; a cache warning points at the caller's line; checksums read with '/'
(a save written on Windows loads on Linux); a missing local model folder says so."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from ragkit import _files
from ragkit._files import (
    atomic_file,
    folder_checksums,
    owner_ended,
    remove_stale_tempdirs,
    remove_stale_tempfiles,
    shared_tempdir,
    verify_checksums,
)
from ragkit.encoders import cache as cache_mod
from ragkit.encoders.cache import EmbeddingCache, sweep_stale_tempfiles
from ragkit.errors import ArtifactError, ParamError

HAS_PID_NS = os.path.exists("/proc/self/ns/pid")
OLD = time.time() - 3 * 24 * 3600


def _host() -> str:
    import socket

    return socket.gethostname()


def _ended_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _tmpfiles(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if ".tmp" in p.name]


# ---------------------------------------------------------------- temporary files of other PID namespaces
@pytest.mark.skipif(not HAS_PID_NS, reason="no PID namespaces here")
def test_a_live_writer_of_another_pid_namespace_keeps_its_temporary_file(tmp_path, monkeypatch):
    """A sweeper in another container of the host sees no process of the writer's id (``_alive`` false there):
    the writer's temporary file stays while it is fresh."""
    with atomic_file(tmp_path / "x.npy", owner=True) as tmp:
        tmp.write_bytes(b"half written")
        monkeypatch.setattr(_files, "_alive", lambda pid: False)  # the writer's pid, seen from another namespace
        monkeypatch.setattr(_files, "_pid_namespace", lambda: 1, raising=False)
        assert remove_stale_tempfiles(tmp_path) == []
        assert tmp.exists()
        monkeypatch.undo()
    assert (tmp_path / "x.npy").read_bytes() == b"half written"


@pytest.mark.skipif(not (HAS_PID_NS and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("unshare")),
                    reason="needs root and unshare(1) to make a PID namespace")
def test_a_sweeper_in_a_real_other_pid_namespace_leaves_a_live_writers_file(tmp_path):
    """``unshare --pid --fork --mount-proc``: this process's id is not visible to the sweeper there."""
    code = ("import sys; from pathlib import Path; from ragkit._files import remove_stale_tempfiles; "
            "print(len(remove_stale_tempfiles(Path(sys.argv[1]))))")
    with atomic_file(tmp_path / "x.npy", owner=True) as tmp:
        tmp.write_bytes(b"half written")
        out = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code, str(tmp_path)],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0 and "unshare" in out.stderr:
            pytest.skip(f"unshare refused here: {out.stderr.strip()[:200]}")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "0"
        assert tmp.exists()
    assert (tmp_path / "x.npy").read_bytes() == b"half written"


@pytest.mark.skipif(not HAS_PID_NS, reason="no PID namespaces here")
def test_temporary_files_of_another_namespace_are_removed_once_old(tmp_path):
    ours = _files._pid_namespace()
    dead = _ended_pid()
    host = _host()
    fresh = tmp_path / f".a.{os.getpid()}@{host}@{ours + 1}-0123abcd.tmp.npy"
    old = tmp_path / f".b.{os.getpid()}@{host}@{ours + 1}-0123abcd.tmp.npy"
    ended_here = tmp_path / f".c.{dead}@{host}@{ours}-0123abcd.tmp.npy"
    live_here = tmp_path / f".d.{os.getpid()}@{host}@{ours}-0123abcd.tmp.npy"
    ended_old_format = tmp_path / f".e.{dead}@{host}-0123abcd.tmp.npy"
    other_host = tmp_path / f".f.{dead}@not-{host}@{ours}-0123abcd.tmp.npy"
    for p in (fresh, old, ended_here, live_here, ended_old_format, other_host):
        p.write_bytes(b"x")
    os.utime(old, (OLD, OLD))
    removed = {p for p, _ in remove_stale_tempfiles(tmp_path)}
    assert removed == {old, ended_here, ended_old_format}
    assert owner_ended(old.name, ".b.", host) is False  # (no path to judge its age by: kept)
    assert owner_ended(f".b.{dead}@{host}@{ours}-0123abcd.tmp.npy", ".b.", host) is True


@pytest.mark.skipif(not HAS_PID_NS, reason="no PID namespaces here")
def test_temporary_folders_carry_the_namespace_and_another_ones_stay_until_old(tmp_path):
    ours = _files._pid_namespace()
    made = shared_tempdir(tmp_path, ".save.tmp-")
    assert made.name.startswith(f".save.tmp-{os.getpid()}@{_host()}@{ours}-")
    foreign = tmp_path / f".save.tmp-{os.getpid()}@{_host()}@{ours + 1}-abc_123x"
    (foreign / "sub").mkdir(parents=True)
    (foreign / "sub" / "f").write_bytes(b"x")
    assert remove_stale_tempdirs(tmp_path, ".save.tmp-") == []
    for p in (foreign / "sub" / "f", foreign / "sub", foreign):
        os.utime(p, (OLD, OLD))
    (foreign / "sub" / "g").write_bytes(b"still written")  # (a file written now inside: not idle)
    os.utime(foreign / "sub", (OLD, OLD))
    assert remove_stale_tempdirs(tmp_path, ".save.tmp-") == []
    os.utime(foreign / "sub" / "g", (OLD, OLD))
    assert remove_stale_tempdirs(tmp_path, ".save.tmp-") == [foreign]
    assert made.is_dir()


def test_liveness_on_windows_does_not_send_signal_0(monkeypatch):
    """``os.kill(pid, 0)`` is CTRL_C_EVENT on Windows: the check asks OpenProcess there instead."""
    def no_kill(pid, sig):
        raise AssertionError("os.kill called on Windows")

    monkeypatch.setattr(_files, "_alive_nt", lambda pid: pid == 7, raising=False)
    monkeypatch.setattr(os, "kill", no_kill)
    monkeypatch.setattr(os, "name", "nt")
    try:
        seen = (_files._alive(7), _files._alive(8))
    finally:
        monkeypatch.undo()
    assert seen == (True, False)


# ---------------------------------------------------------------- the embedding cache
def _vectors(texts: list[str]) -> np.ndarray:
    out = np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_an_interrupted_encode_keeps_the_chunks_it_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "COMPUTE_CHUNK", 10)
    texts = [f"document number {i}" for i in range(100)]
    calls: list[int] = []

    def dies_after_90(batch: list[str]) -> np.ndarray:
        if sum(calls) + len(batch) > 90:
            raise KeyboardInterrupt  # (the process killed while encoding the 91st text)
        calls.append(len(batch))
        return _vectors(batch)

    with pytest.raises(KeyboardInterrupt):
        EmbeddingCache(tmp_path, "k").fetch_or_compute(texts, dies_after_90)
    assert calls == [10] * 9  # batches, never one text at a time

    again: list[int] = []
    vecs, n = EmbeddingCache(tmp_path, "k").fetch_or_compute(texts, lambda b: (again.append(len(b)), _vectors(b))[1])
    assert (n, again) == (10, [10])
    np.testing.assert_allclose(vecs, _vectors(texts), atol=1e-6)
    vecs, n = EmbeddingCache(tmp_path, "k").fetch_or_compute(texts, lambda b: pytest.fail("all cached"))
    assert n == 0
    np.testing.assert_allclose(vecs, _vectors(texts), atol=1e-6)


def test_a_shard_without_its_keys_is_removed_once_old(tmp_path):
    """A writer killed between renaming a shard's vectors and its keys left ``<name>.npy`` alone for good."""
    folder = tmp_path / "m"
    folder.mkdir()
    old, fresh, whole = "a" * 32, "b" * 32, "c" * 32
    for name in (old, fresh, whole):
        np.save(folder / f"{name}.npy", np.zeros((2, 3), np.float32))
    np.save(folder / f"{old}.offsets.npy", np.zeros(3, np.int64))  # (a token shard's second file)
    np.save(folder / f"{whole}.keys.npy", np.zeros(2, "V16"))
    np.save(folder / "codebook.npy", np.zeros(2))  # (not a shard: another cache's file)
    for p in (folder / f"{old}.npy", folder / f"{old}.offsets.npy", folder / f"{whole}.npy",
              folder / f"{whole}.keys.npy", folder / "codebook.npy"):
        os.utime(p, (OLD, OLD))
    freed = sweep_stale_tempfiles(folder)
    assert freed > 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{fresh}.npy", f"{whole}.npy", f"{whole}.keys.npy", "codebook.npy"])


def test_a_cache_that_cannot_be_written_warns_at_the_callers_line(tmp_path):
    below_a_file = tmp_path / "afile"
    below_a_file.write_text("x")
    for call in (lambda c: c.fetch_or_compute(["a", "b"], _vectors),
                 lambda c: c.put(np.zeros(1, "V16"), np.ones((1, 3), np.float32))):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call(EmbeddingCache(below_a_file, "k"))
        [w] = [w for w in caught if "cannot be written" in str(w.message)]
        assert w.filename == __file__, w.filename


# ---------------------------------------------------------------- checksums and fingerprints across systems
def test_checksums_use_slashes_and_backslashed_ones_verify(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.txt").write_text("hello")
    digests = folder_checksums(tmp_path)
    assert list(digests) == ["a/b.txt"]
    verify_checksums(tmp_path, {"a\\b.txt": digests["a/b.txt"]})  # (a record written on Windows)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        verify_checksums(tmp_path, {"a\\b.txt": "0" * 64})
    with pytest.raises(ArtifactError, match="not a path inside the folder"):
        verify_checksums(tmp_path, {"..\\secret": "0" * 64})


@pytest.mark.skipif(os.sep != "/", reason="a backslash is a separator here")
def test_a_file_named_with_a_backslash_still_verifies(tmp_path):
    (tmp_path / "x\\y").write_text("z")
    verify_checksums(tmp_path, folder_checksums(tmp_path))


def test_a_pipeline_saved_with_backslashed_checksums_loads_and_saves_over(tmp_path):
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    corpus = Corpus.from_texts(["red apples are sweet", "green pears", "the heart pumps blood"])
    Pipeline([BM25(k=2)]).fit(corpus).save(tmp_path / "save")
    manifest = json.loads((tmp_path / "save" / "manifest.json").read_text())
    assert any("/" in k for k in manifest["sha256"])
    manifest["sha256"] = {k.replace("/", "\\"): v for k, v in manifest["sha256"].items()}  # as Windows wrote them
    (tmp_path / "save" / "manifest.json").write_text(json.dumps(manifest))
    loaded = Pipeline.load(tmp_path / "save")
    assert len(loaded.search(["apples"])) == 1
    loaded.save(tmp_path / "save")  # (its files are its own, not another's to keep)


def test_a_model_folder_fingerprint_hashes_paths_with_slashes(tmp_path):
    """No change on Linux: the relative paths were 'a/b' already; on Windows they were 'a\\\\b'."""
    from ragkit.encoders.sentence import model_fingerprint

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.json").write_text('{"x": 1}')
    h = hashlib.sha1()
    for rel in ("a/b.json", "config.json"):
        h.update(rel.encode())
        h.update((tmp_path / rel).read_bytes())
    assert model_fingerprint(str(tmp_path)) == f"st-{h.hexdigest()[:16]}"


# ---------------------------------------------------------------- a model folder that is gone
@pytest.mark.parametrize("model", ["/no/such/folder/mymodel", "./no-such-model-folder", "../no-such-model-folder"])
def test_a_missing_local_model_folder_is_a_clear_error(model):
    from ragkit.encoders.sentence import Encoder, model_fingerprint

    with pytest.raises(ParamError, match=r"names a folder that does not exist \(a local model folder or file: moved or "
                                         r"deleted.*names its model in its params\.json"):
        model_fingerprint(model)
    with pytest.raises(ParamError, match=rf"model '{model}' names a folder that does not exist"):
        Encoder(model)
    assert model_fingerprint("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"


def test_a_model_path_with_a_tilde_says_it_is_not_expanded(tmp_path, monkeypatch):
    from ragkit.encoders.sentence import model_fingerprint

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mymodel").mkdir()
    with pytest.raises(ParamError, match=r"without expanding '~'.*name it as '.*mymodel'"):
        model_fingerprint("~/mymodel")
