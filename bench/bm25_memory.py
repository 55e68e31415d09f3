"""BM25 memory and persistence at scale: fit, bytes held, save, load (with and without ``mmap``), search.

Usage::

    python bench/bm25_memory.py /tmp/scale-rev/syn100k          # a BEIR folder: bench/out/bm25_memory.json
    python bench/bm25_memory.py FOLDER --queries 1000 --k 1000 --out /tmp/bm25_memory_1000.json
    python bench/bm25_memory.py --quick              # SciFact, 50 queries at k = 100: bench/out/bm25_memory_quick.json

Writes ``bench/out/bm25_memory.json`` (``bm25_memory_quick.json`` with ``--quick``; in the folder
``RAGKIT_BENCH_OUT`` names instead of bench/out, when set; or the file ``--out`` names).

A phase that fails stops the run with its error output's last lines; the phases that finished are still
written (with ``"failed"``: the phase, its exit status and that tail).

Each phase runs in a fresh Python process, so its peak is its own: a thread samples the resident set
(RSS, every 20 ms) and a phase reports its wall seconds, its peak above the RSS it started at
(``peak_extra_MB``) and the RSS still held after it (``rss_retained_MB``: the process's, not the index's,
since the allocator keeps freed heap; older JSON named it ``kept_MB``).  What an index itself keeps is
``held_MB`` (the bytes of its arrays) and, after a fit, ``traced``: the Python-traced bytes (``tracemalloc``)
live after a second, untimed fit (``live_MB``) and their peak during it (``peak_MB``).  The corpus is read
before a phase starts
(``load_beir``; not counted) and handed to ``BM25.load(corpus=...)``, so the load figures are the
index's own (the saved checksums are verified, as by default).

* ``fit``: ``BM25(k).fit(corpus)``; then the bytes of the arrays the retriever holds (per posting),
  ``--queries`` searches (top ``--k``), ``save`` (what a user calls: the index, ``params.json``, the documents'
  ``corpus.jsonl`` and ``checksums.json``, SHA-256 of every file), ``save_index`` (``save_into(folder,
  with_corpus=False)``: the index files and ``params.json`` only, no documents, no checksums) and the saved
  folder's size less ``corpus.jsonl``.
* ``load`` / ``load_mmap``: ``BM25.load(folder, corpus, mmap=...)`` and the same searches.
* ``peer_fit`` / ``peer_load_mmap``: the same for bm25s (``method="lucene"``, its tokenizer with Porter
  stemming and English stopwords; ``BM25.load(dir, mmap=True)``), the peer the ratios are taken against.
  Its ``save`` writes its index only (arrays, vocabulary, parameters), so the save ratio is ragkit's
  ``save_index`` over it (``fit.save_index.s``); ``save_with_corpus`` is bm25s's ``save(dir, corpus=...)``
  (the documents as ``{"id", "title", "text"}`` dicts, built before the clock starts), ragkit's ``save``'s
  peer (``fit.save.s``; ragkit's also checksums every file).
* ``search``: the search *times*.  A phase above times its searches once (a first search after a fit or load,
  for its memory; one call of ~10 ms on SciFact is noise), so the ratios of search seconds come from this
  phase: one process loads both saved indexes, in memory and memory-mapped (bm25s on its default numpy
  backend and, when numba is installed, on ``backend="numba"``, its documented fast path), calls each search
  once (numba compiles then: that first call is reported apart), then times them in interleaved rounds, every
  searcher once a round (the order shuffled afresh each round, seeded: ``_common.interleaved``), and keeps each
  one's best.  There are
  ``max(--search-repeat, ceil(--search-seconds / fastest search))`` rounds (printed), so each searcher is timed
  for at least ``--search-seconds`` in all.  One thread each (ragkit ``n_jobs=1``, bm25s ``n_threads=0``:
  numba's serial kernel), from query text to top ``--k``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from _common import OUT, SCIFACT, interleaved_best, print_machine, write_atomic  # noqa: E402


def _held_bytes(op: object) -> int:
    """Bytes of the numpy arrays and scipy.sparse matrices in ``vars(op)``, each buffer once (matrices may share
    index arrays); memory-mapped ones count 0."""
    import mmap

    seen: dict[int, int] = {}
    for v in vars(op).values():
        for a in (v.data, v.indices, v.indptr) if sp.issparse(v) else (v,) if isinstance(v, np.ndarray) else ():
            base = a
            while isinstance(base, np.ndarray) and base.base is not None:
                base = base.base
            if not isinstance(base, mmap.mmap):
                seen[a.__array_interface__["data"][0]] = a.nbytes
    return int(sum(seen.values()))


def _traced(fit) -> dict:  # noqa: ANN001
    """``tracemalloc``'s bytes live after ``fit()`` (what the fitted object and anything else it left keep) and
    their peak during it, in MB: a second fit, after the timed one (tracing slows allocation)."""
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        obj = fit()
        gc.collect()
        live, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del obj
    return {"live_MB": round(live / 2**20, 1), "peak_MB": round(peak / 2**20, 1)}


def _phase(name: str, folder: str, saved: str, n_queries: int, k: int, search_repeat: int = 3,
           search_seconds: float = 0.5) -> dict:
    import psutil

    from ragkit import load_beir
    from ragkit.retrievers import BM25
    from ragkit.types import Queries

    proc = psutil.Process()
    data = load_beir(folder)
    qs = data.queries("test") if (Path(folder) / "qrels" / "test.tsv").is_file() else data.queries()
    qs = Queries(list(qs.ids)[:n_queries], list(qs.texts)[:n_queries])
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    out: dict = {}

    def measure(step: str, fn):  # noqa: ANN001, ANN202
        gc.collect()
        base = proc.memory_info().rss
        peak[0] = base
        t0 = time.perf_counter()
        res = fn()
        dt = time.perf_counter() - t0
        time.sleep(0.05)
        rss = proc.memory_info().rss
        out[step] = {"s": round(dt, 3), "peak_extra_MB": round((max(peak[0], rss) - base) / 2**20),
                     "rss_retained_MB": round((rss - base) / 2**20)}
        return res

    if name.startswith("peer_"):
        return _peer_phase(name, data, qs, saved, k, measure, out, stop)
    if name == "search":
        stop.set()
        return _search_phase(data, qs, saved, k, search_repeat, search_seconds)
    if name == "fit":
        bm = measure("fit", lambda: BM25(k=k).fit(data.corpus))
        held = _held_bytes(bm)
        nnz = int(bm.doc_freqs().sum()) if hasattr(bm, "doc_freqs") else int(bm.tf_.nnz)
        out["postings"], out["held_MB"], out["held_bytes_per_posting"] = nnz, round(held / 2**20), round(held / nnz, 2)
        shutil.rmtree(saved, ignore_errors=True)
        measure("save", lambda: bm.save(saved))
        index_only = saved + "_index_only"
        shutil.rmtree(index_only, ignore_errors=True)
        os.makedirs(index_only)
        measure("save_index", lambda: bm.save_into(Path(index_only), with_corpus=False))
        shutil.rmtree(index_only, ignore_errors=True)
        out["saved_MB"] = round(sum(p.stat().st_size for p in Path(saved).iterdir()
                                    if p.name != "corpus.jsonl") / 2**20)
        out["traced"] = _traced(lambda: BM25(k=k).fit(data.corpus))
    else:
        bm = measure(name, lambda: BM25.load(saved, corpus=data.corpus, mmap=name == "load_mmap"))
        out["held_MB"] = round(_held_bytes(bm) / 2**20)
    run = measure(f"search_{len(qs.ids)}q_k{k}", lambda: bm.search(qs))
    out["first_ranking"] = run.doc_ids[0][:5].tolist()
    stop.set()
    return out


def _peer_phase(name: str, data, qs, saved: str, k: int, measure, out: dict, stop: threading.Event) -> dict:  # noqa: ANN001
    """bm25s's fit (tokenize + index) or memory-mapped load, its bytes held, save and the same searches."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("porter")
    if name == "peer_fit":
        def fit():  # noqa: ANN202
            r = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
            r.index(bm25s.tokenize(list(data.corpus.full_texts), stopwords="en", stemmer=stemmer,
                                   show_progress=False), show_progress=False)
            return r

        r = measure("fit", fit)
        out["traced"] = _traced(fit)
        arrays = [r.scores[key] for key in ("data", "indices", "indptr")]
        nnz = int(len(r.scores["data"]))
        held = sum(int(a.nbytes) for a in arrays)
        out["postings"], out["held_MB"], out["held_bytes_per_posting"] = nnz, round(held / 2**20), round(held / nnz, 2)
        shutil.rmtree(saved, ignore_errors=True)
        measure("save", lambda: r.save(saved, show_progress=False))
        out["saved_MB"] = round(sum(p.stat().st_size for p in Path(saved).iterdir()) / 2**20)
        c = data.corpus
        docs = [{"id": i, "title": t, "text": x} for i, t, x in zip(c.ids.tolist(), list(c.titles), list(c.texts))]
        with_corpus = saved + "_with_corpus"
        shutil.rmtree(with_corpus, ignore_errors=True)
        measure("save_with_corpus", lambda: r.save(with_corpus, corpus=docs, show_progress=False))
        shutil.rmtree(with_corpus, ignore_errors=True)
    else:
        r = measure(name, lambda: bm25s.BM25.load(saved, mmap=True))
    n = min(k, len(data.corpus))
    measure(f"search_{len(qs.ids)}q_k{k}", lambda: r.retrieve(
        bm25s.tokenize(list(qs.texts), stopwords="en", stemmer=stemmer, show_progress=False), k=n,
        show_progress=False))
    stop.set()
    return out


