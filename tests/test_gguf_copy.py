"""The dequantized copy of a GGUF model when processes, threads and transformers versions share one cache.

Review of the copy (``ragkit/generators/local.py``): (a) two loads that both found no copy both parsed the
GGUF, and the later one replaced the other's valid copy (a reader at that moment saw it "damaged" and
wrote it again); (b) one folder per GGUF for every transformers version: two environments sharing a cache
rewrote each other's 540 MB copy at every load; (c) a copy failing its check was written and checked again
at every load.  The tiny checkpoint of ``tests/test_cachecraft.py`` stands in for the model, a file of a
few bytes for the GGUF (its "parse" loads the tiny checkpoint), and the cache is a throwaway folder.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from test_cachecraft import tiny  # noqa: F401

LOGGER = "ragkit.generators.local"


class _Records(logging.Handler):
    """The messages of ragkit's generator logger, from every thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def said():
    log = logging.getLogger(LOGGER)
    handler, level = _Records(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield handler.messages
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


@pytest.fixture
def saves(monkeypatch):
    """Count (and slow down by 0.3 s, so that writers overlap) every weight file the copy writes."""
    import safetensors.torch

    real, calls = safetensors.torch.save_model, []

    def slow_save(model, filename, *a, **kw):
        calls.append(filename)
        time.sleep(0.3)
        return real(model, filename, *a, **kw)

    monkeypatch.setattr(safetensors.torch, "save_model", slow_save)
    return calls


@pytest.fixture
def fake_gguf(tiny, tmp_path, monkeypatch):  # noqa: F811
    """A "GGUF" file (a few bytes: its fingerprint) whose parse loads the tiny checkpoint; the ragkit cache is
    ``tmp_path/cache``.  Returns (folder, file name, list of parses)."""
    import transformers

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    parses: list[str] = []
    real_tok = transformers.AutoTokenizer.from_pretrained
    real_model = transformers.AutoModelForCausalLM.from_pretrained

    def tok(name, *a, gguf_file=None, **kw):
        return real_tok(tiny[0]) if gguf_file else real_tok(name, *a, **kw)

    def model(name, *a, gguf_file=None, **kw):
        if gguf_file:
            parses.append(gguf_file)
            return real_model(tiny[0], dtype=torch.float32)
        return real_model(name, *a, **kw)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tok)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    src = tmp_path / "gguf"
    src.mkdir()
    (src / "m.gguf").write_bytes(b"GGUF stand-in")
    return str(src), "m.gguf", parses


