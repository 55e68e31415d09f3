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
import json
import logging
import math
import numbers
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForRetrieverRun,
    CallbackManager,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import ensure_config, get_config_list, merge_configs, run_in_executor
from langchain_core.runnables.configurable import RunnableConfigurableFields
from langchain_core.runnables.utils import AnyConfigurableField, ConfigurableField
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from ragkit._corpus import _doc_id, _same_id
from ragkit._files import user_path
from ragkit._locks import ReadWriteLock, lock_of
from ragkit._saves import _json_default
from ragkit.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    DataError,
    InputTypeError,
    NotFittedError,
    ParamError,
    repeated,
)

# What moved to the modules this one was split into; its public names stay importable from here (``__all__``, or
# ``X as X``: re-exported)
from ragkit.integrations._copies import (
    _corpus_of,
    _extends,
    _holds_index,
    _refuse_untrained_fit,
    _same_documents,
    _sharing_copy,
    _trained_steps,
)
from ragkit.integrations._embeddings import LangChainEmbeddingsEncoder, RagkitEmbeddings
from ragkit.integrations._inputs import (
    _LANGCHAIN_KWARGS,
    RESERVED_METADATA as RESERVED_METADATA,
    InputListError,
    _batch_list,
    _check_reserved,
    _checked_texts,
    _document_list,
    _one_each,
    _positional,
    _query_errors,
    _unsearched,
    _written_ids,
)
from ragkit.integrations._producers import _Producers, _producers_of
from ragkit.integrations._sources import (
    RETRIEVER_FILE as RETRIEVER_FILE,
    _load_with_settings,
    as_corpus,
    load_pipeline_like,
    source_identity,
)
from ragkit.integrations.langchain_generate import RagkitGenerator
from ragkit.metadata import AllOf, all_filters, check_added_kinds, check_metadata_kinds
from ragkit.operator import Operator
from ragkit.options import _positive_k, check_options
from ragkit.params import MAX_INT, refusal_of
from ragkit.pipelines.yaml import unfitted_copy
from ragkit.types import Corpus, Ranking, TrainSet, ids_and_texts

if TYPE_CHECKING:
    import numpy as np
    from typing_extensions import Self


__all__ = ["RagkitRetriever", "RagkitGenerator", "LangChainEmbeddingsEncoder", "RagkitEmbeddings", "as_corpus",
           "load_pipeline_like"]

#: searches made for one call whose documents were each time edited on another thread before a clear error
_EDIT_RETRIES = 5

#: LangChain's VectorStoreRetriever vocabulary (``as_retriever(search_type="mmr", search_kwargs={"lambda_mult": ...,
#: "fetch_k": ...})``): no search options of ragkit's, whose pipeline is how it searches (its MMR and score
#: threshold are pipeline steps); an error naming one of them says what ragkit takes instead (:func:`_langchain_hint`)
_LANGCHAIN_WORDS = ("search_type", "lambda_mult", "fetch_k")

#: what an error naming ``lambda_mult``, ``fetch_k`` or ``search_type="mmr"`` adds (:func:`_langchain_hint`)
MMR_HINT = ("ragkit's MMR is a pipeline step: RagkitRetriever(pipeline=Dense(k=fetch_k) | MMR(k=..., "
            "lambda_mult=...)), and per call mmr={'lambda_mult': ..., 'fetch_k': ...}")

#: what an error naming ``search_type`` adds, by its value (:func:`_langchain_hint`); any other value: ``None``'s
_SEARCH_TYPE_HINTS = {
    "mmr": MMR_HINT,
    "similarity": "ranking the documents by their similarity to the query is what the pipeline does: leave "
                  "search_type out",
    "similarity_score_threshold": "ragkit's score threshold is a pipeline step: RagkitRetriever(pipeline=Dense() | "
                                  "ScoreThreshold(threshold=...)), and per call score_threshold={'threshold': ...}",
    None: "LangChain's 'similarity' is what the pipeline does; its 'mmr' and 'similarity_score_threshold' are "
          "pipeline steps of ragkit's: MMR, ScoreThreshold",
}


def _langchain_hint(key: str, value: Any) -> str:
    """What an error naming ``key``, one of :data:`_LANGCHAIN_WORDS` given as ``value``, says ragkit takes instead:
    for ``search_type``, by its value (:data:`_SEARCH_TYPE_HINTS`: ``"similarity"`` is what ragkit does,
    ``"similarity_score_threshold"`` a ``ScoreThreshold`` step, ``"mmr"`` an ``MMR`` step)."""
    if key != "search_type":
        return MMR_HINT
    hint = _SEARCH_TYPE_HINTS.get(value if isinstance(value, str) else None, _SEARCH_TYPE_HINTS[None])
    return f"no search_type: the pipeline is how it searches; {hint}"

#: while LangChain builds a retriever from a configured one (``configurable_fields``: every field of the
#: configured retriever passed again, the configured ones replaced), the names of the fields the config set
#: (:class:`_ConfigurableRetriever`); ``None`` for any other construction
_CONFIGURED: ContextVar[frozenset[str] | None] = ContextVar("ragkit_configured_fields", default=None)

#: set while :meth:`RagkitRetriever._assign` checks all but the last of several fields assigned at once: their own
#: checks only, :meth:`RagkitRetriever._build` running once, with the last
_DEFER_BUILD: ContextVar[bool] = ContextVar("ragkit_defer_build", default=False)


