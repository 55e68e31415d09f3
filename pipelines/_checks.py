"""The static checks of a pipeline's configuration: what a pipeline's shape and settings would make fail, or
silently do nothing, found before any work starts (when it is built, fitted and searched), and the notes
``ragkit validate`` prints.

* :func:`check_trainable`: what ``fit(corpus, train)`` would refuse, refused before anything is fitted;
* :func:`unranked_router`: what rankings reach each step (a reranker before any retriever, a branch that
  retrieves nothing, a ``dbnorm`` on scores that are not cosines, a retriever that discards the ranking
  before it, a ``prf`` whose expansion the next retriever does not read);
* :func:`encoder_mismatch` / :func:`encoder_notes`: the encoder a step reads the retriever's cosines with;
* :func:`fuse_weights_problem` / :func:`route_label_problems`: a parallel's weights, a route's labels
  (:func:`route_label_notes`: branches that rules shadow, warned of).

The composite operators themselves (:class:`~ragkit.pipelines.Pipeline`, ``Parallel``, ``Route``, ``Loop``)
live in :mod:`ragkit.pipelines._compose`.  The checks walk trees of those composites, so this module imports
them; ``_compose`` imports the few checks it runs (at fit, search and construction) inside those methods, so the
two modules load in either order, and the recursive walks here pay no import per node.
"""

from __future__ import annotations

import difflib
import logging
import weakref
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

from ragkit._files import first_time
from ragkit.errors import ConfigError, DataError, ParamError, RagkitError, some_ids
from ragkit.operator import Operator, check_fit_inputs
from ragkit.params import Params
from ragkit.pipelines._compose import (
    Composite,
    Loop,
    Parallel,
    Pipeline,
    Route,
    _at,
    _label,
    iter_leaves,
    path_unsafe,
    placed_at,
)
from ragkit.pipelines.routers import RuleRouter
from ragkit.types import Corpus, TrainSet

__all__ = [
    "check_ready",
    "check_trainable",
    "cosine_source_problem",
    "discarded_ranking_problem",
    "encoder_mismatch",
    "encoder_notes",
    "fuse_weights_problem",
    "prf_reader_problem",
    "ready_refusals",
    "route_label_notes",
    "route_label_problem_at",
    "route_label_problems",
    "same_model",
    "search_threshold_problem",
    "threshold_scale_problem",
    "unranked_router",
]


def check_trainable(root: Operator, train: TrainSet | None, corpus: Corpus | None = None,
                    path: str = "pipeline") -> None:
    """What ``fit(corpus, train)`` of ``root`` would refuse, refused before anything is fitted, placed at the
    paths of ``root``'s steps with ``root`` at ``path`` (:func:`~ragkit.pipelines.yaml.walk_leaves`): a pipeline's
    fit passes ``"pipeline"`` (``pipeline[0].dense.reduce: ...``); a composite or an operator fitted on its own
    ``""`` (``parallel.branches[1].dense.reduce: ...``, ``dense.adapt: ...``).

    With ``train`` and ``corpus``, when a leaf learns from judged queries: judgements that name no
    document of the corpus (:meth:`TrainSet.check_corpus`); with an unlabelled ``train`` (``TrainSet(queries)``,
    a query bank), any leaf that learns.

    With ``corpus``: a retriever's own ``filter`` naming a field the corpus lacks (a :class:`ParamError`), or
    none of whose values for a field has the type of the field's values (a :class:`DataError`, as
    :meth:`Corpus.mask` raises it at search: ``year: "2015"`` for a field of integers, ``title: 2020``); and what
    a step's own ``check_corpus(corpus)`` refuses (dense: a ``reduce: pca:<dims>`` on no more than ``dims``
    documents), placed at the step's path.

    Always: a ``dbnorm`` or ``cosine_adapter`` whose ``model`` is not that of the dense retriever right
    before it (:func:`encoder_mismatch`); and last, a step that needs a package that is not installed
    (:func:`check_ready`: Ray for a ``sharded`` ``backend: ray``, the ``llm`` extra for ``generate``'s GGUF model).

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
    mismatch = encoder_mismatch(root, path)
    if mismatch is not None:
        raise mismatch
    for note in encoder_notes(root, path):
        logging.getLogger("ragkit").warning(note)
    homes = _decision_seats(root)
    for where, leaf in walk_leaves(root, path):
        if train is None:
            refusal = leaf.train_refusal()
            if refusal is not None:  # which step: a pipeline may hold two of one operator
                raise placed_at(refusal, where, leaf.name) if isinstance(refusal, RagkitError) else refusal
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
        raise ParamError(f"{where}: {leaf.name} with learn: true learns only as {home}, from what each choice "
                         f"gives the judged queries; anywhere else it has nothing to learn from")
    if corpus is not None:  # a retriever's own filter naming a field the corpus lacks, or with a value of another
        # type than the field's (year: "2015" for integers, title: 2020), failed at every search, after the whole fit
        from ragkit.options import filter_value

        for where, leaf in walk_leaves(root, path):
            own = getattr(leaf.params, "filter", None)
            try:
                filter_value(own, corpus)
            except (TypeError, ValueError) as e:
                raise ParamError(f"{where}.filter: {e}", path=f"{where}.filter") from None
            try:
                corpus.mask(own)  # (the column's codes it builds are those every search's filter reads)
            except DataError as e:  # filter.year: the field holds int values; ... -> <path>.filter.year: ...
                raise placed_at(e, f"{where}.filter", "filter") from None
        for where, leaf in walk_leaves(root, path):  # a step's own refusal of its parameters on this corpus
            # (dense's reduce: pca:300 on 40 documents), made before the steps before it encode anything
            check = getattr(leaf, "check_corpus", None)
            if callable(check):
                try:
                    check(corpus)
                except RagkitError as e:  # dense.reduce: ... -> pipeline[0].parallel[1].dense.reduce: ...
                    raise placed_at(e, where, leaf.name) from None
    if train is not None and not train.labelled:  # TrainSet(queries): a query bank, no judgements to learn from
        learner = next(((where, leaf) for where, leaf in walk_leaves(root, path) if leaf.learns), None)
        if learner is not None:
            raise train.unlabelled_refusal(f"{learner[0]}: {learner[1].name}")
    if train is not None and corpus is not None and any(leaf.learns for _, leaf in walk_leaves(root)):
        train.check_corpus(corpus)
    if train is not None:
        fusers = [where for where, leaf in walk_leaves(root, path) if leaf.kind == "fuser" and leaf.learns]
        usable = train.usable(corpus)  # a judgement > 0 of a document of the corpus (of any without one)
        if fusers and len(usable) < 2:
            raise DataError(f"{fusers[0]}: learning fusion weights cross-validates over the judged training queries "
                            f"and needs at least 2; the train set has {len(usable)} usable (with a relevant document "
                            f"in the corpus) ({some_ids(usable) or 'none'})")
    check_ready(root, corpus, train, path)


def check_ready(root: Operator, corpus: Corpus | None = None, train: TrainSet | None = None,
                path: str = "pipeline") -> None:
    """Refuse, before any step of ``root`` fits, a step that needs a package that is not installed (a
    :class:`~ragkit.errors.MissingExtraError` naming the ragkit extra that installs it, placed at the step's
    path: ``pipeline[1].sharded.backend: 'ray' ... pip install 'ragkit[ray]'``): each leaf's own
    ``check_ready(corpus=, train=)``, where it has one (``sharded`` with ``backend: ray``, ``generate``'s local
    model, ``dense`` / ``muvera`` with ``adapt`` given a training split).  Called by :func:`check_trainable`,
    so by every fit, with or without a corpus; a step's check loads no model (``adapt``'s finds a cached
    fine-tune only where the ``train`` extra is missing).  The first refusal of :func:`ready_refusals`, whose
    others are not looked for.  Building a pipeline never calls it; ``ragkit validate`` notes each refusal
    (``note: to run here: ...``) and passes all the same: a configuration is valid on a machine without the
    packages its run needs.  :meth:`Operator.fit <ragkit.operator.Operator.fit>` of a step fitted on its own
    (not inside a pipeline's fit, which checked its whole tree already) calls it with ``path=""``: its refusal
    is placed at the step's own name (``dense.adapt: ...``), as :func:`~ragkit.pipelines.yaml.walk_leaves`
    places a leaf on its own."""
    refusal = next(ready_refusals(root, corpus, train, path), None)
    if refusal is not None:
        raise refusal


def ready_refusals(root: Operator, corpus: Corpus | None = None, train: TrainSet | None = None,
                   path: str = "pipeline") -> Iterator[RagkitError]:
    """The refusal of each leaf of ``root`` whose own ``check_ready(corpus=, train=)`` refuses to run here (see
    :func:`check_ready`), in the pipeline's order, one per leaf (its check's first), placed at the leaf's path
    (``sharded.backend: ...`` -> ``pipeline[0].parallel.branches[1].sharded.backend: ...``; ``path=""``, a step
    fitted on its own: at its name, ``sharded.backend: ...``).  Lazy: a leaf is checked when its refusal is asked
    for.  An error of a check that is no :class:`~ragkit.errors.RagkitError` propagates."""
    from ragkit.pipelines.yaml import walk_leaves

    for where, leaf in walk_leaves(root, path):
        check = getattr(leaf, "check_ready", None)
        if callable(check):
            try:
                check(corpus=corpus, train=train)
            except RagkitError as e:
                yield placed_at(e, where, leaf.name)


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
    * a retriever right after another in the same list (``[bm25, dense]``), or a parallel, route or loop after
      one, every path through which starts with a retriever (``[bm25, parallel: {branches: [dense]}]``): it
      replaces the first's ranking (:func:`discarded_ranking_problem`);
    * a ``prf`` whose expanded query the next retriever does not read, or reads with other text analysis, or
      that no retriever follows at all (:func:`prf_reader_problem`).

    Steps of a pipeline see the rankings of the steps before them; parallel and route branches
    those that reach them; a loop's judge also its body's.  ``ranked``: a retriever ran before ``op``.
    ``expansions=False`` leaves out the ``prf`` check (:meth:`Pipeline.search` does: a pipeline of steps
    fitted on their own, searched without a pipeline fit, is not refused for it).
    """
    return (_unranked(op, path, ranked, branches=_retrieves(op)) or cosine_source_problem(op, path)
            or threshold_scale_problem(op, path) or discarded_ranking_problem(op, path)
            or (prf_reader_problem(op, path) if expansions else None))


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
    return (op.name in _RANKING_BLIND and _builtin(op, ("retriever",)) and not op.reads_rankings
            and not op.wants_upstream)


