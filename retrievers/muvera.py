"""Multi-vector retrieval: MUVERA (FDE candidates + exact MaxSim rerank) and exact MaxSim.

Multi-vector (late-interaction, ColBERT-style) relevance is the Chamfer similarity
``CH(Q, P) = sum_{q in Q} max_{p in P} <q, p>`` over per-token unit vectors (see
:mod:`ragkit.encoders.tokens`).  Two retrievers:

* ``maxsim_exact`` (:class:`MaxSimExact`): brute-force Chamfer of every query against every
  document, the reference;
* ``muvera`` (:class:`Muvera`): every document's token set becomes one Fixed Dimensional
  Encoding (:mod:`ragkit.retrievers.fde`); the query FDE's inner products with the document
  FDEs pick ``candidates`` documents, which are rescored with exact Chamfer.

Reference: Dhulipala et al., "MUVERA: Multi-Vector Retrieval via Fixed Dimensional
Encodings", NeurIPS 2024, arXiv 2405.19504.

The document FDEs live in the shared :class:`ragkit.retrievers._index.VectorIndex`
(metric ``ip``), so its storage types (``f32``, ``f16``, per-dimension calibrated ``i8``)
and search modes (``exact`` blocked numpy, ``hnsw`` usearch, ``auto`` by corpus size) apply.
For SciFact-size corpora exact search is the right choice: an HNSW graph over 10,240-d
vectors is slow to build (design note in ALGORITHMS.md).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

import numpy as np
from pydantic import Field, model_validator

from ragkit._saves import load_array, read_json, save_arrays, write_json
from ragkit._topk import desc_order, rankings_from_matrix, topk_rows
from ragkit.encoders import DEFAULT_MODEL, check_encoder_key, save_encoder_key
from ragkit.encoders.adapt import AdaptConfig, TunedEncoderMixin
from ragkit.encoders.cache import text_digests
from ragkit.encoders.sentence import blank_texts
from ragkit.encoders.tokens import TokenEncoder, TokenVectors, get_token_encoder
from ragkit.errors import ArtifactError, DataError, ParamError
from ragkit.operator import Operator, model_named
from ragkit.options import PARAM
from ragkit.params import FdeDtype, FieldRefusal, MetadataFilter, ModelName, Params, Seed
from ragkit.registry import register
from ragkit.retrievers._index import VectorIndex
from ragkit.retrievers.centroids import build_codes, centroid_pairs, damaged_codes
from ragkit.retrievers.dense import KNOWN_DIMS
from ragkit.retrievers.fde import (  # (MAX_FDE_DIM and check_fde_size lived here: still importable from here)
    MAX_FDE_DIM,
    MAX_K_SIM,
    MAX_MEAN_WEIGHT,
    FDEConfig,
    ball_carve,
    chamfer_pairs,
    chamfer_scores,
    check_fde_size,
    fde_dim,
    fde_document_chunks,
    fde_queries,
)
from ragkit.types import Corpus, State, TrainSet

__all__ = ["Muvera", "MuveraParams", "MaxSimExact", "MaxSimExactParams", "TokenParams", "TokenOperatorMixin",
           "rerank_tokens"]


class TokenParams(Params):
    """Token-encoder parameters shared by the multi-vector operators."""

    model: ModelName = Field(default=DEFAULT_MODEL,
                             description="Sentence-transformers model whose token embeddings are used.")
    special_tokens: Literal["keep", "drop"] = Field(
        default="keep",
        description=("'keep' every token vector; 'drop' the tokenizer's special tokens ([CLS], [SEP] and "
                     "[UNK], so a text of unknown symbols can keep no token); padding is always dropped."))
    batch_size: int = Field(default=32, ge=1, description="Texts per forward pass when encoding tokens.")
    ball_carve_tau: float | None = Field(
        default=None, ge=-1.0, le=1.0,
        description="Ball-carve query tokens at this cosine before the exact MaxSim (None = off; rerank only).")
    adapt: AdaptConfig | None = Field(
        default=None,
        description="Fine-tune the encoder on fit's judged training queries first (as dense's adapt; the same "
                    "settings share one tuned model); its token vectors are then used.")


class TokenOperatorMixin(TunedEncoderMixin):
    """Token vectors of the corpus (``tokens_``) and of the queries, for MaxSim operators."""

    uses_torch: ClassVar[bool] = True  # torch.topk / torch.bmm at search

    params: TokenParams
    corpus_: Corpus  # set by Operator.fit / load
    tokens_: TokenVectors
    _verified: bool  # set by Operator.load: its checksums were verified

    @property
    def token_encoder(self) -> TokenEncoder:
        """The token (multi-vector) encoder of the ``model`` parameter, with this operator's ``batch_size``
        and ``special_tokens``: it turns texts into per-token unit vectors (:class:`TokenVectors`)."""
        try:
            return get_token_encoder(self.encoder_model, batch_size=self.params.batch_size,
                                     special_tokens=self.params.special_tokens)
        except ParamError as e:  # a registered custom encoder: named with this operator's parameter
            raise ParamError(f"{self.name}.model: {e}", path=f"{self.name}.model") from None

    def _fit_tokens(self, corpus: Corpus, train: TrainSet | None = None) -> np.ndarray:
        """Encode the corpus's tokens into ``tokens_``, a blank document (empty, whitespace or invisible characters
        only, title and text: :attr:`Corpus.blank <ragkit.types.Corpus.blank>`) with none, as a blank query: never
        found (the model's tokens of an empty text, [CLS] [SEP], are near every short query's).  Returns the
        ``(n_docs,)`` bool blank flags."""
        self._adapt_encoder(corpus, train)
        texts = corpus.full_texts
        blank = corpus.blank
        with model_named(self.name):
            self.tokens_ = _tokens_of(self.token_encoder.encode, texts, blank)
        return blank

    def query_tokens(self, state: State) -> TokenVectors:
        """``TokenVectors`` of the batch's queries (the rewritten ``query_text`` where present)."""
        with model_named(self.name):
            return self._query_tokens(state)

    def _query_tokens(self, state: State) -> TokenVectors:
        texts = [str(t) for t in state.texts()]
        # a blank query (empty or whitespace) has no tokens, not the model's [CLS] [SEP]: it finds nothing
        return _tokens_of(self.token_encoder.encode_queries, texts, blank_texts(texts))

    def rerank_query(self, q: TokenVectors) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Query tokens for the exact MaxSim: as is, or ball-carved (centres, offsets, weights)."""
        tau = self.params.ball_carve_tau
        if tau is None:
            return np.asarray(q.data, np.float32), q.offsets, None
        return ball_carve(q.data, q.offsets, tau)

    def _save_tokens(self, folder: Path) -> None:
        self.tokens_.save(folder, "tokens")
        self._save_encoder(folder)
        save_encoder_key(folder, self.token_encoder)

    def _load_tokens(self, folder: Path, mmap: bool) -> None:
        """Read the saved token vectors, always memory-mapped (read-only), whatever ``mmap`` says: a search
        gathers only its candidates' tokens (maxsim_exact reads them in chunks), so they need not be held
        (SciFact's are 910 MB of float16, a million documents' ~175 GB), as dense keeps its rescoring floats
        on disk.  A later save over the same folder writes new files and swaps the folders; the map keeps
        the replaced file's data until it is dropped (POSIX), so the operator keeps searching what it loaded."""
        self._load_encoder(folder)
        check_encoder_key(folder, self.token_encoder, self.name, self.encoder_model)
        # (a load whose checksums were verified has already read every byte: the NaN scan would be a second pass)
        tv = TokenVectors.load(folder, "tokens", mmap=True, finite=not self._verified)
        if len(tv) != len(self.corpus_):
            raise ArtifactError(f"{folder}: token vectors hold {len(tv)} documents, the corpus {len(self.corpus_)}")
        self.tokens_ = tv


