"""``unitgan demo``: train on the built-in synthetic domains, score against the ground truth, write a page."""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from unitgan.config import Config, load_config
from unitgan.data import build_domain
from unitgan.data.io import tensor_to_pil
from unitgan.inference import BaseTranslator, Translator
from unitgan.metrics.pixel import THRESHOLD, synthetic_accuracy
from unitgan.models import build_generator
from unitgan.train.loop import train
from unitgan.translator import open_translator

log = logging.getLogger(__name__)


@dataclass
class DemoReport:
    html: Path
    steps: int
    accuracy: dict[str, float]  # direction -> mean pixel accuracy of the trained model
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> direction -> accuracy

    def summary(self) -> str:
        lines = [
            f"pixel accuracy on held-out scenes (threshold {THRESHOLD}), after {self.steps} steps:",
            f"  {'':<24}{'all pixels':>20}{'shape pixels':>20}",
            f"  {'':<24}{'A->B':>10}{'B->A':>10}{'A->B':>10}{'B->A':>10}",
        ]
        for name, acc in {"UNIT (this run)": self.accuracy, **self.baselines}.items():
            cells = "".join(f"{acc[k]:>10.3f}" for k in ("a2b", "b2a", "a2b_shapes", "b2a_shapes"))
            lines.append(f"  {name:<24}{cells}")
        return "\n".join(lines)


