"""alpha-nDCG@10 batched vs the per-query code it replaced (kept as the reference in
``tests/test_batched_eval_prf.py``), and PRF's expanded texts (one join of all words vs one join per query).

Usage::

    python bench/alpha_ndcg.py            # 1k and 10k queries, 20 judged documents each, runs of 100
    python bench/alpha_ndcg.py --quick    # 200 and 1k queries

The data are the reviewer's profile's: a run of 100 documents per query out of 10k, 20 judged documents per
query with one of 3 subtopics each.  Each size is timed old, new, old, new, ... (``--repeats`` rounds; the
median of each) and both must give the same values (to 1e-12).  Prints the times and the ratio old / new;
writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

from _common import REPO, print_machine  # noqa: E402

# the per-query references kept in tests/; appended, and the checkout's root never added: its ragkit/ folder
# (without ragkit.pipelines and the others) would hide a regular (non-editable) install of ragkit
sys.path.append(str(REPO / "tests"))


def _timed(f: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def _data(n_q: int, n_docs: int = 10_000, depth: int = 100, judged: int = 20) -> tuple[Any, dict]:
    from ragkit.run import Run

    rng = np.random.default_rng(0)
    ids = np.array([f"d{i}" for i in range(n_docs)])
    qids = [f"q{i}" for i in range(n_q)]
    docs = [ids[rng.permutation(n_docs)[:depth]] for _ in qids]
    run = Run(qids, docs, [np.linspace(1, 0, depth, dtype=np.float32) for _ in qids])
    step = n_docs // judged
    return run, {q: {f"d{j}": [j % 3] for j in range(0, n_docs, step)} for q in qids}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--repeats", type=int, default=3, help="old/new rounds per size")
    args = ap.parse_args()
    print_machine()
    from test_batched_eval_prf import _ref_alpha_ndcg, _ref_join

    from ragkit.eval.diversity import alpha_ndcg
    from ragkit.pipelines.prf import _join_per_query

    sizes = (200, 1000) if args.quick else (1000, 10_000)
    for n_q in sizes:
        run, sub = _data(n_q)
        old_t, new_t = [], []
        for _ in range(args.repeats):
            t, want = _timed(lambda: _ref_alpha_ndcg(run, sub, k=10))
            old_t.append(t)
            t, got = _timed(lambda: alpha_ndcg(run, sub, k=10))
            new_t.append(t)
            assert list(got) == list(want) and all(abs(got[q] - want[q]) <= 1e-12 for q in want)
        old, new = statistics.median(old_t), statistics.median(new_t)
        print(f"alpha_ndcg@10  {n_q:>6} queries: old {old:.3f} s  new {new:.3f} s  old/new {old / new:.1f}x",
              flush=True)

    rng = np.random.default_rng(1)
    vocab = np.array([f"w{i}" for i in range(5000)], dtype=object)
    for n_q in sizes:
        reps = rng.integers(0, 30, n_q) * (rng.random(n_q) < 0.95)  # ~5% of queries expanded by nothing
        words = vocab[rng.integers(0, len(vocab), int(reps.sum()))]
        queries = [f"query {i}" for i in range(n_q)]
        old_t, new_t = [], []
        for _ in range(args.repeats):
            t, want = _timed(lambda: _ref_join(words, reps, queries))
            old_t.append(t)
            t, got = _timed(lambda: _join_per_query(words, reps, queries))
            new_t.append(t)
            assert got == want
        old, new = statistics.median(old_t), statistics.median(new_t)
        print(f"PRF texts      {n_q:>6} queries: old {old * 1e3:.2f} ms  new {new * 1e3:.2f} ms  "
              f"old/new {old / new:.1f}x", flush=True)


if __name__ == "__main__":
    main()
