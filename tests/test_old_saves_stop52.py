"""Folders of earlier ragkit versions say what to do: a dense index in the earliest layout (``vectors.npy``, before
commit f4f34ac) names itself and gives the command that refits and saves it; a folder from before checksums gives
the shell command that loads it unchecked and saves it (the command line has no ``verify=False``); an index
manifest from a newer ragkit says to upgrade, as the operator-level check does."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ragkit._files import folder_checksums
from ragkit._saves import CHECKSUMS, FORMAT_VERSION
from ragkit.errors import ArtifactError
from ragkit.operator import Operator
from ragkit.pipelines import Pipeline
from ragkit.pipelines.yaml import walk_leaves
from ragkit.retrievers import BM25, Dense
from ragkit.retrievers._index_files import FORMAT
from ragkit.types import Corpus

TEXTS = ["red apples are sweet", "green pears and red apples", "the heart pumps blood", "blood cells carry oxygen",
         "apples keep doctors away", "oxygen for the heart", "red red blood of the heart", "apples apples apples"]
QUERIES = ["red apples", "heart blood", "oxygen"]
# the parameters a dense params.json held in the earliest saves (the folder a reviewer kept from commit 9e8e37d)
OLD_DENSE_PARAMS = ("batch_size", "filter", "k", "model", "search")
HYBRID = """
pipeline:
- parallel:
    branches:
    - bm25: {}
    - dense: {k: 5}
    fuse:
      rrf: {}
- top_k: {k: 5}
"""


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.from_texts(TEXTS)


def _ranked(op) -> tuple[list[list[int]], list[float]]:
    run = op.search(QUERIES)
    return [r.rows.tolist() for r in run.rankings], np.round(np.concatenate(run.scores), 5).tolist()


def _earliest_dense(step: Path, vectors: np.ndarray) -> None:
    """Rewrite the dense folder ``step`` (a current save) as the first commits wrote it: ``params.json`` (format 1,
    the five parameters of then), ``vectors.npy`` and, for an operator saved on its own, ``corpus.jsonl``."""
    meta = json.loads((step / "params.json").read_text())
    for p in step.iterdir():
        if p.name not in ("params.json", "corpus.jsonl"):
            p.unlink()
    old = {"fitted": True, "format_version": 1, "operator": "dense", "ragkit_version": "0.1.0",
           "params": {k: meta["params"][k] for k in OLD_DENSE_PARAMS}}
    (step / "params.json").write_text(json.dumps(old, indent=2, sort_keys=True))
    np.save(step / "vectors.npy", np.asarray(vectors, dtype=np.float32), allow_pickle=False)


def _earliest_pipeline(folder: Path, vectors: np.ndarray) -> Path:
    """Rewrite the saved pipeline ``folder``'s dense step into the earliest layout, and its manifest as then
    (format 1, the SHA-256 of every file): it verifies, as the reviewer's folder does.  Returns the step."""
    manifest = json.loads((folder / "manifest.json").read_text())
    (rel,) = [rel for node, rel in manifest["nodes"].items() if node.endswith(".dense")]
    _earliest_dense(folder / rel, vectors)
    digests = {k: v for k, v in folder_checksums(folder).items() if k != "manifest.json"}
    (folder / "manifest.json").write_text(json.dumps(
        {"fitted": True, "format_version": 1, "nodes": manifest["nodes"], "ragkit_version": "0.1.0",
         "sha256": digests}, indent=2, sort_keys=True))
    return folder / rel


def _run_suggested(message: str, cwd: Path) -> None:
    """Run the ``python -c '...'`` command that ``message`` ends with (``python``: this interpreter) from ``cwd``."""
    argv = shlex.split(message.split("from a shell: ", 1)[1])
    assert argv[:2] == ["python", "-c"] and len(argv) == 3, argv
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-1500:]


# ---------------------------------------------------------------- F1: a dense index in the earliest layout
def test_an_earliest_dense_folder_says_so_and_how_to_refit_it(corpus, tmp_path):
    dense = Dense(k=5).fit(corpus)
    before = _ranked(dense)
    folder = tmp_path / "it's a dense save"  # (a quote and a space: the command quotes the path)
    dense.save(folder)
    _earliest_dense(folder, dense.vectors_)
    with pytest.raises(ArtifactError, match=r"no checksums\.json .*from a shell: python -c"):
        Operator.load(folder)
    with pytest.raises(ArtifactError) as err:
        Operator.load(folder, verify=False)
    message = str(err.value)
    assert message.startswith(f"{folder}: holds a dense index in ragkit's earliest layout (vectors.npy, written by "
                              "the ragkit of 2026-11-23 before commit f4f34ac), which this ragkit does not read")
    assert "file not found" not in message and "corpus.jsonl" in message and "params.json" in message
    _run_suggested(message, tmp_path.parent)  # refits on the saved corpus.jsonl and saves in place
    again = Operator.load(folder)  # checksums and all
    assert isinstance(again, Dense) and again.params.k == 5
    assert _ranked(again) == before


