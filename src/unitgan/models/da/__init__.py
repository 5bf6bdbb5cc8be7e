"""The digit-adaptation networks.

- ``authors``: the authors' 32x32 networks, ``CoVAE32x32`` (the generator, ``model.arch=covae32``) and
  ``CoDis32x32`` (discriminator and classifier);
- ``reduced``: ``DADiscriminator``, the shared-trunk discriminator with a class head that the reduced design
  puts beside the UNIT generator.
"""
