"""Filters on fields only some documents hold, and filters combined (review of filters across shards, removals
and LangChain's defaults):

1. a sharded index refused a filter on a field only another shard's documents hold ("not a metadata field");
2. removing the last documents holding a field made every filter on it an error, for good;
3. a LangChain retriever's default filter and a call's filter on a list-valued field intersected their values
   (tags "x" then "y": nothing) instead of applying both (the documents tagged both);
4. ... and on a field of numbers, a value of the wrong kind then matched nothing silently instead of being refused;
5. a per-operator filter value of the wrong kind was refused only when its operator ran, after the steps before it.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import word_corpus

from ragkit.errors import DataError
from ragkit.metadata import AllOf, all_filters
from ragkit.pipelines import Parallel
from ragkit.retrievers import BM25
from ragkit.scale import Sharded
from ragkit.types import Corpus

QUERIES = ["w1 w2 w3", "w5 w7", "w11 w13 w17", "w0"]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    """120 documents; ``tenant`` on the first 30 only, ``num`` (numbers) on the last 60 only, ``tags`` lists."""
    n = 120
    tenant = ["t1" if i < 30 else None for i in range(n)]
    num = [i if i >= 60 else None for i in range(n)]
    tags = [["x", "y"] if i % 3 == 0 else ["x"] if i % 3 == 1 else ["y"] for i in range(n)]
    year = [2010 + i % 4 for i in range(n)]
    return word_corpus(n, tenant=tenant, num=num, tags=tags, year=year)


def _ids(run) -> list[list[str]]:
    return [list(d) for d in run.doc_ids]


# ---------------------------------------------------------------------- 1. sharded: a field of one shard only
@pytest.mark.parametrize("flt", [{"tenant": "t1"}, {"num": [70, 71, 72, 90]}, {"tenant": "t1", "year": 2011}])
def test_a_sharded_search_filters_on_a_field_only_some_shards_hold(corpus: Corpus, flt: dict) -> None:
    single = BM25(k=50).fit(corpus).search(QUERIES, k=10, filter=flt)
    sharded = Sharded(retriever={"bm25": {"k": 50}}, n_shards=2, k=50, backend="local").fit(corpus)
    assert _ids(sharded.search(QUERIES, k=10, filter=flt)) == _ids(single)
    assert any(_ids(single))


def test_a_sharded_search_on_ray_filters_on_a_field_only_some_shards_hold(corpus: Corpus, local_ray) -> None:
    flt = {"tenant": "t1"}
    single = BM25(k=50).fit(corpus).search(QUERIES, k=10, filter=flt)
    sharded = Sharded(retriever={"bm25": {"k": 50}}, n_shards=2, k=50, backend="ray").fit(corpus)
    assert _ids(sharded.search(QUERIES, k=10, filter=flt)) == _ids(single)


def test_a_sharded_search_still_refuses_a_wrong_kind_and_an_unknown_field(corpus: Corpus) -> None:
    sharded = Sharded(retriever={"bm25": {"k": 50}}, n_shards=2, k=50, backend="local").fit(corpus)
    with pytest.raises(DataError, match=r"filter\.num: the field holds int values; got '70' \(str\)"):
        sharded.search(QUERIES, filter={"num": "70"})
    with pytest.raises(ValueError, match="'nope' is not a metadata field"):
        sharded.search(QUERIES, filter={"nope": 1})


def test_a_subset_keeps_the_fields_no_row_of_it_holds(corpus: Corpus) -> None:
    """A cut keeps every field and the kinds it held; a field named ``id`` that no row holds is gone (it would
    hide the document ids from filters)."""
    part = corpus.subset(np.arange(30, 60))
    assert set(part.metadata) == set(corpus.metadata)
    assert part.mask({"tenant": "t1"}).sum() == 0 and part.mask({"num": 70}).sum() == 0
    assert part.mask({"num": None}).all()
    with pytest.raises(DataError, match=r"filter\.tenant: the field holds str values; got 5 \(int\)"):
        part.mask({"tenant": 5})
    with pytest.raises(DataError, match="'nope' is not a metadata field"):
        part.mask({"nope": 1})
    own_id = Corpus(["a", "b"], ["x", "y"], metadata={"id": [17, None], "src": ["w", None]})
    cut = own_id.subset([1])
    assert set(cut.metadata) == {"src"} and cut.mask({"id": "b"}).tolist() == [True]


# ---------------------------------------------------------------------- 2. the last holders removed
def test_removing_the_last_documents_holding_a_field_leaves_filters_on_it_matching_nothing(corpus: Corpus,
                                                                                            tmp_path) -> None:
    holders = [d for d, t in zip(corpus.ids.tolist(), corpus.metadata["tenant"].tolist()) if t is not None]
    own = BM25(k=10, filter={"tenant": "t1"}).fit(corpus)
    plain = BM25(k=10).fit(corpus)
    assert all(len(d) for d in own.search(QUERIES).doc_ids)
    own.remove(holders)
    plain.remove(holders)
    assert [len(d) for d in own.search(QUERIES).doc_ids] == [0] * len(QUERIES)
    assert [len(d) for d in plain.search(QUERIES, filter={"tenant": ["t1", "t2"]}).doc_ids] == [0] * len(QUERIES)
    assert all(len(d) for d in plain.search(QUERIES, filter={"tenant": None}).doc_ids)
    with pytest.raises(DataError, match=r"filter\.tenant: the field holds str values; got 1 \(int\)"):
        plain.search(QUERIES, filter={"tenant": 1})
    with pytest.raises(ValueError, match="'nope' is not a metadata field"):
        plain.search(QUERIES, filter={"nope": 1})
    plain.save(tmp_path / "bm25")  # the field is kept by a save and a load too
    loaded = BM25.load(tmp_path / "bm25")
    assert "tenant" in loaded.corpus_.metadata
    assert [len(d) for d in loaded.search(QUERIES, filter={"tenant": "t1"}).doc_ids] == [0] * len(QUERIES)


def test_langchain_filters_on_a_field_whose_documents_were_deleted_match_nothing() -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from ragkit.integrations.langchain import RagkitRetriever

    docs = [Document(page_content=f"cells protein {i}", metadata={"src": "web"}) for i in range(5)]
    ret = RagkitRetriever(pipeline=BM25(k=5), corpus=docs, k=3)
    ids = ret.add_documents([Document(page_content="cells upload", metadata={"tenant": "t1"})])
    assert [d.page_content for d in ret.invoke("cells", filter={"tenant": "t1"})] == ["cells upload"]
    narrowed = RagkitRetriever(pipeline=ret.pipeline, k=3, search_kwargs={"filter": {"tenant": "t1"}})
    ret.delete(ids)
    assert ret.invoke("cells", filter={"tenant": "t1"}) == []
    assert narrowed.invoke("cells") == []
    assert len(ret.invoke("cells")) == 3


# ---------------------------------------------------------------------- 3, 4. LangChain: default and call filters
def test_all_filters_applies_both_filters_as_given() -> None:
    assert all_filters({"a": 1}, {"b": [2]}) == {"a": 1, "b": [2]}
    both = all_filters({"tags": "x"}, {"tags": "y"})
    assert isinstance(both, AllOf) and list(both) == [{"tags": "x"}, {"tags": "y"}]
    assert list(all_filters(both, {"c": 1})) == [{"tags": "x"}, {"tags": "y"}, {"c": 1}]
    assert all_filters({}, {"tags": "y"}) == {"tags": "y"}


def test_langchain_default_and_call_filters_on_a_list_field_both_apply(corpus: Corpus) -> None:
    pytest.importorskip("langchain_core")
    from ragkit.integrations.langchain import RagkitRetriever

    bm25 = BM25(k=120).fit(corpus)
    ret = RagkitRetriever(pipeline=bm25, k=120, search_kwargs={"filter": {"tags": "x"}})
    got = ret.invoke("w1 w2 w3", filter={"tags": "y"})
    want = _ids(bm25.search(["w1 w2 w3"], k=120, filter={"tags": "x"}))[0]
    want = [d for d, t in zip(corpus.ids.tolist(), corpus.metadata["tags"].tolist()) if d in want and "y" in t]
    assert got and sorted(d.id for d in got) == sorted(want)
    assert all({"x", "y"} <= set(d.metadata["tags"]) for d in got)


def test_langchain_a_call_filter_of_the_wrong_kind_is_refused_beside_a_default_filter(corpus: Corpus) -> None:
    pytest.importorskip("langchain_core")
    from ragkit.integrations.langchain import RagkitRetriever

    ret = RagkitRetriever(pipeline=BM25(k=10).fit(corpus), k=10, search_kwargs={"filter": {"year": [2010, 2011]}})
    with pytest.raises(DataError, match=r"filter\.year: the field holds int values; got '2010' \(str\)"):
        ret.invoke("w1", filter={"year": "2010"})
    with pytest.raises(ValueError, match=r"^search_kwargs: filter\.year: the field holds int values") as caught:
        ret.search_kwargs = {"filter": {"year": "2010"}}
    assert caught.value.path == "options.filter"
    assert {d.metadata["year"] for d in ret.invoke("w1 w2 w3", filter={"year": 2010})} == {2010}


# ---------------------------------------------------------------------- 5. checked before any step runs
@pytest.mark.parametrize("options", [{"bm25": {"filter": {"year": "2010"}}}, {"filter": {"year": "2010"}},
                                     {"filter": {"tenant": 3}}])
def test_a_filter_value_of_the_wrong_kind_is_refused_before_any_branch_runs(corpus: Corpus, options: dict,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = Parallel([BM25(k=10), BM25(k=10, k1=1.5)]).fit(corpus)
    ran: list[object] = []
    real = BM25._call
    monkeypatch.setattr(BM25, "_call", lambda self, state: ran.append(self) or real(self, state))
    with pytest.raises(DataError, match=r"^search option (bm25\.)?filter\.(year|tenant): the field holds"):
        pipe.search(QUERIES, **options)
    assert ran == []
    assert len(pipe.search(QUERIES, filter={"year": 2010}).doc_ids) == len(QUERIES) and len(ran) == 2
