"""Writing an export folder: the generator of a checkpoint (or one in memory) as ONNX, TorchScript or safetensors
files per direction, each checked against PyTorch when written, then the manifest ``export.json``, written last;
the folder is built beside the output and renamed into place, so an export is never left half-written.
"""

from __future__ import annotations

import copy
import errno
import io
import json
import logging
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unitgan import __version__
from unitgan.config import Config
from unitgan.errors import UnitganError
from unitgan.export.read import (
    FORMATS,
    MANIFEST,
    MANIFEST_VERSION,
    SAFETENSORS_FILE,
    onnx_runner,
    safetensors_munit_runners,
    safetensors_runners,
    style_target_domains,
    torchscript_runner,
)
from unitgan.inference import (
    DIRECTIONS,
    DirectionalGenerator,
    StyledDirectionalGenerator,
    check_direction,
    load_generator,
    training_scale,
)
from unitgan.models import MUNITGenerator, UNITGenerator
from unitgan.runtime import atomic_write, atomic_write_text, check_folder_path

log = logging.getLogger(__name__)


ONNX_OPSET = 17
PARITY_TOL = 1e-4  # max abs difference allowed between an exported model and PyTorch (fp32)
CONFIG_FILE = "config.json"


def resolve_directions(direction: str) -> tuple[str, ...]:
    """``'a2b'``, ``'b2a'`` or ``'both'`` -> the directions to export."""
    if direction == "both":
        return DIRECTIONS
    return (check_direction(direction),)


def _io_names(direction: str) -> tuple[str, str]:
    """ONNX input/output names in the paper's notation: a2b -> ('x_a', 'x_ab')."""
    src, dst = direction[0], direction[2]
    return f"x_{src}", f"x_{src}{dst}"


def export_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    direction: str = "both",
    fmt: str = "onnx",
    overwrite: bool = False,
) -> Path:
    """Export the generator of a checkpoint file (or a run folder's newest checkpoint that loads: the weights
    :func:`unitgan.inference.load_generator` gives translators); returns the path of the written ``export.json``."""
    gen, cfg, state = load_generator(checkpoint)
    step = int(state["step"]) if state.get("step") is not None else None
    return export_generator(
        gen, cfg, output, direction, fmt, overwrite=overwrite, source={"checkpoint": str(checkpoint), "step": step}
    )


def export_generator(
    gen: UNITGenerator | MUNITGenerator,
    cfg: Config,
    output: str | Path,
    direction: str = "both",
    fmt: str = "onnx",
    overwrite: bool = False,
    source: dict[str, Any] | None = None,
    opset: int = ONNX_OPSET,
) -> Path:
    """Write ``fmt`` files for ``direction`` ('a2b', 'b2a', 'both') and ``export.json`` into ``output``.

    Each exported file is run once against PyTorch on a random input (and a random style for MUNIT); a
    difference above ``PARITY_TOL`` raises. ``export.json`` is written last, so a folder holding it holds a
    complete export.
    """
    if fmt not in FORMATS:
        raise UnitganError(f"export format '{fmt}' is not one of {', '.join(FORMATS)}")
    directions = resolve_directions(direction)
    final = Path(output)
    _prepare_output(final, overwrite)
    check_folder_path(final, "export folder")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UnitganError(f"export folder '{final}' cannot be created: {e.strerror or e}") from None
    out = final.parent / f".{final.name}.new-{uuid.uuid4().hex[:12]}"
    try:
        out.mkdir()  # a plain mkdir: the folder gets the umask's permissions
    except OSError as e:
        if final.is_dir():  # the export folder is there: what fails is the new one written beside it
            raise UnitganError(
                f"export folder '{final}': a new export is written beside it in '{final.parent}' and then renamed "
                f"into place, and that folder takes no new entries: {e.strerror or e}"
            ) from None
        raise UnitganError(f"export folder '{final}' cannot be created: {e.strerror or e}") from None
    try:
        _write_export(gen, cfg, out, directions, fmt, source, opset)
        _swap_in(out, final, overwrite)
    except OSError as e:
        raise UnitganError(f"export into '{final}' failed: {e.strerror or e} (any previous export is intact)") from None
    finally:
        shutil.rmtree(out, ignore_errors=True)  # gone already after a successful swap
    return final / MANIFEST


