"""MUVERA benchmark: FDE candidates + exact MaxSim rerank against brute-force MaxSim on SciFact.

Usage::

    python bench/muvera.py                  # full SciFact (5,183 docs, 300 test queries)
    python bench/muvera.py --quick          # ~230-doc slice, 30 queries (smoke run): muvera_quick.json / .png
    python bench/muvera.py --configs 5x16x20,4x16x10 --candidates 50,100,200,500

A config ``KxPxR`` is ``k_sim x d_proj x r_reps`` (FDE size ``R * 2**K * P``); ``P = id`` is the
identity projection (``R * 2**K * 384``); a ``+mW`` suffix adds the mean channel with weight ``W``
(384 more dims; ``FDEConfig.mean_weight``); a ``+pC`` suffix prunes: the FDE top ``--shortlist``
are ranked by centroid interaction over a ``C``-centroid token codebook (PLAID;
``Muvera(prune=..., centroids=C)``) and only the best ``--keep`` go to the exact rerank.
Measured in one run, on the same L2-normalised
all-MiniLM-L6-v2 token vectors (special tokens kept, padding dropped, 256 max):

* the main config (``--main auto``) is chosen on SciFact *train* queries, never on test:
  exact Chamfer top-10 of ``--select-queries`` train queries; per config the fewest
  candidates (documents reranked exactly) that contain them with confidence (mean Chamfer
  recall minus ``--z`` standard errors >= ``--target``), and of those the fastest on the same
  train queries (FDE search [+ centroid interaction] + exact rerank) wins;

* brute-force exact MaxSim over the whole corpus (``chamfer_scores``): latency and ranking;
* per FDE config: document-FDE build time, correlation of FDE inner product with exact
  Chamfer (Pearson over all query-document pairs, and mean per-query Spearman), and per
  ``candidates``: top-10 agreement with exact (mean |top10 ∩ exact top10| / 10), Chamfer
  recall (exact top-10 found among the candidates), nDCG@10, latency per query of the whole
  MUVERA path (query FDEs + FDE inner products + top-c [+ centroid interaction] + batched
  exact rerank and sort, what ``Muvera.search`` computes) timed as one call, and the speed-up
  over the brute force (exact scores + top 10, one call): ``--repeat`` rounds each call the brute
  force and every row's path once (order shuffled per round, seeded), each timing is its best round, so every
  speed-up divides two timings from the same rounds; the per-stage times inside the fastest run
  are printed and saved as information only;
* nDCG@10 of exact MaxSim, MUVERA+rerank (the ``Muvera`` operator with the main config and its
  chosen candidate count; below 100 unpruned candidates also the 100-candidate row of earlier
  runs, labelled so), single-vector MiniLM (``dense``), BM25, and MUVERA fused with BM25 (RRF
  via ``ragkit.pipelines``);
* memory per document of token vectors and FDEs (f32, f16, int8).

Query encoding (the transformer forward) is the same for both and reported separately.
Writes ``bench/out/muvera.json`` and ``bench/out/muvera.png`` (``muvera_quick.json`` and ``muvera_quick.png``
with ``--quick``; in the folder ``RAGKIT_BENCH_OUT`` names instead of bench/out, when set).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from functools import partial

# BLAS / torch threads, set before numpy loads (``--threads N``, default 1): on a shared,
# oversubscribed machine a 2-thread OpenBLAS call pays ~0.3 s of thread hand-off per GEMM.
_THREADS = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")),
                sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _THREADS

import numpy as np  # noqa: E402

from _common import OUT, SCIFACT, interleaved, interleaved_best, print_machine, write_atomic  # noqa: E402


def _data(quick: bool, n_docs: int, n_queries: int):
    from ragkit import load_beir

    ds = load_beir(SCIFACT)
    queries, qrels = ds.queries("test"), ds.qrels("test")
    corpus = ds.corpus
    if quick:
        queries = queries[:n_queries]
        rel = {d for q in queries.ids for d in qrels.get(q, {})}
        rows = sorted(set(range(n_docs)) | set(corpus.row_of(rel, missing="drop").tolist()))
        corpus = corpus.subset(np.array(rows))
    qrels = {q: qrels[q] for q in queries.ids if q in qrels}
    return corpus, queries, qrels


def _ndcg(rows: np.ndarray, scores: np.ndarray, queries, corpus, qrels, per_query: bool = False):
    """nDCG@10 of the rankings ``rows`` (best first): the mean, or with ``per_query`` one value per
    judged query, in ``queries`` order (so two systems' arrays pair up)."""
    from ragkit.eval import evaluate
    from ragkit.run import Run
    from ragkit.types import Ranking

    rankings = [Ranking(r[r >= 0], s[r >= 0]) for r, s in zip(rows, scores)]
    res = evaluate(Run.from_rankings(queries.ids, rankings, corpus.ids), qrels, ["ndcg@10"])
    if not per_query:
        return float(res.scores["ndcg@10"])
    pq = res.per_query["ndcg@10"]
    return np.array([pq[q] for q in queries.ids if q in pq])


def _reranked(qd: np.ndarray, q_off: np.ndarray, docs, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact Chamfer rerank of the candidate ``rows``: ``(rows, scores)`` best first (ties: lower row)."""
    from ragkit.retrievers.fde import chamfer_pairs

    sc = chamfer_pairs(qd, q_off, docs.data, docs.offsets, rows)
    order = np.lexsort((rows, -sc), axis=1)
    return np.take_along_axis(rows, order, 1), np.take_along_axis(sc, order, 1)


def _carving_rerank(qd: np.ndarray, q_off: np.ndarray, rows: np.ndarray, carved: tuple, carved_rows: np.ndarray,
                    docs, repeat: int) -> tuple[dict[str, float], np.ndarray, int]:
    """The exact Chamfer rerank of ``carved_rows`` with the ball-carved query tokens ``carved`` (``ball_carve``'s
    ``(tokens, offsets, weights)``) and of ``rows`` with the query tokens ``qd`` / ``q_off`` (without carving),
    each called once (warm-up, untimed), then timed in the same :func:`_common.interleaved` rounds (at least
    ``repeat``, order shuffled per round), so the two rerank times printed side by side come from the same rounds.
    Returns ``(best seconds {"carved", "uncarved"}, the carved rerank's scores (n_q, c), rounds)``."""
    from ragkit.retrievers.fde import chamfer_pairs

    cd, co, cw = carved
    calls = {"carved": partial(chamfer_pairs, cd, co, docs.data, docs.offsets, carved_rows, q_weights=cw),
             "uncarved": partial(chamfer_pairs, qd, q_off, docs.data, docs.offsets, rows)}
    _, best, out, rounds = interleaved_best(calls, repeat)
    return best, out["carved"], rounds


def _muvera_path(spec: str, cfg, dfde: np.ndarray, short: "Shortlist", qd: np.ndarray, q_off: np.ndarray,
                 docs, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """One MUVERA search of all queries, as ``Muvera.search`` computes it: query FDEs, FDE inner products
    against the document FDEs ``dfde`` ``(n_docs, dim)``, the ``c`` candidates (FDE top ``c``, or for a
    ``+pC`` config the centroid top ``c`` of the FDE shortlist), exact Chamfer rerank and sort.

    Returns ``(candidate rows (n_q, c), reranked rows (n_q, c), their scores (n_q, c), stage seconds)``;
    the stage seconds (``query_fde``, ``inner_products``, ``top_c``, ``rerank``) are wall clock inside
    this call, for information (the timing that counts is the whole call's)."""
    from ragkit.retrievers.fde import fde_queries

    t = [time.perf_counter()]
    qfde = fde_queries(qd, q_off, cfg)
    t.append(time.perf_counter())
    ip = qfde @ dfde.T
    t.append(time.perf_counter())
    rows = short.rows(spec, ip, qd, q_off, c)
    t.append(time.perf_counter())
    rr, rs = _reranked(qd, q_off, docs, rows)
    t.append(time.perf_counter())
    return rows, rr, rs, dict(zip(("query_fde", "inner_products", "top_c", "rerank"), np.diff(t).tolist()))


def _agreement(a: np.ndarray, b: np.ndarray, per_query: bool = False):
    """Mean |a_i ∩ b_i| / |b_i| over rows (b = exact top-k); the per-row values with ``per_query``."""
    hits = (a[:, :, None] == b[:, None, :]).any(1).sum(1) / b.shape[1]
    return hits if per_query else float(np.mean(hits))


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> float:
    rx = np.argsort(np.argsort(x, 1), 1).astype(np.float64)
    ry = np.argsort(np.argsort(y, 1), 1).astype(np.float64)
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    return float(np.mean((rx * ry).sum(1) / np.sqrt((rx**2).sum(1) * (ry**2).sum(1))))


def _config(spec: str, seed: int) -> dict:
    """``KxPxR[+mW][+pC]`` -> FDEConfig / Muvera keyword arguments (``P = id``: identity projection;
    ``+mW``: mean channel of weight ``W``; ``+pC`` is read by :func:`_prune`)."""
    spec = spec.split("+p")[0]
    spec, _, mean = spec.partition("+m")
    k_sim, d_proj, r_reps = spec.split("x")
    kw = {"k_sim": int(k_sim), "r_reps": int(r_reps), "seed": seed, "mean_weight": float(mean or 0)}
    if d_proj == "id":
        kw.update(projection="identity")
    else:
        kw.update(d_proj=int(d_proj))
    return kw


def _prune(spec: str) -> int | None:
    """Codebook size of a ``+pC`` config (centroid-interaction pruning), else None."""
    return int(spec.split("+p")[1]) if "+p" in spec else None


class Shortlist:
    """The documents each config sends to the exact rerank: the FDE top ``c``, or for a ``+pC``
    config the centroid-interaction top ``c`` of the FDE top ``shortlist`` (``Muvera(prune=c)``)."""

    def __init__(self, docs, shortlist: int, seed: int):
        self.docs, self.shortlist, self.seed = docs, shortlist, seed
        self.books: dict[int, tuple] = {}
        self.build_s: dict[int, float] = {}

    def book(self, n_centroids: int) -> tuple:
        """(codebook, code data, code offsets) for ``n_centroids``, built once (timed)."""
        from ragkit.retrievers.centroids import build_codes

        if n_centroids not in self.books:  # no cache key: the build is what is timed
            t0 = time.perf_counter()
            self.books[n_centroids] = build_codes(self.docs.data, self.docs.offsets, n_centroids, seed=self.seed)
            self.build_s[n_centroids] = time.perf_counter() - t0
        return self.books[n_centroids]

    def ranked(self, spec: str, ip: np.ndarray, qd: np.ndarray, q_off: np.ndarray,
               q_w: np.ndarray | None = None) -> np.ndarray:
        """Candidates best first, as many as any ``c`` needs: FDE order, or centroid order of the shortlist."""
        from ragkit._topk import topk_rows
        from ragkit.retrievers.centroids import centroid_pairs

        n_c = _prune(spec)
        rows, _ = topk_rows(ip, self.shortlist if n_c else ip.shape[1])
        if not n_c:
            return rows
        sc = centroid_pairs(qd, q_off, *self.book(n_c), rows, q_weights=q_w)
        return np.take_along_axis(rows, np.argsort(-sc, axis=1, kind="stable"), axis=1)

    def rows(self, spec: str, ip: np.ndarray, qd: np.ndarray, q_off: np.ndarray, c: int,
             q_w: np.ndarray | None = None) -> np.ndarray:
        """The ``c`` candidates of every query (FDE top ``c``; or centroid top ``c`` of the FDE shortlist)."""
        from ragkit._topk import topk_rows

        if not _prune(spec):
            return topk_rows(ip, c)[0]
        return self.ranked(spec, ip, qd, q_off, q_w)[:, :c]


def _select(cfgs: dict, fdes: dict, grid, docs, corpus, enc, short: Shortlist, args) -> tuple[str, int, dict]:
    """Choose the main FDE config and candidate count on train queries (exact Chamfer as truth).

    ``docs`` are the token vectors of ``corpus`` (row ``i`` of one is row ``i`` of the other: the
    ``--quick`` slice, or all of SciFact); rankings map to document ids through ``corpus``.

    Both of the issue's quality targets are checked on train, each with confidence (its mean
    over the train queries minus ``args.z`` standard errors: a one-sided lower bound; ``--z 0``
    = the mean itself).  For every config, the fewest candidates (documents sent to the exact
    rerank) such that

    * Chamfer recall@10 (the exact top 10 found among the candidates, which is the top-10
      agreement after the exact rerank) has a lower bound of at least ``args.target``, and
    * the per-query nDCG@10 difference to exact MaxSim (train qrels) has a lower bound of at
      least ``-args.ndcg_gap``.

    Among those, the fastest on the same train queries (the whole path of :func:`_muvera_path`,
    best of ``--repeat`` rounds in which every qualifying config runs once), so a larger FDE wins only
    if its fewer candidates pay for it.
    """
    from ragkit import load_beir
    from ragkit._topk import topk_rows
    from ragkit.retrievers.fde import chamfer_scores, fde_queries

    ds = load_beir(SCIFACT)
    train, train_qrels = ds.queries("train"), ds.qrels("train")
    n_pick = len(train) if args.select_queries <= 0 else min(args.select_queries, len(train))
    pick = np.sort(np.random.default_rng(args.seed).choice(len(train), n_pick, replace=False))
    train = train[pick] if n_pick < len(train) else train
    # the picked queries' judgements only: with all 809, evaluate counted the unpicked as 0 in every per-query array,
    # so the nDCG gaps and their bounds were means over 809 mostly-zero differences (~8x too lax at 100 queries)
    train_qrels = {q: train_qrels[q] for q in train.ids if q in train_qrels}
    qt = enc.encode_queries(train.texts)
    qd = np.asarray(qt.data, np.float32)
    ex_rows, ex_sc = topk_rows(chamfer_scores(qd, qt.offsets, docs.data, docs.offsets), 10)
    ex_ndcg = _ndcg(ex_rows, ex_sc, train, corpus, train_qrels, per_query=True)

    def bound(v: np.ndarray) -> float:
        return float(v.mean() - args.z * v.std(ddof=1) / np.sqrt(len(v)))

    table, lower, gap, gap_lower, runs = {}, {}, {}, {}, {}
    for spec, dfde in fdes.items():
        ranked = short.ranked(spec, fde_queries(qd, qt.offsets, cfgs[spec]) @ dfde.T, qd, qt.offsets)
        per_q = {c: _agreement(ranked[:, :c], ex_rows, per_query=True) for c in grid(spec)}
        table[spec] = {c: float(v.mean()) for c, v in per_q.items()}
        lower[spec] = {c: bound(v) for c, v in per_q.items()}
        gap[spec], gap_lower[spec] = {}, {}
        for c in sorted(grid(spec)):  # the nDCG check (an exact rerank) only where the recall bound holds
            if lower[spec][c] < args.target:
                continue
            rr, rs = _reranked(qd, qt.offsets, docs, ranked[:, :c])
            diff = _ndcg(rr[:, :10], rs[:, :10], train, corpus, train_qrels, per_query=True) - ex_ndcg
            gap[spec][c], gap_lower[spec][c] = float(diff.mean()), bound(diff)
            if gap_lower[spec][c] < -args.ndcg_gap:
                continue

            def run(spec=spec, dfde=dfde, c=c):
                return _muvera_path(spec, cfgs[spec], dfde, short, qd, qt.offsets, docs, c)

            runs[spec] = (c, run)
            break
    # whole calls in the same rounds (_common.interleaved): a ratio of two compares calls made side by side
    best, _, _ = interleaved({spec: run for spec, (_, run) in runs.items()}, args.repeat)
    ms = {spec: (c, 1000 * best[spec] / len(train)) for spec, (c, _) in runs.items()}
    if ms:
        spec = min(ms, key=lambda s_: ms[s_][1])
        c = ms[spec][0]
    else:  # nothing reaches the targets: the best recall at each config's largest budget
        spec = max(fdes, key=lambda s_: table[s_][max(grid(s_))])
        c = max(grid(spec))
    return spec, c, {"train_queries": len(train), "chamfer_recall@10": table, "lower_bound": lower, "z": args.z,
                     "ndcg@10_exact": float(ex_ndcg.mean()), "ndcg@10_gap": gap, "ndcg@10_gap_lower_bound": gap_lower,
                     "chosen": spec, "candidates": c,
                     "train_ms_per_query": {s_: {"candidates": v[0], "ms": v[1]} for s_, v in ms.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 30 test queries over the first 200 documents plus every document relevant to "
                         "them (~230; so each query's relevant documents are always in the small corpus and nDCG@10 "
                         "reads far higher than a full run's: not comparable), three configs; writes muvera_quick.*")
    ap.add_argument("--configs", default=None,
                    help="comma list of k_sim x d_proj x r_reps, d_proj 'id' = identity, e.g. 5x16x20,3xidx3")
    ap.add_argument("--candidates", default=None,
                    help="comma list (default 50,100,120,150,200,500; quick 10,20,50,100)")
    ap.add_argument("--main", default="auto", help="config used for fusion and the operator run; 'auto' = chosen "
                                                   "on train queries (see above)")
    ap.add_argument("--main-candidates", type=int, default=None, help="default: chosen with --main auto, else 200 "
                                                                      "(quick 50)")
    ap.add_argument("--select-queries", type=int, default=0,
                    help="train queries used by --main auto (a seeded sample; 0 = all 809)")
    ap.add_argument("--target", type=float, default=0.95, help="Chamfer recall@10 the auto choice must reach")
    ap.add_argument("--ndcg-gap", type=float, default=0.005,
                    help="largest nDCG@10 loss against exact MaxSim the auto choice may have on train")
    ap.add_argument("--z", type=float, default=1.645,
                    help="standard errors below the train mean that must still reach --target (0 = the mean)")
    ap.add_argument("--shortlist", type=int, default=300, help="FDE shortlist of +pC (pruned) configs")
    ap.add_argument("--keep", default=None,
                    help="documents kept for the exact rerank by +pC configs (default 30,40,50,60,80,100; quick 10,20)")
    ap.add_argument("--tau", default="0.9,0.8", help="ball-carving thresholds tried on the main config")
    ap.add_argument("--repeat", type=int, default=2,
                    help="every timing is the best of this many runs; the brute force and the table's MUVERA "
                         "paths run in the same interleaved rounds, as the ball-carving reranks with and without "
                         "carving")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=1, help="BLAS and torch threads for every method (default 1)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    machine = print_machine(threads=args.threads)
    configs = args.configs or ("4x16x10,3xidx1+m1,3xidx1+m1+p64" if args.quick else
                               "5x16x20,4x32x20,4x32x40,2xidx5,5x16x20+m1,4x32x20+m1,2xidx3+m1,"
                               "4x32x20+m1+p4096,5x16x20+m1+p4096,2xidx3+m1+p4096")
    cands = [int(c) for c in (args.candidates or ("10,20,50,100" if args.quick else
                                                  "50,100,120,150,200,500")).split(",")]
    keeps = [int(c) for c in (args.keep or ("10,20" if args.quick else "30,40,50,60,80,100")).split(",")]
    if args.quick:
        args.shortlist = min(args.shortlist, 50)

    def grid(spec: str) -> list[int]:
        return keeps if _prune(spec) else cands

    from ragkit._topk import topk_rows
    from ragkit.encoders.tokens import get_token_encoder
    from ragkit.retrievers.fde import FDEConfig, ball_carve, chamfer_scores, fde_documents, fde_queries

    corpus, queries, qrels = _data(args.quick, 200, 30)
    nq = len(queries)
    enc = get_token_encoder()
    t0 = time.perf_counter()
    docs = enc.encode(corpus.full_texts)
    t_doc_enc = time.perf_counter() - t0
    enc.encode_queries(queries.texts[:2])  # warm the model
    enc._memo.clear()
    t0 = time.perf_counter()
    qt = enc.encode_queries(queries.texts)
    t_q_enc = time.perf_counter() - t0
    qd = np.asarray(qt.data, np.float32)
    print(f"corpus {len(corpus)} docs, {docs.n_tokens} tokens (mean {docs.n_tokens / len(corpus):.1f}/doc); "
          f"{nq} queries, {qt.n_tokens} tokens; doc tokens {t_doc_enc:.1f}s (cache), query encode "
          f"{1000 * t_q_enc / nq:.1f} ms/query", flush=True)

    cfgs = {spec: FDEConfig(**_config(spec, args.seed)) for spec in configs.split(",")}
    short = Shortlist(docs, args.shortlist, args.seed)
    for n_c in sorted({_prune(spec) for spec in cfgs} - {None}):
        short.book(n_c)
        print(f"token codebook of {n_c} centroids (k-means + assignment of {docs.n_tokens} tokens): "
              f"{short.build_s[n_c]:.0f} s", flush=True)
    fdes, build_s = {}, {}
    for spec, cfg in cfgs.items():  # document FDEs, built once (timed) for the selection and the table
        t0 = time.perf_counter()
        fdes[spec] = fde_documents(docs.data, docs.offsets, cfg)
        build_s[spec] = time.perf_counter() - t0
    if args.main == "auto":
        t0 = time.perf_counter()
        args.main, chosen_c, selection = _select(cfgs, fdes, grid, docs, corpus, enc, short, args)
        if args.main_candidates is None:
            args.main_candidates = chosen_c
        print(f"main config chosen on {selection['train_queries']} train queries ({time.perf_counter() - t0:.0f} s): "
              f"{args.main} @ {chosen_c} candidates (train Chamfer recall@10 "
              f"{selection['chamfer_recall@10'][args.main][chosen_c]:.3f}, nDCG@10 "
              f"{selection['ndcg@10_gap'][args.main].get(chosen_c, float('nan')):+.4f} against exact)", flush=True)
    else:
        selection = None
    if args.main_candidates is None:
        args.main_candidates = 50 if args.quick else 200

    # ------------------------------------------- brute force and every MUVERA row, timed in the same rounds
    # The machine is shared: a best-of keeps each call's least-disturbed run, and interleaving (each round
    # calls the brute force and every row's path once, the order shuffled per round) puts a burst of load on all alike,
    # so a speed-up never divides timings taken minutes apart.  The same number of calls as timing each alone.
    def brute():  # the whole path (exact scores of every document + top 10), one call, as MUVERA's
        sc = chamfer_scores(qd, qt.offsets, docs.data, docs.offsets)
        return sc, topk_rows(sc, 10)

    def path(spec: str, c: int):
        return _muvera_path(spec, cfgs[spec], fdes[spec], short, qd, qt.offsets, docs, c)

    rounds = max(1, args.repeat)
    row_keys = [(spec, c) for spec in cfgs for c in grid(spec)]
    print(f"timing the brute force and {len(row_keys)} MUVERA paths in {rounds} interleaved rounds", flush=True)
    # whole calls (the brute force's, each row's path) in the same rounds; a path's result is its fastest call's,
    # so its stage times (the result's last item) are that run's
    best, result, _ = interleaved({"brute": brute} | {key: partial(path, *key) for key in row_keys}, rounds)
    t_brute, (exact, (ex_rows, ex_sc)) = best["brute"], result["brute"]
    ndcg_exact = _ndcg(ex_rows, ex_sc, queries, corpus, qrels)
    brute_ms = 1000 * t_brute / nq
    print(f"brute-force MaxSim (scores + top 10, best of {rounds} rounds): {t_brute:.1f}s ({brute_ms:.1f} ms/query), "
          f"nDCG@10 {ndcg_exact:.4f}", flush=True)
    results: dict = {"machine": machine, "main_selection": selection, "corpus_docs": len(corpus), "queries": nq,
                     "doc_tokens": docs.n_tokens,
                     "query_tokens": qt.n_tokens, "query_encode_ms": 1000 * t_q_enc / nq,
                     "brute_force": {"seconds": t_brute, "ms_per_query": brute_ms, "ndcg@10": ndcg_exact},
                     "timing": f"best of {rounds} interleaved rounds, each calling the brute force (scores + top 10) "
                               "and every table row's whole MUVERA path (query FDEs + inner products + top-c "
                               "[+ centroids] + rerank) once, in a shuffled order, so each speed-up compares calls "
                               "made in the same rounds; stage times are the fastest run's, information only",
                     "rounds": rounds,
                     "repeat": args.repeat, "configs": [], "quick": args.quick, "threads": args.threads}
    print(f"\nms/q = the whole MUVERA path (query FDEs + inner products + top-c [+ centroid interaction] + exact "
          f"rerank) timed as one call, best of {rounds} rounds that each also call the brute force once; "
          f"speedup = brute ms/q / ms/q, both from the same rounds.\n"
          f"stages = query FDE / inner products / top-c [+ centroids] / rerank inside the fastest run "
          f"(information only, not the headline)")
    print(f"{'config':>17} {'dim':>6} {'build s':>7} {'pearson':>7} {'spearman':>8} {'cand':>7} {'agree@10':>8} "
          f"{'ch.rec':>6} {'nDCG@10':>7} {'ms/q':>7} {'speedup':>7}  {'stages ms/q':<23}   (cand = FDE candidates, "
          f"or shortlist>kept for +pC configs)")
    main_state = None
    for spec, cfg in cfgs.items():
        dfde, t_build = fdes[spec], build_s[spec]
        qfde = fde_queries(qd, qt.offsets, cfg)  # correlation with exact Chamfer (untimed)
        ip = qfde @ dfde.T
        pearson = float(np.corrcoef(ip.ravel(), exact.ravel())[0, 1])
        spearman = _spearman_rows(ip, exact)
        n_c = _prune(spec)
        entry = {"config": spec, **_config(spec, args.seed), "dim": dfde.shape[1],
                 "build_s": t_build, "pearson": pearson, "spearman_per_query": spearman, "by_candidates": []}
        if n_c:  # FDE top shortlist, then centroid interaction
            entry.update(centroids=n_c, shortlist=args.shortlist, codebook_build_s=short.build_s[n_c])
        for c in grid(spec):
            t_path, (rows, rr, rs, stages) = best[(spec, c)], result[(spec, c)]
            ms = 1000 * t_path / nq
            stage_ms = {k: 1000 * v / nq for k, v in stages.items()}
            row = {"candidates": c, "shortlist": args.shortlist if n_c else c,
                   "agreement@10": _agreement(rr[:, :10], ex_rows),
                   "chamfer_recall@10": _agreement(rows, ex_rows), "ndcg@10": _ndcg(rr[:, :10], rs[:, :10], queries,
                                                                                     corpus, qrels),
                   "ms_per_query": ms, "speedup_vs_brute": brute_ms / ms,
                   "stages_ms_per_query_fastest_run": stage_ms, "rerank_ms_per_query": stage_ms["rerank"]}
            entry["by_candidates"].append(row)
            cand = f"{args.shortlist}>{c}" if n_c else str(c)
            st = "/".join(f"{v:.2f}" for v in stage_ms.values())
            print(f"{spec:>17} {dfde.shape[1]:>6} {t_build:>7.1f} {pearson:>7.3f} {spearman:>8.3f} {cand:>7} "
                  f"{row['agreement@10']:>8.3f} {row['chamfer_recall@10']:>6.3f} {row['ndcg@10']:>7.4f} "
                  f"{ms:>7.2f} {row['speedup_vs_brute']:>6.1f}x  {st:<23}", flush=True)
        results["configs"].append(entry)
        if spec == args.main:
            main_state = (cfg, dfde, qfde, ip)

    # ------------------------------------------------ main config: quantised FDEs, ball carving
    if main_state is not None:
        cfg, dfde, qfde, ip = main_state
        c = args.main_candidates
        extra = {"config": args.main, "candidates": c}
        f16 = qfde @ dfde.astype(np.float16).astype(np.float32).T
        scale = np.abs(dfde).max(0) / 127.0
        i8 = np.round(dfde / np.maximum(scale, 1e-12)).astype(np.int8)
        ip8 = (qfde * scale) @ i8.astype(np.float32).T
        for name, m in (("f32", ip), ("f16", f16), ("i8_per_dim", ip8)):
            extra[f"chamfer_recall@10_{name}"] = _agreement(short.rows(args.main, m, qd, qt.offsets, c), ex_rows)
        uncarved_rows = short.rows(args.main, ip, qd, qt.offsets, c)
        for tau in [float(t) for t in args.tau.split(",") if t]:
            cd, co, cw = ball_carve(qd, qt.offsets, tau)
            rows = short.rows(args.main, ip, cd, co, c, q_w=cw)
            t_rr, sc, rr_rounds = _carving_rerank(qd, qt.offsets, uncarved_rows, (cd, co, cw), rows, docs,
                                                  args.repeat)
            order = np.lexsort((rows, -sc), axis=1)
            rr, rs = np.take_along_axis(rows, order, 1), np.take_along_axis(sc, order, 1)
            extra[f"ball_carve_{tau}"] = {"query_tokens": int(co[-1]), "agreement@10": _agreement(rr[:, :10], ex_rows),
                                          "ndcg@10": _ndcg(rr[:, :10], rs[:, :10], queries, corpus, qrels),
                                          "rerank_ms_per_query": 1000 * t_rr["carved"] / nq,
                                          "uncarved_rerank_ms_per_query": 1000 * t_rr["uncarved"] / nq,
                                          "rounds": rr_rounds}
        results["main_extra"] = extra
        print(f"\nmain config {args.main} @ {c} candidates: chamfer recall f32 {extra['chamfer_recall@10_f32']:.3f}, "
              f"f16 {extra['chamfer_recall@10_f16']:.3f}, int8 {extra['chamfer_recall@10_i8_per_dim']:.3f}")
        for tau in [t for t in args.tau.split(",") if t]:
            b = extra[f"ball_carve_{float(tau)}"]
            print(f"ball carving tau={tau}: query tokens {qt.n_tokens} -> {b['query_tokens']}, agreement@10 "
                  f"{b['agreement@10']:.3f}, nDCG@10 {b['ndcg@10']:.4f}, rerank {b['rerank_ms_per_query']:.2f} ms/q, "
                  f"{b['uncarved_rerank_ms_per_query']:.2f} without carving ({c} candidates each; best of "
                  f"{b['rounds']} interleaved rounds of both, after a warm-up call each)")

    # ------------------------------------------------------------ operators and fusion
    from ragkit.eval import evaluate
    from ragkit.pipelines import Parallel, Pipeline
    from ragkit.pipelines.fusion import RRF
    from ragkit.retrievers import BM25, Dense, Muvera

    # The operator reranks the main config's chosen count (--main-candidates): it returns its top
    # min(100, count), since an exact rerank of c documents can return at most c (Muvera needs candidates >= k).
    c_main = args.main_candidates
    if _prune(args.main):  # the FDE shortlist, pruned by centroid interaction to the chosen count
        mu = Muvera(k=min(100, c_main), candidates=args.shortlist, prune=c_main,
                    centroids=_prune(args.main), **_config(args.main, args.seed))
    else:
        mu = Muvera(k=min(100, c_main), candidates=c_main, **_config(args.main, args.seed))
    t0 = time.perf_counter()
    mu.fit(corpus)
    t_fit = time.perf_counter() - t0
    bm25 = BM25(k=100).fit(corpus)
    ops = [("dense (single-vector MiniLM)", Dense(k=100).fit(corpus)), ("bm25", bm25),
           (f"muvera {args.main} + rerank@{c_main}", mu)]
    if not _prune(args.main) and c_main < 100:  # earlier runs' row: 100 candidates, a 100-deep list
        ops.append((f"muvera {args.main} + rerank@100 (a 100-deep list, not the chosen {c_main}: earlier runs' row)",
                    Muvera(k=100, candidates=100, **_config(args.main, args.seed)).fit(corpus)))
    ops.append((f"muvera + bm25 (RRF k=60; muvera rerank@{c_main})", Pipeline([Parallel([bm25, mu], fuse=RRF(k=60))])))
    results["operator"] = {"config": args.main, "candidates": c_main, "k": mu.params.k,
                           "shortlist": args.shortlist if _prune(args.main) else None}
    ndcg = {"maxsim exact (brute force)": ndcg_exact}
    for name, op in ops:
        if isinstance(op, Pipeline):
            op.corpus_ = corpus  # both branches are fitted already
        ndcg[name] = float(evaluate(op.search(queries), qrels, ["ndcg@10"]).scores["ndcg@10"])
    results["ndcg@10"] = ndcg
    results["muvera_fit_s"] = t_fit
    print(f"\nnDCG@10 on SciFact test ({nq} queries); the muvera operator reranks the main config's "
          f"{c_main} candidates and returns its top {mu.params.k}:")
    w = max(30, *map(len, ndcg))
    for name, v in ndcg.items():
        print(f"  {name:<{w}} {v:.4f}")

    # ------------------------------------------------------------------- memory
    d = docs.dim
    tok_per_doc = docs.n_tokens / len(corpus)
    mem = {"token_vectors_f32": tok_per_doc * d * 4 + 8, "token_vectors_f16": tok_per_doc * d * 2 + 8}
    for entry in results["configs"]:
        mem[f"fde_{entry['config']}_f32"] = entry["dim"] * 4
        mem[f"fde_{entry['config']}_f16"] = entry["dim"] * 2
        mem[f"fde_{entry['config']}_i8"] = entry["dim"]
    for n_c, (cb, codes, _) in short.books.items():  # pruning: distinct codes per document + the shared codebook
        mem[f"centroid_codes_{n_c}"] = codes.nbytes / len(corpus) + 8
        mem[f"codebook_{n_c}_total"] = cb.nbytes
    mem["single_vector_f32"] = d * 4
    results["bytes_per_doc"] = mem
    print("\nbytes per document:")
    for name, v in mem.items():
        print(f"  {name:<28} {v / 1024:8.1f} KiB")

    OUT.mkdir(parents=True, exist_ok=True)
    name = "muvera_quick" if args.quick else "muvera"
    write_atomic(OUT / f"{name}.json", json.dumps(results, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        for entry in results["configs"]:
            xs = [r["candidates"] for r in entry["by_candidates"]]
            ax[0].plot(xs, [r["agreement@10"] for r in entry["by_candidates"]], marker="o",
                       label=f"{entry['config']} ({entry['dim']}d)")
            ax[1].plot([r["ms_per_query"] for r in entry["by_candidates"]],
                       [r["ndcg@10"] for r in entry["by_candidates"]], marker="o", label=entry["config"])
        ax[0].axhline(0.95, ls="--", c="grey")
        ax[0].set(xscale="log", xlabel="candidates", ylabel="top-10 agreement with exact MaxSim")
        ax[1].axhline(ndcg_exact, ls="--", c="k", label=f"exact MaxSim ({brute_ms:.0f} ms/q)")
        ax[1].set(xscale="log", xlabel="ms per query (FDE search + rerank)", ylabel="nDCG@10")
        ax[0].legend(fontsize=8)
        ax[1].legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, dpi=110, format="png")
        plt.close(fig)
        write_atomic(OUT / f"{name}.png", buf.getvalue())
    except Exception as e:  # pragma: no cover - plotting is optional
        print(f"(no plot: {e})")
    print(f"\nwrote {OUT / (name + '.json')}")


if __name__ == "__main__":
    main()
