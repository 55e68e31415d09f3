"""The dense and MUVERA benches time what they compare in the same interleaved rounds, report an HNSW graph's
quality over several builds, and run the MUVERA operator with the candidate count the bench chose.

A speed ratio made of two timings taken minutes apart on a shared machine measures the load as much as the
code (the README's MUVERA speed-up read 23.2x and 29.3x from the same code; dense's ragkit f32 graph read
12,385 q/s in its table and 26,950 q/s in the raw-usearch section of the same run), and one multi-threaded
HNSW build can be lucky or unlucky (recall@10 0.959 to 0.992 on the same 1,227 documents)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from conftest import bench_module

REPO = Path(__file__).resolve().parents[1]


def _run_main(module, argv: list[str], out: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        with mock.patch.object(sys, "argv", argv), mock.patch.dict(os.environ, {"RAGKIT_BENCH_OUT": str(out)}), \
                mock.patch.object(module, "OUT", out, create=True):  # (read from the variable at import)
            module.main()
    finally:
        sys.path.remove(str(REPO / "bench"))


def test_dense_times_a_table_in_interleaved_rounds_and_graphs_over_builds() -> None:
    """Every configuration is built first, then searched in rounds that call each once (order shuffled), so
    the q/s of one table come from the same rounds; a graph configuration (``rebuild``) is also searched on
    ``builds - 1`` fresh builds, each shared by the rows of its graph, and reports median and min."""
    dense = bench_module("dense")
    log: list[str] = []
    ref = np.arange(10)[None, :].repeat(2, 0)
    builds = iter([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [0, 1, 2, 3, 4, 5, 6, 7, 90, 91], [0, 1, 2, 3, 4, 5, 6, 7, 8, 91]])
    rebuilt: list[int] = []

    def graph():  # each build returns different "neighbours": recall 1.0, then 0.8, then 0.9
        rebuilt.append(1)
        return np.array([next(builds)] * 2)

    def search(name):
        return lambda obj: log.append(name) or obj

    cfgs = [dense.Config("exact", "numpy", lambda: ref.copy(), search("exact"), lambda o: 80),
            dense.Config("g ef=1", "ragkit-hnsw", graph, search("g1"), lambda o: 80, rebuild=("g", graph)),
            dense.Config("g ef=2", "ragkit-hnsw", lambda: np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]] * 2),
                         search("g2"), lambda o: 80, rebuild=("g", graph))]
    rows = dense.run_configs(None, ref, ref, cfgs, k=10, repeat=3, builds=3)
    timed = log[3:3 + 9]  # after one warm-up call each: 3 rounds of the 3 searches, each round shuffled (seeded)
    orders = dense.interleaved.__globals__["round_orders"](["exact", "g1", "g2"])
    short = {"exact": "exact", "g ef=1": "g1", "g ef=2": "g2"}
    assert log[:3] == ["exact", "g1", "g2"] and timed == [short.get(n, n) for _ in range(3) for n in next(orders)], log
    by = {r["config"]: r for r in rows}
    assert "builds" not in by["exact"] and by["exact"]["recall@10"] == 1.0
    assert by["g ef=1"]["recall@10"] == 1.0  # the timed build's, where its q/s comes from
    assert by["g ef=1"]["recall@10_builds"] == [1.0, 0.8, 0.9] and by["g ef=1"]["recall@10_median"] == 0.9
    assert by["g ef=1"]["recall@10_min"] == 0.8 and by["g ef=1"]["builds"] == 3
    assert by["g ef=2"]["recall@10_builds"] == [1.0, 0.8, 0.9]  # the same fresh graphs: built once per round
    assert len(rebuilt) == 3  # the timed build + 2 fresh ones, shared by both rows of graph "g"


class _Clock:
    """A stand-in for ``time.perf_counter`` that moves only when a timed search says so (no real timing)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_dense_times_every_search_for_min_seconds() -> None:
    """A q/s was the best of ``--repeat`` (3) rounds of 2-20 ms calls (3 vs 30 rounds moved ragkit exact from
    9,193 to 11,800 q/s): now the rounds go on until every search has been timed ``min_seconds`` in all, as in
    bm25.py and bm25_memory.py, and the table says how many rounds it took."""
    dense = bench_module("dense")
    clock, calls = _Clock(), {"fast": 0, "slow": 0}
    ref = np.arange(10)[None, :].repeat(2, 0)

    def search(name: str, seconds: float):
        def run(obj):
            clock.now += seconds
            calls[name] += 1
            return obj
        return run

    cfgs = [dense.Config("fast", "numpy", lambda: ref.copy(), search("fast", 1 / 64), lambda o: 80),
            dense.Config("slow", "numpy", lambda: ref.copy(), search("slow", 1 / 16), lambda o: 80)]
    timing: dict = {}
    with mock.patch("time.perf_counter", clock):
        rows = dense.run_configs(None, ref, ref, cfgs, k=10, repeat=3, min_seconds=0.5, timing=timing)
    assert timing == {"rounds": 32, "min_seconds": 0.5}  # 32 rounds x 1/64 s: the fastest timed 0.5 s in all
    assert calls == {"fast": 33, "slow": 33}  # (+ one warm-up call each)
    assert [r["qps"] for r in rows] == [128.0, 32.0]  # (2 queries; times exact in binary)
    with mock.patch("time.perf_counter", clock):
        dense.run_configs(None, ref, ref, cfgs, k=10, repeat=3, timing=timing)
    assert timing["rounds"] == 3  # (min_seconds 0: --repeat rounds)


