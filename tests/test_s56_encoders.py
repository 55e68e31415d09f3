"""Review s56 of the encoders: shared encoders keyed by a local folder's absolute path, what ``normalize=False``
means, document vectors keyed by the document prompt alone, the LangChain adapter's and the encoders' settings
checked when made, ``encode_queries(cache=True)`` honoured, the progress bar with the cache off, HashingEncoder's
texts checked, ``RagkitEmbeddings("")`` refused and ``special_tokens="drop"`` keeping ``[UNK]``.

The sentence and token encoders here run on a tiny folder with a ``config.json`` alone and a forward pass of
their own (no model is loaded), except the ``[UNK]`` test, which reads MiniLM's tokenizer and model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragkit.encoders import sentence, tokens
from ragkit.encoders.custom import HashingEncoder
from ragkit.encoders.sentence import Encoder, get_encoder
from ragkit.encoders.tokens import TokenEncoder, TokenVectors, get_token_encoder
from ragkit.errors import DataError, ParamError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sentence, "_ENCODERS", {})
    monkeypatch.setattr(tokens, "_TOKEN_ENCODERS", {})


def _folder(at: Path, tag: int) -> Path:
    """A model folder whose files differ by ``tag`` (a ``config.json`` alone: fingerprinted, never loaded)."""
    at.mkdir(parents=True)
    (at / "config.json").write_text(json.dumps({"model_type": "bert", "tag": tag}))
    return at


class Fake(Encoder):
    """Vectors from the text's length (no model); records each forward pass's texts and progress flag."""

    key_tag = "fake-s56"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.calls: list[tuple[int, bool, str]] = []
        super().__init__(*args, **kwargs)

    def _forward(self, texts: list[str], progress: bool, role: str = "document") -> np.ndarray:
        self.calls.append((len(texts), progress, role))
        v = np.array([[len(t) + 1.0, 1.0] for t in texts], np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


# ------------------------------------------------------------------ 1. a relative folder after a chdir
def test_shared_encoders_keyed_by_absolute_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``get_encoder("./m")`` in another folder is that folder's model (it returned the first folder's encoder, its
    key and prompts; ``Dense.encoder`` goes through it); so too ``get_token_encoder``."""
    _folder(tmp_path / "A" / "m", 1)
    _folder(tmp_path / "B" / "m", 2)
    monkeypatch.chdir(tmp_path / "A")
    a, ta = get_encoder("./m"), get_token_encoder("./m")
    assert get_encoder("./m") is a and get_encoder(str(tmp_path / "A" / "m")) is a  # (one folder: one encoder)
    # made with the folder's absolute path: a lazy first load after a chdir reads A's files, not ./m of B
    assert a.path == ta.path == str(tmp_path / "A" / "m")
    monkeypatch.chdir(tmp_path / "B")
    b, tb = get_encoder("./m"), get_token_encoder("./m")
    assert b is not a and b.key == Encoder("./m").key != a.key
    assert tb is not ta and tb.key == TokenEncoder("./m").key != ta.key
    monkeypatch.chdir(tmp_path)
    assert get_encoder("m") is not a  # (a name that is a folder here: ./m, not A's)


# ------------------------------------------------------------------ 2. normalize=False, said
def test_a_tilde_path_is_refused_by_the_shared_encoder_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoder('~/m') refuses '~' (a model's path is read as it is); get_encoder expanded it when it made the
    shared encoder of a relative folder with its absolute path, and took it."""
    _folder(tmp_path / "m", 3)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path / "m")  # (no folder '~' here)
    for make in (Encoder, get_encoder, get_token_encoder):
        with pytest.raises(ParamError, match="without expanding '~'"):
            make("~/m")


def test_normalize_false_documented_as_ragkit_not_normalising() -> None:
    """The docstring says that ``normalize=False`` leaves a model's own ``Normalize`` module in place (MiniLM's
    vectors stay unit length), as sentence-transformers' ``normalize_embeddings=False`` does."""
    doc = " ".join((Encoder.__doc__ or "").split())
    assert "ragkit does not normalise" in doc and "still returns unit vectors" in doc


