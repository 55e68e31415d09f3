"""Cosine Adapter: a query-dependent, monotone map from raw cosine to P(relevant), then one global threshold.

Rossi, Lin, Liu, Yang, Lee, Magnani, Liao, "Relevance Filtering for Embedding-based
Retrieval", CIKM 2024, arXiv 2408.04887.  Recipe and pitfalls: ALGORITHMS.md section 2.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from ragkit._flat import (
    check_cosines,
    check_dense_rankings,
    cut_prefix,
    first_time_for,
    first_unsorted,
    flatten,
    leading_run,
    read_count,
)
from ragkit._saves import load_array, read_json, save_arrays, saved_fit_report, write_json
from ragkit.encoders import DEFAULT_MODEL, check_encoder_key, get_encoder, query_vectors, save_encoder_key
from ragkit.errors import ArtifactError, DataError
from ragkit.operator import Operator
from ragkit.options import PARAM, count_option
from ragkit.params import ModelName, Params, Seed
from ragkit.registry import register
from ragkit.types import Corpus, State, TrainSet, usable_query_ids

__all__ = ["CosineAdapter", "CosineAdapterParams", "list_features", "choose_threshold", "cut_below",
           "threshold_reached", "positives_needed", "fold_assignment"]

N_LIST_FEATURES = 4
#: fewer usable training queries (a relevant document in the corpus) than this, or fewer relevant candidates
#: retrieved, and fit warns: the threshold fits too few (see also :func:`positives_needed`)
MIN_QUERIES = 10
MIN_POSITIVES = 5
_NEEDS_TRAIN = ("cosine_adapter.fit needs judged training queries: fit(corpus, train=TrainSet(queries, qrels)) "
                "(command line: --train-split)")


class CosineAdapterParams(Params):
    model: ModelName = Field(default=DEFAULT_MODEL,
                             description="Encoder of the query embedding (the dense retriever's model).")
    form: Literal["linear", "sqrt", "quadratic", "power"] = Field(
        default="linear",
        description="Monotone map of the cosine: a(q)*c+b(q), a*sqrt(x)+b, a*x^2+b or a power of x, "
                    "x=(c+1)/2: a*((x/x0)^p(q)-1)/p(q)+b, with x0 the median training candidate (per query "
                    "A*x^p+B; a and b are the slope and logit at x0). power needs more L-BFGS iterations "
                    "than linear: about 120-130 vs 85-90 on 240 or 647 SciFact train queries.")
    list_features: bool = Field(
        default=True, description="ragkit extension (not in the paper): add the query's top-1 cosine, top1-top10 gap, "
                                  "mean and std of its candidate cosines to the adapter's input.")
    l2: float = Field(default=1e-3, ge=0, description="L2 weight decay on the adapter weights (not on the biases).")
    threshold: float | None = Field(
        default=None,
        ge=0, le=1, description="Global probability cut-off; None chooses it on out-of-fold probabilities "
                    "of every training query (target/target_value are then used; with a threshold they "
                    "are ignored).")
    target: Literal["recall", "precision"] = Field(
        default="recall", description="What the chosen threshold must reach on the training queries' out-of-fold "
                                      "probabilities.")
    target_value: float = Field(
        default=0.95, gt=0, le=1, description="Recall (share of relevant candidates kept) or precision to reach.")
    val_fraction: float = Field(
        default=0.2,
        gt=0, lt=1, description="Share of training queries in each cross-validation fold the threshold is "
                                "chosen on: round(1/val_fraction) folds (0.2: 5; at least 2, so at most 0.5; a "
                                "save's share above 0.5, from a ragkit before that bound, loads as 0.5, the same "
                                "2 folds), at most one per training query with a relevant candidate; "
                                "info_['fold_shares'] records the share of the queries each fold held out.")

    @field_validator("val_fraction", mode="after")
    @classmethod
    def _at_most_half(cls, v: float, info: ValidationInfo) -> float:
        """A share above one half is refused with what it would mean: the folds are at least 2, so 0.7, 0.9 or
        0.99 would each silently be 2 folds of half the queries.  A loaded save's share (validation context
        ``source: "saved"``) is not refused: ragkit took shares up to 1 before, and every one above one half
        was fitted as 2 folds (``max(2, round(1 / v))``), which 0.5 is, so it is read as 0.5."""
        if v > 0.5:
            if isinstance(info.context, Mapping) and info.context.get("source") == "saved":
                return 0.5
            raise ValueError(f"val_fraction {v!r} asks each cross-validation fold to hold out more than half of the "
                             "training queries, which no split into folds does (2 folds, the fewest, hold out half "
                             "each): it would be read as 2 folds of half the queries, as 0.5 is; expected a share "
                             "in (0, 0.5] (round(1/val_fraction) folds: 0.2 gives 5, 0.5 gives 2)")
        return v
    train_k: int = Field(default=100,
                         ge=1, description="Candidates per training query when fit runs its own dense retriever.")
    k_min: int = Field(
        default=0, ge=0, description="Always keep at least this many results (product choice, not in the paper).")
    max_iter: int = Field(default=500,
                          ge=1, description="Most L-BFGS iterations; fit logs a warning on the ragkit logger "
                                            "when training stops there without converging.")
    seed: Seed = Field(default=0, description="Seed of the cross-validation folds the threshold is chosen on.")


def list_features(scores: np.ndarray, lengths: np.ndarray, starts: np.ndarray,
                  depth: int | None = None) -> np.ndarray:
    """Per-query features of the candidate cosines: top-1, top-1 minus top-10, mean, std.

    ``scores`` is flat (see ``flatten``); returns ``(B, 4)`` float64 (zeros for empty lists).
    ``depth``: every feature reads each list's first ``depth`` candidates only (the adapter's
    training depth; the "top-10" is the depth-th when the depth is under 10), so a deeper call
    keeps the probabilities of the candidates it shares with a call at the training depth.
    """
    B = len(lengths)
    out = np.zeros((B, N_LIST_FEATURES))
    ok = lengths > 0
    if not ok.any():
        return out
    s = scores.astype(np.float64)
    depth = int(lengths.max()) if depth is None else depth
    top1 = s[starts[ok]]
    c10 = s[starts[ok] + np.minimum(np.minimum(lengths[ok], depth), 10) - 1]  # the 10th, within the depth
    qidx = np.repeat(np.arange(B), lengths)
    s = np.where(np.arange(len(s)) - starts[qidx] < depth, s, 0.0)  # candidates past the depth weigh nothing
    n = np.maximum(np.minimum(lengths, depth), 1)
    mean = np.bincount(qidx, weights=s, minlength=B) / n
    var = np.bincount(qidx, weights=s * s, minlength=B) / n - mean**2
    out[ok, 0] = top1
    out[ok, 1] = top1 - c10
    out[:, 2] = mean
    out[:, 3] = np.sqrt(np.maximum(var, 0))
    return out


def positives_needed(target: str, value: float) -> int:
    """How many counted candidates a threshold chosen for ``target``/``value`` should rest on:
    ``max(MIN_POSITIVES, ceil(2 / (1 - value)))`` (a value of 1 counts as 0.99): 40 for 0.95, 20 for 0.9.

    Recall ``r``: the cut-off sits at the ``(1 - r)`` quantile of the relevant candidates' probabilities;
    with fewer than ``2 / (1 - r)`` of them, fewer than two lie below it, and the threshold is about the
    weakest one of a small sample (recall 0.95 on 8 relevant candidates: keep the weakest), which new
    queries' relevant documents fall below far more often than ``1 - r``.  What is counted: relevant
    candidates.  Precision ``p``: the kept set's irrelevant share ``1 - p`` is seen at all only when the
    kept set holds about ``2 / (1 - p)`` candidates (two or more irrelevant ones); what is counted: the
    candidates the threshold keeps.

    >>> positives_needed("recall", 0.95), positives_needed("precision", 0.5), positives_needed("recall", 1.0)
    (40, 5, 200)
    """
    return max(MIN_POSITIVES, math.ceil(2.0 / max(1.0 - value, 0.01) - 1e-9))


def fold_assignment(has_pos: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each query's cross-validation fold, ``(n_q,)`` ints in ``[0, n_folds)``, seeded; -1 everywhere when
    fewer than 2 queries have a relevant candidate (no fold could both learn and be scored).

    Queries are dealt in a seeded random order, those with a relevant candidate (``has_pos``) first, to
    ``n_folds = min(folds, that count)`` folds (``rng.permutation(n) % folds``, as fusion's
    :func:`~ragkit.pipelines.weights.learn_weights`, stratified): every fold, and every fold's
    complement, holds a query with a relevant candidate.

    >>> int(fold_assignment(np.array([True, False, True, True]), 5, 0).max()) + 1   # 3 queries with one
    3
    """
    has_pos = np.asarray(has_pos, bool)
    n_folds = min(int(folds), int(has_pos.sum()))
    if n_folds < 2:
        return np.full(len(has_pos), -1, np.int64)
    perm = np.random.default_rng(seed).permutation(len(has_pos))
    order = perm[np.argsort(~has_pos[perm], kind="stable")]
    fold_of = np.empty(len(has_pos), np.int64)
    fold_of[order] = np.arange(len(has_pos)) % n_folds
    return fold_of


