"""Command line: ``unitgan train | translate | evaluate | demo | export | serve``. Only this module prints."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from unitgan import __version__
from unitgan.errors import UnitganError
from unitgan.openmp_env import set_openmp_defaults


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train (or resume) a UNIT model",
        description=(
            "Train UNIT. CONFIG is a YAML file or a bundled preset name (unit_paper, unit_master, demo, ...). "
            "Overrides are key=value, e.g. train.steps=1000 data.root=datasets/horse2zebra. "
            "Re-running the same command resumes from the newest checkpoint."
        ),
    )
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_translate(sub) -> None:
    p = sub.add_parser(
        "translate",
        help="translate images with a trained checkpoint",
        description=(
            "Translate images at the scale the model was trained at: each image's shorter side is resized to "
            "the run's data.load_size first, aspect kept (no resize when the run trained at native size, "
            "load_size 0). --size S translates at S x S instead, --native at the image's own resolution. "
            "Outputs have the size the model translated at (as the authors' test script and CycleGAN do); "
            "--keep-size resizes each output back to its input's size. Any image size works: inputs are "
            "padded to the model's size multiple and cropped back."
        ),
    )
    p.add_argument("inputs", nargs="+", help="image files, folders (recursive) or glob patterns")
    p.add_argument("--checkpoint", required=True, help="a checkpoint file (.pt), a run folder or an export folder")
    p.add_argument("--direction", required=True, help="a2b or b2a")
    p.add_argument("--engine", default="torch", choices=["torch", "onnx"], help="onnx: onnxruntime on the CPU")
    p.add_argument("--output", required=True, help="output folder (file names are kept, saved as PNG)")
    p.add_argument("--batch-size", type=int, default=8)
    scale = p.add_mutually_exclusive_group()
    scale.add_argument(
        "--size", type=int, default=0, help="resize inputs to SIZE x SIZE first (0 = the training scale)"
    )
    scale.add_argument("--native", action="store_true", help="translate at each image's native resolution")
    p.add_argument(
        "--keep-size", action="store_true", help="resize each output back to its input's size (default: model scale)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing output files")
    existing.add_argument(
        "--skip-existing", action="store_true", help="keep output files already there and skip their inputs"
    )
    p.add_argument(
        "--bad-images",
        default="error",
        choices=["error", "skip"],
        help="an unreadable or oversized input: stop naming it (error), or skip it and count it (skip)",
    )
    style = p.add_mutually_exclusive_group()
    style.add_argument(
        "--styles",
        type=int,
        default=0,
        metavar="K",
        help="MUNIT: K outputs per input, NAME_style0.png .. NAME_style{K-1}.png; style k is the same for every "
        "input (drawn with --seed from N(0, I), or, for a model trained with model.style_prior=bank, K remembered "
        "real styles spread over their looks)",
    )
    style.add_argument(
        "--style-image",
        default=None,
        metavar="REF",
        help="MUNIT: translate in the style of REF, an image of the TARGET domain (example-guided); one output",
    )
    p.add_argument("--seed", type=int, default=0, help="MUNIT: seed of the style draws (same seed, same styles)")


DEMO_MODELS = ("unit", "munit")


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="train and evaluate on the built-in synthetic domains (minutes, CPU)",
        description=(
            "unitgan demo: UNIT on the synthetic sketch <-> paint domains. unitgan demo munit (or --model munit): "
            "MUNIT on the domain where every sketch has several right paintings; the page shows the style "
            "samples next to all ground truths, with the mode coverage."
        ),
    )
    p.add_argument(
        "--out", default=None, help="folder for the run, translations and index.html (demo_out; munit: demo_munit_out)"
    )
    p.add_argument("--model", choices=DEMO_MODELS, default=None, help="unit (default) or munit")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="[munit] key=value",
        help="the model (unit, munit), then overrides of its preset",
    )
    p.add_argument("--no-progress", action="store_true")


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a checkpoint: FID/KID, pixel accuracy, domain-adaptation accuracy (what fits its data)",
        description=(
            "Evaluate a checkpoint on its config's test data: UNIT-DA checkpoints -> target test accuracy; "
            "synthetic domains -> pixel accuracy both ways; image folders and arrays -> FID and KID both ways "
            "(plus pixel accuracy with --gt-a2b/--gt-b2a). Writes JSON and prints a table."
        ),
    )
    p.add_argument("--checkpoint", required=True, help="a checkpoint file (.pt) or a run folder")
    p.add_argument("--data-root", default="", help="folder data: use this root (testA/ testB/) instead of the config's")
    p.add_argument("--gt-a2b", default="", help="folder of ground-truth B images named like the testA files")
    p.add_argument("--gt-b2a", default="", help="folder of ground-truth A images named like the testB files")
    p.add_argument("--threshold", type=float, default=0.1, help="pixel accuracy threshold on a 0-1 scale")
    fid = p.add_mutually_exclusive_group()
    fid.add_argument("--fid", dest="fid", action="store_true", default=None, help="compute FID/KID even here")
    fid.add_argument("--no-fid", dest="fid", action="store_false", help="skip FID/KID")
    p.add_argument("--inception", default="", help="Inception-v3 file for FID/KID (TorchScript or state dict)")
    p.add_argument("--download-inception", action="store_true", help="fetch pytorch-fid's weights (internet)")
    p.add_argument("--max-images", type=int, default=0, help="test images per domain (0 = all)")
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="", help="JSON file (default: evaluation.json next to the checkpoint)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unitgan", description="UNIT: unsupervised image-to-image translation")
    parser.add_argument("--version", action="version", version=f"unitgan {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_translate(sub)
    _add_demo(sub)
    _add_export(sub)
    _add_serve(sub)
    _add_evaluate(sub)
    return parser


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def cmd_train(args) -> int:
    from unitgan.config import load_config
    from unitgan.train.loop import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg, progress=not args.no_progress)
    if _rank() != 0:  # under torchrun, rank 0 alone reports
        return 130 if result.interrupted else 0
    if result.interrupted:
        print(f"stopped at step {result.step}; checkpoint {result.checkpoint}")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            print("to resume, run the same torchrun command again")
        else:
            print(
                f"to resume, run the same command again: unitgan train {args.config} {' '.join(args.overrides)}".rstrip()
            )
        return 130
    print(f"done: {result.step} steps, run folder {result.run_dir}, checkpoint {result.checkpoint}")
    return 0


def cmd_translate(args) -> int:
    from unitgan.checkpoint import resolve_checkpoint
    from unitgan.export import is_export_dir
    from unitgan.inference import UNIMODAL_MESSAGE, check_direction
    from unitgan.translator import open_translator

    check_direction(args.direction)
    if args.batch_size < 1:
        raise UnitganError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.size < 0:
        raise UnitganError(f"--size must be >= 0 (0 = the training scale), got {args.size}")
    if args.styles < 0:
        raise UnitganError(f"--styles must be >= 0, got {args.styles}")
    if not 0 <= args.seed < 2**63:
        raise UnitganError(f"--seed must be in 0..2^63-1, got {args.seed}")
    source = args.checkpoint if is_export_dir(args.checkpoint) else resolve_checkpoint(args.checkpoint)
    translator = open_translator(source, args.engine, args.device, args.precision)
    if args.seed and not translator.multimodal:
        raise UnitganError(f"--seed draws styles, and {UNIMODAL_MESSAGE}")
    written = translator.translate_files(
        args.inputs,
        args.output,
        args.direction,
        args.batch_size,
        args.size,
        overwrite=args.overwrite,
        native=args.native,
        keep_size=args.keep_size,
        styles=args.styles,
        style_image=args.style_image,
        seed=args.seed,
        skip_existing=args.skip_existing,
        bad_images=args.bad_images,
    )
    skipped = translator.skipped
    notes = [f"{n} skipped ({why})" for why, n in (("existing", skipped["existing"]), ("bad", skipped["bad"])) if n]
    per_input = f" ({args.styles} styles per input)" if args.styles else ""
    summary = f"translated {len(written)} image(s){per_input} {args.direction} into {args.output}"
    print(f"{summary}; {', '.join(notes)}" if notes else summary)
    return 0


def demo_model(model: str | None, overrides: list[str]) -> tuple[str, list[str]]:
    """(the demo's model, its overrides) from ``--model`` and a leading bare word (``unitgan demo munit``)."""
    if overrides and "=" not in overrides[0]:
        word, overrides = overrides[0], overrides[1:]
        if word not in DEMO_MODELS:
            raise UnitganError(f"demo model '{word}' is not one of {', '.join(DEMO_MODELS)}")
        if model is not None and model != word:
            raise UnitganError(f"the demo model is given twice and differently: --model {model} and '{word}'")
        model = word
    return model or "unit", overrides


def cmd_demo(args) -> int:
    model, overrides = demo_model(args.model, args.overrides)
    if model == "munit":
        from unitgan.demo_munit import run_munit_demo

        report = run_munit_demo(Path(args.out or "demo_munit_out"), overrides, progress=not args.no_progress)
        print(report.summary())
        print(f"open {report.html} to see the style samples next to the ground truths")
        return 0
    from unitgan.demo import run_demo

    report = run_demo(Path(args.out or "demo_out"), overrides, progress=not args.no_progress)
    print(report.summary())
    print(f"open {report.html} to see the translations")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export the generators for use without unitgan (ONNX, TorchScript, safetensors)")
    p.add_argument("--checkpoint", required=True, help="a checkpoint file (.pt) or a run folder")
    p.add_argument("--direction", default="both", choices=["a2b", "b2a", "both"])
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript", "safetensors"])
    p.add_argument("--output", required=True, help="export folder (files per direction + export.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an export already in the folder")


def cmd_export(args) -> int:
    from unitgan.checkpoint import resolve_checkpoint
    from unitgan.export import export_checkpoint

    ckpt = resolve_checkpoint(args.checkpoint)
    manifest = export_checkpoint(ckpt, args.output, args.direction, args.format, overwrite=args.overwrite)
    print(f"exported {args.direction} from {ckpt} as {args.format} into {args.output} (see {manifest})")
    return 0


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a web page and an HTTP API that translate images")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a checkpoint file (.pt) or a run folder")
    src.add_argument("--export", help="an export folder (from unitgan export)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-bytes", type=int, default=10 * 2**20, help="largest upload in bytes (default 10 MiB)")
    p.add_argument(
        "--max-pixels", type=int, default=0, help="most pixels per image (0 = from the memory available and the model)"
    )
    p.add_argument(
        "--token",
        default=os.environ.get("UNITGAN_TOKEN", ""),
        help="require this token (Authorization: Bearer TOKEN; a browser opens /?token=TOKEN); "
        "default $UNITGAN_TOKEN; needed for a non-loopback --host",
    )
    p.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --host without a token (anyone can use it)"
    )
    p.add_argument("--device", default="auto", help="torch device (checkpoints, TorchScript, safetensors)")
    p.add_argument(
        "--native",
        action="store_true",
        help="translate uploads at their native resolution instead of the training scale "
        "(the answer has the upload's size either way)",
    )


