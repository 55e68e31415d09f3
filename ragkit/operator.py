"""The operator protocol: what every retriever, filter, fuser, router, judge and generator is.

An operator

* is constructed from one pydantic parameter model (``BM25(k=100)`` validates into
  ``BM25.Params``); the constructor stores the parameters and does no work;
* learns in ``fit(corpus, train=None)``, which returns ``self`` and stores what it learned
  in attributes ending in ``_`` (none exist before ``fit``);
* transforms a batch in ``__call__(state) -> state`` (one query is a batch of one);
* saves and loads as plain files (``params.json``, ``.npy``, JSON, usearch files; no pickle);
* composes: ``a | b`` is a linear pipeline, ``a + b`` runs both and fuses them.

Implementers override ``_fit``, ``_call``, ``_save`` and ``_load``; ``_call`` returns a new State and leaves
the one it is given unchanged (:meth:`Operator.__call__`).  A retriever says what it reads with class
attributes (:class:`Operator`'s ``applies_filter``, ``reads_lexical_query``).
"""

from __future__ import annotations

import inspect
import logging
import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Iterator,
    Literal,
    Mapping,
    Optional,
    Sequence,
    TypeVar,
    Union,
    cast,
)

import numpy as np

from ragkit import registry
from ragkit._checks import _other_constructor
from ragkit._files import (
    folder_checksums,
    saved_relpath,
    user_path,
    verify_checksums,
)
from ragkit._fingerprints import TEXTS_KEY, corpus_fingerprint, corpus_texts_digest, query_digests, taught_digests
from ragkit._results import check_result, same_query_text
from ragkit._saves import (
    CHECKSUMS,
    CLASS_KEY,
    FORMAT_VERSION,
    LEARNED_KEY,
    REGISTERED_KEY,
    RESERVED_FILES,
    TRAINED,
    _before_checksums,
    _check_given_corpus,
    _check_learned_loaded,
    _check_meta_types,
    _interrupted_save,
    _not_an_operator_folder,
    _saved_pipeline_above,
    _version,
    atomic_dir,
    check_savable,
    learned_attributes,
    load_array,
    read_json,
    restore_interrupted_save,
    save_arrays,
    saved_params_refused,
    write_json,
)
from ragkit.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    DataError,
    InputTypeError,
    NotFittedError,
    ParamError,
)
from ragkit.options import (
    PARAM,
    OptionCheck,
    _positive_k,
    _unapplied_filter_option,
    check_option_names,
    check_options,
    filter_option,
    option_readers,
    positive_k,
    refuse_unapplied_filter,
    resolve_k,
)
from ragkit.params import Params as ParamsModel, validate_params  # (inside Operator, ``Params`` is its model class)
from ragkit.types import Corpus, Queries, State, TrainSet, warn_same_text

if TYPE_CHECKING:  # (pandas: the hints only; it is optional)
    import pandas as pd
    from typing_extensions import Self

    from ragkit.pipelines import Parallel, Pipeline
    from ragkit.run import Run

__all__ = ["Operator", "FORMAT_VERSION", "after_fit", "call_checked", "check_state", "cut_to_k", "options_checked"]

T = TypeVar("T", bound="Operator")

# True while an operator tree runs on run-time options that were already checked (by Pipeline.search,
# or by the outermost operator called on a State): the operators inside it do not check them again.
# A context variable, so that calls running at once in threads or asyncio tasks each keep their own.
_OPTIONS_CHECKED: ContextVar[bool] = ContextVar("ragkit_options_checked", default=False)


@contextmanager
def model_named(name: str) -> Iterator[None]:
    """Name a model that cannot be loaded with the ``model`` parameter of the operator ``name``
    (``dense.model: model 'x' is neither a local folder nor ...``): models load lazily, at their first use in
    a fit or search, where the loader's :class:`ParamError` names no operator (its path is ``"model"``)."""
    try:
        yield
    except ParamError as e:
        if e.path != "model":
            raise
        raise ParamError(f"{name}.model: {e}", path=f"{name}.model") from None


@contextmanager
def options_checked() -> Iterator[None]:
    """Within it, operators called on a :class:`State` take its ``options`` as already checked
    (:meth:`Pipeline.search <ragkit.pipelines.Pipeline.search>` checks them once, before any work)."""
    token = _OPTIONS_CHECKED.set(True)
    try:
        yield
    finally:
        _OPTIONS_CHECKED.reset(token)


_log = logging.getLogger("ragkit")

# The ids of the operators whose attributes a fit in progress in this context restores should it fail (the tree of
# the outermost fit: :func:`restored_on_failure`); a fit inside it (a composite's children's) takes no snapshot of
# its own.  A context variable: fits running at once in threads each keep their own.
_RESTORING: ContextVar[frozenset[int]] = ContextVar("ragkit_restoring", default=frozenset())
# The releases (after_fit) waiting for the outermost restoring fit in progress to succeed; None outside one.
_AFTER_FIT: ContextVar[Optional[list[Callable[[], None]]]] = ContextVar("ragkit_after_fit", default=None)


def tree_nodes(op: "Operator") -> list["Operator"]:
    """Every node of ``op``'s tree as :meth:`Operator.children` gives it now: ``op``, its composites and
    leaves, depth first, each object once."""
    nodes: list[Operator] = []
    seen: set[int] = set()
    stack = [op]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            nodes.append(node)
            stack.extend(reversed(node.children()))
    return nodes


@contextmanager
def restored_on_failure(ops: Sequence["Operator"]) -> Iterator[None]:
    """Within it, an exception of any kind (an error, ``KeyboardInterrupt``) puts the attributes of every
    operator of ``ops`` back as they were when it began, then propagates unchanged: a fit that raises leaves
    each operator fitted as before, or unfitted.  The snapshot is each operator's attribute dict, copied
    shallow (references: no array is copied), so the fits inside must assign new state rather than change
    the earlier state's objects in place (every ``_fit`` does).  Operators a snapshot of an enclosing
    ``restored_on_failure`` already holds are left to it: a pipeline's fit snapshots its whole tree once, and
    the fits of its composites and leaves inside it take none of their own."""
    held = _RESTORING.get()
    before = [(op, dict(vars(op))) for op in ops if id(op) not in held]
    if not before:
        yield
        return
    token = _RESTORING.set(held | {id(op) for op, _ in before})
    pending: list[Callable[[], None]] = []
    after = _AFTER_FIT.set(pending) if _AFTER_FIT.get() is None else None  # the outermost gathers the releases
    try:
        yield
    except BaseException:
        for op, attrs in before:
            vars(op).clear()
            vars(op).update(attrs)
        raise  # (``pending`` dropped: what it would have released is the restored state's again)
    else:
        if after is not None:  # (the outermost)
            _AFTER_FIT.reset(after)
            after = None
            for release in pending:
                try:
                    release()
                except Exception as e:  # noqa: BLE001 - the fit succeeded; a cleanup that fails is said, not raised
                    _log.warning(f"after a fit: releasing the earlier fit's resources failed ({type(e).__name__}: "
                                 f"{e})")
    finally:
        _RESTORING.reset(token)
        if after is not None:
            _AFTER_FIT.reset(after)


def after_fit(release: Callable[[], None]) -> None:
    """Run ``release`` once the outermost fit in progress has succeeded (at once when no fit that restores on
    failure, :func:`restored_on_failure`, is in progress); never when it fails.  For what a fit frees of the
    state it replaces, outside the operator's attributes (a ``sharded`` retriever's earlier Ray actors and shard
    folder): a pipeline whose fit fails later puts the earlier state back, which must still have them."""
    pending = _AFTER_FIT.get()
    if pending is None:
        release()
    else:
        pending.append(release)


# The fitted state (:meth:`Operator._search_view`) each operator searched by :meth:`Operator.search` in this context
# reads: taken once, before the search reads the operator's corpus, so an edit on another thread meanwhile (an add)
# changes neither what the search scores nor the rows it maps (id(op) -> (op, view)).  A context variable: searches
# running at once in threads each keep their own.
_PINNED_VIEWS: ContextVar[Optional[dict[int, tuple["Operator", Any]]]] = ContextVar("ragkit_pinned_views",
                                                                                   default=None)


