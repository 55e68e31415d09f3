"""Run-time search options: what each operator reads, and one check before a search starts.

``pipeline.search(queries, k=10, filter={"year": 2020}, bm25={"n_jobs": 4})`` hands its
keyword options to the operators through ``State.options``.  Three kinds of key are valid:

* ``k``: the final number of results (retrievers fetch at least ``k``);
* ``filter``: a metadata filter ``{field: value or [values]}`` applied by every retriever;
* an operator's registry name, mapping to that operator's own options
  (``{"muvera": {"candidates": 500}}``); every operator of that name in the pipeline reads
  them (names are registry names, shared by all operators of a class, not branch names).

Each operator class declares the options it reads in ``run_options``
(:meth:`Operator.declared_options <ragkit.operator.Operator.declared_options>` adds a
retriever's ``k`` and ``filter``), each with how it is checked: :data:`PARAM` for a field of
the operator's parameter model, validated by that model with the same rules as at
construction (one source of truth), or a function ``(operator, value) -> value`` for the
others.  :func:`check_options` walks the whole operator tree (parallel branches and fusers,
routers and route branches, loop bodies and judges, nested pipelines, a sharded retriever's
per-shard retriever) and raises :class:`~ragkit.errors.ParamError` for an unknown key or a
bad value before any work is done, e.g.::

    search option bm25.kk: unknown option for operator 'bm25' (BM25); expected one of: k, filter, n_jobs
    search option 'filtr': not an option; expected k, filter, or an operator name: bm25, dense, rrf
"""

from __future__ import annotations

import difflib
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional, Union

from pydantic import ValidationError

from ragkit.errors import DataError, ParamError
from ragkit.params import describe_error, error_loc, format_loc

if TYPE_CHECKING:
    from ragkit.operator import Operator
    from ragkit.types import Corpus

__all__ = ["PARAM", "OptionCheck", "CALL_OPTIONS", "check_options", "check_option_names", "option_readers",
           "filter_option", "callable_option", "filter_value", "positive_k", "check_count", "count_option", "resolve_k",
           "refuse_unapplied_filter"]

#: ``run_options`` value of an option that is a field of the operator's parameter model of the
#: same name: checked (and converted) by validating a copy of the parameters with it replaced.
PARAM = "param"

#: How an option is checked: :data:`PARAM`, or a function ``(operator, value, corpus) -> value``
#: (``corpus``: the corpus searched, or None when unknown) that returns the value to use and raises
#: ``ValueError`` / ``TypeError`` with ``expected ..., got ...``.
OptionCheck = Union[str, Callable[["Operator", Any, "Corpus | None"], Any]]

#: Keys of the call itself (not of an operator): read by every operator that honours them.
CALL_OPTIONS = ("k", "filter")

#: How an option is named in errors: ``search option bm25.kk`` for ``search``'s keywords; an
#: operator called directly on a ``State`` names it by its place in ``State.options``
#: (``options.bm25.kk``, the path of every error).
_WHERE = "search option "

#: the tree :func:`check_options` is checking options against while it runs (``None`` outside a check): an
#: operator's :meth:`~ragkit.operator.Operator.check_run_options` reads it through :func:`checked_root` when what
#: it allows depends on the steps around it (a ``score_threshold``'s per-search threshold on the scores reaching
#: it in that tree)
_CHECKED_ROOT: "ContextVar[Optional[Operator]]" = ContextVar("ragkit_checked_root", default=None)


def checked_root() -> "Operator | None":
    """The operator tree whose options :func:`check_options` is checking now (the pipeline searched, or the
    operator called on a :class:`~ragkit.types.State` with options), else ``None``: for an operator's
    :meth:`~ragkit.operator.Operator.check_run_options`, whose options are checked against the tree it runs in."""
    return _CHECKED_ROOT.get()


