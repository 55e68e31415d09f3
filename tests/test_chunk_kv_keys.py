"""Chunk-cache variant files tied to their chunk (a file copied into another chunk's key folder), the prompt
tokens a reuse-mode prefill counts as computed (the system prompt's included), and the wording of the chunk
cache's errors.

Fast: the store alone and the tiny 4-layer byte-level models of ``test_cachecraft``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cachecraft import TINY_CHUNKS, TINY_Q, tiny  # noqa: F401

from ragkit.caches import CacheModelMismatchError, ChunkKVCache, ChunkVariant


def _variant(n: int, seed: int = 0) -> ChunkVariant:
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(2, 3, n, 8, generator=g)
    return ChunkVariant(keys=k, values=k * 2, start=5, inter=np.zeros((2, 0), np.float32),
                        intra=np.full(2, 3.0, np.float32), sys_inter=np.full(2, 0.5, np.float32), sys_len=4,
                        token_scores=np.arange(n, dtype=np.float32), cci=0.7)


def _rewrite_meta(f: Path, drop: tuple[str, ...] = (), **set_: str) -> None:
    """Rewrite the variant file ``f`` with metadata keys ``drop`` left out and ``set_`` set, its digest made
    again (a file as an older ragkit wrote it, or one edited with a valid digest)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from caches.chunk_kv import _file_digest

    with safe_open(str(f), "pt") as fh:
        meta = dict(fh.metadata())
    tensors = load_file(str(f))
    meta = {k: v for k, v in meta.items() if k not in drop} | set_
    meta["sha256"] = _file_digest(tensors, meta)
    save_file(tensors, str(f), metadata=meta)


def _misplace(folder: Path, src_key: str, dst_key: str) -> Path:
    """Replace ``dst_key``'s variant files by a copy of ``src_key``'s (same file name)."""
    (src,) = (folder / src_key).glob("*.safetensors")
    for f in (folder / dst_key).glob("*.safetensors"):
        f.unlink()
    return Path(shutil.copy(src, folder / dst_key / src.name))


# ----------------------------------------------------------------------------- the store
def test_a_variant_file_names_its_chunk_and_length(tmp_path):
    ChunkKVCache("m", "t", disk_dir=tmp_path).put("k1", _variant(10))
    (f,) = tmp_path.glob("k1/*.safetensors")
    from safetensors import safe_open

    with safe_open(str(f), "pt") as fh:
        meta = fh.metadata()
    assert meta["key"] == "k1" and meta["n_tokens"] == "10"


