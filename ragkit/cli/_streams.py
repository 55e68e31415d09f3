"""Standard output and standard error while :func:`~ragkit.cli._main.main` runs: writes that never fail (a
reader that closed the pipe, a full disk), their failures recorded for the exit status, UTF-8 output for programs,
and the process-wide flags of that machinery (every other module reads and sets them through this module)."""

from __future__ import annotations

import codecs
import io
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import typer
from rich.text import Text

from ragkit.cli._console import FALLBACK_ERRORS, err_console

#: The first failed write of each standard stream while :func:`main` runs (``"stdout"``, ``"stderr"``: the
#: :class:`OSError`), recorded by :class:`_GuardedStream` and :func:`_stdout_utf8`; :func:`main` turns it into the
#: exit status (:func:`_stream_failed`) once the command has finished.
_stream_errors: dict[str, OSError] = {}


#: Whether the running command was asked to write a file (``-o``/``--run`` given a path, not ``-``; ``train``'s
#: ``--out`` folder): then a closed standard output does not stop it (:func:`_reader_gone`).  Set by
#: :func:`_want_files`, cleared by :func:`_new_command`.
_files_requested = False


#: Whether standard error writes where standard output does (``2>&1 | head``): then its reader closing the pipe is
#: standard output's too (:func:`_reader_gone`).  Set by :func:`main` (:func:`_same_stream`).
_stderr_is_stdout = False


def _new_command() -> None:
    """Start a command with nothing of an earlier one on record: no failed standard stream
    (:data:`_stream_errors`), no file asked for (:data:`_files_requested`), no failure being reported
    (:data:`_reporting_failure`).  Called by :func:`~ragkit.cli._main.main` and by the app's callback: a program (or
    a test) that calls the app itself twice carried the first command's state into the second (its closed pipe:
    ``--run -`` then wrote the locale's bytes; its ``-o`` file: a closed pipe did not stop a command with none)."""
    global _files_requested, _reporting_failure
    _stream_errors.clear()
    _files_requested = _reporting_failure = False


def _want_files() -> None:
    """Mark the running command as one that writes files (:data:`_files_requested`)."""
    global _files_requested
    _files_requested = True


class _ReaderGone(BaseException):
    """The reader of standard output closed the pipe (``ragkit ask ... | head -1``; standard error's, where it is
    the same pipe: ``2>&1 | head``) and the command has no file to write: raised by the failed write (and any
    later one to that stream), it ends the command there, as SIGPIPE would, and :func:`main` returns 141 without a
    message.  A :class:`BaseException`, so that no command's ``except Exception``, nor click's broken-pipe handler
    (an ``OSError``'s), takes it."""


def _pipe_closed(e: OSError) -> bool:
    """Whether ``e`` says the stream's reader closed the pipe (EPIPE), not another failure (a full disk)."""
    import errno

    return isinstance(e, BrokenPipeError) or e.errno == errno.EPIPE


#: Whether the running command is reporting its own failure (an ``error:`` line, ``interrupted``): a closed pipe then
#: ends nothing (:func:`_reader_gone`), so that the command's status (1, 2, 130) is its exit status, not 141.
_reporting_failure = False


def _failing() -> None:
    """Mark the running command as reporting its failure (:data:`_reporting_failure`), before it prints it."""
    global _reporting_failure
    _reporting_failure = True


def _reader_gone(name: str) -> bool:
    """Whether a write to standard ``name`` (``"stdout"``, ``"stderr"``) that failed, or was dropped after a
    failure, ends the command (:class:`_ReaderGone`): where standard output's reader closed the pipe (or standard
    error's, on the same pipe: ``2>&1``), no file was asked for (:data:`_files_requested`; ``--run -`` is no file)
    and this is the main thread (a worker's writes are only dropped).  Standard error's reader alone gone, or a
    full disk, does not: the command goes on (:class:`_GuardedStream`)."""
    import threading

    if _files_requested or _reporting_failure or threading.current_thread() is not threading.main_thread():
        return False
    if name == "stderr" and not _stderr_is_stdout:
        return False
    e = _stream_errors.get(name)
    return e is not None and _pipe_closed(e)


