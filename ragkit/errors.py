"""ragkit's exceptions.  Each subclasses the builtin a caller would already catch."""

from __future__ import annotations

import sys
from typing import Callable, Hashable, Iterable, Sequence, TypeVar

_H = TypeVar("_H", bound=Hashable)

__all__ = ["RagkitError", "ParamError", "DataError", "NotFittedError", "ConfigError", "ArtifactError",
           "ArtifactNotFoundError", "InputTypeError", "MissingExtraError"]


class RagkitError(Exception):
    """Base class of every ragkit error."""


class ParamError(RagkitError, ValueError, TypeError):
    """An operator parameter is invalid.  The message names the operator, the field and the value.

    Attributes
    ----------
    path : str
        Where the value came from (``"bm25.k"`` or ``"pipeline[1].parallel.branches[0].dense.k"``).
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class ConfigError(ParamError):
    """A YAML pipeline file is malformed; the message starts with the path inside the file."""


class DataError(RagkitError, ValueError):
    """Input data (a corpus, queries, qrels, a BEIR folder) is malformed or inconsistent.

    Attributes
    ----------
    path : str
        Where the data was given, when that is a place in the options (``"options.bm25.filter"``, as a
        :class:`ParamError`'s path); ``""`` otherwise (a file or a row is named in the message).
    """

    def __init__(self, message: str = "", path: str = "") -> None:
        super().__init__(message)
        self.path = path


class NotFittedError(RagkitError, RuntimeError):
    """An operator was used before ``fit(corpus)``."""


class ArtifactError(RagkitError, OSError):
    """A saved artifact (index file, manifest, array) is missing, truncated or corrupt."""


class ArtifactNotFoundError(ArtifactError, FileNotFoundError):
    """A file or folder ragkit needs is not there (a model file, a fit's working folder): an
    :class:`ArtifactError` that ``except FileNotFoundError`` catches too."""


class InputTypeError(RagkitError, TypeError):
    """An argument of a public function or method is of the wrong type (``bm25.add(a_list)``,
    ``op(["a query"])``, ``load_beir(123)``); the message names it, the type given and the one expected."""


class MissingExtraError(RagkitError, ImportError):
    """A package that an optional feature needs is not installed (Ray for ``backend: ray``, ``gguf`` and
    ``accelerate`` for the default local LLM, ``datasets`` for ``adapt``); the message names the step, the
    missing packages and the install command (``pip install 'ragkit[ray]'``).  A :class:`RagkitError` that
    ``except ImportError`` catches too.

    Attributes
    ----------
    extra : str or None
        The ragkit extra that installs them (``"ray"``, ``"llm"``, ``"train"``), or None when none does.
    packages : tuple of str
        The import names of the missing packages.
    """

    def __init__(self, message: str, extra: str | None = None, packages: Sequence[str] = ()) -> None:
        super().__init__(message, name=packages[0] if packages else None)
        self.extra = extra
        self.packages = tuple(packages)

    def __str__(self) -> str:
        """The message, from ``args`` as for the other errors (ImportError's own reads ``msg``, set once: a
        message placed at a pipeline step's path afterwards, ``pipeline[1].sharded.backend: ...``, changes ``args``)."""
        return str(self.args[0]) if len(self.args) == 1 else str(self.args) if self.args else ""

    def __reduce__(self) -> tuple[type, tuple[str, str | None, tuple[str, ...]]]:
        """Pickled with its extra and packages (a Ray worker's error reaches the caller whole)."""
        return type(self), (str(self.args[0]) if self.args else "", self.extra, self.packages)


def missing_modules(names: Iterable[str]) -> list[str]:
    """Those of the top-level module ``names`` that cannot be imported here, found without importing any
    (``importlib.util.find_spec``: a module set to ``None`` in ``sys.modules`` counts as missing)."""
    import importlib.util

    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # (a module in sys.modules without a __spec__)
            found = name in sys.modules and sys.modules[name] is not None
        if not found:
            missing.append(name)
    return missing


def missing_extra(packages: Iterable[str], *, extra: str | None, what: str | Callable[[str], str],
                  install: str | None = None) -> MissingExtraError | None:
    """The :class:`MissingExtraError` for those of the top-level modules ``packages`` that are not installed
    (:func:`missing_modules`, asked once), else None.  Its message is ``what`` (or ``what`` of the missing ones
    said: ``the package gguf``, ``the packages gguf and accelerate``), then ``: `` and ``install``
    (by default ``pip install 'ragkit[<extra>]'``): ``generate: ... is read with the package gguf, not installed:
    pip install 'ragkit[llm]'``.  ``extra``: the ragkit extra that installs them, or None when none does (then
    ``install`` is needed)."""
    missing = missing_modules(packages)
    if not missing:
        return None
    if install is None:
        if extra is None:
            raise TypeError("missing_extra: give install= where no ragkit extra installs the packages (extra=None)")
        install = f"pip install 'ragkit[{extra}]'"
    named = packages_named(missing)
    return MissingExtraError(f"{what(named) if callable(what) else what}: {install}", extra=extra, packages=missing)


def packages_named(packages: Sequence[str]) -> str:
    """``packages`` as an error message names them: ``the package gguf``, ``the packages gguf and accelerate``."""
    return f"the package{'s' if len(packages) > 1 else ''} {' and '.join(packages)}"


def require(packages: Iterable[str], *, extra: str | None, what: str | Callable[[str], str],
            install: str | None = None) -> None:
    """Raise :func:`missing_extra`'s :class:`MissingExtraError` where one of ``packages`` is not installed (from
    None: raised while an ``ImportError`` of one is handled, that one is not shown with it)."""
    refusal = missing_extra(packages, extra=extra, what=what, install=install)
    if refusal is not None:
        raise refusal from None


def repeated(values: Iterable[_H], n: int = 1) -> list[_H]:
    """The first ``n`` values of ``values`` seen for a second time, in order (for an error message)."""
    seen: set[_H] = set()
    out: list[_H] = []
    for v in values:
        if v in seen and len(out) < n:
            out.append(v)
        seen.add(v)
    return out


def some_ids(ids: object, n: int = 3) -> str:
    """The first ``n`` of ``ids`` for an error message: ``'q1', 'q2', 'q3', ...``."""
    listed = list(ids)  # type: ignore[call-overload]
    return ", ".join(repr(q) for q in listed[:n]) + (", ..." if len(listed) > n else "")
