"""BM25 search: the top-k from the sparse product's entries (``BM25._topk``) against the dense path before it
(``BM25._topk_dense``: a row of every document per query, ``topk_rows`` over all of it).

Usage::

    python bench/bm25_sparse_topk.py                 # 100,000 synthetic documents, ~40 s of CPU time
    python bench/bm25_sparse_topk.py --docs 300000 --queries 500
    python bench/bm25_sparse_topk.py --quick         # smoke run: 5,000 documents, 20 queries a set, 2 rounds

A synthetic corpus (``--docs`` documents of 20-60 words drawn from a Zipf vocabulary of 100,000 words, seed 0)
is fitted with ``BM25()``; query sets of 4 words each, by how many documents their words are in:

* ``rare``: words of 2-10 documents (~20 matches a query): the case whose cost followed the corpus size;
* ``mid``: words of 100-2,000 documents (a few thousand matches);
* ``broad``: words of 5-30% of the documents (about 37% of the corpus matches a query: some queries are ranked
  from dense rows, some from their matches, in the same blocks);
* ``common``: two of the 3 most frequent words and two of 5-30% (about 99% of the corpus matches: every query
  is ranked from a dense row, every block all of them; the case a review measured 15-20% slower than the dense
  path, at 97% of 200,000 documents matched, before the dense rows were filled from the product directly);
* ``mixed``: two rare words and two of the 50 most frequent ones;

each searched at ``k`` 10 and 1000 (``mixed``: 10), and ``rare`` and ``common`` also with a metadata filter passing
half the documents.  Each is timed through both paths (``ragkit.retrievers.bm25._DENSE_TOPK``), one thread, in
``--repeat`` interleaved rounds (``_common.interleaved``: each path once a round, the order shuffled afresh each
round, seeded, so neither always runs first), best round of CPU time (``time.process_time``: the machine is shared);
the rankings of both are checked identical (ids, float32 scores).  Prints ms per query, the share of queries the new
path ranks from dense rows (more than ``_DENSE_SHARE`` of the documents, and ``k``, are candidates) and the ratio
dense / sparse (old / new), then ``common``'s ratios again (>= 1.0x: the new path is no slower where every query is
ranked from a dense row; the timings are noisy to a few percent).  Prints a ``machine:`` line first and writes
``bench/out/bm25_sparse_topk.json`` (``bm25_sparse_topk_quick.json`` with ``--quick``; in the folder
``RAGKIT_BENCH_OUT`` names instead of bench/out, when set): the machine, the sizes and every row printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ragkit.retrievers import BM25, bm25 as bm25_mod
from ragkit.types import Corpus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, interleaved, print_machine, write_atomic  # noqa: E402


def corpus_of(n: int, seed: int = 0) -> Corpus:
    """``n`` documents of 20-60 words from a Zipf(1.07) vocabulary of 100,000 letter strings, metadata
    ``half`` 0 / 1."""
    rng = np.random.default_rng(seed)
    v = 100_000
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)
    raw = letters[rng.integers(0, 26, (v, 9))]
    vocab = np.array([bytes(r[:n_]).decode() for r, n_ in zip(raw, rng.integers(4, 10, v))])
    p = 1.0 / np.arange(1, v + 1) ** 1.07
    lens = rng.integers(20, 61, n)
    words = vocab[rng.choice(v, int(lens.sum()), p=p / p.sum())]
    ends = np.cumsum(lens)
    texts = [" ".join(words[e - m:e]) for e, m in zip(ends.tolist(), lens.tolist())]
    return Corpus(ids=[f"d{i}" for i in range(n)], texts=texts, metadata={"half": (np.arange(n) % 2).tolist()})


def query_sets(bm: BM25, n_q: int, seed: int = 1) -> dict[str, list[str]]:
    """Query sets of 4 indexed terms each, by document frequency (see the module docstring)."""
    rng = np.random.default_rng(seed)
    terms = np.array(bm.terms())
    df = bm.doc_freqs()
    n = len(bm.corpus_)

    def pick(lo: float, hi: float, size: int) -> np.ndarray:
        pool = terms[(df >= lo) & (df <= hi)]
        return rng.choice(pool, (n_q, size))

    top = terms[np.argsort(-df)[:50]]
    sets = {"rare": pick(2, 10, 4), "mid": pick(100, 2000, 4), "broad": pick(0.05 * n, 0.3 * n, 4),
            "mixed": np.concatenate([pick(2, 10, 2), rng.choice(top, (n_q, 2))], axis=1)}  # (as before: same draws)
    two_of_top3 = rng.permuted(np.tile(top[:3], (n_q, 1)), axis=1)[:, :2]  # (two distinct ones a query)
    sets["common"] = np.concatenate([two_of_top3, pick(0.05 * n, 0.3 * n, 2)], axis=1)
    return {name: [" ".join(row) for row in words.tolist()] for name, words in sets.items()}


def searched(bm: BM25, queries: list[str], k: int, dense: bool, **options: object) -> list:
    """The rankings of one search of ``queries`` through one path (``dense``: the dense path)."""
    bm25_mod._DENSE_TOPK = dense
    try:
        return bm.search(queries, k=k, **options).rankings  # type: ignore[arg-type]
    finally:
        bm25_mod._DENSE_TOPK = False


def matches_of(bm: BM25, queries: list[str]) -> float:
    """The documents matching a query of ``queries``, on average."""
    return (bm.query_matrix(queries) @ bm._wt).nnz / len(queries)


def dense_share(bm: BM25, queries: list[str], k: int, keep: np.ndarray | None) -> float:
    """The share of ``queries`` the new path ranks from a dense row: more than ``_DENSE_SHARE`` of the documents
    (and ``k``) are candidates (match a query term and pass ``keep``)."""
    m = (bm.query_matrix(queries) @ bm._wt).tocsr()  # (lucene: every match is an entry)
    kept = np.zeros(m.nnz + 1, np.int64)
    np.cumsum(np.ones(m.nnz, bool) if keep is None else keep[m.indices], out=kept[1:])
    candidates = np.diff(kept[m.indptr])
    n = len(bm.corpus_)
    return float(np.mean((candidates > bm25_mod._DENSE_SHARE * n) & (candidates > min(k, n))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (the tests run it): 5,000 documents, 20 queries a set, 2 rounds, unless --docs, "
                         "--queries or --repeat say otherwise")
    ap.add_argument("--docs", type=int, default=None, help="synthetic documents (default 100,000; 5,000 with --quick)")
    ap.add_argument("--queries", type=int, default=None, help="queries per set (default 200; 20 with --quick)")
    ap.add_argument("--repeat", type=int, default=None, help="timing rounds, best kept (default 3; 2 with --quick)")
    args = ap.parse_args()
    args.docs = (5_000 if args.quick else 100_000) if args.docs is None else args.docs
    args.queries = (20 if args.quick else 200) if args.queries is None else args.queries
    args.repeat = (2 if args.quick else 3) if args.repeat is None else args.repeat
    if args.docs < 100 or args.queries < 1 or args.repeat < 1:
        ap.error(f"--docs must be >= 100 (the query sets draw words by document frequency), --queries and --repeat "
                 f">= 1; got --docs {args.docs}, --queries {args.queries}, --repeat {args.repeat}")
    res: dict = {"machine": print_machine(threads=1), "docs": args.docs, "queries_per_set": args.queries,
                 "repeat": args.repeat, "timing": "CPU time (time.process_time), one thread, the two paths in "
                 "interleaved rounds (order shuffled per round, seeded), best of the rounds; ms per query",
                 "rows": []}
    t = time.time()
    corpus = corpus_of(args.docs)
    bm = BM25(k=10, n_jobs=1).fit(corpus)
    print(f"corpus of {args.docs:,} documents, {len(bm.vocab_):,} terms, {bm._wt.nnz:,} postings: "
          f"made and fitted in {time.time() - t:.1f} s")
    sets = query_sets(bm, args.queries)
    half = {"filter": {"half": 1}}
    cases = [(name, k, {}) for name in sets for k in (10, 1000) if (name, k) != ("mixed", 1000)]
    cases += [("rare", 10, half), ("common", 10, half)]
    print(f"{'queries':<8} {'k':>5} {'filter':<7} {'matches/q':>10} {'dense rows':>10} {'dense ms/q':>11} "
          f"{'sparse ms/q':>12} {'ratio':>7}")
    common = []
    for name, k, options in cases:
        queries = sets[name]
        matches = matches_of(bm, queries)
        paths = {dense: (lambda dense=dense: searched(bm, queries, k, dense, **options)) for dense in (True, False)}
        best, got, _ = interleaved(paths, args.repeat, clock=time.process_time)  # (best round of each path)
        for a, b in zip(got[True], got[False]):  # identical rankings (ids, float32 scores)
            assert np.array_equal(a.rows, b.rows) and a.scores.tobytes() == b.scores.tobytes(), (name, k)
        n = len(queries)
        wide = dense_share(bm, queries, k, (np.arange(args.docs) % 2 == 1) if options else None)
        print(f"{name:<8} {k:>5} {'half' if options else '-':<7} {matches:>10,.0f} {wide:>10.0%} "
              f"{1e3 * best[True] / n:>11.3f} {1e3 * best[False] / n:>12.3f} {best[True] / best[False]:>6.2f}x")
        res["rows"].append({"queries": name, "k": k, "filter": "half" if options else None,
                            "matches_per_query": round(matches, 1), "dense_row_share": round(wide, 4),
                            "dense_ms_per_query": round(1e3 * best[True] / n, 4),
                            "sparse_ms_per_query": round(1e3 * best[False] / n, 4),
                            "dense_over_sparse": round(best[True] / best[False], 3)})
        if name == "common":
            common.append(f"k={k}{' half' if options else ''} {best[True] / best[False]:.2f}x")
    print(f"common ({matches_of(bm, sets['common']) / args.docs:.0%} of the documents matched a query): old (dense "
          f"path) / new CPU time {', '.join(common)}")
    print(f"total {time.time() - t:.1f} s; rankings identical in every case")
    res["rankings_identical"] = True
    path = OUT / ("bm25_sparse_topk_quick.json" if args.quick else "bm25_sparse_topk.json")
    write_atomic(path, json.dumps(res, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
