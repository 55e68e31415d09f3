"""The benches behind the README's tables run end to end in their ``--quick`` smoke modes, so they
do not rot unseen (their numbers are the benches' business, not the tests').  Seconds here with the
corpus's sentence and token vectors cached: diversity ~20, filters ~15, muvera ~70, hubness ~70,
quality ~55, scale ~45 (its shard part), cachecraft ~75 (SmolLM2-135M's load ~25 of it).  The bm25,
dense, langchain and pipeline-overhead benches have their own quick tests beside the code they measure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"

BENCHES = [  # (script and flags, expected in stdout, JSON written)
    ("diversity.py", "knn chosen on train", None),
    ("filters.py", "nDCG@10: dense", None),
    ("muvera.py", "bytes per document", "muvera_quick.json"),
    ("hubness.py", "halving raw skewness", "hubness_quick.json"),
    ("quality.py", "best learned", "quality-quick.json"),
    # its Ray encoding part (~80 s: three encodings of 200 documents) is what tests/test_scale.py runs already
    ("scale.py --skip-encode", "shards merged", "scale_quick.json"),
    # every mode, the selector sweep, the plot and the streaming pass, on 3 short prompts (SmolLM2-135M)
    ("cachecraft.py", "Streaming (2 passes", "cachecraft_quick.json"),
    # search times from interleaved best-of-N rounds in one process (was one ~12 ms call per phase)
    ("bm25_memory.py", "interleaved rounds", "bm25_memory_quick.json"),
]


@pytest.mark.slow
@pytest.mark.parametrize("bench, expect, written", BENCHES, ids=[b[0].split()[0] for b in BENCHES])
def test_bench_quick_runs(bench: str, expect: str, written: str | None) -> None:
    if written is not None:  # a quick run's own output: gone, so the check below sees this run's
        (OUT / written).unlink(missing_ok=True)
    script, *flags = bench.split()
    out = subprocess.run([sys.executable, str(REPO / "bench" / script), "--quick", *flags], capture_output=True,
                         text=True, timeout=1200, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert expect in out.stdout and "wrote " in out.stdout, out.stdout[-3000:]
    if written is not None:
        assert json.loads((OUT / written).read_text())  # written, and complete JSON


def _bm25_quick(block_numba: bool) -> subprocess.CompletedProcess:
    """bench/bm25.py --quick (few search rounds), with ``import numba`` failing when ``block_numba``."""
    code = ("import runpy, sys; sys.path.insert(0, sys.argv[1]); "
            + ("sys.modules['numba'] = None; " if block_numba else "")
            + "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code, str(REPO / "bench"), str(REPO / "bench" / "bm25.py"),
                           "--quick", "--repeat", "1", "--min-seconds", "0.05"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)


@pytest.mark.slow
def test_bm25_bench_times_bm25s_numba_backend() -> None:
    """bm25s's documented fast path, ``backend="numba"``, has its own row and ratios beside the default numpy
    backend (the README compared ragkit with the numpy one only), its JIT-compiling first calls reported apart,
    the thread counts said, and its top-10s checked against ragkit's on the same tokens."""
    pytest.importorskip("numba")
    (OUT / "bm25_quick.json").unlink(missing_ok=True)
    out = _bm25_quick(block_numba=False)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line.split("  ")[0]: line for line in out.stdout.splitlines()}
    assert "bm25s numba" in rows and "skipped" not in rows["bm25s numba"], out.stdout[-3000:]
    assert "ragkit q/s / bm25s numba q/s:" in out.stdout and "bm25s numba first calls (JIT" in out.stdout
    assert "threads: '1 thr' = 1 each" in out.stdout and "interleaved rounds" in out.stdout
    res = json.loads((OUT / "bm25_quick.json").read_text())
    nb = res["bm25s_numba"]
    assert nb["backend"] == "numba" and nb["qps_1"] > 0 and nb["qps_all"] > 0
    assert set(nb["first_call_s"]) == {"index", "search_1", "search_all"}
    assert res["agreement_lucene_vs_bm25s_numba"]["mean_overlap"] > 0.99
    assert res["timing"]["search_rounds"] >= 1 and res["timing"]["threads_all"] == (os.cpu_count() or 1)


@pytest.mark.slow
def test_bm25_bench_without_numba_says_skipped() -> None:
    """Without numba the bench still runs: the numba row says skipped and why, no ratio is made up."""
    out = _bm25_quick(block_numba=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "bm25s numba   skipped: numba unavailable" in out.stdout, out.stdout[-3000:]
    assert "ragkit q/s / bm25s numba q/s: not measured" in out.stdout
