"""Dense index benchmark: ragkit storage/search configurations vs faiss-cpu and plain numpy.

Usage::

    python bench/dense.py                    # SciFact (MiniLM) + synthetic scale set of 1M vectors
    python bench/dense.py --n 200000         # smaller scale set
    python bench/dense.py --quick            # smoke run: 1,000 SciFact docs + the test queries' relevant ones,
                                             # 5k synthetic vectors
    python bench/dense.py --no-scifact       # synthetic part only

For each configuration, in one run: build time, index bytes held in memory (ragkit:
``VectorIndex.memory_bytes()`` = codes + graph + calibration, *not* memory-mapped floats;
faiss: serialised index size; numpy: array bytes), for rescoring configurations also the
resident bytes of the memory-mapped float file after the queries (``/proc/self/smaps``),
queries/second (query vectors given; encoding excluded; whole batch per call), recall@10
against exact float32 search, and (SciFact) nDCG@10 on the test qrels.

Timing: every configuration of a table (SciFact, synthetic) is built first (each build timed alone; all of a
table's indexes are held at once), then searched once each (warm-up) and in interleaved rounds, each round
calling every configuration once in an order shuffled afresh per round (seeded: the same orders every run),
until every configuration has been timed ``--min-seconds`` in all (0.5 s; 0.05 s with ``--quick``), and at
least ``--repeat`` rounds; a
q/s is the configuration's best round (the rounds are printed and kept in the JSON, ``rounds``). So every
ratio (``qps/base``, ragkit over faiss, ragkit over raw usearch: ``raw usearch ef=N`` runs in the synthetic
table's rounds) divides timings from the same rounds, not timings taken minutes apart. A multi-threaded HNSW
build is not deterministic (usearch's and so ragkit's; on the 1,227-document ``--quick`` slice recall@10 at ef
32 ranged 0.970-0.992 over 25 builds, identical every time with one thread), so each graph, ragkit's and
faiss's, is also built ``--builds`` times (default 3, ``--quick`` 2): ``recall@10_median`` / ``_min``
(``ndcg@10_...``) over the builds beside ``recall@10``, the timed build's (the one its q/s and the
``--at-recall`` interpolation use).

The synthetic scale set: ``n`` vectors made from the SciFact document vectors plus
Gaussian noise (``--noise`` times the corpus's spread), re-normalised; queries are SciFact
test queries plus the same noise.  ``--noise-shape diag`` draws the noise independently per
dimension (per-dimension std of the corpus), ``cov`` with the corpus's full covariance, so
it keeps the real vectors' spectrum; the run prints the participation ratio and local
intrinsic dimension of the corpus and of the synthetic set, to show which one is realistic.  On the
synthetic set the int8 graph is built twice, in ragkit's insertion order (``reorder``, the default)
and in the given order, and faiss ``HNSWFlat`` also with its vectors added in ragkit's order (ids
mapped back: ``faiss HNSWFlat ef=N (ragkit's insertion order)``, matched by ``--only 'faiss HNSWFlat ef'``
like the given-order rows), so the order's effect is measured in the same run for both libraries.
The int8 graph's faiss peer is ``faiss HNSWSQ8 + rescore x4``: ``IndexRefineFlat(IndexHNSWSQ(QT_8bit))``,
``k_factor=4`` (its float copy held in memory and counted, where ragkit memory-maps its floats).

With an ef sweep, each graph configuration with >= 2 ef points gets its queries/second at the
``--at-recall`` targets (0.90, 0.95), log-interpolated between the two ef points whose recall@10
brackets the target ("not reached" past the sweep, no extrapolation), and the ratios of each
ragkit graph to each faiss graph (both insertion orders), to ``ragkit exact f32`` and to
``faiss IndexFlatIP`` (also in the JSON, ``at_recall``).  Writes ``bench/out/dense.json`` and
``bench/out/dense.png`` (recall vs queries/sec, marker area ~ memory); ``_quick`` suffixes with ``--quick``;
in the folder ``RAGKIT_BENCH_OUT`` names instead of bench/out, when set, or ``--out``.

The README's 1M run::

    python bench/dense.py --no-scifact --ef 128,256,512,1024 \
        --only 'exact f32|rescore x4|faiss HNSWFlat ef|IndexFlatIP'
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
from functools import partial
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

# (run as a script, this folder is on sys.path; ragkit is the installed one: the checkout's root is not put on
# sys.path, where its ragkit/ folder, which lacks ragkit.pipelines and the others, would hide a regular install)
from _common import (  # noqa: E402
    OUT,
    SCIFACT,
    add_timing_args,
    best_of as timed,
    exact_topk,
    interleaved,
    print_machine,
    recall,
    timing_args,
    write_atomic,
)


def ndcg10(rows: np.ndarray, doc_ids: np.ndarray, qids: list[str], qrels: dict) -> float:
    out = []
    for r, q in zip(rows, qids):
        rel = qrels.get(q, {})
        gains = np.array([rel.get(doc_ids[i], 0) if i >= 0 else 0 for i in r[:10]], dtype=float)
        dcg = float(((2 ** gains - 1) / np.log2(np.arange(2, len(gains) + 2))).sum())
        ideal = np.sort(np.array([g for g in rel.values() if g > 0], dtype=float))[::-1][:10]
        idcg = float(((2 ** ideal - 1) / np.log2(np.arange(2, len(ideal) + 2))).sum())
        out.append(dcg / idcg if idcg > 0 else 0.0)
    return float(np.mean(out))


class Config(NamedTuple):
    """One configuration to time: ``build() -> obj``, ``search(obj) -> rows (n_q, >= k)``, ``mem(obj) -> bytes``,
    ``extra(obj) -> dict`` of more fields; ``rebuild``: for a graph (HNSW) configuration, ``(graph key, a fresh
    build)``, called again for ``--builds`` (rows sharing a key share each fresh build)."""

    name: str
    family: str
    build: Callable[[], Any]
    search: Callable[[Any], Any]
    mem: Callable[[Any], int]
    extra: Callable[[Any], dict] | None = None
    rebuild: tuple[str, Callable[[], Any]] | None = None


def run_configs(d: np.ndarray, q: np.ndarray, ref: np.ndarray, configs: list[Config], *, k: int, repeat: int,
                quality=None, builds: int = 1, min_seconds: float = 0.0, timing: dict | None = None,
                threads: int | None = None) -> list[dict]:
    """Build every configuration (each build timed alone), then time their searches together: one warm-up
    call each, then rounds of :func:`interleaved` over all of them (at least ``repeat``, and until each search
    has been timed ``min_seconds`` in all), so the q/s of a table (and each ratio made from it) come from the
    same rounds; a configuration's q/s is its best round.  ``timing``, when given, gets the ``rounds`` and
    ``min_seconds``.

    A multi-threaded HNSW build is not deterministic, and one build's recall can be lucky or unlucky, so with
    ``builds > 1`` each graph configuration (``rebuild`` set) is also searched on ``builds - 1`` fresh builds
    of its graph (untimed, one at a time): ``recall@10_median`` / ``recall@10_min`` (and ``ndcg@10_...``) over
    all ``builds``, the values in ``recall@10_builds``.  ``recall@10`` stays the timed build's, the one
    its q/s (and the ``--at-recall`` interpolation) comes from.

    ``threads`` (a count of 1 or more; ``None``: no limit): the builds and searches run inside
    ``threadpoolctl.threadpool_limits(threads)``, so numpy's BLAS (``numpy Q@D.T``, ragkit's exact searches) and
    OpenMP use as many threads as faiss and usearch are given (BLAS used every CPU whatever ``--threads`` said)."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    if threads is not None:
        check_threads("run_configs", threads, none_ok=True)
    with threadpool_limits(threads) if threads is not None else nullcontext():
        objs, build_s = {}, {}
        for c in configs:
            try:
                build_s[c.name], obj = timed(c.build)
                cold_floats(obj)
                c.search(obj)  # warm-up
            except Exception as e:  # a peer missing or failing is reported, not fatal
                print(f"  {c.name}: FAILED {type(e).__name__}: {e}")
                continue
            objs[c.name] = obj
        live = [c for c in configs if c.name in objs]
        best, last, rounds = interleaved({c.name: partial(c.search, objs[c.name]) for c in live}, repeat,
                                         min_seconds)
        print(f"  {len(live)} configurations built; their searches timed in {rounds} interleaved rounds, order "
              f"shuffled per round (after one warm-up call each; each search timed >= {min_seconds:g} s in all)",
              flush=True)
        if timing is not None:
            timing.update(rounds=rounds, min_seconds=min_seconds)
        rows_out = []
        for c in live:
            got = last[c.name]
            row = {"config": c.name, "family": c.family, "build_s": round(build_s[c.name], 3),
                   "memory_bytes": int(c.mem(objs[c.name])), "qps": round(len(q) / best[c.name], 1),
                   "recall@10": round(recall(got, ref, 10), 4)}
            if quality is not None:
                row["ndcg@10"] = round(quality(got), 4)
            row.update(c.extra(objs[c.name]) if c.extra else {})
            rows_out.append(row)
        objs.clear()
        if builds > 1:
            build_spread(live, rows_out, ref, quality, builds)
        for row in rows_out:
            print("  " + "  ".join(f"{k_}={v}" for k_, v in row.items() if not isinstance(v, list)), flush=True)
        return rows_out


