"""``ragkit compare`` and ``evaluate``: results scored with different settings, Monte Carlo error of the
p-values, and a relevance level no judgement reaches (BEIR evaluation review)."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from ragkit.errors import DataError, ParamError
from ragkit.eval.compare import Comparison, SystemResult, compare, holm, load_result
from ragkit.eval.metrics import evaluate, paired_randomization_test

QUERIES = [f"q{i}" for i in range(60)]


def _values(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.8, len(QUERIES))


def _eval_json(path: Path, values: np.ndarray, settings: dict | None = None) -> Path:
    """A results file in the shape ``ragkit eval -o`` writes (``settings`` left out when None: an older file)."""
    per_query = {"ndcg@10": dict(zip(QUERIES, map(float, values))),
                 "recall@100": dict(zip(QUERIES, map(float, np.clip(values + 0.2, 0, 1))))}
    payload = {"dataset": "tiny", "split": "test", "metrics": {}, "per_query": per_query}
    if settings is not None:
        payload["settings"] = {"data": "tiny", "depth": None, **settings}
    path.write_text(json.dumps(payload))
    return path


def _cli(*args: str):
    from typer.testing import CliRunner

    from ragkit.cli import app

    return CliRunner().invoke(app, ["compare", *map(str, args)], catch_exceptions=False)


# --- 1. results scored with different relevance_level / ignore_identical_ids


def test_compare_refuses_results_scored_with_different_relevance_levels(tmp_path: Path):
    """Review: the same BM25 run written with --relevance-level 1 and 2 compared without complaint
    (recall@100 -0.98, p (Holm) 0.0002)."""
    v = _values()
    one = load_result(_eval_json(tmp_path / "l1.json", v, {"relevance_level": 1, "ignore_identical_ids": True}),
                      name="l1")
    two = load_result(_eval_json(tmp_path / "l2.json", v, {"relevance_level": 2, "ignore_identical_ids": True}),
                      name="l2")
    assert (one.relevance_level, two.relevance_level, two.ignore_identical_ids) == (1, 2, True)
    with pytest.raises(DataError, match=r"scored with different relevance_level \(l1: relevance_level=1, "
                                        r"l2: relevance_level=2\).*ragkit eval --relevance-level N"):
        compare([one, two], ["ndcg@10"], n_resamples=10)
    kept = load_result(_eval_json(tmp_path / "k.json", v, {"relevance_level": 1, "ignore_identical_ids": False}),
                       name="kept")
    with pytest.raises(DataError, match=r"different ignore_identical_ids \(l1: ignore_identical_ids=True, "
                                        r"kept: ignore_identical_ids=False\).*--keep-identical-ids"):
        compare([one, kept], ["ndcg@10"], n_resamples=10)
    # scored alike: compared
    same = load_result(_eval_json(tmp_path / "s.json", v + 0.01, {"relevance_level": 2, "ignore_identical_ids": True}),
                       name="s")
    assert compare([two, same], ["ndcg@10"], n_resamples=10).n_queries == len(QUERIES)


def test_older_json_without_settings_reads_as_ragkit_eval_defaults(tmp_path: Path):
    """A file written before ``settings`` recorded the scoring was scored with relevance_level 1 and
    identical ids ignored (the only scoring ragkit eval had then): it compares with such results, and is
    refused against a level-2 one."""
    v = _values()
    old = load_result(_eval_json(tmp_path / "old.json", v), name="old")
    partial = load_result(_eval_json(tmp_path / "p.json", v + 0.01, {"ignore_identical_ids": True}), name="p")
    assert (old.relevance_level, old.ignore_identical_ids) == (1, True) and partial.relevance_level == 1
    assert compare([old, partial], ["ndcg@10"], n_resamples=10).n_queries == len(QUERIES)
    two = load_result(_eval_json(tmp_path / "l2.json", v, {"relevance_level": 2}), name="l2")
    with pytest.raises(DataError, match=r"old: relevance_level=1, l2: relevance_level=2"):
        compare([old, two], ["ndcg@10"], n_resamples=10)
    # a result whose scoring is unknown (built in Python) compares with any
    free = SystemResult("free", {"ndcg@10": dict(zip(QUERIES, map(float, v)))})
    assert free.relevance_level is None and compare([free, two], ["ndcg@10"], n_resamples=10).n_queries == 60
    for bad, message in (({"relevance_level": "2"}, "settings.relevance_level must be an integer grade >= 1"),
                         ({"ignore_identical_ids": 1}, "settings.ignore_identical_ids must be true or false")):
        with pytest.raises(DataError, match=message):
            load_result(_eval_json(tmp_path / "bad.json", v, bad))


def test_trec_runs_carry_the_settings_they_were_scored_with(tmp_path: Path):
    """A TREC run scored by compare at --relevance-level 2 against a JSON of level 1 was compared."""
    qrels = {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1, "d1": 2}}
    (tmp_path / "r.trec").write_text("q1 Q0 d2 1 2.0 x\nq1 Q0 d1 2 1.0 x\nq2 Q0 d3 1 1.0 x\n")
    run2 = load_result(tmp_path / "r.trec", qrels=qrels, metrics=["mrr@10"], relevance_level=2, name="run2")
    run1 = load_result(tmp_path / "r.trec", qrels=qrels, metrics=["mrr@10"], name="run1")
    kept = load_result(tmp_path / "r.trec", qrels=qrels, metrics=["mrr@10"], ignore_identical_ids=False, name="kept")
    assert (run2.relevance_level, run2.ignore_identical_ids, run1.relevance_level, kept.ignore_identical_ids) == (
        2, True, 1, False)
    js = SystemResult("json", {"mrr@10": {"q1": 1.0, "q2": 1.0}}, relevance_level=1, ignore_identical_ids=True)
    assert compare([js, run1], ["mrr@10"], n_resamples=10).delta[1, 0] == 0.0  # both 1.0 at level 1
    assert run2.values("mrr@10") == {"q1": 0.5, "q2": 0.0}  # at level 2 only d1 counts
    with pytest.raises(DataError, match=r"json: relevance_level=1, run2: relevance_level=2"):
        compare([js, run2], ["mrr@10"], n_resamples=10)
    with pytest.raises(DataError, match=r"json: ignore_identical_ids=True, kept: ignore_identical_ids=False"):
        compare([js, kept], ["mrr@10"], n_resamples=10)


def test_cli_compare_names_both_files_and_both_levels(tmp_path: Path):
    v = _values()
    a = _eval_json(tmp_path / "s_l1.json", v, {"relevance_level": 1, "ignore_identical_ids": True})
    b = _eval_json(tmp_path / "s_l2.json", v, {"relevance_level": 2, "ignore_identical_ids": True})
    res = _cli(a, b, "--resamples", "10")
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "s_l1: relevance_level=1, s_l2: relevance_level=2" in out, res.output


# --- 2. Monte Carlo error of the p-values


def test_default_resamples_is_200000():
    """10,000 sign flips with seed 0 left SciFact's BM25 vs hybrid at p (Holm) 0.0513 (0.0457 at 200,000):
    one verdict of significance of 4, 4 with seeds 1-3."""
    assert inspect.signature(compare).parameters["n_resamples"].default == 200_000
    base = _values()
    c = compare([SystemResult("a", {"ndcg@10": dict(zip(QUERIES, base))}),
                 SystemResult("b", {"ndcg@10": dict(zip(QUERIES, base + 0.01))})], ["ndcg@10"])
    assert c.n_resamples == 200_000


def _near(seed: int = 0) -> tuple[SystemResult, SystemResult]:
    """Two systems whose difference has a randomisation p-value of ~0.05 (t = 1.96 over 60 queries)."""
    rng = np.random.default_rng(seed)
    d = rng.normal(0, 1, len(QUERIES))
    d = (d - d.mean()) / d.std(ddof=1) * 0.1
    d += 1.96 * 0.1 / np.sqrt(len(QUERIES))
    base = rng.uniform(0.3, 0.7, len(QUERIES))
    return (SystemResult("a", {"ndcg@10": dict(zip(QUERIES, map(float, base)))}),
            SystemResult("b", {"ndcg@10": dict(zip(QUERIES, map(float, base + d)))}))


def test_p_values_carry_their_monte_carlo_error_and_a_verdict_near_alpha_says_so():
    a, b = _near()
    c = compare([a, b], ["ndcg@10"], n_resamples=2000)
    p = c.p_value[1, 0]
    assert 0.03 < p < 0.07
    assert c.p_se[1, 0] == pytest.approx(np.sqrt(p * (1 - p) / 2000)) and np.isnan(c.p_se[0, 0])
    assert c.p_holm_se[1, 0] == pytest.approx(c.p_se[1, 0])  # one comparison: Holm's multiplier 1
    assert c.near_alpha[1, 0] and not c.near_alpha[0, 0]
    assert c.marks[1, 0] == ("*?" if c.significant[1, 0] else "?") and c.marks[0, 0] == ""
    assert "within two Monte Carlo standard errors of alpha 0.05 at 2,000 resamples" in c.note()
    d = c.to_dict()
    row = d["rows"][1]
    assert row["near_alpha"] is True and row["p_se"] == pytest.approx(c.p_se[1, 0]) and "p_holm_se" in row
    assert "resamples would settle it" in d["note"]
    # far from alpha: no mark of doubt, no note
    far = compare([a, SystemResult("c", {"ndcg@10": {q: v + 0.2 for q, v in a.per_query["ndcg@10"].items()}})],
                  ["ndcg@10"], n_resamples=2000)
    assert far.marks[1, 0] == "*" and not far.near_alpha.any() and far.note() == "" and "note" not in far.to_dict()


def test_holm_standard_error_follows_the_p_value_that_sets_each_adjusted_one():
    import importlib

    _holm_se = importlib.import_module("ragkit.eval.compare")._holm_se
    p = np.array([[np.nan, np.nan], [0.01, 0.04], [0.03, 0.5]])
    se = np.array([[np.nan, np.nan], [0.001, 0.002], [0.003, 0.004]])
    # sorted 0.01 (x4 = 0.04), 0.03 (x3 = 0.09), 0.04 (x2 = 0.08: 0.09 of 0.03 stands), 0.5 (x1)
    assert np.isnan(_holm_se(p, se)[0]).all()
    assert _holm_se(p, se)[1:] == pytest.approx(np.array([[4 * 0.001, 3 * 0.003], [3 * 0.003, 0.004]]))
    assert holm(p)[1:] == pytest.approx(np.array([[0.04, 0.09], [0.09, 0.5]]))


def test_marks_of_a_comparison():
    nan = np.nan
    arr = np.array
    c = Comparison(["a", "b", "c", "d"], ["m"], 0, 10, 1, arr([[0.5], [0.6], [0.6], [0.6]]), *(arr([[nan], [0.1], [0.1],
                   [0.1]]) for _ in range(3)), arr([[nan], [0.049], [0.051], [0.2]]),
                   arr([[nan], [0.049], [0.051], [0.2]]), 0.05, 0.95, 1000,
                   arr([[nan], [0.002], [0.002], [0.002]]), arr([[nan], [0.002], [0.002], [0.002]]))
    assert c.marks[:, 0].tolist() == ["", "*?", "?", ""]
    assert c.note().startswith("?: 2 Holm-corrected p-values within two Monte Carlo standard errors")
    assert "about 16,000 resamples would settle them" in c.note()  # 1000 x (2 x 0.002 / 0.001)^2


def test_one_draw_for_every_pair_gives_each_pair_its_own_numbers():
    """compare draws the signs and bootstrap indices once for every (system, metric) on the same queries:
    each p-value is still paired_randomization_test's of the pair alone, and each interval the one the
    pair alone gets."""
    import importlib

    cmp_mod = importlib.import_module("ragkit.eval.compare")
    rng = np.random.default_rng(4)
    metrics = ["ndcg@10", "recall@100", "mrr@10"]
    vals = {s: {m: rng.uniform(0, 1, len(QUERIES)) for m in metrics} for s in "abc"}
    res = [SystemResult(s, {m: dict(zip(QUERIES, map(float, v[m]))) for m in metrics}) for s, v in vals.items()]
    c = compare(res, metrics, baseline=1, n_resamples=3000, seed=7)
    for i, s in enumerate("abc"):
        for j, m in enumerate(metrics):
            if i == 1:
                continue
            a, b = dict(zip(QUERIES, vals[s][m])), dict(zip(QUERIES, vals["b"][m]))
            assert c.p_value[i, j] == paired_randomization_test(a, b, n_resamples=3000, seed=7)
            lo, hi = cmp_mod._bootstrap_ci((vals[s][m] - vals["b"][m])[:, None], [np.arange(len(QUERIES))], 0.95,
                                           3000, 7)
            assert (c.ci_low[i, j], c.ci_high[i, j]) == (lo[0], hi[0])
    # results of several datasets (weighted test, stratified bootstrap): the same, pair by pair
    groups = {q: ("x" if k < 10 else "y") for k, q in enumerate(QUERIES)}
    multi = [SystemResult(r.name, r.per_query, groups=groups) for r in res]
    cm = compare(multi, metrics, n_resamples=3000, seed=7)
    w = {q: 1 / (2 * (10 if groups[q] == "x" else 50)) for q in QUERIES}
    for i, s in ((1, "b"), (2, "c")):
        for j, m in enumerate(metrics):
            a, b = dict(zip(QUERIES, vals[s][m])), dict(zip(QUERIES, vals["a"][m]))
            assert cm.p_value[i, j] == paired_randomization_test(a, b, n_resamples=3000, seed=7, weights=w)


# --- 3. a relevance level no judgement reaches


def test_evaluate_refuses_a_relevance_level_above_every_grade():
    """Review: relevance_level=2 on SciFact (grades 1) scored recall, MAP, MRR and P 0.0000 without a word."""
    run = {"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d3": 1.0}}
    binary = {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 1}}
    with pytest.raises(ParamError, match=r"evaluate: relevance_level 2 counts no judgement as relevant: the qrels' "
                                         r"highest grade is 1, so recall, MAP, MRR and P would all be 0; give a "
                                         r"level of at most 1"):
        evaluate(run, binary, ["recall@10", "ndcg@10"], relevance_level=2)
    graded = {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}}
    assert evaluate(run, graded, ["recall@10"], relevance_level=2)["recall@10"] == pytest.approx(0.5)
    with pytest.raises(ParamError, match="relevance_level 3 counts no judgement as relevant: the qrels' highest "
                                         "grade is 2"):
        evaluate(run, graded, ["recall@10"], relevance_level=3)
    # level 1 on judgements that are all 0 is unchanged (the qrels, not the level, hold no relevant document)
    assert evaluate(run, {"q1": {"d1": 0}}, ["recall@10"])["recall@10"] == 0.0
    # the same check, callable before a long search (ragkit eval), naming its caller
    from ragkit.eval.metrics import check_relevance_level

    check_relevance_level(graded, 2)
    with pytest.raises(ParamError, match=r"--relevance-level: relevance_level 2 .* highest grade is 1, .*; give a "
                                         r"level of at most 1$"):
        check_relevance_level(binary, 2, where="--relevance-level")


def test_cli_compare_of_run_files_refuses_a_relevance_level_the_qrels_never_reach(tmp_path: Path):
    from ragkit.eval import write_beir
    from ragkit.types import Corpus

    data = write_beir(tmp_path / "tiny", Corpus(ids=["d1", "d2"], texts=["a", "b"]), {"q1": "x"},
                      {"test": {"q1": {"d1": 1}}})
    (tmp_path / "one.trec").write_text("q1 Q0 d1 1 2.0 x\n")
    (tmp_path / "two.trec").write_text("q1 Q0 d2 1 2.0 x\n")
    res = _cli(tmp_path / "one.trec", tmp_path / "two.trec", "--data", data, "-m", "mrr@10", "--resamples", "10",
               "--relevance-level", "2")
    assert res.exit_code == 2
    assert "relevance_level 2 counts no judgement as relevant: the qrels' highest grade is 1" in " ".join(
        res.output.split()), res.output


# --- 4. a result searched shallower than a metric's cut-off; what reproduces a comparison; few queries differ


def test_compare_warns_when_a_result_was_searched_shallower_than_a_cut_off(tmp_path: Path):
    """Review: ``ragkit compare bm25.json d10.json`` (d10: ``ragkit eval --depth 10``) reported a "significant"
    recall@100 drop without a word, though settings.depth recorded the depth and eval had noted it."""
    v = _values()
    full = _eval_json(tmp_path / "bm25.json", v, {"relevance_level": 1})
    d10 = _eval_json(tmp_path / "d10.json", v, {"relevance_level": 1, "depth": 10})
    payload = json.loads(d10.read_text())
    payload["per_query"]["recall@100"] = {q: x - 0.15 for q, x in payload["per_query"]["recall@100"].items()}
    d10.write_text(json.dumps(payload))
    a, b = load_result(full, name="bm25"), load_result(d10, name="d10")
    assert (a.depth, b.depth) == (None, 10)
    c = compare([a, b], ["ndcg@10", "recall@100"], n_resamples=100)
    assert c.shallow.tolist() == [[False, False], [False, True]] and c.significant[1, 1]
    [warning] = c.warnings()
    assert warning.startswith("! recall@100: d10 ranked at most 10 documents per query, fewer than its cut-off of "
                              "100") and "--depth 100 or more" in warning
    rows = {(r["system"], r["metric"]): r for r in c.to_dict()["rows"]}
    assert rows["d10", "recall@100"]["shallow"] and "shallow" not in rows["d10", "ndcg@10"]
    assert c.to_dict()["warnings"] == [warning]
    res = _cli(full, d10, "--resamples", "100")
    out = " ".join(res.output.split())
    assert res.exit_code == 0 and "recall@100 ! bm25" in out and "d10 !" in out, res.output
    assert "warning: ! recall@100: d10 ranked at most 10 documents per query" in out, res.output
    for bad in ("10", 0, True):
        with pytest.raises(DataError, match=r"settings\.depth must be a number of documents >= 1 or null"):
            load_result(_eval_json(tmp_path / "bad.json", v, {"depth": bad}))


def test_compare_output_records_what_reproduces_it(tmp_path: Path):
    """Review: ``compare -o`` JSON lacked the seed, dataset, split, input files and metrics (seeds 0 and 7 give
    different p-values): the file could not be reproduced from itself."""
    a = _eval_json(tmp_path / "a.json", _values(0), {"depth": None})
    b = _eval_json(tmp_path / "b.json", _values(1), {"depth": 100})
    out = tmp_path / "cmp.json"
    res = _cli(a, b, "--resamples", "100", "--seed", "7", "-m", "ndcg@10", "-o", out)
    assert res.exit_code == 0 and res.output.startswith("tiny / test: 60 queries · baseline a"), res.output
    d = json.loads(out.read_text())
    assert (d["seed"], d["dataset"], d["split"], d["metrics"], d["n_resamples"]) == (7, "tiny", "test", ["ndcg@10"],
                                                                                      100)
    assert d["systems"] == [{"name": "a", "source": str(a), "depth": None, "source_resolved": str(a.resolve()),
                             "sha256": hashlib.sha256(a.read_bytes()).hexdigest()},
                            {"name": "b", "source": str(b), "depth": 100, "source_resolved": str(b.resolve()),
                             "sha256": hashlib.sha256(b.read_bytes()).hexdigest()}]
    again = compare([load_result(s["source"], name=s["name"]) for s in d["systems"]], d["metrics"],
                    n_resamples=d["n_resamples"], seed=d["seed"], alpha=d["alpha"]).to_dict()
    assert again["rows"] == d["rows"]


def test_compare_says_when_few_queries_differ(tmp_path: Path):
    """A system that differs from the baseline on 3 of 60 queries got a bootstrap interval and a p-value as if
    every query told them apart; compare now says 'differ on 3 of 60 queries'."""
    v = _values()
    w = v.copy()
    w[:3] += 0.3
    same = SystemResult("same", {"ndcg@10": dict(zip(QUERIES, map(float, v)))})
    base = SystemResult("base", {"ndcg@10": dict(zip(QUERIES, map(float, v)))})
    few = SystemResult("few", {"ndcg@10": dict(zip(QUERIES, map(float, w)))})
    many = SystemResult("many", {"ndcg@10": dict(zip(QUERIES, map(float, v + 0.01)))})
    c = compare([base, few, same, many], ["ndcg@10"], n_resamples=100)
    assert c.n_differ[1:, 0].tolist() == [3, 0, 60]
    assert c.few_differ() == ["ndcg@10: few and base differ on 3 of 60 queries: the interval and the p-value rest on "
                              "those 3 (an exact sign-flip test of 3 differences gives no p-value below 0.25)",
                              "ndcg@10: same and base score all 60 queries alike"]
    rows = {r["system"]: r for r in c.to_dict()["rows"]}
    assert (rows["few"]["n_differ"], rows["many"]["n_differ"]) == (3, 60) and len(c.to_dict()["few_differ"]) == 2
    a = _eval_json(tmp_path / "a.json", v)
    b = _eval_json(tmp_path / "b.json", w)
    res = _cli(a, b, "--resamples", "100", "-m", "ndcg@10")
    assert "note: ndcg@10: b and a differ on 3 of 60 queries" in " ".join(res.output.split()), res.output
