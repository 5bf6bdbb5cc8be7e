"""Export trained generators for use outside the trainer: ONNX, TorchScript or safetensors, plus export.json.

An export folder holds one format and a manifest, ``export.json``, with everything a user needs to run the
model without unitgan: channels per domain, the normalisation, the size multiple, the files per direction
and the full training config. Each direction is one module ``x_src -> x_dst`` (encoder of the source
domain, shared blocks, generator of the target domain; z = mu as at test time):

    a2b.onnx              input "x_a" [N, C_a, H, W] -> output "x_ab" [N, C_b, H, W]   (format onnx)
    a2b.torchscript.pt    the same as a scripted module                                (format torchscript)
    generator.safetensors the generator weights needed for the exported directions     (format safetensors)
    config.json           the full config, to rebuild ``UNITGenerator``                (format safetensors)
    export.json           the manifest

A MUNIT generator (``model.arch=munit``, manifest ``style_dim`` > 0) is multimodal: each direction takes the
style code of the target domain as a second input, and the target domain's style encoder is exported too, so
that an example image of that domain can give the style:

    a2b.onnx              inputs "x_a" [N, C_a, H, W], "s_b" [N or 1, style_dim] -> output "x_ab"
    style_b.onnx          input "x_b" [N, C_b, H, W] -> output "s_b" [N, style_dim] (manifest "style_encoders")

Draw styles from N(0, I) for random outputs. Batch, height and width are dynamic; the raw models need H and W padded as
:func:`unitgan.inference.pad_for_model` does (the manifest's ``size_rule``), and expect images at the
training scale (``training_scale``, ``scale_rule``).

``write`` writes an export (:func:`export_checkpoint`, :func:`export_generator`); ``read`` reads one back
(:func:`load_export` returns an :class:`unitgan.inference.ExportedTranslator`). The public names of both are
importable from here.
"""

from unitgan.export.read import (
    FORMATS,
    MANIFEST,
    MANIFEST_VERSION,
    MAX_MANIFEST_BYTES,
    SAFETENSORS_FILE,
    import_onnxruntime,
    is_export_dir,
    load_export,
    read_manifest,
    style_target_domains,
    validate_manifest,
)
from unitgan.export.write import (
    CONFIG_FILE,
    ONNX_OPSET,
    PARITY_TOL,
    export_checkpoint,
    export_generator,
    resolve_directions,
)

__all__ = [
    "CONFIG_FILE",
    "FORMATS",
    "MANIFEST",
    "MANIFEST_VERSION",
    "MAX_MANIFEST_BYTES",
    "ONNX_OPSET",
    "PARITY_TOL",
    "SAFETENSORS_FILE",
    "export_checkpoint",
    "export_generator",
    "import_onnxruntime",
    "is_export_dir",
    "load_export",
    "read_manifest",
    "resolve_directions",
    "style_target_domains",
    "validate_manifest",
]
