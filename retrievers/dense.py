"""Dense retrieval over sentence embeddings, with storage and search as parameters.

``Dense`` encodes the corpus with a sentence-transformers model and delegates storage and
search to a vector index of its own (one per retriever, saved with it): float32 / float16 / calibrated
int8 / sign-bit storage, optional PCA or Matryoshka reduction, re-scoring of a shortlist
with memory-mapped float vectors, exact numpy or usearch HNSW search, metadata filters
applied inside the search, ``add`` / ``remove`` without a rebuild.
"""

from __future__ import annotations

import logging
import os
import re
import weakref
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, NamedTuple

import numpy as np
from pydantic import Field, field_validator, model_validator

from ragkit._files import first_time
from ragkit._topk import rankings_from_matrix
from ragkit.encoders import DEFAULT_MODEL, Encoder, check_encoder_key, get_encoder, query_vectors, save_encoder_key
from ragkit.encoders.adapt import AdaptConfig, TunedEncoderMixin
from ragkit.encoders.sentence import encoder_label, encoder_vectors, given_document_vectors, unit_rows
from ragkit.errors import ArtifactError, DataError, ParamError, some_ids
from ragkit.operator import Operator, edited_during_search, is_prefix, searched_ids
from ragkit.options import PARAM, positive_k
from ragkit.params import FieldRefusal, MetadataFilter, Metric, ModelName, Params, VectorDtype, shown, update_params
from ragkit.registry import register
from ragkit.retrievers._index import EXACT_MAX, NonFiniteVectors, VectorIndex
from ragkit.retrievers._quantize import parse_reduce
from ragkit.types import Corpus, Ranking, State, TrainSet

__all__ = ["Dense", "DenseParams", "KNOWN_DIMS"]

_log = logging.getLogger("ragkit")

#: share of the int8 coordinates added since the fit outside the calibrated range above which ``add`` warns
#: (a calibration fitted on the whole corpus clips none of it, or ~0.01% for a cosine graph's scale)
CLIP_WARN = 0.01
#: standard deviations (of the clipped count at a CLIP_WARN rate) by which the count must exceed CLIP_WARN of the
#: coordinates: one 384-d document with 5 clipped (1.3%) is chance, 1,000 with 1.3% of theirs clipped are not
CLIP_SIGMAS = 3.0
#: dead index slots (removed documents) from which remove() compacts the index, once they outnumber the live ones
COMPACT_MIN = 64

#: embedding sizes of models known without loading them (validation of ``reduce``)
KNOWN_DIMS = {"all-minilm-l6-v2": 384, "sentence-transformers/all-minilm-l6-v2": 384,
              "all-minilm-l12-v2": 384, "all-mpnet-base-v2": 768, "sentence-transformers/all-mpnet-base-v2": 768}


#: the widest HNSW beam (``expansion_add`` / ``expansion_search``) a Dense takes: 1,048,576
_MAX_BEAM = 1 << 20
#: index searches a Dense search makes at most while adds on another thread keep growing the index under it
_GROWN_TRIES = 4
#: the spellings of ``reduce`` (lower-cased): none, pca:<dims> or matryoshka:<dims>, dims >= 1
_REDUCE = re.compile(r"none|(pca|matryoshka):[1-9][0-9]*")


class _DenseView(NamedTuple):
    """What a search reads of a fitted Dense, published in one assignment (``_view``) by every edit once it is
    done (fit, add, remove, compact, load): the corpus, each row's index slot, the index and its slot count then,
    and the slot numbering's token (``_layout``: :meth:`Dense.compact` takes a new one before it renumbers).
    References only.  The index itself is edited in place: slots an add appends past ``n_slots`` are not this
    view's documents and are left out; a removed document is left out of the results at once; a compaction
    during the search makes it :func:`_edited_during_search`."""

    corpus: Corpus
    slots: np.ndarray
    ix: VectorIndex
    n_slots: int
    layout: object


def _edited_during_search(detail: str) -> DataError:
    """The error of a search during which the index was edited beyond what it can answer through (a compaction,
    a fit, adds that kept growing it), with ``detail``: :func:`~ragkit.operator.edited_during_search`."""
    return edited_during_search("dense", detail)