@contextmanager
def pinned_view(*ops: "Operator") -> Iterator[None]:
    """Within it, the searches of each of ``ops`` in this context read the state :meth:`Operator._search_view`
    gives now (none pinned where it gives ``None``): :meth:`Operator.search` takes it before the search reads
    ``op.corpus_`` (a pipeline's search would pin its leaves so, before it reads their shared corpus)."""
    views = {id(op): (op, view) for op in ops if (view := op._search_view()) is not None}
    if not views:
        yield
        return
    token = _PINNED_VIEWS.set({**(_PINNED_VIEWS.get() or {}), **views})
    try:
        yield
    finally:
        _PINNED_VIEWS.reset(token)


def searched_ids() -> np.ndarray | None:
    """The document ids the search in progress in this context maps rows with (its corpus's, read once when it
    began: :meth:`Pipeline.search <ragkit.pipelines.Pipeline.search>`); ``None`` outside a search (an operator
    called on a State directly)."""
    from ragkit.pipelines._compose import _TRACE_IDS

    return _TRACE_IDS.get()


def is_prefix(old: Corpus, new_ids: np.ndarray) -> bool:
    """Whether every row of ``old`` is the same document's row in the corpus of ids ``new_ids``: the same ids (an
    identity check first), or ``old``'s with documents appended (``add``).  Compares ids (one pass) only where
    they are not the same array: a search that overlapped an edit."""
    ids = old.ids
    if ids is new_ids:
        return True
    n = len(ids)
    return len(new_ids) >= n and bool(np.array_equal(np.asarray(new_ids[:n]), ids))


def edited_during_search(who: str, detail: str) -> DataError:
    """The error of a search of operator ``who`` during which its index was edited beyond what the search can
    answer through (``add`` / ``remove`` on another thread), with ``detail`` (what no longer matched)."""
    return DataError(f"{who}: the index was edited (add / remove on another thread) during the search ({detail}); "
                     "search again, between edits: edit through RagkitRetriever (add_documents / delete), whose "
                     "edits every search of the pipeline waits for")


# True while Pipeline.load loads the steps of a folder whose manifest checksums it has just verified: the
# steps load with verify=False (their files are checked already) yet count as verified.
_CHECKSUMS_VERIFIED: ContextVar[bool] = ContextVar("ragkit_checksums_verified", default=False)


@contextmanager
def checksums_verified(verified: bool) -> Iterator[None]:
    """Within it, an operator loaded with ``verify=False`` counts as verified when ``verified`` is true
    (its folder's files were checked against a pipeline manifest's SHA-256 sums): a memory-mapped
    BM25 then skips its own scan of the ids and weights, as a verified ``Operator.load`` does."""
    token = _CHECKSUMS_VERIFIED.set(verified)
    try:
        yield
    finally:
        _CHECKSUMS_VERIFIED.reset(token)


# False while an operator is loaded only to be checked (``ragkit validate``): no search follows, so a step that
# searches with PyTorch (``uses_torch``) does not import it (:func:`warm_torch`, ~2 s) at its load.
_WARM_TORCH: ContextVar[bool] = ContextVar("ragkit_warm_torch", default=True)


@contextmanager
def without_torch_warming() -> Iterator[None]:
    """Within it, :meth:`Operator.load` does not import PyTorch for a step that searches with it
    (:func:`warm_torch`): for a load that no search follows (``ragkit validate`` checks a saved folder).  A
    search of such a step still works: PyTorch is then imported by the search itself."""
    token = _WARM_TORCH.set(False)
    try:
        yield
    finally:
        _WARM_TORCH.reset(token)


def check_state(op: "Operator", state: object) -> None:
    """Refuse calling ``op`` on anything but a :class:`State` (``pipe(["a query"])``, ``bm25("a query")``)
    with a ``TypeError`` that points to ``search``, instead of an ``AttributeError`` from deep inside."""
    if not isinstance(state, State):
        cls = type(op).__name__
        raise InputTypeError(
            f"{cls}.__call__ takes a ragkit State (the batch an operator transforms inside a pipeline), got "
            f"{type(state).__name__} {state!r:.60}; to search queries (a list of str, one str or a Queries) call "
            f".search(queries), which returns a Run, or call it on State.of(queries)")


def call_checked(op: "Operator", state: State, call: Callable[[State], State]) -> State:
    """``call(state)``, with ``state.options`` first checked and converted by ``op.checked_options``
    when ``op`` is the outermost operator called (not one run inside a search or another operator's
    call, whose options were checked there).  Calling an operator directly on a ``State`` that carries
    options (``pipe(State(queries, options={"bm25": {"kk": 3}})``) thus refuses what ``search``
    refuses, instead of ignoring a misspelt option, and reads them as ``search`` reads its keywords:
    a top-level ``k`` is the final number of results per query, as ``search(queries, k=...)``'s (every
    step fetches or keeps at least ``k``, and the outermost call's rankings are cut to ``k``:
    :func:`cut_to_k`).  Anything but a ``State`` is a ``TypeError`` (:func:`check_state`)."""
    check_state(op, state)
    if not state.options or _OPTIONS_CHECKED.get():
        return call(state)
    state = replace(state, options=op.checked_options(state.options))
    with options_checked():
        out = call(state)
    return cut_to_k(out, state.options.get("k"))


def without_stale_vectors(state: State, out: State, who: str) -> State:
    """``out`` (what an operator returned for ``state``) without the query vectors it carried over from ``state``
    where it changed the query text (:meth:`State.texts <ragkit.types.State.texts>`: a rewriter's
    ``values["query_text"]``): they encode the text it was given, which the steps after it no longer search, and
    ``State.vectors`` is keyed by encoder only, so a dense step after it would take them for the new text's (in a
    list ``[dense, rewrite, dense]``, or a parallel branch ``[rewrite, dense]`` after a branch that encoded the
    query).  Carried over: the same array object as ``state``'s under that key (``state.copy()`` copies the dict,
    not the arrays), or one holding the same values on the queries whose text changed (a rewriter of some queries
    only, built on :meth:`State.subset <ragkit.types.State.subset>` and :meth:`State.merge
    <ragkit.types.State.merge>`, returns copies); a step that encodes the new text puts other values there.  ``out``
    itself when the text is unchanged (the same ``query_text`` object, or a copy of its list: its strings compared by
    identity); else ``out`` with a new ``vectors`` dict (the dict it returned is not changed).  The values are
    compared on the changed queries only, and only when a text changed (:func:`~ragkit._results.same_query_text`,
    whose ``DataError`` names ``who``, the step, where a ``query_text`` is not a list)."""
    if not out.vectors or out is state or same_query_text(state, out, who):
        return out
    new, old = out.texts(), state.texts()
    changed = np.fromiter((a != b for a, b in zip(new, old)), bool, len(new))
    was = state.vectors
    out.vectors = {key: vec for key, vec in out.vectors.items() if not _carried_over(was.get(key), vec, changed)}
    return out


def _carried_over(was: np.ndarray | None, vec: np.ndarray, changed: np.ndarray) -> bool:
    """Whether the query vectors ``vec`` a step returned are those it was given (``was``, under the same key) on the
    queries whose text it changed (``changed``, a mask over the batch): the same array, or equal values there."""
    if was is None:
        return False
    if vec is was:
        return True
    vec, was = np.asarray(vec), np.asarray(was)
    return vec.shape == was.shape and np.array_equal(vec[changed], was[changed])


def cut_to_k(state: State, k: int | None) -> State:
    """``state`` with each ranking cut to its first ``k`` documents (:meth:`Ranking.head
    <ragkit.types.Ranking.head>`), as :meth:`Pipeline.search <ragkit.pipelines.Pipeline.search>` cuts its
    results to the call's ``k``; ``state`` itself when ``k`` is ``None`` (no final number given) or it holds
    no rankings.  ``k`` is the checked top-level ``k`` (:func:`~ragkit.options.positive_k`).  A new
    ``State`` (its input is not changed): one ``head`` per query, which returns the ranking itself when
    it holds ``k`` or fewer."""
    if k is None or state.rankings is None:
        return state
    return replace(state, rankings=[r.head(k) for r in state.rankings])


class _StepFolderError(ArtifactError):
    """:meth:`Operator.load` of one step's folder of a saved pipeline (``saved/ops/00-bm25``), which is loaded with
    its pipeline (its documents and checksums are there): :attr:`pipeline_folder` is that pipeline's folder, and
    :attr:`python_advice` the message's end, said to a Python caller (``load that folder with
    Pipeline.load('saved')``), which the command line says in its own terms."""

    pipeline_folder: Path
    python_advice: str

    @classmethod
    def of(cls, folder: Path, whole: Path) -> "_StepFolderError":
        """The error of the step's ``folder`` of the pipeline saved at ``whole``."""
        advice = f"load that folder with Pipeline.load({str(whole)!r})"
        e = cls(f"{folder}: one step of the saved pipeline at {whole} (its documents are saved there): {advice}")
        e.pipeline_folder, e.python_advice = whole, advice
        return e


