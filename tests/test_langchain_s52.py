"""Review of the LangChain integration (session 52), one section per finding."""

from __future__ import annotations

from langchain_core.documents import Document

from ragkit.integrations.langchain import RagkitRetriever
from ragkit.retrievers import BM25


def _tenant_docs() -> list[Document]:
    return [Document(f"doc {w} about cats", id=f"d{i}", metadata={"tenant": "a" if i % 2 else "b"})
            for i, w in enumerate("alpha beta gamma delta eps".split())]


# ---------------------------------------------------------------------- 1. filter=None is not given
# a call's filter=None replaced the retriever's default filter: a tenant filter from search_kwargs was bypassed
def test_a_calls_filter_none_keeps_the_default_filter():
    r = RagkitRetriever(pipeline=BM25(), corpus=_tenant_docs(), k=5, search_kwargs={"filter": {"tenant": "a"}})
    want = sorted(d.id for d in r.invoke("cats"))
    assert want == ["d1", "d3"]
    assert sorted(d.id for d in r.invoke("cats", filter=None)) == want
    assert [sorted(d.id for d in found) for found in r.batch(["cats", "alpha cats"], filter=None)] == [want, want]
    assert sorted(d.id for d in r.invoke("cats", k=None, filter=None)) == want


async def test_a_calls_filter_none_keeps_the_default_filter_async():
    r = RagkitRetriever(pipeline=BM25(), corpus=_tenant_docs(), k=5, search_kwargs={"filter": {"tenant": "a"}})
    assert sorted(d.id for d in await r.ainvoke("cats", filter=None)) == ["d1", "d3"]
    assert [sorted(d.id for d in x) for x in await r.abatch(["cats"], filter=None)] == [["d1", "d3"]]


def test_an_operators_own_filter_none_keeps_its_default_filter():
    r = RagkitRetriever(pipeline=BM25(), corpus=_tenant_docs(), k=5,
                        search_kwargs={"bm25": {"filter": {"tenant": "b"}}})
    want = ["d0", "d2", "d4"]
    assert sorted(d.id for d in r.invoke("cats")) == want
    assert sorted(d.id for d in r.invoke("cats", bm25={"filter": None})) == want
    assert sorted(d.id for d in r.invoke("cats", bm25={"filter": None, "k": 5})) == want
    # no default: filter=None filters nothing, as before
    plain = RagkitRetriever(pipeline=BM25(), corpus=_tenant_docs(), k=5)
    assert len(plain.invoke("cats", filter=None)) == 5 and len(plain.invoke("cats", bm25={"filter": None})) == 5
