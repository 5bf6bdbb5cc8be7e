"""The MUNIT translation network: per domain a content encoder, a style encoder and an AdaIN decoder.

An image splits into a content code (spatial, meant to be common to both domains) and a style code (a small
vector, specific to its domain). Translation A -> B keeps the content of ``x_a`` and takes a style of B:
drawn from N(0, I) (many outputs for one input) or encoded from an example image of B.

    x_a -> enc_c_a -> c_a [N, C, h, w]        x_a -> enc_s_a -> s_a [N, style_dim]
    (c, s_b) -> mlp_b(s_b) = AdaIN means and stds -> dec_b (AdaIN residual blocks -> upsampling) -> x_?b

Layer kinds come from ``ModelConfig`` as for UNIT (``norm`` in the content encoder, ``up_norm`` and
``upsample`` in the decoder's upsampling, ``out_kernel`` of the last conv, ``activ``, ``pad_type``, ``init``);
the MUNIT paper's are instance norm, layer norm, nearest + conv 5x5, 7, relu, reflect and kaiming.
The downsampling convs are 4x4 stride 2, as in the MUNIT paper.

Weight sharing (``model.n_shared``, UNIT's shared-latent constraint, which MUNIT does not have): the last
``n_shared`` residual blocks of the two content encoders are one module, ``enc_c_shared``. The decoders stay
private: their residual blocks are where AdaIN injects the domain's style, and UNIT's shared generator
blocks have no counterpart once the content code is already common to both domains.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unitgan.config import ModelConfig
from unitgan.models.layers import ConvBlock, ResBlock, UpBlock, init_weights, make_activation, set_layer_norm


def adain(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance norm: normalise each channel of each sample, then scale by ``std`` and shift by
    ``mean``. ``x`` [N, C, H, W]; ``mean``, ``std`` [N, C] (from the style code, per sample)."""
    return F.instance_norm(x, eps=eps) * std[:, :, None, None] + mean[:, :, None, None]


MAX_STYLE_ABS = 1e4  # style codes are about N(0, I); a remembered one beyond this is not an encoder's output


def style_bank_problem(bank: torch.Tensor, style_dim: int, max_rows: int) -> str | None:
    """Why ``bank`` cannot be a bank of remembered style codes [M, style_dim] with 1 <= M <= ``max_rows``
    (``model.style_bank``): its shape, a NaN or infinity, or an entry beyond +-:data:`MAX_STYLE_ABS` (a
    finite 1e30 decodes to blank images as surely as NaN); None when it can."""
    if bank.ndim != 2 or bank.shape[1] != style_dim:
        return f"must be rows of {style_dim} numbers (style_dim), got shape {tuple(bank.shape)}"
    if not 1 <= len(bank) <= max_rows:
        return f"must hold 1 to {max_rows} rows (model.style_bank), got {len(bank)}"
    if not bool(torch.isfinite(bank).all()):
        return "holds NaN or infinite values"
    largest = float(bank.abs().max())
    if largest > MAX_STYLE_ABS:
        return f"holds a value of magnitude {largest:.3g}, beyond {MAX_STYLE_ABS:g} (style codes are about N(0, 1))"
    return None


