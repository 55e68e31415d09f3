"""On-disk embedding cache keyed by model identity and text hash.

One folder per model key, holding shards (``<uuid>.npy`` vectors + ``<uuid>.keys.npy``
16-byte BLAKE2 digests of the texts).  New vectors are written as a new shard through a
temporary file renamed into place, so concurrent or interrupted writers never corrupt
what is there; the temporary files of a writer killed midway, and the vectors of a shard it was killed
before finishing (no keys file), are removed by the next process of the same host that writes to the
folder (:func:`sweep_stale_tempfiles`).  A second encoding of the same texts with the same model reads
them back and encodes nothing; an encoding interrupted midway keeps the chunks of
:data:`COMPUTE_CHUNK` texts it finished.  Small shards (a text or a few per write: one-document adds, cached
queries) are read into memory rather than memory-mapped, and merged into one once a folder holds more than
:data:`MAX_SMALL_SHARDS` of them (:meth:`EmbeddingCache.compact`), so the files of a folder, and the
descriptors its readers hold, grow with the bytes cached, not with the number of writes.  Nothing is ever
pruned: a folder grows with the distinct texts encoded, and may be deleted at any time.

A folder records the model's width (:data:`WIDTH_FILE`, from the vectors the model computed).  A shard that cannot
serve is set aside, logged (a warning on the ``ragkit`` logger, once per shard file and process) and its texts
encoded again, never served: unreadable (truncated, a header claiming more than the file holds, an object array),
rows and keys of different numbers, vectors of another width than the model's, or NaN / infinite vectors, or (where
the model's vectors are unit length, ``EmbeddingCache(unit_length=True)``) rows that are not, such as the zeroed rows
of data a disk lost (found as its rows are read: :meth:`EmbeddingCache.get`).  Vectors the model computes with NaN or
infinite values are returned but not cached.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import sys
import threading
import time
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, ContextManager, Generic, Iterator, Protocol, Sequence, TypeVar, Union

import numpy as np

from ragkit import _files
from ragkit._files import remove_stale_tempfiles
from ragkit.errors import ParamError

__all__ = ["EmbeddingCache", "ShardStore", "text_digests", "UNREADABLE", "write_shard", "write_cache_files",
           "sweep_stale_tempfiles", "distinct"]

_log = logging.getLogger(__name__)

#: bytes of cached rows :meth:`EmbeddingCache.get` copies at once from a shard (one gather of the whole corpus
#: held a temporary copy of it beside the result: 1.5 GB more at 1M x 384 float32)
GATHER_BYTES = 1 << 24

#: texts :meth:`EmbeddingCache.fetch_or_compute` computes and stores at once: an encoding interrupted midway keeps
#: the chunks it finished (the next one computes only the rest), and holds one chunk's fresh vectors at a time
#: beside the result
COMPUTE_CHUNK = 50_000

#: seconds a shard's vectors without its keys file stay untouched before :func:`sweep_stale_tempfiles` removes
#: them (a writer killed between the renames of its files left them; one writing now renames its keys in
#: moments)
ORPHAN_SHARD_AGE_S = 3600.0

#: how far from 1 the squared norm of a cached row may be where the model's vectors are unit length
#: (:attr:`EmbeddingCache.unit_length`).  Loose on purpose: the check is for rows a lost disk write zero-filled
#: (squared norm 0, or well below 1 for a partly zeroed row), not for rounding.  Float32 rows normalised by the
#: model are within about 1e-6, but a model loaded in bfloat16 (transformers reads config.json's torch_dtype)
#: normalises in bfloat16: squared norms up to ~0.008 off, so a tolerance of 1e-3 refused most of its rows
#: (re-encoded every run, their shards set aside as damaged)
UNIT_TOLERANCE = 0.05

#: bytes below which a shard's vectors file (``<name>.npy``) is small: :meth:`EmbeddingCache` reads such a shard
#: into memory instead of memory-mapping it (a map keeps a file descriptor and a mapping open for the life of the
#: reader: one per shard, and a service caching one query or document per call wrote one shard per call), and
#: merges the small shards of a folder into one when there are more than :data:`MAX_SMALL_SHARDS` of them
SMALL_SHARD_BYTES = 1 << 20

#: small shards (:data:`SMALL_SHARD_BYTES`) a folder of the embedding cache holds at most before
#: :meth:`EmbeddingCache.put` merges them into one (:meth:`EmbeddingCache.compact`): a cache filled one text at a
#: time so keeps at most this many + 1 small shards, whatever the number of writes
MAX_SMALL_SHARDS = 64

#: a file of a shard, ``<32 hex characters>.<part>.npy`` (the vectors: ``<name>.npy``)
_SHARD_FILE = re.compile(r"([0-9a-f]{32})((?:\.[a-z]+)?)\.npy")

#: cache folders this process has swept of stale temporary files (once per folder and process)
_SWEPT: set[Path] = set()
_SWEPT_LOCK = threading.Lock()

#: what ``np.load`` raises on a damaged, half-written or empty shard file (an empty one: EOFError)
UNREADABLE: tuple[type[Exception], ...] = (OSError, ValueError, EOFError)

#: what :func:`write_cache_files` writes: a text, an array (saved as ``.npy``), or a function that writes
#: the file at the temporary path it is given (an array too large to hold in memory at once)
CacheFile = Union[str, np.ndarray, Callable[[Path], None]]


def text_digests(texts: list[str]) -> np.ndarray:
    """16-byte BLAKE2b digest per text, as a ``(n,)`` array of ``np.void16``."""
    out = np.empty(len(texts), dtype="V16")
    for i, t in enumerate(texts):
        out[i] = hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest()
    return out


def atomic_file(path: Path) -> ContextManager[Path]:
    """:func:`ragkit._files.atomic_file` naming its temporary file after this process and host, so that one a
    killed writer leaves is found by :func:`sweep_stale_tempfiles`; flushed to the disk before its rename unless its
    name ends as one of :data:`NOT_FLUSHED` (a file a read refuses when a power loss left it empty or zero-filled)."""
    return _files.atomic_file(path, owner=True, durable=not path.name.endswith(NOT_FLUSHED))


def sweep_stale_tempfiles(folder: Path) -> int:
    """Remove the temporary files that writers of the cache ``folder`` killed midway left there (their
    process ran on this host and has ended: :func:`ragkit._files.remove_stale_tempfiles`), and the files of
    shards without their keys file (``<name>.keys.npy``, renamed last) written more than
    :data:`ORPHAN_SHARD_AGE_S` ago (a writer killed between its renames), once per folder and process; what
    was freed is logged at INFO.  Returns the bytes freed (0 on later calls).  :func:`write_cache_files`
    calls it before writing."""
    folder = Path(folder)
    with _SWEPT_LOCK:
        if folder in _SWEPT:
            return 0
        _SWEPT.add(folder)
    removed = remove_stale_tempfiles(folder) + _remove_orphan_shards(folder)
    freed = sum(size for _, size in removed)
    if removed:
        _log.info("ragkit: removed %d temporary file(s) of ended writers from the cache %s (%s bytes freed)",
                  len(removed), folder, f"{freed:,}")
    return freed


def _remove_orphan_shards(folder: Path) -> list[tuple[Path, int]]:
    """Remove the files ``<name>.npy`` / ``<name>.<part>.npy`` of shards whose ``<name>.keys.npy`` is missing,
    unwritten for :data:`ORPHAN_SHARD_AGE_S`; ``(path, bytes)`` of each removed."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    have = set(names)
    since = time.time() - ORPHAN_SHARD_AGE_S
    removed = []
    for fname in names:
        m = _SHARD_FILE.fullmatch(fname)
        if m is None or m.group(2) == ".keys" or f"{m.group(1)}.keys.npy" in have:
            continue
        path = folder / fname
        try:
            st = path.lstat()
            if st.st_mtime >= since or (folder / f"{m.group(1)}.keys.npy").exists():
                continue
            path.unlink()
        except OSError:
            continue
        removed.append((path, int(st.st_size)))
    return removed


