"""A configurable RagkitRetriever's cache of the retrievers built for configured values, and adds refused before
the embedding (re-review of the session-54 LangChain fixes)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.runnables import ConfigurableField

import ragkit.pipelines.store as store
from ragkit.errors import DataError, ParamError
from ragkit.integrations.langchain import LangChainEmbeddingsEncoder, RagkitRetriever
from ragkit.types import Corpus


def _saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str = "idx") -> Path:
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / name
    RagkitRetriever.from_texts([f"cat {i}" for i in range(20)], k=2).save(folder)
    return folder


def _spy_loads(monkeypatch: pytest.MonkeyPatch, delay: float = 0.0) -> list[object]:
    loads: list[object] = []
    real = store._load_pipeline

    def spy(*args: Any, **kwargs: Any) -> Any:
        loads.append(args[0])
        time.sleep(delay)
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "_load_pipeline", spy)
    return loads


# ---------------------------------------------------------------------- 1. a configured k of 8 is not "k unset"
# the key's unset marker was the int _BUILT_KEPT (8), compared with `is`: k=8 configured keyed as k left unset
def test_a_configured_k_of_8_is_not_k_unset(tmp_path, monkeypatch):
    folder = _saved(tmp_path, monkeypatch)
    c = RagkitRetriever.from_texts(["other"]).configurable_fields(pipeline=ConfigurableField(id="index"),
                                                                  k=ConfigurableField(id="k"))
    assert len(c.invoke("cat", config={"configurable": {"index": str(folder), "k": 8}})) == 8
    assert len(c.invoke("cat", config={"configurable": {"index": str(folder)}})) == 4  # (the base's k)


# ---------------------------------------------------------------------- 2. the base's later k / search_kwargs count
# the cache key held only the configured values: base.k = 5 after a call still returned the first call's k
def test_a_later_change_of_the_base_retrievers_k_is_used(tmp_path, monkeypatch):
    folder = _saved(tmp_path, monkeypatch)
    base = RagkitRetriever.from_texts(["other"])
    c = base.configurable_fields(pipeline=ConfigurableField(id="index"))
    cfg = {"configurable": {"index": str(folder)}}
    assert len(c.invoke("cat", config=cfg)) == 4
    base.k = 5
    assert len(c.invoke("cat", config=cfg)) == 5
    base.search_kwargs = {"k": 3}
    assert len(c.invoke("cat", config=cfg)) == 3


# ---------------------------------------------------------------------- 5. the cache is thread-safe
# a hit was popped and put back (another thread asking in between loaded the folder again), and threads asking for
# a retriever not built yet each loaded the folder
def _in_threads(n: int, call: Any) -> list[Any]:
    start = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        start.wait()
        try:
            out[i] = call()
        except Exception as e:  # noqa: BLE001  (reported by the assertion)
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_threads_asking_for_a_built_retriever_load_nothing(tmp_path, monkeypatch):
    folder = _saved(tmp_path, monkeypatch)
    c = RagkitRetriever.from_texts(["other"]).configurable_fields(pipeline=ConfigurableField(id="index"))
    cfg = {"configurable": {"index": str(folder)}}
    c.invoke("cat", config=cfg)  # (warm-up: built once)
    loads = _spy_loads(monkeypatch)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # (threads switch between any two steps: the pop / put back window is hit)
    try:
        found = _in_threads(8, lambda: [c._prepare(cfg)[0] for _ in range(300)])
    finally:
        sys.setswitchinterval(interval)
    assert not [x for x in found if isinstance(x, Exception)]
    assert loads == []
    assert len({id(r) for x in found for r in x}) == 1


def test_threads_asking_for_a_new_retriever_load_it_once(tmp_path, monkeypatch):
    folder = _saved(tmp_path, monkeypatch)
    c = RagkitRetriever.from_texts(["other"]).configurable_fields(pipeline=ConfigurableField(id="index"))
    cfg = {"configurable": {"index": str(folder)}}
    loads = _spy_loads(monkeypatch, delay=0.5)
    found = _in_threads(2, lambda: [d.id for d in c.invoke("cat", config=cfg)])
    assert all(isinstance(x, list) and len(x) == 4 for x in found), found
    assert len(loads) == 1


# ---------------------------------------------------------------------- 6. a folder saved again replaces its entry
# the key held the manifest's identity: each save of the folder added one more entry, the old retriever kept
def test_a_folder_saved_again_keeps_one_entry(tmp_path, monkeypatch):
    folder = _saved(tmp_path, monkeypatch)
    c = RagkitRetriever.from_texts(["other"]).configurable_fields(pipeline=ConfigurableField(id="index"))
    cfg = {"configurable": {"index": str(folder)}}
    assert c.invoke("cat 3", config=cfg)
    RagkitRetriever.from_texts(["a dog", "a new cat"], k=2).save(folder)
    assert [d.page_content for d in c.invoke("new cat", config=cfg)][0] == "a new cat"
    built = c.__pydantic_private__["_built"]  # type: ignore[index]
    assert len(built) == 1


# ---------------------------------------------------------------------- 3. a refused add embeds nothing
# a pipeline that cannot add (an mmr step then; a dbnorm step since mmr can, review s55) embedded every added
# document before refusing, and the refusal named add_documents when add_texts was called
class _SpyEmbeddings(DeterministicFakeEmbedding):
    calls: ClassVar[list[list[str]]] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        type(self).calls.append(list(texts))
        return super().embed_documents(texts)


def test_an_add_the_pipeline_cannot_take_is_refused_before_the_embedding(tmp_path, monkeypatch):
    from ragkit import registry
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import Dense

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    LangChainEmbeddingsEncoder(_SpyEmbeddings(size=16), key="s54b-spy", cache=False).register("s54b-spy",
                                                                                              replace=True)
    # (mmr was the step that cannot add here until it could, review s55: dbnorm still cannot)
    pipe = Pipeline([Dense(model="s54b-spy", k=5), registry.get("dbnorm")(model="s54b-spy")])
    r = RagkitRetriever.from_texts(["a cat", "a dog", "a bird"], pipeline=pipe, k=2)
    _SpyEmbeddings.calls.clear()
    with pytest.raises(ParamError, match=r"^add_texts: pipeline\[1\]\.dbnorm \(dbnorm\) cannot add documents"):
        r.add_texts(["new text one", "new text two"])
    assert _SpyEmbeddings.calls == []
    with pytest.raises(ParamError, match=r"^add_documents: pipeline\[1\]\.dbnorm \(dbnorm\) cannot add documents"):
        r.add_documents([Document("new text three")])
    assert _SpyEmbeddings.calls == []


def test_dense_then_mmr_takes_added_and_deleted_documents(tmp_path, monkeypatch):
    """Dense | MMR refused add_documents (MMR held its vectors per document and had no add); it follows the
    retriever now (review s55)."""
    from ragkit import registry
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import Dense

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    LangChainEmbeddingsEncoder(_SpyEmbeddings(size=16), key="s54b-spy", cache=False).register("s54b-spy",
                                                                                              replace=True)
    pipe = Pipeline([Dense(model="s54b-spy", k=5), registry.get("mmr")(model="s54b-spy")])
    r = RagkitRetriever.from_texts(["a cat", "a dog", "a bird"], pipeline=pipe, k=5)
    ids = r.add_texts(["new text one", "new text two"], ids=["n1", "n2"])
    assert ids == ["n1", "n2"]
    mmr = r.pipeline.steps[1]
    assert len(mmr.corpus_) == len(mmr.vectors_) == 5
    assert "new text one" in [d.page_content for d in r.invoke("new text one")]
    r.delete(["n1"])
    assert len(mmr.corpus_) == len(mmr.vectors_) == 4
    assert "new text one" not in [d.page_content for d in r.invoke("new text one")]


def test_an_added_value_of_another_kind_is_refused_before_the_embedding(tmp_path, monkeypatch):
    from ragkit.pipelines import Pipeline
    from ragkit.retrievers import Dense

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    LangChainEmbeddingsEncoder(_SpyEmbeddings(size=16), key="s54b-spy", cache=False).register("s54b-spy",
                                                                                              replace=True)
    r = RagkitRetriever.from_texts(["a cat", "a dog"], metadatas=[{"year": 2020}, {"year": 2021}],
                                   pipeline=Pipeline([Dense(model="s54b-spy", k=5)]), k=2)
    _SpyEmbeddings.calls.clear()
    with pytest.raises(DataError, match=r"^add_texts: .*year"):
        r.add_texts(["a bird"], [{"year": "2022"}])
    assert _SpyEmbeddings.calls == []


# ---------------------------------------------------------------------- 4. Dense.add(vectors=) checked as encoders' are
# ragged rows or text raised numpy's ValueError, and NaN vectors given were blamed on "the encoder"
def _fitted_dense(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from ragkit.retrievers import Dense

    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path))
    LangChainEmbeddingsEncoder(DeterministicFakeEmbedding(size=16), key="s54b-fake").register("s54b-fake",
                                                                                              replace=True)
    return Dense(model="s54b-fake", search="exact").fit(Corpus.from_texts(["a", "b"], ids=["a", "b"]))


@pytest.mark.parametrize("vectors, said", [
    ([[1.0] * 16, [1.0] * 15], r"^dense\.add: the vectors given are a list that is no array of numbers \(vectors of "
                               r"lengths \[15, 16\]\)"),
    (np.array([["x"] * 16] * 2), r"^dense\.add: the vectors given are an array of <U1 values"),
])
def test_dense_add_refuses_vectors_of_no_numbers(tmp_path, monkeypatch, vectors, said):
    dense = _fitted_dense(tmp_path, monkeypatch)
    with pytest.raises(DataError, match=said):
        dense.add(Corpus.from_texts(["c", "e"], ids=["c", "e"]), vectors=vectors)
    assert dense.corpus_.ids.tolist() == ["a", "b"]


def test_dense_add_names_nan_vectors_given_as_given(tmp_path, monkeypatch):
    dense = _fitted_dense(tmp_path, monkeypatch)
    with pytest.raises(DataError, match=r"^dense\.add: the vectors given hold 2 of the 2 document vectors with NaN") \
            as caught:
        dense.add(Corpus.from_texts(["c", "e"], ids=["c", "e"]), vectors=np.full((2, 16), np.nan, np.float32))
    assert "encoder" not in str(caught.value)
    assert dense.corpus_.ids.tolist() == ["a", "b"]


# ---------------------------------------------------------------------- 7. astream / atransform load off the loop
# astream and atransform (DynamicRunnable's) built the configured retriever, loading the folder, on the event loop
def test_astream_and_atransform_load_the_folder_off_the_event_loop(tmp_path, monkeypatch):
    folder = _saved(tmp_path, monkeypatch)
    real = store._load_pipeline
    threads: list[threading.Thread] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "_load_pipeline", spy)
    base = RagkitRetriever.from_texts(["other"])

    async def main() -> list[list[Any]]:
        loop_thread = threading.current_thread()
        out = []
        c = base.configurable_fields(pipeline=ConfigurableField(id="index"))
        out.append([x async for x in c.astream("cat", config={"configurable": {"index": str(folder)}})])
        c = base.configurable_fields(pipeline=ConfigurableField(id="index"))  # (a fresh cache: loaded again)

        async def one() -> Any:
            yield "cat"

        out.append([x async for x in c.atransform(one(), config={"configurable": {"index": str(folder)}})])
        assert len(threads) == 2 and loop_thread not in threads
        return out

    streamed, transformed = asyncio.run(main())
    assert [len(x) for x in streamed] == [4] and [len(x) for x in transformed] == [4]  # (one chunk: 4 documents)
