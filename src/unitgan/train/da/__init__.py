"""Unsupervised domain adaptation on digits (the paper's protocol): A = labelled source, B = unlabelled target.

- ``common``: what both trainers share (data, evaluation, the optimiser step, checkpoint state);
- ``reduced``: the reduced design, the UNIT generator with a shared-trunk discriminator (trainer ``unit_da``);
- ``authors``: the authors' networks ``CoVAE32x32`` + ``CoDis32x32``, ``model.arch=covae32`` (trainer ``unit_da32``).
"""
