""":func:`main`: the ``ragkit`` command line run on its arguments, with guarded standard streams, usage errors and
Ctrl-C turned into one line and the exit status."""

from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.text import Text

from ragkit.cli import _streams
from ragkit.cli._app import app
from ragkit.cli._console import _no_color, console, err_console
from ragkit.cli._streams import _failing, _GuardedStream, _ReaderGone, _same_stream, _say_interrupted, _stream_failed


def main(args: Optional[list[str]] = None) -> int:
    """Run the command line on ``args`` (default: ``sys.argv[1:]``) as the ``ragkit`` script does (through
    ``ragkit.__main__.main``); return its exit status.  A usage error (an unknown option or command, a
    missing option, a value an option's type refuses) is one plain line on stderr, ``error: <what> (see
    'ragkit eval --help')``, with status 2, as ragkit's own errors are (click's own report is a boxed panel
    that splits its message across lines at 80 columns); Ctrl-C while a command runs exits 130.  A standard output
    or standard error that cannot be written does not stop a command that has files to write (``-o``, ``--run``,
    ``train --out``): what it still prints is dropped, the files are written, and it then exits 141 where the
    stream's reader closed the pipe (``| head -1``, no message), else 1 (``error: standard output: could not be
    written: <reason>``) (:func:`_stream_failed`).  A command with no file to write (``ask``, ``search --run -``,
    ``describe``) whose standard output's reader closed the pipe (or standard error's, the same pipe: ``2>&1 |
    head``) stops at that write instead, with 141 and no message (:class:`_ReaderGone`)."""
    with _no_color():
        _streams._new_command()
        saved = sys.stdout, sys.stderr
        _streams._stderr_is_stdout = _same_stream(*saved)
        if sys.stdout is not None:  # (None: fd 1 closed or pythonw; Rich writes to a null file)
            sys.stdout = _GuardedStream(sys.stdout, "stdout")
        if sys.stderr is not None:
            sys.stderr = _GuardedStream(sys.stderr, "stderr")
        try:
            status = _run(args)
            for stream in (sys.stdout, sys.stderr):  # (what is still buffered: a failure is seen here, not at exit)
                if stream is not None:
                    stream.flush()
        except _ReaderGone:  # (a closed pipe ended a command with no file to write: 141, below)
            status = 0
            for c in (console, err_console):  # what Rich held of the print that failed, not printed by a later one
                del c._buffer[:]
        finally:
            sys.stdout, sys.stderr = saved  # (also where click wrapped the guards)
        return _stream_failed(status) if _streams._stream_errors else status


def _run(args: Optional[list[str]]) -> int:
    """:func:`main` but for the standard streams' failures and ``$NO_COLOR``."""
    import importlib

    # click's exceptions, where typer raises them from (typer 0.26 and later vendor click as typer._click)
    clicks = importlib.import_module(typer.BadParameter.__module__)
    _streams._interruption_said = False
    try:
        status = app(args=args, prog_name="ragkit", standalone_mode=False)
    except getattr(clicks, "NoArgsIsHelpError", ()) as e:  # ``ragkit`` alone: the help, as a usage error's message,
        _failing()
        sys.stderr.write(e.format_message().rstrip("\n") + "\n")  # on stderr with status 2 (stdout: --help's, 0)
        return int(e.exit_code)
    except clicks.ClickException as e:
        _failing()
        usage = getattr(e, "ctx", None)
        hint = f" (see '{usage.command_path} --help')" if isinstance(e, clicks.UsageError) and usage else ""
        if getattr(e, "option_name", None) in ("--import", "--version") and usage is not None and usage.parent:
            hint = (f" ({e.option_name} goes before the command: ragkit --import MODULE {usage.info_name} ...)"
                    if e.option_name == "--import" else " (--version is ragkit's own option: ragkit --version)")
        err_console.print(Text.assemble(("error:", "bold red"), f" {e.format_message().rstrip('.')}{hint}"))
        return int(e.exit_code)
    except (typer.Abort, getattr(clicks, "Abort", typer.Abort)):  # (end of input at a prompt: status 1)
        _failing()
        err_console.print(Text("aborted", style="bold red"))
        return 1
    except KeyboardInterrupt:  # (while click parses, before typer's own handler)
        status = 130
    if status == 130 and not _streams._interruption_said:  # Ctrl-C: typer turned it into a silent Exit(130)
        _say_interrupted()
    return status if isinstance(status, int) else 0  # (a typer.Exit's code, or a command's None)
