"""Token-level encoder: one L2-normalised vector per token, stored ragged and compact.

Multi-vector (late-interaction, ColBERT-style) retrieval needs every token's contextual
vector, not the pooled sentence vector.  :class:`TokenEncoder` runs the transformer module
of a sentence-transformers model (the module that produces ``token_embeddings``), keeps
the rows the attention mask marks as real tokens (padding is dropped), optionally drops the
special tokens, L2-normalises every row and returns a :class:`TokenVectors`:

* ``data``: one flat ``(n_tokens, dim)`` array (float16 by default) holding the tokens of
  all texts one after the other;
* ``offsets``: ``(n_texts + 1,)`` int64, text ``i`` owns rows ``offsets[i]:offsets[i+1]``.

Special tokens (``[CLS]``, ``[SEP]``) are **kept by default** (``special_tokens="keep"``):
with all-MiniLM-L6-v2 (not trained for late interaction) keeping them measured best here
(exact MaxSim nDCG@10 0.707 on SciFact test); ``"drop"`` removes every id the tokenizer
lists in ``all_special_ids``: ``[UNK]`` and ``[MASK]`` too, so a text of characters the vocabulary
lacks (an emoji alone) has no row left and, as a query, finds nothing.  (Keeping ``[UNK]`` would change
drop's token vectors, its cache key and every index saved with it, which would then refuse to load.)
Text is truncated at the model's ``max_seq_length``
(256 for MiniLM) unless ``max_seq_length`` is given.  A model with query / document prompts
(``config_sentence_transformers.json``: an e5-style ``query: `` / ``passage: ``) is given each text
after its role's prompt, as the sentence encoder gives it (the prompt's tokens are rows of the text).

Document token vectors are cached on disk like dense embeddings
(``$RAGKIT_CACHE/tokens/<model key hash>/``), keyed by model identity + settings and the
BLAKE2 digest of each text, in shards of three ``.npy`` files (flat vectors, offsets,
digests) written through temporary files renamed into place.  Shards are memory-mapped on
read, checked for NaN once per reader (a damaged one, or one truncated or unreadable, is set aside with a
``RuntimeWarning`` naming it and its texts encoded again), and a
corpus written as one shard with texts encoded just now (an edit) retires its older versions
(:class:`TokenCache`).
"""

from __future__ import annotations

import itertools
import threading
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional, Sequence

import numpy as np

from ragkit import _files
from ragkit._files import check_npy_size
from ragkit.encoders.cache import (
    UNREADABLE,
    ShardStore,
    _outside_ragkit,
    distinct,
    load_npy,
    text_digests,
    write_shard,
)
from ragkit.encoders.sentence import (
    DEFAULT_MODEL,
    _model_name,
    _refuse_unknown_settings,
    as_texts,
    check_encoder_settings,
    forward_tag,
    held_reader,
    identity_at_first_use,
    load_model,
    model_config,
    model_identity,
    prompts_part,
    queries_cached,
    query_reader,
    resolve_model,
    role_prompt,
    settings_key,
    shared_model_arg,
)
from ragkit.errors import ArtifactError, DataError, ParamError

__all__ = ["TokenVectors", "TokenEncoder", "TokenCache", "get_token_encoder", "gather_index", "all_finite"]


def gather_index(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat row indices of the segments ``rows`` of a ragged array, and the new offsets.

    Vectorised (no loop over segments): ``idx = repeat(starts - new_starts, lengths) + arange``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts = offsets[rows]
    lens = offsets[rows + 1] - starts
    new_off = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lens, out=new_off[1:])
    idx = np.repeat(starts - new_off[:-1], lens) + np.arange(new_off[-1], dtype=np.int64)
    return idx, new_off


