"""A chunk cache's disk tier never takes over, ranks or deletes files it did not write (a security review,
2026-12-05: ``generate.cache_dir`` naming a models folder deleted the models when the tier was trimmed, since
an unreadable file ranked lowest and went first).  Fast: the store alone, random rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ragkit.caches import ChunkKVCache, ChunkVariant
from ragkit.caches.chunk_kv import check_cache_dir
from ragkit.errors import ArtifactError


def _variant(n: int = 10, prefix: tuple[str, ...] = (), seed: int = 0) -> ChunkVariant:
    k = torch.randn(2, 3, n, 8, generator=torch.Generator().manual_seed(seed))
    return ChunkVariant(
        keys=k, values=k * 2, start=5, prefix_ids=prefix, prefix_lens=tuple(4 for _ in prefix),
        inter=np.ones((2, len(prefix)), np.float32), intra=np.full(2, 3.0, np.float32),
        sys_inter=np.full(2, 0.5, np.float32), sys_len=4, token_scores=np.arange(n, dtype=np.float32), cci=0.7)


def test_a_folder_of_other_files_is_refused_as_a_cache_dir(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "my-finetuned-model").mkdir(parents=True)
    (models / "my-finetuned-model" / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(ArtifactError, match=r"holds 'my-finetuned-model/model\.safetensors' and no chunk-cache "
                                            r"manifest\.json; expected a new or empty folder"):
        check_cache_dir(models)
    with pytest.raises(ArtifactError, match="no chunk-cache manifest"):
        ChunkKVCache("m", "t", disk_dir=models)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    with pytest.raises(ArtifactError, match=r"holds 'todo\.txt'"):
        ChunkKVCache("m", "t", disk_dir=tmp_path / "notes")
    assert (models / "my-finetuned-model" / "model.safetensors").read_bytes() == b"weights"
    assert not (models / "manifest.json").exists()


def test_new_empty_and_own_folders_are_still_taken(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for d in (tmp_path / "new" / "sub", tmp_path / "empty"):
        store = ChunkKVCache("m", "t", disk_dir=d)
        store.put("k", _variant())
        store.flush()
    # a cache folder whose manifest went missing, holding only variant files and dot files, is taken back
    own = tmp_path / "empty"
    (own / "manifest.json").unlink()
    (own / ".trim.lock").touch()
    assert check_cache_dir(own) is None
    assert len(ChunkKVCache("m", "t", disk_dir=own).lookup("k")) == 1


def test_a_trim_deletes_variant_files_only(tmp_path: Path) -> None:
    store = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=0)
    store.put("k", _variant())
    # other files put into the cache folder afterwards: a trim far below the tier's size leaves them alone
    (tmp_path / "k" / "notes.safetensors").write_bytes(b"not a variant")
    (tmp_path / "k" / "README").write_text("mine")
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "model.safetensors").write_bytes(b"weights")
    tiny = ChunkKVCache("m", "t", disk_dir=tmp_path, budget_bytes=0, disk_budget_bytes=1)
    for i in range(3):
        tiny.put(f"k{i}", _variant(seed=i))
    tiny.flush()
    assert (tmp_path / "k" / "notes.safetensors").read_bytes() == b"not a variant"
    assert (tmp_path / "k" / "README").read_text() == "mine"
    assert (tmp_path / "stuff" / "model.safetensors").read_bytes() == b"weights"
    assert not [f for f in tmp_path.glob("*/*.safetensors") if len(f.stem) == 16]  # every variant trimmed