def spread_rows(bank: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices [n] of ``n`` rows of ``bank`` [M, D] that spread over it: k-means++ seeding. The first row is drawn
    uniformly; each next one with probability proportional to its squared distance to the nearest row picked
    so far. So one draw is a uniform random row, and n draws land in n different clusters of styles (the
    looks of a domain) far more often than n uniform draws, which repeat the common looks. After all rows
    with a distance left are used, a new round starts uniformly. On the bank's device, with ``generator``
    (on that device) for a reproducible pick."""
    b = bank.float()
    picked: list[torch.Tensor] = []
    d2: torch.Tensor | None = None  # [M] squared distance of each row to the nearest pick of this round
    for _ in range(n):
        if d2 is None or not bool(d2.sum() > 0):  # a new round: nothing picked yet, or every row at distance 0
            j = torch.randint(len(b), (1,), generator=generator, device=b.device)
            d2 = None
        else:
            j = torch.multinomial(d2, 1, generator=generator)
        picked.append(j)
        dist = (b - b[j]).square().sum(1)
        d2 = dist if d2 is None else torch.minimum(d2, dist)
    return torch.cat(picked) if picked else torch.zeros(0, dtype=torch.long, device=b.device)


class AdaINResBlock(nn.Module):
    """x + conv3x3 -> AdaIN -> activ -> conv3x3 -> AdaIN. Takes its AdaIN parameters as an input."""

    def __init__(self, ch: int, activ: str, pad_type: str):
        super().__init__()
        self.ch = ch
        self.conv1 = ConvBlock(ch, ch, 3, 1, "none", "none", pad_type)
        self.conv2 = ConvBlock(ch, ch, 3, 1, "none", "none", pad_type)
        self.act = make_activation(activ)
        self.n_params = 4 * ch  # mean and std of two AdaIN layers

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``x`` [N, C, H, W], ``params`` [N, 4C] = (mean1, std1, mean2, std2) -> [N, C, H, W]."""
        m1, s1, m2, s2 = params.split(self.ch, dim=1)
        h = self.act(adain(self.conv1(x), m1, s1))
        return x + adain(self.conv2(h), m2, s2)


class MLP(nn.Sequential):
    """``n_layers`` linear layers, ``activ`` between them (not after the last)."""

    def __init__(self, in_dim: int, out_dim: int, width: int, n_layers: int, activ: str):
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(n_layers - 1):
            layers += [nn.Linear(dim, width), make_activation(activ)]
            dim = width
        layers.append(nn.Linear(dim, out_dim))
        super().__init__(*layers)


def content_res_block(cfg: ModelConfig, ch: int) -> ResBlock:
    """A residual block of the content encoder (``norm``, ``activ``, ``lrelu_slope``, ``norm_bias``)."""
    return ResBlock(ch, cfg.norm, cfg.activ, cfg.pad_type, slope=cfg.lrelu_slope, norm_bias=cfg.norm_bias)


class ContentEncoderPrivate(nn.Module):
    """conv7x7 s1 -> n_down x conv4x4 s2 (channels doubling) -> private residual blocks."""

    def __init__(self, cfg: ModelConfig, in_ch: int):
        super().__init__()
        c = cfg.ch
        slope, bias = cfg.lrelu_slope, cfg.norm_bias
        layers: list[nn.Module] = [ConvBlock(in_ch, c, 7, 1, cfg.norm, cfg.activ, cfg.pad_type, slope, bias)]
        for _ in range(cfg.n_down):
            layers.append(ConvBlock(c, 2 * c, 4, 2, cfg.norm, cfg.activ, cfg.pad_type, slope, bias))
            c *= 2
        layers += [content_res_block(cfg, c) for _ in range(cfg.n_res - cfg.n_shared)]
        self.net = nn.Sequential(*layers)
        self.out_ch = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, in_ch, H, W] -> [N, C, H/2^d, W/2^d]
        return self.net(x)


class StyleEncoder(nn.Module):
    """conv7x7 -> two conv4x4 s2 doubling the channels -> (n_down - 2) conv4x4 s2 -> global average pool ->
    conv1x1 to ``style_dim``. No norm: instance norm would remove the very statistics that make the style."""

    def __init__(self, cfg: ModelConfig, in_ch: int):
        super().__init__()
        c = cfg.ch
        layers: list[nn.Module] = [ConvBlock(in_ch, c, 7, 1, "none", cfg.activ, cfg.pad_type)]
        for i in range(cfg.style_n_down):
            out = 2 * c if i < 2 else c
            layers.append(ConvBlock(c, out, 4, 2, "none", cfg.activ, cfg.pad_type))
            c = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, cfg.style_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, in_ch, H, W] -> [N, style_dim]
        return self.net(x).flatten(1)


