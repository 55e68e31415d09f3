"""Pipelines: linear, branching, conditional and looping compositions, in Python and YAML.

``ragkit.pipelines`` (installed from the top-level ``pipelines/`` folder).
"""

from ragkit.pipelines._compose import Loop, Parallel, Pipeline, Route
from ragkit.pipelines.fusion import RRF, WeightedFusion
from ragkit.pipelines.yaml import dump_yaml, load_yaml

Sequence = Pipeline

__all__ = ["Pipeline", "Sequence", "Parallel", "Route", "Loop", "RRF", "WeightedFusion", "load_yaml", "dump_yaml"]
