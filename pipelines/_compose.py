"""Composite operators: the four Modular RAG flow patterns (Gao et al., arXiv 2407.21059).

* linear: ``a | b | c`` -> :class:`Pipeline` (also exported as ``Sequence``)
* branching: ``a + b`` or ``Parallel([a, b], fuse=RRF(k=60))``
* conditional: ``Route(router, {"label": pipeline, ...}, default=...)``
* looping: ``Loop(body, until=judge, max_iters=n)``

Composites are operators too (``kind = "composite"``), so they nest.  They are not in the
registry: YAML spells them with the structural keys ``parallel``, ``route`` and ``loop``.
"""

from __future__ import annotations

import difflib
import functools
import logging
import math
import time
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

from ragkit._files import user_path
from ragkit.errors import ConfigError, DataError, InputTypeError, NotFittedError, ParamError, RagkitError, some_ids
from ragkit.operator import (
    _RESTORING,
    Operator,
    call_checked,
    check_fit_inputs,
    fit_on_backend,
    options_checked,
    refuse_unapplied_filter,
    restored_on_failure,
    tree_nodes,
)
from ragkit.params import Params
from ragkit.types import QUERY_REWRITES, Corpus, Queries, Ranking, State, TraceEvent, TrainSet

if TYPE_CHECKING:
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
    from ragkit.eval.metrics import per_query_metrics

    level, ignore = _TRACE_SCORING.get()
    m = per_query_metrics(state, state.qrels, ids, ["recall@100", "ndcg@10"], relevance_level=level,
                          ignore_identical_ids=ignore)
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
        with restored_on_failure(tree_nodes(self)):
            return fit(self, *args, **kwargs)

    return cast(_Fit, wrapper)


class Composite(Operator):
    """Base of the structural operators; ``fit`` fits each child once (and, should it raise, puts every
    node of the tree back as it was: :func:`restoring`)."""

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

    def save(self, path: Any) -> None:
        """Save as a one-step :class:`Pipeline` (manifest, YAML, every fitted leaf); load it with
        :meth:`Pipeline.load` or :meth:`Operator.load`.  A leading ``~`` in ``path`` is the home folder."""
        from ragkit.pipelines.store import save_pipeline

        save_pipeline(Pipeline([self]), user_path(path, f"{type(self).__name__}.save: path"))

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

    @restoring
    def fit(self, corpus: Corpus, train: TrainSet | None = None, *, upstream: State | None = None,
            _seen: set[int] | None = None, _path: str = "", backend: str = "local") -> "Composite":
        if backend != "local":  # fitted on its own on Ray (a pipeline's steps are fitted locally by it)
            return fit_on_backend(self, corpus, train, upstream, backend)
        if _seen is None:  # fitted on its own: a refused refit changes nothing (see check_trainable)
            check_trainable(self, train, corpus)
        seen = set() if _seen is None else _seen
        for child, where in self.child_paths(_path):
            fit_once(child, corpus, train, seen, upstream, where)
        return self


#: the most iterations a loop may run (a judge that never says done would otherwise run for ever)
MAX_LOOP_ITERS = 1000


def _at(path: str, kind: str) -> str:
    """``path.kind``, or ``kind`` for a composite searched or fitted on its own (no path)."""
    return f"{path}.{kind}" if path else kind


def fit_once(op: Operator, corpus: Corpus, train: TrainSet | None, seen: set[int], upstream: State | None,
             path: str = "") -> None:
    """Fit ``op`` (at ``path`` in the tree, for errors) unless this pipeline already fitted the same object."""
    if id(op) in seen:
        return
    seen.add(id(op))
    if isinstance(op, Composite):
        op.fit(corpus, train, upstream=upstream, _seen=seen, _path=path)
        return
    try:
        op.fit(corpus, train, upstream=upstream if op.wants_upstream else None)
    except RagkitError as e:  # which step: a pipeline may hold two of one operator
        if path and e.args and isinstance(e.args[0], str) and not e.args[0].startswith(path):
            placed_at(e, f"{path}.{op.name}", op.name)
        raise


def placed_at(e: RagkitError, at: str, name: str) -> RagkitError:
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


def check_trainable(root: Operator, train: TrainSet | None, corpus: Corpus | None = None) -> None:
    """What ``fit(corpus, train)`` of ``root`` would refuse, refused before anything is fitted.

    With ``train`` and ``corpus``, when a leaf learns from judged queries: judgements that name no
    document of the corpus (:meth:`TrainSet.check_corpus`).

    With ``corpus``: a retriever's own ``filter`` naming a field the corpus lacks (a :class:`ParamError`), or
    none of whose values for a field has the type of the field's values (a :class:`DataError`, as
    :meth:`Corpus.mask` raises it at search: ``year: "2015"`` for a field of integers, ``title: 2020``).

    Always: a ``dbnorm`` or ``cosine_adapter`` whose ``model`` is not that of the dense retriever right
    before it (:func:`encoder_mismatch`).

    Without ``train``: the first operator of the tree that learns only from judged queries raises
    its own error (:meth:`Operator.train_refusal`), so a refused refit (on another corpus too)
    refits none of the steps before it.  With ``train``: a learning router or judge that is not
    where its choice is made (a route's ``router``, a loop's ``until``) is refused: it learns there
    from what each choice gives the judged queries; anywhere else it would fit without learning
    and fail at search.
    """
    from ragkit.pipelines.yaml import walk_leaves

    if corpus is not None:  # train=qrels, train=(queries, qrels), a list of records: said, not an AttributeError
        check_fit_inputs(corpus, train, f"{root.name}.fit" if root.name else "fit")
    mismatch = encoder_mismatch(root)
    if mismatch is not None:
        raise mismatch
    for note in encoder_notes(root):
        logging.getLogger("ragkit").warning(note)
    homes = _decision_seats(root)
    for path, leaf in walk_leaves(root):
        if train is None:
            refusal = leaf.train_refusal()
            if refusal is not None:  # which step: a pipeline may hold two of one operator
                raise placed_at(refusal, path, leaf.name) if isinstance(refusal, RagkitError) else refusal
            continue
        if not getattr(leaf, "needs_train", False):
            continue
        seat = homes.get(id(leaf))
        if hasattr(leaf, "learn_routes") and seat != "router":
            home = "the router of a route (route: {router: ..., branches: ...})"
        elif hasattr(leaf, "learn_stopping") and seat != "until":
            home = "the until judge of a loop (loop: {body: ..., until: ...})"
        else:
            continue
        raise ParamError(f"{path}: {leaf.name} with learn: true learns only as {home}, from what each choice "
                         f"gives the judged queries; anywhere else it has nothing to learn from")
    if corpus is not None:  # a retriever's own filter naming a field the corpus lacks, or with a value of another
        # type than the field's (year: "2015" for integers, title: 2020), failed at every search, after the whole fit
        from ragkit.options import filter_value

        for path, leaf in walk_leaves(root):
            own = getattr(leaf.params, "filter", None)
            try:
                filter_value(own, corpus)
            except (TypeError, ValueError) as e:
                raise ParamError(f"{path}.filter: {e}", path=f"{path}.filter") from None
            try:
                corpus.mask(own)  # (the column's codes it builds are those every search's filter reads)
            except DataError as e:  # filter.year: the field holds int values; ... -> <path>.filter.year: ...
                raise placed_at(e, f"{path}.filter", "filter") from None
    if train is not None and corpus is not None and any(leaf.learns for _, leaf in walk_leaves(root)):
        train.check_corpus(corpus)
    if train is not None:
        fusers = [path for path, leaf in walk_leaves(root) if leaf.kind == "fuser" and leaf.learns]
        usable = train.usable(corpus)  # a judgement > 0 of a document of the corpus (of any without one)
        if fusers and len(usable) < 2:
            raise DataError(f"{fusers[0]}: learning fusion weights cross-validates over the judged training queries "
                            f"and needs at least 2; the train set has {len(usable)} usable (with a relevant document "
                            f"in the corpus) ({some_ids(usable) or 'none'})")