def _ranking_only(op: Operator) -> bool:
    """Whether ``op`` is a leaf that only reorders, rescores or cuts the rankings that reach it: a built-in
    ``filter`` or ``reranker`` (the registered class itself: ``top_k``, ``score_threshold``, ``mmr``, ...).  A
    :data:`_RANKING_BLIND` retriever after it discards its work with the ranking it worked on.  A rewriter
    (``prf``: the retriever after it reads its expanded query), a generator, a composite and any class of a
    plugin are not: what they leave may reach the retriever or the steps after it."""
    return _builtin(op, ("filter", "reranker"))


def _builtin_fuser(op: Operator) -> bool:
    """Whether ``op`` is a built-in fuser leaf (the registered class itself: ``rrf``, ``weighted``, ...), which
    fuses the rankings of a parallel's branches and nothing else."""
    return _builtin(op, ("fuser",))


def _builtin(op: Operator, kinds: tuple[str, ...] | None = None) -> bool:
    """Whether ``op`` is a leaf of one of ``kinds`` (``None``: of any kind) whose class is the one registered under
    its name (not a composite, not a plugin's subclass)."""
    if isinstance(op, Composite) or (kinds is not None and op.kind not in kinds):
        return False
    from ragkit import registry

    try:
        return type(op) is registry.get(op.name)
    except RagkitError:  # a name no class is registered under: not a built-in
        return False


def _ranking_maker(op: Operator) -> bool:
    """Whether ``op`` is a pipeline or parallel (the classes themselves, nested ones too) whose leaves are all
    :func:`_ranking_blind` retrievers, :func:`_ranking_only` steps or built-in fusers, every path through which
    starts with such a retriever (:func:`_blind_starts`): it only makes rankings of its own (it rewrites no
    query, writes no value a later step reads, keeps no ranking that reaches it), so a :data:`_RANKING_BLIND`
    retriever after it discards all it made, as one after a single such retriever does (``[[bm25], bm25]``,
    ``[parallel: {branches: [bm25, dense]}, top_k, bm25]``).  Not a route (its router writes a value, and may
    read the rankings), a loop, a composite holding ``prf``, a generator or any step of a plugin, or one with a
    branch that keeps or reranks the rankings reaching it (``parallel: {branches: [[bm25], [top_k]]}``)."""
    if type(op) not in (Pipeline, Parallel):
        return False
    if not all(_ranking_blind(x) or _ranking_only(x) or _builtin_fuser(x) for x in _leaves(op)):
        return False
    return bool(_blind_starts(op, ""))


def _leaves(op: Operator) -> Iterator[Operator]:
    """The leaves of the pipelines and parallels ``op`` is made of (a composite of any other class: itself, which
    no leaf test accepts)."""
    if type(op) in (Pipeline, Parallel):
        for child in op.children():
            yield from _leaves(child)
    else:
        yield op


def _at_step(op: Operator, at: str) -> str:
    """The path that names the step ``op`` at ``at`` in errors: a leaf's or a parallel's with its name
    (``pipeline[0].bm25``), a nested pipeline's (which has no name) its own (``pipeline[0]``)."""
    return f"{at}.{op.name}" if op.name else at