def check_threads(where: str, threads: int, none_ok: bool = False) -> None:
    """Refuse a ``threads`` below 1 (0 would be usearch's all the machine's CPUs; faiss's ``omp_set_num_threads(0)``
    and ``threadpool_limits(0)`` are undefined), naming the function ``where`` (``none_ok``: it takes None too)."""
    if threads < 1:
        raise ValueError(f"{where}: threads: expected a thread count of 1 or more ({'or None: no limit; ' * none_ok}"
                         f"resolve 0 or -1, all cores, with ragkit._cpus.thread_count), got {threads}")


def build_spread(configs: list[Config], rows: list[dict], ref: np.ndarray, quality, builds: int) -> None:
    """Add to each graph configuration's row its recall@10 (and nDCG@10) over ``builds`` builds: the timed
    one (already in the row) and ``builds - 1`` fresh ones, each graph built once per round for every row
    that shares it, searched, and dropped before the next."""
    by_name = {r["config"]: r for r in rows}
    groups: dict[str, tuple[Callable[[], Any], list[Config]]] = {}
    for c in configs:
        if c.rebuild is not None:
            groups.setdefault(c.rebuild[0], (c.rebuild[1], []))[1].append(c)
    got_by: dict[str, list] = {c.name: [] for _, cs in groups.values() for c in cs}
    for fn, cs in groups.values():
        for _ in range(builds - 1):
            obj = fn()
            for c in cs:
                got_by[c.name].append(c.search(obj))
            del obj
    for name, gots in got_by.items():
        row = by_name[name]
        rec = [row["recall@10"]] + [round(recall(g, ref, 10), 4) for g in gots]
        row.update({"builds": len(rec), "recall@10_median": round(float(np.median(rec)), 4),
                    "recall@10_min": min(rec), "recall@10_builds": rec})
        if quality is not None:
            nd = [row["ndcg@10"]] + [round(quality(g), 4) for g in gots]
            row.update({"ndcg@10_median": round(float(np.median(nd)), 4), "ndcg@10_min": min(nd),
                        "ndcg@10_builds": nd})