@dataclass(frozen=True, eq=False)
class TokenVectors:
    """Ragged token matrices of ``n`` texts: flat ``data`` ``(n_tokens, dim)`` + ``offsets`` ``(n+1,)``.

    Text ``i``'s tokens are ``data[offsets[i]:offsets[i+1]]`` (unit vectors, float16 or
    float32).  ``data`` may be a read-only memory map.
    """

    data: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        off = np.asarray(self.offsets, dtype=np.int64)
        if self.data.ndim != 2:
            raise DataError(f"TokenVectors.data must be 2-D (n_tokens, dim), got shape {self.data.shape}")
        if off.ndim != 1 or len(off) < 1 or off[0] != 0 or off[-1] != len(self.data) or np.any(np.diff(off) < 0):
            raise DataError(
                f"TokenVectors.offsets must be non-decreasing, start at 0 and end at n_tokens={len(self.data)}; "
                f"got {len(off)} offsets ending at {off[-1] if len(off) else None}"
            )
        off = off.view()  # read-only through this object (the array it views keeps its own flags): a cached
        off.setflags(write=False)  # shard's offsets are shared by every TokenVectors served from it
        object.__setattr__(self, "offsets", off)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        """The ``(n_tokens_i, d)`` token vectors of text ``i`` (negative counts from the end)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"TokenVectors: text {i} of {n}")
        i = i % n
        return self.data[self.offsets[i]:self.offsets[i + 1]]

    @property
    def dim(self) -> int:
        return int(self.data.shape[1])

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, rows: np.ndarray | Sequence[int]) -> "TokenVectors":
        """The texts at ``rows`` (in that order; positions in ``[0, len)``), gathered into new
        contiguous arrays."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            bad = int(rows[(rows < 0) | (rows >= len(self))][0])
            raise DataError(f"TokenVectors.take: row {bad} outside the {len(self)} texts; expected rows in "
                            f"[0, {len(self)})")
        idx, off = gather_index(self.offsets, rows)
        return TokenVectors(np.asarray(self.data[idx]), off)

    def astype(self, dtype: Any) -> "TokenVectors":
        return TokenVectors(np.asarray(self.data, dtype=dtype), self.offsets)

    @classmethod
    def concat(cls, parts: Sequence["TokenVectors"], dim: int, dtype: Any = np.float16) -> "TokenVectors":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(dim, dtype)
        data = np.concatenate([np.asarray(p.data, dtype=dtype) for p in parts])
        lens = np.concatenate([p.lengths for p in parts])
        off = np.zeros(len(lens) + 1, np.int64)
        np.cumsum(lens, out=off[1:])
        return cls(data, off)

    @classmethod
    def empty(cls, dim: int, dtype: Any = np.float16, n: int = 0) -> "TokenVectors":
        return cls(np.zeros((0, dim), dtype), np.zeros(n + 1, np.int64))

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.offsets.nbytes)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: Path, prefix: str = "tokens") -> None:
        """Write ``<prefix>.npy`` (flat vectors) and ``<prefix>.offsets.npy``."""
        np.save(folder / f"{prefix}.npy", np.ascontiguousarray(self.data), allow_pickle=False)
        np.save(folder / f"{prefix}.offsets.npy", self.offsets, allow_pickle=False)

    @classmethod
    def load(cls, folder: Path, prefix: str = "tokens", mmap: bool = False, finite: bool = True) -> "TokenVectors":
        """Read ``<prefix>.npy`` and ``<prefix>.offsets.npy`` (``mmap``: the vectors memory-mapped).

        ``finite`` (default): vectors holding NaN or infinite values (a damaged or edited file of the right
        size) are an :class:`ArtifactError` here, not rankings that differ silently at search.  The check
        reads the vectors once in steps (:func:`all_finite`, about 0.2-0.35 s per GB of float16 from the page
        cache, the cost of the CRC32 a vector index checks; a memory-mapped file is read once, not held).
        ``finite=False`` skips it (the token cache checks each shard once per reader itself)."""
        try:
            for name in (f"{prefix}.npy", f"{prefix}.offsets.npy"):  # (before np.load allocates what a header claims)
                check_npy_size(folder / name)
            data = np.load(folder / f"{prefix}.npy", allow_pickle=False, mmap_mode="r" if mmap else None)
            off = np.load(folder / f"{prefix}.offsets.npy", allow_pickle=False)
        except FileNotFoundError as e:
            raise ArtifactError(f"{e.filename}: file not found") from None
        except (ValueError, OSError, EOFError) as e:
            raise ArtifactError(f"{folder / prefix}: corrupt or truncated token arrays ({e})") from None
        try:
            tv = cls(data, off)
        except DataError as e:
            raise ArtifactError(f"{folder / prefix}: inconsistent token arrays ({e})") from None
        if finite and not all_finite(tv.data):
            raise ArtifactError(f"{folder / prefix}.npy: NaN or infinite token vectors (the file was damaged or "
                                "changed after it was saved); save it again")
        return tv


#: Bytes of token vectors above which an encode that gathers from several cache shards (or encodes
#: anew) writes the result as one shard and returns its memory map instead of an array in memory:
#: a corpus's token vectors (about 1 GB for SciFact with MiniLM) are then never resident at once.  New
#: texts are counted first (the tokenizer's pass) and each batch of the model is written to its place in
#: the shard's temporary file as it comes: the encode holds one batch, not the new texts' vectors.
CONSOLIDATE_BYTES = 64 * 2**20

#: Bytes of token vectors one step of :func:`assemble` gathers (bounds its temporaries).
ASSEMBLE_BYTES = 32 * 2**20

#: ``(positions in the result, source, rows of the source or None for all of it in order)``
Part = tuple[np.ndarray, TokenVectors, Optional[np.ndarray]]


def _offsets(lens: np.ndarray) -> np.ndarray:
    """``(len(lens) + 1,)`` int64 offsets of segments of ``lens`` rows."""
    off = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    return off


def part_lengths(parts: Sequence[Part], n: int) -> np.ndarray:
    """``(n,)`` int64 token counts of the ``n`` texts the ``parts`` fill."""
    lens = np.zeros(n, np.int64)
    for pos, src, rows in parts:
        lens[pos] = src.lengths if rows is None else src.lengths[rows]
    return lens


