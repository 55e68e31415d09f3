"""Metadata as a daily pipeline meets it: list columns read from parquet, pandas' missing values, values a
save cannot write, and the int8 clipping warning of one-document adds.  Each filter answers the same before
and after a save (a saved corpus reads lists back as lists, missing values as None)."""

from __future__ import annotations

import datetime
import logging

import numpy as np
import pandas as pd
import pytest
from conftest import HashedEncoder
from langchain_core.documents import Document

from ragkit import Corpus
from ragkit.encoders import register_encoder
from ragkit.errors import DataError
from ragkit.eval.beir import read_corpus
from ragkit.integrations.langchain import RagkitRetriever
from ragkit.metadata import _values_kinds, check_kinds, is_missing
from ragkit.retrievers import BM25, Dense

register_encoder("metadata-daily-hashed", HashedEncoder("metadata-daily-hashed-v1", 32, unit=False), replace=True)


def _saved(c: Corpus, tmp_path, name: str = "c.jsonl") -> Corpus:
    c.save(tmp_path / name)
    return read_corpus(tmp_path / name)


def _same_before_and_after_save(c: Corpus, tmp_path, where: dict) -> list[bool]:
    before = c.mask(where).tolist()
    assert _saved(c, tmp_path).mask(where).tolist() == before, where
    return before


def test_a_list_column_read_from_parquet_matches_its_elements(tmp_path):
    """``pd.read_parquet`` gives a list column as a numpy array per cell: ``{"tags": "bio"}`` matched no
    document (150 expected in the reviewer's run), and did after a save (written as lists)."""
    df = pd.DataFrame({"_id": ["a", "b", "c", "d"], "text": ["t"] * 4,
                       "tags": [["bio", "med"], ["med"], [], ["bio"]]})
    df.to_parquet(tmp_path / "d.parquet")
    back = pd.read_parquet(tmp_path / "d.parquet")
    assert isinstance(back.tags[0], np.ndarray)
    recs = [{"_id": r["_id"], "text": r["text"], "metadata": {"tags": r["tags"]}} for r in back.to_dict("records")]
    for c in (Corpus.from_records(recs), Corpus(ids=back._id, texts=back.text, metadata={"tags": back.tags}),
              Corpus.from_texts(back.text.tolist(), tags=back.tags)):
        assert c.metadata["tags"][0] == ["bio", "med"] and type(c.metadata["tags"][0]) is list
        assert _same_before_and_after_save(c, tmp_path, {"tags": "bio"}) == [True, False, False, True]
        assert c.mask({"tags": ["med", "x"]}).tolist() == [True, True, False, False]
        assert c.mask({"tags": [["bio"]]}).tolist() == [False, False, False, True]  # the whole list, as before


def test_a_tuple_value_is_a_list_as_a_save_reads_it_back(tmp_path):
    """A tuple was compared whole in memory (``{"f": "y"}`` refused: "the field holds tuple values") but by
    element after a save, which writes it as a list."""
    c = Corpus.from_texts(["a", "b", "c"], f=[("x", "y"), ("y",), ("z",)])
    assert _same_before_and_after_save(c, tmp_path, {"f": "y"}) == [True, True, False]
    assert c.mask({"f": [("y",)]}).tolist() == [False, True, False]  # a tuple filter value: the whole list


@pytest.mark.parametrize("column", [["x", np.nan, None, "y"], ["x", pd.NA, None, "y"],
                                    [1.0, np.nan, None, 2.0], pd.array([1, None, None, 2], dtype="Int64"),
                                    pd.Series(["x", np.nan, None, "y"]),
                                    pd.Series(pd.to_datetime(["2020-01-01", None, None, "2021-01-01"]))])
def test_a_missing_value_is_none_before_a_save_as_after(column, tmp_path):
    """pandas' missing values (NaN in an object column, ``pd.NA``, ``NaT``): ``{"f": None}`` matched only a real
    None in memory, and every missing value after a save (written as null)."""
    c = Corpus.from_texts(["a", "b", "c", "d"], f=column)
    assert c.metadata["f"].tolist()[1:3] == [None, None]
    assert c.mask({"f": None}).tolist() == [False, True, True, False]
    assert c.mask({"f": pd.NA}).tolist() == c.mask({"f": [None]}).tolist() == [False, True, True, False]
    if isinstance(c.metadata["f"][0], pd.Timestamp):  # (a Timestamp cannot be saved)
        assert c.mask({"f": pd.Timestamp("2020-01-01")}).tolist() == [True, False, False, False]
        assert c.mask({"f": np.datetime64("2021-01-01")}).tolist() == [False, False, False, True]
        return
    assert _same_before_and_after_save(c, tmp_path, {"f": None}) == [False, True, True, False]


