"""Translation speed in images/s for both engines: PyTorch (Translator) and ONNX (onnxruntime, CPU).

Without --checkpoint it times a freshly initialised generator of the ``demo`` preset (speed does not depend on
the weights; ``key=value`` arguments override that preset). Both engines get the same thread count; the ONNX
model is exported to a temporary folder. Writes ``<out>/results.json`` and ``<out>/table.md``.

    python benchmarks/engine_speed.py                      # 32x32, batch 8, 1 thread
    python benchmarks/engine_speed.py --size 256 --batch-size 1 --checkpoint runs/unit
    python benchmarks/engine_speed.py model.ch=16           # a narrower demo generator
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_output_args, export, markdown_table, save_results, write_table  # noqa: E402

from unitgan.config import load_config  # noqa: E402
from unitgan.export import export_generator  # noqa: E402
from unitgan.inference import Translator, load_generator  # noqa: E402
from unitgan.models import UNITGenerator  # noqa: E402
from unitgan.translator import open_translator  # noqa: E402


def images_per_second(translate, x: torch.Tensor, direction: str, seconds: float) -> float:
    translate(x, direction)  # warm-up
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds or n < 3:
        translate(x, direction)
        n += 1
    return n * x.shape[0] / elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a checkpoint file (default: the demo architecture, random weights)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--direction", default="a2b", choices=["a2b", "b2a"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=3.0, help="time per engine")
    add_output_args(p, "engine_speed", "overrides of the demo preset (without --checkpoint)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.checkpoint:
        gen, cfg, _ = load_generator(args.checkpoint)
    else:
        cfg = load_config("demo", args.overrides)
        torch.manual_seed(0)
        gen = UNITGenerator(cfg.model).eval()
    channels = cfg.model.input_nc_a if args.direction == "a2b" else cfg.model.input_nc_b
    x = torch.rand(args.batch_size, channels, args.size, args.size) * 2 - 1

    torch_engine = Translator(gen, cfg, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        export_generator(gen, cfg, tmp, args.direction, "onnx")
        onnx_engine = open_translator(tmp, "onnx", threads=args.threads)
    rows = [
        ("torch", images_per_second(torch_engine.translate, x, args.direction, args.seconds)),
        ("onnx", images_per_second(onnx_engine.translate, x, args.direction, args.seconds)),
    ]
    what = f"{args.direction}, {args.size}x{args.size}, batch {args.batch_size}, {args.threads} thread(s), CPU"
    save_results(
        args.out / "results.json",
        {
            "direction": args.direction,
            "size": args.size,
            "batch": args.batch_size,
            "threads": args.threads,
            "checkpoint": args.checkpoint,
            "overrides": args.overrides,
            "images_per_s": dict(rows),
        },
    )
    write_table(args.out, what + "\n\n" + markdown_table(["engine", "images/s"], [[n, f"{v:.1f}"] for n, v in rows]))
    export(args.out, args.export, ["results.json", "table.md"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