def cold_floats(obj) -> None:
    """Start a freshly built index's float file cold, as after ``load``: write it back, drop it from the
    page cache and map it afresh (untimed).  Right after a build every page of the file is cached, and
    each page fault then maps cached neighbours too (fault-around), so the resident size of the mapping
    would count pages no search asked for.  A shared (cached) index is made cold only once."""
    from ragkit.retrievers._index_files import _random_access

    floats = getattr(obj, "floats", None)
    if floats is None or getattr(obj, "_bench_cold", False) or not hasattr(os, "posix_fadvise"):
        return  # (no posix_fadvise, e.g. macOS: the file stays cached and resident sizes read high)
    fd = os.open(floats.filename, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    obj.floats = _random_access(np.load(floats.filename, mmap_mode="r"))
    obj._bench_cold = True


def configs_for(d: np.ndarray, k: int, scale: bool, efs: list[int], threads: int, m: int = 16,
                graph_reduce: tuple[str, ...] = (), graph_oversample: int = 8,
                raw_usearch: bool = False) -> list[Config]:
    """The configurations to time; ``m`` is the HNSW graph degree of both libraries (connectivity / M).

    ``graph_reduce`` (synthetic set only): also an int8 graph over each reduction given (e.g.
    ``pca:256``), its ``graph_oversample x k`` shortlist rescored with the full float vectors.
    ``raw_usearch``: also ``raw usearch ef=N`` (family ``usearch-raw``): the ``ragkit hnsw f32`` graph
    searched through usearch's own ``search``, timed in the same rounds as the ragkit rows.

    ``threads``, a count of 1 or more (``main`` resolves ``--threads`` 0 or -1, all cores, once, with
    :func:`ragkit._cpus.thread_count`: the CPUs this process may use), is given as the same explicit count to
    ragkit, raw usearch and faiss (usearch's own 0 and ``os.cpu_count()`` count the machine's CPUs, more than a
    ``taskset`` or a container lets the process run on); numpy's BLAS (``numpy Q@D.T``, ragkit's exact searches)
    gets it from :func:`run_configs` (``threads``).
    """
    from ragkit.retrievers._index import VectorIndex
    from ragkit.retrievers._index_files import resident_bytes

    check_threads("configs_for", threads)

    def vi(**kw):
        return lambda: VectorIndex(threads=threads, connectivity=m, **kw).build(d)

    def vs(obj):
        return obj.search(qbox[0], k)[0]

    def vmem(obj):
        return obj.memory_bytes()

    def vres(obj):
        if obj.floats is None:
            return {}
        return {"floats_resident_bytes": resident_bytes(obj.floats.filename),
                "floats_file_bytes": int(os.path.getsize(obj.floats.filename))}

    def one(name: str, build: Callable[[], Any], extra=None) -> Config:  # a graph built for its row alone
        return Config(name, "ragkit", build, vs, vmem, extra, rebuild=(name, build))

    cfgs: list[Config] = [
        Config("numpy Q@D.T", "numpy", lambda: np.ascontiguousarray(d), lambda x: exact_topk(x, qbox[0], k),
               lambda x: x.nbytes),
        Config("ragkit exact f32", "ragkit", vi(search="exact"), vs, vmem),
    ]
    if not scale:
        cfgs += [
            Config("ragkit exact f16", "ragkit", vi(search="exact", dtype="f16"), vs, vmem),
            Config("ragkit exact i8", "ragkit", vi(search="exact", dtype="i8"), vs, vmem),
            Config("ragkit exact b1 (bits only)", "ragkit", vi(search="exact", dtype="b1"), vs, vmem),
            Config("ragkit exact b1 + rescore x4", "ragkit",
                   vi(search="exact", dtype="b1", rescore=True, oversample=4), vs, vmem, vres),
            Config("ragkit exact b1 + rescore x10", "ragkit",
                   vi(search="exact", dtype="b1", rescore=True, oversample=10), vs, vmem, vres),
            Config("ragkit exact pca:192", "ragkit", vi(search="exact", reduce="pca:192"), vs, vmem),
            Config("ragkit exact pca:128", "ragkit", vi(search="exact", reduce="pca:128"), vs, vmem),
            Config("ragkit exact pca:64", "ragkit", vi(search="exact", reduce="pca:64"), vs, vmem),
            Config("ragkit exact pca:128 + rescore x4", "ragkit", vi(search="exact", reduce="pca:128", rescore=True),
                   vs, vmem, vres),
            Config("ragkit exact pca:128 whiten", "ragkit", vi(search="exact", reduce="pca:128", whiten=True),
                   vs, vmem),
            Config("ragkit exact i8 pca:192", "ragkit", vi(search="exact", dtype="i8", reduce="pca:192"), vs, vmem),
            one("ragkit hnsw i8", vi(search="hnsw", dtype="i8")),
            one("ragkit hnsw b1 + rescore x4", vi(search="hnsw", dtype="b1", rescore=True), vres),
        ]

    # HNSW sweeps: one graph per kind, built once (the build time on its first row) and searched at each ef
    def rs(obj, ef):
        obj.usearch.expansion_search = ef
        return obj.search(qbox[0], k)[0]

    def raw(obj, ef):  # usearch's own search on ragkit's graph (keys are ragkit's slots = rows)
        obj.usearch.expansion_search = ef
        return np.asarray(obj.usearch.search(qbox[0], k, threads=threads).keys).astype(np.int64)

    def sweep(name: str, key: str, fn: Callable[[], Any], extra=None) -> list[Config]:
        return [Config(f"{name} ef={ef}", "ragkit-hnsw", partial(_cached, key, fn), partial(rs, ef=ef), vmem,
                       extra, rebuild=(key, fn)) for ef in efs]

    cfgs += sweep("ragkit hnsw f32", "ragkit_hnsw", vi(search="hnsw"))
    if raw_usearch:
        cfgs += [Config(f"raw usearch ef={ef}", "usearch-raw", partial(_cached, "ragkit_hnsw", vi(search="hnsw")),
                        partial(raw, ef=ef), vmem) for ef in efs]
    if scale:  # int8 graph (4x smaller codes), float rescore of a 4 x k shortlist
        cfgs += sweep("ragkit hnsw i8 + rescore x4", "ragkit_hnsw_i8", vi(search="hnsw", dtype="i8", rescore=True),
                      vres)
        for red in graph_reduce:  # an int8 graph over reduced vectors, full-vector rescoring
            cfgs += sweep(f"ragkit hnsw i8 {red} + rescore x{graph_oversample}", f"ragkit_hnsw_i8_{red}",
                          vi(search="hnsw", dtype="i8", rescore=True, reduce=red, oversample=graph_oversample), vres)
        # the same kind of graph, inserted in the given order (reorder=False)
        cfgs += sweep("ragkit hnsw i8 + rescore x4, given order", "ragkit_hnsw_i8_noreorder",
                      vi(search="hnsw", dtype="i8", rescore=True, reorder=False), vres)
    try:
        import faiss  # noqa: F401

        faiss.omp_set_num_threads(threads)
        cfgs += faiss_configs(d, k, efs, scale, m)
    except ImportError:
        print("  faiss-cpu not installed: skipping the faiss peers")
    return cfgs


def faiss_configs(d: np.ndarray, k: int, efs: list[int], scale: bool, m: int = 16) -> list[Config]:
    import faiss

    dim = d.shape[1]

    def ser(ix):
        return int(faiss.serialize_index(ix).nbytes)

    def flat():
        ix = faiss.IndexFlatIP(dim)
        ix.add(np.ascontiguousarray(d))
        return ix

    def hnsw():
        ix = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        ix.hnsw.efConstruction = 128
        ix.add(np.ascontiguousarray(d))
        return ix

    def fsearch(ix):
        return ix.search(qbox[0], k)[1]

    cfgs = [Config("faiss IndexFlatIP", "faiss", flat, fsearch, ser)]
    if not scale:
        def binary():
            ix = faiss.IndexBinaryFlat(8 * ((dim + 7) // 8))
            ix.add(np.packbits(d > 0, axis=1))
            return ix

        def bsearch(ix, m=4):  # Hamming top m*k, then the same float rescoring as ragkit
            cand = ix.search(np.packbits(qbox[0] > 0, axis=1), m * k)[1]
            s = np.einsum("qcd,qd->qc", d[cand], qbox[0])
            return np.take_along_axis(cand, np.argsort(-s, axis=1, kind="stable"), 1)[:, :k]

        def bmem(ix):
            return int(faiss.serialize_index_binary(ix).nbytes)

        cfgs.append(Config("faiss IndexBinaryFlat + rescore x4", "faiss", binary, bsearch, bmem))
    for ef in efs:
        def fs(ix, ef=ef):
            ix.hnsw.efSearch = ef
            return ix.search(qbox[0], k)[1]

        cfgs.append(Config(f"faiss HNSWFlat ef={ef}", "faiss-hnsw", partial(_cached, "faiss_hnsw", hnsw), fs, ser,
                           rebuild=("faiss_hnsw", hnsw)))
    if scale:  # faiss given ragkit's insertion order (ids mapped back): does the order help it too?
        from ragkit.retrievers._locality import insertion_order

        def hnsw_ordered():
            order = insertion_order(d)
            ix = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
            ix.hnsw.efConstruction = 128
            ix.add(np.ascontiguousarray(d[order]))
            return ix, order

        for ef in efs:
            def fso(obj, ef=ef):
                obj[0].hnsw.efSearch = ef
                return obj[1][obj[0].search(qbox[0], k)[1]]

            cfgs.append(Config(f"faiss HNSWFlat ef={ef} (ragkit's insertion order)", "faiss-hnsw",
                               partial(_cached, "faiss_hnsw_ordered", hnsw_ordered), fso, lambda obj: ser(obj[0]),
                               rebuild=("faiss_hnsw_ordered", hnsw_ordered)))

        def hnsw_sq():  # the int8 graph's peer: an 8-bit scalar-quantised graph, its 4 x k shortlist rescored
            base = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, m, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efConstruction = 128
            x = np.ascontiguousarray(d)
            base.train(x)
            ix = faiss.IndexRefineFlat(base)  # keeps its own float copy, in memory
            ix.k_factor = 4
            ix.add(x)
            return ix, base

        for ef in efs:
            def fsq(obj, ef=ef):
                obj[1].hnsw.efSearch = ef
                return obj[0].search(qbox[0], k)[1]

            cfgs.append(Config(f"faiss HNSWSQ8 + rescore x4 ef={ef}", "faiss-hnsw",
                               partial(_cached, "faiss_hnsw_sq", hnsw_sq), fsq, lambda obj: ser(obj[0]),
                               lambda obj: {"graph_bytes": ser(obj[1])}, rebuild=("faiss_hnsw_sq", hnsw_sq)))
    return cfgs


_CACHE: dict = {}
qbox: list = [None]


def _cached(key, fn):
    """Build once, reuse across the ef sweep (build time reported on the first row)."""
    if key not in _CACHE:
        _CACHE[key] = fn()
    return _CACHE[key]


def raw_usearch_pairs(rows: list[dict], efs: list[int]) -> list[dict]:
    """The same HNSW built by ragkit, searched through ``VectorIndex`` (rows ``ragkit hnsw f32 ef=N``) and
    through raw usearch (``raw usearch ef=N``), both timed in the same interleaved rounds."""
    by = {r["config"]: r for r in rows}
    out = []
    for ef in efs:
        rk, rw = by.get(f"ragkit hnsw f32 ef={ef}"), by.get(f"raw usearch ef={ef}")
        if rk is None or rw is None:
            continue
        out.append({"ef": ef, "ragkit_qps": rk["qps"], "usearch_qps": rw["qps"],
                    "ragkit/usearch": round(rk["qps"] / rw["qps"], 3), "recall@10": rk["recall@10"],
                    "usearch_recall@10": rw["recall@10"]})
    return out


def synthetic(base: np.ndarray, qbase: np.ndarray, n: int, n_q: int, noise: float, seed: int = 0,
              shape: str = "diag") -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors: random corpus vectors plus Gaussian noise, re-normalised; ``n_q`` queries alike.

    ``shape="diag"``: independent noise per dimension with the corpus's per-dimension std.
    ``shape="cov"``: noise with the corpus's full covariance (``z @ diag(s) @ Vt`` from the SVD
    of the centred corpus), i.e. along the directions the real vectors vary in.  Both carry the
    same total variance (``noise**2 * trace(cov)``); ``diag`` spreads it evenly over all
    dimensions, ``cov`` keeps the corpus's spectrum (see :func:`geometry`).
    """
    rng = np.random.default_rng(seed)
    dim = base.shape[1]
    if shape == "diag":
        std = base.std(axis=0).astype(np.float32)

        def draw(m: int) -> np.ndarray:
            return noise * std * rng.standard_normal((m, dim), dtype=np.float32)
    elif shape == "cov":
        _, sv, vt = np.linalg.svd(base - base.mean(0), full_matrices=False)
        mix = ((sv / np.sqrt(len(base)))[:, None] * vt).astype(np.float32)  # mix.T @ mix = covariance

        def draw(m: int) -> np.ndarray:
            return noise * rng.standard_normal((m, len(mix)), dtype=np.float32) @ mix
    else:
        raise ValueError(f"--noise-shape: expected 'diag' or 'cov', got {shape!r}")
    d = np.empty((n, dim), np.float32)
    for s0 in range(0, n, 100_000):
        m = min(n, s0 + 100_000) - s0
        x = base[rng.integers(0, len(base), m)] + draw(m)
        d[s0: s0 + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = qbase[rng.integers(0, len(qbase), n_q)] + draw(n_q)
    return d, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def geometry(d: np.ndarray, q: np.ndarray, sample: int, k: int = 20, seed: int = 0) -> dict:
    """Two measures of how high-dimensional a vector set is, comparable across set sizes.

    ``participation_ratio``: ``(sum l)^2 / sum l^2`` over the covariance eigenvalues ``l``
    (384 for isotropic data, a few dozen for real sentence embeddings).  ``lid``: the mean
    maximum-likelihood local intrinsic dimension (Levina & Bickel 2004) of the queries'
    ``k`` nearest neighbours, on a random ``sample`` of the set (the same size for every set
    compared, since LID depends on the neighbourhood scale).
    """
    rng = np.random.default_rng(seed)
    sub = d[np.sort(rng.choice(len(d), min(sample, len(d)), replace=False))]
    lam = np.linalg.eigvalsh(np.cov(sub, rowvar=False))
    from ragkit._topk import topk_rows

    dist = np.sqrt(np.maximum(2 - 2 * topk_rows(q @ sub.T, k)[1].astype(np.float64), 1e-12))  # unit vectors
    lid = -1.0 / np.mean(np.log(dist[:, :-1] / dist[:, -1:]), axis=1)
    return {"participation_ratio": round(float(lam.sum() ** 2 / (lam ** 2).sum()), 1),
            "lid": round(float(np.mean(lid)), 1), "sample": len(sub), "k": k}


def table(rows: list[dict], base_name: str, keys: list[str]) -> str:
    if not rows:
        return "(no configuration selected)"
    base = next((r for r in rows if r["config"] == base_name), rows[0])
    w = max([40] + [len(r["config"]) for r in rows])
    head = {"recall@10_median": "rec@10 med", "recall@10_min": "rec@10 min", "ndcg@10_median": "nDCG@10 med",
            "ndcg@10_min": "nDCG@10 min"}  # (over --builds builds of a graph)
    lines = [f"{'config':{w}s} " + " ".join(f"{head.get(k_, k_):>12s}" for k_ in keys)
             + f" {'qps/base':>9s} {'mem/base':>9s}"]
    for r in rows:
        vals = " ".join(f"{r.get(k_, ''):>12}" for k_ in keys)
        lines.append(f"{r['config']:{w}s} {vals} {r['qps'] / base['qps']:9.2f} "
                     f"{r['memory_bytes'] / base['memory_bytes']:9.4f}")
    return "\n".join(lines)


BUILD_KEYS = ["recall@10_median", "recall@10_min", "ndcg@10_median", "ndcg@10_min"]
_EF_NAME = re.compile(r"(.*) ef=(\d+)(.*)")
BASELINES = ("ragkit exact f32", "faiss IndexFlatIP")


def qps_at_recall(recalls: list[float], qps: list[float], target: float) -> float | None:
    """Queries/second at recall@10 ``target`` on one graph's ef sweep, interpolated linearly in
    log(q/s) between the two points (sorted by recall) whose recalls bracket ``target``; ``None``
    when no two do (the sweep never reaches it, or starts above it): no extrapolation."""
    r = np.asarray(recalls, dtype=np.float64)
    lq = np.log(np.asarray(qps, dtype=np.float64))
    order = np.lexsort((lq, r))  # by recall, then q/s
    r, lq = r[order], lq[order]
    if len(r) < 2 or not r[0] <= target <= r[-1]:
        return None
    return float(np.exp(np.interp(target, r, lq)))


def at_recall(rows: list[dict], targets: list[float], baselines: tuple[str, ...] = BASELINES) -> dict:
    """For each graph configuration (rows named ``<graph> ef=<N>[<suffix>]``) with >= 2 ef points:
    its q/s at each recall@10 target (:func:`qps_at_recall`, with the bracketing ef values or why
    there is no value), and the ratios, at each target, of every ragkit graph to every faiss graph
    and of every graph to each of ``baselines`` (exact searches, timed once) present in ``rows``."""
    graphs: dict[str, dict] = {}
    for row in rows:
        m = _EF_NAME.fullmatch(row["config"])
        if m:
            g = graphs.setdefault(m[1] + m[3], {"family": row["family"], "points": []})
            g["points"].append({"ef": int(m[2]), "recall@10": row["recall@10"], "qps": row["qps"]})
    graphs = {name: g for name, g in graphs.items() if len(g["points"]) >= 2}
    for g in graphs.values():
        by_ef = sorted(g["points"], key=lambda p: p["ef"])  # a larger ef does more work: q/s should not rise
        g["qps_rose_with_ef"] = [f"ef {a['ef']} {a['qps']:,.0f} -> ef {b['ef']} {b['qps']:,.0f} q/s"
                                 for a, b in zip(by_ef, by_ef[1:]) if b["qps"] > 1.1 * a["qps"]]
        pts = sorted(g["points"], key=lambda p: (p["recall@10"], p["qps"]))
        rec = [p["recall@10"] for p in pts]
        g["at"] = {}
        for t in targets:
            q = qps_at_recall(rec, [p["qps"] for p in pts], t)
            if q is not None:
                lo = max(i for i, r in enumerate(rec) if r <= t)
                hi = min(i for i, r in enumerate(rec) if r >= t)
                g["at"][f"{t:g}"] = {"qps": round(q, 1), "between_ef": sorted({pts[lo]["ef"], pts[hi]["ef"]})}
            elif t > rec[-1]:
                g["at"][f"{t:g}"] = {"qps": None, "note": f"not reached (best {rec[-1]} at ef={pts[-1]['ef']})"}
            else:
                g["at"][f"{t:g}"] = {"qps": None, "note": f"below the sweep (lowest {rec[0]} at ef={pts[0]['ef']})"}
    base = {b: next(r["qps"] for r in rows if r["config"] == b) for b in baselines
            if any(r["config"] == b for r in rows)}
    ratios = []
    for t in targets:
        for name, g in graphs.items():
            peers = [(p, graphs[p]["at"][f"{t:g}"]["qps"]) for p in graphs
                     if g["family"].startswith("ragkit") and graphs[p]["family"].startswith("faiss")]
            for other, q_other in peers + list(base.items()):
                q = g["at"][f"{t:g}"]["qps"]
                ratios.append({"recall@10": t, "config": name, "vs": other,
                               "ratio": None if q is None or q_other is None else round(q / q_other, 3)})
    return {"method": "q/s log-interpolated in recall@10 between the bracketing ef points; no extrapolation",
            "targets": list(targets), "baselines_qps": base, "graphs": graphs, "ratios": ratios}


def at_recall_text(summary: dict) -> str:
    """The printed form of :func:`at_recall`: a q/s table (graph x target), then one line of ratios per
    graph and target."""
    graphs, targets = summary["graphs"], summary["targets"]
    if not graphs:
        return "q/s at recall: no graph configuration has >= 2 ef points"
    w = max(len(n) for n in graphs)
    lines = [f"q/s at recall@10 targets ({summary['method']}):",
             f"  {'graph':{w}s} " + " ".join(f"{'recall ' + f'{t:g}':>26s}" for t in targets)]
    for name, g in graphs.items():
        cells = []
        for t in targets:
            a = g["at"][f"{t:g}"]
            cells.append(f"{a['qps']:,.0f} (ef {'-'.join(map(str, a['between_ef']))})" if a["qps"] is not None
                         else "not reached" if a["note"].startswith("not") else "below sweep")
        lines.append(f"  {name:{w}s} " + " ".join(f"{c:>26s}" for c in cells))
    notes = sorted({f"{n}: {a['note']}" for n, g in graphs.items() for a in g["at"].values() if a["qps"] is None})
    lines += [f"  ({n})" for n in notes]
    lines += [f"  (timing noise? {n}: q/s rose with ef, {'; '.join(g['qps_rose_with_ef'])}; the interpolation between "
              "those points is suspect: re-run on an idle machine)"
              for n, g in graphs.items() if g.get("qps_rose_with_ef")]
    for t in targets:
        for name in graphs:
            rs = [r for r in summary["ratios"] if r["recall@10"] == t and r["config"] == name]
            if rs and graphs[name]["at"][f"{t:g}"]["qps"] is not None:  # (else: its note above)
                lines.append(f"  at recall {t:g}, {name}: " + "; ".join(
                    f"{r['ratio']:.2f}x {r['vs']}" if r["ratio"] is not None else f"n/a {r['vs']} (no q/s there)"
                    for r in rs))
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in ("scifact", "synthetic") if result.get(p) and result[p]["rows"]]
    if not parts:
        return
    fig, axes = plt.subplots(1, len(parts), figsize=(7 * len(parts), 5.5), squeeze=False)
    colors = {"numpy": "k", "ragkit": "tab:blue", "ragkit-hnsw": "tab:cyan", "faiss": "tab:red",
              "faiss-hnsw": "tab:orange"}
    for ax, part in zip(axes[0], parts):
        rows = result[part]["rows"]
        mx = max(r["memory_bytes"] for r in rows)
        for r in rows:
            ax.scatter(r["qps"], r["recall@10"], s=20 + 400 * r["memory_bytes"] / mx, alpha=0.6,
                       c=colors.get(r["family"], "gray"), edgecolors="k")
            ax.annotate(f"{r['config']} ({r['memory_bytes'] / 2**20:.1f} MiB)", (r["qps"], r["recall@10"]),
                        fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("queries / second (log)")
        ax.set_ylabel("recall@10 vs exact f32")
        ax.set_title(f"{part}: n={result[part]['n']:,} (marker area ~ index memory)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=130, format="png")
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: SciFact's first 1,000 documents plus every document relevant to a test query "
                         "(so each query's relevant documents are always in the small corpus and nDCG@10 reads far "
                         "higher than a full run's: not comparable), 5,000 synthetic vectors, 50 queries, ef 32")
    ap.add_argument("--n", type=int, default=None, help="synthetic vectors (default 1,000,000; 5,000 with --quick)")
    ap.add_argument("--n-queries", type=int, default=None, help="synthetic queries (default 1,000; 50 with --quick)")
    ap.add_argument("--noise", type=float, default=1.0, help="noise std, in units of the corpus per-dimension std")
    ap.add_argument("--noise-shape", choices=["diag", "cov"], default="diag",
                    help="diag: independent per-dimension noise; "
                         "cov: noise with the corpus's covariance (its spectrum)")
    ap.add_argument("--ef", type=str, default=None, help="HNSW expansion_search sweep, comma separated")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads for ragkit/usearch/faiss, and numpy's BLAS (threadpoolctl) in the builds and "
                         "searches (0 = all cores: the CPUs this process may use)")
    ap.add_argument("--connectivity", type=int, default=16,
                    help="HNSW graph degree of both libraries (ragkit connectivity, faiss M)")
    ap.add_argument("--graph-reduce", default="",
                    help="synthetic set: also int8 graphs over these reductions, comma separated (e.g. pca:256), "
                         "their shortlists rescored with the full vectors")
    ap.add_argument("--graph-oversample", type=int, default=8, help="shortlist multiplier of the --graph-reduce graphs")
    ap.add_argument("--at-recall", default="0.90,0.95",
                    help="recall@10 targets, comma separated: each swept graph's q/s there (log-interpolated "
                         "between the bracketing ef points) and its ratios to the faiss graphs and exact searches")
    add_timing_args(ap, "at least this many interleaved timing rounds: each configuration's q/s is its best round "
                        "(after a warm-up call)")
    ap.add_argument("--builds", type=int, default=None,
                    help="HNSW graphs (ragkit and faiss) built this many times: recall@10 / nDCG@10 median and min "
                         "over the builds beside the timed build's (default 3; 2 with --quick; 1 = the timed only)")
    ap.add_argument("--no-scifact", action="store_true")
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--no-hnsw", action="store_true", help="skip the HNSW sweeps (exact configurations at scale)")
    ap.add_argument("--only", default=None,
                    help="regular expression: run only the configurations whose name matches (e.g. 'exact f32|i8'); "
                         "the raw-usearch comparison runs only if it matches 'raw usearch'")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for dense.json and dense.png (default bench/out, or the folder RAGKIT_BENCH_OUT "
                         "names)")
    args = ap.parse_args()
    timing_args(ap, args)
    if args.threads < -1:
        ap.error(f"--threads: a thread count, or 0 or -1 for all cores, got {args.threads}")
    if args.builds is not None and args.builds < 1:
        ap.error(f"--builds: at least 1 build of each graph, got {args.builds}")
    builds = args.builds or (2 if args.quick else 3)

    def chosen(name: str) -> bool:
        return not args.only or re.search(args.only, name) is not None

    def selected(cfgs: list[Config]) -> list[Config]:  # (raw usearch: with its ragkit rows, see raw_sel)
        return [c for c in cfgs if chosen(c.name) or c.family == "usearch-raw"
                or (c.name.startswith("ragkit hnsw f32 ef=") and any(x.family == "usearch-raw" for x in cfgs))]
    n = args.n or (5_000 if args.quick else 1_000_000)
    n_q = args.n_queries or (50 if args.quick else 1000)
    efs = [] if args.no_hnsw else [int(x) for x in (args.ef or ("32" if args.quick else "16,32,64,128")).split(",")]
    targets = [float(t) for t in args.at_recall.split(",") if t.strip()]
    if not all(0 < t <= 1 for t in targets):
        ap.error(f"--at-recall: recall targets in (0, 1], got {args.at_recall!r}")
    k = 10
    if args.out is None:
        args.out = OUT
    args.out.mkdir(parents=True, exist_ok=True)
    from ragkit._cpus import thread_count

    threads = thread_count(args.threads)  # (0: the CPUs this process may use, the same count for every library)
    result: dict = {"machine": print_machine(threads=threads),
                    "args": vars(args) | {"out": str(args.out)},
                    "timing": f"per table: every configuration built (build timed alone), one warm-up search each, "
                              f"then interleaved rounds (order shuffled per round, seeded) until each search is timed "
                              f">= {args.min_seconds:g} s in all (at least {max(1, args.repeat)} rounds; the table's "
                              f"'rounds'), q/s = best round",
                    "builds": builds}

    if args.quick and args.no_scifact:
        rng = np.random.default_rng(0)
        base, qbase, corpus, qids, qrels = rng.standard_normal((2000, 64)).astype(np.float32), \
            rng.standard_normal((200, 64)).astype(np.float32), None, None, None
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        qbase /= np.linalg.norm(qbase, axis=1, keepdims=True)
    else:
        from ragkit import load_beir
        from ragkit.encoders import get_encoder

        ds = load_beir(SCIFACT)
        corpus, queries, qrels = ds.corpus, ds.queries("test"), ds.qrels("test")
        enc = get_encoder()
        base = np.ascontiguousarray(enc.encode(corpus.full_texts), dtype=np.float32)
        qbase = enc.encode_queries(queries.texts)
        qids = list(queries.ids)
        if args.quick:
            keep = np.unique(np.concatenate([np.arange(1000), corpus.row_of(
                [d_ for q in qids for d_ in qrels.get(q, {})], missing="drop")]))
            base, corpus = base[keep], corpus.subset(keep)

    if not args.no_scifact and corpus is not None:
        print(f"SciFact: {len(base):,} docs x {base.shape[1]} dims, {len(qbase)} test queries")
        qbox[0] = qbase
        ref = exact_topk(base, qbase, k)
        doc_ids = corpus.ids
        cfgs = selected(configs_for(base, k, False, efs, threads, args.connectivity))
        timing: dict = {}
        rows = run_configs(base, qbase, ref, cfgs, k=k, repeat=args.repeat, builds=builds,
                           quality=lambda got: ndcg10(got, doc_ids, qids, qrels), min_seconds=args.min_seconds,
                           timing=timing, threads=threads)
        _CACHE.clear()
        result["scifact"] = {"n": len(base), "n_queries": len(qbase), **timing, "rows": rows}
        print(table(rows, "ragkit exact f32", ["build_s", "memory_bytes", "qps", "recall@10", "ndcg@10"]
                    + BUILD_KEYS * (builds > 1)))
        if len(efs) >= 2:
            result["scifact"]["at_recall"] = at_recall(rows, targets)
            print(at_recall_text(result["scifact"]["at_recall"]))

    if not args.no_synthetic:
        d, q = synthetic(base, qbase, n, n_q, args.noise, shape=args.noise_shape)
        geo = {"corpus": geometry(base, qbase, len(base)), "synthetic": geometry(d, q, len(base))}
        print(f"\nsynthetic: {n:,} vectors x {d.shape[1]} dims, {n_q} queries (noise {args.noise}, "
              f"{args.noise_shape}); participation ratio / LID@20 at {len(base):,} vectors: corpus "
              f"{geo['corpus']['participation_ratio']} / {geo['corpus']['lid']}, synthetic "
              f"{geo['synthetic']['participation_ratio']} / {geo['synthetic']['lid']}")
        qbox[0] = q
        ref = exact_topk(d, q, k)  # the ground truth (untimed: numpy Q@D.T is timed as a row)
        raw_sel = bool(efs) and chosen("raw usearch")  # in the same rounds as the ragkit f32 graph's rows
        timing = {}
        rows = run_configs(d, q, ref, selected(configs_for(
            d, k, True, efs, threads, args.connectivity,
            tuple(r for r in args.graph_reduce.split(",") if r), args.graph_oversample, raw_usearch=raw_sel)), k=k,
                           repeat=args.repeat, builds=builds, min_seconds=args.min_seconds, timing=timing,
                           threads=threads)
        _CACHE.clear()
        raw = raw_usearch_pairs(rows, efs)
        rows = [r for r in rows if r["family"] != "usearch-raw" and chosen(r["config"])]
        result["synthetic"] = {"n": n, "n_queries": n_q, "noise": args.noise, "noise_shape": args.noise_shape,
                               "geometry": geo, **timing, "rows": rows, "ragkit_vs_usearch": raw}
        print(table(rows, "ragkit exact f32", ["build_s", "memory_bytes", "qps", "recall@10"]
                    + BUILD_KEYS[:2] * (builds > 1)))
        if raw:
            print("raw usearch vs ragkit on the same HNSW (the same rounds as the table):")
            for r in raw:
                print("  " + "  ".join(f"{k_}={v}" for k_, v in r.items()))
        if len(efs) >= 2:
            result["synthetic"]["at_recall"] = at_recall(rows, targets)
            print(at_recall_text(result["synthetic"]["at_recall"]))

    suffix = "_quick" if args.quick else ""
    write_atomic(args.out / f"dense{suffix}.json", json.dumps(result, indent=2))
    plot(result, args.out / f"dense{suffix}.png")
    print(f"wrote {args.out / f'dense{suffix}.json'}")


if __name__ == "__main__":
    main()
