"""The command line end to end, and the one-line errors users see on bad input."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_cli_error, folder_overrides, tiny_overrides, write_images
from PIL import Image

from unitgan.cli import main


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def trained(tmp_path, image_root, capsys):
    """A checkpoint trained for a few steps on image folders (A grey, B colour)."""
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "demo", "--no-progress", *folder_overrides(image_root, run)], capsys)
    assert code == 0, err
    assert "done: 4 steps" in out
    return run


def test_train_then_translate_a_folder(trained, image_root, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, err = run_cli(
        ["translate", image_root / "testA", "--checkpoint", trained, "--direction", "a2b", "--output", out_dir],
        capsys,
    )
    assert code == 0, err
    files = sorted(out_dir.glob("*.png"))
    assert [f.name for f in files] == ["img_000.png", "img_001.png", "img_002.png"]
    for f in files:
        img = Image.open(f)
        assert img.size == (24, 18) and img.mode == "RGB"  # input size kept (not a multiple of 4), grey -> colour

    # b2a with a glob and --size; existing outputs are refused without --overwrite
    pattern = str(image_root / "trainB" / "nested" / "*.png")
    out_b = tmp_path / "out_b"
    args = ["translate", pattern, "--checkpoint", trained / "checkpoints", "--direction", "b2a", "--output", out_b]
    code, out, err = run_cli([*args, "--size", "12"], capsys)
    assert code == 0, err
    assert len(list(out_b.glob("*.png"))) == 5
    assert Image.open(out_b / "img_004.png").size == (12, 12) and Image.open(out_b / "img_004.png").mode == "L"
    code, out, err = run_cli(args, capsys)
    assert code == 2 and "exists (use --overwrite" in err
    code, out, err = run_cli([*args, "--overwrite"], capsys)
    assert code == 0


@pytest.mark.integration
def test_python_dash_m_and_resume_message(tmp_path):
    run = tmp_path / "r"
    cmd = [sys.executable, "-m", "unitgan", "train", "demo", "--no-progress", *tiny_overrides(run)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "done: 4 steps" in res.stdout
    assert "resuming" not in res.stderr
    # the same command with more steps resumes from the last checkpoint and says so
    more = [*cmd, "train.steps=6"]
    res = subprocess.run(more, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"resuming from {run / 'checkpoints' / 'ckpt_000000004.pt'} (step 4)" in res.stderr
    assert "4 -> 6 steps" in res.stderr and "done: 6 steps" in res.stdout


def test_bad_data_errors(tmp_path, capsys):
    run = tmp_path / "run"
    # missing root
    assert_cli_error(capsys, ["train", "demo", *folder_overrides(tmp_path / "nope", run)], "nope", "does not exist")
    # missing trainB folder
    root = tmp_path / "d1"
    write_images(root / "trainA", 2)
    assert_cli_error(capsys, ["train", "demo", *folder_overrides(root, run)], "trainB", "does not exist")
    # empty folder
    (root / "trainB").mkdir()
    assert_cli_error(capsys, ["train", "demo", *folder_overrides(root, run)], "trainB", "holds no images")
    # non-image file with an image extension
    (root / "trainB" / "fake.png").write_text("not an image")
    assert_cli_error(capsys, ["train", "demo", *folder_overrides(root, run)], "fake.png", "not a readable image")
    # image smaller than the crop
    (root / "trainB" / "fake.png").unlink()
    write_images(root / "trainB", 1, size=(8, 8))
    assert_cli_error(
        capsys, ["train", "demo", *folder_overrides(root, run)], "img_000.png", "8x8", "smaller than data.crop_size=16"
    )


def test_bad_config_errors(tmp_path, capsys):
    assert_cli_error(capsys, ["train", "demo", "model.nres=2"], "unknown config key 'model.nres'")
    assert_cli_error(capsys, ["train", "demo", "train.steps=many"], "'train.steps' must be an integer")
    assert_cli_error(capsys, ["train", "missing.yaml"], "config file 'missing.yaml' not found")


def test_checkpoint_from_another_config(trained, image_root, capsys):
    overrides = folder_overrides(image_root, trained, **{"model.ch": 8})
    assert_cli_error(capsys, ["train", "demo", *overrides], "another config", "model.ch")


def test_translate_errors(trained, image_root, tmp_path, capsys):
    base = ["translate", image_root / "testA", "--output", tmp_path / "o"]
    assert_cli_error(capsys, [*base, "--checkpoint", trained, "--direction", "x2y"], "direction 'x2y'", "a2b, b2a")
    assert_cli_error(
        capsys, [*base, "--checkpoint", tmp_path / "none.pt", "--direction", "a2b"], "none.pt", "does not exist"
    )
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert_cli_error(capsys, [*base, "--checkpoint", bad, "--direction", "a2b"], "bad.pt", "cannot be loaded")
    ckpt = sorted((trained / "checkpoints").glob("*.pt"))[-1]
    assert_cli_error(
        capsys,
        ["translate", tmp_path / "missing", "--checkpoint", ckpt, "--direction", "a2b", "--output", tmp_path / "o"],
        "missing",
        "does not exist",
    )
    inside = image_root / "testA" / "out"
    assert_cli_error(
        capsys,
        ["translate", image_root / "testA", "--checkpoint", ckpt, "--direction", "a2b", "--output", inside],
        "inside input folder",
    )


def test_errors_have_no_traceback_in_a_real_process(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "unitgan", "train", "demo", "model.norm=group"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: config key 'model.norm' must be one of instance, batch, layer, none; got 'group'"
    ]
    assert list(Path(tmp_path).iterdir()) == []  # refused before anything was written (no runs/demo folder)


def test_translate_tiny_images(trained):
    """Images no larger than the size multiple still translate, and keep their size."""
    import torch

    from unitgan.checkpoint import resolve_checkpoint
    from unitgan.inference import Translator

    tr = Translator.from_checkpoint(resolve_checkpoint(str(trained)), device="cpu")
    for h, w in [(1, 1), (3, 4), (4, 4), (5, 9)]:
        assert tr.translate(torch.zeros(1, 1, h, w), "a2b").shape == (1, 3, h, w)
