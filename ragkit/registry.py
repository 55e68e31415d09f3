"""Operator registry: registry name -> operator class, used by YAML and the CLI.

Operators register themselves with the :func:`register` class decorator when their
module is imported; :func:`load_all` imports every operator family so the registry is
complete.  Nothing here imports arbitrary dotted paths: a YAML file can only name
registered operators.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING, TypeVar

from ragkit.errors import ParamError

if TYPE_CHECKING:
    from ragkit.operator import Operator

__all__ = ["register", "get", "names", "load_all", "FAMILIES"]

_REGISTRY: dict[str, type["Operator"]] = {}
T = TypeVar("T", bound=type)

#: Packages whose import registers operators.
FAMILIES = ("ragkit.retrievers", "ragkit.filters", "ragkit.pipelines", "ragkit.generators")
_loaded = False


def register(cls: T) -> T:
    """Class decorator: add ``cls`` to the registry under ``cls.name``."""
    name = getattr(cls, "name", "")
    if not name or not name.replace("_", "").isalnum() or name != name.lower():
        raise ValueError(f"operator class {cls.__name__} needs a lowercase snake_case 'name', got {name!r}")
    other = _REGISTRY.get(name)
    if other is not None and (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"operator name {name!r} is taken by {other.__module__}.{other.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def load_all() -> None:
    """Import every operator family (idempotent)."""
    global _loaded
    if _loaded:
        return
    for mod in FAMILIES:
        try:
            importlib.import_module(mod)
        except ImportError as e:  # an optional family whose extra is missing
            if e.name and e.name.startswith("ragkit"):
                raise
    _loaded = True


def names() -> list[str]:
    """Sorted registry names of all operators."""
    load_all()
    return sorted(_REGISTRY)


def get(name: str, path: str = "") -> type["Operator"]:
    """The operator class registered as ``name``; an unknown name lists the closest ones."""
    load_all()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        where = f"{path}: " if path else ""
        raise ParamError(
            f"{where}unknown operator {name!r}{hint} Registered operators: {', '.join(sorted(_REGISTRY))}",
            path=path,
        ) from None