def held_out_pairs(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out scenes in both styles: x_a[i] and x_b[i] show the same scene."""
    ds_a, ds_b = build_domain(cfg, "a", "test"), build_domain(cfg, "b", "test")
    return torch.stack([ds_a[i] for i in range(len(ds_a))]), torch.stack([ds_b[i] for i in range(len(ds_b))])


def evaluate_pairs(translator: BaseTranslator, x_a: torch.Tensor, x_b: torch.Tensor, batch: int = 50):
    """Accuracies both ways (keys a2b, b2a, a2b_shapes, b2a_shapes) and the translations."""
    x_ab = torch.cat([translator.translate(x_a[i : i + batch], "a2b") for i in range(0, len(x_a), batch)])
    x_ba = torch.cat([translator.translate(x_b[i : i + batch], "b2a") for i in range(0, len(x_b), batch)])
    return accuracies(x_ab, x_ba, x_a, x_b), x_ab, x_ba


def accuracies(x_ab, x_ba, x_a, x_b) -> dict[str, float]:
    """The demo's table row: :func:`unitgan.metrics.synthetic_accuracy` both ways, all and shape pixels."""
    acc = {}
    for direction, pred, target in (("a2b", x_ab, x_b), ("b2a", x_ba, x_a)):
        scores = synthetic_accuracy(pred, target, direction, THRESHOLD)
        acc[direction], acc[f"{direction}_shapes"] = scores["all"], scores["shapes"]
    return acc


def _identity_baseline(x_a: torch.Tensor, x_b: torch.Tensor) -> dict[str, float]:
    """Copy the input as the answer (grey repeated to RGB, RGB averaged to grey)."""
    return accuracies(x_a.expand(-1, 3, -1, -1), x_b.mean(1, keepdim=True), x_a, x_b)


def run_demo(out: Path, overrides: list[str] | None = None, progress: bool = True) -> DemoReport:
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config("demo", [f"train.out_dir={out / 'run'}", *(overrides or [])])
    x_a, x_b = held_out_pairs(cfg)

    torch.manual_seed(cfg.train.seed)
    untrained = Translator(build_generator(cfg.model), cfg, torch.device("cpu"))
    baselines = {
        "untrained network": evaluate_pairs(untrained, x_a, x_b)[0],
        "identity (copy input)": _identity_baseline(x_a, x_b),
    }

    result = train(cfg, progress=progress)
    translator = open_translator(result.checkpoint, device="cpu")
    acc, x_ab, x_ba = evaluate_pairs(translator, x_a, x_b)
    (out / "results.json").write_text(
        json.dumps({"steps": result.step, "threshold": THRESHOLD, "unit": acc, "baselines": baselines}, indent=2)
    )
    page = write_page(out, cfg, x_a, x_b, x_ab, x_ba, acc, baselines, result.step)
    return DemoReport(page, result.step, acc, baselines)


def save_examples(folder: Path, prefix: str, images: torch.Tensor) -> list[str]:
    """Save each image [C, H, W] of ``images`` 4x enlarged as ``folder/{prefix}_{i:03d}.png``; the names relative
    to the page (``folder.name/...``)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, img in enumerate(images):
        name = f"{prefix}_{i:03d}.png"
        pil = tensor_to_pil(img)
        pil.resize((pil.width * 4, pil.height * 4), resample=0).save(folder / name)
        names.append(f"{folder.name}/{name}")
    return names


def _loss_curve(run_dir: Path, path: Path) -> bool:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return False
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, keys, title in [
        (axes[0], ["recon_a", "recon_b", "cyc_recon_a", "cyc_recon_b"], "L1 reconstruction / cycle"),
        (axes[1], ["gan_a", "gan_b", "dis_a", "dis_b"], "GAN (generator / discriminator)"),
        (axes[2], ["kl_a", "kl_b"], "KL"),
    ]:
        for k in keys:
            ax.plot(steps, [r[k] for r in rows], label=k)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_page(out: Path, cfg: Config, x_a, x_b, x_ab, x_ba, acc, baselines, steps: int, n: int = 8) -> Path:
    ex = out / "examples"
    cols = {
        "a2b": (
            save_examples(ex, "a", x_a[:n]),
            save_examples(ex, "ab", x_ab[:n]),
            save_examples(ex, "b", x_b[:n]),
        ),
        "b2a": (
            save_examples(ex, "b", x_b[:n]),
            save_examples(ex, "ba", x_ba[:n]),
            save_examples(ex, "a", x_a[:n]),
        ),
    }
    has_curve = _loss_curve(Path(cfg.train.out_dir), out / "loss.png")
    rows_html = []
    for direction, title in (("a2b", "A (sketch) &rarr; B (paint)"), ("b2a", "B (paint) &rarr; A (sketch)")):
        inp, tr, gt = cols[direction]
        rows_html.append(
            f"<h2>{title}: pixel accuracy {acc[direction]:.3f} (shape pixels {acc[direction + '_shapes']:.3f})</h2>"
            "<table>"
        )
        for label, imgs in (("input", inp), ("translation", tr), ("ground truth", gt)):
            cells = "".join(f'<td><img src="{html.escape(s)}" width="96"></td>' for s in imgs)
            rows_html.append(f"<tr><th>{label}</th>{cells}</tr>")
        rows_html.append("</table>")
    keys = ("a2b", "b2a", "a2b_shapes", "b2a_shapes")
    score_rows = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{v[k]:.3f}</td>" for k in keys) + "</tr>"
        for name, v in {"UNIT (this run)": acc, **baselines}.items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>unitgan demo</title>
<style>body{{font-family:sans-serif;margin:2em}} th{{text-align:right;padding-right:1em}}
img{{image-rendering:pixelated;border:1px solid #ccc}} table.s td,table.s th{{padding:2px 10px}}</style></head><body>
<h1>unitgan demo: synthetic sketch &harr; paint</h1>
<p>UNIT trained for {steps} steps on unpaired synthetic scenes; scored on {len(x_a)} held-out scenes whose
ground-truth translation is known. Pixel accuracy: fraction of pixels within {THRESHOLD} (on a 0-1 scale) of the
ground truth in every channel; "shape pixels" counts only the pixels where the ground truth differs from the
empty background, so a blank background cannot pass for a translation.</p>
<table class="s"><tr><th></th><th colspan="2">all pixels</th><th colspan="2">shape pixels</th></tr>
<tr><th></th><th>A&rarr;B</th><th>B&rarr;A</th><th>A&rarr;B</th><th>B&rarr;A</th></tr>{score_rows}</table>
{"".join(rows_html)}
{'<h2>Training losses</h2><img src="loss.png">' if has_curve else ""}
</body></html>"""
    path = out / "index.html"
    path.write_text(page)
    return path
