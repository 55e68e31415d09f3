"""``ragkit train``: fit a pipeline learning from a judged split and save it, after a held-out report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from ragkit._files import shell_quote
from ragkit.cli._app import _examples, _fail, _RunFailure, app
from ragkit.cli._console import _note, console, err_console
from ragkit.cli._data import _check_data_folder, _check_split, _is_list, _refuse_test_split
from ragkit.cli._options import _expands_paths, _given, _path_option, _ranged_option
from ragkit.cli._outputs import _prepare_out_folder
from ragkit.cli._pipeline import (
    _check_retrieves,
    _in_file,
    _note_nothing_learns,
    _uses_training,
    _without_generation,
    resolve_pipeline,
)
from ragkit.cli._scoring import _Scoring, _search_scored
from ragkit.errors import MissingExtraError, RagkitError
from ragkit.eval.compare import _n_queries

#: Judged queries ``ragkit train``'s held-out report needs: one in five is held out.
MIN_REPORT_QUERIES = 5


def _want_report(report: Optional[bool], n: int, split: str) -> bool:
    """Whether ``ragkit train`` reports on a held-out fold: ``--report``/``--no-report``, else
    (``None``) when the split has enough queries, with a note when it has not."""
    if n >= MIN_REPORT_QUERIES:
        return report is not False
    why = (f"the {split} split has {n} judged quer{'y' if n == 1 else 'ies'}; the held-out report holds out one "
           f"in five and needs at least {MIN_REPORT_QUERIES}")
    if report:
        raise RagkitError(f"--report: {why}; pass --no-report, or use a split with more judged queries")
    if report is None:
        _note(Text.assemble(("held-out report skipped:", "yellow"), f" {why} (--no-report silences this note)"))
    return False


@dataclass
class _Fold:
    """``ragkit train``'s held-out fold: the row positions of the held-out and of the fitted queries (sorted),
    and ``twins``, how many of the split's queries share their text with another of its queries."""

    held: list[int]
    fit: list[int]
    twins: int


def _held_out_fold(queries: Any, seed: int) -> Optional[_Fold]:
    """About one in five of ``queries`` held out, seeded by ``seed``, with the queries of one text
    (:func:`~ragkit.types.normalised_text`: whitespace and case aside, as :meth:`TrainSet.same_text` and
    :meth:`Operator.learned_from` compare them) all on one side: a question fitted on under one id and
    scored under another would not be held out.

    The texts, numbered in the order of their first query, are permuted with ``seed`` and taken in that
    order, each whose queries still fit in ``n // 5`` held out (so at most ``n // 5``; fewer where the texts
    left are asked too often); where every text has more queries than that, the least asked one.  Where no
    two queries share a text this is exactly the fold of a permutation of the queries (as before texts
    were grouped).  ``None`` when the queries hold fewer than two texts (no fold keeps both sides
    non-empty)."""
    import numpy as np

    from ragkit.types import normalised_text

    numbers: dict[str, int] = {}  # each query's text, numbered in the order of its first query
    group = np.array([numbers.setdefault(normalised_text(t), len(numbers)) for t in queries.texts], dtype=np.intp)
    if len(numbers) < 2:
        return None
    sizes = np.bincount(group, minlength=len(numbers))
    perm = np.random.default_rng(seed).permutation(len(numbers))
    target, count = len(queries) // 5, 0
    chosen = np.zeros(len(numbers), dtype=bool)
    for g in perm.tolist():  # (one step per text, in the seeded order; stops once the fold is full)
        if count + sizes[g] <= target:
            chosen[g], count = True, count + int(sizes[g])
            if count == target:
                break
    if count == 0:  # every text is asked by more than n // 5 queries
        chosen[perm[np.argmin(sizes[perm])]] = True
    held = chosen[group]
    return _Fold(np.flatnonzero(held).tolist(), np.flatnonzero(~held).tolist(), int((sizes[group] > 1).sum()))


@app.command("train", epilog=_examples(
    "ragkit train --data scifact --pipeline examples/learned.yaml --out scifact-learned",
    "ragkit eval --data scifact --pipeline scifact-learned"))
