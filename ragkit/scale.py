"""Scale out on Ray: encoding, sharded indexing and batch search (``pip install 'ragkit[ray]'``).

* ``pipeline.fit(corpus, backend="ray")`` encodes the corpus for every encoder-backed
  operator as a Ray Data ``map_batches`` over a pool of encoder actors (each loads the
  model once and writes into the shared on-disk embedding cache), then fits the
  pipeline; the operators then read their vectors from the cache, so the fitted
  pipeline is exactly the one a local fit gives, and saves and loads like any other.
* :class:`Sharded` splits the corpus into shards, fits one ordinary ragkit retriever per
  shard (as Ray tasks, one folder per shard), searches all shards for a query batch and
  merges the rankings by score with :func:`merge_rankings` (the same merge for any set of
  shards).  A shard that fails after Ray's retries raises an error naming the shard.
* :func:`search_distributed` splits a query batch across Ray workers, each loading the
  saved pipeline once.

Works with ``ray.init()`` on one machine and with an existing cluster address
(``RAGKIT_RAY_ADDRESS`` or ``ray.init(address=...)`` before calling).  Without Ray
nothing here is imported and the local default is unchanged.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import Field

from ragkit.encoders.sentence import DEFAULT_MODEL
from ragkit.errors import ParamError, RagkitError
from ragkit.operator import Operator, read_json, write_json
from ragkit.params import Params
from ragkit.registry import register
from ragkit.types import QUERY_REWRITES, Corpus, Ranking, State, TrainSet

__all__ = ["ray_init", "ray_encode", "fit_pipeline", "Sharded", "merge_rankings", "search_distributed", "ShardError"]


class ShardError(RagkitError, RuntimeError):
    """A shard could not be built or searched, even after Ray's retries."""


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError("the Ray backend needs Ray: pip install 'ragkit[ray]'") from None
    return ray


def ray_init(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Start (or join) Ray once: ``address`` / ``$RAGKIT_RAY_ADDRESS`` joins a cluster, else a local one."""
    ray = _ray()
    if not ray.is_initialized():
        address = address or os.environ.get("RAGKIT_RAY_ADDRESS")
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, **kwargs)
    return ray


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


def ray_encode(model: str, texts: Sequence[str], *, num_actors: int = 2, batch_size: int = 64,
               block: int = 256, cache: bool = True) -> np.ndarray:
    """Encode ``texts`` with a pool of ``num_actors`` encoder actors; returns ``(n, dim)`` in input order.

    With ``cache=True`` the actors read and fill the shared on-disk embedding cache.
    """
    ray_init()
    import ray.data

    ds = ray.data.from_items([{"i": i, "text": t} for i, t in enumerate(texts)])
    ds = ds.map_batches(_EncoderActor, fn_constructor_args=(model, batch_size, cache), batch_size=block,
                        compute=ray.data.ActorPoolStrategy(size=num_actors), batch_format="numpy")
    out: np.ndarray | None = None
    for b in ds.iter_batches(batch_size=4096, batch_format="numpy"):
        if out is None:
            out = np.zeros((len(texts), b["vec"].shape[1]), np.float32)
        out[b["i"]] = b["vec"]
    if out is None:
        raise ShardError("Ray encoding returned no batches")
    return out


def fit_pipeline(pipe: Any, corpus: Corpus, train: TrainSet | None, *, backend: str = "ray",
                 num_actors: int = 2) -> Any:
    """Fit ``pipe`` with Ray encoding: pre-encode every encoder model's corpus texts, then fit locally."""
    if backend != "ray":
        raise ParamError(f"fit: backend must be 'local' or 'ray', got {backend!r}")
    from ragkit.pipelines._compose import check_trainable, iter_leaves

    check_trainable(pipe, train)  # before Ray encodes anything
    models = set()
    for leaf in iter_leaves(pipe):
        params = leaf.params.model_dump()
        if isinstance(leaf, Sharded):
            (name, sub), = leaf.params.retriever.items()
            params = dict(sub or {})
            if name == "dense":
                params.setdefault("model", DEFAULT_MODEL)
        if isinstance(params.get("model"), str) and leaf.kind == "retriever":
            models.add(params["model"])
    for model in sorted(models):
        ray_encode(model, corpus.full_texts, num_actors=num_actors)
    for leaf in iter_leaves(pipe):
        if isinstance(leaf, Sharded):
            leaf._backend = "ray"
    return pipe.fit(corpus, train)


# ---------------------------------------------------------------------- merging
def merge_rankings(parts: Sequence[list[Ranking]], k: int) -> list[Ranking]:
    """Merge per-shard rankings of the same queries by score (rows already global), top ``k`` each.

    Flat arrays for the whole batch: one lexsort by (query, -score, row).
    """
    n_q = len(parts[0]) if parts else 0
    lens = np.array([[len(p[i]) for i in range(n_q)] for p in parts], dtype=np.int64).reshape(len(parts), n_q)
    q = np.concatenate([np.repeat(np.arange(n_q), lens[s]) for s in range(len(parts))]) if n_q else np.empty(0, int)
    rows = np.concatenate([r.rows for p in parts for r in p]) if n_q else np.empty(0, np.int64)
    scores = np.concatenate([r.scores for p in parts for r in p]) if n_q else np.empty(0, np.float32)
    order = np.lexsort((rows, -scores, q))
    q, rows, scores = q[order], rows[order], scores[order]
    bounds = np.searchsorted(q, np.arange(n_q + 1))
    return [Ranking(rows[a:min(b, a + k)], scores[a:min(b, a + k)]) for a, b in zip(bounds[:-1], bounds[1:])]


# ---------------------------------------------------------------------- sharded retriever
class ShardedParams(Params):
    retriever: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"dense": {}},
        description="The per-shard retriever as a YAML node, e.g. {dense: {k: 100}}.")
    n_shards: int = Field(2, ge=1, description="Number of document shards.")
    k: int = Field(100, ge=1, description="Results per query after the merge.")
    backend: Literal["auto", "local", "ray"] = Field(
        "auto", description="Where shards are fitted and searched; auto = ray when fitted with backend='ray' "
                            "in this process (a loaded pipeline searches locally unless this is 'ray').")
    max_retries: int = Field(3, ge=0, description="Ray retries per shard task before the shard fails for good.")
    workdir: str | None = Field(
        None, description="Folder for the shard folders while fitting; must be shared storage on a multi-node "
                          "cluster (default: a local temporary folder).")


