"""Shared helpers of the benchmark scripts: paths, threads, timing, result files and tables.

Every script follows one convention:

- positional ``key=value`` arguments override the config of every run (as ``unitgan train`` takes them);
- ``--out DIR`` is the results folder (default ``runs/bench_<script>``): ``results.json`` with every
  measurement, ``table.md`` with the table the script also prints, and for the experiments ``runs.csv``
  (one row per run) or ``curves/`` (one learning curve per run);
- ``--export DIR`` also copies the files a document publishes (``runs.csv``, ``curves/`` or ``results.json``
  and ``table.md``) to ``DIR`` under the same names: ``docs/data/<name>/`` is written this way
  (``docs/data/README.md`` gives each folder's command).

The scripts import the installed package (``pip install -e .``).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import shutil
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import torch

from unitgan.runtime import atomic_write_text

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


# the arguments that pick runs, place them or spread them over cores: anything else changes what a run computes
SELECTION_ARGS = frozenset({"seeds", "pairs", "methods", "variants", "out", "export", "jobs", "threads"})


def check_same_settings(args: argparse.Namespace) -> None:
    """Keep a benchmark's settings (its arguments but :data:`SELECTION_ARGS`: overrides, recipe, data ...) in
    ``args.out/settings.json``, and refuse to add runs to a folder whose finished runs, which a rerun skips, and
    checkpoints, which a run resumes from, were made with other settings."""
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in SELECTION_ARGS}
    settings = json.loads(json.dumps(settings, sort_keys=True))  # tuples as lists, as they come back from disk
    path = args.out / "settings.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        changed = sorted(k for k in saved.keys() | settings.keys() if saved.get(k) != settings.get(k))
        if changed:
            what = "; ".join(f"{k}: {saved.get(k)!r} there, {settings.get(k)!r} now" for k in changed)
            raise SystemExit(
                f"{args.out} holds runs made with other settings ({what}): pass another --out, "
                f"or delete {args.out} to start over"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def add_output_args(p: argparse.ArgumentParser, name: str, overrides_help: str = "config overrides") -> None:
    """The harness's own arguments: ``--out``, ``--export`` and the positional ``key=value`` overrides."""
    p.add_argument("--out", type=Path, default=REPO / "runs" / f"bench_{name}", help="results folder")
    p.add_argument(
        "--export", type=Path, default=None, metavar="DIR", help="also copy the published files to DIR (docs/data/...)"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)


def write_table(out: Path, text: str) -> None:
    """Print the table and keep it as ``out/table.md``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text + "\n")
    print(text)


def write_runs_csv(out: Path, results: dict, key_columns: list[str], columns: dict[str, str]) -> Path:
    """``out/runs.csv``: one row per run of ``results`` (keyed ``a/b/seed``), the key's parts under
    ``key_columns``, then ``columns`` (CSV column -> result key; missing values left empty)."""
    path = out / "runs.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*key_columns, *columns])
        for key, r in results.items():
            parts = key.split("/")
            writer.writerow([*parts, *("" if r.get(k) is None else r[k] for k in columns.values())])
    return path


def export(out: Path, dest: Path | None, names: list[str]) -> None:
    """``--export DIR``: copy the files and folders ``names`` of ``out`` that exist to ``dest``, same names."""
    if dest is None:
        return
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = out / name
        if src.is_dir():
            shutil.copytree(src, dest / name, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, dest / name)
    print(f"exported {', '.join(n for n in names if (out / n).exists())} to {dest}")


def save_results(path: Path, results: dict) -> None:
    """Write ``results`` as JSON, whole or not at all (:func:`unitgan.runtime.atomic_write_text`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(results, indent=2), durable=False)


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


def run_all(
    todo: list[tuple],
    run_one: Callable[..., dict],
    args: argparse.Namespace,
    on_result: Callable[[tuple, dict], None],
) -> None:
    """Run ``run_one(*item, args)`` for every item of ``todo``, ``args.jobs`` at a time.

    With one job the runs go one after another in this process. With more, each run gets a fresh worker
    process (spawned, so CUDA works in it; ``args.threads`` torch threads each) and ``on_result`` is called
    here, in the parent, as each run finishes, so only this process writes the results file. Useful on a GPU
    (small runs leave most of it idle) or on a CPU with more cores than one run uses.
    """
    if args.jobs <= 1:
        for item in todo:
            on_result(item, run_one(*item, args))
        return
    ctx = multiprocessing.get_context("spawn")
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops the workers too, not only this process
    pool = ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=setup, initargs=(args.threads,))
    try:
        futures = {pool.submit(run_one, *item, args): item for item in todo}
        for future in as_completed(futures):
            on_result(futures[future], future.result())
    except BaseException:
        # stop the runs in flight (an unfinished run is not a result: the next invocation redoes it);
        # ProcessPoolExecutor has no public way to do this before Python 3.14
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        pool.shutdown()
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_cached(
    label: str,
    items: list[tuple],
    run_one: Callable[..., dict],
    args: argparse.Namespace,
    describe: Callable[[dict], str],
) -> dict:
    """Run every item (a tuple ending in the seed) not yet in ``args.out/results.json`` with :func:`run_all`,
    saving each result as it arrives under the key ``"/".join(item)``, so a stopped invocation loses only the
    runs in flight; prints one progress line per run (``describe(result)``). Returns all results.
    Refuses (:func:`check_same_settings`) an ``args.out`` whose runs were made with other settings."""
    check_same_settings(args)
    results_path = args.out / "results.json"
    results = load_results(results_path)
    todo = [item for item in items if "/".join(map(str, item)) not in results]
    print(f"{label}: {len(todo)} run(s) to do, {len(results)} done, results in {results_path}", flush=True)
    done: list[tuple] = []

    def keep_others() -> None:  # runs another invocation on the same folder saved meanwhile are kept
        results.update({k: v for k, v in load_results(results_path).items() if k not in results})

    def on_result(item: tuple, r: dict) -> None:
        keep_others()
        results["/".join(map(str, item))] = r
        save_results(results_path, results)
        done.append(item)
        what = ", ".join(map(str, item[:-1]))
        print(f"[{len(done)}/{len(todo)}] {what}, seed {item[-1]}: {describe(r)}", flush=True)

    run_all(todo, run_one, args, on_result)
    keep_others()
    return results


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def device_name(device: str) -> str:
    """What a run with ``train.device=device`` trains on, in words (for the results files)."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "cpu"


def run_time(runs: list[dict]) -> str:
    """Mean time of one run for a table cell, per device: CPU minutes on a CPU, wall minutes on a GPU."""
    if not runs:
        return "-"
    cells = []
    for device in sorted({r.get("device", "cpu") for r in runs}):
        on = [r for r in runs if r.get("device", "cpu") == device]
        if device == "cpu":
            cells.append(f"{sum(r['cpu_s'] for r in on) / len(on) / 60:.1f} CPU min")
        else:
            cells.append(f"{sum(r['wall_s'] for r in on) / len(on) / 60:.1f} min on {device}")
    return "; ".join(cells)
