import math

import pytest
import torch

from unitgan.config import LossConfig
from unitgan.losses import GenOutputs, gan_d_loss, gan_g_loss, kl_loss, l1_loss, unit_gen_loss


def test_kl_is_mean_square_of_mu():
    mu = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    assert kl_loss(mu).item() == pytest.approx((1 + 4 + 0.25 + 0) / 4)


def test_l1():
    assert l1_loss(torch.tensor([1.0, -1.0, 0.5]), torch.tensor([0.0, 0.0, 0.0])).item() == pytest.approx(2.5 / 3)


R = [torch.tensor([0.5, 1.5]), torch.tensor([2.0])]  # two scales of real scores
F = [torch.tensor([-1.0, 0.0]), torch.tensor([0.25])]  # fake scores


def sp(x):  # softplus by hand
    return math.log1p(math.exp(x))


@pytest.mark.parametrize(
    "gan_type, d_expected, g_expected",
    [
        (
            "lsgan",
            ((0.25 + 0.25) / 2 + (1 + 0) / 2) + ((1.0) + 0.0625),
            ((4 + 1) / 2) + 0.5625,
        ),
        (
            "nsgan",
            ((sp(-0.5) + sp(-1.5)) / 2 + (sp(-1) + sp(0)) / 2) + (sp(-2) + sp(0.25)),
            ((sp(1) + sp(0)) / 2) + sp(-0.25),
        ),
        (
            "hinge",
            ((0.5 + 0) / 2 + (0 + 1) / 2) + (0 + 1.25),
            (-(-1 + 0) / 2) + -0.25,
        ),
    ],
)
def test_gan_losses_by_hand(gan_type, d_expected, g_expected):
    assert gan_d_loss(R, F, gan_type).item() == pytest.approx(d_expected, rel=1e-6)
    assert gan_g_loss(F, gan_type).item() == pytest.approx(g_expected, rel=1e-6)


def test_unit_objective_weights_and_terms():
    t = lambda v, shape=(1, 1, 2, 2): torch.full(shape, float(v))  # noqa: E731
    out = GenOutputs(
        x_a=t(0),
        x_b=t(1),
        mu_a=t(1),  # kl_a = 1
        mu_b=t(2),  # kl_b = 4
        x_aa=t(0.5),  # recon_a = 0.5
        x_bb=t(0.75),  # recon_b = 0.25
        x_ab=t(0),
        x_ba=t(0),
        mu_ab=t(3),  # cyc_kl_b = 9
        mu_ba=t(0.5),  # cyc_kl_a = 0.25
        x_aba=t(-0.1),  # cyc_recon_a = 0.1
        x_bab=t(0.8),  # cyc_recon_b = 0.2
    )
    d_ab = [torch.zeros(1, 1, 2, 2)]  # lsgan g loss (0 - 1)^2 = 1
    d_ba = [torch.ones(1, 1, 2, 2)]  # (1 - 1)^2 = 0
    w = LossConfig(gan_w=10, kl_w=0.1, recon_w=100, cyc_kl_w=0.01, cyc_recon_w=1000)
    total, terms = unit_gen_loss(out, d_ab, d_ba, w, "lsgan")
    expected_terms = {
        "gan_a": 0.0,
        "gan_b": 1.0,
        "kl_a": 1.0,
        "kl_b": 4.0,
        "recon_a": 0.5,
        "recon_b": 0.25,
        "cyc_kl_a": 0.25,
        "cyc_kl_b": 9.0,
        "cyc_recon_a": 0.1,
        "cyc_recon_b": 0.2,
    }
    assert {k: round(v.item(), 6) for k, v in terms.items()} == pytest.approx(expected_terms)
    by_hand = 10 * 1.0 + 0.1 * 5.0 + 100 * 0.75 + 0.01 * 9.25 + 1000 * 0.3
    assert total.item() == pytest.approx(by_hand, rel=1e-6)
    # zero weights remove a term completely (the ablations rely on it)
    w0 = LossConfig(gan_w=0, kl_w=0, recon_w=0, cyc_kl_w=0, cyc_recon_w=1)
    assert unit_gen_loss(out, d_ab, d_ba, w0, "lsgan")[0].item() == pytest.approx(0.3, rel=1e-6)
