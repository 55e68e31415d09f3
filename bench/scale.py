"""Scale-out benchmark: Ray encoding throughput and a sharded 1M-vector search.

Usage::

    python bench/scale.py                 # 600 docs encoded, 1M synthetic vectors in 8 shards
    python bench/scale.py --quick         # 200 docs, 50k vectors

Part 1 encodes SciFact documents (cache off) with the local encoder and with Ray Data's
actor pool (1 and 2 actors), printing documents/second and Ray's overhead.  The two are not timed alike: the
local encoder warm (its model loaded before the timing), each Ray figure one cold ``ray_encode`` call (actor
start-up and each actor's model load included), so its JSON keys end in ``_cold`` and the printout says so.
Part 2 builds ``--n`` synthetic 384-d vectors (SciFact vectors plus Gaussian noise, so the geometry
stays realistic) as one ragkit HNSW index (``VectorIndex``, usearch) and as ``--shards`` shard indexes, searches
the same queries on both, merges shard rankings with ``ragkit.scale.merge_rankings``, and
prints latency and recall@10 against exact search.  Every search timing is the best of at least
``--repeat`` interleaved rounds over all queries, and more until each search was timed ``--min-seconds`` in
all (0.5 s; 0.05 s with ``--quick``): the single index; the sharded path as one call (every shard's search,
its rankings and the merge); each shard alone, whose mean is the measured latency of one ``n / shards``
shard, what shards searched in parallel would take before the network and the merge.  Each round runs every
one of them once.  The merge alone (microseconds a query) is timed apart, in rounds of its own until it too
was timed ``--min-seconds`` in all, so it does not multiply the searches' rounds.
Writes ``bench/out/scale.json`` (``scale_quick.json`` with ``--quick``; in the folder ``RAGKIT_BENCH_OUT`` names,
when set).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from _common import (  # noqa: E402
    OUT,
    SCIFACT,
    add_timing_args,
    exact_topk,
    interleaved,
    print_machine,
    recall,
    timing_args,
    write_atomic,
)


def encode_part(n_docs: int) -> dict:
    from ragkit import load_beir
    from ragkit.encoders import get_encoder
    from ragkit.scale import ray_encode, ray_init

    ds = load_beir(SCIFACT)
    texts = ds.corpus.full_texts[:n_docs]
    enc = get_encoder()
    enc.encode(texts[:8], cache=False)  # load the model before timing
    t0 = time.perf_counter()
    local = enc.encode(texts, cache=False)
    t_local = time.perf_counter() - t0
    res = {"docs": n_docs, "local_docs_per_s_warm": n_docs / t_local}
    t0 = time.perf_counter()
    ray_init()
    res["ray_init_s"] = time.perf_counter() - t0
    for actors in (1, 2):  # one cold call's cost: actor start-up and each actor's model load included
        t0 = time.perf_counter()
        vecs = ray_encode("all-MiniLM-L6-v2", texts, num_actors=actors, cache=False)
        dt = time.perf_counter() - t0
        res[f"ray_{actors}_actors_docs_per_s_cold"] = n_docs / dt
        res[f"ray_{actors}_actors_max_abs_diff"] = float(np.abs(vecs - local).max())
    res["timing"] = ("local: warm (model loaded before the timing); ray: one cold ray_encode call each, actor "
                     "start-up and each actor's model load included")
    return res


def encode_line(enc: dict) -> str:
    """The printed line of :func:`encode_part`'s result: says which side was timed cold."""
    local = enc["local_docs_per_s_warm"]
    ray1, ray2 = enc["ray_1_actors_docs_per_s_cold"], enc["ray_2_actors_docs_per_s_cold"]
    return (f"encoding {enc['docs']} docs: local {local:.1f} docs/s (model loaded before); ray (one cold call: "
            f"actor start-up and model load included) 1 actor {ray1:.1f} docs/s ({ray1 / local:.2f}x), 2 actors "
            f"{ray2:.1f} docs/s ({ray2 / local:.2f}x); ray.init {enc['ray_init_s']:.1f} s; "
            f"max |ray - local| = {enc['ray_2_actors_max_abs_diff']:.2e}")


