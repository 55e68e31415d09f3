"""LangChain integration: a ragkit pipeline as a LangChain retriever, and encoders both ways.

* :class:`RagkitRetriever` — a ``BaseRetriever`` over any fitted ragkit pipeline or operator
  (or a YAML file / saved pipeline folder).  ``invoke(q, k=3, filter=...)`` passes ``k`` and
  search options through, ``ainvoke`` too (in a worker thread, so the event loop is never
  blocked), and ``batch(queries)`` sends the whole batch through the pipeline in **one**
  ``pipeline.search`` call.
* :class:`LangChainEmbeddingsEncoder` — any LangChain ``Embeddings`` with the interface of
  :class:`ragkit.encoders.Encoder`; ``.register(name)`` makes ``Dense(model=name)`` use it.
* :class:`RagkitEmbeddings` — ragkit's sentence-transformers encoder (and its on-disk
  document cache) as a LangChain ``Embeddings``.
* :class:`~ragkit.integrations.langchain_generate.RagkitGenerator` — ragkit's local generator
  (Cache-Craft chunk KV-cache reuse) as a LangChain ``Runnable``: ``{"question", "documents"}`` in,
  the answer out, streamed with ``stream`` / ``astream``.

This module imports ``langchain_core``; ``import ragkit`` does not import it.

Examples
--------
>>> from ragkit.integrations.langchain import RagkitRetriever          # doctest: +SKIP
>>> retriever = RagkitRetriever(pipeline="hybrid.yaml", corpus=docs, k=5)  # doctest: +SKIP
>>> retriever.invoke("what causes scurvy?", k=3)                      # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, TypeVar

import numpy as np
from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForRetrieverRun,
    CallbackManager,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import ensure_config, get_config_list, run_in_executor
from langchain_core.runnables.configurable import RunnableConfigurableFields
from langchain_core.runnables.utils import AnyConfigurableField, ConfigurableField
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_serializer, model_validator

from ragkit._checks import _SURROGATE, _utf8_clean
from ragkit._files import user_path
from ragkit._locks import ReadWriteLock, lock_of
from ragkit._saves import _json_default, read_json
from ragkit.encoders.sentence import as_texts
from ragkit.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    DataError,
    InputTypeError,
    NotFittedError,
    ParamError,
    repeated,
)
from ragkit.integrations.langchain_generate import RagkitGenerator
from ragkit.metadata import AllOf, all_filters, check_added_kinds, check_metadata_kinds, is_missing
from ragkit.operator import Operator
from ragkit.options import _positive_k, check_options
from ragkit.params import refusal_of
from ragkit.types import Corpus, Ranking, TrainSet, ids_and_texts

if TYPE_CHECKING:
    from typing_extensions import Self

    from ragkit.encoders.cache import EmbeddingCache

__all__ = ["RagkitRetriever", "RagkitGenerator", "LangChainEmbeddingsEncoder", "RagkitEmbeddings", "as_corpus",
           "load_pipeline_like"]

#: searches made for one call whose documents were each time edited on another thread before a clear error
_EDIT_RETRIES = 5

#: the file of a saved retriever's own settings (``k``, ``search_kwargs``) beside its pipeline's
RETRIEVER_FILE = "retriever.json"

#: keyword arguments LangChain itself may leave in ``invoke``'s kwargs; never search options
_LANGCHAIN_KWARGS = frozenset({"verbose", "run_id", "run_name", "callbacks", "tags", "metadata"})

#: LangChain's MMR vocabulary (``as_retriever(search_type="mmr", search_kwargs={"lambda_mult": ..., "fetch_k": ...})``):
#: no search options of ragkit's, whose MMR is a pipeline step; an error naming one of them says so (:data:`MMR_HINT`)
_MMR_WORDS = ("search_type", "lambda_mult", "fetch_k")

#: what an error naming one of :data:`_MMR_WORDS` adds (:func:`_mmr_hint`)
MMR_HINT = ("ragkit's MMR is a pipeline step: RagkitRetriever(pipeline=Dense(k=fetch_k) | MMR(k=..., "
            "lambda_mult=...)), and per call mmr={'lambda_mult': ..., 'fetch_k': ...}")


def _mmr_hint(key: str) -> str:
    """What an error naming ``key``, one of :data:`_MMR_WORDS`, says ragkit takes instead."""
    return ("no search_type: the pipeline is how it searches; " if key == "search_type" else "") + MMR_HINT

#: while LangChain builds a retriever from a configured one (``configurable_fields``: every field of the
#: configured retriever passed again, the configured ones replaced), the names of the fields the config set
#: (:class:`_ConfigurableRetriever`); ``None`` for any other construction
_CONFIGURED: ContextVar[frozenset[str] | None] = ContextVar("ragkit_configured_fields", default=None)

#: set while :meth:`RagkitRetriever._assign` checks all but the last of several fields assigned at once: their own
#: checks only, :meth:`RagkitRetriever._build` running once, with the last
_DEFER_BUILD: ContextVar[bool] = ContextVar("ragkit_defer_build", default=False)


# ---------------------------------------------------------------------------------- helpers
def as_corpus(corpus: Any) -> Corpus:
    """A :class:`~ragkit.types.Corpus` from a Corpus, LangChain ``Document``s, plain strings or records, or a
    mapping ``{doc_id: text}`` (a pandas ``Series`` indexed by string ids too; :func:`ragkit.types.ids_and_texts`).
    One string (its characters would be the documents), one Document or record, and a DataFrame are
    errors (:class:`DataError`) saying what to pass."""
    if isinstance(corpus, Corpus):
        return corpus
    if isinstance(corpus, Document) or (isinstance(corpus, Mapping) and "text" in corpus
                                        and ("_id" in corpus or "id" in corpus)):
        raise DataError(f"corpus: got one {'Document' if isinstance(corpus, Document) else 'record'} "
                        f"({corpus!r:.80}); wrap it in a list")
    ids, items = ids_and_texts(corpus, "corpus")  # (refuses one string, a DataFrame, None)
    if not items:
        raise DataError("corpus: got an empty collection; expected documents to index")
    if ids is not None:  # {doc_id: text}: the Corpus checks each text
        return Corpus.from_texts(items, ids=ids)
    if all(isinstance(x, Document) for x in items):
        return Corpus.from_documents(items)
    if all(isinstance(x, str) for x in items):
        return Corpus.from_texts(items)
    if all(isinstance(x, dict) for x in items):
        return Corpus.from_records(items)
    kinds = sorted({type(x).__name__ for x in items})
    raise DataError(f"corpus: expected a Corpus, LangChain Documents, strings or records (dicts), got {kinds}")


#: a ``pipeline=`` string that can only be meant as an operator's name: no path separator, suffix or YAML syntax
_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def load_pipeline_like(source: Any) -> Operator:
    """An operator from an operator, a saved pipeline/operator folder, a YAML file, YAML text or a registered
    operator's name (``"bm25"``: that operator with its default parameters)."""
    if isinstance(source, Operator):
        return source
    if isinstance(source, os.PathLike):  # any path object (as save / load take): a Path
        source = Path(os.fsdecode(source))
    if not isinstance(source, (str, Path)):
        raise ParamError(
            f"pipeline: expected a ragkit operator/pipeline, a saved pipeline folder, a YAML file, YAML text or an "
            f"operator's name ('bm25'), got {type(source).__name__} ({source!r:.60})"
        )
    path = user_path(source, "pipeline") if isinstance(source, Path) or "\n" not in str(source) else None
    if path is not None and path.is_dir():
        if (path / "manifest.json").is_file():
            from ragkit.pipelines.store import load_pipeline

            return load_pipeline(path)
        if (path / "params.json").is_file():
            return Operator.load(path)
        raise ParamError(f"pipeline: {path} is a folder but holds neither a saved pipeline (manifest.json) "
                         f"nor a saved operator (params.json)")
    from ragkit import registry
    from ragkit.pipelines import load_yaml

    if path is not None and not path.exists() and str(source).strip().lower() in registry.names():
        return registry.get(str(source).strip().lower())()  # an operator's name, as `ragkit --pipeline bm25`
    name = str(source).strip()
    if path is not None and not path.exists() and _BARE_NAME.fullmatch(name):  # no path, no YAML: a misspelled name
        if name.lower() in registry.structural_keys():
            raise ParamError(f"pipeline: {name!r} is a structural key of pipeline YAML, not an operator (and no file "
                             f"or folder has that name); give the pipeline as YAML (e.g. 'pipeline: [{{{name.lower()}: "
                             "{...}}]') or an operator's name such as 'bm25'", "pipeline")
        try:
            registry.get(name, path="pipeline")  # unknown: the registry's error, with the closest names
        except ParamError as e:
            raise ParamError(f"pipeline: no file or folder is named {name!r}, and {str(e).removeprefix('pipeline: ')}",
                             "pipeline") from None
    if path is not None and not path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        raise ParamError(f"pipeline: YAML file {path} does not exist")
    return load_yaml(str(path) if path is not None and path.is_file() else str(source))


def _saved_settings(source: Any) -> dict[str, Any]:
    """``k`` and ``search_kwargs`` from the ``retriever.json`` of a folder given as ``pipeline=`` (``{}`` for
    any other ``pipeline=``), read alone; a malformed file is an :class:`ArtifactError` naming it.  A saved
    pipeline's folder (what :meth:`RagkitRetriever.save` writes) is read with its pipeline instead
    (:func:`_load_with_settings`), both from one save."""
    if isinstance(source, os.PathLike):
        source = os.fsdecode(source)
    if not isinstance(source, str) or "\n" in source or not (user_path(source, "pipeline") / RETRIEVER_FILE).is_file():
        return {}
    path = user_path(source, "pipeline") / RETRIEVER_FILE
    return _checked_settings(path, read_json(path))


def _checked_settings(path: Path, saved: Any) -> dict[str, Any]:
    """``saved``, the JSON value of the settings file ``path``, checked: ``{"k": int >= 1, "search_kwargs": {...}}``
    (:class:`ArtifactError` naming ``path`` otherwise)."""
    k = saved.get("k") if isinstance(saved, dict) else None
    if not (isinstance(saved, dict) and set(saved) == {"k", "search_kwargs"} and type(k) is int and k >= 1
            and isinstance(saved["search_kwargs"], dict)):
        raise ArtifactError(f"{path}: expected {{\"k\": an integer >= 1, \"search_kwargs\": an object}}, got "
                            f"{json.dumps(saved)[:120]}; save the retriever again")
    return saved


def _saved_pipeline_folder(source: Any) -> Path | None:
    """The folder ``pipeline=source`` names when it holds a saved pipeline (``manifest.json``: what
    :meth:`RagkitRetriever.save` and ``Pipeline.save`` write), else ``None``."""
    if isinstance(source, os.PathLike):
        source = os.fsdecode(source)
    if not isinstance(source, str) or "\n" in source:
        return None
    path = user_path(source, "pipeline")
    return path if path.is_dir() and (path / "manifest.json").is_file() else None


def _load_with_settings(source: Any) -> tuple[Operator, dict[str, Any]]:
    """The operator ``pipeline=source`` names (:func:`load_pipeline_like`) and the settings of the
    ``retriever.json`` beside it (:func:`_saved_settings`; ``{}`` without one).

    A saved pipeline's folder is read as one load (:func:`~ragkit.pipelines.store.load_unreplaced`, as
    ``load_pipeline`` reads it: the folder's shared lock held, its manifest's identity compared before and
    after, loaded again when another process saved the folder again meanwhile), the settings file included
    and its bytes checked against the manifest's checksum: the pipeline and its ``k`` / ``search_kwargs``
    (a default filter) always come from one save.  Read apart, a save landing between the two gave a
    retriever the pipeline of one save with the ``k`` and filter of the next."""
    folder = _saved_pipeline_folder(source)
    if folder is None:
        return load_pipeline_like(source), _saved_settings(source)
    from ragkit._saves import restore_interrupted_save
    from ragkit.pipelines.store import load_unreplaced

    restore_interrupted_save(folder)
    return load_unreplaced(folder, "manifest.json", lambda: _pipeline_and_settings(folder))