def discarded_ranking_problem(op: Operator, path: str = "pipeline") -> ConfigError | None:
    """The error for the first retriever of ``op`` (at ``path``) that comes after another retriever in its list
    with only :func:`_ranking_only` steps (filters, rerankers) between them, both of :data:`_RANKING_BLIND`, else
    ``None``: the second searches the whole corpus and replaces the first's ranking, so the list returns what the
    second alone returns (``[bm25: {variant: okapi}, bm25: {k: 10}]`` gave exactly ``[bm25: {k: 10}]``'s run,
    ``[bm25: {k: 1000}, dense: {k: 100}]`` dense's, ``[bm25: {}, top_k: {k: 5}, bm25: {}]`` the second bm25's
    100 documents per query).  The second may also be a parallel, route or loop every path through which starts
    with such a retriever (:func:`_blind_starts`: ``[bm25, parallel: {branches: [dense]}]``, ``[bm25, loop: {body:
    [bm25: {k: 7}], ...}]`` returned what they return without the first bm25); the error then names the
    composite and those retrievers.  The first may also be a pipeline or parallel that only makes rankings
    (:func:`_ranking_maker`: ``[[bm25], bm25]``, ``[parallel: {branches: [bm25, dense]}, top_k, bm25]``).  A
    rewriter between them (``prf``: the second reads its expanded query), a
    branch that keeps, reranks or expands from the ranking (``top_k``, ``mmr``, ``[prf, bm25]``, an empty route
    branch), a route whose router reads rankings, and a retriever of another class (which may read what reaches
    it) are not refused.  One pass over the tree (a look back over the steps since the last retriever)."""
    if not isinstance(op, Composite):
        return None
    if isinstance(op, Pipeline):
        steps = op.child_paths(path)
        for j, (second, at_second) in enumerate(steps):
            blind = _ranking_blind(second)
            starts = None if blind else _blind_starts(second, at_second)
            if not blind and not starts:
                continue
            for i in range(j - 1, -1, -1):  # back over the filters and rerankers right before it
                first, at_first = steps[i]
                if _ranking_blind(first) or _ranking_maker(first):
                    if starts:
                        return _discarded_by_composite(first, at_first, second, at_second, starts, steps[i + 1:j])
                    return _discarded_ranking(first, at_first, second, at_second, steps[i + 1:j])
                if not _ranking_only(first):
                    break
    for child, where in op.child_paths(path):
        problem = discarded_ranking_problem(child, where)
        if problem is not None:
            return problem
    return None


def _blind_starts(op: Operator, path: str) -> list[str] | None:
    """The paths of the :data:`_RANKING_BLIND` retrievers that start every path of the composite ``op`` (at
    ``path``) through which the rankings reaching it travel, when each does (with only :func:`_ranking_only` steps
    before it), else ``None``: the rankings reaching ``op`` are then discarded whichever path a query takes.

    A list's path starts with its first step that is not a filter or reranker; each branch of a parallel is a path
    (its fuser fuses the branches' rankings only); each branch of a route and its ``default`` pipeline, when the
    router does not read rankings (``score_router`` does: the rankings decide where a query goes); a loop's body
    (its first iteration gets the rankings, the next ones the body's own).  An empty branch or list (a
    pass-through), a list of filters and rerankers only, a step that reads rankings or values (``prf``, a reranker
    before the retriever reads the rankings it then discards, but a rewriter's output is read: not a discard), a
    plugin's composite and any other leaf are paths that do not discard them."""
    if _ranking_blind(op):
        return [f"{path}.{op.name}"]
    if not isinstance(op, Composite):
        return None
    if isinstance(op, Pipeline):
        for step, where in op.child_paths(path):
            if not _ranking_only(step):
                return _blind_starts(step, where)
        return None
    if isinstance(op, Loop):
        return _blind_starts(*op.child_paths(path)[0])
    if isinstance(op, Parallel):
        paths = [(b, w) for b, w in op.child_paths(path) if b is not op.fuse]
    elif isinstance(op, Route):
        if getattr(op.router, "reads_rankings", False) or op.router.wants_upstream:
            return None
        paths = [(b, w) for b, w in op.child_paths(path) if b is not op.router]
    else:  # a composite of a plugin
        return None
    found: list[str] = []
    for branch, where in paths:
        starts = _blind_starts(branch, where)
        if not starts:
            return None
        found += starts
    return found


def _discarded_by_composite(first: Operator, at_first: str, second: Operator, at_second: str, starts: list[str],
                            between: Sequence[tuple[Operator, str]] = ()) -> ConfigError:
    """The error for the composite ``second`` (at ``at_second``) after the retriever ``first``, with only the
    filters and rerankers ``between``, when every path through ``second`` starts with a retriever that searches
    the whole corpus (``starts``, their paths, from :func:`_blind_starts`): ``first``'s ranking is discarded
    whichever path a query takes."""
    a, b = _at_step(first, at_first), _at_step(second, at_second)
    if isinstance(first, Composite):  # (a pipeline or parallel that only makes rankings: _ranking_maker)
        also = f" and what {', '.join(_at_step(s, w) for s, w in between)} did to them are" if between else " are"
        return ConfigError(
            f"{b}: every path through this step starts with a retriever that searches the whole corpus and replaces "
            f"the rankings that reach it ({', '.join(starts)}), so the rankings {a} makes (it only makes rankings: "
            f"its retrievers search the whole corpus){also} discarded: the pipeline returns what it returns without "
            f"{a}; to combine the rankings, make the retrievers of {a} branches of one parallel with the others; "
            f"else drop {a}", path=b)
    which = {"parallel": "every branch of this parallel", "route": "every branch of this route (and its default)",
             "loop": "this loop's body"}.get(second.name, "every path through this step")
    also = f" and what {', '.join(f'{w}.{s.name}' for s, w in between)} did to it are" if between else " is"
    return ConfigError(
        f"{b}: {which} starts with a retriever that searches the whole corpus and replaces the rankings that reach "
        f"it ({', '.join(starts)}), so the ranking of {a} before it{also} discarded: the pipeline returns what "
        f"it returns without {a} (a retriever does not rerank the candidates of another, in a branch or a loop's "
        f"body either); to combine the rankings, make {first.name} a branch of a parallel with the others; to "
        f"reorder {first.name}'s candidates, start a branch with a reranker (maxsim, mmr) instead; else drop {a}",
        path=b)


