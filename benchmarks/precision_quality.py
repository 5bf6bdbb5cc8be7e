"""Does a lower training precision cost quality? The demo's pixel accuracy, fp32 vs bf16, over seeds.

    PYTHONPATH=src python benchmarks/precision_quality.py --seeds 0 1 2
    PYTHONPATH=src python benchmarks/precision_quality.py --seeds 0 --set train.steps=500   # shorter runs

Each (precision, seed) trains the ``demo`` preset as it stands (read at run time) with
``train.precision`` and ``train.seed`` set, in its own run folder, and scores the held-out scenes with
``unitgan.demo.run_demo``. Translation for scoring runs in fp32, so only the training precision differs.
Prints every run and the mean +- standard deviation per precision and direction. CPU-heavy: a full demo
run takes minutes; bf16 on a CPU without native bf16 kernels takes far longer than fp32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml


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
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra demo config overrides")
    p.add_argument("--preset-file", type=Path, default=None,
                   help="a demo YAML to use instead of the bundled one (its keys become overrides)")  # fmt: skip
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="run folders (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.out or Path(tempfile.mkdtemp(prefix="unitgan_precision_"))

    preset = _flatten(yaml.safe_load(args.preset_file.read_text())) if args.preset_file else []
    preset = [o for o in preset if not o.startswith("train.out_dir=")]
    results: dict[str, list[dict]] = {prec: [] for prec in args.precisions}
    for seed in args.seeds:
        for prec in args.precisions:
            t = time.time()
            overrides = [*preset, f"train.precision={prec}", f"train.seed={seed}", *args.set]
            report = run_demo(root / f"{prec}_seed{seed}", overrides, progress=False)
            row = {"seed": seed, **report.accuracy, "steps": report.steps, "seconds": time.time() - t}
            results[prec].append(row)
            print(
                f"{prec} seed {seed}: A->B {row['a2b']:.4f}  B->A {row['b2a']:.4f}  "
                f"({report.steps} steps, {row['seconds']:.0f} s)",
                flush=True,
            )

    print("\nprecision  runs   A->B (mean +- std)    B->A (mean +- std)")
    for prec, rows in results.items():
        cells = []
        for d in ("a2b", "b2a"):
            vals = [r[d] for r in rows]
            sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
            cells.append(f"{statistics.mean(vals):.4f} +- {sd:.4f}")
        print(f"{prec:<10} {len(rows):>4}   {cells[0]:<20}  {cells[1]:<20}")
    if args.json:
        args.json.write_text(json.dumps({"overrides": args.set, "results": results}, indent=2))


if __name__ == "__main__":
    main()
