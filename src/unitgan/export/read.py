"""Reading an export folder back: the manifest (``export.json``) read and checked like a config, and the
per-direction runners of each format (onnxruntime for ONNX, torch for TorchScript and safetensors), assembled
into an :class:`unitgan.inference.ExportedTranslator` by :func:`load_export`. The names both sides of the format
share (file names, formats, the runners the writer checks its files with) are defined here.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unitgan.budget import check_model_fits
from unitgan.checkpoint import state_dict_problem
from unitgan.config import Config, config_from_dict
from unitgan.errors import UnitganError
from unitgan.inference import (
    DIRECTIONS,
    DirectionalGenerator,
    ExportedTranslator,
    Runner,
    StyledDirectionalGenerator,
    StyledRunner,
    training_scale,
)
from unitgan.models import MUNITGenerator, UNITGenerator, build_generator, style_bank_problem
from unitgan.runtime import resolve_device

log = logging.getLogger(__name__)


FORMATS = ("onnx", "torchscript", "safetensors")
MANIFEST = "export.json"
MANIFEST_VERSION = 1
SAFETENSORS_FILE = "generator.safetensors"
MAX_MANIFEST_BYTES = 64 * 2**20  # a manifest is a few KB; a bank of 65536 x 1024 codes would not fit in it


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
        runners = {d: onnx_runner(files[d], threads) for d in directions}
    elif fmt == "torchscript":
        runners = {d: torchscript_runner(files[d], dev) for d in directions}
    else:
        runners = safetensors_runners(folder, cfg, directions, dev)
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
        runners = {d: onnx_runner(files[d], threads) for d in directions}
        encoders = {k: onnx_runner(f, threads) for k, f in styles.items()}
    elif fmt == "torchscript":
        runners = {d: torchscript_runner(files[d], dev) for d in directions}
        encoders = {k: torchscript_runner(f, dev) for k, f in styles.items()}
    else:
        runners, encoders = safetensors_munit_runners(folder, cfg, directions, dev)
    log.info("loaded multimodal %s export %s (%s)", fmt, folder, ", ".join(directions))
    return ExportedTranslator(runners, manifest, "onnx" if fmt == "onnx" else "torch", dev, encoders)


def style_target_domains(directions: tuple[str, ...]) -> tuple[str, ...]:
    """The domains whose style encoders an export of ``directions`` holds: the targets."""
    return tuple(sorted({d[2] for d in directions}))


def onnx_runner(path: Path, threads: int = 0) -> Runner | StyledRunner:
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


def torchscript_runner(path: Path, device: torch.device) -> Runner | StyledRunner:
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


def safetensors_runners(out: Path, cfg: Config, directions: tuple[str, ...], device: torch.device) -> dict[str, Runner]:
    gen = _load_safetensors_generator(out, cfg, directions, device)
    runners: dict[str, Runner] = {}
    for d in directions:
        module = DirectionalGenerator(gen, d)

        def run(x: torch.Tensor, module: nn.Module = module) -> torch.Tensor:
            with torch.inference_mode():
                return module(x.to(device))

        runners[d] = run
    return runners


def safetensors_munit_runners(
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
