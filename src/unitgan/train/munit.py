"""The MUNIT trainer (``model.arch=munit``): UNIT's step logic with MUNIT's two phases.

A step is, as in the authors' ``trainer.py`` (``train.update_order: alternating``): a D update on fresh
translations ``x_ab = dec_b(c_a, s_b)``, ``x_ba = dec_a(c_b, s_a)`` with styles drawn from N(0, I), then the
encoder/decoder update against the updated D (image, content and style reconstruction, optional explicit
cycle, GAN). Accumulation, precision, the non-finite skip and DDP come from :class:`UNITTrainer`, which this
class extends with :meth:`build_phases` and :meth:`fresh_translations`.

The evaluate hook scores a multimodal synthetic ground truth (``data.source: synthetic``): for each held-out
scene ``munit.eval_styles`` translations with styles from N(0, I), against its K renderings
(``unitgan.metrics.multimodal``). The scores go into the log and, at the end, into ``multimodal.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from unitgan.config import Config
from unitgan.losses import MUNITOutputs, munit_gen_loss
from unitgan.metrics.multimodal import multimodal_scores, style_samples, synthetic_ground_truth
from unitgan.models import MUNITGenerator
from unitgan.runtime import atomic_write_text, autocast
from unitgan.train.trainer import DisPhase, UNITTrainer

log = logging.getLogger(__name__)


def munit_forward(
    g: MUNITGenerator, x_a: torch.Tensor, x_b: torch.Tensor, cycle: bool, sample_real_style: bool
) -> MUNITOutputs:
    """Every image and code of the E/G loss for one batch; styles of the translations from N(0, I).

    ``cycle``: also the explicit cycle x_aba, x_bab. ``sample_real_style`` (``munit.style_kl_w`` > 0): the
    reconstructions (and the cycle) take the encoded style plus N(0, I) noise, and the encoded styles are
    returned for their KL term."""
    n = x_a.shape[0]
    c_a, s_a_enc = g.encode(x_a, "a")  # [N, C, h, w], [N, style_dim]
    c_b, s_b_enc = g.encode(x_b, "b")
    g.remember_styles(s_a_enc, "a")  # model.style_prior=bank: test-time styles come from these
    g.remember_styles(s_b_enc, "b")
    s_a_real, s_b_real = s_a_enc, s_b_enc
    if sample_real_style:
        s_a_real = s_a_enc + torch.randn_like(s_a_enc)
        s_b_real = s_b_enc + torch.randn_like(s_b_enc)
    s_a = g.sample_style(n, x_a)  # [N, style_dim] from N(0, I)
    s_b = g.sample_style(n, x_b)
    x_aa, x_ba = g.decode(torch.cat([c_a, c_b]), torch.cat([s_a_real, s_a]), "a").split(n)
    x_bb, x_ab = g.decode(torch.cat([c_b, c_a]), torch.cat([s_b_real, s_b]), "b").split(n)
    c_ba, s_ba = g.encode(x_ba, "a")
    c_ab, s_ab = g.encode(x_ab, "b")
    x_aba = g.decode(c_ab, s_a_real, "a") if cycle else None
    x_bab = g.decode(c_ba, s_b_real, "b") if cycle else None
    kl = (s_a_enc, s_b_enc) if sample_real_style else (None, None)
    return MUNITOutputs(x_a, x_b, c_a, c_b, s_a, s_b, x_aa, x_bb, x_ab, x_ba, c_ab, c_ba, s_ab, s_ba, x_aba, x_bab, *kl)


class MUNITGenPhase(nn.Module):
    """The MUNIT encoder/decoder loss of a batch as one forward: (x_a, x_b) -> (loss, named terms, outputs).
    As UNIT's ``GenPhase``: only ``gen`` is a submodule; the discriminators are held outside the tree."""

    def __init__(self, gen: MUNITGenerator, dis_a: nn.Module, dis_b: nn.Module, cfg: Config):
        super().__init__()
        self.gen = gen
        self._dis = (dis_a, dis_b)
        self.weights, self.gan_type = cfg.munit, cfg.model.gan_type

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, dict, MUNITOutputs]:
        dis_a, dis_b = self._dis
        w = self.weights
        out = munit_forward(self.gen, x_a, x_b, cycle=w.cyc_recon_w > 0, sample_real_style=w.style_kl_w > 0)
        loss, terms = munit_gen_loss(out, dis_b(out.x_ab), dis_a(out.x_ba), self.weights, self.gan_type)
        return loss, terms, out


