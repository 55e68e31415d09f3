"""Score cut-offs used as relevance-filtering baselines: a fixed score and a per-query relative cut-off.

Both are stateless and keep a prefix of each (sorted) ranking, so the order never changes.
The top-``k`` cut-off is :class:`ragkit.filters.TopK`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from pydantic import Field

from ragkit._flat import cut_prefix, flatten, leading_run, read_count, unsorted_at
from ragkit.errors import DataError
from ragkit.operator import Operator
from ragkit.options import PARAM, count_option
from ragkit.params import Params
from ragkit.registry import register
from ragkit.types import State

__all__ = ["ScoreThreshold", "RelativeThreshold"]


class _PrefixCut(Operator):
    """Shared body of the score cut-offs: per query, the ranking is cut before the first document the rule
    does not keep, at least ``max(k_min, min_keep)`` are kept (all queries at once on the flattened
    rankings)."""

    kind = "filter"
    reads_rankings = True  # it cuts the rankings of the steps before it: refused before the first retriever
    params: ScoreThresholdParams | RelativeThresholdParams  # (k_min)
    stateless = True
    min_keep = 0  # kept per query whatever the rule and ``k_min`` say
    run_options = {"k_min": count_option(0)}

    def _keep(self, state: State, scores: np.ndarray, lengths: np.ndarray, starts: np.ndarray,
              qidx: np.ndarray) -> np.ndarray:
        """(n_docs,) bool over the flattened rankings: documents the rule keeps."""
        raise NotImplementedError

    def _call(self, state: State) -> State:
        out = state.copy()
        assert state.rankings is not None  # (Operator.__call__ refused a state without)
        k_min = read_count(self, "k_min", self.opt(state, "k_min", self.params.k_min), 0)
        _, scores, lengths, starts, qidx = flatten(state.rankings)
        _check_sorted(scores, qidx, self.name)
        keep = self._keep(state, scores, lengths, starts, qidx)
        n_keep = leading_run(keep, lengths, starts, qidx)
        n_keep = np.maximum(n_keep, np.minimum(max(k_min, self.min_keep), lengths))
        out.rankings = cut_prefix(state.rankings, n_keep)
        return out


def _check_sorted(scores: np.ndarray, qidx: np.ndarray, who: str) -> None:
    """Raise DataError unless every ranking is sorted by score, best first (NaN only at the end):
    a cut-off keeps a prefix, which is the passing documents only in such a ranking.  A rise of float
    rounding passes, as in every operator's output (:func:`~ragkit._results.score_rises`)."""
    i = unsorted_at(scores, qidx, nan_last=True)
    if i is not None:
        raise DataError(f"{who} keeps a prefix of each ranking and expects it sorted by score, best first (NaN "
                        f"last); query {int(qidx[i])} of the batch is not ({float(scores[i]):.9g} before "
                        f"{float(scores[i + 1]):.9g}): put {who} after a step that returns sorted rankings")


class ScoreThresholdParams(Params):
    threshold: float = Field(default=0.5,
                             description="Keep documents whose score is >= this value, in the units of the "
                                         "scores it cuts: raw cosines in [-1, 1] after dense (a threshold above 1 "
                                         "is refused, one below -1 keeps everything), BM25 scores after bm25.")
    k_min: int = Field(
        default=0, ge=0, description="Always keep at least this many documents per query (0: lists may be empty).")


@register
class ScoreThreshold(_PrefixCut):
    """Keep the documents whose score is at least a fixed, global ``threshold``.

    The usual baseline for relevance filtering of embedding retrieval: one cosine cut-off
    for every query (compare :class:`ragkit.filters.CosineAdapter`, Rossi et al.,
    CIKM 2024, arXiv 2408.04887).  A threshold no cosine can reach (above 1) after a ``dense``
    or ``knn_embed`` is refused before any work (one below -1 keeps everything)
    (:func:`~ragkit.pipelines._checks.threshold_scale_problem`), as a parameter at load and fit and as a
    per-call override at search (:func:`~ragkit.pipelines._checks.search_threshold_problem`): override with
    ``pipeline.search(queries, score_threshold={"threshold": 0.4})``.

    Examples
    --------
    >>> from ragkit.types import Ranking, State
    >>> st = State(["q"], rankings=[Ranking([3, 1, 2], [.9, .5, .1])])
    >>> ScoreThreshold(threshold=0.5)(st).rankings[0].rows.tolist()
    [3, 1]
    """

    name = "score_threshold"
    Params = ScoreThresholdParams
    params: ScoreThresholdParams
    example = {"threshold": 4.0}  # keeps 1 to 20 of BM25's 20 results per query of the conformance slice
    run_options = {**_PrefixCut.run_options, "threshold": PARAM}

    def _keep(self, state, scores, lengths, starts, qidx):
        return scores >= float(self.opt(state, "threshold", self.params.threshold))

    def check_run_options(self, options: Mapping[str, Any]) -> None:
        """A per-search ``threshold`` the scores reaching this step cannot reach (above 1 on a dense retriever's
        cosines) is refused before any work, as the same parameter is at fit
        (:func:`~ragkit.pipelines._checks.search_threshold_problem`)."""
        if options.get("threshold") is None:
            return
        from ragkit.pipelines._checks import search_threshold_problem

        problem = search_threshold_problem(self, float(options["threshold"]), options.get("k_min"))
        if problem is not None:
            raise ValueError(f"threshold: {problem}")


class RelativeThresholdParams(Params):
    alpha: float = Field(default=0.9,
                         gt=0, le=1, description="Keep documents scoring >= alpha x the query's top score.")
    k_min: int = Field(default=0, ge=0, description="Always keep at least this many documents per query.")


@register
class RelativeThreshold(_PrefixCut):
    """Per-query relative cut-off: keep documents with ``score >= alpha * top score``.

    For a non-positive top score the rule reads ``score >= top - (1 - alpha) * |top|`` (the
    same rule for positive scores, and still a margin below the top for negative ones).
    The top document is always kept.

    Examples
    --------
    >>> from ragkit.types import Ranking, State
    >>> st = State(["q"], rankings=[Ranking([3, 1, 2], [.8, .7, .3])])
    >>> RelativeThreshold(alpha=0.8)(st).rankings[0].rows.tolist()
    [3, 1]
    """

    name = "relative_threshold"
    Params = RelativeThresholdParams
    params: RelativeThresholdParams
    example = {"alpha": 0.6}  # keeps 1 to 7 of BM25's 20 results per query of the conformance slice
    run_options = {**_PrefixCut.run_options, "alpha": PARAM}
    min_keep = 1  # the top document

    def _keep(self, state, scores, lengths, starts, qidx):
        if not scores.size:
            return np.zeros(0, bool)
        alpha = float(self.opt(state, "alpha", self.params.alpha))
        # in float64 (the float32 scores exactly): a float32 bar rounded the boundary either way, keeping a score
        # one ulp below alpha * top or dropping one at it
        top = np.zeros(len(lengths), np.float64)
        top[lengths > 0] = scores[starts[lengths > 0]]
        with np.errstate(invalid="ignore"):  # an infinite top: the bar is the top itself (inf - inf is NaN)
            bar = np.where(np.isinf(top), top, np.where(top > 0, alpha * top, top - (1 - alpha) * np.abs(top)))
        return np.asarray(scores, np.float64) >= bar[qidx]