PYTHON_ONLY_ADVICE = ", or pass cache=False"
"""The end of a cache warning that only a Python caller can follow (the command line drops it: it has
``RAGKIT_CACHE``, no ``cache`` argument)."""


def write_shard(folder: Path, key: str, arrays: Sequence[tuple[str, CacheFile]],
                extra: Sequence[tuple[str, CacheFile]] = ()) -> str | None:
    """Write one cache shard: ``<name><suffix>`` per ``(suffix, array or writer)``, each through a
    temporary file renamed into place, in order (put the keys file last: a shard is found through it);
    ``extra``: ``(file name, text, array or writer)`` of the folder written first (the model's width).  The
    informational ``MODEL`` file (the key, for a person looking at the folder) is written only when absent.

    Returns the shard's name, or ``None`` when ``folder`` cannot be written (a read-only or full
    cache): then a ``RuntimeWarning`` says so, what was written of the shard is removed, and the
    caller keeps its vectors uncached instead of losing the work that computed them.
    """
    name = uuid.uuid4().hex
    files: list[tuple[str, CacheFile]] = [*([] if (folder / "MODEL").is_file() else [("MODEL", key)]), *extra]
    ok = write_cache_files(folder, files + [(f"{name}{suffix}", arr) for suffix, arr in arrays],
                           "the vectors are used but not cached. Set RAGKIT_CACHE to a writable folder"
                           + PYTHON_ONLY_ADVICE)
    return name if ok else None


def write_cache_files(folder: Path, files: Sequence[tuple[str, CacheFile]], instead: str,
                      stacklevel: int | None = None) -> bool:
    """Write ``(file name, text, array or writer)`` pairs into the cache ``folder`` (arrays as ``.npy``,
    each file through a temporary file renamed into place, in order).  Returns False when the folder
    cannot be written (a read-only or full cache): the files written are removed and a
    ``RuntimeWarning`` says so, ending with ``instead`` (what the caller does without the cache); it points
    at the first caller outside ragkit (``stacklevel``, when given, counts from this function instead)."""
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        sweep_stale_tempfiles(folder)
        for fname, value in files:
            if isinstance(value, str):
                (folder / fname).write_text(value, encoding="utf-8")
                continue
            with atomic_file(folder / fname) as tmp:
                if isinstance(value, np.ndarray):
                    with open(tmp, "wb") as f:
                        np.save(f, value, allow_pickle=False)
                else:
                    value(tmp)
            written.append(folder / fname)
    except OSError as e:
        for path in written:
            try:
                path.unlink()
            except OSError:
                pass
        warnings.warn(f"ragkit: the cache {folder} cannot be written ({type(e).__name__}: {e}); {instead}",
                      RuntimeWarning, stacklevel=_outside_ragkit() if stacklevel is None else stacklevel)
        return False
    return True


def _outside_ragkit() -> int:
    """The ``stacklevel`` a ``warnings.warn`` made by the caller of this function gives to point at the first
    frame outside the ragkit package (the user's line: a warning pointing into ragkit tells nothing)."""
    frame = sys._getframe(1)  # (the function calling warnings.warn: stacklevel 1)
    level = 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "ragkit":
        frame = frame.f_back
        level += 1
    return level


def load_npy(path: Path) -> np.ndarray:
    """``np.load`` of a cache file (no pickle), after :func:`~ragkit._files.check_npy_size`: a file whose header
    claims more than it holds (one planted ~200-byte ``.keys.npy`` claiming ``(10**12,)``: every encode failed
    allocating 14.6 TiB) raises an :class:`~ragkit.errors.ArtifactError`, one of :data:`UNREADABLE` (an
    ``OSError``), so the reader skips it as it skips a damaged file."""
    _files.check_npy_size(path)
    return np.load(path, allow_pickle=False)


#: cache folders this process has warned to be writable by others (:func:`warn_if_shared`; once per folder)
_SHARED_SAID: set[Path] = set()


