"""``ragkit search``: queries against a saved pipeline, shown as tables or written as JSON or a TREC run."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ragkit.cli._app import _examples, _fail, _RunFailure, app
from ragkit.cli._console import _cell, _note, console, err_console
from ragkit.cli._options import _expands_paths, _path_option, _ranged_option
from ragkit.cli._outputs import _check_not_inside, _is_stdout, _prepare_outputs, _write_outputs
from ragkit.cli._pipeline import _fewer_found, _load_folder, _rankings_only, _without_generation
from ragkit.errors import RagkitError
from ragkit.eval.compare import _n_queries
from ragkit.params import MAX_INT

if TYPE_CHECKING:
    from ragkit.types import Corpus


@app.command("search", epilog=_examples(
    'ragkit search --index scifact-learned "does vitamin D lower cancer risk"',
    "ragkit search --index scifact-learned --queries queries.tsv --run run.trec"))
@_expands_paths
def search_cmd(
    ctx: typer.Context,
    query: Optional[list[str]] = typer.Argument(
        None, metavar="QUERY", help="One or more queries (or --queries FILE)."),
    index: Path = _path_option(..., "--index", help="A saved, fitted folder (pipeline.save(dir) or "
                                                    "operator.save(dir))."),
    k: int = _ranged_option(10, "--k", lo=1, hi=MAX_INT, help="Documents shown (or written) per query."),
    queries_file: Optional[Path] = _path_option(None, "--queries", help="Search the queries of a file: a BEIR "
                                                                        "queries.jsonl, a TSV of query-id, tab, text "
                                                                        "lines, or one query per line; '-': read "
                                                                        "them from standard input (JSON lines when "
                                                                        "its first line is a JSON object)."),
    output: Optional[Path] = _path_option(None, "--output", "-o",
                                          help="Write the results as JSON (query id and text, then rank, doc id, "
                                               "score, title and text per document; '-': standard output)."),
    run_file: Optional[Path] = _path_option(None, "--run", help="Write a TREC run file ('-': standard output)."),
    run_tag: str = typer.Option("ragkit", "--run-tag", help="The tag column of the --run file."),
) -> None:
    """Queries against a saved pipeline: ad-hoc ones shown as tables, or a file of them written as
    JSON or a TREC run (unjudged queries: a submission, an app's batch)."""
    from ragkit.types import Queries

    try:
        if query and queries_file is not None:
            raise RagkitError(f"--queries {queries_file} and {_n_queries(len(query))} "
                              "on the command line: give one or the other")
        if not query and queries_file is None:
            raise RagkitError("no query: give one or more on the command line, or --queries FILE")
        blank = next((i for i, q in enumerate(query or []) if not q.strip()), None)
        if blank is not None:
            raise RagkitError(f"query {blank + 1} is empty; expected a question or keywords")
        if not index.is_dir():
            what = "not a folder" if index.exists() else "no such folder"
            raise RagkitError(f"--index {index}: {what}; expected a folder written by Pipeline.save or "
                              "Operator.save")
        for option, path in (("--output", output), ("--run", run_file)):
            _check_not_inside(path, option, index, f"--index {index}")
            if path is not None and queries_file is not None and not _is_stdout(path) and not _is_stdout(
                    queries_file) and path.resolve() == queries_file.resolve():
                raise RagkitError(f"{option} {path}: is the --queries file; writing there would replace it: give "
                                  "another path")
        _prepare_outputs(ctx, output, run_file, run_tag)
        if queries_file is not None:
            batch = _read_queries_option(queries_file)
        else:
            batch = Queries([str(i) for i in range(1, len(query or []) + 1)], list(query or []))
        if run_file is not None:  # query ids the run file's columns cannot hold: named now, before the index loads
            from ragkit.eval.beir import check_run_ids

            listed = queries_file if queries_file is not None and not _is_stdout(queries_file) else None
            check_run_ids(f"--run {run_file}", batch.ids, "query id",
                          listed if listed is not None else "--queries - (standard input)", lookup=listed)
        pipe, fitted = _load_folder(index, "--index")
        if not fitted:
            raise RagkitError(f"--index {index}: saved before it was fitted; fit it on a corpus and save it again")
        pipe = _without_generation(pipe, f"--index {index}")
        if run_file is not None:  # before the search: document ids the run file cannot hold, named where they are
            from ragkit.eval.beir import check_run_ids

            check_run_ids(f"--run {run_file}", pipe.corpus_.ids.tolist(), "document id",
                          f"--index {index} (its corpus)", lookup=index / "corpus.jsonl",
                          fix="fit and save the index again on a corpus whose ids hold no whitespace")
        with err_console.status(f"searching {_n_queries(len(batch))}..."):
            run = pipe.search(batch, k=k, **_rankings_only(pipe))
    except RagkitError as e:
        _fail(e)
        return
    corpus = pipe.corpus_
    if output is None and run_file is None:
        _print_results(corpus, batch, run, pipe)
    else:
        n_empty = sum(not len(ids) for ids in run.doc_ids)
        fewer = _fewer_found(pipe) if n_empty else []
        # (stderr: the standard output carries the results alone, whether -o writes them there or to a file)
        err_console.print(Text(f"searched {_n_queries(len(batch))} in {run.seconds:.2f} s"
                               + (f"; {n_empty} found no document" if n_empty else "")
                               + (f" ({'; '.join(fewer)})" if fewer else "")), soft_wrap=True)
    try:  # (the JSON only for -o: one dict per document found, 441 MiB at 2,000 queries and --k 1000)
        _write_outputs(output, run_file, run, lambda: _payload(index, k, batch, run, corpus), tag=run_tag)
    except RagkitError as e:
        _fail(e)


def _payload(index: Path, k: int, batch: Any, run: Any, corpus: Corpus) -> dict[str, Any]:
    """``search -o``'s JSON: the index and ``k``, then per query its id and text and per document its rank, id,
    score, title and text."""
    return {"index": str(index), "k": k,
            "results": [{"query_id": qid, "query": text, "documents": [
                {"rank": r, "doc_id": str(d), "score": float(s), "title": corpus.titles[row], "text": corpus.texts[row]}
                for r, (d, s, row) in enumerate(zip(ids, scores, corpus.row_of(ids.tolist())), 1)]}
                for qid, text, (_, ids, scores) in zip(batch.ids, batch.texts, run)]}


def _read_queries_option(path: Path) -> Any:
    """The queries of ``search --queries``: a file's (:func:`~ragkit.eval.beir.read_query_file`), or with ``-``
    standard input's, in the same layouts, told apart by one rule (:func:`~ragkit.eval.beir.is_jsonl_query_file`:
    JSON when the first character that is not blank is ``{``, or ``[`` then ``{`` (a JSON array of queries, refused
    with the ``jq -c '.[]'`` that makes it JSON lines), a UTF-8 byte-order mark aside, or a file is named
    ``.jsonl``, ``.ndjson`` or ``.json``: a BEIR queries.jsonl; else TSV or one query per line), its errors
    naming ``--queries -`` for the file, and the fixes they suggest in pipe form
    (:class:`~ragkit.eval._lines.Piped`: ``iconv -f UTF-16 -t UTF-8 queries.txt | ragkit search ... --queries -``)."""
    from ragkit.eval._lines import Piped
    from ragkit.eval._read import _read_query_file
    from ragkit.eval.beir import is_jsonl_query_file, read_query_file, starts_json_object

    if not _is_stdout(path):
        try:
            return _without_header(read_query_file(path), str(path), not is_jsonl_query_file(path))
        except RagkitError as e:  # what is said of the file itself ('q.tsv: file not found'): of --queries q.tsv
            if str(e).startswith(f"{path}: "):
                e.args = (f"--queries {e}", *e.args[1:])
            raise
    # a byte-order mark is no part of the first line (as files read: a JSON line after one is JSON lines)
    data = _read_stdin().removeprefix(b"\xef\xbb\xbf")
    jsonl = starts_json_object(data)  # (the rule files are read by: is_jsonl_query_file)
    piped = Piped("--queries - (standard input)", "ragkit search ... --queries -")
    with tempfile.TemporaryDirectory(prefix="ragkit-stdin-") as folder:
        tmp = Path(folder) / ("stdin.jsonl" if jsonl else "stdin.txt")
        tmp.write_bytes(data)
        return _without_header(_read_query_file(tmp, piped), piped.shown, not jsonl)


def _read_stdin() -> bytes:
    """Standard input's bytes for ``--queries -``: closed (``<&-``: ``sys.stdin`` is ``None``) is a
    :class:`RagkitError` (a usage error, exit status 2), a failed read (``< folder``: EISDIR, an EIO) a
    :class:`_RunFailure` (exit status 1), each naming ``--queries -``."""
    stdin = sys.stdin
    if stdin is None or getattr(stdin, "closed", False):
        raise RagkitError("--queries - (standard input): standard input is closed; pipe the queries in")
    try:
        buffer = getattr(stdin, "buffer", None)
        return buffer.read() if buffer is not None else stdin.read().encode("utf-8")
    except OSError as e:
        raise _RunFailure(f"--queries - (standard input): could not be read: {e.strerror or e}") from None


#: The names a TSV of queries' header line gives its two columns (lower case, ``_`` and spaces read as ``-``, as the
#: qrels reader's ``query-id``): the id's, and the text's.
_QUERY_ID_HEADERS = frozenset({"query-id", "qid", "id", "-id", "queryid", "topic-id", "topic"})


_QUERY_TEXT_HEADERS = frozenset({"text", "query", "query-text", "question", "title"})


def _header_name(cell: str) -> str:
    """A header cell as :data:`_QUERY_ID_HEADERS` spells it (the qrels reader's rule: case, spaces and ``_``
    aside)."""
    return re.sub(r"[\s_]+", "-", cell.strip().lower())


def _without_header(queries: Any, where: str, tabbed: bool) -> Any:
    """``queries`` read from a TSV (``tabbed``) less its first line where that is a header naming the columns
    (``query-id<TAB>text``, ``qid<TAB>text``, ``id<TAB>query``: :data:`_QUERY_ID_HEADERS` then
    :data:`_QUERY_TEXT_HEADERS`), which would otherwise be searched as a query; a note says so.  A file of that
    header alone is refused: no query."""
    from ragkit.types import Queries

    if not tabbed or not len(queries):
        return queries
    ids, texts = list(queries.ids), list(queries.texts)
    if _header_name(ids[0]) not in _QUERY_ID_HEADERS or _header_name(texts[0]) not in _QUERY_TEXT_HEADERS:
        return queries
    if len(ids) == 1:
        raise RagkitError(f"{where}: only a header line ({ids[0]}<TAB>{texts[0]}), no query; expected "
                          "query-id<TAB>text lines under it")
    _note(f"note: {where}: its first line ({ids[0]}<TAB>{texts[0]}) names the columns; skipped as a header",
          style="dim")
    return Queries(ids[1:], texts[1:])


def _print_results(corpus: Corpus, batch: Any, run: Any, pipe: Any) -> None:
    """One table per query: rank, doc id, score, the title (or the text), cut to 80 characters.  A doc id is never
    cut (``urn:doc:pubmed:2019:00000003-supplementary-m…`` at 80 columns, ``urn:doc…`` at 40, before): the id
    column is as wide as the longest id and the title / text wraps; where that leaves the title too little room,
    each document is a line ``rank. id  score`` (the id whole) and an indented line of its title instead."""
    fewer = _fewer_found(pipe)
    for q, (_, ids, scores) in zip(batch.texts, run):
        if not len(ids):  # an empty table said nothing
            console.print(Text(f"{q}: no document found" + (f" ({'; '.join(fewer)})" if fewer else ""),
                               style="dim"), soft_wrap=True)
            continue
        rows = corpus.row_of(ids.tolist())
        labels = [(corpus.titles[row] or corpus.texts[row])[:80] for row in rows]
        shown = [_cell(str(d)) for d in ids]  # (as written: escaped where the encoding lacks a character)
        longest = max(t.cell_len for t in shown)
        if longest + _RESULTS_CHROME > console.width:
            console.print(Text(q, style="bold"), soft_wrap=True)
            for r, (d, s, label) in enumerate(zip(ids, scores, labels), 1):
                console.print(Text(f"{r:>3}. {d}  {s:.4f}"), soft_wrap=True)  # (whole: the terminal wraps it)
                console.print(Padding(Text(label, style="dim"), (0, 0, 0, 5)))  # (wrapped, indented)
            continue
        table = Table(title=_cell(q))
        table.add_column("rank", no_wrap=True)
        table.add_column("doc id", no_wrap=True, min_width=longest)
        table.add_column("score", no_wrap=True)
        table.add_column("title / text", overflow="fold")
        for r, (d, s, label) in enumerate(zip(shown, scores, labels), 1):
            table.add_row(str(r), d, f"{s:.4f}", _cell(label))
        console.print(table)


#: The columns a result table takes besides its doc ids: rank, score, a title's least width, frame and padding.
_RESULTS_CHROME = 40
