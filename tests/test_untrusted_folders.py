"""Crafted saves and caches (a security review): each is refused or skipped with an error naming the file,
before it crashes the process, exhausts memory, or changes rankings unnoticed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from ragkit import Operator, Pipeline
from ragkit._files import folder_checksums
from ragkit.encoders import cache as cache_mod
from ragkit.encoders.cache import EmbeddingCache, text_digests
from ragkit.errors import ArtifactError, ConfigError
from ragkit.retrievers import BM25
from ragkit.types import Corpus


def _corpus() -> Corpus:
    rng = np.random.default_rng(0)
    words = np.array([f"w{i}" for i in range(40)])
    return Corpus.from_texts([" ".join(rng.choice(words, size=8)) for _ in range(30)],
                             ids=[f"d{i}" for i in range(30)])


def _rehash(folder: Path) -> None:
    """Recompute ``checksums.json`` as the author of a crafted folder would."""
    (folder / "checksums.json").unlink()
    (folder / "checksums.json").write_text(json.dumps(folder_checksums(folder)))


# ------------------------------------------------------------------ BM25's older layout (a segmentation fault)
def _old_layout(folder: Path, bm: BM25, ptr_edit: str) -> None:
    """A save rewritten in the layout before ``weights.json`` (docs x terms counts), its row pointers or term
    ids then edited by ``ptr_edit``, checksums recomputed."""
    tf = bm.tf_
    for name in ("weights", "doc_lengths", "idf", "tf_data", "tf_indices", "tf_indptr"):
        (folder / f"{name}.npy").unlink()
    (folder / "weights.json").unlink()
    ptr, ind = tf.indptr.astype(np.int32), tf.indices.astype(np.int32)
    n = len(ind)
    if ptr_edit == "jump":  # non-monotonic, ends right
        ptr[5], ptr[6] = 10**8, -10**8
    elif ptr_edit == "decreasing":
        ptr[1:] = n
        ptr[15] = 0
    elif ptr_edit == "negative":
        ptr[3] = -50
    elif ptr_edit == "negative_id":
        ind[7] = -3
    elif ptr_edit == "start":
        ptr[0] = 2
    np.save(folder / "tf_data.npy", tf.data.astype(np.float32))
    np.save(folder / "tf_indices.npy", ind)
    np.save(folder / "tf_indptr.npy", ptr)
    _rehash(folder)


@pytest.mark.parametrize("edit, file", [("jump", "tf_indptr"), ("decreasing", "tf_indptr"),
                                        ("negative", "tf_indptr"), ("negative_id", "tf_indices"),
                                        ("start", "tf_indptr")])
def test_crafted_old_layout_bm25_is_refused_not_a_crash(tmp_path, edit, file):
    """Only the row count, the postings count and the largest id were checked: a crafted pointer crashed
    the process in scipy's ``tocsc`` (rc 139 / 134), a negative id raised numpy's bare ValueError.  Loaded
    in a child process, so a crash fails this test instead of ending pytest."""
    bm = BM25(k=5).fit(_corpus())
    bm.save(tmp_path / "bm")
    _old_layout(tmp_path / "bm", bm, edit)
    code = textwrap.dedent(f"""
        from ragkit.errors import ArtifactError
        from ragkit.retrievers import BM25
        try:
            BM25.load({str(tmp_path / 'bm')!r}).search(["w1 w2"], k=3)
        except ArtifactError as e:
            print("REFUSED", e)
        else:
            print("LOADED")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.startswith("REFUSED"), out.stdout + out.stderr[-2000:]
    assert f"{file}.npy" in out.stdout


# ------------------------------------------------------------------ Operator.load: unlisted files and links
def test_operator_load_refuses_linked_and_unlisted_files(tmp_path):
    bm = BM25(k=5).fit(_corpus())
    folder = tmp_path / "op"
    bm.save(folder)
    Operator.load(folder)  # (a save as written loads)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "collection.json").write_text(json.dumps({"avgdl": 1e-9}))
    np.save(outside / "collection_idf.npy", np.ones(len(bm.vocab_)))
    for name in ("collection.json", "collection_idf.npy"):  # optional files BM25 reads when it finds them
        os.symlink(outside / name, folder / name)
    with pytest.raises(ArtifactError, match=r"collection(_idf\.npy|\.json): a symbolic link"):
        Operator.load(folder)
    for name in ("collection.json", "collection_idf.npy"):
        (folder / name).unlink()
        (folder / name).write_bytes((outside / name).read_bytes())  # copies, unlisted
    with pytest.raises(ArtifactError, match=r"collection(_idf\.npy|\.json): not listed in checksums\.json"):
        BM25.load(folder)
    Operator.load(folder, verify=False)  # (unchecked, as asked)


def test_operator_load_refuses_an_unlisted_corpus(tmp_path):
    folder = tmp_path / "op"
    BM25(k=5).fit(_corpus()).save(folder)
    digests = json.loads((folder / "checksums.json").read_text())
    del digests["corpus.jsonl"]
    (folder / "checksums.json").write_text(json.dumps(digests))
    with pytest.raises(ArtifactError, match=r"corpus\.jsonl: not listed in checksums\.json"):
        Operator.load(folder)


