"""Real images with a ground truth: emoji drawn in two styles (Google Noto = A, Twitter Twemoji = B), 64x64.

The same emoji exist in both styles, paired by index in ``../shared/data/emoji_{google,twitter}.npz``. Every
method trains UNPAIRED (each side shuffled on its own) on the training emoji, translates the held-out emoji
both ways at 64x64, and is scored against the other style's drawing of the same emoji:

    L1, PSNR, SSIM (scikit-image), pixel accuracy at 0.1      against the true counterpart, per image, averaged
    FID, KID (offline Inception)                               translations vs the target style's real images

With 495 test images FID is biased upwards (it needs thousands of images); KID is unbiased and the fairer of
the two here. Methods:

    identity        the input copied (how close the two styles already are)
    untrained       the recipe's network at its initial weights
    unitgan         the recipe (``--preset``, default ``small``, plus the overrides and the variant's), trained for
                    ``--budget-min`` CPU minutes on one thread (a short calibration run sets the step count)
    peer:NAME       translations written by a peer (``benchmarks/peers/run_peer.py``) under
                    ``<out>/peers/NAME/{a2b,b2a}/<emoji>.png``; scored, not trained, here

``--split val`` scores on a validation split cut from the training emoji (by base emoji, 10%), which is what
settings are chosen on; ``--split test`` scores the 495 test emoji (the published table). The training set is
the same for both: the training emoji less the validation ones.

    python benchmarks/emoji.py --methods identity untrained unitgan --seeds 0 1 2 --budget-min 30 --split test

Writes ``<out>/results.json`` (one entry per method and seed), ``<out>/table.md``, ``<out>/grid.png`` (rows:
input, each method, truth, for 12 fixed emoji, both directions) and every translation as PNG under
``<out>/translations/``, and ``<out>/runs.csv`` (one row per run); with ``--stages N``, ``<out>/curve.csv`` and
``<out>/curve.png`` (each unitgan run scored after each N-th of its budget: L1 and pixel accuracy against CPU
minutes). ``--export DIR`` copies the table, the CSVs, the JSON and the PNGs to DIR. Rerunning the command skips
finished runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DATA_DIR,
    add_output_args,
    cpu_timer,
    device_name,
    export,
    fmt,
    markdown_table,
    run_cached,
    setup,
    write_runs_csv,
    write_table,
)

from unitgan.config import load_config  # noqa: E402
from unitgan.inference import Translator  # noqa: E402
from unitgan.metrics.fid import extract_features, fid_kid, load_inception  # noqa: E402
from unitgan.metrics.paired import paired_scores  # noqa: E402
from unitgan.models import build_generator  # noqa: E402
from unitgan.train.loop import train  # noqa: E402

SKIN_TONES = {"1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff"}
VAL_FRACTION = 0.1
GRID_EMOJI = 12

# the levers measured on the validation split; each is a set of overrides on top of the preset
# The levers were measured (docs/results/emoji.md) on the `small` preset as it was before it took the winning
# recipe; OLD_SMALL restores those settings, so every lever below is that preset plus the lever.
OLD_SMALL = [
    "model.ch=32",
    "model.dis_ch=32",
    "optim.lr=0.0002",
    "loss.kl_w=0.1",
    "loss.cyc_kl_w=0.1",
    "data.load_size=72",
]
NN64 = [*OLD_SMALL, "model.upsample=nearest", "data.load_size=64"]
# native 64x64, quarter-width networks (about 4x fewer multiply-adds per step) and a 5x higher learning rate
FAST = [*OLD_SMALL, "data.load_size=64", "model.ch=16", "model.dis_ch=16", "optim.lr=0.001"]
KL01 = ["loss.kl_w=0.01", "loss.cyc_kl_w=0.01"]
VARIANTS: dict[str, list[str]] = {
    "recipe": [],  # the preset as it is (for `small`: FAST + KL01)
    "small_before": OLD_SMALL,
    "nearest": [*OLD_SMALL, "model.upsample=nearest"],
    "native64": [*OLD_SMALL, "data.load_size=64"],
    "nn64": NN64,
    "native64_lr1e-3": [*OLD_SMALL, "data.load_size=64", "optim.lr=0.001"],
    "fast": FAST,
    "fast_kl0.01": [*FAST, *KL01],
    "fast_ndown1": [*FAST, "model.n_down=1"],
    "fast_kl0.001": [*FAST, "loss.kl_w=0.001", "loss.cyc_kl_w=0.001"],
    "fast_kl0.01_nearest": [*FAST, *KL01, "model.upsample=nearest"],
    "fast_kl0.01_diffaug": [*FAST, *KL01, "loss.diffaug=color,translation,cutout"],
    "fast_kl0.01_ndown1": [*FAST, *KL01, "model.n_down=1"],
    "native64_lr1e-3_kl0.01": [*OLD_SMALL, "data.load_size=64", "optim.lr=0.001", *KL01],
    "fast_kl0.01_ema": [*FAST, *KL01, "train.ema=0.99"],
    # the seed-to-seed spread: the preset before it took model.tied_init, and two other cures tried on it
    "recipe_untied": ["model.tied_init=false"],
    "untied_ema0.999": ["model.tied_init=false", "train.ema=0.999"],
    "untied_lr5e-4": ["model.tied_init=false", "optim.lr=0.0005"],
    # levers on the preset as it is
    "recipe_sn": ["model.dis_spectral_norm=true"],
    "recipe_hinge": ["model.gan_type=hinge"],
    "recipe_batch8": ["data.batch_size=8"],
    "recipe_recon10": ["loss.recon_w=10", "loss.cyc_recon_w=10"],
    # the preset's step schedule (halve the lr every lr_step steps) compressed to a 30-minute budget
    "recipe_lrstep1500": ["optim.lr_step=1500"],
}


def load_pair(data_dir: Path = DATA_DIR) -> dict[str, np.ndarray]:
    """The two styles' arrays: x_train_a/b [N, 64, 64, 3] uint8, x_test_a/b, names_train, names_test."""
    g, t = np.load(data_dir / "emoji_google.npz"), np.load(data_dir / "emoji_twitter.npz")
    if not (np.array_equal(g["names_train"], t["names_train"]) and np.array_equal(g["names_test"], t["names_test"])):
        raise SystemExit("the two emoji files are not paired by index")
    return {
        "x_train_a": g["x_train"],
        "x_train_b": t["x_train"],
        "x_test_a": g["x_test"],
        "x_test_b": t["x_test"],
        "names_train": g["names_train"],
        "names_test": g["names_test"],
    }


