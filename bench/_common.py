"""What every benchmark script shares: where the repository, SciFact and the outputs are, a timer,
atomic output writes, and exact top-k ground truth with its recall.

Benchmarks run as scripts (``python bench/<name>.py``), so this folder is on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# Where results go: bench/out, or the folder RAGKIT_BENCH_OUT names (the tests point it at a temporary one
# so that a test run never overwrites a real result).
OUT = Path(os.environ.get("RAGKIT_BENCH_OUT") or REPO / "bench" / "out")
# Caches keyed by their content (query vectors): bench/out/cache whatever RAGKIT_BENCH_OUT says, so a test run
# reuses them.
CACHE = REPO / "bench" / "out" / "cache"
SCIFACT = Path(os.environ.get("RAGKIT_SCIFACT") or REPO.parent / "shared" / "data" / "beir" / "scifact")


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` all at once: a temporary file in the same folder,
    then ``os.replace``. A killed run leaves either the old file or the new one, never a truncated one.
    Creates the parent folder. Returns the path."""
    path = Path(path)
    if not isinstance(data, (str, bytes)):
        raise TypeError(f"write_atomic({str(path)!r}): data must be str or bytes, got {type(data).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; results are meant to be read
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """For writers that want a file name (``savefig``): yields a temporary name beside ``path`` (same suffix),
    moved onto ``path`` when the block ends without an error, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_npy_atomic(path: str | os.PathLike, arr: np.ndarray) -> Path:
    """``np.save`` to ``path`` atomically (see ``write_atomic``); ``path`` is used as given (no ``.npy`` added)."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return write_atomic(path, buf.getvalue())


def best_of(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """``(fastest wall seconds, last result)`` over ``repeat`` calls of ``fn``: the least-disturbed run."""
    best, out = float("inf"), None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def interleaved(fns: dict, repeat: int, min_seconds: float = 0.0) -> tuple[dict, dict, int]:
    """Time every callable in ``fns`` in rounds, each round calling each once, in an order rotated a step per
    round (none always runs first), so a burst of others' load on a shared machine falls on all alike and
    every ratio of two of them compares calls from the same rounds.  There are ``repeat`` rounds (at least
    one), and more, up to 10,000, until the fastest call's best times the rounds reaches ``min_seconds``.
    Returns ``(best seconds, the result of that best call, rounds)``, the dicts keyed as ``fns``."""
    import math

    keys = list(fns)
    best, result = {key: math.inf for key in keys}, {}
    rounds = 0
    while rounds < max(1, repeat) or rounds < min(10_000, math.ceil(min_seconds / max(min(best.values()), 1e-9))):
        for key in keys[rounds % len(keys):] + keys[:rounds % len(keys)]:
            t0 = time.perf_counter()
            out = fns[key]()
            dt = time.perf_counter() - t0
            if dt < best[key]:
                best[key], result[key] = dt, out
        rounds += 1
    return best, result, rounds


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