def _pipeline_and_settings(folder: Path) -> tuple[Operator, dict[str, Any]]:
    """One read of the saved pipeline ``folder`` (checksums verified) and of its ``retriever.json`` (``{}``
    where the save wrote none), as the files are now: :func:`_load_with_settings` retries it when the folder
    was replaced meanwhile.  The settings' bytes are those the manifest's ``sha256`` lists; a file it does
    not list, or lists with other bytes, is an :class:`ArtifactError` (the folder was changed after saving,
    or another save replaced the file between the two reads)."""
    from ragkit.pipelines.store import SHA_RECORD, _load_pipeline

    pipe = _load_pipeline(folder, None, False, True)  # (verifies every listed file, retriever.json included)
    path = folder / RETRIEVER_FILE
    digests = read_json(folder / "manifest.json").get("sha256", {})  # (its shape checked by _load_pipeline)
    digest = digests.get(RETRIEVER_FILE)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if digest is None:  # a folder of Pipeline.save: no settings of a retriever's
            return pipe, {}
        raise ArtifactError(f"{path}: listed in {SHA_RECORD} but missing; the folder was changed after saving: "
                            "save the retriever again") from None
    if digest is None:
        raise ArtifactError(f"{path}: not listed in {SHA_RECORD}, yet the load reads it (the retriever's k and "
                            "search_kwargs); RagkitRetriever.save lists it: the folder was changed after saving: "
                            "remove the file or save the retriever again")
    if hashlib.sha256(data).hexdigest() != digest:
        raise ArtifactError(f"{path}: checksum mismatch; the file was changed or truncated after saving: save the "
                            "retriever again")
    try:
        saved = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # (bytes the checksum lists: a save never writes them)
        raise ArtifactError(f"{path}: not valid JSON ({type(e).__name__}: {str(e)[:120]}); save the retriever "
                            "again") from None
    return pipe, _checked_settings(path, saved)


def merge_options(base: Mapping[str, Any], call: Mapping[str, Any]) -> dict[str, Any]:
    """Search options of one call over the retriever's defaults: a call's ``filter`` narrows the default
    ``filter`` (both apply, as an operator's own ``filter`` parameter and a call's do: the AND of their masks,
    :func:`~ragkit.metadata.all_filters`; ``{"tags": "x"}`` then ``{"tags": "y"}``: the documents tagged both),
    an operator's options merge option by option (``{"bm25": {"n_jobs": 4}}`` then ``bm25={"k": 5}``: both),
    anything else the call sets replaces the default.  Values are checked later, by ``search``."""
    out = dict(base)
    for key, value in call.items():
        old = out.get(key)
        if key == "filter" and isinstance(old, (Mapping, AllOf)) and isinstance(value, (Mapping, AllOf)):
            out[key] = all_filters(old, value)
        elif isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = merge_options(old, value)
        else:
            out[key] = value
    return out


def _call_k_first(options: dict[str, Any], defaults: Mapping[str, Any], call: Mapping[str, Any],
                  k: int) -> dict[str, Any]:
    """``options`` with each operator's own ``k`` that ``defaults`` (the retriever's ``search_kwargs``) set
    below the call's ``k`` raised to it: ``search_kwargs={"knn_embed": {"k": 4}}`` then ``invoke(q, k=8)``
    gives 8 documents, not 4 (a call's ``k`` comes first; every operator's ``k`` option is a number of
    results kept).  An operator's ``k`` the call gives itself (``invoke(q, k=8, knn_embed={"k": 4})``) stays
    exact, as in ``pipeline.search``; a value that is no integer is left to the search's checks."""
    out = options
    for name, value in defaults.items():
        if name in ("k", "filter") or not isinstance(value, Mapping) or "k" not in value:
            continue
        given = call.get(name)
        if isinstance(given, Mapping) and "k" in given:  # the call's own option for this operator: exact
            continue
        try:
            own = int(value["k"]) if not isinstance(value["k"], bool) else None
        except (TypeError, ValueError, OverflowError):
            own = None
        if own is not None and own < k and isinstance(out.get(name), Mapping):
            out = {**out, name: {**out[name], "k": k}}
    return out


def _unfitted_copy(op: Operator) -> Operator:
    """A new, unfitted ``op`` with the same parameters (built from its YAML)."""
    from ragkit.pipelines import Pipeline, load_yaml

    copy = load_yaml(op.to_yaml())
    return copy if isinstance(op, Pipeline) else copy.steps[0]


def _holds_index(op: Operator) -> bool:
    """Whether a fit of ``op`` changes what it holds: one of its leaves is not stateless (a composite is
    stateless itself, whatever its leaves hold)."""
    from ragkit.pipelines.yaml import walk_leaves

    return any(not leaf.stateless for _, leaf in walk_leaves(op))


def _trained_steps(op: Operator) -> list[tuple[str, Operator, int]]:
    """``(path, leaf, n)`` for each fitted leaf of ``op`` that learned from (or read) ``n`` training queries at
    its last fit (a learned fuser's weights, a Cosine Adapter's threshold, a ``dbnorm`` query bank): what a
    refit without ``train`` drops.  Paths as in :meth:`Pipeline.learned` and errors."""
    from ragkit.pipelines.yaml import walk_leaves

    return [(where, leaf, len(taught)) for where, leaf in walk_leaves(op)
            if (taught := getattr(leaf, "trained_on_", None)) is not None and leaf.is_fitted]


def _same_documents(a: Corpus, b: Corpus) -> bool:
    """Whether ``a`` and ``b`` hold the same documents in the same order: ids, texts, titles and metadata
    (one array comparison per column; a missing value (:func:`~ragkit.metadata.is_missing`: ``None``, ``NaN``,
    ``pandas.NA``, ``NaT``) equals any other missing value, in a numeric column and at any depth of an object
    column's values (``{"v": nan}``, ``[1, None]``): two corpora built apart from the same records are the
    same documents)."""
    if a is b:
        return True
    if len(a) != len(b) or set(a.metadata) != set(b.metadata):
        return False
    return (_same_column(a.ids, b.ids) and _same_column(a.texts, b.texts) and _same_column(a.titles, b.titles)
            and all(_same_column(a.metadata[key], b.metadata[key]) for key in a.metadata))


def _same_column(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether two columns of one value per document are equal, missing values equal to each other: one array
    comparison; in an object column, the values the comparison finds different (a ``NaN`` inside a dict is not
    ``==`` another ``NaN``) are looked at again one by one (:func:`_same_value`)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        return False
    if x.dtype.kind in "fc" and y.dtype.kind in "fc":
        return bool(np.array_equal(x, y, equal_nan=True))
    if x.dtype.kind in "mM" and y.dtype.kind in "mM":
        nat = np.isnat(x)
        return bool(np.array_equal(nat, np.isnat(y)) and np.array_equal(x[~nat], y[~nat]))
    if x.dtype != object and y.dtype != object:
        return bool(np.array_equal(x, y))
    try:
        equal = np.asarray(x == y)
    except Exception:  # noqa: BLE001  (a value whose == raises, pandas.NA's truth value: looked at one by one)
        equal = np.zeros(x.shape, dtype=bool)
    if equal.shape != x.shape or equal.dtype != bool:  # (an element's == gave no bool)
        equal = np.zeros(x.shape, dtype=bool)
    differ = np.flatnonzero(~equal)  # only values == called different: a loop over those alone
    return all(_same_value(x.flat[i], y.flat[i]) for i in differ.tolist())


def _same_value(u: Any, v: Any) -> bool:
    """Whether two metadata values are equal, missing values (:func:`~ragkit.metadata.is_missing`) equal to
    each other at any depth: dicts key by key, lists and tuples item by item, arrays element by element."""
    if is_missing(u) or is_missing(v):
        return is_missing(u) and is_missing(v)
    if isinstance(u, Mapping) or isinstance(v, Mapping):
        return (isinstance(u, Mapping) and isinstance(v, Mapping) and u.keys() == v.keys()
                and all(_same_value(u[key], v[key]) for key in u))
    if isinstance(u, np.ndarray) or isinstance(v, np.ndarray):
        u, v = np.asarray(u), np.asarray(v)
        return u.shape == v.shape and _same_column(u.reshape(-1), v.reshape(-1))
    if isinstance(u, (list, tuple)) or isinstance(v, (list, tuple)):
        return (isinstance(u, (list, tuple)) and isinstance(v, (list, tuple)) and len(u) == len(v)
                and all(_same_value(p, q) for p, q in zip(u, v)))
    try:
        return bool(u == v)
    except Exception:  # noqa: BLE001  (an == that raises or gives no truth value: not the same)
        return False


_T = TypeVar("_T")


def _sharing_copy(obj: _T, memo: dict[int, Any] | None = None) -> _T:
    """A deep copy of ``obj`` (a fitted operator, or a retriever's state holding one) that shares with it what no
    edit of either changes in place, so that a large pipeline is not held twice and a memory-mapped one
    (``Operator.load(..., mmap=True)``) is not read into memory: its read-only arrays (:func:`_frozen_array`:
    memory maps opened read-only, a corpus's columns) and its :class:`Corpus` objects (immutable: ``add`` /
    ``remove`` make new ones).  An edit of the copy (the retriever's ``add_documents`` / ``delete``) replaces those
    arrays rather than writing into them, and writing into a read-only array fails whoever tries it, so the
    caller's pipeline searches as before.  ``memo``: the memo of an enclosing :func:`copy.deepcopy`.

    A vector index (:class:`~ragkit.retrievers._index.VectorIndex`) copies itself (its ``__deepcopy__``): its
    HNSW graph, which an ``add`` grows in place, is the copy's own (a fresh view of the file it maps, unchanged
    since ``load``, else ``Index.copy``), and its float vectors file (``rescore``) stays the caller's: the copy
    writes a grown one to its own scratch folder, and never grows or deletes the caller's."""
    from ragkit.retrievers._index import _frozen_array

    memo = {} if memo is None else memo
    for item in _reachable(obj):
        if isinstance(item, Corpus) or (isinstance(item, np.ndarray) and _frozen_array(item)):
            memo.setdefault(id(item), item)
    return copy.deepcopy(obj, memo)


#: containers longer than this are data (a vocabulary, a list of ids), not the structure of a pipeline:
#: :func:`_reachable` does not look into them (what they hold is copied)
_REACHABLE_MAX_ITEMS = 256


def _reachable(root: Any, max_depth: int = 12) -> Iterator[Any]:
    """The objects reachable from ``root`` through instance attributes (``__dict__``) and small lists,
    tuples and dicts (:data:`_REACHABLE_MAX_ITEMS`), each once, not looking into numpy arrays, :class:`Corpus`
    objects, strings, numbers, classes, modules or functions: where :func:`_sharing_copy` finds what it
    shares."""
    import types

    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(root, 0)]
    leaf_types = (str, bytes, int, float, complex, bool, type(None), type, types.ModuleType, types.FunctionType,
                  types.BuiltinFunctionType, types.MethodType)
    while stack:
        obj, depth = stack.pop()
        if id(obj) in seen or isinstance(obj, leaf_types):
            continue
        seen.add(id(obj))
        yield obj
        if depth >= max_depth or isinstance(obj, (np.ndarray, Corpus)):
            continue
        if isinstance(obj, dict):
            items: Iterable[Any] = obj.values() if len(obj) <= _REACHABLE_MAX_ITEMS else ()
        elif isinstance(obj, (list, tuple, set, frozenset)):
            items = obj if len(obj) <= _REACHABLE_MAX_ITEMS else ()
        else:
            items = (vars(obj).values() if isinstance(getattr(obj, "__dict__", None), dict) else ())
        stack.extend((item, depth + 1) for item in list(items))


def _refuse_untrained_fit(op: Operator, given: str) -> None:
    """Refuse (:class:`ParamError`, in the retriever's terms) fitting ``op`` on ``corpus=`` without ``train=``
    when one of its steps learns only from judged queries (a ``cosine_adapter``, ``learn: true`` thresholds):
    ``fit``'s own error names ``fit(corpus, train=...)`` and the command line, not the retriever's argument."""
    from ragkit.pipelines.yaml import walk_leaves

    for where, leaf in walk_leaves(op):
        refusal = leaf.train_refusal()
        if refusal is not None:
            raise ParamError(
                f"RagkitRetriever: corpus= fits {given} on those documents, and its step {where} learns only from "
                "judged training queries (it cannot be fitted without them), but no train= was given; pass "
                "train=TrainSet(queries, qrels) with corpus= (queries "
                "judged against that corpus), or give a pipeline fitted with them (or its saved folder) without "
                "corpus=", "train")


def _corpus_of(op: Operator) -> Corpus | None:
    """The documents ``op`` searches (its fitted retrievers', after any ``add`` / ``remove``)."""
    from ragkit.pipelines._compose import shared_corpus

    return shared_corpus(op)


def _extends(new: Corpus | None, old: Corpus | None) -> bool:
    """Whether ``new`` is ``old`` with documents appended (``add``): every row of ``old`` is the same row of ``new``."""
    if new is None or old is None or len(new) < len(old):
        return False
    return bool(np.array_equal(new.ids[:len(old)], old.ids))


def _retriever_names(op: Operator) -> list[str]:
    from ragkit.pipelines._compose import iter_leaves

    names = [leaf.name for leaf in iter_leaves(op) if leaf.kind == "retriever"]
    return list(dict.fromkeys(names)) or [op.name or type(op).__name__.lower()]


_log = logging.getLogger("ragkit")

