"""Encoders both ways between LangChain and ragkit: any LangChain ``Embeddings`` as a ragkit encoder
(:class:`LangChainEmbeddingsEncoder`), ragkit's encoder as a LangChain ``Embeddings`` (:class:`RagkitEmbeddings`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from langchain_core.embeddings import Embeddings

from ragkit.encoders.sentence import as_texts, check_encoder_settings, encoder_vectors, unit_rows
from ragkit.errors import DataError, ParamError

if TYPE_CHECKING:
    from pathlib import Path

    from ragkit.encoders.cache import EmbeddingCache


def _unit(x: Any, n_texts: int, dim: int | None, who: str) -> np.ndarray:
    """What an ``Embeddings`` returned for ``n_texts`` texts, checked as ragkit checks every encoder's output
    (:func:`~ragkit.encoders.sentence.encoder_vectors`: one vector each, a :class:`DataError` naming ``who``
    otherwise), all of ``dim`` numbers when known, and L2-normalised (:func:`~ragkit.encoders.unit_rows`: a zero
    vector stays zero), ``(n_texts, dim)`` float32."""
    v = unit_rows(encoder_vectors(x, n_texts, who))
    if dim is not None and v.shape[1] != dim:
        raise DataError(f"{who}: expected vectors of {dim} numbers (the encoder's dim), got {v.shape[1]}")
    return v


class LangChainEmbeddingsEncoder:
    """Any LangChain ``Embeddings`` with the interface of :class:`ragkit.encoders.Encoder`.

    ``encode(texts)`` calls ``embed_documents`` and ``encode_queries(texts)`` calls
    ``embed_query`` once per distinct text, both returning ``(n, dim)`` float32 L2-normalised vectors
    (ragkit's dense operators score by inner product = cosine).  With ``cache=True``, query vectors are
    kept on disk as :meth:`ragkit.encoders.Encoder.encode_queries` keeps them: when asked
    (``encode_queries(..., cache=True)``, or inside :func:`~ragkit.encoders.caching_queries` /
    ``RAGKIT_CACHE_QUERIES=1``: ``ragkit eval`` and ``train``), apart from the documents' (key ``<key>|query``:
    ``embed_query`` may differ from ``embed_documents``).

    Parameters
    ----------
    embeddings : langchain_core.embeddings.Embeddings
    key : str, optional
        Identity of the model and its settings: names the query vectors shared between
        operators and the on-disk cache folder.  Default: ``langchain:<Class>:<hash of its
        settings>`` (pydantic models), ``langchain:RagkitEmbeddings:<its encoder's key>``, or
        ``langchain:<Class>:<object id>``, which names no model (an id is reused by another object
        once this one is gone, in this process or the next): a pipeline saved with it loads only
        where the encoder is registered with that ``key``, and ``cache=True`` is refused with it
        (pass a key naming the model).
    dim : int, optional
        Vector dimension; when not given, the width of the first vectors embedded (asked before any: for an empty
        batch, by embedding one probe query).
    cache : bool
        Keep document vectors in ragkit's on-disk cache under ``key`` (default off: pass a
        ``key`` that truly names the model and settings before turning it on).
    batch_size : int
        Texts per ``embed_documents`` call.

    Examples
    --------
    >>> from langchain_core.embeddings import DeterministicFakeEmbedding          # doctest: +SKIP
    >>> enc = LangChainEmbeddingsEncoder(DeterministicFakeEmbedding(size=64)).register("fake")  # doctest: +SKIP
    >>> Dense(model="fake").fit(corpus)                                              # doctest: +SKIP
    """

    def __init__(self, embeddings: Embeddings, *, key: str | None = None, dim: int | None = None,
                 cache: bool = False, batch_size: int = 256) -> None:
        if not isinstance(embeddings, Embeddings):
            raise ParamError("LangChainEmbeddingsEncoder: expected a LangChain Embeddings, "
                             f"got {type(embeddings).__name__}")
        check_encoder_settings("LangChainEmbeddingsEncoder", batch_size=batch_size, cache=cache)
        if key is not None and (not isinstance(key, str) or not key.strip()):
            raise ParamError(f"LangChainEmbeddingsEncoder: key is {type(key).__name__} {key!r:.60}; expected None (a "
                             "key made from the embeddings' settings) or a non-blank str naming the model and its "
                             "settings", path="key")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ParamError(f"LangChainEmbeddingsEncoder: dim is {type(dim).__name__} {dim!r:.60}; expected None "
                             "(the width of the first vectors embedded) or an int >= 1 (numbers per vector)",
                             path="dim")
        self.embeddings = embeddings
        self.batch_size = batch_size
        self.cache_enabled = cache
        self.key = key or self._default_key(embeddings)
        #: the key is the object's id (no key given, no settings to hash): it names no model, so no cache
        self._key_is_id = not key and self.key == self._id_key(embeddings)
        if self.cache_enabled:
            self._check_cacheable()
        self._dim = dim
        self._cache: EmbeddingCache | None = None
        self._cache_root: Path | None = None  # the cache folder ``_cache`` was made for (None: set by hand)
        self._query_cache: EmbeddingCache | None = None
        self._query_cache_root: Path | None = None
        #: documents embedded (not read from the cache) since creation
        self.n_encoded = 0
        #: distinct queries embedded (``embed_query`` calls; not read from the cache) since creation
        self.n_queries_encoded = 0

    @staticmethod
    def _default_key(emb: Embeddings) -> str:
        name = type(emb).__name__
        if isinstance(emb, RagkitEmbeddings):  # its encoder's key names the model and settings, in every process
            return f"langchain:{name}:{emb.encoder.key}"
        dump = getattr(emb, "model_dump_json", None)
        if dump is not None:
            try:
                return f"langchain:{name}:{hashlib.sha1(dump().encode()).hexdigest()[:16]}"
            except Exception:  # noqa: BLE001 - settings not serialisable: fall back to identity
                pass
        return LangChainEmbeddingsEncoder._id_key(emb)

    @staticmethod
    def _id_key(emb: Embeddings) -> str:
        return f"langchain:{type(emb).__name__}:{id(emb):x}"

    def _check_cacheable(self) -> None:
        """Refuse the on-disk cache under a key that is only the object's id: CPython gives a freed object's
        id to the next, and the cache outlives the process, so another model would be served these vectors."""
        if self._key_is_id:
            name = type(self.embeddings).__name__
            raise ParamError(f"LangChainEmbeddingsEncoder: cache=True needs a key naming the model and its settings; "
                             f"no key was given and {name} has no settings ragkit can hash (not a pydantic model, "
                             f"or its settings are not JSON), so the key would be its object id {self.key!r}, which "
                             f"another model reuses once this one is gone (and would be served its cached vectors): "
                             f"pass key=... naming the model, e.g. "
                             f"LangChainEmbeddingsEncoder(embeddings, key='{name}-<model name>', cache=True)",
                             path="key")

    def __repr__(self) -> str:
        return f"LangChainEmbeddingsEncoder({type(self.embeddings).__name__}, key={self.key!r})"

    @property
    def dim(self) -> int:
        """Width of the vectors (an int): ``dim`` as given, else that of the first vectors embedded, else (asked
        before any, e.g. for an empty batch) the length of the LangChain model's embedding of a probe query."""
        if self._dim is None:
            self._dim = int(len(self.embeddings.embed_query("dimension probe")))
        return self._dim

    @property
    def store(self) -> EmbeddingCache:
        """The on-disk cache of document vectors (float32 ``(dim,)`` rows keyed by text), in a folder named
        after :attr:`key` (its hash, so that two keys never share one) under ragkit's cache directory
        (``embeddings/``): one reader per folder and key in a process, shared with every encoder of that key
        (each sees what the others wrote), under the cache folder in force now (``$RAGKIT_CACHE`` is read at
        each use), as :attr:`ragkit.encoders.Encoder.store` does."""
        from ragkit.encoders.sentence import held_reader, shared_store

        self._check_cacheable()
        return held_reader(self, "_cache", self.key, shared_store)

    @property
    def query_store(self) -> EmbeddingCache:
        """The on-disk cache of query vectors (``embed_query``'s, which may differ from ``embed_documents``'s):
        :attr:`store`'s, under the key ``<key>|query``."""
        from ragkit.encoders.sentence import query_reader, shared_store

        self._check_cacheable()
        return query_reader(self, shared_store)

    def _forward_queries(self, texts: list[str]) -> np.ndarray:
        """``embed_query`` of each of ``texts`` (distinct), checked and L2-normalised ``(n, dim)`` float32."""
        who = f"{type(self.embeddings).__name__}.embed_query"
        rows = [self.embeddings.embed_query(t) for t in texts]
        for i, row in enumerate(rows):  # (the list of rows would read as a 1-D object array: name the query)
            if row is None:
                raise DataError(f"{who} returned None for query {texts[i]!r:.60}; expected its vector, a list of "
                                "numbers")
        out = _unit(rows, len(texts), self._dim, who)
        if self._dim is None:
            self._dim = int(out.shape[1])
        self.n_queries_encoded += len(texts)
        return out

    def _forward(self, texts: list[str]) -> np.ndarray:
        parts = []
        for i in range(0, len(texts), self.batch_size):
            batch = texts[i:i + self.batch_size]
            parts.append(_unit(self.embeddings.embed_documents(batch), len(batch), self._dim,
                               f"{type(self.embeddings).__name__}.embed_documents (texts {i}..{i + len(batch) - 1})"))
            if self._dim is None:
                self._dim = int(parts[-1].shape[1])
        out = np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
        self.n_encoded += len(texts)
        return out

    def encode(self, texts: Sequence[str], *, cache: bool | None = None, progress: bool | None = None) -> np.ndarray:
        """Document vectors, ``(n, dim)`` float32, unit length (cached on disk when enabled)."""
        texts = as_texts(texts, "LangChainEmbeddingsEncoder.encode")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if not (self.cache_enabled if cache is None else cache):
            return self._forward(texts)
        return self.store.fetch_or_compute(texts, self._forward)[0]

    def encode_queries(self, texts: Sequence[str], *, cache: bool | None = None) -> np.ndarray:
        """Query vectors (``embed_query`` once per distinct text), ``(n, dim)`` float32, unit length.  Kept in the
        on-disk cache (:attr:`query_store`) where the encoder caches (``cache=True`` when made) and queries are
        to be: ``cache=True`` here, or ``None`` inside :func:`~ragkit.encoders.caching_queries` or with
        ``RAGKIT_CACHE_QUERIES=1``, as :meth:`ragkit.encoders.Encoder.encode_queries`."""
        from ragkit.encoders.sentence import queries_cached

        texts = as_texts(texts, "LangChainEmbeddingsEncoder.encode_queries")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self.cache_enabled and (queries_cached() if cache is None else cache):
            return self.query_store.fetch_or_compute(texts, self._forward_queries)[0]
        uniq = list(dict.fromkeys(texts))
        vecs = self._forward_queries(uniq)
        if len(uniq) == len(texts):
            return vecs
        at = {t: i for i, t in enumerate(uniq)}
        return vecs[[at[t] for t in texts]]

    def register(self, name: str, *, replace: bool = False) -> "LangChainEmbeddingsEncoder":
        """Register under ``name`` so that ``Dense(model=name)`` (via ``get_encoder``) uses it."""
        from ragkit.encoders.custom import register_encoder

        return register_encoder(name, self, replace=replace)


