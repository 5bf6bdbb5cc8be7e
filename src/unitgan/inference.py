"""The translator interface: one base class for PyTorch checkpoints and exported engines.

:class:`BaseTranslator` holds what every engine shares: the input checks, the one padding rule
(:func:`pad_for_model`), the training-scale rule (:func:`training_scale`) and file translation.
:class:`Translator` runs a checkpoint's generator in PyTorch; :class:`ExportedTranslator` runs the per-direction
modules read back from an export folder (:func:`unitgan.export.load_export`). Both translate any H x W:

- Size: the input is padded on the bottom/right to a multiple of the model's size multiple ``m`` and to at
  least ``2m`` per side (so the latent is 2x2 or more; instance norm needs more than one value), by reflection,
  or by replication where the pad is not smaller than the side, then the output is cropped back. No image is
  too small.
- Scale (files and the server): by default the shorter side is resized to the ``data.load_size`` the model
  was trained with (aspect kept; 0 = trained at native size, kept). ``size`` resizes to SIZE x SIZE instead,
  ``native`` keeps the native resolution.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import nn

from unitgan.config import Config, config_from_dict
from unitgan.data.io import IMAGE_EXTENSIONS, list_images, load_image, pil_to_tensor, tensor_to_pil
from unitgan.data.transforms import resize_shorter
from unitgan.errors import UnitganError
from unitgan.models import UNITGenerator, build_generator
from unitgan.runtime import autocast, check_precision, resolve_device
from unitgan.train.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

DIRECTIONS = ("a2b", "b2a")


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise UnitganError(f"direction '{direction}' is not one of {', '.join(DIRECTIONS)}")
    return direction


def load_generator(path: str | Path) -> tuple[UNITGenerator, Config, dict]:
    """(generator on the CPU, its config, the whole checkpoint) from a checkpoint file, loaded safely."""
    state = load_checkpoint(path)
    try:
        cfg = config_from_dict(state["config"])
    except UnitganError as e:
        raise UnitganError(f"checkpoint '{path}' holds an invalid config: {e}") from None
    gen = build_generator(cfg.model)
    try:
        gen.load_state_dict(state["gen"])
    except (RuntimeError, KeyError, TypeError, AttributeError, ValueError) as e:
        first = str(e).strip().splitlines()[0]
        raise UnitganError(f"checkpoint '{path}' does not match its config: {first}") from None
    return gen, cfg, state


class DirectionalGenerator(nn.Module):
    """One direction of a UNIT generator as a plain module: ``x_src -> x_dst`` with z = mu.

    Args:
        gen: the trained generator; its submodules are shared, not copied.
        direction: ``'a2b'`` or ``'b2a'``.
    """

    def __init__(self, gen: UNITGenerator, direction: str):
        super().__init__()
        check_direction(direction)
        self.enc = gen.enc_a if direction == "a2b" else gen.enc_b
        self.enc_shared = gen.enc_shared
        self.dec_shared = gen.dec_shared
        self.dec = gen.dec_b if direction == "a2b" else gen.dec_a

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C_src, H, W] -> [N, C_dst, H, W] in [-1, 1]
        return self.dec(self.dec_shared(self.enc_shared(self.enc(x))))


def pad_for_model(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """The one padding rule: [N, C, H, W] padded bottom/right to multiples of ``multiple``, each side at least
    ``2 * multiple`` (reflect where the pad is smaller than the side, replicate otherwise)."""
    h, w = x.shape[-2:]
    ph, pw = max((-h) % multiple, 2 * multiple - h), max((-w) % multiple, 2 * multiple - w)
    if not (ph or pw):
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def training_scale(cfg: Config) -> int:
    """The shorter side the model's training images were resized to (0: not resized, native size)."""
    return cfg.data.load_size if cfg.data.source == "folder" else 0


