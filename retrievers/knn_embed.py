"""kNN-Embed: a query as a smoothed mixture over corpus clusters, each component retrieving its share.

El-Kishky, Markovich, Leung, Portman, Haghighi, Xiao, "kNN-Embed: Locally Smoothed Embedding Mixtures
for Multi-interest Candidate Retrieval", PAKDD 2023, arXiv:2205.06205.  Adapted from users/items to
queries/documents as specified in ``shared/design/ALGORITHMS.md`` section 4, including its
"Refinements for ragkit" (anchor share, single-intent collapse, component query restricted to its
cluster, score / Sainte-Laguë interleave merge).

Everything is exact numpy search over normalised embeddings (cosine = inner product).  The hot path
is batched: one ``(n_q, N)`` score matrix per batch, then one gathered top-k over the cluster columns of
every (query, component) pair at once (in memory-bounded chunks); the default ``gather`` search has no
Python loop over queries or clusters (the ``masked`` / ``partitioned`` search modes and ``rocchio_filter``
component queries run one vectorised step per used cluster).

A metadata filter (the ``filter`` parameter and run-time option) masks the batch's score matrix: a
filtered query is answered as if the corpus held only the passing documents, with the same clusters
(neighbours, priors and component eligibility count passing documents only), and still gets
``min(k, passing)`` results.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

import numpy as np
from pydantic import Field, model_validator

from ragkit._cpus import thread_count
from ragkit._saves import load_array, read_json, save_arrays, write_json
from ragkit._topk import desc_order, topk_rows
from ragkit.encoders import DEFAULT_MODEL, Encoder, check_encoder_key, query_vectors, save_encoder_key, unit_rows
from ragkit.encoders.sentence import encode_documents, encoder_label, given_document_vectors
from ragkit.errors import ArtifactError, DataError, ParamError
from ragkit.operator import Operator, edited_during_search, is_prefix, restored_on_failure, searched_ids
from ragkit.options import filter_option
from ragkit.params import FieldRefusal, MetadataFilter, ModelName, Params, Seed, update_params
from ragkit.registry import register
from ragkit.retrievers._index import RowBuffer, check_finite_vectors
from ragkit.types import Corpus, Ranking, State, TrainSet

if TYPE_CHECKING:
    from ragkit.retrievers.dense import Dense

__all__ = ["KnnEmbed", "KnnEmbedParams", "default_n_clusters", "largest_remainder"]

_log = logging.getLogger("ragkit")


#: padded cells per chunk of the vectorised in-cluster search (pairs x largest cluster in the chunk)
GATHER_ELEMS = 8_000_000
#: score cells (queries x documents) per chunk of a query batch (SciFact: 771 queries, a whole test split)
SCORE_CELLS = 4_000_000


def default_n_clusters(n_docs: int) -> int:
    """``clamp(round(sqrt(N / 2)), 4, 1024)``, never more than ``N``."""
    return int(min(max(n_docs, 1), min(max(round(math.sqrt(n_docs / 2)), 4), 1024)))


def _anchor_slots(share: float, k: int) -> int:
    """The anchor's (plain dense) slots of ``k``: ``share * k`` rounded half up, the product first rounded to 9
    decimals, so that a half that float arithmetic lands just below still rounds up (0.35 * 90 is
    31.499999999999996 in floats: 32 slots, not 31)."""
    return int(math.floor(round(share * k, 9) + 0.5))


class KnnEmbedParams(Params):
    model: ModelName = Field(default=DEFAULT_MODEL,
                             description="Sentence-transformers model name or folder (the dense encoder).")
    k: int = Field(
        default=100,
        ge=1, description="Results per query, and the budget the anchor and the components share: "
                          "anchor_share * k dense slots (rounded half up), the rest to the components.  With merge: "
                          "score the anchor's results (the best cosines) come first, so a top-k shorter than "
                          "anchor_share * k (a search's k=10 over k=100) is plain dense; for a top-k shorter "
                          "than k set k to it, or use merge: interleave, whose first slots are diversified.")
    filter: MetadataFilter = Field(default=None, description="Metadata filter {field: value or [values]}.")
    n_clusters: int | None = Field(
        default=None, ge=2, description="k-means clusters C; None = clamp(round(sqrt(N/2)), 4, 1024), at most N.")
    n_init: int = Field(default=3, ge=1, le=1000, description="k-means restarts (scikit-learn n_init).")
    seed: Seed = Field(default=0, description="k-means random seed.")
    fit_threads: int | None = Field(
        default=1,
        ge=-1, description="Threads for k-means (OpenMP/BLAS); 0 or -1 = all cores (the CPUs this process may "
                          "use); None = library default.  1 is ~10x faster than 2 on a shared, oversubscribed "
                          "machine.  Other thread counts give the same labels (measured: 1 vs 2 threads), with "
                          "centroids equal only to float rounding, not bit for bit.")
    min_cluster_size: int = Field(
        default=5, ge=1, description="Clusters with fewer documents are never a mixture component "
                                     "(they still serve the anchor).")
    n_neighbors: int = Field(default=20, ge=1, description="m: pseudo-relevant top documents that vote for clusters.")
    tau: float | None = Field(
        default=0.05, gt=0, description="Neighbour weight temperature in cosine units, w_j = exp((s_j - s_1)/tau); "
                                         "None = uniform counts.")
    alpha: float = Field(default=1.0, ge=0, description="Prior strength in pseudo-documents (additive smoothing).")
    prior: Literal["global", "local"] = Field(
        default="global",
        description="global: cluster sizes / N; local: cluster histogram of the dense top local_depth.")
    local_depth: int = Field(default=100, ge=1, description="M_local: depth of the dense pass used by prior='local'.")
    weight_floor: float = Field(default=0.05,
                                ge=0, lt=1, description="Components with smoothed weight below this are dropped.")
    max_components: int = Field(default=4, ge=1, description="At most this many mixture components per query (1 is "
                                                             "refused: every query would collapse).")
    collapse_at: float = Field(
        default=0.85,
        gt=0, le=1, description="If the top component's (renormalised) weight is >= this, or only one component "
                                "survives, the query is answered as plain dense top-k.  1.0 = collapse only "
                                "single-component queries; at most 1 / max_components is refused (every query "
                                "would collapse).")
    anchor_share: float = Field(
        default=0.5,
        ge=0, le=1, description="Share of the k slots kept for plain unrestricted dense results (1.0 = dense).")
    component_query: Literal["filter", "rocchio_filter"] = Field(
        default="filter",
        description="filter: the query itself searched inside the cluster; rocchio_filter: "
                    "normalise(q + rocchio_lambda * mean of the query's top-m docs in the cluster), inside "
                    "the cluster (ranking only; returned scores stay q.d).")
    rocchio_lambda: float = Field(
        default=0.5, ge=0, description="Weight of the Rocchio shift (component_query='rocchio_filter').")
    merge: Literal["score", "interleave"] = Field(
        default="score",
        description="score: union sorted by cosine; interleave: Sainte-Laguë order over the anchor and "
                    "components (diversity in the first slots), with the weights of their slot shares: "
                    "anchor_share for the anchor, (1 - anchor_share) * pi(c) for a component (the spec "
                    "weighs a component by pi(c) alone, which gives the anchor fewer early slots than "
                    "its share); its scores are then rank scores (k - i) / k and the cosine is in "
                    "fields['cosine'] (so dbnorm and cosine_adapter, which read cosines, refuse to follow "
                    "it).")
    search: Literal["auto", "gather", "masked", "partitioned"] = Field(
        default="auto",
        description="In-cluster search: gather = the cluster's columns of the batch's exact score matrix; "
                    "masked = full score rows masked to the cluster; partitioned = per-cluster contiguous "
                    "sub-matrices (the analogue of per-cluster sub-indexes); auto = gather (measured fastest, "
                    "bench/diversity.py; rocchio_filter always scores per cluster).")

    @model_validator(mode="after")
    def _check(self) -> "KnnEmbedParams":
        if self.prior == "local" and self.local_depth < self.n_neighbors:
            raise FieldRefusal(self.given("local_depth", "n_neighbors"),
                f"local_depth ({self.local_depth}) must be >= n_neighbors ({self.n_neighbors}): the local prior is "
                f"read from a dense pass at least as deep as the neighbourhood")
        if self.max_components == 1:
            raise FieldRefusal(self.given("max_components"),
                "max_components 1 keeps one component, and a query with one component is answered as plain dense "
                "top-k: every query would be answered as plain dense.  Use max_components 2 or more to mix clusters "
                "(or the dense retriever for plain dense results)")
        if self.collapse_at <= 1 / self.max_components + 1e-12:  # (the tolerance mixture compares with)
            raise FieldRefusal(self.given("collapse_at", "max_components"),
                f"collapse_at ({self.collapse_at}) must be above 1 / max_components (1/{self.max_components} = "
                f"{1 / self.max_components:.4g}): the kept weights are renormalised to sum to 1, so the top one is "
                f"at least 1/{self.max_components}, and every query would be answered as plain dense.  Raise "
                f"collapse_at (1.0 collapses only single-component queries) or max_components")
        self.refuse_unused(("local_depth", self.prior == "local", "prior: local"),
                           ("rocchio_lambda", self.component_query == "rocchio_filter",
                            "component_query: rocchio_filter"))
        return self


def largest_remainder(weights: np.ndarray, total: np.ndarray | int, active: np.ndarray | None = None) -> np.ndarray:
    """Integer quotas per row summing to ``total`` with every active entry >= 1 (when ``total`` allows).

    Parameters
    ----------
    weights : (n, M) float, rows sum to 1 over the active entries (ordered by weight desc, ties by id).
    total : int or (n,) int, slots to share per row.
    active : (n, M) bool, entries that may receive slots (default ``weights > 0``).

    Returns
    -------
    (n, M) int64 quotas.  Integer parts first, leftover slots by largest fractional remainder, then
    every active entry is raised to 1 by taking slots from the largest quotas.  When ``total`` is
    smaller than the number of active entries, the first ``total`` entries get one.

    Notes
    -----
    Equal remainders go to the earlier column, not the lower cluster id (``ALGORITHMS.md`` section 4
    says "ties by cluster id").  :meth:`KnnEmbed.mixture` orders the columns by weight descending,
    ties by cluster id ascending, so the earlier column is the heavier component, and among equal
    weights the lower cluster id, which is where the spec's rule applies.  Two components with
    different weights can only tie on their remainder by chance (``0.35 * 10`` and ``0.15 * 10``);
    the slot then goes to the heavier one, which keeps quotas ordered as their weights are.
    """
    w = np.asarray(weights, dtype=np.float64)
    n, m = w.shape
    act = (w > 0) if active is None else np.asarray(active, bool)
    tot = np.broadcast_to(np.asarray(total, np.int64), (n,)).copy()
    w = np.where(act, w, 0.0)
    wsum = w.sum(1, keepdims=True)
    w = np.divide(w, wsum, out=np.zeros_like(w), where=wsum > 0)
    raw = w * tot[:, None]
    q = np.floor(raw + 1e-9).astype(np.int64)
    frac = np.where(act, raw - q, -1.0)
    left = tot - q.sum(1)
    order = np.lexsort((np.broadcast_to(np.arange(m), (n, m)), -frac), axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(m)[None, :].repeat(n, 0), axis=1)
    q += (rank < left[:, None]) & act
    # every active component gets at least one slot (as far as the total allows)
    n_act = act.sum(1)
    few = tot < n_act
    if few.any():  # not enough slots: one each to the first `tot` active columns
        cum = np.cumsum(act, axis=1)
        q[few] = (act & (cum <= tot[:, None]))[few].astype(np.int64)
    need = act & (q == 0) & ~few[:, None]
    for _ in range(m):  # at most M rounds, each moves one slot per row (vectorised over rows)
        if not need.any():
            break
        rows = np.flatnonzero(need.any(1))
        give = np.argmax(np.where(need[rows], 1, 0), axis=1)
        take = np.argmax(np.where(act[rows], q[rows], -1), axis=1)
        q[rows, give] += 1
        q[rows, take] -= 1
        need = act & (q == 0) & ~few[:, None]
    return q


class _KnnView(NamedTuple):
    """What a search reads of a fitted KnnEmbed, published in one assignment (``_view``) by every edit once it is
    done (fit, add, remove, load): the corpus, the unit document vectors, their cluster labels, the blank documents
    (None: none), and the per-cluster structures built from the labels (:meth:`KnnEmbed._build`).  References
    only, never changed once published: an edit publishes a new view, so a search that took this one answers from
    it whole, whatever an edit on another thread does meanwhile."""

    corpus: Corpus
    vectors: np.ndarray  # (N, d) unit rows
    labels: np.ndarray  # (N,) int32
    blank: np.ndarray | None  # (N,) bool, None: no blank document
    order: np.ndarray  # (N,) int64 documents grouped by cluster, ascending id inside each
    starts: np.ndarray  # (C + 1,) int64 each cluster's first position in order
    members: list[np.ndarray]  # views into order, one per cluster
    sizes: np.ndarray  # (C,) documents per cluster


def _topk_var(scores: np.ndarray, need: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-``need[i]`` of ``scores`` (n, w), as :func:`topk_rows` padded to ``need.max()`` columns.

    Rows needing one result take an ``argmax`` (ties: lowest column, as ``topk_rows``), several times
    cheaper than a partition; the rest share one :func:`topk_rows` call.  Columns past a row's need
    hold ``-inf`` scores.
    """
    width = min(int(need.max()), scores.shape[1])
    rows = np.zeros((len(scores), width), np.int64)
    sc = np.full((len(scores), width), -np.inf, np.float32)
    one = need <= 1
    if one.any():
        s1 = scores[one]
        best = np.argmax(s1, axis=1)
        rows[one, 0] = best
        sc[one, 0] = s1[np.arange(len(best)), best]
    if not one.all():
        r, s_ = topk_rows(scores[~one], width)
        rows[~one, :r.shape[1]], sc[~one, :r.shape[1]] = r, s_
    return rows, sc


