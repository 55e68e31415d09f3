"""ragkit: small retrieval operators that compose.

Dense retrieval over quantized usearch indexes, BM25, MUVERA multi-vector retrieval,
learned relevance filtering, hubness correction, multi-interest retrieval, chunk
KV-cache reuse for generation; linear, branching, conditional and looping pipelines in
Python or YAML; BEIR evaluation.
"""

__version__ = "0.1.0"

from ragkit.errors import ArtifactError, ConfigError, DataError, NotFittedError, ParamError, RagkitError
from ragkit.eval import beir_subsets, evaluate, load_beir
from ragkit.operator import Operator
from ragkit.params import Params
from ragkit.pipelines import Loop, Parallel, Pipeline, Route, Sequence
from ragkit.run import Run
from ragkit.types import Corpus, Qrels, Queries, Ranking, State, TrainSet

__all__ = [
    "__version__", "Operator", "Params", "Run", "Corpus", "Queries", "Qrels", "Ranking", "State", "TrainSet",
    "Pipeline", "Sequence", "Parallel", "Route", "Loop", "evaluate", "load_beir", "beir_subsets",
    "RagkitError", "ParamError", "ConfigError", "DataError", "NotFittedError", "ArtifactError",
]