def assemble(out: np.ndarray, offsets: np.ndarray, parts: Sequence[Part]) -> None:
    """Gather ``parts`` into ``out`` ``(n_tokens, dim)`` laid out by ``offsets`` ``(n + 1,)``: text
    ``pos[j]`` of the result gets the source's text ``rows[j]``.  Vectorised per step of about
    :data:`ASSEMBLE_BYTES` (a loop over steps, not texts), so ``out`` may be a memory map larger than
    memory and the sources memory maps too."""
    per_token = max(1, out.shape[1] * out.itemsize)
    for pos, src, rows in parts:
        rows = np.arange(len(pos), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        cum = np.cumsum(src.lengths[rows])
        a = 0
        while a < len(pos):
            done = cum[a - 1] if a else 0
            b = max(a + 1, int(np.searchsorted(cum, done + ASSEMBLE_BYTES // per_token, side="right")))
            dst, _ = gather_index(offsets, pos[a:b])
            got, _ = gather_index(src.offsets, rows[a:b])
            out[dst] = src.data[got]
            a = b


def all_finite(data: np.ndarray) -> bool:
    """Whether every value of ``data`` ``(n, d)`` is finite.  Read in steps of about
    :data:`ASSEMBLE_BYTES` (a memory map larger than memory is read once, temporaries stay bounded);
    float16 by its exponent bits (all ones: infinite or NaN), a max over integers, several times faster
    than ``np.isfinite`` on float16.  About 0.3 s per GB of float16 from the page cache."""
    step = max(1, ASSEMBLE_BYTES // max(1, data.shape[1] * data.itemsize))
    for lo in range(0, len(data), step):  # a loop over steps of 32 MiB, not rows
        chunk = np.asarray(data[lo:lo + step])
        if chunk.dtype == np.float16:
            if chunk.size and int(np.max(chunk.view(np.uint16) & np.uint16(0x7FFF))) >= 0x7C00:
                return False
        elif not np.isfinite(chunk).all():
            return False
    return True


#: the shard files of the token cache this process has warned of setting aside (once per file and process)
_SET_ASIDE_SAID: set[Path] = set()


class TokenCache(ShardStore[TokenVectors]):
    """Persistent ``text digest -> token matrix`` store for one model key (ragged shards).

    A shard is ``<uuid>.npy`` (flat float16 vectors), ``<uuid>.offsets.npy`` and
    ``<uuid>.keys.npy`` (16-byte digests), each written to a temporary file and renamed,
    the keys file last, so a reader never sees a half-written shard.  Shards are memory-mapped.

    A shard is checked once per reader before its vectors are served (:func:`all_finite`): one
    holding NaN or infinite values (the right size, damaged contents) is set aside as a truncated or
    unreadable one is (:meth:`_set_aside`), with a ``RuntimeWarning`` naming it, and its texts are encoded again.
    A corpus written as one shard with texts encoded just now (:meth:`consolidate`) retires the older versions
    of that corpus (:meth:`retire`), so an edit of a few documents grows the cache by those documents, not by
    another copy of the corpus.
    """

    def __init__(self, root: Path, key: str) -> None:
        super().__init__(root, key)
        #: the name of each open shard (the ShardStore numbers them by position only)
        self._names: weakref.WeakKeyDictionary[TokenVectors, str] = weakref.WeakKeyDictionary()
        self._sound_names: set[str] = set()  # checked: every value finite
        self._damaged: set[str] = set()  # not finite: never opened again by this reader

    def _open(self, name: str) -> TokenVectors:
        if name in self._damaged:
            raise ValueError(f"{self.folder / name}.npy: NaN or infinite token vectors")  # (UNREADABLE: skipped)
        tv = TokenVectors.load(self.folder, name, mmap=True, finite=False)  # checked lazily once: _sound
        self._names[tv] = name
        return tv

    def _set_aside(self, name: str, reason: str) -> None:
        """Warn (a ``RuntimeWarning``, once per shard file and process) that the shard ``name`` is not served, and why
        (``reason``: a truncated or unreadable file, offsets or keys that do not fit its vectors): its texts are
        encoded again.  A shard found damaged by :meth:`_sound` (warned of there) and one whose files are gone
        (retired or removed by another process since the folder was listed) are passed over silently."""
        path = self.folder / f"{name}.npy"
        if name in self._damaged or not (path.exists() and (self.folder / f"{name}.keys.npy").exists()):
            return
        if not _files.first_time(_SET_ASIDE_SAID, path):
            return
        warnings.warn(f"ragkit: the token cache shard {path} is set aside, not read: {reason}; its texts are encoded "
                      f"again. Delete {name}.* from {self.folder} to stop this warning", RuntimeWarning,
                      stacklevel=_outside_ragkit())

    def _sound(self, shard: TokenVectors) -> bool:
        """Whether ``shard``'s vectors are all finite, checked once per shard and reader.  A damaged
        one is warned about and set aside: the index is read again without it (other shards may hold
        its texts; the rest are encoded again)."""
        name = self._names.get(shard)
        if name is None or name in self._sound_names:
            return True
        if name not in self._damaged and all_finite(shard.data):
            self._sound_names.add(name)
            return True
        with self._lock:
            new = name not in self._damaged
            self._damaged.add(name)
            self._index = None  # read again without it (ShardStore._load_index skips what _open refuses)
        if new:
            warnings.warn(f"ragkit: the token cache shard {self.folder / name}.npy holds NaN or infinite values "
                          f"(damaged); it is ignored and its texts are encoded again. Delete {name}.* to stop "
                          "this warning", RuntimeWarning, stacklevel=5)
        return False

    def whole(self, digests: np.ndarray) -> TokenVectors | None:
        """The shard that holds exactly the texts ``digests`` in this order, if one does and it is sound.
        A damaged one drops out of the index and the index is asked again: a sound copy of the same texts
        (the index keeps one shard per set of keys, the later name) is found, not gathered and rewritten."""
        while True:  # a loop over damaged shards (finitely many: each is set aside once)
            shard = super().whole(digests)
            if shard is None or self._sound(shard):
                return shard

    def parts(self, digests: np.ndarray) -> tuple[list[Part], np.ndarray]:
        """Where the cached texts are, without reading them: ``[(positions, shard, rows or None)]`` per
        shard hit (``None``: the whole shard in order), and the ``hit`` mask.  Every shard named is
        sound (:meth:`_sound`)."""
        while True:  # a damaged shard drops out of the index: locate again (ends: finitely many shards)
            where, shards = self.locate(digests)
            hit = where[:, 0] >= 0
            if all(self._sound(shards[s]) for s in np.unique(where[hit, 0]).tolist()):
                break
        found: list[Part] = []
        for s in np.unique(where[hit, 0]).tolist():  # a loop over shards, not texts
            pos = np.flatnonzero(where[:, 0] == s)
            shard = shards[s]
            whole = len(pos) == len(shard) and np.array_equal(where[pos, 1], np.arange(len(shard)))
            found.append((pos, shard, None if whole else where[pos, 1]))
        return found, hit

    def get(self, digests: np.ndarray) -> tuple[list[tuple[np.ndarray, TokenVectors]], np.ndarray]:
        """Cached token matrices: ``[(positions, TokenVectors)]`` per shard hit (a whole shard in order
        is its memory map, other hits are gathered), and the ``hit`` mask."""
        found, hit = self.parts(digests)
        return [(pos, tv if rows is None else tv.take(rows)) for pos, tv, rows in found], hit

    def put(self, digests: np.ndarray, tokens: TokenVectors) -> TokenVectors | None:
        """Store ``tokens`` of the texts ``digests`` as one shard; returns its memory map (``None`` when
        the cache cannot be written: a warning said so)."""
        if len(digests) == 0:
            return None
        return self.write(digests, tokens.offsets, [(np.arange(len(digests)), tokens, None)])

    def write(self, digests: np.ndarray, offsets: np.ndarray, parts: Sequence[Part]) -> TokenVectors | None:
        """Store the texts ``digests`` laid out by ``offsets``, gathered from ``parts`` (:func:`assemble`)
        straight into the shard's file; returns the shard's memory map, or ``None`` when the cache
        cannot be written (a warning said so)."""
        return self._write(digests, offsets, parts)[1]

    def consolidate(self, digests: np.ndarray, offsets: np.ndarray, parts: Sequence[Part], *,
                    dim: int | None = None, then: Callable[[np.ndarray], None] | None = None) -> TokenVectors | None:
        """:meth:`write` of a whole corpus, then :meth:`retire` of its older versions.  Meant for a corpus
        holding texts encoded just now (an edit): one gathered wholly from cached shards (a subset, a
        superset, a reordering, an edit undone) is only written (:meth:`write`), or switching between two
        close corpora would rewrite each at every fit, each retiring the other.

        ``then(out)``, where given, fills the rest of the shard's rows (texts no part holds) into ``out``, the
        memory map of the shard's temporary vectors file, after the ``parts`` (the encoder writes the model's
        batches there as they come); ``dim``: the vectors' width (needed where ``parts`` is empty).  An
        exception it raises leaves nothing of the shard behind and reaches the caller."""
        name, shard = (self._write(digests, offsets, parts) if then is None
                       else self._write_then(digests, offsets, parts, parts[0][1].dim if dim is None else dim, then))
        if name is not None:
            self.retire(name, digests)
        return shard

    def retire(self, newest: str, digests: np.ndarray) -> list[str]:
        """Remove the shards older than ``newest`` (the shard of the texts ``digests``) that are former
        versions of the same corpus: the two share at least 7/8 of the texts of each (a few documents
        edited, added or removed).  The rest of such a shard's texts (the former versions of edited
        documents) are first written as a new shard (less those a shard written by this call holds: a text
        of two retired versions is saved once), so nothing cached is lost; then its files are deleted.  A
        shard of the loaded index whose size cannot share 7/8 of both is skipped without reading its keys.
        Returns the names removed.  A shard of another corpus, of a subset or of a superset
        (a filtered corpus next to the whole one) is kept: each is then read back whole, never rewritten.

        Shared caches: other processes may be reading the shards.  A shard is retired only in favour
        of a newer one (by the keys file's modification time, then name: every process orders two shards
        alike, so two never retire each other's), and only after the shards holding all its texts are
        in place (renamed, keys last), so a reader listing the folder at any moment finds every text.  The
        vectors file is deleted first: a reader that listed the shard before finds it incomplete and skips
        it (as a truncated one); a reader that opened it keeps its memory map (POSIX: the data stays
        until unmapped).  Where a mapped file cannot be deleted (Windows), the shard is left whole."""
        folder = self.folder
        try:
            mine = ((folder / f"{newest}.keys.npy").stat().st_mtime_ns, newest)
            listing = sorted(folder.glob("*.keys.npy"))
        except OSError:
            return []
        with self._lock:  # texts per shard of the loaded index: a shard too small or too large is skipped unread
            sizes = {self._names.get(sh): len(sh) for sh in self._shards} if self._index is not None else {}
        n = len(digests)
        saved = np.zeros(0, digests.dtype)  # the texts of the small shards written by this call
        removed: list[str] = []
        for keys_path in listing:  # a loop over shards
            name = keys_path.name[: -len(".keys.npy")]
            if name == newest or name in self._damaged:
                continue
            size = sizes.get(name)
            if size is not None and (8 * size < 7 * n or 8 * n < 7 * size):
                continue  # cannot share 7/8 of both: not read
            try:
                if (keys_path.stat().st_mtime_ns, name) >= mine:
                    continue  # newer: the process that wrote it decides
                keys = load_npy(keys_path)  # (a header claiming more than the file: skipped)
            except UNREADABLE:
                continue
            covered = np.isin(keys, digests)
            shared = int(covered.sum())
            if 8 * shared < 7 * len(keys) or 8 * shared < 7 * len(digests):
                continue  # not a former version of this corpus: kept
            left = np.flatnonzero(~(covered | np.isin(keys, saved)))  # (one text in two retired versions: saved once)
            if len(left):
                try:
                    shard = self._open(name)
                except UNREADABLE:
                    continue
                if len(shard) != len(keys) or not self._sound(shard):
                    continue
                off = np.zeros(len(left) + 1, np.int64)
                np.cumsum(shard.lengths[left], out=off[1:])
                if self._write(keys[left], off, [(np.arange(len(left)), shard, left)])[0] is None:
                    break  # the cache cannot be written (warned): keep everything
                saved = np.concatenate([saved, keys[left]])
            if self._unlink(name):
                removed.append(name)
        if removed:
            with self._lock:
                self._index = None  # read again: the retired shards' maps are released with their last user
        return removed

    def _unlink(self, name: str) -> bool:
        """Delete shard ``name``'s files, vectors first (see :meth:`retire`); False where one cannot be
        deleted (the shard is then whole still, or at least without its vectors: skipped by readers)."""
        for suffix in (".npy", ".offsets.npy", ".keys.npy"):
            try:
                (self.folder / f"{name}{suffix}").unlink()
            except FileNotFoundError:
                continue  # (another process retired it too)
            except OSError:
                return False
        return True

    def _write(self, digests: np.ndarray, offsets: np.ndarray,
               parts: Sequence[Part]) -> tuple[str | None, TokenVectors | None]:
        """:meth:`write`, returning the shard's name too (``(None, None)``: not written)."""
        return self._write_then(digests, offsets, parts, parts[0][1].dim, None)

    def _write_then(self, digests: np.ndarray, offsets: np.ndarray, parts: Sequence[Part], dim: int,
                    then: Callable[[np.ndarray], None] | None) -> tuple[str | None, TokenVectors | None]:
        """:meth:`_write`, then ``then(out)`` into the shard's vectors file (see :meth:`consolidate`)."""

        def fill(tmp: Path) -> None:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(int(offsets[-1]), dim))
            assemble(out, offsets, parts)
            if then is not None:
                then(out)
            out.flush()
            del out

        name = write_shard(self.folder, self.key, [(".npy", fill), (".offsets.npy", np.asarray(offsets, np.int64)),
                                                   (".keys.npy", digests)])
        if name is not None:
            self._sound_names.add(name)  # gathered from sound shards and finite fresh vectors only (``then``: checked)
        return name, self._written(name, digests)


class _NotFinite(Exception):
    """Raised inside a shard's writing to abandon it: the model gave NaN or infinite vectors."""


class TokenEncoder:
    """Per-token vectors from a sentence-transformers model, ragged and cached.

    Parameters
    ----------
    model : str
        Sentence-transformers model name or folder (default all-MiniLM-L6-v2, offline).
    batch_size : int
        Texts per forward pass (texts are sorted by length to limit padding).
    max_seq_length : int, optional
        Truncation length in word pieces (the model's default, 256 for MiniLM, otherwise).
    special_tokens : {"keep", "drop"}
        Keep ``[CLS]``/``[SEP]`` rows (default) or drop every tokenizer special id (``[UNK]`` and ``[MASK]``
        included).
    cache : bool
        Cache document token matrices on disk (``$RAGKIT_CACHE/tokens``).

    The model's own query / document prompts (:func:`~ragkit.encoders.sentence.role_prompt`, as the sentence
    encoder reads them) are put before each query / document, their tokens kept as rows; a model with prompts keys
    its cache with them (``|prompts=``, as the sentence encoder), and caches queries apart from documents when their
    prompts differ.

    A subclass with a forward pass of its own (``_forward``) is keyed apart from the plain token encoder of its
    model, ``|forward=<tag>`` (:func:`~ragkit.encoders.sentence.forward_tag`, as the sentence encoder's: its
    :attr:`key_tag`, or the ``module.qualname`` of the class defining ``_forward`` and a digest of its code).

    Examples
    --------
    >>> enc = get_token_encoder()                       # doctest: +SKIP
    >>> tv = enc.encode(["a claim about cells"]); tv.lengths.tolist(), tv.dim   # doctest: +SKIP
    ([6], 384)
    """

    #: what names a subclass's own forward pass (``_forward``) in the key, as :attr:`Encoder.key_tag
    #: <ragkit.encoders.sentence.Encoder.key_tag>` does (``None``: its class's module.qualname and a digest of its
    #: code); honoured too on a class that keeps ragkit's ``_forward`` but changes the vectors otherwise
    #: (its ``model``, ``_batches``)
    key_tag: str | None = None

    def __init__(self, model: str = DEFAULT_MODEL, *, batch_size: int = 32, max_seq_length: int | None = None,
                 special_tokens: Literal["keep", "drop"] = "keep", cache: bool = True) -> None:
        model = _model_name(model, "TokenEncoder", TokenEncoder)  # (None: an AttributeError in resolve_model)
        #: what names this encoder's vectors in its key (:func:`~ragkit.encoders.sentence.forward_tag`; ``None``:
        #: ragkit's forward pass), read once, now: a bad key_tag is refused here, not at the first encode
        self._forward_name = forward_tag(self, TokenEncoder)
        check_encoder_settings("TokenEncoder", batch_size=batch_size, max_seq_length=max_seq_length, cache=cache)
        if special_tokens not in ("keep", "drop"):
            raise ParamError(f"TokenEncoder: special_tokens must be 'keep' or 'drop', got {special_tokens!r}",
                             path="special_tokens")
        self.model_name = model
        self.path = resolve_model(model)
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.special_tokens = special_tokens
        self.cache_enabled = cache
        #: what names the model's files (:func:`~ragkit.encoders.sentence.model_identity`, as the sentence encoder
        #: keys them: a local model's content hash, a hub id's cached revision ``name@<commit>``), taken when the
        #: encoder was made, or for a hub id not then in the cache at first use (:attr:`fingerprint`)
        self._fingerprint: str | None = model_identity(self.path)
        self._fingerprint_lock = threading.Lock()
        #: the model's (query prompt, document prompt), read from its files with the fingerprint (:meth:`_prompts`)
        self._role_prompts: tuple[str, str] | None = None
        self._cache: TokenCache | None = None
        self._cache_root: Path | None = None  # the cache folder ``_cache`` was made for (None: set by hand)
        self._query_cache: TokenCache | None = None
        self._query_cache_root: Path | None = None
        #: texts actually encoded (not read from cache) since creation: documents (:meth:`encode`)
        self.n_encoded = 0
        #: queries actually encoded (not read from the memo or the cache) since creation (:meth:`encode_queries`)
        self.n_queries_encoded = 0
        self._memo: dict[str, np.ndarray] = {}
        self._memo_lock = threading.Lock()
        #: query texts kept in the in-memory memo
        self.memo_size = 4096

    def __repr__(self) -> str:
        return f"TokenEncoder({self.model_name!r}, special_tokens={self.special_tokens!r})"

    @property
    def fingerprint(self) -> str:
        """What names the model's files (:func:`~ragkit.encoders.sentence.identity_at_first_use`, the sentence
        encoder's identity: a hub id keyed by its cached revision): the model it loads is theirs."""
        if self._fingerprint is None:
            with self._fingerprint_lock:
                if self._fingerprint is None:
                    self._fingerprint = identity_at_first_use(self.model_name, self.path, "cpu", self.max_seq_length)
        return self._fingerprint

    def _prompts(self) -> tuple[str, str]:
        """The model's ``(query prompt, document prompt)`` (:func:`~ragkit.encoders.sentence.role_prompt` of its
        ``config_sentence_transformers.json``, ``""`` for none), read once, after :attr:`fingerprint` (a hub id is
        downloaded first)."""
        got = self._role_prompts
        if got is None:
            fingerprint = self.fingerprint
            config, _ = model_config(self.path)
            got = (role_prompt(config, "query"), role_prompt(config, "document"))
            with self._fingerprint_lock:
                if self._role_prompts is None and self._fingerprint == fingerprint:
                    self._role_prompts = got
        return got

    @property
    def query_prompt(self) -> str:
        """The text put before each query (the model's own; ``""``: none)."""
        return self._prompts()[0]

    @property
    def document_prompt(self) -> str:
        """The text put before each document (the model's own; ``""``: none)."""
        return self._prompts()[1]

    @property
    def key(self) -> str:
        """The cache key: :attr:`fingerprint`, ``max_seq_length``, ``special_tokens``, the model's prompts when it
        has some (``|prompts=``, hashed as the sentence encoder's), and ``|forward=<tag>`` for a subclass's own
        forward pass (:attr:`key_tag`; it shared the plain key, and so its cached token vectors)."""
        key = f"{self.fingerprint}|tokens|msl={self.max_seq_length}|special={self.special_tokens}|l2"
        forward = self._forward_name
        return key + prompts_part(*self._prompts()) + ("" if forward is None else f"|forward={forward}")

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer`` of this encoder's files and ``max_seq_length`` on the CPU, shared with
        the sentence encoders of the same (:func:`~ragkit.encoders.sentence.load_model`)."""
        return load_model(self.model_name, self.path, "cpu", self.max_seq_length, self.fingerprint)

    @property
    def dim(self) -> int:
        """The width of the token vectors: the output of the transformer module (``model[0]``), which may differ
        from the pooled sentence vector's (a sentence-transformers ``Dense`` head after the pooling maps 384-d
        tokens to a 128-d sentence vector)."""
        m = self.model
        first = m[0]
        # (sentence-transformers >= 6 renamed it: the old name warns there)
        get = getattr(first, "get_embedding_dimension", None) or getattr(first, "get_word_embedding_dimension", None)
        if get is not None:
            return int(get())
        hidden = getattr(getattr(getattr(first, "auto_model", None), "config", None), "hidden_size", None)
        if hidden is not None:
            return int(hidden)
        # a module that says nothing of its width: the model's (the same unless a head after the pooling changes it)
        return int((getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension)())

    @property
    def store(self) -> TokenCache:
        """The on-disk cache of this encoder's token vectors, under the cache folder in force now
        (``$RAGKIT_CACHE`` is read at each use: encoders shared by the process, :func:`get_token_encoder`,
        kept the folder of their first use, another program's or test's ``$RAGKIT_CACHE``)."""
        return held_reader(self, "_cache", self.key, lambda root, key: TokenCache(root / "tokens", key))

    @property
    def query_store(self) -> TokenCache:
        """The on-disk cache of query token vectors: :attr:`store` itself when queries and documents get the same
        prompt (or none), else a cache of its own (key ``<key>|query``)."""
        if self.query_prompt == self.document_prompt:
            return self.store
        return query_reader(self, lambda root, key: TokenCache(root / "tokens", key))

    def _batches(self, texts: list[str], progress: bool = False,
                 model: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One ``(idx, rows, counts)`` per batch of length-sorted texts: the batch's positions in ``texts``,
        its float16 unit rows (the tokens of text ``idx[0]``, then ``idx[1]``, ...) and its ``(len(idx),)``
        token counts.  ``model=False``: the tokenizer only (``rows`` is None), for the counts; the batches
        are the same, so the counts are those of the model's pass."""
        import torch

        m = self.model  # the shared model of this max_seq_length (Encoder.model)
        special = np.array(sorted(set(m.tokenizer.all_special_ids)), dtype=np.int64)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        starts: Any = range(0, len(texts), self.batch_size)
        if progress:
            try:
                from tqdm.auto import tqdm

                starts = tqdm(starts, desc="token vectors" if model else "token counts", unit="batch")
            except ImportError:  # pragma: no cover
                pass
        for s in starts:
            idx = order[s:s + self.batch_size]
            feats = m.preprocess([texts[i] for i in idx])
            feats = {k: v for k, v in feats.items() if torch.is_tensor(v)}
            keep = feats["attention_mask"].numpy().astype(bool)
            if self.special_tokens == "drop":
                keep &= ~np.isin(feats["input_ids"].numpy(), special)
            if not model:
                yield idx, None, keep.sum(1)  # type: ignore[misc]
                continue
            with torch.inference_mode():
                emb = m[0].forward(dict(feats))["token_embeddings"].float().numpy()
            rows = emb[keep]  # row-major: tokens of text 0, then text 1, ...
            rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
            yield idx, rows.astype(np.float16), keep.sum(1)  # float16 per batch: no float32 copy of the whole

    def _lengths(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """``(len(texts),)`` int64 token counts (rows kept) of ``texts``: the tokenizer's pass alone
        (about 1% of an encode's time on CPU), so the model's batches can be written where they go."""
        lens = np.zeros(len(texts), np.int64)
        for idx, _, n in self._batches(texts, progress, model=False):
            lens[idx] = n
        return lens

    def _write_batches(self, texts: list[str], out: np.ndarray, offsets: np.ndarray, pos: np.ndarray,
                       progress: bool) -> bool:
        """Run the model over ``texts`` and write text ``j``'s rows into ``out`` at the segment ``pos[j]`` of
        ``offsets`` (counted beforehand by :meth:`_lengths`), batch by batch: no batch is kept.  Returns
        whether every value written is finite."""
        finite = True
        for idx, rows, n in self._batches(texts, progress):
            at = pos[idx]
            if not np.array_equal(n, offsets[at + 1] - offsets[at]):
                raise RuntimeError(f"{self!r}: the tokenizer gave {int(n.sum())} tokens for a batch of {len(idx)} "
                                   f"texts, {int((offsets[at + 1] - offsets[at]).sum())} when they were counted "
                                   "before; the tokenizer is not deterministic")
            dst, _ = gather_index(offsets, at)
            out[dst] = rows
            finite = finite and all_finite(rows)
        return finite

    def _forward(self, texts: list[str], progress: bool = False, lens: np.ndarray | None = None) -> TokenVectors:
        """Encode without cache, into one array in input order; ``lens``: the texts' token counts where
        known (:meth:`_lengths`).  Peak memory: the result and one batch (each batch is written to its
        place as it comes; keeping the batches, then gathering them, held twice the result)."""
        if lens is None and len(texts) <= self.batch_size:  # one batch (a query batch): no counting pass
            lens = np.zeros(len(texts), np.int64)
            flat = np.zeros((0, self.dim), np.float16)
            for idx, rows, n in self._batches(texts, progress):
                lens[idx] = n
                flat = np.empty_like(rows)
                flat[gather_index(_offsets(lens), idx)[0]] = rows
            return TokenVectors(flat, _offsets(lens))
        off = _offsets(self._lengths(texts, progress) if lens is None else lens)
        flat = np.empty((int(off[-1]), self.dim), np.float16)
        self._write_batches(texts, flat, off, np.arange(len(texts)), progress)
        return TokenVectors(flat, off)

    def _streams(self) -> bool:
        """Whether new texts are encoded batch by batch into their place (:meth:`_write_batches`): not
        where a subclass or a test gives whole results through ``_forward`` (those are gathered as they come)."""
        return type(self)._forward is TokenEncoder._forward and "_forward" not in vars(self)

    def encode(self, texts: Sequence[str], *, cache: bool | None = None, progress: bool | None = None) -> TokenVectors:
        """Token vectors of ``texts`` (float16 unit rows), read from the disk cache where present.  A progress bar
        shows for more than 500 texts to encode (``progress``: ``None``, as said; ``True`` / ``False`` always /
        never), with the cache on or off."""
        texts = as_texts(texts, "encode")
        return self._encode(texts, self.cache_enabled if cache is None else cache, progress, count=True)

    def _encode(self, texts: list[str], use_cache: bool, progress: bool | None, count: bool) -> TokenVectors:
        """:meth:`encode`; ``count``: documents (their prompt, their cache; the texts encoded, not read from the
        cache, added to ``n_encoded``), else queries (``n_queries_encoded``)."""
        if not texts:
            return TokenVectors.empty(self.dim)
        prompt = self.document_prompt if count else self.query_prompt
        if not use_cache:
            self._count(len(texts), count)
            return self._forward([prompt + t for t in texts] if prompt else texts,
                                 progress if progress is not None else len(texts) > 500)
        digests = text_digests(texts)  # (of the texts as given: the prompt is in the key)
        store = self.store if count else self.query_store
        whole = store.whole(digests)
        if whole is not None:
            return whole  # one shard holds exactly these texts in this order: its memory map
        parts, hit = store.parts(digests)
        miss = np.flatnonzero(~hit)
        # a text missing several times is encoded once (at its first place, ``todo``), its rows then gathered
        # into its other places (``miss[again]``, from the text ``of`` of the fresh vectors) like a cached part's
        keep, again, of = distinct(digests[miss])
        todo = miss[keep]
        new = [prompt + texts[i] for i in todo]  # (as the model is given them)
        show = progress if progress is not None else len(todo) > 500
        lens = part_lengths(parts, len(texts))
        fresh = None
        failed = False  # a large result the cache could not take (warned): kept in memory
        if len(todo) and self._streams():
            lens[todo] = self._lengths(new, show)  # the tokenizer only: each batch of the model then goes to its place
            lens[miss[again]] = lens[todo[of]]
            off = _offsets(lens)
            if off[-1] * self.dim * 2 >= CONSOLIDATE_BYTES:
                got = self._encode_into_shard(store, digests, off, parts, new, todo, show, (miss[again], todo[of]))
                if got is not None:
                    self._count(len(todo), count)
                    return got
                # the cache cannot be written (warned): encoded in memory below (again, where the shard's
                # file was written before a later file failed and was removed with it)
                failed = True
            fresh = self._forward(new, show, lens[todo])
        elif len(todo):
            fresh = self._forward(new, show)  # whole results (a subclass's or a test's _forward)
        if fresh is not None:
            self._count(len(todo), count)
            parts.append((todo, fresh, None))
            if len(again):
                parts.append((miss[again], fresh, of))
        # vectors that are not finite (the model's output) are not cached: the caller's check names the encoder
        cacheable = fresh is None or all_finite(fresh.data)
        off = _offsets(part_lengths(parts, len(texts)))
        # the width of the vectors at hand (``parts`` holds every text): all read from the cache, the model is
        # not loaded to learn it (``self.dim`` loads it: about half of a cached muvera search's time)
        dim = parts[0][1].dim
        if off[-1] * dim * 2 >= CONSOLIDATE_BYTES:
            if cacheable and not failed:
                # large: written as one shard (the new texts with it) and served from its memory map, so
                # the result is never held in memory.  With new texts (an edit), its older versions are retired
                # (the cache grows by the edited texts, not by another copy of the corpus); gathered wholly from
                # the cache (a subset, a reordering, an edit undone), nothing is retired: switching back and
                # forth then reads each version whole, where retiring rewrote the corpus at every fit
                whole = (store.write if fresh is None else store.consolidate)(digests, off, parts)
                if whole is not None:
                    return whole
        elif fresh is not None and cacheable:
            store.put(digests[todo], fresh)
        if fresh is not None and len(todo) == len(texts):
            return fresh  # all new and distinct (or a cache that cannot be written): the fresh array itself
        out = np.empty((int(off[-1]), dim), np.float16)
        assemble(out, off, parts)
        return TokenVectors(out, off)

    def _count(self, n: int, documents: bool) -> None:
        """Add ``n`` texts encoded to ``n_encoded`` (``documents``) or to ``n_queries_encoded``."""
        if documents:
            self.n_encoded += n
        else:
            self.n_queries_encoded += n

    def _encode_into_shard(self, store: TokenCache, digests: np.ndarray, off: np.ndarray, parts: list[Part],
                           new: list[str], miss: np.ndarray, progress: bool,
                           repeats: tuple[np.ndarray, np.ndarray] | None = None) -> TokenVectors | None:
        """A large result with new texts ``new`` (at positions ``miss``; ``off``: the whole result's offsets),
        written as one shard: the cached ``parts`` are gathered into the shard's temporary file, then each
        batch of the model is written to its place there (:meth:`_write_batches`), so the result is never
        held in memory, nor the new texts' vectors.  ``repeats``: ``(positions, sources)``, new texts found
        again at ``positions``, copied there from the positions ``sources`` once written.  Returns the shard's
        memory map; the result in memory where a vector is not finite (not cached); ``None`` where the cache
        cannot be written (warned)."""
        held: list[np.ndarray] = []

        def write_new(out: np.ndarray) -> None:
            finite = self._write_batches(new, out, off, miss, progress)
            if repeats is not None and len(repeats[0]):
                assemble(out, off, [(repeats[0], TokenVectors(out, off), repeats[1])])
            if not finite:
                held.append(np.array(out))  # the result, in memory: its file is removed, not renamed into the cache
                raise _NotFinite

        try:
            return store.consolidate(digests, off, parts, dim=self.dim, then=write_new)
        except _NotFinite:
            return TokenVectors(held[0], off)  # the caller's check names the encoder

    def encode_queries(self, texts: Sequence[str]) -> TokenVectors:
        """Token vectors of queries (counted in ``n_queries_encoded``, not in ``n_encoded``): a small in-memory memo
        shares them between the operators of one pipeline (``muvera`` then ``maxsim``), and the disk cache keeps
        them where :func:`~ragkit.encoders.queries_cached` says (``ragkit eval`` and ``train`` ask)."""
        texts = as_texts(texts, "encode_queries")
        if not texts:
            return TokenVectors.empty(self.dim)
        memo = self._memo
        uniq = list(dict.fromkeys(texts))
        with self._memo_lock:  # shared by the threads of a served pipeline: each hit moves to the end
            # (the newest) without leaving the memo, so another thread never misses it meanwhile and encodes
            # it again in another batch (other padding, other last digits: the same query, other scores)
            got = {t: memo.pop(t) for t in uniq if t in memo}
            memo.update(got)
        miss = [t for t in uniq if t not in got]
        if miss:  # encoded outside the lock
            fresh = self._encode(miss, self.cache_enabled and queries_cached(), False, count=False)
            with self._memo_lock:  # a text another thread encoded meanwhile keeps its first vectors
                got.update((t, memo.setdefault(t, np.asarray(fresh[i]))) for i, t in enumerate(miss))
                # least recently used first: the oldest go once the memo is past memo_size
                for old in list(itertools.islice(memo, max(0, len(memo) - self.memo_size))):
                    del memo[old]
        mats = [got[t] for t in texts]
        lens = np.array([len(m) for m in mats], np.int64)
        off = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(lens, out=off[1:])
        return TokenVectors(np.concatenate(mats), off)  # (each ``(n_i, dim)``: the width without the model)


_TOKEN_ENCODERS: dict[tuple[Any, ...], TokenEncoder] = {}
_TOKEN_LOCK = threading.Lock()


def get_token_encoder(model: str = DEFAULT_MODEL, **kwargs: Any) -> TokenEncoder:
    """A shared :class:`TokenEncoder` per (model, settings).  A registered custom encoder
    (:func:`~ragkit.encoders.register_encoder`) gives one vector per text, no token vectors: a
    ParamError.

    Checked before anything is loaded, as :func:`~ragkit.encoders.get_encoder` checks its own: ``model`` that is no
    string (nor ``os.PathLike``) is an :class:`~ragkit.errors.InputTypeError`, an empty one a
    :class:`~ragkit.errors.ParamError`, and so is a keyword :class:`TokenEncoder` does not take (``batchsize=``: the
    keywords it takes, and the closest), a ``batch_size`` that is no positive int, a ``max_seq_length`` below 1 and a
    ``cache`` that is no bool."""
    from ragkit.encoders.custom import registered_encoder

    model = _model_name(model, "get_token_encoder", TokenEncoder)
    _refuse_unknown_settings(kwargs, "get_token_encoder", TokenEncoder)
    check_encoder_settings("get_token_encoder",
                           **{k: v for k, v in kwargs.items() if k in ("batch_size", "max_seq_length", "cache")})
    if registered_encoder(model) is not None:
        raise ParamError(f"model {model!r} is a registered custom encoder, which gives one vector per text; "
                         "multi-vector operators (muvera, maxsim, maxsim_exact) read per-token vectors of a "
                         "sentence-transformers model (a name or folder)")
    key = settings_key(TokenEncoder, model, kwargs)  # the defaults filled in: (m, batch_size=32) is (m)
    with _TOKEN_LOCK:  # one encoder (one query memo, one cache reader) per key, whatever the threads
        if key not in _TOKEN_ENCODERS:
            _TOKEN_ENCODERS[key] = TokenEncoder(shared_model_arg(model), **kwargs)
        return _TOKEN_ENCODERS[key]
