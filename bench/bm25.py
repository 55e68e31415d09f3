"""BM25 benchmark: ragkit vs rank-bm25 vs bm25s (numpy and numba backends) on SciFact, in one run.

Usage::

    python bench/bm25.py                # full SciFact corpus, the 300 test queries
    python bench/bm25.py --quick        # 800 docs + the 40 queries' relevant ones, 40 queries (a smoke run)
    python bench/bm25.py --scaling      # plus ragkit q/s for n_jobs = 1, 2, 4, ... cores

For each library it measures

* index time, from raw texts (each library's own tokenisation included);
* queries/second for the test queries, from raw query text to top-``k`` (tokenisation
  included), on one thread and on all cores, the same number of threads for every library:
  "all cores" is the CPUs this process may use (``ragkit._cpus.usable_cpus``: its affinity mask, so a
  ``taskset`` or a container's CPU set counts, not the machine's ``os.cpu_count()``), given to each
  library as an explicit count N: ragkit ``n_jobs=1`` / ``n_jobs=N``; bm25s ``n_threads=0`` /
  ``n_threads=N`` (a ``ThreadPoolExecutor`` on the numpy backend, numba's ``prange`` after
  ``set_num_threads`` on the numba one, whose ``n_threads=0`` runs its serial kernel; bm25s's own -1
  would be ``os.cpu_count()``); rank-bm25 has no parallel scoring, so a ``multiprocessing`` pool of N
  processes over queries;
* bm25s twice: its default ``backend="numpy"`` and ``backend="numba"``, the fast path bm25s
  documents (needs ``numba``, in the ``bench`` extra; without it the row says skipped and why).
  numba compiles on a first call: the first index and the first search on each thread count
  are timed apart, reported, and kept out of the q/s columns;
* whether the top-10 lists agree when every library gets the *same tokens* (ragkit's
  tokenizer: lowercase, split on non-alphanumerics, Lucene stopwords, Porter):
  ragkit ``okapi`` against rank-bm25 ``BM25Okapi`` (and the maximum score difference),
  ragkit ``lucene`` against bm25s ``method="lucene"`` (both backends);
* nDCG@10 of each on the test qrels (same tokens, k1 = 0.9, b = 0.4).

Index times are the best of ``--repeat`` runs (rank-bm25: one run; it is slow).  rank-bm25's
searches (one process and the pool) get an untimed warm-up call on a few queries, then the best of
``--rb-repeat`` (3) calls over all the queries, fewer when they pass ``--rb-max-seconds`` (60) in all:
not interleaved with the others (it is slow).  Searches (ragkit and bm25s) run in interleaved rounds,
every library once per round, so that others'
load on a shared machine falls on all alike; the best round of each is reported, and there
are enough rounds that each search is timed for ``--min-seconds`` (0.5; 0.05 with ``--quick``) in all.  Read the
ratios, which are measured in the same run.  Writes ``bench/out/bm25.json``
(``bm25_quick.json`` with ``--quick``; the folder ``RAGKIT_BENCH_OUT`` names instead, when set).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from multiprocessing import get_context

import numpy as np

from ragkit._cpus import usable_cpus

from _common import (  # noqa: E402
    OUT,
    SCIFACT,
    add_timing_args,
    best_of,
    interleaved_best,
    machine,
    machine_line,
    print_machine,
    timing_args,
    write_atomic,
)

K1, B = 0.9, 0.4


# rank-bm25 in a process pool: the index is inherited by fork, queries are split in chunks
_RB = None


def _rb_chunk(qtoks: list[list[str]]) -> np.ndarray:
    return (np.stack([np.argsort(-_RB.get_scores(q), kind="stable")[:10] for q in qtoks]) if qtoks
            else np.empty((0, 10), int))


def _rb_texts_chunk(qtexts: list[str]) -> np.ndarray:
    """rank-bm25 on raw query texts: tokenised here, as every other timed search tokenises its queries."""
    return _rb_chunk(_TOK(qtexts) if qtexts else [])


def top10_agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Share of queries whose top-10 lists are identical, and mean overlap of the sets."""
    same = float(np.mean([np.array_equal(x, y) for x, y in zip(a, b)]))
    overlap = float(np.mean([len(set(x.tolist()) & set(y.tolist())) / max(len(x), 1) for x, y in zip(a, b)]))
    return {"identical_lists": same, "mean_overlap": overlap}


