"""Searching a large query batch split across Ray workers (:func:`search_distributed`), each loading
the saved pipeline once.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, NoReturn, Sequence

import numpy as np

from ragkit._files import user_path
from ragkit._merge import _flatten, _split
from ragkit._plugins import _plugin_modules
from ragkit._ray import (
    _RETRIED_FINAL,
    _TRANSIENT,
    ShardError,
    _check_cpus,
    _deterministic_errors_final,
    _drain,
    _reason,
    _registered,
    _retried,
    _with_plugins,
    check_workdir,
    classify,
    gather,
    ray_init,
)
from ragkit._sharded import Sharded, _in_chunk
from ragkit.errors import ParamError
from ragkit.operator import Operator, checksums_verified
from ragkit.types import Corpus, State

if TYPE_CHECKING:
    import pandas as pd

    from ragkit.pipelines import Pipeline
    from ragkit.run import Run
    from ragkit.types import Queries


_SEARCH_RETRIES = 3


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


def _manifest_digest(pipe_dir: str | os.PathLike[str]) -> str:
    """The SHA-256 of a saved pipeline's ``manifest.json`` (which lists the SHA-256 of every file of the save): what
    identifies the folder :func:`search_distributed` wrote, read by each chunk instead of every file's sums."""
    import hashlib

    return hashlib.sha256((Path(pipe_dir) / "manifest.json").read_bytes()).hexdigest()


@contextlib.contextmanager
def _saved_for_workers(pipe: Pipeline, saved: tuple[Path, str | None] | None,
                       workdir: str | os.PathLike[str] | None) -> Iterator[tuple[Path, str | None]]:
    """The folder the workers of :func:`search_distributed` load ``pipe`` from, and its :func:`_manifest_digest`:
    ``saved`` as given (a saved pipeline's folder, loaded and checked by the caller; no digest when it has no
    manifest, so the workers check it in full), else ``pipe`` saved to a
    temporary folder inside ``workdir``, removed on exit."""
    if saved is not None:
        yield saved
        return
    with tempfile.TemporaryDirectory(prefix="ragkit-pipe-", dir=workdir) as name:
        folder = Path(os.path.abspath(name)) / "p"
        pipe.save(folder)
        yield folder, _manifest_digest(folder)  # (the chunks load it unchecked once its manifest is this one)


def _search_chunk(pipe_dir: str, ids: list[str], texts: list[str], k: int | None,
                  options: dict[str, Any] | None = None, written: str | None = None,
                  corpus: Corpus | None = None) -> Any:
    """One chunk's search of the pipeline saved in ``pipe_dir``: its rankings flat, ``(rows, scores, lengths)``
    (:func:`~ragkit._merge._flatten`), and the per-query values.  ``written``: the :func:`_manifest_digest` of the
    folder as :func:`search_distributed` wrote it just before: the pipeline is then loaded memory-mapped and without
    checking every file's SHA-256 again (once the manifest's own digest is ``written``: else an
    :class:`~ragkit.errors.ArtifactError`); without it, loaded and checked as any saved pipeline.  ``corpus``: the
    documents the pipeline was fitted on (from Ray's object store), given to the load instead of parsing its
    ``corpus.jsonl`` again (each step checks it is the corpus it was fitted on, as ``Pipeline.load`` does)."""
    from ragkit.pipelines import Pipeline
    from ragkit.types import Queries

    if written is not None:
        got = _manifest_digest(pipe_dir)
        if got != written:
            from ragkit.errors import ArtifactError

            raise ArtifactError(f"search_distributed: {Path(pipe_dir) / 'manifest.json'} has SHA-256 {got[:16]}..., "
                                f"expected {written[:16]}... (the pipeline this search started with): the folder was "
                                f"changed while the search ran; search again")
    with _in_chunk():  # a ray-backed sharded retriever loads and searches its shards here: no shard actors per chunk
        if written is None:
            pipe = Pipeline.load(pipe_dir, corpus)
        else:
            # (the folder this search saved or checked, its manifest unchanged: its files' sums are not
            # read again, and its steps count as verified (no CRC32 of a dense index, no scan of mapped BM25
            # weights); memory-mapped: the chunks on one machine share the pages of its indexes)
            with checksums_verified(True):
                pipe = Pipeline.load(pipe_dir, corpus, mmap=True, verify=False)
        run = pipe.search(Queries(ids, texts), k=k, **(options or {}))
    # flat arrays, not a list per query (nor the document ids: the driver maps the rows to them through the corpus
    # it holds): three arrays to send back, whatever the number of queries
    rows, scores, lens = _flatten(run.rankings or [])
    return rows, scores, lens, run.values


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


