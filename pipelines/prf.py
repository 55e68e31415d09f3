"""Pseudo-relevance feedback query expansion (RM3), the body of a retrieval loop.

RM3 (Abdul-Jaleel et al., "UMass at TREC 2004", built on Lavrenko & Croft's relevance
models, SIGIR 2001) exactly as Anserini's ``Rm3Reranker`` computes it, given the same ranking
and the same analysed terms (castorini/anserini, ``src/main/java/io/anserini/rerank/lib/
Rm3Reranker.java`` and ``src/main/java/io/anserini/util/FeatureVector.java``, the versions with
``filterTerms`` and value-then-feature ordering; ``SearchCollection -rm3`` and Pyserini's
``set_rm3`` use them with fbDocs 10, fbTerms 10, originalQueryWeight 0.5):

1. Query model: the analysed query tokens (every token, also those the corpus lacks, but not
   a word whose stem is empty, which BM25 drops too: the "s" of "Fermat's"), counted and scaled
   to sum 1: ``q(t) = count(t) / n_tokens``.
2. For each of the top ``fb_docs`` documents ``d`` of the current ranking, its term vector
   (term -> tf over the whole indexed text) keeps only terms of 2 to 20 characters that match
   ``[a-z0-9]+`` (``filter_terms``; pure digits pass) and occur in at most ``max_df`` of the
   documents (``float32(df) / float32(N) > max_df`` drops a term), and is then pruned to its
   ``fb_terms`` most frequent terms (ties: alphabetical), *before* normalising:
   ``p(t|d) = tf(t, d) / sum of the kept tf`` (a document left with no term is skipped).
3. ``rm(t) = sum_d p(t|d) * score(d)`` with the raw retrieval score of ``d`` (not clipped,
   not normalised; ``doc_weight``), over the terms kept by any feedback document; the
   ``fb_terms`` largest (ties: alphabetical) are kept and scaled to unit L1 norm.
4. ``q'(t) = original_query_weight * q(t) + (1 - original_query_weight) * rm(t)``, the
   boosts of Anserini's ``BooleanQuery`` of ``BoostQuery(TermQuery(t), q'(t))`` clauses, so
   a document scores ``sum_t q'(t) * BM25(t, d)``.

Stopwords are not filtered here: as in Anserini, where they are never indexed, the tokenizer
removes them before anything is counted.  Anserini computes in float32 and this in float64,
which can only matter for weights tied to within float32 rounding.  Feedback scores are never
negative in Lucene; here a negative score weighs negatively (``doc_weight="clipped"`` counts it
as 0, for upstream retrievers that score below 0) and a non-finite score counts as 0.  Where
Anserini would divide by a zero norm (no feedback term, or feedback weights that sum to 0)
the query is not expanded.

Terms are the BM25 tokenizer's (lowercase, Lucene stopwords, Porter stems by default).
The analysis parameters (``fields``, ``tokenizer``, ``stopwords``, ``stemmer``) must be those of
the BM25 that reads the expanded query, and only a BM25 reads it: a pipeline whose next retriever
after ``prf`` is not a ``bm25`` (dense, muvera, knn_embed: it would change nothing), or is one that
analyses text otherwise (``[bm25: {stemmer: none}, prf: {}, bm25: {stemmer: none}]`` searched
Porter stems, ``property`` for ``properties``), is refused when it is built, naming both steps
(:func:`~ragkit.pipelines._checks.prf_reader_problem`); so is a ``prf`` that no retriever follows (``[bm25, prf]``,
also none after the parallel or route whose branch it ends), which changes no ranking.  They are not inferred
from the BM25: an explicit setting is what is run, and saved.  The weighted
query is written as text into ``state.values["lexical_query"]``, which BM25 reads (encoders
keep reading the query itself: the weighted text is for term matching only): each term
is spelled with a corpus word that stems to it and repeated
``round(q'(t) / sum(q') * resolution)`` times (the sum over the query's corpus terms), and
since BM25 counts repeated query terms, the BM25 score of the text is the weighted RM3 score,
times ``resolution / sum(q')``, with every weight rounded to ``1 / resolution`` of the total (half to even; a
query's repetitions depend on its own weights only, bit for bit, never on the other queries of the batch).
(Scores are therefore about ``resolution`` times larger than plain BM25 scores; a term whose
weight is not positive cannot be written and is left out.)  With the default 1000, one round on
SciFact test scores as the exact boosts do (nDCG@10 0.6479, Recall@100 0.9100 both ways) and
ranks the same top 10 for 90% of the queries (29% at 100; 99% at 10000, 5x slower).
The repetitions also go, as term counts, into ``state.values["lexical_counts"]``: a BM25 whose
analysis is PRF's builds its query matrix from them (the one tokenising the text gives) instead of
tokenising ~``resolution`` words per query again, as long as the texts it searches are exactly
those PRF wrote and it indexes every expansion term (else it tokenises the text).

The expansion always starts from the original query, so iterating
``Loop(prf | bm25, until=topk_stable)`` refines the feedback set rather than drifting; one
round (``bm25 | prf | bm25``) is Anserini's BM25+RM3.
"""

