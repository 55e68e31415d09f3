"""Learning a fuser's branch weights from judged training queries.

Grid search over the weight simplex (plus the exact uniform point, which a 0.1 or 0.25 grid
lacks for 3 or 5+ branches, and the fuser's own ``weights`` when it was given some off the grid),
scored by per-query nDCG@10 (pytrec_eval) on the training queries' fused rankings.  K-fold
cross-validation (the queries of one text, whitespace and case aside, in one fold, as ``ragkit
train``'s held-out fold keeps them) picks the best weights on each fold's training part (of equally
good grid points, the one closest to the baseline, so no branch is dropped for nothing); the final
weights are the mean of those per-fold picks (bagging across folds, which damps the variance of a
single arg-max over a few hundred queries), and the mean held-out nDCG@10 of the picks is the
estimate of that procedure.

Learning must earn its weights against a baseline, the weights the fuser would use unlearned: equal
weights, or the fuser's own ``weights`` when it was given some.  When that estimate is no better than
the baseline's on the same held-out folds, or the averaged weights score below the baseline on the
training queries, the baseline is kept (``WeightSearch.kept == "uniform"``, or ``"given"`` for given
weights, with a warning on the ``ragkit`` logger).  The cross-validated score of the weights kept
(:attr:`WeightSearch.held_out_ndcg`) took part in that choice, so it is optimistic by selection:
usually the higher of the two scores on the same folds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Literal

import numpy as np

from ragkit._flat import split_counts
from ragkit._topk import group_positions
from ragkit.errors import DataError, some_ids
from ragkit.eval.metrics import _evaluate_noted, _per_query_metrics
from ragkit.run import Run
from ragkit.types import Qrels, Ranking, State, check_qrels, normalised_text, usable_or_refused

__all__ = ["simplex_grid", "WeightSearch", "learn_weights", "best_grid_point"]

#: what nDCG@10 reads of a ranking: the documents reaching its 11th best score (ties kept; one more than 10
#: covers a document ignored for having the query's id), as per_query_ndcg cuts it
_DEPTH = 10 + 1


def simplex_grid(n: int, step: float) -> np.ndarray:
    """All weight vectors with ``n`` non-negative entries in multiples of ``step`` summing to 1:
    ``(C(m + n - 1, n - 1), n)`` for ``m = 1 / step``, in lexicographic order of the entries.

    Built column by column (each partial vector extended by every count its remainder allows),
    so the cost is the number of points, not the ``(m + 1) ** n`` tuples of a filtered product.

    Examples
    --------
    >>> simplex_grid(3, 0.5).tolist()
    [[0.0, 0.0, 1.0], [0.0, 0.5, 0.5], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]
    """
    m = int(round(1 / step))
    if n < 1:
        return np.zeros((0, 0), np.float64)
    counts = np.zeros((1, 0), np.int64)
    left = np.array([m], np.int64)
    for _ in range(n - 1):
        options = left + 1                                          # the next entry takes 0..left
        parent = np.repeat(np.arange(len(counts)), options)
        value = group_positions(options)
        counts = np.column_stack([counts[parent], value])
        left = left[parent] - value
    return np.column_stack([counts, left]).astype(np.float64) / m


@dataclass
class WeightSearch:
    """Result of :func:`learn_weights`: chosen weights, per-fold picks and estimates.

    ``cv_ndcg`` is the learning procedure's held-out nDCG@10 (each fold scored with the pick of the other
    folds), ``uniform_cv_ndcg`` the baseline's on the same folds; ``train_ndcg`` is the chosen
    ``weights``' nDCG@10 on the training queries, ``baseline_ndcg`` the baseline's.  The baseline is the
    fuser's unlearned weights, ``compared_with`` says which: ``"uniform"`` (equal weights) or ``"given"``
    (the fuser's own ``weights``, normalised to sum to 1).  ``kept`` says which weights were chosen:
    ``"learned"`` (the mean of the per-fold picks, ``averaged``) or the baseline, ``compared_with``'s value
    (when the averaged ones do not beat it: ``cv_ndcg <= uniform_cv_ndcg``, or their training nDCG@10,
    ``averaged_train_ndcg``, is below ``baseline_ndcg``).  ``weights`` and ``averaged`` are on the scale
    :func:`learn_weights` was given (summing to its ``scale``, 1 by default), ``fold_picks`` on the simplex
    (each summing to 1).

    ``cv_ndcg`` and ``uniform_cv_ndcg`` are each an unselected held-out estimate of one option; the kept
    weights' one, :attr:`held_out_ndcg`, is not: those two scores chose it."""

    weights: np.ndarray
    fold_picks: np.ndarray
    cv_ndcg: float
    train_ndcg: float
    baseline_ndcg: float
    uniform_cv_ndcg: float = float("nan")
    kept: Literal["learned", "uniform", "given"] = "learned"
    compared_with: Literal["uniform", "given"] = "uniform"
    averaged: np.ndarray = field(default_factory=lambda: np.zeros(0))
    averaged_train_ndcg: float = float("nan")
    #: why no cross-validated estimate was made (the usable queries all have one text), "" when one was: the
    #: warning's text, less the ``where`` that starts it (given to a fuser that asked not to be warned)
    note: str = ""

    @property
    def held_out_ndcg(self) -> float:
        """The cross-validated nDCG@10 of the weights kept: ``cv_ndcg`` for learned ones, ``uniform_cv_ndcg``
        when the baseline (equal or given weights) was kept (what a choice between fusion settings compares).

        Optimistic by selection: the same held-out folds' scores chose between the two (the learned weights
        are kept only when ``cv_ndcg > uniform_cv_ndcg``), so this is their maximum unless the training
        nDCG@10 overruled it, and a choice among several settings by it adds to the optimism.  For an
        unbiased figure, score the kept weights on queries no choice saw (``ragkit train``'s held-out
        report)."""
        return self.cv_ndcg if self.kept == "learned" else self.uniform_cv_ndcg

    @property
    def cross_validated(self) -> bool:
        """Whether :attr:`held_out_ndcg` is a number: False (it is nan) when no query could be held out (the usable
        queries all have one text); settings are then compared by their training nDCG@10 (``train_ndcg``)."""
        return bool(np.isfinite(self.held_out_ndcg))

    def report(self) -> dict[str, object]:
        """What a fuser's ``learned_`` should add to its weights and estimates when the baseline was kept
        (empty otherwise): ``kept``, the averaged weights set aside and the numbers that set them aside (the
        baseline's held-out estimate as ``uniform_cv_ndcg@10``, or ``given_cv_ndcg@10`` for given weights)."""
        if self.kept == "learned":
            return {}
        return {"kept": self.kept, "averaged_weights": self.averaged.tolist(),
                "averaged_train_ndcg@10": self.averaged_train_ndcg,
                f"{self.compared_with}_cv_ndcg@10": self.uniform_cv_ndcg}


def best_grid_point(scores: np.ndarray, from_uniform: np.ndarray, tol: float = 1e-12) -> int:
    """Index of the best score; ties (within ``tol``) go to the point closest to the baseline (``from_uniform``:
    each point's distance from it; equal weights unless a fuser's own weights were given).

    Examples
    --------
    >>> best_grid_point(np.array([0.5, 0.5, 0.5]), np.array([0.7, 0.0, 0.7]))
    1
    """
    scores = np.nan_to_num(np.asarray(scores, np.float64), nan=-np.inf)
    tied = np.flatnonzero(scores >= scores.max() - tol)
    return int(tied[np.argmin(from_uniform[tied])])


def learn_weights(fuse: Callable[[State, np.ndarray], list[Ranking]], state: State, qrels: Qrels,
                  corpus_ids: np.ndarray, *, folds: int = 5, step: float | None = None, seed: int = 0,
                  heads: Callable[[np.ndarray, int], tuple[np.ndarray, ...]] | None = None,
                  where: str = "", warn: bool = True, baseline: np.ndarray | None = None,
                  scale: float = 1.0) -> WeightSearch:
    """Choose branch weights maximising nDCG@10 on the usable queries of ``state``: those with a judgement
    > 0 of a document in ``corpus_ids`` (:func:`~ragkit.types.usable_query_ids`; others score nDCG 0 for
    every weight and are left out).  At least 2 are needed (:class:`DataError`).

    The weights are the mean of the per-fold picks unless they do not beat the ``baseline`` (equal weights,
    ``1 / n`` each, unless given): a cross-validated nDCG@10 (``cv_ndcg``) no higher than the baseline's on the
    same held-out folds, or a training nDCG@10 below the baseline's; then the baseline is kept
    (``kept="uniform"``, or ``"given"`` for given weights) and a warning on the ``ragkit`` logger gives both
    pairs of numbers.

    The queries of one text (:func:`~ragkit.types.normalised_text`: whitespace and case aside) share a fold,
    whatever their ids, as ``ragkit train``'s held-out fold keeps them; the texts, numbered in their sorted order
    (so the folds, and the weights, depend on the set of queries, not on the order they are listed in), are
    permuted with ``seed``.
    Usable queries of one text leave no question to hold out: the baseline is kept, with a warning (its text
    also in ``note``), and the cross-validated estimates are nan (only the baseline is scored;
    ``cross_validated`` is False).

    Parameters
    ----------
    fuse : callable (state, weights) -> rankings
        The fuser's fusion with the given weights.
    state : State
        The training queries with ``branches`` filled by the parallel branches.
    qrels : Qrels
        Training judgements (never test).
    heads : callable (weights, k) -> (query, row, score) arrays, optional
        The same fusion reduced to what its scores at cut-offs below ``k`` read (each ranking's
        entries reaching its k-th best float32 score, ties kept: :meth:`PreparedFusion.heads
        <ragkit.pipelines.fusion.PreparedFusion.heads>`).  Given, every weight vector is scored from it,
        with the same nDCG, without building rankings (SciFact train, 3 branches: 3-6x faster).
    where : str
        The fuser and the setting tried (``"weighted (norm: learn, trying zscore)"``), starting the warning
        when the baseline is kept: a fuser trying several settings may warn once for each (when the learned
        weights of several do not beat the baseline).
    warn : bool
        False: the queries of one text are not warned of here, only described in the result's ``note`` (a fuser
        trying several settings, the same queries for each, says it once, with how it then chose among them).
    baseline : (n_branches,) array, optional
        The fuser's own weights, what it uses unlearned (None: equal weights): scaled to sum to 1, they are a
        point of the search (added to the grid when off it), win its ties (the grid point closest to them does)
        and are kept unless the learned weights beat them (a warning quotes them as given: ``[2.0, 1.0]``).
        Weights equal to one another are equal weights.
    scale : float
        What the returned ``weights`` and ``averaged`` sum to (default 1: the simplex the search works on): a
        fuser keeps its unlearned scale, the sum of its given weights (``math.fsum(baseline)``, taken as their
        exact sum, so a baseline kept or picked by every fold comes back exactly as given) or the number of
        branches.  The warning quotes the weights on this scale.

    The weights are exact means: the per-fold picks (multiples of the grid step, the uniform point's
    ``1 / n``, or a given baseline) are averaged in fractions, multiplied by ``scale`` in fractions and rounded
    once, so 0.8, 0.9, 0.8, 0.8, 0.9 average to 0.84, not the 0.8400000000000001 of a float sum, and picks of
    [0.7, 0.2, 0.1] on the scale of 3 branches are [2.1, 0.6, 0.3], not [2.0999999999999996, ...].
    """
    n = len(state.branches or [])
    step = step or (0.1 if n <= 3 else 0.25)
    grid = simplex_grid(n, step)
    base = np.full(n, 1 / n)
    given_w = None
    if baseline is not None:
        given_w = np.asarray(baseline, np.float64)
        if given_w.shape != (n,) or not np.all(np.isfinite(given_w)) or given_w.min() < 0 or given_w.sum() <= 0:
            raise ValueError(f"learning fusion weights: baseline must be {n} non-negative finite weights (one a "
                             f"branch), not all 0, got {given_w.tolist()}")
        if np.abs(given_w / given_w.sum() - 1 / n).max() > 1e-9:  # weights equal to one another are equal weights
            base = given_w / given_w.sum()
    given = bool(np.abs(base - 1 / n).max() > 1e-9)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"learning fusion weights: scale must be a positive finite number (what the weights sum "
                         f"to), got {scale}")
    # the baseline as exact fractions of 1 (g / sum(g), or 1 / n), and the scale exactly: the given weights' exact
    # sum where it is theirs, so the baseline on that scale is the given weights, not an ulp off
    exact_base = ([Fraction(x) / sum(map(Fraction, given_w.tolist()), Fraction(0)) for x in given_w.tolist()]
                  if given and given_w is not None else [Fraction(1, n)] * n)
    exact_scale = (sum(map(Fraction, given_w.tolist()), Fraction(0))
                   if given_w is not None and scale == math.fsum(given_w.tolist()) else Fraction(scale))

    def on_scale(exact: list[Fraction]) -> np.ndarray:
        return np.array([float(x * exact_scale) for x in exact], np.float64)

    base_on_scale = on_scale(exact_base)
    compared_with: Literal["uniform", "given"] = "given" if given else "uniform"
    # (the weights as the fuser was given them, [2.0, 1.0], not scaled: the learned ones are fractions of 1)
    said = f"the given weights {given_w.tolist()}" if given and given_w is not None else "equal weights"
    for point in ([np.full(n, 1 / n), base] if given else [np.full(n, 1 / n)]):
        if np.linalg.norm(grid - point, axis=1).min() > 1e-9:  # a point off the grid (uniform: 3 or 5+ branches)
            grid = np.vstack([grid, point])
    # the unlearned fuser's point: the baseline, the winner of ties (the point closest to it) and kept on a tie
    from_base = np.linalg.norm(grid - base, axis=1)
    at_base = int(np.argmin(from_base))
    # a query judged only 0, or whose relevant documents are none of the corpus's, scores nDCG 0 whatever the
    # weights: it is unjudged here (it would only dilute the folds and the estimates)
    qids = usable_or_refused(state.query_ids, qrels, corpus_ids, "learning fusion weights")
    # in sorted order: the order the judged queries are listed in changes no fold, pick or mean (float sums)
    in_state = {q: i for i, q in enumerate(qids)}
    qids = sorted(qids)
    if len(qids) < 2:
        raise DataError(f"learning fusion weights: 1 usable (with a relevant document in the corpus) training query "
                        f"({qids[0]!r}) of {len(state)}; cross-validation needs at least 2 (one to learn from, one "
                        "held out)")
    # each query's text (normalised_text: whitespace and case aside), numbered in the sorted order of the texts, so
    # the folds depend on the set of judged queries, not on the order they are listed in: the queries of one text
    # share a fold (below)
    text_of = dict(zip(state.query_ids, state.queries))
    normalised = [normalised_text(text_of[q]) for q in qids]
    numbers = {t: i for i, t in enumerate(sorted(set(normalised)))}
    text_group = np.array([numbers[t] for t in normalised], np.intp)
    n_texts = len(numbers)
    if n_texts < 2:  # no fold can hold a question out: nothing to earn weights with, the baseline only is scored
        grid, from_base, at_base = grid[[at_base]], from_base[[at_base]], 0
    # checked once here (string ids, integer grades), not again by each of the grid's evaluations
    judged = check_qrels({q: qrels[q] for q in qids}, "learning fusion weights")
    per_q = np.zeros((len(grid), len(qids)))
    for g, w in enumerate(grid):
        if heads is None:
            st = state.copy()
            st.rankings = fuse(state, w)
            per_q[g] = _per_query_metrics(st, judged, corpus_ids, ["ndcg@10"],  # (in the state's order)
                                          qrels_checked=True, ids_checked=True)["ndcg@10"][[in_state[q] for q in qids]]
        else:  # what per_query_ndcg reads of fuse(state, w)
            pq = _evaluate_noted(_heads_run(heads(w, _DEPTH), state.query_ids, corpus_ids), judged, ["ndcg@10"],
                                 qrels_checked=True).per_query
            per_q[g] = [pq["ndcg@10"][q] for q in qids]
    if n_texts < 2:
        base_ndcg = float(per_q[at_base].mean())
        note = (f"learning fusion weights: the {len(qids)} usable training queries ({some_ids(qids)}) all have one "
                f"text (whitespace and case aside), {text_of[qids[0]]!r}; cross-validation keeps the queries of one "
                f"text in one fold, so none can be held out; keeping {said} (no cross-validated nDCG@10: nan)")
        if warn:
            logging.getLogger("ragkit").warning("%s%s", f"{where}: " if where else "", note)
        return WeightSearch(weights=base_on_scale, fold_picks=np.zeros((0, n)), cv_ndcg=float("nan"),
                            train_ndcg=base_ndcg, baseline_ndcg=base_ndcg, kept=compared_with,
                            compared_with=compared_with, note=note)
    # the queries of one text (normalised_text) share a fold, as train's held-out fold keeps them on one side: a
    # question picked on under one id and scored under another is not held out.  The texts, numbered in their
    # sorted order, are permuted with the seed.
    rng = np.random.default_rng(seed)
    fold_of = (rng.permutation(n_texts) % max(2, min(folds, n_texts)))[text_group]
    picks, held, held_base = [], [], []
    for f in range(fold_of.max() + 1):
        tr, te = fold_of != f, fold_of == f
        best = best_grid_point(per_q[:, tr].mean(axis=1), from_base)
        picks.append(grid[best])
        held.append(per_q[best, te].mean())
        held_base.append(per_q[at_base, te].mean())  # the baseline on the same held-out fold
    # the exact mean of the picks (a pick of the baseline as its exact fractions): on the simplex to fuse with, on
    # the scale to return
    exact_mean = _exact_mean(np.array(picks), int(round(1 / step)) * n,
                             exact={tuple(grid[at_base].tolist()): exact_base})
    mean = np.array([float(x) for x in exact_mean], np.float64)
    at_baseline = np.abs(mean - grid[at_base]).max() <= 1e-9  # (on the simplex: every fold picked the baseline)
    averaged = base_on_scale.copy() if at_baseline else on_scale(exact_mean)
    final = (Run.from_rankings(state.query_ids, fuse(state, mean), corpus_ids, _nan_checked=True, _ids_checked=True)
             if heads is None
             else _heads_run(heads(mean, _DEPTH), state.query_ids, corpus_ids))
    averaged_train = float(_evaluate_noted(final, judged, ["ndcg@10"], qrels_checked=True).scores["ndcg@10"])
    cv, cv_base, base_ndcg = float(np.mean(held)), float(np.mean(held_base)), float(per_q[at_base].mean())
    train_ndcg = averaged_train
    kept: Literal["learned", "uniform", "given"] = "learned"
    weights = averaged.copy()
    if not at_baseline and (cv <= cv_base or averaged_train < base_ndcg):
        weights, train_ndcg, kept = base_on_scale.copy(), base_ndcg, compared_with
        logging.getLogger("ragkit").warning(
            "%slearning fusion weights: the learned weights %s do not beat %s (cross-validated nDCG@10 "
            "%.4f vs %.4f for %s on the same held-out folds; %.4f vs %.4f on the %d training queries); "
            "keeping %s", f"{where}: " if where else "", averaged.tolist(), said, cv, cv_base,
            "them" if given else said, averaged_train, base_ndcg, len(qids), said)
    return WeightSearch(weights=weights, fold_picks=np.array(picks), cv_ndcg=cv, train_ndcg=train_ndcg,
                        baseline_ndcg=base_ndcg, uniform_cv_ndcg=cv_base, kept=kept, compared_with=compared_with,
                        averaged=averaged, averaged_train_ndcg=averaged_train)