def shard_part(n: int, shards: int, n_queries: int, ef: int = 64, seed: int = 0, reorder: bool = True,
               repeat: int = 5, min_seconds: float = 0.0) -> dict:
    """Build one index of ``n`` vectors and ``shards`` indexes of ``n / shards``; search ``n_queries`` queries
    (k = 10) on both, every search timing the best of at least ``repeat`` interleaved rounds
    (:func:`_common.interleaved`), more until each search was timed ``min_seconds`` in all; the merge alone in
    rounds of its own, as many and as long.  Returns build seconds, ms/query and recall@10 against exact search
    (``per_shard_query_ms``: each shard searched alone), the ``rounds`` and ``merge_rounds`` run and
    ``min_seconds``."""
    from ragkit.encoders import get_encoder
    from ragkit.eval.beir import load_beir
    from ragkit.retrievers._index import VectorIndex
    from ragkit.scale import merge_rankings
    from ragkit.types import Ranking

    ds = load_beir(SCIFACT)
    base = get_encoder().encode(ds.corpus.full_texts)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), n)
    X = base[idx] + rng.normal(0, 0.05, (n, base.shape[1])).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Q = get_encoder().encode_queries(ds.queries("test").texts[:n_queries])
    gt = exact_topk(X, Q, 10)  # exact ground truth, in blocks

    def build(vectors):  # ragkit's own index (the operator's storage), HNSW over inner product
        return VectorIndex(dtype="f32", metric="ip", search="hnsw", connectivity=16, expansion_add=128,
                           expansion_search=ef, reorder=reorder).build(vectors)

    res = {"n": n, "shards": shards, "queries": len(Q), "expansion_search": ef, "reorder": reorder,
           "repeat": repeat, "min_seconds": min_seconds}
    t0 = time.perf_counter()
    one = build(X)
    res["single_build_s"] = time.perf_counter() - t0
    bounds = np.linspace(0, n, shards + 1).astype(int)
    t0 = time.perf_counter()
    parts = [build(X[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    res["sharded_build_s_sequential"] = time.perf_counter() - t0

    def ms(seconds: float) -> float:
        return seconds / len(Q) * 1e3

    def shard_rankings(a: int, ix) -> list:  # shard rows are local: offset them to global rows
        r, s = ix.search(Q, 10)
        return [Ranking(rr[np.isfinite(ss)] + a, ss[np.isfinite(ss)]) for rr, ss in zip(r, s)]

    def sharded():
        per_shard = [shard_rankings(a, ix) for a, ix in zip(bounds[:-1], parts)]
        return per_shard, merge_rankings(per_shard, 10)

    one.search(Q, 10)  # warm-up (untimed), as every shard's below
    per_shard = [shard_rankings(a, ix) for a, ix in zip(bounds[:-1], parts)]  # also the merge's input
    calls = {"single": lambda: one.search(Q, 10), "sharded": sharded,
             **{i: (lambda ix=ix: ix.search(Q, 10)) for i, ix in enumerate(parts)}}
    best, last, res["rounds"] = interleaved(calls, repeat, min_seconds)

    def merge():
        return merge_rankings(per_shard, 10)

    merge()  # warm-up (untimed)
    merge_best, _, res["merge_rounds"] = interleaved({"merge": merge}, repeat, min_seconds)
    res["single_query_ms"] = ms(best["single"])
    res["single_recall@10"] = recall(last["single"][0], gt)
    res["sharded_query_ms"] = ms(best["sharded"])
    res["sharded_recall@10"] = recall([r.rows for r in last["sharded"][1]], gt)
    res["per_shard_query_ms"] = [ms(best[i]) for i in range(len(parts))]
    res["merge_ms_per_query"] = ms(merge_best["merge"])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--ef", type=int, default=64, help="HNSW expansion_search of every index")
    add_timing_args(ap, "every search timing is the best of at least this many interleaved rounds (the merge's "
                        "of as many rounds of its own)", repeat=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-encode", action="store_true")
    ap.add_argument("--no-reorder", action="store_true",
                    help="Build graphs in the given order (VectorIndex(reorder=False)), as before 2026-12-02")
    args = ap.parse_args()
    timing_args(ap, args)
    if args.quick:
        args.docs, args.n, args.queries = 200, 50_000, 100
    results: dict = {"machine": print_machine()}
    if not args.skip_encode:
        enc = encode_part(args.docs)
        results["encode"] = enc
        print(encode_line(enc), flush=True)
    sh = shard_part(args.n, args.shards, args.queries, ef=args.ef, reorder=not args.no_reorder, repeat=args.repeat,
                    min_seconds=args.min_seconds)
    results["shards"] = sh
    print(f"{sh['n']:,} vectors: one HNSW index built in {sh['single_build_s']:.1f} s, {sh['shards']} shards in "
          f"{sh['sharded_build_s_sequential']:.1f} s (sequential here; parallel on a cluster)")
    per = np.array(sh["per_shard_query_ms"])
    print(f"  search timings: best of {sh['rounds']} interleaved rounds (each search timed >= {sh['min_seconds']:g} s "
          f"in all), {sh['queries']} queries a call; the merge: best of {sh['merge_rounds']} rounds of its own")
    print(f"  single index : {sh['single_query_ms']:.3f} ms/query, recall@10 {sh['single_recall@10']:.4f}")
    print(f"  {sh['shards']} shards merged: {sh['sharded_query_ms']:.3f} ms/query "
          f"({sh['sharded_query_ms'] / sh['single_query_ms']:.2f}x), recall@10 {sh['sharded_recall@10']:.4f}; "
          f"merge {sh['merge_ms_per_query'] * 1e3:.1f} us/query")
    print(f"  one shard of {sh['n'] // sh['shards']:,} searched alone: {per.mean():.3f} ms/query "
          f"(mean of {len(per)} shards, {per.min():.3f}-{per.max():.3f}; {per.mean() / sh['single_query_ms']:.2f}x "
          f"the single index); the {len(per)} shards' searches sum to {per.sum():.3f} ms/query")
    path = write_atomic(OUT / ("scale_quick.json" if args.quick else "scale.json"), json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
