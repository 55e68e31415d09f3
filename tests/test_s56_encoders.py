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
from ragkit.encoders.sentence import Encoder, get_encoder
from ragkit.encoders.tokens import TokenEncoder, get_token_encoder


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
    monkeypatch.chdir(tmp_path / "B")
    b, tb = get_encoder("./m"), get_token_encoder("./m")
    assert b is not a and b.key == Encoder("./m").key != a.key
    assert tb is not ta and tb.key == TokenEncoder("./m").key != ta.key
    monkeypatch.chdir(tmp_path)
    assert get_encoder("m") is not a  # (a name that is a folder here: ./m, not A's)


# ------------------------------------------------------------------ 2. normalize=False, said
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
