"""Corpus, metadata filters and Run built by hand: copies and pickles stay read-only, nested metadata is the
corpus's own, ids from records follow the constructor's rules, and a Run's own methods work on what it accepts."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from ragkit import Corpus
from ragkit.errors import DataError


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda c: pickle.loads(pickle.dumps(c))], ids=["deepcopy", "pickle"])
def test_copied_or_unpickled_corpus_stays_read_only(clone) -> None:
    c = Corpus(ids=["a", "b", "c"], texts=["x", " ", "z"],
               metadata={"year": [2001, 2002, 2003], "tags": [["x"], [], ["y"]]})
    c.blank  # (worked out: pickled with the corpus)
    c.mask({"year": 2001})
    p = clone(c)
    arrays = [p.ids, p.texts, p.titles, p.metadata["year"], p.metadata["tags"], p.__dict__["_blank"]]
    assert not any(a.flags.writeable for a in arrays)
    with pytest.raises(ValueError, match="read-only"):
        p.ids[0] = "zzz"
    with pytest.raises(ValueError, match="read-only"):
        p.metadata["year"][1] = 1999
    assert p.blank.tolist() == [False, True, False] and not p.blank.flags.writeable
    assert p.mask({"year": 2002}).tolist() == [False, True, False]


def test_nested_metadata_is_the_corpus_own_not_the_callers() -> None:
    """The caller's lists and dicts, changed after the corpus was made, change neither its metadata nor its filters:
    a corpus answers as a fresh one built from the values it was given."""
    tags = [["x"], ["y"]]
    deep = [{"k": [1]}, {"k": [2]}]
    mixed = [["x"], None]
    c = Corpus(ids=["a", "b"], texts=["1", "2"], metadata={"tags": tags, "deep": deep, "mixed": mixed})
    assert c.mask({"tags": "x"}).tolist() == [True, False]
    tags[1].append("x")
    deep[0]["k"].append(2)
    mixed[0].append("y")
    fresh = Corpus(ids=["a", "b"], texts=["1", "2"], metadata={"tags": [["x"], ["y"]]})
    assert c.mask({"tags": "x"}).tolist() == fresh.mask({"tags": "x"}).tolist() == [True, False]
    assert c.metadata["tags"].tolist() == [["x"], ["y"]]
    assert c.metadata["deep"].tolist() == [{"k": [1]}, {"k": [2]}]
    assert c.metadata["mixed"].tolist() == [["x"], None]
    assert c.mask({"mixed": "y"}).tolist() == [False, False]


def test_from_records_and_from_documents_keep_their_own_nested_metadata() -> None:
    recs = [{"_id": "a", "text": "t", "metadata": {"tags": ["x"], "m": {"k": 1}, "s": {1, 2}}}]
    c = Corpus.from_records(recs)
    recs[0]["metadata"]["tags"].append("q")
    recs[0]["metadata"]["m"]["k"] = 2
    recs[0]["metadata"]["s"].add(3)
    assert c.metadata["tags"].tolist() == [["x"]] and c.metadata["m"].tolist() == [{"k": 1}]
    assert c.metadata["s"].tolist() == [{1, 2}]
    assert c.mask({"tags": "q"}).tolist() == [False]

    class Doc:
        def __init__(self, text: str, metadata: dict) -> None:
            self.page_content, self.metadata, self.id = text, metadata, None

    doc = Doc("t", {"tags": [["x"]], "title": "T", "s": {1}})
    d = Corpus.from_documents([doc])
    doc.metadata["tags"][0].append("y")
    doc.metadata["s"].add(2)
    assert doc.metadata["title"] == "T"  # (the caller's dict is not changed either)
    assert d.metadata["tags"].tolist() == [[["x"]]] and d.metadata["s"].tolist() == [{1}]


def test_nested_numpy_scalars_become_python_values_inside_a_tuple_too() -> None:
    c = Corpus(ids=["a", "b"], texts=["1", "2"],
               metadata={"w": [[np.float32(0.1)], [1]], "t": [(np.int64(3), [np.float64("nan")]), None]})
    assert c.metadata["w"].tolist() == [[0.1], [1]] and type(c.metadata["w"][0][0]) is float
    assert c.metadata["t"].tolist() == [[3, [None]], None] and type(c.metadata["t"][0][0]) is int


def test_record_ids_follow_the_constructors_rules() -> None:
    assert Corpus.from_records([{"_id": 1.0, "text": "x"}, {"_id": 2, "text": "y"}]).ids.tolist() == ["1", "2"]
    assert Corpus(ids=[1.0], texts=["x"]).ids.tolist() == ["1"]
    with pytest.raises(DataError, match=r"Corpus.ids\[1\] is nan, not an id"):
        Corpus.from_records([{"_id": "a", "text": "x"}, {"_id": float("nan"), "text": "y"}])


def test_record_id_none_falls_back_to_id_and_the_message_says_what_the_record_has() -> None:
    assert Corpus.from_records([{"_id": None, "id": "z", "text": "x"}]).ids.tolist() == ["z"]
    assert Corpus.from_records([{"_id": "a", "id": "z", "text": "x"}]).ids.tolist() == ["a"]
    with pytest.raises(DataError, match=r"Corpus.from_records: record 0 has '_id': None and 'id': None, expected a "
                                        r"document id"):
        Corpus.from_records([{"_id": None, "id": None, "text": "x"}])
    with pytest.raises(DataError, match=r"Corpus.from_records: record 0 has '_id': None, expected a document id"):
        Corpus.from_records([{"_id": None, "text": "x"}])
    with pytest.raises(DataError, match=r"Corpus.from_records: record 1 has no '_id' \(or 'id'\) field"):
        Corpus.from_records([{"_id": "a", "text": "x"}, {"text": "y"}])


def test_from_documents_ids_follow_the_constructors_rules() -> None:
    class Doc:
        def __init__(self, text: str, metadata: dict, id: object = None) -> None:
            self.page_content, self.metadata, self.id = text, metadata, id

    c = Corpus.from_documents([Doc("a", {"id": 1.0}), Doc("b", {"id": float("nan")}), Doc("c", {}, id="7"),
                               Doc("d", {"id": 3.0}, id="3")])
    assert c.ids.tolist() == ["1", "1#1", "7", "3"] and "id" not in c.metadata


@pytest.mark.parametrize("meta", ["lang=en", [["k", 1]], 5])
def test_from_records_refuses_metadata_that_is_no_mapping_naming_the_record(meta) -> None:
    with pytest.raises(DataError, match=r"Corpus.from_records: record 1 \(id 'b'\) has the metadata .*expected a "
                                        r"mapping \{field: value\}"):
        Corpus.from_records([{"_id": "a", "text": "x"}, {"_id": "b", "text": "y", "metadata": meta}])
    assert Corpus.from_records([{"_id": "a", "text": "x", "metadata": None}]).metadata == {}
    assert Corpus.from_records([{"_id": "a", "text": "x", "metadata": float("nan")}]).metadata == {}


def test_run_built_by_hand_from_lists_works_with_its_own_methods(tmp_path) -> None:
    from ragkit import Run, evaluate

    run = Run(["1"], [["a", "b"]], [[2.0, 1.0]])  # type: ignore[list-item]
    assert type(run.doc_ids[0]) is np.ndarray and run.doc_ids[0].dtype == object
    assert run.to_dict() == {"1": {"a": 2.0, "b": 1.0}}
    run.write_trec(tmp_path / "r.trec")
    assert Run.read_trec(tmp_path / "r.trec") == run
    assert evaluate(run, {"1": {"a": 1}}).scores["ndcg@10"] == 1.0
    assert Run(["1"], [np.array(["a"])], [[1.0]]).doc_ids[0].dtype == object  # (a numpy string array)


def test_run_query_and_document_ids_follow_the_queries_rules() -> None:
    from ragkit import Run, evaluate

    run = Run([1], [np.array(["a"], dtype=object)], [[1.0]])  # type: ignore[list-item]
    assert run.query_ids == ["1"] and run[1][0].tolist() == ["a"]
    assert evaluate(run, {"1": {"a": 1}}).scores["ndcg@10"] == 1.0
    assert Run(np.array([2.0]), [[3.0]], [[1.0]]).to_dict() == {"2": {"3": 1.0}}  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"Run.query_ids\[0\] is nan, not an id"):
        Run([float("nan")], [["a"]], [[1.0]])  # type: ignore[list-item]
    with pytest.raises(DataError, match=r"Run.query_ids\[0\] is '', an empty id"):
        Run([""], [np.array(["a"], dtype=object)], [[1.0]])
    with pytest.raises(DataError, match=r"query id '1' appears more than once"):
        Run([1, "1"], [["a"], ["b"]], [[1.0], [1.0]])  # type: ignore[list-item]


def test_run_refuses_nan_scores_and_arrays_that_are_not_1d() -> None:
    from ragkit import Run

    with pytest.raises(DataError, match=r"Run: query '1' gives document 'a' the score nan; expected numbers"):
        Run(["1"], [np.array(["a", "b"], dtype=object)], [[np.nan, 1.0]])
    with pytest.raises(DataError, match=r"Run: query '1' gives document 'b' the score nan"):
        Run(["1"], [["a", "b"]], [np.array([1.0, np.nan])])  # type: ignore[list-item]
    with pytest.raises(DataError, match=r"Run: query '1': Run.doc_ids\[0\] must be a 1-D sequence .* shape \(1, 2\)"):
        Run(["1"], [np.array([["a", "b"]], dtype=object)], [np.array([[1.0, 2.0]])])
    with pytest.raises(DataError, match=r"Run: query '1' has scores of shape \(1, 1\); expected a 1-D array"):
        Run(["1"], [np.array(["a"], dtype=object)], [np.array([[1.0]], np.float32)])


@pytest.mark.parametrize("want", [[np.float32("nan")], np.array([np.nan, 2001]), (np.float64("nan"), 2001),
                                  [np.float16("nan"), 2003]])
def test_filter_refuses_nan_in_any_collection_numpy_floats_too(want) -> None:
    c = Corpus(ids=["a", "b", "c"], texts=["x"] * 3, metadata={"year": [2001, None, 2003]})
    with pytest.raises(DataError, match=r"filter.year: .* holds NaN, which equals no value"):
        c.mask({"year": want})
    with pytest.raises(DataError, match=r"filter.year: .* holds NaN"):
        c.check_filter_kinds({"year": want})


def test_filter_nan_in_a_pandas_series_is_refused_in_one_line() -> None:
    pd = pytest.importorskip("pandas")
    c = Corpus(ids=["a", "b"], texts=["x"] * 2, metadata={"year": [2001, None]})
    with pytest.raises(DataError, match=r"filter.year: Series\(\[nan, 2001.0\]\) holds NaN") as e:
        c.mask({"year": pd.Series([np.nan, 2001])})
    assert "\n" not in str(e.value)
    assert c.mask({"year": pd.Series([2001])}).tolist() == [True, False]
    assert c.mask({"year": iter([2001])}).tolist() == [True, False]  # (an iterator: read once, by the mask)


def test_numpy_date_filters_on_a_numpy_date_column() -> None:
    ns = np.array(["2020-01-01T00:00:00.000000001"] * 2 + ["2021-01-01"], dtype="datetime64[ns]")
    day = np.array(["2020-01-01", "2021-01-01", "NaT"], dtype="datetime64[D]")
    c = Corpus(ids=["a", "b", "c"], texts=["x"] * 3,
               metadata={"ns": ns, "day": day, "dur": np.array([1, 2, 3], dtype="timedelta64[s]")})
    assert c.mask({"ns": np.datetime64("2020-01-01T00:00:00.000000001")}).tolist() == [True, True, False]
    assert c.mask({"ns": [np.datetime64("2021-01-01")]}).tolist() == [False, False, True]
    assert c.mask({"day": np.datetime64("2021-01-01")}).tolist() == [False, True, False]
    assert c.mask({"day": np.datetime64("2020-01-01T00:00", "m")}).tolist() == [True, False, False]
    assert c.mask({"day": None}).tolist() == [False, False, True]
    assert c.mask({"dur": np.timedelta64(2000, "ms")}).tolist() == [False, True, False]
    c.check_filter_kinds({"ns": np.datetime64("2020-01-01T00:00:00.000000001"), "day": np.datetime64("2020-01-01")})
    with pytest.raises(DataError, match=r"filter.day: the field holds dates \(datetime64\[D\]\); got "
                                        r"np.datetime64\('2020-01-01T12:00'\) \(datetime64\), which is not a whole "
                                        r"datetime64\[D\] value"):
        c.mask({"day": np.datetime64("2020-01-01T12:00")})  # (a noon is no day)


def test_run_by_hand_refuses_nan_among_float32_scores_and_from_dict_checks_once(monkeypatch) -> None:
    import ragkit.run as run_mod
    from ragkit import Run
    from ragkit.types import Ranking

    with pytest.raises(DataError, match=r"Run: query '2' gives document 'c' the score nan; expected numbers"):
        Run(["1", "2"], [np.array(["a"], dtype=object), np.array(["b", "c"], dtype=object)],
            [np.array([1.0], np.float32), np.array([1.0, np.nan], np.float32)])
    calls = []
    real = run_mod._check_nan_scores
    monkeypatch.setattr(run_mod, "_check_nan_scores", lambda *a: (calls.append(1), real(*a))[1])
    Run(["1"], [np.array(["a"], dtype=object)], [np.array([1.0], np.float32)])
    assert len(calls) == 1
    Run.from_dict({"1": {"a": 1.0}})  # (from_dict checked its scores itself: not joined again)
    ranking = Ranking(rows=np.array([0]), scores=np.array([1.0], np.float32))
    Run.from_rankings(["1"], [ranking], np.array(["a"], dtype=object),  # (search's runs: no new work; one of
                      _nan_checked=True, _ids_checked=True)  # one's own rankings is checked, since s55)
    assert len(calls) == 1


def test_run_scores_of_two_dimensions_are_named_by_shape_not_by_a_false_count() -> None:
    from ragkit import Run

    with pytest.raises(DataError, match=r"Run: query '1' has scores of shape \(1, 2\); expected a 1-D array"):
        Run(["1"], [np.array(["a", "b"], dtype=object)], [np.array([[1.0, 2.0]])])
    with pytest.raises(DataError, match=r"Run: query '1' has scores of shape \(2, 1\); expected a 1-D array"):
        Run(["1"], [["a", "b"]], [[[1.0], [2.0]]])  # type: ignore[list-item]
    with pytest.raises(DataError, match=r"Run: query '1' has 2 document ids and 1 scores"):
        Run(["1"], [["a", "b"]], [[1.0]])  # type: ignore[list-item]
    with pytest.raises(DataError, match=r"Run: query '1' gives document 'b' the score nan"):
        Run(["1"], [["a", "b"]], [[1.0, float("nan")]])  # type: ignore[list-item]


def test_run_document_ids_in_an_object_array_are_written_as_strings_or_refused() -> None:
    from ragkit import Run, evaluate

    ids = np.empty(2, dtype=object)
    ids[:] = [1, 2.0]
    run = Run(["q", "r"], [np.array(["a"], dtype=object), ids], [[1.0], [2.0, 1.0]])  # type: ignore[list-item]
    assert run.doc_ids[1].tolist() == ["1", "2"] and run.doc_ids[1].dtype == object
    assert evaluate(run, {"r": {"1": 1}}).scores["ndcg@10"] == 1.0
    for bad, shown in ((None, "None"), (float("nan"), "nan")):
        ids = np.array(["a", bad], dtype=object)
        with pytest.raises(DataError, match=rf"Run: query 'r': Run.doc_ids\[1\]\[1\] is {shown}, not an id"):
            Run(["q", "r"], [np.array(["a"], dtype=object), ids], [[1.0], [2.0, 1.0]])  # type: ignore[list-item]


def test_record_id_missing_in_a_dataframe_falls_back_to_id() -> None:
    pd = pytest.importorskip("pandas")
    recs = pd.DataFrame([{"_id": "a", "text": "t"}, {"id": "b", "text": "u"}]).to_dict("records")
    assert Corpus.from_records(recs).ids.tolist() == ["a", "b"]
    recs = pd.DataFrame([{"_id": "a", "text": "t"}, {"id": None, "text": "u"}]).to_dict("records")
    with pytest.raises(DataError, match=r"Corpus.from_records: record 1 has '_id': nan and 'id': nan, expected a "
                                        r"document id"):
        Corpus.from_records(recs)
    with pytest.raises(DataError, match=r"Corpus.from_records: record 0 has 'id': nan, expected a document id"):
        Corpus.from_records([{"id": float("nan"), "text": "x"}])


@pytest.mark.parametrize("odd", [float("nan"), ("t", 1), np.array([1, 2]), np.float32(0.5)])
def test_one_odd_metadata_value_does_not_send_flat_lists_through_the_deep_copy(monkeypatch, odd) -> None:
    import ragkit._corpus as corpus_mod

    calls = []
    real = corpus_mod._nested_plain
    monkeypatch.setattr(corpus_mod, "_nested_plain", lambda v: (calls.append(v), real(v))[1])
    tags = [["a"], {"k": "v"}]
    c = Corpus(ids=["a", "b", "c"], texts=["x"] * 3, metadata={"tags": [tags[0], odd, tags[1]]})
    assert not [v for v in calls if v is tags[0] or v is tags[1]]  # (a copy each, by .copy())
    assert len(calls) == (3 if type(odd) is tuple else 0)  # (the tuple, as a list, and its two elements)
    assert c.metadata["tags"][0] == ["a"] and c.metadata["tags"][0] is not tags[0]
    assert c.metadata["tags"][2] == {"k": "v"} and c.metadata["tags"][2] is not tags[1]
    tags[0].append("b")
    assert c.mask({"tags": "b"}).tolist() == [False, False, False]
    meta = {"x": [1]}
    d = Corpus(ids=["a", "b"], texts=["x"] * 2, metadata={"deep": [meta, odd]})
    meta["x"].append(2)  # (a list inside a dict: copied at depth still)
    assert d.metadata["deep"][0] == {"x": [1]}


def test_filter_nan_check_reads_arrays_and_ranges_by_their_dtype_not_value_by_value(monkeypatch) -> None:
    import ragkit.metadata as metadata_mod
    from ragkit.metadata import check_filter

    calls = []
    real = metadata_mod.filter_values
    monkeypatch.setattr(metadata_mod, "filter_values", lambda w: (calls.append(1), real(w))[1])
    for want in (np.arange(10), range(10), np.array(["a", "b"]), np.array(["2020-01-01"], dtype="datetime64[D]"),
                 np.array([1.0, 2.0], np.float32)):
        check_filter({"year": want})
    assert calls == []
    for want in ([1, np.float32("nan")], np.array([1, float("nan")], dtype=object), {float("nan")}):
        with pytest.raises(DataError, match=r"filter.year: .* holds NaN"):
            check_filter({"year": want})
    with pytest.raises(DataError, match=r"filter.year: .* holds NaN"):
        check_filter({"year": np.array([[1.0, np.nan]])})
    pd = pytest.importorskip("pandas")
    calls.clear()
    check_filter({"year": pd.Series([2001, 2002])})
    assert calls == []
    with pytest.raises(DataError, match=r"filter.year: .* holds NaN"):
        check_filter({"year": pd.Series([2001, float("nan")], dtype=object)})


def test_from_documents_keeps_a_non_finite_metadata_id_beside_the_documents_own_id() -> None:
    class Doc:
        def __init__(self, text: str, metadata: dict, id: object = None) -> None:
            self.page_content, self.metadata, self.id = text, metadata, id

    c = Corpus.from_documents([Doc("a", {"id": float("inf")}, id="7"), Doc("b", {"id": "8"}, id="8")])
    assert c.ids.tolist() == ["7", "8"] and c.metadata["id"].tolist() == [float("inf"), None]
    with pytest.raises(DataError, match=r"Corpus.from_documents: ids\[0\] is inf, not an id"):
        Corpus.from_documents([Doc("a", {"id": float("inf")})])


def test_python_and_pandas_dates_filter_a_numpy_date_column() -> None:
    import datetime as dt

    ns = np.array(["2020-01-01", "2020-01-01T10:00", "2021-01-01"], dtype="datetime64[ns]")
    day = np.array(["2020-01-01", "2021-01-01", "NaT"], dtype="datetime64[D]")
    c = Corpus(ids=["a", "b", "c"], texts=["x"] * 3,
               metadata={"ns": ns, "day": day, "dur": np.array([1, 2, 3], dtype="timedelta64[s]")})
    assert c.mask({"ns": dt.datetime(2020, 1, 1, 10)}).tolist() == [False, True, False]
    assert c.mask({"ns": dt.date(2021, 1, 1)}).tolist() == [False, False, True]
    assert c.mask({"day": dt.date(2020, 1, 1)}).tolist() == [True, False, False]
    assert c.mask({"day": dt.datetime(2021, 1, 1)}).tolist() == [False, True, False]
    assert c.mask({"dur": dt.timedelta(seconds=2)}).tolist() == [False, True, False]
    c.check_filter_kinds({"ns": dt.date(2020, 1, 1), "day": [dt.date(2020, 1, 1)], "dur": dt.timedelta(0)})
    with pytest.raises(DataError, match=r"filter.day: the field holds dates \(datetime64\[D\]\); got "
                                        r"datetime.datetime\(2020, 1, 1, 12"):
        c.mask({"day": dt.datetime(2020, 1, 1, 12)})  # (a noon is no day)
    pd = pytest.importorskip("pandas")
    assert c.mask({"ns": pd.Timestamp("2020-01-01T10:00")}).tolist() == [False, True, False]
    assert c.mask({"ns": pd.Series(pd.to_datetime(["2020-01-01", "2021-01-01"]))}).tolist() == [True, False, True]
    assert c.mask({"day": pd.Timestamp("2021-01-01")}).tolist() == [False, True, False]
    assert c.mask({"dur": pd.Timedelta(seconds=3)}).tolist() == [False, False, True]
    assert c.mask({"ns": pd.NaT}).tolist() == [False, False, False]


def test_metadata_with_missing_values_but_no_lists_does_not_look_for_flat_lists(monkeypatch) -> None:
    import ragkit._corpus as corpus_mod

    calls = []
    real = corpus_mod._flat_plain
    monkeypatch.setattr(corpus_mod, "_flat_plain", lambda v: (calls.append(1), real(v))[1])
    c = Corpus(ids=["a", "b"], texts=["x"] * 2, metadata={"lang": ["en", float("nan")]})
    assert calls == []  # (strings beside NaN: no list nor dict to look into)
    assert c.metadata["lang"].tolist() == ["en", None]
    assert c.mask({"lang": "en"}).tolist() == [True, False]
    Corpus(ids=["a", "b"], texts=["x"] * 2, metadata={"tags": [["a"], float("nan")]})
    assert calls == [1]  # (a list beside NaN: looked into once)


def test_runs_cut_from_checked_runs_are_not_checked_again(monkeypatch) -> None:
    import ragkit.run as run_mod
    from ragkit import Run, evaluate
    from ragkit.eval.metrics import drop_identical_ids, per_query_ndcg
    from ragkit.types import Ranking, State

    ids = np.array(["a", "b", "c"], dtype=object)
    state = State(["x", "y"], ["1", "2"], rankings=[
        Ranking(rows=np.array([0, 1, 2]), scores=np.array([3.0, 2.0, 1.0], np.float32)),
        Ranking(rows=np.array([2, 0]), scores=np.array([2.0, 1.0], np.float32))])
    qrels = {"1": {"a": 1}, "2": {"a": 1}}
    run = Run(["1", "2"], [np.array(["a", "1", "c"], dtype=object), np.array(["c", "a"], dtype=object)],
              [np.array([3.0, 2.0, 1.0], np.float32), np.array([2.0, 1.0], np.float32)])
    nan_calls, id_calls = [], []
    real_nan, real_ids = run_mod._check_nan_scores, run_mod._checked_doc_ids
    monkeypatch.setattr(run_mod, "_check_nan_scores", lambda *a: (nan_calls.append(1), real_nan(*a))[1])
    monkeypatch.setattr(run_mod, "_checked_doc_ids", lambda *a: (id_calls.append(1), real_ids(*a))[1])
    seen = {}

    def step(name: str) -> None:
        seen[name] = (len(nan_calls), len(id_calls))
        nan_calls.clear()
        id_calls.clear()

    assert per_query_ndcg(state, qrels, ids).tolist() == pytest.approx([1.0, 1 / np.log2(3)])
    step("per_query_ndcg")  # (_with_ties_at refused NaN; the corpus ids, given, are still checked)
    head = run.head(1)
    step("head")
    assert head.doc_ids[0].tolist() == ["a"] and head.scores[1].tolist() == [2.0]
    assert drop_identical_ids(run).doc_ids[0].tolist() == ["a", "c"]
    step("drop_identical_ids")
    assert evaluate(run, qrels, ["ndcg@1"]).scores["ndcg@1"] == 0.5  # (cut to its ties at 2 by _cut_run)
    step("evaluate")
    assert seen == {"per_query_ndcg": (0, 1), "head": (0, 0), "drop_identical_ids": (0, 0), "evaluate": (0, 0)}


def test_run_document_ids_are_joined_once_and_looked_at_only_when_the_join_fails(monkeypatch) -> None:
    import ragkit.run as run_mod
    from ragkit import Run

    calls = []
    for name in ("check_id_surrogates", "check_id_nul"):
        real = getattr(run_mod, name)
        monkeypatch.setattr(run_mod, name, lambda *a, _real=real, _name=name: (calls.append(_name), _real(*a))[1])
    ints = np.empty(2, dtype=object)
    ints[:] = [1, 2]
    run = Run(["q", "r"], [np.array(["a", "é"], dtype=object), ints], [[1.0, 0.5], [2.0, 1.0]])
    assert calls == []  # (ASCII, other Unicode and ints written as strings: clean)
    assert run.doc_ids[1].tolist() == ["1", "2"]
    with pytest.raises(DataError, match=r"query 'r': Run.doc_ids\[1\]\[0\] is 'b\\x00c', which holds a NUL"):
        Run(["q", "r"], [np.array(["a"], dtype=object), np.array(["b\x00c"], dtype=object)], [[1.0], [1.0]])
    with pytest.raises(DataError, match=r"query 'q': Run.doc_ids\[0\]\[0\] is '\\udcff', which holds a lone "):
        Run(["q"], [np.array(["\udcff"], dtype=object)], [[1.0]])
    assert {"check_id_nul", "check_id_surrogates"} <= set(calls)  # (a join that fails: looked at to name the id)
