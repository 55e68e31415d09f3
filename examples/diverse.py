"""Diverse top 10 with kNN-Embed: the setting ``bench/diversity.py`` chose on SciFact train; the same
pipeline as ``diverse.yaml``.

    python examples/diverse.py [--data DIR] [--split S] [--limit N] [--json]

A query becomes a mixture over 26 corpus clusters; three of the ten slots stay with plain dense
results, the other seven go one each to the seven heaviest clusters of the mixture: with
weight_floor 0 and max_components 10 a query keeps up to ten components, more than the seven slots,
so the mixture weights choose the clusters but set no quota (kNN-Embed logs this once at INFO
level; slots in proportion to the weights need fewer components than slots). The same fitted
pipeline is asked for 10 results (nDCG@10, intra-list diversity) and for 100 (Recall@100), beside
plain dense retrieval.

The first run of a dense example encodes the 5,183 SciFact documents with MiniLM (about 5 min on
2 cores; cached on disk after, as are the queries' vectors), later runs take seconds. Prints, on the
full SciFact test split: nDCG@10 0.6371 (dense 0.6451), intra-list diversity ILD@10 1.17x dense's,
Recall@100 +0.0033 over dense, then kNN-Embed's fit and search times. The two searches are two
calls on the fitted pipeline, ``pipe.search(queries)`` and ``pipe.search(queries, k=100)``;
fit/search/evaluate as in the README's "Using it" snippet.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ragkit.pipelines import Pipeline  # noqa: E402
from ragkit.retrievers import KnnEmbed  # noqa: E402


def build() -> Pipeline:
    return Pipeline([KnnEmbed(k=10, n_clusters=26, anchor_share=0.3, weight_floor=0.0, max_components=10)])


if __name__ == "__main__":
    import numpy as np

    from ragkit import evaluate
    from ragkit.encoders import caching_queries
    from ragkit.eval.diversity import intra_list_diversity
    from ragkit.retrievers import Dense

    from _common import clear_errors, counts, emit, load, parse_args

    args = parse_args(__doc__)
    data = load(args)
    corpus, queries, qrels = data.corpus, data.queries, data.qrels
    pipe = build()
    with clear_errors(), caching_queries():  # (query vectors cached on disk, as `ragkit eval` caches them)
        t0 = time.perf_counter()
        pipe.fit(corpus)
        t_fit = time.perf_counter() - t0
        dense = Pipeline([Dense(k=10)]).fit(corpus)
        knn = pipe.steps[0]
        assert isinstance(knn, KnnEmbed)
        vectors = knn.vectors_  # the unit document vectors it clustered, for intra-list diversity
        out = {**counts("diverse", data), "fit_s": round(t_fit, 3)}
        for name, p in (("", pipe), ("dense_", dense)):
            top10, top100 = p.search(queries), p.search(queries, k=100)
            if not name:  # kNN-Embed's search of 10, timed as the other examples time theirs
                out["search_s"] = round(top10.seconds or 0.0, 3)
            out[f"{name}ndcg@10"] = evaluate(top10, qrels, ["ndcg@10"]).scores["ndcg@10"]
            out[f"{name}recall@100"] = evaluate(top100, qrels, ["recall@100"]).scores["recall@100"]
            out[f"{name}ild@10"] = float(np.nanmean(intra_list_diversity(top10, vectors, 10)))
    out["ild_ratio"] = out["ild@10"] / out["dense_ild@10"] if out["dense_ild@10"] else float("nan")
    emit(out, args, f"ILD@10 {out['ild@10']:.3f}, {out['ild_ratio']:.2f}x dense's (dense {out['dense_ild@10']:.3f}, "
                    f"nDCG@10 {out['dense_ndcg@10']:.4f}); "
                    f"Recall@100 {out['recall@100']:.4f} (dense {out['dense_recall@100']:.4f})  "
                    f"(fit {out['fit_s']:.1f} s, search {out['search_s']:.2f} s)")
