"""The benches behind the README's tables run end to end in their ``--quick`` smoke modes, so they
do not rot unseen (their numbers are the benches' business, not the tests').  Seconds here with the
corpus's sentence and token vectors cached: diversity ~20, filters ~15, muvera ~70, hubness ~70,
quality ~55, scale ~45 (its shard part), cachecraft ~75 (SmolLM2-135M's load ~25 of it).  The bm25,
dense, langchain and pipeline-overhead benches have their own quick tests beside the code they measure."""

from __future__ import annotations

import json
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
    ("bm25_memory.py", "ragkit / bm25s", "bm25_memory_quick.json"),
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
