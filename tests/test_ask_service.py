"""``ragkit ask`` and the generate step as a service: a chunk-cache folder that cannot be written is a clear
error before any work, a query that retrieved nothing is not answered from no source, Ctrl-C ends the answer
cleanly, and the answer's prefill cost is shown.  No language model is loaded: fake engines stand for it."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pytest

from ragkit.errors import ArtifactError

DOCS = [("d1", "Vitamin D", "Vitamin D prevents fractures in elderly people."),
        ("d2", "Cats", "Cats sleep most of the day."),
        ("d3", "Dogs", "Dogs bark at strangers.")]


def _cli(*args: object):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _corpus_file(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in DOCS),
                    encoding="utf-8")
    return path


def _read_only(monkeypatch, folder: Path) -> None:
    """``folder`` answers as a folder on a read-only file system would (tests run as root here, whom a
    ``chmod 555`` does not stop): ``os.access`` says it cannot be written, and a file written there fails
    with EROFS."""
    real_access, real_write = os.access, Path.write_text

    def access(path, mode, *a, **kw):
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real_access(path, mode, *a, **kw)

    def write_text(self, *a, **kw):
        if self.parent == folder:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_write(self, *a, **kw)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(Path, "write_text", write_text)


class _Engine:
    """Stands for the local LLM: streams ``pieces``, then raises ``then`` (if any); records the questions."""

    def __init__(self, pieces=("ok",), then: BaseException | None = None, prefill=None) -> None:
        self.pieces, self.then, self.pre, self.asked = list(pieces), then, prefill, []

    def generate(self, question, chunks, *, on_token=None, on_prefill=None, **kw) -> str:
        self.asked.append((question, list(chunks)))
        if self.pre is not None and on_prefill is not None:
            on_prefill(self.pre)
        for p in self.pieces:
            if on_token is not None:
                on_token(p)
        if self.then is not None:
            raise self.then
        return "".join(self.pieces)


def _fake_engine(monkeypatch, engine: _Engine) -> None:
    from ragkit.generators.operator import Generate

    monkeypatch.setattr(Generate, "_fit", lambda self, corpus, train, upstream: setattr(self, "engine_", engine))


# ---------------------------------------------------------------- a chunk-cache folder that cannot be written
def test_atomic_file_cleanup_failing_too_raises_the_writes_own_error(tmp_path, monkeypatch):
    """Old code: the temporary file's deletion failed as well (EROFS) and that error, chained, was raised."""
    from ragkit._files import atomic_file

    def unlink(self, missing_ok=False):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "unlink", unlink)
    failure = OSError(errno.EROFS, os.strerror(errno.EROFS), "the write")
    with pytest.raises(OSError) as got:
        with atomic_file(tmp_path / "x.json"):
            raise failure
    assert got.value is failure and got.value.__context__ is None
    assert not (tmp_path / "x.json").exists()


def test_a_chunk_cache_on_a_read_only_folder_is_an_artifact_error_naming_it(tmp_path, monkeypatch):
    """Old code: ``OSError: [Errno 30] Read-only file system: '.manifest.<pid>-<hex>.tmp.json'``, twice chained."""
    from ragkit.caches.chunk_kv import ChunkKVCache, check_cache_dir

    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    with pytest.raises(ArtifactError, match=rf"{ro}: the chunk-cache folder \(disk_dir\) cannot be written: "):
        check_cache_dir(ro)
    with pytest.raises(ArtifactError, match="cannot be written") as got:
        ChunkKVCache("m", "t", disk_dir=ro)
    assert got.value.__context__ is None or not isinstance(got.value.__context__, OSError)
    below = ro / "new" / "kv"  # created at the open: its nearest existing folder is the one that must be writable
    with pytest.raises(ArtifactError, match=rf"{below}: .* cannot be written \(its nearest existing folder {ro}"):
        check_cache_dir(below)
    assert list(ro.iterdir()) == []


def test_an_existing_chunk_cache_on_a_read_only_folder_still_serves_with_a_warning(tmp_path, monkeypatch, caplog):
    """A chunk cache shipped read-only (an image, a shared mount) is read, not refused: only new chunks are lost."""
    from ragkit.caches.chunk_kv import ChunkKVCache, check_cache_dir

    folder = tmp_path / "shipped"
    ChunkKVCache("m", "t", disk_dir=folder)
    _read_only(monkeypatch, folder)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert check_cache_dir(folder)["model_id"] == "m"
        ChunkKVCache("m", "t", disk_dir=folder)  # opens: nothing to write for a manifest already there
    assert "its stored chunks are reused, chunks computed now are not kept" in caplog.text


def test_a_manifest_write_that_fails_is_an_artifact_error_naming_the_folder_and_why(tmp_path, monkeypatch):
    """The folder looked writable (an ACL, a file system filled up or remounted meanwhile), the write failed."""
    from ragkit.caches.chunk_kv import ChunkKVCache

    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    monkeypatch.setattr(os, "access", lambda *a, **kw: True)
    with pytest.raises(ArtifactError, match=rf"{ro}: could not write the chunk-cache manifest manifest.json "
                                            r"\(OSError: Read-only file system\)"):
        ChunkKVCache("m", "t", disk_dir=ro)
    assert list(ro.iterdir()) == []