def _rankings_only(op: Operator, search_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The search options that keep every ``generate`` step of the tree ``op`` from running its language model (it
    passes the rankings on: :func:`~ragkit.generators.operator.rankings_only`), ``{}`` for a tree without one: a
    retriever returns documents, so answers would be thrown away (and an LLM call per query is slow).  Noted once
    on the ``ragkit`` logger (INFO) when the retriever is built, unless ``search_kwargs`` ask for answers
    (``{"generate": {"answer": True}}``: the step does run)."""
    from ragkit.generators.operator import rankings_only

    options = rankings_only(op)
    if not options:
        return {}
    gen = (search_kwargs or {}).get("generate")
    if not (isinstance(gen, Mapping) and gen.get("answer")):
        _log.info("RagkitRetriever: the pipeline's generate step is not run (it passes its rankings on): a retriever "
                  "returns documents, so its answers would be thrown away; answer with the pipeline's own search, "
                  "or with a chat model after the retriever in the chain")
    return options


def refuse_unknown_arguments(cls: type[BaseModel], data: Any, hints: Mapping[str, str]) -> Any:
    """``data`` (a pydantic model's input), or a :class:`ParamError` naming its keys that are no field of ``cls``,
    each with a hint: ``hints[key]`` where given, else the closest fields (close spellings only: difflib's ratio
    0.65 at least, so ``temperature`` is not offered ``generator``), then every field."""
    if not isinstance(data, dict):
        return data
    import difflib

    known = sorted(cls.model_fields)
    unknown = [key for key in data if key not in cls.model_fields]
    if unknown:
        said = [f"{key!r}" + (f" ({hints[key]})" if key in hints else f" (did you mean {' or '.join(close)}?)"
                              if (close := difflib.get_close_matches(str(key), known, n=2, cutoff=0.65)) else "")
                for key in unknown]
        raise ParamError(f"{cls.__name__}: unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(said)}; "
                         f"expected {', '.join(known)}", str(unknown[0]))
    return data


def _num(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


class _State(NamedTuple):
    """What a search reads of a :class:`RagkitRetriever`, all at once under its lock (``_reading``)."""

    pipeline: Operator
    producers: "_Producers"
    search_kwargs: dict[str, Any]
    k: int
    #: options set under ``search_kwargs`` and the call's (:func:`_rankings_only`): no generate step answers
    rankings_only: dict[str, Any]


# ---------------------------------------------------------------------------------- retriever


class RagkitRetriever(BaseRetriever):
    """A ragkit pipeline as a LangChain retriever.

    Parameters
    ----------
    pipeline : Operator, str or os.PathLike
        A ragkit pipeline or single operator (fitted, or fitted here on ``corpus``), a YAML
        file (or YAML text), a folder written by ``pipeline.save`` (any ``os.PathLike`` too), or a registered
        operator's name (``"bm25"``).  In JSON (``model_dump(mode="json")``, ``model_dump_json()``) it is the
        pipeline's YAML.
    corpus : Corpus, list of Document, list of str, list of dict or dict of str -> str, optional
        Documents to fit the pipeline on (a mapping is ``{doc_id: text}``; one string is refused).
        Required when the pipeline is not fitted; when given for a fitted pipeline, a fresh copy of the
        pipeline is fitted on it (with ``train``), the pipeline given left as it is.  A fitted pipeline that
        learned from judged training queries (a learned fuser's weights, a ``cosine_adapter``'s threshold:
        what ``pipeline.learned()`` lists; its saved folder too), given without ``train``: on the very
        documents it was fitted on and searches (the same :class:`~ragkit.types.Corpus`, or one with equal
        ids, texts, titles and metadata in the same order), the retriever gets a deep copy of it, what it
        learned kept (no refit); on other documents, a ``ParamError`` naming the steps that learned, before
        anything is fitted (a refit would drop what they learned): leave ``corpus`` out to use the fitted
        pipeline as it is (and :meth:`add_documents`), or pass ``train`` to learn again on the new documents.
        A step that learns only from judged queries (``cosine_adapter``) fitted here needs ``train`` too (a
        ``ParamError`` otherwise).  A metadata key whose values are of two kinds (``2020`` in one document, ``"2020"``
        in another: numbers, bools included, are one kind, strings another) is a ``DataError`` naming the
        document, the key and both kinds (a filter compares with ``==``: it would miss one of them); a
        document without the key is fine.
    train : TrainSet, optional
        Judged training queries for operators that learn, passed to ``fit`` with ``corpus`` (judged against
        those documents); with ``corpus``, a pipeline that learned before learns again from these.
    k : int
        Documents returned per query (default 4).
    search_kwargs : dict
        Default search options for ``pipeline.search``: ``filter={field: value}``,
        per-operator options ``{"bm25": {"n_jobs": 4}}``, and ``k`` as a LangChain
        ``VectorStoreRetriever``'s (``search_kwargs={"k": 5}``); per-call keyword arguments of
        ``invoke`` / ``ainvoke`` / ``batch`` are merged over them.  The ``k`` of a call is, first
        to last: the call's ``k`` (``invoke(q, k=3)``; ``None`` is not given), ``search_kwargs["k"]``,
        the retriever's ``k``; a call's ``k`` also raises an operator's own ``k`` that ``search_kwargs`` set
        below it (``search_kwargs={"knn_embed": {"k": 4}}``, ``invoke(q, k=8)``: 8 documents; one the call
        sets itself stays exact, as in ``pipeline.search``).  ``search_kwargs["k"]`` and ``k`` given both
        when the retriever is built must agree (a ``ParamError`` otherwise); given alone,
        ``search_kwargs["k"]`` sets ``k`` too, and
        assigning either one later (``r.k = 5``, ``r.search_kwargs = {"k": 5}``) sets the other, so the
        last one set wins, as does the one a LangChain config sets (``configurable_fields``);
        ``r.search_kwargs["k"] = 5`` (the dict edited in place) wins over ``k`` at the
        next call, checked then (a ``ParamError`` naming ``search_kwargs``).  Both are checked as
        ``pipeline.search`` checks them (:func:`ragkit.options.check_options`): ``search_kwargs``
        when the retriever is built (before any fitting; a ``filter`` value of a kind its field does not
        hold, ``{"year": "2006"}`` for years held as numbers, too), per-call ones before each search; a
        key that is no option of the pipeline or a bad value raises ``ParamError``, per call and when
        the retriever is built.  So is an unknown argument (``top_k=1``: "did you mean k?").
        LangChain's MMR words (``search_type="mmr"``, ``lambda_mult``, ``fetch_k``), as arguments,
        ``search_kwargs`` keys or call options, are refused saying that ragkit's MMR is a pipeline step
        (``Dense(k=fetch_k) | MMR(k=..., lambda_mult=...)``), tuned per call with ``mmr={"lambda_mult": ...}``.

    Assigning ``pipeline``, ``corpus``, ``train``, ``k`` or ``search_kwargs`` after construction is
    checked as construction checks it, with the same errors (``r.k = 0``: a ``ParamError``
    naming ``RagkitRetriever.k``; ``r.pipeline = "bm25"``, an unfitted operator: ``NotFittedError``); a refused
    assignment leaves the retriever as it was.  ``model_copy(update={...})`` assigns the update's fields to the
    copy that way, all at once (``update={"pipeline": BM25(), "corpus": docs}`` fits the new pipeline).
    A shallow copy (``model_copy()``, ``model_copy(update={"k": 3})``, :func:`copy.copy`) shares the pipeline,
    so its documents: ``add_documents`` / ``delete`` through either retriever changes what both search (as two
    retrievers built on one fitted pipeline do); ``model_copy(deep=True)`` or :func:`copy.deepcopy` gives a copy
    with an index of its own (and ``update={"pipeline": ...}`` or ``update={"corpus": ...}``, a new one).
    An assignment is checked (and a new pipeline loaded, or
    refitted) on a copy while searches on other threads go on, then swapped in at once holding the lock
    to write: a search sees the retriever before the assignment or after it, never in between, and
    never one refused.  A new ``pipeline`` (or ``corpus``: the pipeline refitted
    on it, as at construction) replaces the retriever's documents, lock and everything read from the tree.

    A ``generate`` step of the pipeline (anywhere in it) is not run: it passes on the rankings it would
    answer from, so the documents are those before it, and no language model is called per retrieval (its
    answers would be thrown away; an INFO note on the ``ragkit`` logger says so when the retriever is
    built).  Answer with a chat model after the retriever in the chain, or with ``pipeline.search``.

    Each returned ``Document`` has the corpus text as ``page_content``, the document id as
    ``id`` and ``metadata`` with ``id`` (where no document has an ``id`` of its own), ``title``,
    ``score`` (the pipeline's final score), ``rank`` (1-based), ``operators`` (the branches that
    retrieved it in a fused pipeline, else the pipeline's retrievers; in a pipeline with a ``route``,
    the retrievers of the branch its query took, read from the run's route labels, and the retrievers
    outside the route; where that is not known, in a tree with more than one ``route`` or a ``route``
    that is not a step of the top-level pipeline (inside a ``parallel``, ``loop`` or another ``route``),
    no ``operators`` key unless the ranking names its fused branches), ``branches``
    (``{branch: {"rank", "score"}}`` for fused rankings), any other ranking ``fields``, and the
    document's own metadata as it was given (a key it did not have is not added, nor one whose value
    was ``None``: a metadata column holds ``None`` for both; its own ``id`` / ``title`` keys are kept,
    as the strings the corpus holds).

    One retriever may serve many threads at once (``ainvoke`` runs in executor threads), and be edited
    meanwhile: ``add_documents`` / ``delete`` wait for the searches in progress and hold new ones until
    they are done (a readers-writer lock per operator tree, shared by the retrievers wrapping it and by
    every node of the tree: :func:`ragkit._locks.lock_of`; the new documents' vectors of ragkit's own
    cached encoders are encoded before it is taken),
    so every search answers from the documents before or after an edit, and concurrent edits each
    land whole; :meth:`save` holds the lock to read too, so a save made meanwhile writes every step from
    the same documents.  ``retriever.pipeline.search(...)``, and the ``search`` of any step or operator
    inside it (``retriever.pipeline.steps[0].search(...)``), called directly on another thread waits for the
    retriever's edits too (each holds the same lock to read: :func:`ragkit._locks.guarded`; a step put into
    the pipeline after the retriever was built does from the retriever's next edit on).  An operator of the pipeline
    edited directly (its ``add`` / ``remove``, not through this retriever) during a search is only
    detected: documents only added keep the answer; any other edit makes it search again, up to 5
    times, then raise ``DataError`` saying so.

    Examples
    --------
    >>> from ragkit.retrievers import BM25
    >>> r = RagkitRetriever(pipeline=BM25(), corpus=["a cat", "a dog"], k=1)
    >>> r.invoke("cat")[0].page_content
    'a cat'
    """

    #: validate_assignment: ``r.k = 0`` is refused as ``k=0`` is (and :meth:`_build` runs again: see __setattr__)
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_arguments(cls, data: Any) -> Any:
        """A misspelled argument (``top_k=1``, ``serach_kwargs=...``) is an error, not ignored."""
        try:
            return refuse_unknown_arguments(cls, data, {key: "did you mean k?" for key in ("top_k", "n")})
        except ParamError as e:  # LangChain's MMR words (search_type="mmr", fetch_k=20): what ragkit takes instead
            word = next((key for key in _MMR_WORDS if key in data), None)
            if word is None:
                raise
            raise ParamError(f"{e}; {_mmr_hint(word)}", e.path) from None

    if TYPE_CHECKING:  # what the fields hold once built; what the constructor accepts: __init__ below
        @property
        def pipeline(self) -> Operator:
            """The ragkit pipeline (after construction: always a fitted operator)."""

        @pipeline.setter
        def pipeline(self, value: Operator | str | os.PathLike[str]) -> None:
            """Assigned as the constructor takes it (``r.pipeline = "app-index"``: a saved folder reloaded in place,
            a YAML file or text, an operator's name), then held as the fitted operator."""

        corpus: (Corpus | Iterable[Document] | Iterable[str] | Iterable[dict[str, Any]] | Mapping[Any, str]
                 | None)
        """Documents to fit ``pipeline`` on (Corpus, LangChain Documents, strings or records); dropped after
        fitting (``None`` once built)."""

        train: TrainSet | None
        """Judged training queries passed to ``fit`` with ``corpus``."""

        def __init__(
            self, *, pipeline: Operator | str | os.PathLike[str],
            corpus: Corpus | Iterable[Document] | Iterable[str] | Iterable[dict[str, Any]] | Mapping[Any, str]
            | None = None,
            train: TrainSet | None = None, k: int = 4, search_kwargs: dict[str, Any] = ..., name: str | None = None,
            tags: list[str] | None = None, metadata: dict[str, Any] | None = None,
        ) -> None: ...
    else:  # (checked in _build: a YAML file, YAML text or a saved folder is loaded, the corpus read there)
        pipeline: Any = Field(description="ragkit pipeline/operator, YAML file or saved pipeline folder.")
        corpus: Any = Field(default=None, exclude=True, repr=False, description="Documents to fit the pipeline on.")
        train: Any = Field(default=None, exclude=True, repr=False, description="TrainSet for learned operators.")

        def __init__(self, **data: Any) -> None:
            try:
                super().__init__(**data)
            except ValidationError as exc:  # a check's RagkitError, which pydantic wrapped: raised as itself
                raise refusal_of(exc, RagkitRetriever) from None

    k: int = Field(default=4, ge=1, strict=True, description="Documents per query.")
    """Documents returned per query; ``invoke(q, k=...)`` and ``search_kwargs["k"]`` override it."""

    search_kwargs: dict[str, Any] = Field(default_factory=dict, description="Default pipeline.search options.")
    """Default search options (``k``, ``filter``, ``{operator: {option: value}}``); per-call kwargs win, and a
    call's ``k`` raises an operator's own ``k`` set here below it (``{"knn_embed": {"k": 4}}``, ``invoke(q, k=8)``:
    8 documents)."""

    _corpus: Corpus = PrivateAttr()
    #: which retrievers produced each query's documents (:func:`_producers_of`)
    _producers: "_Producers" = PrivateAttr()
    #: the options that keep the tree's generate steps from answering (:func:`_rankings_only`; ``{}``: none)
    _rankings_only: dict[str, Any] = PrivateAttr(default_factory=dict)
    #: the operator :meth:`_build` checked and wrapped (None until built): an assignment that keeps it
    #: (``r.k = 5``) checks the settings again, one that changes it builds the retriever again
    _op: Operator | None = PrivateAttr(default=None)
    #: searches share it, an edit (add_documents / delete) holds it alone: no search sees an index half edited;
    #: the lock of the pipeline's tree, shared by every retriever wrapping it or a tree holding one of its
    #: operators, and by every node of the tree (:func:`ragkit._locks.lock_of`: their searches wait for edits)
    _lock: ReadWriteLock = PrivateAttr()

    @field_serializer("pipeline", when_used="json")
    def _pipeline_as_json(self, pipeline: Any) -> str:
        """The pipeline in JSON (``model_dump(mode="json")``, ``model_dump_json()``, a tracer's record): its YAML
        (:meth:`Operator.to_yaml`: its parameters, not its index; ``RagkitRetriever(pipeline=yaml, corpus=...)``
        builds it again), or its repr where YAML cannot write one of them."""
        if isinstance(pipeline, Operator):
            try:
                return pipeline.to_yaml()
            except Exception:  # noqa: BLE001  (a parameter YAML cannot write: a dump never fails for it)
                return repr(pipeline)
        return os.fsdecode(pipeline) if isinstance(pipeline, os.PathLike) else str(pipeline)

    @model_validator(mode="after")
    def _build(self) -> "RagkitRetriever":
        """Load, check and (with ``corpus``) fit the pipeline; run again on each assignment of a field
        (``validate_assignment``), where it only checks the settings again while the pipeline is the one
        built and no ``corpus`` is given.  Fields are set here through ``__dict__`` (an assignment would
        validate, and so run this, again)."""
        if _DEFER_BUILD.get():  # one of several fields assigned at once (_assign): built with the last one
            return self
        if self.train is not None and not isinstance(self.train, TrainSet):
            raise ParamError(f"train: expected a ragkit TrainSet, got {type(self.train).__name__}")
        if self._op is not None and self.pipeline is self._op and self.corpus is None:
            self._check_search_kwargs(self._op, self._corpus)  # r.k = 5, r.search_kwargs = {...}
            return self
        # a folder of RagkitRetriever.save: its pipeline and settings from one save; what the call gives wins
        op, saved = _load_with_settings(self.pipeline)
        if "k" in self.model_fields_set and "search_kwargs" not in self.model_fields_set and "search_kwargs" in saved:
            saved["search_kwargs"] = {key: v for key, v in saved["search_kwargs"].items() if key != "k"}
        for key, value in saved.items():
            if key not in self.model_fields_set:
                self.__dict__[key] = value
        own_k = self.search_kwargs.get("k")
        if own_k is not None and self._op is None and {"k", "search_kwargs"} <= self.model_fields_set \
                and own_k != self.k:
            # LangChain builds a configured retriever passing every field: the one configured wins, as an
            # assignment does (the other holds the configured retriever's value); given both, they must agree
            configured = _CONFIGURED.get() or frozenset()
            if "k" in configured and "search_kwargs" not in configured:
                self.__dict__["search_kwargs"] = {**self.search_kwargs, "k": self.k}
                own_k = self.k
            elif not ("search_kwargs" in configured and "k" not in configured):  # (else set as k below)
                raise ParamError(f"k={self.k!r} and search_kwargs={{'k': {own_k!r}}} disagree; give one of them")
        docs = as_corpus(self.corpus) if self.corpus is not None else None
        searched = docs if docs is not None else _corpus_of(op)
        if searched is not None:
            _check_reserved(searched, "corpus" if docs is not None else "pipeline")
        if docs is not None:  # a field holding values of two kinds: filters would miss one of them
            check_metadata_kinds(docs, "corpus")
        self._check_search_kwargs(op, searched)  # before fitting
        if own_k is not None and self._op is None:  # search_kwargs={"k": 5} alone: the retriever's k
            self.__dict__["k"] = int(own_k)
        if docs is not None:
            op = self._fitted_on(op, docs)
            self.__dict__["corpus"] = None  # the pipeline holds it now
        corpus = _corpus_of(op)
        if corpus is None or not op.is_fitted:
            raise NotFittedError(
                "pipeline: it is not fitted; pass corpus=... (documents to index) or a fitted pipeline / saved folder"
            )
        self.__dict__["pipeline"] = op
        self._corpus = corpus
        self._producers = _producers_of(op)
        self._rankings_only = _rankings_only(op, self.search_kwargs)
        self._lock = lock_of(op)
        self._op = op
        return self

    def _fitted_on(self, op: Operator, docs: Corpus) -> Operator:
        """``op`` fitted on ``corpus=`` (``docs``) with ``train=``: a fresh copy of a fitted ``op`` (refitting it in
        place changed what another retriever or the caller searches), or ``op`` itself when unfitted.

        A pipeline that learned from judged training queries (:func:`_trained_steps`), given without ``train=``:
        on the very documents it searches (:func:`_same_documents`), a copy of it (:func:`_sharing_copy`: its
        read-only arrays, memory maps and corpus shared), what it learned kept (a refit would drop it); on other
        documents, a :class:`ParamError` before anything is fitted.  A pipeline with a step that learns only from
        judged queries, given without ``train=``: a :class:`ParamError` (:func:`_refuse_untrained_fit`)."""
        source = os.fsdecode(self.pipeline) if isinstance(self.pipeline, (str, os.PathLike)) else None
        given = f"the pipeline {source!r}" if source is not None and "\n" not in source else "the pipeline"
        if self.train is None and op.is_fitted and (trained := _trained_steps(op)):
            searched = _corpus_of(op)
            if searched is not None and _same_documents(docs, searched):
                if not isinstance(self.pipeline, Operator):  # loaded here: no one else holds it
                    return op
                with lock_of(op).reading():  # (an edit of another retriever's wrapping it: before or after)
                    return _sharing_copy(op)
            counts = {count for _, _, count in trained}
            if len(counts) == 1:
                n = counts.pop()
                steps = f"{n} judged training quer{'y' if n == 1 else 'ies'} ({', '.join(w for w, _, _ in trained)})"
            else:
                steps = "judged training queries (" + ", ".join(
                    f"{where}: from {count} quer{'y' if count == 1 else 'ies'}" for where, _, count in trained) + ")"
            raise ParamError(
                f"RagkitRetriever: {given} learned from {steps}; corpus= ({len(docs)} documents, other than the "
                f"{len(searched) if searched is not None else 0} it was fitted on and searches) refits a fresh copy "
                "of it on those documents, which drops what it learned, and no train= was given. "
                "Leave corpus= out to use the fitted pipeline as it is (add documents with add_documents), or pass "
                "train=TrainSet(queries, qrels) (queries judged against the new corpus) to learn again on it",
                "corpus")
        if self.train is None:
            _refuse_untrained_fit(op, given)
        if op.is_fitted and _holds_index(op):
            op = _unfitted_copy(op)
        op.fit(docs, self.train)
        return op

    def _check_search_kwargs(self, op: Operator, searched: Corpus | None) -> None:
        """``search_kwargs`` checked against the tree ``op`` (and a filter against ``searched``): ParamError."""
        bad = sorted(set(self.search_kwargs) & _LANGCHAIN_KWARGS)
        if bad:
            raise ParamError(f"search_kwargs: {bad} are not search options (LangChain's own arguments: give them "
                             "in the call's config)")
        try:  # the options of the whole tree, a filter against the corpus searched
            check_options(op, self.search_kwargs, searched)
        except ParamError as e:
            key = e.path.removeprefix("options.")
            hint = f"; {_mmr_hint(key)}" if key in _MMR_WORDS else ""
            raise ParamError(f"search_kwargs: {e}{hint}", path=e.path) from None
        except DataError as e:  # a filter value of a kind its field does not hold, as the check below words it
            text = str(e).removeprefix("search option ")
            head = text.split(": ", 1)[0]  # filter.year, bm25.filter.year
            at = "filter" if head.startswith("filter.") else f"{head.split('.filter.', 1)[0]}.filter"
            raise ParamError(f"search_kwargs: {text}", path=f"options.{at}") from None
        if searched is None:
            return
        # a filter value of a kind its field does not hold ("2006" for years held as numbers) matches no
        # document whatever the index holds: refused now, as each search would refuse it
        filters = [("", self.search_kwargs.get("filter"))] + [
            (f"{name}.", value.get("filter")) for name, value in self.search_kwargs.items()
            if name != "filter" and isinstance(value, Mapping)]
        for where, where_filter in filters:
            if isinstance(where_filter, Mapping) and where_filter:
                try:
                    searched.mask(where_filter)
                except DataError as e:
                    raise ParamError(f"search_kwargs: {where}{e}", path=f"options.{where}filter") from None

    def __setattr__(self, name: str, value: Any) -> None:
        """An assignment of a field, validated (``validate_assignment``: the field's own checks, then
        :meth:`_build`) on a shallow copy, then swapped in holding the lock to write, or refused with the
        retriever left as it was (no thread saw it otherwise); ``k`` and ``search_kwargs["k"]`` kept equal
        (the one assigned wins)."""
        private = getattr(self, "__pydantic_private__", None)
        if name not in type(self).model_fields or not private or private.get("_op") is None:  # (being built)
            super().__setattr__(name, value)
            return
        self._assign({name: value})

    def _assign(self, updates: Mapping[str, Any]) -> None:
        """Assign the fields ``updates`` (one or more, known fields of a built retriever) at once, as
        :meth:`__setattr__` assigns one: each field checked by its own checks, then :meth:`_build` once with them
        all (``{"pipeline": BM25(), "corpus": docs}``: the new pipeline fitted on the new documents), on a copy,
        swapped in holding the lock to write; refused, nothing changes.  ``k`` and ``search_kwargs["k"]`` given
        both must agree (as at construction); one alone sets the other."""
        if not updates:
            return
        given_k = updates.get("search_kwargs")
        if "k" in updates and isinstance(given_k, Mapping) and given_k.get("k", updates["k"]) != updates["k"]:
            raise ParamError(f"k={updates['k']!r} and search_kwargs={{'k': {given_k['k']!r}}} disagree; give one of "
                             "them")
        private = self.__pydantic_private__ or {}
        # validated and built on a copy (a new pipeline loaded and fitted there), searches going on meanwhile
        # with the retriever as it was; then swapped in at once, or nothing changes (a refused assignment)
        side = copy.copy(self)  # (pydantic's shallow copy: fields, fields set and private attributes)
        before = dict(side.__dict__)
        *first, last = updates  # the last assignment builds; the others only check their field
        try:
            token = _DEFER_BUILD.set(True)
            try:
                for name in first:
                    super(RagkitRetriever, side).__setattr__(name, updates[name])
            finally:
                _DEFER_BUILD.reset(token)
            super(RagkitRetriever, side).__setattr__(last, updates[last])  # validate_assignment: field, then _build
        except ValidationError as exc:
            raise refusal_of(exc, RagkitRetriever) from None
        own_k = side.search_kwargs.get("k")
        if "k" in updates and "search_kwargs" not in updates and own_k is not None:
            side.__dict__["search_kwargs"] = {**side.search_kwargs, "k": side.k}
        elif "search_kwargs" in updates and own_k is not None:
            side.__dict__["k"] = int(own_k)
        changed = {key: v for key, v in side.__dict__.items() if key not in before or before[key] is not v}
        rebuilt = side._op is not private.get("_op")
        with self._holding(write=True):  # searches in progress finish first; new ones see the retriever after
            self.__dict__.update(changed)
            object.__setattr__(self, "__pydantic_fields_set__",
                               self.__pydantic_fields_set__ | side.__pydantic_fields_set__)
            if rebuilt:  # a new pipeline: its documents, lock, producers
                object.__setattr__(self, "__pydantic_private__", dict(side.__pydantic_private__ or {}))

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy (shallow: sharing the pipeline, so an ``add_documents`` / ``delete`` through one shows in the
        other; ``deep=True``: with its own pipeline, documents and lock, as :func:`copy.deepcopy` makes it),
        ``update`` assigned to it as assignments are checked (pydantic's own ``model_copy`` skips validation:
        ``update={"pipeline": "app-index"}`` left the string in the field): a saved folder, YAML file or
        operator's name loaded, a ``corpus`` fitted, ``k`` checked, or a :class:`~ragkit.errors.RagkitError` with
        ``self`` unchanged.  An unknown field is a :class:`ParamError`."""
        if update:
            refuse_unknown_arguments(type(self), dict(update), {key: "did you mean k?" for key in ("top_k", "n")})
        new = copy.deepcopy(self) if deep else super().model_copy()  # (deep: pydantic's own skips __deepcopy__)
        if update:
            new._assign(dict(update))
        return new

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_texts(cls, texts: Sequence[str] | Mapping[Any, str], *args: Any,
                   pipeline: Operator | str | os.PathLike[str] | None = None,
                   ids: Iterable[str] | None = None, metadatas: Iterable[Mapping[str, Any] | None] | None = None,
                   **kwargs: Any) -> "RagkitRetriever":
        """Fit ``pipeline`` (default: BM25) on plain texts and wrap it.  ``texts`` may be a mapping
        ``{doc_id: text}``; one string is a :class:`DataError` (its characters would be the documents).  The texts,
        ``metadatas`` and ``ids`` are checked as :meth:`add_texts` checks them, before anything is fitted: a text
        that is no string, ``metadatas`` or ``ids`` of another length than ``texts`` (or one string), a metadata
        that is no dict are each a :class:`DataError` naming it.

        Everything after ``texts`` is keyword-only: LangChain's ``BM25Retriever.from_texts(texts, metadatas,
        ids)`` takes ``metadatas`` second, ragkit's took ``pipeline``; an argument given by position is a
        :class:`ParamError` saying so."""
        if args:
            raise _positional("from_texts", "texts", args, "metadatas=..., ids=..., pipeline=..., k=...")
        if isinstance(texts, Document):  # (a pydantic model iterates as its (field, value) pairs)
            raise DataError(f"from_texts: got one Document ({texts.page_content!r:.60}); expected a list of "
                            "strings (from_documents takes Documents)")
        given, texts = ids_and_texts(texts, "from_texts")
        if given is not None and ids is not None:
            raise DataError("from_texts: ids given twice: by ids= and by the keys (or index) of texts")
        metas, listed = _checked_texts("from_texts", texts, metadatas, ids, "from_documents")
        if listed is None:
            listed = given if given is not None else [str(i) for i in range(len(texts))]
        docs = [Document(page_content=t, id=i, metadata=m) for t, i, m in zip(texts, listed, metas)]
        return cls.from_documents(docs, pipeline=pipeline, **kwargs)

    @classmethod
    def from_documents(cls, documents: Sequence[Document], *args: Any,
                       pipeline: Operator | str | os.PathLike[str] | None = None,
                       **kwargs: Any) -> "RagkitRetriever":
        """Fit ``pipeline`` (default: BM25) on LangChain documents and wrap it.  Everything after
        ``documents`` is keyword-only (as in LangChain's ``BM25Retriever.from_documents``).  One Document, one
        string, ``None`` or an item that is no Document is an :class:`~ragkit.errors.InputTypeError` saying so,
        before anything is fitted."""
        if args:
            raise _positional("from_documents", "documents", args, "pipeline=..., k=...")
        docs = _document_list("from_documents", documents, InputTypeError, "from_texts")
        if pipeline is None:
            from ragkit.retrievers import BM25

            pipeline = BM25()
        return cls(pipeline=pipeline, corpus=Corpus.from_documents(docs), **kwargs)

    # ------------------------------------------------------------------ persistence
    def __getstate__(self) -> dict[Any, Any]:
        """Pickle without the lock (a thread lock does not pickle): the copy takes its pipeline's own."""
        state = super().__getstate__()
        state["__pydantic_private__"] = {k: v for k, v in (state.get("__pydantic_private__") or {}).items()
                                         if k != "_lock"}
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._lock = lock_of(self.pipeline)

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> "RagkitRetriever":
        """A copy with its own pipeline, documents and lock (:func:`_sharing_copy`: its read-only arrays, memory
        maps and corpus shared with this one, its HNSW graphs and float-vectors files its own; no edit of either
        shows in the other), copied under the lock to read: an edit on another thread comes before or after."""
        new = type(self).__new__(type(self))
        if memo is not None:
            memo[id(self)] = new
        private = getattr(self, "__pydantic_private__", None) or {}
        if "_lock" in private:
            with self._holding(write=False):
                state = _sharing_copy(self.__getstate__(), memo)
        else:  # (not built: nothing to hold)
            state = _sharing_copy(self.__getstate__(), memo)
        new.__setstate__(state)
        return new

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted pipeline (the folder :meth:`Pipeline.save` writes, documents included)
        and this retriever's ``k`` and ``search_kwargs`` (``retriever.json``, checksummed with the
        rest) to the folder ``path``, atomically: an earlier save there is replaced only once the new
        one is complete.  :meth:`load` (or ``RagkitRetriever(pipeline=path)``) gives the retriever
        back, searching as this one does, without fitting; ``ragkit search --index path`` and
        ``Pipeline.load(path)`` read the pipeline alone."""
        from ragkit.pipelines import Pipeline
        from ragkit.pipelines.store import save_pipeline

        with self._reading() as state:  # edits (and assignments) wait: every step is written from one corpus
            settings = {"k": state.k, "search_kwargs": state.search_kwargs}
            try:  # before the folder is touched
                json.dumps(settings, default=_json_default, allow_nan=False)
            except (TypeError, ValueError) as e:
                raise ParamError(f"RagkitRetriever.save({str(path)!r}): search_kwargs {state.search_kwargs!r:.120} "
                                 f"hold a value JSON cannot write ({e}); expected strings, finite numbers, booleans, "
                                 "lists and objects") from None
            op = state.pipeline
            pipe = op if isinstance(op, Pipeline) else Pipeline([op])
            save_pipeline(pipe, user_path(path, "RagkitRetriever.save: path"), extra={RETRIEVER_FILE: settings})

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: Any) -> "RagkitRetriever":
        """A retriever written by :meth:`save` (checksums verified), with its ``k`` and
        ``search_kwargs`` unless ``kwargs`` give them (``corpus=`` refits it on other documents)."""
        folder = user_path(path, "RagkitRetriever.load: path")
        if not folder.is_dir():  # (not "no retriever.json": there is no folder to hold one)
            what = "a file, not a folder" if folder.exists() else "no such folder"
            error = ArtifactError if folder.exists() else ArtifactNotFoundError  # (FileNotFoundError, as Pipeline.load)
            raise error(f"RagkitRetriever.load: {folder}: {what}; expected a folder written by "
                        "RagkitRetriever.save")
        if not (folder / RETRIEVER_FILE).is_file():
            what = ("a saved pipeline without the retriever's settings: RagkitRetriever(pipeline=path) wraps it"
                    if (folder / "manifest.json").is_file() or (folder / "params.json").is_file()
                    else "not a folder written by RagkitRetriever.save")
            raise ArtifactError(f"{folder}: no {RETRIEVER_FILE}; {what}")
        return cls(pipeline=folder, **kwargs)

    # ------------------------------------------------------------------ core
    @contextmanager
    def _reading(self) -> Iterator["_State"]:
        """Hold the retriever's lock to read, and yield what a search reads of the retriever, read under it:
        an assignment (``r.pipeline = ...``, ``r.k = ...``) swaps them holding the lock to write, so they are
        all of the retriever before it or all of the one after."""
        with self._holding(write=False):
            yield _State(self.pipeline, self._producers, self.search_kwargs, self.k, self._rankings_only)

    @contextmanager
    def _holding(self, *, write: bool) -> Iterator[None]:
        """Hold the retriever's lock (to write, or to read) for the ``with`` block: the lock it holds once
        taken, since an assignment of a new pipeline swaps in that pipeline's lock while this one waits."""
        while True:
            lock = self._lock
            with lock.writing() if write else lock.reading():
                if self._lock is lock:  # (else swapped meanwhile: wait on the new one)
                    yield
                    return

    @staticmethod
    def _options(kwargs: dict[str, Any]) -> dict[str, Any]:
        """A call's search options (merged over ``search_kwargs`` by :meth:`_search`): LangChain's own left out.
        One of LangChain's MMR words (``search_type="mmr"``, ``lambda_mult=0.2``: :data:`_MMR_WORDS`), no
        search option, is a :class:`ParamError` saying what ragkit takes instead (:data:`MMR_HINT`)."""
        mmr = next((key for key in _MMR_WORDS if key in kwargs), None)
        if mmr is not None:
            raise ParamError(f"search option {mmr!r} ({mmr}={kwargs[mmr]!r:.40}): not an option of ragkit's search "
                             f"(LangChain's MMR vocabulary); {_mmr_hint(mmr)}", path=f"options.{mmr}")
        return {key: v for key, v in kwargs.items() if key not in _LANGCHAIN_KWARGS}

    def _search(self, queries: list[str], k: int | None, call: dict[str, Any]) -> list[list[Document]]:
        """One ``pipeline.search`` call for the whole batch (queries checked by :func:`_query_errors`),
        converted to Documents.  ``k``: the call's (``None``: not given); ``call``: the call's options
        (:meth:`_options`), merged over ``search_kwargs``, whose ``k`` comes next, then the retriever's ``k``;
        all read under the lock with the pipeline (:meth:`_reading`)."""
        error: Exception | None = None
        for _ in range(_EDIT_RETRIES):
            # the documents this search's rows index: read from the pipeline before and after it, never from
            # this retriever (a call on another thread updates self._corpus after its own search)
            with self._reading() as state:  # (an edit through this retriever waits, and is waited for)
                # a generate step passes its rankings on (the documents it would answer from), unless the
                # options say generate={"answer": True}: the answers would be thrown away
                options = merge_options(merge_options(state.rankings_only, state.search_kwargs), call)
                own_k = options.pop("k", None)  # search_kwargs' (a call's k is never among its options)
                n = k if k is not None else state.k if own_k is None else _positive_k(own_k, "search_kwargs: ")
                if k is not None:  # the call's k comes first, over an operator's own k in search_kwargs
                    options = _call_k_first(options, state.search_kwargs, call, k)
                before = self._searched_corpus(state.pipeline)  # (search_kwargs edited in place: k checked)
                try:
                    run = state.pipeline.search(queries, k=n, **options)
                except Exception as e:  # noqa: BLE001 - re-raised unless the documents changed under the search
                    if self._searched_corpus(state.pipeline) is before:
                        raise
                    error = e
                    continue
                corpus = self._searched_corpus(state.pipeline)
            # unchanged, or documents only added (add on another thread): rows of either are rows of the new one
            if corpus is not None and (corpus is before or _extends(corpus, before)):
                break
            error = None  # else edited during the search (remove, refit): its rows may be of either corpus
        else:
            raise DataError(
                f"RagkitRetriever: the pipeline's documents changed during each of {_EDIT_RETRIES} searches of "
                f"{len(queries)} quer{'y' if len(queries) == 1 else 'ies'} (add / remove on another thread); "
                "expected them unchanged for the length of one search: edit the index between searches"
                + (f" (last error: {type(error).__name__}: {error})" if error is not None else "")) from error
        if state.pipeline is self.pipeline:
            self._corpus = corpus  # a retriever edited since (add / remove)
        rankings = run.rankings if run.rankings is not None else [Ranking.empty() for _ in queries]
        producers = state.producers.of(run.values, len(queries))
        return [self._documents(r, corpus, names) for r, names in zip(rankings, producers)]

    # ------------------------------------------------------------------ edits
    def add_documents(self, documents: Sequence[Document], *, ids: Sequence[str] | None = None) -> list[str]:
        """Index more documents in every retriever of the pipeline (their ``add``: BM25 and dense; no
        refit), as a LangChain vector store's ``add_documents``.  A document's id is ``ids[i]``, else its
        own ``id`` (or ``metadata["id"]``), else a new UUID.  Returns the ids, in order.

        Everything is checked before any index changes (Documents, ids not already indexed nor given
        twice, metadata keys, each metadata value of the kind its field holds, every retriever able to
        ``add``); should a retriever still fail, those already edited are rolled back.  A metadata value of
        another kind than the field's values (``"2020"`` where the years are numbers: numbers, bools included,
        are one kind, strings another) is a :class:`DataError` naming the document, the key and both kinds: a
        filter compares with ``==`` and would miss one kind or the other.  A key a document does not have is
        fine.  Searches on other threads meanwhile see the documents before or after the edit (see the class
        notes)."""
        import uuid

        docs = _document_list("add_documents", documents, DataError, "add_texts")
        ids = _one_each("add_documents", "ids", "one id", ids, len(docs), "document")
        if not docs:
            return []
        given = [str(i) for i in ids] if ids is not None else [
            d.id or (str(d.metadata["id"]) if d.metadata.get("id") is not None else None) or uuid.uuid4().hex
            for d in docs]
        twice = repeated(given, 5)
        if twice:
            raise DataError(f"add_documents: the documents' ids must be unique; given more than once: {twice} "
                            f"({'ids=' if ids is not None else 'their own id or metadata id'}); give each document "
                            "its own id")
        new = Corpus.from_documents([d.model_copy(update={"id": i}) for d, i in zip(docs, given)])
        _check_reserved(new, "add_documents")
        check_metadata_kinds(new, "add_documents")  # (among themselves; against the index's below)
        self._encode_ahead(new)  # the slow part, before searches wait for the edit
        with self._editing() as pipe:  # the check and the edit as one (two adds of one id: the second is refused)
            held = _corpus_of(pipe)
            if held is not None and len(dup := held.row_of(new.ids.tolist(), missing="drop")):
                raise DataError(f"add_documents: {len(dup)} of the ids are already indexed, e.g. "
                                f"{held.ids[dup[0]]!r}; delete them first, or give other ids")
            if held is not None:  # (what a save can write was checked above: the kinds against the index's alone)
                check_added_kinds(new, "add_documents", held)
            self._edit(pipe, "add", new, lambda leaf: leaf.remove(new.ids.tolist()))
        return new.ids.tolist()

    def add_texts(self, texts: Iterable[str], metadatas: Iterable[Mapping[str, Any] | None] | None = None, *,
                  ids: Iterable[str] | None = None) -> list[str]:
        """:meth:`add_documents` of plain texts, as a LangChain vector store's ``add_texts``: one ``Document``
        per text, with ``metadatas[i]`` (default none) and the id ``ids[i]`` (default a new UUID).  Returns the
        ids, in order.  One string is a :class:`DataError` (its characters would be the documents), and so are
        ``metadatas`` or ``ids`` of another length than ``texts``."""
        if isinstance(texts, (str, bytes)):
            raise DataError(f"add_texts: expected a list of texts, got one string {texts!r:.60}; wrap it in a list")
        if isinstance(texts, Document):  # (a pydantic model iterates as its (field, value) pairs)
            raise DataError(f"add_texts: got one Document ({texts.page_content!r:.60}); expected a list of "
                            "strings (add_documents takes Documents)")
        texts = list(texts)
        metas, listed = _checked_texts("add_texts", texts, metadatas, ids, "add_documents")
        docs = [Document(page_content=t, metadata=m) for t, m in zip(texts, metas)]
        return self.add_documents(docs, ids=listed)

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The indexed documents of ``ids``, as a LangChain vector store's ``get_by_ids``: in the order of
        ``ids``, an unknown id skipped (so fewer documents may come back), each with its text as
        ``page_content``, its id as ``id`` and its own metadata (any key it was given,
        ``id`` and ``title`` as a retrieved Document's metadata has them; no ``score`` / ``rank``: nothing was
        retrieved).  Numbers are read as the string ids they write."""
        if ids is None or isinstance(ids, (str, bytes)):
            raise DataError(f"get_by_ids: expected a list of document ids, got {ids!r:.80}")
        with self._reading() as state:
            corpus = _corpus_of(state.pipeline)
        assert corpus is not None  # a built retriever's pipeline is fitted
        rows = corpus.row_of([str(i) for i in ids], missing="drop")
        texts, titles, doc_ids = corpus.texts[rows].tolist(), corpus.titles[rows].tolist(), corpus.ids[rows].tolist()
        cols = {key: copy.deepcopy(col[rows].tolist()) if col.dtype == object else col[rows].tolist()
                for key, col in corpus.metadata.items()}  # (copies: the caller may change what it gets)
        fill_id = "id" not in corpus.metadata
        docs = []
        for i in range(len(doc_ids)):  # as a retrieved Document's metadata (_documents), less score and rank
            meta: dict[str, Any] = {key: col[i] for key, col in cols.items() if col[i] is not None}
            if fill_id:
                meta["id"] = doc_ids[i]
            meta.setdefault("title", titles[i])
            docs.append(Document(page_content=texts[i], id=doc_ids[i], metadata=meta))
        return docs

    async def aadd_texts(self, texts: Iterable[str], metadatas: Iterable[Mapping[str, Any] | None] | None = None,
                         *, ids: Iterable[str] | None = None) -> list[str]:
        """:meth:`add_texts` for the event loop (LangChain ``VectorStore.aadd_texts``), in a worker thread."""
        return await run_in_executor(None, self.add_texts, texts, metadatas, ids=ids)

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """:meth:`get_by_ids` for the event loop (LangChain ``VectorStore.aget_by_ids``), in a worker thread."""
        return await run_in_executor(None, self.get_by_ids, ids)

    @contextmanager
    def _editing(self) -> Iterator[Operator]:
        """Hold the lock of the retriever's pipeline to write, and yield that pipeline (the one the retriever
        holds then: a pipeline assigned meanwhile is edited, not the one it replaced)."""
        while True:
            pipe = self.pipeline
            lock = lock_of(pipe)  # (steps put into the pipeline since share it from now on)
            with lock.writing():
                if self.pipeline is pipe:
                    self._lock = lock
                    yield pipe
                    return

    def _encode_ahead(self, new: Corpus) -> None:
        """Encode ``new``'s documents into the embedding cache for every dense retriever of the pipeline
        whose encoder is ragkit's own (cached), so that the edit, which searches wait for, reads them."""
        from ragkit.encoders import Encoder
        from ragkit.pipelines.yaml import walk_leaves

        for _, leaf in walk_leaves(self.pipeline):
            enc = getattr(leaf, "encoder", None) if callable(getattr(leaf, "_encode_docs", None)) else None
            if type(enc) is Encoder and enc.cache_enabled and getattr(leaf, "corpus_", None) is not None:
                enc.encode(new.full_texts)

    def delete(self, ids: Sequence[str] | None = None, **kwargs: Any) -> bool:
        """Remove the documents ``ids`` from every retriever of the pipeline (their ``remove``: BM25 and
        dense; no refit), as a LangChain vector store's ``delete``.  An unknown id changes nothing and is
        a :class:`~ragkit.errors.DataError`; should a retriever still fail, those already edited are
        rolled back.  Returns True."""
        if kwargs:
            raise ParamError(f"delete: unknown argument(s) {sorted(kwargs)}; expected ids")
        if ids is None or isinstance(ids, str):
            raise DataError(f"delete: expected a list of document ids, got {ids!r:.80}")
        with self._editing() as pipe:
            held = _corpus_of(pipe)
            assert held is not None  # a built retriever's pipeline is fitted
            rows = held.rows_to_remove(list(ids), "delete")
            if len(rows):
                gone, gone_ids = held.subset(rows), held.ids[rows].tolist()

                def realign(leaf: Any) -> None:  # a leaf not edited: the rows the undone ones hold now
                    leaf.remove(gone_ids)
                    leaf.add(gone)

                self._edit(pipe, "remove", gone_ids, lambda leaf: leaf.add(gone), realign)
        return True

    async def aadd_documents(self, documents: Sequence[Document], *, ids: Sequence[str] | None = None) -> list[str]:
        """:meth:`add_documents` for the event loop (LangChain ``VectorStore.aadd_documents``): run in a worker
        thread, so the loop goes on while the new documents are encoded and the edit waits for the searches."""
        return await run_in_executor(None, self.add_documents, documents, ids=ids)

    async def adelete(self, ids: Sequence[str] | None = None, **kwargs: Any) -> bool:
        """:meth:`delete` for the event loop (LangChain ``VectorStore.adelete``), in a worker thread."""
        return await run_in_executor(None, self.delete, ids, **kwargs)

    def _edit(self, pipe: Operator, method: str, arg: Any, undo: Callable[[Any], Any],
              realign: Callable[[Any], Any] | None = None) -> None:
        """``leaf.<method>(arg)`` on every fitted retriever (stateful leaf) of ``pipe``, each checked
        first to have it; on a failure, ``undo(leaf)`` on those already edited and ``realign(leaf)`` on the
        others (a removal undone appends the documents again: every retriever must hold the same rows),
        then the error."""
        from ragkit.pipelines.yaml import walk_leaves

        leaves = [(path, leaf) for path, leaf in walk_leaves(pipe)
                  if not leaf.stateless and getattr(leaf, "corpus_", None) is not None]
        cannot = [f"{path} ({leaf.name})" for path, leaf in leaves if not callable(getattr(leaf, method, None))]
        if cannot:
            from ragkit import registry

            verb = "add documents" if method == "add" else "remove documents"
            able = [n for n in registry.names() if not (cls := registry.get(n)).stateless  # (the list drifted
                    and callable(getattr(cls, method, None))]                              # when written out)
            raise ParamError(f"{'add_documents' if method == 'add' else 'delete'}: {', '.join(cannot)} cannot {verb} "
                             f"(only {', '.join(able)} can, without a refit); build a new retriever on the documents "
                             "you want instead")
        done = []
        try:
            for _, leaf in leaves:
                getattr(leaf, method)(arg)
                done.append(leaf)
        except BaseException as e:
            try:
                for leaf in done:
                    undo(leaf)
                if realign is not None and done:
                    for _, leaf in leaves[len(done):]:
                        realign(leaf)
            except Exception as again:  # noqa: BLE001 - reported with the first error
                raise DataError(f"{method}: {type(e).__name__}: {e}; undoing it failed too ({type(again).__name__}: "
                                f"{again}): the pipeline's retrievers may now hold different documents, and searches "
                                "say so; fit a new retriever") from e
            raise
        corpus = _corpus_of(pipe)
        assert corpus is not None
        self._corpus = corpus

    def _searched_corpus(self, pipeline: Operator | None = None) -> Corpus | None:
        """The corpus ``pipeline`` (default: the retriever's) searches now (``None`` while its retrievers
        disagree, in the middle of an edit of each of them on another thread: the search fails then, or is
        repeated)."""
        try:
            return _corpus_of(self.pipeline if pipeline is None else pipeline)
        except DataError:
            return None

    def _documents(self, r: Ranking, c: Corpus, producers: list[str] | None) -> list[Document]:
        """The documents of ranking ``r`` (rows of ``c``); ``producers``: the retrievers its query went
        through (``None``: not known, no ``operators`` key unless ``r`` names its fused branches)."""
        rows = r.rows
        ids = c.ids[rows].tolist()
        texts = c.texts[rows].tolist()
        titles = c.titles[rows].tolist()
        scores = r.scores.tolist()
        # object cells (lists, dicts, ... a document was given) are copied: a caller annotating a returned
        # document's metadata (tags.append) would otherwise change the index's own value
        meta_cols = {key: copy.deepcopy(col[rows].tolist()) if col.dtype == object else col[rows].tolist()
                     for key, col in c.metadata.items()}
        branch_names = [key[:-5] for key in r.fields if key.endswith(".rank") and f"{key[:-5]}.score" in r.fields]
        branch_cols = [(b, r.fields[f"{b}.rank"].tolist(), r.fields[f"{b}.score"].tolist()) for b in branch_names]
        taken = {f"{b}.{x}" for b in branch_names for x in ("rank", "score")}
        other = {key: v.tolist() for key, v in r.fields.items() if key not in taken}
        # "id" names the document id where no document has an "id" of its own (filter={"id": ...} matches
        # it then); where some have, it is theirs alone (the id is Document.id), as a filter reads it
        fill_id = "id" not in c.metadata
        docs = []
        for i in range(len(ids)):
            # the document's own metadata back unchanged: no None for keys it never had (the corpus
            # stores metadata as columns, a missing key is None), no "id" / "title" over its own
            meta: dict[str, Any] = {key: col[i] for key, col in meta_cols.items() if col[i] is not None}
            if fill_id:
                meta["id"] = ids[i]
            meta.setdefault("title", titles[i])
            meta.update(score=scores[i], rank=i + 1)
            if branch_cols:
                branches = {b: {"rank": ranks[i], "score": _num(sc[i])} for b, ranks, sc in branch_cols if ranks[i] > 0}
                meta["operators"] = list(branches)
                meta["branches"] = branches
            elif producers is not None:
                meta["operators"] = list(producers)
            if other:
                meta["fields"] = {key: _num(v[i]) for key, v in other.items()}
            docs.append(Document(page_content=texts[i], id=ids[i], metadata=meta))
        return docs

    # ------------------------------------------------------------------ LangChain hooks
    def configurable_fields(self, **kwargs: AnyConfigurableField) -> RunnableSerializable[str, list[Document]]:
        """LangChain's ``configurable_fields`` (``k=ConfigurableField(id="k")``,
        ``search_kwargs=ConfigurableField(id="search_kwargs")``): each configured call builds a retriever from
        this one's fields with the configured ones replaced; of ``k`` and ``search_kwargs["k"]``, the one the
        config sets wins (as the one assigned does: ``r.k = 2``), and a config setting both to different
        numbers is a ``ParamError``, as ``RagkitRetriever(k=2,
        search_kwargs={"k": 3})`` is."""
        plain = super().configurable_fields(**kwargs)  # (checks the field names)
        if type(plain) is not RunnableConfigurableFields:
            return plain
        return _ConfigurableRetriever(default=plain.default, fields=plain.fields)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: int | None = None, **kwargs: Any) -> list[Document]:
        """Top-``k`` documents for ``query``; other keyword arguments are search options."""
        for e in _query_errors([query], one=True).values():
            raise e
        return self._search([query], k, self._options(kwargs))[0]

    async def _aget_relevant_documents(self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun,
                                       k: int | None = None, **kwargs: Any) -> list[Document]:
        """Async path of ``ainvoke``: runs the search in a worker thread with ``k`` and the options.

        LangChain's default async path would drop the keyword arguments; this one keeps them
        and never blocks the event loop.
        """
        return await run_in_executor(None, self._get_relevant_documents, query,
                                     run_manager=run_manager.get_sync(), k=k, **kwargs)

    def _batch_setup(self, inputs: Any, config: RunnableConfig | list[RunnableConfig] | None,
                     kwargs: dict[str, Any], manager: type[CallbackManager] | type[AsyncCallbackManager]
                     ) -> tuple[list[Any], list[RunnableConfig], int | None, dict[str, Any], list[Any]]:
        """What :meth:`batch` and :meth:`abatch` share: the queries (a list), one config each, the call's
        ``k``, the search options, and one callback manager of class ``manager`` per query (one for them
        all when one config is given), configured as ``invoke`` / ``ainvoke`` configure theirs."""
        if isinstance(inputs, (str, bytes, Mapping)):  # its characters (keys) would be the queries
            raise DataError(f"batch: expected a list of query strings, got {type(inputs).__name__} {inputs!r:.60}; "
                            + ("wrap it in a list, or call invoke" if isinstance(inputs, (str, bytes)) else
                               "pass list(mapping.values())"))
        inputs = list(inputs)
        if not inputs:
            return [], [], None, {}, []
        configs = get_config_list(config, len(inputs))
        k = kwargs.pop("k", None)
        options = self._options(kwargs)
        ls = self._get_ls_params()

        def configure(cfg: RunnableConfig) -> Any:
            return manager.configure(
                cfg.get("callbacks"), None, verbose=bool(kwargs.get("verbose", False)),
                inheritable_tags=cfg.get("tags"), local_tags=self.tags,
                inheritable_metadata={**(cfg.get("metadata") or {}), **ls}, local_metadata=self.metadata,
            )

        # one config for the whole batch (the common case): configure its callback manager once
        shared = configure(configs[0]) if not isinstance(config, Sequence) else None
        managers = [shared if shared is not None else configure(cfg) for cfg in configs]
        return inputs, configs, k, options, managers

    def batch(self, inputs: list[str], config: RunnableConfig | list[RunnableConfig] | None = None, *,
              return_exceptions: bool = False, **kwargs: Any) -> list[list[Document]]:
        """Retrieve for a list of queries with ONE ``pipeline.search`` call (not one call per query).

        ``k`` and search options in ``kwargs`` apply to every query.  Callbacks get one
        retriever run per query, as with ``invoke``.  A query that is no string (or holds a lone
        surrogate) fails alone with ``return_exceptions``; without it, the batch raises that query's
        ``DataError`` before searching, every run it started ended (the good queries' with a ``DataError``
        saying they were not searched); an error of the search fails every query.
        """
        inputs, configs, k, options, cms = self._batch_setup(inputs, config, kwargs, CallbackManager)
        if not inputs:
            return []
        runs = [cm.on_retriever_start(None, q, name=cfg.get("run_name") or self.get_name(),
                                      run_id=cfg.pop("run_id", None)) for cm, q, cfg in zip(cms, inputs, configs)]
        bad = _query_errors(inputs, one=False)
        for i, e in bad.items():
            runs[i].on_retriever_error(e)
        if bad and not return_exceptions:  # nothing is searched: each good query's run ends too (as an error)
            unsearched = _unsearched(bad, len(inputs))
            for i in range(len(inputs)):
                if i not in bad:
                    runs[i].on_retriever_error(unsearched)
            raise next(iter(bad.values()))
        good = [i for i in range(len(inputs)) if i not in bad]
        try:
            found = self._search([inputs[i] for i in good], k, options) if good else []
        except Exception as e:  # the pipeline failed: every query that reached it fails with it
            for i in good:
                runs[i].on_retriever_error(e)
            if return_exceptions:  # Runnable.batch's return type has no room for the exceptions it returns
                failed: list[Any] = [bad.get(i, e) for i in range(len(inputs))]
                return failed
            raise
        results: list[Any] = [bad.get(i) for i in range(len(inputs))]
        for i, docs in zip(good, found):
            runs[i].on_retriever_end(docs)
            results[i] = docs
        return results

    async def abatch(self, inputs: list[str], config: RunnableConfig | list[RunnableConfig] | None = None, *,
                     return_exceptions: bool = False, **kwargs: Any) -> list[list[Document]]:
        """:meth:`batch` for the event loop: the same results, with ONE ``pipeline.search`` call for the
        whole batch, run in a worker thread (the event loop is not blocked); the callbacks run on the
        event loop, as ``ainvoke``'s do (async callback managers: an ``AsyncCallbackHandler`` that feeds an
        ``asyncio.Queue`` of the app's loop works)."""
        inputs, configs, k, options, cms = self._batch_setup(inputs, config, kwargs, AsyncCallbackManager)
        if not inputs:
            return []
        runs = [await cm.on_retriever_start(None, q, name=cfg.get("run_name") or self.get_name(),
                                            run_id=cfg.pop("run_id", None)) for cm, q, cfg in zip(cms, inputs, configs)]
        bad = _query_errors(inputs, one=False)
        for i, e in bad.items():
            await runs[i].on_retriever_error(e)
        if bad and not return_exceptions:  # nothing is searched: each good query's run ends too (as an error)
            unsearched = _unsearched(bad, len(inputs))
            for i in range(len(inputs)):
                if i not in bad:
                    await runs[i].on_retriever_error(unsearched)
            raise next(iter(bad.values()))
        good = [i for i in range(len(inputs)) if i not in bad]
        try:
            found = await run_in_executor(None, self._search, [inputs[i] for i in good], k, options) if good else []
        except Exception as e:  # the pipeline failed: every query that reached it fails with it
            for i in good:
                await runs[i].on_retriever_error(e)
            if return_exceptions:
                failed: list[Any] = [bad.get(i, e) for i in range(len(inputs))]
                return failed
            raise
        results: list[Any] = [bad.get(i) for i in range(len(inputs))]
        for i, docs in zip(good, found):
            await runs[i].on_retriever_end(docs)
            results[i] = docs
        return results


