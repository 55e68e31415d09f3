"""Fitting, searching and scoring a pipeline as ``ragkit eval`` does (its held-out report in ``ragkit train``
too): the search settings (:class:`_Scoring`), the one-deeper search of datasets whose queries are documents, and
the fitted run with its metrics (:class:`_Scored`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

from ragkit.cli._console import err_console
from ragkit.cli._data import _Split
from ragkit.cli._pipeline import _rankings_only


@dataclass
class _Scored:
    """A fitted pipeline's run on one split, its :class:`EvalResult`, the fit time in s, the
    number of documents encoded by the fit and of queries encoded by the search (not read from the cache)."""

    run: Any
    result: Any
    t_fit: float
    encoded: int | None  # None when an encoder registered by the user (not counted) took part
    queries_encoded: int | None = None  # (None as encoded)


@dataclass(frozen=True)
class _Scoring:
    """How ``ragkit eval`` searches and scores: ``depth`` (the search's ``k``, deepening every retriever;
    None: the pipeline's own), ``keep_ids`` (documents with their query's id are scored, not dropped as
    BEIR does), ``relevance_level`` (the lowest grade the binary metrics count, trec_eval's ``-l``), the
    ``--run`` file's ``run_tag`` (None: no run file is written; the JSON's settings record it) and the ``metrics``
    asked for (None: nDCG, recall, MAP, MRR and P at each cut-off)."""

    depth: Optional[int] = None
    keep_ids: bool = False
    relevance_level: int = 1
    run_tag: Optional[str] = "ragkit"
    metrics: Optional[tuple[str, ...]] = None

    def metric_names(self, ks: list[int]) -> list[str]:
        """The metrics to report: those asked for, else nDCG, recall, MAP, MRR and P at each of ``ks``."""
        if self.metrics is not None:
            return list(self.metrics)
        return [f"{m}@{c}" for m in ("ndcg", "recall", "map", "mrr", "p") for c in ks]


def _fit_and_score(pipe: Any, loaded: bool, sp: _Split, ks: list[int], trace: bool, backend: str,
                   scoring: _Scoring = _Scoring()) -> _Scored:
    """Fit ``pipe`` on the split's corpus (unless ``loaded``: saved fitted), search its queries and
    evaluate nDCG, recall, MAP, MRR and precision at each cut-off of ``ks`` (or ``scoring.metrics``), as
    ``scoring`` says; the documents the fit encoded and the queries the search encoded are counted alike (the
    encoders' counts before and after)."""
    from ragkit.encoders.sentence import _ENCODERS, caching_queries
    from ragkit.encoders.tokens import _TOKEN_ENCODERS
    from ragkit.eval.metrics import _evaluate

    def n_encoded(what: str = "n_encoded") -> int:  # documents (or queries: n_queries_encoded) encoded so far:
        # sentence vectors and token vectors (MUVERA)
        return (sum(getattr(e, what) for e in _ENCODERS.values())
                + sum(getattr(e, what) for e in _TOKEN_ENCODERS.values()))

    uncounted = _registered_models(pipe)  # a user's encoder keeps no count: the fit's total would leave it out
    before = n_encoded()
    t0 = time.perf_counter()
    if not loaded:
        with err_console.status("fitting (encoding and indexing)..."), caching_queries():
            corpus = sp.dataset().corpus
            pipe.fit(corpus, sp.train, backend=backend) if backend != "local" else pipe.fit(corpus, sp.train)
    t_fit = time.perf_counter() - t0
    encoded = None if uncounted else n_encoded() - before
    before = n_encoded("n_queries_encoded")
    run = _search_scored(pipe, sp.queries, sp.qrels, sp.dataset().corpus, scoring, trace)
    queries_encoded = None if uncounted else n_encoded("n_queries_encoded") - before
    result = _evaluate(run, sp.qrels, scoring.metric_names(ks), ignore_identical_ids=not scoring.keep_ids,
                       relevance_level=scoring.relevance_level, annotated=sp.annotated)[0]  # (notes: _note_scored's)
    return _Scored(run, result, t_fit, encoded, queries_encoded)


def _search_scored(pipe: Any, queries: Any, qrels: dict[str, dict[str, int]], corpus: Any, scoring: _Scoring,
                   trace: bool) -> Any:
    """The run ``ragkit eval`` scores and writes: ``pipe``'s search of ``queries`` at ``scoring.depth`` (None:
    the pipeline's own), without the documents that have their query's id unless ``scoring.keep_ids``
    (so the ``--run`` file is what trec_eval scores as the table does).  When some query id is a document
    id (ArguAna, Quora), the search goes one deeper than asked and each query is cut back after the drop,
    as BEIR's searches fetch top_k + 1 and skip the query's own: the deepest cut-off holds its full k,
    not k - 1.  Without ``--depth`` the pipeline's own depth is that of a first search, and the second
    search runs only when some query found itself, each retriever at its own k + 1 (:func:`_one_deeper`).
    The run's time is both searches'.  ``trace``: with ``qrels``, scored as the table is
    (``relevance_level``, ``keep_ids``)."""
    from ragkit.encoders.sentence import caching_queries
    from ragkit.eval.metrics import drop_identical_ids

    def search(k: Optional[int], deeper: Optional[dict[str, Any]] = None) -> Any:
        with caching_queries():  # an evaluation's queries come back run after run: their vectors are cached
            return pipe.search(queries, k=k, trace=trace, qrels=qrels if trace else None,
                               relevance_level=scoring.relevance_level, ignore_identical_ids=not scoring.keep_ids,
                               **_rankings_only(pipe), **(deeper or {}))

    lookup = corpus._lookup()
    if scoring.keep_ids or not any(q in lookup for q in queries.ids):  # (SciFact, most of BEIR: as it was)
        return search(scoring.depth)
    depth, seconds, deeper = scoring.depth, 0.0, None
    if depth is None:  # the pipeline's own depth: that of its search as it is
        run = search(None)
        dropped = drop_identical_ids(run)
        if dropped is run:  # no query found itself: nothing to make up for
            return run
        depth, seconds = max((len(d) for d in run.doc_ids), default=0), run.seconds or 0.0
        deeper = _one_deeper(pipe)
    run = drop_identical_ids(search(depth + 1, deeper), depth)
    run.seconds = (run.seconds or 0.0) + seconds
    return run


def _one_deeper(pipe: Any) -> dict[str, Any]:
    """Search options giving each retriever of ``pipe`` its own ``k`` plus one (BEIR's top_k + 1), as
    ``{name: {"k": k + 1}}`` (retrievers of one name that differ in k: the largest plus one).  The call's
    ``k`` alone would raise every retriever to the pipeline's depth + 1: two fused ``bm25 k: 10``
    branches (a depth of up to 20) were searched 17 deep and ranked other documents."""
    from ragkit.pipelines._compose import iter_leaves

    ks: dict[str, int] = {}
    for leaf in iter_leaves(pipe):
        k = getattr(leaf.params, "k", None) if leaf.kind == "retriever" else None
        if isinstance(k, int) and "k" in leaf.declared_options():
            ks[leaf.name] = max(ks.get(leaf.name, 0), k)
    return {name: {"k": k + 1} for name, k in ks.items()}


def _registered_models(pipe: Any) -> list[str]:
    """The ``model`` names of ``pipe``'s operators that name an encoder registered with
    :func:`~ragkit.encoders.register_encoder` (whose encodings ragkit does not count)."""
    from ragkit.encoders.custom import registered_encoders
    from ragkit.pipelines._compose import iter_leaves

    names = registered_encoders()
    return [m for leaf in iter_leaves(pipe) if isinstance(m := getattr(leaf.params, "model", None), str) and m in names]
