"""``ragkit compare``: compare systems' results over the same queries with significance tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from ragkit._files import shell_quote
from ragkit.cli._app import _examples, _fail, app
from ragkit.cli._console import _note, _print_uncut, console
from ragkit.cli._data import _check_data_folder, _check_split
from ragkit.cli._eval import _note_identical
from ragkit.cli._options import _expands_paths, _given, _parse_metric_names, _path_option, _path_parser, _ranged_option
from ragkit.cli._outputs import _is_stdout, _prepare_outputs, _write_outputs
from ragkit.cli._pipeline import _path_like
from ragkit.errors import RagkitError


def _blank_file(path: Path) -> bool:
    """Whether ``path`` holds nothing but whitespace (read until its first other byte)."""
    with open(path, "rb") as f:
        return not any(block.strip() for block in iter(lambda: f.read(1 << 16), b""))


def _check_no_pipelines(results: list[Path], data: Optional[str], split: str, relevance_level: int,
                        keep_identical_ids: bool) -> None:
    """Refuse pipelines (YAML files, saved folders: :func:`~ragkit.eval.compare.pipeline_kind`; a registered
    operator's name, such as ``bm25``, that names no file) given to
    ``ragkit compare`` for results, with the ``ragkit eval`` commands that write their results (scored as
    ``compare`` would score run files: ``--data``, ``--split``, ``--relevance-level``, ``--keep-identical-ids``)
    and the ``ragkit compare`` command on what they write.  A TREC run file or a JSON result passes unread
    (their first line or character tells them apart)."""
    from ragkit.eval.compare import eval_command, pipeline_kind

    kinds = {i: kind for i, p in enumerate(results) if (kind := pipeline_kind(p)) is not None}
    unfound = [i for i, p in enumerate(results) if not p.exists() and not _path_like(str(p))]
    if unfound:  # a registered operator's name (bm25), as ragkit eval --pipeline takes it
        from ragkit import registry

        known = set(registry.names())
        kinds.update({i: "an operator name" for i in unfound if str(results[i]) in known})
        kinds = dict(sorted(kinds.items()))
    if not kinds:
        return
    extra = [*(["--relevance-level", str(relevance_level)] if relevance_level != 1 else []),
             *(["--keep-identical-ids"] if keep_identical_ids else [])]
    taken = {p.name for i, p in enumerate(results) if i not in kinds}
    outs: dict[int, str] = {}
    for i in kinds:  # the JSON each writes, in the working folder: named after it, and each its own
        stem = results[i].stem if results[i].is_file() else results[i].name
        out, n = f"{stem}.json", 1
        while out in taken:
            n += 1
            out = f"{stem}_{n}.json"
        taken.add(out)
        outs[i] = out
    runs = [p for i, p in enumerate(results) if i not in kinds and not p.name.endswith(".json")]
    scoring = ["--data", shell_quote(data), "--split", shell_quote(split), *extra] if runs and data else []
    then = " ".join(["ragkit compare", *(outs.get(i) or shell_quote(str(p)) for i, p in enumerate(results)),
                     *scoring])
    names = [str(results[i]) for i in kinds]
    listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
    if len(kinds) == 1:
        what = f"{listed} is {kinds[next(iter(kinds))]}, not results: evaluate it first"
    elif len(set(kinds.values())) == 1:  # "a pipeline YAML file" -> "pipeline YAML files"
        what = f"{listed} are {next(iter(kinds.values())).split(' ', 1)[1]}s, not results: evaluate each first"
    else:
        what = (", ".join(f"{results[i]} ({kind})" for i, kind in kinds.items()) + " are pipelines, not results: "
                "evaluate each first")
    steps = "\n".join(f"  {eval_command(results[i], data, split, outs[i], extra)}" for i in kinds)
    raise RagkitError(f"RESULTS: {what}, then compare the results written (ragkit compare reads 'ragkit eval -o' "
                      f"JSON files and TREC run files):\n{steps}\n  {then}")


def _check_recorded(ctx: typer.Context, loaded: list[Any], split: str, relevance_level: int,
                    keep_identical_ids: bool) -> None:
    """Refuse ``--split``, ``--relevance-level`` or ``--keep-identical-ids``, given, that a loaded result (a
    ``ragkit eval -o`` JSON file) records otherwise: they score TREC run files, and a JSON file's values were
    scored as it records, so the comparison would report (and its ``-o`` JSON record) scoring that was not
    applied.  A result that records none (``None``) passes; a run file's are the ones given (the command checks
    the JSON files' before it scores any run file)."""
    given = {"split": ("--split", split, lambda r: r.split),
             "relevance_level": ("--relevance-level", relevance_level, lambda r: r.relevance_level),
             "keep_identical_ids": ("--keep-identical-ids", keep_identical_ids,
                                    lambda r: None if r.ignore_identical_ids is None else not r.ignore_identical_ids)}
    for param, (option, value, recorded) in given.items():
        if not _given(ctx, param):
            continue
        for r in loaded:
            got = recorded(r)
            if got is None or got == value:
                continue
            if param == "split":
                asked, has = f"--split {value}", f"holds results of split {got!r}"
            elif param == "relevance_level":
                asked, has = f"--relevance-level {value}", f"was scored with relevance_level {got}"
            else:  # (a flag: given, it is True)
                asked, has = "--keep-identical-ids", ("was scored with ignore_identical_ids true (documents whose id "
                                                      "is the query's not scored)")
            raise RagkitError(f"{asked}: {r.source} {has}; {option} scores TREC run files, not the values of a "
                              f"'ragkit eval -o' JSON file, which are compared as they were scored: leave it out, "
                              f"or compare results evaluated with ragkit eval {asked}")


@app.command("compare", epilog=_examples(
    "ragkit compare bm25.json hybrid.json",
    "ragkit compare bm25.json hybrid.json dense.json --baseline bm25.json -m ndcg@10"))
@_expands_paths
def compare_cmd(
    ctx: typer.Context,
    results: list[Path] = typer.Argument(
        ..., metavar="RESULTS", parser=_path_parser("RESULTS"),
        help="Two or more 'ragkit eval -o' JSON files or TREC run files; "
                                                   "the first is the baseline unless --baseline names another."),
    metrics: str = typer.Option("ndcg@10,recall@100", "--metrics", "-m", help="Metrics, comma-separated."),
    baseline: Optional[Path] = _path_option(None, "--baseline", help="The reference system: one of RESULTS "
                                                                     "(default: the first)."),
    data: Optional[str] = typer.Option(None, "--data", help="BEIR dataset name or folder whose judgements score "
                                                            "TREC run files."),
    split: str = typer.Option("test", help="Qrels split that scores TREC run files."),
    resamples: int = _ranged_option(200_000, "--resamples", lo=1, hi=10**7,
                                    help="Sign flips of the randomisation test and bootstrap resamples (a p-value "
                                         "near 0.05 then has a Monte Carlo standard error of 0.0005)."),
    seed: int = _ranged_option(0, "--seed", lo=0, hi=2**32 - 1, help="Seed of the resampling."),
    alpha: float = _ranged_option(0.05, "--alpha", kind=float, lo=0.0, hi=1.0, exclusive=True,
                                  help="Significance level (Holm-corrected)."),
    output: Optional[Path] = _path_option(None, "--output", "-o", help="Write the comparison as JSON ('-': standard "
                                                                       "output, the table then on standard error)."),
    relevance_level: int = _ranged_option(1, "--relevance-level", lo=1,
                                          help="Lowest grade the binary metrics count when scoring TREC run files "
                                               "(trec_eval's -l), as ragkit eval's."),
    keep_identical_ids: bool = typer.Option(False, "--keep-identical-ids",
                                            help="Score documents whose id is the query's when scoring TREC run "
                                                 "files, as ragkit eval's."),
) -> None:
    """Compare systems over the same queries: means, differences to a baseline with 95% bootstrap
    intervals, and paired randomisation p-values corrected by Holm's method."""
    from ragkit.eval.compare import compare, holds_json, load_result

    try:
        names = _parse_metric_names(metrics)  # (one named twice: Holm would count the same comparison twice)
        if len(results) < 2:
            raise RagkitError(f"RESULTS: expected two or more result files, got {len(results)}")
        if data is not None:  # (the split scores TREC run files against --data's judgements)
            _check_split("--split", split, data)
        _check_no_pipelines(results, data, split, relevance_level, keep_identical_ids)
        folders = [str(p) for p in results if p.is_dir()]
        if folders:
            raise RagkitError(f"RESULTS: {', '.join(folders)}: {'a folder' if len(folders) == 1 else 'folders'}; "
                              "expected 'ragkit eval -o' JSON files or TREC run files")
        missing = [str(p) for p in results if not p.is_file()]
        if missing:
            raise RagkitError(f"RESULTS: {', '.join(missing)}: no such file (expected 'ragkit eval -o' JSON files or "
                              "TREC run files)")
        empty = [str(p) for p in results if _blank_file(p)]  # else scored as a run that found nothing
        if empty:
            raise RagkitError(f"RESULTS: {', '.join(empty)}: an empty file (an interrupted write?); expected a "
                              "'ragkit eval -o' JSON file or a TREC run file")
        resolved = [p.resolve() for p in results]
        base = 0
        if baseline is not None:
            if baseline.resolve() not in resolved:
                raise RagkitError(f"--baseline {baseline}: not one of the RESULTS ({', '.join(map(str, results))})")
            base = resolved.index(baseline.resolve())
        if output is not None and not _is_stdout(output) and output.resolve() in resolved:  # it would replace one
            raise RagkitError(f"--output {output}: one of the RESULTS; writing the comparison there would replace "
                              "those results; give another path, such as comparison.json")
        # (with '-' the JSON alone on standard output, for a script; the table and notes on stderr)
        _prepare_outputs(ctx, output, None, "ragkit", example="comparison.json")
        qrels, ds_name, fingerprint, folder = None, None, None, None
        if data is not None:  # its judgements only: a corpus can be gigabytes
            from ragkit.eval.beir import _folder_qrels, _locate_one
            from ragkit.eval.compare import scored_qrels_fingerprint

            _check_data_folder(data)
            # located once, links resolved once: its judgements are read there, and -o's JSON records it
            folder = _locate_one(data, download=True, base_url=None).resolve()
            ds_name, qrels = _folder_qrels(folder, split)
            from ragkit.eval.metrics import check_relevance_level

            # (once, in the option's words: each run file's scoring would say "evaluate: relevance_level ...")
            check_relevance_level(qrels, relevance_level, f"--relevance-level (--data {data})")
            fingerprint = scored_qrels_fingerprint(qrels, qrels)  # once: each run file scores every judged query
        stems = [p.stem for p in results]  # short names in the table: file stems when they tell the files apart
        labels = stems if len(set(stems)) == len(stems) else [str(p) for p in results]

        def load(i: int) -> Any:
            return load_result(results[i], qrels=qrels, metrics=names, dataset=ds_name,
                               split=split if qrels else None, name=labels[i], relevance_level=relevance_level,
                               ignore_identical_ids=not keep_identical_ids, qrels_fingerprint=fingerprint,
                               note_identical=False)  # (said below, per run file, in the options' words)

        # the eval JSON files first: what they record is checked against the options before any run file is scored
        jsons = {i: load(i) for i, p in enumerate(results) if holds_json(p)}
        _check_recorded(ctx, list(jsons.values()), split, relevance_level, keep_identical_ids)
        loaded = [jsons[i] if i in jsons else load(i) for i in range(len(results))]
        cmp = compare(loaded, names, baseline=base, n_resamples=resamples, seed=seed, alpha=alpha)
        if folder is not None and output is not None:  # (what --data named, for the JSON that reruns the comparison)
            cmp = replace(cmp, data=data, data_resolved=str(folder))
    except RagkitError as e:
        _fail(e)
        return
    # (dataset / split: what the results record or --data scored), wrapped between words at the terminal's width
    console.print(Text(cmp.header()))
    _print_comparison(cmp, base)
    if cmp.note():  # (notes and warnings on stderr, as every command's: stdout carries the table or the JSON)
        _note(f"note: {cmp.note()}")
    for warning in cmp.warnings():
        _note(f"warning: {warning}")
    for few in cmp.few_differ():
        _note(f"note: {few}")
    for p, r in zip(results, loaded):  # (a TREC run file's, scored here; a JSON file's are unknown: None)
        _note_identical(r.ignored_judged or 0, f"{p}: ")
    try:  # (-: the JSON alone on standard output; a file: written atomically, its folders created)
        _write_outputs(output, None, None, cmp.to_dict)
    except RagkitError as e:  # (a _RunFailure: it, or its folder, could not be written)
        _fail(e)


def _print_comparison(cmp: Any, base: int) -> None:
    """``ragkit compare``'s table: a metric's block of rows, a row per system, the baseline's without a difference.
    Seven columns with no outer frame or padding (three runs with short names: 75 columns); where the terminal is
    narrower than the table, a few short lines per system and metric instead (``r_dense: mean 0.9097``, ``Δ +0.0386,
    95% CI [...]``, ``p ..., p (Holm) ...``), since a table wrapped by the terminal cannot be read."""
    from rich import box
    from rich.measure import Measurement

    from ragkit.eval.compare import format_p

    ci = f"{cmp.confidence:.0%} CI"
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("metric", "system", "mean", "Δ", ci, "p", "p (Holm)"):
        table.add_column(col, justify="left" if col in ("metric", "system") else "right", no_wrap=True)
    shallow = cmp.shallow  # a result searched shallower than the metric's cut-off: "!" (see the warning)
    lines: list[Text] = []
    for j, m in enumerate(cmp.metrics):
        metric = f"{m} !" if shallow[:, j].any() else m
        lines.append(Text(metric, style="bold"))
        for i, s in enumerate(cmp.systems):
            system = f"{s} !" if shallow[i, j] else s
            cells = [metric if i == 0 else "", system, f"{cmp.means[i, j]:.4f}"]
            if i != base:
                more = [f"{cmp.delta[i, j]:+.4f}", f"[{cmp.ci_low[i, j]:+.3f}, {cmp.ci_high[i, j]:+.3f}]",
                        format_p(cmp.p_value[i, j]), f"{format_p(cmp.p_holm[i, j])} {cmp.marks[i, j]}".rstrip()]
                cells += more
                lines += [Text(f"  {system}: mean {cells[2]}"), Text(f"    Δ {more[0]}, {ci} {more[1]}"),
                          Text(f"    p {more[2]}, p (Holm) {more[3]}")]
            else:
                lines.append(Text(f"  {system} (baseline): mean {cells[2]}"))
            table.add_row(*cells)
        table.add_section()
    need = Measurement.get(console, console.options.update(max_width=10_000), table).maximum
    if need <= console.width or not console.is_terminal:  # (piped: the table whole, for a file or a grep)
        _print_uncut(table)
        return
    for line in lines:
        console.print(line)
