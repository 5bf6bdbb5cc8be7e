"""An MNIST-M-style target domain built offline: MNIST digits blended over patches of colour photos.

The standard MNIST-M recipe (Ganin & Lempitsky 2015): for each digit take a random crop of a colour photo and
set ``out = |patch - digit|`` per channel, so the stroke inverts the photo's colours. The original uses
BSDS500 photos; here the colour photos bundled with scikit-image stand in (no download).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from unitgan.errors import UnitganError

log = logging.getLogger(__name__)

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def load_photos(names: tuple[str, ...] = PHOTOS) -> list[np.ndarray]:
    """The bundled colour photos as uint8 arrays [H, W, 3]; needs ``pip install scikit-image``."""
    try:
        import skimage.data
    except ImportError:
        raise UnitganError("the MNIST-M builder needs scikit-image: pip install scikit-image") from None
    return [np.asarray(getattr(skimage.data, n)(), dtype=np.uint8)[..., :3] for n in names]


def blend(digits: np.ndarray, photos: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """digits [N, H, W] uint8 -> [N, H, W, 3] uint8: |random photo patch - digit| per channel."""
    n, h, w = digits.shape
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    which = rng.integers(0, len(photos), n)
    for i in range(n):
        photo = photos[which[i]]
        top = rng.integers(0, photo.shape[0] - h + 1)
        left = rng.integers(0, photo.shape[1] - w + 1)
        patch = photo[top : top + h, left : left + w].astype(np.int16)
        out[i] = np.abs(patch - digits[i].astype(np.int16)[..., None]).astype(np.uint8)
    return out


def build_mnistm(mnist_npz: str | Path, out: str | Path, seed: int = 0, limit: int = 0) -> Path:
    """Write ``out`` (.npz with x_train y_train x_test y_test, [N, 28, 28, 3] uint8) from an MNIST .npz.

    ``limit`` > 0 keeps only the first ``limit`` digits of each split (for quick tests).
    """
    src = Path(mnist_npz).expanduser()
    if not src.is_file():
        raise UnitganError(f"MNIST file '{src}' does not exist")
    with np.load(src) as z:
        if not {"x_train", "y_train", "x_test", "y_test"} <= set(z.files):
            raise UnitganError(f"MNIST file '{src}' needs x_train y_train x_test y_test arrays, has {z.files}")
        arrays = {k: z[k][:limit] if limit else z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    photos = load_photos()
    rng = np.random.default_rng(seed)
    result = {
        "x_train": blend(arrays["x_train"], photos, rng),
        "y_train": arrays["y_train"],
        "x_test": blend(arrays["x_test"], photos, rng),
        "y_test": arrays["y_test"],
    }
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **result)
    log.info(
        "wrote %s: %d train and %d test digits over %d photos",
        out,
        len(result["x_train"]),
        len(result["x_test"]),
        len(photos),
    )
    return out
