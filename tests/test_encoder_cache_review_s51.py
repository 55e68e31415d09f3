"""Review s51 of the encoders' caches (ragkit/encoders/cache.py, tokens.py, ragkit/_files.py).

* A token cache shard that is truncated or unreadable was set aside silently (hits 0, no word), though the module
  promises a warning: now a ``RuntimeWarning`` naming the file, once per file and process, as the embedding
  cache logs its own.
* A text given several times and not cached was computed once per occurrence and stored once per occurrence
  (1,000 copies of one text: 1,000 rows computed, a shard of 1,000 keys), by the embedding cache
  (``fetch_or_compute``) and the token encoder alike: now once.
* ``atomic_file`` renamed its temporary file into place without ``fsync``: after a power loss a renamed cache shard
  could be empty or zero-filled (finite numbers: no check refused them).  Now the file is flushed before the
  rename, and a cache whose model gives unit vectors (``EmbeddingCache(unit_length=True)``) refuses rows that are
  not (an all-zero or partly zeroed row), setting the shard aside.
* ``get_token_encoder`` / ``TokenEncoder`` skipped ``get_encoder``'s argument checks: ``None`` as the model was
  ``AttributeError: 'NoneType' object has no attribute 'lower'``, ``batchsize=8`` a raw ``TypeError``,
  ``batch_size=0`` a ``ValueError`` from ``range()`` at the first encode.  Now the same errors as ``get_encoder``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

import ragkit.encoders.cache as cache_mod
import ragkit.encoders.tokens as tokens_mod
from ragkit import _files
from ragkit.encoders.cache import EmbeddingCache, text_digests
from ragkit.encoders.tokens import TokenCache, TokenEncoder, TokenVectors, get_token_encoder
from ragkit.errors import InputTypeError, ParamError


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    """Each test sees its own warnings (said once per shard file and process)."""
    monkeypatch.setattr(tokens_mod, "_SET_ASIDE_SAID", set(), raising=False)
    monkeypatch.setattr(cache_mod, "_SET_ASIDE_SAID", set())


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


# ---------------------------------------------------------------------- durable writes


@pytest.fixture
def synced(monkeypatch):
    """The inodes ``os.fsync`` was called on, each with whether it was already renamed into place then."""
    seen: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        seen.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def test_atomic_file_flushes_the_file_before_renaming_it(tmp_path, synced):
    """Old code: no fsync at all; the rename could reach the disk before the data."""
    target = tmp_path / "x.npy"
    with _files.atomic_file(target) as tmp:
        np.save(tmp, np.arange(10.0))
        inode = os.stat(tmp).st_ino
        assert synced == []
    assert inode in synced and os.stat(target).st_ino == inode
    synced.clear()
    with _files.atomic_file(tmp_path / "y.txt", durable=False) as tmp:
        tmp.write_text("scratch")
    assert synced == []


def test_every_vectors_file_of_a_cache_shard_is_flushed(tmp_path, synced):
    """The embedding cache's vectors and the token cache's each reach the disk first; the keys and offsets files,
    which a read refuses when a power loss left them empty or zero-filled, are not flushed (cache.NOT_FLUSHED)."""
    cache = EmbeddingCache(tmp_path / "e", "k")
    cache.fetch_or_compute(["a", "b"], lambda ts: np.eye(2, 4, dtype=np.float32))
    _, name, folder = _token_shard(tmp_path / "t")
    files = [*cache.folder.glob("*.npy"), *folder.glob("*.npy")]
    assert len(files) == 5
    vectors = [p for p in files if not p.name.endswith((".keys.npy", ".offsets.npy"))]
    assert len(vectors) == 2 and {os.stat(p).st_ino for p in vectors} <= set(synced)
    assert not {os.stat(p).st_ino for p in files if p not in vectors} & set(synced)


def test_fsync_tree_flushes_every_file_and_folder(tmp_path, synced):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("x.json", "a/y.npy", "a/b/z.npy"):
        (tmp_path / rel).write_bytes(b"data")
    assert _files.fsync_tree(tmp_path) == 3
    paths = [tmp_path, tmp_path / "a", tmp_path / "a" / "b",
             *(tmp_path / r for r in ("x.json", "a/y.npy", "a/b/z.npy"))]
    assert {os.stat(p).st_ino for p in paths} <= set(synced)


def _zeroed_cache(root: Path, unit_length: bool) -> tuple[list[str], np.ndarray, Path]:
    """A cache of 5,000 unit vectors (one memory-mapped shard) whose last row and a half were zeroed in the file, as
    a disk that lost the end of the data leaves it: the texts, their vectors, the shard's vectors file."""
    texts = [f"doc {i}" for i in range(5000)]
    vecs = np.random.default_rng(0).standard_normal((5000, 64)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    at = {t: i for i, t in enumerate(texts)}
    EmbeddingCache(root, "k", unit_length=unit_length).fetch_or_compute(texts, lambda ts: vecs[[at[t] for t in ts]])
    (keys,) = EmbeddingCache(root, "k").folder.glob("*.keys.npy")
    path = keys.with_name(keys.name.replace(".keys.npy", ".npy"))
    raw = bytearray(path.read_bytes())
    raw[-6 * 64:] = bytes(6 * 64)  # the last row and a half: zero
    path.write_bytes(bytes(raw))
    return texts, vecs, path


def test_zeroed_rows_of_a_unit_vector_cache_are_refused(tmp_path, caplog):
    """Old code (no unit-length check): the zeroed rows were served as vectors (0 computed, the last row all zeros)."""
    texts, vecs, path = _zeroed_cache(tmp_path, unit_length=True)
    asked: list[str] = []
    at = {t: i for i, t in enumerate(texts)}

    def compute(ts: list[str]) -> np.ndarray:
        asked.extend(ts)
        return vecs[[at[t] for t in ts]]

    with caplog.at_level(logging.WARNING, logger="ragkit"):
        got, n = EmbeddingCache(tmp_path, "k", unit_length=True).fetch_or_compute(texts, compute)
    assert n == 5000 and asked == texts  # the shard set aside: every text computed again
    np.testing.assert_array_equal(got, vecs)
    assert path.name in caplog.text and "not of unit length" in caplog.text
    # not unit_length (a registered encoder's cache: zero vectors may be its own): served as it is
    got, n = EmbeddingCache(tmp_path / "other", "k").fetch_or_compute(["z"], lambda ts: np.zeros((1, 64), np.float32))
    got, n = EmbeddingCache(tmp_path / "other", "k").fetch_or_compute(["z"], compute)
    assert n == 0 and not got.any()


def test_a_unit_vector_cache_does_not_store_rows_that_are_not(tmp_path):
    """Rows the model gave that are not unit length are returned, not cached (each read would set the shard aside)."""
    cache = EmbeddingCache(tmp_path, "k", unit_length=True)
    vecs = np.array([[1, 0, 0], [0, 0, 0], [0, 0.6, 0.8]], np.float32)
    got, n = cache.fetch_or_compute(["a", "b", "c"], lambda ts: vecs)
    np.testing.assert_array_equal(got, vecs)
    assert _keys_stored(cache.folder) == 2
    got, n = EmbeddingCache(tmp_path, "k", unit_length=True).fetch_or_compute(["a", "b", "c"], lambda ts: vecs[[1]])
    assert n == 1
    np.testing.assert_array_equal(got, vecs)


# ---------------------------------------------------------------------- get_token_encoder's arguments


@pytest.mark.parametrize("make", [get_token_encoder, TokenEncoder], ids=["get_token_encoder", "TokenEncoder"])
@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"model": None}, InputTypeError, r"model is NoneType None; expected a model name or folder"),
    ({"model": "  "}, ParamError, r"model is blank"),
    ({"batch_size": 0}, ParamError, r"batch_size is int 0; expected a positive int"),
    ({"batch_size": -3}, ParamError, r"batch_size is int -3; expected a positive int"),
    ({"batch_size": 8.0}, ParamError, r"batch_size is float 8.0; expected a positive int"),
    ({"batch_size": True}, ParamError, r"batch_size is bool True"),
    ({"max_seq_length": 0}, ParamError, r"max_seq_length is int 0; expected None"),
])
def test_token_encoder_arguments_are_checked_before_any_model_work(make, kwargs, error, match):
    """Old code: AttributeError ('NoneType' object has no attribute 'lower'), or no error until the first encode
    (range() arg 3 must not be zero)."""
    kwargs = dict(kwargs)
    model = kwargs.pop("model", "no-such-model-ever")  # (checked before the model is looked for)
    who = make.__name__
    with pytest.raises(error, match=rf"^{who}: {match}"):
        make(model, **kwargs)