def _swap_in(new: Path, final: Path, overwrite: bool) -> None:
    """Replace ``final`` by the complete folder ``new``: the old export is renamed away, ``new`` renamed in,
    then the old one removed; a failure at any point leaves a usable export at ``final``.

    Without ``overwrite``, ``final`` was absent or empty when the export began: ``new`` is renamed onto it
    in one step, which the kernel refuses if ``final`` has been filled since (another export into the same
    folder finished first), so two exports never replace each other silently."""
    if not overwrite or not final.exists():
        try:
            new.rename(final)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise UnitganError(
                    f"export folder '{final}' was filled by another export while this one ran; "
                    f"it keeps the other export, and this one was not written (use --overwrite to replace it)"
                ) from None
            raise
        return
    old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
    final.rename(old)
    try:
        new.rename(final)
    except OSError:
        old.rename(final)  # put the previous export back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_export(
    gen: UNITGenerator | MUNITGenerator,
    cfg: Config,
    out: Path,
    directions: tuple[str, ...],
    fmt: str,
    source: dict[str, Any] | None,
    opset: int,
) -> None:
    """Write the files of an export and its manifest into the (new, empty) folder ``out``."""
    gen = copy.deepcopy(gen).to("cpu").eval()  # the caller's module keeps its device and mode
    if gen.style_dim > 0:  # multimodal: each direction takes a style, and the style encoders are exported too
        return _export_munit(gen, cfg, out, directions, fmt, source, opset)
    m = gen.size_multiple
    files: dict[str, dict[str, Any]] = {}
    checks: dict[str, float] = {}
    check_hw = (2 * m, 3 * m)  # size of the random parity-check input

    if fmt == "safetensors":
        _write_safetensors(gen, cfg, directions, out)
        reloaded = safetensors_runners(out, cfg, directions, torch.device("cpu"))
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
            got = onnx_runner(path, threads=1)(x)
            files[d] = {"file": path.name, "input": name_in, "output": name_out}
        elif fmt == "torchscript":
            path = out / f"{d}.torchscript.pt"
            _write_torchscript(module, path)
            got = torchscript_runner(path, torch.device("cpu"))(x)
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
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def _export_munit(
    gen: MUNITGenerator,
    cfg: Config,
    out: Path,
    directions: tuple[str, ...],
    fmt: str,
    source: dict[str, Any] | None,
    opset: int,
) -> Path:
    """:func:`export_generator` for a MUNIT generator: per direction ``(x_src, s_dst) -> x_dst``, and the style
    encoder of every target domain, each checked against PyTorch on a random input and a random style."""
    m = gen.size_multiple
    check_hw = (2 * m, 3 * m)
    g = torch.Generator().manual_seed(0)
    files: dict[str, dict[str, Any]] = {}
    checks: dict[str, float] = {}
    if fmt == "safetensors":
        _write_safetensors(gen, cfg, directions, out)
        reloaded, reloaded_styles = safetensors_munit_runners(out, cfg, directions, torch.device("cpu"))
    jobs: list[tuple[str, nn.Module, tuple[torch.Tensor, ...], list[str], str]] = []
    for d in directions:
        src, dst = d[0], d[2]
        x = torch.rand(2, gen.cfg.input_nc_a if src == "a" else gen.cfg.input_nc_b, *check_hw, generator=g) * 2 - 1
        s = torch.randn(2, gen.style_dim, generator=g)  # [2, style_dim]
        jobs.append((d, StyledDirectionalGenerator(gen, d).eval(), (x, s), [*_io_names(d)[:1], f"s_{dst}"], d))
    for dst in style_target_domains(directions):
        x = torch.rand(2, gen.cfg.input_nc_a if dst == "a" else gen.cfg.input_nc_b, *check_hw, generator=g) * 2 - 1
        jobs.append((f"style_{dst}", (gen.enc_s_a if dst == "a" else gen.enc_s_b).eval(), (x,), [f"x_{dst}"], dst))
    style_files: dict[str, dict[str, Any]] = {}
    for name, module, inputs, names_in, key in jobs:
        name_out = _io_names(name)[1] if name in DIRECTIONS else f"s_{key}"
        with torch.inference_mode():
            expected = module(*inputs)
        if fmt == "onnx":
            path = out / f"{name}.onnx"
            _write_onnx(
                module,
                inputs[0],
                path,
                names_in[0],
                name_out,
                opset,
                extra=dict(zip(names_in[1:], inputs[1:], strict=True)),
            )
            got = onnx_runner(path, threads=1)(*inputs)
            entry = {"file": path.name, "input": names_in[0], "output": name_out}
            if len(names_in) > 1:
                entry["style_input"] = names_in[1]
        elif fmt == "torchscript":
            path = out / f"{name}.torchscript.pt"
            _write_torchscript(module, path, inputs)
            got = torchscript_runner(path, torch.device("cpu"))(*inputs)
            entry = {"file": path.name}
        else:
            got = (reloaded[key] if name in DIRECTIONS else reloaded_styles[key])(*inputs)
            entry = {"file": SAFETENSORS_FILE}
        diff = float((got - expected).abs().max())
        checks[name] = diff
        if not diff <= PARITY_TOL:
            raise UnitganError(
                f"exported {fmt} model for {name} differs from PyTorch by {diff:.2e} (> {PARITY_TOL:g}); please report this"
            )
        log.info("exported %s %s to %s (max abs difference to PyTorch %.1e)", name, fmt, out / entry["file"], diff)
        if name in DIRECTIONS:
            files[name] = entry
        else:
            style_files[key] = entry
    manifest = _manifest(cfg, fmt, directions, files, m, checks, check_hw, source, opset)
    manifest["style_dim"] = gen.style_dim
    manifest["style_rule"] = (
        "each direction takes a style code of the target domain, [N or 1, style_dim] float32: draw it from "
        "N(0, I) (or, where style_banks has the target domain, pick a row of it) for a random output, or "
        "encode an image of the target domain with style_encoders[domain] (padded like the input) for "
        "example-guided translation"
    )
    banks = {d: bank.tolist() for d, bank in gen.style_banks().items()}
    if banks:  # model.style_prior=bank: the remembered real styles, [M, style_dim] per domain
        manifest["style_banks"] = banks
    manifest["style_encoders"] = {
        dst: {**entry, "in_channels": manifest["channels"][dst]} for dst, entry in style_files.items()
    }
    path = out / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    return path


