"""Hostile and careless use of the commands: files, images, checkpoints, configs and options.

Every case must give a one-line error (``error: ...``, exit 2, no traceback) or a counted skip, and lose
nothing that was there before. docs/hostile_input.md maps each case to its test (the cases of training,
export and serve are in tests/train, tests/export and tests/serve, in test_adversarial_*.py).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
import torch
from conftest import assert_cli_error, tiny_config, tiny_overrides, write_images
from serve_support import tiny_checkpoint

from unitgan.checkpoint import list_checkpoints
from unitgan.train.loop import train

# -- shared fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny trained checkpoint (domain A grey, B colour; size multiple 4)."""
    return tiny_checkpoint(tmp_path_factory.getbasetemp())


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds a few bytes of pixel data (79 KB-bomb style)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\nshowpage\n%%EOF\n"


# -- 3. one pixel limit, from memory, checked from the header -----------------------------------------------


def test_translate_refuses_a_declared_9000x9000_image_before_decoding(ckpt, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bomb.png").write_bytes(_png_header_only(9000, 9000))
    write_images(tmp_path / "in", 1, size=(12, 12))
    line = assert_cli_error(
        capsys,
        ["translate", tmp_path / "in", "--checkpoint", ckpt, "--direction", "b2a", "--output", tmp_path / "out"],
        "bomb.png",
        "9000x9000",
        "more than",
    )
    assert "limit of" in line and not (tmp_path / "out").exists()  # refused before anything was written


def test_the_pixel_limit_is_set_from_memory(monkeypatch):
    from unitgan import budget

    monkeypatch.setattr(budget, "available_memory", lambda: 64 * 2**30)
    big = budget.pixel_limit(100)
    monkeypatch.setattr(budget, "available_memory", lambda: 8 * 2**30)
    assert budget.pixel_limit(100) == big // 8 == 8 * 2**30 // 200


# -- 4. oversized models ---------------------------------------------------------------------------------


def test_oversized_model_on_the_command_line_is_refused_in_one_line(tmp_path, capsys):
    big = {"model.ch": 1024, "model.n_res": 64, "model.n_down": 8, "data.crop_size": 256}
    line = assert_cli_error(
        capsys, ["train", "demo", *tiny_overrides(tmp_path, **big)], "model.ch=1024", "model.n_res=64", "GiB"
    )
    assert "model.n_down=8" in line and not list_checkpoints(tmp_path)
    assert_cli_error(
        capsys,
        ["train", "demo", *tiny_overrides(tmp_path, **{"data.batch_size": 65536, "data.crop_size": 256})],
        "data.batch_size=65536",
    )


def test_oversized_checkpoint_config_is_refused_before_building(ckpt, tmp_path, capsys, monkeypatch):
    state = torch.load(ckpt, weights_only=True)
    state["config"]["model"].update(ch=1024, n_res=64, n_down=8)
    state["config"]["data"]["crop_size"] = 256
    bad = tmp_path / "big.pt"
    torch.save(state, bad)
    import unitgan.models

    def refuse(_cfg):  # the point: nothing is built (an allocation of terabytes would be tried)
        raise AssertionError("built an oversized generator")

    monkeypatch.setattr(unitgan.inference, "build_generator", refuse)
    for cmd in (
        ["export", "--output", tmp_path / "e"],
        ["translate", tmp_path, "--direction", "a2b", "--output", tmp_path / "o"],
    ):
        assert_cli_error(capsys, [cmd[0], "--checkpoint", bad, *cmd[1:]], "big.pt", "model.ch=1024", "model.n_res=64")
    assert unitgan.models is not None


# -- 5. bounded memory for folders of all-different sizes ---------------------------------------------------


def test_translate_holds_at_most_a_batch_of_images_and_writes_as_it_goes(ckpt, tmp_path, monkeypatch):
    from unitgan import inference

    for i in range(12):
        write_images(tmp_path / "in" / f"s{i}", 1, size=(12 + i, 9 + i), seed=i)
    tr = inference.Translator.from_checkpoint(ckpt, "cpu")
    events = []
    real_load, real_write = inference.load_image, inference.BaseTranslator.write_batch
    monkeypatch.setattr(inference, "load_image", lambda *a, **k: events.append(1) or real_load(*a, **k))
    monkeypatch.setattr(
        inference.BaseTranslator,
        "write_batch",
        lambda self, batch, *a: events.extend([-1] * len(batch)) or real_write(self, batch, *a),
    )
    written = tr.translate_files([tmp_path / "in"], tmp_path / "out", "b2a", batch_size=3)
    assert len(written) == 12
    held = [sum(events[: i + 1]) for i in range(len(events))]
    assert max(held) <= 3  # decoded and not yet written, at any moment


# -- 6. operating-system errors: one line each -----------------------------------------------------------


def test_translate_output_errors_are_one_line(ckpt, tmp_path, capsys, read_only_dir):
    write_images(tmp_path / "in", 1, size=(12, 12))
    base = ["translate", tmp_path / "in", "--checkpoint", ckpt, "--direction", "b2a"]
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert_cli_error(capsys, [*base, "--output", a_file], "file.txt", "is a file")
    assert_cli_error(capsys, [*base, "--output", a_file / "sub"], "file.txt")
    assert_cli_error(capsys, [*base, "--output", read_only_dir / "out"], "ro")
    assert_cli_error(capsys, [*base, "--output", tmp_path / "o", "--size", "-5"], "--size must be >= 0")
    assert_cli_error(capsys, [*base, "--output", tmp_path / "o", "--size", "100000"], "100000", "limit")
    assert a_file.read_text() == "x"


def test_evaluate_prints_results_before_failing_to_write_them(ckpt, capsys, read_only_dir):
    from unitgan.cli import main

    code = main(["evaluate", "--checkpoint", str(ckpt), "--no-fid", "--out", str(read_only_dir / "x" / "e.json")])
    out, err = capsys.readouterr()
    assert code == 2 and "accuracy" in out.lower() and err.startswith("error: ") and "\n" not in err.strip(), (out, err)


def test_demo_out_at_a_file_and_serve_bad_port_are_one_line(ckpt, tmp_path, capsys):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    assert_cli_error(capsys, ["demo", "--out", a_file, "--no-progress"], str(a_file))
    assert_cli_error(capsys, ["serve", "--checkpoint", ckpt, "--port", "99999"], "--port", "99999")


# -- 9. only allow-listed formats are decoded --------------------------------------------------------------


def test_eps_is_refused_and_never_decoded_in_translate_serve_and_loaders(ckpt, tmp_path, capsys, monkeypatch):
    from PIL import EpsImagePlugin

    from unitgan.data.io import load_image
    from unitgan.errors import UnitganError
    from unitgan.serve.app import BadImage, decode_upload

    opened = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: opened.append(1) or 1 / 0)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "evil.png").write_bytes(EPS)  # the name says PNG; the content decides
    assert_cli_error(
        capsys,
        [
            "translate",
            tmp_path / "in" / "evil.png",
            "--checkpoint",
            ckpt,
            "--direction",
            "a2b",
            "--output",
            tmp_path / "o",
        ],
        "evil.png",
        "not a readable image",
    )
    with pytest.raises(BadImage) as e:
        decode_upload(EPS, 3, 2**20)
    assert e.value.status == 415
    with pytest.raises(UnitganError, match="evil.png' is not a readable image"):
        load_image(tmp_path / "in" / "evil.png", 3)
    assert opened == []


