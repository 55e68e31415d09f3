"""Run[query_id] and Run.to_pandas (to go in ragkit/run.py's tests once the patch is applied)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ragkit import Corpus, Run
from ragkit.errors import DataError, InputTypeError


@pytest.fixture()
def run() -> Run:
    return Run(["1", "q2", "q3"], [np.array(["d2", "d0"], dtype=object), np.array([], dtype=object),
                                   np.array(["d1"], dtype=object)],
               [np.array([2.5, 1.0], np.float32), np.array([], np.float32), np.array([0.5], np.float32)])


def test_run_getitem_is_what_iteration_gives_for_the_query(run: Run) -> None:
    for qid, doc_ids, scores in run:
        got_docs, got_scores = run[qid]
        assert got_docs is doc_ids and got_scores is scores
    assert run[1][0].tolist() == ["d2", "d0"]  # ids are strings: 1 is "1"
    assert run[np.int64(1)][1].tolist() == [2.5, 1.0]


def test_run_getitem_unknown_or_wrong_type(run: Run) -> None:
    with pytest.raises(KeyError, match="'nope' is not in the run of 3 queries"):
        run["nope"]
    with pytest.raises(InputTypeError, match=r"takes a query id.*run\[run.query_ids\[i\]\]"):
        run[1.5]  # type: ignore[index]
    with pytest.raises(InputTypeError):
        run[:2]  # type: ignore[index]


def test_run_to_pandas_long_format(run: Run) -> None:
    pytest.importorskip("pandas")
    df = run.to_pandas()
    assert list(df.columns) == ["query_id", "doc_id", "rank", "score"]
    assert df["query_id"].tolist() == ["1", "1", "q3"]
    assert df["doc_id"].tolist() == ["d2", "d0", "d1"]
    assert df["rank"].tolist() == [1, 2, 1]
    assert df["score"].tolist() == [2.5, 1.0, 0.5]


def test_run_to_pandas_with_corpus(run: Run) -> None:
    pytest.importorskip("pandas")
    corpus = Corpus(["d0", "d1", "d2"], ["t0", "t1", "t2"], titles=["A", "", "C"])
    df = run.to_pandas(corpus)
    assert list(df.columns) == ["query_id", "doc_id", "rank", "score", "title", "text"]
    assert df["text"].tolist() == ["t2", "t0", "t1"] and df["title"].tolist() == ["C", "A", ""]
    with pytest.raises(DataError, match="Run.to_pandas: document id 'd2' is not in the corpus"):
        run.to_pandas(Corpus(["d0", "d1"], ["a", "b"]))
    with pytest.raises(InputTypeError, match="corpus must be a Corpus"):
        run.to_pandas({"d0": "x"})  # type: ignore[arg-type]


def test_run_to_pandas_empty() -> None:
    pytest.importorskip("pandas")
    df = Run([], [], []).to_pandas()
    assert len(df) == 0 and list(df.columns) == ["query_id", "doc_id", "rank", "score"]


def test_run_to_pandas_without_pandas(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="Run.to_pandas needs pandas"):
        run.to_pandas()


def test_run_to_pandas_on_a_real_search() -> None:
    pytest.importorskip("pandas")
    from ragkit.retrievers import BM25

    corpus = Corpus.from_texts({"a": "vitamin b12", "b": "homocysteine levels", "c": "vitamin d"})
    run = BM25(k=2).fit(corpus).search({"x": "vitamin", "y": "homocysteine"})
    df = run.to_pandas(corpus)
    assert df.groupby("query_id")["rank"].max().to_dict() == {q: len(d) for q, d, _ in run}
    first = df[df["query_id"] == "x"].iloc[0]
    assert first["doc_id"] == run["x"][0][0] and first["text"] in ("vitamin b12", "vitamin d")
