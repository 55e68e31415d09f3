"""``ragkit.eval.compare`` and ``ragkit compare``: paired comparison of systems over the same queries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ragkit.errors import DataError, ParamError
from ragkit.eval.compare import SystemResult, compare, holm, load_result
from ragkit.eval.metrics import paired_randomization_test

QUERIES = [f"q{i}" for i in range(60)]


def _result(name: str, values: np.ndarray, metric: str = "ndcg@10", **kw) -> SystemResult:
    return SystemResult(name, {metric: dict(zip(QUERIES, map(float, values)))}, **kw)


def _base() -> np.ndarray:
    return np.random.default_rng(0).uniform(0.2, 0.8, len(QUERIES))


def test_compare_finds_a_real_gain_and_no_gain_where_there_is_none():
    base = _base()
    noise = np.random.default_rng(1).normal(0, 0.02, len(QUERIES))
    better, same = base + 0.05 + noise, base + noise
    c = compare([_result("base", base), _result("better", better), _result("same", same)], ["ndcg@10"],
                n_resamples=4000)
    assert c.systems == ["base", "better", "same"] and c.n_queries == len(QUERIES)
    assert c.means[:, 0] == pytest.approx([base.mean(), better.mean(), same.mean()])
    assert np.isnan(c.delta[0, 0]) and np.isnan(c.p_value[0, 0])  # the baseline is not tested against itself
    assert c.delta[1, 0] == pytest.approx((better - base).mean())
    assert c.ci_low[1, 0] < c.delta[1, 0] < c.ci_high[1, 0] and c.ci_low[1, 0] > 0
    assert c.significant[1, 0] and not c.significant[2, 0]
    assert c.ci_low[2, 0] < 0 < c.ci_high[2, 0]
    # the raw p-value is the library's paired test; Holm multiplies the smaller of the two by 2
    p_same = paired_randomization_test(dict(zip(QUERIES, same)), dict(zip(QUERIES, base)), n_resamples=4000)
    assert c.p_value[2, 0] == pytest.approx(p_same)
    assert c.p_holm[1, 0] == pytest.approx(min(1.0, 2 * c.p_value[1, 0]))
    again = compare([_result("base", base), _result("better", better), _result("same", same)], ["ndcg@10"],
                    n_resamples=4000)
    assert np.array_equal(again.ci_low, c.ci_low, equal_nan=True)  # seeded: the same call, the same numbers


def test_compare_baseline_and_identical_systems():
    base = _base()
    c = compare([_result("a", base), _result("b", base)], ["nDCG@10"], baseline=1)  # any spelling of the metric
    assert c.baseline == 1 and c.delta[0, 0] == 0.0 and c.p_value[0, 0] == 1.0
    assert c.ci_low[0, 0] == c.ci_high[0, 0] == 0.0
    d = c.to_dict()
    assert d["baseline"] == "b" and [r["system"] for r in d["rows"]] == ["a", "b"]
    assert d["rows"][0]["significant"] is False and "delta" not in d["rows"][1]


def test_holm_step_down():
    p = np.array([[np.nan, np.nan], [0.01, 0.04], [0.03, 0.5]])
    adj = holm(p)
    assert np.isnan(adj[0]).all()
    # sorted 0.01, 0.03, 0.04, 0.5 -> x4, x3, x2, x1 -> 0.04, 0.09, 0.08 -> monotone 0.09, 0.5
    assert adj[1:] == pytest.approx(np.array([[0.04, 0.09], [0.09, 0.5]]))
    assert holm(np.array([0.9, 0.8]))[0] == 1.0  # capped at 1


def test_compare_refuses_what_cannot_be_compared():
    base = _base()
    a = _result("a", base)
    with pytest.raises(ParamError, match="at least two"):
        compare([a])
    with pytest.raises(ParamError, match="a given twice"):
        compare([a, _result("a", base)], ["ndcg@10"])
    with pytest.raises(ParamError, match="baseline must be the index"):
        compare([a, _result("b", base)], ["ndcg@10"], baseline=2)
    with pytest.raises(ParamError, match="alpha must be a number in"):
        compare([a, _result("b", base)], ["ndcg@10"], alpha=1.5)
    with pytest.raises(DataError, match="unknown metric"):
        compare([a, _result("b", base)], ["ndcg"])
    with pytest.raises(DataError, match=r"b: holds no per-query values of 'recall@100'; it holds map@10"):
        compare([_result("a", base, "recall@100"), _result("b", base, "map@10")], ["recall@100"])
    short = SystemResult("b", {"ndcg@10": dict(zip(QUERIES[:50], base[:50]))})
    with pytest.raises(DataError, match=r"different queries \(60 and 50; 10 only in the first"):
        compare([a, short], ["ndcg@10"])
    with pytest.raises(DataError, match="different splits .*a: 'test', b: 'dev'"):
        compare([_result("a", base, split="test"), _result("b", base, split="dev")], ["ndcg@10"])


def test_compare_refuses_a_metric_named_twice():
    """Review: ``["ndcg@10", "nDCG@10"]`` compared the same metric twice, and Holm counted it twice
    (p 0.61 became 1.0)."""
    base = _base()
    with pytest.raises(ParamError, match=r"metrics 'ndcg@10', 'NDCG@10' name the same metric; name each once"):
        compare([_result("a", base), _result("b", base + 0.01)], ["ndcg@10", "NDCG@10"])


def test_compare_refuses_values_that_are_not_finite_before_any_resampling(tmp_path: Path, monkeypatch):
    """Review: a NaN per-query value was refused by the test of the pair that held it, after the
    resampling of the pairs before it, in words naming neither the file nor the system."""
    import importlib

    cmp_mod = importlib.import_module("ragkit.eval.compare")  # (ragkit.eval.compare is also the function)
    base = _base()
    bad = base.copy()
    bad[[3, 7]] = [np.nan, np.inf]
    path = _eval_json(tmp_path / "c.json", bad)  # json writes NaN and Infinity, and reads them back
    with pytest.raises(DataError, match=r"c\.json: per_query\['ndcg@10'\]: 2 of the 60 per-query values are not "
                                        r"finite numbers \('q3': nan, 'q7': inf\)"):
        load_result(path)

    def no_resampling(*a, **k):
        raise AssertionError("resampled before checking every value")

    monkeypatch.setattr(cmp_mod, "sign_flip_pvalues", no_resampling)
    monkeypatch.setattr(cmp_mod, "_bootstrap_ci", no_resampling)
    with pytest.raises(DataError, match=r"compare: c: ndcg@10: 2 of the 60 per-query values are not finite"):
        compare([_result("a", base), _result("b", base), _result("c", bad)], ["ndcg@10"])


def _eval_json(path: Path, values: np.ndarray, dataset: str = "tiny", split: str = "test") -> Path:
    """A results file in the shape ``ragkit eval -o`` writes."""
    per_query = {"ndcg@10": dict(zip(QUERIES, map(float, values))),
                 "recall@100": dict(zip(QUERIES, map(float, np.clip(values + 0.2, 0, 1))))}
    path.write_text(json.dumps({"dataset": dataset, "split": split, "metrics": {}, "per_query": per_query}))
    return path


def test_load_result_reads_eval_json_and_scores_trec_runs(tmp_path: Path):
    r = load_result(_eval_json(tmp_path / "a.json", _base()))
    assert r.name == str(tmp_path / "a.json") and r.dataset == "tiny" and r.split == "test"
    assert r.values("ndcg@10")["q3"] == pytest.approx(_base()[3])
    trec = tmp_path / "run.trec"
    trec.write_text("q1 Q0 d1 1 2.0 x\nq1 Q0 d2 2 1.0 x\nq2 Q0 d3 1 1.0 x\n")
    with pytest.raises(DataError, match="holds no judgements; give the dataset"):
        load_result(trec)
    scored = load_result(trec, qrels={"q1": {"d2": 1}, "q2": {"d3": 1}}, metrics=["mrr@10"], split="test")
    assert scored.values("mrr@10") == {"q1": 0.5, "q2": 1.0} and scored.split == "test"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        load_result(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"metrics": {"ndcg@10": 0.5}}))
    with pytest.raises(DataError, match="no 'per_query' values"):
        load_result(tmp_path / "other.json")
    with pytest.raises(DataError, match="nothing.json: file not found"):
        load_result(tmp_path / "nothing.json")
    (tmp_path / "multi.json").write_text(json.dumps({"dataset": "cqadupstack", "subsets": {"android": {}, "gis": {}}}))
    with pytest.raises(DataError, match=r"multi.json: subsets\['android'\]: no 'per_query' values"):
        load_result(tmp_path / "multi.json")


def test_a_trec_run_of_other_queries_is_refused_and_a_partial_one_noted(tmp_path: Path, caplog):
    """A run of another split judged none of its queries and scored 0 everywhere; a run written with
    ``--limit`` scored 0 on every query it left out, silently (a 5-query run's mean over 300)."""
    import logging

    qrels = {"q1": {"d2": 1}, "q2": {"d3": 1}, "q3": {"d1": 1}}
    other = tmp_path / "other.trec"
    other.write_text("t1 Q0 d1 1 2.0 x\nt2 Q0 d3 1 1.0 x\n")
    with pytest.raises(DataError, match=r"other.trec: ranks documents for 2 queries \('t1', 't2'\), none of them "
                                        r"judged in the split 'train' .*3 judged queries"):
        load_result(other, qrels=qrels, metrics=["mrr@10"], split="train")
    part = tmp_path / "part.trec"
    part.write_text("q1 Q0 d2 1 2.0 x\n")
    with caplog.at_level(logging.INFO, logger="ragkit"):
        scored = load_result(part, qrels=qrels, metrics=["mrr@10"])
    assert scored.values("mrr@10") == {"q1": 1.0, "q2": 0.0, "q3": 0.0}
    assert "part.trec ranks documents for 1 of the 3 judged queries; the others score 0" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ragkit"):
        load_result(part, qrels={"q1": {"d2": 1}}, metrics=["mrr@10"])
    assert "judged queries" not in caplog.text


def test_different_queries_message_gives_examples_only_where_there_are_some():
    a = SystemResult("a", {"ndcg@10": {"q1": 0.5, "q2": 0.5}})
    b = SystemResult("b", {"ndcg@10": {"q1": 0.5}})
    with pytest.raises(DataError) as e:
        compare([a, b])
    assert "1 only in the first, e.g. 'q2'; 0 only in the second)" in str(e.value)


def _multi_json(path: Path, by_set: dict[str, np.ndarray]) -> Path:
    """Results of an archive of several datasets, in the shape ``ragkit eval --data <archive> -o`` writes."""
    subsets = {s: {"n_queries": len(v), "metrics": {"ndcg@10": float(v.mean())},
                   "per_query": {"ndcg@10": {f"q{i}": float(x) for i, x in enumerate(v)}}} for s, v in by_set.items()}
    means = {"ndcg@10": float(np.mean([v.mean() for v in by_set.values()]))}
    path.write_text(json.dumps({"dataset": "cqa", "split": "test", "metrics": means, "subsets": subsets}))
    return path


def test_results_of_several_datasets_weight_each_dataset_equally(tmp_path: Path):
    import itertools

    rng = np.random.default_rng(3)
    base = {"small": rng.uniform(0, 1, 2), "large": rng.uniform(0, 1, 6)}
    other = {"small": base["small"] + np.array([0.3, 0.2]), "large": base["large"] - rng.uniform(0, 0.1, 6)}
    a = load_result(_multi_json(tmp_path / "a.json", base))
    b = load_result(_multi_json(tmp_path / "b.json", other))
    assert a.groups["small/q1"] == "small" and len(a.values("ndcg@10")) == 8
    c = compare([a, b], ["ndcg@10"], n_resamples=20_000)
    beir_mean = np.mean([other[s].mean() for s in other])  # BEIR's CQADupStack mean: each dataset weighs 1/2
    assert c.n_datasets == 2 and c.n_queries == 8
    assert c.means[1, 0] == pytest.approx(beir_mean) and c.means[1, 0] != pytest.approx(np.concatenate(
        list(other.values())).mean())
    diff = {s: other[s] - base[s] for s in base}
    assert c.delta[1, 0] == pytest.approx(np.mean([d.mean() for d in diff.values()]))
    # the exact randomisation distribution of the weighted statistic: all 2**8 sign patterns
    d = np.concatenate([diff["small"] / 2, diff["large"] / 6]) / 2
    stats = np.abs(np.array(list(itertools.product([-1, 1], repeat=8))) @ d)
    exact = np.mean(stats >= abs(d.sum()) - 1e-12)
    assert c.p_value[1, 0] == pytest.approx(exact, abs=0.015)
    # stratified bootstrap: a dataset whose every query gains 1 and one whose queries gain 0 give 0.5 in
    # every resample (pooled resampling would not keep the two datasets' sizes)
    flat = {"small": np.zeros(2), "large": np.zeros(6)}
    c2 = compare([load_result(_multi_json(tmp_path / "z.json", flat)),
                  load_result(_multi_json(tmp_path / "o.json", {"small": np.ones(2), "large": np.zeros(6)}))],
                 ["ndcg@10"], n_resamples=500)
    assert c2.delta[1, 0] == pytest.approx(0.5) and c2.ci_low[1, 0] == pytest.approx(0.5)
    assert c2.ci_high[1, 0] == pytest.approx(0.5)
    single = SystemResult("one", {"ndcg@10": dict(a.values("ndcg@10"))})
    with pytest.raises(DataError, match="holds results of 2 datasets, one of one dataset"):
        compare([a, single], ["ndcg@10"])


def _cli(*args: str):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, ["compare", *args], catch_exceptions=False)