def shared_reason(folder: Path) -> str | None:
    """Why someone other than this user may have written the vectors of the cache folder ``folder``: the
    folder, or one of its shard files, belongs to another user (root excepted), or others may write it (world
    writable, or group writable for a group other than this user's own); ``None`` where nothing says so, where
    the folder cannot be listed, and where the platform has no user ids (Windows)."""
    getuid = getattr(os, "getuid", None)
    if getuid is None:
        return None
    uid, gid = getuid(), os.getgid()
    try:
        names = sorted(n for n in os.listdir(folder) if _SHARD_FILE.fullmatch(n))
    except OSError:
        return None
    for path in (folder, *(folder / n for n in names)):  # a loop over the shards' files (one stat each)
        try:
            st = path.lstat()
        except OSError:
            continue
        what = "the folder" if path == folder else f"its file {path.name}"
        if st.st_uid not in (uid, 0):
            return f"{what} belongs to another user (uid {st.st_uid})"
        if st.st_mode & stat.S_IWOTH:
            return f"{what} is writable by every user (mode {stat.filemode(st.st_mode)})"
        if st.st_mode & stat.S_IWGRP and st.st_gid != gid:
            return f"{what} is writable by the group {st.st_gid} (mode {stat.filemode(st.st_mode)})"
    return None


#: the spellings of a boolean environment variable (any case, spaces around ignored); unset or empty is false
_TRUE_WORDS, _FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def env_flag(name: str, true_means: str, false_means: str) -> bool:
    """The environment variable ``name`` as a boolean: 1, true, yes or on (any case) is true; 0, false, no,
    off, empty or unset is false; anything else (``2``, ``y``, ``enable``) is a
    :class:`~ragkit.errors.ParamError` naming the variable, the accepted values and what each means."""
    raw = os.environ.get(name, "")
    word = raw.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ParamError(f"{name}: expected 1, true, yes or on ({true_means}) or 0, false, no, off or empty "
                     f"({false_means}), got {raw!r}")


def env_cache_shared() -> bool:
    """``$RAGKIT_CACHE_SHARED`` as a boolean (:func:`env_flag`): the embedding cache is shared on purpose, so no
    warning that others may write it (:func:`warn_if_shared`)."""
    return env_flag("RAGKIT_CACHE_SHARED", "the embedding cache is shared on purpose: no warning that others may "
                    "write it", "warn")


def warn_if_shared(folder: Path) -> None:
    """Warn (a ``RuntimeWarning``, once per folder and process) when the vectors cached in ``folder`` may come
    from someone else (:func:`shared_reason`).  The cache is trusted input: a text's vectors are found by
    the digest of its text alone, so whoever can write a shard there (or replace one) changes the vectors,
    and the rankings, of the texts it names, silently.  Not refused: a team may share one cache on purpose,
    and says so with ``RAGKIT_CACHE_SHARED=1`` (:func:`env_cache_shared`), which silences the warning."""
    if folder in _SHARED_SAID or env_cache_shared():
        return
    reason = shared_reason(folder)
    if reason is None:
        return
    _SHARED_SAID.add(folder)
    warnings.warn(f"ragkit: the embedding cache {folder} may hold vectors written by someone else: {reason}. "
                  "Its vectors are used as they are (whoever can write there changes the rankings, silently); "
                  "use a cache folder only you can write (RAGKIT_CACHE) if that is not meant, or set "
                  "RAGKIT_CACHE_SHARED=1 if the cache is shared on purpose (a team's)"
                  + PYTHON_ONLY_ADVICE, RuntimeWarning, stacklevel=_outside_ragkit())


#: bytes of a ``.npy`` header as ``np.save`` writes it for a 2-d float32 array (the file's size less its data)
_NPY_HEADER_BYTES = 128


@contextmanager
def _compaction_lock(folder: Path) -> Iterator[bool]:
    """An exclusive ``flock`` on the cache ``folder`` itself, not waited for: yields whether it is held (``False``
    when another process, or another reader of this process, holds it: it is compacting the folder).  Where
    ``flock`` does not exist or does not work (Windows, some network file systems) it yields ``True`` unlocked: a
    compaction removes only shards whose rows it has written first, so two at once waste work, lose nothing."""
    fd = _files._open_dir(folder) if _files.FCNTL is not None else None
    try:
        if fd is not None:
            try:
                _files.FCNTL.flock(fd, _files.FCNTL.LOCK_EX | _files.FCNTL.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            except OSError:
                pass
        yield True
    finally:
        if fd is not None:
            _files._close_dir(fd)


class _Sized(Protocol):
    def __len__(self) -> int: ...


S = TypeVar("S", bound=_Sized)


class DigestIndex:
    """``digest -> (shard number, row)`` as three arrays: the digests sorted (``S16``, 16 bytes each) and an
    ``int32`` shard number and row per digest, looked up with ``np.searchsorted`` (24 bytes per text; a dict of
    digests to tuples held 171).  A digest added again points at its latest place."""

    __slots__ = ("keys", "shard", "row")

    def __init__(self, parts: Sequence[tuple[np.ndarray, int]] = ()) -> None:
        """The index of ``(digests, shard number)`` per shard, later ones winning (and, within a shard, the
        later row of a repeated digest)."""
        if not parts:
            self.keys = np.empty(0, "S16")
            self.shard = np.empty(0, np.int32)
            self.row = np.empty(0, np.int32)
            return
        keys = np.concatenate([_as_s16(k) for k, _ in parts])
        shard = np.concatenate([np.full(len(k), s, np.int32) for k, s in parts])
        row = np.concatenate([np.arange(len(k), dtype=np.int32) for k, _ in parts])
        self.keys, self.shard, self.row = _latest(keys, shard, row)

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, digests: np.ndarray) -> np.ndarray:
        """``(n, 2)`` int64 ``(shard number, row)`` per digest, ``-1`` where absent."""
        q = _as_s16(digests)
        out = np.full((len(q), 2), -1, np.int64)
        if len(self.keys) == 0 or len(q) == 0:
            return out
        order = np.argsort(q)  # (sorted queries search three times faster: each starts where the last ended)
        at = np.empty(len(q), np.intp)
        at[order] = np.searchsorted(self.keys, q[order])
        del order
        np.minimum(at, len(self.keys) - 1, out=at)
        found = self.keys[at] == q
        at = at[found]
        out[found, 0] = self.shard[at]
        out[found, 1] = self.row[at]
        return out

    def add(self, digests: np.ndarray, s: int) -> None:
        """Point ``digests`` (rows ``0..n-1`` of shard ``s``) at that shard, whether indexed before or not."""
        keys, shard, row = _latest(_as_s16(digests), np.full(len(digests), s, np.int32),
                                   np.arange(len(digests), dtype=np.int32))
        at = np.searchsorted(self.keys, keys)
        known = np.zeros(len(keys), bool)
        inside = at < len(self.keys)
        known[inside] = self.keys[at[inside]] == keys[inside]
        self.shard[at[known]] = s
        self.row[at[known]] = row[known]
        new = ~known
        if new.any():  # (one copy of the index: np.insert puts each new digest before its sorted place)
            self.keys = np.insert(self.keys, at[new], keys[new])
            self.shard = np.insert(self.shard, at[new], shard[new])
            self.row = np.insert(self.row, at[new], row[new])


