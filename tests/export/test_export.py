"""Export to ONNX / TorchScript / safetensors: parity with PyTorch, the manifest, loading, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from serve_support import random_image, tiny_checkpoint

from unitgan.cli import main
from unitgan.config import load_config
from unitgan.errors import UnitganError
from unitgan.export import (
    FORMATS,
    PARITY_TOL,
    SAFETENSORS_FILE,
    export_checkpoint,
    export_generator,
    load_export,
)
from unitgan.inference import Translator
from unitgan.models import UNITGenerator

# (batch, height, width): multiples of 4 (the raw model) and odd sizes (padded and cropped back)
SHAPES = [(1, 16, 16), (2, 24, 40), (3, 13, 22)]


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def reference(checkpoint) -> Translator:
    return Translator.from_checkpoint(checkpoint, "cpu")


@pytest.fixture(scope="session")
def exports(checkpoint, tmp_path_factory) -> dict[str, Path]:
    """Both directions of the tiny checkpoint in each format."""
    out = {}
    for fmt in FORMATS:
        folder = tmp_path_factory.mktemp(f"export-{fmt}")
        export_checkpoint(checkpoint, folder, "both", fmt, overwrite=True)
        out[fmt] = folder
    return out


def _inputs(direction: str, channels: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1 if direction == "a2b" else 2)
    return [torch.rand(n, channels, h, w, generator=g) * 2 - 1 for n, h, w in SHAPES]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("direction", ["a2b", "b2a"])
def test_exported_model_matches_pytorch(fmt, direction, exports, reference):
    exported = load_export(exports[fmt], device="cpu", threads=1)
    assert exported.directions == ("a2b", "b2a")
    for x in _inputs(direction, reference.channels(direction[0])):
        want = reference.translate(x, direction)  # [N, C_dst, H, W]
        got = exported.translate(x, direction)
        assert got.shape == want.shape
        diff = (got - want).abs().max().item()
        assert diff <= PARITY_TOL, f"{fmt} {direction} {tuple(x.shape)}: max abs diff {diff:.2e}"


def test_onnx_runs_without_unitgan_with_dynamic_axes(exports, reference):
    """What a user with only onnxruntime and export.json does: names, channels and sizes from the manifest."""
    import onnxruntime as ort

    folder = exports["onnx"]
    manifest = json.loads((folder / "export.json").read_text())
    entry = manifest["directions"]["a2b"]
    session = ort.InferenceSession(str(folder / entry["file"]), providers=["CPUExecutionProvider"])
    m = manifest["size_multiple"]
    for n, h, w in [(1, m * 3, m * 5), (4, m * 6, m * 2)]:
        pixels = np.random.default_rng(n).integers(0, 256, size=(n, entry["in_channels"], h, w)).astype(np.float32)
        x = pixels / manifest["normalisation"]["scale"] + manifest["normalisation"]["offset"]
        (y,) = session.run([entry["output"]], {entry["input"]: x})
        assert y.shape == (n, entry["out_channels"], h, w)
        want = reference.translate(torch.from_numpy(x), "a2b").numpy()
        assert np.abs(y - want).max() <= PARITY_TOL


def test_manifest_says_how_to_run(exports, checkpoint):
    manifest = json.loads((exports["onnx"] / "export.json").read_text())
    assert manifest["format"] == "onnx"
    assert manifest["channels"] == {"a": 1, "b": 3}
    assert manifest["image_modes"] == {"a": "L", "b": "RGB"}
    assert manifest["size_multiple"] == 4
    assert manifest["normalisation"]["scale"] == 127.5 and manifest["normalisation"]["offset"] == -1.0
    assert manifest["directions"]["a2b"] == {
        "file": "a2b.onnx",
        "input": "x_a",
        "output": "x_ab",
        "in_channels": 1,
        "out_channels": 3,
    }
    assert manifest["directions"]["b2a"]["input"] == "x_b" and manifest["directions"]["b2a"]["out_channels"] == 1
    assert manifest["config"]["model"]["ch"] == 8
    assert manifest["source"] == {"checkpoint": str(checkpoint), "step": 2}
    assert all(v <= PARITY_TOL for v in manifest["parity_check"]["max_abs_diff"].values())
    config = json.loads((exports["safetensors"] / "config.json").read_text())
    assert config == manifest["config"]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_other_architectures_export_exactly(fmt, tmp_path):
    """Layer norm, nearest upsampling, zero padding, three downsamplings (size multiple 8), RGB both sides."""
    overrides = [
        "model.ch=4",
        "model.n_res=2",
        "model.n_down=3",
        "model.norm=layer",
        "model.up_norm=none",
        "model.upsample=nearest",
        "model.pad_type=zero",
        "model.out_kernel=3",
        "model.input_nc_a=3",
        "data.crop_size=32",
    ]
    cfg = load_config("demo", overrides)
    torch.manual_seed(0)
    gen = UNITGenerator(cfg.model)
    export_generator(gen, cfg, tmp_path, "both", fmt)
    exported = load_export(tmp_path, threads=1)
    reference = Translator(gen, cfg, torch.device("cpu"))
    for direction in ("a2b", "b2a"):
        for n, h, w in [(1, 16, 24), (2, 19, 33)]:
            x = torch.rand(n, 3, h, w) * 2 - 1
            diff = (exported.translate(x, direction) - reference.translate(x, direction)).abs().max().item()
            assert diff <= PARITY_TOL


def test_one_direction_holds_only_its_weights(checkpoint, tmp_path):
    from safetensors import safe_open

    export_checkpoint(checkpoint, tmp_path, "a2b", "safetensors")
    with safe_open(str(tmp_path / SAFETENSORS_FILE), "pt") as f:
        prefixes = {k.split(".")[0] for k in f.keys()}
    assert prefixes == {"enc_a", "enc_shared", "dec_shared", "dec_b"}
    exported = load_export(tmp_path)
    assert exported.directions == ("a2b",)
    with pytest.raises(UnitganError, match="'b2a' is not in this export"):
        exported.translate(torch.zeros(1, 3, 8, 8), "b2a")
    assert exported.translate(torch.zeros(1, 1, 4, 8), "a2b").shape == (1, 3, 4, 8)  # small images translate too


def test_export_will_not_clobber(checkpoint, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UnitganError, match="not empty"):
        export_checkpoint(checkpoint, tmp_path, "a2b", "torchscript")
    with pytest.raises(UnitganError, match="holds no export"):
        export_checkpoint(checkpoint, tmp_path, "a2b", "torchscript", overwrite=True)
    out = tmp_path / "export"
    export_checkpoint(checkpoint, out, "both", "onnx")
    export_checkpoint(checkpoint, out, "a2b", "torchscript", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["a2b.torchscript.pt", "export.json"]


def test_broken_exports_raise_clear_errors(exports, tmp_path):
    with pytest.raises(UnitganError, match="not a unitgan export folder"):
        load_export(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "export.json").write_text((exports["onnx"] / "export.json").read_text())
    with pytest.raises(UnitganError, match="missing a2b.onnx"):
        load_export(broken)
    (broken / "a2b.onnx").write_bytes(b"not a model")
    (broken / "b2a.onnx").write_bytes(b"not a model")
    with pytest.raises(UnitganError, match="a2b.onnx' cannot be loaded"):
        load_export(broken)
    (broken / "export.json").write_text("{")
    with pytest.raises(UnitganError, match="cannot be read"):
        load_export(broken)


def test_cli_export_and_translate_with_both_engines(checkpoint, tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    for i, (w, h) in enumerate([(16, 16), (21, 13)]):
        random_image(w, h, "L", seed=i).save(images / f"img{i}.png")
    export = tmp_path / "export"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--output", str(export)]) == 0
    assert "exported both" in capsys.readouterr().out
    outputs = {}
    for name, engine, source in [
        ("torch", "torch", checkpoint),
        ("onnx-export", "onnx", export),
        ("onnx-checkpoint", "onnx", checkpoint),
    ]:
        out = tmp_path / name
        argv = ["translate", str(images), "--checkpoint", str(source), "--direction", "a2b", "--output", str(out)]
        assert main([*argv, "--engine", engine]) == 0
        outputs[name] = {p.name: np.asarray(Image.open(p), dtype=np.int16) for p in sorted(out.iterdir())}
    assert sorted(outputs["torch"]) == ["img0.png", "img1.png"]
    for name in ("onnx-export", "onnx-checkpoint"):
        for file, want in outputs["torch"].items():
            assert outputs[name][file].shape == want.shape == (want.shape[0], want.shape[1], 3)
            assert np.abs(outputs[name][file] - want).max() <= 1  # 1e-4 in [-1, 1] can flip one rounding step
    argv = ["translate", str(images), "--checkpoint", str(export), "--direction", "a2b", "--output", str(tmp_path)]
    assert main([*argv, "--engine", "torch"]) == 2
    assert "engine torch needs a torchscript or safetensors export" in capsys.readouterr().err
