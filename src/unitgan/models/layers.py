"""Building blocks: norms, activations, padded convolutions, residual blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class LayerNorm2d(nn.Module):
    """Layer norm over (C, H, W) of each sample with a per-channel affine, in one of two forms (``kind``,
    ``model.layer_norm``):

    - ``group``: (x - mean) / sqrt(biased var + eps), gamma starting at 1 (one-group group norm, one fused kernel);
    - ``nvlabs``: (x - mean) / (unbiased std + eps), gamma drawn from U(0, 1) (NVlabs MUNIT's and the authors'
      UNIT master ``LayerNorm``). Set the kind with :func:`set_layer_norm`, which also redraws gamma.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.kind = "group"
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W]
        if self.kind == "nvlabs":
            var, mean = torch.var_mean(x, dim=(1, 2, 3), keepdim=True)  # unbiased, as torch.std
            x = (x - mean) / (var.sqrt() + self.eps)
            return x * self.weight[:, None, None] + self.bias[:, None, None]
        return F.group_norm(x, 1, self.weight, self.bias, self.eps)


def set_layer_norm(module: nn.Module, kind: str) -> None:
    """Give every :class:`LayerNorm2d` in ``module`` the form ``kind`` (``model.layer_norm``); ``nvlabs`` also
    draws its gamma from U(0, 1) as NVlabs' constructor does (their weight init leaves norms alone)."""
    if kind not in ("group", "nvlabs"):
        raise ValueError(f"unknown layer norm '{kind}'")
    for m in module.modules():
        if isinstance(m, LayerNorm2d):
            m.kind = kind
            if kind == "nvlabs":
                with torch.no_grad():
                    m.weight.uniform_(0.0, 1.0)


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return LayerNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm '{kind}'")


def make_activation(kind: str, slope: float = 0.2) -> nn.Module:
    """``slope``: the negative slope of 'lrelu' (``model.lrelu_slope``)."""
    if kind == "lrelu":
        return nn.LeakyReLU(slope, inplace=True)  # saves only its output, which the next conv keeps anyway
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "tanh":
        return nn.Tanh()
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation '{kind}'")


def or_default(value: str, default: str) -> str:
    """A config choice that may be 'same' (``model.res_norm`` etc.): ``default`` then, else the value."""
    return default if value == "same" else value


