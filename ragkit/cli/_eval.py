"""``ragkit eval``: fit a pipeline on a BEIR corpus and evaluate it on one split (or on several datasets and
their mean), with its notes and timings."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from ragkit.cli._app import _examples, _fail, app
from ragkit.cli._console import _note, _print_uncut, console
from ragkit.cli._data import (
    _check_data_folder,
    _check_listed,
    _check_split,
    _dataset_list,
    _read_split,
    _refuse_test_split,
    _Split,
)
from ragkit.cli._options import _expands_paths, _given, _parse_ks, _parse_metric_names, _path_option, _ranged_option
from ragkit.cli._outputs import _check_not_an_input, _prepare_outputs, _write_outputs
from ragkit.cli._pipeline import (
    _check_retrieves,
    _fewer_found,
    _in_file,
    _note_nothing_learns,
    _note_unlearned,
    _short_ks,
    _uses_training,
    _without_generation,
    resolve_pipeline,
)
from ragkit.cli._records import (
    _data_prints,
    _machine,
    _max_ranked,
    _provenance,
    _settings,
    _subsets_fingerprint,
    _subsets_prints,
    _trace_rows,
)
from ragkit.cli._scoring import _fit_and_score, _Scored, _Scoring
from ragkit.errors import RagkitError, some_ids
from ragkit.eval.compare import _n_queries
from ragkit.eval.provenance import timestamp
from ragkit.params import MAX_INT


def _note_depth(run: Any, ks: list[int], corpus: Any, pipe: Any, prefix: str = "", flag: Optional[int] = None) -> None:
    """Say when the pipeline returned fewer documents than a cut-off of ``ks``, and what limits it: ``--depth``
    when it was given (``flag``) and reached, else the corpus's size, a step's k or a step that returns fewer."""
    depth = max((len(d) for d in run.doc_ids), default=0)
    deeper = [c for c in ks if c > depth]
    if deeper:
        short, fewer = _short_ks(pipe, max(deeper), flag), _fewer_found(pipe)
        causes = ([f"a step's k ({', '.join(short)}: give {'them' if len(short) > 1 else 'it'} a larger one to measure "
                   "that depth)"] if short else []) \
            + ([f"a step that returns fewer: {'; '.join(fewer)}"] if fewer else [])
        why = (f"the corpus holds {len(corpus)}" if depth >= len(corpus) else
               f"--depth {flag} limits it (give --depth {max(deeper)} or more to measure that depth)"
               if flag is not None and depth >= flag else
               f"what limits it: {', or '.join(causes)}" if causes else
               "what limits it: a step's k (give the last steps a larger one to measure that depth)")
        _note(f"note: {prefix}the pipeline returned at most {depth} documents per query, so the "
              f"@{', @'.join(map(str, deeper))} metrics count only those; {why}")


def _empty_queries(run: Any) -> list[str]:
    """The ids of the queries whose ranking in ``run`` is empty (the pipeline returned no document: BM25 on a
    query of stopwords only), in the run's order: the JSON's ``empty_queries``."""
    return [q for q, d in zip(run.query_ids, run.doc_ids) if not len(d)]


def _note_empty(empty: list[str], n: int, prefix: str = "") -> None:
    """Say that the ``empty`` of the ``n`` judged queries returned no document: they score 0 here (as
    ``trec_eval -c`` scores a query its run lacks), but a TREC run file cannot hold an empty ranking, so a
    tool that scores the ``--run`` file over the run's own queries averages over fewer."""
    if not empty:
        return
    k = len(empty)
    _note(f"note: {prefix}{k} of the {n} judged queries returned no document (e.g. {some_ids(empty, 2)}); "
          f"{'they score' if k > 1 else 'it scores'} 0 on every metric here (as trec_eval -c scores a query its run "
          f"lacks), but a TREC run file cannot hold an empty ranking (a --run file has no line for "
          f"{'them' if k > 1 else 'it'}), so a tool that averages over the run file's own queries (BEIR's "
          f"pytrec_eval, trec_eval without -c) averages over {k} fewer; the JSON lists them (empty_queries)")


