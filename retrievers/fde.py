"""Fixed Dimensional Encodings (MUVERA) and exact Chamfer / MaxSim, vectorised in numpy.

Pure functions over ragged token sets given as one flat ``(n_tokens, d)`` array plus
``(n_sets + 1,)`` int64 offsets (see :class:`ragkit.encoders.tokens.TokenVectors`).  No
Python loop runs over tokens or sets: bucket sums are one sparse indicator matrix times the
projected tokens of all repetitions, counts a ``bincount``, empty-bucket filling a
``minimum.reduceat`` over a ``(tokens, buckets)`` Hamming table per repetition.

Reference: Dhulipala, Hadian, Jayaram, Lee, Mirrokni, "MUVERA: Multi-Vector Retrieval via
Fixed Dimensional Encodings", NeurIPS 2024, arXiv 2405.19504.  Steps as in
``design/ALGORITHMS.md`` section 1:

* SimHash partition per repetition ``r``: ``G_r ~ N(0, 1)`` of shape ``(d, k_sim)``; bucket id
  = the plain binary number whose digits are the sign bits (first hyperplane = most
  significant bit); ``B = 2**k_sim`` buckets.
* Inner projection ``psi``: identity when ``d_proj == d`` or ``projection="identity"``;
  ``"ams"`` (default, the paper's): dense ``(d, d_proj)`` uniform ±1 entries scaled by
  ``1/sqrt(d_proj)``; ``"countsketch"`` (the reference C++ code's): each input coordinate
  goes to one random output coordinate with a random sign, unscaled.
* Query block = per-bucket **sum** of projected tokens (empty buckets stay 0); document block
  = per-bucket **mean**, and (documents only) an empty bucket gets the projected token whose
  bit pattern is nearest in Hamming distance to the bucket's (ties: lowest token index).
* ``d_FDE = r_reps * 2**k_sim * d_proj``; optional final Count-Sketch to ``d_final``.
* Optional mean channel (``mean_weight > 0``; a ragkit extension, not in the paper): ``d`` more
  coordinates after the (sketched) blocks, the unit-normalised mean of a document's tokens and
  ``mean_weight * r_reps *`` the sum of a query's tokens.  The FDE inner product then adds
  ``mean_weight * r_reps * sum_q <q, mean direction of P>``, the single-vector similarity that
  mean-pooling sentence encoders score with.  It is a second, coarse view of the same tokens that
  the SimHash blocks miss: on SciFact MiniLM tokens (200 train queries) the paper's 5x16x20 FDE
  holds 0.912 of the exact-Chamfer top 10 among 120 candidates, 0.953 with the channel at weight 1
  (``bench/muvera.py``).
* Randomness: repetition ``r`` draws ``G_r`` then ``S_r`` from ``np.random.default_rng(seed + r)``;
  the final projection from ``np.random.default_rng([seed, 2**31 - 1])``.  Queries and
  documents use the same streams, so encoding is reproducible from ``(params, seed)`` alone.
  (As the spec draws them, seeds ``s`` and ``s + 1`` share ``r_reps - 1`` repetitions, shifted by
  one: to measure the variance over draws, use seeds at least ``r_reps`` apart.)
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np
import scipy.sparse as sp

from ragkit._topk import group_positions
from ragkit.errors import DataError, ParamError
from ragkit.params import FieldRefusal

__all__ = [
    "FDEConfig", "fde_dim", "fde_documents", "fde_document_chunks", "fde_queries", "chamfer_scores", "chamfer_pairs",
    "ball_carve", "draw_matrices", "MAX_K_SIM", "MAX_MEAN_WEIGHT", "MAX_FDE_DIM", "check_fde_size",
]

_FINAL_STREAM = 2**31 - 1

#: The most SimHash hyperplanes per repetition: ``2**12`` buckets (document encoding holds a
#: ``(tokens, 2**k_sim)`` Hamming table per chunk; :class:`ragkit.retrievers.Muvera` caps ``k_sim`` alike).
MAX_K_SIM = 12

#: The largest FDE (before a final projection) muvera builds: 4 MiB of float32 per document.  The
#: paper's largest are ~20k dimensions; beyond this a typo (``r_reps: 20000``) would exhaust memory.
MAX_FDE_DIM = 2**20


def check_fde_size(dims: int, formula: str, field: str | None = None) -> None:
    """ValueError when an FDE of ``dims`` dimensions (``formula`` says how it is counted) exceeds
    :data:`MAX_FDE_DIM`; with ``field``, a :class:`~ragkit.params.FieldRefusal` of that field."""
    if dims > MAX_FDE_DIM:
        text = (f"the FDE would have {formula} = {dims:,} dimensions, more than the {MAX_FDE_DIM:,} muvera builds "
                f"({dims * 4 / 2**20:,.0f} MiB per document); lower r_reps, k_sim or d_proj")
        raise ValueError(text) if field is None else FieldRefusal(field, text)


#: The largest mean-channel weight.  The query channel is ``mean_weight * r_reps *`` a token sum, so the
#: weight scales the channel against the SimHash blocks: at 1e4 the blocks are 1e-4 of the score (still above
#: float32 rounding, 6e-8), and every score stays finite in float32 (``1e4 * 2**20`` repetitions at most times
#: a token count), where 1e37 overflowed to infinity at search.
MAX_MEAN_WEIGHT = 1e4


@dataclass(frozen=True)
class FDEConfig:
    """MUVERA FDE parameters (see module docstring).

    Dhulipala, Hadian, Jayaram, Lee, Mirrokni, "MUVERA: Multi-Vector Retrieval via Fixed Dimensional
    Encodings", NeurIPS 2024, arXiv 2405.19504 (``k_sim``, ``d_proj``, ``r_reps``, ``d_final`` are its
    ``k_sim``, ``d_proj``, ``R_reps``, ``d_final``).

    Attributes
    ----------
    k_sim : int
        SimHash hyperplanes per repetition (``2**k_sim`` buckets), 0 to :data:`MAX_K_SIM`.
    d_proj : int
        Inner projection size (``d_proj == d`` means identity).
    r_reps : int
        Independent repetitions.
    d_final : int or None
        Optional final Count-Sketch size.
    projection : {"ams", "countsketch", "identity"}
        Inner projection kind.
    fill_empty : bool
        Fill empty document buckets with the Hamming-nearest token (never for queries).
    mean_weight : float
        Weight of the mean channel (0: none, the paper's FDE), at most :data:`MAX_MEAN_WEIGHT`; see the
        module docstring.
    seed : int
        Base seed; repetition ``r`` uses ``default_rng(seed + r)`` (independent draws need seeds
        at least ``r_reps`` apart).
    """

    k_sim: int = 5
    d_proj: int = 16
    r_reps: int = 20
    d_final: int | None = None
    projection: Literal["ams", "countsketch", "identity"] = "ams"
    fill_empty: bool = True
    mean_weight: float = 0.0
    seed: int = 42

    def __post_init__(self) -> None:
        for name in ("k_sim", "d_proj", "r_reps", "d_final", "seed"):
            value = getattr(self, name)
            if (value is None and name == "d_final") or (isinstance(value, (int, np.integer))
                                                          and not isinstance(value, (bool, np.bool_))):
                continue
            raise ParamError(f"FDEConfig.{name} must be an integer{' or None' if name == 'd_final' else ''}, got "
                             f"{value!r} ({type(value).__name__})")
        for name in ("k_sim", "d_proj", "r_reps", "d_final", "seed"):  # numpy integers as Python ints: seed + r
            value = getattr(self, name)  # in np.uint32 wrapped (np.int32 overflowed), and the draw cache keys
            if value is not None:  # np.uint32(s) == s, so one numpy seed's draws were shared with the int seed
                object.__setattr__(self, name, int(value))
        if not 0 <= self.seed <= 2**32 - 1:  # (ragkit.params.Seed's bound; params.py exports no constant for it)
            raise ParamError(f"FDEConfig.seed must be in 0..{2**32 - 1} (ragkit's seed range, as every seed "
                             f"parameter: ragkit.params.Seed), got {self.seed}")
        if not 0 <= self.k_sim <= MAX_K_SIM:
            raise ParamError(f"FDEConfig.k_sim must be in 0..{MAX_K_SIM} (2**k_sim buckets), got {self.k_sim}")
        if self.d_proj < 1 or self.r_reps < 1:
            raise ParamError(
                f"FDEConfig: d_proj and r_reps must be >= 1, got d_proj={self.d_proj}, r_reps={self.r_reps}")
        if self.d_final is not None and not 1 <= self.d_final <= MAX_FDE_DIM:  # (10**10: 37 GiB at the encoding)
            raise ParamError(f"FDEConfig.d_final must be in 1..{MAX_FDE_DIM:,} or None (a final projection is for "
                             f"shrinking the FDE), got {self.d_final:,}")
        if not isinstance(self.fill_empty, (bool, np.bool_)):  # ("no" was true)
            raise ParamError(f"FDEConfig.fill_empty must be a bool, got {self.fill_empty!r} "
                             f"({type(self.fill_empty).__name__})")
        object.__setattr__(self, "fill_empty", bool(self.fill_empty))
        mw = self.mean_weight
        if isinstance(mw, (bool, np.bool_)) or not isinstance(mw, (int, float, np.integer, np.floating)):
            raise ParamError(f"FDEConfig.mean_weight must be a real number, got {mw!r} ({type(mw).__name__})")
        if not 0 <= self.mean_weight <= MAX_MEAN_WEIGHT:  # (NaN fails it too)
            raise ParamError(f"FDEConfig.mean_weight must be in [0, {MAX_MEAN_WEIGHT:g}] (0: no mean channel; larger "
                             f"weights leave the SimHash blocks below float32 rounding, then overflow), got "
                             f"{self.mean_weight}")
        if self.projection not in ("ams", "countsketch", "identity"):
            raise ParamError(
                f"FDEConfig.projection must be 'ams', 'countsketch' or 'identity', got {self.projection!r}")
        object.__setattr__(self, "mean_weight", float(mw))

    @property
    def buckets(self) -> int:
        return 2**self.k_sim

    def identity(self, d: int) -> bool:
        """Whether the inner projection is the identity: ``projection="identity"``, or ``d_proj == d``
        (the paper: "if d_proj = d, psi is the identity")."""
        return self.projection == "identity" or self.d_proj == d

    def proj_dim(self, d: int) -> int:
        return d if self.identity(d) else self.d_proj

    def dim(self, d: int) -> int:
        return fde_dim(self, d)

    def check_size(self, d: int) -> None:
        """ParamError when the FDE blocks of ``d``-d tokens (``r_reps * 2**k_sim * d_proj``, the token dimension
        for the identity) exceed :data:`MAX_FDE_DIM`, or ``d_final`` does not shrink them: the checks of
        :class:`ragkit.retrievers.Muvera`, at the encoding (where ``d`` is known)."""
        width = self.r_reps * self.buckets * self.proj_dim(d)
        formula = (f"r_reps * 2**k_sim * the {d}-d tokens = {self.r_reps} * 2**{self.k_sim} * {d} (projection: "
                   f"identity)" if self.identity(d) else
                   f"r_reps * 2**k_sim * d_proj = {self.r_reps} * 2**{self.k_sim} * {self.d_proj}")
        try:
            check_fde_size(width, formula)
        except ValueError as e:
            raise ParamError(f"FDEConfig: {e}") from None
        if self.d_final is not None and self.d_final >= width:
            raise ParamError(f"FDEConfig.d_final ({self.d_final:,}) must be smaller than {formula} = {width:,}: a "
                             "final projection is for shrinking the FDE")


def fde_dim(cfg: FDEConfig, d: int) -> int:
    """``d_final`` if set, else ``r_reps * 2**k_sim * d_proj`` (``d_proj = d`` for identity); plus
    ``d`` with the mean channel (``mean_weight > 0``)."""
    blocks = cfg.d_final if cfg.d_final is not None else cfg.r_reps * cfg.buckets * cfg.proj_dim(d)
    return blocks + (d if cfg.mean_weight > 0 else 0)


def draw_matrices(cfg: FDEConfig, d: int) -> tuple[np.ndarray, np.ndarray | None]:
    """SimHash and projection matrices of all repetitions, concatenated column-wise.

    Returns ``G`` ``(d, r_reps * k_sim)`` float32 and ``S`` ``(d, r_reps * d_proj)`` float32
    (``None`` for the identity projection), read-only: the draws of the last 8 ``(seed, k_sim, r_reps, d_proj,
    projection, d)`` (the fields they read; an identity projection keyed as ``"identity"`` of ``d``) are kept
    and shared by every caller (copy them to modify), so that a search encodes its queries without drawing
    again (5.5 ms, 40-50% of a one-query FDE at the paper's parameters), and configs that differ only in
    ``d_final``, ``fill_empty`` or ``mean_weight`` share one draw.
    """
    d = int(d)
    projection = "identity" if cfg.identity(d) else cfg.projection
    return _draw_matrices(int(cfg.seed), cfg.k_sim, cfg.r_reps, cfg.proj_dim(d), projection, d)


@functools.lru_cache(maxsize=8)
def _draw_matrices(seed: int, k_sim: int, r_reps: int, dp: int, projection: str,
                   d: int) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`draw_matrices`, drawn once per ``(seed, k_sim, r_reps, d_proj, projection, d)`` (``dp``: the
    projection's width, ``d`` for ``"identity"``)."""
    gs, ss = [], []
    for r in range(r_reps):  # loop over repetitions (20), not tokens
        rng = np.random.default_rng(seed + r)
        gs.append(rng.standard_normal((d, k_sim)))
        if projection == "identity":
            continue
        if projection == "ams":
            ss.append((rng.integers(0, 2, size=(d, dp)) * 2 - 1) / np.sqrt(dp))
        elif projection == "countsketch":
            sk = np.zeros((d, dp))
            sk[np.arange(d), rng.integers(0, dp, size=d)] = rng.integers(0, 2, size=d) * 2 - 1
            ss.append(sk)
    g = np.concatenate(gs, axis=1).astype(np.float32) if k_sim else np.zeros((d, 0), np.float32)
    s = np.concatenate(ss, axis=1).astype(np.float32) if ss else None
    g.flags.writeable = False
    if s is not None:
        s.flags.writeable = False
    return g, s


#: Bytes of temporaries one encoding chunk may hold (projections, Hamming tables, unsketched rows); with
#: the chunk's FDE rows and BLAS outputs a chunk peaks near 1.5x this (3,000 documents of 40-80 128-d
#: tokens, the paper's FDE: 50 MB at 32 MiB, 198 MB at 128 MiB, same encoding time within noise, same FDEs).
#: It bounds a Muvera fit's memory beyond the index (``VectorIndex.build_chunks``).
CHUNK_BYTES = 32 * 2**20


@functools.lru_cache(maxsize=8)
def _final_sketch(seed: int, d_final: int, d_in: int) -> sp.csr_matrix:
    """The final Count-Sketch ``(d_in, d_final)`` of a config's ``seed`` and ``d_final``, drawn once per
    ``(seed, d_final, d_in)`` (the values it reads, as :func:`draw_matrices`), its arrays read-only."""
    rng = np.random.default_rng([seed, _FINAL_STREAM])
    h = rng.integers(0, d_final, size=d_in)
    sign = (rng.integers(0, 2, size=d_in) * 2 - 1).astype(np.float32)
    m = sp.csr_matrix((sign, (np.arange(d_in), h)), shape=(d_in, d_final))
    for a in (m.data, m.indices, m.indptr):
        a.flags.writeable = False
    return m


def _check(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_check_ends`, then every offset: none may decrease (O(n_sets))."""
    data, offsets = _check_ends(data, offsets, "FDE")
    down = np.flatnonzero(np.diff(offsets) < 0)
    if len(down):  # a set would read tokens of its neighbours (or numpy fail on negative lengths)
        i = int(down[0])
        raise DataError(f"FDE: offsets must not decrease; offsets[{i + 1}] = {offsets[i + 1]} < offsets[{i}] = "
                        f"{offsets[i]}")
    return data, offsets


def _check_ends(data: np.ndarray, offsets: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_check` without the scan of every offset, for a search over a document store whose offsets
    were checked when it was made (:class:`~ragkit.encoders.tokens.TokenVectors` checks them at
    construction and load): the shapes and both ends only, O(1).  The rows a search reads are checked
    by :func:`_candidate_spans`."""
    data = np.asarray(data)
    offsets = np.asarray(offsets)
    if offsets.size and offsets.dtype.kind not in "iu":  # a float offset 4.5 was read as 4, silently
        raise DataError(f"{where}: offsets must be integers, got dtype {offsets.dtype}")
    offsets = offsets.astype(np.int64, copy=False)
    if data.ndim != 2:
        raise DataError(f"{where}: token array must be 2-D (n_tokens, d), got shape {data.shape}")
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(data):
        raise DataError(f"{where}: offsets must run from 0 to n_tokens={len(data)}, got "
                        f"{offsets[:3]}...{offsets[-1:]}")
    return data, offsets


def _candidate_spans(offsets: np.ndarray, u: np.ndarray, n_tokens: int, where: str) -> np.ndarray:
    """Token counts of documents ``u`` only (``offsets[u + 1] - offsets[u]``), checked to lie inside the
    ``n_tokens`` token rows: O(len(u)), never a pass over the whole corpus's offsets."""
    start, end = offsets[u], offsets[u + 1]
    bad = np.flatnonzero((start < 0) | (end < start) | (end > n_tokens))
    if len(bad):
        i = int(u[bad[0]])
        raise DataError(f"{where}: offsets of document {i} are [{offsets[i]}, {offsets[i + 1]}), not a span of "
                        f"the {n_tokens} token rows (offsets must not decrease)")
    return end - start


def _chunks(data: np.ndarray, offsets: np.ndarray, cfg: FDEConfig, is_query: bool,
            chunk_tokens: int = 200_000) -> Iterator[tuple[int, int, np.ndarray]]:
    """The FDEs of sets ``lo:hi`` as ``(lo, hi, (hi - lo, fde_dim) float32)``, chunk after chunk, in order.

    Each chunk's temporaries stay near :data:`CHUNK_BYTES` whatever the configuration: per token its
    SimHash bits, all repetitions' projections and (documents) the Hamming table of empty-bucket filling;
    per set its unsketched FDE row.  Every chunk is a fresh array.  The input is checked at the call
    (:func:`_check`), before the first chunk.
    """
    data, offsets = _check(data, offsets)
    cfg.check_size(data.shape[1])
    return _checked_chunks(data, offsets, cfg, is_query, chunk_tokens)


def _checked_chunks(data: np.ndarray, offsets: np.ndarray, cfg: FDEConfig, is_query: bool,
                    chunk_tokens: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """:func:`_chunks` of input :func:`_check` passed."""
    n, d = len(offsets) - 1, data.shape[1]
    width = cfg.r_reps * cfg.buckets * cfg.proj_dim(d)
    n_mean = d if cfg.mean_weight > 0 else 0
    final = cfg.d_final is not None
    cols = (cfg.d_final if cfg.d_final is not None else width) + n_mean
    sketch = _final_sketch(cfg.seed, cfg.d_final, width) if cfg.d_final is not None else None
    g, s = draw_matrices(cfg, d)
    # the fill's (tokens, buckets) tables: its uint16 XORs and its codes (uint16 for sets under 2**12 tokens)
    fill = 0 if is_query else cfg.buckets * (2 + _fill_code(cfg.k_sim, _longest(offsets))[0].itemsize)
    # per token: its float32 row, SimHash products and projections; per (token, repetition) its bits, bucket id
    # and row key (8 + 8 bytes) and its entry of the sums' sparse indicator (int64 indptr, int32 indices and
    # float32 data)
    per_token = 4 * (d + cfg.r_reps * (cfg.k_sim + cfg.proj_dim(d))) + cfg.r_reps * (cfg.k_sim + 32) + fill
    chunk_tokens = max(1024, min(chunk_tokens, CHUNK_BYTES // per_token))
    # per set: its row of the chunk, and the unsketched row when it is not the chunk itself (a final sketch's
    # input, or the blocks copied beside the mean channel)
    max_sets = max(1, CHUNK_BYTES // (4 * (cols + (width if final or n_mean else 0))))  # short sets: many rows
    lo = 0
    while lo < n:
        hi = int(np.searchsorted(offsets, offsets[lo] + chunk_tokens, side="right")) - 1
        hi = min(max(hi, lo + 1), n, lo + max_sets)
        a, b = offsets[lo], offsets[hi]
        x = np.asarray(data[a:b], dtype=np.float32)
        off = offsets[lo:hi + 1] - a
        block = _encode_chunk(x, off, g, s, cfg, is_query)             # (hi - lo, width), a fresh array
        if sketch is not None:
            block = np.ascontiguousarray(block @ sketch, dtype=np.float32)
        if n_mean:  # the mean channel lives in the last columns
            out = np.empty((hi - lo, cols), np.float32)
            out[:, :cols - n_mean] = block
            del block
            _mean_channel(x, off, cfg, is_query, out[:, cols - n_mean:])
        else:
            out = block
            del block
        yield lo, hi, out
        # drop this chunk before the next is encoded: the caller's reference is its own to keep (held here
        # across the next chunk's encoding, two chunks' rows were alive at its peak)
        del out, x
        lo = hi


def _mean_channel(x: np.ndarray, off: np.ndarray, cfg: FDEConfig, is_query: bool, mean: np.ndarray) -> None:
    """The mean channel of one chunk's sets into ``mean`` ``(n, d)``: a query's token sum times
    ``mean_weight * r_reps``, a document's unit mean direction (0 for an empty set)."""
    tot = _segment_sum_rows(x, off)
    if is_query:
        mean[:] = tot * np.float32(cfg.mean_weight * cfg.r_reps)
    else:
        norm = np.linalg.norm(tot, axis=1, keepdims=True)
        mean[:] = tot / np.where(norm > 0, norm, 1.0)


def _encode(data: np.ndarray, offsets: np.ndarray, cfg: FDEConfig, is_query: bool,
            chunk_tokens: int = 200_000) -> np.ndarray:
    """The FDEs of every set, ``(n, fde_dim)`` float32: :func:`_chunks` gathered, or its one chunk itself."""
    data, offsets = _check(data, offsets)
    cfg.check_size(data.shape[1])
    n = len(offsets) - 1
    out = None
    for lo, hi, rows in _checked_chunks(data, offsets, cfg, is_query, chunk_tokens):
        if lo == 0 and hi == n:  # one chunk (a search's queries): a fresh array already, no copy
            return rows
        if out is None:
            out = np.empty((n, rows.shape[1]), np.float32)
        out[lo:hi] = rows
        del rows  # (copied: not alive while the next chunk is encoded)
    return out if out is not None else np.zeros((0, fde_dim(cfg, data.shape[1])), np.float32)


def _longest(offsets: np.ndarray) -> int:
    """The most tokens of one set (0 for none)."""
    return int(np.diff(offsets).max()) if len(offsets) > 1 else 0


def _fill_code(k: int, longest: int) -> tuple[np.dtype, int]:
    """Empty-bucket filling's code, ``hamming << shift | token index inside its set``, whose minimum is the
    Hamming-nearest token, ties to the lowest index: the narrowest unsigned dtype holding it (uint16 for
    ``k_sim`` 10 and sets under 2**12 tokens) and ``shift``."""
    shift = max(1, (longest - 1).bit_length())
    bits = k.bit_length() + shift
    return np.dtype(np.uint16 if bits <= 16 else np.uint32 if bits <= 32 else np.uint64), shift


#: Set bits of every SimHash bucket id (``2**MAX_K_SIM`` of them): the Hamming distance of buckets ``a`` and
#: ``b`` is ``_POPCOUNT[a ^ b]``.
_POPCOUNT = np.unpackbits(np.arange(2**MAX_K_SIM, dtype=">u2").view(np.uint8).reshape(-1, 2), axis=1).sum(
    axis=1, dtype=np.uint8)


def _encode_chunk(x: np.ndarray, off: np.ndarray, g: np.ndarray, s: np.ndarray | None, cfg: FDEConfig,
                  is_query: bool) -> np.ndarray:
    """The unsketched FDE blocks of one chunk's sets, ``(n, r_reps * 2**k_sim * d_proj)`` float32, a fresh
    C-contiguous array: ``x`` holds the chunk's tokens, ``off`` its ``(n + 1,)`` offsets from 0.

    The bucket sums of all repetitions are one sparse product: an indicator with one column per (token,
    repetition), its one entry in the row (set, repetition, bucket), times the projected tokens stacked the
    same way (built as CSC, no sort; each row adds its tokens in token order, as one product per repetition
    did: same sums, bit for bit, where 20 products and their scipy constructions were 90% of a one-query FDE).
    Counts are one ``bincount``; only empty-bucket filling loops over repetitions.
    """
    n, nt = len(off) - 1, len(x)
    B, k, R = cfg.buckets, cfg.k_sim, cfg.r_reps
    dp = s.shape[1] // R if s is not None else x.shape[1]
    if nt == 0:
        return np.zeros((n, R * B * dp), np.float32)
    doc = np.repeat(np.arange(n, dtype=np.int64), np.diff(off))
    bits = ((x @ g) > 0).reshape(nt, R, k)
    bucket_all = np.zeros((nt, R), np.int64)                          # (nt, R) bucket ids
    for j in range(k):  # loop over the k_sim bits; the first hyperplane = the most significant bit
        bucket_all <<= 1
        bucket_all |= bits[:, :, j]
    del bits
    key = (doc[:, None] * R + np.arange(R)) * B + bucket_all           # (nt, R): row (set, repetition, bucket)
    if s is not None:  # stacked (token, repetition) rows of the projections: (nt * R, dp), a view
        proj_all = (x @ s).reshape(nt * R, dp)
        ind = sp.csc_matrix((np.ones(nt * R, np.float32), key.reshape(-1), np.arange(nt * R + 1)),
                            shape=(n * R * B, nt * R))
    else:  # identity: every repetition sums the tokens themselves, one column per token holding R entries
        proj_all = x
        ind = sp.csc_matrix((np.ones(nt * R, np.float32), key.reshape(-1), np.arange(0, nt * R + 1, R)),
                            shape=(n * R * B, nt))
    sums = np.asarray(ind @ proj_all, dtype=np.float32)               # (n * R * B, dp)
    del ind
    if not is_query:
        counts = np.bincount(key.reshape(-1), minlength=n * R * B).astype(np.float32)
        sums /= np.maximum(counts, 1.0)[:, None]
        if cfg.fill_empty and k:
            _fill_empty(sums, counts.reshape(n, R, B), bucket_all, proj_all, off, doc, cfg)
    return np.ascontiguousarray(sums.reshape(n, R * B * dp))


#: The fill's per-set minimum of its Hamming table (a name of the module's own: tests count the table's rows).
_min_reduceat = np.minimum.reduceat


def _fill_empty(sums: np.ndarray, counts: np.ndarray, bucket_all: np.ndarray, proj_all: np.ndarray,
                off: np.ndarray, doc: np.ndarray, cfg: FDEConfig) -> None:
    """Empty-bucket filling, in place: ``sums`` ``(n * R * B, dp)`` rows (set, repetition, bucket) whose count
    (``counts`` ``(n, R, B)``) is 0 get the projected token (``proj_all``: ``(nt * R, dp)`` rows (token,
    repetition), or ``(nt, dp)`` for the identity) of the set whose bucket is Hamming-nearest, ties to the
    lowest token index.  A loop over repetitions; each builds its Hamming table over the tokens of the sets
    with an empty bucket only (as the spec words it): 150-300-token documents at ``k_sim`` 5 leave ~10% of
    them one, and the table over every token was half the encoding's time."""
    nt = len(bucket_all)
    B, k, R = cfg.buckets, cfg.k_sim, cfg.r_reps
    stacked = len(proj_all) == nt * R  # (token, repetition) rows; else the identity's token rows (same when R is 1)
    lens = np.diff(off)
    n_nonempty = int(np.count_nonzero(lens))
    code_dtype, shift = _fill_code(k, _longest(off))
    lut = _POPCOUNT[:B].astype(code_dtype) << code_dtype.type(shift)  # Hamming distance, shifted into the code
    mask = code_dtype.type((1 << shift) - 1)
    buckets16 = np.arange(B, dtype=np.uint16)
    row_of = np.full(len(lens), -1, np.int64)                          # set -> its row of the table's minima
    for r in range(R):  # loop over repetitions only
        empty = counts[:, r] == 0
        empty[lens == 0] = False                                       # an empty set stays all zero
        has = np.flatnonzero(empty.any(axis=1))                        # sets with an empty bucket (none empty)
        if not len(has):
            continue
        if len(has) == n_nonempty:  # every set with tokens: the table covers every token of the chunk
            tok, within, starts = None, np.arange(nt, dtype=np.int64) - off[doc], off[has]
        else:
            sub = lens[has]
            starts = np.zeros(len(has), np.int64)
            np.cumsum(sub[:-1], out=starts[1:])
            within = np.arange(int(sub.sum()), dtype=np.int64) - np.repeat(starts, sub)
            tok = np.repeat(off[has], sub) + within                    # the chunk rows of those sets' tokens
        bucket = bucket_all[:, r] if tok is None else bucket_all[tok, r]
        # (tokens, B) codes hamming << shift | token index inside its set, the minimum per set and
        # bucket the nearest token (ties: lowest index); 2 + 2 bytes per entry for sets under 2**12
        # tokens, what _chunks charges (an int64 code over int32 tables took 20-28)
        xor = bucket.astype(np.uint16)[:, None] ^ buckets16
        code = lut[xor]
        del xor
        code |= within.astype(code_dtype)[:, None]
        best = _min_reduceat(code, starts, axis=0)                     # (sets with an empty bucket, B)
        del code
        row_of[has] = np.arange(len(has))
        e_doc, e_b = np.nonzero(empty)
        src = off[e_doc] + (best[row_of[e_doc], e_b] & mask).astype(np.int64)
        sums[(e_doc * R + r) * B + e_b] = proj_all[src * R + r] if stacked else proj_all[src]


def fde_documents(data: np.ndarray, offsets: np.ndarray, cfg: FDEConfig) -> np.ndarray:
    """Document FDEs ``(n_docs, fde_dim)`` float32: bucket means (+ fill_empty).

    ``data``: every document's token vectors stacked, ``(n_tokens, d)`` float (float16 or float32);
    ``offsets``: ``(n_docs + 1,)`` integers (read as int64), document ``i``'s tokens are
    ``data[offsets[i]:offsets[i + 1]]`` (from 0 to ``n_tokens``, never decreasing).  ``fde_dim`` is
    :func:`fde_dim` ``(cfg, d)``.  An empty document's FDE is all zero."""
    return _encode(data, offsets, cfg, is_query=False)


def fde_document_chunks(data: np.ndarray, offsets: np.ndarray,
                        cfg: FDEConfig) -> Iterator[tuple[int, int, np.ndarray]]:
    """Document FDEs chunk by chunk: ``(lo, hi, (hi - lo, fde_dim) float32)`` for documents ``lo:hi``, in
    order, each chunk under about :data:`CHUNK_BYTES`; the rows of :func:`fde_documents`, without its
    whole ``(n_docs, fde_dim)`` float32 matrix (for an index that stores them as float16 or int8)."""
    return _chunks(data, offsets, cfg, is_query=False)


def fde_queries(data: np.ndarray, offsets: np.ndarray, cfg: FDEConfig) -> np.ndarray:
    """Query FDEs ``(n_queries, fde_dim)`` float32: bucket sums, empty buckets left at zero.

    ``data``: every query's token vectors stacked, ``(n_tokens, d)`` float; ``offsets``: ``(n_queries + 1,)``
    integers (read as int64), query ``i``'s tokens are ``data[offsets[i]:offsets[i + 1]]`` (from 0 to
    ``n_tokens``, never decreasing).  Use the ``cfg`` the documents were encoded with."""
    return _encode(data, offsets, cfg, is_query=True)


# ---------------------------------------------------------------------------------- Chamfer
def _segment_max_cols(sim: np.ndarray, col_off: np.ndarray) -> np.ndarray:
    """Per row, the max over each column segment; an empty segment gives 0."""
    lens = np.diff(col_off)
    out = np.zeros((sim.shape[0], len(lens)), np.float32)
    ne = np.flatnonzero(lens > 0)
    if len(ne) and sim.shape[0]:
        out[:, ne] = np.maximum.reduceat(sim, col_off[ne], axis=1)
    return out


def _segment_sum_rows(m: np.ndarray, row_off: np.ndarray) -> np.ndarray:
    """Per segment ``row_off[i]:row_off[i + 1]`` of ``m``'s rows, their sum, ``(n_segments, m.shape[1])``
    float32; an empty segment sums to 0.  One sparse (segments x rows) indicator product: 10-40x faster
    than ``np.add.reduceat`` along axis 0 (2.0 s vs 0.045 s for 200,000 x 384 rows in 837 segments)."""
    n, start = len(row_off) - 1, int(row_off[0])
    ind = sp.csr_matrix((np.ones(int(row_off[-1]) - start, np.float32), np.arange(start, int(row_off[-1])),
                         row_off - start), shape=(n, len(m)))
    return np.asarray(ind @ m, dtype=np.float32)


def _dims_match(q: np.ndarray, d: np.ndarray, where: str) -> None:
    if q.shape[1] != d.shape[1]:
        raise DataError(f"{where}: query tokens have {q.shape[1]} dimensions, document tokens {d.shape[1]}")


def _f32_into(buf, a: np.ndarray) -> None:
    """Copy ``a`` (float16 or float32, maybe a read-only memory map) into the float32 tensor ``buf``.

    torch converts float16 with F16C, ~10x numpy's cast; ``buf`` is warm scratch, so no page faults.
    """
    import torch

    with warnings.catch_warnings():  # a read-only memory map is only read here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        buf.copy_(torch.from_numpy(np.ascontiguousarray(a)))


def chamfer_scores(q_data: np.ndarray, q_off: np.ndarray, d_data: np.ndarray, d_off: np.ndarray,
                   q_weights: np.ndarray | None = None, chunk_elems: int = 24_000_000) -> np.ndarray:
    """Exact Chamfer / MaxSim of every query against every document, ``(n_q, n_docs)`` float32.

    ``CH(Q, P) = sum_q w_q * max_p <q, p>``.  All query tokens are multiplied against a chunk
    of document tokens at once (one BLAS call), reduced per document with
    ``maximum.reduceat`` and per query with a sparse indicator product; document chunks are converted to
    float32 into one reused scratch.  An empty document or query scores 0.  ``q_weights`` (per query
    token, default 1) serves ball-carved queries.

    ``q_data``: ``(n_q_tokens, d)`` float, the queries' tokens stacked; ``q_off``: ``(n_q + 1,)`` int64
    offsets, query ``i``'s tokens ``q_data[q_off[i]:q_off[i + 1]]``; ``d_data``: ``(n_doc_tokens, d)``
    float16 or float32 (a memory map too), the documents' tokens; ``d_off``: ``(n_docs + 1,)`` int64
    offsets alike.  Offsets run from 0 to the token count, never decreasing.  ``q_weights``:
    ``(n_q_tokens,)`` float32 or None.  ``chunk_elems`` bounds the ``(query tokens, document tokens)``
    similarity block of one step (float32 elements).
    """
    q_data, q_off = _check(q_data, q_off)
    d_data, d_off = _check(d_data, d_off)
    q_weights = check_q_weights(q_weights, len(q_data), "chamfer_scores")
    nq, nd = len(q_off) - 1, len(d_off) - 1
    out = np.zeros((nq, nd), np.float32)
    q = np.asarray(q_data, np.float32)
    if len(q) == 0 or nd == 0:
        return out
    _dims_match(q, d_data, "chamfer_scores")
    import torch

    step = max(1, chunk_elems // len(q))
    his, lo = [], 0
    while lo < nd:  # chunk bounds first: one scratch of the largest chunk, reused by every chunk
        hi = int(np.searchsorted(d_off, d_off[lo] + step, side="right")) - 1
        his.append(min(max(hi, lo + 1), nd))
        lo = his[-1]
    width = int(np.max(d_off[his] - d_off[[0] + his[:-1]]))
    dbuf = torch.empty((width, q.shape[1]), dtype=torch.float32)
    sbuf = np.empty(len(q) * width, np.float32)
    d_arr = np.asarray(d_data)
    for lo, hi in zip([0] + his[:-1], his):
        a, b = d_off[lo], d_off[hi]
        dc = dbuf[:b - a]
        _f32_into(dc, d_arr[a:b])
        sim = np.matmul(q, dc.numpy().T, out=sbuf[:len(q) * (b - a)].reshape(len(q), b - a))  # (q tok, doc tok)
        best = _segment_max_cols(sim, d_off[lo:hi + 1] - a)               # (q tokens, docs)
        if q_weights is not None:
            best *= q_weights[:, None]
        out[:, lo:hi] = _segment_sum_rows(best, q_off)
    return out


def check_q_weights(q_weights: np.ndarray | None, n_tokens: int, where: str) -> np.ndarray | None:
    """``q_weights`` as ``(n_tokens,)`` float32 (None stays None), checked: one weight per query token (a wrong
    length failed with an IndexError or a broadcast error, or was taken).  Raises :class:`DataError` naming
    ``where``."""
    if q_weights is None:
        return None
    w = np.asarray(q_weights, np.float32)
    if w.shape != (n_tokens,):
        given = f"length {len(w)}" if w.ndim == 1 else f"shape {w.shape}"
        raise DataError(f"{where}: q_weights must hold one weight per query token, got {given} for "
                        f"{n_tokens} query tokens")
    return w


def check_pair_rows(rows: np.ndarray, n_q: int, n_docs: int, where: str) -> np.ndarray:
    """Candidate ``rows`` ``(n_q, k)`` as int64, checked: integers, one row per query, no document id past
    ``n_docs``, none below ``-1`` (``-1`` pads).  Raises :class:`DataError` naming ``where``."""
    rows = np.asarray(rows)
    if rows.size and rows.dtype.kind not in "iu":  # float rows [[1.7], [0.2]] were read as 1 and 0, NaN as -2**63
        raise DataError(f"{where}: rows must be integer document rows (0..{n_docs - 1}, -1 pads), got dtype "
                        f"{rows.dtype}")
    rows = rows.astype(np.int64, copy=False)
    if rows.ndim != 2 or rows.shape[0] != n_q:
        raise DataError(f"{where}: rows must be (n_queries={n_q}, k), got shape {rows.shape}")
    if rows.size and rows.max() >= n_docs:
        raise DataError(f"{where}: rows hold document {rows.max()}, but there are {n_docs} documents (rows 0.."
                        f"{n_docs - 1}, -1 pads)")
    if rows.size and rows.min() < -1:  # corpus_ids[-7] would name the 7th document from the end
        raise DataError(f"{where}: rows hold {rows.min()}, but a document row is 0..{n_docs - 1} and only -1 pads "
                        "a short candidate list")
    return rows


def chamfer_pairs(q_data: np.ndarray, q_off: np.ndarray, d_data: np.ndarray, d_off: np.ndarray,
                  rows: np.ndarray, q_weights: np.ndarray | None = None,
                  chunk_elems: int = 32_000_000, where: str = "chamfer_pairs") -> np.ndarray:
    """Exact Chamfer of query ``i`` against documents ``rows[i, j]``, ``(n_q, k)`` float32.

    Document-major and batched: the distinct candidate documents of the batch are processed
    in chunks; each is gathered (and upcast from float16) once, padded to the chunk's
    longest, and multiplied with one ``torch.bmm`` against the stacked tokens of all queries
    that selected it: ``(docs, T, d) @ (docs, d, m_doc)`` where ``T`` is the total number of
    those queries' tokens (no per-query padding).  A shorter document is padded with copies of
    its own last token (the max is unchanged, so no mask pass), max over document tokens,
    (weighted) sum over query tokens.  No loop over queries or documents, and a document shared by many
    queries' candidate lists costs one read, as in brute force.  Every chunk works in one float32
    scratch allocated once (documents converted into it with torch's F16C copy, query tokens
    gathered into it with ``index_select``): fresh per-chunk arrays and numpy's float16 cast cost
    as much as the GEMMs (bench/muvera.py: 1.5x faster rerank with the scratch).
    ``rows`` entries ``-1`` score ``-inf`` (padding of short candidate lists); other negative rows are refused.
    A document without tokens (a blank one) scores ``-inf`` too: it has no similarity to any query (0 would
    rank it above every candidate of negative Chamfer), and a token retriever never returns it.
    The document offsets are not scanned whole (O(corpus) per call): they are checked where they were made
    (:class:`~ragkit.encoders.tokens.TokenVectors`), and here only at both ends and at the candidates' rows.
    ``where`` names the caller in errors.

    ``q_data``: ``(n_q_tokens, d)`` float, the queries' tokens stacked; ``q_off``: ``(n_q + 1,)`` int64
    offsets, query ``i``'s tokens ``q_data[q_off[i]:q_off[i + 1]]``; ``d_data``: ``(n_doc_tokens, d)``
    float16 or float32 (a memory map too); ``d_off``: ``(n_docs + 1,)`` int64 offsets alike; ``rows``:
    ``(n_q, k)`` integer document rows (0..n_docs-1, -1 pads); ``q_weights``: ``(n_q_tokens,)`` float32
    or None.  ``chunk_elems`` bounds the float32 scratch of one chunk of documents.
    """
    q_data, q_off = _check(q_data, q_off)
    d_data, d_off = _check_ends(d_data, d_off, where)
    _dims_match(q_data, d_data, where)
    nq = len(q_off) - 1
    rows = check_pair_rows(rows, nq, len(d_off) - 1, where)
    q_weights = check_q_weights(q_weights, len(q_data), where)
    k = rows.shape[1]
    out = np.full((nq, k), -np.inf, np.float32)
    pq = np.repeat(np.arange(nq, dtype=np.int64), k)
    pd = rows.reshape(-1)
    valid = np.flatnonzero(pd >= 0)
    if len(valid) == 0:
        return out
    pq, pd = pq[valid], pd[valid]
    q_len = np.diff(q_off)
    q32 = np.asarray(q_data, np.float32)
    qw = np.ones(len(q32), np.float32) if q_weights is None else q_weights
    import torch  # batched GEMM: torch.bmm runs at big-GEMM speed, numpy's stacked matmul 4-9x slower

    dim = d_data.shape[1]
    # document-major: each candidate document is gathered and converted ONCE per batch and
    # multiplied against the stacked tokens of every query that selected it (no per-query padding)
    u, inv, cnt = np.unique(pd, return_inverse=True, return_counts=True)
    u_len = _candidate_spans(d_off, u, len(d_data), where)              # token counts of the candidates only
    qtot = np.bincount(inv, weights=q_len[pq], minlength=len(u)).astype(np.int64)  # query tokens per document
    doc_order = np.argsort(-qtot, kind="stable")                         # largest stacks first
    rank = np.empty_like(doc_order)
    rank[doc_order] = np.arange(len(u))
    pr = rank[inv]                                                        # document rank of each pair
    po = np.argsort(pr, kind="stable")                                    # pairs grouped by document
    starts = np.zeros(len(u) + 1, np.int64)
    np.cumsum(cnt[doc_order], out=starts[1:])
    sorted_qtot = qtot[doc_order]
    l_max = max(int(u_len.max()), 1)
    # chunks of documents (bounded memory): each needs n_c * (T * L + T * dim + L * dim) floats
    bounds, need, r0 = [0], 0, 0
    while r0 < len(u):
        T = max(int(sorted_qtot[r0]), 1)
        r1 = min(len(u), r0 + max(1, chunk_elems // (T * (l_max + dim) + l_max * dim)))
        need = max(need, (r1 - r0) * (T * (l_max + dim) + l_max * dim))
        bounds.append(r1)
        r0 = r1
    # one float32 scratch reused by every chunk: fresh per-chunk arrays cost a page fault per 4 KiB
    scratch = torch.empty(need, dtype=torch.float32)
    q32t = torch.from_numpy(np.concatenate([q32, np.zeros((1, dim), np.float32)]))
    zero_row = len(q32)
    d16 = np.asarray(d_data)
    res = np.zeros(len(pd), np.float32)
    for r0, r1 in zip(bounds[:-1], bounds[1:]):  # loop over chunks of documents, not over queries
        T = max(int(sorted_qtot[r0]), 1)
        docs_c = u[doc_order[r0:r1]]
        n_c = len(docs_c)
        lens_c = u_len[doc_order[r0:r1]]
        L = max(int(lens_c.max()), 1)
        qs = scratch[:n_c * T * dim].view(n_c, T, dim)
        dpad = scratch[n_c * T * dim:n_c * (T + L) * dim].view(n_c, L, dim)
        sim = scratch[n_c * (T + L) * dim:n_c * ((T + L) * dim + T * L)].view(n_c, T, L)
        if len(d16):  # pad each document with its own last token: the max is unchanged, no mask needed
            di = d_off[docs_c, None] + np.minimum(np.arange(L), np.maximum(lens_c[:, None] - 1, 0))
            _f32_into(dpad.view(n_c * L, dim), d16[np.minimum(di, len(d16) - 1).reshape(-1)])
        else:
            dpad.zero_()
        pp = po[starts[r0]:starts[r1]]                                     # pairs of these documents, grouped
        g = pr[pp] - r0                                                    # their document inside the chunk
        ql = q_len[pq[pp]]
        cq = np.cumsum(ql) - ql                                            # exclusive running token count
        first = starts[r0:r1] - starts[r0]
        pos0 = cq - cq[first][g]                                           # first stacked row of each pair
        within = group_positions(ql)
        tok = np.repeat(q_off[pq[pp]], ql) + within                        # query-token row
        tg, tp = np.repeat(g, ql), np.repeat(pos0, ql) + within            # (document, stacked row)
        src = np.full(n_c * T, zero_row, np.int64)                        # stacked row -> query-token row
        src[tg * T + tp] = tok                                             # (rows past a stack: the zero row)
        torch.index_select(q32t, 0, torch.from_numpy(src), out=qs.view(n_c * T, dim))
        torch.bmm(qs, dpad.transpose(1, 2), out=sim)                      # (docs, T, L)
        best = sim.amax(dim=2).numpy()
        vals = best[tg, tp] * qw[tok]  # (an empty document's pairs: any value, -inf below)
        res[pp] = np.bincount(np.repeat(np.arange(len(pp)), ql), weights=vals, minlength=len(pp))
    res[u_len[inv] == 0] = -np.inf                                       # documents without tokens
    flat = out.reshape(-1)
    flat[valid] = res
    return out


def ball_carve(data: np.ndarray, offsets: np.ndarray, tau: float,
               max_bytes: int = 64 << 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ball carving of query token sets (MUVERA, rerank side): fewer tokens, same weight.

    Greedy per set: the first unassigned token q opens a cluster holding every unassigned
    token with ``<q, q'> >= tau``; the cluster is represented by the **sum** of its members.
    Returns ``(centres (n_centres, d) float32, offsets (n+1,), weights (n_centres,))`` where
    the centres are the normalised sums and the weights their norms, so that
    ``weight * <centre, p> = <sum, p>`` and Chamfer with the ``sum`` representation is
    ``sum_c weight_c * max_p <centre_c, p>`` (``chamfer_scores(..., q_weights=weights)``).

    The greedy step is sequential over tokens by definition; it runs as a loop over the
    (at most ``max query length``) token positions, vectorised across the queries of a chunk;
    chunks of queries keep the padded ``(queries, length, d + length)`` float32 temporaries
    under ``max_bytes``.

    ``data``: ``(n_tokens, d)`` float, the query tokens stacked (unit vectors: ``tau`` is a cosine
    threshold); ``offsets``: ``(n + 1,)`` int64, query ``i``'s tokens ``data[offsets[i]:offsets[i + 1]]``.
    The returned offsets are ``(n + 1,)`` int64 over the centres and the weights ``(n_centres,)`` float32.
    """
    data, offsets = _check(data, offsets)
    n = len(offsets) - 1
    m = int(np.diff(offsets).max()) if n else 0
    step = max(1, max_bytes // max(1, 2 * 4 * m * (data.shape[1] + m)))
    if n <= step:
        return _ball_carve(data, offsets, tau)
    parts = [_ball_carve(data[offsets[a]:offsets[min(a + step, n)]], offsets[a:min(a + step, n) + 1] - offsets[a], tau)
             for a in range(0, n, step)]  # a loop over chunks of queries
    off = np.zeros(n + 1, np.int64)
    np.cumsum(np.concatenate([np.diff(o) for _, o, _ in parts]), out=off[1:])
    return np.concatenate([c for c, _, _ in parts]), off, np.concatenate([w for _, _, w in parts])


def _ball_carve(data: np.ndarray, offsets: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`ball_carve` on one chunk of query sets, all at once."""
    x = np.asarray(data, np.float32)
    n = len(offsets) - 1
    lens = np.diff(offsets)
    m = int(lens.max()) if n else 0
    d = x.shape[1]
    if m == 0:
        return np.zeros((0, d), np.float32), np.zeros(n + 1, np.int64), np.zeros(0, np.float32)
    idx = np.minimum(offsets[:-1, None] + np.arange(m), max(len(x) - 1, 0))
    valid = np.arange(m) < lens[:, None]
    import torch

    xp = x[idx] * valid[..., None]                                        # (n, m, d)
    xt = torch.from_numpy(xp)  # torch.bmm, as chamfer_pairs: numpy's batched matmul ran 10-100x slower
    sims = torch.bmm(xt, xt.transpose(1, 2)).numpy()                      # (n, m, m)   under multi-threaded BLAS
    assigned = ~valid.copy()
    leader = np.full((n, m), -1, np.int64)
    for t in range(m):  # loop over token positions, all queries at once
        opens = ~assigned[:, t]
        grab = opens[:, None] & ~assigned & (sims[:, t, :] >= tau)
        grab[opens, t] = True
        leader[grab] = t
        assigned |= grab
    # centres: sums of members per (query, leader)
    key = np.arange(n)[:, None] * m + leader
    ok = valid & (leader >= 0)
    keys, inv = np.unique(key[ok], return_inverse=True)
    members = sp.csr_matrix((np.ones(len(inv), np.float32), (inv, np.arange(len(inv)))), shape=(len(keys), len(inv)))
    sums = np.asarray(members @ xp[ok], dtype=np.float32)  # (centres, d): one sparse product, not np.add.at
    weights = np.linalg.norm(sums, axis=1)
    centres = sums / np.maximum(weights, 1e-12)[:, None]
    per_q = np.bincount(keys // m, minlength=n)
    off = np.zeros(n + 1, np.int64)
    np.cumsum(per_q, out=off[1:])
    return centres, off, weights.astype(np.float32)