# -- 10. file modes and float images ------------------------------------------------------------------------


def test_files_respect_the_umask(tmp_path):
    from unitgan.export import export_checkpoint

    old = os.umask(0o022)
    try:
        result = train(tiny_config(tmp_path / "run", **{"train.steps": 2}), progress=False)
        export_checkpoint(result.checkpoint, tmp_path / "onnx", "both", "onnx")
        export_checkpoint(result.checkpoint, tmp_path / "st", "both", "safetensors")
        write_images(tmp_path / "in", 2, size=(12, 12))
        from unitgan.translator import open_translator

        open_translator(result.checkpoint, device="cpu").translate_files([tmp_path / "in"], tmp_path / "out", "b2a")
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != ".lock" and "in" not in p.parts]
    assert len(files) > 8
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {"0o644"}, modes
    dirs = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in (tmp_path / "onnx", tmp_path / "out")}
    assert set(dirs.values()) == {"0o755"}, dirs


def test_float_images_are_scaled_by_their_range_or_refused():
    import numpy as np
    from PIL import Image

    from unitgan.data.io import to_mode
    from unitgan.errors import UnitganError

    half = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), "F")
    assert np.asarray(to_mode(half, 1)).max() == 128  # [0, 1] floats: 0.5 is mid grey, not black
    assert np.asarray(to_mode(Image.fromarray(np.full((4, 4), 200.0, dtype=np.float32), "F"), 1)).max() == 200
    with pytest.raises(UnitganError, match=r"values in \[-3, 2\]"):
        to_mode(Image.fromarray(np.array([[-3.0, 2.0]], dtype=np.float32), "F"), 1)


