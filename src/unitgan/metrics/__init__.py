"""Quality metrics."""

from unitgan.metrics.pixel import pixel_accuracy

__all__ = ["pixel_accuracy"]