def base_emoji(name: str) -> str:
    """The code points of an emoji file name without skin-tone modifiers (variants stay on one side)."""
    return "-".join(c for c in Path(name).stem.split("-") if c not in SKIN_TONES)


def validation_mask(names: np.ndarray, fraction: float = VAL_FRACTION) -> np.ndarray:
    """[N] bool: the training emoji held out for validation, whole base emoji at a time (fixed seed)."""
    bases = sorted({base_emoji(n) for n in names})
    rng = np.random.default_rng(0)
    held = set(rng.choice(bases, size=round(fraction * len(bases)), replace=False).tolist())
    return np.array([base_emoji(n) in held for n in names])


def splits(pair: dict[str, np.ndarray], max_train: int = 0, max_images: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """train / val / test: {'a', 'b', 'names'} each; val is cut from the training emoji. ``max_train`` and
    ``max_images`` (0 = all) keep the first so many training and scored emoji (for smoke tests)."""
    val = validation_mask(pair["names_train"])
    out = {
        "train": {"a": pair["x_train_a"][~val], "b": pair["x_train_b"][~val], "names": pair["names_train"][~val]},
        "val": {"a": pair["x_train_a"][val], "b": pair["x_train_b"][val], "names": pair["names_train"][val]},
        "test": {"a": pair["x_test_a"], "b": pair["x_test_b"], "names": pair["names_test"]},
    }
    for split, limit in (("train", max_train), ("val", max_images), ("test", max_images)):
        if limit:
            out[split] = {k: v[:limit] for k, v in out[split].items()}
    return out


def write_folders(root: Path, data: dict[str, dict[str, np.ndarray]], split: str) -> Path:
    """trainA/ trainB/ (the training emoji) and testA/ testB/ (the scored split) as PNG, as a user would have
    them; written once per split (a ``.done`` marker)."""
    root = root / f"folders_{split}"
    if (root / ".done").is_file():
        return root
    for folder, arrays, names in (
        ("trainA", data["train"]["a"], data["train"]["names"]),
        ("trainB", data["train"]["b"], data["train"]["names"]),
        ("testA", data[split]["a"], data[split]["names"]),
        ("testB", data[split]["b"], data[split]["names"]),
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for img, name in zip(arrays, names, strict=True):
            Image.fromarray(img).save(root / folder / name)
    (root / ".done").write_text("")
    return root


def to_tensor(x: np.ndarray) -> torch.Tensor:
    """[N, H, W, 3] uint8 -> [N, 3, H, W] float in [-1, 1]."""
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> [N, H, W, 3] uint8 (what a PNG of the translation holds)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def translate_all(translator: Translator, x: np.ndarray, direction: str, batch: int = 64) -> np.ndarray:
    t = to_tensor(x)
    with torch.no_grad():
        y = torch.cat([translator.translate(t[i : i + batch], direction) for i in range(0, len(t), batch)])
    return to_uint8(y)


def save_translations(folder: Path, images: np.ndarray, names: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for img, name in zip(images, names, strict=True):
        Image.fromarray(img).save(folder / name)


def read_translations(folder: Path, names: np.ndarray) -> np.ndarray:
    """[N, 64, 64, 3] uint8 read back from ``folder``, in the order of ``names``."""
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise SystemExit(f"{folder} lacks {len(missing)} translation(s), e.g. {missing[0]}")
    return np.stack([np.asarray(Image.open(folder / n).convert("RGB").resize((64, 64), Image.BICUBIC)) for n in names])


def recipe_config(args: argparse.Namespace, variant: str, seed: int, run_dir: Path, root: Path, steps: int):
    overrides = [
        f"data.root={root}",
        "data.num_workers=0",  # all work in this one-thread process, so its CPU time is the run's cost
        f"train.out_dir={run_dir}",
        f"train.seed={seed}",
        "train.threads=1",
        "train.device=cpu",
        f"train.steps={steps}",
        f"train.ckpt_every={max(steps, 1)}",
        f"train.image_every={max(steps, 1)}",
        "train.log_every=20",
        *args.overrides,
        *VARIANTS[variant],
    ]
    return load_config(args.preset, overrides)


def train_for_budget(
    args: argparse.Namespace, variant: str, seed: int, run_dir: Path, root: Path, scored: dict | None = None
) -> dict:
    """Train the recipe for ``args.budget_min`` CPU minutes: a timing run of a few steps, then the same
    run resumed to the step count the measured rate allows (resume is exact, so this is one run).

    With ``args.stages`` > 1 the resumed part runs in that many equal parts, and after each the paired scores
    of the ``scored`` split's translations (L1, pixel accuracy; no Inception) join ``curve``: the learning curve
    of the one run, which ends at the same weights as an unstaged run."""
    calibration = args.calibration_steps
    with cpu_timer() as t0:
        result = train(recipe_config(args, variant, seed, run_dir, root, calibration), progress=False)
    if result.interrupted:
        raise KeyboardInterrupt
    steps = max(calibration, int(args.budget_min * 60 / (t0["cpu_s"] / calibration)))
    cpu_s, wall_s, curve = t0["cpu_s"], t0["wall_s"], []
    for k in range(1, args.stages + 1):
        stage_steps = calibration + round((steps - calibration) * k / args.stages)
        with cpu_timer() as t1:
            result = train(recipe_config(args, variant, seed, run_dir, root, stage_steps), progress=False)
        if result.interrupted:
            raise KeyboardInterrupt
        cpu_s, wall_s = cpu_s + t1["cpu_s"], wall_s + t1["wall_s"]
        translator = Translator.from_checkpoint(result.checkpoint, device="cpu")
        if args.stages > 1 and scored is not None:
            point = {"steps": result.step, "cpu_s": cpu_s}
            for d, src, dst in (("a2b", "a", "b"), ("b2a", "b", "a")):
                s = paired_scores(to_tensor(translate_all(translator, scored[src], d)), to_tensor(scored[dst]))
                point |= {f"{d}_l1": s["l1"], f"{d}_pixel_accuracy": s["pixel_accuracy"]}
            curve.append(point)
    return {"translator": translator, "steps": result.step, "cpu_s": cpu_s, "wall_s": wall_s, "curve": curve}


def real_features(args: argparse.Namespace, data: dict, net) -> dict[str, torch.Tensor]:
    """Inception features of the scored split's real images of each style (cached in the out folder)."""
    path = args.out / f"real_features_{args.split}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        return torch.load(path, weights_only=True)
    feats = {d: extract_features(net, to_tensor(data[args.split][d]).split(50)) for d in ("a", "b")}
    torch.save(feats, path)
    return feats


def score(args: argparse.Namespace, data: dict, x_ab: np.ndarray, x_ba: np.ndarray) -> dict:
    """Paired scores and FID/KID of one method's translations (uint8, as saved)."""
    split = data[args.split]
    out: dict = {}
    for direction, pred, truth in (("a2b", x_ab, split["b"]), ("b2a", x_ba, split["a"])):
        s = paired_scores(to_tensor(pred), to_tensor(truth))
        out[direction] = {k: s[k] for k in ("l1", "psnr", "ssim", "pixel_accuracy") if k in s}
    if args.fid:
        net = load_inception(args.inception or None)
        real = real_features(args, data, net)
        for direction, pred, target in (("a2b", x_ab, "b"), ("b2a", x_ba, "a")):
            fake = extract_features(net, to_tensor(pred).split(50))
            fk = fid_kid(real[target], fake, kid_subsets=100, kid_subset_size=min(1000, len(fake)))
            out[direction].update(fid=fk["fid"], kid=fk["kid"], kid_std=fk["kid_std"])
    return out


def run_one(method: str, variant: str, seed: int, args: argparse.Namespace) -> dict:
    data = splits(load_pair(args.data), args.max_train, args.max_images)
    split = data[args.split]
    root = write_folders(args.out, data, args.split)
    name = method.replace(":", "_") if method != "unitgan" else f"unitgan_{variant}"
    trans_dir = args.out / "translations" / f"{name}_seed{seed}"
    info: dict = {"method": method, "variant": variant, "seed": seed, "cpu_s": 0.0, "wall_s": 0.0, "steps": 0}
    if method == "identity":
        x_ab, x_ba = split["a"], split["b"]
    elif method.startswith("peer:"):
        peer_dir = args.out / "peers" / method.split(":", 1)[1]
        x_ab, x_ba = (read_translations(peer_dir / d, split["names"]) for d in ("a2b", "b2a"))
        meta = peer_dir / "run.json"
        if meta.is_file():
            info.update({k: v for k, v in json.loads(meta.read_text()).items() if k in ("cpu_s", "wall_s", "steps")})
    else:
        if method == "untrained":
            cfg = recipe_config(args, variant, seed, args.out / "runs" / "untrained", root, 1)
            torch.manual_seed(seed)
            translator = Translator(build_generator(cfg.model), cfg, torch.device("cpu"))
        elif method == "unitgan":
            trained = train_for_budget(args, variant, seed, args.out / "runs" / f"{name}_seed{seed}", root, split)
            translator = trained.pop("translator")
            info.update(trained)
        else:
            raise SystemExit(f"unknown method '{method}'")
        x_ab, x_ba = translate_all(translator, split["a"], "a2b"), translate_all(translator, split["b"], "b2a")
    save_translations(trans_dir / "a2b", x_ab, split["names"])
    save_translations(trans_dir / "b2a", x_ba, split["names"])
    return {
        **info,
        "translations": str(trans_dir.relative_to(args.out)),
        "device": device_name("cpu"),
        **score(args, data, x_ab, x_ba),
    }


def label(r: dict) -> str:
    if r["method"] == "unitgan":
        return "unitgan" if r["variant"] == "recipe" else f"unitgan {r['variant']}"
    return r["method"].removeprefix("peer:")


def table(results: dict) -> str:
    groups: dict[str, list[dict]] = {}
    for r in results.values():
        groups.setdefault(label(r), []).append(r)
    rows = []
    for name, runs in groups.items():
        row = [name, str(len(runs)), f"{np.mean([r['cpu_s'] for r in runs]) / 60:.1f}"]
        for d in ("a2b", "b2a"):
            for key, digits in (("l1", 4), ("pixel_accuracy", 3), ("psnr", 2), ("ssim", 3), ("kid", 4), ("fid", 1)):
                values = [r[d][key] for r in runs if key in r[d]]
                row.append(
                    fmt(values, digits=digits) if len(values) > 1 else (f"{values[0]:.{digits}f}" if values else "-")
                )
        rows.append(row)
    header = ["method", "seeds", "CPU min"]
    for d in ("A->B", "B->A"):
        header += [f"{d} L1", f"{d} pix.acc", f"{d} PSNR", f"{d} SSIM", f"{d} KID", f"{d} FID"]
    return markdown_table(header, rows)


def grid(args: argparse.Namespace, results: dict) -> Path:
    """One PNG: for each direction, rows input / each method (its first seed) / truth, 12 fixed emoji."""
    split = splits(load_pair(args.data), args.max_train, args.max_images)[args.split]
    idx = np.linspace(0, len(split["names"]) - 1, GRID_EMOJI).round().astype(int)
    firsts: dict[str, dict] = {}
    for r in sorted(results.values(), key=lambda r: r["seed"]):
        firsts.setdefault(label(r), r)
    rows: list[tuple[str, np.ndarray]] = []
    for d, src, dst in (("a2b", "a", "b"), ("b2a", "b", "a")):
        rows.append((f"input ({'Google' if src == 'a' else 'Twitter'})", split[src][idx]))
        for name, r in firsts.items():
            if name == "identity":
                continue
            rows.append((name, read_translations(args.out / r["translations"] / d, split["names"][idx])))
        rows.append((f"truth ({'Twitter' if dst == 'b' else 'Google'})", split[dst][idx]))
    label_w, cell = 150, 64
    canvas = Image.new("RGB", (label_w + GRID_EMOJI * cell, len(rows) * cell), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (text, imgs) in enumerate(rows):
        draw.text((4, i * cell + cell // 2 - 6), text, fill="black")
        for j, img in enumerate(imgs):
            canvas.paste(Image.fromarray(img), (label_w + j * cell, i * cell))
    path = args.out / "grid.png"
    canvas.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)  # a palette keeps the file small
    return path


def write_curves(args: argparse.Namespace, results: dict) -> list[Path]:
    """``curve.csv`` (one row per unitgan run and stage: method, variant, seed, steps, cpu_s, L1 and pixel
    accuracy both ways) and ``curve.png`` (L1 against CPU minutes, identity's L1 dashed), when runs have curves."""
    runs = {k: r for k, r in results.items() if r.get("curve")}
    if not runs:
        return []
    columns = ["steps", "cpu_s", *(f"{d}_{k}" for d in ("a2b", "b2a") for k in ("l1", "pixel_accuracy"))]
    csv_path = args.out / "curve.csv"
    lines = [",".join(["method", "variant", "seed", *columns])]
    for key, r in runs.items():
        lines += [",".join([*key.split("/"), *(f"{p[c]:.6g}" for c in columns)]) for p in r["curve"]]
    csv_path.write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    identity = next((r for r in results.values() if r["method"] == "identity"), None)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, d, title in zip(
        axes, ("a2b", "b2a"), ("A->B (Google -> Twitter)", "B->A (Twitter -> Google)"), strict=True
    ):
        for r in runs.values():
            minutes = [p["cpu_s"] / 60 for p in r["curve"]]
            ax.plot(
                minutes, [p[f"{d}_l1"] for p in r["curve"]], marker="o", ms=3, label=f"{label(r)}, seed {r['seed']}"
            )
        if identity is not None:
            ax.axhline(identity[d]["l1"], color="gray", ls="--", label="identity (input copied)")
        ax.set_title(title)
        ax.set_xlabel("training CPU minutes (1 thread)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"L1 to the true drawing, {args.split} split")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    png_path = args.out / "curve.png"
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return [csv_path, png_path]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["identity", "untrained", "unitgan"], metavar="METHOD")
    p.add_argument("--variants", nargs="+", default=["recipe"], metavar="NAME", help=f"of {', '.join(VARIANTS)}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--preset", default="small", help="the preset the unitgan runs start from")
    p.add_argument("--budget-min", type=float, default=30.0, help="CPU minutes of training per run (one thread)")
    p.add_argument(
        "--stages", type=int, default=1, help="score unitgan runs after each of N equal parts of the budget (a curve)"
    )
    p.add_argument("--calibration-steps", type=int, default=40, help="steps of the timing run that sets the length")
    p.add_argument("--max-train", type=int, default=0, help="train on the first N training emoji (0 = all)")
    p.add_argument("--max-images", type=int, default=0, help="score the first N emoji of the split (0 = all)")
    p.add_argument("--split", choices=["val", "test"], default="val")
    p.add_argument("--prepare", action="store_true", help="only write the PNG folders (for the peers) and exit")
    p.add_argument("--fid", action=argparse.BooleanOptionalAction, default=True, help="FID and KID (Inception)")
    p.add_argument("--inception", default="", help="local Inception file (default: the bundled one)")
    p.add_argument("--data", type=Path, default=DATA_DIR, help="folder with emoji_google.npz, emoji_twitter.npz")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process")
    add_output_args(p, "emoji", "overrides of the preset for every unitgan run")
    args = p.parse_args(argv)
    if args.stages < 1:
        p.error(f"--stages must be >= 1, got {args.stages}")
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup(args.threads)
    if args.prepare:
        print(write_folders(args.out, splits(load_pair(args.data), args.max_train, args.max_images), args.split))
        return 0
    items = []
    for seed in args.seeds:
        for method in args.methods:
            if method == "unitgan":
                items += [(method, v, seed) for v in args.variants]
            elif method == "identity" or method.startswith("peer:"):
                if seed == args.seeds[0]:
                    items.append((method, "-", 0))
            elif seed == args.seeds[0]:  # untrained: one draw of the initial weights is enough
                items.append((method, args.variants[0], seed))
    if args.fid:  # the real images' features once, here, before the runs (each run reads them from the cache)
        real_features(
            args, splits(load_pair(args.data), args.max_train, args.max_images), load_inception(args.inception or None)
        )
    results = run_cached(
        "emoji",
        items,
        run_one,
        args,
        lambda r: (
            f"A->B L1 {r['a2b']['l1']:.4f} acc {r['a2b']['pixel_accuracy']:.3f}  "
            f"B->A L1 {r['b2a']['l1']:.4f} acc {r['b2a']['pixel_accuracy']:.3f}  "
            f"({r['steps']} steps, {r['cpu_s'] / 60:.1f} CPU min)"
        ),
    )
    text = (
        f"Emoji, Google <-> Twitter, 64x64, {args.split} split, scored against the true counterpart; "
        f"unitgan runs {args.budget_min:g} CPU min on one thread each (mean ± std over seeds). "
        "FID on a few hundred images is biased; KID is the fairer number.\n\n" + table(results)
    )
    write_table(args.out, text)
    flat = {
        key: {
            "cpu_s": r["cpu_s"],
            "steps": r["steps"],
            **{f"{d}_{k}": v for d in ("a2b", "b2a") for k, v in r[d].items()},
        }
        for key, r in results.items()
    }
    columns = {c: c for c in ("steps", "cpu_s")}
    columns |= {
        f"{d}_{k}": f"{d}_{k}" for d in ("a2b", "b2a") for k in ("l1", "pixel_accuracy", "psnr", "ssim", "kid", "fid")
    }
    write_runs_csv(args.out, flat, ["method", "variant", "seed"], columns)
    print(f"grid: {grid(args, results)}")
    for path in write_curves(args, results):
        print(f"curve: {path}")
    export(args.out, args.export, ["results.json", "table.md", "runs.csv", "grid.png", "curve.csv", "curve.png"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
