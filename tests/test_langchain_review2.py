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

from ragkit.errors import ParamError
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
