"""Review of the LangChain integration (session 54), one section per finding."""

from __future__ import annotations

import math

import numpy as np
import pytest
from langchain_core.documents import Document

from ragkit.errors import DataError
from ragkit.integrations.langchain import RagkitRetriever
from ragkit.retrievers import BM25


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