def test_cli_compare_prints_the_table_and_writes_json(tmp_path: Path):
    base = _base()
    a = _eval_json(tmp_path / "bm25.json", base)
    b = _eval_json(tmp_path / "hybrid_pipeline_with_a_long_name.json", base + 0.1)
    out = tmp_path / "cmp" / "comparison.json"
    res = _cli(str(a), str(b), "-o", str(out), "--resamples", "2000")
    assert res.exit_code == 0, res.output
    assert "60 queries · baseline bm25" in res.output and "over 2 comparisons" in res.output
    assert "hybrid_pipeline_with_a_long_name" in res.output  # names are never cut, whatever the width
    assert "+0.1000" in res.output and "0.0010 *" in res.output  # every one of 60 queries gains: p = 2/2001
    written = json.loads(out.read_text())
    assert written["baseline"] == "bm25" and len(written["rows"]) == 4 and written["n_resamples"] == 2000
    flipped = _cli(str(a), str(b), "--baseline", str(b), "-m", "ndcg@10", "--resamples", "200")
    assert flipped.exit_code == 0 and "baseline hybrid_pipeline_with_a_long_name" in flipped.output
    assert "-0.1000" in flipped.output


def test_cli_compare_scores_trec_runs_against_a_dataset(tmp_path: Path):
    from ragkit.eval import write_beir
    from ragkit.types import Corpus

    corpus = Corpus(ids=["d1", "d2", "d3"], texts=["a", "b", "c"])
    data = write_beir(tmp_path / "tiny", corpus, {"q1": "x", "q2": "y"}, {"test": {"q1": {"d2": 1}, "q2": {"d3": 1}}})
    (tmp_path / "one.trec").write_text("q1 Q0 d1 1 2.0 x\nq1 Q0 d2 2 1.0 x\nq2 Q0 d3 1 1.0 x\n")
    (tmp_path / "two.trec").write_text("q1 Q0 d2 1 2.0 x\nq2 Q0 d3 1 1.0 x\n")
    res = _cli(str(tmp_path / "one.trec"), str(tmp_path / "two.trec"), "--data", str(data), "-m", "mrr@10",
               "--resamples", "100")
    assert res.exit_code == 0, res.output
    assert "0.7500" in res.output and "1.0000" in res.output and "+0.2500" in res.output
    graded = write_beir(tmp_path / "graded", corpus, {"q1": "x", "q2": "y"},
                        {"test": {"q1": {"d2": 1, "d1": 2}, "q2": {"d3": 1}}})
    for level, want in (("1", "1.0000"), ("2", "0.5000")):  # at -l 2 only q1's d1 counts: one's q1 1.0, q2 0
        res = _cli(str(tmp_path / "one.trec"), str(tmp_path / "two.trec"), "--data", str(graded), "-m", "mrr@10",
                   "--resamples", "100", "--relevance-level", level)
        # ("one !": its rankings hold at most 2 documents, fewer than mrr@10's cut-off: marked shallow)
        assert res.exit_code == 0 and re.search(rf"one !\s+{want}", res.output), res.output


