"""BM25 memory and persistence at scale: fit, bytes held, save, load (with and without ``mmap``), search.

Usage::

    python bench/bm25_memory.py /tmp/scale-rev/syn100k          # a BEIR folder (e.g. scale-rev's gen.py output)
    python bench/bm25_memory.py FOLDER --queries 1000 --k 1000 --out bench/out/bm25_memory.json

Each phase runs in a fresh Python process, so its peak is its own: a thread samples the resident set
(RSS, every 20 ms) and a phase reports its wall seconds, its peak above the RSS it started at
(``peak_extra_MB``) and what it keeps (``kept_MB``).  The corpus is read before a phase starts
(``load_beir``; not counted) and handed to ``BM25.load(corpus=...)``, so the load figures are the
index's own (the saved checksums are verified, as by default).

* ``fit``: ``BM25(k).fit(corpus)``; then the bytes of the arrays the retriever holds (per posting),
  ``--queries`` searches (top ``--k``), ``save`` and the saved folder's size.
* ``load`` / ``load_mmap``: ``BM25.load(folder, corpus, mmap=...)`` and the same searches.
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


def _phase(name: str, folder: str, saved: str, n_queries: int, k: int) -> dict:
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
                     "kept_MB": round((rss - base) / 2**20)}
        return res

    if name == "fit":
        bm = measure("fit", lambda: BM25(k=k).fit(data.corpus))
        held = _held_bytes(bm)
        nnz = int(bm.doc_freqs().sum()) if hasattr(bm, "doc_freqs") else int(bm.tf_.nnz)
        out["postings"], out["held_MB"], out["held_bytes_per_posting"] = nnz, round(held / 2**20), round(held / nnz, 2)
        shutil.rmtree(saved, ignore_errors=True)
        measure("save", lambda: bm.save(saved))
        out["saved_MB"] = round(sum(p.stat().st_size for p in Path(saved).iterdir()
                                    if p.name != "corpus.jsonl") / 2**20)
    else:
        bm = measure(name, lambda: BM25.load(saved, corpus=data.corpus, mmap=name == "load_mmap"))
        out["held_MB"] = round(_held_bytes(bm) / 2**20)
    run = measure(f"search_{len(qs.ids)}q_k{k}", lambda: bm.search(qs))
    out["first_ranking"] = run.doc_ids[0][:5].tolist()
    stop.set()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--out", default=None, help="JSON file for the results (default: print only)")
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--saved", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.phase:
        print(json.dumps(_phase(a.phase, a.folder, a.saved, a.queries, a.k)))
        return
    saved = tempfile.mkdtemp(prefix="bm25_memory_")
    res: dict = {"folder": a.folder, "queries": a.queries, "k": a.k}
    try:
        for phase in ("fit", "load", "load_mmap"):
            cmd = [sys.executable, __file__, a.folder, "--phase", phase, "--saved", os.path.join(saved, "bm25"),
                   "--queries", str(a.queries), "--k", str(a.k)]
            got = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            print(phase, json.dumps(got), flush=True)
            res[phase] = got
    finally:
        shutil.rmtree(saved, ignore_errors=True)
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
