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
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np

from ragkit._cpus import thread_count
from ragkit._locks import ReadWriteLock
from ragkit.errors import DataError, ParamError
from ragkit.retrievers import _index_files, _index_search, _quantize
from ragkit.retrievers._index_files import (
    FORMAT,
    _file_id,
    _frozen_array,
    _grow_npy,
    _npy_header,
    _random_access,
    _unlink_quiet,
    _unlink_when_unmapped,
    _whole_map,
)
from ragkit.retrievers._index_search import _sort_desc
from ragkit.retrievers._locality import REORDER_MIN, insertion_order
from ragkit.retrievers._quantize import BLOCK, STORED_DTYPES, nonfinite_rows, parse_reduce

if TYPE_CHECKING:
    from usearch.index import Index

__all__ = ["VectorIndex", "EXACT_MAX", "NonFiniteVectors"]

#: ``search="auto"`` uses exact search up to this many vectors.  Measured with ``bench/dense.py``
#: (384-d, 2 shared cores, blocked GEMM + ``torch.topk`` exact search): at 100,000 vectors exact f32
#: ran 1,231 q/s against 1,184 q/s for usearch HNSW f32 at recall 0.96 (ef 128, after a 71 s build)
#: and 1,602 q/s for the int8 graph with float rescoring (41 s build); at 1,000,000 exact ran
#: 112-119 q/s against 393-544 q/s for the graphs at recall 0.96.  Up to ~100k vectors exact is
#: exact, needs no build, and is within 1.3x of the fastest graph.
EXACT_MAX = 100_000
#: bytes per chunk when the float vectors file is copied (``add`` after ``load``)
COPY_BYTES = 64 << 20
#: a b1 graph's Hamming set is ``min(oversample, B1_WIDEN) * oversample * k`` (at least ``expansion_search``)
#: before the float query re-ranks it against the bits (wider: more recall, ~0.4 ms more a query at oversample 4)
B1_WIDEN = 4
#: an HNSW graph is rebuilt from its live codes (:meth:`VectorIndex.rebuild_graph`) when the dead nodes it keeps
#: after ``remove`` pass this share of its nodes (searches drop them from a shortlist widened by that share)
GRAPH_DEAD_FRACTION = 0.25
#: vectors handed to usearch's ``add`` a call while a graph is built (bounds the reordered copy of their codes)
GRAPH_ADD_CHUNK = 131_072


def _dead_slots(dead: np.ndarray | None, n: int) -> np.ndarray | None:
    """The ``dead`` slots given to a build of ``n`` vectors, sorted and distinct (int64), or None for none; a slot
    outside ``[0, n)`` is a :class:`DataError`."""
    if dead is None:
        return None
    rows = np.unique(np.asarray(dead, dtype=np.int64).reshape(-1))
    if len(rows) and (rows[0] < 0 or rows[-1] >= n):
        raise DataError(f"VectorIndex.build: dead slots must be slots of the {n} vectors built, in [0, {n}), got "
                        f"{rows.tolist()[:10]}")
    return rows if len(rows) else None


def _alive_of(n: int, dead: np.ndarray | None) -> np.ndarray:
    """``(n,)`` bool: the slots of a build of ``n`` vectors that are live, all but the ``dead`` ones."""
    alive = np.ones(n, dtype=bool)
    if dead is not None:
        alive[dead] = False
    return alive


class NonFiniteVectors(DataError):
    """A :class:`DataError` for vectors holding NaN or inf, which would score nothing or spoil a fit silently:
    ``row``, the first such vector (its position in the array given); ``count``, how many of the ``n`` given
    (None where the others were not read: a chunk of :meth:`VectorIndex.build_chunks`), so that a caller can name
    the document without scanning the vectors again."""

    def __init__(self, message: str, *, row: int = -1, count: int | None = None, n: int = 0) -> None:
        super().__init__(message)
        self.row, self.count, self.n = row, count, n


def _refuse_nonfinite(x: np.ndarray, say: Callable[[int, int], str], offset: int = 0,
                      total: int | None = None) -> None:
    """:class:`NonFiniteVectors` when a row of ``x`` holds NaN or inf (:func:`~._quantize.nonfinite_rows`),
    its message ``say(first row, how many)``; ``offset``: the position of ``x``'s first row among the vectors
    given, ``total`` their number (None: ``x`` is all of them, every row counted)."""
    found = nonfinite_rows(x, count=True)
    if found is not None:
        row, count = found
        raise NonFiniteVectors(say(offset + row, count), row=offset + row, count=count if total is None else None,
                               n=len(x) if total is None else total)


