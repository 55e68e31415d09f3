"""Review s51 of the sentence encoder: no global lock held through a model's load, settings checked before any
model work, the encoder's signature read once, and MiniLM's cache key and text digests as they were (its cached
vectors kept).

Model folders are small copies of the installed MiniLM made here: its weights linked to, its JSON files its own."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragkit.encoders import sentence
from ragkit.encoders.cache import text_digests
from ragkit.encoders.sentence import DEFAULT_MODEL, Encoder, get_encoder, resolve_model
from ragkit.errors import InputTypeError, ParamError

TEXTS = ["what causes malaria", "cells divide by mitosis", "the stock market fell"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))


def _copy(dst: Path, *, config: dict[str, Any] | None = None, normalize_module: bool = True) -> Path:
    """A copy of the installed MiniLM at ``dst``: ``model.safetensors`` linked to (never written), the rest copied;
    ``config`` replaces its ``config_sentence_transformers.json``, and ``normalize_module=False`` drops its
    ``Normalize`` module from ``modules.json``."""
    src = Path(resolve_model(DEFAULT_MODEL))
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "*.onnx", "onnx", "openvino"))
    os.symlink(src / "model.safetensors", dst / "model.safetensors")
    if config is not None:
        (dst / "config_sentence_transformers.json").write_text(json.dumps(config), encoding="utf-8")
    if not normalize_module:
        modules = json.loads((dst / "modules.json").read_text(encoding="utf-8"))
        (dst / "modules.json").write_text(json.dumps([m for m in modules if not m["type"].endswith("Normalize")]),
                                          encoding="utf-8")
    return dst


def _plain(folder: Path, texts: list[str], normalize: bool) -> np.ndarray:
    """``texts`` as the loaded model of ``folder`` encodes them with no prompt."""
    model = Encoder(str(folder), cache=False).model
    return np.asarray(model.encode(texts, normalize_embeddings=normalize, prompt=""), np.float32)


# ------------------------------------------------------------------ MiniLM's key and digests unchanged
def test_minilm_key_and_digest_pinned() -> None:
    """MiniLM (no prompts, a Normalize module) keeps the cache key and per-text digest of before: the vectors
    cached on disk for it stay valid."""
    enc = Encoder()
    assert enc.key == "st-e0727608fc2fbe55|msl=None"
    assert Encoder(max_seq_length=128).key == "st-e0727608fc2fbe55|msl=128"
    assert text_digests(["cells divide by mitosis"])[0].tobytes().hex() == "94f59b7e3005b7f72d7a2b89487a1d35"


# ------------------------------------------------------------------ 4. locks
def test_loaded_model_not_blocked_by_another_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While one thread loads a model (a slow ``SentenceTransformer.__init__``), another encodes with a model
    already loaded, and makes an encoder of a third, without waiting for that load."""
    from sentence_transformers import SentenceTransformer

    get_encoder().encode(TEXTS[:1], cache=False)  # (MiniLM loaded)
    slow, other = _copy(tmp_path / "slow"), _copy(tmp_path / "other", config={"prompts": {"query": "q: "}})
    entered, release = threading.Event(), threading.Event()
    init = SentenceTransformer.__init__

    def slow_init(self: Any, *args: Any, **kwargs: Any) -> None:
        if str(slow) in map(str, args):
            entered.set()
            release.wait(60)
        init(self, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformer, "__init__", slow_init)
    loader = threading.Thread(target=lambda: get_encoder(str(slow), cache=False).encode(TEXTS[:1]), daemon=True)
    done: list[Any] = []
    user = threading.Thread(target=lambda: done.extend([get_encoder().encode(TEXTS, cache=False),
                                                        get_encoder(str(other), cache=False).key]), daemon=True)
    try:
        loader.start()
        assert entered.wait(60)
        user.start()
        user.join(30)
        assert len(done) == 2, "an encoder of a loaded model waited behind another model's load"
    finally:
        release.set()
        loader.join(60)
        user.join(60)


# ------------------------------------------------------------------ 5. settings checked
@pytest.mark.parametrize(("kwargs", "said"), [
    ({"batch_size": "8"}, r"^get_encoder: batch_size is str '8'; expected a positive int"),
    ({"batch_size": 0}, r"^get_encoder: batch_size is int 0; expected a positive int"),
    ({"batch_size": True}, r"^get_encoder: batch_size is bool True"),
    ({"max_seq_length": 0}, r"^get_encoder: max_seq_length is int 0; expected None \(the model's own\) or an int >= 1"),
    ({"max_seq_length": 12.5}, r"^get_encoder: max_seq_length is float 12.5"),
])
def test_settings_refused_before_model_work(kwargs: dict[str, Any], said: str) -> None:
    with pytest.raises(ParamError, match=said) as e:
        get_encoder(**kwargs)
    assert e.value.path == next(iter(kwargs))


def test_max_seq_length_beyond_positions_refused_at_load() -> None:
    enc = get_encoder(max_seq_length=100_000, cache=False)
    with pytest.raises(ParamError, match=r"max_seq_length is 100000, beyond the 512 positions") as e:
        enc.encode(TEXTS[:1])
    assert e.value.path == "max_seq_length"


def test_helpers_take_the_encoder_class() -> None:
    """``_model_name`` and ``_refuse_unknown_settings`` serve another encoder class (tokens.py's): its keywords, its
    name, no word of registered encoders."""
    class TokenLike:
        def __init__(self, model: str = "m", *, batch_size: int = 32, special_tokens: bool = False) -> None: ...

    with pytest.raises(ParamError, match=r"^get_token_encoder: unknown keyword 'batchsize' \(did you mean "
                                         r"'batch_size'\?\); a TokenLike takes batch_size, special_tokens$"):
        sentence._refuse_unknown_settings({"batchsize": 3}, "get_token_encoder", TokenLike)
    with pytest.raises(InputTypeError, match=r"^get_token_encoder: model is NoneType None; expected a model name or "
                                             r"folder \(a str, e.g. 'all-MiniLM-L6-v2'\)$"):
        sentence._model_name(None, "get_token_encoder", TokenLike)
    with pytest.raises(InputTypeError, match="register_encoder"):
        sentence._model_name(None, "get_encoder")


# ------------------------------------------------------------------ 6. signature memoised
def test_get_encoder_reads_no_signature_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    first = get_encoder(batch_size=64)
    monkeypatch.setattr(inspect, "signature", lambda *a, **k: pytest.fail("inspect.signature per get_encoder call"))
    assert get_encoder(batch_size=64) is first and get_encoder() is first
