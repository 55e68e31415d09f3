"""A reusable vector index: storage type, reduction, exact/HNSW search, rescoring, filters.

:class:`VectorIndex` stores arbitrary float vectors (documents, MUVERA FDEs, ...) and answers
batched top-k inner-product / cosine queries.  Storage and search are parameters:

* ``dtype``: ``f32``, ``f16``, ``i8`` or ``b1``.

  - ``i8`` exact (numpy) search uses **per-dimension calibration** fitted on the indexed
    vectors (``min_j``, ``step_j = (max_j - min_j) / 255``, as sentence-transformers'
    ``quantize_embeddings``, but codes rounded to the nearest step where it truncates), scored
    *asymmetrically* against the float query:
    ``<q, x> ~= (code + 128) @ (q * step) + q @ min``.  HNSW search hands usearch int8 codes
    with one global symmetric scale (``127 / p99.99(|x|)``, ``127 / max|x|`` for ``metric="ip"``; saved
    with the index, so an index saved with the earlier ``p99.9`` keeps it) so that the int8-vs-int8 inner
    product in the graph (divided by the scale squared) keeps the geometry; usearch's own
    float->i8 cast is never used (it loses about 5 points of recall@10 on MiniLM).  The graph
    uses usearch's ``ip`` kernel, not ``cos``: the codes of unit vectors have near-equal norms,
    so the ranking is the same, the search ~14% faster (100k vectors, ef 64-128), and an
    ``ip`` index of unnormalised vectors (MUVERA's FDEs) is searched by inner product, as it
    must be.  A query is coded with the corpus's scale, shrunk for that query where it would
    clip (an ``ip`` index's queries can be far larger than its documents: MUVERA's query FDEs
    sum tokens, its document FDEs average them).  Graphs saved with the ``cos`` kernel by
    earlier versions load and score as before.
  - ``b1``: packed sign bits (``np.packbits(x > 0)``).  Exact search scores every code with
    the float query against the ±1 bits (asymmetric; numpy); HNSW search uses usearch's
    Hamming distance on the sign-quantised query for a wider set (``min(oversample, B1_WIDEN) *
    oversample * k``, at least ``expansion_search``), re-ranked by the float query against the
    ±1 bits.  With ``rescore=True`` the top ``oversample * k`` candidates of either are re-scored
    with the float vectors.
* ``reduce``: ``none``, ``pca:<d>`` (PCA fitted on the indexed vectors, optional whitening;
  with ``metric="cos"`` vectors are centred before the projection, with ``"ip"`` they are not,
  since centring both sides adds a per-document bias to inner products; ``ip`` indexes saved
  before this centred them and need a rebuild) or ``matryoshka:<d>`` (keep the first ``d``
  dimensions; only sound for models trained with Matryoshka Representation Learning).
  Vectors are re-normalised after reduction for ``metric="cos"``.
* ``rescore``: the full-precision float vectors are written to a ``.npy`` file and
  memory-mapped (never loaded): a shortlist of ``oversample * k`` candidates from the
  compressed / reduced index is re-scored exactly with them (in query chunks bounded by
  ``SECOND_STAGE_BYTES``).  ``add`` appends to that file in place (one scratch file per index).
* ``search``: ``exact`` (blocked numpy matrix products + ``torch.topk``; equal scores are
  ranked by lower slot, at the k cut too, so exact results are deterministic), ``hnsw`` (one
  multi-threaded usearch call per query batch) or ``auto`` (exact up to ``exact_max``
  vectors, measured in ``bench/dense.py``; the choice is made at ``build`` and kept).
* ``reorder`` (HNSW, default on from ``REORDER_MIN`` vectors): the graph is built from a random
  tenth of the vectors first, then the rest cluster by cluster
  (:func:`~ragkit.retrievers._locality.insertion_order`).  On 1M vectors (``bench/dense.py``,
  two runs) builds ran 1.7-1.9x faster and searches 1.0-1.8x faster at equal recall (at 100k:
  builds 1.3x, searches within noise); slots are unchanged.
* ``mask``: a boolean row filter applied *inside* the search, so a filtered query still
  returns ``k`` results whenever ``k`` rows pass.  usearch 2.26's Python ``search`` takes
  no predicate, so: exact search scores only the passing rows; HNSW search oversamples by
  the inverse of the filter's selectivity, drops failing rows, and answers the queries that
  still have too few results after a 4x wider search (and every query of a very selective filter,
  under ``FILTER_EXACT_MAX`` passing rows) exactly on the passing rows (codes fetched from usearch).

Rows are *slots*: ``build`` numbers vectors ``0..n-1``, ``add`` appends, ``remove`` marks
slots dead (tombstones) without a rebuild; ``compact`` frees them, renumbering the live slots and
returning the old -> new map.  An HNSW graph keeps dead nodes and their links (usearch's own removal
lets the next ``add`` reuse a node and cut its neighbours' links: live documents dropped out of
the graph) and searches skip them, until they pass ``GRAPH_DEAD_FRACTION`` of its nodes and the
graph is rebuilt from the live codes, slots unchanged.

Persistence: ``save(folder)`` writes plain files (``<prefix>.json`` manifest with sizes and
CRC32 checksums, ``.npy`` arrays, ``<prefix>.usearch``), each through a temporary name renamed
into place; ``load(folder, mmap=True)`` memory-maps the arrays and opens the usearch file as a
view, and such an index can be saved back into its own folder.  A truncated or corrupt file
raises :class:`~ragkit.errors.ArtifactError`.
"""

from __future__ import annotations

import copy
import io
import mmap
import os
import re
import shutil
import tempfile
import weakref
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np

from ragkit._cpus import usable_cpus
from ragkit._files import atomic_file, check_npy_size
from ragkit._locks import ReadWriteLock
from ragkit._topk import desc_order, fix_cut_ties
from ragkit.errors import ArtifactError, DataError, ParamError
from ragkit.retrievers._locality import insertion_order

if TYPE_CHECKING:
    from usearch.index import Index

__all__ = ["VectorIndex", "EXACT_MAX", "parse_reduce", "resident_bytes"]

#: ``search="auto"`` uses exact search up to this many vectors.  Measured with ``bench/dense.py``
#: (384-d, 2 shared cores, blocked GEMM + ``torch.topk`` exact search): at 100,000 vectors exact f32
#: ran 1,231 q/s against 1,184 q/s for usearch HNSW f32 at recall 0.96 (ef 128, after a 71 s build)
#: and 1,602 q/s for the int8 graph with float rescoring (41 s build); at 1,000,000 exact ran
#: 112-119 q/s against 393-544 q/s for the graphs at recall 0.96.  Up to ~100k vectors exact is
#: exact, needs no build, and is within 1.3x of the fastest graph.
EXACT_MAX = 100_000
#: rows per block of the exact search (bounds the temporary float block to ~25 MB at 384 dims)
BLOCK = 16_384
#: score cells per block of the exact search (queries are chunked to keep ``queries x BLOCK`` under it)
EXACT_CELLS = 1 << 24
#: bytes of the float32 temporaries of the second stage (rescore / b1 re-ranking): the gathered
#: ``(queries, candidates, dims)`` block and the distinct candidates' vectors; the query batch is
#: scored in chunks that keep both under this
SECOND_STAGE_BYTES = 64 << 20
#: bytes per chunk when the float vectors file is copied (``add`` after ``load``)
COPY_BYTES = 64 << 20
#: rows per block when vectors are normalised (bounds the squares ``np.linalg.norm`` makes to ~6 MB at 384 dims)
NORM_BLOCK = 4096
#: a b1 graph's Hamming set is ``min(oversample, B1_WIDEN) * oversample * k`` (at least ``expansion_search``)
#: before the float query re-ranks it against the bits (wider: more recall, ~0.4 ms more a query at oversample 4)
B1_WIDEN = 4
#: the HNSW int8 scale of a cosine index is ``127 / `` this percentile of ``|x|`` (an inner-product index's:
#: of its maximum; :meth:`VectorIndex._i8_graph_scale`, measured there)
I8_SCALE_PERCENTILE = 99.99
#: the HNSW int8 scale's percentile of ``|x|`` is taken over at most about this many values (a seeded
#: random sample of rows beyond: 4M values, a 16 MB temporary)
I8_SCALE_VALUES = 1 << 22
#: a filtered HNSW search whose filter passes at most this many live rows scores them exactly, their codes
#: fetched from usearch (~2 us a row); more go through the graph, oversampled by the filter's selectivity
FILTER_EXACT_MAX = 4_096
#: an HNSW graph is rebuilt from its live codes (:meth:`VectorIndex.rebuild_graph`) when the dead nodes it keeps
#: after ``remove`` pass this share of its nodes (searches drop them from a shortlist widened by that share)
GRAPH_DEAD_FRACTION = 0.25
#: PCA is fitted on at most this many vectors (a seeded random sample of larger sets)
PCA_SAMPLE = 200_000
#: bytes of each float64 block of the PCA sample (mean and covariance are summed block by block)
PCA_CHUNK_BYTES = 32 << 20
#: the largest finite float16
F16_MAX = float(np.finfo(np.float16).max)
#: the format of a saved index (``<prefix>.json``'s ``format``).  2: since 2026-12-06; an int8 HNSW graph of
#: format 1 may have been written by a ragkit that coded its queries otherwise (before a8eb881 / ae21541: a
#: query's codes now use the corpus's scale shrunk where it would clip), so it may rank slightly differently
#: now (:attr:`VectorIndex.older_query_coding`); nothing else of format 1 changed, and it loads as it is
FORMAT = 2
#: the widest vectors a saved index may hold (``ndim`` / ``d_in``): MUVERA's widest FDE (its ``MAX_FDE_DIM``)
MAX_DIMS = 1 << 20
#: the arrays an index saves, each as ``<prefix>.<name>.npy``
_ARRAYS = ("alive", "codes", "pca_mean", "pca_components", "i8_min", "i8_step", "floats")


def _i8_symmetric(x: np.ndarray, scale: np.ndarray | np.floating | float, inplace: bool = False) -> np.ndarray:
    """``x * scale`` rounded and clipped to int8 ``[-127, 127]`` (the codes usearch's graph holds).

    One float temporary the size of ``x`` (rounded and clipped in place; ``inplace``: none, ``x`` itself
    is scaled, for a caller's copy it no longer needs), where ``np.clip(np.rint(x * scale))`` made three
    (+576 MB for a 131,072-row chunk of 384 dims in an HNSW build).  The same codes."""
    t = np.multiply(x, scale, out=x) if inplace else x * scale
    np.rint(t, out=t)
    np.clip(t, -127, 127, out=t)
    return t.astype(np.int8)


