"""Review of the s50 CLI fixes (part D): one reset of the command-line's state per command, the empty-path check of
``ask --cache-dir`` shared with the other path options, ``--run-tag`` recorded only where a run file holds it, a
cached archive's sub-dataset lacking a split named from its download folder, and one saved pipeline's step refused
from the facts its error carries."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from conftest import TINY_DOCS as DOCS, ClosedPipe as _Closed, cli as _cli, file_mirror as _mirror, tiny_beir as _tiny


def _index(root: Path) -> Path:
    """A fitted, saved BM25 pipeline over :data:`DOCS`."""
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    pipe = Pipeline([BM25()])
    pipe.fit(Corpus([d[0] for d in DOCS], [d[2] for d in DOCS], [d[1] for d in DOCS]))
    pipe.save(root)
    return root



# ------------------------------------------------------------------ 1. each command starts afresh


@pytest.mark.parametrize("first", [["-o", "{tmp}/r.json"], ["--index", "{tmp}/nope"]],
                         ids=["a file written", "a failure"])
def test_a_command_of_the_app_called_directly_does_not_inherit_the_last_ones_state(first, tmp_path, monkeypatch):
    """A program calling the app itself, command after command: the first one's ``-o`` file (or its failure being
    reported) was still on record in the second, which has no file to write, so its closed pipe did not stop it
    (it went on, its writes dropped); it stops there, as under :func:`ragkit.cli.main`."""
    from ragkit.cli import app
    from ragkit.cli._streams import _GuardedStream, _ReaderGone

    idx = _index(tmp_path / "idx")
    for name in ("stdout", "stderr"):
        monkeypatch.setattr(sys, name, io.StringIO())
    app(["search", "--index", str(idx), "vitamin", *(a.format(tmp=tmp_path) for a in first)],
        prog_name="ragkit", standalone_mode=False)
    monkeypatch.setattr(sys, "stdout", _GuardedStream(_Closed(), "stdout"))
    with pytest.raises(_ReaderGone):
        app(["search", "--index", str(idx), "vitamin"], prog_name="ragkit", standalone_mode=False)


# ------------------------------------------------------------------ 7. --run-tag recorded with a run file only


def test_evals_json_records_a_run_tag_only_with_a_run_file(tmp_path):
    """``--run-tag`` without ``--run`` is refused as one that "would be ignored"; the JSON's settings recorded the
    tag (the default 'ragkit') of a run file that was never written: ``run_tag`` is now None without ``--run``."""
    import json

    data = _tiny(tmp_path / "data")
    res = _cli("eval", "--data", data, "-p", "bm25", "-o", tmp_path / "a.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "a.json").read_text())["settings"]["run_tag"] is None
    res = _cli("eval", "--data", data, "-p", "bm25", "-o", tmp_path / "b.json", "--run", tmp_path / "b.trec",
               "--run-tag", "mine")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b.json").read_text())["settings"]["run_tag"] == "mine"
    assert (tmp_path / "b.trec").read_text().split()[-1] == "mine"


# ------------------------------------------------------------------ 8. a cached archive's sub-dataset lacking a split


def test_a_cached_archives_sub_dataset_lacking_a_split_names_the_file_in_the_download(tmp_path, monkeypatch):
    """A cqadupstack-style archive's sub-dataset (``cq/a``) lacking ``qrels/test.tsv`` in the cache: the advice named
    ``qrels/test.tsv`` of the archive's folder (``$RAGKIT_CACHE/beir/cq``), where there is none; it names
    ``a/qrels/test.tsv``, the file's place in that download."""
    import io
    import zipfile

    www = _mirror(tmp_path, monkeypatch)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for sub in ("a", "b"):
            src = _tiny(tmp_path / "src" / sub)
            for f in sorted(src.rglob("*")):
                if f.is_file():
                    z.write(f, f"cq/{sub}/{f.relative_to(src).as_posix()}")
    (www / "cq.zip").write_bytes(buf.getvalue())
    assert _cli("eval", "--data", "cq/a", "-p", "bm25").exit_code == 0
    cached = tmp_path / "cache" / "beir" / "cq"
    (cached / "a" / "qrels" / "test.tsv").unlink()
    res = _cli("eval", "--data", "cq/a", "-p", "bm25")
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "no qrels for split 'test'" in text and (
        f"({cached} is ragkit's download of 'cq', in its cache: if a/qrels/test.tsv was removed from it, delete that "
        "folder and the next load downloads it again)") in text, text
