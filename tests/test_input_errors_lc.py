"""Bad input to RagkitRetriever.from_texts / from_documents and to the sentence encoders, refused before any work.

Found by review (scripts in /tmp/rv_errors):

- ``from_texts(["alpha doc", "beta doc"], ids=["x"])`` indexed "alpha doc" alone (a zip with no length check);
  extra ids were dropped, ``ids="xy"`` split into 'x' and 'y'.
- ``from_texts(["a"], metadatas=["x"])`` was "dictionary update sequence element #0 ...", ``from_texts([1, 2])``
  a pydantic ValidationError, ``from_documents(None)`` "'NoneType' object is not iterable",
  ``from_documents("abc")`` "document 0 is a str ('a')" (the string split into characters first).
- ``get_encoder(None)`` was an AttributeError (``.lower``), ``get_encoder(m, batchsize=3)`` the constructor's
  bare TypeError, ``Encoder.encode(None)`` "'NoneType' object is not iterable".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document  # noqa: E402

import ragkit.encoders.sentence as sentence  # noqa: E402
from ragkit.encoders import get_encoder  # noqa: E402
from ragkit.encoders.sentence import Encoder  # noqa: E402
from ragkit.errors import DataError, InputTypeError, ParamError  # noqa: E402
from ragkit.integrations.langchain import RagkitRetriever  # noqa: E402
from ragkit.retrievers import BM25  # noqa: E402

#: a hub id that is no local folder: an Encoder of it fingerprints nothing (its key is the name) and loads nothing
#: until it encodes
_HUB_ID = "ragkit-test/no-such-model"


def _refused(exc: type[Exception], message: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    """``fn(*args, **kwargs)`` raises ``exc`` with exactly ``message``."""
    with pytest.raises(exc, match="^" + re.escape(message) + "$"):
        fn(*args, **kwargs)


# ------------------------------------------------------------------ from_texts
def test_from_texts_ids_one_per_text() -> None:
    """Too few ids, too many, or one string: refused as add_texts refuses them (nothing indexed short)."""
    _refused(DataError, "from_texts: ids must list one id per text (2), got ['x']",
             RagkitRetriever.from_texts, ["alpha doc", "beta doc"], ids=["x"], pipeline="bm25")
    _refused(DataError, "from_texts: ids must list one id per text (1), got ['x', 'y']",
             RagkitRetriever.from_texts, ["alpha doc"], ids=["x", "y"], pipeline="bm25")
    _refused(DataError, "from_texts: ids must list one id per text (2), got 'xy'",
             RagkitRetriever.from_texts, ["alpha doc", "beta doc"], ids="xy", pipeline="bm25")
    _refused(DataError, "from_texts: ids must list one id per text (1), got 7",
             RagkitRetriever.from_texts, ["alpha doc"], ids=7)


def test_from_texts_ids_and_metadatas_as_given() -> None:
    """ids of the right length (any iterable: a generator too) and metadatas index every text."""
    r = RagkitRetriever.from_texts(["alpha doc", "beta doc"], ids=(i for i in ["x", "y"]),
                                   metadatas=[{"n": 1}, None], k=2)
    got = r.get_by_ids(["x", "y"])
    assert [d.page_content for d in got] == ["alpha doc", "beta doc"]
    assert got[0].metadata["n"] == 1
    assert [d.id for d in r.invoke("beta")] == ["y"]


def test_from_texts_texts_and_metadatas_checked() -> None:
    """A text that is no string, a metadata that is no dict, metadatas of another length or one dict: add_texts'
    words, from_texts' name."""
    _refused(DataError, "from_texts: text 0 is int 1, expected a string",
             RagkitRetriever.from_texts, [1, 2], pipeline="bm25")
    _refused(DataError, "from_texts: text 1 is Document Document(metadata={}, page_content='b'), expected a string "
             "(from_documents takes Documents)", RagkitRetriever.from_texts, ["a", Document("b")])
    _refused(DataError, "from_texts: metadatas[0] is str 'x', expected a dict",
             RagkitRetriever.from_texts, ["a"], metadatas=["x"], pipeline="bm25")
    _refused(DataError, "from_texts: metadatas must list one dict per text (1), got {'x': 1}",
             RagkitRetriever.from_texts, ["a"], metadatas={"x": 1}, pipeline="bm25")
    _refused(DataError, "from_texts: metadatas must list one dict per text (2), got [{}]",
             RagkitRetriever.from_texts, ["a", "b"], metadatas=[{}])
    _refused(DataError, "from_texts: got one Document ('a'); expected a list of strings (from_documents takes "
             "Documents)", RagkitRetriever.from_texts, Document("a"))


