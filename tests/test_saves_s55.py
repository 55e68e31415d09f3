"""Saves' review s55: a re-save keeps a private folder private; a save whose final flush fails leaves no copy behind
and says why; a folder whose corpus.jsonl holds the given ids but params.json records others is named, not an
IndexError; a mount point is refused before any work, and a failed swap says an earlier save is still there only
where there was one; the parent folder is flushed after the rename (atomic_dir, and atomic_file when durable);
Corpus.save removes the temporary file a killed save left; corpus_fingerprint hashes a corpus's ids once."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ragkit.operator import Operator
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25
from ragkit.types import Corpus

TEXTS = ["red apples are sweet", "green pears and red apples", "the heart pumps blood", "blood cells carry oxygen",
         "apples keep doctors away", "oxygen for the heart"]


@pytest.fixture
def small() -> Corpus:
    return Corpus.from_texts(TEXTS)


def _beside(folder: Path) -> list[str]:
    """What a save left beside ``folder``: its temporary folders and earlier saves moved aside."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---------------------------------------------------------------- 1: a re-save keeps the folder's permissions
@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_a_resave_keeps_a_private_folder_private(small, tmp_path):
    folder, pipe = tmp_path / "ix", tmp_path / "pipe"
    old = os.umask(0o022)
    try:
        BM25(k=3).fit(small).save(folder)
        Pipeline([BM25(k=3)]).fit(small).save(pipe)
        assert _mode(folder) == 0o755  # (a new save: a plain mkdir's permissions)
        os.chmod(folder, 0o700)
        os.chmod(pipe, 0o700)
        BM25(k=4).fit(small).save(folder)
        Pipeline([BM25(k=4)]).fit(small).save(pipe)
    finally:
        os.umask(old)
    assert _mode(folder) == 0o700  # (was 0o755: readable by others again)
    assert _mode(pipe) == 0o700
    assert Operator.load(folder).params.k == 4