class _ConfigurableRetriever(RunnableConfigurableFields):
    """LangChain's ``RunnableConfigurableFields`` for a :class:`RagkitRetriever`: the retriever of a call is
    built knowing which fields its config set (:data:`_CONFIGURED`), so that a configured ``search_kwargs``
    holding ``k`` wins over the ``k`` passed again from the configured retriever, and a configured ``k`` over
    its ``search_kwargs["k"]``."""

    def _prepare(self, config: RunnableConfig | None = None) -> tuple[Any, RunnableConfig]:
        given = ensure_config(config).get("configurable", {})
        configured = frozenset(name for name, spec in self.fields.items()
                               if not isinstance(spec, ConfigurableField) or spec.id in given)
        token = _CONFIGURED.set(configured)
        try:
            return super()._prepare(config)
        finally:
            _CONFIGURED.reset(token)


def _unsearched(bad: Mapping[int, DataError], n: int) -> DataError:
    """The error that ends the callback run of each good query of a batch of ``n`` that is not searched
    because of the queries ``bad`` (``return_exceptions=False``): every run started is ended, as
    ``Runnable.batch`` ends them, so a tracer shows no run left open."""
    error = next(iter(bad.values()))  # (its message names its query)
    return DataError(f"not searched: {len(bad)} of the batch's {n} queries failed ({error}), so "
                     "the batch raised before searching; fix those, or pass return_exceptions=True to search the "
                     "others")


