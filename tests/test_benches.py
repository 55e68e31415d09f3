"""The benches behind the README's tables run end to end in their ``--quick`` smoke modes, so they
do not rot unseen (their numbers are the benches' business, not the tests').  Seconds here with the
corpus's sentence and token vectors cached: diversity ~20, filters ~15, muvera ~70, hubness ~70,
quality ~55, scale ~45 (its shard part), cachecraft ~75 before its timings became best of 2 rounds (SmolLM2-135M's
load ~25 of it; the rounds take ~1.4x its CPU time), pipeline_overhead ~1, langchain ~2.  The bm25 and
dense benches have their own quick tests beside the code they measure.  Every run writes into a temporary
folder (RAGKIT_BENCH_OUT), never over bench/out's results, and its JSON is checked for what the bench claims."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
from conftest import bench_module

REPO = Path(__file__).resolve().parents[1]


def _finite(*xs: object) -> bool:
    """Every value a real, finite number (a bool is not one)."""
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in xs)


def _held_out(rows: object) -> None:
    """Every row records that its fitted pipeline learned from (or its setting was chosen on) none of the test
    queries it is evaluated on (``learned_from_test``, from ``learned_from``): a bench fitted on test passed
    its check before, its numbers finite all the same."""
    rows = list(rows.values()) if isinstance(rows, dict) else list(rows)  # type: ignore[call-overload]
    assert rows and all(row["learned_from_test"] == 0 for row in rows), rows


def _check_bm25_memory(r: dict) -> None:
    for mine, peer in (("fit", "peer_fit"), ("load_mmap", "peer_load_mmap")):
        assert mine in r and peer in r, list(r)
    for phase in ("fit", "peer_fit"):  # ragkit's and bm25s's: time, peak, RSS retained, and traced live bytes
        f = r[phase]["fit"]
        assert _finite(f["s"], f["peak_extra_MB"], f["rss_retained_MB"]) and "kept_MB" not in f, f
        assert _finite(r[phase]["held_bytes_per_posting"], r[phase]["traced"]["live_MB"], r[phase]["traced"]["peak_MB"])
        assert r[phase]["traced"]["live_MB"] > 0
    best = r["search"]["best_s"]
    assert {"ragkit", "ragkit_mmap", "bm25s", "bm25s_mmap"} <= set(best) and _finite(*best.values())
    ratios = r["ragkit_vs_bm25s"]
    assert {"fit.fit.s", "fit.held_bytes_per_posting", "search.s", "search_mmap.s"} <= set(ratios), ratios
    assert _finite(*ratios.values()) and "failed" not in r


def _check_filters(r: dict) -> None:
    ops = r["operating_points"]
    adapters = [n for n in ops if n.startswith("adapter")]
    assert len(adapters) == 2 and any(n.startswith("top-") for n in ops) and any(n.endswith("x top") for n in ops)
    assert all(_finite(o["precision"], o["recall"], o["mean_kept"]) for o in ops.values())
    _held_out(ops)
    _held_out([r["choice_on_train"]])
    baselines = {"raw cosine", "cosine / top cosine", "rank (top-k)"}
    assert baselines | set(adapters) == set(r["pr"]) and all(_finite(*d.values()) for d in r["pr"].values())
    for name in adapters:  # at the adapter's recall, against every baseline score (not raw cosine alone)
        eq = r["equal_recall"][name]
        assert set(eq["baseline_precision"]) == baselines and _finite(*eq["baseline_precision"].values())
        assert _finite(*eq["adapter_over_baseline"].values(), eq["recall"], eq["adapter_precision"],
                       eq["adapter_curve_precision"])
        assert eq["best_baseline"] in baselines and isinstance(eq["beats_every_baseline"], bool)
    assert _finite(r["ndcg@10"]["dense"], r["ndcg@10"]["dense | adapter"])


def _check_diversity(r: dict) -> None:
    systems = r["systems"]
    assert "dense" in systems and any(n.startswith("mmr") for n in systems) and "knn chosen on train" in systems
    for row in systems.values():
        assert _finite(row["ndcg@10"], row["recall@100"], row["ild@10"], row["latency_ratio"]), row
    pairs = r["pairs"]["systems"]
    assert "dense" in pairs and all(_finite(p["s_recall@10"], p["alpha_ndcg@10"]) for p in pairs.values())
    _held_out(systems)
    _held_out(pairs)


def _check_hubness(r: dict) -> None:
    rows = r["results"]
    assert "raw cosine" in rows and len(rows) > 1, list(rows)
    for row in rows.values():
        assert _finite(row["ndcg@10"], row["recall@100"], row["p_ndcg@10"], row["hubness"]["skewness"],
                       row["hubness_probe"]["skewness"]), row
    _held_out(rows)
    assert _finite(r["random_floor"]["test"], r["random_floor"]["probe"])


def _check_quality(r: dict) -> None:
    rows = r["results"]
    assert {"BM25", "MiniLM dense", r["best_learned"], r["best_unlearned"]} <= set(rows)
    assert all(_finite(v["ndcg@10"], v["recall@100"]) for v in rows.values()) and 0 <= r["p_value"] <= 1
    _held_out(rows)


def _check_scale(r: dict) -> None:
    sh = r["shards"]
    assert _finite(sh["single_query_ms"], sh["sharded_query_ms"], sh["single_recall@10"], sh["sharded_recall@10"],
                   sh["merge_ms_per_query"], *sh["per_shard_query_ms"])
    assert len(sh["per_shard_query_ms"]) == sh["shards"]
    # --repeat (default 5) and --quick's --min-seconds 0.05, the searches' rounds and the merge's own recorded
    assert sh["repeat"] == 5 and sh["min_seconds"] == 0.05, sh
    assert sh["rounds"] >= sh["repeat"] and sh["merge_rounds"] >= sh["repeat"], sh


def _check_cachecraft(r: dict) -> None:
    modes = r["modes"]
    assert {"full", "prefix", "naive", "cachecraft r"} <= set(modes), list(modes)
    assert all(_finite(m["t"], m["kl"], m["speedup"]) and m["t"] > 0 for m in modes.values())
    assert r["sweep"] and all(_finite(x["kl"], x["t"], x["full_t"]) for x in r["sweep"])


def _check_pipeline_overhead(r: dict) -> None:
    assert r["quick"] is True and _finite(r["direct_ms"], r["pipeline_ms"], r["overhead_pct"])


def _check_langchain(r: dict) -> None:
    assert r["results"]
    for row in r["results"]:  # the wrapper, the direct pipeline and LangChain's default batch, same documents
        assert row["equal"] is True and row.get("lc_default_equal") is True, row
        assert _finite(row["direct_median_s"], row["wrapper_median_s"], row["overhead_pct"],
                       row["lc_default_median_s"], row["lc_default_vs_wrapper"])


def _check_sparse_topk(r: dict) -> None:
    rows = r["rows"]
    assert {row["queries"] for row in rows} == {"rare", "mid", "broad", "mixed", "common"} and r["rankings_identical"]
    assert all(_finite(row["dense_ms_per_query"], row["sparse_ms_per_query"], row["dense_over_sparse"],
                       row["matches_per_query"]) for row in rows), rows
    assert r["docs"] == 5000 and r["queries_per_set"] == 20  # --quick's sizes


def _check_eval_io(r: dict) -> None:
    assert [e["queries"] for e in r["evaluate"]] == [200, 1000] and r["corpus"]["documents"] == 5000
    for name in ("save", "read_corpus"):  # old and new from the same interleaved rounds
        t = r[name]
        assert _finite(t["new_s"], t["old_s"], t["old_over_new"]) and t["rounds"] >= r["repeat"], t


def _check_muvera(r: dict) -> None:
    assert r["configs"] and _finite(r["brute_force"]["ms_per_query"], r["brute_force"]["ndcg@10"])
    carved = [v for k, v in r["main_extra"].items() if k.startswith("ball_carve_")]
    assert carved and all(_finite(b["rerank_ms_per_query"], b["uncarved_rerank_ms_per_query"])
                          and b["rounds"] >= r["repeat"] for b in carved), carved  # both from the same rounds


def _check_machine(r: dict, stdout: str | None = None) -> None:
    """A bench's JSON says what machine its timings come from (``_common.machine``), and it said so at its start."""
    m = r["machine"]
    assert isinstance(m, dict) and {"cpu", "cpus", "threads", "load_average", "python", "numpy", "torch",
                                    "platform"} <= set(m), m
    assert isinstance(m["cpus"], int) and m["cpus"] >= 1 and m["python"] and m["numpy"], m
    if stdout is not None:
        assert "machine: " in stdout and f"{m['cpus']} CPUs" in stdout, stdout[:2000]


