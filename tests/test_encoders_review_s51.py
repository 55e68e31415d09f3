"""Review s51 of the sentence encoder: the model's query / document prompts applied (and keyed), vectors normalised
as the model says, a hub id keyed by its cached revision, no global lock held through a model's load, settings
checked before any model work, and MiniLM's cache key and text digests as they were (its cached vectors kept).

Model folders are small copies of the installed MiniLM made here: its weights linked to, its JSON files its own."""

from __future__ import annotations

import json
import logging
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
    cached on disk for it stay valid; its queries share the documents' cache, as before."""
    enc = Encoder()
    assert enc.key == "st-e0727608fc2fbe55|msl=None"
    assert Encoder(max_seq_length=128).key == "st-e0727608fc2fbe55|msl=128"
    assert enc.normalize is True and enc.query_prompt == "" and enc.document_prompt == ""
    assert text_digests(["cells divide by mitosis"])[0].tobytes().hex() == "94f59b7e3005b7f72d7a2b89487a1d35"
    assert enc.query_store is enc.store


# ------------------------------------------------------------------ 1. prompts
def test_model_prompts_applied_per_role_and_keyed(tmp_path: Path) -> None:
    """An e5-style model (prompts query: / passage:) encodes queries and documents with their prompts, keys its
    cache with them, and caches queries apart from documents (one text, two vectors)."""
    e5 = _copy(tmp_path / "e5", config={"prompts": {"query": "query: ", "document": "passage: "},
                                        "default_prompt_name": None, "similarity_fn_name": "cosine"})
    enc = Encoder(str(e5), cache=False)
    assert (enc.query_prompt, enc.document_prompt) == ("query: ", "passage: ")
    q, d = enc.encode_queries(TEXTS), enc.encode(TEXTS)
    np.testing.assert_allclose(q, _plain(e5, [f"query: {t}" for t in TEXTS], True), atol=1e-5)
    np.testing.assert_allclose(d, _plain(e5, [f"passage: {t}" for t in TEXTS], True), atol=1e-5)
    assert "|prompts=" in enc.key
    cached = Encoder(str(e5))
    np.testing.assert_allclose(cached.encode_queries(TEXTS[:1], cache=True), q[:1], atol=1e-5)
    np.testing.assert_allclose(cached.encode(TEXTS[:1]), d[:1], atol=1e-5)  # not the query's row read back
    assert cached.query_store is not cached.store


def test_prompt_settings_for_a_model_without_prompts(tmp_path: Path) -> None:
    """query_prompt / document_prompt give a model without prompts some, in its key; unset, the key is the model's
    own."""
    folder = _copy(tmp_path / "m")
    plain = Encoder(str(folder), cache=False)
    set_ = Encoder(str(folder), cache=False, query_prompt="search_query: ")
    assert set_.key != plain.key and "|prompts=" not in plain.key
    np.testing.assert_allclose(set_.encode_queries(TEXTS[:2]), _plain(folder, [f"search_query: {t}" for t in TEXTS[:2]],
                                                                       True), atol=1e-5)
    np.testing.assert_allclose(set_.encode(TEXTS[:2]), plain.encode(TEXTS[:2]), atol=1e-6)
    with pytest.raises(ParamError, match="query_prompt is int 3"):
        Encoder(str(folder), query_prompt=3)  # type: ignore[arg-type]


def test_default_prompt_name_applies_to_a_role_without_its_own(tmp_path: Path) -> None:
    """A model whose config names a default prompt and a query prompt: documents get the default, as
    ``SentenceTransformer.encode`` gave every text before."""
    folder = _copy(tmp_path / "m", config={"prompts": {"query": "q: ", "classify": "c: "},
                                           "default_prompt_name": "classify"})
    enc = Encoder(str(folder), cache=False)
    assert (enc.query_prompt, enc.document_prompt) == ("q: ", "c: ")


