"""The typer app of the ``ragkit`` command line: its help epilog, the main callback (``--version``,
``--import``, notes and warnings on stderr, ``$NO_COLOR``) and error reporting with the exit status."""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Optional

import typer
from rich.text import Text

from ragkit.cli._console import _no_color, _note, err_console
from ragkit.cli._imports import _import_module
from ragkit.cli._streams import _failing, _new_command, _tolerant_stdout
from ragkit.errors import RagkitError

#: The exit status epilog of ``ragkit --help`` and of every command's (the rule of :mod:`ragkit.cli`'s docstring).
EXIT_STATUS = ("Exit status: 0 success; 2 usage error or bad input (refused before work starts); 1 failure while "
               "running (a download, a model load or a write that failed, standard output's included); 130 "
               "interrupted; 141 standard output's reader closed the pipe (| head).  Notes and warnings go to "
               "standard error, results to standard output.")


def _examples(*commands: str) -> str:
    """A command's help epilog: ``Examples:`` and ``commands``, one a line, kept as written (click's ``\\b``: not
    re-wrapped), then :data:`EXIT_STATUS`."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {c}" for c in commands) + "\n\n" + EXIT_STATUS


#: ``rich_markup_mode=None``: click's plain help, which wraps an option's name and description onto more lines where
#: the terminal is narrow; Rich's help panels cut them (``--keep-ident…``, ``ndcg@10,hole@…``) and began with a
#: blank line.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="ragkit: retrieval operators that compose.", epilog=EXIT_STATUS,
                  context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})


class _NoteHandler(logging.Handler):
    """Shows the library's INFO messages (``logging.getLogger("ragkit")``: a fine-tune starting, ...)
    on stderr as notes while a command runs."""

    def emit(self, record: logging.LogRecord) -> None:
        _note(f"note: {record.getMessage()}", style="dim")


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: Optional[str] = None) -> None:
    """:func:`warnings.showwarning` while a command runs: ``warning: <message>``, one line on stderr, without
    Python's ``file:line: RuntimeWarning:`` and source line (which pointed into typer), and without the advice
    meant for Python callers (``or pass cache=False``: the command line has ``RAGKIT_CACHE``)."""
    text = str(message).removeprefix("ragkit: ")
    from ragkit.encoders.cache import PYTHON_ONLY_ADVICE

    text = text.replace(PYTHON_ONLY_ADVICE, "")
    _note(f"warning: {text}")


def _show_version(value: bool) -> None:
    if value:
        from ragkit import __version__

        typer.echo(f"ragkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(ctx: typer.Context,
          version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                       help="Show ragkit's version and exit."),
          imports: list[str] = typer.Option(
              [], "--import", metavar="MODULE",
              help="Import MODULE (a module name, or the path of a .py file) before the command runs, so the "
                   "operators it registers can be named in YAML, --pipeline and saved folders; repeatable. "
                   "$RAGKIT_IMPORT (comma-separated) is imported first.")) -> None:
    """ragkit: retrieval operators that compose."""
    import warnings

    _new_command()  # (main() calls it too: a program or a test may call the app itself, command after command)
    _tolerant_stdout(ctx)
    ctx.with_resource(_no_color())  # (main() holds it too: a program or a test may call the app itself)
    shown = warnings.showwarning  # (put back when the command ends: a program calling the app keeps its own)
    warnings.showwarning = _show_warning
    ctx.call_on_close(lambda: setattr(warnings, "showwarning", shown))
    log = logging.getLogger("ragkit")
    if not any(isinstance(h, _NoteHandler) for h in log.handlers):  # (taken off when the command ends, as above)
        handler, level = _NoteHandler(logging.INFO), log.level
        log.addHandler(handler)
        log.setLevel(logging.INFO)

        def restore() -> None:
            log.removeHandler(handler)
            log.setLevel(level)

        ctx.call_on_close(restore)
    from_env = [(m.strip(), f"RAGKIT_IMPORT={m.strip()}") for m in os.environ.get("RAGKIT_IMPORT", "").split(",")
                if m.strip()]
    for module, label in [*from_env, *((m.strip(), f"--import {m.strip()}") for m in imports)]:
        try:
            _import_module(module, label)
        except RagkitError as e:
            _fail(e)
    from ragkit.encoders.sentence import env_caching_queries

    try:  # a misspelt $RAGKIT_CACHE_QUERIES: said before any work, whatever the pipeline encodes
        env_caching_queries()
    except RagkitError as e:
        _fail(e)


class _RunFailure(RagkitError):
    """A command's failure while it runs, not its input's fault (a write or a save that failed, a model
    that could not be loaded): exit status 1 (:func:`_exit_status`)."""


def _exit_status(e: Exception) -> int:
    """The exit status of the error ``e``: 1 for a failure while running (:class:`_RunFailure`, a dataset
    download that failed, was cut short or brought no zip archive or a damaged one:
    :class:`~ragkit.eval.beir.DownloadError`), 2 for a usage error or bad input (every other error)."""
    from ragkit.eval.beir import DownloadError

    return 1 if isinstance(e, (_RunFailure, DownloadError)) else 2


#: Where an error lists what can stand (``unknown operator 'bm26'; ... Registered operators: bm25, ...``,
#: ``...; valid parameters of bm25 are: k, ...``, ``...; parallel takes ['branches', ...]``): the operator
#: or structural key named (``rule_router`` of ``rule_router.rules[0]``), or None for the list of operators.
_LISTED = re.compile(r"Registered operators: |valid parameters of ([a-z][a-z0-9_]*)[^ ]* are: "
                     r"|; ([a-z][a-z0-9_]*) takes \[")


def _describe_hint(message: str) -> str:
    """``message`` with a pointer to ``ragkit describe`` where it lists the operators or an operator's (or
    structural key's) parameters: the reference gives each one's type, default, bounds and description."""
    found = list(_LISTED.finditer(message))
    if not found:
        return message
    names = list(dict.fromkeys(m.group(1) or m.group(2) for m in found if m.group(1) or m.group(2)))
    if names:
        said = ", ".join(f"ragkit describe {n}" for n in names)
        hint = f"{said} {'shows' if len(names) == 1 else 'show'} each parameter's type, default, bounds and meaning"
    else:
        hint = "ragkit describe lists the operators; ragkit describe NAME shows one's parameters"
    return f"{message}\n({hint})" if "\n" in message else f"{message} ({hint})"


def _fail(e: Exception, hint: bool = True) -> None:
    """Print ``error: <e>`` on stderr and exit with :func:`_exit_status`'s status (2: bad input, 1: a failure
    while running).  With ``hint``, an error that lists the operators or an operator's parameters points to
    ``ragkit describe`` (:func:`_describe_hint`)."""
    message = _describe_hint(str(e)) if hint else str(e)
    _failing()
    err_console.print(Text.assemble(("error:", "bold red"), f" {message}"))  # (plain: no markup, no highlighting)
    raise typer.Exit(code=_exit_status(e))