def test_dense_min_seconds_flag_reaches_the_tables(tmp_path: Path) -> None:
    """``--min-seconds`` is the rounds' floor of every table, kept in the JSON with the rounds it took; a
    negative one is refused."""
    dense = bench_module("dense")
    argv = ["dense.py", "--quick", "--no-scifact", "--no-hnsw", "--n", "300", "--n-queries", "5", "--repeat", "1",
            "--only", "exact f32", "--out", str(tmp_path)]
    _run_main(dense, argv + ["--min-seconds", "0.05"], tmp_path)
    res = json.loads((tmp_path / "dense_quick.json").read_text())
    assert res["synthetic"]["min_seconds"] == 0.05 and res["synthetic"]["rounds"] >= 1
    assert res["args"]["min_seconds"] == 0.05 and ">= 0.05 s in all" in res["timing"]
    with pytest.raises(SystemExit):
        _run_main(dense, argv + ["--min-seconds", "-1"], tmp_path)


def test_dense_raw_usearch_in_the_tables_rounds(tmp_path: Path) -> None:
    """ragkit-vs-raw-usearch pairs come from the synthetic table's own rounds (ragkit's q/s is its table row's),
    and every HNSW row (ragkit's and faiss's) carries its recall@10 over ``--builds`` builds."""
    pytest.importorskip("usearch")
    dense = bench_module("dense")
    _run_main(dense, ["dense.py", "--quick", "--no-scifact", "--n", "1500", "--n-queries", "20", "--ef", "16,48",
                      "--repeat", "2", "--builds", "2", "--threads", "2", "--out", str(tmp_path)], tmp_path)
    res = json.loads((tmp_path / "dense_quick.json").read_text())
    syn = res["synthetic"]
    by = {r["config"]: r for r in syn["rows"]}
    assert not any(name.startswith("raw usearch") for name in by)  # (pairs only, not table rows)
    assert [p["ef"] for p in syn["ragkit_vs_usearch"]] == [16, 48]
    for p in syn["ragkit_vs_usearch"]:
        row = by[f"ragkit hnsw f32 ef={p['ef']}"]
        assert p["ragkit_qps"] == row["qps"] and p["recall@10"] == row["recall@10"]
        assert p["ragkit/usearch"] == round(p["ragkit_qps"] / p["usearch_qps"], 3)
    graphs = [r for r in syn["rows"] if "hnsw" in r["config"].lower()]
    assert graphs and all(r["builds"] == 2 and len(r["recall@10_builds"]) == 2
                          and r["recall@10_min"] <= r["recall@10_median"] for r in graphs)
    assert all("builds" not in r for r in syn["rows"] if "hnsw" not in r["config"].lower())
    assert res["builds"] == 2 and "interleaved rounds" in res["timing"]


