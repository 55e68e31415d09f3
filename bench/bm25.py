"""BM25 benchmark: ragkit vs rank-bm25 vs bm25s on SciFact, in one run.

Usage::

    python bench/bm25.py                # full SciFact corpus, the 300 test queries
    python bench/bm25.py --quick        # 800-doc slice, 40 queries (a smoke run, ~10 s)
    python bench/bm25.py --scaling      # plus ragkit q/s for n_jobs = 1, 2, 4, ... cores

For each library it measures

* index time, from raw texts (each library's own tokenisation included);
* queries/second for the test queries, from raw query text to top-``k`` (tokenisation
  included), single-threaded and with all cores (ragkit ``n_jobs=-1``; bm25s
  ``n_threads=-1``; rank-bm25 has no parallel scoring, so a ``multiprocessing`` pool over
  queries);
* whether the top-10 lists agree when every library gets the *same tokens* (ragkit's
  tokenizer: lowercase, split on non-alphanumerics, Lucene stopwords, Porter):
  ragkit ``okapi`` against rank-bm25 ``BM25Okapi`` (and the maximum score difference),
  ragkit ``lucene`` against bm25s ``method="lucene"``;
* nDCG@10 of each on the test qrels (same tokens, k1 = 0.9, b = 0.4).

Timings are the best of ``--repeat`` runs (rank-bm25: one run; it is slow).  The machine may
be shared, so read the ratios, which are measured in the same run.  Writes
``bench/out/bm25.json`` (``bm25_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from multiprocessing import get_context

import numpy as np

from _common import OUT, best_of  # noqa: E402

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


def train_sweep(data: str) -> dict:
    """nDCG@10 on the *train* split of both BM25 variants over a k1 x b grid; test is not read."""
    from ragkit.eval import evaluate, load_beir, paired_randomization_test
    from ragkit.retrievers import BM25

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
    out = {"split": "train", "n_queries": len(queries), "p_default_vs_best_okapi": p,
           "grid": [{k: v for k, v in r.items() if k != "per_query"} for r in rows]}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bm25_train_sweep.json").write_text(json.dumps(out, indent=2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="scifact", help="BEIR dataset name or folder (default: scifact)")
    ap.add_argument("--quick", action="store_true", help="800-doc slice, 40 queries")
    ap.add_argument("--repeat", type=int, default=3, help="timing repeats for ragkit and bm25s (best of)")
    ap.add_argument("--k", type=int, default=100, help="results per query")
    ap.add_argument("--scaling", action="store_true",
                    help="also measure ragkit q/s for n_jobs = 1, 2, 4, ... cores on the queries repeated 10x")
    ap.add_argument("--train-sweep", action="store_true",
                    help="only the variant choice: lucene and okapi over a k1 x b grid on the train split "
                         "(the default, lucene k1 0.9 b 0.4, against the best okapi setting, paired test)")
    args = ap.parse_args()
    if args.train_sweep:
        train_sweep(args.data)
        return

    global _RB
    import bm25s
    import Stemmer
    from rank_bm25 import BM25Okapi

    from ragkit.eval import evaluate, load_beir
    from ragkit.retrievers import BM25
    from ragkit.retrievers.bm25 import Tokenizer
    from ragkit.run import Run

    ds = load_beir(args.data)
    queries, qrels = ds.queries("test"), ds.qrels("test")
    corpus = ds.corpus
    if args.quick:
        queries = queries[:40]
        rel = {d for q in queries.ids for d in qrels[q]}
        rows = sorted(set(range(800)) | set(corpus.row_of(rel, missing="drop").tolist()))
        corpus = corpus.subset(np.array(rows))
    qrels = {q: qrels[q] for q in queries.ids}
    n_cores = os.cpu_count() or 1
    texts, qtexts, k = corpus.full_texts, list(queries.texts), args.k
    print(f"{len(corpus)} documents, {len(queries)} queries, k={k}, {n_cores} cores, "
          f"load average {os.getloadavg()[0]:.1f} (others' work slows every library alike)")

    res: dict = {"machine": {"platform": platform.platform(), "python": platform.python_version(), "cores": n_cores,
                             "bm25s": bm25s.__version__, "load_average_1min": os.getloadavg()[0],
                             "date": time.strftime("%Y-%m-%d")},
                 "n_docs": len(corpus), "n_queries": len(queries), "k": k, "k1": K1, "b": B}

    def ndcg(top: np.ndarray) -> float:
        run = Run(list(queries.ids), [corpus.ids[r] for r in top], [-np.arange(len(r), dtype=np.float32) for r in top])
        return evaluate(run, qrels, ["ndcg@10"]).scores["ndcg@10"]

    # ---------------------------------------------------------------- ragkit
    BM25(k=k).fit(corpus.subset(np.arange(min(50, len(corpus)))))  # import PyStemmer etc. before timing
    t_idx, rk = best_of(lambda: BM25(k=k, k1=K1, b=B).fit(corpus), args.repeat)
    t1, run1 = best_of(lambda: rk.search(queries), args.repeat)
    tn, runn = best_of(lambda: rk.search(queries, bm25={"n_jobs": -1}), args.repeat)
    rk_top = np.stack([r.rows[:10] for r in run1.rankings])
    assert all(a.equals(b) for a, b in zip(run1.rankings, runn.rankings)), "n_jobs changed the rankings"
    rk_okapi = BM25(k=k, k1=K1, b=B, variant="okapi").fit(corpus)
    rko_top = np.stack([r.rows[:10] for r in rk_okapi.search(queries).rankings])
    res["ragkit"] = {"index_s": t_idx, "qps_1": len(queries) / t1, "qps_all": len(queries) / tn,
                     "ndcg@10": ndcg(rk_top), "ndcg@10_okapi": ndcg(rko_top)}

    if args.scaling:
        many = [t for _ in range(10) for t in qtexts]
        res["ragkit_scaling_qps"] = {}
        for nj in sorted({1, *[2 ** i for i in range(1, 8) if 2 ** i <= n_cores], n_cores}):
            t, _ = best_of(lambda: rk.search(many, bm25={"n_jobs": nj}), args.repeat)
            res["ragkit_scaling_qps"][nj] = len(many) / t
            print(f"ragkit n_jobs={nj}: {len(many) / t:.0f} q/s ({len(many)} queries)")

    # ---------------------------------------------------------------- same tokens for everyone
    global _RB, _TOK
    tok = _TOK = Tokenizer("lucene", "porter")
    doc_toks, q_toks = tok(texts), tok(qtexts)

    # ---------------------------------------------------------------- rank-bm25
    def rb_index():
        return BM25Okapi(tok(texts), k1=K1, b=B, epsilon=0.25)

    t_rb_idx, rb = best_of(rb_index, 1)
    _RB = rb

    def rb_search():
        return _rb_chunk(tok(qtexts))

    t_rb1, rb_top = best_of(rb_search, 1)
    chunks = np.array_split(np.arange(len(qtexts)), n_cores)
    with get_context("fork").Pool(n_cores) as pool:
        pool.map(_rb_texts_chunk, [[] for _ in range(n_cores)])  # start the workers before timing
        t_rbn, parts = best_of(lambda: pool.map(_rb_texts_chunk, [[qtexts[i] for i in c] for c in chunks]), 1)
    # score agreement on exactly the same tokens, every query
    idx = np.arange(len(q_toks))
    ref = np.stack([rb.get_scores(q_toks[i]) for i in idx])
    mine = rk_okapi.score_matrix([qtexts[i] for i in idx])
    res["rank_bm25"] = {"index_s": t_rb_idx, "qps_1": len(queries) / t_rb1, "qps_all": len(queries) / t_rbn,
                        "ndcg@10": ndcg(rb_top)}
    res["agreement_okapi_vs_rank_bm25"] = {**top10_agreement(rko_top, rb_top),
                                           "max_abs_score_diff": float(np.abs(ref - mine).max()),
                                           "score_queries_checked": len(idx)}

    # ---------------------------------------------------------------- bm25s
    stemmer = Stemmer.Stemmer("porter")

    def bs_index():
        ct = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
        r = bm25s.BM25(k1=K1, b=B, method="lucene")
        r.index(ct, show_progress=False)
        return r

    t_bs_idx, bs = best_of(bs_index, args.repeat)

    def bs_search(n_threads: int):
        qt = bm25s.tokenize(qtexts, stopwords="en", stemmer=stemmer, show_progress=False)
        return bs.retrieve(qt, k=min(k, len(corpus)), n_threads=n_threads, show_progress=False)

    t_bs1, _ = best_of(lambda: bs_search(0), args.repeat)
    t_bsn, _ = best_of(lambda: bs_search(-1), args.repeat)
    bs_same = bm25s.BM25(k1=K1, b=B, method="lucene")
    bs_same.index(doc_toks, show_progress=False)
    bs_top = bs_same.retrieve(q_toks, k=10, show_progress=False).documents
    bs_own_top = bs_search(0).documents[:, :10]
    res["bm25s"] = {"index_s": t_bs_idx, "qps_1": len(queries) / t_bs1, "qps_all": len(queries) / t_bsn,
                    "ndcg@10": ndcg(bs_top), "ndcg@10_own_tokenizer": ndcg(bs_own_top)}
    res["agreement_lucene_vs_bm25s"] = top10_agreement(rk_top, bs_top)

    # ---------------------------------------------------------------- report
    rr, rb_, bs_ = res["ragkit"], res["rank_bm25"], res["bm25s"]
    res["ratios"] = {
        "ragkit_qps_1_over_rank_bm25": rr["qps_1"] / rb_["qps_1"],
        "ragkit_qps_1_over_bm25s": rr["qps_1"] / bs_["qps_1"],
        "bm25s_qps_1_over_rank_bm25": bs_["qps_1"] / rb_["qps_1"],
        "ragkit_qps_all_over_bm25s_all": rr["qps_all"] / bs_["qps_all"],
        "ragkit_qps_all_over_qps_1": rr["qps_all"] / rr["qps_1"],
        "ragkit_index_speedup_vs_bm25s": bs_["index_s"] / rr["index_s"],
    }
    print(f"\n{'library':<12}{'index s':>9}{'q/s 1 thr':>12}{'q/s all':>11}{'x rank-bm25':>13}{'nDCG@10':>9}")
    for name, r in (("ragkit", rr), ("bm25s", bs_), ("rank-bm25", rb_)):
        print(f"{name:<12}{r['index_s']:>9.2f}{r['qps_1']:>12.0f}{r['qps_all']:>11.0f}"
              f"{r['qps_1'] / rb_['qps_1']:>13.1f}{r['ndcg@10']:>9.4f}")
    a, b = res["agreement_okapi_vs_rank_bm25"], res["agreement_lucene_vs_bm25s"]
    print(f"\nragkit q/s / bm25s q/s: {res['ratios']['ragkit_qps_1_over_bm25s']:.2f} (1 thread), "
          f"{res['ratios']['ragkit_qps_all_over_bm25s_all']:.2f} (all cores); "
          f"ragkit all cores / 1 thread: {res['ratios']['ragkit_qps_all_over_qps_1']:.2f}")
    print(f"same tokens, top-10: ragkit okapi vs rank-bm25 identical {a['identical_lists']:.1%} "
          f"(overlap {a['mean_overlap']:.1%}, max |score diff| {a['max_abs_score_diff']:.1e}); "
          f"ragkit lucene vs bm25s identical {b['identical_lists']:.1%} (overlap {b['mean_overlap']:.1%})")
    print(f"nDCG@10 ragkit okapi {rr['ndcg@10_okapi']:.4f}; "
          f"bm25s with its own tokenizer {bs_['ndcg@10_own_tokenizer']:.4f}")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / ("bm25_quick.json" if args.quick else "bm25.json")
    path.write_text(json.dumps(res, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