def _note_identical(ignored_judged: int, prefix: str = "") -> None:
    """The note (stderr) of ``ignored_judged`` judged-relevant documents dropped from a run for having their
    query's id, after ``prefix`` (``"scifact: "``, ``"a.trec: "``): ``ragkit eval``'s, and ``ragkit compare``'s
    for each TREC run file it scores.  Nothing for 0."""
    if ignored_judged:
        _note(f"note: {prefix}{ignored_judged} judged-relevant document(s) have their query's id and are never "
              "scored as retrieved (a document with its query's id is dropped from the run, as BEIR does for datasets "
              "whose queries are documents too: ArguAna, Quora), so they count as not found; --keep-identical-ids "
              "scores them")


def _note_scored(run: Any, ks: list[int], corpus: Any, pipe: Any, qrels: Any, scoring: _Scoring,
                 prefix: str = "", ignored_judged: int = 0) -> list[str]:
    """``ragkit eval``'s notes under its table, on stderr (as its other notes; stdout keeps the table), each
    after ``prefix`` (``"scifact: "`` for one of several datasets): the ``ignored_judged`` judged documents
    dropped for having their query's id, the depth the pipeline reached (:func:`_note_depth`), the judged
    queries that returned no document (:func:`_note_empty`), and the judged queries that no document can make
    relevant at ``--relevance-level`` (:func:`~ragkit.eval.metrics.level_note`), and, as Python's
    :func:`~ragkit.eval.metrics.evaluate` warns, a run none of whose documents is judged at all, with the hint of
    ids written otherwise (``'031715818'`` judged, ``'31715818'`` ranked:
    :func:`~ragkit.eval.metrics.unjudged_docs_note`).  Returns the ids of the queries that returned no document
    (:func:`_empty_queries`: the JSON's ``empty_queries``)."""
    from ragkit.eval.metrics import level_note, unjudged_docs_note

    unjudged = unjudged_docs_note(run, qrels)  # ("" unless every metric but hole@k is 0)
    if unjudged:
        _note(f"warning: {prefix}{unjudged}")

    _note_identical(ignored_judged, prefix)
    _note_depth(run, ks, corpus, pipe, prefix, scoring.depth)
    empty = _empty_queries(run)
    _note_empty(empty, len(run.query_ids), prefix)
    said = level_note(qrels, scoring.relevance_level, "--relevance-level")
    if said:
        _note(f"note: {prefix}{said}")
    return empty


def _timings_line(t_load: float, t_fit: float, encoded: int | None, search_s: float, n_queries: int,
                  total: float, queries_encoded: int | None = None) -> str:
    """``load 0.12 s · fit ... · search ... (q/s) · total ...``: what ``ragkit eval`` prints last (the documents
    encoded by the fit, and the queries by the search, only when ``encoded`` / ``queries_encoded`` is known:
    not with an encoder the user registered)."""
    qps = n_queries / max(search_s or 1e-9, 1e-9)
    rate = f"{qps:,.0f}" if qps >= 10 else f"{qps:.2g}"  # a few slow queries: not "0 q/s"
    count = "" if not encoded else f" ({encoded:,} documents encoded)"  # (none: bm25's, a saved folder's)
    queries = "" if not queries_encoded else f" ({queries_encoded:,} queries encoded)"  # (none: cached, bm25's)
    return (f"load {t_load:.2f} s · fit {t_fit:.2f} s{count} · search {search_s:.2f} s{queries} "
            f"({rate} q/s) · total {total:.2f} s")


@app.command("eval", epilog=_examples(
    "ragkit eval --data scifact --pipeline bm25 -o bm25.json",
    "ragkit eval --data scifact --pipeline examples/hybrid.yaml -m ndcg@10,recall@100 -o hybrid.json",
    "ragkit eval --data scifact,nfcorpus --pipeline bm25 --run bm25.trec"))
