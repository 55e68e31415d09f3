"""What ``ragkit eval``'s JSON records beside the metrics: its settings, the pipeline's provenance, the
machine, the data's and judgements' fingerprints and the trace rows."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any, Optional

from ragkit.cli._data import _Split
from ragkit.cli._scoring import _Scoring


def _machine() -> dict[str, Any]:
    """The machine ``ragkit eval`` ran on, for its JSON: ``platform``, ``python`` (its version) and ``cpus``."""
    return {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count()}


def _provenance(pipe: Any) -> dict[str, Any]:
    """What ``ragkit eval``'s JSON records to reproduce the pipeline (:mod:`ragkit.eval.provenance`):
    ``pipeline_resolved``, the pipeline's tree with every parameter of every step, defaults included
    (:func:`~ragkit.eval.provenance.resolved_pipeline`; ``pipeline``, its ``to_yaml()``, holds only those that differ
    from their defaults, so a ``k: 100`` given where 100 is the default is not in it);
    ``models``, each encoder model a step uses with its fingerprint (:func:`~ragkit.eval.provenance.models`);
    ``versions``: ragkit's version and, run from a git checkout, its commit (``ragkit_commit``), Python's and the
    installed libraries' (:func:`~ragkit.eval.provenance.versions`)."""
    from ragkit.eval import provenance

    return {"pipeline_resolved": provenance.resolved_pipeline(pipe), "models": provenance.models(pipe),
            "versions": provenance.versions()}


def _trace_rows(events: Any) -> list[dict[str, Any]]:
    """``--trace``'s table for the JSON: one dict per operator path (:class:`~ragkit.pipelines.trace.TraceRow`)."""
    from dataclasses import asdict

    from ragkit.pipelines.trace import aggregate_trace

    return [asdict(r) for r in aggregate_trace(events)]


def _settings(data: str, pipeline: str, train_split: Optional[str], limit: Optional[int],
              scoring: _Scoring, backend: str, fingerprint: Optional[str] = None,
              data_prints: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """What ``ragkit eval`` was asked, for its JSON (runs of one pipeline YAML with and without
    ``--train-split`` or ``--limit`` otherwise differ only in their numbers), and ``qrels_fingerprint``: the
    judgements it scored against (:func:`~ragkit.eval.metrics.qrels_fingerprint`; ``ragkit compare`` refuses
    results of other judgements), then ``data_prints`` (:func:`_data_prints`: ``corpus_fingerprint``,
    ``n_documents``, ``queries_fingerprint``; ``ragkit compare`` warns of results of other corpora)."""
    from ragkit import __version__

    return {"data": data, "pipeline_source": pipeline, "train_split": train_split, "limit": limit, "backend": backend,
            "depth": scoring.depth, "ignore_identical_ids": not scoring.keep_ids,
            "relevance_level": scoring.relevance_level, "run_tag": scoring.run_tag,
            "metrics": list(scoring.metrics) if scoring.metrics is not None else None,
            "qrels_fingerprint": fingerprint, **(data_prints or {}), "ragkit_version": __version__}


def _data_prints(corpus: Any, queries: Any) -> dict[str, Any]:
    """``corpus_fingerprint`` (:func:`~ragkit.eval.provenance.corpus_digest_text`: its ids, titles and texts),
    ``n_documents`` and ``queries_fingerprint`` (the evaluated queries' ids and texts:
    :func:`~ragkit.eval.provenance.queries_fingerprint`) of one dataset, for ``ragkit eval``'s JSON."""
    from ragkit.eval.provenance import corpus_digest_text, queries_fingerprint

    return {"corpus_fingerprint": corpus_digest_text(corpus), "n_documents": len(corpus),
            "queries_fingerprint": queries_fingerprint(queries)}


def _subsets_prints(prints: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """:func:`_data_prints` of several datasets (``{dataset: its prints}``) as one: each fingerprint combined
    over them (:func:`~ragkit.eval.provenance.combined_fingerprint`) and the documents summed."""
    from ragkit.eval.provenance import combined_fingerprint

    return {"corpus_fingerprint": combined_fingerprint({s: p["corpus_fingerprint"] for s, p in prints.items()}),
            "n_documents": sum(p["n_documents"] for p in prints.values()),
            "queries_fingerprint": combined_fingerprint({s: p["queries_fingerprint"] for s, p in prints.items()})}


def _max_ranked(run: Any) -> int:
    """The most documents the run ranks for one query (as scored): ``ragkit compare`` marks a metric cut deeper."""
    return max((len(d) for d in run.doc_ids), default=0)


def _subsets_fingerprint(splits: dict[str, "_Split"]) -> Optional[str]:
    """One fingerprint of the judgements of several datasets: the SHA-256 of each dataset's name and its
    fingerprint, one line each, sorted (``None`` when one is unknown), of the kind of those (``sha256-scored:``:
    an older ragkit eval's ``sha256:`` was of whole splits, which compare does not check against it)."""
    import hashlib

    from ragkit.eval.compare import SCORED_FINGERPRINT_KIND

    if any(sp.fingerprint is None for sp in splits.values()):
        return None
    lines = sorted(f"{s}\t{sp.fingerprint}\n" for s, sp in splits.items())
    return f"{SCORED_FINGERPRINT_KIND}:" + hashlib.sha256("".join(lines).encode("utf-8", "surrogatepass")).hexdigest()
