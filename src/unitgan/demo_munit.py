"""``unitgan demo munit``: train MUNIT on the K-mode synthetic domain, count the modes it covers, write a page.

Every held-out sketch has K right paintings (``data.synthetic_modes``), all known. The trained model paints
each sketch in K styles drawn from its test-time prior (N(0, I), or with ``model.style_prior=bank`` the
remembered styles of real training paintings; style k is the same code for every input:
:meth:`unitgan.inference.BaseTranslator.draw_styles`), and :func:`unitgan.metrics.multimodal.multimodal_scores`
scores the samples against the K ground truths: mode coverage, accuracy to the nearest ground truth,
diversity. The page shows, per input, the K samples next to the K ground truths, and the scores of the trained
model against the untrained network.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from unitgan.config import load_config
from unitgan.demo import save_examples
from unitgan.errors import UnitganError
from unitgan.inference import BaseTranslator, Translator
from unitgan.metrics.multimodal import (
    feature_diversity,
    multimodal_scores,
    optional_inception,
    synthetic_ground_truth,
)
from unitgan.models import build_generator
from unitgan.train.loop import train
from unitgan.translator import open_translator

log = logging.getLogger(__name__)

MUNIT_DEMO_PRESET = "munit_demo"  # the bundled preset: MUNIT on the synthetic domain with K = 4 modes
SHOWN = 8  # held-out inputs shown on the page
FEATURE_INPUTS = 16  # held-out inputs whose samples go through Inception for the feature diversity (64 images:
#   about 50 s on 2 busy CPU cores; the untrained baseline skips it)
SCORE_KEYS = ("coverage", "nearest_accuracy", "pixel_diversity", "feature_diversity")


@dataclass
class MunitDemoReport:
    html: Path
    steps: int
    scores: dict[str, float | None]  # multimodal_scores of the trained model
    baselines: dict[str, dict[str, float | None]] = field(default_factory=dict)  # name -> scores

    def summary(self) -> str:
        n, k = self.scores["n_inputs"], self.scores["n_modes"]
        lines = [
            f"{k} modes per held-out scene, {self.scores['n_samples']} style samples per input, {n} inputs, "
            f"after {self.steps} steps:",
            f"  {'':<24}{'coverage':>10}{'nearest acc':>13}{'pixel div':>11}{'feature div':>13}",
        ]
        for name, s in {"MUNIT (this run)": self.scores, **self.baselines}.items():
            lines.append(
                f"  {name:<24}"
                + "".join(f"{fmt(s[key]):>{w}}" for key, w in zip(SCORE_KEYS, (10, 13, 11, 13), strict=True))
            )
        return "\n".join(lines)


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def style_samples(
    translator: BaseTranslator, x_a: torch.Tensor, n_styles: int, seed: int, batch: int = 50
) -> torch.Tensor:
    """Every input ``x_a`` [N, 1, S, S] translated A -> B in styles 0..n_styles-1 of ``seed``: [N, K, 3, S, S]."""
    codes = translator.draw_styles(n_styles, seed, "b")  # [K, style_dim] of domain B
    per_style = [
        torch.cat([translator.translate(x_a[i : i + batch], "a2b", s) for i in range(0, len(x_a), batch)])
        for s in codes.split(1)
    ]
    return torch.stack(per_style, dim=1)


def score(translator: BaseTranslator, x_a: torch.Tensor, truths: torch.Tensor, seed: int, features) -> tuple:
    """(multimodal scores, samples [N, K, 3, S, S]); the feature diversity over the first FEATURE_INPUTS."""
    samples = style_samples(translator, x_a, truths.shape[1], seed)
    scores = multimodal_scores(samples, truths)
    if features is not None:
        scores["feature_diversity"] = feature_diversity(samples[:FEATURE_INPUTS], features)
    return scores, samples


def run_munit_demo(
    out: Path, overrides: list[str] | None = None, progress: bool = True, preset: str | None = None
) -> MunitDemoReport:
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(preset or MUNIT_DEMO_PRESET, [f"train.out_dir={out / 'run'}", *(overrides or [])])
    if cfg.model.arch != "munit":
        raise UnitganError(f"the MUNIT demo needs model.arch munit, the config has '{cfg.model.arch}'")
    if cfg.data.source != "synthetic" or cfg.data.synthetic_modes < 2:
        raise UnitganError("the MUNIT demo needs data.source synthetic and data.synthetic_modes >= 2")
    x_a, truths = synthetic_ground_truth(cfg)  # held-out sketches and all K right paintings of each
    features = optional_inception()

    torch.manual_seed(cfg.train.seed)
    untrained = Translator(build_generator(cfg.model), cfg, torch.device("cpu"))
    baselines = {"untrained network": score(untrained, x_a, truths, cfg.train.seed, None)[0]}

    result = train(cfg, progress=progress)
    translator = open_translator(result.checkpoint, device="cpu")
    scores, samples = score(translator, x_a, truths, cfg.train.seed, features)
    (out / "results.json").write_text(
        json.dumps({"steps": result.step, "munit": scores, "baselines": baselines}, indent=2)
    )
    bank = translator.style_banks.get("b")
    prior = (
        "drawn from N(0, I)"
        if bank is None
        else f"picked from the styles of the last {len(bank)} real training paintings, spread over their looks"
    )
    page = write_munit_page(out, x_a, samples, truths, scores, baselines, result.step, prior=prior)
    return MunitDemoReport(page, result.step, scores, baselines)


def write_munit_page(
    out: Path,
    x_a: torch.Tensor,
    samples: torch.Tensor,
    truths: torch.Tensor,
    scores: dict[str, float | None],
    baselines: dict[str, dict[str, float | None]],
    steps: int,
    n: int = SHOWN,
    prior: str = "drawn from N(0, I)",
) -> Path:
    """``index.html`` in ``out``: per input (of the first ``n``) the sketch, the K samples and the K ground
    truths, and the score table. ``samples`` [N, S, 3, H, W], ``truths`` [N, K, 3, H, W]; ``prior`` says how
    the styles were drawn."""
    ex = out / "examples"
    inputs = save_examples(ex, "input", x_a[:n])
    rows = []
    for i in range(min(n, len(x_a))):
        sample_cells = "".join(
            f'<td><img src="{html.escape(s)}" width="96"></td>' for s in save_examples(ex, f"sample{i:03d}", samples[i])
        )
        truth_cells = "".join(
            f'<td><img src="{html.escape(s)}" width="96"></td>' for s in save_examples(ex, f"truth{i:03d}", truths[i])
        )
        rows.append(
            f'<tr><td><img src="{html.escape(inputs[i])}" width="96"></td>{sample_cells}'
            f'<td class="gap"></td>{truth_cells}</tr>'
        )
    n_samples, k = samples.shape[1], truths.shape[1]
    score_rows = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{fmt(s[key])}</td>" for key in SCORE_KEYS) + "</tr>"
        for name, s in {"MUNIT (this run)": scores, **baselines}.items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>unitgan MUNIT demo</title>
<style>body{{font-family:sans-serif;margin:2em}} td.gap{{width:2em}} th{{padding:2px 10px}}
img{{image-rendering:pixelated;border:1px solid #ccc}} table.s td,table.s th{{padding:2px 10px}}</style></head><body>
<h1>unitgan demo: one sketch, {k} right paintings (MUNIT)</h1>
<p>MUNIT trained for {steps} steps on unpaired synthetic scenes in which every sketch has {k} valid paintings
(one background and paint colour each, drawn at random per training image). Scored on {scores["n_inputs"]}
held-out sketches, each painted in {n_samples} styles {html.escape(prior)} (style k is the same code in every
row), against all {k} ground truths. A sample matches a ground truth when at least {scores["match"]:.0%} of its
pixels are within {scores["threshold"]} (on a 0-1 scale) in every channel. Coverage: the fraction of the {k}
ground truths that some sample matches (a unimodal model such as UNIT covers at most 1/{k}). Nearest accuracy:
the mean pixel accuracy of a sample against its closest ground truth (diverse garbage scores low). Diversity:
the mean distance between two samples of one input, in pixels (0-1 scale) and in Inception pool features (over
the first {FEATURE_INPUTS} inputs, for the trained model only; n/a without a local Inception network).</p>
<table class="s"><tr><th></th><th>coverage</th><th>nearest accuracy</th><th>pixel diversity</th>
<th>feature diversity</th></tr>{score_rows}</table>
<h2>Held-out sketches: {n_samples} style samples | {k} ground truths</h2>
<table><tr><th>input</th><th colspan="{n_samples}">samples (styles 0..{n_samples - 1})</th><th></th>
<th colspan="{k}">ground truths (modes 0..{k - 1})</th></tr>{"".join(rows)}</table>
</body></html>"""
    path = out / "index.html"
    path.write_text(page)
    return path
