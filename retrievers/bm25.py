"""BM25 over scipy.sparse matrices, scored for whole query batches.

Two variants (Kamphuis et al., "Which BM25 do you mean? A large-scale reproducibility study
of scoring variants", ECIR 2020):

* ``okapi`` — rank-bm25's ``BM25Okapi`` exactly (Robertson et al., "Okapi at TREC-3"):
  ``idf = log(N - df + 0.5) - log(df + 0.5)``, where a negative idf is replaced by
  ``epsilon * mean(idf)`` (the mean over *all* indexed terms, negative ones included), and
  term weight ``idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))``.  A query term
  that occurs twice counts twice, as in rank-bm25.
* ``lucene`` — the Lucene/Anserini formula behind the published BEIR figures:
  ``idf = log(1 + (N - df + 0.5) / (df + 0.5))`` and ``tf / (tf + k1 * (1 - b + b * dl / avgdl))``,
  where ``N`` and ``avgdl`` count only documents with an indexed token (Lucene's ``docCount`` of the
  field; ``okapi`` counts every document, as rank-bm25 does), so blank documents change no score.

Every document's term weights are precomputed (float64) into a CSR matrix ``W^T``
(terms x docs); a batch of queries is a sparse count matrix ``Q`` (queries x terms) and the
scores are ``Q @ W^T`` in one sparse product, followed by an ``argpartition`` top-k.  The
term counts are kept in the same terms x docs layout, sharing ``W^T``'s index arrays: per
posting a float64 weight, an int32 document id and a ``uint16`` count (14 bytes; ``int32``
counts where a count exceeds 65,535).  The weights stay float64: float32 weights reordered
the top 1000 of 8 (lucene) and 5 (okapi) of SciFact's 300 test queries beyond exact ties.
``add()`` appends the counts of new documents without re-tokenising the old ones and
recomputes the weights (idf and avgdl change) from them.  A save holds the counts, the
weights, the document lengths and idf, so ``load`` recomputes nothing, and ``load(mmap=True)``
memory-maps them (searches read the rows of their query terms from the files).

Tokenisation is batched: each text is lowercased, split on non-alphanumerics by one
``bytes.translate`` + ``split`` (equivalent to splitting on ``[^0-9a-z]+``; a text that is not ASCII is first
NFC-normalised and rid of invisible format characters, see :class:`Tokenizer`), and every
*distinct* surface form is stop-listed, stemmed (PyStemmer) and mapped to a term id once;
the surface -> term-id map is cached on the retriever, so a token costs one dict look-up.

Known differences from Lucene/Anserini (SciFact test nDCG@10 0.6766 here, 0.679 published):

* Document lengths are exact here; Lucene stores each document's length lossily, as a one-byte
  ``SmallFloat`` norm, so its ``dl / avgdl`` is rounded (one reason for the gap).
* PyStemmer's Porter stems words of one or two letters (``ms`` -> ``m``, ``es`` -> ``e``, so "MS"
  matches "M"); Lucene's ``PorterStemmer`` leaves words of two letters or fewer alone.  On SciFact
  test this is 0.67658 here against 0.67665 with Lucene's rule: a known divergence, kept so that
  saved indexes (whose vocabularies hold these stems) stay valid.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from functools import lru_cache
from itertools import chain, repeat
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, NamedTuple, Sequence, TypedDict, get_args

import numpy as np
import scipy.sparse as sp
from pydantic import Field, model_validator

from ragkit._checks import refuse_one_text
from ragkit._cpus import thread_count
from ragkit._saves import load_array, read_json, save_arrays, write_json
from ragkit._topk import group_positions, rankings_from_matrix, topk_rows
from ragkit.errors import DataError, ParamError, some_ids
from ragkit.operator import Operator, edited_during_search, is_prefix, searched_ids
from ragkit.options import PARAM
from ragkit.params import MetadataFilter, Params
from ragkit.registry import register
from ragkit.types import Corpus, FullTexts, State, TrainSet

_log = logging.getLogger("ragkit")

__all__ = ["BM25", "BM25Params", "Tokenizer", "LUCENE_STOPWORDS", "LEXICAL_COUNTS", "LexicalCounts", "QueryCounts"]

#: Lucene's default English stop set (EnglishAnalyzer), as used by Anserini.
LUCENE_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they "
    "this to was will with".split()
)


def _lower(text: str) -> str:
    """``text.lower()``, with ``İ`` (U+0130) lowercased to a plain ``i`` (Java's, hence Lucene's, rule)."""
    return text.replace("\u0130", "I").lower()


# bytes.translate table: ASCII digits and lowercase letters are kept, every other byte
# (punctuation, whitespace, the bytes of non-ASCII characters) becomes a space.
_ALNUM = bytes(c if (48 <= c <= 57 or 97 <= c <= 122) else 32 for c in range(256))
#: Ideographic and kana characters, each its own token in ``unicode`` split (as Lucene's StandardTokenizer
#: emits Han characters and hiragana: a run of them is a sentence, not a word)
_IDEOGRAPHS = "\u3040-\u309f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"


#: By Unicode version (``unicodedata.unidata_version``): the planes (of 65,536 code points) that hold every combining
#: mark (M*) and format character (Cf) of that version, as a scan of all its code points found them (Unicode 14.0:
#: planes 0, 1 and 14; the others hold ideographs, private use and unassigned code points).  :func:`_char_ranges`
#: reads only these planes of a version listed, and every plane of any other; ``tests/test_bm25_invisible.py``
#: checks the list against a full scan under the Python it runs on.  Add a version only so checked.
_MARK_PLANES: dict[str, tuple[int, ...]] = {"14.0.0": (0, 1, 14)}
#: The categories :func:`_char_ranges` looks for, as codes
_MARK_CODES = {"Mn": 1, "Mc": 1, "Me": 1, "Cf": 2}


@lru_cache(maxsize=1)
def _char_ranges() -> tuple[str, str, str]:
    """``(marks, formats, bmp_formats)``: regex character-class bodies (ranges) of the combining marks (categories
    M*), of the format characters (category Cf) and of those in the BMP, in this Python's Unicode version.  Built
    on first use from ``unicodedata.category`` of each code point of the planes that hold them (:data:`_MARK_PLANES`:
    0.025 s of CPU for Unicode 14.0's three planes, where the scan of all 1.1M code points took 0.2 s; 0.1 s for a
    version not listed, whose every plane is read)."""
    import sys
    from itertools import repeat

    n = sys.maxunicode + 1
    plane = 1 << 16
    codes = np.zeros(n, np.int8)
    for p in _MARK_PLANES.get(unicodedata.unidata_version, range(n // plane)):
        chars = np.arange(p * plane, (p + 1) * plane, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
        codes[p * plane:(p + 1) * plane] = np.fromiter(map(_MARK_CODES.get, map(unicodedata.category, chars),
                                                           repeat(0)), np.int8, plane)

    def ranges(inside: np.ndarray) -> str:
        edges = np.flatnonzero(np.diff(np.concatenate([[False], inside, [False]]).astype(np.int8)))
        return "".join(f"{re.escape(chr(a))}-{re.escape(chr(b - 1))}" for a, b in zip(edges[::2].tolist(),
                                                                                      edges[1::2].tolist()))

    formats = codes == 2
    return ranges(codes == 1), ranges(formats), ranges(formats[:plane])


@lru_cache(maxsize=1)
def _unicode_word() -> re.Pattern[str]:
    """``unicode`` split: an ideograph alone, or a run of Unicode letters and digits (``\\w`` without
    the underscore) and combining marks (categories M*: Devanagari vowel signs, a decomposed accent),
    which ``\\w`` does not count as word characters.  Built on first use (a pass over the code points)."""
    marks = _char_ranges()[0]
    return re.compile(rf"[{_IDEOGRAPHS}]|(?:(?![{_IDEOGRAPHS}])[^\W_]|[{marks}])+")


@lru_cache(maxsize=1)
def _format_char() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """``(maybe, exact)``: a format character (Unicode category Cf: soft hyphen U+00AD, ZWNJ U+200C, ZWJ U+200D,
    bidi marks, word joiner U+2060, BOM U+FEFF, tag characters ...), which :func:`_clean` removes, or any character
    outside the BMP (``maybe``: a class of BMP characters, which ``re`` tests with one bitmap, ~4 ns a character),
    and a format character (``exact``: its astral ranges make ``re`` test each range, ~12 ns a character; read only
    where ``maybe`` found one)."""
    _, formats, bmp = _char_ranges()
    return re.compile(f"[{bmp}\U00010000-\U0010ffff]"), re.compile(f"[{formats}]")


def _clean(text: str) -> str:
    """``text`` as every tokenizer splits it: lowercased (:func:`_lower`) and, where it is not ASCII (one
    ``str.isascii``, a flag: ASCII texts cost nothing more), NFC-normalised before and after lowercasing (a
    decomposed "cafe\\u0301" is the composed "café"; the second pass composes what lowercasing makes
    composable, "T\\u0308" -> "ẗ", and the first lets "I\\u0307" lowercase to "i" as "İ" does) with its format
    characters (category Cf) removed first: UAX #29 (rule WB4, which Lucene's StandardTokenizer follows) ignores
    them inside a word, so "Donau\\u00addampf" (soft hyphen) is "donaudampf" and Persian "می\\u200cخواهم"
    (ZWNJ) is one word.  A zero-width space (U+200B, category Cf too) is a word boundary there: it becomes a
    space.  Compatibility forms are not folded (no NFKC): full-width "ｉＰｈｏｎｅ" stays full-width."""
    if text.isascii():
        return text.lower()
    maybe, exact = _format_char()
    if maybe.search(text) is not None:
        text = exact.sub("", text.replace("\u200b", " "))
    return unicodedata.normalize("NFC", _lower(unicodedata.normalize("NFC", text)))


#: What shows nothing and is no white space: the control characters (category Cc, a set Unicode never changes:
#: U+0000-001F and U+007F-009F) other than white space (``str.split`` splits at TAB, LF, ..., U+001C-001F and NEL
#: U+0085), and the replacement character U+FFFD.  ``alnum`` and ``unicode`` split at them, and
#: :func:`ragkit.encoders.sentence.blank_texts` counts a text of them (and of format characters, which
#: :func:`_clean` has removed) as blank.
_HIDDEN = "".join(c for c in map(chr, range(0xA0)) if unicodedata.category(c) == "Cc" and not c.isspace()) + "\ufffd"
#: The ASCII ones, as bytes (``bytes.translate`` deletes them: ~0.7 ns a byte)
_HIDDEN_ASCII = _HIDDEN[:_HIDDEN.index("\x80")].encode("ascii")
#: One of them, and a character that is none of them
_HIDDEN_CHAR = re.compile(f"[{re.escape(_HIDDEN)}]")
_SHOWN_CHAR = re.compile(f"[^{re.escape(_HIDDEN)}]")


def _whitespace_split(text: str) -> list[str]:
    """``whitespace`` split: the words of ``_clean(text)`` between white space, less those that show nothing (only
    control characters or U+FFFD: "\\x00", "\\x01\\x02"; format characters were removed by :func:`_clean`).  A
    word keeps every character it holds ("a\\x00b" is one word, as "word," keeps its comma).  Words are filtered
    only in a text holding such a character: one ``bytes.translate`` per ASCII text (one regex search per text
    that is not), no per-word loop elsewhere."""
    low = _clean(text)
    if low.isascii():
        if len(low.encode("ascii").translate(None, _HIDDEN_ASCII)) == len(low):
            return low.split()
    elif _HIDDEN_CHAR.search(low) is None:
        return low.split()
    return [w for w in low.split() if _SHOWN_CHAR.search(w) is not None]


#: A letter outside ASCII (``\w`` less digits, ``_`` and ASCII), which ``alnum`` split drops, and a word holding one
_NON_ASCII_LETTER = re.compile(r"[^\W\d_\x00-\x7f]")
_NON_ASCII_WORD = re.compile(r"\w*[^\W\d_\x00-\x7f]\w*")
#: The fit's check of its script reads at most this many documents (evenly spaced), the first this many characters
#: of each: a few ms however large the corpus
_SCRIPT_SAMPLE = 1000
#: A sampled document counts as written outside ASCII where such letters are at least this share of its
#: characters (SciFact: 11 of 5,183, its Greek "NF-κB", "TNF-α"; French or German text: a few percent, Japanese
#: or Russian: most) ...
_SCRIPT_DOC_SHARE = 0.01
#: ... and ``alnum`` warns at fit where at least this share of the sampled documents count (a quarter: a toy corpus
#: of 5 with one French document does not warn)
_SCRIPT_WARN_SHARE = 0.25
#: Set while a ``sharded`` retriever fits one of its shards (:func:`_shard_fit`): the fit skips the check of its
#: script, which the sharded retriever runs once on its whole corpus (:meth:`BM25._check_script`).  Checked per
#: shard, 700 shards of ~3 documents logged 7 warnings per fit, each with its own shard's figures ("33% of the
#: documents (3 sampled)"), where one index over the same corpus logged none.
_SHARD_FIT: ContextVar[bool] = ContextVar("ragkit_bm25_shard_fit", default=False)


@contextlib.contextmanager
def _shard_fit() -> Iterator[None]:
    """Within it, a BM25 fit does not check the script of its documents (:data:`_SHARD_FIT`): the fit is one
    shard's, whose ``sharded`` retriever checks its whole corpus once.  (A function, not the ``ContextVar``, is what
    the shard's fit refers to: a function pickled by value for a Ray task refers to it by name, and a
    ``ContextVar`` does not pickle.)"""
    token = _SHARD_FIT.set(True)
    try:
        yield
    finally:
        _SHARD_FIT.reset(token)


#: Set while a ``sharded`` retriever's shard searches (:func:`_shard_search`): the search does not warn of queries
#: that find nothing (:meth:`BM25._warn_query_without_word`), which the sharded retriever says once for the whole
#: index.  Said per shard, 3 shards logged 3 warnings per batch (on Ray none: the actors' logs are not shown).
_SHARD_SEARCH: ContextVar[bool] = ContextVar("ragkit_bm25_shard_search", default=False)


#: Set, to a list, by :func:`_shard_search` where the ``sharded`` retriever wants every candidate's float64 score:
#: a BM25 search appends to it the float64 ``(n_q, w)`` top-k arrays of its blocks of queries, in query order (each
#: row its ranking's scores before their float32 rounding, best first, ``-inf`` past its matches), which the merge
#: orders two shards' tied candidates by: kept from its top-k, not scored again.
_SHARD_FINE: ContextVar[list[list[np.ndarray]] | None] = ContextVar("ragkit_bm25_shard_fine", default=None)


@contextlib.contextmanager
def _shard_search(fine: list[list[np.ndarray]] | None = None) -> Iterator[None]:
    """Within it, a BM25 search does not warn of queries that find nothing (:data:`_SHARD_SEARCH`): the search is
    one shard's, whose ``sharded`` retriever warns once (a function, as :func:`_shard_fit` is).  ``fine``: a list
    each search within appends its top-k's float64 scores to (:data:`_SHARD_FINE`), one array per block of
    queries."""
    token = _SHARD_SEARCH.set(True)
    fine_token = _SHARD_FINE.set(fine)
    try:
        yield
    finally:
        _SHARD_FINE.reset(fine_token)
        _SHARD_SEARCH.reset(token)


def _outside_ascii(texts: Sequence[str]) -> tuple[float, int, str]:
    """``(share, sampled, word)``: the share of (up to :data:`_SCRIPT_SAMPLE`, evenly spaced) ``texts`` whose letters
    outside ASCII are at least :data:`_SCRIPT_DOC_SHARE` of their first :data:`_SCRIPT_SAMPLE` characters, how
    many were sampled and a word of the first such text ("" where none counts).  ASCII texts cost one
    ``str.isascii`` (a flag, not a scan)."""
    n = len(texts)
    if not n:
        return 0.0, 0, ""
    picks = np.unique(np.linspace(0, n - 1, min(n, _SCRIPT_SAMPLE)).astype(np.int64)).tolist()
    sample = [t[:_SCRIPT_SAMPLE] for t in map(texts.__getitem__, picks) if isinstance(t, str) and not t.isascii()]
    counted = [t for t in sample if len(t) - len(_NON_ASCII_LETTER.sub("", t)) >= _SCRIPT_DOC_SHARE * len(t)]
    word = _NON_ASCII_WORD.search(counted[0]) if counted else None
    return len(counted) / len(picks), len(picks), word.group() if word else ""


def _all_ascii(texts: Sequence[Any]) -> bool:
    """Whether every string of ``texts`` is ASCII (what is no string is passed over): one ``str.isascii`` (a flag,
    not a scan) each, in C, to the first that is not (a :class:`FullTexts` joins one title and text at a time)."""
    try:
        return all(map(str.isascii, texts))
    except TypeError:  # (a text that is no string)
        return all(not isinstance(t, str) or t.isascii() for t in texts)


def _holds_letter_outside_ascii(text: str) -> bool:
    """Whether ``text`` holds a letter (``str.isalpha``) outside ASCII (a regex finds the candidates, the first
    letter among them ends the look)."""
    return any(m.group().isalpha() for m in _NON_ASCII_LETTER.finditer(text))


#: Held while a search decides whether it is the first of its retriever to warn of a query without a word
_QUERY_SAID_LOCK = threading.Lock()
#: The parameters that make a save's terms and counts (its analysis), recorded in its ``weights.json`` and checked
#: against its ``params.json`` at load
_ANALYSIS = ("tokenizer", "stopwords", "stemmer", "fields")
#: The folders (resolved paths) whose load warned that an older ragkit wrote them (once per folder and process)
_OLDER_NOTED: set[str] = set()

#: Documents tokenised at once by the check of documents without a word (:meth:`BM25._without_word`)
_CHECK_CHUNK = 10_000


#: Dense score blocks (:meth:`BM25._topk_dense`) are at most this many float64 cells (8 MB); larger batches are
#: chunked.  The sparse path's blocks (:func:`_query_blocks`) hold at most about this many postings of their
#: queries' terms, at most the documents a query (the product's entries, 8 bytes of score and 4 of document id
#: each, and a few temporaries; or the cells of the dense rows of :func:`_wide_topk`).
_BLOCK_CELLS = 1_000_000
_MIN_TASK_CELLS = 100_000
#: Per query, the postings :func:`_query_blocks` counts on top of its terms' (a block's fixed costs)
_QUERY_COST = 64
#: A query whose candidates (matching documents that pass the filter) exceed this share of the documents (and ``k``)
#: is ranked from a dense row of every document (:func:`_wide_topk`), cheaper there than sorting its entries; the
#: others from their entries alone (:func:`_sparse_topk`).  Both give the same rankings.
_DENSE_SHARE = 0.25
#: Search through :meth:`BM25._topk_dense` (a dense row of every document per query), the path before
#: :func:`_sparse_topk`: for the tests and ``bench/bm25_sparse_topk.py``, which compare the two
_DENSE_TOPK = False
#: Characters of text tokenised at once when counting terms (bounds the Python token objects of a fit).
COUNT_CHUNK_CHARS = 8_000_000


#: The methods that turn query texts into counts: a subclass that overrides one does not read PRF's counts
_COUNTING = ("make_tokenizer", "_term_ids", "_count_parts", "_count_matrix", "query_matrix")
#: Largest term count stored as ``uint16`` (a document with a term more often than this stores ``int32`` counts).
_U16 = int(np.iinfo(np.uint16).max)
#: Postings weighed at once by ``_weigh`` (its float64 temporaries: a few times 8 bytes each, ~40 MB in all; at
#: 1 << 22, ~130 MB), and placed at once by :func:`_terms_by_docs`.  A fit of 50,000 documents (6.3M postings):
#: weighed in 0.05 s, not 0.16-0.28 s (the blocks stay in cache), traced peak +81 MB not +177 MB (48 MB of
#: either the weights themselves).
_WEIGH_BLOCK = 1 << 20


def _index_dtype(nnz: int, n: int) -> type:
    """scipy's index dtype for a sparse matrix of ``nnz`` stored values and ``n`` columns (or rows):
    int32 where both fit, else int64."""
    return np.int32 if max(nnz, n) < np.iinfo(np.int32).max else np.int64


def _postings_per_query(q: sp.csr_matrix, wt: sp.csr_matrix) -> np.ndarray:
    """Per query of ``q`` (int64), the postings of its terms in ``wt`` (terms x docs): an upper bound of the
    documents it matches (its row of ``q @ wt``, the zero-score matches of :func:`_with_zero_matches` included:
    those are postings of its terms too).  One pass over ``q``'s entries."""
    df = np.diff(wt.indptr).astype(np.int64)
    upto = np.zeros(q.nnz + 1, np.int64)
    np.cumsum(df[q.indices], out=upto[1:])
    return upto[q.indptr[1:]] - upto[q.indptr[:-1]]


