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

A MUNIT generator (``model.arch=munit``, manifest ``style_dim`` > 0) is multimodal: each direction takes the
style code of the target domain as a second input, and the target domain's style encoder is exported too, so
that an example image of that domain can give the style:

    a2b.onnx              inputs "x_a" [N, C_a, H, W], "s_b" [N or 1, style_dim] -> output "x_ab"
    style_b.onnx          input "x_b" [N, C_b, H, W] -> output "s_b" [N, style_dim] (manifest "style_encoders")

Draw styles from N(0, I) for random outputs. Batch, height and width are dynamic; the raw models need H and W padded as
:func:`unitgan.inference.pad_for_model` does (the manifest's ``size_rule``), and expect images at the
training scale (``training_scale``, ``scale_rule``). :func:`load_export` reads a folder back into an
:class:`unitgan.inference.ExportedTranslator`.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unitgan import __version__
from unitgan.budget import check_model_fits
from unitgan.checkpoint import state_dict_problem
from unitgan.config import Config, config_from_dict
from unitgan.errors import UnitganError
from unitgan.inference import (
    DIRECTIONS,
    DirectionalGenerator,
    ExportedTranslator,
    Runner,
    StyledRunner,
    check_direction,
    load_generator,
    training_scale,
)
from unitgan.models import MUNITGenerator, UNITGenerator, build_generator, style_bank_problem
from unitgan.runtime import atomic_write, atomic_write_text, check_folder_path, resolve_device

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript", "safetensors")
MANIFEST = "export.json"
MANIFEST_VERSION = 1
ONNX_OPSET = 17
PARITY_TOL = 1e-4  # max abs difference allowed between an exported model and PyTorch (fp32)
SAFETENSORS_FILE = "generator.safetensors"
CONFIG_FILE = "config.json"
MAX_MANIFEST_BYTES = 64 * 2**20  # a manifest is a few KB; a bank of 65536 x 1024 codes would not fit in it


def resolve_directions(direction: str) -> tuple[str, ...]:
    """``'a2b'``, ``'b2a'`` or ``'both'`` -> the directions to export."""
    if direction == "both":
        return DIRECTIONS
    return (check_direction(direction),)


class StyledDirectionalGenerator(nn.Module):
    """One direction of a MUNIT generator as a plain module: ``(x_src, s_dst) -> x_dst``.

    Args:
        gen: the trained generator; its submodules are shared, not copied.
        direction: ``'a2b'`` or ``'b2a'``.
    """

    def __init__(self, gen: MUNITGenerator, direction: str):
        super().__init__()
        check_direction(direction)
        self.enc_c = gen.enc_c_a if direction == "a2b" else gen.enc_c_b
        self.enc_c_shared = gen.enc_c_shared
        self.dec = gen.dec_b if direction == "a2b" else gen.dec_a

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x [N, C_src, H, W], style [N or 1, style_dim] -> [N, C_dst, H, W] in [-1, 1]."""
        return self.dec(self.enc_c_shared(self.enc_c(x)), style.expand(x.shape[0], -1))


def style_target_domains(directions: tuple[str, ...]) -> tuple[str, ...]:
    """The domains whose style encoders an export of ``directions`` holds: the targets."""
    return tuple(sorted({d[2] for d in directions}))


def _io_names(direction: str) -> tuple[str, str]:
    """ONNX input/output names in the paper's notation: a2b -> ('x_a', 'x_ab')."""
    src, dst = direction[0], direction[2]
    return f"x_{src}", f"x_{src}{dst}"


# ---------------------------------------------------------------------------------------------------------
# Writing an export


def generator_from_checkpoint(path: str | Path) -> tuple[UNITGenerator | MUNITGenerator, Config, int | None]:
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
        reloaded, reloaded_styles = _safetensors_munit_runners(out, cfg, directions, torch.device("cpu"))
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
            got = _onnx_runner(path, threads=1)(*inputs)
            entry = {"file": path.name, "input": names_in[0], "output": name_out}
            if len(names_in) > 1:
                entry["style_input"] = names_in[1]
        elif fmt == "torchscript":
            path = out / f"{name}.torchscript.pt"
            _write_torchscript(module, path, inputs)
            got = _torchscript_runner(path, torch.device("cpu"))(*inputs)
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


# ---------------------------------------------------------------------------------------------------------
# Reading an export back


def _onnx_runner(path: Path, threads: int = 0) -> Runner | StyledRunner:
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise UnitganError(f"ONNX model '{path}' cannot be loaded: {_first_line(e)}") from None
    names_in = [i.name for i in session.get_inputs()]  # x, then the style code for a MUNIT direction

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        feed = {
            n: t.detach().to("cpu", torch.float32).contiguous().numpy() for n, t in zip(names_in, inputs, strict=True)
        }
        try:
            return torch.from_numpy(session.run(None, feed)[0])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types; callers name the image
            shape = list(feed[names_in[0]].shape)
            raise UnitganError(f"ONNX model '{path.name}' failed on input {shape}: {_first_line(e)}") from None

    return run


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module. Missing: one line saying how to install it; installed but failing to load
    (a broken binary): one line with the reason; an import cut short by Ctrl-C (onnxruntime turns it into an
    ImportError): KeyboardInterrupt again, not a claim that it is missing."""
    try:
        import onnxruntime
    except ImportError as e:
        if isinstance(e.__context__, KeyboardInterrupt) or isinstance(e.__cause__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        if isinstance(e, ModuleNotFoundError) and e.name == "onnxruntime":
            raise UnitganError("the onnx engine needs onnxruntime: pip install 'unitgan[export]'") from None
        raise UnitganError(f"onnxruntime is installed but cannot be imported: {_first_line(e)}") from None
    return onnxruntime


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _torchscript_runner(path: Path, device: torch.device) -> Runner | StyledRunner:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            module = torch.jit.load(str(path), map_location=device).eval()
    except Exception as e:  # noqa: BLE001 - any load failure means the same thing to the user
        raise UnitganError(f"TorchScript model '{path}' cannot be loaded: {_first_line(e)}") from None

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(*(t.to(device) for t in inputs))

    return run


def _safetensors_munit_runners(
    out: Path, cfg: Config, directions: tuple[str, ...], device: torch.device
) -> tuple[dict[str, StyledRunner], dict[str, Runner]]:
    """(direction -> styled runner, target domain -> style encoder) of a MUNIT safetensors export."""
    gen = _load_safetensors_generator(out, cfg, directions, device)
    runners: dict[str, StyledRunner] = {}
    for d in directions:
        module = StyledDirectionalGenerator(gen, d)

        def run(x: torch.Tensor, style: torch.Tensor, module: nn.Module = module) -> torch.Tensor:
            with torch.inference_mode():
                return module(x.to(device), style.to(device))

        runners[d] = run
    encoders: dict[str, Runner] = {}
    for dst in style_target_domains(directions):

        def encode(x: torch.Tensor, dst: str = dst) -> torch.Tensor:
            with torch.inference_mode():
                return gen.encode_style(x.to(device), dst)

        encoders[dst] = encode
    return runners, encoders


def _load_safetensors_generator(
    out: Path, cfg: Config, directions: tuple[str, ...], device: torch.device
) -> UNITGenerator | MUNITGenerator:
    """The generator of a safetensors export with the weights of ``directions`` loaded, in eval mode."""
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
    prefixes = gen.weight_prefixes(directions)
    problem = state_dict_problem(gen, weights, prefixes)  # the checkpoint rules: keys, shapes, finite values
    if problem and "NaN" in problem:
        raise UnitganError(f"weights '{path}' are refused: {problem} (they would translate to blank images)")
    if problem:
        raise UnitganError(f"weights '{path}' do not match the config in the export: {problem}")
    gen.load_state_dict(weights, strict=False)
    return gen.to(device).eval()


def _safetensors_runners(
    out: Path, cfg: Config, directions: tuple[str, ...], device: torch.device
) -> dict[str, Runner]:
    gen = _load_safetensors_generator(out, cfg, directions, device)
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
    """The parsed and validated ``export.json`` of an export folder (:func:`validate_manifest`); raises
    UnitganError naming the folder, or the file and the field."""
    folder = Path(path).expanduser()
    file = folder / MANIFEST
    if not file.is_file():
        raise UnitganError(f"'{folder}' is not a unitgan export folder (no {MANIFEST})")
    try:
        size = file.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise UnitganError(f"'{file}' is {size} bytes, more than the {MAX_MANIFEST_BYTES} bytes a manifest may be")
        manifest = json.loads(file.read_text())
    except (OSError, ValueError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e).splitlines()[0]
        raise UnitganError(f"'{file}' cannot be read: {reason}") from None
    validate_manifest(manifest, file)
    for d, entry in manifest["directions"].items():
        f = folder / Path(entry["file"]).name
        if not f.is_file():
            raise UnitganError(f"export '{folder}' is missing {f.name} (direction {d})")
    for domain, entry in manifest.get("style_encoders", {}).items():
        f = folder / Path(str(entry.get("file", ""))).name
        if not f.is_file():
            raise UnitganError(f"export '{folder}' is missing {f.name} (style encoder of domain {domain})")
    return manifest


def validate_manifest(manifest: Any, file: Path) -> None:
    """Check every field of a manifest like a config: type, range, and agreement with its training config;
    the first problem raises UnitganError naming the file and the field."""

    def bad(field: str, message: str) -> UnitganError:
        return UnitganError(f"'{file}': field '{field}' {message}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(manifest, dict) or manifest.get("unitgan_export") != MANIFEST_VERSION:
        raise UnitganError(f"'{file}' is not a unitgan export manifest (version {MANIFEST_VERSION})")
    if manifest.get("format") not in FORMATS:
        raise bad("format", f"must be one of {', '.join(FORMATS)}, got {str(manifest.get('format'))[:40]!r}")
    if not isinstance(manifest.get("config"), dict):
        raise bad("config", "must be the training config (a mapping)")
    try:
        cfg = config_from_dict(manifest["config"])
    except UnitganError as e:
        raise bad("config", f"is not a valid config: {e}") from None
    m = manifest.get("size_multiple")
    if not is_int(m) or m < 1 or m & (m - 1):
        raise bad("size_multiple", f"must be a positive power of two, got {str(m)[:40]!r}")
    if m != 2**cfg.model.n_down:
        raise bad("size_multiple", f"is {m}, but the config's model has 2**model.n_down = {2**cfg.model.n_down}")
    scale = manifest.get("training_scale", 0)
    if not is_int(scale) or scale < 0:
        raise bad("training_scale", f"must be an integer >= 0, got {str(scale)[:40]!r}")
    if "training_scale" in manifest and scale != training_scale(cfg):
        raise bad("training_scale", f"is {scale}, but the config's data.load_size gives {training_scale(cfg)}")
    _validate_munit_fields(manifest, cfg, bad)
    channels = {"a": cfg.model.input_nc_a, "b": cfg.model.input_nc_b}
    if "channels" in manifest and manifest["channels"] != channels:
        raise bad("channels", f"must be {channels} (the config's), got {str(manifest['channels'])[:60]}")
    directions = manifest.get("directions")
    if not isinstance(directions, dict) or not directions:
        raise bad("directions", "must map a2b and/or b2a to their files")
    for d, entry in directions.items():
        if d not in DIRECTIONS:
            raise bad("directions", f"lists an unknown direction {str(d)[:20]!r} (a2b, b2a)")
        if not isinstance(entry, dict):
            raise bad(f"directions.{d}", f"must be a mapping with a 'file', got {type(entry).__name__}")
        if not isinstance(entry.get("file"), str) or not entry["file"]:
            raise bad(f"directions.{d}.file", "must be a file name")
        for key, want in (("in_channels", channels[d[0]]), ("out_channels", channels[d[2]])):
            if key in entry and entry[key] != want:
                raise bad(f"directions.{d}.{key}", f"must be {want} (the config's), got {str(entry[key])[:20]!r}")
        for key in ("input", "output"):
            if key in entry and not isinstance(entry[key], str):
                raise bad(f"directions.{d}.{key}", "must be a tensor name (a string)")


def _validate_munit_fields(manifest: dict[str, Any], cfg: Config, bad: Callable[[str, str], UnitganError]) -> None:
    """:func:`validate_manifest` for ``style_dim``, ``style_banks`` and ``style_encoders``: the config's style
    length (0 for UNIT), and banks that could be remembered styles (:func:`style_bank_problem`)."""
    m = cfg.model
    want = m.style_dim if m.arch == "munit" else 0
    style_dim = manifest.get("style_dim", 0)
    if not isinstance(style_dim, int) or isinstance(style_dim, bool) or style_dim != want:
        raise bad(
            "style_dim",
            f"must be {want} (the config's model.style_dim for model.arch={m.arch}), got {str(style_dim)[:40]!r}",
        )
    banks = manifest.get("style_banks")
    if banks is not None:
        if m.arch != "munit" or m.style_prior != "bank":
            raise bad("style_banks", "is present, but the config's model.style_prior is not bank")
        if not isinstance(banks, dict) or not banks or not set(banks) <= {"a", "b"}:
            raise bad("style_banks", "must map domains a and/or b to lists of style codes")
        for d, rows in banks.items():
            ok = isinstance(rows, list) and len(rows) <= m.style_bank
            ok = ok and all(
                isinstance(r, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)
                for r in rows
            )
            if not ok:
                raise bad(f"style_banks.{d}", f"must be a list of at most {m.style_bank} rows of {want} numbers")
            widths = sorted({len(r) for r in rows} - {want})
            if widths:
                raise bad(f"style_banks.{d}", f"must be rows of {want} numbers (style_dim), got a row of {widths[0]}")
            bank = torch.tensor(rows, dtype=torch.float32).view(len(rows), want)  # [M, style_dim]
            problem = style_bank_problem(bank, want, m.style_bank)
            if problem:
                raise bad(f"style_banks.{d}", problem)
    encoders = manifest.get("style_encoders", {})
    if not isinstance(encoders, dict) or not set(encoders) <= {"a", "b"}:
        raise bad("style_encoders", "must map domains a and/or b to their files")
    for d, entry in encoders.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not entry["file"]:
            raise bad(f"style_encoders.{d}", "must be a mapping with a 'file' name")


def load_export(path: str | Path, device: str = "cpu", threads: int = 0) -> ExportedTranslator:
    """Load an export folder: ONNX through onnxruntime (CPU), TorchScript and safetensors through torch.

    Args:
        path: the folder holding ``export.json``.
        device: torch device for TorchScript and safetensors exports ('auto', 'cpu', 'cuda', ...).
        threads: onnxruntime intra-op threads (0 = its default).
    """
    folder = Path(path).expanduser()
    manifest = read_manifest(folder)
    cfg = config_from_dict(manifest["config"])  # validated by read_manifest
    check_model_fits(cfg, f"export '{folder}'")  # before anything is built
    fmt = manifest["format"]
    directions = tuple(d for d in DIRECTIONS if d in manifest["directions"])
    files = {d: folder / Path(manifest["directions"][d]["file"]).name for d in directions}
    dev = torch.device("cpu") if fmt == "onnx" else resolve_device(device)
    if int(manifest.get("style_dim", 0)) > 0:
        return _load_munit_export(folder, manifest, cfg, directions, files, dev, threads)
    if fmt == "onnx":
        runners = {d: _onnx_runner(files[d], threads) for d in directions}
    elif fmt == "torchscript":
        runners = {d: _torchscript_runner(files[d], dev) for d in directions}
    else:
        runners = _safetensors_runners(folder, cfg, directions, dev)
    log.info("loaded %s export %s (%s)", fmt, folder, ", ".join(directions))
    return ExportedTranslator(runners, manifest, "onnx" if fmt == "onnx" else "torch", dev)


def _load_munit_export(
    folder: Path,
    manifest: dict[str, Any],
    cfg: Config,
    directions: tuple[str, ...],
    files: dict[str, Path],
    dev: torch.device,
    threads: int,
) -> ExportedTranslator:
    """:func:`load_export` for a multimodal (MUNIT) export: styled runners and the style encoders."""
    fmt = manifest["format"]
    styles = {k: folder / Path(v["file"]).name for k, v in manifest.get("style_encoders", {}).items()}
    if fmt == "onnx":
        runners = {d: _onnx_runner(files[d], threads) for d in directions}
        encoders = {k: _onnx_runner(f, threads) for k, f in styles.items()}
    elif fmt == "torchscript":
        runners = {d: _torchscript_runner(files[d], dev) for d in directions}
        encoders = {k: _torchscript_runner(f, dev) for k, f in styles.items()}
    else:
        runners, encoders = _safetensors_munit_runners(folder, cfg, directions, dev)
    log.info("loaded multimodal %s export %s (%s)", fmt, folder, ", ".join(directions))
    return ExportedTranslator(runners, manifest, "onnx" if fmt == "onnx" else "torch", dev, encoders)