@_expands_paths
def train_cmd(
    ctx: typer.Context,
    data: str = typer.Option(..., "--data", help="BEIR dataset name or folder."),
    pipeline: str = typer.Option(..., "--pipeline", "-p",
                                 help="Pipeline YAML file, saved pipeline or operator folder, or operator name."),
    out: Path = _path_option(..., "--out", "-o", help="Folder to save the fitted pipeline to (missing folders "
                                                   "are created)."),
    split: str = typer.Option("train", help="Judged split to learn from (never the test split)."),
    report: Optional[bool] = typer.Option(
        None, "--report/--no-report", show_default=False,
        help=f"First fit on 80% of the split and report nDCG@10 on the held-out 20% (queries of one text, whitespace "
             f"and case aside, on one side); this needs at least "
             f"{MIN_REPORT_QUERIES} judged queries.  Default: report when the split has that many and the pipeline "
             f"learns from judged queries, else skip the report with a note (a pipeline that learns nothing would "
             f"show one fit twice: --report shows it anyway); --report on a smaller split is an error (before "
             f"anything is fitted)."),
    seed: int = _ranged_option(0, "--seed", lo=0, hi=2**32 - 1,
                               help="Seed of the held-out fold (of the held-out report: refused with --no-report)."),
) -> None:
    """Fit a pipeline on a corpus, learning from a judged split, and save it.

    When the pipeline learns from judged queries (and unless --no-report), a held-out report
    comes first: one in five of the split's queries are held out (the queries of one text
    together: a question asked under two ids is held out under both or fitted on under both),
    the pipeline is fitted on the rest (and unlearned, when it can be), and each step's effect
    on the held-out queries is shown.  A pipeline that learns nothing (bm25 alone) skips the
    report unless --report: its unlearned and learned rows would be one fit.
    """
    from ragkit import evaluate, load_beir
    from ragkit.encoders import caching_queries
    from ragkit.pipelines._checks import check_ready
    from ragkit.pipelines._compose import iter_leaves
    from ragkit.pipelines.yaml import unfitted_copy
    from ragkit.types import TrainSet

    try:
        if _is_list(data):
            raise RagkitError(f"--data {data}: a comma-separated list; train fits and saves one pipeline, on one "
                              f"dataset: give one name or folder (ragkit eval --data {shell_quote(data)} evaluates "
                              "a list)")
        _check_split("--split", split, data)
        _refuse_test_split(None, split, "--split")  # (the name now; a link to qrels/test.tsv once it is read)
        if report is False and _given(ctx, "seed"):
            raise RagkitError(f"--seed {seed}: the seed of the held-out report's fold, but --no-report skips the "
                              "report, so it would be ignored; leave out --no-report, or leave out --seed")
    except RagkitError as e:
        _fail(e)
    try:
        _prepare_out_folder(out)  # '-', a file, a foreign or unwritable folder: refused now, not after the training
        # a broken pipeline is refused before the dataset is read (or downloaded)
        first = resolve_pipeline(pipeline)[0]
        _check_retrieves(first, f"--pipeline {pipeline}")
        _check_data_folder(data)
        ds = load_beir(data)
        _refuse_test_split(ds, split, "--split")  # (any other name for qrels/test.tsv: a link to it)
        train = ds.train_set(split)
        # a step that cannot run here (an adapt fine-tune without the train extra, a sharded backend: ray without
        # Ray): refused before any line of the report, or any fit (the report's fit on its 80% is checked below)
        check_ready(first, ds.corpus, train)
        wanted, report = report, _want_report(report, len(train.queries), split)
        if not _uses_training(first):  # the report's two rows would be one fit twice: skipped unless asked for
            skip = report and wanted is None
            report = report and not skip
            _note_nothing_learns(f"--pipeline {pipeline}", "ragkit train fits it as ragkit eval would" + (
                "; the held-out report is skipped (unlearned and learned would be one fit; --report shows it)"
                if skip else ""))
        report_learned: dict[str, dict[str, Any]] = {}  # what the report's fit learned
        n_fit = 0
        fold = _held_out_fold(train.queries, seed) if report else None
        fit_part = None if fold is None else TrainSet(
            train.queries[fold.fit], {q: train.qrels[q] for q in train.queries[fold.fit].ids})
        if report and fit_part is not None:  # the report's learned fit: a fine-tune of its own (cached or not)
            try:
                check_ready(first, ds.corpus, fit_part)
            except MissingExtraError as e:  # (the whole split's passed: its fine-tune is cached)
                e.args = (f"{e.args[0]} (for the held-out report's fit on {len(fit_part.queries)} of the "
                          f"{len(train.queries)} {split} queries; --no-report skips the report)", *e.args[1:])
                raise
        if report and fold is None:  # (every query of the split asks one question)
            why = (f"the {len(train.queries)} queries of the {split} split have one text (whitespace and case "
                   f"aside), and the held-out report keeps the queries of one text on one side of its fold")
            if wanted:
                raise RagkitError(f"--report: {why}; pass --no-report, or use a split with other questions")
            _note(Text.assemble(("held-out report skipped:", "yellow"), f" {why} (--no-report silences this note)"))
            report = False
        if not report and _given(ctx, "seed"):  # (skipped by itself: --no-report with --seed was refused above)
            _note(Text.assemble(("note:", "yellow"),
                                f" --seed {seed} is not used: it draws the held-out report's fold, and no report runs"))
        if report and fold is not None and fit_part is not None:
            n = len(train.queries)
            held_idx, fit_idx = fold.held, fold.fit
            n_fit = len(fit_idx)
            held = train.queries[held_idx]
            held_qrels = {q: train.qrels[q] for q in held.ids}
            # the title on a line of its own: a table's title wraps at the table's width ("(fit\n on the other 48)")
            off = abs(len(held) - n / 5) > max(1.0, n / 50)  # (2 in 100 queries: a fold noticeably off one fifth)
            title = Text(f"held-out {len(held)} of {n} {split} queries (fit on the other {len(fit_idx)}"
                         + (f"; {100 * len(held) / n:.0f}%, not one in five: the queries of one text stay on "
                            f"one side" if off else "") + ")", style="italic")
            if fold.twins:
                _note(f"note: {fold.twins} of the {n} {split} queries share their text with another (whitespace and "
                      f"case aside); the held-out fold keeps each text's queries on one side, so no held-out "
                      f"question was fitted on" + (f" ({len(held)} held out, not {n // 5})" if off else ""),
                      style="dim")
            table = Table()
            for col in ("pipeline", "nDCG@10", "Recall@100"):
                table.add_column(col)
            traces = {}
            for label, tr in (("unlearned", None), ("learned", fit_part)):
                # scored on rankings: a generate step's answers per held-out query would be thrown away
                pipe = _without_generation(unfitted_copy(first), f"--pipeline {pipeline}", note=tr is None)
                if tr is None and any(op.needs_train for op in iter_leaves(pipe)):
                    console.print("[dim]unlearned: skipped (parts of this pipeline fit only with judged queries)[/]")
                    continue
                with err_console.status(f"fitting the {label} pipeline..."), caching_queries():
                    pipe.fit(ds.corpus, tr)
                # as ragkit eval searches and scores (one deeper where queries are documents: ArguAna, Quora)
                run = _search_scored(pipe, held, held_qrels, ds.corpus, _Scoring(), trace=True)
                res = evaluate(run, held_qrels, ["ndcg@10", "recall@100"]).scores
                table.add_row(label, f"{res['ndcg@10']:.4f}", f"{res['recall@100']:.4f}")
                traces[label] = run.trace
                if tr is not None:
                    report_learned = pipe.learned()
            console.print(title, soft_wrap=True)
            console.print(table)
            if len(held) < MIN_HELD_OUT:
                _note(Text.assemble(("caution:", "yellow"), (
                    f" the held-out rows rest on {_n_queries(len(held))}: a difference "
                    f"between them may be chance; a split with at least {5 * MIN_HELD_OUT} judged queries holds out "
                    f"{MIN_HELD_OUT} or more")))
            from ragkit.pipelines.trace import print_stages

            print_stages(console, traces, title="what each step does to the held-out queries")
        pipe = first  # (resolved once: a saved folder's load, checksums and all, was done up to four times)
        t0 = time.perf_counter()
        with err_console.status(f"fitting on all {len(train.queries)} {split} queries..."), caching_queries():
            pipe.fit(ds.corpus, train)
        try:
            pipe.save(out)
        except OSError as e:
            raise _RunFailure(f"--out {out}: the fitted pipeline could not be saved: {e.strerror or e}") from None
    except RagkitError as e:
        _fail(_in_file(e, pipeline))
        return
    _print_learned(pipe)
    if report:
        _note_refit_differs(report_learned, pipe.learned(), len(train.queries), n_fit)
    err_console.print(Text(f"fitted in {time.perf_counter() - t0:.1f} s; saved to {out}"  # the command on one line,
                           f"{_eval_hint(ds.splits, split, data, out)}"), soft_wrap=True)  # to copy


