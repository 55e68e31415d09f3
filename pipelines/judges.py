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

from typing import Literal, Sequence

import numpy as np
from pydantic import Field, model_validator

from ragkit.errors import DataError
from ragkit.operator import Operator
from ragkit.params import Params
from ragkit.pipelines._learned import LearnedThreshold, threshold_or_learn_problem
from ragkit.registry import register
from ragkit.types import Ranking, State

__all__ = ["TopKStable", "ScoreReached", "MaxOnly"]


class TopKStableParams(Params):
    k: int = Field(default=10, ge=1, description="Size of the top list compared between iterations.")
    order: Literal["set", "ranked"] = Field(
        default="set",
        description="'set': the same documents in any order count as stable; 'ranked': the same order too.")


@register
class TopKStable(Operator):
    """Done when a query's top-``k`` documents equal those of the previous iteration.

    The previous top-``k`` rows are stored per query in ``state.values["_topk_stable"]``
    (a list of int64 ``(k,)`` arrays, ``-1`` past the end of a ranking shorter than ``k``; sorted for
    ``order: set``).  One batch: the top lists of all queries are one ``(n_q, k)`` array.  The first time a
    query is judged it is never done.
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
    params: TopKStableParams
    stateless = True
    example = {"k": 5}
    memory_key = "_topk_stable"

    def _call(self, state: State) -> State:
        held = state.values.get(self.memory_key)
        tops = _top_rows(state.rankings, len(state), self.params.k, _held_width(held))
        if self.params.order == "set":
            tops.sort(axis=1)  # (the -1 pads first: a shorter top list never equals a longer one)
        prev = _memory(held, tops.shape, pad_front=self.params.order == "set")
        out = state.copy()
        out.values[self.memory_key] = list(tops)
        out.values["done"] = [False] * len(state) if prev is None else (prev == tops).all(axis=1).tolist()
        return out


def _top_rows(rankings: Sequence[Ranking] | None, n: int, k: int, at_least: int = 0) -> np.ndarray:
    """Each query's first ``k`` rows, int64 ``(n, w)``, padded with ``-1`` past the end of a shorter ranking (all
    ``-1`` without rankings): one concatenation of the heads, no per-query array work.  ``w`` is ``k`` or the
    longest head if shorter (a ``k`` of a million over 100-document rankings allocates 100 columns), and at least
    ``at_least`` (the width of the memory it is compared with, itself at most ``k``)."""
    heads = [] if rankings is None else [r.rows[:k] for r in rankings]
    lens = np.fromiter(map(len, heads), np.int64, len(heads))
    width = max(int(lens.max(initial=0)), min(at_least, k))
    out = np.full((n, width), -1, np.int64)
    total = int(lens.sum())
    if total:
        starts = np.cumsum(lens) - lens
        out[np.repeat(np.arange(n), lens), np.arange(total) - np.repeat(starts, lens)] = np.concatenate(heads)
    return out


def _held_width(prev: Sequence[np.ndarray | None] | None) -> int:
    """The width of a :class:`TopKStable` memory's rows (0 without one)."""
    return max((len(row) for row in prev if row is not None), default=0) if prev else 0


def _memory(prev: Sequence[np.ndarray | None] | None, shape: tuple[int, int], *,
            pad_front: bool = False) -> np.ndarray | None:
    """A :class:`TopKStable` memory (``values["_topk_stable"]``: one row per query) as ``shape``'s int64 array;
    ``None`` when there is none (the first iteration).  A row narrower than ``shape`` (the top lists grew longer
    since) is padded with ``-1`` as a top list is: at its end, or in front for ``order: set``'s sorted rows.  A
    query without one (``None``: not judged before) gets a row of ``-2``, which no top list equals."""
    if not prev or len(prev) != shape[0]:
        return None
    try:
        held = np.array(prev, dtype=np.int64)
    except (TypeError, ValueError):  # a None among them
        held = None
    if held is not None and held.ndim == 2 and held.shape[1] <= shape[1]:
        if held.shape[1] == shape[1]:
            return held
        out = np.full(shape, -1, np.int64)  # (a narrower memory, padded at once)
        if pad_front:
            out[:, shape[1] - held.shape[1]:] = held
        else:
            out[:, :held.shape[1]] = held
        return out
    out = np.full(shape, -2, np.int64)
    for i, row in enumerate(prev):  # (only with a query not judged before)
        if row is not None and len(row) <= shape[1]:
            out[i] = -1
            if pad_front:
                out[i, shape[1] - len(row):] = row
            else:
                out[i, :len(row)] = row
    return out


