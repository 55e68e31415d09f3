"""An RM3 pseudo-relevance-feedback loop until the top 10 is stable; the same pipeline as ``prf_loop.yaml``.

    python examples/prf_loop.py [--data DIR] [--limit N]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ragkit.pipelines import PRF, Loop, Pipeline, TopKStable  # noqa: E402
from ragkit.retrievers import BM25  # noqa: E402


def build() -> Pipeline:
    body = [PRF(fb_docs=10, fb_terms=10, original_query_weight=0.5), BM25(k=100)]
    return Pipeline([Loop(body, until=TopKStable(k=10), max_iters=3)])


if __name__ == "__main__":
    from _common import parse_args, run

    run(build(), parse_args(__doc__), "prf_loop")
