"""Composite operators: the four Modular RAG flow patterns (Gao et al., arXiv 2407.21059).

* linear: ``a | b | c`` -> :class:`Pipeline` (also exported as ``Sequence``)
* branching: ``a + b`` or ``Parallel([a, b], fuse=RRF(k=60))``
* conditional: ``Route(router, {"label": pipeline, ...}, default=...)``
* looping: ``Loop(body, until=judge, max_iters=n)``

Composites are operators too (``kind = "composite"``), so they nest.  They are not in the
registry: YAML spells them with the structural keys ``parallel``, ``route`` and ``loop``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import reprlib
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    TypeVar,
    cast,
    runtime_checkable,
)

import numpy as np
import pydantic

from ragkit._files import user_path
from ragkit._results import same_query_text
from ragkit.errors import ArtifactError, DataError, InputTypeError, NotFittedError, ParamError, RagkitError, some_ids
from ragkit.operator import (
    _RESTORING,
    Operator,
    _not_combinable,
    _reflected_elsewhere,
    call_checked,
    check_search_arguments,
    cut_to_k,
    fit_on_backend,
    options_checked,
    pinned_view,
    restored_on_failure,
    tree_nodes,
)
from ragkit.options import refuse_unapplied_filter
from ragkit.params import Params
from ragkit.types import QUERY_REWRITES, Corpus, Queries, Ranking, State, TraceEvent, TrainSet, usable_or_refused

if TYPE_CHECKING:  # (pandas: the hints only; it is optional)
    import pandas as pd
    from typing_extensions import Self

    from ragkit.run import Run

__all__ = ["Composite", "Pipeline", "Parallel", "Route", "Loop", "run_step"]

# The corpus ids of the search in progress, for the trace's recall and nDCG: a context variable,
# so that searches running at once in threads or asyncio tasks each see their own corpus.
_TRACE_IDS: ContextVar[np.ndarray | None] = ContextVar("ragkit_trace_ids", default=None)
# How the trace scores them: (relevance_level, ignore_identical_ids), as search() was given them
_TRACE_SCORING: ContextVar[tuple[int, bool]] = ContextVar("ragkit_trace_scoring", default=(1, True))
# While a step runs: how many of its leading results a later step reorders or fuses (see ranked_later); a
# context variable for the same reason, and not an option: the options are checked against the tree (an
# unknown key refused)
_RANKED_LATER: ContextVar[Optional[float]] = ContextVar("ragkit_ranked_later", default=None)


def ranked_later() -> float | None:
    """How many of the running step's leading results a later step of the tree searched reorders or fuses: a
    reranker (``mmr``, ``maxsim``, ``dbnorm``) or a fuser after it in its pipeline or an enclosing one, or the
    fuser of a parallel it is a branch of, reads its whole ranking (``math.inf``), or its top ``n`` when a
    ``top_k`` (``k: n``) between them cuts it first.  ``None`` for an operator searched on its own or last (a
    filter after it keeps its order).  A retriever's warnings about the order of its own top ``k``
    (``knn_embed``'s) read it: what the search returns, or what the later step reads."""
    return _RANKED_LATER.get()


def _cut_to(op: Operator) -> int | None:
    """The ``k`` of a ``top_k`` step (which keeps each ranking's first ``k``, in order), else ``None``."""
    return int(getattr(op.params, "k")) if op.name == "top_k" else None  # (TopK.Params: k)


def _reorders(op: Operator) -> bool:
    """Whether ``op`` (a leaf or a composite) holds a reranker or a fuser, which reads a whole ranking."""
    return any(leaf.kind in ("reranker", "fuser") for leaf in iter_leaves(op))


class _RouteLabels(Protocol):
    @property
    def above(self) -> str: ...

    @property
    def below(self) -> str: ...


@runtime_checkable
class _LearningRouter(Protocol):
    """A router that learns from what each branch gives the training queries (``score_router``
    with ``learn: true``): the route hands it each query's nDCG@10 in its ``above`` and ``below`` branches."""

    @property
    def params(self) -> _RouteLabels: ...

    def learn_routes(self, state: State, gains: dict[str, np.ndarray]) -> None: ...


@runtime_checkable
class _LearningJudge(Protocol):
    """A judge that learns when to stop (``score_reached`` with ``learn: true``): the loop hands it each
    iteration's ``feature`` and nDCG@10 of the training queries."""

    def feature(self, state: State) -> np.ndarray: ...

    def learn_stopping(self, features: np.ndarray, gains: np.ndarray) -> None: ...


def _quality(state: State) -> tuple[float | None, float | None, int]:
    """Mean recall@100 and nDCG@10 of the state's rankings against ``state.qrels``, computed as
    :func:`~ragkit.eval.evaluate` computes them (with the ``relevance_level`` and ``ignore_identical_ids``
    the search was given), over the judged queries, and how many were judged (for traces only: a step
    run on several parts is averaged by judged queries)."""
    ids = _TRACE_IDS.get()
    if state.qrels is None or state.rankings is None or ids is None:
        return None, None, 0
    from ragkit.eval.metrics import _per_query_metrics

    level, ignore = _TRACE_SCORING.get()
    # (state.qrels: search's, read once by as_qrels; ids: the search's corpus's, checked by the Corpus)
    m = _per_query_metrics(state, state.qrels, ids, ["recall@100", "ndcg@10"], relevance_level=level,
                           ignore_identical_ids=ignore, qrels_checked=True, ids_checked=True,
                           who="per_query_metrics")
    n = len(m["ndcg@10"])
    if not n:
        return None, None, 0
    return float(m["recall@100"].mean()), float(m["ndcg@10"].mean()), n


def _judged_start(train: TrainSet, upstream: State | None, learner: str) -> State:
    """The judged training queries as they reach a composite: ``upstream`` (the preceding steps'
    output on the training queries) or, at the start of a pipeline, the bare queries.  A query
    whose judgements are empty is not judged (as in :func:`~ragkit.eval.metrics.per_query_ndcg`);
    none judged is a :class:`DataError` naming ``learner``."""
    state = upstream.copy() if upstream is not None else State.of(train.queries)
    judged = state.subset([i for i, q in enumerate(state.query_ids) if train.qrels.get(q)])
    if not len(judged):
        shown = some_ids(state.query_ids)
        raise DataError(f"{learner}: none of the {len(state)} training queries ({shown}) has judgements in the "
                        f"qrels given ({len(train.qrels)} queries); expected qrels keyed by the training queries' ids")
    return judged


def _train_ndcg(state: State, train: TrainSet, corpus: Corpus) -> np.ndarray:
    """:func:`~ragkit.eval.metrics.per_query_ndcg` (nDCG@10) of ``state`` against the training judgements, which
    the :class:`TrainSet` read (:func:`~ragkit.types.as_qrels`), its rankings' rows named by ``corpus``'s checked
    ids: neither checked again at each of a learner's steps."""
    from ragkit.eval.metrics import _per_query_metrics

    return _per_query_metrics(state, train.qrels, corpus.ids, ["ndcg@10"], qrels_checked=True, ids_checked=True,
                              who="per_query_metrics")["ndcg@10"]


#: fewer usable training queries (a relevant document in the corpus) than this, and a router's or a loop judge's
#: learned threshold comes with a warning (as the Cosine Adapter's: :data:`ragkit.filters.cosine_adapter.MIN_QUERIES`)
MIN_THRESHOLD_QUERIES = 10


def _usable_ids(query_ids: Sequence[str], train: TrainSet, corpus: Corpus, learner: str) -> set[str]:
    """The ids of ``query_ids`` a threshold learns from: the usable ones, by the rule the fusers' weights
    learn by (:func:`~ragkit.types.usable_query_ids`: a judgement > 0 of a document of ``corpus``; a query
    judged only 0, or only documents the corpus lacks, scores nDCG 0 whatever the threshold).  None is a
    :class:`DataError` naming ``learner``, as learning fusion weights says it."""
    return set(usable_or_refused(query_ids, train.qrels, corpus, learner))


def _usable_start(train: TrainSet, upstream: State | None, corpus: Corpus, learner: str) -> State:
    """The usable training queries (:func:`_usable_ids`) as they reach a composite (:func:`_judged_start`):
    what a router or a loop judge learns its threshold from and averages its reported figures over, the
    queries the fusers learn their weights from."""
    state = _judged_start(train, upstream, learner)
    usable = _usable_ids(state.query_ids, train, corpus, learner)
    keep = [i for i, q in enumerate(state.query_ids) if q in usable]
    return state if len(keep) == len(state) else state.subset(keep)


# While a loop is fitted: the thin-data warnings of the thresholds learned inside it, by where they are, held back
# until the outermost loop's fit ends, so that a learned route or judge that its loop's refit
# (Loop._refit_on_iterations) learns again warns once per fit, with what it learned last
_THIN_PENDING: ContextVar[Optional[dict[str, tuple[Any, ...]]]] = ContextVar("ragkit_thin_pending", default=None)


def _log_thin(*args: Any) -> None:
    logging.getLogger("ragkit").warning(
        "%s: %s: threshold learned from little: %d usable training quer%s (with a relevant document in the "
        "corpus; at least %d recommended); the threshold (%.4g) %s; give more judged queries, or set "
        "threshold: explicitly", *args)


def _warn_thin_threshold(op: Operator, where: str, n_usable: int, effect: str) -> None:
    """Warn on the ``ragkit`` logger when ``op`` (at ``where``) learned its threshold from fewer than
    :data:`MIN_THRESHOLD_QUERIES` usable training queries; ``effect``: what a threshold fitted to those few does
    to other queries.  Inside a loop's fit (:func:`_thin_warnings_once`) the warning waits for the fit's end,
    replacing one that ``where`` gave earlier in it (dropped when it learns again from enough queries)."""
    pending = _THIN_PENDING.get()
    if n_usable >= MIN_THRESHOLD_QUERIES:
        if pending is not None:
            pending.pop(where, None)
        return
    args = (where, op.name, n_usable, "y" if n_usable == 1 else "ies", MIN_THRESHOLD_QUERIES,
            getattr(op, "threshold_", float("nan")), effect)
    if pending is not None:
        pending[where] = args
    else:
        _log_thin(*args)


@contextmanager
def _thin_warnings_once() -> Iterator[None]:
    """Hold back the thin-data warnings (:func:`_warn_thin_threshold`) given inside, each place's last one, and
    log them when the outermost such block ends without an error (an inner one leaves them to it)."""
    if _THIN_PENDING.get() is not None:
        yield
        return
    pending: dict[str, tuple[Any, ...]] = {}
    token = _THIN_PENDING.set(pending)
    try:
        yield
    finally:
        _THIN_PENDING.reset(token)
    for args in pending.values():
        _log_thin(*args)


def run_step(op: Operator, state: State, path: str) -> State:
    """Call ``op`` on ``state`` at node ``path`` (the YAML path without the operator key).

    Composites get ``path`` so that every leaf's trace event carries the same path that
    :func:`~ragkit.pipelines.yaml.walk_leaves` and YAML error messages use, e.g.
    ``pipeline[0].parallel.branches[1].dense``.  When tracing, a leaf records wall time,
    mean candidates in/out and (with qrels) recall@100 and nDCG@10 after the step.  A
    :class:`DataError` a leaf raises starts with its path (:func:`placed_at`).
    """
    if isinstance(op, Composite):
        return op._call(state, path)
    at = f"{path}.{_label(op)}"
    try:
        return traced(state, at, op.name, op)
    except DataError as e:  # which step: the data it got does not fit it (dbnorm on scores that are not cosines)
        if path and e.args and isinstance(e.args[0], str) and not e.args[0].startswith(path):
            placed_at(e, at, op.name)
        raise


def _candidates(state: State, fuser: bool = False) -> float:
    """Mean documents per query a step receives: the rankings', or for a fuser its branches' together."""
    if fuser and state.branches:
        return float(sum(len(r) for _, rankings in state.branches for r in rankings) / max(len(state), 1))
    return float(np.mean([len(r) for r in state.rankings])) if state.rankings else 0.0


def traced(state: State, path: str, name: str, call: Callable[[State], State], inclusive: bool = False) -> State:
    """``call(state)``; when the search is traced, with a :class:`TraceEvent` for ``path``: wall time, mean
    candidates in/out and (with qrels) recall@100 and nDCG@10 of what ``call`` returned (``inclusive``: a
    composite's, whose time includes its steps' events)."""
    trace = state.trace  # the search's list, shared by the states made from this one (State.copy, subset)
    if trace is None:
        return call(state)
    n_in = _candidates(state, getattr(call, "kind", None) == "fuser")
    t0 = time.perf_counter()
    out = call(state)
    dt = time.perf_counter() - t0
    if out.trace is None:  # an operator that returned a new State without it: the steps after it are traced too
        out.trace = trace
    n_out = np.mean([len(r) for r in out.rankings]) if out.rankings else 0.0
    recall, ndcg, n_judged = _quality(out)
    trace.append(TraceEvent(path, name, dt, len(state), float(n_in), float(n_out), recall, ndcg, n_judged,
                            inclusive))
    return out


def merge_parts(parent: State, parts: Sequence[tuple[Sequence[int], State]]) -> State:
    """Alias of :meth:`State.merge`."""
    return State.merge(parent, parts)


_Fit = TypeVar("_Fit", bound=Callable[..., Any])
_Error = TypeVar("_Error", bound=RagkitError)


def restoring(fit: _Fit) -> _Fit:
    """A composite's ``fit`` that, should it raise anything (an error, ``KeyboardInterrupt``), puts every node of
    the composite's tree (itself, its composites and leaves) back as it was before it began, fitted as before or
    unfitted, then lets the exception through unchanged (:func:`~ragkit.operator.restored_on_failure`: a shallow
    copy of each node's attributes, no array copied).  Only the outermost fit takes the snapshot: a fit inside
    one (a pipeline's fit of its composite steps, a route's of its branches) runs unwrapped."""
    @functools.wraps(fit)
    def wrapper(self: Operator, *args: Any, **kwargs: Any) -> Any:
        if id(self) in _RESTORING.get():  # inside a fit that restores this tree already
            return fit(self, *args, **kwargs)
        # the outermost fit: the tree checked (a cycle, a step that is no operator) as it is listed for the snapshot
        nodes = checked_nodes(self, kwargs.get("_path", "pipeline" if isinstance(self, Pipeline) else ""))
        with restored_on_failure(nodes):
            return fit(self, *args, **kwargs)

    return cast(_Fit, wrapper)


class Composite(Operator):
    """Base of the structural operators; ``fit`` fits each child once (and, should it raise, puts every
    node of the tree back as it was: fitted as before, or unfitted)."""

    kind = "composite"
    stateless = True

    def __init__(self) -> None:  # composites have no Params model of their own
        self.params = Params()

    def _call(self, state: State, path: str = "") -> State:  # pragma: no cover - abstract
        """Run on ``state`` as the node at ``path`` (the YAML path, for traces and errors)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _call(state, path)")

    def __eq__(self, other: object) -> bool:
        from ragkit.pipelines.yaml import to_node

        return type(self) is type(other) and to_node(self) == to_node(other)

    __hash__ = object.__hash__

    @reprlib.recursive_repr()  # a tree holding itself: '...' where it recurs, not a RecursionError
    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(c) for c in self.children())})"

    def to_dict(self) -> dict[str, Any]:
        from ragkit.pipelines.yaml import to_node

        return to_node(self)

    def checked_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options of a :class:`State` this composite is called on directly, checked against its
        whole tree as :meth:`Pipeline.search` checks them (an unknown key is refused), with a ``filter``
        checked against the corpus its retrievers search (:func:`shared_corpus`)."""
        from ragkit.options import check_options

        checked = check_options(self, options, shared_corpus(self), where="options.")
        refuse_unapplied_filter(self, checked, where="options.")
        return checked

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save as a one-step :class:`Pipeline` (manifest, YAML, every fitted leaf); load it with
        :meth:`Pipeline.load` or :meth:`Operator.load`.  A leading ``~`` in ``path`` is the home folder."""
        from ragkit.pipelines.store import save_pipeline

        checked_nodes(self, "pipeline[0]")  # (a cycle, a step that is no operator: said before the save's walks)
        save_pipeline(Pipeline([self]), user_path(path, f"{type(self).__name__}.save: path"))

    @classmethod
    def load(cls, path: str | os.PathLike[str], corpus: Corpus | None = None, *, mmap: bool = False,
             verify: bool = True) -> Self:
        """Load what :meth:`save` wrote, a one-step pipeline, as its step: ``Parallel.load(folder)`` of a saved
        :class:`Parallel` is that Parallel.  A folder holding anything else (a pipeline of several steps, another
        composite, one operator) is an :class:`~ragkit.errors.ArtifactError` saying how to load it."""
        pipe = Pipeline.load(path, corpus=corpus, mmap=mmap, verify=verify)
        if len(pipe.steps) == 1 and isinstance(pipe.steps[0], cls):
            return pipe.steps[0]
        held = (f"one {type(pipe.steps[0]).__name__}" if len(pipe.steps) == 1 else
                f"a pipeline of {len(pipe.steps)} steps ({', '.join(type(s).__name__ for s in pipe.steps)})")
        raise ArtifactError(f"{cls.__name__}.load: {path} holds {held}, not one {cls.__name__}: load it with "
                            f"Pipeline.load (or Operator.load)")

    @property
    def is_fitted(self) -> bool:
        """Whether every child operator is fitted."""
        return all(c.is_fitted for c in self.children())

    def _check_fitted(self) -> None:
        for leaf in iter_leaves(self):
            leaf._check_fitted()

    def child_paths(self, path: str) -> list[tuple[Operator, str]]:
        """Every child with its path, this composite being at ``path`` (``"pipeline[1]"``): the paths
        the YAML builder, the trace and the errors of search and fit use."""
        return [(c, path) for c in self.children()]

    def fit(self, corpus: Corpus, train: TrainSet | None = None, *, upstream: State | None = None,
            backend: str = "local") -> Self:
        """Fit every child operator once (an operator object found twice in the tree is fitted once), on
        ``corpus`` and, for those that learn, the training split ``train``; returns ``self``.  ``upstream`` and
        ``backend`` are as in :meth:`Operator.fit`.  A fit that raises leaves every operator of the tree as it
        was before it (fitted as before, or unfitted)."""
        return self._fit_at(corpus, train, upstream=upstream, backend=backend)

    @restoring
    def _fit_at(self, corpus: Corpus, train: TrainSet | None = None, *, upstream: State | None = None,
                _seen: set[int] | None = None, _path: str = "", backend: str = "local") -> Self:
        """:meth:`fit`, as the node at ``_path`` of a tree whose fit has fitted the objects ``_seen`` (their
        ``id``) already; ``_seen=None``: fitted on its own (the checks of the whole tree are made here)."""
        from ragkit.pipelines._checks import check_trainable

        if backend != "local":  # fitted on its own on Ray (a pipeline's steps are fitted locally by it)
            return fit_on_backend(self, corpus, train, upstream, backend)
        if _seen is None:  # fitted on its own: a refused refit changes nothing (see check_trainable)
            check_trainable(self, train, corpus, _path)
        seen = set() if _seen is None else _seen
        for child, where in self.child_paths(_path):
            fit_once(child, corpus, train, seen, upstream, where)
        return self


#: the most iterations a loop may run (a judge that never says done would otherwise run for ever)
MAX_LOOP_ITERS = 1000
#: The iterations a loop runs at most when ``max_iters`` is not given (``Loop``, and YAML without the key).
DEFAULT_MAX_ITERS = 3


def _at(path: str, kind: str) -> str:
    """``path.kind``, or ``kind`` for a composite searched or fitted on its own (no path)."""
    return f"{path}.{kind}" if path else kind


#: the per-query records a loop (``iterations``) and a route (``route``, the labels) keep in ``state.values``:
#: under the plain name (the last loop / route to finish writes it) and under the name and the node's path
#: (:func:`record_key`), where every loop's and route's record stays
NODE_RECORDS = ("iterations", "route")


def record_key(name: str, here: str) -> str:
    """The ``values`` key of the record ``name`` (``"iterations"``, ``"route"``) of the loop or route at ``here``,
    its path as traces and errors spell it: ``record_key("iterations", "pipeline[0].loop")`` is
    ``"iterations@pipeline[0].loop"``; a composite searched on its own is at ``"loop"`` / ``"route"``."""
    return f"{name}@{here}"


def _record_inside(key: str, where: str) -> bool:
    """Whether ``key`` is the record (:func:`record_key`) of a loop or route inside the node at ``where``."""
    name, at, node = key.partition("@")
    return bool(at) and name in NODE_RECORDS and node.startswith((f"{where}.", f"{where}["))


def fit_once(op: Operator, corpus: Corpus, train: TrainSet | None, seen: set[int], upstream: State | None,
             path: str = "") -> None:
    """Fit ``op`` (at ``path`` in the tree, for errors) unless this pipeline already fitted the same object."""
    if id(op) in seen:
        return
    seen.add(id(op))
    if isinstance(op, Composite):
        if type(op).fit in _COMPOSITE_FITS:
            op._fit_at(corpus, train, upstream=upstream, _seen=seen, _path=path)
        else:  # a subclass of one's own overriding fit: its override runs, as it did before _fit_at
            op.fit(corpus, train, upstream=upstream)
        return
    try:
        op.fit(corpus, train, upstream=upstream if op.wants_upstream else None)
    except RagkitError as e:  # which step: a pipeline may hold two of one operator
        if path and e.args and isinstance(e.args[0], str) and not e.args[0].startswith(path):
            placed_at(e, f"{path}.{op.name}", op.name)
        raise


def _same_record(a: Any, b: Any) -> bool:
    """Whether two per-query records (``values["iterations"]`` / ``["route"]``: lists, or a plugin's arrays)
    hold the same values (a branch that did not write one hands back the state's)."""
    if a is b:
        return True
    if a is None or b is None or len(a) != len(b):
        return False
    try:
        return all(bool(x == y) for x, y in zip(list(a), list(b)))
    except ValueError:  # (elements that are arrays themselves: not a record ragkit writes)
        return False


def placed_at(e: _Error, at: str, name: str) -> _Error:
    """``e`` (raised by the operator ``name`` found at ``at``, ``pipeline[1].dense``) with its message
    starting at ``at``, as :func:`~ragkit.pipelines.yaml.build` places a parameter's error: a message that
    names a place inside the operator (``dense.reduce: ...``, ``weighted.norm: ...``) names it from the top,
    ``pipeline[1].dense.reduce: ...``; any other gets ``at: `` before it.  A :class:`ParamError`'s ``path``
    follows.  Returns ``e``, changed in place."""
    msg = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    head = msg.split(": ", 1)[0]
    inside = (head == name or head.startswith((f"{name}.", f"{name}["))) and " " not in head
    e.args = (f"{at}{msg[len(name):]}" if inside else f"{at}: {msg}", *e.args[1:])
    if isinstance(e, ParamError):
        e.path = at + head[len(name):] if inside else at
    return e


def shared_corpus(root: Operator) -> Corpus | None:
    """The corpus that every fitted, stateful leaf of ``root`` searches (rows of its rankings are
    rows of it), else ``root.corpus_``; ``None`` when nothing is fitted.

    A retriever edited on its own after the pipeline's fit (``add`` / ``remove``) searches its
    edited corpus: the pipeline follows it, as long as every such leaf holds the same documents
    (else a :class:`DataError` naming two that differ).  Checked by identity first; a content check
    is remembered per set of corpus objects, so repeated searches do not repeat it.  A fitted leaf that holds
    nothing per document (``per_document = False``: ``cosine_adapter``) is not compared: it takes over the
    corpus of the others (so a pipeline whose retrievers alone were edited searches and saves as one).
    """
    from ragkit.pipelines.yaml import walk_leaves

    held = [(path, leaf) for path, leaf in walk_leaves(root)
            if not leaf.stateless and getattr(leaf, "corpus_", None) is not None]
    fitted = [(path, leaf) for path, leaf in held if getattr(leaf, "per_document", True)]
    if not fitted:  # (a pipeline's own, from its attribute dict: its corpus_ property reads this function)
        return vars(root).get("corpus_") if not held else held[0][1].corpus_
    if len(fitted) < len(held):
        shared = fitted[0][1].corpus_
        for _, leaf in held:
            if not getattr(leaf, "per_document", True) and leaf.corpus_ is not shared:
                leaf.corpus_ = shared  # (its state reads no document: only whose rows it belongs to)
    corpora = tuple({id(leaf.corpus_): leaf.corpus_ for _, leaf in fitted}.values())  # distinct objects
    key = tuple(id(c) for c in corpora)
    checked = getattr(root, "_shared_corpus", None)  # (key, the corpora themselves: their ids stay theirs)
    if len(corpora) > 1 and (checked is None or checked[0] != key):
        first_path, first = fitted[0]
        for path, leaf in fitted[1:]:
            c, c0 = leaf.corpus_, first.corpus_
            if c is not c0 and (len(c) != len(c0) or not np.array_equal(c.ids, c0.ids)):
                fixed = next((p for p, op in fitted if not hasattr(op, "add")), None)
                advice = (f"fit the pipeline again ({fixed} cannot be edited: it has no add)" if fixed is not None else
                          "edit every retriever of the pipeline alike, or fit the pipeline again")
                raise DataError(f"{path} searches {len(c):,} documents and {first_path} {len(c0):,} other ones (an "
                                f"add or remove on one of them alone?): the rows of their rankings cannot be merged; "
                                f"{advice}")
        root._shared_corpus = (key, corpora)  # type: ignore[attr-defined]
    return corpora[0]


def checked_nodes(op: Operator, path: str = "pipeline") -> list[Operator]:
    """Every node of ``op``'s tree, as :func:`~ragkit.operator.tree_nodes` gives them (``op``, its composites and
    leaves, depth first, each object once), the tree checked on the way, with ``op`` at ``path`` (``"pipeline"``;
    ``""`` for a composite on its own): a child that is no operator (``pipe.steps.append("top_k")``) or a composite
    that holds a composite it is in (``pipe.steps.append(pipe)``: a cycle, every walk of which recursed until
    Python gave up) is a :class:`ParamError` at the child's path, before any work.  An object found twice
    elsewhere (one operator in two branches, a YAML alias) is allowed and walked once: linear in the nodes.
    The walk of :meth:`Pipeline.fit` (every composite's fit: :func:`restoring`), :meth:`Pipeline.search`,
    :meth:`Pipeline.save` and :func:`~ragkit.pipelines.yaml.to_node` (``to_yaml``)."""
    nodes: list[Operator] = []
    walked: set[int] = set()
    inside: dict[int, Operator] = {}  # the composites on the path to the node at hand
    stack: list[tuple[Any, str, bool]] = [(op, path, False)]
    while stack:
        node, where, leaving = stack.pop()
        if leaving:
            del inside[id(node)]
            continue
        if not isinstance(node, Operator):
            raise ParamError(f"{where or 'pipeline'}: expected an operator, got {not_an_operator(node)}",
                             path=where)
        if id(node) in inside:
            raise ParamError(f"{where}: holds the {type(inside[id(node)]).__name__.lower()} it is in (a cycle: a tree "
                             "inside itself has no end); give it a new operator, or a copy", path=where)
        if id(node) in walked:
            continue
        walked.add(id(node))
        nodes.append(node)
        children = (node.child_paths(where) if isinstance(node, Composite)
                    else [(c, where) for c in node.children()])
        if children:
            inside[id(node)] = node
            stack.append((node, where, True))
            stack.extend((c, w, False) for c, w in reversed(children))
    return nodes


def iter_leaves(op: Operator) -> Iterable[Operator]:
    """Leaves of an operator tree, depth first, each object once: the nodes of :func:`~ragkit.operator.tree_nodes`,
    in its order, that are no composite (an empty pipeline, a route's ``[]`` branch, is none) and have no
    children."""
    for node in tree_nodes(op):
        if not isinstance(node, Composite) and not node.children():
            yield node


def _learning_leaves(op: Operator) -> list[Operator]:
    """The leaves of ``op`` that learn from judged training queries (:attr:`Operator.learns`)."""
    return [leaf for leaf in iter_leaves(op) if getattr(leaf, "learns", False)]


def _generator_in(op: Operator) -> Operator | None:
    """The first generator (``generate``) of ``op``'s tree, or ``None``."""
    return next((leaf for leaf in iter_leaves(op) if leaf.kind == "generator"), None)


def _two_generators(parts: Sequence[Operator]) -> tuple[int, Operator, int, Operator] | None:
    """``(j, earlier, i, gen)``: the first of ``parts`` (``parts[i]``) whose tree holds a generator (``gen``) after an
    earlier one holding one (``parts[j]``, its ``earlier``), else ``None``; the one walk of
    :func:`_second_generator` (steps of a list) and :func:`_second_generator_branch` (branches of a parallel)."""
    first: tuple[int, Operator] | None = None
    for i, part in enumerate(parts):
        gen = _generator_in(part)
        if gen is None:
            continue
        if first is not None:
            return (*first, i, gen)
        first = (i, gen)
    return None


def _second_generator(steps: Sequence[Operator], path: str = "pipeline") -> ParamError | None:
    """The error for the first of ``steps`` (one list, at ``path``) that holds a generator after an earlier step
    that holds one (``[bm25, generate, mmr, generate]``), else ``None``: each writes ``values["answer"]``, so the
    later answer replaces the earlier one for every query that reaches both, and a language model ran for
    nothing.  (A generator in each branch of a route is fine: each query gets one answer.)"""
    found = _two_generators(steps)
    if found is None:
        return None
    j, earlier, i, gen = found

    def held(k: int, leaf: Operator) -> str:
        return "" if leaf is steps[k] else f", which holds a {leaf.name}"

    here = step_path(path, i, steps[i])
    return ParamError(f"{here}{held(i, gen)}: a second {gen.kind} ({gen.name}) after the one at "
                      f"{step_path(path, j, steps[j])}{held(j, earlier)}: each writes the answer "
                      f"(values['answer']), so the later one's would replace the earlier one's; keep one of them",
                      path=here)


def _second_generator_branch(branches: Sequence[Operator], path: str = "parallel") -> ParamError | None:
    """The error for the first of a parallel's ``branches`` (the parallel at ``path``) that holds a generator when an
    earlier branch holds one, else ``None``: every branch runs on every query, so both would call the language model,
    and the parallel passes on one branch's answer (``values["answer"]``, the first's) and drops the other, as a
    second generator in one list (:func:`_second_generator`).  (A generator in each branch of a route is fine:
    each query runs one branch.)"""
    found = _two_generators(branches)
    if found is None:
        return None
    i, earlier, j, gen = found
    here = f"{path}.branches[{j}]"
    return ParamError(f"{here}: a second {gen.kind} ({gen.name}) in this parallel, beside the {earlier.name} of "
                      f"its branches[{i}]: every branch runs on every query, so both would call the language "
                      f"model, and the parallel passes on one answer (values['answer'], the first branch's) and "
                      f"drops the other; keep one of them, or generate once after the parallel, from its fused "
                      f"ranking", path=here)


def step_path(path: str, k: int, op: Operator) -> str:
    """Where step ``k`` (``op``) of the list at ``path`` stands, as errors and notes name it: ``pipeline[1]``
    for a nested list, ``pipeline[1].bm25`` for an operator or a branch, route or loop (its YAML key)."""
    return f"{path}[{k}]" if isinstance(op, Pipeline) else f"{path}[{k}].{op.name}"


def generation_cut(steps: Sequence[Operator]) -> int | None:
    """The index of the first of ``steps`` (one list) that is itself a ``generate`` step, else ``None``: where
    ``ragkit search``, ``eval`` and ``train`` cut a pipeline (they show or score the rankings before it).  A
    generator inside a nested list, branch, route or loop is not a cut: it passes the rankings on there
    (:func:`~ragkit.generators.operator.rankings_only`) and the steps after it run."""
    return next((i for i, op in enumerate(steps) if op.kind == "generator"), None)


class Pipeline(Composite):
    """A linear sequence of operators; the root of every pipeline.

    Each step runs on what the step before it returned; ``a | b`` builds one, as does
    ``Pipeline([a, b])``.  :meth:`fit` fits every step on a corpus, :meth:`search` runs the
    pipeline on queries, :meth:`save` / :meth:`load` keep it in a folder, :meth:`to_yaml` /
    :meth:`from_yaml` in a pipeline file.

    Parameters
    ----------
    steps : list of Operator, or one Operator
        The steps in order (``Pipeline(a)`` equals ``Pipeline([a])``).  A fuser right after
        ``a + b`` becomes that parallel's fuser, as ``(a + b) | RRF(...)`` does; a fuser anywhere
        else, a judge or a router as a step of its own are refused (they belong in a
        :class:`Parallel`, :class:`Loop` or :class:`Route`).
    description : str, optional
        Free text describing the pipeline: the pipeline file's ``description:``, kept by :meth:`to_yaml`,
        :meth:`save` (and so :meth:`load`) and shown by ``repr``; it changes no result.  Anything but a
        ``str`` or ``None`` is a :class:`~ragkit.errors.ParamError`.

    Examples
    --------
    >>> from ragkit.filters import TopK
    >>> from ragkit.retrievers import BM25
    >>> pipe = BM25(k=100) | TopK(k=10)
    >>> [op.name for op in pipe.steps]
    ['bm25', 'top_k']
    """

    @property
    def corpus_(self) -> Corpus:
        """The documents the pipeline searches: those its fitted retrievers hold now, which follow an ``add`` /
        ``remove`` on them (a ``RagkitRetriever``'s ``add_documents`` / ``delete``), else the corpus it was
        fitted on; an ``AttributeError`` before its fit.  (It read the fitted corpus for good: after an edit,
        ``delete(pipe.corpus_.ids)`` left the added documents findable.)"""
        fitted = vars(self).get("corpus_")
        if fitted is None:
            raise AttributeError("'Pipeline' object has no attribute 'corpus_' (it is not fitted)")
        try:
            held = shared_corpus(self)
        except DataError:  # its retrievers were edited apart: the search says so; here, the fitted corpus
            return fitted
        return fitted if held is None else held

    @corpus_.setter
    def corpus_(self, corpus: Corpus) -> None:
        vars(self)["corpus_"] = corpus

    def __init__(self, steps: Sequence[Operator] | Operator = (), *, description: str | None = None) -> None:
        """``steps`` in order.  A fuser step right after ``a + b`` (a parallel with the default
        fuser) becomes that parallel's fuser, as ``(a + b) | RRF(...)`` does; a fuser anywhere else
        is refused, since it reads the rankings of a parallel's branches (a pipeline of one fuser
        alone is what ``Operator.to_yaml`` writes for a fuser, and is kept).  A step holding a
        generator (``generate``) after another that holds one is refused: its answer would replace
        the first's.  ``description``: free text, the pipeline file's ``description:`` (kept by
        :meth:`to_yaml`, :meth:`save` and ``repr``)."""
        super().__init__()
        if description is not None and not isinstance(description, str):
            raise ParamError(f"Pipeline.description: expected text (a str) or None, got {type(description).__name__} "
                             f"{description!r:.60}", path="description")
        steps = [steps] if isinstance(steps, Operator) else _as_list(steps, "pipeline",
                                                                     "a list of operators (or one operator)")
        for i, s in enumerate(steps):
            if not isinstance(s, Operator):
                raise ParamError(f"pipeline[{i}]: expected an operator, got {not_an_operator(s)}",
                                 path=f"pipeline[{i}]")
            if isinstance(s, Pipeline) and not s.steps:  # YAML refuses `- []`: the save would not load
                raise ParamError(f"pipeline[{i}]: expected an operator or a non-empty pipeline, got an empty "
                                 "Pipeline([]), which does nothing as a step (and a pipeline file cannot hold it); "
                                 "drop it")
        if len(steps) > 1:
            steps = _fold_fusers(steps)
            misplaced = next(((i, s) for i, s in enumerate(steps) if s.kind in ("judge", "router")), None)
            if misplaced is not None:  # (a pipeline of one is what Operator.to_yaml writes for it: kept)
                i, s = misplaced
                home = "Loop(body, until=...)" if s.kind == "judge" else "Route(router, {label: branch, ...})"
                raise ParamError(f"pipeline[{i}]: {s.name!r} is a {s.kind}, not a step of its own (it would change "
                                 f"nothing); it belongs in {home}", path=f"pipeline[{i}].{s.name}")
            second = _second_generator(steps)  # (YAML: said at the list's place, see yaml.build_list)
            if second is not None:
                raise second
        self.steps: list[Operator] = steps
        #: the YAML file's ``description:`` (free text, kept by :meth:`to_yaml`, :meth:`save` and ``repr``)
        self.description: str | None = description

    def children(self) -> list[Operator]:
        return list(self.steps)

    @reprlib.recursive_repr()  # a tree holding itself: '...' where it recurs, not a RecursionError
    def __repr__(self) -> str:
        described = f", description={self.description!r}" if self.description is not None else ""
        return f"Pipeline([{', '.join(repr(s) for s in self.steps)}]{described})"

    def child_paths(self, path: str) -> list[tuple[Operator, str]]:
        return [(s, f"{path}[{i}]") for i, s in enumerate(self.steps)]

    def __or__(self, other: Operator) -> "Pipeline":
        """``pipe | op``: this pipeline's steps, then ``op`` (a pipeline's steps, each).  Anything but an operator
        on the right is an :class:`InputTypeError` saying what ``|`` combines (as :meth:`Operator.__or__
        <ragkit.operator.Operator.__or__>`), unless its class defines ``__ror__`` itself (a LangChain runnable)."""
        if not isinstance(other, Operator):
            if _reflected_elsewhere(other, "__ror__"):
                return NotImplemented
            raise _not_combinable(self, "|", other)
        return Pipeline(list(self.steps) + (other.steps if isinstance(other, Pipeline) else [other]))

    def __ror__(self, other: Operator) -> "Pipeline":
        """``x | pipe`` where ``x`` did not combine (an operator's own ``|`` builds ``op | pipe``): anything but an
        operator on the left is an :class:`InputTypeError` saying what ``|`` combines."""
        if not isinstance(other, Operator):
            raise InputTypeError(f"{type(other).__name__} | {type(self).__name__}(): | chains operators into a "
                                 "Pipeline (a | b runs b on what a returns); both sides must be operators (a "
                                 "retriever, reranker, filter, fuser, ... or a Pipeline / Parallel), got "
                                 f"{not_an_operator(other)} on the left")
        return Pipeline([other]) | self

    def __len__(self) -> int:
        return len(self.steps)

    # ------------------------------------------------------------------ fit
    def fit(self, corpus: Corpus, train: TrainSet | None = None, *, upstream: State | None = None,
            backend: str = "local") -> Pipeline:
        """Fit every operator once, in order.

        Operators that learn from the training split read ``train``; those with
        ``wants_upstream`` also receive the output of the steps before them on the
        training queries.  ``backend="ray"`` pre-encodes the corpus's sentence vectors on Ray (and
        fits ``sharded`` retrievers with ``backend: auto`` as Ray tasks); see :mod:`ragkit.scale`.
        A fit that raises (an error, Ctrl-C) leaves every operator of the pipeline as it was before it
        (fitted as before, or unfitted), and the exception propagates unchanged.
        A refit without ``train`` of a pipeline whose steps learned from judged queries (a fuser with
        ``learn: true``) drops what they learned (the fuser's given weights again), with a warning on the
        ``ragkit`` logger naming those steps; pass ``train`` to learn again, or :meth:`load` the saved pipeline.

        Parameters
        ----------
        corpus : Corpus
            The documents the retrievers index.
        train : TrainSet, optional
            The training queries (with judgements, for the steps that learn from them).
        upstream : State, optional
            The output of the steps before this pipeline on the training queries, where it is itself a step
            of a larger pipeline (what :meth:`Operator.fit` passes to operators with ``wants_upstream``):
            the steps that want their upstream get this pipeline's earlier steps run on it, instead of on
            ``train``'s queries alone.  Not needed when fitting a pipeline directly.
        backend : {"local", "ray"}, default "local"
            Where the corpus is encoded (above).
        """
        return self._fit_at(corpus, train, upstream=upstream, backend=backend)

    @restoring
    def _fit_at(self, corpus: Corpus, train: TrainSet | None = None, *, upstream: State | None = None,
                _seen: set[int] | None = None, _path: str = "pipeline", backend: str = "local") -> "Pipeline":
        from ragkit.pipelines._checks import check_trainable, unranked_router

        if _seen is None:  # before any work (a reranker's fit encodes the whole corpus), as search refuses it;
            # one whose fit does nothing (stateless steps only, or none) is refused at search as before
            leaves = list(iter_leaves(self))
            if not any(leaf.kind == "retriever" for leaf in leaves) and not all(leaf.stateless for leaf in leaves):
                raise ParamError("this pipeline has no retriever (its operators: "
                                 f"{', '.join(sorted({_label(leaf) for leaf in leaves}))}), so no query would get a "
                                 "document; start it with one, e.g. bm25 or dense", path=_path)
        if backend != "local":
            from ragkit import scale

            # (it refuses what the local fit below refuses at once, the same way, before Ray starts; then fits
            # locally, with this warning)
            return scale.fit_pipeline(self, corpus, train, backend=backend, upstream=upstream, path=_path)
        forgetting = _forgetting(self, _path) if train is None and _seen is None else []
        if _seen is None:
            problem = unranked_router(self, _path)
            if problem is not None:
                raise problem
            check_trainable(self, train, corpus, _path)
        seen = set() if _seen is None else _seen
        last_input: list[Any] = []  # [index, state] of the latest learning step: _upstream
        for i, (step, where) in enumerate(self.child_paths(_path)):
            up = upstream
            if train is not None and _wants_upstream(step):
                up = self._upstream(i, train, upstream, last_input, _path)
            fit_once(step, corpus, train, seen, up, where)
        if _seen is None:
            self.corpus_ = corpus
            _warn_forgotten(forgetting)
        return self

    def learned(self) -> dict[str, dict[str, Any]]:
        """What the steps learned from judged training queries, by the step's path (as in errors, the YAML
        builder and ``ragkit train``'s ``learned:`` lines): a copy of each one's ``learned_`` report (a
        learned fuser's ``weights`` with its ``branches`` and nDCG@10 estimates, a router's or judge's
        ``threshold``: what ``learned.json`` holds in a saved folder); for a step that learned without one
        (the Cosine Adapter, an ``adapt`` fine-tune), ``{"queries": n}`` (how many it learned from) with
        its ``threshold`` or tuned ``model`` folder.  Steps that learned nothing are absent: ``{}`` for a
        pipeline fitted without ``train``.  The same after :meth:`load`.

        Examples
        --------
        >>> from ragkit import Corpus, TrainSet
        >>> from ragkit.pipelines import Parallel, RRF
        >>> from ragkit.retrievers import BM25
        >>> pipe = Pipeline([Parallel([BM25(k=5), BM25(k=5, stemmer="none")], fuse=RRF(learn=True, folds=2))])
        >>> pipe.learned()  # nothing learned yet
        {}
        >>> corpus = Corpus.from_texts(["red apples", "green apple pie", "running shoes", "a runner runs"],
        ...                            ids=["a", "b", "c", "d"])
        >>> train = TrainSet({"q1": "apple", "q2": "runs", "q3": "red apple"},
        ...                  {"q1": {"b": 1}, "q2": {"d": 1}, "q3": {"a": 1}})
        >>> pipe.fit(corpus, train).learned()
        {'pipeline[0].parallel.fuse.rrf': {'branches': ['bm25', 'bm25_2'], 'weights': [1.0, 1.0],
         'cv_ndcg@10': 1.0, 'train_ndcg@10': 1.0, 'uniform_ndcg@10': 1.0}}
        """
        import copy

        from ragkit.pipelines.yaml import walk_leaves

        out: dict[str, dict[str, Any]] = {}
        for path, leaf in walk_leaves(self):
            report = getattr(leaf, "learned_", None)
            taught = getattr(leaf, "trained_on_", None)
            if isinstance(report, dict):
                out[path] = copy.deepcopy(report)
            elif taught is not None and getattr(leaf, "learns", False):
                entry: dict[str, Any] = {"queries": len(taught)}
                if getattr(leaf, "threshold_", None) is not None:
                    entry["threshold"] = float(leaf.threshold_)  # type: ignore[attr-defined]
                if getattr(leaf, "model_path_", None):
                    entry["model"] = str(leaf.model_path_)  # type: ignore[attr-defined]
                out[path] = entry
        return out

    def _upstream(self, i: int, train: TrainSet, upstream: State | None, last: list[Any],
                  path: str = "pipeline") -> State:
        """The training queries as they reach step ``i``: the steps before it run on them (on ``upstream``, where
        this pipeline is itself a step), each at its path (``path``: this pipeline's), so that an error one raises
        names the step as a search's does (``pipeline[2].parallel.branches[0][1].boom: ...``).  ``last`` is one
        slot, ``[index, state]`` of the latest learning step before it (empty before the first): the steps from
        that one on run, not the whole prefix again for each learning step, and only that input is kept alive
        (the next learner reads no other)."""
        if last:
            start, state = last[0], last[1].copy()  # (that learner's upstream: not changed by the steps run on it now)
        else:
            start, state = 0, upstream.copy() if upstream is not None else State.of(train.queries)
        last.clear()  # (the earlier input is no longer needed while the steps run)
        for step, where in self.child_paths(path)[start:i]:
            state = run_step(step, state, where)
        last[:] = [i, state]
        return state.copy()  # (what the learner's fit adds to it, query vectors, stays out of the slot)

    @property
    def is_fitted(self) -> bool:
        """Whether the pipeline was fitted (it holds a corpus) or every step is."""
        return "corpus_" in vars(self) or all(c.is_fitted for c in self.steps)

    # ------------------------------------------------------------------ run
    def _call(self, state: State, path: str = "pipeline") -> State:
        steps = self.child_paths(path)
        later = [_RANKED_LATER.get()] * len(steps)  # a step before a reranker or fuser: ranked_later()
        for i in range(len(steps) - 2, -1, -1):
            nxt, after = steps[i + 1][0], later[i + 1]
            cut = _cut_to(nxt)
            later[i] = (math.inf if _reorders(nxt) else
                        min(cut, after) if cut is not None and after is not None else after)
        for (step, where), ranked in zip(steps, later):
            token = _RANKED_LATER.set(ranked)
            try:
                state = run_step(step, state, where)
            finally:
                _RANKED_LATER.reset(token)
        return state

    def __call__(self, state: State) -> State:
        """Run the steps on a batch :class:`State`; to search queries (a list of strings), use :meth:`search`."""
        return call_checked(self, state, self._call)

    def search(
        self, queries: Queries | Sequence[str] | Mapping[str, str] | pd.Series | str, *, k: int | None = None,
        trace: bool = False,
        qrels: Mapping[str, Mapping[str, int]] | pd.DataFrame | str | os.PathLike[str] | None = None,
        relevance_level: int = 1, ignore_identical_ids: bool = True, **options: Any,
    ) -> "Run":
        """Run the pipeline on a batch of queries and return a :class:`~ragkit.run.Run`.

        Parameters
        ----------
        queries : Queries, list of str, str, or a mapping {query_id: text}
            (a pandas Series indexed by string ids gives its ids; a list is numbered ``"q0", "q1", ...`` in its
            order; a ``set`` is refused, as its order, so its numbering, changes from run to run, and so is a
            DataFrame)
        k : int, optional
            Final number of results per query (retrievers fetch at least ``k``).
        trace : bool
            Record per-operator wall time, candidates in/out and (with ``qrels``) recall@100.  Only ``True`` or
            ``False``.
        qrels : mapping, DataFrame or path, optional
            Judgements, used only for the trace's recall and nDCG: read by ``trace=True`` only (refused
            without it; to score the run, ``ragkit.evaluate(run, qrels)``), in any form
            :func:`~ragkit.eval.evaluate` reads (:func:`~ragkit.types.as_qrels`): ``{query_id: {doc_id:
            grade}}``, a DataFrame with one row per judgement, or a qrels file's path.
        relevance_level, ignore_identical_ids
            How the trace scores its recall and nDCG, as :func:`~ragkit.eval.evaluate` reads them (the
            lowest grade recall counts; whether a document with its query's id is dropped), so that the
            trace's last step equals ``evaluate(run, qrels, ...)`` with the same settings.
        **options
            Run-time overrides: ``filter={field: value or [values]}`` (every retriever, narrowing
            its own ``filter``), or ``operator_name={option: value}`` for every operator of that
            registry name anywhere in the pipeline, e.g. ``bm25={"n_jobs": 4}``,
            ``muvera={"candidates": 500}``, ``score_threshold={"threshold": 0.4}``,
            ``generate={"on_token": f}``.  Each operator reads only the options its class declares
            (``type(op).declared_options()``: a retriever's ``k`` and ``filter``, plus its
            ``run_options``); a value that is one of its parameters obeys the same rules as at
            construction.

        Raises
        ------
        ParamError
            Before any work, for a key that is not ``k``, ``filter`` or the name of an operator
            in the pipeline, an option the operator does not read, or a bad value, naming it:
            ``search option bm25.kk: unknown option for operator 'bm25' (BM25); expected one
            of: k, filter, n_jobs``; also for a ``trace`` that is not ``True`` / ``False`` and ``qrels``
            without ``trace=True``.
        DataError
            Before any work, for queries of the wrong shape (a set, one bytes, a DataFrame) or malformed ``qrels``.
        NotFittedError
            When the pipeline is not fitted.
        """
        from ragkit.options import check_options
        from ragkit.pipelines._checks import unranked_router
        from ragkit.run import Run, learned_query_ids

        check_search_arguments(queries, trace, qrels, f"{type(self).__name__}.search")  # (a set, trace="yes", qrels
        # without trace: refused before any work, as Operator.search refuses them)
        nodes = checked_nodes(self)  # (a cycle, a step that is no operator: said before any walk recurses)
        problem = unranked_router(self, expansions=False)
        if problem is not None:
            raise problem
        leaves = [n for n in nodes if not isinstance(n, Composite) and not n.children()]  # (iter_leaves)
        stateful = [leaf for leaf in leaves if not leaf.stateless]
        if any(not leaf.is_fitted for leaf in stateful):
            how = "pipeline.fit(corpus, train)" if any(x.needs_train for x in stateful) else "pipeline.fit(corpus)"
            if vars(self).get("corpus_") is None and not stateful[0].is_fitted:
                raise NotFittedError(f"this pipeline is not fitted yet; call {how} first")
            from ragkit.pipelines.yaml import walk_leaves

            path, leaf = next((p, x) for p, x in walk_leaves(self) if not x.stateless and not x.is_fitted)
            raise NotFittedError(f"{path}: {leaf.name} is not fitted (the rest of the pipeline is); call "
                                 f"{how} to fit every operator")
        from ragkit._locks import guarded

        # a RagkitRetriever's add / delete of this pipeline waits for it, and it for them (guarded); an edit of a leaf
        # on another thread does not: each leaf searches the state it held before the shared corpus was read
        with guarded(self), pinned_view(*stateful):
            corpus = shared_corpus(self)
            if corpus is None:
                raise NotFittedError("this pipeline has no retriever that was fitted on a corpus")
            if not any(leaf.kind == "retriever" for leaf in leaves):  # nothing would rank anything
                held = (f"its operators: {', '.join(sorted({_label(leaf) for leaf in leaves}))}" if leaves
                        else "it has no operators at all")
                raise ParamError(f"this pipeline has no retriever ({held}), so no query would get a document; start "
                                 "it with one, e.g. bm25 or dense")
            if k is not None:
                from ragkit.options import _positive_k

                k = _positive_k(k)  # (the one rule of a run-time k: ragkit.options.positive_k)
            options = check_options(self, options, corpus)  # before any work: the whole tree's options
            refuse_unapplied_filter(self, options)  # (a retriever that would ignore it)
            if k is not None:
                options["k"] = int(k)
            if qrels is not None:  # (read as evaluate and TrainSet read them: a mapping, a DataFrame, a path)
                from ragkit.types import as_qrels

                qrels = as_qrels(qrels, "search")
            from ragkit.eval.metrics import check_relevance_level

            # a level no grade reaches: refused here, as evaluate refuses it, not by the trace after the first step
            relevance_level = check_relevance_level(qrels, relevance_level, "search", "the trace's recall would be 0")
            if not isinstance(ignore_identical_ids, (bool, np.bool_)):
                raise ParamError(f"search: ignore_identical_ids must be true or false, got {ignore_identical_ids!r}")
            state = State.of(queries, options=options, trace=[] if trace else None,
                             qrels=dict(qrels) if qrels is not None else None)
            token = _TRACE_IDS.set(corpus.ids)
            scoring = _TRACE_SCORING.set((relevance_level, bool(ignore_identical_ids)))
            try:
                t0 = time.perf_counter()
                with options_checked():  # checked above, once for the whole tree
                    state = self(state)
                seconds = time.perf_counter() - t0
            finally:
                _TRACE_SCORING.reset(scoring)
                _TRACE_IDS.reset(token)
            state = cut_to_k(state, None if k is None else int(k))  # the one final cut (an operator on a State too)
            rankings = state.rankings if state.rankings is not None else [Ranking.empty() for _ in state.queries]
            # (the rankings' scores checked finite by every step's check_result, the ids the corpus's: not again)
            return Run.from_rankings(state.query_ids, rankings, corpus.ids, values=state.values,
                                     trace=state.trace, seconds=seconds, _nan_checked=True, _ids_checked=True,
                                     learned_from=learned_query_ids(self, state.query_ids, state.queries))

    # ------------------------------------------------------------------ YAML and files
    def to_yaml(self) -> str:
        from ragkit.pipelines.yaml import dump_yaml

        return dump_yaml(self)

    @classmethod
    def from_yaml(cls, source: str | Any) -> "Pipeline":
        """Build from a YAML file (a ``Path``, or a string naming an existing file, any suffix) or
        YAML text; the whole file is validated first.  A saved pipeline folder is refused with a
        pointer to :meth:`load`; a path-like string naming nothing is "no such file"."""
        from ragkit.pipelines.yaml import check_yaml_source, load_yaml

        check_yaml_source(source, "Pipeline.from_yaml: source")  # (5, None: said, not pathlib's TypeError)
        return load_yaml(source)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the pipeline to the folder ``path`` atomically: ``pipeline.yaml``, the corpus it
        was fitted on (``corpus.jsonl``, once), one folder per distinct operator and
        ``manifest.json`` with every file's SHA-256 (:mod:`ragkit.pipelines.store`); load it with
        :meth:`load`.  An unfitted pipeline saves its YAML and parameters only.  A leading ``~`` in ``path``
        is the home folder."""
        from ragkit.pipelines.store import save_pipeline

        checked_nodes(self)  # (a cycle, a step that is no operator: said before the save's walks recurse)
        save_pipeline(self, user_path(path, "Pipeline.save: path"))

    @classmethod
    def load(cls, path: str | os.PathLike[str], corpus: Corpus | None = None, *, mmap: bool = False,
             verify: bool = True) -> Pipeline:
        """Load a folder written by :meth:`save` (checksums verified first unless ``verify=False``).  A leading
        ``~`` in ``path`` is the home folder; ``corpus``, when given, is the :class:`Corpus` it was fitted on.

        Parameters
        ----------
        path : str or path-like
            The folder :meth:`save` wrote.
        corpus : Corpus, optional
            The corpus the pipeline was fitted on (``None``: the one the folder holds).
        mmap : bool, default False
            Memory-map the large saved arrays and indexes (vectors, BM25's matrices) instead of reading them
            into memory: a faster load and less memory, searches reading pages from the files; as
            :meth:`Operator.load` (the token vectors of ``muvera``/``maxsim``/``maxsim_exact`` are mapped
            whatever it says).  The folder must stay in place while the pipeline is used.
        verify : bool, default True
            Check the folder's checksums before loading (a changed file is an
            :class:`~ragkit.errors.ArtifactError`).
        """
        from ragkit.pipelines.store import load_pipeline

        folder = user_path(path, "Pipeline.load: path")
        if corpus is not None and not isinstance(corpus, Corpus):
            raise InputTypeError(f"Pipeline.load: corpus must be the ragkit Corpus the pipeline was fitted on (or "
                                 f"None: the saved folder holds it), got {type(corpus).__name__}")
        return load_pipeline(folder, corpus=corpus, mmap=mmap, verify=verify)


def _forgetting(pipe: Operator, path: str) -> list[tuple[str, int]]:
    """``(path, n)`` for each leaf of ``pipe`` that learned from (or read) ``n`` training queries at its last
    fit: what a fit without ``train`` drops."""
    from ragkit.pipelines.yaml import walk_leaves

    return [(where, len(taught)) for where, leaf in walk_leaves(pipe, path)
            if (taught := getattr(leaf, "trained_on_", None)) is not None and leaf.is_fitted]


def _warn_forgotten(forgetting: list[tuple[str, int]]) -> None:
    if forgetting:
        logging.getLogger("ragkit").warning(
            "fit without train: %s learned from judged training queries at the last fit; what %s learned is "
            "dropped (a learned fuser's weights go back to the given ones); pass train=TrainSet(queries, qrels) "
            "to learn again, or Pipeline.load the saved pipeline",
            ", ".join(f"{where} (from {n} quer{'y' if n == 1 else 'ies'})" for where, n in forgetting),
            "it" if len(forgetting) == 1 else "they")


def _wants_upstream(op: Operator) -> bool:
    return op.wants_upstream or any(_wants_upstream(c) for c in op.children())


def _label(op: Operator) -> str:
    return op.name or type(op).__name__.lower()


def _fold_fusers(steps: list[Operator]) -> list[Operator]:
    """``steps`` with each fuser that follows ``a + b`` moved into it; any other fuser step refused."""
    out: list[Operator] = []
    for i, s in enumerate(steps):
        if s.kind != "fuser":
            out.append(s)
            continue
        last = out[-1] if out else None
        if isinstance(last, Parallel) and last.implicit_fuse:  # (a + b) | RRF(...) fuses with RRF
            out[-1] = Parallel(last.branches, fuse=s, names=last.names)
            continue
        already = f" (the parallel before it already fuses with {last.fuse.name!r})" if isinstance(
            last, Parallel) else ""
        raise ParamError(f"pipeline[{i}]: {s.name!r} is a fuser; it fuses the rankings of a parallel's branches, "
                         f"so it must directly follow 'a + b' without a fuser of its own{already}: write "
                         f"(a + b) | {type(s).__name__}(...) or Parallel([a, b], fuse={type(s).__name__}(...))")
    return out


def _as_pipeline(x: Operator | Sequence[Operator], where: str, *, empty_ok: bool = False) -> Operator:
    """A branch or body: an operator, or a list of steps as a :class:`Pipeline`.

    An empty list (a pass-through) only where ``empty_ok`` (a route's branches and default); a
    fuser, or a list that starts with one, is refused: there are no branches for it to fuse.
    """
    if isinstance(x, (list, tuple)):
        if not x and not empty_ok:
            raise ParamError(f"{where}: expected an operator or a non-empty list of operators, got []")
        try:
            x = Pipeline(list(x))
        except ParamError as e:
            raise ParamError(f"{where}: {e}") from None
    elif not isinstance(x, Operator):
        raise ParamError(f"{where}: expected an operator or a list of operators, got {not_an_operator(x)}", path=where)
    elif isinstance(x, Pipeline) and not x.steps and not empty_ok:  # as [] (YAML refuses both: a save would not load)
        raise ParamError(f"{where}: expected an operator or a non-empty list of operators, got an empty Pipeline([])")
    first = x.steps[0] if isinstance(x, Pipeline) and x.steps else x
    if first.kind == "fuser":
        raise ParamError(f"{where}: {first.name!r} is a fuser, which fuses the rankings of a parallel's branches; "
                         "as a branch or loop body it has none: give it to a Parallel as fuse=... instead")
    return x


def not_an_operator(x: object) -> str:
    """What ``x``, given where an operator goes, is, for an error: ``the class RRF; pass an instance,
    RRF()`` (``RuleRouter(...)`` when it needs parameters), ``str 'rrf' (...; pass RRF())``, ``int 3``."""
    if isinstance(x, type) and issubclass(x, Operator):
        needs = any(f.is_required() for f in x.Params.model_fields.values()) or x.__init__ is not Operator.__init__
        return f"the class {x.__name__}; pass an instance, {x.__name__}({'...' if needs else ''})"
    if isinstance(x, str):
        from ragkit import registry

        try:
            cls = registry.get(x)
        except ParamError:
            return f"str {x!r:.80}"
        return f"str {x!r} (the name of {cls.__name__} in pipeline YAML; in Python pass the operator, {cls.__name__}())"
    return f"{type(x).__name__} {x!r:.80}"


def _as_list(items: object, where: str, expected: str) -> list[Any]:
    """``items`` (a list, tuple or other iterable of steps or branches) as a list; a string, a mapping or
    something that is not iterable is a :class:`ParamError` at ``where`` saying ``expected``."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise ParamError(f"{where}: expected {expected}, got {not_an_operator(items)}", path=where)
    return list(items)


def _operator_of_kind(x: object, kind: str, where: str, examples: str) -> Operator:
    """``x`` when it is an operator of ``kind``; else a :class:`ParamError` at ``where`` naming what it is
    (``examples``: how to make one, ``"RRF(), WeightedFusion()"``)."""
    if not isinstance(x, Operator):
        raise ParamError(f"{where}: expected a {kind} operator ({examples}), got {not_an_operator(x)}", path=where)
    if x.kind != kind:
        raise ParamError(f"{where}: expected a {kind} operator ({examples}), got {x.name or type(x).__name__!r} "
                         f"({x.kind})", path=where)
    return x


class Parallel(Composite):
    """Run branches on the same queries and fuse their rankings (Modular RAG "branching").

    Parameters
    ----------
    branches : list of Operator (or list of lists, each a linear pipeline)
        One operator alone is one branch: ``Parallel(a)`` equals ``Parallel([a])``.
    fuse : Operator of kind ``"fuser"``, default ``RRF(k=60)``
        Merges the branches' rankings into one: ``rrf`` (reciprocal rank fusion) or ``weighted``
        (normalised score fusion), each with optional ``weights``, one per branch.
    names : list of str, optional
        Branch names used in the fused ranking's fields (``"<name>.rank"``,
        ``"<name>.score"``); default: the branch's operator name, made unique.

    Examples
    --------
    >>> from ragkit.pipelines import RRF
    >>> from ragkit.retrievers import BM25
    >>> from ragkit.types import Corpus
    >>> both = Parallel([BM25(k=3), BM25(k=3, stemmer="none")], fuse=RRF(k=60))  # same as BM25(k=3) + BM25(...)
    >>> both.names
    ['bm25', 'bm25_2']
    >>> both.fit(Corpus.from_texts(["red apples", "green pears", "red cars"])).search("red apple").doc_ids[0].tolist()
    ['0', '2']
    """

    name = "parallel"

    def __init__(self, branches: Operator | Sequence[Operator | Sequence[Operator]], fuse: Operator | None = None,
                 names: Sequence[str] | None = None) -> None:
        from ragkit.pipelines._checks import fuse_weights_problem

        super().__init__()
        listed = [branches] if isinstance(branches, Operator) else _as_list(
            branches, "parallel.branches", "a list of branches (each an operator or a list of operators)")
        self.branches = [_as_pipeline(b, f"parallel.branches[{i}]") for i, b in enumerate(listed)]
        if not self.branches:
            raise ParamError("parallel.branches: expected at least one branch, got an empty list")
        self.implicit_fuse = fuse is None
        if fuse is None:
            from ragkit.pipelines.fusion import RRF

            fuse = RRF()
        if isinstance(fuse, Operator) and fuse.kind != "fuser":  # Parallel(a, b): the branches go in one list
            raise ParamError(f"parallel.fuse: expected a fuser operator (RRF(), WeightedFusion()), got {fuse.name!r} "
                             f"({fuse.kind}); the branches go in one list: Parallel([a, b], fuse=RRF())",
                             path="parallel.fuse")
        self.fuse = _operator_of_kind(fuse, "fuser", "parallel.fuse", "RRF(), WeightedFusion()")
        if names is not None:
            given, problem = branch_names_problem(names, len(self.branches))
            if problem:
                raise ParamError(f"parallel.names: {problem}", path="parallel.names")
            names = given
        self.names = list(names) if names is not None else unique_names(self.branches)
        problem = fuse_weights_problem(self.fuse, self.names)
        if problem:
            raise ParamError(f"parallel.fuse.{self.fuse.name}.weights: {problem}")
        second = _second_generator_branch(self.branches)
        if second is not None:
            raise second

    def children(self) -> list[Operator]:
        return [*self.branches, self.fuse]

    @reprlib.recursive_repr()  # a tree holding itself: '...' where it recurs, not a RecursionError
    def __repr__(self) -> str:
        args = [f"[{', '.join(_branch_repr(b) for b in self.branches)}]"]
        if not self.implicit_fuse:
            args.append(f"fuse={self.fuse!r}")
        if self.names != unique_names(self.branches):
            args.append(f"names={self.names!r}")
        return f"Parallel({', '.join(args)})"

    def child_paths(self, path: str) -> list[tuple[Operator, str]]:
        here = _at(path, "parallel")
        return [*((b, f"{here}.branches[{i}]") for i, b in enumerate(self.branches)), (self.fuse, f"{here}.fuse")]

    def __add__(self, other: Operator) -> "Parallel":
        """``par + op``: one more branch.  Anything but an operator on the right is an :class:`InputTypeError`
        saying what ``+`` combines (as :meth:`Operator.__add__ <ragkit.operator.Operator.__add__>`), unless its
        class defines ``__radd__`` itself."""
        if not isinstance(other, Operator):
            if _reflected_elsewhere(other, "__radd__"):
                return NotImplemented
            raise _not_combinable(self, "+", other)
        if isinstance(other, Parallel) and other.implicit_fuse:
            # names it made itself are made again next to ours (a + (b + c) names bm25, bm25_2, bm25_3, as
            # (a + b) + c does); names given to it are kept
            extra = other.branches
            extra_names = None if other.names == unique_names(other.branches) else other.names
        else:
            extra, extra_names = [other], unique_names([other])
        return Parallel([*self.branches, *extra], fuse=None if self.implicit_fuse else self.fuse,
                        names=unique_names(extra, taken=self.names, wanted=extra_names))

    @restoring
    def _fit_at(self, corpus: Corpus, train: TrainSet | None = None, *, upstream: State | None = None,
                _seen: set[int] | None = None, _path: str = "", backend: str = "local") -> "Parallel":
        from ragkit.pipelines._checks import check_trainable

        if backend != "local":  # fitted on its own on Ray (a pipeline's steps are fitted locally by it)
            return fit_on_backend(self, corpus, train, upstream, backend)
        if _seen is None:  # fitted on its own: a refused refit changes nothing (see check_trainable)
            check_trainable(self, train, corpus, _path)
        seen = set() if _seen is None else _seen
        paths = self.child_paths(_path)  # the branches', then the fuser's
        for b, where in paths[:-1]:
            fit_once(b, corpus, train, seen, upstream, where)
        if id(self.fuse) not in seen:
            from ragkit.pipelines.fusion import FITTED_AT

            seen.add(id(self.fuse))
            up = None
            if train is not None and self.fuse.wants_upstream:
                up = self._branch_state(upstream.copy() if upstream is not None else State.of(train.queries), _path)
            token = FITTED_AT.set(paths[-1][1])  # where a learning fuser's warnings say it is
            try:
                self.fuse.fit(corpus, train, upstream=up)
            finally:
                FITTED_AT.reset(token)
        return self

    def _branch_state(self, state: State, path: str = "") -> State:
        """Run every branch on its own copy of ``state``; ``branches`` holds their rankings.

        Query vectors computed by a branch are shared with the later branches and kept,
        unless the branch rewrote the query text (``values["query_text"]``); branch
        scratch values are kept (first branch wins), except a rewritten query text
        (:data:`~ragkit.types.QUERY_REWRITES`) and PRF's term counts of it
        (:data:`~ragkit.retrievers.bm25.LEXICAL_COUNTS`), which stay inside their branch.
        A branch without a retriever given a state without rankings (in a loop's body, its first
        iteration) is not run: its ranking is empty.
        """
        from ragkit.retrievers.bm25 import LEXICAL_COUNTS

        # (not one of QUERY_REWRITES: a route fills those in with the query text where a branch left them None)
        inside = (*QUERY_REWRITES, LEXICAL_COUNTS)
        shared = dict(state.vectors)
        outs = []
        for b, where in self.child_paths(path)[:-1]:
            inp = state.copy()
            inp.vectors = dict(shared)
            if state.rankings is None and not any(leaf.kind == "retriever" for leaf in iter_leaves(b)):
                # a branch without a retriever keeps the rankings before it: none here (a loop's first
                # iteration), so it gets no documents; its steps would refuse a state without rankings
                outs.append(inp)
                continue
            o = run_step(b, inp, where)
            if same_query_text(inp, o, f"{where} (a branch of this parallel)"):
                for key, vec in o.vectors.items():
                    shared.setdefault(key, vec)
            outs.append(o)
        merged = state.copy()
        merged.vectors = shared
        for (_, where), o in zip(self.child_paths(path), outs):
            for key, vals in o.values.items():
                if _record_inside(key, where):  # a loop's / route's record in this branch: its latest run
                    merged.values[key] = vals
                elif key in ("iterations", "route") and not _same_record(vals, state.values.get(key)):
                    merged.values[key] = vals  # written in this branch: the last loop / route to run
                elif key not in inside:
                    merged.values.setdefault(key, vals)
        merged.branches = [(n, o.rankings if o.rankings is not None else [Ranking.empty() for _ in range(len(state))])
                           for n, o in zip(self.names, outs)]
        return merged

    def _call(self, state: State, path: str = "") -> State:
        token = _RANKED_LATER.set(math.inf)  # the fuser reads every branch's whole ranking
        try:
            merged = self._branch_state(state, path)
        finally:
            _RANKED_LATER.reset(token)
        out = run_step(self.fuse, merged, self.child_paths(path)[-1][1])
        out.branches = None
        return out

    def __call__(self, state: State) -> State:
        """Run on a batch :class:`State`; to search queries (a list of strings), use :meth:`search`."""
        return call_checked(self, state, self._call)


def _branch_repr(branch: Operator) -> str:
    """A branch or loop body as its constructor takes it: a list of steps, or one operator."""
    if isinstance(branch, Pipeline):
        return f"[{', '.join(repr(s) for s in branch.steps)}]"
    return repr(branch)


def path_unsafe(names: Iterable[str]) -> list[str]:
    """Those of ``names`` (a parallel's branch names, a route's labels) that cannot be a part of a path or a field
    name: empty (or blank), or holding ``.``, ``[`` or ``]`` (``a[0]`` would name what ``a``'s first step is)."""
    return [n for n in names if not n.strip() or any(c in n for c in ".[]")]


def branch_names_problem(names: Any, n_branches: int | None) -> tuple[list[str], str | None]:
    """A parallel's ``names`` as a list, and why they cannot name its ``n_branches`` branches (``None``: not
    known, a YAML parallel whose branches are wrong), else ``None``: the one check of :class:`Parallel` and of a
    YAML ``parallel:``, which places it at its path in the file.  They must be a list of strings (any iterable
    with an order: a tuple, a generator; not a set, a mapping or a string), one per branch, distinct, and each
    non-empty and without ``.``, ``[`` or ``]``, as a route's labels (:func:`route_label_problem_at`): a name is
    a part of the fields the fused ranking writes (``<name>.rank``; ``''`` made ``.rank``, ``a.b`` made
    ``a.b.rank``, read as the field ``b.rank`` of ``a``)."""
    # (5 failed as a raw "'int' object is not iterable"; a set has no branch order)
    given = (list(names) if isinstance(names, Iterable)
             and not isinstance(names, (str, bytes, Mapping, set, frozenset)) else None)
    if given is None or not all(isinstance(n, str) for n in given):
        return [], (f"expected a list of strings (one per branch, in the order of the branches), got {names!r:.80} "
                    f"({type(names).__name__})")
    if n_branches is not None and len(given) != n_branches:
        return given, (f"expected {n_branches} names (one per branch, in the order of the branches), got "
                       f"{len(given)}: {given!r:.80}")
    repeated = sorted({n for n in given if given.count(n) > 1})
    if repeated:
        return given, (f"{repeated} name more than one branch; each branch's fields ('<name>.rank', '<name>.score') "
                       f"need their own name")
    odd = path_unsafe(given)
    if odd:
        return given, (f"branch names must be non-blank and hold no '.', '[' or ']' (they are parts of the fields the "
                       f"fused ranking writes, '<name>.rank' and '<name>.score', as a route's labels are of paths), "
                       f"got {odd}")
    return given, None


def unique_names(branches: list[Operator], taken: Sequence[str] = (),
                 wanted: Sequence[str] | None = None) -> list[str]:
    """Branch names: ``taken`` (the names of branches already there) followed by one name per
    branch of ``branches``: its ``wanted`` name, else its first operator's name, made unique with
    a number (``bm25``, ``bm25_2``, ...)."""
    names: list[str] = list(taken)
    for i, b in enumerate(branches):
        leaf = b.steps[0] if isinstance(b, Pipeline) and b.steps else b
        base = wanted[i] if wanted is not None else _label(leaf)
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}_{n}"
        names.append(name)
    return names


class Route(Composite):
    """Conditional flow: a router labels each query; each label's branch runs on its queries.

    The batch is split by label, each part runs its branch as one batch, and the
    results merge back in the original query order.  Queries whose label has no branch
    go to ``default`` (an error when there is none).  The labels are kept in
    ``state.values["route"]`` (the last route to run writes it) and under the route's path,
    ``state.values["route@pipeline[1].route"]``, which a later route does not overwrite.

    Parameters
    ----------
    router : Operator of kind ``"router"``
        Labels each query: ``RuleRouter(rules=...)``, ``ScoreRouter(...)``.
    branches : mapping of label to Operator (or list of operators, a linear pipeline)
        The branch each label's queries run; an empty list passes them through unchanged.
    default : Operator, list of operators, label (str), or None
        Where queries whose label has no branch go: a branch of its own, or the label of one of
        ``branches``; ``None`` makes such a query an error.

    Examples
    --------
    >>> from ragkit.filters import TopK
    >>> from ragkit.pipelines import RuleRouter
    >>> from ragkit.retrievers import BM25
    >>> from ragkit.types import Corpus, State
    >>> router = RuleRouter(rules=[{"label": "short", "max_words": 1}], default="long")
    >>> pipe = BM25(k=3) | Route(router, {"short": TopK(k=1), "long": TopK(k=2)})
    >>> pipe.fit(Corpus.from_texts(["red apples", "green pears", "red cars"]))(State.of(["cars", "red apple"])).values
    {'route': ['short', 'long'], 'route@pipeline[1].route': ['short', 'long']}
    >>> [d.tolist() for d in pipe.search(["cars", "red apple"]).doc_ids]
    [['2'], ['0', '2']]
    """

    name = "route"

    def __init__(self, router: Operator, branches: Mapping[str, Operator | Sequence[Operator]],
                 default: Operator | Sequence[Operator] | str | None = None) -> None:
        from ragkit.pipelines._checks import route_label_notes, route_label_problems

        super().__init__()
        router = _operator_of_kind(router, "router", "route.router", "RuleRouter(rules=...), ScoreRouter(...)")
        if not isinstance(branches, Mapping):
            raise ParamError("route.branches: expected a mapping of label -> branch (an operator or a list of "
                             f"operators), e.g. {{'short': BM25()}}, got {not_an_operator(branches)}",
                             path="route.branches")
        if not branches:
            raise ParamError("route.branches: expected at least one labelled branch, got none")
        problem = route_label_problems(router, branches, default is not None,
                                       default if isinstance(default, str) else None,
                                       default_branch=default is not None and not isinstance(default, str))
        if problem:
            at = "route.default" if problem.startswith("the default") else "route.branches"
            raise ParamError(f"{at}: {problem}", path=at)
        note = route_label_notes(router, branches, default if isinstance(default, str) else None,
                                 default_branch=default is not None and not isinstance(default, str))
        if note:
            logging.getLogger("ragkit").warning("route: %s", note)
        self.router = router
        self.branches = {k: _as_pipeline(v, f"route.branches.{k}", empty_ok=True) for k, v in branches.items()}
        if isinstance(default, str):
            if default not in self.branches:
                raise ParamError(f"route.default: label {default!r} is not a branch; branches: {sorted(self.branches)}")
            self.default_label: str | None = default
            self.default: Operator | None = None
        else:
            self.default_label = None
            self.default = None if default is None else _as_pipeline(default, "route.default", empty_ok=True)

    def children(self) -> list[Operator]:
        return [self.router, *self.branches.values(), *([self.default] if self.default is not None else [])]

    @reprlib.recursive_repr()  # a tree holding itself: '...' where it recurs, not a RecursionError
    def __repr__(self) -> str:
        branches = ", ".join(f"{k!r}: {_branch_repr(b)}" for k, b in self.branches.items())
        default = (f", default={self.default_label!r}" if self.default_label is not None
                   else f", default={_branch_repr(self.default)}" if self.default is not None else "")
        return f"Route({self.router!r}, {{{branches}}}{default})"

    def child_paths(self, path: str) -> list[tuple[Operator, str]]:
        here = _at(path, "route")
        return [(self.router, f"{here}.router"), *((b, f"{here}.branches.{k}") for k, b in self.branches.items()),
                *([(self.default, f"{here}.default")] if self.default is not None else [])]

    @property
    def wants_upstream(self) -> bool:
        """Routing the training queries (for the branches that learn) needs what the steps before
        the route made of them: a ``score_router`` reads their rankings."""
        return bool(_learning_leaves(self))

    def fit(self, corpus: Corpus, train: TrainSet | None = None, *, upstream: State | None = None,
            backend: str = "local") -> Route:
        """Fit the router and every branch; a learning router then learns from the branches' results.

        With ``train`` and a router that does not learn, a branch whose operators learn (a
        learned fuser, the Cosine Adapter, a fine-tuned encoder: :attr:`Operator.learns`) learns from
        the training queries the router sends it, the ones it will serve, not from all of
        them; branches that share a learning operator learn from the union of theirs.  A
        learning branch that the router sends no judged training query is a
        :class:`DataError` naming it.  With a router that learns (``learn_routes``,
        ``score_router(learn=true)``), the routing is not known before the branches are
        fitted: every branch learns from all the training queries that reach the route, then
        the router gets each branch's per-query nDCG@10 on the usable ones (``upstream``: the
        preceding steps' output) and chooses its threshold from them.  Usable: a judgement > 0 of a
        document of the corpus (:meth:`TrainSet.usable <ragkit.types.TrainSet.usable>`, the queries
        a learned fuser learns from; one judged only 0, or only documents the corpus lacks, scores
        nDCG 0 on every branch and teaches nothing); none is a :class:`DataError` before the
        branches are fitted, fewer than 10 a warning on the ``ragkit`` logger.
        """
        return self._fit_at(corpus, train, upstream=upstream, backend=backend)

    @restoring
    def _fit_at(self, corpus: Corpus, train: TrainSet | None = None, *, upstream: State | None = None,
                _seen: set[int] | None = None, _path: str = "", backend: str = "local") -> "Route":
        if backend != "local":  # fitted on its own on Ray (a pipeline's steps are fitted locally by it)
            return fit_on_backend(self, corpus, train, upstream, backend)
        learning_router = (self.router if train is not None and self.router.needs_train
                           and isinstance(self.router, _LearningRouter) else None)
        learner = f"{_at(_path, 'route')}.router: learning {self.router.name}'s threshold"
        if learning_router is not None and train is not None:  # no usable query: refused before the branches fit
            _usable_ids(list(train.queries.ids), train, corpus, learner)
        if train is None or learning_router is not None or not self.wants_upstream:
            super()._fit_at(corpus, train, upstream=upstream, _seen=_seen, _path=_path)
        else:
            self._fit_routed(corpus, train, upstream, _seen, _path)
        if learning_router is not None and train is not None:
            state = _usable_start(train, upstream, corpus, learner)
            here = _at(_path, "route")
            gains = {}
            for label in (learning_router.params.above, learning_router.params.below):
                branch, where = self._branch_for(label, here)
                gains[label] = _train_ndcg(run_step(branch, state.copy(), where), train, corpus)
            try:
                learning_router.learn_routes(state, gains)
            except RagkitError as e:  # which router: placed as a search places its steps' errors
                placed_at(e, f"{here}.router.{self.router.name}", self.router.name)
                raise
            _warn_thin_threshold(self.router, f"{_at(_path, 'route')}.router", len(state),
                                 "may send other queries to the wrong branch")
        return self

    def _fit_routed(self, corpus: Corpus, train: TrainSet, upstream: State | None, _seen: set[int] | None,
                    _path: str) -> None:
        """Fit the router, route the training queries, and fit each branch on the queries it gets (``_path``: where
        the route is, as :meth:`_fit_at`'s, for errors: ``pipeline[1]`` names the route ``pipeline[1].route``)."""
        from ragkit.pipelines._checks import check_trainable

        here = _at(_path, "route")
        if _seen is None:
            check_trainable(self, train, corpus, _path)
        seen = set() if _seen is None else _seen
        fit_once(self.router, corpus, train, seen, upstream, f"{here}.router")
        start = upstream.copy() if upstream is not None else State.of(train.queries)
        labelled, labels = self._route(start, here)
        # branch objects in children order, with their paths and the training queries each serves
        branches: dict[int, tuple[Operator, str, list[int]]] = {}
        for label in self.branches:
            op, where = self._branch_for(label, here)
            branches.setdefault(id(op), (op, where, []))
        if self.default is not None:
            branches.setdefault(id(self.default), (self.default, f"{here}.default", []))
        for i, label in enumerate(labels):
            op, where = self._branch_for(label, here)
            branches[id(op)][2].append(i)
        # branches sharing a learning operator train it together, on the union of their queries
        learners = {id(b): {id(x) for x in _learning_leaves(b)} for b, _, _ in branches.values()}
        group = {key: key for key in branches}
        for a in branches:
            for b in branches:
                if a < b and learners[a] & learners[b]:
                    ga, gb = group[a], group[b]
                    group = {k: (ga if g == gb else g) for k, g in group.items()}
        pos = {q: i for i, q in enumerate(train.queries.ids)}
        plan: list[tuple[Operator, TrainSet, State | None, str]] = []  # every branch checked before any is fitted
        for key, (op, where, _) in branches.items():
            if not learners[key]:
                plan.append((op, train, upstream, where))
                continue
            idx = sorted(i for k, (_, _, rows) in branches.items() if group[k] == group[key] for i in rows)
            ids = [start.query_ids[i] for i in idx]
            qrels = {q: train.qrels[q] for q in ids if q in train.qrels}
            if not any(any(v > 0 for v in rel.values()) for rel in qrels.values()):
                names = sorted({x.name for x in _learning_leaves(op)})
                raise DataError(
                    f"{where}: the router {self.router.name!r} sends {len(idx)} of the {len(start)} training queries "
                    f"here, none with a positive judgement, and {', '.join(names)} in this branch "
                    f"{'learns' if len(names) == 1 else 'learn'} from the training queries it serves; route more "
                    "judged queries here or drop learning from the branch")
            judged = [q for q in ids if train.qrels.get(q)]
            fusers = sorted({x.name for x in _learning_leaves(op) if x.kind == "fuser"})
            if fusers and len(judged) < 2:  # what learn_weights refuses, refused before any branch is fitted
                raise DataError(
                    f"{where}: the router {self.router.name!r} sends {len(idx)} of the {len(start)} training queries "
                    f"here, {len(judged)} of them judged ({some_ids(judged) or 'none'}), and the learned fuser "
                    f"{', '.join(fusers)} in this branch cross-validates its weights over at least 2 judged training "
                    "queries; route more judged queries here or drop learning from the branch")
            sub = TrainSet(train.queries[[pos[q] for q in ids]], qrels)
            plan.append((op, sub, labelled.subset(idx) if upstream is not None else None, where))
        for op, sub, up, where in plan:
            fit_once(op, corpus, sub, seen, up, where)

    def _route(self, state: State, here: str) -> tuple[State, list[str]]:
        """The router's output on ``state`` and its label for each query (as strings)."""
        labelled = run_step(self.router, state, f"{here}.router")
        if "label" not in labelled.values or len(labelled.values["label"]) != len(state):
            raise ParamError(f"{here}.router: router {self.router.name!r} did not write one label per query "
                             f"into state.values['label']")
        return labelled, [str(x) for x in labelled.values["label"]]

    def _branch_for(self, label: str, here: str) -> tuple[Operator, str]:
        """The branch that runs queries labelled ``label``, and its path: its own, else the default."""
        if label in self.branches:
            return self.branches[label], f"{here}.branches.{label}"
        if self.default_label is not None:
            return self.branches[self.default_label], f"{here}.branches.{self.default_label}"
        if self.default is not None:
            return self.default, f"{here}.default"
        raise ParamError(f"{here}: router {self.router.name!r} gave label {label!r}, which has no branch and there is "
                         f"no default; branches: {sorted(self.branches)}")

    def _call(self, state: State, path: str = "") -> State:
        """Route each query to its label's branch.  In a trace, the router and each label's branch (on its
        queries) have their rows, then the route itself under ``<path>.route``: its output over all its
        queries (what the steps after it get), its time holding its steps' -- as a loop's."""
        return traced(state, _at(path, "route"), "route", lambda s: self._dispatch(s, path), inclusive=True)

    def _dispatch(self, state: State, path: str) -> State:
        """The route on ``state`` (see :meth:`_call`)."""
        here = _at(path, "route")
        labelled, labels = self._route(state, here)
        # the positions of each branch's queries, branches in order of first appearance: the labels that run one
        # branch object (those without a branch of their own, sent to the default; labels given one object) run
        # it once, on all their queries (one numpy pass over the labels)
        uniq, first, inv = np.unique(np.array(labels, dtype=object), return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
        groups: dict[int, tuple[Operator, str, list[int]]] = {}  # id(branch) -> branch, path, label numbers
        for g in np.argsort(first, kind="stable"):
            branch, where = self._branch_for(str(uniq[g]), here)
            groups.setdefault(id(branch), (branch, where, []))[2].append(int(g))
        parts = []
        for branch, where, codes in groups.values():
            idx = np.flatnonzero(np.isin(inv, codes)).tolist()
            parts.append((idx, run_step(branch, labelled.subset(idx), where)))
        out = merge_parts(labelled, parts)
        for key in QUERY_REWRITES:
            qtext = out.values.get(key)
            if qtext is not None and any(t is None for t in qtext):  # rewritten in some branches only
                out.values[key] = [q if t is None else t for q, t in zip(out.texts(), qtext)]
        out.values["route"] = labels
        out.values[record_key("route", here)] = list(labels)  # kept when a later route writes "route"
        out.values.pop("label", None)
        return out

    def __call__(self, state: State) -> State:
        return call_checked(self, state, self._call)


_LAX_INT = pydantic.TypeAdapter(int)


def lax_int(value: Any) -> int | None:
    """``value`` read as an integer the way an operator's parameters read one (pydantic's lax int: an
    integral number, or a string of one: ``3``, ``3.0``, ``"3"``); None for anything else, a boolean too."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return _LAX_INT.validate_python(value)
    except pydantic.ValidationError:
        return None


def max_iters_problem(value: Any) -> tuple[int, None] | tuple[None, str]:
    """``value`` as a loop's ``max_iters`` (an integer from 1 to :data:`MAX_LOOP_ITERS`, read as :func:`lax_int`
    reads one, as an operator's integer parameters are: ``"3"`` and ``3.0`` are 3), ``(n, None)``; else ``(None,
    why)``: the one check of :class:`Loop` and of a YAML ``loop:``, which places it at its path in the file."""
    n = lax_int(value)
    if n is not None and 1 <= n <= MAX_LOOP_ITERS:
        return n, None
    return None, (f"expected an integer from 1 to {MAX_LOOP_ITERS:,} (each iteration runs the body over the queries "
                  f"still looping), got {value!r}")


class Loop(Composite):
    """Looping flow: run ``body`` per query until the judge says done or ``max_iters`` runs.

    Each iteration runs the body on the queries still active (one batch); then the judge
    marks each of them done or not (``state.values["done"]``).  A query runs at most
    ``max_iters`` times; the number of iterations per query is in
    ``state.values["iterations"]`` (the last loop to finish writes it) and under the loop's
    path, ``state.values["iterations@pipeline[0].loop"]``, which a later loop does not
    overwrite.  Deterministic: same input, same iterations.

    While an iteration runs, ``state.values["iteration"]`` holds its number for each query
    (0 for the first), which the body's steps and the judge may read (an operator of one's own);
    it is removed when the loop ends, and a loop inside another's body gives back the outer
    loop's numbers when it ends.

    Parameters
    ----------
    body : Operator or list of operators (a linear pipeline)
        What each iteration runs on the queries still looping.
    until : Operator of kind ``"judge"``
        Marks each query done or not after every iteration: ``MaxOnly()``, ``TopKStable()``,
        ``ScoreReached(...)``.
    max_iters : int, default 3
        The most iterations a query runs (1 to 1,000).

    Examples
    --------
    >>> from ragkit.pipelines import MaxOnly, TopKStable
    >>> from ragkit.retrievers import BM25
    >>> from ragkit.types import Corpus, State
    >>> corpus = Corpus.from_texts(["red apples", "green pears", "red cars"])
    >>> loop = Loop(BM25(k=3), until=TopKStable(k=1), max_iters=3).fit(corpus)
    >>> loop(State.of(["red apple"])).values["iterations"]  # the top 1 did not change in the second run
    [2]
    >>> Loop(BM25(k=3), until=MaxOnly(), max_iters=3).fit(corpus)(State.of(["red apple"])).values["iterations"]
    [3]
    """

    name = "loop"

    def __init__(self, body: Operator | Sequence[Operator], until: Operator,
                 max_iters: int = DEFAULT_MAX_ITERS) -> None:
        super().__init__()
        n, problem = max_iters_problem(max_iters)
        if n is None:
            raise ParamError(f"loop.max_iters: {problem}", path="loop.max_iters")
        self.until = _operator_of_kind(until, "judge", "loop.until", "MaxOnly(), TopKStable(), ScoreReached(...)")
        self.body = _as_pipeline(body, "loop.body")
        self.max_iters = n

    def children(self) -> list[Operator]:
        return [self.body, self.until]

    @reprlib.recursive_repr()  # a tree holding itself: '...' where it recurs, not a RecursionError
    def __repr__(self) -> str:
        return f"Loop({_branch_repr(self.body)}, until={self.until!r}, max_iters={self.max_iters})"

    def child_paths(self, path: str) -> list[tuple[Operator, str]]:
        here = _at(path, "loop")
        return [(self.body, f"{here}.body"), (self.until, f"{here}.until")]

    def fit(self, corpus: Corpus, train: TrainSet | None = None, *, upstream: State | None = None,
            backend: str = "local") -> Loop:
        """Fit the body and the judge; a learning judge then learns when to stop; the body's learners
        then learn from the iteration whose output the loop returns.

        With ``train``, the body is first fitted on the training queries as they reach the loop
        (its first iteration's input).  A judge with ``learn_stopping`` (``score_reached(learn=true)``)
        gets, for every iteration up to ``max_iters``, each usable training query's judge feature and
        nDCG@10 after that many body runs (the body run on all of them each time, as the loop would
        for the queries still active), and chooses its threshold from them.  Usable: a judgement > 0
        of a document of the corpus, the queries a learned fuser learns from; none is a
        :class:`DataError` before the body is fitted, fewer than 10 a warning on the ``ragkit``
        logger.  The body's operators
        that learn from what reaches them (``wants_upstream``: a learned fuser, a learning
        ``score_router``'s route, the Cosine Adapter) then learn again from each training query's
        input to its last iteration (:meth:`_refit_on_iterations`), and a learning judge learns
        again for the body so refitted.  From the first iteration alone they never saw what later
        iterations give them: a ``prf`` at the start of the body has no feedback in the first
        iteration, so a fuser after it learned to weigh a plain query's rankings, while every ranking
        the loop returned came from an expanded one.
        """
        return self._fit_at(corpus, train, upstream=upstream, backend=backend)

    @restoring
    def _fit_at(self, corpus: Corpus, train: TrainSet | None = None, *, upstream: State | None = None,
                _seen: set[int] | None = None, _path: str = "", backend: str = "local") -> "Loop":
        if backend != "local":  # fitted on its own on Ray (a pipeline's steps are fitted locally by it)
            return fit_on_backend(self, corpus, train, upstream, backend)
        judge = (self.until if train is not None and self.until.needs_train
                 and isinstance(self.until, _LearningJudge) else None)
        learner = f"{_at(_path, 'loop')}.until: learning {self.until.name}'s threshold"
        if judge is not None and train is not None:  # no usable query: refused before the body is fitted
            _usable_ids(list(train.queries.ids), train, corpus, learner)
        with _thin_warnings_once():  # a learned route in the body, fitted again by the refit, warns once
            super()._fit_at(corpus, train, upstream=upstream, _seen=_seen, _path=_path)
            n_usable = 0
            if judge is not None and train is not None:
                n_usable = self._learn_stopping(judge, corpus, train, upstream, learner, _path)
            if train is not None and self.max_iters > 1 and any(x.wants_upstream for x in iter_leaves(self.body)):
                if self._refit_on_iterations(corpus, train, upstream, _path) and judge is not None:
                    self._learn_stopping(judge, corpus, train, upstream, learner, _path)  # again, for the body refitted
            if judge is not None and train is not None:
                _warn_thin_threshold(self.until, f"{_at(_path, 'loop')}.until", n_usable,
                                     "may stop other queries too early or loop them too long")
        return self

    def _learn_stopping(self, judge: _LearningJudge, corpus: Corpus, train: TrainSet, upstream: State | None,
                        learner: str, path: str) -> int:
        """Run the body ``max_iters`` times on every usable training query (:func:`_usable_start`, the queries
        the fusers learn from) and give the judge (``until``) each iteration's features and nDCG@10 (its
        ``learn_stopping``); returns how many queries it learned from.  ``learner`` starts the error when
        none is usable; ``path`` is where the loop is, for the errors of the body's steps (as a search's)."""
        current = _usable_start(train, upstream, corpus, learner)
        n_usable = len(current)
        features, gains = [], []
        for it in range(self.max_iters):
            current.values["iteration"] = [it] * len(current)  # (the iteration's number, as the loop gives it)
            current = run_step(self.body, current, f"{_at(path, 'loop')}.body")
            features.append(judge.feature(current))
            gains.append(_train_ndcg(current, train, corpus))
        try:
            judge.learn_stopping(np.array(features), np.array(gains))
        except RagkitError as e:  # which judge: placed as a search places its steps' errors
            placed_at(e, f"{_at(path, 'loop')}.until.{self.until.name}", self.until.name)
            raise
        return n_usable

    def _refit_on_iterations(self, corpus: Corpus, train: TrainSet, upstream: State | None, path: str) -> bool:
        """Fit the body's operators that learn from their input (``wants_upstream``) again, on each
        judged training query's input to its last iteration: the state whose output the loop returns
        (``path``: where the loop is, for errors).

        The iterations are run with the body fitted on the first one, each query until the judge
        (learned by then, if it learns) stops it, as at search.  The other operators of the body
        (retrievers, a fine-tuned encoder: they learn from the corpus or the query texts) keep their
        fit.  The refit does not run the iterations again with the refitted body (one step, not a
        fixed point).  In a loop with no ranking before it, the
        queries whose last iteration is the first one had no rankings there while the others had,
        and a state holds rankings for all of its queries or none (an operator such as ``prf`` does
        not treat the two alike): the body then learns from the larger of the two groups (from
        those with rankings on a tie).  Returns whether anything was refitted: nothing is when every
        query's last iteration is the first (the body was fitted on exactly that), nor when that
        group holds a single query or no positive judgement.
        """
        here = _at(path, "loop")
        start = _judged_start(train, upstream, f"{here}.body")
        inputs: list[tuple[np.ndarray, State]] = []
        out = self._iterate(start, path, on_input=lambda active, sub: inputs.append((active, sub)))
        last = np.asarray(out.values["iterations"], np.int64) - 1
        if not last.any():
            return False
        parts = [(active[last[active] == it], sub.subset(np.flatnonzero(last[active] == it)))
                 for it, (active, sub) in enumerate(inputs)]
        parts = [(idx, sub) for idx, sub in parts if len(idx)]
        unranked = sum(len(idx) for idx, sub in parts if sub.rankings is None)
        if 0 < unranked < len(start):  # keep the larger group; a tie keeps the queries with rankings
            parts = [(idx, sub) for idx, sub in parts if (sub.rankings is None) == (2 * unranked > len(start))]
        pooled = _pool_parts(parts)
        qrels = {q: train.qrels[q] for q in pooled.query_ids if q in train.qrels}
        if len(pooled) < 2 or not any(v > 0 for rel in qrels.values() for v in rel.values()):
            return False  # too few to learn from (a fuser cross-validates over 2): the first fit stays
        keep = {id(x) for x in iter_leaves(self.body) if not x.wants_upstream}  # fitted already: kept
        sub_train = TrainSet(Queries(pooled.query_ids, pooled.queries), qrels)
        fit_once(self.body, corpus, sub_train, keep, pooled, f"{here}.body")
        return True

    def _call(self, state: State, path: str = "") -> State:
        """Iterate; per-query iteration counts go to ``values["iterations"]`` and to
        ``values["iterations@<path>.loop"]`` (:func:`record_key`).

        Each iteration's body and judge steps appear in the trace under
        ``<path>.loop.body`` / ``<path>.loop.until`` with the number of queries still
        active, then the loop itself under ``<path>.loop``: its output over all its queries
        (what the steps after it get; an iteration's rows cover the queries still active:
        :func:`~ragkit.pipelines.trace.aggregate_trace` gives the steps one row per iteration).
        Scratch values whose key starts with ``_`` (a judge's memory, such as
        the previous top-k) belong to one loop: those coming in (an enclosing loop's judge)
        are set aside while this loop runs and given back when it ends, and this loop's own
        are removed, so nested or successive loops never read each other's memory.
        """
        return traced(state, _at(path, "loop"), "loop", lambda s: self._iterate(s, path), inclusive=True)

    def _iterate(self, state: State, path: str, on_input: Any = None) -> State:
        """The loop on ``state`` (see :meth:`_call`); ``on_input(active, sub)``, when given, receives
        each iteration's input to the body: the positions of the queries still active, and their
        state (a copy)."""
        here = _at(path, "loop")
        n = len(state)
        outer = {k: v for k, v in state.values.items() if k.startswith("_")}
        if "iteration" in state.values:  # an enclosing loop's iteration numbers: given back at the end
            outer["iteration"] = state.values["iteration"]
        iters = np.zeros(n, np.int64)
        active = np.arange(n)
        current = state
        if outer:
            current = state.copy()
            for key in outer:
                del current.values[key]
        for it in range(self.max_iters):
            if not len(active):
                break
            sub = current.subset(active) if len(active) < n else current.copy()
            sub.values["iteration"] = [it] * len(active)
            if on_input is not None:
                on_input(active, sub.copy())
            sub = run_step(self.body, sub, f"{here}.body")
            sub = run_step(self.until, sub, f"{here}.until")
            if "done" not in sub.values or len(sub.values["done"]) != len(active):
                raise ParamError(f"{here}.until: judge {self.until.name!r} did not write one 'done' value per query")
            done = np.fromiter((bool(d) for d in sub.values.pop("done")), bool, len(active))
            sub.values.pop("iteration", None)
            current = merge_parts(current, [(active.tolist(), sub)]) if len(active) < n else sub
            iters[active] += 1
            active = active[~done]
        if current is state:
            current = state.copy()
        for key in [k for k in current.values if k.startswith("_") or k == "iteration"]:
            del current.values[key]
        current.values.update(outer)
        current.values["iterations"] = iters.tolist()
        current.values[record_key("iterations", here)] = iters.tolist()  # kept when a later loop writes "iterations"
        return current

    def __call__(self, state: State) -> State:
        return call_checked(self, state, self._call)


def _pool_parts(parts: Sequence[tuple[np.ndarray, State]]) -> State:
    """Sub-batches ``(positions, state)`` of one batch, each query in one of them, as one state in
    the order of the positions: rankings (all parts have them, or none), values (``None`` for a
    query whose part lacks the key, as :meth:`State.merge` fills them) and the query vectors every
    part has."""
    order = np.argsort(np.concatenate([idx for idx, _ in parts]), kind="stable")
    states = [sub for _, sub in parts]

    def flat(lists: Iterable[Sequence[Any]]) -> list[Any]:
        joined = [x for seq in lists for x in seq]
        return [joined[i] for i in order]

    rankings = None if states[0].rankings is None else flat(sub.rankings or [] for sub in states)
    keys = dict.fromkeys(k for sub in states for k in sub.values)
    values = {k: flat(sub.values.get(k, [None] * len(sub)) for sub in states) for k in keys}
    vkeys = [k for k in states[0].vectors if all(k in sub.vectors for sub in states)]
    vectors = {k: np.concatenate([sub.vectors[k] for sub in states])[order] for k in vkeys}
    return State(flat(sub.queries for sub in states), flat(sub.query_ids for sub in states), rankings=rankings,
                 values=values, vectors=vectors)


#: the ``fit`` methods of ragkit's own composites: :func:`fit_once` calls their ``_fit_at`` (one walk, one set of
#: fitted objects); a subclass overriding ``fit`` has that override called
_COMPOSITE_FITS = frozenset({Composite.fit, Pipeline.fit, Route.fit, Loop.fit})
