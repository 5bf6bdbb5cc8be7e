"""FID on small sets: the low-rank computation and the small-sample warning (no Inception network needed)."""

from __future__ import annotations

import numpy as np
import pytest

from unitgan.errors import UnitganError
from unitgan.metrics.fid import (
    FID_MIN_IMAGES,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    small_sample_warning,
)


@pytest.mark.parametrize("n1, n2, d", [(5, 7, 20), (20, 20, 20), (3, 4, 300)])
def test_fewer_samples_than_dimensions_give_the_textbook_value(n1, n2, d):
    rng = np.random.default_rng(n1 + d)
    f1 = rng.normal(size=(n1, d))
    f2 = rng.normal(size=(n2, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + 0.3
    full = frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    assert fid_from_features(f1, f2) == pytest.approx(full, rel=1e-6)
    assert fid_from_features(f1, f1) == pytest.approx(0.0, abs=1e-9)


def test_a_shift_of_a_small_set_gives_the_squared_shift():
    f = np.random.default_rng(0).normal(size=(6, 50))
    assert fid_from_features(f, f + 0.5) == pytest.approx(50 * 0.25, rel=1e-9)


def test_small_sets_with_different_widths_are_refused():
    with pytest.raises(UnitganError, match="differ in width"):
        fid_from_features(np.zeros((3, 4)), np.zeros((3, 5)))


def test_small_sample_warning_names_the_counts_and_points_to_kid():
    msg = small_sample_warning(18, 12)
    assert msg is not None and "18 real and 12 translated images" in msg and "KID" in msg and "\n" not in msg
    assert small_sample_warning(FID_MIN_IMAGES, 50_000) is None
    assert small_sample_warning(50_000, FID_MIN_IMAGES - 1) is not None  # either side small is enough
    assert small_sample_warning(100, 100, min_images=100) is None
    assert FID_MIN_IMAGES == 2048
