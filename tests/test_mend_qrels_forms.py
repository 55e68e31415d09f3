"""Qrels in every form ``evaluate`` reads, everywhere qrels are taken; the hints of a refused qrels table.

``search(..., trace=True, qrels=df)`` refused the DataFrame ``evaluate(run, df)`` accepts, with the frame's
flattened repr as its preview; a qrels table with two document-id columns (``doc`` holding texts, ``docno``
the ids) was told to drop the later one, the ids; and ``Run.learned_from`` hashed every query's normalised text
only to throw it away.  Model-free: BM25 on a tiny corpus built here.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from ragkit import Corpus, Queries
from ragkit.errors import DataError
from ragkit.pipelines import Pipeline
from ragkit.retrievers import BM25
from ragkit.types import TrainSet, as_qrels, check_qrels

pd = pytest.importorskip("pandas")

QRELS = {"q0": {"a": 2, "b": 0}, "q1": {"c": 1}}


def _corpus() -> Corpus:
    return Corpus(ids=["a", "b", "c", "d"], texts=["red apples", "green apple pie", "running shoes", "a runner runs"])


def _frame(columns: tuple[str, str, str] = ("query_id", "doc_id", "relevance")) -> "pd.DataFrame":
    rows = [(q, d, g) for q, rel in QRELS.items() for d, g in rel.items()]
    return pd.DataFrame(rows, columns=list(columns))


def _scores(run) -> list[tuple[str, float | None, float | None, int]]:
    return [(e.path, e.recall, e.ndcg, e.n_judged) for e in run.trace]


@pytest.mark.parametrize("columns", [("query_id", "doc_id", "relevance"), ("qid", "docno", "label"),
                                     ("query-id", "corpus-id", "score")])
def test_search_trace_reads_a_qrels_dataframe_as_evaluate_does(columns):
    bm = BM25(k=4).fit(_corpus())
    queries = {"q0": "apple", "q1": "runs"}
    expected = _scores(bm.search(queries, trace=True, qrels=QRELS))
    assert any(r is not None for _, r, _, _ in expected)
    assert _scores(bm.search(queries, trace=True, qrels=_frame(columns))) == expected
    pipe = Pipeline([BM25(k=4)]).fit(_corpus())
    assert _scores(pipe.search(queries, trace=True, qrels=_frame(columns))) == \
        _scores(pipe.search(queries, trace=True, qrels=QRELS))


def test_search_trace_reads_a_qrels_file(tmp_path):
    bm = BM25(k=4).fit(_corpus())
    queries = {"q0": "apple", "q1": "runs"}
    path = tmp_path / "judged.csv"
    _frame().to_csv(path, index=False)
    assert _scores(bm.search(queries, trace=True, qrels=path)) == _scores(bm.search(queries, trace=True, qrels=QRELS))
    assert _scores(bm.search(queries, trace=True, qrels=str(path))) == \
        _scores(bm.search(queries, trace=True, qrels=QRELS))


def test_search_refuses_a_bad_qrels_table_naming_its_columns():
    bm = BM25(k=4).fit(_corpus())
    frame = _frame(("query", "document", "relevance"))
    with pytest.raises(DataError, match=r"^search: the qrels DataFrame needs a column for each .*got columns "
                                        r"\['query', 'document', 'relevance'\]"):
        bm.search({"q0": "apple"}, trace=True, qrels=frame)


def test_a_dataframe_where_only_a_mapping_is_read_is_shown_by_its_rows_and_columns():
    frame = _frame()
    with pytest.raises(DataError) as e:
        check_qrels(frame, "load_result")
    message = str(e.value)
    assert "a pandas DataFrame of 3 rows (columns ['query_id', 'doc_id', 'relevance'])" in message
    assert "q0 d0" not in message and "0  " not in message  # (not the flattened repr)
    assert "as_qrels(df" in message
    with pytest.raises(DataError, match=r"^evaluate: qrels must be a mapping \{query_id: \{doc_id: grade\}\}, got an "
                                        r"int \(5\) \(or pass a DataFrame with one row per judgement, or a qrels "
                                        r"file's path\)$"):
        as_qrels(5, "evaluate")
    with pytest.raises(DataError, match=r"a pandas Series of 3 rows \(name 'relevance'\)"):
        as_qrels(frame["relevance"], "evaluate")


def test_two_id_columns_are_both_named_with_a_drop_keeping_each():
    queries = {"q1": "apple", "q2": "runs"}
    frame = pd.DataFrame({"qid": ["q1", "q2"], "doc": ["red apples", "a runner runs"], "docno": ["a", "d"],
                          "label": [1, 1]})
    with pytest.raises(DataError) as e:
        TrainSet(queries, frame)
    message = str(e.value)
    assert "2 columns named as document ids ('doc' and 'docno'" in message
    assert "(first row: doc='red apples', docno='a')" in message
    assert message.endswith("keep the one that holds the document ids and drop the other: "
                            "df.drop(columns=['docno']) keeps 'doc', df.drop(columns=['doc']) keeps 'docno'")
    kept = frame.drop(columns=["doc"])  # (the drop the message names to keep the ids)
    assert TrainSet(queries, kept).qrels == {"q1": {"a": 1}, "q2": {"d": 1}}
    three = frame.assign(docid=["x", "y"])
    with pytest.raises(DataError, match=re.escape("drop the others: df.drop(columns=['docno', 'docid']) keeps "
                                                  "'doc', df.drop(columns=['doc', 'docid']) keeps 'docno', "
                                                  "df.drop(columns=['doc', 'docno']) keeps 'docid'")):
        TrainSet(queries, three)


def test_two_id_columns_of_a_csv_file_are_told_how_to_drop_from_the_file(tmp_path):
    path = tmp_path / "judged.csv"
    path.write_text("qid,doc,docno,label\nq1,red apples,a,1\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        TrainSet({"q1": "apple"}, path)
    message = str(e.value)
    assert "(first row: doc='red apples', docno='a')" in message
    assert "pandas.read_csv(path).drop(columns=['doc']) (passed as qrels) keeps 'docno'" in message


class _Taught:
    """An operator's stand-in that learned from ``queries`` (what :func:`learned_query_ids` reads of it)."""

    def __init__(self, digests: np.ndarray) -> None:
        self.trained_on_ = digests

    def children(self) -> list:
        return []


