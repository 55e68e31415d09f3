"""Judges: operators that decide, per query, whether a :class:`~ragkit.pipelines.Loop` is done.

A judge (``kind = "judge"``) writes one boolean per query into ``state.values["done"]``;
``Loop`` re-runs its body on the queries not yet done, up to ``max_iters`` times.  This
is Modular RAG's "scheduling" (Gao et al., arXiv 2407.21059): rule-based judges deciding
when to retrieve again or stop.

* :class:`TopKStable` (``topk_stable``): done when the top-k documents did not change
  since the previous iteration (the loop has converged).
* :class:`ScoreReached` (``score_reached``): done when the score at a rank reaches a
  threshold (the retrieval is confident enough).
* :class:`MaxOnly` (``max_only``): never done; the loop runs exactly ``max_iters`` times.

A judge keeps its memory between iterations in ``state.values`` under a key starting
with ``_``; the loop removes such keys when it ends.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ragkit.operator import Operator
from ragkit.params import Params
from ragkit.registry import register
from ragkit.types import State

__all__ = ["TopKStable", "ScoreReached", "MaxOnly"]


class TopKStableParams(Params):
    k: int = Field(10, ge=1, description="Size of the top list compared between iterations.")
    order: Literal["set", "ranked"] = Field(
        "set", description="'set': the same documents in any order count as stable; 'ranked': the same order too.")


@register
class TopKStable(Operator):
    """Done when a query's top-``k`` documents equal those of the previous iteration.

    The previous top-``k`` rows are stored per query in ``state.values["_topk_stable"]``
    (a list of int64 arrays).  The first time a query is judged it is never done.
    Writes ``state.values["done"]`` (list of bool, length n_q).

    Examples
    --------
    >>> from ragkit.types import Ranking, State
    >>> j = TopKStable(k=2)
    >>> s = j(State(["q"], rankings=[Ranking([3, 1, 2], [.9, .5, .1])]))
    >>> s.values["done"], j(s).values["done"]
    ([False], [True])
    """

    name = "topk_stable"
    kind = "judge"
    Params = TopKStableParams
    stateless = True
    example = {"k": 5}
    memory_key = "_topk_stable"

    def _call(self, state: State) -> State:
        k = self.params.k
        tops = [r.rows[:k].copy() for r in state.rankings] if state.rankings is not None else [
            np.empty(0, np.int64) for _ in state.queries]
        if self.params.order == "set":
            tops = [np.sort(t) for t in tops]
        prev = state.values.get(self.memory_key) or [None] * len(state)
        done = [p is not None and np.array_equal(p, t) for p, t in zip(prev, tops)]
        out = state.copy()
        out.values[self.memory_key] = tops
        out.values["done"] = done
        return out


class ScoreReachedParams(Params):
    threshold: float = Field(..., description="Done when the score at `rank` is >= threshold (retriever units).")
    rank: int = Field(1, ge=1, description="1-based rank whose score is compared (1 = the top score).")


@register
class ScoreReached(Operator):
    """Done when the score at ``rank`` reaches ``threshold`` (the Modular RAG score judge).

    A ranking shorter than ``rank`` is not done.  Scores are in the units of the last
    retriever or fuser (BM25 score, cosine, RRF score).  Writes ``state.values["done"]``.

    Examples
    --------
    >>> from ragkit.types import Ranking, State
    >>> s = State(["a", "b"], rankings=[Ranking([1], [0.9]), Ranking([2], [0.2])])
    >>> ScoreReached(threshold=0.5)(s).values["done"]
    [True, False]
    """

    name = "score_reached"
    kind = "judge"
    Params = ScoreReachedParams
    stateless = True
    example = {"threshold": 20.0}

    def _call(self, state: State) -> State:
        i = self.params.rank - 1
        rankings = state.rankings or [None] * len(state)
        score = np.array([r.scores[i] if r is not None and len(r) > i else -np.inf for r in rankings], np.float64)
        out = state.copy()
        out.values["done"] = (score >= self.params.threshold).tolist()
        return out


class MaxOnlyParams(Params):
    pass


@register
class MaxOnly(Operator):
    """Never done: the enclosing loop runs its body exactly ``max_iters`` times per query.

    For fixed-count iterative retrieval (Modular RAG's "iterative" loop).
    """

    name = "max_only"
    kind = "judge"
    Params = MaxOnlyParams
    stateless = True
    example: dict = {}

    def _call(self, state: State) -> State:
        out = state.copy()
        out.values["done"] = [False] * len(state)
        return out