def _exact_mean(points: np.ndarray, denominator: int,
                exact: dict[tuple[float, ...], list[Fraction]] | None = None) -> list[Fraction]:
    """The exact mean of the rows of ``points``, whose entries are fractions with denominators dividing
    ``denominator`` (grid points: multiples of the step; the uniform point: ``1 / n``); rounded once to
    float64 by the caller (a float sum adds rounding errors: 0.8400000000000001).  A row that is a key of
    ``exact`` is taken as its fractions (a fuser's given weights: ``g / sum(g)``); an entry no such fraction
    rounds to (0.123) as the float it is.  A few folds times a few branches: plain fractions.

    Examples
    --------
    >>> [float(x) for x in _exact_mean(np.array([[0.9, 0.1], [0.8, 0.2], [0.8, 0.2], [0.9, 0.1], [0.8, 0.2]]), 20)]
    [0.84, 0.16]
    """
    exact = exact or {}
    rows = [exact.get(tuple(row.tolist())) or [_fraction(float(x), denominator) for x in row] for row in points]
    return [sum(col, Fraction(0)) / len(rows) for col in zip(*rows)]


def _fraction(x: float, denominator: int) -> Fraction:
    """``x`` as the fraction with a denominator up to ``denominator`` that rounds to it, or exactly (its binary
    value) where none does."""
    near = Fraction(x).limit_denominator(denominator)
    return near if float(near) == x else Fraction(x)


def _heads_run(heads: tuple[np.ndarray, ...], query_ids: list[str], corpus_ids: np.ndarray) -> Run:
    """A run of every query of ``query_ids`` from fused ``(q, row, score)`` arrays sorted by query
    (the order within a query is free: trec_eval orders by score)."""
    q, row, score = heads
    counts = np.bincount(q, minlength=len(query_ids))
    # (the corpus's ids; PreparedFusion.heads' scores are float32 and never NaN: the Run need not check either)
    return Run(list(query_ids), split_counts(corpus_ids[row], counts), split_counts(score, counts),
               _nan_checked=True, _ids_checked=True)
