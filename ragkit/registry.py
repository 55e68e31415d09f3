"""Operator registry: registry name -> operator class, used by YAML and the CLI.

Operators register themselves with the :func:`register` class decorator when their
module is imported; :func:`load_all` imports every operator family so the registry is
complete, then the modules that installed packages name under the ``ragkit.operators``
entry-point group (third-party operators).  Nothing here imports arbitrary dotted paths:
a YAML file can only name registered operators.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
import warnings
from typing import TYPE_CHECKING, Literal, TypeVar, get_args

from ragkit.errors import InputTypeError, ParamError

if TYPE_CHECKING:
    from ragkit.operator import Operator
    from ragkit.params import Params

__all__ = ["register", "get", "names", "load_all", "structural_keys", "FAMILIES", "KINDS", "Kind", "ENTRY_POINT_GROUP",
           "UnknownOperatorError"]

_REGISTRY: dict[str, type["Operator"]] = {}
T = TypeVar("T", bound="type[Operator]")

#: Packages whose import registers operators.
FAMILIES = ("ragkit.retrievers", "ragkit.filters", "ragkit.pipelines", "ragkit.generators")
_loaded = False
_plugins_loaded = False
#: Top-level modules of ragkit's extras (``pyproject.toml``): a family may be missing only for these.
OPTIONAL = frozenset({"transformers", "gguf", "accelerate", "ray", "matplotlib", "datasets", "langchain_core"})
#: The type of :data:`KINDS`' values: :attr:`Operator.kind <ragkit.operator.Operator.kind>` is declared with it, so
#: that a type checker refuses ``kind = "rerank"`` in an operator class (:func:`register` refuses it at run time).
Kind = Literal["retriever", "reranker", "filter", "fuser", "router", "judge", "rewriter", "generator"]
#: The ``kind`` a registered operator class may declare (what the pipeline checks and the CLI read it by).
#: ``"composite"`` is not one: it is the kind of the structural operators (``Pipeline``, ``Parallel``, ``Route``,
#: ``Loop``), which are not registered (YAML spells them with its structural keys) and run their children
#: themselves; a registered operator declaring it would be taken for one by the pipeline's checks.
KINDS: tuple[Kind, ...] = get_args(Kind)
#: The entry-point group whose entries :func:`load_all` imports: ``[project.entry-points."ragkit.operators"]``
#: ``tfidf = "my_package.operators"`` in a package's ``pyproject.toml`` makes its operators known wherever it is
#: installed (YAML, the command line, saved folders), without importing it first.
ENTRY_POINT_GROUP = "ragkit.operators"
#: How a third-party operator becomes known, for the error of an unknown name.
PLUGIN_HINT = ("An operator of your own is known once its module, where its class is decorated with "
               "@ragkit.registry.register, is imported: on the command line `ragkit --import mymodule ...` (or "
               "--import ./myops.py) or RAGKIT_IMPORT=mymodule; anywhere, a 'ragkit.operators' entry point of an "
               "installed package")



class UnknownOperatorError(ParamError):
    """No operator is registered under :attr:`name` (:func:`get`): a misspelt name, or the operator of a plugin
    whose module was not imported.  A :class:`~ragkit.errors.ParamError`; a load of a saved folder, whose names a
    save wrote, tells it from a refused parameter by it (:func:`saved_unknown`: import the plugin, no renaming).

    Attributes
    ----------
    name : object
        The name asked for (a string, or whatever a YAML key held).
    """

    def __init__(self, message: str, path: str = "", *, name: object = None) -> None:
        super().__init__(message, path=path)
        self.name = name


def saved_unknown(name: object, where: str, saved_by: object = None, saved_class: object = None,
                  registered: object = None) -> str:
    """The error text for the operator ``name`` that a saved folder names (at ``where``: ``sharded.retriever``, a
    step's path, or ``""``: the folder's own operator) and that is not registered in this process (no "did you
    mean": a save wrote the name its class had, and another name would load another operator).  What to do is
    read from the class the folder's ``params.json`` records (``saved_class``, ``module:qualname``, and
    ``registered``, whether it was the registered one; a pipeline's step: the step's ``params.json``): a registered
    class's module to import (``ragkit --import pkg.ops``), or, for a class saved unregistered, its own ``load``
    (``Foo.load(folder)``).  Without that record (a nested operator's name, an older save), the plugin that
    registers it is to be imported, or, for the folder's own operator, a class saved unregistered loads with its own
    ``load``.  When the folder was saved by another ragkit version (``saved_by``, its ``ragkit_version``), that one
    may have it built in: said only where the recorded class is ragkit's own (``ragkit.*``) or none is recorded.
    The advice of :data:`PLUGIN_HINT` and the registered names come last (one line of several keeps them only
    on the last: :func:`ragkit.pipelines.yaml._combined`)."""
    from ragkit._saves import saved_by_other_ragkit

    load_all()
    record = saved_class if isinstance(saved_class, str) and ":" in saved_class and isinstance(registered, bool) \
        else None
    module = record.partition(":")[0] if record is not None else None
    other = saved_by_other_ragkit({"ragkit_version": saved_by}, "operators", "may include it built in",
                                  "may have included it") \
        if isinstance(saved_by, str) and (module is None or module == "ragkit" or module.startswith("ragkit.")) \
        else ""
    if record is None:
        advice = "import the plugin that registers it before loading"
    elif registered and (module == "__main__" or "<locals>" in record):  # (no import registers it: as _plugins
        # refuses such a class for Ray workers)
        advice = (f"saved by {shown_class_path(record)}, defined in "
                  f"{'the script that saved it' if module == '__main__' else 'a function'}: no import registers it; "
                  "define it at the top level of a module and import that module before loading")
    elif registered:
        advice = f"saved by {shown_class_path(record)}: import {module} (ragkit --import {module}) before loading"
    else:
        advice = f"saved by {shown_class_path(record)}, not registered: {class_name(record)}.load(folder)"
    loads = ("; a class saved unregistered under a name of its own loads with that class: MyOp.load(folder)"
             if not where and record is None else "")
    return (f"{where + ': ' if where else ''}unknown operator {name!r}: the folder names an operator {name!r}, and "
            f"none is registered so in this process: {advice}{f' ({other})' if other else ''}{loads}. "
            f"{PLUGIN_HINT}. Registered operators: {', '.join(sorted(_REGISTRY))}")


#: The kinds whose :attr:`~ragkit.operator.Operator.reads_rankings` :func:`register` sets where the class leaves it
#: unset: they work on the rankings of the steps before them (one placed first is refused when its pipeline is built).
_READS_RANKINGS = frozenset({"reranker", "filter", "generator"})


def _builtin(cls: type) -> bool:
    return cls.__module__ == "ragkit" or cls.__module__.startswith("ragkit.")


def _source_file(cls: type) -> str | None:
    """The resolved path of the file that defines ``cls`` (its module's ``__file__``), or None (a class made in a
    session or by ``type()`` in a module without a file)."""
    file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    return os.path.realpath(file) if isinstance(file, str) else None


def same_class(a: type, b: type) -> bool:
    """Whether ``a`` and ``b`` are one operator class: the same object, the same module and qualified name (a
    class defined again: a notebook cell run twice), or the same qualified name in the same source file imported
    under two module names (``ragkit --import path/to/pkg/operators.py`` of an installed plugin, whose entry point
    imports it as ``pkg.operators``)."""
    if a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__):
        return True
    if a.__qualname__ != b.__qualname__:
        return False
    file = _source_file(a)
    return file is not None and file == _source_file(b)


#: What an operator's name is (:func:`register`): lowercase snake_case, ASCII, starting with a letter.
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def register(cls: T) -> T:
    """Class decorator: add ``cls`` to the registry under ``cls.name``.

    Refused (:class:`~ragkit.errors.ParamError`, a ``ValueError``; :class:`~ragkit.errors.InputTypeError`, a
    ``TypeError``, for a class that is no :class:`~ragkit.operator.Operator`):
    a ``name`` that is missing, not lowercase snake_case (ASCII letters, digits and ``_``, starting with a letter:
    ``tfidf``, ``my_bm25``; not ``_a``, ``1st``, ``café``), taken by another class (a built-in
    operator's included, whether or not its family was imported yet), or one of the pipeline YAML's
    structural keys (:func:`structural_keys`: ``parallel``, ``route``, ``loop``), a keyword of ``search()`` itself
    (:func:`call_keywords`: ``k``, ``filter``, ``trace``, ``qrels``, ...), or a name pipeline YAML
    reads as no string (``on``, ``null``, ``1e3``: read by the pipeline's own loader, so ``010`` is a name);
    a ``kind`` not in :data:`KINDS`;
    no ``Params`` of the class's own (a subclass of :class:`ragkit.Params`; an empty one for an operator
    without parameters).

    A reranker, filter or generator whose class (and its bases below :class:`~ragkit.operator.Operator`) leaves
    ``reads_rankings`` unset gets ``reads_rankings = True``; an explicit setting is kept.
    """
    from ragkit.operator import Operator
    from ragkit.params import Params, document_params

    if not (isinstance(cls, type) and issubclass(cls, Operator)):
        raise InputTypeError(f"register: {getattr(cls, '__qualname__', cls)!r} is not a subclass of ragkit.Operator")
    label = f"operator class {cls.__module__}.{cls.__qualname__}"
    name = cls.name
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ParamError(f"{label} needs a lowercase snake_case 'name' (its YAML key, e.g. name = \"tfidf\": ASCII "
                         f"letters, digits and _, starting with a letter), got {name!r}")
    if not _builtin(cls):
        _load_families()  # a built-in name is taken even before its family is imported
        if name in structural_keys():  # (read once the families, ragkit.pipelines.yaml among them, are imported)
            raise ParamError(f"{label} cannot be named {name!r}: pipeline YAML reads {name!r} as its "
                             f"structural key (a {name}: node), not as an operator, so a YAML or saved pipeline "
                             f"holding it would not load; the names {', '.join(structural_keys())} are reserved: "
                             f"give it another name (name = \"my_{name}\")")
        taken = call_keywords()
        if name in taken:  # search(q, filter={"min_score": 2}) is the call's filter, not this operator's options
            raise ParamError(f"{label} cannot be named {name!r}: {name!r} is a keyword of search() itself "
                             f"(search(queries, {name}=...)), so search(queries, {name}={{option: value}}) could never "
                             f"reach this operator's run-time options; the names {', '.join(taken)} are reserved: give "
                             f"it another name (name = \"my_{name}\")")
        import yaml

        from ragkit.pipelines.yaml import _UniqueKeyLoader  # (here: that module imports this one)

        # read as a pipeline YAML reads its keys (YAML 1.2 numbers: 1e3 is a float, 010 the text '010')
        try:
            read = yaml.load(name, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
            as_what = f"{type(read).__name__} {read!r}"
        except yaml.YAMLError as e:  # (a name its loader refuses: 0x_, an integer int() does not read, before _NAME)
            read, as_what = None, f"no value at all ({getattr(e, 'problem', None) or e})"
        if read != name:  # a hand-written "- on: {}" is read as True, "- null: {}" as None: no operator's name
            raise ParamError(f"{label} cannot be named {name!r}: YAML reads {name} as {as_what}, "
                             f"not as the string {name!r}, so a pipeline YAML naming it unquoted (- {name}: {{}}) "
                             f"would not load: give it another name (name = \"my_{name}\")")
    other = _REGISTRY.get(name)
    if other is not None and not same_class(other, cls):
        builtin = " (a built-in operator)" if _builtin(other) else ""
        raise ParamError(f"operator name {name!r} is taken by {other.__module__}.{other.__qualname__}{builtin}; "
                         f"give {label} another name")
    kind = cls.kind
    if kind == "composite":
        raise ParamError(f"{label} ({name!r}) has kind 'composite', the kind of ragkit's structural operators "
                         f"(Pipeline, Parallel, Route, Loop), which are not registered; a registered operator is one "
                         f"step: give it one of {', '.join(KINDS)} (a step that runs other operators builds them "
                         f"into a Pipeline / Parallel / Route / Loop instead)")
    if kind not in KINDS:
        unset = kind == Operator.kind
        close = [] if unset else difflib.get_close_matches(str(kind).lower(), KINDS, n=1, cutoff=0.6)
        got = "sets no 'kind'" if unset else f"has kind {kind!r}"
        raise ParamError(f"{label} ({name!r}) {got}; expected one of {', '.join(KINDS)}"
                         + (f"; did you mean {close[0]!r}?" if close else ""))
    if kind in _READS_RANKINGS and not any("reads_rankings" in vars(k) for k in cls.__mro__ if k is not Operator):
        cls.reads_rankings = True  # (unset: a reranker, filter or generator works on the rankings before it)
    if kind == "retriever" and cls.stateless:
        raise ParamError(f"{label} ({name!r}) is a retriever with stateless = True: a retriever searches the documents "
                         f"its fit was given, which a stateless operator does not keep (it is never fitted), so "
                         f"{cls.__name__}().fit(corpus).search(...) would have no documents to search: leave "
                         f"stateless False (the default); a step that only reorders or cuts the rankings before it is "
                         f"a reranker or filter")
    model = cls.Params
    if model is Params or not (isinstance(model, type) and issubclass(model, Params)):
        got = "sets no 'Params'" if model is Params else f"has Params = {model!r}, not a subclass of ragkit.Params"
        raise ParamError(f"{label} ({name!r}) {got}: set Params to its parameter model, a subclass of "
                         f"ragkit.Params (an empty one, 'class {cls.__name__}Params(Params): pass', when it "
                         f"has no parameters)")
    _check_options_and_defaults(cls, model, label, name)
    document_params(cls, model, name)
    if other is not None and other is not cls and other.__module__ != cls.__module__:
        # one source file imported under a second module name (``import filters.dbnorm`` from a checkout beside
        # the installed ``ragkit.filters.dbnorm``; ``--import path`` of an installed plugin): the first class stays
        # the registered one, so operators loaded from YAML or saved folders keep the class (and the Params model)
        # that code imported first; instances of the second still pass :func:`check_registered`
        return cls
    _REGISTRY[name] = cls  # (a class defined again in the same module, a notebook cell run twice, replaces it)
    return cls


def _check_options_and_defaults(cls: type["Operator"], model: type["Params"], label: str, name: str) -> None:
    """Refuse (:class:`ParamError`) a run-time option ``cls`` checks as a parameter
    (:data:`~ragkit.options.PARAM`) that its ``model`` has no field of, which every search giving it would refuse
    (``unknown parameter``, blaming the caller), and a model whose defaults fail its own checks (``k: int =
    Field(default=0, ge=1)``), which every construction without that parameter would refuse.  A model-level check
    that asks for a value (``threshold is required unless learn=true``) is not a default's failure."""
    from pydantic import ValidationError

    from ragkit.options import PARAM

    fields = model.model_fields
    for option, how in cls.declared_options().items():
        if how == PARAM and option not in fields:
            raise ParamError(f"{label} ({name!r}) declares the run-time option {option!r} as PARAM (checked as its "
                             f"parameter of that name), but {model.__qualname__} has no field {option!r} (fields: "
                             f"{', '.join(fields) or 'none'}): add the field, or give run_options[{option!r}] a "
                             f"function (operator, value, corpus) -> value that checks it")
    if any(f.is_required() for f in fields.values()):
        return
    try:
        model()
    except ValidationError as e:
        bad = [err for err in e.errors() if err["loc"] and err["loc"][0] in fields]
        if bad:
            shown = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']} (default {err.get('input')!r})"
                              for err in bad)
            raise ParamError(f"{label} ({name!r}): the defaults of {model.__qualname__} fail its own checks "
                             f"({shown}), so {cls.__name__}() would be refused: give the field a default that "
                             f"passes them (or none, making it required)") from None


def _load_families() -> None:
    """Import every built-in operator family (idempotent)."""
    global _loaded
    if _loaded:
        return
    for mod in FAMILIES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # an optional family whose extra is missing
            if (e.name or "").split(".")[0] not in OPTIONAL:
                raise  # a real bug (a bad import inside a family) must not hide its operators
    _loaded = True


def _load_plugins() -> None:
    """Import the modules of the ``ragkit.operators`` entry points (idempotent); one that fails to import is
    skipped with a warning naming it (the other operators stay usable)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib import metadata

    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:  # (a broken plugin must not break every YAML load)
            dist = getattr(getattr(ep, "dist", None), "name", None)
            warnings.warn(f"ragkit: the {ENTRY_POINT_GROUP!r} entry point {ep.name} = {ep.value!r}"
                          f"{f' (of {dist})' if dist else ''} failed to import, its operators are not "
                          f"registered: {type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)


def load_all() -> None:
    """Import every operator family, then the ``ragkit.operators`` entry points' modules (idempotent)."""
    _load_families()
    _load_plugins()


def check_registered(op: "Operator", where: str) -> None:
    """A :class:`ParamError` where ``op``'s class is not the one registered under its ``name``: YAML and saved
    folders name operators by it, so the folder would not load (an unknown operator) or would load another
    class (a subclass that kept its parent's name loaded as the parent)."""
    load_all()
    cls, known = type(op), _REGISTRY.get(op.name)
    if known is cls or (known is not None and same_class(known, cls)):  # (one file imported under two names)
        return
    what = (f"the name {op.name!r} is {known.__module__}.{known.__qualname__}'s" if known is not None else
            f"no operator is registered as {op.name!r}")
    raise ParamError(f"{where}: {cls.__module__}.{cls.__qualname__} is not a registered operator ({what}), so a saved "
                     f"folder or YAML pipeline could not name it: decorate the class with @ragkit.registry.register"
                     f"{' and give it a name of its own (name = ...)' if known is not None else ''}")


def is_registered(op: "Operator") -> bool:
    """Whether ``op``'s class is the one registered under its ``name`` (:func:`check_registered` without the
    error; the registry as it is: a class is registered when its module is imported, so nothing is loaded)."""
    known = _REGISTRY.get(op.name) if isinstance(op.name, str) else None
    return known is not None and (known is type(op) or same_class(known, type(op)))


def class_path(cls: type) -> str:
    """``module:qualname`` of ``cls``, as a saved folder records the class that saved it."""
    return f"{cls.__module__}:{cls.__qualname__}"


def is_class_path(cls: type, recorded: object) -> bool:
    """Whether ``recorded`` (:func:`class_path` as a saved folder holds it) names ``cls``: the same module and
    qualified name, or the same qualified name in a module imported here from the same source file (one file
    imported under two module names, as :func:`same_class` tells)."""
    if not isinstance(recorded, str):
        return False
    module, _, qualname = recorded.partition(":")
    if (module, qualname) == (cls.__module__, cls.__qualname__):
        return True
    file = getattr(sys.modules.get(module), "__file__", None)
    return qualname == cls.__qualname__ and isinstance(file, str) and os.path.realpath(file) == _source_file(cls)


def shown_class_path(recorded: str) -> str:
    """A recorded :func:`class_path` as Python spells the class (``mymodule.Fast``)."""
    return recorded.replace(":", ".", 1)


def class_name(recorded: str) -> str:
    """The class as code that holds it spells it, from a recorded :func:`class_path`: its qualified name after the
    last ``<locals>.`` (``Fast`` of ``tests.x:test_y.<locals>.Fast``; ``Outer.Inner`` of ``pkg.ops:Outer.Inner``,
    a nested class, whose own name alone names no class of its module)."""
    return recorded.rsplit(":", 1)[-1].rsplit("<locals>.", 1)[-1]


def names() -> list[str]:
    """Sorted registry names of all operators."""
    load_all()
    return sorted(_REGISTRY)


def call_keywords() -> list[str]:
    """The keywords of :meth:`Pipeline.search <ragkit.pipelines.Pipeline.search>` itself (``k``, ``trace``,
    ``qrels``, ...) and the call's options (:data:`~ragkit.options.CALL_OPTIONS`: ``filter``): where an operator's
    name goes, ``search(queries, name={option: value})``, they are read as the call's, so no operator may be named
    so (:func:`register`)."""
    import inspect

    from ragkit.options import CALL_OPTIONS
    from ragkit.pipelines import Pipeline

    skip = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    own = [p.name for p in inspect.signature(Pipeline.search).parameters.values() if p.kind not in skip]
    return sorted({*CALL_OPTIONS, *own} - {"self"})


def structural_keys() -> list[str]:
    """The structural keys of pipeline YAML (``parallel``, ``route``, ``loop``): written where an
    operator name goes, but not operators (see :mod:`ragkit.pipelines.yaml`)."""
    from ragkit.pipelines.yaml import STRUCTURAL

    return sorted(STRUCTURAL)


def get(name: str, path: str = "", *, structural: bool = False) -> type["Operator"]:
    """The operator class registered as ``name``; an unknown name (:class:`UnknownOperatorError`, a
    :class:`~ragkit.errors.ParamError`) lists the closest ones.

    Suggestions are matched case-insensitively.  With ``structural`` (a node key read from
    pipeline YAML), the YAML format's structural keys are suggested and listed too, so
    ``paralel:`` or ``Parallel:`` gets "did you mean 'parallel'"; elsewhere (``--pipeline NAME``,
    ``sharded.retriever``, a saved folder) only an operator can stand, so they are not.
    """
    load_all()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        keys = structural_keys() if structural else []
        close = difflib.get_close_matches(str(name).lower(), [*_REGISTRY, *keys], n=3, cutoff=0.6)
        hint = "; did you mean " + ", ".join(f"{c!r} (structural key)" if c in keys else repr(c) for c in close)
        where = f"{path}: " if path else ""
        listed = f"; structural keys: {', '.join(keys)}" if keys else ""
        raise UnknownOperatorError(
            f"{where}unknown operator {name!r}{hint + '?' if close else '.'} {PLUGIN_HINT}. Registered operators: "
            f"{', '.join(sorted(_REGISTRY))}{listed}",
            path=path, name=name,
        ) from None
