"""Fusers: merge the rankings of a :class:`~ragkit.pipelines.Parallel`'s branches.

Both fusers merge documents by id (a document listed twice by one branch counts once, at
its best rank), keep the fused score, and record each branch's rank and score in the
ranking's fields (``"<branch>.rank"`` 1-based, 0 when absent; ``"<branch>.score"``, NaN
when absent).  Everything is computed on flat arrays for the whole batch.
"""

from __future__ import annotations

import logging
import math
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Callable, Literal

import numpy as np
from pydantic import Field, model_validator

from ragkit._topk import group_positions
from ragkit.errors import ArtifactError, ParamError
from ragkit.eval.metrics import _ties_kept
from ragkit.operator import Operator
from ragkit.params import FieldRefusal, Params, Seed
from ragkit.pipelines._compose import _at
from ragkit.registry import register
from ragkit.types import Ranking, State

if TYPE_CHECKING:
    from ragkit.pipelines.weights import WeightSearch

__all__ = ["RRF", "WeightedFusion", "PreparedFusion", "flatten_branches", "ranked_order", "split_by_query"]


def _entries(state: State) -> tuple[dict[str, np.ndarray], list[str]]:
    """Every entry of every branch's ranking, repeats included, as flat arrays ordered by (branch, query,
    position): ``q``, ``row``, ``branch`` (int64), ``rank`` (1-based int64), ``score`` (float64); and the
    branch names."""
    if not state.branches:
        raise ParamError("a fuser needs the rankings of parallel branches; "
                         "put it after 'a + b' or in Parallel(fuse=...)")
    names = [n for n, _ in state.branches]
    qs, rows, br, ranks, scores = [], [], [], [], []
    for b, (_, rankings) in enumerate(state.branches):
        lens = np.fromiter((len(r) for r in rankings), np.int64, len(rankings))
        if lens.sum() == 0:
            continue
        qs.append(np.repeat(np.arange(len(rankings)), lens))
        rows.append(np.concatenate([r.rows for r in rankings]))
        scores.append(np.concatenate([r.scores for r in rankings]).astype(np.float64))
        ranks.append(group_positions(lens) + 1)
        br.append(np.full(lens.sum(), b))
    if not qs:
        empty = np.empty(0, np.int64)
        return {"q": empty, "row": empty, "branch": empty, "rank": empty, "score": empty.astype(float)}, names
    return {"q": np.concatenate(qs), "row": np.concatenate(rows), "branch": np.concatenate(br),
            "rank": np.concatenate(ranks), "score": np.concatenate(scores)}, names


def _run_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: where each run of equal values in ``sorted_keys`` starts."""
    starts = np.ones(len(sorted_keys), bool)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return starts


def _dedupe_and_group(flat: dict[str, np.ndarray], n_branches: int
                      ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Drop the repeats of :func:`_entries`' arrays and group what is left by document, with one sort.

    A document listed twice by one branch for one query keeps its first (best-ranked) entry; the kept
    entries stay in (branch, query, position) order.  Returns ``(flat, q, row, inv)``: the kept entries,
    the ``(n_pairs,)`` int64 distinct (query, row) pairs sorted by query then row, and ``(n_kept,)`` int64
    the pair of every kept entry.

    One argsort of the key ``(q * n_rows + row) * n_branches + branch`` lays the entries out by pair, each
    pair's entries side by side: equal neighbouring keys are repeats, and pairs change where
    ``key // n_branches`` does.  The sort is stable, so the first of repeats is the best-ranked; and
    timsort runs faster than quicksort here (~1.5x), as each branch's entries come sorted by query.
    """
    n_rows = int(flat["row"].max()) + 1 if len(flat["row"]) else 1
    key = (flat["q"] * n_rows + flat["row"]) * n_branches + flat["branch"]
    order = np.argsort(key, kind="stable")
    key = key[order]
    first = _run_starts(key)  # (n,) the first sorted entry of each (pair, branch)
    if not first.all():  # a branch lists a document twice for a query: keep its best entry, one more pass
        order, key = order[first], key[first]
        kept = np.zeros(len(first), bool)
        kept[order] = True
        flat = {k: v[kept] for k, v in flat.items()}
        order = (np.cumsum(kept) - 1)[order]  # into the kept entries
    pair = key // n_branches
    new = _run_starts(pair)  # (n_kept,) the first entry of each (q, row) pair
    inv = np.empty(len(order), np.int64)
    inv[order] = np.cumsum(new) - 1
    pairs = pair[new]
    return flat, pairs // n_rows, pairs % n_rows, inv