def _query_errors(queries: list[Any], *, one: bool) -> dict[int, DataError]:
    """``{position: DataError}`` for each query that is no string or holds a lone surrogate (no Unicode
    text: ``errors="surrogateescape"`` bytes), named as the caller gave it: ``the query`` (``one``: an
    ``invoke``), else ``query <position>`` of the batch.  Batched: one ``str.join`` and one UTF-8 test
    (``isascii`` first) over the whole batch; only a batch holding a bad query is looked at query by query."""
    def where(i: int) -> str:
        return "the query" if one else f"query {i}"

    try:
        joined = "\x00".join(queries)
    except TypeError:  # some query is no string: which, one by one
        errors = {i: DataError(f"{where(i)}: expected a string, got {type(q).__name__} {q!r:.80}")
                  for i, q in enumerate(queries) if not isinstance(q, str)}
        joined = "\x00".join(q for q in queries if isinstance(q, str))
    else:
        errors = {}
    if _utf8_clean(joined):
        return errors
    for i, q in enumerate(queries):
        if isinstance(q, str) and (hit := _SURROGATE.search(q)) is not None:
            errors[i] = DataError(f"{where(i)} holds a lone surrogate {hit.group()!r} at character {hit.start()}, "
                                  "which is no Unicode text (bytes decoded with errors='surrogateescape'?); decode "
                                  "the source with its real encoding")
    return dict(sorted(errors.items()))