def numba_missing() -> str | None:
    """Why bm25s's numba backend cannot run here (``None`` when it can)."""
    try:
        import numba  # noqa: F401
        from bm25s.numba.retrieve_utils import _retrieve_numba_functional  # noqa: F401  (bm25s's numba path)
    except ImportError as e:
        return f"numba unavailable ({e}); pip install numba, or ragkit[bench]"
    return None


def compared_missing() -> str | None:
    """Why the libraries this bench compares ragkit with (bm25s, rank-bm25: the ``bench`` extra) cannot be
    imported here, with the command that installs them (``None`` when they can): said at the start, as
    :func:`numba_missing` says it of bm25s's numba backend, not as a ``ModuleNotFoundError`` traceback."""
    try:
        import bm25s  # noqa: F401
        from rank_bm25 import BM25Okapi  # noqa: F401
    except ImportError as e:
        return f"the libraries compared need the bench extra ({e}): pip install 'ragkit[bench]'"
    return None


def search_calls(rk, queries, bs_search, bm25s_indexes: dict, n_cores: int) -> dict:  # noqa: ANN001
    """The timed searches, keyed ``(library, "1" | "all")``: ragkit's ``rk.search(queries)`` with ``n_jobs`` 1 and
    ``n_cores``, and for each bm25s index (``{"bm25s": index, "bm25s_numba": index}``) ``bs_search(index,
    n_threads)`` with 0 (one thread) and ``n_cores``.  Every library's "all" gets the same explicit count:
    ragkit's -1 and bm25s's -1 would count differently (the CPUs this process may use, the machine's)."""
    calls = {("ragkit", "1"): lambda: rk.search(queries),
             ("ragkit", "all"): lambda: rk.search(queries, bm25={"n_jobs": n_cores})}
    for name, index in bm25s_indexes.items():
        calls |= {(name, "1"): lambda index=index: bs_search(index, 0),
                  (name, "all"): lambda index=index: bs_search(index, n_cores)}
    return calls


