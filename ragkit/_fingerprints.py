"""Digests that identify a corpus and a batch of queries: the ids and texts a saved operator was fitted on
(:func:`corpus_fingerprint`, :func:`corpus_texts_digest`) and the queries a fit learned from
(:func:`query_digests`, :func:`taught_digests`)."""

from __future__ import annotations

import hashlib
import threading
import weakref
from typing import Any, Sequence

import numpy as np

from ragkit.types import Corpus, Queries, normalised_text

__all__ = ["corpus_fingerprint", "TEXTS_KEY", "hash_strings", "corpus_texts_digest", "query_id_digests",
           "query_digests", "taught_digests"]


def corpus_fingerprint(corpus: Corpus) -> dict[str, Any]:
    """``{"n": documents, "ids_sha1": hash of the ids in order}``: what a saved operator was fitted on.

    Remembered per :class:`Corpus` object (corpora are immutable), as :func:`corpus_texts_digest` is: a pipeline's
    save or load hashes the ids once, not once per step (about 40 ms for 1M ids).  A new dict each call."""
    with _TEXT_DIGESTS_LOCK:
        known = _ID_DIGESTS.get(corpus)
    if known is None:
        known = hashlib.sha1("\x00".join(corpus.ids.tolist()).encode("utf-8", "surrogatepass")).hexdigest()
        with _TEXT_DIGESTS_LOCK:
            _ID_DIGESTS[corpus] = known
    return {"n": len(corpus), "ids_sha1": known}


#: the key of ``params.json`` holding :func:`corpus_texts_digest` of the corpus a saved operator was fitted on,
#: beside ``"corpus"`` (:func:`corpus_fingerprint`, its ids).  Folders saved before it have ``"corpus"`` only:
#: they load with their ids checked, not their texts (said once, see
#: :func:`~ragkit._saves._check_given_corpus`).  A separate key, so that an earlier ragkit still loads the folders
#: this one saves.
TEXTS_KEY = "corpus_texts_blake2b"

_TEXT_DIGESTS: "weakref.WeakKeyDictionary[Corpus, str]" = weakref.WeakKeyDictionary()
#: :func:`corpus_fingerprint`'s SHA-1 of each corpus's ids (guarded by the same lock)
_ID_DIGESTS: "weakref.WeakKeyDictionary[Corpus, str]" = weakref.WeakKeyDictionary()
_TEXT_DIGESTS_LOCK = threading.Lock()


#: strings :func:`hash_strings` feeds to a hash at once (a chunk's lengths, then its joined UTF-8 bytes)
_STRING_CHUNK = 65536
#: Characters of joined strings :func:`hash_strings` feeds per ``update`` (4 Mi: 4-16 MiB of UTF-8).
_HASH_PIECE = 1 << 22


def hash_strings(h: Any, column: Sequence[str] | np.ndarray) -> None:
    """Feed ``column`` (strings) to the hash ``h`` (``hashlib``'s ``update``) in chunks of 65,536: each chunk's
    string lengths (int64, characters), then its strings joined as UTF-8 (lone surrogates kept), so no two lists
    of strings feed the same bytes.  What :func:`corpus_texts_digest` and
    :mod:`ragkit.eval.provenance`'s fingerprints hash.

    The joined strings are fed in pieces of about :data:`_HASH_PIECE` characters (whole strings; a string
    longer than that alone): the same bytes, with memory bounded by the piece, not by 65,536 documents (130 MiB
    for texts of ~1 KB)."""
    for a in range(0, len(column), _STRING_CHUNK):
        chunk = column[a:a + _STRING_CHUNK]
        part = chunk.tolist() if isinstance(chunk, np.ndarray) else list(chunk)
        lens = np.fromiter(map(len, part), dtype=np.int64, count=len(part))
        h.update(lens.tobytes())
        ends = np.cumsum(lens)  # (characters up to and including each string)
        cuts = np.searchsorted(ends, np.arange(_HASH_PIECE, int(ends[-1]) if len(ends) else 0, _HASH_PIECE),
                               side="right")
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(part)]):
            if hi > lo:  # (a string longer than a piece spans several cut points: one piece of its own)
                h.update("".join(part[lo:hi]).encode("utf-8", "surrogatepass"))