# -- UX: images, translate policies, checkpoints ------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    import numpy as np
    from PIL import Image

    from unitgan.data.io import load_image

    img = Image.fromarray(np.zeros((10, 20, 3), dtype=np.uint8))  # 20 wide, 10 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "photo.jpg", exif=exif)
    assert load_image(tmp_path / "photo.jpg", 3).size == (10, 20)


def test_translate_skip_existing_and_bad_image_policy_are_counted(ckpt, tmp_path, capsys):
    from unitgan.cli import main

    write_images(tmp_path / "in", 3, size=(12, 12))
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG not really")
    base = ["translate", str(tmp_path / "in"), "--checkpoint", str(ckpt), "--direction", "b2a"]
    out = ["--output", str(tmp_path / "o")]
    assert_cli_error(capsys, [*base, *out], "broken.png")
    assert not (tmp_path / "o").exists()  # refused before anything was written
    assert main([*base, *out, "--bad-images", "skip"]) == 0
    summary = capsys.readouterr().out
    assert "translated 3 image(s)" in summary and "1 skipped (bad)" in summary
    (tmp_path / "o" / "img_001.png").unlink()
    before = (tmp_path / "o" / "img_000.png").read_bytes()
    assert main([*base, *out, "--bad-images", "skip", "--skip-existing"]) == 0
    summary = capsys.readouterr().out
    assert "translated 1 image(s)" in summary and "2 skipped (existing)" in summary and "1 skipped (bad)" in summary
    assert (tmp_path / "o" / "img_000.png").read_bytes() == before


def test_two_inputs_writing_one_output_are_named(ckpt, tmp_path, capsys):
    write_images(tmp_path / "x", 1, size=(12, 12))
    write_images(tmp_path / "y", 1, size=(12, 12))
    assert_cli_error(
        capsys,
        ["translate", tmp_path / "x" / "img_000.png", tmp_path / "y" / "img_000.png", "--checkpoint", ckpt]
        + ["--direction", "b2a", "--output", tmp_path / "o"],
        str(tmp_path / "x" / "img_000.png"),
        str(tmp_path / "y" / "img_000.png"),
    )


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, caplog):
    from unitgan.cli import main

    train(tiny_config(tmp_path / "run", **{"train.steps": 4, "train.ckpt_every": 2}), progress=False)
    newest = list_checkpoints(tmp_path / "run")[-1]
    newest.write_bytes(newest.read_bytes()[:1000])
    write_images(tmp_path / "in", 1, size=(12, 12))
    caplog.set_level("WARNING")
    for cmd in (
        ["translate", str(tmp_path / "in"), "--direction", "b2a", "--output", str(tmp_path / "o")],
        ["export", "--output", str(tmp_path / "e")],
    ):
        assert main([cmd[0], "--checkpoint", str(tmp_path / "run"), *cmd[1:]]) == 0, capsys.readouterr()
    assert "ckpt_000000002.pt, the newest checkpoint that loads" in caplog.text
    assert json.loads((tmp_path / "e" / "export.json").read_text())["source"]["step"] == 2


def test_mismatched_and_nan_checkpoints_name_the_tensor(ckpt, tmp_path, capsys):
    state = torch.load(ckpt, weights_only=True)
    key = next(k for k, v in state["gen"].items() if v.ndim == 4)
    shape = tuple(state["gen"][key].shape)
    wrong = dict(state, gen={**state["gen"], key: torch.zeros(2, *shape[1:])})
    torch.save(wrong, tmp_path / "wrong.pt")
    line = assert_cli_error(capsys, ["export", "--checkpoint", tmp_path / "wrong.pt", "--output", tmp_path / "e"], key)
    assert str(shape) in line and str((2, *shape[1:])) in line
    nan = dict(state, gen={**state["gen"], key: torch.full(shape, float("nan"))})
    torch.save(nan, tmp_path / "nan.pt")
    assert_cli_error(capsys, ["export", "--checkpoint", tmp_path / "nan.pt", "--output", tmp_path / "e"], key, "NaN")


