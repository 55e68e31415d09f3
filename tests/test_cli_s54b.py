"""CLI s54, second review: outputs named by a file descriptor (``/dev/stderr``, ``/dev/fd/3``) written through it,
``/dev/stdout`` on a terminal is standard output, the stale-temporary-file cleanup inside :func:`atomic_file` and kept
to the output's own names, and the JSON payloads built only for ``-o``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_cli_s54 import _index, _ragkit

# ------------------------------------------------------------------ 1. outputs named by a file descriptor


def test_run_to_dev_stderr_appends_to_the_file_standard_error_is_redirected_to(tmp_path):
    """``--run /dev/stderr 2>>err.log`` replaced err.log with the run (a temporary file renamed over /dev/stderr's
    target): its earlier line and ragkit's own stderr lines were lost.  Now written through descriptor 2."""
    idx = _index(tmp_path / "idx")
    log = tmp_path / "err.log"
    log.write_text("line kept from an earlier run\n", encoding="utf-8")
    with open(log, "a", encoding="utf-8") as err:
        done = _ragkit("search", "--index", idx, "cats", "--run", "/dev/stderr", cwd=tmp_path, stdout=subprocess.PIPE,
                       stderr=err, text=True)
    text = log.read_text(encoding="utf-8")
    assert done.returncode == 0, text
    lines = text.splitlines()
    assert lines[0] == "line kept from an earlier run", lines
    assert any(line.split()[:3] == ["1", "Q0", "d2"] for line in lines), lines
    assert "searched 1 query" in text


def test_run_to_dev_fd_n_appends_to_the_file_that_descriptor_writes(tmp_path):
    """``--run /dev/fd/3 3>>fd.log`` exited 2 with a false "cannot write into the folder /dev/fd" (a probe file made
    in procfs).  Now written through the descriptor, after what the file holds; a descriptor not open is refused
    before any work, naming it."""
    idx = _index(tmp_path / "idx")
    log = tmp_path / "fd.log"
    log.write_text("old\n", encoding="utf-8")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        done = _ragkit("search", "--index", idx, "cats", "--run", f"/dev/fd/{fd}", cwd=tmp_path, pass_fds=(fd,),
                       capture_output=True, text=True)
    finally:
        os.close(fd)
    assert done.returncode == 0, done.stderr
    lines = log.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "old" and lines[1].split()[:3] == ["1", "Q0", "d2"], lines
    assert list(tmp_path.glob(".*.tmp*")) == []
    done = _ragkit("search", "--index", idx, "cats", "--run", "/dev/fd/57", cwd=tmp_path, capture_output=True,
                   text=True)
    assert done.returncode == 2, done.stderr
    assert "--run /dev/fd/57: names file descriptor 57, which is not open" in " ".join(done.stderr.split())


def test_descriptor_of_names_the_descriptor_a_path_writes():
    from ragkit._files import descriptor_of

    assert [descriptor_of(p) for p in ("/dev/stdin", "/dev/stdout", "/dev/stderr", "/dev/fd/3",
                                       "/proc/self/fd/12", Path("/dev/fd/4"))] == [0, 1, 2, 3, 12, 4]
    assert descriptor_of("/dev/null") is None and descriptor_of("/dev/fd/x") is None
    assert descriptor_of("run.trec") is None


# ------------------------------------------------------------------ 2. /dev/stdout on a terminal is standard output


def _on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """``python -m ragkit args`` with its standard streams on a pseudo-terminal: exit status and what it wrote."""
    import pty

    pid, master = pty.fork()
    if pid == 0:  # (the child: its streams are the terminal)
        try:
            os.chdir(cwd)
            os.execv(sys.executable, [sys.executable, "-m", "ragkit", *args])
        finally:
            os._exit(127)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # (EIO: the child closed the terminal)
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode("utf-8", "replace")


def test_json_and_run_both_onto_a_terminal_s_standard_output_are_refused(tmp_path):
    """On a terminal, ``-o - --run /dev/stdout`` (and ``-o /dev/stdout --run /dev/stdout``) was taken and printed both
    together (a character device was never standard output's file): now refused as ``-o - --run -`` is.  Both to
    /dev/null: still taken."""
    idx = _index(tmp_path / "idx")
    for output in ("-", "/dev/stdout"):
        code, said = _on_a_terminal(["search", "--index", str(idx), "cats", "-o", output, "--run", "/dev/stdout"],
                                    tmp_path)
        assert code == 2, said
        assert f"--output {output} and --run /dev/stdout both name standard output" in " ".join(said.split()), said
    code, said = _on_a_terminal(["search", "--index", str(idx), "cats", "-o", "/dev/null", "--run", "/dev/null"],
                                tmp_path)
    assert code == 0 and "searched 1 query" in said, said


