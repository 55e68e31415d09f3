"""Review s51 of the encoders' caches (ragkit/encoders/cache.py, tokens.py, ragkit/_files.py).

* A token cache shard that is truncated or unreadable was set aside silently (hits 0, no word), though the module
  promises a warning: now a ``RuntimeWarning`` naming the file, once per file and process, as the embedding
  cache logs its own.
* A text given several times and not cached was computed once per occurrence and stored once per occurrence
  (1,000 copies of one text: 1,000 rows computed, a shard of 1,000 keys), by the embedding cache
  (``fetch_or_compute``) and the token encoder alike: now once.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import ragkit.encoders.tokens as tokens_mod
from ragkit.encoders.cache import EmbeddingCache, text_digests
from ragkit.encoders.tokens import TokenCache, TokenEncoder, TokenVectors


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    """Each test sees its own warnings (said once per shard file and process)."""
    monkeypatch.setattr(tokens_mod, "_SET_ASIDE_SAID", set(), raising=False)


# ---------------------------------------------------------------------- token cache: set aside, warned


def _token_shard(root: Path) -> tuple[np.ndarray, str, Path]:
    """A token cache at ``root`` holding 10 texts in one shard: their digests, the shard's name, its folder."""
    digests = text_digests([f"t{i}" for i in range(10)])
    off = np.concatenate([[0], np.cumsum(np.arange(1, 11))])
    data = np.random.default_rng(0).random((int(off[-1]), 8)).astype(np.float16)
    tc = TokenCache(root, "k")
    tc.put(digests, TokenVectors(data, off))
    (keys,) = tc.folder.glob("*.keys.npy")
    return digests, keys.name[: -len(".keys.npy")], tc.folder


@pytest.mark.parametrize("damage", ["vectors", "offsets", "keys"])
def test_a_truncated_token_shard_is_warned_of_once(tmp_path, damage):
    """Old code: hits 0 and no warning at all (ShardStore._set_aside was silent for the token cache)."""
    digests, name, folder = _token_shard(tmp_path)
    suffix = {"vectors": ".npy", "offsets": ".offsets.npy", "keys": ".keys.npy"}[damage]
    path = folder / f"{name}{suffix}"
    path.write_bytes(path.read_bytes()[:-16])
    with pytest.warns(RuntimeWarning, match=rf"token cache shard .*{name}\.npy is set aside.*encoded again"):
        _, hit = TokenCache(tmp_path, "k").parts(digests)
    assert not hit.any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per file and process: a second reader says nothing
        _, hit = TokenCache(tmp_path, "k").parts(digests)
    assert not hit.any()


def test_a_token_shard_with_nan_is_warned_of_once_not_twice(tmp_path):
    """A shard found not finite is warned of by _sound; reading the index again without it says nothing more."""
    digests, name, folder = _token_shard(tmp_path)
    path = folder / f"{name}.npy"
    raw = bytearray(path.read_bytes())
    raw[-2:] = np.array([np.nan], np.float16).tobytes()
    path.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning) as said:
        _, hit = TokenCache(tmp_path, "k").parts(digests)
    assert not hit.any()
    assert len([w for w in said if name in str(w.message)]) == 1, [str(w.message) for w in said]


def test_a_token_shard_whose_files_are_gone_is_passed_over_silently(tmp_path):
    """A shard retired by another process (its vectors file deleted first) is no damage: no warning."""
    digests, name, folder = _token_shard(tmp_path)
    (folder / f"{name}.npy").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, hit = TokenCache(tmp_path, "k").parts(digests)
    assert not hit.any()


# ---------------------------------------------------------------------- repeated texts computed once


def _keys_stored(folder: Path) -> int:
    return sum(len(np.load(p)) for p in folder.glob("*.keys.npy"))


def test_a_repeated_text_is_computed_and_stored_once(tmp_path):
    """Old code: compute got 1,003 texts, the shard 1,003 keys."""
    asked: list[list[str]] = []

    def compute(texts: list[str]) -> np.ndarray:
        asked.append(list(texts))
        return np.stack([np.full(4, float(len(t)), np.float32) for t in texts])

    texts = ["b"] + ["same"] * 1000 + ["cc", "b", "dddd"]
    cache = EmbeddingCache(tmp_path, "k")
    got, n = cache.fetch_or_compute(texts, compute)
    assert asked == [["b", "same", "cc", "dddd"]] and n == 4  # each distinct text once, in order
    np.testing.assert_array_equal(got, compute(texts))
    assert _keys_stored(cache.folder) == 4
    # some cached, the rest repeated: only the distinct missing ones
    asked.clear()
    got, n = EmbeddingCache(tmp_path, "k").fetch_or_compute(["e", "same", "e", "cc", "e"], compute)
    assert asked == [["e"]] and n == 1
    np.testing.assert_array_equal(got, compute(["e", "same", "e", "cc", "e"]))


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """test_tokens_memory's fake token model (no download), counting the texts its transformer module runs on."""
    from test_tokens_memory import FakeModel

    model = FakeModel()
    model.texts_run = 0
    forward = model.module.forward

    def counted(feats: dict) -> dict:
        model.texts_run += int(feats["input_ids"].shape[0])
        return forward(feats)

    model.module.forward = counted
    monkeypatch.setattr(TokenEncoder, "model", property(lambda self: model))
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    return model


@pytest.mark.parametrize("large", [False, True], ids=["in-memory", "into-a-shard"])
def test_a_repeated_text_is_token_encoded_and_stored_once(fake, monkeypatch, tmp_path, large):
    """Old code: the model ran on 102 texts (the 120 less the 18 copies of the 3 cached) and the cache stored
    them all (102 keys more)."""
    from test_tokens_memory import _reference, _same, _texts

    if large:
        monkeypatch.setattr(tokens_mod, "CONSOLIDATE_BYTES", 1)
    distinct = _texts(23, seed=5)
    TokenEncoder(batch_size=8).encode(distinct[:3])  # cached before
    fake.texts_run = 0
    texts = [distinct[i % 23] for i in range(120)]
    enc = TokenEncoder(batch_size=8)
    got = enc.encode(texts)
    assert _same(got, _reference(texts, fake))
    assert fake.texts_run == 20 and enc.n_encoded == 20
    assert isinstance(got.data, np.memmap) == large
    folder = enc.store.folder
    if not large:
        assert _keys_stored(folder) == 23  # the 3 cached before, the 20 new once each
    # read back whole, nothing encoded
    fake.texts_run = 0
    again = TokenEncoder(batch_size=8).encode(texts)
    assert _same(again, _reference(texts, fake)) and fake.texts_run == 0