@contextmanager
def _checking(root: "Operator") -> Iterator[None]:
    token = _CHECKED_ROOT.set(root)
    try:
        yield
    finally:
        _CHECKED_ROOT.reset(token)


# ---------------------------------------------------------------------- checks of single options
def filter_value(value: Any, corpus: "Corpus | None" = None) -> Any:
    """Check a metadata filter ``{field: value or [values]}`` (or ``None``) and return it unchanged.

    The rules of :meth:`Corpus.mask <ragkit.types.Corpus.mask>`: string field names, no query
    operators such as ``{"$gte": 2020}``; with ``corpus``, every field must be one of its
    metadata fields, ``_id`` (or ``id``, where no metadata field has that name: the document ids) or
    ``title``.  Raises ``TypeError`` / ``ValueError`` (``expected ..., got ...``).
    """
    from ragkit._corpus import filter_field
    from ragkit.metadata import AllOf, filter_problem
    from ragkit.types import unknown_filter_field

    if value is None:
        return None
    if isinstance(value, AllOf):  # filters all of which apply (a LangChain retriever's and its call's)
        for part in value:
            filter_value(part, corpus)
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a metadata filter {{field: value or [values]}}, got {value!r:.80}")
    bad = filter_problem(value)
    if bad is not None:
        key, what = bad
        raise (ValueError(f"field {key!r}: {what}") if key is not None else TypeError(what))
    for key in value:
        if corpus is not None and filter_field(key, corpus.metadata) is None:  # (Corpus.mask's rule)
            raise ValueError(unknown_filter_field(key, corpus.metadata))
    return value


def filter_option(op: "Operator", value: Any, corpus: "Corpus | None") -> Any:
    """The ``filter`` option of a retriever: :func:`filter_value` against the corpus searched."""
    return filter_value(value, corpus)


def bool_option(op: "Operator", value: Any, corpus: "Corpus | None") -> bool:
    """An on/off option, such as a generator's ``answer``."""
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {type(value).__name__} {value!r:.80}")
    return value


def callable_option(op: "Operator", value: Any, corpus: "Corpus | None") -> Any:
    """An option that is a function (or ``None``), such as a generator's ``on_token``."""
    if value is not None and not callable(value):
        raise TypeError(f"expected a function or None, got {type(value).__name__} {value!r:.80}")
    return value


def check_count(value: Any, minimum: int = 1, beyond: str = "") -> int:
    """``value`` as an int when it is an integer (``int`` or a numpy integer) of at least ``minimum``, else
    ``TypeError`` / ``ValueError`` ``"expected a positive integer, got '8'"``: the rule of every count a call may
    set (its ``k``: :func:`positive_k`; mmr's ``fetch_k``, a filter's ``k_min``, ``minimum=0``): a bool, a string
    (``"8"``) and a float (even ``8.0``) are refused, not converted, and so is a count above
    :data:`ragkit.params.MAX_INT`, the error of which ends with ``beyond`` (after ``"; "``) when given.  (Their
    parameters convert ``"8"`` as ``k``'s does.)"""
    import numpy as np

    from ragkit.params import MAX_INT, shown

    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"expected {what}, got {shown(value)}")
    if value < minimum:
        raise ValueError(f"expected {what}, got {shown(value)}")
    if value > MAX_INT:
        raise ValueError(f"expected {what} of at most {MAX_INT:,}, got {shown(value)}{'; ' + beyond if beyond else ''}")
    return int(value)


def count_option(minimum: int = 1, none: bool = False) -> Callable[[Any, Any, Any], int | None]:
    """A ``run_options`` check (``(operator, value, corpus) -> value``) of a count set per call: :func:`check_count`
    (``none``: ``None`` passes too, as the parameter allows it), so that ``search(q, mmr={"fetch_k": "8"})`` is
    refused as ``mmr={"k": "3"}`` is (``search option mmr.fetch_k: expected a positive integer, got '8'``)."""

    def check(op: Any, value: Any, corpus: Any = None) -> int | None:
        return None if none and value is None else check_count(value, minimum)

    check.__doc__ = f"A per-call count of at least {minimum}{' (or None)' if none else ''}: check_count."
    return check