# -- outputs, full disks, exports, MUNIT fields, serve options and options without effect ------------------


@pytest.fixture(scope="module")
def munit_ckpt(tmp_path_factory) -> Path:
    """A tiny MUNIT checkpoint (A grey, B colour, style_dim 4)."""
    from munit_support import tiny_munit_checkpoint

    return tiny_munit_checkpoint(tmp_path_factory.getbasetemp())


def test_style_image_has_the_translate_pixel_limit(munit_ckpt, tmp_path, capsys, monkeypatch):
    import unitgan.budget

    monkeypatch.setattr(unitgan.budget, "available_memory", lambda: 2 * 2**30)  # decoding 2000x2000 fits
    write_images(tmp_path / "in", 1, size=(12, 12), mode="L")
    ref = tmp_path / "ref.png"
    ref.write_bytes(_png_header_only(2000, 2000))  # 4M pixels: over this model's translate limit in 2 GiB
    base = ["translate", tmp_path / "in", "--checkpoint", munit_ckpt, "--direction", "a2b", "--output", tmp_path / "o"]
    assert_cli_error(capsys, [*base, "--style-image", ref], "ref.png", "2000x2000", "limit")
    assert_cli_error(capsys, [*base, "--style-image", tmp_path / "in"], "is a folder")
    assert not (tmp_path / "o").exists()


def test_two_translations_into_one_new_folder_cannot_mix(ckpt, tmp_path, monkeypatch):
    """A second run that starts while the first is writing the same output folder is refused; the first
    completes alone (the race made deterministic: the second starts inside the first's first write)."""
    from unitgan.errors import UnitganError
    from unitgan.inference import BaseTranslator, Translator

    write_images(tmp_path / "in", 3, size=(12, 12))
    out = tmp_path / "new" / "out"
    translator = Translator.from_checkpoint(ckpt, "cpu")
    real_write = BaseTranslator.write_batch
    second: list[Exception] = []

    def write_batch(self, *args, **kwargs):
        if not second:
            try:
                Translator.from_checkpoint(ckpt, "cpu").translate_files([tmp_path / "in"], out, "b2a", 1)
                second.append(AssertionError("the second run was not refused"))
            except UnitganError as e:
                second.append(e)
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(BaseTranslator, "write_batch", write_batch)
    written = translator.translate_files([tmp_path / "in"], out, "b2a", 1)
    assert isinstance(second[0], UnitganError) and "being written by another" in str(second[0]), second
    assert str(out) in str(second[0])
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written) and len(written) == 3


@pytest.fixture(scope="module")
def bank_ckpt(tmp_path_factory) -> Path:
    """A tiny MUNIT checkpoint with model.style_prior=bank (6 rows per domain, all filled)."""
    from munit_support import tiny_bank_checkpoint

    return tiny_bank_checkpoint(tmp_path_factory.mktemp("bank"))


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda g: g["style_bank_count"].fill_(-5), "style_bank_count"),
        (lambda g: g["style_bank_count"].fill_(7), "style_bank_count"),
        (lambda g: g["style_bank_b"].fill_(1e30), "style_bank_b"),
    ],
)
def test_tampered_munit_checkpoint_bank_is_refused(bank_ckpt, tmp_path, capsys, edit, fragment):
    state = torch.load(bank_ckpt, weights_only=True)
    edit(state["gen"])
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    write_images(tmp_path / "in", 1, size=(12, 12), mode="L")
    args = ["translate", tmp_path / "in", "--checkpoint", bad, "--direction", "a2b", "--output", tmp_path / "o"]
    assert_cli_error(capsys, args, "bad.pt", fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("data.synthetic_train=0", "must be >= 1"),
        ("data.synthetic_train=1000000000000", "must be <="),
        ("data.synthetic_test=0", "must be >= 1"),
        ("data.synthetic_test=1000000000000", "must be <="),
    ],
)
def test_synthetic_sizes_are_checked_like_any_key(tmp_path, capsys, override, fragment):
    key = override.split("=")[0]
    args = ["train", "demo", "--no-progress", *tiny_overrides(tmp_path / "run"), override]
    assert_cli_error(capsys, args, f"'{key}'", fragment)
    assert not (tmp_path / "run").exists()  # no config.yaml, no run folder left behind