def _eval_hint(splits: list[str], trained: str, data: str, out: Path) -> str:
    """`` (evaluate with: ragkit eval ...)`` on a split other than ``trained``: ``test`` (eval's default)
    where the folder judges it, else the first other judged split (``--split`` named), else nothing (a
    folder judging only the training split has nothing held out to evaluate on)."""
    others = [s for s in splits if s != trained]
    if not others:
        return ""
    flag = "" if "test" in others else f" --split {shell_quote(others[0])}"
    return f" (evaluate with: ragkit eval --data {shell_quote(data)} --pipeline {shell_quote(str(out))}{flag})"


def _print_learned(pipe: Any) -> None:
    """One line per step that learned from the judged queries, as :meth:`Pipeline.learned` reports it: a
    fuser's weights and estimates, a router's or judge's threshold, the Cosine Adapter's threshold and an
    ``adapt`` fine-tune's model folder, each with the number of queries it learned from."""
    for path, learned in pipe.learned().items():
        shown = ", ".join(f"{k} {_metric(v) if '@' in k else _short(v)}" for k, v in learned.items()
                          if isinstance(v, (int, float, str, list)))
        console.print(Text(f"learned: {path}: {shown}"), soft_wrap=True)


#: held-out queries below which ``ragkit train``'s report comes with a caution (its rows are a few queries' scores)
MIN_HELD_OUT = 10