class Decoder(nn.Module):
    """AdaIN residual blocks -> n_down x upsampling (channels halving) -> conv to image -> tanh, with an MLP
    that maps the style code to every AdaIN mean and std of the residual blocks."""

    def __init__(self, cfg: ModelConfig, out_ch: int):
        super().__init__()
        c = cfg.ch * 2**cfg.n_down
        self.res = nn.ModuleList([AdaINResBlock(c, cfg.activ, cfg.pad_type) for _ in range(cfg.n_res)])
        self.n_adain = sum(b.n_params for b in self.res)
        self.mlp = MLP(cfg.style_dim, self.n_adain, cfg.mlp_dim, 3, cfg.activ)
        layers: list[nn.Module] = []
        for _ in range(cfg.n_down):
            layers.append(UpBlock(c, c // 2, cfg.upsample, cfg.up_norm, cfg.activ, cfg.pad_type))
            c //= 2
        layers.append(ConvBlock(c, out_ch, cfg.out_kernel, 1, "none", "tanh", cfg.pad_type))
        self.up = nn.Sequential(*layers)

    def forward(self, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """content [N, C, h, w], style [N, style_dim] -> image [N, out_ch, h*2^d, w*2^d] in [-1, 1]."""
        params = self.mlp(s)  # [N, n_adain]
        h = c
        for block, p in zip(self.res, params.split([b.n_params for b in self.res], dim=1), strict=True):
            h = block(h, p)
        return self.up(h)


class MUNITGenerator(nn.Module):
    """Content encoders, style encoders and decoders of both domains, with the shared content blocks built once.

    Attributes: ``enc_c_a``, ``enc_c_b`` (private content encoder parts), ``enc_c_shared``, ``enc_s_a``,
    ``enc_s_b`` (style encoders), ``dec_a``, ``dec_b`` (decoders, each with its MLP).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.enc_c_a = ContentEncoderPrivate(cfg, cfg.input_nc_a)
        self.enc_c_b = ContentEncoderPrivate(cfg, cfg.input_nc_b)
        c = self.enc_c_a.out_ch
        self.enc_c_shared = nn.Sequential(*[content_res_block(cfg, c) for _ in range(cfg.n_shared)])
        self.enc_s_a = StyleEncoder(cfg, cfg.input_nc_a)
        self.enc_s_b = StyleEncoder(cfg, cfg.input_nc_b)
        self.dec_a = Decoder(cfg, cfg.input_nc_a)
        self.dec_b = Decoder(cfg, cfg.input_nc_b)
        self.content_ch = c
        self.style_dim = cfg.style_dim
        self.fixed_size = 0  # any input size (padded to size_multiple)
        # the content encoder halves n_down times; the style encoder's extra stride-2 convs end in a global
        # pool, which takes any size, so only the content path sets the multiple
        self.size_multiple = 2**cfg.n_down
        init_weights(self, cfg.init)
        set_layer_norm(self, cfg.layer_norm)
        if cfg.style_prior == "bank":  # the style codes of recent real training images, per domain (a FIFO)
            self.register_buffer("style_bank_a", torch.zeros(cfg.style_bank, cfg.style_dim))
            self.register_buffer("style_bank_b", torch.zeros(cfg.style_bank, cfg.style_dim))
            self.register_buffer("style_bank_count", torch.zeros(2, dtype=torch.long))  # rows filled (a, b)

    def encode_content(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """[N, input_nc, H, W] -> content [N, content_ch, H/2^d, W/2^d]."""
        enc = self.enc_c_a if domain == "a" else self.enc_c_b
        return self.enc_c_shared(enc(x))

    def encode_style(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """[N, input_nc, H, W] -> style [N, style_dim]."""
        return (self.enc_s_a if domain == "a" else self.enc_s_b)(x)

    def encode(self, x: torch.Tensor, domain: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(content, style) of images of ``domain`` ('a' or 'b')."""
        return self.encode_content(x, domain), self.encode_style(x, domain)

    def decode(self, c: torch.Tensor, s: torch.Tensor, domain: str) -> torch.Tensor:
        """content [N, content_ch, h, w] + style [N, style_dim] -> image of ``domain`` in [-1, 1]."""
        return (self.dec_a if domain == "a" else self.dec_b)(c, s)

    @torch.no_grad()
    def remember_styles(self, s: torch.Tensor, domain: str) -> None:
        """Append the style codes ``s`` [N, style_dim] of real images of ``domain`` to its bank (oldest rows out);
        nothing when ``model.style_prior`` is normal. Tensor operations only (no host sync)."""
        if self.cfg.style_prior != "bank":
            return
        bank = self.style_bank_a if domain == "a" else self.style_bank_b
        s = s.detach()[-len(bank) :].to(bank.dtype)
        bank.copy_(torch.cat([bank[len(s) :], s]))
        i = 0 if domain == "a" else 1
        self.style_bank_count[i] = (self.style_bank_count[i] + len(s)).clamp(max=len(bank))

    def style_bank(self, domain: str) -> torch.Tensor | None:
        """The remembered style codes of ``domain`` [M, style_dim] (M <= model.style_bank); None when
        ``model.style_prior`` is normal or nothing was remembered (then draws come from N(0, I))."""
        if self.cfg.style_prior != "bank":
            return None
        bank = self.style_bank_a if domain == "a" else self.style_bank_b
        n = int(self.style_bank_count[0 if domain == "a" else 1])
        return bank[len(bank) - n :] if n else None

    def bank_problem(self) -> str | None:
        """Why the loaded bank buffers cannot be remembered styles (a count outside 0..``model.style_bank``, or
        a filled bank that :func:`style_bank_problem` refuses), naming the tensor; None when they can."""
        if self.cfg.style_prior != "bank":
            return None
        counts = self.style_bank_count.tolist()
        if not all(0 <= n <= self.cfg.style_bank for n in counts):
            return f"tensor 'style_bank_count' is {counts}, outside 0..{self.cfg.style_bank} (model.style_bank)"
        for d in ("a", "b"):
            bank = self.style_bank(d)
            problem = None if bank is None else style_bank_problem(bank.float(), self.style_dim, self.cfg.style_bank)
            if problem:
                return f"tensor 'style_bank_{d}' {problem}"
        return None

    def style_banks(self) -> dict[str, torch.Tensor]:
        """Every domain's remembered style codes as float32 on the CPU, {domain: [M, style_dim]}; empty when
        ``model.style_prior`` is normal or nothing was remembered. What translators and exports carry."""
        return {d: bank.detach().float().cpu() for d in ("a", "b") if (bank := self.style_bank(d)) is not None}

    def sample_style(
        self, n: int, like: torch.Tensor, generator: torch.Generator | None = None, domain: str | None = None
    ) -> torch.Tensor:
        """n style codes: [n, style_dim], on the device and dtype of ``like``. From the prior N(0, I), or, with
        ``domain`` and ``model.style_prior=bank``, n rows of that domain's bank picked by :func:`spread_rows`
        (training always draws from N(0, I), as MUNIT; ``domain`` is given at test time).

        ``generator`` (a torch.Generator on that device) makes the draw reproducible."""
        bank = self.style_bank(domain) if domain is not None else None
        if bank is not None:
            bank = bank.to(like.device)
            return bank[spread_rows(bank, n, generator)].to(like.dtype)
        s = torch.randn(n, self.style_dim, generator=generator, device=like.device, dtype=torch.float32)
        return s.to(like.dtype)

    def translate(
        self,
        x: torch.Tensor,
        direction: str,
        style: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Translate ``x`` [N, C, H, W]; ``direction`` is 'a2b' or 'b2a'.

        ``style`` [N, style_dim] or [1, style_dim] (one style for the batch) is a style of the target domain,
        e.g. ``encode_style(ref, dst)``; None draws one per image from N(0, I) with ``generator``."""
        src, dst = ("a", "b") if direction == "a2b" else ("b", "a")
        c = self.encode_content(x, src)
        if style is None:
            style = self.sample_style(x.shape[0], x, generator, domain=dst)
        return self.decode(c, style.expand(x.shape[0], -1), dst)

    def forward(self, x: torch.Tensor, style: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        return self.translate(x, direction, style)

    def weight_prefixes(self, directions: tuple[str, ...]) -> tuple[str, ...]:
        """State-dict key prefixes of the parts ``directions`` ('a2b', 'b2a') use: the shared content blocks, the
        source's content encoder, the target's decoder and the target's style encoder."""
        parts = {"enc_c_shared."}
        for d in directions:
            src, dst = d[0], d[2]
            parts |= {f"enc_c_{src}.", f"dec_{dst}.", f"enc_s_{dst}."}
        return tuple(sorted(parts))
