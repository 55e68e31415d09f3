"""Ids read alike wherever they enter: a float id of an integral value is its integer's string (``1.0`` -> ``"1"``)
in TrainSet queries (a mapping, a pandas Series' index), in qrels (query ids and document ids, a mapping or a
DataFrame), as Queries(...) and Corpus(...) already read them; a missing id (NaN) is refused naming its position.
And State takes Queries (what ``data.queries()`` returns), keeping its ids."""

import numpy as np
import pandas as pd
import pytest

from ragkit import Corpus, Queries, TrainSet
from ragkit.errors import DataError
from ragkit.retrievers import BM25
from ragkit.types import State, check_qrels


def test_trainset_mapping_with_float_keys_meets_string_qrels():
    # was: DataError "none of the queries judged positive in the qrels ('1', '2') is one of the 2 training
    # queries ('1.0', '2.0')"
    train = TrainSet({1.0: "a b", 2.0: "c d"}, {"1": {"d0": 1}, "2": {"d1": 1}})
    assert train.queries.ids == ["1", "2"]
    assert Queries.from_texts({1.0: "a", 2: "b", "x": "c"}).ids == ["1", "2", "x"]
    assert list(Corpus.from_texts({1.0: "a", 2.0: "b"}).ids) == ["1", "2"]


def test_qrels_float_ids_read_as_integers_in_mappings_and_dataframes():
    assert check_qrels({1.0: {2.0: 1, "d": 1.0}}, "evaluate") == {"1": {"2": 1, "d": 1}}
    # a DataFrame with float id columns (pandas reads an id column holding a missing value as float64)
    df = pd.DataFrame({"query-id": [1.0, 2.0], "corpus-id": [10.0, 11.0], "score": [1, 1]})
    train = TrainSet({"1": "a b", "2": "c d"}, df)
    assert train.qrels == {"1": {"10": 1}, "2": {"11": 1}}
    train = TrainSet({1.0: "a b", 2.0: "c d"}, {1.0: {10.0: 1}, 2.0: {11.0: 1}})
    assert train.qrels == {"1": {"10": 1}, "2": {"11": 1}} and train.queries.ids == ["1", "2"]
    with pytest.raises(DataError, match=r"qrels name a query twice once its ids are strings: '1'"):
        check_qrels({"1": {"d": 1}, 1.0: {"d": 1}}, "evaluate")


def test_missing_ids_refused_by_position():
    nan = float("nan")
    with pytest.raises(DataError, match=r"evaluate: qrels' query ids\[1\] is nan, not an id"):
        check_qrels({"q": {"d": 1}, nan: {"d": 1}}, "evaluate")
    with pytest.raises(DataError, match=r"evaluate: qrels\['q'\]'s document ids\[1\] is nan, not an id"):
        check_qrels({"q": {"d": 1, nan: 1}}, "evaluate")
    with pytest.raises(DataError, match=r"evaluate: qrels' query ids\[0\] is None, not an id"):
        check_qrels({None: {"d": 1}}, "evaluate")
    df = pd.DataFrame({"query-id": [1.0, np.nan], "corpus-id": [10, 11], "score": [1, 1]})
    with pytest.raises(DataError, match=r"qrels DataFrame's column 'query-id'\[1\] is nan, not an id"):
        TrainSet({"1": "a"}, df)
    df = pd.DataFrame({"query-id": ["1", "1"], "corpus-id": ["d0", None], "score": [1, 1]})
    with pytest.raises(DataError, match=r"qrels DataFrame's column 'corpus-id'\[1\] is (None|nan), not an id"):
        TrainSet({"1": "a"}, df)
    with pytest.raises(DataError, match=r"the mapping's keys\[1\] is nan, not an id"):
        TrainSet({1.0: "a", nan: "b"}, {"1": {"d": 1}})


def test_series_with_a_named_float_index_holds_ids():
    # was: "got one indexed by row number (Index [1.0, 2.0], name '_id')"
    texts = pd.Series(["a b", "c d"], index=pd.Index([1.0, 2.0], name="_id"))
    assert TrainSet(texts, {"1": {"d0": 1}}).queries.ids == ["1", "2"]
    assert Queries.from_texts(texts).ids == ["1", "2"]
    with_nan = pd.Series(["a b", "c d"], index=pd.Index([1.0, np.nan], name="_id"))
    with pytest.raises(DataError, match=r"TrainSet.queries: the Series' index\[1\] is nan, not an id"):
        TrainSet(with_nan, {"1": {"d0": 1}})
    # an unnamed index is still row labels
    with pytest.raises(DataError, match="indexed by row number"):
        TrainSet(pd.Series(["a b", "c d"], index=[1.0, 2.0]), {"1": {"d0": 1}})


def test_state_takes_queries_and_keeps_their_ids():
    corpus = Corpus.from_texts({"d0": "aspirin lowers the risk", "d1": "statins lower cholesterol"})
    bm25 = BM25(k=2).fit(corpus)
    queries = Queries(["q1", "q2"], ["aspirin", "cholesterol"])
    state = State(queries, options={"k": 1})
    assert state.queries == ["aspirin", "cholesterol"] and state.query_ids == ["q1", "q2"]
    out = bm25(state)  # was: DataError "bm25: text 0 is a tuple (('q1', 'aspirin'))"
    assert out.query_ids == ["q1", "q2"]
    assert [corpus.ids[r.rows[0]] for r in out.rankings] == ["d0", "d1"]
    assert State(queries, query_ids=["q1", "q2"]).query_ids == ["q1", "q2"]
    with pytest.raises(DataError, match=r"query_ids \('x', 'y'\) differ from the ids of the Queries"):
        State(queries, query_ids=["x", "y"])


@pytest.mark.parametrize("given, message", [
    ("aspirin", r"State.queries: got a str \('aspirin'\); State takes a list of query texts.*wrap it in a list"),
    ({"q1": "aspirin"}, r"State.queries: got a dict .*State.of\(...\) also takes a mapping"),
    (None, r"State.queries: got None; State takes"),
    ([("q1", "aspirin")], r"State.queries\[0\] is a tuple .* expected a string; State takes"),
    (["a", 3], r"State.queries\[1\] is an int \(3\), expected a string; State takes"),
])
def test_state_refuses_what_is_no_list_of_strings(given, message):
    with pytest.raises(DataError, match=message):
        State(given)


def test_state_still_takes_lists_tuples_and_arrays():
    assert State(("a", "b")).queries == ["a", "b"]
    assert State(np.array(["a", "b"])).queries == ["a", "b"]
    given = ["a"]
    state = State(given)
    assert state.queries == ["a"] and state.queries is not given and state.query_ids == ["q0"]