class ScoreReachedParams(Params):
    threshold: float | None = Field(default=None,
                                    description="Done when the score at `rank` is >= threshold (retriever "
                                                "units); give a threshold or learn=true, not both.")
    rank: int = Field(default=1, ge=1, description="1-based rank whose score is compared (1 = the top score).")
    learn: bool = Field(default=False,
                        description="Learn the threshold at fit from the training split: the one whose "
                                    "stopping maximises mean nDCG@10 of the training queries (minus cost).")
    cost: float = Field(default=0.0, ge=0, description="When learning: nDCG@10 a query may lose to save one iteration.")

    @model_validator(mode="after")
    def _threshold_or_learn(self) -> "ScoreReachedParams":
        problem = threshold_or_learn_problem(self.threshold, self.learn, self.cost)
        if problem:
            raise ValueError(problem)
        return self


@register
class ScoreReached(LearnedThreshold, Operator):
    """Done when the score at ``rank`` reaches ``threshold`` (the Modular RAG score judge).

    A ranking shorter than ``rank`` is not done.  Scores are in the units of the last
    retriever or fuser (BM25 score, cosine, RRF score); a BM25 after ``prf`` scores about
    ``resolution / query length`` times higher than plain BM25 (SciFact: ~2,000 against ~7), so in a
    ``prf | bm25`` loop a threshold carried over from plain BM25 stops nothing in the first round and
    everything in the second: learn it (``learn: true``).  Writes ``state.values["done"]``.

    A rule-based judge of Modular RAG's scheduling (Gao et al., "Modular RAG: Transforming RAG Systems into
    LEGO-like Reconfigurable Frameworks", arXiv 2407.21059).

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
    params: ScoreReachedParams
    stateless = True
    #: PRF-weighted BM25 scores of the conformance loop: 5 of its 12 queries stop at round 1, 1 at round 2
    example = {"threshold": 1700.0}

    def feature(self, state: State) -> np.ndarray:
        """Score at ``rank`` per query, float64 ``(n_q,)``; ``-inf`` for shorter rankings."""
        i = self.params.rank - 1
        rankings: Sequence[Ranking | None] = state.rankings or [None] * len(state)
        return np.array([r.scores[i] if r is not None and len(r) > i else -np.inf for r in rankings], np.float64)

    def learn_stopping(self, features: np.ndarray, gains: np.ndarray) -> None:
        """Choose the threshold from ``features`` and ``gains``, both ``(iterations, n_q)``.

        Row ``i`` holds each training query's score at ``rank`` and its nDCG@10 after ``i + 1``
        runs of the loop body.  A threshold stops each query at its first iteration whose
        feature reaches it (else at the last); every observed value (and "never") is tried; the
        best mean gain minus ``cost`` x mean iterations wins, ties going to fewer iterations.

        All candidates are scored in one sweep, ``O(iterations x queries + candidates)`` memory: a
        query stops at its first iteration whose running maximum of the feature reaches the
        threshold, so raising the threshold past that running maximum at iteration ``i`` moves it
        from stopping at ``i`` to ``i + 1``, which adds ``gains[i + 1] - gains[i]`` to the total gain
        and one iteration; a difference array over the sorted candidates sums those events.

        A choice that stops every training query at the same iteration learns that for every query:
        the threshold is ``-inf`` when each stops after the first iteration (every query whose
        ranking reaches ``rank`` is done at once; a shorter one is never done, as always) and ``inf``
        when each runs ``max_iters`` times, not the lowest or highest training score, which would
        loop a new query scoring beyond the training ones otherwise than learned.  A query goes on
        past an iteration whose ranking is too short (feature ``-inf`` or NaN) whatever the
        threshold: that iteration counts in the objective but not in the decision, so training
        queries that all stop at their first iteration with a feature learn ``-inf`` too (when one
        has a feature before the last iteration).  (With one iteration, ``max_iters: 1``, the
        threshold changes nothing and stays the observed one.)
        ``learned.json`` keeps them as ``-Infinity`` / ``Infinity`` (Python's ``json``, read back as
        the same floats).  :class:`~ragkit.pipelines.Loop` gives it its usable training queries only
        (a judgement > 0 of a document of the corpus, as the fusers learn from), with a warning on
        the ``ragkit`` logger when fewer than 10.
        """
        if not self.params.learn:
            return
        iters, n = features.shape
        if n and not np.isfinite(features).any():  # (a ranking too short: -inf; NaN never reaches a threshold)
            rank = self.params.rank
            rounds = (f"{iters} iteration{'s' if iters != 1 else ''} "
                      f"({n} usable training quer{'ies' if n != 1 else 'y'})")
            if np.isneginf(features).all():  # every ranking too short
                raise DataError(
                    f"{self.name}.rank: no training query's ranking reaches rank {rank} in any of the {rounds}: the "
                    f"score at rank {rank} is undefined for every one, so every threshold learns the same (the loop "
                    f"would run max_iters times for every query); give a rank within the k of the retriever before "
                    f"it, or retrieve at least {rank} document{'s' if rank != 1 else ''} (its k)")
            undefined = int(np.count_nonzero(~np.isneginf(features)))  # (NaN or +inf: the ranking's own scores)
            raise DataError(
                f"{self.name}.rank: the score at rank {rank} is NaN or infinite wherever a training query's ranking "
                f"reaches it ({undefined} of the {iters * n} rankings of the {rounds}"
                + ("; the others are shorter" if undefined < iters * n else "") + "), so every threshold learns the "
                "same (the loop would run max_iters times for every query); the scores of the step before it are "
                "undefined: give it finite scores, or set a threshold instead of learn: true")
        finite = np.unique(features[np.isfinite(features)])
        cands = np.concatenate([finite, [np.inf]])                               # (m,) ascending
        m = len(cands)
        if n:
            reached = np.where(np.isnan(features), -np.inf, features)          # NaN never reaches a threshold
            running = np.maximum.accumulate(reached, axis=0)[:-1]               # (iters - 1, n)
            # candidate c stops past iteration i when cands[c] > running[i]: from c = pos on
            pos = np.searchsorted(cands, running, side="right").ravel()
            step = (gains[1:] - gains[:-1]).ravel()
            total = gains[0].sum() + np.cumsum(np.bincount(pos, weights=step, minlength=m + 1))[:m]
            more = np.cumsum(np.bincount(pos, minlength=m + 1))[:m]             # iterations past the first, all queries
            # an iteration without a feature (-inf, NaN: too short a ranking) goes on whatever the threshold: it
            # counts in every candidate's objective, and not in the one-sided decision below
            forced = int(np.count_nonzero(pos == 0))
            mean_iters = 1.0 + more / n
            mean_gain = total / n
        else:
            more, forced, mean_iters, mean_gain = np.zeros(m, np.int64), 0, np.ones(m), np.zeros(m)
        objective = np.round(mean_gain - self.params.cost * mean_iters, 12)  # sums in another order: same ties
        best = int(np.lexsort((mean_iters, -objective))[0])
        self.threshold_ = float(cands[best])
        if n and iters > 1 and more[best] == forced < n * (iters - 1):
            self.threshold_ = -np.inf     # every query done at its first iteration with a feature
        elif n and iters > 1 and more[best] == n * (iters - 1):
            self.threshold_ = np.inf      # every query runs max_iters times
        self.learned_ = {"threshold": self.threshold_, "train_ndcg@10": float(mean_gain[best]),
                         "mean_iterations": float(mean_iters[best]),
                         "ndcg@10_per_iteration": [float(g.mean()) for g in gains] if n else []}

    def _call(self, state: State) -> State:
        self._check_learned()
        out = state.copy()
        f = self.feature(state)
        out.values["done"] = ((f > -np.inf) & (f >= self.threshold)).tolist()  # too short: never done, even at -inf
        return out


class MaxOnlyParams(Params):
    pass


@register
class MaxOnly(Operator):
    """Never done: the enclosing loop runs its body exactly ``max_iters`` times per query.

    For fixed-count iterative retrieval (Modular RAG's "iterative" loop: Gao et al., "Modular RAG:
    Transforming RAG Systems into LEGO-like Reconfigurable Frameworks", arXiv 2407.21059).

    Examples
    --------
    >>> from ragkit.pipelines import Loop
    >>> from ragkit.retrievers import BM25
    >>> from ragkit.types import Corpus, State
    >>> MaxOnly()(State(["a", "b"])).values["done"]
    [False, False]
    >>> loop = Loop(BM25(k=3), until=MaxOnly(), max_iters=3).fit(Corpus.from_texts(["red apples", "green pears"]))
    >>> loop(State.of(["red apple"])).values["iterations"]
    [3]
    """

    name = "max_only"
    kind = "judge"
    Params = MaxOnlyParams
    params: MaxOnlyParams
    stateless = True
    example = {}

    def _call(self, state: State) -> State:
        out = state.copy()
        out.values["done"] = [False] * len(state)
        return out