@pytest.mark.slow
def test_muvera_times_brute_force_with_its_paths_and_runs_the_chosen_count(tmp_path: Path, capsys) -> None:
    """The brute force is timed in the same rounds as the MUVERA paths (each round calls each once, order
    shuffled), so every speed-up divides timings from the same rounds; the operator row reranks the main
    config's candidate count (50), not 100, and the 100-candidate row is kept, labelled as not the chosen."""
    import ragkit.retrievers.fde as fde

    mv = bench_module("muvera")
    log: list[str] = []
    chamfer, path = fde.chamfer_scores, mv._muvera_path

    def brute(*a, **kw):
        log.append("brute")
        return chamfer(*a, **kw)

    def muvera_path(spec, cfg, dfde, short, qd, q_off, docs, c):
        log.append(f"path{c}")
        return path(spec, cfg, dfde, short, qd, q_off, docs, c)

    with mock.patch.object(fde, "chamfer_scores", brute), mock.patch.object(mv, "_muvera_path", muvera_path):
        _run_main(mv, ["muvera.py", "--quick", "--configs", "3xidx1+m1", "--main", "3xidx1+m1", "--candidates",
                       "10,50", "--main-candidates", "50", "--repeat", "2", "--tau", "0.9"], tmp_path)
    # the order shuffled per round, seeded (a shuffle's permutation depends on the number of keys only)
    orders = mv.interleaved.__globals__["round_orders"](["brute", "path10", "path50"])
    assert log == [n for _ in range(2) for n in next(orders)], log
    res = json.loads((tmp_path / "muvera_quick.json").read_text())
    assert res["rounds"] == 2 and "interleaved" in res["timing"]
    for row in res["configs"][0]["by_candidates"]:
        assert row["speedup_vs_brute"] == pytest.approx(res["brute_force"]["ms_per_query"] / row["ms_per_query"])
    assert res["operator"] == {"config": "3xidx1+m1", "candidates": 50, "k": 50, "shortlist": None}
    names = list(res["ndcg@10"])
    assert "muvera 3xidx1+m1 + rerank@50" in names and "muvera + bm25 (RRF k=60; muvera rerank@50)" in names
    assert any(n.startswith("muvera 3xidx1+m1 + rerank@100 (") and "not the chosen 50" in n for n in names)
    assert "returns its top 50" in capsys.readouterr().out


def test_cachecraft_agreement_does_not_reward_an_answer_that_stops_early() -> None:
    """The greedy agreement is the share of the reference (full prefill's) answer repeated before the first
    difference: an answer stopping after 2 of the reference's 6 tokens scored 1.0 (divided by its own length)."""
    agree = bench_module("cachecraft").agree_prefix
    assert agree([1, 2], [1, 2, 3, 4, 5, 6], 32) == pytest.approx(2 / 6)
    assert agree([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], 4) == 1.0
    assert agree([1, 9, 3], [1, 2, 3], 32) == pytest.approx(1 / 3)