# ------------------------------------------------------------------ 2. normalisation
def test_dot_product_model_not_normalised(tmp_path: Path) -> None:
    """A model without a Normalize module nor a cosine similarity keeps its own vectors (metric ip is then an inner
    product), under a key of its own; normalize=True asks for unit vectors."""
    dot = _copy(tmp_path / "dot", normalize_module=False)
    enc = Encoder(str(dot), cache=False)
    assert enc.normalize is False and enc.key.endswith("|raw")
    v = enc.encode(TEXTS)
    assert not np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-3)
    np.testing.assert_allclose(v, _plain(dot, TEXTS, False), atol=1e-5)
    np.testing.assert_allclose(enc.encode_queries(TEXTS), v, atol=1e-6)
    unit = Encoder(str(dot), cache=False, normalize=True)
    assert not unit.key.endswith("|raw")
    np.testing.assert_allclose(np.linalg.norm(unit.encode(TEXTS), axis=1), 1, atol=1e-5)
    cos = _copy(tmp_path / "cos", config={"similarity_fn_name": "cosine"}, normalize_module=False)
    assert Encoder(str(cos), cache=False).normalize is True
    with pytest.raises(ParamError, match="normalize is str 'yes'"):
        Encoder(str(dot), normalize="yes")  # type: ignore[arg-type]


# ------------------------------------------------------------------ 3. hub revisions
def _fake_hub(root: Path, revision: str) -> None:
    """A Hugging Face cache at ``root`` holding ``me/tiny`` in two snapshots (their JSON files only), ``refs/main``
    naming ``revision``."""
    repo = root / "models--me--tiny"
    for rev in ("aaaa", "bbbb"):
        snap = repo / "snapshots" / rev
        snap.mkdir(parents=True, exist_ok=True)
        (snap / "modules.json").write_text("[]", encoding="utf-8")
        (snap / "config.json").write_text("{}", encoding="utf-8")
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision, encoding="utf-8")


def test_hub_id_keyed_by_its_cached_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id's key names the snapshot its load reads: a new revision in the cache is another key, never served
    the vectors cached for the old one."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    _fake_hub(tmp_path / "hf" / "hub", "aaaa")
    a = Encoder("me/tiny")
    assert a.key == "me/tiny@aaaa|msl=None|raw"
    _fake_hub(tmp_path / "hf" / "hub", "bbbb")
    b = Encoder("me/tiny")
    assert b.key == "me/tiny@bbbb|msl=None|raw" and b.key != a.key
    assert sentence.model_note("me/tiny") is None  # (the lookup model_note makes: the same one)


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


def test_store_checks_unit_rows_where_the_encoder_normalises(tmp_path: Path) -> None:
    """The embedding cache of ragkit's own normalising forward pass sets aside rows that are not unit length (a
    block zeroed by a lost disk write is finite garbage the NaN check passed); a model kept raw, or a subclass
    with a forward pass of its own, is not held to it."""
    enc = Encoder()
    assert enc.normalize is True and enc.store.unit_length is True
    dot = _copy(tmp_path / "dot", normalize_module=False)
    assert Encoder(str(dot)).store.unit_length is False

    class Own(Encoder):
        def _forward(self, texts: list[str], progress: bool, role: str = "document") -> np.ndarray:
            return np.ones((len(texts), 4), np.float32)

    own = Own(str(dot), normalize=True)  # (a key no ragkit forward pass shares: the folder's, without "|raw")
    assert own.normalize is True and own.store.unit_length is False


def test_unit_length_fixed_per_reader_not_set_by_whoever_came_first(tmp_path: Path) -> None:
    """Old code: the plain Encoder marked the shared reader of its key unit_rows = True after the fact, so a subclass
    with a forward pass of its own on the same key, made later, was held to unit rows too (its rows set aside).
    Since s53 the subclass's key names its forward pass (``|forward=``): a reader and a folder of its own."""

    class Own(Encoder):
        def _forward(self, texts: list[str], progress: bool, role: str = "document") -> np.ndarray:
            return np.ones((len(texts), 4), np.float32)

    plain, own = Encoder(), Own()
    digest = sentence._forward_digest(Own._forward)
    assert own.key == f"{plain.key}|forward={Own.__module__}.{Own.__qualname__}#{digest}"
    assert plain.store.unit_length is True
    assert own.store.unit_length is False and plain.store.unit_length is True
    assert own.store is not plain.store and own.store.folder != plain.store.folder