def flatten_branches(state: State) -> tuple[dict[str, np.ndarray], list[str]]:
    """Flat arrays over (branch, query, position): ``q``, ``row``, ``branch``, ``rank`` (1-based), ``score``.

    A document repeated within one branch's ranking keeps only its best (first) entry.
    """
    flat, names = _entries(state)
    return _dedupe_and_group(flat, len(names))[0], names


#: :func:`ranked_order` sorts each query's entries in a padded (n_queries, longest) matrix while it holds at
#: most this many cells per entry; more uneven queries are sorted as one flat array instead
_MAX_PADDING = 4


def ranked_order(q: np.ndarray, row: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The order of fused ``(q, row, score)`` entries in their rankings: by query, then score descending, then
    row ascending (a fuser's tie rule).  ``(n,)`` int64 indices.

    Entries sorted by query then row (as :class:`PreparedFusion` holds them; others are sorted so first) are
    laid out in a ``(n_queries, longest)`` matrix of ``-score``, one query a row, padded with NaN (sorted
    last, after every real entry, NaN included: the sort is stable); a stable sort of each row then orders
    the query by score, ties by row.  Small per-row sorts beat two stable sorts of the whole flat array
    (by score, then by query) 2-4x (300 queries x ~1,500 entries, 1,000 x ~1,750); those remain for queries
    too uneven in length to pad.
    """
    n = len(q)
    if n == 0:
        return np.empty(0, np.int64)
    n_rows = int(row.max()) + 1
    order = np.arange(n) if np.all(np.diff(q * n_rows + row) > 0) else np.lexsort((row, q))
    lens = np.bincount(q)  # (n_queries,) entries per query
    width = int(lens.max())
    if len(lens) * width > _MAX_PADDING * n:
        order = order[np.argsort(-score[order], kind="stable")]  # single-key stable sorts: 3x faster than lexsort
        return order[np.argsort(q[order], kind="stable")]
    starts = np.cumsum(lens) - lens
    padded = np.full((len(lens), width), np.nan)
    padded[q[order], group_positions(lens)] = -score[order]
    by_score = np.argsort(padded, axis=1, kind="stable")  # (n_queries, width) positions within each query
    real = np.arange(width) < lens[:, None]  # each row's first lens[i] sorted positions are its entries
    return order[(starts[:, None] + by_score)[real]]


def split_by_query(n_q: int, q: np.ndarray, row: np.ndarray, score: np.ndarray, top: int | None,
                   fields: dict[str, np.ndarray]) -> list[Ranking]:
    """Sort fused (q, row, score) triples per query (:func:`ranked_order`), keep each query's first ``top``
    (None: all) and split into rankings."""
    order = ranked_order(q, row, score)
    lens = np.bincount(q, minlength=n_q)
    if top is not None:
        order = order[group_positions(lens) < top]  # ranked_order groups by query
        lens = np.minimum(lens, top)
    row, score = row[order], score[order]
    fields = {k: v[order] for k, v in fields.items()}
    bounds = np.r_[0, np.cumsum(lens)].tolist()
    return [Ranking(row[a:b], score[a:b], {k: v[a:b] for k, v in fields.items()})
            for a, b in zip(bounds[:-1], bounds[1:])]


def _branch_fields(flat: dict[str, np.ndarray], inv: np.ndarray, n: int, names: list[str]) -> dict[str, np.ndarray]:
    fields: dict[str, np.ndarray] = {}
    for b, name in enumerate(names):
        m = flat["branch"] == b
        rank = np.zeros(n, np.int64)
        score = np.full(n, np.nan, np.float32)
        rank[inv[m]] = flat["rank"][m]
        score[inv[m]] = flat["score"][m]
        fields[f"{name}.rank"], fields[f"{name}.score"] = rank, score
    return fields


#: where the fuser a :class:`~ragkit.pipelines.Parallel` fits sits in its pipeline (``pipeline[0].parallel.fuse``),
#: set by that Parallel around the fuser's fit; ``""`` for a fuser fitted on its own.  A learning fuser's warnings
#: start with it and the fuser's name (``pipeline[0].parallel.fuse.rrf: ...``), as a router's and a judge's start
#: with their path.
FITTED_AT: ContextVar[str] = ContextVar("ragkit_fuser_fitted_at", default="")


def _said(option: dict[str, Any]) -> str:
    """A setting of :meth:`_Fuser._learnable_options` as its warnings say it (``"norm: zscore"``)."""
    return ", ".join(f"{k}: {v}" for k, v in option.items())


class _FuserParams(Params):
    weights: list[float] | None = Field(default=None, description="Per-branch weights (default: all 1).")
    top_k: int | None = Field(default=None, ge=1, description="Results kept after fusion (default: the whole union).")
    learn: bool = Field(default=False, description="Learn the branch weights from the training split at fit "
                                                   "(cross-validated grid search maximising nDCG@10; given "
                                                   "weights are kept unless learned ones beat them).")
    folds: int = Field(default=5, ge=2, description="Cross-validation folds when learning weights.")
    seed: Seed = Field(default=0, description="Seed of the cross-validation folds when learning weights (the folds "
                                             "depend on it and on the set of judged queries, not their order).")

    @model_validator(mode="after")
    def _check_weights(self) -> "_FuserParams":
        # (at the field: ...rrf.weights, on the line of weights:, not at the fuser's)
        if self.weights is not None and not all(math.isfinite(w) and abs(w) <= 1e6 for w in self.weights):
            raise FieldRefusal("weights", f"weights must be finite numbers of at most 1e6 (only their ratios "
                                          f"matter), got {self.weights}: products of scores and weights near 1e308 "
                                          "overflow every fused score to infinity")
        if self.weights is not None and any(w < 0 for w in self.weights):
            raise FieldRefusal("weights", f"weights must be non-negative, got {self.weights}")
        if self.weights is not None and self.weights and not any(w > 0 for w in self.weights):
            raise FieldRefusal("weights", f"weights are all 0 ({self.weights}): every fused score would be 0; give "
                                          "at least one branch a positive weight")
        self.refuse_unused(("folds", self.learn, "learn: true"), ("seed", self.learn, "learn: true"))
        return self


class PreparedFusion:
    """The fusion of one batch's branches as a function of the branch weights, everything that does not
    depend on them computed once.

    A contribution is linear in its branch's weight (``w_b * f(rank or score)``), so each branch's
    unweighted contributions are kept, ``per_branch`` ``(n_branches, n_pairs)`` float64 (0 where the
    branch did not retrieve the document), and summed with the weights.  ``q``, ``row``: the ``(n_pairs,)``
    fused (query, row) pairs, sorted by query then row; ``fields``: per pair, each branch's rank and score
    (or ``{}``); ``default_weights``: the fuser's own weights, asked for when ``w`` is None.
    """

    def __init__(self, n_q: int, q: np.ndarray, row: np.ndarray, per_branch: np.ndarray,
                 fields: dict[str, np.ndarray], default_weights: Callable[[], np.ndarray]) -> None:
        self.n_q, self.q, self.row, self.per_branch, self.fields = n_q, q, row, per_branch, fields
        self.default_weights = default_weights
        self.lens = np.bincount(q, minlength=n_q)  # (n_q,) fused documents per query

    def scores(self, w: np.ndarray | None) -> np.ndarray:
        """``(n_pairs,)`` float64 fused scores with weights ``w`` (None: the fuser's own), summed branch by
        branch in the order a single pass would add them."""
        w = self.default_weights() if w is None else w
        fused = np.zeros(len(self.q))
        for b in range(len(self.per_branch)):  # branches, not queries: a handful of vector operations
            fused += w[b] * self.per_branch[b]
        return fused

    def __call__(self, w: np.ndarray | None, top: int | None) -> list[Ranking]:
        """The fused rankings with weights ``w``, each cut to its first ``top`` (None: the whole union)."""
        return split_by_query(self.n_q, self.q, self.row, self.scores(w), top, self.fields)

    def heads(self, w: np.ndarray, top: int | None, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What scoring ``self(w, top)`` at cut-offs below ``k`` reads, without building its rankings: of each
        ranking, the entries whose float32 score reaches its k-th best (ties kept; a ranking of at most ``k``
        whole), as :func:`~ragkit.eval.metrics.per_query_metrics` cuts it.  Returns ``(q, row, score)``:
        ``(n_kept,)`` int64, int64, float32, sorted by query then row.

        The entries reaching the k-th best float32 score of the whole union are a prefix of its ranking
        order (float32 rounding keeps the order), holding its first ``k``; so ``top`` cuts that prefix
        (ties at the cut by row, as :func:`split_by_query`), and only those few are sorted.  (Fused scores are
        never NaN: branch scores are float32 and every normalised contribution is finite.)"""
        fused = self.scores(w)
        s32 = fused.astype(np.float32)  # the scores trec_eval compares
        keep = _ties_kept(self.lens, s32, self.q, k)
        if top is not None:
            at = np.flatnonzero(keep)
            counts = np.bincount(self.q[at], minlength=self.n_q)
            if len(at) and counts.max() > top:
                order = ranked_order(self.q[at], self.row[at], fused[at])
                keep[at[order[group_positions(counts) >= top]]] = False
        return self.q[keep], self.row[keep], s32[keep]


class _Fuser(Operator):
    kind = "fuser"
    params: _FuserParams
    stateless = True
    #: set by a learning fit (or loaded): the weights, the other settings learned with them, a report
    weights_: np.ndarray
    option_: dict[str, Any]
    learned_: dict[str, Any]

    @property
    def wants_upstream(self) -> bool:
        """A learning fuser needs its branches' rankings of the training queries at fit time."""
        return bool(self.params.learn)

    @property
    def learns(self) -> bool:
        """``learn: true`` learns the weights from judged queries when fitted with them."""
        return bool(self.params.learn)

    def _fit(self, corpus, train, upstream) -> None:
        for attr in ("weights_", "option_", "learned_"):  # a refit re-learns, or forgets what it learned
            self.__dict__.pop(attr, None)
        if not self.params.learn or train is None:
            return
        if upstream is None or not upstream.branches:
            raise ParamError(f"{self.name}.learn: weights are learned inside a Parallel; fit the pipeline that "
                             "holds this fuser with fit(corpus, train)")
        from ragkit.pipelines.weights import learn_weights

        names = [n for n, _ in upstream.branches]
        placed = self._placed()  # what its warnings start with
        # what learning must beat, kept on a tie: the weights as given (learn_weights searches the simplex, weights
        # scaled to sum to 1, and its warnings quote them as given)
        baseline = self._weights(names) if self.params.weights is not None else None  # (checks their number)
        # the fuser keeps its unlearned scale, so learning changes only the ratios and a threshold set on its scores
        # (score_reached) still holds: learn_weights returns the weights (and the averaged ones it sets aside) summing
        # to the given ones' sum (the number of branches when none were given), exact means on that scale, and a
        # kept baseline exactly as it was (the given weights, or 1 each)
        scale = math.fsum(baseline.tolist()) if baseline is not None else float(len(names))

        options = self._learnable_options()
        if not options:
            raise ParamError(f"{self.name}.learn: no setting to learn weights for")  # _learnable_options is never []
        searches: list[tuple[dict[str, Any], WeightSearch]] = []
        for option in options:  # e.g. each score normalisation, weights searched for each
            self.option_ = option
            prepared = self._prepare(upstream, with_fields=False)  # what every grid point shares, computed once
            top = self.params.top_k  # what search returns

            def fuse(state: State, w: np.ndarray, prepared: PreparedFusion = prepared) -> list[Ranking]:
                return prepared(w, top)

            def heads(w: np.ndarray, k: int, prepared: PreparedFusion = prepared) -> tuple[np.ndarray, ...]:
                return prepared.heads(w, top, k)

            tried = _said(option)  # which of several settings warns
            asked = self._learn_setting()
            where = f"{placed} ({asked + ', ' if asked else ''}trying {tried})" if tried else placed
            # several settings, the same queries: no fold to hold out is said once, below, not once a setting
            searches.append((option, learn_weights(fuse, upstream, train.qrels, corpus.ids, folds=self.params.folds,
                                                   seed=self.params.seed,
                                                   heads=heads, where=where, warn=len(options) == 1,
                                                   baseline=baseline, scale=scale)))
        option, found = searches[self._best_search(searches)]
        self.option_ = option
        self.weights_ = np.asarray(found.weights, np.float64).copy()  # (on the fuser's scale: see scale above)
        # cv_ndcg@10: the kept weights' cross-validated estimate (the baseline's, equal or given weights, when it
        # was kept, the averaged weights' own then under averaged_cv_ndcg@10, beside the weights set aside)
        set_aside = found.report()
        if set_aside:  # (the averaged weights set aside on the fuser's scale too, comparable with the kept ones)
            set_aside = {"kept": set_aside.pop("kept"), "averaged_weights": set_aside.pop("averaged_weights"),
                         "averaged_cv_ndcg@10": found.cv_ndcg, **set_aside}
        self.learned_ = {"branches": names, "weights": self.weights_.tolist(), **option,
                         "cv_ndcg@10": found.held_out_ndcg, "train_ndcg@10": found.train_ndcg,
                         f"{found.compared_with}_ndcg@10": found.baseline_ndcg, **set_aside}

    def _best_search(self, searches: list[tuple[dict[str, Any], WeightSearch]]) -> int:
        """Which of the ``(setting, weight search)`` pairs of the settings :meth:`_learnable_options` tried to keep: the
        highest cross-validated nDCG@10 of the weights kept (:attr:`WeightSearch.held_out_ndcg`), the first of
        equal ones.

        Where a search has no such score (nan: its usable training queries all have one text, so none could be
        held out), every setting is compared by its kept weights' nDCG@10 on the training queries instead
        (``train_ndcg``), with a warning saying so, once: a comparison with nan is always false, which kept the
        first setting whatever its quality."""
        if all(f.cross_validated for _, f in searches):
            return int(np.argmax([f.held_out_ndcg for _, f in searches]))
        train = np.nan_to_num(np.array([f.train_ndcg for _, f in searches], np.float64), nan=-np.inf)
        best = int(np.argmax(train))
        if len(searches) > 1:
            why = next((f.note for _, f in searches if f.note), "learning fusion weights: a setting has no "
                       "cross-validated nDCG@10 (nan)")
            tried = "; ".join(f"{_said(o)} {f.train_ndcg:.4f}" for o, f in searches)
            kept = _said(searches[best][0])
            setting = self._learn_setting()
            logging.getLogger("ragkit").warning(
                "%s%s: %s; the settings tried are compared by their nDCG@10 on the training queries instead "
                "(%s; fitted to those queries, not held out): keeping %s", self._placed(),
                f" ({setting})" if setting else "", why, tried, kept)
        return best

    def _placed(self) -> str:
        """The fuser as its learning warnings name it: its path and name where a Parallel fits it
        (:data:`FITTED_AT`: ``pipeline[0].parallel.fuse.rrf``), else its name."""
        return _at(FITTED_AT.get(), self.name)

    def _learnable_options(self) -> list[dict[str, Any]]:
        """Settings tried when learning, each with its own weight search; the best by CV wins (by training
        nDCG@10 where no query could be held out: :meth:`_best_search`)."""
        return [{}]

    def _learn_setting(self) -> str:
        """The parameter that asked for the settings :meth:`_learnable_options` tries (``"norm: learn"``;
        ``""``: none), for the warnings of their weight searches."""
        return ""

    def _save(self, folder) -> None:
        if hasattr(self, "weights_"):
            from ragkit._saves import save_arrays, write_json

            save_arrays(folder, weights=self.weights_)
            # a nan estimate (no query could be held out) as null: NaN is no JSON other readers accept
            write_json(folder / "learned.json", {k: None if isinstance(v, float) and not math.isfinite(v) else v
                                                 for k, v in self.learned_.items()})

    def _load(self, folder, mmap: bool = False) -> None:
        if (folder / "weights.npy").is_file():
            from ragkit._saves import load_array, read_json

            self.weights_ = load_array(folder, "weights")
            learned = read_json(folder / "learned.json")
            if not isinstance(learned, dict):
                raise ArtifactError(f"{folder / 'learned.json'}: expected a JSON object (what the fuser learned), "
                                    f"got {type(learned).__name__}; fit and save the pipeline again")
            # an estimate saved as null (nan: no query could be held out) is nan again, as the fit reported it
            # (older saves wrote NaN itself, which Python's json reads as nan too)
            self.learned_ = {k: float("nan") if v is None and k.endswith("@10") else v for k, v in learned.items()}
            keys = {k for option in self._learnable_options() for k in option}
            self.option_ = {k: self.learned_[k] for k in keys if k in self.learned_}

    def _weights(self, names: list[str]) -> np.ndarray:
        if hasattr(self, "weights_"):
            if len(self.weights_) != len(names):
                raise ParamError(f"{self.name}: learned {len(self.weights_)} weights but got {len(names)} branches")
            return np.asarray(self.weights_, dtype=np.float64)
        w = self.params.weights
        if w is None:
            return np.ones(len(names))
        if len(w) != len(names):
            raise ParamError(f"{self.name}.weights: {len(w)} weights for {len(names)} branches ({names})")
        return np.asarray(w, dtype=np.float64)

    def _top(self, state: State) -> int | None:
        """The fused results kept per query: ``top_k`` raised to the call's ``k``, or None (keep all)
        (:func:`~ragkit.options.resolve_k`; a fuser has no ``k`` option of its own)."""
        from ragkit.options import resolve_k

        return resolve_k(None, self.params.top_k, state.options.get("k"), self.name, "top_k")

    def _fuse(self, state: State, w: np.ndarray | None, top: int | None) -> list[Ranking]:
        return self._prepare(state, with_fields=True)(w, top)

    def _prepare(self, state: State, with_fields: bool) -> PreparedFusion:
        """The fusion of ``state``'s branches as a function of the weights (:class:`PreparedFusion`), with
        everything that does not depend on them computed once: weight learning calls it for every grid point."""
        flat, names = _entries(state)
        flat, uq, urow, inv = _dedupe_and_group(flat, len(names))
        fields = _branch_fields(flat, inv, len(uq), names) if with_fields else {}
        unit = self._unit_contributions(flat, len(state))
        per_branch = np.zeros((len(names), len(uq)))
        per_branch[flat["branch"], inv] = unit  # a (q, row) pair is at most once per branch after dedupe
        return PreparedFusion(len(state), uq, urow, per_branch, fields, lambda: self._weights(names))

    def _call(self, state: State) -> State:
        out = state.copy()
        out.rankings = self._fuse(state, None, self._top(state))
        return out

    def _unit_contributions(self, flat: dict[str, np.ndarray], n_q: int) -> np.ndarray:
        """What each flat entry adds to its document's fused score at branch weight 1 (the weight
        multiplies it)."""
        raise NotImplementedError


class RRFParams(_FuserParams):
    k: float = Field(default=60.0, gt=0, description="RRF constant: a document at rank r scores w / (k + r).")


@register
class RRF(_Fuser):
    """Reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009).

    ``score(d) = sum_b w_b / (k + rank_b(d))`` over the branches that retrieved ``d``
    (ranks from 1).

    Examples
    --------
    >>> from ragkit.types import Ranking, State
    >>> s = State(["q"], branches=[("a", [Ranking([1, 2], [.9, .5])]), ("b", [Ranking([2], [3.])])])
    >>> r = RRF(k=60)(s).rankings[0]
    >>> r.rows.tolist(), round(float(r.scores[0]), 5)
    ([2, 1], 0.03252)
    """

    name = "rrf"
    Params = RRFParams
    params: RRFParams
    example = {"k": 60}

    def _unit_contributions(self, flat, n_q):
        return 1.0 / (self.params.k + flat["rank"])


class WeightedParams(_FuserParams):
    norm: Literal["minmax", "zscore", "none", "learn"] = Field(
        default="minmax",
        description="Per-branch, per-query score normalisation before the weighted sum; 'learn' (with "
                    "learn=true) picks minmax, zscore or none with the weights, by cross-validated nDCG@10.")

    @model_validator(mode="after")
    def _learn_norm(self) -> "WeightedParams":
        if self.norm == "learn" and not self.learn:
            raise ValueError("norm='learn' chooses the normalisation from the training split and needs learn=true")
        return self


@register
class WeightedFusion(_Fuser):
    """Weighted score fusion with per-branch, per-query normalisation.

    ``score(d) = sum_b w_b * norm_b(s_b(d))``; a branch that did not retrieve ``d``
    contributes 0.  ``minmax`` maps each branch's list to [0, 1]; ``zscore`` subtracts
    the list mean and divides by its standard deviation, then shifts the list so its lowest is 0
    (``(s - min) / std``): under both, a document a branch retrieved contributes at least what one it
    did not retrieve does (0), its list's last document exactly that.  A list of one document, or of
    equal scores, contributes 1 to each of its documents under ``minmax`` and 0 under ``zscore`` (no
    spread to measure: as if not retrieved).  A non-finite score (NaN, ±inf) counts as missing: it
    contributes 0 and takes no part in its list's normalisation.

    Examples
    --------
    >>> from ragkit.types import Ranking, State
    >>> s = State(["q"], branches=[("a", [Ranking([1, 2, 3], [.9, .5, .1])]), ("b", [Ranking([2, 3], [3., 1.])])])
    >>> r = WeightedFusion(norm="minmax")(s).rankings[0]  # a: 1, .5, 0; b: 1, 0
    >>> r.rows.tolist(), r.scores.tolist()
    ([2, 1, 3], [1.5, 1.0, 0.0])
    >>> WeightedFusion(norm="minmax", weights=[3, 1])(s).rankings[0].rows.tolist()
    [1, 2, 3]

    References
    ----------
    * Fox & Shaw, "Combination of multiple searches", TREC-2, 1994: CombSUM, the sum of the
      branches' scores (a missing score counting 0), of which this is the weighted form.
    * Lee, "Analyses of multiple evidence combination", SIGIR 1997: min-max normalisation of
      each list before combining (``minmax``).
    * Montague & Aslam, "Relevance score normalization for metasearch", CIKM 2001: zero-mean,
      unit-variance normalisation (``zscore``).
    * Bruch, Gai & Ingber, "An analysis of fusion functions for hybrid retrieval", ACM TOIS 2023:
      convex combination of normalised lexical and dense scores, and its comparison with RRF.
    """

    name = "weighted"
    Params = WeightedParams
    params: WeightedParams
    example = {"norm": "zscore"}

    @property
    def needs_train(self) -> bool:
        """``norm: learn`` has no normalisation until it is learned from judged queries."""
        return self.params.norm == "learn"

    def train_refusal(self) -> Exception | None:
        """``norm: learn`` without judged queries is refused (see :meth:`Operator.train_refusal`)."""
        if not self.needs_train:
            return None
        return ParamError("weighted.norm: 'learn' chooses the normalisation from judged queries; fit the pipeline "
                          "with fit(corpus, train=...) (command line: --train-split) or give a norm (minmax, zscore "
                          "or none)")

    def _learnable_options(self) -> list[dict[str, Any]]:
        if self.params.norm == "learn":
            return [{"norm": n} for n in ("minmax", "zscore", "none")]
        return [{}]

    def _learn_setting(self) -> str:
        return "norm: learn" if self.params.norm == "learn" else ""

    @property
    def norm(self) -> str:
        """The normalisation in use: the learned one after a learning fit, else the parameter."""
        return getattr(self, "option_", {}).get("norm", self.params.norm)

    def _unit_contributions(self, flat, n_q):
        raw = flat["score"]
        norm = self.norm
        if norm == "learn":
            raise ParamError("weighted: norm='learn' but nothing was learned; fit the pipeline with "
                             "fit(corpus, train=...) first")
        finite = np.isfinite(raw)
        s = np.where(finite, raw, 0.0)  # non-finite scores are missing: they neither count nor normalise
        if norm == "none" or len(s) == 0:
            return s
        seg = flat["branch"] * n_q + flat["q"]  # contiguous segments: flat is ordered by (branch, q)
        starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
        counts = np.diff(np.r_[starts, len(s)])
        if norm == "minmax":
            lo = np.repeat(np.fmin.reduceat(np.where(finite, s, np.nan), starts), counts)
            hi = np.repeat(np.fmax.reduceat(np.where(finite, s, np.nan), starts), counts)
            span = np.nan_to_num(hi - lo)
            z = np.where(span > 0, (s - np.nan_to_num(lo)) / np.where(span > 0, span, 1), 1.0)
        else:
            n_fin = np.maximum(np.add.reduceat(finite.astype(np.float64), starts), 1)
            mean = np.add.reduceat(s, starts) / n_fin
            sq = np.add.reduceat(s * s, starts) / n_fin
            std = np.sqrt(np.maximum(sq - mean**2, 0))
            m, sd = np.repeat(mean, counts), np.repeat(std, counts)
            z = np.where(sd > 0, (s - m) / np.where(sd > 0, sd, 1), 0.0)
            # shifted so each list's lowest is 0, as not being retrieved: a document retrieved low never scores
            # below one its branch did not retrieve (the list's mean, 0, did)
            low = np.nan_to_num(np.fmin.reduceat(np.where(finite, z, np.nan), starts))
            z = z - np.repeat(low, counts)
        return np.where(finite, z, 0.0)
