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

__all__ = ["register", "get", "names", "load_all", "structural_keys", "FAMILIES"]

_REGISTRY: dict[str, type["Operator"]] = {}
T = TypeVar("T", bound=type)

#: Packages whose import registers operators.
FAMILIES = ("ragkit.retrievers", "ragkit.filters", "ragkit.pipelines", "ragkit.generators")
_loaded = False
#: Top-level modules of ragkit's extras (``pyproject.toml``): a family may be missing only for these.
OPTIONAL = frozenset({"transformers", "gguf", "accelerate", "ray", "matplotlib", "datasets", "langchain_core"})


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
        except ModuleNotFoundError as e:  # an optional family whose extra is missing
            if (e.name or "").split(".")[0] not in OPTIONAL:
                raise  # a real bug (a bad import inside a family) must not hide its operators
    _loaded = True


def names() -> list[str]:
    """Sorted registry names of all operators."""
    load_all()
    return sorted(_REGISTRY)


def structural_keys() -> list[str]:
    """The structural keys of pipeline YAML (``parallel``, ``route``, ``loop``): written where an
    operator name goes, but not operators (see :mod:`ragkit.pipelines.yaml`)."""
    from ragkit.pipelines.yaml import STRUCTURAL

    return sorted(STRUCTURAL)


def get(name: str, path: str = "", *, structural: bool = False) -> type["Operator"]:
    """The operator class registered as ``name``; an unknown name lists the closest ones.

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
        close = difflib.get_close_matches(str(name).lower(), [*_REGISTRY, *keys], n=3, cutoff=0.5)
        hint = "; did you mean " + ", ".join(f"{c!r} (structural key)" if c in keys else repr(c) for c in close)
        where = f"{path}: " if path else ""
        listed = f"; structural keys: {', '.join(keys)}" if keys else ""
        raise ParamError(
            f"{where}unknown operator {name!r}{hint + '?' if close else '.'} Registered operators: "
            f"{', '.join(sorted(_REGISTRY))}{listed}",
            path=path,
        ) from None
