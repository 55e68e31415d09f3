"""RagkitRetriever: configurable ``k`` / ``search_kwargs``, metadata kinds checked when documents come in,
a ``search_kwargs`` filter's kinds checked when the retriever is built, ``add_texts`` and ``get_by_ids``."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.documents import Document
from langchain_core.runnables import ConfigurableField

from ragkit.errors import DataError
from ragkit.integrations.langchain import RagkitRetriever


def _docs(n: int = 8) -> list[Document]:
    return [Document(page_content=f"cells divide number {i}", id=f"d{i}", metadata={"year": 2000 + i})
            for i in range(n)]


# ---------------------------------------------------------------------- configurable k / search_kwargs
def test_a_configured_search_kwargs_k_wins_over_the_default_k():
    r = RagkitRetriever.from_documents(_docs())  # k left at its default, 4
    rc = r.configurable_fields(search_kwargs=ConfigurableField(id="search_kwargs"))
    assert len(rc.invoke("cells", config={"configurable": {"search_kwargs": {"k": 2}}})) == 2
    assert len(rc.invoke("cells")) == 4  # not configured: the retriever as built
    assert (r.k, r.search_kwargs) == (4, {})  # the configured retriever is left as it was


def test_a_configured_k_wins_over_search_kwargs_k():
    r = RagkitRetriever.from_documents(_docs(), search_kwargs={"k": 3})
    rc = r.configurable_fields(k=ConfigurableField(id="k"))
    assert len(rc.invoke("cells", config={"configurable": {"k": 2}})) == 2
    assert len(rc.invoke("cells", config={"configurable": {"k": 5}})) == 5
    assert len(rc.invoke("cells")) == 3
    assert (r.k, r.search_kwargs) == (3, {"k": 3})


def test_a_configured_search_kwargs_without_k_keeps_the_retrievers_k_and_both_configured_must_agree():
    r = RagkitRetriever.from_documents(_docs(), k=5)
    rc = r.configurable_fields(k=ConfigurableField(id="k"), search_kwargs=ConfigurableField(id="sk"))
    found = rc.invoke("cells", config={"configurable": {"sk": {"filter": {"year": [2001, 2002, 2003]}}}})
    assert sorted(d.id for d in found) == ["d1", "d2", "d3"]
    assert len(rc.invoke("cells", config={"configurable": {"sk": {"k": 2}}})) == 2
    assert len(rc.invoke("cells", config={"configurable": {"k": 3, "sk": {"k": 3}}})) == 3
    with pytest.raises(ValueError, match="disagree"):  # one config contradicting itself
        rc.invoke("cells", config={"configurable": {"k": 2, "sk": {"k": 3}}})
    with pytest.raises(ValueError, match="disagree"):  # and one constructor call
        RagkitRetriever(pipeline=r.pipeline, k=2, search_kwargs={"k": 3})


# ---------------------------------------------------------------------- metadata kinds
def test_add_documents_refuses_a_metadata_value_of_another_kind_than_the_fields():
    r = RagkitRetriever.from_documents(_docs())
    with pytest.raises(DataError, match=r"add_documents: document 'n1': metadata 'year' is '2020' \(a string\), "
                                        r"but the field holds numbers"):
        r.add_documents([Document(page_content="cells new", id="n1", metadata={"year": "2020"})])
    assert r.get_by_ids(["n1"]) == []  # nothing added
    with pytest.raises(DataError, match="the field holds int values; got '2006'"):  # still refused, not []
        r.invoke("cells", filter={"year": "2006"})
    # missing keys, and numbers of any type (bool, float, numpy) are fine
    import numpy as np

    r.add_documents([Document(page_content="cells a", id="a1"),
                     Document(page_content="cells b", id="a2", metadata={"year": 2020.0}),
                     Document(page_content="cells c", id="a3", metadata={"year": np.int64(2021), "tags": ["x"]}),
                     Document(page_content="cells d", id="a4", metadata={"tags": "y"})])
    assert [d.id for d in r.invoke("cells", filter={"year": 2020})] == ["a2"]
    with pytest.raises(DataError, match=r"document 'a6': metadata 'tags' is \[3\] \(a number\), but the field "
                                        r"holds strings \(in the documents already indexed\)"):
        r.add_documents([Document(page_content="cells f", id="a6", metadata={"tags": [3]})])
    with pytest.raises(DataError, match=r"document 'a6': metadata 'tags' is \[3\] \(a number\), but the field "
                                        r"holds strings \(e\.g\. document 'a5': \['z'\]\)"):  # among themselves
        r.add_documents([Document(page_content="cells e", id="a5", metadata={"tags": ["z"]}),
                         Document(page_content="cells f", id="a6", metadata={"tags": [3]})])


def test_documents_of_one_field_holding_two_kinds_are_refused_when_the_retriever_is_built():
    docs = _docs(3) + [Document(page_content="cells x", id="x", metadata={"year": "2020"})]
    with pytest.raises(ValueError, match=r"corpus: document 'x': metadata 'year' is '2020' \(a string\), but the "
                                         r"field holds numbers \(e\.g\. document 'd0': 2000\)"):
        RagkitRetriever.from_documents(docs)
    with pytest.raises(DataError, match=r"document 'b': metadata 'year' is 2001 \(a number\), but the field "
                                        r"holds strings"):
        RagkitRetriever.from_documents(_docs(2)).add_documents(
            [Document(page_content="a", id="a", metadata={"year": "2000"}),
             Document(page_content="b", id="b", metadata={"year": 2001})])


# ---------------------------------------------------------------------- search_kwargs filter kinds
def test_a_search_kwargs_filter_of_the_wrong_kind_is_refused_when_the_retriever_is_built(tmp_path):
    r = RagkitRetriever.from_documents(_docs())
    r.save(tmp_path / "idx")
    with pytest.raises(ValueError, match=r"search_kwargs: filter\.year: the field holds int values; got '2006'"):
        RagkitRetriever.load(tmp_path / "idx", search_kwargs={"filter": {"year": "2006"}})
    with pytest.raises(ValueError, match=r"search_kwargs: bm25\.filter\.year: the field holds int values"):
        RagkitRetriever.from_documents(_docs(), search_kwargs={"bm25": {"filter": {"year": ["2006"]}}})
    with pytest.raises(ValueError, match=r"search_kwargs: filter\.year"):
        r.search_kwargs = {"filter": {"year": "2006"}}
    assert r.search_kwargs == {}
    ok = RagkitRetriever.load(tmp_path / "idx", search_kwargs={"filter": {"year": [2006, 1990]}})
    assert [d.id for d in ok.invoke("cells")] == ["d6"]


# ---------------------------------------------------------------------- ids, add_texts, get_by_ids
def test_ids_given_twice_in_one_add_documents_name_add_documents():
    r = RagkitRetriever.from_documents(_docs())
    with pytest.raises(DataError, match=r"add_documents: .*given more than once: \['n'\]"):
        r.add_documents([Document(page_content="x", id="n"), Document(page_content="y", id="n")])
    with pytest.raises(DataError, match=r"add_documents: .*given more than once: \['z'\] \(ids=\)"):
        r.add_documents([Document(page_content="x"), Document(page_content="y")], ids=["z", "z"])


def test_add_texts_and_get_by_ids():
    r = RagkitRetriever.from_documents(_docs())
    assert r.add_texts(["mitosis splits cells", "meiosis halves"], [{"year": 1999}, {}], ids=["t1", "t2"]) == \
        ["t1", "t2"]
    got = r.get_by_ids(["t2", "unknown", "d1", "t1"])
    assert [d.id for d in got] == ["t2", "d1", "t1"]
    assert [d.page_content for d in got] == ["meiosis halves", "cells divide number 1", "mitosis splits cells"]
    assert got[0].metadata == {"id": "t2", "title": ""}
    assert got[1].metadata == {"id": "d1", "title": "", "year": 2001}
    assert r.invoke("mitosis", k=1)[0].id == "t1"
    new = r.add_texts(["no id given"])
    assert len(new) == 1 and r.get_by_ids(new)[0].page_content == "no id given"
    assert asyncio.run(r.aadd_texts(["async text"], ids=["t3"])) == ["t3"]
    assert [d.id for d in asyncio.run(r.aget_by_ids(["t3", "d0"]))] == ["t3", "d0"]
    with pytest.raises(DataError, match="add_texts: expected a list of texts, got one string"):
        r.add_texts("one text")
    with pytest.raises(DataError, match=r"add_texts: metadatas must list one dict per text \(2\)"):
        r.add_texts(["a", "b"], [{}])
    with pytest.raises(DataError, match=r"add_texts: metadatas must list one dict per text \(1\)"):
        r.add_texts(["a"], {"year": 2000})
    with pytest.raises(DataError, match="add_texts: document 'x': metadata 'year'"):
        r.add_texts(["a"], [{"year": "2000"}], ids=["x"])
    with pytest.raises(DataError, match="get_by_ids: expected a list of document ids"):
        r.get_by_ids("d1")
