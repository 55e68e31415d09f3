"""A registry of custom encoder objects, resolved by name by :func:`~ragkit.encoders.get_encoder`.

Any object with the :class:`~ragkit.encoders.Encoder` interface (``encode(texts)``,
``encode_queries(texts)`` returning ``(n, dim)`` float32 unit vectors, a string ``key`` naming
the model and its settings, an int ``dim``) can be registered under a name; every
operator that resolves its ``model`` parameter through ``get_encoder`` (``Dense(model=...)``
and the operators built on it) then uses it:

>>> from ragkit.encoders import register_encoder
>>> register_encoder("my-embedder", my_encoder)          # doctest: +SKIP
>>> Dense(model="my-embedder").fit(corpus)               # doctest: +SKIP

A registered name takes precedence over sentence-transformers model names; the encoding
settings ``get_encoder`` receives (``batch_size``, ...) are ignored for it.  The registry
is per process: a pipeline saved with a custom model name needs the same
``register_encoder`` call before it is loaded elsewhere.
"""

from __future__ import annotations

import threading
from typing import Any

from ragkit.errors import ParamError

__all__ = ["register_encoder", "unregister_encoder", "registered_encoder", "registered_encoders"]

_LOCK = threading.Lock()
_CUSTOM: dict[str, Any] = {}
_REQUIRED = ("encode", "encode_queries", "key", "dim")


def register_encoder(name: str, encoder: Any, *, replace: bool = False) -> Any:
    """Register ``encoder`` under ``name`` so that ``get_encoder(name)`` returns it.

    Parameters
    ----------
    name : str
        The model name operators will use (``Dense(model=name)``).
    encoder : object
        Has ``encode``, ``encode_queries``, ``key`` and ``dim`` like :class:`~ragkit.encoders.Encoder`.
    replace : bool
        Allow replacing an encoder already registered under ``name``.

    Returns
    -------
    The encoder, for chaining.
    """
    if not isinstance(name, str) or not name.strip():
        raise ParamError(f"register_encoder: name must be a non-empty string, got {name!r}")
    missing = [a for a in _REQUIRED if not hasattr(type(encoder), a) and not hasattr(encoder, a)]
    if missing:
        raise ParamError(
            f"register_encoder({name!r}): {type(encoder).__name__} lacks {missing}; an encoder needs "
            f"encode(texts), encode_queries(texts), key and dim (see ragkit.encoders.Encoder)"
        )
    with _LOCK:
        if name in _CUSTOM and _CUSTOM[name] is not encoder and not replace:
            raise ParamError(f"register_encoder: {name!r} is already registered to {_CUSTOM[name]!r}; "
                             f"pass replace=True to replace it")
        _CUSTOM[name] = encoder
    return encoder


def unregister_encoder(name: str) -> None:
    """Remove ``name`` from the registry (no error when it is absent)."""
    with _LOCK:
        _CUSTOM.pop(name, None)


def registered_encoder(name: str) -> Any | None:
    """The encoder registered under ``name``, or ``None``."""
    return _CUSTOM.get(name)


def registered_encoders() -> dict[str, Any]:
    """A copy of the registry, ``{name: encoder}``."""
    with _LOCK:
        return dict(_CUSTOM)
