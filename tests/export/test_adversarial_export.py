"""Hostile and careless exports: atomic overwrite, one writer per folder, and tampered or oversized export files
refused in one line naming the field (docs/hostile_input.md maps each case to its test).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import assert_cli_error, write_images
from munit_support import tiny_bank_checkpoint
from serve_support import tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny trained checkpoint (domain A grey, B colour; size multiple 4)."""
    return tiny_checkpoint(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def bank_ckpt(tmp_path_factory) -> Path:
    """A tiny MUNIT checkpoint with model.style_prior=bank (6 rows per domain, all filled)."""
    return tiny_bank_checkpoint(tmp_path_factory.mktemp("bank"))


def test_export_into_a_read_only_folder_is_one_line(ckpt, capsys, read_only_dir):
    for out in (read_only_dir, read_only_dir / "e"):  # into the folder itself, and a new folder inside it
        assert_cli_error(capsys, ["export", "--checkpoint", ckpt, "--output", out], "ro")


# -- 7. export --overwrite is atomic ---------------------------------------------------------------------


def test_failed_export_overwrite_leaves_the_old_export_usable(ckpt, tmp_path, monkeypatch):
    from unitgan import export
    from unitgan.errors import UnitganError
    from unitgan.export import write

    out = tmp_path / "exp"
    export.export_checkpoint(ckpt, out, "a2b", "torchscript")
    before = sorted(p.name for p in out.iterdir())

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(write, "_write_torchscript", broken)
    with pytest.raises(UnitganError, match="previous export is intact"):
        export.export_checkpoint(ckpt, out, "both", "torchscript", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == before
    assert export.load_export(out).translate(torch.zeros(1, 1, 8, 8), "a2b").shape == (1, 3, 8, 8)
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]  # no temp folders left behind


# -- 8. export.json validated like a config ------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_export(ckpt, tmp_path_factory) -> Path:
    from unitgan.export import export_checkpoint

    out = tmp_path_factory.mktemp("adv") / "onnx"
    export_checkpoint(ckpt, out, "both", "onnx")
    return out


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda m: m.update(size_multiple=0), "size_multiple"),
        (lambda m: m.update(size_multiple="four"), "size_multiple"),
        (lambda m: m.update(size_multiple=-4), "size_multiple"),
        (lambda m: m.update(size_multiple=8), "size_multiple"),
        (lambda m: m["directions"].update(a2b="a2b.onnx"), "directions.a2b"),
        (lambda m: m["directions"]["a2b"].update(in_channels=3), "directions.a2b.in_channels"),
        (lambda m: m.update(channels={"a": 3, "b": 3}), "channels"),
        (lambda m: m.update(training_scale=-1), "training_scale"),
        (lambda m: m["config"]["model"].update(ch="wide"), "config"),
        (lambda m: m.update(directions={}), "directions"),
    ],
)
def test_tampered_export_json_is_one_line_naming_the_field(onnx_export, tmp_path, capsys, edit, fragment):
    copy = tmp_path / "e"
    shutil.copytree(onnx_export, copy)
    manifest = json.loads((copy / "export.json").read_text())
    edit(manifest)
    (copy / "export.json").write_text(json.dumps(manifest))
    write_images(tmp_path / "in", 1, size=(12, 12), mode="L")
    line = assert_cli_error(
        capsys,
        [
            "translate",
            tmp_path / "in",
            "--checkpoint",
            copy,
            "--engine",
            "onnx",
            "--direction",
            "a2b",
            "--output",
            tmp_path / "o",
        ],
        fragment,
    )
    assert "export.json" in line


def test_deeply_nested_export_json_is_one_line(onnx_export, tmp_path, capsys):
    copy = tmp_path / "e"
    shutil.copytree(onnx_export, copy)
    (copy / "export.json").write_text("[" * 100_000 + "]" * 100_000)
    assert_cli_error(capsys, ["serve", "--export", copy, "--port", "1"], "export.json", "nested too deeply")


