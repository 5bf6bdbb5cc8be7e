"""What training, translation, export and serving share about where and how code runs.

- :func:`resolve_device`: ``auto`` | ``cpu`` | ``cuda[:N]`` | ``mps`` to a :class:`torch.device`, or one clear error;
- :func:`autocast`, :func:`check_precision`: mixed precision, and a warning where it has no native kernels;
- :func:`configure_backends`: global backend flags (cuDNN autotuning, TF32);
- :func:`atomic_write`, :func:`atomic_write_text`: a file is either the old one or the complete new one;
- :func:`make_folder`, :func:`folder_lock`: an output folder created with a clear message, and held by one
  writer at a time;
- :func:`release_free_memory`: give freed heap memory back to the OS (glibc), so that translating images of
  many sizes does not grow the process by fragmentation.

On a CPU without bf16/fp16 instructions (AVX2 only: no AVX512-BF16, no AMX), oneDNN and MKL fall back to
emulated kernels that are one to two orders of magnitude slower than fp32, so autocast there costs time
instead of saving it; :func:`check_precision` says so rather than silently running a hundred times slower.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import torch
from torch import nn

from unitgan.errors import UnitganError

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; anything else must name a device that is there."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UnitganError(f"device '{name}' is not a device name (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise UnitganError(f"device '{name}' is not available on this machine")
    if device.type == "mps" and not _mps_available():
        raise UnitganError(f"device '{name}' is not available on this machine")
    return device


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` for ``bf16``/``fp16``; nothing for ``fp32``."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def native_low_precision(device: torch.device, precision: str) -> bool:
    """Whether ``precision`` has fast kernels on ``device`` (fp32 always has)."""
    if precision == "fp32":
        return True
    if device.type == "cpu":
        mkldnn = torch.ops.mkldnn
        if precision == "bf16":
            return bool(mkldnn._is_mkldnn_bf16_supported())
        return bool(mkldnn._is_mkldnn_fp16_supported())
    if device.type == "cuda" and precision == "bf16":
        return torch.cuda.is_bf16_supported()
    return True


def check_precision(device: torch.device, precision: str) -> None:
    """Log a warning when ``precision`` would run on emulated (slow) kernels on ``device``."""
    if not native_low_precision(device, precision):
        cap = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else device.type
        log.warning(
            "train/translate precision %s has no native kernels on this %s (%s): it will be much slower "
            "than fp32 here; use precision=fp32 on this machine",
            precision,
            device.type.upper(),
            cap,
        )


def configure_backends(device: torch.device, deterministic: bool = False) -> None:
    """Global backend flags for speed: cuDNN autotuning (unless ``deterministic``) and TF32 on CUDA."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if device.type == "cpu":
        torch.backends.mkldnn.enabled = True  # oneDNN convolutions (the default; stated for clarity)


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Freeze (False) or unfreeze (True) every parameter of ``module``."""
    for p in module.parameters():
        p.requires_grad_(flag)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None], durable: bool = True) -> Path:
    """Write ``path`` so that it is always either the old file or the complete new one.

    ``write(f)`` fills a temp file in the same folder (``.<name>.<random>.tmp``); the file gets the permissions
    a plain ``open()`` would give it (0666 less the umask, not the temp file's 0600), is fsynced when
    ``durable``, and is renamed over ``path``; then the folder is fsynced so the rename survives a crash.
    On any failure the temp file is removed, ``path`` is untouched, and the error propagates (``OSError``
    for a full disk or an unwritable folder: callers turn it into a message naming what they were writing).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        with contextlib.suppress(OSError):
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    return path


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data), durable)


def check_folder_path(path: str | Path, what: str) -> None:
    """Refuse, naming ``what`` and the path, a folder path that is a dangling or looping symlink or a file."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise UnitganError(f"{what} '{path}' is a symlink to '{target}', which does not exist or loops")
    if path.exists() and not path.is_dir():
        raise UnitganError(f"{what} '{path}' is a file, not a folder")


def make_folder(path: str | Path, what: str) -> Path | None:
    """Create the folder ``path`` (and its parents); returns the topmost folder it created (None if it was
    there), so that a caller that fails before writing anything can remove what it made. Raises UnitganError
    naming ``what`` and the path: a dangling or looping symlink and a file in the way are named as such."""
    path = Path(path)
    check_folder_path(path, what)
    created = None
    for folder in [*reversed(path.parents), path]:
        if not folder.exists() and not folder.is_symlink():
            created = folder
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UnitganError(f"{what} '{path}' cannot be created: {e.strerror or e}") from None
    return created


def remove_if_empty(path: Path, top: Path | None) -> None:
    """Remove the empty folders from ``path`` up to ``top`` (:func:`make_folder`'s result; None: nothing)."""
    if top is None:
        return
    for folder in [path, *path.parents]:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == top:
            return


@contextlib.contextmanager
def folder_lock(path: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the folder ``path`` itself (no lock file is created in it) while the
    block runs; a second holder, in this or another process, is refused at once in one line naming the folder.
    The kernel drops the lock when the process ends in any way."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UnitganError(
                f"{what} '{path}' is being written by another unitgan process; wait for it to end or choose "
                f"another folder"
            ) from None
        yield
    finally:
        os.close(fd)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library is not glibc (macOS, musl, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> None:
    """Return the heap memory freed so far to the OS (glibc ``malloc_trim(0)``; nothing elsewhere).

    Tensors of a new shape get new buffers; the freed ones of other shapes stay in glibc's arenas in pieces
    too small to reuse, so translating images of many distinct sizes grew the process by hundreds of MB
    (240 sizes at batch 1: 1076 MB and climbing, against 874 MB for one size). Trimming whenever the sizes
    change bounds it near the one-size level; the cost is the page faults of buffers allocated afresh."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
