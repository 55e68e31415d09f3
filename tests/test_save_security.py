"""Loading a save written by someone else: the manifest, checksums and links stay inside the folder.

Each test builds a real small save (BM25 on a few documents), tampers with it as a crafted folder would,
and checks the load refuses it, naming the file and what is wrong."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ragkit._files import folder_checksums
from ragkit._saves import TRAINED
from ragkit.errors import ArtifactError
from ragkit.operator import Operator
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25
from ragkit.types import Corpus

TEXTS = ["red apples are sweet", "green pears and red apples", "the heart pumps blood", "blood cells carry oxygen"]
NODE = "pipeline[0].bm25"

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink"), reason="symbolic links")


@pytest.fixture
def corpus() -> Corpus:
    return Corpus.from_texts(TEXTS)


@pytest.fixture
def saved(corpus, tmp_path) -> Path:
    """A fitted one-step pipeline saved at ``tmp_path / "save"``."""
    Pipeline([BM25(k=2)]).fit(corpus).save(tmp_path / "save")
    return tmp_path / "save"


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _write_manifest(folder: Path, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _reseal(folder: Path) -> None:
    """Checksums of every file as they are now (what a crafted folder's author would write)."""
    manifest = _manifest(folder)
    (folder / "manifest.json").unlink()
    manifest["sha256"] = folder_checksums(folder)
    _write_manifest(folder, manifest)


def _step_moved_out(saved: Path, node: str) -> None:
    """The step's folder moved out of the save, the manifest pointing at it with ``node`` (its checksums
    dropped: the ones a crafted manifest would keep pass)."""
    shutil.copytree(saved / "ops" / "00-bm25", saved.parent / "outside")
    shutil.rmtree(saved / "ops")
    manifest = _manifest(saved)
    manifest["nodes"] = {NODE: node}
    manifest["sha256"] = {k: v for k, v in manifest["sha256"].items() if not k.startswith("ops")}
    _write_manifest(saved, manifest)


def test_an_ordinary_save_loads_and_lists_every_file(corpus, saved):
    """ragkit's own saves: no links, every file listed; a README dropped beside them is no obstacle."""
    files = {str(p.relative_to(saved)) for p in saved.rglob("*") if p.is_file() or p.is_symlink()}
    assert files == {*_manifest(saved)["sha256"], "manifest.json"}
    assert not any(p.is_symlink() for p in saved.rglob("*"))
    (saved / "README.md").write_text("notes of the user, never read by a load")
    want = Pipeline([BM25(k=2)]).fit(corpus).search(["red apples"]).doc_ids
    for loaded in (Pipeline.load(saved), Pipeline.load(saved, corpus=corpus), Pipeline.load(saved, verify=False)):
        assert [d.tolist() for d in loaded.search(["red apples"]).doc_ids] == [d.tolist() for d in want]


@pytest.mark.parametrize("where", ["relative", "absolute"])
@pytest.mark.parametrize("verify", [True, False])
def test_a_step_folder_outside_the_save_is_refused(saved, where, verify):
    node = "../outside" if where == "relative" else str(saved.parent / "outside")
    _step_moved_out(saved, node)
    with pytest.raises(ArtifactError, match=rf"manifest\.json: nodes\['pipeline\[0\]\.bm25'\] is '{node}', a folder "
                                            "outside the saved pipeline"):
        Pipeline.load(saved, verify=verify)


@pytest.mark.parametrize("verify", [True, False])
def test_a_step_folder_linked_to_outside_the_save_is_refused(saved, verify):
    _step_moved_out(saved, "ops/00-bm25")
    (saved / "ops").mkdir()
    (saved / "ops" / "00-bm25").symlink_to(saved.parent / "outside", target_is_directory=True)
    with pytest.raises(ArtifactError, match=r"is 'ops/00-bm25', a folder outside the saved pipeline"):
        Pipeline.load(saved, verify=verify)


@pytest.mark.parametrize("node", [".", "ops/.."])
def test_a_step_that_is_the_pipeline_itself_is_refused_shortly(saved, node):
    manifest = _manifest(saved)
    manifest["nodes"] = {NODE: node}
    _write_manifest(saved, manifest)
    with pytest.raises(ArtifactError, match=r"the saved pipeline's own folder \(a step cannot be the pipeline") as e:
        Pipeline.load(saved)
    assert len(str(e.value)) < 400


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_checksums_of_files_outside_the_save_are_refused(saved, where):
    """A checksum entry naming a file outside: ragkit neither reads nor hashes it (an oracle for whether the
    file exists and what it holds: with the right digest the old load succeeded)."""
    secret = saved.parent / "secret.txt"
    secret.write_text("top secret\n")
    key = "../secret.txt" if where == "relative" else str(secret)
    manifest = _manifest(saved)
    manifest["sha256"][key] = hashlib.sha256(b"top secret\n").hexdigest()
    _write_manifest(saved, manifest)
    with pytest.raises(ArtifactError, match=rf"manifest\.json's sha256 lists '{key}', which is not a path inside the "
                                            "folder"):
        Pipeline.load(saved)


def test_an_operators_checksums_of_files_outside_its_folder_are_refused(corpus, tmp_path):
    BM25(k=2).fit(corpus).save(tmp_path / "op")
    (tmp_path / "secret.txt").write_text("top secret\n")
    digests = json.loads((tmp_path / "op" / "checksums.json").read_text())
    digests["../secret.txt"] = hashlib.sha256(b"top secret\n").hexdigest()
    (tmp_path / "op" / "checksums.json").write_text(json.dumps(digests))
    with pytest.raises(ArtifactError, match=r"lists '\.\./secret\.txt', which is not a path inside the folder"):
        Operator.load(tmp_path / "op")


def test_a_linked_file_in_the_save_is_refused(saved, tmp_path):
    """corpus.jsonl linked to documents outside, its checksum matching them: the old load read them."""
    outside = tmp_path / "outside.jsonl"
    shutil.copy(saved / "corpus.jsonl", outside)
    (saved / "corpus.jsonl").unlink()
    (saved / "corpus.jsonl").symlink_to(outside)
    _reseal(saved)
    with pytest.raises(ArtifactError, match=rf"corpus\.jsonl: a symbolic link \(to {outside}\), listed in "
                                            r"manifest\.json's sha256; ragkit never writes links"):
        Pipeline.load(saved)


def test_a_linked_file_in_a_step_folder_is_refused_even_unlisted(saved, tmp_path):
    (tmp_path / "x.npy").write_bytes(b"x")
    (saved / "ops" / "00-bm25" / "x.npy").symlink_to(tmp_path / "x.npy")
    with pytest.raises(ArtifactError, match=r"00-bm25/x\.npy: a symbolic link .* in pipeline\[0\]\.bm25's folder"):
        Pipeline.load(saved)


def test_a_file_in_a_step_folder_the_checksums_do_not_list_is_refused(saved, corpus):
    """The steps load unchecked, trusting the manifest: a file it does not list (an optional one the step
    reads when present) was read unverified."""
    np.save(saved / "ops" / "00-bm25" / f"{TRAINED}.npy", np.zeros((1, 2), dtype=np.uint64))
    with pytest.raises(ArtifactError, match=rf"00-bm25/{TRAINED}\.npy: not listed in manifest\.json's sha256, yet "
                                            r"pipeline\[0\]\.bm25's step would read it unchecked"):
        Pipeline.load(saved)
    with pytest.raises(ArtifactError, match=rf"{TRAINED}\.npy: not listed"):
        Pipeline.load(saved, corpus=corpus)
    Pipeline.load(saved, verify=False)  # (unchecked, as asked)


def test_an_unlisted_corpus_is_refused_when_it_is_read(saved, corpus):
    manifest = _manifest(saved)
    del manifest["sha256"]["corpus.jsonl"]
    _write_manifest(saved, manifest)
    with pytest.raises(ArtifactError, match=r"corpus\.jsonl: not listed in manifest\.json's sha256, yet the load "
                                            "reads it"):
        Pipeline.load(saved)
    assert Pipeline.load(saved, corpus=corpus).search(["red apples"]).doc_ids[0].size  # (not read: given)


def test_an_npy_header_claiming_more_than_its_file_is_refused_before_any_allocation(tmp_path) -> None:
    """An edited ``.npy`` header claiming shape (10**12,) made ``np.load`` raise a bare MemoryError of 1.8 TiB
    with no file named (a security review, 2026-12-05); the header is now checked against the file's size."""
    from ragkit._saves import load_array
    from ragkit.retrievers._index import VectorIndex

    f = tmp_path / "a.npy"
    np.save(f, np.arange(10, dtype=np.int64))
    assert load_array(tmp_path, "a").tolist() == list(range(10))
    data = np.arange(10, dtype=np.int64).tobytes()
    with open(f, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<i8", "fortran_order": False, "shape": (10**12,)})
        fh.write(data)
    for mmap in (False, True):
        with pytest.raises(ArtifactError, match=r"a\.npy: its header describes an array of shape \(1000000000000,\)"):
            load_array(tmp_path, "a", mmap=mmap)
    index = VectorIndex(dtype="f32", search="exact").build(np.eye(4, dtype=np.float32))
    index.save(tmp_path / "ix")
    (codes,) = [p for p in (tmp_path / "ix").glob("*.npy") if np.load(p).size == 16]
    with open(codes, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 4)})
        fh.write(np.eye(4, dtype=np.float32).tobytes())
    with pytest.raises(ArtifactError, match="its header describes an array of shape"):
        VectorIndex.load(tmp_path / "ix", verify=False)