class DenseParams(Params):
    model: ModelName = Field(default=DEFAULT_MODEL, description="Sentence-transformers model name or folder.")
    k: int = Field(default=100, ge=1, description="Results per query.")
    search: Literal["auto", "exact", "hnsw"] = Field(
        default="auto",
        description="exact (numpy), hnsw (usearch graph) or auto: exact up to exact_max documents, decided "
                    "once at fit (an index fitted small and grown by add stays exact; refit to switch).")
    batch_size: int = Field(default=64, ge=1, description="Encoding batch size.")
    filter: MetadataFilter = Field(default=None, description="Metadata filter {field: value or [values]}.")
    dtype: VectorDtype = Field(
        default="f32",
        description="Vector storage: f32, f16, i8 (per-dimension calibrated on the corpus) or b1 (packed sign "
                    "bits: scored against the float query; Hamming in a graph).")
    metric: Metric = Field(default="cos",
                           description="cos: cosine of unit vectors; ip: raw inner product.")
    rescore: bool = Field(default=False, description="Re-score an oversample*k shortlist with the float vectors, kept "
                                                      "memory-mapped on disk (needs dtype != f32 or a reduce).")
    oversample: int = Field(default=4,
                            ge=1, description="Shortlist size as a multiple of k: the candidates rescore re-scores "
                                              "with the float vectors (an exact index's too), and a b1 graph's "
                                              "Hamming shortlist, re-ranked by the float query. Without rescore, "
                                              "unused where search: auto fits an exact index (at most exact_max "
                                              "documents), which scores every document at once.")
    reduce: str = Field(default="none", pattern=r"^(none|(pca|matryoshka):[1-9][0-9]*)$",
                        description="none, pca:<dims> (fitted on the corpus, more than <dims> documents; "
                                    "without rescore, scores are centred cosines in the reduced space, not cosines: "
                                    "use rescore where scores are thresholded) or matryoshka:<dims> "
                                    "(truncate + renormalise; only for Matryoshka-trained models).")
    whiten: bool = Field(default=False, description="Whiten PCA components (divide by their standard deviation).")
    connectivity: int = Field(default=16, ge=2, le=4096, description="HNSW graph degree (M).")
    # (beam widths at most 2**20: usearch allocates its beam up front, and 2**31 - 1 failed as a bare "Out of
    # memory!"; a beam wider than the corpus finds nothing more, and HNSW's are tens to a few thousand)
    expansion_add: int = Field(default=128, ge=1, le=_MAX_BEAM, description="HNSW beam width while building "
                                                                            "(ef_construction).")
    expansion_search: int = Field(default=64, ge=1, le=_MAX_BEAM, description="HNSW beam width while searching (ef).")
    exact_max: int = Field(default=EXACT_MAX,
                           ge=0, description="search=auto: exact numpy search up to this many documents.")
    threads: int = Field(default=0, ge=-1,
                         description="usearch threads; 0 or -1 = all cores (the CPUs this process may use).")
    reorder: bool = Field(default=True,
                          description="HNSW, from 16,384 documents: insert a random tenth first, then the rest "
                                     "cluster by cluster (faster builds, as fast or faster search at equal "
                                     "recall; results keep corpus order).")
    adapt: AdaptConfig | None = Field(
        default=None,
        description="Fine-tune the encoder on fit's judged training queries (multiple-negatives ranking loss, "
                    "BM25 + dense hard negatives) before indexing; the tuned model is cached and saved.")

    @field_validator("reduce", mode="before")
    @classmethod
    def _reduce_spelling(cls, v: Any) -> Any:
        """``reduce`` in its written form, ``none``, ``pca:<dims>`` or ``matryoshka:<dims>`` (``dims >= 1``): read
        case-insensitively and without surrounding spaces (``"PCA:64"`` is ``"pca:64"``, as ``dtype: F16`` is
        ``f16``); anything else refused saying what the field takes (not its regular expression)."""
        text = v.strip().lower() if isinstance(v, str) else None
        if text is None or not _REDUCE.fullmatch(text):
            raise ValueError(f"expected 'none', 'pca:<dims>' or 'matryoshka:<dims>' with dims >= 1, got {shown(v)}")
        return text

    @model_validator(mode="after")
    def _compatible(self) -> "DenseParams":
        kind, dims = parse_reduce(self.reduce)
        if self.rescore and self.dtype == "f32" and kind == "none":
            raise ValueError("rescore=True re-scores a compressed or reduced shortlist with the float vectors, but "
                             "dtype='f32' with reduce='none' already searches those exact floats; use dtype f16/i8/b1 "
                             "or a reduce, or drop rescore")
        if self.whiten and kind != "pca":
            raise ValueError("whiten=True rescales PCA components and needs reduce='pca:<dims>', "
                             f"got reduce={self.reduce!r}")
        graph = self.search != "exact"
        self.refuse_unused(("oversample", self.rescore or (self.dtype == "b1" and graph),
                            "rescore: true (or dtype: b1 with search: hnsw or auto)"),
                           ("connectivity", graph, "search: hnsw (or auto)"),
                           ("expansion_add", graph, "search: hnsw (or auto)"),
                           ("expansion_search", graph, "search: hnsw (or auto)"))
        if kind != "none":  # a width known without any model work (check_corpus reads the others at fit)
            refusal = _too_wide(self.reduce, self.model, _known_width(self.model, read_dim=False))
            if refusal is not None:
                raise FieldRefusal("reduce", refusal)
        return self