def _discarded_ranking(first: Operator, at_first: str, second: Operator, at_second: str,
                       between: Sequence[tuple[Operator, str]] = ()) -> ConfigError:
    """The error for the retriever ``second`` (at ``at_second``) after the retriever ``first``, with only the
    filters and rerankers ``between`` (``(step, path)`` pairs) between them: it searches the whole corpus again, so
    the pipeline returns what ``second`` alone returns, ``first``'s ranking (and what ``between`` did to it)
    unread.  ``first`` may be a pipeline or parallel that only makes rankings (:func:`_ranking_maker`)."""
    a, b = _at_step(first, at_first), f"{at_second}.{second.name}"
    if isinstance(first, Composite):
        also = f" and what {', '.join(_at_step(s, w) for s, w in between)} did to them are" if between else " are"
        return ConfigError(
            f"{b}: {second.name} (retriever) searches the whole corpus and replaces the rankings that reach it, so "
            f"the rankings {a} makes (it only makes rankings: its retrievers search the whole corpus){also} "
            f"discarded and the pipeline returns what {b} alone returns (a retriever does not rerank the candidates "
            f"of another, nor search only the documents the steps before it kept); to combine the rankings, make "
            f"{second.name} another branch of a parallel with the retrievers of {a}; to keep what {a} gives, end "
            f"the list before {b}; else drop one of the two", path=b)
    if not between:
        return ConfigError(
            f"{b}: {second.name} (retriever) searches the whole corpus and replaces the rankings that reach it, so "
            f"the ranking of {a} right before it is discarded and the pipeline returns what {b} alone returns (a "
            f"retriever does not rerank the candidates of another); to combine the two rankings, fuse them: "
            f"parallel: {{branches: [{first.name}, {second.name}]}}; to reorder {first.name}'s candidates, follow it "
            f"with a reranker (maxsim, mmr) instead; else drop one of the two", path=b)
    steps = ", ".join(f"{w}.{s.name}" for s, w in between)
    return ConfigError(
        f"{b}: {second.name} (retriever) searches the whole corpus and replaces the rankings that reach it, so the "
        f"ranking of {a} and what {steps} did to it are discarded: the pipeline returns what {b} alone returns (a "
        f"retriever does not search only the documents the steps before it kept); end the list before {b} to keep "
        f"what {steps} gives, fuse the two retrievers to combine their rankings (parallel: {{branches: "
        f"[{first.name}, {second.name}]}}), or drop one of the two", path=b)


#: a retriever leaf or a parallel whose scores reach a step, with its path (a parallel's: ``pipeline[0].parallel``)
_Source = tuple[Operator, str]


def cosine_source_problem(op: Operator, path: str = "pipeline") -> ConfigError | None:
    """The error for the first ``dbnorm`` or ``cosine_adapter`` of ``op`` (at ``path``) that the scores of
    something else than a ``dense`` or ``knn_embed`` with ``metric: cos`` can reach, else ``None``.

    Both read raw cosines of their own ``model``'s query vectors.  The scores reaching a step come from the
    nearest retriever step before it: in its list, else before the parallel or route branch it is in (a
    route's branches each bring their own; a loop's body may also get its own last iteration's).  A
    ``bm25``, ``muvera`` or ``sharded`` (but a sharded ``dense``/``knn_embed``) leaf, a ``dense`` with
    ``metric: ip`` (for ``dbnorm`` also one with ``reduce`` or ``dtype: b1`` and no ``rescore``:
    :func:`_approximate_cosines`), a ``knn_embed`` with ``merge: interleave`` (rank scores: :func:`_interleaved`),
    a ``parallel`` (fused scores: RRF's are reciprocal ranks) and a step that
    writes scores of its own in between (a reranker: ``mmr``, ``maxsim``, ``dbnorm``; a ``cosine_adapter``) are refused,
    naming both steps; at search they failed with no step named (``bm25 | dbnorm``), or ran silently on other scores
    (a hybrid's RRF scores, a dense's inner products).  Whether the model is the retriever's is
    :func:`encoder_mismatch`'s check.
    """
    return _score_sources(op, path, [], check=_cosine_reader_problem)[1]


def threshold_scale_problem(op: Operator, path: str = "pipeline", *, warn: bool = True) -> ConfigError | None:
    """The error for the first fixed threshold of ``op`` (at ``path``) that empties results because the scores
    reaching it can never cross it (:func:`_threshold_problem`), else ``None``; with ``warn``, the fixed
    thresholds that cannot be crossed but empty nothing are warned of on the ``ragkit`` logger, once per step
    and message: it runs at load (where ``ragkit validate`` shows the warning), fit and each search.

    The steps checked are ``score_threshold``, ``score_router`` (features ``top1`` and ``gap``) and
    ``score_reached`` whose scores come, through some path, from a ``dense`` or ``knn_embed`` with ``metric:
    cos`` (cosines, in [-1, 1]; the gap of two in [0, 2]), an ``mmr`` (rank scores, in (0, 1]) or a
    ``cosine_adapter`` (probabilities, in [0, 1]) (:data:`_BOUNDED_SCORES`), with a threshold above that range
    (as one on BM25's scale is):

    * ``score_threshold``: refused.  No document passes it: every query keeps no documents (or only its
      ``k_min``); after a route whose other branches bring scores of another scale, only the queries routed
      through the cosine branches do, and the error names those branches;
    * ``score_router``: warned of: those queries all get its ``below`` label, the other branch never runs;
    * ``score_reached``: warned of: the loop never stops before ``max_iters`` (wasteful, not wrong).

    A threshold below the range is not said: it keeps every document (an "off" value of a sweep), sends every
    query ``above``, or stops every loop after one iteration, as the ``-inf`` those steps learn does.  Scales
    that are not bounded (BM25's, a fuser's, a reranker's, a step of a plugin's) are not guessed at."""
    notes: list[tuple[Operator, str]] = []

    def check(step: Operator, at: str, sources: list[_Source]) -> ConfigError | None:
        return _threshold_problem(step, at, sources, notes)

    problem = _score_sources(op, path, [], check=check, opaque=True)[1]
    if warn and problem is None:
        for step, note in notes:
            if first_time(_THRESHOLD_WARNED.setdefault(step, set()), note):  # (searches on threads: once)
                logging.getLogger("ragkit").warning(note)
    return problem


#: the threshold warnings already given, per step (so a pipeline checked at load, fit and each search warns once)
_THRESHOLD_WARNED: "weakref.WeakKeyDictionary[Operator, set[str]]" = weakref.WeakKeyDictionary()

#: the steps whose per-search ``threshold`` is checked as their own (:func:`search_threshold_problem`): those it
#: refuses (the others' are warned of once, at load and fit)
_SEARCH_CHECKED = ("score_threshold",)


def _sources_reaching(root: Operator, step: Operator, path: str = "pipeline") -> list[tuple[str, list[_Source]]]:
    """Where ``step`` is in the tree ``root`` (at ``path``) and the sources of the scores reaching it there:
    ``[(path, sources), ...]``, one per place (a step may be in several branches); empty when it is not in it."""
    found: list[tuple[str, list[_Source]]] = []

    def check(leaf: Operator, at: str, sources: list[_Source]) -> None:
        if leaf is step:
            found.append((at, list(sources)))
        return None

    _score_sources(root, path, [], check=check, opaque=True)
    return found


def search_threshold_problem(step: Operator, threshold: float, k_min: int | None = None) -> str | None:
    """Why a ``threshold`` given per search (``search(queries, score_threshold={"threshold": 5})``) for the
    ``score_threshold`` ``step`` empties results, as :func:`threshold_scale_problem` refuses the same threshold
    given as its parameter: the message (what was given, for which step, the range the scores reaching it lie in
    and what to give), else ``None``.  The scores reaching ``step`` are worked out from the tree whose options
    are being checked (:func:`~ragkit.options.checked_root`: the pipeline searched or called), so a step shared
    by two pipelines is checked on the scores of the one it runs in; a step checked outside a pipeline (called on
    its own) has no sources: ``None``.  ``k_min``: the one given with it per search, else the step's."""
    from ragkit.options import checked_root

    root = checked_root()
    if step.name not in _SEARCH_CHECKED or root is None:
        return None
    for at, sources in _sources_reaching(root, step):
        problem = _threshold_problem(step, at, sources, [], threshold=threshold, k_min=k_min,
                                     given=f"{threshold!r}, given per search for {at}, is")
        if problem is not None:
            return str(problem)
    return None

