"""The ``sharded`` retriever (:class:`Sharded`): one ordinary retriever fitted per document shard, locally
or as Ray tasks, the shards searched (by Ray actors, :class:`_ShardActor`) and their rankings merged by score.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal, Mapping, NoReturn, Sequence

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from ragkit import _merge
from ragkit._files import user_path
from ragkit._merge import _FineFlat, _Flat, _flatten, _merge_flat, _split
from ragkit._plugins import _import_plugins, _plugin_modules
from ragkit._ray import (
    _FINAL,
    _PICKLING_ERRORS,
    _RAY_INSTALL,
    _TRANSIENT,
    ShardError,
    _check_cpus,
    _deterministic_errors_final,
    _drain,
    _Permanent,
    _reason,
    _registered,
    _retried,
    _unsendable,
    _with_plugins,
    check_workdir,
    classify,
    gather,
    ray_init,
)
from ragkit._ray_encode import _check_model
from ragkit._saves import read_json, write_json
from ragkit._shard_dirs import ShardDir, _link_tree, _private_dir, _release_dir, _SharedDir
from ragkit.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ParamError,
    RagkitError,
    require,
)
from ragkit.operator import Operator, after_fit, checksums_verified
from ragkit.params import Params, shown
from ragkit.registry import register
from ragkit.types import QUERY_REWRITES, Corpus, Ranking, State, TrainSet

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is Python 3.11+


# held while a Sharded retriever starts or drops its shard actors (one lock for all: it is rare and short, and a
# lock of the operator's own would not pickle)
_ACTORS_LOCK = threading.Lock()


# set inside a search_distributed chunk: a ``sharded`` retriever with ``backend: ray`` loads and searches its shards
# in the chunk's own process (the chunk is already the parallel unit: its own shard actors were one actor set, and
# one hard-linked copy of the shard folders, per chunk)
_IN_CHUNK: ContextVar[bool] = ContextVar("ragkit_sharded_in_chunk", default=False)


def _default_retriever() -> dict[str, dict[str, Any]]:
    return {"dense": {}}


class ShardedParams(Params):
    retriever: dict[str, dict[str, Any]] = Field(
        default_factory=_default_retriever,
        description="The per-shard retriever as a YAML node, e.g. {dense: {k: 100}} (from Python also an unfitted "
                    "retriever such as Dense(k=100), kept as its node).")
    n_shards: int = Field(default=2, ge=1, description="Number of document shards.")
    k: int = Field(default=100, ge=1, description="Results per query after the merge.")
    backend: Literal["auto", "local", "ray"] = Field(
        default="auto",
        description="Where shards are fitted and searched; auto = ray when fitted with backend='ray' in this process "
                    "(a loaded pipeline searches locally unless this is 'ray').")
    max_retries: int = Field(
        default=3, ge=0,
        description="Ray retries per shard task (a crashed worker, running out of memory, a transient OS error; other "
                    "errors, a missing file among them, fail at once) before the shard fails for good.")
    workdir: str | None = Field(
        default=None,
        description="Where a fit writes its shard folders (a fresh ragkit-shards-* folder inside it per fit, removed "
                    "with the operator); must be shared storage on a multi-node cluster (default: a local temporary "
                    "folder); a relative path is taken from the folder the fit runs in, and a fitted operator holds "
                    "(and saves) that absolute folder.")

    @field_validator("workdir", mode="before")
    @classmethod
    def _path_as_str(cls, v: Any) -> Any:
        """A ``pathlib.Path`` (any ``os.PathLike``) is kept as its string, as the YAML form spells it."""
        return os.fsdecode(os.fspath(v)) if isinstance(v, os.PathLike) else v

    @field_validator("retriever", mode="before")
    @classmethod
    def _operator_as_node(cls, v: Any, info: ValidationInfo) -> Any:
        """An unfitted retriever operator (``BM25(k=5)``, as ``Parallel`` and ``Route`` take operators) is kept
        as its YAML node (``{"bm25": {"k": 5}}``), so the parameters stay JSON-writable and ``to_yaml`` / ``save``
        write it back.  A fitted one is refused (each shard fits a new copy: what it learned would be lost),
        as is a composite (one retriever runs on each shard) and anything else that is not a mapping."""
        if isinstance(v, Operator):
            from ragkit.pipelines._compose import Composite

            if isinstance(v, Composite) or v.children():  # (an empty Pipeline([]) has no children)
                raise ValueError(f"expected one retriever operator (such as BM25(k=5)) to run on each shard, got "
                                 f"a {type(v).__name__}, {shown(v)[:200]}; shard each retriever on its own, e.g. "
                                 "Parallel([Sharded(retriever=BM25()), Sharded(retriever=Dense())])")
            if v.is_fitted and not v.stateless:
                raise ValueError(f"got a fitted {shown(v)}: Sharded fits a new copy of it on each shard, so what it "
                                 f"learned (its index, its corpus) would be lost; pass it unfitted ({shown(v)}) or as "
                                 f"its node {{{v.name!r}: {v.params.non_default()!r}}}")
            from ragkit import registry

            try:
                registry.check_registered(v, "sharded.retriever")
            except ParamError as e:  # (a pydantic validator says what it refuses by a ValueError)
                raise ValueError(str(e).removeprefix("sharded.retriever: ") + f"; got {shown(v)}") from None
            from ragkit.pipelines.yaml import to_node

            return to_node(v)
        if not isinstance(v, Mapping):
            source = info.context.get("source") if isinstance(info.context, Mapping) else None
            how = ("write it as {bm25: {k: 5}}" if source == "yaml" else
                   "write it as {'bm25': {'k': 5}} or pass BM25(k=5)")
            raise ValueError(f"expected a mapping naming one retriever ({how}), got {shown(v)}")
        return v

    @field_validator("retriever")
    @classmethod
    def _not_nested(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """A ``sharded`` per-shard retriever is refused: its merge would not be one index's ranking."""
        if "sharded" in v:
            raise ValueError("a sharded retriever cannot be the per-shard retriever of another: the outer one gives "
                             "bm25 shards the whole corpus's idf and average length only when it fits them itself, "
                             "so nested shards score with their own slice's statistics and the merged ranking is "
                             "not one index's; use one sharded retriever with n_shards = outer x inner shards, e.g. "
                             "{sharded: {retriever: {bm25: {}}, n_shards: 4}}")
        return v

    @model_validator(mode="after")
    def _used(self) -> "ShardedParams":
        self.refuse_unused(("max_retries", self.backend != "local", "backend: ray (or auto)"))
        return self


def _fit_shard(node: dict[str, Any], corpus: Corpus, folder: str) -> str:
    """Fit the retriever ``node`` on ``corpus`` (one shard) and save it to ``folder``, inside its fit's
    folder.  A fit's folder that is gone (the fit failed or was interrupted, and removed it; this
    task straggled) is a ``FileNotFoundError``, before the shard is fitted and again before it is
    saved: the save would make the folder anew, left behind in ``workdir``.  A BM25 shard's fit does not
    check the script of its few documents: :meth:`Sharded._build_shards` checks the whole corpus once."""
    from ragkit.pipelines.yaml import build
    from ragkit.retrievers.bm25 import _shard_fit

    _check_fit_folder(folder)
    op = build(node, "sharded.retriever")
    with _shard_fit():
        op.fit(corpus)
    _check_fit_folder(folder)
    op.save(folder)
    return folder


