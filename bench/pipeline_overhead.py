"""What the pipeline machinery costs: a 10-operator pipeline of cheap operators against calling
the same operator objects directly, on a batch of queries with 100-document rankings.

    python bench/pipeline_overhead.py [--queries 300] [--repeats 200] [--quick]

Both sides run the same operators on the same input state; the pipeline side adds
``Pipeline._call`` / ``run_step`` (tracing off).  Timings are interleaved and the median
is reported, so background load hits both sides alike.  Target: overhead < 5 %.
Writes ``bench/out/pipeline_overhead.json`` (``pipeline_overhead_quick.json`` with ``--quick``; the folder
``RAGKIT_BENCH_OUT`` names instead of bench/out, when set; or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from ragkit.filters import RelativeThreshold, ScoreThreshold, TopK
from ragkit.pipelines import Pipeline
from ragkit.types import Ranking, State

from _common import OUT, write_atomic  # noqa: E402


def operators() -> list:
    """Ten cheap steps (cuts and thresholds): what is measured is the machinery around them.  (Routers
    and judges were steps here until a pipeline refused them outside a route / a loop.)"""
    return [
        TopK(k=100), ScoreThreshold(threshold=0.01), TopK(k=80), RelativeThreshold(alpha=0.001), TopK(k=60),
        ScoreThreshold(threshold=0.005), TopK(k=40), RelativeThreshold(alpha=0.0005), TopK(k=30), TopK(k=20),
    ]


def make_state(n_q: int, depth: int = 100, seed: int = 0) -> State:
    rng = np.random.default_rng(seed)
    words = np.array("cell gene protein cancer risk expression patients mutation therapy dose".split())
    queries = [" ".join(rng.choice(words, size=int(rng.integers(3, 15)))) for _ in range(n_q)]
    rankings = []
    for _ in range(n_q):
        rows = rng.choice(5000, size=depth, replace=False)
        rankings.append(Ranking(rows, np.sort(rng.random(depth).astype(np.float32))[::-1]))
    return State(queries, rankings=rankings)


def direct(ops, state: State) -> State:
    for op in ops:
        state = op(state)
    return state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="Smoke run: 30 repeats.")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON file (default bench/out/pipeline_overhead.json, pipeline_overhead_quick.json with "
                         "--quick)")
    args = ap.parse_args()
    if args.out is None:
        args.out = OUT / ("pipeline_overhead_quick.json" if args.quick else "pipeline_overhead.json")
    repeats = 30 if args.quick else args.repeats
    ops = operators()
    pipe = Pipeline(ops)
    state = make_state(args.queries)
    a, b = direct(ops, state), pipe(state)  # warm-up, and the two sides agree
    assert all(x.equals(y) for x, y in zip(a.rankings, b.rankings)) and a.values.keys() == b.values.keys()
    t_direct, t_pipe = [], []
    for i in range(repeats):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for side in order:
            t0 = time.perf_counter()
            direct(ops, state) if side == 0 else pipe(state)
            (t_direct if side == 0 else t_pipe).append(time.perf_counter() - t0)
    md, mp = float(np.median(t_direct)), float(np.median(t_pipe))
    overhead = 100.0 * (mp - md) / md
    rows = [("direct calls", md), ("ragkit Pipeline", mp)]
    print(f"10 operators, {args.queries} queries x 100 docs, {repeats} interleaved repeats (median)")
    print(f"{'variant':<18} {'ms/batch':>10} {'ratio':>8}")
    for name, t in rows:
        print(f"{name:<18} {1000 * t:>10.3f} {t / md:>8.3f}")
    print(f"pipeline overhead: {overhead:+.2f} % (target < 5 %) -> {'ok' if overhead < 5 else 'ABOVE TARGET'}")
    write_atomic(args.out, json.dumps({
        "quick": args.quick, "queries": args.queries, "operators": len(ops), "repeats": repeats, "direct_ms": 1000 * md,
        "pipeline_ms": 1000 * mp, "overhead_pct": overhead, "machine": platform.platform(),
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
