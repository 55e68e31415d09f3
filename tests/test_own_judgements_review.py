"""A reviewer's own judged data (a CSV of ``query,doc,grade``) through ``TrainSet`` and ``evaluate``.

``inspect.signature(TrainSet)`` showed ``queries: 'Queries'``; ``evaluate`` refused the qrels DataFrame that
``TrainSet`` accepts; ``query_id``/``doc_id``/``relevance`` columns (``Run.to_pandas``'s spelling) were refused
with "rename them: df.rename(columns={...})"; a ``.csv`` path said "expected 3 tab-separated columns"; error
previews cut ids in half; ``True`` passed as a grade; and ``evaluate`` scored the queries a saved pipeline had
learned from without a word (``ragkit eval`` refuses them).  Model-free: BM25 on a tiny corpus built here.
"""

from __future__ import annotations

import inspect
import logging
import re

import pytest
from test_trainset_review import RRF_YAML, TOPICS, _corpus

from ragkit import Queries, Run, TrainSet, evaluate
from ragkit.errors import DataError
from ragkit.pipelines import Pipeline

pd = pytest.importorskip("pandas")


def _queries(n: int = len(TOPICS)) -> Queries:
    return Queries([str(11 + i) for i in range(n)], [f"What about {t}?" for t in TOPICS[:n]])


def _qrels(ids: list[str]) -> dict[str, dict[str, int]]:
    return {q: {str(1000 + 3 * (int(q) - 11)): 3, str(1001 + 3 * (int(q) - 11)): 0} for q in ids}


def _frame(qrels: dict[str, dict[str, int]], names: tuple[str, str, str] = ("query-id", "corpus-id", "score")):
    """The judgements as the reviewer's CSV holds them: one row per judgement, integer ids."""
    rows = [(int(q), int(d), g) for q, rel in qrels.items() for d, g in rel.items()]
    return pd.DataFrame(rows, columns=list(names))


# ------------------------------------------------------------------ 1. what the constructor accepts
def test_trainset_signature_says_what_it_accepts():
    params = inspect.signature(TrainSet).parameters
    queries, qrels = str(params["queries"].annotation), str(params["qrels"].annotation)
    assert "Mapping" in queries and "Series" in queries and "Queries" in queries
    assert "DataFrame" in qrels and "PathLike" in qrels and "Mapping" in qrels
    assert list(params) == ["queries", "qrels"]


# ------------------------------------------------------------------ 2. evaluate reads the qrels TrainSet reads
def test_evaluate_accepts_the_qrels_forms_trainset_accepts(tmp_path):
    queries, qrels = _queries(), _qrels(_queries().ids)
    run = Pipeline.from_yaml("pipeline:\n  - bm25: {k: 10}\n").fit(_corpus()).search(queries)
    want = evaluate(run, qrels, ["ndcg@10", "recall@10"]).per_query
    frame = _frame(qrels)
    assert evaluate(run, frame, ["ndcg@10", "recall@10"]).per_query == want
    assert TrainSet(queries, frame).qrels == qrels  # one conversion for both
    tsv = tmp_path / "test.tsv"
    frame.to_csv(tsv, sep="\t", index=False)
    assert evaluate(run, tsv, ["ndcg@10", "recall@10"]).per_query == want
    assert evaluate(run, str(tsv), ["ndcg@10", "recall@10"]).per_query == want


# ------------------------------------------------------------------ 3. column names, an index, a CSV path
@pytest.mark.parametrize("names", [("query_id", "doc_id", "relevance"), ("qid", "docno", "label"),
                                   ("QID", "docid", "grade"), ("query-id", "corpus_id", "rel")])
def test_common_qrels_column_spellings_are_read(names):
    queries, qrels = _queries(), _qrels(_queries().ids)
    frame = _frame(qrels, names).assign(annotator="x")  # another column: ignored
    assert TrainSet(queries, frame).qrels == qrels


def test_unknown_column_names_get_the_exact_rename():
    queries, qrels = _queries(), _qrels(_queries().ids)
    frame = _frame(qrels, ("query", "doc", "grade"))
    with pytest.raises(DataError, match=re.escape(
            "none named as query ids (the names accepted, case aside: query ids: query-id, query_id,")) as e:
        TrainSet(queries, frame)
    assert str(e.value).endswith("if 'query' holds the query ids: df.rename(columns={'query': 'query-id'})")
    with pytest.raises(DataError, match=re.escape(
            "if 'a' holds the query ids and 'b' holds the document ids: "
            "df.rename(columns={'a': 'query-id', 'b': 'corpus-id'})")):
        evaluate(Run.from_dict({"11": {"1000": 1.0}}), _frame(qrels, ("a", "b", "score")))
    with pytest.raises(DataError, match=re.escape("holds its query ids in its index ('query_id'), not in a column "
                                                  "(columns ['doc_id', 'relevance']); pass df.reset_index()")):
        TrainSet(queries, _frame(qrels, ("query_id", "doc_id", "relevance")).set_index("query_id"))
    with pytest.raises(DataError, match=r"has 2 columns named as query ids \('query-id' and 'qid'.*; keep the one that "
                                        r"holds the query ids .*df\.drop\(columns=\['qid'\]\) keeps 'query-id', "
                                        r"df\.drop\(columns=\['query-id'\]\) keeps 'qid'"):
        TrainSet(queries, _frame(qrels).assign(qid=1))
    run_frame = Run.from_dict({"11": {"1000": 0.5}}).to_pandas()
    with pytest.raises(DataError, match=r"a run's \(Run\.to_pandas.*not judgements"):
        evaluate(Run.from_dict({"11": {"1000": 1.0}}), run_frame)


