"""What every benchmark script shares: where the repository, SciFact and the outputs are, a timer,
atomic output writes, exact top-k ground truth with its recall, the median of paired ratios, a
description of the machine (printed at the start of every bench and kept in its JSON as ``machine``), and
the check that a result reported on test queries learned from none of them (:func:`held_out`).

Benchmarks run as scripts (``python bench/<name>.py``), so this folder is on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import os
import platform
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


def round_orders(keys: list, seed: int = 0) -> Iterator[list]:
    """Endless round orders of ``keys``: each a fresh shuffle by ``random.Random(seed)``, so the same keys and
    seed give the same orders (a run can be repeated) while no key always runs first, or always right after the
    same other one.  (A rotation a step per round kept every key behind the same neighbour: one faiss HNSW
    search timed under two names read 23,394 q/s after the flat index and 41,127 after itself.)"""
    import random

    rng, order = random.Random(seed), list(keys)
    while True:
        rng.shuffle(order)
        yield list(order)


def interleaved(fns: dict, repeat: int, min_seconds: float = 0.0, seed: int = 0,
                clock: Callable[[], float] | None = None) -> tuple[dict, dict, int]:
    """Time every callable in ``fns`` in rounds, each round calling each once, in an order shuffled afresh each
    round (:func:`round_orders`, seeded by ``seed``: deterministic), so a burst of others' load on a shared
    machine, or the cache state one call leaves the next, falls on all alike, and every ratio of two of them
    compares calls from the same rounds.  There are ``repeat`` rounds (at least one), and more, up to 10,000,
    until the fastest call's best times the rounds reaches ``min_seconds`` (so every callable is timed that
    long in all).  ``clock`` reads the seconds (``time.process_time`` for CPU time); ``None``:
    ``time.perf_counter``, looked up at the call.  Returns ``(best seconds, the result of that best call,
    rounds)``, the dicts keyed as ``fns``."""
    import math

    clock = clock or time.perf_counter

    if min_seconds < 0 or not math.isfinite(min_seconds):
        raise ValueError(f"interleaved: min_seconds must be a finite number >= 0, got {min_seconds!r}")
    if not fns:
        return {}, {}, 0
    best, result = {key: math.inf for key in fns}, {}
    rounds, orders = 0, round_orders(list(fns), seed)
    while rounds < max(1, repeat) or rounds < min(10_000, math.ceil(min_seconds / max(min(best.values()), 1e-9))):
        for key in next(orders):
            t0 = clock()
            out = fns[key]()
            dt = clock() - t0
            if dt < best[key]:
                best[key], result[key] = dt, out
        rounds += 1
    return best, result, rounds


def interleaved_best(fns: dict, repeat: int, min_seconds: float = 0.0, seed: int = 0,
                     clock: Callable[[], float] | None = None) -> tuple[dict, dict, dict, int]:
    """:func:`interleaved` after a first call of each (JIT compiles, caches: its time is returned apart, never
    counted in the best); each callable is timed for at least ``min_seconds`` in all.  Returns ``(first-call
    seconds, best seconds, a result, rounds)``, the dicts keyed as ``fns``."""
    clock = clock or time.perf_counter
    first = {}
    for key, fn in fns.items():
        t0 = clock()
        fn()
        first[key] = clock() - t0
    best, result, rounds = interleaved(fns, repeat, min_seconds, seed, clock)
    return first, best, result, rounds


def add_timing_args(ap: Any, repeat_help: str = "at least this many interleaved timing rounds",
                    repeat: int = 3) -> None:
    """``--repeat`` (default ``repeat``, 3) and ``--min-seconds`` (interleaved rounds until each call is timed this
    long in all; default 0.5 s, 0.05 s with ``--quick``: :func:`timing_args` sets it) on the ``argparse`` parser
    ``ap``."""
    ap.add_argument("--repeat", type=int, default=repeat, help=repeat_help)
    ap.add_argument("--min-seconds", type=float, default=None,
                    help="interleaved rounds until each call timed in them is timed this long in all (so a time is "
                         "not the best of a few calls of milliseconds; default 0.5, 0.05 with --quick, a smoke run); "
                         "0: --repeat rounds only")


def timing_args(ap: Any, args: Any) -> None:
    """After ``ap.parse_args()``: ``args.repeat`` checked (at least 1) and ``args.min_seconds`` defaulted (0.05 with
    ``args.quick``, else 0.5) and checked (``ap.error`` names the flag and the value given)."""
    import math

    if args.repeat < 1:
        ap.error(f"--repeat: at least 1 round, got {args.repeat}")
    if args.min_seconds is None:
        args.min_seconds = 0.05 if getattr(args, "quick", False) else 0.5
    if not (math.isfinite(args.min_seconds) and args.min_seconds >= 0):
        ap.error(f"--min-seconds: a finite number of seconds >= 0, got {args.min_seconds}")


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


def paired_ratio(a, b) -> float:
    """Median over repeats of ``a[i] / b[i]``: ``a[i]`` and ``b[i]`` timed in the same repeat (back to back), so a
    burst of others' load slows both sides of each ratio alike.  ``median(a) / median(b)`` compares timings from
    different repeats and swings with the load (pipeline_overhead's overhead read +19.7% to -5.3% that way)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired_ratio: two equal-length, non-empty 1-d lists of timings expected, "
                         f"got shapes {a.shape} and {b.shape}")
    if not (b > 0).all():
        raise ValueError(f"paired_ratio: the denominators must be positive timings, got {b[~(b > 0)][:3].tolist()}")
    return float(np.median(a / b))


