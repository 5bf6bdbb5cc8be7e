"""Map-style data sets of one domain each: image folders and arrays (``.npz`` or torchvision)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from unitgan.data.filelist import FileIndex
from unitgan.data.io import image_size, load_image, pil_to_tensor
from unitgan.data.transforms import augment
from unitgan.errors import UnitganError

log = logging.getLogger(__name__)

TORCHVISION_NAMES = ("mnist", "usps", "svhn", "svhn_extra", "fashionmnist")  # svhn_extra: train = the extra split


def _aug_generator(index) -> tuple[int, torch.Generator | None]:
    """Samplers pass (index, seed); the seed drives this sample's crop and flip."""
    if isinstance(index, tuple):
        index, seed = index
        return index, torch.Generator().manual_seed(seed)
    return index, None


class ImageFolderDomain(Dataset):
    """All images under one folder (recursive), as [C, crop, crop] tensors in [-1, 1]."""

    def __init__(
        self,
        folder: str | Path,
        channels: int,
        crop_size: int,
        load_size: int = 0,
        train: bool = True,
        flip: bool = True,
        bad_images: str = "error",
        check_sizes: bool = True,
        cache_dir: str | Path | None = None,  # where the file list and image sizes are cached (None = not)
    ):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UnitganError(f"image folder '{self.folder}' does not exist")
        self.index = FileIndex.load_or_scan(self.folder, cache_dir)
        self.files = self.index.paths  # a compact PathList: memory stays flat with 100k+ files
        if not len(self.files):
            raise UnitganError(f"image folder '{self.folder}' holds no images (.png .jpg .jpeg .webp .bmp .tif)")
        self.channels, self.crop_size, self.load_size = channels, crop_size, load_size
        self.train, self.flip, self.bad_images = train, flip, bad_images
        self.header_bad = 0  # files dropped by the header check (bad_images=skip)
        if check_sizes:
            self._check_headers()
        # files that failed to decode later, shared with loader worker processes (shared memory)
        self._bad = torch.zeros(len(self.files), dtype=torch.uint8).share_memory_()

    @property
    def bad_count(self) -> int:
        """How many files were skipped as unreadable so far (header check and decoding)."""
        return self.header_bad + int(self._bad.sum())

    def _check_headers(self) -> None:
        """Read each header once (cached): unreadable files and images smaller than the crop fail (or are skipped)."""
        sizes = self.index.sizes()  # [N, 2] (w, h), -1 where unreadable
        suspect = (sizes[:, 0] < 0) | ((sizes.min(1) < self.crop_size) if not self.load_size else False)
        good = np.ones(len(self.files), dtype=bool)
        for i in np.flatnonzero(suspect):
            path = self.files[int(i)]
            try:
                w, h = image_size(path) if sizes[i, 0] < 0 else sizes[i]  # re-read: raises the precise error
                self._check_size(path, int(w), int(h))
            except UnitganError as e:
                if self.bad_images == "error":
                    raise
                log.warning("skipping %s", e)
                good[i] = False
        self.header_bad = int((~good).sum())
        if self.header_bad:
            log.warning(
                "skipped %d of %d images in '%s' (data.bad_images=skip)", self.header_bad, len(self.files), self.folder
            )
        if not good.any():
            raise UnitganError(f"image folder '{self.folder}' holds no usable images (all {len(self.files)} skipped)")
        if not good.all():
            self.files = self.files.subset(np.flatnonzero(good))

    def _check_size(self, path: Path, w: int, h: int) -> None:
        if not self.load_size and min(w, h) < self.crop_size:
            raise UnitganError(
                f"image '{path}' is {w}x{h}, smaller than data.crop_size={self.crop_size} "
                f"(set data.load_size to resize first, or lower data.crop_size)"
            )

    def _load(self, path: Path) -> torch.Tensor:
        x = pil_to_tensor(load_image(path, self.channels))  # [C, H, W]
        self._check_size(path, x.shape[2], x.shape[1])
        return x

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index) -> torch.Tensor:
        """With ``bad_images=skip`` an unreadable file is replaced by the next readable one in the list (with
        the same crop and flip), so the result depends only on the index, the seed and the files."""
        index, gen = _aug_generator(index)
        n = len(self.files)
        for k in range(n):
            j = (index + k) % n
            if self._bad[j]:
                continue
            try:
                x = self._load(self.files[j])
            except UnitganError as e:
                if self.bad_images == "error":
                    raise
                if not self._bad[j]:  # warn once per file (workers share the flags)
                    self._bad[j] = 1
                    log.warning("skipping %s", e)
                continue
            return augment(x, self.load_size, self.crop_size, self.train, self.flip, gen)
        raise UnitganError(f"image folder '{self.folder}' holds no readable images (all {n} were skipped)")


