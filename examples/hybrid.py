"""Hybrid BM25 + dense retrieval fused with RRF; the same pipeline as ``hybrid.yaml``.

    python examples/hybrid.py [--data DIR] [--limit N]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ragkit.filters import TopK  # noqa: E402
from ragkit.pipelines import RRF, Parallel, Pipeline  # noqa: E402
from ragkit.retrievers import BM25, Dense  # noqa: E402


def build() -> Pipeline:
    return Parallel([BM25(k=100), Dense(k=100)], fuse=RRF(k=60)) | TopK(k=100)


if __name__ == "__main__":
    from _common import parse_args, run

    run(build(), parse_args(__doc__), "hybrid")
