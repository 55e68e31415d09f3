"""A saved dense index whose files were edited and whose checksums were then recomputed (``index.json``'s CRC32s
and ``checksums.json``), so that every checksum passes: ``VectorIndex.load`` checks what the files hold against
the manifest before any search, and refuses a mismatch with an ``ArtifactError`` naming the file and what was
expected and found (numpy's matmul ``ValueError``, ``RuntimeError: the 'usearch' backend has no HNSW graph``, an
``AttributeError`` for a missing int8 calibration, or a search returning nothing for NaN codes, before)."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from conftest import HashedEncoder

from ragkit._files import folder_checksums
from ragkit._saves import CHECKSUMS
from ragkit.encoders import register_encoder
from ragkit.errors import ArtifactError
from ragkit.operator import Operator
from ragkit.retrievers import Dense
from ragkit.retrievers._index import VectorIndex
from ragkit.retrievers._index_files import MAX_DIMS
from ragkit.types import Corpus

MODEL = "index-load-checks-hashed"
DIM = 24
register_encoder(MODEL, HashedEncoder("index-load-checks-hashed-v1", DIM), replace=True)
N = 40


def _corpus() -> Corpus:
    return Corpus([f"d{i}" for i in range(N)], [f"text {i} word{i % 7} w{i % 11}" for i in range(N)])


@pytest.fixture(scope="module")
def saves(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Fitted dense operators of each storage / search / reduction, saved once for the module."""
    root = tmp_path_factory.mktemp("saves")
    kinds = {"f32": {}, "f16": {"dtype": "f16"}, "i8": {"dtype": "i8"}, "b1": {"dtype": "b1"},
             "pca": {"reduce": "pca:8", "rescore": True}, "hnsw": {"search": "hnsw", "threads": 1},
             "hnsw_i8": {"search": "hnsw", "dtype": "i8", "threads": 1}}
    out = {}
    for name, kw in kinds.items():
        Dense(model=MODEL, k=5, **kw).fit(_corpus()).save(root / name)
        out[name] = root / name
    return out


def _reseal(folder: Path) -> None:
    """Recompute ``index.json``'s sizes and CRC32s, then ``checksums.json``: what a crafted folder's author does."""
    meta = json.loads((folder / "index.json").read_text())
    for name in meta["files"]:
        data = (folder / name).read_bytes()
        meta["files"][name] = {"bytes": len(data), "crc32": zlib.crc32(data)}
    (folder / "index.json").write_text(json.dumps(meta))
    (folder / CHECKSUMS).unlink()
    (folder / CHECKSUMS).write_text(json.dumps(folder_checksums(folder)))


def _crafted(saves: dict[str, Path], kind: str, tmp_path: Path, edit: Callable[[Path], Any]) -> Path:
    folder = tmp_path / "crafted"
    shutil.copytree(saves[kind], folder)
    edit(folder)
    _reseal(folder)
    return folder


def _edit_meta(**changes: Any) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        meta = json.loads((folder / "index.json").read_text())
        for key, value in changes.items():
            if key == "config":
                meta["config"].update(value)
            else:
                meta[key] = value
        (folder / "index.json").write_text(json.dumps(meta))
    return edit


