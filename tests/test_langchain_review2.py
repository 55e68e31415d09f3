"""RagkitRetriever, second LangChain-app review: ``search_kwargs["k"]``, ``abatch``'s callbacks on the event
loop, validated assignment, keyword-only ``from_texts`` / ``from_documents``, queries named as the caller gave
them, and ``operators`` of a routed pipeline.  A 200-document SciFact slice with BM25 (and a fake dense)."""

from __future__ import annotations

import asyncio
import threading
from functools import lru_cache
from typing import Any

import numpy as np
import pytest
from conftest import SCIFACT as SCIFACT_DIR  # (where the tests find SciFact: ../shared, else the downloaded copy)
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding

from ragkit.errors import DataError, NotFittedError, ParamError
from ragkit.integrations.langchain import LangChainEmbeddingsEncoder, RagkitRetriever


@lru_cache(maxsize=1)
def _slice() -> Any:
    """The first 200 SciFact documents (a Corpus) and 8 test queries."""
    from ragkit import load_beir

    ds = load_beir(SCIFACT_DIR)
    return ds.corpus.subset(np.arange(200)), list(ds.queries("test")[:8].texts)


def _bm25(**kwargs: Any) -> RagkitRetriever:
    from ragkit.retrievers import BM25

    return RagkitRetriever(pipeline=BM25(k=50), corpus=_slice()[0], **kwargs)


# ---------------------------------------------------------------------- 1. search_kwargs["k"]
def test_search_kwargs_k_is_the_retrievers_k(tmp_path):
    """``search_kwargs={"k": 5}`` was refused when built, and ``r.search_kwargs["k"] = 5`` later made every call
    raise ``TypeError: search() got multiple values for keyword argument 'k'``."""
    q = _slice()[1][0]
    r = _bm25(search_kwargs={"k": 5})
    assert r.k == 5 and len(r.invoke(q)) == 5
    assert len(r.invoke(q, k=2)) == 2 and [len(d) for d in r.batch([q, q], k=1)] == [1, 1]  # the call's k first
    assert len(r.invoke(q, k=None)) == 5
    r.search_kwargs["k"] = 6  # edited in place: wins over k at the next call
    assert len(r.invoke(q)) == 6 and [len(d) for d in r.batch([q])] == [6]
    r.search_kwargs = {"k": 2}  # assigned: sets k too
    assert r.k == 2 and len(r.invoke(q)) == 2
    r.k = 7  # assigned: sets search_kwargs' k too (the last one set wins)
    assert r.search_kwargs == {"k": 7} and len(r.invoke(q)) == 7
    plain = _bm25(k=3)
    plain.search_kwargs["k"] = 5
    assert len(plain.invoke(q)) == 5
    plain.search_kwargs["k"] = "5"  # checked at the call, naming search_kwargs
    with pytest.raises(ParamError, match=r"search_kwargs: k: expected a positive integer, got '5'"):
        plain.invoke(q)
    with pytest.raises(ParamError, match="search_kwargs"):
        plain.batch([q])
    with pytest.raises(ValueError, match=r"k=3 and search_kwargs=\{'k': 5\} disagree"):
        _bm25(k=3, search_kwargs={"k": 5})
    assert _bm25(k=5, search_kwargs={"k": 5}).k == 5
    with pytest.raises(ValueError, match="search_kwargs: .*k: expected a positive integer, got 0"):
        _bm25(search_kwargs={"k": 0})
    # saved with it; load(path, k=...) wins over the saved one
    r.save(tmp_path / "r")
    back = RagkitRetriever.load(tmp_path / "r")
    assert (back.k, back.search_kwargs) == (7, {"k": 7}) and len(back.invoke(q)) == 7
    other = RagkitRetriever.load(tmp_path / "r", k=2)
    assert other.k == 2 and "k" not in other.search_kwargs and len(other.invoke(q)) == 2


# ---------------------------------------------------------------------- 2. abatch's callbacks on the loop
class _OnLoop(AsyncCallbackHandler):
    """Records the event loop each callback ran on; feeds ``queue`` (of the app's loop) at each end."""

    raise_error = True

    def __init__(self, queue: asyncio.Queue) -> None:
        self.loops: set[int] = set()
        self.events: list[str] = []
        self.queue = queue

    async def on_retriever_start(self, serialized, query, **kw):  # noqa: ANN001
        self.loops.add(id(asyncio.get_running_loop()))
        self.events.append(f"start {query}")

    async def on_retriever_end(self, documents, **kw):  # noqa: ANN001
        self.loops.add(id(asyncio.get_running_loop()))
        self.events.append(f"end {len(documents)}")
        await self.queue.put(len(documents))

    async def on_retriever_error(self, error, **kw):  # noqa: ANN001
        self.loops.add(id(asyncio.get_running_loop()))
        self.events.append(f"error {type(error).__name__}")


