"""Relevance filtering on SciFact: Cosine Adapter vs a fixed cosine cut-off, a relative cut-off and top-k.

Usage::

    python bench/filters.py            # full SciFact: train on the 809 train queries, report on the 300 test queries
    python bench/filters.py --quick    # 200 train / 100 test queries

Everything is fitted on SciFact *train* (the adapter's weights and threshold, and each
baseline's cut-off, all chosen for the same target recall on training queries) and
measured on *test*, over the candidates of ``Dense(k=100)`` (all-MiniLM-L6-v2).  Recall is
"recall within the top-100": relevant kept / relevant among the 100 candidates.  Each operating point records
how many test queries its filter learned from or had its cut-off chosen on (``learned_from_test``: the adapters'
``learned_from``, the baselines' training queries), and the bench refuses to report one where that is not 0.

Prints (1) each filter's operating point on test, (2) precision at equal recall read from
the test PR curves of one global threshold on each score (adapter probability, raw cosine,
cosine / top cosine, rank), and each adapter's precision against every baseline score's at the
adapter's own test recall (below 1: that baseline keeps fewer irrelevant documents there),
(3) the adapter's expected calibration error, (4) a
"no-answer" probe: test queries with their relevant documents removed from the candidates
(a good filter keeps little there).  Writes ``bench/out/filters.json`` and
``bench/out/filters_pr.png`` (``_quick`` with ``--quick``; in the folder ``RAGKIT_BENCH_OUT`` names, when set).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from _common import OUT, SCIFACT, atomic_path, best_of, held_out, print_machine, write_atomic  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--k", type=int, default=100, help="dense candidates per query")
    ap.add_argument("--target", type=float, default=0.95, help="target recall (chosen on train) of every filter")
    args = ap.parse_args()
    machine = print_machine()

    from ragkit._flat import flatten
    from ragkit.eval import evaluate, load_beir
    from ragkit.eval.filtering import (
        expected_calibration_error,
        filter_report,
        plot_pr_curves,
        pr_curve,
        precision_at_recall,
        relevance_labels,
    )
    from ragkit.filters import CosineAdapter, RelativeThreshold, ScoreThreshold, TopK
    from ragkit.filters.cosine_adapter import choose_threshold
    from ragkit.retrievers import Dense
    from ragkit.run import Run
    from ragkit.types import State, TrainSet

    ds = load_beir(SCIFACT)
    corpus = ds.corpus
    train_q, test_q = ds.queries("train"), ds.queries("test")
    train_rel, test_rel = ds.qrels("train"), ds.qrels("test")
    if args.quick:
        train_q, test_q = train_q[:200], test_q[:100]
    train = TrainSet(train_q, {q: train_rel[q] for q in train_q.ids if q in train_rel})
    test_rel = {q: test_rel[q] for q in test_q.ids if q in test_rel}

    dense = Dense(k=args.k).fit(corpus)
    up_train = dense(State.of(train_q))
    up_test = dense(State.of(test_q))

    def run_of(state: State) -> Run:
        return Run.from_rankings(state.query_ids, state.rankings, corpus.ids)

    ref_test = run_of(up_test)
    results: dict = {"machine": machine, "config": {"quick": args.quick, "k": args.k, "target_recall": args.target,
                                "train_queries": len(train_q), "test_queries": len(test_q)}}

    # ---------------------------------------------------------------- the variant, chosen on train only
    # fit each on 80% of the training queries; the one with the higher PR-AUC of its probabilities
    # on the other 20% is the bench's (and the operator default's) choice; test is not looked at
    perm = np.random.default_rng(0).permutation(len(train_q))
    hold_i, fit_i = sorted(perm[: len(train_q) // 5].tolist()), sorted(perm[len(train_q) // 5:].tolist())
    fit_set = TrainSet(train_q[fit_i], {q: train.qrels[q] for q in train_q[fit_i].ids if q in train.qrels})
    up_fit, up_hold = up_train.subset(fit_i), up_train.subset(hold_i)
    hold_rel = {q: train.qrels[q] for q in up_hold.query_ids if q in train.qrels}
    h_labels = np.concatenate(relevance_labels(run_of(up_hold), hold_rel))
    _, h_c, h_len, h_st, h_qi = flatten(up_hold.rankings)
    h_qv = dense.query_vectors(up_hold)
    choice, choice_taught = {}, 0
    for lf in (True, False):
        ad = CosineAdapter(target_value=args.target, list_features=lf).fit(corpus, fit_set, upstream=up_fit)
        hp, hr, _ = pr_curve(ad._proba_flat(h_qv, h_c, h_len, h_st, h_qi), h_labels)
        choice[f"list_features={lf}"] = float(np.sum(np.diff(np.r_[0.0, hr]) * hp))
        # each variant checked (held_out refuses one taught on a test query, so the count is 0 when it returns)
        choice_taught += held_out(test_q, f"the variant choice's adapter (list_features={lf})", ad, up_hold)
    chosen_lf = choice["list_features=True"] >= choice["list_features=False"]
    results["choice_on_train"] = {"held_out_train_queries": len(hold_i), "pr_auc": choice,
                                  "chosen": f"list_features={chosen_lf}", "learned_from_test": choice_taught}

    # ---------------------------------------------------------------- fit the adapters (train only)
    adapters = {}
    for label, lf in (("adapter (emb + list feats)", True), ("adapter (emb only, paper)", False)):
        t0 = time.perf_counter()
        ad = CosineAdapter(target_value=args.target, list_features=lf).fit(corpus, train, upstream=up_train)
        adapters[label] = ad
        results.setdefault("fit", {})[label] = {"seconds": time.perf_counter() - t0, **ad.info_}

    # ---------------------------------------------------------------- baselines' cut-offs chosen on train
    tr_labels = np.concatenate(relevance_labels(run_of(up_train), train.qrels)) if len(train_q) else np.zeros(0)
    _, tr_c, tr_len, tr_st, tr_qi = flatten(up_train.rankings)
    tr_top = np.zeros(len(tr_len), np.float32)
    tr_top[tr_len > 0] = tr_c[tr_st[tr_len > 0]]
    tr_rank = np.arange(len(tr_c)) - tr_st[tr_qi]
    t_cos = choose_threshold(tr_c, tr_labels, "recall", args.target)
    alpha = choose_threshold(tr_c / tr_top[tr_qi], tr_labels, "recall", args.target)
    k_cut = int(round(-choose_threshold(-tr_rank.astype(float), tr_labels, "recall", args.target))) + 1
    filters = {
        **adapters,
        f"cosine >= {t_cos:.3f}": ScoreThreshold(threshold=t_cos),
        f"cosine >= {alpha:.3f} x top": RelativeThreshold(alpha=min(alpha, 1.0)),
        f"top-{k_cut}": TopK(k=k_cut),
    }
    # the adapters learned from train (their fit records it), the baselines' cut-offs were chosen on up_train
    taught = {name: held_out(test_q, name, op, *([] if name in adapters else [up_train]))
              for name, op in filters.items()}
    rows = {}
    for name, op in filters.items():
        op(up_test.copy())  # warm-up (untimed)
        dt, st = best_of(lambda: op(up_test.copy()), 3)  # ms/q: the best of 3 calls, not one cold call
        rep = filter_report(run_of(st), test_rel, reference=ref_test).to_dict()
        rep["ms_per_query"] = 1000 * dt / max(1, len(test_q))
        rep["learned_from_test"] = taught[name]
        rows[name] = rep
    results["operating_points"] = rows

    # ---------------------------------------------------------------- PR curves on test
    te_labels = np.concatenate(relevance_labels(ref_test, test_rel))
    _, te_c, te_len, te_st, te_qi = flatten(up_test.rankings)
    te_top = np.zeros(len(te_len), np.float32)
    te_top[te_len > 0] = te_c[te_st[te_len > 0]]
    te_rank = np.arange(len(te_c)) - te_st[te_qi]
    qv = dense.query_vectors(up_test)
    scores = {"raw cosine": te_c, "cosine / top cosine": te_c / te_top[te_qi], "rank (top-k)": -te_rank.astype(float)}
    for name, ad in adapters.items():
        scores[name] = ad._proba_flat(qv, te_c, te_len, te_st, te_qi)
    n_rel = int(te_labels.sum())
    curves, par = {}, {}
    for name, s in scores.items():
        p, r, _ = pr_curve(s, te_labels, n_rel)
        curves[name] = (r, p)
        ap_ = float(np.sum(np.diff(np.r_[0.0, r]) * p))
        par[name] = {"pr_auc": ap_,
                     **{f"p@r{int(t * 100)}": precision_at_recall(p, r, t) for t in (0.5, 0.8, 0.9, 0.95)}}
    results["pr"] = par
    results["ece"] = {name: expected_calibration_error(scores[name], te_labels) for name in adapters}

    # ---------------------------------------------------------------- no-answer probe
    probe = []
    for qid, r in zip(up_test.query_ids, up_test.rankings):
        rel = test_rel.get(qid, {})
        bad = np.isin(corpus.ids[r.rows], [d for d, v in rel.items() if v > 0])
        probe.append(r.take(np.nonzero(~bad)[0]))
    probe_state = up_test.copy()
    probe_state.rankings = probe
    results["no_answer"] = {}
    for name, op in filters.items():
        st = op(probe_state.copy())
        kept = np.array([len(r) for r in st.rankings])
        results["no_answer"][name] = {"mean_kept": float(kept.mean()), "empty": float(np.mean(kept == 0))}

    # ---------------------------------------------------------------- nDCG after the train-chosen adapter
    # (it cuts lists, never reorders them: nDCG@10 moves only where it leaves fewer than 10)
    ad0 = adapters["adapter (emb + list feats)" if chosen_lf else "adapter (emb only, paper)"]
    results["ndcg@10"] = {"dense": evaluate(ref_test, test_rel, ["ndcg@10"])["ndcg@10"],
                          "dense | adapter": evaluate(run_of(ad0(up_test.copy())), test_rel, ["ndcg@10"])["ndcg@10"]}

    # ---------------------------------------------------------------- print
    print(f"\nSciFact: trained on {len(train_q)} train queries, measured on {len(test_q)} test queries; "
          f"Dense(k={args.k}) MiniLM candidates; every cut-off chosen on train for recall {args.target}")
    print(f"variant chosen on train (PR-AUC on {len(hold_i)} held-out train queries, fitted on the others): "
          + ", ".join(f"{k} {v:.4f}" for k, v in choice.items()) + f" -> list_features={chosen_lf}")
    base = rows[f"cosine >= {t_cos:.3f}"]
    print("\nms/q: each filter over the test candidates, the best of 3 calls after a warm-up call")
    print(f"{'filter':34s} {'precision':>9s} {'recall':>7s} {'kept/q':>7s} {'empty':>6s} "
          f"{'P ratio':>8s} {'ms/q':>6s}")
    for name, rep in rows.items():
        print(f"{name:34s} {rep['precision']:9.4f} {rep['recall']:7.4f} {rep['mean_kept']:7.2f} {rep['empty']:6.3f} "
              f"{rep['precision'] / base['precision']:8.2f} {rep['ms_per_query']:6.2f}")
    print("\nPR curves of one global threshold on test (precision at recall R):")
    print(f"{'score':34s} {'PR-AUC':>7s} {'P@R50':>7s} {'P@R80':>7s} {'P@R90':>7s} {'P@R95':>7s}")
    for name, d in par.items():
        print(f"{name:34s} {d['pr_auc']:7.4f} {d['p@r50']:7.4f} {d['p@r80']:7.4f} {d['p@r90']:7.4f} {d['p@r95']:7.4f}")
    baselines = [n for n in curves if n not in adapters]  # raw cosine, cosine / top cosine, rank (top-k)
    print("\nat equal recall (each adapter's test recall): its precision at its train-chosen cut against one global "
          "cut on each baseline score, chosen on test (adapter / baseline: below 1, that baseline is the better "
          "filter there):")
    for name in adapters:
        a_rec, a_p = rows[name]["recall"], rows[name]["precision"]
        base_p = {b: precision_at_recall(curves[b][1], curves[b][0], a_rec) for b in baselines}
        ratio = {b: a_p / p if p > 0 else None for b, p in base_p.items()}
        best = max(base_p, key=base_p.get)
        own = precision_at_recall(curves[name][1], curves[name][0], a_rec)  # like for like: its own global cut
        print(f"  recall {a_rec:.4f}: {name} precision {a_p:.4f} (its own curve there {own:.4f}) vs "
              + ", ".join(f"{b} {p:.4f} (x{ratio[b]:.2f})" if ratio[b] is not None else f"{b} {p:.4f}"
                          for b, p in base_p.items())
              + ("; it beats every baseline" if a_p > base_p[best] else f"; best there: {best}"))
        results.setdefault("equal_recall", {})[name] = {
            "recall": a_rec, "adapter_precision": a_p, "adapter_curve_precision": own,
            "cosine_precision": base_p["raw cosine"],
            "baseline_precision": base_p, "adapter_over_baseline": ratio, "best_baseline": best,
            "beats_every_baseline": bool(a_p > base_p[best])}
    print("\nECE (15 bins) of adapter probabilities on test candidates:",
          ", ".join(f"{n}: {v:.4f}" for n, v in results["ece"].items()))
    print("\nno-answer probe (relevant documents removed from the test candidates):")
    for name, d in results["no_answer"].items():
        print(f"  {name:34s} kept/q {d['mean_kept']:7.2f}  empty {d['empty']:.3f}")
    print(f"\nnDCG@10: dense {results['ndcg@10']['dense']:.4f}, "
          f"dense | adapter {results['ndcg@10']['dense | adapter']:.4f}")
    for name, info in results["fit"].items():
        print(f"fit {name}: {info['seconds']:.1f} s, {info['iterations']} L-BFGS iterations, "
              f"threshold {info['threshold']:.4f}")
    print(f"test queries learned from: 0 for each of the {len(rows)} filters and the variant choice "
          f"(fitted and cut on {len(train_q)} train queries)")

    suffix = "_quick" if args.quick else ""
    png = OUT / f"filters_pr{suffix}.png"
    with atomic_path(png) as tmp_png:  # drawn aside, then moved in place: never half-written
        plot_pr_curves({n: curves[n] for n in curves}, tmp_png,
                       points={f"{n} @ train-chosen cut": (rows[n]["recall"], rows[n]["precision"]) for n in rows},
                       title=f"SciFact test, Dense top-{args.k} candidates (trained on train)")
    write_atomic(OUT / f"filters{suffix}.json", json.dumps(results, indent=2, default=float))
    print(f"\nwrote {OUT / f'filters{suffix}.json'} and {png}")


if __name__ == "__main__":
    main()