def _is_digests(keys: np.ndarray) -> bool:
    """Whether ``keys`` is a ``(n,)`` array of 16-byte digests (a keys file of another shape is ignored)."""
    return keys.ndim == 1 and keys.dtype.itemsize == 16 and keys.dtype.kind in "VS"


def _as_s16(digests: np.ndarray) -> np.ndarray:
    """16-byte digests (``V16``, as stored) viewed as ``S16``, which sorts and compares as bytes."""
    d = np.ascontiguousarray(digests)
    if not _is_digests(d):
        raise ValueError(f"digests: expected a (n,) array of 16-byte digests (text_digests), got dtype {d.dtype} "
                         f"shape {d.shape}")
    return d.view("S16")


def distinct(digests: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The repeats of ``digests`` ``(n,)``: ``(keep, again, of)``, int64 positions in ``digests``: ``keep`` the first
    place of each distinct digest (in order), ``again`` the other places, ``of`` for each of those the index in
    ``keep`` of its digest's first place (``digests[again] == digests[keep[of]]``).  Vectorised (``np.unique``): a
    caller computes ``keep`` alone, then copies its results to ``again``."""
    _, first, inv = np.unique(_as_s16(digests), return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(first)  # the distinct digests by first place
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    again = np.flatnonzero(first[inv] != np.arange(len(digests)))
    return first[order].astype(np.int64), again.astype(np.int64), rank[inv[again]]


def _latest(keys: np.ndarray, shard: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``keys`` sorted with repeats dropped, each keeping its last ``(shard, row)`` in the order given."""
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    last = np.ones(len(keys), bool)
    np.not_equal(keys[:-1], keys[1:], out=last[:-1])
    order = order[last]
    return keys[last], shard[order], row[order]


def _said(e: BaseException) -> str:
    """An exception as a message names it: ``"ValueError: ..."`` (its text cut at 300 characters)."""
    return f"{type(e).__name__}: {str(e):.300}"


#: the file of an embedding cache folder that records the model's width (its vectors' dimensions), as a decimal
#: number: written by :meth:`EmbeddingCache.put` from the vectors the model computed
WIDTH_FILE = "WIDTH"

#: names (suffixes) of cache files written without ``fsync`` (:func:`atomic_file`): each is checked when read,
#: so that one a power loss left empty or zero-filled is refused, not served: a keys file (renamed last, the shard is
#: found through it) fails to parse or holds zero digests no text has; a token shard's offsets fail to parse or are
#: no non-decreasing run from 0 to the vectors' length (:class:`TokenVectors`); a :data:`WIDTH_FILE` without a
#: positive number is read as absent (the width is then inferred).  The vectors files are flushed: zero-filled
#: vectors are finite numbers that nothing but the unit-length check would refuse.  (Flushing them all cost
#: ~8 ms more per 1-row put.)
NOT_FLUSHED = (".keys.npy", ".offsets.npy", WIDTH_FILE)


def _read_width(path: Path) -> int | None:
    """The width a :data:`WIDTH_FILE` records; ``None`` when it is absent, unreadable or no positive number."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None
    return int(text) if text.isdigit() and 0 < len(text) < 10 and int(text) > 0 else None


def _width_writer(width: int) -> Callable[[Path], None]:
    """A writer of a :data:`WIDTH_FILE` recording ``width`` (:func:`write_cache_files`: atomically)."""
    def write(tmp: Path) -> None:
        tmp.write_text(f"{width}\n", encoding="ascii")
    return write


#: the shard files of the embedding cache this process has warned of setting aside (once per file and process)
_SET_ASIDE_SAID: set[Path] = set()


class ShardStore(Generic[S]):
    """The index shared by the disk caches: ``text digest -> (shard number, row)`` over the shards of
    one model key's folder (each found through its ``<name>.keys.npy``).

    Subclasses open a shard (:meth:`_open`) and say what a shard holds.  Shards are read largest last,
    so a text present in several resolves to the largest (a whole corpus then comes back as one
    memory map); a shard written by this reader is added to its loaded index (its texts resolve to
    it).  One reader is safe to share between threads: the index is read and extended under a lock.
    """

    def __init__(self, root: Path, key: str) -> None:
        self.folder = Path(root) / hashlib.sha1(key.encode()).hexdigest()[:16]
        self.key = key
        self._index: DigestIndex | None = None
        self._shards: list[S] = []
        #: the name of each shard of ``_shards`` (``<name>.keys.npy``), at its number
        self._shard_names: list[str] = []
        #: shard number by the SHA-1 of its keys: a request for exactly one shard's texts finds it whatever
        #: shards the index prefers for them
        self._whole: dict[bytes, int] = {}
        #: the names of the shards the folder held when the index was read, with those this reader wrote since,
        #: served or set aside: a lookup that misses reads the index again when the folder holds others (another
        #: process wrote them since)
        self._listed: set[str] = set()
        #: guards _index and _shards: a shard's number is its position in _shards, which two threads
        #: loading or extending them at once gave to two shards (vectors of other texts were served)
        self._lock = threading.RLock()

    def _open(self, name: str) -> S:
        """The shard ``name`` (memory-mapped); raises one of :data:`UNREADABLE` when damaged."""
        raise NotImplementedError

    def _load_index(self) -> DigestIndex:
        with self._lock:
            if self._index is None:
                self._shards, self._shard_names, self._whole = [], [], {}
                loaded = []
                self._listed = set()
                if self.folder.is_dir():
                    warn_if_shared(self.folder)
                    for keys_path in sorted(self.folder.glob("*.keys.npy")):  # a loop over the shards
                        name = keys_path.name[: -len(".keys.npy")]
                        self._listed.add(name)
                        try:
                            keys = load_npy(keys_path)
                        except FileNotFoundError:
                            continue  # (removed since listed: merged by a compaction)
                        except UNREADABLE as e:  # a shard damaged or empty: ignored, its texts are computed again
                            self._set_aside(name, f"its keys file {keys_path.name} is unreadable ({_said(e)})")
                            continue
                        try:
                            shard = self._open(name)
                        except FileNotFoundError:
                            continue
                        except UNREADABLE as e:
                            self._set_aside(name, f"its vectors file is unreadable ({_said(e)})")
                            continue
                        unfit = self._unfit(keys, shard)
                        if unfit is not None:
                            self._set_aside(name, unfit)
                            continue
                        loaded.append((keys, shard, name))
                parts = []
                for keys, shard, name in sorted(loaded, key=lambda ks: len(ks[0])):
                    parts.append((keys, self._number(keys, shard, name)))
                self._index = DigestIndex(parts)
            return self._index

    def _unfit(self, keys: np.ndarray, shard: S) -> str | None:
        """Why the shard of digests ``keys`` and vectors ``shard`` (both read) is not served, or ``None``: its
        keys file holds no ``(n,)`` digests, or not one per row of the shard."""
        if not _is_digests(keys):
            return (f"its keys file holds an array of dtype {keys.dtype} and shape {keys.shape}, not (n,) 16-byte "
                    "digests")
        if len(keys) != len(shard):
            return f"its vectors file holds {len(shard)} rows but its keys file names {len(keys)} texts"
        return None

    def _set_aside(self, name: str, reason: str) -> None:
        """Hook: the shard ``name`` is not served (``reason``: why).  Silent here; :class:`EmbeddingCache` logs it,
        the token cache warns of it (once per shard file and process each)."""

    def _number(self, keys: np.ndarray, shard: S, name: str = "") -> int:
        """Give ``shard`` (of digests ``keys``, named ``name``) the next number (under the lock)."""
        s = len(self._shards)
        self._shards.append(shard)
        self._shard_names.append(name)
        self._whole[hashlib.sha1(np.ascontiguousarray(keys).tobytes()).digest()] = s
        return s

    def _add(self, keys: np.ndarray, shard: S, name: str = "") -> None:
        """Number ``shard`` and point its texts' digests at it (under the lock, index loaded)."""
        assert self._index is not None
        self._index.add(keys, self._number(keys, shard, name))
        self._listed.add(name)

    def _others_wrote(self) -> bool:
        """Whether the folder holds shards the loaded index has not listed: another process (a ``ragkit eval``
        beside a notebook, a test's subprocess) wrote them since.  One listing of the folder."""
        try:
            names = {p.name[: -len(".keys.npy")] for p in self.folder.glob("*.keys.npy")}
        except OSError:
            return False
        return not names <= self._listed

    def _reread_if_others_wrote(self) -> bool:
        """Read the index again (under the lock) where another process has written shards since
        (:meth:`_others_wrote`); whether it did.  Arrays handed out before stay valid: they are copies or maps."""
        if not self._others_wrote():
            return False
        self._index = None
        self._load_index()
        return True

    def locate(self, digests: np.ndarray) -> tuple[np.ndarray, list[S]]:
        """``(n, 2)`` int64 ``(shard number, row)`` per digest (``-1`` where absent), and the shards
        those numbers index, both from one moment.  Where some are absent and another process has written
        shards to the folder since the index was read, it is read again first (the texts it computed are served,
        not computed twice: a full SciFact encode a subprocess had written was computed again, ~5 minutes)."""
        with self._lock:
            where = self._load_index().find(digests)
            if len(where) and (where[:, 0] < 0).any() and self._reread_if_others_wrote():
                where = self._load_index().find(digests)
            shards = list(self._shards)
        return where, shards

    def whole(self, digests: np.ndarray) -> S | None:
        """The shard that holds exactly the texts ``digests``, in this order, if one does (the index read again
        first where none does and another process has written shards since, as :meth:`locate` does)."""
        key = hashlib.sha1(np.ascontiguousarray(digests).tobytes()).digest()
        with self._lock:
            self._load_index()
            s = self._whole.get(key)
            if s is None and self._reread_if_others_wrote():
                s = self._whole.get(key)
            return None if s is None else self._shards[s]

    def _written(self, name: str | None, digests: np.ndarray, shard: S | None = None) -> S | None:
        """After writing shard ``name`` of ``digests``: open it (unless the caller gives it, ``shard``) and add
        it to a loaded index (an index not loaded yet will read it from disk).  ``None`` when nothing was
        written."""
        if name is None:
            return None
        if shard is None:
            shard = self._open(name)
        with self._lock:
            if self._index is not None:
                self._add(digests, shard, name)
        return shard


class EmbeddingCache(ShardStore[np.ndarray]):
    """A persistent ``text digest -> vector`` store for one model key.

    Parameters
    ----------
    root : Path
        Cache root; vectors live in ``root / <model key hash>``.
    key : str
        Model identity (name or path plus a fingerprint of its weights and settings).
    unit_length : bool
        The model's vectors are unit length (ragkit's own normalising encoder): a cached row that is not (within
        :data:`UNIT_TOLERANCE`), an all-zero or partly zeroed row above all (a file the disk zero-filled where a
        power loss kept the rename and not the data), sets its shard aside as NaN does, and such rows are not
        cached.  ``False`` (default): any finite row is served (a registered encoder may give zero vectors).
        The check replaces the finite one: one vectorised pass over the rows read either way.

    One reader is safe to share between threads (a served pipeline's searches); computing the
    missing vectors is not.

    A shard whose vectors file is smaller than :data:`SMALL_SHARD_BYTES` is read into memory, a larger one
    memory-mapped; once a folder holds more than :data:`MAX_SMALL_SHARDS` small shards, :meth:`put` merges them
    into one (:meth:`compact`), so a cache written one text at a time keeps a bounded number of files, and of
    descriptors open in its readers.
    """

    def __init__(self, root: Path, key: str, *, unit_length: bool = False) -> None:
        super().__init__(root, key)
        #: the model's vectors are unit length: a row read that is not sets its shard aside (see the class)
        self.unit_length = bool(unit_length)
        #: names of shards found large (:meth:`_small_shards`), left out of :meth:`_compact_if_many`'s count
        self._large: set[str] = set()
        #: the model's width: the vectors' dimensions, from what this reader stored (:meth:`put`, the model's own
        #: output) or else the folder's :data:`WIDTH_FILE`; ``None`` while unknown (a folder an older ragkit wrote)
        self._width: int | None = None
        #: whether ``_width`` comes from vectors the model computed in this reader (not from the folder's file)
        self._width_computed = False
        #: whose width ``_width`` is, as a warning names it
        self._width_whose = "the model's"
        #: the width the folder's :data:`WIDTH_FILE` held when last read (``None``: absent or unreadable)
        self._recorded: int | None = None
        #: shards found holding NaN or infinite values, or rows not of unit length where the model's are
        #: (:meth:`get`): never served again by this reader
        self._damaged: set[str] = set()

    def _rows_fit(self, rows: np.ndarray) -> np.ndarray:
        """``(n,)`` bool: which rows of ``rows`` ``(n, dim)`` may be served: finite, and of unit length (squared norm
        within :data:`UNIT_TOLERANCE` of 1) where :attr:`unit_length` says the model's are.  Vectorised (one pass: a
        row of NaN or infinities has no unit norm either)."""
        if not self.unit_length:
            return np.isfinite(rows).all(axis=1)
        # in the rows' own dtype (float32: a float64 einsum made every cached read ~40% slower); a row that
        # overflows gives inf and one with NaN gives NaN, both failing the comparison: refused either way
        with np.errstate(over="ignore", invalid="ignore"):
            sq = np.einsum("ij,ij->i", rows, rows)
        return np.abs(sq - 1.0) <= UNIT_TOLERANCE

    @property
    def _damage(self) -> str:
        """What a shard set aside by :meth:`get` holds."""
        return "NaN or infinite values" + (", or vectors not of unit length (zeroed: data the disk lost, or "
                                           "changed)" if self.unit_length else "")

    def _load_index(self) -> DigestIndex:
        """The index (:meth:`ShardStore._load_index`), after reading the model's width from the folder's
        :data:`WIDTH_FILE` (unless this reader computed vectors: the model's own width).  Shards of another width,
        or damaged, are set aside (:meth:`_unfit`, :meth:`_set_aside`).  Where no width is known (a folder an older
        ragkit wrote) and the shards have several, the width of the most rows is taken and the others set aside
        (they could not be served together)."""
        with self._lock:
            if self._index is not None:
                return self._index
            self._recorded = _read_width(self.folder / WIDTH_FILE)
            if not self._width_computed:
                self._width, self._width_whose = self._recorded, f"the model's (as {WIDTH_FILE} records)"
            index = super()._load_index()
            if self._width is None:
                rows: dict[int, int] = {}
                for shard in self._shards:  # (a loop over the shards: their shapes only)
                    rows[shard.shape[1]] = rows.get(shard.shape[1], 0) + len(shard)
                if len(rows) > 1:
                    self._width = max(rows, key=lambda w: rows[w])
                    self._width_whose = f"most of the cache's vectors (no {WIDTH_FILE} records the model's)"
                    self._index = None
                    index = super()._load_index()
            return index

    def _unfit(self, keys: np.ndarray, shard: np.ndarray) -> str | None:
        """Why a shard is not served (:meth:`ShardStore._unfit`), or ``None``: besides its keys, vectors that are
        no 2-D array of numbers, or whose width is not the model's (:attr:`_width`, when known): a shard of
        10-dimensional vectors for a 384-dimensional model was served, and the queries failed, blaming the
        encoder."""
        why = super()._unfit(keys, shard)
        if why is not None:
            return why
        if shard.ndim != 2 or shard.dtype.kind not in "fiu":
            return (f"its vectors file holds an array of dtype {shard.dtype} and shape {shard.shape}, not (n, dim) "
                    "numbers")
        if self._width is not None and shard.shape[1] != self._width:
            return f"its vectors have {shard.shape[1]} dimensions, but {self._width_whose} have {self._width}"
        return None

    def _set_aside(self, name: str, reason: str) -> None:
        """Log (a warning on the ``ragkit`` logger, once per shard file and process) that the shard ``name`` is
        not served, and why (``reason``): its texts are encoded again, into a new shard."""
        path = self.folder / f"{name}.npy"
        if not _files.first_time(_SET_ASIDE_SAID, path):
            return
        _log.warning(f"ragkit: the embedding cache's shard {path} is set aside, not read: {reason}; its texts are "
                     f"encoded again (into a new shard). Delete {name}.npy and {name}.keys.npy from {self.folder} to "
                     "stop this warning")

    def _open(self, name: str) -> np.ndarray:
        """The vectors of shard ``name``: read into memory when its file is small (:data:`SMALL_SHARD_BYTES`: no
        descriptor nor mapping stays open, and the shard stays readable when a compaction removes its file),
        memory-mapped otherwise; raises one of :data:`UNREADABLE` when damaged or gone, or found damaged before
        (NaN or infinite values: :meth:`get`)."""
        if name in self._damaged:
            raise ValueError(f"it holds {self._damage}")
        path = self.folder / f"{name}.npy"
        if path.stat().st_size < SMALL_SHARD_BYTES:
            arr = load_npy(path)
            arr.flags.writeable = False  # (as a map opened "r": a caller writing into a row cannot change the cache)
            return arr
        return np.load(path, allow_pickle=False, mmap_mode="r")

    def get(self, digests: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Cached vectors ``(n, dim)`` float32 (zero rows where absent) for ``digests`` ``(n,)``, and the
        boolean ``hit`` mask; ``None`` when nothing is cached.  Rows are gathered per shard, in blocks of
        :data:`GATHER_BYTES` (a shard's hits in one gather made a temporary copy of them beside the result);
        hits that fill consecutive positions are read straight into the result.

        Every block is checked finite as it is gathered (``np.isfinite`` over the rows read: one vectorised pass, a
        boolean temporary of a quarter of the block), or of unit length where the model's vectors are
        (:attr:`unit_length`: the squared norms, one pass too).  A shard found holding NaN or infinite values (or rows
        not of unit length) is set aside (:meth:`_set_aside`: logged, never served again by this reader) and the
        lookup made again without it: its texts come from another shard holding them, or are missing (computed again
        by :meth:`fetch_or_compute`), instead of reaching an index that refuses them, blaming the encoder."""
        while True:  # a loop over damaged shards (finitely many: each is set aside once)
            got = self._gather(digests)
            if not isinstance(got, str):
                return got
            with self._lock:
                self._damaged.add(got)
                self._index = None  # (read again without it: _open refuses it)
            self._set_aside(got, f"it holds {self._damage}")

    def _gather(self, digests: np.ndarray) -> tuple[np.ndarray | None, np.ndarray] | str:
        """One lookup of :meth:`get`: its result, or the name of a shard found holding NaN or infinite values."""
        with self._lock:
            where, shards = self.locate(digests)
            names = list(self._shard_names)
        hit = where[:, 0] >= 0
        if not hit.any():
            return None, hit
        dim = shards[int(where[np.argmax(hit), 0])].shape[1]
        out = np.zeros((len(digests), dim), np.float32)
        step = max(1, GATHER_BYTES // max(1, 4 * dim))
        for s in np.unique(where[hit, 0]).tolist():  # a loop over shards
            pos = np.flatnonzero(where[:, 0] == s)
            rows, shard = where[pos, 1], shards[s]
            direct = shard.dtype == np.float32 and pos[-1] - pos[0] + 1 == len(pos)  # (pos is sorted)
            for a in range(0, len(pos), step):  # a loop over blocks of rows
                block = rows[a:a + step]
                if direct:  # (mode "raise" would buffer the whole output)
                    dest = out[pos[0] + a:pos[0] + a + len(block)]
                    np.take(shard, block, axis=0, out=dest, mode="clip")
                    finite = bool(self._rows_fit(dest).all())
                else:
                    with np.errstate(over="ignore"):  # (a float64 value beyond float32's range: inf, refused)
                        vals = np.asarray(shard[block], np.float32)
                    finite = bool(self._rows_fit(vals).all())
                    out[pos[a:a + step]] = vals
                if not finite:
                    return names[s]
        return out, hit

    def put(self, digests: np.ndarray, vectors: np.ndarray) -> None:
        """Store new vectors as one shard (temporary files renamed into place; a cache that cannot be
        written is warned about and skipped: :func:`write_shard`)."""
        if len(digests) == 0:
            return
        arr = np.asarray(vectors, np.float32)
        if arr.ndim != 2 or len(arr) != len(digests) or arr.shape[1] == 0:
            return  # (not one vector per text: not cached; the caller's checks name the encoder)
        self._computed_width(arr.shape[1])
        finite = self._rows_fit(arr)  # (vectors of NaN are not cached: the encoder is blamed each time)
        if not finite.all():
            digests, arr = digests[finite], arr[finite]
            if len(digests) == 0:
                return
        extra: list[tuple[str, CacheFile]] = []
        if self._recorded != arr.shape[1]:
            extra.append((WIDTH_FILE, _width_writer(arr.shape[1])))
        name = write_shard(self.folder, self.key, [(".npy", arr), (".keys.npy", digests)], extra)
        if name is not None and extra:
            self._recorded = arr.shape[1]
        if name is None:
            return
        shard: np.ndarray | None = None
        if arr.nbytes + _NPY_HEADER_BYTES < SMALL_SHARD_BYTES:  # a small shard: kept as written, not read back
            shard = np.array(arr, np.float32, copy=True)
            shard.flags.writeable = False
        else:
            try:
                shard = self._open(name)
            except UNREADABLE:  # (removed meanwhile: it was small after all, and merged by another writer)
                shard = np.array(arr, np.float32, copy=True)
        self._written(name, digests, shard)
        self._compact_if_many()

    def _computed_width(self, width: int) -> None:
        """Note ``width``, that of vectors the model just computed, as the model's: where another was taken (the
        folder's :data:`WIDTH_FILE`, or inferred) and a loaded shard has another, the index is read again, setting
        those shards aside."""
        with self._lock:
            if self._width == width and self._width_computed:
                return
            self._width, self._width_computed, self._width_whose = width, True, "the model's"
            if self._index is not None and any(shard.shape[1] != width for shard in self._shards):
                self._index = None

    def _compact_if_many(self) -> None:
        """:meth:`compact` when the folder holds more than :data:`MAX_SMALL_SHARDS` shards not known to be large
        (one listing; the sizes of their files are read only then, and a shard found large is remembered: a
        shard never shrinks, so a folder of many large shards is not scanned again at every put)."""
        try:
            n = sum(1 for fname in os.listdir(self.folder)
                    if fname.endswith(".keys.npy") and fname[: -len(".keys.npy")] not in self._large)
        except OSError:
            return
        if n > MAX_SMALL_SHARDS:
            self.compact()

    def _small_shards(self) -> list[str]:
        """The names of the folder's small shards (vectors file under :data:`SMALL_SHARD_BYTES`, keys file
        present), oldest written first."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        found = []
        for fname in names:  # a loop over the folder's files (two stats per shard)
            m = _SHARD_FILE.fullmatch(fname)
            if m is None or m.group(2) != ".keys":
                continue
            try:
                written = (self.folder / fname).stat().st_mtime_ns
                size = (self.folder / f"{m.group(1)}.npy").stat().st_size
            except OSError:
                continue
            if size < SMALL_SHARD_BYTES:
                found.append((written, m.group(1)))
            else:
                self._large.add(m.group(1))
        return [name for _, name in sorted(found)]

    def compact(self) -> bool:
        """Merge the folder's small shards (:data:`SMALL_SHARD_BYTES`) into one, when it holds more than
        :data:`MAX_SMALL_SHARDS` of them; whether it did.

        Under an exclusive, non-blocking ``flock`` on the folder (another process or reader compacting it now:
        nothing is done).  The shards read whole and of one shape are concatenated (a text in several keeps the
        row of the latest written) and written as one shard (:func:`write_shard`: atomically); only then are
        their files removed, each keys file before its vectors (a shard is found through its keys file).
        Damaged shards, and shards whose vectors have another width than most, are left as they are.  A reader
        that had listed a removed shard skips it (its files are gone: one of :data:`UNREADABLE`); one that had
        read it keeps it in memory.  This reader's index is read again at its next lookup."""
        with _compaction_lock(self.folder) as held:
            if not held:
                return False
            names = self._small_shards()
            if len(names) <= MAX_SMALL_SHARDS:
                return False
            read: list[tuple[str, np.ndarray, np.ndarray]] = []
            for name in names:  # a loop over the small shards (each read whole, under 1 MiB)
                try:
                    keys = load_npy(self.folder / f"{name}.keys.npy")
                    vectors = load_npy(self.folder / f"{name}.npy")
                except UNREADABLE:
                    continue  # damaged (skipped by readers too) or merged by a writer without flock: left alone
                if (name not in self._damaged and _is_digests(keys) and vectors.ndim == 2
                        and len(vectors) == len(keys) and vectors.dtype.kind in "fiu"
                        and bool(self._rows_fit(np.asarray(vectors, np.float32)).all())):
                    # (under 1 MiB each: damaged ones stay apart)
                    read.append((name, keys, vectors))
            widths = [v.shape[1] for _, _, v in read]
            if not widths:
                return False
            width = self._width if self._width is not None else max(reversed(widths), key=widths.count)
            # (the model's; unknown: the most shards' (a tie: the latest written's))
            merge = [(name, k, v) for name, k, v in read if v.shape[1] == width]
            if len(merge) < 2:
                return False
            keys = np.concatenate([np.ascontiguousarray(k).view("V16") for _, k, _ in merge])
            vectors = np.concatenate([np.asarray(v, np.float32) for _, _, v in merge])
            n = len(keys)  # (a text in several shards: the row of the latest written, rows kept in order)
            keep = np.sort(_latest(_as_s16(keys), np.zeros(n, np.int32), np.arange(n, dtype=np.int32))[2])
            if len(keep) < len(keys):
                keys, vectors = keys[keep], vectors[keep]
            if write_shard(self.folder, self.key, [(".npy", vectors), (".keys.npy", keys)]) is None:
                return False  # (a cache that cannot be written: warned about; the small shards stay)
            for name, _, _ in merge:  # a loop over the merged shards' files: keys first
                for suffix in (".keys.npy", ".npy"):
                    try:
                        (self.folder / f"{name}{suffix}").unlink()
                    except OSError:
                        pass
            with self._lock:
                self._index = None  # (read again at the next lookup: arrays handed out before stay valid)
            _log.debug("ragkit: merged %d small shards of the cache %s into one (%d texts)", len(merge),
                       self.folder, len(keys))
            return True

    def fetch_or_compute(self, texts: list[str], compute: Callable[[list[str]], np.ndarray]) -> tuple[np.ndarray, int]:
        """Vectors of ``texts`` ``(n, dim)``: cached rows read back, the others computed with ``compute``
        (called on the missing texts in order, each distinct text once, :data:`COMPUTE_CHUNK` at a time) and stored
        a chunk at a time (a shard each: an interrupted run keeps the chunks it finished).  A text missing several
        times is computed and stored once, its vectors copied to its other places (1,000 copies of one text were
        1,000 rows computed and a shard of 1,000 keys).  Returns ``(vectors, number of texts computed)``."""
        digests = text_digests(texts)
        known = self._width_computed  # (the model's width known before: no second lookup below)
        cached, hit = self.get(digests)
        miss = np.flatnonzero(~hit)
        if len(miss) == 0:
            return cached, 0  # type: ignore[return-value]
        keep, again, of = distinct(digests[miss])  # each distinct missing text once, at its first place
        todo = miss[keep]
        out = cached
        step = max(1, int(COMPUTE_CHUNK))
        for a in range(0, len(todo), step):  # a loop over chunks of texts, each computed as one batch
            rows = todo[a:a + step]
            fresh = compute([texts[i] for i in rows])
            self.put(digests[rows], fresh)
            if not known and out is not None and a == 0 and np.ndim(fresh) == 2 and fresh.shape[1] != out.shape[1]:
                # the cached rows have another width than the model's (a folder without its WIDTH file): put noted
                # the model's, setting those shards aside; read again (what was just computed is cached now)
                again, computed = self.fetch_or_compute(texts, compute)
                return again, computed + len(rows)
            if out is None:
                out = np.zeros((len(texts), fresh.shape[1]), np.float32)
            out[rows] = fresh
            del fresh
        assert out is not None
        if len(again):  # (the repeats only: no copy of every missing row)
            out[miss[again]] = out[todo[of]]
        return out, len(todo)
