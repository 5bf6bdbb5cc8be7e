"""Seconds per training step of the two update orders (``train.update_order``), side by side in one run.

    simultaneous   G and D gradients at the step's starting weights; the translations are computed once
    alternating    the authors' version_02: a D update on fresh translations, then the G update against
                   the updated D (the generators run twice per step)

Both trainers are built from the same preset and seed and fed the same random batch; their steps are
interleaved (A, B, A, B, ...) so that a busy machine slows both alike, and the median of each is reported,
as CPU seconds (all threads of this process) and wall seconds per step (``<out>/results.json``,
``<out>/table.md``):

    python benchmarks/update_order.py unit_master --size 256 --batch 1 --reps 3     # ~20 s/step here
    python benchmarks/update_order.py demo --reps 50

The demo's accuracy under each order comes from the ablation script (4 seeds):

    python benchmarks/ablation.py --variants "full UNIT" --out runs/order_sim train.update_order=simultaneous
    python benchmarks/ablation.py --variants "full UNIT" --out runs/order_alt train.update_order=alternating
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_output_args, export, markdown_table, save_results, setup, write_table  # noqa: E402

from unitgan.config import load_config  # noqa: E402
from unitgan.train.trainer import UNITTrainer  # noqa: E402

ORDERS = ("simultaneous", "alternating")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("preset", help="config preset or YAML path (its data is not read: the batch is random)")
    p.add_argument("--size", type=int, default=0, help="image size (0 = the preset's data.crop_size)")
    p.add_argument("--batch", type=int, default=0, help="images per domain (0 = the preset's data.batch_size)")
    p.add_argument("--reps", type=int, default=5, help="timed steps per order (after one warm-up step each)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    add_output_args(p, "update_order", "overrides applied to both trainers")
    return p.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup(args.threads)
    extra = ["data.root=unused", "train.device=cpu", *args.overrides]
    if args.size:
        extra.append(f"data.crop_size={args.size}")
    if args.batch:
        extra.append(f"data.batch_size={args.batch}")
    device = torch.device("cpu")
    trainers, batch = {}, None
    for order in ORDERS:
        cfg = load_config(args.preset, [*extra, f"train.update_order={order}"])
        torch.manual_seed(cfg.train.seed)
        trainers[order] = UNITTrainer(cfg, device)
        if batch is None:
            n, s, m = cfg.data.batch_size, cfg.data.crop_size, cfg.model
            batch = (torch.rand(n, m.input_nc_a, s, s) * 2 - 1, torch.rand(n, m.input_nc_b, s, s) * 2 - 1)
    load = os.getloadavg()[0]
    for order in ORDERS:  # warm-up: first-call allocations and kernel selection
        trainers[order].train_step(*batch)
    times: dict[str, list[tuple[float, float]]] = {order: [] for order in ORDERS}
    for _ in range(args.reps):
        for order in ORDERS:
            c0, w0 = time.process_time(), time.perf_counter()
            trainers[order].train_step(*batch)
            times[order].append((time.process_time() - c0, time.perf_counter() - w0))
    rows, results = [], {}
    for order in ORDERS:
        cpu = statistics.median(t[0] for t in times[order])
        wall = statistics.median(t[1] for t in times[order])
        ratio = cpu / statistics.median(t[0] for t in times[ORDERS[0]])
        rows.append([order, f"{cpu:.3f}", f"{wall:.3f}", f"{ratio:.2f}"])
        results[order] = {"cpu_s_per_step": cpu, "wall_s_per_step": wall, "cpu_vs_simultaneous": ratio}
    size, n = batch[0].shape[-1], batch[0].shape[0]
    load_after = os.getloadavg()[0]
    save_results(
        args.out / "results.json",
        {
            "preset": args.preset,
            "size": size,
            "batch": n,
            "threads": args.threads,
            "reps": args.reps,
            "overrides": args.overrides,
            "load_avg": [load, load_after],
            "orders": results,
        },
    )
    write_table(
        args.out,
        f"{args.preset}, {size}x{size}, batch {n}, {args.threads} thread(s), {args.reps} interleaved steps per "
        f"order; load average {load:.1f} -> {load_after:.1f}\n\n"
        + markdown_table(["update order", "CPU s/step", "wall s/step", "CPU time vs simultaneous"], rows),
    )
    export(args.out, args.export, ["results.json", "table.md"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