def _search_phase(data, qs, saved: str, k: int, repeat: int, min_seconds: float) -> dict:  # noqa: ANN001
    """Search seconds of ragkit and bm25s on the indexes saved under ``saved`` (``bm25`` and ``bm25s``), each in
    memory and memory-mapped (bm25s twice: numpy, and ``backend="numba"`` if numba imports): a first call each
    (reported apart: numba compiles in it), then interleaved rounds, every searcher once a round, until each has
    been timed ``min_seconds`` in all (and at least ``repeat`` rounds).  Best seconds per searcher, the rounds."""
    import bm25s
    import Stemmer

    from ragkit.retrievers import BM25

    stemmer = Stemmer.Stemmer("porter")
    texts, n = list(qs.texts), min(k, len(data.corpus))
    rk_dir, bs_dir = os.path.join(saved, "bm25"), os.path.join(saved, "bm25s")

    def peer(r):  # noqa: ANN001, ANN202
        return lambda: r.retrieve(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
                                  k=n, n_threads=0, show_progress=False)

    def mine(r):  # noqa: ANN001, ANN202
        return lambda: r.search(qs)

    fns = {"ragkit": mine(BM25.load(rk_dir, corpus=data.corpus, mmap=False)),
           "ragkit_mmap": mine(BM25.load(rk_dir, corpus=data.corpus, mmap=True)),
           "bm25s": peer(bm25s.BM25.load(bs_dir, mmap=False)),
           "bm25s_mmap": peer(bm25s.BM25.load(bs_dir, mmap=True))}
    out: dict = {"threads": 1}
    try:
        import numba  # noqa: F401
        from bm25s.numba.retrieve_utils import _retrieve_numba_functional  # noqa: F401
    except ImportError as e:
        out["bm25s_numba"] = f"skipped: numba unavailable ({e}); pip install numba, or ragkit[bench]"
    else:
        fns["bm25s_numba"] = peer(bm25s.BM25.load(bs_dir, mmap=False, backend="numba"))
        fns["bm25s_numba_mmap"] = peer(bm25s.BM25.load(bs_dir, mmap=True, backend="numba"))
    first, best, _, rounds = interleaved_best(fns, repeat, min_seconds)  # (order shuffled per round, seeded)
    out |= {"rounds": rounds, "min_seconds": min_seconds, "best_s": {key: round(v, 5) for key, v in best.items()},
            "first_call_s": {key: round(v, 4) for key, v in first.items()}}
    return out


