"""Learning from the training split: the best fitted pipeline on SciFact and its ablations.

Usage::

    python bench/quality.py            # full SciFact: fits on train, reports on test
    python bench/quality.py --quick    # a 600-document slice with the quick queries' relevant documents added

Every pipeline is fitted with ``pipeline.fit(corpus, train=<train split>)`` and evaluated
on the 300 test queries (nDCG@10 and Recall@100 from one run each).  The learned parts:

* the encoder fine-tuned on the train pairs (``dense: {adapt: {...}}``; the tuned model is
  cached by training data and settings, so a rerun does not train again), used by the dense
  branch and, with the same settings, for the MaxSim branch's token vectors;
* RRF branch weights chosen by cross-validated grid search on the train queries.

Ablations remove one part at a time.  A paired randomisation test compares the best
learned pipeline with the best unlearned one over the test queries.  Nothing from the
test split reaches ``fit``: each row records how many test queries its fitted pipeline learned from
(``learned_from_test``, from ``Pipeline.learned_from``), and the bench refuses to report a row where that is
not 0.  Writes ``bench/out/quality.json`` (``quality_quick.json`` with ``--quick``; in the
folder ``RAGKIT_BENCH_OUT`` names, when set).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from _common import OUT, SCIFACT, held_out, print_machine, write_atomic  # noqa: E402

BM25 = {"bm25": {}}
DENSE = {"dense": {}}
ADAPT = {"epochs": 1.0}
TUNED = {"dense": {"adapt": ADAPT}}
MAXSIM = {"muvera": {"candidates": 500}}
TUNED_MAXSIM = {"muvera": {"candidates": 500, "adapt": ADAPT}}   # same settings: the same tuned model


def parallel(branches: list[dict], learn: bool) -> dict:
    fuse = {"rrf": {"learn": True}} if learn else {"rrf": {"k": 60}}
    return {"pipeline": [{"parallel": {"branches": branches, "fuse": fuse}}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SCIFACT),
                    help="BEIR folder (default: SciFact: RAGKIT_SCIFACT, or ../shared/data/beir/scifact)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run, no fine-tuning: 30 test and 60 train queries over the first 600 documents plus "
                         "every document relevant to those queries, so each query's relevant documents are always "
                         "in the small corpus and nDCG@10 reads far higher than a full run's (not comparable)")
    ap.add_argument("--no-maxsim", action="store_true", help="leave out the token-level MaxSim branch")
    args = ap.parse_args()
    machine = print_machine()

    from ragkit import evaluate, load_beir
    from ragkit.eval import paired_randomization_test
    from ragkit.pipelines import Pipeline
    from ragkit.types import TrainSet

    ds = load_beir(args.data)
    corpus, train = ds.corpus, ds.train_set("train")
    queries, qrels = ds.queries("test"), ds.qrels("test")
    if args.quick:
        keep = ({d for q in queries.ids[:30] for d in qrels[q]}
                | {d for q in train.queries.ids[:60] for d in train.qrels[q]})
        rows = sorted(set(range(600)) | set(corpus.row_of(keep).tolist()))
        corpus = corpus.subset(np.array(rows))
        queries = queries[:30]
        qrels = {q: qrels[q] for q in queries.ids}
        tq = train.queries[:60]
        train = TrainSet(tq, {q: train.qrels[q] for q in tq.ids})
    # --quick fine-tunes nothing: the "fine-tuned" rows then run the base model (said in the printout)
    tuned = DENSE if args.quick else TUNED
    tuned_ms = MAXSIM if args.quick else TUNED_MAXSIM
    if args.quick:
        print("--quick: no fine-tuning; the 'fine-tuned' rows below run the base MiniLM (smoke run only)")
    maxsim = [] if args.no_maxsim else [MAXSIM]
    tmaxsim = [] if args.no_maxsim else [tuned_ms]
    systems: dict[str, dict] = {
        "BM25": {"pipeline": [BM25]},
        "MiniLM dense": {"pipeline": [DENSE]},
        **({} if args.no_maxsim else {"MaxSim (MUVERA + exact rerank)": {"pipeline": [MAXSIM]}}),
        "RRF(BM25, dense, MaxSim), unlearned": parallel([BM25, DENSE, *maxsim], learn=False),
        "dense, fine-tuned on train": {"pipeline": [tuned]},
        **({} if args.no_maxsim else {"MaxSim over the fine-tuned model's tokens": {"pipeline": [tuned_ms]}}),
        "LEARNED: RRF(BM25, tuned dense, tuned MaxSim), learned weights": parallel([BM25, tuned, *tmaxsim], learn=True),
        "  - without learned weights (RRF k=60)": parallel([BM25, tuned, *tmaxsim], learn=False),
        "  - without fine-tuning (base dense and MaxSim)": parallel([BM25, DENSE, *maxsim], learn=True),
        **({} if args.no_maxsim else {"  - MaxSim on base tokens (dense tuned only)":
                                      parallel([BM25, tuned, *maxsim], learn=True)}),
        "  - without BM25": parallel([tuned, *tmaxsim], learn=True),
        **({} if args.no_maxsim else {"  - without MaxSim": parallel([BM25, tuned], learn=True)}),
        "  - without dense": parallel([BM25, *tmaxsim], learn=True),
    }
    results: dict[str, dict] = {}
    per_query: dict[str, dict[str, float]] = {}
    for name, spec in systems.items():
        t0 = time.perf_counter()
        pipe = Pipeline.from_yaml(spec).fit(corpus, train)
        t_fit = time.perf_counter() - t0
        taught = held_out(queries, name.strip(), pipe)  # 0, or it refuses: scores on taught queries are not held out
        res = evaluate(pipe.search(queries), qrels, ["ndcg@10", "recall@100"])
        learned = [getattr(leaf, "learned_", None) for leaf in _leaves(pipe)]
        results[name] = {**res.scores, "fit_s": t_fit, "learned": [x for x in learned if x],
                         "learned_from_test": taught}
        per_query[name] = res.per_query["ndcg@10"]
        print(f"{name:62s} nDCG@10 {res.scores['ndcg@10']:.4f}  R@100 {res.scores['recall@100']:.4f}  "
              f"(fit {t_fit:.0f} s)", flush=True)
    learned_names = [n for n in results if n.startswith("LEARNED")]
    unlearned = [n for n in results if not n.startswith(("LEARNED", "  -", "dense, fine", "MaxSim over the fine"))]
    best_l = max(learned_names, key=lambda n: results[n]["ndcg@10"])
    best_u = max(unlearned, key=lambda n: results[n]["ndcg@10"])
    p = paired_randomization_test(per_query[best_l], per_query[best_u])
    print(f"\ntest queries learned from: 0 in each of the {len(results)} fitted pipelines (fitted on "
          f"{len(train.queries)} train queries)")
    print(f"best learned {results[best_l]['ndcg@10']:.4f} vs best unlearned ({best_u.strip()}) "
          f"{results[best_u]['ndcg@10']:.4f}: paired randomisation test p = {p:.4f} over {len(queries)} test queries")
    path = write_atomic(OUT / ("quality_quick.json" if args.quick else "quality.json"), json.dumps(
        {"machine": machine, "results": results, "best_learned": best_l, "best_unlearned": best_u, "p_value": p},
        indent=2, default=str))
    print(f"wrote {path}")


def _leaves(pipe):
    from ragkit.pipelines._compose import iter_leaves

    return list(iter_leaves(pipe))


if __name__ == "__main__":
    main()
