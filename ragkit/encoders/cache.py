"""On-disk embedding cache keyed by model identity and text hash.

One folder per model key, holding shards (``<uuid>.npy`` vectors + ``<uuid>.keys.npy``
16-byte BLAKE2 digests of the texts).  New vectors are written as a new shard through a
temporary file renamed into place, so concurrent or interrupted writers never corrupt
what is there.  A second encoding of the same texts with the same model reads them back
and encodes nothing.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import uuid
import warnings
from pathlib import Path
from typing import Callable, Generic, Protocol, Sequence, TypeVar, Union

import numpy as np

from ragkit._files import atomic_file

__all__ = ["EmbeddingCache", "ShardStore", "text_digests", "UNREADABLE", "write_shard", "write_cache_files"]

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


def write_shard(folder: Path, key: str, arrays: Sequence[tuple[str, CacheFile]]) -> str | None:
    """Write one cache shard: ``<name><suffix>`` per ``(suffix, array or writer)``, each through a
    temporary file renamed into place, in order (put the keys file last: a shard is found through it).

    Returns the shard's name, or ``None`` when ``folder`` cannot be written (a read-only or full
    cache): then a ``RuntimeWarning`` says so, what was written of the shard is removed, and the
    caller keeps its vectors uncached instead of losing the work that computed them.
    """
    name = uuid.uuid4().hex
    files: list[tuple[str, CacheFile]] = [("MODEL", key)]
    ok = write_cache_files(folder, files + [(f"{name}{suffix}", arr) for suffix, arr in arrays],
                           "the vectors are used but not cached. Set RAGKIT_CACHE to a writable folder, or pass "
                           "cache=False", stacklevel=4)
    return name if ok else None


def write_cache_files(folder: Path, files: Sequence[tuple[str, CacheFile]], instead: str,
                      stacklevel: int = 3) -> bool:
    """Write ``(file name, text, array or writer)`` pairs into the cache ``folder`` (arrays as ``.npy``,
    each file through a temporary file renamed into place, in order).  Returns False when the folder
    cannot be written (a read-only or full cache): the files written are removed and a
    ``RuntimeWarning`` says so, ending with ``instead`` (what the caller does without the cache)."""
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
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
                      RuntimeWarning, stacklevel=stacklevel)
        return False
    return True


class _Sized(Protocol):
    def __len__(self) -> int: ...


S = TypeVar("S", bound=_Sized)


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
        self._index: dict[bytes, tuple[int, int]] | None = None
        self._shards: list[S] = []
        #: shard number by the SHA-1 of its keys: a request for exactly one shard's texts finds it whatever
        #: shards the index prefers for them
        self._whole: dict[bytes, int] = {}
        #: guards _index and _shards: a shard's number is its position in _shards, which two threads
        #: loading or extending them at once gave to two shards (vectors of other texts were served)
        self._lock = threading.RLock()

    def _open(self, name: str) -> S:
        """The shard ``name`` (memory-mapped); raises one of :data:`UNREADABLE` when damaged."""
        raise NotImplementedError

    def _load_index(self) -> dict[bytes, tuple[int, int]]:
        with self._lock:
            if self._index is None:
                self._index, self._shards, self._whole = {}, [], {}
                loaded = []
                if self.folder.is_dir():
                    for keys_path in sorted(self.folder.glob("*.keys.npy")):
                        try:
                            keys = np.load(keys_path, allow_pickle=False)
                            shard = self._open(keys_path.name[: -len(".keys.npy")])
                        except UNREADABLE:
                            continue  # a shard damaged or empty: ignored, its texts are computed again
                        if len(keys) == len(shard):
                            loaded.append((keys, shard))
                for keys, shard in sorted(loaded, key=lambda ks: len(ks[0])):
                    self._add(keys, shard)
            return self._index

    def _add(self, keys: np.ndarray, shard: S) -> None:
        """Number ``shard`` and point its texts' digests at it (under the lock, index loaded)."""
        assert self._index is not None
        s = len(self._shards)
        self._shards.append(shard)
        self._whole[hashlib.sha1(keys.tobytes()).digest()] = s
        self._index.update(zip(keys.tolist(), zip(itertools.repeat(s), range(len(keys)))))

    def locate(self, digests: np.ndarray) -> tuple[np.ndarray, list[S]]:
        """``(n, 2)`` int64 ``(shard number, row)`` per digest (``-1`` where absent), and the shards
        those numbers index, both from one moment."""
        with self._lock:
            index = self._load_index()
            where = [index.get(d, (-1, -1)) for d in digests.tolist()]
            shards = list(self._shards)
        return np.array(where, dtype=np.int64).reshape(-1, 2), shards

    def whole(self, digests: np.ndarray) -> S | None:
        """The shard that holds exactly the texts ``digests``, in this order, if one does."""
        with self._lock:
            self._load_index()
            s = self._whole.get(hashlib.sha1(np.ascontiguousarray(digests).tobytes()).digest())
            return None if s is None else self._shards[s]

    def _written(self, name: str | None, digests: np.ndarray) -> S | None:
        """After writing shard ``name`` of ``digests``: open it and add it to a loaded index (an index
        not loaded yet will read it from disk).  ``None`` when nothing was written."""
        if name is None:
            return None
        shard = self._open(name)
        with self._lock:
            if self._index is not None:
                self._add(digests, shard)
        return shard