# ---------------------------------------------------------------------------------- helpers
def merge_options(base: Mapping[str, Any], call: Mapping[str, Any]) -> dict[str, Any]:
    """Search options of one call over the retriever's defaults: a call's ``filter`` narrows the default
    ``filter`` (both apply, as an operator's own ``filter`` parameter and a call's do: the AND of their masks,
    :func:`~ragkit.metadata.all_filters`; ``{"tags": "x"}`` then ``{"tags": "y"}``: the documents tagged both),
    an operator's options merge option by option (``{"bm25": {"n_jobs": 4}}`` then ``bm25={"k": 5}``: both),
    anything else the call sets replaces the default.  A ``filter`` of ``None`` is not given (as a call's
    ``k=None``), at every level (``filter=None``, ``bm25={"filter": None}``): it never drops a default filter (a
    tenant's, from ``search_kwargs``).  Values are checked later, by ``search``."""
    out = dict(base)
    for key, value in call.items():
        if key == "filter" and value is None:  # not given: the default filter, if any, stays
            continue
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


_log = logging.getLogger("ragkit")

def _rankings_only(op: Operator) -> dict[str, Any]:
    """The search options that keep every ``generate`` step of the tree ``op`` from running its language model (it
    passes the rankings on: :func:`~ragkit.generators.operator.rankings_only`), ``{}`` for a tree without one: a
    retriever returns documents, so answers would be thrown away (and an LLM call per query is slow).  Noted once
    on the ``ragkit`` logger (INFO) when the retriever is built; ``generate={"answer": True}`` is refused
    (:func:`_refuse_answers`)."""
    from ragkit.generators.operator import rankings_only

    options = rankings_only(op)
    if options:
        _log.info("RagkitRetriever: the pipeline's generate step is not run (it passes its rankings on): a retriever "
                  "returns documents, so its answers would be thrown away; answer with the pipeline's own search, "
                  "or with a chat model after the retriever in the chain")
    return options