#: steps that read the cosines of the dense retriever before them with an encoder of their own (``model``)
_COSINE_READERS = ("dbnorm", "cosine_adapter")
#: single-vector retrievers whose scores those steps read: their ``model`` is the cosines' encoder
_COSINE_RETRIEVERS = ("dense", "knn_embed")


def same_model(a: str, b: str) -> bool:
    """Whether model names ``a`` and ``b`` load the same encoder: equal names (the packaged MiniLM's aliases
    resolved, a hub id with or without ``sentence-transformers/``), the same registered encoder, or local
    folders (or files) with the same content (:func:`~ragkit.encoders.sentence.model_fingerprint`, read
    only when the names differ)."""
    from pathlib import Path

    from ragkit.encoders.custom import registered_encoder
    from ragkit.encoders.sentence import model_fingerprint, resolve_model

    ra, rb = resolve_model(a), resolve_model(b)
    hub = "sentence-transformers/"
    if ra == rb or ra.removeprefix(hub) == rb.removeprefix(hub):
        return True
    ea, eb = registered_encoder(a), registered_encoder(b)
    if ea is not None or eb is not None:
        return ea is eb
    pa, pb = Path(ra).expanduser(), Path(rb).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve() or model_fingerprint(str(pa)) == model_fingerprint(str(pb))
    return False


def encoder_mismatch(op: Operator, path: str = "pipeline") -> ParamError | None:
    """The first ``dbnorm`` / ``cosine_adapter`` of the tree whose encoder is not that of the retriever
    before it, as a ParamError at ``<step path>.<name>.model``, else ``None``.

    Within each linear pipeline, such a step is checked against the nearest retriever step before it when that is a
    plain ``dense`` or ``knn_embed`` (a ``bm25``, ``muvera``, ``sharded`` or a composite holding a retriever, such
    as a hybrid's ``parallel``, leaves it unchecked here: whose cosines it reads is not one model's;
    :func:`cosine_source_problem`, run with the other structural checks when the pipeline is built, fitted and
    searched, refuses those that do not give cosines).  ``dbnorm`` subtracts penalties ``log Z(g)`` computed with
    its ``model`` from the retriever's cosines, and ``cosine_adapter`` maps the retriever's cosines from query
    vectors of its ``model``: both must be the retriever's (ALGORITHMS.md, DBNorm's pitfalls).  A ``dense`` that
    fine-tunes its encoder (``adapt``) scores with a model that exists only after its fit: ``dbnorm`` after it is
    refused (no ``model`` can name the tuned one); ``cosine_adapter`` after it must name the base model (its query
    features, learned from the tuned cosines at fit and read the same way at search).
    """
    for retriever, r_where, reader, where in _after_cosine_retrievers(op, path, _COSINE_READERS):
        problem = _model_problem(retriever, r_where, reader, where)
        if problem is not None:
            return problem
    return None


def _after_cosine_retrievers(op: Operator, path: str, names: tuple[str, ...]
                             ) -> Iterator[tuple[Operator, str, Operator, str]]:
    """``(retriever, its path, step, its path)`` for each step of the tree named in ``names`` whose nearest
    retriever step before it, in its linear pipeline, is a plain ``dense`` or ``knn_embed``."""
    if not isinstance(op, Composite):
        return
    if isinstance(op, Pipeline):
        before: tuple[Operator, str] | None = None  # the nearest retriever step, when a plain dense / knn_embed
        for step, where in op.child_paths(path):
            if step.name in names and not isinstance(step, Composite) and before is not None:
                yield (*before, step, where)
            if isinstance(step, Composite):
                if _retrieves(step):
                    before = None
            elif step.kind == "retriever":
                before = (step, where) if step.name in _COSINE_RETRIEVERS else None
    for child, where in op.child_paths(path):
        yield from _after_cosine_retrievers(child, where, names)


def encoder_notes(op: Operator, path: str = "pipeline") -> list[str]:
    """What a fit warns and ``ragkit validate`` notes about encoders: an ``mmr`` left on its default ``model``
    after a ``dense`` / ``knn_embed`` on another one encodes the corpus again with the default model, and
    measures relevance and redundancy with its vectors, not the retriever's (a legitimate choice when
    written out, so only the default is noted)."""
    notes = []
    for retriever, r_where, reader, where in _after_cosine_retrievers(op, path, ("mmr",)):
        own, theirs = str(getattr(reader.params, "model")), str(getattr(retriever.params, "model"))
        if "model" not in reader.params.model_fields_set and not same_model(own, theirs):
            notes.append(f"{where}.mmr.model: mmr encodes with the default {own!r}, {r_where}.{retriever.name} "
                         f"before it with {theirs!r}: the corpus is encoded again, and MMR's relevance and "
                         f"redundancy are cosines of {own!r}; set mmr's model to {theirs!r} to use the retriever's "
                         "vectors (or to the default, written out, to keep it without this note)")
    return notes


def _model_problem(retriever: Operator, r_where: str, reader: Operator, where: str) -> ParamError | None:
    """Why ``reader`` (at ``where``) cannot read the cosines of ``retriever`` (at ``r_where``), else ``None``."""
    at = f"{where}.{reader.name}.model"
    own, theirs = str(getattr(reader.params, "model")), str(getattr(retriever.params, "model"))
    there = f"{r_where}.{retriever.name}"
    if reader.name == "dbnorm" and getattr(retriever.params, "adapt", None) is not None:
        return ParamError(f"{at}: dbnorm computes its hubness penalties with {own!r}, but {there} fine-tunes its "
                          f"encoder (adapt), so the cosines dbnorm reranks come from a tuned model that exists only "
                          f"after that fit and that no dbnorm model can name; drop adapt from {there}, or "
                          "drop dbnorm", path=at)
    if same_model(own, theirs):
        return None
    why = ("its penalties log Z(g) are subtracted from that retriever's cosines and must come from the same model"
           if reader.name == "dbnorm" else
           "it maps that retriever's cosines from query vectors of its own model, which must be the retriever's")
    return ParamError(f"{at}: {reader.name} encodes with {own!r} but {there} before it with {theirs!r}; {why}. "
                      f"Set {reader.name}'s model to {theirs!r}", path=at)


def _decision_seats(op: Operator) -> dict[int, str]:
    """``id(leaf) -> "router" | "until"`` for each leaf that is a route's router or a loop's judge."""
    seats: dict[int, str] = {}
    if isinstance(op, Route):
        seats[id(op.router)] = "router"
    elif isinstance(op, Loop):
        seats[id(op.until)] = "until"
    for child in op.children():
        seats.update(_decision_seats(child))
    return seats


def shared_corpus(root: Operator) -> Corpus | None:
    """The corpus that every fitted, stateful leaf of ``root`` searches (rows of its rankings are
    rows of it), else ``root.corpus_``; ``None`` when nothing is fitted.

    A retriever edited on its own after the pipeline's fit (``add`` / ``remove``) searches its
    edited corpus: the pipeline follows it, as long as every such leaf holds the same documents
    (else a :class:`DataError` naming two that differ).  Checked by identity first; a content check
    is remembered per set of corpus objects, so repeated searches do not repeat it.
    """
    from ragkit.pipelines.yaml import walk_leaves

    fitted = [(path, leaf) for path, leaf in walk_leaves(root)
              if not leaf.stateless and getattr(leaf, "corpus_", None) is not None]
    if not fitted:
        return getattr(root, "corpus_", None)
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


def iter_leaves(op: Operator) -> Iterable[Operator]:
    """Leaves of an operator tree, depth first, each object once."""
    seen: set[int] = set()
    stack = [op]
    while stack:
        node = stack.pop(0)
        if id(node) in seen:
            continue
        seen.add(id(node))
        kids = node.children()
        if kids or isinstance(node, Composite):
            stack[:0] = kids
        else:
            yield node