def _save_array(name: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        p = folder / name
        np.save(p, make(np.load(p)), allow_pickle=False)
    return edit


def _refused(folder: Path, match: str, mmap: bool = False) -> None:
    with pytest.raises(ArtifactError, match=match):
        Operator.load(folder, mmap=mmap)


@pytest.mark.parametrize("kind", ["f32", "f16", "i8", "b1", "pca", "hnsw", "hnsw_i8"])
@pytest.mark.parametrize("mmap", [False, True])
def test_resealed_untouched_saves_still_load_and_search(saves, kind, mmap, tmp_path):
    """The checks refuse nothing ragkit writes, memory-mapped or not (the reseal itself changes nothing)."""
    folder = _crafted(saves, kind, tmp_path, lambda f: None)
    want = Operator.load(saves[kind]).search(["text 3 word3"]).doc_ids[0].tolist()
    assert Operator.load(folder, mmap=mmap).search(["text 3 word3"]).doc_ids[0].tolist() == want


def test_codes_of_another_width_are_refused_at_load(saves, tmp_path):
    """(300, 10) codes for ndim 384 loaded, and the search failed in numpy's matmul."""
    folder = _crafted(saves, "f32", tmp_path, _save_array("index.codes.npy", lambda a: a[:, :10].copy()))
    for mmap in (False, True):
        _refused(folder, rf"index\.codes\.npy: holds a float32 array of shape \({N}, 10\); expected float32 of "
                         rf"shape \({N}, {DIM}\) \(dtype 'f32', ndim {DIM}, {N} slots in index\.json\)", mmap)


def test_b1_codes_are_checked_against_the_packed_width(saves, tmp_path):
    folder = _crafted(saves, "b1", tmp_path, _save_array("index.codes.npy", lambda a: np.zeros((N, DIM), np.uint8)))
    _refused(folder, rf"index\.codes\.npy: .*shape \({N}, {DIM}\); expected uint8 of shape \({N}, {DIM // 8}\) "
                     rf"\(dtype 'b1', ndim {DIM} \(packed bits: {DIM // 8} bytes\)")


@pytest.mark.parametrize("backend", ["usearch", "os"])
def test_an_unknown_backend_is_refused(saves, tmp_path, backend):
    """``RuntimeError: the 'usearch' backend has no HNSW graph`` at the first search, before."""
    folder = _crafted(saves, "f32", tmp_path, _edit_meta(backend=backend))
    _refused(folder, rf"index\.json: backend is '{backend}'; expected 'numpy' \(exact search\) or 'hnsw'")


def test_a_backend_that_does_not_match_the_files_is_refused(saves, tmp_path):
    folder = _crafted(saves, "f32", tmp_path, _edit_meta(backend="hnsw", config={"search": "auto"}))
    _refused(folder, r"index\.json: lists no index\.usearch, which backend 'hnsw' needs; it lists "
                     r"index\.alive\.npy, index\.codes\.npy")
    shutil.rmtree(folder)
    folder = _crafted(saves, "hnsw", tmp_path, _edit_meta(backend="numpy", config={"search": "auto"}))
    _refused(folder, r"index\.json: lists no index\.codes\.npy, which backend 'numpy' needs")
    shutil.rmtree(folder)
    folder = _crafted(saves, "f32", tmp_path, _edit_meta(config={"search": "hnsw"}))
    _refused(folder, r"index\.json: backend 'numpy' with search 'hnsw'; expected backend 'hnsw'")


def test_an_int8_config_over_float_codes_is_refused(saves, tmp_path):
    """``AttributeError: 'VectorIndex' object has no attribute 'i8_min'`` at the first search, before."""
    folder = _crafted(saves, "f32", tmp_path, _edit_meta(config={"dtype": "i8"}))
    _refused(folder, r"index\.json: lists no index\.i8_min\.npy, which dtype 'i8' \(its calibration\) needs")


def test_a_storage_type_that_does_not_match_the_codes_is_refused(saves, tmp_path):
    folder = _crafted(saves, "f32", tmp_path, _edit_meta(config={"dtype": "f16"}))
    _refused(folder, rf"index\.codes\.npy: holds a float32 array of shape \({N}, {DIM}\); expected float16 ")
    shutil.rmtree(folder)
    folder = _crafted(saves, "hnsw", tmp_path, _edit_meta(config={"dtype": "f16"}))
    _refused(folder, rf"index\.usearch: a graph of {DIM} dimensions stored as f32; expected {DIM} dimensions "
                     r"stored as f16")


def test_the_int8_calibration_is_checked(saves, tmp_path):
    folder = _crafted(saves, "i8", tmp_path, _edit_meta(i8_scale=None))
    _refused(folder, r"index\.json: i8_scale is None; expected a positive number")
    shutil.rmtree(folder)
    folder = _crafted(saves, "i8", tmp_path, _save_array("index.i8_step.npy", lambda a: a[:5].copy()))
    _refused(folder, rf"index\.i8_step\.npy: holds a float32 array of shape \(5,\); expected float32 of shape "
                     rf"\({DIM},\)")
    shutil.rmtree(folder)
    folder = _crafted(saves, "i8", tmp_path, _save_array("index.i8_step.npy", lambda a: -a))
    _refused(folder, r"index\.i8_step\.npy: holds a step of -.*; expected positive steps")
    shutil.rmtree(folder)
    folder = _crafted(saves, "i8", tmp_path, _save_array("index.i8_min.npy", lambda a: a * np.nan))
    _refused(folder, r"index\.i8_min\.npy: holds NaN or infinite values")


@pytest.mark.parametrize("value, shown", [(10**12, "1000000000000"), (0, "0"), ("384", "'384'"), (True, "True")])
def test_ndim_out_of_bounds_is_refused(saves, tmp_path, value, shown):
    """``ndim: 10**12`` loaded (and searched: ndim was never compared with the codes)."""
    folder = _crafted(saves, "f32", tmp_path, _edit_meta(ndim=value))
    _refused(folder, rf"index\.json: ndim is {shown}; expected an integer from 1 to {MAX_DIMS:,}")


def test_ndim_and_d_in_are_checked_against_the_reduction(saves, tmp_path):
    folder = _crafted(saves, "f32", tmp_path, _edit_meta(ndim=DIM - 1))
    _refused(folder, rf"index\.json: ndim {DIM - 1} and d_in {DIM}; expected equal \(reduce 'none'")
    shutil.rmtree(folder)
    folder = _crafted(saves, "pca", tmp_path, _edit_meta(ndim=9))
    _refused(folder, rf"index\.json: ndim 9 and d_in {DIM} with reduce 'pca:8'; expected ndim 8")


def test_d_in_must_be_the_models_width(saves, tmp_path):
    """The encoder registered under the model's name says its width: an index of another one is refused (its
    queries would have another width than its documents)."""
    def wider(folder: Path) -> None:
        _edit_meta(d_in=DIM + 8, ndim=DIM + 8)(folder)
        _save_array("index.codes.npy", lambda a: np.ones((N, DIM + 8), np.float32))(folder)
    folder = _crafted(saves, "f32", tmp_path, wider)
    _refused(folder, rf"index\.json: d_in {DIM + 8}; expected {DIM}, the width of the embeddings of '{MODEL}'")


def test_pca_arrays_are_checked(saves, tmp_path):
    folder = _crafted(saves, "pca", tmp_path, _save_array("index.pca_components.npy", lambda a: a[:, :4].copy()))
    _refused(folder, rf"index\.pca_components\.npy: holds a float32 array of shape \({DIM}, 4\); expected float32 "
                     rf"of shape \({DIM}, 8\)")
    shutil.rmtree(folder)
    folder = _crafted(saves, "pca", tmp_path, _save_array("index.pca_mean.npy", lambda a: a[:3].copy()))
    _refused(folder, rf"index\.pca_mean\.npy: .* shape \(3,\); expected float32 of shape \({DIM},\)")
    shutil.rmtree(folder)
    folder = _crafted(saves, "pca", tmp_path, _save_array("index.floats.npy", lambda a: a[:, :5].copy()))
    _refused(folder, rf"index\.floats\.npy: .* shape \({N}, 5\); expected float32 of shape \({N}, {DIM}\)")


@pytest.mark.parametrize("alive, shown", [(np.ones(N, np.float64), "float64"), (np.ones(N, np.uint8), "uint8"),
                                          (np.ones(5, bool), "bool")])
def test_alive_must_be_a_bool_per_slot(saves, tmp_path, alive, shown):
    """A float64 alive.npy was read as bool."""
    folder = _crafted(saves, "f32", tmp_path, _save_array("index.alive.npy", lambda a: alive))
    _refused(folder, rf"index\.alive\.npy: holds a {shown} array of shape \({len(alive)},\); expected bool of shape "
                     rf"\({N},\) \({N} slots in index\.json\)")


def test_nan_codes_are_refused_when_read_into_memory(saves, tmp_path):
    """All-NaN codes loaded and every search returned no document.  A memory-mapped load does not scan the codes
    (it would read the whole file): it loads."""
    folder = _crafted(saves, "f32", tmp_path, _save_array("index.codes.npy", lambda a: np.full_like(a, np.nan)))
    _refused(folder, rf"index\.codes\.npy: holds NaN or infinite values \(first in row 0 of {N}\)")
    Operator.load(folder, mmap=True)
    shutil.rmtree(folder)

    def one_inf(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a[7, 3] = np.inf
        return a
    folder = _crafted(saves, "f16", tmp_path, _save_array("index.codes.npy", one_inf))
    _refused(folder, rf"index\.codes\.npy: holds NaN or infinite values \(first in row 7 of {N}\)")


@pytest.mark.parametrize("name", ["../outside.npy", "/etc/passwd", "index.extra.npy"])
def test_the_manifest_lists_only_the_index_files(saves, tmp_path, name):
    """A name outside the folder was stat'ed and read for its CRC32."""
    def edit(folder: Path) -> None:
        meta = json.loads((folder / "index.json").read_text())
        meta["files"][name] = {"bytes": 1, "crc32": 0}
        (folder / "index.json").write_text(json.dumps(meta))
    folder = tmp_path / "crafted"
    shutil.copytree(saves["f32"], folder)
    edit(folder)
    (folder / CHECKSUMS).unlink()
    (folder / CHECKSUMS).write_text(json.dumps(folder_checksums(folder)))
    _refused(folder, rf"index\.json: lists the file '{name}'; a vector index holds only index\.alive\.npy, ")


def test_vector_index_load_checks_without_an_operator(tmp_path):
    """The same checks for a bare VectorIndex (MUVERA's and dbnorm's indexes)."""
    x = np.random.default_rng(0).standard_normal((30, 16)).astype(np.float32)
    VectorIndex(search="exact").build(x).save(tmp_path / "ix", prefix="fde")
    meta = json.loads((tmp_path / "ix" / "fde.json").read_text())
    meta["ndim"] = meta["d_in"] = 17
    (tmp_path / "ix" / "fde.json").write_text(json.dumps(meta))
    want = (r"fde\.codes\.npy: holds a float32 array of shape \(30, 16\); expected float32 of shape \(30, 17\) "
            r"\(dtype 'f32', ndim 17, 30 slots in fde\.json\)")
    with pytest.raises(ArtifactError, match=want):
        VectorIndex.load(tmp_path / "ix", prefix="fde")
