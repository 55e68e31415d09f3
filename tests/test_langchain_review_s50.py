"""The LangChain integration, review s50.

- ``LangChainEmbeddingsEncoder.store`` turned every character outside ``[A-Za-z0-9-_.]`` of its key into ``_``
  before naming the cache folder: keys "org/model-v1", "org:model-v1" and "org_model-v1" shared one folder, so
  one model's vectors were served for another.  The key is passed unchanged, and the reader is shared per
  process and cache folder with ``Encoder.store``'s (``$RAGKIT_CACHE`` read at each use).
- With ``cache=True`` and no key, an ``Embeddings`` that is no pydantic model was keyed by its object id, which
  CPython gives to the next object once it is freed (and the disk cache outlives the process): a new model was
  served an old one's vectors.  ``cache=True`` is refused there, saying to pass ``key=``.
- numpy scalars in metadata stayed numpy (``np.float32(0.1)``): ``filter={"w": 0.1}`` found nothing before a
  save and found the document after, and returned metadata was no JSON.  They are kept as Python's, as a save
  writes them.
- A retriever kept a copy of its pipeline's corpus from when it was built, and checked an assigned
  ``search_kwargs`` filter against it: a field another retriever sharing the pipeline added since was "not a
  metadata field" (a call with the same filter worked).  The corpus is read from the pipeline at each use.
- ``configurable_fields(...)`` + ``batch`` built a retriever and ran one pipeline search per query (LangChain's
  ``DynamicRunnable.batch``): the configs are grouped by the values they give the fields, one retriever and one
  search per group, results in input order.
- ``add_documents`` encoded the new documents ahead of the edit lock only for ragkit's own ``Encoder`` (its
  type): a registered ``LangChainEmbeddingsEncoder(cache=True)`` encoded under the lock and searches waited.
  Any encoder with its cache on and an ``encode`` is encoded ahead.
- A Document of ``get_by_ids`` / ``invoke`` added again under a new id kept the ``metadata["id"]`` the retriever
  wrote (its old id), which became a metadata field: the other documents lost their returned ``id`` and
  ``filter={"id": "0"}`` found nothing.  That key is dropped when it equals the document's own id.
- ``RagkitRetriever(k=np.int64(2))`` was "expected an integer" while ``search_kwargs`` and ``invoke`` took it:
  any integer type but bool is taken, as an int.  Adding a Document the retriever returned to another one was
  told to rename 'score', 'rank'...: it is told too that the retriever wrote them and how to drop them.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from ragkit.errors import ParamError
from ragkit.integrations.langchain import LangChainEmbeddingsEncoder, RagkitRetriever
from ragkit.types import Corpus


class _Counting(DeterministicFakeEmbedding):
    """A fake embedding that counts the texts it embedded."""

    n: int = 0

    def embed_documents(self, texts):  # noqa: ANN001, ANN201
        self.n += len(texts)
        return super().embed_documents(texts)


@pytest.mark.parametrize("other", ["org:model-v1", "org_model-v1"])
def test_keys_differing_in_punctuation_have_their_own_cache(tmp_path, monkeypatch, other):
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    a = LangChainEmbeddingsEncoder(DeterministicFakeEmbedding(size=8), key="org/model-v1", cache=True)
    b = LangChainEmbeddingsEncoder(_Counting(size=8, seed=1), key=other, cache=True)
    assert a.store.folder != b.store.folder
    a.encode(["hello world"])
    vb = b.encode(["hello world"])
    assert b.n_encoded == 1  # computed by b's model, not read from a's folder
    want = np.asarray(_Counting(size=8, seed=1).embed_documents(["hello world"]), np.float32)
    np.testing.assert_allclose(vb, want / np.linalg.norm(want, axis=1, keepdims=True), rtol=1e-6)


def test_safe_key_keeps_its_cache_folder(tmp_path, monkeypatch):
    """A key of only letters, digits, '-', '_' and '.' names the folder it named before (caches kept)."""
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    enc = LangChainEmbeddingsEncoder(DeterministicFakeEmbedding(size=8), key="my-model_v1.2", cache=True)
    assert enc.store.folder == tmp_path / "embeddings" / hashlib.sha1(b"my-model_v1.2").hexdigest()[:16]


def test_one_key_shares_a_reader_and_follows_ragkit_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "one"))
    a = LangChainEmbeddingsEncoder(_Counting(size=8), key="shared-8", cache=True)
    b = LangChainEmbeddingsEncoder(_Counting(size=8), key="shared-8", cache=True)
    assert a.store is b.store
    a.encode(["x", "y"])
    b.encode(["x", "y"])
    assert (a.n_encoded, b.n_encoded) == (2, 0)
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "two"))
    assert a.store.folder.parent == tmp_path / "two" / "embeddings"
    a.encode(["x"])
    assert a.n_encoded == 3  # a new cache folder: encoded again


class _Plain(Embeddings):
    """An ``Embeddings`` that is no pydantic model (no settings ragkit can hash)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [list(np.random.default_rng(self.seed).random(4)) for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def test_cache_refused_under_an_object_id_key(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    with pytest.raises(ParamError, match=r"cache=True needs a key naming the model.*_Plain.*object id.*pass key="):
        LangChainEmbeddingsEncoder(_Plain(0), cache=True)
    uncached = LangChainEmbeddingsEncoder(_Plain(0))  # no cache: the id key is fine
    assert uncached.encode(["abc"]).shape == (1, 4)
    with pytest.raises(ParamError, match="cache=True needs a key"):
        uncached.encode(["abc"], cache=True)
    named = LangChainEmbeddingsEncoder(_Plain(0), key="plain-seed-0", cache=True)
    named.encode(["abc"])
    assert named.n_encoded == 1


def test_numpy_scalar_metadata_filters_alike_before_and_after_a_save(tmp_path):
    docs = [Document(page_content="vitamin c scurvy", id="a",
                     metadata={"w": np.float32(0.1), "n": np.int64(3), "ok": np.bool_(True)}),
            Document(page_content="vitamin d bones", id="c",
                     metadata={"w": np.float32(0.25), "n": np.int64(4), "ok": np.bool_(False)})]
    r = RagkitRetriever.from_documents(docs, k=3)
    before = [[d.id for d in r.invoke("vitamin", filter=f)] for f in ({"w": 0.1}, {"w": 0.25}, {"n": 3})]
    r.save(tmp_path / "r")
    r2 = RagkitRetriever.load(tmp_path / "r")
    after = [[d.id for d in r2.invoke("vitamin", filter=f)] for f in ({"w": 0.1}, {"w": 0.25}, {"n": 3})]
    assert before == after == [["a"], ["c"], ["a"]]
    got = {d.id: d.metadata for d in r.invoke("vitamin")}
    assert (type(got["a"]["w"]), type(got["a"]["n"]), type(got["a"]["ok"])) == (float, int, bool)
    assert (got["a"]["w"], got["a"]["ok"]) == (0.1, True)
    json.dumps(list(got.values()))


def test_corpus_keeps_numpy_scalars_as_python_values():
    c = Corpus(ids=["a", "b", "c"], texts=["x", "y", "z"],
               metadata={"w": [np.float32(0.1), 0.5, np.float32("nan")],
                         "d": [np.datetime64("2020-01-01"), None, None]})
    assert c.metadata["w"].tolist()[:2] == [0.1, 0.5] and c.metadata["w"].tolist()[2] is None
    assert type(c.metadata["w"][0]) is float
    assert isinstance(c.metadata["d"][0], np.datetime64)


def test_search_kwargs_filter_checked_against_documents_another_retriever_added():
    """Retrievers sharing one fitted pipeline: a field another one added is a field for this one's search_kwargs
    (it was checked against this retriever's copy of the corpus, from when it was built)."""
    from ragkit.retrievers import BM25

    pipe = BM25().fit(Corpus.from_texts(["apple pie", "cherry tart"]))
    r1, r3 = RagkitRetriever(pipeline=pipe, k=2), RagkitRetriever(pipeline=pipe, k=2)
    r1.add_documents([Document(page_content="apple crumble", id="y", metadata={"year": 2020})])
    r3.search_kwargs = {"filter": {"year": 2020}}
    assert [d.id for d in r3.invoke("apple")] == ["y"]
    with pytest.raises(ParamError, match="'yr' is not a metadata field"):
        r3.search_kwargs = {"filter": {"yr": 2020}}


def _counting_searches(monkeypatch, pipeline) -> list[int]:
    calls = [0]
    orig = type(pipeline).search

    def counting(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls[0] += 1
        return orig(self, *a, **kw)

    monkeypatch.setattr(type(pipeline), "search", counting)
    return calls


def test_configurable_batch_searches_once_per_configuration(monkeypatch):
    import asyncio

    from langchain_core.runnables import ConfigurableField

    texts = [f"doc {i} about vitamin {i % 7}" for i in range(50)]
    r = RagkitRetriever.from_texts(texts, k=4)
    c = r.configurable_fields(k=ConfigurableField(id="kk"))
    qs = [f"vitamin {i % 7}" for i in range(20)]
    want4, want2 = r.batch(qs), r.batch(qs, k=2)
    calls = _counting_searches(monkeypatch, r.pipeline)
    assert c.batch(qs, config={"configurable": {"kk": 4}}) == want4
    assert calls[0] == 1
    configs = [{"configurable": {"kk": 2 if i % 3 else 4}} for i in range(len(qs))]
    got = c.batch(qs, config=configs)
    assert calls[0] == 3  # one search per configuration
    assert got == [want2[i] if i % 3 else want4[i] for i in range(len(qs))]  # in input order
    assert asyncio.run(c.abatch(qs, config=configs)) == got
    assert calls[0] == 5
    assert c.batch([]) == []
    out = c.batch(["vitamin 1", 3], config={"configurable": {"kk": 2}}, return_exceptions=True)
    assert out[0] == want2[1] and isinstance(out[1], Exception)


def test_cached_langchain_encoder_encodes_new_documents_before_the_edit_lock(tmp_path, monkeypatch):
    """A dense retriever whose encoder is a LangChainEmbeddingsEncoder with its cache on encodes the documents
    added before taking the edit lock (searches do not wait for the model), as one with ragkit's Encoder does."""
    from ragkit.encoders import register_encoder
    from ragkit.retrievers import Dense

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    enc = LangChainEmbeddingsEncoder(_Counting(size=16), key="counting-16-s50", cache=True)
    register_encoder("counting-16-s50", enc, replace=True)
    r = RagkitRetriever(pipeline=Dense(model="counting-16-s50"), corpus=["a b", "c d", "e f"], k=2)
    locked = []
    original = RagkitRetriever._editing

    def editing(self):  # noqa: ANN001, ANN202
        locked.append(enc.n_encoded)  # texts encoded when the lock is asked for
        return original(self)

    monkeypatch.setattr(RagkitRetriever, "_editing", editing)
    before = enc.n_encoded
    r.add_texts(["new doc", "another one"])
    assert locked == [before + 2]  # encoded ahead of the lock
    assert enc.n_encoded == before + 2  # and read from the cache under it, not encoded again
    assert [d.page_content for d in r.invoke("new doc", k=1)] == ["new doc"]


def test_a_returned_document_added_again_under_a_new_id_keeps_id_no_field():
    r = RagkitRetriever.from_texts([f"doc {i} about vitamin {c}" for i, c in enumerate("abc")], k=5)
    d = r.get_by_ids(["1"])[0]
    assert d.metadata["id"] == "1"
    assert r.add_documents([d], ids=["1b"]) == ["1b"]
    assert d.metadata["id"] == "1"  # (the caller's Document unchanged)
    got = {x.id: x.metadata.get("id") for x in r.invoke("vitamin")}
    assert got == {"0": "0", "1": "1", "2": "2", "1b": "1b"}
    assert [x.id for x in r.invoke("vitamin", filter={"id": "0"})] == ["0"]
    assert [x.id for x in r.invoke("vitamin", filter={"id": "1"})] == ["1"]
    # a metadata id of the user's own (not the document's id) stays a field
    r2 = RagkitRetriever.from_texts(["x y"], k=5)
    r2.add_documents([Document(page_content="x z", id="a", metadata={"id": "ext-7"})], ids=["n"])
    assert [x.id for x in r2.invoke("x", filter={"id": "ext-7"})] == ["n"]


def test_k_takes_any_integer_type_as_search_kwargs_and_invoke_do():
    texts = {"a": "apple pie", "b": "apple tart", "c": "cherry"}
    r = RagkitRetriever.from_texts(texts, k=np.int64(2))
    assert r.k == 2 and type(r.k) is int and len(r.invoke("apple")) == 2
    r.k = np.int32(1)
    assert type(r.k) is int and len(r.invoke("apple")) == 1
    for bad in (True, np.bool_(True), 2.0, "2"):
        with pytest.raises(ParamError, match="k"):
            RagkitRetriever.from_texts(texts, k=bad)
    # at most MAX_INT, as every k (it was taken, then every invoke failed: "at most 2,147,483,647")
    for big in (2**40, np.uint64(2**63 + 5)):
        with pytest.raises(ParamError, match="k"):
            RagkitRetriever.from_texts(texts, k=big)


def test_adding_returned_documents_says_how_to_drop_the_keys_the_retriever_wrote():
    from ragkit.integrations.langchain import RESERVED_METADATA

    r = RagkitRetriever.from_texts([f"doc {i} about vitamin {c}" for i, c in enumerate("abc")], k=5)
    other = RagkitRetriever.from_texts(["x y"], k=5)
    got = r.invoke("vitamin b")[0]
    with pytest.raises(ParamError, match=r"rename those keys \(e\.g\. 'doc_score'\); documents a retriever returned "
                                         r"\(invoke, batch\) carry the keys it wrote: drop them .*RESERVED_METADATA"):
        other.add_documents([got])
    # a pipeline whose corpus holds such a key is told to rename it, not how to re-add returned documents
    from ragkit.retrievers import BM25
    from ragkit.types import Corpus

    fitted = BM25().fit(Corpus(["a", "b"], ["x y", "y z"], metadata={"score": [1, 2]}))
    with pytest.raises(ParamError, match="rename that key") as e:
        RagkitRetriever(pipeline=fitted)
    assert "adding the documents again" not in str(e.value)
    # the way the message gives works
    d = got
    assert other.add_documents([Document(d.page_content, id=d.id, metadata={
        k: v for k, v in d.metadata.items() if k not in RESERVED_METADATA})]) == [got.id]