#: what the fixed ``threshold`` of each step compares: ``(feature, gap)``, the feature a score of the ranking
#: (in its source's range ``[low, high]``), or with ``gap`` the gap between the top two (in ``[0, high - low]``)
#: (``score_router``: by its ``feature``; ``rel_gap``, a ratio, is not bounded)
_THRESHOLD_FEATURES: dict[str, dict[str, tuple[str, bool]]] = {
    "score_threshold": {"": ("each document's score", False)},
    "score_reached": {"": ("the score at its rank", False)},
    "score_router": {"top1": ("the top score (feature: top1)", False),
                     "gap": ("the gap between the top two scores (feature: gap)", True)},
}

#: the range of the scores of a ``dense`` or ``knn_embed`` with ``metric: cos`` (:func:`_scores_cosines`):
#: ``(low, high, what they are)``
_COSINE_RANGE = (-1.0, 1.0, "cosines (in [-1, 1])")

#: the ranges of the scores the built-in steps that write bounded scores of their own write, whatever scores reach
#: them: ``(low, high, what they are)``; ``mmr``'s rank scores ``(n - i) / n``, ``cosine_adapter``'s
#: probabilities of relevance
_BOUNDED_SCORES: dict[str, tuple[float, float, str]] = {
    "mmr": (0.0, 1.0, "mmr's rank scores (in (0, 1])"),
    "cosine_adapter": (0.0, 1.0, "cosine_adapter's probabilities (in [0, 1])"),
}


def _score_range(source: Operator) -> tuple[float, float, str] | None:
    """The range of the scores ``source`` writes, ``(low, high, what they are)``: cosines', or one of
    :data:`_BOUNDED_SCORES` (the registered class itself), else ``None`` (BM25's, a fuser's, a plugin's: not
    bounded, or not known)."""
    if _scores_cosines(source):
        return _COSINE_RANGE
    bounded = _BOUNDED_SCORES.get(source.name)
    return bounded if bounded is not None and _builtin(source) else None


def _threshold_problem(step: Operator, at: str, sources: list[_Source], notes: list[tuple[Operator, str]], *,
                       threshold: float | None = None, k_min: int | None = None,
                       given: str | None = None) -> ConfigError | None:
    """Why the fixed threshold of ``step`` (at ``at``) can never be crossed by the scores of ``sources``: the
    error when it empties results (a ``score_threshold``), else ``None``, with a warning added to ``notes`` as
    ``(step, message)`` (a ``score_router``, a ``score_reached``; see :func:`threshold_scale_problem`).
    Only a ``threshold`` given is checked (not one learned): the step's parameter, or ``threshold`` (with
    ``k_min``) where one is given per search (:func:`search_threshold_problem`; ``given``: how the message
    starts, before the range, instead of ``"<at>.threshold: <threshold> is"``).  The sources whose scores
    are bounded (:func:`_score_range`: cosines, ``mmr``'s, ``cosine_adapter``'s) with the threshold above their
    feature's range are those it happens to; the others' scores are on another scale."""
    features = _THRESHOLD_FEATURES.get(step.name)
    if threshold is None:
        threshold = getattr(step.params, "threshold", None)
    feature = features.get(str(getattr(step.params, "feature", ""))) if features is not None else None
    if feature is None or threshold is None or getattr(step.params, "learn", False):
        return None
    what, gap = feature
    below: list[tuple[str, float, float, str]] = []  # (path, low, high, what) of the sources it is above
    others: list[str] = []
    for s, w in sources:
        scale = _score_range(s)
        if scale is not None:
            low, high = (0.0, scale[1] - scale[0]) if gap else (scale[0], scale[1])
            if threshold > high:
                below.append((f"{w}.{s.name}", low, high, scale[2]))
                continue
        others.append(f"{w}.{s.name}")
    if not below:  # within the range, or below it: keeps everything, every query 'above', one iteration
        return None
    names = ", ".join(p for p, *_ in below)
    # who it happens to: every query, or only those whose scores come from the bounded sources
    who = "every query" if not others else f"the queries whose rankings come from {names}"
    shown = ", ".join(f"{lo:g}" for lo in (min(x[1] for x in below), max(x[2] for x in below)))
    kinds = ", ".join(dict.fromkeys(x[3] for x in below))
    given = f"{at}.threshold: {threshold!r} is" if given is None else given
    head = (f"{given} outside [{shown}], where {what} always lies on the scores reaching "
            f"{step.name}{' from ' if others else ': those of '}{names}, {kinds}")
    verb = {"score_threshold": "filtered", "score_router": "routed"}.get(step.name, "judged")
    rest = f" (those from {', '.join(others)}, on another scale, are {verb} as usual)" if others else ""
    scale_of = "a cosine's scale" if all(x[3] == _COSINE_RANGE[2] for x in below) else "the scale of those scores"
    fix = f"give a threshold within [{shown}] ({scale_of}, not BM25's)"
    if step.name == "score_threshold":
        if k_min is None:
            k_min = step.params.k_min  # type: ignore[attr-defined]
        if not others:
            keeps = "keeps no documents" if not k_min else f"keeps its top {k_min} (k_min), as top_k would"
            return ConfigError(f"{head}; so no document passes it and every query {keeps}; {fix}",
                               path=f"{at}.threshold")
        keeps = "keep no documents" if not k_min else f"keep only their top {k_min} (k_min), as top_k would"
        return ConfigError(f"{head}; so none of their documents passes it, and only {who} {keeps}{rest}; {fix}, or "
                           "put a score_threshold inside each branch, with a threshold on that branch's scale",
                           path=f"{at}.threshold")
    if step.name == "score_router":
        p: Any = step.params
        effect = (f"{who} {'all get' if others else 'gets'} the label {p.below!r}: none{' of them' if others else ''} "
                  f"goes to {p.above!r}{rest}")
    else:
        effect = f"for {who}, the loop never stops before max_iters{rest}"
    fix += ", or learn: true to learn it"
    notes.append((step, f"{head}; so {effect}; {fix}"))
    return None


def _scores_cosines(source: Operator) -> bool:
    """Whether the scores of ``source`` are in [-1, 1]: a ``dense`` or ``knn_embed`` (a sharded one too) with
    ``metric: cos`` (compressed storage and ``reduce`` give approximate cosines, ``b1`` the unit query against
    unit sign vectors, ``merge: interleave`` rank scores in (0, 1]: all in that range)."""
    inner = _cosine_retriever(source)
    return inner is not None and getattr(inner.params, "metric", "cos") == "cos"


def _cosine_reader_problem(step: Operator, at: str, sources: list[_Source]) -> ConfigError | None:
    """Why ``step`` (at ``at``), a ``dbnorm`` or ``cosine_adapter``, cannot read the scores of ``sources``."""
    if step.name not in _COSINE_READERS:
        return None
    for source, where in sources:
        problem = _not_cosines(source, where, step, at)
        if problem is not None:
            return problem
    return None


