"""Experiment 1, the paper's ablation, on the built-in synthetic domains (ground truth known).

Trains the ``demo`` preset (read at run time, so it follows that preset's tuning) in four variants and
scores the held-out scenes with pixel accuracy both ways, as the demo does (all pixels, and shape pixels,
recorded in results.json as a2b_shapes / b2a_shapes; runs from before that hold all pixels only):

    full UNIT            the demo preset as it is
    no weight sharing    model.n_shared=0
    no cycle terms       loss.cyc_kl_w=0 loss.cyc_recon_w=0       (lambda3 = lambda4 = 0)
    no KL                loss.kl_w=0 loss.cyc_kl_w=0              (lambda1 = lambda3 = 0)

The table in docs/results/ablation.md (the demo preset as it is, 3000 steps per run):

    python benchmarks/ablation.py --seeds 0 1 2 3 --jobs 2 --export docs/data/ablation

``--jobs N`` runs N at once, each in its own process (on a GPU most of it is idle with one small run).

Finished runs are kept in ``<out>/results.json``; rerunning the command skips them. ``<out>/runs.csv`` has
one row per run, ``<out>/table.md`` the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    add_output_args,
    cpu_timer,
    device_name,
    export,
    fmt,
    markdown_table,
    run_cached,
    run_time,
    setup,
    write_runs_csv,
    write_table,
)

from unitgan.config import load_config  # noqa: E402
from unitgan.demo import evaluate_pairs, held_out_pairs  # noqa: E402
from unitgan.metrics.pixel import THRESHOLD  # noqa: E402
from unitgan.train.loop import train  # noqa: E402
from unitgan.translator import open_translator  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "full UNIT": [],
    "no weight sharing": ["model.n_shared=0"],
    "no cycle terms": ["loss.cyc_kl_w=0", "loss.cyc_recon_w=0"],
    "no KL": ["loss.kl_w=0", "loss.cyc_kl_w=0"],
}

# runs.csv: column -> key of a run's result
RUN_COLUMNS = {
    "a2b_pixel_acc": "a2b",
    "b2a_pixel_acc": "b2a",
    "a2b_shape_acc": "a2b_shapes",
    "b2a_shape_acc": "b2a_shapes",
    "steps": "steps",
    "device": "device",
    "cpu_s": "cpu_s",
    "wall_s": "wall_s",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (e.g. on a GPU)")
    add_output_args(p, "ablation", "overrides of the demo preset for every run")
    return p.parse_args(argv)


def run_one(name: str, seed: int, args: argparse.Namespace) -> dict:
    run_dir = args.out / f"{name.replace(' ', '_')}_seed{seed}"
    overrides = [f"train.out_dir={run_dir}", f"train.seed={seed}", *args.overrides, *VARIANTS[name]]
    cfg = load_config("demo", overrides)
    overrides += [f"train.ckpt_every={cfg.train.steps}", f"train.image_every={cfg.train.steps}"]
    cfg = load_config("demo", overrides)
    with cpu_timer() as t:
        result = train(cfg, progress=False)
    if result.interrupted:
        raise KeyboardInterrupt  # a stopped run is not a result; rerun the command to redo it
    translator = open_translator(result.checkpoint, device="cpu")
    x_a, x_b = held_out_pairs(cfg)
    acc, _, _ = evaluate_pairs(translator, x_a, x_b)  # the demo's scoring: all pixels and shape pixels
    return {**acc, "steps": result.step, "device": device_name(cfg.train.device), **t}


def table(results: dict, variants: list[str]) -> str:
    rows = []
    for name in variants:
        runs = [r for key, r in results.items() if key.rsplit("/", 1)[0] == name]
        if not runs:
            continue
        rows.append(
            [
                name,
                fmt([r["a2b"] for r in runs]),
                fmt([r["b2a"] for r in runs]),
                str(len(runs)),
                f"{runs[0]['steps']}",
                run_time(runs),
            ]
        )
    header = ["variant", "A->B pixel acc.", "B->A pixel acc.", "seeds", "steps", "time / run"]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup(args.threads)
    items = [(n, s) for s in args.seeds for n in args.variants]  # seed by seed
    results = run_cached(
        "ablation",
        items,
        run_one,
        args,
        lambda r: (
            f"A->B {r['a2b']:.3f}  B->A {r['b2a']:.3f}  ({r['steps']} steps, {r['cpu_s'] / 60:.1f} CPU min, "
            f"{r['wall_s'] / 60:.1f} min on {r['device']})"
        ),
    )
    text = (
        f"Pixel accuracy (threshold {THRESHOLD} on a 0-1 scale) on held-out synthetic scenes, mean ± std over seeds\n\n"
        + table(results, args.variants)
    )
    write_table(args.out, text)
    write_runs_csv(args.out, results, ["variant", "seed"], RUN_COLUMNS)
    export(args.out, args.export, ["runs.csv", "table.md"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
