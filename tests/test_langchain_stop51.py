"""LangChain integration, review of stop 51.

- ``RagkitGenerator`` streamed kept the last piece of a streamed input value (``{**acc, **chunk}``):
  ``rewriter | {"documents": retriever, "question": RunnablePassthrough()} | generator`` answered the last
  character of the question under ``stream`` / ``astream`` / ``astream_events``, the whole one under ``invoke``.
- ``add_documents(Document(...))`` (one Document) was "item 0 is a tuple"; ``add_texts(Document(...))`` too.
- An unknown filter field listed ``'_id'`` but not ``'id'``, which works as well.
- ``RagkitRetriever(pipeline="bm26")`` was "expected a mapping with a 'pipeline' key": a misspelled operator name.
- ``model_copy(update={"k": 3})`` shares the index (documented; ``deep=True`` does not).

The generator tests use the tiny 4-layer test model (``tiny``): no SmolLM2 load.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.language_models.fake import FakeStreamingListLLM
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnablePassthrough
from langchain_core.runnables.utils import AddableDict
from test_cachecraft import tiny  # noqa: F401

from ragkit.errors import ConfigError, DataError, ParamError, RagkitError
from ragkit.integrations.langchain import RagkitGenerator, RagkitRetriever
from ragkit.pipelines import Pipeline
from ragkit.types import Corpus

TEXTS = ["Scurvy is caused by a lack of vitamin C.", "Paris is the capital of France.",
         "Plants turn light into sugar.", "Sailors ate citrus fruit against scurvy."]
REWRITTEN = "What causes scurvy in sailors?"


@pytest.fixture(scope="module")
def gen(tiny):  # noqa: F811
    return RagkitGenerator(model=tiny[0], max_new_tokens=6, storage_dtype="float32")


@pytest.fixture
def seen(monkeypatch) -> list[tuple[str, int]]:
    """``(question, number of chunks)`` of every input the generator answers (its ``_prompt``), the model run."""
    out: list[tuple[str, int]] = []
    real = RagkitGenerator._prompt

    def spy(self: RagkitGenerator, x: Any, where: str = "RagkitGenerator") -> tuple[str, list[str]]:
        question, chunks = real(self, x, where)
        out.append((question, len(chunks)))
        return question, chunks

    monkeypatch.setattr(RagkitGenerator, "_prompt", spy)
    return out


# ---------------------------------------------------------------------------------- 1. streamed input
def test_a_streamed_question_reaches_the_generator_whole(gen, seen):
    r = RagkitRetriever.from_texts(TEXTS, k=2)
    rewriter = FakeStreamingListLLM(responses=[REWRITTEN]) | StrOutputParser()  # streams a character at a time
    chain = rewriter | {"documents": r, "question": RunnablePassthrough()} | gen
    answer = chain.invoke("scurvy?")
    pieces = list(chain.stream("scurvy?"))

    async def run() -> tuple[list[str], list[Any]]:
        streamed = [p async for p in chain.astream("scurvy?")]
        events = [e async for e in chain.astream_events("scurvy?", version="v2")]
        return streamed, events

    apieces, events = asyncio.run(run())
    assert seen == [(REWRITTEN, 2)] * 4  # invoke, stream, astream, astream_events: the whole question, 2 chunks
    assert "".join(pieces) == "".join(apieces) == answer
    ends = [e for e in events if e["event"] == "on_chain_end" and e["name"] == "RagkitGenerator"]
    assert len(ends) == 1 and ends[0]["data"]["output"] == answer
    assert ends[0]["data"]["input"]["question"] == REWRITTEN


def test_an_input_not_streamed_is_unchanged(gen, seen):
    r = RagkitRetriever.from_texts(TEXTS, k=2)
    chain = {"documents": r, "question": RunnablePassthrough()} | gen
    q = "What causes scurvy?"
    answer = chain.invoke(q)
    assert "".join(chain.stream(q)) == answer
    x = {"question": q, "documents": TEXTS[:3]}
    assert "".join(gen.stream(x)) == gen.invoke(x)
    assert seen == [(q, 2), (q, 2), (q, 3), (q, 3)]


def test_merge_adds_up_parts_as_langchain_does():
    merge = RagkitGenerator._merge
    parts: list[Any] = [AddableDict(question="What "), AddableDict(documents=["a"]), AddableDict(question="is it?"),
                        {"documents": ["b"], "extra": None}, {"extra": 1}, {"extra": None}]
    x: Any = None
    for part in parts:
        x = merge(x, part)
    # LangChain's own sum of the AddableDict parts agrees where they add
    assert x == {"question": "What is it?", "documents": ["a", "b"], "extra": 1}
    doc = Document(page_content="d")
    assert merge({"documents": [doc], "k": 1}, {"documents": None, "k": object}) == {"documents": [doc], "k": object}
    assert merge("What ", "now?") == "What now?" and merge(None, {"q": 1}) == {"q": 1}


# ---------------------------------------------------------------------------------- 2. one Document
def test_one_document_or_string_is_refused_saying_wrap_it_in_a_list():
    r = RagkitRetriever.from_texts(TEXTS, k=2)
    with pytest.raises(DataError, match=r"^add_documents: got one Document \('x'\); expected a list of Documents: "
                                        r"wrap it in a list$"):
        r.add_documents(Document(page_content="x"))  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"^add_documents: got one string \('x y'\); expected a list of LangChain "
                                        r"Documents \(add_texts takes strings\)$"):
        r.add_documents("x y")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"^add_documents: got int \(3\); expected a list of LangChain Documents$"):
        r.add_documents(3)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"^add_texts: got one Document \('x'\); expected a list of strings"):
        r.add_texts(Document(page_content="x"))  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"^add_texts: expected a list of texts, got one string 'x y'; wrap it"):
        r.add_texts("x y")
    assert len(r.pipeline.corpus_) == len(TEXTS)  # nothing added
    assert r.add_documents([Document(page_content="x", id="new")]) == ["new"]


# ---------------------------------------------------------------------------------- 3. 'id' in the filter fields
def test_an_unknown_filter_field_names_id_too():
    r = RagkitRetriever.from_texts(TEXTS, k=2, metadatas=[{"year": 2000 + i} for i in range(4)],
                                   ids=["d0", "d1", "d2", "d3"])
    with pytest.raises(ParamError, match=r"field 'yeer' is not a metadata field of the corpus; available: "
                                         r"\['year', '_id', 'title'\]; 'id' filters on the document ids too"):
        r.invoke("scurvy", filter={"yeer": 2001})
    assert [d.id for d in r.invoke("scurvy", filter={"id": "d3"})] == ["d3"]  # it does
    # a metadata field named id is listed with the others, and no note (it filters on its own values)
    pipe = Pipeline.from_yaml("pipeline: [{bm25: {}}]").fit(Corpus.from_texts(TEXTS, id=["a", "b", "c", "d"]))
    with pytest.raises(ParamError) as err:
        pipe.search(["scurvy"], filter={"yeer": 1})
    assert str(err.value).endswith("available: ['id', '_id', 'title']")


# ---------------------------------------------------------------------------------- 4. a misspelled name
def test_a_misspelled_operator_name_suggests_the_close_ones():
    with pytest.raises(RagkitError, match=r"pipeline: no file or folder is named 'bm26', and unknown operator "
                                           r"'bm26'; did you mean 'bm25'\?.* Registered operators: .*bm25"):
        RagkitRetriever(pipeline="bm26", corpus=TEXTS)
    with pytest.raises(RagkitError, match=r"pipeline: 'Parallel' is a structural key of pipeline YAML, not an "
                                           r"operator"):
        RagkitRetriever.from_texts(TEXTS, pipeline="Parallel")
    assert len(RagkitRetriever(pipeline="BM25", corpus=TEXTS, k=1).invoke("Paris")) == 1  # a name still loads
    with pytest.raises(RagkitError, match="expected a mapping with a 'pipeline' key"):  # YAML stays YAML
        RagkitRetriever(pipeline="bm25 with spaces", corpus=TEXTS)


# ---------------------------------------------------------------------------------- 5. model_copy shares the index
def test_a_shallow_copy_shares_the_documents_a_deep_one_does_not():
    r = RagkitRetriever.from_texts(TEXTS, k=10)
    shallow, deep = r.model_copy(update={"k": 3}), r.model_copy(deep=True)
    shallow.add_texts(["Penguins live in Antarctica."], ids=["p"])
    assert r.get_by_ids(["p"]) and shallow.get_by_ids(["p"]) and not deep.get_by_ids(["p"])
    deep.add_texts(["Owls hunt at night."], ids=["o"])
    assert not r.get_by_ids(["o"]) and (r.k, shallow.k) == (10, 3)
    assert "model_copy(deep=True)" in (RagkitRetriever.__doc__ or "")


def test_corpus_mask_names_id_too():
    corpus = Corpus.from_texts(TEXTS, year=[2000 + i for i in range(4)])
    with pytest.raises(DataError, match=r"available: \['year', '_id', 'title'\]; 'id' filters on the document ids"):
        corpus.mask({"yeer": 1})


# ------------------------------------------------------------------ construction errors are RagkitErrors
@pytest.mark.parametrize("kwargs, error, said", [
    ({"pipeline": "pipeline:\n  - bm25: {kk: 3}\n", "corpus": TEXTS}, ConfigError, r"bm25\.kk: unknown parameter"),
    ({"pipeline": "bm26", "corpus": TEXTS}, ParamError, "did you mean 'bm25'"),
    ({"pipeline": "bm25", "corpus": TEXTS, "k": 0}, ParamError, "RagkitRetriever.k: expected a positive integer"),
    ({"pipeline": "bm25", "corpus": TEXTS, "k": "3"}, ParamError, "RagkitRetriever.k: expected an integer"),
    ({"pipeline": "bm25", "corpus": TEXTS, "search_kwargs": {"score_threshold": 0.5}}, ParamError,
     "no 'score_threshold' operator in this pipeline;.*add it to the pipeline as a step"),
])
def test_construction_errors_are_ragkit_errors(kwargs, error, said):
    """pydantic wrapped the checks' errors in its ValidationError, which is no RagkitError: an app's one
    ``except RagkitError`` missed a misspelled parameter in the retriever's YAML."""
    with pytest.raises(error, match=said):
        RagkitRetriever(**kwargs)
    r = RagkitRetriever(pipeline="bm25", corpus=TEXTS, k=2)
    field = next((key for key in ("k", "search_kwargs") if key in kwargs), None)
    if field is not None:  # an assignment is refused the same way, leaving the retriever as it was
        with pytest.raises(error, match=said):
            setattr(r, field, kwargs[field])
        assert r.k == 2 and r.search_kwargs == {}


def test_generator_settings_errors_are_ragkit_errors():
    from ragkit.integrations.langchain import RagkitGenerator

    with pytest.raises(ParamError, match="RagkitGenerator.max_new_tokens: expected a positive integer, got 0"):
        RagkitGenerator(max_new_tokens=0)
    with pytest.raises(ParamError, match="RagkitGenerator.mode: expected one of"):
        RagkitGenerator(mode="bogus")
