"""RagkitGenerator: ragkit's local generator as a LangChain Runnable (invoke, batch, stream, async, chains,
errors, Cache-Craft chunk reuse across calls).

The tiny 4-layer test model (``tiny``, byte-level tokenizer) keeps this offline and cheap: no SmolLM2 load.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.runnables import RunnablePassthrough
from test_cachecraft import TINY_Q, tiny  # noqa: F401

from ragkit.errors import ParamError
from ragkit.integrations.langchain import RagkitGenerator, RagkitRetriever

TEXTS = ["Scurvy is caused by a lack of vitamin C.", "Paris is the capital of France.",
         "Plants turn light into sugar.", "Sailors ate citrus fruit against scurvy."]
DOCS = [Document(page_content=t) for t in TEXTS[:3]]


class Runs(BaseCallbackHandler):
    """Counts chain runs started, ended and failed (thread-safe: runs may end on worker threads)."""

    def __init__(self) -> None:
        self.started = self.ended = self.failed = 0
        self.lock = threading.Lock()

    def on_chain_start(self, *args: Any, **kw: Any) -> None:
        with self.lock:
            self.started += 1

    def on_chain_end(self, *args: Any, **kw: Any) -> None:
        with self.lock:
            self.ended += 1

    def on_chain_error(self, *args: Any, **kw: Any) -> None:
        with self.lock:
            self.failed += 1


@pytest.fixture(scope="module")
def gen(tiny):  # noqa: F811
    return RagkitGenerator(model=tiny[0], max_new_tokens=12, storage_dtype="float32")


def test_invoke_batch_and_stream_agree(gen):
    x = {"question": TINY_Q, "documents": DOCS}
    runs = Runs()
    answer = gen.invoke(x, {"callbacks": [runs]})
    assert isinstance(answer, str) and answer and (runs.started, runs.ended) == (1, 1)
    pieces = list(gen.stream(x, {"callbacks": [runs]}))
    assert len(pieces) > 1 and "".join(pieces) == answer  # real pieces, greedy: the same answer
    assert (runs.started, runs.ended) == (2, 2)
    # strings are chunks too; "context" is read as "documents"; batch answers each, one run each
    other = {"question": "Where is Paris?", "context": TEXTS[1:3]}
    assert gen.batch([x, other], {"callbacks": [runs]}) == [answer, gen.invoke(other)]
    assert (runs.started, runs.ended, runs.failed) == (4, 4, 0)


def test_async_calls(gen):
    x = {"question": TINY_Q, "documents": DOCS}
    answer = gen.invoke(x)

    async def main() -> tuple[str, list[str], list[str]]:
        pieces = [p async for p in gen.astream(x)]
        return await gen.ainvoke(x), pieces, await gen.abatch([x, x])

    got, pieces, both = asyncio.run(main())
    assert got == answer and both == [answer, answer]
    assert len(pieces) > 1 and "".join(pieces) == answer


def test_each_document_is_a_chunk_reused_by_the_next_call(tiny):  # noqa: F811
    gen = RagkitGenerator(model=tiny[0], max_new_tokens=4)
    assert gen.last_prefill is None
    gen.invoke({"question": TINY_Q, "documents": DOCS})
    first = gen.last_prefill
    assert first is not None and (first.chunks, first.chunks_reused) == (3, 0)
    gen.invoke({"question": "Is Paris in France?", "documents": DOCS})  # another question, the same documents
    again = gen.last_prefill
    assert again is not None and (again.chunks, again.chunks_reused) == (3, 3) and again.n_computed < first.n_computed
    list(gen.stream({"question": TINY_Q, "documents": DOCS[::-1]}))  # streamed, another order: reused too
    assert gen.last_prefill is not None and gen.last_prefill.chunks_reused == 3


def test_in_a_chain_after_a_retriever(gen):
    from ragkit.retrievers import BM25

    retriever = RagkitRetriever(pipeline=BM25(), corpus=TEXTS, k=2)
    chain = {"documents": retriever, "question": RunnablePassthrough()} | gen
    answer = chain.invoke(TINY_Q)
    docs = retriever.invoke(TINY_Q)
    assert answer == gen.invoke({"question": TINY_Q, "documents": docs})
    pieces = list(chain.stream(TINY_Q))  # the parallel step streams its keys apart: merged before answering
    assert len(pieces) > 1 and "".join(pieces) == answer
    assert chain.batch([TINY_Q, TINY_Q]) == [answer, answer]

    async def main() -> tuple[str, list[str]]:
        return await chain.ainvoke(TINY_Q), [p async for p in chain.astream(TINY_Q)]

    got, apieces = asyncio.run(main())
    assert got == answer and len(apieces) > 1 and "".join(apieces) == answer


def test_an_astream_closed_early_leaves_the_generator_working(gen):
    x = {"question": TINY_Q, "documents": DOCS}

    async def main() -> tuple[str, str]:
        stream = gen.astream(x)
        first = await stream.__anext__()
        await stream.aclose()  # decoding stops before its next token
        return first, await gen.ainvoke(x)

    first, answer = asyncio.run(main())
    assert answer.startswith(first) and len(answer) > len(first)


def test_a_generator_given_is_used_and_loaded_once(tiny):  # noqa: F811
    from ragkit.generators.local import LocalGenerator

    local = LocalGenerator(tiny[0])
    gen = RagkitGenerator(generator=local, max_new_tokens=3)
    assert gen.local_generator is local and local.model_ is None  # loaded at the first call, not before
    loads = []
    original = local._load

    def counted() -> LocalGenerator:  # (load's work, under its lock: concurrent first calls wait for the one)
        loads.append(1)
        return original()

    local._load = counted  # type: ignore[method-assign]
    x = {"question": TINY_Q, "documents": TEXTS[:2]}
    threads = [threading.Thread(target=gen.invoke, args=(x,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and local.model_ is not None


def test_no_document_answers_empty_without_the_model(gen):
    assert gen.invoke({"question": TINY_Q, "documents": []}) == ""
    assert list(gen.stream({"question": TINY_Q, "documents": []})) == []


@pytest.mark.parametrize("bad, words", [
    ("What causes scurvy?", ["got str", "expected a dict", "put a retriever before"]),
    ({"question": TINY_Q, "docs": DOCS}, ["no 'documents'", "['docs', 'question']", "'context' is read"]),
    ({"documents": DOCS}, ["no 'question'", "['documents']"]),
    ({"question": TINY_Q, "documents": DOCS, "context": DOCS}, ["both 'documents' and 'context'"]),
    ({"question": TINY_Q, "documents": "Scurvy is caused by a lack of vitamin C."},
     ["'documents' is one str", "one per chunk", "Cache-Craft"]),
    ({"question": TINY_Q, "context": "\n\n".join(TEXTS)}, ["'context' is one str"]),
    ({"question": TINY_Q, "documents": DOCS[0]}, ["one Document", "wrap it in a list"]),
    ({"question": TINY_Q, "documents": [DOCS[0], 3]}, ["documents[1] is int 3", "a LangChain Document or a str"]),
    ({"question": 3, "documents": DOCS}, ["'question' is int 3", "expected a str"]),
])
def test_bad_inputs_say_what_was_given_and_expected(gen, bad, words):
    runs = Runs()
    with pytest.raises(ParamError) as e:
        gen.invoke(bad, {"callbacks": [runs]})
    assert all(w in str(e.value) for w in words), str(e.value)
    assert (runs.started, runs.failed) == (1, 1)  # the run ends with the error
    with pytest.raises(ParamError):
        list(gen.stream(bad))


def test_a_batch_checks_every_input_before_the_first_answer(gen):
    runs = Runs()
    good = {"question": TINY_Q, "documents": DOCS}
    with pytest.raises(ParamError, match=r"RagkitGenerator.batch: input 1: .*'documents' is one str"):
        gen.batch([good, {"question": TINY_Q, "documents": "one text"}], {"callbacks": [runs]})
    assert runs.started == 0  # nothing answered
    out = gen.batch([good, {"question": TINY_Q}], return_exceptions=True)
    assert isinstance(out[0], str) and isinstance(out[1], ParamError)


def test_bad_settings_are_refused_when_built(tiny, tmp_path):  # noqa: F811
    """Refused as the generate step refuses them (ParamErrors, as RagkitRetriever's are)."""
    from ragkit.generators.local import LocalGenerator

    with pytest.raises(ParamError, match="RagkitGenerator.mode: expected one of 'full', 'prefix', 'naive' or"):
        RagkitGenerator(model=tiny[0], mode="bogus")
    with pytest.raises(ValueError, match="RagkitGenerator.max_new_tokens: expected a positive integer, got 0"):
        RagkitGenerator(model=tiny[0], max_new_tokens=0)
    with pytest.raises(ValueError, match="fraction=0.5 has no effect without mode: cachecraft"):
        RagkitGenerator(model=tiny[0], mode="full", fraction=0.5)
    with pytest.raises(ValueError, match="RagkitGenerator.model: .*missing"):
        RagkitGenerator(model=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="generator given with model, max_chunk_tokens"):
        RagkitGenerator(generator=LocalGenerator(tiny[0]), model=tiny[0], max_chunk_tokens=50)
    with pytest.raises(ValueError, match="expected a ragkit LocalGenerator"):
        RagkitGenerator(generator="smollm2")
    with pytest.raises(ValueError, match="unknown argument 'top_k' .every document given is a chunk: set the "
                                         "retriever's k"):
        RagkitGenerator(model=tiny[0], top_k=3)
    with pytest.raises(ValueError, match="'max_tokens' .did you mean max_new_tokens"):
        RagkitGenerator(model=tiny[0], max_tokens=3)
    gen = RagkitGenerator(model=tiny[0])
    with pytest.raises(ParamError, match="unexpected keyword argument 'mode'"):
        gen.invoke({"question": TINY_Q, "documents": DOCS}, mode="full")
    with pytest.raises(ParamError, match="'stop'.*stop sequences are not supported: the answer ends at the model's "
                                         "end-of-turn token or after max_new_tokens"):
        gen.bind(stop=["\n"]).invoke({"question": TINY_Q, "documents": DOCS})
    with pytest.raises(ValueError, match="frozen"):
        gen.mode = "full"  # type: ignore[misc]


def test_pickles_and_deep_copies(tiny):  # noqa: F811
    """Its own load lock made RagkitGenerator unpicklable ('cannot pickle _thread.lock'); the LocalGenerator's
    load lock serves."""
    import copy
    import pickle

    g = RagkitGenerator(model=tiny[0], max_new_tokens=4, storage_dtype="float32")
    x = {"question": TINY_Q, "documents": DOCS}
    answer = g.invoke(x)
    for other in (pickle.loads(pickle.dumps(g)), copy.deepcopy(g)):
        assert other.invoke(x) == answer


def test_the_input_schema_names_question_and_documents(gen):
    """The input schema was an empty object: a playground or LangServe showed nothing to fill in."""
    schema = gen.get_input_schema().model_json_schema()
    props = (schema["$defs"][schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema)["properties"]
    assert {"question", "documents", "context"} <= set(props) and props["question"]["type"] == "string"
    assert gen.get_output_schema().model_json_schema()["type"] == "string"