# ------------------------------------------------------------------ what a load of an edited save says
# (pipelines/store.py, ragkit/_files.py): the file that lacks its checksum, the symbolic link a step is reached
# through, a ``.npy`` header with a negative dimension.  Each message used to mislead: a manifest listing 10
# checksums but not ``pipeline.yaml``'s was said to list none; a step folder linked out of the save was called "a
# folder outside the saved pipeline" without a word of the link; an ``idf.npy`` whose header claims shape
# ``(-1,)`` failed with numpy's "Expected (-1,) = -1 elements".
def _edit_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_manifest_without_the_yaml_checksum_names_that_file(saved):
    """Old code: "lists no checksums of the saved files" although the others were listed."""
    listed = len(json.loads((saved / "manifest.json").read_text())["sha256"]) - 1
    _edit_manifest(saved, lambda m: m["sha256"].pop("pipeline.yaml"))
    with pytest.raises(ArtifactError, match=rf"manifest\.json: lists the checksums \(sha256\) of {listed} files but "
                                            r"none of pipeline\.yaml") as e:
        Pipeline.load(saved)
    assert "lists no checksums" not in str(e.value)


def test_a_manifest_without_checksums_still_says_so(saved):
    _edit_manifest(saved, lambda m: m.update(sha256={}))
    with pytest.raises(ArtifactError, match="lists no checksums of the saved files"):
        Pipeline.load(saved)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symbolic links")