def train_sweep(data: str) -> dict:
    """nDCG@10 on the *train* split of both BM25 variants over a k1 x b grid; test is not read."""
    from ragkit.eval import evaluate, load_beir, paired_randomization_test
    from ragkit.retrievers import BM25

    about = print_machine()
    ds = load_beir(data)
    queries, qrels = ds.queries("train"), ds.qrels("train")
    rows = []
    for variant in ("lucene", "okapi"):
        for k1 in (0.9, 1.2, 1.5, 2.0):
            for b in (0.4, 0.6, 0.75, 0.9):
                run = BM25(k=100, variant=variant, k1=k1, b=b).fit(ds.corpus).search(queries)
                res = evaluate(run, qrels, ["ndcg@10"])
                rows.append({"variant": variant, "k1": k1, "b": b, "ndcg@10": res["ndcg@10"],
                             "per_query": res.per_query["ndcg@10"]})
    default = next(r for r in rows if (r["variant"], r["k1"], r["b"]) == ("lucene", 0.9, 0.4))
    best_okapi = max((r for r in rows if r["variant"] == "okapi"), key=lambda r: r["ndcg@10"])
    best = max(rows, key=lambda r: r["ndcg@10"])
    p = paired_randomization_test(default["per_query"], best_okapi["per_query"])
    print(f"SciFact train ({len(queries)} queries), nDCG@10:")
    for r in sorted(rows, key=lambda r: -r["ndcg@10"])[:8]:
        print(f"  {r['variant']:<7} k1 {r['k1']:<4} b {r['b']:<5} {r['ndcg@10']:.4f}")
    print(f"default lucene k1 0.9 b 0.4: {default['ndcg@10']:.4f}; best okapi (k1 {best_okapi['k1']}, b "
          f"{best_okapi['b']}): {best_okapi['ndcg@10']:.4f}; paired randomisation p = {p:.2f}; best overall: "
          f"{best['variant']} k1 {best['k1']} b {best['b']} {best['ndcg@10']:.4f}")
    out = {"machine": about, "split": "train", "n_queries": len(queries), "p_default_vs_best_okapi": p,
           "grid": [{k: v for k, v in r.items() if k != "per_query"} for r in rows]}
    write_atomic(OUT / "bm25_train_sweep.json", json.dumps(out, indent=2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(SCIFACT),
                    help="BEIR dataset name or folder (default: SciFact: RAGKIT_SCIFACT, or "
                         "../shared/data/beir/scifact)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 40 test queries over the first 800 documents plus every document relevant to "
                         "them (so each query's relevant documents are always in the small corpus and nDCG@10 reads "
                         "far higher than a full run's: not comparable)")
    add_timing_args(ap, "index timing repeats for ragkit and bm25s (best of), and the least number of search rounds")
    ap.add_argument("--rb-repeat", type=int, default=3,
                    help="rank-bm25 searches: best of this many calls over all the queries, after a warm-up call")
    ap.add_argument("--rb-max-seconds", type=float, default=60.0,
                    help="rank-bm25 searches: no further call once the timed ones took this long in all")
    ap.add_argument("--k", type=int, default=100, help="results per query")
    ap.add_argument("--scaling", action="store_true",
                    help="also measure ragkit q/s for n_jobs = 1, 2, 4, ... cores on the queries repeated 10x")
    ap.add_argument("--train-sweep", action="store_true",
                    help="only the variant choice: lucene and okapi over a k1 x b grid on the train split "
                         "(the default, lucene k1 0.9 b 0.4, against the best okapi setting, paired test)")
    args = ap.parse_args()
    timing_args(ap, args)
    if args.rb_repeat < 1 or args.rb_max_seconds <= 0:
        ap.error(f"--rb-repeat must be >= 1 and --rb-max-seconds > 0, got {args.rb_repeat} and {args.rb_max_seconds}")
    if args.train_sweep:
        train_sweep(args.data)
        return

    global _RB, _TOK  # (read by the rank-bm25 pool's workers)
    missing = compared_missing()
    if missing is not None:
        raise SystemExit(f"bench/bm25.py: {missing}")
    import bm25s
    import Stemmer
    from rank_bm25 import BM25Okapi

    from ragkit.eval import evaluate, load_beir
    from ragkit.retrievers import BM25
    from ragkit.retrievers.bm25 import Tokenizer
    from ragkit.run import Run

    n_cores = usable_cpus()  # "all cores" for every library: the CPUs this process may use
    about = machine(threads=f"1 and {n_cores}", cores=n_cores, bm25s=bm25s.__version__)
    print(machine_line(about), flush=True)
    ds = load_beir(args.data)
    queries, qrels = ds.queries("test"), ds.qrels("test")
    corpus = ds.corpus
    if args.quick:
        queries = queries[:40]
        rel = {d for q in queries.ids for d in qrels[q]}
        rows = sorted(set(range(800)) | set(corpus.row_of(rel, missing="drop").tolist()))
        corpus = corpus.subset(np.array(rows))
    qrels = {q: qrels[q] for q in queries.ids}
    texts, qtexts, k = corpus.full_texts, list(queries.texts), args.k
    print(f"{len(corpus)} documents, {len(queries)} queries, k={k}, {n_cores} cores, "
          f"load average {os.getloadavg()[0]:.1f} (others' work slows every library alike)")

    res: dict = {"machine": about,
                 "n_docs": len(corpus), "n_queries": len(queries), "k": k, "k1": K1, "b": B}

    def ndcg(top: np.ndarray) -> float:
        run = Run(list(queries.ids), [corpus.ids[r] for r in top], [-np.arange(len(r), dtype=np.float32) for r in top])
        return evaluate(run, qrels, ["ndcg@10"]).scores["ndcg@10"]

    # ---------------------------------------------------------------- ragkit
    BM25(k=k).fit(corpus.subset(np.arange(min(50, len(corpus)))))  # import PyStemmer etc. before timing
    t_idx, rk = best_of(lambda: BM25(k=k, k1=K1, b=B).fit(corpus), args.repeat)
    rk_okapi = BM25(k=k, k1=K1, b=B, variant="okapi").fit(corpus)
    rko_top = np.stack([r.rows[:10] for r in rk_okapi.search(queries).rankings])

    # ---------------------------------------------------------------- same tokens for everyone
    tok = _TOK = Tokenizer("lucene", "porter")
    doc_toks, q_toks = tok(texts), tok(qtexts)

    # ---------------------------------------------------------------- rank-bm25
    def rb_index():
        return BM25Okapi(tok(texts), k1=K1, b=B, epsilon=0.25)

    t_rb_idx, rb = best_of(rb_index, 1)
    _RB = rb

    def rb_search():
        return _rb_chunk(tok(qtexts))

    def rb_best(fn, warm):  # noqa: ANN001, ANN202
        """rank-bm25's timing: an untimed warm-up ``warm()``, then the best of ``--rb-repeat`` calls of ``fn``
        (fewer once they took ``--rb-max-seconds`` in all): ``(best seconds, calls timed, last result)``."""
        warm()
        best, spent, calls, out = math.inf, 0.0, 0, None
        while calls < args.rb_repeat and (calls == 0 or spent < args.rb_max_seconds):
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
            best, spent, calls = min(best, dt), spent + dt, calls + 1
        return best, calls, out

    few = qtexts[:20]
    t_rb1, rb_calls1, rb_top = rb_best(rb_search, lambda: _rb_chunk(tok(few)))
    chunks = np.array_split(np.arange(len(qtexts)), n_cores)
    with get_context("fork").Pool(n_cores) as pool:
        pool.map(_rb_texts_chunk, [[] for _ in range(n_cores)])  # start the workers before timing
        t_rbn, rb_callsn, _ = rb_best(lambda: pool.map(_rb_texts_chunk, [[qtexts[i] for i in c] for c in chunks]),
                                   lambda: pool.map(_rb_texts_chunk, [few[i::n_cores] for i in range(n_cores)]))
    # score agreement on exactly the same tokens, every query
    idx = np.arange(len(q_toks))
    ref = np.stack([rb.get_scores(q_toks[i]) for i in idx])
    mine = rk_okapi.score_matrix([qtexts[i] for i in idx])
    res["rank_bm25"] = {"index_s": t_rb_idx, "qps_1": len(queries) / t_rb1, "qps_all": len(queries) / t_rbn,
                        "ndcg@10": ndcg(rb_top), "search_calls_timed": {"1": rb_calls1, "all": rb_callsn},
                        "search_timing": "untimed warm-up on a few queries, then best of the timed calls over all "
                                         "the queries (not interleaved with the others)"}
    res["agreement_okapi_vs_rank_bm25"] = {**top10_agreement(rko_top, rb_top),
                                           "max_abs_score_diff": float(np.abs(ref - mine).max()),
                                           "score_queries_checked": len(idx)}

    # ---------------------------------------------------------------- bm25s: numpy (its default) and numba
    stemmer = Stemmer.Stemmer("porter")
    numba_skip = numba_missing()

    def bs_index(backend: str):
        ct = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
        r = bm25s.BM25(k1=K1, b=B, method="lucene", backend=backend)
        r.index(ct, show_progress=False)
        return r

    def bs_search(r, n_threads: int):  # noqa: ANN001
        qt = bm25s.tokenize(qtexts, stopwords="en", stemmer=stemmer, show_progress=False)
        return r.retrieve(qt, k=min(k, len(corpus)), n_threads=n_threads, show_progress=False)

    t_bs_idx, bs = best_of(lambda: bs_index("numpy"), args.repeat)
    if numba_skip is None:
        t_bsn_first_idx, _ = best_of(lambda: bs_index("numba"), 1)  # any JIT compile of its index path is here
        t_bsn_idx, bsn = best_of(lambda: bs_index("numba"), args.repeat)

    # ---------------------------------------------------------------- searches: interleaved, best of N rounds
    # "1": one thread each (ragkit n_jobs=1; bm25s n_threads=0: numpy's plain loop, numba's serial kernel);
    # "all": n_cores threads each, the CPUs this process may use (ragkit n_jobs=n_cores; bm25s n_threads=n_cores:
    # numpy's ThreadPoolExecutor, numba's prange kernel after set_num_threads).  Every call goes from raw query
    # text to top-k.
    searches = search_calls(rk, queries, bs_search, {"bm25s": bs} | ({"bm25s_numba": bsn} if numba_skip is None
                                                                     else {}), n_cores)
    first, best, last, rounds = interleaved_best(searches, args.repeat, args.min_seconds)
    run1, runn = last[("ragkit", "1")], last[("ragkit", "all")]
    rk_top = np.stack([r.rows[:10] for r in run1.rankings])
    assert all(a.equals(b) for a, b in zip(run1.rankings, runn.rankings)), "n_jobs changed the rankings"
    res["timing"] = {"search_rounds": rounds, "interleaved": True, "min_seconds_per_search": args.min_seconds,
                     "threads_all": n_cores, "threads_1": 1,
                     "threads": {"ragkit": f"n_jobs=1 / n_jobs={n_cores} (the CPUs this process may use)",
                                 "bm25s": f"n_threads=0 / n_threads={n_cores} (the CPUs this process may use)",
                                 "rank_bm25": f"one process / multiprocessing Pool({n_cores})"}}
    res["ragkit"] = {"index_s": t_idx, "qps_1": len(queries) / best[("ragkit", "1")],
                     "qps_all": len(queries) / best[("ragkit", "all")],
                     "ndcg@10": ndcg(rk_top), "ndcg@10_okapi": ndcg(rko_top)}

    if args.scaling:
        many = [t for _ in range(10) for t in qtexts]
        res["ragkit_scaling_qps"] = {}
        for nj in sorted({1, *[2 ** i for i in range(1, 8) if 2 ** i <= n_cores], n_cores}):
            t, _ = best_of(lambda: rk.search(many, bm25={"n_jobs": nj}), args.repeat)
            res["ragkit_scaling_qps"][nj] = len(many) / t
            print(f"ragkit n_jobs={nj}: {len(many) / t:.0f} q/s ({len(many)} queries)")

    bs_same = bm25s.BM25(k1=K1, b=B, method="lucene")
    bs_same.index(doc_toks, show_progress=False)
    bs_top = bs_same.retrieve(q_toks, k=10, show_progress=False).documents
    bs_own_top = last[("bm25s", "1")].documents[:, :10]
    res["bm25s"] = {"backend": "numpy", "index_s": t_bs_idx, "qps_1": len(queries) / best[("bm25s", "1")],
                    "qps_all": len(queries) / best[("bm25s", "all")],
                    "ndcg@10": ndcg(bs_top), "ndcg@10_own_tokenizer": ndcg(bs_own_top)}
    res["agreement_lucene_vs_bm25s"] = top10_agreement(rk_top, bs_top)
    if numba_skip is None:
        import numba

        bsn_same = bm25s.BM25(k1=K1, b=B, method="lucene", backend="numba")
        bsn_same.index(doc_toks, show_progress=False)
        bsn_top = bsn_same.retrieve(q_toks, k=10, show_progress=False).documents
        bsn_own_top = last[("bm25s_numba", "1")].documents[:, :10]
        res["bm25s_numba"] = {
            "backend": "numba", "numba": numba.__version__, "threading_layer": numba.threading_layer(),
            "index_s": t_bsn_idx, "qps_1": len(queries) / best[("bm25s_numba", "1")],
            "qps_all": len(queries) / best[("bm25s_numba", "all")], "ndcg@10": ndcg(bsn_top),
            "ndcg@10_own_tokenizer": ndcg(bsn_own_top),
            "first_call_s": {"index": t_bsn_first_idx, "search_1": first[("bm25s_numba", "1")],
                             "search_all": first[("bm25s_numba", "all")]}}
        res["agreement_lucene_vs_bm25s_numba"] = top10_agreement(rk_top, bsn_top)
        res["agreement_bm25s_numba_vs_numpy_own_tokens"] = top10_agreement(bsn_own_top, bs_own_top)
    else:
        res["bm25s_numba"] = {"skipped": numba_skip}

    # ---------------------------------------------------------------- report
    rr, rb_, bs_, bn = res["ragkit"], res["rank_bm25"], res["bm25s"], res["bm25s_numba"]
    res["ratios"] = {
        "ragkit_qps_1_over_rank_bm25": rr["qps_1"] / rb_["qps_1"],
        "ragkit_qps_1_over_bm25s": rr["qps_1"] / bs_["qps_1"],
        "bm25s_qps_1_over_rank_bm25": bs_["qps_1"] / rb_["qps_1"],
        "ragkit_qps_all_over_bm25s_all": rr["qps_all"] / bs_["qps_all"],
        "ragkit_qps_all_over_qps_1": rr["qps_all"] / rr["qps_1"],
        "ragkit_index_speedup_vs_bm25s": bs_["index_s"] / rr["index_s"],
    }
    if "skipped" not in bn:
        res["ratios"] |= {"ragkit_qps_1_over_bm25s_numba": rr["qps_1"] / bn["qps_1"],
                          "ragkit_qps_all_over_bm25s_numba_all": rr["qps_all"] / bn["qps_all"],
                          "ragkit_index_speedup_vs_bm25s_numba": bn["index_s"] / rr["index_s"]}
    # nDCG@10 on the same (ragkit's) tokens for every library, and with each one's own tokenizer, the one its q/s
    # is timed with (bm25s's; ragkit's own is ragkit's; rank-bm25 has none: it is given ragkit's tokens)
    print(f"\n{'library':<14}{'index s':>9}{'q/s 1 thr':>12}{'q/s all':>11}{'x rank-bm25':>13}"
          f"{'nDCG@10, same tokens':>25}{'nDCG@10, own tokenizer':>25}")  # (README's table's wording)
    rows = [("ragkit", rr), ("bm25s numpy", bs_), ("bm25s numba", bn), ("rank-bm25", rb_)]
    for name, r in rows:
        if "skipped" in r:
            print(f"{name:<14}skipped: {r['skipped']}")
            continue
        own = r["ndcg@10"] if name == "ragkit" else r.get("ndcg@10_own_tokenizer")
        print(f"{name:<14}{r['index_s']:>9.2f}{r['qps_1']:>12.0f}{r['qps_all']:>11.0f}"
              f"{r['qps_1'] / rb_['qps_1']:>13.1f}{r['ndcg@10']:>25.4f}" + (f"{own:>25.4f}" if own is not None
                                                                           else f"{'-':>25}"))
    a, b = res["agreement_okapi_vs_rank_bm25"], res["agreement_lucene_vs_bm25s"]
    print(f"\nthreads: '1 thr' = 1 each (ragkit n_jobs=1, bm25s n_threads=0, rank-bm25 one process); 'all' = "
          f"{n_cores} each, the CPUs this process may use (ragkit n_jobs={n_cores}, bm25s n_threads={n_cores}"
          + (f" [numba: {bn['threading_layer']} layer]" if "skipped" not in bn else "")
          + f", rank-bm25 Pool({n_cores})); searches: best of {rounds} interleaved rounds (each search timed "
          f">= {args.min_seconds:g} s in all, unless --repeat asks for more), query text to top-{k}; rank-bm25: "
          f"best of {rb_calls1} (1 thr) / {rb_callsn} (all) calls after a warm-up, not interleaved (it is slow)")
    print(f"ragkit q/s / bm25s numpy q/s: {res['ratios']['ragkit_qps_1_over_bm25s']:.2f} (1 thread), "
          f"{res['ratios']['ragkit_qps_all_over_bm25s_all']:.2f} (all cores); "
          f"ragkit all cores / 1 thread: {res['ratios']['ragkit_qps_all_over_qps_1']:.2f}")
    if "skipped" in bn:
        print(f"ragkit q/s / bm25s numba q/s: not measured ({bn['skipped']})")
    else:
        f = bn["first_call_s"]
        print(f"ragkit q/s / bm25s numba q/s: {res['ratios']['ragkit_qps_1_over_bm25s_numba']:.2f} (1 thread), "
              f"{res['ratios']['ragkit_qps_all_over_bm25s_numba_all']:.2f} (all cores) (below 1: bm25s numba is "
              f"faster)")
        print(f"bm25s numba first calls (JIT compile, outside the timings above): index {f['index']:.2f} s "
              f"(then {bn['index_s']:.2f}), search {f['search_1']:.2f} s on 1 thread, {f['search_all']:.2f} s on "
              f"all cores (numba {bn['numba']})")
    print(f"same tokens, top-10: ragkit okapi vs rank-bm25 identical {a['identical_lists']:.1%} "
          f"(overlap {a['mean_overlap']:.1%}, max |score diff| {a['max_abs_score_diff']:.1e}); "
          f"ragkit lucene vs bm25s identical {b['identical_lists']:.1%} (overlap {b['mean_overlap']:.1%})"
          + ("" if "skipped" in bn else
             f", vs bm25s numba identical {res['agreement_lucene_vs_bm25s_numba']['identical_lists']:.1%}; "
             f"bm25s numba vs numpy (own tokens) identical "
             f"{res['agreement_bm25s_numba_vs_numpy_own_tokens']['identical_lists']:.1%}"))
    print(f"nDCG@10 ragkit okapi (same tokens) {rr['ndcg@10_okapi']:.4f}")  # (own tokenizers: the table's column)
    path = write_atomic(OUT / ("bm25_quick.json" if args.quick else "bm25.json"), json.dumps(res, indent=2))
    print(f"wrote {path}")

if __name__ == "__main__":
    main()