# ------------------------------------------------------------------ 3. the stale-temporary-file cleanup in atomic_file


def _dead_pid() -> int:
    """The process id of a process that has ended."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=60)
    return int(done.stdout)


def test_a_dangling_link_is_refused_without_touching_its_target_s_folder(tmp_path):
    """``out.trec`` a dangling link to ``d/x.trec``: text_output removed the temporary files a dead writer left in d
    (its own rule for links) before atomic_file refused the link.  Now the cleanup is atomic_file's, after its
    refusal: d is left as it was."""
    import pytest

    from ragkit._files import owner_tag, text_output
    from ragkit.errors import ArtifactError

    (tmp_path / "d").mkdir()
    left = tmp_path / "d" / f".x.{_dead_pid()}{owner_tag()[owner_tag().index('@'):]}-0123abcd.tmp.trec"
    left.write_text("half", encoding="utf-8")
    (tmp_path / "out.trec").symlink_to(tmp_path / "d" / "x.trec")
    with pytest.raises(ArtifactError, match="exists and is not a regular file"):
        with text_output(tmp_path / "out.trec") as f:
            f.write("1 Q0 d1 1 1.0 t\n")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [left.name]
    (tmp_path / "d" / "x.trec").write_text("old\n", encoding="utf-8")  # the link's target now there: written, cleaned
    with text_output(tmp_path / "out.trec") as f:
        f.write("new\n")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["x.trec"]
    assert (tmp_path / "out.trec").read_text(encoding="utf-8") == "new\n" and (tmp_path / "out.trec").is_symlink()


def test_remove_stale_tempfiles_of_one_output_reads_only_names_of_its_own(tmp_path, monkeypatch):
    """remove_stale_tempfiles(name=) listed the whole folder as a Path per entry and matched every hidden temporary
    name against its pattern, on every write of an output (49 ms a call in a 50,000-file folder).  Now the names
    alone are listed and filtered by the output's own start first: no Path and no match for the others."""
    import pathlib

    import ragkit._files as files

    (tmp_path / "data.trec").write_text("x", encoding="utf-8")
    for i in range(20):
        (tmp_path / f".other{i}.{_dead_pid() if i == 0 else 1}@h-0123abcd.tmp.trec").write_text("x", encoding="utf-8")
    mine = tmp_path / f".run.{_dead_pid()}{files.owner_tag()[files.owner_tag().index('@'):]}-0123abcd.tmp.trec"
    mine.write_text("half", encoding="utf-8")
    matched: list[str] = []

    class Spy:
        def fullmatch(self, text: str):  # noqa: ANN201
            matched.append(text)
            return files._TEMPFILE_REAL.fullmatch(text)

    monkeypatch.setattr(files, "_TEMPFILE_REAL", files._TEMPFILE, raising=False)
    monkeypatch.setattr(files, "_TEMPFILE", Spy())

    def no_iterdir(self):  # noqa: ANN001, ANN202
        raise AssertionError(f"{self}: listed as a Path per entry")

    monkeypatch.setattr(pathlib.Path, "iterdir", no_iterdir)
    removed = files.remove_stale_tempfiles(tmp_path, name="run.trec")
    assert [p for p, _ in removed] == [mine] and matched == [mine.name]
    assert len(list(tmp_path.glob(".other*"))) == 20


# ------------------------------------------------------------------ 4. the JSON built only for -o


def test_compare_builds_its_json_only_when_output_is_given(tmp_path, monkeypatch):
    """``ragkit compare`` without -o built ``Comparison.to_dict()`` all the same and threw it away; each command's
    JSON is now built by _write_outputs, and only for -o."""
    import json

    from conftest import cli as _cli, tiny_beir as _tiny

    from ragkit.eval.compare import Comparison

    data = _tiny(tmp_path / "tiny")
    (tmp_path / "flat.yaml").write_text("pipeline:\n  - bm25: {k1: 0.2, b: 0.0}\n", encoding="utf-8")
    for name, pipe in (("bm25", "bm25"), ("flat", tmp_path / "flat.yaml")):
        res = _cli("eval", "--data", data, "-p", pipe, "-o", tmp_path / f"{name}.json")
        assert res.exit_code == 0, res.output
    calls: list[int] = []
    to_dict = Comparison.to_dict
    monkeypatch.setattr(Comparison, "to_dict", lambda self: calls.append(1) or to_dict(self))
    res = _cli("compare", tmp_path / "bm25.json", tmp_path / "flat.json", "--data", data)
    assert res.exit_code == 0, res.output
    assert calls == []
    res = _cli("compare", tmp_path / "bm25.json", tmp_path / "flat.json", "--data", data, "-o", tmp_path / "c.json")
    assert res.exit_code == 0, res.output
    assert calls == [1] and json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))