def test_the_fallback_to_an_older_checkpoint_says_why(tmp_path, capsys, caplog):
    from unitgan.cli import main

    run = tmp_path / "run"
    train(tiny_config(run, **{"train.steps": 4, "train.ckpt_every": 2}), progress=False)
    newest = list_checkpoints(run)[-1]
    newest.unlink()
    newest.mkdir()  # a folder where the newest checkpoint belongs
    write_images(tmp_path / "in", 1, size=(12, 12))
    caplog.set_level("WARNING")
    args = ["translate", str(tmp_path / "in"), "--checkpoint", str(run), "--direction", "b2a", "--output"]
    assert main([*args, str(tmp_path / "o")]) == 0, capsys.readouterr()
    using = [r.getMessage() for r in caplog.records if "the newest checkpoint that loads" in r.getMessage()]
    assert len(using) == 1 and "ckpt_000000002.pt" in using[0], caplog.text
    assert f"'{newest}' is a folder, not a checkpoint file" in using[0]
    caplog.clear()
    train(tiny_config(run, **{"train.steps": 6, "train.ckpt_every": 3}), progress=False)  # no save at 4
    resumed = [r.getMessage() for r in caplog.records if "the newest checkpoint that loads" in r.getMessage()]
    assert len(resumed) == 1 and f"'{newest}' is a folder" in resumed[0], caplog.text


def test_translate_gives_freed_memory_back_whenever_the_image_sizes_change(ckpt, tmp_path, monkeypatch):
    """Buffers of many distinct sizes fragmented the heap (RSS grew with the number of sizes): freed memory is
    returned to the OS (glibc malloc_trim) after each batch whose sizes differ from the previous batch's."""
    import unitgan.inference
    from unitgan.inference import Translator

    calls: list[int] = []
    monkeypatch.setattr(unitgan.inference, "release_free_memory", lambda: calls.append(1))
    for i, size in enumerate([(12, 12), (12, 12), (16, 12), (16, 12), (20, 12)]):
        write_images(tmp_path / "in", 1, size=size, seed=i)[0].rename(tmp_path / "in" / f"x{i}.png")
    Translator.from_checkpoint(ckpt, "cpu").translate_files([tmp_path / "in"], tmp_path / "o", "b2a", 1, native=True)
    assert len(calls) == 3  # 12x12, 16x12, 20x12: once per new size, not per batch


def test_evaluate_refuses_options_that_do_not_apply_and_says_what_it_resizes(
    ckpt, image_root, tmp_path, capsys, caplog
):
    from conftest import folder_overrides

    from unitgan.cli import main

    base = ["evaluate", "--checkpoint", ckpt, "--no-fid", "--out", tmp_path / "e.json"]
    assert_cli_error(capsys, [*base, "--data-root", image_root], "--data-root", "data.source=synthetic")
    assert_cli_error(capsys, [*base, "--gt-a2b", image_root / "testB"], "--gt-a2b", "data.source=synthetic")
    evil = tmp_path / "evil.png"
    evil.write_bytes(_png_header_only(8, 8))
    line = assert_cli_error(capsys, [*base[:3], "--fid", "--inception", evil], "evil.png")
    assert len(line) < 400, line
    assert not (tmp_path / "e.json").exists()

    run = tmp_path / "run"
    assert main(["train", "demo", "--no-progress", *folder_overrides(image_root, run)]) == 0
    gt = tmp_path / "gt"
    write_images(gt, 3, size=(7, 5), mode="RGB")  # testA is 24x18: the ground truth is far smaller
    caplog.set_level("WARNING")
    assert main(["evaluate", "--checkpoint", str(run), "--no-fid", "--gt-a2b", str(gt)]) == 0, capsys.readouterr()
    assert "7x5" in caplog.text and "resized" in caplog.text, caplog.text


