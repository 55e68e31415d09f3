"""Scale out on Ray: encoding, sharded indexing and batch search (the ``ray`` extra:
``pip install 'ragkit[ray]'``, or ``pip install -e '.[ray]'`` in a ragkit checkout).

* ``pipeline.fit(corpus, backend="ray")`` pre-encodes the corpus's sentence vectors as a
  Ray Data ``map_batches`` over a pool of encoder actors (each loads the model once and
  fills its node's on-disk embedding cache), for each model of an operator whose fit
  encodes the corpus texts into sentence vectors: ``dense`` (its base model), ``knn_embed``,
  ``mmr`` and ``dbnorm``, also as a ``sharded`` retriever.  The vectors the actors return are
  written into this process's cache (the texts it lacks: on a multi-node cluster the nodes'
  caches are not this one), and the pipeline is then fitted in this process, where those
  operators read their vectors from the cache without encoding any, so the fitted pipeline
  is exactly the one a local fit gives, and saves and loads like any other.  Nothing else is
  encoded on Ray: token vectors (``muvera``, ``maxsim_exact``, ``maxsim``), a fine-tuned
  (``adapt``) model's vectors, query vectors (``cosine_adapter``), and models registered with
  :func:`~ragkit.encoders.register_encoder` (a per-process registry that Ray workers do not
  share) are encoded in this process by the local fit.  ``sharded`` retrievers with
  ``backend: auto`` are then fitted and searched on Ray.
* :class:`Sharded` splits the corpus into shards, fits one ordinary ragkit retriever per
  shard (as Ray tasks with ``backend="ray"``, one folder per shard), searches all shards for
  a query batch and merges the rankings by score with :func:`merge_rankings` (the same merge
  for any set of shards).  A shard that fails after Ray's retries raises an error naming the
  shard; a ragkit error a shard raises (a filter its documents refuse) is raised as it is.  The
  shards are served by at most one Ray actor per CPU of the cluster (several shards each when
  there are more shards than CPUs).  A loaded ``backend: ray`` index serves its own hard-linked
  copy of its shard folders (a ``ragkit-shards-*`` folder, removed with it), so a later save
  into the folder it was loaded from never reaches its actors.
* :func:`search_distributed` splits a query batch across Ray workers, each loading the
  saved pipeline once.
* Operators of your own (registered in this process: ``ragkit --import ./myops.py``,
  ``RAGKIT_IMPORT``, ``import myops``) work on Ray too: the workers import their modules (by name,
  else from the module's file, as ``--import`` does) before they rebuild the operators by name.

Bad input (an unloadable model, a registered encoder where Ray workers would need it, an operator
class no worker could import (defined in the script being run or inside a function), a
retriever that fine-tunes inside ``sharded``, a ``sharded`` inside ``sharded``, a ``workdir``
below a file, a bad ``n_chunks``, an unfitted pipeline, and what a local fit refuses at once) is
refused with a :class:`~ragkit.errors.RagkitError` before Ray starts; so is a Ray backend
without Ray installed (``ImportError``).

Works with ``ray.init()`` on one machine and with an existing cluster address
(``RAGKIT_RAY_ADDRESS`` or ``ray.init(address=...)`` before calling).  Without Ray
nothing here is imported and the local default is unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import shutil
import tempfile
import threading
import weakref
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence, TypeGuard

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from ragkit._files import file_above, user_path
from ragkit._plugins import _import_plugins, _plugin_modules
from ragkit._saves import read_json, write_json
from ragkit.encoders.sentence import as_texts
from ragkit.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    MissingExtraError,
    ParamError,
    RagkitError,
    missing_modules,
)
from ragkit.operator import Operator, after_fit, check_fit_inputs
from ragkit.params import Params, shown
from ragkit.registry import register
from ragkit.types import QUERY_REWRITES, Corpus, Ranking, State, TrainSet

if TYPE_CHECKING:
    import pandas as pd
    from typing_extensions import Self  # typing.Self is Python 3.11+

    from ragkit.encoders.cache import EmbeddingCache
    from ragkit.pipelines import Pipeline
    from ragkit.run import Run
    from ragkit.types import Queries

__all__ = ["ray_init", "ray_encode", "fit_pipeline", "Sharded", "merge_rankings", "search_distributed", "ShardError"]


# Errors a retry can cure (the file system, memory); Ray also retries a crashed worker. Any other
# error (a ragkit DataError, a ValueError) would fail the same way again, so it fails at once.
_TRANSIENT: tuple[type[BaseException], ...] = (OSError, MemoryError)
# OS errors that name a path which is missing, of the wrong kind or not allowed: the same call fails
# the same way again, so they are final like ragkit's own (a shared disk going away for a moment
# raises other OSErrors: EIO, ESTALE, ETIMEDOUT, a dropped connection)
_DETERMINISTIC_OS: tuple[type[OSError], ...] = (FileNotFoundError, NotADirectoryError, IsADirectoryError,
                                                  PermissionError, FileExistsError)
# errors raised as _Permanent in a Ray task: ragkit's own and the deterministic OS errors
_FINAL: tuple[type[BaseException], ...] = (RagkitError, *_DETERMINISTIC_OS)
_SEARCH_RETRIES = 3
# held while a Sharded retriever starts or drops its shard actors (one lock for all: it is rare and short, and a
# lock of the operator's own would not pickle)
_ACTORS_LOCK = threading.Lock()
_DRAIN_S = 120.0  # the longest a failed search waits for its other chunks
# set inside a search_distributed chunk: a ``sharded`` retriever with ``backend: ray`` loads and searches its shards
# in the chunk's own process (the chunk is already the parallel unit: its own shard actors were one actor set, and
# one hard-linked copy of the shard folders, per chunk)
_IN_CHUNK: ContextVar[bool] = ContextVar("ragkit_sharded_in_chunk", default=False)


class _Permanent(RuntimeError):
    """An error inside a Ray task that the same inputs would raise again: a ragkit error (an
    :class:`~ragkit.errors.ArtifactError` is also an ``OSError``, which Ray would retry) or a
    path error (:data:`_DETERMINISTIC_OS`).  It is not retried; its text is the original's,
    ``"ArtifactError: ..."``."""


def _deterministic_errors_final(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` for a Ray task whose deterministic errors (ragkit's, :data:`_DETERMINISTIC_OS`) are
    raised as :class:`_Permanent`, so Ray's ``retry_exceptions`` does not retry them."""
    def task(*args: Any) -> Any:
        try:
            return fn(*args)
        except _FINAL as e:
            raise _Permanent(f"{type(e).__name__}: {e}") from None
    return task


def _retried(n: int, e: BaseException | None = None) -> str:
    """What a failure message says about retries: only crashes and transient errors are retried, so
    nothing when ``e`` (the error ``ray.get`` raised) was none of those (a ``ValueError``, a ragkit error)."""
    if e is not None and not _was_retried(e):
        return ""
    return f" (after up to {n} retries of a crashed worker or an OS / memory error)" if n else ""


def _was_retried(e: BaseException) -> bool:
    """Whether Ray retried the task whose ``ray.get`` raised ``e``: a crashed worker (a Ray error of its own)
    or a transient error (:data:`_TRANSIENT`), not what the task raised for good (:class:`_Permanent`, a
    ``ValueError``...)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, _Permanent):
        return False
    if isinstance(cause, BaseException) and not type(cause).__module__.startswith("ray."):
        return isinstance(cause, _TRANSIENT)
    return True


class ShardError(RagkitError, RuntimeError):
    """A shard could not be built or searched, even after Ray's retries."""