@pytest.mark.parametrize("linked", ["ops/00-bm25", "ops"])
@pytest.mark.parametrize("verify", [True, False])
def test_a_step_linked_out_of_the_save_names_the_link(saved, linked, verify):
    """Old code: "is 'ops/00-bm25', a folder outside the saved pipeline", no word of the link."""
    outside = saved.parent / "outside"
    shutil.copytree(saved / linked, outside)
    shutil.rmtree(saved / linked)
    (saved / linked).symlink_to(outside, target_is_directory=True)
    with pytest.raises(ArtifactError) as e:
        Pipeline.load(saved, verify=verify)
    msg = str(e.value)
    assert f"reached through the symbolic link {saved / linked} (to {outside})" in msg, msg
    assert "refuses a step reached through a link" in msg
    assert "is 'ops/00-bm25', a folder outside the saved pipeline" in msg  # (as before, the link added)


def _npy_with_header(path: Path, header: str, payload: bytes) -> None:
    """A version 1.0 ``.npy`` file with the header dictionary ``header`` as given (padded to 64 bytes)."""
    h = header.encode("latin1")
    h += b" " * (64 - (10 + len(h) + 1) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + payload)


def test_a_negative_dimension_in_an_npy_header_is_said_so(corpus, tmp_path):
    """Old code: "corrupt or truncated array (Failed to read all data for array. Expected (-1,) = -1 elements,
    could only read 8 elements...)"."""
    BM25(k=2).fit(corpus).save(tmp_path / "op")
    idf = tmp_path / "op" / "idf.npy"
    _npy_with_header(idf, "{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }", b"\0" * 64)
    with pytest.raises(ArtifactError, match=r"idf\.npy: its header's shape \(-1,\) is invalid \(a negative "
                                            r"dimension") as e:
        Operator.load(tmp_path / "op", verify=False)
    assert "elements" not in str(e.value)


def test_check_npy_size_refuses_a_negative_dimension_before_numpy(tmp_path):
    from ragkit._files import check_npy_size

    path = tmp_path / "a.npy"
    _npy_with_header(path, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, -2), }", b"\0" * 64)
    with pytest.raises(ArtifactError, match=r"shape \(3, -2\) is invalid"):
        check_npy_size(path)
    np.save(path, np.zeros((0, 3), np.float32))  # (a dimension of 0 is fine)
    check_npy_size(path)