def _tokens_of(encode: Any, texts: Any, blank: np.ndarray) -> TokenVectors:
    """``encode(texts)`` (a token encoder's ``encode`` or ``encode_queries``) with no token for the ``blank``
    texts (``(n,)`` bool), which are not encoded: all of them in one call when none is blank."""
    if not blank.any():
        return encode(texts)
    keep = np.flatnonzero(~blank)
    some = encode([texts[i] for i in keep])
    lens = np.zeros(len(texts), np.int64)
    lens[keep] = some.lengths
    off = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    return TokenVectors(np.asarray(some.data), off)


def rerank_tokens(q_data: np.ndarray, q_off: np.ndarray, q_w: np.ndarray | None, docs: TokenVectors,
                  rows: np.ndarray, where: str = "rerank_tokens") -> tuple[np.ndarray, np.ndarray]:
    """Exact MaxSim of padded candidate ``rows`` ``(n_q, k)`` (``-1`` = none), sorted best first.

    Returns ``(rows, scores)`` of the same shape; missing candidates and those without tokens (blank documents)
    sort last with ``-inf``.
    Ties keep the lower corpus row first.  ``where`` (the operator) names the caller in errors.
    """
    sc = chamfer_pairs(q_data, q_off, docs.data, docs.offsets, rows, q_weights=q_w, where=where)
    order = desc_order(sc, rows)
    return np.take_along_axis(rows, order, axis=1), np.take_along_axis(sc, order, axis=1)


