"""Speed settings that depend on the hardware: backend flags and a check that a precision is native.

On a CPU without bf16/fp16 instructions (AVX2 only: no AVX512-BF16, no AMX), oneDNN and MKL fall back
to emulated kernels that are one to two orders of magnitude slower than fp32, so autocast there costs
time instead of saving it. :func:`check_precision` logs a warning in that case rather than silently
running a hundred times slower.
"""

from __future__ import annotations

import logging

import torch

from unitgan.config import Config

log = logging.getLogger(__name__)


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


def configure_backends(cfg: Config, device: torch.device) -> None:
    """Global backend flags for speed: cuDNN autotuning and TF32 on CUDA (unless deterministic)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.train.deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if device.type == "cpu":
        torch.backends.mkldnn.enabled = True  # oneDNN convolutions (the default; stated for clarity)
