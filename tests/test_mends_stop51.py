"""Mends of a review of stop 51's changes: qrels whose named header's last column is left empty, BEIR's own header
over trec_eval lines, download failures exiting 1 whatever their message, overwrites that neither copy setuid
bits nor take the file from its owner, ``--queries -`` after a byte-order mark, and the exit-status epilog on
every command's ``--help``."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import file_mirror as _www

from ragkit.errors import DataError
from ragkit.eval.beir import DownloadError, read_qrels


def _cli(*args: object, input: str | bytes | None = None):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"}, input=input)


# ------------------------------------------------------------------ 1. a named header's last column left empty
def test_a_row_leaving_the_named_headers_last_column_empty_reads(tmp_path):
    """``q1<TAB>d1<TAB>1<TAB>`` under ``query-id corpus-id score annotators`` was refused ("expected 4 columns,
    got 3"): its trailing tab was stripped before the columns were counted."""
    f = tmp_path / "q.tsv"
    f.write_text("query-id\tcorpus-id\tscore\tannotators\nq1\td1\t1\t\nq2\td2\t2\t3\t\n")  # (and a tab past them)
    assert read_qrels(f) == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    f.write_text("corpus-id\tquery-id\tannotators\tscore\nd1\tq1\t\t1\n")  # an empty column inside: by name too
    assert read_qrels(f) == {"q1": {"d1": 1}}
    f.write_text("query-id\tcorpus-id\tscore\tannotators\nq1\td1\t1\nq2\td2\t1\t\n")  # a column short: refused
    with pytest.raises(DataError, match=re.escape(f"{f}:2: expected 4 tab-separated columns 'query-id corpus-id "
                                                  "score annotators', as the header on line 1 names them, got 3")):
        read_qrels(f)
    f.write_text("corpus-id\tquery-id\tannotators\tscore\nd1\tq1\t3\t\n")  # the score left empty: said
    with pytest.raises(DataError, match=re.escape(f"{f}:2: relevance '' is not a finite number")):
        read_qrels(f)


# ------------------------------------------------------------------ 2. BEIR's own header over trec_eval lines
def test_beirs_own_header_over_trec_eval_lines_reads_them_as_before(tmp_path):
    """``query-id corpus-id score`` over ``q1 0 d1 1`` was refused ("expected 3 columns, got 4") once headers were
    read by name; it read as ``{'q1': {'d1': 1}}`` before, as it does again."""
    f = tmp_path / "q.tsv"
    f.write_text("query-id\tcorpus-id\tscore\nq1 0 d1 1\nq2\t0\td2\t2\n")
    assert read_qrels(f) == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    f.write_text("Query_ID\tCorpus-ID\tScore\nq1 0 d1 1\nq2\td2\t1\n")  # (case and '_' aside, the same header)
    assert read_qrels(f) == {"q1": {"d1": 1}, "q2": {"d2": 1}}
    f.write_text("corpus-id\tquery-id\tscore\nd1\tq1\t1\n")  # another order: still read by name
    assert read_qrels(f) == {"q1": {"d1": 1}}


# ------------------------------------------------------------------ 3. a failed download exits 1


def _damaged_zip(name: str) -> bytes:
    """A BEIR archive ``<name>/...`` whose corpus fails its CRC check (a stored byte changed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{name}/corpus.jsonl", json.dumps({"_id": "d1", "text": "cells divide"}) + "\n")
        z.writestr(f"{name}/queries.jsonl", json.dumps({"_id": "q1", "text": "cells"}) + "\n")
        z.writestr(f"{name}/qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    data = bytearray(buf.getvalue())
    at = data.index(b'{"_id": "d1"')
    data[at + 2] ^= 1
    return bytes(data)


@pytest.mark.parametrize("kind", ["not_a_zip", "damaged", "missing"])
def test_a_download_that_fails_exits_1_whatever_its_message(tmp_path, monkeypatch, kind):
    """A download of no zip archive ("not a zip archive"), or a damaged one ("the zip archive is damaged"), exited
    2, as bad input would: the exit status was read off the message, which matched neither."""
    www = _www(tmp_path, monkeypatch)
    said = {"not_a_zip": "sf.zip: not a zip archive", "damaged": "sf.zip: the zip archive is damaged",
            "missing": "could not download BEIR dataset 'sf'"}[kind]
    if kind == "not_a_zip":
        (www / "sf.zip").write_text("<html>moved</html>")
    elif kind == "damaged":
        (www / "sf.zip").write_bytes(_damaged_zip("sf"))
    res = _cli("eval", "--data", "sf", "-p", "bm25")
    assert res.exit_code == 1 and said in res.output and "Traceback" not in res.output, res.output
    from ragkit import load_beir

    with pytest.raises(DownloadError, match=re.escape(said)):  # (a DataError still: DownloadError subclasses it)
        load_beir("sf")


def test_a_local_archive_that_is_no_zip_is_still_bad_input(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "sf.zip").write_text("<html>moved</html>")
    res = _cli("eval", "--data", tmp_path / "sf.zip", "-p", "bm25")
    assert res.exit_code == 2 and "sf.zip: not a zip archive" in res.output, res.output


# ------------------------------------------------------------------ 4. an overwrite's permissions and owner
def test_an_overwrite_copies_no_setuid_bit(tmp_path):
    from ragkit._files import atomic_file

    f = tmp_path / "r.json"
    f.write_text("{}")
    os.chmod(f, 0o6755)  # setuid and setgid
    with atomic_file(f) as tmp:
        tmp.write_text('{"a": 1}')
    assert stat.S_IMODE(f.stat().st_mode) == 0o755 and f.read_text() == '{"a": 1}'


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file away takes root")
def test_an_overwrite_keeps_the_files_owner_and_group(tmp_path):
    """A ``chmod 600`` file of uid 1234 became root's (still 600) once root wrote it again: its owner was locked
    out of it."""
    from ragkit._files import atomic_file

    f = tmp_path / "r.json"
    f.write_text("{}")
    os.chown(f, 1234, 5678)
    os.chmod(f, 0o600)
    with atomic_file(f) as tmp:
        tmp.write_text('{"a": 1}')
    st = f.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o600)


def test_an_overwrite_that_cannot_give_the_file_away_still_writes_it(tmp_path, monkeypatch):
    """Only root may give a file away: another user's overwrite keeps its own ids, silently, and the mode."""
    from ragkit import _files

    f = tmp_path / "r.json"
    f.write_text("{}")
    os.chmod(f, 0o640)
    real = os.stat

    def other_owner(path, *a, **k):
        st = real(path, *a, **k)
        if Path(path) != f:
            return st
        fields = list(st)
        fields[stat.ST_UID], fields[stat.ST_GID] = st.st_uid + 1, st.st_gid + 1
        return os.stat_result(fields)

    def refused(*a, **k):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(_files.os, "stat", other_owner)
    monkeypatch.setattr(_files.os, "chown", refused)
    with _files.atomic_file(f) as tmp:
        tmp.write_text('{"a": 1}')
    monkeypatch.undo()
    assert f.read_text() == '{"a": 1}' and stat.S_IMODE(f.stat().st_mode) == 0o640


# ------------------------------------------------------------------ 5. --queries - after a byte-order mark
def test_search_stdin_json_lines_after_a_byte_order_mark(tmp_path, monkeypatch):
    """``printf '\\xef\\xbb\\xbf{"_id": "a", "text": "cancer"}\\n' | ragkit search --queries -`` searched the whole
    JSON line as query "1": the mark hid its ``{``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds" / "qrels").mkdir(parents=True)
    (tmp_path / "ds" / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in [("d1", "cancer cells"), ("d2", "cats")]))
    (tmp_path / "ds" / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "cancer"}) + "\n")
    for split in ("test", "train"):
        (tmp_path / "ds" / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    res = _cli("train", "--data", "ds", "-p", "bm25", "--out", "idx", "--no-report")
    assert res.exit_code == 0, res.output
    for text in (b'\xef\xbb\xbf{"_id": "a", "text": "cancer"}\n', b"\xef\xbb\xbfa\tcancer\n"):
        res = _cli("search", "--index", "idx", "--queries", "-", "-o", "-", input=text)
        assert res.exit_code == 0, res.output
        got = json.loads(res.stdout)["results"]
        assert [(r["query_id"], r["query"]) for r in got] == [("a", "cancer")], res.stdout


# ------------------------------------------------------------------ 6. the exit-status epilog on each --help
@pytest.mark.parametrize("command", ["eval", "train", "search", "ask", "validate", "compare"])
def test_every_commands_help_says_the_exit_statuses(command):
    res = _cli(command, "--help")
    assert res.exit_code == 0 and "Exit status: 0 success; 2 usage error" in " ".join(res.output.split()), res.output


# ------------------------------------------------------------------ 7. notes on stderr, stdout's failed writes
def _script(*args: object, cwd: Path, stdout: object) -> "subprocess.Popen[bytes]":
    """``python -m ragkit ARGS`` as a script runs it, its stdout ``stdout`` (a file, or ``subprocess.PIPE``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.Popen([sys.executable, "-m", "ragkit", *map(str, args)], stdout=stdout, stderr=subprocess.PIPE,
                            cwd=cwd, env={**env, "RAGKIT_CACHE": str(cwd / "cache")})


def test_validates_notes_go_to_stderr(tmp_path, monkeypatch):
    """``ragkit validate``'s notes (a top_k deeper than the retriever before it, a model's first download) were
    printed on stdout, among its result."""
    import ragkit.encoders.sentence as sentence

    monkeypatch.setattr(sentence, "model_note", lambda m: f"{m}: the first load downloads it")
    f = tmp_path / "p.yaml"
    f.write_text("pipeline:\n  - bm25: {k: 10}\n  - top_k: {k: 100}\n  - mmr: {k: 5}\n")
    res = _cli("validate", f)
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"ok {f}: 3 operators") and "note:" not in res.stdout, res.stdout
    assert "note: pipeline[1].top_k keeps k: 100" in res.stderr and "first load downloads it" in res.stderr


def test_searchs_note_on_a_skipped_generate_step_goes_to_stderr(tmp_path):
    from ragkit.generators.operator import Generate
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    corpus = Corpus.from_texts(["vitamin D and bones", "cats sleep"], ids=["d1", "d2"])
    pipe = Pipeline([BM25(k=3), Generate()])
    pipe.steps[0].fit(corpus)
    pipe.corpus_ = corpus
    pipe.save(tmp_path / "rag")
    res = _cli("search", "--index", tmp_path / "rag", "vitamin D")
    assert res.exit_code == 0, res.output
    assert "generate step is not run" not in res.stdout and "d1" in res.stdout, res.stdout
    assert "note: the pipeline's generate step is not run" in res.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("args", [("validate", "bm25"), ("--version",)])
def test_stdout_that_cannot_be_written_is_one_error_line_and_status_1(tmp_path, args):
    """Standard output on a full disk was a 43-line traceback ending in OSError: one line now, as a file's."""
    with open("/dev/full", "w") as full:
        proc = _script(*args, cwd=tmp_path, stdout=full)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert err.decode() == "error: standard output: could not be written: No space left on device\n"


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly_with_141(tmp_path):
    """``ragkit search ... --run - | head -1`` exited 1 (click's broken-pipe handler), or 0 when the run fitted
    the pipe: 141 (128 + SIGPIPE) now, without a message, nor Python's "Exception ignored" at its exit.  The run
    here (megabytes) cannot fit the pipe, so its write fails whenever the reader closes it."""
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    BM25(k=4).fit(Corpus.from_texts(["vitamin D and bones", "cats sleep", "dogs bark", "hip bones"],
                                    ids=["d1", "d2", "d3", "d4"])).save(tmp_path / "ix")
    (tmp_path / "q.txt").write_text("vitamin D bones cats sleep dogs bark hip\n" * 20_000)
    proc = _script("search", "--index", "ix", "--queries", "q.txt", "--run", "-", cwd=tmp_path,
                   stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert first.split()[1] == b"Q0", first  # (a run line came)
    assert "error" not in err and "Traceback" not in err and "Exception ignored" not in err, err


def _bm25_index(folder: Path) -> None:
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    BM25(k=4).fit(Corpus.from_texts(["vitamin D and bones", "cats sleep", "dogs bark", "hip bones"],
                                    ids=["d1", "d2", "d3", "d4"])).save(folder)


def test_one_long_json_write_to_a_closed_pipe_is_141_too(tmp_path):
    """``search ... -o - | head -1`` exited 0: the JSON went out in one write of megabytes, which a closed pipe
    cuts short without an error.  It goes out in pieces now, and the second piece fails."""
    _bm25_index(tmp_path / "ix")
    (tmp_path / "q.txt").write_text("vitamin D bones cats sleep dogs bark hip\n" * 20_000)
    proc = _script("search", "--index", "ix", "--queries", "q.txt", "-o", "-", cwd=tmp_path, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_no_standard_output_at_all_is_no_crash(tmp_path):
    """With file descriptor 1 closed (``>&-``, a service) ``sys.stdout`` is None; the guard wrapped None and
    every command failed with an AttributeError traceback."""
    _bm25_index(tmp_path / "ix")
    env = {**os.environ, "RAGKIT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "ragkit", "search", "--index", "ix", "bones"], cwd=tmp_path,
                          env=env, stderr=subprocess.PIPE, pass_fds=(), preexec_fn=lambda: os.close(1), timeout=120)
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr


def test_main_passes_on_what_a_file_likes_write_returns(tmp_path, monkeypatch):
    """A stdout whose ``write`` returns None (many file-likes do) failed ``int(None)`` in the guard."""
    import contextlib

    from ragkit.cli import main

    class Sink:
        def __init__(self) -> None:
            self.parts: list[str] = []

        def write(self, text: str) -> None:
            self.parts.append(text)

        def flush(self) -> None:
            pass

    _bm25_index(tmp_path / "ix")
    monkeypatch.chdir(tmp_path)
    sink = Sink()
    with contextlib.redirect_stdout(sink):  # type: ignore[type-var]
        status = main(["search", "--index", "ix", "bones", "-o", "-"])
    assert status == 0 and '"d1"' in "".join(sink.parts), sink.parts


def test_the_exit_status_epilog_names_141():
    res = _cli("search", "--help")
    assert "141 standard output's reader closed the pipe" in " ".join(res.output.split()), res.output


def test_compare_given_an_operator_name_says_how_to_evaluate_it(tmp_path, monkeypatch):
    """``ragkit compare a.json bm25`` said "bm25: no such file"; an operator's name is a pipeline, as a YAML file
    or a saved folder is: the ``ragkit eval`` command that writes its results."""
    monkeypatch.chdir(tmp_path)
    res = _cli("compare", "a.json", "bm25")
    assert res.exit_code == 2
    said = " ".join(res.output.split())
    assert "RESULTS: bm25 is an operator name, not results: evaluate it first" in said, res.output
    assert ("ragkit eval --data DATASET --split test --pipeline bm25 -o bm25.json ragkit compare a.json bm25.json"
            in said), res.output
    res = _cli("compare", "bm25", "dense")
    assert "RESULTS: bm25 and dense are operator names, not results: evaluate each first" in " ".join(
        res.output.split()), res.output
    res = _cli("compare", "a.json", "bm25x")  # no operator: no such file, as before
    assert res.exit_code == 2 and "RESULTS: a.json, bm25x: no such file" in res.output, res.output