def _load_arrays(spec: str, split: str, download: bool, cache_dir: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Images [N, H, W] or [N, H, W, C] uint8 (or [N, C, H, W]) and optional labels from a spec."""
    if spec.lower() in TORCHVISION_NAMES:
        return _load_torchvision(spec.lower(), split, download, cache_dir)
    path = Path(spec).expanduser()
    if path.suffix != ".npz":
        raise UnitganError(f"array domain '{spec}' must be an .npz file or one of {', '.join(TORCHVISION_NAMES)}")
    if not path.is_file():
        raise UnitganError(f"array file '{path}' does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            xk = f"x_{split}" if f"x_{split}" in keys else "x"
            yk = f"y_{split}" if f"y_{split}" in keys else "y"
            if xk not in keys:
                raise UnitganError(f"array file '{path}' has no 'x' or 'x_{split}' array (has: {sorted(keys)})")
            return z[xk], (z[yk] if yk in keys else None)
    except (OSError, ValueError) as e:
        raise UnitganError(f"array file '{path}' cannot be read: {e}") from None


def _load_torchvision(name: str, split: str, download: bool, cache_dir: str):
    import torchvision.datasets as tvd

    root = Path(cache_dir).expanduser() / ("svhn" if name == "svhn_extra" else name)
    train = split == "train"
    try:
        if name == "mnist":
            ds = tvd.MNIST(root, train=train, download=download)
        elif name == "fashionmnist":
            ds = tvd.FashionMNIST(root, train=train, download=download)
        elif name == "usps":
            ds = tvd.USPS(root, train=train, download=download)
        elif name == "svhn_extra":  # SVHN's 531,131 'extra' images for training (the authors' DA code), 'test' to test
            ds = tvd.SVHN(root, split="extra" if train else "test", download=download)
        else:
            ds = tvd.SVHN(root, split="train" if train else "test", download=download)
    except (RuntimeError, OSError) as e:
        if not download:
            raise UnitganError(
                f"torchvision data set '{name}' not found under '{root}' (set data.download=true to fetch it; "
                f"needs internet)"
            ) from None
        raise UnitganError(f"torchvision data set '{name}' could not be downloaded to '{root}': {e}") from None
    if name in ("svhn", "svhn_extra"):
        return np.asarray(ds.data), np.asarray(ds.labels)  # [N, 3, 32, 32]
    data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
    targets = ds.targets.numpy() if hasattr(ds.targets, "numpy") else np.asarray(ds.targets)
    return data, targets


def pad_to_box(x: np.ndarray, digit_box: float) -> np.ndarray:
    """Pad images [N, C, H, W] (0-255) with 0, the background of white-on-black digits, to
    round(H / digit_box) x round(W / digit_box), centred, so that content filling the frame fills the fraction
    ``digit_box`` of it afterwards (USPS 16x16 with 0.714 -> 22x22, like MNIST's 20-pixel digits in 28)."""
    if digit_box >= 1:
        return x
    h, w = x.shape[2:]
    ph, pw = round(h / digit_box) - h, round(w / digit_box) - w
    pad = ((0, 0), (0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
    return np.pad(x, pad, constant_values=0)


class ArrayDomain(Dataset):
    """Images held in memory as a uint8 array (digits etc.), resized to ``crop_size``; optional labels."""

    def __init__(
        self,
        spec: str,
        split: str,
        channels: int,
        crop_size: int,
        train: bool = True,
        flip: bool = False,
        download: bool = False,
        cache_dir: str = "~/.cache/unitgan",
        return_labels: bool = False,
        digit_box: float = 1.0,  # pad each image with background to (its size / digit_box) before the resize
        add_inverted: bool = False,  # append intensity-inverted copies (255 - x) of every image, same labels
    ):
        x, y = _load_arrays(spec, split, download, cache_dir)
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[:, None]  # [N, 1, H, W]
        elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise UnitganError(f"array domain '{spec}' must hold images [N, H, W(, C)], got shape {x.shape}")
        if len(x) == 0:
            raise UnitganError(f"array domain '{spec}' ({split}) holds no images")
        x = pad_to_box(x, digit_box)
        if add_inverted:
            x = np.concatenate((x, 255 - x))  # values are 0-255 (see __getitem__)
            y = np.concatenate((y, y)) if y is not None else None
        self.x = torch.from_numpy(np.ascontiguousarray(x))
        self.y = torch.from_numpy(np.asarray(y).astype(np.int64)) if y is not None else None
        self.channels, self.crop_size, self.train, self.flip = channels, crop_size, train, flip
        self.return_labels = return_labels and self.y is not None

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index):
        index, gen = _aug_generator(index)
        x = self.x[index].float() / 127.5 - 1.0  # [c, h, w]
        if x.shape[0] != self.channels:
            x = x.mean(0, keepdim=True) if self.channels == 1 else x.expand(3, -1, -1)
        if x.shape[1:] != (self.crop_size, self.crop_size):
            x = F.interpolate(x[None], size=(self.crop_size, self.crop_size), mode="bilinear", align_corners=False)[0]
        if self.train and self.flip and gen is not None and bool(torch.rand((), generator=gen) < 0.5):
            x = x.flip(-1)
        x = x.contiguous()
        if self.return_labels:
            return x, self.y[index]
        return x
