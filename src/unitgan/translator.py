"""The one way to open a translator: :func:`open_translator`, for a checkpoint file, a run folder or an export
folder, on the torch or onnx engine. Every command (translate, serve, evaluate, demo) opens its model here.

It sits above :mod:`unitgan.inference` (the translator classes) and :mod:`unitgan.export` (writing and reading
exports), because it needs both and ``unitgan.export`` builds on ``unitgan.inference``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from unitgan.errors import UnitganError
from unitgan.export import export_checkpoint, is_export_dir, load_export, read_manifest
from unitgan.inference import BaseTranslator, Translator

log = logging.getLogger(__name__)

ENGINES = ("torch", "onnx")


def open_translator(
    source: str | Path,
    engine: str | None = "torch",
    device: str = "auto",
    precision: str = "fp32",
    threads: int = 0,
) -> BaseTranslator:
    """A translator for ``source``: a checkpoint file, a run folder (its newest checkpoint that loads) or an export
    folder (one holding ``export.json``).

    engine 'torch': a checkpoint (:class:`~unitgan.inference.Translator`, in ``precision``) or a TorchScript or
    safetensors export. engine 'onnx': an ONNX export, or a checkpoint exported to ONNX in a temporary folder
    first. None: the source's own engine (torch for a checkpoint, onnx for an ONNX export). ``device``: torch
    device for checkpoints, TorchScript and safetensors ('auto', 'cpu', 'cuda', ...); ``threads``: onnxruntime
    intra-op threads (0 = its default). Exports run in fp32 only.
    """
    if engine is not None and engine not in ENGINES:
        raise UnitganError(f"engine '{engine}' is not one of {', '.join(ENGINES)}")
    if engine == "onnx" and precision != "fp32":
        raise UnitganError(f"the onnx engine runs in fp32 only, got precision {precision}")
    if is_export_dir(source):
        fmt = read_manifest(source)["format"]
        engine = engine or ("onnx" if fmt == "onnx" else "torch")
        if (engine == "onnx") != (fmt == "onnx"):
            want = "onnx" if engine == "onnx" else "torchscript or safetensors"
            raise UnitganError(f"export '{source}' is in {fmt} format; engine {engine} needs a {want} export")
        if precision != "fp32":
            raise UnitganError(f"exports run in fp32 only, got precision {precision}")
        return load_export(source, device=device, threads=threads)
    if engine in ("torch", None):
        return Translator.from_checkpoint(source, device, precision)
    with tempfile.TemporaryDirectory(prefix="unitgan-onnx-") as tmp:
        log.info("exporting %s to ONNX in a temporary folder", source)
        export_checkpoint(source, tmp, "both", "onnx")
        return load_export(tmp, threads=threads)  # sessions hold the models in memory