def test_a_float_column_with_nan_matches_none_before_a_save_as_after(tmp_path):
    """A float array keeps its dtype (and its NaN): ``{"f": None}`` matches the NaN, as it matches the None a
    saved corpus reads back."""
    c = Corpus(["0", "1", "2"], ["a", "b", "c"], metadata={"f": np.array([1.0, np.nan, 2.0])})
    assert c.metadata["f"].dtype == np.float64
    assert _same_before_and_after_save(c, tmp_path, {"f": None}) == [False, True, False]
    assert _same_before_and_after_save(c, tmp_path, {"f": [None, 2]}) == [False, True, True]
    assert c.mask({"f": 1}).tolist() == [True, False, False]


def test_pd_na_is_saved_as_null(tmp_path):
    """``pd.NA`` could not be saved ("metadata field 'f' holds a NAType"), though a missing value may be None,
    NaN or pd.NA."""
    from ragkit._corpus import _jsonable

    assert _jsonable(pd.NA) is None and _jsonable(pd.NaT) is None and _jsonable(np.datetime64("NaT")) is None
    c = Corpus.from_records([{"_id": "a", "text": "x", "metadata": {"f": pd.NA}},
                             {"_id": "b", "text": "y", "metadata": {"f": "v"}}])
    assert _saved(c, tmp_path).metadata["f"].tolist() == [None, "v"]


def test_a_save_names_the_document_whose_value_it_cannot_write(tmp_path):
    """A Timestamp column fits and filters, but its save failed naming no document."""
    c = Corpus.from_texts(["cell a", "cell b"], ids=["d1", "d2"], ts=[pd.Timestamp("2020-01-01"), pd.NaT])
    b = BM25().fit(c)
    assert b.search(["cell"], filter={"ts": pd.Timestamp("2020-01-01")}).doc_ids[0].tolist() == ["d1"]
    with pytest.raises(DataError, match=r"Corpus.save: document 'd1': metadata field 'ts' holds a Timestamp "
                                        r".*value.isoformat\(\)"):
        b.save(tmp_path / "b")
    with pytest.raises(DataError, match=r"document 'd2': metadata field 'when' holds a datetime64"):
        Corpus.from_texts(["a", "b"], ids=["d1", "d2"], when=[None, np.datetime64("2020-01-01")]).save(
            tmp_path / "c.jsonl")


def test_the_retriever_refuses_a_value_its_save_could_not_write():
    """``add_documents`` took a Timestamp, and every later save of the retriever failed; it is refused up front,
    naming the document, the field and the value, and the index is left as it was."""
    r = RagkitRetriever(pipeline=BM25(k=5), corpus=[Document(page_content="cell growth", id="a")], k=5)
    for value in (pd.Timestamp("2024-01-01"), datetime.date(2024, 1, 1), np.datetime64("2024-01-01"), float("inf")):
        with pytest.raises(DataError, match=r"add_documents: document 'ts1': metadata field 'ts' holds .*refused "
                                            "before indexing"):
            r.add_documents([Document(page_content="y", id="ok"), Document(page_content="y", id="ts1",
                                                                             metadata={"ts": value})])
    with pytest.raises(DataError, match=r"document 't2': metadata field 'tags' holds a Timestamp"):
        r.add_documents([Document(page_content="y", id="t2", metadata={"tags": ["x", pd.Timestamp("2024-01-01")]})])
    with pytest.raises(ValueError, match=r"corpus: document 'b': metadata field 'ts' holds a Timestamp"):  # pydantic
        RagkitRetriever(pipeline=BM25(k=5), corpus=[Document(page_content="x", id="b",
                                                             metadata={"ts": pd.Timestamp("2024-01-01")})])
    assert r.add_documents([Document(page_content="z", id="ok2", metadata={"ts": "2024-01-01", "n": np.int64(3),
                                                                            "tags": ["x"], "x": pd.NA})]) == ["ok2"]
    assert [d.id for d in r.invoke("cell")] == ["a"]