def threshold_reached(probs: np.ndarray, labels: np.ndarray, t: float) -> dict[str, float]:
    """Precision and recall of the candidates a cut-off ``t`` keeps (``probs >= t``).

    Parameters
    ----------
    probs : (n,) array
        Pooled probabilities of the candidates.
    labels : (n,) array
        1 for a relevant candidate, 0 otherwise.
    t : float
        The cut-off.

    Returns
    -------
    dict
        ``{"precision": ..., "recall": ...}`` (precision 0 when nothing is kept, recall 0 when no
        candidate is relevant).
    """
    keep = np.asarray(probs) >= t
    y = np.asarray(labels, dtype=np.float64)
    tp = float(y[keep].sum())
    return {"precision": tp / int(keep.sum()) if keep.any() else 0.0,
            "recall": tp / float(y.sum()) if y.sum() > 0 else 0.0}


def choose_threshold(probs: np.ndarray, labels: np.ndarray, target: str, value: float,
                     *, pairs: str = "held-out") -> float:
    """The global cut-off on pooled held-out candidates.

    ``target="recall"``: the largest ``t`` keeping at least ``value`` of the relevant
    candidates; ``"precision"``: the smallest ``t`` whose kept set has precision >= ``value``.
    When no cut-off reaches a precision target, the most precise one is returned and a warning
    on the ``ragkit`` logger says the target, what was reached and on how many candidate
    pairs (``pairs`` names them in the message: "held-out", "out-of-fold", "training").  A recall target is
    always reachable (keeping every candidate reaches recall 1).

    >>> choose_threshold(np.array([.9, .8, .7]), np.array([0, 1, 0]), "recall", 0.95)
    0.8
    """
    from ragkit.eval.filtering import pr_curve  # (on use, at fit: the filters do not import ragkit.eval)

    probs = np.asarray(probs)
    bad = np.flatnonzero(~np.isfinite(probs))
    if len(bad):  # (pr_curve's own refusal speaks of ranking padding, which these are not)
        first = f"{float(probs[bad[0]])!r} at candidate {int(bad[0])}"
        raise DataError(f"cosine_adapter: {len(bad)} of the {len(probs)} {pairs} candidate probabilities the "
                        f"threshold is chosen on are not finite (first: {first}); "
                        "expected probabilities in [0, 1]: the adapter's weights or its input cosines are not "
                        "finite; check the query vectors and the training candidates' scores")
    # a cut-off t keeps every candidate with p >= t: one point per distinct probability, highest first (tied
    # candidates are kept or dropped together); n_relevant=1 makes "recall" the count of relevant ones kept
    prec, kept, p = pr_curve(probs, labels, n_relevant=1)
    if not len(kept) or kept[-1] == 0:
        raise DataError("cosine_adapter: the held-out training queries have no relevant candidate; "
                        "cannot choose a threshold")
    if target == "recall":
        i = int(np.searchsorted(kept, value * kept[-1] - 1e-9))
        return float(p[min(i, len(p) - 1)])
    ok = np.nonzero(prec >= value)[0]
    if len(ok):
        return float(p[int(ok[-1])])
    i = int(np.argmax(prec))
    logging.getLogger("ragkit").warning(
        "cosine_adapter: no threshold reaches the target precision %.4g on the %d %s candidate pairs (%d "
        "relevant); using the most precise one, %.4g, which reaches precision %.4g at recall %.4g",
        value, len(probs), pairs, int(kept[-1]), float(p[i]), float(prec[i]), float(kept[i] / kept[-1]))
    return float(p[i])