def test_a_csv_path_is_read_by_its_header_or_told_how(tmp_path):
    queries, qrels = _queries(), _qrels(_queries().ids)
    good = tmp_path / "judgements.csv"
    _frame(qrels, ("query_id", "doc_id", "grade")).to_csv(good, index=False)
    assert TrainSet(queries, good).qrels == qrels
    assert TrainSet(queries, str(good)).qrels == qrels
    theirs = tmp_path / "theirs.csv"
    _frame(qrels, ("query", "doc", "grade")).to_csv(theirs, index=False)
    with pytest.raises(DataError, match=re.escape(
            "if 'query' holds the query ids: pass pandas.read_csv(path).rename(columns={'query': 'query-id'})")):
        TrainSet(queries, theirs)
    bare = tmp_path / "bare.csv"
    _frame(qrels).to_csv(bare, index=False, header=False)
    with pytest.raises(DataError, match=r"a CSV qrels file is read by its header.*got first line \['11', '1000', '3'\]"
                                        r".*pandas\.read_csv\(path, names=\['query-id', 'corpus-id', 'score'\]\)"):
        TrainSet(queries, bare)
    other = tmp_path / "judgements.txt"  # comma-separated under another name: said, with how to read it
    other.write_text("11,1000,3\n12,1003,3\n")
    with pytest.raises(DataError, match=r"looks comma-separated \(CSV: '11,1000,3'\).*pandas\.read_csv\(path\)"):
        TrainSet(queries, other)


# ------------------------------------------------------------------ 4. previews cut at an element
def test_error_previews_cut_at_an_element_boundary():
    qrels = {"11": {"32587939": 3}, "14": {"641786": 3}, "18": {"2294278": 3}, "20": {"1": 1}, "21": {"2": 1}}
    with pytest.raises(DataError) as e:
        TrainSet(_queries(), [qrels])
    assert "got a list ([{'11': {'32587939': 3}, '14': {'641786': 3}, ...}])" in str(e.value)
    with pytest.raises(DataError) as e:
        evaluate(Run.from_dict({"11": {"1000": 1.0}}), {"11": ["x" * 200]})
    assert re.search(r"is a list \(\['x+'\.\.\.\]\)", str(e.value)), str(e.value)


# ------------------------------------------------------------------ 5. a bool is no grade; negative grades are
def test_bool_grades_are_refused_and_negative_grades_kept():
    queries = _queries(2)
    with pytest.raises(DataError, match=r"TrainSet: qrels\['11'\]\['1000'\] = True is a bool, not an integer "
                                        r"relevance grade"):
        TrainSet(queries, {"11": {"1000": True}})
    with pytest.raises(DataError, match=r"evaluate: qrels\['11'\]\['1000'\] = False is a bool"):
        evaluate(Run.from_dict({"11": {"1000": 1.0}}), {"11": {"1000": False}})
    with pytest.raises(DataError, match="is a bool"):
        TrainSet(queries, _frame({"11": {"1000": 1}}).assign(score=True))
    assert TrainSet(queries, {"11": {"1000": 2, "1001": -1}}).qrels == {"11": {"1000": 2, "1001": -1}}


# ------------------------------------------------------------------ 6. scoring the queries a pipeline learned from
def test_evaluate_warns_of_scoring_queries_the_pipeline_learned_from(tmp_path, caplog):
    queries = _queries()
    train, test = queries[:6], queries[6:]
    qrels = _qrels(queries.ids)
    pipe = Pipeline.from_yaml(RRF_YAML).fit(_corpus(), TrainSet(train, {q: qrels[q] for q in train.ids}))
    pipe.save(tmp_path / "p")
    saved = Pipeline.load(tmp_path / "p")
    run = saved.search(queries)
    assert run.learned_from == train.ids == pipe.search(queries).learned_from
    assert run.head(3).learned_from == train.ids
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        evaluate(run, qrels, ["ndcg@10"])
    assert ("evaluate: 6 of the 10 scored queries were learned from by the pipeline that made this run ('11', "
            "'12', '13', ...); scores on them are not held out") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        evaluate(saved.search(test), {q: qrels[q] for q in test.ids}, ["ndcg@10"])  # held out
        evaluate(Run.from_dict(run.to_dict()), qrels, ["ndcg@10"])  # a run built by hand knows nothing
        path = tmp_path / "run.trec"
        run.write_trec(path)
        evaluate(Run.read_trec(path), qrels, ["ndcg@10"])
        unfitted = Pipeline.from_yaml("pipeline:\n  - bm25: {k: 10}\n").fit(_corpus()).search(queries)
        assert unfitted.learned_from == []
        evaluate(unfitted, qrels, ["ndcg@10"])
    assert "learned from" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        evaluate(run, {"11": qrels["11"], "19": qrels["19"]}, ["ndcg@10"])
    assert "evaluate: 1 of the 2 scored queries was learned from by the pipeline that made this run ('11')" \
        in caplog.text