def positive_k(value: Any, where: str, path: str = "options.k") -> int:
    """``value`` as an int when it is a positive integer (``int`` or a numpy integer), else a
    :class:`ParamError` ``"<where>: expected a positive integer, got <value>"`` (``path``: its
    :attr:`~ragkit.errors.ParamError.path`).

    The one rule of every ``k`` given at run time: the call's ``k``, an operator's own ``k`` option
    (``search(q, top_k={"k": 3})``) and the ``k`` a retriever or cut-off reads when it runs.  A bool,
    a string (``"3"``) and a float (even ``3.0``) are refused, not converted, and so is a ``k`` above
    :data:`ragkit.params.MAX_INT` (2**31 - 1), as a ``k`` parameter refuses it.
    """
    try:
        return check_count(value, beyond="a k above the corpus returns the whole corpus, so the corpus size is enough")
    except (TypeError, ValueError) as e:
        raise ParamError(f"{where}: {e}", path=path) from None


def _positive_k(value: Any, where: str = _WHERE) -> int | None:
    """The call's ``k`` as an int (``None`` stays ``None``), as :meth:`Pipeline.search` checks it;
    ``where`` is the prefix of its name in errors (:func:`positive_k`)."""
    return None if value is None else positive_k(value, f"{where}k")


def resolve_k(own: Any, param: int | None, call_k: Any, name: str, field: str = "k") -> int | None:
    """How many results an operator returns or keeps: its own ``k`` option (``own``) exactly, else its
    ``k`` parameter (``param``, the field ``field``) raised to the call's ``k`` (``call_k``: the final
    number of results, so no step before the end keeps fewer), else ``None`` when ``param`` is
    ``None`` and no ``k`` option was given (no cut).  Each is checked by :func:`positive_k`, named in
    errors by where it came from (``options.top_k.k``, ``top_k.k``, ``options.k``).

    The rule of :meth:`Operator.k_for <ragkit.operator.Operator.k_for>` (retrievers), the cut-offs'
    ``k`` (top_k, mmr, maxsim) and a fuser's ``top_k``.
    """
    if own is not None:
        return positive_k(own, f"options.{name}.k", f"options.{name}.k")
    if param is None:
        return None
    k = positive_k(param, f"{name}.{field}", f"{name}.{field}")
    return max(k, positive_k(call_k, "options.k")) if call_k is not None else k


# ---------------------------------------------------------------------- the tree
def option_readers(root: "Operator") -> Iterator[tuple[str, "Operator"]]:
    """``(path, operator)`` for every operator of the tree under ``root`` that may read options.

    Paths are those of :func:`~ragkit.pipelines.yaml.walk_leaves` (``pipeline[0].parallel.
    branches[1].dense``); an operator's :meth:`~ragkit.operator.Operator.option_children` (a
    sharded retriever's per-shard retriever) follow it, under ``<its path>.<field>``.
    """
    from ragkit.pipelines.yaml import walk_leaves

    stack = list(walk_leaves(root))[::-1]
    while stack:
        path, op = stack.pop()
        yield path, op
        for field, child in op.option_children()[::-1]:
            stack.extend(list(walk_leaves(child, f"{path}.{field}"))[::-1])