def test_learned_query_ids_hashes_no_normalised_text(monkeypatch):
    """Only the queries not learned by id and text have their normalised text hashed (to find a learned question
    under another id), and none when the taught digests have no text column (saved before it was recorded).  (It
    patched ragkit._fingerprints.normalised_text, which learned_query_ids does not call: it passed whatever was
    hashed.)"""
    import ragkit.run
    from ragkit._fingerprints import query_digests, query_id_digests
    from ragkit.run import learned_query_ids

    taught = Queries(["q1", "q2"], ["apple", "Runs  fast"])
    both = query_digests(taught)
    assert np.array_equal(query_id_digests(taught.ids, taught.texts), both[:, 0])
    op = _Taught(both)
    hashed: list[str] = []
    real = ragkit.run.normalised_text

    def recorded(text: str) -> str:
        hashed.append(text)
        return real(text)

    monkeypatch.setattr(ragkit.run, "normalised_text", recorded)  # (the name learned_query_ids calls)
    found = learned_query_ids(op, ["q0", "q2", "q1", "q3"], ["pear", "Runs  fast", "apple", "apple"])
    assert found == ["q2", "q1"] and found.same_text == ["q3"]  # (q3: q1's text under another id)
    assert hashed == ["pear", "apple"]  # q0's and q3's texts, not those of q2 and q1, learned by id
    hashed.clear()
    assert learned_query_ids(op, ["q2", "q1"], ["Runs  fast", "apple"]) == ["q2", "q1"] and hashed == []
    found = learned_query_ids(_Taught(both[:, 0]), ["q2", "q0"], ["Runs  fast", "apple"])  # (saved before: one column)
    assert found == ["q2"] and found.same_text == [] and hashed == []