class _ParamsSignature:
    """``Operator.__signature__``: the constructor's signature as the class's ``Params`` model spells it,
    ``(params=None, /, *, k: int = 100, k1: float = 0.9, ...)``, for ``inspect.signature(BM25)``,
    ``help(BM25)`` and notebook completion (the constructor itself takes ``**kwargs``).

    Only on the class, for an operator whose constructor is the base one's ``(params=None, /, **kwargs)``
    (a composite, with no model of its own, keeps its own); an instance has none, so
    ``inspect.signature(bm25)`` is its ``__call__``'s."""

    def __get__(self, obj: object, owner: type | None = None) -> inspect.Signature:
        if obj is not None or owner is None or not issubclass(owner, Operator):
            raise AttributeError("__signature__")
        model = owner.Params
        if model is ParamsModel or _init_params(owner) != _BASE_INIT:
            raise AttributeError("__signature__")  # inspect reads the constructor itself
        P = inspect.Parameter
        fields = [P(name, P.KEYWORD_ONLY, annotation=f.annotation,
                    default=P.empty if f.is_required() else f.get_default(call_default_factory=True))
                  for name, f in model.model_fields.items()]
        first = P("params", P.POSITIONAL_ONLY, default=None, annotation=Optional[Union[model, Mapping[str, Any]]])
        return inspect.Signature([first, *fields], return_annotation=None)


def _init_params(cls: type) -> list[tuple[str, Any]]:
    """``(name, kind)`` of each parameter of ``cls.__init__`` after ``self``."""
    return [(p.name, p.kind) for p in list(inspect.signature(cls.__init__).parameters.values())[1:]]  # type: ignore[misc]


_BASE_INIT = [("params", inspect.Parameter.POSITIONAL_ONLY), ("kwargs", inspect.Parameter.VAR_KEYWORD)]


#: :attr:`Operator.Params` (see there)
_PARAMS_MODEL: type[ParamsModel] = ParamsModel


