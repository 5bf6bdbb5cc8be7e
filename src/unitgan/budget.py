"""Memory budgets: refuse what cannot fit before anything large is allocated.

- :func:`available_memory`: bytes this process can still use (``MemAvailable``, capped by a cgroup limit);
- :func:`pixel_limit`: the one limit on the pixels an image may declare, from memory and a cost per pixel
  (decoding alone, :data:`DECODE_BYTES_PER_PIXEL`, or decoding and translating, :func:`translate_bytes_per_pixel`);
  checked from the file's header, before decoding (``unitgan.data.io.load_image``);
- :func:`model_footprint`: parameters and activation bytes per pixel of a generator, measured on the ``meta``
  device (shapes only, no memory), and :func:`check_model_fits`, which refuses an oversized model in one line
  naming its size keys, for training, translation, export, serving and checkpoints alike.

The estimates are deliberately rough (within a factor of about two) and err on the generous side: their job
is to turn a certain out-of-memory crash into a clear message, not to predict peak memory exactly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from unitgan.config import Config, ModelConfig
from unitgan.errors import UnitganError

DECODE_BYTES_PER_PIXEL = 32  # a decoded RGB(A) image, its converted copy and its float32 tensor
MIN_PIXEL_LIMIT = 2**20  # never refuse a 1024 x 1024 image, however little memory is free right now
SIZE_KEYS = ("ch", "n_down", "n_res", "n_shared", "dis_ch", "dis_n_layers", "dis_n_scales", "mlp_dim")
TRAIN_ACTIVATION_FACTOR = 8  # a UNIT step: 6 generator paths + 2 discriminators, activations kept for backward
TRAIN_PARAM_FACTOR = 4  # weights, gradients and Adam's two moments
INFER_ACTIVATION_FACTOR = 4  # measured on a CPU: translate's peak RSS over its baseline is 4-6x the layer outputs
#   (a ch=8 model at 400x460: 670 bytes of layer outputs per pixel, about 4 KB per pixel of RSS: oneDNN
#   buffers, padding and dtype copies)


def available_memory() -> int:
    """Bytes of RAM this process can still allocate: ``MemAvailable``, capped by a cgroup v2/v1 limit."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 8 * 2**30  # unknown platform: assume a small machine
    for limit_file, used_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit, used = Path(limit_file).read_text().strip(), int(Path(used_file).read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            avail = min(avail, max(int(limit) - used, 0))
    return avail


def pixel_limit(bytes_per_pixel: int = DECODE_BYTES_PER_PIXEL, batch: int = 1) -> int:
    """The most pixels one image may declare: half the available memory over ``batch`` images' cost per pixel
    (at least :data:`MIN_PIXEL_LIMIT`)."""
    return max(MIN_PIXEL_LIMIT, available_memory() // (2 * bytes_per_pixel * max(batch, 1)))


@dataclass
class Footprint:
    params: int  # generator parameters
    dis_params: int  # both discriminators' parameters
    act_bytes_per_pixel: int  # float32 activations of one translation, per input pixel


INIT_METHODS = ("normal_", "uniform_", "fill_", "zero_", "trunc_normal_", "orthogonal_")


@contextlib.contextmanager
def no_init() -> Iterator[None]:
    """Weight initialisation as a no-op: meta tensors hold no values, and the meta path of the in-place
    random fills goes through torch's reference kernels, whose first use costs about 10 s of imports."""
    saved = {name: getattr(torch.Tensor, name) for name in INIT_METHODS if hasattr(torch.Tensor, name)}
    try:
        for name in saved:
            setattr(torch.Tensor, name, lambda self, *a, **k: self)
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def model_footprint(model: ModelConfig) -> Footprint:
    """Parameters of the networks ``model`` describes (built on the meta device: shapes only, no memory), and
    the float32 layer outputs of one translation per input pixel, from the config: each of the ``n_down + 1``
    resolutions of the encoder and the decoder keeps about 5 tensors of ``ch * 2**i`` channels at ``4**-i``
    of the pixels, and each residual block about 6 at the bottom resolution (within 15% of a forward pass
    with hooks on every layer for the demo preset; measured once, not at run time, because a meta-device
    forward pass imports torch's decompositions, about 10 s)."""
    from unitgan.models import build_discriminators, build_generator  # models import config, not this

    with torch.device("meta"), no_init():
        gen = build_generator(model)
        dis_a, dis_b = build_discriminators(model)
    params = sum(p.numel() for p in gen.parameters())
    dis_params = sum(p.numel() for p in nn.ModuleList([dis_a, dis_b]).parameters())
    levels = sum(model.ch * 2**i / 4**i for i in range(model.n_down + 1))
    bottom = model.ch * 2**model.n_down / 4**model.n_down
    floats = 2 * 5 * levels + 2 * 6 * model.n_res * bottom + model.input_nc_a + model.input_nc_b
    return Footprint(params, dis_params, int(4 * floats))


def translate_bytes_per_pixel(model: ModelConfig) -> int:
    """Memory per input pixel while one image is decoded and translated."""
    return DECODE_BYTES_PER_PIXEL + INFER_ACTIVATION_FACTOR * model_footprint(model).act_bytes_per_pixel


def size_keys(cfg: Config, *extra: str) -> str:
    """``model.ch=1024 model.n_res=64 ...``: the keys that decide a model's size, with their values."""
    m = cfg.model
    keys = [f"model.{k}={getattr(m, k)}" for k in SIZE_KEYS if k != "mlp_dim" or m.arch == "munit"]
    return " ".join([*keys, *extra])


def check_model_fits(cfg: Config, what: str, training: bool = False, memory: int | None = None) -> Footprint:
    """Refuse (UnitganError, one line) a model whose weights, or a training step's memory, exceed ``memory``
    (default: :func:`available_memory`). ``what`` names the source (a checkpoint, the command line)."""
    fp = model_footprint(cfg.model)
    memory = available_memory() if memory is None else memory
    if training:
        pixels = cfg.data.crop_size**2 * cfg.data.batch_size
        need = TRAIN_PARAM_FACTOR * 4 * (fp.params + fp.dis_params)
        need += TRAIN_ACTIVATION_FACTOR * fp.act_bytes_per_pixel * pixels
        keys = size_keys(cfg, f"data.batch_size={cfg.data.batch_size}", f"data.crop_size={cfg.data.crop_size}")
    else:
        need = 4 * fp.params
        keys = size_keys(cfg)
    if need > memory:
        raise UnitganError(
            f"{what}: the model ({keys}) needs about {need / 2**30:.1f} GiB "
            f"({fp.params / 1e6:.1f}M generator parameters), more than the {memory / 2**30:.1f} GiB available"
        )
    return fp