class MUNITTrainer(UNITTrainer):
    """Networks (``gen``: a :class:`MUNITGenerator`; ``dis_a``, ``dis_b``), optimisers and schedulers as in
    UNIT (same state keys), with MUNIT's phases. Implements :class:`unitgan.train.base.Trainer`."""

    GRID_STYLES = 3  # translations per input in the image grids, each with a style fixed for the whole run

    def __init__(self, cfg: Config, device: torch.device, ddp: bool = False):
        super().__init__(cfg, device, ddp)
        self.eval_every = cfg.munit.eval_every
        self._ground_truth: tuple[torch.Tensor, torch.Tensor] | None = None  # held-out scenes, loaded once

    def build_phases(self, cfg: Config) -> tuple[nn.Module, nn.Module]:
        gen_phase = MUNITGenPhase(self.gen, self.dis_a, self.dis_b, cfg)
        return gen_phase, DisPhase(self.dis_a, self.dis_b, cfg, gan_w=cfg.munit.gan_w)

    def fresh_translations(self, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_ab, x_ba of the current networks with styles from N(0, I) (the authors' ``dis_update``)."""
        g, n = self.gen, x_a.shape[0]
        s_a, s_b = g.sample_style(n, x_a), g.sample_style(n, x_b)  # [N, style_dim]
        return g.decode(g.encode_content(x_a, "a"), s_b, "b"), g.decode(g.encode_content(x_b, "b"), s_a, "a")

    @torch.no_grad()
    def sample_rows(self, fixed: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        """Rows for an image grid: x_a, x_aa, x_ab in ``GRID_STYLES`` styles; x_b, x_bb, x_ba in as many.
        The styles are drawn from their own generator (seed ``train.seed``): the same in every grid, and the
        training noise is left untouched."""
        was_training = self.training
        self.eval()
        g = self.inference_gen
        x_a, x_b = self.prepare(fixed[0]), self.prepare(fixed[1])
        rng = torch.Generator(x_a.device).manual_seed(self.cfg.train.seed)
        styles = torch.cat(  # [2G, style_dim]: G of B for the A -> B rows, G of A; the test-time prior
            [g.sample_style(self.GRID_STYLES, x_a, rng, domain=d) for d in ("b", "a")]
        )
        with autocast(self.device, self.cfg.train.precision):
            c_a, s_a = g.encode(x_a, "a")
            c_b, s_b = g.encode(x_b, "b")
            rows_a = [x_a, g.decode(c_a, s_a, "a")]
            rows_a += [g.decode(c_a, s.expand(len(x_a), -1), "b") for s in styles[: self.GRID_STYLES]]
            rows_b = [x_b, g.decode(c_b, s_b, "b")]
            rows_b += [g.decode(c_b, s.expand(len(x_b), -1), "a") for s in styles[self.GRID_STYLES :]]
        self.train(was_training)
        return [t.float() for t in (*rows_a, *rows_b)]

    def evaluate(self, step: int, run_dir: Path, final: bool) -> dict[str, float]:
        """With a synthetic ground truth: mode coverage, accuracy to the nearest ground truth and pixel
        diversity of ``munit.eval_styles`` samples per held-out scene, also written to ``multimodal.json``
        (the latest evaluation). Other data: nothing to score ({})."""
        if self.cfg.data.source != "synthetic":
            return {}
        if self._ground_truth is None:
            self._ground_truth = synthetic_ground_truth(self.cfg)
        x_a, truths = self._ground_truth
        was_training = self.training
        self.eval()
        samples = style_samples(self.inference_gen, x_a, self.cfg.munit.eval_styles, seed=self.cfg.train.seed)
        self.train(was_training)
        scores = multimodal_scores(samples, truths)
        atomic_write_text(run_dir / "multimodal.json", json.dumps({"step": step, **scores}, indent=2))
        if final:
            log.info(
                "multimodal scores at step %d: coverage %.3f, accuracy to the nearest truth %.3f, pixel diversity %.3f",
                step,
                scores["coverage"],
                scores["nearest_accuracy"],
                scores["pixel_diversity"],
            )
        return {k: scores[k] for k in ("coverage", "nearest_accuracy", "pixel_diversity")}