def blur_downsample(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, ceil(H/2), ceil(W/2)]: 3x3 Gaussian smoothing (the binomial [1, 2, 1] / 4 in each
    direction, which is what OpenCV's getGaussianKernel(3, -1) gives; replicated borders), then every second
    pixel. version_02's multi-scale discriminator subsamples this way."""
    c = x.shape[1]
    k1 = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=x.device)
    kernel = (k1[:, None] * k1[None, :]).expand(c, 1, 3, 3)  # one 3x3 filter per channel
    x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)
    return x[:, :, ::2, ::2]


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose mask is drawn in NCHW order whatever the input's memory layout, so that a
    channels_last network draws the same masks from the same seed as the NCHW one (``nn.Dropout`` draws its
    mask in the input's memory order). Same numbers as ``nn.Dropout`` on NCHW inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        keep = 1 - self.p
        noise = torch.empty(x.shape, dtype=x.dtype, device=x.device).bernoulli_(keep).div_(keep)  # NCHW order
        return x * noise


class ConvBlock(nn.Sequential):
    """pad -> conv -> norm -> activation. Padding is explicit so 'reflect' and 'zero' behave alike.

    The conv has a bias when no norm (or layer norm) follows it, or when ``norm_bias`` is set (version_02 keeps
    it; instance and batch norm cancel it, so it only adds parameters). ``slope``: LeakyReLU's negative slope.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int = 1,
        norm: str = "none",
        activ: str = "lrelu",
        pad_type: str = "zero",
        slope: float = 0.2,
        norm_bias: bool = False,
    ):
        pad = (kernel - 1) // 2  # 'same' for odd kernels; halves the size exactly for k=4, s=2
        layers: list[nn.Module] = []
        conv_pad = 0
        if pad and pad_type == "reflect":
            layers.append(nn.ReflectionPad2d(pad))
        elif pad:  # zero padding inside the conv: no padded copy made and kept for backward
            layers.append(nn.Identity())  # keeps the layer indices (state-dict keys) of the reflect case
            conv_pad = pad
        layers += [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding=conv_pad, bias=norm_bias or norm in ("none", "layer")),
            make_norm(norm, out_ch),
            make_activation(activ, slope),
        ]
        super().__init__(*layers)


# nearest x2 upsampling then a 5-tap convolution, seen from the low-resolution input: output phase p (0 = even,
# 1 = odd rows or columns) reads the input at offsets -1, 0, +1 with these sums of the 5 taps  [phase, 3, 5]
_PHASE_TAPS = (((1, 1, 0, 0, 0), (0, 0, 1, 1, 0), (0, 0, 0, 0, 1)), ((1, 0, 0, 0, 0), (0, 1, 1, 0, 0), (0, 0, 0, 1, 1)))
SUBPIXEL_MIN_PIXELS = 64 * 64  # output pixels from which NearestUpConv's ``auto`` takes the subpixel route


class NearestUpConv(nn.Conv2d):
    """Nearest x2 upsampling, then this 5x5 convolution with 'same' reflect or zero padding.

    Two ways compute the same numbers (equal to float rounding; ``tests/test_models.py``):
    - ``direct``: upsample, pad, convolve: 25 taps at each of the 4HW output pixels;
    - ``subpixel``: each of the four output phases (even/odd row x even/odd column) is a 3x3 convolution of the
      low-resolution input, whose taps are sums of the 5x5 taps: 9 taps per output pixel, 2.8x fewer
      multiply-adds, as one convolution with 4x the output channels and a pixel shuffle. The reflected border
      does not follow the phase pattern on the first row/column of phase 0 and the last of phase 1, so those four
      lines come from the direct route on thin strips.
    ``impl``: ``auto`` (the default; ``train.upsample_impl``) takes subpixel from 64x64 output pixels up, where it
    is 1.6-2.1x faster on a CPU (docs/performance.md); small maps stay direct, where the strips cost what the phases
    save. Traced exports use the direct route.
    """

    def __init__(self, in_ch: int, out_ch: int, pad_type: str, bias: bool):
        super().__init__(in_ch, out_ch, 5, bias=bias)
        self.reflect = pad_type == "reflect"
        self.impl = "auto"  # train.upsample_impl
        self.min_pixels = SUBPIXEL_MIN_PIXELS
        self.register_buffer("phase_taps", torch.tensor(_PHASE_TAPS, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, out_ch, 2H, 2W]
        large = 4 * x.shape[-2] * x.shape[-1] >= self.min_pixels
        exporting = torch.jit.is_tracing() or torch.jit.is_scripting()
        if (self.impl == "subpixel" or (self.impl == "auto" and large)) and not exporting:
            return self.subpixel(x)
        return self.direct(x)

    def upsampled_padded(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, C, 2H+4, 2W+4]
        return F.pad(F.interpolate(x, scale_factor=2.0, mode="nearest"), (2, 2, 2, 2), mode="reflect")

    def direct(self, x: torch.Tensor) -> torch.Tensor:
        if self.reflect:
            return F.conv2d(self.upsampled_padded(x), self.weight, self.bias)
        return F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), self.weight, self.bias, padding=2)

    def subpixel(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        w, b = self.weight, self.bias  # [O, C, 5, 5], [O]
        taps = self.phase_taps.to(w.dtype)  # [2, 3, 5]
        k = torch.einsum("yja,ocab,xlb->oyxcjl", taps, w, taps).reshape(-1, c, 3, 3)  # [O*4 (o, py, px), C, 3, 3]
        # replicate padding is what the reflected upsampled border reads everywhere but on the four lines below
        x_pad = F.pad(x, (1, 1, 1, 1), mode="replicate" if self.reflect else "constant")
        out = F.conv2d(x_pad, k, None if b is None else b.repeat_interleave(4))  # [N, O*4, H, W]
        out = F.pixel_shuffle(out, 2)  # [N, O, 2H, 2W]
        if not self.reflect:
            return out
        # the first and the last output row, from the two input rows each reads (top and bottom as one batch)
        u = self.upsampled_padded(torch.cat([x[:, :, :2], x[:, :, -2:]]))  # [2N, C, 8, 2W+4]
        rows = F.conv2d(torch.cat([u[:n, :, :5], u[n:, :, -5:]]), w, b)  # [2N, O, 1, 2W]
        out = torch.cat([rows[:n], out[:, :, 1:-1], rows[n:]], 2)
        u = self.upsampled_padded(torch.cat([x[..., :2], x[..., -2:]]))  # [2N, C, 2H+4, 8]
        cols = F.conv2d(torch.cat([u[:n, ..., :5], u[n:, ..., -5:]]), w, b)  # [2N, O, 2H, 1]
        return torch.cat([cols[:n], out[..., 1:-1], cols[n:]], 3)


class UpBlock(nn.Sequential):
    """x2 upsampling: transposed conv 3x3 s2 ('deconv', the paper) or nearest x2 + conv 5x5 ('nearest')."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        mode: str,
        norm: str,
        activ: str,
        pad_type: str,
        slope: float = 0.2,
        norm_bias: bool = False,
    ):
        if mode == "deconv":
            layers: list[nn.Module] = [
                nn.ConvTranspose2d(in_ch, out_ch, 3, 2, padding=1, output_padding=1, bias=norm_bias or norm == "none"),
                make_norm(norm, out_ch),
                make_activation(activ, slope),
            ]
        elif mode == "nearest":
            layers = [
                nn.Identity(),  # the upsampling and the padding happen inside the conv; these two keep the
                nn.Identity(),  # layer indices (state-dict keys) of separate Upsample and pad layers
                NearestUpConv(in_ch, out_ch, pad_type, bias=norm_bias or norm in ("none", "layer")),
                make_norm(norm, out_ch),
                make_activation(activ, slope),
            ]
        else:
            raise ValueError(f"unknown upsample mode '{mode}'")
        super().__init__(*layers)


