"""Rerankers and filters that rewrite or shorten rankings.

``ragkit.filters`` (installed from the top-level ``filters/`` folder).
"""

from ragkit.filters.cosine_adapter import CosineAdapter
from ragkit.filters.cutoffs import TopK
from ragkit.filters.dbnorm import DBNorm, DBNormDense
from ragkit.filters.maxsim import MaxSim
from ragkit.filters.mmr import MMR
from ragkit.filters.thresholds import RelativeThreshold, ScoreThreshold

__all__ = ["TopK", "ScoreThreshold", "RelativeThreshold", "CosineAdapter", "DBNorm", "DBNormDense", "MaxSim", "MMR"]