def corpus_texts_digest(corpus: Corpus) -> str:
    """BLAKE2b-128 (hex) of the documents' titles and texts in order: what an operator indexed of each
    document beside its id (a corpus's ids are :func:`corpus_fingerprint`'s).

    Streamed in chunks of 65,536 documents: per chunk, each string's length (int64, characters) then the
    UTF-8 bytes of the strings joined, so no two lists of strings share a digest.  About 0.3 s for 1M texts
    of ~86 characters on one core; remembered per :class:`Corpus` object (corpora are immutable), so a
    pipeline's save or load hashes its documents once, not once per step."""
    with _TEXT_DIGESTS_LOCK:
        known = _TEXT_DIGESTS.get(corpus)
    if known is not None:
        return known
    h = hashlib.blake2b(digest_size=16)
    hash_strings(h, corpus.titles)
    hash_strings(h, corpus.texts)
    digest = h.hexdigest()
    with _TEXT_DIGESTS_LOCK:
        _TEXT_DIGESTS[corpus] = digest
    return digest

def _digest(s: str) -> int:
    """The first 8 bytes of the SHA-1 of ``s`` (UTF-8, lone surrogates kept) as an unsigned little-endian int."""
    return int.from_bytes(hashlib.sha1(s.encode("utf-8", "surrogatepass")).digest()[:8], "little")


def query_id_digests(ids: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """Column 0 of :func:`query_digests` alone, shape ``(n,)`` ``uint64``: the digest of each query's id of
    ``ids`` and its text of ``texts`` (aligned; what :func:`~ragkit.run.learned_query_ids` matches, without
    hashing the normalised texts)."""
    return np.fromiter((_digest(f"{i}\x00{t}") for i, t in zip(ids, texts)), dtype=np.uint64, count=len(ids))


def query_digests(queries: Queries) -> np.ndarray:
    """Two ``uint64`` per query, shape ``(n, 2)``: the first 8 bytes of SHA-1 over its id and text (column 0:
    the same query, id and text, has the same digest in any dataset; :func:`query_id_digests`), and over its
    text alone, :func:`~ragkit.types.normalised_text` (column 1: the same question under another id), for
    :meth:`~ragkit.operator.Operator.learned_from`.  (Operators saved before recorded column 0 alone, shape
    ``(n,)``.)"""
    texts = np.fromiter((_digest(normalised_text(t)) for t in queries.texts), dtype=np.uint64, count=len(queries))
    return np.stack([query_id_digests(queries.ids, queries.texts), texts], axis=1)


def taught_digests(op: Any) -> tuple[np.ndarray, np.ndarray]:
    """The digests of the queries that the operator or pipeline ``op``, or one inside it, learned from (their
    ``trained_on_``, :func:`query_digests`): those of their ids and texts (column 0) and those of their normalised
    texts (column 1; none for an operator saved before it was recorded, one digest per query), each ``uint64``,
    concatenated over the tree; both empty when none learned (then :meth:`~ragkit.operator.Operator.learned_from` and
    :func:`~ragkit.run.learned_query_ids` hash no query)."""
    ids, texts, stack = [], [], [op]
    while stack:
        node = stack.pop()
        stack.extend(node.children())
        digests = getattr(node, "trained_on_", None)
        if digests is not None and len(digests):
            digests = np.asarray(digests)
            ids.append(digests if digests.ndim == 1 else digests[:, 0])  # (saved before: one per query)
            if digests.ndim == 2:
                texts.append(digests[:, 1])
    none = np.zeros(0, np.uint64)
    return (np.concatenate(ids) if ids else none), (np.concatenate(texts) if texts else none)