def test_operator_load_keeps_a_users_notes_but_not_a_planted_model_folder(tmp_path):
    """A user's notes beside the save, and another save inside it, load as before (a save never deletes them);
    a folder an operator reads (``model/``: a tuned model) is never taken for another save."""
    folder = tmp_path / "op"
    BM25(k=5).fit(_corpus()).save(folder)
    (folder / "notes.txt").write_text("mine")
    (folder / ".DS_Store").write_bytes(b"x")
    BM25(k=4).fit(_corpus()).save(folder / "inner")
    assert Operator.load(folder).params.k == 5
    BM25(k=4).fit(_corpus()).save(folder / "model" / "x")
    with pytest.raises(ArtifactError, match=r"model/x/\S+: not listed in checksums\.json"):
        Operator.load(folder)


# ------------------------------------------------------------------ the embedding cache
def _cache_with_a_shard(root: Path) -> tuple[EmbeddingCache, np.ndarray, np.ndarray]:
    digests = text_digests(["a", "b", "c"])
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    EmbeddingCache(root, "model").put(digests, vectors)
    return EmbeddingCache(root, "model"), digests, vectors


def test_a_planted_keys_file_claiming_terabytes_is_skipped(tmp_path):
    """A ~200-byte ``.keys.npy`` whose header claims ``(10**12,)`` digests made every encode fail with a
    MemoryError (14.6 TiB): it is skipped as a damaged shard is, and the real shard still serves."""
    cache, digests, vectors = _cache_with_a_shard(tmp_path)
    name = "f" * 32
    with open(cache.folder / f"{name}.keys.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|S16", "fortran_order": False, "shape": (10**12,)})
        fh.write(b"\0" * 64)
    np.save(cache.folder / f"{name}.npy", np.zeros((1, 4), np.float32))
    got, hit = cache.get(digests)
    assert hit.all()
    np.testing.assert_array_equal(got, vectors)


def test_a_codebook_cache_file_claiming_terabytes_is_rebuilt(tmp_path, monkeypatch):
    from ragkit.retrievers import centroids

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    data, offsets = rng.standard_normal((200, 8)).astype(np.float32), np.arange(0, 201, 10)
    want = centroids.build_codes(data, offsets, 4, cache_key="k")
    (folder,) = (tmp_path / "codebooks").iterdir()
    with open(folder / "codebook.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 8)})
    got = centroids.build_codes(data, offsets, 4, cache_key="k")
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="no user ids on this platform")
def test_a_cache_others_can_write_is_warned_of_once(tmp_path, monkeypatch):
    """Whoever can write the cache folder changes the vectors it serves (the largest shard wins): not refused
    (a team cache), but said once, naming the folder and why."""
    monkeypatch.setattr(cache_mod, "_SHARED_SAID", set())
    cache, digests, _ = _cache_with_a_shard(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.get(digests)  # (a folder of this user's only: no warning)
    cache.folder.chmod(0o777)
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            EmbeddingCache(tmp_path, "model").get(digests)
        said = [str(w.message) for w in caught if "may hold vectors written by someone else" in str(w.message)]
        if _ == 0:
            assert len(said) == 1 and str(cache.folder) in said[0] and "writable by every user" in said[0]
        else:
            assert not said  # once per folder
    if os.getuid() == 0:  # (only root can give a file away)
        monkeypatch.setattr(cache_mod, "_SHARED_SAID", set())
        cache.folder.chmod(0o755)
        keys = next(cache.folder.glob("*.keys.npy"))
        os.chown(keys, 12345, -1)
        with pytest.warns(RuntimeWarning, match=r"belongs to another user \(uid 12345\)"):
            EmbeddingCache(tmp_path, "model").get(digests)


# ------------------------------------------------------------------ parameters without an upper bound
def test_prf_resolution_has_an_upper_bound():
    with pytest.raises(ConfigError, match=r"pipeline\[1\]\.prf\.resolution: expected a value <= 100000"):
        Pipeline.from_yaml("pipeline: [bm25: {k: 10}, prf: {resolution: 100000000}, bm25: {k: 10}]")
    Pipeline.from_yaml("pipeline: [bm25: {k: 10}, prf: {resolution: 100000}, bm25: {k: 10}]")


@pytest.mark.parametrize("key", ["expansion_add", "expansion_search"])
def test_dense_beam_widths_have_an_upper_bound(key):
    with pytest.raises(ConfigError, match=rf"pipeline\[0\]\.dense\.{key}: expected a value <= 1048576"):
        Pipeline.from_yaml(f"pipeline: [dense: {{model: hashing, {key}: 2147483647}}]")


# ------------------------------------------------------------------ malformed text files
def test_an_integer_too_long_for_python_is_a_config_error_with_its_line():
    text = "pipeline:\n  - bm25: {k: " + "9" * 5000 + "}\n"
    with pytest.raises(ConfigError, match=r"line 2, column 15: .*an integer of 5,000 digits"):
        Pipeline.from_yaml(text)


def test_json_nested_too_deeply_names_the_file(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "manifest.json").write_text("[" * 200_000)
    with pytest.raises(ArtifactError, match=r"manifest\.json: JSON nested too deeply"):
        Pipeline.load(tmp_path / "p")
    BM25(k=5).fit(_corpus()).save(tmp_path / "bm")
    (tmp_path / "bm" / "vocab.json").write_text("[" * 200_000)
    _rehash(tmp_path / "bm")
    with pytest.raises(ArtifactError, match=r"vocab\.json: JSON nested too deeply"):
        Operator.load(tmp_path / "bm")
