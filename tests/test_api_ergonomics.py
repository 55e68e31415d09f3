"""Everyday handling of ragkit's data objects: indexing, summaries, conversions, and the errors of the
common wrong calls (one integer where a list of rows is expected, dicts for LangChain Documents, a
DataFrame for ``Corpus(ids, texts)``)."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from ragkit import Corpus, Queries, State, TrainSet
from ragkit.errors import DataError, InputTypeError
from ragkit.types import Ranking

TEXTS = [f"query number {i} about vitamin b{i} and a rather long tail of words to be clipped" for i in range(300)]


@pytest.fixture()
def queries() -> Queries:
    return Queries([str(i) for i in range(300)], TEXTS)


@pytest.fixture()
def corpus() -> Corpus:
    return Corpus(ids=["d0", "d1", "d2", "d3"], texts=["a b", "c d", "e f", "g h"], titles=["T0", "", "T2", ""],
                  metadata={"year": [2020, 2021, 2022, 2023], "title": ["m0", "m1", "m2", "m3"]})


# ---------------------------------------------------------------- Queries[i] and iteration


def test_queries_int_index_is_the_pair_iteration_yields(queries: Queries) -> None:
    assert queries[0] == ("0", TEXTS[0])
    assert queries[-1] == ("299", TEXTS[299])
    assert queries[np.int64(2)] == ("2", TEXTS[2])
    pairs = list(queries)
    assert pairs[:2] == [queries[0], queries[1]] and len(pairs) == 300
    assert dict(queries)["7"] == TEXTS[7]
    for qid, text in queries[:2]:
        assert isinstance(qid, str) and isinstance(text, str)


def test_queries_int_index_out_of_range_is_an_index_error(queries: Queries) -> None:
    with pytest.raises(IndexError, match="out of range for 300 queries"):
        queries[300]


def test_queries_slices_and_lists_still_give_queries(queries: Queries) -> None:
    assert queries[:2].ids == ["0", "1"]
    assert queries[[3, 1]].ids == ["3", "1"]
    mask = np.zeros(300, bool)
    mask[5] = True
    assert queries[mask].ids == ["5"]


def test_queries_string_index_points_to_the_id_lookup(queries: Queries) -> None:
    with pytest.raises(InputTypeError, match=r"dict\(queries\)\['1'\]"):
        queries["1"]


# ---------------------------------------------------------------- subset of one integer


def test_corpus_subset_of_one_int_is_refused_clearly(corpus: Corpus) -> None:
    with pytest.raises(InputTypeError, match=r"Corpus.subset: expected a list of row positions.*an int \(0\).*\[0\]"):
        corpus.subset(0)
    with pytest.raises(InputTypeError, match="Corpus.subset"):
        corpus.subset(np.int64(1))
    assert corpus.subset([0]).ids.tolist() == ["d0"]


def test_state_subset_of_one_int_is_refused_clearly() -> None:
    st = State(["a", "b", "c"])
    with pytest.raises(InputTypeError, match=r"State.subset: .*got an int \(1\).*\[1\]"):
        st.subset(1)
    assert st.subset([1]).queries == ["b"]


def test_subset_of_a_2d_array_is_refused(corpus: Corpus) -> None:
    with pytest.raises(DataError, match=r"1-D list of row positions.*\(1, 2\)"):
        corpus.subset(np.array([[0, 1]]))


# ---------------------------------------------------------------- Corpus.from_documents with dicts


def test_from_documents_refuses_dicts_pointing_to_from_records() -> None:
    with pytest.raises(InputTypeError, match=r"document 0 is a dict.*LangChain Document.*Corpus.from_records"):
        Corpus.from_documents([{"id": "1", "text": "x"}])


def test_from_documents_refuses_texts_pointing_to_from_texts() -> None:
    with pytest.raises(InputTypeError, match=r"document 1 is a str.*Corpus.from_texts"):
        Corpus.from_documents([_Doc("x"), "plain text"])
    with pytest.raises(InputTypeError, match="expected a list of LangChain Documents, got a str"):
        Corpus.from_documents("plain text")


class _Doc:
    """A LangChain Document's shape, without LangChain."""

    def __init__(self, text: str, **metadata: object) -> None:
        self.page_content, self.metadata, self.id = text, metadata, None


def test_from_documents_still_takes_documents() -> None:
    c = Corpus.from_documents([_Doc("x", title="t"), _Doc("y", id="k")])
    assert c.ids.tolist() == ["0", "k"] and c.titles.tolist() == ["t", ""]


# ---------------------------------------------------------------- summary reprs


def test_queries_repr_is_a_short_summary(queries: Queries) -> None:
    r = repr(queries)
    assert len(r) < 250, r
    assert r.startswith("Queries(300 queries: '0': 'query number 0") and r.endswith(", ...)")
    assert TEXTS[0] not in r  # clipped
    assert repr(Queries([], [])) == "Queries(0 queries)"
    assert repr(queries[:1]).startswith("Queries(1 query: ")


def test_trainset_repr_is_a_short_summary(queries: Queries) -> None:
    ts = TrainSet(queries, {"0": {"d0": 1, "d1": 0}, "1": {"d2": 2}})
    r = repr(ts)
    assert len(r) < 200, r
    assert r == ("TrainSet(300 queries ('0', '1', '2', ...), 2 judged; qrels: 2 queries, 3 judgements, "
                 "2 relevant)")


