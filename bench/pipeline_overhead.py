"""What the pipeline machinery costs: a 10-operator pipeline of cheap operators against calling
the same operator objects directly, on a batch of queries with 100-document rankings.

    python bench/pipeline_overhead.py [--queries 300] [--repeats 200] [--quick]

Both sides run the same operators on the same input state; the pipeline side adds
``Pipeline._call`` / ``run_step`` (tracing off).  Each repeat times both sides back to back (which goes first
alternates), and the overhead is the median over repeats of that repeat's pipeline / direct ratio, so a burst
of background load slows both sides of each ratio alike (the difference of the two sides' separate medians
swung from +19.7 % to -5.3 % between runs on a loaded machine).  Target: overhead < 5 %.
Writes ``bench/out/pipeline_overhead.json`` (``pipeline_overhead_quick.json`` with ``--quick``; the folder
``RAGKIT_BENCH_OUT`` names instead of bench/out, when set; or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ragkit.filters import RelativeThreshold, ScoreThreshold, TopK
from ragkit.pipelines import Pipeline
from ragkit.types import Ranking, State

from _common import OUT, paired_ratio, print_machine, write_atomic  # noqa: E402


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
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed repeats of each side (default 200; 30 with --quick)")
    ap.add_argument("--quick", action="store_true", help="Smoke run: 30 repeats (unless --repeats says otherwise).")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON file (default bench/out/pipeline_overhead.json, pipeline_overhead_quick.json with "
                         "--quick)")
    args = ap.parse_args()
    if args.out is None:
        args.out = OUT / ("pipeline_overhead_quick.json" if args.quick else "pipeline_overhead.json")
    repeats = args.repeats if args.repeats is not None else (30 if args.quick else 200)
    if repeats < 1 or args.queries < 1:
        ap.error(f"--repeats and --queries: at least 1 each, got {repeats} and {args.queries}")
    machine = print_machine(threads=1)
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
    ratio = paired_ratio(t_pipe, t_direct)  # each repeat's two sides timed back to back
    overhead = 100.0 * (ratio - 1.0)
    print(f"10 operators, {args.queries} queries x 100 docs, {repeats} interleaved repeats")
    print(f"{'variant':<18} {'median ms/batch':>15} {'paired ratio':>13}")
    print(f"{'direct calls':<18} {1000 * md:>15.3f} {1.0:>13.3f}")
    print(f"{'ragkit Pipeline':<18} {1000 * mp:>15.3f} {ratio:>13.3f}")
    print(f"pipeline overhead: {overhead:+.2f} % (median of the {repeats} per-repeat pipeline / direct ratios; target "
          f"< 5 %) -> {'ok' if overhead < 5 else 'ABOVE TARGET'}")
    write_atomic(args.out, json.dumps({
        "quick": args.quick, "queries": args.queries, "operators": len(ops), "repeats": repeats, "direct_ms": 1000 * md,
        "pipeline_ms": 1000 * mp, "overhead_pct": overhead, "median_paired_ratio": ratio,
        "overhead_of_medians_pct": 100.0 * (mp - md) / md,
        "overhead_definition": "100 * (median over repeats of pipeline_s / direct_s, both timed in the repeat - 1)",
        "machine": machine,
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
