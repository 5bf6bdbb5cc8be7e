"""Typed configuration: dataclasses, YAML loading and ``key=value`` overrides.

Every key is checked: unknown keys, wrong types and values outside a fixed set of choices raise
:class:`UnitganError` with a message naming the key (``model.norm``) and what would be valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from unitgan.errors import UnitganError

Norm = Literal["instance", "batch", "layer", "none"]
Activation = Literal["lrelu", "relu", "tanh", "none"]
NormOrSame = Literal["same", "instance", "batch", "layer", "none"]  # same = the value of model.norm
ActivationOrSame = Literal["same", "lrelu", "relu", "tanh", "none"]  # same = the value of model.activ
DisDownsample = Literal["avgpool", "gaussian"]
PadType = Literal["zero", "reflect"]
Upsample = Literal["deconv", "nearest"]
FeatUpdate = Literal["dis", "gen", "both"]
DomainPath = Literal["a", "b"]  # a first layer of a DA discriminator: the source's (a) or the target's (b)
CompileScope = Literal["modules", "phases"]
GanType = Literal["lsgan", "nsgan", "hinge"]
Init = Literal["gaussian", "kaiming", "xavier", "orthogonal", "default"]
InitOrSame = Literal["same", "gaussian", "kaiming", "xavier", "orthogonal", "default"]  # same = model.init
LayerNormKind = Literal["group", "nvlabs"]
StylePrior = Literal["normal", "bank"]
Precision = Literal["fp32", "bf16", "fp16"]
UpdateOrder = Literal["simultaneous", "alternating"]
KlOn = Literal["mu", "z"]  # the latent the UNIT KL terms are computed on
UpsampleImpl = Literal["auto", "direct", "subpixel"]
Arch = Literal["unit", "munit", "covae32"]  # network families that unitgan.models.build_generator knows


@dataclass
class ModelConfig:
    """Encoders, generators and discriminators (see ``unitgan.models``)."""

    arch: Arch = "unit"  # network family (unitgan.models.build_generator): unit = the UNIT encoders/generators,
    #   munit = MUNIT content/style encoders and AdaIN decoders (style_* and mlp_dim below; losses in munit)
    input_nc_a: int = 3  # channels of domain A images (1 = grey, 3 = colour)
    input_nc_b: int = 3  # channels of domain B images
    # covae32: std of the initial mu / sd head weights. 0.02 = the authors' (their Gaussian init of every conv runs
    # after the heads' own N(0, 0.002) reset); 0.002 = that reset alone, the init the DA results in
    # docs/results/da_digits.md were measured with (benchmarks/da_digits.py sets it to reproduce them)
    vae_head_std: float = 0.02
    ch: int = 64  # channels after the first encoder convolution
    n_down: int = 2  # stride-2 downsamplings in each encoder (upsamplings in each generator)
    n_res: int = 4  # residual blocks at the end of each encoder / start of each generator
    n_shared: int = 1  # of those, how many are shared between the domains (0 = no weight sharing)
    norm: Norm = "instance"  # norm in the encoder/generator conv blocks (and wherever a key below says same)
    first_norm: NormOrSame = "same"  # norm after the encoder's first (7x7) conv; version_02: none
    res_norm: NormOrSame = "same"  # norm in the residual blocks; version_02 COCOResGen2: instance (conv stack none)
    up_norm: Norm = "instance"  # norm in the generator's upsampling blocks
    activ: Activation = "lrelu"  # activation in the encoder/generator conv blocks (and wherever a key says same)
    first_activ: ActivationOrSame = "same"  # activation after the encoder's first conv; version_02: lrelu
    res_activ: ActivationOrSame = "same"  # activation inside the residual blocks; version_02: relu
    res_dropout: float = 0.0  # dropout after each residual block's second norm, training only (0 = none)
    lrelu_slope: float = 0.2  # negative slope of every LeakyReLU (generators and discriminators); version_02: 0.01
    norm_bias: bool = False  # convs followed by instance/batch norm keep a bias (version_02; the norm cancels it)
    pad_type: PadType = "zero"  # padding of all encoder/generator convolutions
    upsample: Upsample = "deconv"  # deconv = transposed conv 3x3 s2; nearest = nearest x2 + conv 5x5
    out_kernel: int = 1  # kernel of the generator's last conv to image channels
    dis_ch: int = 64  # channels of the first discriminator layer
    dis_n_layers: int = 4  # stride-2 conv layers per discriminator scale
    dis_kernel: int = 3  # kernel of the discriminator convs (3 in version_02, 4 in master)
    dis_first_kernel: int = 0  # kernel of the first discriminator layer (0 = dis_kernel; 7 in COCOSharedDis)
    dis_n_scales: int = 1  # number of image scales judged (halved between scales, see dis_downsample)
    dis_downsample: DisDownsample = "avgpool"  # between scales: avgpool 3x3 s2 | gaussian 3x3 blur, every 2nd pixel
    dis_n_shared: int = 0  # last conv layers (+ the 1x1 head) that dis_a and dis_b share, per scale (0 = none)
    dis_norm: Norm = "none"  # norm in the discriminator
    dis_pad_type: PadType = "zero"  # padding in the discriminator
    dis_spectral_norm: bool = False  # spectral normalisation (Miyato et al. 2018) of every discriminator conv, one
    #   power iteration per forward (not in the paper)
    gan_type: GanType = "lsgan"  # lsgan | nsgan (non-saturating) | hinge
    init: Init = "gaussian"  # weight init: gaussian(0, 0.02) | kaiming | xavier | orthogonal | default
    dis_init: InitOrSame = "same"  # discriminator weight init (same = init); NVlabs MUNIT and UNIT master draw
    #   their discriminators N(0, 0.02) (gaussian) whatever the init of the rest
    tied_init: bool = False  # arch=unit: domain B's private encoder and generator layers start as copies of domain
    #   A's (not in the paper), so a translation starts out as a reconstruction; needs input_nc_a == input_nc_b
    layer_norm: LayerNormKind = "group"  # norm=layer: group = gamma 1, (x - mean) / sqrt(var + eps) (one-group
    #   group norm); nvlabs = gamma ~ U(0, 1), (x - mean) / (unbiased std + eps), NVlabs MUNIT / UNIT master's LayerNorm
    style_dim: int = 8  # arch=munit: length of a style code (drawn from N(0, I) at test time)
    style_n_down: int = 4  # arch=munit: stride-2 convs of the style encoder (the first two double the channels)
    mlp_dim: int = 256  # arch=munit: width of the 3-layer MLP mapping a style code to the AdaIN means and stds
    style_prior: StylePrior = "normal"  # arch=munit: test-time style draws: normal = N(0, I) (MUNIT); bank = the style
    #   codes of the last style_bank real training images of the target domain, kept in the checkpoint; K draws
    #   are spread over them (k-means++ seeding, unitgan.models.spread_rows), so K outputs show K looks
    style_bank: int = 256  # arch=munit, style_prior=bank: style codes remembered per domain


DIFFAUG_POLICIES = ("color", "translation", "cutout")  # unitgan.models.augment, in the order applied


@dataclass
class LossConfig:
    """Weights of the UNIT objective (paper notation in brackets)."""

    gan_w: float = 10.0  # [lambda0] GAN loss on translations
    kl_w: float = 0.1  # [lambda1] KL of the VAE latent
    recon_w: float = 100.0  # [lambda2] L1 reconstruction of x_aa, x_bb
    cyc_kl_w: float = 0.1  # [lambda3] KL of the latent of the translated images
    cyc_recon_w: float = 100.0  # [lambda4] L1 cycle reconstruction of x_aba, x_bab
    # the latent the KL terms (kl_w, cyc_kl_w) are computed on: mu = the encoder's mean (master; the expected value
    # of the noisy version), z = the noisy latent mu + eta that the generators decode (version_02). arch=unit only
    kl_on: KlOn = "mu"
    # DiffAugment policy (unitgan.models.augment): comma-separated color, translation, cutout, applied to every
    # image a discriminator sees, real and translated, in both phases; "" = none (the paper). arch=unit only
    diffaug: str = ""

    def diffaug_policy(self) -> tuple[str, ...]:
        """``diffaug`` as a tuple of policy names ("color,translation" -> ("color", "translation"))."""
        return tuple(w.strip() for w in self.diffaug.split(",") if w.strip())


@dataclass
class OptimConfig:
    """Adam with weight decay and a step learning-rate schedule, for generators and discriminators."""

    lr: float = 1e-4  # learning rate of encoders/generators
    dis_lr: float = 0.0  # learning rate of discriminators; 0 = same as lr
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 1e-4
    lr_step: int = 100_000  # multiply the lr by lr_gamma every lr_step steps (0 = constant)
    lr_gamma: float = 0.5
    grad_clip: float = 0.0  # max grad norm; 0 = off
    fused: bool = False  # fused Adam kernel (CUDA, CPU) / foreach implementation otherwise


@dataclass
class DataConfig:
    """Where the two unpaired domains come from and how they are augmented."""

    source: Literal["folder", "synthetic", "arrays"] = "folder"
    root: str = ""  # folder: data set root holding trainA/ trainB/ testA/ testB/
    a: str = ""  # arrays: domain A as an .npz path or a torchvision name (mnist, usps, svhn, svhn_extra, fashionmnist)
    b: str = ""  # arrays: domain B, same forms
    download: bool = False  # arrays: let torchvision download a named data set (needs internet)
    cache_dir: str = "~/.cache/unitgan"  # torchvision data sets; folder: cached file lists ("" = no cache)
    load_size: int = 0  # resize the shorter side to this before cropping (0 = no resize)
    crop_size: int = 256  # random crop (centre crop at test) to this square size
    flip: bool = True  # random horizontal flip while training
    batch_size: int = 1  # images per domain per step (per process under torchrun)
    num_workers: int = 2  # data-loader worker processes
    pin_memory: bool = True  # pinned host memory when training on a GPU
    bad_images: Literal["error", "skip"] = "error"  # unreadable images: stop naming the file, or skip
    synthetic_train: int = 20_000  # synthetic: scenes per domain in the training split
    synthetic_test: int = 200  # synthetic: held-out scenes (rendered in both styles)
    synthetic_palette: Literal["single", "kind"] = "single"  # synthetic B: one colour, or a colour per shape kind
    synthetic_modes: int = 1  # synthetic B: K (1..6) valid renderings per scene (background and paint), one drawn
    #   per image; 1 = the single rendering; > 1 = a multimodal ground truth (MUNIT)


@dataclass
class TrainConfig:
    """The training loop: length, checkpoints, logging, speed options."""

    steps: int = 500_000  # total optimisation steps (one D step + one G step each)
    seed: int = 0
    out_dir: str = "runs/unit"  # run folder: config, checkpoints, logs, image grids
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: Precision = "fp32"  # autocast precision (bf16/fp16); fp16 uses a grad scaler
    channels_last: bool = (
        False  # NHWC memory layout (GPUs; on CPUs the DA32 presets: CoDis32x32 max pools, docs/performance.md)
    )
    compile: bool = False  # torch.compile the networks
    # what train.compile compiles: each network part on its own (modules), or each training phase as one graph
    # (phases: the E/G loss with the frozen discriminators, and the D loss; norms, pads and activations of
    # several networks fuse across module borders; longer to compile, see docs/performance.md)
    compile_scope: CompileScope = "modules"
    # how model.upsample=nearest computes nearest x2 + conv 5x5 (the same numbers to float rounding): direct =
    # upsample, pad, convolve; subpixel = four 3x3 convolutions of the small map, 2.8x fewer multiply-adds; auto =
    # subpixel from 64x64 output pixels up (1.6-2.1x faster there on a CPU; docs/performance.md), direct below
    upsample_impl: UpsampleImpl = "auto"
    deterministic: bool = False  # deterministic algorithms (bit-exact resume on GPU; slower)
    ckpt_every: int = 10_000  # write a checkpoint every N steps (and at the end)
    keep_last: int = 3  # checkpoints kept on disk
    log_every: int = 100  # write scalars every N steps (the only host-device sync)
    image_every: int = 5_000  # write an image grid every N steps
    image_rows: int = 4  # images per domain in the grid
    threads: int = 0  # CPU threads for torch (0 = torch's default)
    accumulate: int = 1  # micro-batches per step: gradients of K batches summed (global batch x K), DDP sync once
    activation_checkpointing: bool = False  # recompute residual-block activations in backward (large images)
    nonfinite: Literal["error", "skip"] = "error"  # NaN/inf loss: stop naming step and terms, or skip the step
    # order of the two updates of a step: simultaneous = E/G and D gradients at the step's starting weights,
    # translations computed once (D reuses them detached); alternating = the authors' version_02: D update on
    # fresh translations, then the E/G update against the updated D (the generators run twice per step)
    update_order: UpdateOrder = "simultaneous"
    # decay of an exponential moving average of the generator's weights, updated after every E/G update; the
    # average is what translate, export, evaluate, the image grids and the evaluation hooks use (0 = off: they use
    # the trained weights). With da.enabled the classifier (discriminator) is averaged too, and DA accuracy reads
    # it. The decay ramps up as min(ema, (1 + n) / (10 + n)) over the first n updates, so that early averages do
    # not hold the random initial weights. Not in the paper: a named deviation (README, "How training works")
    ema: float = 0.0


@dataclass
class DAConfig:
    """Unsupervised domain adaptation (the paper's digits protocol): A = labelled source, B = unlabelled target.

    The discriminators keep their first ``dis_n_private`` conv layers per domain and share the rest of the
    trunk; a class head on the shared trunk learns from source labels only (target labels are never read in
    training). See ``unitgan.models.da`` and ``unitgan.train.da``.
    """

    enabled: bool = False  # train UNIT-DA instead of plain UNIT (needs data.source=arrays with source labels)
    source_only: bool = False  # baseline: train only the classifier (same trunk) on source labels, no adaptation
    n_classes: int = 10  # classes of the head on the discriminator trunk
    dis_n_private: int = 1  # discriminator conv layers private to each domain; the others are shared
    dropout: float = 0.0  # dropout after each shared discriminator layer
    cls_w: float = 10.0  # classification loss on labelled source images x_a (the paper's weight 10)
    cls_ab_w: float = 0.0  # classification loss on x_ab (source translated to the target) with the source labels
    # covae32: semantic loss on the GENERATOR (CyCADA-style): the class head reads x_ab through the first D layer
    # of domain da.sem_path (a = the classifier trained on labelled source) and the generator is pushed to keep
    # the label of its x_a; D is frozen in that phase, so only the translation learns from it
    sem_ab_w: float = 0.0
    sem_path: DomainPath = "a"
    # covae32: the first D layer through which the class head reads target images (evaluation) and x_ab
    # (da.cls_ab_w): b = the target's own (the authors'); a = the source's, so that ONE classifier learns from
    # x_a and from its translations x_ab (pixel-level adaptation, as CyCADA's task model). The GAN is unchanged.
    target_path: DomainPath = "b"
    # covae32: self-training on the target (not in the paper): from step da.pseudo_start on, the class head also
    # learns, in the D phase, each target image x_b whose predicted class (eval mode, no dropout) has probability
    # >= da.pseudo_threshold, with that prediction as its label (cross-entropy through da.target_path, averaged
    # over the whole batch, so the weight shrinks with the share of confident images). No target label is read.
    pseudo_w: float = 0.0  # 0 = off
    pseudo_threshold: float = 0.95
    pseudo_start: int = 0  # steps before the first pseudo-label
    # with pseudo_w: align the teacher's probabilities before the threshold (ReMixMatch's distribution alignment):
    # scale them by the source's class shares (running mean of y_a) over the shares the teacher has been
    # predicting on the target (running mean), so that a class the teacher stops predicting (e.g. every target 9
    # called 4) is scaled back up instead of being confirmed. Label-free: it assumes the target's class shares
    # are the source's. Running means over about 100 batches, kept in the checkpoint; logs ``pseudo_rarest``
    pseudo_align: bool = False
    # L1 (mean over elements) between trunk features of x_aa and x_ab (same latent z_a), and of x_bb and x_ba;
    # the paper's 1e-4 multiplies a per-image sum of squares over thousands of features, hence 1 here
    feat_w: float = 1.0
    feat_update: FeatUpdate = "dis"  # who pulls those features together: the discriminator (authors' DA code),
    #   the encoders/generators, or both
    recon_fake: bool = True  # discriminators also judge reconstructions x_aa, x_bb as fake (authors' DA code)
    eval_every: int = 0  # log target/source test accuracy every N steps (a learning curve; 0 = only at the end)
    # Digit protocol (docs/da_protocol.md). covae32 networks: generator width model.ch (the paper's gen_ch 96),
    # discriminator width model.dis_ch (64), latent 8 * model.ch channels at 1x1; inputs data.crop_size 32.
    # digit_box_a/b: arrays: pad each stored image with background to (its size / digit_box) before the resize
    # to data.crop_size, so that a set whose digits fill the frame (USPS) gets MNIST's margins (20 of 28: 0.714)
    digit_box_a: float = 1.0  # domain A (1 = no padding)
    digit_box_b: float = 1.0  # domain B (1 = no padding)
    use_inversion: bool = False  # the target (B) training set gains intensity-inverted copies (authors' MNIST)
    feat32_w: float = 1e-4  # covae32: weight of D's feature matching (per-image sum of squares; paper 1e-4)


@dataclass
class MUNITConfig:
    """MUNIT (``model.arch=munit``): the weights of its objective (``unitgan.losses``, section "MUNIT").
    Its networks are set in ``model`` (``style_dim``, ``style_n_down``, ``mlp_dim`` and the keys UNIT uses)."""

    gan_w: float = 1.0  # GAN loss on translations x_ab, x_ba
    recon_w: float = 10.0  # L1 image reconstruction of x_aa, x_bb (own content and style)
    recon_c_w: float = 1.0  # L1 between the content of x_a and the content re-encoded from x_ab (and of b)
    recon_s_w: float = 1.0  # L1 between the sampled style and the style re-encoded from the translation
    cyc_recon_w: float = 0.0  # L1 explicit cycle x_aba, x_bab (re-encoded content + own style); 0 = off
    style_kl_w: float = 0.0  # > 0: a real image's style in its reconstructions is enc_s(x) + N(0, I) noise, and
    #   mean(enc_s(x)^2) gets this weight (UNIT's Gaussian latent, applied to the style: the decoder then learns
    #   to render the whole prior, not only the encoded points); 0 = MUNIT's deterministic style (the paper)
    eval_every: int = 0  # data.source=synthetic: score the modes every N steps (a learning curve; 0 = at the end)
    eval_styles: int = 16  # style samples per held-out scene in that score (a sampler that hits each of
    #   K = 4 equally likely modes at random covers 1 - (3/4)^S of them: 0.90 with 8 samples, 0.99 with 16)


@dataclass
class Config:
    """The complete configuration of a run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    da: DAConfig = field(default_factory=DAConfig)
    munit: MUNITConfig = field(default_factory=MUNITConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> Config:
        """Cross-field checks that single types cannot express, one section at a time (a check that reads two
        sections sits with the key it names), then those of the model family (``model.arch=covae32``). The first
        failed check raises UnitganError naming the key."""
        self._validate_loss()
        self._validate_model()
        self._validate_optim()
        self._validate_train()
        self._validate_data()
        self._validate_da()
        self._validate_munit()
        if self.model.arch == "covae32":
            self._validate_covae32()
        return self

    def _validate_model(self) -> None:
        """``model``: sizes, channels, kernels and sharing of the networks (MUNIT's own keys: :meth:`_validate_munit`)."""
        m = self.model
        _check(m.n_shared <= m.n_res, "model.n_shared", f"must be <= model.n_res ({m.n_res}), got {m.n_shared}")
        positive = [
            "input_nc_a",
            "input_nc_b",
            "ch",
            "dis_ch",
            "dis_n_scales",
            "dis_n_layers",
            "out_kernel",
            "dis_kernel",
        ]
        _at_least(1, "model", m, positive)
        _at_least(0, "model", m, ["n_down", "n_res", "n_shared", "dis_first_kernel", "dis_n_shared"])
        _at_most_max("model", m)
        for key, value in [("model.input_nc_a", m.input_nc_a), ("model.input_nc_b", m.input_nc_b)]:
            _check(value in (1, 3), key, f"must be 1 (grey) or 3 (colour), got {value}")
        _check(m.out_kernel % 2 == 1, "model.out_kernel", f"must be odd, got {m.out_kernel}")
        _check(0 <= m.res_dropout < 1, "model.res_dropout", f"must be in [0, 1), got {m.res_dropout}")
        _check(0 <= m.lrelu_slope < 1, "model.lrelu_slope", f"must be in [0, 1), got {m.lrelu_slope}")
        _check(
            m.dis_n_shared < m.dis_n_layers,
            "model.dis_n_shared",
            f"must be < model.dis_n_layers ({m.dis_n_layers}): the first layer stays private; got {m.dis_n_shared}",
        )
        _check(
            not (m.dis_spectral_norm and (m.arch == "covae32" or self.da.enabled)),
            "model.dis_spectral_norm",
            "is for the translation discriminators (UNIT, MUNIT); the DA discriminators do not read it",
        )
        if m.tied_init:
            _check(m.arch == "unit", "model.tied_init", f"is for model.arch=unit, got {m.arch}")
            _check(
                m.input_nc_a == m.input_nc_b,
                "model.tied_init",
                f"needs the same channels in both domains, got {m.input_nc_a} (A) and {m.input_nc_b} (B)",
            )

    def _validate_data(self) -> None:
        """``data``: sizes (the crop a multiple of the model's size multiple) and the source's domains."""
        d = self.data
        _at_least(1, "data", d, ["crop_size", "batch_size", "synthetic_train", "synthetic_test"])
        _at_least(0, "data", d, ["num_workers", "load_size"])
        _at_most_max("data", d)
        factor = 2**self.model.n_down
        _check(
            d.crop_size % factor == 0,
            "data.crop_size",
            f"must be a multiple of 2**model.n_down = {factor}, got {d.crop_size}",
        )
        if d.source == "folder":
            _check(bool(d.root), "data.root", "must name a folder holding trainA/ and trainB/ (data.source=folder)")
        if d.source == "arrays":
            _check(
                bool(d.a) and bool(d.b), "data.a", "data.a and data.b must name the two domains (data.source=arrays)"
            )
        _check(1 <= d.synthetic_modes <= 6, "data.synthetic_modes", f"must be in 1..6, got {d.synthetic_modes}")
        if d.load_size:
            _check(
                d.load_size >= d.crop_size,
                "data.load_size",
                f"must be >= data.crop_size ({d.crop_size}) or 0, got {d.load_size}",
            )

    def _validate_optim(self) -> None:
        """``optim``: learning rates, betas, decay, schedule and clipping in range."""
        o = self.optim
        _at_least(0, "optim", o, ["lr_step"])
        _check(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
        _check(o.dis_lr >= 0, "optim.dis_lr", f"must be >= 0 (0 = optim.lr), got {o.dis_lr}")
        for key, value in [("optim.beta1", o.beta1), ("optim.beta2", o.beta2)]:
            _check(0 <= value < 1, key, f"must be in [0, 1), got {value}")
        _check(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
        _check(o.lr_gamma > 0, "optim.lr_gamma", f"must be > 0, got {o.lr_gamma}")
        _check(o.grad_clip >= 0, "optim.grad_clip", f"must be >= 0 (0 = off), got {o.grad_clip}")

    def _validate_train(self) -> None:
        """``train``: step counts, intervals, the weight average, seed, run folder and device."""
        t = self.train
        _at_least(
            1, "train", t, ["steps", "ckpt_every", "keep_last", "log_every", "image_every", "accumulate", "image_rows"]
        )
        _at_least(0, "train", t, ["threads"])
        _at_most_max("train", t)
        _check(0 <= t.ema < 1, "train.ema", f"must be in [0, 1) (0 = off), got {t.ema}")
        _check(0 <= t.seed < 2**63, "train.seed", f"must be in [0, 2**63), got {t.seed}")
        _check(bool(t.out_dir.strip()), "train.out_dir", "must name a folder for the run")
        _check(
            re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", t.device) is not None,
            "train.device",
            f"must be auto, cpu, cuda, cuda:N or mps; got {t.device!r}",
        )

    def _validate_loss(self) -> None:
        """``loss``: known DiffAugment policies, only for UNIT translation; finite weights >= 0."""
        policy = self.loss.diffaug_policy()
        unknown = [w for w in policy if w not in DIFFAUG_POLICIES]
        _check(not unknown, "loss.diffaug", f"has unknown policy {unknown}; known: {', '.join(DIFFAUG_POLICIES)}")
        _check(
            not policy or (self.model.arch == "unit" and not self.da.enabled),
            "loss.diffaug",
            "is for UNIT translation (model.arch=unit without da.enabled); leave it empty",
        )
        for key in ["gan_w", "kl_w", "recon_w", "cyc_kl_w", "cyc_recon_w"]:
            v = getattr(self.loss, key)
            _check(v >= 0 and math.isfinite(v), f"loss.{key}", f"must be a finite number >= 0, got {v}")

    def _validate_da(self) -> None:
        """``da``: with ``da.enabled``, the adaptation's own keys and what it needs of the rest (labelled arrays,
        private first discriminator layers, one update order per design, fp32, no accumulation); the digit boxes
        always."""
        da, m, t = self.da, self.model, self.train
        if da.enabled:
            _check(self.data.source == "arrays", "da.enabled", "needs data.source=arrays (labelled source digits)")
            _check(m.dis_n_shared == 0, "model.dis_n_shared", "must be 0 with da.enabled (set da.dis_n_private)")
            _check(
                1 <= da.dis_n_private < m.dis_n_layers,
                "da.dis_n_private",
                f"must be >= 1 and < model.dis_n_layers ({m.dis_n_layers}), got {da.dis_n_private}",
            )
            _check(da.n_classes >= 2, "da.n_classes", f"must be >= 2, got {da.n_classes}")
            _check(da.feat32_w >= 0, "da.feat32_w", f"must be >= 0, got {da.feat32_w}")
            _check(m.vae_head_std > 0, "model.vae_head_std", f"must be > 0, got {m.vae_head_std}")
            _check(0 <= da.dropout < 1, "da.dropout", f"must be in [0, 1), got {da.dropout}")
            _check(da.pseudo_w >= 0, "da.pseudo_w", f"must be >= 0 (0 = off), got {da.pseudo_w}")
            _check(0 < da.pseudo_threshold <= 1, "da.pseudo_threshold", f"must be in (0, 1], got {da.pseudo_threshold}")
            _check(da.pseudo_start >= 0, "da.pseudo_start", f"must be >= 0, got {da.pseudo_start}")
            _check(
                not da.pseudo_align or da.pseudo_w > 0,
                "da.pseudo_align",
                "aligns the pseudo-labels of da.pseudo_w, which is 0 (off)",
            )
            _check(da.eval_every >= 0, "da.eval_every", f"must be >= 0 (0 = only at the end), got {da.eval_every}")
            order = "alternating" if m.arch == "covae32" else "simultaneous"  # covae32: the authors' D-then-G
            for key, value, only in [
                ("train.update_order", t.update_order, order),
                ("train.precision", t.precision, "fp32"),
                ("train.accumulate", t.accumulate, 1),
            ]:
                _check(value == only, key, f"must be {only} with da.enabled and model.arch={m.arch}, got {value}")
        for key, value in [("da.digit_box_a", da.digit_box_a), ("da.digit_box_b", da.digit_box_b)]:
            _check(0 < value <= 1, key, f"must be in (0, 1], got {value}")

    def _validate_munit(self) -> None:
        """MUNIT's keys: its networks' (``model.style_*``, ``model.mlp_dim``) and its objective's (``munit``). They
        are range-checked whatever ``model.arch`` (an out-of-range value is refused in any config); only MUNIT
        may draw styles from a bank."""
        m, mu = self.model, self.munit
        _check(1 <= m.style_dim <= 1024, "model.style_dim", f"must be in 1..1024, got {m.style_dim}")
        _check(2 <= m.style_n_down <= 8, "model.style_n_down", f"must be in 2..8, got {m.style_n_down}")
        _check(1 <= m.mlp_dim <= 8192, "model.mlp_dim", f"must be in 1..8192, got {m.mlp_dim}")
        _check(1 <= m.style_bank <= 65536, "model.style_bank", f"must be in 1..65536, got {m.style_bank}")
        _check(
            m.style_prior == "normal" or m.arch == "munit",
            "model.style_prior",
            f"must be normal for model.arch={m.arch} (only MUNIT draws styles), got {m.style_prior}",
        )
        for key in ["gan_w", "recon_w", "recon_c_w", "recon_s_w", "cyc_recon_w", "style_kl_w"]:
            v = getattr(mu, key)
            _check(v >= 0 and math.isfinite(v), f"munit.{key}", f"must be a finite number >= 0, got {v}")
        _check(mu.eval_every >= 0, "munit.eval_every", f"must be >= 0 (0 = only at the end), got {mu.eval_every}")
        _check(2 <= mu.eval_styles <= 256, "munit.eval_styles", f"must be in 2..256, got {mu.eval_styles}")

    def _validate_covae32(self) -> None:
        """``model.arch=covae32``: the authors' digit networks take exactly 32x32 inputs."""
        d = self.data
        _check(d.crop_size == 32, "data.crop_size", f"must be 32 for model.arch=covae32, got {d.crop_size}")


_MAX = {
    "model.ch": 1024,
    "model.dis_ch": 1024,
    "model.n_down": 8,
    "model.n_res": 64,
    "model.out_kernel": 15,
    "model.dis_kernel": 15,
    "model.dis_first_kernel": 15,
    "model.dis_n_layers": 10,
    "model.dis_n_scales": 8,
    "data.crop_size": 8192,
    "data.load_size": 16384,
    "data.batch_size": 65536,
    "data.num_workers": 512,
    "data.synthetic_train": 10_000_000,  # scenes are drawn on the fly, but the sampler holds their indices
    "data.synthetic_test": 1_000_000,
    "train.threads": 4096,
    "train.image_rows": 64,
}


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise UnitganError(f"config key '{key}' {message}")


def _at_least(bound: int, name: str, section: Any, keys: list[str]) -> None:
    """Each of ``keys`` of the config section ``name`` (its dataclass ``section``) must be >= ``bound``."""
    for key in keys:
        value = getattr(section, key)
        _check(value >= bound, f"{name}.{key}", f"must be >= {bound}, got {value}")


def _at_most_max(name: str, section: Any) -> None:
    """The keys of the section ``name`` listed in :data:`_MAX` are at most their bound (beyond it: a typo)."""
    for key, value in _flat(dataclasses.asdict(section), f"{name}.").items():
        if key in _MAX:
            _check(value <= _MAX[key], key, f"must be <= {_MAX[key]}, got {value}")


# ---------------------------------------------------------------------------------------------------------
# Building a Config from dicts, YAML and overrides, with every value type-checked.


def _show(text: Any, limit: int = 80) -> str:
    """A key or value as it goes into a one-line message: control characters escaped, long text cut."""
    r = text if isinstance(text, str) else repr(text)
    if not r.isprintable():
        r = r.encode("unicode_escape").decode("ascii")
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _bad(key: str, what: str, value: Any) -> UnitganError:
    return UnitganError(f"config key '{_show(key)}' must be {what}; got {_show(repr(value))}")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or parsed from an override) to type ``tp`` or raise naming ``key``."""
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if not isinstance(value, str) or value not in choices:
            raise _bad(key, f"one of {', '.join(map(str, choices))}", value)
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(get_args(tp)):
            return None
        return _convert(value, args[0], key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _bad(key, "true or false", value)
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= 2**63:
                raise _bad(key, "an integer that fits in 64 bits", value)
            return value
        raise _bad(key, "an integer", value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise _bad(key, "a number", value) from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise _bad(key, "a finite number", value)
            return number
        raise _bad(key, "a number", value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _bad(key, "a string", value)
    raise TypeError(f"unsupported config type {tp} for {key}")  # a bug in this module, not user input


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        where = f"section '{_show(prefix)}'" if prefix else "the config file"
        raise UnitganError(f"{where} must be a mapping of keys to values; got {_show(repr(data))}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise UnitganError(_unknown_key_message(full, prefix, names))
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _from_dict(tp, value if value is not None else {}, full)
        else:
            kwargs[key] = _convert(value, tp, full)
    return cls(**kwargs)


def _unknown_key_message(full: str, prefix: str, names: list[str]) -> str:
    leaf = full.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, names, n=1)
    hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)" if close else ""
    valid = ", ".join(names)
    where = f"in '{prefix}'" if prefix else "at the top level"
    return f"unknown config key '{_show(full)}'{hint}; valid keys {where}: {valid}"


def config_from_dict(data: dict[str, Any]) -> Config:
    return _from_dict(Config, data, "").validate()


def with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config dict with the keys it predates filled in with their defaults (types checked, no
    cross-field validation), so that a checkpoint written before a key existed compares equal to today's."""
    return _from_dict(Config, data, "").to_dict()


def _schema_type(parts: list[str], text: str) -> Any:
    """The type at a dotted key: a dataclass for a section, a leaf type, or None for an unknown key (reported
    later, with suggestions). A key below a leaf (``model.ch.x``) is an error here."""
    tp: Any = Config
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(tp):
            raise UnitganError(
                f"config key '{_show('.'.join(parts[:i]))}' is a value, not a section (override '{_show(text)}')"
            )
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def _parse_value(raw: str) -> Any:
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except Exception:  # noqa: BLE001 - not YAML: keep the text, the type check names the key
        return raw


def parse_override(text: str) -> tuple[str, Any]:
    """``model.ch=32`` -> ("model.ch", 32); the value is parsed as YAML (so ``true``, ``1e-4``, ``"x"``), except
    for string keys, which take the text as it is (``data.root=2024`` is the folder "2024")."""
    if "=" not in text:
        raise UnitganError(f"override '{_show(text)}' must look like key=value (e.g. train.steps=1000)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UnitganError(f"override '{_show(text)}' has no key before '='")
    tp = _schema_type(key.split("."), text)
    if tp is str:
        return key, raw
    if tp in (int, float) and NOT_DECIMAL.fullmatch(raw.strip()):
        raise UnitganError(f"config key '{_show(key)}' must be written in decimal, got '{_show(raw.strip())}'")
    return key, _parse_value(raw)


# integers YAML 1.1 reads in other bases: 0x10 (16), 010 (octal 8), 0b100 (4), 1:10 (base 60: 70)
NOT_DECIMAL = re.compile(r"[-+]?(0[xXbBoO][0-9a-fA-F_]*|0[0-9_]+|[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?)")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict; unknown keys are caught when the dict becomes a Config.

    ``section={key: value, ...}`` sets those keys of the section (the others keep their values)."""
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        if dataclasses.is_dataclass(_schema_type(parts, text)):
            if not isinstance(value, dict) or not value:
                raise UnitganError(
                    f"section '{_show(key)}' must be a mapping of keys to values; got {_show(repr(value))} "
                    f"(set its keys instead, e.g. {_show(key)}.KEY=VALUE)"
                )
            for sub, v in _flat(value).items():
                _set(data, [*parts, *str(sub).split(".")], v, text)
        else:
            _set(data, parts, value, text)
    return data


def _set(data: dict[str, Any], parts: list[str], value: Any, text: str) -> None:
    node = data
    for i, part in enumerate(parts[:-1]):
        sub = node.get(part)
        if sub is None:
            sub = node[part] = {}
        if not isinstance(sub, dict):
            raise UnitganError(
                f"section '{_show('.'.join(parts[: i + 1]))}' must be a mapping of keys to values; "
                f"got {_show(repr(sub))} (override '{_show(text)}')"
            )
        node = sub
    node[parts[-1]] = value


PRESET_DIR = Path(__file__).parent / "configs"


def resolve_config_path(name: str | Path) -> Path:
    """A path to a YAML file, or the name of a bundled preset (``unit_paper``, ``demo``...)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    for candidate in (PRESET_DIR / f"{name}", PRESET_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    presets = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
    raise UnitganError(f"config file '{name}' not found (bundled presets: {presets})")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = resolve_config_path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UnitganError(f"config file '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise UnitganError(f"config file '{path}' cannot be read: {e.strerror}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UnitganError(f"config file '{path}' must hold a mapping of sections, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML file (or the defaults when ``path`` is None) and apply ``key=value`` overrides."""
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    return config_from_dict(data)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the config as YAML; atomically (temp file + rename), so a kill never leaves half a file."""
    from unitgan.runtime import atomic_write_text  # runtime imports torch: not needed to read configs

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