def cut_below(probs: np.ndarray, t: float) -> float:
    """The threshold a fit keeps for the cut-off ``t`` (:func:`choose_threshold`: the probability of the weakest
    candidate it keeps): halfway, in logit, between ``t`` and the largest of ``probs`` below it, which it drops;
    0 when none is below (it keeps every candidate).

    Every threshold in that gap keeps the same candidates of ``probs``.  ``t`` itself sits on its upper edge, on
    the probability of a pooled out-of-fold candidate, and the adapter kept (fitted on every query) gives such a
    candidate a probability that differs from it: by float rounding alone where the candidates are alike (a
    one-document corpus: ``threshold_`` 0.9999944832057563, the training query's own document then kept or not
    as a batch's rounding fell; five identical documents: none kept), by the folds' differences otherwise.  The
    middle of the gap, where a decision stump places its split between two training values, is the cut-off
    farthest from both; in logit, the scale the adapter is linear in (``a(q) * g(c) + b(q)``), on which
    probabilities near 0 or 1 still lie apart.  With nothing below ``t``, the training candidates set no lower
    edge: the threshold keeps every candidate (0), as that cut-off did.

    >>> round(cut_below(np.array([.9, .8, .7]), 0.8), 4), cut_below(np.array([.9, .8]), 0.8)
    (0.7534, 0.0)
    """
    from scipy.special import expit, logit  # imported on use: scipy.special costs ~0.1 s of `import ragkit`

    below = probs[probs < t]
    if not len(below):
        return 0.0
    lower = float(below.max())
    with np.errstate(divide="ignore", invalid="ignore"):
        mid = float(expit((logit(t) + logit(lower)) / 2.0))
    if not np.isfinite(mid):  # t = 1 and lower = 0: logit inf - inf
        mid = (t + lower) / 2.0
    return mid if lower < mid <= t else t  # (a gap of one ulp: the midpoint rounds onto an edge)


def ordered_float32(p: np.ndarray, c: np.ndarray, lengths: np.ndarray, starts: np.ndarray,
                    qidx: np.ndarray) -> np.ndarray:
    """The probabilities ``p`` (float64, flat as :func:`~ragkit._flat.flatten` gives them, each query's
    list sorted best first) as float32 scores in [0, 1] that fall strictly wherever the cosine ``c`` falls
    strictly within a query, and stay equal where the cosines tie.

    float32 rounds every probability above ``1 - 6e-8`` to 1.0 and the tiny ones to 0.0 (or to the same
    subnormal): ties the cosines did not have, which an evaluation breaks by document id, reordering the list.
    The float32 bits of non-negative floats, read as integers ``b``, are monotone in the value, so a step of 1
    is one float32 ulp.  With ``D`` the number of strict cosine falls since the query's first candidate and ``F``
    the number after the candidate, ``b`` is first clamped into ``[F, bits(1.0) - D]`` (room for the falls
    after and before it: a run saturated at 0.0 is lifted to the smallest subnormals, one at 1.0 keeps 1.0 at its
    head), then ``b'_i = max_{j >= i} (b_j - F_j) + F_i`` within the query (a reversed segment cummax, batched: a
    per-query offset decreasing with the query keeps the queries apart).  Earlier scores are raised rather than
    later ones lowered, so a score only rises from the nearest float32 of ``p`` (by the few ulps or subnormals the
    rounding ties need), except where the clamp pulls a 1.0 below 1.0: a candidate kept by ``p >= t`` in float64
    is shown with a score ``>= float32(t)`` unless the kept candidates hold more strict falls than there are
    float32 values in ``[float32(t), 1]`` (any strict fall among them when ``t`` rounds to 1.0 in float32,
    ``t >= 1 - 2**-25``: they cannot all be shown at 1.0 and still fall).  A list already strictly
    decreasing at its falls keeps its float32 values.  No score reaches 0.0 ahead of a strict fall, so no ties
    remain (a list longer than 2**30 would be needed to run out of float32 values in [0, 1]).  A non-finite
    probability (a corrupt adapter) stays NaN, for the output check to catch."""
    p = np.asarray(p, np.float64)
    if not len(p):
        return p.astype(np.float32)
    bad = ~np.isfinite(p)  # a corrupt adapter's NaN stays NaN (its bits would be clamped into a finite score)
    f = np.where(bad, 0.0, p).astype(np.float32)  # (0.0: at the bottom of the cummax, it moves no other score)
    b = f.view(np.int32).astype(np.int64)  # non-negative floats: the bits are monotone in the value
    fall = np.zeros(len(f), np.int64)
    fall[1:] = (c[1:] < c[:-1]) & (qidx[1:] == qidx[:-1])
    total = np.cumsum(fall)
    first = total[starts[qidx]]
    D = total - first  # strict falls since the query's first candidate
    F = total[(starts + lengths - 1)[qidx]] - total  # strict falls after the candidate
    one = int(np.float32(1.0).view(np.int32))
    b = np.clip(b, F, one - D)  # F <= one - D: a query holds fewer than 2**30 falls
    offset = (int(qidx[-1]) + 1 - qidx) * (1 << 32)  # 0 <= b - F < 2**30: the reversed cummax restarts per query
    b = np.maximum.accumulate((b - F + offset)[::-1])[::-1] - offset + F  # b - F <= bits(1.0) - D - F: no clamp lost
    out = b.astype(np.int32).view(np.float32)
    out[bad] = np.nan
    return out