# ragkit's step -> bm25s's step that writes the like of it (its plain save writes its index only)
_PEER_STEP = {"save": "save_with_corpus", "save_index": "save"}


def _ratios(res: dict) -> dict:
    """ragkit / bm25s for each measure both report (below 1: ragkit takes less); a save is divided by the
    bm25s save that writes the like of it (:data:`_PEER_STEP`): ragkit's index-only ``save_index`` by bm25s's
    ``save``, ragkit's whole ``save`` (documents and checksums too) by bm25s's ``save_with_corpus``."""
    out = {}
    for mine, peer in (("fit", "peer_fit"), ("load_mmap", "peer_load_mmap")):
        for key, v in res.get(mine, {}).items():
            theirs = res.get(peer, {})
            # (a load step is named after its phase)
            w = theirs.get(_PEER_STEP.get(key, key), theirs.get(peer) if key == mine else None)
            if isinstance(v, dict) and isinstance(w, dict):
                for m in ("s", "peak_extra_MB"):
                    if m == "s" and key.startswith("search_"):  # one call: its time is the search phase's
                        continue
                    if w.get(m):
                        out[f"{mine}.{key}.{m}"] = round(v[m] / w[m], 2)
            elif key in ("held_bytes_per_posting", "saved_MB") and w:
                out[f"{mine}.{key}"] = round(v / w, 2)
    best = res.get("search", {}).get("best_s", {})
    for name, mine, peer in (("search.s", "ragkit", "bm25s"), ("search_mmap.s", "ragkit_mmap", "bm25s_mmap"),
                             ("search.s_vs_numba", "ragkit", "bm25s_numba"),
                             ("search_mmap.s_vs_numba", "ragkit_mmap", "bm25s_numba_mmap")):
        if best.get(mine) and best.get(peer):
            out[name] = round(best[mine] / best[peer], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", nargs="?", default=None, help="a BEIR folder or name (required unless --quick)")
    ap.add_argument("--queries", type=int, default=None, help="queries searched (default 1000; 50 with --quick)")
    ap.add_argument("--k", type=int, default=None, help="documents per query (default 1000; 100 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="SciFact, 50 queries at k = 100 unless --queries / --k say otherwise (the tests run it)")
    ap.add_argument("--out", default=None,
                    help="JSON file for the results (default bench/out/bm25_memory.json, bm25_memory_quick.json with "
                         "--quick; in the folder RAGKIT_BENCH_OUT names instead of bench/out, when set)")
    ap.add_argument("--search-seconds", type=float, default=0.5,
                    help="search phase: interleaved rounds until each searcher is timed this long in all")
    ap.add_argument("--search-repeat", type=int, default=3, help="search phase: at least this many rounds")
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--saved", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.quick:
        a.folder = a.folder or str(SCIFACT)
    a.queries = (50 if a.quick else 1000) if a.queries is None else a.queries
    a.k = (100 if a.quick else 1000) if a.k is None else a.k
    if a.queries < 1 or a.k < 1:
        ap.error(f"--queries and --k must be at least 1; got --queries {a.queries}, --k {a.k}")
    if a.folder is None:
        ap.error("give a BEIR folder or name (or --quick)")
    if a.phase:
        print(json.dumps(_phase(a.phase, a.folder, a.saved, a.queries, a.k, a.search_repeat, a.search_seconds)))
        return
    a.out = a.out or str(OUT / ("bm25_memory_quick.json" if a.quick else "bm25_memory.json"))
    machine = print_machine(threads=1)
    saved = tempfile.mkdtemp(prefix="bm25_memory_")
    res: dict = {"machine": machine, "folder": a.folder, "queries": a.queries, "k": a.k}
    try:
        for phase in ("fit", "load", "load_mmap", "peer_fit", "peer_load_mmap", "search"):
            sub = "bm25s" if phase.startswith("peer_") else "bm25"
            where = saved if phase == "search" else os.path.join(saved, sub)  # search: both saved indexes
            cmd = [sys.executable, __file__, a.folder, "--phase", phase, "--saved", where,
                   "--queries", str(a.queries), "--k", str(a.k), "--search-repeat", str(a.search_repeat),
                   "--search-seconds", str(a.search_seconds)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
                res["failed"] = {"phase": phase, "returncode": proc.returncode, "stderr_tail": tail}
                write_atomic(a.out, json.dumps(res, indent=1))
                sys.exit(f"bm25_memory: phase {phase!r} failed (exit status {proc.returncode}); its stderr ends:\n"
                         f"{tail}\nthe phases that finished are in {a.out}")
            got = json.loads(proc.stdout.splitlines()[-1])
            print(phase, json.dumps(got), flush=True)
            res[phase] = got
    finally:
        shutil.rmtree(saved, ignore_errors=True)
    res["ragkit_vs_bm25s"] = _ratios(res)
    srch = res["search"]
    print(f"searches: 1 thread each, {a.queries} queries at k = {a.k}, query text to top k; best of {srch['rounds']} "
          f"interleaved rounds (each searcher timed >= {srch['min_seconds']:g} s in all), first calls apart: "
          + ", ".join(f"{key} {v * 1e3:.1f} ms (first {srch['first_call_s'][key] * 1e3:.0f})"
                      for key, v in srch["best_s"].items())
          + (f"; bm25s_numba {srch['bm25s_numba']}" if "bm25s_numba" in srch else ""), flush=True)
    saves = [(res[ph][step]["s"], what) for ph, step, what in (
        ("fit", "save", "ragkit save (index, params.json, corpus.jsonl, checksums.json)"),
        ("fit", "save_index", "ragkit save_index (index and params.json only)"),
        ("peer_fit", "save", "bm25s save (its index only)"),
        ("peer_fit", "save_with_corpus", "bm25s save with corpus (its index and corpus.jsonl)"))
        if isinstance(res.get(ph, {}).get(step), dict)]
    if saves:
        print("saves: " + ", ".join(f"{what} {s:.3f} s" for s, what in saves) + "; ratios: fit.save_index.s = "
              "ragkit save_index / bm25s save, fit.save.s = ragkit save / bm25s save with corpus", flush=True)
    print("ragkit / bm25s (below 1: ragkit takes less):", json.dumps(res["ragkit_vs_bm25s"]), flush=True)
    write_atomic(a.out, json.dumps(res, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
