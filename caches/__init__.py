"""Key/value caches for generation: Cache-Craft chunk caches and exact prefix caches.

Installed as ``ragkit.caches``; import it as such.  See :mod:`ragkit.caches.chunk_kv`
(Cache-Craft, arXiv 2502.15734) and :mod:`ragkit.caches.prefix` (the prefix-caching baseline).
"""

from .chunk_kv import (
    CacheModelMismatchError,
    CacheStats,
    ChunkKVCache,
    ChunkVariant,
    cache_fix_overhead,
    chunk_key,
    compute_cci,
    order_penalty,
    prefix_overlap,
)
from .prefix import PrefixCache

__all__ = [
    "CacheModelMismatchError", "CacheStats", "ChunkKVCache", "ChunkVariant", "PrefixCache",
    "cache_fix_overhead", "chunk_key", "compute_cci", "order_penalty", "prefix_overlap",
]