def _f16_queries(q: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Float16 codes of the queries ``q`` ``(n, d)`` for the graph, and the per-query scale they carry
    (None: every query cast unchanged).  A query with a value past float16's range (an ``ip`` index's
    queries can be far larger than its documents: MUVERA's at a large ``mean_weight`` reach ~50 x it)
    would be cast to inf and find nothing; it is halved until it fits (a power of two: its float16
    rounding is unchanged), and its inner products are divided by the scale."""
    big = np.abs(q).max(axis=1) if q.size else np.zeros(len(q), np.float32)
    over = big > F16_MAX
    if not over.any():
        return q.astype(np.float16), None
    scale = np.ones(len(q), np.float32)
    scale[over] = np.exp2(-np.ceil(np.log2(big[over] / F16_MAX)))
    return (q * scale[:, None]).astype(np.float16), scale


def parse_reduce(reduce: str) -> tuple[str, int]:
    """``"pca:128"`` -> ``("pca", 128)``; ``"none"`` -> ``("none", 0)``."""
    m = re.fullmatch(r"(none)|(pca|matryoshka):([1-9][0-9]*)", reduce)
    if not m:
        raise ParamError(f"reduce: expected 'none', 'pca:<dims>' or 'matryoshka:<dims>', got {reduce!r}")
    return ("none", 0) if m.group(1) else (m.group(2), int(m.group(3)))


def _crc(path: Path) -> int:
    c = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            c = zlib.crc32(block, c)
    return c


def _block_topk(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest of each row of ``s`` ``(n_q, m)`` (``k < m``), ties at the cut by lower column.

    Returns ``(scores float32 (n_q, k), columns int64 (n_q, k))``, unordered.  ``torch.topk`` picks
    the ``k`` largest (multi-threaded, ~3x numpy's ``argpartition``) but keeps an arbitrary few of
    the entries tied with the k-th score; :func:`~ragkit._topk.fix_cut_ties` re-picks the rows
    where such a tie straddles the cut.  Needs ``k < m``.
    """
    import torch

    s = np.ascontiguousarray(s, dtype=np.float32)
    # the k + 1 largest, sorted: a row's tie straddles the cut exactly when its (k+1)-th score
    # equals its k-th, which spares a comparison pass over the whole block to find those rows
    top_t, part_t = torch.topk(torch.from_numpy(s), k + 1, dim=1, sorted=True)
    top, part = top_t.numpy(), part_t.numpy()
    tied = np.flatnonzero((top[:, k] == top[:, k - 1]) & ~np.isnan(top).any(axis=1))  # NaN rows: as before
    top, part = np.ascontiguousarray(top[:, :k]), np.ascontiguousarray(part[:, :k])
    fix_cut_ties(s, top, part, k, tied=tied)
    return top, part.astype(np.int64, copy=False)


def _file_id(path: str | Path) -> tuple[int, ...] | None:
    """``(device, inode, size, mtime_ns)`` of ``path``, or None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _whole_map(arr: Any) -> str | None:
    """The file ``arr`` memory-maps in full (as ``np.load(mmap_mode=...)`` returns it), else None."""
    if isinstance(arr, np.memmap) and isinstance(arr.base, mmap.mmap) and arr.filename:
        return str(arr.filename)
    return None


def _frozen_array(a: np.ndarray) -> bool:
    """Whether no one can write into ``a`` without first making it writable: it is read-only, and so is every
    array it is a view of (a read-only view of a writable buffer changes with the buffer)."""
    base: Any = a
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            return False
        base = base.base
    return True


def _save_npy(path: Path, arr: np.ndarray) -> None:
    """``np.save`` to exactly ``path`` (no ``.npy`` appended), streaming a memory-mapped ``arr``."""
    with open(path, "xb") as fh:
        np.save(fh, arr if arr.flags.c_contiguous else np.ascontiguousarray(arr), allow_pickle=False)


def _unlink_when_unmapped(path: str | Path, holder: Any) -> None:
    """Delete a superseded scratch file now (POSIX: maps of it stay valid) or, where the system
    refuses to delete a mapped file, once ``holder`` (its memory map) is collected."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        if holder is not None:
            weakref.finalize(holder, _unlink_quiet, str(path))


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _npy_header(shape: tuple[int, ...], version: tuple[int, int] = (1, 0)) -> bytes:
    """The ``.npy`` header of a C-order little-endian float32 array of ``shape`` (numpy's layout,
    with its spare room for the first axis to grow in place)."""
    buf = io.BytesIO()
    d = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": tuple(shape)}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buf, d)
    else:
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


def _grow_npy(path: Path, new: np.ndarray) -> bool:
    """Append rows ``new`` ``(m, d)`` float32 to the 2-D float32 ``.npy`` at ``path`` in place.

    The rows go after the data, then the header's row count is rewritten in the header's spare
    room (numpy pads ``.npy`` headers for this); existing memory maps of the file stay valid.
    Returns False, leaving the file untouched, when the file is not such an array or the new
    header would not fit (the caller then writes a new file).
    """
    fmt = np.lib.format
    with open(path, "r+b") as fh:
        try:
            version = fmt.read_magic(fh)
            if version not in ((1, 0), (2, 0)):
                return False
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read(fh)
        except ValueError:
            return False
        offset = fh.tell()
        if fortran or dtype != np.dtype("<f4") or len(shape) != 2 or shape[1] != new.shape[1]:
            return False
        end = offset + shape[0] * shape[1] * 4
        header = _npy_header((shape[0] + len(new), shape[1]), version)
        if len(header) != offset or os.fstat(fh.fileno()).st_size != end:
            return False
        fh.seek(end)
        fh.write(np.ascontiguousarray(new, dtype="<f4").data)
        fh.flush()
        fh.seek(0)
        fh.write(header)
    return True


def _topk_merge(best_s: np.ndarray | None, best_i: np.ndarray | None, s: np.ndarray, idx: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the top-``k`` of the running best ``(n_q, <=k)`` and a new block of scores.

    ``s`` is ``(n_q, m)`` float32, ``idx`` the block's ``m`` global slots, ascending and above
    every slot of the running best (blocks are merged in slot order).  The block is cut to its
    own top ``k`` first (:func:`_block_topk`, no ``(n_q, m)`` slot matrix), so only ``(n_q, 2k)``
    is merged with the running best.  Equal scores keep the lower slot, at the cut and across
    blocks, so the result is the first ``k`` of the stable (score desc, slot asc) order.
    """
    m = s.shape[1]
    kk = min(k, m)
    if kk < m:
        s, part = _block_topk(s, kk)
        idx = idx[part]
    else:
        idx = np.broadcast_to(idx, s.shape)
    if best_s is None:
        return s, idx
    s, idx = np.concatenate([best_s, s], axis=1), np.concatenate([best_i, idx], axis=1)
    if k < s.shape[1]:
        part = np.argpartition(s, s.shape[1] - k, axis=1)[:, s.shape[1] - k:]
        kth = np.take_along_axis(s, part, axis=1).min(axis=1)
        tied = np.flatnonzero(np.count_nonzero(s >= kth[:, None], axis=1) > k)
        if len(tied):  # a tie straddles the cut: the first k of (score desc, slot asc) for those rows
            part[tied] = desc_order(s[tied], idx[tied])[:, :k]
        s, idx = np.take_along_axis(s, part, axis=1), np.take_along_axis(idx, part, axis=1)
    return s, idx


def check_finite_vectors(x: np.ndarray, who: str, what: str) -> None:
    """DataError naming ``who`` when a row of ``x`` ``(n, d)`` (``what`` vectors: query, document)
    holds NaN or inf: it would score nothing, or spoil a fit, silently."""
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise DataError(f"{who}: {int(bad.sum())} of the {len(x)} {what} vectors contain NaN or infinite values "
                        f"(first at position {int(np.argmax(bad))}); check the encoder's output")


def _row_dots(g: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``(n_q, c)`` float32: the dot product of each row ``g[i, j]`` of ``g`` ``(n_q, c, d)`` with ``q[i]``
    (``q``: ``(n_q, d)``).

    Each score is one dot product of its own row (``np.vecdot``: a BLAS ``sdot`` per row), so equal vectors
    score exactly equal wherever they sit among the candidates: ``np.einsum("qcd,qd->qc", optimize=True)``
    (before) and ``np.matmul`` give them scores one rounding step apart by position, and then equal vectors
    were not ranked by lower slot.  As fast as that einsum or faster (256 queries x 40 candidates x 384 dims:
    2.3 ms vs 2.8 ms; 1,000 x 40: 19 vs 30 ms).  numpy < 2 (no ``vecdot``): the products summed along each
    row, as exact a tie but ~2x slower.
    """
    vecdot = getattr(np, "vecdot", None)
    if vecdot is not None:
        return np.asarray(vecdot(g, q[:, None, :]), dtype=np.float32)
    return (g * q[:, None, :]).sum(axis=2, dtype=np.float32)


def _sort_desc(s: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by score descending, ties by lower slot; invalid slots (-1) last."""
    s = np.where(idx < 0, -np.inf, s)
    order = desc_order(s, idx)
    return np.take_along_axis(s, order, axis=1).astype(np.float32), np.take_along_axis(idx, order, axis=1)


class VectorIndex:
    """Batched top-k search over float vectors with configurable storage and search.

    Parameters
    ----------
    dtype : {"f32", "f16", "i8", "b1"}
        Storage of the indexed vectors (4, 2, 1 bytes or 1 bit per dimension).
    metric : {"cos", "ip"}
        Cosine (vectors normalised to unit length) or raw inner product.
    search : {"auto", "exact", "hnsw"}
        Exact numpy search, usearch HNSW, or exact up to ``exact_max`` vectors.
    rescore : bool
        Keep the full float vectors in a memory-mapped ``.npy`` and re-score an
        ``oversample * k`` shortlist with them.
    oversample : int
        Shortlist multiplier for ``rescore`` and for ``b1`` (bits re-ranking).
    reduce : str
        ``none``, ``pca:<d>`` or ``matryoshka:<d>``.
    whiten : bool
        Divide PCA components by their standard deviation.
    connectivity, expansion_add, expansion_search : int
        HNSW graph degree and beam widths (usearch's ``M``, ``ef_construction``, ``ef``).
    exact_max : int
        ``search="auto"`` threshold.
    threads : int
        usearch threads (0 = all cores: the CPUs this process may use, :func:`~ragkit._cpus.usable_cpus`, counted
        at each call, so that a saved index keeps 0).
    reorder : bool
        HNSW, from ``REORDER_MIN`` vectors per ``build`` / ``add``: insert a random tenth first, then
        the rest cluster by cluster (:func:`~ragkit.retrievers._locality.insertion_order`), so that
        graph neighbours are built and stored together; slots are unchanged.
    workdir : str or Path, optional
        Where to write the float vectors file for ``rescore`` before the first ``save``
        (default: a temporary folder removed with the index).
    """

    # set by ``build`` / ``load``; the transforms' arrays only where they apply (absent otherwise)
    d_in: int
    ndim: int
    backend: str  # "numpy" (exact) or "hnsw"
    _alive: np.ndarray
    _n_alive: int
    codes: np.ndarray | None  # the exact backend's stored codes
    usearch: Index | None  # the HNSW backend's graph
    floats: np.ndarray | None  # memory-mapped float vectors (``rescore``)
    pca_mean: np.ndarray
    pca_components: np.ndarray
    explained_variance_ratio: float | None
    i8_min: np.ndarray
    i8_step: np.ndarray
    i8_fitted_n: int = 0  # vectors the int8 calibration was fitted on (0: none yet, a placeholder)
    saved_format: int = FORMAT  # the format of the save it was loaded from (FORMAT: built here)
    added_clipped: tuple[int, int] = (0, 0)  # (clipped, all) int8 coordinates of the last add()'s vectors
    i8_scale: np.float32
    _view: bool  # ``usearch`` is a read-only view of the file at ``_view_path``
    _graph_free: bool = False  # the graph holds nodes usearch's ``remove`` freed (loaded from an earlier version)
    _view_path: str
    _codes_buf: np.ndarray

    def __init__(self, *, dtype: str = "f32", metric: str = "cos", search: str = "auto", rescore: bool = False,
                 oversample: int = 4, reduce: str = "none", whiten: bool = False, connectivity: int = 16,
                 expansion_add: int = 128, expansion_search: int = 64, exact_max: int = EXACT_MAX,
                 threads: int = 0, reorder: bool = True, workdir: str | Path | None = None) -> None:
        if dtype not in ("f32", "f16", "i8", "b1"):
            raise ParamError(f"dtype: expected one of f32, f16, i8, b1, got {dtype!r}")
        if metric not in ("cos", "ip"):
            raise ParamError(f"metric: expected 'cos' or 'ip', got {metric!r}")
        if search not in ("auto", "exact", "hnsw"):
            raise ParamError(f"search: expected 'auto', 'exact' or 'hnsw', got {search!r}")
        self.reduce_kind, self.reduce_dims = parse_reduce(reduce)
        if whiten and self.reduce_kind != "pca":
            raise ParamError("whiten=True needs reduce='pca:<dims>' (whitening rescales PCA components), "
                             f"got reduce={reduce!r}")
        if oversample < 1:
            raise ParamError(f"oversample: expected a positive integer, got {oversample!r}")
        self.dtype, self.metric, self.search_mode = dtype, metric, search
        self.rescore, self.oversample, self.reduce, self.whiten = bool(rescore), int(oversample), reduce, bool(whiten)
        self.connectivity, self.expansion_add, self.expansion_search = connectivity, expansion_add, expansion_search
        self.exact_max, self.threads, self.reorder = int(exact_max), int(threads), bool(reorder)
        self.workdir = Path(workdir) if workdir is not None else None
        self._tmp: str | None = None
        self._floats_own: str | None = None  # the scratch float vectors file this index wrote (grown / deleted)
        self._mapped: dict[str, tuple[int, ...] | None] = {}  # files mapped by ``load`` -> their _file_id then
        # graph searches share it; one at a per-call ``expansion_search`` (usearch reads the beam width from the
        # index, not from the call) holds it alone while it sets and restores the graph's width
        self._ef_lock = ReadWriteLock()
        self.built = False

    def __getstate__(self) -> dict[str, Any]:
        """What a pickle keeps: not the lock (the copy gets its own), nor the spare rows of the codes' buffer
        (``codes`` is kept alone; the copy's first add regrows it), nor the scratch float vectors file and folder
        (the original's: the copy, owning none, writes its own at its first edit and never grows or deletes
        the original's).  The HNSW graph is kept as usearch's bytes (usearch's index does not pickle)."""
        state = self._state()
        graph = state.get("usearch")
        if graph is not None:
            state["usearch"], state["_view"] = graph.save(), False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if isinstance(state.get("usearch"), (bytes, bytearray)):  # pickled: the graph restored from its bytes
            self.usearch = self._restore(state["usearch"], view=False)
        self._ef_lock = ReadWriteLock()

    def _state(self) -> dict[str, Any]:
        """The attributes a copy (pickle, deepcopy) takes as they are: less the lock, the codes' spare buffer and
        the ownership of the scratch float vectors file and folder."""
        state = dict(self.__dict__)
        state.pop("_ef_lock", None)
        state.pop("_codes_buf", None)
        state["_tmp"] = state["_floats_own"] = None
        return state

    def __deepcopy__(self, memo: dict[int, Any]) -> "VectorIndex":
        """A copy that no edit of either changes: the HNSW graph its own (:meth:`_copy_graph`: a fresh view of the
        file the original maps, unchanged since ``load``, else ``Index.copy``), read-only arrays (memory maps:
        the codes of ``load(mmap=True)``, the float vectors of ``rescore``) shared (an edit replaces them, never
        writes into them), and no scratch file of the original: the copy writes its own at its first ``add`` /
        ``compact`` (from the shared map, which stays readable when the original is collected and its scratch
        folder removed)."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        state = self._state()
        graph = state.get("usearch")
        if graph is not None:
            if id(graph) in memo:  # (a graph copied already: a view or not, an add copies a view first)
                state["usearch"], state["_view"] = memo[id(graph)], getattr(self, "_view", False)
            else:
                state["usearch"], state["_view"] = self._copy_graph()
                memo[id(graph)] = state["usearch"]
        for key, value in state.items():
            if isinstance(value, np.ndarray) and _frozen_array(value):
                memo.setdefault(id(value), value)
            if key != "usearch":
                state[key] = copy.deepcopy(value, memo)
        new.__setstate__(state)
        return new

    def _copy_graph(self) -> tuple[Index, bool]:
        """A copy of the HNSW graph that an edit of either leaves alone, and whether it is a read-only view.

        A graph mapped read-only from its file (``load(mmap=True)``) is mapped again from that file (nothing
        read into memory) while the file is the one loaded; one whose file changed since, from the mapped
        memory into memory; a graph in memory, ``Index.copy`` (a deep copy of usearch's index fails)."""
        graph = self._graph()
        path = getattr(self, "_view_path", None)
        if getattr(self, "_view", False):
            if path is not None and self._mapped.get(path) is not None and _file_id(path) == self._mapped[path]:
                fresh = self._restore(str(path), view=True)
                if fresh is not None:
                    return fresh, True
            # (usearch types save() as bytes | None: None only when saving to a path)
            return self._restore(graph.save(), view=False), False  # type: ignore[arg-type, return-value]
        return graph.copy(), False

    @property
    def older_query_coding(self) -> bool:
        """Whether this index was loaded from a save whose queries an older ragkit may have coded otherwise: an
        int8 HNSW graph of format 1 (see :data:`FORMAT`); it then may rank slightly differently from when it was
        saved.  A save of it writes today's format."""
        return self.saved_format < 2 and self.dtype == "i8" and self.backend == "hnsw"

    # ------------------------------------------------------------------ config
    def config(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "metric": self.metric, "search": self.search_mode, "rescore": self.rescore,
                "oversample": self.oversample, "reduce": self.reduce, "whiten": self.whiten,
                "connectivity": self.connectivity, "expansion_add": self.expansion_add,
                "expansion_search": self.expansion_search, "exact_max": self.exact_max, "threads": self.threads,
                "reorder": self.reorder}

    def _threads(self) -> int:
        """usearch's thread count for one add or search: ``threads``, or for 0 the CPUs this process may use
        (usearch's own 0 counts the machine's)."""
        return self.threads if self.threads > 0 else usable_cpus()

    def __repr__(self) -> str:
        state = f"n={self.n_alive}, backend={self.backend}" if self.built else "unbuilt"
        return f"VectorIndex(dtype={self.dtype!r}, reduce={self.reduce!r}, search={self.search_mode!r}, {state})"

    @property
    def n_slots(self) -> int:
        return int(len(self.alive))

    @property
    def n_alive(self) -> int:
        """Live slots: a counter kept by every assignment of ``alive`` (re-summing ``alive`` cost ~0.6 ms
        per search at 1M slots)."""
        return self._n_alive

    @property
    def alive(self) -> np.ndarray:
        """``(n_slots,)`` bool: which slots are live.  Assign a new array (never edit it in place):
        the assignment recounts :attr:`n_alive`."""
        return self._alive

    @alive.setter
    def alive(self, value: np.ndarray) -> None:
        self._alive = value
        self._n_alive = int(np.count_nonzero(value))

    @property
    def has_shortlist(self) -> bool:
        """Whether search is two-stage (``oversample * k`` candidates, then re-scoring): with
        ``rescore``, or for ``b1`` graphs (Hamming shortlist, then the float query against the
        bits).  Exact ``b1`` search scores the float query against the bits at once."""
        return self.rescore or (self.dtype == "b1" and self.backend != "numpy")

    # ------------------------------------------------------------------ transforms
    def _normalise(self, x: np.ndarray, inplace: bool = False) -> np.ndarray:
        """Rows of unit length for ``metric="cos"`` (``x`` itself for ``"ip"``), a new array unless
        ``inplace``; in blocks of ``NORM_BLOCK`` rows, so no ``(n, d)`` temporary (``np.linalg.norm``
        squares its whole input) is made beside the result."""
        if self.metric != "cos":
            return x
        out = x if inplace else np.empty(x.shape, np.result_type(x.dtype, np.float32))
        for a in range(0, len(x), NORM_BLOCK):
            n = np.linalg.norm(x[a:a + NORM_BLOCK], axis=1, keepdims=True)
            np.divide(x[a:a + NORM_BLOCK], np.maximum(n, 1e-12), out=out[a:a + NORM_BLOCK])
        return out

    def _reduce_rows(self, full: np.ndarray) -> np.ndarray:
        """:meth:`_reduce` of many vectors, in blocks of ``BLOCK`` rows (the centred / truncated
        copy of the input and its norms are never made whole)."""
        if self.reduce_kind == "none" or len(full) <= BLOCK:
            return self._reduce(full)
        dims = self.pca_components.shape[1] if self.reduce_kind == "pca" else self.reduce_dims
        out = np.empty((len(full), dims), np.float32)
        for a in range(0, len(full), BLOCK):
            out[a:a + BLOCK] = self._reduce(full[a:a + BLOCK])
        return out

    def _reduce(self, x: np.ndarray) -> np.ndarray:
        """Full float vectors (n, d_in) -> the vectors the index stores (n, d), float32."""
        x = np.asarray(x, dtype=np.float32)
        if self.reduce_kind == "pca":
            x = (x - self.pca_mean) @ self.pca_components
        elif self.reduce_kind == "matryoshka":
            x = x[:, : self.reduce_dims]
        return np.ascontiguousarray(self._normalise(x) if self.reduce_kind != "none" else x, dtype=np.float32)

    def _fit_transforms(self, full: np.ndarray) -> np.ndarray:
        d_in = full.shape[1]
        if self.reduce_kind != "none" and self.reduce_dims > d_in:
            raise ParamError(f"reduce={self.reduce!r} asks for {self.reduce_dims} dimensions but the vectors have "
                             f"only {d_in}; choose at most {d_in}")
        if self.reduce_kind == "pca":
            if len(full) < 2:
                raise DataError(f"reduce={self.reduce!r}: PCA needs at least 2 vectors to fit, got {len(full)}")
            pick = None if len(full) <= PCA_SAMPLE else np.random.default_rng(0).choice(len(full), PCA_SAMPLE,
                                                                                         replace=False)
            m = len(full) if pick is None else PCA_SAMPLE
            step = max(1, PCA_CHUNK_BYTES // (8 * d_in))

            def rows64(a: int, b: int) -> np.ndarray:  # sample rows a:b as a fresh float64 block
                return np.array(full[a:b] if pick is None else full[pick[a:b]], dtype=np.float64)

            if m <= step:  # one block (SciFact: 5,183 x 384)
                centred = rows64(0, m)
                mean = centred.mean(axis=0)
                centred -= mean
                cov = centred.T @ centred
            else:  # float64 blocks of PCA_CHUNK_BYTES: the sample is never copied whole (it was, twice, in float64)
                mean = np.zeros(d_in)
                for a in range(0, m, step):
                    mean += rows64(a, a + step).sum(axis=0)
                mean /= m
                cov = np.zeros((d_in, d_in))
                for a in range(0, m, step):
                    block = rows64(a, a + step)
                    block -= mean
                    cov += block.T @ block
            # eigen-decomposition of the (d x d) covariance: cheaper than an SVD of the (n x d) data
            ev, vecs = np.linalg.eigh(cov / max(m - 1, 1))
            order = np.argsort(ev)[::-1]
            ev, vt = np.maximum(ev[order], 0.0), vecs[:, order].T
            vt = vt * np.where(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]  # sign fix
            sv = np.sqrt(ev * max(m - 1, 1))
            comps = vt[: self.reduce_dims].T
            if self.whiten:  # a direction without variance (beyond the corpus's rank) is noise: weight 0,
                # not 1e8 (1 / sqrt(1e-16)), which let rounding noise outrank every real component
                kept = ev[: self.reduce_dims]
                comps = comps * np.where(kept > 1e-6 * max(ev[0], 1e-30), 1 / np.sqrt(np.maximum(kept, 1e-30)), 0)
            # cos: centred cosine (PCA-RAG); ip: project without centring, since (q - m).(x - m) adds a
            # per-document bias -m.x to the ranking (tests/test_dense.py: 0.30 agreement with q P x)
            self.pca_mean = mean.astype(np.float32) if self.metric == "cos" else np.zeros_like(mean, np.float32)
            self.pca_components = np.ascontiguousarray(comps, dtype=np.float32)
            self.explained_variance_ratio = float((sv[: self.reduce_dims] ** 2).sum() / max((sv ** 2).sum(), 1e-30))
        x = self._reduce_rows(full)
        if self.dtype == "i8":
            self._calibrate_i8(x)
        return x

    def _i8_graph_scale(self, x: np.ndarray) -> np.float32:
        """The HNSW graph's global symmetric int8 scale of reduced vectors ``x`` ``(n, ndim)``.

        ``metric="ip"``: ``127 / max(|x|)``, nothing clipped: the documents a clip would shrink are the
        large ones an inner product favours (p99.9 returned scores off by up to 20.6, recall@10 0.968 vs
        0.973 on 2,000 random vectors of norms 0.5-3x).  ``"cos"``: ``127 / p99.99(|x|)``: MiniLM has
        outlier dimensions, so p99.9 (before) clipped a coordinate of 31.7% of the SciFact documents;
        recall@10 of the graph at ef 64 on SciFact train / test queries, p99.9 0.981 / 0.977, p99.99
        0.985 / 0.986, max 0.983 / 0.984 (ranking every document by the codes: 0.990 / 0.981, 0.993 / 0.992,
        0.990 / 0.990), and a few extreme values cannot coarsen every code.  The percentile is exact
        over every value up to ``I8_SCALE_VALUES`` of them, else over a seeded random sample of rows
        holding about that many (the ``|x|`` temporary was the size of ``x``: 307 MB at 200,000 x 384).
        """
        if self.metric == "ip":  # the exact maximum (no |x| temporary)
            return np.float32(127.0 / max(float(x.max()), -float(x.min()), 1e-12))
        if x.size <= I8_SCALE_VALUES:
            sample = np.abs(x)
        else:
            rows = max(1, I8_SCALE_VALUES // max(x.shape[1], 1))
            pick = np.sort(np.random.default_rng(0).choice(len(x), rows, replace=False))
            sample = np.abs(x[pick])
        # (the |x| temporary is partitioned in place: no second copy of it)
        return np.float32(127.0 / max(float(np.percentile(sample, I8_SCALE_PERCENTILE, overwrite_input=True)), 1e-12))

    def _calibrate_i8(self, x: np.ndarray) -> None:
        """Fit the int8 calibration on reduced vectors ``x`` ``(n, ndim)``.

        An empty ``x`` (an index built empty, like the other dtypes) gets a neutral placeholder
        (``min`` 0, ``step`` 1/255, scale 127) that no code uses: the first ``add`` to an index
        without slots calibrates on the added vectors, and one to an exact index built on one or
        two vectors recalibrates on those and the added ones.
        """
        self.i8_fitted_n = len(x)
        if len(x) == 0:
            self.i8_min = np.zeros(x.shape[1], np.float32)
            self.i8_step = np.full(x.shape[1], 1.0 / 255.0, np.float32)
            self.i8_scale = np.float32(127.0)
            return
        self._set_i8_range(x.min(axis=0), x.max(axis=0))
        if self.backend != "numpy":
            self.i8_scale = self._i8_graph_scale(x)

    def _set_i8_range(self, lo: np.ndarray, hi: np.ndarray) -> None:
        """The exact index's int8 calibration from the per-dimension minimum ``lo`` and maximum ``hi`` of
        the vectors (and the placeholder graph scale: only the graph's codes use it)."""
        self.i8_min = lo.astype(np.float32)
        self.i8_step = np.maximum((hi - lo) / 255.0, 1e-12).astype(np.float32)
        self.i8_scale = np.float32(127.0 / max(float(np.maximum(-lo, hi).max()), 1e-12))

    def _check_f16_range(self, x: np.ndarray, what: str) -> None:
        """DataError for ``dtype="f16"`` when a reduced vector of ``x`` ``(n, ndim)`` holds a value
        beyond float16's range (65504): it would be stored as inf and score inf / NaN."""
        if self.dtype != "f16" or not x.size:
            return
        big = max(float(x.max()), -float(x.min()))  # no |x| temporary
        if big > F16_MAX:
            raise DataError(f"VectorIndex.{what}: dtype='f16' holds values up to {F16_MAX:g} but the vectors reach "
                            f"{big:.6g} (they would be stored as inf); use dtype='f32', or normalise the vectors "
                            f"(metric='cos') or scale them down")

    def _codes(self, x: np.ndarray, for_usearch: bool, inplace: bool = False) -> np.ndarray:
        """Reduced float vectors -> stored codes (``inplace``: ``x`` is a scratch copy the graph's int8 codes may
        scale in place)."""
        if self.dtype == "f32":
            return x
        if self.dtype == "f16":
            return x.astype(np.float16)
        if self.dtype == "b1":
            return np.packbits(x > 0, axis=1)
        if for_usearch:  # global symmetric scale: the int8-vs-int8 inner product in the graph keeps the geometry
            return _i8_symmetric(x, self.i8_scale, inplace=inplace)
        # per-dimension calibration, clipped to the calibrated range (stored as uint8 = code + 128)
        return np.clip(np.rint((x - self.i8_min) / self.i8_step), 0, 255).astype(np.uint8)

    def i8_clipped(self, x: np.ndarray) -> int:
        """How many coordinates of the reduced vectors ``x`` ``(n, ndim)`` the int8 codes clip
        (:meth:`_codes`): a graph's symmetric codes where ``|x| * i8_scale`` passes 127.5, the exact
        index's where ``x`` lies more than half a step outside the calibrated range.  In blocks of
        ``BLOCK`` rows."""
        half, hi = self.i8_step / 2, self.i8_min + 255 * self.i8_step
        clipped = 0
        for a in range(0, len(x), BLOCK):
            b = x[a:a + BLOCK]
            out = (np.abs(b) * self.i8_scale > 127.5) if self.backend != "numpy" else \
                (b < self.i8_min - half) | (b > hi + half)
            clipped += int(np.count_nonzero(out))
        return clipped

    def _stored_codes_of(self, x: np.ndarray) -> np.ndarray:
        """:meth:`_codes` of the exact backend for many vectors: i8 and b1 in blocks of ``BLOCK`` rows
        (their float / bool temporaries, each the size of ``x``, were made whole)."""
        if self.dtype not in ("i8", "b1") or len(x) <= BLOCK:
            return self._codes(x, for_usearch=False)
        width = (x.shape[1] + 7) // 8 if self.dtype == "b1" else x.shape[1]
        out = np.empty((len(x), width), np.uint8)
        for a in range(0, len(x), BLOCK):
            out[a:a + BLOCK] = self._codes(x[a:a + BLOCK], for_usearch=False)
        return out

    # ------------------------------------------------------------------ build / add / remove
    def build(self, vectors: np.ndarray, *, copy: bool = True) -> "VectorIndex":
        """Index ``vectors`` (n, d) float as slots ``0..n-1``; fits PCA / int8 calibration on them.

        ``copy=False`` hands ``vectors`` over to the index, for a caller that will neither use nor
        modify them again (saves a copy of the corpus): a writable float32 array is normalised in
        place (``metric="cos"``) and kept itself where the index stores the vectors unchanged
        (f32, no reduction, exact search).  By default the index never shares memory with
        ``vectors`` nor writes to them.

        With exact search, no reduction and no ``rescore``, vectors that would be copied (normalised, or
        converted to float32) are normalised and coded a block at a time (:meth:`build_chunks`): no float32
        copy of them all is made beside the codes.
        """
        given = np.asarray(vectors)
        if given.ndim != 2 or not np.issubdtype(given.dtype, np.floating):
            raise DataError(f"VectorIndex.build expects a 2-D float array (n, dim), got {given.dtype} {given.shape}")
        for a in range(0, len(given), BLOCK):  # blocks: no (n, d) bool temporary
            if not np.isfinite(given[a:a + BLOCK]).all():
                raise DataError("VectorIndex.build: the vectors contain NaN or infinite values")
        n, dim = given.shape
        as_is = given.dtype == np.float32 and (self.metric == "ip" or (not copy and given.flags.writeable))
        if n and dim and self._backend_for(n) == "numpy" and self.reduce_kind == "none" and not self.rescore \
                and (copy if self.dtype == "f32" else not as_is):
            # the float32 matrix would be a new array only to be coded (f16 / i8 / b1; not where it is
            # ``vectors`` as they are) or the codes themselves (f32, a copy): normalise and code a block at a
            # time (b1 codes of 200,000 x 384: build +63 MB, not +309 MB; the same codes), into a buffer with
            # :meth:`_grown_codes`'s headroom (the first add copies nothing)
            return self.build_chunks(n, dim, lambda: ((a, min(n, a + BLOCK), np.array(given[a:a + BLOCK], np.float32))
                                                      for a in range(0, n, BLOCK)))
        full = np.asarray(given, dtype=np.float32)
        # a float32 copy made just above is ours to normalise in place, and so is a handed-over array
        ours = not np.may_share_memory(full, given) or (not copy and full.flags.writeable)
        full = self._normalise(full, inplace=ours)
        self.d_in = int(full.shape[1])
        n = len(full)
        self.backend = self._backend_for(n)
        x = self._fit_transforms(full)
        self.ndim = int(x.shape[1])
        self._check_f16_range(x, "build")
        self.alive = np.ones(n, dtype=bool)
        self.codes = None
        self.usearch = None
        self._graph_free = False
        if self.backend == "numpy":
            codes = self._stored_codes_of(x)
            # f32 / no reduction: ``codes`` can be the caller's own array; never keep it (a caller
            # reusing its buffer would change the index).  may_share_memory: a bounds check, no search
            self.codes = codes.copy() if copy and np.may_share_memory(codes, vectors) else codes
        else:
            self.usearch = self._new_usearch()
            self._add_to_graph(np.arange(n, dtype=np.int64), x)
        self.floats = None
        if self.rescore:
            self.floats = self._write_floats(full)
        self.built = True
        return self

    def _backend_for(self, n: int) -> str:
        """The backend a build of ``n`` vectors uses: ``"numpy"`` (exact) or ``"hnsw"`` (``search: auto``
        switches at ``exact_max``)."""
        if self.search_mode == "auto":
            return "numpy" if n <= self.exact_max else "hnsw"
        return "numpy" if self.search_mode == "exact" else "hnsw"

    def build_chunks(self, n: int, dim: int,
                     chunks: Callable[[], Iterable[tuple[int, int, np.ndarray]]]) -> "VectorIndex":
        """:meth:`build` of ``n`` vectors of ``dim`` dimensions handed over chunk by chunk, for a caller that
        computes them (MUVERA's document FDEs): ``chunks()`` yields ``(lo, hi, rows)``, the float vectors
        ``lo:hi`` in order, each ``rows`` array the index's to modify.

        With exact search, no reduction and no ``rescore``, the whole float32 matrix is never made: each
        chunk is checked and written into the stored codes at once, so building peaks at the codes plus one
        chunk (f16: half the float32 matrix, i8: a quarter).  ``i8`` calls ``chunks()`` twice: its
        per-dimension calibration is the range of all the vectors (found in the first pass, chunk by chunk),
        then the codes are made in the second; the chunks must be the same both times.  The index is the
        one :meth:`build` makes of the vectors, code for code.  An HNSW graph (its insertion order clusters
        all the vectors), a PCA or ``rescore`` (their float vectors) gather the chunks into one float32
        matrix and :meth:`build` it, as before.
        """
        n, dim = int(n), int(dim)
        backend = self._backend_for(n)

        def each() -> Iterator[np.ndarray]:
            at = 0
            for lo, hi, rows in chunks():
                rows = np.asarray(rows)
                if lo != at or hi < lo or hi > n or rows.shape != (hi - lo, dim) \
                        or not np.issubdtype(rows.dtype, np.floating):
                    raise DataError(f"VectorIndex.build_chunks: chunk {lo}:{hi} of {n} vectors holds {rows.dtype} "
                                    f"{rows.shape}; expected float rows {at}:... of {dim} dimensions, in order")
                if not np.isfinite(rows).all():
                    raise DataError("VectorIndex.build: the vectors contain NaN or infinite values")
                at = hi
                yield self._normalise(np.asarray(rows, np.float32), inplace=True)
            if at != n:
                raise DataError(f"VectorIndex.build_chunks: the chunks hold {at} vectors, expected {n}")

        if n == 0 or backend != "numpy" or self.reduce_kind != "none" or self.rescore:
            full = np.empty((n, dim), np.float32)
            at = 0
            for rows in each():
                full[at:at + len(rows)] = rows
                at += len(rows)
            return self.build(full, copy=False)
        self.d_in = self.ndim = dim
        self.backend = "numpy"
        if self.dtype == "i8":  # the calibration first: the range of every vector
            lo_all = np.full(dim, np.inf, np.float32)
            hi_all = np.full(dim, -np.inf, np.float32)
            for rows in each():
                if len(rows):
                    np.minimum(lo_all, rows.min(axis=0), out=lo_all)
                    np.maximum(hi_all, rows.max(axis=0), out=hi_all)
            self.i8_fitted_n = n
            self._set_i8_range(lo_all, hi_all)
        width = (dim + 7) // 8 if self.dtype == "b1" else dim
        store = {"f32": np.float32, "f16": np.float16, "i8": np.uint8, "b1": np.uint8}[self.dtype]
        # with :meth:`_grown_codes`'s headroom: the first ``add`` appends without copying the codes (the
        # spare rows are never written until then, so their pages take no memory)
        self._codes_buf = np.empty((n + max(n // 4, 16), width), store)
        codes = self._codes_buf[:n]
        at = 0
        for rows in each():
            self._check_f16_range(rows, "build")
            codes[at:at + len(rows)] = self._stored_codes_of(rows)
            at += len(rows)
        self.codes = codes
        self.alive = np.ones(n, dtype=bool)
        self.usearch = None
        self.floats = None
        self.built = True
        return self

    def _new_usearch(self) -> Index:
        from usearch.index import Index

        kind = {"f32": "f32", "f16": "f16", "i8": "i8", "b1": "b1"}[self.dtype]
        metric = "hamming" if self.dtype == "b1" else "ip"  # i8 too: see the module docstring
        ndim = self.ndim if self.dtype != "b1" else 8 * ((self.ndim + 7) // 8)
        return Index(ndim=ndim, metric=metric, dtype=kind, connectivity=self.connectivity,
                     expansion_add=self.expansion_add, expansion_search=self.expansion_search)

    def _restore(self, source: str | bytes | bytearray, view: bool) -> Index | None:
        """``usearch.Index.restore`` with this index's beam widths: a usearch file does not keep
        them, and a restored index would search with usearch's default ``expansion_search`` (64)."""
        from usearch.index import Index

        u = Index.restore(source, view=view)
        if u is not None:
            # usearch defines these properties' setters apart from their getters, which mypy reads as read-only
            u.expansion_add, u.expansion_search = self.expansion_add, self.expansion_search  # type: ignore[misc]
        return u

    def _add_to_graph(self, slots: np.ndarray, x: np.ndarray, chunk: int = 131_072) -> None:
        """Add reduced vectors ``x`` ``(m, ndim)`` to the usearch graph as ``slots``, in
        :func:`~ragkit.retrievers._locality.insertion_order` when ``reorder`` (chunks of ``chunk``
        rows bound the reordered copy of the codes)."""
        graph = self._graph()
        order = insertion_order(x) if self.reorder else np.arange(len(x), dtype=np.int64)
        for lo in range(0, len(x), chunk):
            rows = order[lo: lo + chunk]
            part = x[rows]  # a copy (fancy index): int8 codes scale it in place
            codes = self._codes(part, for_usearch=True, inplace=True)
            del part
            graph.add(slots[rows].astype(np.uint64), codes, threads=self._threads())

    def _scratch(self) -> Path:
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            return self.workdir
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="ragkit-index-")
            weakref.finalize(self, shutil.rmtree, self._tmp, True)
        return Path(self._tmp)

    def _write_floats(self, full: np.ndarray) -> np.ndarray:
        """Write the float vectors to a fresh ``.npy`` and return a read-only memory map of it."""
        fd, name = tempfile.mkstemp(prefix="floats-", suffix=".npy", dir=self._scratch())
        os.close(fd)
        np.save(name, np.ascontiguousarray(full, dtype=np.float32), allow_pickle=False)
        self._own_floats(name)
        return _random_access(np.load(name, mmap_mode="r"))

    def _own_floats(self, name: str) -> None:
        """``name`` is now this index's scratch float vectors file; the one it replaces is deleted."""
        old, self._floats_own = self._floats_own, name
        if old is not None and old != name:
            _unlink_when_unmapped(old, getattr(self, "floats", None))

    def _append_floats(self, new: np.ndarray) -> np.ndarray:
        """Append ``new`` ``(m, d_in)`` to the float vectors; returns a fresh read-only memory map.

        The old vectors are never loaded into memory: this index's own scratch file is grown in
        place (:func:`_grow_npy`; maps of it stay valid), and a file it does not own (one mapped
        by ``load`` from a saved folder, which is left untouched) is copied into a new scratch
        file in chunks of ``COPY_BYTES``, followed by the new rows.  A superseded scratch file is
        deleted at once (POSIX keeps the data of a mapped deleted file until it is unmapped).
        """
        new = np.ascontiguousarray(new, dtype=np.float32)
        old = self._float_file()
        src = _whole_map(old)
        if src is not None and self._floats_own is not None \
                and os.path.abspath(src) == os.path.abspath(self._floats_own) and _grow_npy(Path(src), new):
            return _random_access(np.load(src, mmap_mode="r"))
        fd, name = tempfile.mkstemp(prefix="floats-", suffix=".npy", dir=self._scratch())
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(_npy_header((len(old) + len(new), self.d_in)))
                step = max(1, COPY_BYTES // max(4 * self.d_in, 1))
                for a in range(0, len(old), step):
                    fh.write(np.ascontiguousarray(old[a: a + step], dtype="<f4").data)
                fh.write(np.ascontiguousarray(new, dtype="<f4").data)
        except BaseException:
            _unlink_quiet(name)
            raise
        self._own_floats(name)
        return _random_access(np.load(name, mmap_mode="r"))

    def _check_query_dim(self, x: np.ndarray, what: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise DataError(f"VectorIndex.{what}: expected vectors of shape (n, {self.d_in}), got {x.shape}")
        return x

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Append vectors (with the fitted PCA / calibration; no rebuild).  Returns their slots.

        Exact search keeps its codes in a buffer with spare rows (:meth:`_grown_codes`; :meth:`build` leaves a
        quarter more): an add copies them only when the buffer is full.  An index loaded with ``mmap=True``
        maps its codes from the file, so its first add reads the whole codes into process memory (a buffer
        a quarter larger, written from the map); later adds append to that buffer.
        """
        self._check_built()
        raw = self._check_query_dim(vectors, "add")
        if not np.isfinite(raw).all():  # before normalising: an inf would warn (0/0, inf/inf) first
            raise DataError("VectorIndex.add: the vectors contain NaN or infinite values")
        full = self._normalise(raw)
        start, m = self.n_slots, len(full)
        slots = np.arange(start, start + m, dtype=np.int64)
        if m == 0:
            return slots
        x = self._reduce_rows(full)
        self._check_f16_range(x, "add")
        self._writable()
        # (the number of vectors the calibration was fitted on, not n_slots: compact() shrinks those, and a
        # calibration fitted on a whole corpus stays when its documents are removed)
        if self.dtype == "i8" and self.i8_fitted_n == 0 and self.n_slots == 0:  # built empty: calibrate on these
            self._calibrate_i8(x)
        elif self.dtype == "i8" and self.i8_fitted_n < 3 and self.n_slots < 3 and self.backend == "numpy":
            # built on one or two vectors, a range of zero width per dimension (every later vector fell on
            # one code): calibrate on them and the added ones.  Their codes are their range's ends, so
            # decoding gives them back exactly (float rounding) to re-encode with the new calibration.
            old = self.i8_min + np.asarray(self.codes).astype(np.float32) * self.i8_step
            self._calibrate_i8(np.concatenate([old, x]))
            self.codes = self._codes(old, for_usearch=False)
        if self.dtype == "i8":  # what the calibration clips of them (Dense warns when it is much)
            self.added_clipped = (self.i8_clipped(x), int(x.size))
        if self.backend == "numpy":
            self.codes = self._grown_codes(self._stored_codes_of(x))
        else:
            if self._graph_free:  # nodes usearch removed (a graph edited by an earlier
                self.rebuild_graph()  # version): usearch's add would reuse them and unlink their neighbours
            self._add_to_graph(slots, x)
        if self.rescore:
            self.floats = self._append_floats(full)
        self.alive = np.concatenate([self.alive, np.ones(m, dtype=bool)])
        return slots

    def _grown_codes(self, new: np.ndarray) -> np.ndarray:
        """The stored codes with ``new`` rows appended, as a view of a buffer with room to spare: a
        quarter more rows than needed are allocated when it is full, so a stream of small adds
        copies the codes ``O(log n)`` times instead of once per call (at 100,000 f32 vectors a one-vector
        add copied 154 MB).  Views handed out earlier keep their rows: later rows are written past them."""
        codes = np.asarray(self.codes)
        n, m = len(codes), len(new)
        buf = getattr(self, "_codes_buf", None)
        ours = (codes.base is buf and buf is not None and codes.__array_interface__["data"][0]
                == buf.__array_interface__["data"][0])
        if buf is None or not ours or len(buf) < n + m or buf.dtype != new.dtype or buf.shape[1:] != new.shape[1:]:
            buf = np.empty((n + m + max((n + m) // 4, 16), *new.shape[1:]), dtype=new.dtype)
            buf[:n] = codes
            self._codes_buf = buf
        buf[n:n + m] = new
        return buf[:n + m]

    def remove(self, slots: np.ndarray, *, compact_next: bool = False) -> None:
        """Mark slots deleted (tombstones).  An HNSW graph keeps their nodes, links and keys (searches skip
        them) until they pass ``GRAPH_DEAD_FRACTION`` of its nodes, when it is rebuilt from the live codes
        (:meth:`rebuild_graph`, slots unchanged).

        ``compact_next=True`` is a caller's word that it calls :meth:`compact` right after (``Dense.remove``
        when more slots are dead than live): the graph is then not rebuilt here, since ``compact`` builds it
        anew from the same live codes; one build, not two.  Until ``compact`` runs, searches skip the dead
        nodes as for any edited graph.

        usearch's own ``remove`` is not used: its next ``add`` reuses a removed node (``index_gt::update``),
        clearing that node's links, and a node whose only incoming link came from it drops out of the graph
        (a document added to SciFact's hashed vectors, then its one neighbour removed, was never found
        again, not even by its own vector at ``expansion_search`` 1,000)."""
        self._check_built()
        slots = np.unique(np.asarray(slots, dtype=np.int64))
        if len(slots) and (slots.min() < 0 or slots.max() >= self.n_slots or not self.alive[slots].all()):
            raise DataError(f"VectorIndex.remove: slots must be live slots in [0, {self.n_slots}), "
                            f"got {slots.tolist()[:10]}")
        if not len(slots):
            return
        alive = self.alive.copy()
        alive[slots] = False
        self.alive = alive
        if (not compact_next and self.usearch is not None
                and self._graph_dead() > GRAPH_DEAD_FRACTION * len(self.usearch)):
            self.rebuild_graph()

    def _graph_dead(self) -> int:
        """Dead slots whose nodes the HNSW graph still holds (0 without a graph)."""
        return len(self.usearch) - self.n_alive if self.usearch is not None else 0

    def rebuild_graph(self) -> None:
        """Build the HNSW graph anew from the live slots' codes, keeping the slots (no renumbering, unlike
        :meth:`compact`): the dead nodes and every link an edit left go.  :meth:`remove` calls it when dead
        nodes pass ``GRAPH_DEAD_FRACTION`` of the graph (not when told a :meth:`compact`, itself a build,
        follows); it costs a build of the live vectors."""
        self._check_built()
        if self.usearch is None:
            return
        live = np.flatnonzero(self.alive)
        self._new_graph_from(live, self._live_codes(live))
        self._graph_free = False

    def compact(self) -> np.ndarray:
        """Free removed slots: drop the dead rows of the codes and float vectors and number the live
        slots ``0..n_alive-1`` in their old order; an HNSW graph is rebuilt from its live codes (usearch
        keeps removed nodes).  Search results are the same as before, renumbered (the rebuilt graph
        is another approximation of the same vectors).

        Returns ``remap`` ``(old n_slots,)`` int64: the new slot of each old slot, ``-1`` for removed
        ones; a caller keeping slots (``Dense.slots_``) maps them with ``remap[slots]``.  Not called
        by ``save``, which writes dead rows as they are.
        """
        self._check_built()
        alive = self.alive
        remap = np.full(len(alive), -1, np.int64)
        live = np.flatnonzero(alive)
        remap[live] = np.arange(len(live), dtype=np.int64)
        if len(live) == len(alive):
            return remap
        if self.backend == "numpy":
            self.codes = np.ascontiguousarray(np.asarray(self._stored_codes())[live])
            self._codes_buf = None  # type: ignore[assignment]
        else:
            self._new_graph_from(np.arange(len(live), dtype=np.int64), self._live_codes(live))
            self._graph_free = False
        if self.floats is not None:
            self.floats = self._write_live_floats(live)
        self.alive = np.ones(len(live), dtype=bool)
        return remap

    def _live_codes(self, live: np.ndarray) -> np.ndarray:
        """The graph's codes of slots ``live`` (fetched ``BLOCK`` rows at a time)."""
        if not len(live):
            return self._get(live)
        return np.concatenate([self._get(live[a:a + BLOCK]) for a in range(0, len(live), BLOCK)])

    def _new_graph_from(self, keys: np.ndarray, codes: np.ndarray) -> None:
        """Replace the HNSW graph by a new one of ``codes`` (the graph's own codes) under ``keys``, inserted in
        :func:`~ragkit.retrievers._locality.insertion_order` when ``reorder``."""
        graph = self._graph()
        from usearch.index import Index

        # the old graph's kind (an i8 graph saved with the ``cos`` kernel by earlier versions stays one)
        self.usearch = Index(ndim=graph.ndim, metric=graph.metric_kind, dtype=graph.dtype,
                             connectivity=graph.connectivity, expansion_add=self.expansion_add,
                             expansion_search=self.expansion_search)
        self._view = False
        if not len(keys):
            return
        if self.reorder:
            xs = np.unpackbits(codes, axis=1)[:, : self.ndim].astype(np.float32) * 2 - 1 \
                if self.dtype == "b1" else codes.astype(np.float32)
            order = insertion_order(xs)
            del xs
        else:
            order = np.arange(len(keys), dtype=np.int64)
        for a in range(0, len(order), 131_072):
            rows = order[a:a + 131_072]
            self._graph().add(keys[rows].astype(np.uint64), codes[rows], threads=self._threads())

    def _write_live_floats(self, live: np.ndarray) -> np.ndarray:
        """A new scratch ``.npy`` of the float vectors of slots ``live``, copied in chunks of ``COPY_BYTES``."""
        old = self._float_file()
        fd, name = tempfile.mkstemp(prefix="floats-", suffix=".npy", dir=self._scratch())
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(_npy_header((len(live), self.d_in)))
                step = max(1, COPY_BYTES // max(4 * self.d_in, 1))
                for a in range(0, len(live), step):
                    fh.write(np.ascontiguousarray(old[live[a: a + step]], dtype="<f4").data)
        except BaseException:
            _unlink_quiet(name)
            raise
        self._own_floats(name)
        return _random_access(np.load(name, mmap_mode="r"))

    def _writable(self) -> None:
        """A view-loaded (mmap) usearch index is read-only: copy it into memory before editing.

        The copy is made from the mapped memory, not by reading the file again: the file may have
        been replaced (a later save to the same folder) or deleted since ``load``, while the mapping
        still holds what was loaded."""
        if self.usearch is not None and getattr(self, "_view", False):
            # usearch types save() as bytes | None: None only when saving to the index's own path, which an index
            # made or restored here never has
            self.usearch, self._view = self._restore(self.usearch.save(), view=False), False  # type: ignore[arg-type]

    def _check_built(self) -> None:
        if not self.built:
            raise ParamError("VectorIndex: call build(vectors) (or load) before searching or editing")

    def set_expansion_search(self, ef: int) -> None:
        """Make ``ef`` the index's own HNSW beam width (saved with it, and the graph's): searches at it share
        the graph again, where a per-call width holds it alone (a ``Dense`` whose ``params`` were updated
        after the fit sets it once, at its next search)."""
        with self._ef_lock.writing():
            self.expansion_search = int(ef)
            if getattr(self, "usearch", None) is not None:
                self.usearch.expansion_search = int(ef)  # type: ignore[union-attr, misc]

    def _graph(self) -> Index:
        """The usearch graph (``hnsw`` backend)."""
        if self.usearch is None:
            raise RuntimeError(f"VectorIndex: the {self.backend!r} backend has no HNSW graph")
        return self.usearch

    def _stored_codes(self) -> np.ndarray:
        """The codes of the exact (``numpy``) backend."""
        if self.codes is None:
            raise RuntimeError(f"VectorIndex: the {self.backend!r} backend keeps no codes in numpy")
        return self.codes

    def _float_file(self) -> np.ndarray:
        """The memory-mapped float vectors (``rescore``)."""
        if self.floats is None:
            raise RuntimeError("VectorIndex: float vectors are kept only with rescore=True")
        return self.floats

    # ------------------------------------------------------------------ search
    def _block_scores(self, qr: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """First-stage scores of reduced queries ``qr`` against a block of stored codes."""
        if self.dtype == "f32":
            return qr @ np.asarray(codes, dtype=np.float32).T
        if self.dtype == "f16":
            return qr @ np.asarray(codes).astype(np.float32).T
        if self.dtype == "i8":
            if codes.dtype == np.int8:  # global-scale codes fetched from usearch
                return (qr @ codes.astype(np.float32).T) / self.i8_scale
            return codes.astype(np.float32) @ (qr * self.i8_step).T  # (n, nq); transposed below
        # b1: the float query against the ±1 bits (asymmetric; ranks at least as well as Hamming
        # on the sign-quantised query, for the same matrix-product cost in numpy)
        db = np.unpackbits(np.asarray(codes), axis=1)[:, : self.ndim].astype(np.float32) * 2 - 1
        return (qr @ db.T) / np.float32(np.sqrt(self.ndim))

    def _exact(self, qr: np.ndarray, kk: int, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``kk`` over live slots (or over ``rows``) in blocks; returns (scores, slots).

        Queries are taken in chunks of at most ``EXACT_CELLS // BLOCK`` (1,024): the score block and
        the merge's temporaries are ``(queries, BLOCK)`` each (10,000 queries: ~2 GB at once)."""
        nq = len(qr)
        if rows is None:
            rows = np.flatnonzero(self.alive) if not self.alive.all() else None
        step = max(1, EXACT_CELLS // BLOCK)
        if nq > step:  # a loop over chunks of queries, each answered as alone
            parts = [self._exact(qr[a:a + step], kk, rows) for a in range(0, nq, step)]
            return np.concatenate([s for s, _ in parts]), np.concatenate([i for _, i in parts])
        n = self.n_slots if rows is None else len(rows)
        best_s: np.ndarray | None = None
        best_i: np.ndarray | None = None
        i8_const = qr @ self.i8_min if (self.dtype == "i8" and self.backend == "numpy") else None
        for start in range(0, n, BLOCK):
            idx = np.arange(start, min(n, start + BLOCK)) if rows is None else rows[start:start + BLOCK]
            if self.backend == "numpy":
                stored = self._stored_codes()
                codes = stored[idx[0]: idx[-1] + 1] if rows is None else stored[idx]
            else:
                codes = self._get(idx)
            s = self._block_scores(qr, codes)
            if i8_const is not None:
                s = s.T + i8_const[:, None]
            best_s, best_i = _topk_merge(best_s, best_i, s.astype(np.float32, copy=False), idx.astype(np.int64), kk)
        if best_s is None or best_i is None:
            return np.full((nq, 0), -np.inf, np.float32), np.full((nq, 0), -1, np.int64)
        return best_s, best_i

    def _get(self, slots: np.ndarray) -> np.ndarray:
        """Stored codes of ``slots`` fetched from the usearch index."""
        graph = self._graph()
        if not len(slots):
            return np.zeros((0, graph.ndim // 8 if self.dtype == "b1" else self.ndim),
                            dtype={"f32": np.float32, "f16": np.float16, "i8": np.int8, "b1": np.uint8}[self.dtype])
        got = graph.get(np.asarray(slots, dtype=np.uint64), dtype=self.dtype)  # usearch's names are ours
        if not isinstance(got, (tuple, list)):
            return np.asarray(got).reshape(len(slots), -1)
        found = [g for g in got if g is not None]  # usearch gives None for a key it does not hold
        if len(found) != len(slots):
            raise RuntimeError(f"VectorIndex: the HNSW graph holds no vector for {len(slots) - len(found)} of the "
                               f"{len(slots)} slots asked for")
        return np.stack(found)

    def _graph_search(self, q: np.ndarray, kk: int, ef: int | None) -> Any:
        """usearch's ``search`` of codes ``q`` for ``kk`` neighbours with beam width ``ef`` (None: the graph's
        own).  usearch takes the width from the index only, so a search at another width holds
        ``_ef_lock`` alone, sets the graph's, and restores it; searches at the graph's width share it."""
        graph = self._graph()
        with self._ef_lock.reading():
            if ef is None or ef == graph.expansion_search:
                return graph.search(q, kk, threads=self._threads())
        with self._ef_lock.writing():
            old = graph.expansion_search
            graph.expansion_search = ef  # type: ignore[misc]  # usearch defines the setter apart from the getter
            try:
                return graph.search(q, kk, threads=self._threads())
            finally:
                graph.expansion_search = old  # type: ignore[misc]

    def _hnsw(self, qr: np.ndarray, kk: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The graph's top ``kk`` of reduced queries ``qr`` at beam width ``ef`` (None: the graph's own)."""
        from usearch.index import MetricKind

        graph = self._graph()
        q_scale: np.ndarray | None = None  # per query: the scale its codes carry (i8; f16 past float16's range)
        if self.dtype == "i8":  # the corpus's scale, shrunk per query where it would clip: an ``ip``
            # index's queries can be far larger than its documents (MUVERA: token sums vs means)
            q_scale = np.minimum(self.i8_scale, 127.0 / np.maximum(np.abs(qr).max(axis=1), 1e-30)).astype(np.float32)
            q = _i8_symmetric(qr, q_scale[:, None])
        elif self.dtype == "f16":
            q, q_scale = _f16_queries(qr)
        else:
            q = self._codes(qr, for_usearch=True)
        m = self._graph_search(q, kk, ef)
        keys = np.asarray(m.keys).reshape(len(qr), -1).astype(np.int64)
        dist = np.asarray(m.distances, dtype=np.float32).reshape(len(qr), -1)
        # a one-query batch comes back as ``Matches`` (already cut to the hits found), more as ``BatchMatches``
        counts = np.asarray(m.counts).reshape(len(qr)) if hasattr(m, "counts") else np.array([keys.shape[1]])
        valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
        dist = np.where(valid, dist, np.float32(0.0))  # padding past the hits holds NaN: never compute on it
        if self.dtype == "b1":
            s = -dist
        elif q_scale is not None and graph.metric_kind == MetricKind.IP:  # the dot of the scaled codes
            carried = (np.float32(self.i8_scale) * q_scale[:, None]) if self.dtype == "i8" else q_scale[:, None]
            s = (1.0 - dist) / carried
        else:  # f32 / f16 inner product (or cosine: no scale matters), or an i8 cosine graph of an earlier version
            s = 1.0 - dist
        return np.where(valid, s, -np.inf).astype(np.float32), np.where(valid, keys, -1)

    def _filtered_hnsw(self, qr: np.ndarray, kk: int, mask: np.ndarray | None,
                       ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``kk`` of the graph among the live slots ``mask`` passes (None: every live slot, of a graph that
        still holds dead nodes).

        A filter passing at most ``min(FILTER_EXACT_MAX, exact_max)`` live rows is answered exactly on
        them (their codes fetched from usearch, one Python object a row: 40,000 rows x 128 dims, a 50%
        filter took 117 ms a query, 39 ms on an exact index).  A broader one searches the graph for
        ``fetch = 2 * kk / selectivity + expansion_search`` neighbours (the selectivity among the graph's
        nodes, dead ones included) and keeps those that pass; without a filter, ``kk`` over the live share
        of the nodes, with a margin.  Queries still short of ``kk`` passing rows search again with 4x the
        width, and then exactly.
        """
        ok = self.alive if mask is None else (mask & self.alive)
        n_pass = self.n_alive if mask is None else int(np.count_nonzero(ok))
        want = min(kk, n_pass)
        if want == 0 or (mask is not None and n_pass <= min(FILTER_EXACT_MAX, self.exact_max)):
            return self._exact(qr, kk, np.flatnonzero(ok))
        nodes = max(len(self._graph()), n_pass)
        sel = n_pass / nodes
        beam = self.expansion_search if ef is None else ef
        if mask is None:  # usearch's beam holds dead nodes too: as many more as they are (ef 64, 20% dead: 80)
            fetch = int(min(nodes, np.ceil(max(1.25 * kk, beam) / sel) + 8))
        else:
            fetch = int(min(nodes, np.ceil(2 * kk / sel) + beam))
        s, i = self._passing_hnsw(qr, fetch, kk, ok, ef)
        short = np.flatnonzero((i >= 0).sum(axis=1) < want)
        if len(short) and fetch < nodes:  # too few passed in the shortlist: search those wider
            s2, i2 = self._passing_hnsw(qr[short], int(min(nodes, 4 * fetch)), kk, ok, ef)
            s[short], i[short] = s2, i2
            short = short[(i2 >= 0).sum(axis=1) < want]
        if len(short):  # still too few: answer those exactly
            es, ei = self._exact(qr[short], kk, np.flatnonzero(ok))
            es, ei = _sort_desc(es, ei)
            pad = kk - es.shape[1]
            s[short] = np.pad(es, ((0, 0), (0, pad)), constant_values=-np.inf)
            i[short] = np.pad(ei, ((0, 0), (0, pad)), constant_values=-1)
        return s, i

    def _passing_hnsw(self, qr: np.ndarray, fetch: int, kk: int, ok: np.ndarray,
                      ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The graph's top ``fetch`` of each query, the live slots ``ok`` kept, cut to ``(n_q, kk)`` (-1 pads)."""
        s, i = self._hnsw(qr, fetch, ef)
        keep = (i >= 0) & ok[np.maximum(i, 0)]
        s, i = _sort_desc(np.where(keep, s, -np.inf), np.where(keep, i, -1))
        s, i = s[:, :kk], i[:, :kk]
        if i.shape[1] < kk:
            s = np.pad(s, ((0, 0), (0, kk - s.shape[1])), constant_values=-np.inf)
            i = np.pad(i, ((0, 0), (0, kk - i.shape[1])), constant_values=-1)
        return s, i

    def _second_stage(self, q_full: np.ndarray, qr: np.ndarray, cand: np.ndarray,
                      use_floats: bool | None = None) -> np.ndarray:
        """Scores of candidate slots ``cand`` (nq, c), -1 = none: floats from disk (``use_floats``; default
        ``rescore``), or the float query vs ±1 bits (``b1``); ``-inf`` for -1.

        The queries go in chunks whose ``(queries, c, dims)`` float32 block of gathered vectors and
        ``(<= queries * c, dims)`` distinct candidates' vectors stay under ``SECOND_STAGE_BYTES``
        together (256 queries x 400 candidates x 384 dims would be 157 MB each at once).
        """
        nq, c = cand.shape
        use_floats = self.rescore if use_floats is None else use_floats
        dims = self.d_in if use_floats else self.ndim
        step = max(1, SECOND_STAGE_BYTES // max(2 * 4 * c * dims, 1))
        out = np.empty((nq, c), np.float32)
        for a in range(0, nq, step):
            out[a: a + step] = self._second_stage_chunk(q_full[a: a + step], qr[a: a + step], cand[a: a + step],
                                                        use_floats)
        return out

    def _second_stage_chunk(self, q_full: np.ndarray, qr: np.ndarray, cand: np.ndarray,
                            use_floats: bool) -> np.ndarray:
        valid = cand >= 0
        u, inv = np.unique(np.where(valid, cand, cand.max(initial=0)), return_inverse=True)
        inv = inv.reshape(cand.shape)
        if use_floats:
            vecs = np.asarray(self._float_file()[u], dtype=np.float32)
            qv = q_full
        else:  # b1 without floats: asymmetric float query x ±1 bits
            codes = self._get(u) if self.backend == "hnsw" else self._stored_codes()[u]
            vecs = np.unpackbits(codes, axis=1)[:, : self.ndim].astype(np.float32)
            vecs *= 2  # in place: one (u, ndim) float block
            vecs -= 1
            vecs /= np.sqrt(self.ndim)
            qv = qr
        s = _row_dots(vecs[inv], qv) if vecs.shape[0] else np.zeros(cand.shape, np.float32)
        return np.where(valid, s, -np.inf).astype(np.float32)

    def search(self, queries: np.ndarray, k: int, mask: np.ndarray | None = None, *,
               expansion_search: int | None = None, oversample: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` slots per query, best first.

        Parameters
        ----------
        queries : ndarray, shape (n_q, d_in)
            Full float query vectors (the same space as the built vectors).
        k : int
            Results per query.
        mask : ndarray of bool, shape (n_slots,), optional
            Only slots where ``mask`` is true are returned.
        expansion_search : int, optional
            HNSW beam width for this call (default: the index's ``expansion_search``); unused by exact search.
        oversample : int, optional
            Shortlist multiplier for this call (default: the index's ``oversample``); used where search is
            two-stage (:attr:`has_shortlist`).

        Returns
        -------
        slots : ndarray int64, shape (n_q, k)
            ``-1`` where fewer than ``k`` slots pass.
        scores : ndarray float32, shape (n_q, k)
            Cosine / inner product (approximate for compressed storage), ``-inf`` for padding.
        """
        self._check_built()
        q_raw = self._check_query_dim(queries, "search")
        # the raw vectors: normalising an inf first warns ``invalid value encountered in divide`` (an error
        # under ``-W error``) before this DataError
        check_finite_vectors(q_raw, "VectorIndex.search", "query")
        q_full = self._normalise(q_raw)
        nq = len(q_full)
        if k < 1:
            raise ParamError(f"VectorIndex.search: k must be >= 1, got {k}")
        for name, v in (("expansion_search", expansion_search), ("oversample", oversample)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
                raise ParamError(f"VectorIndex.search: {name} must be a positive integer, got {v!r}")
        over = self.oversample if oversample is None else int(oversample)
        ef = None if expansion_search is None else int(expansion_search)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (self.n_slots,):
                raise DataError(f"VectorIndex.search: mask must have shape ({self.n_slots},), got {mask.shape}")
        if nq == 0 or self.n_alive == 0:
            return np.full((nq, k), -1, np.int64), np.full((nq, k), -np.inf, np.float32)
        qr = self._reduce(q_full)
        kk = k * over if self.has_shortlist else k
        # b1 graph: the Hamming distance of the sign-quantised query ranks far worse than the float query
        # against the bits, which the exact path uses; so the graph hands over a wider Hamming set
        # (min(oversample, B1_WIDEN) * kk, at least the search beam), re-ranked by the float query against
        # the bits, and only its top kk go on (to the float rescore with ``rescore``).  3,000 SciFact docs,
        # recall@10 with rescore at oversample 4: 0.862 with the Hamming top-kk, 0.952 so (exact 0.960).
        b1_graph = self.dtype == "b1" and self.backend != "numpy"
        first = max(kk * min(over, B1_WIDEN), self.expansion_search if ef is None else ef) if b1_graph else kk
        if self.backend == "numpy":
            rows = None if mask is None else np.flatnonzero(mask & self.alive)
            s, i = self._exact(qr, first, rows)
        elif mask is None:  # a request for every live slot is answered exactly (no graph walk can miss one)
            if first >= self.n_alive:
                s, i = self._exact(qr, first, None)
            else:  # a graph holding dead nodes: those are dropped from a wider shortlist
                s, i = self._filtered_hnsw(qr, first, None, ef) if self._graph_dead() else self._hnsw(qr, first, ef)
        else:
            s, i = self._filtered_hnsw(qr, first, mask, ef)
        if b1_graph and i.shape[1]:  # the float query against the bits
            s = self._second_stage(q_full, qr, i, use_floats=False)
            if self.rescore and i.shape[1] > kk:
                s, i = _sort_desc(s, i)
                s, i = s[:, :kk], i[:, :kk]
        if self.rescore and i.shape[1]:
            s = self._second_stage(q_full, qr, i, use_floats=True)
        if self.metric == "cos" and (self.dtype != "b1" or self.rescore):
            # quantised codes approximate a cosine and can pass 1 (int8 graph: 1.002); callers rely on [-1, 1]
            s = np.where(np.isfinite(s), np.clip(s, -1.0, 1.0), s).astype(np.float32, copy=False)
        s, i = _sort_desc(s, i)
        s, i = s[:, :k], i[:, :k]
        zero = ~q_full.any(axis=1)
        if zero.any():  # no direction: every score ties at 0, and corpus order is no answer (BM25: no terms)
            s[zero], i[zero] = -np.inf, -1
        if s.shape[1] < k:
            pad = k - s.shape[1]
            s = np.pad(s, ((0, 0), (0, pad)), constant_values=-np.inf)
            i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
        return i, s

    def float_vectors(self) -> np.ndarray | None:
        """The float vectors ``(n_slots, d_in)`` of every slot, read-only (memory-mapped for
        ``rescore``, else the f32 exact codes themselves), or None when not kept."""
        if self.floats is not None:
            return self.floats
        if self.dtype == "f32" and self.reduce_kind == "none" and self.backend == "numpy":
            view = self._stored_codes().view()
            view.flags.writeable = False
            return view
        return None

    def memory_bytes(self) -> int:
        """Bytes of the index held in process memory: codes, graph, calibration (not the mmap'd floats).

        The usearch graph counts as its contents (``serialized_length``: nodes, links and codes),
        like faiss's ``serialize_index`` size; usearch's ``memory_usage`` also counts the arenas it
        reserves ahead (16.8 MB for 5,000 codes of 16 bytes, whose contents are 0.8 MB), pages
        that stay untouched."""
        self._check_built()
        total = self.alive.nbytes
        if self.codes is not None and not isinstance(self.codes, np.memmap):
            total += self.codes.nbytes
        if self.usearch is not None and not getattr(self, "_view", False):
            total += int(self.usearch.serialized_length)
        for name in ("pca_mean", "pca_components", "i8_min", "i8_step"):
            a = getattr(self, name, None)
            if a is not None:
                total += a.nbytes
        return int(total)

    # ------------------------------------------------------------------ persistence
    def _intact(self, path: str | Path) -> bool:
        """Whether the file at ``path`` still holds what this index maps from it: its own scratch
        float vectors file, or a file mapped by ``load`` that has not been replaced since."""
        path = os.path.abspath(path)
        if self._floats_own is not None and path == os.path.abspath(self._floats_own):
            return os.path.isfile(path)
        return path in self._mapped and self._mapped[path] is not None and _file_id(path) == self._mapped[path]

    def save(self, folder: str | Path, prefix: str = "index") -> None:
        """Write the index into ``folder`` as ``<prefix>.json`` + ``<prefix>.*.npy`` + ``<prefix>.usearch``.

        Every file is written under a temporary name in ``folder`` and renamed over the old one,
        so an interrupted save leaves each previous file whole, and saving an index loaded with
        ``mmap=True`` back into its own folder is safe: a file the index maps, unchanged since
        ``load``, is kept as it is (not rewritten from its own mapping); the manifest comes last.
        """
        self._check_built()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)

        def same(src: str | None, p: Path) -> bool:  # ``p`` is the very file the index maps, unchanged
            try:
                return src is not None and self._intact(src) and p.exists() and os.path.samefile(src, p)
            except OSError:
                return False

        arrays: dict[str, np.ndarray] = {"alive": self.alive}
        if self.codes is not None:
            arrays["codes"] = self.codes
        for name in ("pca_mean", "pca_components", "i8_min", "i8_step"):
            if getattr(self, name, None) is not None:
                arrays[name] = getattr(self, name)
        if self.floats is not None:
            arrays["floats"] = self.floats
        files: dict[str, dict[str, int]] = {}
        for name, arr in arrays.items():
            p = folder / f"{prefix}.{name}.npy"
            src = _whole_map(arr)
            if same(src, p):
                pass
            elif src is not None and self._intact(src):  # a whole mapped file: copy it (no page faults)
                with atomic_file(p) as t:
                    shutil.copyfile(src, t)
            else:
                with atomic_file(p) as t:
                    _save_npy(t, np.asarray(arr))
            files[p.name] = {"bytes": p.stat().st_size, "crc32": _crc(p)}
        if self.usearch is not None:
            p = folder / f"{prefix}.usearch"
            view = getattr(self, "_view", False)
            if view and same(self._view_path, p):
                pass
            elif view and self._intact(self._view_path):
                with atomic_file(p) as t:
                    shutil.copyfile(self._view_path, t)
            else:
                with atomic_file(p) as t:
                    self.usearch.save(str(t))
            files[p.name] = {"bytes": p.stat().st_size, "crc32": _crc(p)}
        meta = {"format": FORMAT, "config": self.config(), "d_in": self.d_in, "ndim": self.ndim,
                "backend": self.backend, "n_slots": self.n_slots, "files": files,
                "i8_scale": float(self.i8_scale) if self.dtype == "i8" else None,
                "i8_fitted_n": int(self.i8_fitted_n) if self.dtype == "i8" else None,
                "explained_variance_ratio": getattr(self, "explained_variance_ratio", None)}
        from ragkit._saves import write_json

        write_json(folder / f"{prefix}.json", meta)

    @classmethod
    def load(cls, folder: str | Path, prefix: str = "index", mmap: bool = False, verify: bool = True) -> "VectorIndex":
        """Load an index written by :meth:`save`.

        ``mmap=True`` memory-maps the arrays and opens the usearch file as a view (served from
        the page cache; editing copies it into memory first).  Every file's size is checked
        and, with ``verify`` (default), its CRC32: a truncated or corrupt file raises
        :class:`ArtifactError` before usearch or numpy reads it.

        What the files hold is then checked against the manifest before any search (a folder whose
        checksums were recomputed after an edit passes the CRC32s): the backend is ``numpy`` (with
        ``<prefix>.codes.npy``) or ``hnsw`` (with ``<prefix>.usearch``), as ``search`` allows; ``ndim``
        and ``d_in`` are integers from 1 to :data:`MAX_DIMS`, as ``reduce`` relates them; every array
        has the dtype and shape the config implies (codes ``(n_slots, ndim)`` of the storage type, b1
        packed to ``ceil(ndim / 8)`` bytes; ``alive`` a bool ``(n_slots,)``; the int8 calibration and
        PCA arrays of ``ndim`` / ``d_in``; the float vectors ``(n_slots, d_in)``); the graph has the
        index's width and storage type; the calibration and PCA arrays are finite, and so are float
        codes read into memory (in blocks of ``BLOCK`` rows: ~0.3 s at 1M x 384 float32 on 2 cores,
        about what reading the file takes).  Memory-mapped codes (``mmap=True``) and the float
        vectors of ``rescore`` (always mapped) are not scanned: that would read the whole file at
        load.  Each failure is an :class:`ArtifactError` naming the file, and what was expected and
        found.
        """
        from ragkit._saves import read_json

        folder = Path(folder)
        mpath = folder / f"{prefix}.json"
        meta = read_json(mpath)
        try:
            cfg, files = dict(meta["config"]), dict(meta["files"])
            if meta.get("format", 0) > FORMAT:
                raise ArtifactError(f"{mpath}: written by a newer ragkit (index format "
                                    f"{meta['format']}, this one reads {FORMAT}); upgrade ragkit")
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{mpath}: not a ragkit vector index manifest") from None
        known = {f"{prefix}.{name}.npy" for name in _ARRAYS} | {f"{prefix}.usearch"}
        for name, info in files.items():
            if name not in known:  # (a path elsewhere, "../x" or absolute, would be read for its checksum)
                raise ArtifactError(f"{mpath}: lists the file {name!r}; a vector index holds only "
                                    f"{', '.join(sorted(known))}")
            if not isinstance(info, dict) or not all(isinstance(info.get(k), int) for k in ("bytes", "crc32")):
                raise ArtifactError(f"{mpath}: the entry of {name} is {info!r}; expected "
                                    "{'bytes': int, 'crc32': int}")
            p = folder / name
            if not p.is_file():
                raise ArtifactError(f"{p}: file not found (listed in {prefix}.json)")
            size = p.stat().st_size
            if size != info["bytes"]:
                raise ArtifactError(f"{p}: truncated or altered: {size} bytes on disk, {info['bytes']} expected")
            if verify and _crc(p) != info["crc32"]:
                raise ArtifactError(f"{p}: corrupt (CRC32 mismatch with {prefix}.json)")
        try:
            self = cls(**cfg)
        except (TypeError, ValueError, ParamError) as e:  # a key or value no VectorIndex takes: the file was edited
            raise ArtifactError(f"{mpath}: its config does not describe an index ({e})") from None
        self.d_in, self.ndim = _meta_int(meta, "d_in", mpath, 1, MAX_DIMS), _meta_int(meta, "ndim", mpath, 1, MAX_DIMS)
        self.saved_format = _meta_int(meta, "format", mpath, 1, FORMAT) if "format" in meta else 1
        n_slots = _meta_int(meta, "n_slots", mpath, 0, None)
        self.backend = self._check_manifest(mpath, meta, {n[len(prefix) + 1:] for n in files})

        def arr(name: str, mm: bool = mmap) -> np.ndarray:
            p = folder / f"{prefix}.{name}.npy"
            check_npy_size(p)  # (before np.load allocates what the header claims)
            try:
                return np.load(p, allow_pickle=False, mmap_mode="r" if mm else None)
            except (ValueError, OSError, EOFError) as e:
                raise ArtifactError(f"{p}: corrupt or truncated array ({e})") from None

        def expect(name: str, a: np.ndarray, dtype: Any, shape: tuple[int, ...], why: str) -> np.ndarray:
            """``a`` (the array of ``<prefix>.<name>.npy``) when of ``dtype`` (either byte order) and ``shape``."""
            want = np.dtype(dtype)
            if (a.dtype.kind, a.dtype.itemsize) != (want.kind, want.itemsize) or a.shape != shape:
                raise ArtifactError(f"{folder / f'{prefix}.{name}.npy'}: holds a {a.dtype} array of shape {a.shape}; "
                                    f"expected {want} of shape {shape} ({why} in {prefix}.json)")
            return a

        def finite(name: str, a: np.ndarray) -> None:
            row = _first_nonfinite_row(a)
            if row is not None:
                raise ArtifactError(f"{folder / f'{prefix}.{name}.npy'}: holds NaN or infinite values (first in row "
                                    f"{row} of {len(a)}); expected finite values (every score would be NaN)")

        slots = f"{n_slots} slots"
        self.alive = expect("alive", arr("alive", False), bool, (n_slots,), slots)
        self.codes = None
        if self.backend == "numpy":
            width = (self.ndim + 7) // 8 if self.dtype == "b1" else self.ndim
            store = {"f32": np.float32, "f16": np.float16, "i8": np.uint8, "b1": np.uint8}[self.dtype]
            why = f"dtype {self.dtype!r}, ndim {self.ndim}" + (f" (packed bits: {width} bytes)" if self.dtype == "b1"
                                                             else "") + f", {slots}"
            self.codes = expect("codes", arr("codes"), store, (n_slots, width), why)
            if self.dtype in ("f32", "f16") and not isinstance(self.codes, np.memmap):
                finite("codes", self.codes)
            if mmap:
                self._mapped[os.path.abspath(folder / f"{prefix}.codes.npy")] = _file_id(folder / f"{prefix}.codes.npy")
        if self.reduce_kind == "pca":
            self.pca_mean = expect("pca_mean", arr("pca_mean", False), np.float32, (self.d_in,), f"d_in {self.d_in}")
            self.pca_components = expect("pca_components", arr("pca_components", False), np.float32,
                                         (self.d_in, self.ndim), f"d_in {self.d_in}, ndim {self.ndim}")
            finite("pca_mean", self.pca_mean)
            finite("pca_components", self.pca_components)
        if self.dtype == "i8":
            for name in ("i8_min", "i8_step"):
                setattr(self, name, expect(name, arr(name, False), np.float32, (self.ndim,), f"ndim {self.ndim}"))
                finite(name, getattr(self, name))
            if not (self.i8_step > 0).all():
                raise ArtifactError(f"{folder / f'{prefix}.i8_step.npy'}: holds a step of "
                                    f"{float(self.i8_step.min()):g}; expected positive steps (the int8 calibration)")
            self.i8_scale = np.float32(meta["i8_scale"])  # (checked by _check_manifest)
            # (a save before it was recorded: the slots then, as add() read them, fitted on at least those)
            self.i8_fitted_n = int(meta.get("i8_fitted_n") or self.n_slots)
        self.explained_variance_ratio = meta.get("explained_variance_ratio")
        self.floats = None
        if self.rescore:
            self.floats = _random_access(expect("floats", arr("floats", True), np.float32, (n_slots, self.d_in),
                                                f"rescore: d_in {self.d_in}, {slots}"))
            self._mapped[os.path.abspath(folder / f"{prefix}.floats.npy")] = _file_id(folder / f"{prefix}.floats.npy")
        self.usearch = None
        if self.backend == "hnsw":
            p = folder / f"{prefix}.usearch"
            try:
                self.usearch = self._restore(str(p), view=mmap)
            except Exception as e:  # usearch raises RuntimeError/ValueError on a bad header
                raise ArtifactError(f"{p}: usearch could not read it ({e})") from None
            # every live slot, and the dead ones not yet dropped by a rebuild (earlier versions: none)
            if self.usearch is None or not self.n_alive <= self.usearch.size <= self.n_slots:
                raise ArtifactError(f"{p}: holds {getattr(self.usearch, 'size', None)} vectors, "
                                    f"{self.n_alive} to {self.n_slots} expected")
            width = 8 * ((self.ndim + 7) // 8) if self.dtype == "b1" else self.ndim
            kind = str(getattr(self.usearch, "dtype", "")).rsplit(".", 1)[-1].lower()
            if int(self.usearch.ndim) != width or kind != self.dtype:
                raise ArtifactError(f"{p}: a graph of {self.usearch.ndim} dimensions stored as {kind}; expected "
                                    f"{width} dimensions stored as {self.dtype} (dtype {self.dtype!r}, ndim "
                                    f"{self.ndim} in {prefix}.json)")
            from usearch.index import Index

            try:  # nodes usearch itself removed (earlier versions' remove): rebuilt before the next add
                self._graph_free = int((Index.metadata(str(p)) or {}).get("count_deleted") or 0) > 0
            except Exception:
                self._graph_free = True
            self._view, self._view_path = mmap, os.path.abspath(p)  # absolute: a later chdir changes nothing
            if mmap:
                self._mapped[os.path.abspath(p)] = _file_id(p)
        self.built = True
        return self

    def _check_manifest(self, mpath: Path, meta: dict[str, Any], present: set[str]) -> str:
        """The backend the manifest ``meta`` (at ``mpath``) names, after checking it against the config of
        this (new, unbuilt) index, its ``d_in`` / ``ndim`` (already set) and the files it lists (``present``:
        their names less the prefix, ``codes.npy``, ``usearch``, ...): what each needs is listed, nothing is
        read.  ArtifactError naming ``mpath`` otherwise."""
        backend = meta.get("backend")
        if backend not in ("numpy", "hnsw"):
            raise ArtifactError(f"{mpath}: backend is {backend!r}; expected 'numpy' (exact search) or 'hnsw' "
                                "(a usearch graph)")
        if self.search_mode != "auto" and backend != ("numpy" if self.search_mode == "exact" else "hnsw"):
            raise ArtifactError(f"{mpath}: backend {backend!r} with search {self.search_mode!r}; expected backend "
                                f"{'numpy' if self.search_mode == 'exact' else 'hnsw'!r}")

        def needs(name: str, why: str) -> None:
            if name not in present:
                raise ArtifactError(f"{mpath}: lists no {mpath.stem}.{name}, which {why} needs; it lists "
                                    f"{', '.join(sorted(f'{mpath.stem}.{n}' for n in present)) or 'no file'}")

        needs("alive.npy", "every index")
        if backend == "numpy":
            needs("codes.npy", "backend 'numpy'")
        else:
            needs("usearch", "backend 'hnsw'")
        other = "usearch" if backend == "numpy" else "codes.npy"
        if other in present:
            raise ArtifactError(f"{mpath}: lists {mpath.stem}.{other}, which backend {backend!r} does not keep; "
                                f"expected {mpath.stem}.{'codes.npy' if backend == 'numpy' else 'usearch'} alone")
        if self.reduce_kind == "none" and self.ndim != self.d_in:
            raise ArtifactError(f"{mpath}: ndim {self.ndim} and d_in {self.d_in}; expected equal (reduce 'none' "
                                "keeps every dimension)")
        if self.reduce_kind != "none" and (self.ndim != self.reduce_dims or self.reduce_dims > self.d_in):
            raise ArtifactError(f"{mpath}: ndim {self.ndim} and d_in {self.d_in} with reduce {self.reduce!r}; expected "
                                f"ndim {self.reduce_dims}, at most d_in")
        if self.reduce_kind == "pca":
            needs("pca_mean.npy", f"reduce {self.reduce!r}")
            needs("pca_components.npy", f"reduce {self.reduce!r}")
        if self.rescore:
            needs("floats.npy", "rescore")
        if self.dtype == "i8":
            needs("i8_min.npy", "dtype 'i8' (its calibration)")
            needs("i8_step.npy", "dtype 'i8' (its calibration)")
            scale, fitted = meta.get("i8_scale"), meta.get("i8_fitted_n")
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < np.inf:
                raise ArtifactError(f"{mpath}: i8_scale is {scale!r}; expected a positive number with dtype 'i8'")
            if fitted is not None and (isinstance(fitted, bool) or not isinstance(fitted, int) or fitted < 0):
                raise ArtifactError(f"{mpath}: i8_fitted_n is {fitted!r}; expected null or a count of vectors")
        return str(backend)


def _meta_int(meta: dict[str, Any], key: str, path: Path, lo: int, hi: int | None) -> int:
    """``meta[key]``, an int from ``lo`` to ``hi`` (None: no bound), or an ArtifactError naming ``path``."""
    v = meta.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        bound = f"an integer from {lo} to {hi:,}" if hi is not None else f"an integer of at least {lo}"
        raise ArtifactError(f"{path}: {key} is {v!r}; expected {bound}")
    return v


def _first_nonfinite_row(a: np.ndarray) -> int | None:
    """The first row of ``a`` (1-D: element) holding NaN or inf, or None; in blocks of ``BLOCK`` rows (one
    bool temporary of a block, ~6 MB at 384 dims)."""
    for lo in range(0, len(a), BLOCK):
        block = a[lo:lo + BLOCK]
        ok = np.isfinite(block)
        if not ok.all():
            bad = ~ok if ok.ndim == 1 else ~ok.all(axis=1)
            return lo + int(np.argmax(bad))
    return None


def _random_access(arr: np.ndarray) -> np.ndarray:
    """Tell the kernel a memory-mapped array is read at random (no read-ahead: only touched pages load)."""
    import mmap

    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        try:
            mm.madvise(mmap.MADV_RANDOM)
        except OSError:
            pass
    return arr


def resident_bytes(path: str | Path) -> int:
    """Resident (in RAM) bytes of this process's memory mappings of ``path`` (Linux ``/proc/self/smaps``)."""
    target = str(Path(path).resolve())
    total, inside = 0, False
    try:
        with open("/proc/self/smaps") as fh:
            for line in fh:
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    inside = line.rstrip().endswith(target)
                elif inside and line.startswith("Rss:"):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return -1
    return total