class TaughtOnTest(RuntimeError):
    """A bench row's pipeline learned from (or a choice of its was made on) queries it is then evaluated on."""


def held_out(queries: Any, row: str, *sources: Any) -> int:
    """How many of the evaluated ``queries`` (a ragkit ``Queries``) the result of ``row`` was taught on, after
    refusing (:class:`TaughtOnTest`) any: 0, recorded in the bench's JSON as ``learned_from_test``.

    Each of ``sources`` is a fitted operator or pipeline, whose ``learned_from`` (recorded by ``fit``: the
    training queries it learned from, by id and text) is asked, or the ids of the queries a bench chose something
    on by hand (a cut-off, a grid point, a setting: no fit records those), a ``Queries``, a ``State`` or a list of
    ids, checked by id.  Scores on a query the result was taught on measure what was taught, not held-out
    quality (``ragkit eval`` refuses a saved pipeline on them too).  A bench calls it after the fit or the
    choice, before it evaluates."""
    if not hasattr(queries, "ids") or not hasattr(queries, "texts"):
        raise TypeError(f"held_out({row!r}): the evaluated queries must be a ragkit Queries (ids and texts), "
                        f"got {type(queries).__name__}")
    ids = [str(q) for q in queries.ids]
    taught: set[str] = set()
    for i, src in enumerate(sources):
        if hasattr(src, "learned_from"):
            taught.update(src.learned_from(queries))
            continue
        chosen = getattr(src, "ids", None)
        chosen = getattr(src, "query_ids", None) if chosen is None else chosen
        chosen = src if chosen is None else chosen
        if isinstance(chosen, (str, bytes)) or not hasattr(chosen, "__iter__"):
            raise TypeError(f"held_out({row!r}): source {i} must be a fitted operator or pipeline, or the queries a "
                            f"choice was made on (Queries, State or a list of ids), got {type(src).__name__}")
        taught.update(str(q) for q in chosen)
    hit = [q for q in ids if q in taught]
    if hit:
        from ragkit.errors import some_ids

        raise TaughtOnTest(f"{row}: learned from {len(hit)} of the {len(ids)} evaluated test "
                           f"queries ({some_ids(hit)}), whose scores would not be held out; "
                           "fit and choose on the train split only")
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(name: str) -> str | None:
    """An installed package's version, without importing it (torch takes seconds to import)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _platform() -> str:
    """``platform.platform()``'s string (``Linux-6.1.0-x86_64-with-glibc2.36``) without its first call's
    ``uname -p`` subprocess (it reads ``uname().processor``, which it then leaves out on Linux anyway)."""
    u = platform.uname()
    lib, ver = platform.libc_ver()
    return "-".join(x for x in (u.system, u.release, u.machine) if x) + (f"-with-{lib}{ver}" if lib else "")


def machine(threads: int | str | None = None, **extra: Any) -> dict:
    """What a timing depends on, for a bench's JSON (``"machine"``): CPU model, logical CPUs (``cpus``; and
    the ones this process may use, ``cpus_usable``), the threads the bench runs with when it says
    (``threads``; with any ``*_NUM_THREADS`` variable set, ``thread_env``), the load average (others' work on a
    shared machine slows every timing), Python, numpy and torch versions, platform and date.  ``extra``
    (a library's version, ...) is added as given."""
    import time

    from ragkit._cpus import usable_cpus

    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    env = {v: os.environ[v] for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
           if v in os.environ}
    return {"cpu": _cpu_model(), "cpus": os.cpu_count(), "cpus_usable": usable_cpus(), "threads": threads,
            **({"thread_env": env} if env else {}),
            "load_average": load, "load_average_1min": load[0] if load else None,
            "python": platform.python_version(), "numpy": np.__version__, "torch": _version("torch"),
            "platform": _platform(), "date": time.strftime("%Y-%m-%d"), **extra}


def machine_line(m: dict) -> str:
    """One line of :func:`machine`'s dict, printed at a bench's start."""
    load = " ".join(f"{x:.2f}" for x in m["load_average"]) if m.get("load_average") else "unknown"
    cpus = f"{m['cpus']} CPUs" + (f" ({m['cpus_usable']} usable)" if m.get("cpus_usable") not in (None, m["cpus"])
                                  else "")
    threads = f", threads {m['threads']}" if m.get("threads") is not None else ""
    env = "".join(f", {k}={v}" for k, v in m.get("thread_env", {}).items())
    return (f"machine: {m['cpu']}, {cpus}{threads}{env}, load average {load}; Python {m['python']}, "
            f"numpy {m['numpy']}, torch {m['torch'] or 'not installed'}; {m['platform']}")


def print_machine(threads: int | str | None = None, **extra: Any) -> dict:
    """:func:`machine`, printed as one line (flushed, so it comes before a subprocess's output); returns it."""
    m = machine(threads, **extra)
    print(machine_line(m), flush=True)
    return m