def _refuse_answers(options: Mapping[str, Any], where: str) -> None:
    """Refuse ``generate={"answer": True}`` among ``options`` (a call's, or ``search_kwargs``: ``where`` says which,
    as the words before the option's name): a :class:`ParamError` saying where to get answers.  The step would run
    its language model once per query, and a retriever, which returns documents, would throw the answers away."""
    gen = options.get("generate")
    if isinstance(gen, Mapping) and gen.get("answer") is True:
        raise ParamError(f"{where}generate.answer: got True; a retriever returns documents, so the generate step's "
                         "answers would be thrown away (after one language-model call per query): answer with the "
                         "pipeline's own search (pipeline.search(queries).values['answer']), or put RagkitGenerator "
                         "(or a chat model) after the retriever in the chain", path="options.generate.answer")


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
        ``invoke`` / ``ainvoke`` / ``batch`` are merged over them (a call's ``filter`` narrows the default
        one; ``filter=None``, there or in an operator's options, is not given).  The ``k`` of a call is, first
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
        LangChain's VectorStoreRetriever words (``search_type``, ``lambda_mult``, ``fetch_k``), as arguments,
        ``search_kwargs`` keys or call options, are refused saying what ragkit takes instead, by value:
        ``search_type="similarity"`` is what the pipeline does (leave it out); ``"similarity_score_threshold"``
        is a pipeline step (``Dense() | ScoreThreshold(threshold=...)``, per call
        ``score_threshold={"threshold": ...}``); ``"mmr"``, ``lambda_mult`` and ``fetch_k``: ragkit's MMR is a
        pipeline step (``Dense(k=fetch_k) | MMR(k=..., lambda_mult=...)``), tuned per call with
        ``mmr={"lambda_mult": ...}``.

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
    built), and ``generate={"answer": True}`` (per call or in ``search_kwargs``) is a ``ParamError``.  Answer with
    :class:`RagkitGenerator` (or a chat model) after the retriever in the chain, or with ``pipeline.search``.

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
        except ParamError as e:  # LangChain's words (search_type="mmr", fetch_k=20): what ragkit takes instead
            word = next((key for key in _LANGCHAIN_WORDS if key in data), None)
            if word is None:
                raise
            raise ParamError(f"{e}; {_langchain_hint(word, data[word])}", e.path) from None

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

    k: int = Field(default=4, ge=1, le=MAX_INT, strict=True, description="Documents per query.")
    """Documents returned per query; ``invoke(q, k=...)`` and ``search_kwargs["k"]`` override it."""

    @field_validator("k", mode="before")
    @classmethod
    def _integral_k(cls, value: Any) -> Any:
        """An integer of another type (``np.int64(2)``, as ``search_kwargs`` and ``invoke`` take) as an int; a bool,
        a float or a string is left to the strict check, which refuses it."""
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):  # (np.bool_ is no Integral)
            return int(value)
        return value

    search_kwargs: dict[str, Any] = Field(default_factory=dict, description="Default pipeline.search options.")
    """Default search options (``k``, ``filter``, ``{operator: {option: value}}``); per-call kwargs win, and a
    call's ``k`` raises an operator's own ``k`` set here below it (``{"knn_embed": {"k": 4}}``, ``invoke(q, k=8)``:
    8 documents)."""

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
            # r.k = 5, r.search_kwargs = {...}: a filter checked against the documents the pipeline holds now
            # (another retriever sharing it may have added some, with fields of their own, since this one was built)
            self._check_search_kwargs(self._op, self._searched_corpus(self._op))
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
        self._producers = _producers_of(op)
        self._rankings_only = _rankings_only(op)
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
            op = unfitted_copy(op)
        op.fit(docs, self.train)
        return op

    def _check_search_kwargs(self, op: Operator, searched: Corpus | None) -> None:
        """``search_kwargs`` checked against the tree ``op`` (and a filter against ``searched``): ParamError.

        :func:`~ragkit.options.check_options` refuses every filter a search would refuse (a field ``searched`` does
        not have, a value of a kind its field does not hold: ``"2006"`` for years held as numbers, which would match
        no document whatever the index holds; a filter for a retriever that does not apply one) from the fields'
        filter codes, without making a mask over the corpus."""
        bad = sorted(set(self.search_kwargs) & _LANGCHAIN_KWARGS)
        if bad:
            raise ParamError(f"search_kwargs: {bad} are not search options (LangChain's own arguments: give them "
                             "in the call's config)")
        try:  # the options of the whole tree, a filter against the corpus searched
            check_options(op, self.search_kwargs, searched)
        except ParamError as e:
            key = e.path.removeprefix("options.")
            hint = f"; {_langchain_hint(key, self.search_kwargs.get(key))}" if key in _LANGCHAIN_WORDS else ""
            raise ParamError(f"search_kwargs: {e}{hint}", path=e.path) from None
        except DataError as e:  # a filter value of a kind its field does not hold (Corpus.check_filter_kinds)
            raise ParamError(f"search_kwargs: {str(e).removeprefix('search option ')}",
                             path=e.path or "options.filter") from None
        _refuse_answers(self.search_kwargs, "search_kwargs: search option ")

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
                   ids: Iterable[str | None] | None = None, metadatas: Iterable[Mapping[str, Any] | None] | None = None,
                   **kwargs: Any) -> "RagkitRetriever":
        """Fit ``pipeline`` (default: BM25) on plain texts and wrap it.  ``texts`` may be a mapping
        ``{doc_id: text}``; one string, one Document or ``None`` is an :class:`~ragkit.errors.InputTypeError` (its
        characters would be the documents), as ``from_documents`` says (a :class:`DataError` too, as before).  The
        texts, ``metadatas`` and ``ids`` are checked as :meth:`add_texts` checks them, before anything is fitted: a text
        that is no string, ``metadatas`` or ``ids`` of another length than ``texts`` (or one string), a metadata
        that is no dict are each a :class:`DataError` naming it.

        Everything after ``texts`` is keyword-only: LangChain's ``BM25Retriever.from_texts(texts, metadatas,
        ids)`` takes ``metadatas`` second, ragkit's took ``pipeline``; an argument given by position is a
        :class:`ParamError` saying so."""
        if args:
            raise _positional("from_texts", "texts", args, "metadatas=..., ids=..., pipeline=..., k=...")
        if isinstance(texts, Document):  # (a pydantic model iterates as its (field, value) pairs)
            raise InputListError(f"from_texts: got one Document ({texts.page_content!r:.60}); expected a list of "
                                 "strings (from_documents takes Documents)")
        try:
            given, texts = ids_and_texts(texts, "from_texts")
        except DataError as e:  # one string, None: the type error from_documents raises too
            if texts is None or isinstance(texts, (str, bytes)):
                raise InputListError(str(e)) from None
            raise
        if given is not None and ids is not None:
            raise DataError("from_texts: ids given twice: by ids= and by the keys (or index) of texts")
        metas, listed = _checked_texts("from_texts", texts, metadatas, ids, "from_documents")
        written: Sequence[str | None] = (listed if listed is not None else given if given is not None
                                     else [str(i) for i in range(len(texts))])
        docs = [Document(page_content=t, id=i, metadata=m) for t, i, m in zip(texts, written, metas)]
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
        from ragkit._saves import _old_save_hint, restore_interrupted_save

        folder = user_path(path, "RagkitRetriever.load: path")
        restore_interrupted_save(folder)  # (a save killed between its two renames left its earlier save beside it)
        if not folder.is_dir():  # (not "no retriever.json": there is no folder to hold one)
            what = "a file, not a folder" if folder.exists() else "no such folder" + _old_save_hint(folder)
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
        One of LangChain's VectorStoreRetriever words (``search_type="mmr"``, ``lambda_mult=0.2``:
        :data:`_LANGCHAIN_WORDS`), no search option, is a :class:`ParamError` saying what ragkit takes instead
        (:func:`_langchain_hint`), and so is ``generate={"answer": True}`` (:func:`_refuse_answers`)."""
        word = next((key for key in _LANGCHAIN_WORDS if key in kwargs), None)
        if word is not None:
            raise ParamError(f"search option {word!r} ({word}={kwargs[word]!r:.40}): not an option of ragkit's search "
                             f"(LangChain's VectorStoreRetriever vocabulary); {_langchain_hint(word, kwargs[word])}",
                             path=f"options.{word}")
        _refuse_answers(kwargs, "search option ")
        return {key: v for key, v in kwargs.items() if key not in _LANGCHAIN_KWARGS}

    def _search(self, queries: list[str], k: int | None, call: dict[str, Any]) -> list[list[Document]]:
        """One ``pipeline.search`` call for the whole batch (queries checked by :func:`_query_errors`),
        converted to Documents.  ``k``: the call's (``None``: not given); ``call``: the call's options
        (:meth:`_options`), merged over ``search_kwargs``, whose ``k`` comes next, then the retriever's ``k``;
        all read under the lock with the pipeline (:meth:`_reading`)."""
        error: Exception | None = None
        for _ in range(_EDIT_RETRIES):
            # the documents this search's rows index: read from the pipeline before and after it, never from
            # this retriever
            with self._reading() as state:  # (an edit through this retriever waits, and is waited for)
                # a generate step passes its rankings on (the documents it would answer from): the answers would
                # be thrown away (generate={"answer": True} refused: a call's by _options, search_kwargs edited in
                # place here)
                options = merge_options(merge_options(state.rankings_only, state.search_kwargs), call)
                _refuse_answers(options, "search_kwargs: search option ")
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
        rankings = run.rankings if run.rankings is not None else [Ranking.empty() for _ in queries]
        producers = state.producers.of(run.values, len(queries))
        return [self._documents(r, corpus, names) for r, names in zip(rankings, producers)]

    # ------------------------------------------------------------------ edits
    def add_documents(self, documents: Sequence[Document], *, ids: Sequence[str | None] | None = None) -> list[str]:
        """Index more documents in every retriever of the pipeline (their ``add``: BM25 and dense; no
        refit), as a LangChain vector store's ``add_documents``.  A document's id is ``ids[i]``, else its
        own ``id`` (or ``metadata["id"]``), else a new UUID; a missing one (``None``, NaN) is not given.  Ids
        are written as a Corpus writes them (``1.0`` as ``"1"``: the id the constructor gave the same document).
        Returns the ids, in order.

        Everything is checked before any index changes (Documents, ids not already indexed nor given
        twice, metadata keys, each metadata value of the kind its field holds, every retriever able to
        ``add``); should a retriever still fail, those already edited are rolled back.  A metadata value of
        another kind than the field's values (``"2020"`` where the years are numbers: numbers, bools included,
        are one kind, strings another) is a :class:`DataError` naming the document, the key and both kinds: a
        filter compares with ``==`` and would miss one kind or the other.  A key a document does not have is
        fine.  Searches on other threads meanwhile see the documents before or after the edit (see the class
        notes)."""
        docs = _document_list("add_documents", documents, DataError, "add_texts")
        return self._add(docs, _one_each("add_documents", "ids", "one id", ids, len(docs), "document"),
                         "add_documents")

    def _add(self, docs: list[Document], ids: list[Any] | None, where: str) -> list[str]:
        """:meth:`add_documents` of checked ``docs`` and ``ids`` (one per document, or ``None``), its messages
        naming ``where`` (the method the caller called: ``add_documents`` or ``add_texts``)."""
        import uuid

        if not docs:
            return []
        listed = _written_ids(where, ids) or [None] * len(docs)
        given = [g if g is not None else _doc_id(d.id, i, f"{where}: the documents' id")
                 or _doc_id(d.metadata.get("id"), i, f"{where}: the documents' metadata id")
                 or uuid.uuid4().hex for i, (g, d) in enumerate(zip(listed, docs))]
        twice = repeated(given, 5)
        if twice:
            raise DataError(f"{where}: the documents' ids must be unique; given more than once: {twice} "
                            f"({'ids=' if ids is not None else 'their own id or metadata id'}); give each document "
                            "its own id")
        new = Corpus.from_documents([_with_id(d, i) for d, i in zip(docs, given)])
        _check_reserved(new, where)
        check_metadata_kinds(new, where)  # (among themselves; against the index's below)
        held = self._searched_corpus()  # (unlocked, before the encoding: checked again under the lock)
        if held is not None and len(dup := held.row_of(new.ids.tolist(), missing="drop")):
            raise DataError(f"{where}: {len(dup)} of the ids are already indexed, e.g. "
                            f"{held.ids[dup[0]]!r}; delete them first, or give other ids")
        if held is not None:  # (unlocked, before the encoding: checked again under the lock)
            check_added_kinds(new, where, held)
        # (a pipeline that cannot add, or a step fitted on given vectors: refused before the encoding)
        _edited_leaves(self.pipeline, "add", where, len(new))
        ahead = self._encode_ahead(new)  # the slow part, before searches wait for the edit
        with self._editing() as pipe:  # the check and the edit as one (two adds of one id: the second is refused)
            held = _corpus_of(pipe)
            if held is not None and len(dup := held.row_of(new.ids.tolist(), missing="drop")):
                raise DataError(f"{where}: {len(dup)} of the ids are already indexed, e.g. "
                                f"{held.ids[dup[0]]!r}; delete them first, or give other ids")
            if held is not None:  # (what a save can write was checked above: the kinds against the index's alone)
                check_added_kinds(new, where, held)
            self._edit(pipe, "add", new, lambda leaf: leaf.remove(new.ids.tolist()), vectors=ahead, where=where)
        return new.ids.tolist()

    def add_texts(self, texts: Iterable[str], metadatas: Iterable[Mapping[str, Any] | None] | None = None, *,
                  ids: Iterable[str | None] | None = None) -> list[str]:
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
        return self._add(docs, listed, "add_texts")

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The indexed documents of ``ids``, as a LangChain vector store's ``get_by_ids``: in the order of
        ``ids``, an unknown id skipped (so fewer documents may come back), each with its text as
        ``page_content``, its id as ``id`` and its own metadata (any key it was given,
        ``id`` and ``title`` as a retrieved Document's metadata has them; no ``score`` / ``rank``: nothing was
        retrieved).  Ids are read as a Corpus writes them (``1.0`` as ``"1"``); a missing one (``None``, NaN) names
        no document."""
        if ids is None or isinstance(ids, (str, bytes)):
            raise DataError(f"get_by_ids: expected a list of document ids, got {ids!r:.80}")
        with self._reading() as state:
            corpus = _corpus_of(state.pipeline)
        assert corpus is not None  # a built retriever's pipeline is fitted
        written = (_doc_id(x, i, "get_by_ids: ids") for i, x in enumerate(ids))
        rows = corpus.row_of([x for x in written if x is not None], missing="drop")
        # as a retrieved Document's metadata (_documents), less score and rank
        return [Document(page_content=text, id=doc_id, metadata=meta) for text, doc_id, meta in
                zip(corpus.texts[rows].tolist(), corpus.ids[rows].tolist(), _stored_metadata(corpus, rows))]

    async def aadd_texts(self, texts: Iterable[str], metadatas: Iterable[Mapping[str, Any] | None] | None = None,
                         *, ids: Iterable[str | None] | None = None) -> list[str]:
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

    def _encode_ahead(self, new: Corpus) -> dict[int, tuple[Any, Any, np.ndarray]]:
        """Encode ``new``'s documents before the edit, which searches wait for: for every fitted step that encodes
        documents (``_encode_docs``, an ``encoder``) and whose ``add`` takes ``vectors=`` (Dense, MMR, kNN-Embed;
        not one fitted on given vectors), its vectors, returned as ``{id(leaf): (leaf, its encoder, vectors)}`` for
        :meth:`_edit` to hand to its ``add``.  Steps of one encoder key share one encoding, a Dense step's where one
        has that key (the encoder's vectors as they are, which a ``metric="ip"`` index ranks by; MMR's are unit rows,
        and the steps other than Dense make the rows unit length themselves).  For another step with an encoder
        that keeps an embedding cache (``cache_enabled`` true and an ``encode``), into that cache, which its ``add``
        reads, unless that encoder object encoded them ahead already.  Any other encodes them in the edit (under the
        lock)."""
        import inspect

        from ragkit.pipelines.yaml import walk_leaves
        from ragkit.retrievers import Dense

        steps: list[tuple[Any, Any, Callable[[Corpus], np.ndarray]]] = []  # (leaf, encoder, its _encode_docs)
        cached: list[tuple[Any, Callable[..., Any]]] = []  # (encoder, its encode) of a step encoding in the edit
        seen: set[int] = set()
        for _, leaf in walk_leaves(self.pipeline):
            if getattr(leaf, "corpus_", None) is None or id(leaf) in seen:
                continue
            seen.add(id(leaf))
            encode_docs = getattr(leaf, "_encode_docs", None)
            enc = getattr(leaf, "encoder", None) if callable(encode_docs) else None
            add = getattr(leaf, "add", None)
            try:
                takes = callable(add) and "vectors" in inspect.signature(add).parameters
            except (TypeError, ValueError):  # (no signature to read: encoded in the edit)
                takes = False
            if enc is not None and callable(encode_docs) and takes and not getattr(leaf, "_vectors_given", False):
                steps.append((leaf, enc, encode_docs))
                continue
            encode = getattr(enc, "encode", None)
            if getattr(enc, "cache_enabled", False) is True and callable(encode):
                cached.append((enc, encode))
        steps.sort(key=lambda step: not isinstance(step[0], Dense))  # (stable: Dense first, else walk order)
        ahead: dict[int, tuple[Any, Any, np.ndarray]] = {}
        by_key: dict[Any, np.ndarray] = {}  # encoder key -> the documents' vectors by it
        encoded: set[int] = set()  # id() of the encoders that encoded them
        for leaf, enc, encode_docs in steps:
            key = getattr(enc, "key", None)
            vecs = by_key.get(key) if key is not None else None
            if vecs is None:
                vecs = encode_docs(new)
                encoded.add(id(enc))
                fresh = getattr(leaf, "_fresh", None)
                if callable(fresh):  # (Dense: drops the note; the vectors go to add, which never takes them over)
                    fresh(vecs)
                if key is not None:
                    by_key[key] = vecs
            ahead[id(leaf)] = (leaf, enc, vecs)
        for enc, encode in cached:
            if id(enc) not in encoded:  # (an encoder that encoded them ahead holds them in its cache already)
                encode(new.full_texts)
                encoded.add(id(enc))
        return ahead

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
                import numpy as np

                from ragkit.pipelines.yaml import walk_leaves

                # a step fitted on given vectors (knn_embed.fit_vectors) takes its documents back only with
                # them: kept here for an undo (no encoder of the step gives that space)
                steps: list[Any] = [leaf for _, leaf in walk_leaves(pipe)]
                given = {id(leaf): np.asarray(leaf._fitted_view().vectors)[rows] for leaf in steps
                         if getattr(leaf, "_vectors_given", False) is True}

                def add_back(leaf: Any) -> None:
                    vectors = given.get(id(leaf))
                    leaf.add(gone) if vectors is None else leaf.add(gone, vectors=vectors)

                def realign(leaf: Any) -> None:  # a leaf not edited: the rows the undone ones hold now
                    leaf.remove(gone_ids)
                    add_back(leaf)

                self._edit(pipe, "remove", gone_ids, add_back, realign)
        return True

    async def aadd_documents(self, documents: Sequence[Document], *,
                             ids: Sequence[str | None] | None = None) -> list[str]:
        """:meth:`add_documents` for the event loop (LangChain ``VectorStore.aadd_documents``): run in a worker
        thread, so the loop goes on while the new documents are encoded and the edit waits for the searches."""
        return await run_in_executor(None, self.add_documents, documents, ids=ids)

    async def adelete(self, ids: Sequence[str] | None = None, **kwargs: Any) -> bool:
        """:meth:`delete` for the event loop (LangChain ``VectorStore.adelete``), in a worker thread."""
        return await run_in_executor(None, self.delete, ids, **kwargs)

    def _edit(self, pipe: Operator, method: str, arg: Any, undo: Callable[[Any], Any],
              realign: Callable[[Any], Any] | None = None, *,
              vectors: Mapping[int, tuple[Any, Any, np.ndarray]] | None = None, where: str | None = None) -> None:
        """``leaf.<method>(arg)`` on every fitted retriever (stateful leaf holding per-document state: not one whose
        ``per_document`` is false, a generate step) of ``pipe``, each checked first to have it; on a failure,
        ``undo(leaf)`` on those already edited and ``realign(leaf)`` on the others (a removal undone appends the
        documents again: every retriever must hold the same rows), then the error.  ``vectors``: the documents
        encoded ahead (:meth:`_encode_ahead`), handed to the ``add`` of the same leaf whose encoder is still the one
        that encoded them.  ``where``: the method a refusal names (default ``add_documents`` / ``delete``)."""
        leaves = _edited_leaves(pipe, method, where or ("add_documents" if method == "add" else "delete"),
                                len(arg) if method == "add" else 0)
        done = []
        try:
            for _, leaf in leaves:
                pre = vectors.get(id(leaf)) if vectors else None
                if pre is not None and pre[0] is leaf and getattr(leaf, "encoder", None) is pre[1]:
                    leaf.add(arg, vectors=pre[2])
                else:
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

    @property
    def _corpus(self) -> Corpus | None:
        """The documents the built pipeline searches now, read from it at each use (no copy is kept: another
        retriever sharing the pipeline may have added or removed documents since); None before it is built."""
        return None if self._op is None else self._searched_corpus(self._op)

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
        scores = r.scores.tolist()
        metas = _stored_metadata(c, rows)
        branch_names = [key[:-5] for key in r.fields if key.endswith(".rank") and f"{key[:-5]}.score" in r.fields]
        branch_cols = [(b, r.fields[f"{b}.rank"].tolist(), r.fields[f"{b}.score"].tolist()) for b in branch_names]
        taken = {f"{b}.{x}" for b in branch_names for x in ("rank", "score")}
        other = {key: v.tolist() for key, v in r.fields.items() if key not in taken}
        docs = []
        for i, meta in enumerate(metas):
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
                     kwargs: dict[str, Any], manager: type[CallbackManager] | type[AsyncCallbackManager],
                     where: str) -> tuple[list[Any], list[RunnableConfig], int | None, dict[str, Any], list[Any]]:
        """What :meth:`batch` and :meth:`abatch` (``where``) share: the queries (a list: one string, mapping or
        Document is a :class:`DataError`, :func:`_batch_list`), one config each, the call's ``k``, the search
        options, and one callback manager of class ``manager`` per query (one for them all when one config is
        given), configured as ``invoke`` / ``ainvoke`` configure theirs."""
        inputs = _batch_list(inputs, where)
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
        saying they were not searched); an error of the search fails every query.  One string, mapping or
        Document given as ``inputs`` is a ``DataError`` (its characters, keys or fields would be the queries).
        """
        inputs, configs, k, options, cms = self._batch_setup(inputs, config, kwargs, CallbackManager, "batch")
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
        inputs, configs, k, options, cms = self._batch_setup(inputs, config, kwargs, AsyncCallbackManager, "abatch")
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


def _edited_leaves(pipe: Operator, method: str, where: str, n_docs: int = 0) -> list[tuple[str, Any]]:
    """The ``(path, leaf)`` of every fitted retriever of ``pipe`` an edit calls ``method`` (``add`` / ``remove``) of
    (stateful, holding per-document state: not one whose ``per_document`` is false, a generate step), or a
    :class:`ParamError` naming ``where`` (the method called) and the retrievers that have no ``method``.  An ``add``
    (of ``n_docs`` documents) to a retriever fitted on given vectors (``_vectors_given``: a kNN-Embed fitted with
    ``fit_vectors``, whose add takes only vectors of that space, which no encoder gives) is a :class:`DataError`,
    before any encoding or edit."""
    from ragkit.pipelines.yaml import walk_leaves

    leaves = [(path, leaf) for path, leaf in walk_leaves(pipe)  # (a step of no per-document state, a
              if not leaf.stateless and getattr(leaf, "corpus_", None) is not None  # generator: not edited)
              and getattr(leaf, "per_document", True)]
    cannot = [f"{path} ({leaf.name})" for path, leaf in leaves if not callable(getattr(leaf, method, None))]
    if cannot:
        from ragkit import registry

        verb = "add documents" if method == "add" else "remove documents"
        able = [n for n in registry.names() if not (cls := registry.get(n)).stateless  # (the list drifted
                and callable(getattr(cls, method, None))]                              # when written out)
        raise ParamError(f"{where}: {', '.join(cannot)} cannot {verb} (only {', '.join(able)} can, without a "
                         "refit); build a new retriever on the documents you want instead")
    given = [(path, leaf) for path, leaf in leaves if getattr(leaf, "_vectors_given", False) is True]
    if method == "add" and given:
        path, leaf = given[0]
        model = getattr(getattr(leaf, "params", None), "model", None)
        raise DataError(f"{where}: {path}: {leaf.name}.add: no vectors given for the {n_docs} new "
                        f"document{'' if n_docs == 1 else 's'}, but this retriever was fitted with fit_vectors, on "
                        "vectors no encoder of it gives (encoding them"
                        + (f" with {model!r}" if model is not None else "") + " would cluster and score them in "
                        f"another space); {where} has no vectors to give it: build a new retriever on all the "
                        "documents (fit_vectors on all their vectors), or on a pipeline fitted with fit, whose adds "
                        "encode the new documents")
    return leaves


def _stored_metadata(c: Corpus, rows: np.ndarray) -> list[dict[str, Any]]:
    """The metadata of the documents at ``rows`` of ``c``, as a returned Document (``invoke``, ``get_by_ids``) has
    it before what the retrieval adds: each document's own metadata back unchanged (no ``None`` for keys it never
    had: the corpus stores metadata as columns, a missing key is ``None``; object cells, lists and dicts a document
    was given, copied: a caller annotating a returned document's metadata, ``tags.append``, would otherwise change
    the index's own value), ``id`` the document id where no document has an ``id`` of its own
    (``filter={"id": ...}`` matches it then; where some have, it is theirs alone, as a filter reads it), and
    ``title`` its title unless it has a ``title`` of its own."""
    ids, titles = c.ids[rows].tolist(), c.titles[rows].tolist()
    cols = {key: copy.deepcopy(col[rows].tolist()) if col.dtype == object else col[rows].tolist()
            for key, col in c.metadata.items()}
    fill_id = "id" not in c.metadata
    metas = []
    for i in range(len(ids)):
        meta: dict[str, Any] = {key: col[i] for key, col in cols.items() if col[i] is not None}
        if fill_id:
            meta["id"] = ids[i]
        meta.setdefault("title", titles[i])
        metas.append(meta)
    return metas


def _with_id(doc: Document, new_id: str) -> Document:
    """``doc`` (a copy) under the id ``new_id``, without the ``metadata["id"]`` a retriever wrote into it (equal to
    its own id: a document of ``invoke`` or ``get_by_ids`` added again under another id), which would otherwise
    become a metadata field of its own (the other documents then lost their ``id`` in what searches return, and
    ``filter={"id": ...}`` found only this one)."""
    meta = doc.metadata
    own = _doc_id(doc.id, 0, "id") if type(doc.id) is str else None  # (a Document's id: a string or None)
    if own and "id" in meta and _same_id(meta["id"], own) and own != new_id:
        meta = {key: v for key, v in meta.items() if key != "id"}
    return doc.model_copy(update={"id": new_id, "metadata": meta})


#: how many retrievers built for configured ``pipeline`` values a configurable retriever keeps (least recently used
#: dropped first)
_BUILT_KEPT = 8

#: a configurable field its config leaves unset, in :meth:`_ConfigurableRetriever._built_key` (no value is it)
_UNSET: Any = object()


class _Unkeyed(Exception):
    """A configured value that keys no cache (an operator, an embeddings object): the retriever is built anew."""


def _plain_key(value: Any) -> Any:
    """``value`` (a configured field's) as a hashable key of plain data, or :class:`_Unkeyed`."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return (type(value).__name__, value)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_plain_key(v) for v in value))
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return ("dict", tuple(sorted((k, _plain_key(v)) for k, v in value.items())))
    raise _Unkeyed


class _ConfigurableRetriever(RunnableConfigurableFields):
    """LangChain's ``RunnableConfigurableFields`` for a :class:`RagkitRetriever`: the retriever of a call is
    built knowing which fields its config set (:data:`_CONFIGURED`), so that a configured ``search_kwargs``
    holding ``k`` wins over the ``k`` passed again from the configured retriever, and a configured ``k`` over
    its ``search_kwargs["k"]``.

    A config that sets ``pipeline`` (a saved folder, a YAML file or text, an operator's name) reuses the retriever
    built for the same configured values (the last :data:`_BUILT_KEPT` kept): a folder is loaded once, not on
    every call, and again once saved anew (the entry of a folder keeps its manifest's identity,
    :func:`source_identity`: a folder saved again is built again in the same entry, not in one more).
    ``ainvoke`` / ``abatch`` / ``astream`` / ``atransform`` build it in a worker thread, off the event loop."""

    _built: OrderedDict[Any, Any] = PrivateAttr(default_factory=OrderedDict)
    _built_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _building: dict[Any, threading.Lock] = PrivateAttr(default_factory=dict)

    def _built_key(self, given: Mapping[str, Any], configured: frozenset[str]) -> tuple[Any, Any] | None:
        """The cache key of the retriever the configurable values ``given`` build and the identity of its configured
        ``pipeline`` (:func:`source_identity`: a folder's save), or ``None`` (not cached): only
        where ``pipeline`` is configured (by a path or text: an operator is not keyed) and every value is plain,
        the default retriever's fields the config leaves (its ``k``, ``search_kwargs``, as they are at this call:
        ``base.k = 5`` after a call builds anew) included."""
        spec = self.fields.get("pipeline")
        if spec is None or "pipeline" not in configured or getattr(spec, "id", None) not in given:
            return None
        ident: Any = None
        try:
            key: list[Any] = []
            for name, field in sorted(self.fields.items()):
                value = given.get(field.id, _UNSET) if name in configured else _UNSET
                if value is _UNSET:
                    key.append((name, "unset"))
                elif name == "pipeline" and isinstance(field, ConfigurableField):
                    ident = source_identity(value)
                    if ident is None:
                        return None
                    key.append((name, ident[:2]))  # (the folder's path or the text: its save is the identity)
                else:
                    key.append((name, _plain_key(value)))
            fields = self.default.__dict__  # (the build passes the default's fields the config leaves: as they are now)
            for name in sorted(type(self.default).model_fields):
                if name not in configured:
                    key.append(("default", name, _plain_key(fields.get(name))))
        except _Unkeyed:
            return None
        return tuple(key), ident

    def _groups(self, configs: list[RunnableConfig]) -> list[list[int]]:
        """The positions of ``configs`` (each merged with the wrapper's own config) grouped by the values they give
        this wrapper's fields: the configs of a group build one and the same retriever.  In order of first use."""
        ids = [spec.id for spec in self.fields.values()]
        unset = object()  # (a field the config leaves to its default)
        buckets: dict[str, list[tuple[list[Any], list[int]]]] = {}
        groups: list[list[int]] = []
        for i, config in enumerate(configs):
            given = config.get("configurable", {})
            values = [given.get(name, unset) for name in ids]
            bucket = buckets.setdefault(repr(values), [])  # (values may be unhashable: dicts of search_kwargs)
            for seen, members in bucket:
                if all(a is b or (a is not unset and b is not unset and a == b) for a, b in zip(seen, values)):
                    members.append(i)
                    break
            else:
                bucket.append((values, [i]))
                groups.append(bucket[-1][1])
        return groups

    def batch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None, *,
              return_exceptions: bool = False, **kwargs: Any | None) -> list[Any]:
        """The inputs' results in input order: per group of configs that give the fields the same values
        (:meth:`_groups`), one retriever built and one :meth:`RagkitRetriever.batch` (one pipeline search),
        where LangChain's ``DynamicRunnable.batch`` built a retriever and searched once per input.  One string,
        mapping or Document is a :class:`DataError` (:func:`_batch_list`), as :meth:`RagkitRetriever.batch` says."""
        inputs = _batch_list(inputs, "batch")
        configs = [merge_configs(self.config, c) for c in get_config_list(config, len(inputs))]
        results: list[Any] = [None] * len(inputs)
        for members in self._groups(configs):
            retriever, _ = self.prepare(configs[members[0]])
            found = retriever.batch([inputs[i] for i in members], [configs[i] for i in members],
                                    return_exceptions=return_exceptions, **kwargs)
            for i, docs in zip(members, found):
                results[i] = docs
        return results

    async def abatch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None, *,
                     return_exceptions: bool = False, **kwargs: Any | None) -> list[Any]:
        """:meth:`batch`'s grouping, each group's retriever built in a worker thread and its ``abatch`` awaited in
        turn."""
        inputs = _batch_list(inputs, "abatch")
        configs = [merge_configs(self.config, c) for c in get_config_list(config, len(inputs))]
        results: list[Any] = [None] * len(inputs)
        for members in self._groups(configs):
            retriever, _ = await run_in_executor(None, self.prepare, configs[members[0]])
            found = await retriever.abatch([inputs[i] for i in members], [configs[i] for i in members],
                                           return_exceptions=return_exceptions, **kwargs)
            for i, docs in zip(members, found):
                results[i] = docs
        return results

    def _prepare(self, config: RunnableConfig | None = None) -> tuple[Any, RunnableConfig]:
        """The retriever of ``config``: the one built for the same key (:meth:`_built_key`) where kept, else built
        (one thread builds a key's retriever, the others asking for it meanwhile wait for it) and kept, the least
        recently used dropped beyond :data:`_BUILT_KEPT`."""
        given = ensure_config(config).get("configurable", {})
        configured = frozenset(name for name, spec in self.fields.items()
                               if not isinstance(spec, ConfigurableField) or spec.id in given)
        keyed = self._built_key(given, configured)
        if keyed is None:
            return self._build(config, configured)
        key, ident = keyed
        private = self.__pydantic_private__  # (self._built: DynamicRunnable's __getattr__ reads the default's)
        if private is None:
            return self._build(config, configured)
        built: OrderedDict[Any, Any] = private["_built"]
        guard: threading.Lock = private["_built_lock"]
        building: dict[Any, threading.Lock] = private["_building"]
        with guard:
            if (hit := built.get(key)) is not None and hit[0] == ident:
                built.move_to_end(key)  # (the most recently used last)
                return hit[1], ensure_config(config)
            own = building.setdefault(key, threading.Lock())
        try:
            with own:  # (one build per key: a second thread asking meanwhile waits here, then finds it built)
                with guard:
                    if (hit := built.get(key)) is not None and hit[0] == ident:
                        built.move_to_end(key)
                        return hit[1], ensure_config(config)
                runnable, prepared = self._build(config, configured)
                if isinstance(runnable, RagkitRetriever) and runnable is not self.default:
                    with guard:
                        built[key] = (ident, runnable)  # (a folder saved again: its old retriever replaced)
                        built.move_to_end(key)
                        while len(built) > _BUILT_KEPT:
                            built.popitem(last=False)
                return runnable, prepared
        finally:
            with guard:
                if building.get(key) is own:
                    del building[key]

    def _build(self, config: RunnableConfig | None, configured: frozenset[str]) -> tuple[Any, RunnableConfig]:
        """LangChain's build of the retriever of ``config``, knowing the fields it sets (:data:`_CONFIGURED`)."""
        token = _CONFIGURED.set(configured)
        try:
            return super()._prepare(config)
        finally:
            _CONFIGURED.reset(token)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """``DynamicRunnable.ainvoke`` with the retriever built (a saved folder loaded) in a worker thread."""
        runnable, config = await run_in_executor(None, self.prepare, config)
        return await runnable.ainvoke(input, config, **kwargs)

    async def astream(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any | None) -> AsyncIterator[Any]:
        """``DynamicRunnable.astream`` with the retriever built (a saved folder loaded) in a worker thread."""
        runnable, config = await run_in_executor(None, self.prepare, config)
        async for chunk in runnable.astream(input, config, **kwargs):
            yield chunk

    async def atransform(self, input: AsyncIterator[Any], config: RunnableConfig | None = None,
                         **kwargs: Any | None) -> AsyncIterator[Any]:
        """``DynamicRunnable.atransform`` with the retriever built (a saved folder loaded) in a worker thread."""
        runnable, config = await run_in_executor(None, self.prepare, config)
        async for chunk in runnable.atransform(input, config, **kwargs):
            yield chunk