def test_an_earliest_pipeline_says_so_from_python_and_the_command_line(corpus, tmp_path):
    pipe = Pipeline.from_yaml(HYBRID).fit(corpus)
    before = _ranked(pipe)
    folder = tmp_path / "hybrid"
    pipe.save(folder)
    vectors = next(leaf for _, leaf in walk_leaves(pipe, "pipeline") if isinstance(leaf, Dense)).vectors_
    step = _earliest_pipeline(folder, vectors)
    for verify in (True, False):  # (its manifest's checksums hold: the dense step is what cannot be read)
        with pytest.raises(ArtifactError) as err:
            Operator.load(folder, verify=verify)
        message = str(err.value)
        assert message.startswith(f"{step}: holds a dense index in ragkit's earliest layout (vectors.npy"), message
        assert f"fit the pipeline at {folder} again on its documents (its corpus.jsonl" in message
        assert "file not found" not in message
    cli = subprocess.run([sys.executable, "-m", "ragkit", "search", "--index", str(folder), "red apples"],
                         capture_output=True, text=True)
    assert cli.returncode != 0 and "earliest layout (vectors.npy" in cli.stderr + cli.stdout
    assert "index.json: file not found" not in cli.stderr + cli.stdout
    _run_suggested(message, tmp_path)  # refits pipeline.yaml on corpus.jsonl and saves in place
    again = Operator.load(folder)
    assert isinstance(again, Pipeline) and _ranked(again) == before


def test_a_current_dense_folder_missing_its_index_is_still_a_missing_file(corpus, tmp_path):
    """Only the earliest layout's vectors.npy (and no index.json) reads as that layout: a damaged current save is
    still the missing file."""
    Dense(k=5).fit(corpus).save(tmp_path / "d")
    (tmp_path / "d" / "index.json").unlink()
    with pytest.raises(ArtifactError, match=r"index\.json: file not found") as err:
        Operator.load(tmp_path / "d", verify=False)
    assert "earliest layout" not in str(err.value)


# ---------------------------------------------------------------- F3: before checksums, from a shell
def test_a_folder_from_before_checksums_gives_the_command_that_saves_it_again(corpus, tmp_path):
    folder = tmp_path / "it's \"bm25\" here"
    BM25(k=3).fit(corpus).save(folder)
    before = _ranked(Operator.load(folder))
    (folder / CHECKSUMS).unlink()
    meta = json.loads((folder / "params.json").read_text())
    (folder / "params.json").write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(ArtifactError, match=r"load it with verify=False, then save it again .*from a shell: "
                                            r"python -c 'from ragkit import Operator; Operator\.load\(") as err:
        Operator.load(folder)
    _run_suggested(str(err.value), tmp_path.parent)
    assert (folder / CHECKSUMS).is_file() and _ranked(Operator.load(folder)) == before


# ---------------------------------------------------------------- F4: an index from a newer ragkit
def test_an_index_manifest_from_a_newer_ragkit_says_to_upgrade(corpus, tmp_path):
    Dense(k=5).fit(corpus).save(tmp_path / "d")
    meta = json.loads((tmp_path / "d" / "index.json").read_text())
    (tmp_path / "d" / "index.json").write_text(json.dumps({**meta, "format": FORMAT + 1}))
    expected = (f"{tmp_path / 'd' / 'index.json'}: written by a newer ragkit (index format {FORMAT + 1}, this one "
                f"reads {FORMAT}); upgrade ragkit")
    with pytest.raises(ArtifactError) as err:
        Operator.load(tmp_path / "d", verify=False)
    assert str(err.value) == expected
    # the operator-level check's words
    meta = json.loads((tmp_path / "d" / "params.json").read_text())
    (tmp_path / "d" / "params.json").write_text(json.dumps({**meta, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ArtifactError, match=rf"written by a newer ragkit \(format {FORMAT_VERSION + 1}, this one "
                                            rf"reads {FORMAT_VERSION}\); upgrade ragkit$"):
        Operator.load(tmp_path / "d", verify=False)
