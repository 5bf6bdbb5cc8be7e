"""Export trained generators for use outside the trainer: ONNX, TorchScript or safetensors, plus export.json.

An export folder holds one format and a manifest, ``export.json``, with everything a user needs to run the
model without unitgan: channels per domain, the normalisation, the size multiple, the files per direction
and the full training config. Each direction is one module ``x_src -> x_dst`` (encoder of the source
domain, shared blocks, generator of the target domain; z = mu as at test time):

    a2b.onnx              input "x_a" [N, C_a, H, W] -> output "x_ab" [N, C_b, H, W]   (format onnx)
    a2b.torchscript.pt    the same as a scripted module                                (format torchscript)
    generator.safetensors the generator weights needed for the exported directions     (format safetensors)
    config.json           the full config, to rebuild ``UNITGenerator``                (format safetensors)
    export.json           the manifest

Batch, height and width are dynamic; the raw models need H and W padded as
:func:`unitgan.inference.pad_for_model` does (the manifest's ``size_rule``), and expect images at the
training scale (``training_scale``, ``scale_rule``). :func:`load_export` reads a folder back into an
:class:`unitgan.inference.ExportedTranslator`.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unitgan import __version__
from unitgan.config import Config, config_from_dict
from unitgan.errors import UnitganError
from unitgan.inference import (
    DIRECTIONS,
    DirectionalGenerator,
    ExportedTranslator,
    Runner,
    check_direction,
    load_generator,
    training_scale,
)
from unitgan.models import UNITGenerator, build_generator
from unitgan.runtime import atomic_write_text, resolve_device

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript", "safetensors")
MANIFEST = "export.json"
MANIFEST_VERSION = 1
ONNX_OPSET = 17
PARITY_TOL = 1e-4  # max abs difference allowed between an exported model and PyTorch (fp32)
SAFETENSORS_FILE = "generator.safetensors"
CONFIG_FILE = "config.json"


def resolve_directions(direction: str) -> tuple[str, ...]:
    """``'a2b'``, ``'b2a'`` or ``'both'`` -> the directions to export."""
    if direction == "both":
        return DIRECTIONS
    return (check_direction(direction),)


def _weight_prefixes(directions: tuple[str, ...]) -> tuple[str, ...]:
    """State-dict key prefixes of the generator parts the given directions use."""
    parts = {"enc_shared.", "dec_shared."}
    for d in directions:
        parts |= {"enc_a.", "dec_b."} if d == "a2b" else {"enc_b.", "dec_a."}
    return tuple(sorted(parts))


def _io_names(direction: str) -> tuple[str, str]:
    """ONNX input/output names in the paper's notation: a2b -> ('x_a', 'x_ab')."""
    src, dst = direction[0], direction[2]
    return f"x_{src}", f"x_{src}{dst}"


# ---------------------------------------------------------------------------------------------------------
# Writing an export


def generator_from_checkpoint(path: str | Path) -> tuple[UNITGenerator, Config, int | None]:
    """(generator in eval mode on the CPU, config, training step) from a checkpoint file."""
    gen, cfg, state = load_generator(path)
    step = state.get("step")
    return gen.eval(), cfg, int(step) if step is not None else None


def export_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    direction: str = "both",
    fmt: str = "onnx",
    overwrite: bool = False,
) -> Path:
    """Export the generator of a checkpoint file; returns the path of the written ``export.json``."""
    gen, cfg, step = generator_from_checkpoint(checkpoint)
    return export_generator(
        gen, cfg, output, direction, fmt, overwrite=overwrite, source={"checkpoint": str(checkpoint), "step": step}
    )


def export_generator(
    gen: UNITGenerator,
    cfg: Config,
    output: str | Path,
    direction: str = "both",
    fmt: str = "onnx",
    overwrite: bool = False,
    source: dict[str, Any] | None = None,
    opset: int = ONNX_OPSET,
) -> Path:
    """Write ``fmt`` files for ``direction`` ('a2b', 'b2a', 'both') and ``export.json`` into ``output``.

    Each exported file is run once against PyTorch on a random input; a difference above ``PARITY_TOL``
    raises. ``export.json`` is written last, so a folder holding it holds a complete export.
    """
    if fmt not in FORMATS:
        raise UnitganError(f"export format '{fmt}' is not one of {', '.join(FORMATS)}")
    directions = resolve_directions(direction)
    out = Path(output)
    _prepare_output(out, overwrite)
    gen = copy.deepcopy(gen).to("cpu").eval()  # the caller's module keeps its device and mode
    m = gen.size_multiple
    files: dict[str, dict[str, Any]] = {}
    checks: dict[str, float] = {}
    check_hw = (2 * m, 3 * m)  # size of the random parity-check input

    if fmt == "safetensors":
        _write_safetensors(gen, cfg, directions, out)
        reloaded = _safetensors_runners(out, cfg, directions, torch.device("cpu"))
    for d in directions:
        module = DirectionalGenerator(gen, d).eval()
        c_src = cfg.model.input_nc_a if d == "a2b" else cfg.model.input_nc_b
        x = torch.rand(2, c_src, *check_hw, generator=torch.Generator().manual_seed(0)) * 2 - 1  # [2, C_src, 2m, 3m]
        with torch.inference_mode():
            expected = module(x)
        name_in, name_out = _io_names(d)
        if fmt == "onnx":
            path = out / f"{d}.onnx"
            _write_onnx(module, x, path, name_in, name_out, opset)
            got = _onnx_runner(path, threads=1)(x)
            files[d] = {"file": path.name, "input": name_in, "output": name_out}
        elif fmt == "torchscript":
            path = out / f"{d}.torchscript.pt"
            _write_torchscript(module, path)
            got = _torchscript_runner(path, torch.device("cpu"))(x)
            files[d] = {"file": path.name}
        else:
            got = reloaded[d](x)
            files[d] = {"file": SAFETENSORS_FILE}
        diff = float((got - expected).abs().max())
        checks[d] = diff
        if not diff <= PARITY_TOL:
            raise UnitganError(
                f"exported {fmt} model for {d} differs from PyTorch by {diff:.2e} (> {PARITY_TOL:g}); please report this"
            )
        log.info("exported %s %s to %s (max abs difference to PyTorch %.1e)", d, fmt, out / files[d]["file"], diff)

    manifest = _manifest(cfg, fmt, directions, files, m, checks, check_hw, source, opset)
    path = out / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    return path


