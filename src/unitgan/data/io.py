"""Reading one image file into a float tensor in [-1, 1], with errors that name the file.

:func:`decode_image` is the one way unitgan reads an image (translate, serve, the data loaders, evaluate):

- only the formats in :data:`ALLOWED_FORMATS` are opened (Pillow is never asked to try its other plugins, e.g.
  EPS, which runs Ghostscript), decided from the file's content, not its name;
- the pixel count declared in the header is checked against a limit (:func:`unitgan.budget.pixel_limit`, from
  the memory available) before anything is decoded;
- the EXIF orientation tag is applied, as photo viewers do;
- any mode (palette, alpha, 16-bit, float) becomes 'L' or 'RGB' (:func:`to_mode`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from unitgan.budget import pixel_limit
from unitgan.errors import UnitganError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")  # Pillow plugin names (JPEG also opens MPO files)
ALLOWED_NAMES = "PNG, JPEG, WebP, BMP, TIFF"


class NotAnImage(UnitganError):
    """A file that is no image in an allowed format (serve answers 415, not 400)."""


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode (palette, CMYK, alpha, 16-bit, float) to 'L' (channels=1) or 'RGB' (3)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F":  # float: scaled by its range; values outside every known range are refused
            lo, hi = float(arr.min()), float(arr.max())
            top = next((t for t in (1.0, 255.0, 65535.0) if lo >= 0 and hi <= t), 0.0)
            if not top:
                raise UnitganError(
                    f"float image with values in [{lo:g}, {hi:g}]: only [0, 1], [0, 255] or [0, 65535] are understood"
                )
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def decode_image(src: str | Path | IO[bytes], name: str, channels: int, max_pixels: int = 0) -> Image.Image:
    """Open (allowed formats only), check the declared size, decode, orient and convert an image.

    ``max_pixels``: the most pixels the header may declare (0 = :func:`unitgan.budget.pixel_limit`). Any
    failure raises UnitganError naming ``name`` (:class:`NotAnImage` for an unknown or refused format).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below decides
            with Image.open(src, formats=ALLOWED_FORMATS) as img:
                check_pixels(name, *img.size, max_pixels)
                img.load()
                return to_mode(ImageOps.exif_transpose(img), channels)
    except UnitganError as e:
        if str(e).startswith(f"image '{name}'"):
            raise
        raise UnitganError(f"image '{name}': {e}") from None
    except Image.DecompressionBombError as e:
        raise UnitganError(f"image '{name}' is too large to decode safely ({_first_sentence(e)})") from None
    except UnidentifiedImageError:
        raise NotAnImage(not_an_image(name)) from None
    except OSError as e:
        raise UnitganError(f"image '{name}' cannot be read: {e.strerror or _first_sentence(e)}") from None
    except Exception as e:  # noqa: BLE001 - a corrupt file can trip any decoder bug; it is still a bad file
        raise UnitganError(f"image '{name}' cannot be decoded ({type(e).__name__}: {_first_sentence(e)})") from None


def check_pixels(name: str, w: int, h: int, max_pixels: int = 0) -> None:
    """Refuse a declared size over ``max_pixels`` (0 = :func:`unitgan.budget.pixel_limit`), naming ``name``."""
    limit = max_pixels or pixel_limit()
    if w * h > limit:
        raise UnitganError(
            f"image '{name}' is too large to decode safely: {w}x{h} = {w * h} pixels, more than the limit of "
            f"{limit} (set from the memory available; refused before decoding as a possible decompression bomb)"
        )


def load_image(path: str | Path, channels: int, max_pixels: int = 0) -> Image.Image:
    """:func:`decode_image` of a file."""
    return decode_image(Path(path), str(path), channels, max_pixels)


def image_size(path: str | Path, max_pixels: int = 0) -> tuple[int, int]:
    """(width, height) from the header only (allowed formats only); raises UnitganError naming the file.
    ``max_pixels`` as :func:`check_pixels` (a scan of many headers passes the limit it computed once: working
    it out reads /proc/meminfo and the cgroup files, which made a 100k-file scan 5x slower)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # decode_image applies the limit
            with Image.open(path, formats=ALLOWED_FORMATS) as img:
                check_pixels(str(path), *img.size, max_pixels)
                return img.size
    except UnitganError:
        raise
    except UnidentifiedImageError:
        raise NotAnImage(not_an_image(str(path))) from None
    except Image.DecompressionBombError as e:
        raise UnitganError(f"image '{path}' is too large to decode safely ({_first_sentence(e)})") from None
    except OSError as e:
        raise UnitganError(f"image '{path}' cannot be read: {e.strerror or _first_sentence(e)}") from None
    except Exception as e:  # noqa: BLE001
        raise UnitganError(f"image '{path}' cannot be decoded ({type(e).__name__}: {_first_sentence(e)})") from None


def not_an_image(name: str) -> str:
    return f"image '{name}' is not a readable image (unknown or corrupt, or not one of {ALLOWED_NAMES})"


def _first_sentence(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL 'L' or 'RGB' -> float tensor [C, H, W] in [-1, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1).float()
    return t / 127.5 - 1.0


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """Float tensor [C, H, W] in [-1, 1] -> PIL 'L' or 'RGB'."""
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    arr = arr.permute(1, 2, 0).numpy()
    return Image.fromarray(arr[:, :, 0], "L") if arr.shape[2] == 1 else Image.fromarray(arr, "RGB")
