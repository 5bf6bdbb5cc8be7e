"""Quality metrics: pixel accuracy, FID/KID on Inception features, domain-adaptation accuracy."""

from unitgan.metrics.da import classification_accuracy
from unitgan.metrics.fid import (
    fid_from_features,
    frechet_distance,
    kernel_inception_distance,
    load_inception,
)
from unitgan.metrics.pixel import pixel_accuracy, synthetic_accuracy

__all__ = [
    "classification_accuracy",
    "fid_from_features",
    "frechet_distance",
    "kernel_inception_distance",
    "load_inception",
    "pixel_accuracy",
    "synthetic_accuracy",
]