# ------------------------------------------------------------------ 3. document vectors keyed by their prompt
def test_query_prompt_change_keeps_cached_documents(tmp_path: Path) -> None:
    """Only the query prompt changed: the documents are read from the cache (they were all encoded again), and
    the queries are not (their prompt changed)."""
    m = str(_folder(tmp_path / "m", 1))
    docs = ["cells divide", "a claim", "scurvy"]
    first = Fake(m, query_prompt="query: ", document_prompt="")
    v1 = first.encode(docs)
    first.encode_queries(["q"], cache=True)
    second = Fake(m, query_prompt="search: ", document_prompt="")
    v2 = second.encode(docs)
    assert second.n_encoded == 0 and np.array_equal(v1, v2)
    second.encode_queries(["q"], cache=True)
    assert second.n_queries_encoded == 1  # (another query prompt: its queries apart)
    assert second.document_key == first.document_key and second.query_key != first.query_key
    third = Fake(m, query_prompt="query: ", document_prompt="passage: ")  # (the first's query prompt)
    third.encode_queries(["q"], cache=True)
    assert third.n_queries_encoded == 0
    third.encode(docs)
    assert third.n_encoded == 3


def test_plain_keys_unchanged() -> None:
    """Without prompts the documents' (and queries') cache is keyed as before: the encoder's key, MiniLM's of
    before (its cached vectors stay valid), ``|raw`` too."""
    enc = Encoder()
    assert enc.key == "st-e0727608fc2fbe55|msl=None"
    assert enc.document_key == enc.query_key == enc.key and enc.store.key == enc.key and enc.query_store is enc.store
    raw = Encoder(normalize=False)
    assert raw.store.key == raw.key == "st-e0727608fc2fbe55|msl=None|raw"
    assert TokenEncoder().key == "st-e0727608fc2fbe55|tokens|msl=None|special=keep|l2"
    # drop's key too: a muvera / maxsim saved with special_tokens: drop checks it at load (a new key refused them)
    assert TokenEncoder(special_tokens="drop").key == "st-e0727608fc2fbe55|tokens|msl=None|special=drop|l2"


def test_device_none_and_torch_device_still_taken() -> None:
    """check_device refused ``device=None`` (sentence-transformers picks the device) and a ``torch.device`` object,
    both of which reached the model and worked before the device check came."""
    import torch

    for device in (None, torch.device("cpu")):
        assert Encoder(device=device).device == device
    assert get_encoder(device=None).device is None
    assert get_encoder(device=torch.device("cpu")) is get_encoder(device="cpu")  # (one device, one shared encoder)


# ------------------------------------------------------------------ 4. LangChainEmbeddingsEncoder's settings
@pytest.mark.parametrize(("kwargs", "path"), [
    ({"cache": "no"}, "cache"), ({"dim": "64"}, "dim"), ({"dim": -1}, "dim"), ({"dim": True}, "dim"),
    ({"key": 5, "cache": True}, "key"), ({"key": 5}, "key"), ({"key": "  "}, "key")])
def test_langchain_encoder_settings_checked_when_made(kwargs: dict[str, Any], path: str) -> None:
    """Each bad setting is a ParamError naming it when the adapter is made, before any (maybe paid) embedding call
    (``cache="no"`` turned the cache on; ``dim="64"`` failed after the call, 'expected 64, got 64')."""
    pytest.importorskip("langchain_core")
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from ragkit.integrations.langchain import LangChainEmbeddingsEncoder

    calls: list[Any] = []

    class Counting(DeterministicFakeEmbedding):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            calls.append(texts)
            return super().embed_documents(texts)

    with pytest.raises(ParamError, match=path) as e:
        LangChainEmbeddingsEncoder(Counting(size=64), **kwargs)
    assert e.value.path == path and not calls
    assert LangChainEmbeddingsEncoder(Counting(size=64), dim=64, key="fake-64", cache=False).dim == 64


# ------------------------------------------------------------------ 5. device and cache checked
@pytest.mark.parametrize(("kwargs", "path"), [
    ({"device": "gpu"}, "device"), ({"device": 5}, "device"), ({"cache": "false"}, "cache"),
    ({"cache": None}, "cache")])
def test_encoder_device_and_cache_checked(kwargs: dict[str, Any], path: str) -> None:
    """``get_encoder`` / ``Encoder`` refuse a device torch does not read and a cache that is no bool, naming it,
    before any model load (a raw torch error at the first encode; ``cache="false"`` turned the cache on)."""
    for make in (get_encoder, Encoder):
        with pytest.raises(ParamError, match=path) as e:
            make(**kwargs)
        assert e.value.path == path


