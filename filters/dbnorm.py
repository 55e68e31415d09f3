"""DBNorm: hubness reduction by inverted softmax over a query bank and a gallery bank.

Wang, Jian, Xue, "Balance Act: Mitigating Hubness in Cross-Modal Retrieval with Query and
Gallery Banks", EMNLP 2023, arXiv 2310.11612; QB-Norm: Bogolin et al., CVPR 2022; inverted
softmax: Smith et al., ICLR 2017.  Recipe and pitfalls: ALGORITHMS.md section 3.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from ragkit._flat import check_cosines, check_dense_rankings, check_rows_in_corpus, flatten
from ragkit._saves import load_array, read_json, save_arrays, saved_fit_report, write_json
from ragkit._topk import desc_order, topk_rows
from ragkit.encoders import (
    DEFAULT_MODEL,
    Encoder,
    check_encoder_key,
    get_encoder,
    query_vectors,
    save_encoder_key,
    unit_rows,
)
from ragkit.encoders.sentence import blank_texts, encode_documents, encoder_label, encoder_vectors
from ragkit.errors import ArtifactError, DataError, ParamError, some_ids
from ragkit.operator import Operator
from ragkit.params import FieldRefusal, MetadataFilter, ModelName, Params, Seed
from ragkit.registry import register
from ragkit.retrievers._index import VectorIndex, check_finite_vectors
from ragkit.types import Corpus, Ranking, State, TrainSet

__all__ = ["DBNorm", "DBNormParams", "DBNormDense", "DBNormDenseParams", "BankParams", "bank_log_partition",
           "pseudo_queries", "dbnorm_scores", "fit_banks"]

_log = logging.getLogger("ragkit")

#: what a pseudo-query bank needs (:class:`DBNormParams` and ``DBNorm.fit``)
PSEUDO_MIN = "a pseudo-query bank needs query_bank_size of at least 2 (or None: 1000)"


def bank_log_partition(
    docs: np.ndarray, bank: np.ndarray, beta: float, *, bank_rows: np.ndarray | None = None,
    activation_k: int = 1, max_chunk_floats: int = 1 << 23, who: str = "dbnorm",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-document log partition of a bank and the bank's activation set.

    Parameters
    ----------
    docs : (n_docs, d) float32, unit vectors
    bank : (n_b, d) float32, unit vectors
    beta : inverse temperature
    bank_rows : (n_b,) int, optional
        Corpus row of each bank item (``-1`` for none): the term ``s(b, g)`` with ``b == g``
        (self-similarity) is dropped from ``Z(g)`` and from the activation set.
    activation_k : the top-``k`` documents of each bank item form the activation set.

    Returns
    -------
    log_z : (n_docs,) float64, ``log sum_b exp(beta * s(b, g))``
    active : (n_docs,) bool, documents in some bank item's top-``activation_k``

    Computed over tiles of at most ``max_chunk_floats`` scores (:func:`_bank_tiles`: every document at once
    with as many bank rows as fit, or blocks of :data:`BANK_BLOCK` bank rows against tiles of documents), each
    a log-sum-exp over the block's bank rows shifted by its column maximum (no overflow for any ``beta``;
    exponentials in float32, sums in float64), added to ``log_z`` with ``logaddexp`` block after block.  The
    activation sets keep each bank row's best ``activation_k`` documents across the tiles; ties for an
    activation slot go to the lower document row.
    """
    docs = np.asarray(docs)
    bank = np.asarray(bank)
    if bank.ndim != 2:
        raise DataError(f"{who}: a bank must be a 2-D array (n_items, dim) of vectors, got shape {bank.shape}")
    if len(bank) == 0:
        raise DataError(f"{who}: the bank is empty (shape {bank.shape}); give at least one bank item")
    if docs.ndim != 2:
        raise DataError(f"{who}: document vectors must be a 2-D array (n_docs, dim), got shape {docs.shape}")
    if len(docs) == 0:
        raise DataError(f"{who}: no document vectors (shape {docs.shape})")
    if bank.shape[1] != docs.shape[1]:
        raise DataError(f"{who}: bank vectors have dimension {bank.shape[1]} but document vectors have "
                        f"{docs.shape[1]}; encode both with the same model")
    check_finite_vectors(bank, who, "bank")  # one NaN spoils every log Z (and was reported as "no bank term")
    check_finite_vectors(docs, who, "document")
    n_b, n = len(bank), len(docs)
    if bank_rows is not None:
        bank_rows = np.asarray(bank_rows, dtype=np.int64)
        if bank_rows.shape != (n_b,):
            raise DataError(f"{who}: bank_rows has shape {bank_rows.shape}, expected ({n_b},)")
    log_z = np.full(n, -np.inf)
    active = np.zeros(n, bool)
    k = min(activation_k, n)
    rows, width = _bank_tiles(n_b, n, max_chunk_floats)
    docs32 = np.ascontiguousarray(docs, np.float32)
    for i in range(0, n_b, rows):
        block = np.asarray(bank[i:i + rows], np.float32)
        br = None if bank_rows is None else bank_rows[i:i + rows]
        # each bank row's best documents so far (over the tiles before), best first, ties by the lower row
        best_v = np.empty((len(block), 0), np.float32)
        best_c = np.empty((len(block), 0), np.int64)
        for a in range(0, n, width):
            S = _bank_scores(block, docs32[a:a + width].T, beta)
            if br is not None:
                has = (br >= a) & (br < a + S.shape[1])
                S[np.nonzero(has)[0], br[has] - a] = -np.inf
            # log-sum-exp over the block's bank items: shifted by the column max, exp in float32, sum in float64
            m = S.max(axis=0)
            m = np.where(np.isfinite(m), m, np.float32(0))
            with np.errstate(divide="ignore"):  # a column of dropped terms only: log 0 = -inf, refused below
                part = m.astype(np.float64) + np.log(np.exp(S - m).sum(axis=0, dtype=np.float64))
            log_z[a:a + width] = np.logaddexp(log_z[a:a + width], part)
            if k == 1:
                top = S.argmax(axis=1)[:, None]  # ties: the lowest row
                vals = np.take_along_axis(S, top, axis=1)
            else:
                top, vals = topk_rows(S, k)  # ties at the cut: the lower rows
            if not best_v.shape[1]:
                best_v, best_c = vals, top + a
            elif k == 1:  # a later tile wins only with a higher score: ties stay with the lower row
                up = vals > best_v
                best_v, best_c = np.where(up, vals, best_v), np.where(up, top + a, best_c)
            else:  # the k best of the running k and the tile's k, ties by the lower row
                cand_v, cand_c = np.concatenate([best_v, vals], axis=1), np.concatenate([best_c, top + a], axis=1)
                order = desc_order(cand_v, cand_c)[:, :k]
                best_v = np.take_along_axis(cand_v, order, axis=1)
                best_c = np.take_along_axis(cand_c, order, axis=1)
        active[best_c[np.isfinite(best_v)]] = True
    if not np.isfinite(log_z).all():
        bad = int((~np.isfinite(log_z)).sum())
        raise DataError(f"{who}: {bad} documents have no bank term once self-similarity is dropped; "
                        "the bank needs at least 2 items")
    return log_z, active