class RagkitEmbeddings(Embeddings):
    """ragkit's encoder as a LangChain ``Embeddings`` (document vectors use its on-disk cache).

    Parameters
    ----------
    model : str
        Sentence-transformers model name or folder, or a name registered with
        ``register_encoder`` (default all-MiniLM-L6-v2, offline).
    encoder : object, optional
        An encoder object to use instead of ``model``.
    **encoder_kwargs
        Settings for :func:`ragkit.encoders.get_encoder` (``batch_size``, ``max_seq_length``...).

    Examples
    --------
    >>> emb = RagkitEmbeddings()                          # doctest: +SKIP
    >>> len(emb.embed_query("scurvy"))                    # doctest: +SKIP
    384
    """

    def __init__(self, model: str | None = None, *, encoder: Any = None, **encoder_kwargs: Any) -> None:
        from ragkit.encoders import DEFAULT_MODEL, get_encoder

        if encoder is not None and (model is not None or encoder_kwargs):
            raise ParamError("RagkitEmbeddings: pass either encoder=... or model/settings, not both")
        # (None: the default model; "" is get_encoder's ParamError, not silently the default)
        self.encoder = encoder if encoder is not None else get_encoder(DEFAULT_MODEL if model is None else model,
                                                                       **encoder_kwargs)

    def __repr__(self) -> str:
        return f"RagkitEmbeddings({self.encoder!r})"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encoder.encode(list(texts)).astype(float).tolist() if texts else []

    def embed_query(self, text: str) -> list[float]:
        return self.encoder.encode_queries([text])[0].astype(float).tolist()