# --------------------------------------------------------------------------------- MUVERA
class MuveraParams(TokenParams):
    k: int = Field(default=100, ge=1, description="Results per query.")
    candidates: int = Field(default=200, ge=1, description=(
        "Documents taken by FDE inner product and rescored exactly (only with rerank: without it the FDE search "
        "returns k)."))
    k_sim: int = Field(default=5,
                       ge=0, le=MAX_K_SIM, description="SimHash hyperplanes per repetition (2**k_sim buckets).")
    d_proj: int = Field(default=16, ge=1, description=(
        "Inner projection size per bucket (refused with projection='identity', which keeps the token dimension)."))
    r_reps: int = Field(default=20, ge=1, description="Independent FDE repetitions.")
    d_final: int | None = Field(default=None, ge=1, description=(
        "Optional final Count-Sketch dimension of the FDE: smaller than the FDE before it (r_reps * 2**k_sim * "
        "d_proj, or * the token dimension for identity) and at most 2**20."))
    projection: Literal["ams", "countsketch", "identity"] = Field(
        default="ams",
        description="Inner projection: dense ±1/sqrt(d_proj) (paper), Count-Sketch (reference code), identity.")
    fill_empty: bool = Field(default=True, description="Fill empty document buckets with the Hamming-nearest token.")
    mean_weight: float = Field(default=0.0, ge=0, le=MAX_MEAN_WEIGHT, description=(
        "Mean channel of the FDE (ragkit extension; 0 = the paper's FDE): documents add their unit mean token, "
        "queries mean_weight * r_reps * their token sum, so FDE scores add a single-vector similarity.  At most "
        "1e4: the weight scales the channel against the SimHash blocks, which vanish below float32 rounding "
        "beyond (and the scores overflow)."))
    seed: Seed = Field(default=42, description=(
        "Seed of the FDE random matrices: repetition r uses default_rng(seed + r), as ALGORITHMS.md specifies, so "
        "seeds s and s + 1 share r_reps - 1 repetitions (shifted by one); to compare independent draws, use seeds "
        "at least r_reps apart."))
    fde_dtype: FdeDtype = Field(
        default="f32",
        description="Storage of the document FDEs in the vector index (i8: per-dimension calibrated; float32, "
                    "float16/fp16/half and int8 are read as f32, f16, i8).")
    search: Literal["auto", "exact", "hnsw"] = Field(
        default="auto", description="FDE index search: exact numpy, usearch HNSW, or auto by corpus size.")
    rerank: bool = Field(default=True, description="Rescore candidates with exact MaxSim (False: FDE scores only).")
    prune: int | None = Field(default=None, ge=1, description=(
        "Keep this many of the FDE candidates, ranked by centroid interaction (PLAID), for the exact rerank "
        "(None = rerank every candidate)."))
    centroids: int = Field(default=4096, ge=1, description=(
        "Token codebook size for prune (spherical k-means over a sample of the corpus's tokens at fit)."))
    filter: MetadataFilter = Field(default=None, description="Metadata filter {field: value or [values]}.")

    @model_validator(mode="after")
    def _check(self) -> "MuveraParams":
        if self.rerank and self.candidates < self.k:
            raise FieldRefusal(self.given("candidates", "k"),
                f"candidates ({self.candidates}) must be >= k ({self.k}): the exact rerank can only return "
                f"documents the FDE search found")
        if self.prune is not None and not self.rerank:
            raise FieldRefusal("prune", "prune needs rerank: it chooses which candidates the exact rerank scores")
        self.refuse_unused(("centroids", self.prune is not None, "prune"),
                           ("candidates", self.rerank, "rerank"),  # without it the FDE search returns k
                           ("ball_carve_tau", self.rerank, "rerank"),  # it carves the exact rerank's queries
                           ("d_proj", self.projection != "identity", "projection 'ams' or 'countsketch'"))
        if self.prune is not None:
            if not self.k <= self.prune <= self.candidates:
                raise FieldRefusal(self.given("prune", "k", "candidates"),
                    f"prune ({self.prune}) must lie between k ({self.k}) and candidates ({self.candidates}): it keeps "
                    f"that many of the FDE candidates for the exact rerank")
        if self.projection != "identity":  # identity's size needs the token dimension: checked at fit
            check_fde_size(self.r_reps * 2**self.k_sim * self.d_proj,
                           f"r_reps * 2**k_sim * d_proj = {self.r_reps} * 2**{self.k_sim} * {self.d_proj}",
                           self.given("r_reps", "k_sim", "d_proj"))
        if self.d_final is not None and self.d_final > MAX_FDE_DIM:  # any projection (identity's full size waits)
            raise FieldRefusal("d_final", f"d_final ({self.d_final:,}) asks for more than the {MAX_FDE_DIM:,} "
                               f"dimensions muvera builds ({self.d_final * 4 / 2**20:,.0f} MiB per document); a "
                               "final projection is for shrinking the FDE")
        if self.d_final is not None and self.projection != "identity":
            full = self.r_reps * 2**self.k_sim * self.d_proj
            if self.d_final >= full:
                raise FieldRefusal(self.given("d_final", "r_reps", "k_sim", "d_proj"),
                    f"d_final ({self.d_final}) must be smaller than r_reps * 2**k_sim * d_proj = {full}: "
                    f"a final projection is for shrinking the FDE")
        return self