#: Bank rows per matrix product of :func:`bank_log_partition` once the documents are tiled: each product reads a
#: tile of document vectors once for this many bank rows (a few rows per pass over every document made the
#: products memory-bound: 400k documents x 1,024 bank items x 384 dimensions took 32-39 s in 20-row passes, 20 s
#: in 512-row blocks of 16k-document tiles, in the same 8M-float budget).
BANK_BLOCK = 512


def _bank_tiles(n_b: int, n: int, max_chunk_floats: int) -> tuple[int, int]:
    """``(bank rows, documents)`` of each tile of :func:`bank_log_partition`, whose product holds at most
    ``max_chunk_floats`` scores (at least one of each): every document at once with as many bank rows as fit when
    that is :data:`BANK_BLOCK` rows or more (or the whole bank), else blocks of up to :data:`BANK_BLOCK` rows
    against tiles of as many documents as fit."""
    rows = max(1, max_chunk_floats // n)
    if rows < min(BANK_BLOCK, n_b):
        rows = max(1, min(BANK_BLOCK, max_chunk_floats))
    rows = min(rows, n_b)
    return rows, min(n, max(1, max_chunk_floats // rows))


def _bank_scores(block: np.ndarray, docs_t: np.ndarray, beta: float) -> np.ndarray:
    """``beta`` times the cosines ``(rows, docs)`` of a block of bank rows and a tile of documents (``docs_t``:
    ``(dim, docs)``), float32: one matrix product of :func:`bank_log_partition`."""
    S = block @ docs_t
    S *= np.float32(beta)
    return S


def pseudo_queries(corpus: Corpus, n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """First sentences of ``n`` random documents (seeded), for a query bank when no queries exist (a document
    whose text is blank: its title).

    Returns ``(texts, rows)``; ``rows`` are the source documents (their self-term is dropped).
    """
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(corpus), size=min(n, len(corpus)), replace=False))
    firsts = [re.split(r"(?<=[.!?])\s+", str(x).strip(), maxsplit=1)[0] for x in corpus.texts[rows].tolist()]
    # a blank first sentence (a text of invisible characters: "\u200b") is the model's bias direction: the title
    texts = [(str(t) if b else first)[:300]
             for t, first, b in zip(corpus.titles[rows].tolist(), firsts, blank_texts(firsts))]
    return texts, rows


def dbnorm_scores(
    cos: np.ndarray, rows: np.ndarray, top1: np.ndarray, method: str, beta: float, beta1: float, beta2: float,
    log_z_q: np.ndarray, act_q: np.ndarray, log_z_g: np.ndarray | None, act_g: np.ndarray | None,
) -> np.ndarray:
    """Log-space normalised scores of candidates (ALGORITHMS.md section 3, "Formulas").

    Parameters
    ----------
    cos : (n,) float
        Flat candidate cosines ``s(q, g)``.
    rows : (n,) int
        Corpus row ``g`` of each candidate.
    top1 : (n,) int
        Per candidate, the corpus row of its query's raw top-1 ``g1(q)`` (read by the dynamic methods).
    method : {"is", "qbnorm", "dualis", "ddis"}
        ``is``: ``beta * s - log Z_q(g)``; ``qbnorm`` (QB-Norm, the paper's "DIS", dynamic inverted
        softmax): the same where ``g1(q)`` is in the query bank's activation set, else ``beta * s``;
        ``dualis`` (DBNorm's DualIS): ``(beta1 + beta2) * s - log Z_q(g) - log Z_g(g)``; ``ddis``: each
        of DualIS's penalties only where ``g1(q)`` is in that bank's activation set.  ``dis`` is read
        as ``dualis`` (the name ragkit used first).
    beta : float
        Inverse temperature of ``is`` / ``qbnorm``.
    beta1, beta2 : float
        Inverse temperatures of the query-bank and gallery-bank factors (``dualis`` / ``ddis``).
    log_z_q : (n_docs,) float
        ``log Z_q(g)`` of every document over the query bank (:func:`bank_log_partition`, at ``beta``
        for is / qbnorm, ``beta1`` for the dual methods).
    act_q : (n_docs,) bool
        The query bank's activation set (documents in some bank item's top-``activation_k``).
    log_z_g : (n_docs,) float or None
        ``log Z_g(g)`` over the gallery bank at ``beta2``; needed by ``dualis`` and ``ddis`` only.
    act_g : (n_docs,) bool or None
        The gallery bank's activation set; needed by ``dualis`` and ``ddis`` only.

    Returns
    -------
    (n,) float64
        The normalised score of each candidate (Wang, Jian, Xue, EMNLP 2023, arXiv 2310.11612).
    """
    s = cos.astype(np.float64)
    if method == "is":
        return beta * s - log_z_q[rows]
    if method == "qbnorm":
        return beta * s - np.where(act_q[top1], log_z_q[rows], 0.0)
    if method == "dis":
        method = "dualis"
    if method not in ("dualis", "ddis"):
        raise ValueError(f"dbnorm_scores: unknown method {method!r}; expected one of 'is', 'qbnorm', 'dualis' "
                         "(alias 'dis'), 'ddis'")
    if log_z_g is None or act_g is None:
        raise ValueError(f"method {method!r} needs the gallery bank's log_z_g and act_g, got None")
    if method == "dualis":
        return (beta1 + beta2) * s - log_z_q[rows] - log_z_g[rows]
    return ((beta1 + beta2) * s - np.where(act_q[top1], log_z_q[rows], 0.0)
            - np.where(act_g[top1], log_z_g[rows], 0.0))


#: The smallest inverse temperature: a penalty ``log Z(g)`` differs between documents by about beta times their
#: cosine differences (~1e-3 and less), and it is computed in float64, rounded to ~1e-15 of ``log(bank size)``;
#: below 1e-6 those differences sink toward that rounding (at beta=1e-20 the penalties are rounding noise, which
#: dbnorm_dense divides by beta: noise of 1e4 on its cosines, and at 1e-300 values beyond float32), while the
#: normalisation has long vanished (beta -> 0 ranks as plain dense).
MIN_BETA = 1e-6
#: The bound on inverse temperatures (beta < MAX_BETA): the bank cosines times beta are exponentiated in float32,
#: and the scores ``beta * cos - log Z`` (dbnorm_dense: ``(beta1 + beta2) * cos - ...``) reach about 4 times beta in
#: size, which must stay within float32's 3.4e38 (any beta above ~1e3 already weighs the nearest bank item only).
MAX_BETA = 1e37


class BankParams(Params):
    """The banks and the method: what :class:`DBNorm` (rerank) and :class:`DBNormDense` (retrieve) share."""

    model: ModelName = Field(default=DEFAULT_MODEL,
                             description="Encoder for banks and documents: the dense retriever's model (a pipeline "
                                         "refuses another at fit: the penalties would not match its cosines).")
    method: Literal["is", "qbnorm", "dualis", "ddis"] = Field(
        default="dualis",
        description="is: inverted softmax (query bank); qbnorm: dynamic IS (QB-Norm; the paper's 'DIS', "
                    "dynamic inverted softmax); dualis: dual inverted softmax (DBNorm's 'DualIS'; 'dis', "
                    "its first ragkit name, is read as dualis with a warning); ddis: dual dynamic inverted "
                    "softmax.")

    @field_validator("method", mode="before")
    @classmethod
    def _dualis(cls, v: object, info: ValidationInfo) -> object:
        """Methods are read in any case (``DualIS``, the paper's spelling, is ``dualis``; ``QBNorm`` ``qbnorm``);
        ``dis`` (ragkit's first name for dualis, in old YAML and
        saved pipelines) too, with a warning: the paper's "DIS" is the dynamic inverted softmax, ``qbnorm``.
        The warning's advice fits where the value came from: a loaded save's files (validation context
        ``source: "saved"``), which a new save rewrites, or what the user wrote."""
        if isinstance(v, str):  # every spelling's case (IS, QBNorm, DualIS, DDIS): kept lower-cased, as written back
            if v.strip().lower() == "dis" and v != "dis":  # the paper's "DIS" is dynamic (qbnorm): not guessed
                raise ValueError(f"method {v!r} is ambiguous: the paper's DIS (dynamic inverted softmax) is 'qbnorm', "
                                 "ragkit's first 'dis' is 'dualis' (dual inverted softmax); write qbnorm or dualis")
            v = v.strip().lower()
        if v == "dis":
            saved = isinstance(info.context, Mapping) and info.context.get("source") == "saved"
            fix = ("It comes from a folder saved by an earlier ragkit: save it again (which writes method: dualis) to "
                   "silence this warning" if saved else "Write method: dualis (or qbnorm) to silence this warning")
            _log.warning("dbnorm: method 'dis' is read as 'dualis' (dual inverted softmax); the paper's DIS, dynamic "
                         f"inverted softmax, is 'qbnorm'. {fix}")
            return "dualis"
        return v
    beta: float = Field(default=20.0, ge=MIN_BETA, lt=MAX_BETA, description=(
        "Inverse temperature of is/qbnorm (cosine scale; 1e-6 up to 1e37: below, the penalties' differences sink into "
        "float64 rounding; above, float32 overflows)."))
    beta1: float = Field(default=0.5, ge=MIN_BETA, lt=MAX_BETA, description=(
        "Inverse temperature of the query-bank factor (dualis/ddis; 1e-6 up to 1e37)."))
    beta2: float = Field(default=3.0, ge=MIN_BETA, lt=MAX_BETA, description=(
        "Inverse temperature of the gallery-bank factor (dualis/ddis; 1e-6 up to 1e37)."))
    query_bank: Literal["train", "pseudo"] = Field(
        default="train", description="Query bank: the training queries, or first sentences of random documents "
                                     "(used automatically when fit gets no training queries).")
    query_bank_size: int | None = Field(
        default=None,
        ge=1, description="Query bank items (sampled, seeded); None: all training queries, or 1000 "
                          "pseudo-queries.  Pseudo-queries need at least 2: each is drawn from a document, whose "
                          "own term is dropped from its partition, so one would leave that document none.")
    gallery_bank_size: int | None = Field(
        default=None,
        ge=2, description="Gallery bank documents (sampled, seeded); None: the whole corpus.  Fit scores every "
                          "document against every bank document (n_docs x bank cosines and exponentials, about "
                          "16 ns a pair on 2 cores): with the whole corpus about 3 min at 100k documents and "
                          "4-5 hours at 1M; 10000 keeps it to about 3 min per million documents.")
    seed: Seed = Field(default=0, description="Seed of bank sampling.")

    @model_validator(mode="after")
    def _banks(self) -> "BankParams":
        dual = self.method in ("dualis", "ddis")
        if self.query_bank == "pseudo" and self.query_bank_size == 1:
            raise FieldRefusal("query_bank_size", f"query_bank_size=1 with query_bank='pseudo' leaves the document it "
                               f"is drawn from no bank term (its self-similarity is dropped); {PSEUDO_MIN}")
        duals = "method: dualis or ddis"
        self.refuse_unused(("beta", not dual, "method: is or qbnorm"), ("beta1", dual, duals), ("beta2", dual, duals),
                           ("gallery_bank_size", dual, duals))
        return self

    @property
    def dual(self) -> bool:
        """Whether the method has a gallery bank (``dualis``, ``ddis``)."""
        return self.method in ("dualis", "ddis")


class DBNormParams(BankParams):
    activation_k: int = Field(
        default=1, ge=1, description="Top-k of each bank item forming the activation set (dynamic methods).")

    @model_validator(mode="after")
    def _used(self) -> "DBNormParams":
        self.refuse_unused(("activation_k", self.method in ("qbnorm", "ddis"), "method: qbnorm or ddis"))
        return self


def check_bank_inputs(name: str, p: BankParams, corpus: Corpus, train: TrainSet | None) -> None:
    """Refuse, before any encoding, a bank that fit could not build from these inputs (``name``: the operator).
    The banks are fitted on the documents that are not blank (:func:`fit_banks`): those are counted."""
    if (train is None and p.query_bank_size == 1  # (pseudo with 1: refused by the params)
            and len(corpus) > 1 and int((~corpus.blank).sum()) > 1):
        raise ParamError(f"{name}.query_bank_size: fit got no training queries, so the query bank is "
                         f"pseudo-queries, and query_bank_size=1 leaves the document the one pseudo-query is "
                         f"drawn from no bank term; {PSEUDO_MIN}, or pass train to fit", path=f"{name}.query_bank_size")


def fit_banks(p: BankParams, corpus: Corpus, train: TrainSet | None, docs: np.ndarray, *, activation_k: int = 1,
              name: str = "dbnorm", empty_ok: bool = False
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """The per-document penalties and activation sets of ``p``'s banks (ALGORITHMS.md section 3, "Fit / compute").

    A blank document (empty, whitespace or invisible characters only, title and text: :attr:`Corpus.blank
    <ragkit.types.Corpus.blank>`) encodes to the model's bias direction, one fake hub near every short text: the banks
    are fitted on the other documents (pseudo-queries drawn from them, the gallery bank of them; ``info``'s
    ``n_docs`` counts all, ``blank_docs`` the blank ones), and a blank document gets penalty 0 and is in no
    activation set.  Every document blank (or none at all): every penalty 0 (no bank), or, unless ``empty_ok``, a
    :class:`DataError` where there are documents and the query bank is pseudo-queries (drawn from them).

    Parameters
    ----------
    p : BankParams
        The method, temperatures and bank settings.
    corpus : Corpus
        The ``n_docs`` documents (pseudo-queries are drawn from it; the gallery bank is it or a sample).
    train : TrainSet or None
        Its queries form the query bank of ``query_bank: train``; without it, pseudo-queries do.
    docs : (n_docs, d) float32
        Unit document vectors of ``p.model`` (none for an empty corpus: no bank).
    activation_k : int
        Top-k of each bank item forming the activation sets.
    empty_ok : bool
        Every document blank with a query bank of pseudo-queries gives every penalty 0, not a DataError (a
        retriever of such a corpus finds nothing anyway: ``dbnorm_dense``).

    Returns
    -------
    log_z_q, active_q, log_z_g, active_g, info
        ``(n_docs,)`` float64 ``log Z_q(g)`` (at ``beta1`` for the dual methods, ``beta`` otherwise) and bool
        activation set of the query bank; the same of the gallery bank at ``beta2`` (zeros and all false for
        ``is`` / ``qbnorm``, which have none); a dict describing the banks.
    """
    blank = corpus.blank
    n = len(corpus)
    if blank.all():  # nothing to normalise (no document, or blank ones only): a dense retriever finds none of them
        if n and not empty_ok and not (p.query_bank == "train" and train is not None):
            raise DataError(f"{name}.fit: the query bank is empty: the pseudo-queries are drawn from the documents, "
                            f"and all {n} are blank (empty, whitespace or invisible characters only); give "
                            "documents with text, or training queries with query_bank='train'")
        info: dict[str, Any] = {"query_bank": None, "query_bank_size": 0, "n_docs": n, "dim": int(docs.shape[1]),
                                "active_q": 0, "active_g": 0}
        if n:
            info["blank_docs"] = n
        return np.zeros(n), np.zeros(n, bool), np.zeros(n), np.zeros(n, bool), info
    if not blank.any():
        return _fit_banks(p, corpus, train, docs, activation_k=activation_k, name=name)
    kept = ~blank
    log_z_q, active_q, log_z_g, active_g, info = _fit_banks(p, corpus.subset(kept), train, docs[kept],
                                                            activation_k=activation_k, name=name)
    out = []
    for part, dtype in ((log_z_q, np.float64), (active_q, bool), (log_z_g, np.float64), (active_g, bool)):
        full = np.zeros(n, dtype)  # a blank document: penalty 0, in no activation set
        full[kept] = part
        out.append(full)
    info.update(n_docs=n, blank_docs=int(blank.sum()))
    return out[0], out[1], out[2], out[3], info


def _fit_banks(p: BankParams, corpus: Corpus, train: TrainSet | None, docs: np.ndarray, *, activation_k: int,
               name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """:func:`fit_banks` of a corpus without blank documents."""
    rng = np.random.default_rng(p.seed)
    q_rows: np.ndarray | None
    if p.query_bank == "train" and train is not None:
        source = "train"
        texts = list(train.queries.texts)
        blank = blank_texts(texts)
        if blank.any():  # a blank text encodes to the model's bias direction: one fake hub for every document
            n_blank = int(blank.sum())
            _log.warning(f"{name}.fit: {n_blank} of the {len(texts)} training queries are blank (e.g. "
                         f"{some_ids([q for q, b in zip(train.queries.ids, blank) if b])}); they are left out of "
                         f"the query bank ({len(texts) - n_blank} left)")
            texts = [t for t, b in zip(texts, blank) if not b]
        if p.query_bank_size is not None and p.query_bank_size < len(texts):
            texts = [texts[i] for i in np.sort(rng.choice(len(texts), p.query_bank_size, replace=False))]
        q_rows = None
    else:
        source = "pseudo"
        texts, q_rows = pseudo_queries(corpus, p.query_bank_size or 1000, p.seed)  # (of documents with text)
    if not texts:
        only = ", only blank ones" if source == "train" and train is not None and len(train.queries) else ""
        raise DataError(f"{name}.fit: the query bank is empty (no training queries{only}); give training queries "
                        "with text, or use query_bank='pseudo'")
    enc = get_encoder(p.model)
    qbank = unit_rows(encoder_vectors(enc.encode_queries(texts), len(texts),
                                      encoder_label(name, p.model, enc, "encode_queries")))
    beta_q = p.beta1 if p.dual else p.beta
    # one document: a bank drawn from the corpus (pseudo-queries, the gallery) holds only the document itself,
    # whose self-similarity is dropped, so its partition is an empty sum; every ranking then holds at most that
    # document and no normalisation can reorder it, so the factor is left out (log Z 0, inactive: as ddis
    # leaves an inactive factor) instead of failing a fit the user could not fix
    n = len(corpus)
    lone = n == 1
    if lone and q_rows is not None:
        log_z_q, active_q = np.zeros(1), np.zeros(1, bool)
    else:
        log_z_q, active_q = bank_log_partition(docs, qbank, beta_q, bank_rows=q_rows, activation_k=activation_k,
                                               who=f"{name} query bank")
    info: dict[str, Any] = {"query_bank": source, "query_bank_size": len(texts), "n_docs": n, "dim": int(docs.shape[1])}
    if p.dual and lone:
        log_z_g, active_g = np.zeros(1), np.zeros(1, bool)
        info["gallery_bank_size"] = 0
    elif p.dual:
        n_g = n if p.gallery_bank_size is None else min(p.gallery_bank_size, n)
        g_rows = (np.arange(n) if n_g == n  # its own stream: not the pseudo-queries' rows
                  else np.sort(np.random.default_rng([p.seed, 1]).choice(n, n_g, replace=False)))
        gallery = docs if n_g == n else docs[g_rows]  # the whole corpus: no copy of it (1.5 GB at 1M x 384)
        log_z_g, active_g = bank_log_partition(docs, gallery, p.beta2, bank_rows=g_rows,
                                               activation_k=activation_k, who=f"{name} gallery bank")
        info["gallery_bank_size"] = int(n_g)
    else:
        log_z_g, active_g = np.zeros(n), np.zeros(n, bool)
    info.update(active_q=int(active_q.sum()), active_g=int(active_g.sum()))
    return log_z_q, active_q, log_z_g, active_g, info


#: keys a load drops from a saved ``dbnorm.json``: ``seconds``, the fit's wall time, which older saves hold
#: (no longer in ``info_`` nor saved: two identical fits write identical files)
def read_info(path: Path) -> dict[str, Any]:
    """The ``info_`` saved at ``path`` (``dbnorm.json``): :func:`~ragkit._saves.saved_fit_report`."""
    return saved_fit_report(read_json(path), path)


class _BankOperator(Operator):
    """What ``dbnorm`` and ``dbnorm_dense`` share as operators fitted with banks (:class:`BankParams`)."""

    params: BankParams

    @property
    def uses_training_queries(self) -> bool:
        """The query bank of ``query_bank: train`` is the training queries (their judgements unused)."""
        return self.params.query_bank == "train"


@register
class DBNorm(_BankOperator):
    """Rerank dense candidates with (dual) inverted softmax over query and gallery banks (DBNorm).

    With bank ``B`` and inverse temperature ``beta``, inverted softmax scores a candidate
    ``g`` of query ``q`` as ``beta * s(q, g) - log Z_B(g)``, ``Z_B(g) = sum_b exp(beta *
    s(b, g))``: a hub (close to many bank items) pays a large per-document penalty.

    ``method``:

    * ``is``: query bank only; ``qbnorm``: the same, applied only to queries whose raw
      top-1 is in the query bank's activation set (QB-Norm's dynamic inverted softmax);
    * ``dualis`` (the default): dual inverted softmax (DBNorm's "DualIS"):
      ``(beta1 + beta2) s - log Z_q(g; beta1) - log Z_g(g; beta2)``.  ``dis``, ragkit's first
      name for it, is still read as ``dualis`` (old YAML and saved pipelines), with a warning:
      the paper's "DIS", dynamic inverted softmax, is ``qbnorm``;
    * ``ddis``: each factor applied only when the query's raw top-1 is in that bank's
      activation set; an inactive factor stays ``beta_x * s`` (never the raw cosine, which
      the reference code substitutes and which can flip signs).

    Banks: query bank = training queries (``train`` given to fit; their judgements are not read, so a
    query log without them will do: ``TrainSet(queries)``; blank texts are left out with a warning) or, without
    them, first sentences of random documents; gallery bank = the corpus (or a sample), with each
    document's self-similarity dropped (a one-document corpus leaves these corpus-drawn banks
    nothing: their factor is left out, as nothing can be reordered).  ``model`` must be the
    dense retriever's: a pipeline refuses another at fit.  ``log Z`` and activation masks are computed at fit
    (chunked log-sum-exp), so search is one gather per candidate plus a per-query sort.

    Input: a ranking of raw cosines (``dense | dbnorm``; a pipeline refuses a dense with ``reduce`` or
    ``dtype: b1`` unless it has ``rescore: true``: its scores are not the full-dimension cosines the penalties
    are computed from); only those candidates are
    re-scored (shape ``(B, K)`` -> same rows, new order), less the blank documents among them (empty, whitespace
    or invisible characters only: in no bank, their penalty 0 would be the largest boost; a dense step never
    returns them, rankings given or a corpus edited may), which are left out, as ``maxsim`` leaves out its blank
    candidates.  Output scores are the log-space
    normalised scores (float32); raw cosines stay in ``fields["cosine"]``.  A document a hub
    pushed out of dense's top-``K`` stays out: :class:`DBNormDense` (``dbnorm_dense``) retrieves
    by the normalised score over the whole corpus instead (``dualis`` and ``is`` only).

    References
    ----------
    Wang, Jian, Xue, "Balance Act: Mitigating Hubness in Cross-Modal Retrieval with Query
    and Gallery Banks", EMNLP 2023, arXiv 2310.11612.  Bogolin et al., "Cross Modal
    Retrieval with Querybank Normalisation", CVPR 2022.

    Examples
    --------
    A toy encoder (hashed words: :class:`~ragkit.encoders.HashingEncoder`) keeps the example
    self-contained; in practice leave ``model``
    at the default MiniLM, shared with ``dense``:

    >>> from ragkit.encoders import HashingEncoder, register_encoder
    >>> from ragkit.retrievers import Dense
    >>> from ragkit.types import Corpus, TrainSet
    >>> _ = register_encoder("doctest-words", HashingEncoder(dim=64), replace=True)
    >>> corpus = Corpus.from_texts(["red apples", "green pears", "ripe red cherries", "a fruit market",
    ...                             "apple pie recipe"])
    >>> train = TrainSet({"q1": "red fruit", "q2": "baked apples"}, {"q1": {"2": 1}, "q2": {"4": 1}})
    >>> pipe = Dense(model="doctest-words", k=4) | DBNorm(model="doctest-words", method="dualis")
    >>> run = pipe.fit(corpus, train).search(["green fruit"])
    >>> run.doc_ids[0].tolist()     # dense's four candidates, reordered by the normalised score
    ['1', '3', '4', '0']
    >>> run.rankings[0].fields["cosine"].round(2)     # the raw cosines stay: '0' was above '4' by cosine
    array([0.67, 0.6 , 0.32, 0.34], dtype=float32)
    """

    name = "dbnorm"
    kind = "reranker"
    reads_rankings = True
    Params = DBNormParams
    params: DBNormParams
    example = {"method": "ddis"}
    upstream_example = [{"dense": {"k": 20}}]
    info_: dict[str, Any]  # set by fit

    @property
    def dual(self) -> bool:
        """Whether the ``method`` has a gallery bank too (``dualis``, ``ddis``), not the query bank only."""
        return self.params.dual

    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        p = self.params
        check_bank_inputs(self.name, p, corpus, train)
        enc = get_encoder(p.model)
        docs = (unit_rows(encode_documents(enc, corpus.full_texts, encoder_label(self.name, p.model, enc, "encode")))
                if len(corpus) else np.zeros((0, int(enc.dim)), np.float32))
        # (banks of cosines, like the dense scores it corrects; no document: every ranking it sees is empty, and
        # fit_banks gives no bank, as dbnorm_dense's)
        self.log_z_q_, self.active_q_, self.log_z_g_, self.active_g_, info = fit_banks(
            p, corpus, train, docs, activation_k=p.activation_k, name=self.name)
        self.info_ = info

    def _call(self, state: State) -> State:
        out = state.copy()
        assert state.rankings is not None  # (Operator.__call__ refused a state without)
        rows, c, lengths, starts, qidx = flatten(state.rankings)
        if not len(rows):
            return out
        check_cosines(c, self.name, qidx)
        check_dense_rankings(state.rankings, c, qidx, self.name)
        check_rows_in_corpus(rows, len(self.log_z_q_), self.name)
        given = state.rankings
        blank = self.corpus_.blank[rows]
        if blank.any():  # a blank candidate (empty, whitespace or invisible characters only: a dense step over a
            # corpus edited by hand, or rankings given) is in no bank, penalty 0: the largest boost.  Left out, as
            # maxsim leaves out its blank candidates (nothing to score)
            given = [r.take(np.flatnonzero(~blank[s:s + n])) for r, s, n in
                     zip(state.rankings, starts.tolist(), lengths.tolist())]
            rows, c, lengths, starts, qidx = flatten(given)
            if not len(rows):
                out.rankings = given
                return out
        p = self.params
        # raw top-1 per query: the candidate with the highest cosine (the first one after dense)
        B, K = len(lengths), int(lengths.max())
        pos = np.arange(len(rows)) - starts[qidx]
        C = np.full((B, K), -np.inf)
        C[qidx, pos] = c
        top1 = rows[starts[qidx] + np.argmax(C, axis=1)[qidx]]
        new = dbnorm_scores(c, rows, top1, p.method, p.beta, p.beta1, p.beta2,
                            self.log_z_q_, self.active_q_, self.log_z_g_, self.active_g_)
        P = np.full((B, K), -np.inf)
        P[qidx, pos] = new
        order = np.argsort(-P, axis=1, kind="stable")  # ties keep the incoming order
        rankings = []
        for i, r in enumerate(given):
            n = int(lengths[i])
            if n == 0:
                rankings.append(r)
                continue
            o = order[i, :n]
            flds = {k: v[o] for k, v in r.fields.items()}
            flds["cosine"] = r.scores[o]
            rankings.append(Ranking(r.rows[o], P[i, o].astype(np.float32), flds))
        out.rankings = rankings
        return out

    def _save(self, folder: Path) -> None:
        save_arrays(folder, dbnorm_log_z_q=self.log_z_q_, dbnorm_active_q=self.active_q_,
                    dbnorm_log_z_g=self.log_z_g_, dbnorm_active_g=self.active_g_)
        write_json(folder / "dbnorm.json", self.info_)
        save_encoder_key(folder, get_encoder(self.params.model))

    def _load(self, folder: Path, mmap: bool = False) -> None:
        check_encoder_key(folder, get_encoder(self.params.model), self.name, self.params.model)
        self.log_z_q_ = load_array(folder, "dbnorm_log_z_q", mmap=mmap)
        self.active_q_ = load_array(folder, "dbnorm_active_q", mmap=mmap)
        self.log_z_g_ = load_array(folder, "dbnorm_log_z_g", mmap=mmap)
        self.active_g_ = load_array(folder, "dbnorm_active_g", mmap=mmap)
        n = len(self.corpus_)
        for name in ("log_z_q_", "active_q_", "log_z_g_", "active_g_"):
            if len(getattr(self, name)) != n:
                raise ArtifactError(f"{folder}: {name} has {len(getattr(self, name))} entries "
                                    f"for a corpus of {n} documents")
        self.info_ = read_info(folder / "dbnorm.json")


class DBNormDenseParams(BankParams):
    k: int = Field(default=100, ge=1, description="Results per query.")
    filter: MetadataFilter = Field(default=None, description="Metadata filter {field: value or [values]}.")

    @field_validator("method")
    @classmethod
    def _static(cls, v: str) -> str:
        """The dynamic methods decide per query (from its raw top-1): no per-document penalty, no index."""
        if v in ("qbnorm", "ddis"):
            raise ValueError(f"method={v!r} is dynamic: whether a query is normalised depends on its raw top-1, so its "
                             f"scores are no fixed per-document penalty an index can hold; dbnorm_dense retrieves by "
                             f"method dualis or is.  To rerank with {v}, use dense | dbnorm (method: {v})")
        return v


@register
class DBNormDense(_BankOperator):
    """Retrieve by the (dual) inverted softmax score over the whole corpus: exact search of augmented vectors.

    Non-dynamic DualIS scores document ``g`` for query ``q`` as ``(beta1 + beta2) * s(q, g) - c_g``
    with ``c_g = log Z_q(g; beta1) + log Z_g(g; beta2)``, a penalty of the document alone (IS:
    ``beta * s(q, g) - log Z_q(g; beta)``).  So the normalised score is an inner product: fit stores
    the unit document vectors augmented with one coordinate, ``[g, -(c_g - shift_) / scale]`` (``scale`` =
    ``beta1 + beta2``, or ``beta``; ``shift_`` the midpoint of the penalties' range, which centres the
    float32 coordinate within about [-2, 2] whatever the betas; the scores are then ``ip * scale - shift_``),
    in an exact inner-product
    :class:`~ragkit.retrievers._index.VectorIndex` (blocked matrix products and top-k, as ``dense``
    with ``search: exact``), and a search scores ``[q, 1]`` against them: hubs are demoted *before*
    the top-``k`` cut, where ``dense | dbnorm`` can only reorder the ``k`` candidates dense found
    (a document a hub pushed out of them stays out).  ALGORITHMS.md section 3, "Fit / compute",
    option 2.  A blank document (empty, whitespace or invisible characters only, title and text) is never
    found, as a blank query finds nothing: it is in no bank, and its slot is removed from the index.

    The banks are :class:`DBNorm`'s (same parameters, same penalties: :func:`fit_banks`); the
    dynamic methods (``qbnorm``, ``ddis``) decide per query and are refused (rerank with
    ``dense | dbnorm`` for them).  Queries are encoded with ``model``, as the documents.  Scores
    are the normalised scores (float32, equal to ``dbnorm``'s for the same candidate up to float32
    rounding); raw cosines are in ``fields["cosine"]``.  Search costs an exact dense search
    (``O(n_docs * d)`` per query); fit adds DBNorm's bank cost.  A separate operator rather than
    a ``dbnorm`` parameter: it is a retriever (``k``, ``filter``, first in a pipeline), and an
    operator's kind is fixed by its class.

    References
    ----------
    Wang, Jian, Xue, "Balance Act: Mitigating Hubness in Cross-Modal Retrieval with Query
    and Gallery Banks", EMNLP 2023, arXiv 2310.11612.  Smith et al., "Offline bilingual word
    vectors, orthogonal transformations and the inverted softmax", ICLR 2017.

    Examples
    --------
    A toy encoder (hashed words: :class:`~ragkit.encoders.HashingEncoder`) keeps the example
    self-contained; in practice leave ``model``
    at the default MiniLM:

    >>> from ragkit.encoders import HashingEncoder, register_encoder
    >>> from ragkit.types import Corpus, TrainSet
    >>> _ = register_encoder("doctest-words", HashingEncoder(dim=64), replace=True)
    >>> corpus = Corpus.from_texts(["red apples", "green pears", "ripe red cherries", "a fruit market",
    ...                             "apple pie recipe"])
    >>> train = TrainSet({"q1": "red fruit", "q2": "baked apples"}, {"q1": {"2": 1}, "q2": {"4": 1}})
    >>> retriever = DBNormDense(model="doctest-words", k=2).fit(corpus, train)
    >>> retriever.search(["green fruit"]).doc_ids[0].tolist()
    ['1', '3']
    """

    uses_torch: ClassVar[bool] = True  # torch.topk in the exact search

    name = "dbnorm_dense"
    kind = "retriever"
    applies_filter = True  # (_call searches only the rows filter_mask allows)
    Params = DBNormDenseParams
    params: DBNormDenseParams
    example = {"k": 5}
    info_: dict[str, Any]  # set by fit
    #: exact inner product over [g, -(c_g - shift_) / scale], slot = corpus row (a blank document's slot removed)
    index_: VectorIndex
    log_z_q_: np.ndarray  # (n_docs,) float64
    log_z_g_: np.ndarray  # (n_docs,) float64, zeros for method is
    #: the midpoint of the penalties' range, subtracted before they are divided by the scale (0: a save from before)
    shift_: float

    @property
    def encoder(self) -> Encoder:
        """The dense encoder of the ``model`` parameter: texts to unit vectors ``(n, dim)`` float32, the
        documents at fit and the queries at search."""
        return get_encoder(self.params.model)

    @property
    def scale(self) -> float:
        """The factor of the cosine in the normalised score: ``beta1 + beta2`` (dualis) or ``beta`` (is)."""
        p = self.params
        return p.beta1 + p.beta2 if p.dual else p.beta

    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        p = self.params
        n = len(corpus)
        # a blank document (empty, whitespace or invisible characters only, title and text) is never found, as a
        # blank query finds nothing: its vector is the model's bias direction, near every short query.  It is in
        # no bank (its penalty 0: fit_banks), and its slot is removed from the index (saved so)
        blank = corpus.blank
        some_blank = bool(blank.any())
        check_bank_inputs(self.name, p, corpus, train)
        enc = self.encoder
        docs = (unit_rows(encode_documents(enc, corpus.full_texts, encoder_label(self.name, p.model, enc, "encode")))
                if n else np.zeros((0, int(enc.dim)), np.float32))
        # (no document, or blank ones only: every penalty 0, nothing to retrieve)
        self.log_z_q_, _, self.log_z_g_, _, info = fit_banks(p, corpus, train, docs, name=self.name, empty_ok=True)
        d = docs.shape[1]
        aug = np.empty((n, d + 1), np.float32)
        aug[:, :d] = docs
        # the penalty's coordinate, centred: log Z of every document lies within about 2 * beta of the midpoint
        # of its range (cosines in [-1, 1]), so (log Z - shift) / beta lies within about [-2, 2] whatever beta;
        # uncentred, log Z / beta holds log(bank size) / beta, which overflowed float32 at beta=1e-300 and at
        # beta=1e-3 rounded the coordinate to ~5e-4 (bank of 30), the size of cosine differences
        penalty = self.log_z_q_ + self.log_z_g_
        banked = penalty[~blank] if some_blank else penalty
        self.shift_ = float((banked.max() + banked.min()) / 2) if len(banked) else 0.0
        coord = self._coordinate(penalty)
        if some_blank:
            coord[blank] = 0  # (never searched)
        if not np.isfinite(coord).all():
            p, what = self.params, ("beta1 + beta2" if self.params.dual else "beta")
            at = f"{self.name}.{'beta1' if p.dual else 'beta'}"
            raise ParamError(f"{at}: {what}={self.scale!r} scales the documents' penalties log Z to values beyond "
                             f"float32 (log Z from {banked.min():.6g} to {banked.max():.6g}, divided by {what}); "
                             f"use betas from {MIN_BETA:g} up to {MAX_BETA:g}", path=at)
        aug[:, d] = coord
        info["penalty_shift"] = self.shift_
        self.index_ = VectorIndex(dtype="f32", metric="ip", search="exact").build(
            aug, copy=False, dead=np.flatnonzero(blank) if some_blank else None)
        self.info_ = info

    def _coordinate(self, penalty: np.ndarray) -> np.ndarray:
        """The index's last coordinate of documents of penalties ``penalty`` (``log Z_q + log Z_g``), float32:
        ``-(penalty - shift_) / scale``, so that a query's ``[q, 1]`` scores ``cos - (penalty - shift_) / scale``."""
        with np.errstate(over="ignore", invalid="ignore"):
            return (-(penalty - self.shift_) / self.scale).astype(np.float32)

    def _call(self, state: State) -> State:
        enc = self.encoder  # (the index's last coordinate is the penalty's)
        q = unit_rows(query_vectors(state, enc, who=encoder_label(self.name, self.params.model, enc, "encode_queries"),
                                    width=self.index_.d_in - 1))
        n_q, d = q.shape
        aug = np.ones((n_q, d + 1), np.float32)
        aug[:, :d] = q
        k = min(self.k_for(state), max(self.index_.n_alive, 1))  # never more rows than documents: k is user input
        rows, ip = self.index_.search(aug, k, self.filter_mask(state))
        has_direction = np.any(q != 0, axis=1)
        valid = (rows >= 0) & has_direction[:, None]  # a blank query (zero vector) finds nothing, as with dense
        score = np.where(valid, ip.astype(np.float64) * self.scale - self.shift_, -np.inf).astype(np.float32)
        at = np.where(valid, rows, 0)
        if len(self.log_z_q_):  # ip = cos + the stored coordinate -(c - shift) / scale, rounded as it was stored
            cos = np.where(valid, ip - self._coordinate(self.log_z_q_[at] + self.log_z_g_[at]), 0)
        else:
            cos = np.zeros(rows.shape, np.float32)
        out = state.copy()
        out.rankings = [Ranking(r[f], s[f], {"cosine": c[f]}) for r, s, c, f in zip(rows, score, cos, valid)]
        return out

    def _save(self, folder: Path) -> None:
        self.index_.save(folder, prefix="index")
        save_arrays(folder, dbnorm_log_z_q=self.log_z_q_, dbnorm_log_z_g=self.log_z_g_)
        write_json(folder / "dbnorm.json", self.info_)
        save_encoder_key(folder, self.encoder)

    def _load(self, folder: Path, mmap: bool = False) -> None:
        check_encoder_key(folder, self.encoder, self.name, self.params.model)
        # the index's CRC32s only where the load's SHA-256 did not read every file (as dense)
        self.index_ = VectorIndex.load(folder, prefix="index", mmap=mmap, verify=not self._verified)
        self.log_z_q_ = load_array(folder, "dbnorm_log_z_q", mmap=mmap)
        self.log_z_g_ = load_array(folder, "dbnorm_log_z_g", mmap=mmap)
        n = len(self.corpus_)
        for name, got in (("index", self.index_.n_slots), ("dbnorm_log_z_q", len(self.log_z_q_)),
                          ("dbnorm_log_z_g", len(self.log_z_g_))):
            if got != n:
                raise ArtifactError(f"{folder}: {name} has {got} entries for a corpus of {n} documents")
        cfg = self.index_.config()
        if (cfg["metric"], cfg["dtype"], cfg["search"]) != ("ip", "f32", "exact"):
            raise ArtifactError(f"{folder}: the index is {cfg['dtype']} {cfg['metric']} {cfg['search']}, not the exact "
                                f"f32 inner-product index dbnorm_dense writes")
        self.info_ = read_info(folder / "dbnorm.json")
        self.shift_ = float(self.info_.get("penalty_shift", 0.0))  # saves before it stored the penalties uncentred
