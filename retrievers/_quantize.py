"""How :class:`~ragkit.retrievers._index.VectorIndex` codes vectors: normalisation, PCA / Matryoshka
reduction, the int8 calibration and graph scale, float16 range checks, and the stored codes (float32, float16,
int8, packed sign bits).  The functions taking ``self`` are :class:`VectorIndex` methods (assigned in its class
body)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from ragkit.errors import DataError, ParamError

if TYPE_CHECKING:
    from ragkit.retrievers._index import VectorIndex

__all__ = ["parse_reduce"]

#: rows per block of the exact search (bounds the temporary float block to ~25 MB at 384 dims)
BLOCK = 16_384
#: rows per block when vectors are normalised (bounds the squares ``np.linalg.norm`` makes to ~6 MB at 384 dims)
NORM_BLOCK = 4096
#: the HNSW int8 scale of a cosine index is ``127 / `` this percentile of ``|x|`` (an inner-product index's:
#: of its maximum; :meth:`VectorIndex._i8_graph_scale`, measured there)
I8_SCALE_PERCENTILE = 99.99
#: the HNSW int8 scale's percentile of ``|x|`` is taken over at most about this many values (a seeded
#: random sample of rows beyond: 4M values, a 16 MB temporary)
I8_SCALE_VALUES = 1 << 22
#: PCA is fitted on at most this many vectors (a seeded random sample of larger sets)
PCA_SAMPLE = 200_000
#: bytes of each float64 block of the PCA sample (mean and covariance are summed block by block)
PCA_CHUNK_BYTES = 32 << 20
#: the largest finite float16
F16_MAX = float(np.finfo(np.float16).max)
#: the numpy type an exact (numpy) index stores its codes as, per ``dtype`` (b1: packed bits; i8: calibrated codes
#: 0..255; an HNSW graph's i8 codes are usearch's int8)
STORED_DTYPES: dict[str, type[np.generic]] = {"f32": np.float32, "f16": np.float16, "i8": np.uint8, "b1": np.uint8}


def nonfinite_rows(a: np.ndarray, *, count: bool = False) -> tuple[int, int] | None:
    """Where ``a`` (2-D: its rows; 1-D: its elements) holds NaN or inf: ``(the first such row, how many)``, or None
    where it holds none.  Read in blocks of ``BLOCK`` rows (one bool temporary of a block, ~6 MB at 384 dims,
    never one of the whole array); the scan stops at the first block holding one unless ``count``, so that "how
    many" counts that block's alone then (an error's message reads the whole count: the rows after it are read
    only on that path)."""
    first: int | None = None
    bad = 0
    for lo in range(0, len(a), BLOCK):  # a loop over blocks of rows
        ok = np.isfinite(a[lo:lo + BLOCK])
        if ok.ndim > 1:
            ok = ok.reshape(len(ok), -1).all(axis=1)
        if not ok.all():
            if first is None:
                first = lo + int(np.argmin(ok))
            bad += len(ok) - int(np.count_nonzero(ok))
            if not count:
                break
    return None if first is None else (first, bad)


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


def _normalise(self: VectorIndex, x: np.ndarray, inplace: bool = False) -> np.ndarray:
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


def _reduce_rows(self: VectorIndex, full: np.ndarray) -> np.ndarray:
    """:meth:`_reduce` of many vectors, in blocks of ``BLOCK`` rows (the centred / truncated
    copy of the input and its norms are never made whole)."""
    if self.reduce_kind == "none" or len(full) <= BLOCK:
        return self._reduce(full)
    dims = self.pca_components.shape[1] if self.reduce_kind == "pca" else self.reduce_dims
    out = np.empty((len(full), dims), np.float32)
    for a in range(0, len(full), BLOCK):
        out[a:a + BLOCK] = self._reduce(full[a:a + BLOCK])
    return out


def _reduce(self: VectorIndex, x: np.ndarray) -> np.ndarray:
    """Full float vectors (n, d_in) -> the vectors the index stores (n, d), float32."""
    x = np.asarray(x, dtype=np.float32)
    if self.reduce_kind == "pca":
        x = (x - self.pca_mean) @ self.pca_components
    elif self.reduce_kind == "matryoshka":
        x = x[:, : self.reduce_dims]
    return np.ascontiguousarray(self._normalise(x) if self.reduce_kind != "none" else x, dtype=np.float32)


def _fit_transforms(self: VectorIndex, full: np.ndarray) -> np.ndarray:
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


def _i8_graph_scale(self: VectorIndex, x: np.ndarray) -> np.float32:
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


def _calibrate_i8(self: VectorIndex, x: np.ndarray) -> None:
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


def _set_i8_range(self: VectorIndex, lo: np.ndarray, hi: np.ndarray) -> None:
    """The exact index's int8 calibration from the per-dimension minimum ``lo`` and maximum ``hi`` of
    the vectors (and the placeholder graph scale: only the graph's codes use it)."""
    self.i8_min = lo.astype(np.float32)
    self.i8_step = np.maximum((hi - lo) / 255.0, 1e-12).astype(np.float32)
    self.i8_scale = np.float32(127.0 / max(float(np.maximum(-lo, hi).max()), 1e-12))


def _check_f16_range(self: VectorIndex, x: np.ndarray, what: str) -> None:
    """DataError for ``dtype="f16"`` when a reduced vector of ``x`` ``(n, ndim)`` holds a value
    beyond float16's range (65504): it would be stored as inf and score inf / NaN."""
    if self.dtype != "f16" or not x.size:
        return
    big = max(float(x.max()), -float(x.min()))  # no |x| temporary
    if big > F16_MAX:
        raise DataError(f"VectorIndex.{what}: dtype='f16' holds values up to {F16_MAX:g} but the vectors reach "
                        f"{big:.6g} (they would be stored as inf); use dtype='f32', or normalise the vectors "
                        f"(metric='cos') or scale them down")


def _codes(self: VectorIndex, x: np.ndarray, for_usearch: bool, inplace: bool = False) -> np.ndarray:
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


def i8_clipped(self: VectorIndex, x: np.ndarray) -> int:
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


def _stored_codes_of(self: VectorIndex, x: np.ndarray) -> np.ndarray:
    """:meth:`_codes` of the exact backend for many vectors: i8 and b1 in blocks of ``BLOCK`` rows
    (their float / bool temporaries, each the size of ``x``, were made whole)."""
    if self.dtype not in ("i8", "b1") or len(x) <= BLOCK:
        return self._codes(x, for_usearch=False)
    width = (x.shape[1] + 7) // 8 if self.dtype == "b1" else x.shape[1]
    out = np.empty((len(x), width), np.uint8)
    for a in range(0, len(x), BLOCK):
        out[a:a + BLOCK] = self._codes(x[a:a + BLOCK], for_usearch=False)
    return out