def test_missing_markers_are_no_kind(caplog):
    """The mixed-kinds warning and refusal counted NaT, pd.NA and NaN as kinds: "holds NaTType values and
    Timestamp values", "float and str", "NAType and str"."""
    ts = pd.Timestamp("2020-01-01")
    assert _values_kinds([ts, pd.NaT]) == {"Timestamp"} and _values_kinds(["a", pd.NA, np.nan]) == {"str"}
    assert is_missing(pd.NaT) and is_missing(np.datetime64("NaT")) and not is_missing(np.datetime64("2020-01-01"))
    with pytest.raises(DataError, match=r"the field holds str values; got 1"):
        check_kinds("f", {"a": 0, np.nan: 1, pd.NA: 2, pd.NaT: 3}, [1])
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        c = Corpus.from_texts(["a", "b", "c"], ts=pd.Series(pd.to_datetime(["2020-01-01", None, "2021-01-01"])),
                              s=["x", np.nan, pd.NA])
        assert c.mask({"ts": ts}).tolist() == [True, False, False]
        assert c.mask({"s": "x"}).tolist() == [True, False, False]
    assert not [r for r in caplog.records if r.name == "ragkit"]


def _dense_corpus(n: int, start: int = 0) -> Corpus:
    return Corpus([f"d{start + i}" for i in range(n)], [f"text {start + i} about cell {i % 7}" for i in range(n)])


def test_the_clipping_warning_counts_the_adds_since_the_fit(caplog):
    """Calibrated on 300 documents, each one-document add warned that 1.3-2.3% of its coordinates were clipped
    (a 20-document add did not): one document's share is noise.  The adds since the fit are counted together,
    and the warning comes once, when the running share crosses the line."""
    d = Dense(model="metadata-daily-hashed", dtype="i8", search="exact").fit(_dense_corpus(300))
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        for i in range(40):
            d.add(_dense_corpus(1, start=300 + i))
    msgs = [r.getMessage() for r in caplog.records if r.name == "ragkit"]
    assert len(msgs) <= 1, msgs
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):  # a calibration on 3 documents: adds clip a lot
        d = Dense(model="metadata-daily-hashed", dtype="i8", search="exact").fit(_dense_corpus(3))
        for i in range(30):
            d.add(_dense_corpus(1, start=3 + i))
    msgs = [r.getMessage() for r in caplog.records if r.name == "ragkit"]
    assert len(msgs) == 1 and "refit on the whole corpus" in msgs[0] and "added documents since the fit" in msgs[0]


def test_an_add_keeps_a_float_fields_missing_values_findable(tmp_path):
    """After an add of documents without the field, a float column's NaN sat beside the new None in an object
    column: ``{"f": None}`` missed it until a save and load."""
    bm = BM25(k=5).fit(Corpus(ids=["a", "b"], texts=["red apple", "green apple"],
                              metadata={"f": np.array([1.0, np.nan])}))
    assert bm.corpus_.metadata["f"].dtype == np.float64  # (a float column keeps its NaN)
    bm.add(Corpus(ids=["c"], texts=["blue apple"]))
    assert bm.corpus_.metadata["f"].tolist() == [1.0, None, None]
    assert sorted(bm.search(["apple"], filter={"f": None}).doc_ids[0].tolist()) == ["b", "c"]
    bm.save(tmp_path / "bm")
    assert sorted(BM25.load(tmp_path / "bm").search(["apple"], filter={"f": None}).doc_ids[0].tolist()) == ["b", "c"]


@pytest.mark.parametrize("values", [np.array(["2020-01-01", "2021-01-01"], "datetime64[ns]"), np.array([b"x", b"y"]),
                                    np.array([1 + 2j, 3j])], ids=["datetime64", "bytes", "complex"])
def test_columns_a_save_cannot_write_are_refused_up_front_whatever_their_dtype(values, tmp_path):
    """A datetime64 column's tolist() gives ints, bytes were skipped by kind, and numpy scalars' item() went out
    unchecked: the retriever took them, and its save failed (a raw TypeError for bytes and complex)."""
    corpus = Corpus(ids=["a", "b"], texts=["red apple", "green apple"], metadata={"d": values})
    with pytest.raises(ValueError, match=r"document 'a': metadata field 'd' holds"):  # (pydantic's, of a DataError)
        RagkitRetriever(pipeline=BM25(k=2), corpus=corpus)
    with pytest.raises(DataError, match=r"Corpus\.save: document 'a': metadata field 'd' holds"):
        corpus.save(tmp_path / "c")