def test_ask_refuses_a_read_only_cache_dir_before_the_fit(tmp_path, monkeypatch):
    """Old code: the fit, the model's load, then a traceback as the chunk cache opened."""
    from ragkit.pipelines import Pipeline

    engine = _Engine()
    _fake_engine(monkeypatch, engine)
    fitted: list[int] = []
    real_fit = Pipeline.fit
    monkeypatch.setattr(Pipeline, "fit", lambda self, *a, **kw: fitted.append(1) or real_fit(self, *a, **kw))
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    res = _cli("ask", "-p", "bm25", "--data", _corpus_file(tmp_path / "docs"), "--cache-dir", ro, "Do cats sleep?")
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert f"--cache-dir {ro}: the chunk-cache folder (disk_dir) cannot be written" in out, out
    assert "Traceback" not in res.output and fitted == [] and engine.asked == []


# ---------------------------------------------------------------- a query that retrieved nothing
def test_generate_does_not_answer_a_query_that_retrieved_nothing(monkeypatch):
    """Old code: the model got no chunk and made an answer up ("What?", "You're a helpful assistant...")."""
    from ragkit.generators.operator import NO_DOCUMENT, Generate
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    engine = _Engine(pieces=("cats", " sleep"))
    _fake_engine(monkeypatch, engine)
    corpus = Corpus.from_records([{"_id": i, "title": t, "text": x} for i, t, x in DOCS])
    rag = (BM25(k=5) | Generate(top_k=2)).fit(corpus)
    streamed: list[tuple[int, str]] = []
    run = rag.search(["", "do cats sleep", "xyzzyq plugh", "dogs bark"],
                     generate={"on_token": lambda i, p: streamed.append((i, p))})
    assert run.values["answer"] == ["", "cats sleep", "", "cats sleep"]
    assert run.values["answer_skipped"] == [NO_DOCUMENT, None, NO_DOCUMENT, None]
    assert [q for q, _ in engine.asked] == ["do cats sleep", "dogs bark"]
    assert all(chunks for _, chunks in engine.asked)
    assert sorted({i for i, _ in streamed}) == [1, 3]
    assert "answer_skipped" in (Generate.__doc__ or "")


# ---------------------------------------------------------------- Ctrl-C, and the prefill's cost
def test_ctrl_c_during_ask_ends_the_line_says_interrupted_and_exits_130(tmp_path, monkeypatch):
    """Old code: click's "Aborted!", exit 1, the partial answer's line left open, no sources."""
    _fake_engine(monkeypatch, _Engine(pieces=("Cats sleep",), then=KeyboardInterrupt()))
    res = _cli("ask", "-p", "bm25", "--data", _corpus_file(tmp_path / "docs"), "Do cats sleep?")
    assert res.exit_code == 130, res.output
    assert res.stdout.startswith("Cats sleep\n") and "sources: d2 (Cats)" in res.stdout, res.stdout
    assert res.stderr.strip() == "interrupted" and "Aborted" not in res.output


def test_ask_shows_what_the_prefill_cost_and_reused(tmp_path, monkeypatch):
    """Old code: no figure said whether the chunk cache was used."""
    from ragkit.generators.local import PrefillCost

    pre = PrefillCost("cachecraft", 0.314, chunks=5, chunks_reused=5, n_prompt=938, n_computed=16.4)
    _fake_engine(monkeypatch, _Engine(pieces=("Cats sleep",), prefill=pre))
    res = _cli("ask", "-p", "bm25", "--data", _corpus_file(tmp_path / "docs"), "Do cats sleep?")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("Cats sleep\n") and "sources: d2 (Cats)" in res.stdout
    assert res.stderr.strip() == "prefill 0.31 s · 5/5 chunks reused · 16/938 prompt tokens computed"


def test_a_prefills_cost_counts_the_chunks_each_mode_reused():
    from ragkit.generators.local import Prefill

    def cost(mode, fractions, hits=0):
        return str(Prefill(None, [], [], 90, 30, 1.0, mode, fractions, hits, 0).cost)  # type: ignore[arg-type]

    assert cost("prefix", [0.0, 0.5, 1.0]) == "prefill 1.00 s · 2/3 chunks reused · 30/90 prompt tokens computed"
    assert cost("cachecraft", [0.1, 0.2, 1.0], hits=2).startswith("prefill 1.00 s · 2/3 chunks reused")
    assert cost("full", [1.0]) == "prefill 1.00 s · 0/1 chunk reused · 30/90 prompt tokens computed"


def test_generate_writes_each_answers_prefill_cost_to_the_run(monkeypatch):
    """Old code: the cost stayed inside the engine (``ragkit ask`` wrapped the engine's prefill to see it)."""
    from ragkit import Corpus, Pipeline
    from ragkit.generators import Generate
    from ragkit.generators.local import PrefillCost
    from ragkit.retrievers import BM25

    pre = PrefillCost("naive", 0.5, chunks=1, chunks_reused=0, n_prompt=40, n_computed=40)
    _fake_engine(monkeypatch, _Engine(prefill=pre))
    corpus = Corpus.from_records([{"id": "d1", "text": "cats sleep a lot"}, {"id": "d2", "text": "dogs bark"}])
    pipe = Pipeline([BM25(), Generate(top_k=1)]).fit(corpus)
    run = pipe.search(["do cats sleep", "zebra"])
    assert run.values["prefill"] == [pre, None]  # the second query matched nothing: the model did not run
    assert run.values["answer_skipped"] == [None, "no document retrieved"]
