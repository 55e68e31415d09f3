"""Pseudo-relevance feedback query expansion (RM3), the body of a retrieval loop.

RM3 (Abdul-Jaleel et al., "UMass at TREC 2004", built on Lavrenko & Croft's relevance
models, SIGIR 2001): take the top ``fb_docs`` documents of the current ranking as if they
were relevant, estimate a relevance model

    P(t | R) ∝ sum_{d in top} w(d) * tf(t, d) / |d|,     w(d) ∝ max(score(d), 0)

keep its ``fb_terms`` most probable terms, and interpolate with the original query's
term distribution: ``q'(t) = orig_weight * P(t | Q) + (1 - orig_weight) * P(t | R)``.
As in Anserini's RM3, terms that occur in more than ``max_df`` of the documents are not
used for expansion.

Terms are the BM25 tokenizer's (lowercase, Lucene stopwords, Porter stems by default;
the tokenizer parameters must match the BM25 that reads the expanded query).  The weighted
query is written as text into ``state.values["lexical_query"]``, which BM25 reads (encoders
keep reading the query itself: the weighted text is for term matching only): each term
is spelled with a corpus word that stems to it and repeated ``round(q'(t) * resolution)``
times, and since BM25 counts repeated query terms, the BM25 score of the text is the
weighted RM3 score to within ``1 / resolution``.  (Scores are therefore about
``resolution`` times larger than plain BM25 scores.)  The expansion always starts from
the original query, so iterating ``Loop(prf | bm25, until=topk_stable)`` refines the
feedback set rather than drifting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ragkit.operator import Operator, load_array, read_json, save_arrays, topk_rows, write_json
from ragkit.params import Params
from ragkit.registry import register
from ragkit.retrievers.bm25 import Tokenizer, _stemmer
from ragkit.types import Corpus, State, TrainSet

__all__ = ["PRF", "PRFParams"]


class PRFParams(Params):
    fb_docs: int = Field(10, ge=1, description="Feedback documents: the top of the current ranking.")
    fb_terms: int = Field(10, ge=1, description="Expansion terms kept from the relevance model.")
    orig_weight: float = Field(0.5, ge=0, le=1, description="Weight of the original query (1 = no expansion).")
    max_df: float = Field(0.1, gt=0, le=1, description="Terms in more than this share of documents are not added.")
    doc_weight: Literal["score", "uniform"] = Field(
        "score", description="Weigh feedback documents by their (clipped, normalised) score, or equally.")
    resolution: int = Field(100, ge=10, description="Total repetitions used to write term weights as text.")
    stopwords: Literal["lucene", "none"] = Field("lucene", description="As the BM25 that reads the text.")
    stemmer: Literal["porter", "english", "none"] = Field("porter", description="As the BM25 that reads the text.")
    fields: Literal["title_text", "text"] = Field("title_text", description="As the BM25 that reads the text.")
    tokenizer: Literal["alnum", "whitespace"] = Field("alnum", description="As the BM25 that reads the text.")


@register
class PRF(Operator):
    """RM3 pseudo-relevance feedback: expand each query with terms of its top documents.

    Reads ``state.rankings`` (the feedback documents) and the original ``state.queries``;
    writes ``state.values["lexical_query"]`` (expanded query text, one str per query), which
    term-matching retrievers (BM25, ``State.texts(lexical=True)``) search with; dense and
    multi-vector encoders keep encoding the query itself.  Without rankings (first step of a
    loop) it changes nothing.  A query whose feedback documents hold no usable term keeps its
    original text.  A feedback document with a non-finite score counts as scoring 0.

    Fitted state: per-document term distributions ``ptd_`` (CSR, n_docs x n_terms,
    rows sum to 1), document frequencies ``df_`` (n_terms,), and ``surface_`` (a corpus
    word per term that the tokenizer maps back to that term).

    Examples
    --------
    >>> from ragkit.retrievers import BM25
    >>> from ragkit.pipelines import Loop, TopKStable
    >>> pipe = Loop(PRF(fb_docs=10, fb_terms=10) | BM25(k=100), until=TopKStable(k=10), max_iters=3)
    """

    name = "prf"
    kind = "rewriter"
    Params = PRFParams
    example = {"fb_docs": 5, "fb_terms": 5, "max_df": 0.5}

    def _tokenize(self, texts: list[str]) -> tuple[list[list[str]], dict[str, str]]:
        """Stemmed tokens per text, and a surface word for every stem seen."""
        raw = Tokenizer(self.params.stopwords, "none", self.params.tokenizer)(texts)
        vocab = sorted({t for doc in raw for t in doc})
        stems = vocab if self.params.stemmer == "none" else _stemmer(self.params.stemmer).stemWords(vocab)
        surface: dict[str, str] = {}
        for word, stem in zip(vocab, stems):  # shortest word, then alphabetical: deterministic
            cur = surface.get(stem)
            if cur is None or len(word) < len(cur):
                surface[stem] = word
        stem_of = dict(zip(vocab, stems))
        return [[stem_of[t] for t in doc] for doc in raw], surface

    def _counts(self, tokens: list[list[str]]) -> sp.csr_matrix:
        vocab = self.vocab_
        idx = [[vocab[t] for t in doc if t in vocab] for doc in tokens]
        lens = np.fromiter((len(d) for d in idx), np.int64, len(idx))
        indices = np.fromiter((j for d in idx for j in d), np.int64, int(lens.sum()))
        indptr = np.concatenate([[0], np.cumsum(lens)])
        m = sp.csr_matrix((np.ones(len(indices), np.float64), indices, indptr), shape=(len(tokens), len(vocab)))
        m.sum_duplicates()
        return m

    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        texts = corpus.full_texts if self.params.fields == "title_text" else corpus.texts.tolist()
        tokens, surface = self._tokenize(texts)
        terms = sorted(surface)
        self.vocab_ = {t: i for i, t in enumerate(terms)}
        self.surface_ = np.array([surface[t] for t in terms], dtype=object)
        self._set_counts(self._counts(tokens))

    def _set_counts(self, tf: sp.csr_matrix) -> None:
        self.tf_ = tf
        self.df_ = np.bincount(tf.indices, minlength=tf.shape[1]).astype(np.int64)
        dl = np.asarray(tf.sum(axis=1)).ravel()
        self.ptd_ = sp.diags(1.0 / np.maximum(dl, 1)) @ tf
        self.ptd_ = sp.csr_matrix(self.ptd_)
        n = max(tf.shape[0], 1)
        self.expandable_ = (self.df_ / n) <= self.params.max_df

    # ------------------------------------------------------------------ call
    def expansion_weights(self, state: State) -> sp.csr_matrix:
        """Interpolated RM3 term weights per query, CSR ``(n_q, n_terms)``, rows sum to 1 (or 0)."""
        p = self.params
        n_q, n_terms = len(state), len(self.vocab_)
        q = self._counts(self._tokenize(list(state.queries))[0])
        q = sp.diags(1.0 / np.maximum(np.asarray(q.sum(axis=1)).ravel(), 1e-12)) @ q
        # feedback documents: flat (query, row, weight)
        heads = [r.head(p.fb_docs) for r in state.rankings]
        lens = np.fromiter((len(h) for h in heads), np.int64, n_q)
        rows = np.concatenate([h.rows for h in heads]) if lens.sum() else np.empty(0, np.int64)
        qidx = np.repeat(np.arange(n_q), lens)
        if p.doc_weight == "score" and lens.sum():
            w = np.concatenate([h.scores for h in heads]).astype(np.float64)
            w = np.where(np.isfinite(w), np.maximum(w, 0.0), 0.0)  # a NaN would unnormalise the whole query
            tot = np.bincount(qidx, weights=w, minlength=n_q)
            uniform = tot[qidx] <= 0
            w = np.where(uniform, 1.0 / np.maximum(lens[qidx], 1), w / np.where(tot[qidx] > 0, tot[qidx], 1))
        else:
            w = 1.0 / np.maximum(lens[qidx], 1)
        fb = sp.csr_matrix((w, (qidx, rows)), shape=(n_q, self.ptd_.shape[0]))
        rel = sp.csr_matrix(fb @ self.ptd_) @ sp.diags(self.expandable_.astype(np.float64))
        rel = sp.csr_matrix(rel)
        # top fb_terms per query, in dense blocks of bounded size
        keep_q, keep_t, keep_w = [], [], []
        chunk = max(1, 2_000_000 // max(n_terms, 1))
        for a in range(0, n_q, chunk):
            block = rel[a:a + chunk].toarray()
            t, s = topk_rows(block, p.fb_terms)
            s = s.astype(np.float64)
            ok = s > 0
            keep_q.append(np.repeat(np.arange(a, a + len(block)), ok.sum(axis=1)))
            keep_t.append(t[ok])
            keep_w.append(s[ok])
        kq = np.concatenate(keep_q) if keep_q else np.empty(0, np.int64)
        kt = np.concatenate(keep_t) if keep_t else np.empty(0, np.int64)
        kw = np.concatenate(keep_w) if keep_w else np.empty(0)
        tot = np.bincount(kq, weights=kw, minlength=n_q)
        exp = sp.csr_matrix((kw / np.where(tot[kq] > 0, tot[kq], 1), (kq, kt)), shape=(n_q, n_terms))
        has_fb = tot > 0
        alpha = np.where(has_fb, p.orig_weight, 1.0)
        has_q = np.asarray(q.sum(axis=1)).ravel() > 0
        alpha = np.where(has_q, alpha, 0.0)  # a query with no known term: expansion only
        return sp.csr_matrix(sp.diags(alpha) @ q + sp.diags(1.0 - alpha) @ exp)

    def _call(self, state: State) -> State:
        out = state.copy()
        if state.rankings is None or not len(state):
            return out
        weights = self.expansion_weights(state)
        counts = weights.copy()
        counts.data = np.rint(counts.data * self.params.resolution)
        counts.eliminate_zeros()
        lens = np.diff(counts.indptr)
        words = self.surface_[np.repeat(counts.indices, counts.data.astype(np.int64))]
        reps = np.bincount(np.repeat(np.arange(len(state)), lens), weights=counts.data,
                           minlength=len(state)).astype(np.int64)
        bounds = np.concatenate([[0], np.cumsum(reps)])
        texts = [" ".join(words[bounds[i]:bounds[i + 1]]) if reps[i] else state.queries[i] for i in range(len(state))]
        out.values["lexical_query"] = texts
        return out

    # ------------------------------------------------------------------ persistence
    def _save(self, folder: Path) -> None:
        tf = self.tf_
        save_arrays(folder, tf_data=tf.data, tf_indices=tf.indices, tf_indptr=tf.indptr)
        terms = sorted(self.vocab_, key=self.vocab_.get)
        write_json(folder / "terms.json", {"terms": terms, "surface": self.surface_.tolist()})

    def _load(self, folder: Path, mmap: bool = False) -> None:
        meta = read_json(folder / "terms.json")
        self.vocab_ = {t: i for i, t in enumerate(meta["terms"])}
        self.surface_ = np.array(meta["surface"], dtype=object)
        data, ind, ptr = (load_array(folder, n) for n in ("tf_data", "tf_indices", "tf_indptr"))
        self._set_counts(sp.csr_matrix((data, ind, ptr), shape=(len(ptr) - 1, len(self.vocab_))))