def _retrieves(op: Operator) -> bool:
    """Whether ``op`` holds a retriever, so that the steps after it get rankings."""
    return any(leaf.kind == "retriever" for leaf in iter_leaves(op))


def unranked_router(op: Operator, path: str = "pipeline", ranked: bool = False, *,
                    expansions: bool = True) -> ConfigError | None:
    """The first structural problem of ``op`` about what rankings reach a step, or ``None``; checked when
    a pipeline is built from YAML (``ragkit validate``), fitted and searched, before any work (at search
    each would fail late, or silently give other results):

    * a step that works on the rankings of the steps before it (``reads_rankings``: every reranker and
      filter, ``generate``; a rewriter that sets it only outside a loop's body) with no retriever before it
      and one after it in the same list (``[top_k, bm25]``: it changes nothing, the order is wrong), and a
      route whose router reads rankings (``score_router``) with no retriever before it (:func:`_unranked`);
    * a ``prf`` with no retriever before it outside a loop's body (``[prf, bm25]``): it has no ranking to
      expand from, and expands nothing (:func:`_unranked`);
    * a parallel or route branch (or a route's default) that retrieves nothing when nothing before the
      parallel or route retrieved: its queries get no documents (:func:`_unranked`; in a tree that holds a
      retriever: one without any is refused by ``search`` as such);
    * a ``dbnorm`` or ``cosine_adapter`` whose scores do not come from a ``dense`` or ``knn_embed`` with
      ``metric: cos`` (:func:`cosine_source_problem`);
    * a retriever right after another in the same list (``[bm25, dense]``): it replaces the first's ranking
      (:func:`discarded_ranking_problem`);
    * a ``prf`` whose expanded query the next retriever does not read, or reads with other text analysis
      (:func:`prf_reader_problem`).

    Steps of a pipeline see the rankings of the steps before them; parallel and route branches
    those that reach them; a loop's judge also its body's.  ``ranked``: a retriever ran before ``op``.
    ``expansions=False`` leaves out the ``prf`` check (:meth:`Pipeline.search` does: a pipeline of steps
    fitted on their own, searched without a pipeline fit, is not refused for it).
    """
    return (_unranked(op, path, ranked, branches=_retrieves(op)) or cosine_source_problem(op, path)
            or discarded_ranking_problem(op, path) or (prf_reader_problem(op, path) if expansions else None))


def _unranked(op: Operator, path: str, ranked: bool, in_loop: bool = False,
              branches: bool = True) -> ConfigError | None:
    """The ranking-reader and empty-branch part of :func:`unranked_router` (``in_loop``: ``op`` is inside a
    loop's body, where a rewriter such as ``prf`` before the body's retriever reads the previous iteration's
    rankings, and changes nothing in the first, by design; ``branches``: check that branches retrieve)."""
    if isinstance(op, Pipeline):
        steps = op.child_paths(path)
        inside = ranked
        for step, where in steps:  # the problems inside the steps first, then the order of the steps
            problem = _unranked(step, where, inside, in_loop, branches)
            if problem is not None:
                return problem
            inside = inside or _retrieves(step)
        for i, (step, where) in enumerate(steps):
            reader = None if ranked else next((leaf for leaf in iter_leaves(step) if leaf.kind != "router"
                                               and leaf.reads_rankings
                                               and not (in_loop and leaf.kind == "rewriter")), None)
            later = next((w for s, w in steps[i + 1:] if _retrieves(s)), None)
            if reader is not None and not _retrieves(step) and later is not None:
                at = f"{where}.{reader.name}" if reader is step else where
                if reader.kind == "rewriter":
                    return _prf_unranked(at, later)
                return ConfigError(f"{at}: {reader.name} ({reader.kind}) works on the rankings of the steps before "
                                   f"it, and none before it retrieves anything (the retriever at {later} comes "
                                   f"after it); put it after a retriever", path=at)
            ranked = ranked or _retrieves(step)
        return None
    if isinstance(op, Route) and getattr(op.router, "reads_rankings", False) and not ranked:
        where = f"{_at(path, 'route')}.router"
        return ConfigError(f"{where}: {op.router.name} routes on the scores of the rankings already made, and no step "
                           f"before this route retrieves anything; put a retriever (e.g. bm25) before the route, or "
                           f"route on the query text with rule_router", path=where)
    if isinstance(op, (Route, Parallel)) and not ranked and branches and not (in_loop and isinstance(op, Parallel)):
        # (in a loop's body a parallel branch without a retriever fuses the previous iteration's rankings)
        kind = op.name
        for branch, where in op.child_paths(path):
            if branch.kind in ("router", "fuser") or _retrieves(branch):
                continue
            what = "an empty (pass-through) branch" if isinstance(branch, Pipeline) and not branch.steps else (
                f"a branch of {', '.join(_label(x) for x in iter_leaves(branch))} only")
            return ConfigError(f"{where}: {what}, which retrieves nothing, and no step before this {kind} retrieves "
                               f"anything, so its queries get no documents (a branch without a retriever keeps the "
                               f"rankings made before the {kind}, and there are none); add a retriever to the branch "
                               f"(e.g. bm25), or put one before the {kind}", path=where)
    if isinstance(op, Loop):
        body, until = op.child_paths(path)
        return (_unranked(body[0], body[1], ranked, True, branches)
                or _unranked(until[0], until[1], ranked or _retrieves(op.body), True, branches))
    if isinstance(op, Composite):
        for child, where in op.child_paths(path):
            problem = _unranked(child, where, ranked, in_loop, branches)
            if problem is not None:
                return problem
    return None


def _prf_unranked(at: str, later: str) -> ConfigError:
    """The error for a ``prf`` (at ``at``: its step, or the composite step holding it) that no retriever precedes
    and one (at ``later``) follows in its list, outside a loop's body: it has no ranking to take its feedback
    documents from, so it expands nothing and the retrievers after it search the plain query (``[prf, bm25]``
    returned exactly ``bm25``'s rankings); inside a loop's body it is accepted (a rewriter's empty expansion in the
    first iteration is by design)."""
    return ConfigError(f"{at}: prf expands each query from the top documents of a ranking made before it, and no "
                       f"step before it retrieves anything (the retriever at {later} comes after it), so it expands "
                       f"nothing and the retrievers after it search the plain query; put a retriever before it (e.g. "
                       f"[bm25, prf, bm25]), or use it inside a loop's body (loop: {{body: [prf, bm25], until: "
                       f"...}}), whose later iterations expand from the previous iteration's ranking", path=at)


#: retrievers that search the whole corpus whatever reaches them: their output is a ranking of their own (they read
#: the query, a rewritten one and the call's options, never the rankings or values of the steps before them: a
#: ``sharded`` one hands its shards a fresh state), and they write no value that a later step reads
_RANKING_BLIND = ("bm25", "dense", "knn_embed", "muvera", "maxsim_exact", "sharded")


def _ranking_blind(op: Operator) -> bool:
    """Whether ``op`` is a leaf retriever of :data:`_RANKING_BLIND` (the registered class itself, not a subclass
    or another class of the same name): one of two such steps in a row discards the other's ranking."""
    if isinstance(op, Composite) or op.kind != "retriever" or op.name not in _RANKING_BLIND:
        return False
    from ragkit import registry

    return type(op) is registry.get(op.name) and not op.reads_rankings and not op.wants_upstream