class Operator:
    """Base class of all operators.

    Class attributes
    ----------------
    name : str
        Registry name, the YAML key (``"bm25"``).
    kind : str
        ``retriever``, ``reranker``, ``filter``, ``fuser``, ``router``, ``judge``, ``rewriter`` or
        ``generator`` (:data:`ragkit.registry.KINDS`); ``composite`` for the structural operators
        (``Pipeline``, ``Parallel``, ``Route``, ``Loop``) only, which are not registered.
    Params : type[Params]
        The parameter model.
    example : dict
        Small, fast parameters used by the conformance suite.
    stateless : bool
        ``True`` when ``fit`` learns nothing from the corpus (fusers, cut-offs): such an
        operator may be called without ``fit``.  Otherwise what ``fit`` learns is kept in public
        attributes ending in ``_`` (``self.table_``), which ``_save`` writes and ``_load`` restores
        (:meth:`load` refuses a folder whose ``_load`` left one of them unset).
    applies_filter : bool
        A retriever that applies the metadata ``filter`` (:meth:`filter_mask`); a ``filter`` given to
        one that does not is refused.
    reads_lexical_query : bool
        A retriever that searches ``state.texts(lexical=True)``, which ``prf`` expands.
    run_options : dict of str -> OptionCheck or None
        The run-time options this class reads with :meth:`opt` (``search(..., bm25={"n_jobs":
        4})``), each with how :func:`ragkit.options.check_options` checks it before a search
        starts: :data:`~ragkit.options.PARAM` (a field of ``Params`` of the same name, validated
        as at construction) or a function ``(operator, value, corpus) -> value``.  Retrievers also get
        ``k`` and ``filter`` (:meth:`declared_options`); ``None`` removes an inherited one.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[registry.Kind | Literal["composite", "operator"]] = "operator"
    #: (not annotated: pyright then reads a subclass's ``Params = BM25Params`` as ``type[BM25Params]``, so
    #: ``BM25.Params(k=4)`` is typed, where an annotation here fixes it to ``type[Params]`` in every subclass; the
    #: value typed ``type[Params]``, not the class itself, which mypy would read as the constructor ``() -> Params``
    #: and then refuse a subclass's model with a required field)
    Params = _PARAMS_MODEL
    example: ClassVar[dict[str, Any]] = {}
    stateless: ClassVar[bool] = False
    #: ``True`` when a search calls into PyTorch (``torch.topk``, ``torch.bmm``): ``fit`` and ``load``
    #: import it, so the first search does not pay the ~2 s import (nor report it as search time)
    uses_torch: ClassVar[bool] = False
    #: ``True`` when it works on the rankings of the steps before it (every reranker and filter, a
    #: generator; a router of a route): placed before the first retriever of its list it would change
    #: nothing, so the pipeline is refused when it is built or fitted
    #: (:func:`~ragkit.pipelines._checks.unranked_router`), not at its first search; a ``rewriter`` that sets
    #: it is accepted there in a loop's body, whose later iterations give it the previous one's rankings
    reads_rankings: ClassVar[bool] = False
    #: What the message of a ``reads_rankings`` step called on a state without rankings adds after "put a retriever
    #: before it" (a :class:`~ragkit.errors.DataError` of :meth:`__call__`): another way out where there is one,
    #: as ``" (e.g. bm25), or route on the query text with rule_router"`` for the score router
    unranked_hint: ClassVar[str] = ""
    #: ``True`` on a retriever whose ``_call`` applies the metadata ``filter``: it keeps only the rows that
    #: :meth:`filter_mask` allows (or passes the filter on to a retriever that does, as ``sharded``).  A
    #: ``filter`` given to a retriever without it (``search(q, filter=...)``, or its own ``filter`` option) is
    #: refused with a :class:`~ragkit.errors.ParamError`, never ignored: its results would hold documents the
    #: filter excludes (another tenant's, through LangChain's ``search_kwargs``)
    applies_filter: ClassVar[bool] = False
    #: ``True`` on a retriever that searches with ``state.texts(lexical=True)``, so reads the expanded query a
    #: ``prf`` before it writes (``bm25``); ``prf`` is refused before a retriever without it (it would change
    #: nothing)
    reads_lexical_query: ClassVar[bool] = False
    #: attributes ending in ``_`` that a save does not hold, rebuilt by ``_load`` or attached after it (the
    #: chat model of ``generate``'s langchain backend): :meth:`load` does not require them
    unsaved: ClassVar[frozenset[str]] = frozenset()
    #: conformance checks known to fail, ``{check name: reason}``
    xfail_checks: ClassVar[dict[str, str]] = {}
    run_options: ClassVar[Mapping[str, OptionCheck | None]] = {}
    if not TYPE_CHECKING:  # (the annotation at run time only: type checkers read the type from ``__init__``)
        #: the validated parameters; a subclass annotates it with its own model (``params: BM25Params``).  Type
        #: checkers take its type from ``__init__``'s assignment instead of this declaration: pyright holds a
        #: declared attribute invariant and refused a subclass's narrower ``params: BM25Params``
        #: (reportIncompatibleVariableOverride), while an undeclared one may be narrowed (mypy accepts both)
        params: ParamsModel
    #: set by :meth:`load` before ``_load``: the folder's checksums were verified (a memory-mapped load may
    #: then skip reading its files whole for its own checks)
    _verified: bool = False
    #: set by ``_load`` where the save it read was written by an older ragkit whose ranking this one does not
    #: reproduce (it logged a warning naming the folder): why, in a few words; ``None`` (ranks as saved)
    #: otherwise.  :func:`~ragkit.pipelines.store.load_pipeline` reads it before saying a pipeline ranks as saved.
    _older_save: str | None = None
    #: the constructor's parameters as ``Params`` spells them (:class:`_ParamsSignature`)
    __signature__: ClassVar[Any] = _ParamsSignature()

    def __init__(self, params: ParamsModel | Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        if params is not None and kwargs:
            raise ParamError(f"{self.name}: pass parameters either as a Params object or as keywords, not both")
        self.params = validate_params(self.Params, params if params is not None else kwargs, self.name)

    if not TYPE_CHECKING:  # (at run time only: to a type checker a __setattr__ would make any attribute assignable)
        def __setattr__(self, key: str, value: Any) -> None:
            """``op.params = ...`` (a model or a mapping of every parameter to change from the defaults) is
            validated into the class's ``Params`` as the constructor validates it (a :class:`ParamError` naming the
            operator and the field), so a bad value is refused at the assignment, not at a later search."""
            if key == "params":
                value = validate_params(type(self).Params, value, self.name)
            super().__setattr__(key, value)  # (a mixin's own __setattr__, torch.nn.Module's, still runs)

    # ------------------------------------------------------------------ introspection
    def __repr__(self) -> str:
        try:
            args = ", ".join(f"{k}={v!r}" for k, v in self.params.non_default().items())
        except Exception as e:  # noqa: BLE001 - a repr never raises (a Params model built without validation)
            args = f"<parameters not shown: {type(e).__name__}>"
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Operator) and type(self) is type(other) and self.params == other.params

    __hash__ = object.__hash__

    def to_dict(self) -> dict[str, Any]:
        """``{name: {non-default params}}``: this operator's YAML node."""
        return {self.name: self.params.non_default()}

    def to_yaml(self) -> str:
        """This operator as a one-step YAML pipeline."""
        from ragkit.pipelines import Pipeline

        return Pipeline([self]).to_yaml()

    @property
    def is_fitted(self) -> bool:
        """Whether the operator can search: a stateless one (:attr:`stateless`: a fuser, a cut-off) always; any
        other once :meth:`fit` (or :meth:`load`) set what it learned, public attributes ending in ``_``
        (``corpus_``, ``table_``).  A composite overrides it (all of its steps fitted)."""
        return self.stateless or any(k.endswith("_") and not k.startswith("_") for k in tuple(vars(self)))

    def _check_fitted(self) -> None:
        if not self.is_fitted:  # an operator that refuses to fit without judged queries says so
            how, whole = (("fit(corpus, train=TrainSet(queries, qrels))", "Pipeline.fit(corpus, train)")
                          if self.needs_train else ("fit(corpus)", "Pipeline.fit(corpus)"))
            raise NotFittedError(f"{type(self).__name__} ({self.name!r}) is not fitted yet; call {how} first "
                                 f"(or {whole} on the pipeline that holds it)")

    def children(self) -> list["Operator"]:
        """Sub-operators of a composite (empty for a leaf)."""
        return []

    # ------------------------------------------------------------------ protocol
    def fit(self, corpus: Corpus, train: TrainSet | None = None, *, upstream: State | None = None,
            backend: str = "local") -> Self:
        """Build indexes and learn parameters from ``corpus`` (and the training split ``train``).

        Returns ``self``.  ``upstream`` is the output of the preceding pipeline steps on the
        training queries, given only to operators with ``wants_upstream = True``.
        ``backend="ray"`` encodes the corpus's sentence vectors on Ray first, as
        ``Pipeline.fit(..., backend="ray")`` does (see :func:`fit_on_backend`).
        A fit that raises leaves the operator as it was before it (fitted as before, or unfitted).

        What the fit would refuse is refused before any work (a model loaded, the corpus encoded): inputs of
        the wrong type, no training split where it needs one, a ``filter`` the corpus cannot serve, and a
        package it needs that is not installed (:func:`~ragkit.pipelines._checks.check_ready`: a
        :class:`~ragkit.errors.MissingExtraError` at ``dense.adapt: ...`` without the ``train`` extra), as a
        pipeline's fit refuses them at the step's path.  A step fitted by a pipeline's fit is not checked again:
        that fit checked its whole tree before fitting any step.
        """
        if backend != "local":
            with restored_on_failure([self]):  # (what the Ray backend sets before the fit too)
                return fit_on_backend(self, corpus, train, upstream, backend)
        check_fit_inputs(corpus, train, f"{self.name}.fit")
        refusal = self.train_refusal() if train is None else None
        if refusal is not None:  # before any state changes: a refused refit keeps what was fitted
            raise refusal
        if train is not None and not train.labelled and self.learns:  # TrainSet(queries): a query bank only
            raise train.unlabelled_refusal(f"{self.name}.fit")
        own = getattr(self.params, "filter", None)
        if own is not None:  # a field the corpus lacks, or a value of another type than the field's (year: "2001"
            # for integers), would fail every search, after the whole fit: refused as Pipeline.fit refuses them
            try:
                filter_option(self, own, corpus)
            except (TypeError, ValueError) as e:
                raise ParamError(f"{self.name}.filter: {e}", path=f"{self.name}.filter") from None
            try:
                corpus.mask(own)  # (the column's codes it builds are those every search's filter reads)
            except DataError as e:  # filter.year: the field holds int values; ... -> bm25.filter.year: ...
                from ragkit.pipelines._compose import placed_at

                raise placed_at(e, f"{self.name}.filter", "filter") from None
        if id(self) not in _RESTORING.get():  # fitted on its own: a step of a pipeline's fit (of a composite's, or
            # of the Ray backend's above) is inside the fit that checked its whole tree (check_trainable) already
            from ragkit.pipelines._checks import check_ready

            check_ready(self, corpus, train, path="")  # (dense.adapt without the train extra: before the model loads)
        # a fit that raises (an error, Ctrl-C) leaves the operator as it was: its earlier fit whole, or unfitted,
        # never ``corpus_`` of the new corpus beside state of the old one (a search would then score the old
        # documents and report the new corpus's ids at their rows). Every attribute is put back as it was
        # (each ``_fit`` here assigns new state rather than changing the earlier state's objects in place);
        # inside a pipeline's fit, the pipeline's snapshot of its whole tree does it.
        with restored_on_failure([self]), model_named(self.name):
            self.corpus_ = corpus
            self._fit(corpus, train, upstream)
            self.trained_on_ = (query_digests(self.training_queries_read(train))
                                if train is not None and self.uses_training_queries else None)
        if self.uses_torch:
            warm_torch()
        return self

    def __call__(self, state: State) -> State:
        """Transform a batch of queries: ``_call(state)``, checked.  To search queries (a list of strings),
        use :meth:`search`; anything but a ``State`` is a ``TypeError``.

        A step that works on the rankings before it (``reads_rankings``, a rewriter aside) called on a state
        without rankings is a :class:`~ragkit.errors.DataError`, before its ``_call`` runs.

        ``_call`` returns a new :class:`State` (``out = state.copy()``, then ``out.rankings = [...]`` of new
        :class:`Ranking` objects) and must not change its input: neither ``state`` nor its rankings' arrays
        in place (``r.rows[:] = ...``: they are read-only, a ``ValueError``).  The input may be shared: a
        :class:`~ragkit.pipelines.Parallel` gives the same rankings to each of its branches.
        What it returns must be a ``State`` of the same queries, with ``None`` (only when it was given none,
        and not from a retriever) or one ``Ranking`` per query whose rows are rows of the corpus searched, each
        once, by finite scores sorted best first; anything else is a :class:`~ragkit.errors.DataError` naming
        the operator and the query (:func:`~ragkit._results.check_result`).  A retriever's rankings longer than
        :meth:`k_for` are cut to it.  A step that rewrites the query text (``values["query_text"]``) returns no
        query vectors of the text it was given: those it carried over from its input are dropped
        (:func:`without_stale_vectors`), so that a dense step after it encodes the new text.
        """
        check_state(self, state)
        self._check_fitted()
        # one rule for every step that reads rankings (each said it its own way, or passed None on silently); a
        # rewriter that reads them (prf) is given none on a loop's first iteration, and rewrites nothing then
        if state.rankings is None and self.reads_rankings and self.kind != "rewriter":
            raise DataError(f"{type(self).__name__} ({self.name!r}) works on the rankings of the steps before it; "
                            f"the state has none: put a retriever before it{self.unranked_hint}")
        if self.kind == "retriever" and not self.applies_filter and state.options:
            refuse_unapplied_filter(self, state.options)
        with model_named(self.name):
            before = self.__dict__.get("corpus_")  # (check_result says a concurrent edit when it changed)
            out = check_result(self, state, call_checked(self, state, self._call), corpus_before=before)
        return without_stale_vectors(state, out, f"{type(self).__name__}._call ({self.name!r})")

    @property
    def wants_upstream(self) -> bool:
        """``True`` when ``fit`` needs the output of the steps before it on the training queries (a
        learned filter); :class:`~ragkit.pipelines.Pipeline` then passes it.  A subclass overrides it."""
        return False

    @property
    def needs_train(self) -> bool:
        """``True`` when ``fit`` refuses to run without judged queries (``train``), as set by the
        parameters (``adapt``, ``learn: true`` thresholds, ``norm: learn``); a subclass overrides it."""
        return False

    @property
    def learns(self) -> bool:
        """Whether ``fit`` given judged queries (``train``) learns from them: every ``needs_train``
        operator, and one that learns when given them but also fits without (a fuser with
        ``learn: true`` keeps its given weights then).  A route's branches that learn are fitted
        on the training queries the router sends them."""
        return bool(self.needs_train)

    @property
    def uses_training_queries(self) -> bool:
        """Whether ``fit`` given training queries differs from ``fit`` without them: it learns from
        their judgements (:attr:`learns`), or reads the queries themselves (``dbnorm``'s query bank)."""
        return self.learns

    def training_queries_read(self, train: TrainSet) -> Queries:
        """The queries of ``train`` a fit of this operator reads (recorded for :meth:`learned_from`): the
        judged ones (:meth:`TrainSet.judged`) for one that learns from judgements, so queries given without
        judgements (a split's qrels, every split's queries) stay held out; every one for one that reads the
        queries themselves (``dbnorm``'s query bank).  A subclass that reads others overrides it."""
        return train.judged() if self.learns else train.queries

    def learned_from(self, queries: Queries) -> list[str]:
        """The ids of ``queries``, in their order, that a fit of this operator or of one inside it
        learned from (given in ``fit(corpus, train=...)`` with the same id and text): scores on them
        measure what was taught, not held-out quality (``ragkit eval`` refuses to score a saved
        pipeline on them).  Recorded by every fit that uses its training queries
        (:attr:`uses_training_queries`; the judged ones for a learner, :meth:`training_queries_read`;
        a refit without them forgets) and saved with the operator
        (``trained_queries.npy``: two 64-bit digests per query, :func:`~ragkit._fingerprints.query_digests`; no text).

        A query of ``queries`` not listed whose text (:func:`~ragkit.types.normalised_text`: whitespace and
        case aside) is a learned query's, under another id, is warned of on the ``ragkit`` logger (count and
        ids): a test question put in the training set under a new id.  Not refused: SciFact's test split
        holds 2 queries with the text of train queries.  Operators saved before the text was recorded
        (one digest per query) are checked by id and text only."""
        taught, texts = taught_digests(self)
        if not len(taught) or not len(queries):
            return []
        mine = query_digests(queries)
        learned = np.isin(mine[:, 0], taught)
        if len(texts):
            same = np.flatnonzero(~learned & np.isin(mine[:, 1], texts))
            warn_same_text([queries.ids[i] for i in same], len(queries),
                           f"{self.name or type(self).__name__}.learned_from", "a query it learned from")
        return [queries.ids[i] for i in np.flatnonzero(learned)]

    def train_refusal(self) -> Exception | None:
        """The error ``fit`` raises when it gets no judged queries (``train=None``), or None when
        it can fit without them; :meth:`Pipeline.fit <ragkit.pipelines.Pipeline.fit>` asks every
        operator of the tree before fitting any.  Operators with ``needs_train`` override it
        with their own message."""
        if not self.needs_train:
            return None
        return ParamError(f"{self.name}: fit learns from judged queries; call fit(corpus, train=TrainSet(queries, "
                          f"qrels))")

    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        """Override: learn from the corpus.  The default learns nothing."""

    def _call(self, state: State) -> State:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement _call(state)")

    # ------------------------------------------------------------------ run-time options
    @classmethod
    def declared_options(cls) -> dict[str, OptionCheck]:
        """Every run-time option this class reads, ``{option: how it is checked}``.

        A retriever reads ``k`` (its parameter, raised to a per-call ``k``: :meth:`k_for`; only where its
        ``Params`` has a ``k`` field) and
        ``filter`` (:meth:`filter_mask`; one that does not set :attr:`applies_filter` refuses a filter
        given); then come the class's own ``run_options``, where ``None`` removes an option (a
        retriever that passes the filter on instead of applying it).
        """
        base: dict[str, OptionCheck | None] = (
            {**({"k": PARAM} if "k" in cls.Params.model_fields else {}),  # (no k parameter: it returns all it finds)
             "filter": filter_option if cls.applies_filter else _unapplied_filter_option}
            if cls.kind == "retriever" else {})
        return {key: how for key, how in {**base, **cls.run_options}.items() if how is not None}

    def check_run_options(self, options: Mapping[str, Any]) -> None:
        """Refuse run-time options that pass their own checks but not this fitted operator
        (``options``: this operator's, already checked and converted), with ``ValueError``
        ``"<option>: ..."``; called by :func:`~ragkit.options.check_options` before any work.
        Accepts everything by default."""

    def checked_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` of a :class:`State` this operator is called on directly, checked as ``search``
        checks its keywords before any work, so that a misspelt name raises
        :class:`~ragkit.errors.ParamError` instead of being ignored:

        * ``k`` by the rule of the call's ``k`` (:func:`~ragkit.options.positive_k`; ``options.k:
          expected a positive integer, got 'ten'``), converted to an ``int``;
        * under this operator's name (and its :meth:`option_children`'), every option must be one the
          class declares (:func:`~ragkit.options.check_option_names`: ``options.bm25.kk: unknown option
          ...``); the values, and ``filter``'s, are checked where the operator reads them, as before
          (a composite, the whole pipeline, checks and converts them all as ``search`` does);
        * any other key that is not an operator's registry name is refused as ``search`` refuses it
          (:func:`~ragkit.options.check_options`: ``options 'kk': not an option; expected k, filter, or an
          operator name: bm25 (did you mean 'k'?)``).  Another operator's name passes through: a single
          operator is also called with the options of the pipeline around it (a shard's retriever on a Ray
          worker).

        Runs once per call, not per query."""
        readers: dict[str, list[Operator]] = {}
        for _, op in option_readers(self):
            if op.name:
                readers.setdefault(op.name, []).append(op)
        out = dict(options)
        for key, value in options.items():
            if key == "k":
                out[key] = _positive_k(value, "options.")  # (the one rule of a run-time k, as search's)
            elif key in readers:
                check_option_names(key, value, readers[key], "options.")
            elif key != "filter" and not (isinstance(key, str) and key in registry.names()):
                check_options(self, {key: value}, where="options.")  # refuses it, worded as search's refusal
        return out

    def option_children(self) -> list[tuple[str, "Operator"]]:
        """Operators that read this operator's run-time options but are not its :meth:`children`,
        as ``(field, operator)`` (a sharded retriever's per-shard retriever); empty by default."""
        return []

    def opt(self, state: State, key: str, default: Any = None) -> Any:
        """A run-time override for this operator: ``options[self.name][key]``, else ``default``.

        ``key`` must be one of :meth:`declared_options`, which is what ``search`` accepts and
        checks; reading another is a bug in the operator, refused with ``TypeError``.
        """
        declared = self.declared_options()
        if key not in declared:
            cls = type(self).__name__
            raise TypeError(
                f"{cls}.opt(state, {key!r}): {key!r} is not a run-time option declared by {cls} (declared: "
                f"{', '.join(declared) or 'none'}); add it to {cls}.run_options so that search() accepts and "
                "checks it")
        per_op = state.options.get(self.name)
        if isinstance(per_op, Mapping) and key in per_op:
            return per_op[key]
        return default

    def k_for(self, state: State) -> int:
        """The number of results this retriever returns: its own ``k`` option exactly, else its
        ``k`` parameter raised to a per-call ``k`` (retrievers fetch at least the final number)."""
        param = self.params.k  # type: ignore[attr-defined]
        k = resolve_k(self.opt(state, "k"), param, state.options.get("k"), self.name)
        return k if k is not None else positive_k(param, f"{self.name}.k", f"{self.name}.k")  # (refuses None)

    def _search_view(self) -> Any:
        """The fitted state a search reads, taken in one read (an immutable object an edit replaces whole, never
        changes), or ``None`` (the default: this operator publishes none).  :meth:`search` pins it before the
        search reads ``corpus_`` (:func:`pinned_view`); ``_call`` reads it with :meth:`view_for_search`."""
        return None

    def view_for_search(self) -> Any:
        """What :meth:`_search_view` gave when :meth:`search` began, in the search in progress in this context
        (pinned by :func:`pinned_view`), else what it gives now."""
        pinned = _PINNED_VIEWS.get()
        if pinned is not None:
            got = pinned.get(id(self))
            if got is not None and got[0] is self:
                return got[1]
        return self._search_view()

    def checked_view(self) -> Any:
        """:meth:`view_for_search` (fitted), checked against the corpus the search in progress maps rows with
        (:func:`searched_ids`): where the operator was edited since the view, or the view holds more documents, its
        rows must be the same documents' rows there (a shard's corpus is a part of the search's), else
        :func:`edited_during_search`."""
        view = self.view_for_search()
        assert view is not None  # (fitted: checked by __call__)
        ids = searched_ids()
        if ids is not None and (view.corpus is not self.corpus_ or len(view.corpus) > len(ids)) and not is_prefix(
                view.corpus, ids):
            raise edited_during_search(self.name, f"the search maps rows with a corpus of {len(ids):,} documents, "
                                                  f"the index searched holds {len(view.corpus):,} others")
        return view

    def filter_mask(self, state: State, corpus: Corpus | None = None) -> np.ndarray | None:
        """Row mask of the metadata filter for one search, over ``corpus`` (default: the fitted corpus,
        ``self.corpus_``; a retriever searching a state it took at the search's start passes that state's).

        The ``filter`` parameter AND this operator's per-call ``filter`` option
        (``search(q, bm25={"filter": ...})``) AND the call's ``filter`` (``search(q, filter=...)``): a call
        narrows the configured filter, never widens it, even on the same field.  Each is read by
        :meth:`Corpus.mask <ragkit.types.Corpus.mask>`.

        Returns
        -------
        numpy.ndarray of bool, shape (n_docs,), or None
            ``True`` at the rows a search may return; ``None`` when no filter is set (every row), so a
            retriever can skip masking altogether.  The same mask for every query of the batch.
        """
        sources = [getattr(self.params, "filter", None), self.opt(state, "filter", None), state.options.get("filter")]
        masks = [m for m in map((self.corpus_ if corpus is None else corpus).mask, sources)
                 if m is not None]  # None: no filter
        if not masks:
            return None
        return np.logical_and.reduce(masks) if len(masks) > 1 else masks[0]

    # ------------------------------------------------------------------ composition
    def __or__(self, other: "Operator") -> "Pipeline":
        """``a | b``: the :class:`~ragkit.pipelines.Pipeline` that runs ``a`` then ``b`` on what ``a`` returns
        (``Pipeline([a, b])``; the steps of a pipeline on either side are spliced in, not nested).  A fuser
        after ``a + b`` becomes that parallel's fuser: ``(a + b) | RRF(k=60)``."""
        from ragkit.pipelines import Pipeline

        if not isinstance(other, Operator):
            if _reflected_elsewhere(other, "__ror__"):  # (a LangChain runnable: ``op | runnable`` is its to build)
                return NotImplemented
            raise _not_combinable(self, "|", other)
        return Pipeline([self]) | other

    def __add__(self, other: "Operator") -> "Parallel":
        """``a + b``: the :class:`~ragkit.pipelines.Parallel` that runs ``a`` and ``b`` on the same queries and
        fuses their rankings with ``RRF(k=60)`` (``Parallel([a, b])``; ``a + b + c`` has three branches).  Follow
        it with a fuser to choose another: ``(a + b) | WeightedFusion(weights=[0.7, 0.3])``."""
        from ragkit.pipelines import Parallel

        if not isinstance(other, Operator):
            if _reflected_elsewhere(other, "__radd__"):
                return NotImplemented
            raise _not_combinable(self, "+", other)
        return Parallel([self]) + other

    def search(
        self, queries: Queries | Sequence[str] | Mapping[str, str] | pd.Series | str, *, k: int | None = None,
        trace: bool = False,
        qrels: Mapping[str, Mapping[str, int]] | pd.DataFrame | str | os.PathLike[str] | None = None,
        relevance_level: int = 1, ignore_identical_ids: bool = True, **options: Any,
    ) -> "Run":
        """Search a batch of queries with this operator alone (a one-step :class:`~ragkit.pipelines.Pipeline`;
        :meth:`Pipeline.search <ragkit.pipelines.Pipeline.search>` is the same for several steps).

        Parameters
        ----------
        queries : Queries, list of str, str, or a mapping {query_id: text}
            One string is one query.  A list (tuple, numpy array) is numbered ``"q0", "q1", ...`` in its
            order; a mapping (or a pandas ``Series`` indexed by string ids) gives its ids.  A ``set`` is
            refused (its order, so its numbering, changes from run to run), as are a DataFrame, bytes and
            ``None``.
        k : int, optional
            Final number of results per query (a retriever fetches at least ``k``; default: its own ``k``).
        trace : bool
            ``True`` records per-step wall time, candidates in and out and (with ``qrels``) recall@100 and
            nDCG@10 in ``run.trace``.  Only ``True`` or ``False``.
        qrels : mapping {query_id: {doc_id: grade}}, DataFrame or path, optional
            Judgements for the trace's recall and nDCG; read by ``trace=True`` only (refused without it), in any
            form :func:`~ragkit.eval.evaluate` reads (:func:`~ragkit.types.as_qrels`): a DataFrame with one row
            per judgement, a qrels file's path.
        relevance_level, ignore_identical_ids
            How the trace scores its recall and nDCG, as :func:`~ragkit.eval.evaluate` reads them: the lowest
            grade that counts as relevant (an integer >= 1), and whether a document with its query's id is
            dropped (``True`` or ``False``).
        **options
            Run-time overrides: ``filter={field: value or [values]}`` (narrowing the operator's own ``filter``),
            or ``<operator name>={option: value}`` (``bm25={"n_jobs": 4}``): the options the class declares
            (:meth:`declared_options`), checked before any work.

        Returns
        -------
        Run
            One ranking per query, in the order of ``queries``: ``run.query_ids`` (n_q,), and per query at
            most ``k`` document ids with their scores, best first.

        Raises
        ------
        NotFittedError
            When the operator is not fitted (a stateless one needs no fit).
        ParamError
            Before any work, for a bad ``k``, ``trace``, ``relevance_level`` or ``ignore_identical_ids``, ``qrels``
            without ``trace=True``, or an unknown or bad option, naming it.
        DataError
            Before any work, for queries of the wrong shape (a set, one bytes, a DataFrame) or malformed ``qrels``.
        """
        from ragkit._locks import guarded
        from ragkit.pipelines import Pipeline

        check_search_arguments(queries, trace, qrels, f"{type(self).__name__}.search")
        if not self.is_fitted and not self.children():  # a leaf says it in its own words ("BM25 ('bm25') is not
            self._check_fitted()  # fitted yet"); a composite's pipeline names which of its steps is not
        # the state searched is taken before the pipeline reads the corpus (pinned_view): an add on another
        # thread meanwhile changes neither (the corpus read after it holds the state's rows, as the same rows)
        with guarded(self), pinned_view(self):  # a RagkitRetriever's add / delete of this operator waits for it
            pipe = Pipeline([self])
            if self.is_fitted and not self.stateless:
                pipe.corpus_ = self.corpus_
            return pipe.search(queries, k=k, trace=trace, qrels=qrels, relevance_level=relevance_level,
                               ignore_identical_ids=ignore_identical_ids, **options)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``params.json``, the fitted artifacts, ``corpus.jsonl`` and ``checksums.json``
        (SHA-256 of every other file, verified by :meth:`load`) to the folder ``path``.

        The folder names the operator by its ``name`` and records its class (``params.json``'s ``class``,
        ``module:qualname``) and whether that class was the one registered under the name (``registered``): a
        class that was not (unregistered, or a subclass that kept its parent's name) loads with its own
        ``load`` (``Fast.load(folder)``), and ``Operator.load`` refuses it rather than build the registered
        class from the folder.
        The folder is written under a temporary name and renamed into place, so an
        interrupted save never destroys the previous one, and a save during which the operator's
        documents changed (``add`` / ``remove`` on another thread) is refused before it replaces
        anything.  A leading ``~`` is the home folder.
        """
        from ragkit._locks import guarded

        folder = user_path(path, f"{type(self).__name__}.save: path")
        if self.is_fitted and hasattr(self, "corpus_"):
            check_savable(self)  # (before the folder is touched)
        with guarded(self), atomic_dir(folder) as tmp:  # a RagkitRetriever's edits of it wait for the save
            corpus = getattr(self, "corpus_", None)
            self.save_into(tmp, with_corpus=True)
            if getattr(self, "corpus_", None) is not corpus:  # (add / remove replace it: its files may mix both)
                raise DataError(f"{folder}: not saved: the operator's documents changed while it was written (add / "
                                "remove on another thread?); the earlier save there is unchanged: save again between "
                                "edits")
            write_json(tmp / CHECKSUMS, folder_checksums(tmp))

    def save_into(self, folder: Path, with_corpus: bool) -> None:
        """Write this operator's files into an existing (temporary) folder."""
        fitted = self.is_fitted and hasattr(self, "corpus_")
        meta = {
            "operator": self.name, "params": self.params.model_dump(mode="json"),
            "fitted": fitted, "format_version": FORMAT_VERSION, "ragkit_version": _version(),
            # (the class that saved it, and whether it was the one registered under its name, which Operator.load
            # builds: an unregistered one is refused there, loaded by its own load)
            CLASS_KEY: registry.class_path(type(self)), REGISTERED_KEY: registry.is_registered(self),
            **({"corpus": corpus_fingerprint(self.corpus_), TEXTS_KEY: corpus_texts_digest(self.corpus_),
                LEARNED_KEY: learned_attributes(self)} if fitted else {}),
        }
        if fitted:
            check_savable(self)
            before = {n for n in RESERVED_FILES if os.path.lexists(folder / n)}
            self._save(folder)  # (before params.json: a _save that writes one of the base class's files is caught)
            taken = sorted(n for n in RESERVED_FILES if os.path.lexists(folder / n) and n not in before)
            if taken:
                cls = type(self).__name__
                raise ParamError(f"{cls}._save ({self.name!r}) wrote {', '.join(taken)}, which ragkit writes beside "
                                 f"it ({', '.join(RESERVED_FILES)} belong to Operator.save: the operator's name and "
                                 f"parameters, the checksums, the documents); nothing was saved: give {cls}'s own "
                                 f"files other names (e.g. {cls.lower()}_{taken[0]})")
            digests: np.ndarray | None = getattr(self, "trained_on_", None)
            if digests is not None:
                save_arrays(folder, **{TRAINED: digests})
            if with_corpus:
                self.corpus_.save(folder / "corpus.jsonl")
        write_json(folder / "params.json", meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str], corpus: Corpus | None = None, *, mmap: bool = False,
             verify: bool = True) -> Self:
        """Load an operator saved with :meth:`save`.  ``mmap=True`` memory-maps large arrays/indexes (token vectors of
        ``muvera``/``maxsim``/``maxsim_exact`` are mapped whatever ``mmap`` says).

        The files' checksums (``checksums.json``) are verified first unless ``verify=False``
        (the artifacts' own checks still refuse a truncated or corrupt index).  A folder
        written by a pipeline or composite's ``save`` (``manifest.json``) loads as a
        :class:`~ragkit.pipelines.Pipeline`.  A leading ``~`` in ``path`` is the home folder.
        """
        folder = user_path(path, f"{cls.__name__}.load: path")
        mmap = check_flag(mmap, "mmap", f"{cls.__name__}.load")
        verify = check_flag(verify, "verify", f"{cls.__name__}.load")
        restore_interrupted_save(folder)
        if corpus is not None and not isinstance(corpus, Corpus):
            raise InputTypeError(f"{cls.__name__}.load: corpus must be the ragkit Corpus the operator was fitted on "
                                 f"(or None: the saved folder holds it), got {type(corpus).__name__}")
        if cls is Operator and (folder / "manifest.json").is_file() and not (folder / "params.json").exists():
            from ragkit.pipelines import Pipeline

            return cast("Self", Pipeline.load(folder, corpus=corpus, mmap=mmap, verify=verify))  # Self is Operator
        if not (folder / "params.json").is_file():  # (nothing there: an ArtifactNotFoundError, a FileNotFoundError)
            missing = ArtifactNotFoundError if not folder.exists() else ArtifactError
            raise missing(f"{folder}: {_not_an_operator_folder(folder)}")
        if _saved_pipeline_above(folder) is not None:  # a pipeline's step: load_pipeline watches its manifest
            return cls._load_folder(folder, corpus, mmap, verify)
        from ragkit.pipelines.store import load_unreplaced

        # a folder of its own: another process saving it again meanwhile would mix two saves' files
        return load_unreplaced(folder, CHECKSUMS, lambda: cls._load_folder(folder, corpus, mmap, verify))

    @classmethod
    def _load_folder(cls, folder: Path, corpus: Corpus | None, mmap: bool, verify: bool) -> Self:
        """:meth:`load` of the operator folder ``folder`` (``params.json`` there): its checks, then its files."""
        if verify and not (folder / CHECKSUMS).is_file():  # every save writes it: a changed folder lost it
            whole = _saved_pipeline_above(folder)
            if whole is not None:  # a pipeline's step: its manifest holds the checksums, and the documents
                raise _StepFolderError.of(folder, whole)
            interrupted = _interrupted_save(folder)
            if interrupted is not None:
                raise ArtifactError(f"{folder}: {interrupted}")
            raise ArtifactError(f"{folder}: no {CHECKSUMS} (Operator.save writes one) to verify the files against"
                                f"{_before_checksums(folder)}")
        if verify:  # (a step of a saved pipeline has none: Pipeline.load checks the manifest's, then loads it)
            from ragkit.pipelines.store import check_listed_files

            digests = read_json(folder / CHECKSUMS)
            if not isinstance(digests, dict):
                raise ArtifactError(f"{folder / CHECKSUMS}: expected a JSON object of file -> sha256; save the "
                                    "operator again")
            # every file it may read listed, and none a link (an operator reads the optional files it finds:
            # a linked or unlisted collection.json / corpus.jsonl was read unchecked), as Pipeline.load does
            listed = {saved_relpath(folder, rel, CHECKSUMS) for rel in digests}
            check_listed_files(folder, ".", listed, "the operator", "the operator", CHECKSUMS,
                               "save the operator again", own=CHECKSUMS, users_files=True)
            verify_checksums(folder, digests)
        meta = read_json(folder / "params.json")
        if not isinstance(meta, dict):
            raise ArtifactError(f"{folder / 'params.json'}: expected a JSON object (operator, params, fitted), got "
                                f"{type(meta).__name__}; save the operator again")
        for key in ("operator", "params", "fitted"):
            if key not in meta:
                raise ArtifactError(f"{folder / 'params.json'}: missing key {key!r}; not a ragkit operator folder")
        _check_meta_types(folder, meta)
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ArtifactError(
                f"{folder}: written by a newer ragkit (format {meta['format_version']}, this one reads "
                f"{FORMAT_VERSION}); upgrade ragkit"
            )
        try:
            op_cls = registry.get(meta["operator"]) if cls is Operator else cls
        except registry.UnknownOperatorError as e:  # (a plugin not imported: a save writes registered names only)
            said = registry.saved_unknown(e.name, '', meta.get('ragkit_version'), meta.get(CLASS_KEY),
                                          meta.get(REGISTERED_KEY))
            raise ArtifactError(f"{folder / 'params.json'}: {said}") from None
        if op_cls.name != meta["operator"]:
            raise ArtifactError(f"{folder}: holds a {meta['operator']!r} operator, not {op_cls.name!r}")
        saved_by = meta.get(CLASS_KEY)
        if cls is Operator and isinstance(saved_by, str) and meta.get(REGISTERED_KEY) is False \
                and not registry.is_class_path(op_cls, saved_by):
            # (saved by a class that was not the registered one: a subclass that kept its parent's name)
            raise ArtifactError(
                f"{folder / 'params.json'}: saved by {registry.shown_class_path(saved_by)}, which was not registered "
                f"under {meta['operator']!r} (the class registered so is {op_cls.__module__}.{op_cls.__qualname__}, "
                f"which Operator.load would build from it instead): load it with "
                f"{registry.class_name(saved_by)}.load(folder)")
        try:  # (validated as saved values: a renamed value's note says to save again, not to edit a file)
            op = op_cls(validate_params(op_cls.Params, meta["params"], op_cls.name, source="saved"))
        except registry.UnknownOperatorError as e:  # one named in its parameters (sharded.retriever: a plugin's)
            raise ArtifactError(f"{folder / 'params.json'}: "
                                f"{registry.saved_unknown(e.name, e.path, meta.get('ragkit_version'))}") from None
        except ParamError as e:  # name the file the parameters came from, not just the field, and why they differ
            why = saved_params_refused(op_cls, folder, meta, e, verify or _CHECKSUMS_VERIFIED.get())
            raise ArtifactError(f"{folder / 'params.json'}: {e}; {why}") from None
        if meta["fitted"]:
            if corpus is None:
                from ragkit.eval.beir import read_corpus

                whole = _saved_pipeline_above(folder)
                if whole is not None and not (folder / "corpus.jsonl").exists():
                    raise _StepFolderError.of(folder, whole)
                corpus = read_corpus(folder / "corpus.jsonl", allow_empty=True)
                if "corpus" in meta and corpus_fingerprint(corpus) != meta["corpus"]:
                    raise ArtifactError(
                        f"{folder / 'corpus.jsonl'}: holds {len(corpus):,} documents whose ids differ from the "
                        f"{meta['corpus']['n']:,} this operator was fitted on (params.json); the folder was changed "
                        "after it was saved: save the operator again")
                if TEXTS_KEY in meta and corpus_texts_digest(corpus) != meta[TEXTS_KEY]:
                    raise ArtifactError(
                        f"{folder / 'corpus.jsonl'}: holds the {len(corpus):,} document ids this operator was "
                        "fitted on, but texts or titles that differ from the ones it indexed (params.json records "
                        "a digest of them, not which document changed); the folder was changed after it was "
                        "saved: save the operator again, or refit it")
            elif "corpus" in meta and not op.stateless:
                # (a stateless step holds nothing of the corpus: it follows the pipeline's documents)
                _check_given_corpus(folder, meta, corpus)
            op.corpus_ = corpus
            # (an operator that skips a costly check of its mapped files reads it)
            op._verified = verify or _CHECKSUMS_VERIFIED.get()
            op._load(folder, mmap=mmap)
            op.trained_on_ = load_array(folder, TRAINED) if (folder / f"{TRAINED}.npy").is_file() else None
            _check_learned_loaded(op, folder, meta)
        if op.uses_torch and _WARM_TORCH.get():  # (not for a load only checked: without_torch_warming)
            warm_torch()
        return cast("Self", op)  # an instance of cls (of the class saved when cls is Operator)

    def _save(self, folder: Path) -> None:
        """Override: write fitted artifacts into ``folder`` (plain files only).  An operator whose ``fit``
        learns anything (sets attributes ending in ``_``) must override it and :meth:`_load`."""

    def _load(self, folder: Path, mmap: bool = False) -> None:
        """Override: restore fitted state from ``folder`` (``self.corpus_`` is already set): every attribute
        ending in ``_`` that ``fit`` set (:meth:`load` refuses the folder when one is missing after it)."""


# ---------------------------------------------------------------------- helpers
def check_flag(value: Any, name: str, where: str) -> bool:
    """``value`` of the on/off argument ``name`` as a ``bool``; anything but ``True`` / ``False`` (numpy's too) is a
    :class:`ParamError` at ``where``: ``verify="no"`` would otherwise be true, and verify."""
    if not isinstance(value, (bool, np.bool_)):
        raise ParamError(f"{where}: {name} must be True or False, got {type(value).__name__} {value!r:.80}",
                         path=name)
    return bool(value)


def check_search_arguments(queries: Any, trace: Any, qrels: Any, where: str = "search") -> None:
    """What ``search(queries, trace=..., qrels=...)`` refuses before any work (``where``: ``BM25.search``):
    a ``set`` of queries (numbered ``q0, q1, ...`` in an order that changes from run to run: the same query
    would get another id in the next process), a ``trace`` that is not ``True`` / ``False``, and ``qrels``
    without ``trace=True`` (only the trace reads them: they would be ignored).  The queries themselves and
    the qrels' shape are checked where they are read (:meth:`State.of <ragkit.types.State.of>`,
    :func:`~ragkit.types.as_qrels`)."""
    if isinstance(queries, (set, frozenset)):
        raise DataError(f"{where}: queries is a {type(queries).__name__} of {len(queries)}, whose order (so the ids "
                        "q0, q1, ... given in it) changes from run to run; pass a list (sorted(queries)), a mapping "
                        "{query_id: text} or Queries")
    check_flag(trace, "trace", where)
    if qrels is not None and not trace:
        raise ParamError(f"{where}: qrels is read by trace=True only (the trace's recall and nDCG per step); pass "
                         "trace=True with it, or leave it out (to score the run: ragkit.evaluate(run, qrels))",
                         path="qrels")


def _reflected_elsewhere(other: object, method: str) -> bool:
    """Whether the class of ``other`` defines the reflected operator ``method`` (``__ror__``) in Python, beyond
    the builtin and numpy types: a library's object (a LangChain runnable) that may combine with an operator
    itself, so :meth:`Operator.__or__` leaves it the choice."""
    for klass in type(other).__mro__:
        if method in vars(klass):
            return inspect.isfunction(vars(klass)[method])
    return False


def _not_combinable(op: Operator, sign: str, other: object) -> InputTypeError:
    """The error of ``op | other`` / ``op + other`` where ``other`` is no operator: what was written, what ``sign``
    builds, and what it combines."""
    from ragkit.pipelines._compose import not_an_operator

    what = ("chains operators into a Pipeline (a | b runs b on what a returns)" if sign == "|" else
            "runs operators side by side in a Parallel, fused with RRF(k=60)")
    return InputTypeError(f"{type(op).__name__}() {sign} {type(other).__name__}: {sign} {what}; both sides must be "
                          "operators (a retriever, reranker, filter, fuser, ... or a Pipeline / Parallel), got "
                          f"{not_an_operator(other)} on the right")


def fit_on_backend(op: T, corpus: Corpus, train: TrainSet | None, upstream: State | None, backend: str) -> T:
    """Fit ``op`` (an operator fitted on its own, not as a pipeline's step) with ``backend="ray"``:
    :func:`ragkit.scale.fit_pipeline` encodes the corpus's sentence vectors of every model ``op``'s
    fit reads on Ray, refusing first what a local fit refuses, then fits ``op`` in this process.
    Any other ``backend`` but ``"local"`` is a :class:`ParamError`.  Returns ``op``."""
    from ragkit.scale import fit_pipeline

    fit_pipeline(op, corpus, train, backend=backend, upstream=upstream, path="")
    return op


def check_fit_inputs(corpus: Any, train: Any, where: str) -> None:
    """Refuse a ``corpus`` that is not a :class:`Corpus` or a ``train`` that is not a :class:`TrainSet`
    (``TypeError`` naming ``where``, e.g. ``"bm25.fit"``, and how to build one), before a fit does any work."""
    if not isinstance(corpus, Corpus):
        raise InputTypeError(f"{where} expects a ragkit Corpus, got {type(corpus).__name__}{_corpus_hint(corpus)}")
    if train is not None and not isinstance(train, TrainSet):
        hint = ""
        if isinstance(train, tuple) and len(train) == 2:
            hint = " (from a (queries, qrels) pair: TrainSet(*pair))"
        elif isinstance(train, Mapping):
            hint = " (qrels {query_id: {doc_id: grade}} go in as its qrels, with the judged queries' texts)"
        raise InputTypeError(f"{where}: train must be a ragkit TrainSet, got {type(train).__name__}; build one "
                             f"with TrainSet(queries, qrels){hint}")


def _corpus_hint(given: Any) -> str:
    """How to build a :class:`Corpus` from ``given`` (what a fit got instead), as ``"; ..."``: a
    :class:`~ragkit.eval.BeirDataset` (its ``corpus``), one string, else what :class:`Corpus`'s own
    constructor error says (texts, records, LangChain documents, a DataFrame), else the two usual constructors."""
    inner = getattr(given, "corpus", None)
    if isinstance(inner, Corpus):  # a BeirDataset: its corpus, and its judged queries as a TrainSet
        learn = (" (and train=data.train_set('train') for a pipeline that learns from judged queries)"
                 if callable(getattr(given, "train_set", None)) else "")
        return f"; pass its corpus: fit(data.corpus){learn}"
    if isinstance(given, str):
        return "; for documents as strings use Corpus.from_texts([...]); for a BEIR folder, load_beir(path).corpus"
    return _other_constructor(given) or "; build one with Corpus.from_texts(texts) or Corpus.from_records(records)"


def warm_torch() -> None:
    """Import PyTorch now (when installed), not inside the first search that needs it."""
    try:
        import torch  # noqa: F401
    except ImportError:  # pragma: no cover - ragkit's dependencies bring it
        pass