async def test_abatch_runs_callbacks_on_the_event_loop_and_the_search_off_it(monkeypatch):
    """abatch ran the whole sync batch, its callback manager included, in a worker thread: an
    AsyncCallbackHandler ran on a private loop there, and one putting into the app's asyncio.Queue raised
    'Non-thread-safe operation' (debug) or left its reader waiting."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    r = _bm25(k=4)
    queries = _slice()[1][:3]
    threads: list[int] = []
    calls: list[list[str]] = []
    real = r.pipeline.search
    monkeypatch.setattr(r.pipeline, "search", lambda q, **kw: threads.append(threading.get_ident())
                        or calls.append(list(q)) or real(q, **kw))
    h = _OnLoop(asyncio.Queue())
    out = await r.abatch(queries, {"callbacks": [h]})
    # (asserted before any task waits on the queue: the old code's put from another loop left such a task
    # never woken, and the loop's close waiting for it forever)
    assert h.loops == {id(loop)}, "abatch's callbacks must run on the caller's event loop"
    assert h.events == [f"start {q}" for q in queries] + ["end 4"] * 3
    assert calls == [queries] and threads[0] != threading.get_ident(), "one search, off the event loop thread"
    # the app's reader waiting on the queue is woken by each end
    queue: asyncio.Queue = asyncio.Queue()
    readers = [asyncio.create_task(queue.get()) for _ in queries]
    await asyncio.sleep(0)
    await r.abatch(queries, {"callbacks": [_OnLoop(queue)]})
    assert await asyncio.wait_for(asyncio.gather(*readers), 5) == [4, 4, 4]
    monkeypatch.undo()
    assert [[d.id for d in docs] for docs in out] == [[d.id for d in docs] for docs in r.batch(queries)]
    # a bad query fails alone (return_exceptions), its callback on the loop too; a pipeline error reaches all
    h = _OnLoop(asyncio.Queue())
    out = await r.abatch(["vitamin D", 3], {"callbacks": [h]}, return_exceptions=True)
    assert len(out[0]) == 4 and isinstance(out[1], DataError) and h.loops == {id(loop)}
    assert sorted(h.events[2:]) == ["end 4", "error DataError"]
    with pytest.raises(DataError, match="query 1: expected a string"):
        await r.abatch(["vitamin D", 3])
    out = await r.abatch(["a", "b"], return_exceptions=True, bm25={"kk": 1})
    assert all(isinstance(e, ParamError) for e in out)
    assert await r.abatch([]) == []


# ---------------------------------------------------------------------- 3. assignment validated
def test_assignment_is_checked_as_construction_is_and_a_refused_one_changes_nothing():
    """``r.k = 0``, ``r.k = "5"`` and ``r.pipeline = "bm25"`` were accepted, and failed at the next call
    (the last with AttributeError: 'str' object has no attribute 'name')."""
    from ragkit.retrievers import BM25

    corpus, queries = _slice()
    r = _bm25(k=3)
    pipe, lock = r.pipeline, r._lock
    for name, value, error in [("k", 0, ValueError), ("k", "5", ValueError), ("k", 2.0, ValueError),
                               ("pipeline", "bm25", NotFittedError), ("pipeline", 5, ValueError),
                               ("pipeline", BM25(), NotFittedError),
                               ("search_kwargs", {"filter": {"nope": 1}}, ValueError),
                               ("search_kwargs", {"callbacks": []}, ValueError), ("train", [1], ValueError)]:
        with pytest.raises(error):
            setattr(r, name, value)
        assert (r.k, r.pipeline, r.search_kwargs, r._lock) == (3, pipe, {}, lock), f"r.{name} = {value!r} changed r"
        assert len(r.invoke(queries[0])) == 3
    # a valid new pipeline: its documents, its lock, its retrievers' names
    other = BM25(k=20).fit(corpus.subset(np.arange(100, 200)))
    r.pipeline = other
    from ragkit._locks import lock_of

    assert r.pipeline is other and r._lock is lock_of(other) and r._corpus is other.corpus_
    docs = r.invoke(queries[0])
    assert all(d.id in set(corpus.ids[100:].tolist()) for d in docs) and docs[0].metadata["operators"] == ["bm25"]
    r.add_documents([Document("an added zebra document", id="zebra")])
    assert r.invoke("zebra")[0].id == "zebra" and "zebra" in other.corpus_.ids.tolist()
    # a corpus assigned: the pipeline refitted on it (a copy: the operator another holder searches is kept)
    r.corpus = [Document("cats purr", id="c1"), Document("dogs bark", id="c2")]
    assert r.corpus is None and r.pipeline is not other and len(other.corpus_) == 101
    assert [d.id for d in r.invoke("dogs")] == ["c2"]
    r.k = 1
    assert r.k == 1 and len(r.invoke("cats dogs")) == 1


# ---------------------------------------------------------------------- 4. keyword-only constructors
def test_from_texts_and_from_documents_take_only_the_texts_by_position():
    """``from_texts(texts, metadatas)`` (LangChain's BM25Retriever order) said 'pipeline: expected ... got list'."""
    from ragkit.retrievers import BM25

    with pytest.raises(ParamError, match=r"from_texts: takes only texts by position.*metadatas=\.\.\."):
        RagkitRetriever.from_texts(["a cat", "a dog"], [{"s": 1}, {"s": 2}])
    with pytest.raises(TypeError, match=r"from_documents: takes only documents by position.*pipeline=\.\.\."):
        RagkitRetriever.from_documents([Document("a cat", id="1")], BM25())
    r = RagkitRetriever.from_texts(["a cat", "a dog"], metadatas=[{"s": 1}, {"s": 2}], pipeline=BM25(), k=1)
    assert r.invoke("cat")[0].metadata["s"] == 1
    assert RagkitRetriever.from_documents([Document("a cat", id="1")], pipeline=BM25(), k=1).invoke("cat")[0].id == "1"


# ---------------------------------------------------------------------- 5. queries named as given
def test_a_bad_query_is_named_as_the_caller_gave_it():
    """A lone-surrogate query was 'query[0] (id 'q0')': an id the caller never gave."""
    r = _bm25(k=2)
    with pytest.raises(DataError, match=r"^the query holds a lone surrogate '\\ud800' at character 3") as e:
        r.invoke("bad\ud800 surrogate")
    assert "q0" not in str(e.value) and "[0]" not in str(e.value)
    with pytest.raises(DataError, match=r"^the query: expected a string, got dict"):
        r.invoke({"query": "vitamin D"})
    out = r.batch(["vitamin D", "x \udc80", 3, "cancer"], return_exceptions=True)  # each bad query fails alone
    assert [type(x).__name__ for x in out] == ["list", "DataError", "DataError", "list"]
    assert str(out[1]).startswith("query 1 holds a lone surrogate '\\udc80' at character 2")
    assert str(out[2]).startswith("query 2: expected a string, got int 3")
    with pytest.raises(DataError, match=r"^query 1 holds a lone surrogate"):
        r.batch(["vitamin D", "x \udc80"])
    assert len(r.invoke("Vitamin D\u0000fractures 维生素D")) == 2  # NUL and non-ASCII text are queries


# ---------------------------------------------------------------------- 6. operators of a routed pipeline
ROUTED = """
pipeline:
  - route:
      router:
        rule_router:
          rules:
            - {label: keyword, max_words: 4}
          default: semantic
      branches:
        keyword:
          - bm25: {k: 20}
        semantic:
          - dense: {k: 20, model: lc-fake-review2}
"""


@pytest.fixture()
def fake_encoder() -> Any:
    from ragkit.encoders import unregister_encoder

    enc = LangChainEmbeddingsEncoder(DeterministicFakeEmbedding(size=16)).register("lc-fake-review2", replace=True)
    yield enc
    unregister_encoder("lc-fake-review2")


def test_operators_of_a_routed_pipeline_are_the_taken_branchs(fake_encoder):
    """``operators`` listed every retriever of the tree (bm25 and dense) for a query routed to BM25 alone."""
    corpus = _slice()[0]
    short, long = "vitamin D", "vitamin D fractures in elderly women"
    r = RagkitRetriever(pipeline=ROUTED, corpus=corpus, k=3)
    for docs in (r.invoke(short), r.batch([short, long])[0]):
        assert [d.metadata["operators"] for d in docs] == [["bm25"]] * 3
    for docs in (r.invoke(long), r.batch([short, long])[1]):
        assert [d.metadata["operators"] for d in docs] == [["dense"]] * 3
    # a retriever before the route counts for every query (the keyword branch keeps its ranking: a route whose
    # every branch retrieves anew would discard it, and is refused)
    before = ROUTED.replace("pipeline:\n", "pipeline:\n  - bm25: {k: 20}\n").replace(
        "        keyword:\n          - bm25: {k: 20}\n", "        keyword:\n          - top_k: {k: 20}\n")
    r2 = RagkitRetriever(pipeline=before, corpus=corpus, k=3)
    assert r2.batch([short, long])[1][0].metadata["operators"] == ["bm25", "dense"]
    # a route inside a route: which branch the outer took is not what values["route"] says: no operators
    nested = ROUTED.replace("        keyword:\n          - bm25: {k: 20}\n",
                            "        keyword:\n          - route:\n              router: {rule_router: {rules: "
                            "[{label: a, max_words: 2}], default: b}}\n              branches:\n"
                            "                a: [bm25: {k: 20}]\n                b: [bm25: {k: 20}]\n")
    r3 = RagkitRetriever(pipeline=nested, corpus=corpus, k=3)
    for docs in r3.batch([short, long]):
        assert docs and all("operators" not in d.metadata for d in docs)
    # without a route: every retriever, as before
    assert _bm25(k=3).invoke(short)[0].metadata["operators"] == ["bm25"]


def test_returned_metadata_is_the_callers_own_not_the_index() -> None:
    """A chain step annotating a returned document (``metadata["tags"].append``) changed the index's own
    list: the next search returned the tag, a saved index kept it, and ``filter`` disagreed with it.
    Object cells are copied on the way out."""
    docs = [Document(page_content="cells divide rapidly", id="a", metadata={"tags": ["neuro"], "n": {"x": 1}}),
            Document(page_content="vitamin d and bones", id="b", metadata={"tags": ["other"], "n": {"x": 2}})]
    r = RagkitRetriever.from_documents(docs, k=1)
    top = r.invoke("cells divide")[0]
    top.metadata["tags"].append("seen")
    top.metadata["n"]["x"] = 99
    again = r.invoke("cells divide")[0]
    assert again.metadata["tags"] == ["neuro"] and again.metadata["n"] == {"x": 1}
    assert again.metadata["tags"] is not top.metadata["tags"]


def test_a_retriever_pickles_and_deep_copies_into_an_independent_one() -> None:
    """pickle.dumps / copy.deepcopy of a RagkitRetriever raised TypeError (its readers-writer lock); a copy
    now answers as the original, and editing it leaves the original as it was."""
    import copy
    import pickle

    docs = ["cells divide rapidly", "vitamin d and bones", "a cell membrane"]
    r = RagkitRetriever.from_texts(docs, k=2)
    want = [(d.id, d.metadata["score"]) for d in r.invoke("cell")]
    for other in (pickle.loads(pickle.dumps(r)), copy.deepcopy(r)):
        assert [(d.id, d.metadata["score"]) for d in other.invoke("cell")] == want
        other.add_documents([Document(page_content="cell cell cell", id="new")])
        assert other.invoke("cell")[0].id == "new"
        assert [(d.id, d.metadata["score"]) for d in r.invoke("cell")] == want


def test_deleting_the_one_document_with_its_own_id_field_gives_back_the_id_filter() -> None:
    """Adding a document with ``metadata["id"]`` (an int) and deleting it again left the corpus an all-None
    ``id`` column: every document lost ``metadata["id"]`` for good and ``filter={"id": ...}`` was refused
    ('the field holds int values'). A field no document holds any more is gone after a removal."""
    docs = [Document(page_content="cells divide rapidly", id="a"), Document(page_content="vitamin d", id="b")]
    r = RagkitRetriever.from_documents(docs, k=1)
    before = r.invoke("vitamin", filter={"id": "b"})
    assert [d.id for d in before] == ["b"] and before[0].metadata["id"] == "b"
    r.add_documents([Document(page_content="vitamin web page", id="web-1", metadata={"id": 17, "source": "x"})])
    r.delete(["web-1"])
    after = r.invoke("vitamin", filter={"id": "b"})
    assert [d.id for d in after] == ["b"] and after[0].metadata == before[0].metadata


def test_changing_the_callers_documents_after_indexing_leaves_the_index_alone() -> None:
    """The corpus kept the caller's own metadata lists: appending to a document's list after building the
    retriever changed what later searches returned."""
    docs = [Document(page_content="cells divide rapidly", id="a", metadata={"tags": ["neuro"]})]
    r = RagkitRetriever.from_documents(docs, k=1)
    docs[0].metadata["tags"].append("changed later")
    assert r.invoke("cells")[0].metadata["tags"] == ["neuro"]
