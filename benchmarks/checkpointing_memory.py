"""Training speed and peak memory, with and without activation checkpointing.

    python benchmarks/checkpointing_memory.py --config unit_paper --crop 512 --batch 1 --steps 10
    python benchmarks/checkpointing_memory.py --config demo --crop 64 --device cpu model.ch=16

Each variant runs in a fresh process (so peaks do not mix). Peak memory is
``torch.cuda.max_memory_allocated`` on a GPU, and on a CPU the peak resident set size above the size before
the first step (weights and inputs). Prints one JSON line per variant; writes ``<out>/results.json`` and
``<out>/table.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_output_args, export, markdown_table, save_results, write_table  # noqa: E402


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_variant(args, checkpointing: bool) -> dict:
    import torch

    from unitgan.config import load_config
    from unitgan.runtime import resolve_device
    from unitgan.train.trainer import UNITTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [
        f"data.crop_size={args.crop}",
        f"data.batch_size={args.batch}",
        f"train.precision={args.precision}",
        f"train.activation_checkpointing={str(checkpointing).lower()}",
        *args.overrides,
    ]
    cfg = load_config(args.config, overrides)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    trainer = UNITTrainer(cfg, device)
    x_a = torch.rand(args.batch, cfg.model.input_nc_a, args.crop, args.crop, device=device) * 2 - 1
    x_b = torch.rand(args.batch, cfg.model.input_nc_b, args.crop, args.crop, device=device) * 2 - 1
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rss0 = _rss_mib()  # weights and inputs only: the peak above this is what the steps need
    trainer.train_step(x_a, x_b)  # warm-up (allocator, cudnn autotune)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step(x_a, x_b)
    sync()
    seconds = time.perf_counter() - t0
    if device.type == "cuda":
        peak, how = torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    else:
        peak, how = _rss_mib() - rss0, "peak RSS above the RSS before the first step"
    return {
        "config": args.config,
        "device": str(device),
        "crop": args.crop,
        "batch": args.batch,
        "precision": args.precision,
        "activation_checkpointing": checkpointing,
        "steps_per_s": round(args.steps / seconds, 3),
        "peak_mib": round(peak, 1),
        "peak_is": how,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="unit_paper")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--variant", choices=["on", "off"], help=argparse.SUPPRESS)  # internal: one variant
    add_output_args(p, "checkpointing_memory")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_intermixed_args(argv)
    if args.variant:
        print(json.dumps(run_variant(args, args.variant == "on")))
        return
    rows = []
    for variant in ("off", "on"):
        cmd = [sys.executable, __file__, "--variant", variant, *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if proc.returncode != 0:
            # out of memory is a result too: the variant does not fit
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            rows.append({"activation_checkpointing": variant == "on", "error": tail})
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    save_results(args.out / "results.json", {"overrides": args.overrides, "variants": rows})
    cells = [
        [str(r["activation_checkpointing"]), "failed: " + r["error"], "", ""]
        if "error" in r
        else [str(r["activation_checkpointing"]), str(r["steps_per_s"]), str(r["peak_mib"]), r["peak_is"]]
        for r in rows
    ]
    what = f"{args.config}, {args.crop}x{args.crop}, batch {args.batch}, {args.precision}, {args.steps} steps\n\n"
    write_table(args.out, what + markdown_table(["activation checkpointing", "steps/s", "peak MiB", "peak is"], cells))
    export(args.out, args.export, ["results.json", "table.md"])


if __name__ == "__main__":
    main()
