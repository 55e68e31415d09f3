"""Maximal marginal relevance: rerank a ranking to trade relevance against redundancy.

Carbonell and Goldstein, "The Use of MMR, Diversity-Based Reranking for Reordering Documents and
Producing Summaries", SIGIR 1998.  The diversity baseline users know from LangChain's
``max_marginal_relevance_search`` (``lambda_mult``, ``fetch_k``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
from pydantic import Field

from ragkit._flat import check_rows_in_corpus, first_positions, first_time_for, pad_rows, read_count
from ragkit._saves import load_array, save_arrays
from ragkit.encoders import (
    DEFAULT_MODEL,
    Encoder,
    check_encoder_key,
    get_encoder,
    query_vectors,
    save_encoder_key,
    unit_rows,
)
from ragkit.encoders.sentence import encode_documents, encoder_label, given_document_vectors
from ragkit.errors import DataError
from ragkit.filters.cutoffs import cut_k
from ragkit.operator import Operator, edited_during_search, is_prefix, searched_ids
from ragkit.options import PARAM, count_option
from ragkit.params import ModelName, Params
from ragkit.registry import register
from ragkit.retrievers._index import RowBuffer, check_finite_vectors
from ragkit.types import Corpus, Ranking, State, TrainSet

__all__ = ["MMR", "MMRParams", "mmr_select", "mmr_select_cosines", "TIE_TOLERANCE"]

_log = logging.getLogger("ragkit")

#: The tie tolerance of MMR's greedy selection (:func:`mmr_select_cosines`): a candidate whose objective is within
#: this of the step's best ties with it, and a tie goes to the earliest document of the pool (the retriever's
#: rank).  So ragkit's MMR is greedy MMR with a 1e-5 tie tolerance favouring the retriever's rank, not exact
#: greedy MMR: a document up to 1e-5 below the best may be picked first when the retriever ranked it higher.
#: The units differ by step: the first pick compares cosines ``cos(q, d)`` alone (in [-1, 1]), so the tolerance
#: is 1e-5 of cosine; each later pick compares the objective ``lambda_mult * cos(q, d) - (1 - lambda_mult) *
#: max_{s chosen} cos(d, s)`` (in [-1, 1] too), so it is 1e-5 of that objective (1e-5 / lambda_mult of the
#: relevance term alone, 1e-5 / (1 - lambda_mult) of the redundancy term alone).  Why 1e-5: float32 cosines of
#: one document from two computations (MMR's batched GEMM, the dense retriever's index) differ by a few 1e-6 at
#: dim 768, as :func:`~ragkit._flat.check_dense_rankings`'s 1e-5 allows: with 1e-6,
#: ``Dense(k=30) | MMR(k=30, lambda_mult=1)`` still reordered 146 of 500 hashed queries.
TIE_TOLERANCE = 1e-5


class MMRParams(Params):
    model: ModelName = Field(default=DEFAULT_MODEL,
                             description="Sentence-transformers model for query and document vectors.")
    k: int = Field(default=100, ge=1, description="Results kept per query.")
    fetch_k: int | None = Field(
        default=None,
        ge=1, description="Pool: the first fetch_k documents of the incoming ranking (at least k), so at most "
                          "what the retriever before MMR returns: raise its k to fetch_k for the full pool "
                          "(Dense(k=10) | MMR(k=10, fetch_k=50) only reorders dense's top 10; a warning says "
                          "so).  None = the whole incoming ranking (the retriever's k sets the pool).")
    lambda_mult: float = Field(
        default=0.5, ge=0, le=1, description="lambda: 1 = pure relevance (cosine order), 0 = pure diversity.")
    batch_size: int = Field(default=64, ge=1, description="Encoding batch size.")


class _MMRView(NamedTuple):
    """What a search reads of a fitted MMR, published in one assignment (``_view``) by every edit once it is done
    (fit, add, remove, load): the corpus and its documents' unit vectors, one row per document.  References only,
    never changed once published, so a search that took it reads vectors of its rows whatever an edit on another
    thread publishes meanwhile."""

    corpus: Corpus
    vectors: np.ndarray  # (N, d) unit rows


def mmr_select(q: np.ndarray, pool: np.ndarray, valid: np.ndarray, vectors: np.ndarray, k: int,
               lambda_mult: float) -> np.ndarray:
    """Greedy MMR over padded pools, vectorised over the batch (:func:`mmr_select_cosines` without the cosines).

    Parameters
    ----------
    q : (n_q, d) unit query vectors.
    pool : (n_q, F) int64 document rows (padding anywhere ``valid`` is False).
    valid : (n_q, F) bool.
    vectors : (N, d) unit document vectors.
    k : documents to select per query.
    lambda_mult : weight of relevance ``cos(q, d)`` against ``max cos(d, chosen)``.

    Greedy MMR with a tie tolerance: each step picks the available document of the highest objective;
    objectives within :data:`TIE_TOLERANCE` (1e-5, float32 rounding) of the highest tie, and a tie goes to the
    lowest pool position (the retriever's rank), so ``lambda_mult=1`` keeps a pool sorted by cosine in its order.
    The first pick's tolerance is in cosine units (it compares ``cos(q, d)`` alone), the later picks' in units
    of the objective ``lambda_mult * cos(q, d) - (1 - lambda_mult) * max cos(d, chosen)``.

    Returns
    -------
    (n_q, min(k, F)) int64 positions into ``pool`` in selection order (-1 once a pool is exhausted).
    """
    return mmr_select_cosines(q, pool, valid, vectors, k, lambda_mult)[0]


def mmr_select_cosines(q: np.ndarray, pool: np.ndarray, valid: np.ndarray, vectors: np.ndarray, k: int,
                       lambda_mult: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mmr_select`, and the cosine ``q . d`` of each selected document: ``(sel, cos)``.

    ``sel`` is :func:`mmr_select`'s ``(n_q, min(k, F))`` int64 positions into ``pool`` (-1 once a pool is
    exhausted); ``cos`` the ``(n_q, min(k, F))`` float32 cosines of those documents (0 where ``sel`` is -1),
    the values the relevance term was computed from (summed in float64, then rounded; no second gather).

    Memory: the gathered documents ``(n_q, F, dim)`` and their similarities ``(n_q, F, F)`` (float32 both),
    so callers bound ``n_q`` per call (:class:`MMR` takes ``2**26 // (F * (F + dim))`` queries at a time).
    """
    n_q, f = pool.shape
    k = min(k, f)
    sel = np.full((n_q, k), -1, np.int64)
    if n_q == 0 or k == 0:
        return sel, np.zeros((n_q, k), np.float32)
    import torch  # batched GEMM: torch.bmm runs at BLAS speed, numpy's einsum / stacked matmul several times slower

    block = np.ascontiguousarray(vectors[np.where(valid, pool, 0)], np.float32)  # (n_q, F, dim)
    # the cosines summed in float64 (einsum casts in small buffers: no float64 copy of the block): torch's
    # float32 matrix-vector product was off by up to 1e-5 at dim 768, more than the tie tolerance allows
    rel = np.einsum("qfd,qd->qf", block, np.asarray(q, np.float32), dtype=np.float64)  # (n_q, F)
    d = torch.from_numpy(block)
    with torch.inference_mode():
        sim = torch.bmm(d, d.transpose(1, 2)).numpy()  # (n_q, F, F)
    del d, block  # the (n_q, F, dim) block: the greedy steps read rel and sim only
    maxsim = np.zeros((n_q, f))
    avail = valid.copy()
    ar = np.arange(n_q)
    first = True
    for t in range(k):  # k greedy steps, each vectorised over the batch
        obj = rel if first else lambda_mult * rel - (1 - lambda_mult) * maxsim
        obj = np.where(avail & ~np.isnan(obj), obj, -np.inf)  # (a NaN, never from unit rows, comes last)
        # a near-tie goes to the lowest pool position (= the incoming rank): rel and sim come from float32 GEMMs,
        # whose rounding differs between two documents of one cosine (and from the retriever's), so an objective
        # within TIE_TOLERANCE of the best ties with it.  An exhausted pool (best -inf) picks no available
        # position: argmax of all False is 0, not available, so -1 below
        best = obj.max(axis=1, keepdims=True)
        pick = np.argmax((obj >= best - TIE_TOLERANCE) & avail, axis=1)
        ok = avail[ar, pick]
        sel[:, t] = np.where(ok, pick, -1)
        avail[ar[ok], pick[ok]] = False
        row_sim = sim[ar, pick]  # (n_q, F)
        maxsim = np.where(ok[:, None], np.maximum(maxsim, row_sim) if not first else row_sim, maxsim)
        first = False
    cos = np.where(sel >= 0, np.take_along_axis(rel, np.maximum(sel, 0), axis=1), 0.0)
    return sel, cos.astype(np.float32)


@register
class MMR(Operator):
    """Maximal marginal relevance reranker.

    Takes the first ``fetch_k`` documents of the incoming ranking (its first occurrence of each:
    a repeated row is dropped) and greedily picks ``k``: the
    first is the most similar to the query, each next one maximises
    ``lambda_mult * cos(q, d) - (1 - lambda_mult) * max_{s chosen} cos(d, s)``; objectives within 1e-5
    (float32 rounding of the cosines, :data:`TIE_TOLERANCE`) tie, and a tie goes to the document ranked
    first by the retriever, so ``Dense(k=10) | MMR(k=10, lambda_mult=1.0)`` returns dense's order.
    Cosines use the model's unit vectors (``(N, d)`` float32 cached at fit).  The output order is the selection
    order, so its ``scores`` are rank scores ``(n - i) / n`` (best first, float32) and the cosine
    ``q . d`` is in ``fields["cosine"]``.

    The pool is what the retriever in front returns, at most ``fetch_k`` (by default all of it):
    ``Dense(k=10) | MMR(k=10, fetch_k=50)`` picks among dense's top 10 only (the same set,
    reordered).  When the incoming rankings are shorter than a ``fetch_k`` that was set while the
    corpus holds more documents, a warning (once per operator object) says to raise the
    retriever's ``k``.

    ``k``, ``lambda_mult`` and ``fetch_k`` may also be set per call, ``lambda_mult`` checked as its parameter
    is, ``k`` and ``fetch_k`` (or None) as a call's ``k`` is (a positive integer; ``"8"`` or ``8.0`` refused):
    ``search(queries, mmr={"lambda_mult": 0.3, "fetch_k": 50}, dense={"k": 50})`` (a ``fetch_k``
    beyond what the retriever returns needs its ``k`` raised too, as above); LangChain's
    ``RagkitRetriever.invoke(q, mmr={"lambda_mult": 0.3})`` passes them through.

    References
    ----------
    Carbonell & Goldstein, "The Use of MMR, Diversity-Based Reranking for Reordering Documents and
    Producing Summaries", SIGIR 1998.

    Examples
    --------
    >>> from ragkit.filters.mmr import MMR
    >>> MMR(k=10, lambda_mult=0.7)
    MMR(k=10, lambda_mult=0.7)
    """

    uses_torch: ClassVar[bool] = True  # torch.topk / torch.bmm at search

    name = "mmr"
    kind = "reranker"
    reads_rankings = True
    Params = MMRParams
    params: MMRParams
    example = {"k": 10, "fetch_k": 20, "lambda_mult": 0.5}
    #: per call (``search(..., mmr={"lambda_mult": 0.3, "fetch_k": 50})``, LangChain's ``invoke(q, mmr={...})``):
    #: ``k`` and ``fetch_k`` (or None) are counts, held to the rule of a per-call ``k`` (a positive integer: "8"
    #: and 8.0 refused, which the parameters convert), ``lambda_mult`` is checked as its parameter is
    run_options = {"k": PARAM, "lambda_mult": PARAM, "fetch_k": count_option(none=True)}

    @property
    def encoder(self) -> Encoder:
        """The dense encoder of the ``model`` parameter (with ``batch_size``): texts to vectors ``(n, dim)``
        float32, rows made unit length here, so similarities are cosines."""
        return get_encoder(self.params.model, batch_size=self.params.batch_size)

    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        self.vectors_ = self._encode_docs(corpus)  # unit rows: cosines, whatever the encoder returns
        self._publish()

    def _publish(self) -> None:
        """Publish the state searches read (:class:`_MMRView`), in one assignment, once an edit set ``corpus_``
        and ``vectors_`` (the corpus first: a search that took the view before reads a corpus that holds its rows
        after an add, and is refused after a remove, :meth:`checked_view`)."""
        self._view = _MMRView(self.corpus_, self.vectors_)
        buffer = self.__dict__.get("_rows")
        if buffer is not None:
            buffer.keep_only(self.vectors_)

    def _search_view(self) -> _MMRView | None:
        """The state searches read (published by each edit; made from the attributes for an object pickled before
        views were published), ``None`` unfitted."""
        view = self.__dict__.get("_view")
        if view is None and "vectors_" in self.__dict__ and "corpus_" in self.__dict__:
            view = _MMRView(self.corpus_, self.vectors_)
        return view

    def _call(self, state: State) -> State:
        assert state.rankings is not None  # (Operator.__call__ refuses a state without them)
        # the vectors of the rows the search maps, taken when it began (a pipeline's search pins them before it
        # reads the corpus): an edit on another thread meanwhile publishes another view
        view: _MMRView = self.checked_view()
        out = state.copy()
        n_q = len(state)
        if n_q == 0:
            out.rankings = []
            return out
        k = cut_k(self, state)  # its own k option exactly, else its k raised to the call's
        fetch_k = read_count(self, "fetch_k", self.opt(state, "fetch_k", self.params.fetch_k), none=True)  # the call's
        # (a count, checked), else the parameter
        lambda_mult = self.opt(state, "lambda_mult", self.params.lambda_mult)
        longest = max((len(r) for r in state.rankings), default=0)
        want = max(fetch_k or longest, k)  # pool >= k
        f = min(want, longest)
        v = np.asarray(view.vectors)
        self._warn_short_pool(longest, want, len(v), fetch_k)
        pool, valid = pad_rows(state.rankings, f)  # (n_q, f) rows, 0 past a ranking's end, and the real ones
        check_rows_in_corpus(pool[valid], len(v), self.name)
        valid &= first_positions(pool, valid) == np.arange(f)  # a row the ranking holds twice: one candidate (its
        # first place)
        enc = self.encoder
        q = unit_rows(query_vectors(state, enc, who=encoder_label(self.name, self.params.model, enc, "encode_queries"),
                                    width=v.shape[1]))
        # queries per block: the gathered documents (step, F, dim) and their similarities (step, F, F), float32
        # both, together ~256 MiB at most (2**26 values; one query's pool alone may exceed it)
        step = max(1, int(2**26 // max(f * (f + v.shape[1]), 1)))
        sels, coss = [], []
        for i in range(0, n_q, step):
            sel, cos = mmr_select_cosines(q[i:i + step], pool[i:i + step], valid[i:i + step], v, k, lambda_mult)
            sels.append(sel)
            coss.append(cos)
        sel, cosines = np.concatenate(sels), np.concatenate(coss)
        rankings = []
        for i, r in enumerate(state.rankings):  # assembling output objects only; the work above is batched
            keep = sel[i] >= 0
            s = sel[i][keep]
            n = len(s)
            fields = {**r.take(s).fields, "cosine": cosines[i][keep]}  # incoming fields travel with their documents
            rankings.append(Ranking(pool[i, s], ((n - np.arange(n)) / max(n, 1)).astype(np.float32), fields))
        if searched_ids() is None and self.corpus_ is not view.corpus and not is_prefix(view.corpus, self.corpus_.ids):
            # (called on a State: its rows are mapped with corpus_ now, which an edit changed during the search)
            raise edited_during_search(self.name, "its documents changed")
        out.rankings = rankings
        return out

    def _warn_short_pool(self, longest: int, want: int, n_docs: int, fetch_k: int | None) -> None:
        """Warn once per operator object when a set ``fetch_k`` (the call's option, else the parameter) is cut
        short: the incoming rankings (``longest`` documents at most) are shorter than the pool ``want`` =
        max(fetch_k, k) while the corpus holds more (``n_docs``).  With ``fetch_k=None`` the pool is the
        incoming ranking, by design."""
        if (fetch_k is None or longest == 0 or longest >= min(want, n_docs)
                or not first_time_for(self, "_warned_short_pool")):
            return
        _log.warning(f"{self.name}: the rankings it reranks hold at most {longest} documents, fewer than its pool "
                     f"fetch_k={fetch_k} (the corpus has {n_docs}), so it picks among those {longest} "
                     f"only: the k of the retriever before it, a filter or a query matching few documents limits "
                     f"them; for the full pool the retriever's k must be at least {min(want, n_docs)}")

    # ------------------------------------------------------------------ updates
    def _encode_docs(self, corpus: Corpus) -> np.ndarray:
        """The unit vectors of ``corpus``'s documents by this reranker's encoder (``add``; what a LangChain
        retriever's add encodes into the encoder's cache ahead of its edit)."""
        enc = self.encoder  # (checked: one 2-D float row per document, else a DataError naming the encoder)
        return unit_rows(encode_documents(enc, corpus.full_texts,
                                          encoder_label(self.name, self.params.model, enc, "encode")))

    def add(self, corpus: Corpus, *, vectors: np.ndarray | None = None) -> "MMR":
        """Follow documents added to the retriever before it (no refit): their vectors are appended, one row per
        document after the others, as a fit on the joined corpus would hold them.

        ``vectors``: the documents' vectors by this reranker's encoder, one row per document in ``corpus``'s
        order (``None``: encoded here).  Ids already held, another number of rows or another width than the
        fitted vectors', NaN or infinite values are a :class:`DataError`; nothing changes then."""
        self._check_fitted()
        self.corpus_.check_addable(corpus, "mmr.add", "held")
        if not len(corpus):
            return self
        joined = self.corpus_.concat(corpus, "mmr.add")  # (a metadata value of another kind: refused before edits)
        new = self._encode_docs(corpus) if vectors is None else given_document_vectors(vectors, len(corpus), "mmr.add")
        # (a NaN row scored every cosine NaN, ranked last in each pool, silently; checked before the given rows are
        # made unit length, where an inf would warn)
        check_finite_vectors(new, "mmr.add", "document")
        if vectors is not None:
            new = unit_rows(new)
        v = np.asarray(self.vectors_)
        if new.shape[1] != v.shape[1]:
            raise DataError(f"mmr.add: the new documents' vectors have {new.shape[1]} dimensions, the fitted ones "
                            f"{v.shape[1]}; add vectors of this reranker's encoder ({self.params.model!r}), or refit")
        # appended in a buffer with room to spare (a one-document add copied every vector: 80 ms at 200k x 384);
        # the published view's rows are left as they are
        rows = self.__dict__.get("_rows")
        if rows is None:
            rows = self._rows = RowBuffer()
        self.vectors_, self.corpus_ = rows.append(v, new.astype(v.dtype, copy=False)), joined
        self._publish()
        return self

    def remove(self, ids: Any) -> "MMR":
        """Follow documents removed from the retriever before it (by id; no refit): their vector rows are
        dropped, the others renumbered in order, as the corpus's rows are.  An unknown id is a
        :class:`DataError` (nothing removed)."""
        self._check_fitted()
        rows = self.corpus_.rows_to_remove(ids, "mmr.remove")
        if len(rows):
            keep = np.ones(len(self.corpus_), dtype=bool)
            keep[rows] = False
            self.vectors_, self.corpus_ = np.asarray(self.vectors_)[keep], self.corpus_.subset(keep)
            self._publish()
        return self

    # ------------------------------------------------------------------ persistence
    def _save(self, folder: Path) -> None:
        view = self._search_view()
        assert view is not None  # (fitted: checked by save)
        save_arrays(folder, vectors=view.vectors)
        save_encoder_key(folder, self.encoder)

    def _load(self, folder: Path, mmap: bool = False) -> None:
        check_encoder_key(folder, self.encoder, self.name, self.params.model)
        self.vectors_ = load_array(folder, "vectors", mmap=mmap)
        self._publish()
