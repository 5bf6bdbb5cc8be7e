"""Does a lower training precision cost quality? The demo's pixel accuracy, fp32 vs bf16, over seeds.

    python benchmarks/precision_quality.py --seeds 0 1 2
    python benchmarks/precision_quality.py --seeds 0 -- train.steps=500   # shorter runs

Each (precision, seed) trains the ``demo`` preset as it stands (read at run time) with
``train.precision`` and ``train.seed`` set, in its own run folder, and scores the held-out scenes with
``unitgan.demo.run_demo``. Translation for scoring runs in fp32, so only the training precision differs.
Prints every run and the mean +- standard deviation per precision and direction (``<out>/table.md``; every
run in ``<out>/results.json``, the run folders under ``<out>``). CPU-heavy: a full demo run takes minutes;
bf16 on a CPU without native bf16 kernels takes far longer than fp32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_output_args, export, markdown_table, save_results, write_table  # noqa: E402


def _flatten(data: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value)}")
    return out


def main(argv: list[str] | None = None) -> None:
    from unitgan.demo import run_demo

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--preset-file", type=Path, default=None,
                   help="a demo YAML to use instead of the bundled one (its keys become overrides)")  # fmt: skip
    p.add_argument("--threads", type=int, default=0)
    add_output_args(p, "precision_quality", "extra demo config overrides")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.out

    preset = _flatten(yaml.safe_load(args.preset_file.read_text())) if args.preset_file else []
    preset = [o for o in preset if not o.startswith("train.out_dir=")]
    results: dict[str, list[dict]] = {prec: [] for prec in args.precisions}
    for seed in args.seeds:
        for prec in args.precisions:
            t = time.time()
            overrides = [*preset, f"train.precision={prec}", f"train.seed={seed}", *args.overrides]
            report = run_demo(root / f"{prec}_seed{seed}", overrides, progress=False)
            row = {"seed": seed, **report.accuracy, "steps": report.steps, "seconds": time.time() - t}
            results[prec].append(row)
            print(
                f"{prec} seed {seed}: A->B {row['a2b']:.4f}  B->A {row['b2a']:.4f}  "
                f"({report.steps} steps, {row['seconds']:.0f} s)",
                flush=True,
            )

    table = []
    for prec, rows in results.items():
        cells = [prec, str(len(rows))]
        for d in ("a2b", "b2a"):
            vals = [r[d] for r in rows]
            sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
            cells.append(f"{statistics.mean(vals):.4f} ± {sd:.4f}")
        table.append(cells)
    save_results(args.out / "results.json", {"overrides": args.overrides, "results": results})
    write_table(args.out, markdown_table(["precision", "runs", "A->B (mean ± std)", "B->A (mean ± std)"], table))
    export(args.out, args.export, ["results.json", "table.md"])


if __name__ == "__main__":
    main()