def _dedupe(sources: Iterable[_Source]) -> list[_Source]:
    return list({id(s[0]): s for s in sources}.values())


#: :func:`_score_sources`'s results for loops already walked: ``(id(loop), path, incoming as (id, path) pairs)``
_Memo = dict[tuple[int, str, tuple[tuple[int, str], ...]], tuple[list[_Source], Optional[ConfigError]]]


def _source_key(sources: Sequence[_Source]) -> tuple[tuple[int, str], ...]:
    """``sources`` by identity: the operators' ids (their ``==`` compares parameters) and paths."""
    return tuple((id(s), at) for s, at in sources)


#: a check of one leaf step (at its path) against the sources of the scores reaching it
_Check = Callable[[Operator, str, list[_Source]], Optional[ConfigError]]


def _score_sources(op: Operator, path: str, incoming: list[_Source], memo: _Memo | None = None, *,
                   check: _Check, opaque: bool = False) -> tuple[list[_Source], ConfigError | None]:
    """The sources of the scores after ``op`` (at ``path``), given those reaching it, and the first problem
    ``check`` finds inside it (each leaf step, a route's router and a loop's judge, with the sources of the
    scores reaching it).

    A loop's body is walked with what reaches the loop, then again with its own sources added (its next
    iterations get its last one's scores), unless the first walk added none (the second would see the same
    input).  ``memo`` keeps each loop's result per input, so nested loops are walked in linear time, not twice
    per level (20 nested loops took 2^20 walks of the innermost body).  ``opaque``: a step of a plugin (an
    operator defined outside ragkit) is taken to write scores of its own (a filter that rescales them)."""
    memo = {} if memo is None else memo

    def walk(node: Operator, where: str, got: list[_Source]) -> tuple[list[_Source], ConfigError | None]:
        return _score_sources(node, where, got, memo, check=check, opaque=opaque)

    if isinstance(op, Parallel):
        for branch, where in op.child_paths(path)[:-1]:
            problem = walk(branch, where, incoming)[1]
            if problem is not None:
                return [], problem
        return [(op, _at(path, "parallel"))], None
    if isinstance(op, Route):
        (router, r_where), *branches = op.child_paths(path)
        problem = None if isinstance(router, Composite) else check(router, f"{r_where}.{router.name}", incoming)
        if problem is not None:
            return [], problem
        out: list[_Source] = []
        for branch, where in branches:
            got, problem = walk(branch, where, incoming)
            if problem is not None:
                return [], problem
            out += got
        return _dedupe(out), None
    if isinstance(op, Loop):
        key = (id(op), path, _source_key(incoming))
        if key not in memo:
            (body, where), (until, u_where) = op.child_paths(path)
            first, problem = walk(body, where, incoming)
            again = _dedupe(incoming + first) if problem is None else incoming
            found = ((first, problem) if problem is not None or _source_key(again) == _source_key(incoming)
                     else walk(body, where, again))
            if found[1] is None and not isinstance(until, Composite):  # the judge reads the body's rankings
                judged = check(until, f"{u_where}.{until.name}", _dedupe(first + found[0]))
                found = found if judged is None else ([], judged)
            memo[key] = found
        return memo[key]
    if isinstance(op, Composite) and not isinstance(op, Pipeline):  # a composite of another kind: its children
        for child, where in op.child_paths(path):
            problem = walk(child, where, incoming)[1]
            if problem is not None:
                return [], problem
        return incoming, None
    current = incoming
    for step, where in (op.child_paths(path) if isinstance(op, Pipeline) else [(op, path)]):
        if isinstance(step, Composite):
            current, problem = walk(step, where, current)
            if problem is not None:
                return [], problem
            continue
        problem = check(step, f"{where}.{step.name}", current)
        if problem is not None:
            return [], problem
        if (step.name in _COSINE_READERS  # its own scores: calibrated relevance, corrected similarities
                or step.kind in ("retriever", "reranker")  # a reranker writes scores of its own (mmr, maxsim)
                or (opaque and not type(step).__module__.startswith("ragkit."))):
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
        inner = _cosine_retriever(source)
        # where the setting to change is written: a sharded step's per-shard retriever, its own node
        sub = f".retriever.{inner.name}" if inner is not None and inner is not source else ""
        there = f"{where}.{source.name}{sub}"
        metric = getattr(inner.params, "metric", "cos") if inner is not None else None
        if metric == "cos" and inner is not None and getattr(inner.params, "merge", "score") != "score":
            return _interleaved(there, reader, at)
        if metric == "cos":
            return _approximate_cosines(inner, there, reader, at) if inner is not None else None
        fused = (f"{there} ({source.name} scores, not cosines)" if inner is None else
                 f"{there} with metric: {metric} (inner products of unnormalised vectors, not cosines)")
        fix = (f"put it right after a dense step, e.g. [dense, {reader.name}]" if inner is None else
               f"set metric: cos on {there}")
    return ConfigError(f"{at}: {reader.name} reads the raw cosines (in [-1, 1]) of a dense or knn_embed retriever "
                       f"with metric: cos right before it, but the scores reaching it come from {fused}; {fix}",
                       path=at)


def _interleaved(there: str, reader: Operator, at: str) -> ConfigError:
    """The error for ``reader`` (``dbnorm`` or ``cosine_adapter``, at ``at``) after a ``knn_embed`` with
    ``merge: interleave`` (at ``there``): its scores are rank scores ``(k - i) / k`` in Sainte-Laguë order (the
    cosines travel in ``fields["cosine"]``), so the reader got no cosines and failed at every search, after a
    fit that had done all its work."""
    return ConfigError(f"{at}: {reader.name} reads the raw cosines of the retriever right before it, but {there} has "
                       "merge: interleave, whose scores are rank scores (k - i) / k in its interleaved order, not "
                       f"cosines; set merge: score on {there} (in Python: merge=\"score\", the default; its results "
                       f"are then sorted by cosine), or drop {reader.name}", path=at)


def _approximate_cosines(retriever: Operator, there: str, reader: Operator, at: str) -> ConfigError | None:
    """Why ``dbnorm`` (``reader`` at ``at``) cannot read the scores of the cosine retriever ``retriever`` (at
    ``there``), else ``None``: without ``rescore``, a ``reduce`` (cosines of the PCA-projected or truncated
    vectors) or ``dtype: b1`` (the query against sign bits, off by up to about 0.3) scores on another scale
    than the full-space cosines its penalties ``log Z(g)`` are computed from (nDCG@10 0.7151 -> 0.7028 under
    ``reduce: pca:32`` on SciFact, 0.7383 -> 0.7017 with whitening).  ``f16`` and ``i8`` (calibrated, scored
    against the float query) stay within about 0.01 of the cosines, and ``cosine_adapter`` learns on the
    scores it then reads, so neither is refused."""
    p = retriever.params
    if reader.name != "dbnorm" or getattr(p, "rescore", False):
        return None
    reduce, dtype = str(getattr(p, "reduce", "none")), str(getattr(p, "dtype", "f32"))
    if reduce != "none":
        what = (f"reduce: {reduce} (cosines of the {'PCA-projected' if reduce.startswith('pca') else 'truncated'} "
                "vectors)")
    elif dtype == "b1":
        what = "dtype: b1 (the query scored against sign bits)"
    else:
        return None
    return ConfigError(f"{at}: dbnorm subtracts penalties computed from full-dimension cosines of its model from the "
                       f"scores of {there}, but that step searches with {what} and no rescore, so its scores are not "
                       f"those cosines and the penalties misrank; set rescore: true on {there} (its shortlist is "
                       "then re-scored with the float vectors), or drop the "
                       f"{'reduce' if reduce != 'none' else 'b1 dtype'}", path=at)