def _same_stream(out: Any, err: Any) -> bool:
    """Whether standard output ``out`` and standard error ``err`` write to one place (``2>&1``): one object, or
    file descriptors of one pipe, file or terminal."""
    if out is None or err is None:
        return False
    if out is err:
        return True
    try:
        a, b = os.fstat(out.fileno()), os.fstat(err.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # (no file descriptor: a test's buffer)
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


#: The pieces a long write to standard output goes out in: one write of megabytes to a pipe its reader closed
#: is cut short without an error (the rest dropped, the status 0); a piece after the first fails with EPIPE.
_STDOUT_PIECE = 1 << 16


def _stream_broke(name: str, error: OSError, stream: Any) -> None:
    """Record that standard ``name`` (``"stdout"``, ``"stderr"``) failed with ``error`` (the first failure only)
    and point the file descriptor of ``stream`` at the null device, so that what is still buffered in it, and
    anything written later, is dropped instead of failing again (at the interpreter's exit: Python's "Exception
    ignored").  Where that ends the command (:func:`_reader_gone`), :class:`_ReaderGone` is raised then."""
    _stream_errors.setdefault(name, error)
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, stream.fileno())
        finally:
            os.close(null)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # (no file descriptor: a test's buffer)
        pass
    if _reader_gone(name):
        raise _ReaderGone


class _GuardedStream:
    """``sys.stdout`` and ``sys.stderr`` while :func:`main` runs: the stream it wraps, whose ``write``,
    ``writelines`` and ``flush`` never fail with an :class:`OSError` (a reader that closed the pipe, ``| head``;
    a full disk): the first failure is recorded (:func:`_stream_broke`) and every later write to the stream is
    dropped, so that the command goes on and writes its output files; :func:`main` then exits 141 (or 1).  Where
    the command has no file to write and the reader closed the pipe, the write raises :class:`_ReaderGone`
    instead (:func:`_reader_gone`): the command stops there.  Anything else is the stream's.  A long text is
    written in pieces of :data:`_STDOUT_PIECE` characters, so that a reader closing the pipe is seen."""

    def __init__(self, stream: Any, name: str = "stdout") -> None:
        self._stream = stream
        self._name = name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _broken(self) -> bool:
        """Whether an earlier write failed (the stream's writes are dropped), raising :class:`_ReaderGone` where
        that ends the command (:func:`_reader_gone`)."""
        if self._name not in _stream_errors:
            return False
        if _reader_gone(self._name):
            raise _ReaderGone
        return True

    def write(self, text: str) -> Any:
        if self._broken():
            return len(text)
        try:
            if len(text) <= _STDOUT_PIECE:
                return self._stream.write(text)  # (what the stream returns: some file-likes return None)
            for i in range(0, len(text), _STDOUT_PIECE):
                self._stream.write(text[i:i + _STDOUT_PIECE])
                self._stream.flush()
        except OSError as e:
            _stream_broke(self._name, e, self._stream)
        return len(text)

    def writelines(self, lines: Any) -> None:
        if self._broken():
            return
        try:
            self._stream.writelines(lines)
        except OSError as e:
            _stream_broke(self._name, e, self._stream)

    def flush(self) -> None:
        if self._broken():
            return
        try:
            self._stream.flush()
        except OSError as e:
            _stream_broke(self._name, e, self._stream)


