"""The UNIT translation network: two encoders and two generators around a shared latent space.

Weight sharing (the paper's shared-latent constraint): the last ``n_shared`` residual blocks of the two
encoders are one module, ``enc_shared``, and the first ``n_shared`` residual blocks of the two generators
are one module, ``dec_shared``. Both domains call the same Parameter objects, so both send gradients to them.

    x_a -> enc_a.private -> enc_shared -> mu_a  (z_a = mu_a + N(0, I) while training, mu_a at test)
    z   -> dec_shared -> dec_a.private -> x_?a  |  dec_shared -> dec_b.private -> x_?b
"""

from __future__ import annotations

import torch
from torch import nn

from unitgan.config import ModelConfig
from unitgan.models.layers import ConvBlock, ResBlock, UpBlock, init_weights, or_default, set_layer_norm


def res_block(cfg: ModelConfig, ch: int) -> ResBlock:
    """One encoder/generator residual block as ``cfg`` sets it (``res_norm``, ``res_activ``, ``res_dropout``)."""
    return ResBlock(
        ch,
        or_default(cfg.res_norm, cfg.norm),
        or_default(cfg.res_activ, cfg.activ),
        cfg.pad_type,
        cfg.res_dropout,
        cfg.lrelu_slope,
        cfg.norm_bias,
    )


class EncoderPrivate(nn.Module):
    """conv7x7 s1 -> n_down x conv3x3 s2 (channels doubling) -> private residual blocks."""

    def __init__(self, cfg: ModelConfig, in_ch: int):
        super().__init__()
        c = cfg.ch
        slope, bias = cfg.lrelu_slope, cfg.norm_bias
        first_norm, first_activ = or_default(cfg.first_norm, cfg.norm), or_default(cfg.first_activ, cfg.activ)
        layers: list[nn.Module] = [ConvBlock(in_ch, c, 7, 1, first_norm, first_activ, cfg.pad_type, slope, bias)]
        for _ in range(cfg.n_down):
            layers.append(ConvBlock(c, 2 * c, 3, 2, cfg.norm, cfg.activ, cfg.pad_type, slope, bias))
            c *= 2
        layers += [res_block(cfg, c) for _ in range(cfg.n_res - cfg.n_shared)]
        self.net = nn.Sequential(*layers)
        self.out_ch = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, in_ch, H, W] -> [N, C, H/2^d, W/2^d]
        return self.net(x)


class DecoderPrivate(nn.Module):
    """private residual blocks -> n_down x upsampling (channels halving) -> conv to image -> tanh."""

    def __init__(self, cfg: ModelConfig, out_ch: int):
        super().__init__()
        c = cfg.ch * 2**cfg.n_down
        layers: list[nn.Module] = [res_block(cfg, c) for _ in range(cfg.n_res - cfg.n_shared)]
        for _ in range(cfg.n_down):
            up = UpBlock(c, c // 2, cfg.upsample, cfg.up_norm, cfg.activ, cfg.pad_type, cfg.lrelu_slope, cfg.norm_bias)
            layers.append(up)
            c //= 2
        layers += [ConvBlock(c, out_ch, cfg.out_kernel, 1, "none", "tanh", cfg.pad_type)]
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [N, C, h, w] -> [N, out_ch, H, W] in [-1, 1]
        return self.net(h)


class UNITGenerator(nn.Module):
    """Encoders and generators of both domains, with the shared blocks built once.

    Attributes follow the paper: ``enc_a``, ``enc_b`` (private encoder parts), ``enc_shared``,
    ``dec_shared``, ``dec_a``, ``dec_b`` (private generator parts).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.enc_a = EncoderPrivate(cfg, cfg.input_nc_a)
        self.enc_b = EncoderPrivate(cfg, cfg.input_nc_b)
        c = self.enc_a.out_ch
        self.enc_shared = nn.Sequential(*[res_block(cfg, c) for _ in range(cfg.n_shared)])
        self.dec_shared = nn.Sequential(*[res_block(cfg, c) for _ in range(cfg.n_shared)])
        self.dec_a = DecoderPrivate(cfg, cfg.input_nc_a)
        self.dec_b = DecoderPrivate(cfg, cfg.input_nc_b)
        self.latent_ch = c
        self.size_multiple = 2**cfg.n_down
        init_weights(self, cfg.init)
        set_layer_norm(self, cfg.layer_norm)
        if cfg.tied_init:  # B's private layers start as A's: x_ab = x_aa until the two sides learn apart
            self.enc_b.load_state_dict(self.enc_a.state_dict())
            self.dec_b.load_state_dict(self.dec_a.state_dict())

    def encode(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """Latent mean: [N, input_nc, H, W] -> mu [N, latent_ch, H/2^d, W/2^d]."""
        enc = self.enc_a if domain == "a" else self.enc_b
        return self.enc_shared(enc(x))

    def decode(self, z: torch.Tensor, domain: str) -> torch.Tensor:
        """[N, latent_ch, h, w] -> image [N, input_nc, h*2^d, w*2^d] in [-1, 1]."""
        dec = self.dec_a if domain == "a" else self.dec_b
        return dec(self.dec_shared(z))

    @staticmethod
    def sample(mu: torch.Tensor) -> torch.Tensor:
        """z = mu + eta, eta ~ N(0, I): the unit-variance Gaussian latent used while training. This is
        version_02's noise layer after the shared encoder blocks (``GaussianNoiseLayer``: unscaled
        ``randn``, so std 1, added in training mode only)."""
        return mu + torch.randn_like(mu)

    def translate(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        """Test-time translation with z = mu. ``direction`` is 'a2b' or 'b2a'."""
        src, dst = ("a", "b") if direction == "a2b" else ("b", "a")
        return self.decode(self.encode(x, src), dst)

    def forward(self, x: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        return self.translate(x, direction)

    # The generator interface (unitgan.models.Generator) that translators and exports read.
    style_dim = 0  # unimodal: no style code
    fixed_size = 0  # any input size (padded to size_multiple)

    def bank_problem(self) -> str | None:
        """None: a UNIT generator holds no bank of remembered styles."""
        return None

    def style_banks(self) -> dict[str, torch.Tensor]:
        """{}: no remembered styles."""
        return {}

    def weight_prefixes(self, directions: tuple[str, ...]) -> tuple[str, ...]:
        """State-dict key prefixes of the parts ``directions`` ('a2b', 'b2a') use: the shared blocks, the source's
        encoder and the target's generator."""
        parts = {"enc_shared.", "dec_shared."}
        for d in directions:
            parts |= {"enc_a.", "dec_b."} if d == "a2b" else {"enc_b.", "dec_a."}
        return tuple(sorted(parts))