@register
class KnnEmbed(Operator):
    """kNN-Embed multi-interest retriever: a query becomes a smoothed mixture of corpus clusters.

    At fit, the documents' dense vectors (the ``dense`` encoder's cache) are clustered with
    scikit-learn k-means (``n_init`` restarts, seeded); labels and renormalised centroids are
    stored with the index.  Per query (all batched):

    1. dense pass ``s = E q``; the top ``n_neighbors`` documents vote for their clusters with
       weights ``w_j = exp((s_j - s_1) / tau)``;
    2. smoothing ``pi(c) = (n(c) + alpha * prior(c)) / (W + alpha)`` (``prior`` global sizes or the
       local histogram of the dense top ``local_depth``);
    3. keep at most ``max_components`` clusters with ``pi >= weight_floor`` (renormalised);
       a query with one component or a top weight ``>= collapse_at`` returns plain dense top-k;
    4. ``anchor_share * k`` slots, rounded half up, go to the dense top results; the rest are shared by
       largest-remainder quotas, each component searching only inside its cluster, excluding
       documents already taken; shortfalls go to the components' other documents, then to dense;
    5. merge by cosine (``merge="score"``) or in Sainte-Laguë order (``merge="interleave"``).

    The slots are shared over this operator's ``k`` (raised to a search's ``k``, as every retriever's),
    not over the top a search keeps: with ``merge="score"`` the anchor's dense results have the best
    cosines and come first, so a search with ``k <= anchor_share * self.k`` (``search(k=10)`` over the
    default ``k=100``) gets plain dense results (a warning says so, once per operator object).  For a
    diversified top-k shorter than ``k``, set ``k`` to it (``KnnEmbed(k=10)``, or the search option
    ``knn_embed={"k": 10}``), or use ``merge="interleave"``, whose first slots are diversified.

    :meth:`add` and :meth:`remove` edit the index without a refit: an added document joins the cluster of its
    nearest fitted centroid (the centroids stay), a removed one leaves its cluster.

    Output rankings carry ``scores`` = cosine ``q . d`` (float32) and ``fields["cluster"]``
    (int32 cluster of each document) and ``fields["component"]`` (-1 = anchor/dense, else the
    index of the mixture component, 0 = heaviest).  Exactly ``min(k, N)`` distinct documents; with a
    metadata filter (the ``filter`` parameter or run-time option) ``min(k, passing)`` distinct passing
    documents, the mixture read from the passing documents only.

    Attributes (after fit)
    ----------------------
    vectors_ : (N, d) float32 unit document vectors
    labels_ : (N,) int32 cluster of each document
    centroids_ : (C, d) float32 unit centroids

    References
    ----------
    El-Kishky et al., "kNN-Embed: Locally Smoothed Embedding Mixtures for Multi-interest
    Candidate Retrieval", PAKDD 2023, arXiv:2205.06205.

    Examples
    --------
    >>> from ragkit.retrievers.knn_embed import KnnEmbed
    >>> KnnEmbed(k=10, anchor_share=0.25)
    KnnEmbed(k=10, anchor_share=0.25)
    """

    uses_torch: ClassVar[bool] = False  # (numpy only at search: fit and load need not import torch)

    name = "knn_embed"
    kind = "retriever"
    applies_filter = True  # (_call searches only the rows filter_mask allows)
    Params = KnnEmbedParams
    params: KnnEmbedParams
    example = {"k": 10, "n_clusters": 8, "n_init": 1, "collapse_at": 1.0, "weight_floor": 0.03}

    vectors_: np.ndarray  # (N, d) float32 unit document vectors (memory-mapped after load(mmap=True))
    labels_: np.ndarray  # (N,) int32 cluster of each document
    centroids_: np.ndarray  # (C, d) float32 unit centroids
    #: the published view's per-cluster contiguous vectors (search: partitioned), built on first use: (view, parts)
    _parts: tuple[_KnnView, list[np.ndarray]] | None = None
    #: fitted with :meth:`fit_vectors` (vectors of a space no encoder of this retriever gives; saved with it): an
    #: ``add`` must give its documents' vectors too
    _vectors_given: bool = False

    # ------------------------------------------------------------------ fit
    @property
    def dense(self) -> Dense:
        """The plain :class:`~ragkit.retrievers.dense.Dense` whose encoder this retriever shares."""
        from ragkit.retrievers.dense import Dense

        d = self.__dict__.get("_dense")
        if d is None:
            d = self.__dict__["_dense"] = Dense(k=self.params.k, model=self.params.model)
        return d

    @property
    def encoder(self) -> Encoder:
        """The ``dense`` encoder (:attr:`Dense.encoder <ragkit.retrievers.dense.Dense.encoder>`), which encodes
        this retriever's documents and queries."""
        return self.dense.encoder

    def _encode_docs(self, corpus: Corpus) -> np.ndarray:
        """The vectors of ``corpus``'s documents by the ``dense`` encoder (fit, ``add``; what a LangChain
        retriever's add encodes ahead of its edit, handed to ``add(vectors=...)``).  Checked: one 2-D float row per
        document, else a DataError naming the encoder."""
        enc = self.dense.encoder
        return encode_documents(enc, corpus.full_texts, encoder_label(self.name, self.params.model, enc, "encode"))

    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        self._fit_vectors(self._encode_docs(corpus))
        self._vectors_given = False

    def fit_vectors(self, corpus: Corpus, vectors: np.ndarray) -> "KnnEmbed":
        """Fit on precomputed document vectors ``(len(corpus), d)`` instead of encoding the corpus.

        Rows are L2-normalised here (kNN-Embed works in cosine geometry).

        Queries must then carry vectors of the same space in ``state.vectors[self.dense.encoder.key]``.
        The ``filter`` parameter is checked against the corpus's metadata fields, as ``fit`` checks it.
        """
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) != len(corpus):
            raise DataError(f"knn_embed.fit_vectors: vectors have shape {vectors.shape}, expected "
                            f"({len(corpus)}, d) for a corpus of {len(corpus)} documents")
        if self.params.filter is not None:  # as Operator.fit: a field the corpus lacks would fail every search
            try:
                filter_option(self, self.params.filter, corpus)
            except (TypeError, ValueError) as e:
                raise ParamError(f"{self.name}.filter: {e}", path=f"{self.name}.filter") from None
        with restored_on_failure([self]):  # (refused vectors leave the earlier fit whole, as Operator.fit does)
            self.corpus_ = corpus
            self._fit_vectors(vectors)
            self._vectors_given = True  # (an add must give vectors of this space too)
        return self

    def _fit_vectors(self, vecs: np.ndarray) -> None:
        from ragkit.retrievers.centroids import spherical_kmeans

        vecs = unit_rows(vecs)  # cosine geometry, whatever the encoder returned
        if vecs.ndim == 2:
            check_finite_vectors(vecs, "knn_embed.fit", "document")
        n = len(vecs)
        if n == 0:
            raise DataError("knn_embed.fit: the corpus is empty; expected at least one document")
        self.vectors_ = vecs
        self._find_blank(n)
        blank = self.__dict__.get("_blank")
        # k-means runs on the documents that can be found: the blank ones (never found, all one vector, the model's
        # bias direction) took a cluster of their own and merged two topics; they are labelled with their nearest
        # centroid afterwards (a label they never use: they neither vote nor count)
        rows = None if blank is None else np.flatnonzero(~blank)
        x = vecs if rows is None else vecs[rows]
        n_fit = len(x)
        if n_fit == 0:  # every document is blank: nothing is ever found, one cluster holds them
            _log.warning(f"knn_embed.fit: all {n} documents are blank (empty, whitespace or invisible characters "
                         "only), which are never found: every search returns nothing")
            cent = unit_rows(vecs.mean(axis=0, keepdims=True)).astype(np.float32)
            self.labels_ = np.zeros(n, np.int32)
            self.centroids_ = cent
            self._build()
            return
        c = min(self.params.n_clusters or default_n_clusters(n_fit), n_fit)
        if self.params.n_clusters is not None and self.params.n_clusters > n_fit:
            what = f"{n_fit} document{'s' * (n_fit != 1)}" + (f" that are not blank (of {n})" if rows is not None
                                                                else "")
            _log.warning(f"knn_embed.fit: n_clusters={self.params.n_clusters} but the corpus has {what}; using "
                         f"{c} cluster{'s' * (c != 1)} (one per document)")
        threads = self.params.fit_threads  # None: the library's own default
        if threads is not None:
            threads = thread_count(threads)  # (0 or -1: the CPUs this process may use)
        # (clusters k-means could not fill, duplicate documents: said there, in ragkit's words)
        cent, labels = spherical_kmeans(x, c, seed=self.params.seed, n_init=self.params.n_init, threads=threads,
                                        where="knn_embed.fit", what="document vectors")
        if rows is not None:
            fitted, labels = labels, np.argmax(vecs @ cent.T, axis=1).astype(np.int32)
            labels[rows] = fitted
        self.labels_ = labels
        self.centroids_ = cent
        self._build()
        self._warn_degenerate()

    def _warn_degenerate(self) -> None:
        """Warn (``ragkit`` logger) when the clustering leaves kNN-Embed little to mix (clusters k-means could
        not fill, duplicate documents, are said by :func:`~ragkit.retrievers.centroids.spherical_kmeans`):
        fewer than 2 clusters of ``min_cluster_size`` documents (every query
        is then answered as plain dense), or such clusters holding under half of the documents (most queries'
        neighbours then vote for clusters that are never a component, and those queries collapse to dense)."""
        p = self.params
        sizes = self._found(None, self._fitted_view())[1]  # (the blank documents are in no cluster's count)
        n, c = int(sizes.sum()), len(sizes)
        used = int(np.count_nonzero(sizes))
        if n == 1:  # (one document: no clusters to speak of)
            _log.warning("knn_embed.fit: the corpus has one document, so there is nothing to mix: every query is "
                         "answered as plain dense")
            return
        big = sizes >= p.min_cluster_size
        n_big, share = int(big.sum()), float(sizes[big].sum() / max(n, 1))
        if n_big < 2 or share < 0.5:
            what = ("no query can mix two clusters: every query is answered as plain dense top-k" if n_big < 2 else
                    f"they hold {share:.0%} of the {n} documents, so most queries are answered as plain dense "
                    "top-k")
            if used < 2:
                hint = "The documents are all alike: there is nothing to mix"
            elif n < 2 * p.min_cluster_size:
                hint = f"To mix, lower min_cluster_size (two clusters of the {n} documents need it at most {n // 2})"
            elif n // (2 * p.min_cluster_size) < 2:  # fewer clusters would mean n_clusters < 2, which is refused
                hint = (f"To mix, lower min_cluster_size (~{max(1, n // (2 * c))} or less for the {c} clusters of the "
                        f"{n} documents)")
            else:
                hint = (f"To mix, use fewer clusters (n_clusters at most ~{n // (2 * p.min_cluster_size)} here) "
                        "or a lower min_cluster_size")
            _log.warning(f"knn_embed.fit: clusters of at least min_cluster_size ({p.min_cluster_size}) documents, "
                         f"the only possible mixture components: {n_big} of {c}; {what}.  {hint}")

    def _find_blank(self, n: int | None = None) -> None:
        """The blank documents (:meth:`_unfound`), read from the corpus (:attr:`Corpus.blank
        <ragkit.types.Corpus.blank>`: a title and a text both blank, worked out once per corpus without joining a
        copy of every document, 1.5 GB at 1M SciFact-sized documents).  Saved at fit (``blank.npy``, their rows);
        a load of a save without it (written before blank documents were left out) finds them here.  ``n``: the
        number of documents (default ``len(labels_)``)."""
        corpus = self.__dict__.get("corpus_")
        blank = corpus.blank if corpus is not None else None
        n = len(self.labels_) if n is None else n
        self._blank = blank if blank is not None and blank.any() and len(blank) == n else None

    def _build(self) -> None:
        """Derived per-cluster structures (not saved; rebuilt from labels), published with the corpus, vectors,
        labels and blank documents as the view searches read (:class:`_KnnView`), in one assignment, last."""
        c = len(self.centroids_)
        labels = np.asarray(self.labels_)
        order = np.argsort(labels, kind="stable").astype(np.int64)  # grouped by cluster, ascending id inside each
        sizes = np.bincount(labels, minlength=c)
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        members = [order[starts[i]:starts[i + 1]] for i in range(c)]  # views into order
        corpus: Any = self.__dict__.get("corpus_")  # (set before: fit, fit_vectors, load, an edit's copy)
        self._view = _KnnView(corpus, self.vectors_, labels, self.__dict__.get("_blank"), order, starts, members,
                              sizes)
        self.__dict__.pop("_parts", None)  # (the earlier view's per-cluster copies: a search still on it rebuilds them)
        buffer = self.__dict__.get("_rows")
        if buffer is not None:
            buffer.keep_only(self.vectors_)

    def _search_view(self) -> _KnnView | None:
        """The state searches read (:class:`_KnnView`, published by each edit; built from the attributes for an
        object pickled before views were published), ``None`` unfitted."""
        view = self.__dict__.get("_view")
        if view is None and "labels_" in self.__dict__ and "centroids_" in self.__dict__:
            self._build()
            view = self._view
        return view

    def _fitted_view(self) -> _KnnView:
        """:meth:`_search_view` of a fitted operator (the one published now)."""
        view = self._search_view()
        assert view is not None  # (fitted: checked by the callers)
        return view

    def _part(self, view: _KnnView, c: int) -> np.ndarray:
        """Cluster ``c``'s vectors of ``view``, contiguous: every cluster's copied on first use (search:
        partitioned), kept for that view only (``_parts``: an edit publishes another view, whose parts are
        built afresh)."""
        cached = self.__dict__.get("_parts")
        if cached is None or cached[0] is not view:
            v = np.asarray(view.vectors)
            cached = (view, [np.ascontiguousarray(v[m]) for m in view.members])
            self._parts = cached
        return cached[1][c]

    def _unfound(self, mask: np.ndarray | None, blank: np.ndarray | None) -> np.ndarray | None:
        """``mask`` (a filter's passing documents, None: all) less the blank documents (empty, whitespace or
        invisible characters only, title and text: :attr:`Corpus.blank <ragkit.types.Corpus.blank>`), which are
        never found, as a blank query finds nothing (they encode to the model's bias direction, which short
        queries are near); they are left out as a filter leaves documents out (neither voting nor counted in a
        prior, a component or the results), and of the clustering too: k-means runs on the other documents and
        labels them with their nearest centroid afterwards.  ``blank``: a view's blank documents (None: none).
        None when both are none."""
        if blank is None:
            return mask
        return ~blank if mask is None else mask & ~blank

    _CLUSTERING = ("model", "n_clusters", "n_init", "seed")

    def with_params(self, **changes: Any) -> "KnnEmbed":
        """A copy with query-time parameters changed, sharing this fitted clustering (no refit).

        ``changes``: parameter name -> new value, as the constructor takes them (``k=50``,
        ``anchor_share=0.5``, ``tau=0.1``...).  The copy is fitted: it shares this operator's corpus, document
        vectors, labels and centroids (not copied); this operator is left unchanged.  Needs a fitted operator.

        Changing ``model``, ``n_clusters``, ``n_init`` or ``seed`` needs a new ``fit``: refused (``n_clusters``
        equal to the count a fit with ``n_clusters=None`` chose is no change).  A value
        or key the constructor refuses is the same :class:`~ragkit.errors.ParamError`
        (``knn_embed.anchor_share: expected a value <= 1.0, got 3``, an unknown key with the closest names).
        """
        fitted = self.__dict__.get("centroids_")
        same = {f: getattr(self.params, f) for f in self._CLUSTERING}
        if same["n_clusters"] is None and fitted is not None:  # (the default: the count the fit chose is the same)
            same["n_clusters"] = len(fitted)
        bad = [f for f in changes if f in self._CLUSTERING and changes[f] != same[f]
               and not (f == "n_clusters" and changes[f] is None and self.params.n_clusters is None)]
        if bad:
            given = ", ".join(f"{f}={changes[f]!r}, fitted with {same[f]!r}" for f in bad)
            raise ParamError(f"knn_embed.with_params: {bad} change the clustering ({given}); build a new KnnEmbed "
                             "and fit it")
        new = type(self)(update_params(self.params, changes, self.name))
        self._check_fitted()
        for key in ("corpus_", "vectors_", "labels_", "centroids_", "_view", "_blank", "_vectors_given"):
            if key in self.__dict__:
                new.__dict__[key] = self.__dict__[key]
        new.__dict__["_parts"] = self.__dict__.get("_parts")  # (keyed by the view, which the copy shares)
        return new

    # ------------------------------------------------------------------ mixture
    def mixture(self, q: np.ndarray, s: np.ndarray | None = None,
                top: tuple[np.ndarray, np.ndarray] | None = None,
                sizes: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The per-query cluster mixture, batched.

        Parameters
        ----------
        q : (n_q, d) query vectors, or one query as (d,) (read as (1, d): the results have one row).
            Without ``s`` each row is scaled to unit length first, as a search does (``tau`` is in cosine
            units, so ``3 * q`` gives the mixture of ``q``; a zero row scores 0 everywhere), and scored in
            chunks of queries as a search scores them (at most ``SCORE_CELLS`` score cells at once).
        s : optional (n_q, N) scores ``q @ E.T`` of unit rows ``q`` (``q`` then gives only ``n_q``); ``-inf``
            marks documents filtered out, which neither vote nor count in the local prior.  The blank documents,
            which are never found, are set to ``-inf`` in a copy where ``s`` scores them.  Another shape is a
            :class:`~ragkit.errors.DataError`.
        top : optional ``topk_rows(s, depth)`` already computed, ``depth >= n_neighbors``
            (``>= local_depth`` for ``prior="local"``; at most N), read only with ``s``; a shallower or
            misshapen one is a :class:`~ragkit.errors.DataError` (fewer neighbours would vote).
        sizes : optional (C,) documents per cluster that may be returned (a filter's passing
            documents); the global prior and ``min_cluster_size`` use them (default: all but the blank ones).

        Returns
        -------
        dict with ``pi`` (n_q, C) smoothed mixture (rows sum to 1), ``clusters`` (n_q, M) int64
        kept clusters by weight (-1 = none), ``weights`` (n_q, M) renormalised weights (rows sum
        to 1, except a row of zeros when no eligible cluster reaches ``weight_floor``: its clusters are
        all -1 and the query is collapsed, answered as plain dense), ``collapsed`` (n_q,) bool (fewer than
        2 kept clusters, or the first weighing at least ``collapse_at``), ``top_rows`` / ``top_scores`` the
        dense top documents read.
        """
        self._check_fitted()
        view = self._fitted_view()  # (one state read whole: an edit on another thread publishes another)
        n = len(view.labels)
        mask, found = self._found(None, view)  # (the blank documents: never found, they neither vote nor count)
        sizes = found if sizes is None else np.asarray(sizes)
        if sizes.shape != view.sizes.shape:
            raise DataError(f"knn_embed.mixture: sizes has shape {sizes.shape}, expected {view.sizes.shape}: "
                            "the documents per cluster")
        if s is not None:
            n_q = len(np.atleast_2d(np.asarray(q)))
            s = np.asarray(s)
            if s.shape != (n_q, n):
                raise DataError(f"knn_embed.mixture: s has shape {s.shape}, expected ({n_q}, {n}): the scores of the "
                                f"{n_q} quer{'y' if n_q == 1 else 'ies'} against the {n} fitted documents")
            if mask is not None and np.isfinite(s[:, ~mask]).any():  # blank documents scored: they are never found
                s = s.copy()
                s[:, ~mask] = -np.inf
                top = None  # (read from the scores as given: recomputed without the blank documents)
            if top is not None:
                self._check_top(top, n_q, n)
            return self._mixture(s, top, sizes, view.labels)
        v = np.asarray(view.vectors)
        q = unit_rows(np.atleast_2d(q))  # cosine geometry, as _call reads the query vectors
        if q.ndim != 2 or q.shape[1] != v.shape[1]:
            raise DataError(f"knn_embed.mixture: query vectors have shape {np.shape(q)}, expected (n_q, "
                            f"{v.shape[1]}) or ({v.shape[1]},)")
        check_finite_vectors(q, "knn_embed.mixture", "query")
        # in chunks of queries, as _call scores them: the whole (n_q, N) matrix was 1.2 GB at 300 x 1M
        step = max(1, SCORE_CELLS // max(n, 1))
        parts = []
        for a in range(0, max(len(q), 1), step):
            sc = q[a:a + step] @ v.T
            if mask is not None:
                sc[:, ~mask] = -np.inf
            parts.append(self._mixture(sc, None, sizes, view.labels))
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    def _depth(self, n: int) -> int:
        """How many dense top documents the mixture reads: ``n_neighbors`` (``local_depth`` too for
        ``prior="local"``), at most the ``n`` documents."""
        p = self.params
        return min(max(p.n_neighbors, p.local_depth if p.prior == "local" else 0), n)

    def _check_top(self, top: Any, n_q: int, n: int) -> None:
        """A ``top`` given to :meth:`mixture`: two ``(n_q, depth)`` arrays, ``depth`` at least :meth:`_depth`."""
        need = self._depth(n)
        shapes = [np.shape(t) for t in top] if isinstance(top, (tuple, list)) else None
        if shapes is None or len(shapes) != 2 or any(len(sh) != 2 or sh[0] != n_q for sh in shapes) \
                or shapes[0] != shapes[1] or shapes[0][1] < need:
            what = "prior local: local_depth" if self.params.prior == "local" else "n_neighbors"
            raise DataError(f"knn_embed.mixture: top has shapes {shapes if shapes is not None else type(top).__name__}"
                            f", expected (rows, scores) of shape ({n_q}, depth) with depth >= {need} ({what}, at "
                            f"most the {n} documents): topk_rows(s, {need})")

    def _found(self, filter_mask: np.ndarray | None, view: _KnnView) -> tuple[np.ndarray | None, np.ndarray]:
        """``(mask, sizes)``: the documents of ``view`` that may be found, a filter's ``filter_mask`` (None: all)
        less the blank ones (:meth:`_unfound`; None when every document may), and ``(C,)`` how many of them each
        cluster holds."""
        mask = self._unfound(filter_mask, view.blank)
        if mask is None:
            return None, view.sizes
        return mask, np.bincount(np.asarray(view.labels)[mask], minlength=len(view.sizes))  # (the view's clusters)

    def _mixture(self, s: np.ndarray, top: tuple[np.ndarray, np.ndarray] | None,
                 sizes: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`mixture` of the scores ``s`` (checked, the documents not to be found at ``-inf``) of the
        documents of cluster ``labels``."""
        p = self.params
        n_q, n = s.shape
        c = len(sizes)  # (the clusters of the view searched: a refit meanwhile may have others)
        labels = np.asarray(labels)
        m = min(p.n_neighbors, n)
        rows, sc = top if top is not None else topk_rows(s, self._depth(n))
        r_m, s_m = rows[:, :m], sc[:, :m].astype(np.float64)
        w = np.ones_like(s_m) if p.tau is None else np.exp((s_m - s_m[:, :1]) / p.tau)
        w = np.where(np.isfinite(s_m), w, 0.0)  # filtered-out documents (-inf) do not vote
        qi = np.repeat(np.arange(n_q), m)
        cnt = np.bincount(qi * c + labels[r_m].ravel(), weights=w.ravel(), minlength=n_q * c).reshape(n_q, c)
        big_w = w.sum(1, keepdims=True)
        if p.prior == "global":
            prior = np.broadcast_to(sizes / max(int(sizes.sum()), 1), (n_q, c))
        else:
            d = min(p.local_depth, n)
            qd = np.repeat(np.arange(n_q), d)
            ok = np.isfinite(sc[:, :d])  # the passing documents of the dense top local_depth
            prior = np.bincount(qd * c + labels[rows[:, :d]].ravel(), weights=ok.ravel().astype(np.float64),
                                minlength=n_q * c).reshape(n_q, c) / np.maximum(ok.sum(1, keepdims=True), 1)
        pi = (cnt + p.alpha * prior) / (big_w + p.alpha)
        # component selection: eligible clusters by pi desc (ties by id), >= floor, at most M
        elig = np.where(sizes[None, :] >= p.min_cluster_size, pi, -1.0)
        mm = min(p.max_components, c)
        order = np.argsort(-elig, axis=1, kind="stable")[:, :mm]
        top_w = np.take_along_axis(elig, order, axis=1)
        keep = top_w >= max(p.weight_floor, 1e-12)
        kw = np.where(keep, top_w, 0.0)
        tot = kw.sum(1, keepdims=True)
        kw = np.divide(kw, tot, out=np.zeros_like(kw), where=tot > 0)
        clusters = np.where(keep, order, -1)
        collapsed = (keep.sum(1) <= 1) | (kw[:, 0] >= p.collapse_at - 1e-12)
        return {"pi": pi, "clusters": clusters.astype(np.int64), "weights": kw, "collapsed": collapsed,
                "top_rows": rows, "top_scores": sc}

    # ------------------------------------------------------------------ search
    def _call(self, state: State) -> State:
        out = state.copy()
        if len(state) == 0:
            out.rankings = []
            return out
        # the state searched, taken when the search began (search() pins it before the pipeline reads corpus_), read
        # whole from one view: rows of its corpus, whatever an edit on another thread publishes meanwhile
        view: _KnnView = self.checked_view()
        k = self.k_for(state)
        v = np.asarray(view.vectors)
        n = len(v)
        mask, sizes = self._found(self.filter_mask(state, view.corpus), view)  # (blank documents: never found)
        n_pass = n if mask is None else int(np.count_nonzero(mask))
        k = min(k, n_pass)
        enc = self.dense.encoder
        q = unit_rows(query_vectors(state, enc, who=encoder_label(self.name, self.params.model, enc, "encode_queries"),
                                    width=v.shape[1]))
        check_finite_vectors(q, "knn_embed", "query")
        n_q = len(q)
        self._warn_dense_head(state, k)
        if k == 0:  # nothing passes the filter: empty rankings with the usual fields
            out.rankings = [self._empty_ranking() for _ in range(n_q)]
            return out
        # queries in chunks of at most SCORE_CELLS score cells: each query's answer is its own, and the
        # batch's (n_q, N) score matrix and its same-sized temporaries (top-k indices, a padded copy) were
        # made whole (300 queries x 1M documents: ~6 GB)
        step = max(1, SCORE_CELLS // max(n, 1))
        out.rankings = [r for a in range(0, n_q, step) for r in self._rank(q[a:a + step], view, mask, sizes, k)]
        for i in np.flatnonzero(~q.any(axis=1)):  # no direction: no answer (as dense and BM25 give)
            out.rankings[i] = self._empty_ranking()
        if searched_ids() is None and self.corpus_ is not view.corpus and not is_prefix(view.corpus, self.corpus_.ids):
            # (called on a State: its rows are mapped with corpus_ now, which an edit changed during the search)
            raise edited_during_search(self.name, "its documents changed")
        return out

    def _warn_dense_head(self, state: State, k: int) -> None:
        """Warn once per operator object when the results that matter are all the anchor's, the plain dense
        ones: with ``merge="score"`` the results sorted by cosine start with the anchor's ``anchor_share * k``
        slots (rounded half up), so a search whose final ``k`` (the call's ``k``, this operator's raised to it)
        is at most that returns plain dense results; so does a later reranker or fuser that reads only that many of them
        (a ``top_k`` between: :func:`~ragkit.pipelines._compose.ranked_later`).  Quiet when a later step reads
        more than the anchor's slots (a reranker such as ``mmr`` or a fuser reading the whole ranking): a
        smaller ``k`` would only shrink its pool."""
        from ragkit._flat import first_time_for
        from ragkit.pipelines._compose import ranked_later

        p = self.params
        call_k = state.options.get("k")
        if p.merge != "score" or self.opt(state, "k") is not None:
            return
        k_a = _anchor_slots(p.anchor_share, k)
        read = ranked_later()  # (a later step's cut is there without a call's k: a plain search warns too)
        if read is None and call_k is not None and 0 < int(call_k) <= k_a < k:
            said = (
                f"knn_embed: searched with k={call_k}, but its k is {p.k}: the k={k} results are shared as "
                f"{k_a} dense (anchor_share {p.anchor_share}) and {k - k_a} from the clusters, and with "
                f"merge: score the anchor's come first, so the top {call_k} are plain dense.  For a diversified "
                f"top {call_k} give knn_embed k={call_k} (KnnEmbed(k={call_k}) or the search option "
                f"{self.name}={{'k': {call_k}}}), or use merge: interleave")
        elif read is not None and read <= k_a < k:
            said = (
                f"knn_embed: a later step reorders or fuses only its top {read:.0f} (a top_k before it), but its "
                f"k={k} results are shared as {k_a} dense (anchor_share {p.anchor_share}) and {k - k_a} from "
                f"the clusters, and with merge: score the anchor's come first, so that step reads plain dense "
                f"results.  Give knn_embed k={read:.0f} (or cut less), or use merge: interleave")
        else:
            return
        if first_time_for(self, "_warned_dense_head"):
            _log.warning(said)

    def _note_slots(self, clusters: np.ndarray, k: int, k_a: int) -> None:
        """Say once per operator object, at INFO level (``ragkit`` logger), when a (not collapsed) query keeps
        at least as many components as there are component slots (``k - k_a``): each of the heaviest gets
        one slot and the mixture weights set no quota (largest remainder raises every kept component to one
        slot).  Not a warning: it can be a deliberate setting (``examples/diverse.yaml``'s, tuned on train
        queries), and a warning on every run of it would cry wolf.  ``clusters``: the kept components of the
        searched queries, ``-1`` past them."""
        from ragkit._flat import first_time_for

        p = self.params
        k_r = k - k_a
        kept = (clusters >= 0).sum(axis=1)
        many = int((kept >= k_r).sum())
        if not many or not first_time_for(self, "_noted_slots"):
            return
        _log.info(
            f"knn_embed: {many} of {len(kept)} mixed queries keep as many components as the {k_r} component "
            f"slots or more (up to {int(kept.max())}: max_components {p.max_components}, weight_floor "
            f"{p.weight_floor}; k={k} less {k_a} dense slots of anchor_share {p.anchor_share}): each of the "
            f"{k_r} heaviest gets one slot, so the mixture weights choose the clusters but set no quota.  For "
            f"slots in proportion to the weights lower max_components below {k_r} or raise weight_floor, or raise "
            f"k or lower anchor_share")

    def _rank(self, q: np.ndarray, view: _KnnView, mask: np.ndarray | None,
              sizes: np.ndarray, k: int) -> list[Ranking]:
        """Rankings of the unit query vectors ``q`` ``(n_q, d)`` over the documents of ``view`` (``k`` results
        each; ``mask``: the documents that may be found, None: all; ``sizes``: how many of them each cluster holds,
        :meth:`_found`)."""
        p = self.params
        n_q = len(q)
        labels = np.asarray(view.labels)
        s = q @ np.asarray(view.vectors).T
        if mask is not None:  # filtered out: -inf in the one score matrix every later step reads
            s[:, ~mask] = -np.inf
        depth = max(k, p.n_neighbors, p.local_depth if p.prior == "local" else 0)
        top_rows, top_sc = topk_rows(s, depth)
        mix = self._mixture(s, (top_rows, top_sc), sizes, labels)

        k_a = _anchor_slots(p.anchor_share, k)
        k_r = k - k_a
        clusters, weights, collapsed = mix["clusters"], mix["weights"], mix["collapsed"].copy()
        if k_r == 0:
            collapsed[:] = True
        out_rows = top_rows[:, :k].copy()
        comp = np.full((n_q, k), -1, np.int32)
        live = np.flatnonzero(~collapsed)
        if len(live):
            self._note_slots(clusters[live], k, k_a)
            out_rows[live], comp[live] = self._mixture_search(
                q[live], s[live], top_rows[live], clusters[live], weights[live], k, k_a, k_r, labels, mask, view)
        out_sc = np.take_along_axis(s, out_rows, axis=1).astype(np.float32)
        # merge
        if p.merge == "score":
            order = desc_order(out_sc, out_rows)
        else:
            # Sainte-Laguë: slot t of a component with weight w has priority w / (2 t + 1)
            w_all = np.concatenate([np.full((n_q, 1), p.anchor_share), (1 - p.anchor_share) * weights], axis=1)
            ci = comp + 1  # 0 = anchor
            w_slot = np.take_along_axis(w_all, ci.astype(np.int64), axis=1)
            # rank of each slot inside its component, by score desc (ties row asc)
            pre = np.lexsort((out_rows, -out_sc, ci), axis=1)
            ci_sorted = np.take_along_axis(ci, pre, axis=1)
            pos = np.arange(k)[None, :].repeat(n_q, 0)
            first = np.where(np.diff(ci_sorted, axis=1, prepend=-1) != 0, pos, 0)
            first = np.maximum.accumulate(first, axis=1)
            t_sorted = pos - first
            t = np.empty_like(t_sorted)
            np.put_along_axis(t, pre, t_sorted, axis=1)
            prio = w_slot / (2 * t + 1)
            order = np.lexsort((out_rows, -out_sc, ci, -prio), axis=1)
        out_rows = np.take_along_axis(out_rows, order, axis=1)
        out_sc = np.take_along_axis(out_sc, order, axis=1)
        comp = np.take_along_axis(comp, order, axis=1)
        clus = labels[out_rows].astype(np.int32)
        if p.merge == "score":
            return [Ranking(r, sc_, {"cluster": cl, "component": co})
                    for r, sc_, cl, co in zip(out_rows, out_sc, clus, comp)]
        # list order is the product: rank scores (k - i) / k, the cosine kept as a field
        rank_sc = ((k - np.arange(k)) / k).astype(np.float32)
        return [Ranking(r, rank_sc.copy(), {"cluster": cl, "component": co, "cosine": sc_})
                for r, sc_, cl, co in zip(out_rows, out_sc, clus, comp)]

    def _empty_ranking(self) -> Ranking:
        """No results, with the fields a ranking of this operator carries."""
        extra = ("cosine",) if self.params.merge == "interleave" else ()
        return Ranking(np.empty(0, np.int64), np.empty(0, np.float32),
                       {"cluster": np.empty(0, np.int32), "component": np.empty(0, np.int32),
                        **{f: np.empty(0, np.float32) for f in extra}})

    def _mixture_search(self, q, s, top_rows, clusters, weights, k, k_a, k_r, labels, mask=None,
                        view: _KnnView | None = None):
        """Anchor + per-component in-cluster search for non-collapsed queries (all arrays row-aligned), over the
        documents of ``view`` (default: the one published now), clustered as ``labels`` (``view.labels``).

        ``s`` holds ``-inf`` for documents outside the filter ``mask`` (N,) bool (None = no filter);
        the per-cluster paths that score afresh treat those documents as already taken.
        """
        p = self.params
        view = self._fitted_view() if view is None else view
        n_q, n = s.shape
        mm = clusters.shape[1]
        active = clusters >= 0
        quota = largest_remainder(weights, k_r, active)  # (n_q, M)
        rows_out = np.full((n_q, k), -1, np.int64)
        comp_out = np.full((n_q, k), -1, np.int32)
        rows_out[:, :k_a] = top_rows[:, :k_a]
        offs = k_a + np.concatenate([np.zeros((n_q, 1), np.int64), np.cumsum(quota, axis=1)[:, :-1]], axis=1)
        got = np.zeros((n_q, mm), np.int64)
        method = "gather" if p.search == "auto" else p.search
        rocchio = p.component_query == "rocchio_filter"
        pq, pj = np.nonzero(active & (quota > 0))
        pc = clusters[pq, pj]

        def place(qi, jj, r, sc, need):  # write each pair's first `need` finite hits into its slots
            ok = np.isfinite(sc) & (np.arange(r.shape[1])[None, :] < need[:, None])
            got[qi, jj] = ok.sum(1)
            pr, pcol = np.nonzero(ok)
            dest = offs[qi, jj][pr] + pcol
            rows_out[qi[pr], dest] = r[pr, pcol]
            comp_out[qi[pr], dest] = jj[pr]

        if method == "gather" and not rocchio and len(pq):
            # the exact path, vectorised over (query, component) pairs: each pair's cluster columns of the
            # batch's score matrix (anchor results already set to -inf; clusters padded to the largest of their
            # chunk with an extra -inf column), one flat gather.  Pairs go largest cluster first, in chunks of at
            # most GATHER_ELEMS padded cells (bounded memory and padding when cluster sizes are uneven)
            s_ext = np.empty((n_q, n + 1), s.dtype)
            s_ext[:, :n] = s
            s_ext[:, n] = -np.inf
            np.put_along_axis(s_ext, top_rows[:, :k_a], -np.inf, axis=1)
            by_size = np.argsort(-view.sizes[pc], kind="stable")
            pq, pj, pc = pq[by_size], pj[by_size], pc[by_size]
            size = view.sizes[pc]
            a = 0
            while a < len(pq):
                b = min(len(pq), a + max(1, GATHER_ELEMS // int(size[a])))
                qi, jj, sz = pq[a:b], pj[a:b], size[a:b]
                width = np.arange(int(sz[0]))[None, :]  # members ascending by id, padded with column n (-inf)
                doc = np.where(width < sz[:, None], view.order[np.minimum(view.starts[pc[a:b]][:, None] + width,
                                                                          n - 1)], n)
                sub = np.take(s_ext, (qi * (n + 1))[:, None] + doc)
                need = quota[qi, jj]
                r, sc = _topk_var(sub, need)
                place(qi, jj, np.take_along_axis(doc, r, axis=1), sc, need)
                a = b
        else:
            taken = np.zeros((n_q, n), bool) if mask is None else np.broadcast_to(~mask, (n_q, n)).copy()
            np.put_along_axis(taken, top_rows[:, :k_a], True, axis=1)
            v = np.asarray(view.vectors)
            grp = np.argsort(pc, kind="stable")
            pq, pj, pc = pq[grp], pj[grp], pc[grp]
            bounds = np.flatnonzero(np.diff(pc, prepend=-1, append=-1) != 0)
            for a, b in zip(bounds[:-1], bounds[1:]):  # one search per cluster over the pairs that use it
                c = int(pc[a])
                qi, jj = pq[a:b], pj[a:b]
                members = view.members[c]
                if rocchio:
                    qc = self._rocchio(q[qi], top_rows[qi, :min(p.n_neighbors, n)], c, labels, v, mask)
                if method in ("partitioned", "gather"):
                    # gather (rocchio_filter): the cluster's rows, read when used; partitioned: its prebuilt
                    # contiguous copy of every cluster (a second copy of the vectors, of a memory-mapped save too)
                    sub = (qc if rocchio else q[qi]) @ (v[members] if method == "gather" else self._part(view, c)).T
                    sub[taken[qi][:, members]] = -np.inf
                    r, sc = topk_rows(sub, int(quota[qi, jj].max()))
                    r = members[r]
                else:
                    full = (qc @ v.T) if rocchio else s[qi]
                    sub = np.where((labels == c)[None, :] & ~taken[qi], full, -np.inf)
                    r, sc = topk_rows(sub, int(quota[qi, jj].max()))
                place(qi, jj, r, sc, quota[qi, jj])
        short = quota - got
        if short.any():  # overflow (rare, cold path): components' other docs, then unrestricted dense
            self._fill_shortfall(s, rows_out, comp_out, clusters, labels, k)
        return rows_out, comp_out

    def _rocchio(self, q, topm, c, labels, v, mask=None):
        """normalise(q + lambda * mean of the query's top-m docs in cluster c) per (query, c) pair
        (passing documents only, under a filter ``mask``)."""
        inc = (labels[topm] == c) if mask is None else (labels[topm] == c) & mask[topm]
        cnt = inc.sum(1, keepdims=True)
        mean = np.einsum("pm,pmd->pd", inc.astype(np.float32), v[topm]) / np.maximum(cnt, 1)
        qc = q + self.params.rocchio_lambda * mean * (cnt > 0)
        return (qc / np.maximum(np.linalg.norm(qc, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def _fill_shortfall(self, s, rows_out, comp_out, clusters, labels, k):
        """Fill empty slots (-1) as the spec's overflow rule says: first from the untaken docs of the
        query's kept components in pi order (the heaviest component's best free docs first, labelled
        with that component), then from the next unrestricted dense results (labelled -1, as the
        anchor).  ``clusters`` columns are in pi order (see :meth:`mixture`)."""
        bad = np.flatnonzero((rows_out < 0).any(1))
        sub = rows_out[bad]
        sub_comp = comp_out[bad]
        kept = clusters[bad]
        sb = s[bad].astype(np.float64, copy=True)
        vr, vc = np.nonzero(sub >= 0)
        sb[vr, sub[vr, vc]] = -np.inf  # already taken
        n_comp = kept.shape[1]
        lut = np.full((len(bad), int(labels.max()) + 2), n_comp)  # cluster -> its component column, else n_comp
        kr, kc = np.nonzero(kept >= 0)
        lut[kr, kept[kr, kc]] = kc
        comp_of = lut[:, labels]  # (bad, docs)
        in_kept = comp_of < n_comp
        # pi order first, score within a component: shift each component's scores below the previous one's
        fin = np.isfinite(sb)
        hi, lo = np.where(fin, sb, -np.inf).max(1, keepdims=True), np.where(fin, sb, np.inf).min(1, keepdims=True)
        span = np.where(np.isfinite(hi - lo), hi - lo, 0.0) + 1.0
        by_pi = np.where(in_kept, sb - span * comp_of, -np.inf)
        for restrict in (True, False):
            holes = sub < 0
            n_h = holes.sum(1)
            if not n_h.any():
                break
            r, sc = topk_rows(by_pi if restrict else sb, int(n_h.max()))
            n_ok = (np.isfinite(sc) & (np.arange(r.shape[1])[None, :] < n_h[:, None])).sum(1)
            hr, hc = np.nonzero(holes)  # the j-th fill goes into the j-th hole of the row
            j = (np.cumsum(holes, axis=1) - 1)[hr, hc]
            use = j < n_ok[hr]
            hr, hc, j = hr[use], hc[use], j[use]
            sub[hr, hc] = r[hr, j]
            sb[hr, r[hr, j]] = -np.inf
            by_pi[hr, r[hr, j]] = -np.inf
            if restrict:  # a document of a kept cluster belongs to that cluster's component
                sub_comp[hr, hc] = comp_of[hr, r[hr, j]]
        rows_out[bad] = sub
        comp_out[bad] = sub_comp
        if (rows_out < 0).any():  # cannot happen with k <= N
            raise DataError(f"knn_embed: could not fill {k} distinct results")

    # ------------------------------------------------------------------ updates
    def add(self, corpus: Corpus, *, vectors: np.ndarray | None = None) -> "KnnEmbed":
        """Index more documents without a refit: each new document joins the cluster of its nearest centroid
        (largest cosine with the fitted ``centroids_``, which stay as they are), and the per-cluster structures are
        rebuilt.  A blank document is never found, as at fit.

        ``vectors``: the documents' vectors, one row per document in ``corpus``'s order, in the space of the fitted
        ones (needed after :meth:`fit_vectors`, whose space no encoder of this retriever gives: an add without them
        is refused then, also after a save and load); ``None``: encoded here by the ``dense`` encoder.  Ids already
        held, another number of rows or width, NaN or infinite values are a :class:`DataError`; nothing changes
        then.  Many documents added far from the fitted ones (a new topic) are not clustered apart as a refit
        would: refit then."""
        self._check_fitted()
        self.corpus_.check_addable(corpus, "knn_embed.add")
        if not len(corpus):
            return self
        if vectors is None and self._vectors_given:
            n = len(corpus)
            raise DataError(f"knn_embed.add: no vectors given for the {n} new document{'s' if n > 1 else ''}, but "
                            "this retriever was fitted with fit_vectors, on vectors no encoder of it gives (encoding "
                            f"them with {self.params.model!r} would cluster and score them in another space); give "
                            "the new documents' vectors of the fitted space: add(corpus, vectors=...)")
        joined = self.corpus_.concat(corpus, "knn_embed.add")  # (a metadata value of another kind: before edits)
        if vectors is None:
            new = self._encode_docs(corpus)
        else:
            new = given_document_vectors(vectors, len(corpus), "knn_embed.add")
        check_finite_vectors(new, "knn_embed.add", "document")  # (before unit_rows: an inf would warn)
        new = unit_rows(new)
        v = np.asarray(self.vectors_)
        if new.shape[1] != v.shape[1]:
            raise DataError(f"knn_embed.add: the new documents' vectors have {new.shape[1]} dimensions, the indexed "
                            f"ones {v.shape[1]}; add vectors of the space it was fitted in, or refit")
        labels = np.argmax(new @ np.asarray(self.centroids_).T, axis=1).astype(np.int32)
        # appended in a buffer with room to spare (a one-document add copied every vector: 88 ms at 200k x 384); the
        # published view's rows are left as they are
        rows = self.__dict__.get("_rows")
        if rows is None:
            rows = self._rows = RowBuffer()
        self._replace(joined, rows.append(v, new.astype(v.dtype, copy=False)),
                      np.concatenate([np.asarray(self.labels_), labels]))
        return self

    def remove(self, ids: Any) -> "KnnEmbed":
        """Remove documents by id (no refit): their rows are dropped, the others renumbered in order as the
        corpus's are, and the per-cluster structures rebuilt; the centroids stay.  An unknown id is a
        :class:`DataError` (nothing removed)."""
        self._check_fitted()
        rows = self.corpus_.rows_to_remove(ids, "knn_embed.remove")
        if len(rows):
            keep = np.ones(len(self.corpus_), dtype=bool)
            keep[rows] = False
            self._replace(self.corpus_.subset(keep), np.asarray(self.vectors_)[keep], np.asarray(self.labels_)[keep])
        return self

    def _replace(self, corpus: Corpus, vectors: np.ndarray, labels: np.ndarray) -> None:
        """An edit's new documents, vectors and labels, with the blank documents and per-cluster structures of
        them: all worked out before any is set (an error leaves the operator as it was)."""
        edited = object.__new__(type(self))
        edited.__dict__.update(self.__dict__)
        edited.corpus_, edited.vectors_, edited.labels_ = corpus, vectors, labels
        edited._find_blank()
        edited._build()
        for key in ("corpus_", "vectors_", "labels_", "_blank"):
            self.__dict__[key] = edited.__dict__[key]
        # what searches read, in one assignment, last (the corpus first: a search that took the view before reads a
        # corpus that holds its rows after an add, and is refused after a remove, checked_view)
        self._view = edited._view
        self.__dict__.pop("_parts", None)

    # ------------------------------------------------------------------ persistence
    def _save(self, folder: Path) -> None:
        view = self._fitted_view()  # (one state: vectors, labels and blank documents of one edit)
        blank = view.blank
        rows = np.flatnonzero(blank) if blank is not None else np.zeros(0, np.int64)
        save_arrays(folder, vectors=view.vectors, labels=view.labels, centroids=self.centroids_,
                    blank=rows.astype(np.int64))  # (the blank documents' rows: not found again at load)
        save_encoder_key(folder, self.dense.encoder)
        write_json(folder / "knn_embed.json", {"n_clusters": int(len(self.centroids_)),
                                               "n_docs": int(len(view.labels)),
                                               "vectors_given": bool(self._vectors_given)})

    def _load(self, folder: Path, mmap: bool = False) -> None:
        meta = read_json(folder / "knn_embed.json")
        given = meta.get("vectors_given", False)  # (a save made before it was recorded: fitted by encoding, as fit)
        if not isinstance(given, bool):
            raise ArtifactError(f"{folder}/knn_embed.json: vectors_given must be true or false, got {given!r}")
        self._vectors_given = given
        check_encoder_key(folder, self.dense.encoder, self.name, self.params.model)
        self.vectors_ = load_array(folder, "vectors", mmap=mmap)
        self.labels_ = np.asarray(load_array(folder, "labels"))
        self.centroids_ = np.asarray(load_array(folder, "centroids"))
        if len(self.labels_) != meta.get("n_docs") or len(self.centroids_) != meta.get("n_clusters") \
                or len(self.vectors_) != len(self.labels_) or len(self.labels_) != len(self.corpus_):
            raise ArtifactError(
                f"{folder}: knn_embed arrays disagree (labels {len(self.labels_)}, vectors {len(self.vectors_)}, "
                f"centroids {len(self.centroids_)}, corpus {len(self.corpus_)}, meta {meta})")
        if len(self.labels_) and (self.labels_.min() < 0 or self.labels_.max() >= len(self.centroids_)):
            raise ArtifactError(f"{folder}/labels.npy: cluster ids outside [0, {len(self.centroids_)})")
        if (folder / "blank.npy").is_file():
            rows = np.asarray(load_array(folder, "blank"))
            n = len(self.labels_)
            if rows.ndim != 1 or rows.dtype.kind not in "iu" or (len(rows) and (rows.min() < 0 or rows.max() >= n)):
                raise ArtifactError(f"{folder}/blank.npy: expected the rows of the blank documents, a 1-d integer "
                                    f"array of values in [0, {n}); got shape {rows.shape}, dtype {rows.dtype}")
            blank = np.zeros(n, bool)
            blank[rows] = True
            self._blank = blank if blank.any() else None
        else:  # (a save made before blank documents were left out: found from the corpus)
            self._find_blank()
        self._build()
