"""Option parsing shared by the commands: ``~`` expanded in path parameters, ranged numeric options with
their range in the help and the error, and the ``--k`` / ``--metrics`` lists."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import typer

from ragkit.errors import RagkitError
from ragkit.params import MAX_INT


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


#: The parameters of the commands that hold paths (or a path or a name: ``--data``, ``--pipeline``).
_PATH_PARAMS = frozenset({"data", "pipeline", "output", "run_file", "out", "index", "queries_file", "cache_dir", "path",
                          "results", "baseline"})


def _expands_paths(command: Any) -> Any:
    """A command whose path parameters (:data:`_PATH_PARAMS`) come in with ``~`` expanded (:func:`_user_path`)
    before its body checks or reads any, and an empty ``--data`` or ``--pipeline``
    (:data:`_NAMED_PATHS`) is refused as a usage error (it was read as the current folder)."""
    import functools

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        for key, (option, expected) in _NAMED_PATHS.items():  # (a path option's parser refuses it: _path_option)
            if kwargs.get(key) == "":
                raise _empty_path(option, "", expected)
        return command(*args, **{k: _user_path(v) if k in _PATH_PARAMS else v for k, v in kwargs.items()})

    return run


#: The ``str`` path options, refused empty by :func:`_expands_paths` (a :class:`Path` option's parser refuses it:
#: :func:`_path_option`): a dataset or pipeline as a path or a name; each parameter's name to the option's, and
#: what it expects.
_NAMED_PATHS = {"data": ("--data", "a BEIR dataset name or folder"),
                "pipeline": ("--pipeline", "a pipeline YAML file, a saved folder or an operator name")}


def _empty_path(name: str, value: Any, expected: str = "a path") -> typer.BadParameter:
    """The usage error of an empty path given to the option ``name`` (``--data ""``, ``--index "$UNSET"``): it was
    taken as the current folder (``Path("")`` is ``Path(".")``)."""
    return typer.BadParameter(f"expected {expected}, got {value!r} (an empty path; for the current folder give '.')",
                              param_hint=f"'{name}'")


def _path_parser(name: str) -> Callable[[Any], Any]:
    """The parser of a path option or argument ``name`` (:func:`_path_option`): its text as a :class:`Path`, an
    empty one refused (:func:`_empty_path`), where typer's own made it ``Path(".")``, the current folder."""

    def parse(value: Any) -> Any:
        if value is None or isinstance(value, Path):  # (an optional option's default)
            return value
        if str(value) == "":
            raise _empty_path(name, value)
        return Path(value)

    parse.__name__ = "path"
    return parse


def _path_option(default: Any, name: str, *names: str, **kw: Any) -> Any:
    """``typer.Option(default, name, *names, ...)`` of a path that refuses an empty one (:func:`_path_parser`)."""
    return typer.Option(default, name, *names, parser=_path_parser(name), metavar="<path>", **kw)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the parameter ``name`` of the running command was given (on the command line, or by an environment
    variable), not left at its default."""
    return getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"  # (typer's own click enum)


def _range_text(kind: type, lo: float | None, hi: float | None, exclusive: bool = False) -> str:
    """``an integer >= 1``, ``an integer from 0 to 4,294,967,295``, ``a number from 0 to 1``, with ``exclusive``
    (the bounds themselves refused) ``a number strictly between 0 and 1``, ``a number > 0``: what a ranged option
    takes (:func:`_ranged_option`)."""
    noun = "an integer" if kind is int else "a number"

    def num(x: Any) -> str:
        return f"{x:,}" if kind is int else f"{x:g}"

    if lo is not None and hi is not None:
        return (f"{noun} strictly between {num(lo)} and {num(hi)}" if exclusive else
                f"{noun} from {num(lo)} to {num(hi)}")
    if lo is not None:
        return f"{noun} {'>' if exclusive else '>='} {num(lo)}"
    return f"{noun} {'<' if exclusive else '<='} {num(hi)}"


def _range_parser(name: str, kind: type, lo: float | None, hi: float | None,
                  exclusive: bool = False) -> Callable[[Any], Any]:
    """The parser of a ranged option ``name`` (:func:`_ranged_option`): its text (or a default, as given) as ``kind``
    within ``lo`` .. ``hi`` (with ``exclusive``, strictly between them: the bounds refused), else a
    ``typer.BadParameter`` naming the option, the range and the value given
    (``Invalid value for '--limit': expected an integer >= 1, got '-3'``; exit status 2), where typer's own
    ``min=`` / ``max=`` said only "Input should be greater than or equal to 1"."""
    expected = _range_text(kind, lo, hi, exclusive)

    def within(x: Any) -> bool:  # (NaN: within no range)
        if exclusive:
            return (lo is None or x > lo) and (hi is None or x < hi)
        return (lo is None or x >= lo) and (hi is None or x <= hi)

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
        if x is None or not within(x):
            given = value if not isinstance(value, str) or len(value) <= 60 else value[:57] + "..."
            raise typer.BadParameter(f"expected {expected}, got {given!r}", param_hint=f"'{name}'")
        return x

    parse.__name__ = "integer" if kind is int else "float"  # (the metavar of a typer that names it after the parser)
    return parse


def _ranged_option(default: Any, name: str, *, kind: type = int, lo: float | None = None, hi: float | None = None,
                   exclusive: bool = False, help: str = "", **kw: Any) -> Any:
    """``typer.Option(default, name, ...)`` taking ``kind`` (int or float) within ``lo`` .. ``hi`` (with
    ``exclusive``, strictly between them), the range said in its help and, with the value given, in its error
    (:func:`_range_parser`), in place of typer's ``min=`` / ``max=``."""
    said = _range_text(kind, lo, hi, exclusive)
    return typer.Option(default, name, parser=_range_parser(name, kind, lo, hi, exclusive),
                        help=f"{help}  [{said}]" if help else f"[{said}]", **kw)


