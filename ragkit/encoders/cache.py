"""On-disk embedding cache keyed by model identity and text hash.

One folder per model key, holding shards (``<uuid>.npy`` vectors + ``<uuid>.keys.npy``
16-byte BLAKE2 digests of the texts).  New vectors are written as a new shard through a
temporary file renamed into place, so concurrent or interrupted writers never corrupt
what is there.  A second encoding of the same texts with the same model reads them back
and encodes nothing.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ragkit._files import atomic_file

__all__ = ["EmbeddingCache", "text_digests", "UNREADABLE", "write_shard"]

#: what ``np.load`` raises on a damaged, half-written or empty shard file (an empty one: EOFError)
UNREADABLE: tuple[type[Exception], ...] = (OSError, ValueError, EOFError)


def text_digests(texts: list[str]) -> np.ndarray:
    """16-byte BLAKE2b digest per text, as a ``(n,)`` array of ``np.void16``."""
    out = np.empty(len(texts), dtype="V16")
    for i, t in enumerate(texts):
        out[i] = hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest()
    return out


def write_shard(folder: Path, key: str, arrays: Sequence[tuple[str, np.ndarray]]) -> str | None:
    """Write one cache shard: ``<name><suffix>`` per ``(suffix, array)``, each through a temporary
    file renamed into place, in order (put the keys file last: a shard is found through it).

    Returns the shard's name, or ``None`` when ``folder`` cannot be written (a read-only or full
    cache): then a ``RuntimeWarning`` says so, what was written of the shard is removed, and the
    caller keeps its vectors uncached instead of losing the work that computed them.
    """
    name = uuid.uuid4().hex
    files: list[tuple[str, str | np.ndarray]] = [("MODEL", key)]
    ok = write_cache_files(folder, files + [(f"{name}{suffix}", arr) for suffix, arr in arrays],
                           "the vectors are used but not cached. Set RAGKIT_CACHE to a writable folder, or pass "
                           "cache=False", stacklevel=4)
    return name if ok else None


def write_cache_files(folder: Path, files: Sequence[tuple[str, str | np.ndarray]], instead: str,
                      stacklevel: int = 3) -> bool:
    """Write ``(file name, text or array)`` pairs into the cache ``folder`` (arrays as ``.npy``
    through temporary files renamed into place, in order).  Returns False when the folder cannot
    be written (a read-only or full cache): the arrays written are removed and a ``RuntimeWarning``
    says so, ending with ``instead`` (what the caller does without the cache)."""
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for fname, value in files:
            if isinstance(value, str):
                (folder / fname).write_text(value, encoding="utf-8")
                continue
            with atomic_file(folder / fname) as tmp, open(tmp, "wb") as f:
                np.save(f, value, allow_pickle=False)
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


class EmbeddingCache:
    """A persistent ``text digest -> vector`` store for one model key.

    Parameters
    ----------
    root : Path
        Cache root; vectors live in ``root / <model key>``.
    key : str
        Model identity (name or path plus a fingerprint of its weights and settings).

    One reader is safe to share between threads (a served pipeline's searches): its in-memory index of
    the shards is read and extended under a lock; computing the missing vectors is not.
    """

    def __init__(self, root: Path, key: str) -> None:
        safe = hashlib.sha1(key.encode()).hexdigest()[:16]
        self.folder = Path(root) / safe
        self.key = key
        self._index: dict[bytes, tuple[int, int]] | None = None
        self._shards: list[np.ndarray] = []
        #: guards _index and _shards: a shard's number is its position in _shards, which two threads
        #: loading or extending them at once gave to two shards (vectors of other texts were served)
        self._lock = threading.RLock()

    def _load_index(self) -> dict[bytes, tuple[int, int]]:
        with self._lock:
            return self._index if self._index is not None else self._read_index()

    def _read_index(self) -> dict[bytes, tuple[int, int]]:
        index: dict[bytes, tuple[int, int]] = {}
        self._shards = []
        if self.folder.is_dir():
            for keys_path in sorted(self.folder.glob("*.keys.npy")):
                vec_path = keys_path.with_name(keys_path.name.replace(".keys.npy", ".npy"))
                try:
                    keys = np.load(keys_path, allow_pickle=False)
                    vecs = np.load(vec_path, allow_pickle=False, mmap_mode="r")
                except UNREADABLE:
                    continue  # a shard being written, damaged or empty: ignore it, it will be recomputed
                if len(keys) != len(vecs):
                    continue
                s = len(self._shards)
                self._shards.append(vecs)
                for j, k in enumerate(keys.tolist()):
                    index[k] = (s, j)
        self._index = index
        return index

    def get(self, digests: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Cached vectors for the digests that are present, and the boolean ``hit`` mask."""
        with self._lock:  # the shard numbers looked up and the shards they number, from one moment
            index = self._load_index()
            where = [index.get(d) for d in digests.tolist()]
            shards = list(self._shards)
        hit = np.array([w is not None for w in where], dtype=bool)
        if not hit.any():
            return None, hit
        first = next(w for w in where if w is not None)
        dim = shards[first[0]].shape[1]
        out = np.zeros((len(digests), dim), np.float32)
        for i, w in enumerate(where):
            if w is not None:
                out[i] = shards[w[0]][w[1]]
        return out, hit

    def put(self, digests: np.ndarray, vectors: np.ndarray) -> None:
        """Store new vectors as one shard (temporary files renamed into place; a cache that cannot be
        written is warned about and skipped: :func:`write_shard`)."""
        if len(digests) == 0:
            return
        name = write_shard(self.folder, self.key,
                           [(".npy", np.asarray(vectors, np.float32)), (".keys.npy", digests)])
        if name is None or self._index is None:  # nothing loaded to extend (read again under the lock)
            return
        vecs = np.load(self.folder / f"{name}.npy", allow_pickle=False, mmap_mode="r")
        with self._lock:
            if self._index is not None:  # extend the loaded index (re-reading every shard: slower)
                s = len(self._shards)
                self._shards.append(vecs)
                self._index.update((k, (s, j)) for j, k in enumerate(digests.tolist()))

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
