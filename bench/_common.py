"""What every benchmark script shares: where the repository, SciFact and the outputs are, a timer, and
exact top-k ground truth with its recall.

Benchmarks run as scripts (``python bench/<name>.py``), so this folder is on ``sys.path``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

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


def exact_topk(d: np.ndarray, q: np.ndarray, k: int, block: int = 65536) -> np.ndarray:
    """Plain numpy: ``Q @ D.T`` + argpartition, in row blocks (the peer and the ground truth)."""
    best_s = best_i = None
    for s0 in range(0, len(d), block):
        s = q @ d[s0: s0 + block].T
        idx = np.broadcast_to(np.arange(s0, s0 + s.shape[1]), s.shape)
        if best_s is not None:
            s, idx = np.concatenate([best_s, s], 1), np.concatenate([best_i, idx], 1)
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, part, 1), np.take_along_axis(idx, part, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, 1)


def recall(got, ref: np.ndarray, k: int = 10) -> float:
    """Mean share of each query's exact top ``k`` (rows of ``ref``) found in its first ``k`` of ``got``."""
    return float(np.mean([len(set(a[:k].tolist()) & set(b[:k].tolist())) / k for a, b in zip(got, ref)]))