BENCHES = [  # (script and flags, expected in stdout, JSON written, what it must hold)
    ("diversity.py", "knn chosen on train", "diversity_quick.json", _check_diversity),
    ("filters.py", "at equal recall", "filters_quick.json", _check_filters),
    # MUVERA's ms/query: its whole path timed as one call, best of --repeat like the brute force (was a sum of
    # separately best-of'd stages, which favours it)
    # (--main auto chooses on 100 train queries, not all 809: ~85 -> ~37 s on 2 cores)
    ("muvera.py --select-queries 100", "timed as one call", "muvera_quick.json", _check_muvera),
    ("hubness.py", "halving raw skewness", "hubness_quick.json", _check_hubness),
    ("quality.py", "best learned", "quality_quick.json", _check_quality),
    # its Ray encoding part (~80 s: three encodings of 200 documents) is what tests/test_scale.py runs already
    ("scale.py --skip-encode", "searched alone", "scale_quick.json", _check_scale),
    # every mode, the selector sweep, the plot and the streaming pass, on short prompts (SmolLM2-135M)
    # (each timed best of 2 rounds in orders shuffled every round: `full` always went first, once, and then each
    # always right after the same other one, in rotated orders)
    # (one measured prompt of 32-token chunks, 4 new tokens: ~100 -> ~40 s)
    ("cachecraft.py --queries 1 --chunk-tokens 32 --new-tokens 4", "best of 2 rounds per prompt",
     "cachecraft_quick.json", _check_cachecraft),
    # search times from interleaved best-of-N rounds in one process (was one ~12 ms call per phase)
    ("bm25_memory.py", "interleaved rounds", "bm25_memory_quick.json", _check_bm25_memory),
    ("pipeline_overhead.py", "pipeline overhead", "pipeline_overhead_quick.json", _check_pipeline_overhead),  # ~1 s
    ("langchain.py", "overhead", "langchain_quick.json", _check_langchain),  # ~2 s
    # 5,000 synthetic documents, both top-k paths, rankings checked identical (~2 s)
    ("bm25_sparse_topk.py", "rankings identical in every case", "bm25_sparse_topk_quick.json", _check_sparse_topk),
    # a machine line and a JSON, as every bench (it had neither); old / new pairs in interleaved rounds (~5 s)
    ("eval_io.py", "interleaved rounds", "eval_io_quick.json", _check_eval_io),
]


