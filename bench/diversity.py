"""Diversity benchmark: dense vs MMR (lambda sweep) vs kNN-Embed (anchor / smoothing sweeps) on SciFact test.

Usage::

    python bench/diversity.py            # all 300 test queries + 150 synthetic two-intent queries
    python bench/diversity.py --quick    # 60 queries, 30 pairs, short sweeps

All systems use the same all-MiniLM-L6-v2 embeddings and exact search.  Every system is asked for
k = 10 and for k = 100, as a user would: the @10 measures (nDCG@10, ILD@10, clusters@10) come from the
k = 10 call, the @100 ones from the k = 100 call.  For dense and greedy MMR the k = 10 list is the k = 100
list's prefix; kNN-Embed splits its budget by the mixture weights, so its k = 10 list is its own.
Per system: nDCG@10, Recall@100, ILD@10 / ILD@100, distinct clusters in the top 10 / 100 (kNN-Embed's own
clustering and an independent one: other seed, 2x clusters), share of collapsed queries, mean components,
and batch latency relative to dense (median over repeats of the ratio to a dense call made just before or after,
alternating).  Then the
"matched diversity" comparison of kNN-Embed against the MMR curve (linear interpolation of
Recall@100 at equal ILD, with a paired randomisation test against the nearest MMR point), the
in-cluster search paths (gather / masked / partitioned), and the synthetic multi-intent pairs
(two test claims concatenated, qrels = union; S-recall@10/@100, alpha-nDCG@10).
Writes ``bench/out/diversity.json`` and ``bench/out/diversity.png`` (``_quick`` with ``--quick``; in the
folder ``RAGKIT_BENCH_OUT`` names, when set).  The sweeps change one spec default
at a time; one more setting ("chosen on train") is picked by ``select_on_train`` on SciFact *train*
queries for the issue's target (ILD@10 >= 1.2x dense, Recall@100 >= dense - 0.01) and only then run on test.
Each system's row records how many of the test queries it is evaluated on (for a synthetic pair, its two test
queries) its operators learned from or its setting was chosen on (``learned_from_test``), and the bench refuses
to report one where that is not 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import CACHE, OUT, SCIFACT, atomic_path, held_out, print_machine, save_npy_atomic, write_atomic  # noqa: E402

if TYPE_CHECKING:
    from ragkit.types import Queries

K = 100


def query_vectors(enc, texts: list[str]) -> np.ndarray:
    """Query vectors, cached under bench/out/cache (query encoding is the slow part on 2 cores).  The cache is
    written atomically; one that cannot be read (truncated by a run killed before writes were atomic) or has
    the wrong shape is encoded again and replaced."""
    h = hashlib.sha1((enc.key + "\n" + "\n".join(texts)).encode()).hexdigest()[:16]
    path = CACHE / f"queries-{h}.npy"
    if path.exists():
        try:
            v = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            print(f"query-vector cache {path} unreadable ({e}): encoding again")
        else:
            if v.ndim == 2 and len(v) == len(texts):
                return v
            print(f"query-vector cache {path} holds {v.shape}, not {len(texts)} rows: encoding again")
    v = enc.encode_queries(texts)
    save_npy_atomic(path, v)
    return v


def timed(fn, repeats: int, base=None):
    """``(output, median seconds, median of per-repeat time ratios to base)``.

    With ``base`` (dense), each repeat times ``base`` and ``fn`` back to back, so that the ratio
    compares calls made under the same machine load (this VM's speed drifts by 30% within minutes);
    the order alternates between repeats (the second call of a pair runs on warmer caches).
    """
    def clock(f):
        t0 = time.perf_counter()
        res = f()
        return res, time.perf_counter() - t0

    secs, ratios = [], []
    out = None
    for i in range(repeats):
        base_first = i % 2 == 0
        if base is not None and base_first:
            tb = clock(base)[1]
        out, ts = clock(fn)
        secs.append(ts)
        if base is not None:
            if not base_first:
                tb = clock(base)[1]
            ratios.append(ts / tb)
    return out, float(np.median(secs)), float(np.median(ratios)) if ratios else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--repeats", type=int, default=8,
                    help="timing repeats per system, each paired with a dense call (latency ratio = median ratio)")
    ap.add_argument("--z", type=float, default=0.0,
                    help="selection on train: a setting must meet the target by z standard errors (0 = point estimate)")
    ap.add_argument("--rule", choices=["ndcg", "margin"], default="ndcg",
                    help="selection on train: ndcg = best nDCG@10 among settings meeting the target; margin = the "
                         "setting meeting it most surely (largest min(margin / SE)); writes diversity_margin.*")
    args = ap.parse_args()
    machine = print_machine()

    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from ragkit import load_beir
    from ragkit.eval import evaluate, paired_randomization_test
    from ragkit.eval.diversity import alpha_ndcg, distinct_clusters, intra_list_diversity, subtopic_recall
    from ragkit.filters.mmr import MMR
    from ragkit.retrievers import Dense, KnnEmbed
    from ragkit.run import Run
    from ragkit.types import State

    ds = load_beir(SCIFACT)
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

    def run_system(fn, qids, qtexts, qv, qrel, repeats, fn10=None):
        """Metrics at k = 100 from ``fn`` and at k = 10 from ``fn10`` (a k = 10 call; None = the k = 100 list's
        first 10, exact for dense and greedy MMR, whose lists are prefix-consistent)."""
        def call(f):
            return lambda: f(State(list(qtexts), list(qids), vectors={enc.key: qv}))
        st, secs, ratio = timed(call(fn), repeats, base=call(dense))
        st10 = st if fn10 is None else call(fn10)()
        run = Run.from_rankings(list(qids), st.rankings, corpus.ids)
        run10 = Run.from_rankings(list(qids), st10.rankings, corpus.ids)
        ev = evaluate(run, qrel, ["recall@100"])
        ev10 = evaluate(run10, qrel, ["ndcg@10"])
        ev.per_query.update(ev10.per_query)
        ild10 = intra_list_diversity(st10.rankings, vecs, 10)
        row = {
            "ndcg@10": ev10["ndcg@10"], "recall@100": ev["recall@100"],
            "ild@10": float(np.nanmean(ild10)),
            "ild@100": float(np.nanmean(intra_list_diversity(st.rankings, vecs, 100))),
            "clusters@10": float(distinct_clusters(st10.rankings, knn.labels_, 10).mean()),
            "clusters@100": float(distinct_clusters(st.rankings, knn.labels_, 100).mean()),
            "ind_clusters@10": float(distinct_clusters(st10.rankings, ind_labels, 10).mean()),
            "ind_clusters@100": float(distinct_clusters(st.rankings, ind_labels, 100).mean()),
            "seconds": secs, "latency_ratio": ratio,
        }
        return row, run, run10, ev

    def pair(model, **kw):
        """kNN-Embed at k = 100 and the same settings at k = 10 (its budget split depends on k)."""
        return model.with_params(**kw), model.with_params(**{**kw, "k": 10})

    def systems(quick: bool):
        """``(name, meta, k = 100 call, k = 10 call or None, what else it learned from or was chosen on)``: the
        calls that are operators are asked what they learned from (:func:`learned_from`), the rest named."""
        out = [("dense", {}, dense, None, [])]
        lams = [0.9, 0.7, 0.5] if quick else [0.9, 0.8, 0.7, 0.6, 0.5, 0.3]
        for lam in lams:
            out.append((f"mmr l={lam}", {"family": "mmr", "lambda": lam},
                        lambda st, lam=lam: mmr(lam)(mmr_pool(st)), None, [mmr(lam), mmr_pool]))
        knn_rows = []
        for a in ([0.0, 0.25, 0.5, 0.75] if not quick else [0.0, 0.5]):
            knn_rows.append((f"knn anchor={a}", {"family": "knn_anchor", "anchor_share": a}, {"anchor_share": a}))
        for a in ([0.0, 0.5] if quick else [0.0, 0.25, 0.5]):
            knn_rows.append((f"knn interleave anchor={a}", {"family": "knn_interleave", "anchor_share": a},
                             {"anchor_share": a, "merge": "interleave"}))
        # smoothing sweeps (anchor_share 0 so that the mixture decides the whole list)
        for al in ([0.0, 4.0] if quick else [0.0, 0.5, 1.0, 4.0]):
            knn_rows.append((f"knn a0 alpha={al}", {"family": "knn_alpha", "alpha": al},
                             {"anchor_share": 0.0, "alpha": al}))
        for tau in ([0.02, None] if quick else [0.02, 0.05, 0.1, None]):
            knn_rows.append((f"knn a0 tau={tau}", {"family": "knn_tau", "tau": tau}, {"anchor_share": 0.0, "tau": tau}))
        if not quick:
            for mc in (2, 8):
                knn_rows.append((f"knn a0 max_comp={mc}", {"family": "knn_maxcomp", "max_components": mc},
                                 {"anchor_share": 0.0, "max_components": mc}))
            knn_rows += [("knn a0 prior=local", {"family": "knn_prior"}, {"anchor_share": 0.0, "prior": "local"}),
                         ("knn a0 rocchio", {"family": "knn_rocchio"},
                          {"anchor_share": 0.0, "component_query": "rocchio_filter"}),
                         ("knn a0 collapse=1.0", {"family": "knn_collapse"}, {"anchor_share": 0.0, "collapse_at": 1.0})]
        out += [(name, meta, *pair(knn, **kw), []) for name, meta, kw in knn_rows]
        out.append(("knn chosen on train", {"family": "knn_chosen", **chosen_kw}, *pair(chosen_knn, **chosen_query_kw),
                    [chosen_on]))
        return out

    chosen_knn, chosen_kw, res_select, chosen_on = select_on_train(ds, dense, corpus, vecs, n_c, args.quick, args.z,
                                                                   args.rule)
    chosen_query_kw = {k: v for k, v in chosen_kw.items() if k != "n_clusters"}

    print(f"SciFact test: {len(queries)} queries, {len(corpus)} docs, C={n_c}, kNN-Embed fit {fit_s:.1f}s")
    qv = query_vectors(enc, list(queries.texts))
    mix = knn.mixture(qv)
    res: dict = {"machine": machine, "n_queries": len(queries), "n_clusters": n_c, "fit_seconds": fit_s,
                 "collapsed_share_default": float(mix["collapsed"].mean()),
                 "mean_components_default": float((mix["clusters"] >= 0).sum(1).mean()),
                 "systems": {}}
    evals = {}
    res["selection"] = res_select
    for name, meta, fn, fn10, extra in systems(args.quick):
        taught = learned_from(queries, name, fn, fn10, extra)
        row, run, _, ev = run_system(fn, queries.ids, queries.texts, qv, qrels, args.repeats, fn10)
        row.update(meta)
        row["learned_from_test"] = taught
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
        print(f"{name:28s} {r['ndcg@10']:8.4f} {r['recall@100']:7.4f} {r['ild@10']:7.4f} {r['ild@100']:8.4f} "
              f"{r['clusters@10']:6.2f} {r['clusters@100']:7.2f} "
              f"{r['ind_clusters@10']:7.2f} {r['ind_clusters@100']:8.2f} "
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
    lat_systems = (("dense", dense), ("knn default", knn), ("knn anchor=0", knn.with_params(anchor_share=0.0)),
                   ("knn chosen on train", chosen_knn.with_params(**chosen_query_kw)),
                   ("mmr l=0.5", lambda st: mmr(0.5)(mmr_pool(st))))
    ts = {name: [] for name, _ in lat_systems}
    for i in range(n_lat):  # systems interleaved per query (same machine load), order rotated (same cache states)
        for name, fn in lat_systems[i % len(lat_systems):] + lat_systems[:i % len(lat_systems)]:
            st = State([queries.texts[i]], [queries.ids[i]], vectors={enc.key: qv[i:i + 1]})
            t0 = time.perf_counter()
            fn(st)
            ts[name].append(time.perf_counter() - t0)
    for name, t_ in ts.items():
        lat[name] = {"p50_ms": 1000 * float(np.percentile(t_, 50)), "p95_ms": 1000 * float(np.percentile(t_, 95))}
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
    pair_systems = [("dense", dense, None, []),
                    ("mmr l=0.7", lambda st: mmr(0.7)(mmr_pool(st)), None, [mmr(0.7), mmr_pool]),
                    ("mmr l=0.5", lambda st: mmr(0.5)(mmr_pool(st)), None, [mmr(0.5), mmr_pool])]
    for a in (0.0, 0.25, 0.5):
        pair_systems.append((f"knn anchor={a}", *pair(knn, anchor_share=a), []))
        pair_systems.append((f"knn interleave anchor={a}", *pair(knn, anchor_share=a, merge="interleave"), []))
    pair_systems.append(("knn chosen on train", *pair(chosen_knn, **chosen_query_kw), [chosen_on]))
    p_parts = all_q[sorted(set(a_idx.tolist()) | set(b_idx.tolist()))]  # the test queries the pairs are made of
    print(f"\nsynthetic two-intent queries: {len(p_ids)} pairs; default kNN-Embed collapses "
          f"{res['pairs']['collapsed_share_default']:.0%}, {res['pairs']['mean_components_default']:.2f} components")
    print(f"{'system':28s} {'nDCG@10':>8s} {'R@100':>7s} {'S-R@10':>7s} {'S-R@100':>8s} "
          f"{'aNDCG@10':>9s} {'ILD@10':>7s}")
    for name, fn, fn10, extra in pair_systems:
        taught = learned_from(p_parts, f"{name} (synthetic pairs)", fn, fn10, extra)
        row, run, run10, _ = run_system(fn, p_ids, p_texts, pv, p_qrels, 1, fn10)
        row["learned_from_test"] = taught
        row["s_recall@10"] = float(np.mean(list(subtopic_recall(run10, p_sub, 10).values())))
        row["s_recall@100"] = float(np.mean(list(subtopic_recall(run, p_sub, 100).values())))
        row["alpha_ndcg@10"] = float(np.mean(list(alpha_ndcg(run10, p_sub, 10).values())))
        res["pairs"]["systems"][name] = row
        print(f"{name:28s} {row['ndcg@10']:8.4f} {row['recall@100']:7.4f} {row['s_recall@10']:7.4f} "
              f"{row['s_recall@100']:8.4f} {row['alpha_ndcg@10']:9.4f} {row['ild@10']:7.4f}")

    print(f"test queries learned from: 0 in each of the {len(res['systems'])} systems and "
          f"{len(res['pairs']['systems'])} pair systems (setting chosen on {len(chosen_on)} train queries)")
    stem = "diversity" + ("_margin" if args.rule == "margin" else "") + ("_quick" if args.quick else "")
    write_atomic(OUT / f"{stem}.json", json.dumps(res, indent=2))
    with atomic_path(OUT / f"{stem}.png") as tmp_png:
        plot(res, tmp_png)
    print(f"\nwrote {OUT / (stem + '.json')} and {OUT / (stem + '.png')}")


def learned_from(queries: Queries, name: str, fn: Callable[..., Any], fn10: Callable[..., Any] | None,
                 extra: list[Any]) -> int:
    """:func:`held_out` for a system's row: what its calls (``fn`` and ``fn10``, where operators) learned from and
    the ``extra`` sources (the parts of a composed call, the queries a setting was chosen on); 0, or it refuses."""
    return held_out(queries, name, *(f for f in (fn, fn10) if hasattr(f, "learned_from")), *extra)


def select_on_train(ds, dense, corpus, vecs: np.ndarray, n_c: int, quick: bool, z: float = 0.0,
                    rule: str = "ndcg") -> tuple:
    """Choose a diversity-seeking kNN-Embed setting on SciFact *train* queries (test is never looked at).

    Grid: n_clusters x {0.5, 1, 2}, anchor_share, weight_floor, tau, max_components, collapse_at.  Each
    setting is run at k = 10 (ILD@10, nDCG@10) and at k = 100 (Recall@100).  A setting qualifies when the
    issue's target holds on train, paired with dense over queries: mean(ILD@10 - 1.2 ILD@10_dense) - z SE >= 0
    and mean(R@100 - R@100_dense + 0.01) - z SE >= 0 (z = 0: the point estimates; z = 1.645: 95% one-sided
    confidence; the count at 95% is reported either way).  ``rule="ndcg"``: among qualifying settings the
    highest train nDCG@10 wins; if none qualifies, the highest ILD margin among those meeting the recall
    condition, and if none meets even that, the highest recall margin (``mean - z SE``); either fallback
    is printed as a warning and kept in the report's ``fallback`` (None when a setting qualified).
    ``rule="margin"``: the setting that meets both conditions most surely on train, the largest
    ``min(ILD margin / SE, recall margin / SE)`` (ignores z and nDCG).  Every setting's train numbers are
    in the report.  Returns (fitted KnnEmbed, params, report, the train queries it was chosen on).
    """
    import itertools

    from ragkit.eval import evaluate
    from ragkit.eval.diversity import intra_list_diversity
    from ragkit.retrievers import KnnEmbed
    from ragkit.run import Run
    from ragkit.types import State

    enc = dense.encoder
    tq, trel = ds.queries("train"), ds.qrels("train")
    tq = tq[[i for i, q in enumerate(tq.ids) if q in trel]]
    if quick:
        tq = tq[:200]
    trel = {q: trel[q] for q in tq.ids}  # the evaluated queries' only: the others are not missing from the run
    tv = query_vectors(enc, list(tq.texts))

    def measure(fn10, fn100):
        st10 = fn10(State(list(tq.texts), list(tq.ids), vectors={enc.key: tv}))
        st100 = st10 if fn100 is None else fn100(State(list(tq.texts), list(tq.ids), vectors={enc.key: tv}))
        e10 = evaluate(Run.from_rankings(list(tq.ids), st10.rankings, corpus.ids), trel, ["ndcg@10"])
        e100 = evaluate(Run.from_rankings(list(tq.ids), st100.rankings, corpus.ids), trel, ["recall@100"])
        return (np.array([e10.per_query["ndcg@10"].get(q, 0.0) for q in tq.ids]),
                np.array([e100.per_query["recall@100"].get(q, 0.0) for q in tq.ids]),
                np.asarray(intra_list_diversity(st10.rankings, vecs, 10), dtype=np.float64))

    def margins(x: np.ndarray) -> tuple[float, float]:
        """(mean, standard error) of a per-query paired difference."""
        return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x)))

    nd0, rc0, ild0 = measure(dense, None)
    grid = dict(anchor_share=(0.0, 0.15, 0.3, 0.5), weight_floor=(0.0, 0.03), tau=(0.05, 0.1, None),
                max_components=(4, 10), collapse_at=(0.85, 1.0))
    if quick:
        grid = dict(anchor_share=(0.0, 0.3), weight_floor=(0.0, 0.03), tau=(0.05,), max_components=(10,),
                    collapse_at=(1.0,))
    sizes = sorted({max(4, round(n_c / 2)), n_c, 2 * n_c})
    rows, fitted = [], {}
    t0 = time.perf_counter()
    for c in sizes:
        fitted[c] = KnnEmbed(k=100, n_clusters=c).fit(corpus)
        for values in itertools.product(*grid.values()):
            kw = dict(zip(grid, values))
            nd, rc, ild = measure(fitted[c].with_params(k=10, **kw), fitted[c].with_params(**kw))
            rows.append({"n_clusters": c, **kw, "ndcg@10": float(nd.mean()), "recall@100": float(rc.mean()),
                         "ild@10_ratio": float(ild.mean() / ild0.mean()),
                         "ild_margin": margins(ild - 1.2 * ild0), "recall_margin": margins(rc - rc0 + 0.01)})

    ok = [r for r in rows if _meets(r, z)]
    n95 = sum(_meets(r, 1.645) for r in rows)
    best, fallback = choose_setting(rows, z, rule)
    kw = {k: best[k] for k in ("n_clusters", *grid)}
    report = {"n_train_queries": len(tq), "grid_size": len(rows), "seconds": time.perf_counter() - t0,
              "z": z, "qualifying": len(ok), "qualifying_95pct": n95,
              "dense_train": {"ndcg@10": float(nd0.mean()), "recall@100": float(rc0.mean()),
                              "ild@10": float(ild0.mean())},
              "chosen": best, "chosen_sureness": _sureness(best), "fallback": fallback, "settings": rows,
              "rule": "max min(margin / SE) over ILD@10 >= 1.2x dense and Recall@100 >= dense - 0.01 on train"
              if rule == "margin" else f"ILD@10 >= 1.2x dense and Recall@100 >= dense - 0.01 on train (z = {z}); "
                                       "then max nDCG@10"}
    if fallback is not None:
        print(f"WARNING: {fallback}")
    print(f"selection on {len(tq)} train queries: {len(rows)} settings in {report['seconds']:.0f}s, "
          f"{len(ok)} meet the target (z = {z}), {n95} with 95% confidence; chosen {kw}: "
          f"train nDCG@10 {best['ndcg@10']:.4f} "
          f"(dense {nd0.mean():.4f}), ILD@10 {best['ild@10_ratio']:.3f}x, Recall@100 {best['recall@100']:.4f} "
          f"(dense {rc0.mean():.4f})")
    return fitted[kw["n_clusters"]], kw, report, tq


def _meets(r: dict, z: float) -> bool:
    """Both train conditions hold for the setting ``r`` at ``z`` standard errors (its margins' mean - z SE >= 0)."""
    return all(r[m][0] - z * r[m][1] >= 0 for m in ("ild_margin", "recall_margin"))


def _sureness(r: dict) -> float:
    """``min(ILD margin / SE, recall margin / SE)``: how surely ``r`` meets both conditions."""
    return min(r[m][0] / max(r[m][1], 1e-12) for m in ("ild_margin", "recall_margin"))


def choose_setting(rows: list[dict], z: float, rule: str) -> tuple[dict, str | None]:
    """The setting :func:`select_on_train` keeps among ``rows`` (each with ``ndcg@10`` and the ``(mean, SE)``
    pairs ``ild_margin`` and ``recall_margin``), and None or, when none qualified, how it was chosen instead.

    ``rule="margin"``: the largest :func:`_sureness`.  ``rule="ndcg"``: the best nDCG@10 among those meeting
    both conditions; if none does, the largest ILD margin among those meeting the recall condition; if none
    meets even that, the largest recall margin ``mean - z SE`` (it was the first grid row before).
    """
    def recall_lower(r: dict) -> float:
        return r["recall_margin"][0] - z * r["recall_margin"][1]

    if rule == "margin":
        return max(rows, key=_sureness), None
    ok = [r for r in rows if _meets(r, z)]
    if ok:
        return max(ok, key=lambda r: r["ndcg@10"]), None
    recall_ok = [r for r in rows if recall_lower(r) >= 0]
    if recall_ok:
        return max(recall_ok, key=lambda r: r["ild_margin"][0]), (
            f"NO setting meets the target on train (z = {z}); {len(recall_ok)} of {len(rows)} meet the recall "
            "condition, chosen: the largest ILD margin among them")
    return max(rows, key=recall_lower), (
        f"NO setting meets the target on train (z = {z}), not even the recall condition (Recall@100 >= dense - "
        f"0.01); chosen: the largest recall margin of the {len(rows)}")


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = {"mmr": ("MMR (lambda)", "o-"), "knn_anchor": ("kNN-Embed score (anchor_share)", "s-"),
            "knn_interleave": ("kNN-Embed interleave (anchor_share)", "^-"),
            "knn_alpha": ("kNN-Embed a0 (alpha)", "d--"), "knn_tau": ("kNN-Embed a0 (tau)", "v--"),
            "knn_chosen": ("kNN-Embed chosen on train", "rP")}
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    base = res["systems"]["dense"]
    for ax, (x, y) in zip(axes, (("ild@100", "recall@100"), ("ild@10", "ndcg@10"), ("ild@10", "recall@100"))):
        ax.plot(base[x], base[y], "k*", ms=14, label="dense")
        for fam, (label, style) in fams.items():
            pts = sorted((r[x], r[y]) for r in res["systems"].values() if r.get("family") == fam)
            if pts:
                ax.plot(*zip(*pts), style, label=label, ms=10 if fam == "knn_chosen" else 6)
        ax.set_xlabel(x.upper().replace("ILD", "ILD"))
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"SciFact test ({res['n_queries']} queries): relevance vs intra-list diversity")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
