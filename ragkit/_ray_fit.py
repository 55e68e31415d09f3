"""A pipeline's fit with Ray encoding (:func:`fit_pipeline`): the corpus's sentence vectors of its
models encoded on Ray into this process's embedding cache, then a local fit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ragkit._ray import _ray, _registered
from ragkit._ray_encode import _check_model, _env_actors, ray_encode
from ragkit._sharded import Sharded
from ragkit.errors import ParamError
from ragkit.operator import check_fit_inputs
from ragkit.types import Corpus, State, TrainSet

if TYPE_CHECKING:
    from ragkit.encoders.cache import EmbeddingCache


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


def corpus_models(pipe: Any, ray_shards: bool = True) -> list[str]:
    """The models whose sentence vectors of the corpus ``pipe``'s fit reads (a ``sharded``
    retriever's per-shard retriever included), sorted, without registered encoders (see
    :func:`fit_pipeline`).  ``ray_shards=False``: not those of a ``sharded`` retriever whose shards a
    ``fit(backend="ray")`` builds on Ray (``backend`` not ``local``), which encode their own slices there."""
    from ragkit.pipelines._compose import iter_leaves

    kinds = _sentence_encoders()
    models: set[str] = set()
    for leaf in iter_leaves(pipe):
        if isinstance(leaf, Sharded) and not ray_shards and leaf.params.backend != "local":
            continue
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
    twice, whichever cache the Ray workers have).  A model only ``sharded`` retrievers fitted on Ray
    read is encoded by the actor pool into the workers' caches only (``ray_encode(fill_only=True)``:
    the shards' tasks read their slices from them; no ``(n, dim)`` matrix comes back here).

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
    check_trainable(pipe, train, corpus, path)  # before Ray encodes anything (a step fitted on its own: path '')
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
    for model in corpus_models(pipe):  # each checked to load before Ray starts
        _check_model(model, 64, "fit(backend='ray')")
    # (a sharded retriever fitted on Ray reads its shards' slices in its own Ray tasks, from the workers' caches:
    # the actor pool (one actor per CPU) fills them, its vectors not brought here; a model a step fitted here
    # also reads is collected into this process's cache)
    models = corpus_models(pipe)
    collected = set(corpus_models(pipe, ray_shards=False))
    if models:
        from ragkit.encoders.cache import text_digests

        texts = list(corpus.full_texts)
        digests = text_digests(texts)  # once: a text's digest is the same for every model
        for model in models:  # only the texts this process's cache lacks go to Ray: none, no encoder pool at all
            todo = _uncached(model, digests)
            if not len(todo):
                continue
            todo_texts = [texts[i] for i in todo.tolist()]
            if model in collected:
                _cache_vectors(model, digests[todo], ray_encode(model, todo_texts, num_actors=num_actors))
            else:
                ray_encode(model, todo_texts, num_actors=num_actors, fill_only=True)
    for leaf in sharded:  # backend "auto": fitted and searched on Ray from now on in this process
        leaf._backend = "ray"
    return pipe.fit(corpus, train, upstream=upstream)