def _positional(method: str, first: str, args: tuple[Any, ...], keywords: str) -> ParamError:
    """The error for arguments given by position after ``first`` to ``method`` (keyword-only)."""
    shown = ", ".join(f"{type(a).__name__} {a!r:.40}" for a in args)
    return ParamError(f"RagkitRetriever.{method}: takes only {first} by position, got {len(args)} more ({shown}); "
                      f"pass the rest by keyword: {method}({first}, {keywords}) (LangChain's BM25Retriever."
                      f"{method} takes metadatas second; ragkit's first keyword used to be pipeline)")


def _document_list(where: str, documents: Any, error: type[DataError] | type[InputTypeError],
                   texts_method: str) -> list[Document]:
    """``documents`` as a list of LangChain Documents, or ``error`` saying what ``where`` was given instead: one
    Document (a pydantic model iterates as its ``(field, value)`` pairs), one string (its characters would be the
    documents; ``texts_method`` takes strings), ``None`` or anything else that is no collection, or an item that is
    no Document."""
    if isinstance(documents, Document):
        raise error(f"{where}: got one Document ({documents.page_content!r:.60}); expected a list of Documents: wrap "
                    "it in a list")
    if isinstance(documents, (str, bytes)):
        raise error(f"{where}: got one string ({documents!r:.60}); expected a list of LangChain Documents "
                    f"({texts_method} takes strings)")
    if isinstance(documents, Mapping) or not isinstance(documents, Iterable):
        raise error(f"{where}: got {type(documents).__name__} ({documents!r:.60}); expected a list of LangChain "
                    "Documents")
    docs = list(documents)
    bad = next((i for i, d in enumerate(docs) if not isinstance(d, Document)), None)
    if bad is not None:
        hint = f" ({texts_method} takes strings)" if isinstance(docs[bad], str) else ""
        raise error(f"{where}: item {bad} is a {type(docs[bad]).__name__} ({docs[bad]!r:.60}), expected a LangChain "
                    f"Document{hint}")
    return docs