def discarded_ranking_problem(op: Operator, path: str = "pipeline") -> ConfigError | None:
    """The error for the first retriever of ``op`` (at ``path``) that comes right after another retriever in its
    list, both of :data:`_RANKING_BLIND`, else ``None``: the second searches the whole corpus and replaces the
    first's ranking, so the pair returns what the second alone returns (``[bm25: {variant: okapi}, bm25: {k: 10}]``
    gave exactly ``[bm25: {k: 10}]``'s run, ``[bm25: {k: 1000}, dense: {k: 100}]`` dense's).  A step between them
    (``prf``, a reranker), a retriever that starts a loop's body or a branch, and a retriever of another class (which
    may read what reaches it) are not refused.  One pass over the tree."""
    if not isinstance(op, Composite):
        return None
    if isinstance(op, Pipeline):
        steps = op.child_paths(path)
        for (first, at_first), (second, at_second) in zip(steps, steps[1:]):
            if _ranking_blind(first) and _ranking_blind(second):
                return _discarded_ranking(first, at_first, second, at_second)
    for child, where in op.child_paths(path):
        problem = discarded_ranking_problem(child, where)
        if problem is not None:
            return problem
    return None


def _discarded_ranking(first: Operator, at_first: str, second: Operator, at_second: str) -> ConfigError:
    """The error for the retriever ``second`` (at ``at_second``) right after the retriever ``first``: it searches
    the whole corpus again, so the pipeline returns what ``second`` alone returns, ``first``'s ranking unread."""
    a, b = f"{at_first}.{first.name}", f"{at_second}.{second.name}"
    return ConfigError(
        f"{b}: {second.name} (retriever) searches the whole corpus and replaces the rankings that reach it, so the "
        f"ranking of {a} right before it is discarded and the pipeline returns what {b} alone returns (a retriever "
        f"does not rerank the candidates of another); to combine the two rankings, fuse them: parallel: {{branches: "
        f"[{first.name}, {second.name}]}}; to reorder {first.name}'s candidates, follow it with a reranker (maxsim, "
        f"mmr) instead; else drop one of the two", path=b)


#: a retriever leaf or a parallel whose scores reach a step, with its path (a parallel's: ``pipeline[0].parallel``)
_Source = tuple[Operator, str]


def cosine_source_problem(op: Operator, path: str = "pipeline") -> ConfigError | None:
    """The error for the first ``dbnorm`` or ``cosine_adapter`` of ``op`` (at ``path``) that the scores of
    something else than a ``dense`` or ``knn_embed`` with ``metric: cos`` can reach, else ``None``.

    Both read raw cosines of their own ``model``'s query vectors.  The scores reaching a step come from the
    nearest retriever step before it: in its list, else before the parallel or route branch it is in (a
    route's branches each bring their own; a loop's body may also get its own last iteration's).  A
    ``bm25``, ``muvera`` or ``sharded`` (but a sharded ``dense``/``knn_embed``) leaf, a ``dense`` with
    ``metric: ip``, a ``parallel`` (fused scores: RRF's are reciprocal ranks) and a step that writes scores
    of its own in between (a reranker: ``mmr``, ``maxsim``, ``dbnorm``; a ``cosine_adapter``) are refused,
    naming both steps; at search they failed with no step named (``bm25 | dbnorm``), or ran silently on other scores
    (a hybrid's RRF scores, a dense's inner products).  Whether the model is the retriever's is
    :func:`encoder_mismatch`'s check.
    """
    return _score_sources(op, path, [])[1]


def _dedupe(sources: Iterable[_Source]) -> list[_Source]:
    return list({id(s[0]): s for s in sources}.values())


#: :func:`_score_sources`'s results for loops already walked: ``(id(loop), path, incoming as (id, path) pairs)``
_Memo = dict[tuple[int, str, tuple[tuple[int, str], ...]], tuple[list[_Source], Optional[ConfigError]]]


def _source_key(sources: Sequence[_Source]) -> tuple[tuple[int, str], ...]:
    """``sources`` by identity: the operators' ids (their ``==`` compares parameters) and paths."""
    return tuple((id(s), at) for s, at in sources)


def _score_sources(op: Operator, path: str, incoming: list[_Source],
                   memo: _Memo | None = None) -> tuple[list[_Source], ConfigError | None]:
    """The sources of the scores after ``op`` (at ``path``), given those reaching it, and the first cosine
    reader problem inside it.

    A loop's body is walked with what reaches the loop, then again with its own sources added (its next
    iterations get its last one's scores), unless the first walk added none (the second would see the same
    input).  ``memo`` keeps each loop's result per input, so nested loops are walked in linear time, not twice
    per level (20 nested loops took 2^20 walks of the innermost body)."""
    memo = {} if memo is None else memo
    if isinstance(op, Parallel):
        for branch, where in op.child_paths(path)[:-1]:
            problem = _score_sources(branch, where, incoming, memo)[1]
            if problem is not None:
                return [], problem
        return [(op, _at(path, "parallel"))], None
    if isinstance(op, Route):
        out: list[_Source] = []
        for branch, where in op.child_paths(path)[1:]:
            got, problem = _score_sources(branch, where, incoming, memo)
            if problem is not None:
                return [], problem
            out += got
        return _dedupe(out), None
    if isinstance(op, Loop):
        key = (id(op), path, _source_key(incoming))
        if key not in memo:
            body, where = op.child_paths(path)[0]
            first, problem = _score_sources(body, where, incoming, memo)
            again = _dedupe(incoming + first) if problem is None else incoming
            memo[key] = ((first, problem) if problem is not None or _source_key(again) == _source_key(incoming)
                         else _score_sources(body, where, again, memo))
        return memo[key]
    if isinstance(op, Composite) and not isinstance(op, Pipeline):  # a composite of another kind: its children
        for child, where in op.child_paths(path):
            problem = _score_sources(child, where, incoming, memo)[1]
            if problem is not None:
                return [], problem
        return incoming, None
    current = incoming
    for step, where in (op.child_paths(path) if isinstance(op, Pipeline) else [(op, path)]):
        if isinstance(step, Composite):
            current, problem = _score_sources(step, where, current, memo)
            if problem is not None:
                return [], problem
        elif step.name in _COSINE_READERS:
            for source, at in current:
                problem = _not_cosines(source, at, step, f"{where}.{step.name}")
                if problem is not None:
                    return [], problem
            current = [(step, where)]  # its own scores: calibrated relevance, corrected similarities
        elif step.kind in ("retriever", "reranker"):  # a reranker writes scores of its own (mmr, maxsim)
            current = [(step, where)]
    return current, None


def _cosine_retriever(op: Operator) -> Operator | None:
    """``op`` when it is a ``dense`` or ``knn_embed``, the per-shard one of a ``sharded`` one, else ``None``."""
    if op.name in _COSINE_RETRIEVERS:
        return op
    if _sharded_name(op) in _COSINE_RETRIEVERS:
        inner: Operator = op.sub_retriever()  # type: ignore[attr-defined]
        return inner
    return None


def _sharded_name(op: Operator) -> str | None:
    """The registry name of the per-shard retriever of ``op`` when it is a ``sharded`` one, else ``None``."""
    node = getattr(op.params, "retriever", None)
    if not callable(getattr(op, "sub_retriever", None)) or not isinstance(node, Mapping) or len(node) != 1:
        return None
    return str(next(iter(node)))


def _not_cosines(source: Operator, where: str, reader: Operator, at: str) -> ConfigError | None:
    """Why ``reader`` (at ``at``) cannot read the scores of ``source`` (at ``where``), else ``None``."""
    if isinstance(source, Parallel):
        fused = f"{where} (scores fused by {source.fuse.name}, not cosines)"
        fix = (f"put {reader.name} inside the dense branch, e.g. parallel: {{branches: [[dense, {reader.name}], "
               "bm25]}")
    else:
        there = f"{where}.{source.name}"
        inner = _cosine_retriever(source)
        metric = getattr(inner.params, "metric", "cos") if inner is not None else None
        if metric == "cos":
            return None
        fused = (f"{there} ({source.name} scores, not cosines)" if inner is None else
                 f"{there} with metric: {metric} (inner products of unnormalised vectors, not cosines)")
        fix = (f"put it right after a dense step, e.g. [dense, {reader.name}]" if inner is None else
               f"set metric: cos on {there}")
    return ConfigError(f"{at}: {reader.name} reads the raw cosines (in [-1, 1]) of a dense or knn_embed retriever "
                       f"with metric: cos right before it, but the scores reaching it come from {fused}; {fix}",
                       path=at)


