"""RagkitRetriever, second LangChain-app review: ``search_kwargs["k"]``, ``abatch``'s callbacks on the event
loop, validated assignment, keyword-only ``from_texts`` / ``from_documents``, queries named as the caller gave
them, and ``operators`` of a routed pipeline.  A 200-document SciFact slice with BM25 (and a fake dense)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document

from ragkit.errors import DataError, ParamError
from ragkit.integrations.langchain import RagkitRetriever

SCIFACT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "beir" / "scifact"


@lru_cache(maxsize=1)
def _slice() -> Any:
    """The first 200 SciFact documents (a Corpus) and 8 test queries."""
    import os

    from ragkit import load_beir

    ds = load_beir(os.environ.get("RAGKIT_SCIFACT", SCIFACT_DIR))
    return ds.corpus.subset(np.arange(200)), list(ds.queries("test")[:8].texts)


def _bm25(**kwargs: Any) -> RagkitRetriever:
    from ragkit.retrievers import BM25

    return RagkitRetriever(pipeline=BM25(k=50), corpus=_slice()[0], **kwargs)


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
