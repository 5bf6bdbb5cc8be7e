"""DiffAugment in front of the discriminators: each transform, its gradients, and its config key."""

from __future__ import annotations

import pytest
import torch

from unitgan.config import load_config
from unitgan.errors import UnitganError
from unitgan.models.augment import color, cutout, diff_augment, translation


def test_translation_shifts_whole_images_and_fills_with_zero():
    torch.manual_seed(0)
    x = torch.arange(4 * 2 * 16 * 16, dtype=torch.float32).view(4, 2, 16, 16) + 1  # no zero inside
    y = translation(x)
    for i in range(4):
        kept = y[i] != 0
        # every kept pixel is the input's pixel at one common offset, the same in both channels
        rows, cols = torch.nonzero(kept[0], as_tuple=True)
        src = y[i, 0, rows, cols] - 1 - i * 2 * 16 * 16  # channel 0's flat index of the pixel each one came from
        offsets = {(int(v // 16 - r), int(v % 16 - c)) for v, r, c in zip(src, rows, cols, strict=True)}
        assert len(offsets) == 1
        oy, ox = offsets.pop()
        assert abs(oy) <= 2 and abs(ox) <= 2  # 1/8 of 16
        assert torch.equal(kept[0], kept[1]) and int(kept[0].sum()) == (16 - abs(oy)) * (16 - abs(ox))


def test_cutout_zeroes_one_square_of_half_the_size_inside_the_image():
    torch.manual_seed(1)
    y = cutout(torch.ones(64, 3, 16, 16))
    zero = y[:, 0] == 0  # [N, H, W]
    assert torch.equal(zero, (y == 0).all(dim=1))  # the same square in every channel
    for m in zero:
        rows, cols = torch.nonzero(m, as_tuple=True)
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert int(m.sum()) == h * w  # a rectangle, clipped by the border at most to ...
        assert h <= 8 and w <= 8 and h >= 4 and w >= 4  # ... at least half of its 8x8


def test_color_keeps_grey_images_grey_and_changes_colour_ones():
    torch.manual_seed(2)
    grey = torch.rand(3, 1, 8, 8) * 2 - 1
    assert color(grey).shape == grey.shape
    rgb = torch.rand(3, 3, 8, 8) * 2 - 1
    assert not torch.allclose(color(rgb), rgb)


def test_gradients_flow_through_every_policy_and_empty_policy_is_identity():
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    diff_augment(x, ("color", "translation", "cutout")).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert diff_augment(x, ()) is x


def test_config_refuses_unknown_policies_and_other_architectures():
    cfg = load_config("demo", ["loss.diffaug=color, translation"])
    assert cfg.loss.diffaug_policy() == ("color", "translation")
    with pytest.raises(UnitganError, match="loss.diffaug.*unknown policy.*'flip'"):
        load_config("demo", ["loss.diffaug=color,flip"])
    with pytest.raises(UnitganError, match="loss.diffaug.*model.arch=unit"):
        load_config("munit_demo", ["loss.diffaug=color"])


def test_discriminators_see_augmented_images_in_both_phases(monkeypatch):
    """With a policy, the D phase and the E/G phase pass their images through diff_augment; without, not."""
    from unitgan.train import trainer as unit_trainer

    seen = []

    def spy(x, policy):
        seen.append(policy)
        return x

    monkeypatch.setattr(unit_trainer, "diff_augment", spy)
    cfg = load_config("demo", ["loss.diffaug=translation", "model.ch=8", "model.dis_ch=8", "model.n_res=1"])
    t = unit_trainer.UNITTrainer(cfg, torch.device("cpu"))
    gen_phase, dis_phase = t.build_phases(cfg)
    x_a, x_b = torch.randn(2, 1, 16, 16), torch.randn(2, 3, 16, 16)
    _, _, out = gen_phase(x_a, x_b)
    dis_phase(x_a, x_b, out.x_ab.detach(), out.x_ba.detach())
    assert seen == [("translation",)] * 4
