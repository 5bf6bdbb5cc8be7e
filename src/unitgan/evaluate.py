"""``unitgan evaluate``: the metrics that fit a checkpoint's data, as JSON and a readable table.

- UNIT-DA / source-only checkpoints (``da.enabled``): the class head's accuracy on the target test set
  (and on the source test set, for reference).
- Synthetic domains (ground truth known): pixel accuracy of A->B and B->A on the held-out scenes, over all
  pixels and over the shape pixels, as the demo scores them (:func:`unitgan.metrics.synthetic_accuracy`).
- Image folders: FID and KID in both directions (testA translated vs real testB, and the reverse); pixel
  L1, PSNR, SSIM and pixel accuracy too where a ground-truth folder is given (``gt_a2b``/``gt_b2a``: same file
  names as testA/testB; :func:`unitgan.metrics.paired.paired_scores`).
- Array domains (no DA): FID and KID in both directions on the test splits.

FID/KID need an Inception network (see :func:`unitgan.metrics.fid.load_inception`); nothing is downloaded
unless ``download_inception`` is set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from unitgan.checkpoint import load_checkpoint, load_weights, resolve_checkpoint
from unitgan.config import Config, config_from_dict
from unitgan.data import build_domain
from unitgan.data.filelist import list_images
from unitgan.data.io import load_image, pil_to_tensor
from unitgan.errors import UnitganError
from unitgan.inference import BaseTranslator
from unitgan.metrics.da import da_accuracy
from unitgan.metrics.fid import extract_features, fid_kid, load_inception
from unitgan.metrics.paired import paired_scores
from unitgan.metrics.pixel import THRESHOLD, synthetic_accuracy
from unitgan.models.da import build_discriminator, eval_domain
from unitgan.translator import open_translator

log = logging.getLogger(__name__)


@dataclass
class EvalOptions:
    """What ``evaluate_checkpoint`` computes and from which data."""

    data_root: str = ""  # folder data: replaces the checkpoint's data.root (testA/ testB/ inside)
    gt_a2b: str = ""  # folder of ground-truth B images named like testA's files (paired data)
    gt_b2a: str = ""  # folder of ground-truth A images named like testB's files
    threshold: float = THRESHOLD  # pixel accuracy threshold on the [0, 1] scale
    fid: bool | None = None  # None = where it fits (folders, arrays); True/False forces it on/off
    inception: str = ""  # local Inception file (TorchScript or state dict)
    download_inception: bool = False  # allow fetching pytorch-fid's weights (needs internet)
    max_images: int = 0  # cap on test images per domain (0 = all)
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    batch_size: int = 50
    device: str = "cpu"


@dataclass
class EvalReport:
    checkpoint: str
    step: int
    results: dict[str, Any] = field(default_factory=dict)  # metric group -> values

    def table(self) -> str:
        """A readable table of every number in ``results``."""
        lines = [f"checkpoint {self.checkpoint} (step {self.step})"]
        for group, values in self.results.items():
            lines.append(f"  {group}:")
            for key, value in values.items():
                if isinstance(value, float):
                    lines.append(f"    {key:<28}{value:>12.4f}")
                elif not isinstance(value, list):
                    lines.append(f"    {key:<28}{value!s:>12}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "step": self.step, **self.results}


def _stack(ds, limit: int) -> torch.Tensor:
    n = len(ds) if not limit else min(limit, len(ds))
    items = [ds[i] for i in range(n)]
    return torch.stack([x[0] if isinstance(x, (tuple, list)) else x for x in items])  # [N, C, H, W]


def _translate_all(translator: BaseTranslator, x: torch.Tensor, direction: str, batch: int) -> torch.Tensor:
    return torch.cat([translator.translate(x[i : i + batch], direction) for i in range(0, len(x), batch)])


def _batches(x: torch.Tensor, batch: int):
    return (x[i : i + batch] for i in range(0, len(x), batch))


def _ground_truth(folder: str, files: list[Path], channels: int, size: tuple[int, int]) -> torch.Tensor:
    """Images of ``folder`` with the same names as ``files`` (any image extension), resized to ``size``."""
    by_stem = {p.stem: p for p in list_images(folder)}
    out = []
    resized: list[str] = []
    for f in files:
        if f.stem not in by_stem:
            raise UnitganError(f"ground-truth folder '{folder}' has no image named like '{f.name}'")
        img = load_image(by_stem[f.stem], channels)
        if (img.height, img.width) != size:
            resized.append(f"'{by_stem[f.stem]}' ({img.width}x{img.height})")
            img = img.resize((size[1], size[0]), resample=Image.Resampling.BICUBIC)
        out.append(pil_to_tensor(img))
    if resized:
        log.warning(
            "%d ground-truth image(s) resized to the translations' %dx%d to compare them, e.g. %s",
            len(resized),
            size[1],
            size[0],
            resized[0],
        )
    return torch.stack(out)


def _da_accuracy(cfg: Config, state: dict[str, Any], path: Path, device: torch.device) -> dict[str, float]:
    """The class head's test accuracy of a DA checkpoint: only its discriminator is built, with the weights the
    training run's own evaluation reads (the weight average with ``train.ema``)."""
    dis = build_discriminator(cfg)
    load_weights(dis, state, "dis", path, "its class head would answer nothing")
    dis.to(device).eval()
    if cfg.train.channels_last:  # NHWC weights, as the run evaluated them
        dis.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def classify(x: torch.Tensor, domain: str) -> torch.Tensor:
        return dis.classify(x.to(device), domain)

    return da_accuracy(classify, eval_domain(cfg), cfg)