def cmd_serve(args) -> int:
    from unitgan.checkpoint import resolve_checkpoint
    from unitgan.export import is_export_dir, read_manifest
    from unitgan.serve import create_app, free_port, is_loopback, run, token_problem
    from unitgan.serve.app import LOOPBACK_NAMES
    from unitgan.translator import open_translator

    if args.max_bytes < 1 or args.max_pixels < 0:
        raise UnitganError("--max-bytes must be >= 1 and --max-pixels >= 0")
    if not 0 <= args.port <= 65535:
        raise UnitganError(f"--port must be in 0..65535, got {args.port}")
    if args.token and (problem := token_problem(args.token)):
        raise UnitganError(f"--token (or $UNITGAN_TOKEN) {problem}")
    if args.export and not is_export_dir(args.export):
        read_manifest(args.export)  # one line saying why it is no export folder
    source = args.export or resolve_checkpoint(args.checkpoint)
    translator = open_translator(source, None, args.device)  # the export's own engine
    if args.max_pixels > (limit := translator.pixel_budget(1)):
        raise UnitganError(
            f"--max-pixels {args.max_pixels} is more than this model can translate in the memory available "
            f"({limit} pixels); give at most that, or 0 for it"
        )
    loopback = is_loopback(args.host)
    if not loopback and not args.token and not args.insecure:
        raise UnitganError(
            f"--host {args.host} is reachable from other machines: give --token TOKEN (or $UNITGAN_TOKEN), "
            f"or --insecure to serve without authentication"
        )
    app = create_app(
        translator,
        max_bytes=args.max_bytes,
        max_pixels=args.max_pixels,
        native=args.native,
        allowed_hosts=(*LOOPBACK_NAMES, args.host.strip("[]").lower()) if loopback else None,
        token=args.token or None,
    )
    if not loopback and not args.token:
        print(f"warning: serving on {args.host}: anyone who can reach it can use the model (no authentication)")
    port = args.port or free_port(args.host)  # --port 0: the port chosen is the one printed
    print(f"serving on http://{args.host}:{port}/ (API schema at /openapi.json); Ctrl-C stops")
    run(app, args.host, port)
    return 0