@register
class Dense(TunedEncoderMixin, Operator):
    """Dense retriever: sentence embeddings in a quantised / reduced, exact or HNSW index.

    Documents are encoded to L2-normalised float32 vectors ``(n_docs, dim)`` (the disk cache
    makes re-encoding free) and stored in the retriever's vector index (``index_``), as ``dtype``,
    ``search``, ``rescore`` and ``oversample`` describe.
    A query batch ``(n_q, dim)`` is searched in one call; scores are cosines (approximate
    for compressed storage; exact after ``rescore``).  Under ``reduce: pca`` without ``rescore``
    they are cosines of the *centred, projected* vectors (PCA-RAG), on another scale than the
    cosines: use ``rescore`` where scores are compared with a threshold.

    A blank document (empty, whitespace or invisible characters only, title and text) is never found, as a
    blank query finds nothing (its vector is the model's bias direction, near every short query): it is not
    indexed (its slot is -1, at ``fit`` and ``add``, and saved so), and its ``document_vectors`` row is zero.

    The transforms are fitted once, at ``fit``: the PCA and the int8 calibration (``add`` warns on
    the ``ragkit`` logger when it clips more than 1% of an added batch's int8 coordinates: refit on
    the whole corpus), and ``search: auto``'s choice of an exact or a graph index.

    Storage (bytes per 384-d vector held in memory): ``f32`` 1536, ``f16`` 768, ``i8`` 384
    (per-dimension calibration fitted on the corpus, scored against the float query),
    ``b1`` 48 (sign bits scored against the float query; in an HNSW graph, a Hamming shortlist
    of ``oversample * k`` re-ranked so; with ``rescore``, the shortlist re-scored with the float
    vectors).  ``reduce`` applies
    PCA (Jolliffe; PCA-RAG, arXiv 2504.08386) or Matryoshka truncation (Kusupati et al.,
    NeurIPS 2022 — MiniLM is *not* Matryoshka-trained; use PCA for it).  Quantisation
    follows the sentence-transformers embedding-quantisation recipe (Aarsen et al., 2024)
    and binary EBR with float re-ranking (Gao et al., Tencent, 2024).  HNSW: Malkov &
    Yashunin, TPAMI 2018, via usearch.

    Examples
    --------
    >>> from ragkit.retrievers import Dense
    >>> Dense(k=10)
    Dense(k=10)
    >>> Dense(k=10, dtype="b1", rescore=True, oversample=4)   # 32x smaller resident codes
    Dense(k=10, dtype='b1', rescore=True)
    """

    uses_torch: ClassVar[bool] = True  # torch.topk / torch.bmm at search

    name = "dense"
    kind = "retriever"
    applies_filter = True  # (_call searches only the rows filter_mask allows)
    Params = DenseParams
    params: DenseParams
    example = {"k": 5}
    #: search-time parameters, also per call (``search(..., dense={"expansion_search": 256})``); a fitted
    #: Dense searches with its ``params``' values, so ``d.params = d.params.updated(oversample=8)`` applies too
    run_options = {"expansion_search": PARAM, "oversample": PARAM}

    index_: VectorIndex
    slots_: np.ndarray  # (n_docs,) int64 index slot of each corpus row, -1 for a blank document (never indexed)
    #: (slots_ it was built from, (n_slots + 1,) int64 corpus row of each index slot, -1 for a removed one
    #: and in the last entry); rebuilt when slots_ is another array or the index another size (after add /
    #: remove / compact / fit / load), not per search
    _slot_rows: tuple[np.ndarray, np.ndarray] | None = None
    #: the slot numbering's token: a new object from the start of each compaction (which renumbers the slots)
    _layout: object = None
    #: what searches read (:class:`_DenseView`), published last by every edit
    _view: _DenseView | None = None
    #: int8 coordinates added since the calibration (fit or load): (id of the index, its i8_fitted_n, clipped,
    #: all, documents, whether the warning is standing); see :meth:`_warn_clipped`
    _clip_tally: tuple[int, int, int, int, int, bool] | None = None

    @property
    def encoder(self) -> Encoder:
        """The encoder of documents and queries: the fine-tuned model after an ``adapt`` fit."""
        return get_encoder(self.encoder_model, batch_size=self.params.batch_size)

    def _new_index(self) -> VectorIndex:
        return VectorIndex(**_index_config(self.params))

    def _sync_index(self, ix: VectorIndex | None = None,
                    mismatch: Callable[[str, Any, Any], Exception] | None = None) -> None:
        """Make the fitted index ``ix`` (default ``index_``) agree with ``params``, which may have been replaced
        since the fit (``d.params = d.params.updated(...)``): a parameter of the stored index
        (:data:`_INDEX_STATE`: its storage type, metric, reduction, kind of search, float vectors, graph degree)
        that differs from what the index was built with is a :class:`ParamError` at ``dense.<key>`` (the index is
        not rebuilt, and a save would write parameters that misdescribe it: set it back or fit again); the
        settings of how it searches and grows (:data:`VectorIndex.SETTINGS <ragkit.retrievers._index.VectorIndex>`:
        ``threads``, ``expansion_add``, ``expansion_search``, ``oversample``, ``exact_max``, ``reorder``) are
        copied into it.  Called by searches, :meth:`scores`, ``add``, ``remove``, ``compact`` and saves, and at
        load (:meth:`_check_index_params`), whose ``mismatch`` makes the error of a differing parameter from its
        key, the parameters' value and the index's instead; a no-op while neither ``params`` nor the index
        changed."""
        ix = self.index_ if ix is None else ix
        p = self.params
        synced = self.__dict__.get("_synced")
        if synced is not None and synced[0] is p and synced[1] == id(ix):
            return
        want, built = _index_config(p), ix.config()
        for key in _INDEX_STATE:
            if built[key] != want[key]:
                if mismatch is not None:
                    raise mismatch(key, want[key], built[key])
                raise ParamError(
                    f"{self.name}.{key}: the parameters say {key}={want[key]!r}, but the fitted index was built with "
                    f"{key}={built[key]!r}; changing it after the fit does not rebuild the index (searches would "
                    f"read, and a save write, the index built with {built[key]!r}): set {key} back to "
                    f"{built[key]!r}, or fit again with {key}={want[key]!r}", path=f"{self.name}.{key}")
        changed = {key: want[key] for key in VectorIndex.SETTINGS if built[key] != want[key]}
        if changed:
            ix.apply_settings(**changed)
        self.__dict__["_synced"] = (p, id(ix))

    def _encode_docs(self, corpus: Corpus) -> np.ndarray:
        """The corpus's float32 vectors; one this retriever may hand over (a copy made here, or the fresh array
        ragkit's own encoder returns, never a custom encoder's, which it may keep) is noted for
        :meth:`_fresh`."""
        enc = self.encoder
        texts = corpus.full_texts
        raw = enc.encode(texts)
        vecs = encoder_vectors(raw, len(texts), self._encoder_name(enc, "encode"))
        if not np.may_share_memory(vecs, raw) or type(enc) is Encoder:
            self.__dict__["_fresh_docs"] = weakref.ref(vecs)
        return vecs

    def _fresh(self, vecs: np.ndarray) -> bool:
        """Whether ``vecs`` is what the last :meth:`_encode_docs` noted as free to hand over; the note is
        dropped (a weak reference in the instance would make it unpicklable)."""
        fresh = self.__dict__.pop("_fresh_docs", None)
        return fresh is not None and fresh() is vecs

    def check_corpus(self, corpus: Corpus) -> None:
        """What :meth:`fit` on ``corpus`` would refuse of the parameters, refused before any work: a ``reduce``
        wider than the model's embeddings, or a ``reduce: pca:<dims>`` with no more documents with text than
        ``dims`` (a :class:`ParamError` at ``dense.reduce``) or with blank documents only (:attr:`Corpus.blank
        <ragkit.types.Corpus.blank>`, never indexed: a :class:`DataError`).  Run by fit
        itself, and by a pipeline's fit for each of its steps before it fits any
        (:meth:`~ragkit.pipelines.Pipeline.fit` checks every step first), so that a refused step costs no encoding
        by the steps before it."""
        kind, dims = parse_reduce(self.params.reduce)
        if kind != "none":  # before fine-tuning and encoding: the base model's width is the tuned one's; a known
            # width loads no model (2.5 s for MiniLM, where fit otherwise reads cached embeddings only)
            width = _known_width(self.params.model)  # (a registered encoder's own width first, as a load reads it)
            if width is None:
                width = get_encoder(self.params.model, batch_size=self.params.batch_size).dim
            refusal = _too_wide(self.params.reduce, self.params.model, width)
            if refusal is not None:
                raise ParamError(f"dense.reduce: {refusal}", path="dense.reduce")
            if kind == "pca":
                self._check_pca_corpus(corpus, dims)

    def _check_pca_corpus(self, corpus: Corpus, dims: int) -> None:
        """Refuse a ``reduce: pca:<dims>`` fit on ``corpus`` with no more documents with text than ``dims``: blank
        documents (:attr:`Corpus.blank <ragkit.types.Corpus.blank>`) are never indexed, so the PCA is fitted on
        the others only.  Blank documents only: a :class:`DataError` saying so; too few documents with text: a
        :class:`ParamError` at ``dense.reduce``, naming the blank ones where there are any."""
        blank = corpus.blank
        n_blank = int(blank.sum())
        n_text = len(corpus) - n_blank
        if n_text > dims:
            return
        reduce = self.params.reduce
        if n_text == 0 and n_blank:  # (none indexed: nothing to fit them on)
            raise DataError(f"dense.fit: reduce {reduce!r} fits {dims} principal components on the documents with "
                            f"text, and all {len(corpus)} documents of the corpus are blank (empty, whitespace or "
                            "invisible characters only, title and text), which are never indexed; expected at least "
                            f"{dims + 1} documents with text: give documents with text, or fit with reduce: none")
        which = "documents"
        if n_blank:
            which = "documents with text"
            counted = (f"{len(corpus)} documents, {n_blank} of them blank ({some_ids(corpus.ids[blank])}: empty, "
                       f"whitespace or invisible characters only, title and text), which are never indexed, so "
                       f"{n_text} with text")
        else:
            counted = f"{n_text} documents"
        fewer = (f"choose at most pca:{n_text - 1}" if n_text > 1 else
                 "fit with reduce: none")  # (n centred documents span at most n - 1 dimensions)
        raise ParamError(f"dense.reduce: {reduce!r} fits {dims} principal components on the corpus, which has "
                         f"{counted}: centred, they span at most {max(n_text - 1, 0)} dimensions, so the components "
                         f"past that are noise, and documents added later are projected on them; fit on at least "
                         f"{dims + 1} {which} (the whole corpus, then add) or {fewer}", path="dense.reduce")

    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        self.check_corpus(corpus)
        self._adapt_encoder(corpus, train)
        self.__dict__.pop("_fresh_docs", None)
        vecs = self._encode_docs(corpus)
        # a fresh array is handed over to the index (normalised in place; the f32 index keeps it): the
        # corpus's vectors are not copied a second time
        fresh = self._fresh(vecs)
        blank = corpus.blank
        if blank.any():  # (a new array: ours to hand over)
            vecs, fresh = vecs[~blank], True
        self._warn_b1_norms(vecs)
        self._warn_b1_signs(vecs)
        try:
            self.index_ = self._new_index().build(vecs, copy=not fresh)
        except DataError as e:  # (NaN or infinite values: said of the encoder, not of the internal index)
            raise self._bad_values(corpus.subset(~blank) if blank.any() else corpus, e) from None
        del vecs
        self.slots_ = _slots_of(blank, 0)  # corpus row -> index slot
        self._publish()

    def _publish(self) -> None:
        """Publish the state searches read (:class:`_DenseView`), in one assignment, once an edit made it."""
        self._view = _DenseView(self.corpus_, self.slots_, self.index_, self.index_.n_slots, self._layout)

    def _search_view(self) -> _DenseView | None:
        """The state searches read (published by each edit; made from the attributes for an object pickled before
        views were published), ``None`` unfitted."""
        view = self.__dict__.get("_view")
        if view is None and "index_" in self.__dict__ and "slots_" in self.__dict__:
            view = _DenseView(self.corpus_, self.slots_, self.index_, self.index_.n_slots, self._layout)
        return view

    def _bad_values(self, corpus: Corpus, error: DataError) -> DataError:
        """The error for the document vectors of ``corpus`` (one a document, in order) the index refused with
        ``error``: where some hold NaN or infinite values (:class:`NonFiniteVectors`, which counted them and
        found the first), how many and the first document's row and id, said of the encoder; else ``error``'s
        message itself (a vector of another width than the index's, at ``add``)."""
        if not isinstance(error, NonFiniteVectors) or error.count is None or not 0 <= error.row < len(corpus):
            return DataError(f"{self.name}: {error}")
        return DataError(f"{self._encoder_name(self.encoder, 'encode')} returned {error.count} of the {error.n} "
                         f"document vectors with NaN or infinite values (the first at row {error.row}, document "
                         f"{corpus.ids[error.row]!r}); the index cannot rank them: fix the encoder or drop those "
                         "documents")

    def _warn_b1_norms(self, vecs: np.ndarray) -> None:
        """Warn when ``dtype='b1'`` with ``metric='ip'`` and no ``rescore`` meets documents whose norms differ
        (by more than 1%): the bits keep only signs, so the scores ignore the norms an inner product ranks by
        (scores of 3.4-8 for inner products of 52-143 in a review).  Unit vectors (MiniLM's): ip is cos, fine."""
        p = self.params
        if p.dtype != "b1" or p.metric != "ip" or p.rescore or not len(vecs):
            return
        norms = np.linalg.norm(vecs, axis=1)
        lo, hi = float(norms.min()), float(norms.max())
        if hi > 1.01 * lo:
            _log.warning(f"dense: dtype='b1' keeps only the signs of the document vectors, so with metric='ip' its "
                         f"scores ignore the documents' norms (here {lo:.3g} to {hi:.3g}), which an inner product "
                         f"ranks by; set rescore: true (the shortlist is re-scored with the float vectors), metric: "
                         f"cos, or another dtype")

    def _warn_b1_signs(self, vecs: np.ndarray, sample: int = 10_000) -> None:
        """Warn when ``dtype='b1'`` (without ``reduce: pca``, which centres the vectors first) meets document
        vectors most of whose coordinates have the same sign in at least 99% of the documents (read on up to
        ``sample`` evenly spaced ones): a non-negative embedding (``HashingEncoder``, bag-of-words, ReLU outputs)
        gives every document nearly the same code, so the bits rank almost at random and a ``rescore`` shortlist
        is little better (recall@10 against f32 0.007 and 0.033 for a 64-d ``HashingEncoder`` in a review)."""
        if self.params.dtype != "b1" or parse_reduce(self.params.reduce)[0] == "pca" or len(vecs) < 2:
            return
        rows = vecs[np.linspace(0, len(vecs) - 1, min(len(vecs), sample)).astype(np.int64)]
        positive = (rows > 0).mean(axis=0)
        fixed = int(((positive >= 0.99) | (positive <= 0.01)).sum())
        if fixed > vecs.shape[1] // 2:
            _log.warning(f"dense: dtype='b1' keeps the sign of each coordinate, but {fixed} of the {vecs.shape[1]} "
                         "dimensions have the same sign in at least 99% of the documents (a non-negative embedding: "
                         "hashed or bag-of-words counts, ReLU outputs), so the documents' codes barely differ and "
                         "b1 ranks them almost at random, rescore or not; set reduce: pca:<dims> (it centres the "
                         "vectors), or dtype: i8 or f16")

    # ------------------------------------------------------------------ shared API
    @property
    def vectors_(self) -> np.ndarray:
        """Float document vectors ``(n_docs, dim)`` in corpus row order.

        The index's own floats when it keeps them (f32 exact, or the memory-mapped file of
        ``rescore``); otherwise read back from the encoder's disk cache.
        """
        return self.document_vectors()

    def document_vectors(self) -> np.ndarray:
        """Float document vectors ``(n_docs, dim)`` in corpus row order: unit length for ``metric="cos"``
        (whatever an encoder returns), as encoded for ``"ip"``; zero for a blank document (not indexed)."""
        self._check_fitted()
        fv = self.index_.float_vectors()
        if fv is not None:  # the index's own floats, normalised when they were indexed
            if len(self.slots_) == len(fv) and (self.slots_ == np.arange(len(fv))).all():
                return fv
            return _at_slots(fv, self.slots_, 0)  # (a blank document, in no slot: a zero row)
        vecs = self._encode_docs(self.corpus_)
        self._fresh(vecs)
        out = self.index_._normalise(vecs)  # a new array: the encoder's is not changed
        blank = self.slots_ < 0
        if blank.any():  # a blank document has no direction (as a blank query): never found
            out[blank] = 0
        return out

    def _encoder_name(self, enc: Any, method: str) -> str:
        """How an error about the output of ``enc.<method>`` names the encoder: ``dense: the encoder of model
        'my-encoder' (MyEncoder).encode`` (:func:`~ragkit.encoders.sentence.encoder_label`)."""
        return encoder_label(self.name, self.params.model, enc, method)

    def query_vectors(self, state: State) -> np.ndarray:
        """The batch's query vectors ``(n_q, dim)`` float32 (shared via ``state.vectors``), the encoder's output
        checked before use by :func:`~ragkit.encoders.query_vectors`: one 2-D float row per query, as wide as the
        indexed documents (once fitted); a :class:`DataError` naming the encoder says what it returned instead."""
        enc = self.encoder
        index = self.__dict__.get("index_")
        return query_vectors(state, enc, who=self._encoder_name(enc, "encode_queries"),
                             width=None if index is None else index.d_in)

    def scores(self, q: np.ndarray) -> np.ndarray:
        """Exact scores of query vectors ``q`` ``(n_q, dim)`` against the float document vectors, shape
        ``(n_q, n_docs)``: cosines for ``metric="cos"`` (rows of ``q`` not of unit length normalised here, as a
        search normalises them, by :func:`~ragkit.encoders.sentence.unit_rows`: an encoder that does not normalise,
        a dot-product model's, gives vectors of any length; unit rows are taken as given, to the bit), inner
        products for ``"ip"``.  ``params`` replaced since the fit are met as a search meets them
        (:meth:`_sync_index`: a ``metric`` other than the index's is a :class:`ParamError` at ``dense.metric``,
        not scores of the other metric over vectors indexed for the first)."""
        self._check_fitted()
        self._sync_index()
        docs = np.asarray(self.document_vectors())
        q = unit_rows(q) if self.params.metric == "cos" else np.asarray(q, dtype=np.float32)
        return q @ docs.T

    # ------------------------------------------------------------------ search
    def search_vectors(self, q: np.ndarray, k: int, mask: np.ndarray | None = None, *,
                       expansion_search: int | None = None,
                       oversample: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` corpus rows for query vectors ``q`` (n_q, dim): ``(rows int64, scores float32)``, each of shape
        ``(n_q, min(k, n))``, ``n`` the index's slots (the documents indexed, removed ones until a compaction): a
        ``k`` past them asks for every document, not for columns of padding.

        ``mask`` (bool, ``(n_docs,)`` in corpus rows) restricts the search; ``-1`` / ``-inf`` pad
        queries with fewer passing documents.  ``expansion_search`` (HNSW beam width) and
        ``oversample`` (shortlist multiplier) default to the ``params``' values.

        ``k`` is checked as every run-time ``k`` is (:func:`~ragkit.options.positive_k`: a positive integer, no
        bool, string or float), ``expansion_search`` and ``oversample`` as the search options of the same names
        (``search(..., dense={"expansion_search": 256})``: the ``params``' rules, beam widths at most 2**20, an
        ``oversample`` other than 4 only where there is a shortlist): a :class:`ParamError` at
        ``dense.search_vectors.<argument>``.
        """
        self._check_fitted()
        where = f"{self.name}.search_vectors"
        k = positive_k(k, f"{where}.k", f"{where}.k")
        given = {key: v for key, v in (("expansion_search", expansion_search), ("oversample", oversample))
                 if v is not None}
        if given:  # (the rules of the run options: DenseParams' fields, and its rules across fields)
            checked = update_params(self.params, given, where)
            expansion_search, oversample = (None if expansion_search is None else checked.expansion_search,
                                            None if oversample is None else checked.oversample)
        view = self._search_view()
        assert view is not None
        return self._search_in(view, q, k, mask, expansion_search, oversample)

    def _search_in(self, view: _DenseView, q: np.ndarray, k: int, mask: np.ndarray | None,
                   expansion_search: int | None, oversample: int | None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search_vectors` of ``view``: rows of its corpus.  The index is edited in place, so slots an add
        on another thread appended since the view (past its ``n_slots``) are left out: a filter's slot mask
        excludes them, else ``k`` plus as many are fetched and they are dropped (the view's top ``k`` exactly,
        for an exact index); the index searched again where adds grew it during the search (at most
        :data:`_GROWN_TRIES` times).  A compaction since the view (slots renumbered) or a failure of the index
        while it changed is :func:`_edited_during_search`."""
        rows_mask = None
        if mask is not None:
            rows_mask = np.asarray(mask, dtype=bool)
            if rows_mask.shape != (len(view.slots),):
                raise DataError(f"dense.search_vectors: mask must have one entry per document, shape "
                                f"({len(view.slots)},); got shape {rows_mask.shape}")
        ix, n_view = view.ix, view.n_slots
        p = self.params
        self._sync_index(ix)  # (params updated after the fit: refused, or the index's own settings from now on)
        ef = p.expansion_search if expansion_search is None else expansion_search  # (checked: ints)
        over = p.oversample if oversample is None else oversample
        table = self._row_of_slot(view)
        for _ in range(_GROWN_TRIES):  # a loop over tries (adds on another thread growing the index meanwhile)
            n_now = ix.n_slots
            if self._layout is not view.layout or n_now < n_view:
                raise _edited_during_search("the index was compacted: its slots were renumbered")
            slot_mask = None
            if rows_mask is not None:
                slot_mask = np.zeros(n_now, dtype=bool)
                picked = view.slots[rows_mask]
                slot_mask[picked[picked >= 0]] = True  # (-1: a blank document, in no slot)
            extra = 0 if slot_mask is not None else n_now - n_view  # (documents added since: fetched, dropped)
            try:
                slots, sc = ix.search(q, k + extra, mask=slot_mask, expansion_search=ef, oversample=over)
            except (DataError, ValueError, IndexError, RuntimeError) as e:
                if self._layout is not view.layout:
                    raise _edited_during_search(f"{type(e).__name__}: {e}") from e
                if ix.n_slots == n_now:
                    raise
                continue  # (grown during the search: a mask or codes of another size)
            if self._layout is not view.layout:  # (compacted during the search: its slots may be renumbered)
                raise _edited_during_search("the index was compacted during the search: its slots were renumbered")
            if ix.n_slots == n_now or slot_mask is not None:
                break
            # (grown during the search past the extra fetched: documents of the view may have been pushed out)
        else:
            raise _edited_during_search(f"documents were added during each of {_GROWN_TRIES} searches of the index")
        if extra or n_now > n_view:
            slots = np.where(slots >= n_view, -1, slots)
        rows = table[slots]  # slot -1 -> last entry -> -1
        if extra:  # the view's documents first (order kept), cut to k
            keep = np.argsort(rows < 0, axis=1, kind="stable")[:, :k]
            rows, sc = np.take_along_axis(rows, keep, axis=1), np.take_along_axis(sc, keep, axis=1)
            sc = np.where(rows < 0, np.float32(-np.inf), sc)
        return rows, sc

    def _row_of_slot(self, view: _DenseView | None = None) -> np.ndarray:
        """``(n_slots + 1,)`` int64: the corpus row of each index slot of ``view`` (default: the one published
        now; -1 for a removed slot, and in the last entry, which slot -1 reads).  Built once per view's
        ``slots`` (after fit / add / remove / load), not per search: at 1M documents the table costs 5-10 ms
        to build, a one-query graph search 0.03 ms."""
        if view is None:
            view = self._search_view()
            assert view is not None
        cached = self._slot_rows
        n_slots = view.n_slots
        if cached is not None and cached[0] is view.slots and len(cached[1]) == n_slots + 1:
            return cached[1]
        table = np.full(n_slots + 1, -1, dtype=np.int64)
        indexed = np.flatnonzero(view.slots >= 0)  # (slot -1: a blank document, never indexed)
        table[view.slots[indexed]] = indexed
        self._slot_rows = (view.slots, table)
        return table

    def _call(self, state: State) -> State:
        # the state searched, taken when the search began (search() pins it before the pipeline reads corpus_):
        # rows of its corpus, whatever an edit on another thread does meanwhile (_search_in)
        view: _DenseView = self.checked_view()
        mask = self.filter_mask(state, view.corpus)
        if mask is not None and not mask.any():  # a filter no document passes: nothing to find, nothing to encode
            out = state.copy()
            out.rankings = [Ranking.empty() for _ in range(len(state))]
            return out
        q = self.query_vectors(state)
        k = self.k_for(state)  # (the index answers at most as many columns as it has slots, whatever k says)
        rows, sc = self._search_in(view, q, k, mask, self.opt(state, "expansion_search"), self.opt(state, "oversample"))
        if searched_ids() is None and self.corpus_ is not view.corpus and not is_prefix(view.corpus, self.corpus_.ids):
            raise _edited_during_search("its documents changed")  # (called on a State: mapped with corpus_ now)
        out = state.copy()
        out.rankings = rankings_from_matrix(rows, sc)
        return out

    # ------------------------------------------------------------------ updates
    def add(self, corpus: Corpus, *, vectors: np.ndarray | None = None) -> "Dense":
        """Index more documents (encoded, reduced and quantised with the fitted transforms; no rebuild).

        ``vectors``: the documents' encoder vectors, one row per document in ``corpus``'s order, encoded
        beforehand by this retriever's encoder (``_encode_docs``; what :class:`~ragkit.integrations.langchain.
        RagkitRetriever` does outside its write lock, so that searches do not wait for the encoding); ``None``:
        encoded here.  Another number of rows, or a width other than the index's, is a :class:`DataError`."""
        self._check_fitted()
        self._sync_index()  # (its threads, expansion_add, reorder: the params' own)
        self.corpus_.check_addable(corpus, "dense.add")
        if not len(corpus):
            return self
        blank = corpus.blank  # (before the concat, which carries it over to the joined corpus)
        joined = self.corpus_.concat(corpus, "dense.add")  # (refuses a metadata value of another kind: before edits)
        if vectors is None:
            vecs = self._encode_docs(corpus)
            self._fresh(vecs)  # (drops the note: add never takes the array over)
        else:  # (ragged rows, text, another shape: the encoders' check; the width: the index's, VectorIndex.add)
            vecs = given_document_vectors(vectors, len(corpus), f"{self.name}.add")
        if blank.any():  # a blank document is never found: not indexed, slot -1
            vecs = vecs[~blank]
        try:
            slots = self.index_.add(vecs)
        except DataError as e:
            kept = corpus.subset(~blank) if blank.any() else corpus
            if vectors is not None and isinstance(e, NonFiniteVectors) and e.count is not None \
                    and 0 <= e.row < len(kept):  # (the vectors given: no encoder of this retriever's made them)
                row = int(np.flatnonzero(~blank)[e.row]) if blank.any() else e.row  # (a row of the vectors given)
                raise DataError(f"{self.name}.add: the vectors given hold {e.count} of the {e.n} "
                                f"{'non-blank ' if blank.any() else ''}document vectors "
                                f"with NaN or infinite values (the first at row {row}, document "
                                f"{kept.ids[e.row]!r}); the index cannot rank them: pass finite vectors or drop "
                                "those documents") from None
            raise self._bad_values(kept, e) from None
        self.corpus_ = joined
        self.slots_ = np.concatenate([self.slots_, _slots_of(blank, int(slots[0]) if len(slots) else 0)])
        self._publish()
        if self.params.dtype == "i8" and len(vecs):
            self._warn_clipped(len(vecs))
        return self

    def _warn_clipped(self, n_docs: int) -> None:
        """Warn (``ragkit`` logger) when more than ``CLIP_WARN`` of the int8 coordinates of the documents added
        since the fit (or the load) fall outside the calibration fitted at fit (they are clipped to its ends;
        the index counts them, :meth:`VectorIndex.i8_clipped`): a corpus fitted on a few documents and grown by
        ``add`` loses its recall so, silently (i8 exact recall@10 0.758 fitted on 3 SciFact documents, 0.996 on
        all).  The adds are counted together, and the count must pass ``CLIP_WARN`` by ``CLIP_SIGMAS``
        standard deviations: one document's share is noise (a single add after a fit on 300 SciFact documents
        clipped 1.3-2.3% of its coordinates, warning on almost every add).  It warns once when the running
        share crosses the line, again only after it has fallen back under it and crosses again."""
        ix = self.index_
        clipped, total = ix.added_clipped
        tally = self._clip_tally
        if tally is None or tally[:2] != (id(ix), ix.i8_fitted_n):  # a new calibration: a new count
            tally = (id(ix), ix.i8_fitted_n, 0, 0, 0, False)
        clipped, total, docs = tally[2] + clipped, tally[3] + total, tally[4] + n_docs
        expected = CLIP_WARN * total
        over = total > 0 and clipped > expected + CLIP_SIGMAS * np.sqrt(expected * (1 - CLIP_WARN))
        self._clip_tally = (id(ix), ix.i8_fitted_n, clipped, total, docs,
                            bool(over or (tally[5] and clipped > expected)))  # (standing until back under)
        if over and not tally[5]:
            _log.warning(f"dense.add: {clipped} of the {total} int8 coordinates of the {docs} added documents "
                         f"since the fit ({clipped / total:.1%}) fall outside the int8 calibration and are clipped; "
                         f"the calibration was set at fit on {ix.i8_fitted_n} documents: refit on the whole corpus")

    def remove(self, ids: Any) -> "Dense":
        """Remove documents by id (tombstoned in the index, dropped from the corpus).  Compacts the index
        (:meth:`compact`) once more slots are dead than live (at least ``COMPACT_MIN``), except on a
        memory-mapped exact index; a remove that compacts builds an HNSW graph once (the index does not
        also rebuild it for its dead nodes first)."""
        self._check_fitted()
        self._sync_index()  # (a graph rebuilt at the params' expansion_add, threads)
        rows = self.corpus_.rows_to_remove(ids, "dense.remove")  # sorted, distinct
        if not len(rows):
            return self
        ix = self.index_
        slots = self.slots_[rows]
        slots = slots[slots >= 0]  # (a blank document is in no slot)
        alive = ix.n_alive - len(slots)  # after the removal
        dead = ix.n_slots - alive
        # more removed than live: at most one rebuild per as many removals as documents left
        compact = dead >= COMPACT_MIN and dead > alive and not isinstance(ix.codes, np.memmap)
        ix.remove(slots, compact_next=compact)
        keep = np.ones(len(self.corpus_), dtype=bool)
        keep[rows] = False
        self.corpus_ = self.corpus_.subset(keep)  # a mask: rows in order, id lookup and filter codes carried over
        self.slots_ = self.slots_[keep]
        if compact:
            self.compact()  # (its graph build is the only one: the index's remove left the graph to it)
        else:
            self._publish()
        return self

    def compact(self) -> "Dense":
        """Free the index slots of removed documents (``remove`` only marks them, and ``save`` writes
        them): the codes and float vectors of live documents are packed, an HNSW graph is rebuilt from
        its live codes (about one build).  Rankings and scores stay the same (a rebuilt graph is
        another approximation of the same vectors).  ``remove`` runs it itself once more slots are
        dead than live (at least ``COMPACT_MIN``), except on a memory-mapped exact index (it would read
        the live codes into memory): call it then.  Returns ``self``."""
        self._check_fitted()
        self._sync_index()
        self._layout = object()  # (before the slots are renumbered: a search overlapping it sees another token)
        remap = self.index_.compact()
        self.slots_ = _at_slots(remap, self.slots_, -1)  # (a blank document stays in no slot)
        self._publish()
        return self

    # ------------------------------------------------------------------ persistence
    def _save(self, folder: Path) -> None:
        self._sync_index()  # (the parameters written beside it describe the index written)
        self.index_.save(folder, prefix="index")
        np.save(folder / "slots.npy", self.slots_, allow_pickle=False)
        self._save_encoder(folder)  # the tuned encoder travels with the index
        save_encoder_key(folder, self.encoder)

    def _load(self, folder: Path, mmap: bool = False) -> None:
        from ragkit._saves import load_array

        if not (folder / "index.json").exists() and (folder / "vectors.npy").is_file():
            raise ArtifactError(_earliest_layout(folder, type(self)))
        # the index's own CRC32s only where Operator.load's SHA-256 sums did not cover its files (verify=False):
        # both read every file, twice over at 1M vectors (the float vectors of rescore: 1.5 GB); sizes always
        self.index_ = VectorIndex.load(folder, prefix="index", mmap=mmap, verify=not self._verified)
        self._check_index_params(folder)
        self.slots_ = np.array(load_array(folder, "slots"), dtype=np.int64)
        self._publish()
        self._load_encoder(folder)
        check_encoder_key(folder, self.encoder, self.name, self.encoder_model)
        width = _known_width(self.encoder_model)
        if width is not None and self.index_.d_in != width:
            raise ArtifactError(f"{folder / 'index.json'}: d_in {self.index_.d_in}; expected {width}, the width of the "
                                f"embeddings of {self.encoder_model!r} (the vectors it indexes)")
        indexed = self.slots_[self.slots_ >= 0]  # (-1: a blank document, never indexed)
        if len(self.slots_) != len(self.corpus_) or len(indexed) != self.index_.n_alive:
            raise ArtifactError(f"{folder}: slots.npy has {len(self.slots_)} rows ({len(indexed)} indexed), corpus "
                                f"has {len(self.corpus_)}, index holds {self.index_.n_alive} live vectors")
        if (self.slots_ < -1).any() or not np.array_equal(indexed, np.flatnonzero(self.index_.alive)):
            # the indexed rows' slots are the live slots in order; -1 (a blank document) the only other value
            raise ArtifactError(f"{folder}: slots.npy does not list the index's live vectors in order (with -1 for "
                                "blank documents); the file was changed after saving")
        if self.index_.older_query_coding:
            self._older_save = "int8 HNSW index of format 1"
            if first_time(_OLDER_NOTED, os.path.realpath(folder)):
                _log.warning(f"{self.name}: {folder} was written by an older ragkit (index.json says format 1, an "
                             "int8 HNSW index): it loads, but this ragkit codes int8 queries otherwise (the "
                             "corpus's scale, shrunk where a query would clip), so it may rank slightly differently "
                             "from when it was saved: fit it again and save it to rank as a fit does today (saving "
                             "it again writes format 2 and silences this note)")

    def _check_index_params(self, folder: Path) -> None:
        """Refuse (:class:`ArtifactError` naming ``params.json``, the parameter and both values) parameters of
        ``params.json`` that disagree with what ``index.json`` records of the stored index (:data:`_INDEX_STATE`:
        its storage type, metric, reduction, kind of search, float vectors, graph): the index searches as it was
        built, so the parameters would misdescribe it (a save or ``to_yaml`` would write them).  The check is
        :meth:`_sync_index`'s, which then applies the settings (the params' threads, beam widths, ...)."""

        def changed(key: str, given: Any, built: Any) -> ArtifactError:
            return ArtifactError(
                f"{folder / 'params.json'}: {key} is {given!r}, but the saved index was built with {key} {built!r} "
                f"(recorded in {folder / 'index.json'}); the folder was changed after saving: set {key} back to "
                f"{built!r}, or fit it again with {key}={given!r} and save it")

        self._sync_index(mismatch=changed)


#: The parameters that make a stored index (:meth:`Dense._check_index_params`): ``VectorIndex.config`` keys, named
#: as ``DenseParams`` names them (``search`` is the index's ``search_mode``)
_INDEX_STATE = ("dtype", "metric", "reduce", "whiten", "search", "rescore", "connectivity")


def _index_config(p: DenseParams) -> dict[str, Any]:
    """The :class:`VectorIndex` of ``p``, as its keyword arguments and :meth:`VectorIndex.config` name them
    (``threads`` -1 is usearch's 0: every core)."""
    return {"dtype": p.dtype, "metric": p.metric, "search": p.search, "rescore": p.rescore, "oversample": p.oversample,
            "reduce": p.reduce, "whiten": p.whiten, "connectivity": p.connectivity, "expansion_add": p.expansion_add,
            "expansion_search": p.expansion_search, "exact_max": p.exact_max, "threads": max(p.threads, 0),
            "reorder": p.reorder}


#: The folders (resolved paths) whose load warned that an older ragkit wrote them (once per folder and process)
_OLDER_NOTED: set[str] = set()


def _at_slots(table: np.ndarray, slots: np.ndarray, fill: float) -> np.ndarray:
    """``table[slots]`` (rows of ``table`` per corpus row) with ``fill`` where the slot is -1 (a blank document, in no
    slot): never indexed with -1, which would read the last row, or fail on a table of none (an index of blank
    documents only)."""
    out = np.full((len(slots), *table.shape[1:]), fill, dtype=table.dtype)
    ok = slots >= 0
    out[ok] = table[slots[ok]]
    return out


def _slots_of(blank: np.ndarray, start: int) -> np.ndarray:
    """The index slots of documents whose ``blank`` flags are given, the others indexed in order from slot ``start``:
    ``(len(blank),)`` int64, -1 for a blank document (empty, whitespace or invisible characters only:
    :func:`~ragkit.encoders.sentence.blank_texts`), which is never indexed, so never found, as a blank query finds
    nothing (its vector is the model's bias direction, which short queries are near)."""
    if not blank.any():
        return np.arange(start, start + len(blank), dtype=np.int64)
    slots = np.full(len(blank), -1, np.int64)
    kept = ~blank
    slots[kept] = np.arange(start, start + int(kept.sum()), dtype=np.int64)
    return slots


def _known_width(model: str, read_dim: bool = True) -> int | None:
    """The embedding width of ``model`` where known without loading it: a registered encoder's ``dim``, or
    :data:`KNOWN_DIMS`; None otherwise (a sentence-transformers model is not loaded for it).  ``read_dim=False``:
    None for a registered encoder, whose ``dim`` may cost a model load or an API call (a registered ``Encoder``, a
    LangChain model without ``dim`` given): what the parameters' own check passes, so that building or validating
    an operator does no model work (the fit's :meth:`Dense.check_corpus` reads it)."""
    from ragkit.encoders.custom import registered_encoder

    enc = registered_encoder(model)
    if enc is None:
        return KNOWN_DIMS.get(model.lower())
    if not read_dim:
        return None
    try:
        dim = enc.dim
    except Exception:  # (a custom encoder's property may fail; its searches will say why)
        return None
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None


def _too_wide(reduce: str, model: str, width: int | None) -> str | None:
    """Why ``reduce`` (``pca:<dims>`` / ``matryoshka:<dims>``) cannot be fitted on the ``width``-d embeddings of
    ``model``: it asks for more dimensions than they have; ``None`` where it fits, or where ``width`` is not known.
    The one wording of the check, made at construction (:meth:`DenseParams._compatible`, widths known without
    loading a model: :func:`_known_width`) and at fit (:meth:`Dense.check_corpus`, any model)."""
    kind, dims = parse_reduce(reduce)
    if kind == "none" or width is None or dims <= width:
        return None
    return (f"{reduce!r} asks for {dims} dimensions but {model} embeddings have {width}, only {width} to keep; "
            f"choose at most {kind}:{width}")


def _earliest_layout(folder: Path, cls: type) -> str:
    """The error for the dense ``folder`` of ragkit's earliest saves: ``vectors.npy`` (a float32 matrix) and no
    ``index.json``, written by the first commits of 2026-11-23, before f4f34ac (its ``params.json`` says format 1,
    as today's do); this ragkit does not read it.  Says how to fit it again on the documents saved with it and save
    it in place: the pipeline's ``pipeline.yaml`` and ``corpus.jsonl`` when ``folder`` is one of its steps, else the
    operator's own ``params.json`` and ``corpus.jsonl``, as a shell command with the real paths."""
    import json

    from ragkit._files import shell_quote
    from ragkit._saves import _saved_pipeline_above

    start = (f"{folder}: holds a dense index in ragkit's earliest layout (vectors.npy, written by the ragkit of "
             "2026-11-23 before commit f4f34ac), which this ragkit does not read")
    whole = None if (folder / "corpus.jsonl").is_file() else _saved_pipeline_above(folder)
    if whole is not None:
        w = json.dumps(str(whole.absolute()))
        code = (f"from ragkit import Pipeline; from ragkit.eval import read_corpus; w = {w}; Pipeline.from_yaml(w + "
                '"/pipeline.yaml").fit(read_corpus(w + "/corpus.jsonl")).save(w)')
        return (f"{start}: fit the pipeline at {whole} again on its documents (its corpus.jsonl, read with "
                "ragkit.eval.read_corpus) and save it again (pass train=... to fit if it learned from judged "
                f"queries), e.g. from a shell: python -c {shell_quote(code)}")
    if not (folder / "corpus.jsonl").is_file():
        return f"{start}: fit the operator again on the documents it was fitted on, and save it again"
    module = "ragkit.retrievers" if cls is Dense else cls.__module__
    f = json.dumps(str(folder.absolute()))
    code = (f"import json; from {module} import {cls.__name__}; from ragkit.eval import read_corpus; f = {f}; "
            f'{cls.__name__}(json.load(open(f + "/params.json"))["params"]).fit(read_corpus(f + "/corpus.jsonl"))'
            ".save(f)")
    return (f"{start}: fit it again on its documents (its corpus.jsonl, read with ragkit.eval.read_corpus) with the "
            f"parameters in its params.json, and save it again, e.g. from a shell: python -c {shell_quote(code)}")
