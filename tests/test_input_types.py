"""Wrong input types at the edges of the Python API (a review with reproducers in /tmp/rev_api/): each was
accepted silently (a string split into characters, a dict's keys searched, a NaN title indexed as "nan" and
saved as invalid JSON) or failed deep inside with an AttributeError; each is now read as meant or refused
where it enters, naming the argument, the position and the id."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import HashedEncoder

from ragkit import Corpus, Operator, Queries, TrainSet, evaluate
from ragkit.encoders import register_encoder
from ragkit.encoders.sentence import blank_texts
from ragkit.errors import DataError, InputTypeError
from ragkit.retrievers import BM25, Dense
from ragkit.types import State, check_texts, ids_and_texts

pd = pytest.importorskip("pandas")

DOCS = {"a": "stem cells divide", "b": "protein folding in cells", "c": "vitamin d and fractures"}


def _corpus() -> Corpus:
    return Corpus(ids=list(DOCS), texts=list(DOCS.values()))


# ------------------------------------------------------------------ 1. titles and texts of a Corpus
def test_a_missing_title_is_empty_not_the_word_nan_and_saves_as_strict_json(tmp_path):
    """A pandas NaN title was indexed as 'nan' (search(["nan"]) found the document), saved as the invalid
    JSON `"title": NaN`, and the saved folder then refused to load."""
    df = pd.DataFrame({"id": ["a", "b", "c", "d"], "title": [np.nan, "Cell biology", None, pd.NA],
                       "text": ["stem cells divide", "protein folding", "vitamin d", "bone density"]})
    c = Corpus(ids=df["id"], texts=df["text"], titles=df["title"])
    assert c.titles.tolist() == ["", "Cell biology", "", ""]
    assert c.full_texts[0] == "stem cells divide"
    bm = BM25(k=3).fit(c)
    assert bm.search(["nan"]).to_dict() == {"q0": {}}
    bm.save(tmp_path / "bm")
    strict = [json.loads(line, parse_constant=lambda x: pytest.fail(f"non-standard JSON {x}"))
              for line in (tmp_path / "bm" / "corpus.jsonl").read_text().splitlines()]
    assert [r["title"] for r in strict] == ["", "Cell biology", "", ""]
    back = Operator.load(tmp_path / "bm")
    assert back.corpus_.titles.tolist() == c.titles.tolist()
    assert back.search(["stem cells"]).to_dict() == bm.search(["stem cells"]).to_dict()


def test_a_title_or_text_that_is_no_string_is_refused_when_the_corpus_is_built():
    """An int title was indexed as "3"; a NaN, None or int text was refused only at fit, by each operator."""
    with pytest.raises(DataError, match=r"Corpus\.titles\[0\] \(document 'a'\) is an int \(3\), expected a string"):
        Corpus(ids=["a", "b"], texts=["x y", "z"], titles=[3, "t"])
    with pytest.raises(DataError, match=r"Corpus\.texts\[1\] \(document 'b'\) is a float \(nan\), expected a string; "
                                        r"for a document without text give ''"):
        Corpus(ids=pd.Series(["a", "b"]), texts=pd.Series(["cell growth", np.nan]))
    with pytest.raises(DataError, match=r"Corpus\.texts\[2\] \(document 'c'\) is None"):
        Corpus(ids=["a", "b", "c"], texts=["x", "y", None])
    with pytest.raises(DataError, match=r"Corpus\.texts\[1\] \(document '1'\) is an int \(5\)"):
        Corpus.from_texts(["cell", 5])
    with pytest.raises(DataError, match=r"Corpus\.texts\[0\] \(document 'a'\) is a bytes .*decode it"):
        Corpus(ids=["a"], texts=[b"cell"])
    with pytest.raises(DataError, match=r"Corpus\.texts\[0\] \(document 'a'\) is None"):  # was the text "None"
        Corpus.from_records([{"_id": "a", "text": None}])
    rec = Corpus.from_records([{"_id": "a", "text": "x", "title": float("nan")}, {"_id": "b", "text": "y", "title": 7}])
    assert rec.titles.tolist() == ["", "7"]  # (a record's title is written as a string, as before)
    # a checked column of numpy strings or a chunk boundary changes nothing
    big = [f"t{i}" for i in range(20000)]
    assert Corpus.from_texts(np.array(big)).texts.tolist() == big
    titles = [None if i % 9000 == 0 else f"x{i}" for i in range(20000)]
    assert Corpus(ids=big, texts=big, titles=titles).titles.tolist() == [t or "" for t in titles]


def test_corpus_save_writes_no_nan_in_metadata(tmp_path):
    """Metadata NaN (pandas' missing value) was written as NaN; it is written as null (read back as None)."""
    c = Corpus(ids=["a", "b"], texts=["x", "y"], metadata={"year": [2020.0, float("nan")]})
    c.save(tmp_path / "c.jsonl")
    lines = [json.loads(x, parse_constant=lambda x: pytest.fail(x)) for x in
             (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [r["metadata"]["year"] for r in lines] == [2020.0, None]
    with pytest.raises(DataError, match=r"metadata field 'year' holds inf"):
        Corpus(ids=["a"], texts=["x"], metadata={"year": [float("inf")]}).save(tmp_path / "d.jsonl")


def test_corpus_check_texts_chunks_and_surrogates():
    """The type check is the surrogate scan's ``str.join``: a non-string in any chunk is found and named."""
    vals = [f"v{i}" for i in range(10)]
    assert check_texts(vals, "t") is vals  # nothing replaced: the same list back
    vals[7] = 7
    with pytest.raises(DataError, match=r"t\[7\] \(document 'h'\) is an int \(7\)"):
        check_texts(vals, "t", list("abcdefghij"), chunk=3)
    vals[7] = None
    out = check_texts(vals, "t", missing_ok=True, chunk=3)
    assert out[7] == "" and vals[7] is None  # (a new list; the caller's is left alone)


# ------------------------------------------------------------------ 2. what search reads as queries
def test_search_reads_a_mapping_as_ids_and_texts_and_refuses_a_dataframe():
    """search(dict) searched the keys and search(DataFrame) the column names, silently."""
    bm = BM25(k=2).fit(_corpus())
    run = bm.search({"x1": "stem cells", "x2": "vitamin d"})
    assert run.query_ids == ["x1", "x2"]
    assert run.to_dict() == bm.search(Queries(["x1", "x2"], ["stem cells", "vitamin d"])).to_dict()
    assert bm.search({1: "stem cells"}).query_ids == ["1"]
    with pytest.raises(DataError, match=r"got a pandas DataFrame .*df\['text'\]"):
        bm.search(pd.DataFrame({"text": ["stem cells"]}))
    # a Series: its index where it holds string ids; row numbers are no ids
    assert bm.search(pd.Series(["stem cells"], index=["s1"])).query_ids == ["s1"]
    assert bm.search(pd.Series(["stem cells", "vitamin d"])).query_ids == ["q0", "q1"]
    assert bm.search(pd.Series(["stem cells", "vitamin d"], index=[10, 11])).query_ids == ["q0", "q1"]
    # plain lists, tuples, arrays, one string: as before
    assert bm.search(("stem cells", "vitamin d")).query_ids == ["q0", "q1"]
    assert bm.search(np.array(["stem cells"])).to_dict() == bm.search("stem cells").to_dict()
    with pytest.raises(DataError, match=r"got the method .*queries, not texts; call it"):
        bm.search(_Data().queries)
    with pytest.raises(DataError, match=r"search: queries: expected a list of texts .*got None"):
        bm.search(None)


class _Data:
    def queries(self, split: str) -> Queries:  # (a BeirDataset's method, not called)
        return Queries(["q"], ["x"])


# ------------------------------------------------------------------ 3. one string where a list is expected
def test_one_string_is_not_a_list_of_its_characters():
    with pytest.raises(DataError, match=r"Corpus\.from_texts: expected a list of texts, got one str .*wrap it"):
        Corpus.from_texts("hello world")  # was 11 documents
    with pytest.raises(DataError, match=r"Corpus\.ids: expected a list .*got one str \('abc'\); wrap it in a list"):
        Corpus(ids="abc", texts="xyz")
    with pytest.raises(DataError, match=r"Corpus\.texts: .*got one str"):
        Corpus(ids=["a"], texts="hello")
    with pytest.raises(DataError, match=r"Queries\.from_texts: .*got one str"):
        Queries.from_texts("what is covid")  # was 13 queries
    with pytest.raises(DataError, match=r"Queries\.ids: expected a list .*got a str"):
        Queries(ids="ab", texts="xy")
    with pytest.raises(DataError, match=r"Corpus\.texts: .*got a dict .*Corpus\.from_texts"):
        Corpus(ids=["a", "b"], texts={"a": "x", "b": "y"})
    with pytest.raises(DataError, match=r"Corpus\.metadata: expected a mapping"):
        Corpus(ids=["a", "b"], texts=["x", "y"], metadata=[1, 2])
    # a mapping {id: text} is a natural corpus and batch of queries: its ids and texts
    c = Corpus.from_texts(DOCS)
    assert (c.ids.tolist(), c.texts.tolist()) == (list(DOCS), list(DOCS.values()))
    q = Queries.from_texts({"q7": "stem cells"})
    assert (q.ids, q.texts) == (["q7"], ["stem cells"])
    with pytest.raises(DataError, match="ids given twice"):
        Corpus.from_texts(DOCS, ids=["x", "y", "z"])
    assert len(Corpus.from_texts(t for t in ["a", "b"])) == 2  # (a generator had no len())


def test_langchain_refuses_one_string_and_reads_a_mapping_corpus():
    pytest.importorskip("langchain_core")
    from ragkit.integrations.langchain import RagkitRetriever

    with pytest.raises(ValueError, match=r"corpus: expected a list of texts, got one str .*wrap it in a list"):
        RagkitRetriever(pipeline=BM25(), corpus="a cat sat on the mat")
    with pytest.raises(DataError, match=r"from_texts: expected a list of texts, got one str"):
        RagkitRetriever.from_texts("hello world")
    r = RagkitRetriever(pipeline=BM25(), corpus={"d1": "a cat sat", "d2": "a dog ran"}, k=1)
    assert [(d.id, d.page_content) for d in r.invoke("cat")] == [("d1", "a cat sat")]
    with pytest.raises(DataError, match=r"batch: expected a list of query strings, got str 'cat'"):
        r.batch("cat")  # was 3 queries: 'c', 'a', 't'
    assert [docs[0].id for docs in r.batch(["cat", "dog"])] == ["d1", "d2"]
    r2 = RagkitRetriever.from_texts({"x": "a cat sat", "y": "a dog ran"}, k=1)
    assert r2.invoke("dog")[0].id == "y"
    with pytest.raises(ValueError, match=r"corpus: got one record"):
        RagkitRetriever(pipeline=BM25(), corpus={"_id": "a", "text": "a cat"})
    with pytest.raises(ValueError, match=r"corpus: got a pandas DataFrame"):
        RagkitRetriever(pipeline=BM25(), corpus=pd.DataFrame({"text": ["a cat"]}))


# ------------------------------------------------------------------ 4. queries that are no strings
@pytest.mark.parametrize("bad, shown", [(None, "None"), (5, r"an int \(5\)"), (b"cells", r"a bytes \(b'cells'\)"),
                                        (float("nan"), r"a float \(nan\)"), (["stem", "cells"], "a list")])
def test_a_query_that_is_no_string_is_refused_where_queries_enter(bad, shown):
    """Dense found nothing for None, silently, and failed on 5 or bytes with "'int' object has no attribute
    'isspace'"; BM25 called bytes "a int (115)" (a byte of it)."""
    register_encoder("input-types-hashed", HashedEncoder("input-types-hashed-v1", 16), replace=True)
    dense = Dense(model="input-types-hashed", k=2).fit(_corpus())
    for op in (dense, BM25(k=2).fit(_corpus())):
        with pytest.raises(DataError, match=rf"query\[1\] \(id 'q1'\) is {shown}"):
            op.search(["stem cells", bad])
        with pytest.raises(DataError, match=rf"query\[0\] \(id 'x'\) is {shown}"):
            op.search({"x": bad})
    with pytest.raises(DataError, match=rf"query\[1\] \(id 'b'\) is {shown}"):
        Queries(["a", "b"], ["fine", bad])
    with pytest.raises(DataError, match=rf"query\[0\] is {shown}"):  # a state built by hand: Dense's check
        blank_texts([bad])


def test_a_bytes_query_and_numpy_strings():
    bm = BM25(k=2).fit(_corpus())
    with pytest.raises(DataError, match=r"got one bytes \(b'stem cells'\); wrap it in a list \(decoded\)"):
        bm.search(b"stem cells")
    q = Queries(np.array(["a"]), np.array(["stem cells"]))
    assert type(q.texts[0]) is str and q.ids == ["a"]
    assert State.of(np.array(["stem cells"])).queries == ["stem cells"]
    assert ids_and_texts(range(0), "x") == (None, [])


# ------------------------------------------------------------------ 6. judgements
QRELS = {"q1": {"d1": 1}}


@pytest.mark.parametrize("qrels, message", [
    ([("q1", "d1", 1)], r"TrainSet: qrels must be a mapping \{query_id: \{doc_id: grade\}\}, got a list"),
    ({"q1": "d1"}, r"TrainSet: qrels\['q1'\] is a str \('d1'\), expected a mapping \{doc_id: grade\}"),
    (None, r"TrainSet: qrels must be a mapping .*got None"),
    ({"q1": {"d1": 0.5}}, r"TrainSet: qrels\['q1'\]\['d1'\] = 0.5 is not an integer relevance grade"),
    ({1: {"d1": 1}, "1": {"d2": 1}}, r"qrels name a query twice once its ids are strings: '1'"),
])
def test_trainset_refuses_judgements_of_another_shape(qrels, message):
    """Each crashed inside with AttributeError 'values' / TypeError '>' (or was kept, for 0.5)."""
    with pytest.raises(DataError, match=message):
        TrainSet(Queries(["q1", "q2"], ["a", "b"]), qrels)


def test_trainset_reads_ids_and_grades_as_evaluate_does():
    """Queries turned int ids into strings but TrainSet's qrels did not ({1: ...} was refused, confusingly);
    a grade "1" was a TypeError though evaluate accepts it."""
    t = TrainSet(Queries([1, 2], ["a", "b"]), {1: {10: "1", 11: 0.0}})
    assert t.qrels == {"1": {"10": 1, "11": 0}}
    assert TrainSet({"q1": "a"}, QRELS).queries.ids == ["q1"]  # a mapping {query_id: text}
    with pytest.raises(DataError, match=r"TrainSet\.queries: expected Queries\(ids, texts\) .*got a list"):
        TrainSet(["a", "b"], QRELS)
    with pytest.raises(DataError, match=r"qrels\['q1'\]\['d1'\] = True is a bool"):  # a flag, no grade
        TrainSet(Queries(["q1"], ["a"]), {"q1": {"d1": True}})


def test_evaluate_names_the_argument_and_shape():
    bm = BM25(k=2).fit(_corpus())
    run = bm.search({"q1": "stem cells"})
    qrels = {"q1": {"a": 1}}
    assert evaluate(run, qrels, ["ndcg@10"]).scores == {"ndcg@10": 1.0}
    for args, message in [
        ((qrels, run), r"qrels must be a mapping .*got a Run; the arguments are evaluate\(run, qrels\)"),
        ((run, [("q1", "a", 1)]), r"evaluate: qrels must be a mapping \{query_id: \{doc_id: grade\}\}, got a list"),
        ((run, None), r"evaluate: qrels must be a mapping .*got None"),
        ((run, _Data().queries), r"evaluate: qrels must be a mapping .*got the method .*call it"),
        (([1, 2], qrels), r"evaluate: run must be a Run .*got a list"),
        (({"q1": ["a"]}, qrels), r"evaluate: run\['q1'\] is a list \(\['a'\]\), expected a mapping \{doc_id: score\}"),
    ]:
        with pytest.raises(DataError, match=message):
            evaluate(*args, ["ndcg@10"])
    with pytest.raises(DataError, match=r"evaluate: no metric asked for"):
        evaluate(run, qrels, [])  # was {} silently
    assert list(evaluate(run, qrels, ["ndcg@10 ", " recall@5"]).scores) == ["ndcg@10", "recall@5"]
    with pytest.raises(DataError, match=r"metric 10 is an int"):
        evaluate(run, qrels, [10])
    assert evaluate(run, {"q1": {"a": "1"}}, "ndcg@10").scores == {"ndcg@10": 1.0}


def test_the_lone_surrogate_check_scans_no_clean_text(monkeypatch):
    """Building a Corpus spent ~70% of its time scanning every text for lone surrogates with a regular
    expression (200,000 texts: 385 ms); ASCII text is known clean (a flag CPython keeps) and other text is
    encoded to UTF-8, which fails exactly on a surrogate (28 ms; 147 ms with a tenth non-ASCII).  The scan
    runs only to name the text that holds one."""
    from ragkit import _checks

    class Forbidden:
        def search(self, text: str) -> None:
            raise AssertionError("scanned a clean text")

    clean = ["plain ascii", "café au lait", "emoji \U0001f600 ok", "CJK 漢字"]
    monkeypatch.setattr(_checks, "_SURROGATE", Forbidden())
    _checks.check_texts(clean * 3, "texts", surrogates=True)
    monkeypatch.undo()
    with pytest.raises(DataError, match=r"texts\[5\] holds a lone surrogate '\\udc80' at character 3"):
        _checks.check_texts(clean + ["ok", "ok \udc80 x"], "texts", surrogates=True)


def test_search_checks_its_trace_qrels_and_takes_a_mapping_of_queries():
    """search(..., qrels=[1, 2]) failed with a raw TypeError inside the trace; the mapping form of queries
    is in search's signature (mypy accepted only Queries | Sequence[str] | str)."""
    import inspect

    from ragkit.retrievers import BM25

    bm = BM25(k=2).fit(Corpus.from_texts(["stem cells divide", "protein folding"]))
    with pytest.raises(DataError, match=r"search: qrels must be a mapping \{query_id: \{doc_id: grade\}\}"):
        bm.search(["stem cells"], trace=True, qrels=[1, 2])
    assert bm.search({"a": "stem cells"}).query_ids == ["a"]
    assert "Mapping[str, str]" in str(inspect.signature(BM25.search).parameters["queries"].annotation)


def test_a_ranking_of_fractional_rows_is_refused():
    """``Ranking(scores, rows)``, swapped, truncated the scores to row numbers (1.7 -> 1) without a word."""
    from ragkit.types import Ranking

    with pytest.raises(InputTypeError, match=r"rows are row numbers \(integers\), got float64 values such as 1\.7.*"
                                             r"swapped"):
        Ranking(np.array([1.7, 2.2]), np.array([3, 4]))
    assert Ranking(np.array([3.0, 4.0]), np.array([0.5, 0.2])).rows.tolist() == [3, 4]  # whole floats are rows
    assert Ranking([], []).rows.dtype == np.int64


def test_an_empty_ragkit_cache_is_the_default_cache(monkeypatch):
    """``RAGKIT_CACHE=`` (set, empty) put every cache into the working folder."""
    from pathlib import Path

    from ragkit.eval.beir import cache_dir

    monkeypatch.setenv("RAGKIT_CACHE", "")
    assert cache_dir() == Path("~/.cache/ragkit").expanduser()