def _learned_settings(learned: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """What each step learned, less its estimates and counts (``*@10``, ``queries``) and the folder of a
    tuned model (another folder for other queries, always): weights, thresholds, a normalisation, as
    ``ragkit train`` prints them (4 significant digits, so a threshold moved in its 6th digit is the same).
    Whether equal weights were ``kept`` is not compared on its own: the weights say it."""
    skip = {"queries", "model", "averaged_weights", "kept"}  # (equal weights kept: their weights differ)
    return {path: {k: _short(v) for k, v in entry.items() if k not in skip and not k.endswith("@10")}
            for path, entry in learned.items()}


def _note_refit_differs(report: dict[str, dict[str, Any]], final: dict[str, dict[str, Any]], n: int,
                        n_fit: int) -> None:
    """Say so when the pipeline fitted on all ``n`` queries and saved learned other values than the held-out
    report's fit on ``n_fit`` of them: the report scored those, not the saved ones."""
    was, now = _learned_settings(report), _learned_settings(final)
    changed = []
    for path, entry in now.items():
        before = was.get(path, {})
        diff = [f"{k} {entry.get(k, 'none')} (the report's fit: {before.get(k, 'none')})"
                for k in dict.fromkeys([*entry, *before]) if before.get(k) != entry.get(k)]
        if diff:
            changed.append(f"{path}: {', '.join(diff)}")
    if changed:
        _note(Text.assemble(("note:", "yellow"), (
            f" the saved pipeline, fitted on all {n} queries, learned other values than the report's fit on {n_fit} "
            f"(which the held-out rows scored): {'; '.join(changed)}; no held-out query scored these")))


def _metric(v: Any) -> str:
    """A learned estimate (``cv_ndcg@10``, ``train_ndcg@10``) for one line: 4 decimals, as the tables print metrics
    (``0.6960``, not ``0.696``); anything else as :func:`_short` shows it."""
    return f"{v:.4f}" if isinstance(v, float) else _short(v)


def _short(v: Any) -> str:
    """A learned value for one line: floats to 4 significant digits, lists element-wise."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return str(v)