def test_styles_are_capped_at_what_the_model_can_give(bank_ckpt, munit_ckpt, tmp_path, capsys):
    write_images(tmp_path / "in", 1, size=(12, 12), mode="L")
    base = ["translate", tmp_path / "in", "--direction", "a2b", "--output", tmp_path / "o"]
    assert_cli_error(capsys, [*base, "--checkpoint", bank_ckpt, "--styles", "7"], "--styles", "6 distinct styles")
    assert_cli_error(capsys, [*base, "--checkpoint", munit_ckpt, "--styles", "1001"], "--styles", "1000")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("model.style_prior=bank", "model.style_prior"),
        ("train.steps=0x4", "train.steps"),
        ("train.steps=010", "train.steps"),  # YAML 1.1 reads a leading 0 as octal: 8 steps
        ("train.steps=0b100", "train.steps"),
        ("train.steps=1:10", "train.steps"),  # and base 60: 70 steps
        ("optim.lr=0x1", "optim.lr"),
    ],
)
def test_settings_without_effect_are_refused(tmp_path, capsys, override, fragment):
    args = ["train", "demo", "--no-progress", *tiny_overrides(tmp_path / "run"), override]
    line = assert_cli_error(capsys, args, fragment)
    assert not (tmp_path / "run").exists(), line


def test_seed_on_unit_and_a_newer_checkpoint_format_are_refused(ckpt, tmp_path, capsys):
    write_images(tmp_path / "in", 1, size=(12, 12))
    base = ["translate", tmp_path / "in", "--direction", "b2a", "--output", tmp_path / "o"]
    assert_cli_error(capsys, [*base, "--checkpoint", ckpt, "--seed", "3"], "--seed", "UNIT is unimodal")
    state = torch.load(ckpt, weights_only=True)
    state["format_version"] = 999
    newer = tmp_path / "newer.pt"
    torch.save(state, newer)
    assert_cli_error(capsys, [*base, "--checkpoint", newer], "newer.pt", "format_version 999")
    assert not (tmp_path / "o").exists()


def test_messages_name_what_is_really_wrong(ckpt, tmp_path, capsys, read_only_dir):
    write_images(tmp_path / "in", 1, size=(12, 12))
    base = ["translate", tmp_path / "in", "--direction", "b2a"]
    assert_cli_error(capsys, [*base, "--checkpoint", "/dev/null", "--output", tmp_path / "o"], "not a regular file")
    dangling, loop = tmp_path / "dangling", tmp_path / "loop"
    dangling.symlink_to(tmp_path / "nowhere")
    loop.symlink_to(loop)
    for link in (dangling, loop):
        assert_cli_error(capsys, [*base, "--checkpoint", ckpt, "--output", link], str(link), "symlink")
        run = ["train", "demo", "--no-progress", *tiny_overrides(link)]
        assert_cli_error(capsys, run, str(link), "symlink")
    assert not (tmp_path / "nowhere").exists()
    # an existing export folder whose parent takes no new entries: the temp folder beside it is what fails
    subprocess.run(["chattr", "-i", str(read_only_dir)], check=False, capture_output=True)
    read_only_dir.chmod(0o755)
    (read_only_dir / "e").mkdir()
    read_only_dir.chmod(0o555)
    subprocess.run(["chattr", "+i", str(read_only_dir)], check=False, capture_output=True)
    line = assert_cli_error(
        capsys,
        ["export", "--checkpoint", ckpt, "--output", read_only_dir / "e", "--format", "safetensors"],
        "beside it",
    )
    assert "cannot be created" not in line


def test_an_interrupted_or_broken_onnxruntime_import_is_not_called_missing(monkeypatch):
    import builtins

    from unitgan.errors import UnitganError
    from unitgan.export import import_onnxruntime

    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "onnxruntime":
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise ImportError("onnxruntime failed to import its binary module") from None  # as its __init__
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_onnxruntime()

    def broken(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("libonnxruntime.so.1: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(UnitganError, match="installed but cannot be imported: libonnxruntime.so.1"):
        import_onnxruntime()


def test_torch_info_logs_stay_quiet_at_exit(tmp_path):
    """torch logs compile metrics and FakeTensor cache statistics at INFO from atexit handlers; where its
    logger level was left unset (an import cut short by Ctrl-C), they followed the CLI's own lines."""
    code = textwrap.dedent(
        """
        import logging, sys
        import torch._subclasses.fake_tensor
        logging.getLogger("torch").setLevel(logging.NOTSET)  # as an interrupted torch import leaves it
        from unitgan.cli import main
        sys.exit(main(["translate", "x", "--checkpoint", sys.argv[1], "--direction", "a2b", "--output", "o"]))
        """
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "none.pt")], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"error: checkpoint '{tmp_path / 'none.pt'}' does not exist"
    ], res.stderr