def test_from_texts_checks_before_fitting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused before the pipeline is fitted (nor loaded)."""
    def no_fit(self: BM25, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("fitted")

    monkeypatch.setattr(BM25, "fit", no_fit)
    with pytest.raises(DataError, match="ids must list"):
        RagkitRetriever.from_texts(["a", "b"], ids=["x"], pipeline=BM25())
    with pytest.raises(InputTypeError, match="from_documents: got one string"):
        RagkitRetriever.from_documents("abc", pipeline=BM25())  # type: ignore[arg-type]


# ------------------------------------------------------------------ from_documents
def test_from_documents_refuses_what_is_no_list_of_documents() -> None:
    """None, one string (not split into characters), one Document, a mapping, an item that is no Document."""
    _refused(InputTypeError, "from_documents: got NoneType (None); expected a list of LangChain Documents",
             RagkitRetriever.from_documents, None, pipeline="bm25")
    _refused(InputTypeError, "from_documents: got one string ('abc'); expected a list of LangChain Documents "
             "(from_texts takes strings)", RagkitRetriever.from_documents, "abc", pipeline="bm25")
    _refused(InputTypeError, "from_documents: got one Document ('x'); expected a list of Documents: wrap it in a "
             "list", RagkitRetriever.from_documents, Document("x"))
    _refused(InputTypeError, "from_documents: item 1 is a str ('abc'), expected a LangChain Document (from_texts "
             "takes strings)", RagkitRetriever.from_documents, [Document("x"), "abc"])
    _refused(InputTypeError, "from_documents: got dict ({'a': Document(metadata={}, page_content='x')}); expected "
             "a list of LangChain Documents", RagkitRetriever.from_documents, {"a": Document("x")})


def test_add_documents_and_add_texts_ids() -> None:
    """add_documents' ids that are no collection are its DataError (was len()'s TypeError); add_texts takes ids
    and metadatas as any iterable (a generator's len() was a TypeError)."""
    r = RagkitRetriever.from_texts(["alpha doc", "beta doc"], k=1)
    _refused(DataError, "add_documents: ids must list one id per document (1), got 5",
             r.add_documents, [Document("gamma doc")], ids=5)
    _refused(DataError, "add_documents: item 0 is a str ('gamma'), expected a LangChain Document (add_texts takes "
             "strings)", r.add_documents, ["gamma"])
    assert r.add_texts(["gamma doc"], metadatas=(m for m in [{"n": 3}]), ids=(i for i in ["g"])) == ["g"]
    assert r.get_by_ids(["g"])[0].metadata["n"] == 3


# ------------------------------------------------------------------ encoders
def _refuse(*args: Any, **kwargs: Any) -> None:
    raise AssertionError(f"model work started: {args!r:.80}")


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any model load fails the test: the checks come first."""
    monkeypatch.setattr(sentence, "load_model", _refuse)


@pytest.fixture
def no_encoder_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any model load, or an encoder made (its model's files hashed), fails the test."""
    monkeypatch.setattr(sentence, "load_model", _refuse)
    monkeypatch.setattr(sentence, "cached_fingerprint", _refuse)


@pytest.mark.usefixtures("no_encoder_made")
def test_get_encoder_model_checked() -> None:
    """None or a number for model: an InputTypeError naming the argument; an empty name a ParamError."""
    with pytest.raises(InputTypeError, match=r"^get_encoder: model is NoneType None; expected a model name or "
                                             r"folder \(a str, e\.g\. 'all-MiniLM-L6-v2'\)"):
        get_encoder(None)  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match=r"^get_encoder: model is int 5; expected a model name"):
        get_encoder(5)  # type: ignore[arg-type]
    _refused(ParamError, "get_encoder: model is an empty string (''); expected a model name or folder (e.g. "
             "'all-MiniLM-L6-v2')", get_encoder, "")
    with pytest.raises(InputTypeError, match=r"^Encoder: model is NoneType None"):
        Encoder(None)  # type: ignore[arg-type]


@pytest.mark.usefixtures("no_encoder_made")
def test_get_encoder_unknown_keyword() -> None:
    """A keyword Encoder does not take: the ones it takes, and the closest."""
    _refused(ParamError, "get_encoder: unknown keyword 'batchsize' (did you mean 'batch_size'?); an Encoder takes "
             "batch_size, max_seq_length, cache, device, normalize, query_prompt, document_prompt", get_encoder,
             _HUB_ID, batchsize=3)
    _refused(ParamError, "get_encoder: unknown keywords 'batchsize' (did you mean 'batch_size'?), 'colour'; an "
             "Encoder takes batch_size, max_seq_length, cache, device, normalize, query_prompt, document_prompt",
             get_encoder, _HUB_ID, batchsize=3,
             colour="red")


@pytest.mark.usefixtures("no_model_loads")
def test_get_encoder_path_like(monkeypatch: pytest.MonkeyPatch) -> None:
    """An os.PathLike model is read as its path (was an AttributeError in resolve_model)."""
    monkeypatch.setattr(sentence, "_ENCODERS", {})
    enc = get_encoder(Path(_HUB_ID))  # type: ignore[arg-type]
    assert enc.model_name == _HUB_ID and enc is get_encoder(_HUB_ID)


@pytest.mark.usefixtures("no_model_loads")
def test_encode_refuses_none_before_model_work() -> None:
    """encode / encode_queries of None or a number: an InputTypeError before the model loads; one string stays the
    DataError it was (its characters would be the texts)."""
    enc = Encoder(_HUB_ID, cache=False)
    _refused(InputTypeError, "encode: texts is NoneType None; expected a list of texts (strings)", enc.encode, None)
    _refused(InputTypeError, "encode_queries: texts is NoneType None; expected a list of texts (strings)",
             enc.encode_queries, None)
    _refused(InputTypeError, "encode: texts is int 3; expected a list of texts (strings)", enc.encode, 3)
    _refused(InputTypeError, "encode: texts is dict {'a': 'x'}; expected a list of texts (strings): the values, "
             "list(texts.values())?", enc.encode, {"a": "x"})
    with pytest.raises(DataError, match=r"^encode: expected a list of texts, got one str \('abc'\); wrap it"):
        enc.encode("abc")