def _prepare_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UnitganError(f"export output '{out}' is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UnitganError(f"export folder '{out}' is not empty (use --overwrite to replace an export there)")
        old = out / MANIFEST
        if not old.is_file():
            raise UnitganError(f"export folder '{out}' is not empty and holds no export; choose another folder")
        try:
            old_files = {f["file"] for f in json.loads(old.read_text())["directions"].values()}
        except (ValueError, KeyError, TypeError, AttributeError):
            old_files = set()
        for name in [MANIFEST, CONFIG_FILE, *sorted(old_files)]:
            target = out / Path(name).name  # never outside the folder
            if target.is_file():
                target.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UnitganError(f"export folder '{out}' cannot be created: {e.strerror or e}") from None


def _manifest(
    cfg: Config,
    fmt: str,
    directions: tuple[str, ...],
    files: dict[str, dict[str, Any]],
    size_multiple: int,
    checks: dict[str, float],
    check_hw: tuple[int, int],
    source: dict[str, Any] | None,
    opset: int,
) -> dict[str, Any]:
    channels = {"a": cfg.model.input_nc_a, "b": cfg.model.input_nc_b}
    return {
        "unitgan_export": MANIFEST_VERSION,
        "unitgan_version": __version__,
        "format": fmt,
        **({"onnx_opset": opset} if fmt == "onnx" else {}),
        "directions": {
            d: {
                **files[d],
                "in_channels": channels[d[0]],
                "out_channels": channels[d[2]],
            }
            for d in directions
        },
        "channels": channels,
        "image_modes": {k: ("L" if c == 1 else "RGB") for k, c in channels.items()},
        "layout": "NCHW",
        "dtype": "float32",
        "normalisation": {
            "input": "x = pixel / 127.5 - 1, pixel in 0..255 (so x in [-1, 1])",
            "output": "tanh output y in [-1, 1]; pixel = round((clamp(y, -1, 1) + 1) * 127.5)",
            "scale": 127.5,
            "offset": -1.0,
        },
        "size_multiple": size_multiple,
        "dynamic_axes": ["batch", "height", "width"],
        "size_rule": (
            f"height and width must be multiples of {size_multiple} and at least {2 * size_multiple}: pad "
            f"bottom/right to that (by reflection, or by replication where the pad is not smaller than the side), "
            "translate, crop back (unitgan's loaders do this); any image size translates"
        ),
        "training_scale": training_scale(cfg),
        "scale_rule": (
            "resize the shorter side to training_scale (aspect kept, antialiased) before translating, as training "
            "did; 0 means the model was trained at native size (no resize)"
        ),
        "parity_check": {"input_shape": f"[2, C_src, {check_hw[0]}, {check_hw[1]}]", "max_abs_diff": checks},
        "source": source or {},
        "config": cfg.to_dict(),
    }


def _write_onnx(module: nn.Module, x: torch.Tensor, path: Path, name_in: str, name_out: str, opset: int) -> None:
    """The TorchScript-based exporter: no extra dependency, dynamic axes by name (deprecated, still shipped)."""
    try:
        import onnx
    except ImportError:
        raise UnitganError("ONNX export needs the onnx package: pip install 'unitgan[export]'") from None
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces its own future
        warnings.simplefilter("ignore", UserWarning)  # constant-folding and instance-norm notes
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants
        torch.onnx.export(
            module,
            (x,),
            str(path),
            input_names=[name_in],
            output_names=[name_out],
            dynamic_axes={name_in: axes, name_out: axes},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))


