"""The Ray session and what ragkit's Ray tasks share: starting or joining Ray (:func:`ray_init`), Ray
installed or not, the retry policy (:class:`_Permanent`, :class:`ShardError`), the plugin imports and the
register_encoder check of a worker, Ray's errors read back, the no-CPU check, and a ``workdir`` the workers read.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable, Literal, NoReturn, Sequence, TypeGuard

from ragkit._files import file_above, user_path
from ragkit._plugins import _import_plugins
from ragkit.errors import ArtifactError, ParamError, RagkitError, require
from ragkit.types import Corpus

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
# those of them Ray would retry (OSErrors: ragkit's ArtifactError and the path errors); a task whose other errors
# (a DataError, a ParamError) reach the caller as they were raised makes only these _Permanent
_RETRIED_FINAL: tuple[type[BaseException], ...] = (ArtifactError, *_DETERMINISTIC_OS)


_DRAIN_S = 120.0  # the longest a failed search waits for its other chunks


class _Permanent(RuntimeError):
    """An error inside a Ray task that the same inputs would raise again: a ragkit error (an
    :class:`~ragkit.errors.ArtifactError` is also an ``OSError``, which Ray would retry) or a
    path error (:data:`_DETERMINISTIC_OS`).  It is not retried; its text is the original's,
    ``"ArtifactError: ..."``."""


def _deterministic_errors_final(fn: Callable[..., Any],
                                final: tuple[type[BaseException], ...] = _FINAL) -> Callable[..., Any]:
    """``fn`` for a Ray task whose deterministic errors (``final``: ragkit's, :data:`_DETERMINISTIC_OS`) are
    raised as :class:`_Permanent`, so Ray's ``retry_exceptions`` does not retry them (``final`` =
    :data:`_RETRIED_FINAL`: only those Ray would retry, the others raised as they are)."""
    def task(*args: Any) -> Any:
        try:
            return fn(*args)
        except final as e:
            raise _Permanent(f"{type(e).__name__}: {e}") from None
    return task


def _retried(n: int, e: BaseException | None = None) -> str:
    """What a failure message says about retries: only crashes and transient errors are retried, so
    nothing when ``e`` (the error ``ray.get`` raised) was none of those (a ``ValueError``, a ragkit error)."""
    if e is not None and not _was_retried(e):
        return ""
    return f" (after up to {n} retries of a crashed worker or an OS / memory error)" if n else ""


def classify(e: BaseException) -> tuple[Literal["permanent", "raised", "ray"], BaseException]:
    """What the error ``e`` that ``ray.get`` raised for one of ragkit's Ray tasks (or actor methods) is, with the
    error behind it: ``("permanent", cause)``, a deterministic error the task raised as :class:`_Permanent` (its text
    the original's); ``("raised", cause)``, an exception the task's own code raised (``RayTaskError.cause``: a
    ``ValueError``, a transient ``OSError``...); ``("ray", e)``, a failure of Ray's own (an actor or worker gone, an
    object lost, or an exception Ray could not bring back: its deserialisation error, a Ray class)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, _Permanent):
        return "permanent", cause
    if isinstance(cause, Exception) and not type(cause).__module__.startswith("ray."):
        return "raised", cause
    return "ray", e


def _was_retried(e: BaseException) -> bool:
    """Whether Ray retried the task whose ``ray.get`` raised ``e``: a crashed worker (a Ray error of its own)
    or a transient error (:data:`_TRANSIENT`), not what the task raised for good (:class:`_Permanent`, a
    ``ValueError``...)."""
    kind, cause = classify(e)
    return kind == "ray" or (kind == "raised" and isinstance(cause, _TRANSIENT))


class ShardError(RagkitError, RuntimeError):
    """A shard could not be built or searched, even after Ray's retries."""


#: how Ray is installed, in the error of a Ray backend without it
_RAY_INSTALL = ("pip install 'ragkit[ray]' (or pip install 'ray[data]>=2.9'; in a ragkit checkout: "
                "pip install -e '.[ray]')")


def _ray():
    """The ``ray`` module; :class:`~ragkit.errors.MissingExtraError` naming the ``ray`` extra where it is not
    installed (one installed that fails to import raises its own ``ImportError``)."""
    try:
        import ray
    except ImportError:
        require(["ray"], extra="ray", what="the Ray backend needs Ray", install=_RAY_INSTALL)
        raise
    return ray


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
    kind, cause = classify(e)
    return cause if kind == "raised" else None


def _reason(e: BaseException) -> str:
    """What failed, for an error message: ``"ValueError: ..."`` for the user exception a Ray task
    raised (``RayTaskError.cause``), else the Ray error's own text without its terminal colours."""
    import re

    kind, cause = classify(e)
    if kind == "permanent":
        return str(cause)
    if kind == "raised":
        return f"{type(cause).__name__}: {cause}"
    return re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()


def gather(ray: Any, refs: Sequence[Any], fail: Callable[[int, Exception], NoReturn]) -> list[Any]:
    """The results of the Ray tasks ``refs``, in submission order, waited for in the order they end
    (``ray.wait(num_returns=1)``): the first that fails calls ``fail(i, e)`` (``i`` its index in ``refs``,
    ``e`` what ``ray.get`` raised), which raises, at once, without waiting for the tasks still running (the
    caller waits for those: :func:`_drain`).  Among the failed tasks that have ended by then, the first
    submitted is the one given."""
    index = {ref: i for i, ref in enumerate(refs)}
    out: list[Any] = [None] * len(refs)
    left = list(refs)
    while left:
        done, left = ray.wait(left, num_returns=1)
        for ref in done:
            try:
                out[index[ref]] = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - the caller's fail says what failed
                failed = [(index[ref], e)]
                try:  # (those ended meanwhile, for the first submitted: two failing at once report the same one)
                    ended, _ = ray.wait(left, num_returns=len(left), timeout=0) if left else ([], [])
                except Exception:  # noqa: BLE001 - best effort: ``e`` is reported
                    ended = []
                for other in ended:
                    try:
                        ray.get(other, timeout=0)
                    except Exception as o:  # noqa: BLE001 - another failure, reported when submitted earlier
                        failed.append((index[other], o))
                fail(*min(failed, key=lambda f: f[0]))
    return out


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
    cluster whose CPUs are busy runs the work once they are free.  ``$RAGKIT_RAY_WAIT_FOR_CPUS=1`` (or true, yes, on:
    :func:`~ragkit.encoders.cache.env_flag`, which refuses a value of neither kind) submits anyway,
    with a warning: an autoscaling cluster whose head node has no CPU (KubeRay's usual setting) adds CPU nodes on
    demand, which ``cluster_resources`` cannot show."""
    total = float(ray.cluster_resources().get("CPU", 0.0))
    if total >= _TASK_CPUS:
        return
    from ragkit.encoders.cache import env_flag

    if env_flag("RAGKIT_RAY_WAIT_FOR_CPUS", "submit anyway: an autoscaler adds CPU nodes on demand",
                "refuse a cluster without CPUs"):
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
