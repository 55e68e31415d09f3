"""A registry of custom encoder objects, resolved by name by :func:`~ragkit.encoders.get_encoder`.

Any object with the :class:`~ragkit.encoders.Encoder` interface (``encode(texts)``,
``encode_queries(texts)`` returning ``(n, dim)`` float32 unit vectors, a string ``key`` naming
the model and its settings, an int ``dim``) can be registered under a name; every
operator that resolves its ``model`` parameter through ``get_encoder`` (``Dense(model=...)``
and the operators built on it) then uses it:

>>> from ragkit.encoders import HashingEncoder, register_encoder
>>> from ragkit.retrievers import Dense
>>> from ragkit.types import Corpus
>>> _ = register_encoder("my-embedder", HashingEncoder(dim=64), replace=True)
>>> dense = Dense(model="my-embedder", k=1).fit(Corpus.from_texts(["red apples", "green pears"]))
>>> dense.search(["pears"]).doc_ids[0].tolist()
['1']

A registered name takes precedence over sentence-transformers model names; the encoding
settings ``get_encoder`` receives (``batch_size``, ...) are ignored for it.  The registry
is per process: a pipeline saved with a custom model name needs the same
``register_encoder`` call before it is loaded elsewhere.
"""

from __future__ import annotations

import re
import threading
import zlib
from typing import Any, Sequence

import numpy as np

from ragkit.errors import ParamError

__all__ = ["register_encoder", "unregister_encoder", "registered_encoder", "registered_encoders", "HashingEncoder"]

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
        Has ``encode``, ``encode_queries``, ``key`` (a non-empty str, else a :class:`ParamError`) and ``dim`` like
        :class:`~ragkit.encoders.Encoder`.
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
    from ragkit.encoders.sentence import Encoder

    if not isinstance(encoder, Encoder):  # (its key is a str, read lazily: a hub id is downloaded at first use)
        key = encoder.key
        if not isinstance(key, str) or not key.strip():
            raise ParamError(
                f"register_encoder({name!r}): {type(encoder).__name__}.key is {type(key).__name__} {key!r:.60}; "
                "expected a non-empty str naming the model and its settings (it names the query vectors operators "
                "share, the encoder's cache folder, and is saved with what is fitted with it)")
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


class HashingEncoder:
    """A bag of words hashed into ``dim`` buckets: an encoder that needs no model and no download, for
    examples, tests and offline smoke runs of the operators that take a ``model`` (not for retrieval quality).

    A text's vector counts its lower-cased words (runs of letters and digits) by bucket, ``crc32(word) %
    dim``, plus 0.1 in every bucket (a text without words still has a direction), scaled to unit length:
    ``(n, dim)`` float32.  Queries are encoded as documents.  Deterministic across processes and machines
    (CRC32, not Python's salted ``hash``); ``key`` names the scheme and ``dim``, so embedding caches and
    saved pipelines tell two settings apart.  Register it under a name to use it:

    >>> import numpy as np
    >>> enc = HashingEncoder(dim=16)
    >>> v = enc.encode(["red apples", "Red, apples!", ""])
    >>> v.shape, bool(np.allclose(v[0], v[1])), bool(np.allclose(np.linalg.norm(v, axis=1), 1))
    ((3, 16), True, True)
    """

    def __init__(self, dim: int = 256) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ParamError(f"HashingEncoder: dim must be a positive int, got {dim!r}", path="dim")
        self.dim = dim
        self.key = f"hashing-bow-v1-{dim}"

    def encode(self, texts: Sequence[str], **kw: Any) -> np.ndarray:
        """Unit vectors ``(len(texts), dim)`` float32 of ``texts`` (a list of strings, checked as the other encoders
        check theirs, :func:`~ragkit.encoders.sentence.as_texts`: one string, ``None`` or bytes among them is a
        :class:`~ragkit.errors.DataError`, not its characters or ``'None'`` hashed); encoding settings
        (``batch_size``...) ignored."""
        from ragkit.encoders.sentence import as_texts  # (sentence imports this module)

        texts = as_texts(texts, "HashingEncoder.encode")
        words = [re.findall(r"[^\W_]+", t.lower()) for t in texts]
        rows = np.repeat(np.arange(len(words)), [len(w) for w in words])
        cols = np.fromiter((zlib.crc32(w.encode()) % self.dim for ws in words for w in ws), np.int64, len(rows))
        v = np.full((len(words), self.dim), 0.1, np.float32)
        np.add.at(v, (rows, cols), 1.0)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    encode_queries = encode

    def __repr__(self) -> str:
        return f"HashingEncoder(dim={self.dim})"
