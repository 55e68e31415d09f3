"""RagkitRetriever.batch vs the ragkit pipeline called directly, on SciFact test queries.

Measures, in one run and interleaved (direct, wrapper, direct, wrapper, ...):

* ``direct``   — ``pipeline.search(queries, k=K)`` (returns a ragkit ``Run``);
* ``wrapper``  — ``RagkitRetriever(pipeline, k=K).batch(queries)`` (one pipeline call, then
  LangChain ``Document``s with metadata, and one callback run per query);
* ``lc-default`` (peer) — LangChain's stock ``Runnable.batch`` on the same retriever:
  one ``invoke`` per query on a thread pool, i.e. what a retriever gets without the
  batched override (fewer repeats: it is slow).

It checks that the wrapper's documents (ids and scores, in order) equal the direct run's,
and reports the wrapper's overhead two ways: end to end, the median over repeats of
``wrapper / direct - 1``, the two timed back to back in each repeat (still noisy on a shared machine,
where the pipeline's own run-to-run variance dwarfs the wrapper),
and exactly, as the time ``batch()`` spends outside its single ``pipeline.search`` call divided
by that call's time, in the same call (target < 5%).
Pipelines: ``hybrid`` (BM25 + MiniLM dense + RRF; the realistic case, dominated by query
encoding) and ``bm25`` (a pipeline so fast that the per-document conversion shows).
Document vectors come from ragkit's embedding cache; query vectors are computed in every run.

    python bench/langchain.py [--queries 300] [--k 10] [--repeats 5] [--pipelines hybrid,bm25] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import OUT, SCIFACT as DEFAULT_DATA, best_of, paired_ratio, print_machine, write_atomic  # noqa: E402


def build(name: str):
    from ragkit.pipelines import RRF, Parallel, Pipeline
    from ragkit.retrievers import BM25, Dense

    if name == "hybrid":
        return Pipeline([Parallel([BM25(k=100), Dense(k=100)], fuse=RRF(k=60))])
    if name == "bm25":
        return Pipeline([BM25(k=100)])
    raise SystemExit(f"--pipelines: unknown pipeline {name!r}; choose hybrid, bm25")


def same(run, docs) -> bool:
    """The wrapper's documents equal the direct run: same ids in order, same scores."""
    if len(run.doc_ids) != len(docs):
        return False
    for ids, scores, ds in zip(run.doc_ids, run.scores, docs):
        if [d.id for d in ds] != ids.tolist():
            return False
        if not np.array_equal(np.asarray([d.metadata["score"] for d in ds], np.float32), scores):
            return False
    return True