@register
class Muvera(TokenOperatorMixin, Operator):
    """MUVERA: FDE inner-product candidates, then exact MaxSim (Chamfer) rerank.

    ``fit`` encodes every document's tokens (cached on disk, float16, ragged) and builds
    document FDEs ``(n_docs, r_reps * 2**k_sim * d_proj)`` (or ``d_final``), written into the
    index chunk by chunk in its storage type (with exact search, ``fde_dtype`` f16 / i8 never hold
    the float32 FDE matrix; i8 encodes the documents twice, as its calibration needs the range of
    every FDE first).  A query's FDE
    is built from all its tokens with the same seeded matrices; the top ``candidates``
    documents by FDE inner product are rescored with exact Chamfer (batched over all
    query-candidate pairs) and the top ``k`` returned with their Chamfer scores.
    ``rerank=False`` returns the FDE scores instead.  A loaded muvera (as ``maxsim`` and
    ``maxsim_exact``) memory-maps its saved token vectors, whatever ``load``'s ``mmap`` (which
    applies to the FDE index): a search reads only its candidates' tokens.

    The defaults are the paper's (``k_sim=5, d_proj=16, r_reps=20``: 10,240 dims, made for
    128-d ColBERT vectors).  For 384-d MiniLM tokens, fewer buckets with wider projections do
    better at the same size, and the mean channel (``mean_weight``, a ragkit extension: see
    :mod:`ragkit.retrievers.fde`) more still: on SciFact test, among 120 candidates, the defaults find
    0.909 of the exact top 10, ``k_sim=4, d_proj=32`` 0.925, and ``k_sim=4, d_proj=32,
    mean_weight=1`` (10,624 dims) 0.949 (0.960 among 150).

    ``prune`` (a ragkit extension borrowed from PLAID) inserts a cheap middle stage: the FDE
    candidates are ranked by centroid interaction, MaxSim with every document token replaced by
    its nearest of ``centroids`` k-means centroids (a gather and a max per query token, no
    document vectors), and only the best ``prune`` go to the exact rerank.  A long FDE shortlist
    then costs little, and the exact rerank, the expensive part, scores few documents.  On
    SciFact test, ``mean_weight=1, candidates=300, prune=50`` (the paper's FDE otherwise; chosen
    on train queries by ``bench/muvera.py``) finds 0.958 of the exact top 10 at 21x the speed of
    brute-force MaxSim (0.970 with ``prune=60``).

    Dhulipala et al., "MUVERA: Multi-Vector Retrieval via Fixed Dimensional Encodings",
    NeurIPS 2024, arXiv 2405.19504.

    Santhanam et al., "PLAID: An Efficient Engine for Late Interaction Retrieval", CIKM 2022,
    arXiv 2205.09707 (the ``prune`` stage only).

    Examples
    --------
    >>> from ragkit.retrievers import Muvera
    >>> Muvera(k=10, candidates=200)
    Muvera(k=10)
    """

    name = "muvera"
    kind = "retriever"
    applies_filter = True  # (_call searches only the rows filter_mask allows)
    Params = MuveraParams
    params: MuveraParams
    example = {"k": 5, "candidates": 20, "k_sim": 3, "d_proj": 8, "r_reps": 4, "prune": 10, "centroids": 16}
    run_options = {"candidates": PARAM, "prune": PARAM}

    index_: VectorIndex  # the document FDEs
    codebook_: np.ndarray  # (centroids, dim) token codebook, only with prune
    codes_: np.ndarray  # flat code sets of the documents (only with prune) ...
    code_offsets_: np.ndarray  # ... and their (n_docs + 1,) offsets

    def check_run_options(self, options: Mapping[str, Any]) -> None:
        """A run-time ``prune`` needs the token codebook, which ``fit`` builds only when the
        ``prune`` parameter is set."""
        why = self._prune_refused(options.get("prune"))
        if why is not None:
            raise ValueError(f"prune: {why}")

    def _prune_refused(self, prune: Any) -> str | None:
        """Why a run-time ``prune`` cannot run on this fitted operator (it has no token codebook), or None: the
        one check behind search's option check (:meth:`check_run_options`) and a direct call's (``_call``)."""
        if prune is None or not self.is_fitted or getattr(self, "codebook_", None) is not None:
            return None
        return (f"pruning to {prune} candidates needs a token codebook, built by fit only when the prune parameter "
                f"is set (it is None for this muvera); refit with prune set")

    @property
    def fde_config(self) -> FDEConfig:
        """The FDE settings of this operator's parameters (``k_sim``, ``d_proj``, ``r_reps``, ``d_final``,
        ``projection``, ``fill_empty``, ``mean_weight``, ``seed``), as :mod:`ragkit.retrievers.fde` takes them."""
        p = self.params
        return FDEConfig(k_sim=p.k_sim, d_proj=p.d_proj, r_reps=p.r_reps, d_final=p.d_final,
                         projection=p.projection, fill_empty=p.fill_empty, mean_weight=p.mean_weight, seed=p.seed)

    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        p = self.params
        known = KNOWN_DIMS.get(p.model.lower())  # a known width: checked before encoding, no model loaded
        # before any encoding: the identity's size and d_proj need the token dimension (a tuned model's is its base
        # model's; an unknown model, a local folder, is loaded for it, 0.3 s and 30 MB for MiniLM, as the
        # encoding below would: d_proj was checked only after encoding the corpus)
        if p.projection == "identity":
            with model_named(self.name):
                dim = known if known is not None else self.token_encoder.dim
            self._check_identity_size(dim)
        else:
            try:
                with model_named(self.name):
                    dim = known if known is not None else self.token_encoder.dim
            except ParamError:  # a model that cannot be loaded: the encoding below says so, in the same words
                dim = None
            if dim is not None:
                self._check_d_proj(dim)
        blank = self._fit_tokens(corpus, train)
        if p.projection != "identity":
            self._check_d_proj(self.tokens_.dim)
        elif known is not None and self.tokens_.dim != known:  # (the table's width is the encoded one)
            self._check_identity_size(self.tokens_.dim)
        if p.prune is not None:
            n_tok = self.tokens_.n_tokens
            if p.centroids > n_tok:
                raise DataError(f"muvera: centroids ({p.centroids}) must not exceed the corpus's {n_tok} tokens "
                                f"(the codebook clusters them); lower centroids or set prune: null")
            enc = self.token_encoder
            key = None
            if enc.cache_enabled:  # same encoder, same texts -> same tokens -> the stored codebook
                key = f"{enc.key}|{hashlib.sha1(text_digests(list(corpus.full_texts)).tobytes()).hexdigest()}"
                if blank.any():  # (their tokens are none since: not the codebook cached before for these texts)
                    key += "|blank-docs-tokenless"
            self.codebook_, self.codes_, self.code_offsets_ = build_codes(
                self.tokens_.data, self.tokens_.offsets, p.centroids, seed=p.seed, cache_key=key)
        tv, cfg = self.tokens_, self.fde_config
        # a document without tokens (a blank one) is never found: its slot is built removed (saved so), and an
        # HNSW graph is built without its node (else every search, unfiltered too, would drop it from a wider
        # shortlist; slots kept: rows of documents), in one build (it was built with them, then rebuilt)
        empty = np.flatnonzero(np.diff(tv.offsets) == 0)
        # chunk by chunk into the index's storage: never the whole float32 FDE matrix for f16 / i8 exact search
        self.index_ = self._new_index().build_chunks(len(tv), fde_dim(cfg, tv.dim),
                                                     lambda: fde_document_chunks(tv.data, tv.offsets, cfg),
                                                     dead=empty if len(empty) else None)

    def _check_identity_size(self, dim: int) -> None:
        """ParamError when the identity FDE of ``dim``-d tokens exceeds :data:`MAX_FDE_DIM`, or ``d_final``
        does not shrink it."""
        p = self.params
        full = p.r_reps * 2**p.k_sim * dim
        try:
            check_fde_size(full, f"r_reps * 2**k_sim * the {dim}-d tokens (projection: identity)")
        except ValueError as e:
            raise ParamError(f"muvera: {e}") from None
        if p.d_final is not None and p.d_final >= full:  # as the validator does for ams / countsketch
            raise ParamError(f"muvera.d_final: d_final ({p.d_final:,}) must be smaller than r_reps * 2**k_sim * "
                             f"the {dim}-d tokens = {full:,} (projection: identity): a final projection is for "
                             "shrinking the FDE", path="muvera.d_final")

    def _check_d_proj(self, dim: int) -> None:
        """ParamError when ``d_proj`` exceeds the token dimension ``dim`` (as dense refuses a ``reduce``
        wider than its model's embeddings)."""
        if self.params.d_proj > dim:
            raise ParamError(f"muvera.d_proj: d_proj ({self.params.d_proj}) is larger than the {dim}-d token vectors "
                             f"of {self.params.model}: the inner projection shrinks each bucket's block (d_proj = "
                             f"{dim} is the identity), a wider one only enlarges the FDE; choose at most {dim}",
                             path="muvera.d_proj")

    def _new_index(self) -> VectorIndex:
        return VectorIndex(dtype=self.params.fde_dtype, metric="ip", search=self.params.search)

    @property
    def dim(self) -> int:
        """Width of one FDE (an int, float32 elements before the index's storage type): :func:`fde_dim` of
        :attr:`fde_config` and the token dimension.  Needs a fitted operator (the token dimension)."""
        return fde_dim(self.fde_config, self.tokens_.dim)

    def query_fde(self, q: TokenVectors) -> np.ndarray:
        """Query FDEs ``(n_q, d_FDE)`` float32 (bucket sums, no filling)."""
        return fde_queries(q.data, q.offsets, self.fde_config)

    def _call(self, state: State) -> State:
        out = state.copy()
        if len(state) == 0:
            out.rankings = []
            return out
        k = self.k_for(state)
        keep = self.opt(state, "prune", self.params.prune)
        why = self._prune_refused(keep)
        if why is not None:  # (search refuses it before any work as a ParamError; a direct call here)
            raise DataError(f"{self.name}: options prune: {why}")
        q = self.query_tokens(state)
        qf = self.query_fde(q)
        mask = self.filter_mask(state)
        if not self.params.rerank:
            out.rankings = rankings_from_matrix(*self.index_.search(qf, min(k, max(self.index_.n_alive, 1)), mask=mask))
            return out
        n_cand = max(int(self.opt(state, "candidates", self.params.candidates)), k)
        rows, sc = self.index_.search(qf, n_cand, mask=mask)  # (at most n_slots = the corpus's columns come back)
        rows = np.where(np.isfinite(sc), rows, -1)
        qd, qo, qw = self.rerank_query(q)
        if keep is not None and int(keep) < rows.shape[1]:
            rows = self.prune_candidates(qd, qo, qw, rows, max(int(keep), k))
        rows, sc = rerank_tokens(qd, qo, qw, self.tokens_, rows, where=self.name)
        out.rankings = rankings_from_matrix(rows[:, :k], sc[:, :k])
        return out

    def prune_candidates(self, q_data: np.ndarray, q_off: np.ndarray, q_w: np.ndarray | None, rows: np.ndarray,
                         keep: int) -> np.ndarray:
        """The ``keep`` best of candidate ``rows`` ``(n_q, c)`` by centroid interaction, ``(n_q, keep)``.

        Missing candidates (``-1``) stay last; ties keep the FDE order.  Santhanam et al.,
        "PLAID", CIKM 2022 (:mod:`ragkit.retrievers.centroids`).
        """
        sc = centroid_pairs(q_data, q_off, self.codebook_, self.codes_, self.code_offsets_, rows, q_weights=q_w)
        order, _ = topk_rows(sc, keep)  # ties: the lower column, i.e. the FDE order
        return np.take_along_axis(rows, order, axis=1)

    def _save(self, folder: Path) -> None:
        self._save_tokens(folder)
        self.index_.save(folder, prefix="fde")
        if self.params.prune is not None:
            save_arrays(folder, codebook=self.codebook_, codes=self.codes_, code_offsets=self.code_offsets_)
        write_json(folder / "muvera.json", {"fde_dim": self.dim, "token_dim": self.tokens_.dim,
                                            "n_tokens": self.tokens_.n_tokens, "config": vars(self.fde_config)})

    def _load(self, folder: Path, mmap: bool = False) -> None:
        self._load_tokens(folder, mmap)
        meta = read_json(folder / "muvera.json")
        # the index's CRC32s only where Operator.load's SHA-256 sums did not cover its files (both read every
        # file); sizes always checked
        index = VectorIndex.load(folder, prefix="fde", mmap=mmap, verify=not self._verified)
        saved = meta.get("config")
        if index.n_slots != len(self.corpus_) or not isinstance(saved, dict) \
                or {**vars(FDEConfig()), **saved} != vars(self.fde_config) or meta.get("fde_dim") != self.dim:
            raise ArtifactError(
                f"{folder}: FDE index of {index.n_slots} vectors / config {meta.get('config')} does not match the "
                f"parameters ({len(self.corpus_)} docs, config {vars(self.fde_config)})")
        self.index_ = index
        if self.params.prune is not None:
            cb, codes, off = (load_array(folder, n) for n in ("codebook", "codes", "code_offsets"))
            if cb.shape != (self.params.centroids, self.tokens_.dim) or off.shape != (len(self.corpus_) + 1,) \
                    or int(off[-1]) != len(codes):
                raise ArtifactError(
                    f"{folder}: codebook {cb.shape} / {len(codes)} codes / offsets {off.shape} do not match "
                    f"centroids={self.params.centroids}, {self.tokens_.dim}-d tokens and {len(self.corpus_)} documents")
            bad = damaged_codes(cb, codes, off)
            if bad is not None:
                raise ArtifactError(f"{folder}: {bad}")
            self.codebook_, self.codes_, self.code_offsets_ = cb, codes, off