def _prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse an output that is a file, or a non-empty folder without ``overwrite`` or holding more than an
    export (whose other files the swap would remove). Nothing is changed here."""
    if out.exists() and not out.is_dir():
        raise UnitganError(f"export output '{out}' is a file, not a folder")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UnitganError(f"export output '{out}' is under '{parent}', which is a file")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UnitganError(f"export folder '{out}' is not empty (use --overwrite to replace an export there)")
        old = out / MANIFEST
        if not old.is_file():
            raise UnitganError(f"export folder '{out}' is not empty and holds no export; choose another folder")
        try:
            old_manifest = json.loads(old.read_text())
            old_entries = [*old_manifest["directions"].values(), *old_manifest.get("style_encoders", {}).values()]
            old_files = {Path(f["file"]).name for f in old_entries}
        except (ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError):
            old_files = set()
        extra = sorted(p.name for p in out.iterdir() if p.name not in {MANIFEST, CONFIG_FILE, *old_files})
        if extra:
            raise UnitganError(
                f"export folder '{out}' holds '{extra[0]}', which is not part of its export; "
                f"move it away or choose another folder (--overwrite replaces the whole folder)"
            )


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


def _write_onnx(
    module: nn.Module,
    x: torch.Tensor,
    path: Path,
    name_in: str,
    name_out: str,
    opset: int,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """The TorchScript-based exporter: no extra dependency, dynamic axes by name (deprecated, still shipped).

    ``extra``: further inputs after ``x`` by name (a style code [N or 1, D]: its batch axis is dynamic)."""
    try:
        import onnx
    except ImportError:
        raise UnitganError("ONNX export needs the onnx package: pip install 'unitgan[export]'") from None
    axes = {0: "batch", 2: "height", 3: "width"}
    extra = extra or {}
    dynamic = {name_in: axes, name_out: axes, **{k: {0: f"{k}_batch"} for k in extra}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces its own future
        warnings.simplefilter("ignore", UserWarning)  # constant-folding and instance-norm notes
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants
        torch.onnx.export(
            module,
            (x, *extra.values()),
            str(path),
            input_names=[name_in, *extra],
            output_names=[name_out],
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))


def _write_torchscript(module: nn.Module, path: Path, example: tuple[torch.Tensor, ...] | None = None) -> None:
    """Scripted, or traced on ``example`` inputs where given (MUNIT's decoder loops over a module list in a
    way the scripting compiler refuses; tracing records the sizes as operations, so shapes stay dynamic)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants
        scripted = torch.jit.script(module) if example is None else torch.jit.trace(module, example)
    buffer = io.BytesIO()  # saved to memory, then written by Python: torch's own file writer aborts the
    torch.jit.save(scripted, buffer)  # process when the disk is full (c10::Error thrown in a destructor)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def _write_safetensors(
    gen: UNITGenerator | MUNITGenerator, cfg: Config, directions: tuple[str, ...], out: Path
) -> None:
    try:
        from safetensors.torch import save
    except ImportError:
        raise UnitganError("safetensors export needs the safetensors package: pip install 'unitgan[export]'") from None
    prefixes = gen.weight_prefixes(directions)
    weights = {k: v.detach().contiguous() for k, v in gen.state_dict().items() if k.startswith(prefixes)}
    data = save(weights, metadata={"directions": ",".join(directions)})  # bytes: written with the umask's mode
    atomic_write(out / SAFETENSORS_FILE, lambda f: f.write(data))
    atomic_write_text(out / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")
