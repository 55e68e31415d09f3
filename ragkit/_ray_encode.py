"""Encoding texts on Ray: :func:`ray_encode` over a pool of encoder actors (:class:`_EncoderActor`)."""

from __future__ import annotations

import os
from typing import Any, Iterable, Literal, Mapping, Sequence, overload

import numpy as np

from ragkit._ray import ShardError, _check_cpus, _reason, _registered, _root_cause, ray_init
from ragkit.encoders.sentence import as_texts
from ragkit.errors import ParamError, RagkitError


class _EncoderActor:
    """Ray Data actor: loads the model once, encodes batches through the disk cache.  ``keep=False``: returns the
    batch's rows only, its vectors left in the cache (:func:`ray_encode`'s ``fill_only``)."""

    def __init__(self, model: str, batch_size: int, cache: bool = True, keep: bool = True) -> None:
        from ragkit.encoders import get_encoder

        self.encoder = get_encoder(model, batch_size=batch_size)
        self.cache = cache
        self.keep = keep

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vecs = self.encoder.encode(batch["text"].tolist(), progress=False, cache=self.cache)
        return {"i": batch["i"], "vec": vecs} if self.keep else {"i": batch["i"]}


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
    """Gather the encoded batches ``{"i": rows, "vec": vectors}`` into ``(n, dim)`` in input order (``dim`` 0:
    batches of rows only, whose vectors stay in the actors' caches: each is read and dropped).

    A failure while the actors encode surfaces as the :class:`RagkitError` behind it where Ray kept
    it, else as a :class:`ShardError` naming the model, never as a bare Ray exception."""
    out = np.zeros((n, dim), np.float32)
    try:
        for b in batches:
            if dim:
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


@overload
def ray_encode(model: str, texts: Sequence[str], *, num_actors: int | None = None, batch_size: int = 64,
               block: int = 256, cache: bool = True, fill_only: Literal[False] = False) -> np.ndarray: ...


@overload
def ray_encode(model: str, texts: Sequence[str], *, num_actors: int | None = None, batch_size: int = 64,
               block: int = 256, cache: bool = True, fill_only: Literal[True]) -> None: ...


def ray_encode(model: str, texts: Sequence[str], *, num_actors: int | None = None, batch_size: int = 64,
               block: int = 256, cache: bool = True, fill_only: bool = False) -> np.ndarray | None:
    """Encode ``texts`` with a pool of encoder actors; returns ``(n, dim)`` in input order.

    ``num_actors`` actors (default: ``$RAGKIT_RAY_ACTORS`` when set, else one per CPU of the Ray
    cluster), at most one per ``block`` of texts; each loads the model once.  With ``cache=True``
    the actors read and fill the shared on-disk embedding cache.  ``fill_only=True`` (``cache`` must
    be True): the actors only fill their nodes' caches and no vector comes back to this process
    (returns None once all are encoded), for Ray tasks on those nodes to read them.

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
    if fill_only and not cache:
        raise ParamError("ray_encode: fill_only=True fills the actors' embedding caches, so cache must be True, "
                         "got cache=False")
    if num_actors is None:
        _env_actors()  # a bad $RAGKIT_RAY_ACTORS: said before any model loads
    texts = as_texts(texts, "ray_encode")
    dim = _check_model(model, batch_size, f"ray_encode({model!r})")
    if not texts:
        return None if fill_only else np.zeros((0, dim), np.float32)
    cluster = ray_init()
    _check_cpus(cluster, f"ray_encode({model!r})")  # before the pool: its actors would wait forever for a CPU
    size = _pool_size(cluster, num_actors, -(-len(texts) // block))
    import ray.data

    ds: ray.data.Dataset = ray.data.from_items([{"i": i, "text": t} for i, t in enumerate(texts)])
    ds = ds.map_batches(_EncoderActor, fn_constructor_args=(model, batch_size, cache, not fill_only),
                        batch_size=block, compute=ray.data.ActorPoolStrategy(size=size), batch_format="numpy")
    out = _collect(ds.iter_batches(batch_size=4096, batch_format="numpy"), len(texts), 0 if fill_only else dim,
                   model)
    return None if fill_only else out
