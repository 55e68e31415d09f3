"""Metric specifications (``ndcg@10``) refused as clearly as a pipeline's YAML.

Review: ``evaluate(..., ["ndcg@10", "foo@5", "recal@100"])`` named only ``foo@5``; ``ndgc@10`` got no "did you
mean 'ndcg@10'"; ``ndcg@0`` was an "unknown metric" with no word of its cut-off.  Every unreadable name is now
named in one error, with why (an unknown name, a cut-off missing, not an integer, out of range) and the full
spelling it likely meant; the message still starts "unknown metric" (what existing callers match)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragkit.errors import DataError
from ragkit.eval import evaluate, parse_metric
from ragkit.eval.metrics import parse_metrics

RUN = {"q1": {"d1": 2.0, "d2": 1.0}}
QRELS = {"q1": {"d2": 1}}


def _message(names: list[str]) -> str:
    with pytest.raises(DataError) as e:
        parse_metrics(names)
    return str(e.value)


def test_every_bad_name_of_a_list_is_named_in_one_error():
    said = _message(["ndcg@10", "foo@5", "recal@100"])
    assert said.startswith("unknown metrics 'foo@5' (no metric is named 'foo'), 'recal@100' (no metric is named "
                           "'recal'; did you mean 'recall@100'?); expected one of ndcg@k, recall@k"), said
    assert "'ndcg@10'" not in said  # (the good one is not named)


def test_evaluate_names_every_bad_metric_before_any_work():
    for metrics in (["ndcg@10", "foo@5", "recal@100"], (m for m in ["ndcg@10", "foo@5", "recal@100"])):
        with pytest.raises(DataError, match=r"unknown metrics 'foo@5' \(no metric is named 'foo'\), 'recal@100' "
                                            r"\(no metric is named 'recal'; did you mean 'recall@100'\?\)"):
            evaluate(RUN, {}, metrics)  # (empty qrels: refused after the metrics)
    assert evaluate(RUN, QRELS, (m for m in [" nDCG@10", "p@1"])).scores == {"nDCG@10": pytest.approx(0.6309297),
                                                                            "p@1": 0.0}


@pytest.mark.parametrize("bad, says", [
    ("ndgc@10", "unknown metric 'ndgc@10': no metric is named 'ndgc' (did you mean 'ndcg@10'?)"),
    ("NDGC@5", "unknown metric 'NDGC@5': no metric is named 'ndgc' (did you mean 'ndcg@5'?)"),
    ("recal@100", "(did you mean 'recall@100'?)"),
    ("precision@5", "no metric is named 'precision' (did you mean 'p@5'?)"),
    ("ndcg_cut_10", "unknown metric 'ndcg_cut_10': no '@' between the name and the cut-off (did you mean 'ndcg@10'?)"),
    ("ndcg10", "(did you mean 'ndcg@10'?)"),
    ("ndcg@0", "unknown metric 'ndcg@0': the cut-off must be an integer >= 1, got 0;"),
    ("ndcg@-1", "unknown metric 'ndcg@-1': the cut-off must be an integer >= 1, got -1;"),
    ("recall@x", "unknown metric 'recall@x': the cut-off must be an integer >= 1, got 'x';"),
    ("ndcg@10.0", "write the cut-off in digits alone (e.g. 10), got '10.0' (did you mean 'ndcg@10'?)"),
    ("ndcg@+10", "write the cut-off in digits alone (e.g. 10), got '+10' (did you mean 'ndcg@10'?)"),
    ("ndcg@", "unknown metric 'ndcg@': the cut-off is missing after '@' (did you mean 'ndcg@10'?)"),
    ("ndcg", "unknown metric 'ndcg': the cut-off is missing (did you mean 'ndcg@10'?)"),
    ("recall", "the cut-off is missing (did you mean 'recall@100'?)"),
    ("ndcg@3000000000", "the cut-off must be at most 2147483647 (trec_eval reads it as a C int), got 3000000000"),
    ("@10", "unknown metric '@10': the metric's name is missing before '@'"),
    ("", "unknown metric '': the name is empty"),
])
def test_a_bad_name_says_why_and_what_it_likely_meant(bad: str, says: str):
    with pytest.raises(DataError) as e:
        parse_metric(bad)
    said = str(e.value)
    assert says in said and said.startswith(f"unknown metric {bad!r}"), said
    assert said.endswith("expected one of ndcg@k, recall@k, map@k, mrr@k, p@k, r_cap@k, hole@k, acc@k with "
                         "1 <= k <= 2147483647"), said


@pytest.mark.parametrize("bad", ["foo@5", "bpref@10", "hits@10", "ndcg@x"])
def test_no_hint_for_a_name_close_to_nothing(bad: str):
    with pytest.raises(DataError) as e:
        parse_metric(bad)
    assert "did you mean" not in str(e.value), str(e.value)


def test_a_non_string_is_named_as_before_alone_and_in_a_list():
    with pytest.raises(DataError, match=r"^metric 5 is an int; expected a name such as 'ndcg@10'$"):
        parse_metric(5)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"^metric 5 is an int; expected a name such as 'ndcg@10'$"):
        evaluate(RUN, QRELS, ["ndcg@10", 5])  # type: ignore[list-item]
    assert _message(["ndcg@10", 5, "x"]).startswith(  # type: ignore[list-item]
        "unknown metrics 5 (an int, not a name), 'x' (no metric is named 'x'); expected one of")


def test_good_names_read_as_before():
    assert parse_metrics(["nDCG@10", " P @ 5 ", "r_cap@3", "hole@1", "acc@2147483647"]) == [
        ("ndcg", 10), ("p", 5), ("r_cap", 3), ("hole", 1), ("acc", 2147483647)]
    assert parse_metrics("mrr@10") == [("mrr", 10)]  # (a string is one name)


def _cli(*args: object):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.mark.parametrize("bad, says", [
    ("ndgc@10", "--metrics: unknown metric 'ndgc@10': no metric is named 'ndgc' (did you mean 'ndcg@10'?)"),
    ("ndcg@0", "--metrics: unknown metric 'ndcg@0': the cut-off must be an integer >= 1, got 0;"),
])
def test_cli_metrics_say_why_before_any_work(tmp_path: Path, bad: str, says: str):
    """``ragkit eval -m`` reads each name with :func:`parse_metric`: refused (exit 2) before the data is read."""
    res = _cli("eval", "--data", tmp_path / "missing", "-p", "bm25", "-m", f"ndcg@10,{bad}")
    assert res.exit_code == 2 and says in " ".join(res.output.split()), res.output


def test_cli_and_compare_name_every_bad_metric(tmp_path: Path):
    """``ragkit eval -m`` and :func:`ragkit.eval.compare` name every name they cannot read in one message (they
    stopped at the first)."""
    res = _cli("eval", "--data", tmp_path / "missing", "-p", "bm25", "-m", "ndcg@10,foo@5,recal@100")
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "'foo@5'" in out and "did you mean 'recall@100'?" in out, res.output
    from ragkit.errors import RagkitError
    from ragkit.eval import compare, evaluate

    scored = evaluate({"q": {"d": 1.0}}, {"q": {"d": 1}}, metrics=["ndcg@10"])
    with pytest.raises(RagkitError, match=r"'foo@5' .*'recal@100' .*did you mean 'recall@100'"):
        compare({"a": scored, "b": scored}, metrics=["foo@5", "recal@100"])


def test_evaluate_refuses_a_metric_named_twice():
    """Review: evaluate kept 'ndcg@10' and 'nDCG@10' as two keys of one metric and merged 'ndcg@10 ' into
    'ndcg@10' silently, where ragkit eval -m and compare() refuse a metric named twice."""
    run, qrels = {"q1": {"d1": 1.0, "d2": 0.5}}, {"q1": {"d2": 1}}
    for twice, said in ((["ndcg@10", "nDCG@10", "recall@10"], "'ndcg@10', 'nDCG@10'"),
                        (["ndcg@10", "ndcg@10 "], "'ndcg@10', 'ndcg@10 '")):
        with pytest.raises(DataError, match=f"^evaluate: metrics {said} name the same metric; name each once$"):
            evaluate(run, qrels, twice)
    assert list(evaluate(run, qrels, ["nDCG@10", "recall@10"]).scores) == ["nDCG@10", "recall@10"]
    # review: two pairs were said as four names of one metric
    with pytest.raises(DataError, match=r"^evaluate: metrics 'ndcg@10', 'nDCG@10' name the same metric; 'recall@10', "
                                        r"'recall@10 ' another; name each once$"):
        evaluate(run, qrels, ["ndcg@10", "recall@10", "nDCG@10", "recall@10 "])


def test_per_query_metrics_says_its_own_name_for_a_metric_named_twice():
    import numpy as np

    from ragkit.eval import per_query_metrics
    from ragkit.types import Ranking, State

    state = State(["a query"], ["q1"], rankings=[Ranking(np.array([1, 0]), np.array([1.0, 0.5], np.float32))])
    for qrels in ({"q1": {"d2": 1}}, {"q9": {"d2": 1}}):  # (no judged query: refused all the same)
        with pytest.raises(DataError, match=r"^per_query_metrics: metrics 'ndcg@10', 'NDCG@10' name the same metric"):
            per_query_metrics(state, qrels, np.array(["d1", "d2"], object), ["ndcg@10", "NDCG@10"])
    assert per_query_metrics(state, {"q1": {"d2": 1}}, np.array(["d1", "d2"], object), ["ndcg@10"])["ndcg@10"] > 0


def test_eval_k_names_each_cut_off_once():
    """Review: ``ragkit eval --k 10,10`` scored nDCG, recall, ... at 10 twice, which evaluate now refuses (after the
    fit and the search, naming five metrics the user never wrote): a cut-off repeated in --k is one cut-off."""
    from ragkit.cli._options import _parse_ks
    from ragkit.cli._scoring import _Scoring

    assert _parse_ks("10,10") == [10] and _parse_ks("100,010,10,100") == [100, 10]
    names = _Scoring().metric_names(_parse_ks("10,010"))
    assert len(names) == len(set(names)) == 5