def test_cli_compare_checks_json_results_against_data_and_split(tmp_path: Path):
    """Review: with ``--data``/``--split``, results read from JSON were never checked against them: two
    'scifact' test files compared under ``--data nfcorpus --split dev`` without a word."""
    from ragkit.eval import write_beir
    from ragkit.types import Corpus

    corpus = Corpus(ids=["d1", "d2"], texts=["a", "b"])
    for name in ("tiny", "other"):
        write_beir(tmp_path / name, corpus, {"q1": "x"}, {"test": {"q1": {"d1": 1}}, "dev": {"q1": {"d2": 1}}})
    one = _eval_json(tmp_path / "one.json", _base())
    two = _eval_json(tmp_path / "two.json", _base() + 0.01)
    res = _cli(str(one), str(two), "--data", str(tmp_path / "other"), "--resamples", "100")
    assert res.exit_code == 2
    assert "one.json: results of dataset 'tiny', but 'other' was given" in " ".join(res.output.split()), res.output
    res = _cli(str(one), str(two), "--data", str(tmp_path / "tiny"), "--split", "dev", "--resamples", "100")
    assert res.exit_code == 2 and "results of split 'test', but 'dev' was given" in " ".join(res.output.split())
    res = _cli(str(one), str(two), "--data", str(tmp_path / "tiny"), "--resamples", "100")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("args, message", [
    (["ONE"], "expected two or more result files, got 1"),
    (["ONE", "missing.json"], "missing.json: no such file"),
    (["ONE", "ONE2", "-m", "ndcg"], "--metrics: unknown metric 'ndcg'"),
    (["ONE", "ONE2", "--baseline", "other.json"], "other.json: not one of the RESULTS"),
    (["ONE", "RUN"], "holds no judgements; give the dataset"),
    # review: --alpha 0 or 1 passed typer's [0, 1] and was refused only after --data was loaded
    # (s52: by its parser, whose range and help now say the open bounds)
    (["ONE", "ONE2", "--alpha", "1", "--data", "NODATA"],
     "Invalid value for '--alpha': expected a number strictly between 0 and 1, got '1'"),
    (["ONE", "ONE2", "--alpha", "0"],
     "Invalid value for '--alpha': expected a number strictly between 0 and 1, got '0'"),
    (["ONE", "ONE2", "-m", "ndcg@10,nDCG@10"], "--metrics: ndcg@10, nDCG@10 name the same metric"),
])
def test_cli_compare_errors_before_any_work(tmp_path: Path, args: list[str], message: str):
    one = _eval_json(tmp_path / "one.json", _base())
    two = _eval_json(tmp_path / "two.json", _base())
    (tmp_path / "run.trec").write_text("q1 Q0 d1 1 1.0 x\n")
    names = {"ONE": str(one), "ONE2": str(two), "RUN": str(tmp_path / "run.trec"),
             "missing.json": str(tmp_path / "missing.json"), "other.json": str(tmp_path / "other.json"),
             "NODATA": str(tmp_path / "no" / "data")}
    res = _cli(*[names.get(a, a) for a in args])
    assert res.exit_code == 2
    assert message in " ".join(res.output.split()), res.output


