"""A pipeline that learns from judged training queries; the same pipeline as ``learned.yaml``.

``fit(corpus, train=...)`` fine-tunes the dense encoder on the training pairs (multiple-
negatives ranking loss with BM25 and dense hard negatives; the tuned model is cached and
saved with the pipeline), then learns the RRF branch weights of BM25, the tuned dense
retriever and MUVERA multi-vector MaxSim by cross-validated nDCG@10 on the training queries.
Nothing from the evaluated split reaches ``fit``.

    python examples/learned.py [--data DIR] [--split S] [--limit N] [--json]

A full run fine-tunes MiniLM on the 809 SciFact train queries first: 11.5-18.5 min on 2 cores, once
(the tuned model is cached; MUVERA's token vectors and the first dense encoding add minutes on a first
run), then about a minute. Prints nDCG@10 and Recall@100: 0.7362 / 0.9717 on the full SciFact test
split (as ``ragkit eval --pipeline examples/learned.yaml --train-split train``).  Needs the ``train``
extra (``pip install -e '.[train]'``: datasets, accelerate).  ``--limit N`` learns from the first 5 N
train queries only (its own, quicker fine-tuning).  The ragkit calls themselves (``fit`` with
``train``, ``search``, ``evaluate``) are the README's "Using it" snippet and "Train on your own
judgements"; ``_common.run`` makes them (its docstring shows them).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ragkit.pipelines import RRF, Parallel, Pipeline  # noqa: E402
from ragkit.retrievers import BM25, Dense, Muvera  # noqa: E402


def build() -> Pipeline:
    branches = [BM25(k=100), Dense(k=100, adapt={"epochs": 1.0}), Muvera(k=100, candidates=500)]
    return Pipeline([Parallel(branches, fuse=RRF(learn=True))])


if __name__ == "__main__":
    from _common import parse_args, run

    run(build(), parse_args(__doc__), "learned", train_split="train")