#: prf's text-analysis parameters, which must be those of the bm25 that reads its expanded query
PRF_ANALYSIS = ("fields", "tokenizer", "stopwords", "stemmer")


def prf_reader_problem(op: Operator, path: str = "pipeline", loop_body: bool = False,
                       rest: Sequence[tuple[Operator, str]] = ()) -> ConfigError | None:
    """The error for the first ``prf`` of ``op`` (at ``path``) whose expanded query no later step reads, or
    the next retriever would not read, or would read with other text analysis, else ``None``.

    ``prf`` writes its expansion as text into ``state.values["lexical_query"]``, which only ``bm25`` (also
    a sharded one) reads; dense, multi-vector and kNN-Embed retrievers encode the query itself.  The next
    retriever is the first step after the ``prf`` in its list that retrieves (in a loop's body with none
    after it: the body's first, which the next iteration runs; with none there either, the first after the
    loop); when that step is a composite, the first retrievers of its branches, of which at least one must be
    a ``bm25``.  Each such ``bm25`` must analyse
    text as ``prf`` does (:data:`PRF_ANALYSIS`: ``fields``, ``tokenizer``, ``stopwords``, ``stemmer``):
    ``prf`` spells each expansion term with a corpus word that its own analysis maps to the term, so
    another analysis reads other terms (``[bm25: {stemmer: none}, prf, bm25: {stemmer: none}]`` searched
    with Porter stems: ``property`` for ``properties``).  A ``prf`` in a parallel or route branch that no
    retriever follows in its branch is read by the next retriever after the parallel or route (a branch's
    ``lexical_query`` travels on).  One that no retriever follows at all (``[bm25, prf]``, ``[bm25, prf,
    top_k]``, ``[parallel: {branches: [[bm25, prf], bm25]}]``) changes no ranking and is refused, unless a
    later step of a class of its own declares ``reads_lexical_query`` (in a tree that holds no retriever at all,
    such as ``[prf]``, this is left to ``fit`` and ``search``, which refuse such a tree as it is).  ``loop_body``:
    ``op`` is a loop's body; ``rest``: the steps after ``op`` in the lists around it.
    """
    own = op.child_paths(path) if isinstance(op, Pipeline) else [(op, path)]
    tiers = [[], own, list(rest)] if loop_body else [list(rest)]
    return _prf_problem(op, path, tiers, unread=_retrieves(op) or any(_retrieves(s) for s, _ in rest))


def _prf_problem(op: Operator, path: str, tiers: list[list[tuple[Operator, str]]],
                 unread: bool = True) -> ConfigError | None:
    """:func:`prf_reader_problem` of ``op`` (at ``path``); ``tiers``: what runs after ``op``, in the order a
    ``prf`` in it looks for the retriever that reads it: the steps after ``op`` in the lists around it, up to the
    body of the innermost loop around it; then that body's steps (its next iteration); then what follows that loop
    (its own tiers).  ``unread``: refuse a ``prf`` that nothing after it reads."""
    if isinstance(op, Loop):
        body, where = op.child_paths(path)[0]
        return _prf_problem(body, where, [[], body.child_paths(where) if isinstance(body, Pipeline)
                                          else [(body, where)], *tiers], unread)
    if isinstance(op, Composite) and not isinstance(op, Pipeline):
        for child, where in op.child_paths(path):
            problem = _prf_problem(child, where, tiers, unread)
            if problem is not None:
                return problem
        return None
    steps = op.child_paths(path) if isinstance(op, Pipeline) else [(op, path)]
    for i, (step, where) in enumerate(steps):
        later = [[*steps[i + 1:], *tiers[0]], *tiers[1:]]
        if isinstance(step, Composite):
            problem = _prf_problem(step, where, later, unread)
            if problem is not None:
                return problem
            continue
        if step.name != "prf":
            continue
        after = next(([(s, w) for s, w in tier if _retrieves(s)] for tier in later
                      if any(_retrieves(s) for s, _ in tier)), [])
        if after:
            problem = _prf_reader(step, f"{where}.{step.name}", *after[0])
            if problem is not None:
                return problem
        elif unread and not any(leaf.reads_lexical_query for tier in later for s, _ in tier for leaf in iter_leaves(s)):
            at = f"{where}.{step.name}"
            return ConfigError(f"{at}: prf writes an expanded query (state.values['lexical_query']) for a bm25 after "
                               f"it to search, but no retriever comes after it, so it changes no ranking; put a bm25 "
                               f"after it (e.g. [bm25, prf, bm25], or after the parallel or route whose branch it "
                               f"ends), or drop prf (to read the expansions themselves, run the fitted steps on a "
                               f"State: prf(bm25(State.of(queries))).values['lexical_query'])", path=at)
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


def fuse_weights_problem(fuse: Operator, names: Sequence[str]) -> str | None:
    """Why ``fuse``'s ``weights`` do not fit branches ``names`` (one weight per branch), or ``None``."""
    weights = getattr(fuse.params, "weights", None)
    if weights is None or len(weights) == len(names):
        return None
    return f"expected {len(names)} weights, one per branch ({', '.join(names)}), got {len(weights)}: {list(weights)}"


def route_label_problems(router: Operator | None, labels: Iterable[Any], has_default: bool,
                         default_label: str | None = None, *, default_branch: bool = False) -> str | None:
    """Why a route's branch ``labels`` do not serve ``router``, or ``None`` (:func:`route_label_problem_at`'s
    message, for the routes built in Python, whose errors name ``route.branches``)."""
    found = route_label_problem_at(router, labels, has_default, default_label, default_branch=default_branch)
    return None if found is None else found[1]


