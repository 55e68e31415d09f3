"""How many CPUs "all cores" means: the CPUs this process may run on, not the machine's.

A container's CPU set, ``taskset``, a CI runner or a Ray worker pinned to some cores give the process fewer CPUs
than the machine has (:func:`os.cpu_count`); a thread count of "all cores" (``n_jobs`` / ``threads`` given as 0 or
-1) is resolved with :func:`usable_cpus`, so that it never asks for more threads than the process can run at once.
(What ragkit *reports* about the machine, as bench/ and ``ragkit/cli/_records.py`` do, still counts its CPUs.)"""

from __future__ import annotations

import os

__all__ = ["thread_count", "usable_cpus"]


def usable_cpus() -> int:
    """The number of CPUs this process may use, at least 1.

    :func:`os.process_cpu_count` where it exists (Python 3.13+: the affinity mask, and ``PYTHON_CPU_COUNT`` /
    ``-X cpu_count`` when set), else the size of :func:`os.sched_getaffinity` where the platform has it (Linux),
    else :func:`os.cpu_count` (macOS, Windows before 3.13), else 1."""
    process_cpu_count = getattr(os, "process_cpu_count", None)
    n: int | None = None
    if process_cpu_count is not None:
        n = process_cpu_count()
    elif hasattr(os, "sched_getaffinity"):
        try:
            n = len(os.sched_getaffinity(0))
        except OSError:  # (a platform that declares it but refuses the call)
            n = None
    if not n:
        n = os.cpu_count()
    return max(int(n or 1), 1)


def thread_count(n: int) -> int:
    """The number of threads a thread-count setting ``n`` asks for: ``n`` itself when it is positive, else
    (``0`` or ``-1``, "all cores") :func:`usable_cpus`."""
    return n if n > 0 else usable_cpus()
