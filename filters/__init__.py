"""Rerankers and filters that rewrite or shorten rankings.

``ragkit.filters`` (installed from the top-level ``filters/`` folder).
"""

from ragkit.filters.cutoffs import TopK

__all__ = ["TopK"]