def search_distributed(pipe: Pipeline | Operator | str | os.PathLike[str],
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
    pipe : Pipeline, Operator, or the folder of a saved pipeline
        A fitted pipeline (or one fitted operator); it is saved to a temporary folder that
        every worker loads (inside ``workdir``), removed when the search ends.  The folder of a
        pipeline saved before (``Pipeline.save``, ``ragkit train -o``) is not saved again: it is
        loaded and checked here once, and the workers load it where it is (memory-mapped, without
        reading every file's SHA-256 again, as long as its ``manifest.json`` is unchanged), so a
        folder on storage every worker reads serves call after call with no copy.
    queries : Queries, list of str, str, or {query_id: text}
        Any form ``search`` takes (a pandas Series indexed by query ids too), with the same ids.
    n_chunks : int
        Number of query chunks, one Ray task each (at most one per query).
    k : int, optional
        Final number of results per query, as for ``search``.
    workdir : str or os.PathLike, optional
        Where the pipeline is saved for the workers (a fresh ``ragkit-pipe-*`` folder inside it,
        made when missing); must be storage every worker reads on a multi-node cluster
        (default: a local temporary folder, which only workers on this machine read).  Not
        with a saved pipeline's folder as ``pipe``, which is read where it is.
    **options
        Run-time options as for ``search`` (``filter=...``, ``bm25={"k": 3}``...), checked
        against ``pipe`` before Ray starts.  ``trace`` and ``qrels`` are not supported.

    Raises
    ------
    ParamError
        Before Ray starts: a bad ``n_chunks``, ``k`` or option, a ``workdir`` that is (or lies
        below) a file, ``workdir`` with a saved pipeline's folder, or an operator whose ``model``
        is an encoder registered with ``register_encoder`` (Ray workers lack it).
    NotFittedError
        Before Ray starts, when ``pipe`` is not fitted.
    ShardError
        When a chunk fails on the workers after Ray's retries (a worker crashed, an OS or memory error, an
        :class:`~ragkit.errors.ArtifactError` or a missing path), naming the chunk; before any chunk is submitted
        when the Ray cluster has no CPU to run one (``ray.init(num_cpus=0)``).  What a chunk's search raises
        otherwise (a ``DataError``, a ``ParamError``, a retriever's ``ValueError``) is raised as it is.
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
    saved: tuple[Path, str | None] | None = None  # (a saved pipeline's folder given as pipe, its manifest's digest)
    if isinstance(pipe, (str, os.PathLike)):
        if workdir is not None:
            raise ParamError(f"search_distributed: workdir={str(workdir)!r} is where a pipeline given as an object "
                             f"is saved for the workers; the saved pipeline {os.fspath(pipe)!r} is read where it "
                             f"is: leave workdir out")
        folder = Path(os.path.abspath(user_path(pipe, "search_distributed: pipe")))  # (workers run elsewhere)
        # the digest first: a save replacing the folder after it is refused by every chunk, not half-read
        written = _manifest_digest(folder) if (folder / "manifest.json").is_file() else None
        pipe = Pipeline.load(folder, mmap=True)  # checked in full once, here (a folder without a save: its error)
        saved = (folder, written)
    if not isinstance(pipe, Pipeline):
        if not isinstance(pipe, Operator):
            raise ParamError(f"search_distributed: expected a fitted ragkit Pipeline or Operator, or the folder of "
                             f"a saved pipeline, got {type(pipe).__name__}")
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
    with _saved_for_workers(pipe, saved, workdir) as (folder, written):
        # the documents go to the object store once: each chunk's load is given them, not corpus.jsonl to parse
        # (100,000 documents: 0.09 s, not 0.65 s of CPU per chunk)
        fitted_on = shared_corpus(pipe)  # (what the save wrote to corpus.jsonl)
        docs = ray.put(fitted_on) if isinstance(fitted_on, Corpus) else None
        task = ray.remote(max_retries=_SEARCH_RETRIES, retry_exceptions=list(_TRANSIENT))(
            _deterministic_errors_final(_with_plugins(modules, _search_chunk), _RETRIED_FINAL))
        refs = [task.remote(str(folder), queries.ids[a:b], queries.texts[a:b], k, options, written, docs)
                for a, b in spans]

        def fail(c: int, e: Exception) -> NoReturn:
            """A chunk's failure (the first to end): its own error as it is, else a ShardError naming it."""
            kind, cause = classify(e)
            if kind == "raised" and not isinstance(cause, _TRANSIENT):
                # what the chunk's search itself raised (a retriever's ValueError, a DataError, a
                # ParamError): raised as pipe.search raises it, the remote traceback chained (only the
                # errors Ray would retry, an ArtifactError or a path's, are _Permanent: a ShardError)
                raise cause from e
            a, b = spans[c]
            raise ShardError(f"search_distributed: chunk {c} (queries {a}..{b - 1}) "
                             f"failed{_retried(_SEARCH_RETRIES, e)}: {_reason(e)}") from None

        try:  # in the order they end: a chunk that fails at once is raised without waiting for earlier ones
            chunks = gather(ray, refs, fail)
        except BaseException:
            _drain(ray, refs)  # no chunk (or retry) may still read the folder deleted next
            raise
    rankings = _split(*(np.concatenate([c[i] for c in chunks]) for i in range(3))) if chunks else []
    keys = list(dict.fromkeys(key for c in chunks for key in c[3]))
    values = {key: [v for c in chunks for v in c[3].get(key, [None] * len(c[2]))] for key in keys}
    from ragkit.run import learned_query_ids

    assert isinstance(fitted_on, Corpus)  # (check_options refused a pipeline without one: it cannot search)
    return Run.from_rankings(list(queries.ids), rankings, fitted_on.ids, values=values,
                             learned_from=learned_query_ids(pipe, queries.ids, queries.texts),
                             _nan_checked=True, _ids_checked=True)  # (as search's: checked by the workers' steps)
