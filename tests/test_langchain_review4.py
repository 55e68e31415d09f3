"""RagkitRetriever, fourth review (a LangChain LCEL app developer's).

- A retriever over a pipeline with a ``generate`` step ran the language model on every retrieval and
  threw the answer away (a saved ``bm25 | generate`` folder: 20-80 s per query with SmolLM2).
- ``batch`` / ``abatch`` holding a bad query (``return_exceptions=False``) left the good queries' callback
  runs open: started, never ended.
"""
from __future__ import annotations

import asyncio
import logging

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from ragkit.errors import DataError, ParamError
from ragkit.generators import Generate
from ragkit.integrations.langchain import RagkitRetriever
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25
from ragkit.types import Corpus

TEXTS = ["a cat sat", "a dog ran", "fish swim", "cat and dog", "the cat ate fish"]
QUERIES = ["cat", "dog", "fish", "cat fish"]


class _ChatCalls(BaseCallbackHandler):
    def __init__(self) -> None:
        self.n = 0

    def on_chat_model_start(self, *args, **kwargs) -> None:
        self.n += 1


def _ids(docs) -> list[tuple[str, float, int]]:
    return [(d.id, d.metadata["score"], d.metadata["rank"]) for d in docs]


# ------------------------------------------------------------------ 1. no LLM call per retrieval
def test_a_generate_step_makes_no_chat_model_call_and_the_documents_are_the_same(caplog):
    calls = _ChatCalls()
    chat = FakeListChatModel(responses=["fake answer"], callbacks=[calls])
    corpus = Corpus.from_texts(TEXTS)
    rag = (BM25(k=3) | Generate(backend="langchain").with_chat_model(chat)).fit(corpus)
    with caplog.at_level(logging.INFO, logger="ragkit"):
        rr = RagkitRetriever(pipeline=rag, k=2)
    assert any("generate step is not run" in r.getMessage() for r in caplog.records)
    plain = RagkitRetriever(pipeline=BM25(k=3), corpus=corpus, k=2)
    assert _ids(rr.invoke("cat")) == _ids(plain.invoke("cat"))
    assert [_ids(d) for d in rr.batch(QUERIES)] == [_ids(d) for d in plain.batch(QUERIES)]
    assert [_ids(d) for d in asyncio.run(rr.abatch(QUERIES))] == [_ids(d) for d in plain.batch(QUERIES)]
    assert _ids(asyncio.run(rr.ainvoke("fish"))) == _ids(plain.invoke("fish"))
    assert calls.n == 0
    # the pipeline's own search still answers
    assert rag.search(["cat"]).values["answer"] == ["fake answer"]
    assert calls.n == 1


def test_a_saved_local_generate_pipeline_loads_no_model_when_retrieving(tmp_path, monkeypatch):
    """RagkitRetriever(pipeline=folder) over a saved ``bm25 | generate`` (the local SmolLM2 backend)."""
    pytest.importorskip("transformers")
    from ragkit.generators.local import LocalGenerator

    corpus = Corpus.from_texts(TEXTS)
    Pipeline([BM25(k=3), Generate(top_k=2, max_new_tokens=4)]).fit(corpus).save(tmp_path / "rag")

    def refused(*args, **kwargs):
        raise AssertionError("the language model ran during a retrieval")

    monkeypatch.setattr(LocalGenerator, "load", refused)
    monkeypatch.setattr(LocalGenerator, "generate", refused)
    rr = RagkitRetriever(pipeline=tmp_path / "rag", k=2)
    plain = RagkitRetriever(pipeline=BM25(k=3), corpus=corpus, k=2)
    assert [_ids(d) for d in rr.batch(QUERIES)] == [_ids(d) for d in plain.batch(QUERIES)]
    assert _ids(rr.invoke("dog")) == _ids(plain.invoke("dog"))


def test_a_generate_step_inside_a_branch_makes_no_call_and_asking_for_answers_is_refused():
    calls = _ChatCalls()
    chat = FakeListChatModel(responses=["fake answer"], callbacks=[calls])
    gen = Generate(backend="langchain").with_chat_model(chat)
    rag = Pipeline([BM25(k=3), gen]).fit(Corpus.from_texts(TEXTS))
    nested = Pipeline([rag]).fit(Corpus.from_texts(TEXTS))
    rr = RagkitRetriever(pipeline=nested, k=2)
    assert [d.page_content for d in rr.invoke("dog")][0] in ("a dog ran", "cat and dog")
    assert calls.n == 0
    # an explicit generate={"answer": True} ran the model and threw its answers away (session 52): refused
    with pytest.raises(ParamError, match=r"^search option generate.answer: got True; a retriever returns documents"):
        rr.invoke("dog", generate={"answer": True})
    assert calls.n == 0