from __future__ import annotations

import re
from itertools import chain, repeat
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import scipy.sparse as sp
from pydantic import AliasChoices, Field

from ragkit._flat import check_rows_in_corpus
from ragkit._saves import load_array, read_json, save_arrays, write_json
from ragkit.operator import Operator
from ragkit.params import Params
from ragkit.registry import register
from ragkit.retrievers.bm25 import BM25, LEXICAL_COUNTS, LexicalCounts, QueryCounts, Tokenizer, _index_dtype
from ragkit.types import Corpus, State, TrainSet

__all__ = ["PRF", "PRFParams"]

#: Anserini's term filter (``Rm3Reranker.createdFeatureVector``): length in UTF-16 code units.
MIN_TERM_CHARS, MAX_TERM_CHARS = 2, 20
_TERM_CHARS = re.compile(r"[a-z0-9]+")


_SAME = ("Must be the same as the bm25's that reads the expanded query (a pipeline with another is refused when "
         "built).")


class PRFParams(Params):
    fb_docs: int = Field(default=10,
                         ge=1, description="Feedback documents: the top of the current ranking (Anserini fbDocs).")
    fb_terms: int = Field(default=10, ge=1, description="Terms kept per feedback document and in the relevance model "
                                                        "(Anserini fbTerms).")
    original_query_weight: float = Field(
        default=0.5, ge=0, le=1, validation_alias=AliasChoices("original_query_weight", "orig_weight"),
        description="Weight of the original query, 1 = no expansion (Anserini originalQueryWeight; "
                    "'orig_weight' is accepted as its old name).")
    max_df: float = Field(default=0.1,
                          gt=0, le=1, description="Terms in more than this share of documents are not added "
                                                  "(Anserini: 0.1; 0.01 for tweets).")
    filter_terms: bool = Field(default=True, description="Only terms matching [a-z0-9]+ are added (Anserini's default; "
                                                         "false is its -rm3.noTermFilter).")
    doc_weight: Literal["score", "clipped", "uniform"] = Field(
        default="score",
        description="Weigh feedback documents by their raw score (Anserini), by the score clipped at 0 "
                    "(equal weights if none is positive), or equally.")
    # (at most 100,000: each query's text holds ~resolution words, all queries' at once: 10**8 took 13 s and
    # 2.3 GB for one query, 2**31 - 1 tried 8 GiB; weights rounded to 1/100,000 of their sum are finer than
    # anything the ranking after them tells apart)
    resolution: int = Field(default=1000, ge=10, le=100_000,
                            description="Total repetitions used to write term weights as text: each is rounded to "
                                        "1/resolution of their sum (the BM25 after it scores about resolution / "
                                        "query length times higher than plain BM25).")
    stopwords: Literal["lucene", "none"] = Field(default="lucene", description=_SAME)
    stemmer: Literal["porter", "english", "none"] = Field(default="porter", description=_SAME)
    fields: Literal["title_text", "text"] = Field(default="title_text", description=_SAME)
    tokenizer: Literal["alnum", "unicode", "whitespace"] = Field(default="alnum", description=_SAME)


