"""Shared helpers of the benchmark scripts: paths, threads, timing, result files and tables."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data"  # offline arrays (mnist.npz, sklearn_digits.npz, ...)


def setup(threads: int) -> None:
    """Fix the CPU thread count (the benchmark machine has 2 shared cores)."""
    if threads > 0:
        torch.set_num_threads(threads)


@contextmanager
def cpu_timer() -> Iterator[dict[str, float]]:
    """Measure CPU seconds (all threads of this process) and wall seconds of a block."""
    out: dict[str, float] = {}
    c0, w0 = time.process_time(), time.perf_counter()
    try:
        yield out
    finally:
        out["cpu_s"] = time.process_time() - c0
        out["wall_s"] = time.perf_counter() - w0


def load_results(path: Path) -> dict:
    """Finished runs of an earlier invocation (so a rerun skips them)."""
    if path.is_file():
        return json.loads(path.read_text())
    return {}


def save_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    """``mean +- std`` of a list (scaled), or ``-`` when empty."""
    if not values:
        return "-"
    m, s = mean_std([v * scale for v in values])
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
