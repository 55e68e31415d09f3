"""Scale-out on Ray: BM25 split over 2 document shards, fitted and searched as Ray tasks and
actors, rankings merged by score; the same pipeline as ``sharded.yaml``.

Each shard is an ordinary BM25 index over half of the corpus, fitted by a Ray task and served by
a Ray actor; the shards are given the whole corpus's idf and average document length (as
Elasticsearch's ``dfs_query_then_fetch`` does), so the merged top 100 is exactly one BM25
index's. Any retriever that does not fine-tune at fit can be sharded (``retriever: {dense:
{}}``); on a cluster, set ``RAGKIT_RAY_ADDRESS`` and a shared ``workdir``. The script checks
the merged ranking against one unsharded BM25 index.

    python examples/sharded.py [--data DIR] [--split S] [--limit N] [--json]

Needs Ray (``pip install 'ragkit[ray]'``) and SciFact. On 2 cores: about 20-40 s, with
``--limit 8`` or on the full SciFact, most of it starting Ray and its workers.
Prints nDCG@10 and Recall@100 (0.6766 / 0.9287 on the full SciFact test split), then whether
the merge equals one BM25 index's ranking (to standard error with ``--json``, whose line stays
the last of standard output); a merge that differs ends the script with exit status 1. Ray logs
one error-level line as the shard actors start ("Actor with class name: '_ShardActor' ... has
constructor arguments in the object store and max_restarts > 0"): expected (each shard's
documents stay in the object store so that a crashed actor can be restarted), not a failure.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ragkit.pipelines import Pipeline  # noqa: E402
from ragkit.retrievers import Sharded  # noqa: E402


def build() -> Pipeline:
    return Pipeline([Sharded(retriever={"bm25": {}}, n_shards=2, k=100, backend="ray")])


if __name__ == "__main__":
    import numpy as np

    from ragkit.retrievers import BM25

    from _common import note, parse_args, run

    args = parse_args(__doc__)
    ran = run(build(), args, "sharded")
    single = BM25(k=100).fit(ran.data.corpus).search(ran.data.queries)
    # the same queries in the same order (so as many: a Run holds one document list per query; zip alone stops at
    # the shorter, and a result missing or mislabelling queries read as equal), and each query's documents
    same = list(ran.result.query_ids) == list(single.query_ids) and all(
        np.array_equal(a, b) for a, b in zip(ran.result.doc_ids, single.doc_ids))
    note(args, f"merged ranking of the 2 shards {'equals' if same else 'DIFFERS from'} one BM25 index's")
    if not same:
        raise SystemExit(1)
