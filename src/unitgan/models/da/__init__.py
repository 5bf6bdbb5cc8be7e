"""The digit-adaptation networks.

- ``authors``: the authors' 32x32 networks, ``CoVAE32x32`` (the generator, ``model.arch=covae32``) and
  ``CoDis32x32`` (discriminator and classifier);
- ``reduced``: ``DADiscriminator``, the shared-trunk discriminator with a class head that the reduced design
  puts beside the UNIT generator.

Training and evaluation build the classifier through :func:`build_discriminator` and read target images through
:func:`eval_domain`, so that both agree on the network and the path.
"""

from __future__ import annotations

from unitgan.config import Config
from unitgan.models.da.authors import CoDis32x32
from unitgan.models.da.reduced import DADiscriminator


def build_discriminator(cfg: Config) -> CoDis32x32 | DADiscriminator:
    """The DA discriminator with its class head (``classify(x, domain)`` -> logits [N, da.n_classes]):
    ``CoDis32x32`` (width ``model.dis_ch``) for ``model.arch=covae32``, else the reduced design's
    ``DADiscriminator``."""
    m = cfg.model
    if m.arch == "covae32":
        return CoDis32x32(m.dis_ch, m.input_nc_a, m.input_nc_b, cfg.da.n_classes)
    return DADiscriminator(cfg)


def eval_domain(cfg: Config) -> str:
    """The first layer target images take through the classifier: ``da.target_path`` ('b' = the target's own, as
    the authors; 'a' = the source's), or 'a' with ``da.source_only`` (one input path)."""
    return "a" if cfg.da.source_only else cfg.da.target_path
