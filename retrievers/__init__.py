"""Retrievers: operators that add rankings to a batch of queries.

``ragkit.retrievers`` (installed from the top-level ``retrievers/`` folder).
"""

from ragkit.retrievers.bm25 import BM25
from ragkit.retrievers.dense import Dense
from ragkit.retrievers.knn_embed import KnnEmbed
from ragkit.retrievers.muvera import MaxSimExact, Muvera
from ragkit.scale import Sharded

__all__ = ["BM25", "Dense", "KnnEmbed", "Muvera", "MaxSimExact", "Sharded"]
