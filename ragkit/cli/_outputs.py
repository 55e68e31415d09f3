"""Output paths of the commands: checked (and their folders made writable) before any work starts, refused
where they would replace an input, and written atomically (or to standard output for ``-``)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.text import Text

from ragkit._files import descriptor_of, file_above, stdout_file, text_output, writes_through
from ragkit.cli._app import _RunFailure
from ragkit.cli._console import console, err_console
from ragkit.cli._options import _given
from ragkit.cli._streams import _stdout_utf8, _want_files
from ragkit.errors import RagkitError


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to the output ``path`` as UTF-8 (:func:`~ragkit._files.text_output`)."""
    with text_output(path) as f:
        f.write(text)


def _is_stdout(path: Optional[Path]) -> bool:
    """Whether an option says ``-``: standard output (an output's; the human output goes to standard error), or
    standard input (``--queries -``)."""
    return path is not None and str(path) == "-"


def _onto_stdout(path: Optional[Path]) -> bool:
    """Whether an output option writes to standard output: ``-``, or a path naming what standard output writes into
    (:func:`~ragkit._files.stdout_file`: ``--run /dev/stdout`` with standard output redirected to a file, which a
    file written and renamed there would replace, and ``open(path, "w")`` truncate).  Written as ``-`` is, after what
    standard output holds, the human output going to standard error."""
    return _is_stdout(path) or (path is not None and stdout_file(path))


def _prepare_output(path: Optional[Path], option: str, example: str, onto_stdout: bool) -> None:
    """Check before any work starts that ``path`` can be written: create its folder.  A file path (not ``-``)
    marks the command as one with files to write (:data:`_files_requested`).  ``onto_stdout``: ``path`` writes to
    standard output (:func:`_onto_stdout`, found by the caller): nothing to check."""
    if path is None or onto_stdout:
        return
    _want_files()
    if path.is_dir():
        raise RagkitError(f"{option} {path}: is a folder; expected a file path such as {path / example}")
    if writes_through(path):  # /dev/null, /dev/stdout, >(cmd): written straight into (text_output)
        # (not opened to try: a pipe's reader would take that close for the end of its input)
        if not os.access(path, os.W_OK):
            raise RagkitError(f"{option} {path}: cannot be written (no write permission)")
        return
    if path.exists() and not path.is_file():  # a socket, a block device: the renamed file would replace it
        raise RagkitError(f"{option} {path}: not a regular file, character device or pipe (a socket or a block "
                          f"device), which the written file would replace; give a file path such as "
                          f"{example}, or '-' for standard output")
    fd = descriptor_of(path)
    if fd is not None:  # /dev/stderr, /dev/fd/3: written through the descriptor (text_output), nothing made beside
        if not os.path.exists(path):
            raise RagkitError(f"{option} {path}: names file descriptor {fd}, which is not open; open it in the shell "
                              f"({fd}>>out.txt) or give a file path such as {example}")
        return
    _probe_writable(path, option)


def _probe_writable(path: Path, option: str, *, folder: bool = False) -> None:
    """Check before any work starts that the output ``path`` of ``option`` (a file; with ``folder``, a folder the
    command saves: ``train --out``) can be written, each refusal a :class:`RagkitError` that starts with
    ``<option> <path as given>: ``: no file above it, and a real write into its nearest existing folder (a
    temporary file, or folder, made and removed there: ``os.access`` says yes to root on read-only file
    systems).  The missing folders are created only when it is written (:func:`_make_folder`, the save's own):
    a command refused later (a bad --pipeline, a malformed dataset) or failing leaves no empty folder behind."""
    blocker = file_above(path)
    if blocker is not None:
        raise RagkitError(f"{option} {path}: {blocker} is a file, not a folder; choose another path")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise RagkitError(f"{option} {path}: cannot create its folder {path.parent}: {parent} is not a folder")
    # a file whose folders are missing: they are created in parent (a save creates its own missing folders)
    makes_folders = not folder and parent != path.absolute().parent
    try:
        if folder or makes_folders:  # a folder is made there
            os.rmdir(tempfile.mkdtemp(dir=parent, prefix=f".{path.name}.", suffix=".probe"))
        else:  # the file is written there
            fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".probe")
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        what = f"create its folder {path.parent} in" if makes_folders else "write into the folder"
        raise RagkitError(f"{option} {path}: cannot {what} {parent}: {e.strerror or e}") from None