def _top_per_group(group: np.ndarray, key: np.ndarray, term: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` entries of largest ``key`` in each ``group`` (ties: smaller ``term``),
    as FeatureVector.pruneToSize orders them; returned grouped, best first."""
    order = np.lexsort((term, -key, group))
    g = group[order]
    first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(g) else np.empty(0, np.int64)
    rank = np.arange(len(g)) - np.repeat(first, np.diff(np.r_[first, len(g)]))
    return order[rank < k]


def _stack_rows(parts: list[sp.csr_matrix], col: np.ndarray) -> sp.csr_matrix:
    """Docs x terms CSR ``(sum of the parts' rows, len(col))`` of the rows of ``parts`` (docs x terms chunks, each
    as wide as the vocabulary when it was counted; emptied here) with column ``j`` moved to ``col[j]``: sorted
    indices, ``uint16`` counts where every part's are, else ``int32``.  The result's arrays are allocated once
    and each part is placed into them and released."""
    nnz, n_docs = sum(m.nnz for m in parts), sum(m.shape[0] for m in parts)
    idx = _index_dtype(nnz, len(col))
    data = np.empty(nnz, np.uint16 if all(m.data.dtype == np.uint16 for m in parts) else np.int32)
    indices: np.ndarray = np.empty(nnz, idx)
    indptr: np.ndarray = np.zeros(n_docs + 1, idx)
    at = row = 0
    while parts:  # a loop over chunks of documents
        m = parts.pop(0)
        indices[at:at + m.nnz] = col[m.indices]
        data[at:at + m.nnz] = m.data
        indptr[row + 1:row + 1 + m.shape[0]] = np.add(m.indptr[1:], at, dtype=idx)
        at, row = at + m.nnz, row + m.shape[0]
        del m
    tf = sp.csr_matrix((data, indices, indptr), shape=(n_docs, len(col)), copy=False)
    tf.sort_indices()
    return tf


def _join_per_query(words: np.ndarray, reps: np.ndarray, fallback: Sequence[str]) -> list[str]:
    """Each query's words (``words``: all queries' one after another, ``reps[i]`` of query ``i``) joined by
    spaces, and ``fallback[i]`` for a query of no word: what ``" ".join`` per query gives, with one join of all
    the words (each query's last one followed by a NUL instead of a space) and one split at the NULs.  A word
    holding a NUL itself (the count of pieces then is off) falls back to one join per query."""
    some = np.flatnonzero(reps)
    if not len(some):
        return list(fallback)
    seps = np.full(len(words), " ", dtype=object)
    seps[np.cumsum(reps)[some] - 1] = "\x00"
    woven = np.empty(2 * len(words), dtype=object)
    woven[0::2], woven[1::2] = words, seps
    parts = "".join(woven.tolist()).split("\x00")
    if len(parts) == len(some) + 1:  # (the last piece is the empty one after the last NUL)
        texts = np.empty(len(fallback), dtype=object)
        texts[:] = fallback  # (assigned into an object array: each string as it is)
        joined = np.empty(len(some), dtype=object)
        joined[:] = parts[:-1]
        texts[some] = joined
        return texts.tolist()
    bounds = np.concatenate([[0], np.cumsum(reps)]).tolist()
    return [" ".join(words[bounds[i]:bounds[i + 1]]) if reps[i] else fallback[i] for i in range(len(fallback))]


@register
class PRF(Operator):
    """RM3 pseudo-relevance feedback (Anserini's ``Rm3Reranker``): expand each query with
    terms of its top documents.

    Reads ``state.rankings`` (the feedback documents) and the original ``state.queries``;
    writes ``state.values["lexical_query"]`` (expanded query text, one str per query), which
    term-matching retrievers (BM25, ``State.texts(lexical=True)``) search with; dense and
    multi-vector encoders keep encoding the query itself.  The same expansion goes as term counts
    into ``state.values["lexical_counts"]`` (one :class:`~ragkit.retrievers.bm25.QueryCounts` per query,
    ``.to_dict()`` its ``{term: count}``), which a BM25 of the same analysis reads instead of tokenising the
    text again while the texts it searches are exactly those written
    (:meth:`~ragkit.retrievers.bm25.BM25.expansion_matrix`).  Without rankings (first step of a loop) it
    changes nothing.  A query whose feedback documents hold no usable term keeps its
    original text.  The algorithm, step by step, is in the module docstring.

    Score scale: the expanded query writes every term ``round(weight * resolution)`` times, so the BM25
    after it scores about ``resolution / query length`` times higher than plain BM25 (SciFact: top scores
    ~7 before, ~2,000 after; also with ``original_query_weight: 1``).  A score threshold or a
    ``score_reached`` judge after it needs a threshold on that scale: learn it (``learn: true``) rather than
    carry one over from plain BM25.

    RM3: Abdul-Jaleel et al., "UMass at TREC 2004: Novelty and HARD", TREC 2004, on the relevance models of
    Lavrenko & Croft, "Relevance-Based Language Models", SIGIR 2001.

    Fitted state: term counts ``tf_`` (CSR, n_docs x n_terms, terms in alphabetical order, ``uint16`` counts,
    ``int32`` where one exceeds 65,535; saves from before hold float64 counts, which load as they are),
    document frequencies ``df_`` (n_terms,), ``expandable_`` (n_terms, bool: passes the
    length, character and ``max_df`` filters) and ``surface_`` (a corpus word per term that
    the tokenizer maps back to that term); ``_terms``, the term of each column (an object array), is built with
    them, at fit and at load.

    Examples
    --------
    >>> from ragkit.retrievers import BM25
    >>> from ragkit.pipelines import Loop, TopKStable
    >>> rm3 = BM25(k=100) | PRF(fb_docs=10, fb_terms=10, original_query_weight=0.5) | BM25(k=100)
    >>> pipe = Loop(PRF(fb_docs=10, fb_terms=10) | BM25(k=100), until=TopKStable(k=10), max_iters=3)
    """

    name = "prf"
    kind = "rewriter"
    #: it expands from the rankings of the steps before it: refused before the first retriever of its list, except
    #: in a loop's body (a rewriter there gets the previous iteration's rankings; the first expands nothing)
    reads_rankings = True
    Params = PRFParams
    params: PRFParams
    example = {"fb_docs": 5, "fb_terms": 5, "max_df": 0.5}
    downstream_example = [{"bm25": {"k": 20}}]  # the conformance suites' step that reads the expansion
    _terms: np.ndarray  # set with the counts (_set_counts): the term of each column

    def _tokenize(self, texts: list[str]) -> tuple[list[list[str]], dict[str, str]]:
        """Terms (stems) per text, as the BM25 of these parameters analyses them, and a surface word for every
        term seen (the shortest, then alphabetically first, word that stems to it).  A word whose stem is empty
        (Porter stems the "s" of "Fermat's" or "U.S." to "") is no term, as in BM25 (:meth:`Tokenizer.normalize`)."""
        p = self.params
        tok = Tokenizer(p.stopwords, p.stemmer, p.tokenizer)
        docs = tok.surfaces(texts)
        uniq = sorted(set(chain.from_iterable(docs)))
        terms = tok.normalize(uniq)
        surface: dict[str, str] = {}
        for s, t in zip(uniq, terms):  # distinct words, alphabetical: the shortest, then the first, is kept
            if t is not None:
                word = s.decode("ascii") if isinstance(s, bytes) else s
                cur = surface.get(t)
                if cur is None or len(word) < len(cur):
                    surface[t] = word
        term_of = dict(zip(uniq, terms))
        return [[t for t in map(term_of.__getitem__, d) if t is not None] for d in docs], surface

    def _counts(self, tokens: list[list[str]]) -> sp.csr_matrix:
        """Counts of the known terms of each token list (queries), float64 CSR ``(len(tokens), n_terms)``."""
        vocab = self.vocab_
        lens = np.fromiter(map(len, tokens), np.int64, len(tokens))
        ids = np.fromiter(map(vocab.get, chain.from_iterable(tokens), repeat(-1)), np.int64, int(lens.sum()))
        rows = np.repeat(np.arange(len(tokens)), lens)
        keep = ids >= 0
        m = sp.coo_matrix((np.ones(int(keep.sum())), (rows[keep], ids[keep])), shape=(len(tokens), len(vocab)))
        return m.tocsr()  # (sums duplicates, sorts indices)

    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        """Count the corpus's terms as BM25 does (:meth:`BM25._count_parts`: chunks of texts, one dict look-up a
        token, ``uint16`` counts) and reorder the columns alphabetically: the same counts, vocabulary and surface
        words as tokenising everything at once gave, at about BM25's time and peak memory (it took ~1.8x both:
        the whole corpus's tokens as Python lists, and float64 counts)."""
        p = self.params
        texts = corpus.full_texts_view if p.fields == "title_text" else corpus.texts.tolist()
        bm = BM25(stopwords=p.stopwords, stemmer=p.stemmer, tokenizer=p.tokenizer)
        bm.vocab_ = {}
        parts = bm._count_parts(texts, grow=True)
        terms = sorted(bm.vocab_)
        col = np.empty(len(terms), np.int64)  # BM25's column (order of first appearance) -> alphabetical
        col[np.fromiter(map(bm.vocab_.__getitem__, terms), np.int64, len(terms))] = np.arange(len(terms))
        surface: dict[int, str] = {}
        for s, j in (bm._s2i or {}).items():  # distinct words: the shortest, then alphabetically first, of a term
            if j >= 0:
                word = s.decode("ascii") if isinstance(s, bytes) else s
                cur = surface.get(j)
                if cur is None or (len(word), word) < (len(cur), cur):
                    surface[j] = word
        self.vocab_ = {t: i for i, t in enumerate(terms)}
        self.surface_ = np.array([surface[bm.vocab_[t]] for t in terms], dtype=object)
        self._set_counts(_stack_rows(parts, col))

    def _set_counts(self, tf: sp.csr_matrix) -> None:
        p = self.params
        self.tf_ = tf
        self.df_ = np.bincount(tf.indices, minlength=tf.shape[1]).astype(np.int64)
        terms = list(self.vocab_)  # (column order: fit and load enumerate the terms into the vocabulary)
        # the term of each column, which every call's LexicalCounts names: built once here (fit and load), not by
        # sorting the vocabulary at each call (SciFact's 26k terms: 2-10 ms of a ~12 ms call)
        self._terms = np.array(terms, dtype=object)
        n_chars = np.fromiter((len(t.encode("utf-16-le")) // 2 for t in terms), np.int64, len(terms))
        ok = (n_chars >= MIN_TERM_CHARS) & (n_chars <= MAX_TERM_CHARS)
        if p.filter_terms:
            ok &= np.fromiter((_TERM_CHARS.fullmatch(t) is not None for t in terms), bool, len(terms))
        # Java: (float) df / numDocs > 0.1f, in float32
        ratio = self.df_.astype(np.float32) / np.float32(max(tf.shape[0], 1))
        self.expandable_ = ok & ~(ratio > np.float32(p.max_df))

    # ------------------------------------------------------------------ call
    def _doc_weights(self, scores: np.ndarray, qidx: np.ndarray, n_q: int) -> np.ndarray:
        """Weight of each feedback document (flat, grouped by query) per ``doc_weight``."""
        w = np.where(np.isfinite(scores), scores.astype(np.float64), 0.0)
        if self.params.doc_weight == "uniform":
            return np.ones_like(w)
        if self.params.doc_weight == "clipped":
            w = np.maximum(w, 0.0)
            none = np.bincount(qidx, weights=w, minlength=n_q) <= 0
            w = np.where(none[qidx], 1.0, w)
        return w

    def relevance_model(self, state: State) -> sp.csr_matrix:
        """Anserini's ``estimateRelevanceModel``: the pruned, L1-normalised ``rm(t)`` per query,
        CSR ``(n_q, n_terms)``; an empty row where the query gets no expansion."""
        p = self.params
        n_q, n_terms = len(state), len(self.vocab_)
        if state.rankings is None:  # no feedback documents (the first step of a loop): no expansion
            return sp.csr_matrix((n_q, n_terms))
        heads = [r.head(p.fb_docs) for r in state.rankings]
        lens = np.fromiter((len(h) for h in heads), np.int64, n_q)
        if not lens.sum():
            return sp.csr_matrix((n_q, n_terms))
        rows = np.concatenate([h.rows for h in heads])
        qidx = np.repeat(np.arange(n_q), lens)
        w = self._doc_weights(np.concatenate([h.scores for h in heads]), qidx, n_q)
        check_rows_in_corpus(rows, self.tf_.shape[0], self.name)
        # each feedback document's term vector: filtered, pruned to fb_terms, then normalised
        sub = self.tf_[rows]
        pair = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
        term, tf = sub.indices.astype(np.int64), sub.data.astype(np.float64)
        ok = self.expandable_[term] & (tf > 0)
        pair, term, tf = pair[ok], term[ok], tf[ok]
        keep = _top_per_group(pair, tf, term, p.fb_terms)
        pair, term, tf = pair[keep], term[keep], tf[keep]
        norm = np.bincount(pair, weights=tf, minlength=len(rows))
        val = tf / norm[pair] * w[pair]
        # sum over the feedback documents, per (query, term): every term kept by a document is a candidate
        q = qidx[pair]
        order = np.lexsort((term, q))
        q, term, val = q[order], term[order], val[order]
        if not len(q):
            return sp.csr_matrix((n_q, n_terms))
        first = np.flatnonzero(np.r_[True, (q[1:] != q[:-1]) | (term[1:] != term[:-1])])
        q, term, val = q[first], term[first], np.add.reduceat(val, first)
        keep = _top_per_group(q, val, term, p.fb_terms)
        q, term, val = q[keep], term[keep], val[keep]
        l1 = np.bincount(q, weights=np.abs(val), minlength=n_q)
        ok = l1[q] > 0  # Anserini would divide by 0: no expansion
        q, term, val = q[ok], term[ok], val[ok] / l1[q[ok]]
        rm = sp.csr_matrix((val, (q, term)), shape=(n_q, n_terms))
        rm.eliminate_zeros()
        return rm

    def query_model(self, state: State) -> sp.csr_matrix:
        """Anserini's ``qfv`` of the original queries: token counts over all analysed tokens (also
        those the corpus lacks, which have no column), CSR ``(n_q, n_terms)``."""
        tokens = self._tokenize(list(state.queries))[0]
        n_tok = np.fromiter((len(t) for t in tokens), np.float64, len(tokens))
        return sp.csr_matrix(sp.diags(1.0 / np.maximum(n_tok, 1.0)) @ self._counts(tokens))

    def expansion_weights(self, state: State) -> sp.csr_matrix:
        """RM3 term weights ``q'(t)`` per query, CSR ``(n_q, n_terms)``: Anserini's boosts,
        ``original_query_weight * q(t) + (1 - original_query_weight) * rm(t)``."""
        a = self.params.original_query_weight
        w = sp.csr_matrix(a * self.query_model(state) + (1.0 - a) * self.relevance_model(state))
        w.eliminate_zeros()
        w.sort_indices()  # a row's terms in one order whatever else is in the batch (sums over it are then too)
        return w

    #: decimals the scaled weights are rounded to before the whole repetitions are: float noise (1e-12 of a
    #: count, from sums taken in another order) must not move a weight that is a half (37.5) to either side
    _SNAP_DECIMALS = 6

    def _repetitions(self, weights: sp.csr_matrix) -> np.ndarray:
        """Whole repetitions of each stored weight of ``weights`` (CSR, sorted indices, none below 0):
        ``round(w / sum of its row * resolution)``, aligned with ``weights.data``.  A row's result depends on that
        row alone, bit for bit, not on the other queries of the batch: its sum is taken over its own entries in
        column order (``np.bincount`` adds each row's values one after another), and the scaled weights are
        rounded to ``_SNAP_DECIMALS`` decimals before they are rounded to whole numbers, half to even (so a weight
        of exactly 37.5 repetitions is 38 however its last bits came out)."""
        n_q = weights.shape[0]
        row = np.repeat(np.arange(n_q), np.diff(weights.indptr))
        total = np.bincount(row, weights=weights.data, minlength=n_q)
        scale = self.params.resolution / np.where(total > 0, total, 1.0)
        return np.rint(np.round(weights.data * scale[row], self._SNAP_DECIMALS))

    def _call(self, state: State) -> State:
        out = state.copy()
        if state.rankings is None or not len(state):
            return out
        weights = self.expansion_weights(state)
        weights.data = np.where(weights.data > 0, weights.data, 0.0)  # a weight below 0 cannot be written
        counts = sp.csr_matrix((self._repetitions(weights), weights.indices, weights.indptr), shape=weights.shape)
        counts.eliminate_zeros()
        lens = np.diff(counts.indptr)
        words = self.surface_[np.repeat(counts.indices, counts.data.astype(np.int64))]
        reps = np.bincount(np.repeat(np.arange(len(state)), lens), weights=counts.data,
                           minlength=len(state)).astype(np.int64)
        texts = _join_per_query(words, reps, state.queries)
        out.values["lexical_query"] = texts
        # the same expansion as term counts, which the bm25 after it reads instead of tokenising the text again
        p = self.params
        batch = LexicalCounts(counts, self._terms, texts, reps > 0, (p.tokenizer, p.stopwords, p.stemmer))
        out.values[LEXICAL_COUNTS] = list(map(QueryCounts, repeat(batch, len(state)), range(len(state))))
        return out

    # ------------------------------------------------------------------ persistence
    def _save(self, folder: Path) -> None:
        tf = self.tf_
        save_arrays(folder, tf_data=tf.data, tf_indices=tf.indices, tf_indptr=tf.indptr)
        write_json(folder / "terms.json", {"terms": self._terms.tolist(), "surface": self.surface_.tolist()})

    def _load(self, folder: Path, mmap: bool = False) -> None:
        meta = read_json(folder / "terms.json")
        self.vocab_ = {t: i for i, t in enumerate(meta["terms"])}
        self.surface_ = np.array(meta["surface"], dtype=object)
        data, ind, ptr = (load_array(folder, n) for n in ("tf_data", "tf_indices", "tf_indptr"))
        self._set_counts(sp.csr_matrix((data, ind, ptr), shape=(len(ptr) - 1, len(self.vocab_))))
