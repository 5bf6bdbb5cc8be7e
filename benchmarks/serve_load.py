"""Bounded load test of ``unitgan serve`` on loopback: 200 requests, 8 at a time, p50 / p95 latency.

Starts the app in this process on a free loopback port, posts PNG images to ``POST /translate`` and reports
latency percentiles and errors. Without --checkpoint/--export it serves a freshly initialised generator of the
``demo`` preset (the architecture ``unitgan demo`` trains; latency does not depend on the weights).

    python benchmarks/serve_load.py                       # 200 requests, 8 concurrent, 32x32 images
    python benchmarks/serve_load.py --export exports/onnx --size 64
"""

from __future__ import annotations

import argparse
import io
import sys

import numpy as np
import torch
from PIL import Image

from unitgan.config import load_config
from unitgan.export import load_export
from unitgan.inference import Translator
from unitgan.models import UNITGenerator
from unitgan.serve import create_app, serve_in_thread
from unitgan.serve.loadtest import run_load


def build_translator(args) -> Translator:
    if args.export:
        return load_export(args.export, threads=args.threads)
    if args.checkpoint:
        return Translator.from_checkpoint(args.checkpoint, "cpu")
    cfg = load_config("demo")
    torch.manual_seed(0)
    return Translator(UNITGenerator(cfg.model), cfg, torch.device("cpu"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="serve this checkpoint (default: the demo architecture, random weights)")
    p.add_argument("--export", help="serve this export folder instead")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--size", type=int, default=32, help="images are SIZE x SIZE")
    p.add_argument("--direction", default="a2b", choices=["a2b", "b2a"])
    p.add_argument("--threads", type=int, default=1, help="torch / onnxruntime threads (the CI box has 2 cores)")
    args = p.parse_args()
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
    print(
        f"torch threads {args.threads}, {args.size}x{args.size} {args.direction}, engine "
        f"{getattr(translator, 'engine', 'torch')}, url {url}"
    )
    print(report.summary())
    for err in report.errors[:5]:
        print("error:", err)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
