"""The ``ragkit`` command line: eval, train, search, ask, validate, describe, compare.

``ragkit eval --data scifact --pipeline hybrid.yaml`` fits the pipeline on the corpus,
runs the split's queries, prints a metrics table and writes JSON.  ``--pipeline`` takes a
YAML file, a saved folder (``Pipeline.save``'s, or ``Operator.save``'s as a one-operator
pipeline) or a registered operator name (a one-operator pipeline with its defaults).  ``--data``
on an archive of several BEIR datasets (``cqadupstack``) evaluates each and their mean;
``--data cqadupstack/android`` evaluates one.
Output files are checked (their folders created) before any work starts and written
atomically (a temporary file in the same folder, renamed into place).

Exit status: 0 on success; 2 for a usage error or bad input (an unknown option, a missing file, a
malformed pipeline or dataset, an output path that would replace an input), refused before work
starts where it can be (a model path that holds no model too); 1 for a failure while running (a
download, a model load or a write that failed); 130 when interrupted (Ctrl-C); 141 when standard
output's reader closed the pipe.  Notes and warnings go to standard error; standard output carries
the results alone.
"""

from __future__ import annotations

import io
import json
import logging
import os
import platform
import re
import shlex
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ragkit._files import file_above, text_output, writes_through
from ragkit.errors import ParamError, RagkitError, some_ids

if TYPE_CHECKING:
    from ragkit.types import Corpus

#: The exit status epilog of ``ragkit --help`` and of every command's (the module docstring's rule).
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


import codecs  # noqa: E402  (next to the handler above, registered once per process; _stdout_utf8 uses it too)

codecs.register_error(FALLBACK_ERRORS, _ascii_fallback)


def _plain_if_no_color(ctx: typer.Context) -> None:
    """``$NO_COLOR`` set (https://no-color.org): no ANSI styling at all for the command's duration, bold and dim
    included (Rich's own ``NO_COLOR`` handling drops colours but keeps them)."""
    if not os.environ.get("NO_COLOR"):
        return
    for c in (console, err_console):
        was = c._color_system  # (Rich renders no escape codes with no colour system)
        c._color_system = None
        ctx.call_on_close(lambda c=c, was=was: setattr(c, "_color_system", was))


class _NoteHandler(logging.Handler):
    """Shows the library's INFO messages (``logging.getLogger("ragkit")``: a fine-tune starting, ...)
    on stderr as notes while a command runs."""

    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(Text(f"note: {record.getMessage()}", style="dim"))


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: Optional[str] = None) -> None:
    """:func:`warnings.showwarning` while a command runs: ``warning: <message>``, one line on stderr, without
    Python's ``file:line: RuntimeWarning:`` and source line (which pointed into typer), and without the advice
    meant for Python callers (``or pass cache=False``: the command line has ``RAGKIT_CACHE``)."""
    text = str(message).removeprefix("ragkit: ")
    from ragkit.encoders.cache import PYTHON_ONLY_ADVICE

    text = text.replace(PYTHON_ONLY_ADVICE, "")
    err_console.print(Text(f"warning: {text}", style="yellow"), soft_wrap=True)


def _show_version(value: bool) -> None:
    if value:
        from ragkit import __version__

        typer.echo(f"ragkit {__version__}")
        raise typer.Exit()


def _import_module(spec: str, label: str) -> None:
    """Import ``spec`` (a module name, ``my_package.operators``, or the path of a ``.py`` file) so the operators
    it registers are known; an error starts with ``label`` (``--import mymodule``) and says what went wrong
    (inside the module: where)."""
    import importlib
    import importlib.util

    path = Path(spec).expanduser()
    try:
        if spec.endswith(".py") or any(c in spec for c in "/\\"):
            if not path.is_file():
                what = "a folder" if path.is_dir() else "no such file"
                raise RagkitError(f"{label}: {what} (expected a module name such as mymodule, or the path "
                                  f"of a .py file)")
            name = path.stem
            if not name.isidentifier() or path.suffix != ".py":
                raise RagkitError(f"{label}: {path.name!r} is not a Python module's file name (an identifier "
                                  f"plus .py, such as my_ops.py)")
            loaded = sys.modules.get(name)
            if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path.resolve():
                return  # imported already (twice on the command line; its classes are registered)
            found = importlib.util.spec_from_file_location(name, path)
            if found is None or found.loader is None:
                raise RagkitError(f"{label}: cannot be imported as a Python module")
            module = importlib.util.module_from_spec(found)
            sys.modules[name] = module  # (as an import does: pickling or a later import finds the same classes)
            try:
                found.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
            return
        if not all(part.isidentifier() for part in spec.split(".")):
            raise RagkitError(f"{label}: not a module name (expected one such as mymodule or my_package.operators, "
                              f"or the path of a .py file)")
        if "" not in sys.path and os.getcwd() not in sys.path:  # the ``ragkit`` script, unlike ``python -m``,
            sys.path.append(os.getcwd())  # does not put the current folder on the path
        module = importlib.import_module(spec)
        if getattr(module, "__file__", None) is None and hasattr(module, "__path__"):  # a namespace package: any
            # folder of that name (a dataset's) imports as one
            where = ", ".join(getattr(module, "__path__", None) or []) or spec
            raise RagkitError(f"{label}: {where} is a folder, not a Python package (no __init__.py), so it registers "
                              f"no operators; expected a module name such as mymodule, or the path of a .py file")
    except RagkitError:
        raise
    except ModuleNotFoundError as e:
        if e.name is not None and spec.split(".")[: e.name.count(".") + 1] == e.name.split("."):
            raise RagkitError(f"{label}: no module named {e.name!r} (searched the current folder and sys.path; "
                              f"a module elsewhere is imported by its path, such as ./{spec.split('.')[-1]}.py)"
                              ) from None
        raise RagkitError(f"{label}: importing it failed: {_where(e)}{type(e).__name__}: {e}") from None
    except (Exception, SystemExit) as e:
        raise RagkitError(f"{label}: importing it failed: {_where(e)}{type(e).__name__}: {e}") from None


def _where(e: BaseException) -> str:
    """``file:line: `` of the innermost frame of ``e``'s traceback outside importlib (where a module's import broke)."""
    import traceback

    frames = [f for f in traceback.extract_tb(e.__traceback__) if "importlib" not in f.filename
              and not f.filename.endswith(("ragkit/cli.py", "ragkit/registry.py"))]
    return f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""


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

    _tolerant_stdout(ctx)
    _plain_if_no_color(ctx)
    shown = warnings.showwarning  # (put back when the command ends: a program calling the app keeps its own)
    warnings.showwarning = _show_warning
    ctx.call_on_close(lambda: setattr(warnings, "showwarning", shown))
    log = logging.getLogger("ragkit")
    if not any(isinstance(h, _NoteHandler) for h in log.handlers):
        log.addHandler(_NoteHandler(logging.INFO))
        log.setLevel(logging.INFO)
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


def _path_like(spec: str) -> bool:
    """Whether ``spec`` reads as a path (a separator or a suffix), not as an operator's name such as ``bm25``."""
    return any(c in spec for c in "/\\") or bool(Path(spec).suffix)


def resolve_pipeline(spec: str):
    """``(pipeline, fitted)`` from a YAML file, a saved folder or a registered operator name.

    A saved folder is one written by ``Pipeline.save`` (``manifest.json``) or by
    ``Operator.save`` (``params.json``; loaded as a one-operator pipeline).
    """
    from ragkit import registry
    from ragkit.pipelines import Pipeline

    path = Path(spec)
    if path.is_dir():
        return _load_folder(path)
    if path.is_file():
        return Pipeline.from_yaml(path), False
    if path.suffix in (".yaml", ".yml") and not path.exists():  # (not YAML text: refused below as a path)
        raise RagkitError(f"--pipeline {spec}: no such file (expected a pipeline YAML file, a folder written by "
                          f"Pipeline.save / Operator.save, or an operator name such as bm25)")
    if path.suffix in (".yaml", ".yml"):
        return Pipeline.from_yaml(path), False
    if _is_yaml_text(spec):
        return Pipeline.from_yaml(spec), False
    if _path_like(spec):  # a path, not an operator name: it does not exist
        raise RagkitError(f"--pipeline {spec}: no such file or folder (expected a pipeline YAML file, a folder "
                          f"written by Pipeline.save / Operator.save, or an operator name such as bm25)")
    if spec.lower() in registry.structural_keys():
        raise RagkitError(f"--pipeline {spec!r}: a structural key of pipeline YAML, not an operator; write the "
                          f"pipeline in a YAML file (e.g. '- {spec.lower()}: {{...}}') and pass its path")
    return Pipeline([registry.get(spec, path="--pipeline")()]), False


#: A message that starts with a path inside a pipeline's YAML (``pipeline[0].parallel.branches[1].bm25.filter: ``)
_YAML_PATH = re.compile(r"pipeline\[\d+\][^\s:]*: ")


def _in_file(e: RagkitError, spec: str) -> RagkitError:
    """``e``, raised after the pipeline ``--pipeline spec`` was loaded (by its fit, by a search), with the name
    of the YAML file ``spec`` and the line of the path its message starts with, as its load's errors read:
    ``p.yaml: line 5: pipeline[0].parallel.branches[1].bm25.filter: field 'year' ...``.  Unchanged when
    ``spec`` is no YAML file (a saved folder, an operator name, YAML text), when the message starts with no
    YAML path, or when the file no longer parses (it is read again, now)."""
    import yaml

    from ragkit.pipelines.yaml import _with_lines

    message = str(e)
    if not _YAML_PATH.match(message):
        return e
    try:
        if not Path(spec).is_file():
            return e
        root = yaml.compose(Path(spec).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, ValueError, yaml.YAMLError):
        return e
    lined = _with_lines(message, root) if root is not None else message
    e.args = (f"{spec}: {lined}" if "\n" not in lined else f"{spec}:\n{lined}", *e.args[1:])
    return e


def _load_folder(path: Path, option: str = "--pipeline"):
    """``(pipeline, fitted)`` from a folder written by ``Pipeline.save`` or ``Operator.save``."""
    from ragkit.operator import Operator
    from ragkit.pipelines import Pipeline

    if (path / "manifest.json").is_file() or (path / "params.json").is_file():
        op = Operator.load(path)  # a pipeline folder loads as a Pipeline
        pipe = op if isinstance(op, Pipeline) else Pipeline([op])
        if hasattr(op, "corpus_"):
            pipe.corpus_ = op.corpus_
        return pipe, hasattr(pipe, "corpus_")
    others = ", a pipeline YAML file or an operator name such as bm25" if option == "--pipeline" else ""
    raise RagkitError(f"{option} {path}: a folder, but neither a saved pipeline (no manifest.json) nor a saved "
                      f"operator (no params.json); expected a folder written by Pipeline.save or Operator.save{others}")


def _user_path(value: Any) -> Any:
    """Every path option's and argument's callback: a leading ``~`` (``~/x.json``, ``~user/idx``) expanded to the home
    folder, as the shell does for an unquoted word but not after ``=`` (``--output=~/x.json``) or in quotes, and as
    ``Pipeline.load`` does: ``--output=~/x.json`` wrote a folder named ``~`` in the current one.  A ``str`` option
    (``--data``, ``--pipeline``: a path or a name) only where it starts with ``~``; a list item by item."""
    if isinstance(value, (list, tuple)):
        return type(value)(_user_path(v) for v in value)
    if isinstance(value, Path) and str(value).startswith("~"):
        return value.expanduser()
    if isinstance(value, str) and value.startswith("~"):
        return os.path.expanduser(value)
    return value


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to the output ``path`` as UTF-8 (:func:`~ragkit._files.text_output`)."""
    with text_output(path) as f:
        f.write(text)


#: The parameters of the commands that hold paths (or a path or a name: ``--data``, ``--pipeline``).
_PATH_PARAMS = frozenset({"data", "pipeline", "output", "run_file", "out", "index", "queries_file", "cache_dir", "path",
                          "results", "baseline"})


def _expands_paths(command: Any) -> Any:
    """A command whose path parameters (:data:`_PATH_PARAMS`) come in with ``~`` expanded (:func:`_user_path`)
    before its body checks or reads any."""
    import functools

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        return command(*args, **{k: _user_path(v) if k in _PATH_PARAMS else v for k, v in kwargs.items()})

    return run


def _is_stdout(path: Optional[Path]) -> bool:
    """Whether an output option says ``-``: standard output (the human output goes to standard error)."""
    return path is not None and str(path) == "-"


def _prepare_output(path: Optional[Path], option: str, example: str) -> None:
    """Check before any work starts that ``path`` can be written: create its folder.  A file path (not ``-``)
    marks the command as one with files to write (:data:`_files_requested`)."""
    if path is None or _is_stdout(path):
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
    blocker = file_above(path)
    if blocker is not None:
        raise RagkitError(f"{option} {path}: {blocker} is a file, not a folder; choose another path")
    # its folder is created when the file is written (_make_folder), not now: a command refused later (a bad
    # --pipeline, a malformed dataset) or failing leaves no empty folder behind; the nearest folder that exists is
    # tried now with a real write (os.access says yes to root on read-only file systems)
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise RagkitError(f"{option} {path}: cannot create its folder {path.parent}: {parent} is not a folder")
    try:
        if parent == path.absolute().parent:
            fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".probe")
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(dir=parent, prefix=f".{path.name}.", suffix=".probe"))
    except OSError as e:
        what = "write into the folder" if parent == path.absolute().parent else f"create its folder {path.parent} in"
        raise RagkitError(f"{option} {path}: cannot {what} {parent}: {e.strerror or e}") from None


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


def _prepare_outputs(ctx: typer.Context, output: Optional[Path], run_file: Optional[Path], run_tag: str) -> None:
    """Check ``--output`` / ``--run`` / ``--run-tag`` before any work starts (folders created, writable,
    not one path twice, a tag the run file can hold); when either is ``-`` the human output (tables,
    notes, timings) goes to standard error for the command's duration."""
    if _is_stdout(output) or _is_stdout(run_file):
        _human_output_to_stderr(ctx)
    if output is not None and run_file is not None and (str(output) == str(run_file) == "-" or (
            not _is_stdout(output) and not _is_stdout(run_file) and output.resolve() == run_file.resolve()
            and not writes_through(output))):  # (both to /dev/null: nothing is replaced)
        raise RagkitError(f"--output and --run both name {output}; the run file would replace the JSON results: "
                          "give two paths")
    if run_file is not None:  # the tag column: no whitespace (the file's columns), not empty
        from ragkit.run import check_trec_ids

        check_trec_ids(f"--run-tag {run_tag!r}", [], [], run_tag)
    _prepare_output(output, "--output", "results.json")
    _prepare_output(run_file, "--run", "run.trec")


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


def _check_retrieves(pipe: Any, option: str) -> None:
    """Refuse, before any fit (a reranker's encodes the corpus, a generator's loads an LLM), a pipeline
    that would rank nothing: no retriever in it, or a generate step first."""
    from ragkit.pipelines._compose import iter_leaves

    leaves = list(iter_leaves(pipe))
    if not any(leaf.kind == "retriever" for leaf in leaves):
        names = ", ".join(sorted({leaf.name or type(leaf).__name__.lower() for leaf in leaves}))
        raise RagkitError(f"{option}: the pipeline has no retriever (its operators: {names}), so no query would get "
                          "a document; start it with one, e.g. bm25 or dense")
    _without_generation(pipe, option, note=False)


def _dataset_list(data: str) -> Optional[dict[str, str]]:
    """``--data a,b,...`` as ``{label: item}`` (the label: the dataset's folder name), or ``None`` for
    one dataset or archive (a path that exists is one, commas and all).  Blank, repeated or
    same-named items are refused; the datasets themselves are found by :func:`_eval_subsets`."""
    if "," not in data or Path(data).exists():
        return None
    items = [x.strip() for x in data.split(",")]
    if not all(items):
        raise RagkitError(f"--data {data}: an empty item in the comma-separated list; expected dataset names or "
                          "folders such as scifact,nfcorpus")
    out: dict[str, str] = {}
    for item in items:
        label = Path(item.rstrip("/\\")).name or item
        if label in out:
            raise RagkitError(f"--data {data}: {item!r} and {out[label]!r} are both called {label!r}; each dataset "
                              "of a list is reported (and compared) by its folder's name: list each once")
        out[label] = item
    return out