@contextmanager
def _stdout_utf8() -> Iterator[Any]:
    """Standard output as a UTF-8 text stream, for what a program reads (``--run -``'s TREC lines, ``-o -``'s JSON):
    a TREC run or JSON file is UTF-8 (:meth:`~ragkit.run.Run.read_trec` refuses other bytes), whatever the locale's
    encoding (``PYTHONIOENCODING=latin-1``, a C locale, a Windows console's code page), which would write another
    encoding's bytes, or fail on a character it lacks (东京).  ``sys.stdout`` itself where it is UTF-8 already or
    has no byte buffer (a test's ``StringIO``); else a UTF-8 writer over its buffer (lines ending in ``\\n``), flushed
    and detached at the end (the buffer stays open).  A failed write is recorded as :class:`_GuardedStream`'s are
    (the rest of the text dropped, the command going on: its other outputs are still written)."""
    out = sys.stdout
    buffer = getattr(out, "buffer", None)
    try:
        utf8 = codecs.lookup(getattr(out, "encoding", None) or "ascii").name == "utf-8"
    except LookupError:
        utf8 = False
    if utf8 or buffer is None or "stdout" in _stream_errors:
        yield out
        out.flush()
        return
    out.flush()  # (what was written before goes first)
    writer = io.TextIOWrapper(buffer, encoding="utf-8", newline="\n")
    try:
        yield writer
        writer.flush()
    except OSError as e:  # (the rest of this output dropped; main's exit status says it)
        _stream_broke("stdout", e, getattr(out, "_stream", out))
    finally:
        try:
            writer.detach()  # (not closed: that would close standard output's buffer)
        except (OSError, ValueError):  # (a failed flush: recorded above)
            pass


def _tolerant_stdout(ctx: typer.Context) -> None:
    """Make standard output and standard error write a character their encoding lacks rather than fail with a
    :class:`UnicodeEncodeError` and a traceback, for the command's duration: the tables, answers and errors a
    person reads (``ragkit search --index idx 东京`` in a Latin-1 or C locale, ``·`` and ``Δ`` under
    ``PYTHONIOENCODING=ascii``) through :data:`FALLBACK_ERRORS` (ragkit's own symbols as one ASCII character,
    others escaped: ``\\u4e1c``).  What a program reads goes out in UTF-8 (:func:`_stdout_utf8`)."""
    for out in (sys.stdout, sys.stderr):
        reconfigure = getattr(out, "reconfigure", None)
        errors = getattr(out, "errors", None)
        if reconfigure is None or errors not in ("strict", "backslashreplace", "surrogateescape", None):
            continue
        try:
            reconfigure(errors=FALLBACK_ERRORS)
        except (ValueError, OSError, io.UnsupportedOperation):  # (a stream that cannot: left as it is)
            continue
        ctx.call_on_close(lambda reconfigure=reconfigure, errors=errors: reconfigure(errors=errors or "strict"))


def _stream_failed(status: int) -> int:
    """The exit status of a command that finished with ``status`` after a write to standard output or standard
    error failed (:data:`_stream_errors`): its own where it failed (1, 2, 130); else 141 (128 + SIGPIPE, as a
    command killed by the signal) and no message where the stream's reader closed the pipe (``ragkit search ... |
    head -1``, ``2>&1 | head``); else 1, with ``error: standard output: could not be written: <reason>`` on stderr
    where standard output failed (a full disk) and stderr still writes."""
    out = _stream_errors.get("stdout")
    if out is not None and not _pipe_closed(out) and "stderr" not in _stream_errors:
        try:
            err_console.print(Text.assemble(("error:", "bold red"),
                                            f" standard output: could not be written: {out.strerror or out}"))
            sys.stderr.flush()
        except OSError:  # (stderr closed too: the status says it)
            pass
    if status:
        return status
    return 141 if all(_pipe_closed(e) for e in _stream_errors.values()) else 1


#: Whether ``interrupted`` was printed for this process's Ctrl-C (by ``ragkit ask``, before its sources).
_interruption_said = False


def _say_interrupted() -> None:
    """Print ``interrupted`` on stderr, once: a Ctrl-C's one line (exit status 130)."""
    global _interruption_said
    _interruption_said = True
    _failing()
    try:
        err_console.print(Text("interrupted", style="bold red"))
    except OSError:  # (stderr closed: the status says it)
        pass