def cmd_evaluate(args) -> int:
    import json

    from unitgan.checkpoint import resolve_checkpoint
    from unitgan.evaluate import EvalOptions, evaluate_checkpoint
    from unitgan.runtime import atomic_write_text

    if not 0 < args.threshold <= 1:
        raise UnitganError(f"--threshold must be in (0, 1], got {args.threshold}")
    if args.batch_size < 1 or args.max_images < 0 or args.kid_subset_size < 2:
        raise UnitganError("--batch-size must be >= 1, --max-images >= 0 and --kid-subset-size >= 2")
    ckpt = resolve_checkpoint(args.checkpoint)
    opts = EvalOptions(
        data_root=args.data_root,
        gt_a2b=args.gt_a2b,
        gt_b2a=args.gt_b2a,
        threshold=args.threshold,
        fid=args.fid,
        inception=args.inception,
        download_inception=args.download_inception,
        max_images=args.max_images,
        kid_subset_size=args.kid_subset_size,
        batch_size=args.batch_size,
        device=args.device,
    )
    report = evaluate_checkpoint(ckpt, opts)
    print(report.table())  # first: a results file that cannot be written loses nothing
    out = Path(args.out) if args.out else ckpt.parent / "evaluation.json"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(report.to_dict(), indent=2))
    except OSError as e:
        raise UnitganError(
            f"results file '{out}' cannot be written: {e.strerror or e} (the table above has them)"
        ) from None
    print(f"wrote {out}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "translate": cmd_translate,
    "evaluate": cmd_evaluate,
    "demo": cmd_demo,
    "export": cmd_export,
    "serve": cmd_serve,
}


def main(argv: list[str] | None = None) -> int:
    set_openmp_defaults()  # before anything imports torch: idle OpenMP threads sleep, not spin (busy machines)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (``train CONFIG --no-progress a=1``): collect them
    if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(  # under torchrun only rank 0 logs below warnings
        level=logging.DEBUG if args.verbose else logging.INFO if _rank() == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:  # torch's own INFO lines (compile metrics, FakeTensor cache statistics at exit)
        logging.getLogger("torch").setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except UnitganError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the file system said no (read-only, full, a file where a folder should be): one line
        where = f" '{e.filename}'" if e.filename else ""
        print(f"error: cannot write or read{where}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