@_expands_paths
def eval_cmd(
    ctx: typer.Context,
    data: str = typer.Option(..., "--data", help="BEIR dataset name or folder; for an archive of several datasets "
                                                 "(cqadupstack) each is evaluated and the mean reported, or one "
                                                 "is named: cqadupstack/android; a comma-separated list "
                                                 "(scifact,nfcorpus) is evaluated alike, dataset by dataset."),
    pipeline: str = typer.Option(..., "--pipeline", "-p",
                                 help="Pipeline YAML file, saved pipeline or operator folder, or operator name."),
    split: str = typer.Option("test", help="Qrels split to evaluate."),
    k: str = typer.Option("10,100", "--k", help="Cut-offs, comma-separated."),
    metrics: Optional[str] = typer.Option(None, "--metrics", "-m",
                                          help="Metrics, comma-separated (ndcg, recall, map, mrr, p, r_cap, hole, acc "
                                               "@ a cut-off: ndcg@10,hole@10,r_cap@100), instead of nDCG, recall, "
                                               "MAP, MRR and P at each --k."),
    output: Optional[Path] = _path_option(None, "--output", "-o",
                                          help="Write metrics, per-query values, timings as JSON "
                                               "(missing folders are created; '-': standard output)."),
    run_file: Optional[Path] = _path_option(None, "--run", help="Also write a TREC run file "
                                                                "(missing folders are created; '-': standard "
                                                                "output)."),
    trace: bool = typer.Option(False, "--trace", help="Print per-operator time, candidates and recall."),
    train_split: Optional[str] = typer.Option(None, "--train-split",
                                              help="Fit learning operators on this split (never the test split)."),
    limit: Optional[int] = _ranged_option(None, "--limit", lo=1,
                                          help="Evaluate only the first N queries (smoke runs; N >= 1)."),
    backend: str = typer.Option("local", "--backend", help="local or ray."),
    depth: Optional[int] = _ranged_option(None, "--depth", lo=1, hi=MAX_INT - 1,  # (searched depth + 1: see below)
                                          help="Documents retrieved per query (the search's k, deepening every "
                                               "retriever: 1000 for recall@1000); default: the pipeline's own."),
    keep_identical_ids: bool = typer.Option(False, "--keep-identical-ids",
                                            help="Score documents whose id is the query's id. By default they "
                                                 "are dropped from the run, as BEIR does for ArguAna and Quora: "
                                                 "ragkit then searches one deeper (each retriever its k + 1, "
                                                 "or --depth + 1) and cuts each query back to the depth after "
                                                 "the drop (as BEIR's top_k + 1), so the "
                                                 "deepest cut-off holds its full k, and the --run file holds the "
                                                 "run as scored."),
    relevance_level: int = _ranged_option(1, "--relevance-level", lo=1,
                                          help="Lowest grade the binary metrics (recall, MAP, MRR, P, r_cap, acc) "
                                               "count as relevant, as trec_eval's -l."),
    run_tag: str = typer.Option("ragkit", "--run-tag", help="The tag column of the --run file."),
) -> None:
    """Fit a pipeline on a BEIR corpus and evaluate it on one split.

    On an archive of several datasets (cqadupstack), or a comma-separated list of datasets, the
    pipeline is fitted on each dataset's corpus in turn; each is reported, and the mean of each
    metric over them (BEIR's convention).
    """
    from ragkit.eval.beir import beir_subsets

    ks = _parse_ks(k, refuse_repeats=True)
    t_all = time.perf_counter()
    try:
        names = None
        if metrics is not None:
            if _given(ctx, "k"):
                raise RagkitError(f"--k {k} and --metrics {metrics}: --metrics names each metric with its cut-off "
                                  "(ndcg@10,recall@100), --k gives the cut-offs of the default metrics; pass one")
            names = _parse_metric_names(metrics)
            ks = sorted({int(m.rsplit("@", 1)[1]) for m in names})
        scoring = _Scoring(depth, keep_identical_ids, relevance_level, run_tag if run_file is not None else None,
                           tuple(names) if names else None)
        if backend not in ("local", "ray"):
            raise RagkitError(f"--backend: expected 'local' or 'ray', got {backend!r}")
        _check_split("--split", split, data)
        if train_split is not None:
            _check_split("--train-split", train_split, data)
        if train_split is not None and train_split == split:
            raise RagkitError(f"--train-split {train_split!r} equals the evaluated split; "
                              "training on the evaluated queries is refused")
        if train_split is not None:  # (the name now; a link to qrels/test.tsv once the dataset is read)
            _refuse_test_split(None, train_split, "--train-split")
        _check_not_an_input(output, "--output", pipeline, data)
        _check_not_an_input(run_file, "--run", pipeline, data)
        _prepare_outputs(ctx, output, run_file, run_tag)
        pipe, loaded = resolve_pipeline(pipeline)
        _check_retrieves(pipe, f"--pipeline {pipeline}")
        pipe = _without_generation(pipe, f"--pipeline {pipeline}")  # an LLM answer per query would be thrown away
        if loaded and (train_split is not None or backend != "local"):
            given = " and ".join(f"{o} {v!r}" for o, v in (("--train-split", train_split), ("--backend", backend))
                                 if v is not None and (o != "--backend" or v != "local"))
            raise RagkitError(f"--pipeline {pipeline}: a saved, fitted pipeline is evaluated as it is, so {given} "
                              "would be ignored; pass a pipeline YAML file to fit (and learn) here")
        t0 = time.perf_counter()
        listed = _dataset_list(data)
        if listed is None:
            _check_data_folder(data)
        subs = beir_subsets(data) if listed is None else listed
        t_find = time.perf_counter() - t0  # a download of the dataset, when it is not found locally
        if subs:
            _eval_subsets(data, list(subs), pipeline, loaded, split=split, train_split=train_split, ks=ks,
                          limit=limit, trace=trace, backend=backend, output=output, run_file=run_file, t_all=t_all,
                          t_find=t_find, sources=listed, scoring=scoring)
            return
        sp = _read_split(data, split, train_split, limit, run_file, pipe if loaded else None, pipeline,
                         scoring.relevance_level)
        if not loaded and sp.train is None:
            _note_unlearned(pipe)
        elif not loaded and not _uses_training(pipe):
            _note_nothing_learns(f"--pipeline {pipeline}", f"--train-split {train_split} changes nothing")
        scored = _fit_and_score(pipe, loaded, sp, ks, trace, backend, scoring)
    except RagkitError as e:
        _fail(_in_file(e, pipeline))
        return
    ds, queries, run, result = sp.ds, sp.queries, scored.run, scored.result
    total = time.perf_counter() - t_all
    console.print(Text(f"{ds.name} / {split} ({_n_queries(len(queries))})  pipeline: {pipeline}"),  # not a table title:
                  soft_wrap=True)
    table = Table()  # a title wraps to the table's narrow width
    table.add_column("metric")
    table.add_column("value", justify="right")
    for m, v in result.scores.items():
        table.add_row(m, f"{v:.4f}")
    console.print(table)
    empty = _note_scored(run, ks, ds.corpus, pipe, sp.qrels, scoring, ignored_judged=result.ignored_judged)
    console.print(_timings_line(t_find + sp.t_load, scored.t_fit, scored.encoded, run.seconds, len(queries), total,
                                scored.queries_encoded), soft_wrap=True)
    if trace and run.trace:
        from ragkit.pipelines.trace import print_trace

        print_trace(console, run.trace)
    try:
        # the JSON's alone: its provenance runs git and hashes the corpus, so it is built only when -o writes it
        def payload() -> dict[str, Any]:  # (built only when -o writes it)
            return {
                "dataset": ds.name, "split": split, "pipeline": pipe.to_yaml(), **_provenance(pipe),
                "n_queries": len(queries), "metrics": result.scores, "per_query": result.per_query,
                "max_ranked": _max_ranked(run), "empty_queries": empty,
                "timings": {"load_s": t_find + sp.t_load, "fit_s": scored.t_fit, "search_s": run.seconds,
                            "total_s": total, "documents_encoded": scored.encoded,
                            "queries_encoded": scored.queries_encoded},
                "settings": _settings(data, pipeline, train_split, limit, scoring, backend, sp.fingerprint,
                                      _data_prints(ds.corpus, queries)),
                **({"trace": _trace_rows(run.trace)} if trace and run.trace else {}),
                "machine": _machine(),
                "date": timestamp(),
            }
        _write_outputs(output, run_file, run, payload, tag=run_tag)
    except RagkitError as e:
        _fail(e)


