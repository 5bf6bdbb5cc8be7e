"""Reading one image file into a float tensor in [-1, 1], with errors that name the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from unitgan.errors import UnitganError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode (palette, CMYK, alpha, 16-bit, float) to 'L' (channels=1) or 'RGB' (3)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def load_image(path: str | Path, channels: int) -> Image.Image:
    """Open, fully decode and convert an image. Any failure raises UnitganError naming the file."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return to_mode(img, channels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UnitganError(f"image '{path}' is too large to decode safely ({_first_sentence(e)})") from None
    except UnidentifiedImageError:
        raise UnitganError(f"image '{path}' is not a readable image (unknown or corrupt format)") from None
    except OSError as e:
        raise UnitganError(f"image '{path}' cannot be read: {e.strerror or _first_sentence(e)}") from None
    except Exception as e:  # noqa: BLE001 - a corrupt file can trip any decoder bug; it is still a bad file
        raise UnitganError(f"image '{path}' cannot be decoded ({type(e).__name__}: {_first_sentence(e)})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the header only; raises UnitganError naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.size
    except UnidentifiedImageError:
        raise UnitganError(f"image '{path}' is not a readable image (unknown or corrupt format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UnitganError(f"image '{path}' is too large to decode safely ({_first_sentence(e)})") from None
    except OSError as e:
        raise UnitganError(f"image '{path}' cannot be read: {e.strerror or _first_sentence(e)}") from None
    except Exception as e:  # noqa: BLE001
        raise UnitganError(f"image '{path}' cannot be decoded ({type(e).__name__}: {_first_sentence(e)})") from None


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


def list_images(root: str | Path) -> list[Path]:
    """Image files under ``root`` (recursive, sorted, symlink loops ignored)."""
    root = Path(root)
    found: list[Path] = []
    seen_dirs: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            st = d.stat()
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            continue
        seen_dirs.add(key)
        try:
            entries = sorted(d.iterdir())
        except OSError as e:
            raise UnitganError(f"folder '{d}' cannot be listed: {e.strerror or e}") from None
        for p in entries:
            if p.is_dir():
                stack.append(p)
            elif p.suffix.lower() in IMAGE_EXTENSIONS:
                found.append(p)
    return sorted(found)
