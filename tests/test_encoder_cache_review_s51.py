"""Review s51 of the encoders' caches (ragkit/encoders/cache.py, tokens.py, ragkit/_files.py).

* A token cache shard that is truncated or unreadable was set aside silently (hits 0, no word), though the module
  promises a warning: now a ``RuntimeWarning`` naming the file, once per file and process, as the embedding
  cache logs its own.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import ragkit.encoders.tokens as tokens_mod
from ragkit.encoders.cache import text_digests
from ragkit.encoders.tokens import TokenCache, TokenVectors


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