def test_interleaved_best_times_first_calls_apart_on_the_clock_given() -> None:
    """``_common.interleaved_best`` (bench/bm25.py's, shared with bench/bm25_memory.py): a first call of each,
    timed apart, then :func:`interleaved`'s rounds; both on the ``clock`` given (bench/bm25_sparse_topk.py's is
    ``time.process_time``)."""
    common = bench_module("_common")
    clock, log = _Clock(), []

    def call(key: str, dt: float):  # noqa: ANN202
        def fn() -> str:
            clock.now += dt
            log.append(key)
            return key
        return fn

    first, best, result, rounds = common.interleaved_best({"a": call("a", 0.25), "b": call("b", 0.5)}, 3,
                                                          clock=clock)
    assert first == {"a": 0.25, "b": 0.5} and best == {"a": 0.25, "b": 0.5} and result == {"a": "a", "b": "b"}
    assert rounds == 3 and log[:2] == ["a", "b"] and sorted(log[2:]) == ["a"] * 3 + ["b"] * 3
    with mock.patch("time.perf_counter", clock):  # (no clock: time.perf_counter, looked up at the call)
        assert common.interleaved({"a": call("a", 0.125)}, 2)[0] == {"a": 0.125}


def test_bm25_sparse_topk_shuffles_the_two_paths_order_each_round(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """bench/bm25_sparse_topk.py timed the dense path, then the sparse one, in that order every round (the
    ordering bias _common.interleaved's seeded shuffles remove): it now times them with interleaved, on CPU
    time, and the order changes between rounds."""
    import time

    mod = bench_module("bm25_sparse_topk")
    clocks: list[object] = []
    real = mod.interleaved

    def spy(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        clocks.append(kw.get("clock"))
        return real(*a, **kw)

    order: list[bool] = []
    search = mod.BM25.search

    def recording(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        order.append(mod.bm25_mod._DENSE_TOPK)
        return search(self, *a, **kw)

    monkeypatch.setattr(mod, "interleaved", spy)
    monkeypatch.setattr(mod.BM25, "search", recording)
    repeat = 4
    _run_main(mod, ["bm25_sparse_topk.py", "--quick", "--queries", "3", "--repeat", str(repeat)], tmp_path)
    assert clocks and all(c is time.process_time for c in clocks), clocks
    per_case = [order[i:i + 2 * repeat] for i in range(0, len(order), 2 * repeat)]
    assert len(per_case) == len(clocks) and all(len(case) == 2 * repeat for case in per_case), order
    for case in per_case:
        rounds = [tuple(case[i:i + 2]) for i in range(0, len(case), 2)]
        assert all(sorted(r) == [False, True] for r in rounds), rounds  # each path once a round
        assert len(set(rounds)) == 2, rounds  # neither path always first
    res = json.loads((tmp_path / "bm25_sparse_topk_quick.json").read_text())
    assert res["rankings_identical"] and "interleaved rounds" in res["timing"]


def test_timing_args_default_min_seconds_by_quick(monkeypatch) -> None:  # noqa: ANN001
    """``--min-seconds`` defaults to 0.05 s with ``--quick`` (0.5 s otherwise) in bench/dense.py and now
    bench/bm25.py too (whose --quick kept 0.5 s); a negative or infinite one is refused, naming the flag."""
    import argparse

    common = bench_module("_common")

    def parsed(*argv: str) -> argparse.Namespace:
        ap = argparse.ArgumentParser()
        ap.add_argument("--quick", action="store_true")
        common.add_timing_args(ap)
        args = ap.parse_args(list(argv))
        common.timing_args(ap, args)
        return args

    assert (parsed("--quick").min_seconds, parsed().min_seconds, parsed("--quick", "--min-seconds", "2").min_seconds,
            parsed("--min-seconds", "0").min_seconds, parsed().repeat) == (0.05, 0.5, 2.0, 0.0, 3)
    for bad in ("-1", "inf", "nan"):
        with pytest.raises(SystemExit):
            parsed("--min-seconds", bad)
    bm = bench_module("bm25")
    seen: list[argparse.Namespace] = []
    real = bm.timing_args
    monkeypatch.setattr(bm, "timing_args", lambda ap, args: (real(ap, args), seen.append(args)))
    monkeypatch.setattr(bm, "compared_missing", lambda: "(stopped by the test after reading its flags)")
    with mock.patch.object(sys, "argv", ["bm25.py", "--quick"]), pytest.raises(SystemExit):
        bm.main()
    assert seen and seen[0].min_seconds == 0.05 and seen[0].repeat == 3