def test_unavailable_accelerator_refused() -> None:
    """A CUDA / MPS device this machine's torch cannot use is refused when the encoder is made (an
    AssertionError, 'Torch not compiled with CUDA enabled', at the first encode)."""
    import torch

    if torch.cuda.is_available():
        with pytest.raises(ParamError, match="device") as e:
            Encoder(device=f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(ParamError, match="cannot use cuda") as e:
            get_encoder(device="cuda")
    assert e.value.path == "device"
    if not torch.backends.mps.is_available():
        with pytest.raises(ParamError, match="cannot use mps"):
            Encoder(device="mps")


@pytest.mark.parametrize("make", [TokenEncoder, get_token_encoder])
def test_token_encoder_cache_checked(make: Any) -> None:
    with pytest.raises(ParamError, match="cache") as e:
        make(cache="no")
    assert e.value.path == "cache"


# ------------------------------------------------------------------ 6. encode_queries(cache=True) honoured
def test_explicit_query_cache_wins(tmp_path: Path) -> None:
    """``encode_queries(cache=True)`` on an encoder made with ``cache=False`` caches, as ``encode(cache=True)``
    does (it was ignored: the query encoded at each call); ``cache=False`` never caches."""
    enc = Fake(str(_folder(tmp_path / "m", 1)), cache=False)
    enc.encode_queries(["q1"], cache=True)
    enc.encode_queries(["q1"], cache=True)
    assert enc.n_queries_encoded == 1
    enc.encode_queries(["q1"], cache=False)
    enc.encode_queries(["q1"])  # (None: the encoder's cache=False)
    assert enc.n_queries_encoded == 3


# ------------------------------------------------------------------ 7. progress bar with the cache off
def test_progress_with_cache_off(tmp_path: Path) -> None:
    """More than 1,000 texts with the cache off show the progress bar, as with it on (it never showed)."""
    enc = Fake(str(_folder(tmp_path / "m", 1)), cache=False)
    texts = [f"text {i}" for i in range(1500)]
    enc.encode(texts)
    enc.encode(texts[:10])
    enc.encode(texts, progress=False)
    assert [c[1] for c in enc.calls] == [True, False, False]


def test_token_progress_with_cache_off(tmp_path: Path) -> None:
    """The token encoder likewise, past its cached path's 500 texts."""
    seen: list[bool] = []

    class FakeTokens(TokenEncoder):
        key_tag = "fake-tokens-s56"

        def _forward(self, texts: list[str], progress: bool = False, lens: Any = None) -> TokenVectors:
            seen.append(progress)
            return TokenVectors(np.ones((len(texts), 2), np.float16), np.arange(len(texts) + 1, dtype=np.int64))

    enc = FakeTokens(str(_folder(tmp_path / "m", 1)), cache=False)
    enc.encode([f"t{i}" for i in range(600)])
    enc.encode(["a", "b"])
    assert seen == [True, False]


# ------------------------------------------------------------------ 8. HashingEncoder's texts checked
@pytest.mark.parametrize("texts", ["red apples", [None], [b"x", 5], ["ok", 3]])
def test_hashing_encoder_refuses_what_is_no_list_of_texts(texts: Any) -> None:
    """One string (encoded per character), ``None`` (as 'None'), bytes and numbers are refused, as by the other
    encoders."""
    enc = HashingEncoder(16)
    with pytest.raises(DataError):
        enc.encode(texts)
    with pytest.raises(DataError):
        enc.encode_queries(texts)
    assert enc.encode(["red apples", ""]).shape == (2, 16)


# ------------------------------------------------------------------ 9. RagkitEmbeddings("")
def test_ragkit_embeddings_empty_model_refused() -> None:
    """``RagkitEmbeddings("")`` is get_encoder's ParamError (it silently used MiniLM); ``None`` is the default."""
    pytest.importorskip("langchain_core")
    from ragkit.integrations.langchain import RagkitEmbeddings

    with pytest.raises(ParamError, match="empty") as e:
        RagkitEmbeddings("")
    assert e.value.path == "model"
    assert RagkitEmbeddings().encoder is get_encoder()