def test_a_key_saved_before_revisions_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Old code: a Dense saved before hub ids were keyed by revision ("me/tiny|msl=None|raw") was refused on a load
    ("queries would be encoded into another space"), though its vectors are the same model's; a saved key that
    differs only in |raw or |prompts= says so (the model's settings are now applied: fit again)."""
    from huggingface_hub import constants

    from ragkit.errors import ArtifactError

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    _fake_hub(tmp_path / "hf" / "hub", "aaaa")
    enc = Encoder("me/tiny")
    assert enc.key == "me/tiny@aaaa|msl=None|raw"

    def saved(key: str) -> Path:
        folder = tmp_path / f"saved{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        (folder / sentence.ENCODER_FILE).write_text(json.dumps({"key": key}), encoding="utf-8")
        return folder

    with caplog.at_level(logging.INFO, logger="ragkit"):
        sentence.check_encoder_key(saved("me/tiny|msl=None|raw"), enc, "dense", "me/tiny")
    assert "before hub ids were keyed by their revision" in caplog.text
    with pytest.raises(ArtifactError, match=r"same model, but its vectors are now kept raw .*fit it again"):
        sentence.check_encoder_key(saved("me/tiny|msl=None"), enc, "dense", "me/tiny")
    with pytest.raises(ArtifactError, match=r"another space"):
        sentence.check_encoder_key(saved("me/tiny@bbbb|msl=None|raw"), enc, "dense", "me/tiny")
    with pytest.raises(ArtifactError, match=r"another space"):
        sentence.check_encoder_key(saved("me/other|msl=None|raw"), enc, "dense", "me/tiny")


def test_token_encoder_keys_a_hub_id_by_its_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Old code: TokenEncoder keyed a hub id by its bare name (cached_fingerprint), so a new revision was served the
    old one's cached token vectors, and it loaded the model apart from a sentence encoder's (name@<rev>)."""
    from huggingface_hub import constants

    from ragkit.encoders.tokens import TokenEncoder

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    _fake_hub(tmp_path / "hf" / "hub", "aaaa")
    tok = TokenEncoder("me/tiny")
    assert tok.key.startswith("me/tiny@aaaa|") and tok.fingerprint == Encoder("me/tiny").fingerprint
    _fake_hub(tmp_path / "hf" / "hub", "bbbb")
    assert TokenEncoder("me/tiny").key.startswith("me/tiny@bbbb|") and tok.key.startswith("me/tiny@aaaa|")


def test_a_hub_model_loads_once_per_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Old code: the first use of a hub id not yet downloaded loaded it under a key that never matched (two
    encoders made before the download each loaded it fully), and a load whose revision had moved loaded the model
    by name, then its own snapshot again.  Now one load per revision, a pinned one from its snapshot's folder."""
    from huggingface_hub import constants

    hub = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(sentence, "_MODELS", {})
    sources: list[str] = []

    def load(model: str, path: str, source: str, device: str) -> list[Any]:
        sources.append(source)
        if not hub.exists():
            _fake_hub(hub, "aaaa")  # (the download)
        return [object()]

    monkeypatch.setattr(sentence, "_load", load)
    a = sentence.load_model("me/tiny", "me/tiny", "cpu", None, sentence._UNPINNED)
    b = sentence.load_model("me/tiny", "me/tiny", "cpu", None, sentence._UNPINNED)
    assert a is b and sources == ["me/tiny"]
    assert sentence.load_model("me/tiny", "me/tiny", "cpu", None, "me/tiny@aaaa") is a and len(sources) == 1
    _fake_hub(hub, "bbbb")  # a newer revision downloaded
    c = sentence.load_model("me/tiny", "me/tiny", "cpu", None, "me/tiny@bbbb")
    assert c is not a and sources[1:] == [str(hub / "models--me--tiny" / "snapshots" / "bbbb")]
    monkeypatch.setattr(sentence, "_MODELS", {})  # (another process: the encoder's revision has moved on)
    sentence.load_model("me/tiny", "me/tiny", "cpu", None, "me/tiny@aaaa")
    assert sources[2:] == [str(hub / "models--me--tiny" / "snapshots" / "aaaa")]