def _check_fit_folder(folder: str) -> None:
    """Raise :class:`~ragkit.errors.ArtifactNotFoundError` when the fit's folder holding shard folder ``folder`` is
    gone (the fit failed or was interrupted, and removed it; a late task straggled): a save would make it anew
    (its ``mkdir(parents=True)``), left behind in ``workdir``."""
    parent = Path(folder).parent
    if not parent.is_dir():
        raise ArtifactNotFoundError(f"sharded: the fit's folder {parent} is gone (the fit failed or was "
                                    f"interrupted and removed it); shard {Path(folder).name} is not written")


def _set_shard_collection(folder: str, corpus: Corpus, idf: np.ndarray, avgdl: float) -> str:
    """Give the ``bm25`` shard saved in ``folder`` (documents ``corpus``, its slice) the whole corpus's
    statistics (:meth:`~ragkit.retrievers.bm25.BM25.set_collection`: ``idf`` of its own terms, in its vocabulary's
    order, and ``avgdl``) and save it there again: a Ray task of a sharded fit, so that one shard's float64 weights
    at a time are computed, on a worker, never the whole index's in the driver.  The shard is loaded
    memory-mapped and unchecked (this fit's tasks have just written it; the driver's load of the result checks its
    new checksums), and saved under a temporary name renamed into place (a mapped file stays readable)."""
    from ragkit.operator import Operator

    with checksums_verified(True):
        op = Operator.load(folder, corpus=corpus, mmap=True, verify=False)
    from ragkit.retrievers.bm25 import BM25

    if not isinstance(op, BM25):  # (the driver's ShardError names the shard: "sharded: shard 0 (...) failed ...")
        raise ArtifactError(f"{folder} holds a {op.name!r} shard, expected a bm25 one (its statistics are the "
                            f"whole corpus's); the fit's folder was changed while it ran")
    op.set_collection(idf, avgdl)
    _check_fit_folder(folder)  # (a late task, its fit failed and removed the folder: write nothing)
    op.save(folder)
    return folder


class _ShardActor:
    """Holds loaded shard operators (one or several shards, in shard order) on a Ray worker.

    ``corpora``: each shard's documents (given one argument each, so that Ray resolves each
    object-store reference).  A shard folder that cannot load for a reason a retry cannot cure (a
    ragkit error, a missing path: :data:`_FINAL`) does not fail the constructor, which Ray would
    restart (and retry its searches on) ``max_retries`` times, each failing alike, into a long
    "actor died" text: every search raises it as :class:`_Permanent` instead, once, with the
    original error's text.  ``verified``: the driver's load checked the shard files against the saved
    retriever's SHA-256 sums, so the shards load as verified (:func:`~ragkit.operator.checksums_verified`: their
    indexes' CRC32s are not read again), as the driver's own shards do."""

    def __init__(self, folders: list[str], *corpora: Corpus, modules: Sequence[tuple[str, str | None]] = (),
                 verified: bool = False) -> None:
        from ragkit._saves import CHECKSUMS
        from ragkit.operator import Operator

        self.ops: list[Operator] = []
        self.error: str | None = None
        try:
            _import_plugins(modules)  # the modules that register the driver's own operators (custom retrievers)
            # a saved sharded retriever's shard folders hold no documents (the parent's corpus, sliced, is given)
            # and no checksums (the parent's load checked them when asked to: ``verified``); those a fit just wrote
            # hold both
            with checksums_verified(verified):
                self.ops = [Operator.load(f, corpus=c, verify=(Path(f) / CHECKSUMS).is_file())
                            for f, c in zip(folders, corpora)]
        except _FINAL as e:
            self.error = f"{type(e).__name__}: {e}"

    def search(self, queries: list[str], options: dict[str, Any],
               values: dict[str, Any] | None = None, fine: bool = False) -> list[_Flat | _FineFlat]:
        """Each shard's rankings as flat ``(rows, scores, lengths)`` (:func:`_flat`), in the order of its shards.
        The shards share one dict of query vectors, as a local search does: a ``dense`` encodes the queries
        once per call, not once per shard.  ``fine`` (``bm25`` shards): each with a fourth array, every
        candidate's float64 score, kept by the shard's own top-k (:func:`_shard_fine`; no second product), which
        the driver's merge orders tied candidates of two shards by: the driver scores nothing."""
        if self.error is not None:
            raise _Permanent(self.error)
        from ragkit.operator import options_checked
        from ragkit.retrievers.bm25 import _shard_search

        vectors: dict[str, Any] = {}
        out: list[_Flat | _FineFlat] = []
        for op in self.ops:
            state = State(list(queries), options=options, vectors=vectors, values=dict(values or {}))
            # a step of the driver's sharded search, which checked the options and cuts to the call's k itself: not
            # an outermost call cutting its rankings to options["k"]; a bm25 shard does not warn (the driver does)
            kept: list[list[np.ndarray]] | None = [] if fine else None
            with options_checked(), _shard_search(kept):
                sub = op(state)
            vectors.update(sub.vectors)
            flat = _flat(sub, op.name)
            out.append((*flat, _shard_fine(op, state, flat, kept)) if kept is not None else flat)
        return out


def _shard_fine(op: Operator, state: State, flat: _Flat, kept: list[list[np.ndarray]]) -> np.ndarray:
    """Every candidate's float64 score of a ``bm25`` shard's search of ``state`` (its rankings flat, ``flat``): the
    scores its top-k kept (``kept``, filled by a search within :func:`~ragkit.retrievers.bm25._shard_search`: one
    ``(n_q, w)`` array per block of queries), each query's first finite ones cut to its ranking's length, a block at
    a time; :func:`_pair_scores` (a second sparse product) only where the search kept none (a subclass whose search
    does not go through BM25's top-k)."""
    rows, _, lens = flat
    if len(kept) == 1 and sum(len(sc) for sc in kept[0]) == len(lens):
        out, at = [], 0
        for sc in kept[0]:  # (a ranking is its top-k's finite prefix: the operator's check may only cut it)
            n = lens[at:at + len(sc)]
            at += len(sc)
            finite = np.isfinite(sc)
            if not (finite.sum(axis=1) >= n).all():
                break
            out.append(sc[finite & (np.cumsum(finite, axis=1) <= n[:, None])])
        else:
            return np.concatenate(out) if out else np.zeros(0, np.float64)
    q = np.repeat(np.arange(len(lens)), lens)
    return _pair_scores(op, state.texts(lexical=True), q, rows)