def _eval_subsets(data: str, subs: list[str], pipeline: str, loaded: bool, *, split: str, train_split: Optional[str],
                  ks: list[int], limit: Optional[int], trace: bool, backend: str, output: Optional[Path],
                  run_file: Optional[Path], t_all: float, t_find: float,
                  sources: Optional[dict[str, str]] = None, scoring: _Scoring = _Scoring()) -> None:
    """``ragkit eval`` on several datasets (``subs``): the datasets of an archive, or with ``sources``
    (label -> ``--data`` item) those of a comma-separated list.  Every split is read and checked
    first, then the pipeline is fitted and evaluated on each in turn; prints each and the mean of
    each metric over them, and writes both to ``output``.  ``t_find``: seconds spent finding (or
    downloading) the data."""
    base = data.rstrip("/") or data
    holds = "names" if sources else "holds"
    first = sources[subs[0]] if sources else f"{base}/{subs[0]}"  # the --data of one of them
    if loaded:
        raise RagkitError(f"--pipeline {pipeline}: a saved, fitted pipeline answers from the one corpus it was "
                          f"fitted on, but --data {data} {holds} {len(subs)} datasets ({', '.join(subs)}), each with "
                          f"its own corpus; pass the pipeline's YAML to fit it on each, or evaluate the dataset it was "
                          f"fitted on (--data {'<dataset>' if sources else base + '/<dataset>'})")
    if run_file is not None:
        raise RagkitError(f"--run {run_file}: --data {data} {holds} {len(subs)} datasets ({', '.join(subs)}) whose "
                          f"query ids may repeat, and one TREC run file cannot tell them apart; write one run per "
                          f"dataset (--data {first} --run ...)")
    if sources:
        _check_listed(data, sources, pipeline, output)
    from ragkit.eval.beir import ARCHIVE_SUBSETS

    # every split is read and checked before any fit, then each corpus is read again in its turn
    splits: dict[str, _Split] = {}
    parent = ""  # the archive's folder (a zip's: the folder it unpacks to, cqadupstack of cqadupstack.zip)
    for s in subs:
        sp = _read_split(sources[s] if sources else f"{base}/{s}", split, train_split, limit, None,
                         relevance_level=scoring.relevance_level)
        parent = parent or sp.ds.path.resolve().parent.name
        splits[s] = sp.released()
    splits[subs[0]].t_load += t_find
    missing = [] if sources else [s for s in ARCHIVE_SUBSETS.get(parent, ()) if s not in subs]
    if missing:  # a partial local copy: its mean is not the archive's BEIR score
        known = ARCHIVE_SUBSETS[parent]
        _note(f"note: BEIR scores {parent} as the mean over its {len(known)} datasets; --data {data} holds "
              f"{len(subs)} of them, so this mean is not comparable with BEIR's (missing: {', '.join(missing)})")
    scored: dict[str, _Scored] = {}
    empty: dict[str, list[str]] = {}  # each dataset's queries that returned no document
    prints: dict[str, dict[str, Any]] = {}  # each dataset's corpus and queries fingerprints, while its corpus is read
    provenance: Optional[dict[str, Any]] = None
    for s, sp in splits.items():
        # a fresh pipeline for each corpus
        pipe = _without_generation(resolve_pipeline(pipeline)[0], f"--pipeline {pipeline}", note=False)
        if not scored and sp.train is None:
            _note_unlearned(pipe)
        scored[s] = one = _fit_and_score(pipe, False, sp, ks, trace, backend, scoring)
        first = next(iter(one.result.scores))
        console.print(Text(f"{s} / {split} ({_n_queries(len(sp.queries))}): {first} {one.result.scores[first]:.4f} · "
                           f"fit {one.t_fit:.2f} s · search {one.run.seconds:.2f} s"), soft_wrap=True)
        empty[s] = _note_scored(one.run, ks, sp.dataset().corpus, pipe, sp.qrels, scoring, prefix=f"{s}: ",
                                ignored_judged=one.result.ignored_judged)
        spec = pipe.to_yaml()
        if output is not None:  # the JSON's alone (a corpus hash, a git call): built only when -o writes it
            prints[s] = _data_prints(sp.dataset().corpus, sp.queries)
            if provenance is None:  # (once: every dataset's pipeline is built from the same YAML)
                provenance = _provenance(pipe)
        sp.released()
        del pipe  # (the fitted pipeline holds the corpus and its index too)
        if trace and one.run.trace:
            from ragkit.pipelines.trace import print_trace

            print_trace(console, one.run.trace)
    _report_subsets(splits, scored, pipeline, spec, split, output, t_all, missing,
                    dataset=",".join(subs) if sources else parent,
                    settings=_settings(data, pipeline, train_split, limit, scoring, backend,
                                       _subsets_fingerprint(splits), _subsets_prints(prints) if prints else None),
                    provenance=provenance, prints=prints, empty=empty)


