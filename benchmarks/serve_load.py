"""Bounded load test of ``unitgan serve`` on loopback: 200 requests, 8 at a time, p50 / p95 latency.

Starts the app in this process on a free loopback port, posts PNG images to ``POST /translate`` and reports
latency percentiles and errors. Without --checkpoint/--export it serves a freshly initialised generator of the
``demo`` preset (the architecture ``unitgan demo`` trains; latency does not depend on the weights).

    python benchmarks/serve_load.py                       # 200 requests, 8 concurrent, 32x32 images
    python benchmarks/serve_load.py --serve-export exports/onnx --size 64
    python benchmarks/serve_load.py model.ch=16            # overrides of the demo preset (no checkpoint)

Writes ``<out>/results.json`` (every latency, the errors) and ``<out>/table.md``.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_output_args, export, markdown_table, save_results, write_table  # noqa: E402
from loadtest import run_load  # noqa: E402

from unitgan.config import load_config  # noqa: E402
from unitgan.inference import BaseTranslator, Translator  # noqa: E402
from unitgan.models import UNITGenerator  # noqa: E402
from unitgan.serve import create_app, serve_in_thread  # noqa: E402
from unitgan.translator import open_translator  # noqa: E402


def build_translator(args) -> BaseTranslator:
    if args.serve_export or args.checkpoint:  # an export runs on its own engine
        return open_translator(args.serve_export or args.checkpoint, None, "cpu", threads=args.threads)
    cfg = load_config("demo", args.overrides)
    torch.manual_seed(0)
    return Translator(UNITGenerator(cfg.model), cfg, torch.device("cpu"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="serve this checkpoint (default: the demo architecture, random weights)")
    p.add_argument("--serve-export", help="serve this export folder instead")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--size", type=int, default=32, help="images are SIZE x SIZE")
    p.add_argument("--direction", default="a2b", choices=["a2b", "b2a"])
    p.add_argument("--threads", type=int, default=1, help="torch / onnxruntime threads (the CI box has 2 cores)")
    add_output_args(p, "serve_load", "overrides of the demo preset (without --checkpoint)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    translator = build_translator(args)
    mode = "L" if translator.channels(args.direction[0]) == 1 else "RGB"
    payloads = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        shape = (args.size, args.size) if mode == "L" else (args.size, args.size, 3)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(buf, format="PNG")
        payloads.append((buf.getvalue(), args.direction))

    with serve_in_thread(create_app(translator)) as url:
        run_load(url, payloads[:1], requests=2, concurrency=1)  # warm-up
        report = run_load(url, payloads, requests=args.requests, concurrency=args.concurrency)
    engine = getattr(translator, "engine", "torch")
    ms = 1000.0
    save_results(
        args.out / "results.json",
        {
            "engine": engine,
            "threads": args.threads,
            "size": args.size,
            "direction": args.direction,
            "requests": report.requests,
            "concurrency": report.concurrency,
            "wall_s": report.wall_s,
            "latencies_s": report.latencies,
            "errors": report.errors,
        },
    )
    row = [
        engine,
        f"{args.size}x{args.size}",
        str(report.requests),
        str(report.concurrency),
        f"{report.percentile(50) * ms:.1f}",
        f"{report.percentile(95) * ms:.1f}",
        f"{len(report.latencies) / report.wall_s:.1f}",
        str(len(report.errors)),
    ]
    header = ["engine", "size", "requests", "concurrency", "p50 ms", "p95 ms", "requests/s", "errors"]
    write_table(
        args.out,
        f"torch threads {args.threads}, {args.direction}, url {url}\n\n" + markdown_table(header, [row]),
    )
    for err in report.errors[:5]:
        print("error:", err)
    export(args.out, args.export, ["results.json", "table.md"])
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
