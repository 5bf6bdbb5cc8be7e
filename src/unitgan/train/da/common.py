"""What the two digit-adaptation trainers share: :class:`DABase` (data, evaluation hook, optimiser step with the
non-finite guard, checkpoint state), the rule refusing the keys a design ignores (:func:`refuse_ignored_keys`)
and the pseudo-labels' distribution alignment (:func:`align_distribution`).

The trainers: ``unitgan.train.da.reduced.DATrainer`` (the reduced design: the UNIT generator and
:class:`~unitgan.models.da.reduced.DADiscriminator`) and ``unitgan.train.da.authors.DA32Trainer`` (the authors'
networks, ``model.arch=covae32``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unitgan.config import Config, DAConfig
from unitgan.data import build_domain
from unitgan.errors import UnitganError
from unitgan.metrics.da import da_accuracy
from unitgan.models.da import eval_domain
from unitgan.runtime import atomic_write_text
from unitgan.train.base import (
    TrainData,
    WeightAverage,
    apply_optim_settings,
    build_adam,
    build_step_lr,
    changed_optim_keys,
    endless_batches,
    weights_finite,
)
from unitgan.train.distributed import average_gradients

log = logging.getLogger(__name__)

# The da.* keys each design never reads. A value other than the default would change nothing, so it is refused
# (READ_BY says which design reads the key instead).
IGNORED_DA_KEYS: dict[str, tuple[str, ...]] = {
    "reduced": (
        "target_path",
        "sem_ab_w",
        "pseudo_w",
        "sem_path",
        "pseudo_threshold",
        "pseudo_start",
        "pseudo_align",
        "feat32_w",
    ),
    "authors": ("dis_n_private", "dropout", "cls_w", "feat_w", "feat_update", "recon_fake"),
}
READ_BY = {"reduced": "the reduced design, model.arch=unit", "authors": "model.arch=covae32"}
DESIGN_NAMES = {"reduced": "the reduced design", "authors": "model.arch=covae32"}


def refuse_ignored_keys(cfg: Config, design: str) -> None:
    """Raise UnitganError naming the first key of ``IGNORED_DA_KEYS[design]`` ('reduced' or 'authors') whose value in
    ``cfg.da`` is not the default: the design would silently ignore it."""
    other = "authors" if design == "reduced" else "reduced"
    defaults = DAConfig()
    for key in IGNORED_DA_KEYS[design]:
        if getattr(cfg.da, key) != getattr(defaults, key):
            raise UnitganError(
                f"config key 'da.{key}' is only read by {READ_BY[other]} ({DESIGN_NAMES[design]} ignores it)"
            )


class DABase(nn.Module):
    """What the DA trainers share (``unitgan.train.da.reduced.DATrainer``, ``unitgan.train.da.authors.DA32Trainer``): the data, the
    evaluation hook, the optimiser step with the non-finite guard, and the checkpoint state. A subclass builds
    ``gen``, ``dis`` (with ``classify(x, domain)``), ``opt_gen``, ``opt_dis``, ``sched_gen``, ``sched_dis``
    (through :meth:`setup`) and implements ``train_step``. Implements :class:`unitgan.train.base.Trainer`."""

    state_keys = ("gen", "dis", "opt_gen", "opt_dis")

    def setup(self, cfg: Config, device: torch.device, ddp: bool, gen: nn.Module, dis: nn.Module) -> None:
        """Keep the networks on ``device`` and build their Adam optimisers and step schedulers."""
        if cfg.da.source_only and cfg.model.input_nc_a != cfg.model.input_nc_b:
            raise UnitganError(
                "config key 'da.source_only' needs model.input_nc_a == model.input_nc_b (one input path)"
            )
        self.cfg, self.device, self.ddp = cfg, device, ddp
        self.gen, self.dis = gen, dis
        # train.ema: weight averages of both networks; the classifier's is the one evaluation reads (the DA result),
        # the generator's the one translate loads
        self.gen_ema = WeightAverage(gen, cfg.train.ema) if cfg.train.ema > 0 else None
        self.dis_ema = WeightAverage(dis, cfg.train.ema) if cfg.train.ema > 0 else None
        self.to(device)
        if cfg.train.channels_last:  # NHWC weights: the convolutions' outputs, and so CoDis32x32's max pools, are NHWC
            self.to(memory_format=torch.channels_last)
        o = cfg.optim
        self.opt_gen = build_adam(self.gen.parameters(), o.lr, cfg, device)
        self.opt_dis = build_adam(self.dis.parameters(), o.dis_lr or o.lr, cfg, device)
        self.sched_gen, self.sched_dis = build_step_lr(self.opt_gen, cfg), build_step_lr(self.opt_dis, cfg)
        self.skip_nonfinite = cfg.train.nonfinite == "skip"
        self.last_skipped = False
        self.eval_every = cfg.da.eval_every
        self._test_splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # loaded on the first evaluate

    @property
    def eval_domain(self) -> str:
        """The path target images take through the classifier: ``da.target_path`` ('b' for UNIT-DA as the authors,
        'a' = the source's first layer) or 'a' (source-only)."""
        return eval_domain(self.cfg)

    def data(self, start_step: int, rank: int, world_size: int) -> TrainData:
        """Labelled source batches and unlabelled target batches: a step's batch is ``(x_a, y_a, x_b)``."""
        cfg, seed = self.cfg, self.cfg.train.seed
        ds_a = build_domain(cfg, "a", "train", return_labels=True)
        if not getattr(ds_a, "return_labels", False):
            raise UnitganError(f"data.a '{cfg.data.a}' has no labels: UNIT-DA needs a labelled source")
        ds_b = build_domain(cfg, "b", "train")  # target labels are never read
        it_a = endless_batches(cfg, ds_a, seed * 2, start_step, rank, world_size, self.device)
        it_b = endless_batches(cfg, ds_b, seed * 2 + 1, start_step, rank, world_size, self.device)

        def next_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x_a, y_a = next(it_a)
            return x_a, y_a, next(it_b)

        return TrainData(next_batch, (ds_a, ds_b), (it_a, it_b))

    def fixed_batch(self) -> None:
        return None

    def sample_rows(self, fixed: None) -> list[torch.Tensor]:
        return []  # the run is judged by its accuracy (da_results.json), not by image grids

    def apply_update(self, losses: torch.Tensor, *pairs: tuple[torch.optim.Optimizer, nn.Module]) -> None:
        """Average gradients over ranks (torchrun), then step each optimiser, unless the losses are not
        finite and ``train.nonfinite=skip`` (one host sync)."""
        self.last_skipped = self.skip_nonfinite and not bool(torch.isfinite(losses).all())
        for opt, module in pairs:
            if self.last_skipped:
                opt.zero_grad(set_to_none=True)
                continue
            if self.ddp:
                average_gradients(module)
            opt.step()
            average = self.gen_ema if module is self.gen else self.dis_ema if module is self.dis else None
            if average is not None:
                average.update(module)

    @torch.no_grad()
    def classify(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """Class logits [N, K] in eval mode, by the classifier's weight average with ``train.ema``."""
        was_training = self.training
        self.eval()
        dis = self.dis if self.dis_ema is None else self.dis_ema.net
        out = dis.classify(x.to(self.device), domain)
        self.train(was_training)
        return out

    def evaluate(self, step: int, run_dir: Path, final: bool) -> dict[str, float]:
        """Target (and source) test accuracy; at the end of the run also into ``da_results.json``."""
        results = da_accuracy(self.classify, self.eval_domain, self.cfg, self._test_splits)
        if final:
            kind = "source-only classifier" if self.cfg.da.source_only else "UNIT-DA"
            atomic_write_text(
                run_dir / "da_results.json", json.dumps({"step": step, "kind": kind, **results}, indent=2)
            )
            log.info(
                "%s: target accuracy %.4f, source accuracy %.4f", kind, results["target_acc"], results["source_acc"]
            )
        return {"target_acc": results["target_acc"], "source_acc": results["source_acc"]}

    def learning_rate(self) -> float:
        return self.opt_gen.param_groups[0]["lr"]

    def weights_finite(self) -> bool:
        return weights_finite(self)

    def state(self) -> dict[str, Any]:
        """Everything to resume; with ``train.ema`` also the averages ``gen_ema`` (translate loads it) and
        ``dis_ema`` (evaluation reads it), with their update counts."""
        averages = {}
        if self.gen_ema is not None and self.dis_ema is not None:
            averages = {
                "gen_ema": self.gen_ema.net.state_dict(),
                "ema_updates": self.gen_ema.updates,
                "dis_ema": self.dis_ema.net.state_dict(),
                "dis_ema_updates": self.dis_ema.updates,
            }
        return {
            **averages,
            "gen": self.gen.state_dict(),
            "dis": self.dis.state_dict(),
            "opt_gen": self.opt_gen.state_dict(),
            "opt_dis": self.opt_dis.state_dict(),
            "sched_gen": self.sched_gen.state_dict(),
            "sched_dis": self.sched_dis.state_dict(),
        }

    def load_state(self, state: dict[str, Any], weights_only: bool = False) -> None:
        self.gen.load_state_dict(state["gen"])
        self.dis.load_state_dict(state["dis"])
        if self.gen_ema is not None and self.dis_ema is not None:
            self.gen_ema.load(state.get("gen_ema"), state.get("ema_updates", 0), self.gen)
            self.dis_ema.load(state.get("dis_ema"), state.get("dis_ema_updates", 0), self.dis)
        if not weights_only:
            for key in ("opt_gen", "opt_dis", "sched_gen", "sched_dis"):
                getattr(self, key).load_state_dict(state[key])
            if changed_optim_keys(state.get("config", {}), self.cfg):  # the config's optimiser settings win
                o = self.cfg.optim
                apply_optim_settings(self.opt_gen, self.sched_gen, o.lr, self.cfg)
                apply_optim_settings(self.opt_dis, self.sched_dis, o.dis_lr or o.lr, self.cfg)


def align_distribution(probs: torch.Tensor, pred_mean: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Distribution alignment (ReMixMatch, Berthelot et al. 2020): scale class probabilities probs [N, K] by
    prior [K] / pred_mean [K] (the class shares they should have / the ones the model has been predicting)
    and renormalise each row. A class the model has stopped predicting is scaled up, one it over-predicts down."""
    aligned = probs * prior / pred_mean.clamp_min(1e-6)  # [N, K]
    return aligned / aligned.sum(dim=1, keepdim=True)
