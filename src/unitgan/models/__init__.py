"""Networks: the UNIT generator (encoders + generators with shared blocks) and discriminators."""

from unitgan.models.discriminator import MultiScaleDiscriminator, PatchDiscriminator
from unitgan.models.unit import UNITGenerator

__all__ = ["MultiScaleDiscriminator", "PatchDiscriminator", "UNITGenerator"]