def _write_torchscript(module: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        scripted = torch.jit.script(module)
    scripted.save(str(path))


def _write_safetensors(gen: UNITGenerator, cfg: Config, directions: tuple[str, ...], out: Path) -> None:
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise UnitganError("safetensors export needs the safetensors package: pip install 'unitgan[export]'") from None
    prefixes = _weight_prefixes(directions)
    weights = {k: v.detach().contiguous() for k, v in gen.state_dict().items() if k.startswith(prefixes)}
    save_file(weights, str(out / SAFETENSORS_FILE), metadata={"directions": ",".join(directions)})
    atomic_write_text(out / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------------
# Reading an export back


def _onnx_runner(path: Path, threads: int = 0) -> Runner:
    try:
        import onnxruntime as ort
    except ImportError:
        raise UnitganError("the onnx engine needs onnxruntime: pip install 'unitgan[export]'") from None
    opts = ort.SessionOptions()
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise UnitganError(f"ONNX model '{path}' cannot be loaded: {str(e).strip().splitlines()[0]}") from None
    name_in = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(session.run(None, {name_in: arr})[0])

    return run


def _torchscript_runner(path: Path, device: torch.device) -> Runner:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            module = torch.jit.load(str(path), map_location=device).eval()
    except Exception as e:  # noqa: BLE001 - any load failure means the same thing to the user
        raise UnitganError(f"TorchScript model '{path}' cannot be loaded: {str(e).strip().splitlines()[0]}") from None

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x.to(device))

    return run


def _safetensors_runners(
    out: Path, cfg: Config, directions: tuple[str, ...], device: torch.device
) -> dict[str, Runner]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise UnitganError("safetensors exports need the safetensors package: pip install 'unitgan[export]'") from None
    path = out / SAFETENSORS_FILE
    try:
        weights = load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise UnitganError(f"weights '{path}' cannot be loaded: {e}") from None
    gen = build_generator(cfg.model)
    needed = {k for k in gen.state_dict() if k.startswith(_weight_prefixes(directions))}
    missing, unexpected = sorted(needed - weights.keys()), sorted(weights.keys() - needed)
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise UnitganError(f"weights '{path}' do not match the config in the export ({what})")
    gen.load_state_dict(weights, strict=False)
    gen = gen.to(device).eval()
    runners: dict[str, Runner] = {}
    for d in directions:
        module = DirectionalGenerator(gen, d)

        def run(x: torch.Tensor, module: nn.Module = module) -> torch.Tensor:
            with torch.inference_mode():
                return module(x.to(device))

        runners[d] = run
    return runners


def is_export_dir(path: str | Path) -> bool:
    return (Path(path).expanduser() / MANIFEST).is_file()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The parsed ``export.json`` of an export folder; raises UnitganError naming the folder."""
    folder = Path(path).expanduser()
    file = folder / MANIFEST
    if not file.is_file():
        raise UnitganError(f"'{folder}' is not a unitgan export folder (no {MANIFEST})")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise UnitganError(f"'{file}' cannot be read: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("unitgan_export") != MANIFEST_VERSION:
        raise UnitganError(f"'{file}' is not a unitgan export manifest (version {MANIFEST_VERSION})")
    if manifest.get("format") not in FORMATS or not isinstance(manifest.get("directions"), dict):
        raise UnitganError(f"'{file}' names no known format or no directions")
    bad = [d for d in manifest["directions"] if d not in DIRECTIONS]
    if bad or not manifest["directions"]:
        raise UnitganError(f"'{file}' lists unknown directions {bad}")
    for d, entry in manifest["directions"].items():
        f = folder / Path(str(entry.get("file", ""))).name
        if not f.is_file():
            raise UnitganError(f"export '{folder}' is missing {f.name} (direction {d})")
    return manifest


def load_export(path: str | Path, device: str = "cpu", threads: int = 0) -> ExportedTranslator:
    """Load an export folder: ONNX through onnxruntime (CPU), TorchScript and safetensors through torch.

    Args:
        path: the folder holding ``export.json``.
        device: torch device for TorchScript and safetensors exports ('auto', 'cpu', 'cuda', ...).
        threads: onnxruntime intra-op threads (0 = its default).
    """
    folder = Path(path).expanduser()
    manifest = read_manifest(folder)
    try:
        cfg = config_from_dict(manifest["config"])
    except (UnitganError, KeyError) as e:
        raise UnitganError(f"export '{folder}' holds an invalid config: {e}") from None
    fmt = manifest["format"]
    directions = tuple(d for d in DIRECTIONS if d in manifest["directions"])
    files = {d: folder / Path(manifest["directions"][d]["file"]).name for d in directions}
    dev = torch.device("cpu") if fmt == "onnx" else resolve_device(device)
    if fmt == "onnx":
        runners = {d: _onnx_runner(files[d], threads) for d in directions}
    elif fmt == "torchscript":
        runners = {d: _torchscript_runner(files[d], dev) for d in directions}
    else:
        runners = _safetensors_runners(folder, cfg, directions, dev)
    log.info("loaded %s export %s (%s)", fmt, folder, ", ".join(directions))
    return ExportedTranslator(runners, manifest, "onnx" if fmt == "onnx" else "torch", dev)
