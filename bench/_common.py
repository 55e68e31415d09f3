"""What every benchmark script shares: where the repository, SciFact and the outputs are, and a timer.

Benchmarks run as scripts (``python bench/<name>.py``), so this folder is on ``sys.path``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
SCIFACT = Path(os.environ.get("RAGKIT_SCIFACT", REPO.parent / "shared" / "data" / "beir" / "scifact"))


def best_of(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """``(fastest wall seconds, last result)`` over ``repeat`` calls of ``fn``: the least-disturbed run."""
    best, out = float("inf"), None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out