def test_cli_compare_of_several_datasets_says_how_it_averages(tmp_path: Path):
    rng = np.random.default_rng(5)
    base = {"android": rng.uniform(0, 1, 3), "gis": rng.uniform(0, 1, 5)}
    a = _multi_json(tmp_path / "bm25.json", base)
    b = _multi_json(tmp_path / "dense.json", {s: v + 0.05 for s, v in base.items()})
    res = _cli(str(a), str(b), "-m", "ndcg@10", "--resamples", "500")
    assert res.exit_code == 0, res.output
    assert "8 queries of 2 datasets, each weighted equally (BEIR's mean" in " ".join(res.output.split())
    assert "+0.0500" in res.output


def test_weighted_randomisation_test_needs_a_positive_weight_per_query():
    a, b = {"x": 1.0, "y": 0.5}, {"x": 0.0, "y": 0.5}
    assert paired_randomization_test(a, b, weights={"x": 1.0, "y": 3.0}, n_resamples=100) > 0.3  # 2 flips of 4
    with pytest.raises(DataError, match="weights must give every shared query a positive finite weight; 1 of the 2"):
        paired_randomization_test(a, b, weights={"x": 1.0})
    with pytest.raises(DataError, match="1 of the 2 have none"):
        paired_randomization_test(a, b, weights={"x": 1.0, "y": 0.0})


