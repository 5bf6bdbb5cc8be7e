"""Experiment 2, unsupervised domain adaptation on digits (the paper's protocol), on offline data.

For each pair, trains the source-only classifier (the same discriminator trunk and class head, source labels,
no adaptation) and UNIT-DA, and reports the class head's accuracy on the target test set. Target labels are
never used in training or to pick a step: the last step is evaluated.

    mnist2mnistm   MNIST -> MNIST-M-style digits (built from MNIST and scikit-image photos if missing)
    mnist2digits   MNIST -> scikit-learn's 8x8 digits (upsampled to 32x32)

The table in docs/results.md (presets: 9000 steps; source-only ran here, on the 2-core CPU, ~3 CPU min per
run; UNIT-DA costs 5.5-5.7 CPU min per 1000 steps here, so its runs went to a lent H200, ~4 min each with
three at once):

    python benchmarks/da_digits.py --methods source-only --seeds 0 1 2 -- da.eval_every=1000
    python benchmarks/da_digits.py --pairs mnist2mnistm --methods UNIT-DA --seeds 0 1 2 --jobs 3 -- da.eval_every=1000
    python benchmarks/da_digits.py --pairs mnist2digits --methods UNIT-DA --seeds 0 1 2 -- train.steps=5000 da.eval_every=1000

``da.eval_every`` logs a learning curve (target and source test accuracy) into each run's metrics.jsonl; it
is read, never used to choose a step. ``--jobs N`` runs N at once, each in its own process.

Finished runs are kept in ``<out>/results.json``; rerunning the command skips them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DATA_DIR,
    REPO,
    cpu_timer,
    device_name,
    fmt,
    load_results,
    markdown_table,
    run_all,
    run_time,
    save_results,
    setup,
)

from unitgan.config import load_config  # noqa: E402
from unitgan.data.mnistm import build_mnistm  # noqa: E402
from unitgan.train.loop import train  # noqa: E402

PAIRS = {"mnist2mnistm": "da_mnist2mnistm", "mnist2digits": "da_mnist2digits"}
METHODS = {"source-only": ["da.source_only=true"], "UNIT-DA": ["da.source_only=false"]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--data", type=Path, default=DATA_DIR, help="folder with mnist.npz and sklearn_digits.npz")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench_da")
    p.add_argument("--mnistm-limit", type=int, default=0, help="digits per split of the built MNIST-M (0 = all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (e.g. on a GPU)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for every run (e.g. train.steps=100)")
    return p.parse_args(argv)


def pair_data(pair: str, args: argparse.Namespace) -> list[str]:
    """Overrides pointing the pair's preset at the data folder (building the MNIST-M-style target if needed)."""
    mnist = args.data / "mnist.npz"
    if pair == "mnist2mnistm":
        target = args.out / "data" / "mnistm.npz"
        if not target.is_file():
            print(f"building {target} from {mnist} ...", flush=True)
            build_mnistm(mnist, target, seed=0, limit=args.mnistm_limit)
        return [f"data.a={mnist}", f"data.b={target}"]
    return [f"data.a={mnist}", f"data.b={args.data / 'sklearn_digits.npz'}"]


def run_one(pair: str, method: str, seed: int, args: argparse.Namespace) -> dict:
    run_dir = args.out / f"{pair}_{method}_seed{seed}"
    overrides = [f"train.out_dir={run_dir}", f"train.seed={seed}", *pair_data(pair, args), *METHODS[method]]
    cfg = load_config(PAIRS[pair], [*overrides, *args.overrides])
    with cpu_timer() as t:
        result = train(cfg, progress=False)
    if result.interrupted:
        raise KeyboardInterrupt  # a stopped run is not a result; rerun the command to redo it
    r = json.loads((run_dir / "da_results.json").read_text())
    device = device_name(cfg.train.device)
    return {"target_acc": r["target_acc"], "source_acc": r["source_acc"], "steps": r["step"], "device": device, **t}


def table(results: dict, pairs: list[str]) -> str:
    rows = []
    for pair in pairs:
        cells = [pair]
        steps, times = [], []
        for method in METHODS:
            runs = [r for k, r in results.items() if k.rsplit("/", 1)[0] == f"{pair}/{method}"]
            cells.append(fmt([r["target_acc"] for r in runs], 100, 1) + (f" ({len(runs)})" if runs else ""))
            steps += [str(r["steps"]) for r in runs[:1]]
            times.append(run_time(runs))
        rows.append([*cells, " / ".join(steps), " / ".join(times)])
    header = ["pair", "source-only (seeds)", "UNIT-DA (seeds)", "steps (SO / DA)", "time / run (SO / DA)"]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup(args.threads)
    results_path = args.out / "results.json"
    results = load_results(results_path)
    todo = [(p, m, s) for s in args.seeds for p in args.pairs for m in args.methods if f"{p}/{m}/{s}" not in results]
    print(f"domain adaptation: {len(todo)} run(s) to do, {len(results)} done, results in {results_path}", flush=True)
    for pair in {p for p, _, _ in todo}:  # build the MNIST-M-style target once, before any worker starts
        pair_data(pair, args)

    done = []

    def on_result(item: tuple[str, str, int], r: dict) -> None:
        results["/".join(map(str, item))] = r
        save_results(results_path, results)
        done.append(item)
        print(
            f"[{len(done)}/{len(todo)}] {item[0]}, {item[1]}, seed {item[2]}: target acc {100 * r['target_acc']:.2f}%  "
            f"source acc {100 * r['source_acc']:.2f}%  ({r['steps']} steps, {r['cpu_s'] / 60:.1f} CPU min, "
            f"{r['wall_s'] / 60:.1f} min on {r['device']})",
            flush=True,
        )

    run_all(todo, run_one, args, on_result)
    text = "Target test accuracy (%), mean ± std over seeds, last step\n\n" + table(results, args.pairs)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