def test_search_kwargs_asking_for_answers_are_refused():
    """search_kwargs={"generate": {"answer": True}} ran the generate step on every retrieval and threw its answers
    away (session 52: refused, as a call's generate={"answer": True} is)."""
    calls = _ChatCalls()
    chat = FakeListChatModel(responses=["fake answer"], callbacks=[calls])
    rag = (BM25(k=3) | Generate(backend="langchain").with_chat_model(chat)).fit(Corpus.from_texts(TEXTS))
    with pytest.raises(ParamError, match=r"^search_kwargs: search option generate.answer: got True"):
        RagkitRetriever(pipeline=rag, k=2, search_kwargs={"generate": {"answer": True}})
    assert calls.n == 0


def test_a_retriever_without_generate_step_gets_no_generate_option():
    r = RagkitRetriever(pipeline=BM25(), corpus=TEXTS, k=1)
    assert r.invoke("fish")[0].page_content == "fish swim"
    assert r._rankings_only == {}


# ------------------------------------------------------------------ 2. batch runs all closed
class _Runs(BaseCallbackHandler):
    def __init__(self) -> None:
        self.started: list[object] = []
        self.ended: dict[object, str] = {}

    def on_retriever_start(self, serialized, query, *, run_id, **kwargs) -> None:
        self.started.append(run_id)

    def on_retriever_end(self, documents, *, run_id, **kwargs) -> None:
        self.ended[run_id] = "end"

    def on_retriever_error(self, error, *, run_id, **kwargs) -> None:
        self.ended[run_id] = f"error: {error}"


@pytest.mark.parametrize("how", ["batch", "abatch"])
def test_a_bad_query_in_a_batch_ends_every_run_it_started(how):
    r = RagkitRetriever(pipeline=BM25(), corpus=["a cat", "a dog"], k=1)
    h = _Runs()
    call = (lambda: r.batch(["cat", 5, "dog"], config={"callbacks": [h]})) if how == "batch" else (
        lambda: asyncio.run(r.abatch(["cat", 5, "dog"], config={"callbacks": [h]})))
    with pytest.raises(DataError, match=r"query 1: expected a string, got int 5"):
        call()
    assert len(h.started) == 3
    assert set(h.ended) == set(h.started), "a run left open"
    said = [h.ended[run] for run in h.started]
    assert said[1].startswith("error: query 1: expected a string")
    assert said[0] == said[2] and said[0].startswith("error: not searched: 1 of the batch's 3 queries failed")
    assert "return_exceptions=True" in said[0]


@pytest.mark.parametrize("how", ["batch", "abatch"])
def test_return_exceptions_still_searches_the_good_queries(how):
    r = RagkitRetriever(pipeline=BM25(), corpus=["a cat", "a dog"], k=1)
    h = _Runs()
    out = (r.batch(["cat", 5], config={"callbacks": [h]}, return_exceptions=True) if how == "batch" else
           asyncio.run(r.abatch(["cat", 5], config={"callbacks": [h]}, return_exceptions=True)))
    assert out[0][0].page_content == "a cat" and isinstance(out[1], DataError)
    assert [h.ended[run] for run in h.started][0] == "end"


def test_retriever_load_puts_back_or_names_an_earlier_save_an_interrupted_save_left(tmp_path):
    """Review: RagkitRetriever.load refused a folder missing because a save was killed between its two renames
    ('no such folder'), where Pipeline.load puts the earlier save back, or names it while a save may still run."""
    import os
    import socket

    r = RagkitRetriever(pipeline=BM25(k=5), corpus=Corpus.from_texts(TEXTS), k=2)
    r.save(tmp_path / "app")
    (tmp_path / "app").rename(tmp_path / ".app.old-abcd1234")  # its save ended: no temporary folder
    assert _ids(RagkitRetriever.load(tmp_path / "app").invoke("cat")) == _ids(r.invoke("cat"))
    (tmp_path / "app").rename(tmp_path / ".app.old-abcd1234")
    (tmp_path / f".app.tmp-{os.getpid()}@{socket.gethostname()}-abcd1234").mkdir()  # a save still running
    with pytest.raises(FileNotFoundError, match=r"no such folder; but .*\.app\.old-abcd1234 holds an earlier save"):
        RagkitRetriever.load(tmp_path / "app")