def _hint(key: str, valid: list[str]) -> str:
    """`` (did you mean 'filter'?)`` for the valid names closest to ``key``, or nothing."""
    close = difflib.get_close_matches(str(key), valid, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def check_options(root: "Operator", options: Mapping[str, Any], corpus: "Corpus | None" = None, *,
                  where: str = _WHERE) -> dict[str, Any]:
    """Check run-time search ``options`` against the operator tree ``root``; return them converted.

    Parameters
    ----------
    root : Operator
        The pipeline (or single operator) that will run with these options.
    options : mapping
        ``k``, ``filter`` and ``{operator name: {option: value}}``, as given to ``search``.
    corpus : Corpus, optional
        The corpus searched (the one the pipeline was fitted on, or is about to be); when
        given, a ``filter`` may only name its metadata fields (and ``_id``).
    where : str
        What the errors call an option, before its name: ``"search option "`` (``search option
        bm25.kk: ...``), or ``"options."`` for the options of a ``State`` an operator is called on.

    Returns
    -------
    dict
        A new options dict (the caller's mappings are not changed) whose values are converted
        as the parameter models convert them (``{"bm25": {"n_jobs": "2"}}`` -> ``2``).

    Raises
    ------
    ParamError
        For the first key that is not an option, an operator option its class does not
        declare, or a value its check refuses; the message names the option's path, what
        was given and what is expected.

    Examples
    --------
    >>> from ragkit.retrievers import BM25
    >>> check_options(BM25(), {"bm25": {"n_jobs": "2"}, "filter": {"year": 2020}})
    {'bm25': {'n_jobs': 2}, 'filter': {'year': 2020}}
    >>> check_options(BM25(), {"bm25": {"kk": 1}})
    Traceback (most recent call last):
    ragkit.errors.ParamError: search option bm25.kk: unknown option for operator 'bm25' (BM25); expected one of: ...
    """
    if not options:
        return {}
    readers: dict[str, list[tuple[str, Operator]]] = {}
    for path, op in option_readers(root):
        if op.name:
            readers.setdefault(op.name, []).append((path, op))
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key == "k":
            out[key] = _positive_k(value, where)
        elif key == "filter":
            try:
                out[key] = filter_value(value, corpus)
            except (TypeError, ValueError) as e:
                raise ParamError(f"{where}filter: {e}", path="options.filter") from None
            _check_filter_kinds(out[key], corpus, f"{where}filter", "options.filter")
        elif isinstance(key, str) and key in readers:
            with _checking(root):  # (check_run_options may check against the tree: checked_root())
                out[key] = _check_operator_options(key, value, readers[key], corpus, where)
        else:
            valid = [*CALL_OPTIONS, *readers]
            names = ", ".join(readers) or "(none)"
            from ragkit import registry

            known = isinstance(key, str) and key in registry.names()
            what = f"no {key!r} operator in this pipeline" if known else "not an option"
            step = f"; a call sets its operators' options: to use {key}, add it to the pipeline as a step" * known
            raise ParamError(f"{where.rstrip('. ')} {key!r}: {what}; expected k, filter, or an operator name: {names}"
                             f"{_hint(key, valid)}{step}", path=f"options.{key}")
    return out


def check_option_names(name: str, value: Any, ops: list["Operator"], prefix: str = _WHERE) -> None:
    """Refuse ``options[name]`` unless it is a mapping whose every key is an option that the operators
    ``ops`` (those called ``name``) declare: a :class:`ParamError` naming it (``search option
    bm25.kk: unknown option for operator 'bm25' (BM25); expected one of: k, filter, n_jobs``).
    The values are not checked here."""
    where = f"{prefix}{name}"
    if not isinstance(value, Mapping):
        raise ParamError(f"{where}: expected a mapping of options {{option: value}} for operator {name!r}, got "
                         f"{value!r:.80}", path=f"options.{name}")
    classes = list(dict.fromkeys(type(op) for op in ops))
    declared = {k: None for cls in classes for k in cls.declared_options()}
    for key in value:
        if key not in declared:
            owners = ", ".join(cls.__name__ for cls in classes)
            expected = (f"expected one of: {', '.join(declared)}{_hint(key, list(declared))}" if declared
                        else "it reads no run-time options")
            raise ParamError(f"{where}.{key}: unknown option for operator {name!r} ({owners}); {expected}",
                             path=f"options.{name}.{key}")


def _check_filter_kinds(value: Any, corpus: "Corpus | None", at: str, path: str) -> None:
    """Refuse, before any step runs, a filter (checked by :func:`filter_value`) that the corpus searched would
    refuse when a retriever applies it (:meth:`Corpus.check_filter_kinds
    <ragkit.types.Corpus.check_filter_kinds>`: a value of another kind than its field's, ``{"year": "2010"}``
    for years held as numbers): the same :class:`~ragkit.errors.DataError`, its message starting at ``at``
    (``search option bm25.filter.year: the field holds int values; ...``) and its ``path`` attribute the filter's
    place in the options (``"options.bm25.filter"``, as a :class:`ParamError`'s), not after the other steps' work
    (a dense branch's encoding).  Nothing without a corpus or a filter."""
    if corpus is None or not value:
        return
    from ragkit.pipelines._compose import placed_at

    try:
        corpus.check_filter_kinds(value)
    except DataError as e:
        placed = placed_at(e, at, "filter")
        placed.path = path  # (RagkitRetriever's error names it)
        raise placed from None


def _check_operator_options(name: str, value: Any, ops: list[tuple[str, "Operator"]],
                            corpus: "Corpus | None", prefix: str = _WHERE) -> dict[str, Any]:
    """Check ``options[name]`` against every operator called ``name``; return it converted."""
    check_option_names(name, value, [op for _, op in ops], prefix)
    out: dict[str, Any] = {}
    seen: set[int] = set()
    for path, op in ops:
        if id(op) in seen:
            continue
        seen.add(id(op))
        # a rule across fields depends on this operator's parameters: say which one when several share the name
        at = f" (for the {name!r} at {path.rsplit('.', 1)[0]})" if len(ops) > 1 else ""
        for key, converted in _check_one(op, value, name, at, corpus, prefix).items():
            out.setdefault(key, converted)
    return out


def _check_one(op: "Operator", value: Mapping[str, Any], name: str, at: str, corpus: "Corpus | None",
               prefix: str = _WHERE) -> dict[str, Any]:
    """The options in ``value`` that ``op`` declares, checked and converted for ``op``."""
    where = f"{prefix}{name}"
    specs = type(op).declared_options()
    mine = {k: v for k, v in value.items() if k in specs}
    params = {k: v for k, v in mine.items() if specs[k] == PARAM}
    if params.get("k") is not None:  # a count: the rule of the call's k, not the model's lax int ("3", 3.0)
        params["k"] = positive_k(params["k"], f"{where}.k", f"options.{name}.k")
    out: dict[str, Any] = {}
    if params:
        try:
            checked = op.params.updated(**params)
        except ValidationError as exc:
            raise _param_error(exc, name, params, at, prefix) from None
        out.update({k: getattr(checked, k) for k in params})
    for key, v in mine.items():
        if key in params:
            continue
        try:
            out[key] = specs[key](op, v, corpus)  # type: ignore[operator]
        except (TypeError, ValueError) as e:
            raise ParamError(f"{where}.{key}: {e}", path=f"options.{name}.{key}") from None
        if key == "filter" and op.applies_filter:
            _check_filter_kinds(out[key], corpus, f"{where}.filter", f"options.{name}.filter")
    try:  # what the operator's fitted state allows (a muvera prune needs its codebook)
        op.check_run_options(out)
    except (TypeError, ValueError) as e:
        named = next((k for k in out if str(e).startswith(f"{k}: ")), None)
        text = str(e).removeprefix(f"{named}: ") if named else str(e)
        raise ParamError(f"{where}{'.' + named if named else ''}: {text}{at}",
                         path=f"options.{name}{'.' + named if named else ''}") from None
    return out


def _no_yaml(text: str) -> str:
    """A parameter error's text without its hint about YAML's spelling (options come from Python)."""
    return text.split("; YAML reads", 1)[0]


def _param_error(exc: ValidationError, name: str, given: Mapping[str, Any], at: str,
                 prefix: str = _WHERE) -> ParamError:
    """A pydantic error of a parameter copy as ``search option <name>.<field>: expected ..., got ...``.

    A rule across fields (a model validator, location ``()``) is named at the one option given,
    or at the operator when several were, and keeps its own text (which quotes the values).
    """
    where = f"{prefix}{name}"
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if loc:
            lines.append(f"{format_loc(where, loc)}: {_no_yaml(describe_error(err, 'python'))}")
            continue
        text = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        field = next((f for f in given if text.startswith(f"{f}: ")), None)
        if field is not None:  # a check of one field written before the others (booleans for integers)
            lines.append(f"{where}.{field}: {_no_yaml(text.removeprefix(f'{field}: '))}")
            continue
        refused = _refused_option(err, given)  # a rule across fields naming one option given: that one
        head = f"{where}.{refused or next(iter(given))}" if refused or len(given) == 1 else where
        lines.append(f"{head}: {text}{at}")
    errors = exc.errors()
    first = tuple(errors[0]["loc"]) if errors else ()
    refused = _refused_option(errors[0], given) if errors and not first else None
    return ParamError("\n".join(lines), path=format_loc(f"options.{name}", first or (refused or next(iter(given)),)))


def _refused_option(err: Mapping[str, Any], given: Mapping[str, Any]) -> str | None:
    """The field a rule across fields refused (:class:`~ragkit.params.FieldRefusal`, located by
    :func:`~ragkit.params.error_loc` as a constructor's error is) when it is one of the options ``given``,
    else ``None`` (a copy has every field set, so the rule may name one not given: the option given is named)."""
    loc = error_loc(err)
    return loc[-1] if len(loc) > len(err.get("loc") or ()) and loc[-1] in given else None


def _unapplied_filter_message(op: "Operator", where: str) -> str:
    """Why a ``filter`` is refused for the retriever ``op``, which does not apply one (``where``: the option's
    name in the message's first words), and how to make it apply one."""
    cls = type(op).__name__
    return (f"{where}: {cls} ({op.name!r}) is a retriever that does not apply metadata filters "
            f"({cls}.applies_filter is False), so its results would include documents the filter excludes; search "
            f"without filter, or make {cls} apply it: in {cls}._call keep only the rows allowed by "
            f"self.filter_mask(state) (a boolean mask over the corpus rows, or None for no filter) and set "
            f"applies_filter = True on the class")


def _unapplied_filter_option(op: "Operator", value: Any, corpus: "Corpus | None") -> Any:
    """The ``filter`` option of a retriever that does not apply one (:attr:`Operator.applies_filter`):
    refused unless empty."""
    value = filter_option(op, value, corpus)
    if value:
        raise ValueError(_unapplied_filter_message(op, "filter").removeprefix("filter: "))
    return value


def refuse_unapplied_filter(root: "Operator", options: Mapping[str, Any], where: str = "search option ") -> None:
    """Refuse the options of a search of ``root`` that give a ``filter`` (the call's, or a retriever's own
    ``filter`` option) while a retriever of ``root``'s tree that would run on it does not apply one
    (:attr:`Operator.applies_filter`): a :class:`ParamError` naming it and saying how to support it, before
    any work.  Nothing without a filter."""
    if options.get("filter"):
        for path, op in option_readers(root):
            if op.kind == "retriever" and not op.applies_filter:
                at = f" (the {op.name} at {path})" if path and path != op.name else ""
                raise ParamError(_unapplied_filter_message(op, f"{where}filter") + at, path="options.filter")
    for name, own in options.items():
        if isinstance(own, Mapping) and own.get("filter"):
            for path, op in option_readers(root):
                if op.name == name and op.kind == "retriever" and not op.applies_filter:
                    raise ParamError(_unapplied_filter_message(op, f"{where}{name}.filter"),
                                     path=f"options.{name}.filter")
