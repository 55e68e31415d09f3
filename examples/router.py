"""A rule router: short keyword queries to BM25, the rest to hybrid; the same pipeline as ``router.yaml``.

    python examples/router.py [--data DIR] [--split S] [--limit N] [--json]

The first run of a dense example encodes the 5,183 SciFact documents with MiniLM (about 5 min on
2 cores; cached on disk after, as are the queries' vectors), later runs take seconds. Prints nDCG@10
and Recall@100: 0.7153 / 0.9517 on the full SciFact test split (about 8 s with warm caches), then
how many queries took each route (the run's ``values["route"]``): 3 keyword, 297 hybrid on it.
Only 3 SciFact test queries have at most 4 words, the first the 191st: ``--limit 191`` is the
shortest slice that takes both routes.
The ragkit calls themselves (``fit``, ``search``, ``evaluate``) are the README's "Using it"
snippet; ``_common.run`` makes them (its docstring shows them), ``--limit N`` runs a quick slice.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ragkit.filters import TopK  # noqa: E402
from ragkit.pipelines import RRF, Parallel, Pipeline, Route, RuleRouter  # noqa: E402
from ragkit.retrievers import BM25, Dense  # noqa: E402


def build() -> Pipeline:
    router = RuleRouter(rules=[{"label": "keyword", "max_words": 4}], default="hybrid")
    hybrid = Parallel([BM25(k=100), Dense(k=100)], fuse=RRF(k=60)) | TopK(k=100)
    return Pipeline([Route(router, {"keyword": [BM25(k=100)], "hybrid": hybrid})])


if __name__ == "__main__":
    from collections import Counter

    from _common import note, parse_args, run

    args = parse_args(__doc__)
    routes = Counter(run(build(), args, "router").result.values["route"])  # each query's route label
    note(args, "routes taken: " + ", ".join(f"{routes[label]} {label}" for label in ("keyword", "hybrid")))
