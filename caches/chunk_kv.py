"""Chunk key/value caches for Cache-Craft style reuse (arXiv 2502.15734).

A *chunk-cache* is the per-layer key/value rows of one retrieved chunk as they were
computed inside some request, plus the attention statistics Cache-Craft needs to decide,
when the chunk shows up again at another position after other chunks, how many and which
of its tokens must be recomputed.  The same chunk may be stored several times, once per
context it was computed in (a *variant*).

Storage layout of one variant
-----------------------------
``keys``, ``values`` : tensor of shape ``(n_layers, n_kv_heads, n_tokens, head_dim)``
    Keys are stored *after* RoPE, at the absolute positions ``start .. start+n-1`` they had
    when captured; :func:`ragkit.generators.local.rerotate_keys` moves them.
``inter`` : float32 ``(n_layers, n_prefix)``
    ``inter_l(C_i, C_j)``: summed attention (mean over query heads) from the chunk's
    queries to the keys of each prefix chunk ``C_j`` (Cache-Craft Eq. 3).
``intra`` : float32 ``(n_layers,)``
    Summed causal attention of the chunk to itself (Eq. 4).
``sys_inter`` : float32 ``(n_layers,)``
    Attention mass to the system prompt, the attention sink (position 0) excluded.
``token_scores`` : float32 ``(n_tokens,)``
    Per-token outside attention (to all earlier chunks, or to the system prompt minus the
    sink when the variant was captured alone), averaged over layers (Eq. 14).
``prefix_ids`` / ``prefix_lens``
    The ordered chunk keys ``S_old`` that preceded the chunk, and their lengths.
``sys_id``
    Digest of the system-prompt token ids that preceded ``S_old`` (a chunk's rows depend on
    every token before it, the system prompt included).
``exact``
    Whether the rows are those of a full prefill of ``system + S_old + chunk`` at ``start``.
    A chunk computed in a request where an earlier chunk was reused approximately is stored
    with ``exact=False``: it is still a context variant for Cache-Craft's scores, but never
    reused as exact.

A variant is reused without any recomputation only when it is exact and its system prompt
and prefix chunks equal the new ones.  Storing a variant of the same context (prefix ids,
start, system prompt) replaces the older one, except that an inexact variant never replaces
an exact one.

The memory tier has a byte budget; when it is exceeded the variant of lowest utility
``(decayed_reuse + 0.001) * (1 - 0.9 mean_CFO) / bytes`` is evicted, spilled to the disk tier
when one is configured, dropped otherwise: reused often and recently, cheap to fix, small is
kept (Cache-Craft's eviction idea; the two floors keep a variant never reused, or always
recomputed in full, comparable by recency and size); the decay is exponential in requests since
the variant's last use, so among equals the least recently used goes first (a request, here and below, is one
chunk look-up, :meth:`ChunkKVCache.lookup`: a prompt of k chunks makes k of them).  A variant larger than the whole
budget never enters memory: it is spilled (or dropped) on its own, and the other variants stay.  The disk tier holds one
safetensors file per variant (named by its context) and a ``manifest.json`` naming the model
and tokenizer; opening it for another model raises :class:`CacheModelMismatchError`.  A
lookup returns the in-memory variants of a chunk plus those of its disk variants whose context
is not in memory; variants read from disk are returned even when they cannot stay in memory
(they are then not written back), and kept in memory as far as the budget allows.  A chunk never
holds more than ``max_variants`` in memory and on disk together: a new variant is always admitted
and the older one of lowest utility goes, from memory (its disk file with it) or from the disk tier;
a spill past it deletes the disk-only variants of lowest utility, the one being spilled among them
(not written when it is the one to go), ties going oldest written first; a lookup returns at most
``max_variants``, the disk ones of highest utility first.  A variant stored again in the same
context keeps the reuse history of the one it replaces, its count decayed to that moment.

Utility on disk.  Each file's metadata keeps what the utility needs: the reuse count and the CFO sum and
count (the tensors' header gives the bytes), ``last_tick`` (the request of its last use) and ``tick`` (the
request count at the write) with ``store`` (the id of the store object whose request count those are),
``written_ns`` (when it was written: the tie-break) and ``used_ns`` (the wall time of its last use).  At the
cap a disk variant's utility is the one it would have in memory, times the wall-clock decay below for a file
of another store.  Read back, a variant keeps its reuse history, the count decayed by requests as in memory
(not by wall time: it is used now), and counts as used at that lookup.  Request counts are per store object
(a forked child takes a new store id), so a file of another store (another process, an earlier run) counts
the requests this store served since the file was written (the store keeps the wall time of its recent
requests; all of its requests for a file written before it opened) plus those its writer served between the
variant's last use and the write (``tick - last_tick``).  Request counts alone would let a file of another
store keep its utility for good (a one-shot process such as ``ragkit ask`` serves a few requests, so a chunk
reused once in an earlier run would outrank every new chunk, at 0.001 of its reuse, forever): such a file's
utility, wherever files are ranked (a trim, the cap, the disk variants a lookup reads), also decays by wall
time since its last use, ``0.5 ** (seconds / disk_half_life_s)`` (one hour by default: a chunk reused once
yields to a new one some ten hours after its last use; at most 500 half-lives, so files older than that
still rank by their reuse count; this store's own files, like its memory tier, decay by its requests only).
A file written before these fields were kept carries the reuse count and CFO (files have always carried
those) and counts as last used when it was written, at its modification time when it has no ``written_ns``;
one whose header cannot be read goes first.  A file the cap deletes is deleted only while it is the one whose
header was ranked: one that another store rewrote meanwhile stays.

Disk budget.  With ``disk_budget_bytes`` the disk tier is trimmed when it grows past it: once at the end
of every :meth:`ChunkKVCache.flush` (the exit's included; after all of its writes, so the flush's variants
are ranked with the others), and when the store's own writes since it last looked (spills) take its
estimate of the folder's size past the budget.  The folder's variant files are then
counted (every writer's: processes share the folder) and those of lowest utility (from their headers, as
at the cap; ties: oldest written first) are deleted until the tier holds at most 90% of the budget, so
the next flushes do not trim again at once.  One store trims a folder at a time (a lock file,
``.trim.lock``, taken without waiting: another store trimming meanwhile does the work); a file another
store rewrote after it was ranked is kept; key folders left empty are removed (a writer that finds its
folder removed meanwhile makes it again).  Variants in memory stay there, and are written again by a
later flush once they change (reused, or put again).

Precision.  A variant is exact at the precision its rows were stored in: a store reads a file whose keys
are of a less precise dtype than its ``storage_dtype`` (float16 files, written by a float16 store such
as ``ragkit ask``'s, read by a float32 store) as inexact, its rows cast to ``storage_dtype``: a context
variant, recomputed like any other reused chunk and replaced by an exact one when a later pass
recomputes it in full; such a file keeps ``exact_at`` (the dtype its rows are exact at) in its
metadata when written back, so a store of that dtype reads it as exact again.  A more precise file is
cast down and stays exact (what the store would have stored).  The memory tier holds the store's dtype
only.

Shared folders.  Files are written with the permissions a plain ``open`` would give (``0o666`` less the
umask; safetensors writes owner-only files), so members of a group sharing a folder (umask 002) read
each other's variants.  A variant file this process may not read is a miss, with a warning naming it
once per process.

Damaged files.  Each file's metadata also keeps ``sha256``, a digest of its tensors and other
metadata, checked when the variant is read: a file cut short, with a header that does not parse,
or whose content differs from its digest (a changed byte of keys or values would load and serve
other rows) is deleted with a warning on the ``ragkit`` logger, and the chunk is computed again.
The metadata names the chunk (``key``, under the digest) and its length (``n_tokens``): a file in
the folder of another chunk (moved or copied there) is damaged there too.  Files written before the
digest (or the key) was kept have none and are read unchecked, as before; a generator still drops
(and deletes) a variant whose length is not its chunk's (:meth:`ChunkKVCache.lookup`'s ``n_tokens``).
A file of another model is an error (:class:`CacheModelMismatchError`, naming it), never deleted: it
may be that model's valid data.

Persistence.  The memory tier reaches the disk tier on eviction, on :meth:`ChunkKVCache.flush` (the
variants put or reused since they were written or read, :attr:`ChunkVariant.dirty`; not the whole memory
tier), and when the store goes: garbage-collected, or still alive when the process exits (a ``weakref.finalize``
hook; skipped when the folder or its manifest is gone, or when another thread holds the store for
more than 10 s; a failure is one line on stderr, never an exception).  So a process that answers and
exits leaves its chunks to the next one.  A process killed by a signal it does not handle (SIGKILL)
writes only what it spilled or flushed.  A folder that cannot be written but holds a chunk cache (one
shipped read-only: an image, a shared mount) is served as it is, with one warning per folder and process
that chunks computed now are not kept: nothing is ever written, deleted or trimmed there (no spill, flush
or write at the exit is tried), and what the store computes stays in its memory tier.
No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import secrets
import sys
import threading
import time
import weakref
from array import array
from bisect import bisect_right
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Any, Iterable, Iterator, Literal, Sequence, TypeGuard

import numpy as np
import torch

from ragkit._files import FCNTL as _fcntl, _keep_mode, atomic_file, first_time, fsync_path, share_file_like_umask
from ragkit.errors import ArtifactError, DataError, ParamError

__all__ = [
    "ChunkVariant",
    "ChunkKVCache",
    "CacheStats",
    "CacheModelMismatchError",
    "chunk_key",
    "compute_cci",
    "prefix_overlap",
    "order_penalty",
    "cache_fix_overhead",
    "alone_fix_overhead",
    "fix_overhead",
    "iter_variants",
    "check_cache_dir",
]

StorageDtype = Literal["float32", "float16"]
_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}
#: what a ``storage_dtype`` error says is expected (ChunkKVCache and LocalGenerator alike)
STORAGE_DTYPE_EXPECTED = "'float32' or 'float16' (also spelled fp32 / f32, fp16 / f16 / half)"


def storage_dtype_name(value: object) -> StorageDtype | None:
    """``value`` as the storage dtype it spells (:func:`ragkit.params.canonical_spelling`, as ``Generate``'s
    ``storage_dtype`` reads it: ``"fp16"``, ``"half"``, ``"F16"`` or ``numpy.float16`` is ``"float16"``),
    or ``None`` where it spells neither ``"float32"`` nor ``"float16"``."""
    from ragkit.params import canonical_spelling

    name = canonical_spelling(value, tuple(_DTYPES))
    return name if isinstance(name, str) and name in _DTYPES else None  # type: ignore[return-value]


_FORMAT_VERSION = 1
#: bytes per element of the safetensors dtypes a variant's keys may have
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
#: wall-clock marks a store keeps of its requests (spanning at least 64 half-lives; older decays below 2**-64)
_CLOCK_LEN = 4096
#: precision rank of the dtypes a variant's rows may be stored in (higher: more precise), by torch name
_PRECISION = {"float64": 3, "float32": 2, "float16": 1, "bfloat16": 0}
#: torch names of the safetensors dtypes
_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
#: the most half-lives of wall-clock decay a disk file's utility takes (2**-500: no underflow to 0, so files older
#: than that still rank by their reuse count, CFO and size)
_WALL_DECAY_MAX = 500.0
#: share of ``disk_budget_bytes`` a trim of the disk tier leaves (the next flushes do not trim again at once)
_DISK_LOW_WATER = 0.9
#: the lock file of a disk tier's trim (taken without waiting; with ``fcntl``, POSIX, one store trims a folder at
#: a time: elsewhere trims may overlap, each deleting only files unchanged since it ranked them)
_TRIM_LOCK = ".trim.lock"
#: variant files this process could not read (permissions), each warned about once
_UNREADABLE_NOTED: set[str] = set()
#: chunk-cache folders (real paths) already said to be read-only, once per process
_READ_ONLY_NOTED: set[str] = set()

_log = logging.getLogger(__name__)


def _file_digest(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    """SHA-256 of a disk variant's content: every tensor's name, dtype, shape and bytes, and every
    metadata entry but the digest itself, in name order (kept in the file's ``sha256`` metadata)."""
    h = hashlib.sha256()
    h.update(json.dumps(sorted((k, v) for k, v in meta.items() if k != "sha256")).encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        if t.dtype == torch.bfloat16:  # no numpy dtype: the same bits as int16
            t = t.view(torch.int16)
        h.update(np.ascontiguousarray(t.detach().cpu().numpy()).reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def _coarser(a: str, b: str) -> str:
    """The less precise of two dtype names of :data:`_PRECISION`."""
    return a if _PRECISION[a] <= _PRECISION[b] else b


def _is_int(x: object) -> TypeGuard[int | np.integer]:
    """An integer (Python or numpy), not a bool."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


#: what ``budget_bytes`` (:class:`ChunkKVCache`, :class:`~ragkit.caches.PrefixCache`, ``LocalGenerator``'s
#: ``cache_budget_bytes``) and ``disk_budget_bytes`` may be, in words (their errors say it)
BUDGET_EXPECTED = "an int >= 0, or None for no budget"
DISK_BUDGET_EXPECTED = "an int >= 0, or None for no limit on the disk tier"


def budget_ok(value: object) -> bool:
    """Whether ``value`` is a byte budget: an int >= 0 (Python or numpy, not a bool), or ``None`` (none)."""
    return value is None or (_is_int(value) and bool(value >= 0))


def check_disk_budget_has_dir(where: str, disk_budget_bytes: object, disk_dir: object) -> None:
    """Raise :class:`~ragkit.errors.ParamError` (from ``where``) for a ``disk_budget_bytes`` without a ``disk_dir``:
    it would limit a disk tier that is not there."""
    if disk_budget_bytes is not None and disk_dir is None:
        raise ParamError(f"{where}: disk_budget_bytes={disk_budget_bytes!r} limits the chunk cache's disk tier, but "
                         "there is none (disk_dir=None); set disk_dir, or leave disk_budget_bytes out",
                         "disk_budget_bytes")


class CacheModelMismatchError(ArtifactError, ValueError):
    """A chunk cache written for one model/tokenizer was offered to another (a ragkit
    :class:`~ragkit.errors.ArtifactError`, and a ``ValueError`` as before)."""


def chunk_key(token_ids: Sequence[int] | np.ndarray | torch.Tensor, model_id: str, tokenizer_id: str) -> str:
    """Content hash of a chunk: ``sha256(model_id, tokenizer_id, int32 token ids)`` as hex.

    The model and tokenizer identities are part of the key, so a cache can never feed a
    chunk's rows to a model (or a tokenisation) that did not compute them.
    """
    ids = np.asarray(token_ids.cpu() if isinstance(token_ids, torch.Tensor) else token_ids, dtype=np.int32)
    h = hashlib.sha256()
    h.update(model_id.encode())
    h.update(b"\x00")
    h.update(tokenizer_id.encode())
    h.update(b"\x00")
    h.update(ids.tobytes())
    return h.hexdigest()[:40]


# ----------------------------------------------------------------------------- scores
def compute_cci(inter: np.ndarray, intra: np.ndarray, prefix_lens: Sequence[int], n_tokens: int,
                sys_inter: np.ndarray | None = None, sys_len: int = 0) -> float:
    """Cache Context Impact, Cache-Craft Eq. 9-11.

    ``a_l = sum_j inter_l(C_i, C_j) / (|C_i| |C_j|)``, ``b_l = intra_l / |C_i|^2``,
    ``CCI = sigmoid(mean_l a_l / mean_l b_l)``, in ``[0.5, 1)``.  When the variant was captured
    with no prefix chunk, the system prompt (sink excluded, ``sys_len`` tokens) plays the
    prefix, which gives the "captured alone" proxy of ALGORITHMS.md §5.3.

    The arrays are a :class:`ChunkVariant`'s (see "Storage layout" in the module docstring).

    Parameters
    ----------
    inter : array of shape ``(n_layers, n_prefix)``
        ``inter[l, j]``: attention mass from the chunk's ``n_tokens`` queries to the keys of prefix
        chunk ``j`` at layer ``l``: softmax attention weights, averaged over the query heads, summed over
        the chunk's queries and chunk ``j``'s keys.  Unitless (each query's weights sum to 1), so in
        ``[0, n_tokens]``; ``(n_layers, 0)`` (or empty) without prefix chunks.
    intra : array of shape ``(n_layers,)``
        The same mass from the chunk's queries to its own keys (causal), per layer; in ``[0, n_tokens]``.
    prefix_lens : sequence of ``n_prefix`` ints
        Tokens of each prefix chunk (``|C_j|``).
    n_tokens : int
        Tokens of the chunk (``|C_i|``).
    sys_inter : array of shape ``(n_layers,)`` or None
        The same mass to the system prompt's keys, the attention sink (position 0) excluded: used in
        place of ``inter`` when there is no prefix chunk.
    sys_len : int
        Tokens of the system prompt, the sink excluded.
    """
    n = max(int(n_tokens), 1)
    if len(prefix_lens) > 0 and inter.size:
        lens = np.asarray(prefix_lens, dtype=np.float64).clip(min=1)
        a = (inter.astype(np.float64) / (n * lens[None, :])).sum(axis=1)
    elif sys_inter is not None and sys_len > 0:
        a = sys_inter.astype(np.float64) / (n * sys_len)
    else:
        a = np.zeros(len(intra))
    b = intra.astype(np.float64) / (n * n)
    a_bar, b_bar = float(a.mean()) if a.size else 0.0, float(b.mean()) if b.size else 0.0
    if b_bar <= 0.0:
        return 1.0 if a_bar > 0 else 0.5
    return float(1.0 / (1.0 + math.exp(-a_bar / b_bar)))


def prefix_overlap(inter: np.ndarray, prefix_ids: Sequence[str], new_prefix: Sequence[str]) -> float:
    """β (Cache-Craft, arXiv 2502.15734, Eq. 6): share of the chunk's old outside attention going to chunks
    still before it.

    ``inter`` is the variant's attention mass to its old prefix chunks: shape ``(n_layers, n_prefix)``
    (summed over layers here) or ``(n_prefix,)`` already summed, one column per ``prefix_ids`` entry, in
    units of attention weight (softmax weights averaged over heads, summed over the chunk's queries and the
    prefix chunk's keys; see :func:`compute_cci`); only the ratios matter.  ``prefix_ids``: the old
    prefix's chunk keys ``S_old``, in order; ``new_prefix``: the chunk keys now before the chunk.  Returns
    a share in ``[0, 1]``; 1 without an old prefix or outside attention (nothing lost).
    """
    if len(prefix_ids) == 0:
        return 1.0
    mass = inter.sum(axis=0) if inter.ndim == 2 else np.asarray(inter)
    total = float(mass.sum())
    if total <= 0.0:
        return 1.0
    now = set(new_prefix)
    keep = np.fromiter((pid in now for pid in prefix_ids), dtype=bool, count=len(prefix_ids))
    return float(mass[keep].sum() / total)


def order_penalty(prefix_ids: Sequence[str], new_prefix: Sequence[str]) -> float:
    """γ (Cache-Craft, arXiv 2502.15734, Eq. 7): normalised Kendall-tau distance of the common chunks' order,
    old vs new.

    ``prefix_ids``: the chunk keys of the old prefix ``S_old``, in order; ``new_prefix``: those now
    before the chunk.  Takes no attention statistics (``inter`` and ``intra`` play no part): the share,
    in ``[0, 1]``, of the pairs of chunks in both prefixes whose order is swapped; 0 with fewer than two
    chunks in common.
    """
    new_pos = {cid: i for i, cid in enumerate(new_prefix)}
    common = [new_pos[c] for c in prefix_ids if c in new_pos]
    m = len(common)
    if m < 2:
        return 0.0
    r = np.asarray(common)
    discordant = int(np.triu(r[:, None] > r[None, :], k=1).sum())
    return discordant / (m * (m - 1) / 2)


def cache_fix_overhead(cci: float, beta: float, gamma: float, alpha: float = 1.0) -> float:
    """CFO, Cache Fix Overhead (Cache-Craft, arXiv 2502.15734, Eq. 8 and 12):
    ``clip(alpha * CCI * (1 - beta * (1 - gamma)), 0, 1)``, the share of the chunk's tokens to recompute.

    ``cci``: :func:`compute_cci`, in ``[0.5, 1)``; ``beta``: :func:`prefix_overlap`; ``gamma``:
    :func:`order_penalty`, both in ``[0, 1]``; ``alpha``: a scale (1: the paper's)."""
    return float(np.clip(alpha * cci * (1.0 - beta * (1.0 - gamma)), 0.0, 1.0))


def alone_fix_overhead(cci: float, alpha: float = 1.0) -> float:
    """Recompute share of a variant captured alone (no prefix chunk), reused after other chunks.

    β cannot see added context (it is 1 for an empty ``S_old``, so Eq. 12 would give 0), so
    ALGORITHMS.md §5.3 uses the proxy ``r = alpha * (CCI - 0.5) * 2``, clipped to ``[0, 1]``.
    """
    return float(np.clip(alpha * (cci - 0.5) * 2.0, 0.0, 1.0))


def fix_overhead(variant: "ChunkVariant", new_prefix: Sequence[str], new_lens: Sequence[int], sys_id: str,
                 alpha: float | None = None) -> tuple[float, bool]:
    """Recompute share of reusing ``variant`` after the chunks ``new_prefix`` (keys; ``new_lens`` their token
    counts) under the system prompt ``sys_id``, and whether the variant is exact there (its rows are reused as
    they are: share 0).

    Exact: ``variant`` is an exact variant computed after the same system prompt and the same prefix chunks.
    With ``alpha`` set: Cache-Craft's CFO (:func:`cache_fix_overhead`, Eq. 12) with ``beta * kappa`` in place of
    ``beta``, where ``kappa`` is the share of the new prefix tokens (``new_lens``) that were also in the old prefix:
    a departure from the paper, whose beta (the share of the old outside attention going to chunks still before
    the chunk) cannot see a chunk added before it (after ``[A]``, reused after ``[A, B]``: beta = 1, gamma = 0, so
    Eq. 12 gave CFO 0, no recompute, although B's tokens were never attended to); with no chunk added (every new
    prefix token was in the old prefix) kappa = 1 and Eq. 12 is unchanged.  ``beta = 0`` for an inexact
    variant (its rows approximate themselves) or one of another system prompt, captured alone or not; for an exact
    variant of this system prompt captured alone (no prefix chunk, where beta cannot see the added context)
    :func:`alone_fix_overhead`'s proxy ``alpha * (CCI - 0.5) * 2`` (ALGORITHMS.md §5.3, the proxy for those only).
    ``alpha=None``: ragkit's budget weight ``(2 CCI - 1) * (1 - beta' * kappa)``, with the same ``kappa``;
    ``2 CCI - 1`` for an inexact variant.  Under another system prompt every chunk token saw another context, so
    nothing of the old context counts as kept (``beta' = 0``).
    """
    same_sys = variant.sys_id == sys_id
    if same_sys and variant.exact and tuple(new_prefix) == tuple(variant.prefix_ids):
        return 0.0, True
    old = set(variant.prefix_ids)
    tot = sum(new_lens)
    kappa = sum(n for c, n in zip(new_prefix, new_lens) if c in old) / tot if tot else 1.0
    if alpha is not None:
        if not (same_sys and variant.exact):  # rows that are approximate themselves (inexact) or saw another system
            # prompt keep nothing of their context (beta' = 0): Eq. 12 gives CFO = alpha * CCI, captured alone or not
            return cache_fix_overhead(variant.cci, 0.0, 0.0, alpha), False
        if not variant.prefix_ids:  # exact, captured alone under this system prompt: beta = 1 whatever came before,
            # so ALGORITHMS.md §5.3's proxy (the one it gives for chunks prefilled alone after S)
            return alone_fix_overhead(variant.cci, alpha), False
        beta = prefix_overlap(variant.inter, variant.prefix_ids, new_prefix)
        gamma = order_penalty(variant.prefix_ids, new_prefix)
        return cache_fix_overhead(variant.cci, beta * kappa, gamma, alpha), False
    if not variant.exact:  # its rows are approximate themselves: none of its context counts as kept, as for a
        # variant captured alone (beta = 1 had made an inexact variant after the same prefix need nothing)
        return float(np.clip(2 * variant.cci - 1, 0, 1)), False
    beta = prefix_overlap(variant.inter, variant.prefix_ids, new_prefix) if same_sys else 0.0
    gamma = order_penalty(variant.prefix_ids, new_prefix)
    return float(np.clip((2 * variant.cci - 1) * (1 - beta * (1 - gamma) * kappa), 0, 1)), False


# ----------------------------------------------------------------------------- variant
@dataclass
class ChunkVariant:
    """One stored context variant of a chunk (see "Storage layout" in the module docstring).

    Attributes
    ----------
    keys, values : torch.Tensor, shape ``(n_layers, n_kv_heads, n_tokens, head_dim)``
        The chunk's key and value rows (keys after RoPE at positions ``start .. start + n_tokens - 1``), in
        the store's ``storage_dtype`` once stored.
    start : int
        Absolute position of the chunk's first token when the rows were computed.
    prefix_ids, prefix_lens : tuple of str, tuple of int, length ``n_prefix``
        Keys of the chunks before it (``S_old``), in order, and their token counts.
    inter : ndarray float32, shape ``(n_layers, n_prefix)``
        Attention mass from the chunk's tokens to each prefix chunk, per layer (Cache-Craft Eq. 3).
    intra : ndarray float32, shape ``(n_layers,)``
        Attention mass from the chunk to itself, per layer (Eq. 4).
    sys_inter : ndarray float32, shape ``(n_layers,)``
        Attention mass to the system prompt, the sink (position 0) excluded; ``sys_len`` its tokens.
    token_scores : ndarray float32, shape ``(n_tokens,)``
        Per-token outside attention averaged over layers (Eq. 14): which tokens to recompute first.
    cci : float
        Cache Context Impact, :func:`compute_cci`, in ``[0.5, 1)``.
    sys_id : str
        Digest of the system-prompt token ids before the prefix.
    exact, exact_at : bool, str
        Whether the rows are a full prefill's of this context; the dtype they are exact at (see below).
    reuse, last_tick, stored, cfo_sum, cfo_n, dirty
        The store's bookkeeping: decayed reuse count, request of its last use, admission count, the sum
        and count of the CFOs of its reuses (:attr:`mean_cfo`), and whether its disk-tier file (if any) is
        behind it (put or reused since it was written or read: written by the next flush).

    The attention masses are softmax weights averaged over query heads and summed over the chunk's
    queries (unitless, in ``[0, n_tokens]``); an empty array (``(0, 0)``, ``(0,)``) when not captured.
    """

    keys: torch.Tensor
    values: torch.Tensor
    start: int
    prefix_ids: tuple[str, ...] = ()
    prefix_lens: tuple[int, ...] = ()
    inter: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    intra: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    sys_inter: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    sys_len: int = 0
    token_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    cci: float = 0.5
    sys_id: str = ""
    exact: bool = True
    #: when the rows are a full prefill's rounded to a dtype less precise than the store holding the variant
    #: keeps (read from such a file: ``exact`` is then False), that dtype's name; written with the file, so a
    #: store of that dtype reads it as exact again
    exact_at: str = ""
    # bookkeeping for the cache manager
    reuse: float = 0.0
    last_tick: int = 0
    #: when the store admitted it (a running count, not saved; the disk tier keeps the write time):
    #: utility ties go oldest first
    stored: int = 0
    cfo_sum: float = 0.0
    cfo_n: int = 0
    #: held in memory with something its disk-tier file does not say (new, replaced, or reused since it was written or
    #: read): what :meth:`ChunkKVCache.flush` writes; set by the store
    dirty: bool = field(default=False, init=False, repr=False, compare=False)
    #: the key the store holds it under (set as it is stored or read from the disk tier): where
    #: :meth:`ChunkKVCache.touch` finds its file once it has left the memory tier
    stored_under: str = field(default="", init=False, repr=False, compare=False)
    #: the identity (:func:`_file_ident`) of its disk-tier file when the store last read it from there or wrote it
    #: (``None`` before either): :meth:`ChunkKVCache.touch` rewrites that file only while it is still this one
    disk_ident: tuple[int, ...] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.keys.shape != self.values.shape or self.keys.ndim != 4:
            raise DataError(
                f"ChunkVariant: keys and values must both have shape (n_layers, n_kv_heads, n_tokens, head_dim); "
                f"got keys {tuple(self.keys.shape)} and values {tuple(self.values.shape)}"
            )
        if len(self.prefix_ids) != len(self.prefix_lens):
            raise DataError(f"ChunkVariant: {len(self.prefix_ids)} prefix ids but "
                            f"{len(self.prefix_lens)} prefix lengths")

    @property
    def n_tokens(self) -> int:
        """Tokens of the chunk (``keys.shape[2]``)."""
        return int(self.keys.shape[2])

    @property
    def nbytes(self) -> int:
        """Bytes of the key and value tensors together (the memory budget's unit; statistics not counted)."""
        return int(self.keys.numel() * self.keys.element_size() * 2)

    @property
    def mean_cfo(self) -> float:
        """Mean Cache Fix Overhead of this variant's reuses (``cfo_sum / cfo_n``), in ``[0, 1]``; 0 before any."""
        return self.cfo_sum / self.cfo_n if self.cfo_n else 0.0

    @property
    def context(self) -> tuple[tuple[str, ...], int, str]:
        """What the rows were computed after: ``(prefix_ids, start, sys_id)``."""
        return tuple(self.prefix_ids), int(self.start), self.sys_id

    def cfo(self, new_prefix: Sequence[str], alpha: float | None = 1.0, sys_id: str | None = None,
            new_lens: Sequence[int] | None = None) -> float:
        """Cache Fix Overhead of reusing this variant after ``new_prefix`` (chunk keys) under the system prompt
        ``sys_id`` (``None``: this variant's own), as :class:`~ragkit.generators.LocalGenerator` with the same
        ``alpha`` costs it: :func:`fix_overhead`'s share (0 for an exact variant of that very context).

        ``new_lens``: the token counts of the ``new_prefix`` chunks, one per key (:func:`fix_overhead`'s ``kappa``,
        the share of the new prefix's tokens that were in the old prefix); needed with ``alpha=None``, and with
        ``alpha`` set where ``new_prefix`` adds a chunk to chunks of the old prefix for an exact variant of this
        system prompt (``kappa < 1`` then scales a ``beta`` that may be above 0, as the generator counts it);
        elsewhere (reordered or dropped chunks only, ``kappa = 1``; no old chunk kept, ``beta = 0``; an inexact
        variant or another system prompt, no ``beta``) the lengths change nothing.
        """
        if new_lens is not None and len(new_lens) != len(new_prefix):
            raise ParamError(f"ChunkVariant.cfo: new_lens has {len(new_lens)} entries for {len(new_prefix)} chunks "
                             "in new_prefix; expected one token count per chunk", "new_lens")
        if alpha is None and new_lens is None:
            raise ParamError("ChunkVariant.cfo: alpha=None without new_lens; expected new_lens, the token count of "
                             "each new_prefix chunk (the alpha-unset budget weight counts the new prefix's tokens "
                             "that were in the old prefix), or alpha set", "new_lens")
        old = set(self.prefix_ids)
        added = [c for c in new_prefix if c not in old]
        kappa_counts = (self.exact and (self.sys_id if sys_id is None else sys_id) == self.sys_id
                        and len(added) < len(new_prefix))  # (kappa scales beta, which is 0 with no old chunk kept)
        if new_lens is None and added and kappa_counts:
            raise ParamError(f"ChunkVariant.cfo: new_prefix holds {len(added)} chunk(s) not in the variant's prefix "
                             f"(first {added[0]!r}) and no new_lens; expected new_lens, the token count of each "
                             "new_prefix chunk (an added chunk lowers kappa, the share of the new prefix's tokens "
                             "that were in the old prefix, as the generator counts it)", "new_lens")
        lens = () if new_lens is None else new_lens
        return fix_overhead(self, new_prefix, lens, self.sys_id if sys_id is None else sys_id, alpha)[0]

    # ------------------------------------------------------------------ (de)serialisation
    @property
    def file_stem(self) -> str:
        """Name of this variant's file in the disk tier (a digest of :attr:`context`)."""
        ctx = json.dumps([list(self.prefix_ids), int(self.start), self.sys_id])
        return hashlib.sha256(ctx.encode()).hexdigest()[:16]

    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The variant as safetensors tensors and string metadata."""
        keys, values = self.keys.contiguous(), self.values.contiguous()
        if keys.untyped_storage().data_ptr() == values.untyped_storage().data_ptr():
            values = values.clone()  # two views of one tensor: safetensors refuses shared storage
        tensors = {
            "keys": keys, "values": values,
            "inter": torch.from_numpy(np.ascontiguousarray(self.inter, np.float32)),
            "intra": torch.from_numpy(np.ascontiguousarray(self.intra, np.float32)),
            "sys_inter": torch.from_numpy(np.ascontiguousarray(self.sys_inter, np.float32)),
            "token_scores": torch.from_numpy(np.ascontiguousarray(self.token_scores, np.float32)),
        }
        meta = {
            "start": str(self.start), "prefix_ids": json.dumps(list(self.prefix_ids)),
            "prefix_lens": json.dumps(list(self.prefix_lens)), "sys_len": str(self.sys_len),
            "cci": repr(self.cci), "reuse": repr(self.reuse), "cfo_sum": repr(self.cfo_sum),
            "cfo_n": str(self.cfo_n), "sys_id": self.sys_id, "exact": "1" if self.exact else "0",
        }
        if self.exact_at and not self.exact:
            meta["exact_at"] = self.exact_at
        return tensors, meta

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], meta: dict[str, str]) -> "ChunkVariant":
        """Inverse of :meth:`to_tensors`."""
        return cls(
            keys=t["keys"], values=t["values"], start=int(meta["start"]),
            prefix_ids=tuple(json.loads(meta["prefix_ids"])), prefix_lens=tuple(json.loads(meta["prefix_lens"])),
            inter=t["inter"].numpy(), intra=t["intra"].numpy(), sys_inter=t["sys_inter"].numpy(),
            sys_len=int(meta["sys_len"]), token_scores=t["token_scores"].numpy(), cci=float(meta["cci"]),
            reuse=float(meta["reuse"]), cfo_sum=float(meta["cfo_sum"]), cfo_n=int(meta["cfo_n"]),
            # files written before these fields existed name no system prompt: never reused as exact
            sys_id=meta.get("sys_id", ""), exact=meta.get("exact", "0") == "1",
            exact_at=meta.get("exact_at", "") if meta.get("exact_at", "") in _PRECISION else "",
        )


@dataclass
class CacheStats:
    """Counters of a :class:`ChunkKVCache` (all cumulative).

    Attributes
    ----------
    hits : int
        Look-ups (:meth:`ChunkKVCache.lookup`) that found at least one variant, in memory or on disk.
    misses : int
        Look-ups that found no variant of the chunk.
    disk_hits : int
        Look-ups that read at least one variant from the disk tier (each also counted in ``hits``).
    reused_tokens : int
        Chunk tokens that prefills took from cached rows as stored (:meth:`ChunkKVCache.count_tokens`).
    recomputed_tokens : int
        Chunk tokens that prefills computed: every token of a chunk without a variant, and those of a reused
        variant that were recomputed to fix it.
    evictions : int
        Variants the memory budget put out of the memory tier (a new one too large to fit included): written
        to the disk tier where there is one (``spills``), else dropped.
    spills : int
        Evicted variants written to the disk tier (at most ``evictions``).
    disk_evictions : int
        Variant files the disk budget deleted (``disk_budget_bytes``).
    """

    hits: int = 0
    misses: int = 0
    disk_hits: int = 0
    reused_tokens: int = 0
    recomputed_tokens: int = 0
    evictions: int = 0
    spills: int = 0
    #: variant files the disk budget deleted (``disk_budget_bytes``)
    disk_evictions: int = 0

    @property
    def hit_rate(self) -> float:
        """Share of look-ups that found at least one variant (``hits / (hits + misses)``), in ``[0, 1]``; 0
        before any look-up.  A hit may still recompute some tokens (see ``recomputed_tokens``)."""
        n = self.hits + self.misses
        return self.hits / n if n else 0.0

    def as_dict(self) -> dict[str, float]:
        """The counters by name (ints), plus ``"hit_rate"`` (a float), e.g. for a JSON report."""
        return {**self.__dict__, "hit_rate": self.hit_rate}


# ----------------------------------------------------------------------------- the store
class ChunkKVCache:
    """Chunk-cache store with a memory byte budget, a disk tier and context variants.

    The store of Cache-Craft style chunk reuse (Agarwal et al., "Cache-Craft: Managing Chunk-Caches for
    Efficient Retrieval-Augmented Generation", arXiv 2502.15734; see the module docstring).

    Parameters
    ----------
    model_id, tokenizer_id : str
        Identity of the model and tokenizer whose rows this cache holds (part of every key;
        checked against the disk manifest).
    budget_bytes : int or None, default=None
        Memory budget for the key/value tensors; ``None`` means unbounded.
    storage_dtype : {"float32", "float16"}, default="float32"
        Dtype of stored keys/values (float16 halves the memory; values are cast back to the
        model dtype on reuse).  Spelled as ``Generate`` reads it: ``fp16``, ``f16``, ``half`` (any
        case) or ``numpy.float16`` is ``"float16"``, ``fp32`` / ``f32`` ``"float32"``; kept as the
        canonical name.
    max_variants : int, default=3
        Context variants kept per chunk; beyond that the one of lowest utility among the older
        ones is dropped (a new variant is always admitted).
    half_life : float, default=64
        Half-life of the exponentially decayed reuse count, in cache requests: chunk look-ups
        (:meth:`lookup`), not prompts; a prompt looks up each of its chunks, so with 5 chunks per
        prompt (``generate``'s ``top_k=5``) the default 64 is about 13 prompts.
    disk_dir : str or Path or None
        Folder of the disk tier (created if missing; a folder holding a ``manifest.json`` that is
        not a chunk cache's is refused).  Evicted variants are spilled there and read back on a
        memory miss; what is still in memory is written by :meth:`flush`, and when the store is
        garbage-collected or the process exits.
    disk_budget_bytes : int or None, default=None
        Size limit of the disk tier's variant files, bytes (every writer's: stores of other processes may
        share the folder); past it the files of lowest utility are deleted, down to 90% of it (see "Disk
        budget" in the module docstring).  ``None``: unbounded.  Needs ``disk_dir``.
    disk_half_life_s : float, default=3600
        Half-life, in seconds of wall time since its last use, of the utility of a disk variant written by
        another store (another process, an earlier run): what ages the files of one-shot processes, which
        serve too few requests for ``half_life`` to (see "Utility on disk" in the module docstring).
        ``math.inf``: no wall-clock decay.
    model_name : str or None, default=None
        A readable name of the model (its path or Hugging Face id), for people only: written in the disk
        tier's manifest (``"model_name"``) beside ``model_id`` and shown, with the fingerprints, when a store
        or folder of another model is refused.  Not part of the identity (a copied model folder keeps its
        caches); a manifest without it (written by an older ragkit) loads as before.

    The public methods hold a per-store lock, so generators on several threads may share one
    store.

    Examples
    --------
    >>> cache = ChunkKVCache("m", "t", budget_bytes=1 << 20)
    >>> cache.stats.hit_rate
    0.0
    """

    def __init__(self, model_id: str, tokenizer_id: str, *, budget_bytes: int | None = None,
                 storage_dtype: StorageDtype = "float32", max_variants: int = 3, half_life: float = 64.0,
                 disk_dir: str | Path | None = None, disk_budget_bytes: int | None = None,
                 disk_half_life_s: float = 3600.0, model_name: str | None = None) -> None:
        dtype = storage_dtype_name(storage_dtype)
        if dtype is None:
            raise ParamError(f"ChunkKVCache: storage_dtype={storage_dtype!r}; expected {STORAGE_DTYPE_EXPECTED}",
                             "storage_dtype")
        if not budget_ok(budget_bytes):
            raise ParamError(f"ChunkKVCache: budget_bytes={budget_bytes!r}; expected {BUDGET_EXPECTED}", "budget_bytes")
        if not budget_ok(disk_budget_bytes):
            raise ParamError(f"ChunkKVCache: disk_budget_bytes={disk_budget_bytes!r}; expected {DISK_BUDGET_EXPECTED}",
                             "disk_budget_bytes")
        check_disk_budget_has_dir("ChunkKVCache", disk_budget_bytes, disk_dir)
        if not (_is_int(max_variants) and max_variants >= 1):
            raise ParamError(f"ChunkKVCache: max_variants={max_variants!r}; expected an int >= 1", "max_variants")
        if disk_dir is not None and (not isinstance(disk_dir, (str, os.PathLike)) or os.fspath(disk_dir) == ""):
            raise ParamError(f"ChunkKVCache: disk_dir={disk_dir!r}; expected a folder path (an empty one names the "
                             "working folder: write '.' for that), or None for no disk tier", "disk_dir")
        if isinstance(half_life, bool) or not isinstance(half_life, (int, float)) or not 0 < half_life < math.inf:
            raise ParamError(f"ChunkKVCache: half_life must be a positive finite number of requests; got {half_life!r}",
                             "half_life")
        if (isinstance(disk_half_life_s, bool) or not isinstance(disk_half_life_s, (int, float))
                or not 0 < disk_half_life_s <= math.inf):
            raise ParamError(f"ChunkKVCache: disk_half_life_s must be a positive number of seconds (math.inf: no "
                             f"wall-clock decay); got {disk_half_life_s!r}", "disk_half_life_s")
        if model_name is not None and not isinstance(model_name, str):
            raise ParamError(f"ChunkKVCache: model_name={model_name!r}; expected a str (the model's path or Hugging "
                             "Face id), or None", "model_name")
        self.model_id = model_id
        self.tokenizer_id = tokenizer_id
        self.model_name = model_name
        self.disk_half_life_s = float(disk_half_life_s)
        #: wall time of the store's opening, ns: when its variants used before its first request were used
        self._opened_ns = time.time_ns()
        self.budget_bytes = None if budget_bytes is None else int(budget_bytes)
        self.disk_budget_bytes = None if disk_budget_bytes is None else int(disk_budget_bytes)
        #: bytes of the disk tier's variant files when this store last counted them, plus what it wrote since
        #: (``None``: not counted yet): a spill that takes it past ``disk_budget_bytes`` trims the folder
        self._disk_bytes: int | None = None
        self.storage_dtype: StorageDtype = dtype
        self.max_variants = int(max_variants)
        self.half_life = half_life
        self.stats = CacheStats()
        self._mem: dict[str, list[ChunkVariant]] = {}
        self._bytes = 0
        self._tick = 0
        self._n_stored = 0
        self._store_id = secrets.token_hex(8)  # whose request count a file's last_tick is
        self._pid = os.getpid()  # a forked child counts its own requests: it takes a new store id
        # (wall time, request) marks, every _clock_step requests: when a file of another store was written,
        # in this store's request count
        step = 64.0 * half_life / _CLOCK_LEN
        self._clock_step = math.ceil(min(max(step, 1.0), 2.0 ** 40)) if not math.isnan(step) else 1
        self._clock_ns = array("q")
        self._clock_tick = array("q")
        self._lock = threading.RLock()
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        #: the disk tier's folder cannot be written (a cache shipped read-only, warned about as it opened): its
        #: variants are read, never written, deleted or trimmed; what this store computes stays in memory
        self._read_only = False
        if self.disk_dir is not None:
            self._open_disk(self.disk_dir)
            # written when the store goes (garbage-collected, or alive at the exit): not the store but its
            # __dict__ is referenced, so the finalizer does not keep it alive
            weakref.finalize(self, _flush_dropped, self.__dict__)

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        """A pickle (or ``copy``) holds the store's settings, not its variants: the copy starts with an empty memory
        tier and opens the same ``disk_dir``, whose variants it finds again (a pickle failed on the lock)."""
        return _rebuilt, ({"model_id": self.model_id, "tokenizer_id": self.tokenizer_id,
                           "budget_bytes": self.budget_bytes, "storage_dtype": self.storage_dtype,
                           "max_variants": self.max_variants, "half_life": self.half_life, "disk_dir": self.disk_dir,
                           "disk_budget_bytes": self.disk_budget_bytes, "disk_half_life_s": self.disk_half_life_s,
                           "model_name": self.model_name},)

    # ------------------------------------------------------------------ identity
    def key(self, token_ids: Sequence[int] | np.ndarray | torch.Tensor) -> str:
        """The cache key of a chunk's token ids for this model and tokenizer."""
        return chunk_key(token_ids, self.model_id, self.tokenizer_id)

    def check_owner(self, model_id: str, tokenizer_id: str, where: str = "", model_name: str | None = None) -> None:
        """Raise :class:`CacheModelMismatchError` unless the cache belongs to this model/tokenizer (``model_name``,
        a readable name of the model given, is shown beside its fingerprint)."""
        if (model_id, tokenizer_id) != (self.model_id, self.tokenizer_id):
            raise CacheModelMismatchError(
                f"{where or 'ChunkKVCache'}: this chunk cache holds rows of model "
                f"{model_label(self.model_id, self.model_name)} with tokenizer {self.tokenizer_id!r}, but it was "
                f"given to model {model_label(model_id, model_name)} with tokenizer {tokenizer_id!r}; use a separate "
                f"cache (or disk_dir) per model"
            )

    # ------------------------------------------------------------------ sizes
    @property
    def nbytes(self) -> int:
        """Bytes of key/value tensors held in memory."""
        return self._bytes

    def __len__(self) -> int:
        """Number of variants held in memory."""
        with self._lock:
            return sum(len(v) for v in self._mem.values())

    def __contains__(self, key: str) -> bool:
        with self._lock:
            if key in self._mem:
                return True
        return self.disk_dir is not None and (self.disk_dir / key).is_dir()

    # ------------------------------------------------------------------ access
    def lookup(self, key: str, n_tokens: int | None = None) -> list[ChunkVariant]:
        """All variants of ``key``: those in memory, then the disk variants of other contexts.

        Counts a hit or a miss (and a disk hit when a variant came from disk).  Variants read
        from disk are returned even when the memory budget cannot hold them; those that fit
        are kept in memory.  With ``n_tokens`` (the chunk's length), a variant of another length
        is not the chunk's (a file of an older ragkit, which did not name its chunk, copied into
        another chunk's folder): it is dropped, its disk file deleted, with a warning on the
        ``ragkit`` logger.
        """
        with self._lock:
            return self._lookup(key, n_tokens)

    def _lookup(self, key: str, n_tokens: int | None = None) -> list[ChunkVariant]:
        self._tick += 1
        if self._tick % self._clock_step == 0:
            self._mark_clock()
        if n_tokens is not None:
            self._drop_other_lengths(key, list(self._mem.get(key, ())), n_tokens)
        variants = list(self._mem.get(key, ()))
        room = self.max_variants - len(variants)
        if self.disk_dir is not None and room > 0:  # max_variants in memory: no disk file is opened
            # a chunk holds max_variants: the most useful, ranked by their headers before any tensor is read
            from_disk = self._read_disk(key, skip={v.file_stem for v in variants}, limit=room)
            if n_tokens is not None:
                from_disk = [v for v in from_disk if not self._drop_other_lengths(key, [v], n_tokens)]
            if from_disk:
                self.stats.disk_hits += 1
                pinned: list[ChunkVariant] = []  # read by this lookup: kept in memory as far as they fit
                for v in from_disk:
                    v.last_tick = self._tick
                    v.stored_under = key  # (also where it does not fit in memory: touch finds its file)
                    if self._insert(key, v, from_disk=True, pinned=pinned):
                        pinned.append(v)
                variants += from_disk
        if not variants:
            self.stats.misses += 1
            return []
        self.stats.hits += 1
        return variants

    def _drop_other_lengths(self, key: str, variants: list[ChunkVariant], n_tokens: int) -> bool:
        """Drop those of ``variants`` (of ``key``, in memory or just read from disk) whose length is not
        ``n_tokens``, the chunk's, their disk files with them, with a warning; whether any was dropped."""
        dropped = False
        for v in variants:
            if v.n_tokens == n_tokens:
                continue
            dropped = True
            where = f"{self.disk_dir / key / f'{v.file_stem}.safetensors'}: " if self.disk_dir is not None else ""
            _log.warning(f"{where}chunk-cache variant of {v.n_tokens} tokens under key {key}, whose chunk has "
                         f"{n_tokens}: not this chunk's rows (a file copied into another chunk's folder); deleted, "
                         "its chunk is computed again")
            lst = self._mem.get(key, [])
            i = next((i for i, x in enumerate(lst) if x is v), None)
            if i is not None:
                self._drop(key, i, spill=False, forget=True)
            elif self.disk_dir is not None and not self._read_only:
                (self.disk_dir / key / f"{v.file_stem}.safetensors").unlink(missing_ok=True)
        return dropped

    def touch(self, variant: ChunkVariant, cfo: float) -> None:
        """Record one reuse of ``variant`` (one :meth:`lookup` returned) with the given Cache Fix Overhead
        (decayed count).

        A variant that left the memory tier since it was looked up (spilled to make room for a later
        lookup's or :meth:`put`'s variant, or read from disk without room in memory) has its disk file
        rewritten with the new count, as a spill writes it: otherwise the reuse was lost with the object.
        Only while that file is still the one it was read from or written to (:attr:`ChunkVariant.disk_ident`):
        one replaced since (a newer variant of the same context, another store's upgrade) or deleted (dropped,
        trimmed) is left as it is, the reuse recorded on the object alone.  Where the memory tier holds that
        variant again (read back from its file meanwhile), the reuse is recorded on the copy in memory.
        """
        with self._lock:
            key = variant.stored_under
            held = self._mem.get(key, ())
            if key and not any(x is variant for x in held):
                again = next((x for x in held if x.file_stem == variant.file_stem), None)
                if again is not None:  # read back from its file since: that copy is the store's
                    self._bump(again, cfo)
                    return
                self._bump(variant, cfo)
                ident = variant.disk_ident
                if self.disk_dir is not None and not self._read_only and ident is not None and \
                        _file_ident(self.disk_dir / key / f"{variant.file_stem}.safetensors") == ident:
                    # (checked again as the new file is renamed in: one replaced or deleted meanwhile stays so)
                    self._write_disk(key, variant, only_over=ident)
                return
            self._bump(variant, cfo)

    def _bump(self, variant: ChunkVariant, cfo: float) -> None:
        """:meth:`touch`'s update of ``variant``'s decayed reuse count and CFO sums."""
        decay = 0.5 ** ((self._tick - variant.last_tick) / self.half_life)
        variant.reuse = variant.reuse * decay + 1.0
        variant.last_tick = self._tick
        variant.cfo_sum += cfo
        variant.cfo_n += 1
        variant.dirty = True  # its file (if any) holds the count before this reuse

    def count_tokens(self, reused: int, recomputed: int) -> None:
        """Add a prefill's chunk tokens taken from the cache (``reused``) and computed again
        (``recomputed``) to :attr:`stats`, under the store's lock (generators may share a store)."""
        with self._lock:
            self.stats.reused_tokens += reused
            self.stats.recomputed_tokens += recomputed

    def put(self, key: str, variant: ChunkVariant) -> ChunkVariant:
        """Store a new variant of ``key`` (cast to the storage dtype; not exact when its rows are of a less
        precise dtype); returns the stored object.

        A variant of the same context (:attr:`ChunkVariant.context`) held in memory is
        replaced, unless it is exact and the new one is not: then the old one is kept and
        returned (also when the exact one is in the disk tier).  The replaced variant's reuse
        history (decayed reuse count, CFO) carries over to the new one, whether it was in memory or
        only in the disk tier.  A variant larger than the
        whole memory budget is spilled to the disk tier (dropped without one) at once; the
        variants in memory stay.
        """
        with self._lock:
            self._to_storage_dtype(variant)  # (rows less precise than the storage dtype: not exact here)
            existing = self._mem.get(key, [])
            if existing and existing[0].keys.shape[::2] != variant.keys.shape[::2]:
                raise DataError(
                    f"ChunkKVCache.put: variant of shape {tuple(variant.keys.shape)} does not match the stored "
                    f"variants of shape {tuple(existing[0].keys.shape)} for key {key}"
                )
            same = [i for i, v in enumerate(existing) if v.context == variant.context]
            if same and existing[same[0]].exact and not variant.exact:
                return existing[same[0]]
            history = None
            if not same and self.disk_dir is not None:
                f = self.disk_dir / key / f"{variant.file_stem}.safetensors"
                on_disk = None if variant.exact else self._read_file(f, exact_only=True)
                if on_disk is not None:  # an exact variant of this context sits in the disk tier: keep it
                    on_disk.last_tick = self._tick
                    self._insert(key, on_disk, from_disk=True)
                    return on_disk
                history = self._disk_history(f)  # one of this context only on disk: replaced, its history kept
            if same:  # the same chunk in the same context, computed again: its reuse history carries over
                old = existing[same[0]]  # its count decayed to now, as a disk one's is (the new one counts as used now)
                history = (old.reuse * self._decay(old.last_tick), old.cfo_sum, old.cfo_n)
            if history is not None:
                variant.reuse, variant.cfo_sum, variant.cfo_n = history
            for i in reversed(same):
                self._drop(key, i, spill=False)
            variant.last_tick = self._tick
            variant.dirty = True  # not in the disk tier yet (or its file is of the variant it replaces)
            self._insert(key, variant, from_disk=False)
            return variant

    def _exact_here(self, exact: bool, exact_at: str, rows_dtype: str) -> tuple[bool, str]:
        """``(exact, exact_at)`` in this store of rows stored as ``rows_dtype`` (a torch dtype name) that were
        ``exact``, or exact at the dtype ``exact_at``: exact when the precision they are exact at (the less
        precise of the two) is at least the storage dtype's; otherwise inexact, ``exact_at`` naming it."""
        if rows_dtype not in _PRECISION:
            return False, ""
        if exact:
            at = rows_dtype
        elif exact_at in _PRECISION:
            at = _coarser(exact_at, rows_dtype)
        else:
            return False, ""
        if _PRECISION[at] >= _PRECISION[self.storage_dtype]:
            return True, ""
        return False, at

    def _to_storage_dtype(self, v: ChunkVariant) -> None:
        """Cast ``v``'s rows to the storage dtype, in place; rows stored less precisely than that are not
        exact here (see "Precision" in the module docstring)."""
        rows = str(v.keys.dtype).removeprefix("torch.")
        v.exact, v.exact_at = self._exact_here(v.exact, v.exact_at, rows)
        dt = _DTYPES[self.storage_dtype]
        v.keys = v.keys.detach().to(dt).contiguous()
        v.values = v.values.detach().to(dt).contiguous()

    def _insert(self, key: str, variant: ChunkVariant, *, from_disk: bool,
                pinned: Sequence[ChunkVariant] = ()) -> bool:
        """Add ``variant`` to the memory tier, evicting others (never ``pinned``) to fit the budget.

        A variant that cannot fit next to ``pinned`` is not added: one read from disk stays
        where it is, a new one is spilled to disk (dropped without a disk tier).  Returns
        whether the variant was added.
        """
        variant.stored_under = key
        if self.budget_bytes is not None and variant.nbytes + sum(p.nbytes for p in pinned) > self.budget_bytes:
            if not from_disk:
                self._evict_one(key, variant)
            return False
        lst = self._mem.setdefault(key, [])
        lst.append(variant)
        self._n_stored += 1
        variant.stored = self._n_stored
        self._bytes += variant.nbytes
        if not from_disk and self.disk_dir is not None and not self._read_only:
            # a new context: max_variants in memory and on disk together (a read-only tier's files stay: memory alone)
            self._cap_variants(key, variant)
        elif len(lst) > self.max_variants:  # the new variant is admitted: it has had no chance to be reused yet
            worst = min(range(len(lst) - 1), key=lambda i: self._rank(lst[i]))
            self._drop(key, worst, spill=False, forget=True)
        self._enforce_budget(protect={id(variant), *(id(p) for p in pinned)})
        return True

    def _cap_variants(self, key: str, new: ChunkVariant) -> None:
        """Keep ``key`` at ``max_variants`` in memory and on disk together once ``new`` is in memory: the
        older variants of lowest utility go, from memory (their files with them) or from the disk tier
        (at equal utility a disk one first, the oldest written; then the least recently used in memory)."""
        assert self.disk_dir is not None
        lst = self._mem[key]
        in_mem = {v.file_stem for v in lst}
        files = self._disk_files(key)
        extra = len(in_mem | set(files)) - self.max_variants
        if extra <= 0:
            return
        cands: list[tuple[tuple[float, ...], int, ChunkVariant | tuple[Path, tuple[int, ...] | None]]] = []
        for v in lst:
            if v is not new:  # the new variant is admitted: it has had no chance to be reused yet
                cands.append(((self._utility(v), 1.0, float(v.last_tick), float(v.stored)), len(cands), v))
        for (utility, written), f, ident in self._rank_files(files, skip=in_mem):
            cands.append(((utility, 0.0, written, 0.0), len(cands), (f, ident)))
        for _, _, c in sorted(cands)[:extra]:
            if isinstance(c, ChunkVariant):
                self._drop(key, next(i for i, x in enumerate(lst) if x is c), spill=False, forget=True)
            else:
                _unlink_unchanged(*c)

    def _rank_files(self, files: dict[str, Path],
                    skip: set[str]) -> list[tuple[tuple[float, float], Path, tuple[int, ...] | None]]:
        """``((utility, written ns), path, identity)`` of the disk variants ``files`` whose stem is not in
        ``skip``; the identity (:func:`_file_ident`) is taken before the header is read, so a file rewritten
        after it was ranked is never deleted on the strength of the old header."""
        out = []
        for stem, f in files.items():
            if stem not in skip:
                ident = _file_ident(f)
                out.append((self._file_rank(f), f, ident))
        return out

    def _disk_files(self, key: str) -> dict[str, Path]:
        """``{stem: path}`` of the disk variants of ``key`` (not another writer's temporary files)."""
        assert self.disk_dir is not None
        d = self.disk_dir / key
        if not d.is_dir():
            return {}
        return {f.stem: f for f in d.glob("*.safetensors") if not f.name.startswith(".")}

    def _evict_one(self, key: str, variant: ChunkVariant) -> None:
        """Spill (or drop) a variant that is not in the memory tier."""
        if self.disk_dir is not None and self._write_disk(key, variant):
            self.stats.spills += 1
        self.stats.evictions += 1

    def _utility(self, v: ChunkVariant) -> float:
        """``(reuse + 0.001) * 0.5 ** (requests since last use / half_life) * (1 - 0.9 CFO) / bytes``:
        the decayed reuse count also decays the floor, so among variants never reused the least
        recently used goes first."""
        return self._utility_of(v.reuse, v.last_tick, v.mean_cfo, v.nbytes)

    def _decay(self, last_tick: int) -> float:
        """Decay of a reuse count last bumped at request ``last_tick``."""
        return 0.5 ** (max(self._tick - last_tick, 0) / self.half_life)

    def _utility_of(self, reuse: float, last_tick: int, mean_cfo: float, nbytes: int) -> float:
        return (reuse + 1e-3) * self._decay(last_tick) * (1.0 - 0.9 * mean_cfo) / max(nbytes, 1)

    def _last_tick_of(self, meta: dict[str, str], written_ns: int) -> int:
        """A file's last use in this store's request count: its ``last_tick`` when this store wrote it.
        A file of another store (another process, an earlier run, a forked child) counts the requests
        this store served since it was written (all of them when it was written before this store
        opened), plus those its writer served between its last use and the write (``tick - last_tick``;
        none for a file that does not keep them)."""
        if meta.get("store") == self._sid():
            return int(meta["last_tick"])
        idle = max(int(meta["tick"]) - int(meta["last_tick"]), 0) if "tick" in meta and "last_tick" in meta else 0
        return self._tick_at(written_ns) - idle

    def _sid(self) -> str:
        """This store's id; a forked child, whose request count goes its own way, takes a new one."""
        if os.getpid() != self._pid:
            self._pid, self._store_id = os.getpid(), secrets.token_hex(8)
        return self._store_id

    def _mark_clock(self) -> None:
        """Note the wall time of this request (see :meth:`_tick_at`)."""
        now = time.time_ns()
        if self._clock_ns and now < self._clock_ns[-1]:  # the wall clock was set back: keep the marks ordered
            now = self._clock_ns[-1]
        self._clock_ns.append(now)
        self._clock_tick.append(self._tick)
        if len(self._clock_ns) > 2 * _CLOCK_LEN:
            del self._clock_ns[:_CLOCK_LEN]
            del self._clock_tick[:_CLOCK_LEN]

    def _tick_at(self, ns: int) -> int:
        """This store's request count at wall time ``ns``: 0 before its first request (or before the
        marks it keeps, which span at least 64 half-lives: the decay there is below 2**-64)."""
        i = bisect_right(self._clock_ns, ns)
        return int(self._clock_tick[i - 1]) if i else 0

    def _ns_at(self, tick: int) -> int:
        """Wall time, ns, of this store's request ``tick`` (its last mark at or before it; the store's
        opening before its first mark): when a variant last used then was used."""
        i = bisect_right(self._clock_tick, tick)
        return int(self._clock_ns[i - 1]) if i else self._opened_ns

    def _wall_decay(self, meta: dict[str, str], written_ns: int) -> float:
        """Wall-clock decay of a disk variant of another store: ``0.5 ** (seconds since its last use /
        disk_half_life_s)``, its last use being its ``used_ns`` (``written_ns`` for files that do not keep
        it), at most 500 half-lives (older files still rank by their reuse count); 1 for this store's own
        files (they decay by its requests, as in memory)."""
        if meta.get("store") == self._sid():
            return 1.0
        used = int(meta["used_ns"]) if "used_ns" in meta else written_ns
        return 0.5 ** min(max(time.time_ns() - used, 0) / 1e9 / self.disk_half_life_s, _WALL_DECAY_MAX)

    def _rank(self, v: ChunkVariant) -> tuple[float, int, int]:
        """Eviction order, lowest first: utility, then least recently used, then oldest stored."""
        return self._utility(v), v.last_tick, v.stored

    def _drop(self, key: str, idx: int, spill: bool, forget: bool = False) -> None:
        """Remove variant ``idx`` of ``key`` from memory; ``spill``: write it to disk;
        ``forget``: delete its disk file too (dropped from the store)."""
        lst = self._mem[key]
        v = lst.pop(idx)
        self._bytes -= v.nbytes
        if spill and self.disk_dir is not None:
            # a variant whose file holds it already (read from disk, not reused since) is not written again, as
            # flush() does not write it
            if v.dirty and self._write_disk(key, v):
                self.stats.spills += 1
        elif forget and self.disk_dir is not None and not self._read_only:
            (self.disk_dir / key / f"{v.file_stem}.safetensors").unlink(missing_ok=True)
        if not lst:
            del self._mem[key]

    def _enforce_budget(self, protect: AbstractSet[int] = frozenset()) -> None:
        """Evict minimum-utility variants (never those whose ``id`` is in ``protect``) until the
        memory tier fits ``budget_bytes``."""
        if self.budget_bytes is None:
            return
        while self._bytes > self.budget_bytes:
            cands = [(self._rank(v), k, i) for k, lst in self._mem.items() for i, v in enumerate(lst)
                     if id(v) not in protect]
            if not cands:  # _insert admits only what fits next to the protected variants
                break
            _, k, i = min(cands)
            self._drop(k, i, spill=True)
            self.stats.evictions += 1

    def clear(self) -> None:
        """Empty the memory tier (the disk tier is left as is)."""
        with self._lock:
            self._mem.clear()
            self._bytes = 0

    # ------------------------------------------------------------------ disk tier
    def _open_disk(self, folder: Path) -> None:
        check_cache_dir(folder)  # a file, or a folder of something else: refused before anything is written
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ArtifactError(f"{folder}: could not create the chunk-cache folder (disk_dir) ({type(e).__name__}: "
                                f"{e.strerror or e}); expected a folder path that can be written") from None
        manifest = folder / "manifest.json"
        meta = check_cache_dir(folder)
        if meta is not None:
            # (a folder without one that cannot be written was refused: the manifest is written below)
            self._read_only = not os.access(folder, os.W_OK | os.X_OK)
            got = (meta.get("model_id"), meta.get("tokenizer_id"))
            if got != (self.model_id, self.tokenizer_id):
                raise CacheModelMismatchError(
                    f"{folder}: this chunk-cache folder was written for model {manifest_model(meta)} with tokenizer "
                    f"{got[1]!r}, but it was opened for model {model_label(self.model_id, self.model_name)} with "
                    f"tokenizer {self.tokenizer_id!r}; use another cache folder for this model (disk_dir; ragkit "
                    "ask: --cache-dir)"
                )
        else:  # written whole or not at all: another process may open the folder at the same moment
            try:
                with atomic_file(manifest) as tmp:
                    tmp.write_text(json.dumps({
                        "model_id": self.model_id, "tokenizer_id": self.tokenizer_id,
                        "format_version": _FORMAT_VERSION,
                        **({"model_name": self.model_name} if self.model_name is not None else {}),
                    }, indent=2), encoding="utf-8")
            except OSError as e:  # (a folder made read-only, or full, since check_cache_dir looked)
                raise ArtifactError(f"{folder}: could not write the chunk-cache manifest {manifest.name} "
                                    f"({type(e).__name__}: {e.strerror or e}); expected a folder the chunk cache "
                                    "can write its files to: use another folder for the chunk cache") from None

    def _write_disk(self, key: str, v: ChunkVariant, trim: bool = True,
                    only_over: tuple[int, ...] | None = None) -> bool:
        """Write ``v`` to the disk tier, its utility's inputs in the metadata, keeping ``key`` at
        ``max_variants`` in memory and on disk together: past it the disk-only variants of lowest
        utility go (ties: oldest written), ``v`` among them unless it is in memory.  With ``trim``, trims the
        tier when this store's estimate of it is past ``disk_budget_bytes`` (or not made yet); a flush trims
        once, after its writes.  Returns whether ``v`` was written (not when it was the one to go, nor in a
        folder that cannot be written: ``v`` is then dropped, as the warning at the opening said).

        ``only_over``: ``v``'s file is replaced only while it is still the file of that identity
        (:func:`_file_ident`); one replaced or deleted since is left as it is (nothing written, ``False``).
        The store's estimate of the tier's bytes grows by the new file's size less the one it replaces."""
        from safetensors.torch import save_file

        assert self.disk_dir is not None
        if self._read_only:
            return False
        d = self.disk_dir / key
        d.mkdir(exist_ok=True)
        in_mem = {x.file_stem for x in self._mem.get(key, ())}
        files = self._disk_files(key)
        extra = len(in_mem | set(files) | {v.file_stem}) - self.max_variants
        gone: dict[str, tuple[int, ...] | None] = {}  # stem: identity of the file that was ranked
        if extra > 0:
            # v's own file is rewritten below
            ranked = [(rank, f.stem, ident) for rank, f, ident in self._rank_files(files, skip=in_mem | {v.file_stem})]
            if v.file_stem not in in_mem:  # the newest written; its older file goes with it
                ranked.append(((self._utility(v), math.inf), v.file_stem,
                               _file_ident(files[v.file_stem]) if v.file_stem in files else None))
            gone = {stem: ident for _, stem, ident in sorted(ranked)[:extra]}
        written = True
        if v.file_stem not in gone:
            tensors, meta = v.to_tensors()
            # key and n_tokens: the digest ties the file to its chunk (one copied into another chunk's folder is
            # damaged there)
            meta.update(model_id=self.model_id, tokenizer_id=self.tokenizer_id, key=key, n_tokens=str(v.n_tokens),
                        store=self._sid(),
                        last_tick=str(v.last_tick), tick=str(self._tick), written_ns=str(time.time_ns()),
                        used_ns=str(self._ns_at(v.last_tick)))
            meta["sha256"] = _file_digest(tensors, meta)  # checked on read: a changed byte is a damaged file
            target = d / f"{v.file_stem}.safetensors"
            for attempt in range(2):
                aside: Path | None = None
                try:
                    with atomic_file(target) as tmp:
                        save_file(tensors, str(tmp), metadata=meta)
                        share_file_like_umask(tmp)  # (safetensors writes owner-only files; the folder may be shared)
                        new = _file_ident(tmp)  # (the rename keeps it: device, inode, size, mtime)
                        if only_over is not None:  # set aside while checked, so the check and the rename see one file
                            fsync_path(tmp)  # (flushed, and given the old file's mode, first: the old file is away
                            _keep_mode(target, tmp)  # only for the rename, not for a flush of megabytes)
                            aside = _set_aside(target, only_over)
                            if aside is None:
                                raise _Superseded
                            old = only_over[2]
                        else:
                            cur = _file_ident(target)
                            old = cur[2] if cur is not None else 0
                    if aside is not None:
                        aside.unlink(missing_ok=True)
                    v.dirty = False
                    v.disk_ident = new
                    if self._disk_bytes is not None and new is not None:
                        self._disk_bytes += new[2] - old  # (a rewrite adds the difference only)
                    break
                except _Superseded:  # replaced or deleted since: left so, this variant not written (the cap and
                    written = False  # the trim below still apply)
                    break
                except Exception:
                    if aside is not None:  # put back the file the failed write was to replace
                        _link_back(aside, target)
                    if attempt or d.is_dir():
                        raise
                    d.mkdir(exist_ok=True)  # another store's trim removed the folder, empty, meanwhile
        for stem, ident in gone.items():
            deleted = _unlink_unchanged(d / f"{stem}.safetensors", ident)  # (it was the file of that identity)
            if deleted and ident is not None and self._disk_bytes is not None:
                self._disk_bytes -= ident[2]
        budget = self.disk_budget_bytes
        if trim and budget is not None and (self._disk_bytes is None or self._disk_bytes > budget):
            self._trim_disk()  # (counts the folder once, then when this store's writes may have passed the budget)
        return v.file_stem not in gone and written

    def _file_rank(self, f: Path) -> tuple[float, float]:
        """``(utility, write time in ns)`` of a disk variant, from its header alone (see the module
        docstring for the defaults of older files); ``(-inf, 0)`` when the header cannot be read."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(f), framework="pt") as fh:
                meta = fh.metadata() or {}
                keys = fh.get_slice("keys")
                nbytes = 2 * math.prod(keys.get_shape()) * _ITEMSIZE.get(keys.get_dtype(), 4)
            written = _written_ns(meta, f)
            cfo_n = int(meta["cfo_n"])
            cfo = float(meta["cfo_sum"]) / cfo_n if cfo_n else 0.0
            return (self._utility_of(float(meta["reuse"]), self._last_tick_of(meta, written), cfo, nbytes)
                    * self._wall_decay(meta, written), float(written))
        except (OSError, SafetensorError, KeyError, ValueError, TypeError):  # damaged, unreadable or removed
            return -math.inf, 0.0  # meanwhile: goes first (unlinked if still there)

    def _disk_history(self, f: Path) -> tuple[float, float, int] | None:
        """``(reuse decayed to now, cfo_sum, cfo_n)`` of the disk variant ``f``, from its header alone;
        ``None`` when there is none (or it cannot be read: it is then replaced as if absent)."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(f), framework="pt") as fh:
                meta = fh.metadata() or {}
                if _misplaced(meta, f, fh.get_slice("keys").get_shape()):  # not this chunk's: no history of it
                    return None
            return (float(meta["reuse"]) * self._decay(self._last_tick_of(meta, _written_ns(meta, f))),
                    float(meta["cfo_sum"]), int(meta["cfo_n"]))
        except (OSError, SafetensorError, KeyError, ValueError, TypeError):
            return None

    def _read_disk(self, key: str, skip: AbstractSet[str] = frozenset(),
                   limit: int | None = None) -> list[ChunkVariant]:
        """The disk variants of ``key`` whose file stem is not in ``skip``; with ``limit``, the ``limit``
        of highest utility (ranked by their headers, so only those are read), best first."""
        files = [f for stem, f in sorted(self._disk_files(key).items()) if stem not in skip]  # skip: in memory
        if limit is not None:
            files.sort(key=self._file_rank, reverse=True)
        out: list[ChunkVariant] = []
        for f in files:
            if limit is not None and len(out) >= limit:
                break
            v = self._read_file(f)
            if v is not None:
                out.append(v)
        return out

    def _read_file(self, f: Path, exact_only: bool = False) -> ChunkVariant | None:
        """Read one variant file, its rows cast to the storage dtype (inexact when the file's are less
        precise: see "Precision" in the module docstring); ``None`` when it is missing, damaged (then deleted,
        with a warning on the ``ragkit`` logger: a miss, computed again), unreadable for this process
        (permissions: a miss, with a warning naming it once per process) or, with ``exact_only``, not exact
        in this store.

        Damaged: cut short, a header or metadata that does not parse, content that differs from the
        ``sha256`` digest of its tensors and metadata written with it (a changed byte would otherwise load
        and serve other keys and values), or metadata naming another chunk than its key folder's (a file
        moved or copied there) or another length than its keys'.  A file written before the digest (or
        the key) was kept has none and is read as before.

        Raises :class:`CacheModelMismatchError` for a file of another model and
        :class:`~ragkit.errors.ArtifactError` when the file cannot be read for another reason (I/O).
        """
        from safetensors import SafetensorError, safe_open

        ident = _file_ident(f)  # before it is opened: a file replaced after this is never taken for the one read
        try:
            with safe_open(str(f), framework="pt") as fh:
                meta = fh.metadata() or {}
                if (meta.get("model_id"), meta.get("tokenizer_id")) != (self.model_id, self.tokenizer_id):
                    # never deleted: it may be another model's valid data, put in this model's folder
                    raise CacheModelMismatchError(
                        f"{f}: chunk-cache file of model {meta.get('model_id')!r} with tokenizer "
                        f"{meta.get('tokenizer_id')!r}, expected model {self.model_id!r} with tokenizer "
                        f"{self.tokenizer_id!r}: another model's file in this model's chunk-cache folder; delete this "
                        "file, or use another cache folder (disk_dir; ragkit ask: --cache-dir)")
                misplaced = _misplaced(meta, f, fh.get_slice("keys").get_shape())
                if misplaced:
                    raise ValueError(misplaced)
                if exact_only:
                    rows = _ST_DTYPES.get(fh.get_slice("keys").get_dtype(), "")
                    if not self._exact_here(meta.get("exact") == "1", meta.get("exact_at", ""), rows)[0]:
                        return None
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
            if "sha256" in meta and _file_digest(tensors, meta) != meta["sha256"]:
                raise ValueError("its content differs from the sha256 digest written with it")
            v = ChunkVariant.from_tensors(tensors, meta)
            self._to_storage_dtype(v)
            # its reuse count decays by the requests it spent on disk: the utility it would have in memory
            # (not by wall time, which ranks the files of other stores: it is used now, its age starts again)
            v.reuse *= self._decay(self._last_tick_of(meta, _written_ns(meta, f)))
            v.last_tick = self._tick
            v.disk_ident = ident
            return v
        except CacheModelMismatchError:
            raise
        except FileNotFoundError:  # removed meanwhile (another process dropped it), or not readable: safetensors
            if os.path.lexists(f) and not os.access(f, os.R_OK):  # reports permission denied as not found
                self._note_unreadable(f)
            return None
        except PermissionError:
            self._note_unreadable(f)
            return None
        except OSError as e:
            raise ArtifactError(f"{f}: could not read this chunk-cache file ({type(e).__name__}: {e}); expected a "
                                "readable safetensors file: check its permissions and the disk") from e
        except (SafetensorError, KeyError, ValueError, TypeError) as e:  # cut short, bad header, metadata or digest
            if self._read_only:  # (said once per file: it stays, and is found again)
                if first_time(_UNREADABLE_NOTED, f"damaged {f}"):
                    _log.warning(f"{f}: damaged chunk-cache file ({type(e).__name__}: {e}); left in place (the "
                                 "folder cannot be written), its chunk is computed again")
                return None
            _log.warning(f"{f}: damaged chunk-cache file ({type(e).__name__}: {e}); deleted, its chunk is computed "
                         "again")
            f.unlink(missing_ok=True)
            return None

    @staticmethod
    def _note_unreadable(f: Path) -> None:
        """Warn, once per process and file, that the variant file ``f`` cannot be read (permissions)."""
        if not first_time(_UNREADABLE_NOTED, str(f)):
            return
        try:
            st = f.stat()
            who = f" (mode {st.st_mode & 0o777:o}, owner uid {st.st_uid})"
        except OSError:
            who = ""
        _log.warning(f"{f}: this process may not read this chunk-cache file{who}; its chunk is computed again (where a "
                     "group shares the folder, its owner can make it group-readable, chmod g+r, or delete it)")

    def flush(self) -> None:
        """Write the in-memory variants that the disk tier does not hold as they are (put or reused since they were
        written or read: :attr:`ChunkVariant.dirty`), then trim the tier to ``disk_budget_bytes`` (no-op without
        ``disk_dir``, or when its folder cannot be written: the warning at the opening said that chunks computed
        now are not kept; done at the process's exit too, see the module docstring).  A variant whose file is
        up to date is not written again (every one was: up to the whole memory tier per flush)."""
        if self.disk_dir is None or self._read_only:
            return
        with self._lock:
            for key, lst in self._mem.items():
                for v in lst:
                    if v.dirty:
                        self._write_disk(key, v, trim=False)
            self._trim_disk()  # once, after all of the flush's writes: they are ranked with the other files

    def _trim_disk(self) -> None:
        """Delete the disk variants of lowest utility (every writer's; ties: oldest written) while the disk
        tier's variant files hold more than ``disk_budget_bytes``, down to 90% of it.  Skipped when another
        store trims the folder (its lock file is held) or without a budget.  Never raises for a file another
        store removed or rewrote meanwhile (it is left alone)."""
        if self.disk_dir is None or self.disk_budget_bytes is None:
            return
        with _try_flock(self.disk_dir / _TRIM_LOCK) as held:
            if not held:  # another store trims it now
                return
            files = _variant_files(self.disk_dir)
            total = sum(size for _, size in files)
            self._disk_bytes = total
            if total <= self.disk_budget_bytes:
                return
            ranked: list[tuple[tuple[float, float], str, int, tuple[int, ...]]] = []
            for f, _ in files:
                ident = _file_ident(f)  # before the header is read: a file rewritten after it was ranked stays
                if ident is not None:  # (gone meanwhile: nothing to delete; its bytes are not counted)
                    ranked.append((self._file_rank(f), str(f), ident[2], ident))
            total = sum(size for _, _, size, _ in ranked)  # the sizes of the files ranked, from the same stat
            ranked.sort()
            goal = int(self.disk_budget_bytes * _DISK_LOW_WATER)
            emptied: set[Path] = set()
            for _, name, size, ident in ranked:
                if total <= goal:
                    break
                f = Path(name)
                _unlink_unchanged(f, ident)
                if not f.exists():
                    total -= size
                    self.stats.disk_evictions += 1
                    emptied.add(f.parent)
            for d in emptied:
                try:
                    d.rmdir()  # only when empty: a writer that finds it gone makes it again
                except OSError:
                    pass
            self._disk_bytes = total

    def _flush_on_close(self, timeout: float = 10.0) -> bool:
        """:meth:`flush` when the store is dropped or the process exits: skipped (``False``) when the folder or
        its manifest is gone (removed on purpose: not created again) or another thread holds the store past
        ``timeout`` seconds, when the folder cannot be written (nothing is tried: the warning at the opening
        said that chunks computed now are not kept), or when no variant changed since the last flush."""
        d = self.disk_dir
        if d is None or self._read_only or not self._mem or not (d / "manifest.json").is_file():
            return False  # nothing held, a read-only folder, or the folder was removed
        if not self._lock.acquire(timeout=timeout):  # a thread still inside (a daemon thread): never hang the exit
            return False
        try:
            if not any(v.dirty for lst in self._mem.values() for v in lst):
                return False  # nothing new since the last flush
            self.flush()
        finally:
            self._lock.release()
        return True

    def __repr__(self) -> str:
        with self._lock:
            return (f"ChunkKVCache(model_id={self.model_id!r}, variants={len(self)}, bytes={self._bytes}, "
                    f"budget_bytes={self.budget_bytes}, storage_dtype={self.storage_dtype!r}, "
                    f"hit_rate={self.stats.hit_rate:.2f})")


def model_label(model_id: str, model_name: str | None = None) -> str:
    """How an error names a model: its fingerprint, and its readable name (path or hub id) where known:
    ``'file-ed21def1e1b1a81a' (/models/SmolLM2.gguf)``."""
    return f"{model_id!r} ({model_name})" if model_name else repr(model_id)


def manifest_model(meta: dict) -> str:
    """:func:`model_label` of the model a chunk-cache manifest names (``model_name`` is absent from the
    manifests of older ragkit versions: the fingerprint alone then)."""
    name = meta.get("model_name")
    return model_label(str(meta.get("model_id")), name if isinstance(name, str) else None)


def check_cache_dir(folder: str | Path) -> dict | None:
    """Check that ``folder`` can be a chunk cache's disk tier, before anything is written there: the
    chunk-cache manifest it holds (a dict), or ``None`` when it holds none (an empty or new folder).

    Raises :class:`~ragkit.errors.ArtifactError` naming the path when ``folder`` (or the nearest part of
    it that exists) is a file, or cannot be written (a read-only file system, no write permission: the
    store writes its manifest there as it opens, and its variant files at spills and exit), or its
    ``manifest.json`` is not a chunk-cache manifest (not a JSON object
    with ``model_id`` and ``tokenizer_id``: another tool's folder, a saved pipeline's), or was written by
    a newer ragkit.  Whether the manifest names the right model is checked when the store opens.

    A chunk-cache folder that cannot be written but holds a manifest is accepted (a cache shipped read-only: its
    chunks are served, new ones are not kept), with a warning on the ``ragkit`` logger said once per folder and
    process, however many times it is checked or opened.
    """
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == folder else f"is below the file {existing}"
        raise ArtifactError(f"{folder}: the chunk-cache folder (disk_dir) {where}; expected a folder (an existing "
                            "chunk-cache folder, an empty one, or one to create)")
    writable = existing is None or os.access(existing, os.W_OK | os.X_OK)
    manifest = folder / "manifest.json"
    if existing is not None and not writable and (existing != folder or not manifest.exists()):  # no new store
        where = "" if existing == folder else f" (its nearest existing folder {existing}, where it would be created)"
        raise ArtifactError(f"{folder}: the chunk-cache folder (disk_dir) cannot be written{where}: "
                            f"{_unwritable_reason(existing)}; expected a folder the chunk cache can write its files "
                            "to: use another folder for the chunk cache")
    if existing != folder:
        return None
    if not manifest.exists():
        # a folder of other files (a models folder, a home directory) is never taken over: the disk tier deletes
        # the files it ranks lowest when it trims, and must never rank another tool's files
        foreign = _foreign_entry(folder)
        if foreign is not None:
            raise ArtifactError(
                f"{folder}: the chunk-cache folder (disk_dir) holds {str(foreign.relative_to(folder))!r} and no "
                "chunk-cache manifest.json; expected a new or empty folder, or one a chunk cache wrote (its trims "
                "delete files, so it never takes over a folder of other files): use another folder for the chunk cache")
        return None
    hint = ("not a chunk-cache folder: use another folder (a new or empty one) for the chunk cache, which writes "
            "its own manifest.json there")
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{manifest}: not a chunk-cache manifest ({e}); {hint}") from None
    except OSError as e:
        raise ArtifactError(f"{manifest}: could not read the chunk-cache manifest ({type(e).__name__}: "
                            f"{e.strerror or e}); check its permissions") from None
    version = meta.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ArtifactError(f"{manifest}: format_version is {version!r}; expected an int (this ragkit writes "
                            f"{_FORMAT_VERSION}): not a chunk-cache manifest of ragkit, or a damaged one")
    if not all(isinstance(meta.get(k), str) for k in ("model_id", "tokenizer_id")):
        raise ArtifactError(f"{manifest}: not a chunk-cache manifest (it names no model_id and tokenizer_id, "
                            f"keys {sorted(meta)[:6]}); {hint}")
    if version > _FORMAT_VERSION:
        raise ArtifactError(f"{manifest}: written by a newer ragkit (format {version}; this ragkit reads "
                            f"up to {_FORMAT_VERSION})")
    # a chunk cache shipped read-only (an image, a shared mount) still serves what it holds; said once per folder
    # and process (a command checks the folder, then opens it: one warning)
    if not writable and first_time(_READ_ONLY_NOTED, os.path.realpath(folder)):
        _log.warning(f"{folder}: the chunk-cache folder cannot be written ({_unwritable_reason(folder)}): its stored "
                     "chunks are reused, chunks computed now are not kept")
    return meta


def _unwritable_reason(folder: Path) -> str:
    """Why ``folder`` cannot be written, in words: a read-only file system, or no write permission."""
    try:
        readonly = bool(os.statvfs(folder).f_flag & getattr(os, "ST_RDONLY", 1))
    except (OSError, AttributeError):  # (no statvfs on Windows)
        readonly = False
    return "it is on a read-only file system" if readonly else "this user has no write permission there"


def _rebuilt(settings: dict[str, Any]) -> ChunkKVCache:
    """A :class:`ChunkKVCache` of ``settings`` (its unpickling: see ``ChunkKVCache.__reduce__``)."""
    model_id, tokenizer_id = settings.pop("model_id"), settings.pop("tokenizer_id")
    return ChunkKVCache(model_id, tokenizer_id, **settings)


def _flush_dropped(state: dict) -> None:
    """``weakref.finalize`` callback of a store with a disk tier, called when the store is garbage-collected
    or, if it is still alive then, when the process exits: write what its memory tier holds (``state`` is the
    store's ``__dict__``, which outlives it; the store itself cannot be referenced).  A failure is one line on
    stderr, never an exception."""
    store = ChunkKVCache.__new__(ChunkKVCache)
    store.__dict__ = state
    try:
        store._flush_on_close()
    except Exception as e:  # noqa: BLE001 -- at exit or in a garbage collection: say so, never raise
        try:
            sys.stderr.write(f"ragkit: the chunk cache {store.disk_dir} could not be written when it was closed "
                             f"({type(e).__name__}: {e}); its new chunks will be computed again\n")
        except Exception:  # noqa: BLE001 -- stderr closed
            pass


def _misplaced(meta: dict[str, str], f: Path, keys_shape: Sequence[int]) -> str:
    """Why the variant file ``f`` (metadata ``meta``, keys of shape ``keys_shape``) does not hold rows of the chunk
    its key folder names, in words; ``""`` when it does, or cannot tell (a file written before ``key`` and
    ``n_tokens`` were kept)."""
    folder = f.parent.name
    if "key" in meta and meta["key"] != folder:
        return (f"it holds the rows of chunk {meta['key']}, not of chunk {folder} whose folder it is in (a file "
                "moved or copied there)")
    if "n_tokens" in meta and (len(keys_shape) != 4 or str(keys_shape[2]) != meta["n_tokens"]):
        return f"its metadata says {meta['n_tokens']} tokens, its keys have shape {list(keys_shape)}"
    return ""


def _written_ns(meta: dict[str, str], f: Path) -> int:
    """When a disk variant was written: its ``written_ns``, else the file's modification time (0 when
    it is gone)."""
    if "written_ns" in meta:
        return int(meta["written_ns"])
    try:
        return f.stat().st_mtime_ns
    except OSError:
        return 0


_VARIANT_FILE = re.compile(r"[0-9a-f]{16}\.safetensors")  # a variant's file (ChunkVariant.file_stem)


def _foreign_entry(folder: Path) -> Path | None:
    """The first file of ``folder`` that a chunk cache does not write (anything but ``manifest.json``, dot-named
    lock and temporary files, and variant files in key folders), or ``None``."""
    try:
        with os.scandir(folder) as it:
            for e in it:
                if e.name.startswith(".") or e.name == "manifest.json":
                    continue
                if not e.is_dir(follow_symlinks=False):
                    return Path(e.path)
                with os.scandir(e.path) as inner:
                    for f in inner:
                        if not (f.name.startswith(".") or (_VARIANT_FILE.fullmatch(f.name)
                                                           and f.is_file(follow_symlinks=False))):
                            return Path(f.path)
    except OSError:
        pass
    return None


def _variant_files(folder: Path) -> list[tuple[Path, int]]:
    """``(path, bytes)`` of every variant file of the disk tier ``folder``: files named as a variant's
    (``ChunkVariant.file_stem``) in its key folders, not the manifest, another writer's temporary files, nor
    anything else put there (a trim deletes only these); files removed meanwhile are left out."""
    out: list[tuple[Path, int]] = []
    try:
        keys = [e.path for e in os.scandir(folder) if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
    except OSError:
        return out
    for k in keys:
        try:
            with os.scandir(k) as it:
                for e in it:
                    if _VARIANT_FILE.fullmatch(e.name) and e.is_file(follow_symlinks=False):
                        try:
                            out.append((Path(e.path), e.stat(follow_symlinks=False).st_size))
                        except OSError:
                            pass
        except OSError:  # removed meanwhile
            pass
    return out


@contextmanager
def _try_flock(path: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on the file ``path`` for the ``with`` block, without waiting: yields whether
    it is held (``True`` where there is no ``fcntl`` or the file system has no locks: nothing to wait for)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # another user's lock file in a shared folder
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield True
            return
    except OSError:
        yield True
        return
    try:
        if _fcntl is not None:
            try:
                _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            except OSError:  # no locks on this file system
                pass
        yield True
    finally:
        os.close(fd)  # (releases the flock)


def _file_ident(f: Path) -> tuple[int, ...] | None:
    """What tells one file at ``f`` from another written there later (``None`` when there is none)."""
    try:
        st = f.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _unlink_unchanged(f: Path, ident: tuple[int, ...] | None) -> bool:
    """Delete ``f`` if it is still the file :func:`_file_ident` saw (``ident``): one another store wrote
    there since is kept.  ``f`` is renamed aside first, so the check and the delete see the same file;
    one that changed is linked back, never over a newer one.  Returns whether it was deleted."""
    aside = _set_aside(f, ident)
    if aside is not None:
        aside.unlink(missing_ok=True)
    return aside is not None


class _Superseded(Exception):
    """:meth:`ChunkKVCache._write_disk` with ``only_over``: the file is no longer the one to replace."""


def _set_aside(f: Path, ident: tuple[int, ...] | None) -> Path | None:
    """Rename ``f`` to a hidden name beside it if it is still the file :func:`_file_ident` saw (``ident``), and
    return that name (the caller deletes it, or puts it back with :func:`_link_back`); ``None``, ``f`` left as it
    is, when it is gone or another file (one another store wrote since)."""
    if ident is None:  # gone when it was listed
        return None
    aside = f.with_name(f".{f.stem}.{os.getpid()}-{secrets.token_hex(4)}.gone")
    try:
        os.rename(f, aside)
    except FileNotFoundError:  # another store deleted it meanwhile
        return None
    if _file_ident(aside) == ident:
        return aside
    _link_back(aside, f)  # rewritten after it was seen: put it back
    return None


def _link_back(aside: Path, f: Path) -> None:
    """Put the file set aside at ``aside`` back at ``f`` (:func:`_set_aside`), never over a newer one there."""
    try:
        try:
            os.link(aside, f)
        except FileExistsError:  # a newer one is there already
            pass
        except OSError:  # no hard links on this file system
            if not f.exists():
                os.replace(aside, f)
    finally:
        aside.unlink(missing_ok=True)


def iter_variants(cache: ChunkKVCache) -> Iterable[tuple[str, ChunkVariant]]:
    """All ``(key, variant)`` pairs of the memory tier, as of the call (a snapshot taken under
    the store's lock, so other threads may use the store meanwhile)."""
    with cache._lock:
        pairs = [(k, v) for k, lst in cache._mem.items() for v in lst]
    return iter(pairs)