#: prf's text-analysis parameters, which must be those of the bm25 that reads its expanded query
PRF_ANALYSIS = ("fields", "tokenizer", "stopwords", "stemmer")


def prf_reader_problem(op: Operator, path: str = "pipeline", loop_body: bool = False,
                       rest: Sequence[tuple[Operator, str]] = ()) -> ConfigError | None:
    """The error for the first ``prf`` of ``op`` (at ``path``) whose expanded query the next retriever
    would not read, or would read with other text analysis, else ``None``.

    ``prf`` writes its expansion as text into ``state.values["lexical_query"]``, which only ``bm25`` (also
    a sharded one) reads; dense, multi-vector and kNN-Embed retrievers encode the query itself.  The next
    retriever is the first step after the ``prf`` in its list that retrieves (in a loop's body with none
    after it: the body's first, which the next iteration runs); when that step is a composite, the first
    retrievers of its branches, of which at least one must be a ``bm25``.  Each such ``bm25`` must analyse
    text as ``prf`` does (:data:`PRF_ANALYSIS`: ``fields``, ``tokenizer``, ``stopwords``, ``stemmer``):
    ``prf`` spells each expansion term with a corpus word that its own analysis maps to the term, so
    another analysis reads other terms (``[bm25: {stemmer: none}, prf, bm25: {stemmer: none}]`` searched
    with Porter stems: ``property`` for ``properties``).  A ``prf`` in a parallel or route branch that no
    retriever follows in its branch is read by the next retriever after the parallel or route (a branch's
    ``lexical_query`` travels on); one that no retriever follows at all is not checked (its
    ``lexical_query`` is still in the run's values).  ``loop_body``: ``op`` is a loop's body; ``rest``:
    the steps after ``op`` in the lists around it.
    """
    if isinstance(op, Loop):
        body, where = op.child_paths(path)[0]
        return prf_reader_problem(body, where, loop_body=True)
    if isinstance(op, Composite) and not isinstance(op, Pipeline):
        for child, where in op.child_paths(path):
            problem = prf_reader_problem(child, where, rest=rest)
            if problem is not None:
                return problem
        return None
    steps = op.child_paths(path) if isinstance(op, Pipeline) else [(op, path)]
    for i, (step, where) in enumerate(steps):
        if isinstance(step, Composite):
            problem = prf_reader_problem(step, where, rest=[*steps[i + 1:], *rest])
            if problem is not None:
                return problem
            continue
        if step.name != "prf":
            continue
        after = [(s, w) for s, w in steps[i + 1:] if _retrieves(s)]
        if not after and loop_body:
            after = [(s, w) for s, w in steps[:i] if _retrieves(s)]
        if not after:
            after = [(s, w) for s, w in rest if _retrieves(s)]
        if after:
            problem = _prf_reader(step, f"{where}.{step.name}", *after[0])
            if problem is not None:
                return problem
    return None


def _first_retrievers(op: Operator, path: str) -> list[tuple[Operator, str]]:
    """The retriever leaves that run first in ``op`` (at ``path``), with their paths: in each branch of a
    parallel or route, in a loop's body, in the first step of a list that retrieves."""
    if not isinstance(op, Composite):
        return [(op, f"{path}.{op.name}")] if op.kind == "retriever" else []
    if isinstance(op, Pipeline):
        first = next(((s, w) for s, w in op.child_paths(path) if _retrieves(s)), None)
        return [] if first is None else _first_retrievers(*first)
    if isinstance(op, Loop):
        return _first_retrievers(*op.child_paths(path)[0])
    return [x for child, where in op.child_paths(path) for x in _first_retrievers(child, where)]


def _bm25_params(op: Operator) -> Params | None:
    """The parameters of ``op`` when it is a ``bm25`` (or a ``sharded`` one: its per-shard bm25's), else ``None``."""
    if op.name == "bm25":
        return op.params
    if _sharded_name(op) == "bm25":
        inner: Operator = op.sub_retriever()  # type: ignore[attr-defined]
        return inner.params
    return None


def _reads_lexical_query(op: Operator) -> bool:
    """Whether the retriever ``op`` (or a ``sharded`` one's per-shard retriever) searches with
    ``state.texts(lexical=True)``, the expanded query ``prf`` writes (:attr:`Operator.reads_lexical_query`)."""
    if op.reads_lexical_query:
        return True
    return _sharded_name(op) is not None and bool(op.sub_retriever().reads_lexical_query)  # type: ignore[attr-defined]


def _prf_reader(prf: Operator, at: str, step: Operator, where: str) -> ConfigError | None:
    """Why the retrievers that run first in ``step`` (at ``where``) do not read what ``prf`` (at ``at``)
    writes as it writes it, else ``None``."""
    readers = _first_retrievers(step, where)
    if not any(_reads_lexical_query(leaf) for leaf, _ in readers):
        names = ", ".join(f"{there} ({leaf.name})" for leaf, there in readers)
        return ConfigError(f"{at}: prf writes an expanded query (state.values['lexical_query']) that only bm25 reads, "
                           f"but the next retriever after it, {names}, searches with the query itself, so prf would "
                           f"change nothing; put a bm25 after prf (e.g. [bm25, prf, bm25]), or drop prf (a retriever "
                           f"of your own that searches state.texts(lexical=True) reads it: set reads_lexical_query = "
                           f"True on its class)", path=at)
    bm25s = [(p, there) for leaf, there in readers if (p := _bm25_params(leaf)) is not None]
    for params, there in bm25s:
        differ = [f for f in PRF_ANALYSIS if getattr(prf.params, f) != getattr(params, f)]
        if differ:
            ours = ", ".join(f"{f}: {getattr(prf.params, f)}" for f in differ)
            theirs = ", ".join(f"{f}: {getattr(params, f)}" for f in differ)
            return ConfigError(
                f"{at}.{differ[0]}: prf analyses text with {ours} but {there}, which reads its expanded query, with "
                f"{theirs}; prf spells each expansion term with a corpus word its own analysis maps to that term, "
                f"so the bm25 would search other terms; give prf the same ({theirs})", path=f"{at}.{differ[0]}")
    return None


def _learning_leaves(op: Operator) -> list[Operator]:
    """The leaves of ``op`` that learn from judged training queries (:attr:`Operator.learns`)."""
    return [leaf for leaf in iter_leaves(op) if getattr(leaf, "learns", False)]


