"""What a load of an edited save says (pipelines/store.py, ragkit/_files.py): the file that lacks its checksum,
the symbolic link a step is reached through, a ``.npy`` header with a negative dimension.

Each message used to mislead: a manifest listing 10 checksums but not ``pipeline.yaml``'s was said to list
none; a step folder linked out of the save was called "a folder outside the saved pipeline" without a word of
the link; an ``idf.npy`` whose header claims shape ``(-1,)`` failed with numpy's "Expected (-1,) = -1
elements"."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ragkit.errors import ArtifactError
from ragkit.operator import Operator
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25
from ragkit.types import Corpus

TEXTS = ["red apples are sweet", "green pears and red apples", "the heart pumps blood", "blood cells carry oxygen"]


@pytest.fixture
def corpus() -> Corpus:
    return Corpus.from_texts(TEXTS)


@pytest.fixture
def saved(corpus, tmp_path) -> Path:
    """A fitted one-step pipeline saved at ``tmp_path / "save"``."""
    Pipeline([BM25(k=2)]).fit(corpus).save(tmp_path / "save")
    return tmp_path / "save"


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
