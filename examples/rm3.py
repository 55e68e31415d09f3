"""BM25 + RM3 (one round of pseudo-relevance feedback, Anserini/Pyserini's BM25+RM3 baseline);
the same pipeline as ``rm3.yaml``.

    python examples/rm3.py [--data DIR] [--split S] [--limit N] [--json]

BM25 only (no model): the full SciFact test split takes a few seconds. Prints nDCG@10 and
Recall@100: 0.6479 / 0.9100 on it.
The ragkit calls themselves (``fit``, ``search``, ``evaluate``) are the README's "Using it"
snippet; ``_common.run`` makes them (its docstring shows them), ``--limit N`` runs a quick slice.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ragkit.pipelines import PRF, Pipeline  # noqa: E402
from ragkit.retrievers import BM25  # noqa: E402


def build() -> Pipeline:
    return BM25(k=100) | PRF(fb_docs=10, fb_terms=10, original_query_weight=0.5) | BM25(k=100)


if __name__ == "__main__":
    from _common import parse_args, run

    run(build(), parse_args(__doc__), "rm3")
