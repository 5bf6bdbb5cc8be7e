"""Shared helpers of the MUNIT translate / export / serve tests: tiny MUNIT checkpoints in the trainer's layout.

``tiny_munit_checkpoint(base, steps)`` saves ``{"gen", "config", "step"}`` as the trainer does. With
``steps`` > 0 the generator is first fitted by hand (Adam, no GAN) to the reconstruction terms of MUNIT's
objective on the synthetic sketch/paint scenes: each domain's image reconstruction ``dec(enc_c(x), enc_s(x))``
and the cycle ``x_a -> x_ab (random style) -> decode(enc_c(x_ab), s_a, 'a')`` both ways. Enough for the
example-guided path (the style of an image of the target domain) to reconstruct, which an untrained
network does not; nothing here is about realism.
"""

from __future__ import annotations

from pathlib import Path

import torch

MUNIT_TINY = [
    "model.arch=munit",
    "model.ch=8",
    "model.n_res=1",
    "model.n_shared=0",
    "model.style_dim=4",
    "model.style_n_down=2",
    "model.mlp_dim=32",
    "model.init=kaiming",  # as MUNIT; with N(0, 0.02) an untrained decoder all but ignores the style
    "data.crop_size=16",
    "data.synthetic_train=256",
    "data.synthetic_test=8",
    "data.synthetic_modes=4",  # B: four palettes (background and paint), one drawn per image
]


def munit_config(*extra: str):
    from unitgan.config import load_config

    return load_config("demo", [*MUNIT_TINY, *extra])


def synthetic(cfg, domain: str, split: str):
    """The synthetic domain of ``cfg`` with its ``data.synthetic_modes`` modes."""
    from unitgan.data import SyntheticDomain

    d = cfg.data
    length = d.synthetic_train if split == "train" else d.synthetic_test
    return SyntheticDomain(domain, split, d.crop_size, length, seed=cfg.train.seed, modes=d.synthetic_modes)


def fit_reconstruction(gen, cfg, steps: int, seed: int = 0) -> None:
    """``steps`` Adam steps (batch 8, lr 2e-3) on the L1 image and cycle reconstructions, in place."""
    torch.manual_seed(seed)
    ds_a, ds_b = synthetic(cfg, "a", "train"), synthetic(cfg, "b", "train")
    x_a_all = torch.stack([ds_a[i] for i in range(len(ds_a))])  # [n, 1, S, S]
    x_b_all = torch.stack([ds_b[i] for i in range(len(ds_b))])  # [n, 3, S, S]
    opt = torch.optim.Adam(gen.parameters(), lr=2e-3, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(seed)
    gen.train()
    for _ in range(steps):
        idx = torch.randint(len(x_a_all), (8,), generator=g)
        x_a, x_b = x_a_all[idx], x_b_all[idx]
        c_a, s_a = gen.encode(x_a, "a")
        c_b, s_b = gen.encode(x_b, "b")
        x_ab = gen.decode(c_a, gen.sample_style(8, x_a, g), "b")
        x_ba = gen.decode(c_b, gen.sample_style(8, x_b, g), "a")
        loss = (
            (gen.decode(c_a, s_a, "a") - x_a).abs().mean()
            + (gen.decode(c_b, s_b, "b") - x_b).abs().mean()
            + (gen.decode(gen.encode_content(x_ab, "b"), s_a, "a") - x_a).abs().mean()
            + (gen.decode(gen.encode_content(x_ba, "a"), s_b, "b") - x_b).abs().mean()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    gen.eval()


def tiny_munit_checkpoint(base: Path, steps: int = 0) -> Path:
    """A MUNIT checkpoint (A grey, B colour, 16 px, size multiple 4, style_dim 4) under ``base``, fitted for
    ``steps`` steps; made once per (base, steps), later calls reuse it."""
    from unitgan.models import build_generator

    path = Path(base) / f"unitgan-munit-{steps}" / f"step_{steps}.pt"
    if not path.is_file():
        cfg = munit_config()
        torch.manual_seed(0)
        gen = build_generator(cfg.model)
        if steps:
            fit_reconstruction(gen, cfg, steps)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"gen": gen.state_dict(), "config": cfg.to_dict(), "step": steps}, path)
    return path


def tiny_bank_checkpoint(folder: Path) -> Path:
    """An untrained tiny MUNIT checkpoint with ``model.style_prior=bank`` (6 rows per domain, all filled),
    saved as ``folder/bank.pt``."""
    from unitgan.models import build_generator

    cfg = munit_config("model.style_prior=bank", "model.style_bank=6")
    torch.manual_seed(0)
    gen = build_generator(cfg.model)
    for d in ("a", "b"):
        gen.remember_styles(torch.randn(6, 4), d)
    path = folder / "bank.pt"
    torch.save({"gen": gen.state_dict(), "config": cfg.to_dict(), "step": 1}, path)
    return path