def _tiny(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


# ----------------------------------------------------------------------------- (a) writers and readers at once
def test_two_writers_make_one_copy_a_complete_one_is_kept_and_readers_never_see_it_damaged(tiny, tmp_path, saves,  # noqa: F811
                                                                                           said):
    from ragkit.generators.local import _read_gguf_copy, _write_gguf_copy

    tok, model = _tiny(tiny[0])
    folder = tmp_path / "llm" / "file-0123" / "v"
    done, reads = threading.Event(), {"used": 0, "none": 0}

    def reader() -> None:
        while not done.is_set():
            reads["none" if _read_gguf_copy(folder, "file-0123") is None else "used"] += 1

    kept: list[bool] = []
    writers = [threading.Thread(target=lambda: kept.append(_write_gguf_copy(folder, "file-0123", tok, model)))
               for _ in range(2)]
    r = threading.Thread(target=reader)
    r.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    inode = folder.stat().st_ino
    for _ in range(3):  # later writers (a load that found no copy at its start) keep the complete copy
        assert _write_gguf_copy(folder, "file-0123", tok, model)
    deadline = time.monotonic() + 20
    while not reads["used"] and time.monotonic() < deadline:  # the reader also reads the complete copy
        time.sleep(0.05)
    done.set()
    r.join()
    assert kept == [True, True]
    assert len(saves) == 1  # the second writer waited and kept the first one's copy (old code: 2, then 5)
    assert folder.stat().st_ino == inode
    assert reads["used"] > 0 and not [m for m in said if "damaged" in m]
    assert _read_gguf_copy(folder, "file-0123") is not None
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


_CHILD = """
import os, sys, time
from pathlib import Path
import torch, transformers
tiny, src, me, other = sys.argv[1:5]
real_tok, real_model = transformers.AutoTokenizer.from_pretrained, transformers.AutoModelForCausalLM.from_pretrained
def tok(name, *a, gguf_file=None, **kw):
    return real_tok(tiny) if gguf_file else real_tok(name, *a, **kw)
def model(name, *a, gguf_file=None, **kw):
    if not gguf_file:
        return real_model(name, *a, **kw)
    deadline = time.monotonic() + 60  # both processes are loading: the parse overlaps the other's load
    while not Path(other).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)
    print("parsed", flush=True)
    return real_model(tiny, dtype=torch.float32)
transformers.AutoTokenizer.from_pretrained = tok
transformers.AutoModelForCausalLM.from_pretrained = model
from ragkit.generators.local import _load_model
Path(me).touch()
got = _load_model(src, "m.gguf")
print("source", "copy" if "gguf-copy" in got.source else "gguf", flush=True)
"""


def test_two_processes_loading_at_once_parse_the_gguf_once(fake_gguf, tiny, tmp_path):  # noqa: F811
    """The second process waits on the copy's file lock and reads the first one's copy (old code: both
    parsed the GGUF and both wrote the copy)."""
    src, _, _ = fake_gguf
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD))
    env = dict(os.environ, RAGKIT_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    flags = [str(tmp_path / f"ready{i}") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(script), tiny[0], src, flags[i], flags[1 - i]], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    text = "".join(o[0] for o in outs)
    assert text.count("parsed") == 1, text
    assert sorted(line for line in text.splitlines() if line.startswith("source")) == ["source copy", "source gguf"]


def test_the_copy_lock_holds_against_another_process(tmp_path):
    pytest.importorskip("fcntl")
    from ragkit.generators.local import _copy_lock

    folder = tmp_path / "fp" / "v"
    folder.parent.mkdir()
    hold = ("import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", hold, str(folder.parent / "v.lock")], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with _copy_lock(folder, wait=0.3) as held:
            assert not held
        assert time.monotonic() - t0 >= 0.25
    finally:
        p.communicate("")  # the holder ends: the kernel releases its lock
    with _copy_lock(folder, wait=5) as held:
        assert held
        with _copy_lock(folder, wait=0) as again:  # reentrant in its thread
            assert again
        probe = ("import fcntl, sys; f = open(sys.argv[1], 'a')\ntry:\n"
                 "    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    print('busy')")
        out = subprocess.run([sys.executable, "-c", probe, str(folder.parent / "v.lock")], capture_output=True,
                             text=True, timeout=30).stdout
        assert out.strip() == "busy"  # still held after the inner block


# ----------------------------------------------------------------------------- (b) transformers versions
def test_two_transformers_versions_sharing_a_cache_each_keep_their_copy(fake_gguf, saves, monkeypatch):
    from ragkit.encoders.sentence import model_fingerprint
    from ragkit.generators.local import _load_model, gguf_copy_dir

    src, name, parses = fake_gguf
    T = sys.modules["transformers"]
    real = T.__version__
    sources = []
    for v in ["9.9.9", real, "9.9.9", real, "9.9.9"]:
        monkeypatch.setattr(T, "__version__", v)
        sources.append(_load_model(src, name).source)
    fp = model_fingerprint(os.path.join(src, name))
    monkeypatch.setattr(T, "__version__", real)
    mine = gguf_copy_dir(fp)
    monkeypatch.setattr(T, "__version__", "9.9.9")
    theirs = gguf_copy_dir(fp)
    assert mine != theirs and mine.parent == theirs.parent and real in mine.name and "9.9.9" in theirs.name
    assert len(parses) == 2 and len(saves) == 2  # once per version (old code: at every load, 5 and 5)
    assert sources == [os.path.join(src, name)] * 2 + [str(theirs), str(mine), str(theirs)]


def test_the_first_layouts_copy_is_removed_once_the_new_one_is_made(fake_gguf, tmp_path, said, monkeypatch):
    from ragkit.encoders.sentence import model_fingerprint
    from ragkit.generators.local import _COPY_RECORD, _load_model

    src, name, _ = fake_gguf
    fp = model_fingerprint(os.path.join(src, name))
    old = tmp_path / "cache" / "llm" / fp
    old.mkdir(parents=True)
    (old / "model.safetensors").write_bytes(b"x" * 100)
    (old / _COPY_RECORD).write_text(json.dumps({"source": fp, "format": 1, "transformers": "4.0",
                                                "files": {"model.safetensors": "0" * 64}}))
    assert _load_model(src, name).source == os.path.join(src, name)  # (not read: format 1)
    assert not old.exists() and [m for m in said if m.startswith(f"removed {old}")]
    assert sorted(p.name for p in old.parent.iterdir()) == ["gguf-copy"]
    # a folder of that name holding anything else is not ragkit's to delete
    other = tmp_path / "cache2" / "llm" / fp
    other.mkdir(parents=True)
    (other / _COPY_RECORD).write_text(json.dumps({"source": fp, "format": 1, "files": {}}))
    (other / "notes.txt").write_text("mine")
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache2"))
    _load_model(src, name)
    assert (other / "notes.txt").is_file()


# ----------------------------------------------------------------------------- (c) a copy failing its check
def test_a_copy_failing_its_check_is_not_made_again_until_the_version_changes(fake_gguf, saves, said, monkeypatch):
    import ragkit.generators.local as local
    from ragkit.encoders.sentence import model_fingerprint

    src, name, parses = fake_gguf
    T, real_check = sys.modules["transformers"], local._same_model
    real_version = T.__version__
    monkeypatch.setattr(local, "_same_model", lambda a, b: "weight x (simulated)")
    monkeypatch.setattr(local, "_FAILED_NOTED", set(), raising=False)
    for _ in range(3):
        assert _load_model_source(local, src, name) == os.path.join(src, name)
    assert len(parses) == 3 and len(saves) == 1  # written and checked once (old code: 3)
    assert len([m for m in said if "differs from the GGUF" in m]) == 1
    assert len([m for m in said if "failed its check" in m and "weight x (simulated)" in m]) == 1  # once per process
    folder = local.gguf_copy_dir(model_fingerprint(os.path.join(src, name)))
    marker = folder.parent / f"{folder.name}.failed.json"
    assert json.loads(marker.read_text())["reason"] == "weight x (simulated)" and not folder.exists()
    monkeypatch.setattr(T, "__version__", "9.9.9")  # another version: tried again
    _load_model_source(local, src, name)
    assert len(saves) == 2
    monkeypatch.setattr(T, "__version__", real_version)  # the marker removed: tried again, and kept
    monkeypatch.setattr(local, "_same_model", real_check)
    marker.unlink()
    _load_model_source(local, src, name)
    assert (folder / "model.safetensors").is_file()


def _load_model_source(local, src: str, name: str) -> str:
    return local._load_model(src, name).source


def test_a_damaged_copy_is_replaced_in_one_rename(tiny, tmp_path, saves, said):  # noqa: F811
    from ragkit.generators.local import _read_gguf_copy, _write_gguf_copy

    tok, model = _tiny(tiny[0])
    folder = tmp_path / "fp" / "v"
    assert _write_gguf_copy(folder, "fp", tok, model)
    (folder / "config.json").write_text("{}")
    assert _write_gguf_copy(folder, "fp", tok, model) and len(saves) == 2
    assert _read_gguf_copy(folder, "fp") is not None
    assert sorted(p.name for p in Path(folder.parent).iterdir()) == ["v", "v.lock"]
