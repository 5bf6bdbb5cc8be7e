"""The translator interface: one base class for PyTorch checkpoints and exported engines.

:class:`BaseTranslator` holds what every engine shares: the input checks, the one padding rule
(:func:`pad_for_model`), the training-scale rule (:func:`training_scale`) and file translation.
:class:`Translator` runs a checkpoint's generator in PyTorch; :class:`ExportedTranslator` runs the per-direction
modules read back from an export folder (:func:`unitgan.export.read.load_export`). Open either for a path with
:func:`unitgan.translator.open_translator`. Both translate any H x W:

- Size: the input is padded on the bottom/right to a multiple of the model's size multiple ``m`` and to at
  least ``2m`` per side (so the latent is 2x2 or more; instance norm needs more than one value), by reflection,
  or by replication where the pad is not smaller than the side, then the output is cropped back. No image is
  too small.
- Scale (files and the server): by default the shorter side is resized to the ``data.load_size`` the model
  was trained with (aspect kept; 0 = trained at native size, kept). ``size`` resizes to SIZE x SIZE instead,
  ``native`` keeps the native resolution.
- Style (MUNIT models, ``style_dim`` > 0; UNIT is unimodal and takes none): ``translate(x, d, style)`` decodes
  with a style code of the target domain, [N or 1, style_dim]. :meth:`BaseTranslator.draw_styles` draws codes
  from N(0, I) on the CPU with a seed (so one seed gives the same styles on every engine and device), and
  :meth:`BaseTranslator.style_of` encodes the style of reference images of a domain (example-guided).
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

from unitgan.budget import check_model_fits, pixel_limit, translate_bytes_per_pixel
from unitgan.checkpoint import load_checkpoint, load_weights, resolve_checkpoint
from unitgan.config import Config, config_from_dict
from unitgan.data.filelist import list_images
from unitgan.data.io import (
    IMAGE_EXTENSIONS,
    check_pixels,
    image_size,
    load_image,
    pil_to_tensor,
    tensor_to_pil,
)
from unitgan.data.transforms import resize_shorter
from unitgan.errors import UnitganError
from unitgan.models import Generator, MUNITGenerator, UNITGenerator, build_generator, spread_rows
from unitgan.runtime import (
    atomic_write,
    autocast,
    check_folder_path,
    check_precision,
    folder_lock,
    make_folder,
    release_free_memory,
    remove_if_empty,
    resolve_device,
)

log = logging.getLogger(__name__)

DIRECTIONS = ("a2b", "b2a")
MAX_STYLES = 1000  # outputs per input of a multimodal model (a bank model: at most its distinct styles)
UNIMODAL_MESSAGE = (
    "this is a UNIT model, and UNIT is unimodal (one output per input): styles and style images need a MUNIT model"
)


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise UnitganError(f"direction '{direction}' is not one of {', '.join(DIRECTIONS)}")
    return direction


def load_generator(path: str | Path) -> tuple[Generator, Config, dict]:
    """(generator on the CPU, its config, the whole checkpoint) from a checkpoint file (or a run folder: its newest
    checkpoint that loads), loaded safely. The weights are the run's average ``gen_ema`` when it kept one
    (``train.ema``), else the trained ``gen``."""
    path = resolve_checkpoint(path)
    state = load_checkpoint(path)
    try:
        cfg = config_from_dict(state["config"])
    except UnitganError as e:
        raise UnitganError(f"checkpoint '{path}' holds an invalid config: {e}") from None
    check_model_fits(cfg, f"checkpoint '{path}'")  # before anything is built
    gen = build_generator(cfg.model)
    load_weights(gen, state, "gen", path, "it would translate to blank images")  # train.ema: the average translates
    if problem := gen.bank_problem():
        raise UnitganError(f"checkpoint '{path}' is refused: {problem}")
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
        style_dim: length of the model's style code; 0 for a unimodal (UNIT) model.
        fixed_size: the one square size the raw model takes (0 = any size, padded): other sizes are resized
            to it (bilinear) and the output back to the input's size (e.g. ``CoVAE32x32``: 32).
    """

    def __init__(
        self,
        cfg: Config,
        size_multiple: int,
        directions: tuple[str, ...],
        device: torch.device,
        scale: int,
        engine: str,
        style_dim: int = 0,
        fixed_size: int = 0,
    ):
        self.cfg = cfg
        self.style_dim = style_dim
        self.fixed_size = fixed_size
        self.size_multiple = size_multiple
        self.directions = directions
        self.device = device
        self.scale = scale
        self.engine = engine
        self.bytes_per_pixel: int | None = None  # memory per translated pixel, estimated when first needed
        self.style_banks: dict[str, torch.Tensor] = {}  # domain -> [M, style_dim] (model.style_prior=bank)
        self.skipped = {"existing": 0, "bad": 0}  # inputs skipped by the last translate_files

    def channels(self, domain: str) -> int:
        return self.cfg.model.input_nc_a if domain == "a" else self.cfg.model.input_nc_b

    @property
    def multimodal(self) -> bool:
        """True for a model with style codes (MUNIT): one input, many outputs."""
        return self.style_dim > 0

    def run(self, x: torch.Tensor, direction: str, style: torch.Tensor | None = None) -> torch.Tensor:
        """The raw model: [N, C_src, H, W] with H, W padded by :func:`pad_for_model` -> [N, C_dst, H, W];
        ``style`` [N or 1, style_dim] for a multimodal model."""
        raise NotImplementedError

    def run_style_encoder(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """The raw style encoder of ``domain``: [N, C, H, W] (padded) -> [N, style_dim]."""
        raise NotImplementedError

    def draw_styles(self, n: int, seed: int = 0, domain: str | None = None) -> torch.Tensor:
        """``n`` style codes of the target ``domain``, [n, style_dim] float32 on the CPU; the same for a seed
        everywhere. From N(0, I), or, for a model trained with ``model.style_prior=bank``, rows of that domain's
        bank of remembered real styles, spread over it (:func:`unitgan.models.spread_rows`: n draws show n
        different looks where the bank has them)."""
        if not self.multimodal:
            raise UnitganError(UNIMODAL_MESSAGE)
        g = torch.Generator().manual_seed(seed)
        bank = self.style_banks.get(domain) if domain is not None else None
        if bank is not None:
            return bank[spread_rows(bank, n, g)].clone()
        return torch.randn(n, self.style_dim, generator=g)

    @torch.inference_mode()
    def style_of(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """The style codes of images of ``domain`` ('a' or 'b'), [N, C, H, W] in [-1, 1] -> [N, style_dim]:
        translating with the style of an image of the target domain is MUNIT's example-guided translation."""
        if not self.multimodal:
            raise UnitganError(UNIMODAL_MESSAGE)
        if domain not in ("a", "b"):
            raise UnitganError(f"domain '{domain}' is not a or b")
        if x.ndim != 4 or x.shape[1] != self.channels(domain):
            raise UnitganError(f"style image must be [N, {self.channels(domain)}, H, W], got {tuple(x.shape)}")
        return self.run_style_encoder(pad_for_model(x.to(self.device, torch.float32), self.size_multiple), domain)

    def check_style(self, style: torch.Tensor | None, n: int, domain: str | None = None) -> torch.Tensor | None:
        """``style`` as [N or 1, style_dim] float32 on the device (None: ``draw_styles(n, 0, domain)``); None for
        a unimodal model (which takes none)."""
        if style is None:
            return self.draw_styles(n, 0, domain).to(self.device) if self.multimodal else None
        if not self.multimodal:
            raise UnitganError(UNIMODAL_MESSAGE)
        if style.ndim != 2 or style.shape[0] not in (1, n) or style.shape[1] != self.style_dim:
            raise UnitganError(f"style must be [{n} or 1, {self.style_dim}], got {tuple(style.shape)}")
        return style.to(self.device, torch.float32)

    @torch.inference_mode()
    def translate(self, x: torch.Tensor, direction: str, style: torch.Tensor | None = None) -> torch.Tensor:
        """[N, C_src, H, W] -> [N, C_dst, H, W] float32; any H, W (padded by :func:`pad_for_model`, cropped back;
        or resized to ``fixed_size`` and back).

        ``style``: a multimodal model's style code(s) of the target domain, [N or 1, style_dim]; None draws
        ``draw_styles(N, 0, target domain)``. A unimodal model refuses a style."""
        check_direction(direction)
        if direction not in self.directions:
            raise UnitganError(f"direction '{direction}' is not in this export (it has {', '.join(self.directions)})")
        src = direction[0]
        if x.ndim != 4 or x.shape[1] != self.channels(src):
            raise UnitganError(f"input must be [N, {self.channels(src)}, H, W] for {direction}, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        style = self.check_style(style, x.shape[0], direction[2])
        x = x.to(self.device, torch.float32)

        def run(x: torch.Tensor) -> torch.Tensor:
            return self.run(x, direction) if style is None else self.run(x, direction, style)

        if self.fixed_size:  # the model takes one size: resize to it and back
            size = (self.fixed_size, self.fixed_size)
            y = run(F.interpolate(x, size, mode="bilinear", antialias=True) if (h, w) != size else x)
            return (F.interpolate(y.float(), (h, w), mode="bilinear", antialias=True) if (h, w) != size else y).float()
        y = run(pad_for_model(x, self.size_multiple))
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

    def pixel_budget(self, batch_size: int) -> int:
        """The most pixels one image may have at the scale it is translated at, ``batch_size`` at a time
        (:func:`unitgan.budget.pixel_limit` with this model's memory per pixel)."""
        if self.bytes_per_pixel is None:
            self.bytes_per_pixel = translate_bytes_per_pixel(self.cfg.model)
        return pixel_limit(self.bytes_per_pixel, batch_size)

    def scaled_size(self, w: int, h: int, size: int = 0, native: bool = False) -> tuple[int, int]:
        """(width, height) an image of ``w`` x ``h`` is translated at (:meth:`prepare`'s rule), from its header."""
        if size:
            return size, size
        if native or not self.scale:
            return w, h
        short = min(w, h)
        return max(1, round(w * self.scale / short)), max(1, round(h * self.scale / short))

    def check_size(self, name: str, w: int, h: int, size: int, native: bool, batch_size: int) -> None:
        """The one size rule of every engine, from the header, before anything is decoded or written."""
        check_pixels(name, w, h)  # decoding
        tw, th = self.scaled_size(w, h, size, native)
        limit = self.pixel_budget(batch_size)
        if tw * th > limit:
            raise UnitganError(
                f"image '{name}' would be translated at {tw}x{th} = {tw * th} pixels, more than this model's "
                f"limit of {limit} at batch size {batch_size} (set from the memory available); use a smaller "
                f"--size, the training scale, or a smaller --batch-size"
            )

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
        styles: int = 0,
        style_image: str | Path | None = None,
        seed: int = 0,
        skip_existing: bool = False,
        bad_images: str = "error",
    ) -> list[Path]:
        """Translate image files (or folders, or globs) into ``output``, keeping file names (as PNG).

        Each image is translated at the scale of :meth:`prepare`; the output has that size, or the input's
        size with ``keep_size``. A multimodal model (see :meth:`output_styles`) writes ``name_style0.png`` ..
        with ``styles`` K > 0, else one ``name.png`` per input. Every header is checked (format, size) before
        anything is written; images are then decoded and written as they go, at most ``batch_size`` held at a
        time. ``skip_existing``: inputs whose outputs are all there already are skipped. ``bad_images='skip'``:
        unreadable or oversized images are logged and skipped. The counts of both are in ``self.skipped``.
        """
        check_direction(direction)
        if size < 0:
            raise UnitganError(f"size must be >= 0, got {size}")
        if size and native:
            raise UnitganError("give a size or native resolution, not both")
        if bad_images not in ("error", "skip"):
            raise UnitganError(f"bad_images must be 'error' or 'skip', got '{bad_images}'")
        if size and size * size > self.pixel_budget(batch_size):
            raise UnitganError(
                f"size {size} x {size} is more pixels than this model's limit of {self.pixel_budget(batch_size)} "
                f"at batch size {batch_size} (set from the memory available)"
            )
        inputs = list(inputs)
        pairs = expand_inputs(inputs)
        out_dir = Path(output)
        check_folder_path(out_dir, "output folder")
        for item in inputs:
            folder = Path(item).expanduser().resolve()
            if folder.is_dir() and (folder == out_dir.resolve() or folder in out_dir.resolve().parents):
                raise UnitganError(f"output folder '{out_dir}' is inside input folder '{item}'; choose another")
        suffixes, style_codes = self.output_styles(direction, styles, style_image, seed, size, native)
        per_style = [styled_names(output_names(pairs, out_dir), suffix) for suffix in suffixes]
        all_targets = [t for names in per_style for t in names.values()]
        writers: dict[Path, Path] = {}
        for names in per_style:  # with style suffixes, x.png's x_style0.png could be another input's name
            for f, t in names.items():
                if writers.setdefault(t, f) != f:
                    raise UnitganError(
                        f"inputs '{writers[t]}' and '{f}' would both write '{t}'; translate them separately"
                    )
        files = [f for f, _ in pairs]
        resolved_out = out_dir.resolve()
        for f in files:
            if resolved_out in f.resolve().parents or f.resolve() in all_targets:
                raise UnitganError(f"output folder '{out_dir}' holds input '{f}'; choose a folder outside the inputs")
        self.skipped = {"existing": 0, "bad": 0}
        created = make_folder(out_dir, "output folder")
        try:  # one writer per output folder: a second run into it is refused, not interleaved
            with folder_lock(out_dir, "output folder"):
                good = self.check_outputs(files, per_style, skip_existing, overwrite)
                good = self.check_headers(good, size, native, batch_size, bad_images)
                return self.write_files(
                    good, per_style, style_codes, direction, size, native, keep_size, batch_size, bad_images
                )
        finally:
            remove_if_empty(out_dir, created)  # a run refused before writing leaves no folder behind

    def check_outputs(
        self,
        files: list[Path],
        per_style: list[dict[Path, Path]],
        skip_existing: bool,
        overwrite: bool,
    ) -> list[Path]:
        """The inputs left to translate: with ``skip_existing``, those whose outputs are not all there (the
        others are counted); without it or ``overwrite``, an existing output file is refused."""
        if skip_existing:
            done = {f for f in files if all(names[f].exists() for names in per_style)}
            self.skipped["existing"] = len(done)
            return [f for f in files if f not in done]
        if not overwrite:
            existing = [t for names in per_style for f in files if (t := names[f]).exists()]
            if existing:
                raise UnitganError(
                    f"output file '{existing[0]}' exists (use --overwrite to replace, or --skip-existing to keep)"
                )
        return files

    def check_headers(self, files: list[Path], size: int, native: bool, batch_size: int, bad_images: str) -> list[Path]:
        """The inputs whose headers pass :meth:`check_size` (headers only: a bad file stops the run, or is
        skipped and counted with ``bad_images='skip'``, before anything is written)."""
        good = []
        for path in files:
            try:
                self.check_size(str(path), *image_size(path), size, native, batch_size)
                good.append(path)
            except UnitganError as e:
                if bad_images == "error":
                    raise
                log.warning("skipping %s", e)
                self.skipped["bad"] += 1
        return good

    def write_files(
        self,
        files: list[Path],
        per_style: list[dict[Path, Path]],
        style_codes: list[torch.Tensor | None],
        direction: str,
        size: int,
        native: bool,
        keep_size: bool,
        batch_size: int,
        bad_images: str = "error",
    ) -> list[Path]:
        """Decode, translate and write ``files``, at most ``batch_size`` images held at a time."""
        src = direction[0]
        groups: dict[tuple[int, ...], list[tuple[Path, torch.Tensor, tuple[int, int]]]] = defaultdict(list)
        held = 0  # images decoded and not yet written, over all sizes
        written: list[Path] = []

        last_sizes: set[tuple[int, ...]] = set()  # the image sizes of the previous flush

        def flush() -> None:
            nonlocal last_sizes
            for batch in groups.values():
                for names, style in zip(per_style, style_codes, strict=True):
                    written.extend(self.write_batch(batch, names, direction, keep_size, style))
            if groups and set(groups) != last_sizes:  # new sizes: the buffers of the old ones go back to the OS
                release_free_memory()  # (left in the heap, buffers of many sizes fragment it)
            last_sizes = set(groups)
            groups.clear()

        for path in files:
            try:
                img = load_image(path, self.channels(src))
            except UnitganError as e:
                if bad_images == "error":
                    raise
                log.warning("skipping %s", e)
                self.skipped["bad"] += 1
                continue
            x = self.prepare(img, size, native)  # [C, H', W']
            groups[tuple(x.shape[1:])].append((path, x, (img.height, img.width)))
            held += 1
            if held >= batch_size:  # same-size images batch together; memory stays at batch_size images
                flush()
                held = 0
        flush()
        return written

    def output_styles(
        self,
        direction: str,
        styles: int = 0,
        style_image: str | Path | None = None,
        seed: int = 0,
        size: int = 0,
        native: bool = False,
    ) -> tuple[list[str], list[torch.Tensor | None]]:
        """The outputs per input of :meth:`translate_files`: (file-name suffixes, style codes [1, style_dim]).

        A unimodal model: one output, no style. A multimodal one: with ``styles`` K, K outputs ``_style0`` ..
        ``_style{K-1}``, style k being row k of ``draw_styles(K, seed)`` (the same style k for every input);
        with ``style_image``, one output in the style of that image of the target domain (resized as inputs
        are); else one output in style 0 of ``seed``."""
        if styles < 0:
            raise UnitganError(f"styles must be >= 0, got {styles}")
        if not self.multimodal:
            if styles or style_image is not None:
                raise UnitganError(UNIMODAL_MESSAGE)
            return [""], [None]
        if styles and style_image is not None:
            raise UnitganError("give a number of styles or a style image, not both")
        if style_image is not None:
            dst = direction[2]
            ref = Path(style_image).expanduser()
            if ref.is_dir():
                raise UnitganError(f"style image '{style_image}' is a folder; give one image file of domain {dst}")
            if not ref.exists():
                raise UnitganError(f"style image '{style_image}' does not exist")
            if not ref.is_file():
                raise UnitganError(f"style image '{style_image}' is not a regular file")
            self.check_size(str(ref), *image_size(ref), size, native, 1)  # the inputs' limit, before decoding
            x_ref = self.prepare(load_image(ref, self.channels(dst)), size, native)  # [C_dst, H, W]
            return [""], [self.style_of(x_ref.unsqueeze(0), dst)]
        bank = self.style_banks.get(direction[2])
        if bank is not None and styles > len(bank):
            raise UnitganError(
                f"--styles {styles} is more than the {len(bank)} distinct styles the model's bank of domain "
                f"{direction[2].upper()} holds (model.style_prior=bank); give at most {len(bank)}"
            )
        if styles > MAX_STYLES:
            raise UnitganError(f"--styles {styles} is more than {MAX_STYLES} outputs per input; give at most that")
        codes = self.draw_styles(max(styles, 1), seed, direction[2])  # [K, style_dim]
        if not styles:
            return [""], [codes]
        return [f"_style{k}" for k in range(styles)], list(codes.split(1))

    def write_batch(
        self,
        batch: list[tuple[Path, torch.Tensor, tuple[int, int]]],
        targets: dict[Path, Path],
        direction: str,
        keep_size: bool,
        style: torch.Tensor | None = None,
    ) -> list[Path]:
        """Translate one batch of same-size images (path, [C, H, W], input (H, W)) and save each as PNG;
        ``style`` [1, style_dim] for a multimodal model (None: style 0 of seed 0)."""
        try:
            y = self.translate(torch.stack([x for _, x, _ in batch]), direction, style)  # [N, C_dst, H', W']
        except UnitganError as e:
            raise UnitganError(f"image '{batch[0][0]}' cannot be translated: {e}") from None
        out = []
        for (path, _, input_hw), img in zip(batch, y, strict=True):
            if keep_size and tuple(img.shape[-2:]) != input_hw:
                img = TF.resize(img, list(input_hw), antialias=True)
            target = targets[path]
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                pil = tensor_to_pil(img)
                atomic_write(target, lambda f, pil=pil: pil.save(f, format="PNG"), durable=False)
            except OSError as e:
                raise UnitganError(f"output file '{target}' cannot be written: {e.strerror or e}") from None
            out.append(target)
        return out


class Translator(BaseTranslator):
    """A UNIT or MUNIT generator (PyTorch) ready to translate, in fp32, bf16 or fp16."""

    def __init__(self, gen: Generator, cfg: Config, device: torch.device, precision: str = "fp32"):
        check_precision(device, precision)
        super().__init__(
            cfg, gen.size_multiple, DIRECTIONS, device, training_scale(cfg), "torch", gen.style_dim, gen.fixed_size
        )
        self.gen = gen.to(device).eval()
        self.precision = precision
        self.style_banks = gen.style_banks()  # model.style_prior=bank (MUNIT); {} otherwise

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", precision: str = "fp32") -> Translator:
        """The checkpoint case of :func:`unitgan.translator.open_translator`, which is what callers use (it also
        opens export folders and the onnx engine)."""
        gen, cfg, _ = load_generator(path)
        return cls(gen, cfg, resolve_device(device), precision)

    def run(self, x: torch.Tensor, direction: str, style: torch.Tensor | None = None) -> torch.Tensor:
        with autocast(self.device, self.precision):
            if style is None:
                return self.gen.translate(x, direction)
            return self.gen.translate(x, direction, style=style)

    def run_style_encoder(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.gen.encode_style(x, domain).float()


Runner = Callable[[torch.Tensor], torch.Tensor]  # [N, C_src, H, W] (H, W padded) -> [N, C_dst, H, W]
StyledRunner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [N, C_src, H, W], style [N or 1, D])


class ExportedTranslator(BaseTranslator):
    """An export folder ready to translate (fp32): one runner per exported direction.

    Args:
        runners: direction -> callable, [N, C_src, H, W] -> [N, C_dst, H, W] for H, W padded by
            :func:`pad_for_model`; for a multimodal export (manifest ``style_dim`` > 0) a
            :data:`StyledRunner` that also takes the style code.
        manifest: the parsed ``export.json``.
        engine: ``'onnx'`` (onnxruntime, CPU) or ``'torch'``.
        device: where the runners take their inputs.
        style_encoders: domain -> callable, [N, C, H, W] -> style [N, style_dim] (multimodal exports).
    """

    def __init__(
        self,
        runners: dict[str, Runner | StyledRunner],
        manifest: dict,
        engine: str,
        device: torch.device,
        style_encoders: dict[str, Runner] | None = None,
    ):
        cfg = config_from_dict(manifest["config"])
        directions = tuple(d for d in DIRECTIONS if d in runners)
        scale = int(manifest.get("training_scale", training_scale(cfg)))  # exports from before 0.x lack it
        style_dim = int(manifest.get("style_dim", 0))
        super().__init__(cfg, int(manifest["size_multiple"]), directions, device, scale, engine, style_dim)
        self.runners = runners
        self.manifest = manifest
        self.style_encoders = style_encoders or {}
        for d, rows in manifest.get("style_banks", {}).items():  # model.style_prior=bank
            self.style_banks[d] = torch.tensor(rows, dtype=torch.float32).view(-1, style_dim)

    def run(self, x: torch.Tensor, direction: str, style: torch.Tensor | None = None) -> torch.Tensor:
        if style is None:
            return self.runners[direction](x).cpu()
        return self.runners[direction](x, style).cpu()

    def run_style_encoder(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        if domain not in self.style_encoders:
            raise UnitganError(f"this export has no style encoder of domain {domain.upper()}")
        return self.style_encoders[domain](x).cpu()


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


def styled_names(names: dict[Path, Path], suffix: str) -> dict[Path, Path]:
    """Output file names with ``suffix`` added to each stem: ``x.png`` -> ``x_style0.png``."""
    return {f: t.with_name(f"{t.stem}{suffix}{t.suffix}") for f, t in names.items()}


def output_names(files: list[tuple[Path, Path]], out_dir: Path) -> dict[Path, Path]:
    """Keep each file's name (and its sub-folder below an input folder); the extension becomes .png."""
    names = {f: out_dir / rel.with_suffix(".png") for f, rel in files}
    first: dict[Path, Path] = {}
    for f, target in names.items():
        if target in first:
            raise UnitganError(
                f"inputs '{first[target]}' and '{f}' would both write '{target}'; translate them separately"
            )
        first[target] = f
    return names
