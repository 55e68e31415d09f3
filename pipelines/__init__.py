"""Pipelines: linear, branching, conditional and looping compositions, in Python and YAML.

``ragkit.pipelines`` (installed from the top-level ``pipelines/`` folder).
"""

from ragkit.pipelines._compose import Loop, Parallel, Pipeline, Route
from ragkit.pipelines.fusion import RRF, WeightedFusion
from ragkit.pipelines.judges import MaxOnly, ScoreReached, TopKStable
from ragkit.pipelines.prf import PRF
from ragkit.pipelines.routers import RuleRouter, ScoreRouter
from ragkit.pipelines.yaml import dump_yaml, load_yaml, validate_file

#: ``Pipeline`` by the name the Modular RAG taxonomy gives linear composition: importable by name, but not in
#: ``__all__`` (nor in ragkit's): ``from ragkit.pipelines import *`` would shadow ``typing.Sequence`` /
#: ``collections.abc.Sequence`` in the importing module
Sequence = Pipeline

__all__ = [
    "Pipeline", "Parallel", "Route", "Loop", "RRF", "WeightedFusion", "RuleRouter", "ScoreRouter",
    "TopKStable", "ScoreReached", "MaxOnly", "PRF", "load_yaml", "dump_yaml", "validate_file",
]
