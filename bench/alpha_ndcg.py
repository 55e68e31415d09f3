"""alpha-nDCG@10 batched vs the per-query code it replaced (kept as the reference in
``tests/test_batched_eval_prf.py``), and PRF's expanded texts (one join of all words vs one join per query).

Usage::

    python bench/alpha_ndcg.py            # 1k and 10k queries, 20 judged documents each, runs of 100
    python bench/alpha_ndcg.py --quick    # 200 and 1k queries

The data are the reviewer's profile's: a run of 100 documents per query out of 10k, 20 judged documents per
query with one of 3 subtopics each.  Each size: one untimed warm-up call of old and of new, then interleaved
rounds (``_common.interleaved``: each round calls both once, in an order shuffled afresh per round, seeded), at
least ``--repeat`` rounds and until each is timed ``--min-seconds`` in all (0.5 s; 0.05 s with ``--quick``); a
time is the best round's, and the ratio old / new divides the two best times from the same rounds.  The best
calls of both must give the same values (to 1e-12).  Prints the times, the ratio and the rounds; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from _common import REPO, add_timing_args, interleaved_best, print_machine, timing_args  # noqa: E402

# the per-query references kept in tests/; appended, and the checkout's root never added: its ragkit/ folder
# (without ragkit.pipelines and the others) would hide a regular (non-editable) install of ragkit
sys.path.append(str(REPO / "tests"))


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
    add_timing_args(ap, "at least this many interleaved old / new rounds per size (after a warm-up call of each)")
    args = ap.parse_args()
    timing_args(ap, args)
    print_machine()
    from test_batched_eval_prf import _ref_alpha_ndcg, _ref_join

    from ragkit.eval.diversity import alpha_ndcg
    from ragkit.pipelines.prf import _join_per_query

    sizes = (200, 1000) if args.quick else (1000, 10_000)
    for n_q in sizes:
        run, sub = _data(n_q)
        _, best, out, rounds = interleaved_best({"old": lambda: _ref_alpha_ndcg(run, sub, k=10),
                                                 "new": lambda: alpha_ndcg(run, sub, k=10)}, args.repeat,
                                                args.min_seconds)
        want, got = out["old"], out["new"]
        assert list(got) == list(want) and all(abs(got[q] - want[q]) <= 1e-12 for q in want), \
            f"alpha_ndcg@10, {n_q} queries: the batched values differ from the per-query reference's"
        old, new = best["old"], best["new"]
        print(f"alpha_ndcg@10  {n_q:>6} queries: old {old:.3f} s  new {new:.3f} s  old/new {old / new:.1f}x "
              f"(best of {rounds} interleaved rounds each)", flush=True)

    rng = np.random.default_rng(1)
    vocab = np.array([f"w{i}" for i in range(5000)], dtype=object)
    for n_q in sizes:
        reps = rng.integers(0, 30, n_q) * (rng.random(n_q) < 0.95)  # ~5% of queries expanded by nothing
        words = vocab[rng.integers(0, len(vocab), int(reps.sum()))]
        queries = [f"query {i}" for i in range(n_q)]
        _, best, out, rounds = interleaved_best({"old": lambda: _ref_join(words, reps, queries),
                                                 "new": lambda: _join_per_query(words, reps, queries)}, args.repeat,
                                                args.min_seconds)
        assert out["new"] == out["old"], f"PRF texts, {n_q} queries: the joined texts differ from the reference's"
        old, new = best["old"], best["new"]
        print(f"PRF texts      {n_q:>6} queries: old {old * 1e3:.2f} ms  new {new * 1e3:.2f} ms  "
              f"old/new {old / new:.1f}x (best of {rounds} interleaved rounds each)", flush=True)


if __name__ == "__main__":
    main()