def test_get_token_encoder_names_an_unknown_keyword_and_the_closest():
    """Old code: TypeError: TokenEncoder.__init__() got an unexpected keyword argument 'batchsize'."""
    with pytest.raises(ParamError, match=r"^get_token_encoder: unknown keyword 'batchsize' \(did you mean "
                                         r"'batch_size'\?\); a TokenEncoder takes batch_size, max_seq_length, "
                                         r"special_tokens, cache$"):
        get_token_encoder(batchsize=8)
    with pytest.raises(ParamError, match=r"special_tokens") as e:
        get_token_encoder("no-such-model-ever", special_tokens="none")
    assert e.value.path == "special_tokens"


# ---------------------------------------------------------------------- unit-length check: tolerance and dtype


def test_unit_check_keeps_bf16_rounding_and_refuses_zero_nan_and_overflow(tmp_path):
    """Old code (tolerance 1e-3): a row of squared norm 1.006, as a model loaded in bfloat16 normalises it, was
    refused: not cached, and re-encoded on every run.  A zero row, NaN and a row whose squares overflow float32
    stay refused."""
    off = np.zeros((1, 4), np.float32)
    off[0, 0] = np.sqrt(np.float32(1.006))
    nan = np.array([[np.nan, 0, 0, 0]], np.float32)
    huge = np.array([[1e30, 0, 0, 0]], np.float32)
    cache = EmbeddingCache(tmp_path, "k", unit_length=True)
    np.testing.assert_array_equal(
        cache._rows_fit(np.concatenate([off, np.zeros((1, 4), np.float32), nan, huge])),
        [True, False, False, False])
    vecs = np.concatenate([off, np.zeros((1, 4), np.float32), nan, huge])
    got, n = cache.fetch_or_compute(["a", "b", "c", "d"], lambda ts: vecs)
    assert n == 4 and _keys_stored(cache.folder) == 1  # only the bf16-rounded row is cached
    got, n = EmbeddingCache(tmp_path, "k", unit_length=True).fetch_or_compute(["a"], lambda ts: 1 / 0)
    assert n == 0
    np.testing.assert_array_equal(got, off)


def test_one_put_flushes_one_file(tmp_path, monkeypatch):
    """Old code: a put flushed its vectors, its keys and (first put) the folder's WIDTH file, ~8 ms each for one row;
    only the vectors need it (the others are refused when read back empty or zero-filled)."""
    calls: list[str] = []
    real = _files.fsync_path
    monkeypatch.setattr(_files, "fsync_path", lambda p: (calls.append(str(p)), real(p))[1])
    cache = EmbeddingCache(tmp_path, "k")
    cache.put(text_digests(["a"]), np.eye(1, 4, dtype=np.float32))
    assert len(calls) == 1
    cache.put(text_digests(["b"]), np.eye(1, 4, dtype=np.float32))
    assert len(calls) == 2
    # what a power loss may leave of the unflushed files: zero-filled keys and WIDTH; refused, not served
    for path in [*cache.folder.glob("*.keys.npy"), cache.folder / cache_mod.WIDTH_FILE]:
        path.write_bytes(bytes(path.stat().st_size))
    got, n = EmbeddingCache(tmp_path, "k").fetch_or_compute(
        ["a", "b"], lambda ts: np.full((len(ts), 4), 0.5, np.float32))
    assert n == 2 and (got == 0.5).all()
