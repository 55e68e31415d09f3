"""Shared command line of the example scripts: ``--data``, ``--limit``, evaluation and printing.

What :func:`run` does is the README's "Using it" snippet, plus timing and a ``--limit`` slice::

    data = load_beir(args.data)
    with caching_queries():                     # query vectors cached on disk, as `ragkit eval` does
        pipe.fit(data.corpus)                   # pipe.fit(data.corpus, data.train_set("train")) to learn
        result = pipe.search(data.queries("test"))
    print(evaluate(result, data.qrels("test"), ["ndcg@10", "recall@100"]).scores)

A :class:`~ragkit.errors.RagkitError` (a missing ``--data`` folder, an unknown ``--split``, ...) ends the
script with ``<script>: error: <message>`` on stderr and ``ragkit eval``'s exit status, not a traceback:
2 for bad input, 1 for a failure while running (a dataset download that failed).  A ``--limit`` run says
that it is a slice: ``rm3: 8 queries, 208 docs (a --limit slice of 300 queries and 5183 docs, not
comparable to the full split)``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

_SHARED_SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "beir" / "scifact"


def default_data(folder: Path = _SHARED_SCIFACT) -> Path:
    """The default ``--data``: ``folder`` (the checkout's SciFact copy) when it exists, else the dataset name
    ``scifact``, which :func:`ragkit.load_beir` finds in its cache or downloads once."""
    return folder if folder.is_dir() else Path("scifact")


DEFAULT_DATA = default_data()

DATA_HINT = ("pass --data with a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) or a BEIR dataset "
             "name such as scifact (downloaded once, then cached)")


def _at_least(text: str, low: int, why: str = "") -> int:
    """``text`` as a whole number of at least ``low``, else an ``argparse`` error saying what was given
    (``why``: a sentence on what the option means, added to a number below ``low``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least {low}, got {value}{why}")
    return value


def positive_int(text: str) -> int:
    """An ``argparse`` type: a whole number of at least 1 (``--limit``)."""
    return _at_least(text, 1, " (a limit of N evaluates the first N queries; leave --limit out for the full split)")


def non_negative_int(text: str) -> int:
    """An ``argparse`` type: a whole number of at least 0 (a count that may be none)."""
    return _at_least(text, 0)


def make_parser(description: str | None, *, default_limit: int | None = None,
                all_flag: bool = False) -> argparse.ArgumentParser:
    """The examples' command line: ``--data``, ``--split``, ``--limit`` (default ``default_limit``; ``None``:
    the full split) and ``--json``; a script adds its own options to it.  ``all_flag`` adds ``--all``
    (the full split, for a script whose ``default_limit`` is a slice), refused beside ``--limit``.  The
    docstring ``description`` is printed as written (its usage line stays on its own line)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help=f"BEIR folder or dataset name (default: {DEFAULT_DATA}).")
    ap.add_argument("--split", default="test", help="Split to evaluate (default test).")
    full = "the full split" if default_limit is None else f"{default_limit}"
    limits = ap.add_mutually_exclusive_group() if all_flag else ap
    limits.add_argument("--limit", type=positive_int, default=default_limit, metavar="N",
                        help="Use only the first N queries and a small corpus slice (their relevant documents "
                             f"plus the first 200) for a quick run (default: {full}).")
    if all_flag:  # (SUPPRESS: --all is seen as given, so argparse refuses it beside --limit)
        limits.add_argument("--all", dest="limit", action="store_const", const=None, default=argparse.SUPPRESS,
                            help="Evaluate the full split and corpus (no --limit slice).")
    ap.add_argument("--json", action="store_true", help="Print the metrics as one JSON line.")
    return ap


def parse_args(description: str | None, *, default_limit: int | None = None,
               all_flag: bool = False) -> argparse.Namespace:
    """The parsed command line of :func:`make_parser`."""
    return make_parser(description, default_limit=default_limit, all_flag=all_flag).parse_args()


@contextmanager
def clear_errors(hint: str | None = None) -> Iterator[None]:
    """Turn a :class:`~ragkit.errors.RagkitError` raised inside into ``<script>: error: <message>`` on
    stderr and ``ragkit eval``'s exit status for it (the command line's own mapping): 2 for bad input, with
    ``hint`` after the message, and 1, without the hint, for a failure while running (a dataset download
    that failed: :class:`~ragkit.eval.beir.DownloadError`)."""
    from ragkit.errors import RagkitError

    try:
        yield
    except RagkitError as e:
        from ragkit.cli._app import _exit_status

        status = _exit_status(e)
        prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "example"
        said = f"\n{prog}: hint: {hint}" if hint and status == 2 else ""
        print(f"{prog}: error: {e}{said}", file=sys.stderr)
        raise SystemExit(status) from None


class Data(NamedTuple):
    """What :func:`load` gives: the (sliced) corpus, queries, qrels and training set, and ``whole``, the full
    split's ``(queries, documents)`` counts when ``--limit`` sliced them (``None`` for the full split)."""

    corpus: Any
    queries: Any
    qrels: dict
    train: Any
    whole: tuple[int, int] | None = None


class Ran(dict):
    """What :func:`run` returns: the printed metrics (a dict), with the search's ``result`` and the
    evaluated ``data`` (:class:`Data`) attached for a script's own check."""

    result: Any
    data: Data


def load(args: argparse.Namespace, train_split: str | None = None) -> Data:
    """``Data(corpus, queries, qrels, train, whole)``, sliced when ``--limit`` is given.

    ``train`` is the :class:`~ragkit.types.TrainSet` of ``train_split`` (``None`` without one);
    with ``--limit N`` it keeps the first ``5 N`` training queries, and the slice keeps their
    relevant documents too.  A dataset that cannot be read, or a split it lacks, ends the script
    with its error message (:func:`clear_errors`), not a traceback.
    """
    from ragkit import load_beir
    from ragkit.errors import ParamError
    from ragkit.types import TrainSet

    with clear_errors():
        if train_split is not None and train_split == args.split:  # as `ragkit eval --train-split` refuses it
            raise ParamError(f"--split {args.split!r} is the split this example learns from; training on the "
                             "evaluated queries is refused: evaluate another split (default: test)")
    with clear_errors(DATA_HINT):
        ds = load_beir(args.data)
    with clear_errors():
        queries, qrels = ds.queries(args.split), ds.qrels(args.split)
        train = ds.train_set(train_split) if train_split else None
    corpus, whole = ds.corpus, None
    if args.limit is not None:
        whole = (len(queries), len(corpus))
        queries = queries[: args.limit]
        rel = {d for q in queries.ids for d in qrels.get(q, {})}
        if train is not None:
            tq = train.queries[: 5 * args.limit]
            train = TrainSet(tq, {q: train.qrels[q] for q in tq.ids})
            rel |= {d for q in tq.ids for d in train.qrels[q]}
        rows = sorted(set(range(min(200, len(corpus)))) | set(corpus.row_of(rel, missing="drop").tolist()))
        corpus = corpus.subset(np.array(rows))
    qrels = {q: qrels[q] for q in queries.ids if q in qrels}
    return Data(corpus, queries, qrels, train, whole)


def run(pipe, args: argparse.Namespace, name: str, train_split: str | None = None) -> Ran:
    """Fit (learning from ``train_split`` if given), search, evaluate and print one pipeline; returns the metrics
    (:class:`Ran`: a dict, with the search's ``result`` and the evaluated ``data`` attached).

    The ragkit calls are those of the README's "Using it" snippet (this module's docstring shows them):
    ``pipe.fit(corpus, train)``, ``pipe.search(queries)`` and ``evaluate(result, qrels, metrics)``, the
    first two inside :func:`ragkit.encoders.caching_queries` as ``ragkit eval`` runs them, so a second run
    reads the queries' vectors back instead of encoding them.
    """
    from ragkit import evaluate
    from ragkit.encoders import caching_queries

    data = load(args, train_split)
    with clear_errors():
        t0 = time.perf_counter()
        with caching_queries():
            pipe.fit(data.corpus, data.train)
            t_fit = time.perf_counter() - t0
            result = pipe.search(data.queries)
        scores = evaluate(result, data.qrels, ["ndcg@10", "recall@100"]).scores
    out = Ran({**counts(name, data), **scores, "fit_s": round(t_fit, 3), "search_s": round(result.seconds or 0.0, 3)})
    out.result, out.data = result, data
    emit(out, args, f"recall@100 {scores['recall@100']:.4f}  (fit {t_fit:.1f} s, search {result.seconds or 0.0:.2f} s)")
    return out


def counts(name: str, data: Data) -> dict:
    """The start of an example's metrics: its name, its query and document counts and, for a ``--limit`` slice,
    the full split's (``whole_queries``, ``whole_docs``)."""
    out = {"example": name, "queries": len(data.queries), "docs": len(data.corpus)}
    if data.whole is not None:
        out["whole_queries"], out["whole_docs"] = data.whole
    return out


def note(args: argparse.Namespace, text: str) -> None:
    """Print a script's own check line: to standard error with ``--json`` (whose line stays the last of standard
    output), else to standard output."""
    print(text, file=sys.stderr if args.json else sys.stdout)


def emit(out: dict, args: argparse.Namespace, details: str) -> dict:
    """Print an example's result: one JSON line with ``--json`` (what the tests read), else a summary line."""
    if args.json:
        print(json.dumps(out))
    elif "whole_queries" in out:  # a --limit slice: its scores run higher than the full split's
        print(f"{out['example']}: {out['queries']} queries, {out['docs']} docs (a --limit slice of "
              f"{out['whole_queries']} queries and {out['whole_docs']} docs, not comparable to the full split)  "
              f"nDCG@10 {out['ndcg@10']:.4f}  {details}")
    else:
        print(f"{out['example']}: {out['queries']} queries, {out['docs']} docs  "
              f"nDCG@10 {out['ndcg@10']:.4f}  {details}")
    return out