def _fit_shard(node: dict[str, Any], corpus: Corpus, folder: str) -> str:
    from ragkit.pipelines.yaml import build

    op = build(node, "sharded.retriever")
    op.fit(corpus)
    op.save(folder)
    return folder


class _ShardActor:
    """Holds one loaded shard operator on a Ray worker."""

    def __init__(self, folder: str) -> None:
        from ragkit.operator import Operator

        self.op = Operator.load(folder)

    def search(self, queries: list[str], options: dict[str, Any],
               values: dict[str, Any] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        out = self.op(State(list(queries), options=options, values=dict(values or {})))
        return [(r.rows, r.scores) for r in out.rankings]


@register
class Sharded(Operator):
    """A retriever split over document shards, each an ordinary fitted ragkit operator.

    Fitting builds one shard folder per slice of the corpus (Ray tasks with
    ``backend="ray"``); searching runs every shard on the query batch and merges the
    rankings by score.  With exact per-shard search the merged top-k equals the top-k of one
    index over the whole corpus: ``bm25`` shards are given the whole corpus's idf and average
    document length after fitting (Elasticsearch's ``dfs_query_then_fetch``), and ``dense``,
    ``muvera`` with exact search and ``maxsim_exact`` scores need no corpus statistics.  Other
    retrievers that learn from their corpus (``knn_embed``'s clusters) are fitted per shard.

    Examples
    --------
    >>> Sharded(retriever={"bm25": {"k": 10}}, n_shards=4, k=10)
    Sharded(retriever={'bm25': {'k': 10}}, n_shards=4, k=10)
    """

    name = "sharded"
    kind = "retriever"
    Params = ShardedParams
    example = {"retriever": {"bm25": {"k": 10}}, "n_shards": 3, "k": 10, "backend": "local"}
    #: the call's options go to every shard, whose retriever applies ``filter`` (and reads its own
    #: options, e.g. ``bm25={"n_jobs": 2}``: :meth:`option_children`); ``sharded`` reads only ``k``
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

        validate_params(cls.Params, sub, name, "sharded.retriever")
        self._backend = self.params.backend

    def option_children(self) -> list[tuple[str, Operator]]:
        """The per-shard retriever, which reads the call's options: a fitted shard once fitted (so
        that what its state cannot serve is refused before any shard searches), else one built
        from ``retriever``."""
        shards = getattr(self, "shards_", None)
        if shards:
            return [("retriever", shards[0])]
        from ragkit import registry

        (name, sub), = self.params.retriever.items()
        return [("retriever", registry.get(name)(sub))]

    def _use_ray(self) -> bool:
        return self._backend == "ray"

    def _drop_actors(self) -> None:
        """Stop the Ray actors serving the previous shards (a refit or load replaces them)."""
        actors, self._actors = getattr(self, "_actors", None), None
        if actors:
            import ray

            for a in actors:
                try:
                    ray.kill(a)
                except Exception:  # noqa: BLE001 - the cluster is already gone (ray.shutdown()): nothing to stop
                    pass

    def _fit(self, corpus: Corpus, train: TrainSet | None, upstream: State | None) -> None:
        self._drop_actors()
        bounds = np.linspace(0, len(corpus), self.params.n_shards + 1).astype(np.int64)
        self.bounds_ = bounds
        if self.params.workdir:
            root = Path(self.params.workdir)
            root.mkdir(parents=True, exist_ok=True)
        else:
            self._dir = tempfile.TemporaryDirectory(prefix="ragkit-shards-")
            root = Path(self._dir.name)
        folders = [str(root / f"shard-{s:03d}") for s in range(self.params.n_shards)]
        shards = [corpus.subset(np.arange(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
        node = dict(self.params.retriever)
        if self._use_ray():
            ray = ray_init()
            task = ray.remote(max_retries=self.params.max_retries, retry_exceptions=True)(_fit_shard)
            refs = [task.remote(node, sh, f) for sh, f in zip(shards, folders)]
            for s, ref in enumerate(refs):
                try:
                    ray.get(ref)
                except Exception as e:
                    raise ShardError(f"sharded: shard {s} (documents {bounds[s]}..{bounds[s + 1] - 1}) failed to "
                                     f"build after {self.params.max_retries} retries: {e}") from None
        else:
            for s, (sh, f) in enumerate(zip(shards, folders)):
                _fit_shard(node, sh, f)
        self._load_shards(folders)
        if self._share_collection() and self._use_ray():
            for sh, f in zip(self.shards_, folders):  # the Ray actors load the shards from these folders
                sh.save(f)

    def _share_collection(self) -> bool:
        """Give BM25 shards the whole corpus's idf and average length (as Elasticsearch's
        ``dfs_query_then_fetch`` does), so that the merged ranking equals one index's.

        Document frequencies are summed per term over the shards' vocabularies (one
        ``np.unique`` over their concatenation); returns False for other retrievers."""
        from ragkit.retrievers.bm25 import BM25

        shards = self.shards_
        if not shards or not all(isinstance(sh, BM25) for sh in shards):
            return False
        terms = [np.array(sh.terms(), dtype=object) for sh in shards]
        dfs = [np.bincount(sh.tf_.indices, minlength=len(t)) for sh, t in zip(shards, terms)]
        lengths = np.concatenate([sh.doc_lengths() for sh in shards])  # corpus order, as one index sums them
        uniq, inv = np.unique(np.concatenate(terms), return_inverse=True)
        df = np.bincount(inv, weights=np.concatenate(dfs), minlength=len(uniq))
        idf = shards[0].idf_of(df, len(lengths))
        avgdl = float(lengths.mean()) if len(lengths) else 1.0
        cuts = np.cumsum([0] + [len(t) for t in terms])
        for sh, a, b in zip(shards, cuts[:-1], cuts[1:]):
            sh.set_collection(idf[inv[a:b]], avgdl)
        return True

    def _load_shards(self, folders: list[str], mmap: bool = False) -> None:
        from ragkit.operator import Operator

        self.shards_ = [Operator.load(f, corpus=self.corpus_.subset(np.arange(a, b)), mmap=mmap)
                        for f, a, b in zip(folders, self.bounds_[:-1], self.bounds_[1:])]
        self.folders_ = folders

    def _call(self, state: State) -> State:
        k = self.k_for(state)
        options = {**state.options, "k": max(k, int(state.options.get("k") or 0))}
        # a rewritten query (a rewriter, PRF's lexical query upstream) is what the shards search
        rewrites = {key: state.values[key] for key in QUERY_REWRITES if state.values.get(key)}
        texts = list(state.queries)
        if self._use_ray():
            ray = ray_init()
            if getattr(self, "_actors", None) is None:
                actor = ray.remote(max_restarts=self.params.max_retries, max_task_retries=self.params.max_retries)(
                    _ShardActor)
                self._actors = [actor.remote(f) for f in self.folders_]
            refs = [a.search.remote(texts, options, rewrites) for a in self._actors]
            results = []
            for s, ref in enumerate(refs):
                try:
                    results.append(ray.get(ref))
                except Exception as e:
                    raise ShardError(f"sharded: shard {s} failed to search: {e}") from None
        else:
            results = []
            for sh in self.shards_:
                sub = sh(State(texts, list(state.query_ids), options=options, vectors=state.vectors,
                               values=dict(rewrites)))
                state.vectors.update(sub.vectors)
                results.append([(r.rows, r.scores) for r in sub.rankings])
        parts = [[Ranking(rows + off, sc) for rows, sc in res] for res, off in zip(results, self.bounds_[:-1])]
        out = state.copy()
        out.rankings = merge_rankings(parts, k)
        return out

    def _save(self, folder: Path) -> None:
        for s, sh in enumerate(self.shards_):
            sh.save(folder / f"shard-{s:03d}")
        write_json(folder / "shards.json", {"bounds": self.bounds_.tolist()})

    def _load(self, folder: Path, mmap: bool = False) -> None:
        self._drop_actors()
        self.bounds_ = np.asarray(read_json(folder / "shards.json")["bounds"], dtype=np.int64)
        self._load_shards([str(folder / f"shard-{s:03d}") for s in range(len(self.bounds_) - 1)], mmap=mmap)


def _search_chunk(pipe_dir: str, ids: list[str], texts: list[str], k: int | None) -> Any:
    from ragkit.pipelines import Pipeline
    from ragkit.types import Queries

    run = Pipeline.load(pipe_dir).search(Queries(ids, texts), k=k)
    return run.query_ids, run.doc_ids, [(r.rows, r.scores) for r in run.rankings or []], run.values


def search_distributed(pipe: Any, queries: Any, *, n_chunks: int = 4, k: int | None = None) -> Any:
    """Search a large query batch split across Ray workers (each loads the saved pipeline).

    Returns the same :class:`~ragkit.run.Run` as ``pipe.search(queries, k=k)``: document ids,
    scores, the row rankings and the per-query values, in query order (no trace).
    """
    from ragkit.options import check_options
    from ragkit.run import Run
    from ragkit.types import Queries

    check_options(pipe, {} if k is None else {"k": k})  # before Ray starts or the pipeline is saved
    ray = ray_init()
    queries = queries if isinstance(queries, Queries) else Queries.from_texts(list(queries))
    with tempfile.TemporaryDirectory(prefix="ragkit-pipe-") as tmp:
        pipe.save(Path(tmp) / "p")
        task = ray.remote(max_retries=3, retry_exceptions=True)(_search_chunk)
        bounds = np.linspace(0, len(queries), n_chunks + 1).astype(int)
        refs = [task.remote(str(Path(tmp) / "p"), queries.ids[a:b], queries.texts[a:b], k)
                for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        chunks = [ray.get(ref) for ref in refs]
    qids = [q for c in chunks for q in c[0]]
    docs = [d for c in chunks for d in c[1]]
    rankings = [Ranking(rows, sc) for c in chunks for rows, sc in c[2]]
    keys = list(dict.fromkeys(key for c in chunks for key in c[3]))
    values = {key: [v for c in chunks for v in c[3].get(key, [None] * len(c[0]))] for key in keys}
    return Run(qids, docs, [r.scores for r in rankings], rankings=rankings, values=values)