def _query_blocks(q: sp.csr_matrix, wt: sp.csr_matrix, n_jobs: int,
                  postings: np.ndarray | None = None) -> list[int]:
    """Row bounds ``[0, ..., n_q]`` of the blocks of queries ``q`` that :meth:`BM25._search_index` answers at once:
    each holds about :data:`_BLOCK_CELLS` postings of its queries' terms (``wt``'s rows), at most the documents a
    query (an upper bound of the product's entries, and of a dense row's cells: a block's memory is bounded; a block
    of queries matching most of the corpus holds as many as :meth:`BM25._topk_dense`'s did), plus
    :data:`_QUERY_COST` per query; with ``n_jobs > 1`` at least ``n_jobs`` blocks where the batch holds ``n_jobs``
    times :data:`_MIN_TASK_CELLS`.  A query of more postings than a block is a block alone.  ``postings``:
    :func:`_postings_per_query` of ``q`` and ``wt`` where the caller has it (the search passes each block's part
    of it on to :meth:`BM25._topk`: counted once per batch), else counted here."""
    n_q = q.shape[0]
    if not n_q:
        return [0, 0]
    if postings is None:
        postings = _postings_per_query(q, wt)
    cost = np.minimum(postings, wt.shape[1]) + _QUERY_COST
    ends = np.cumsum(cost)
    target = _BLOCK_CELLS
    if n_jobs > 1:
        target = min(target, max(-(-int(ends[-1]) // n_jobs), _MIN_TASK_CELLS))
    block = (ends - cost) // target  # the block each query starts in
    return [0, *(np.flatnonzero(np.diff(block)) + 1).tolist(), n_q]


def _with_zero_matches(m: sp.csr_matrix, h: sp.csr_matrix) -> sp.csr_matrix:
    """``m`` (scores, CSR) with an explicit 0 at every entry of ``h`` (the postings of terms of idf <= 0 that the
    queries hold) ``m`` does not store: a matching document whose weights sum to 0 (scipy's product drops it),
    sorted indices."""
    m.sort_indices()
    h.sort_indices()
    n = max(m.shape[1], 1)
    mk = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr)) * n + m.indices
    hk = np.repeat(np.arange(h.shape[0], dtype=np.int64), np.diff(h.indptr)) * n + h.indices
    at = np.searchsorted(mk, hk)
    new = hk[(at >= len(mk)) | (mk[np.minimum(at, max(len(mk) - 1, 0))] != hk)] if len(mk) else hk
    keys = np.concatenate([mk, new])
    vals = np.concatenate([m.data, np.zeros(len(new), m.data.dtype)])
    order = np.argsort(keys, kind="stable")
    keys, vals = keys[order], vals[order]
    rows = keys // n
    ptr = np.zeros(m.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=m.shape[0]), out=ptr[1:])
    out = sp.csr_matrix((vals, (keys - rows * n).astype(np.int64), ptr), shape=m.shape)
    out.has_sorted_indices = True
    return out


