"""The LangChain integration, review s50.

- ``LangChainEmbeddingsEncoder.store`` turned every character outside ``[A-Za-z0-9-_.]`` of its key into ``_``
  before naming the cache folder: keys "org/model-v1", "org:model-v1" and "org_model-v1" shared one folder, so
  one model's vectors were served for another.  The key is passed unchanged, and the reader is shared per
  process and cache folder with ``Encoder.store``'s (``$RAGKIT_CACHE`` read at each use).
- With ``cache=True`` and no key, an ``Embeddings`` that is no pydantic model was keyed by its object id, which
  CPython gives to the next object once it is freed (and the disk cache outlives the process): a new model was
  served an old one's vectors.  ``cache=True`` is refused there, saying to pass ``key=``.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from ragkit.errors import ParamError
from ragkit.integrations.langchain import LangChainEmbeddingsEncoder


class _Counting(DeterministicFakeEmbedding):
    """A fake embedding that counts the texts it embedded."""

    n: int = 0

    def embed_documents(self, texts):  # noqa: ANN001, ANN201
        self.n += len(texts)
        return super().embed_documents(texts)


@pytest.mark.parametrize("other", ["org:model-v1", "org_model-v1"])
def test_keys_differing_in_punctuation_have_their_own_cache(tmp_path, monkeypatch, other):
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    a = LangChainEmbeddingsEncoder(DeterministicFakeEmbedding(size=8), key="org/model-v1", cache=True)
    b = LangChainEmbeddingsEncoder(_Counting(size=8, seed=1), key=other, cache=True)
    assert a.store.folder != b.store.folder
    a.encode(["hello world"])
    vb = b.encode(["hello world"])
    assert b.n_encoded == 1  # computed by b's model, not read from a's folder
    want = np.asarray(_Counting(size=8, seed=1).embed_documents(["hello world"]), np.float32)
    np.testing.assert_allclose(vb, want / np.linalg.norm(want, axis=1, keepdims=True), rtol=1e-6)


def test_safe_key_keeps_its_cache_folder(tmp_path, monkeypatch):
    """A key of only letters, digits, '-', '_' and '.' names the folder it named before (caches kept)."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    enc = LangChainEmbeddingsEncoder(DeterministicFakeEmbedding(size=8), key="my-model_v1.2", cache=True)
    assert enc.store.folder == tmp_path / "embeddings" / hashlib.sha1(b"my-model_v1.2").hexdigest()[:16]


def test_one_key_shares_a_reader_and_follows_ragkit_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "one"))
    a = LangChainEmbeddingsEncoder(_Counting(size=8), key="shared-8", cache=True)
    b = LangChainEmbeddingsEncoder(_Counting(size=8), key="shared-8", cache=True)
    assert a.store is b.store
    a.encode(["x", "y"])
    b.encode(["x", "y"])
    assert (a.n_encoded, b.n_encoded) == (2, 0)
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "two"))
    assert a.store.folder.parent == tmp_path / "two" / "embeddings"
    a.encode(["x"])
    assert a.n_encoded == 3  # a new cache folder: encoded again


class _Plain(Embeddings):
    """An ``Embeddings`` that is no pydantic model (no settings ragkit can hash)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [list(np.random.default_rng(self.seed).random(4)) for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def test_cache_refused_under_an_object_id_key(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    with pytest.raises(ParamError, match=r"cache=True needs a key naming the model.*_Plain.*object id.*pass key="):
        LangChainEmbeddingsEncoder(_Plain(0), cache=True)
    uncached = LangChainEmbeddingsEncoder(_Plain(0))  # no cache: the id key is fine
    assert uncached.encode(["abc"]).shape == (1, 4)
    with pytest.raises(ParamError, match="cache=True needs a key"):
        uncached.encode(["abc"], cache=True)
    named = LangChainEmbeddingsEncoder(_Plain(0), key="plain-seed-0", cache=True)
    named.encode(["abc"])
    assert named.n_encoded == 1
