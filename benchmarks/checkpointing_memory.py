"""Training speed and peak memory, with and without activation checkpointing.

    python benchmarks/speed.py --config unit_paper --crop 512 --batch 1 --steps 10
    python benchmarks/speed.py --config demo --crop 64 --device cpu model.ch=16     # overrides after options

Each variant runs in a fresh process (so peaks do not mix). Peak memory is
``torch.cuda.max_memory_allocated`` on a GPU, and on a CPU the peak resident set size above the size before
the first step (weights and inputs). Prints one JSON line per variant and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="unit_paper")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--variant", choices=["on", "off"], help=argparse.SUPPRESS)  # internal: one variant
    args, args.overrides = p.parse_known_args()
    if args.variant:
        print(json.dumps(run_variant(args, args.variant == "on")))
        return
    rows = []
    for variant in ("off", "on"):
        cmd = [sys.executable, __file__, "--variant", variant, *sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if proc.returncode != 0:
            # out of memory is a result too: the variant does not fit
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            rows.append({"activation_checkpointing": variant == "on", "error": tail})
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    print(f"\n{'checkpointing':>13} {'steps/s':>8} {'peak MiB':>9}")
    for r in rows:
        if "error" in r:
            print(f"{str(r['activation_checkpointing']):>13} failed: {r['error']}")
        else:
            print(
                f"{str(r['activation_checkpointing']):>13} {r['steps_per_s']:>8} {r['peak_mib']:>9}  ({r['peak_is']})"
            )


if __name__ == "__main__":
    main()
