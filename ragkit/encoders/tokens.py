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
lists in ``all_special_ids``.  Text is truncated at the model's ``max_seq_length``
(256 for MiniLM) unless ``max_seq_length`` is given.

Document token vectors are cached on disk like dense embeddings
(``$RAGKIT_CACHE/tokens/<model key hash>/``), keyed by model identity + settings and the
BLAKE2 digest of each text, in shards of three ``.npy`` files (flat vectors, offsets,
digests) written through temporary files renamed into place.  Shards are memory-mapped on
read.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from ragkit.encoders.cache import UNREADABLE, text_digests, write_shard
from ragkit.encoders.sentence import (
    DEFAULT_MODEL,
    as_texts,
    get_encoder,
    model_fingerprint,
    queries_cached,
    resolve_model,
)
from ragkit.errors import ArtifactError, DataError, ParamError

__all__ = ["TokenVectors", "TokenEncoder", "TokenCache", "get_token_encoder", "gather_index"]


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

    def doc_index(self) -> np.ndarray:
        """``(n_tokens,)`` int64: which text each flat row belongs to."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)

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
    def load(cls, folder: Path, prefix: str = "tokens", mmap: bool = False) -> "TokenVectors":
        try:
            data = np.load(folder / f"{prefix}.npy", allow_pickle=False, mmap_mode="r" if mmap else None)
            off = np.load(folder / f"{prefix}.offsets.npy", allow_pickle=False)
        except FileNotFoundError as e:
            raise ArtifactError(f"{e.filename}: file not found") from None
        except (ValueError, OSError, EOFError) as e:
            raise ArtifactError(f"{folder / prefix}: corrupt or truncated token arrays ({e})") from None
        try:
            return cls(data, off)
        except DataError as e:
            raise ArtifactError(f"{folder / prefix}: inconsistent token arrays ({e})") from None


class TokenCache:
    """Persistent ``text digest -> token matrix`` store for one model key (ragged shards).

    A shard is ``<uuid>.npy`` (flat float16 vectors), ``<uuid>.offsets.npy`` and
    ``<uuid>.keys.npy`` (16-byte digests), each written to a temporary file and renamed,
    the keys file last, so a reader never sees a half-written shard.
    """

    def __init__(self, root: Path, key: str) -> None:
        self.folder = Path(root) / hashlib.sha1(key.encode()).hexdigest()[:16]
        self.key = key
        self._index: dict[bytes, tuple[int, int]] | None = None
        self._shards: list[TokenVectors] = []
        #: guards _index and _shards (as EmbeddingCache's): a put drops the index, and a reload numbers the
        #: shards anew, so a get on another thread read one index's numbers in the other's shards
        self._lock = threading.RLock()

    def _load_index(self) -> dict[bytes, tuple[int, int]]:
        with self._lock:
            return self._index if self._index is not None else self._read_index()

    def _read_index(self) -> dict[bytes, tuple[int, int]]:
        index: dict[bytes, tuple[int, int]] = {}
        self._shards = []
        loaded = []
        if self.folder.is_dir():
            for keys_path in sorted(self.folder.glob("*.keys.npy")):
                name = keys_path.name[: -len(".keys.npy")]
                try:
                    keys = np.load(keys_path, allow_pickle=False)
                    tv = TokenVectors.load(self.folder, name, mmap=True)
                except UNREADABLE:
                    continue  # damaged or empty shard: ignored, its texts are re-encoded
                if len(keys) == len(tv):
                    loaded.append((keys, tv))
        # larger shards last, so a text present in several shards resolves to the largest one
        # (a whole corpus then comes back as one memory map instead of a gathered copy)
        for keys, tv in sorted(loaded, key=lambda kt: len(kt[0])):
            s = len(self._shards)
            self._shards.append(tv)
            index.update(zip(keys.tolist(), zip([s] * len(keys), range(len(keys)))))
        self._index = index
        return index

    def get(self, digests: np.ndarray) -> tuple[list[tuple[np.ndarray, TokenVectors]], np.ndarray]:
        """Cached token matrices: ``[(positions, TokenVectors)]`` per shard hit, and the ``hit`` mask."""
        with self._lock:  # the shard numbers looked up and the shards they number, from one moment
            index = self._load_index()
            where = [index.get(d, (-1, -1)) for d in digests.tolist()]
            shards = list(self._shards)
        arr = np.array(where, dtype=np.int64).reshape(-1, 2)
        hit = arr[:, 0] >= 0
        parts = []
        for s in np.unique(arr[hit, 0]).tolist():  # loop over shards, not texts
            pos = np.flatnonzero(arr[:, 0] == s)
            shard = shards[s]
            if len(pos) == len(shard) and np.array_equal(arr[pos, 1], np.arange(len(shard))):
                parts.append((pos, shard))  # the whole shard in order: keep the memory map, no copy
            else:
                parts.append((pos, shard.take(arr[pos, 1])))
        return parts, hit

    def put(self, digests: np.ndarray, tokens: TokenVectors) -> None:
        if len(digests) == 0:
            return
        if write_shard(self.folder, self.key, [(".npy", np.asarray(tokens.data, np.float16)),
                                               (".offsets.npy", tokens.offsets), (".keys.npy", digests)]):
            with self._lock:
                self._index = None


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
        Keep ``[CLS]``/``[SEP]`` rows (default) or drop every tokenizer special id.
    cache : bool
        Cache document token matrices on disk (``$RAGKIT_CACHE/tokens``).

    Examples
    --------
    >>> enc = get_token_encoder()                       # doctest: +SKIP
    >>> tv = enc.encode(["a claim about cells"]); tv.lengths.tolist(), tv.dim   # doctest: +SKIP
    ([6], 384)
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, batch_size: int = 32, max_seq_length: int | None = None,
                 special_tokens: Literal["keep", "drop"] = "keep", cache: bool = True) -> None:
        if special_tokens not in ("keep", "drop"):
            raise ParamError(f"TokenEncoder: special_tokens must be 'keep' or 'drop', got {special_tokens!r}")
        self.model_name = model
        self.path = resolve_model(model)
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.special_tokens = special_tokens
        self.cache_enabled = cache
        self.key = f"{model_fingerprint(self.path)}|tokens|msl={max_seq_length}|special={special_tokens}|l2"
        self._cache: TokenCache | None = None
        #: texts actually encoded (not read from cache) since creation
        self.n_encoded = 0
        self._memo: dict[str, np.ndarray] = {}
        self._memo_lock = threading.Lock()
        #: query texts kept in the in-memory memo
        self.memo_size = 4096

    def __repr__(self) -> str:
        return f"TokenEncoder({self.model_name!r}, special_tokens={self.special_tokens!r})"

    @property
    def model(self) -> Any:
        return get_encoder(self.model_name, max_seq_length=self.max_seq_length).model

    @property
    def dim(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    @property
    def store(self) -> TokenCache:
        if self._cache is None:
            from ragkit.eval.beir import cache_dir

            self._cache = TokenCache(cache_dir() / "tokens", self.key)
        return self._cache

    def _forward(self, texts: list[str], progress: bool = False) -> TokenVectors:
        """Encode without cache: one forward per batch of length-sorted texts."""
        import torch

        m = self.model  # the shared model of this max_seq_length (Encoder.model)
        special = np.array(sorted(set(m.tokenizer.all_special_ids)), dtype=np.int64)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        chunks: list[np.ndarray] = []
        lens = np.zeros(len(texts), np.int64)
        starts = range(0, len(texts), self.batch_size)
        if progress:
            try:
                from tqdm.auto import tqdm

                starts = tqdm(starts, desc="token vectors", unit="batch")
            except ImportError:  # pragma: no cover
                pass
        with torch.inference_mode():
            for s in starts:
                idx = order[s:s + self.batch_size]
                feats = m.preprocess([texts[i] for i in idx])
                feats = {k: v for k, v in feats.items() if torch.is_tensor(v)}
                out = m[0].forward(dict(feats))
                emb = out["token_embeddings"].float().numpy()
                keep = feats["attention_mask"].numpy().astype(bool)
                if self.special_tokens == "drop":
                    keep &= ~np.isin(feats["input_ids"].numpy(), special)
                chunks.append(emb[keep])  # row-major: tokens of text 0, then text 1, ...
                lens[idx] = keep.sum(1)
        flat = np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)
        norms = np.linalg.norm(flat, axis=1, keepdims=True)
        flat = (flat / np.maximum(norms, 1e-12)).astype(np.float16)
        # rows are in length-sorted order: put them back in input order
        sorted_off = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(lens[order], out=sorted_off[1:])
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        idx, off = gather_index(sorted_off, inv)
        return TokenVectors(flat[idx], off)

    def encode(self, texts: Sequence[str], *, cache: bool | None = None, progress: bool | None = None) -> TokenVectors:
        """Token vectors of ``texts`` (float16 unit rows), read from the disk cache where present."""
        texts = as_texts(texts, "encode")
        return self._encode(texts, self.cache_enabled if cache is None else cache, progress, count=True)

    def _encode(self, texts: list[str], use_cache: bool, progress: bool | None, count: bool) -> TokenVectors:
        """:meth:`encode`; ``count``: add the texts encoded (not read from the cache) to ``n_encoded``
        (documents: queries are not counted)."""
        if not texts:
            return TokenVectors.empty(self.dim)
        if not use_cache:
            self.n_encoded += len(texts) if count else 0
            return self._forward(texts, bool(progress))
        digests = text_digests(texts)
        parts, hit = self.store.get(digests)
        miss = np.flatnonzero(~hit)
        if len(miss):
            fresh = self._forward([texts[i] for i in miss], progress if progress is not None else len(miss) > 500)
            self.n_encoded += len(miss) if count else 0
            self.store.put(digests[miss], fresh)
            parts.append((miss, fresh))
        if len(parts) == 1 and np.array_equal(parts[0][0], np.arange(len(texts))):
            return parts[0][1]
        pos = np.concatenate([p for p, _ in parts])
        allv = TokenVectors.concat([tv for _, tv in parts], self.dim)
        inv = np.empty(len(texts), np.int64)
        inv[pos] = np.arange(len(pos))
        return allv.take(inv)

    def encode_queries(self, texts: Sequence[str]) -> TokenVectors:
        """Token vectors of queries (not counted in ``n_encoded``): a small in-memory memo shares them
        between the operators of one pipeline (``muvera`` then ``maxsim``), and the disk cache keeps
        them where :func:`~ragkit.encoders.queries_cached` says (``ragkit eval`` and ``train`` ask)."""
        texts = as_texts(texts, "encode_queries")
        if not texts:
            return TokenVectors.empty(self.dim)
        memo = self._memo
        uniq = list(dict.fromkeys(texts))
        with self._memo_lock:  # shared by the threads of a served pipeline: popped and trimmed by each
            got = {t: memo.pop(t) for t in uniq if t in memo}   # popped, to go back in as the newest
        miss = [t for t in uniq if t not in got]
        if miss:  # encoded outside the lock
            fresh = self._encode(miss, self.cache_enabled and queries_cached(), False, count=False)
            got.update((t, np.asarray(fresh[i])) for i, t in enumerate(miss))
        with self._memo_lock:
            memo.update(got)  # least recently used first: the oldest go once the memo is past memo_size
            for old in list(itertools.islice(memo, max(0, len(memo) - self.memo_size))):
                del memo[old]
        mats = [got[t] for t in texts]
        lens = np.array([len(m) for m in mats], np.int64)
        off = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(lens, out=off[1:])
        return TokenVectors(np.concatenate(mats) if off[-1] else np.zeros((0, self.dim), np.float16), off)


_TOKEN_ENCODERS: dict[tuple[Any, ...], TokenEncoder] = {}


def get_token_encoder(model: str = DEFAULT_MODEL, **kwargs: Any) -> TokenEncoder:
    """A shared :class:`TokenEncoder` per (model, settings).  A registered custom encoder
    (:func:`~ragkit.encoders.register_encoder`) gives one vector per text, no token vectors: a
    ParamError."""
    from ragkit.encoders.custom import registered_encoder

    if registered_encoder(model) is not None:
        raise ParamError(f"model {model!r} is a registered custom encoder, which gives one vector per text; "
                         "multi-vector operators (muvera, maxsim, maxsim_exact) read per-token vectors of a "
                         "sentence-transformers model (a name or folder)")
    key = (resolve_model(model), tuple(sorted(kwargs.items())))
    if key not in _TOKEN_ENCODERS:
        _TOKEN_ENCODERS[key] = TokenEncoder(model, **kwargs)
    return _TOKEN_ENCODERS[key]
