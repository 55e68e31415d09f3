"""HashingEncoder: the model-free encoder of the docstring examples and offline smoke runs."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.encoders import HashingEncoder, get_encoder, register_encoder, unregister_encoder
from ragkit.errors import ParamError
from ragkit.retrievers import Dense
from ragkit.types import Corpus


def test_vectors_are_unit_deterministic_and_count_words():
    enc = HashingEncoder(dim=32)
    v = enc.encode(["red apples red", "RED apples, red!", "", "pears"])
    assert v.shape == (4, 32) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(v[0], v[1])  # case and punctuation do not count
    assert np.ptp(v[2]) == 0  # no words: the uniform direction
    np.testing.assert_array_equal(enc.encode_queries(["pears"])[0], v[3])
    assert enc.key == "hashing-bow-v1-32" and HashingEncoder(dim=64).key != enc.key
    # CRC32, not Python's salted hash: the same bucket in every process
    import zlib

    assert int(np.argmax(v[3])) == zlib.crc32(b"pears") % 32


@pytest.mark.parametrize("dim", [0, -3, 2.5, True, "64"])
def test_a_bad_dim_is_a_param_error_naming_it(dim):
    with pytest.raises(ParamError, match=r"dim must be a positive int"):
        HashingEncoder(dim=dim)


def test_registered_it_drives_dense():
    register_encoder("test-hashing", HashingEncoder(dim=64), replace=True)
    try:
        assert get_encoder("test-hashing").dim == 64
        dense = Dense(model="test-hashing", k=2).fit(Corpus.from_texts(["red apples", "green pears", "red cars"]))
        assert dense.search(["green pears"]).doc_ids[0][0] == "1"
    finally:
        unregister_encoder("test-hashing")