def _pair_scores(op: Operator, texts: Sequence[str], q: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The float64 scores of the ``bm25`` shard ``op`` of the ``(query, row)`` pairs ``q`` (numbers into
    ``texts``, the texts it searched) and ``rows`` (its own rows): ``op.score_matrix(texts)[q, rows]`` bit for bit,
    without a dense row of every document.  Per block of queries, the product of their counts over their own
    terms by the weights of those terms and the pairs' documents only: each score sums the same products in the
    same order (the query's terms' order) as the whole product does (:func:`_refine_ties` orders two shards'
    tied candidates by it)."""
    import scipy.sparse as sp

    from ragkit.retrievers.bm25 import BM25

    assert isinstance(op, BM25)
    out = np.zeros(len(rows), np.float64)
    if not len(rows):
        return out
    uq, inv = np.unique(q, return_inverse=True)
    view = op._search_view()
    assert view is not None
    qm = op._query_of(op.query_matrix([texts[int(i)] for i in uq]), view)
    wt = view.wt
    per_query = max(1.0, len(rows) / len(uq))
    step = max(1, int(np.sqrt(_merge._MERGE_CELLS / per_query)))  # (queries x their candidates: ~_MERGE_CELLS)
    order = np.argsort(inv, kind="stable")  # the pairs, query after query
    firsts = np.arange(0, len(uq), step)
    cuts = np.append(np.searchsorted(inv[order], firsts), len(order))
    for a, lo, hi in zip(firsts.tolist(), cuts[:-1], cuts[1:]):  # a loop over blocks of queries
        sel = order[lo:hi]
        block = qm[a:a + step]
        terms = np.unique(block.indices)
        cands = np.unique(rows[sel])
        # the block's counts over its own terms (each row's entries kept in their order), times those terms' weights
        # of the candidates
        sub_q = sp.csr_matrix((block.data, np.searchsorted(terms, block.indices), block.indptr),
                              shape=(block.shape[0], len(terms)))
        prod = sp.csr_matrix(sub_q @ wt[terms][:, cands])
        prod.sum_duplicates()  # (canonical: sorted columns within each row)
        keys = np.repeat(np.arange(prod.shape[0], dtype=np.int64), np.diff(prod.indptr)) * len(cands) + prod.indices
        want = (inv[sel] - a).astype(np.int64) * len(cands) + np.searchsorted(cands, rows[sel])
        at = np.minimum(np.searchsorted(keys, want), max(len(keys) - 1, 0))
        found = (at < len(keys)) & (keys[at] == want) if len(keys) else np.zeros(len(want), bool)
        out[sel[found]] = prod.data[at[found]]
    return out


def _live(bounds: np.ndarray) -> np.ndarray:
    """The shards with documents (more shards than documents leaves some empty: nothing to search, and a
    shard loaded from its folder alone would not know the corpus's metadata fields a filter names)."""
    return np.flatnonzero(np.diff(bounds) > 0)


def _groups(live: np.ndarray, n_actors: int) -> list[np.ndarray]:
    """The shards of ``live`` each of ``n_actors`` Ray actors serves: consecutive runs, as even as can be."""
    return [g for g in np.array_split(live, max(1, n_actors)) if len(g)]


def _kind(e: BaseException) -> str:
    """The class of what failed, for an error message: the user exception behind a ``RayTaskError``, the
    original's of a :class:`_Permanent`, else the Ray error's own."""
    kind, cause = classify(e)
    return str(cause).split(":", 1)[0] if kind == "permanent" else type(cause).__name__


def _also_failed(ray: Any, groups: Sequence[np.ndarray], refs: Sequence[Any], folders: Sequence[str] = ()) -> str:
    """``"; also shards 2, 3 (ActorDiedError)"``: the shard groups of ``refs`` whose Ray tasks have ended (the
    caller drained them) in an error, each with its error's class (:func:`_kind`), a shard its actor could not load
    named alone where the error names its folder (:func:`_failing`); ``""`` when none did."""
    try:
        ended = set(ray.wait(list(refs), num_returns=len(refs), timeout=0)[0]) if refs else set()
    except Exception:  # noqa: BLE001 - best effort: the first failure is reported anyway
        return ""
    failed = []
    for group, ref in zip(groups, refs):  # a loop over Ray actors
        if ref not in ended:
            continue
        try:
            ray.get(ref, timeout=0)
        except Exception as e:  # noqa: BLE001 - what it failed on, named
            failed.append(f"{_failing(group, folders, e)} ({_kind(e)})")
    return "; also " + ", ".join(failed) if failed else ""


def _failing(group: np.ndarray, folders: Sequence[str], e: BaseException) -> str:
    """The shards of ``group`` (one Ray actor's) that ``e`` failed, for an error message.  A Ray failure (the actor
    gone, its reply lost) fails them all: :func:`_which`.  A shard folder the actor could not load
    (:class:`_Permanent`) fails the shards whose folders (``folders``, by shard number) the error names, only
    those; an error naming none of an actor's several shards says that one worker serves them: ``"shards 0, 1 (one
    worker serves them)"``."""
    import re

    kind, cause = classify(e)
    if kind != "permanent" or len(group) < 2:
        return _which(group)
    text = str(cause)
    named = [s for s in group.tolist() if s < len(folders)
             and re.search(re.escape(str(folders[s])) + r"(?![\w-])", text)]
    if named:
        return _which(named)
    return f"{_which(group)} (one worker serves them)" if len(group) <= 6 else _which(group)  # (else: says so)


def _which(shards: Iterable[Any]) -> str:
    """``"shard 3"``, or ``"shards 0, 1, 2"`` for an actor serving several, for an error message."""
    shards = [int(s) for s in shards]
    if len(shards) == 1:
        return f"shard {shards[0]}"
    if len(shards) <= 6:
        return "shards " + ", ".join(map(str, shards))
    return f"shards {shards[0]}, {shards[1]}, ... {shards[-1]} ({len(shards)} shards, one Ray actor)"


def _flat(state: State, name: str) -> _Flat:
    """The rankings in the output of a shard's retriever ``name`` as flat ``(rows, scores, lengths)`` arrays
    (three arrays to send back from a Ray actor, not one pair per query)."""
    if state.rankings is None:
        raise ShardError(f"sharded: the per-shard retriever {name} returned no rankings")
    return _flatten(state.rankings)


class _FixedAtFit(AttributeError):
    """``Sharded.add`` / ``Sharded.remove``: an ``AttributeError`` (``hasattr(op, "add")`` stays False, as for any
    operator that cannot be edited) whose text says why and what to do."""

    def __init__(self, what: str) -> None:
        super().__init__(f"sharded: {what} is not supported: a sharded index is fixed at fit (its shards are split "
                         f"by row and bm25 shards share the whole corpus's statistics); refit it on the edited "
                         f"corpus (pipeline.fit(corpus))")


@register
class Sharded(Operator):
    """A retriever split over document shards, each an ordinary fitted ragkit operator.

    Fitting builds one shard folder per slice of the corpus (Ray tasks with
    ``backend="ray"``); searching runs every shard on the query batch and merges the
    rankings by score.  With exact per-shard search the merge gives one index's top-k over the
    whole corpus, as follows.  ``bm25`` shards are given the whole corpus's idf and average document
    length after fitting (Elasticsearch's ``dfs_query_then_fetch``), and rank exactly as one
    index.  ``dense`` (``dtype`` f32 or f16 without ``rescore``, ``reduce`` none or matryoshka),
    ``muvera`` with exact search and ``maxsim_exact`` scores need no corpus statistics: they give
    one index's documents with its scores up to float32 rounding in the last bits.  A matrix
    product over a shard of a handful of documents is summed by BLAS in another order than over
    many (shards of <= 4 documents: scores differed by up to 5.4e-7), so where shards hold only a
    handful of documents, documents whose scores tie to within that rounding may swap places,
    in the order or at the cut of the top-k.  Not so for what is
    fitted on each shard's own documents: a ``dense`` with ``reduce: pca:<d>`` (a PCA per shard,
    so each shard scores in its own projection) or ``dtype: i8`` (an int8 calibration per shard)
    gives approximate scores that differ from shard to shard, and a shortlist re-scored per shard
    (``dtype: b1``, ``rescore``) or an HNSW search is approximate per shard, so their merge only
    approximates one index's ranking; other retrievers that learn from their corpus
    (``knn_embed``'s clusters) are likewise fitted per shard.

    The shards get no training split: a retriever that fine-tunes at fit (``dense`` with
    ``adapt``) is refused, since each shard would tune its own model and their scores would
    not be comparable; fine-tune once and pass the tuned model's folder as ``model``.

    A search's ``k`` option of the per-shard retriever (``search(q, bm25={"k": 3})``) sets the
    number of results exactly, as for one index: every shard returns its top ``3`` and the
    merge keeps the top ``3`` of those, which are one index's top ``3`` (the ``sharded``
    retriever's own ``k`` option, when also given, caps it further).

    ``retriever`` is the per-shard retriever's YAML node, or from Python an unfitted retriever operator,
    kept as its node (``Sharded(retriever=BM25(k=10))`` equals ``Sharded(retriever={"bm25": {"k": 10}})``);
    a fitted one is refused, since each shard fits a new copy and what it learned would be lost.

    Examples
    --------
    >>> Sharded(retriever={"bm25": {"k": 10}}, n_shards=4, k=10)
    Sharded(retriever={'bm25': {'k': 10}}, n_shards=4, k=10)
    """

    name = "sharded"
    kind = "retriever"
    applies_filter = True  # (the call's filter goes to every shard's retriever, which applies it)
    Params = ShardedParams
    params: ShardedParams
    #: the Ray actor handles serving the shards, once searched on Ray (Any: Ray types an actor method's call
    #: only for methods declared with ``@ray.method``)
    _actors: list[Any] | None
    #: the object-store references of each actor's shard documents, held as long as ``_actors`` (a restarted
    #: actor's constructor reads them again)
    _actor_docs: list[Any] | None
    example = {"retriever": {"bm25": {"k": 10}}, "n_shards": 3, "k": 10, "backend": "local"}
    #: the call's options go to every shard, whose retriever applies ``filter`` (and reads its own
    #: options, e.g. ``bm25={"n_jobs": 2}``: :meth:`option_children`); ``sharded`` reads only ``k``
    #: (its own, and its shard retriever's own ``k`` option, which also sets the merged number)
    run_options = {"filter": None}

    def __init__(self, params: Any = None, /, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        from ragkit import registry

        (name, sub), = self.params.retriever.items() if len(self.params.retriever) == 1 else (("", {}),)
        if not name:
            raise ParamError(f"sharded.retriever: expected one operator node such as {{dense: {{}}}}, "
                             f"got {self.params.retriever!r}", path="sharded.retriever")
        cls = registry.get(name, path="sharded.retriever")
        if cls.kind != "retriever":
            raise ParamError(f"sharded.retriever: {name!r} is a {cls.kind}, expected a retriever",
                             path="sharded.retriever")
        from ragkit.params import validate_params

        sub_params = validate_params(cls.Params, sub, name, "sharded.retriever")
        own_k = getattr(sub_params, "k", None) if isinstance(sub, Mapping) and "k" in sub else None
        if own_k is not None and own_k != self.params.k:
            # the merge returns k per query and each shard fetches at least that many, so the per-shard retriever's
            # own k alone was ignored: it sets k when k is not given, and must agree with a k that is
            if "k" in self.params.model_fields_set:
                raise ParamError(f"sharded.retriever.{name}.k is {own_k} but sharded.k is {self.params.k}: the merge "
                                 f"returns k results per query (each shard fetches at least that many), so the "
                                 f"per-shard k would be ignored; give k alone, or the same number in both",
                                 path="sharded.k")
            self.params = self.params.updated(k=own_k)
        # kept as validated (k: "5" is 5; {bm25: {k: 100}} is {bm25: {}}), so == and to_yaml see one value
        self.params = self.params.updated(retriever={name: sub_params.non_default()})
        self._sub_name: str = name
        self._sub_cls: type[Operator] = cls
        if getattr(cls(sub_params), "needs_train", False):
            raise ParamError(f"sharded.retriever: {name} with these parameters ({sub!r}) learns from judged queries "
                             f"at fit (e.g. dense's adapt fine-tunes its model), but shards cannot fine-tune: each "
                             f"would tune its own model and their scores would not be comparable; fine-tune once "
                             f"(e.g. Dense(adapt=...).fit(corpus, train)) and pass the tuned model folder as "
                             f"'model'", path="sharded.retriever")
        self._backend = self.params.backend

    def sub_retriever(self) -> Operator:
        """A new, unfitted per-shard retriever built from ``retriever`` (its parameters, defaults filled)."""
        (_, sub), = self.params.retriever.items()
        return self._sub_cls(sub)

    def fit(self, corpus: Corpus, train: TrainSet | None = None, *, upstream: State | None = None,
            backend: str = "local") -> Self:
        """Fit the shards (see :class:`Sharded`); ``backend="ray"`` encodes the per-shard retriever's
        sentence vectors on Ray first (:func:`fit_pipeline`), and with ``backend: auto`` the shards
        are then fitted (and later searched) on Ray."""
        if backend == "local":
            self._check_workdir()  # before anything is fitted (fit_pipeline checks it itself)
        actors, folder = getattr(self, "_actors", None), getattr(self, "_dir", None)
        super().fit(corpus, train, upstream=upstream, backend=backend)
        # fitted (a failed fit keeps the earlier shards, their folder and actors): the earlier ones go, once the
        # whole fit has succeeded (a pipeline whose later step fails puts this operator's earlier state back)
        if actors and actors is not getattr(self, "_actors", None):
            after_fit(functools.partial(_kill, actors))
        if folder is not None and folder is not getattr(self, "_dir", None):
            after_fit(functools.partial(_release_dir, folder))
        return self

    def __getstate__(self) -> dict[str, Any]:
        """What a copy (``copy.deepcopy``, pickle) holds: not the Ray actors (its first search on Ray starts
        its own: a refit of the copy would stop the original's) and not the shard folder (a refit of the copy
        would remove the original's): a deep copy borrows it, which keeps it until the original and every copy
        have let go of it (refitted, or garbage-collected), and a pickle names it (the original's process owns
        it)."""
        state = dict(vars(self))
        state.pop("_actors_session", None)
        if "_actors" in state:
            state["_actors"] = state["_actor_docs"] = None
        folder = state.get("_dir")
        if folder is not None:
            state["_dir"] = _SharedDir(folder.name, folder.tmp if isinstance(folder, _SharedDir) else folder)
        return state

    def check_ready(self, corpus: Corpus | None = None, train: TrainSet | None = None) -> None:
        """Refuse, with :class:`~ragkit.errors.MissingExtraError`, a ``backend: ray`` (or an ``auto`` one already
        moved to Ray) where Ray is not installed: found without importing it, before any step of a pipeline fits
        (:func:`~ragkit.pipelines._checks.check_trainable`).  ``corpus`` and ``train`` are not read."""
        if self._backend == "ray":
            require(["ray"], extra="ray", what="sharded.backend: 'ray' fits and searches the shards on Ray, which is "
                    "not installed", install=f"{_RAY_INSTALL}; or set backend: local")

    def _check_workdir(self) -> None:
        """Refuse a ``workdir`` that is a file or lies below one, before a fit does any work."""
        check_workdir(self.params.workdir, "sharded.workdir", "the shard folders")

    def _check_ray_model(self, where: str) -> None:
        """Refuse a per-shard retriever whose ``model`` is registered with ``register_encoder`` where its
        shards would be built or searched on Ray: the registry is per process, a Ray worker lacks it."""
        model = getattr(self.sub_retriever().params, "model", None)
        if _registered(model):
            raise ParamError(f"{where}: sharded.retriever {self._sub_name}'s model {model!r} is an encoder registered "
                             f"with register_encoder in this process; Ray workers are other processes and do not "
                             f"have it, so its shards cannot be built or searched on Ray: use backend='local'",
                             path="sharded.backend")

    def option_children(self) -> list[tuple[str, Operator]]:
        """The per-shard retriever, which reads the call's options: a fitted shard once fitted (so
        that what its state cannot serve is refused before any shard searches), else one built
        from ``retriever``."""
        built = [sh for sh in getattr(self, "shards_", None) or [] if sh is not None]
        if built:
            return [("retriever", built[0])]
        return [("retriever", self.sub_retriever())]

    def _use_ray(self) -> bool:
        """Whether the shards are fitted and searched on Ray: ``backend`` ray, unless this is a
        :func:`search_distributed` chunk (a Ray task itself: its shards are searched in its process)."""
        return self._backend == "ray" and not _IN_CHUNK.get()

    def _drop_actors(self, failed: list[Any] | None = None) -> None:
        """Stop the Ray actors serving the shards (a load replaces them; the next search starts new ones).
        ``failed``: the actor set a search failed on, dropped only if it is still the current one (another
        thread may have replaced it already, and its new set is healthy)."""
        with _ACTORS_LOCK:
            actors = getattr(self, "_actors", None)
            if failed is not None and actors is not failed:
                return
            self._actors, self._actor_docs = None, None
        _kill(actors)

    def _ray_actors(self, ray: Any) -> list[Any]:
        """The Ray actors serving the shards with documents (:func:`_live`), at most one per CPU of the Ray
        cluster, each serving a run of consecutive shards (:func:`_groups`, in shard order), started on the
        first search (and after a failure dropped them, or a ``ray.shutdown()``).  Concurrent first searches
        start one set: it is made under a lock, checked again once the lock is held."""
        ctx = ray.get_runtime_context()
        session = (ctx.get_node_id(), ctx.get_job_id())  # a new cluster has a new node id (job ids restart)

        def current() -> list[Any] | None:
            actors: list[Any] | None = getattr(self, "_actors", None)
            if actors is not None and getattr(self, "_actors_session", None) != session:
                return None  # made before a ray.shutdown(): those actors are gone with their cluster
            return actors

        actors = current()
        if actors is not None:
            return actors
        with _ACTORS_LOCK:
            actors = current()
            if actors is not None:
                return actors
            _check_cpus(ray, "sharded.search")  # before any actor: one could never be placed on a cluster without CPUs
            actor = ray.remote(max_restarts=self.params.max_retries, max_task_retries=self.params.max_retries)(
                _ShardActor)
            # each shard's documents go to the object store once and stay there while its actor lives: Ray
            # frees an argument passed by value after the constructor, so a crashed actor (max_restarts) over
            # more than ~100 KB of documents could never be restarted (ReferenceCountingAssertionError)
            # an empty shard (more shards than documents) is served by no actor: it is never searched
            live = _live(self.bounds_)
            docs = {int(s): ray.put(self.corpus_.subset(np.arange(self.bounds_[s], self.bounds_[s + 1])))
                    for s in live}
            # one actor per CPU at most: an actor per shard would be a worker process (and its memory) each
            n_actors = min(len(live), max(1, int(ray.cluster_resources().get("CPU", 1))))
            modules = self._ray_modules("sharded.search")
            extra: dict[str, Any] = {"modules": modules} if modules else {}  # (none for ragkit's own retrievers)
            if self._verified:  # (a load that checked the SHA-256 sums of the shard files the actors read)
                extra["verified"] = True
            actors = [actor.remote([self.folders_[s] for s in g], *[docs[int(s)] for s in g], **extra)
                      for g in _groups(live, n_actors)]
            self._actors, self._actor_docs, self._actors_session = actors, list(docs.values()), session
            return actors

    def _workdir(self) -> Path | None:
        """``workdir`` as an absolute path (a relative one from this process's folder: Ray workers run
        in folders of their own), made when missing; None when not given."""
        if not self.params.workdir:
            return None
        workdir = Path(os.path.abspath(user_path(self.params.workdir, "sharded.workdir")))
        workdir.mkdir(parents=True, exist_ok=True)
        return workdir

    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        bounds = np.linspace(0, len(corpus), self.params.n_shards + 1).astype(np.int64)
        # a folder of this fit's own, inside workdir when given: two sharded retrievers (or a refit, or the
        # straggling tasks of a failed fit) never write into each other's shard folders, which Ray actors
        # load lazily; it is removed when this operator is refitted or garbage-collected, or when this fit fails
        tmp = ShardDir(self._workdir())
        try:
            root = Path(os.path.abspath(tmp.name))
            folders = [str(root / f"shard-{s:03d}") for s in range(self.params.n_shards)]
            self._build_shards(corpus, bounds, folders)
            # on Ray the actors search, and the driver's shards are memory-mapped from the fit's folders: they do not
            # hold every shard's index in the driver.  BM25's whole-corpus statistics are computed here from the
            # shards' terms, document frequencies and lengths, and each shard is weighed with them and saved again
            # by a Ray task of its own (:func:`_set_shard_collection`): no shard's weights are computed here
            mapped = self._use_ray()
            from ragkit.retrievers.bm25 import BM25

            # bm25 shards on Ray are loaded here for their statistics only, unchecked (this fit's tasks have just
            # written them): they are loaded again, their checksums verified, once weighed
            reweigh = mapped and isinstance(self.sub_retriever(), BM25)
            shards = _open_shards(folders, corpus, bounds, mmap=mapped, verify=not reweigh)
            stats = self._collection(shards)
            if stats is not None and mapped:
                del shards
                self._set_collection_ray(corpus, bounds, folders, *stats)
                shards = _open_shards(folders, corpus, bounds, mmap=True)  # the weights just saved, mapped in turn
            elif reweigh:  # (no statistics: loaded again, checked)
                shards = _open_shards(folders, corpus, bounds, mmap=True)
            elif stats is not None:
                idfs, avgdl = stats
                for sh, idf in zip(shards, idfs):
                    if isinstance(sh, BM25) and idf is not None:  # (every built shard is: _collection checked it)
                        sh.set_collection(idf, avgdl)
        except BaseException:
            tmp.cleanup()
            raise
        # every shard built: only now are they this operator's (a failed fit leaves the earlier shards, folder and
        # actors as they were; fit stops the earlier actors and removes the earlier folder once it succeeds)
        self._actors, self._actor_docs = None, None
        self._dir, self.bounds_, self.shards_, self.folders_ = tmp, bounds, shards, folders
        workdir = self.params.workdir
        if workdir and not os.path.isabs(os.path.expanduser(workdir)):
            # the folder it used, as its saved parameters say: a load elsewhere does not read it from its own folder
            self.params = self.params.updated(workdir=str(root.parent))

    def _build_shards(self, corpus: Corpus, bounds: np.ndarray, folders: list[str]) -> None:
        """Fit and save one shard per slice ``bounds[s]:bounds[s + 1]`` of ``corpus`` into ``folders[s]``
        (Ray tasks on the Ray backend); an empty slice (more shards than documents) is neither fitted nor
        written.  A shard that fails is a :class:`ShardError` naming it, raised once no other shard's task
        still runs (up to :data:`_DRAIN_S` seconds).  Once every shard is built, a BM25's warning on
        documents its tokenizer cannot read is given once, with the whole corpus's figures, as one index's
        fit gives it (the shards' fits skip it: :func:`_fit_shard`)."""
        def failed(s: int, why: str, retried: str = "") -> ShardError:
            return ShardError(f"sharded: shard {s} (documents {bounds[s]}..{bounds[s + 1] - 1}) failed to build"
                              f"{retried}: {why}")

        live: list[int] = np.flatnonzero(np.diff(bounds) > 0).tolist()
        slices = [corpus.subset(np.arange(bounds[s], bounds[s + 1])) for s in live]
        node = self._shard_node()
        if not self._use_ray():
            for s, sh in zip(live, slices):
                f = folders[s]
                try:
                    _fit_shard(node, sh, f)
                except Exception as e:
                    raise failed(s, f"{type(e).__name__}: {e}") from e
            self._check_script(corpus)
            return
        self._check_ray_model("sharded.fit")  # before Ray starts
        modules = self._ray_modules("sharded.fit")
        from ragkit._ray_fit import corpus_models

        for model in corpus_models(self):  # a model that cannot load: refused here, as fit(backend='ray') refuses
            where = f"sharded.retriever.{self._sub_name}.model"  # it, not from every shard's task after Ray started
            try:
                _check_model(model, 64, where)
            except ParamError as e:
                raise ParamError(str(e), path=where) from None
        ray = ray_init()
        _check_cpus(ray, "sharded.fit")  # before any task: a cluster without CPUs would leave them pending forever
        task = ray.remote(max_retries=self.params.max_retries, retry_exceptions=list(_TRANSIENT))(
            _deterministic_errors_final(_with_plugins(modules, _fit_shard)))
        refs: list[Any] = []
        try:
            for s, sh in zip(live, slices):
                args = (node, sh, folders[s])
                try:
                    refs.append(task.remote(*args))
                except _PICKLING_ERRORS as e:  # Ray could not serialise the shard's documents, or another failure
                    why = _unsendable(sh, e, args)
                    if why is None:  # (the arguments pickle: not theirs; raised as it was)
                        raise
                    raise failed(s, why) from None
            self._gather(ray, live, refs, bounds, "build")
        except BaseException:
            _drain(ray, refs)  # the other shards' tasks end before the fit's folder is removed
            raise
        self._check_script(corpus)

    def _gather(self, ray: Any, live: list[int], refs: list[Any], bounds: np.ndarray, what: str) -> None:
        """Wait for the Ray tasks ``refs`` of the shards ``live`` (one each), in the order they end; the first that
        fails is a :class:`ShardError` naming the shard, its documents (``bounds``) and what it failed to do
        (``what``: ``"build"``), raised at once (the caller then waits for the others: :func:`_drain`)."""

        def fail(i: int, e: Exception) -> NoReturn:
            s = live[i]
            raise ShardError(f"sharded: shard {s} (documents {bounds[s]}..{bounds[s + 1] - 1}) failed to "
                             f"{what}{_retried(self.params.max_retries, e)}: {_reason(e)}") from None

        gather(ray, refs, fail)  # in the order they end: the first that fails is raised without waiting for the others

    def _shard_node(self) -> dict[str, Any]:
        """The per-shard retriever's node the shards are built from: ``retriever``, given this retriever's ``k``
        where the per-shard retriever has a ``k`` field: its own default (100) is not this one's, and a shard's
        ``k`` is more than a cut (``knn_embed`` shares it between its anchor and its components: a search's k=10
        over k=100 is plain dense).  A ``k`` the node gives is this retriever's already (its ``k`` is set from it,
        or must equal it: see the parameters' check)."""
        (name, sub), = self.params.retriever.items()
        if "k" in self._sub_cls.Params.model_fields:
            sub = {**sub, "k": self.params.k}
        return {name: dict(sub)}

    def _check_script(self, corpus: Corpus) -> None:
        """A BM25 per-shard retriever's check of the script of ``corpus``, the whole corpus (which one index's fit
        makes, and the shards' fits skip: :func:`_fit_shard`); nothing for other retrievers."""
        from ragkit.retrievers.bm25 import BM25

        sub = self.sub_retriever()
        if isinstance(sub, BM25):
            sub._check_script(corpus)

    def _collection(self, every: list[Operator | None]) -> tuple[list[np.ndarray | None], float] | None:
        """The whole corpus's statistics for BM25 shards (as Elasticsearch's ``dfs_query_then_fetch`` has them),
        so that the merged ranking equals one index's: each shard's idf of its own terms (vocabulary order; None for
        an empty shard) and the average document length, for :meth:`~ragkit.retrievers.bm25.BM25.set_collection`;
        None for other retrievers.  ``every``: the shards, in corpus order, None for an empty one (read only: their
        terms, document frequencies and lengths, not their weights).

        Document frequencies are summed per term over the shards' vocabularies (one ``np.unique`` over their
        concatenation)."""
        from ragkit.retrievers.bm25 import BM25

        built = [sh for sh in every if sh is not None]  # (an empty shard has no documents and no statistics)
        shards = [sh for sh in built if isinstance(sh, BM25)]
        if not shards or len(shards) < len(built):
            return None
        terms = [np.array(sh.terms(), dtype=object) for sh in shards]
        dfs = [sh.doc_freqs() for sh in shards]
        lengths = np.concatenate([sh.doc_lengths() for sh in shards])  # corpus order, as one index sums them
        uniq, inv = np.unique(np.concatenate(terms), return_inverse=True)
        df = np.bincount(inv, weights=np.concatenate(dfs), minlength=len(uniq))
        n, avgdl = shards[0].collection_of(lengths)  # (as one index counts its documents and averages them)
        idf = shards[0].idf_of(df, n)
        cuts = np.cumsum([0] + [len(t) for t in terms])
        parts = iter([idf[inv[a:b]] for a, b in zip(cuts[:-1], cuts[1:])])
        return [next(parts) if sh is not None else None for sh in every], avgdl

    def _set_collection_ray(self, corpus: Corpus, bounds: np.ndarray, folders: list[str],
                            idfs: list[np.ndarray | None], avgdl: float) -> None:
        """Give each ``bm25`` shard saved in ``folders`` the whole corpus's statistics (:meth:`_collection`:
        ``idfs``, ``avgdl``) and save it again, a Ray task per shard (:func:`_set_shard_collection`): one shard's
        weights at a time on each worker, none in the driver.  A shard that fails is a :class:`ShardError` naming
        it, raised once no other shard's task still runs, as :meth:`_build_shards` raises it."""
        live = [s for s, idf in enumerate(idfs) if idf is not None]
        ray = ray_init()
        task = ray.remote(max_retries=self.params.max_retries, retry_exceptions=list(_TRANSIENT))(
            _deterministic_errors_final(_with_plugins(self._ray_modules("sharded.fit"), _set_shard_collection)))
        refs: list[Any] = []
        try:
            for s in live:
                refs.append(task.remote(folders[s], corpus.subset(np.arange(bounds[s], bounds[s + 1])), idfs[s],
                                        avgdl))
            self._gather(ray, live, refs, bounds, "be given the whole corpus's statistics")
        except BaseException:
            _drain(ray, refs)  # the other shards' tasks end before the fit's folder is removed
            raise


    def k_for(self, state: State) -> int:
        """How many merged results: the per-shard retriever's own ``k`` option exactly (each shard
        then returns that many, so the merge's top equals one index's; capped by this retriever's
        own ``k`` option when both are given), else :meth:`Operator.k_for` (the operator's check
        cuts a retriever's rankings to this number)."""
        k = super().k_for(state)
        own = state.options.get(self._sub_name)
        own_k = own.get("k") if isinstance(own, Mapping) else None
        if own_k is None:
            return k
        own_k = int(own_k)
        mine = self.opt(state, "k")
        return min(own_k, int(mine)) if mine is not None else own_k

    def _call(self, state: State) -> State:
        k = super().k_for(state)
        merge_k = self.k_for(state)
        # the shards fetch at least k (their own k option, when given, is exact and at least merge_k)
        options = {**state.options, "k": max(k, int(state.options.get("k") or 0))}
        # a rewritten query (a rewriter, PRF's lexical query upstream) is what the shards search
        rewrites = {key: state.values[key] for key in QUERY_REWRITES if state.values.get(key)}
        texts = list(state.queries)
        live = _live(self.bounds_)  # the shards with documents
        results: list[_Flat | _FineFlat]
        if self._use_ray():
            self._check_ray_model("sharded.search")  # before Ray starts
            self._ray_modules("sharded.search")
            self._check_filters(options)  # a bad filter is refused here, as a local search refuses it
            ray = ray_init()
            results = self._search_ray(ray, live, texts, options, rewrites, self._fine(live))
        else:
            from ragkit.retrievers.bm25 import _shard_search

            fine = self._fine(live)
            results = []
            for s in live:
                shard = self.shards_[s]
                assert shard is not None  # (a live shard has documents, so it was built)
                kept: list[list[np.ndarray]] | None = [] if fine else None  # (bm25: its candidates' float64 scores)
                sub_in = State(texts, list(state.query_ids), options=options, vectors=state.vectors,
                               values=dict(rewrites))
                with _shard_search(kept):  # (a bm25 shard does not warn of queries finding nothing: see below, once)
                    sub = shard(sub_in)
                state.vectors.update(sub.vectors)
                flat = _flat(sub, self._sub_name)
                results.append((*flat, _shard_fine(shard, sub_in, flat, kept)) if kept is not None else flat)
        out = state.copy()
        if not results:
            out.rankings = [Ranking.empty() for _ in texts]
            return out
        # (bm25 shards, on Ray or here: each candidate comes with its float64 score, which the merge orders two shards'
        # tied candidates by)
        parts = [(r[0] + off, *r[1:]) for r, off in zip(results, self.bounds_[live])]
        out.rankings = _split(*_merge_flat(parts, merge_k))
        self._warn_query_without_word(state, live, rewrites, out.rankings)
        return out

    def _warn_query_without_word(self, state: State, live: np.ndarray, rewrites: dict[str, Any],
                                 rankings: list[Ranking]) -> None:
        """A ``bm25`` per-shard retriever's warning of a query that finds nothing because its tokenizer drops its
        letters (:meth:`~ragkit.retrievers.bm25.BM25._warn_query_without_word`), once per sharded retriever,
        with one index's text: a query finds nothing when no shard holds any of its terms.  The shards' searches
        skip it (:func:`~ragkit.retrievers.bm25._shard_search`).  Only the queries that found nothing (merged
        ``rankings`` empty: a query with a term in any shard's vocabulary finds that shard's documents holding it)
        and are not in ASCII are counted again, over each shard's vocabulary: a search where every query found
        something tokenises nothing again."""
        from ragkit.retrievers.bm25 import BM25

        if not issubclass(self._sub_cls, BM25) or self.__dict__.get("_query_warner_said", False):
            return
        empty = np.flatnonzero(np.fromiter((r.rows.size == 0 for r in rankings), bool, len(rankings)))
        if not len(empty):
            return
        texts = State(list(state.queries), values=dict(rewrites)).texts(lexical=True)
        odd = [i for i in empty.tolist() if isinstance(texts[i], str) and not texts[i].isascii()]
        if not odd:
            return
        found = np.ones(len(texts), np.int64)  # (an ASCII query: its letters are never dropped)
        found[odd] = 0
        for s in live:  # a loop over shards
            sh = self.shards_[int(s)]
            assert isinstance(sh, BM25)
            found[odd] += np.diff(sh.query_matrix([texts[i] for i in odd]).indptr)
        if found.all():
            return
        import scipy.sparse as sp

        warner = self.__dict__.get("_query_warner")
        if warner is None:  # the per-shard retriever's parameters as given (its warning names a default as one)
            warner = self._query_warner = self.sub_retriever()
        counted = sp.csr_matrix((np.ones(int(found.sum())), np.zeros(int(found.sum()), np.int64),
                                 np.concatenate([[0], np.cumsum(found)])), shape=(len(texts), 1))
        assert isinstance(warner, BM25)
        warner._warn_query_without_word(state, texts, counted)
        self._query_warner_said = bool(warner.__dict__.get("_query_said", False))

    def _fine(self, live: np.ndarray) -> bool:
        """Whether the merge orders the shards' tied candidates by their float64 scores: two ``bm25`` shards or
        more with documents, whose searches then keep every candidate's float64 score (:func:`_shard_fine`)."""
        from ragkit.retrievers.bm25 import BM25

        return len(live) >= 2 and issubclass(self._sub_cls, BM25)

    def _ray_modules(self, where: str) -> list[tuple[str, str | None]]:
        """The modules Ray workers import before they rebuild the per-shard retriever by name (its class's, when
        it is not ragkit's own: :func:`_plugin_modules`); refused before Ray starts when no worker could."""
        return _plugin_modules([self._sub_cls], where)

    @property
    def add(self) -> Any:
        """Not supported: a sharded index is fixed at fit (an ``AttributeError`` saying so)."""
        raise _FixedAtFit("add")

    @property
    def remove(self) -> Any:
        """Not supported: a sharded index is fixed at fit (an ``AttributeError`` saying so)."""
        raise _FixedAtFit("remove")

    def _check_filters(self, options: Mapping[str, Any]) -> None:
        """Refuse (:class:`~ragkit.errors.DataError`) a ``filter`` option (the call's, or the per-shard
        retriever's own) that the corpus's metadata cannot answer, in this process: on Ray the shards' error
        would come back from an actor."""
        own = options.get(self._sub_name)
        for given in (options.get("filter"), own.get("filter") if isinstance(own, Mapping) else None):
            if given is not None:  # (what mask refuses, without a mask of the whole corpus per batch)
                self.corpus_.check_filter_kinds(given)

    def _search_ray(self, ray: Any, live: np.ndarray, texts: list[str], options: dict[str, Any],
                    rewrites: dict[str, Any], fine: bool = False) -> list[_Flat | _FineFlat]:
        """Flat ``(rows, scores, lengths)`` (:func:`_flat`) of each shard of ``live`` (shard numbers, in order),
        searched by the Ray actors serving them (:func:`_groups`); ``fine`` (``bm25`` shards): each with every
        candidate's float64 score (:meth:`_ShardActor.search`).

        An error a shard's search raised (a ragkit error such as a filter only a shard's documents refuse, or a
        custom retriever's own ``ValueError``) is raised as it is, as a local search raises it, and the actors are
        kept: they are sound.  A Ray failure (an actor or worker gone, an object lost) or a shard folder its actor
        could not load drops the actor set it failed on (the next search starts new actors; a folder put back is
        read then).  An actor that is gone (``ray.kill``, out of memory, its node lost, past Ray's restarts) is
        retried once on new actors; a second failure is a one-line :class:`ShardError` naming the shards and the
        Ray error's class, chained to it."""
        from ray.exceptions import RayActorError

        for attempt in (1, 2):
            actors = self._ray_actors(ray)
            groups = _groups(live, len(actors))
            refs = [a.search.remote(texts, options, rewrites, fine) for a in actors]
            results: list[_Flat | _FineFlat] = []
            for i, (group, ref) in enumerate(zip(groups, refs)):
                try:
                    results += ray.get(ref)
                except Exception as e:
                    # every other actor's result (or error) is fetched first: Ray prints an error never fetched
                    # as an 'Unhandled error' traceback
                    _drain(ray, refs)
                    kind, cause = classify(e)
                    if kind == "raised" and not isinstance(e, RayActorError):
                        # the shard's search itself raised it (a ragkit error such as a filter only a shard's
                        # documents refuse, a custom retriever's ValueError...): raised as a local search raises it
                        # (the remote traceback chained, but to a ragkit error); the actors are sound and stay
                        raise cause from (None if isinstance(cause, RagkitError) else e)
                    self._drop_actors(actors)
                    if isinstance(e, RayActorError) and attempt == 1:
                        break  # its actor is gone: once more on new actors
                    folders = getattr(self, "folders_", None) or []
                    also = _also_failed(ray, groups[i + 1:], refs[i + 1:], folders)  # every failed shard is named
                    if isinstance(e, RayActorError):
                        raise ShardError(f"sharded: {_which(group)} failed to search: its Ray actor is gone "
                                         f"({type(e).__name__}), also on new actors started after a first "
                                         f"failure{also}") from e
                    raise ShardError(f"sharded: {_failing(group, folders, e)} failed to search: {_reason(e)}{also}"
                                     ) from None
            else:
                return results
        raise AssertionError("unreachable")  # (the second attempt returns or raises)

    def _save(self, folder: Path) -> None:
        # each shard's own files only: its documents are a slice of this operator's (saved once, by the
        # operator or its pipeline), and this save's checksums cover its files
        for s, sh in enumerate(self.shards_):
            if sh is None:  # an empty shard (more shards than documents): nothing to save; loads as empty
                continue
            (folder / f"shard-{s:03d}").mkdir()
            sh.save_into(folder / f"shard-{s:03d}", with_corpus=False)
        write_json(folder / "shards.json", {"bounds": self.bounds_.tolist()})

    def _load(self, folder: Path, mmap: bool = False) -> None:
        self._drop_actors()
        folder = Path(os.path.abspath(folder))  # the Ray actors load the shards from it, in folders of their own
        bounds = self._read_bounds(folder)
        live = _live(bounds)
        self._check_shard_sizes(folder, bounds, live)
        folders = [str(folder / f"shard-{s:03d}") for s in range(len(bounds) - 1)]
        # verify=False: the load of this operator (Operator.load, or Pipeline.load's manifest) has checked every
        # file below its folder, the shards' included, when asked to, and was told not to otherwise.  Searched on
        # Ray (backend: ray), the actors hold the shards: the driver's are memory-mapped, as after a Ray fit
        # (memory-mapped also in a search_distributed chunk, which searches them itself: the chunks on one machine
        # share the pages)
        # (checksums_verified: a verified load's shards skip their indexes' CRC32s, as the SHA-256 sums read every
        # file already; not verified, they keep them)
        with checksums_verified(self._verified):
            shards = _open_shards(folders, self.corpus_, bounds, mmap=mmap or self._backend == "ray", verify=False)
        tmp = None
        if self._use_ray():
            # the Ray actors load their shards at their first search (and again when Ray restarts one): from a
            # folder of this operator's own, hard links to the files loaded now, so that saving another index
            # into ``folder`` later cannot reach them (they would serve its shards under this one's parameters)
            try:
                where = self._workdir()
            except (OSError, RagkitError):  # (a workdir of the machine it was saved on): the default places
                where = None
            tmp = _private_dir(folder, where)
            try:
                root = Path(os.path.abspath(tmp.name))
                for s in live:
                    _link_tree(folder / f"shard-{s:03d}", root / f"shard-{s:03d}")
            except BaseException:
                tmp.cleanup()
                raise
            folders = [str(root / f"shard-{s:03d}") for s in range(len(bounds) - 1)]
        self.shards_, self.bounds_, self.folders_ = shards, bounds, folders
        if tmp is not None:
            self._dir = tmp

    def _read_bounds(self, folder: Path) -> np.ndarray:
        """``shards.json``'s bounds, refused (:class:`ArtifactError`) unless they split this operator's documents
        into ``n_shards`` consecutive slices."""
        raw = read_json(folder / "shards.json")
        bounds = raw.get("bounds") if isinstance(raw, dict) else None
        n, want = len(self.corpus_), self.params.n_shards
        try:
            b = np.asarray(bounds, dtype=np.int64)
        except (TypeError, ValueError):
            b = np.zeros(0, np.int64)
        if b.ndim != 1 or len(b) != want + 1 or b[0] != 0 or b[-1] != n or np.any(np.diff(b) < 0):
            raise ArtifactError(f"{folder / 'shards.json'}: bounds {bounds!r} do not split the {n:,} documents into "
                                f"{want} shards (n_shards in params.json); expected {want + 1} non-decreasing numbers "
                                f"from 0 to {n:,}; the folder was changed after it was saved: save the operator again")
        return b

    def _check_shard_sizes(self, folder: Path, bounds: np.ndarray, live: np.ndarray) -> None:
        """Refuse (:class:`ArtifactError`) a shard folder fitted on another number of documents than
        ``shards.json``'s bounds give it (the two out of step: a folder changed after it was saved)."""
        for s in live:
            meta_file = folder / f"shard-{s:03d}" / "params.json"
            if not meta_file.is_file():
                continue  # (its load says what is missing)
            meta = read_json(meta_file)
            saved = meta.get("corpus") if isinstance(meta, dict) else None
            n = saved.get("n") if isinstance(saved, dict) else None
            a, b = int(bounds[s]), int(bounds[s + 1])
            if isinstance(n, int) and n != b - a:
                raise ArtifactError(f"{folder / 'shards.json'}: its bounds give shard {s} the documents "
                                    f"{a:,}..{b - 1:,} ({b - a:,}), but {meta_file.parent.name} was fitted on {n:,} "
                                    f"documents; the folder was changed after it was saved (shards.json out of step "
                                    f"with the shard folders): save the operator again")


def _kill(actors: Sequence[Any] | None) -> None:
    """Stop the Ray ``actors`` (serving shards that are replaced); ones already gone are skipped."""
    if actors:
        import ray

        for a in actors:
            if a is None:  # (an empty shard's: none)
                continue
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - the cluster is already gone (ray.shutdown()): nothing to stop
                pass


def _open_shards(folders: list[str], corpus: Corpus, bounds: np.ndarray, mmap: bool = False,
                 verify: bool = True) -> list[Operator | None]:
    """The shard operators saved in ``folders``, shard ``s`` holding the documents
    ``bounds[s]:bounds[s + 1]`` of ``corpus``; None for an empty shard (no documents: its folder is not
    read, and a fit writes none)."""
    return [Operator.load(f, corpus=corpus.subset(np.arange(a, b)), mmap=mmap, verify=verify) if b > a else None
            for f, a, b in zip(folders, bounds[:-1], bounds[1:])]


@contextlib.contextmanager
def _in_chunk() -> Iterator[None]:
    """Within it, ``sharded`` retrievers with ``backend: ray`` load and search their shards in this process
    (:data:`_IN_CHUNK`; a function of this module, so that a :func:`_search_chunk` pickled by value refers to it
    by name: a ``ContextVar`` does not pickle)."""
    token = _IN_CHUNK.set(True)
    try:
        yield
    finally:
        _IN_CHUNK.reset(token)
