"""OpenMP settings that must be in the environment before torch is first imported (libgomp reads them once).

Why: torch's CPU kernels run in OpenMP parallel regions. By default libgomp's idle threads spin (busy-wait)
at the end of each region before they sleep. On a machine whose cores are taken (another job, a test suite),
a spinning thread holds a core that the thread it waits for needs, so each of the thousands of small
parallel regions of a 32x32 training step waits for the scheduler. Measured on the shared 2-core machine
(docs/performance.md, levers): the demo step with 2 threads took 5.4 s spinning vs 0.25 s with
``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep), and a second thread only pays when a core is free.

This module imports nothing heavy, so the CLI can call :func:`set_openmp_defaults` before torch loads.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path

WAIT_POLICY = "PASSIVE"  # idle OpenMP threads sleep instead of spinning


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs from /proc/stat (idle + iowait count as idle), None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    return values[3] + values[4], sum(values)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def free_cores(window_s: float = 0.2) -> int | None:
    """Cores idle right now: the idle share of all CPUs over ``window_s`` seconds times the usable cores,
    rounded, at least 1; None where /proc/stat cannot be read."""
    before = _cpu_times()
    if before is None:
        return None
    time.sleep(window_s)
    after = _cpu_times()
    if after is None or after[1] <= before[1]:
        return None
    idle_share = (after[0] - before[0]) / (after[1] - before[1])
    return max(1, min(usable_cores(), round(idle_share * usable_cores())))


def set_openmp_defaults(environ: MutableMapping[str, str] = os.environ, window_s: float = 0.2) -> dict[str, str]:
    """Environment defaults for torch's CPU threads; every variable the user set wins. Returns what it set.

    - ``OMP_WAIT_POLICY=PASSIVE`` unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set;
    - ``OMP_NUM_THREADS`` = the cores idle now (:func:`free_cores`) when that is fewer than the usable cores
      and neither ``OMP_NUM_THREADS`` nor ``MKL_NUM_THREADS`` is set (``train.threads`` overrides it later).

    Takes effect only when called before torch is imported; subprocesses started later inherit the wait
    policy either way. With torch already loaded (``cli.main`` called in-process) the cores are not counted:
    the thread count of this process can no longer change that way."""
    done: dict[str, str] = {}
    if "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ:
        done["OMP_WAIT_POLICY"] = WAIT_POLICY
    count = "torch" not in sys.modules and usable_cores() > 1
    if count and "OMP_NUM_THREADS" not in environ and "MKL_NUM_THREADS" not in environ:
        free = free_cores(window_s)
        if free is not None and free < usable_cores():
            done["OMP_NUM_THREADS"] = str(free)
    environ.update(done)
    return done