class Pipeline(Composite):
    """A linear sequence of operators; the root of every pipeline.

    Examples
    --------
    >>> from ragkit.filters import TopK
    >>> from ragkit.retrievers import BM25
    >>> pipe = BM25(k=100) | TopK(k=10)
    >>> [op.name for op in pipe.steps]
    ['bm25', 'top_k']
    """

    def __init__(self, steps: Sequence[Operator] | Operator = ()) -> None:
        """``steps`` in order.  A fuser step right after ``a + b`` (a parallel with the default
        fuser) becomes that parallel's fuser, as ``(a + b) | RRF(...)`` does; a fuser anywhere else
        is refused, since it reads the rankings of a parallel's branches (a pipeline of one fuser
        alone is what ``Operator.to_yaml`` writes for a fuser, and is kept)."""
        super().__init__()
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
        self.steps: list[Operator] = steps
        #: the YAML file's ``description:`` (free text, kept by :meth:`to_yaml` and :meth:`save`)
        self.description: str | None = None

    def children(self) -> list[Operator]:
        return list(self.steps)

    def __repr__(self) -> str:
        return f"Pipeline([{', '.join(repr(s) for s in self.steps)}])"

    def child_paths(self, path: str) -> list[tuple[Operator, str]]:
        return [(s, f"{path}[{i}]") for i, s in enumerate(self.steps)]

    def __or__(self, other: Operator) -> "Pipeline":
        if not isinstance(other, Operator):
            return NotImplemented
        return Pipeline(list(self.steps) + (other.steps if isinstance(other, Pipeline) else [other]))

    def __ror__(self, other: Operator) -> "Pipeline":
        return Pipeline([other]) | self

    def __len__(self) -> int:
        return len(self.steps)

    # ------------------------------------------------------------------ fit
    @restoring
    def fit(self, corpus: Corpus, train: TrainSet | None = None, *, upstream: State | None = None,
            _seen: set[int] | None = None, backend: str = "local", _path: str = "pipeline") -> "Pipeline":
        """Fit every operator once, in order.

        Operators that learn from the training split read ``train``; those with
        ``wants_upstream`` also receive the output of the steps before them on the
        training queries.  ``backend="ray"`` pre-encodes the corpus's sentence vectors on Ray (and
        fits ``sharded`` retrievers with ``backend: auto`` as Ray tasks); see :mod:`ragkit.scale`.
        A fit that raises (an error, Ctrl-C) leaves every operator of the pipeline as it was before it
        (fitted as before, or unfitted: :func:`restoring`), and the exception propagates unchanged.
        A refit without ``train`` of a pipeline whose steps learned from judged queries (a fuser with
        ``learn: true``) drops what they learned (the fuser's given weights again), with a warning on the
        ``ragkit`` logger naming those steps; pass ``train`` to learn again, or :meth:`load` the saved pipeline.
        """
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
            check_trainable(self, train, corpus)
        seen = set() if _seen is None else _seen
        state_cache: dict[int, State] = {}
        for i, (step, where) in enumerate(self.child_paths(_path)):
            up = upstream
            if train is not None and _wants_upstream(step):
                up = self._upstream(i, train, upstream, state_cache)
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
        {'pipeline[0].parallel.fuse.rrf': {'branches': ['bm25', 'bm25_2'], 'weights': [0.5, 0.5],
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

    def _upstream(self, i: int, train: TrainSet, upstream: State | None, cache: dict[int, State]) -> State:
        if i in cache:
            return cache[i]
        state = upstream.copy() if upstream is not None else State.of(train.queries)
        for step in self.steps[:i]:
            state = step(state)
        cache[i] = state
        return state

    @property
    def is_fitted(self) -> bool:
        """Whether the pipeline was fitted (it holds a corpus) or every step is."""
        return hasattr(self, "corpus_") or all(c.is_fitted for c in self.steps)

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
        self, queries: Queries | Sequence[str] | Mapping[str, str] | str, *, k: int | None = None,
        trace: bool = False, qrels: Mapping[str, Mapping[str, int]] | None = None, relevance_level: int = 1,
        ignore_identical_ids: bool = True, **options: Any,
    ) -> "Run":
        """Run the pipeline on a batch of queries and return a :class:`~ragkit.run.Run`.

        Parameters
        ----------
        queries : Queries, list of str, str, or a mapping {query_id: text}
            (a pandas Series indexed by string ids gives its ids; a DataFrame is refused)
        k : int, optional
            Final number of results per query (retrievers fetch at least ``k``).
        trace : bool
            Record per-operator wall time, candidates in/out and (with ``qrels``) recall@100.
        qrels : mapping, optional
            Judgements, used only for the trace's recall and nDCG.
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
            of: k, filter, n_jobs``.
        NotFittedError
            When the pipeline is not fitted.
        """
        from ragkit.options import check_options
        from ragkit.run import Run

        problem = unranked_router(self, expansions=False)
        if problem is not None:
            raise problem
        leaves = list(iter_leaves(self))
        stateful = [leaf for leaf in leaves if not leaf.stateless]
        if any(not leaf.is_fitted for leaf in stateful):
            how = "pipeline.fit(corpus, train)" if any(x.needs_train for x in stateful) else "pipeline.fit(corpus)"
            if getattr(self, "corpus_", None) is None and not stateful[0].is_fitted:
                raise NotFittedError(f"this pipeline is not fitted yet; call {how} first")
            from ragkit.pipelines.yaml import walk_leaves

            path, leaf = next((p, x) for p, x in walk_leaves(self) if not x.stateless and not x.is_fitted)
            raise NotFittedError(f"{path}: {leaf.name} is not fitted (the rest of the pipeline is); call "
                                 f"{how} to fit every operator")
        from ragkit._locks import guarded

        with guarded(self):  # a RagkitRetriever's add / delete of this pipeline waits for it, and it for them
            corpus = shared_corpus(self)
            if corpus is None:
                raise NotFittedError("this pipeline has no retriever that was fitted on a corpus")
            if not any(leaf.kind == "retriever" for leaf in leaves):  # nothing would rank anything
                held = (f"its operators: {', '.join(sorted({_label(leaf) for leaf in leaves}))}" if leaves
                        else "it has no operators at all")
                raise ParamError(f"this pipeline has no retriever ({held}), so no query would get a document; start "
                                 "it with one, e.g. bm25 or dense")
            if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
                raise ParamError(f"search: k must be a positive integer, got {k!r}")
            options = check_options(self, options, corpus)  # before any work: the whole tree's options
            refuse_unapplied_filter(self, options)  # (a retriever that would ignore it)
            if k is not None:
                options["k"] = int(k)
            if qrels is not None:
                from ragkit.types import check_qrels

                qrels = check_qrels(qrels, "search")
            if isinstance(relevance_level, bool) or not isinstance(relevance_level, (int, np.integer)) or \
                    relevance_level < 1:
                raise ParamError(f"search: relevance_level must be an integer grade >= 1, got {relevance_level!r}")
            if not isinstance(ignore_identical_ids, (bool, np.bool_)):
                raise ParamError(f"search: ignore_identical_ids must be true or false, got {ignore_identical_ids!r}")
            state = State.of(queries, options=options, trace=[] if trace else None,
                             qrels=dict(qrels) if qrels is not None else None)
            token = _TRACE_IDS.set(corpus.ids)
            scoring = _TRACE_SCORING.set((int(relevance_level), bool(ignore_identical_ids)))
            try:
                t0 = time.perf_counter()
                with options_checked():  # checked above, once for the whole tree
                    state = self(state)
                seconds = time.perf_counter() - t0
            finally:
                _TRACE_SCORING.reset(scoring)
                _TRACE_IDS.reset(token)
            rankings = state.rankings if state.rankings is not None else [Ranking.empty() for _ in state.queries]
            if k is not None:
                rankings = [r.head(int(k)) for r in rankings]
            return Run.from_rankings(state.query_ids, rankings, corpus.ids, values=state.values,
                                     trace=state.trace, seconds=seconds)

    # ------------------------------------------------------------------ YAML and files
    def to_yaml(self) -> str:
        from ragkit.pipelines.yaml import dump_yaml

        return dump_yaml(self)

    @classmethod
    def from_yaml(cls, source: str | Any) -> "Pipeline":
        """Build from a YAML file (a ``Path``, or a string naming an existing file, any suffix) or
        YAML text; the whole file is validated first.  A saved pipeline folder is refused with a
        pointer to :meth:`load`; a path-like string naming nothing is "no such file"."""
        from ragkit.pipelines.yaml import load_yaml

        return load_yaml(source)

    def save(self, path: Any) -> None:
        """Write the pipeline to the folder ``path`` atomically: ``pipeline.yaml``, the corpus it
        was fitted on (``corpus.jsonl``, once), one folder per distinct operator and
        ``manifest.json`` with every file's SHA-256 (:mod:`ragkit.pipelines.store`); load it with
        :meth:`load`.  An unfitted pipeline saves its YAML and parameters only.  A leading ``~`` in ``path``
        is the home folder."""
        from ragkit.pipelines.store import save_pipeline

        save_pipeline(self, user_path(path, "Pipeline.save: path"))

    @classmethod
    def load(cls, path: Any, corpus: Corpus | None = None, *, mmap: bool = False, verify: bool = True) -> "Pipeline":
        """Load a folder written by :meth:`save` (checksums verified first unless ``verify=False``).  A leading
        ``~`` in ``path`` is the home folder; ``corpus``, when given, is the :class:`Corpus` it was fitted on."""
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


def fuse_weights_problem(fuse: Operator, names: Sequence[str]) -> str | None:
    """Why ``fuse``'s ``weights`` do not fit branches ``names`` (one weight per branch), or ``None``."""
    weights = getattr(fuse.params, "weights", None)
    if weights is None or len(weights) == len(names):
        return None
    return f"expected {len(names)} weights, one per branch ({', '.join(names)}), got {len(weights)}: {list(weights)}"


def route_label_problems(router: Operator | None, labels: Iterable[Any], has_default: bool,
                         default_label: str | None = None, *, default_branch: bool = False) -> str | None:
    """Why a route's branch ``labels`` do not serve ``router``, or ``None``: every label must be a
    string (YAML reads unquoted ``yes`` / ``no`` / ``on`` / ``1`` as booleans and numbers) without
    ``.``, ``[`` or ``]`` (path syntax); without a default every label the router can give
    (``possible_labels``) needs a branch; and every branch must be reachable: a label the router
    can give, or the route's ``default_label`` (a misspelt label's queries went to the default).
    ``default_branch``: the route has a default pipeline of its own, which must be reachable too: some
    label the router can give has no branch (``score_router`` with branches for both its labels and a
    ``default: [...]`` never runs it).
    Without a ``router`` (not built yet) only the labels themselves are checked."""
    labels = list(labels)
    bad = [k for k in labels if not isinstance(k, str)]
    if bad:
        got = ", ".join(f"{k!r} ({type(k).__name__})" for k in bad)
        return (f"branch labels must be strings, got {got}; YAML reads unquoted yes/no/on/off/true/false as "
                f'booleans and digits as numbers: quote the labels, e.g. "yes": [...] or "1": [...]')
    odd = [k for k in labels if not k.strip() or any(c in k for c in ".[]")]
    if odd:  # a label is a part of every path under its branch: "a[0]" would name what "a"'s first step is
        return (f"branch labels must be non-empty and hold no '.', '[' or ']' (they are parts of the paths that "
                f"name operators in errors, traces and saved pipelines), got {odd}")
    if router is None:
        return None
    possible = getattr(router, "possible_labels", None)
    missing = [lab for lab in possible() if lab not in labels] if callable(possible) and not has_default else []
    if missing:
        return (f"router {router.name!r} can label queries {missing}, which have no branch, and the route has no "
                f"'default'; branches: {sorted(labels)}; add a branch for each, or a 'default:' (a branch label or "
                f"a pipeline)")
    if callable(possible):
        can = possible()
        covered = all(lab in labels for lab in can)  # every label the router gives has a branch: no default runs
        never = [lab for lab in labels if lab not in can and lab != default_label]
        if never:
            close = {lab: difflib.get_close_matches(lab, can, n=1) for lab in never}
            hints = "".join(f"; {lab!r}: did you mean {c[0]!r}?" for lab, c in close.items() if c)
            return (f"branches {never} can never run: router {router.name!r} labels queries only {can}{hints}")
        if default_branch and covered:
            return (f"the default can never run: router {router.name!r} labels queries only {can}, and each of "
                    f"these has a branch; drop the default, or give one of its labels no branch")
    return None


class Parallel(Composite):
    """Run branches on the same queries and fuse their rankings (Modular RAG "branching").

    Parameters
    ----------
    branches : list of Operator (or list of lists, each a linear pipeline)
    fuse : Operator of kind ``"fuser"``, default ``RRF(k=60)``
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

    def __init__(self, branches: Sequence[Operator | Sequence[Operator]], fuse: Operator | None = None,
                 names: Sequence[str] | None = None) -> None:
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
        if names is not None and (isinstance(names, str) or not all(isinstance(n, str) for n in names)):
            raise ParamError(f"parallel.names: expected a list of strings (one per branch), got {names!r:.80}")
        self.names = list(names) if names is not None else unique_names(self.branches)
        if len(self.names) != len(self.branches):
            raise ParamError(f"parallel.names: {len(self.names)} names for {len(self.branches)} branches")
        repeated = sorted({n for n in self.names if self.names.count(n) > 1})
        if repeated:
            raise ParamError(f"parallel.names: {repeated} name more than one branch; each branch's fields "
                             f"('<name>.rank', '<name>.score') need their own name")
        problem = fuse_weights_problem(self.fuse, self.names)
        if problem:
            raise ParamError(f"parallel.fuse.{self.fuse.name}.weights: {problem}")

    def children(self) -> list[Operator]:
        return [*self.branches, self.fuse]

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
        if not isinstance(other, Operator):
            return NotImplemented
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
    def fit(self, corpus: Corpus, train: TrainSet | None = None, *, upstream: State | None = None,
            _seen: set[int] | None = None, _path: str = "", backend: str = "local") -> "Parallel":
        if backend != "local":  # fitted on its own on Ray (a pipeline's steps are fitted locally by it)
            return fit_on_backend(self, corpus, train, upstream, backend)
        if _seen is None:  # fitted on its own: a refused refit changes nothing (see check_trainable)
            check_trainable(self, train, corpus)
        seen = set() if _seen is None else _seen
        for b, where in self.child_paths(_path)[:-1]:
            fit_once(b, corpus, train, seen, upstream, where)
        if id(self.fuse) not in seen:
            seen.add(id(self.fuse))
            up = None
            if train is not None and self.fuse.wants_upstream:
                up = self._branch_state(upstream.copy() if upstream is not None else State.of(train.queries))
            self.fuse.fit(corpus, train, upstream=up)
        return self

    def _branch_state(self, state: State, path: str = "") -> State:
        """Run every branch on its own copy of ``state``; ``branches`` holds their rankings.

        Query vectors computed by a branch are shared with the later branches and kept,
        unless the branch rewrote the query text (``values["query_text"]``); branch
        scratch values are kept (first branch wins), except a rewritten query text
        (:data:`~ragkit.types.QUERY_REWRITES`), which stays inside its branch.
        """
        qtext = state.values.get("query_text")
        shared = dict(state.vectors)
        outs = []
        for b, where in self.child_paths(path)[:-1]:
            inp = state.copy()
            inp.vectors = dict(shared)
            o = run_step(b, inp, where)
            if o.values.get("query_text") == qtext:
                for key, vec in o.vectors.items():
                    shared.setdefault(key, vec)
            outs.append(o)
        merged = state.copy()
        merged.vectors = shared
        for o in outs:
            for key, vals in o.values.items():
                if key not in QUERY_REWRITES:
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
    go to ``default`` (an error when there is none).  The label is kept in
    ``state.values["route"]``.

    Examples
    --------
    >>> from ragkit.filters import TopK
    >>> from ragkit.pipelines import RuleRouter
    >>> from ragkit.retrievers import BM25
    >>> from ragkit.types import Corpus, State
    >>> router = RuleRouter(rules=[{"label": "short", "max_words": 1}], default="long")
    >>> pipe = BM25(k=3) | Route(router, {"short": TopK(k=1), "long": TopK(k=2)})
    >>> pipe.fit(Corpus.from_texts(["red apples", "green pears", "red cars"]))(State.of(["cars", "red apple"])).values
    {'route': ['short', 'long']}
    >>> [d.tolist() for d in pipe.search(["cars", "red apple"]).doc_ids]
    [['2'], ['0', '2']]
    """

    name = "route"

    def __init__(self, router: Operator, branches: Mapping[str, Operator | Sequence[Operator]],
                 default: Operator | Sequence[Operator] | str | None = None) -> None:
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

    @restoring
    def fit(self, corpus: Corpus, train: TrainSet | None = None, *, upstream: State | None = None,
            _seen: set[int] | None = None, _path: str = "", backend: str = "local") -> "Route":
        """Fit the router and every branch; a learning router then learns from the branches' results.

        With ``train`` and a router that does not learn, a branch whose operators learn (a
        learned fuser, the Cosine Adapter, a fine-tuned encoder: :attr:`Operator.learns`) learns from
        the training queries the router sends it, the ones it will serve, not from all of
        them; branches that share a learning operator learn from the union of theirs.  A
        learning branch that the router sends no judged training query is a
        :class:`DataError` naming it.  With a router that learns (``learn_routes``,
        ``score_router(learn=true)``), the routing is not known before the branches are
        fitted: every branch learns from all the training queries that reach the route, then
        the router gets each branch's per-query nDCG@10 on them (``upstream``: the preceding
        steps' output) and chooses its threshold from them.
        """
        if backend != "local":  # fitted on its own on Ray (a pipeline's steps are fitted locally by it)
            return fit_on_backend(self, corpus, train, upstream, backend)
        learning_router = (self.router if train is not None and self.router.needs_train
                           and isinstance(self.router, _LearningRouter) else None)
        if train is None or learning_router is not None or not self.wants_upstream:
            super().fit(corpus, train, upstream=upstream, _seen=_seen, _path=_path)
        else:
            self._fit_routed(corpus, train, upstream, _seen, _at(_path, "route"))
        if learning_router is not None and train is not None:
            from ragkit.eval.metrics import per_query_ndcg

            state = _judged_start(train, upstream, f"learning {self.router.name}'s threshold")
            gains = {label: per_query_ndcg(self._branch_for(label, "route")[0](state.copy()), train.qrels, corpus.ids)
                     for label in (learning_router.params.above, learning_router.params.below)}
            learning_router.learn_routes(state, gains)
        return self

    def _fit_routed(self, corpus: Corpus, train: TrainSet, upstream: State | None, _seen: set[int] | None,
                    here: str) -> None:
        """Fit the router, route the training queries, and fit each branch on the queries it gets
        (``here``: the route's path, ``pipeline[1].route``, for errors)."""
        if _seen is None:
            check_trainable(self, train, corpus)
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
        # the positions of each label's queries, labels in order of first appearance (one numpy pass)
        uniq, first, inv = np.unique(np.array(labels, dtype=object), return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
        parts = []
        for g in np.argsort(first, kind="stable"):
            idx = np.flatnonzero(inv == g).tolist()
            branch, where = self._branch_for(str(uniq[g]), here)
            parts.append((idx, run_step(branch, labelled.subset(idx), where)))
        out = merge_parts(labelled, parts)
        for key in QUERY_REWRITES:
            qtext = out.values.get(key)
            if qtext is not None and any(t is None for t in qtext):  # rewritten in some branches only
                out.values[key] = [q if t is None else t for q, t in zip(out.texts(), qtext)]
        out.values["route"] = labels
        out.values.pop("label", None)
        return out

    def __call__(self, state: State) -> State:
        return call_checked(self, state, self._call)


class Loop(Composite):
    """Looping flow: run ``body`` per query until the judge says done or ``max_iters`` runs.

    Each iteration runs the body on the queries still active (one batch); then the judge
    marks each of them done or not (``state.values["done"]``).  A query runs at most
    ``max_iters`` times; the number of iterations per query is in
    ``state.values["iterations"]``.  Deterministic: same input, same iterations.

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

    def __init__(self, body: Operator | Sequence[Operator], until: Operator, max_iters: int = 3) -> None:
        super().__init__()
        if isinstance(max_iters, bool) or not isinstance(max_iters, (int, np.integer)) or not (
                1 <= max_iters <= MAX_LOOP_ITERS):
            raise ParamError(f"loop.max_iters: expected an integer from 1 to {MAX_LOOP_ITERS:,} (each iteration runs "
                             f"the body over the queries still looping), got {max_iters!r}", path="loop.max_iters")
        self.until = _operator_of_kind(until, "judge", "loop.until", "MaxOnly(), TopKStable(), ScoreReached(...)")
        self.body = _as_pipeline(body, "loop.body")
        self.max_iters = int(max_iters)

    def children(self) -> list[Operator]:
        return [self.body, self.until]

    def __repr__(self) -> str:
        return f"Loop({_branch_repr(self.body)}, until={self.until!r}, max_iters={self.max_iters})"

    def child_paths(self, path: str) -> list[tuple[Operator, str]]:
        here = _at(path, "loop")
        return [(self.body, f"{here}.body"), (self.until, f"{here}.until")]

    @restoring
    def fit(self, corpus: Corpus, train: TrainSet | None = None, *, upstream: State | None = None,
            _seen: set[int] | None = None, _path: str = "", backend: str = "local") -> "Loop":
        """Fit the body and the judge; a learning judge then learns when to stop; the body's learners
        then learn from the iteration whose output the loop returns.

        With ``train``, the body is first fitted on the training queries as they reach the loop
        (its first iteration's input).  A judge with ``learn_stopping`` (``score_reached(learn=true)``)
        gets, for every iteration up to ``max_iters``, each training query's judge feature and
        nDCG@10 after that many body runs (the body run on all of them each time, as the loop would
        for the queries still active), and chooses its threshold from them.  The body's operators
        that learn from what reaches them (``wants_upstream``: a learned fuser, a learning
        ``score_router``'s route, the Cosine Adapter) then learn again from each training query's
        input to its last iteration (:meth:`_refit_on_iterations`), and a learning judge learns
        again for the body so refitted.  From the first iteration alone they never saw what later
        iterations give them: a ``prf`` at the start of the body has no feedback in the first
        iteration, so a fuser after it learned to weigh a plain query's rankings, while every ranking
        the loop returned came from an expanded one.
        """
        if backend != "local":  # fitted on its own on Ray (a pipeline's steps are fitted locally by it)
            return fit_on_backend(self, corpus, train, upstream, backend)
        super().fit(corpus, train, upstream=upstream, _seen=_seen, _path=_path)
        judge = (self.until if train is not None and self.until.needs_train
                 and isinstance(self.until, _LearningJudge) else None)
        if judge is not None and train is not None:
            self._learn_stopping(judge, corpus, train, upstream)
        if train is not None and self.max_iters > 1 and any(x.wants_upstream for x in iter_leaves(self.body)):
            if self._refit_on_iterations(corpus, train, upstream, _path) and judge is not None:
                self._learn_stopping(judge, corpus, train, upstream)  # again, for the body as refitted
        return self

    def _learn_stopping(self, judge: _LearningJudge, corpus: Corpus, train: TrainSet, upstream: State | None) -> None:
        """Run the body ``max_iters`` times on every judged training query and give the judge (``until``)
        each iteration's features and nDCG@10 (its ``learn_stopping``)."""
        from ragkit.eval.metrics import per_query_ndcg

        current = _judged_start(train, upstream, f"learning {self.until.name}'s threshold")
        features, gains = [], []
        for it in range(self.max_iters):
            current.values["iteration"] = [it] * len(current)
            current = self.body(current)
            current.values.pop("iteration", None)
            features.append(judge.feature(current))
            gains.append(per_query_ndcg(current, train.qrels, corpus.ids))
        judge.learn_stopping(np.array(features), np.array(gains))

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
        """Iterate; per-query iteration counts go to ``values["iterations"]``.

        Each iteration's body and judge steps appear in the trace under
        ``<path>.loop.body`` / ``<path>.loop.until`` with the number of queries still
        active, then the loop itself under ``<path>.loop``: its output over all its queries
        (what the steps after it get; an iteration's rows cover the queries still active).
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
        for key in [k for k in current.values if k.startswith("_")]:
            del current.values[key]
        current.values.update(outer)
        current.values["iterations"] = iters.tolist()
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