def test_state_repr_names_fields_without_data() -> None:
    n = 300
    st = State([f"q {i}" for i in range(n)], [str(i) for i in range(n)],
               rankings=[Ranking(np.arange(10), -np.arange(10, dtype=np.float32)) for _ in range(n)],
               vectors={"hash": np.ones((n, 128), np.float32)}, values={"route": ["a"] * n},
               branches=[("bm25", []), ("dense", [])], options={"k": 10}, trace=[], qrels={"0": {"d": 1}})
    r = repr(st)
    assert len(r) < 300, r
    assert r == ("State(300 queries ('0', '1', '2', ...), rankings: up to 10 docs each, vectors: 'hash' (300, 128), "
                 "values: ['route'], branches: ['bm25', 'dense'], options: ['k'], trace: 0 events, qrels: 1 query)")
    assert repr(State(["a"])) == "State(1 query ('q0'))"


def test_corpus_repr_singular() -> None:
    assert repr(Corpus.from_texts(["a"])) == "Corpus(1 doc)"
    assert repr(Corpus.from_texts(["a", "b"])) == "Corpus(2 docs)"


# ---------------------------------------------------------------- Corpus[...] and Corpus.to_pandas


def test_corpus_getitem_selects_a_sub_corpus(corpus: Corpus) -> None:
    assert corpus[:2].ids.tolist() == ["d0", "d1"]
    assert corpus[::-1].ids.tolist() == ["d3", "d2", "d1", "d0"]
    assert corpus[[2, 0]].ids.tolist() == ["d2", "d0"]
    assert corpus[np.array([False, True, False, True])].ids.tolist() == ["d1", "d3"]
    retrieved = np.array(["d3", "d1"], dtype=object)  # a run's doc_ids for one query
    sub = corpus[retrieved]
    assert sub.ids.tolist() == ["d3", "d1"] and sub.texts.tolist() == ["g h", "c d"]
    assert sub.metadata["year"].tolist() == [2023, 2021]
    assert corpus[["d2"]].texts.tolist() == ["e f"]
    with pytest.raises(DataError, match="'nope' is not in the corpus"):
        corpus[["nope"]]


def test_corpus_getitem_of_one_position_or_id_is_refused(corpus: Corpus) -> None:
    with pytest.raises(InputTypeError, match=r"got a str \('d1'\).*corpus\[\['d1'\]\]"):
        corpus["d1"]
    with pytest.raises(InputTypeError, match=r"got an int \(0\).*corpus\[\[0\]\]"):
        corpus[0]


def test_corpus_stays_not_iterable(corpus: Corpus) -> None:
    from collections.abc import Iterable

    assert not isinstance(corpus, Iterable)
    with pytest.raises(TypeError, match="not iterable"):
        iter(corpus)


def test_corpus_to_pandas(corpus: Corpus) -> None:
    pytest.importorskip("pandas")
    df = corpus.to_pandas()
    assert list(df.columns) == ["id", "title", "text", "year", "metadata.title"]
    assert df["id"].tolist() == ["d0", "d1", "d2", "d3"]
    assert df["title"].tolist() == ["T0", "", "T2", ""]
    assert df["year"].tolist() == [2020, 2021, 2022, 2023]
    assert df["metadata.title"].tolist() == ["m0", "m1", "m2", "m3"]
    df.loc[0, "text"] = "changed"  # a copy: writable, and the corpus is unchanged
    assert corpus.texts[0] == "a b"


def test_corpus_to_pandas_without_pandas(corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(ImportError, match="Corpus.to_pandas needs pandas.*pip install pandas"):
        corpus.to_pandas()


# ---------------------------------------------------------------- one argument for Corpus(ids, texts)


def test_corpus_of_one_list_of_texts_points_to_from_texts() -> None:
    with pytest.raises(InputTypeError, match=r"Corpus\(ids, texts\): got one argument, a list.*Corpus.from_texts"):
        Corpus(["a", "b"])


def test_corpus_of_one_dataframe_points_to_its_constructors() -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"id": ["d1"], "text": ["a"]})
    with pytest.raises(InputTypeError, match=r"a pandas DataFrame \(columns \['id', 'text'\]\).*texts=df\['text'\]"):
        Corpus(df)


def test_corpus_of_one_mapping_or_records() -> None:
    with pytest.raises(InputTypeError, match=r"Corpus.from_texts\(mapping\)"):
        Corpus({"d1": "a"})
    with pytest.raises(InputTypeError, match=r"Corpus.from_records"):
        Corpus([{"_id": "d1", "text": "a"}])


def test_queries_of_one_list_points_to_from_texts() -> None:
    with pytest.raises(InputTypeError, match=r"Queries\(ids, texts\): got one argument.*Queries.from_texts"):
        Queries(["a", "b"])


def test_constructors_pickle_and_copy_still_work(corpus: Corpus, queries: Queries) -> None:
    assert Corpus(["x"], ["y"]).ids.tolist() == ["x"]
    assert Corpus(["x"], texts=["y"]).texts.tolist() == ["y"]
    assert Corpus(ids=["x"], texts=["y"]).texts.tolist() == ["y"]
    assert Queries(["1"], ["y"])[0] == ("1", "y")
    for obj in (corpus, queries):
        assert repr(pickle.loads(pickle.dumps(obj))) == repr(obj)
        assert repr(copy.deepcopy(obj)) == repr(obj)
    assert pickle.loads(pickle.dumps(queries)) == queries
    assert pickle.loads(pickle.dumps(corpus)).metadata["year"].tolist() == [2020, 2021, 2022, 2023]
