"""Translation with a trained model: any image size, batched, under inference mode."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

from unitgan.config import Config, config_from_dict
from unitgan.data.io import IMAGE_EXTENSIONS, list_images, load_image, pil_to_tensor, tensor_to_pil
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


class Translator:
    """A UNIT generator ready to translate. ``translate(x, 'a2b')`` takes [N, C, H, W] in [-1, 1]."""

    def __init__(self, gen: UNITGenerator, cfg: Config, device: torch.device, precision: str = "fp32"):
        self.gen = gen.to(device).eval()
        self.cfg = cfg
        self.device = device
        self.precision = precision
        check_precision(device, precision)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", precision: str = "fp32") -> Translator:
        gen, cfg, _ = load_generator(path)
        return cls(gen, cfg, resolve_device(device), precision)

    def channels(self, domain: str) -> int:
        return self.cfg.model.input_nc_a if domain == "a" else self.cfg.model.input_nc_b

    @torch.inference_mode()
    def translate(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        """[N, C_src, H, W] -> [N, C_dst, H, W]; any H, W (reflect-padded to the size multiple, cropped back)."""
        check_direction(direction)
        src = direction[0]
        if x.ndim != 4 or x.shape[1] != self.channels(src):
            raise UnitganError(f"input must be [N, {self.channels(src)}, H, W] for {direction}, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        m = self.gen.size_multiple
        # pad to a multiple of m, and to at least 2m so the latent is 2x2 or more (instance norm needs > 1 value)
        ph, pw = max((-h) % m, 2 * m - h), max((-w) % m, 2 * m - w)
        x = x.to(self.device)
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        with autocast(self.device, self.precision):
            y = self.gen.translate(x, direction)
        return y[..., :h, :w].float()

    def translate_files(
        self,
        inputs: Iterable[str | Path],
        output: str | Path,
        direction: str,
        batch_size: int = 8,
        size: int = 0,
        overwrite: bool = True,
    ) -> list[Path]:
        """Translate image files (or folders, or globs) into ``output``, keeping file names (as PNG)."""
        check_direction(direction)
        inputs = list(inputs)
        pairs = expand_inputs(inputs)
        out_dir = Path(output)
        for item in inputs:
            folder = Path(item).expanduser().resolve()
            if folder.is_dir() and (folder == out_dir.resolve() or folder in out_dir.resolve().parents):
                raise UnitganError(f"output folder '{out_dir}' is inside input folder '{item}'; choose another")
        targets = _output_names(pairs, out_dir)
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
        groups: dict[tuple[int, int], list[tuple[Path, torch.Tensor]]] = defaultdict(list)
        written = []
        for path in files:
            img = load_image(path, self.channels(src))
            if size:
                img = img.resize((size, size), resample=3)
            x = pil_to_tensor(img)
            key = tuple(x.shape[1:])
            groups[key].append((path, x))
            if len(groups[key]) == batch_size:
                written += self._flush(groups.pop(key), targets, direction)
        for batch in groups.values():
            written += self._flush(batch, targets, direction)
        return written

    def _flush(self, batch, targets, direction) -> list[Path]:
        y = self.translate(torch.stack([x for _, x in batch]), direction)
        out = []
        for (path, _), img in zip(batch, y, strict=True):
            target = targets[path]
            target.parent.mkdir(parents=True, exist_ok=True)
            tensor_to_pil(img).save(target)
            out.append(target)
        return out


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


def _output_names(files: list[tuple[Path, Path]], out_dir: Path) -> dict[Path, Path]:
    """Keep each file's name (and its sub-folder below an input folder); the extension becomes .png."""
    names = {f: out_dir / rel.with_suffix(".png") for f, rel in files}
    if len(set(names.values())) != len(names):
        raise UnitganError("two inputs would write the same output file name; translate them separately")
    return names