def _prepare_out_folder(out: Path, option: str = "--out") -> None:
    """Check before any fit that a fitted pipeline can be saved to the folder ``out`` (``train --out``), each
    refusal starting with ``<option> <out as given>: ``: ``-`` (a saved pipeline is a folder: it cannot go to
    standard output), a file, a file above it, a folder that cannot be written (:func:`_probe_writable`), and
    what a save refuses to replace (:meth:`~ragkit._saves.atomic_dir.check`: a folder that is not a ragkit
    save, one inside a saved pipeline).  Marks the command as one with files to write."""
    from ragkit._saves import atomic_dir

    if str(out) == "-":
        raise RagkitError(f"{option} -: a fitted pipeline is saved as a folder, which cannot go to standard output; "
                          "expected a folder path such as fitted/scifact-bm25")
    _want_files()
    if out.exists() and not out.is_dir():
        raise RagkitError(f"{option} {out}: exists and is not a folder; a fitted pipeline is saved as a folder: give "
                          "a new folder's path (or an earlier save's), such as fitted/scifact-bm25")
    _probe_writable(out, option, folder=True)
    try:
        atomic_dir.check(out)
    except RagkitError as e:  # said of the resolved path ('/home/me/x: ...'): said of the option as given
        message, shown = str(e), str(out.resolve())
        e.args = (f"{option} {out}: {message[len(shown) + 2:]}" if message.startswith(f"{shown}: ") else
                  f"{option} {out}: {message}", *e.args[1:])
        raise


def _make_folder(path: Path, option: str) -> None:
    """Create the missing folders of the output ``path`` (checked by :func:`_prepare_output`), just before it is
    written; a failure is a :class:`_RunFailure` naming ``option``."""
    if writes_through(path):
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _RunFailure(f"{option} {path}: cannot create its folder {path.parent}: {e.strerror or e}") from None


def _human_output_to_stderr(ctx: typer.Context) -> None:
    """Send the human output (tables, notes, timings) to standard error for the command's duration: its
    standard output carries JSON or a run file alone, for a script."""
    console.file = sys.stderr
    ctx.call_on_close(lambda: setattr(console, "file", None))


def _prepare_outputs(ctx: typer.Context, output: Optional[Path], run_file: Optional[Path], run_tag: str, *,
                     example: str = "results.json") -> None:
    """Check ``--output`` / ``--run`` / ``--run-tag`` before any work starts (folders created, writable,
    not one path twice, a tag the run file can hold, no ``--run-tag`` without a ``--run`` file to hold it); when
    either is ``-`` the human output (tables, notes, timings) goes to standard error for the command's duration.
    ``example``: the file name a refusal of ``--output`` suggests (``ragkit compare``'s: ``comparison.json``)."""
    if run_file is None and _given(ctx, "run_tag"):
        raise RagkitError(f"--run-tag {run_tag!r}: the tag column of the --run file, but no --run is given, so it "
                          "would be ignored; add --run FILE (or '-' for standard output), or leave out --run-tag")
    out_std, run_std = _onto_stdout(output), _onto_stdout(run_file)
    if out_std or run_std:
        _human_output_to_stderr(ctx)
    if out_std and run_std:
        raise RagkitError(f"--output {output} and --run {run_file} both name standard output, where the JSON results "
                          "and the run would run together; write one of them to a file (--run run.trec)")
    if output is not None and run_file is not None and not out_std and not run_std \
            and output.resolve() == run_file.resolve() and not writes_through(output):  # (/dev/null: nothing lost)
        raise RagkitError(f"--output and --run both name {output}; the run file would replace the JSON results: "
                          "give two paths")
    if run_file is not None:  # the tag column: no whitespace (the file's columns), not empty
        from ragkit.run import check_trec_ids

        check_trec_ids(f"--run-tag {run_tag!r}", [], [], run_tag)
    _prepare_output(output, "--output", example, out_std)
    _prepare_output(run_file, "--run", "run.trec", run_std)