def _one_each(where: str, name: str, what: str, value: Any, n: int, per: str = "text") -> list[Any] | None:
    """``value`` (``metadatas`` or ``ids`` of ``n`` texts, or of ``n`` documents: ``per``) as a list of ``n``, or
    ``None`` when not given; one string, mapping or Document (its characters, keys or fields would be the values),
    anything that is no collection, or another length than ``n`` is a :class:`DataError` saying what ``where``
    expected: ``ids must list one id per text (2), got ['x']``."""
    if value is None:
        return None
    listed = (list(value) if isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping, BaseModel))
              else None)
    if listed is None or len(listed) != n:
        raise DataError(f"{where}: {name} must list {what} per {per} ({n}), got {value!r:.80}")
    return listed


def _checked_texts(where: str, texts: list[Any], metadatas: Any, ids: Any,
                   docs_method: str) -> tuple[list[dict[str, Any]], list[str] | None]:
    """The checks of ``add_texts`` and ``from_texts`` (``where``), before any Document is made: every text a
    string, ``metadatas`` one dict (or ``None``) per text, ``ids`` one id per text; a :class:`DataError` naming
    the first that is not.  Returns each text's metadata (a new dict) and the ids as strings (``None``: not
    given).  A Document among the texts is said to be ``docs_method``'s."""
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        hint = f" ({docs_method} takes Documents)" if isinstance(texts[bad], Document) else ""
        raise DataError(f"{where}: text {bad} is {type(texts[bad]).__name__} {texts[bad]!r:.60}, expected a "
                        f"string{hint}")
    metas = _one_each(where, "metadatas", "one dict", metadatas, len(texts))
    listed = _one_each(where, "ids", "one id", ids, len(texts))
    if metas is None:
        return [{} for _ in texts], None if listed is None else [str(i) for i in listed]
    bad = next((i for i, m in enumerate(metas) if m is not None and not isinstance(m, Mapping)), None)
    if bad is not None:
        raise DataError(f"{where}: metadatas[{bad}] is {type(metas[bad]).__name__} {metas[bad]!r:.60}, "
                        "expected a dict")
    return [dict(m or {}) for m in metas], None if listed is None else [str(i) for i in listed]


