"""The authors' digit-adaptation networks (version_02 DA code): ``CoVAE32x32`` and ``CoDis32x32``.

Facts from ../shared/PAPER.md ("Protocol"); widths: ``ch`` (the paper's ``gen_ch`` 96) and ``dis_ch`` (64).
Inputs are exactly 32x32. A = labelled source, B = unlabelled target.

Generator (everything shared but the first encoder layer and the last two decoder layers)::

    x_a ++ xy [N, nc_a+2, 32, 32] -> enc_a: conv0 5x5 s2      -> [N, c, 16, 16]   (private; BN over the A batch)
    x_b ++ xy [N, nc_b+2, 32, 32] -> enc_b: conv0 5x5 s2      -> [N, c, 16, 16]   (private; BN over the B batch)
    concat [2N, c, 16, 16] -> enc_shared: conv1 5x5 s2        -> [2N, 2c, 8, 8]   (shared; BN over A and B)
                                          conv2 8x8 s1 valid  -> [2N, 4c, 1, 1]
                                          conv3 1x1           -> [2N, 8c, 1, 1]
                           -> mu, sd heads (1x1, sd = softplus) [2N, 8c, 1, 1];  z = mu + sd * eps (train)
    z -> dec_shared: deconv0 4x4 s2 -> [2N, 8c, 4, 4] -> deconv1 -> [2N, 4c, 8, 8] -> deconv2 -> [2N, 2c, 16, 16]
      -> dec_a: deconv3 4x4 s2 -> [2N, c, 32, 32] -> 1x1 conv + tanh -> [2N, nc_a, 32, 32]  (x_aa ; x_ba)
      -> dec_b: the same with nc_b                                  -> [2N, nc_b, 32, 32]  (x_ab ; x_bb)

Each conv/deconv is followed by batch norm without scale, a learned bias and LeakyReLU(0.01). ``xy`` are two
coordinate channels (row, column) in [-1, 1), concatenated inside the network, so callers pass plain images.

Discriminator (conv0 private, conv1-3 shared, one trunk for the GAN head and the class head)::

    x [N, nc, 32, 32] -> conv0 5x5 + ReLU + maxpool 2 -> [N, d, 16, 16]  (private per domain)
      -> conv1 -> [N, 2d, 8, 8] -> conv2 -> [N, 4d, 4, 4] -> conv3 -> [N, 8d, 2, 2]   (shared)
      -> gan_head 2x2 conv -> [N, 2] logits (1 = real)  |  cls_head 2x2 conv -> [N, n_classes] logits

Dropout 0.1 / 0.3 / 0.5 / 0.5 after conv0..conv3 on the head paths; the trunk features used for feature
matching are read without dropout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unitgan.models.layers import Dropout

IMAGE_SIZE = 32  # the only input size these networks take (conv2 8x8 valid reduces 8x8 to 1x1)
DIS_DROPOUT = (0.1, 0.3, 0.5, 0.5)  # after conv0..conv3 of CoDis32x32 on the head paths


def coordinate_channels(n: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """Row and column coordinates ``(i - size/2) / (size/2)`` in [-1, 1): [n, 2, size, size]."""
    r = (torch.arange(size, device=like.device, dtype=like.dtype) - size / 2) / (size / 2)  # [size]
    rows, cols = torch.meshgrid(r, r, indexing="ij")  # [size, size] each
    return torch.stack((rows, cols))[None].expand(n, 2, size, size)


class BNBias(nn.Module):
    """Batch norm without a learned scale, then a learned per-channel bias (the authors' BN + bias layer)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W]
        return self.norm(x) + self.bias[None, :, None, None]


def conv_bn_lrelu(c_in: int, c_out: int, kernel: int, stride: int, padding: int, transpose: bool = False) -> nn.Module:
    """(de)conv -> BN over the whole batch given -> learned bias -> LeakyReLU(0.01)."""
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    return nn.Sequential(conv(c_in, c_out, kernel, stride, padding), BNBias(c_out), nn.LeakyReLU(0.01))


@dataclass
class CoVAEOutputs:
    """One joint pass over (x_a, x_b): reconstructions, translations and the latent distribution."""

    x_aa: torch.Tensor  # [N, nc_a, 32, 32] reconstruction of x_a
    x_ba: torch.Tensor  # [N, nc_a, 32, 32] x_b translated to A
    x_ab: torch.Tensor  # [N, nc_b, 32, 32] x_a translated to B
    x_bb: torch.Tensor  # [N, nc_b, 32, 32] reconstruction of x_b
    mu: torch.Tensor  # [2N, 8c, 1, 1] latent means, A rows first
    sd: torch.Tensor  # [2N, 8c, 1, 1] latent standard deviations (softplus, > 0)


class CoVAE32x32(nn.Module):
    """Coupled VAE generator for 32x32 digits (see the module docstring for the layers and shapes)."""

    def __init__(self, ch: int = 96, input_nc_a: int = 1, input_nc_b: int = 1, head_std: float = 0.02):
        """
        Args:
            ch: base width (the paper's ``gen_ch`` 96); the latent has ``8 * ch`` channels.
            input_nc_a: image channels of domain A (1 grey, 3 colour).
            input_nc_b: image channels of domain B.
            head_std: std of the mu / sd heads' initial weights (0.02 the authors'; see :meth:`reset_parameters`).
        """
        super().__init__()
        self.head_std = head_std
        c = ch
        self.enc_a = conv_bn_lrelu(input_nc_a + 2, c, 5, 2, 2)  # +2: the coordinate channels
        self.enc_b = conv_bn_lrelu(input_nc_b + 2, c, 5, 2, 2)
        self.enc_shared = nn.Sequential(
            conv_bn_lrelu(c, 2 * c, 5, 2, 2), conv_bn_lrelu(2 * c, 4 * c, 8, 1, 0), conv_bn_lrelu(4 * c, 8 * c, 1, 1, 0)
        )
        self.latent_ch = 8 * c
        self.mu_head = nn.Conv2d(8 * c, 8 * c, 1)
        self.sd_head = nn.Conv2d(8 * c, 8 * c, 1)  # softplus of it is the standard deviation
        self.dec_shared = nn.Sequential(
            conv_bn_lrelu(8 * c, 8 * c, 4, 2, 0, transpose=True),
            conv_bn_lrelu(8 * c, 4 * c, 4, 2, 1, transpose=True),
            conv_bn_lrelu(4 * c, 2 * c, 4, 2, 1, transpose=True),
        )
        self.dec_a = nn.Sequential(
            conv_bn_lrelu(2 * c, c, 4, 2, 1, transpose=True), nn.Conv2d(c, input_nc_a, 1), nn.Tanh()
        )
        self.dec_b = nn.Sequential(
            conv_bn_lrelu(2 * c, c, 4, 2, 1, transpose=True), nn.Conv2d(c, input_nc_b, 1), nn.Tanh()
        )
        self.size_multiple = IMAGE_SIZE  # inputs must be exactly IMAGE_SIZE x IMAGE_SIZE
        self.fixed_size = IMAGE_SIZE  # translators resize other sizes to it and back
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' init, in their order: the VAE head draws its weights and biases from N(0, 0.002) when it is
        built, then the trainer's Gaussian init sets every conv weight, the heads' included, to N(0, 0.02). So the
        mu / sd heads end with weights N(0, 0.02) and biases N(0, 0.002); the other convs keep torch's default
        biases. Another ``head_std`` (``model.vae_head_std``): every conv N(0, 0.02) first, then the heads'
        weights N(0, head_std) and biases N(0, 0.002), the draws the DA results in docs/results/da_digits.md were
        measured with (head_std 0.002)."""
        authors = self.head_std == 0.02
        if authors:
            self._reset_heads(0.002)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
        if not authors:
            self._reset_heads(self.head_std)

    def _reset_heads(self, weight_std: float) -> None:
        for head in (self.mu_head, self.sd_head):
            nn.init.normal_(head.weight, 0.0, weight_std)
            nn.init.normal_(head.bias, 0.0, 0.002)

    def _private_encode(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """[N, nc, 32, 32] -> [N, c, 16, 16] through the domain's private conv0, coordinates appended."""
        if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"CoVAE32x32 takes {IMAGE_SIZE}x{IMAGE_SIZE} images, got {tuple(x.shape[-2:])}")
        x = torch.cat((x, coordinate_channels(x.shape[0], IMAGE_SIZE, x)), 1)  # [N, nc + 2, 32, 32]
        return (self.enc_a if domain == "a" else self.enc_b)(x)

    def latent(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shared encoder layers and heads: [M, c, 16, 16] -> (mu, sd), each [M, 8c, 1, 1]."""
        h = self.enc_shared(h)
        return self.mu_head(h), F.softplus(self.sd_head(h))

    def encode_dist(self, x: torch.Tensor, domain: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One domain alone (BN over this batch): [N, nc, 32, 32] -> (mu, sd), each [N, 8c, 1, 1]."""
        return self.latent(self._private_encode(x, domain))

    def encode(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """Latent mean (the test-time code): [N, nc, 32, 32] -> mu [N, 8c, 1, 1]."""
        return self.encode_dist(x, domain)[0]

    def decode(self, z: torch.Tensor, domain: str) -> torch.Tensor:
        """[N, 8c, 1, 1] -> image [N, nc_domain, 32, 32] in [-1, 1]."""
        return (self.dec_a if domain == "a" else self.dec_b)(self.dec_shared(z))

    def translate(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        """Test-time translation with z = mu. ``direction`` is 'a2b' or 'b2a'."""
        src, dst = ("a", "b") if direction == "a2b" else ("b", "a")
        return self.decode(self.encode(x, src), dst)

    def forward_pair(self, x_a: torch.Tensor, x_b: torch.Tensor, sample: bool = True) -> CoVAEOutputs:
        """The training pass: both domains in one batch through the shared layers (BN over A and B together).

        x_a [N, nc_a, 32, 32], x_b [N, nc_b, 32, 32] (same N). ``sample``: z = mu + sd * eps, else z = mu.
        """
        if x_a.shape[0] != x_b.shape[0]:
            raise ValueError(f"x_a and x_b need the same batch size, got {x_a.shape[0]} and {x_b.shape[0]}")
        h = torch.cat((self._private_encode(x_a, "a"), self._private_encode(x_b, "b")), 0)  # [2N, c, 16, 16]
        mu, sd = self.latent(h)  # [2N, 8c, 1, 1]
        z = mu + sd * torch.randn_like(sd) if sample else mu
        h = self.dec_shared(z)  # [2N, 2c, 16, 16]
        n = x_a.shape[0]
        x_aa, x_ba = self.dec_a(h).split(n, 0)  # BN of the private deconv3 over all 2N rows
        x_ab, x_bb = self.dec_b(h).split(n, 0)
        return CoVAEOutputs(x_aa, x_ba, x_ab, x_bb, mu, sd)

    def forward(self, x: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        return self.translate(x, direction)

    # The generator interface (unitgan.models.Generator) that translators read: unimodal, no remembered styles.
    style_dim = 0

    def bank_problem(self) -> str | None:
        return None

    def style_banks(self) -> dict[str, torch.Tensor]:
        return {}


class CoDis32x32(nn.Module):
    """Coupled discriminator + classifier for 32x32 digits (see the module docstring)."""

    def __init__(self, ch: int = 64, input_nc_a: int = 1, input_nc_b: int = 1, n_classes: int = 10):
        """
        Args:
            ch: base width (the paper's ``dis_ch`` 64); the trunk ends with ``8 * ch`` channels at 2x2.
            input_nc_a: image channels of domain A.
            input_nc_b: image channels of domain B.
            n_classes: outputs of the class head.
        """
        super().__init__()
        self.dis_a = self._block(input_nc_a, ch)  # private conv0 of each domain
        self.dis_b = self._block(input_nc_b, ch)
        self.shared = nn.ModuleList([self._block(ch, 2 * ch), self._block(2 * ch, 4 * ch), self._block(4 * ch, 8 * ch)])
        self.drop = nn.ModuleList([Dropout(p) for p in DIS_DROPOUT])  # masks in NCHW order (channels_last: same masks)
        self.gan_head = nn.Conv2d(8 * ch, 2, 2)  # [N, 8d, 2, 2] -> [N, 2, 1, 1]
        self.cls_head = nn.Conv2d(8 * ch, n_classes, 2)
        self.feat_ch = 8 * ch
        for m in self.modules():  # the authors' init: Xavier uniform with gain sqrt(2), bias 0.1
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight, gain=2**0.5)
                nn.init.constant_(m.bias, 0.1)

    @staticmethod
    def _block(c_in: int, c_out: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2))

    def trunk(self, x: torch.Tensor, domain: str, dropout: bool) -> torch.Tensor:
        """[N, nc, 32, 32] -> features [N, 8d, 2, 2]; dropout layers only act with ``dropout`` in train mode."""
        h = (self.dis_a if domain == "a" else self.dis_b)(x)
        if dropout:
            h = self.drop[0](h)
        for layer, drop in zip(self.shared, self.drop[1:], strict=True):
            h = layer(h)
            if dropout:
                h = drop(h)
        return h

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """GAN logits of both batches [Na + Nb, 2] (A rows first; dropout path) and the trunk features of each
        [Na, 8d, 2, 2], [Nb, 8d, 2, 2] (no dropout), as the authors' D call returns them."""
        logits = torch.cat((self.trunk(x_a, "a", True), self.trunk(x_b, "b", True)), 0)
        logits = self.gan_head(logits).flatten(1)  # [Na + Nb, 2]
        return logits, self.trunk(x_a, "a", False), self.trunk(x_b, "b", False)

    def classify(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """Class logits [N, n_classes] through the domain's conv0 and the shared trunk (dropout path)."""
        return self.cls_head(self.trunk(x, domain, True)).flatten(1)
