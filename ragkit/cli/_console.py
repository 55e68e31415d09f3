"""The command line's Rich consoles (:data:`console` for results, :data:`err_console` for notes and errors),
whose strings are written in their stream's encoding (the ASCII fallback codec error handler), and wide tables
printed uncut."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.table import Table
from rich.text import Text


def _encodable(text: str, encoding: str) -> str:
    """``text`` as the stream of ``encoding`` will write it: unchanged where the encoding has every character of it,
    else each character it lacks as :func:`_ascii_fallback` writes it (``Δ`` as ``D``, ``东`` as ``\\u4e1c``), so
    that Rich measures a table's cells as they will be written and its borders line up (``PYTHONIOENCODING=ascii``,
    a C locale)."""
    try:
        text.encode(encoding)
        return text
    except UnicodeEncodeError:
        return text.encode(encoding, FALLBACK_ERRORS).decode(encoding, "surrogateescape")
    except LookupError:  # (an encoding Python does not know: written as it is)
        return text


class _Console(Console):
    """A Rich console whose strings (a table's cells and headers, a printed line) are made :func:`_encodable` in
    its file's encoding before Rich measures them: escaped after measuring, a cell grew wider than its column."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(_encodable(text, self.encoding), **kwargs)


def _cell(text: str) -> Text:
    """A table cell of ``text`` that is data (a doc id, a title, a query): :func:`_encodable` in :data:`console`'s
    encoding, as :class:`_Console` makes strings, and never read as markup."""
    return Text(_encodable(text, console.encoding))


# no highlighter: Rich's default one made brackets bold and slashes magenta in errors, paths and tables
console = _Console(highlight=False)


# errors and notes are never hard-wrapped: a path or a YAML location in them stays on one line,
# whatever the terminal width (or 80 columns when piped), so it can be copied and grepped
err_console = _Console(stderr=True, soft_wrap=True, highlight=False)


@contextmanager
def _no_color() -> Iterator[None]:
    """``$NO_COLOR`` set (https://no-color.org): no ANSI styling at all on :data:`console` and :data:`err_console`
    for the block, bold and dim included (Rich's own ``NO_COLOR`` handling drops colours but keeps them): the whole
    of :func:`~ragkit.cli._main.main`, its own errors included (a usage error's ``error:``, printed after the
    command's context closed), and a command's duration where a program calls the app itself (its callback)."""
    if not os.environ.get("NO_COLOR"):
        yield
        return
    was = [(c, c._color_system) for c in (console, err_console)]  # (Rich renders no escape codes without one)
    for c, _ in was:
        c._color_system = None
    try:
        yield
    finally:
        for c, system in was:
            c._color_system = system


def _note(text: str | Text, style: str = "yellow") -> None:
    """Print a note, warning or caution on standard error (:data:`err_console`), as every command's are: ``text``
    (``"note: ..."``, its label included) in ``style``, or a :class:`~rich.text.Text` styled already (a label alone
    in colour: ``Text.assemble(("caution:", "yellow"), " ...")``) as it is; never read as markup, never
    hard-wrapped (a path in it stays on one line), and each character the stream's encoding lacks written as the
    codec error handler :data:`FALLBACK_ERRORS` writes it (``PYTHONIOENCODING=ascii``: ``ü`` as ``\\xfc``)."""
    err_console.print(text if isinstance(text, Text) else Text(text, style=style), soft_wrap=True)


#: Characters of ragkit's own output (``·`` between the timings, the ``Δ`` column of ``ragkit compare``) and the
#: one-character ASCII each is written as where the terminal's encoding lacks it (``PYTHONIOENCODING=ascii``, a C
#: locale): one column for one, so a table keeps its alignment.  Any other character is escaped (``\u4e1c``).
_ASCII_FALLBACK = {"·": "-", "Δ": "D", "…": "~", "—": "-", "–": "-", "‘": "'", "’": "'", "“": '"', "”": '"',
                   "→": ">", "×": "x", "≥": ">", "≤": "<", "✓": "v", "✗": "x", "•": "*"}


#: The codec error handler :func:`_tolerant_stdout` gives standard output and standard error.
FALLBACK_ERRORS = "ragkit.ascii_fallback"


def _ascii_fallback(e: UnicodeError) -> tuple[bytes, int]:
    """The codec error handler :data:`FALLBACK_ERRORS`: a character the stream's encoding lacks written as
    :data:`_ASCII_FALLBACK`'s ASCII, or else escaped as ``backslashreplace`` escapes it; a lone surrogate
    U+DC80..U+DCFF (an undecodable byte of a file name or argument, as ``surrogateescape`` read it) as that byte,
    as ``surrogateescape`` writes it."""
    if not isinstance(e, UnicodeEncodeError):
        raise e
    bad = e.object[e.start:e.end]
    return b"".join(bytes([ord(c) - 0xDC00]) if "\udc80" <= c <= "\udcff" else
                    (_ASCII_FALLBACK.get(c) or c.encode("ascii", "backslashreplace").decode("ascii")).encode("ascii")
                    for c in bad), e.end


import codecs  # noqa: E402  (next to the handler above, registered once per process)

codecs.register_error(FALLBACK_ERRORS, _ascii_fallback)


def _print_uncut(table: Table) -> None:
    """Print ``table`` on stdout (stderr while ``-o -`` holds stdout: :data:`console`'s file) as wide as it
    needs: a narrower terminal (or 80 columns when piped) would cut names and numbers to ``0.6…``."""
    from rich.measure import Measurement

    need = Measurement.get(console, console.options.update(max_width=10_000), table).maximum
    (console if need <= console.width else _Console(width=need, file=console.file)).print(table)