class ResBlock(nn.Module):
    """x + [conv3x3(norm, activ) -> conv3x3(norm) -> dropout]. Channels and size are kept.

    ``dropout`` > 0 adds dropout after the second norm (version_02's ``res_dropout_ratio``; active in training
    mode only). ``slope`` and ``norm_bias`` as in :class:`ConvBlock`.

    With ``checkpointing = True`` (``train.activation_checkpointing``) the body's activations are not kept
    for backward but recomputed: less memory for large images, about one more forward of the block.
    """

    def __init__(
        self,
        ch: int,
        norm: str,
        activ: str,
        pad_type: str,
        dropout: float = 0.0,
        slope: float = 0.2,
        norm_bias: bool = False,
    ):
        super().__init__()
        self.checkpointing = False
        layers: list[nn.Module] = [
            ConvBlock(ch, ch, 3, 1, norm, activ, pad_type, slope, norm_bias),
            ConvBlock(ch, ch, 3, 1, norm, "none", pad_type, slope, norm_bias),
        ]
        if dropout > 0:  # no parameters: the state-dict keys stay those of a block without dropout
            layers.append(nn.Dropout(dropout))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W]
        if self.checkpointing and torch.is_grad_enabled():
            return x + self._body_recomputed(x)
        return x + self.body(x)

    @torch.jit.unused
    def _body_recomputed(self, x):  # no annotations: TorchScript reads them as strings here (Tensor by default)
        return checkpoint(self.body, x, use_reentrant=False)


def init_weights(module: nn.Module, kind: str) -> None:
    """Initialise conv and linear weights in place; norms keep weight 1 and bias 0."""
    if kind == "default":
        return
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if kind == "gaussian":
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif kind == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            elif kind == "xavier":
                nn.init.xavier_normal_(m.weight, gain=2**0.5)
            elif kind == "orthogonal":
                nn.init.orthogonal_(m.weight, gain=2**0.5)
            else:
                raise ValueError(f"unknown init '{kind}'")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
