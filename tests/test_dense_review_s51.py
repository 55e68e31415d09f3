"""Review s51 of the dense index: a verified load does not CRC32 the index files again, exact b1 search of a few
queries by a byte lookup table, VectorIndex.search's columns at most the slots, DenseParams.oversample's
description, one NaN/inf scan naming the first bad row."""

import json

import pytest
from conftest import HashedEncoder

from ragkit.encoders import register_encoder
from ragkit.operator import Operator
from ragkit.retrievers import Dense, _index_files
from ragkit.types import Corpus

register_encoder("dense-s51-hashed", HashedEncoder("dense-s51-hashed-v1", 32), replace=True)


def _corpus(n: int) -> Corpus:
    return Corpus([f"d{i}" for i in range(n)], [f"text {i} word{i % 7} term{i % 11}" for i in range(n)])


def _counting_crc(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    orig = _index_files._crc

    def crc(path):  # noqa: ANN001, ANN202
        calls.append(str(path).rsplit("/", 1)[-1])
        return orig(path)

    monkeypatch.setattr(_index_files, "_crc", crc)
    return calls


def test_verified_load_reads_no_index_crc(tmp_path, monkeypatch) -> None:
    """Operator.load's SHA-256 sums cover the index files: the index's own CRC32s are not recomputed (each read
    every file a second time); verify=False keeps them (README: an index still checks its own CRC32)."""
    d = Dense(model="dense-s51-hashed", k=5, dtype="i8", rescore=True).fit(_corpus(300))
    d.save(tmp_path / "m")
    calls = _counting_crc(monkeypatch)
    for mmap in (False, True):
        Operator.load(tmp_path / "m", mmap=mmap)
        assert calls == [], calls
    Operator.load(tmp_path / "m", mmap=True, verify=False)
    assert sorted(calls) == sorted(f"index.{n}.npy" for n in ("alive", "codes", "floats", "i8_min", "i8_step"))


def test_verify_false_still_refuses_a_corrupt_index_file(tmp_path) -> None:
    from ragkit.errors import ArtifactError

    d = Dense(model="dense-s51-hashed", k=5, dtype="i8").fit(_corpus(50))
    d.save(tmp_path / "m")
    p = tmp_path / "m" / "index.codes.npy"
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="CRC32"):
        Operator.load(tmp_path / "m", verify=False)


def test_save_takes_crc_while_writing(tmp_path, monkeypatch) -> None:
    """The arrays a save writes are checksummed as they are written (no read-back), to the same CRC32."""
    d = Dense(model="dense-s51-hashed", k=5, dtype="i8", rescore=True).fit(_corpus(300))
    calls = _counting_crc(monkeypatch)
    d.index_.save(tmp_path / "ix")
    assert calls == ["index.floats.npy"]  # (the scratch file mapped, copied whole: read back)
    files = json.loads((tmp_path / "ix" / "index.json").read_text())["files"]
    monkeypatch.undo()
    for name, info in files.items():
        assert info["crc32"] == _index_files._crc(tmp_path / "ix" / name), name