class _Producers:
    """Which retrievers produced each query's documents, for the ``operators`` of their metadata.

    Built once per pipeline (:func:`_producers_of`): ``fixed`` (every query: the tree's retrievers, a tree
    without ``route``), or a ``route`` that is a step of the top-level pipeline (the tree's only one), whose
    label per query the run keeps in ``values["route"]``: the taken branch's retrievers with those outside
    the route; ``None`` for every query in any other tree with a ``route`` (not known)."""

    def __init__(self, fixed: list[str] | None, route: Any = None, outside: list[str] | None = None) -> None:
        self.fixed = fixed
        self.route = route
        self.outside = outside or []

    def of(self, values: Mapping[str, list[Any]], n: int) -> list[list[str] | None]:
        """The retrievers of each of ``n`` queries (``None``: not known), from the run's ``values``."""
        if self.route is None:
            return [self.fixed] * n
        labels = values.get("route")
        if labels is None or len(labels) != n:
            return [None] * n
        by_label: dict[str, list[str] | None] = {}
        for label in set(map(str, labels)):  # a few labels; their branches' names once each
            branch = self._branch(label)
            by_label[label] = None if branch is None else list(dict.fromkeys(self.outside + _retriever_leaves(branch)))
        return [by_label[str(x)] for x in labels]

    def _branch(self, label: str) -> Operator | None:
        """The branch a query labelled ``label`` takes (as ``Route`` chooses it), or None."""
        route = self.route
        if label in route.branches:
            return route.branches[label]
        if route.default_label is not None:
            return route.branches[route.default_label]
        return route.default


def _retriever_leaves(op: Operator) -> list[str]:
    from ragkit.pipelines._compose import iter_leaves

    return list(dict.fromkeys(leaf.name for leaf in iter_leaves(op) if leaf.kind == "retriever"))


def _producers_of(op: Operator) -> _Producers:
    """:class:`_Producers` of the tree ``op`` (walked once, when the retriever is built)."""
    from ragkit.pipelines._compose import Pipeline, Route

    routes, seen, stack = [], set(), [op]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Route):
            routes.append(node)
        stack.extend(node.children())
    if not routes:
        return _Producers(_retriever_names(op))
    steps = op.steps if isinstance(op, Pipeline) else [op]
    top = [s for s in steps if isinstance(s, Route)]
    if len(routes) == 1 and len(top) == 1 and top[0] is routes[0]:
        outside = [name for s in steps if s is not routes[0] for name in _retriever_leaves(s)]
        return _Producers(None, routes[0], outside)
    return _Producers(None)


# Keys each returned Document's metadata gets from the retrieval: a document's own key of the same name is refused
RESERVED_METADATA = ("score", "rank", "operators", "branches", "fields")


def _check_reserved(corpus: Corpus, where: str) -> None:
    clash = [key for key in RESERVED_METADATA if key in corpus.metadata]
    if clash:
        raise ParamError(
            f"{where}: the documents' metadata has {', '.join(repr(c) for c in clash)}, which RagkitRetriever "
            f"writes into every returned Document's metadata ({', '.join(RESERVED_METADATA)}); rename "
            f"{'that key' if len(clash) == 1 else 'those keys'} (e.g. 'doc_{clash[0]}')")


# ---------------------------------------------------------------------------------- encoders
def _unit(x: Any, n_texts: int, dim: int | None, who: str) -> np.ndarray:
    """What an ``Embeddings`` returned for ``n_texts`` texts, checked (one vector each, all of
    ``dim`` numbers when known) and L2-normalised, ``(n_texts, dim)`` float32."""
    try:
        v = np.asarray(x, dtype=np.float32)
    except (ValueError, TypeError):
        lens = sorted({len(r) for r in x}) if isinstance(x, list) else None
        raise DataError(f"{who}: expected {n_texts} vectors of equal length, got vectors of lengths {lens}") from None
    if v.ndim != 2 or len(v) != n_texts:
        raise DataError(f"{who}: expected {n_texts} vectors (one per text), got an array of shape {v.shape}")
    if dim is not None and v.shape[1] != dim:
        raise DataError(f"{who}: expected vectors of {dim} numbers (the encoder's dim), got {v.shape[1]}")
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


class LangChainEmbeddingsEncoder:
    """Any LangChain ``Embeddings`` with the interface of :class:`ragkit.encoders.Encoder`.

    ``encode(texts)`` calls ``embed_documents`` and ``encode_queries(texts)`` calls
    ``embed_query`` per text, both returning ``(n, dim)`` float32 L2-normalised vectors
    (ragkit's dense operators score by inner product = cosine).

    Parameters
    ----------
    embeddings : langchain_core.embeddings.Embeddings
    key : str, optional
        Identity of the model and its settings: names the query vectors shared between
        operators and the on-disk cache folder.  Default: ``langchain:<Class>:<hash of its
        settings>`` (pydantic models), ``langchain:RagkitEmbeddings:<its encoder's key>``, or
        ``langchain:<Class>:<object id>``, which differs in every process: a pipeline saved with it
        loads only where the encoder is registered with that ``key`` (pass one).
    dim : int, optional
        Vector dimension; found by embedding one probe text when not given.
    cache : bool
        Keep document vectors in ragkit's on-disk cache under ``key`` (default off: pass a
        ``key`` that truly names the model and settings before turning it on).
    batch_size : int
        Texts per ``embed_documents`` call.

    Examples
    --------
    >>> from langchain_core.embeddings import DeterministicFakeEmbedding          # doctest: +SKIP
    >>> enc = LangChainEmbeddingsEncoder(DeterministicFakeEmbedding(size=64)).register("fake")  # doctest: +SKIP
    >>> Dense(model="fake").fit(corpus)                                              # doctest: +SKIP
    """

    def __init__(self, embeddings: Embeddings, *, key: str | None = None, dim: int | None = None,
                 cache: bool = False, batch_size: int = 256) -> None:
        if not isinstance(embeddings, Embeddings):
            raise ParamError("LangChainEmbeddingsEncoder: expected a LangChain Embeddings, "
                             f"got {type(embeddings).__name__}")
        if batch_size < 1:
            raise ParamError(f"LangChainEmbeddingsEncoder: batch_size must be >= 1, got {batch_size}")
        self.embeddings = embeddings
        self.batch_size = int(batch_size)
        self.cache_enabled = bool(cache)
        self.key = key or self._default_key(embeddings)
        self._dim = dim
        self._cache: EmbeddingCache | None = None
        self.n_encoded = 0

    @staticmethod
    def _default_key(emb: Embeddings) -> str:
        name = type(emb).__name__
        if isinstance(emb, RagkitEmbeddings):  # its encoder's key names the model and settings, in every process
            return f"langchain:{name}:{emb.encoder.key}"
        dump = getattr(emb, "model_dump_json", None)
        if dump is not None:
            try:
                return f"langchain:{name}:{hashlib.sha1(dump().encode()).hexdigest()[:16]}"
            except Exception:  # noqa: BLE001 - settings not serialisable: fall back to identity
                pass
        return f"langchain:{name}:{id(emb):x}"

    def __repr__(self) -> str:
        return f"LangChainEmbeddingsEncoder({type(self.embeddings).__name__}, key={self.key!r})"

    @property
    def dim(self) -> int:
        """Width of the vectors (an int): the length of the LangChain model's embedding of a probe query,
        asked for once, on first use."""
        if self._dim is None:
            self._dim = int(len(self.embeddings.embed_query("dimension probe")))
        return self._dim

    @property
    def store(self) -> EmbeddingCache:
        """The on-disk cache of document vectors (float32 ``(dim,)`` rows keyed by text), in a folder named
        after :attr:`key` under ragkit's cache directory (``embeddings/``); opened on first use."""
        if self._cache is None:
            from ragkit.encoders.cache import EmbeddingCache
            from ragkit.eval.beir import cache_dir

            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.key)
            self._cache = EmbeddingCache(cache_dir() / "embeddings", safe)
        return self._cache

    def _forward(self, texts: list[str]) -> np.ndarray:
        parts = []
        for i in range(0, len(texts), self.batch_size):
            batch = texts[i:i + self.batch_size]
            parts.append(_unit(self.embeddings.embed_documents(batch), len(batch), self._dim,
                               f"{type(self.embeddings).__name__}.embed_documents (texts {i}..{i + len(batch) - 1})"))
            if self._dim is None:
                self._dim = int(parts[-1].shape[1])
        out = np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
        self.n_encoded += len(texts)
        return out

    def encode(self, texts: Sequence[str], *, cache: bool | None = None, progress: bool | None = None) -> np.ndarray:
        """Document vectors, ``(n, dim)`` float32, unit length (cached on disk when enabled)."""
        texts = as_texts(texts, "LangChainEmbeddingsEncoder.encode")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if not (self.cache_enabled if cache is None else cache):
            return self._forward(texts)
        return self.store.fetch_or_compute(texts, self._forward)[0]

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors (``embed_query`` per text), ``(n, dim)`` float32, unit length."""
        texts = as_texts(texts, "LangChainEmbeddingsEncoder.encode_queries")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return _unit([self.embeddings.embed_query(t) for t in texts], len(texts), self.dim,
                     f"{type(self.embeddings).__name__}.embed_query")

    def register(self, name: str, *, replace: bool = False) -> "LangChainEmbeddingsEncoder":
        """Register under ``name`` so that ``Dense(model=name)`` (via ``get_encoder``) uses it."""
        from ragkit.encoders.custom import register_encoder

        return register_encoder(name, self, replace=replace)


class RagkitEmbeddings(Embeddings):
    """ragkit's encoder as a LangChain ``Embeddings`` (document vectors use its on-disk cache).

    Parameters
    ----------
    model : str
        Sentence-transformers model name or folder, or a name registered with
        ``register_encoder`` (default all-MiniLM-L6-v2, offline).
    encoder : object, optional
        An encoder object to use instead of ``model``.
    **encoder_kwargs
        Settings for :func:`ragkit.encoders.get_encoder` (``batch_size``, ``max_seq_length``...).

    Examples
    --------
    >>> emb = RagkitEmbeddings()                          # doctest: +SKIP
    >>> len(emb.embed_query("scurvy"))                    # doctest: +SKIP
    384
    """

    def __init__(self, model: str | None = None, *, encoder: Any = None, **encoder_kwargs: Any) -> None:
        from ragkit.encoders import DEFAULT_MODEL, get_encoder

        if encoder is not None and (model is not None or encoder_kwargs):
            raise ParamError("RagkitEmbeddings: pass either encoder=... or model/settings, not both")
        self.encoder = encoder if encoder is not None else get_encoder(model or DEFAULT_MODEL, **encoder_kwargs)

    def __repr__(self) -> str:
        return f"RagkitEmbeddings({self.encoder!r})"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encoder.encode(list(texts)).astype(float).tolist() if texts else []

    def embed_query(self, text: str) -> list[float]:
        return self.encoder.encode_queries([text])[0].astype(float).tolist()