def test_two_exports_into_one_new_folder_cannot_replace_each_other(ckpt, tmp_path, monkeypatch):
    from unitgan import export
    from unitgan.errors import UnitganError
    from unitgan.export import write

    out = tmp_path / "e"
    real_wrap = write.DirectionalGenerator
    calls = []

    def wrap_while_writing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # a second export into the same new folder finishes while the first is writing
            export.export_checkpoint(ckpt, out, "a2b", "safetensors")
        return real_wrap(*args, **kwargs)

    monkeypatch.setattr(write, "DirectionalGenerator", wrap_while_writing)
    with pytest.raises(UnitganError, match="another export") as e:
        export.export_checkpoint(ckpt, out, "a2b", "torchscript")
    assert str(out) in str(e.value) and "\n" not in str(e.value)
    assert json.loads((out / "export.json").read_text())["format"] == "safetensors"  # the finished one, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]  # no temp folders left behind


@pytest.fixture(scope="module")
def bank_export(bank_ckpt, tmp_path_factory) -> Path:
    from unitgan.export import export_checkpoint

    out = tmp_path_factory.mktemp("bank_export") / "e"
    export_checkpoint(bank_ckpt, out, "a2b", "safetensors")
    return out


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda m: m["style_banks"].update(b=[[float("nan")] * 4] * 6), "style_banks.b"),
        (lambda m: m["style_banks"].update(b=[[1e30] * 4] * 6), "style_banks.b"),
        (lambda m: m.update(style_banks=[]), "style_banks"),
        (lambda m: m.update(style_banks="x"), "style_banks"),
        (lambda m: m["style_banks"].update(b=[[1.0, 2.0, 3.0]] * 6), "style_banks.b"),
        (lambda m: m["style_banks"].update(b=[[0.5] * 4] * 7), "style_banks.b"),
        (lambda m: m["style_banks"].update(b=[]), "style_banks.b"),
        (lambda m: m["style_banks"].update(c=[[0.5] * 4]), "style_banks"),
        (lambda m: m.update(style_dim=0), "style_dim"),
        (lambda m: m.update(style_dim=10**9), "style_dim"),
        (lambda m: m.update(style_dim="4"), "style_dim"),
        (lambda m: m.update(style_encoders=[]), "style_encoders"),
        (lambda m: m.update(training_scale=10**12), "training_scale"),
    ],
)
def test_tampered_munit_export_json_is_one_line_naming_the_field(bank_export, tmp_path, capsys, edit, fragment):
    copy = tmp_path / "e"
    shutil.copytree(bank_export, copy)
    manifest = json.loads((copy / "export.json").read_text())
    edit(manifest)
    (copy / "export.json").write_text(json.dumps(manifest))
    write_images(tmp_path / "in", 1, size=(12, 12), mode="L")
    args = ["translate", tmp_path / "in", "--checkpoint", copy, "--direction", "a2b", "--output", tmp_path / "o"]
    line = assert_cli_error(capsys, args, fragment, "export.json")
    assert not (tmp_path / "o").exists(), line


def test_an_oversized_export_json_is_refused_before_parsing(bank_export, tmp_path, capsys, monkeypatch):
    from unitgan.export import read

    copy = tmp_path / "e"
    shutil.copytree(bank_export, copy)
    monkeypatch.setattr(read, "MAX_MANIFEST_BYTES", 1000)
    monkeypatch.setattr(json, "loads", lambda *a, **k: pytest.fail("parsed"))
    assert_cli_error(capsys, ["serve", "--export", copy, "--port", "1"], "export.json", "1000 bytes")


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda w, k: w[k].fill_(float("nan")), "NaN"),
        (lambda w, k: w.update({k: w[k][:1].clone()}), "has shape"),
    ],
)
def test_tampered_safetensors_export_gets_the_checkpoint_rules(ckpt, tmp_path, capsys, edit, fragment):
    from safetensors.torch import load_file, save_file

    from unitgan.export import export_checkpoint

    out = tmp_path / "e"
    export_checkpoint(ckpt, out, "a2b", "safetensors")
    weights = load_file(str(out / "generator.safetensors"))
    key = next(k for k in sorted(weights) if k.startswith("dec_b.") and k.endswith("weight"))
    edit(weights, key)
    save_file(weights, str(out / "generator.safetensors"))
    write_images(tmp_path / "in", 1, size=(12, 12), mode="L")
    args = ["translate", tmp_path / "in", "--checkpoint", out, "--direction", "a2b", "--output", tmp_path / "o"]
    assert_cli_error(capsys, args, "generator.safetensors", key, fragment)
    assert_cli_error(capsys, ["serve", "--export", out, "--port", "1"], "generator.safetensors", key, fragment)
    assert not (tmp_path / "o").exists()