# ----------------------------------------------------------------------------- exact MaxSim
class MaxSimExactParams(TokenParams):
    k: int = Field(default=100, ge=1, description="Results per query.")
    filter: MetadataFilter = Field(default=None, description="Metadata filter {field: value or [values]}.")


@register
class MaxSimExact(TokenOperatorMixin, Operator):
    """Brute-force multi-vector retrieval: exact Chamfer (MaxSim) against every document.

    ``CH(Q, P) = sum_q max_p <q, p>`` with unit token vectors.  All query tokens of the
    batch are multiplied against chunks of the flat document-token matrix (one BLAS call
    per chunk) and reduced per document (``maximum.reduceat``) and per query
    (a sparse indicator product).  The reference for :class:`Muvera`; cost grows with the corpus's
    token count (SciFact: ~1.2M tokens).

    Khattab & Zaharia, "ColBERT", SIGIR 2020 (late interaction); Dhulipala et al.,
    arXiv 2405.19504 (Chamfer notation).

    Examples
    --------
    >>> from ragkit.retrievers import MaxSimExact
    >>> MaxSimExact(k=10)
    MaxSimExact(k=10)
    """

    name = "maxsim_exact"
    kind = "retriever"
    applies_filter = True  # (_call scores only the rows filter_mask allows)
    Params = MaxSimExactParams
    params: MaxSimExactParams
    example = {"k": 5}

    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        self._fit_tokens(corpus, train)

    def scores(self, q: TokenVectors) -> np.ndarray:
        """Exact Chamfer (MaxSim) of every query of ``q`` against every corpus document: ``(n_q, n_docs)``
        float32, columns in corpus row order, no filter applied (a query or document without tokens scores 0).
        Ball-carved queries (``ball_carve_tau``) are scored through their weighted centres."""
        qd, qo, qw = self.rerank_query(q)
        return chamfer_scores(qd, qo, self.tokens_.data, self.tokens_.offsets, q_weights=qw)

    def _call(self, state: State) -> State:
        out = state.copy()
        if len(state) == 0:
            out.rankings = []
            return out
        q = self.query_tokens(state)
        s = self.scores(q)
        s[np.diff(q.offsets) == 0] = -np.inf  # a query without tokens (special_tokens: drop) finds nothing
        s[:, np.diff(self.tokens_.offsets) == 0] = -np.inf  # nor is a document without tokens (a blank one) found
        mask = self.filter_mask(state)
        if mask is not None:
            s[:, ~mask] = -np.inf
        out.rankings = rankings_from_matrix(*topk_rows(s, self.k_for(state)))
        return out

    def _save(self, folder: Path) -> None:
        self._save_tokens(folder)

    def _load(self, folder: Path, mmap: bool = False) -> None:
        self._load_tokens(folder, mmap)