def _parse_ks(ks: str, *, refuse_repeats: bool = False) -> list[int]:
    """``--k``'s comma-separated cut-offs (``10,100``) as positive integers, in their order, each once; an empty
    item (``10,,100``, ``10,``) is a ``typer.BadParameter`` (exit status 2), as ``--data``'s lists refuse one.
    A cut-off given twice (``10,10``, ``10,010``) is kept once, or with ``refuse_repeats`` (``ragkit eval``'s
    ``--k``, as ``--metrics`` and ``--data`` refuse an item listed twice) refused."""
    items = [x.strip() for x in ks.split(",")]
    if len(items) > 1 and not all(items):
        raise typer.BadParameter(f"{ks!r}: an empty item in the comma-separated list; expected cut-offs such as "
                                 "10,100", param_hint="--k")
    try:
        out = [int(x) for x in items if x]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers such as 10,100, got {ks!r}", param_hint="--k")
    if not out or any(k < 1 for k in out):
        raise typer.BadParameter(f"expected positive integers, got {ks!r}", param_hint="--k")
    if max(out) > MAX_INT:  # trec_eval's cut-offs are C ints: refused here, not as an unknown metric after the search
        raise typer.BadParameter(f"expected cut-offs of at most {MAX_INT:,}, got {max(out)}", param_hint="--k")
    if refuse_repeats:
        seen: dict[int, str] = {}
        for item, k in zip([x for x in items if x], out):
            if k in seen:
                said = (f"the cut-off {k} is listed twice" if seen[k] == item else
                        f"{seen[k]!r} and {item!r} are both the cut-off {k}")
                raise typer.BadParameter(f"{ks!r}: {said}; list each cut-off once", param_hint="--k")
            seen[k] = item
    return list(dict.fromkeys(out))  # (10,10 and 10,010 are 10 once: each metric is scored at each cut-off once)


def _parse_metric_names(metrics: str) -> list[str]:
    """``--metrics``' comma-separated names (``ndcg@10,hole@10``), checked together (:func:`parse_metrics`), in
    their canonical spelling; none, an empty item (``ndcg@10,,recall@100``), or one named twice
    (``nDCG@10,ndcg@10``), is a :class:`RagkitError`."""
    from ragkit.eval.metrics import _named_twice, _twice_said, parse_metrics

    names = [m.strip() for m in metrics.split(",")]
    if not any(names):
        raise RagkitError(f"--metrics: expected names such as ndcg@10,recall@100, got {metrics!r}")
    if not all(names):  # (as --k and --data refuse theirs: ndcg@10,,recall@100 is a typo, not two metrics)
        raise RagkitError(f"--metrics {metrics}: an empty item in the comma-separated list; expected names such as "
                          "ndcg@10,recall@100")
    try:
        parsed = parse_metrics(names)  # every name it cannot read, in one message
    except RagkitError as e:
        raise RagkitError(f"--metrics: {e}") from None
    twice = _named_twice(names, parsed)
    if twice:
        raise RagkitError(f"--metrics: {_twice_said(twice, str)}")
    return [f"{name}@{cut}" for name, cut in parsed]