def bench_one(name: str, corpus, texts: list[str], k: int, repeats: int, peer_repeats: int) -> dict:
    from langchain_core.runnables import Runnable

    from ragkit.integrations.langchain import RagkitRetriever

    pipe = build(name)
    t_fit, _ = best_of(lambda: pipe.fit(corpus))
    retriever = RagkitRetriever(pipeline=pipe, k=k)
    real_search = pipe.search
    inner: list[float] = []

    def search_timed(*a, **kw):  # the pipeline call made inside retriever.batch, timed
        t, out = best_of(lambda: real_search(*a, **kw))
        inner.append(t)
        return out

    pipe.search = search_timed  # instance attribute: retriever.pipeline is this same object
    # warm-up (loads the model, touches every code path), and the equality check
    run = real_search(texts, k=k)
    docs = retriever.batch(texts)
    equal = same(run, docs)
    direct, wrapper, own, wrapper_next = [], [], [], []
    for r in range(repeats):  # interleaved, alternating which goes first, so load noise hits both
        order = [("d", lambda: real_search(texts, k=k)), ("w", lambda: retriever.batch(texts))]
        for tag, fn in (order if r % 2 == 0 else order[::-1]):
            n_inner = len(inner)
            dt, out = best_of(fn)
            if tag == "d":
                direct.append(dt)
            else:
                assert len(inner) == n_inner + 1, "retriever.batch must make exactly one pipeline.search call"
                wrapper.append(dt)
                own.append((dt - inner[-1], inner[-1]))  # (wrapper's own seconds, pipeline seconds) of this call
                equal = equal and same(run, out)
    peer = []
    if peer_repeats:
        equal_peer = same(run, Runnable.batch(retriever, texts))  # warm-up: the peer is timed warm too
    for _ in range(peer_repeats):  # each right after a wrapper call, so both see the same load
        dw, _ = best_of(lambda: retriever.batch(texts))
        wrapper_next.append(dw)
        dt, out = best_of(lambda: Runnable.batch(retriever, texts))
        peer.append(dt)
        equal_peer = equal_peer and same(run, out)
    pipe.search = real_search
    md, mw = statistics.median(direct), statistics.median(wrapper)
    own_pct = [100.0 * o / p for o, p in own]
    res = {
        "pipeline": name, "queries": len(texts), "k": k, "docs": len(corpus), "fit_s": round(t_fit, 3),
        "equal": bool(equal), "direct_s": direct, "wrapper_s": wrapper, "lc_default_s": peer,
        "wrapper_own_s": [o for o, _ in own], "wrapper_inner_pipeline_s": [p for _, p in own],
        "direct_median_s": md, "wrapper_median_s": mw,
        "end_to_end_overhead_pct": 100.0 * (paired_ratio(wrapper, direct) - 1.0),
        "wrapper_own_median_s": statistics.median(o for o, _ in own),
        "overhead_pct": statistics.median(own_pct),
    }
    if peer:
        res["lc_default_median_s"] = statistics.median(peer)
        res["lc_default_vs_wrapper"] = paired_ratio(peer, wrapper_next)
        res["lc_default_equal"] = bool(equal_peer)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR folder (default: SciFact).")
    ap.add_argument("--queries", type=int, default=None,
                    help="Test queries (default 300, SciFact's all; 30 with --quick).")
    ap.add_argument("--k", type=int, default=10, help="Documents per query.")
    ap.add_argument("--repeats", type=int, default=None,
                    help="Timed repeats of direct and wrapper each (default 5; 2 with --quick).")
    ap.add_argument("--peer-repeats", type=int, default=None,
                    help="Timed repeats of LangChain's default batch, each after a wrapper call (0: skip; default 3; "
                         "1 with --quick).")
    ap.add_argument("--pipelines", default=None,
                    help="Comma-separated: hybrid, bm25 (default both; bm25 with --quick).")
    ap.add_argument("--quick", action="store_true",
                    help="Smoke run: 1,000 docs, and unless given: 30 queries, 2 repeats, 1 peer repeat, bm25 only.")
    args = ap.parse_args()
    for flag, full, quick in (("queries", 300, 30), ("repeats", 5, 2), ("peer_repeats", 3, 1),
                              ("pipelines", "hybrid,bm25", "bm25")):
        if getattr(args, flag) is None:
            setattr(args, flag, quick if args.quick else full)
    if args.queries < 1 or args.repeats < 1 or args.peer_repeats < 0:
        ap.error(f"--queries and --repeats: at least 1, --peer-repeats at least 0; got {args.queries}, "
                 f"{args.repeats} and {args.peer_repeats}")
    names = args.pipelines.split(",")
    for n in names:
        if n not in ("hybrid", "bm25"):
            ap.error(f"--pipelines: unknown pipeline {n!r} in {args.pipelines!r}; choose from hybrid, bm25")
    machine = print_machine()

    from ragkit import load_beir

    ds = load_beir(args.data)
    corpus, queries = ds.corpus, ds.queries("test")
    if args.quick:
        corpus = corpus.subset(np.arange(min(1000, len(corpus))))
    texts = list(queries.texts[: args.queries])

    results = [bench_one(n, corpus, texts, args.k, args.repeats, args.peer_repeats) for n in names]

    print(f"\nRagkitRetriever.batch vs pipeline.search — {len(texts)} SciFact test queries, {len(corpus)} docs, "
          f"k={args.k}, {args.repeats} interleaved repeats (medians; end-to-end and lc-default/wrapper: median of "
          f"per-repeat ratios)")
    head = f"{'pipeline':<8} {'direct s':>9} {'wrapper s':>10} {'end-to-end':>11} {'own s':>7} {'overhead':>9} " \
           f"{'equal':>6} {'lc-default s':>13} {'lc-default/wrapper':>19}"
    print(head)
    print("-" * len(head))
    for r in results:
        peer = f"{r['lc_default_median_s']:>13.3f} {r['lc_default_vs_wrapper']:>18.2f}x" if "lc_default_median_s" in r \
            else f"{'-':>13} {'-':>19}"
        print(f"{r['pipeline']:<8} {r['direct_median_s']:>9.3f} {r['wrapper_median_s']:>10.3f} "
              f"{r['end_to_end_overhead_pct']:>10.1f}% {r['wrapper_own_median_s']:>7.3f} {r['overhead_pct']:>8.1f}% "
              f"{str(r['equal']):>6} {peer}")
    print("end-to-end: median over repeats of wrapper/direct - 1 (noisy on a shared machine); own s: time inside "
          "batch() outside its one pipeline.search call;\noverhead: own / that call's pipeline time (median "
          "over repeats) -- the wrapper's cost, independent of run-to-run noise.")
    path = write_atomic(OUT / ("langchain_quick.json" if args.quick else "langchain.json"), json.dumps({
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine,
        "cpus": os.cpu_count(), "results": results,
    }, indent=2))
    print(f"wrote {path}")
    if not all(r["equal"] for r in results):
        raise SystemExit("wrapper results differ from the pipeline's")


if __name__ == "__main__":
    main()
