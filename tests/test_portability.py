"""Saves, scratch folders, dataset files and suggested command lines on other systems than Linux, simulated here:
a save whose folder swap fails (on Windows, a folder holding a memory-mapped or open file cannot be renamed)
keeps the earlier save, leaves no copy of the new one, and says why; an index's scratch folder is named after
its process, so a later process removes one whose cleanup failed (Windows cannot delete a mapped file); a
dataset's split names must be file names everywhere; suggested command lines are quoted for the system's
shell."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import ragkit._files as files
import ragkit._saves as saves
from ragkit.errors import ArtifactError, DataError
from ragkit.eval import write_beir
from ragkit.eval.compare import eval_command
from ragkit.operator import Operator
from ragkit.retrievers import BM25
from ragkit.types import Corpus

TEXTS = ["red apples are sweet", "green pears and red apples", "the heart pumps blood", "blood cells carry oxygen",
         "apples keep doctors away", "oxygen for the heart"]


@pytest.fixture
def small() -> Corpus:
    return Corpus.from_texts(TEXTS)


def _beside(folder: Path) -> list[str]:
    """What a save left beside ``folder``: its temporary folders and earlier saves moved aside."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def _two_renames(monkeypatch: pytest.MonkeyPatch, refuse: Callable[[Path, Path], OSError | None]) -> None:
    """Saves swap by two renames (no ``renameat2``: Windows, macOS), and ``Path.rename(src, dst)`` raises
    what ``refuse(src, dst)`` returns (``None``: renames)."""
    monkeypatch.setattr(saves, "_exchange", lambda a, b: False)
    rename = Path.rename

    def ren(self: Path, target: "str | Path") -> Path:
        error = refuse(Path(self), Path(target))
        if error is not None:
            raise error
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", ren)


def _in_use(path: Path) -> PermissionError:
    return PermissionError(errno.EACCES, "[WinError 5] Access is denied", str(path))


# ---------------------------------------------------------------- a failed swap keeps the earlier save
def test_a_folder_that_cannot_be_moved_aside_keeps_its_save_and_no_copy_of_the_new_one(small, tmp_path,
                                                                                      monkeypatch):
    folder = tmp_path / "ix"
    BM25(k=3).fit(small).save(folder)
    _two_renames(monkeypatch, lambda src, dst: _in_use(src) if src.resolve() == folder.resolve() else None)
    with pytest.raises(ArtifactError, match=r"could not replace the earlier save.*in use.*memory-mapped.*nothing "
                                            r"was changed: the earlier save is still there.*Save to another folder"):
        BM25(k=4).fit(small).save(folder)
    assert _beside(folder) == []  # (was: the whole new save, .ix.tmp-*, left beside it)
    monkeypatch.undo()
    assert Operator.load(folder).params.k == 3


def test_a_new_save_that_cannot_be_renamed_into_place_puts_the_earlier_one_back(small, tmp_path, monkeypatch):
    folder = tmp_path / "ix"
    BM25(k=3).fit(small).save(folder)
    _two_renames(monkeypatch, lambda src, dst: _in_use(src) if ".tmp-" in src.name else None)
    with pytest.raises(ArtifactError, match=r"nothing was changed: the earlier save is still there"):
        BM25(k=4).fit(small).save(folder)
    assert _beside(folder) == []  # (was: ix missing, .ix.old-* and .ix.tmp-* beside it)
    monkeypatch.undo()
    assert Operator.load(folder).params.k == 3