def _sorted_rows(ptr: np.ndarray, data: np.ndarray, cols: np.ndarray,
                 n_cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR arrays with each row's entries by ascending column (scipy's ``sort_indices``, in place)."""
    m = sp.csr_matrix((data, cols, ptr), shape=(len(ptr) - 1, n_cols), copy=False)
    m.sort_indices()
    return np.asarray(m.indptr, np.int64), m.data, m.indices


def _is_wide(candidates: np.ndarray, n_cols: int, k: int) -> np.ndarray:
    """Which rows of ``candidates`` (per query, its candidates among ``n_cols`` documents) are ranked from a dense
    row (:func:`_wide_topk`): more than :data:`_DENSE_SHARE` of the documents and more than ``k``, so that no
    ``-inf`` cell of a dense row is ever at the cut (a tie there re-picked the row: a pass over it)."""
    return (candidates > _DENSE_SHARE * n_cols) & (candidates > k)


def _merge_rows(n_q: int, parts: list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]]) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """One ``(rows int64, scores float32)`` top-k of ``n_q`` queries from ``parts``: ``(positions, (rows,
    scores))`` each, the top-k of the queries at ``positions``; as wide as the widest, padded with ``-inf``
    (float64 scores where the parts' are: ``exact``)."""
    width = max((r.shape[1] for _, (r, _) in parts), default=0)
    out_rows = np.zeros((n_q, width), np.int64)
    out_sc = np.full((n_q, width), -np.inf, np.result_type(np.float32, *(sc.dtype for _, (_, sc) in parts)))
    for at, (r, sc) in parts:  # (a loop over the parts: two or three)
        out_rows[at, :r.shape[1]] = r
        out_sc[at, :r.shape[1]] = sc
    return out_rows, out_sc


def _scatter(s: np.ndarray, m: sp.csr_matrix, values: np.ndarray | float) -> None:
    """``s[i, j] = values`` at every stored entry ``(i, j)`` of ``m`` (CSR of ``s``'s shape; ``values``: its
    ``data`` or one number), through flat positions of ``s`` (C-contiguous), not a pair of index arrays."""
    n_rows, n_cols = s.shape
    flat = np.repeat(np.arange(n_rows, dtype=np.int64) * n_cols, np.diff(m.indptr)) + m.indices
    s.reshape(-1)[flat] = values


def _wide_topk(q: sp.csr_matrix, wt: sp.csr_matrix, hits: sp.csr_matrix | None, drop: np.ndarray | None,
               k: int, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of queries ``q`` whose terms' postings hold much of the corpus (:func:`_postings_per_query`),
    as :meth:`BM25._topk_dense` takes it: per chunk of about :data:`_BLOCK_CELLS` cells of rows, the product of
    its queries scattered straight into a dense row of every document (``-inf`` where no query term is held, 0 at
    the zero-score matches of ``hits``, ``-inf`` where ``drop``), :func:`topk_rows` over it.  A query that turns
    out to have at most :data:`_DENSE_SHARE` of the documents or ``k`` candidates (:func:`_is_wide`) is ranked
    from its dense row's candidates by :func:`_sparse_topk` instead, as :meth:`BM25._topk` ranks it: every
    query takes the route :meth:`BM25._topk` assigns it, and no entry of the product is copied to get there.
    Returns ``(rows int64, scores float32)`` of shape ``(n_q, k')``, ``-inf`` scores past a row's candidates;
    ``exact``: the scores float64, as summed (their float32 rounding is the scores otherwise returned)."""
    n_q, n_cols = q.shape[0], wt.shape[1]
    step = max(1, _BLOCK_CELLS // max(n_cols, 1))
    dropped = None if drop is None else np.flatnonzero(drop)
    parts = []
    for a in range(0, n_q, step):  # a loop over chunks of rows (as _topk_dense's blocks), not over queries
        b = min(a + step, n_q)
        m = (q[a:b] @ wt).tocsr()
        h = None if hits is None else (q[a:b] @ hits).tocsr()
        s = np.full(m.shape, -np.inf)
        if h is not None:  # matches whose weights sum to 0 score 0
            _scatter(s, h, 0.0)
        _scatter(s, m, m.data)
        # candidates: the product's entries without hits and drop; else at least as many as its or hits' entries,
        # less the documents dropped; counted (a pass over the rows) only where that bound does not settle it
        least = np.diff(m.indptr)
        if h is not None:
            least = np.maximum(least, np.diff(h.indptr))
        if dropped is not None:
            s[:, dropped] = -np.inf
            least = least - len(dropped)
        wide = _is_wide(least, n_cols, k)
        if not wide.all() and (h is not None or dropped is not None):
            wide = _is_wide(np.count_nonzero(s > -np.inf, axis=1), n_cols, k)
        if wide.all():
            parts.append((np.arange(a, b), _exact(s, topk_rows(s, k), exact)))
            continue
        few = s[~wide]
        held = few > -np.inf
        ptr = np.zeros(len(few) + 1, np.int64)
        np.cumsum(np.count_nonzero(held, axis=1), out=ptr[1:])
        parts.append((a + np.flatnonzero(~wide), _sparse_topk(ptr, few[held], np.nonzero(held)[1], k, exact=exact)))
        if wide.any():
            sw = s[wide]
            parts.append((a + np.flatnonzero(wide), _exact(sw, topk_rows(sw, k), exact)))
    return _merge_rows(n_q, parts)


def _exact(scores: np.ndarray, top: tuple[np.ndarray, np.ndarray], exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """``top`` (:func:`topk_rows` of the float64 ``scores``), its scores as they are in ``scores`` (float64, not
    rounded to float32) where ``exact``: a gather of ``k`` cells per row."""
    if not exact:
        return top
    return top[0], np.take_along_axis(scores, top[0], axis=1)


def _sparse_topk(ptr: np.ndarray, data: np.ndarray, cols: np.ndarray, k: int,
                 exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of each row of a sparse score matrix given by its CSR arrays (``ptr`` int64 row pointers,
    ``data`` float64 scores, ``cols`` document rows ascending within each row): the first ``k`` of the row's
    entries by score descending, ties by the lower document row, at the cut too, exactly as
    :func:`~ragkit._topk.topk_rows` picks them from a dense row whose other cells are ``-inf``.

    Rows are grouped by their number of entries ``n`` into buckets of width ``w`` (a power of two, at most ``k``
    where ``n <= k``: no ``-inf`` cell is ever tied at a cut); each bucket is one ``(rows, w)`` matrix of the
    rows' entries in document order, padded with ``-inf``, whose top ``k`` one :func:`topk_rows` picks (a tie
    at its cut keeps the lower position, i.e. the lower document row).  The cost follows the matches (at most
    twice them, padding included), whatever the corpus size; a loop over the buckets (about log2 of the longest
    row), none over queries.  Returns ``(rows int64, scores float32)`` of shape ``(n_q, min(k, longest row))``,
    ``-inf`` scores past each row's entries; ``exact``: the scores float64, as in ``data``."""
    n_q = len(ptr) - 1
    lens = np.diff(ptr)
    width = int(min(k, lens.max())) if n_q else 0
    out_rows = np.zeros((n_q, width), np.int64)
    out_sc = np.full((n_q, width), -np.inf, np.float64 if exact else np.float32)
    if not width:
        return out_rows, out_sc
    # bucket width: the next power of two (1 for one entry), at most k while the row holds at most k entries
    pow2 = np.left_shift(1, np.ceil(np.log2(np.maximum(lens, 1))).astype(np.int64))
    bucket = np.where(lens <= k, np.minimum(pow2, k), pow2)
    bucket[lens == 0] = 0
    for w in np.unique(bucket[bucket > 0]).tolist():  # a loop over the buckets (widths), not the queries
        qs = np.flatnonzero(bucket == w)
        n = lens[qs]
        pos = group_positions(n)  # each entry's position in its row
        src = np.repeat(ptr[qs], n) + pos  # where it is in data / cols
        flat = np.repeat(np.arange(len(qs), dtype=np.int64) * w, n) + pos
        block = np.full(len(qs) * w, -np.inf)
        block[flat] = data[src]
        top, sc = _exact(block.reshape(len(qs), w), topk_rows(block.reshape(len(qs), w), k), exact)
        top, sc = top[:, :width], sc[:, :width]  # (a bucket wider than every row: its last columns are pads)
        take = np.minimum(top, (n - 1)[:, None]) + ptr[qs][:, None]  # (pads: any entry of the row; scored -inf)
        out_rows[qs, :top.shape[1]] = cols[take]
        out_sc[qs, :top.shape[1]] = sc
    return out_rows, out_sc


def _narrow_topk(q: sp.csr_matrix, wt: sp.csr_matrix, hits: sp.csr_matrix | None, drop: np.ndarray | None,
                 k: int, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of queries ``q`` from their rows of the sparse product ``q @ wt`` (with the zero-score matches of
    ``hits``, less the documents ``drop`` excludes) by :func:`_sparse_topk`; none of them has more than
    :data:`_DENSE_SHARE` of the documents as candidates (:meth:`BM25._topk` sends those to :func:`_wide_topk`);
    ``exact``: float64 scores (:func:`_sparse_topk`)."""
    m = (q @ wt).tocsr()
    if hits is not None:  # matches whose weights sum to 0 score 0 (scipy's product does not store them)
        m = _with_zero_matches(m, (q @ hits).tocsr())
    ptr = m.indptr.astype(np.int64)
    data, cols = m.data, m.indices
    if drop is not None and m.nnz:  # a metadata filter's excluded rows: not candidates
        keep = ~drop[cols]
        kept = np.zeros(len(keep) + 1, np.int64)
        np.cumsum(keep, out=kept[1:])
        ptr = kept[ptr]
        data, cols = data[keep], cols[keep]
    return _sparse_topk(*_sorted_rows(ptr, data, cols, wt.shape[1]), k, exact=exact)


def _edited_during_search(detail: str) -> DataError:
    """The error of a search during which the index was edited (``add`` / ``remove`` on another thread), with
    ``detail`` (what no longer matched): :func:`~ragkit.operator.edited_during_search`."""
    return edited_during_search("bm25", detail)


def _check_postings(folder: Path, data: np.ndarray, ind: np.ndarray, ptr: np.ndarray, n_rows: int, n_cols: int,
                    col: str) -> None:
    """Refuse (:class:`~ragkit.errors.ArtifactError` naming the file) a saved CSR matrix of ``n_rows`` x
    ``n_cols`` (``tf_data`` / ``tf_indices`` / ``tf_indptr`` in ``folder``; ``col`` names what a column is)
    unless scipy can use it as it is: integer row pointers and ids, ``n_rows + 1`` pointers from 0 to the
    number of postings, never decreasing, every id in ``0..n_cols - 1``, one value per posting.  Both layouts
    of a save are checked so, before scipy reads them: a crafted pointer (negative, decreasing) or id crashed
    the process (a segmentation fault, heap corruption) in ``tocsc`` or the product, checksums recomputed
    or not."""
    from ragkit.errors import ArtifactError

    def bad(name: str, what: str, kind: str = "BM25 arrays do not match") -> ArtifactError:
        return ArtifactError(f"{folder / (name + '.npy')}: {kind}: {what}; expected the counts matrix of "
                             f"{n_rows:,} rows x {n_cols:,} {col}s as ragkit saves it: save the index again")

    for name, arr in (("tf_indptr", ptr), ("tf_indices", ind)):
        if arr.ndim != 1 or arr.dtype not in (np.int32, np.int64):
            raise bad(name, f"an array of shape {arr.shape} and dtype {arr.dtype} (expected 1-D int32 or int64)")
    if data.ndim != 1 or data.dtype.kind not in "fiu" or data.shape != ind.shape:
        raise bad("tf_data", f"an array of shape {data.shape} and dtype {data.dtype} (expected {len(ind):,} "
                             "counts, one per posting of tf_indices.npy)")
    if len(ptr) != n_rows + 1:
        raise bad("tf_indptr", f"{len(ptr):,} row pointers (expected {n_rows + 1:,})")
    first, last = int(ptr[0]), int(ptr[-1])
    if first != 0 or last != len(ind):
        raise bad("tf_indptr", f"row pointers from {first:,} to {last:,} (expected 0 to {len(ind):,}, the number "
                               "of postings)", "corrupt BM25 arrays")
    if len(ptr) > 1 and not bool((ptr[1:] >= ptr[:-1]).all()):
        at = int(np.argmax(ptr[1:] < ptr[:-1]))
        raise bad("tf_indptr", f"row pointers that decrease (row {at:,}: {int(ptr[at]):,} then {int(ptr[at + 1]):,})",
                  "corrupt BM25 arrays")
    if len(ind):
        lo, hi = int(ind.min()), int(ind.max())
        if lo < 0 or hi >= n_cols:
            raise bad("tf_indices", f"{col} ids {lo}..{hi} (expected 0..{n_cols - 1})", "corrupt BM25 arrays")


def _checked_vocab(path: Path, terms: Any) -> dict[str, int]:
    """``{term: column}`` of a saved ``vocab.json`` (``path``) holding ``terms``; an :class:`ArtifactError` naming
    the file unless it is a list of distinct strings (a term repeated left the counts matrix more rows than the
    vocabulary has terms, and the first search failed in scipy; terms that are numbers matched no query word)."""
    from ragkit.errors import ArtifactError

    if not isinstance(terms, list):
        raise ArtifactError(f"{path}: expected a JSON list of terms (strings), got {type(terms).__name__}; save the "
                            "index again")
    kinds = set(map(type, terms))
    if not kinds <= {str}:
        bad = next(t for t in terms if not isinstance(t, str))
        raise ArtifactError(f"{path}: expected a JSON list of terms (strings), got {len(terms):,} entries holding "
                            f"{', '.join(sorted(k.__name__ for k in kinds - {str}))} values such as {bad!r:.40} (entry "
                            f"{next(i for i, t in enumerate(terms) if not isinstance(t, str)):,}); save the index "
                            "again")
    vocab = {t: i for i, t in enumerate(terms)}  # (the saved column order, as insertion order: terms() reads it)
    if len(vocab) != len(terms):
        seen: set[str] = set()
        first = next(i for i, t in enumerate(terms) if t in seen or seen.add(t))  # type: ignore[func-returns-value]
        raise ArtifactError(f"{path}: expected distinct terms, got {len(terms):,} entries of which {len(vocab):,} "
                            f"distinct ({terms[first]!r:.40} again at entry {first:,}); save the index again")
    return vocab


def _avgdl_of(value: object) -> float | None:
    """``value`` as an average document length, a float, where it is one: a real number (``int``, ``float`` or a
    numpy one; not a bool) whose float is finite and > 0; else ``None``.  :meth:`BM25.set_collection` and a save's
    load (``collection.json``) both test it so, so that a save holds no avgdl its load refuses, and the weights
    never divide by 0 (an int too large for a float, or a numpy ``longdouble`` too small for one, was taken by
    one or the other: an OverflowError, or an avgdl of 0.0)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    try:
        out = float(value)
    except OverflowError:
        return None
    return out if 0 < out < math.inf else None


#: Bytes of an array :func:`_checked_floats` tests at a time (small enough to stay in the cache between its tests).
_CHECK_CHUNK = 1 << 20


def _checked_floats(folder: Path, name: str, arr: np.ndarray, n: int, what: str, unit: str, kinds: str = "f",
                    nonnegative: bool = False) -> np.ndarray:
    """``arr`` (``<name>.npy`` in ``folder``) as float64 (itself where it is already), once it is 1-D of ``n``
    finite values (``>= 0`` with ``nonnegative``) of a dtype of ``kinds`` (numpy's kind letters: ``f`` float,
    ``i`` / ``u`` integers); else an :class:`ArtifactError` naming the file, ``what`` it should hold and what it
    holds (a string idf crashed the load in a numpy ufunc, an int8 one was taken): for a value out of range, the
    first one, its position (``unit``: what an entry is, "term", "document", "posting") and how many there are.

    The values are read once, in chunks of :data:`_CHECK_CHUNK` bytes, each read by ``min`` and ``max`` while it
    is in the cache (NaN propagates through both; an infinity is one of them; a memory-mapped file is read once, not
    once per reduction of the whole array): no temporary, which a mask of the bad values is (made only to name them,
    on failure), or ``isfinite`` of a chunk would be."""
    from ragkit.errors import ArtifactError

    path = folder / f"{name}.npy"
    if arr.ndim != 1 or arr.dtype.kind not in kinds or len(arr) != n:
        names = {"f": "float", "i": "integer", "u": "unsigned integer"}
        raise ArtifactError(f"{path}: an array of shape {arr.shape} and dtype {arr.dtype} (expected {n:,} "
                            f"{' or '.join(names[k] for k in kinds)} values: {what}); save the index again")
    out = np.asarray(arr, dtype=np.float64)
    if not n:
        return out
    step = max(1, _CHECK_CHUNK // out.itemsize)
    if not all(math.isfinite(lo := float(c.min())) and math.isfinite(float(c.max())) and (not nonnegative or lo >= 0)
               for c in (out[i:i + step] for i in range(0, n, step))):
        bad = ~np.isfinite(out)
        if nonnegative:
            bad |= out < 0
        at = int(np.argmax(bad))
        raise ArtifactError(f"{path}: a value {float(out[at])!r} at {unit} {at:,} ({int(np.count_nonzero(bad)):,} of "
                            f"{n:,} {'negative or ' if nonnegative else ''}not finite; expected {what}, finite); save "
                            "the index again")
    return out


def _terms_by_docs(parts: list[sp.csr_matrix], n_terms: int,
                   first: sp.csr_matrix | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
    """``(counts, lengths)``: the terms x docs CSR ``(n_terms, n_docs)`` of the term counts of ``first``
    (terms x docs, its documents first) and then of ``parts`` (docs x terms chunks, each as wide as the
    vocabulary when it was counted), with sorted indices, and the float64 token count of each document of
    ``parts`` (in order).

    Counts are ``uint16`` where every count fits, else ``int32``.  The result's arrays are allocated once
    and each part is placed into them and released (``parts`` is emptied): the peak holds the result, the
    parts not yet placed and one part's transpose, not a stacked copy and a transposed one of everything.
    """
    df = np.zeros(n_terms, np.int64)
    n_docs = 0
    dtypes = []
    if first is not None:
        df[:first.shape[0]] += np.diff(first.indptr).astype(np.int64)
        n_docs += first.shape[1]
        dtypes.append(first.data.dtype)
    for m in parts:
        df[:m.shape[1]] += np.bincount(m.indices, minlength=m.shape[1])
        n_docs += m.shape[0]
        dtypes.append(m.data.dtype)
    nnz = int(df.sum())
    idx = _index_dtype(nnz, n_docs)
    indptr: np.ndarray = np.zeros(n_terms + 1, idx)
    np.cumsum(df, out=indptr[1:])
    indices: np.ndarray = np.empty(nnz, idx)
    data = np.empty(nnz, np.uint16 if all(d == np.uint16 for d in dtypes) else np.int32)
    free = indptr[:-1].astype(np.int64)  # next free position of each term's row

    def place(ptr: np.ndarray, ind: np.ndarray, val: np.ndarray, offset: int) -> None:
        """Append a terms x docs block's postings (documents ``offset`` on) to its terms' rows, in runs
        of terms of about :data:`_WEIGH_BLOCK` postings (the int64 positions of a whole index, an
        ``add`` to a large one, cost 24 bytes per posting at once)."""
        t = len(ptr) - 1
        ptr = np.asarray(ptr, dtype=np.int64)
        lo = 0
        while lo < t:  # a loop over blocks of postings
            hi = min(t, max(lo + 1, int(np.searchsorted(ptr, ptr[lo] + _WEIGH_BLOCK, side="right")) - 1))
            a, b = int(ptr[lo]), int(ptr[hi])
            bdf = np.diff(ptr[lo:hi + 1])
            pos = np.repeat(free[lo:hi] - ptr[lo:hi], bdf) + np.arange(a, b, dtype=np.int64)
            indices[pos] = ind[a:b] if offset == 0 else np.add(ind[a:b], offset, dtype=idx)
            data[pos] = val[a:b]
            free[lo:hi] += bdf
            lo = hi

    offset = 0
    if first is not None:
        place(first.indptr, first.indices, first.data, 0)
        offset = first.shape[1]
    lengths = []
    while parts:  # a loop over chunks of documents
        m = parts.pop(0)
        csum = np.zeros(m.nnz + 1, np.int64)
        np.cumsum(m.data, out=csum[1:])
        lengths.append((csum[m.indptr[1:]] - csum[m.indptr[:-1]]).astype(np.float64))
        del csum
        t = m.tocsc()  # (docs x terms CSC = terms x docs CSR, documents ascending in each term)
        n = m.shape[0]
        del m
        place(t.indptr, t.indices, t.data, offset)
        offset += n
        del t
    counts = sp.csr_matrix((data, indices, indptr), shape=(n_terms, n_docs), copy=False)
    counts.has_sorted_indices = True
    return counts, np.concatenate(lengths) if lengths else np.zeros(0, np.float64)



#: An ``add`` copies the postings it keeps in place as runs (one slice per term the new documents hold) where
#: there are fewer such terms than postings / this; else every posting is placed again (:func:`_terms_by_docs`).
_RUNS_PER_POSTING = 512


def _append_docs(first: sp.csr_matrix, parts: list[sp.csr_matrix],
                 n_terms: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """What ``_terms_by_docs(parts, n_terms, first)`` gives (the same arrays, dtypes and values), made for an
    ``add``: the new documents' postings (``parts``) go after each of their terms' postings in ``first``, and
    the postings between two such terms are copied as one run (a slice), not placed one by one: one document
    added to 100,000 SciFact-like ones copied ~10M postings in runs, ~4x faster than placing each.  Many
    terms touched (a large add): :func:`_terms_by_docs`."""
    new, dl = _terms_by_docs(parts, n_terms)  # terms x the new documents
    n_old, n_new = first.shape[1], new.shape[1]
    old_ptr = np.full(n_terms + 1, int(first.indptr[-1]), np.int64)  # (vocabulary grown: terms with no postings)
    old_ptr[:len(first.indptr)] = first.indptr
    new_ptr = np.asarray(new.indptr, dtype=np.int64)
    touched = np.flatnonzero(np.diff(new_ptr))  # terms the new documents hold, ascending
    if len(touched) * _RUNS_PER_POSTING > first.nnz:
        return _terms_by_docs([new.T.tocsr()], n_terms, first=first)[0], dl
    nnz, n_docs = first.nnz + new.nnz, n_old + n_new
    idx = _index_dtype(nnz, n_docs)
    out_ptr = old_ptr + new_ptr
    indices: np.ndarray = np.empty(nnz, idx)
    data = np.empty(nnz, np.uint16 if first.data.dtype == new.data.dtype == np.uint16 else np.int32)
    new_ind = np.add(new.indices, n_old, dtype=idx)
    t0 = 0
    for t in [*touched.tolist(), n_terms]:  # a loop over runs of terms: the kept postings up to a touched term
        a, b = int(old_ptr[t0]), int(old_ptr[min(t + 1, n_terms)])
        o = int(out_ptr[t0])
        indices[o:o + b - a] = first.indices[a:b]
        data[o:o + b - a] = first.data[a:b]
        if t < n_terms:  # then the term's new postings
            na, nb = int(new_ptr[t]), int(new_ptr[t + 1])
            o += b - a
            indices[o:o + nb - na] = new_ind[na:nb]
            data[o:o + nb - na] = new.data[na:nb]
        t0 = t + 1
    counts = sp.csr_matrix((data, indices, out_ptr.astype(idx)), shape=(n_terms, n_docs), copy=False)
    counts.has_sorted_indices = True
    return counts, dl


def _check_choice(arg: str, given: Any, field: str) -> None:
    """A :class:`ParamError` naming the :class:`Tokenizer` argument ``arg``, the value ``given`` and the choices,
    unless ``given`` is one of the values :class:`BM25Params` allows for ``field`` (its ``Literal``'s: one source of
    them).  Before, an unknown ``stopwords`` or ``split`` was taken for ``"none"`` / ``"alnum"`` without a word
    (``Tokenizer("porter")`` removed no stopword).  ``stemmer`` is :func:`_check_stemmer`'s."""
    choices = get_args(BM25Params.model_fields[field].annotation)
    if not (isinstance(given, str) and given in choices):
        raise ParamError(f"Tokenizer: {arg} {given!r:.60} is not one of {', '.join(map(repr, choices))} "
                         f"(the choices of BM25Params.{field})", f"Tokenizer.{arg}")


def _check_stemmer(given: Any) -> None:
    """A :class:`ParamError` naming ``given`` and the choices unless it is ``"none"`` or one of PyStemmer's
    algorithms (``Stemmer.algorithms()``: ``"german"``, ``"porter"``, ...), which the standalone :class:`Tokenizer`
    takes; :class:`BM25Params` (BM25, PRF) limits ``stemmer`` to its own choices, which its model checks.  An unknown
    name raised PyStemmer's bare ``KeyError`` before."""
    import Stemmer

    algorithms = sorted(Stemmer.algorithms())
    if not (isinstance(given, str) and (given == "none" or given in algorithms)):
        params = get_args(BM25Params.model_fields["stemmer"].annotation)
        raise ParamError(f"Tokenizer: stemmer {given!r:.60} is not 'none' nor one of PyStemmer's algorithms "
                         f"({', '.join(map(repr, algorithms))}); BM25 and PRF take {', '.join(map(repr, params))} "
                         "(the choices of BM25Params.stemmer)", "Tokenizer.stemmer")


@lru_cache(maxsize=8)
def _stemmer(name: str):
    import Stemmer

    return Stemmer.Stemmer(name)


class Tokenizer:
    """Lowercase, split, drop stopwords, stem (PyStemmer).

    ``stopwords`` and ``split`` take exactly the values of their :class:`BM25Params` fields (``split``:
    ``tokenizer``'s), ``stemmer`` ``"none"`` or any of PyStemmer's algorithms (``Stemmer.algorithms()``: ``"german"``,
    ``"french"``, ..., a superset of the ``"porter"``, ``"english"`` BM25 and PRF take); any other value is a
    :class:`~ragkit.errors.ParamError` naming the argument, the value and the choices.

    Parameters
    ----------
    stopwords : "lucene" | "none"
        Lucene's English stop set, removed before stemming.
    stemmer : "porter" | "english" (Snowball) | "none" | any other PyStemmer algorithm ("german", ...)
        PyStemmer's algorithms: its Porter stems one- and two-letter words too (``ms`` -> ``m``),
        where Lucene's ``PorterStemmer`` leaves them alone (see the module docs).  BM25 and PRF take the first
        three (:class:`BM25Params`); this tokenizer, used on its own, any of ``Stemmer.algorithms()``.
    split : "alnum" | "unicode" | "whitespace"
        ``alnum`` splits on every character that is not ``[0-9a-z]`` after lowercasing (fast;
        letters outside ASCII are dropped: ``café`` -> ``caf``, Greek or Chinese text has no
        tokens); ``unicode`` keeps runs of Unicode letters, digits and combining marks, for
        text in other scripts or with accents, and makes each Han character or hiragana its own
        token (Lucene's StandardTokenizer does the same); ``whitespace`` is ``text.lower().split()``
        (the tokenisation of rank-bm25's README) less the words that show nothing: words of control characters
        (category Cc: NUL, ESC, DEL, ...) and U+FFFD only, which ``alnum`` and ``unicode`` split at too and
        :func:`~ragkit.encoders.sentence.blank_texts` counts as blank (a query "\\x00" matched every document
        holding a NUL word).  A word that shows something keeps every character, as it keeps its punctuation:
        "a\\x00b" is one word.  Format characters inside a word are handled as for every split (below): a soft
        hyphen or ZWJ is removed ("a\\u00adb" is "ab"), a zero-width space splits ("a\\u200bb" is "a", "b"), so
        no word is made of them.

    Before splitting, every split normalises a text that is not ASCII (ASCII texts, one ``str.isascii`` flag,
    are only lowercased): its format characters (Unicode category Cf: soft hyphen U+00AD, ZWNJ U+200C, ZWJ
    U+200D, word joiner U+2060, BOM U+FEFF, bidi marks) are removed, as UAX #29 word boundaries (rule WB4,
    Lucene's StandardTokenizer) ignore them inside a word ("Donau\u00addampf\u00adschifffahrt" is one word;
    Persian "می\u200cخواهم" is "میخواهم"), a zero-width space (U+200B) becomes a space, and the text is
    NFC-normalised, so the composed (NFC) and decomposed (NFD) spellings of a word give the same terms
    (``alnum`` read a decomposed "école" as ``e``, ``cole``).  Compatibility forms are *not* folded (no NFKC):
    full-width "ｉＰｈｏｎｅ１５" is not "iphone15" (``alnum`` drops it, ``unicode`` keeps it full-width), nor
    is a ligature "ﬁ" "fi".

    This changed the terms of texts that are not NFC (decomposed accents; the few characters NFC maps to
    another, as the ohm sign or CJK compatibility ideographs, under ``alnum`` and ``whitespace``) or that hold
    format characters, and of no other text.  An index saved before keeps the terms it was fitted with, while
    queries (and documents ``add`` appends) are tokenised the new way: fit again where the documents hold
    decomposed accents or format characters.  Likewise ``whitespace`` dropping the words that show nothing changed
    the terms and lengths of the texts holding such a word, and of no other: an index saved before keeps those
    terms (no query makes them now) and those lengths until fitted again.

    Examples
    --------
    >>> Tokenizer()(["The cells were dividing, rapidly!"])
    [['cell', 'were', 'divid', 'rapidli']]
    """

    def __init__(self, stopwords: str = "lucene", stemmer: str = "porter", split: str = "alnum") -> None:
        _check_choice("stopwords", stopwords, "stopwords")
        _check_stemmer(stemmer)  # ("none" or any PyStemmer algorithm: BM25Params' choices are BM25's and PRF's)
        _check_choice("split", split, "tokenizer")
        self.stop = LUCENE_STOPWORDS if stopwords == "lucene" else frozenset()
        self.stemmer_name = stemmer
        self.stem = None if stemmer == "none" else _stemmer(stemmer).stemWords
        self.split_kind = split

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["stem"] = None  # PyStemmer's stemmer does not pickle (nor deepcopy): rebuilt from its name
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.stemmer_name != "none":
            self.stem = _stemmer(self.stemmer_name).stemWords

    def surfaces(self, texts: Sequence[str]) -> list[list[Any]]:
        """Split each text into surface tokens (``bytes`` for ``alnum``, ``str`` for ``whitespace``).

        Lowercasing maps the dotted capital ``İ`` (U+0130) to ``i``, as Lucene's ``LowerCaseFilter``
        does: Python's ``str.lower`` makes it ``i`` + a combining dot, so "İstanbul" missed "istanbul".
        A text that is not ASCII is NFC-normalised and its format characters are removed first (:func:`_clean`).
        """
        refuse_one_text(texts, "Tokenizer.surfaces")
        try:
            if self.split_kind == "whitespace":
                return list(map(_whitespace_split, texts))
            if self.split_kind == "unicode":
                word = _unicode_word()
                return [word.findall(_clean(x)) for x in texts]
            return [_clean(x).encode("utf-8", "replace").translate(_ALNUM).split() for x in texts]
        except (AttributeError, TypeError):
            bad = next(i for i, x in enumerate(texts) if not isinstance(x, str))
            raise DataError(f"bm25: text {bad} is a {type(texts[bad]).__name__} ({texts[bad]!r:.60}), "
                            f"expected a string") from None

    def drops_letters(self, texts: Sequence[str]) -> np.ndarray:
        """Whether each text holds a letter (``str.isalpha``) this split drops, bool ``(len(texts),)``: a letter
        outside ASCII under ``alnum``; never under ``unicode`` or ``whitespace``, which keep every letter.  An
        ASCII text costs one ``str.isascii`` (a flag)."""
        if self.split_kind != "alnum":
            return np.zeros(len(texts), bool)
        return np.fromiter((isinstance(t, str) and not t.isascii() and _holds_letter_outside_ascii(_clean(t))
                            for t in texts), bool, len(texts))

    def normalize(self, surfaces: Sequence[Any]) -> list[str | None]:
        """Terms of distinct surface tokens: the stem, or ``None`` for a stopword."""
        words = [s.decode("ascii") if isinstance(s, bytes) else s for s in surfaces]
        keep = [w for w in words if w not in self.stop]
        stems = dict(zip(keep, self.stem(keep) if self.stem is not None else keep))
        # an empty stem is no term (Porter stems the "s" of "Fermat's" or "U.S." to ""): it would match
        # every document with a possessive
        return [stems.get(w) or None for w in words]

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        """Tokens (terms) of each text (a list of texts: one ``str`` is refused, a :class:`DataError`)."""
        refuse_one_text(texts, "Tokenizer")
        docs = self.surfaces(texts)
        uniq = sorted(set(chain.from_iterable(docs)))
        term = dict(zip(uniq, self.normalize(uniq)))
        return [[t for t in map(term.__getitem__, d) if t is not None] for d in docs]


class _IndexView(NamedTuple):
    """What a search reads of a fitted BM25, published in one assignment (``_view``) once an edit (fit, add,
    remove, set_collection, load) has made all of it: the corpus, the weights and zero-score hits of its
    documents, and the vocabulary whose columns they are.  References only (no array is copied); an edit builds
    new objects and publishes a new view, except the vocabulary, which an ``add`` grows in place (its earlier
    columns keep their terms: a query counted over the grown one is this view's query once cut to its
    ``n_terms`` columns)."""

    corpus: Corpus
    wt: sp.csr_matrix
    hits: sp.csr_matrix | None
    vocab: dict[str, int]

    @property
    def n_terms(self) -> int:
        return int(self.wt.shape[0])


class CollectionStats(TypedDict):
    """Collection statistics given from outside (:meth:`BM25.set_collection`)."""

    idf: np.ndarray
    avgdl: float


#: ``State.values`` key under which :class:`~ragkit.pipelines.PRF` passes its expanded queries as term counts
#: (one :class:`QueryCounts` per query) next to their text (``values["lexical_query"]``)
LEXICAL_COUNTS = "lexical_counts"


class LexicalCounts:
    """The expanded queries of one PRF call as term counts: how often each term is repeated in the text PRF
    wrote for each query (``values["lexical_query"]``), which is what a BM25 of the same analysis counts when
    it tokenises that text.  A BM25 reads them instead of tokenising ~``resolution`` words per query again
    (:meth:`BM25.expansion_matrix`), only where the texts it would search are exactly these.

    Attributes: ``counts`` (float64 CSR ``(n_q, n_terms)``, whole counts), ``terms`` (object array, the term of
    each column), ``texts`` (object array of the ``n_q`` texts written), ``expanded`` (bool ``(n_q,)``: the text
    is the counts' words; else it is the query itself, with no counts) and ``analysis`` (``(tokenizer,
    stopwords, stemmer)`` that made the terms)."""

    __slots__ = ("counts", "terms", "texts", "expanded", "analysis")

    def __init__(self, counts: sp.csr_matrix, terms: np.ndarray, texts: Sequence[str], expanded: np.ndarray,
                 analysis: tuple[str, str, str]) -> None:
        self.counts, self.terms, self.analysis = counts, terms, analysis
        self.texts = np.fromiter(texts, dtype=object, count=len(texts))
        self.expanded = np.asarray(expanded, dtype=bool)

    def __eq__(self, other: object) -> bool:
        """The same counts, terms, texts, ``expanded`` and analysis: a run's ``values["lexical_counts"]`` equals that
        of the same search by the pipeline saved and loaded (by identity they never did).  One batch is compared
        with itself at no cost; :meth:`BM25.expansion_matrix` tells batches apart by identity, not by this."""
        if not isinstance(other, LexicalCounts):
            return NotImplemented
        return other is self or (
            self.analysis == other.analysis and self.counts.shape == other.counts.shape
            and np.array_equal(self.expanded, other.expanded) and np.array_equal(self.texts, other.texts)
            and np.array_equal(self.terms, other.terms) and (self.counts != other.counts).nnz == 0)

    def __hash__(self) -> int:  # equal batches hash alike (what __eq__ compares first)
        return hash((self.analysis, self.counts.shape))

    def row(self, i: int) -> dict[str, int]:
        """Query ``i``'s ``{term: count}`` (empty where it was not expanded)."""
        a, b = self.counts.indptr[i], self.counts.indptr[i + 1]
        cols, n = self.counts.indices[a:b], self.counts.data[a:b]
        order = np.argsort(cols)  # (terms alphabetically, for PRF's columns)
        return dict(zip(self.terms[cols[order]].tolist(), n[order].astype(int).tolist()))


class QueryCounts(NamedTuple):
    """One query's entry of ``state.values["lexical_counts"]``: row ``row`` of ``batch``
    (:class:`LexicalCounts`); ``to_dict()`` gives its ``{term: count}``."""

    batch: LexicalCounts
    row: int

    def to_dict(self) -> dict[str, int]:
        return self.batch.row(self.row)

    def __repr__(self) -> str:
        return f"QueryCounts({self.to_dict()})"


class BM25Params(Params):
    k: int = Field(default=100, ge=1, description="Results per query.")
    variant: Literal["lucene", "okapi"] = Field(
        default="lucene", description="Scoring formula: 'lucene' (Anserini) or 'okapi' (rank-bm25's BM25Okapi formula; "
                                      "it keeps this k1 = 0.9 and b = 0.4 unless they are set, where rank-bm25 uses "
                                      "k1 = 1.5, b = 0.75); see module docs.")
    k1: float = Field(default=0.9, ge=0, description="Term-frequency saturation (0 = binary term weights).")
    b: float = Field(default=0.4, ge=0, le=1, description="Document-length normalisation, 0 (none) to 1 (full).")
    epsilon: float = Field(default=0.25, ge=0, description="okapi only: negative idfs become epsilon * mean idf.")
    tokenizer: Literal["alnum", "unicode", "whitespace"] = Field(
        default="alnum",
        description="'alnum': lowercase, split on non-[0-9a-z] (drops non-ASCII letters); 'unicode': "
                    "lowercase, keep runs of Unicode letters and digits; 'whitespace': lowercase, split "
                    "on whitespace.")
    stopwords: Literal["lucene", "none"] = Field(default="lucene", description="Stopword list removed before stemming.")
    stemmer: Literal["porter", "english", "none"] = Field(
        default="porter", description="PyStemmer algorithm: 'porter', 'english' (Snowball) or 'none'.")
    fields: Literal["title_text", "text"] = Field(default="title_text", description="Index title + text, or text only.")
    n_jobs: int = Field(default=1, ge=-1, description="Threads scoring query chunks in parallel; 0 or -1 = all cores "
                                                    "(the CPUs this process may use).")
    filter: MetadataFilter = Field(default=None, description="Metadata filter {field: value or [values]}.")

    @model_validator(mode="after")
    def _used(self) -> "BM25Params":
        self.refuse_unused(("epsilon", self.variant == "okapi", "variant: okapi"))
        return self


@register
class BM25(Operator):
    """Sparse BM25 retriever (Robertson & Zaragoza, "The Probabilistic Relevance Framework:
    BM25 and Beyond", 2009), batched over queries with scipy.sparse.

    Defaults follow Anserini's "flat" BEIR runs (title + text, Porter stemming, Lucene
    stopwords, ``variant="lucene"``, k1 = 0.9, b = 0.4).  On SciFact train (809 queries)
    they score nDCG@10 0.6950, ``okapi`` with rank-bm25's k1 = 1.5, b = 0.75 scores 0.6951,
    and the best of a k1 x b grid (``okapi``, k1 = 1.2, b = 0.4) 0.6975, not a significant
    difference (paired randomisation p = 0.18; ``bench/bm25.py --train-sweep``, 2026-12-05);
    ``lucene`` is kept because its idf is always
    positive, while okapi's is 0 for a term in exactly half of the documents and is floored
    for more frequent ones, which misranks small corpora.  SciFact test: 0.6766 (Anserini
    publishes 0.679).

    A batch of queries is scored by one sparse product of their term counts with the float64
    term weights (a sparse ``(n_queries, n_docs)`` matrix that stores only the documents matching
    a query term); the rankings hold those scores as float32 (``search(...).scores[i]`` is a
    float32 array), and :meth:`score_matrix` gives the dense float64 matrix.  Only documents
    that contain a query term are returned, as Lucene does: a query with fewer than ``k``
    matching documents gets a shorter ranking, one with no indexed term an empty one (no zero-score padding that fusion
    or pseudo-relevance feedback would take for evidence).  A metadata ``filter`` masks rows to
    ``-inf`` before the top-k, so a query still gets ``k`` results when ``k`` documents pass
    and match.

    Examples
    --------
    >>> from ragkit.types import Corpus
    >>> bm = BM25(k=2).fit(Corpus.from_texts(["red apples", "green pears", "red cars"]))
    >>> bm.search("red apple").doc_ids[0].tolist()
    ['0', '2']
    """

    name = "bm25"
    kind = "retriever"
    applies_filter = True  # (_call drops the rows filter_mask excludes)
    reads_lexical_query = True  # (_call searches state.texts(lexical=True): prf's expanded query)
    Params = BM25Params
    params: BM25Params
    example = {"k": 5}
    run_options = {"n_jobs": PARAM}

    vocab_: dict[str, int]  # term -> column
    idf_: np.ndarray  # (n_terms,) float64
    _counts: sp.csr_matrix  # term counts, terms x docs (n_terms, n_docs), uint16 (or int32) data
    _wt: sp.csr_matrix  # BM25 weights, terms x docs float64, sharing _counts' index arrays
    _s2i: dict[Any, int] | None  # surface form -> term id (-1: none), made by searches (None: empty)
    _s2u: set[Any]  # surfaces of _s2i at -1 as terms not indexed (not stopwords): an add may index them
    _tok: Tokenizer | None  # the tokenizer of the parameters (None: made when first used)
    _dl: np.ndarray  # (n_docs,) float64 tokens per document
    collection_: CollectionStats | None  # statistics set from outside, else None
    _view: _IndexView  # what searches read, published last by every edit (_set_weights)

    # ------------------------------------------------------------------ tokens
    def make_tokenizer(self) -> Tokenizer:
        """The :class:`~ragkit.retrievers.bm25.Tokenizer` these parameters describe."""
        p = self.params
        return Tokenizer(p.stopwords, p.stemmer, p.tokenizer)

    def _texts(self, corpus: Corpus) -> Sequence[str]:
        """The texts to index: joined titles and texts as they are read (a list of them all would hold the
        corpus's characters again for the whole fit, ~1.5 GB at 1M documents), or the texts alone."""
        return corpus.full_texts_view if self.params.fields == "title_text" else corpus.texts.tolist()

    def _term_ids(self, texts: Sequence[str], grow: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(lengths, ids)``: tokens per text and the flat term ids (-1: stopword or unknown term).

        New surface forms are normalised once and cached; with ``grow`` their new terms are
        appended to the vocabulary.
        """
        # (once fitted, no attribute is added or dropped, the caches are replaced: ``is_fitted`` iterating the
        # attributes on another thread failed with "dictionary changed size during iteration")
        tok: Tokenizer | None = self.__dict__.get("_tok")
        if tok is None:
            tok = self._tok = self.make_tokenizer()
        docs = tok.surfaces(texts)
        lens = np.fromiter(map(len, docs), np.int64, len(docs))
        flat = list(chain.from_iterable(docs))
        # (the unknown-word set is read before the cache and replaced before it, and a search adds its words to
        # the set before it writes them in the cache: a word a search cached at -1 is in the set read here)
        s2u: set[Any] | None = self.__dict__.get("_s2u")
        s2i: dict[Any, int] | None = self.__dict__.get("_s2i")
        if s2i is None or s2u is None:
            s2u = self._s2u = set()
            s2i = self._s2i = {}
        words = set(flat)
        new = words.difference(s2i)
        if grow:  # and the words a search cached as not indexed meanwhile (on another thread, during an add; a
            new |= words & s2u  # C-level intersection: the set may grow on another thread meanwhile)
        if new:
            # (not while indexing: then the cache holds the corpus's words, which PRF reads for its surface words)
            if not grow and len(s2i) > 4 * len(self.vocab_) + 200_000:  # bound the cache of unknown query words: a new
                s2u = self._s2u = set()  # one (clearing in place lost a concurrent search's words)
                s2i = self._s2i = {}
                new = words
            ordered = sorted(new)  # deterministic term ids
            vocab = self.vocab_
            unknown = []
            found = []
            for s, t in zip(ordered, tok.normalize(ordered)):
                j = -1 if t is None else vocab.get(t, -1)
                if j < 0 and t is not None:
                    if grow:
                        # a new term's column is the next one, and a dict keeps insertion order: vocab_'s order
                        # stays its column order (terms() and PRF._set_counts read it so, without sorting;
                        # remove and _checked_vocab keep it too; tests/test_bm25_s53.py checks it)
                        j = vocab[t] = len(vocab)
                    else:
                        unknown.append(s)
                found.append((s, j))
            if unknown:
                s2u.update(unknown)
            s2i.update(found)
        ids = np.fromiter(map(s2i.__getitem__, flat), np.int64, len(flat))
        return lens, ids

    def _count_parts(self, texts: Sequence[str], grow: bool) -> list[sp.csr_matrix]:
        """Term counts of ``texts`` in chunks: CSR ``(texts of the chunk, vocabulary size then)``, int32
        indices, ``uint16`` counts (``int32`` in a chunk with a count above 65,535), sorted indices.

        Texts are tokenised in chunks of about :data:`COUNT_CHUNK_CHARS` characters: the surface
        tokens of a chunk are Python objects (about 10x the text's bytes), so a whole large corpus at
        once peaked at ~10x its text; now at the chunk's temporaries plus the counts.  A chunk's
        columns are the vocabulary when it was counted (later chunks may add terms)."""
        try:
            chars = np.cumsum(texts.lengths() if isinstance(texts, FullTexts)
                              else np.fromiter(map(len, texts), np.int64, len(texts)))
        except TypeError:  # a text that is no string: one chunk, whose tokenizer names it
            chars = np.zeros(len(texts), np.int64)
        chunk = np.maximum(chars - 1, 0) // COUNT_CHUNK_CHARS  # the chunk each text ends in
        bounds = [0, *(np.flatnonzero(np.diff(chunk)) + 1).tolist(), len(texts)]
        parts = []
        for a, b in zip(bounds[:-1], bounds[1:]):  # a loop over chunks of texts
            lens, ids = self._term_ids(texts[a:b], grow)
            rows = np.repeat(np.arange(len(lens), dtype=np.int32), lens)
            keep = ids >= 0
            m = sp.coo_matrix((np.ones(int(keep.sum()), np.int32), (rows[keep], ids[keep].astype(np.int32))),
                              shape=(len(lens), len(self.vocab_))).tocsr()  # sums duplicates
            m.sort_indices()
            if not m.nnz or int(m.data.max()) <= _U16:
                m.data = m.data.astype(np.uint16)
            parts.append(m)
            del lens, ids, rows, keep
        return parts

    def _count_matrix(self, texts: Sequence[str], grow: bool) -> sp.csr_matrix:
        """Term counts, shape ``(len(texts), len(vocab))``, float64 CSR with sorted indices."""
        counted = self._count_parts(texts, grow)
        # earlier chunks were made before later ones added terms (an add on another thread, for a query): same
        # columns, wider; the widest chunk's width, read after its term ids, covers every chunk's ids
        width = max(m.shape[1] for m in counted)
        parts = [sp.csr_matrix((m.data.astype(np.float64), m.indices, m.indptr), shape=(m.shape[0], width))
                 for m in counted]
        m = parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")
        m.sort_indices()
        return m

    def _reset_cache(self) -> None:
        self._s2i = None
        self._s2u = set()
        self._tok = None
        self._query_said = False  # (made here, at fit or load: a search sets it, adding no attribute)

    # ------------------------------------------------------------------ indexing
    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        self._reset_cache()
        self.collection_ = None
        self.vocab_ = {}
        texts = self._texts(corpus)
        parts = self._count_parts(texts, grow=True)
        self._counts, self._dl = _terms_by_docs(parts, len(self.vocab_))
        self._weigh()
        if not _SHARD_FIT.get():  # (a shard's: its sharded retriever checks the whole corpus, _check_script)
            self._warn_outside_ascii(texts, corpus.ids, lambda: self._lettered([self._counts.T]))

    def _check_script(self, corpus: Corpus) -> None:
        """The check of its script a fit on ``corpus`` makes (:meth:`_warn_outside_ascii`), without fitting: a
        ``sharded`` retriever of BM25 shards runs it once on its whole corpus, whose shards' fits skip it
        (:func:`_shard_fit`)."""
        self._warn_outside_ascii(self._texts(corpus), corpus.ids)

    def _lettered(self, parts: Sequence[sp.spmatrix]) -> np.ndarray:
        """Indexed tokens holding a letter of each document counted in ``parts`` (docs x terms, each as wide as the
        vocabulary when it was counted: :meth:`_count_parts`, or the whole transposed counts), float64: the term
        counts summed over the terms that are not all digits (a sparse product over the postings; terms of
        ``alnum`` are ``[0-9a-z]+``).  Made only by :meth:`_warn_outside_ascii`, where it is read: a pass over the
        vocabulary."""
        vocab = self.vocab_
        has = np.zeros(len(vocab), np.float64)
        if vocab:
            has[np.fromiter(vocab.values(), np.int64, len(vocab))] = np.fromiter(
                (not t.isdigit() for t in vocab), bool, len(vocab))
        out = [np.asarray(m.dot(has[:m.shape[1]])).reshape(-1) for m in parts]  # a loop over chunks
        return np.concatenate(out) if out else np.zeros(0, np.float64)

    def _without_word(self, tok: Tokenizer, texts: Sequence[str], lettered: np.ndarray | None) -> np.ndarray:
        """Rows of ``texts`` that hold letters ``tok`` drops and give no term holding a letter (none, or numbers
        only: "这是关于猫的中文文档12" under ``alnum`` is "12"), so that no query word finds them.  ``lettered``: the
        tokens holding a letter of each text, as indexed (:meth:`_lettered`); only texts with none are read
        again.  ``None``: every text not in ASCII is tokenised again (:meth:`_check_script`, which fits nothing)."""
        if tok.split_kind != "alnum":
            return np.zeros(0, np.int64)
        if lettered is not None:
            rows = np.flatnonzero(lettered == 0)
        elif _all_ascii(texts):
            return np.zeros(0, np.int64)
        else:
            rows = np.flatnonzero(np.fromiter((isinstance(t, str) and not t.isascii() for t in texts), bool,
                                              len(texts)))
        if not len(rows):
            return rows
        rows = rows[tok.drops_letters([texts[i] for i in rows.tolist()])]
        if lettered is None and len(rows):
            keep: list[bool] = []
            for a in range(0, len(rows), _CHECK_CHUNK):  # a loop over chunks of texts
                docs = tok([texts[i] for i in rows[a:a + _CHECK_CHUNK].tolist()])
                keep.extend(all(map(str.isdigit, d)) for d in docs)
            rows = rows[np.array(keep, dtype=bool)]
        return rows

    def _split_kind(self) -> str | None:
        """The split of the tokenizer of the parameters (:attr:`Tokenizer.split_kind`), made where not yet."""
        tok: Tokenizer | None = self.__dict__.get("_tok")
        return getattr(tok if tok is not None else self.make_tokenizer(), "split_kind", None)

    def _warn_outside_ascii(self, texts: Sequence[str], ids: np.ndarray,
                            lettered: np.ndarray | Callable[[], np.ndarray] | None = None, added: bool = False) -> None:
        """Warn, once, where the tokenizer is ``alnum`` and many documents (of the corpus, or of those ``added``)
        are written in letters outside ASCII, which it drops (a Japanese corpus had no term, and every query scored
        0 without a word), or where any document holds such letters and no other word (:meth:`_without_word`:
        24 Chinese documents of 100 were indexed without a word, and said nothing).  ``ids``: the documents' ids;
        ``lettered``: their indexed tokens holding a letter (:meth:`_lettered`), or what makes them (called only where
        the tokenizer is ``alnum`` and a text is not ASCII: a pass over the vocabulary), ``None`` where not fitted."""
        tok: Tokenizer | None = self.__dict__.get("_tok")
        if tok is None:  # (not made yet: _check_script on an unfitted BM25)
            tok = self.make_tokenizer()
        if getattr(tok, "split_kind", None) != "alnum":
            return
        share, sampled, word = _outside_ascii(texts)
        if callable(lettered):  # (every text ASCII: none holds a letter the split drops)
            rows = np.zeros(0, np.int64) if _all_ascii(texts) else self._without_word(tok, texts, lettered())
        else:
            rows = self._without_word(tok, texts, lettered)
        if share < _SCRIPT_WARN_SHARE and not len(rows):
            return
        default = "" if "tokenizer" in self.params.model_fields_set else " (the default)"
        where, added_s = (".add", " added") if added else ("", "")
        fix = "set 'tokenizer: unicode' (BM25(tokenizer=\"unicode\"))%s to index them" % (
            " and fit the whole corpus again" if added else "")
        if share < _SCRIPT_WARN_SHARE:  # (a few documents: the example is the first of them)
            found = _NON_ASCII_WORD.search(_clean(texts[int(rows[0])]))
            word = found.group() if found else ""
        word = word[:16]  # (a run of Japanese is a sentence)
        parts = [s.decode("ascii") for s in Tokenizer("none", "none", "alnum").surfaces([word])[0]]
        example = f"{word!r} becomes {', '.join(map(repr, parts)) if parts else 'no term'}"
        named = some_ids(map(str, np.asarray(ids)[rows].tolist()))
        some = f"{len(rows):,} of the {len(texts):,} documents{added_s} (ids {named})"
        if share < _SCRIPT_WARN_SHARE:
            _log.warning("bm25%s: no query word finds %s: they hold letters outside ASCII, which tokenizer 'alnum'%s "
                         "drops, and no other word (%s); %s", where, some, default, example, fix)
            return
        none = f"{some} {'holds' if len(rows) == 1 else 'hold'} no other word: no query word finds them"
        # (the share's warning, as it was, with the documents without a word: before the fix of an add, after a fit's)
        _log.warning("bm25%s: %.0f%% of the documents%s (%d sampled) are written in letters outside ASCII, which "
                     "tokenizer 'alnum'%s drops: %s; %s%s%s", where, 100 * share, added_s, sampled, default, example,
                     f"{none}; " if added and len(rows) else "", fix, f"; {none}" if len(rows) and not added else "")

    @property
    def tf_(self) -> sp.csr_matrix:
        """Term counts, CSR ``(n_docs, n_terms)`` with sorted indices, in the counts' integer dtype
        (``uint16``, or ``int32`` when a count exceeds 65,535).  Made on access from the stored
        terms x docs counts (a copy: ~6 bytes per posting); :meth:`doc_freqs` and
        :meth:`doc_lengths` are cheaper for document frequencies and lengths.  Unfitted: AttributeError, as
        for a fitted attribute not set yet."""
        c = self.__dict__.get("_counts")
        if c is None:
            raise AttributeError(f"{type(self).__name__} has no term counts yet (tf_): call fit(corpus) first")
        return sp.csc_matrix((c.data, c.indices, c.indptr), shape=(c.shape[1], c.shape[0])).tocsr()

    def add(self, corpus: Corpus) -> "BM25":
        """Append documents: the fitted corpus grows, old documents are not re-tokenised.

        Term counts of the new documents are appended; idf and the average length are
        recomputed, so the result equals a fit on the union of the two corpora.
        """
        self._check_fitted()
        if getattr(self, "collection_", None) is not None:  # (first: no add is possible, whatever is added)
            raise DataError("bm25.add: this index scores with collection statistics set from outside "
                            "(set_collection, a shard of Sharded); refit the whole collection instead")
        self.corpus_.check_addable(corpus, "bm25.add")
        joined = self.corpus_.concat(corpus, "bm25.add")  # (refuses a metadata value of another kind: before edits)
        s2i = self.__dict__.get("_s2i")
        # C-level copies (atomic under the GIL): a search on another thread adds to both as it goes, and
        # iterating the live set failed every add under a stream of unknown query words
        unknown = set(self.__dict__.get("_s2u") or ())
        if s2i and unknown:  # words unknown so far may be indexed now (a new cache: a search may hold the old)
            s2i = dict(s2i)
            for s in unknown:  # a loop over the query words not indexed (their cache is bounded)
                s2i.pop(s, None)
            self._s2i, self._s2u = s2i, set()
        texts = self._texts(corpus)
        parts = self._count_parts(texts, grow=True)
        # (read from the new documents' own postings, before _append_docs empties ``parts``; only where the check
        # reads it: tokenizer alnum and a text not in ASCII)
        lettered = self._lettered(parts) if self._split_kind() == "alnum" and not _all_ascii(texts) else None
        counts, dl = _append_docs(self._counts, parts, len(self.vocab_))
        self._counts, self._dl = counts, np.concatenate([self._dl, dl])
        self.corpus_ = joined
        self._weigh()
        self._warn_outside_ascii(texts, corpus.ids, lettered, added=True)
        return self

    def remove(self, ids: Any) -> "BM25":
        """Remove documents by id (one, or any iterable of ids): their term counts are dropped, terms no
        document holds any more leave the vocabulary, and idf and the average length are recomputed, so
        the result equals a fit on the remaining documents (no re-tokenising)."""
        self._check_fitted()
        if getattr(self, "collection_", None) is not None:
            raise DataError("bm25.remove: this index scores with collection statistics set from outside "
                            "(set_collection, a shard of Sharded); refit the whole collection instead")
        rows = self.corpus_.rows_to_remove(ids, "bm25.remove")
        if not len(rows):
            return self
        keep = np.ones(len(self.corpus_), dtype=bool)
        keep[rows] = False
        c = self._counts
        kept = keep[c.indices]  # postings of kept documents
        gone = np.searchsorted(c.indptr, np.flatnonzero(~kept), side="right") - 1  # the terms of those dropped
        df = np.diff(c.indptr).astype(np.int64) - np.bincount(gone, minlength=c.shape[0])
        del gone
        used = df > 0  # terms still in some document (okapi's idf floor averages over the vocabulary: a refit's)
        n_docs = int(keep.sum())
        idx = _index_dtype(int(df.sum()), n_docs)
        indptr: np.ndarray = np.zeros(int(used.sum()) + 1, idx)
        np.cumsum(df[used], out=indptr[1:])
        new_row: np.ndarray = (np.cumsum(keep) - 1).astype(idx)
        counts = sp.csr_matrix((c.data[kept], new_row[c.indices[kept]], indptr), shape=(len(indptr) - 1, n_docs))
        counts.has_sorted_indices = True
        if not used.all():
            new_col = np.cumsum(used) - 1
            # (in vocab_'s own order, which is its columns': the kept terms keep it and are numbered 0, 1, ... as
            # their new columns, so the order stays the column order terms() and PRF read)
            self.vocab_ = {t: int(new_col[j]) for t, j in self.vocab_.items() if used[j]}
            self._s2i = None  # surface -> old column
        self._counts, self._dl = counts, self._dl[keep]
        self.corpus_ = self.corpus_.subset(np.flatnonzero(keep))
        self._weigh()
        return self

    def idf_of(self, df: np.ndarray, n_docs: int) -> np.ndarray:
        """idf of every term of a vocabulary, float64, from document frequencies ``df`` (one per
        term) in a collection of ``n_docs`` documents (the variant's formula; see module docs)."""
        df = np.asarray(df, dtype=np.float64)
        if self.params.variant == "okapi":
            idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
            eps = self.params.epsilon * idf.sum() / max(len(idf), 1)
            return np.where(idf < 0, eps, idf)
        return np.log1p((n_docs - df + 0.5) / (df + 0.5))

    def collection_of(self, lengths: np.ndarray) -> tuple[int, float]:
        """``(N, avgdl)`` of a collection whose documents hold ``lengths`` indexed tokens (float64
        ``(n_docs,)``): the document count of idf and the average length (1.0 where there is none).

        ``lucene`` counts, as Lucene does (``docCount`` and ``sumTotalTermFreq / docCount`` of the field),
        only documents with at least one indexed token: an empty or all-stopword document has no field, so
        blank documents change no other document's score (300 of them added to 300 SciFact documents
        halved avgdl and changed the top 20 of 299 of 300 queries).  ``okapi`` counts every document, as
        rank-bm25's ``BM25Okapi`` does."""
        lengths = np.asarray(lengths, dtype=np.float64)
        n = int(np.count_nonzero(lengths)) if self.params.variant == "lucene" else len(lengths)
        return n, (float(lengths.sum()) / n if n else 1.0) or 1.0

    def terms(self) -> list[str]:
        """The indexed terms in vocabulary (column) order."""
        return list(self.vocab_)  # (vocab_'s insertion order is its column order: kept where it grows / is rebuilt)

    def doc_lengths(self) -> np.ndarray:
        """Indexed tokens per document, float64 ``(n_docs,)`` (a copy)."""
        self._check_fitted()
        return np.array(self._dl, dtype=np.float64)

    def doc_freqs(self) -> np.ndarray:
        """Documents that hold each term, int64 ``(n_terms,)``, vocabulary order."""
        self._check_fitted()
        return np.diff(self._counts.indptr).astype(np.int64)

    def set_collection(self, idf: np.ndarray, avgdl: float) -> None:
        """Score with collection statistics given from outside: ``idf`` of each of this index's
        terms (vocabulary order) and the average document length, e.g. those of a whole corpus
        this index holds one shard of (:class:`~ragkit.scale.Sharded`), so that its scores equal
        one index's over the whole corpus.  ``avgdl`` must be a finite number > 0, as a save's load requires it
        (``inf``, NaN, 0 or a bool is a :class:`DataError`)."""
        self._check_fitted()
        idf = np.asarray(idf, dtype=np.float64)
        if idf.shape != (len(self.vocab_),) or not np.isfinite(idf).all():
            raise DataError(f"bm25.set_collection: expected {len(self.vocab_)} finite idf values (one per term, "
                            f"vocabulary order), got idf of shape {idf.shape}"
                            + ("" if idf.shape != (len(self.vocab_),) else " holding values that are not finite"))
        value = _avgdl_of(avgdl)  # (the test _load makes of a save's collection.json: a save loads as it was set)
        if value is None:
            raise DataError(f"bm25.set_collection: expected avgdl a finite number > 0 (the average document "
                            f"length), got {avgdl!r:.60} ({type(avgdl).__name__})")
        self.collection_ = {"idf": idf, "avgdl": value}
        self._weigh()

    def _weigh(self) -> None:
        """Precompute the per-(term, doc) BM25 weights (float64, terms x docs CSR sharing the counts'
        index arrays) from the stored term counts and document lengths (and the collection statistics
        of :meth:`set_collection`, when given).  Weighs blocks of about :data:`_WEIGH_BLOCK` postings,
        so the temporaries stay small; each weight is the same float64 expression as one pass would give."""
        p = self.params
        c = self._counts
        n_terms, n_docs = len(self.vocab_), len(self._dl)
        if c.shape != (n_terms, n_docs):  # (vocabulary grown: rows for terms with no postings)
            ptr = np.concatenate([c.indptr, np.full(n_terms + 1 - len(c.indptr), c.indptr[-1], c.indptr.dtype)])
            c = self._counts = sp.csr_matrix((c.data, c.indices, ptr), shape=(n_terms, n_docs))
        dl = self._dl
        df = np.diff(c.indptr).astype(np.int64)
        coll = getattr(self, "collection_", None)
        if coll is not None:
            idf, avgdl = coll["idf"], coll["avgdl"]
        else:
            n, avgdl = self.collection_of(dl)
            idf = self.idf_of(df, n)
        num_scale = p.k1 + 1.0 if p.variant == "okapi" else 1.0
        norm_doc = p.k1 * (1 - p.b + p.b * dl / avgdl)  # (per document: each posting's value, gathered)
        w = np.empty(c.nnz, np.float64)
        ptr64 = np.asarray(c.indptr, dtype=np.int64)
        starts = np.searchsorted(ptr64, np.arange(0, c.nnz, _WEIGH_BLOCK), side="right") - 1  # their terms
        cuts = np.unique(np.concatenate([[0], starts, [n_terms]]))
        for ta, tb in zip(cuts[:-1], cuts[1:]):  # a loop over blocks of terms of ~_WEIGH_BLOCK postings
            a, b = ptr64[ta], ptr64[tb]
            t = c.data[a:b].astype(np.float64)
            norm = norm_doc[c.indices[a:b]]
            norm += t  # (t + norm: the same sum)
            out = w[a:b]
            np.multiply(np.repeat(idf[ta:tb], df[ta:tb]), t, out=out)
            out *= num_scale
            with np.errstate(divide="ignore", invalid="ignore"):  # k1 = 0 and b = 1: 0/0 never happens (t >= 1)
                out /= norm
        self.idf_ = idf
        self._set_weights(w)

    def _set_weights(self, w: np.ndarray) -> None:
        """Make ``self._wt`` (terms x docs CSR of the weights ``w``, aligned with the counts and sharing
        their index arrays) and ``self._hits`` from ``w`` and ``self.idf_``."""
        c = self._counts
        self._wt = sp.csr_matrix((w, c.indices, c.indptr), shape=c.shape, copy=False)
        self._wt.has_sorted_indices = True
        # okapi's idf is 0 (a term in half the documents; epsilon 0) or floored below 0 on small corpora (or
        # set_collection gave such an idf): a matching document's score can then sum to 0, which scipy's product
        # does not store, so matches are found from those terms' postings too (a document whose score sums to 0
        # holds one of them); no such term (lucene's idf is always > 0): no second product
        df = np.diff(c.indptr).astype(np.int64)
        flag = (self.idf_ <= 0) & (df > 0)
        self._hits = None
        if flag.any():
            ptr = np.zeros(len(df) + 1, np.int64)
            np.cumsum(np.where(flag, df, 0), out=ptr[1:])
            ind = c.indices[np.repeat(flag, df)]
            self._hits = sp.csr_matrix((np.ones(len(ind)), ind, ptr.astype(ind.dtype)), shape=c.shape)
        # last, in one assignment: a search reads this view whole, the state before this edit or after it
        self._view = _IndexView(self.corpus_, self._wt, self._hits, self.vocab_)

    def _search_view(self) -> _IndexView | None:
        """The state searches read (:class:`_IndexView`, published by each edit), ``None`` unfitted (an object
        pickled before views were published: made from its attributes)."""
        view = self.__dict__.get("_view")
        if view is None and "_wt" in self.__dict__ and "corpus_" in self.__dict__:
            view = _IndexView(self.corpus_, self._wt, self.__dict__.get("_hits"), self.vocab_)
        return view

    def _query_of(self, q: sp.csr_matrix, view: _IndexView) -> sp.csr_matrix:
        """``q``, counted over the vocabulary held now, as a query over ``view``'s terms: cut to its columns where
        the vocabulary only grew since (an ``add`` on another thread: the terms past them are in no document of
        the view, so the scores are the view's own); else (a ``remove`` or fit renumbered the terms)
        :func:`_edited_during_search`."""
        n_terms = view.n_terms
        if self.vocab_ is view.vocab and q.shape[1] >= n_terms:
            if q.shape[1] == n_terms:
                return q
            q = sp.csr_matrix(q[:, :n_terms])
            q.sort_indices()
            return q
        raise _edited_during_search(f"the query was counted over {q.shape[1]:,} terms of another vocabulary than "
                                    f"the {n_terms:,} terms of the index searched")

    # ------------------------------------------------------------------ search
    def query_matrix(self, queries: Sequence[str]) -> sp.csr_matrix:
        """Query term counts ``(n_queries, n_terms)``, float64 CSR; repeated query terms count repeatedly, as in
        rank-bm25.  ``queries``: a list of texts (one ``str`` is refused: a :class:`DataError`)."""
        self._check_fitted()
        refuse_one_text(queries, "bm25.query_matrix")
        return self._count_matrix(queries, grow=False)

    def expansion_matrix(self, state: State, texts: Sequence[str]) -> sp.csr_matrix | None:
        """:meth:`query_matrix` of ``texts`` (what ``state.texts(lexical=True)`` gave) from the term counts PRF
        passed with its expanded text (``state.values["lexical_counts"]``,
        :class:`~ragkit.retrievers.bm25.LexicalCounts`), without tokenising the ~``resolution`` words of each
        expanded query again; ``None`` (tokenise the texts) unless
        every query's entry is a row of one PRF call whose analysis (tokenizer, stopwords, stemmer) is this
        index's, ``texts`` are exactly the texts that call wrote for those rows, and every term of their
        expansions is in this index's vocabulary (an index fitted on another corpus, or edited since), and no
        subclass changes how texts are counted.  A query PRF did not expand (its text is the query itself) is
        tokenised.  The counts are those tokenising the texts gives, so the matrix, and the scores, are the same."""
        entries = state.values.get(LEXICAL_COUNTS)
        n = len(texts)
        if not n or not isinstance(entries, list) or len(entries) != n or set(map(type, entries)) != {QueryCounts}:
            return None
        cls = type(self)
        if cls is not BM25 and any(getattr(cls, m) is not getattr(BM25, m) for m in _COUNTING):
            return None
        batches, rows_t = zip(*entries)
        batch, p = batches[0], self.params
        # (one PRF call's batch, by identity: equal contents of another call's batch are not its rows, and
        # LexicalCounts.__eq__ compares contents, at a cost per entry)
        if (not isinstance(batch, LexicalCounts) or len({id(b) for b in batches}) != 1
                or batch.analysis != (p.tokenizer, p.stopwords, p.stemmer)):
            return None
        rows = np.fromiter(rows_t, np.int64, n)
        if rows.min() < 0 or rows.max() >= len(batch.texts) or batch.texts[rows].tolist() != list(texts):
            return None  # (the texts were rewritten after PRF, or are another batch's)
        self._check_fitted()
        sub = batch.counts[rows]
        used, at = np.unique(sub.indices, return_inverse=True)
        vocab = self.vocab_
        col = np.fromiter(map(vocab.get, batch.terms[used].tolist(), repeat(-1)), np.int64, len(used))
        if (col < 0).any():  # a term this index lacks (the text would drop it too; not taken: tokenise)
            return None
        plain = np.flatnonzero(~batch.expanded[rows])
        rest = self.query_matrix(np.asarray(texts, dtype=object)[plain].tolist()) if len(plain) else None
        # (read after the lookups: an add on another thread grows the vocabulary in place, meanwhile too)
        width = max(len(vocab), 0 if rest is None else rest.shape[1])
        idx = _index_dtype(sub.nnz, width)
        q = sp.csr_matrix((sub.data.astype(np.float64), col[at.reshape(-1)].astype(idx), sub.indptr.astype(idx)),
                          shape=(n, width))
        if rest is not None:  # queries PRF left as they were: their own tokens
            rest = sp.csr_matrix((rest.data, rest.indices, rest.indptr), shape=(rest.shape[0], width))
            put = sp.csr_matrix((np.ones(len(plain)), (plain, np.arange(len(plain)))), shape=(n, len(plain)))
            q = sp.csr_matrix(q + put @ rest)
        q.sort_indices()
        return q

    def score_matrix(self, queries: Sequence[str]) -> np.ndarray:
        """Dense BM25 scores of every document, shape ``(n_queries, n_docs)``, float64.  ``queries``: a list of
        texts (one ``str`` is refused: a :class:`DataError`)."""
        self._check_fitted()
        refuse_one_text(queries, "bm25.score_matrix")
        view = self._search_view()
        assert view is not None
        return (self._query_of(self.query_matrix(queries), view) @ view.wt).toarray()

    def _check_index(self, q: sp.csr_matrix, drop: np.ndarray | None,
                     index: tuple[sp.csr_matrix, sp.csr_matrix | None] | None) -> tuple[sp.csr_matrix,
                                                                                        sp.csr_matrix | None]:
        """``index`` (the ``(weights, hits)`` held now by default), once ``q``'s columns are its terms and
        ``drop``'s length its documents; else :func:`_edited_during_search`."""
        wt, hits = (self._wt, self._hits) if index is None else index
        if q.shape[1] != wt.shape[0] or (drop is not None and len(drop) != wt.shape[1]) or (
                hits is not None and hits.shape != wt.shape):
            raise _edited_during_search(f"the query was counted over {q.shape[1]:,} terms, the index holds "
                                        f"{wt.shape[0]:,} terms x {wt.shape[1]:,} documents")
        return wt, hits

    def _topk(self, q: sp.csr_matrix, k: int, drop: np.ndarray | None,
              index: tuple[sp.csr_matrix, sp.csr_matrix | None] | None = None,
              exact: bool = False, postings: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` of the documents that contain a query term, read from the sparse product's stored entries
        only (:func:`_sparse_topk`): the cost follows the matches, not the corpus.  A query whose candidates are
        more than :data:`_DENSE_SHARE` of the corpus (and ``k``) is ranked from a dense row instead, as
        :meth:`_topk_dense` ranks it (:func:`_wide_topk`): the queries whose terms' postings could hold that
        many (:func:`_postings_per_query`) are multiplied apart from the others, straight into dense rows.
        Returns ``(rows int64, scores float32)`` of shape ``(n_q, k')``, ``k' <= k``, padded with ``-inf`` scores
        (dropped by :func:`~ragkit._topk.rankings_from_matrix`); the rankings are those of :meth:`_topk_dense`
        exactly (ids, float32 scores, ties by the lower document row, at the cut too).  ``index``: the
        ``(weights, hits)`` to score with (the ones held now by default); ``q``'s columns must be their terms and
        ``drop``'s length their documents, else :func:`_edited_during_search`.  ``exact``: the scores float64,
        as summed (their float32 rounding is the scores returned otherwise).  ``postings``: those of ``q``'s queries
        (:func:`_postings_per_query` over these weights), as the search counted them for its blocks; else counted
        here."""
        wt, hits = self._check_index(q, drop, index)
        k = min(k, wt.shape[1])
        if postings is None:
            postings = _postings_per_query(q, wt)
        maybe = _is_wide(postings, wt.shape[1], k)  # (the candidates are at most the postings)
        if not maybe.any():
            return _narrow_topk(q, wt, hits, drop, k, exact)
        if maybe.all():
            return _wide_topk(q, wt, hits, drop, k, exact)
        narrow, wide = np.flatnonzero(~maybe), np.flatnonzero(maybe)
        return _merge_rows(q.shape[0], [(narrow, _narrow_topk(q[narrow], wt, hits, drop, k, exact)),
                                        (wide, _wide_topk(q[wide], wt, hits, drop, k, exact))])

    def _topk_dense(self, q: sp.csr_matrix, k: int, drop: np.ndarray | None,
                    index: tuple[sp.csr_matrix, sp.csr_matrix | None] | None = None,
                    exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_topk` through a dense ``(n_q, n_docs)`` row of every document per query (``-inf`` where no
        query term is held) and :func:`~ragkit._topk.topk_rows` over all of it: the path before
        :func:`_sparse_topk`, kept as the reference its rankings are checked against (tests,
        ``bench/bm25_sparse_topk.py``); searches use it where :data:`_DENSE_TOPK` is set."""
        wt, hits = self._check_index(q, drop, index)
        m = (q @ wt).tocsr()
        s = np.full(m.shape, -np.inf)
        if hits is not None:  # matches whose weights sum to 0 score 0
            h = (q @ hits).tocsr()
            s[np.repeat(np.arange(h.shape[0]), np.diff(h.indptr)), h.indices] = 0.0
        s[np.repeat(np.arange(m.shape[0]), np.diff(m.indptr)), m.indices] = m.data
        if drop is not None:
            s[:, drop] = -np.inf
        return _exact(s, topk_rows(s, k), exact)

    def _call(self, state: State) -> State:
        texts = state.texts(lexical=True)
        k = self.k_for(state)
        # one view of the index for the whole batch, taken when the search began (search() pins it before the
        # pipeline reads corpus_): an add on another thread meanwhile changes neither its scores nor its rows
        view: _IndexView = self.checked_view()
        mask = self.filter_mask(state, view.corpus)
        drop = None if mask is None else ~mask
        n_jobs = int(self.opt(state, "n_jobs", self.params.n_jobs))
        n_jobs = thread_count(n_jobs)  # (0 or -1: the CPUs this process may use)
        try:
            return self._search_index(state, texts, k, drop, n_jobs, view)
        except DataError:
            raise
        except (ValueError, IndexError, KeyError) as e:  # (a term id or row of the index before or after an edit)
            if self.__dict__.get("_view") is view and self.vocab_ is view.vocab:
                raise
            raise _edited_during_search(f"{type(e).__name__}: {e}") from e

    def _warn_query_without_word(self, state: State, texts: Sequence[str], q: sp.csr_matrix) -> None:
        """Warn, once per retriever (a served one must not log it for every search), where a query of ``texts``
        (counted as ``q``) finds nothing because it holds letters the tokenizer drops and no other word (under
        ``alnum``, "猫" found nothing, and nothing said why).  Only the queries that found no term are read
        again (an ASCII one: one ``str.isascii``)."""
        empty = np.flatnonzero(np.diff(q.indptr) == 0)
        if not len(empty):
            return
        queries = [texts[i] for i in empty.tolist()]
        if _all_ascii(queries):
            return
        tok: Tokenizer | None = self.__dict__.get("_tok")
        if tok is None:  # (PRF's counts were read: not made yet)
            tok = self._tok = self.make_tokenizer()
        hit = empty[self._without_word(tok, queries, None)].tolist()
        if not hit:
            return
        text = texts[hit[0]]
        with _QUERY_SAID_LOCK:  # (two threads' searches: one says it)
            if self.__dict__.get("_query_said", False):
                return
            self._query_said = True
        qids = state.query_ids
        name = str(qids[hit[0]]) if len(qids) == len(texts) else f"number {hit[0]}"
        default = "" if "tokenizer" in self.params.model_fields_set else " (the default)"
        _log.warning("bm25: query %r (%r%s) finds nothing: it holds letters outside ASCII, which tokenizer "
                     "'alnum'%s drops, and no other word; set 'tokenizer: unicode' (BM25(tokenizer=\"unicode\")) and "
                     "fit again to search such text (said once per retriever)", name, text[:60],
                     f"; {len(hit) - 1} more queries of the batch alike" if len(hit) > 1 else "", default)

    def _search_index(self, state: State, texts: list[str], k: int, drop: np.ndarray | None, n_jobs: int,
                      view: _IndexView) -> State:
        """:meth:`_call`'s work: top ``k`` of ``view``'s index (weights, hits) for ``texts``, rows of its corpus."""
        corpus, index = view.corpus, (view.wt, view.hits)
        q = self.expansion_matrix(state, texts)  # PRF's term counts, where it passed them for these texts
        if q is None:
            q = self.query_matrix(list(texts))
        q = self._query_of(q, view)  # (counted over the vocabulary held now: the view's, or it grown by an add)
        if not self.__dict__.get("_query_said", False) and not _SHARD_SEARCH.get():  # (a shard's: its sharded
            self._warn_query_without_word(state, texts, q)                          # retriever warns once)
        n_q = q.shape[0]
        fine = _SHARD_FINE.get()  # (read here: the jobs may run on other threads, which do not see it)
        exact = fine is not None
        job: Callable[[tuple[int, int]], tuple[np.ndarray, np.ndarray]]
        if _DENSE_TOPK:  # (the path before: dense blocks of about _BLOCK_CELLS cells)
            n_docs = max(len(corpus), 1)
            chunk = max(1, _BLOCK_CELLS // n_docs)
            if n_jobs > 1:  # split across threads, but keep >= ~100k cells (about a millisecond) per task
                chunk = min(chunk, max(-(-n_q // n_jobs), _MIN_TASK_CELLS // n_docs))
            bounds = [*range(0, n_q, chunk), n_q]
            job = lambda ab: self._topk_dense(q[ab[0]:ab[1]], k, drop, index, exact)  # noqa: E731
        else:
            posts = _postings_per_query(q, index[0])  # (once: the blocks are cut by them, and _topk routes by them)
            bounds = _query_blocks(q, index[0], n_jobs, posts)
            job = lambda ab: self._topk(q[ab[0]:ab[1]], k, drop, index, exact, posts[ab[0]:ab[1]])  # noqa: E731
        spans = list(zip(bounds[:-1], bounds[1:]))
        if n_jobs > 1 and len(spans) > 1:  # scipy's sparse product and numpy's sorts release the GIL
            with ThreadPoolExecutor(min(n_jobs, len(spans))) as ex:
                parts = list(ex.map(job, spans))
        else:
            parts = [job(ab) for ab in spans]
        now = self.corpus_
        # rows of the view's corpus: the search's corpus holds them (checked in _call); called on a State outside
        # a search, they are mapped with corpus_ now, which must hold them too (the same, or with documents added)
        if index[0].shape[1] != len(corpus) or (searched_ids() is None and now is not corpus
                                                and not is_prefix(corpus, now.ids)):
            raise _edited_during_search("its documents changed")
        out = state.copy()
        if fine is not None:  # (float64 scores: the rankings get their float32 rounding, the shard both)
            out.rankings = [r for rows, sc in parts for r in rankings_from_matrix(rows, sc.astype(np.float32))]
            fine.append([sc for _, sc in parts])  # (the blocks as they are: _shard_fine cuts them, per block)
        else:
            out.rankings = [r for rows, sc in parts for r in rankings_from_matrix(rows, sc)]
        return out

    # ------------------------------------------------------------------ persistence
    #: Arrays of a save (``<name>.npy``): the terms x docs counts' CSR arrays (``tf_data`` counts,
    #: ``tf_indices`` document ids, ``tf_indptr`` term rows), the weights aligned with them, each
    #: document's length and each term's idf; ``weights.json`` says the layout and the parameters the weights
    #: were computed with.  (Saves without ``weights.json`` hold docs x terms float32 counts under the same
    #: three names; they load, transposed and weighed.)
    _ARRAYS = ("tf_data", "tf_indices", "tf_indptr", "weights", "doc_lengths", "idf")

    def _weights_key(self) -> dict[str, Any]:
        """The parameters and statistics the weights depend on, as saved in ``weights.json``."""
        p = self.params
        key: dict[str, Any] = {"variant": p.variant, "k1": p.k1, "b": p.b,
                               "epsilon": p.epsilon if p.variant == "okapi" else None,
                               "collection": getattr(self, "collection_", None) is not None}
        if p.variant == "lucene":  # N and avgdl count only documents with an indexed token (saves before: all)
            key["n_docs"] = "with_tokens"
        return key

    def _analysis(self) -> dict[str, str]:
        """The parameters that made the terms and counts (:data:`_ANALYSIS`), as saved in ``weights.json``."""
        return {key: getattr(self.params, key) for key in _ANALYSIS}

    def _check_analysis(self, folder: Path, saved: Any) -> None:
        """Refuse (:class:`ArtifactError` naming the files, the parameter and both values) a save whose
        ``params.json`` names another analysis than the one its ``weights.json`` records (``saved``; saves before
        it was recorded have none: nothing to check): its terms were made by the recorded one, and queries
        analysed by the other would miss them (stemmed terms searched with ``stemmer: none``)."""
        from ragkit.errors import ArtifactError

        if saved is None:
            return
        if not isinstance(saved, dict):
            raise ArtifactError(f"{folder / 'weights.json'}: 'analysis' holds {saved!r:.80}; expected an object "
                                f"of the {', '.join(_ANALYSIS)} the index was built with; save the index again")
        for key, given in self._analysis().items():
            if key in saved and saved[key] != given:
                raise ArtifactError(
                    f"{folder / 'params.json'}: {key} is {given!r}, but the index was built with {key} "
                    f"{saved[key]!r} (recorded in {folder / 'weights.json'}): its terms were made by {saved[key]!r}, "
                    f"and queries analysed with {given!r} would not find them; the folder was changed after "
                    f"saving: set {key} back to {saved[key]!r}, or fit it again with {key}={given!r} and save it")

    def _warn_older(self, folder: Path, why: str, reweighed: bool) -> None:
        """Warn (once per folder and process, on the ``ragkit`` logger) that the save at ``folder`` was written
        by an older ragkit (``why``: what tells), so this load may rank differently from when it was saved, and
        mark it (:attr:`~ragkit.operator.Operator._older_save`).  ``reweighed``: its weights were computed again
        here, with today's conventions.  An empty term in its vocabulary (Porter's stem of "patient's", which
        today's tokenizer drops from queries while the saved document lengths count it) is named."""
        from ragkit._files import first_time

        done = []
        if reweighed:
            done.append("its term weights are computed again with today's conventions (N and avgdl count only "
                        "the documents that hold a token)")
        if "" in self.vocab_:
            done.append("its vocabulary holds the empty term (Porter's stem of words such as \"patient's\"), "
                        "which its document lengths count but today's queries drop")
        self._older_save = f"BM25 save {why}"
        if first_time(_OLDER_NOTED, os.path.realpath(folder)):
            _log.warning(f"bm25: {folder} was written by an older ragkit ({why}): it loads, but {'; '.join(done)}; "
                         "so it may rank differently from when it was saved: fit it again on its documents and "
                         "save it to rank as a fit does today")

    def _saved_weights_valid(self, saved: Any, dl: np.ndarray) -> bool:
        """Whether the weights of a save whose ``weights.json`` says ``saved`` are the ones these parameters
        give: the same key, or a ``lucene`` save from before N and avgdl left out empty documents (no
        ``n_docs`` in its key) whose documents all hold a token (``dl``: its lengths), which weighs the same."""
        key = self._weights_key()
        if saved == key:
            return True
        return (isinstance(saved, dict) and "n_docs" not in saved and {**saved, "n_docs": key.get("n_docs")} == key
                and bool(np.all(np.asarray(dl) > 0)))

    def _save(self, folder: Path) -> None:
        c = self._counts
        save_arrays(folder, tf_data=c.data, tf_indices=c.indices, tf_indptr=c.indptr, weights=self._wt.data,
                    doc_lengths=self._dl, idf=self.idf_)
        write_json(folder / "vocab.json", self.terms())
        write_json(folder / "weights.json", {"layout": "terms_x_docs", "weights_of": self._weights_key(),
                                             "analysis": self._analysis()})
        coll = getattr(self, "collection_", None)
        if coll is not None:
            save_arrays(folder, collection_idf=coll["idf"])
            write_json(folder / "collection.json", {"avgdl": coll["avgdl"]})

    def _load(self, folder: Path, mmap: bool = False) -> None:
        """Restore the counts, weights, lengths and idf as saved (memory-mapped with ``mmap``: read from the
        files as searches touch them, not copied into memory; nothing is recomputed).  A save of the
        older layout (docs x terms counts) is transposed and weighed."""
        from ragkit.errors import ArtifactError

        terms = read_json(folder / "vocab.json")
        vocab = _checked_vocab(folder / "vocab.json", terms)
        n_terms, n_docs = len(terms), len(self.corpus_)
        self._reset_cache()
        self.vocab_ = vocab
        self.collection_ = None
        if (folder / "collection.json").is_file():
            idf = _checked_floats(folder, "collection_idf", load_array(folder, "collection_idf"), n_terms,
                                  f"one idf per term of the {n_terms:,}-term vocabulary.json", "term")
            stats = read_json(folder / "collection.json")
            avgdl = _avgdl_of(stats.get("avgdl")) if isinstance(stats, dict) else None
            if avgdl is None:
                raise ArtifactError(f"{folder / 'collection.json'}: expected a JSON object whose 'avgdl' is a finite "
                                    f"number > 0 (the average document length), got {stats!r:.80}; save the index "
                                    "again")
            self.collection_ = {"idf": idf, "avgdl": avgdl}
        if not (folder / "weights.json").is_file():
            self._load_docs_by_terms(folder, terms)
            self._warn_older(folder, "format 1: no weights.json", reweighed=True)
            return
        meta = read_json(folder / "weights.json")
        if isinstance(meta, dict):  # (before any array is read)
            self._check_analysis(folder, meta.get("analysis"))
        data, ind, ptr, w, dl, idf = (load_array(folder, n, mmap=mmap) for n in self._ARRAYS)
        nnz = len(ind)
        # the row pointers and document ids, always (_check_postings: a corrupt one crashes scipy's product, a
        # segmentation fault, also for a crafted folder whose checksums were recomputed; memory-mapped too:
        # 0.1-0.2 ms of SciFact's ~85 ms load, 512k postings, though it reads the ids file whole, 4 bytes a
        # posting), then every weight finite (a NaN weight emptied every ranking; a memory-mapped load whose
        # checksums Operator.load verified skips this one)
        _check_postings(folder, data, ind, ptr, n_terms, n_docs, "document")
        if not (isinstance(meta, dict) and meta.get("layout") == "terms_x_docs"):
            raise ArtifactError(f"{folder / 'weights.json'}: expected a JSON object with \"layout\": "
                                f"\"terms_x_docs\", got {meta!r:.80}; save the index again")
        if ind.dtype != ptr.dtype:
            raise ArtifactError(f"{folder / 'tf_indptr.npy'}: dtype {ptr.dtype}, tf_indices.npy's {ind.dtype} "
                                "(expected the same integer dtype, int32 or int64); save the index again")
        if data.dtype not in (np.uint16, np.int32):
            raise ArtifactError(f"{folder / 'tf_data.npy'}: dtype {data.dtype} (expected the term counts as uint16 "
                                "or int32); save the index again")
        if w.shape != (nnz,) or w.dtype != np.float64:
            raise ArtifactError(f"{folder / 'weights.npy'}: an array of shape {w.shape} and dtype {w.dtype} "
                                f"(expected {nnz:,} float64 weights, one per posting of tf_indices.npy); save the "
                                "index again")
        dl = _checked_floats(folder, "doc_lengths", dl, n_docs, f"one length per document of the {n_docs:,}-document "
                             "corpus, >= 0", "document", kinds="fiu", nonnegative=True)
        idf = _checked_floats(folder, "idf", idf, n_terms, f"one idf per term of the {n_terms:,}-term vocabulary.json",
                              "term")
        if not (mmap and self._verified):  # (the ids were checked above: the message names the weights alone)
            _checked_floats(folder, "weights", w, nnz, "one float64 weight per posting of tf_indices.npy", "posting")
        self._counts = sp.csr_matrix((data, ind, ptr), shape=(n_terms, n_docs), copy=False)
        self._counts.has_sorted_indices = True
        self._dl = dl
        saved = meta.get("weights_of")
        if self._saved_weights_valid(saved, dl):
            self.idf_ = idf
            self._set_weights(w)
        else:  # (saved with other parameters: weigh with these)
            self._weigh()
            if (isinstance(saved, dict) and "n_docs" not in saved and "n_docs" in self._weights_key()
                    and not bool(np.all(np.asarray(dl) > 0))):
                # (a lucene save weighed before N and avgdl left out its documents without a token)
                self._warn_older(folder, "weights.json without 'n_docs', and documents without a token", True)

    def _load_docs_by_terms(self, folder: Path, terms: list[str]) -> None:
        """Load a save of the layout before ``weights.json``: docs x terms float32 counts
        (``tf_data``, ``tf_indices``, ``tf_indptr``), transposed and weighed here."""
        from ragkit.errors import ArtifactError

        data, ind, ptr = (load_array(folder, n) for n in ("tf_data", "tf_indices", "tf_indptr"))
        _check_postings(folder, data, ind, ptr, len(self.corpus_), len(terms), "term")
        if len(data) and not (bool(np.isfinite(data).all()) and float(data.min()) >= 0):
            raise ArtifactError(f"{folder / 'tf_data.npy'}: corrupt BM25 arrays: term counts that are negative or "
                                "not finite")
        big = bool(len(data)) and float(data.max()) > _U16
        tf = sp.csr_matrix((data.astype(np.int32 if big else np.uint16), ind, ptr), shape=(len(ptr) - 1, len(terms)))
        del data
        parts = [tf]
        del tf
        self._counts, self._dl = _terms_by_docs(parts, len(terms))
        self._weigh()