def _report_subsets(splits: dict[str, _Split], scored: dict[str, _Scored], pipeline: str, spec: str, split: str,
                    output: Optional[Path], t_all: float, missing: Optional[list[str]], *, dataset: str,
                    settings: dict[str, Any], provenance: Optional[dict[str, Any]] = None,
                    prints: Optional[dict[str, dict[str, Any]]] = None,
                    empty: Optional[dict[str, list[str]]] = None) -> None:
    """Print each dataset's metrics and their mean (one row each) and the summed timings; write the
    JSON: ``metrics`` the means, ``subsets`` each dataset's metrics, per-query values, timings and
    ``prints`` (:func:`_data_prints`: its corpus and queries fingerprints) and ``empty_queries`` (``empty``: its
    queries that returned no document, :func:`_empty_queries`); ``spec`` is the pipeline's YAML,
    ``provenance`` what :func:`_provenance` records of it; ``missing`` the archive's datasets the folder lacks
    (the JSON says so, as the mean is then not BEIR's); ``dataset`` names the whole (the archive's folder, or
    the listed datasets)."""
    names = list(scored)
    metrics = list(scored[names[0]].result.scores)
    means = {m: sum(scored[s].result.scores[m] for s in names) / len(names) for m in metrics}
    n_queries = sum(len(splits[s].queries) for s in names)
    parent = dataset
    total = time.perf_counter() - t_all
    console.print(Text(f"{parent} / {split}: {len(names)} datasets, {_n_queries(n_queries)}, and the mean of each "
                       f"metric over the datasets (BEIR's convention)  pipeline: {pipeline}"), soft_wrap=True)
    table = Table()
    table.add_column("dataset")
    table.add_column("queries", justify="right")
    for m in metrics:
        table.add_column(m, justify="right")
    for s in names:
        table.add_row(s, str(len(splits[s].queries)), *(f"{scored[s].result.scores[m]:.4f}" for m in metrics))
    table.add_section()
    table.add_row("mean", str(n_queries), *(f"{means[m]:.4f}" for m in metrics), style="bold")
    _print_uncut(table)
    t_load = sum(sp.t_load for sp in splits.values())
    t_fit = sum(one.t_fit for one in scored.values())
    counts = [one.encoded for one in scored.values()]
    encoded = None if None in counts else sum(c for c in counts if c is not None)
    counts = [one.queries_encoded for one in scored.values()]
    queries_encoded = None if None in counts else sum(c for c in counts if c is not None)
    search_s = sum(one.run.seconds or 0.0 for one in scored.values())
    console.print(_timings_line(t_load, t_fit, encoded, search_s, n_queries, total, queries_encoded), soft_wrap=True)
    def payload() -> dict[str, Any]:  # (the JSON: built only when -o writes it)
        subsets = {s: {"n_queries": len(splits[s].queries), "metrics": scored[s].result.scores,
                       "per_query": scored[s].result.per_query, "max_ranked": _max_ranked(scored[s].run),
                       "empty_queries": (empty or {}).get(s, []),
                       "qrels_fingerprint": splits[s].fingerprint, **(prints or {}).get(s, {}),
                       "timings": {"load_s": splits[s].t_load, "fit_s": scored[s].t_fit,
                                   "search_s": scored[s].run.seconds, "documents_encoded": scored[s].encoded,
                                   "queries_encoded": scored[s].queries_encoded},
                       **({"trace": _trace_rows(scored[s].run.trace)} if scored[s].run.trace else {})} for s in names}
        return {
            "dataset": parent, "split": split, "pipeline": spec, **(provenance or {}), "n_queries": n_queries,
            "metrics": means, "aggregate": f"mean over the {len(names)} datasets, each weighted equally",
            "max_ranked": max(_max_ranked(one.run) for one in scored.values()),
            **({"missing_datasets": missing} if missing else {}),
            "subsets": subsets,
            "timings": {"load_s": t_load, "fit_s": t_fit, "search_s": search_s, "total_s": total,
                        "documents_encoded": encoded, "queries_encoded": queries_encoded},
            "settings": settings, "machine": _machine(), "date": timestamp(),
        }

    _write_outputs(output, None, None, payload)