def check_options(opts: EvalOptions, cfg: Config, path: str | Path) -> None:
    """Refuse the options that would be ignored: ``--data-root`` and the ground-truth folders apply to
    image-folder data only (not to UNIT-DA, synthetic or array checkpoints)."""
    data = "da.enabled" if cfg.da.enabled else f"data.source={cfg.data.source}"
    if cfg.da.enabled or cfg.data.source != "folder":
        for flag, value in (("--data-root", opts.data_root), ("--gt-a2b", opts.gt_a2b), ("--gt-b2a", opts.gt_b2a)):
            if value:
                raise UnitganError(
                    f"{flag} applies to checkpoints trained on image folders; checkpoint '{path}' has {data}, "
                    f"whose test data and ground truth are its own"
                )


def evaluate_checkpoint(path: str | Path, opts: EvalOptions | None = None) -> EvalReport:
    """Evaluate one checkpoint (a file, or a run folder: its newest checkpoint that loads) with the metrics that
    fit its data (see the module docstring)."""
    opts = opts or EvalOptions()
    path = resolve_checkpoint(path)
    state = load_checkpoint(path)
    try:
        cfg: Config = config_from_dict(state["config"])
    except UnitganError as e:
        raise UnitganError(f"checkpoint '{path}' holds an invalid config: {e}") from None
    check_options(opts, cfg, path)
    if opts.data_root:
        cfg.data.root = opts.data_root
    report = EvalReport(str(path), int(state.get("step", 0)))
    if cfg.da.enabled:
        report.results["domain_adaptation"] = _da_accuracy(cfg, state, path, torch.device(opts.device))
        return report

    translator = open_translator(path, device=opts.device)
    ds_a, ds_b = build_domain(cfg, "a", "test"), build_domain(cfg, "b", "test")
    x_a, x_b = _stack(ds_a, opts.max_images), _stack(ds_b, opts.max_images)  # [N, C, S, S]
    log.info("translating %d A and %d B test images", len(x_a), len(x_b))
    x_ab = _translate_all(translator, x_a, "a2b", opts.batch_size)
    x_ba = _translate_all(translator, x_b, "b2a", opts.batch_size)

    if cfg.data.source == "synthetic":  # test scene i is the same in both domains: ground truth known
        for direction, pred, target in (("a2b", x_ab, x_b), ("b2a", x_ba, x_a)):
            scores = synthetic_accuracy(pred, target, direction, opts.threshold)  # the demo's scoring
            report.results[f"pixel_accuracy_{direction}"] = {
                "mean": scores["all"],
                "shapes": scores["shapes"],
                "threshold": opts.threshold,
                "per_image": scores["per_image"],
            }
    if cfg.data.source == "folder":
        files_a = [ds_a.files[i] for i in range(len(x_a))]
        files_b = [ds_b.files[i] for i in range(len(x_b))]
        if opts.gt_a2b:
            gt = _ground_truth(opts.gt_a2b, files_a, cfg.model.input_nc_b, tuple(x_ab.shape[-2:]))
            report.results["paired_a2b"] = paired_scores(x_ab, gt, opts.threshold)
        if opts.gt_b2a:
            gt = _ground_truth(opts.gt_b2a, files_b, cfg.model.input_nc_a, tuple(x_ba.shape[-2:]))
            report.results["paired_b2a"] = paired_scores(x_ba, gt, opts.threshold)

    want_fid = opts.fid if opts.fid is not None else cfg.data.source in ("folder", "arrays")
    if want_fid:
        net = load_inception(opts.inception or None, opts.download_inception)
        log.info(
            "Inception features of %d + %d real and %d + %d translated images", len(x_a), len(x_b), len(x_ab), len(x_ba)
        )
        f_a, f_b = (
            extract_features(net, _batches(x_a, opts.batch_size), opts.device),
            extract_features(net, _batches(x_b, opts.batch_size), opts.device),
        )
        f_ab = extract_features(net, _batches(x_ab, opts.batch_size), opts.device)
        f_ba = extract_features(net, _batches(x_ba, opts.batch_size), opts.device)
        size = min(opts.kid_subset_size, len(f_a), len(f_b))
        report.results["fid_kid_a2b"] = fid_kid(f_b, f_ab, opts.kid_subsets, size)
        report.results["fid_kid_b2a"] = fid_kid(f_a, f_ba, opts.kid_subsets, size)
    if not report.results:
        raise UnitganError(
            f"nothing to evaluate for checkpoint '{path}': no ground truth and FID is off "
            "(give --gt-a2b/--gt-b2a or leave FID on)"
        )
    return report