def test_another_error_of_the_swap_stays_as_it_is_and_names_where_the_earlier_save_is(small, tmp_path, monkeypatch,
                                                                                    caplog):
    folder = tmp_path / "ix"
    BM25(k=3).fit(small).save(folder)
    eio = OSError(errno.EIO, "Input/output error")  # (a network file system's: retryable, not renamed)
    _two_renames(monkeypatch, lambda src, dst: eio if ".tmp-" in src.name or ".old-" in src.name else None)
    with pytest.raises(OSError) as err:
        BM25(k=4).fit(small).save(folder)
    assert err.value is eio
    assert not folder.exists() and [n.split("-")[0] for n in _beside(folder)] == [".ix.old"]  # no .tmp- copy
    assert any(".ix.old-" in r.getMessage() and "rename it back" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    assert Operator.load(folder).params.k == 3  # (the next load puts it back)


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs /proc/self/maps to see mapped files")
def test_resaving_into_the_folder_a_mapped_operator_was_loaded_from_says_why_it_cannot(small, tmp_path,
                                                                                      monkeypatch):
    """Windows' rule simulated: a folder holding a file this process maps cannot be renamed."""
    folder = tmp_path / "ix"
    BM25(k=3).fit(small).save(folder)

    def mapped_inside(src: Path, dst: Path) -> PermissionError | None:
        inside = str(src.resolve()) + os.sep
        held = any(line.split(None, 5)[-1].strip().startswith(inside)
                   for line in Path("/proc/self/maps").read_text().splitlines() if len(line.split(None, 5)) == 6)
        return _in_use(src) if held else None

    op = BM25.load(folder, mmap=True)
    _two_renames(monkeypatch, mapped_inside)
    with pytest.raises(ArtifactError, match=r"an operator loaded from it"):
        op.save(folder)
    assert _beside(folder) == []
    op.save(tmp_path / "other")  # the way out the error gives
    monkeypatch.undo()
    assert Operator.load(tmp_path / "other").params.k == 3 and Operator.load(folder).params.k == 3


# ---------------------------------------------------------------- the command that saves a format 1 folder again
def _format_1(folder: Path) -> None:
    (folder / saves.CHECKSUMS).unlink()
    meta = json.loads((folder / "params.json").read_text())
    (folder / "params.json").write_text(json.dumps({**meta, "format_version": 1}))


def test_the_command_that_saves_a_folder_again_saves_beside_it_on_windows(small, tmp_path, monkeypatch):
    folder = tmp_path / "my ix"
    BM25(k=3).fit(small).save(folder)
    _format_1(folder)
    monkeypatch.setattr(files, "_cmd_shell", lambda: True)
    monkeypatch.setattr(saves, "_cmd_shell", lambda: True)
    with pytest.raises(ArtifactError) as err:
        Operator.load(folder)
    message = str(err.value)
    resaved = folder.with_name("my ix-resaved")
    code = (f"from ragkit import Operator; Operator.load({json.dumps(str(folder))}, verify=False)"
            f".save({json.dumps(str(resaved))})")
    assert f"from a shell: python -c {subprocess.list2cmdline([code])}, then delete my ix and rename my ix-resaved " \
           "to my ix" in message  # (was: in place, which Windows refuses while the loaded operator maps its files)
    assert "'" not in subprocess.list2cmdline([code])  # (cmd.exe does not quote with ')
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    assert Operator.load(resaved).params.k == 3


# ---------------------------------------------------------------- an index's scratch folder
def _ended_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_scratch_folder_left_by_an_ended_process_is_removed_by_the_next(tmp_path, monkeypatch):
    """On Windows an index's cleanup cannot delete its still-mapped float vectors file, so its scratch folder
    stayed in the temporary folder for good: named after its process now, the next index's removes it."""
    import tempfile

    from ragkit.retrievers._index import VectorIndex

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ns = files._pid_namespace()
    tag = f"{_ended_pid()}@{socket.gethostname()}" + (f"@{ns}" if ns is not None else "")
    stale = tmp_path / f"ragkit-index-{tag}-abcd1234"
    stale.mkdir()
    np.save(stale / "floats-x.npy", np.zeros((4, 8), np.float32))
    live = tmp_path / f"ragkit-index-{files.owner_tag()}-live1234"  # this process's: kept
    live.mkdir()
    index = VectorIndex(dtype="b1", rescore=True, search="exact").build(
        np.random.default_rng(0).standard_normal((20, 16)).astype(np.float32))
    assert index.floats is not None
    left = sorted(p.name for p in tmp_path.iterdir())
    assert stale.name not in left and live.name in left
    assert [n for n in left if n != live.name and n.startswith(f"ragkit-index-{files.owner_tag()}-")]


# ---------------------------------------------------------------- split names that are file names everywhere
@pytest.mark.parametrize(("splits", "said"), [
    (("test", "Test"), r"split names 'test' and 'Test' differ only in case"),
    (("test", "dev:v2"), r"split name 'dev:v2' holds ':'.*stream of the file qrels/dev"),
    (("test", "a?b"), r"split name 'a\?b' holds '\?', which a file name cannot hold on Windows"),
    (("con",), r"split name 'con' is a device name on Windows"),
])
def test_split_names_that_windows_or_macos_cannot_keep_apart_are_refused(small, tmp_path, splits, said):
    qrels = {s: {"q1": {small.ids[0]: 1}} for s in splits}
    with pytest.raises(DataError, match=said):
        write_beir(tmp_path / "ds", small, {"q1": "red apples"}, qrels)
    assert not (tmp_path / "ds").exists()


# ---------------------------------------------------------------- command lines quoted for the system's shell
def test_suggested_command_lines_are_quoted_for_the_systems_shell(monkeypatch):
    from ragkit.cli._train import _eval_hint

    path = "my data/it's.yaml"
    assert eval_command(path, "scifact") == "ragkit eval --data scifact --split test --pipeline " \
                                            "'my data/it'\"'\"'s.yaml' -o 'it'\"'\"'s.json'"
    monkeypatch.setattr(files, "_cmd_shell", lambda: True)
    assert files.shell_quote(r"C:\my data\x") == r'"C:\my data\x"' and files.shell_quote("") == '""'
    assert eval_command(path, "scifact") == \
        'ragkit eval --data scifact --split test --pipeline "my data/it\'s.yaml" -o it\'s.json'
    assert _eval_hint(["train", "dev"], "train", "my data", Path("out dir")) == \
        ' (evaluate with: ragkit eval --data "my data" --pipeline "out dir" --split dev)'
