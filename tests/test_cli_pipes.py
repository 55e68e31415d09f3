"""``ragkit`` when the reader of its standard output or standard error goes away (``| head``), under ``NO_COLOR`` and
an ASCII encoding, refused commands' folders, a query file's header line, ``compare`` of one dataset in two folders
and ``--version`` after a command.  Run in-process through :func:`ragkit.cli.main` (as the ``ragkit`` script runs)."""

from __future__ import annotations

import errno
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import ClosedPipe as _Closed

DOCS = [("d1", "Vitamin D", "vitamin D and bones"), ("d2", "Cats", "cats sleep all day"),
        ("d3", "Dogs", "dogs bark at night"), ("d4", "Hips", "hip bones break in old age"),
        ("d5", "Sun", "sunlight makes vitamin D in skin"), ("d6", "Fish", "fish oil holds vitamin D")]
QUERIES = [("q1", "vitamin D bones"), ("q2", "cats sleeping"), ("q3", "dogs barking"), ("q4", "hip fracture bones"),
           ("q5", "sunlight skin"), ("q6", "fish oil")]
RELEVANT = {"q1": "d1", "q2": "d2", "q3": "d3", "q4": "d4", "q5": "d5", "q6": "d6"}


def _dataset(folder: Path) -> Path:
    """A BEIR folder of six documents and queries, judged in a test and a train split."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n"
                                                 for i, t, x in DOCS))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in QUERIES))
    for split in ("test", "train"):
        (folder / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in RELEVANT.items()))
    return folder



def _main(*args: object) -> int:
    from ragkit.cli import main

    return main([str(a) for a in args])


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("RAGKIT_IMPORT", raising=False)
    for name in ("stdout", "stderr", "stdin"):  # (put back even where click replaced them: its broken-pipe handler)
        monkeypatch.setattr(sys, name, getattr(sys, name))


# ------------------------------------------------------------------ 1. stdout's reader gone: files still written
def test_eval_writes_its_files_when_stdouts_reader_closed(tmp_path, monkeypatch):
    """``ragkit eval ... -o q.json --run q.trec | head -3`` exited 141 and wrote neither file: the table was
    printed first, and the broken pipe ended the command."""
    ds = _dataset(tmp_path / "ds")
    monkeypatch.setattr(sys, "stdout", _Closed())
    status = _main("eval", "--data", ds, "--pipeline", "bm25", "-o", tmp_path / "out" / "q.json",
                   "--run", tmp_path / "out" / "q.trec")
    assert status == 141
    assert json.loads((tmp_path / "out" / "q.json").read_text())["n_queries"] == 6
    assert (tmp_path / "out" / "q.trec").read_text().count(" Q0 ") >= 6


def test_compare_and_train_write_their_outputs_when_stdouts_reader_closed(tmp_path, monkeypatch):
    ds = _dataset(tmp_path / "ds")
    for name in ("a", "b"):
        assert _main("eval", "--data", ds, "--pipeline", "bm25", "-o", tmp_path / f"{name}.json") == 0
    monkeypatch.setattr(sys, "stdout", _Closed())
    status = _main("compare", tmp_path / "a.json", tmp_path / "b.json", "-o", tmp_path / "c.json",
                   "--resamples", "100")
    assert status == 141
    assert "metrics" in json.loads((tmp_path / "c.json").read_text()) or (tmp_path / "c.json").stat().st_size
    status = _main("train", "--data", ds, "--pipeline", "bm25", "-o", tmp_path / "idx4", "--report")
    assert status == 141
    assert (tmp_path / "idx4").is_dir() and any((tmp_path / "idx4").iterdir())


# ------------------------------------------------------------------ 2. stderr's reader gone
def test_search_writes_its_run_when_stderrs_reader_closed(tmp_path, monkeypatch):
    """``ragkit search ... --run zz.trec 2>&1 | head -0`` exited 1 (click's broken-pipe handler) without writing
    the run: its status line on stderr failed first.  The file is written now, and the status is 141."""
    ds = _dataset(tmp_path / "ds")
    assert _main("train", "--data", ds, "--pipeline", "bm25", "-o", tmp_path / "idx", "--no-report") == 0
    monkeypatch.setattr(sys, "stderr", _Closed())
    status = _main("search", "--index", tmp_path / "idx", "--queries", ds / "queries.jsonl",
                   "--run", tmp_path / "zz.trec")
    assert status == 141
    assert (tmp_path / "zz.trec").read_text().count(" Q0 ") >= 6


def test_a_full_stdout_is_still_one_error_line_and_status_1_after_the_files(tmp_path, monkeypatch):
    """Another failure of standard output than a closed pipe (a full disk) still says so, once the files are
    written, with status 1."""
    class Full(_Closed):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    ds = _dataset(tmp_path / "ds")
    err = io.StringIO()
    monkeypatch.setattr(sys, "stdout", Full())
    monkeypatch.setattr(sys, "stderr", err)
    assert _main("eval", "--data", ds, "--pipeline", "bm25", "-o", tmp_path / "q.json") == 1
    assert (tmp_path / "q.json").is_file()
    assert "error: standard output: could not be written: No space left on device" in err.getvalue()


# ------------------------------------------------------------------ 3. NO_COLOR: a usage error's "error:" too
def test_no_color_leaves_a_usage_errors_error_unstyled(monkeypatch):
    """``NO_COLOR=1 ragkit eval --k x`` on a terminal printed ``\\x1b[1merror:\\x1b[0m``: the group's context, which
    turned styling off, had closed (and put the colours back) before the usage error was printed."""
    from rich.color import ColorSystem

    from ragkit.cli._console import err_console

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(err_console, "_force_terminal", True)
    monkeypatch.setattr(err_console, "_color_system", ColorSystem.STANDARD)
    monkeypatch.setenv("NO_COLOR", "1")
    assert _main("eval", "--k", "x") == 2
    assert err.getvalue().startswith("error:") and "\x1b[" not in err.getvalue(), repr(err.getvalue())
    assert err_console._color_system == ColorSystem.STANDARD  # (put back once main returns)
    monkeypatch.delenv("NO_COLOR")
    err.truncate(0)
    err.seek(0)
    assert _main("eval", "--k", "x") == 2
    assert "\x1b[" in err.getvalue()  # (styled without NO_COLOR: the check above can fail)


# ------------------------------------------------------------------ 4. an ASCII stdout: tables line up
def test_result_tables_line_up_when_stdout_is_ascii(tmp_path, monkeypatch):
    """Under ``PYTHONIOENCODING=ascii`` a doc id or title of other characters was escaped (``\\u6771``) after Rich
    had measured the columns, so that row ran past the table's border."""
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    BM25(k=3).fit(Corpus.from_texts(["vitamin D and bones", "東京 bones vitamin", "cats sleep"],
                                    ids=["d1", "東京-2", "d3"], titles=["Vitamin D", "東京 Tōkyō", "Cats"])
                  ).save(tmp_path / "ix")
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii", errors="strict", newline="\n")
    monkeypatch.setattr(sys, "stdout", out)
    assert _main("search", "--index", tmp_path / "ix", "vitamin bones") == 0
    out.flush()
    text = raw.getvalue().decode("ascii")
    assert "\\u6771\\u4eac" in text, text
    framed = [line for line in text.splitlines() if line[:1] in "+|"]
    assert len(framed) >= 5 and len({len(line) for line in framed}) == 1, text


# ------------------------------------------------------------------ 5. a refused command creates no folder
def test_a_refused_eval_leaves_no_output_folder(tmp_path):
    ds = _dataset(tmp_path / "ds")
    assert _main("eval", "--data", ds, "--pipeline", "nosuchop", "-o", tmp_path / "nd2" / "a" / "x.json") == 2
    assert not (tmp_path / "nd2").exists()
    assert _main("eval", "--data", ds, "--pipeline", "bm25", "-o", tmp_path / "nd2" / "a" / "x.json",
                 "--run", tmp_path / "nd3" / "r.trec") == 0  # (created when written)
    assert (tmp_path / "nd2" / "a" / "x.json").is_file() and (tmp_path / "nd3" / "r.trec").is_file()


def test_an_output_folder_that_cannot_be_created_is_still_refused_before_work(tmp_path, monkeypatch):
    ds = _dataset(tmp_path / "ds")
    (tmp_path / "f").write_text("a file")
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert _main("eval", "--data", ds, "--pipeline", "bm25", "-o", tmp_path / "f" / "a" / "x.json") == 2
    assert "is a file, not a folder" in err.getvalue(), err.getvalue()


# ------------------------------------------------------------------ 6. a TSV of queries' header line
@pytest.mark.parametrize("header", ["query-id\ttext", "qid\ttext", "id\tquery", "query_id\tText"])
def test_a_query_tsvs_header_line_is_not_searched(tmp_path, monkeypatch, header):
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    BM25(k=3).fit(Corpus.from_texts(["vitamin D and bones", "cats sleep"], ids=["d1", "d2"])).save(tmp_path / "ix")
    (tmp_path / "q.tsv").write_text(f"{header}\nq1\tvitamin D\n")
    assert _main("search", "--index", tmp_path / "ix", "--queries", tmp_path / "q.tsv", "-o",
                 tmp_path / "f.json", "--k", "1") == 0
    assert [r["query_id"] for r in json.loads((tmp_path / "f.json").read_text())["results"]] == ["q1"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(f"{header}\nq1\tvitamin D\n".encode())))
    assert _main("search", "--index", tmp_path / "ix", "--queries", "-", "-o", tmp_path / "s.json",
                 "--k", "1") == 0
    assert [r["query_id"] for r in json.loads((tmp_path / "s.json").read_text())["results"]] == ["q1"]


def test_a_query_tsv_of_a_header_alone_is_refused(tmp_path, monkeypatch):
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    BM25(k=3).fit(Corpus.from_texts(["vitamin D and bones", "cats sleep"], ids=["d1", "d2"])).save(tmp_path / "ix")
    (tmp_path / "q.tsv").write_text("query-id\ttext\n")
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert _main("search", "--index", tmp_path / "ix", "--queries", tmp_path / "q.tsv", "--run",
                 tmp_path / "f.trec") == 2
    assert "only a header line (query-id<TAB>text), no query" in err.getvalue(), err.getvalue()


# ------------------------------------------------------------------ 7. compare: one dataset in two folders
def test_compare_takes_one_dataset_in_folders_of_other_names(tmp_path, monkeypatch):
    """``ragkit compare bm25.json r.json`` refused "results are of different datasets (bm25: 'sf', r: 'sf 東京')"
    though both recorded the same qrels and corpus fingerprints."""
    ds = _dataset(tmp_path / "sf")
    shutil.copytree(ds, tmp_path / "sf 東京")
    assert _main("eval", "--data", ds, "--pipeline", "bm25", "-o", tmp_path / "a.json") == 0
    assert _main("eval", "--data", tmp_path / "sf 東京", "--pipeline", "bm25", "-o", tmp_path / "r.json") == 0
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert _main("compare", tmp_path / "a.json", tmp_path / "r.json", "--resamples", "100") == 0, err.getvalue()
    assert "the same qrels and corpus fingerprints" in " ".join(err.getvalue().split()), err.getvalue()
    # another corpus under another name: still refused
    data = json.loads((tmp_path / "r.json").read_text())
    data["settings"]["corpus_fingerprint"] = "blake2b:0000"
    (tmp_path / "r2.json").write_text(json.dumps(data))
    assert _main("compare", tmp_path / "a.json", tmp_path / "r2.json", "--resamples", "100") == 2
    assert "different datasets" in err.getvalue()


# ------------------------------------------------------------------ 8. --version after a command
def test_version_after_a_command_says_ragkit_version(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert _main("eval", "--version") == 2
    said = " ".join(err.getvalue().split())
    assert "ragkit --version)" in said and "ragkit --version eval" not in said, said


# ------------------------------------------------------------------ 9. no file to write: a closed pipe stops it
def _many_queries(tmp_path: Path) -> tuple[Path, Path]:
    """A saved BM25 index of 70 documents that all hold "vitamin", and a TSV of 1,000 queries of it: at
    ``--k 70`` a TREC run of 70,000 lines, which goes to standard output in two blocks (of 65,536 lines)."""
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    BM25(k=70).fit(Corpus.from_texts([f"vitamin bones note {i}" for i in range(70)],
                                     ids=[f"d{i}" for i in range(70)])).save(tmp_path / "ix")
    (tmp_path / "q.tsv").write_text("".join(f"q{i}\tvitamin\n" for i in range(1000)))
    return tmp_path / "ix", tmp_path / "q.tsv"


def _count_blocks(monkeypatch) -> list[int]:
    """Count the blocks of lines handed to standard output (``writelines`` of
    :class:`ragkit.cli._streams._GuardedStream`, dropped or not): one entry per call."""
    from ragkit.cli._streams import _GuardedStream

    calls: list[int] = []
    writelines = _GuardedStream.writelines

    def counted(self, lines):
        if self._name == "stdout":
            calls.append(len(lines))
        return writelines(self, lines)

    monkeypatch.setattr(_GuardedStream, "writelines", counted)
    return calls


def test_search_run_to_stdout_stops_when_its_reader_closed_the_pipe(tmp_path, monkeypatch):
    """``ragkit search --queries big.tsv --run - | head -1``: the run goes nowhere but standard output, so once
    its reader has gone the command stops (141, no message), as before outputs were kept on: it went on
    formatting every later block of the run, for nothing."""
    ix, queries = _many_queries(tmp_path)
    blocks = _count_blocks(monkeypatch)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stdout", _Closed())
    monkeypatch.setattr(sys, "stderr", err)
    assert _main("search", "--index", ix, "--queries", queries, "--k", "70", "--run", "-") == 141
    assert blocks == [65536], blocks  # (the first block failed; the second was never formatted)
    assert "Traceback" not in err.getvalue() and "error" not in err.getvalue(), err.getvalue()


def test_search_tables_stop_when_stdouts_reader_closed_the_pipe(tmp_path, monkeypatch):
    """``ragkit search --index ix q1 q2 ... | head -1``: the tables after the one that failed are not rendered."""
    from ragkit.cli._console import console

    ix, _ = _many_queries(tmp_path)
    printed: list[object] = []
    print_ = console.print
    monkeypatch.setattr(console, "print", lambda *a, **kw: (printed.append(a), print_(*a, **kw))[1])
    monkeypatch.setattr(sys, "stdout", _Closed())
    assert _main("search", "--index", ix, "--k", "3", *[f"vitamin {i}" for i in range(30)]) == 141
    assert len(printed) == 1, len(printed)
    # the console printed nothing stale afterwards (what it held of the failed table was dropped)
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert _main("search", "--index", ix, "--k", "1", "bones") == 0
    assert out.getvalue().count("bones") == 2, out.getvalue()  # (the table's title and its row: one table)


def test_search_with_a_file_to_write_still_carries_on_and_writes_it(tmp_path, monkeypatch):
    """``ragkit search ... -o - --run r.trec | head -1`` (and ``--run - -o f.json``): a file was asked for, so
    the command goes on past the closed pipe, writes it, then exits 141."""
    ix, queries = _many_queries(tmp_path)
    monkeypatch.setattr(sys, "stdout", _Closed())
    assert _main("search", "--index", ix, "--queries", queries, "--k", "70", "-o", "-",
                 "--run", tmp_path / "out" / "r.trec") == 141
    assert (tmp_path / "out" / "r.trec").read_text().count(" Q0 ") == 70_000
    blocks = _count_blocks(monkeypatch)
    assert _main("search", "--index", ix, "--queries", queries, "--k", "70", "--run", "-",
                 "-o", tmp_path / "out" / "f.json") == 141
    assert len(json.loads((tmp_path / "out" / "f.json").read_text())["results"]) == 1000
    assert len(blocks) == 2, blocks  # (carried on to the end of the run: its other output was written first)


def test_stderrs_reader_gone_stops_only_where_stdout_is_the_same_pipe(tmp_path, monkeypatch):
    """``ragkit search --run - 2>&1 | head -0``: standard error's status line fails first, on the pipe standard
    output writes to too, so the command stops there.  Standard error's reader alone gone (``2>&1 >out.trec |
    head``), the run still goes out whole on standard output."""
    ix, queries = _many_queries(tmp_path)
    blocks = _count_blocks(monkeypatch)
    both = _Closed()
    monkeypatch.setattr(sys, "stdout", both)
    monkeypatch.setattr(sys, "stderr", both)
    assert _main("search", "--index", ix, "--queries", queries, "--k", "70", "--run", "-") == 141
    assert blocks == [], blocks
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", _Closed())
    assert _main("search", "--index", ix, "--queries", queries, "--k", "70", "--run", "-") == 141
    assert out.getvalue().count(" Q0 ") == 70_000 and len(blocks) == 2, blocks


def test_a_full_stdout_does_not_stop_a_command_without_files(tmp_path, monkeypatch):
    """A failure that is no closed pipe (a full disk) is said once at the end, as before: the command is not cut
    short for it (``ragkit search --run - > /full/disk/run.trec``)."""
    class Full(_Closed):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def writelines(self, lines: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    ix, queries = _many_queries(tmp_path)
    blocks = _count_blocks(monkeypatch)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stdout", Full())
    monkeypatch.setattr(sys, "stderr", err)
    assert _main("search", "--index", ix, "--queries", queries, "--k", "70", "--run", "-") == 1
    assert len(blocks) == 2 and "No space left on device" in err.getvalue(), err.getvalue()


def test_a_failing_command_keeps_its_status_when_stderr_shares_stdouts_closed_pipe(tmp_path, monkeypatch):
    """``ragkit search --index nope cancer 2>&1 | head``: the error line failed on the closed pipe, which ended the
    command as a closed pipe does (141), hiding the failure from ``set -o pipefail`` scripts.  A command reporting
    its own failure keeps its status: 2 for bad input and a usage error."""
    both = _Closed()
    monkeypatch.setattr(sys, "stdout", both)
    monkeypatch.setattr(sys, "stderr", both)
    assert _main("search", "--index", tmp_path / "nope", "cancer") == 2
    assert _main("search", "--bogus") == 2
    assert _main("eval", "--limit", "-3") == 2
