"""ragkit's exceptions.  Each subclasses the builtin a caller would already catch."""

from __future__ import annotations

from typing import Hashable, Iterable, TypeVar

_H = TypeVar("_H", bound=Hashable)

__all__ = ["RagkitError", "ParamError", "DataError", "NotFittedError", "ConfigError", "ArtifactError",
           "ArtifactNotFoundError", "InputTypeError"]


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
    """Input data (a corpus, queries, qrels, a BEIR folder) is malformed or inconsistent."""


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