class EmbeddingCache(ShardStore[np.ndarray]):
    """A persistent ``text digest -> vector`` store for one model key.

    Parameters
    ----------
    root : Path
        Cache root; vectors live in ``root / <model key hash>``.
    key : str
        Model identity (name or path plus a fingerprint of its weights and settings).

    One reader is safe to share between threads (a served pipeline's searches); computing the
    missing vectors is not.
    """

    def _open(self, name: str) -> np.ndarray:
        return np.load(self.folder / f"{name}.npy", allow_pickle=False, mmap_mode="r")

    def get(self, digests: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Cached vectors ``(n, dim)`` float32 (zero rows where absent) for ``digests`` ``(n,)``, and the
        boolean ``hit`` mask; ``None`` when nothing is cached.  One gather per shard, not per text."""
        where, shards = self.locate(digests)
        hit = where[:, 0] >= 0
        if not hit.any():
            return None, hit
        out = np.zeros((len(digests), shards[int(where[hit][0, 0])].shape[1]), np.float32)
        for s in np.unique(where[hit, 0]).tolist():  # a loop over shards
            pos = np.flatnonzero(where[:, 0] == s)
            out[pos] = shards[s][where[pos, 1]]
        return out, hit

    def put(self, digests: np.ndarray, vectors: np.ndarray) -> None:
        """Store new vectors as one shard (temporary files renamed into place; a cache that cannot be
        written is warned about and skipped: :func:`write_shard`)."""
        if len(digests) == 0:
            return
        self._written(write_shard(self.folder, self.key,
                                  [(".npy", np.asarray(vectors, np.float32)), (".keys.npy", digests)]), digests)

    def fetch_or_compute(self, texts: list[str], compute: Callable[[list[str]], np.ndarray]) -> tuple[np.ndarray, int]:
        """Vectors of ``texts`` ``(n, dim)``: cached rows read back, the others computed with ``compute``
        (called once, on the missing texts in order) and stored.  Returns ``(vectors, number computed)``."""
        digests = text_digests(texts)
        cached, hit = self.get(digests)
        miss = np.flatnonzero(~hit)
        if len(miss) == 0:
            return cached, 0  # type: ignore[return-value]
        fresh = compute([texts[i] for i in miss])
        self.put(digests[miss], fresh)
        out = cached if cached is not None else np.zeros((len(texts), fresh.shape[1]), np.float32)
        out[miss] = fresh
        return out, len(miss)