def test_cli_compare_reads_only_the_judgements_of_data(tmp_path: Path):
    """--data scores TREC runs with its qrels alone: a corpus that cannot be read (or gigabytes of one) is
    never opened."""
    from ragkit.eval.beir import beir_qrels

    data = tmp_path / "tiny"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("{not json\n")  # load_beir would refuse it
    (data / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    assert beir_qrels(data) == ("tiny", {"q1": {"d2": 1}})
    with pytest.raises(DataError, match=r"no qrels for split 'dev'; available splits: \['test'\]"):
        beir_qrels(data, "dev")
    (tmp_path / "one.trec").write_text("q1 Q0 d1 1 2.0 x\nq1 Q0 d2 2 1.0 x\n")
    (tmp_path / "two.trec").write_text("q1 Q0 d2 1 2.0 x\n")
    res = _cli(str(tmp_path / "one.trec"), str(tmp_path / "two.trec"), "--data", str(data), "-m", "mrr@10",
               "--resamples", "10")
    assert res.exit_code == 0, res.output
    assert "0.5000" in res.output and "+0.5000" in res.output


def test_compare_baseline_by_name():
    """``baseline="b"`` is the system named b: the same numbers as its index; an unknown name lists the names."""
    base = _base()
    results = [_result("a", base), _result("b", base + 0.1), _result("c", base - 0.05)]
    by_name = compare(results, ["ndcg@10"], baseline="b", n_resamples=2000)
    by_index = compare(results, ["ndcg@10"], baseline=1, n_resamples=2000)
    assert by_name.baseline == 1 and str(by_name) == str(by_index)
    said = r"baseline 'bb' is not one of the systems \('a', 'b', 'c'\); did you mean 'b'"
    with pytest.raises(ParamError, match=said):
        compare(results, ["ndcg@10"], baseline="bb")


def _judged_run() -> tuple[dict, dict]:
    """Graded qrels (each query judges a document 2, one 1 and itself 1) and a run that ranks all three."""
    rng = np.random.default_rng(3)
    qrels = {q: {f"d{i}": 2, f"e{i}": 1, q: 1} for i, q in enumerate(QUERIES[:30])}
    run = {q: {**{f"d{j}": float(rng.random()) for j in range(40)}, f"e{i}": 0.5, q: 0.9}
           for i, q in enumerate(QUERIES[:30])}
    return run, qrels


def test_compare_of_evaluate_results_refuses_different_scoring_as_the_cli_does():
    """Review: compare({"a": evaluate(run, qrels), "c": evaluate(run, qrels, relevance_level=2)}) compared the
    same run scored twice (recall@20 Δ -0.125) where the JSON files of ragkit eval were refused; EvalResult now
    records the relevance_level and ignore_identical_ids it was scored with, and compare checks them."""
    from ragkit.eval import evaluate

    run, qrels = _judged_run()
    metrics = ["ndcg@10", "recall@20"]
    r1 = evaluate(run, qrels, metrics)
    assert (r1.relevance_level, r1.ignore_identical_ids) == (1, True)
    r2 = evaluate(run, qrels, metrics, relevance_level=2)
    assert r2.relevance_level == 2 and r2["recall@20"] != r1["recall@20"]
    with pytest.raises(DataError, match=r"scored with different relevance_level \(a: relevance_level=1, "
                                        r"c: relevance_level=2\).*evaluate\(run, qrels, metrics, relevance_level=N\)"):
        compare({"a": r1, "c": r2}, metrics, n_resamples=10)
    kept = evaluate(run, qrels, metrics, ignore_identical_ids=False)
    assert kept.ignore_identical_ids is False
    with pytest.raises(DataError, match=r"different ignore_identical_ids \(a: ignore_identical_ids=True, "
                                        r"k: ignore_identical_ids=False\)"):
        compare({"a": r1, "k": kept}, metrics, n_resamples=10)
    # the same way as a JSON file of ragkit eval: a level-2 evaluate result is refused against a level-1 file
    file_like = SystemResult("f", r1.per_query, relevance_level=1, ignore_identical_ids=True)
    with pytest.raises(DataError, match=r"f: relevance_level=1, c: relevance_level=2"):
        compare({"f": file_like, "c": r2}, metrics, n_resamples=10)
    # scored alike: compared; an EvalResult built by hand (settings unknown) compares with anything
    other = evaluate({q: {d: -s for d, s in docs.items()} for q, docs in run.items()}, qrels, metrics,
                     relevance_level=2)
    assert compare({"a": r2, "b": other}, metrics, n_resamples=10).n_queries == 30
    from ragkit.eval import EvalResult

    by_hand = EvalResult(r2.scores, r2.per_query)
    assert by_hand.relevance_level is None and by_hand.ignore_identical_ids is None
    assert compare({"a": r1, "h": by_hand}, metrics, n_resamples=10).n_queries == 30


def _eval_json_at(path: Path, ks: tuple[int, ...], values: np.ndarray) -> Path:
    """A results file of ``ragkit eval --k <ks>``: nDCG, recall, MAP, MRR and P at each cut-off."""
    per_query = {f"{m}@{k}": dict(zip(QUERIES, map(float, values))) for k in ks
                 for m in ("ndcg", "recall", "map", "mrr", "p")}
    path.write_text(json.dumps({"dataset": "tiny", "split": "test", "metrics": {}, "per_query": per_query}))
    return path


def test_default_metrics_missing_from_the_files_say_to_pass_metrics_and_name_the_shared_ones(tmp_path: Path):
    """Review: ``ragkit compare a.json b.json`` on files of ``ragkit eval --k 5,10`` failed with "holds no
    per-query values of 'recall@100'" only: the default -m ndcg@10,recall@100 was not the user's, and the
    metrics the files do share were not named."""
    base = _base()
    a = _eval_json_at(tmp_path / "a.json", (5, 10), base)
    b = _eval_json_at(tmp_path / "b.json", (10, 20), base + 0.01)
    res = _cli(str(a), str(b), "--resamples", "100")
    said = " ".join(res.output.split())
    assert res.exit_code == 2
    assert ("a: holds no per-query values of 'recall@100' (nor does b); it holds ndcg@5, recall@5" in said
            and "recall@100 is one of the metrics compared when none are named (ndcg@10, recall@100)" in said
            and "-m/--metrics" in said and "they share ndcg@10, recall@10, map@10, mrr@10, p@10" in said), said
    ok = _cli(str(a), str(b), "-m", "ndcg@10,recall@10", "--resamples", "100")
    assert ok.exit_code == 0, ok.output
    # named explicitly (in Python): the shared metrics, without the word on defaults
    ra, rb = load_result(a, name="a"), load_result(b, name="b")
    with pytest.raises(DataError, match=r"compare: b: holds no per-query values of 'ndcg@5'; it holds ndcg@10.*"
                                        r"they share ndcg@10, recall@10") as e:
        compare([ra, rb], ["ndcg@5"], n_resamples=10)
    assert "when none are named" not in str(e.value)
    nothing = SystemResult("c", {"hole@3": dict(zip(QUERIES, map(float, base)))})
    with pytest.raises(DataError, match=r"the results share no metric: score them on the same metrics"):
        compare([ra, nothing], ["ndcg@10"], n_resamples=10)