def _check_listed(data: str, sources: dict[str, str], pipeline: str, output: Optional[Path]) -> None:
    """Each item of ``--data a,b,...`` must be one dataset (found, or downloaded, here) that ``--output``
    does not overwrite: an archive of several is refused (BEIR averages it first: evaluate it alone)."""
    from ragkit.eval.beir import beir_subsets

    for item in sources.values():
        _check_data_folder(item)
        subs = beir_subsets(item)
        if subs:
            raise RagkitError(f"--data {data}: {item} holds {len(subs)} datasets ({', '.join(subs)}); BEIR averages "
                              f"them first: evaluate it alone (--data {item}), or list one of them ({item}/{subs[0]})")
        _check_not_an_input(output, "--output", pipeline, item)


def _check_data_folder(data: str) -> None:
    """Refuse a ``--data`` that names a file (``corpus.jsonl``, a qrels file): a BEIR dataset is a
    folder, and the file's own folder is named when it is one."""
    from ragkit.eval.beir import dataset_folder_of

    path = Path(data)
    if not path.is_file() or path.suffix.lower() == ".zip":  # a zip as BEIR distributes them: unpacked
        return
    folder = dataset_folder_of(path)
    hint = f" (this file's dataset: --data {folder})" if (folder / "corpus.jsonl").is_file() else ""
    raise RagkitError(f"--data {data}: a file; expected a BEIR folder (corpus.jsonl, queries.jsonl and "
                      f"qrels/<split>.tsv) or a dataset name such as scifact{hint}")


def _check_split(option: str, split: str, data: Optional[str]) -> None:
    """Refuse, before any work, a ``--split`` / ``--train-split`` value that is no split name but a path
    (``./test``, ``../qrels/test``: :func:`~ragkit.eval.beir.check_split_name`, which every dataset read
    applies again); the splits of ``--data`` are named when it is a local folder."""
    from ragkit.eval.beir import check_split_name

    folder = Path(os.path.expanduser(data)) if data is not None else None
    check_split_name(split, f"{option} {split}", folder if folder is not None and folder.is_dir() else None)


def _refuse_test_split(ds: Any, split: str, option: str) -> None:
    """Refuse learning from ``split`` of the dataset ``ds`` when its judgements are the test split's
    (``qrels/test.tsv``, whatever the split is called: a link to it under another name too).  ``ds`` ``None``:
    the name alone is checked (``test``), before the dataset is read or downloaded; the commands check again
    with the dataset."""
    from ragkit.eval.beir import is_test_qrels

    path = ds.path / "qrels" / f"{split}.tsv" if ds is not None else None
    if split == "test" or (path is not None and is_test_qrels(ds.path, path)):
        how = "" if split == "test" else f" (its judgements, {path}, are qrels/test.tsv)"
        raise RagkitError(f"{option} {split}{how}: learning from the test split is refused (its scores are the ones "
                          "reported); use the train split")


def _read_ask_corpus(data: str) -> Any:
    """The corpus ``ragkit ask`` fits on: a ``corpus.jsonl`` file, a folder holding one (a BEIR folder,
    or the corpus alone: ask needs no queries or judgements), or a BEIR dataset name."""
    from ragkit import load_beir
    from ragkit.eval.beir import read_corpus

    path = Path(data)
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        return read_corpus(path / "corpus.jsonl")
    if path.is_file():
        return read_corpus(path)
    if not path.exists() and (path.suffix or any(c in data for c in "/\\") or data.startswith(".")):
        raise RagkitError(f"--data {data}: no such file or folder; expected a BEIR dataset name or folder, or a "
                          "corpus.jsonl file")
    return load_beir(data).corpus


def _blank_file(path: Path) -> bool:
    """Whether ``path`` holds nothing but whitespace (read until its first other byte)."""
    with open(path, "rb") as f:
        return not any(block.strip() for block in iter(lambda: f.read(1 << 16), b""))


def _check_same_corpus(fitted: Any, corpus: Any, pipeline: str, data: str) -> None:
    """A saved pipeline answers from the corpus it was fitted on: refuse to score it against
    another dataset's judgements (its rankings would name documents they do not describe)."""
    from ragkit.operator import corpus_fingerprint, corpus_texts_digest

    if corpus_fingerprint(fitted) != corpus_fingerprint(corpus):
        how = f"{len(corpus):,} documents with other ids"
    elif corpus_texts_digest(fitted) != corpus_texts_digest(corpus):  # (its index scores the texts it was fitted on)
        how = f"the same {len(corpus):,} document ids with other texts or titles"
    else:
        return
    raise RagkitError(f"--pipeline {pipeline}: fitted on a corpus of {len(fitted):,} documents, but --data {data} "
                      f"has {how}; pass the pipeline's YAML to fit it on this dataset, or the folder saved for this "
                      "dataset")


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


def _note_unlearned(pipe: Any) -> None:
    """Say on stderr which operators fit differently without training queries (no --train-split): ``learn:
    true`` ones fit with the parameters as given, learning nothing, and those that read the training queries
    themselves (:attr:`Operator.uses_training_queries` without learning: ``dbnorm``'s query bank) fit with
    pseudo-queries drawn from the corpus instead.  One that cannot fit without judged queries (a
    ``score_router`` with no threshold) is left to the fit's error."""
    from ragkit.pipelines.yaml import walk_leaves

    idle: list[str] = []
    banks: dict[str, Any] = {}
    for path, leaf in walk_leaves(pipe):
        if leaf.train_refusal() is not None:
            continue
        if getattr(leaf.params, "learn", False):
            idle.append(path)
        elif leaf.uses_training_queries:
            banks[path] = leaf
    if idle:
        one = len(idle) == 1
        typer.echo(f"note: {', '.join(idle)} {'learns' if one else 'learn'} from judged queries; without "
                   f"--train-split {'it fits' if one else 'they fit'} with the parameters as given, learning nothing",
                   err=True)
    if banks:
        one = len(banks) == 1
        pseudo = all(getattr(leaf.params, "query_bank", None) == "train" for leaf in banks.values())
        instead = ("with pseudo-queries (sentences drawn from the corpus) as the query bank instead" if pseudo else
                   "without them")
        typer.echo(f"note: {', '.join(banks)} {'reads' if one else 'read'} the training queries themselves; without "
                   f"--train-split {'it fits' if one else 'they fit'} {instead}, which scores differently; pass "
                   f"--train-split train to give {'it' if one else 'them'} the queries"
                   + (" (or set query_bank: pseudo to choose pseudo-queries)" if pseudo else ""), err=True)


def _uses_training(pipe: Any) -> bool:
    """Whether fitting ``pipe`` with training queries differs from fitting it without
    (:attr:`Operator.uses_training_queries` of any of its operators)."""
    from ragkit.pipelines._compose import iter_leaves

    return any(leaf.uses_training_queries for leaf in iter_leaves(pipe))


def _note_nothing_learns(option: str, so: str) -> None:
    """Say on stderr that no operator of the pipeline learns from training queries, and ``so`` what
    follows (``--train-split train changes nothing``)."""
    typer.echo(f"note: {option}: no operator learns from training queries (dense or muvera adapt, learn: true, "
               f"cosine_adapter and dbnorm do), so {so}", err=True)


def _print_uncut(table: Table) -> None:
    """Print ``table`` on stdout (stderr while ``-o -`` holds stdout: :data:`console`'s file) as wide as it
    needs: a narrower terminal (or 80 columns when piped) would cut names and numbers to ``0.6…``."""
    from rich.measure import Measurement

    need = Measurement.get(console, console.options.update(max_width=10_000), table).maximum
    (console if need <= console.width else _Console(width=need, file=console.file)).print(table)


def _n_queries(n: int) -> str:
    """``1 query``, ``2 queries``."""
    from ragkit.eval.compare import _n_queries as count

    return count(n)


def _range_text(kind: type, lo: float | None, hi: float | None) -> str:
    """``an integer >= 1``, ``an integer from 0 to 4,294,967,295``, ``a number from 0 to 1``: what a ranged option
    takes (:func:`_ranged_option`)."""
    noun = "an integer" if kind is int else "a number"
    if lo is not None and hi is not None:
        return f"{noun} from {lo:,} to {hi:,}" if kind is int else f"{noun} from {lo:g} to {hi:g}"
    if lo is not None:
        return f"{noun} >= {lo:,}" if kind is int else f"{noun} >= {lo:g}"
    return f"{noun} <= {hi:,}" if kind is int else f"{noun} <= {hi:g}"


def _range_parser(name: str, kind: type, lo: float | None, hi: float | None) -> Callable[[Any], Any]:
    """The parser of a ranged option ``name`` (:func:`_ranged_option`): its text (or a default, as given) as ``kind``
    within ``lo`` .. ``hi``, else a ``typer.BadParameter`` naming the option, the range and the value given
    (``Invalid value for '--limit': expected an integer >= 1, got '-3'``; exit status 2), where typer's own
    ``min=`` / ``max=`` said only "Input should be greater than or equal to 1"."""
    expected = _range_text(kind, lo, hi)

    def parse(value: Any) -> Any:
        if value is None:  # (an optional option's default)
            return None
        x: Any = None
        if isinstance(value, kind) and not isinstance(value, bool):
            x = value
        else:
            try:
                x = kind(str(value).strip())
            except ValueError:  # 'abc', '1.5' for an integer, an integer of more digits than Python parses
                x = None
        if x is None or not ((lo is None or x >= lo) and (hi is None or x <= hi)):  # (NaN: within no range)
            given = value if not isinstance(value, str) or len(value) <= 60 else value[:57] + "..."
            raise typer.BadParameter(f"expected {expected}, got {given!r}", param_hint=f"'{name}'")
        return x

    parse.__name__ = "integer" if kind is int else "float"  # (the metavar of a typer that names it after the parser)
    return parse


def _ranged_option(default: Any, name: str, *, kind: type = int, lo: float | None = None, hi: float | None = None,
                   help: str = "", **kw: Any) -> Any:
    """``typer.Option(default, name, ...)`` taking ``kind`` (int or float) within ``lo`` .. ``hi``, the range said
    in its help and, with the value given, in its error (:func:`_range_parser`), in place of typer's ``min=`` /
    ``max=``."""
    return typer.Option(default, name, parser=_range_parser(name, kind, lo, hi),
                        help=f"{help}  [{_range_text(kind, lo, hi)}]" if help else f"[{_range_text(kind, lo, hi)}]",
                        **kw)


def _is_yaml_text(spec: str) -> bool:
    """Whether a ``--pipeline`` / ``validate`` argument is YAML text rather than a path or a name."""
    return "\n" in spec or spec.strip().startswith("pipeline:")