class BaseTranslator:
    """What every engine shares. ``translate(x, 'a2b')`` takes [N, C, H, W] in [-1, 1], any H and W.

    Args:
        cfg: the training config (channels per domain).
        size_multiple: the spatial multiple the raw model needs.
        directions: the directions this translator offers.
        device: where inputs go before the model runs.
        scale: the training scale (see :func:`training_scale`).
        engine: ``'torch'`` or ``'onnx'``.
    """

    def __init__(
        self,
        cfg: Config,
        size_multiple: int,
        directions: tuple[str, ...],
        device: torch.device,
        scale: int,
        engine: str,
    ):
        self.cfg = cfg
        self.size_multiple = size_multiple
        self.directions = directions
        self.device = device
        self.scale = scale
        self.engine = engine

    def channels(self, domain: str) -> int:
        return self.cfg.model.input_nc_a if domain == "a" else self.cfg.model.input_nc_b

    def run(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        """The raw model: [N, C_src, H, W] with H, W padded by :func:`pad_for_model` -> [N, C_dst, H, W]."""
        raise NotImplementedError

    @torch.inference_mode()
    def translate(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        """[N, C_src, H, W] -> [N, C_dst, H, W] float32; any H, W (padded by :func:`pad_for_model`, cropped back)."""
        check_direction(direction)
        if direction not in self.directions:
            raise UnitganError(f"direction '{direction}' is not in this export (it has {', '.join(self.directions)})")
        src = direction[0]
        if x.ndim != 4 or x.shape[1] != self.channels(src):
            raise UnitganError(f"input must be [N, {self.channels(src)}, H, W] for {direction}, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        y = self.run(pad_for_model(x.to(self.device, torch.float32), self.size_multiple), direction)
        return y[..., :h, :w].float()

    def prepare(self, img: Image.Image, size: int = 0, native: bool = False) -> torch.Tensor:
        """A decoded image -> [C, H, W] in [-1, 1] at the scale it is translated at: SIZE x SIZE if ``size``
        (bicubic), native if ``native``, else the shorter side at the training scale, as training resized it."""
        if size and native:
            raise UnitganError("give a size or native resolution, not both")
        if size:
            return pil_to_tensor(img.resize((size, size), resample=Image.Resampling.BICUBIC))
        x = pil_to_tensor(img)
        return x if native else resize_shorter(x, self.scale)

    def translate_files(
        self,
        inputs: Iterable[str | Path],
        output: str | Path,
        direction: str,
        batch_size: int = 8,
        size: int = 0,
        overwrite: bool = True,
        native: bool = False,
        keep_size: bool = False,
    ) -> list[Path]:
        """Translate image files (or folders, or globs) into ``output``, keeping file names (as PNG).

        Each image is translated at the scale of :meth:`prepare`; the output has that size, or the input's
        size with ``keep_size``.
        """
        check_direction(direction)
        if size < 0:
            raise UnitganError(f"size must be >= 0, got {size}")
        if size and native:
            raise UnitganError("give a size or native resolution, not both")
        inputs = list(inputs)
        pairs = expand_inputs(inputs)
        out_dir = Path(output)
        for item in inputs:
            folder = Path(item).expanduser().resolve()
            if folder.is_dir() and (folder == out_dir.resolve() or folder in out_dir.resolve().parents):
                raise UnitganError(f"output folder '{out_dir}' is inside input folder '{item}'; choose another")
        targets = output_names(pairs, out_dir)
        files = [f for f, _ in pairs]
        resolved_out = out_dir.resolve()
        for f in files:
            if resolved_out in f.resolve().parents or f.resolve() in targets.values():
                raise UnitganError(f"output folder '{out_dir}' holds input '{f}'; choose a folder outside the inputs")
        out_dir.mkdir(parents=True, exist_ok=True)
        if not overwrite:
            existing = [t for t in targets.values() if t.exists()]
            if existing:
                raise UnitganError(f"output file '{existing[0]}' exists (use --overwrite to replace)")
        src = direction[0]
        groups: dict[tuple[int, ...], list[tuple[Path, torch.Tensor, tuple[int, int]]]] = defaultdict(list)
        written = []
        for path in files:
            img = load_image(path, self.channels(src))
            x = self.prepare(img, size, native)  # [C, H', W']
            key = tuple(x.shape[1:])
            groups[key].append((path, x, (img.height, img.width)))
            if len(groups[key]) == batch_size:
                written += self.write_batch(groups.pop(key), targets, direction, keep_size)
        for batch in groups.values():
            written += self.write_batch(batch, targets, direction, keep_size)
        return written

    def write_batch(
        self,
        batch: list[tuple[Path, torch.Tensor, tuple[int, int]]],
        targets: dict[Path, Path],
        direction: str,
        keep_size: bool,
    ) -> list[Path]:
        """Translate one batch of same-size images (path, [C, H, W], input (H, W)) and save each as PNG."""
        y = self.translate(torch.stack([x for _, x, _ in batch]), direction)  # [N, C_dst, H', W']
        out = []
        for (path, _, input_hw), img in zip(batch, y, strict=True):
            if keep_size and tuple(img.shape[-2:]) != input_hw:
                img = TF.resize(img, list(input_hw), antialias=True)
            target = targets[path]
            target.parent.mkdir(parents=True, exist_ok=True)
            tensor_to_pil(img).save(target)
            out.append(target)
        return out


class Translator(BaseTranslator):
    """A UNIT generator (PyTorch) ready to translate, in fp32, bf16 or fp16."""

    def __init__(self, gen: UNITGenerator, cfg: Config, device: torch.device, precision: str = "fp32"):
        check_precision(device, precision)
        super().__init__(cfg, gen.size_multiple, DIRECTIONS, device, training_scale(cfg), "torch")
        self.gen = gen.to(device).eval()
        self.precision = precision

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", precision: str = "fp32") -> Translator:
        gen, cfg, _ = load_generator(path)
        return cls(gen, cfg, resolve_device(device), precision)

    def run(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.gen.translate(x, direction)


Runner = Callable[[torch.Tensor], torch.Tensor]  # [N, C_src, H, W] (H, W padded) -> [N, C_dst, H, W]


class ExportedTranslator(BaseTranslator):
    """An export folder ready to translate (fp32): one runner per exported direction.

    Args:
        runners: direction -> callable, [N, C_src, H, W] -> [N, C_dst, H, W] for H, W padded by
            :func:`pad_for_model`.
        manifest: the parsed ``export.json``.
        engine: ``'onnx'`` (onnxruntime, CPU) or ``'torch'``.
        device: where the runners take their inputs.
    """

    def __init__(self, runners: dict[str, Runner], manifest: dict, engine: str, device: torch.device):
        cfg = config_from_dict(manifest["config"])
        directions = tuple(d for d in DIRECTIONS if d in runners)
        scale = int(manifest.get("training_scale", training_scale(cfg)))  # exports from before 0.x lack it
        super().__init__(cfg, int(manifest["size_multiple"]), directions, device, scale, engine)
        self.runners = runners
        self.manifest = manifest

    def run(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        return self.runners[direction](x).cpu()


def expand_inputs(inputs: Iterable[str | Path]) -> list[tuple[Path, Path]]:
    """Files, folders (recursive) and glob patterns -> sorted (file, name relative to its input)."""
    files: list[tuple[Path, Path]] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            files += [(f, f.relative_to(p)) for f in list_images(p)]
        elif p.is_file():
            files.append((p, Path(p.name)))
        elif any(ch in str(item) for ch in "*?["):
            anchor = Path(p.anchor) if p.is_absolute() else Path()
            pattern = str(p.relative_to(p.anchor)) if p.is_absolute() else str(item)
            matches = [m for m in sorted(anchor.glob(pattern)) if m.is_file() and m.suffix.lower() in IMAGE_EXTENSIONS]
            if not matches:
                raise UnitganError(f"input pattern '{item}' matches no image files")
            files += [(m, Path(m.name)) for m in matches]
        else:
            raise UnitganError(f"input '{item}' does not exist")
    if not files:
        raise UnitganError("no input images found")
    return files


def output_names(files: list[tuple[Path, Path]], out_dir: Path) -> dict[Path, Path]:
    """Keep each file's name (and its sub-folder below an input folder); the extension becomes .png."""
    names = {f: out_dir / rel.with_suffix(".png") for f, rel in files}
    if len(set(names.values())) != len(names):
        raise UnitganError("two inputs would write the same output file name; translate them separately")
    return names