def grown_rows(rows: np.ndarray, new: np.ndarray, buf: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` with ``new`` appended, as ``(view, buffer)``: a view of ``buf`` (the buffer an earlier call
    returned; None: none yet) with room to spare, where ``rows`` is its head and it has room; else of a new buffer
    a quarter larger than needed, ``rows`` copied in.  A stream of small appends so copies the rows ``O(log n)``
    times, not once per call (at 100,000 f32 vectors a one-vector append copied 154 MB).  The new rows are
    written past ``rows``' end: views handed out earlier (a published search view) keep their rows unchanged."""
    n, m = len(rows), len(new)
    ours = (buf is not None and rows.base is buf
            and rows.__array_interface__["data"][0] == buf.__array_interface__["data"][0])
    if buf is None or not ours or len(buf) < n + m or buf.dtype != new.dtype or buf.shape[1:] != new.shape[1:]:
        buf = np.empty((n + m + max((n + m) // 4, 16), *new.shape[1:]), dtype=new.dtype)
        buf[:n] = rows
    buf[n:n + m] = new
    return buf[:n + m], buf


class RowBuffer:
    """Where an operator's appended rows (document vectors) grow: :func:`grown_rows` into one buffer, used by the
    rows that end where its last append ended (``end``) only, so an operator copied shallowly (sharing this
    object) and edited apart gets a buffer of its own rather than writing over the other's rows.  Neither
    pickled nor deep-copied: a copy starts empty (its rows are its own arrays then)."""

    __slots__ = ("data", "end")

    def __init__(self) -> None:
        self.data: np.ndarray | None = None
        self.end = 0

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (RowBuffer, ())

    def append(self, rows: np.ndarray, new: np.ndarray) -> np.ndarray:
        """``rows`` with ``new`` appended (:func:`grown_rows`): a view of this buffer, ``rows`` left as they are."""
        grown, self.data = grown_rows(rows, new, self.data if self.end == len(rows) else None)
        self.end = len(grown)
        return grown

    def keep_only(self, rows: np.ndarray) -> None:
        """Let the buffer go unless ``rows`` (the operator's vectors now) are its view: after a remove, a refit or a
        load, the rows live in an array of their own, and the buffer (1.25x the vectors) held dead memory."""
        if self.data is not None and rows.base is not self.data:
            self.data, self.end = None, 0


def check_finite_vectors(x: np.ndarray, who: str, what: str) -> None:
    """:class:`NonFiniteVectors` (a DataError) naming ``who`` when a row of ``x`` ``(n, d)`` (``what`` vectors:
    query, document) holds NaN or inf: it would score nothing, or spoil a fit, silently."""
    _refuse_nonfinite(x, lambda row, count: f"{who}: {count} of the {len(x)} {what} vectors contain NaN or infinite "
                                            f"values (first at position {row}); check the encoder's output")


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
        return thread_count(self.threads)

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
    # (methods written as functions of ``self`` in :mod:`ragkit.retrievers._quantize`)
    _normalise = _quantize._normalise
    _reduce_rows = _quantize._reduce_rows
    _reduce = _quantize._reduce
    _fit_transforms = _quantize._fit_transforms
    _i8_graph_scale = _quantize._i8_graph_scale
    _calibrate_i8 = _quantize._calibrate_i8
    _set_i8_range = _quantize._set_i8_range
    _check_f16_range = _quantize._check_f16_range
    _codes = _quantize._codes
    i8_clipped = _quantize.i8_clipped
    _stored_codes_of = _quantize._stored_codes_of

    # ------------------------------------------------------------------ build / add / remove
    def build(self, vectors: np.ndarray, *, copy: bool = True, dead: np.ndarray | None = None) -> "VectorIndex":
        """Index ``vectors`` (n, d) float as slots ``0..n-1``; fits PCA / int8 calibration on them.

        ``dead`` (slots, int): slots built removed, as :meth:`remove` then :meth:`rebuild_graph` would leave them,
        in one graph build: the transforms are fitted on every vector (theirs too), and an HNSW graph holds only
        the live slots, inserted as :meth:`rebuild_graph` inserts them (the same graph, built once).  MUVERA builds
        its documents without tokens (blank ones) so.

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
        dead_rows = _dead_slots(dead, len(given))
        _refuse_nonfinite(given, lambda row, count: f"VectorIndex.build: the vectors contain NaN or infinite values "
                                                    f"({count} of the {len(given)}, the first at row {row})")
        return self._build_finite(given, copy, dead_rows, vectors)

    def _build_finite(self, given: np.ndarray, copy: bool, dead_rows: np.ndarray | None,
                      vectors: object) -> "VectorIndex":
        """:meth:`build` of ``given`` (2-D float; ``vectors``, what the caller handed over), its rows already found
        finite and ``dead_rows`` checked (:func:`_dead_slots`): no row is scanned for NaN or inf again."""
        n, dim = given.shape
        as_is = given.dtype == np.float32 and (self.metric == "ip" or (not copy and given.flags.writeable))
        if n and dim and self._backend_for(n) == "numpy" and self.reduce_kind == "none" and not self.rescore \
                and (copy if self.dtype == "f32" else not as_is):
            # the float32 matrix would be a new array only to be coded (f16 / i8 / b1; not where it is
            # ``vectors`` as they are) or the codes themselves (f32, a copy): normalise and code a block at a
            # time (b1 codes of 200,000 x 384: build +63 MB, not +309 MB; the same codes), into a buffer with
            # :meth:`_grown_codes`'s headroom (the first add copies nothing)
            return self._build_chunks(n, dim, lambda: ((a, min(n, a + BLOCK), np.array(given[a:a + BLOCK], np.float32))
                                                       for a in range(0, n, BLOCK)), dead_rows, finite=True)
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
        self.alive = _alive_of(n, dead_rows)
        self.codes = None
        self.usearch = None
        self._graph_free = False
        if self.backend == "numpy":
            codes = self._stored_codes_of(x)
            # f32 / no reduction: ``codes`` can be the caller's own array; never keep it (a caller
            # reusing its buffer would change the index).  may_share_memory: a bounds check, no search
            self.codes = codes.copy() if copy and np.may_share_memory(codes, vectors) else codes
        elif dead_rows is None:
            self.usearch = self._new_usearch()
            self._add_to_graph(np.arange(n, dtype=np.int64), x)
        else:  # the graph of the live slots, as rebuild_graph builds it after a remove: their codes (usearch's, as
            # it would hand them back) inserted in the order of those codes
            live = np.flatnonzero(self.alive)
            self.usearch = self._new_usearch()
            self._view = False
            self._insert_codes(live, self._codes(x[live], for_usearch=True, inplace=True))
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

    def build_chunks(self, n: int, dim: int, chunks: Callable[[], Iterable[tuple[int, int, np.ndarray]]], *,
                     dead: np.ndarray | None = None) -> "VectorIndex":
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
        matrix and :meth:`build` it, as before.  ``dead``: slots built removed, as :meth:`build` takes them.
        """
        n, dim = int(n), int(dim)
        return self._build_chunks(n, dim, chunks, _dead_slots(dead, n), finite=False)

    def _build_chunks(self, n: int, dim: int, chunks: Callable[[], Iterable[tuple[int, int, np.ndarray]]],
                      dead_rows: np.ndarray | None, *, finite: bool) -> "VectorIndex":
        """:meth:`build_chunks`, ``dead_rows`` checked; ``finite``: the rows were already found finite (:meth:`build`
        scanned them), so no chunk is scanned for NaN or inf again.  Otherwise each row is scanned once: in the
        one pass over the chunks, or in ``i8``'s first (its second reads the same chunks)."""
        backend = self._backend_for(n)

        def each(scan: bool) -> Iterator[np.ndarray]:
            at = 0
            for lo, hi, rows in chunks():
                rows = np.asarray(rows)
                if lo != at or hi < lo or hi > n or rows.shape != (hi - lo, dim) \
                        or not np.issubdtype(rows.dtype, np.floating):
                    raise DataError(f"VectorIndex.build_chunks: chunk {lo}:{hi} of {n} vectors holds {rows.dtype} "
                                    f"{rows.shape}; expected float rows {at}:... of {dim} dimensions, in order")
                if scan:
                    _refuse_nonfinite(rows, lambda row, count: "VectorIndex.build: the vectors contain NaN or "
                                                               f"infinite values (the first at row {row} of {n})",
                                      lo, n)
                at = hi
                yield self._normalise(np.asarray(rows, np.float32), inplace=True)
            if at != n:
                raise DataError(f"VectorIndex.build_chunks: the chunks hold {at} vectors, expected {n}")

        if n == 0 or backend != "numpy" or self.reduce_kind != "none" or self.rescore:
            full = np.empty((n, dim), np.float32)
            at = 0
            for rows in each(not finite):
                full[at:at + len(rows)] = rows
                at += len(rows)
            return self._build_finite(full, False, dead_rows, full)
        self.d_in = self.ndim = dim
        self.backend = "numpy"
        if self.dtype == "i8":  # the calibration first: the range of every vector
            lo_all = np.full(dim, np.inf, np.float32)
            hi_all = np.full(dim, -np.inf, np.float32)
            for rows in each(not finite):
                if len(rows):
                    np.minimum(lo_all, rows.min(axis=0), out=lo_all)
                    np.maximum(hi_all, rows.max(axis=0), out=hi_all)
            self.i8_fitted_n = n
            self._set_i8_range(lo_all, hi_all)
        width = (dim + 7) // 8 if self.dtype == "b1" else dim
        store = STORED_DTYPES[self.dtype]
        # with :meth:`_grown_codes`'s headroom: the first ``add`` appends without copying the codes (the
        # spare rows are never written until then, so their pages take no memory)
        self._codes_buf = np.empty((n + max(n // 4, 16), width), store)
        codes = self._codes_buf[:n]
        at = 0
        for rows in each(not finite and self.dtype != "i8"):
            self._check_f16_range(rows, "build")
            codes[at:at + len(rows)] = self._stored_codes_of(rows)
            at += len(rows)
        self.codes = codes
        self.alive = _alive_of(n, dead_rows)
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

    def _add_to_graph(self, slots: np.ndarray, x: np.ndarray) -> None:
        """Add reduced vectors ``x`` ``(m, ndim)`` to the usearch graph as ``slots``, in
        :func:`~ragkit.retrievers._locality.insertion_order` of ``x`` when ``reorder``, coded a chunk
        (:data:`GRAPH_ADD_CHUNK` rows) at a time (:meth:`_insert_codes`): the chunks bound the reordered copy."""
        order = insertion_order(x) if self.reorder else np.arange(len(x), dtype=np.int64)

        def coded(rows: np.ndarray) -> np.ndarray:
            # (x[rows]: a copy (fancy index), which int8 codes scale in place)
            return self._codes(x[rows], for_usearch=True, inplace=True)

        self._insert_codes(slots, coded, order)

    def _scratch(self) -> Path:
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            return self.workdir
        if self._tmp is None:  # named after this process: a later one removes it if the cleanup below could not
            from ragkit._files import private_tempdir

            self._tmp = str(private_tempdir("ragkit-index-"))  # (Windows: its floats file still mapped)
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
        # (before normalising: an inf would warn (0/0, inf/inf) first)
        _refuse_nonfinite(raw, lambda row, count: f"VectorIndex.add: the vectors contain NaN or infinite values "
                                                  f"({count} of the {len(raw)}, the first at row {row})")
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
        grown, self._codes_buf = grown_rows(np.asarray(self.codes), new, getattr(self, "_codes_buf", None))
        return grown

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
        self._insert_codes(keys, codes)

    def _insert_codes(self, keys: np.ndarray, codes: np.ndarray | Callable[[np.ndarray], np.ndarray],
                      order: np.ndarray | None = None) -> None:
        """Add ``codes`` (the graph's own codes, as usearch hands them back) to the (new) HNSW graph under ``keys``,
        in ``order`` (default: :func:`~ragkit.retrievers._locality.insertion_order` of those codes when ``reorder``,
        :func:`_code_points`), :data:`GRAPH_ADD_CHUNK` rows a call.  ``codes`` may be a function of the rows of a
        chunk returning their codes (:meth:`_add_to_graph` codes its float vectors a chunk at a time); then
        ``order`` is needed."""
        if not len(keys):
            return
        if order is None:
            if not isinstance(codes, np.ndarray):
                raise TypeError("VectorIndex._insert_codes: codes given as a function need an order")
            order = insertion_order(self._code_points(codes)) if self.reorder and len(keys) >= REORDER_MIN \
                else np.arange(len(keys), dtype=np.int64)  # (insertion_order keeps fewer rows in order)
        for a in range(0, len(order), GRAPH_ADD_CHUNK):
            rows = order[a:a + GRAPH_ADD_CHUNK]
            part = codes[rows] if isinstance(codes, np.ndarray) else codes(rows)
            self._graph().add(keys[rows].astype(np.uint64), part, threads=self._threads())
            del part

    def _code_points(self, codes: np.ndarray) -> np.ndarray:
        """``(n, ndim)``: the points of the graph's ``codes`` that :func:`insertion_order` clusters: f32 / f16 / i8
        codes as they are (its k-means sample and its assignment convert a chunk at a time to float32, exactly:
        the same order; a float32 copy of them all was 4x an i8 graph's codes), a b1 code's bits as ±1 float32,
        unpacked ``BLOCK`` rows at a time into the one matrix, in place (``unpackbits(...).astype(float32) * 2 -
        1`` made three more temporaries of its size and a uint8 one: a rebuild peaked at ~44x the codes)."""
        if self.dtype != "b1":
            return codes
        out = np.empty((len(codes), self.ndim), np.float32)
        for a in range(0, len(codes), BLOCK):
            block = out[a:a + BLOCK]
            block[...] = np.unpackbits(codes[a:a + BLOCK], axis=1)[:, : self.ndim]
            block *= 2
            block -= 1
        return out

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

    #: the settings :meth:`apply_settings` changes on a built index: how it searches and grows, not what it stores
    SETTINGS = ("oversample", "expansion_add", "expansion_search", "exact_max", "threads", "reorder")

    def apply_settings(self, **settings: Any) -> None:
        """Make ``settings`` (of :data:`SETTINGS`: ``oversample``, ``expansion_add``, ``expansion_search``,
        ``exact_max``, ``threads``, ``reorder``) the index's own, saved with it; the beam widths the graph's too.
        Searches at the index's own width share the graph again, where a per-call width holds it alone (a
        ``Dense`` whose ``params`` were updated after the fit applies them once, at its next search, add or
        save).  Held alone while set (``_ef_lock``): no graph search runs meanwhile."""
        unknown = sorted(set(settings) - set(self.SETTINGS))
        if unknown:
            raise ParamError(f"VectorIndex.apply_settings: {', '.join(unknown)} cannot change on a built index "
                             f"(expected some of {', '.join(self.SETTINGS)}): build a new index")
        with self._ef_lock.writing():
            for key, value in settings.items():
                setattr(self, key, bool(value) if key == "reorder" else int(value))
            graph: Index | None = getattr(self, "usearch", None)  # (none before a build)
            if graph is not None:  # (usearch defines these setters apart from their getters: read-only to mypy)
                if "expansion_search" in settings:
                    graph.expansion_search = self.expansion_search  # type: ignore[misc]
                if "expansion_add" in settings:
                    graph.expansion_add = self.expansion_add  # type: ignore[misc]

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
    # (methods written as functions of ``self`` in :mod:`ragkit.retrievers._index_search`)
    _block_scores = _index_search._block_scores
    _exact = _index_search._exact
    _exact_short = _index_search._exact_short
    _get = _index_search._get
    _graph_search = _index_search._graph_search
    _hnsw = _index_search._hnsw
    _filtered_hnsw = _index_search._filtered_hnsw
    _passing_hnsw = _index_search._passing_hnsw
    _second_stage = _index_search._second_stage
    _second_stage_chunk = _index_search._second_stage_chunk

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
        slots : ndarray int64, shape (n_q, min(k, n_slots))
            ``-1`` where fewer slots pass (a mask, removed slots).  Never wider than the index: a ``k`` past
            :attr:`n_slots` asks for every slot, and its columns would all be padding (``k`` of 10**7 over 10
            vectors allocated ~700 MB).
        scores : ndarray float32, shape (n_q, min(k, n_slots))
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
        k = min(int(k), self.n_slots)  # (every slot: the same results, no column of padding alone)
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
        exactly = False  # (every query answered by _exact: a b1 graph's scores are the float query's already)
        if self.backend == "numpy":
            rows = None if mask is None else np.flatnonzero(mask & self.alive)
            s, i = self._exact(qr, first, rows)
        elif mask is None:  # a request for every live slot is answered exactly (no graph walk can miss one)
            if first >= self.n_alive:
                s, i = self._exact(qr, first, None)
                exactly = True
            elif self._graph_dead():  # a graph holding dead nodes: those are dropped from a wider shortlist
                s, i, exactly = self._filtered_hnsw(qr, first, None, ef)
            else:  # the queries the graph gave fewer than ``first`` (a beam can miss nodes, k near n): exactly
                s, i = self._hnsw(qr, first, ef)
                s, i = self._exact_short(qr, first, s, i, np.flatnonzero((i >= 0).sum(axis=1) < first), None)
        else:
            s, i, exactly = self._filtered_hnsw(qr, first, mask, ef)
        if b1_graph and i.shape[1]:  # the float query against the bits (which _exact scored already)
            if not exactly:
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
    # (methods written as functions of ``self`` in :mod:`ragkit.retrievers._index_files`)
    _intact = _index_files._intact
    save = _index_files.save
    load = classmethod(_index_files.load)
    _check_manifest = _index_files._check_manifest