#: how Ray is installed, in the error of a Ray backend without it
_RAY_INSTALL = ("pip install 'ragkit[ray]' (or pip install 'ray[data]>=2.9'; in a ragkit checkout: "
                "pip install -e '.[ray]')")


def _ray():
    """The ``ray`` module; :class:`~ragkit.errors.MissingExtraError` naming the ``ray`` extra where it does not
    import."""
    try:
        import ray
    except ImportError:
        raise MissingExtraError(f"the Ray backend needs Ray: {_RAY_INSTALL}",
                                extra="ray", packages=["ray"]) from None
    return ray


def _operator_classes(op: Any) -> list[type]:
    """Every operator class of the tree ``op`` (composites, leaves, a ``sharded`` retriever's per-shard one), once."""
    seen: set[int] = set()
    classes: dict[type, None] = {}
    stack = [op]
    while stack:
        node = stack.pop()
        if id(node) in seen or not isinstance(node, Operator):
            continue
        seen.add(id(node))
        classes[type(node)] = None
        if isinstance(node, Sharded):
            classes[node._sub_cls] = None
        try:
            stack += list(node.children() or [])
        except Exception:  # noqa: BLE001 - (an operator whose children need its fit): its own class is listed
            pass
    return list(classes)


def _with_plugins(modules: Sequence[tuple[str, str | None]], fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` for a Ray task that first imports ``modules`` (:func:`_import_plugins`)."""
    if not modules:
        return fn
    modules = list(modules)

    def task(*args: Any) -> Any:
        _import_plugins(modules)
        return fn(*args)
    return task


def _registered(model: Any) -> TypeGuard[str]:
    """Whether ``model`` names an encoder registered with :func:`~ragkit.encoders.register_encoder`
    (in this process only: a Ray worker resolves the name as a sentence-transformers model)."""
    from ragkit.encoders.custom import registered_encoder

    return isinstance(model, str) and registered_encoder(model) is not None


def _root_cause(e: BaseException) -> BaseException | None:
    """The :class:`RagkitError` behind a Ray error (``RayTaskError(ParamError)`` is one, its
    ``cause`` the original), else ``None``."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        c = stack.pop()
        if c is None or id(c) in seen:
            continue
        seen.add(id(c))
        cause = getattr(c, "cause", None)
        if isinstance(c, RagkitError) and not isinstance(cause, BaseException):
            return c
        stack += [c.__context__, c.__cause__, cause if isinstance(cause, BaseException) else None]
    return None


def _raised_by_task(e: BaseException) -> BaseException | None:
    """The exception a Ray task's (or actor method's) own code raised, behind the ``RayTaskError`` that
    ``ray.get`` raised for it (its ``cause``); ``None`` for a Ray failure (an actor or worker gone, an object
    lost: not a ``RayTaskError``, or one whose cause is Ray's own) and for a :class:`_Permanent` (a shard that
    could not load on its actor).  An exception Ray cannot bring back (a class whose ``__init__`` cannot be
    called again with its ``args``, or one holding a lock) reaches the driver as Ray's own deserialisation
    error: a ``ShardError``, its actors dropped, as for a Ray failure."""
    from ray.exceptions import RayTaskError

    cause = getattr(e, "cause", None)
    if not isinstance(e, RayTaskError) or not isinstance(cause, BaseException) or isinstance(cause, _Permanent):
        return None
    if type(cause).__module__.startswith("ray.") or not isinstance(cause, Exception):
        return None
    return cause


def _reason(e: BaseException) -> str:
    """What failed, for an error message: ``"ValueError: ..."`` for the user exception a Ray task
    raised (``RayTaskError.cause``), else the Ray error's own text without its terminal colours."""
    import re

    cause = getattr(e, "cause", None)
    if isinstance(cause, _Permanent):
        return str(cause)
    if isinstance(cause, BaseException) and not type(cause).__module__.startswith("ray."):
        return f"{type(cause).__name__}: {cause}"
    return re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()


def _drain(ray: Any, refs: Sequence[Any], timeout: float = _DRAIN_S) -> None:
    """Wait (up to ``timeout`` seconds) for the Ray tasks of ``refs`` to end, so that nothing still
    reads a folder the caller is about to delete; their results and errors are dropped.

    They are not cancelled: in Ray 2.x a ``ray.cancel`` that races with the reply of a task
    finishing on its worker aborts the driver process ("Check failed: it !=
    submissible_tasks_.end() Tried to complete task that was not pending"; seen here on Ray
    2.60, see ray-project/ray#54798 for a sibling of that race), which would take the user's
    whole program down with the one failing chunk.  A task still running after ``timeout`` may
    then fail reading the deleted folder; nobody reads its result.  The results of the tasks that
    ended are fetched (and dropped), so that Ray does not print their errors as "Unhandled error"
    tracebacks when the references go.
    """
    try:
        ended, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
    except Exception:  # noqa: BLE001 - best effort: the caller raises its own error next
        return
    for ref in ended:
        try:
            ray.get(ref, timeout=0)
        except Exception:  # noqa: BLE001 - the error the caller reports, or another shard's: dropped
            pass


#: the CPUs each of ragkit's Ray tasks and actors asks for (Ray's default ``num_cpus=1``: a task runs on it, an
#: actor needs it to be placed on a node; a Ray Data encoder actor likewise)
_TASK_CPUS = 1.0


def _check_cpus(ray: Any, where: str) -> None:
    """Refuse (:class:`ShardError`, before any task or actor is submitted) a Ray cluster whose nodes together have
    fewer CPUs than one of ragkit's tasks or actors asks for (:data:`_TASK_CPUS`): Ray would keep it pending forever,
    logging only "No available node types can fulfill resource request" (a ``ray.init(num_cpus=0)``, a cluster of
    CPU-less nodes).  The cluster's total (``ray.cluster_resources()``) is what counts, not what is free now: a
    cluster whose CPUs are busy runs the work once they are free.  ``$RAGKIT_RAY_WAIT_FOR_CPUS=1`` submits anyway,
    with a warning: an autoscaling cluster whose head node has no CPU (KubeRay's usual setting) adds CPU nodes on
    demand, which ``cluster_resources`` cannot show."""
    total = float(ray.cluster_resources().get("CPU", 0.0))
    if total >= _TASK_CPUS:
        return
    if os.environ.get("RAGKIT_RAY_WAIT_FOR_CPUS", "").strip().lower() in {"1", "true", "yes"}:
        logging.getLogger("ragkit").warning(
            "%s: the Ray cluster has %g CPUs now; submitting anyway ($RAGKIT_RAY_WAIT_FOR_CPUS): the work waits "
            "until a node with CPUs joins (an autoscaler's)", where, total)
        return
    free = float(ray.available_resources().get("CPU", 0.0))
    raise ShardError(f"{where}: the Ray cluster has {total:g} CPUs ({free:g} free), and each of ragkit's Ray tasks and "
                     f"actors asks for {_TASK_CPUS:g}: Ray would wait forever for a node that can run it; expected a "
                     f"cluster with at least one CPU: start Ray with CPUs (ray.init(num_cpus=2), ray start "
                     f"--num-cpus=2), add a worker node that has CPUs, or work in this process (backend='local'); "
                     f"on an autoscaling cluster that adds CPU nodes on demand, set $RAGKIT_RAY_WAIT_FOR_CPUS=1")


# what pickling raises for a value it cannot serialise (a lock, a socket: TypeError "cannot pickle ..."; cloudpickle's
# PicklingError; an object whose reduction reads a missing attribute: AttributeError); Ray's task submission wraps a
# TypeError as TypeError("Could not serialize the argument ...") and lets the others through as they were
_PICKLING_ERRORS: tuple[type[Exception], ...] = (pickle.PicklingError, TypeError, AttributeError)


def _unsendable(corpus: Corpus, e: BaseException, args: tuple[Any, ...]) -> str | None:
    """Why the documents ``corpus`` (one shard's) could not be sent to a Ray worker (``e``: what Ray raised
    submitting the task of arguments ``args``, among them ``corpus``), or None when ``args`` pickle after all
    (``ray.cloudpickle``, Ray's pickler): then ``e`` is not a pickling failure (a bug, a Ray that failed), and the
    caller re-raises it as it was.  When they do not pickle (a metadata value that does not): the error a local
    fit gives on them, the :class:`~ragkit.errors.DataError` of their save naming the document and the metadata
    field (a save into a temporary folder, made here only once sending failed), else Ray's own text."""
    from ray import cloudpickle

    try:
        cloudpickle.dumps(args)
    except Exception:  # noqa: BLE001 - any failure to pickle them: they cannot be sent
        pass
    else:
        return None
    with tempfile.TemporaryDirectory(prefix="ragkit-probe-") as tmp:
        try:
            corpus.save(Path(tmp) / "corpus.jsonl")
        except RagkitError as saved:
            return f"{type(saved).__name__}: {saved}"
    return f"its documents could not be sent to a Ray worker ({_reason(e)}); expected metadata values of JSON types"


def ray_init(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Start (or join) Ray once: ``address`` / ``$RAGKIT_RAY_ADDRESS`` joins a cluster, else a local one."""
    ray = _ray()
    if not ray.is_initialized():
        given, env = address, os.environ.get("RAGKIT_RAY_ADDRESS")
        address = address or env
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
        if address:
            source = "ray_init(address=...)" if given else "$RAGKIT_RAY_ADDRESS"
        else:  # (Ray itself joins $RAY_ADDRESS when it is set)
            address = os.environ.get("RAY_ADDRESS") or None
            source = "$RAY_ADDRESS (read by Ray itself)"
        try:
            if address:  # $RAY_ADDRESS too: Ray waits on an unreachable one for minutes without an error
                _probe(str(address))
            if given or env:
                ray.init(address=address, **kwargs)
            else:  # Ray reads $RAY_ADDRESS itself (``auto``, ``local``, ``ray://``...)
                ray.init(num_cpus=num_cpus, **kwargs)
        except Exception as e:  # noqa: BLE001 - Ray's ConnectionError after its retries, a malformed address...
            if isinstance(e, RagkitError):
                raise
            if address is None:
                tmp = os.environ.get("RAY_TMPDIR")
                where = f"$RAY_TMPDIR={tmp!r}" if tmp else f"its temp folder ({tempfile.gettempdir()}/ray)"
                raise ArtifactError(
                    f"ragkit could not start a local Ray in this process ({type(e).__name__}: {e}); expected Ray to "
                    f"start here: check that {where} exists and is writable, that this machine has free memory and "
                    f"/dev/shm, or set $RAGKIT_RAY_ADDRESS to a running Ray cluster") from e
            fix = "pass another address" if given else f"set {source.split(' ')[0]} to another, or unset it to start " \
                                                       f"a local Ray in this process"
            raise ParamError(f"could not join the Ray cluster at {address!r}, the address {source} names "
                             f"({type(e).__name__}: {e}); expected the address of a running Ray cluster (its head "
                             f"node prints it at ray start --head): {fix}", path=source.split(" ")[0]) from None
    return ray


#: seconds :func:`_probe` waits for a Ray address's port to answer
PROBE_TIMEOUT_S = 5.0


def _probe(address: str) -> None:
    """A ``ConnectionError`` where nothing answers at the ``host:port`` (or ``ray://host:port``) of ``address``
    within :data:`PROBE_TIMEOUT_S`: ``ray.init`` waited on an unreachable address for minutes without a word.
    Other addresses (``auto``, ``local``) are Ray's to read."""
    import socket

    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise ConnectionError(f"nothing answers at {host}:{port} within {PROBE_TIMEOUT_S:g} s ({e})") from None


# ---------------------------------------------------------------------- encoding
class _EncoderActor:
    """Ray Data actor: loads the model once, encodes batches through the disk cache."""

    def __init__(self, model: str, batch_size: int, cache: bool = True) -> None:
        from ragkit.encoders import get_encoder

        self.encoder = get_encoder(model, batch_size=batch_size)
        self.cache = cache

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vecs = self.encoder.encode(batch["text"].tolist(), progress=False, cache=self.cache)
        return {"i": batch["i"], "vec": vecs}


def _check_model(model: Any, batch_size: int, where: str) -> int:
    """Load ``model`` in this process (as the actors will) and return its width; an unloadable
    model is refused here, before Ray starts, instead of as a Ray traceback from an actor."""
    if not isinstance(model, str) or not model.strip():
        raise ParamError(f"{where}: model must be a sentence-transformers model name or folder, got {model!r}")
    if _registered(model):
        raise ParamError(f"{where}: model {model!r} is an encoder registered with register_encoder in this "
                         "process; Ray workers are other processes and do not have it, so it cannot encode on "
                         "Ray: encode in this process (get_encoder(model).encode(texts), or a local fit)")
    from ragkit.encoders import get_encoder

    try:
        return int(get_encoder(model, batch_size=batch_size).dim)
    except ParamError as e:
        raise ParamError(f"{where}: {e}; expected a sentence-transformers model name or folder that loads in "
                         "this process (the Ray actors load it the same way)", path=e.path) from None
    except RagkitError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever sentence-transformers raises for a model it cannot load
        raise ParamError(f"{where}: model {model!r} could not be loaded ({type(e).__name__}: {e}); expected a "
                         "sentence-transformers model name or folder") from None


def _collect(batches: Iterable[Mapping[str, np.ndarray]], n: int, dim: int, model: str) -> np.ndarray:
    """Gather the encoded batches ``{"i": rows, "vec": vectors}`` into ``(n, dim)`` in input order.

    A failure while the actors encode surfaces as the :class:`RagkitError` behind it where Ray kept
    it, else as a :class:`ShardError` naming the model, never as a bare Ray exception."""
    out = np.zeros((n, dim), np.float32)
    try:
        for b in batches:
            out[b["i"]] = b["vec"]
    except RagkitError:
        raise
    except Exception as e:  # noqa: BLE001 - Ray's errors (RayTaskError, UserCodeException...) become ours
        cause = _root_cause(e)
        if cause is not None:
            raise cause from None
        raise ShardError(f"ray_encode({model!r}): {_reason(e)}") from None
    return out


def _env_actors() -> int | None:
    """``$RAGKIT_RAY_ACTORS`` as a positive integer, or None when it is not set (or empty); anything
    else is a :class:`ParamError`."""
    raw = os.environ.get("RAGKIT_RAY_ACTORS", "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ParamError(f"RAGKIT_RAY_ACTORS: expected a positive integer (encoder actors on Ray), got {raw!r}")
    return n


def _pool_size(ray: Any, num_actors: int | None, n_blocks: int) -> int:
    """The encoder actors for ``n_blocks`` blocks of texts: ``num_actors`` when given, else
    ``$RAGKIT_RAY_ACTORS``, else one per CPU of the Ray cluster (``ray.cluster_resources()``); never
    more than there are blocks (an actor without a block would only load the model)."""
    n = num_actors if num_actors is not None else _env_actors()
    if n is None:
        n = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return int(max(1, min(n, n_blocks)))


def ray_encode(model: str, texts: Sequence[str], *, num_actors: int | None = None, batch_size: int = 64,
               block: int = 256, cache: bool = True) -> np.ndarray:
    """Encode ``texts`` with a pool of encoder actors; returns ``(n, dim)`` in input order.

    ``num_actors`` actors (default: ``$RAGKIT_RAY_ACTORS`` when set, else one per CPU of the Ray
    cluster), at most one per ``block`` of texts; each loads the model once.  With ``cache=True``
    the actors read and fill the shared on-disk embedding cache.

    Raises
    ------
    ParamError
        Before Ray starts: a bad ``num_actors`` / ``batch_size`` / ``block``, a model that does not
        load in this process, or a model registered with ``register_encoder`` (Ray workers lack it).
    ShardError
        When the actors fail while encoding (a :class:`RagkitError` raised there is re-raised as it is), and
        before any actor starts when the Ray cluster has no CPU for one (``ray.init(num_cpus=0)``).
    """
    for name, value in (("num_actors", num_actors), ("batch_size", batch_size), ("block", block)):
        if value is None and name == "num_actors":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ParamError(f"ray_encode: {name} must be a positive integer, got {value!r}")
    if num_actors is None:
        _env_actors()  # a bad $RAGKIT_RAY_ACTORS: said before any model loads
    texts = as_texts(texts, "ray_encode")
    dim = _check_model(model, batch_size, f"ray_encode({model!r})")
    if not texts:
        return np.zeros((0, dim), np.float32)
    cluster = ray_init()
    _check_cpus(cluster, f"ray_encode({model!r})")  # before the pool: its actors would wait forever for a CPU
    size = _pool_size(cluster, num_actors, -(-len(texts) // block))
    import ray.data

    ds: ray.data.Dataset = ray.data.from_items([{"i": i, "text": t} for i, t in enumerate(texts)])
    ds = ds.map_batches(_EncoderActor, fn_constructor_args=(model, batch_size, cache), batch_size=block,
                        compute=ray.data.ActorPoolStrategy(size=size), batch_format="numpy")
    return _collect(ds.iter_batches(batch_size=4096, batch_format="numpy"), len(texts), dim, model)


def _sentence_encoders() -> tuple[type, ...]:
    """Operator classes whose fit encodes the corpus texts into sentence vectors of their ``model``
    through :func:`~ragkit.encoders.get_encoder` and its disk cache (what :func:`fit_pipeline`
    pre-encodes): ``dense`` (the base model; ``adapt`` mines its hard negatives with it),
    ``knn_embed`` (a ``dense`` inside), ``mmr`` and ``dbnorm``.  Not ``muvera`` / ``maxsim_exact`` /
    ``maxsim`` (token vectors) nor ``cosine_adapter`` (query vectors; its upstream ``dense``
    encodes the corpus)."""
    from ragkit.filters.dbnorm import DBNorm
    from ragkit.filters.mmr import MMR
    from ragkit.retrievers.dense import Dense
    from ragkit.retrievers.knn_embed import KnnEmbed

    return Dense, KnnEmbed, MMR, DBNorm


def corpus_models(pipe: Any) -> list[str]:
    """The models whose sentence vectors of the corpus ``pipe``'s fit reads (a ``sharded``
    retriever's per-shard retriever included), sorted, without registered encoders (see
    :func:`fit_pipeline`)."""
    from ragkit.pipelines._compose import iter_leaves

    kinds = _sentence_encoders()
    models: set[str] = set()
    for leaf in iter_leaves(pipe):
        op = leaf.sub_retriever() if isinstance(leaf, Sharded) else leaf
        model = getattr(op.params, "model", None)
        if isinstance(op, kinds) and isinstance(model, str) and not _registered(model):
            models.add(model)
    return sorted(models)


def _reread_store(model: str) -> "EmbeddingCache":
    """This process's embedding cache of ``model`` (the store the local fit reads), its index dropped so that
    the next lookup re-reads the folder: another process (the Ray encoder actors, another fit) may have
    written into it since it was read."""
    from ragkit.encoders import get_encoder

    store = get_encoder(model).store
    with store._lock:
        store._index = None
    return store


def _misses(store: "EmbeddingCache", digests: np.ndarray) -> np.ndarray:
    """The positions in ``digests`` of the texts ``store`` lacks (nothing is read back)."""
    where, _ = store.locate(digests)
    return np.flatnonzero(where[:, 0] < 0)


def _uncached(model: str, digests: np.ndarray) -> np.ndarray:
    """The positions in ``digests`` (:func:`~ragkit.encoders.cache.text_digests` of the corpus's texts) of the
    distinct texts, first-seen order, whose vectors of ``model`` this process's embedding cache lacks, looked
    up by digest as the local fit does (nothing is read back nor computed)."""
    if not len(digests):
        return np.empty(0, np.int64)
    miss = _misses(_reread_store(model), digests)
    _, first = np.unique(digests[miss], return_index=True, axis=0)
    return miss[np.sort(first)]


def _cache_vectors(model: str, digests: np.ndarray, vectors: np.ndarray) -> int:
    """Write the ``(n, dim)`` ``vectors`` that Ray encoded, of the texts whose digests are ``digests``, into this
    process's embedding cache of ``model`` (the store the local fit reads, keyed by the texts as it looks them
    up), those it does not hold already; returns how many were written.

    The encoder actors fill their own node's cache, which is this process's only when both read
    one ``$RAGKIT_CACHE`` on one shared disk: on a multi-node cluster the fit would otherwise
    encode the whole corpus again here."""
    store = _reread_store(model)  # the actors may have written these texts into it since it was read
    miss = _misses(store, digests)
    if len(miss):
        store.put(digests[miss], vectors[miss])
    return len(miss)


def fit_pipeline(pipe: Any, corpus: Corpus, train: TrainSet | None, *, backend: str = "ray",
                 num_actors: int | None = None, upstream: State | None = None, path: str = "pipeline") -> Any:
    """Fit ``pipe`` (a pipeline or any operator) with Ray encoding: pre-encode the corpus's sentence
    vectors of every model :func:`corpus_models` names on Ray, write them into this process's
    embedding cache, then fit in this process (which reads them from the cache: nothing is encoded
    twice, whichever cache the Ray workers have).

    ``num_actors`` encoder actors per model (default: ``$RAGKIT_RAY_ACTORS`` when set, else one per
    CPU of the Ray cluster; see :func:`ray_encode`).

    ``sharded`` retrievers with ``backend: auto`` are fitted (and later searched) on Ray; an
    explicit ``backend: local`` stays local.  Models registered with ``register_encoder`` are
    encoded in this process by the fit; a ``sharded`` retriever that would build its shards on
    Ray with one is refused (:class:`ParamError`) before anything is encoded.

    What a local fit refuses at once is refused here before Ray starts or a model loads: a
    corpus that is not a :class:`~ragkit.types.Corpus` (``TypeError``), a router that reads
    rankings no step before it makes, a training split the pipeline cannot use, a ``sharded``
    ``workdir`` below a file; and Ray missing (``ImportError``).
    """
    if backend != "ray":
        raise ParamError(f"fit: backend must be 'local' or 'ray', got {backend!r}")
    check_fit_inputs(corpus, train, "fit(backend='ray')")
    from ragkit.pipelines._checks import check_trainable, unranked_router
    from ragkit.pipelines._compose import iter_leaves

    problem = unranked_router(pipe, path)
    if problem is not None:
        raise problem
    check_trainable(pipe, train, corpus)  # before Ray encodes anything
    every_sharded = [leaf for leaf in iter_leaves(pipe) if isinstance(leaf, Sharded)]
    for leaf in every_sharded:
        leaf._check_workdir()
    _ray()  # Ray installed: said before any model loads
    if num_actors is None:
        _env_actors()  # a bad $RAGKIT_RAY_ACTORS, likewise
    sharded = [leaf for leaf in every_sharded if leaf.params.backend != "local"]
    for leaf in sharded:
        leaf._check_ray_model("fit(backend='ray')")
        leaf._ray_modules("fit(backend='ray')")
    models = corpus_models(pipe)
    for model in models:  # each checked to load before Ray starts
        _check_model(model, 64, "fit(backend='ray')")
    if models:
        from ragkit.encoders.cache import text_digests

        texts = list(corpus.full_texts)
        digests = text_digests(texts)  # once: a text's digest is the same for every model
        for model in models:  # only the texts this process's cache lacks go to Ray: none, no encoder pool at all
            todo = _uncached(model, digests)
            if len(todo):
                vectors = ray_encode(model, [texts[i] for i in todo.tolist()], num_actors=num_actors)
                _cache_vectors(model, digests[todo], vectors)
    for leaf in sharded:  # backend "auto": fitted and searched on Ray from now on in this process
        leaf._backend = "ray"
    return pipe.fit(corpus, train, upstream=upstream)


# ---------------------------------------------------------------------- merging
def merge_rankings(parts: Sequence[list[Ranking]], k: int) -> list[Ranking]:
    """Merge per-shard rankings of the same queries by score (rows already global), top ``k`` each.

    ``parts``: one list of rankings per shard, in shard order (a shard's rows below the next shard's), each
    ranking best first.  Documents of equal score keep the shards' own order: a lower shard's first, and within
    a shard the order the shard ranked them in (its retriever may break a tie of float32 scores by a finer score,
    e.g. bm25's float64 one).  See :func:`_merge_flat`.
    """
    if not parts:
        return []
    return _split(*_merge_flat([_flatten(p) for p in parts], k))


#: Cells (queries x candidates) merged at once by :func:`_merge_flat` (its temporaries: ~20 bytes each).
_MERGE_CELLS = 1 << 22


def _refine_ties(neg: np.ndarray, rows: np.ndarray, shard: np.ndarray, kk: int, first: int,
                 finer: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """Re-sort in place, by ``finer`` score then row, the queries (rows of the sorted ``neg`` / ``rows`` / ``shard``
    arrays; ``first``: the batch number of the first) where a run of equal float32 scores that reaches into the top
    ``kk`` holds candidates of two shards (anywhere in the run: its first places may all be one shard's, the other
    shard's just past the cut); ordered by (float32, finer, row), which is the order by (finer, row): float32
    rounding never reverses two scores.  Only the candidates of such runs (float32 score at least the ``kk``-th's)
    are given to ``finer``; the rest keep places below the top ``kk``."""
    if kk < 1 or neg.shape[1] < 2:
        return
    cut = neg[:, kk - 1:kk]
    cut = np.where(np.isnan(cut), np.float32(np.inf), cut)  # fewer than kk candidates: every one is in the top
    # in a run of equal scores the candidates lie shard after shard (a stable sort of the shards' concatenation),
    # so it holds two shards' exactly when two neighbours in it differ in shard
    tie = (neg[:, 1:] == neg[:, :-1]) & (shard[:, 1:] != shard[:, :-1]) & (neg[:, :-1] <= cut)
    flagged = np.flatnonzero(tie.any(axis=1))
    if not len(flagged):
        return
    n, r = neg[flagged], rows[flagged]
    top = n <= cut[flagged]  # (NaN pads: False)
    fine = np.zeros(n.shape, np.float64)
    q = np.broadcast_to((flagged + first)[:, None], n.shape)
    fine[top] = finer(q[top], r[top])
    order = np.lexsort((r, -fine, n), axis=1)
    neg[flagged] = np.take_along_axis(n, order, axis=1)
    rows[flagged] = np.take_along_axis(r, order, axis=1)


def _merge_flat(parts: Sequence[_Flat], k: int,
                finer: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> _Flat:
    """:func:`merge_rankings` on flat ``(rows, scores, lengths)`` arrays (:data:`_Flat`), one per shard, in shard
    order: each query's candidates are laid out in a padded ``(n_q, width)`` array, shard after shard, and
    sorted row-wise by score with a stable sort (equal scores keep that order); chunks of queries of at most
    :data:`_MERGE_CELLS` cells.  Returns the merged top ``k`` of every query, flat.

    ``finer(queries, rows)``: the finer (float64) scores of candidates, given their query numbers in the batch
    and their rows.  Documents of two shards whose float32 scores equal the ``k``-th's or a higher one's are then
    ordered by it (then by row, as one index breaks its ties), for those queries only: their order by float32
    score alone is the shards' order, not the one index's ranking by its finer score (:func:`_refine_ties`)."""
    n_s = len(parts)
    n_q = len(parts[0][2]) if n_s else 0
    lens = np.stack([np.asarray(p[2], np.int64) for p in parts]) if n_s else np.zeros((0, 0), np.int64)
    total = lens.sum(axis=0)
    if n_q == 0 or not total.any():
        return np.empty(0, np.int64), np.empty(0, np.float32), np.zeros(n_q, np.int64)
    ends = [np.cumsum(p[2]) for p in parts]  # each shard's flat end of every query
    before = np.cumsum(lens, axis=0) - lens  # (n_s, n_q): a query's candidates of the shards before this one
    out_rows, out_scores = [], []
    step = max(1, _MERGE_CELLS // max(1, int(total.max())))
    for a in range(0, n_q, step):
        b = min(n_q, a + step)
        width = int(total[a:b].max())
        neg = np.full((b - a, width), np.nan, np.float32)  # (pads: NaN, sorted after every score, NaN or not)
        rows = np.zeros((b - a, width), np.int64)
        shard = np.full((b - a, width), -1, np.int32)
        for s, (r, sc, ln) in enumerate(parts):
            lo = int(ends[s][a - 1]) if a else 0
            hi = int(ends[s][b - 1])
            n = np.asarray(ln[a:b], np.int64)
            q = np.repeat(np.arange(b - a), n)
            col = np.arange(hi - lo) - np.repeat(np.cumsum(n) - n, n) + np.repeat(before[s, a:b], n)
            neg[q, col] = -np.asarray(sc[lo:hi], np.float32)
            rows[q, col] = r[lo:hi]
            shard[q, col] = s
        kk = min(k, width)
        order = np.argsort(neg, axis=1, kind="stable")
        neg, rows = np.take_along_axis(neg, order, axis=1), np.take_along_axis(rows, order, axis=1)
        if finer is not None and n_s > 1:
            _refine_ties(neg, rows, np.take_along_axis(shard, order, axis=1), kk, a, finer)
        keep = np.arange(kk) < np.minimum(total[a:b], k)[:, None]
        out_rows.append(rows[:, :kk][keep])
        out_scores.append(-neg[:, :kk][keep])
    return np.concatenate(out_rows), np.concatenate(out_scores), np.minimum(total, k)


# ---------------------------------------------------------------------- sharded retriever
def check_workdir(workdir: str | os.PathLike[str] | None, where: str, what: str) -> None:
    """Refuse a ``workdir`` (Ray workers read ``what`` from it) that is a file or lies below one:
    no folder could be made there.  ``where`` names the argument in the :class:`ParamError`."""
    if not workdir:
        return
    work = user_path(workdir, where)
    blocker = work if work.exists() and not work.is_dir() else file_above(work)
    if blocker is not None:
        raise ParamError(f"{where}: {str(workdir)!r} cannot hold {what}: {blocker} is a file, not a folder; expected "
                         f"a folder (made when missing) on storage every Ray worker reads", path=where)


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

    def check_parent() -> None:
        parent = Path(folder).parent
        if not parent.is_dir():
            raise ArtifactNotFoundError(f"sharded: the fit's folder {parent} is gone (the fit failed or was "
                                        f"interrupted and removed it); shard {Path(folder).name} is not written")

    check_parent()
    op = build(node, "sharded.retriever")
    with _shard_fit():
        op.fit(corpus)
    check_parent()
    op.save(folder)
    return folder


class _ShardActor:
    """Holds loaded shard operators (one or several shards, in shard order) on a Ray worker.

    ``corpora``: each shard's documents (given one argument each, so that Ray resolves each
    object-store reference).  A shard folder that cannot load for a reason a retry cannot cure (a
    ragkit error, a missing path: :data:`_FINAL`) does not fail the constructor, which Ray would
    restart (and retry its searches on) ``max_retries`` times, each failing alike, into a long
    "actor died" text: every search raises it as :class:`_Permanent` instead, once, with the
    original error's text."""

    def __init__(self, folders: list[str], *corpora: Corpus, modules: Sequence[tuple[str, str | None]] = ()) -> None:
        from ragkit._saves import CHECKSUMS
        from ragkit.operator import Operator

        self.ops: list[Operator] = []
        self.error: str | None = None
        try:
            _import_plugins(modules)  # the modules that register the driver's own operators (custom retrievers)
            # a saved sharded retriever's shard folders hold no documents (the parent's corpus, sliced, is given)
            # and no checksums (the parent's load checked them); those a fit just wrote hold both
            self.ops = [Operator.load(f, corpus=c, verify=(Path(f) / CHECKSUMS).is_file())
                        for f, c in zip(folders, corpora)]
        except _FINAL as e:
            self.error = f"{type(e).__name__}: {e}"

    def search(self, queries: list[str], options: dict[str, Any],
               values: dict[str, Any] | None = None) -> list[_Flat]:
        """Each shard's rankings as flat ``(rows, scores, lengths)`` (:func:`_flat`), in the order of its shards.
        The shards share one dict of query vectors, as a local search does: a ``dense`` encodes the queries
        once per call, not once per shard."""
        if self.error is not None:
            raise _Permanent(self.error)
        from ragkit.operator import options_checked

        vectors: dict[str, Any] = {}
        out = []
        for op in self.ops:
            with options_checked():  # a step of the driver's sharded search, which checked the options and cuts
                # to the call's k itself: not an outermost call cutting its rankings to options["k"]
                sub = op(State(list(queries), options=options, vectors=vectors, values=dict(values or {})))
            vectors.update(sub.vectors)
            out.append(_flat(sub, op.name))
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
    cause = getattr(e, "cause", None)
    if isinstance(cause, _Permanent):
        return str(cause).split(":", 1)[0]
    if isinstance(cause, BaseException) and not type(cause).__module__.startswith("ray."):
        return type(cause).__name__
    return type(e).__name__


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

    cause = getattr(e, "cause", None)
    if not isinstance(cause, _Permanent) or len(group) < 2:
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


def _private_dir(src: Path, workdir: Path | None) -> tempfile.TemporaryDirectory[str]:
    """A fresh ``ragkit-shards-*`` folder for a loaded operator's own copy of its shard folders (in ``src``):
    inside ``workdir`` when given; else in the temporary folder when it is on ``src``'s file system (the
    files are hard links there), else beside ``src`` (the same file system, and storage the Ray workers
    read when they read ``src``), else in the temporary folder (the files are copied)."""
    places: list[Path] = [workdir] if workdir is not None else []
    tmp = Path(tempfile.gettempdir())
    try:
        same = os.stat(tmp).st_dev == os.stat(src).st_dev
    except OSError:
        same = False
    places += [tmp] if same else [src.parent, tmp]
    for place in places[:-1]:
        try:
            return tempfile.TemporaryDirectory(prefix="ragkit-shards-", dir=place, ignore_cleanup_errors=True)
        except OSError:  # (a read-only folder): the next place
            continue
    return tempfile.TemporaryDirectory(prefix="ragkit-shards-", dir=places[-1], ignore_cleanup_errors=True)


def _link_tree(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of the folder ``src`` whose files are hard links to ``src``'s (copies where a link
    cannot be made: another file system).  A save replaces its files (new ones, renamed over the old), so the
    linked files keep the contents they had."""
    dst.mkdir()
    for entry in os.scandir(src):
        target = dst / entry.name
        if entry.is_dir(follow_symlinks=False):
            _link_tree(Path(entry.path), target)
            continue
        try:
            os.link(entry.path, target)
        except OSError:
            shutil.copy2(entry.path, target)


#: One shard's rankings of a query batch as flat arrays: every query's rows (int64) and scores (float32), one
#: query after the other, and each query's number of results (int64)
_Flat = tuple[np.ndarray, np.ndarray, np.ndarray]


def _flat(state: State, name: str) -> _Flat:
    """The rankings in the output of a shard's retriever ``name`` as flat ``(rows, scores, lengths)`` arrays
    (three arrays to send back from a Ray actor, not one pair per query)."""
    if state.rankings is None:
        raise ShardError(f"sharded: the per-shard retriever {name} returned no rankings")
    return _flatten(state.rankings)


def _flatten(rankings: Sequence[Ranking]) -> _Flat:
    """``(rows, scores, lengths)`` of ``rankings``, flat (see :data:`_Flat`)."""
    lens = np.fromiter((len(r.rows) for r in rankings), np.int64, len(rankings))
    if not len(rankings):
        return np.empty(0, np.int64), np.empty(0, np.float32), lens
    return (np.concatenate([r.rows for r in rankings]).astype(np.int64, copy=False),
            np.concatenate([r.scores for r in rankings]).astype(np.float32, copy=False), lens)


def _split(rows: np.ndarray, scores: np.ndarray, lens: np.ndarray) -> list[Ranking]:
    """Flat ``(rows, scores, lengths)`` as one :class:`Ranking` per query (none for no query)."""
    if not len(lens):
        return []
    cuts = np.cumsum(lens)[:-1]
    return [Ranking(r, s) for r, s in zip(np.split(rows, cuts), np.split(scores, cuts))]


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
        if self._backend == "ray" and missing_modules(["ray"]):
            raise MissingExtraError(f"sharded.backend: 'ray' fits and searches the shards on Ray, which is not "
                                    f"installed: {_RAY_INSTALL}; or set backend: local", extra="ray", packages=["ray"])

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
            extra = {"modules": modules} if modules else {}  # (none for ragkit's own retrievers)
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
        tmp = tempfile.TemporaryDirectory(prefix="ragkit-shards-", dir=self._workdir(), ignore_cleanup_errors=True)
        try:
            root = Path(os.path.abspath(tmp.name))
            folders = [str(root / f"shard-{s:03d}") for s in range(self.params.n_shards)]
            self._build_shards(corpus, bounds, folders)
            # on Ray the actors search and the driver's shards only save (and share BM25's statistics):
            # memory-mapped from the fit's folders, they do not hold every shard's index in the driver
            mapped = self._use_ray()
            shards = _open_shards(folders, corpus, bounds, mmap=mapped)
            if self._share_collection(shards) and mapped:
                for shard, f in zip(shards, folders):  # the Ray actors load the shards from these folders
                    if shard is not None:  # (written under a temporary name and renamed: mapped files stay readable)
                        shard.save(f)
                shards = _open_shards(folders, corpus, bounds, mmap=True)  # the weights just saved, mapped in turn
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
        node = dict(self.params.retriever)
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
            for s, ref in zip(live, refs):
                try:
                    ray.get(ref)
                except Exception as e:
                    raise failed(s, _reason(e), _retried(self.params.max_retries, e)) from None
        except BaseException:
            _drain(ray, refs)  # the other shards' tasks end before the fit's folder is removed
            raise
        self._check_script(corpus)

    def _check_script(self, corpus: Corpus) -> None:
        """A BM25 per-shard retriever's check of the script of ``corpus``, the whole corpus (which one index's fit
        makes, and the shards' fits skip: :func:`_fit_shard`); nothing for other retrievers."""
        from ragkit.retrievers.bm25 import BM25

        sub = self.sub_retriever()
        if isinstance(sub, BM25):
            sub._check_script(corpus)

    def _share_collection(self, every: list[Operator | None]) -> bool:
        """Give BM25 shards the whole corpus's idf and average length (as Elasticsearch's
        ``dfs_query_then_fetch`` does), so that the merged ranking equals one index's.

        Document frequencies are summed per term over the shards' vocabularies (one
        ``np.unique`` over their concatenation); returns False for other retrievers.  ``every``: the
        shards, in corpus order, None for an empty one (changed in place)."""
        from ragkit.retrievers.bm25 import BM25

        built = [sh for sh in every if sh is not None]  # (an empty shard has no documents and no statistics)
        shards = [sh for sh in built if isinstance(sh, BM25)]
        if not shards or len(shards) < len(built):
            return False
        terms = [np.array(sh.terms(), dtype=object) for sh in shards]
        dfs = [sh.doc_freqs() for sh in shards]
        lengths = np.concatenate([sh.doc_lengths() for sh in shards])  # corpus order, as one index sums them
        uniq, inv = np.unique(np.concatenate(terms), return_inverse=True)
        df = np.bincount(inv, weights=np.concatenate(dfs), minlength=len(uniq))
        n, avgdl = shards[0].collection_of(lengths)  # (as one index counts its documents and averages them)
        idf = shards[0].idf_of(df, n)
        cuts = np.cumsum([0] + [len(t) for t in terms])
        for sh, a, b in zip(shards, cuts[:-1], cuts[1:]):
            sh.set_collection(idf[inv[a:b]], avgdl)
        return True


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
        if self._use_ray():
            self._check_ray_model("sharded.search")  # before Ray starts
            self._ray_modules("sharded.search")
            self._check_filters(options)  # a bad filter is refused here, as a local search refuses it
            ray = ray_init()
            results = self._search_ray(ray, live, texts, options, rewrites)
        else:
            results = []
            for s in live:
                shard = self.shards_[s]
                assert shard is not None  # (a live shard has documents, so it was built)
                sub = shard(State(texts, list(state.query_ids), options=options, vectors=state.vectors,
                                            values=dict(rewrites)))
                state.vectors.update(sub.vectors)
                results.append(_flat(sub, self._sub_name))
        out = state.copy()
        if not results:
            out.rankings = [Ranking.empty() for _ in texts]
            return out
        parts = [(rows + off, sc, lens) for (rows, sc, lens), off in zip(results, self.bounds_[live])]
        out.rankings = _split(*_merge_flat(parts, merge_k, self._finer(live, texts, rewrites)))
        return out

    def _finer(self, live: np.ndarray, texts: list[str], rewrites: dict[str, Any]
               ) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
        """For ``bm25`` shards: their float64 scores of given ``(query number, row)`` pairs (``score_matrix`` of the
        text each shard searched, in this process: the shards are held here, memory-mapped when Ray searches), for
        the merge to order two shards' documents whose float32 scores tie as one index orders them
        (:func:`_merge_flat`); else None."""
        from ragkit.retrievers.bm25 import BM25

        shards = [self.shards_[s] for s in live]
        if len(shards) < 2 or not all(isinstance(sh, BM25) for sh in shards):
            return None
        lexical = State(list(texts), values=dict(rewrites)).texts(lexical=True)
        bounds = self.bounds_

        def finer(q: np.ndarray, rows: np.ndarray) -> np.ndarray:
            out = np.zeros(len(rows), np.float64)
            which = np.searchsorted(bounds, rows, side="right") - 1
            for s in np.unique(which):
                sh = self.shards_[int(s)]
                assert isinstance(sh, BM25)
                at = np.flatnonzero(which == s)
                uq, inv = np.unique(q[at], return_inverse=True)
                step = max(1, _MERGE_CELLS // max(1, int(bounds[s + 1] - bounds[s])))  # dense rows of scores
                for c in range(0, len(uq), step):
                    sel = np.flatnonzero((inv >= c) & (inv < c + step))
                    scores = sh.score_matrix([lexical[int(i)] for i in uq[c:c + step]])
                    out[at[sel]] = scores[inv[sel] - c, rows[at[sel]] - bounds[s]]
            return out
        return finer

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
            if given is not None:
                self.corpus_.mask(given)

    def _search_ray(self, ray: Any, live: np.ndarray, texts: list[str], options: dict[str, Any],
                    rewrites: dict[str, Any]) -> list[_Flat]:
        """Flat ``(rows, scores, lengths)`` (:func:`_flat`) of each shard of ``live`` (shard numbers, in order),
        searched by the Ray actors serving them (:func:`_groups`).

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
            refs = [a.search.remote(texts, options, rewrites) for a in actors]
            results: list[_Flat] = []
            for i, (group, ref) in enumerate(zip(groups, refs)):
                try:
                    results += ray.get(ref)
                except Exception as e:
                    # every other actor's result (or error) is fetched first: Ray prints an error never fetched
                    # as an 'Unhandled error' traceback
                    _drain(ray, refs)
                    cause = _root_cause(e)
                    if cause is not None and not isinstance(e, RayActorError):
                        raise cause from None  # what a local search raises; the actors stay
                    raised = _raised_by_task(e)
                    if raised is not None:
                        # the shard's search itself raised it (a custom retriever's ValueError...): raised as a local
                        # search raises it, the remote traceback chained; the actors are sound and stay
                        raise raised from e
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


class _SharedDir:
    """A copy's handle on the shard folder of the :class:`Sharded` it was copied from (``name``, its path).

    It never removes the folder itself (``cleanup`` does nothing); borrowing the owner's
    ``TemporaryDirectory`` (``tmp``, in this process) keeps it: the owner's refit releases it
    (:func:`_release_dir`) only once no copy still borrows it, else the last copy to go removes it.  A
    pickled one names the folder only (no ``tmp``): the original's process owns it."""

    def __init__(self, name: str, tmp: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.name, self.tmp = name, tmp
        if tmp is not None:
            _borrowers(tmp).add(self)
            weakref.finalize(self, _borrower_gone, tmp)

    def cleanup(self) -> None:
        """Nothing: the folder is its owner's."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedDir:
        return _SharedDir(self.name, self.tmp)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_SharedDir, (self.name,))


def _borrowers(tmp: tempfile.TemporaryDirectory[str]) -> weakref.WeakSet[_SharedDir]:
    """The copies' handles (:class:`_SharedDir`) that borrow the shard folder ``tmp``."""
    return tmp.__dict__.setdefault("_ragkit_borrowers", weakref.WeakSet())


def _release_dir(folder: tempfile.TemporaryDirectory[str] | _SharedDir) -> None:
    """Remove a refitted :class:`Sharded`'s earlier shard folder, unless a copy still borrows it (the last
    copy to go removes it then); a copy's own handle removes nothing."""
    if isinstance(folder, _SharedDir):
        return
    folder.__dict__["_ragkit_released"] = True
    if not list(_borrowers(folder)):
        folder.cleanup()


def _borrower_gone(tmp: tempfile.TemporaryDirectory[str]) -> None:
    """A copy's handle on ``tmp`` is gone: remove the folder if its owner released it and no copy is left."""
    if tmp.__dict__.get("_ragkit_released") and not list(_borrowers(tmp)):
        tmp.cleanup()


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


def _search_chunk(pipe_dir: str, ids: list[str], texts: list[str], k: int | None,
                  options: dict[str, Any] | None = None) -> Any:
    from ragkit.pipelines import Pipeline
    from ragkit.types import Queries

    with _in_chunk():  # a ray-backed sharded retriever searches its shards here: no shard actors per chunk
        run = Pipeline.load(pipe_dir).search(Queries(ids, texts), k=k, **(options or {}))
    return run.query_ids, run.doc_ids, [(r.rows, r.scores) for r in run.rankings or []], run.values


def _registered_in(pipe: Any) -> list[tuple[str, str]]:
    """``(path, model)`` for every operator of ``pipe`` (a ``sharded`` retriever's per-shard one
    included) whose ``model`` is registered with ``register_encoder`` in this process."""
    from ragkit.pipelines.yaml import walk_leaves

    found = []
    for path, leaf in walk_leaves(pipe):
        op, where = (leaf.sub_retriever(), f"{path}.retriever") if isinstance(leaf, Sharded) else (leaf, path)
        model = getattr(op.params, "model", None)
        if _registered(model):
            found.append((f"{where}.model", model))
    return found


def search_distributed(pipe: Pipeline | Operator,
                       queries: Queries | Sequence[str] | Mapping[str, str] | pd.Series | str, *,
                       n_chunks: int = 4, k: int | None = None, workdir: str | os.PathLike[str] | None = None,
                       **options: Any) -> Run:
    """Search a large query batch split across Ray workers (each loads the saved pipeline).

    Returns the same :class:`~ragkit.run.Run` as ``pipe.search(queries, k=k, **options)``:
    document ids, scores, the row rankings and the per-query values, in query order (no trace).
    A ``sharded`` retriever with ``backend: ray`` is searched inside each chunk's task (its shards
    memory-mapped there), not by shard actors of its own: the chunks are the parallel work.

    Parameters
    ----------
    pipe : Pipeline or Operator
        A fitted pipeline (or one fitted operator); it is saved to a temporary folder that
        every worker loads (inside ``workdir``), removed when the search ends.
    queries : Queries, list of str, str, or {query_id: text}
        Any form ``search`` takes (a pandas Series indexed by query ids too), with the same ids.
    n_chunks : int
        Number of query chunks, one Ray task each (at most one per query).
    k : int, optional
        Final number of results per query, as for ``search``.
    workdir : str or os.PathLike, optional
        Where the pipeline is saved for the workers (a fresh ``ragkit-pipe-*`` folder inside it,
        made when missing); must be storage every worker reads on a multi-node cluster
        (default: a local temporary folder, which only workers on this machine read).
    **options
        Run-time options as for ``search`` (``filter=...``, ``bm25={"k": 3}``...), checked
        against ``pipe`` before Ray starts.  ``trace`` and ``qrels`` are not supported.

    Raises
    ------
    ParamError
        Before Ray starts: a bad ``n_chunks``, ``k`` or option, a ``workdir`` that is (or lies
        below) a file, or an operator whose ``model`` is an encoder registered with
        ``register_encoder`` (Ray workers lack it).
    NotFittedError
        Before Ray starts, when ``pipe`` is not fitted.
    ShardError
        When a chunk fails on the workers after Ray's retries, naming the chunk; before any chunk is submitted
        when the Ray cluster has no CPU to run one (``ray.init(num_cpus=0)``).
    """
    from ragkit.options import check_options
    from ragkit.pipelines import Pipeline
    from ragkit.run import Run
    from ragkit.types import Queries

    if isinstance(n_chunks, bool) or not isinstance(n_chunks, (int, np.integer)) or n_chunks < 1:
        raise ParamError(f"search_distributed: n_chunks must be a positive integer (query chunks, one Ray task "
                         f"each), got {n_chunks!r}")
    for key in ("trace", "qrels"):
        if key in options:
            raise ParamError(f"search_distributed: {key}= is not supported (the workers return rankings and "
                             f"values only); use pipe.search(queries, {key}=...) in this process")
    if not isinstance(pipe, Pipeline):
        if not isinstance(pipe, Operator):
            raise ParamError(f"search_distributed: expected a fitted ragkit Pipeline or Operator, "
                             f"got {type(pipe).__name__}")
        single = Pipeline([pipe])
        if pipe.is_fitted and not pipe.stateless:
            single.corpus_ = pipe.corpus_
        pipe = single
    pipe._check_fitted()  # before Ray starts or the pipeline is saved (a worker would fail, retried)
    from ragkit.pipelines._compose import iter_leaves, shared_corpus

    if not any(leaf.kind == "retriever" for leaf in iter_leaves(pipe)):
        raise ParamError("search_distributed: this pipeline has no retriever, so no query would get a document; "
                         "start it with one, e.g. bm25 or dense")
    registered = _registered_in(pipe)
    if registered:
        where, model = registered[0]
        raise ParamError(f"search_distributed: {where} {model!r} is an encoder registered with register_encoder in "
                         f"this process; the Ray workers that load the pipeline do not have it: search in this "
                         f"process (pipe.search)", path=where)
    modules = _plugin_modules(_operator_classes(pipe), "search_distributed")  # before Ray: workers import them
    check_options(pipe, {**options, **({} if k is None else {"k": k})}, shared_corpus(pipe))  # before Ray
    check_workdir(workdir, "search_distributed: workdir", "the saved pipeline")
    if not isinstance(queries, Queries):  # every form search takes, as it takes it ({id: text}, a Series...)
        given = State.of(queries)
        queries = Queries(given.query_ids, given.queries)
    ray = ray_init()
    _check_cpus(ray, "search_distributed")  # before the pipeline is saved or any chunk's task is submitted
    bounds = np.linspace(0, len(queries), int(n_chunks) + 1).astype(int)
    spans = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    if workdir:  # absolute: the workers run in folders of their own
        workdir = Path(os.path.abspath(user_path(workdir, "search_distributed: workdir")))
        workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ragkit-pipe-", dir=workdir) as name:
        tmp = os.path.abspath(name)
        pipe.save(Path(tmp) / "p")
        task = ray.remote(max_retries=_SEARCH_RETRIES, retry_exceptions=list(_TRANSIENT))(
            _deterministic_errors_final(_with_plugins(modules, _search_chunk)))
        refs = [task.remote(str(Path(tmp) / "p"), queries.ids[a:b], queries.texts[a:b], k, options)
                for a, b in spans]
        chunks = []
        try:
            for c, ((a, b), ref) in enumerate(zip(spans, refs)):
                try:
                    chunks.append(ray.get(ref))
                except Exception as e:  # noqa: BLE001 - a Ray error becomes ours, naming the chunk
                    raise ShardError(f"search_distributed: chunk {c} (queries {a}..{b - 1}) "
                                     f"failed{_retried(_SEARCH_RETRIES, e)}: {_reason(e)}") from None
        except BaseException:
            _drain(ray, refs)  # no chunk (or retry) may still read the folder deleted next
            raise
    qids = [q for c in chunks for q in c[0]]
    docs = [d for c in chunks for d in c[1]]
    rankings = [Ranking(rows, sc) for c in chunks for rows, sc in c[2]]
    keys = list(dict.fromkeys(key for c in chunks for key in c[3]))
    values = {key: [v for c in chunks for v in c[3].get(key, [None] * len(c[0]))] for key in keys}
    from ragkit.run import learned_query_ids

    return Run(qids, docs, [r.scores for r in rankings], rankings=rankings, values=values,
               learned_from=learned_query_ids(pipe, queries.ids, queries.texts))