def _check_not_inside(path: Optional[Path], option: str, folder: Path, what: str) -> None:
    """Refuse an output ``path`` inside ``folder`` (resolved: links and ``..`` followed), a saved pipeline or
    index the command reads (``what``: ``--index idx``): the write would replace a file of it, which its
    checksums would then refuse."""
    if path is None or _is_stdout(path) or not folder.is_dir():
        return
    inside, target = folder.resolve(), path.resolve()
    if target == inside or inside in target.parents:
        raise RagkitError(f"{option} {path}: inside {what}, the saved folder this command reads; writing there "
                          f"would replace its files (and its checksums would refuse it): give a path outside it, "
                          f"such as {'results.json' if option == '--output' else 'run.trec'}")


def _check_not_an_input(path: Optional[Path], option: str, pipeline: str, data: str) -> None:
    """Refuse an output ``path`` that is the ``--pipeline`` file, inside the ``--pipeline`` saved folder or a
    file of the ``--data`` folder (corpus, queries, qrels): the results would replace what the command reads."""
    if path is None or _is_stdout(path):
        return
    _check_not_inside(path, option, Path(pipeline), f"--pipeline {pipeline}")
    folder = Path(data)
    inputs = {Path(pipeline).resolve(): "the --pipeline file"} if Path(pipeline).is_file() else {}
    if folder.is_dir():
        for f in (folder / "corpus.jsonl", folder / "queries.jsonl", *folder.glob("qrels/*.tsv"),
                  *folder.glob("*/corpus.jsonl"), *folder.glob("*/queries.jsonl"), *folder.glob("*/qrels/*.tsv")):
            inputs[f.resolve()] = f"a file of --data {data}"
    if path.resolve() in inputs:
        raise RagkitError(f"{option} {path}: is {inputs[path.resolve()]}; writing there would replace it: give another "
                          f"path, such as {'results.json' if option == '--output' else 'run.trec'}")


def _write_outputs(output: Optional[Path], run_file: Optional[Path], run: Any,
                   payload: Callable[[], dict[str, Any]], tag: str = "ragkit") -> None:
    """Write a command's JSON (what ``payload()`` returns, to ``output``) and TREC run file (``run``, to
    ``run_file``; ``None``: none, as for ``ragkit compare``), each atomically or alone on standard output (``-``); a
    failed write is a :class:`_RunFailure` naming the option and the path.  ``payload`` is called only when
    ``output`` is given, once: a command's JSON (a dict per document found, its provenance) is built only for ``-o``."""
    data = payload() if output is not None else None
    for option, path in (("--output", output), ("--run", run_file)):
        if path is None:
            continue
        if _onto_stdout(path):  # for a script: the JSON or the run alone on standard output, UTF-8 whatever the locale
            with _stdout_utf8() as out:
                if option == "--output":
                    out.write(json.dumps(data, indent=2) + "\n")
                else:
                    run.to_trec(out, tag)
            continue
        _make_folder(path, option)
        try:
            if option == "--output":
                _write_text(path, json.dumps(data, indent=2))
            else:
                run.write_trec(path, tag)
        except OSError as e:
            raise _RunFailure(f"{option} {path}: could not be written: {e.strerror or e}") from None
        err_console.print(Text(f"wrote {path}"), soft_wrap=True)  # (a status line: stderr, as every note)
