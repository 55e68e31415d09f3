"""Damaged shards of the embedding cache are set aside with a warning, never served (ragkit/encoders/cache.py).

Old code skipped a truncated, huge-header, object-dtype or short shard silently (its texts were encoded again,
no word of why), and served a shard whose vectors had another width than the model's (10 for a 384-d model:
``Dense.fit`` indexed them, and the queries failed blaming the encoder), or NaN vectors (the index refused
them, blaming the encoder: "returned 20 of the 20 document vectors with NaN").  Now each is logged on the
``ragkit`` logger (once per shard file and process), naming the file and why, and its texts are encoded again.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import numpy as np
import pytest

from ragkit.encoders import cache as cache_mod
from ragkit.encoders.cache import WIDTH_FILE, EmbeddingCache, text_digests

KEY = "test-model@corrupt"
DIM = 8
TEXTS = [f"text {i}" for i in range(20)]


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    """Each test sees its own warnings (they are said once per shard file and process)."""
    monkeypatch.setattr(cache_mod, "_SET_ASIDE_SAID", set())


class Model:
    """A stand-in encoder: ``DIM``-wide vectors, the texts it was asked for remembered."""

    def __init__(self, nan: set[str] | None = None) -> None:
        self.asked: list[str] = []
        self.nan = nan or set()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.asked += texts
        out = np.stack([np.full(DIM, float(TEXTS.index(t) + 1), np.float32) for t in texts])
        out[[t in self.nan for t in texts]] = np.nan
        return out


def _want(texts: list[str] = TEXTS) -> np.ndarray:
    return Model()(texts)


def _shard_file(root: Path) -> Path:
    (keys,) = EmbeddingCache(root, KEY).folder.glob("*.keys.npy")
    return keys.with_name(keys.name.replace(".keys.npy", ".npy"))


def _filled(root: Path) -> Path:
    """The cache at ``root`` holding the vectors of ``TEXTS`` (one shard, as ragkit writes it); its vectors file."""
    vecs, n = EmbeddingCache(root, KEY).fetch_or_compute(TEXTS, Model())
    assert n == len(TEXTS)
    return _shard_file(root)


def _npy_header_only(path: Path, shape: tuple[int, ...]) -> None:
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})


DAMAGES = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:200]), "its vectors file is unreadable"),
    "huge header": (lambda p: _npy_header_only(p, (10**12, DIM)), "its vectors file is unreadable"),
    "object dtype": (lambda p: np.save(p, np.array([None] * 20, dtype=object), allow_pickle=True),
                     "Object arrays cannot be loaded"),
    "short": (lambda p: np.save(p, np.ones((5, DIM), np.float32)),
              "its vectors file holds 5 rows but its keys file names 20 texts"),
    "one-dimensional": (lambda p: np.save(p, np.ones(20, np.float32)), "not (n, dim) numbers"),
    "other width": (lambda p: np.save(p, np.ones((20, 3), np.float32)),
                    f"its vectors have 3 dimensions, but the model's (as {WIDTH_FILE} records) have {DIM}"),
    "NaN": (lambda p: np.save(p, np.full((20, DIM), np.nan, np.float32)), "it holds NaN or infinite values"),
    "keys damaged": (lambda p: p.with_name(p.name.replace(".npy", ".keys.npy")).write_bytes(b"\x93NUMPY"),
                     "its keys file"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_shard_is_warned_of_once_and_its_texts_encoded_again(tmp_path, caplog, damage):
    """Old code: no warning for any of them; the shard of another width was served ((20, 3) vectors for a model
    of 8), and so were the NaN vectors."""
    shard = _filled(tmp_path)
    edit, reason = DAMAGES[damage]
    edit(shard)
    model = Model()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        vecs, n = EmbeddingCache(tmp_path, KEY).fetch_or_compute(TEXTS, model)
        again, n_again = EmbeddingCache(tmp_path, KEY).fetch_or_compute(TEXTS, Model())  # (another reader)
    np.testing.assert_array_equal(vecs, _want())
    assert n == 20 and model.asked == TEXTS
    np.testing.assert_array_equal(again, _want())
    assert n_again == 0  # (the texts encoded again were cached in a new shard)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("ragkit") and str(shard) in r.getMessage()]
    assert len(said) == 1, caplog.text  # (once per shard file and process)
    assert "is set aside, not read" in said[0] and reason in said[0], said[0]
    assert "encoded again" in said[0]


def test_the_model_width_is_recorded_and_a_mixed_width_lookup_recomputes(tmp_path, caplog):
    """A folder without its width file (an older ragkit's) holding 3-wide vectors of some texts: the model's
    8-wide vectors of the others set those aside, and the whole batch comes back 8 wide.  Old code: numpy's
    "could not broadcast input array from shape (10,8) into shape (10,3)"."""
    folder = EmbeddingCache(tmp_path, KEY).folder
    folder.mkdir(parents=True)
    (folder / "MODEL").write_text(KEY, encoding="utf-8")
    name = uuid.uuid4().hex
    np.save(folder / f"{name}.npy", np.ones((10, 3), np.float32))
    np.save(folder / f"{name}.keys.npy", text_digests(TEXTS[:10]))
    model = Model()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        vecs, n = EmbeddingCache(tmp_path, KEY).fetch_or_compute(TEXTS, model)
    np.testing.assert_array_equal(vecs, _want())
    assert n == 20 and sorted(model.asked) == sorted(TEXTS)
    assert (folder / WIDTH_FILE).read_text().strip() == str(DIM)
    assert f"{name}.npy is set aside, not read: its vectors have 3 dimensions, but the model's have {DIM}" \
        in caplog.text


def test_vectors_of_nan_computed_are_not_cached(tmp_path):
    """The encoder's own NaN vectors are returned (the caller blames the encoder) but not cached.  Old code:
    cached, so the next run read them back, encoding nothing, and the cache was blamed for nothing."""
    model = Model(nan={TEXTS[3]})
    vecs, _ = EmbeddingCache(tmp_path, KEY).fetch_or_compute(TEXTS, model)
    assert np.isnan(vecs[3]).all() and np.isfinite(np.delete(vecs, 3, axis=0)).all()
    second = Model()
    vecs, n = EmbeddingCache(tmp_path, KEY).fetch_or_compute(TEXTS, second)
    assert n == 1 and second.asked == [TEXTS[3]]
    np.testing.assert_array_equal(vecs, _want())


def test_a_nan_shard_gives_way_to_a_sound_copy_of_its_texts(tmp_path, caplog):
    """The texts of a damaged shard held by another shard too are read from that one, not encoded again."""
    digests = text_digests(TEXTS)
    cache = EmbeddingCache(tmp_path, KEY)
    cache.put(digests, _want())
    sound = _shard_file(tmp_path)
    bad = sound.with_name(f"{'f' * 32}.npy")  # (loaded after the sound one: a tie in size, later in name order)
    np.save(bad, np.full((20, DIM), np.nan, np.float32))
    np.save(bad.with_name(f"{'f' * 32}.keys.npy"), digests)
    reader = EmbeddingCache(tmp_path, KEY)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        got, hit = reader.get(digests)
    assert hit.all()
    np.testing.assert_array_equal(got, _want())
    assert f"{bad} is set aside, not read: it holds NaN or infinite values" in caplog.text


def test_a_wrong_width_file_gives_way_to_the_model(tmp_path, caplog):
    """A width file that disagrees with what the model computes: the model's width is taken and recorded."""
    cache = EmbeddingCache(tmp_path, KEY)
    cache.folder.mkdir(parents=True)
    (cache.folder / WIDTH_FILE).write_text("5\n")
    vecs, n = cache.fetch_or_compute(TEXTS, Model())
    np.testing.assert_array_equal(vecs, _want())
    assert (cache.folder / WIDTH_FILE).read_text().strip() == str(DIM)
    vecs, n = EmbeddingCache(tmp_path, KEY).fetch_or_compute(TEXTS, Model())
    assert n == 0
    np.testing.assert_array_equal(vecs, _want())