def _parse_ks(ks: str) -> list[int]:
    try:
        out = [int(x) for x in ks.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers such as 10,100, got {ks!r}", param_hint="--k")
    if not out or any(k < 1 for k in out):
        raise typer.BadParameter(f"expected positive integers, got {ks!r}", param_hint="--k")
    if max(out) > 2**31 - 1:  # trec_eval's cut-offs are C ints: refused here, not as an unknown metric after the search
        raise typer.BadParameter(f"expected cut-offs of at most 2,147,483,647, got {max(out)}", param_hint="--k")
    return out


@dataclass
class _Split:
    """One dataset's evaluated split, read and checked before any fit: the dataset (``None`` while
    released: :meth:`dataset` reads it again), its ``queries`` (the first ``--limit``), their
    ``qrels``, the ``--train-split`` set or ``None``, the load time in s, the ``--data`` it came from, the
    fingerprint of the judgements of the queries scored (after ``--limit``:
    :func:`~ragkit.eval.compare.scored_qrels_fingerprint`), and after ``--limit`` the ids of the documents the
    whole split judges (hole@k's judged documents, as in a run of every query; ``None``: those of ``qrels``)."""

    ds: Any
    queries: Any
    qrels: dict[str, dict[str, int]]
    train: Any
    t_load: float
    source: str
    fingerprint: Optional[str] = None
    annotated: Optional[frozenset[str]] = None

    def released(self) -> "_Split":
        """Drop the dataset's corpus (``ragkit eval`` on several datasets checks them all first, then
        holds one corpus at a time: BEIR's larger ones hold millions of documents each)."""
        self.ds = None
        return self

    def dataset(self) -> Any:
        """The dataset, read again (and timed as loading) when it was released."""
        if self.ds is None:
            from ragkit import load_beir

            t0 = time.perf_counter()
            self.ds = load_beir(self.source)
            self.t_load += time.perf_counter() - t0
        return self.ds


def _read_split(data: str, split: str, train_split: Optional[str], limit: Optional[int], run_file: Optional[Path],
                fitted: Any = None, pipeline: str = "", relevance_level: int = 1) -> _Split:
    """Load ``data`` and read what ``ragkit eval`` needs of it; a saved pipeline (``fitted``) must
    have been fitted on the dataset's corpus and not have learned from the evaluated queries, and ids
    a TREC ``run_file`` cannot hold are refused, all before any fit."""
    from ragkit import load_beir

    t0 = time.perf_counter()
    ds = load_beir(data)
    if fitted is not None:
        _check_same_corpus(fitted.corpus_, ds.corpus, pipeline, data)
    queries, qrels = ds.queries(split), ds.qrels(split)
    if train_split:
        _refuse_test_split(ds, train_split, "--train-split")
    train = ds.train_set(train_split) if train_split else None
    t_load = time.perf_counter() - t0
    from ragkit.eval.compare import scored_qrels_fingerprint
    from ragkit.eval.metrics import check_relevance_level

    annotated = None
    if limit is not None:
        queries = queries[:limit]
        # hole@k counts what no judgement of the split names, as in a run of the whole split
        annotated = frozenset(d for rel in qrels.values() for d in rel)
        qrels = {q: qrels[q] for q in queries.ids}
    # the judgements of the queries scored (every judged one of qrels: evaluate's per-query keys), as
    # load_result fingerprints a run file scored against the judgements given (the whole split, or these)
    fingerprint = scored_qrels_fingerprint(qrels, qrels)

    check_relevance_level(qrels, relevance_level, f"--relevance-level (--data {data})")  # not after the search
    taught = fitted.learned_from(queries) if fitted is not None else []
    if taught:  # (ragkit train --split train --out M, then ragkit eval --pipeline M --split train)
        raise RagkitError(f"--pipeline {pipeline}: learned from {len(taught)} of the evaluated --split {split} "
                          f"quer{'y' if len(taught) == 1 else 'ies'} ({some_ids(taught)}) when it was fitted, whose "
                          f"scores would not be held out; evaluate a split it did not learn from (a split other "
                          f"than --split {split})")
    if train is not None:  # learning from an evaluated query scores it on what it was taught
        taught = set(train.queries.ids)
        shared = [q for q in queries.ids if q in taught]
        if shared:
            raise RagkitError(f"--train-split {train_split}: holds {len(shared)} of the evaluated --split {split} "
                              f"quer{'y' if len(shared) == 1 else 'ies'} ({some_ids(shared)}), whose scores would not "
                              f"be held out; remove them from qrels/{train_split}.tsv or qrels/{split}.tsv")
        from ragkit.types import warn_same_text  # (not refused: SciFact's test split has 2 texts of train queries)

        warn_same_text(train.same_text(queries), len(queries), f"--split {split}",
                       f"a --train-split {train_split} query")
    if run_file is not None:  # ids a TREC file cannot hold are refused now, not after the search
        from ragkit.run import check_trec_ids

        check_trec_ids(run_file, queries.ids, ds.corpus.ids)
    return _Split(ds, queries, qrels, train, t_load, data, fingerprint, annotated)


@dataclass
class _Scored:
    """A fitted pipeline's run on one split, its :class:`EvalResult`, the fit time in s and the
    number of documents encoded by the fit."""

    run: Any
    result: Any
    t_fit: float
    encoded: int | None  # None when an encoder registered by the user (not counted) took part


@dataclass(frozen=True)
class _Scoring:
    """How ``ragkit eval`` searches and scores: ``depth`` (the search's ``k``, deepening every retriever;
    None: the pipeline's own), ``keep_ids`` (documents with their query's id are scored, not dropped as
    BEIR does), ``relevance_level`` (the lowest grade the binary metrics count, trec_eval's ``-l``), the
    run file's ``run_tag`` and the ``metrics`` asked for (None: nDCG, recall, MAP, MRR and P at each cut-off)."""

    depth: Optional[int] = None
    keep_ids: bool = False
    relevance_level: int = 1
    run_tag: str = "ragkit"
    metrics: Optional[tuple[str, ...]] = None

    def metric_names(self, ks: list[int]) -> list[str]:
        """The metrics to report: those asked for, else nDCG, recall, MAP, MRR and P at each of ``ks``."""
        if self.metrics is not None:
            return list(self.metrics)
        return [f"{m}@{c}" for m in ("ndcg", "recall", "map", "mrr", "p") for c in ks]


def _parse_metric_names(metrics: str) -> list[str]:
    """``--metrics``' comma-separated names (``ndcg@10,hole@10``), each checked (:func:`parse_metric`), in
    their canonical spelling; none, or one named twice (``nDCG@10,ndcg@10``), is a :class:`RagkitError`."""
    from ragkit.eval.metrics import parse_metric

    names = [m.strip() for m in metrics.split(",") if m.strip()]
    if not names:
        raise RagkitError(f"--metrics: expected names such as ndcg@10,recall@100, got {metrics!r}")
    parsed = []
    for m in names:
        try:
            parsed.append(parse_metric(m))
        except RagkitError as e:
            raise RagkitError(f"--metrics: {e}") from None
    twice = [m for m, pm in zip(names, parsed) if parsed.count(pm) > 1]
    if twice:
        raise RagkitError(f"--metrics: {', '.join(twice)} name the same metric; name each once")
    return [f"{name}@{cut}" for name, cut in parsed]


def _fit_and_score(pipe: Any, loaded: bool, sp: _Split, ks: list[int], trace: bool, backend: str,
                   scoring: _Scoring = _Scoring()) -> _Scored:
    """Fit ``pipe`` on the split's corpus (unless ``loaded``: saved fitted), search its queries and
    evaluate nDCG, recall, MAP, MRR and precision at each cut-off of ``ks`` (or ``scoring.metrics``), as
    ``scoring`` says."""
    from ragkit.encoders.sentence import _ENCODERS, caching_queries
    from ragkit.encoders.tokens import _TOKEN_ENCODERS
    from ragkit.eval.metrics import _evaluate

    def n_encoded() -> int:  # documents encoded so far: sentence vectors and token vectors (MUVERA)
        return sum(e.n_encoded for e in _ENCODERS.values()) + sum(e.n_encoded for e in _TOKEN_ENCODERS.values())

    uncounted = _registered_models(pipe)  # a user's encoder keeps no count: the fit's total would leave it out
    before = n_encoded()
    t0 = time.perf_counter()
    if not loaded:
        with err_console.status("fitting (encoding and indexing)..."), caching_queries():
            corpus = sp.dataset().corpus
            pipe.fit(corpus, sp.train, backend=backend) if backend != "local" else pipe.fit(corpus, sp.train)
    t_fit = time.perf_counter() - t0
    encoded = None if uncounted else n_encoded() - before
    run = _search_scored(pipe, sp.queries, sp.qrels, sp.dataset().corpus, scoring, trace)
    result = _evaluate(run, sp.qrels, scoring.metric_names(ks), ignore_identical_ids=not scoring.keep_ids,
                       relevance_level=scoring.relevance_level, annotated=sp.annotated)[0]  # (notes: _note_scored's)
    return _Scored(run, result, t_fit, encoded)


def _search_scored(pipe: Any, queries: Any, qrels: dict[str, dict[str, int]], corpus: Any, scoring: _Scoring,
                   trace: bool) -> Any:
    """The run ``ragkit eval`` scores and writes: ``pipe``'s search of ``queries`` at ``scoring.depth`` (None:
    the pipeline's own), without the documents that have their query's id unless ``scoring.keep_ids``
    (so the ``--run`` file is what trec_eval scores as the table does).  When some query id is a document
    id (ArguAna, Quora), the search goes one deeper than asked and each query is cut back after the drop,
    as BEIR's searches fetch top_k + 1 and skip the query's own: the deepest cut-off holds its full k,
    not k - 1.  Without ``--depth`` the pipeline's own depth is that of a first search, and the second
    search runs only when some query found itself, each retriever at its own k + 1 (:func:`_one_deeper`).
    The run's time is both searches'.  ``trace``: with ``qrels``, scored as the table is
    (``relevance_level``, ``keep_ids``)."""
    from ragkit.encoders.sentence import caching_queries
    from ragkit.eval.metrics import drop_identical_ids

    def search(k: Optional[int], deeper: Optional[dict[str, Any]] = None) -> Any:
        with caching_queries():  # an evaluation's queries come back run after run: their vectors are cached
            return pipe.search(queries, k=k, trace=trace, qrels=qrels if trace else None,
                               relevance_level=scoring.relevance_level, ignore_identical_ids=not scoring.keep_ids,
                               **_rankings_only(pipe), **(deeper or {}))

    lookup = corpus._lookup()
    if scoring.keep_ids or not any(q in lookup for q in queries.ids):  # (SciFact, most of BEIR: as it was)
        return search(scoring.depth)
    depth, seconds, deeper = scoring.depth, 0.0, None
    if depth is None:  # the pipeline's own depth: that of its search as it is
        run = search(None)
        dropped = drop_identical_ids(run)
        if dropped is run:  # no query found itself: nothing to make up for
            return run
        depth, seconds = max((len(d) for d in run.doc_ids), default=0), run.seconds or 0.0
        deeper = _one_deeper(pipe)
    run = drop_identical_ids(search(depth + 1, deeper), depth)
    run.seconds = (run.seconds or 0.0) + seconds
    return run


def _one_deeper(pipe: Any) -> dict[str, Any]:
    """Search options giving each retriever of ``pipe`` its own ``k`` plus one (BEIR's top_k + 1), as
    ``{name: {"k": k + 1}}`` (retrievers of one name that differ in k: the largest plus one).  The call's
    ``k`` alone would raise every retriever to the pipeline's depth + 1: two fused ``bm25 k: 10``
    branches (a depth of up to 20) were searched 17 deep and ranked other documents."""
    from ragkit.pipelines._compose import iter_leaves

    ks: dict[str, int] = {}
    for leaf in iter_leaves(pipe):
        k = getattr(leaf.params, "k", None) if leaf.kind == "retriever" else None
        if isinstance(k, int) and "k" in leaf.declared_options():
            ks[leaf.name] = max(ks.get(leaf.name, 0), k)
    return {name: {"k": k + 1} for name, k in ks.items()}


def _fewer_found(pipe: Any) -> list[str]:
    """Why ``pipe`` may return fewer documents than its ``k``, one clause per kind of step it holds: BM25
    (only documents sharing a term with the query), a filter step, a retriever's metadata filter.  A dense
    pipeline was told "BM25 returns only ...", and nothing of its filter."""
    from ragkit.pipelines._compose import iter_leaves
    from ragkit.retrievers import BM25

    leaves = list(iter_leaves(pipe))
    return [why for why, held in (
        ("BM25 returns only documents sharing a term with the query", any(isinstance(s, BM25) for s in leaves)),
        ("a filter step returns only those that pass it", any(s.kind == "filter" for s in leaves)),
        ("a metadata filter returns only documents that match it",
         any(s.kind == "retriever" and getattr(getattr(s, "params", None), "filter", None) is not None
             for s in leaves))) if held]


def _note_depth(run: Any, ks: list[int], corpus: Any, pipe: Any, prefix: str = "", flag: Optional[int] = None) -> None:
    """Say when the pipeline returned fewer documents than a cut-off of ``ks``, and what limits it: ``--depth``
    when it was given (``flag``) and reached, else the corpus's size, a step's k or a step that returns fewer."""
    depth = max((len(d) for d in run.doc_ids), default=0)
    deeper = [c for c in ks if c > depth]
    if deeper:
        fewer = _fewer_found(pipe)
        why = (f"the corpus holds {len(corpus)}" if depth >= len(corpus) else
               f"--depth {flag} limits it (give --depth {max(deeper)} or more to measure that depth)"
               if flag is not None and depth >= flag else
               "what limits it: a step's k (give the last steps a larger one to measure that depth)"
               + (f", or a step that returns fewer: {'; '.join(fewer)}" if fewer else ""))
        err_console.print(Text(f"note: {prefix}the pipeline returned at most {depth} documents per query, so the "
                               f"@{', @'.join(map(str, deeper))} metrics count only those; {why}", style="yellow"),
                          soft_wrap=True)


def _note_scored(run: Any, ks: list[int], corpus: Any, pipe: Any, qrels: Any, scoring: _Scoring,
                 prefix: str = "", ignored_judged: int = 0) -> None:
    """``ragkit eval``'s notes under its table, on stderr (as its other notes; stdout keeps the table), each
    after ``prefix`` (``"scifact: "`` for one of several datasets): the ``ignored_judged`` judged documents
    dropped for having their query's id, the depth the pipeline reached (:func:`_note_depth`), and the judged
    queries that no document can make relevant at ``--relevance-level`` (:func:`~ragkit.eval.metrics.level_note`),
    and, as Python's :func:`~ragkit.eval.metrics.evaluate` warns, a run none of whose documents is judged at all,
    with the hint of ids written otherwise (``'031715818'`` judged, ``'31715818'`` ranked:
    :func:`~ragkit.eval.metrics.unjudged_docs_note`)."""
    from ragkit.eval.metrics import level_note, unjudged_docs_note

    unjudged = unjudged_docs_note(run, qrels)  # ("" unless every metric but hole@k is 0)
    if unjudged:
        err_console.print(Text(f"warning: {prefix}{unjudged}", style="yellow"), soft_wrap=True)

    if ignored_judged:
        err_console.print(Text(
            f"note: {prefix}{ignored_judged} judged-relevant document(s) have their query's id and are never scored "
            "as retrieved (a document with its query's id is dropped from the run, as BEIR does for datasets whose "
            "queries are documents too: ArguAna, Quora), so they count as not found; --keep-identical-ids scores "
            "them", style="yellow"), soft_wrap=True)
    _note_depth(run, ks, corpus, pipe, prefix, scoring.depth)
    said = level_note(qrels, scoring.relevance_level, "--relevance-level")
    if said:
        err_console.print(Text(f"note: {prefix}{said}", style="yellow"), soft_wrap=True)


def _timings_line(t_load: float, t_fit: float, encoded: int | None, search_s: float, n_queries: int,
                  total: float) -> str:
    """``load 0.12 s · fit ... · search ... (q/s) · total ...``: what ``ragkit eval`` prints last (the documents
    encoded by the fit only when ``encoded`` is known: not with an encoder the user registered)."""
    qps = n_queries / max(search_s or 1e-9, 1e-9)
    rate = f"{qps:,.0f}" if qps >= 10 else f"{qps:.2g}"  # a few slow queries: not "0 q/s"
    count = "" if not encoded else f" ({encoded:,} documents encoded)"  # (none: bm25's, a saved folder's)
    return (f"load {t_load:.2f} s · fit {t_fit:.2f} s{count} · search {search_s:.2f} s "
            f"({rate} q/s) · total {total:.2f} s")


def _registered_models(pipe: Any) -> list[str]:
    """The ``model`` names of ``pipe``'s operators that name an encoder registered with
    :func:`~ragkit.encoders.register_encoder` (whose encodings ragkit does not count)."""
    from ragkit.encoders.custom import registered_encoders
    from ragkit.pipelines._compose import iter_leaves

    names = registered_encoders()
    return [m for leaf in iter_leaves(pipe) if isinstance(m := getattr(leaf.params, "model", None), str) and m in names]


def _machine() -> dict[str, Any]:
    """The machine ``ragkit eval`` ran on, for its JSON: ``platform``, ``python`` (its version) and ``cpus``."""
    return {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count()}


def _provenance(pipe: Any) -> dict[str, Any]:
    """What ``ragkit eval``'s JSON records to reproduce the pipeline (:mod:`ragkit.eval.provenance`):
    ``pipeline_resolved``, the pipeline's tree with every parameter of every step, defaults included
    (:func:`~ragkit.eval.provenance.resolved_pipeline`; ``pipeline``, its YAML, holds only those given);
    ``models``, each encoder model a step uses with its fingerprint (:func:`~ragkit.eval.provenance.models`);
    ``versions``: ragkit's version and, run from a git checkout, its commit (``ragkit_commit``), Python's and the
    installed libraries' (:func:`~ragkit.eval.provenance.versions`)."""
    from ragkit.eval import provenance

    return {"pipeline_resolved": provenance.resolved_pipeline(pipe), "models": provenance.models(pipe),
            "versions": provenance.versions()}


def _trace_rows(events: Any) -> list[dict[str, Any]]:
    """``--trace``'s table for the JSON: one dict per operator path (:class:`~ragkit.pipelines.trace.TraceRow`)."""
    from dataclasses import asdict

    from ragkit.pipelines.trace import aggregate_trace

    return [asdict(r) for r in aggregate_trace(events)]


def _settings(data: str, pipeline: str, train_split: Optional[str], limit: Optional[int],
              scoring: _Scoring, backend: str, fingerprint: Optional[str] = None,
              data_prints: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """What ``ragkit eval`` was asked, for its JSON (runs of one pipeline YAML with and without
    ``--train-split`` or ``--limit`` otherwise differ only in their numbers), and ``qrels_fingerprint``: the
    judgements it scored against (:func:`~ragkit.eval.metrics.qrels_fingerprint`; ``ragkit compare`` refuses
    results of other judgements), then ``data_prints`` (:func:`_data_prints`: ``corpus_fingerprint``,
    ``n_documents``, ``queries_fingerprint``; ``ragkit compare`` warns of results of other corpora)."""
    from ragkit import __version__

    return {"data": data, "pipeline_source": pipeline, "train_split": train_split, "limit": limit, "backend": backend,
            "depth": scoring.depth, "ignore_identical_ids": not scoring.keep_ids,
            "relevance_level": scoring.relevance_level, "run_tag": scoring.run_tag,
            "metrics": list(scoring.metrics) if scoring.metrics is not None else None,
            "qrels_fingerprint": fingerprint, **(data_prints or {}), "ragkit_version": __version__}


def _data_prints(corpus: Any, queries: Any) -> dict[str, Any]:
    """``corpus_fingerprint`` (:func:`~ragkit.eval.provenance.corpus_digest_text`: its ids, titles and texts),
    ``n_documents`` and ``queries_fingerprint`` (the evaluated queries' ids and texts:
    :func:`~ragkit.eval.provenance.queries_fingerprint`) of one dataset, for ``ragkit eval``'s JSON."""
    from ragkit.eval.provenance import corpus_digest_text, queries_fingerprint

    return {"corpus_fingerprint": corpus_digest_text(corpus), "n_documents": len(corpus),
            "queries_fingerprint": queries_fingerprint(queries)}


def _subsets_prints(prints: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """:func:`_data_prints` of several datasets (``{dataset: its prints}``) as one: each fingerprint combined
    over them (:func:`~ragkit.eval.provenance.combined_fingerprint`) and the documents summed."""
    from ragkit.eval.provenance import combined_fingerprint

    return {"corpus_fingerprint": combined_fingerprint({s: p["corpus_fingerprint"] for s, p in prints.items()}),
            "n_documents": sum(p["n_documents"] for p in prints.values()),
            "queries_fingerprint": combined_fingerprint({s: p["queries_fingerprint"] for s, p in prints.items()})}


def _max_ranked(run: Any) -> int:
    """The most documents the run ranks for one query (as scored): ``ragkit compare`` marks a metric cut deeper."""
    return max((len(d) for d in run.doc_ids), default=0)


def _subsets_fingerprint(splits: dict[str, "_Split"]) -> Optional[str]:
    """One fingerprint of the judgements of several datasets: the SHA-256 of each dataset's name and its
    fingerprint, one line each, sorted (``None`` when one is unknown), of the kind of those (``sha256-scored:``:
    an older ragkit eval's ``sha256:`` was of whole splits, which compare does not check against it)."""
    import hashlib

    from ragkit.eval.compare import SCORED_FINGERPRINT_KIND

    if any(sp.fingerprint is None for sp in splits.values()):
        return None
    lines = sorted(f"{s}\t{sp.fingerprint}\n" for s, sp in splits.items())
    return f"{SCORED_FINGERPRINT_KIND}:" + hashlib.sha256("".join(lines).encode("utf-8", "surrogatepass")).hexdigest()


@app.command("eval", epilog=_examples(
    "ragkit eval --data scifact --pipeline bm25 -o bm25.json",
    "ragkit eval --data scifact --pipeline examples/hybrid.yaml -m ndcg@10,recall@100 -o hybrid.json",
    "ragkit eval --data scifact,nfcorpus --pipeline bm25 --run bm25.trec"))
@_expands_paths
def eval_cmd(
    ctx: typer.Context,
    data: str = typer.Option(..., "--data", help="BEIR dataset name or folder; for an archive of several datasets "
                                                 "(cqadupstack) each is evaluated and the mean reported, or one "
                                                 "is named: cqadupstack/android; a comma-separated list "
                                                 "(scifact,nfcorpus) is evaluated alike, dataset by dataset."),
    pipeline: str = typer.Option(..., "--pipeline", "-p",
                                 help="Pipeline YAML file, saved pipeline or operator folder, or operator name."),
    split: str = typer.Option("test", help="Qrels split to evaluate."),
    k: str = typer.Option("10,100", "--k", help="Cut-offs, comma-separated."),
    metrics: Optional[str] = typer.Option(None, "--metrics", "-m",
                                          help="Metrics, comma-separated (ndcg, recall, map, mrr, p, r_cap, hole, acc "
                                               "@ a cut-off: ndcg@10,hole@10,r_cap@100), instead of nDCG, recall, "
                                               "MAP, MRR and P at each --k."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Write metrics, per-query values, timings as JSON "
                                               "(missing folders are created; '-': standard output)."),
    run_file: Optional[Path] = typer.Option(None, "--run", help="Also write a TREC run file "
                                                                "(missing folders are created; '-': standard "
                                                                "output)."),
    trace: bool = typer.Option(False, "--trace", help="Print per-operator time, candidates and recall."),
    train_split: Optional[str] = typer.Option(None, "--train-split",
                                              help="Fit learning operators on this split (never the test split)."),
    limit: Optional[int] = _ranged_option(None, "--limit", lo=1,
                                          help="Evaluate only the first N queries (smoke runs; N >= 1)."),
    backend: str = typer.Option("local", "--backend", help="local or ray."),
    depth: Optional[int] = _ranged_option(None, "--depth", lo=1,
                                          help="Documents retrieved per query (the search's k, deepening every "
                                               "retriever: 1000 for recall@1000); default: the pipeline's own."),
    keep_identical_ids: bool = typer.Option(False, "--keep-identical-ids",
                                            help="Score documents whose id is the query's id. By default they "
                                                 "are dropped from the run, as BEIR does for ArguAna and Quora: "
                                                 "ragkit then searches one deeper (each retriever its k + 1, "
                                                 "or --depth + 1) and cuts each query back to the depth after "
                                                 "the drop (as BEIR's top_k + 1), so the "
                                                 "deepest cut-off holds its full k, and the --run file holds the "
                                                 "run as scored."),
    relevance_level: int = _ranged_option(1, "--relevance-level", lo=1,
                                          help="Lowest grade the binary metrics (recall, MAP, MRR, P) count as "
                                               "relevant, as trec_eval's -l."),
    run_tag: str = typer.Option("ragkit", "--run-tag", help="The tag column of the --run file."),
) -> None:
    """Fit a pipeline on a BEIR corpus and evaluate it on one split.

    On an archive of several datasets (cqadupstack), or a comma-separated list of datasets, the
    pipeline is fitted on each dataset's corpus in turn; each is reported, and the mean of each
    metric over them (BEIR's convention).
    """
    from ragkit.eval.beir import beir_subsets

    ks = _parse_ks(k)
    t_all = time.perf_counter()
    try:
        names = None
        if metrics is not None:
            if getattr(ctx.get_parameter_source("k"), "name", "DEFAULT") != "DEFAULT":  # (typer's own click enum)
                raise RagkitError(f"--k {k} and --metrics {metrics}: --metrics names each metric with its cut-off "
                                  "(ndcg@10,recall@100), --k gives the cut-offs of the default metrics; pass one")
            names = _parse_metric_names(metrics)
            ks = sorted({int(m.rsplit("@", 1)[1]) for m in names})
        scoring = _Scoring(depth, keep_identical_ids, relevance_level, run_tag, tuple(names) if names else None)
        if backend not in ("local", "ray"):
            raise RagkitError(f"--backend: expected 'local' or 'ray', got {backend!r}")
        _check_split("--split", split, data)
        if train_split is not None:
            _check_split("--train-split", train_split, data)
        if train_split is not None and train_split == split:
            raise RagkitError(f"--train-split {train_split!r} equals the evaluated split; "
                              "training on the evaluated queries is refused")
        if train_split is not None:  # (the name now; a link to qrels/test.tsv once the dataset is read)
            _refuse_test_split(None, train_split, "--train-split")
        _check_not_an_input(output, "--output", pipeline, data)
        _check_not_an_input(run_file, "--run", pipeline, data)
        _prepare_outputs(ctx, output, run_file, run_tag)
        pipe, loaded = resolve_pipeline(pipeline)
        _check_retrieves(pipe, f"--pipeline {pipeline}")
        pipe = _without_generation(pipe, f"--pipeline {pipeline}")  # an LLM answer per query would be thrown away
        if loaded and (train_split is not None or backend != "local"):
            given = " and ".join(f"{o} {v!r}" for o, v in (("--train-split", train_split), ("--backend", backend))
                                 if v is not None and (o != "--backend" or v != "local"))
            raise RagkitError(f"--pipeline {pipeline}: a saved, fitted pipeline is evaluated as it is, so {given} "
                              "would be ignored; pass a pipeline YAML file to fit (and learn) here")
        t0 = time.perf_counter()
        listed = _dataset_list(data)
        if listed is None:
            _check_data_folder(data)
        subs = beir_subsets(data) if listed is None else listed
        t_find = time.perf_counter() - t0  # a download of the dataset, when it is not found locally
        if subs:
            _eval_subsets(data, list(subs), pipeline, loaded, split=split, train_split=train_split, ks=ks,
                          limit=limit, trace=trace, backend=backend, output=output, run_file=run_file, t_all=t_all,
                          t_find=t_find, sources=listed, scoring=scoring)
            return
        sp = _read_split(data, split, train_split, limit, run_file, pipe if loaded else None, pipeline,
                         scoring.relevance_level)
        if not loaded and sp.train is None:
            _note_unlearned(pipe)
        elif not loaded and not _uses_training(pipe):
            _note_nothing_learns(f"--pipeline {pipeline}", f"--train-split {train_split} changes nothing")
        scored = _fit_and_score(pipe, loaded, sp, ks, trace, backend, scoring)
    except RagkitError as e:
        _fail(_in_file(e, pipeline))
        return
    ds, queries, run, result = sp.ds, sp.queries, scored.run, scored.result
    total = time.perf_counter() - t_all
    console.print(Text(f"{ds.name} / {split} ({_n_queries(len(queries))})  pipeline: {pipeline}"),  # not a table title:
                  soft_wrap=True)
    table = Table()  # a title wraps to the table's narrow width
    table.add_column("metric")
    table.add_column("value", justify="right")
    for m, v in result.scores.items():
        table.add_row(m, f"{v:.4f}")
    console.print(table)
    _note_scored(run, ks, ds.corpus, pipe, sp.qrels, scoring, ignored_judged=result.ignored_judged)
    console.print(_timings_line(t_find + sp.t_load, scored.t_fit, scored.encoded, run.seconds, len(queries), total),
                  soft_wrap=True)
    if trace and run.trace:
        from ragkit.pipelines.trace import print_trace

        print_trace(console, run.trace)
    try:
        # the JSON's alone: its provenance runs git and hashes the corpus, so it is built only when -o writes it
        payload: dict[str, Any] = {} if output is None else {
            "dataset": ds.name, "split": split, "pipeline": pipe.to_yaml(), **_provenance(pipe),
            "n_queries": len(queries), "metrics": result.scores, "per_query": result.per_query,
            "max_ranked": _max_ranked(run),
            "timings": {"load_s": t_find + sp.t_load, "fit_s": scored.t_fit, "search_s": run.seconds, "total_s": total,
                        "documents_encoded": scored.encoded},
            "settings": _settings(data, pipeline, train_split, limit, scoring, backend, sp.fingerprint,
                                  _data_prints(ds.corpus, queries)),
            **({"trace": _trace_rows(run.trace)} if trace and run.trace else {}),
            "machine": _machine(),
            "date": date.today().isoformat(),
        }
        _write_outputs(output, run_file, run, payload, tag=run_tag)
    except RagkitError as e:
        _fail(e)


def _eval_subsets(data: str, subs: list[str], pipeline: str, loaded: bool, *, split: str, train_split: Optional[str],
                  ks: list[int], limit: Optional[int], trace: bool, backend: str, output: Optional[Path],
                  run_file: Optional[Path], t_all: float, t_find: float,
                  sources: Optional[dict[str, str]] = None, scoring: _Scoring = _Scoring()) -> None:
    """``ragkit eval`` on several datasets (``subs``): the datasets of an archive, or with ``sources``
    (label -> ``--data`` item) those of a comma-separated list.  Every split is read and checked
    first, then the pipeline is fitted and evaluated on each in turn; prints each and the mean of
    each metric over them, and writes both to ``output``.  ``t_find``: seconds spent finding (or
    downloading) the data."""
    base = data.rstrip("/") or data
    holds = "names" if sources else "holds"
    first = sources[subs[0]] if sources else f"{base}/{subs[0]}"  # the --data of one of them
    if loaded:
        raise RagkitError(f"--pipeline {pipeline}: a saved, fitted pipeline answers from the one corpus it was "
                          f"fitted on, but --data {data} {holds} {len(subs)} datasets ({', '.join(subs)}), each with "
                          f"its own corpus; pass the pipeline's YAML to fit it on each, or evaluate the dataset it was "
                          f"fitted on (--data {'<dataset>' if sources else base + '/<dataset>'})")
    if run_file is not None:
        raise RagkitError(f"--run {run_file}: --data {data} {holds} {len(subs)} datasets ({', '.join(subs)}) whose "
                          f"query ids may repeat, and one TREC run file cannot tell them apart; write one run per "
                          f"dataset (--data {first} --run ...)")
    if sources:
        _check_listed(data, sources, pipeline, output)
    from ragkit.eval.beir import ARCHIVE_SUBSETS

    # every split is read and checked before any fit, then each corpus is read again in its turn
    splits: dict[str, _Split] = {}
    parent = ""  # the archive's folder (a zip's: the folder it unpacks to, cqadupstack of cqadupstack.zip)
    for s in subs:
        sp = _read_split(sources[s] if sources else f"{base}/{s}", split, train_split, limit, None,
                         relevance_level=scoring.relevance_level)
        parent = parent or sp.ds.path.resolve().parent.name
        splits[s] = sp.released()
    splits[subs[0]].t_load += t_find
    missing = [] if sources else [s for s in ARCHIVE_SUBSETS.get(parent, ()) if s not in subs]
    if missing:  # a partial local copy: its mean is not the archive's BEIR score
        known = ARCHIVE_SUBSETS[parent]
        typer.echo(f"note: BEIR scores {parent} as the mean over its {len(known)} datasets; --data {data} holds "
                   f"{len(subs)} of them, so this mean is not comparable with BEIR's (missing: {', '.join(missing)})",
                   err=True)
    scored: dict[str, _Scored] = {}
    prints: dict[str, dict[str, Any]] = {}  # each dataset's corpus and queries fingerprints, while its corpus is read
    provenance: Optional[dict[str, Any]] = None
    for s, sp in splits.items():
        # a fresh pipeline for each corpus
        pipe = _without_generation(resolve_pipeline(pipeline)[0], f"--pipeline {pipeline}", note=False)
        if not scored and sp.train is None:
            _note_unlearned(pipe)
        scored[s] = one = _fit_and_score(pipe, False, sp, ks, trace, backend, scoring)
        first = next(iter(one.result.scores))
        console.print(Text(f"{s} / {split} ({_n_queries(len(sp.queries))}): {first} {one.result.scores[first]:.4f} · "
                           f"fit {one.t_fit:.2f} s · search {one.run.seconds:.2f} s"), soft_wrap=True)
        _note_scored(one.run, ks, sp.dataset().corpus, pipe, sp.qrels, scoring, prefix=f"{s}: ",
                     ignored_judged=one.result.ignored_judged)
        spec = pipe.to_yaml()
        if output is not None:  # the JSON's alone (a corpus hash, a git call): built only when -o writes it
            prints[s] = _data_prints(sp.dataset().corpus, sp.queries)
            if provenance is None:  # (once: every dataset's pipeline is built from the same YAML)
                provenance = _provenance(pipe)
        sp.released()
        del pipe  # (the fitted pipeline holds the corpus and its index too)
        if trace and one.run.trace:
            from ragkit.pipelines.trace import print_trace

            print_trace(console, one.run.trace)
    _report_subsets(splits, scored, pipeline, spec, split, output, t_all, missing,
                    dataset=",".join(subs) if sources else parent,
                    settings=_settings(data, pipeline, train_split, limit, scoring, backend,
                                       _subsets_fingerprint(splits), _subsets_prints(prints) if prints else None),
                    provenance=provenance, prints=prints)


def _report_subsets(splits: dict[str, _Split], scored: dict[str, _Scored], pipeline: str, spec: str, split: str,
                    output: Optional[Path], t_all: float, missing: Optional[list[str]], *, dataset: str,
                    settings: dict[str, Any], provenance: Optional[dict[str, Any]] = None,
                    prints: Optional[dict[str, dict[str, Any]]] = None) -> None:
    """Print each dataset's metrics and their mean (one row each) and the summed timings; write the
    JSON: ``metrics`` the means, ``subsets`` each dataset's metrics, per-query values, timings and
    ``prints`` (:func:`_data_prints`: its corpus and queries fingerprints); ``spec`` is the pipeline's YAML,
    ``provenance`` what :func:`_provenance` records of it; ``missing`` the archive's datasets the folder lacks
    (the JSON says so, as the mean is then not BEIR's); ``dataset`` names the whole (the archive's folder, or
    the listed datasets)."""
    names = list(scored)
    metrics = list(scored[names[0]].result.scores)
    means = {m: sum(scored[s].result.scores[m] for s in names) / len(names) for m in metrics}
    n_queries = sum(len(splits[s].queries) for s in names)
    parent = dataset
    total = time.perf_counter() - t_all
    console.print(Text(f"{parent} / {split}: {len(names)} datasets, {_n_queries(n_queries)}, and the mean of each "
                       f"metric over the datasets (BEIR's convention)  pipeline: {pipeline}"), soft_wrap=True)
    table = Table()
    table.add_column("dataset")
    table.add_column("queries", justify="right")
    for m in metrics:
        table.add_column(m, justify="right")
    for s in names:
        table.add_row(s, str(len(splits[s].queries)), *(f"{scored[s].result.scores[m]:.4f}" for m in metrics))
    table.add_section()
    table.add_row("mean", str(n_queries), *(f"{means[m]:.4f}" for m in metrics), style="bold")
    _print_uncut(table)
    t_load = sum(sp.t_load for sp in splits.values())
    t_fit = sum(one.t_fit for one in scored.values())
    counts = [one.encoded for one in scored.values()]
    encoded = None if None in counts else sum(c for c in counts if c is not None)
    search_s = sum(one.run.seconds or 0.0 for one in scored.values())
    console.print(_timings_line(t_load, t_fit, encoded, search_s, n_queries, total), soft_wrap=True)
    subsets = {s: {"n_queries": len(splits[s].queries), "metrics": scored[s].result.scores,
                   "per_query": scored[s].result.per_query, "max_ranked": _max_ranked(scored[s].run),
                   "qrels_fingerprint": splits[s].fingerprint, **(prints or {}).get(s, {}),
                   "timings": {"load_s": splits[s].t_load, "fit_s": scored[s].t_fit, "search_s": scored[s].run.seconds,
                               "documents_encoded": scored[s].encoded},
                   **({"trace": _trace_rows(scored[s].run.trace)} if scored[s].run.trace else {})} for s in names}
    _write_outputs(output, None, None, {
        "dataset": parent, "split": split, "pipeline": spec, **(provenance or {}), "n_queries": n_queries,
        "metrics": means, "aggregate": f"mean over the {len(names)} datasets, each weighted equally",
        "max_ranked": max(_max_ranked(one.run) for one in scored.values()),
        **({"missing_datasets": missing} if missing else {}),
        "subsets": subsets,
        "timings": {"load_s": t_load, "fit_s": t_fit, "search_s": search_s, "total_s": total,
                    "documents_encoded": encoded},
        "settings": settings, "machine": _machine(), "date": date.today().isoformat(),
    })


def _write_outputs(output: Optional[Path], run_file: Optional[Path], run: Any, payload: dict[str, Any],
                   tag: str = "ragkit") -> None:
    """Write ``ragkit eval``'s JSON and TREC run file, each atomically; a failed write is a
    :class:`RagkitError` naming the option and the path."""
    for option, path in (("--output", output), ("--run", run_file)):
        if path is None:
            continue
        if _is_stdout(path):  # for a script: the JSON or the run alone on standard output, UTF-8 whatever the locale
            with _stdout_utf8() as out:
                if option == "--output":
                    out.write(json.dumps(payload, indent=2) + "\n")
                else:
                    run.to_trec(out, tag)
            continue
        _make_folder(path, option)
        try:
            if option == "--output":
                _write_text(path, json.dumps(payload, indent=2))
            else:
                run.write_trec(path, tag)
        except OSError as e:
            raise _RunFailure(f"{option} {path}: could not be written: {e.strerror or e}") from None
        err_console.print(Text(f"wrote {path}"), soft_wrap=True)  # (a status line: stderr, as every note)


#: Judged queries ``ragkit train``'s held-out report needs: one in five is held out.
MIN_REPORT_QUERIES = 5


def _want_report(report: Optional[bool], n: int, split: str) -> bool:
    """Whether ``ragkit train`` reports on a held-out fold: ``--report``/``--no-report``, else
    (``None``) when the split has enough queries, with a note when it has not."""
    if n >= MIN_REPORT_QUERIES:
        return report is not False
    why = (f"the {split} split has {n} judged quer{'y' if n == 1 else 'ies'}; the held-out report holds out one "
           f"in five and needs at least {MIN_REPORT_QUERIES}")
    if report:
        raise RagkitError(f"--report: {why}; pass --no-report, or use a split with more judged queries")
    if report is None:
        err_console.print(Text.assemble(("held-out report skipped:", "yellow"),
                                        f" {why} (--no-report silences this note)"), soft_wrap=True)
    return False


@dataclass
class _Fold:
    """``ragkit train``'s held-out fold: the row positions of the held-out and of the fitted queries (sorted),
    and ``twins``, how many of the split's queries share their text with another of its queries."""

    held: list[int]
    fit: list[int]
    twins: int


def _held_out_fold(queries: Any, seed: int) -> Optional[_Fold]:
    """About one in five of ``queries`` held out, seeded by ``seed``, with the queries of one text
    (:func:`~ragkit.types.normalised_text`: whitespace and case aside, as :meth:`TrainSet.same_text` and
    :meth:`Operator.learned_from` compare them) all on one side: a question fitted on under one id and
    scored under another would not be held out.

    The texts, numbered in the order of their first query, are permuted with ``seed`` and taken in that
    order, each whose queries still fit in ``n // 5`` held out (so at most ``n // 5``; fewer where the texts
    left are asked too often); where every text has more queries than that, the least asked one.  Where no
    two queries share a text this is exactly the fold of a permutation of the queries (as before texts
    were grouped).  ``None`` when the queries hold fewer than two texts (no fold keeps both sides
    non-empty)."""
    import numpy as np

    from ragkit.types import normalised_text

    numbers: dict[str, int] = {}  # each query's text, numbered in the order of its first query
    group = np.array([numbers.setdefault(normalised_text(t), len(numbers)) for t in queries.texts], dtype=np.intp)
    if len(numbers) < 2:
        return None
    sizes = np.bincount(group, minlength=len(numbers))
    perm = np.random.default_rng(seed).permutation(len(numbers))
    target, count = len(queries) // 5, 0
    chosen = np.zeros(len(numbers), dtype=bool)
    for g in perm.tolist():  # (one step per text, in the seeded order; stops once the fold is full)
        if count + sizes[g] <= target:
            chosen[g], count = True, count + int(sizes[g])
            if count == target:
                break
    if count == 0:  # every text is asked by more than n // 5 queries
        chosen[perm[np.argmin(sizes[perm])]] = True
    held = chosen[group]
    return _Fold(np.flatnonzero(held).tolist(), np.flatnonzero(~held).tolist(), int((sizes[group] > 1).sum()))


def _check_out_folder(out: Path) -> None:
    """Refuse, before any fit, a ``train --out`` of ``-`` (a saved pipeline is a folder: it cannot go to
    standard output) and one whose nearest existing folder cannot be written (a real write, a temporary
    folder made and removed there: ``os.access`` says yes to root on read-only file systems)."""
    if str(out) == "-":
        raise RagkitError("--out -: a fitted pipeline is saved as a folder, which cannot go to standard output; "
                          "expected a folder path such as fitted/scifact-bm25")
    _want_files()
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:  # (the save creates the missing folders)
        parent = parent.parent
    if not parent.is_dir():
        raise RagkitError(f"--out {out}: {parent} is a file, not a folder; choose another path")
    try:
        probe = tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.", suffix=".probe")
        os.rmdir(probe)
    except OSError as e:
        raise RagkitError(f"--out {out}: cannot write into the folder {parent}: {e.strerror or e}") from None


@app.command("train", epilog=_examples(
    "ragkit train --data scifact --pipeline examples/learned.yaml --out scifact-learned",
    "ragkit eval --data scifact --pipeline scifact-learned"))
@_expands_paths
def train_cmd(
    data: str = typer.Option(..., "--data", help="BEIR dataset name or folder."),
    pipeline: str = typer.Option(..., "--pipeline", "-p",
                                 help="Pipeline YAML file, saved pipeline or operator folder, or operator name."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the fitted pipeline to (missing folders "
                                                   "are created)."),
    split: str = typer.Option("train", help="Judged split to learn from (never the test split)."),
    report: Optional[bool] = typer.Option(
        None, "--report/--no-report", show_default=False,
        help=f"First fit on 80% of the split and report nDCG@10 on the held-out 20% (queries of one text, whitespace "
             f"and case aside, on one side); this needs at least "
             f"{MIN_REPORT_QUERIES} judged queries.  Default: report when the split has that many, else skip the "
             f"report with a note; --report on a smaller split is an error (before anything is fitted)."),
    seed: int = _ranged_option(0, "--seed", lo=0, hi=2**32 - 1, help="Seed of the held-out fold."),
) -> None:
    """Fit a pipeline on a corpus, learning from a judged split, and save it.

    Unless --no-report, a held-out report comes first: one in five of the split's queries
    are held out (the queries of one text together: a question asked under two ids is held
    out under both or fitted on under both), the pipeline is fitted on the rest (and
    unlearned, when it can be), and each step's effect on the held-out queries is shown.
    """
    from ragkit import evaluate, load_beir
    from ragkit.encoders import caching_queries
    from ragkit.pipelines._compose import iter_leaves
    from ragkit.types import TrainSet

    try:
        _check_split("--split", split, data)
        _refuse_test_split(None, split, "--split")  # (the name now; a link to qrels/test.tsv once it is read)
    except RagkitError as e:
        _fail(e)
    try:
        from ragkit.operator import atomic_dir

        _check_out_folder(out)  # '-', or a folder that cannot be written: refused now, not after the training
        atomic_dir.check(out)  # refuse a file or a foreign folder now, not after the training
        # a broken pipeline is refused before the dataset is read (or downloaded)
        first = resolve_pipeline(pipeline)[0]
        _check_retrieves(first, f"--pipeline {pipeline}")
        _check_data_folder(data)
        ds = load_beir(data)
        _refuse_test_split(ds, split, "--split")  # (any other name for qrels/test.tsv: a link to it)
        train = ds.train_set(split)
        wanted, report = report, _want_report(report, len(train.queries), split)
        if not _uses_training(first):  # the report's two rows would be one fit twice: skipped unless asked for
            skip = report and wanted is None
            report = report and not skip
            _note_nothing_learns(f"--pipeline {pipeline}", "ragkit train fits it as ragkit eval would" + (
                "; the held-out report is skipped (unlearned and learned would be one fit; --report shows it)"
                if skip else ""))
        report_learned: dict[str, dict[str, Any]] = {}  # what the report's fit learned
        n_fit = 0
        fold = _held_out_fold(train.queries, seed) if report else None
        if report and fold is None:  # (every query of the split asks one question)
            why = (f"the {len(train.queries)} queries of the {split} split have one text (whitespace and case "
                   f"aside), and the held-out report keeps the queries of one text on one side of its fold")
            if wanted:
                raise RagkitError(f"--report: {why}; pass --no-report, or use a split with other questions")
            err_console.print(Text.assemble(("held-out report skipped:", "yellow"),
                                            f" {why} (--no-report silences this note)"), soft_wrap=True)
            report = False
        if report and fold is not None:
            n = len(train.queries)
            held_idx, fit_idx = fold.held, fold.fit
            n_fit = len(fit_idx)
            fit_part = TrainSet(train.queries[fit_idx], {q: train.qrels[q] for q in train.queries[fit_idx].ids})
            held = train.queries[held_idx]
            held_qrels = {q: train.qrels[q] for q in held.ids}
            # the title on a line of its own: a table's title wraps at the table's width ("(fit\n on the other 48)")
            off = abs(len(held) - n / 5) > max(1.0, n / 50)  # (2 in 100 queries: a fold noticeably off one fifth)
            title = Text(f"held-out {len(held)} of {n} {split} queries (fit on the other {len(fit_idx)}"
                         + (f"; {100 * len(held) / n:.0f}%, not one in five: the queries of one text stay on "
                            f"one side" if off else "") + ")", style="italic")
            if fold.twins:
                err_console.print(Text(
                    f"note: {fold.twins} of the {n} {split} queries share their text with another (whitespace and "
                    f"case aside); the held-out fold keeps each text's queries on one side, so no held-out "
                    f"question was fitted on" + (f" ({len(held)} held out, not {n // 5})" if off else ""),
                    style="dim"), soft_wrap=True)
            table = Table()
            for col in ("pipeline", "nDCG@10", "Recall@100"):
                table.add_column(col)
            traces = {}
            for label, tr in (("unlearned", None), ("learned", fit_part)):
                # scored on rankings: a generate step's answers per held-out query would be thrown away
                pipe = _without_generation(resolve_pipeline(pipeline)[0], f"--pipeline {pipeline}", note=tr is None)
                if tr is None and any(op.needs_train for op in iter_leaves(pipe)):
                    console.print("[dim]unlearned: skipped (parts of this pipeline fit only with judged queries)[/]")
                    continue
                with err_console.status(f"fitting the {label} pipeline..."), caching_queries():
                    pipe.fit(ds.corpus, tr)
                # as ragkit eval searches and scores (one deeper where queries are documents: ArguAna, Quora)
                run = _search_scored(pipe, held, held_qrels, ds.corpus, _Scoring(), trace=True)
                res = evaluate(run, held_qrels, ["ndcg@10", "recall@100"]).scores
                table.add_row(label, f"{res['ndcg@10']:.4f}", f"{res['recall@100']:.4f}")
                traces[label] = run.trace
                if tr is not None:
                    report_learned = pipe.learned()
            console.print(title, soft_wrap=True)
            console.print(table)
            if len(held) < MIN_HELD_OUT:
                err_console.print(Text.assemble(("caution:", "yellow"), (
                    f" the held-out rows rest on {len(held)} quer{'y' if len(held) == 1 else 'ies'}: a difference "
                    f"between them may be chance; a split with at least {5 * MIN_HELD_OUT} judged queries holds out "
                    f"{MIN_HELD_OUT} or more")), soft_wrap=True)
            from ragkit.pipelines.trace import print_stages

            print_stages(console, traces, title="what each step does to the held-out queries")
        pipe, _ = resolve_pipeline(pipeline)
        t0 = time.perf_counter()
        with err_console.status(f"fitting on all {len(train.queries)} {split} queries..."), caching_queries():
            pipe.fit(ds.corpus, train)
        try:
            pipe.save(out)
        except OSError as e:
            raise _RunFailure(f"--out {out}: the fitted pipeline could not be saved: {e.strerror or e}") from None
    except RagkitError as e:
        _fail(_in_file(e, pipeline))
        return
    _print_learned(pipe)
    if report:
        _note_refit_differs(report_learned, pipe.learned(), len(train.queries), n_fit)
    err_console.print(Text(f"fitted in {time.perf_counter() - t0:.1f} s; saved to {out} "  # the command on one line,
                       f"(evaluate with: ragkit eval --data {shlex.quote(data)} --pipeline {shlex.quote(str(out))})"),
                  soft_wrap=True)  # to copy


def _print_learned(pipe: Any) -> None:
    """One line per step that learned from the judged queries, as :meth:`Pipeline.learned` reports it: a
    fuser's weights and estimates, a router's or judge's threshold, the Cosine Adapter's threshold and an
    ``adapt`` fine-tune's model folder, each with the number of queries it learned from."""
    for path, learned in pipe.learned().items():
        shown = ", ".join(f"{k} {_metric(v) if '@' in k else _short(v)}" for k, v in learned.items()
                          if isinstance(v, (int, float, str, list)))
        console.print(Text(f"learned: {path}: {shown}"), soft_wrap=True)


#: held-out queries below which ``ragkit train``'s report comes with a caution (its rows are a few queries' scores)
MIN_HELD_OUT = 10


def _learned_settings(learned: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """What each step learned, less its estimates and counts (``*@10``, ``queries``) and the folder of a
    tuned model (another folder for other queries, always): weights, thresholds, a normalisation, as
    ``ragkit train`` prints them (4 significant digits, so a threshold moved in its 6th digit is the same).
    Whether equal weights were ``kept`` is not compared on its own: the weights say it."""
    skip = {"queries", "model", "averaged_weights", "kept"}  # (equal weights kept: their weights differ)
    return {path: {k: _short(v) for k, v in entry.items() if k not in skip and not k.endswith("@10")}
            for path, entry in learned.items()}


def _note_refit_differs(report: dict[str, dict[str, Any]], final: dict[str, dict[str, Any]], n: int,
                        n_fit: int) -> None:
    """Say so when the pipeline fitted on all ``n`` queries and saved learned other values than the held-out
    report's fit on ``n_fit`` of them: the report scored those, not the saved ones."""
    was, now = _learned_settings(report), _learned_settings(final)
    changed = []
    for path, entry in now.items():
        before = was.get(path, {})
        diff = [f"{k} {entry.get(k, 'none')} (the report's fit: {before.get(k, 'none')})"
                for k in dict.fromkeys([*entry, *before]) if before.get(k) != entry.get(k)]
        if diff:
            changed.append(f"{path}: {', '.join(diff)}")
    if changed:
        err_console.print(Text.assemble(("note:", "yellow"), (
            f" the saved pipeline, fitted on all {n} queries, learned other values than the report's fit on {n_fit} "
            f"(which the held-out rows scored): {'; '.join(changed)}; no held-out query scored these")),
            soft_wrap=True)


def _metric(v: Any) -> str:
    """A learned estimate (``cv_ndcg@10``, ``train_ndcg@10``) for one line: 4 decimals, as the tables print metrics
    (``0.6960``, not ``0.696``); anything else as :func:`_short` shows it."""
    return f"{v:.4f}" if isinstance(v, float) else _short(v)


def _short(v: Any) -> str:
    """A learned value for one line: floats to 4 significant digits, lists element-wise."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return str(v)


def _without_generation(pipe: Any, option: str, note: bool = True) -> Any:
    """``pipe`` up to its first ``generate`` step: ``ragkit search`` shows documents and ``ragkit eval``
    / ``train`` score rankings, so they do not run a language model on every query for answers they
    would not print (``ragkit ask`` answers).  ``option`` names the pipeline in the errors (``--index DIR``
    or ``--pipeline P``); ``note``: say on stderr that the step is left out (a note, as every command's)."""
    from ragkit.pipelines import Pipeline

    steps = list(pipe.steps)
    cut = next((i for i, op in enumerate(steps) if op.kind == "generator"), None)
    if cut is None:
        return pipe
    index = option.startswith("--index")
    if cut == 0:
        raise RagkitError(f"{option}: the {'saved ' if index else ''}pipeline starts with a generate step, which "
                          "has no documents to answer from; put a retriever before it")
    if note and index:
        err_console.print(Text("note: the pipeline's generate step is not run: search shows the documents; ragkit "
                               "ask answers with them", style="dim"), soft_wrap=True)
    elif note:
        err_console.print(Text(f"note: {option}: the pipeline's generate step (and any step after it) is not run "
                               "here: the rankings before it are scored; ragkit ask answers with them", style="dim"))
    part = Pipeline(steps[:cut])
    if hasattr(pipe, "corpus_"):
        part.corpus_ = pipe.corpus_
    return part


def _rankings_only(pipe: Any) -> dict[str, Any]:
    """The search options that keep ``pipe``'s generate steps from running the language model: one
    inside a branch, route or loop (:func:`_without_generation` cuts the pipeline's own) passes the
    rankings on.  ``search`` shows rankings and ``eval`` / ``train`` score them: answers would be
    thrown away (an LLM answer per query of SciFact takes hours)."""
    from ragkit.generators.operator import Generate
    from ragkit.pipelines._compose import iter_leaves

    return {"generate": {"answer": False}} if any(isinstance(op, Generate) for op in iter_leaves(pipe)) else {}


@app.command("search", epilog=_examples(
    'ragkit search --index scifact-learned "does vitamin D lower cancer risk"',
    "ragkit search --index scifact-learned --queries queries.tsv --run run.trec"))
@_expands_paths
def search_cmd(
    ctx: typer.Context,
    query: Optional[list[str]] = typer.Argument(
        None, metavar="QUERY", help="One or more queries (or --queries FILE)."),
    index: Path = typer.Option(..., "--index", help="A saved, fitted folder (pipeline.save(dir) or "
                                                    "operator.save(dir))."),
    k: int = _ranged_option(10, "--k", lo=1, help="Documents shown (or written) per query."),
    queries_file: Optional[Path] = typer.Option(None, "--queries", help="Search the queries of a file: a BEIR "
                                                                        "queries.jsonl, a TSV of query-id, tab, text "
                                                                        "lines, or one query per line; '-': read "
                                                                        "them from standard input (JSON lines when "
                                                                        "its first line is a JSON object)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Write the results as JSON (query id and text, then rank, doc id, "
                                               "score, title and text per document; '-': standard output)."),
    run_file: Optional[Path] = typer.Option(None, "--run", help="Write a TREC run file ('-': standard output)."),
    run_tag: str = typer.Option("ragkit", "--run-tag", help="The tag column of the --run file."),
) -> None:
    """Queries against a saved pipeline: ad-hoc ones shown as tables, or a file of them written as
    JSON or a TREC run (unjudged queries: a submission, an app's batch)."""
    from ragkit.types import Queries

    try:
        if query and queries_file is not None:
            raise RagkitError(f"--queries {queries_file} and {len(query)} quer{'y' if len(query) == 1 else 'ies'} "
                              "on the command line: give one or the other")
        if not query and queries_file is None:
            raise RagkitError("no query: give one or more on the command line, or --queries FILE")
        blank = next((i for i, q in enumerate(query or []) if not q.strip()), None)
        if blank is not None:
            raise RagkitError(f"query {blank + 1} is empty; expected a question or keywords")
        if not index.is_dir():
            what = "not a folder" if index.exists() else "no such folder"
            raise RagkitError(f"--index {index}: {what}; expected a folder written by Pipeline.save or "
                              "Operator.save")
        for option, path in (("--output", output), ("--run", run_file)):
            _check_not_inside(path, option, index, f"--index {index}")
            if path is not None and queries_file is not None and not _is_stdout(path) and not _is_stdout(
                    queries_file) and path.resolve() == queries_file.resolve():
                raise RagkitError(f"{option} {path}: is the --queries file; writing there would replace it: give "
                                  "another path")
        _prepare_outputs(ctx, output, run_file, run_tag)
        if queries_file is not None:
            batch = _read_queries_option(queries_file)
        else:
            batch = Queries([str(i) for i in range(1, len(query or []) + 1)], list(query or []))
        pipe, fitted = _load_folder(index, "--index")
        if not fitted:
            raise RagkitError(f"--index {index}: saved before it was fitted; fit it on a corpus and save it again")
        pipe = _without_generation(pipe, f"--index {index}")
        if run_file is not None:  # before the search: ids the run file's columns cannot hold
            from ragkit.run import check_trec_ids

            check_trec_ids(f"--run {run_file}", batch.ids, pipe.corpus_.ids, run_tag)
        with err_console.status(f"searching {len(batch)} quer{'y' if len(batch) == 1 else 'ies'}..."):
            run = pipe.search(batch, k=k, **_rankings_only(pipe))
    except RagkitError as e:
        _fail(e)
        return
    corpus = pipe.corpus_
    if output is None and run_file is None:
        _print_results(corpus, batch, run, pipe)
    else:
        n_empty = sum(not len(ids) for ids in run.doc_ids)
        fewer = _fewer_found(pipe) if n_empty else []
        # (stderr: the standard output carries the results alone, whether -o writes them there or to a file)
        err_console.print(Text(f"searched {len(batch)} quer{'y' if len(batch) == 1 else 'ies'} in {run.seconds:.2f} s"
                               + (f"; {n_empty} found no document" if n_empty else "")
                               + (f" ({'; '.join(fewer)})" if fewer else "")), soft_wrap=True)
    try:
        _write_outputs(output, run_file, run, {
            "index": str(index), "k": k,
            "results": [{"query_id": qid, "query": text, "documents": [
                {"rank": r, "doc_id": str(d), "score": float(s), "title": corpus.titles[row], "text": corpus.texts[row]}
                for r, (d, s, row) in enumerate(zip(ids, scores, corpus.row_of(ids.tolist())), 1)]}
                for qid, text, (_, ids, scores) in zip(batch.ids, batch.texts, run)]}, tag=run_tag)
    except RagkitError as e:
        _fail(e)


def _read_queries_option(path: Path) -> Any:
    """The queries of ``search --queries``: a file's (:func:`~ragkit.eval.beir.read_query_file`), or with ``-``
    standard input's, in the same layouts (JSON lines when the first non-blank line starts with ``{``: a BEIR
    queries.jsonl; else TSV or one query per line; a UTF-8 byte-order mark before it dropped, as files' are), its
    errors naming ``--queries -`` for the file."""
    from ragkit.eval.beir import read_query_file

    if not _is_stdout(path):
        return _without_header(read_query_file(path), str(path), path.suffix != ".jsonl")
    # a byte-order mark is no part of the first line (as files read: a JSON line after one is JSON lines)
    data = sys.stdin.buffer.read().removeprefix(b"\xef\xbb\xbf")
    first = next((line.strip() for line in data.splitlines() if line.strip()), b"")
    with tempfile.TemporaryDirectory(prefix="ragkit-stdin-") as folder:
        tmp = Path(folder) / ("stdin.jsonl" if first.startswith(b"{") else "stdin.txt")
        tmp.write_bytes(data)
        try:
            return _without_header(read_query_file(tmp), "--queries - (standard input)", tmp.suffix != ".jsonl")
        except RagkitError as e:
            e.args = (str(e).replace(str(tmp), "--queries - (standard input)"), *e.args[1:])
            raise


#: The names a TSV of queries' header line gives its two columns (lower case, ``_`` and spaces read as ``-``, as the
#: qrels reader's ``query-id``): the id's, and the text's.
_QUERY_ID_HEADERS = frozenset({"query-id", "qid", "id", "-id", "queryid", "topic-id", "topic"})
_QUERY_TEXT_HEADERS = frozenset({"text", "query", "query-text", "question", "title"})


def _header_name(cell: str) -> str:
    """A header cell as :data:`_QUERY_ID_HEADERS` spells it (the qrels reader's rule: case, spaces and ``_``
    aside)."""
    return re.sub(r"[\s_]+", "-", cell.strip().lower())


def _without_header(queries: Any, where: str, tabbed: bool) -> Any:
    """``queries`` read from a TSV (``tabbed``) less its first line where that is a header naming the columns
    (``query-id<TAB>text``, ``qid<TAB>text``, ``id<TAB>query``: :data:`_QUERY_ID_HEADERS` then
    :data:`_QUERY_TEXT_HEADERS`), which would otherwise be searched as a query; a note says so.  A file of that
    header alone is refused: no query."""
    from ragkit.types import Queries

    if not tabbed or not len(queries):
        return queries
    ids, texts = list(queries.ids), list(queries.texts)
    if _header_name(ids[0]) not in _QUERY_ID_HEADERS or _header_name(texts[0]) not in _QUERY_TEXT_HEADERS:
        return queries
    if len(ids) == 1:
        raise RagkitError(f"{where}: only a header line ({ids[0]}<TAB>{texts[0]}), no query; expected "
                          "query-id<TAB>text lines under it")
    err_console.print(Text(f"note: {where}: its first line ({ids[0]}<TAB>{texts[0]}) names the columns; "
                           "skipped as a header", style="dim"), soft_wrap=True)
    return Queries(ids[1:], texts[1:])


def _print_results(corpus: Corpus, batch: Any, run: Any, pipe: Any) -> None:
    """One table per query: rank, doc id, score, the title (or the text), cut to 80 characters.  A doc id is never
    cut (``urn:doc:pubmed:2019:00000003-supplementary-m…`` at 80 columns, ``urn:doc…`` at 40, before): the id
    column is as wide as the longest id and the title / text wraps; where that leaves the title too little room,
    each document is a line ``rank. id  score`` (the id whole) and an indented line of its title instead."""
    fewer = _fewer_found(pipe)
    for q, (_, ids, scores) in zip(batch.texts, run):
        if not len(ids):  # an empty table said nothing
            console.print(Text(f"{q}: no document found" + (f" ({'; '.join(fewer)})" if fewer else ""),
                               style="dim"), soft_wrap=True)
            continue
        rows = corpus.row_of(ids.tolist())
        labels = [(corpus.titles[row] or corpus.texts[row])[:80] for row in rows]
        shown = [_cell(str(d)) for d in ids]  # (as written: escaped where the encoding lacks a character)
        longest = max(t.cell_len for t in shown)
        if longest + _RESULTS_CHROME > console.width:
            console.print(Text(q, style="bold"), soft_wrap=True)
            for r, (d, s, label) in enumerate(zip(ids, scores, labels), 1):
                console.print(Text(f"{r:>3}. {d}  {s:.4f}"), soft_wrap=True)  # (whole: the terminal wraps it)
                console.print(Padding(Text(label, style="dim"), (0, 0, 0, 5)))  # (wrapped, indented)
            continue
        table = Table(title=_cell(q))
        table.add_column("rank", no_wrap=True)
        table.add_column("doc id", no_wrap=True, min_width=longest)
        table.add_column("score", no_wrap=True)
        table.add_column("title / text", overflow="fold")
        for r, (d, s, label) in enumerate(zip(shown, scores, labels), 1):
            table.add_row(str(r), d, f"{s:.4f}", _cell(label))
        console.print(table)


#: The columns a result table takes besides its doc ids: rank, score, a title's least width, frame and padding.
_RESULTS_CHROME = 40


def _default_chunk_dir() -> str | None:
    """``ragkit ask``'s chunk-cache folder for the default model: ``<ragkit cache>/chunks/<fingerprint of
    its GGUF file>`` (one folder per model: a store refuses a folder written for another); ``None`` when
    the default model cannot be found (the generate step's check says so), and when that folder cannot
    hold a chunk cache (below a file, not writable, a damaged manifest): a note names ``$RAGKIT_CACHE``
    (the user passed no --cache-dir) and the answer is computed without a disk tier."""
    from ragkit.caches.chunk_kv import check_cache_dir
    from ragkit.encoders.sentence import model_fingerprint
    from ragkit.errors import ArtifactError
    from ragkit.eval.beir import cache_dir
    from ragkit.generators.local import default_gguf

    try:
        folder, name = default_gguf()
    except (ImportError, FileNotFoundError):
        return None
    chunks = cache_dir() / "chunks" / model_fingerprint(str(Path(folder) / name))
    try:
        check_cache_dir(chunks)  # (a folder that cannot be written, too)
    except ArtifactError as e:
        where = (f"$RAGKIT_CACHE={os.environ['RAGKIT_CACHE']}" if "RAGKIT_CACHE" in os.environ
                 else "~/.cache/ragkit, the default of $RAGKIT_CACHE")
        err_console.print(Text(f"note: the chunk cache's default folder under {where} cannot be used ({e}); "
                               "answering without keeping the chunks on disk: set RAGKIT_CACHE to a writable folder, "
                               "or pass --cache-dir", style="dim"))
        return None
    return str(chunks)


def _check_llm_packages(gens: list[Any]) -> None:
    """Refuse, before the fit, a local generate step whose model is a GGUF file (the default SmolLM2 one, a
    ``.gguf`` path or a ``gguf_file``) when the packages transformers reads GGUF files with (``gguf``,
    ``accelerate``) are not installed: transformers would refuse only once the model loads, with a traceback.
    A GGUF of which the ragkit cache holds a dequantized copy (made with this transformers) loads without them."""
    import importlib.util

    from ragkit.encoders.sentence import model_fingerprint
    from ragkit.generators.local import _COPY_RECORD, _check_source, default_gguf, gguf_copy_dir

    for g in gens:
        p = g.params
        if p.backend != "local":
            continue
        folder, gguf = default_gguf() if p.model is None else _check_source(p.model, p.gguf_file)
        missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
        if gguf is None or not missing:
            continue
        path = os.path.join(folder, gguf)
        if os.path.isfile(path) and (gguf_copy_dir(model_fingerprint(path)) / _COPY_RECORD).is_file():
            continue
        what = "the default model (SmolLM2-135M-Instruct, a GGUF file)" if p.model is None else \
            f"the model {p.model!r} (a GGUF file)"
        raise RagkitError(f"generate: {what} is read with the package{'s' if len(missing) > 1 else ''} "
                          f"{' and '.join(missing)}, not installed: pip install 'ragkit[llm]'")


@contextmanager
def _quiet_model_loading() -> Iterator[None]:
    """No progress bars while the language model loads (transformers draws one for its weights, and one while it
    parses a GGUF file, over ``ragkit ask``'s status line)."""
    from ragkit._progress import quiet_progress

    with quiet_progress("transformers.modeling_gguf_pytorch_utils"):
        yield


@app.command("ask", epilog=_examples(
    'ragkit ask --pipeline bm25 --data scifact "How does white matter develop in newborns?"'))
@_expands_paths
def ask_cmd(
    question: str = typer.Argument(..., metavar="QUESTION", help="The question to answer."),
    pipeline: str = typer.Option(..., "--pipeline", "-p",
                                 help="Pipeline YAML file, saved pipeline folder or operator name (e.g. bm25)."),
    data: Optional[str] = typer.Option(None, "--data", help="Corpus to fit an unfitted pipeline on: a BEIR name or "
                                                            "folder, or a corpus.jsonl file."),
    top_k: Optional[int] = _ranged_option(None, "--top-k", lo=1, help="Chunks given to the LLM (default 5), when "
                                                                       "the pipeline has no generate step of its "
                                                                       "own."),
    mode: Optional[str] = typer.Option(None, help="KV reuse: full, prefix, naive or cachecraft (default), when the "
                                                  "pipeline has no generate step of its own."),
    max_new_tokens: Optional[int] = _ranged_option(None, "--max-new-tokens", lo=1,
                                                   help="Answer length in tokens (default 96), when the pipeline "
                                                        "has no generate step of its own."),
    cache_dir: Optional[str] = typer.Option(
        None, "--cache-dir", help="Folder of the chunk KV cache on disk, so that later asks reuse the chunks computed "
                                  "here (default: a folder named after the model under chunks/ in the ragkit cache, "
                                  "$RAGKIT_CACHE or ~/.cache/ragkit; used by the cachecraft and naive modes), when the "
                                  "pipeline has no generate step of its own."),
) -> None:
    """Answer a question with retrieval + a local LLM, streaming the answer's tokens.

    The pipeline's own ``generate`` step is used if it has one; otherwise one is appended
    (SmolLM2-135M-Instruct by default, with Cache-Craft chunk-cache reuse; the chunks' key/value
    rows are kept on disk, --cache-dir, so that a later ask reuses them).
    """
    from ragkit.generators.operator import Generate
    from ragkit.pipelines import Pipeline
    from ragkit.pipelines._compose import iter_leaves

    if mode not in (None, "full", "prefix", "naive", "cachecraft"):
        raise typer.BadParameter(f"expected one of full, prefix, naive, cachecraft; got {mode!r}", param_hint="--mode")
    if not question.strip():
        raise typer.BadParameter("expected a question, got an empty one", param_hint="QUESTION")
    if cache_dir is not None and not cache_dir.strip():
        raise typer.BadParameter("expected a folder path, got an empty one (write '.' for the working folder)",
                                 param_hint="--cache-dir")
    if cache_dir is not None and mode in ("full", "prefix"):  # (the folder and its manifest were made for nothing)
        raise typer.BadParameter(f"--mode {mode} uses no chunk cache, so the folder would stay unused; drop "
                                 "--cache-dir, or ask with --mode cachecraft or naive", param_hint="--cache-dir")
    given = {f: v for f, v in (("--top-k", top_k), ("--mode", mode), ("--max-new-tokens", max_new_tokens),
                               ("--cache-dir", cache_dir)) if v is not None}
    streamed = False
    found: Any = None  # the retrieval's ranking, once known: the sources of an interrupted answer
    try:
        pipe, fitted = resolve_pipeline(pipeline)
        _check_retrieves(pipe, f"--pipeline {pipeline}")  # before the fit and the LLM's load
        if not fitted and data is None:
            raise RagkitError(f"--pipeline {pipeline!r} is not a fitted (saved) pipeline, so it needs a corpus: "
                              f"pass --data <BEIR name or folder, or corpus.jsonl>")
        if fitted and data is not None:
            raise RagkitError(f"--data {data}: the pipeline {pipeline} is saved fitted and searches the corpus saved "
                              "with it; drop --data, or pass a pipeline YAML file to fit on that corpus")
        if fitted:
            corpus: Corpus = pipe.corpus_  # a saved pipeline loads with its corpus
        gens = [op for op in iter_leaves(pipe) if isinstance(op, Generate)]
        if gens and given:
            raise RagkitError(f"{', '.join(given)}: the pipeline {pipeline} has its own generate step, whose "
                              "parameters (top_k, mode, max_new_tokens, cache_dir) decide; set them there, or drop "
                              "the flags")
        if not gens:
            if cache_dir is None and mode in (None, "cachecraft", "naive"):  # full and prefix use no chunk cache
                cache_dir = _default_chunk_dir()
            chosen = {f: v for f, v in (("top_k", top_k), ("mode", mode), ("max_new_tokens", max_new_tokens),
                                        ("cache_dir", cache_dir)) if v is not None}
            gens = [Generate(**{"max_new_tokens": 96, **chosen})]  # ask answers at more length than the default
            # its steps, not the pipeline as one step: the paths of fit and search errors stay the YAML's
            pipe = Pipeline([*pipe.steps, gens[0]] if not fitted else [pipe, gens[0]])
        for g in gens:  # a model path that does not exist is refused before the retrieval steps are fitted
            try:
                g.check_source()
            except ParamError as e:  # the flags' step: its fields named as the flags that set them
                raise _as_flag(e, given) from None
        _check_llm_packages(gens)
        if fitted:
            for g in gens:
                if not g.is_fitted:
                    g.fit(corpus)
        else:
            assert data is not None  # refused above
            corpus = _read_ask_corpus(data)
            with err_console.status(f"fitting the pipeline on {len(corpus):,} documents..."):
                pipe.fit(corpus)
        retrieval = _without_generation(pipe, f"--pipeline {pipeline}", note=False)
        if retrieval is not pipe:
            found = retrieval.search([question], **_rankings_only(retrieval)).doc_ids[0]
        if found is not None and not len(found):
            raise RagkitError(f"no document of the {len(corpus):,} matched the question {question!r}, so there is "
                              "nothing to answer from (a bm25 step returns only documents that share a word with "
                              "it, stopwords aside); ask with the words the documents would use")
        with err_console.status("loading the language model..."), _quiet_model_loading():
            for g in gens:
                load = getattr(getattr(g, "engine_", None), "load", None)
                if load is not None:
                    try:
                        load()
                    except ParamError:  # a path that holds no model: bad input (2)
                        raise
                    except RagkitError as e:  # (its source was checked before the fit: a failure while running)
                        raise _RunFailure(str(e)) from None

        def show(_qi: int, piece: str) -> None:
            nonlocal streamed
            streamed = True
            sys.stdout.write(piece)
            sys.stdout.flush()

        run = pipe.search([question], generate={"on_token": show})
    except RagkitError as e:
        _fail(_in_file(e, pipeline))
        return
    except KeyboardInterrupt:  # Ctrl-C: end the partial answer's line, say so (the chunk cache writes whole files)
        if streamed:
            sys.stdout.write("\n")
            sys.stdout.flush()
        _say_interrupted()
        if found is not None and len(found):
            _print_sources(found[: gens[-1].params.top_k], corpus)
        raise typer.Exit(code=130) from None
    sys.stdout.write("\n")
    sys.stdout.flush()
    cost = (run.values.get("prefill") or [None])[0]
    if cost is not None:  # what the answer's prefill cost and reused (stderr), then its sources, the last line
        err_console.print(Text(str(cost), style="dim"))
    _print_sources(run.doc_ids[0][: gens[-1].params.top_k], corpus)


#: ``ragkit ask``'s flags by the field of the generate step they set.
_ASK_FLAGS = {"top_k": "--top-k", "mode": "--mode", "max_new_tokens": "--max-new-tokens", "cache_dir": "--cache-dir"}


def _as_flag(e: ParamError, given: dict[str, Any]) -> ParamError:
    """``e`` (``generate.cache_dir: ...``) with the field named as the ``ragkit ask`` flag that set it
    (``--cache-dir ...``) when ``given`` holds that flag; unchanged otherwise (a pipeline's own step)."""
    message = str(e)
    for field, flag in _ASK_FLAGS.items():
        if message.startswith(f"generate.{field}:") and flag in given:
            rest = message[len(f"generate.{field}"):]
            value = f": {given[flag]}:"  # (``--cache-dir x: ...``, as the other options' errors read)
            rest = f" {given[flag]}:{rest[len(value):]}" if rest.startswith(value) else rest
            e.args = (f"{flag}{rest}", *e.args[1:])
    return e


def _print_sources(ids: Any, corpus: Corpus) -> None:
    """``ragkit ask``'s dim line naming the documents the answer read: id (title or text, cut)."""
    rows = corpus.row_of(list(ids), missing="drop")
    console.print(Text("sources: " + "; ".join(f"{d} ({_cut(corpus.titles[r] or corpus.texts[r], 60)})"
                                               for d, r in zip(ids, rows)), style="dim"), soft_wrap=True)


def _cut(text: str, n: int) -> str:
    """``text`` on one line, cut to at most ``n`` characters, with "…" (counted) where it was cut and no
    space before it."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


@app.command("validate", epilog=_examples(
    "ragkit validate examples/hybrid.yaml",
    "ragkit validate scifact-learned"))
@_expands_paths
def validate_cmd(path: Path = typer.Argument(..., metavar="PIPELINE",
                                          help="Pipeline YAML file, a saved pipeline or operator "
                                                        "folder, or an operator name (bm25).")) -> None:
    """Check a pipeline file (or a saved pipeline's pipeline.yaml, or a saved operator's
    parameters, or an operator's name as --pipeline takes it) without running it; notes models
    that would be downloaded at the first fit.  A saved folder is loaded as ``ragkit search --index``
    loads it: a file changed after saving (its checksum no longer matches) is an error."""
    from ragkit.encoders.sentence import model_note
    from ragkit.pipelines import Pipeline

    saved = path if path.is_dir() and any((path / f).exists() for f in ("manifest.json", "params.json")) \
        else None  # a folder written by Pipeline.save or Operator.save
    if path.is_dir() and (path / "pipeline.yaml").is_file():
        path = path / "pipeline.yaml"
    try:
        if path.is_dir() and (path / "params.json").is_file():  # a folder written by Operator.save
            from ragkit import registry
            from ragkit.operator import read_json

            meta = read_json(path / "params.json")
            if not isinstance(meta, dict) or "operator" not in meta or not isinstance(meta.get("params"), dict):
                raise RagkitError(f"{path / 'params.json'}: not a ragkit operator's parameters (operator, params)")
            try:
                pipe = Pipeline([registry.get(meta["operator"], path=str(path / "params.json"))(meta["params"])])
            except ParamError as e:  # the file the bad parameter came from
                raise RagkitError(f"{path / 'params.json'}: {e}") from None
        elif not path.exists() and not _path_like(str(path)):
            try:
                pipe = resolve_pipeline(str(path))[0]  # an operator's name, as --pipeline takes it (bm25)
            except ParamError as e:
                unknown = str(e).removeprefix("--pipeline: ")
                raise RagkitError(f"{path}: no such file or folder, and {unknown}") from None
            _check_retrieves(pipe, str(path))
        elif not path.exists() and not _is_yaml_text(str(path)):
            raise RagkitError(f"{path}: no such file or folder (expected a pipeline YAML file, a folder written by "
                              "Pipeline.save / Operator.save, or an operator name such as bm25)")
        else:
            pipe = Pipeline.from_yaml(path)
            _check_retrieves(pipe, str(path))  # what eval, train and ask refuse (a saved operator may be a reranker)
            from ragkit.pipelines._checks import encoder_mismatch, encoder_notes

            problem = encoder_mismatch(pipe)  # what its fit would refuse (a dbnorm on another model's cosines)
            if problem is not None:  # with the file's line, as a load error has it
                told = str(problem)
                located = str(_in_file(problem, str(path)))
                raise RagkitError(located if located != told else f"{path}: {told}")
            for said in encoder_notes(pipe):  # what its fit would warn (an mmr encoding again with the default)
                err_console.print(f"[yellow]note:[/] {escape(said)}", soft_wrap=True)
        if saved is not None:
            _load_saved(saved)
    except RagkitError as e:
        _fail(e)
        return
    from ragkit.pipelines.yaml import walk_leaves

    leaves = list(walk_leaves(pipe))
    console.print(f"[green]ok[/] {escape(str(path))}: {len(leaves)} operator{'' if len(leaves) == 1 else 's'}",
                  soft_wrap=True)
    for p, op in leaves:
        console.print(Text(f"  {p}  {op!r}"), soft_wrap=True)  # the Python that builds it, on one line
    for said in _unchained_ks(pipe):  # (notes on stderr: stdout carries the "ok" line and the operators alone)
        err_console.print(Text(f"note: {said}", style="yellow"), soft_wrap=True)
    from ragkit.generators.operator import Generate
    from ragkit.scale import Sharded

    # sentence encoders, a sharded retriever's per-shard one included, and a local generator's LLM
    # (None: the packaged SmolLM2; a langchain backend's model lives in the chat model given to it)
    models = {getattr((op.sub_retriever() if isinstance(op, Sharded) else op).params, "model", None)
              for _, op in leaves if not isinstance(op, Generate) or op.params.backend == "local"}
    for m in sorted(m for m in models if isinstance(m, str)):
        note = model_note(m)
        if note:
            err_console.print(Text(f"note: {note}", style="yellow"), soft_wrap=True)


@app.command("describe", epilog=_examples(
    "ragkit describe",
    "ragkit describe rule_router",
    "ragkit describe parallel",
    "ragkit --import ./my_ops.py describe tfidf"))
def describe_cmd(name: Optional[str] = typer.Argument(
        None, metavar="NAME", show_default=False,
        help="An operator's name (bm25, rule_router) or a structural key of pipeline YAML (parallel, route, "
             "loop); without one, every operator is listed.")) -> None:
    """List the operators, or show one's YAML parameters (type, default, bounds, meaning).

    Without NAME, one line per registered operator (its name, kind and summary), then the
    structural keys; with NAME, what that operator or key is, the papers its docstring cites,
    and each YAML parameter with its type, default (or required), bounds and description.

    Read from the operators themselves (plugins imported with --import or $RAGKIT_IMPORT included).
    An unknown NAME is an error that suggests the closest names."""
    from ragkit._reference import describe, table_text

    try:
        text = table_text() if name is None else describe(name)
    except RagkitError as e:
        _fail(e, hint=False)  # (the module's error: its own suggestions and list; no pointer to this command)
        return
    # plain text, wrapped by the reference itself: no markup read in it (a regex's [a-z]), and no re-wrapping at
    # the terminal's width (a narrow one wraps the long lines itself; piped, nothing is cut at 80 columns)
    console.print(Text(text), soft_wrap=True)


def _unchained_ks(op: Any, path: str = "pipeline", reach: tuple[int, str] | None = None,
                  notes: list[str] | None = None) -> list[str]:
    """``ragkit validate``'s notes on a step that keeps or selects ``k`` documents (top_k, mmr, a reranker's
    k) where fewer reach it: the last retriever before it returns at most its own k (``[bm25: {k: 10},
    top_k: {k: 100}]`` keeps all 10; ``ragkit eval`` notes only afterwards that fewer came back).  ``reach``:
    the most documents that reach ``op`` and the step that limits them (``None``: unknown, as after a
    parallel or a loop, whose depth is not worked out here)."""
    from ragkit.pipelines import Pipeline

    notes = [] if notes is None else notes
    if isinstance(op, Pipeline):
        for child, where in op.child_paths(path):
            reach = _unchained_ks_step(child, where, reach, notes)
        return notes
    _unchained_ks_step(op, path, reach, notes)
    return notes


def _unchained_ks_step(op: Any, path: str, reach: tuple[int, str] | None,
                       notes: list[str]) -> tuple[int, str] | None:
    """One step of :func:`_unchained_ks`: its notes, and what reaches the step after it."""
    from ragkit.pipelines import Loop, Pipeline
    from ragkit.pipelines._compose import Composite

    if isinstance(op, Pipeline):
        _unchained_ks(op, path, reach, notes)
        return None  # (a nested list of steps: not worked out)
    if isinstance(op, Composite):  # its branches get what reaches it; a loop's body gets its own output again
        for child, where in op.child_paths(path):
            _unchained_ks(child, where, None if isinstance(op, Loop) else reach, notes)
        return None
    k = getattr(getattr(op, "params", None), "k", None)
    if not isinstance(k, int) or isinstance(k, bool):
        return reach
    here = f"{path}.{op.name}"
    if op.kind == "retriever":
        return k, here
    if op.kind not in ("filter", "reranker"):
        return reach
    if reach is not None and k > reach[0]:
        n, where = reach
        notes.append(f"{here} keeps k: {k}, but {where} before it returns at most {n} documents (its k), so it "
                     f"keeps all of them; give {where} a k of {k} or more, or {op.name} a k of {n} or less")
    return (k, here) if reach is None or k < reach[0] else reach


def _load_saved(folder: Path) -> None:
    """Load the saved folder as ``ragkit search --index`` does (:func:`_load_folder`: its checksums verified
    first, its files checked against each other), so ``ragkit validate`` refuses what that would refuse."""
    from ragkit.errors import ArtifactError

    try:
        _load_folder(folder, "--index")
    except ArtifactError as e:
        raise ArtifactError(f"{e} (ragkit search --index and Pipeline.load refuse this folder too)") from None


def _check_no_pipelines(results: list[Path], data: Optional[str], split: str, relevance_level: int,
                        keep_identical_ids: bool) -> None:
    """Refuse pipelines (YAML files, saved folders: :func:`~ragkit.eval.compare.pipeline_kind`; a registered
    operator's name, such as ``bm25``, that names no file) given to
    ``ragkit compare`` for results, with the ``ragkit eval`` commands that write their results (scored as
    ``compare`` would score run files: ``--data``, ``--split``, ``--relevance-level``, ``--keep-identical-ids``)
    and the ``ragkit compare`` command on what they write.  A TREC run file or a JSON result passes unread
    (their first line or character tells them apart)."""
    from ragkit.eval.compare import eval_command, pipeline_kind

    kinds = {i: kind for i, p in enumerate(results) if (kind := pipeline_kind(p)) is not None}
    unfound = [i for i, p in enumerate(results) if not p.exists() and not _path_like(str(p))]
    if unfound:  # a registered operator's name (bm25), as ragkit eval --pipeline takes it
        from ragkit import registry

        known = set(registry.names())
        kinds.update({i: "an operator name" for i in unfound if str(results[i]) in known})
        kinds = dict(sorted(kinds.items()))
    if not kinds:
        return
    extra = [*(["--relevance-level", str(relevance_level)] if relevance_level != 1 else []),
             *(["--keep-identical-ids"] if keep_identical_ids else [])]
    taken = {p.name for i, p in enumerate(results) if i not in kinds}
    outs: dict[int, str] = {}
    for i in kinds:  # the JSON each writes, in the working folder: named after it, and each its own
        stem = results[i].stem if results[i].is_file() else results[i].name
        out, n = f"{stem}.json", 1
        while out in taken:
            n += 1
            out = f"{stem}_{n}.json"
        taken.add(out)
        outs[i] = out
    runs = [p for i, p in enumerate(results) if i not in kinds and not p.name.endswith(".json")]
    scoring = ["--data", shlex.quote(data), "--split", shlex.quote(split), *extra] if runs and data else []
    then = " ".join(["ragkit compare", *(outs.get(i) or shlex.quote(str(p)) for i, p in enumerate(results)),
                     *scoring])
    names = [str(results[i]) for i in kinds]
    listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
    if len(kinds) == 1:
        what = f"{listed} is {kinds[next(iter(kinds))]}, not results: evaluate it first"
    elif len(set(kinds.values())) == 1:  # "a pipeline YAML file" -> "pipeline YAML files"
        what = f"{listed} are {next(iter(kinds.values())).split(' ', 1)[1]}s, not results: evaluate each first"
    else:
        what = (", ".join(f"{results[i]} ({kind})" for i, kind in kinds.items()) + " are pipelines, not results: "
                "evaluate each first")
    steps = "\n".join(f"  {eval_command(results[i], data, split, outs[i], extra)}" for i in kinds)
    raise RagkitError(f"RESULTS: {what}, then compare the results written (ragkit compare reads 'ragkit eval -o' "
                      f"JSON files and TREC run files):\n{steps}\n  {then}")


@app.command("compare", epilog=_examples(
    "ragkit compare bm25.json hybrid.json",
    "ragkit compare bm25.json hybrid.json dense.json --baseline bm25.json -m ndcg@10"))
@_expands_paths
def compare_cmd(
    ctx: typer.Context,
    results: list[Path] = typer.Argument(
        ..., metavar="RESULTS", help="Two or more 'ragkit eval -o' JSON files or TREC run files; "
                                                   "the first is the baseline unless --baseline names another."),
    metrics: str = typer.Option("ndcg@10,recall@100", "--metrics", "-m", help="Metrics, comma-separated."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="The reference system: one of RESULTS "
                                                                     "(default: the first)."),
    data: Optional[str] = typer.Option(None, "--data", help="BEIR dataset name or folder whose judgements score "
                                                            "TREC run files."),
    split: str = typer.Option("test", help="Qrels split that scores TREC run files."),
    resamples: int = _ranged_option(200_000, "--resamples", lo=1, hi=10**7,
                                    help="Sign flips of the randomisation test and bootstrap resamples (a p-value "
                                         "near 0.05 then has a Monte Carlo standard error of 0.0005)."),
    seed: int = _ranged_option(0, "--seed", lo=0, hi=2**32 - 1, help="Seed of the resampling."),
    alpha: float = _ranged_option(0.05, "--alpha", kind=float, lo=0.0, hi=1.0,
                                    help="Significance level (Holm-corrected)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the comparison as JSON ('-': standard "
                                                                       "output, the table then on standard error)."),
    relevance_level: int = _ranged_option(1, "--relevance-level", lo=1,
                                          help="Lowest grade the binary metrics count when scoring TREC run files "
                                               "(trec_eval's -l), as ragkit eval's."),
    keep_identical_ids: bool = typer.Option(False, "--keep-identical-ids",
                                            help="Score documents whose id is the query's when scoring TREC run "
                                                 "files, as ragkit eval's."),
) -> None:
    """Compare systems over the same queries: means, differences to a baseline with 95% bootstrap
    intervals, and paired randomisation p-values corrected by Holm's method."""
    from ragkit.eval.compare import compare, load_result

    try:
        names = _parse_metric_names(metrics)  # (one named twice: Holm would count the same comparison twice)
        if not 0 < alpha < 1:
            raise RagkitError(f"--alpha: expected a significance level strictly between 0 and 1, such as 0.05, "
                              f"got {alpha:g}")
        if len(results) < 2:
            raise RagkitError(f"RESULTS: expected two or more result files, got {len(results)}")
        if data is not None:  # (the split scores TREC run files against --data's judgements)
            _check_split("--split", split, data)
        _check_no_pipelines(results, data, split, relevance_level, keep_identical_ids)
        folders = [str(p) for p in results if p.is_dir()]
        if folders:
            raise RagkitError(f"RESULTS: {', '.join(folders)}: {'a folder' if len(folders) == 1 else 'folders'}; "
                              "expected 'ragkit eval -o' JSON files or TREC run files")
        missing = [str(p) for p in results if not p.is_file()]
        if missing:
            raise RagkitError(f"RESULTS: {', '.join(missing)}: no such file (expected 'ragkit eval -o' JSON files or "
                              "TREC run files)")
        empty = [str(p) for p in results if _blank_file(p)]  # else scored as a run that found nothing
        if empty:
            raise RagkitError(f"RESULTS: {', '.join(empty)}: an empty file (an interrupted write?); expected a "
                              "'ragkit eval -o' JSON file or a TREC run file")
        resolved = [p.resolve() for p in results]
        base = 0
        if baseline is not None:
            if baseline.resolve() not in resolved:
                raise RagkitError(f"--baseline {baseline}: not one of the RESULTS ({', '.join(map(str, results))})")
            base = resolved.index(baseline.resolve())
        if output is not None and not _is_stdout(output) and output.resolve() in resolved:  # it would replace one
            raise RagkitError(f"--output {output}: one of the RESULTS; writing the comparison there would replace "
                              "those results; give another path, such as comparison.json")
        _prepare_output(output, "--output", "comparison.json")
        if _is_stdout(output):  # the JSON alone on standard output, for a script; the table and notes on stderr
            _human_output_to_stderr(ctx)
        qrels, ds_name, fingerprint = None, None, None
        if data is not None:  # its judgements only: a corpus can be gigabytes
            from ragkit.eval.beir import beir_qrels
            from ragkit.eval.compare import scored_qrels_fingerprint

            _check_data_folder(data)
            ds_name, qrels = beir_qrels(data, split)
            fingerprint = scored_qrels_fingerprint(qrels, qrels)  # once: each run file scores every judged query
        stems = [p.stem for p in results]  # short names in the table: file stems when they tell the files apart
        labels = stems if len(set(stems)) == len(stems) else [str(p) for p in results]
        loaded = [load_result(p, qrels=qrels, metrics=names, dataset=ds_name, split=split if qrels else None, name=n,
                              relevance_level=relevance_level, ignore_identical_ids=not keep_identical_ids,
                              qrels_fingerprint=fingerprint)
                  for p, n in zip(results, labels)]
        cmp = compare(loaded, names, baseline=base, n_resamples=resamples, seed=seed, alpha=alpha)
    except RagkitError as e:
        _fail(e)
        return
    # (dataset / split: what the results record or --data scored), wrapped between words at the terminal's width
    console.print(Text(cmp.header()))
    _print_comparison(cmp, base)
    if cmp.note():  # (notes and warnings on stderr, as every command's: stdout carries the table or the JSON)
        err_console.print(Text(f"note: {cmp.note()}", style="yellow"), soft_wrap=True)
    for warning in cmp.warnings():
        err_console.print(Text(f"warning: {warning}", style="yellow"), soft_wrap=True)
    for few in cmp.few_differ():
        err_console.print(Text(f"note: {few}", style="yellow"), soft_wrap=True)
    if _is_stdout(output):
        with _stdout_utf8() as out:
            out.write(json.dumps(cmp.to_dict(), indent=2) + "\n")
    elif output is not None:
        try:
            _make_folder(output, "--output")
            _write_text(output, json.dumps(cmp.to_dict(), indent=2))
        except OSError as e:
            _fail(_RunFailure(f"--output {output}: could not be written: {e.strerror or e}"))
        except RagkitError as e:  # (its folder could not be created)
            _fail(e)
        err_console.print(Text(f"wrote {output}"), soft_wrap=True)


def _print_comparison(cmp: Any, base: int) -> None:
    """``ragkit compare``'s table: a metric's block of rows, a row per system, the baseline's without a difference.
    Seven columns with no outer frame or padding (three runs with short names: 75 columns); where the terminal is
    narrower than the table, a few short lines per system and metric instead (``r_dense: mean 0.9097``, ``Δ +0.0386,
    95% CI [...]``, ``p ..., p (Holm) ...``), since a table wrapped by the terminal cannot be read."""
    from rich import box
    from rich.measure import Measurement

    from ragkit.eval.compare import format_p

    ci = f"{cmp.confidence:.0%} CI"
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("metric", "system", "mean", "Δ", ci, "p", "p (Holm)"):
        table.add_column(col, justify="left" if col in ("metric", "system") else "right", no_wrap=True)
    shallow = cmp.shallow  # a result searched shallower than the metric's cut-off: "!" (see the warning)
    lines: list[Text] = []
    for j, m in enumerate(cmp.metrics):
        metric = f"{m} !" if shallow[:, j].any() else m
        lines.append(Text(metric, style="bold"))
        for i, s in enumerate(cmp.systems):
            system = f"{s} !" if shallow[i, j] else s
            cells = [metric if i == 0 else "", system, f"{cmp.means[i, j]:.4f}"]
            if i != base:
                more = [f"{cmp.delta[i, j]:+.4f}", f"[{cmp.ci_low[i, j]:+.3f}, {cmp.ci_high[i, j]:+.3f}]",
                        format_p(cmp.p_value[i, j]), f"{format_p(cmp.p_holm[i, j])} {cmp.marks[i, j]}".rstrip()]
                cells += more
                lines += [Text(f"  {system}: mean {cells[2]}"), Text(f"    Δ {more[0]}, {ci} {more[1]}"),
                          Text(f"    p {more[2]}, p (Holm) {more[3]}")]
            else:
                lines.append(Text(f"  {system} (baseline): mean {cells[2]}"))
            table.add_row(*cells)
        table.add_section()
    need = Measurement.get(console, console.options.update(max_width=10_000), table).maximum
    if need <= console.width or not console.is_terminal:  # (piped: the table whole, for a file or a grep)
        _print_uncut(table)
        return
    for line in lines:
        console.print(line)


#: The first failed write of each standard stream while :func:`main` runs (``"stdout"``, ``"stderr"``: the
#: :class:`OSError`), recorded by :class:`_GuardedStream` and :func:`_stdout_utf8`; :func:`main` turns it into the
#: exit status (:func:`_stream_failed`) once the command has finished.
_stream_errors: dict[str, OSError] = {}

#: Whether the running command was asked to write a file (``-o``/``--run`` given a path, not ``-``; ``train``'s
#: ``--out`` folder): then a closed standard output does not stop it (:func:`_reader_gone`).  Set by
#: :func:`_want_files`, cleared by :func:`main`.
_files_requested = False

#: Whether standard error writes where standard output does (``2>&1 | head``): then its reader closing the pipe is
#: standard output's too (:func:`_reader_gone`).  Set by :func:`main` (:func:`_same_stream`).
_stderr_is_stdout = False


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


@contextmanager
def _no_color() -> Iterator[None]:
    """``$NO_COLOR`` set (https://no-color.org): no ANSI styling at all on :data:`console` and :data:`err_console`
    for the whole of :func:`main`, its own errors included (a usage error's ``error:``, printed after the
    command's context closed)."""
    if not os.environ.get("NO_COLOR"):
        yield
        return
    was = [(c, c._color_system) for c in (console, err_console)]
    for c, _ in was:
        c._color_system = None
    try:
        yield
    finally:
        for c, system in was:
            c._color_system = system


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
    global _files_requested, _stderr_is_stdout, _reporting_failure
    with _no_color():
        _stream_errors.clear()
        _files_requested = _reporting_failure = False
        saved = sys.stdout, sys.stderr
        _stderr_is_stdout = _same_stream(*saved)
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
        return _stream_failed(status) if _stream_errors else status


def _run(args: Optional[list[str]]) -> int:
    """:func:`main` but for the standard streams' failures and ``$NO_COLOR``."""
    import importlib

    # click's exceptions, where typer raises them from (typer 0.26 and later vendor click as typer._click)
    clicks = importlib.import_module(typer.BadParameter.__module__)
    global _interruption_said
    _interruption_said = False
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
    if status == 130 and not _interruption_said:  # Ctrl-C: typer turned it into a silent Exit(130)
        _say_interrupted()
    return status if isinstance(status, int) else 0  # (a typer.Exit's code, or a command's None)


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
