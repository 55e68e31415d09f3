"""``ragkit --import MODULE`` (and ``$RAGKIT_IMPORT``): importing a module by name or from a ``.py`` file so
the operators it registers are known, with an error that says what went wrong."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ragkit.errors import RagkitError


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
              and not f.filename.endswith(("ragkit/cli/_imports.py", "ragkit/registry.py"))]
    return f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""
