"""Review of the LangChain integration (session 52), one section per finding."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_core.runnables import ConfigurableField

from ragkit.errors import DataError, ParamError
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


# ---------------------------------------------------------------------- 2. one input given to batch
# one string, mapping or Document given to batch was split into pieces (its characters, keys or fields) where a
# batch was expected: the configured retriever's batch / abatch and RagkitGenerator's listed it before any check
_ONE = [("cats", r"got str 'cats' \(its characters"), ({"a": "cats"}, r"got dict \{'a': 'cats'\} \(its keys"),
        (Document("cats"), r"got Document .*\(its fields")]


@pytest.mark.parametrize("given, said", _ONE)
async def test_one_query_given_to_a_retrievers_batch_is_refused(given, said):
    r = RagkitRetriever(pipeline=BM25(), corpus=_tenant_docs(), k=2)
    configured = r.configurable_fields(k=ConfigurableField(id="k"))
    for target in (r, configured, configured.with_config(configurable={"k": 1})):
        with pytest.raises(DataError, match=rf"^batch: expected a list of query strings, {said}"):
            target.batch(given)
        with pytest.raises(DataError, match=rf"^abatch: expected a list of query strings, {said}"):
            await target.abatch(given)
    with pytest.raises(DataError, match=r"got int 5 \(it is no collection\)"):
        configured.batch(5)
    assert [len(x) for x in configured.batch(["cats", "cats"], [{"configurable": {"k": 1}}, {}])] == [1, 2]


@pytest.mark.parametrize("given, said", [({"question": "what?", "documents": ["x"]}, r"got dict .*\(its keys"),
                                         ("what?", r"got str 'what\?' \(its characters"),
                                         (Document("x"), r"got Document .*\(its fields")])
async def test_one_input_given_to_the_generators_batch_is_refused(given, said):
    from ragkit.integrations.langchain import RagkitGenerator

    g = RagkitGenerator(max_new_tokens=2)  # (its model is loaded at the first answer: none here)
    for method in ("batch", "abatch"):
        with pytest.raises(ParamError, match=rf"^RagkitGenerator.{method}: expected a list of inputs, each a dict "
                                             rf"\{{'question'.*, {said}") as e:
            out = getattr(g, method)(given)
            if method == "abatch":
                await out
        assert e.value.path == "input"


def test_documents_given_as_a_mapping_are_refused():
    from ragkit.integrations.langchain import RagkitGenerator

    g = RagkitGenerator(max_new_tokens=2)
    with pytest.raises(ParamError, match=r"'documents' is dict \{'a': 'b'\}; expected a list of Documents or "
                                         r"strings.*list\(mapping.values\(\)\)") as e:
        g.invoke({"question": "what?", "documents": {"a": "b"}})
    assert e.value.path == "documents"
    with pytest.raises(ParamError, match=r"input 0: 'context' is dict"):
        g.batch([{"question": "what?", "context": {"a": "b"}}])


# ---------------------------------------------------------------------- 3. generate={"answer": True}
# it ran the pipeline's generate step (a language-model call per query) and the retriever threw the answers away
def test_asking_a_retriever_for_answers_is_refused_and_runs_no_model(monkeypatch):
    from ragkit.generators import Generate
    from ragkit.generators.local import LocalGenerator

    calls = []
    monkeypatch.setattr(LocalGenerator, "generate", lambda self, *a, **kw: calls.append(a) or "an answer")
    docs = _tenant_docs()
    r = RagkitRetriever(pipeline=BM25() | Generate(max_new_tokens=2), corpus=docs, k=2)
    said = r"generate.answer: got True; a retriever returns documents.*pipeline.search.*RagkitGenerator"
    with pytest.raises(ParamError, match=rf"^search option {said}") as e:
        r.invoke("cats", generate={"answer": True})
    assert e.value.path == "options.generate.answer"
    with pytest.raises(ParamError, match=rf"^search option {said}"):
        r.batch(["cats"], generate={"answer": True})
    with pytest.raises(ParamError, match=rf"^search_kwargs: search option {said}"):
        RagkitRetriever(pipeline=BM25() | Generate(max_new_tokens=2), corpus=docs,
                        search_kwargs={"generate": {"answer": True}})
    with pytest.raises(ParamError, match=rf"^search_kwargs: search option {said}"):
        r.search_kwargs = {"generate": {"answer": True}}
    r.search_kwargs["generate"] = {"answer": True}  # (edited in place: refused at the next call)
    with pytest.raises(ParamError, match=rf"^search_kwargs: search option {said}"):
        r.invoke("cats")
    r.search_kwargs.pop("generate")
    assert len(r.invoke("cats", generate={"answer": False})) == 2 and len(r.invoke("cats")) == 2
    assert calls == []


# ---------------------------------------------------------------------- 4. search_type's hint by its value
# every search_type was called "LangChain's MMR vocabulary" with MMR advice, even "similarity" (what ragkit does)
# and "similarity_score_threshold" (ragkit's ScoreThreshold step)
_HINTS = {"similarity": r"no search_type: the pipeline is how it searches; ranking the documents by their similarity "
                        r"to the query is what the pipeline does: leave search_type out$",
          "similarity_score_threshold": r"no search_type: the pipeline is how it searches; ragkit's score threshold "
                                        r"is a pipeline step: .*ScoreThreshold\(threshold=\.\.\.\)\), and per call "
                                        r"score_threshold=\{'threshold': \.\.\.\}$",
          "mmr": r"no search_type: the pipeline is how it searches; ragkit's MMR is a pipeline step: .*MMR\(k=",
          "nearest": r"no search_type: the pipeline is how it searches; LangChain's 'similarity' is what the pipeline "
                     r"does; its 'mmr' and 'similarity_score_threshold' are pipeline steps of ragkit's: MMR, "
                     r"ScoreThreshold$"}


@pytest.mark.parametrize("value", list(_HINTS))
def test_search_type_gets_the_hint_of_its_value(value):
    docs = _tenant_docs()
    hint = _HINTS[value]
    with pytest.raises(ParamError, match=rf"unknown argument 'search_type'; expected corpus, .*; {hint}") as e:
        RagkitRetriever(pipeline=BM25(), corpus=docs, search_type=value)
    assert "MMR" not in str(e.value) or value in ("mmr", "nearest")
    with pytest.raises(ParamError, match=rf"^search_kwargs: search option 'search_type': not an option; .*; {hint}"):
        RagkitRetriever(pipeline=BM25(), corpus=docs, search_kwargs={"search_type": value})
    r = RagkitRetriever(pipeline=BM25(), corpus=docs)
    with pytest.raises(ParamError, match=rf"^search option 'search_type' \(search_type='{value}'\): not an option of "
                                         rf"ragkit's search \(LangChain's VectorStoreRetriever vocabulary\); {hint}"):
        r.invoke("cats", search_type=value)
    with pytest.raises(ParamError, match=rf"VectorStoreRetriever vocabulary\); {hint}"):
        r.batch(["cats"], search_type=value)


def test_lambda_mult_and_fetch_k_keep_the_mmr_hint():
    r = RagkitRetriever(pipeline=BM25(), corpus=_tenant_docs())
    for key in ("lambda_mult", "fetch_k"):
        with pytest.raises(ParamError, match=rf"^search option '{key}' \({key}=3\): not an option of ragkit's search "
                                             r"\(LangChain's VectorStoreRetriever vocabulary\); ragkit's MMR is a "
                                             r"pipeline step: .*mmr=\{'lambda_mult'"):
            r.invoke("cats", **{key: 3})


# ---------------------------------------------------------------------- 5. no filter mask to check search_kwargs
# _check_search_kwargs built a full-corpus mask of every filter of search_kwargs, at each build and each r.k = ...,
# though check_options had refused every filter the mask would refuse
def test_checking_search_kwargs_makes_no_filter_mask(monkeypatch):
    from ragkit.types import Corpus

    corpus = Corpus.from_records([{"_id": str(i), "text": f"doc {i} cats", "metadata": {"g": i % 5, "s": f"s{i % 3}"}}
                                  for i in range(50)])
    masks = []
    real = Corpus.mask
    monkeypatch.setattr(Corpus, "mask", lambda self, where: masks.append(where) or real(self, where))
    given = {"filter": {"g": 1, "s": ["s1", "s2"]}, "bm25": {"filter": {"s": "s1"}}}
    r = RagkitRetriever(pipeline=BM25(), corpus=corpus, k=5, search_kwargs=given)
    r.k = 3
    r.search_kwargs = {"filter": {"g": [1, 2]}}
    assert masks == []
    assert {d.metadata["g"] for d in r.invoke("cats")} <= {1, 2} and masks  # (a search does filter)
    masks.clear()
    for bad, at in (({"filter": {"g": "1"}}, "filter"), ({"bm25": {"filter": {"g": "1"}}}, "bm25.filter"),
                    ({"filter": {"g": 1}, "bm25": {"filter": {"s": 2}}}, "bm25.filter"),
                    ({"bm25": {"filter": {"s": 2}}, "filter": {"g": "1"}}, "bm25.filter")):
        with pytest.raises(ParamError, match=rf"^search_kwargs: {at}\.[gs]: the field holds") as e:
            RagkitRetriever(pipeline=BM25(), corpus=corpus, search_kwargs=bad)
        assert e.value.path == f"options.{at}"
    # valid filters the kind check lets through stay accepted: a list of two kinds, None, ids given as numbers
    for ok in ({"g": [1, "2"]}, {"g": None}, {"_id": 5}, {"id": 5}):
        assert RagkitRetriever(pipeline=BM25(), corpus=corpus, search_kwargs={"filter": ok}).k == 4
    assert masks == []


def test_check_options_filter_kind_refusal_carries_its_path():
    """``check_options`` refuses a filter value of another kind than its field's with a DataError whose ``path`` is
    the filter's place in the options (RagkitRetriever's error reads it, where it walked the options again)."""
    from ragkit.errors import DataError
    from ragkit.options import check_options
    from ragkit.types import Corpus

    corpus = Corpus.from_records([{"_id": str(i), "text": f"doc {i}", "metadata": {"g": i}} for i in range(5)])
    bm25 = BM25().fit(corpus)
    for options, path in (({"bm25": {"filter": {"g": "1"}}}, "options.bm25.filter"),
                          ({"filter": {"g": "1"}}, "options.filter")):
        with pytest.raises(DataError, match="the field holds") as e:
            check_options(bm25, options, corpus)
        assert getattr(e.value, "path", None) == path
