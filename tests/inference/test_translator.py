"""The translator interface: one padding rule and one scale rule for PyTorch and exported engines."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image
from serve_support import png_bytes, random_image, tiny_checkpoint

from unitgan.checkpoint import load_checkpoint
from unitgan.cli import main
from unitgan.export import PARITY_TOL, export_checkpoint, load_export, read_manifest
from unitgan.inference import Translator, pad_for_model
from unitgan.translator import open_translator


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def checkpoint_72(checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint relabelled as trained on image folders with ``data.load_size`` 72."""
    state = load_checkpoint(checkpoint)
    state["config"]["data"].update(source="folder", root="unused", load_size=72)
    path = tmp_path_factory.mktemp("load72") / "step_2.pt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def onnx_72(checkpoint_72, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("onnx72")
    export_checkpoint(checkpoint_72, folder, "both", "onnx", overwrite=True)
    return folder


def test_pad_for_model_rule():
    x = torch.arange(2 * 3, dtype=torch.float32).view(1, 1, 2, 3)
    assert pad_for_model(x, 4).shape == (1, 1, 8, 8)  # at least 2 * multiple per side
    assert pad_for_model(torch.zeros(1, 1, 13, 22), 4).shape == (1, 1, 16, 24)  # the next multiple
    y = torch.zeros(1, 1, 16, 24)
    assert pad_for_model(y, 4) is y


@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (4, 8), (9, 4)])
def test_tiny_images_translate_the_same_in_torch_and_onnx(checkpoint, checkpoint_72, onnx_72, hw):
    """No engine refuses a small image: both pad by the same rule and agree."""
    torch_tr = Translator.from_checkpoint(checkpoint_72, "cpu")
    onnx_tr = load_export(onnx_72, threads=1)
    x = torch.rand(1, 1, *hw, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y_torch, y_onnx = torch_tr.translate(x, "a2b"), onnx_tr.translate(x, "a2b")
    assert y_torch.shape == y_onnx.shape == (1, 3, *hw)
    assert (y_torch - y_onnx).abs().max().item() <= PARITY_TOL


def test_export_records_the_training_scale(onnx_72, checkpoint):
    manifest = read_manifest(onnx_72)
    assert manifest["training_scale"] == 72
    assert "training_scale" in manifest["scale_rule"]
    assert load_export(onnx_72, threads=1).scale == 72
    assert Translator.from_checkpoint(checkpoint, "cpu").scale == 0  # synthetic data: rendered at native size


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_translate_at_the_training_scale_by_default(checkpoint_72, onnx_72, tmp_path, capsys, engine):
    """Trained with load_size 72: a 512x512 image translates at 72x72, at 512 with --native."""
    src = tmp_path / "in"
    src.mkdir()
    random_image(512, 512, "L", seed=1).save(src / "square.png")
    random_image(300, 200, "L", seed=2).save(src / "wide.png")
    source = onnx_72 if engine == "onnx" else checkpoint_72
    base = ["translate", str(src), "--checkpoint", str(source), "--direction", "a2b", "--engine", engine]
    sizes = {}
    for flag in ([], ["--native"], ["--keep-size"], ["--size", "20"]):
        out = tmp_path / f"out{len(sizes)}"
        assert main([*base, "--output", str(out), *flag]) == 0, capsys.readouterr().err
        sizes[" ".join(flag)] = {p.name: Image.open(p).size for p in out.glob("*.png")}
    assert sizes[""] == {"square.png": (72, 72), "wide.png": (108, 72)}  # shorter side 72, aspect kept
    assert sizes["--native"] == {"square.png": (512, 512), "wide.png": (300, 200)}
    assert sizes["--keep-size"] == {"square.png": (512, 512), "wide.png": (300, 200)}  # at 72, resized back
    assert sizes["--size 20"] == {"square.png": (20, 20), "wide.png": (20, 20)}
    with pytest.raises(SystemExit):  # one or the other
        main([*base, "--output", str(tmp_path / "x"), "--native", "--size", "20"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_scale_rule_matches_training_resize(checkpoint_72):
    """The default scale is the training loader's resize, so the model sees what it saw in training."""
    from unitgan.data.io import pil_to_tensor
    from unitgan.data.transforms import augment

    tr = open_translator(checkpoint_72, "torch", "cpu")
    img = random_image(90, 120, "L", seed=3)
    x = tr.prepare(img)  # [1, 96, 72]
    trained_view = augment(pil_to_tensor(img), 72, 72, train=False, flip=False, generator=None)  # centre 72 crop
    assert x.shape == (1, 96, 72)
    assert torch.equal(x[:, 12:84], trained_view)
    assert tr.prepare(img, native=True).shape == (1, 120, 90)


def test_server_applies_the_training_scale(checkpoint_72, onnx_72):
    from fastapi.testclient import TestClient

    from unitgan.serve import create_app

    data = png_bytes(random_image(144, 96, "L", seed=4))
    for tr in (Translator.from_checkpoint(checkpoint_72, "cpu"), load_export(onnx_72, threads=1)):
        seen = []
        translate = tr.translate

        def spy(x, direction, translate=translate, seen=seen):
            seen.append(tuple(x.shape[-2:]))
            return translate(x, direction)

        tr.translate = spy
        for native, expected in ((False, (72, 108)), (True, (96, 144))):
            with TestClient(create_app(tr, native=native)) as client:
                assert client.get("/info").json()["training_scale"] == 72
                r = client.post("/translate", files={"image": ("x.png", data)}, data={"direction": "a2b"})
                assert r.status_code == 200, r.text
            assert seen.pop() == expected  # the model ran at the training scale (or native)
            assert Image.open(io.BytesIO(r.content)).size == (144, 96)  # answered at input size
