"""Importing the modules that register operators: ``ragkit --import MODULE`` (and ``$RAGKIT_IMPORT``) by name or
from a ``.py`` file, and on Ray workers the modules of the driver's own operators.  Core code: neither typer nor
the command line is imported here (a Ray worker imports this module)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from typing import Iterable, Sequence

from ragkit.errors import ParamError, RagkitError
from ragkit.registry import _builtin

#: How to make an operator known to Ray workers, for the errors that say one is not.
_PLUGIN_HOW = ("put the class in a module file and import it (ragkit --import ./myops.py, RAGKIT_IMPORT, or import "
               "myops in Python), install it as a package, or register it with a 'ragkit.operators' entry point")


def _import_module(spec: str, label: str, *, replace: bool = False) -> None:
    """Import ``spec`` (a module name, ``my_package.operators``, or the path of a ``.py`` file) so the operators
    it registers are known; an error starts with ``label`` (``--import mymodule``) and says what went wrong
    (inside the module: where).

    A file is imported under its stem, so one named as a module of the standard library (``operator.py``,
    ``code.py``), as a module this process imported from another file (``numpy.py``) or as one installed and not
    imported yet (``pytrec_eval.py``, which ``import pytrec_eval`` finds elsewhere) would replace that module
    for the rest of the process (``import torch`` then fails far away): refused, asking to rename the file, unless
    ``replace`` (a Ray worker importing the driver's file, which the driver imported under that name)."""
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
            if not replace:
                _refuse_shadowing(name, path, loaded, label)
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


def _refuse_shadowing(name: str, path: Path, loaded: object, label: str) -> None:
    """A :class:`RagkitError` where importing the file ``path`` as the module ``name`` would replace another module
    of that name: ``loaded`` (``sys.modules[name]``, from another file), a module of the standard library, or one
    not imported yet that ``import name`` finds in another file (an installed package's: ``pytrec_eval``,
    ``torch``), which every later ``import name`` (the standard library's own, PyTorch's, ragkit's evaluation)
    would then get instead."""
    if loaded is not None:
        where = getattr(loaded, "__file__", None) or "no file (a built-in module)"
        what = f"a module named {name!r} is imported already, from {where}"
    elif name in getattr(sys, "stdlib_module_names", ()) or name in sys.builtin_module_names:
        what = f"{name!r} is a module of Python's standard library"
    else:  # not imported yet: one installed under that name (pytrec_eval, torch) would be replaced all the same
        try:
            found = importlib.util.find_spec(name)  # (a top-level name: finds its file, imports nothing)
        except (ImportError, ValueError):
            found = None
        origin = getattr(found, "origin", None) if found is not None and found.has_location else None
        if not origin or Path(origin).resolve() == path.resolve():  # none, a folder of that name (a namespace
            return  # package: no module), or this very file, found on sys.path
        what = f"a module named {name!r} is installed, at {origin}"
    raise RagkitError(f"{label}: {path} would be imported as the module {name!r}, but {what}; importing it would "
                      f"replace that module for every later 'import {name}' in this process (the standard "
                      f"library's, other packages') and break them: rename the file (such as my_{name}.py)")


def _where(e: BaseException) -> str:
    """``file:line: `` of the innermost frame of ``e``'s traceback outside importlib (where a module's import broke)."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "importlib" not in f.filename
              and not f.filename.endswith(("ragkit/_plugins.py", "ragkit/registry.py"))]
    return f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""


def _plugin_modules(classes: Iterable[type], where: str) -> list[tuple[str, str | None]]:
    """``(module name, file path or None)`` of each operator class of ``classes`` that is not ragkit's own, for Ray
    workers to import before they rebuild operators by name (:func:`_import_plugins`): the registry is per process,
    and a worker knows only what its imports register.  A class no worker could import (defined in the script being
    run, ``__main__``, or inside a function; a module with neither a file nor an importable name) is refused
    (:class:`ParamError`, before Ray starts)."""
    found: dict[str, str | None] = {}
    for cls in classes:
        module = cls.__module__ or ""
        if _builtin(cls) or module in found:
            continue
        name = getattr(cls, "name", cls.__qualname__)
        what = f"{where}: operator {name!r} (class {cls.__qualname__} of {module or 'no module'})"
        if module == "__main__":
            raise ParamError(f"{what} is defined in the script being run; Ray workers are other processes that "
                             f"rebuild operators by name and cannot import a script: {_PLUGIN_HOW}", path=where)
        if "<locals>" in cls.__qualname__:
            raise ParamError(f"{what} is defined inside a function, so importing its module on a Ray worker does not "
                             f"register it: define it at the top level of a module; {_PLUGIN_HOW}", path=where)
        mod = sys.modules.get(module)
        file = getattr(mod, "__file__", None) if mod is not None else None
        if isinstance(file, str) and os.path.isfile(file):
            found[module] = os.path.abspath(file)
            continue
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise ParamError(f"{what}: its module has no file and cannot be imported by name, so Ray workers cannot "
                             f"import it: {_PLUGIN_HOW}", path=where)
        found[module] = None
    return list(found.items())


def _same_file(a: str | None, b: str) -> bool:
    """Whether the file ``a`` (a module's ``__file__``; None: none) is the file ``b``."""
    try:
        return a is not None and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _import_plugins(modules: Sequence[tuple[str, str | None]]) -> None:
    """On a Ray worker: import the modules that register the driver's own operators (:func:`_plugin_modules`), by
    name where the worker finds it, else from its file (a module file as ``ragkit --import ./myops.py`` imports it;
    a package's module with its package's folder on ``sys.path``).  A failure is a :class:`RagkitError`
    (not retried: it would fail alike) saying which module, from where, and why."""
    for module, file in modules:
        loaded = sys.modules.get(module)
        if loaded is not None and (file is None or _same_file(getattr(loaded, "__file__", None), file)):
            continue
        label = f"importing {module!r} (it registers operators of this pipeline) on a Ray worker"
        if file is not None and "." not in module and Path(file).name != "__init__.py" and Path(file).is_file():
            # (the driver's file, before a module of that name the worker finds: ./code.py is not the stdlib's code)
            _import_module(str(file), f"{label} from {file}", replace=True)
            continue
        try:
            importlib.import_module(module)
            continue
        except ModuleNotFoundError as e:
            missing = e.name or ""
            if file is None or not (module == missing or module.startswith(missing + ".")):
                raise RagkitError(f"{label} failed: {type(e).__name__}: {e}; {_PLUGIN_HOW}") from None
        except Exception as e:  # noqa: BLE001 - whatever the module raised on import
            raise RagkitError(f"{label} failed: {type(e).__name__}: {e}") from None
        path = Path(file)
        if not path.is_file():
            raise RagkitError(f"{label} failed: the worker neither finds it by name nor has its file {file} (a "
                              f"folder of the driver's machine: on a cluster, put it on storage every node reads, or "
                              f"install it on every node); {_PLUGIN_HOW}")
        root = path.parents[module.count(".") + (1 if path.name == "__init__.py" else 0)]
        if str(root) not in sys.path:
            sys.path.append(str(root))
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001
            raise RagkitError(f"{label} from {root} failed: {type(e).__name__}: {e}") from None