@register
class CosineAdapter(Operator):
    """Query-dependent relevance filter for dense retrieval (Cosine Adapter).

    A linear layer ``h`` maps the query's features ``f(q)`` (its embedding, ``d`` floats,
    plus optional list features of its candidate cosines) to a slope ``a(q) =
    softplus(h_a(f)) > 0``, an offset ``b(q) = h_b(f)`` and, for ``form="power"``, an
    exponent ``p(q) = softplus(h_p(f))``.  Each candidate's raw cosine ``c`` becomes
    ``r = sigmoid(a(q) * g(c) + b(q))`` with ``g`` increasing, so ``r`` is monotone in ``c``
    for a fixed query: the order never changes, only where the list is cut.  The power form's
    ``g`` is ``((x/x0)^p - 1) / p`` (``x = (c+1)/2``, ``x0`` the median training candidate's;
    ``log(x/x0)`` as ``p -> 0``): per query the family ``A * x^p + B`` of ALGORITHMS.md, with
    ``a`` and ``b`` the slope and logit at ``x0``.  Written ``a * x^p + b``, the heads trade a
    large ``a`` and ``-b`` against a small ``p`` (on the unpenalised bias row) and L-BFGS slid
    along that valley without converging (500 iterations, 240 SciFact train queries).  Documents with
    ``r < threshold`` are dropped (lists may become empty unless ``k_min > 0``); the new
    scores are ``r`` (float32, in [0, 1], made strictly decreasing wherever the cosine strictly decreases by
    :func:`ordered_float32`: a confident adapter's probabilities round to 1.0 or 0.0 in float32, ties an
    evaluation would break by document id) and the raw cosines travel in ``ranking.fields["cosine"]``.

    Training (``fit(corpus, train)``): candidates are the training queries' top-``K`` from
    the preceding dense step (``upstream``; without one, fit runs its own
    ``Dense(k=train_k, model=model)``); judged positives are labelled 1 and every other
    retrieved candidate 0; the weights minimise mean binary cross-entropy + ``l2/2 *
    ||W||^2`` with L-BFGS (scipy).  When ``threshold`` is None, it is chosen for
    ``target``/``target_value`` on out-of-fold probabilities of every training query: the queries are
    split (seeded) into ``round(1 / val_fraction)`` folds (5), each fold's probabilities come from an
    adapter fitted on the other folds, and the threshold chosen on them all pooled applies to the
    adapter fitted on every query, the one kept (one 20% split chose it on 5-15 relevant candidates:
    for recall 0.95 "keep the weakest", a threshold that swung over four orders of magnitude with the
    split and kept 58-73% of new queries' relevant documents on 20-40 SciFact queries).  Fit then
    trains ``folds + 1`` adapters, about 6x the time of an explicit ``threshold``; ``info_`` records
    ``folds``, and ``threshold_achieved``, ``threshold_positives`` and ``threshold_kept`` on the
    pooled out-of-fold pairs.
    Unjudged training queries are left out, and so are queries whose relevant documents are
    none of the corpus's; a query judged only 0 is a judged "no answer" query (all negatives).
    Give at least ``MIN_QUERIES`` (10) usable judged queries (a relevant document in the corpus):
    with fewer, fewer than ``MIN_POSITIVES`` (5) relevant candidates, too few for the target (fewer
    than about ``2 / (1 - target_value)`` relevant out-of-fold candidates for a recall target, 40 for
    0.95; fewer kept ones for a precision target: :func:`positives_needed`), or too few queries to
    hold any out (a single one with a relevant candidate: the threshold is then chosen on the
    queries the adapter was fitted on, its own relevant documents' probabilities, which cut other
    queries' lists short), fit warns on the ``ragkit`` logger; an explicit ``threshold`` avoids
    choosing one.  The threshold kept lies halfway, in logit, between the weakest kept and the strongest dropped
    out-of-fold candidate (:func:`cut_below`), so that the adapter fitted on every query, whose probabilities
    differ from the folds', keeps what the cut-off kept; a cut-off that drops nothing (every candidate relevant,
    as in a one-document corpus) gives 0, and fit warns.

    The input scores must be raw cosines of the same encoder (``dense | cosine_adapter``); a ``dense`` with
    ``metric: ip`` is refused.  After a ``reduce`` or ``dtype: b1`` without ``rescore`` the scores are
    approximate cosines (PCA 32 on SciFact: ~[0.13, 0.94] against [0.06, 0.81]): the adapter is fitted on the
    scores it then reads, so it calibrates to them and is not refused, but ``rescore: true`` gives it the
    full-dimension cosines its features were designed for.
    The list features (``list_features=True``) read each query's first ``depth_`` candidates,
    the most a training query brought: a call with more candidates (``search(k=...)`` above the
    training depth) gives the candidates they share the same probabilities and the same cut; a
    call with fewer sees a shorter list, whose mean and std differ from training's (it may drop every
    candidate): while the corpus holds more documents, a warning says so (once per adapter object).

    References
    ----------
    Rossi et al., "Relevance Filtering for Embedding-based Retrieval", CIKM 2024,
    arXiv 2408.04887.

    Examples
    --------
    Thirty judged queries, each about one of 40 documents, and a toy encoder (a hashed bag
    of words, :class:`~ragkit.encoders.HashingEncoder`; in practice the dense retriever's
    model, MiniLM by default, and leave ``model`` alone):

    >>> from ragkit.encoders import HashingEncoder, register_encoder, unregister_encoder
    >>> from ragkit.retrievers import Dense
    >>> from ragkit.types import Corpus, Queries, TrainSet
    >>> _ = register_encoder("toy-bow", HashingEncoder(dim=64))
    >>> corpus = Corpus.from_texts([f"notes on topic{i}" for i in range(40)])
    >>> train = TrainSet(Queries.from_texts([f"topic{i}" for i in range(30)]),
    ...                  {f"q{i}": {str(i): 1} for i in range(30)})
    >>> pipe = Dense(k=10, model="toy-bow") | CosineAdapter(model="toy-bow", target_value=0.9)
    >>> pipe = pipe.fit(corpus, train)
    >>> pipe.search(["topic35"]).doc_ids[0].tolist()   # the dense step alone returns 10
    ['35']
    >>> unregister_encoder("toy-bow")
    """

    name = "cosine_adapter"
    kind = "filter"
    #: it cuts the dense rankings of the steps before it: refused before the first retriever, and after one
    #: whose scores are not cosines (:func:`~ragkit.pipelines._checks.cosine_source_problem`)
    reads_rankings = True
    Params = CosineAdapterParams
    params: CosineAdapterParams
    wants_upstream = True
    needs_train = True  # fit always learns from judged queries (``ragkit train`` has no unlearned row for it)
    example = {"max_iter": 50}
    upstream_example = [{"dense": {"k": 20}}]
    #: ``search(..., cosine_adapter={"threshold": 0.3})``; a ``threshold`` of None is the fitted one; ``k_min`` is a
    #: count, held to the rule of a per-call ``k`` (an integer, here >= 0: "2" and 2.0 refused, which the parameter
    #: converts)
    run_options = {"threshold": PARAM, "k_min": count_option(0)}
    #: set by fit: the deepest training query's candidates, or None when loaded from a save that predates it
    depth_: int | None
    #: set by fit: the power form's centre x0 (the median training candidate's (c+1)/2), None for other forms
    #: (and for a power adapter saved before it, which keeps the former map a*x^p+b)
    power_x0_: float | None

    # ------------------------------------------------------------------ features / model
    @property
    def n_params(self) -> int:
        """Per-query coefficients the model predicts (an int): 2, the slope ``a(q)`` and offset ``b(q)``, or 3
        for ``form="power"`` (plus the exponent ``p(q)``); the weights are ``(n_features + 1, n_params)``."""
        return 3 if self.params.form == "power" else 2

    def _raw_features(self, qvecs: np.ndarray, scores: np.ndarray, lengths: np.ndarray,
                      starts: np.ndarray) -> np.ndarray:
        parts = [qvecs.astype(np.float64)]
        if self.params.list_features:
            parts.append(list_features(scores, lengths, starts, getattr(self, "depth_", None)))
        return np.concatenate(parts, axis=1)

    def _transform(self, c: np.ndarray, p: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``g(c)`` and, for the power form, its derivative in ``p`` (needed by the gradient).

        Power: ``g = ((x/x0)^p - 1) / p``, a Box-Cox transform centred on ``x0 = power_x0_`` (``log(x/x0)``
        at ``p = 0``).  An adapter saved before ``power_x0_`` existed (None) uses the former ``g = x^p``.
        """
        form = self.params.form
        if form == "linear":
            return c, None
        x = np.clip((c + 1.0) / 2.0, 1e-6, 1.0)
        if form == "sqrt":
            return np.sqrt(x), None
        if form == "quadratic":
            return x * x, None
        if p is None:
            raise ValueError("cosine_adapter: the power form needs the exponents p")
        x0 = getattr(self, "power_x0_", None)
        if x0 is None:  # the former parameterisation (saves that predate power_x0)
            t = np.exp(p * np.log(x))
            return t, t * np.log(x)
        from scipy.special import exprel

        lr = np.log(x) - np.log(x0)
        u = np.minimum(p * lr, 50.0)  # past exp(50) the probability is 1 anyway; avoids overflow
        t = lr * exprel(u)  # (exp(p lr) - 1) / p, exact as p -> 0
        small = np.abs(u) < 1e-4
        us = np.where(small, 1.0, u)
        k = np.where(small, 0.5 + u / 3.0, (np.exp(us) * (us - 1.0) + 1.0) / (us * us))
        k = np.where(u < p * lr, 0.0, k)  # where u is capped, t no longer depends on p
        return t, lr * lr * k  # d t / d p = lr^2 * (u e^u - e^u + 1) / u^2

    def _heads(self, F1: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        U = F1 @ W  # (B, m)
        a = np.logaddexp(0.0, U[:, 0])
        b = U[:, 1]
        p = np.logaddexp(0.0, U[:, 2]) if W.shape[1] == 3 else None
        return U, a, b, p

    def _logits(self, F1: np.ndarray, W: np.ndarray, c: np.ndarray, qidx: np.ndarray) -> np.ndarray:
        _, a, b, p = self._heads(F1, W)
        t, _ = self._transform(c, None if p is None else p[qidx])
        return a[qidx] * t + b[qidx]

    def _loss_grad(self, wflat: np.ndarray, F1: np.ndarray, c: np.ndarray, y: np.ndarray,
                   qidx: np.ndarray) -> tuple[float, np.ndarray]:
        """The training objective (mean BCE + ``l2/2 * ||W||^2``, bias row not decayed) and its gradient.

        ``wflat`` is the flattened ``(D+1, n_params)`` weights; ``F1`` ``(n_q, D+1)``; ``c``, ``y`` and
        ``qidx`` (each candidate's query row in ``F1``) are ``(n,)``.
        """
        from scipy.special import expit

        n_q, D1 = F1.shape
        m = self.n_params
        W = wflat.reshape(D1, m)
        reg = np.ones((D1, 1))
        reg[-1] = 0.0  # no decay on the bias row
        l2 = self.params.l2
        U, a, b, p = self._heads(F1, W)
        t, dt_dp = self._transform(c, None if p is None else p[qidx])
        z = a[qidx] * t + b[qidx]
        loss = float(np.mean(np.logaddexp(0.0, z) - y * z)) + 0.5 * l2 * float(np.sum(reg * W * W))
        dz = (expit(z) - y) / len(c)
        G = np.zeros((n_q, m))
        G[:, 0] = np.bincount(qidx, weights=dz * t, minlength=n_q) * expit(U[:, 0])
        G[:, 1] = np.bincount(qidx, weights=dz, minlength=n_q)
        if m == 3 and dt_dp is not None:
            G[:, 2] = np.bincount(qidx, weights=dz * a[qidx] * dt_dp, minlength=n_q) * expit(U[:, 2])
        return loss, (F1.T @ G + l2 * reg * W).ravel()

    def _train(self, F1: np.ndarray, c: np.ndarray, y: np.ndarray, qidx: np.ndarray,
               warn: bool = True) -> tuple[np.ndarray, dict]:
        """L-BFGS on :meth:`_loss_grad`; ``F1`` (n_q, D+1) with a trailing bias column.  ``warn``: log
        a stop without convergence (the cross-validation folds' fits report theirs together)."""
        D1 = F1.shape[1]
        m = self.n_params

        W0 = np.zeros((D1, m))
        W0[-1, 0] = np.log(np.expm1(10.0))  # slope 10 on the cosine scale
        W0[-1, 1] = -10.0 * float(np.quantile(c, 0.9)) if self.params.form == "linear" else -5.0
        if m == 3:  # slope 10 on the cosine scale at x0 (d g / d c = 1 / (2 x0)), logit 0 at the 90th percentile
            x0 = self.power_x0_
            if x0 is None:
                raise ValueError("cosine_adapter: fit sets power_x0_ before training the power form")
            W0[-1, 0] = np.log(np.expm1(20.0 * x0))
            W0[-1, 1] = -10.0 * (float(np.quantile(c, 0.9)) - (2.0 * x0 - 1.0))
            W0[-1, 2] = np.log(np.expm1(1.0))
        from scipy.optimize import minimize  # (here: ~120 ms to import, which a search never needs)

        from ragkit.eval.metrics import _one_blas_thread

        # one BLAS thread: each iteration makes small products ((n_q, D+1) @ (D+1, m) and back), which a
        # second thread slows down as soon as another process holds a core (SciFact, 2 busy cores: 9.7 s of
        # training against 2.5 s); the weights are the same
        with _one_blas_thread():
            res = minimize(self._loss_grad, W0.ravel(), args=(F1, c, y, qidx), jac=True, method="L-BFGS-B",
                           options={"maxiter": self.params.max_iter})
        if warn and not res.success:  # the weights, and the threshold chosen with them, are those of an unfinished fit
            logging.getLogger("ragkit").warning(
                "cosine_adapter: L-BFGS stopped after %d iterations without converging (form %s, max_iter %d: %s); "
                "the adapter and its threshold may keep too much or too little; raise max_iter%s",
                int(res.nit), self.params.form, self.params.max_iter, res.message,
                " (form power needs more iterations than linear)" if self.params.form == "power" else "")
        return res.x.reshape(D1, m), {"loss": float(res.fun), "iterations": int(res.nit),
                                      "converged": bool(res.success)}

    def _features1(self, X: np.ndarray) -> np.ndarray:
        F = (X - self.feat_mean_) / self.feat_std_
        return np.concatenate([F, np.ones((len(F), 1))], axis=1)

    # ------------------------------------------------------------------ fit
    def train_refusal(self) -> Exception | None:
        """The adapter always learns from judged queries (see :meth:`Operator.train_refusal`)."""
        return DataError(_NEEDS_TRAIN)

    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        from scipy.special import expit

        if train is None:  # fit refuses it first (train_refusal)
            raise DataError(_NEEDS_TRAIN)
        encoder = get_encoder(self.params.model)
        if upstream is None or upstream.rankings is None:
            from ragkit.retrievers.dense import Dense

            dense = Dense(k=self.params.train_k, model=self.params.model).fit(corpus)
            upstream = dense(State.of(train.queries))
        if len(upstream) != len(train.queries):
            raise DataError(f"cosine_adapter.fit: upstream has {len(upstream)} queries, train has {len(train.queries)}")
        # a query without judgements is unjudged, not a query with nothing relevant (its candidates would all
        # be learned as negatives), and so is one judged relevant documents none of which is in the corpus (qrels
        # of another id scheme); one whose judgements are all 0 stays: a judged "no answer" query
        usable = set(usable_query_ids(upstream.query_ids, train.qrels, corpus))
        judged = [i for i, q in enumerate(upstream.query_ids) if q in usable or
                  (train.qrels.get(q) and max(train.qrels[q].values()) <= 0)]
        if not judged:
            raise DataError(
                f"cosine_adapter.fit: none of the {len(upstream)} training queries has a judged document in the "
                f"corpus ({len(corpus)} documents; e.g. the qrels of query {str(upstream.query_ids[0])!r} name "
                f"{sorted(map(str, train.qrels.get(upstream.query_ids[0], {})))[:3]}): check that the train "
                "qrels use the corpus's document ids")
        if len(judged) < len(upstream):
            upstream = upstream.subset(judged)
        rankings = upstream.rankings
        if rankings is None:
            raise DataError("cosine_adapter.fit: the dense retriever gave the training queries no rankings")
        rows, c, lengths, starts, qidx = flatten(rankings)
        check_cosines(c, self.name, qidx)
        check_dense_rankings(rankings, c, qidx, self.name, ordered=True)  # as every search will
        self.depth_ = int(lengths.max()) if len(lengths) else 0
        qv = query_vectors(upstream, encoder)
        if qv.shape[0] != len(lengths):
            raise DataError(f"cosine_adapter.fit: {qv.shape[0]} query vectors for {len(lengths)} queries")
        # labels: judged positives among the retrieved candidates, batched through a (query, doc) key set
        doc_ids = corpus.ids[rows] if len(rows) else np.empty(0, object)
        qids = np.asarray(upstream.query_ids, dtype=object)
        pos = {(q, d) for q, rel in train.qrels.items() for d, v in rel.items() if v > 0}
        y = np.fromiter(((q, d) in pos for q, d in zip(qids[qidx].tolist(), doc_ids.tolist())), dtype=np.float64,
                        count=len(rows))
        if y.sum() == 0:
            raise DataError(
                f"cosine_adapter.fit: none of the {len(rows)} retrieved training candidates "
                f"({len(lengths)} queries) is a judged positive (relevance > 0); nothing to learn from. "
                "Check that train qrels use the corpus's document ids and that the retriever finds them."
            )
        X = self._raw_features(qv, c, lengths, starts)
        c64 = c.astype(np.float64)
        n_q = len(lengths)
        choose = self.params.threshold is None
        oof = fold_of = None
        stalled = 0
        if choose:
            # out-of-fold probabilities of every query: each fold scored by an adapter fitted on the others
            has_pos = np.bincount(qidx, weights=y, minlength=n_q) > 0
            fold_of = fold_assignment(has_pos, max(2, round(1.0 / self.params.val_fraction)), self.params.seed)
            if fold_of[0] >= 0:
                oof = np.empty(len(c64))
                cand_fold = fold_of[qidx]
                for f in range(int(fold_of.max()) + 1):
                    W, fi = self._fit_part(X, c64, y, qidx, fold_of != f, warn=False)
                    if not np.isfinite(W).all():
                        raise DataError(f"cosine_adapter.fit: training diverged in cross-validation fold {f + 1} "
                                        f"(non-finite weights after {fi['iterations']} L-BFGS iterations, loss "
                                        f"{fi['loss']}); check the query vectors and judgements")
                    stalled += not fi["converged"]
                    held = cand_fold == f
                    oof[held] = expit(self._logits(self._features1(X[fold_of == f]), W, c64[held],
                                                   np.cumsum(fold_of == f)[qidx[held]] - 1))
        W, info = self._fit_part(X, c64, y, qidx, np.ones(n_q, bool))  # the adapter kept: every query
        if not np.isfinite(W).all():
            raise DataError(f"cosine_adapter.fit: training diverged (non-finite weights after {info['iterations']} "
                            f"L-BFGS iterations, loss {info['loss']}); check the query vectors and judgements")
        self.weights_ = W
        if self.params.threshold is not None:
            self.threshold_ = float(self.params.threshold)
        else:
            n_folds = 0 if fold_of is None or fold_of[0] < 0 else int(fold_of.max()) + 1
            # too few queries to hold any out: chosen on the probabilities of the queries it was fitted on
            probs = oof if oof is not None else expit(self._logits(self._features1(X), W, c64, qidx))
            self.threshold_ = cut_below(probs, choose_threshold(probs, y, self.params.target, self.params.target_value,
                                                                pairs="out-of-fold" if n_folds else "training"))
            info["threshold_achieved"] = threshold_reached(probs, y, self.threshold_)
            info["threshold_pairs"] = int(len(y))
            info["threshold_queries"] = int(n_q)
            info["threshold_positives"] = int(y.sum())
            info["threshold_kept"] = int((probs >= self.threshold_).sum())
            info["folds"] = n_folds
            if n_folds and fold_of is not None:  # the share of the training queries each fold held out, as dealt
                info["fold_shares"] = (np.bincount(fold_of, minlength=n_folds) / len(fold_of)).tolist()
            info["held_out"] = bool(n_folds)  # True: every query's probabilities from an adapter not fitted on it
            if stalled:
                info["folds_unconverged"] = stalled
                if info["converged"]:
                    logging.getLogger("ragkit").warning(
                        "cosine_adapter: L-BFGS stopped without converging in %d of the %d cross-validation folds "
                        "the threshold is chosen on (max_iter %d); the threshold may keep too much or too little; "
                        "raise max_iter", stalled, n_folds, self.params.max_iter)
        info.update(train_queries=int(n_q), pairs=int(len(y)), positives=int(y.sum()),
                    dim=int(qv.shape[1]), encoder=encoder.key, threshold=self.threshold_)
        self.info_ = info
        per_query = np.bincount(qidx, weights=y, minlength=n_q)
        top = int(np.argmax(per_query)) if n_q else 0
        self._warn_if_thin(len(usable), int(y.sum()), info,
                           top=(str(upstream.query_ids[top]), int(per_query[top])) if n_q > 1 else None)

    def _fit_part(self, X: np.ndarray, c: np.ndarray, y: np.ndarray, qidx: np.ndarray, fit_q: np.ndarray,
                  warn: bool = True) -> tuple[np.ndarray, dict]:
        """Fit the weights on the queries ``fit_q`` (``(n_q,)`` bool) of raw features ``X`` (``(n_q, D)``) and
        candidates ``c``, ``y``, ``qidx`` (``(n,)``); sets the standardisation and the power form's centre
        from those queries (what :meth:`_features1` and :meth:`_logits` then use)."""
        sel = fit_q[qidx]
        if y[sel].sum() == 0:
            raise DataError("cosine_adapter.fit: the training part of the split has no positive candidate")
        sd = X[fit_q].std(axis=0)
        self.feat_mean_ = X[fit_q].mean(axis=0)
        self.feat_std_ = np.where(sd > 1e-8, sd, 1.0)
        # the power form's centre: the median training candidate (its slope and logit there are a(q) and b(q))
        self.power_x0_ = (float(np.median(np.clip((c[sel] + 1.0) / 2.0, 1e-6, 1.0)))
                          if self.params.form == "power" else None)
        return self._train(self._features1(X[fit_q]), c[sel], y[sel], (np.cumsum(fit_q) - 1)[qidx[sel]], warn=warn)

    def _warn_if_thin(self, n_usable: int, n_positives: int, info: dict[str, Any],
                      top: tuple[str, int] | None = None) -> None:
        """Warn on the ``ragkit`` logger when the fit rests on too little: fewer than :data:`MIN_QUERIES`
        usable queries or :data:`MIN_POSITIVES` relevant candidates, a threshold chosen on the queries the
        adapter was fitted on (too few to hold any out), or a chosen threshold resting on fewer candidates
        than its target needs (:func:`positives_needed`: relevant out-of-fold candidates for a recall target,
        kept ones for a precision target): the threshold then fits those few (for recall 0.95 on a handful,
        the weakest one's probability) and cuts other queries' lists short.  ``top``: the query holding the
        most relevant candidates and their number; more than half of them in one query (one judging every
        document relevant) is thin too: the threshold then fits that query's candidates, whatever the count."""
        thin = []
        if top is not None and 2 * top[1] > n_positives:
            thin.append(f"{top[1]} of the {n_positives} relevant candidates from one query ({top[0]!r}), so the "
                        "threshold fits that query's list")
        if n_usable < MIN_QUERIES:
            thin.append(f"{n_usable} usable training quer{'y' if n_usable == 1 else 'ies'} (with a relevant document "
                        f"in the corpus; at least {MIN_QUERIES} recommended)")
        if n_positives < MIN_POSITIVES:
            thin.append(f"{n_positives} relevant candidate{'' if n_positives == 1 else 's'} retrieved (at least "
                        f"{MIN_POSITIVES} recommended)")
        if self.params.threshold is None:
            if not info["held_out"]:
                thin.append("a threshold chosen on the queries it was fitted on (too few to hold any out)")
            target, value = self.params.target, self.params.target_value
            if info["threshold_kept"] == info["threshold_pairs"]:  # (cut_below: nothing dropped, threshold 0)
                why = ("every retrieved training candidate is relevant" if n_positives == info["threshold_pairs"] else
                       f"the {target} target ({value:.4g}) is reached only by keeping every training candidate")
                thin.append(f"{why}, so no dropped candidate bounds the threshold: it keeps every candidate")
            need = positives_needed(target, value)
            have = int(info["threshold_positives"] if target == "recall" else info["threshold_kept"])
            if have < need:
                what = "relevant" if target == "recall" else "kept"
                where = f"out-of-fold over {info['folds']} folds" if info["held_out"] else "of the training queries"
                thin.append(f"a threshold for {target} {value:.4g} chosen on {have} {what} candidate"
                            f"{'' if have == 1 else 's'} ({where}; about {need} needed for that target: "
                            f"2/(1-{min(value, 0.99):.4g}))")
        if thin:
            logging.getLogger("ragkit").warning(
                "cosine_adapter: fitted on little: %s; the threshold (%.4g) may keep too much or cut other queries' "
                "lists short; give more judged queries, or set threshold: explicitly", "; ".join(thin), self.threshold_)

    # ------------------------------------------------------------------ inference
    def predict_proba(self, qvecs: np.ndarray, cosines: np.ndarray) -> np.ndarray:
        """P(relevant) for a padded matrix of cosines, one row per query.

        Parameters
        ----------
        qvecs : (B, d) array
            The queries' embeddings, from the adapter's encoder (``model``).
        cosines : (B, K) array
            Each query's candidates' raw cosines, sorted best first per row; NaN at the end of a row
            marks padding (rows of fewer than ``K`` candidates).

        Returns
        -------
        (B, K) float64 array
            P(relevant) of each candidate, in [0, 1], non-increasing along each row; NaN where
            ``cosines`` is NaN.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        DataError
            Shapes that do not match, a NaN before a value, a row not sorted best first, or
            values that are not cosines.
        """
        self._check_fitted()
        cosines = np.asarray(cosines, dtype=np.float64)
        qvecs = np.asarray(qvecs)
        if cosines.ndim != 2 or qvecs.ndim != 2 or len(qvecs) != len(cosines):
            raise DataError(f"cosine_adapter.predict_proba: expected qvecs (B, d) and cosines (B, K) with the same B, "
                            f"got qvecs {qvecs.shape} and cosines {cosines.shape}")
        B, K = cosines.shape
        valid = ~np.isnan(cosines)
        inside = (~valid[:, :-1] & valid[:, 1:]).any(axis=1)
        if inside.any():  # a NaN inside a row would shift its list features
            row = int(np.flatnonzero(inside)[0])
            raise DataError(f"cosine_adapter.predict_proba: cosines row {row} has NaN before a value; NaN marks "
                            "padding, at the end of a row only")
        lengths = valid.sum(axis=1)
        starts = np.zeros(B, np.int64)
        starts[1:] = np.cumsum(lengths)[:-1]
        flat = cosines[valid]
        qidx = np.repeat(np.arange(B), lengths)
        check_cosines(flat, "cosine_adapter.predict_proba", qidx, given="cosines")
        unsorted = first_unsorted(flat, qidx)
        if unsorted is not None:
            raise DataError(f"cosine_adapter.predict_proba: cosines row {unsorted} is not sorted best first (the "
                            "features read the top-1 and top-10 by position)")
        return self._proba_flat(np.asarray(qvecs), flat, lengths, starts, qidx, scatter=(valid, (B, K)))

    def _proba_flat(self, qv: np.ndarray, c: np.ndarray, lengths: np.ndarray, starts: np.ndarray,
                    qidx: np.ndarray, scatter: Any = None) -> np.ndarray:
        from scipy.special import expit

        X = self._raw_features(qv, c, lengths, starts)
        if X.shape[1] != self.weights_.shape[0] - 1:
            raise DataError(
                f"cosine_adapter: the adapter was trained on {self.weights_.shape[0] - 1} features "
                f"(query dim {self.info_.get('dim')}), got {X.shape[1]} (query vectors of dim {qv.shape[1]}); "
                "use the same encoder model as at fit time"
            )
        r = expit(self._logits(self._features1(X), self.weights_, c.astype(np.float64), qidx))
        if scatter is None:
            return r
        valid, shape = scatter
        out = np.full(shape, np.nan)
        out[valid] = r
        return out

    def _call(self, state: State) -> State:
        out = state.copy()
        assert state.rankings is not None  # (Operator.__call__ refused a state without)
        if not len(state):
            return out
        t = self.opt(state, "threshold")
        t = self.threshold_ if t is None else float(t)
        k_min = read_count(self, "k_min", self.opt(state, "k_min", self.params.k_min), 0)  # the call's (checked),
        # else the parameter
        rows, c, lengths, starts, qidx = flatten(state.rankings)
        check_cosines(c, self.name, qidx)
        check_dense_rankings(state.rankings, c, qidx, self.name, ordered=True)  # the kept set is a prefix
        self._warn_shallow(int(lengths.max()) if len(lengths) else 0)
        qv = query_vectors(out, get_encoder(self.params.model))
        r = self._proba_flat(qv, c, lengths, starts, qidx)
        # r is monotone in the cosine and the list is sorted, so the kept set is a prefix; compared in float64
        # (float32 rounds every probability above 1 - 6e-8 to 1.0, which a threshold of 1 would then keep)
        n_keep = leading_run(r >= t, lengths, starts, qidx)  # (a rise of float rounding lets no failing one in)
        n_keep = np.maximum(n_keep, np.minimum(k_min, lengths))
        out.rankings = cut_prefix(state.rankings, n_keep, new_scores=ordered_float32(r, c, lengths, starts, qidx),
                                  starts=starts,
                                  fields={"cosine": c})
        return out

    def _warn_shallow(self, longest: int) -> None:
        """Warn once per adapter object when its list features read shorter lists than at training: the incoming
        rankings hold at most ``longest`` candidates, fewer than the training depth ``depth_``, while the corpus
        holds more (a retriever's k lowered for a call, ``search(q, dense={"k": 1})`` behind ``Dense(k=10)``).
        The top-1 minus top-10, mean and std of a shorter list are off the training distribution: the
        probabilities may drop every candidate.  Nothing without list features, or for empty rankings."""
        depth = getattr(self, "depth_", None)
        corpus = getattr(self, "corpus_", None)
        n_docs = len(corpus) if corpus is not None else depth
        if (not self.params.list_features or depth is None or n_docs is None or longest == 0
                or longest >= min(depth, n_docs) or not first_time_for(self, "_warned_shallow")):
            return
        logging.getLogger("ragkit").warning(
            f"{self.name}: the rankings it filters hold at most {longest} candidate{'' if longest == 1 else 's'}, "
            f"fewer than the {depth} per query it was trained on (the corpus has {n_docs}): its list features "
            "(top-1 minus top-10, mean and std of the list) then read shorter lists than at training, so its "
            "probabilities are off their training distribution and may drop every candidate; give the retriever "
            f"before it a k of at least {min(depth, n_docs)} (the k it was fitted behind; a filter matching fewer "
            "documents shortens the lists too), or fit it with list_features=False")

    # ------------------------------------------------------------------ updates
    #: it holds nothing per document (its weights read the query and its candidates' cosines): a pipeline whose
    #: retrievers were edited (add / remove) takes it along (:func:`~ragkit.pipelines._compose.shared_corpus`)
    per_document: ClassVar[bool] = False

    def add(self, corpus: Corpus) -> "CosineAdapter":
        """Follow documents added to the retriever before it (no refit): the adapter holds nothing per
        document, so only the corpus it belongs to grows.  Ids already held are a :class:`DataError`."""
        self._check_fitted()
        self.corpus_.check_addable(corpus, "cosine_adapter.add", "held")
        if len(corpus):
            self.corpus_ = self.corpus_.concat(corpus, "cosine_adapter.add")
        return self

    def remove(self, ids: Any) -> "CosineAdapter":
        """Follow documents removed from the retriever before it (by id; no refit): the adapter holds nothing
        per document, so only the corpus it belongs to shrinks.  An unknown id is a :class:`DataError`."""
        self._check_fitted()
        rows = self.corpus_.rows_to_remove(ids, "cosine_adapter.remove")
        if len(rows):
            keep = np.ones(len(self.corpus_), dtype=bool)
            keep[rows] = False
            self.corpus_ = self.corpus_.subset(keep)
        return self

    # ------------------------------------------------------------------ persistence
    def _save(self, folder: Path) -> None:
        save_arrays(folder, adapter_weights=self.weights_, adapter_feat_mean=self.feat_mean_,
                    adapter_feat_std=self.feat_std_)
        write_json(folder / "adapter.json", {"threshold": self.threshold_, "depth": self.depth_, "info": self.info_,
                                             "power_x0": self.power_x0_})
        save_encoder_key(folder, get_encoder(self.params.model))

    def _load(self, folder: Path, mmap: bool = False) -> None:
        check_encoder_key(folder, get_encoder(self.params.model), self.name, self.params.model)
        self.weights_ = load_array(folder, "adapter_weights")
        self.feat_mean_ = load_array(folder, "adapter_feat_mean")
        self.feat_std_ = load_array(folder, "adapter_feat_std")
        meta = read_json(folder / "adapter.json")
        if "threshold" not in meta:
            raise ArtifactError(f"{folder / 'adapter.json'}: missing key 'threshold'")
        if self.weights_.shape != (len(self.feat_mean_) + 1, self.n_params):
            raise ArtifactError(f"{folder}: adapter weights of shape {self.weights_.shape} do not match "
                                f"{len(self.feat_mean_)} features and form {self.params.form!r}")
        def number(key: str, value: Any, low_open: bool) -> float:
            """``value`` of ``adapter.json``'s ``key`` as a float in [0, 1] ((0, 1] where ``low_open``; NaN fails
            both bounds, a bool is refused) or an ArtifactError naming the file, the key and the value."""
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not (0 < value if low_open else 0 <= value) or not value <= 1):
                raise ArtifactError(f"{folder / 'adapter.json'}: {key} must be a number in "
                                    f"{'(0, 1]' if low_open else '[0, 1]'}, got {value!r}")
            return float(value)

        t = number("threshold", meta["threshold"], low_open=False)
        for name, arr in (("adapter_weights", self.weights_), ("adapter_feat_mean", self.feat_mean_),
                          ("adapter_feat_std", self.feat_std_)):
            if not np.all(np.isfinite(arr)):
                bad = int(np.sum(~np.isfinite(arr)))
                raise ArtifactError(f"{folder / (name + '.npy')}: holds {bad} non-finite "
                                    f"value{'' if bad == 1 else 's'} of {arr.size}; expected finite adapter "
                                    "parameters (a corrupt or diverged save)")
        if len(self.feat_std_) != len(self.feat_mean_):
            raise ArtifactError(f"{folder}: adapter_feat_std holds {len(self.feat_std_)} values, adapter_feat_mean "
                                f"{len(self.feat_mean_)}; expected one of each per feature")
        self.threshold_ = t
        self.depth_ = None if meta.get("depth") is None else int(meta["depth"])  # None: saved before depth was kept
        x0 = meta.get("power_x0") if self.params.form == "power" else None  # None: saved before power was centred
        self.power_x0_ = None if x0 is None else number("power_x0", x0, low_open=True)
        self.info_ = saved_fit_report(meta.get("info", {}), f"{folder / 'adapter.json'}: info")
