"""Encoders: sentence-transformers wrappers (dense vectors, token vectors) with an on-disk cache."""

from ragkit.encoders.cache import EmbeddingCache, text_digests
from ragkit.encoders.custom import (  # noqa: F401
    HashingEncoder,
    register_encoder,
    registered_encoder,
    unregister_encoder,
)
from ragkit.encoders.sentence import (  # noqa: F401
    DEFAULT_MODEL,
    Encoder,
    as_texts,
    caching_queries,
    check_encoder_key,
    get_encoder,
    queries_cached,
    query_vectors,
    resolve_model,
    save_encoder_key,
    unit_rows,
)

__all__ = ["Encoder", "get_encoder", "query_vectors", "resolve_model", "DEFAULT_MODEL", "EmbeddingCache",
           "text_digests", "unit_rows", "as_texts", "caching_queries", "queries_cached", "HashingEncoder",
           "register_encoder", "unregister_encoder", "registered_encoder"]
