"""Shared command line of the example scripts: ``--data``, ``--limit``, evaluation and printing."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "beir" / "scifact"


def parse_args(description: str | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR folder (default: SciFact).")
    ap.add_argument("--split", default="test", help="Split to evaluate (default test).")
    ap.add_argument("--limit", type=int, default=None,
                    help="Use only the first N queries and a small corpus slice (their relevant documents "
                         "plus the first 200) for a quick run.")
    ap.add_argument("--json", action="store_true", help="Print the metrics as one JSON line.")
    return ap.parse_args()


def load(args: argparse.Namespace, train_split: str | None = None):
    """``(corpus, queries, qrels, train)``, sliced when ``--limit`` is given.

    ``train`` is the :class:`~ragkit.types.TrainSet` of ``train_split`` (``None`` without one);
    with ``--limit N`` it keeps the first ``5 N`` training queries, and the slice keeps their
    relevant documents too.
    """
    from ragkit import load_beir
    from ragkit.types import TrainSet

    if train_split is not None and train_split == args.split:  # as `ragkit eval --train-split` refuses it
        raise SystemExit(f"--split {args.split!r} is the split this example learns from; training on the "
                         "evaluated queries is refused: evaluate another split (default: test)")
    ds = load_beir(args.data)
    queries, qrels = ds.queries(args.split), ds.qrels(args.split)
    train = ds.train_set(train_split) if train_split else None
    corpus = ds.corpus
    if args.limit is not None:
        queries = queries[: args.limit]
        rel = {d for q in queries.ids for d in qrels.get(q, {})}
        if train is not None:
            tq = train.queries[: 5 * args.limit]
            train = TrainSet(tq, {q: train.qrels[q] for q in tq.ids})
            rel |= {d for q in tq.ids for d in train.qrels[q]}
        rows = sorted(set(range(min(200, len(corpus)))) | set(corpus.row_of(rel, missing="drop").tolist()))
        corpus = corpus.subset(np.array(rows))
    qrels = {q: qrels[q] for q in queries.ids if q in qrels}
    return corpus, queries, qrels, train


def run(pipe, args: argparse.Namespace, name: str, train_split: str | None = None) -> dict:
    """Fit (learning from ``train_split`` if given), search, evaluate and print one pipeline; returns the metrics."""
    from ragkit import evaluate

    corpus, queries, qrels, train = load(args, train_split)
    t0 = time.perf_counter()
    pipe.fit(corpus, train)
    t_fit = time.perf_counter() - t0
    result = pipe.search(queries)
    scores = evaluate(result, qrels, ["ndcg@10", "recall@100"]).scores
    out = {"example": name, "queries": len(queries), "docs": len(corpus), **scores,
           "fit_s": round(t_fit, 3), "search_s": round(result.seconds or 0.0, 3)}
    return emit(out, args, f"recall@100 {scores['recall@100']:.4f}  (fit {t_fit:.1f} s, search {result.seconds:.2f} s)")


def emit(out: dict, args: argparse.Namespace, details: str) -> dict:
    """Print an example's result: one JSON line with ``--json`` (what the tests read), else a summary line."""
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['example']}: {out['queries']} queries, {out['docs']} docs  "
              f"nDCG@10 {out['ndcg@10']:.4f}  {details}")
    return out