def route_label_problem_at(router: Operator | None, labels: Iterable[Any], has_default: bool,
                           default_label: str | None = None, *,
                           default_branch: bool = False) -> tuple[str, str] | None:
    """Why a route's branch ``labels`` do not serve ``router``, or ``None``: ``(where, why)``, ``where`` the part
    of the route the problem is written at (``branches``, ``default``, or the router's parameter that gives a
    misspelt label: ``router.rule_router.default``), for the line a pipeline file's error cites.

    Every label must be a string (YAML reads unquoted ``yes`` / ``no`` / ``on`` / ``1`` as booleans and
    numbers) without ``.``, ``[`` or ``]`` (path syntax); a label the router gives that has no branch, beside a
    branch no label reaches with a close name, is one misspelling (``default: hybird`` for the branch
    ``hybrid``: said of the label, with the branch it likely means, and the other way round); without a default
    every label the router can give (``possible_labels``) needs a branch; and every branch must be reachable: a
    label the router can give, or the route's ``default_label`` (a misspelt label's queries went to the
    default).  ``default_branch``: the route has a default pipeline of its own, which must be reachable too:
    some label the router can give has no branch (``score_router`` with branches for both its labels and a
    ``default: [...]`` never runs it).
    Without a ``router`` (not built yet) only the labels themselves are checked."""
    labels = list(labels)
    bad = [k for k in labels if not isinstance(k, str)]
    if bad:
        got = ", ".join(f"{k!r} ({type(k).__name__})" for k in bad)
        return "branches", (f"branch labels must be strings, got {got}; YAML reads unquoted yes/no/on/off/true/false "
                            f'as booleans and digits as numbers: quote the labels, e.g. "yes": [...] or "1": [...]')
    odd = path_unsafe(labels)
    if odd:  # a label is a part of every path under its branch: "a[0]" would name what "a"'s first step is
        return "branches", (f"branch labels must be non-blank and hold no '.', '[' or ']' (they are parts of the "
                            f"paths that name operators in errors, traces and saved pipelines), got {odd}")
    if router is None:
        return None
    possible = getattr(router, "possible_labels", None)
    if not callable(possible):
        return None
    gives = list(possible())
    shadowed = _shadowed_labels(router)
    can = [*gives, *shadowed]  # (shadowed labels are warned of, not refused: see route_label_notes)
    never = [lab for lab in labels if lab not in can and lab != default_label]
    misspelt = _misspelt_labels(router, [lab for lab in gives if lab not in labels], never, labels)
    if misspelt:
        return misspelt
    missing = [lab for lab in gives if lab not in labels] if not has_default else []
    if missing:
        return "branches", _missing_branches(router, missing, sorted(labels))
    if never:
        close = {lab: difflib.get_close_matches(lab, can, n=1) for lab in never}
        hints = "".join(f"; {lab!r}: did you mean {c[0]!r}?" for lab, c in close.items() if c)
        return "branches", f"branches {never} can never run: router {router.name!r} labels queries only {can}{hints}"
    if default_branch and all(lab in labels for lab in can):  # every label the router gives has a branch
        return "default", (f"the default can never run: router {router.name!r} labels queries only {can}, and each "
                           f"of these has a branch; drop the default, or give one of its labels no branch")
    return None


def _label_origin(router: Operator, label: str) -> str | None:
    """The router's parameter that gives ``label`` (``rules[0].label``, ``default``), where it tells."""
    param = getattr(router, "label_param", None)
    return param(label) if callable(param) else None


def _misspelt_labels(router: Operator, unbranched: list[str], never: list[str],
                     branches: list[str]) -> tuple[str, str] | None:
    """A label the router gives that has no branch (in ``unbranched``) beside a branch of a close name that no
    label reaches (in ``never``): one name misspelt, the label's or the branch's.  Said of the label, at the
    router's parameter that gives it (``router.rule_router.default``), with the branch it likely means, and the
    two ways to give them one name, since which of the two is the typo only the author knows (it said them as two
    questions, "did you mean the branch 'short'? ... 'short': did you mean 'shrot'?", read as a contradiction).
    ``branches``: the route's branch names."""
    pairs: dict[str, str] = {}
    for lab in unbranched:
        close = [b for b in difflib.get_close_matches(lab, never, n=max(1, len(never))) if b not in pairs.values()]
        if close:
            pairs[lab] = close[0]
    if not pairs:
        return None
    first = next(iter(pairs))
    origin = _label_origin(router, first)
    where = f"router.{router.name}.{origin}" if origin is not None else "branches"

    def gives(lab: str) -> str:
        at = _label_origin(router, lab)
        return f"{lab!r} (router.{router.name}.{at})" if at is not None else repr(lab)
    said = " ".join(f"router {router.name!r} gives the label {gives(lab)}, which has no branch: did you mean the "
                    f"branch {br!r}? No label reaches {br!r}, so one of the two names is misspelt: write the label "
                    f"as {br!r}, or name the branch {lab!r}." for lab, br in pairs.items())
    return where, f"{said} The route's branches are {branches}."


def _missing_branches(router: Operator, missing: list[str], labels: list[str]) -> str:
    """The problem of a route without a default whose router gives labels ``missing`` that have no branch;
    a ``rule_router``'s implicit label of the queries no rule matches (``'default'``, which the author did not
    write) is said to be that, and how to give it a branch."""
    unwritten = isinstance(router, RuleRouter) and "default" not in router.params.model_fields_set
    implicit = [lab for lab in missing if unwritten and _label_origin(router, lab) == "default"]
    if not implicit:
        return (f"router {router.name!r} can label queries {missing}, which have no branch, and the route has no "
                f"'default:' of its own (a branch label or a pipeline for the queries whose label has no branch); "
                f"branches: {labels}; add a branch for each, or a 'default:' to the route")
    lab = implicit[0]
    example = f"default: {labels[0]}" if labels else "default: <a branch>"
    said = (f"router {router.name!r} gives the queries that none of its rules match the label {lab!r} (its "
            f"'default:' parameter, not written here), and no branch has that name; branches: {labels}; add a "
            f"branch named {lab!r} for those queries, or set the router's default: to an existing branch, e.g. "
            f"`{router.name}: {{rules: [...], {example}}}`")
    rest = [m for m in missing if m != lab]
    return said if not rest else (f"{said}; router {router.name!r} can also label queries {rest}, which have no "
                                  f"branch: add a branch for each")


def route_label_notes(router: Operator, labels: Iterable[Any], default_label: str | None = None, *,
                      default_branch: bool = False) -> str | None:
    """What of a route can never run because the router's earlier rules always match first (``shadowed``: a
    ``rule_router`` rule ``max_words: 3`` after ``max_words: 4``), or ``None``.  A warning, not an error, so
    that a pipeline saved with such a rule still loads; :func:`route_label_problems` refuses the rest."""
    shadowed = _shadowed_labels(router)
    possible = getattr(router, "possible_labels", None)
    if not shadowed or not callable(possible):
        return None
    can, labels = possible(), list(labels)
    never = [lab for lab in labels if lab in shadowed and lab != default_label]
    why = "".join(f"; router.{router.name}.{shadowed[lab]}" for lab in never)
    if never:
        return (f"branches {never} can never run: router {router.name!r} labels queries only {can}{why}; put "
                f"narrower rules before wider ones, or drop the rules that never match")
    if default_branch and all(lab in labels for lab in can):
        why = "".join(f"; router.{router.name}.{v}" for v in shadowed.values())
        return (f"the default can never run: router {router.name!r} labels queries only {can}, and each of these "
                f"has a branch{why}")
    return None


def _shadowed_labels(router: Operator) -> dict[str, str]:
    """The labels ``router`` can never give because earlier rules always match first, each with why
    (``RuleRouter.shadowed``); none for a router without that method."""
    shadowed = getattr(router, "shadowed", None)
    return shadowed() if callable(shadowed) else {}
