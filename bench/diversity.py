"""Diversity benchmark: dense vs MMR (lambda sweep) vs kNN-Embed (anchor / smoothing sweeps) on SciFact test.

Usage::

    python bench/diversity.py            # all 300 test queries + 150 synthetic two-intent queries
    python bench/diversity.py --quick    # 60 queries, 30 pairs, short sweeps

All systems use the same all-MiniLM-L6-v2 embeddings and exact search.  Per system: nDCG@10,
Recall@100, ILD@10 / ILD@100, distinct clusters in the top 10 / 100 (kNN-Embed's own clustering
and an independent one: other seed, 2x clusters), share of collapsed queries, mean components,
and batch latency relative to dense (median of repeats, measured in this run).  Then the
"matched diversity" comparison of kNN-Embed against the MMR curve (linear interpolation of
Recall@100 at equal ILD, with a paired randomisation test against the nearest MMR point), the
in-cluster search paths (gather / masked / partitioned), and the synthetic multi-intent pairs
(two test claims concatenated, qrels = union; S-recall@10/@100, alpha-nDCG@10).
Writes ``bench/out/diversity.json`` and ``bench/out/diversity.png``.  Nothing is tuned here:
every kNN-Embed setting is the spec default except the swept parameter.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import OUT, REPO  # noqa: E402
K = 100


def query_vectors(enc, texts: list[str]) -> np.ndarray:
    """Query vectors, cached under bench/out/cache (query encoding is the slow part on 2 cores)."""
    h = hashlib.sha1((enc.key + "\n" + "\n".join(texts)).encode()).hexdigest()[:16]
    path = OUT / "cache" / f"queries-{h}.npy"
    if path.exists():
        return np.load(path)
    v = enc.encode_queries(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, v)
    return v


def timed(fn, repeats: int):
    best = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best.append(time.perf_counter() - t0)
    return out, float(np.median(best))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats per system")
    args = ap.parse_args()

    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from ragkit import load_beir
    from ragkit.eval import evaluate, paired_randomization_test
    from ragkit.eval.diversity import alpha_ndcg, distinct_clusters, intra_list_diversity, subtopic_recall
    from ragkit.filters.mmr import MMR
    from ragkit.retrievers import Dense, KnnEmbed
    from ragkit.run import Run
    from ragkit.types import State

    ds = load_beir(REPO.parent / "shared" / "data" / "beir" / "scifact")
    corpus, queries, qrels = ds.corpus, ds.queries("test"), ds.qrels("test")
    n_test, n_pairs = (60, 30) if args.quick else (len(queries), 150)
    queries = queries[:n_test]
    qrels = {q: qrels[q] for q in queries.ids if q in qrels}

    dense = Dense(k=K).fit(corpus)
    enc = dense.encoder
    vecs = np.asarray(enc.encode(corpus.full_texts))
    t0 = time.perf_counter()
    knn = KnnEmbed(k=K).fit(corpus)
    fit_s = time.perf_counter() - t0
    n_c = len(knn.centroids_)
    with threadpool_limits(1):
        ind_labels = KMeans(2 * n_c, n_init=3, random_state=12345).fit(vecs).labels_
    mmr_pool = Dense(k=200).fit(corpus)
    mmr_fit = {}

    def mmr(lam):
        if lam not in mmr_fit:
            m = MMR(k=K, fetch_k=200, lambda_mult=lam)
            m.corpus_, m.vectors_ = corpus, vecs  # same vectors as fit() would encode (cached)
            mmr_fit[lam] = m
        return mmr_fit[lam]

    def run_system(fn, qids, qtexts, qv, qrel, repeats):
        def call():
            st = State(list(qtexts), list(qids), vectors={enc.key: qv})
            return fn(st)
        st, secs = timed(call, repeats)
        run = Run.from_rankings(list(qids), st.rankings, corpus.ids)
        ev = evaluate(run, qrel, ["ndcg@10", "recall@100"])
        row = {
            "ndcg@10": ev["ndcg@10"], "recall@100": ev["recall@100"],
            "ild@10": float(np.nanmean(intra_list_diversity(st.rankings, vecs, 10))),
            "ild@100": float(np.nanmean(intra_list_diversity(st.rankings, vecs, 100))),
            "clusters@10": float(distinct_clusters(st.rankings, knn.labels_, 10).mean()),
            "clusters@100": float(distinct_clusters(st.rankings, knn.labels_, 100).mean()),
            "ind_clusters@10": float(distinct_clusters(st.rankings, ind_labels, 10).mean()),
            "ind_clusters@100": float(distinct_clusters(st.rankings, ind_labels, 100).mean()),
            "seconds": secs,
        }
        return row, run, ev, st

    def systems(quick: bool):
        out = [("dense", {}, dense)]
        lams = [0.9, 0.7, 0.5] if quick else [0.9, 0.8, 0.7, 0.6, 0.5, 0.3]
        for lam in lams:
            out.append((f"mmr l={lam}", {"family": "mmr", "lambda": lam},
                        lambda st, lam=lam: mmr(lam)(mmr_pool(st))))
        anchors = [0.0, 0.25, 0.5, 0.75] if not quick else [0.0, 0.5]
        for a in anchors:
            out.append((f"knn anchor={a}", {"family": "knn_anchor", "anchor_share": a}, knn.with_params(anchor_share=a)))
        for a in ([0.0, 0.5] if quick else [0.0, 0.25, 0.5]):
            out.append((f"knn interleave anchor={a}", {"family": "knn_interleave", "anchor_share": a},
                        knn.with_params(anchor_share=a, merge="interleave")))
        # smoothing sweeps (anchor_share 0 so that the mixture decides the whole list)
        for al in ([0.0, 4.0] if quick else [0.0, 0.5, 1.0, 4.0]):
            out.append((f"knn a0 alpha={al}", {"family": "knn_alpha", "alpha": al},
                        knn.with_params(anchor_share=0.0, alpha=al)))
        for tau in ([0.02, None] if quick else [0.02, 0.05, 0.1, None]):
            out.append((f"knn a0 tau={tau}", {"family": "knn_tau", "tau": tau}, knn.with_params(anchor_share=0.0, tau=tau)))
        if not quick:
            for mc in (2, 8):
                out.append((f"knn a0 max_comp={mc}", {"family": "knn_maxcomp", "max_components": mc},
                            knn.with_params(anchor_share=0.0, max_components=mc)))
            out.append(("knn a0 prior=local", {"family": "knn_prior"}, knn.with_params(anchor_share=0.0, prior="local")))
            out.append(("knn a0 rocchio", {"family": "knn_rocchio"},
                        knn.with_params(anchor_share=0.0, component_query="rocchio_filter")))
            out.append(("knn a0 collapse=1.0", {"family": "knn_collapse"},
                        knn.with_params(anchor_share=0.0, collapse_at=1.0)))
        return out

    print(f"SciFact test: {len(queries)} queries, {len(corpus)} docs, C={n_c}, kNN-Embed fit {fit_s:.1f}s")
    qv = query_vectors(enc, list(queries.texts))
    mix = knn.mixture(qv)
    res: dict = {"n_queries": len(queries), "n_clusters": n_c, "fit_seconds": fit_s,
                 "collapsed_share_default": float(mix["collapsed"].mean()),
                 "mean_components_default": float((mix["clusters"] >= 0).sum(1).mean()),
                 "systems": {}}
    runs, evals = {}, {}
    for name, meta, fn in systems(args.quick):
        row, run, ev, _ = run_system(fn, queries.ids, queries.texts, qv, qrels, args.repeats)
        row.update(meta)
        res["systems"][name] = row
        evals[name] = ev
    base = res["systems"]["dense"]
    hdr = f"{'system':28s} {'nDCG@10':>8s} {'R@100':>7s} {'ILD@10':>7s} {'ILD@100':>8s} {'cl@10':>6s} {'cl@100':>7s} " \
          f"{'ind@10':>7s} {'ind@100':>8s} {'ILD10 x':>8s} {'dR@100':>7s} {'lat x':>6s}"
    print(hdr)
    for name, r in res["systems"].items():
        r["ild@10_ratio"] = r["ild@10"] / base["ild@10"]
        r["ild@100_ratio"] = r["ild@100"] / base["ild@100"]
        r["recall@100_delta"] = r["recall@100"] - base["recall@100"]
        r["latency_ratio"] = r["seconds"] / base["seconds"]
        print(f"{name:28s} {r['ndcg@10']:8.4f} {r['recall@100']:7.4f} {r['ild@10']:7.4f} {r['ild@100']:8.4f} "
              f"{r['clusters@10']:6.2f} {r['clusters@100']:7.2f} {r['ind_clusters@10']:7.2f} {r['ind_clusters@100']:8.2f} "
              f"{r['ild@10_ratio']:8.3f} {r['recall@100_delta']:+7.4f} {r['latency_ratio']:6.2f}")
    print(f"default kNN-Embed: {res['collapsed_share_default']:.0%} of queries collapse to dense, "
          f"{res['mean_components_default']:.2f} components on average")

    # target check: ILD@10 +20% with Recall@100 >= dense - 0.01
    ok = [n for n, r in res["systems"].items() if n.startswith("knn")
          and r["ild@10_ratio"] >= 1.2 and r["recall@100_delta"] >= -0.01]
    res["target_ild10_plus20_recall_minus001"] = ok
    print("kNN-Embed settings meeting 'ILD@10 >= 1.2x dense and Recall@100 >= dense - 0.01':", ok or "none")

    # matched diversity vs the MMR curve
    mmr_pts = sorted([(r["ild@100"], r["recall@100"], r["ild@10"], n) for n, r in res["systems"].items()
                      if r.get("family") == "mmr"] + [(base["ild@100"], base["recall@100"], base["ild@10"], "dense")])
    res["matched"] = {}
    for ild_key, idx in (("ild@100", 0), ("ild@10", 2)):
        pts = sorted(mmr_pts, key=lambda p: p[idx])
        xs = np.array([p[idx] for p in pts])
        ys = np.array([p[1] for p in pts])
        for n, r in res["systems"].items():
            if not n.startswith("knn") or not xs.min() <= r[ild_key] <= xs.max():
                continue
            interp = float(np.interp(r[ild_key], xs, ys))
            near = pts[int(np.argmin(np.abs(xs - r[ild_key])))][3]
            p = paired_randomization_test(evals[n].per_query["recall@100"], evals[near].per_query["recall@100"])
            res["matched"].setdefault(ild_key, {})[n] = {
                "knn_recall@100": r["recall@100"], "mmr_recall@100_interp": interp, "delta": r["recall@100"] - interp,
                "nearest_mmr": near, "p_vs_nearest": p}
    print("\nmatched diversity (Recall@100 of kNN-Embed minus MMR curve at the same ILD; p vs nearest MMR point):")
    for ild_key, d in res["matched"].items():
        for n, m in d.items():
            print(f"  at {ild_key} {n:28s} {m['delta']:+.4f} (nearest {m['nearest_mmr']}, p={m['p_vs_nearest']:.3f})")
    if not res["matched"]:
        print("  no kNN-Embed point lies within the MMR curve's ILD range")

    # in-cluster search paths
    paths = {}
    live = knn.with_params(anchor_share=0.0, collapse_at=1.0)
    for path in ("gather", "masked", "partitioned"):
        paths[path] = run_system(live.with_params(search=path), queries.ids, queries.texts, qv, qrels,
                                 args.repeats)[0]["seconds"]
    res["search_paths_seconds"] = paths
    print("\nin-cluster search (no collapse, anchor 0):",
          ", ".join(f"{k} {v * 1000:.0f} ms ({v / paths['gather']:.2f}x)" for k, v in paths.items()))

    # single-query latency (batch of 1), p50 / p95
    lat = {}
    n_lat = 20 if args.quick else 60
    for name, fn in (("dense", dense), ("knn default", knn), ("knn anchor=0", knn.with_params(anchor_share=0.0)),
                     ("mmr l=0.5", lambda st: mmr(0.5)(mmr_pool(st)))):
        ts = []
        for i in range(n_lat):
            st = State([queries.texts[i]], [queries.ids[i]], vectors={enc.key: qv[i:i + 1]})
            t0 = time.perf_counter()
            fn(st)
            ts.append(time.perf_counter() - t0)
        lat[name] = {"p50_ms": 1000 * float(np.percentile(ts, 50)), "p95_ms": 1000 * float(np.percentile(ts, 95))}
    for v in lat.values():
        v["p50_ratio"] = v["p50_ms"] / lat["dense"]["p50_ms"]
        v["p95_ratio"] = v["p95_ms"] / lat["dense"]["p95_ms"]
    res["single_query_latency"] = lat
    print("single-query latency:", ", ".join(f"{k} p50 {v['p50_ms']:.1f} ms ({v['p50_ratio']:.2f}x) p95 "
                                             f"{v['p95_ms']:.1f} ms ({v['p95_ratio']:.2f}x)" for k, v in lat.items()))

    # synthetic multi-intent pairs
    rng = np.random.default_rng(0)
    all_q = ds.queries("test")
    all_rel = ds.qrels("test")
    judged = [i for i, q in enumerate(all_q.ids) if q in all_rel]
    perm = rng.permutation(judged)[: 2 * n_pairs]
    a_idx, b_idx = perm[0::2], perm[1::2]
    p_ids = [f"{all_q.ids[a]}+{all_q.ids[b]}" for a, b in zip(a_idx, b_idx)]
    p_texts = [f"{all_q.texts[a]} {all_q.texts[b]}" for a, b in zip(a_idx, b_idx)]
    p_qrels, p_sub = {}, {}
    for pid, a, b in zip(p_ids, a_idx, b_idx):
        qa, qb = all_q.ids[a], all_q.ids[b]
        p_qrels[pid] = {**all_rel[qa], **all_rel[qb]}
        sub: dict = {}
        for q in (qa, qb):
            for d, rel in all_rel[q].items():
                if rel > 0:
                    sub.setdefault(d, []).append(q)
        p_sub[pid] = sub
    pv = query_vectors(enc, p_texts)
    pmix = knn.mixture(pv)
    res["pairs"] = {"n_pairs": len(p_ids), "collapsed_share_default": float(pmix["collapsed"].mean()),
                    "mean_components_default": float((pmix["clusters"] >= 0).sum(1).mean()), "systems": {}}
    pair_systems = [("dense", dense), ("mmr l=0.7", lambda st: mmr(0.7)(mmr_pool(st))),
                    ("mmr l=0.5", lambda st: mmr(0.5)(mmr_pool(st)))]
    for a in (0.0, 0.25, 0.5):
        pair_systems.append((f"knn anchor={a}", knn.with_params(anchor_share=a)))
        pair_systems.append((f"knn interleave anchor={a}", knn.with_params(anchor_share=a, merge="interleave")))
    print(f"\nsynthetic two-intent queries: {len(p_ids)} pairs; default kNN-Embed collapses "
          f"{res['pairs']['collapsed_share_default']:.0%}, {res['pairs']['mean_components_default']:.2f} components")
    print(f"{'system':28s} {'nDCG@10':>8s} {'R@100':>7s} {'S-R@10':>7s} {'S-R@100':>8s} {'aNDCG@10':>9s} {'ILD@10':>7s}")
    for name, fn in pair_systems:
        row, run, ev, st = run_system(fn, p_ids, p_texts, pv, p_qrels, 1)
        row["s_recall@10"] = float(np.mean(list(subtopic_recall(run, p_sub, 10).values())))
        row["s_recall@100"] = float(np.mean(list(subtopic_recall(run, p_sub, 100).values())))
        row["alpha_ndcg@10"] = float(np.mean(list(alpha_ndcg(run, p_sub, 10).values())))
        res["pairs"]["systems"][name] = row
        print(f"{name:28s} {row['ndcg@10']:8.4f} {row['recall@100']:7.4f} {row['s_recall@10']:7.4f} "
              f"{row['s_recall@100']:8.4f} {row['alpha_ndcg@10']:9.4f} {row['ild@10']:7.4f}")

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "diversity.json").write_text(json.dumps(res, indent=2))
    plot(res, OUT / "diversity.png")
    print(f"\nwrote {OUT / 'diversity.json'} and {OUT / 'diversity.png'}")


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = {"mmr": ("MMR (lambda)", "o-"), "knn_anchor": ("kNN-Embed score (anchor_share)", "s-"),
            "knn_interleave": ("kNN-Embed interleave (anchor_share)", "^-"),
            "knn_alpha": ("kNN-Embed a0 (alpha)", "d--"), "knn_tau": ("kNN-Embed a0 (tau)", "v--")}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    base = res["systems"]["dense"]
    for ax, (x, y) in zip(axes, (("ild@100", "recall@100"), ("ild@10", "ndcg@10"))):
        ax.plot(base[x], base[y], "k*", ms=14, label="dense")
        for fam, (label, style) in fams.items():
            pts = sorted((r[x], r[y]) for r in res["systems"].values() if r.get("family") == fam)
            if pts:
                ax.plot(*zip(*pts), style, label=label)
        ax.set_xlabel(x.upper().replace("ILD", "ILD"))
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"SciFact test ({res['n_queries']} queries): relevance vs intra-list diversity")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
