"""Review of the LangChain integration (session 54), one section per finding."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding

from ragkit.errors import DataError
from ragkit.integrations.langchain import LangChainEmbeddingsEncoder, RagkitRetriever
from ragkit.pipelines import RRF, Parallel, Pipeline
from ragkit.retrievers import BM25, Dense
from ragkit.types import Corpus


# ---------------------------------------------------------------------- 1. ids written as a Corpus writes them
# add_documents, add_texts, from_texts and get_by_ids wrote ids with str(): a metadata id 1.0 was "1" at build but
# "1.0" at add (the same document accepted twice), an add of a metadata id 3.0 made "id" a float metadata field (a
# working filter={"id": "c1"} then raised), and a None id was indexed as "None"
def test_a_float_id_is_written_as_the_constructor_writes_it():
    r = RagkitRetriever(pipeline=BM25(), corpus=[Document("a cat", metadata={"id": 1.0}),
                                                 Document("a dog", metadata={"id": np.float64(7)})])
    assert [d.id for d in r.get_by_ids(["1", "7"])] == ["1", "7"]
    with pytest.raises(DataError, match="already indexed.*'1'"):
        r.add_documents([Document("a cat", metadata={"id": 1.0})])
    assert r.add_documents([Document("a bird", metadata={"id": 2.0})]) == ["2"]
    assert r.add_documents([Document("a fish")], ids=[4.0]) == ["4"]
    assert r.add_texts(["a cow"], ids=[5.0]) == ["5"]
    assert [d.id for d in r.get_by_ids([2.0, "4", 5.0, 1.0])] == ["2", "4", "5", "1"]
    assert r.delete([2.0]) is True
    assert r.get_by_ids(["2"]) == []
    assert [d.id for d in RagkitRetriever.from_texts(["x"], ids=[1.0]).get_by_ids(["1"])] == ["1"]


def test_an_added_float_metadata_id_makes_no_id_field():
    r = RagkitRetriever(pipeline=BM25(), corpus=[Document("a cat", id="c1"), Document("a dog", id="c2")], k=2)
    r.add_documents([Document("a bird", metadata={"id": 3.0})])
    assert [d.metadata for d in r.get_by_ids(["c1"])] == [{"id": "c1", "title": ""}]
    assert [d.id for d in r.invoke("cat", filter={"id": "c1"})] == ["c1"]
    # a document of get_by_ids (its metadata id written as its id) added again under another id
    again = Document("a bird", id="3", metadata={"id": 3.0})
    assert r.add_documents([again], ids=["b2"]) == ["b2"]
    assert [d.id for d in r.invoke("cat", filter={"id": "c1"})] == ["c1"]


def test_a_missing_id_is_not_given():
    r = RagkitRetriever.from_texts(["a cat"], k=1)
    first, second = r.add_texts(["a fish"], ids=[None]), r.add_texts(["a cow"], ids=[math.nan])
    assert first != ["None"] and second != ["nan"] and len({*first, *second}) == 2
    assert len(first[0]) == 32  # a new UUID (hex), as LangChain's InMemoryVectorStore gives a None id
    assert r.add_documents([Document("a bee", metadata={"id": "m1"})], ids=[None]) == ["m1"]
    built = RagkitRetriever.from_texts(["a", "b"], ids=[None, None])
    assert sorted(d.id for d in built.get_by_ids(["0", "1"])) == ["0", "1"]
    assert r.get_by_ids([None]) == []


# ---------------------------------------------------------------------- 2. documents encoded outside the write lock
# an encoder without an embedding cache embedded the added documents under the write lock, so every search waited
# for the embedding call (and the embedding ran before the duplicate-id check)
class _SlowEmbeddings(DeterministicFakeEmbedding):
    calls: ClassVar[list[list[str]]] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        type(self).calls.append(list(texts))
        if any(t.startswith("SLOW") for t in texts):
            time.sleep(2.0)
        return super().embed_documents(texts)


def _slow_dense_retriever(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache: bool = False) -> RagkitRetriever:
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    LangChainEmbeddingsEncoder(_SlowEmbeddings(size=16), key="s54-slow", cache=cache).register("s54-slow",
                                                                                              replace=True)
    pipe = Pipeline([Parallel([BM25(k=5), Dense(model="s54-slow", k=5)], fuse=RRF())])
    return RagkitRetriever.from_texts(["a cat", "a dog", "a bird"], pipeline=pipe, k=2)


def test_a_search_does_not_wait_for_the_added_documents_embedding(monkeypatch, tmp_path):
    r = _slow_dense_retriever(monkeypatch, tmp_path)
    started = time.perf_counter()
    adding = threading.Thread(target=lambda: r.add_texts(["SLOW new cat"], ids=["n"]))
    adding.start()
    time.sleep(0.2)  # (the add is embedding now)
    t = time.perf_counter()
    assert [d.id for d in r.invoke("cat")]
    waited = time.perf_counter() - t
    adding.join()
    assert time.perf_counter() - started >= 2.0  # (the add did sleep)
    assert waited < 1.0, f"the search waited {waited:.2f} s for the add's embedding"
    assert "n" in [d.id for d in r.invoke("new cat", k=4)]


@pytest.mark.parametrize("cache", [False, True])
def test_a_duplicate_id_is_refused_before_the_embedding(monkeypatch, tmp_path, cache):
    r = _slow_dense_retriever(monkeypatch, tmp_path, cache)
    _SlowEmbeddings.calls.clear()
    with pytest.raises(DataError, match="already indexed"):
        r.add_texts(["SLOW again"], ids=["0"])
    assert _SlowEmbeddings.calls == []


def test_dense_add_takes_vectors_encoded_ahead_and_checks_their_shape(monkeypatch, tmp_path):
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    LangChainEmbeddingsEncoder(DeterministicFakeEmbedding(size=16), key="s54-fake").register("s54-fake", replace=True)
    corpus = Corpus.from_texts(["a cat", "a dog"], ids=["a", "b"])
    dense = Dense(model="s54-fake", search="exact").fit(corpus)
    new = Corpus.from_texts(["a bird", "a fish"], ids=["c", "d"])
    with pytest.raises(DataError, match=r"^dense\.add: the vectors given are 1 vectors for 2 documents;.*\(2, dim\)"):
        dense.add(new, vectors=np.zeros((1, 16), np.float32))
    assert dense.corpus_.ids.tolist() == ["a", "b"]
    dense.add(new, vectors=dense._encode_docs(new))
    assert dense.search(["a fish"], k=1).doc_ids[0] == ["d"]


# ---------------------------------------------------------------------- 3. a pipeline with a generate step is editable
# add_documents / delete required add / remove of every fitted leaf, the generate step (no per-document state) too
def test_a_pipeline_with_a_generate_step_takes_adds_and_deletes(monkeypatch, tmp_path):
    from ragkit.generators.operator import Generate

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    assert Generate.per_document is False  # (declared by Generate itself)
    r = RagkitRetriever.from_texts(["a cat sat", "a dog ran", "birds fly"], pipeline=BM25() | Generate(), k=2)
    assert r.add_texts(["a new cat"], ids=["n"]) == ["n"]
    assert "n" in [d.id for d in r.invoke("new cat")]
    assert r.delete(["0"]) is True
    assert [d.id for d in r.get_by_ids(["0", "n"])] == ["n"]


# ---------------------------------------------------------------------- 4. a configured pipeline folder loaded once
# configuring `pipeline` per call (configurable_fields) loaded the saved folder again on every call
def test_a_configured_pipeline_folder_is_loaded_once_per_save(monkeypatch, tmp_path):
    import asyncio

    from langchain_core.runnables import ConfigurableField

    import ragkit.pipelines.store as store

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "tenant-a"
    RagkitRetriever.from_texts(["a cat sat", "a dog ran", "birds fly"], k=2).save(folder)
    loads: list[object] = []
    real = store._load_pipeline

    def spy(*args, **kwargs):
        loads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "_load_pipeline", spy)
    c = RagkitRetriever.from_texts(["other"]).configurable_fields(pipeline=ConfigurableField(id="index"))
    cfg = {"configurable": {"index": str(folder)}}
    assert [d.id for d in c.invoke("cat", config=cfg)] == ["0"]
    assert [d.id for d in c.invoke("cat", config=cfg)] == ["0"]
    assert [[d.id for d in x] for x in asyncio.run(c.abatch(["cat", "dog"], config=cfg))] == [["0"], ["1"]]
    assert [d.id for d in asyncio.run(c.ainvoke("cat", config=cfg))] == ["0"]
    assert len(loads) == 1
    RagkitRetriever.from_texts(["a cat again", "a cat sat"], k=2).save(folder)  # saved anew
    assert [d.id for d in c.invoke("cat again", config=cfg)][0] == "0"
    assert len(loads) == 2
    assert c.invoke("other", config={"configurable": {}})[0].page_content == "other"


# ---------------------------------------------------------------------- 5. messages name the method called
# add_texts' refusals named add_documents; from_texts raised DataError for one string / Document / None where the
# README (and from_documents) say InputTypeError
def test_add_texts_refusals_name_add_texts():
    from ragkit.errors import ParamError

    r = RagkitRetriever.from_texts(["a cat"], k=1)
    with pytest.raises(ParamError, match=r"^add_texts: the documents' metadata has 'score'"):
        r.add_texts(["x"], [{"score": 1}])
    with pytest.raises(DataError, match=r"^add_texts: the documents' ids must be unique"):
        r.add_texts(["x", "y"], ids=["a", "a"])
    with pytest.raises(DataError, match=r"^add_texts: 1 of the ids are already indexed"):
        r.add_texts(["x"], ids=["0"])


@pytest.mark.parametrize("texts", ["abc", Document("abc"), None])
def test_from_texts_one_value_is_an_input_type_error(texts):
    from ragkit.errors import InputTypeError

    with pytest.raises(InputTypeError, match=r"^from_texts: ") as caught:
        RagkitRetriever.from_texts(texts)
    assert isinstance(caught.value, DataError)  # (caught as before)