def test_a_file_copied_into_another_chunks_folder_is_damaged_there(tmp_path, caplog):
    """Old code: the copy was served as the chunk's own rows (10 rows for a chunk of 7 tokens)."""
    store = ChunkKVCache("m", "t", disk_dir=tmp_path)
    store.put("k1", _variant(10))
    store.put("k2", _variant(7, seed=1))
    store.flush()
    moved = _misplace(tmp_path, "k1", "k2")
    other = ChunkKVCache("m", "t", disk_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert other.lookup("k2") == []  # a miss: computed again
    assert "damaged chunk-cache file" in caplog.text and "rows of chunk k1, not of chunk k2" in caplog.text
    assert not moved.exists()
    assert [v.n_tokens for v in other.lookup("k1")] == [10]  # the original stays


def test_the_key_is_under_the_digest(tmp_path, caplog):
    ChunkKVCache("m", "t", disk_dir=tmp_path).put("k1", _variant(10))
    (f,) = tmp_path.glob("k1/*.safetensors")
    data = f.read_bytes()
    assert data.count(b'"key":"k1"') == 1
    f.write_bytes(data.replace(b'"key":"k1"', b'"key":"k2"'))  # same length: the header still parses
    dst = tmp_path / "k2" / f.name
    dst.parent.mkdir()
    f.rename(dst)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert ChunkKVCache("m", "t", disk_dir=tmp_path).lookup("k2") == []
    assert "sha256" in caplog.text and not dst.exists()


def test_files_written_before_the_key_was_kept_still_load(tmp_path):
    ChunkKVCache("m", "t", disk_dir=tmp_path).put("k1", _variant(10))
    (f,) = tmp_path.glob("k1/*.safetensors")
    _rewrite_meta(f, drop=("key", "n_tokens"))
    (v,) = ChunkKVCache("m", "t", disk_dir=tmp_path).lookup("k1", n_tokens=10)
    assert v.n_tokens == 10 and f.exists()


def test_a_variant_of_another_length_is_dropped_when_the_chunk_length_is_given(tmp_path, caplog):
    """An older file (no key) copied into another chunk's folder: only its length tells; old code had no
    n_tokens argument and served it."""
    store = ChunkKVCache("m", "t", disk_dir=tmp_path)
    store.put("k1", _variant(10))
    store.put("k2", _variant(7, seed=1))
    store.flush()
    for f in tmp_path.glob("*/*.safetensors"):
        _rewrite_meta(f, drop=("key", "n_tokens"))
    moved = _misplace(tmp_path, "k1", "k2")
    other = ChunkKVCache("m", "t", disk_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert other.lookup("k2", n_tokens=7) == []
    assert "variant of 10 tokens under key k2, whose chunk has 7" in caplog.text
    assert not moved.exists() and "k2" not in other._mem
    # one in memory (put there by an earlier lookup without the length) goes too
    store.put("k3", _variant(10))
    assert store.lookup("k3", n_tokens=9) == [] and "k3" not in store._mem
    assert store.put("k3", _variant(9)).n_tokens == 9  # old code: DataError, shape of the stored variants


def test_a_file_written_with_another_length_than_its_metadata_says_is_damaged(tmp_path, caplog):
    ChunkKVCache("m", "t", disk_dir=tmp_path).put("k1", _variant(10))
    (f,) = tmp_path.glob("k1/*.safetensors")
    _rewrite_meta(f, n_tokens="9")
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        assert ChunkKVCache("m", "t", disk_dir=tmp_path).lookup("k1") == []
    assert "its metadata says 9 tokens" in caplog.text and not f.exists()


def test_a_file_of_another_model_says_what_to_do_and_stays(tmp_path):
    ChunkKVCache("m", "t", disk_dir=tmp_path).put("k1", _variant(10))
    (f,) = tmp_path.glob("k1/*.safetensors")
    _rewrite_meta(f, model_id="other")
    with pytest.raises(CacheModelMismatchError, match=r"model 'other' with tokenizer 't', expected model 'm' .*"
                                                      r"delete this file, or use another cache folder .*--cache-dir"):
        ChunkKVCache("m", "t", disk_dir=tmp_path).lookup("k1")
    assert f.exists()  # maybe another model's valid data: never deleted


def test_a_folder_of_another_model_names_the_ask_flag(tmp_path):
    ChunkKVCache("other", "t", disk_dir=tmp_path)
    with pytest.raises(CacheModelMismatchError, match=r"use another cache folder for this model \(disk_dir; "
                                                      r"ragkit ask: --cache-dir\)"):
        ChunkKVCache("m", "t", disk_dir=tmp_path)


# ----------------------------------------------------------------------------- the generator
def _tiny_disk_cache(model: str, d: Path):
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(model, storage_dtype="float32", disk_dir=str(d)).load()
    seg = g.segments(TINY_Q, TINY_CHUNKS)
    g.prefill(seg, "cachecraft")
    g.chunk_cache.flush()
    keys = [g.chunk_cache.key(c) for c in seg.chunks]
    assert len({len(c) for c in seg.chunks[:2]}) == 2  # chunks 0 and 1 differ in length
    return keys


@pytest.mark.parametrize("older", [False, True], ids=["keyed", "older-file"])
def test_a_generator_recomputes_a_chunk_whose_folder_holds_another_chunks_file(tiny, tmp_path, older):  # noqa: F811
    """t3/t8 of the review: old code spliced chunk 0's rows in place of chunk 1's at fraction 0 (logits off,
    "3/3 chunks reused", no warning) and raised DataError (ChunkKVCache.put) at fraction 1."""
    from ragkit.generators.local import LocalGenerator

    d = tmp_path / "kv"
    keys = _tiny_disk_cache(tiny[0], d)
    if older:  # as a ragkit before the key was kept wrote them
        for f in d.glob("*/*.safetensors"):
            _rewrite_meta(f, drop=("key", "n_tokens"))
    base = tmp_path / "base"
    shutil.copytree(d, base)
    for fraction in (0.0, 1.0):
        work = tmp_path / f"w{fraction}"
        shutil.copytree(base, work)
        _misplace(work, keys[0], keys[1])
        g = LocalGenerator(tiny[0], storage_dtype="float32", disk_dir=str(work)).load()
        seg = g.segments(TINY_Q, TINY_CHUNKS)
        p = g.prefill(seg, "cachecraft", fraction=fraction)
        full = g.prefill(seg, "full")
        assert (p.hits, p.misses) == (2, 1) and p.chunk_fraction[1] == 1.0
        assert float((p.logits - full.logits).abs().max()) < 1e-4
        again = g.prefill(seg, "cachecraft", fraction=fraction)  # chunk 1's own variant stored meanwhile
        assert again.hits == 3 and again.chunk_fraction == [0.0, 0.0, 0.0]


def test_the_system_prompt_computed_by_a_prefill_counts_as_computed(tiny, tmp_path):  # noqa: F811
    """Old code: a new generator's first cachecraft prefill with every chunk missed reported
    n_prompt - len(system) tokens computed, though all were."""
    from ragkit.generators.local import LocalGenerator

    g = LocalGenerator(tiny[0]).load()
    seg = g.segments(TINY_Q, TINY_CHUNKS)
    first = g.prefill(seg, "cachecraft")
    assert first.misses == 3 and first.n_computed == first.n_prompt == len(seg)
    again = g.prefill(seg, "cachecraft")  # the system prompt's rows are kept: not computed again
    assert again.hits == 3 and again.n_computed == len(seg.question)
    assert f"{len(seg)}/{len(seg)} prompt tokens computed" in str(first.cost)


def test_a_one_chunk_overflow_says_chunk(tiny):  # noqa: F811
    from ragkit.errors import ParamError
    from ragkit.generators.local import LocalGenerator

    with pytest.raises(ParamError, match=r"\(1 chunk, the longest"):
        LocalGenerator(tiny[0], max_chunk_tokens=700).generate(TINY_Q, ["cells " * 100], max_new_tokens=1)
