"""Rerankers and filters that rewrite or shorten rankings.

``ragkit.filters`` (installed from the top-level ``filters/`` folder).
"""

from ragkit.filters.cutoffs import TopK

__all__ = ["TopK"]
from ragkit.filters.maxsim import MaxSim  # noqa: E402
from ragkit.filters.thresholds import RelativeThreshold, ScoreThreshold  # noqa: E402
from ragkit.filters.cosine_adapter import CosineAdapter  # noqa: E402
from ragkit.filters.dbnorm import DBNorm  # noqa: E402

__all__ += ["ScoreThreshold", "RelativeThreshold", "CosineAdapter", "DBNorm"]
from ragkit.filters.mmr import MMR  # noqa: E402
