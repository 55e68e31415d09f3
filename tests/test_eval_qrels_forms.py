"""The evaluation helpers take qrels as ``evaluate`` does (a mapping, a DataFrame, a qrels file's path, through
``ragkit.types.as_qrels``): ``filter_report`` and ``relevance_labels`` read a DataFrame as a mapping (``q in df``
tested column names: silently wrong numbers), and ``load_result`` refused one."""

from __future__ import annotations

import pandas as pd

from ragkit.eval import filter_report
from ragkit.eval.compare import load_result
from ragkit.eval.filtering import relevance_labels
from ragkit.run import Run

QRELS = {"q1": {"d1": 1, "d3": 0}, "q2": {"d2": 2}}
FRAME = pd.DataFrame({"query_id": ["q1", "q1", "q2"], "doc_id": ["d1", "d3", "d2"], "relevance": [1, 0, 2]})


def test_filter_report_and_labels_read_a_dataframe_as_the_mapping():
    run = Run.from_dict({"q1": {"d1": 2.0, "d3": 1.0}, "q2": {"d4": 1.0, "d2": 0.5}})
    assert [a.tolist() for a in relevance_labels(run, FRAME)] == [a.tolist() for a in relevance_labels(run, QRELS)]
    assert filter_report(run, FRAME).to_dict() == filter_report(run, QRELS).to_dict()


def test_load_result_scores_a_run_file_against_a_dataframe(tmp_path):
    path = tmp_path / "r.trec"
    Run.from_dict({"q1": {"d1": 2.0, "d3": 1.0}, "q2": {"d2": 1.0}}).write_trec(path)
    a, b = load_result(path, qrels=QRELS), load_result(path, qrels=FRAME)
    assert a.per_query == b.per_query