def _run_bench(script: str, flags: list[str], out_dir: Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    """bench/<script> --quick, its outputs sent to ``out_dir`` (RAGKIT_BENCH_OUT): bench/out's real results stay."""
    return subprocess.run([sys.executable, str(REPO / "bench" / script), "--quick", *flags], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env={**os.environ, "RAGKIT_BENCH_OUT": str(out_dir)})


@pytest.mark.slow
@pytest.mark.parametrize("bench, expect, written, check", BENCHES, ids=[b[0].split()[0] for b in BENCHES])
def test_bench_quick_runs(bench: str, expect: str, written: str, check, tmp_path: Path) -> None:  # noqa: ANN001
    """Each bench runs, says what it measured, and its JSON (in a temporary folder, never over bench/out's)
    holds the peers and ratios it claims, as finite numbers."""
    script, *flags = bench.split()
    out = _run_bench(script, flags, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert expect in out.stdout and f"wrote {tmp_path}" in out.stdout, out.stdout[-3000:]
    res = json.loads((tmp_path / written).read_text())
    check(res)
    _check_machine(res, out.stdout)  # said at its start and kept in its JSON
    # a quick run evaluates a few queries: against the qrels of those only (diversity's train selection passed all
    # 809 judged train queries' and warned 26 times that 609 were not in the run)
    assert "judged queries are not in the run" not in out.stdout + out.stderr, out.stderr[-3000:]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_held_out_refuses_a_result_taught_on_the_test_queries() -> None:
    """The quality, filters, hubness and diversity benches fitted and chose on the train split by convention
    only: fitting on the test queries passed their tests.  ``held_out`` (called per row before it is evaluated)
    is 0 for a pipeline fitted on other queries and refuses, naming the row and the count, one that learned from
    the evaluated queries (``learned_from``: same id and text) or a choice made by hand on them (their ids, given
    as a Queries, a State or a list)."""
    from ragkit import Corpus, Queries, TrainSet
    from ragkit.pipelines import Pipeline
    from ragkit.types import State

    common = bench_module("_common")
    topics = ["stem cells", "protein folding", "vitamin d", "bone density", "insulin resistance", "gut bacteria",
              "blood pressure", "tumour growth"]
    texts = [f"{t} {w}" for t in topics for w in ("study in patients", "trial results")]
    corpus = Corpus(ids=[f"doc-{i}" for i in range(len(texts))], texts=texts)
    queries = Queries([f"q{i}" for i in range(len(topics))], [f"what about {t}?" for t in topics])
    qrels = {q: {f"doc-{2 * i}": 2, f"doc-{(2 * i + 5) % len(texts)}": 0} for i, q in enumerate(queries.ids)}
    train_q, test_q = queries[:6], queries[6:]
    yaml = ("pipeline:\n  - parallel:\n      branches: [{bm25: {k: 5}}, {bm25: {k: 5, k1: 1.5}}]\n"
            "      fuse: {rrf: {learn: true}}\n")

    def fitted(on: Queries):  # noqa: ANN202
        return Pipeline.from_yaml(yaml).fit(corpus, TrainSet(on, {q: qrels[q] for q in on.ids}))

    assert common.held_out(test_q, "learned", fitted(train_q), train_q, State.of(train_q), ["q0"]) == 0
    assert common.held_out(test_q, "bm25", Pipeline.from_yaml("pipeline: [{bm25: {}}]").fit(corpus)) == 0
    with pytest.raises(common.TaughtOnTest, match=r"^learned: learned from 2 of the 2 evaluated test queries "
                                                   r"\('q6', 'q7'\), whose scores would not be held out"):
        common.held_out(test_q, "learned", fitted(queries[4:]))
    for chosen in (queries[7:], State.of(queries[7:]), ["q7"]):  # a cut-off or setting chosen on one test query
        with pytest.raises(common.TaughtOnTest, match=r"^tuned: learned from 1 of the 2 evaluated test queries "
                                                       r"\('q7'\)"):
            common.held_out(test_q, "tuned", fitted(train_q), chosen)
    with pytest.raises(TypeError, match=r"held_out\('x'\): source 0 must be .*got int"):
        common.held_out(test_q, "x", 3)
    with pytest.raises(TypeError, match=r"held_out\('x'\): the evaluated queries must be a ragkit Queries"):
        common.held_out(["q6"], "x")


def test_pipeline_overhead_quick_writes_its_own_file(tmp_path: Path) -> None:
    """--quick wrote over the full run's pipeline_overhead.json; it writes pipeline_overhead_quick.json, in the
    folder RAGKIT_BENCH_OUT names."""
    out = _run_bench("pipeline_overhead.py", ["--queries", "50"], tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline_overhead_quick.json"]
    _check_pipeline_overhead(json.loads((tmp_path / "pipeline_overhead_quick.json").read_text()))


def test_write_atomic_leaves_the_old_file_or_the_new_one(tmp_path: Path) -> None:
    """A write killed before its rename leaves the previous file whole and no temporary file."""
    common = bench_module("_common")
    path = tmp_path / "sub" / "r.json"
    common.write_atomic(path, "old")
    with mock.patch.object(common.os, "replace", side_effect=KeyboardInterrupt), pytest.raises(KeyboardInterrupt):
        common.write_atomic(path, "new, never complete")
    assert path.read_text() == "old" and [p.name for p in path.parent.iterdir()] == ["r.json"]
    assert common.write_atomic(path, b"\x00bytes").read_bytes() == b"\x00bytes"
    common.save_npy_atomic(tmp_path / "v.npy", np.arange(3.0))
    assert np.load(tmp_path / "v.npy").tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(TypeError, match="r.json.*data must be str or bytes, got dict"):
        common.write_atomic(path, {"a": 1})


def test_diversity_query_cache_recovers_from_a_truncated_file(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A run killed in the middle of np.save left a truncated cache file, and every later run crashed on it
    ('Failed to read all data for array') until it was deleted by hand: now it is encoded again."""
    dv = bench_module("diversity")
    monkeypatch.setattr(dv, "CACHE", tmp_path / "cache", raising=False)
    monkeypatch.setattr(dv, "OUT", tmp_path)  # (where the cache was before)
    calls = []

    class Enc:
        key = "fake-enc"

        def encode_queries(self, texts: list[str]) -> np.ndarray:
            calls.append(len(texts))
            return np.ones((len(texts), 4), np.float32)

    assert dv.query_vectors(Enc(), ["a", "b"]).shape == (2, 4) and calls == [2]
    (cached,) = (tmp_path / "cache").iterdir()
    cached.write_bytes(cached.read_bytes()[:-10])  # as a killed np.save left it
    assert dv.query_vectors(Enc(), ["a", "b"]).shape == (2, 4) and calls == [2, 2]
    assert np.load(cached).shape == (2, 4)  # written again, whole
    assert dv.query_vectors(Enc(), ["a", "b"]).shape == (2, 4) and calls == [2, 2]  # and read from the cache


def test_bm25_memory_failing_phase_shows_its_stderr_and_keeps_the_finished(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A failing phase said only 'returned non-zero exit status 1' (its stderr captured and dropped) and the
    phases that had finished were not written: now its stderr's tail is in the error and the JSON holds them."""
    bm = bench_module("bm25_memory")

    def fake_run(cmd: list[str], **kw) -> subprocess.CompletedProcess:  # noqa: ANN003
        phase = cmd[cmd.index("--phase") + 1]
        done = subprocess.CompletedProcess(cmd, 0, json.dumps({phase: {"s": 1.0}}) + "\n", "")
        failed = subprocess.CompletedProcess(cmd, 1, "", "Traceback (most recent call last):\n  ...\n"
                                                         "MemoryError: the load ran out")
        got = failed if phase == "load" else done
        if kw.get("check"):
            got.check_returncode()
        return got

    out = tmp_path / "m.json"
    monkeypatch.setattr(bm.subprocess, "run", fake_run)
    monkeypatch.setattr(sys, "argv", ["bm25_memory.py", "some_folder", "--out", str(out)])
    with pytest.raises(SystemExit) as e:
        bm.main()
    assert "phase 'load' failed (exit status 1)" in str(e.value) and "MemoryError: the load ran out" in str(e.value)
    res = json.loads(out.read_text())
    assert res["fit"] == {"fit": {"s": 1.0}} and "load" not in res
    assert res["failed"]["phase"] == "load" and res["failed"]["stderr_tail"].endswith("the load ran out")


def test_muvera_select_maps_rows_through_its_corpus() -> None:
    """``_select`` ranks the token vectors of the corpus it is given (the ``--quick`` slice) and must map those
    rows to that corpus's ids: it used all of SciFact's (row i of the slice is not row i of SciFact), so the
    quick run's train nDCG, and the choice made on it, were computed for the wrong documents.  Here train
    query j has one token e_j and each document one token e_j per train query it is relevant to (a
    non-relevant one: the last axis), so exact Chamfer ranks every query's relevant documents first and
    nDCG@10 is 1 with the right ids (0.0 with SciFact's)."""
    from ragkit import load_beir
    from ragkit.retrievers.fde import FDEConfig, fde_documents

    mv = bench_module("muvera")
    ds = load_beir(mv.SCIFACT)
    train, qrels = ds.queries("train"), ds.qrels("train")
    rel = sorted(ds.corpus.row_of({d for v in qrels.values() for d in v}).tolist())
    other = np.setdiff1d(np.arange(len(ds.corpus)), rel)[:3]  # and three documents relevant to none
    rows = np.array(rel[::-1] + other.tolist())  # reversed: a slice row is not the SciFact row of that number
    corpus = ds.corpus.subset(rows)
    dim = len(train) + 1
    axis = {q: j for j, q in enumerate(train.ids)}
    tokens = [[axis[q] for q, v in qrels.items() if d in v] or [dim - 1] for d in corpus.ids]
    lens = np.array([len(t) for t in tokens])
    data = np.eye(dim, dtype=np.float32)[np.concatenate(tokens)]
    docs = SimpleNamespace(data=data, offsets=np.concatenate([[0], np.cumsum(lens)]))
    of_text = {t: axis[q] for q, t in zip(train.ids, train.texts)}
    enc = SimpleNamespace(encode_queries=lambda texts: SimpleNamespace(
        data=np.eye(dim, dtype=np.float32)[[of_text[t] for t in texts]], offsets=np.arange(len(texts) + 1)))
    cfg = FDEConfig(k_sim=1, d_proj=8, r_reps=1, seed=0)
    args = SimpleNamespace(select_queries=40, seed=0, z=0.0, target=0.95, ndcg_gap=0.005, repeat=1)
    spec, c, sel = mv._select({"1x8x1": cfg}, {"1x8x1": fde_documents(docs.data, docs.offsets, cfg)},
                              lambda _: [len(corpus)], docs, corpus, enc, mv.Shortlist(docs, 300, 0), args)
    assert sel["train_queries"] == 40 and (spec, c) == ("1x8x1", len(corpus))
    assert sel["ndcg@10_exact"] == pytest.approx(1.0)
    assert sel["ndcg@10_gap"]["1x8x1"][len(corpus)] == pytest.approx(0.0)


def test_muvera_times_the_carved_rerank_beside_the_uncarved(monkeypatch) -> None:  # noqa: ANN001
    """The ball-carving rerank was timed best of ``--repeat`` calls with no warm-up, alone, and printed beside the
    main row's (uncarved) rerank stage, timed in other rounds: both reranks are now called once each (untimed),
    then timed in the same interleaved rounds, the order shuffled per round.  (``chamfer_pairs`` is a stand-in
    recording its calls.)"""
    import ragkit.retrievers.fde as fde

    mv = bench_module("muvera")
    log: list[str] = []

    def pairs(qd, q_off, data, offsets, rows, q_weights=None):  # noqa: ANN001, ANN202
        log.append("carved" if q_weights is not None else "uncarved")
        return np.full(rows.shape, 2.0 if q_weights is not None else 1.0, np.float32)

    monkeypatch.setattr(fde, "chamfer_pairs", pairs)
    docs = SimpleNamespace(data=np.zeros((4, 2), np.float32), offsets=np.array([0, 2, 4]))
    rows = np.zeros((3, 2), np.int64)
    best, sc, rounds = mv._carving_rerank(np.zeros((6, 2), np.float32), np.arange(0, 7, 2), rows,
                                          (np.zeros((3, 2), np.float32), np.arange(4), np.ones(3, np.float32)),
                                          rows, docs, 8)
    assert rounds == 8 and set(best) == {"carved", "uncarved"} and (sc == 2.0).all()
    assert log[:2] == ["carved", "uncarved"] and len(log) == 2 + 2 * 8, log  # a warm-up each, then 8 rounds
    per_round = [log[i:i + 2] for i in range(2, len(log), 2)]
    assert all(sorted(p) == ["carved", "uncarved"] for p in per_round), per_round  # both in every round
    assert {p[0] for p in per_round} == {"carved", "uncarved"}, per_round  # neither always first


def test_bench_timings_take_whole_calls_in_shuffled_rounds() -> None:
    """The timing helper the muvera, scale and other benches call (``_common.interleaved``; muvera and scale had
    thin copies of it): a best-of keeps the fastest *whole* call (and that call's result, so MUVERA's stage times
    are the fastest run's, not each stage's own minimum); rounds shuffle their order, so no timed call always runs
    first.  A fake clock gives the calls 0.05, 0.01 and 0.03 s (it slept them, and bounded the best by the
    machine's timing: ``0.01 <= best < 0.03``)."""
    common = bench_module("_common")
    durations = iter([0.05, 0.01, 0.03])
    ticks: list[float] = []

    def clock() -> float:  # each call reads the clock twice: 0 at its start, its duration at its end
        if not ticks:
            ticks.extend([0.0, next(durations)])
        return ticks.pop(0)

    best, out, rounds = common.interleaved({0: lambda: ticks[0]}, 3, clock=clock)  # (a call returns its duration)
    assert (best, out, rounds) == ({0: 0.01}, {0: 0.01}, 3)
    order: list[str] = []
    calls = {k: (lambda k=k: order.append(k) or k) for k in "abc"}
    best, last, _ = common.interleaved(calls, 3)
    orders = common.round_orders(list("abc"))  # (shuffled per round, seeded)
    assert order == [k for _ in range(3) for k in next(orders)] and sorted(order) == sorted("abc" * 3)
    assert last == {"a": "a", "b": "b", "c": "c"} and set(best) == set("abc")


def test_interleaved_shuffles_each_round_seeded() -> None:
    """``_common.interleaved`` rotated its order a step per round, so every callable always ran right after the
    same other one (one faiss HNSW search timed under two names read 23,394 q/s after the flat index and 41,127
    after itself): each round's order is now a fresh shuffle, seeded, so a run gives the same orders again."""
    common = bench_module("_common")
    log: list[str] = []
    fns = {k: (lambda k=k: log.append(k) or k) for k in "abcd"}
    best, last, rounds = common.interleaved(fns, 30)
    assert rounds == 30 and last == {k: k for k in "abcd"} and set(best) == set("abcd")
    per_round = [log[i:i + 4] for i in range(0, len(log), 4)]
    assert all(sorted(r) == list("abcd") for r in per_round)  # each called once a round
    before = {k: {r[r.index(k) - 1] for r in per_round if r.index(k) > 0} for k in "abcd"}
    assert all(len(b) >= 2 for b in before.values()), before  # none always follows the same one
    assert {r[0] for r in per_round} == set("abcd")  # none always goes first, or never
    first = list(log)
    log.clear()
    common.interleaved(fns, 30)
    assert log == first  # deterministic
    log.clear()
    common.interleaved(fns, 30, seed=1)
    assert log != first and sorted(log) == sorted(first)


def test_bm25_memory_save_ratio_compares_like_with_like() -> None:
    """ragkit's save (index, corpus.jsonl of 8 MB on SciFact and checksums) was divided by bm25s's save of its index
    only ("fit.save.s": 12.47): now ragkit's index-only save_index is divided by bm25s's save, and ragkit's whole
    save by bm25s's save with its corpus."""
    bm = bench_module("bm25_memory")
    res = {"fit": {"save": {"s": 2.0, "peak_extra_MB": 8}, "save_index": {"s": 0.3, "peak_extra_MB": 1}},
           "peer_fit": {"save": {"s": 0.1, "peak_extra_MB": 1}, "save_with_corpus": {"s": 1.0, "peak_extra_MB": 4}}}
    ratios = bm._ratios(res)
    assert ratios["fit.save_index.s"] == 3.0 and ratios["fit.save.s"] == 2.0, ratios
    assert ratios["fit.save.peak_extra_MB"] == 2.0 and ratios["fit.save_index.peak_extra_MB"] == 1.0


def _bm25_quick(block_numba: bool, out_dir: Path) -> subprocess.CompletedProcess:
    """bench/bm25.py --quick (few search rounds) writing into ``out_dir``, with ``import numba`` failing when
    ``block_numba``."""
    code = ("import runpy, sys; sys.path.insert(0, sys.argv[1]); "
            + ("sys.modules['numba'] = None; " if block_numba else "")
            + "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code, str(REPO / "bench"), str(REPO / "bench" / "bm25.py"),
                           "--quick", "--repeat", "1", "--min-seconds", "0.05"],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "RAGKIT_BENCH_OUT": str(out_dir)})


@pytest.mark.slow
def test_bm25_bench_times_bm25s_numba_backend(tmp_path: Path) -> None:
    """bm25s's documented fast path, ``backend="numba"``, has its own row and ratios beside the default numpy
    backend (the README compared ragkit with the numpy one only), its JIT-compiling first calls reported apart,
    the thread counts said, and its top-10s checked against ragkit's on the same tokens."""
    pytest.importorskip("numba")
    out = _bm25_quick(block_numba=False, out_dir=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line.split("  ")[0]: line for line in out.stdout.splitlines()}
    assert "bm25s numba" in rows and "skipped" not in rows["bm25s numba"], out.stdout[-3000:]
    assert "ragkit q/s / bm25s numba q/s:" in out.stdout and "bm25s numba first calls (JIT" in out.stdout
    assert "threads: '1 thr' = 1 each" in out.stdout and "interleaved rounds" in out.stdout
    res = json.loads((tmp_path / "bm25_quick.json").read_text())
    # bm25s's q/s is its own tokenizer's, its "nDCG@10" was the same-tokens one: both columns, labelled
    # (in README's table's words), and the closing line no longer repeats the own-tokenizer column
    assert "nDCG@10, same tokens" in out.stdout and "nDCG@10, own tokenizer" in out.stdout, out.stdout[-3000:]
    assert "bm25s with its own tokenizer" not in out.stdout, out.stdout[-3000:]
    for name, key in (("bm25s numpy", "bm25s"), ("bm25s numba", "bm25s_numba")):
        cells = rows[name].split()
        assert cells[-2:] == [f"{res[key]['ndcg@10']:.4f}", f"{res[key]['ndcg@10_own_tokenizer']:.4f}"], rows[name]
    assert rows["rank-bm25"].split()[-1] == "-", rows["rank-bm25"]
    nb = res["bm25s_numba"]
    assert nb["backend"] == "numba" and nb["qps_1"] > 0 and nb["qps_all"] > 0
    assert set(nb["first_call_s"]) == {"index", "search_1", "search_all"}
    assert res["agreement_lucene_vs_bm25s_numba"]["mean_overlap"] > 0.99
    from ragkit._cpus import usable_cpus

    assert res["timing"]["search_rounds"] >= 1 and res["timing"]["threads_all"] == usable_cpus()


@pytest.mark.slow
def test_bm25_bench_without_numba_says_skipped(tmp_path: Path) -> None:
    """Without numba the bench still runs: the numba row says skipped and why, no ratio is made up."""
    out = _bm25_quick(block_numba=True, out_dir=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "bm25s numba   skipped: numba unavailable" in out.stdout, out.stdout[-3000:]
    assert "ragkit q/s / bm25s numba q/s: not measured" in out.stdout


def test_benches_give_every_library_the_cpus_this_process_may_use(monkeypatch) -> None:  # noqa: ANN001
    """"All cores" in bench/dense.py (``--threads 0``) gave faiss ``os.cpu_count()`` threads (and recorded that
    count), and bench/bm25.py gave bm25s ``n_threads=-1`` (``os.cpu_count()``) and rank-bm25 a pool of
    ``os.cpu_count()``, while ragkit's 0 / -1 is the CPUs this process may use: under ``taskset`` or a container's
    CPU set the peers were oversubscribed and the ratios wrong.  Every library now gets one explicit count.  (3
    usable CPUs: neither one thread, the "1" rows' count, nor the machine's 64, so each count is told apart.)"""
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # a 64-CPU machine of which this process may use 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5, 9}, raising=False)
    if hasattr(os, "process_cpu_count"):  # (Python 3.13+)
        monkeypatch.setattr(os, "process_cpu_count", lambda: 3)
    m = bench_module("_common").machine()
    assert (m["cpus"], m["cpus_usable"]) == (64, 3), m
    # bench/bm25.py: its "all" count, given to ragkit's n_jobs and bm25s's n_threads alike (and rank-bm25's pool)
    bm = bench_module("bm25")
    n_cores = bm.usable_cpus()
    assert n_cores == 3
    got: list[tuple[str, int]] = []
    rk = SimpleNamespace(search=lambda queries, bm25=None: got.append(("ragkit", (bm25 or {}).get("n_jobs", 1))))
    calls = bm.search_calls(rk, ["q"], lambda index, n_threads: got.append((index, n_threads)),
                            {"bm25s": "numpy", "bm25s_numba": "numba"}, n_cores)
    for key in sorted(calls):
        calls[key]()
    assert sorted(calls) == [(lib, t) for lib in ("bm25s", "bm25s_numba", "ragkit") for t in ("1", "all")]
    assert got == [("numpy", 0), ("numpy", 3), ("numba", 0), ("numba", 3), ("ragkit", 1), ("ragkit", 3)], got
    # bench/dense.py --threads 0 (or -1): main resolves it once (thread_count), and faiss, ragkit and raw usearch
    # get that one count from configs_for, which takes no unresolved 0
    faiss = pytest.importorskip("faiss")
    dense = bench_module("dense")
    from ragkit._cpus import thread_count

    omp: list[int] = []
    monkeypatch.setattr(faiss, "omp_set_num_threads", omp.append)
    d = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    for threads in (0, -1):
        cfgs = {c.name: c for c in dense.configs_for(d, 5, False, [], thread_count(threads))}
        assert cfgs["ragkit exact f32"].build().threads == 3
    assert omp == [3, 3], omp
    with pytest.raises(ValueError, match=r"configs_for: threads: expected a thread count of 1 or more .*got 0"):
        dense.configs_for(d, 5, False, [], 0)


def _dense_bench():
    """bench/dense.py as a module (conftest.bench_module: its ``_common`` found in bench/, and gone from
    ``sys.modules`` again)."""
    return bench_module("dense")


# README's 1M run 5 (bench/out/dense.json), plus faiss in ragkit's insertion order (RESULTS.md 'Insertion order')
_RUN5 = [("ragkit exact f32", "ragkit", 140.8, 1.0), ("faiss IndexFlatIP", "faiss", 211.8, 1.0)] + [
    (f"ragkit hnsw i8 + rescore x4 ef={ef}", "ragkit-hnsw", q, r)
    for ef, q, r in ((128, 5055.2, 0.8319), (256, 2827.5, 0.9059), (512, 1496.3, 0.9582), (1024, 818.6, 0.9827))] + [
    (f"faiss HNSWFlat ef={ef}", "faiss-hnsw", q, r)
    for ef, q, r in ((128, 3645.0, 0.8514), (256, 2103.6, 0.9234), (512, 1129.5, 0.9626), (1024, 586.7, 0.9854))] + [
    (f"faiss HNSWFlat ef={ef} (ragkit's insertion order)", "faiss-hnsw", q, r)
    for ef, q, r in ((128, 2678, 0.856), (256, 1608, 0.925), (512, 782, 0.965), (1024, 446, 0.985))]


def test_dense_at_recall_reproduces_readme_run5() -> None:
    """The README's 1M headline (run 5, 'at recall 0.95, log-interpolated': ragkit 1,653 q/s, faiss 1,379,
    1.20x, 11.7x exact) was worked out by hand from dense.json; bench/dense.py now computes it, for every
    swept graph against both faiss insertion orders and the exact searches, and says 'not reached' rather
    than extrapolate."""
    dense = _dense_bench()
    rows = [{"config": c, "family": f, "qps": q, "recall@10": r} for c, f, q, r in _RUN5]
    s = dense.at_recall(rows, [0.95, 0.99, 0.8])
    rk, fa = s["graphs"]["ragkit hnsw i8 + rescore x4"], s["graphs"]["faiss HNSWFlat"]
    assert set(s["graphs"]) == {"ragkit hnsw i8 + rescore x4", "faiss HNSWFlat",
                                "faiss HNSWFlat (ragkit's insertion order)"}
    assert rk["at"]["0.95"] == {"qps": pytest.approx(1653, abs=1), "between_ef": [256, 512]}
    assert fa["at"]["0.95"]["qps"] == pytest.approx(1379, abs=1)
    ratio = {(r["recall@10"], r["config"], r["vs"]): r["ratio"] for r in s["ratios"]}
    assert ratio[0.95, "ragkit hnsw i8 + rescore x4", "faiss HNSWFlat"] == pytest.approx(1.20, abs=0.005)
    assert ratio[0.95, "ragkit hnsw i8 + rescore x4", "ragkit exact f32"] == pytest.approx(11.74, abs=0.005)
    assert ratio[0.95, "ragkit hnsw i8 + rescore x4", "faiss IndexFlatIP"] == pytest.approx(7.81, abs=0.005)
    assert ratio[0.95, "ragkit hnsw i8 + rescore x4", "faiss HNSWFlat (ragkit's insertion order)"] is not None
    assert ("faiss HNSWFlat", "faiss HNSWFlat (ragkit's insertion order)") not in {(k[1], k[2]) for k in ratio}
    assert rk["at"]["0.99"]["qps"] is None and rk["at"]["0.99"]["note"].startswith("not reached (best 0.9827")
    assert rk["at"]["0.8"]["qps"] is None and "below the sweep" in rk["at"]["0.8"]["note"]
    assert ratio[0.99, "ragkit hnsw i8 + rescore x4", "faiss HNSWFlat"] is None
    text = dense.at_recall_text(s)
    assert "1,653 (ef 256-512)" in text and "1.20x faiss HNSWFlat;" in text and "not reached" in text
    assert dense.qps_at_recall([0.9], [100.0], 0.9) is None  # one point: nothing to interpolate between
    assert "timing noise" not in text and not rk["qps_rose_with_ef"]


def test_dense_at_recall_flags_qps_rising_with_ef() -> None:
    """A loaded machine timed faiss HNSWFlat at 39,207 q/s at ef 32 against 9,872 at ef 16, and the q/s at
    recall was interpolated between those two points without a word: the table now says so."""
    dense = _dense_bench()
    rows = [{"config": f"faiss HNSWFlat ef={ef}", "family": "faiss", "qps": q, "recall@10": r}
            for ef, q, r in ((16, 9872.0, 0.90), (32, 39207.0, 0.95), (64, 8000.0, 0.98))]
    s = dense.at_recall(rows, [0.95])
    assert s["graphs"]["faiss HNSWFlat"]["qps_rose_with_ef"] == ["ef 16 9,872 -> ef 32 39,207 q/s"]
    assert "(timing noise? faiss HNSWFlat: q/s rose with ef, ef 16 9,872 -> ef 32 39,207 q/s;" in \
        dense.at_recall_text(s)


def test_dense_readme_only_pattern_keeps_both_faiss_orders() -> None:
    """README's 1M command (--only 'exact f32|rescore x4 ef|faiss HNSWFlat ef|IndexFlatIP') dropped faiss built in
    ragkit's insertion order ('faiss HNSWFlat, ragkit's insertion order ef=N'); its rows are now named
    'faiss HNSWFlat ef=N (ragkit's insertion order)', and the int8 graph's faiss peer (HNSWSQ8 + rescore x4) is
    kept too."""
    import re

    import numpy as np

    pytest.importorskip("faiss")
    dense = _dense_bench()
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    names = [c[0] for c in dense.configs_for(x, 10, True, [16, 32], 1)]
    kept = {n for n in names if re.search("exact f32|rescore x4 ef|faiss HNSWFlat ef|IndexFlatIP", n)}
    assert {"faiss HNSWFlat ef=16", "faiss HNSWFlat ef=16 (ragkit's insertion order)",
            "faiss HNSWSQ8 + rescore x4 ef=16", "ragkit hnsw i8 + rescore x4 ef=16"} <= kept


@pytest.mark.slow
def test_dense_quick_prints_qps_at_recall(tmp_path: Path) -> None:
    """An ef sweep ends with each graph's q/s at the --at-recall targets and its ratios, also in the JSON."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "dense.py"), "--quick", "--no-scifact", "--n", "2000",
                          "--n-queries", "30", "--ef", "16,64", "--at-recall", "0.5,0.8", "--repeat", "1",
                          "--threads", "2", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    table = out.stdout.split("q/s at recall@10 targets")[-1]  # (which targets a tiny sweep brackets varies)
    assert "\n  ragkit hnsw i8 + rescore x4  " in table and "\n  faiss HNSWSQ8 + rescore x4  " in table, out.stdout
    s = json.loads((tmp_path / "dense_quick.json").read_text())["synthetic"]["at_recall"]
    assert s["targets"] == [0.5, 0.8]
    assert {"faiss HNSWFlat", "faiss HNSWFlat (ragkit's insertion order)", "faiss HNSWSQ8 + rescore x4",
            "ragkit hnsw i8 + rescore x4"} <= set(s["graphs"])
    vs = {r["vs"] for r in s["ratios"] if r["config"] == "ragkit hnsw i8 + rescore x4"}
    assert vs == {"faiss HNSWFlat", "faiss HNSWFlat (ragkit's insertion order)", "faiss HNSWSQ8 + rescore x4",
                  "ragkit exact f32", "faiss IndexFlatIP"}


def test_common_machine_and_paired_ratio() -> None:
    """``machine()`` describes the machine in one dict (CPU model, CPUs, threads, load, versions, platform) and
    ``machine_line`` in one line; ``paired_ratio`` is the median of per-repeat ratios, not a ratio of medians,
    and refuses lists that do not pair up."""
    common = bench_module("_common")
    m = common.machine(threads=3, bm25s="0.2")
    assert m["threads"] == 3 and m["bm25s"] == "0.2" and m["cpus"] == os.cpu_count() and m["numpy"] == np.__version__
    assert m["load_average"] is None or len(m["load_average"]) == 3
    line = common.machine_line(m)
    assert line.startswith("machine: ") and "\n" not in line and "threads 3" in line
    assert f"numpy {np.__version__}" in line
    # direct (1, 10, 10, 1), pipeline (2, 10, 10, 1): one slow repeat; the ratio of the medians reads 6 / 5.5
    assert common.paired_ratio([2, 10, 10, 1], [1, 10, 10, 1]) == 1.0
    with pytest.raises(ValueError, match=r"equal-length.*shapes \(3,\) and \(2,\)"):
        common.paired_ratio([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="positive"):
        common.paired_ratio([1.0], [0.0])


def test_dense_writes_where_ragkit_bench_out_says(tmp_path: Path) -> None:
    """bench/dense.py wrote into bench/out whatever RAGKIT_BENCH_OUT said (its --out defaulted to bench/out):
    without --out its JSON and plot now go to the folder RAGKIT_BENCH_OUT names, as every other bench's.
    (~10 s: 1,000 random vectors, no SciFact.)"""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "dense.py"), "--quick", "--no-scifact", "--n", "1000",
                          "--n-queries", "20", "--ef", "16,32", "--repeat", "1", "--builds", "1", "--threads", "1"],
                         capture_output=True, text=True, timeout=600, cwd=REPO,
                         env={**os.environ, "RAGKIT_BENCH_OUT": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert {"dense_quick.json", "dense_quick.png"} <= {p.name for p in tmp_path.iterdir()}, out.stdout[-2000:]
    assert f"wrote {tmp_path / 'dense_quick.json'}" in out.stdout
    res = json.loads((tmp_path / "dense_quick.json").read_text())
    _check_machine(res, out.stdout)
    assert res["machine"]["threads"] == 1


def test_bm25_memory_full_run_writes_its_json(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A full run (a FOLDER, no --quick) printed its results and wrote no JSON unless given --out: it writes
    bm25_memory.json in the folder RAGKIT_BENCH_OUT names (bench/out by default), as every bench does."""
    bm = bench_module("bm25_memory")
    search = {"rounds": 3, "min_seconds": 0.5, "best_s": {"ragkit": 0.01, "bm25s": 0.02},
              "first_call_s": {"ragkit": 0.02, "bm25s": 0.03}}

    def fake_run(cmd: list[str], **kw) -> subprocess.CompletedProcess:  # noqa: ANN003
        phase = cmd[cmd.index("--phase") + 1]
        got = search if phase == "search" else {"fit": {"s": 1.0}}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(got) + "\n", "")

    monkeypatch.setattr(bm.subprocess, "run", fake_run)
    monkeypatch.setattr(bm, "OUT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["bm25_memory.py", "some_folder"])
    bm.main()
    assert [p.name for p in tmp_path.iterdir()] == ["bm25_memory.json"]
    res = json.loads((tmp_path / "bm25_memory.json").read_text())
    assert res["folder"] == "some_folder" and res["search"] == search and res["ragkit_vs_bm25s"]["search.s"] == 0.5
    _check_machine(res)


def test_pipeline_overhead_is_the_median_of_paired_ratios(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    """The overhead was the difference of the two sides' separate medians, which swung from +19.7% to -5.3%
    between runs on a loaded machine; it is the median of each repeat's pipeline / direct ratio.  Here one
    repeat is slow for the pipeline alone (direct 1, 10, 10, 1 s; pipeline 2, 10, 10, 1 s): the ratios are
    2, 1, 1, 1 (overhead 0%), the medians' difference 6 / 5.5 - 1 = +9.1%.  And an explicit --repeats wins
    over --quick's 30 (it was silently replaced)."""
    po = bench_module("pipeline_overhead")
    durations = {0: [1.0, 10.0, 10.0, 1.0], 1: [2.0, 10.0, 10.0, 1.0]}  # per side (0 direct, 1 pipeline), per repeat
    order = [side for i in range(4) for side in ((0, 1) if i % 2 == 0 else (1, 0))]  # as the bench alternates
    ticks = iter([t for i, side in enumerate(order) for t in (0.0, durations[side][i // 2])])
    monkeypatch.setattr(po, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    monkeypatch.setattr(sys, "argv", ["pipeline_overhead.py", "--quick", "--repeats", "4", "--queries", "5",
                                      "--out", str(tmp_path / "po.json")])
    po.main()
    res = json.loads((tmp_path / "po.json").read_text())
    assert res["repeats"] == 4 and res["overhead_pct"] == pytest.approx(0.0) and res["median_paired_ratio"] == 1.0
    assert res["overhead_of_medians_pct"] == pytest.approx(100 * (6 / 5.5 - 1))
    assert res["direct_ms"] == pytest.approx(5500.0) and res["pipeline_ms"] == pytest.approx(6000.0)
    _check_machine(res, capsys.readouterr().out)


def test_langchain_quick_keeps_explicit_flags(tmp_path: Path) -> None:
    """--quick replaced --queries, --repeats and --peer-repeats with its own; given flags now win (--quick fills
    only what is not given), and the end-to-end overhead is the median of per-repeat wrapper / direct ratios."""
    pytest.importorskip("langchain_core")
    out = _run_bench("langchain.py", ["--queries", "7", "--repeats", "3", "--peer-repeats", "0"], tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "langchain_quick.json").read_text())
    (row,) = res["results"]
    assert row["pipeline"] == "bm25" and row["queries"] == 7 and len(row["direct_s"]) == len(row["wrapper_s"]) == 3
    assert row["lc_default_s"] == [] and "lc_default_median_s" not in row
    ratios = [w / d for w, d in zip(row["wrapper_s"], row["direct_s"])]
    assert row["end_to_end_overhead_pct"] == pytest.approx(100 * (float(np.median(ratios)) - 1))
    _check_machine(res, out.stdout)


def test_bm25_memory_quick_keeps_explicit_queries_and_k(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """``--quick`` overrode ``--queries`` and ``--k`` given with it (50 and 100 whatever was asked)."""
    bm = bench_module("bm25_memory")
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **kw) -> subprocess.CompletedProcess:  # noqa: ANN003
        seen.append(cmd)
        phase = cmd[cmd.index("--phase") + 1]
        got = ({"rounds": 1, "min_seconds": 0.5, "best_s": {"ragkit": 0.01, "bm25s": 0.02},
                "first_call_s": {"ragkit": 0.02, "bm25s": 0.03}} if phase == "search" else {"fit": {"s": 1.0}})
        return subprocess.CompletedProcess(cmd, 0, json.dumps(got) + "\n", "")

    monkeypatch.setattr(bm.subprocess, "run", fake_run)
    monkeypatch.setattr(bm, "OUT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["bm25_memory.py", "--quick", "--queries", "7", "--k", "9"])
    bm.main()
    res = json.loads((tmp_path / "bm25_memory_quick.json").read_text())
    assert (res["queries"], res["k"]) == (7, 9)
    assert all(c[c.index("--queries") + 1] == "7" and c[c.index("--k") + 1] == "9" for c in seen), seen
    monkeypatch.setattr(sys, "argv", ["bm25_memory.py", "--quick"])
    bm.main()
    res = json.loads((tmp_path / "bm25_memory_quick.json").read_text())
    assert (res["queries"], res["k"]) == (50, 100)


def test_dense_run_configs_limits_blas_to_threads() -> None:
    """``--threads`` went to faiss and usearch only: numpy's BLAS (``numpy Q@D.T``, ragkit's exact searches) used
    every thread it had.  ``run_configs(threads=...)`` builds and searches under ``threadpool_limits(threads)``:
    with two BLAS threads outside, a build and a search run with ``threads=1`` see one, and two again after."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    dense = _dense_bench()
    seen: list[int] = []
    seen_build: list[int] = []

    def blas() -> set[int]:
        return {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}

    def build() -> np.ndarray:
        seen_build.extend(blas())
        return x

    def search(x: np.ndarray) -> np.ndarray:
        seen.extend(blas())
        return np.argsort(-(x[:3] @ x.T), axis=1)[:, :2]

    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    cfg = dense.Config("spy", "numpy", build, search, lambda o: o.nbytes)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):  # two threads outside, whatever the machine
        if not blas():
            pytest.skip("no BLAS library that threadpoolctl controls")
        rows = dense.run_configs(x, x[:3], np.argsort(-(x[:3] @ x.T), axis=1)[:, :2], [cfg], k=2, repeat=2,
                                 threads=1)
        assert blas() == {2}  # restored after
    assert seen and set(seen) == {1}, seen
    assert seen_build and set(seen_build) == {1}, seen_build
    assert rows[0]["config"] == "spy" and rows[0]["recall@10"] > 0
    with pytest.raises(ValueError, match=r"run_configs: threads: expected a thread count of 1 or more .*got 0"):
        dense.run_configs(x, x[:3], x[:3], [cfg], k=2, repeat=1, threads=0)


def test_cachecraft_shuffles_each_round(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """bench/cachecraft.py rotated its order a step per round, so every prefill always ran right after the same
    other one (the neighbour whose cache state it inherits); each round's order is now a fresh seeded shuffle
    (``_common.round_orders``), the prefix cache still reset per prompt.  A fake generator (no model) records
    the timed prefills of 3 prompts x 2 rounds."""
    import torch

    import ragkit.generators.local as local

    cc = bench_module("cachecraft")
    calls: list[tuple] = []

    class Store:
        nbytes = 0

        def put(self, *a: object, **kw: object) -> None:
            pass

        def __len__(self) -> int:
            return 0

    class Gen:
        model_id_ = tokenizer_id_ = "fake"
        model = SimpleNamespace(config=SimpleNamespace(num_hidden_layers=1, num_key_value_heads=1, head_dim=2))

        def __init__(self, **kw: object) -> None:
            self.chunk_cache, self.prefix_cache = Store(), {}

        def load(self) -> Gen:
            return self

        def segments(self, q: str, docs: list[str]) -> SimpleNamespace:
            return SimpleNamespace(chunks=[[1, 2] for _ in docs])

        def prefill(self, seg: object, mode: str, fraction: float = 0.0, selector: str = "", rerotate: bool = True,
                    new_variants: bool = True, capture: bool = False) -> SimpleNamespace:
            if not new_variants:  # the warm-up and the timed rounds (run())
                calls.append((mode, fraction if mode == "cachecraft" else None, selector, rerotate))
            return SimpleNamespace(seconds=0.1, logits=torch.rand(4), computed_share=1.0, n_prompt=10)

        def decode(self, r: object, n: int) -> list[int]:
            return [1] * n

        def use_cache(self, cache: object) -> None:
            pass

    monkeypatch.setattr(local, "LocalGenerator", Gen)
    monkeypatch.setattr(cc, "top5", lambda data, n: ([f"q{i}" for i in range(n)], [["a", "b"]] * n))
    monkeypatch.setattr(sys, "argv", ["cachecraft.py", "--quick", "--fraction", "0.25", "--out", str(tmp_path / "cc")])
    cc.main()
    n_items = 6 + 5 * 2  # the table's modes, every selector at r 0.3 and 1.0
    rounds = [calls[i:i + n_items] for i in range(5, len(calls), n_items)]  # (after 5 warm-up calls)
    assert len(rounds) == 6 and all(len(set(r)) == n_items for r in rounds), [len(r) for r in rounds]
    keys = set(rounds[0])
    assert all(set(r) == keys for r in rounds)  # each called once a round
    before = {k: {r[r.index(k) - 1] for r in rounds if r.index(k) > 0} for k in keys}
    assert all(len(b) >= 2 for b in before.values()), before  # none always follows the same one
    res = json.loads((tmp_path / "cc.json").read_text())
    assert res["config"]["seed"] == 0 and "shuffled afresh every round (seed 0)" in res["timing"]


def test_alpha_ndcg_bench_times_old_and_new_in_shuffled_rounds(monkeypatch, capsys) -> None:  # noqa: ANN001
    """bench/alpha_ndcg.py timed old, new, old, new (old always first, no warm-up) and printed the ratio of the
    medians; it times both in ``_common.interleaved`` rounds after a warm-up call each (so "new" runs first in
    some round), checks the best calls' values equal, and prints the ratio of the best times and the rounds.
    (The old and new functions are stand-ins here, recording their calls.)"""
    import test_batched_eval_prf as ref

    import ragkit.eval.diversity as diversity
    import ragkit.pipelines.prf as prf

    ab = bench_module("alpha_ndcg")
    log: list[str] = []

    def rec(name: str, value: object):  # noqa: ANN202
        return lambda *a, **kw: log.append(name) or value

    monkeypatch.setattr(ref, "_ref_alpha_ndcg", rec("old", {"q0": 0.5}))
    monkeypatch.setattr(diversity, "alpha_ndcg", rec("new", {"q0": 0.5}))
    monkeypatch.setattr(ref, "_ref_join", rec("old", ["a"]))
    monkeypatch.setattr(prf, "_join_per_query", rec("new", ["a"]))
    monkeypatch.setattr(sys, "argv", ["alpha_ndcg.py", "--quick", "--repeat", "6", "--min-seconds", "0"])
    ab.main()
    out = capsys.readouterr().out
    assert len(log) == 4 * (2 + 2 * 6), log  # 2 sizes x 2 comparisons: a warm-up of each, then 6 rounds of both
    per = [log[i:i + 14] for i in range(0, len(log), 14)]
    assert all(p[:2] == ["old", "new"] and sorted(p[2:]) == ["new"] * 6 + ["old"] * 6 for p in per), per
    assert any(p[2 + 2 * r] == "new" for p in per for r in range(6)), per  # "new" first in some round
    assert out.count("(best of 6 interleaved rounds each)") == 4, out
    monkeypatch.setattr(diversity, "alpha_ndcg", rec("new", {"q0": 0.25}))
    with pytest.raises(AssertionError, match=r"alpha_ndcg@10, 200 queries: the batched values differ"):
        ab.main()


def test_timing_args_refuses_no_rounds(monkeypatch, capsys) -> None:  # noqa: ANN001
    """``_common.timing_args`` checked ``--min-seconds`` but not ``--repeat`` (eval_io had its own check, the other
    benches none: ``alpha_ndcg.py --repeat 0`` went on with no timing round): it refuses below 1 for every bench
    that takes the shared timing flags, before any work."""
    ab = bench_module("alpha_ndcg")
    monkeypatch.setattr(sys, "argv", ["alpha_ndcg.py", "--quick", "--repeat", "0"])
    with pytest.raises(SystemExit) as e:
        ab.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "alpha_ndcg.py: error: --repeat: at least 1 round, got 0" in err, err


def test_scale_encoding_says_ray_is_timed_cold(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    """bench/scale.py's Ray-vs-local encoding ratio divides one cold ``ray_encode`` call (actor start-up and model
    load included) by the local encoder's warm time (its model loaded before), and its printout said only
    "ray 1 actor ... docs/s (0.45x)": the line and the JSON keys now say which side was timed cold.  (Ray, the
    encoder and the shard part are stand-ins here.)"""
    import ragkit.encoders
    import ragkit.scale

    sc = bench_module("scale")
    enc = SimpleNamespace(encode=lambda texts, cache=True: np.ones((len(texts), 2), np.float32))
    monkeypatch.setattr(ragkit.encoders, "get_encoder", lambda *a, **kw: enc)
    monkeypatch.setattr(ragkit.scale, "ray_init", lambda *a, **kw: None)
    monkeypatch.setattr(ragkit.scale, "ray_encode", lambda model, texts, **kw: np.ones((len(texts), 2), np.float32))
    shards = {"n": 10, "shards": 2, "single_build_s": 0.1, "sharded_build_s_sequential": 0.1, "repeat": 1,
              "queries": 2, "single_query_ms": 1.0, "single_recall@10": 1.0, "sharded_query_ms": 1.0,
              "sharded_recall@10": 1.0, "merge_ms_per_query": 0.001, "per_shard_query_ms": [0.5, 0.5],
              "min_seconds": 0.5, "rounds": 1, "merge_rounds": 1}
    monkeypatch.setattr(sc, "shard_part", lambda *a, **kw: shards)
    monkeypatch.setattr(sc, "OUT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["scale.py", "--docs", "20"])
    sc.main()
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith("encoding 20 docs")]
    assert "local" in line and "(model loaded before)" in line, line
    assert "ray (one cold call: actor start-up and model load included) 1 actor" in line, line
    res = json.loads((tmp_path / "scale.json").read_text())["encode"]
    assert {"local_docs_per_s_warm", "ray_1_actors_docs_per_s_cold", "ray_2_actors_docs_per_s_cold"} <= set(res)
    assert not [k for k in res if k.endswith("docs_per_s")], res  # no unlabelled rate left
    assert "cold" in res["timing"] and "warm" in res["timing"]


def test_scale_times_with_the_shared_timing_flags(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    """bench/scale.py had its own ``--repeat`` (unchecked) and no ``--min-seconds``: its merge, microseconds a
    query, was the best of 5 calls.  It takes ``_common``'s timing flags (``--repeat`` default 5, checked;
    ``--min-seconds`` 0.5, 0.05 with ``--quick``), gives both to ``shard_part`` and prints the rounds run.  (The
    shard part is a stand-in here, recording what it is given.)"""
    sc = bench_module("scale")
    given: list[dict] = []
    shards = {"n": 10, "shards": 2, "single_build_s": 0.1, "sharded_build_s_sequential": 0.1, "repeat": 5,
              "min_seconds": 0.05, "rounds": 7, "merge_rounds": 900, "queries": 2, "single_query_ms": 1.0,
              "single_recall@10": 1.0, "sharded_query_ms": 1.0, "sharded_recall@10": 1.0,
              "merge_ms_per_query": 0.001, "per_shard_query_ms": [0.5, 0.5]}
    monkeypatch.setattr(sc, "shard_part", lambda *a, **kw: given.append(kw) or shards)
    monkeypatch.setattr(sc, "OUT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["scale.py", "--quick", "--skip-encode"])
    sc.main()
    (kw,) = given
    assert (kw["repeat"], kw["min_seconds"]) == (5, 0.05), kw
    out = capsys.readouterr().out
    assert "best of 7 interleaved rounds (each search timed >= 0.05 s in all)" in out, out
    assert "the merge: best of 900 rounds of its own" in out, out
    monkeypatch.setattr(sys, "argv", ["scale.py", "--skip-encode", "--repeat", "0"])
    with pytest.raises(SystemExit) as e:
        sc.main()
    assert e.value.code == 2 and "--repeat: at least 1 round, got 0" in capsys.readouterr().err
