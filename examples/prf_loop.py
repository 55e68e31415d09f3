"""An RM3 pseudo-relevance-feedback loop until the top 10 is stable; the same pipeline as ``prf_loop.yaml``.

    python examples/prf_loop.py [--data DIR] [--split S] [--limit N] [--json]

BM25 only (no model): the full SciFact test split takes a few seconds. Prints nDCG@10 and
Recall@100: 0.6127 / 0.9063 on it.
The ragkit calls themselves (``fit``, ``search``, ``evaluate``) are the README's "Using it"
snippet; ``_common.run`` makes them (its docstring shows them), ``--limit N`` runs a quick slice.
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
