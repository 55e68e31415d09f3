"""Cache-Craft chunk-cache reuse on SciFact RAG prompts with SmolLM2-135M (CPU).

Usage::

    python bench/cachecraft.py --queries 20 --warm 8      # writes bench/out/cachecraft.md (the tables), .json and .png
    python bench/cachecraft.py --quick    # smoke run (2 rounds; ~1.4x the CPU time of one round's ~75 s on 2 cores):
                                          # bench/out/cachecraft_quick.*

Prompts: the BM25 top-5 documents (cut to ``--chunk-tokens`` tokens, 200 by default) of SciFact test queries,
with the chat template, built from per-segment token ids.  The chunk store is filled *before* the measured
queries, never from the measured prompts themselves:

* every chunk is captured alone after the system prompt (CacheBlend-style offline caching);
* the ``--warm`` test queries that precede the measured ones are prefilled in full with
  capture, which stores in-context variants (Cache-Craft) of the chunks they share with
  the measured prompts.

Then, per measured prompt and mode: prefill time, share of prompt tokens computed, next-token
KL(full || mode), first-token agreement, greedy agreement up to the first divergence (32
tokens).  A recompute-fraction sweep per selector is plotted to ``<out>.png``; a streaming
pass with a byte budget below the working set (float16 storage) reports hit rate and memory.
Timings are wall clock on whatever CPU runs this; report the machine's load with them.

Timing: after one untimed warm-up prefill per mode (on the last warm prompt), every measured
prompt gets ``--repeat`` rounds; a round runs every timed prefill once (each mode of the table
and each sweep point, ``full`` included), in an order shuffled afresh every round
(``_common.round_orders``, seeded by ``--seed``: the same orders every run), so no mode always runs first, or
always right after the same other one.  A prefill's time is its best over the rounds, per prompt; the table shows the
mean over prompts of those, and every speed-up is full's over the mode's (both best of the same
N).  The prefix mode's repeats start from the prefix cache as it was before the prompt's first
round (its own rows stored by an earlier round are not reused); writes to the chunk store during
the rounds (none expected: every chunk is stored beforehand) are counted and printed.  Quality
(KL, agreement) comes from the first round's prefill of each mode.

``--quick`` runs every part above (each mode, the sweep over every selector, the plot, the
streaming pass) on 3 measured prompts after 1 warm one, chunks cut to 48 tokens, a two-point
sweep (r = 0.3, 1.0), 8 greedy tokens and 2 rounds, so the bench cannot rot unseen; its numbers are not
the README's.  Any flag given explicitly overrides the quick setting.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import OUT, SCIFACT as DATA, atomic_path, print_machine, round_orders, write_atomic  # noqa: E402


def kl(full: torch.Tensor, other: torch.Tensor) -> float:
    lp, lq = torch.log_softmax(full.double(), -1), torch.log_softmax(other.double(), -1)
    return float((lp.exp() * (lp - lq)).sum())


def agree_prefix(a: list[int], ref: list[int], n: int) -> float:
    """The share of the reference answer's first ``n`` greedy tokens (``ref``: full prefill's) that ``a`` repeats
    before it first differs; an ``a`` that stops early (end of sequence) counts its missing tokens as different,
    so the measure does not reward a short answer (it divided by ``a``'s own length before 2026-12-06)."""
    m = 0
    for x, y in zip(a[:n], ref[:n]):
        if x != y:
            break
        m += 1
    return m / max(min(n, len(ref)), 1)


def top5(data_dir: Path, n_queries: int) -> tuple[list[str], list[list[str]]]:
    """The first ``n_queries`` SciFact test queries and their ragkit BM25 top-5 documents ("title. text")."""
    from ragkit.eval.beir import load_beir
    from ragkit.retrievers import BM25

    ds = load_beir(data_dir, download=False)
    queries = ds.queries("test")[:n_queries]
    run = BM25(k=5).fit(ds.corpus).search(queries, k=5)
    rows = [ds.corpus.row_of(list(ids)) for ids in run.doc_ids]
    docs = [[f"{ds.corpus.titles[r]}. {ds.corpus.texts[r]}".strip() for r in rr] for rr in rows]
    return list(queries.texts), docs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 queries after 1 warm one, 48-token chunks, "
                    "r in 0.3,1.0, 8 new tokens; writes bench/out/cachecraft_quick.*")
    ap.add_argument("--queries", type=int, default=None, help="measured test queries (default 8; quick 3)")
    ap.add_argument("--warm", type=int, default=None, help="test queries before them prefilled with capture "
                    "(default 8; quick 1)")
    ap.add_argument("--fractions", default=None, help="recompute-fraction sweep (default 0.1,0.2,0.3,0.5,1.0; "
                    "quick 0.3,1.0)")
    ap.add_argument("--selectors", default="cachecraft,cacheblend,fixed,boundary,random")
    ap.add_argument("--fraction", type=float, default=0.3, help="fraction of the side-by-side cachecraft rows")
    ap.add_argument("--new-tokens", type=int, default=None, help="greedy tokens compared (default 32; quick 8)")
    ap.add_argument("--chunk-tokens", type=int, default=None, help="chunks cut to this many tokens "
                    "(default 200; quick 48)")
    ap.add_argument("--repeat", type=int, default=None, help="rounds per measured prompt; every prefill's time is "
                    "its best over the rounds (default 3; quick 2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="seed of the rounds' shuffled orders (default 0)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=None, help="output stem (default bench/out/cachecraft, "
                    "bench/out/cachecraft_quick with --quick)")
    args = ap.parse_args()
    for name, full, quick in [("queries", 8, 3), ("warm", 8, 1), ("fractions", "0.1,0.2,0.3,0.5,1.0", "0.3,1.0"),
                              ("new_tokens", 32, 8), ("chunk_tokens", 200, 48), ("repeat", 3, 2),
                              ("out", str(OUT / "cachecraft"), str(OUT / "cachecraft_quick"))]:
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    torch.set_num_threads(args.threads)
    machine = print_machine(threads=args.threads)
    from ragkit.caches import ChunkKVCache
    from ragkit.generators.local import LocalGenerator

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    qtexts, docs = top5(Path(args.data), args.warm + args.queries)
    warm_q, warm_d = qtexts[: args.warm], docs[: args.warm]
    eval_q, eval_d = qtexts[args.warm:], docs[args.warm:]

    t0 = time.perf_counter()
    gen = LocalGenerator(max_chunk_tokens=args.chunk_tokens).load()
    print(f"model loaded in {time.perf_counter() - t0:.1f}s; load average {os.getloadavg()}", file=sys.stderr)
    # offline: each chunk alone; warm queries in context
    uniq = sorted({c for ds in docs for c in ds})
    for c in uniq:
        gen.prefill(gen.segments("x", [c]), "full", capture=True)
    for q, ds in zip(warm_q, warm_d):
        gen.prefill(gen.segments(q, ds), "full", capture=True)
        gen.prefill(gen.segments(q, ds), "prefix")  # what a prefix cache would hold by now
    store = gen.chunk_cache
    print(f"store: {len(store)} variants, {store.nbytes / 2**20:.1f} MiB at {time.perf_counter() - t0:.0f}s; "
          f"load average {os.getloadavg()}", file=sys.stderr)

    main_modes = [("full", {}), ("prefix", {}), ("naive", {}), ("naive (no re-rotation)", {"rerotate": False}),
                  ("cacheblend r", {"selector": "cacheblend"}), ("cachecraft r", {"selector": "cachecraft"})]
    fracs = [float(x) for x in args.fractions.split(",")]
    selectors = args.selectors.split(",")

    def mode_of(name: str) -> str:
        return "cachecraft" if name.startswith(("cacheblend", "cachecraft")) else name.split(" ")[0]

    def run(item: tuple, seg):
        """One prefill of a timed item: ``("mode", name, kwargs)`` or ``("sweep", selector, fraction)``.
        ``new_variants=False``: a full recompute of one item must not leave variants that later items of the
        same prompt reuse (the chunk store stays as the warm queries left it)."""
        if item[0] == "mode":
            return gen.prefill(seg, mode_of(item[1]), fraction=args.fraction, new_variants=False, **item[2])
        return gen.prefill(seg, "cachecraft", fraction=item[2], selector=item[1], new_variants=False)

    items = [("mode", name, kw) for name, kw in main_modes] + [("sweep", sel, f) for sel in selectors for f in fracs]
    keys = [it[:2] if it[0] == "mode" else it for it in items]  # hashable
    item_of = dict(zip(keys, items))
    orders = round_orders(keys, seed=args.seed)  # every round's order a fresh shuffle, over prompts and rounds
    # warm-up, untimed: each code path once on the last warm prompt (prefix mode: a full forward, as `full`;
    # without a warm prompt only `full`, on the first measured one, which changes no cache)
    warm_seg = gen.segments(warm_q[-1], warm_d[-1]) if warm_q else gen.segments(eval_q[0], eval_d[0])
    for item in items[:len(main_modes)] if warm_q else items[:1]:
        if item[1] != "prefix":
            run(item, warm_seg)
    store = gen.chunk_cache
    writes = [0]
    put = store.put

    def counted_put(*a, **kw):  # writes to the chunk store during the rounds (a later round could reuse them)
        writes[0] += 1
        return put(*a, **kw)

    store.put = counted_put  # on this instance only
    rows: dict[str, list[dict]] = {}
    sweep: dict[tuple[str, float], list[dict]] = {}
    for qi, (q, ds) in enumerate(zip(eval_q, eval_d)):
        seg = gen.segments(q, ds)
        best = {k: float("inf") for k in keys}
        times: dict = {k: [] for k in keys}
        first: dict = {}
        prefix_before, prefix_runs = copy.deepcopy(gen.prefix_cache), 0
        for _ in range(args.repeat):
            for key in next(orders):
                item = item_of[key]
                if key == ("mode", "prefix"):
                    if prefix_runs:  # not its own rows from an earlier round
                        gen.prefix_cache = copy.deepcopy(prefix_before)
                    prefix_runs += 1
                r = run(item, seg)
                best[key] = min(best[key], r.seconds)
                times[key].append(r.seconds)
                if key not in first:  # quality from the first prefill of each (untimed decode)
                    toks = gen.decode(r, args.new_tokens) if item[0] == "mode" else None
                    first[key] = (r.logits, toks, r.computed_share, r.n_prompt)
        ref_logits, ref_tokens, _, _ = first[("mode", "full")]
        full_best = best[("mode", "full")]
        for key in keys:
            logits, toks, share, n = first[key]
            if key[0] == "mode":
                rows.setdefault(key[1], []).append(dict(
                    t=best[key], share=share, kl=kl(ref_logits, logits), first=float(toks[:1] == ref_tokens[:1]),
                    prefix=agree_prefix(toks, ref_tokens, args.new_tokens), n=n, ts=times[key]))
            else:
                sweep.setdefault(key[1:], []).append(dict(
                    t=best[key], share=share, kl=kl(ref_logits, logits),
                    first=float(int(torch.argmax(logits)) == int(torch.argmax(ref_logits))), full_t=full_best,
                    ts=times[key]))
        print(f"query {qi + 1}/{len(eval_q)} done at {time.perf_counter() - t0:.0f}s ({args.repeat} rounds of "
              f"{len(items)} prefills); load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    del store.put  # the class's method again

    full_t = np.mean([x["t"] for x in rows["full"]])
    lines = [f"SciFact, {len(eval_q)} measured prompts (BM25 top-5, chunks <= {args.chunk_tokens} tokens, "
             f"~{np.mean([x['n'] for x in rows['full']]):.0f} tokens), SmolLM2-135M fp32, {args.threads} threads, "
             f"cachecraft rows at r={args.fraction}",
             f"prefill s: best of {args.repeat} rounds per prompt (every mode and sweep point once per round, in an "
             f"order shuffled afresh every round, seed {args.seed}, after a warm-up), mean over prompts; "
             f"speedup = full's / mode's; "
             f"chunk-store writes during the rounds: {writes[0]}",
             "",
             "| mode | prefill s | speedup | tokens computed | KL vs full (mean / p95) | first token same "
             "| greedy agreement to 1st divergence |",
             "|---|---|---|---|---|---|---|"]
    for name, xs in rows.items():
        t = np.mean([x["t"] for x in xs])
        k = [x["kl"] for x in xs]
        label = name[:-2] + f" {args.fraction:.0%}" if name.endswith(" r") else name
        lines.append(f"| {label} | {t:.2f} | {full_t / t:.1f}x | "
                     f"{np.mean([x['share'] for x in xs]):.0%} | {np.mean(k):.3f} / {np.percentile(k, 95):.3f} | "
                     f"{np.mean([x['first'] for x in xs]):.2f} | {np.mean([x['prefix'] for x in xs]):.2f} |")
    lines += ["", "| selector | r | prefill s | speedup | tokens computed | KL mean | first token same |",
              "|---|---|---|---|---|---|---|"]
    for (sel, f), xs in sweep.items():
        t = np.mean([x["t"] for x in xs])
        lines.append(f"| {sel} | {f:.0%} | {t:.2f} | {np.mean([x['full_t'] for x in xs]) / t:.1f}x | "
                     f"{np.mean([x['share'] for x in xs]):.0%} | {np.mean([x['kl'] for x in xs]):.3f} | "
                     f"{np.mean([x['first'] for x in xs]):.2f} |")

    # streaming pass under a budget smaller than the working set, float16 storage
    per_tok = 2 * gen.model.config.num_hidden_layers * gen.model.config.num_key_value_heads * \
        gen.model.config.head_dim * 2
    eval_chunks = {c for ds in eval_d for c in ds}
    work = sum(len(gen.segments("x", [c]).chunks[0]) for c in eval_chunks) * per_tok
    budget = work // 2
    small = ChunkKVCache(gen.model_id_, gen.tokenizer_id_, budget_bytes=budget, storage_dtype="float16")
    gen.use_cache(small)
    peak, ts = 0, []
    for q, ds in zip(eval_q + eval_q, eval_d + eval_d):  # two passes: popular chunks come back
        r = gen.prefill(gen.segments(q, ds), "cachecraft", fraction=args.fraction, selector="cachecraft")
        peak = max(peak, small.nbytes)
        ts.append(r.seconds)
    st = small.stats
    lines += ["", f"Streaming (2 passes over the measured prompts, cachecraft {args.fraction:.0%}, float16 storage): "
              f"working set {work / 2**20:.1f} MiB (fp16), budget {budget / 2**20:.1f} MiB, "
              f"peak {peak / 2**20:.1f} MiB, "
              f"hit rate {st.hit_rate:.2f} ({st.hits} hits / {st.misses} misses), evictions {st.evictions}, "
              f"recomputed {st.recomputed_tokens} / reused {st.reused_tokens} chunk tokens, "
              f"mean prefill {np.mean(ts):.2f}s"]
    lines.append(f"{time.perf_counter() - t0:.0f}s since the model load began; "
                 f"load average at the end: {os.getloadavg()}")
    text = "\n".join(lines)
    print(text)
    write_atomic(out.with_suffix(".md"), text + "\n")

    def summary(xs: list[dict]) -> dict[str, float]:
        return {k: float(np.mean([x[k] for x in xs])) for k in xs[0] if k not in ("n", "ts")}

    record = {
        "machine": machine,
        "config": {k: getattr(args, k) for k in ("quick", "queries", "warm", "fractions", "selectors", "fraction",
                                                  "new_tokens", "chunk_tokens", "threads", "repeat", "seed")},
        "timing": f"best of {args.repeat} rounds per prompt, order shuffled afresh every round (seed "
                  f"{args.seed}); 'ts' = every round's seconds per prompt",
        "chunk_store_writes_during_rounds": writes[0],
        "prompt_tokens": float(np.mean([x["n"] for x in rows["full"]])),
        "modes": {name: {**summary(xs), "kl_p95": float(np.percentile([x["kl"] for x in xs], 95)),
                         "ts": [x["ts"] for x in xs],
                         "speedup": float(full_t / np.mean([x["t"] for x in xs]))} for name, xs in rows.items()},
        "sweep": [{"selector": sel, "fraction": f, **summary(xs)} for (sel, f), xs in sweep.items()],
        "streaming": {"working_set_bytes": int(work), "budget_bytes": int(budget), "peak_bytes": int(peak),
                      "mean_prefill_s": float(np.mean(ts)), **st.as_dict()},
        "load_average": list(os.getloadavg()),
    }
    write_atomic(out.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    written = [out.with_suffix(".md"), out.with_suffix(".json")]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for sel in selectors:
            xs = [f for f in fracs]
            axes[0].plot(xs, [np.mean([x["kl"] for x in sweep[(sel, f)]]) for f in fracs], "o-", label=sel)
            axes[1].plot(xs, [np.mean([x["full_t"] for x in sweep[(sel, f)]])
                              / np.mean([x["t"] for x in sweep[(sel, f)]])
                              for f in fracs], "o-", label=sel)
        axes[0].set(xlabel="recompute fraction r", ylabel="next-token KL vs full", yscale="log", title="quality")
        axes[1].set(xlabel="recompute fraction r", ylabel="prefill speedup vs full", title="speed")
        axes[0].legend()
        fig.tight_layout()
        with atomic_path(out.with_suffix(".png")) as tmp_png:
            fig.savefig(tmp_png, dpi=120)
        plt.close(fig)
        written.append(out.with_suffix(".png"))
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
    print(f"\nwrote {', '.join(map(str, written))}")


if __name__ == "__main__":
    main()
