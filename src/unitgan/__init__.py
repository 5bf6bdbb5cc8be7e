"""unitgan: UNIT (Liu, Breuel, Kautz, NIPS 2017) unsupervised image-to-image translation."""

__version__ = "0.1.0"

from unitgan.config import Config, load_config  # noqa: E402
from unitgan.errors import UnitganError  # noqa: E402

__all__ = ["Config", "UnitganError", "__version__", "load_config"]
