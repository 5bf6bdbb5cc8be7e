"""Messy data: every kind of bad or odd image file gets a clear answer (error) or is skipped and counted."""

from __future__ import annotations

import io
import json
import logging
import os

import numpy as np
import pytest
import torch
from conftest import folder_overrides, write_images
from PIL import Image

import unitgan.data.io as io_mod
from unitgan.cli import main
from unitgan.config import load_config
from unitgan.data import ImageFolderDomain
from unitgan.data.filelist import list_images
from unitgan.data.io import image_size, load_image
from unitgan.errors import UnitganError
from unitgan.train.loop import train


def _png_bytes(size=(20, 20), seed=0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "PNG")
    return buf.getvalue()


def _jpeg_bytes(size=(20, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


def _corrupt_png() -> bytes:
    data = bytearray(_png_bytes())
    start = data.index(b"IDAT") + 8
    data[start : start + 40] = bytes(40)  # zeros inside the compressed pixels: header fine, decoding fails
    return bytes(data)


BAD_FILES = {
    # name: (bytes, what the error says)
    "zero.png": (b"", "not a readable image"),
    "text.jpg": (b"just some notes, not a picture\n", "not a readable image"),
    "truncated.png": (_png_bytes()[:120], "cannot be read"),
    "truncated.jpg": (_jpeg_bytes()[:200], "cannot be read"),
    "corrupt.png": (_corrupt_png(), "cannot be"),
    "tiny.png": (None, "1x1, smaller than data.crop_size=16"),
}


def _write_bad(folder, name):
    data, _ = BAD_FILES[name]
    if data is None:
        Image.new("RGB", (1, 1), (1, 2, 3)).save(folder / name)
    else:
        (folder / name).write_bytes(data)
    return folder / name


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_each_bad_file_is_named_with_its_reason(tmp_path, name):
    folder = tmp_path / "A"
    write_images(folder, 2)
    path = _write_bad(folder, name)
    _, reason = BAD_FILES[name]
    # the error policy: whether the header check or decoding finds it, the message names the file
    with pytest.raises(UnitganError) as e:
        ds = ImageFolderDomain(folder, 3, crop_size=16)
        for i in range(len(ds)):
            ds[(i, 0)]
    msg = str(e.value)
    assert str(path) in msg and reason in msg and "\n" not in msg, msg
    # the skip policy: the two good images remain, and every item is one of them
    ds = ImageFolderDomain(folder, 3, crop_size=16, bad_images="skip")
    items = [ds[(i, 7)] for i in range(len(ds))]
    assert all(x.shape == (3, 16, 16) and torch.isfinite(x).all() for x in items)
    assert ds.bad_count == 1


def test_skip_warns_once_per_file_counts_and_substitutes_deterministically(tmp_path, caplog):
    folder = tmp_path / "A"
    write_images(folder, 3)
    for name in ("truncated.png", "corrupt.png"):  # both pass the header check, fail when decoded
        _write_bad(folder, name)
    ds = ImageFolderDomain(folder, 3, crop_size=16, bad_images="skip")
    assert len(ds) == 5 and ds.bad_count == 0
    names = [p.name for p in ds.files]
    first = [ds[(i, 100 + i)] for i in range(len(ds))]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = [ds[(i, 100 + i)] for i in range(len(ds)) for _ in range(3)]
    assert ds.bad_count == 2
    assert caplog.text.count("skipping") == 0  # each file was already warned about while building `first`
    # a bad file's item is the next readable file, with the same crop and flip, every time
    fresh = ImageFolderDomain(folder, 3, crop_size=16, bad_images="skip")
    for i in range(len(ds)):
        assert torch.equal(first[i], again[3 * i]) and torch.equal(first[i], fresh[(i, 100 + i)])
    i_bad = names.index("corrupt.png")
    assert torch.equal(first[i_bad], ds[(names.index("img_000.png"), 100 + i_bad)])


def test_skip_warns_once(tmp_path, caplog):
    folder = tmp_path / "A"
    write_images(folder, 1)
    _write_bad(folder, "truncated.png")
    with caplog.at_level(logging.WARNING):
        ds = ImageFolderDomain(folder, 3, crop_size=16, bad_images="skip")
        for _ in range(5):
            for i in range(len(ds)):
                ds[(i, 0)]
    assert caplog.text.count("truncated.png") == 1


def test_all_bad_never_loops(tmp_path):
    folder = tmp_path / "A"
    folder.mkdir()
    for name in ("truncated.png", "corrupt.png"):
        _write_bad(folder, name)
    ds = ImageFolderDomain(folder, 3, crop_size=16, bad_images="skip")
    with pytest.raises(UnitganError, match="holds no readable images .all 2 were skipped"):
        ds[(0, 0)]
    (folder / "truncated.png").unlink()
    (folder / "corrupt.png").unlink()
    _write_bad(folder, "zero.png")
    with pytest.raises(UnitganError, match="holds no usable images"):
        ImageFolderDomain(folder, 3, crop_size=16, bad_images="skip")


def test_odd_formats_are_converted_not_rejected(tmp_path):
    folder = tmp_path / "A"
    folder.mkdir()
    arr16 = (np.arange(400, dtype=np.uint16).reshape(20, 20) * 160).astype(np.uint16)
    Image.fromarray(arr16).save(folder / "deep16.png")  # 16-bit grey
    Image.fromarray(arr16).save(folder / "deep16.tif")
    Image.new("P", (20, 20), 3).save(folder / "palette.png")
    pal = Image.new("P", (20, 20), 0)
    pal.info["transparency"] = 0
    pal.save(folder / "palette_transparent.png", transparency=0)
    Image.new("RGBA", (20, 20), (255, 0, 0, 128)).save(folder / "alpha.png")
    Image.new("LA", (20, 20), (80, 255)).save(folder / "grey_alpha.png")
    Image.new("CMYK", (20, 20), (0, 255, 0, 0)).save(folder / "cmyk.jpg")
    Image.new("1", (20, 20), 1).save(folder / "bilevel.png")
    Image.fromarray(np.full((20, 20), 0.5, dtype=np.float32), "F").save(folder / "float.tif")
    for channels in (1, 3):
        ds = ImageFolderDomain(folder, channels, crop_size=16)
        assert len(ds) == 9
        for i in range(len(ds)):
            x = ds[(i, 0)]
            assert x.shape == (channels, 16, 16) and torch.isfinite(x).all(), ds.files[i]
            assert x.min() >= -1 and x.max() <= 1
    # the colours, not only the shapes: alpha over white, CMYK inverted, grey = 0.299 R + 0.587 G + 0.114 B
    uniform = {
        "alpha.png": (255, 127, 127),
        "grey_alpha.png": (80, 80, 80),
        "palette_transparent.png": (255, 255, 255),
        "cmyk.jpg": (255, 0, 255),
        "bilevel.png": (255, 255, 255),
    }
    for name, rgb in uniform.items():
        tol = 3 if name.endswith(".jpg") else 0  # JPEG is lossy
        grey = round(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])
        assert np.abs(np.asarray(load_image(folder / name, 3), dtype=int) - rgb).max() <= tol, name
        assert np.abs(np.asarray(load_image(folder / name, 1), dtype=int) - grey).max() <= tol + 1, name
        x = ds[([str(f) for f in ds.files].index(str(folder / name)), 0)]  # RGB data set: pixel / 127.5 - 1
        want = torch.tensor(rgb, dtype=torch.float32)[:, None, None] / 127.5 - 1
        assert (x - want).abs().max() <= (tol + 0.5) / 127.5, name
    want16 = np.floor(arr16 / 65535 * 255 + 0.5).astype(np.uint8)  # the 16-bit range scaled to 8 bits
    for name in ("deep16.png", "deep16.tif"):
        np.testing.assert_array_equal(np.asarray(load_image(folder / name, 1)), want16)
        np.testing.assert_array_equal(np.asarray(load_image(folder / name, 3)), np.repeat(want16[:, :, None], 3, 2))


def test_one_pixel_and_small_images_with_load_size(tmp_path):
    folder = tmp_path / "A"
    folder.mkdir()
    Image.new("RGB", (1, 1), (255, 0, 0)).save(folder / "one.png")
    Image.new("RGB", (9, 30), (0, 0, 255)).save(folder / "x_narrow.png")
    with pytest.raises(UnitganError, match="one.png' is 1x1, smaller than data.crop_size=16 .set data.load_size"):
        ImageFolderDomain(folder, 3, crop_size=16)
    ds = ImageFolderDomain(folder, 3, crop_size=16, load_size=16)
    assert all(ds[(i, 0)].shape == (3, 16, 16) for i in range(2))


def test_decompression_bomb_guard(tmp_path, monkeypatch):
    folder = tmp_path / "A"
    write_images(folder, 2, size=(20, 20))  # 400 pixels each
    big = folder / "img_001.png"
    for limit in (300, 150):  # the one pixel limit (unitgan.budget.pixel_limit), not Pillow's
        monkeypatch.setattr(io_mod, "pixel_limit", lambda limit=limit: limit)
        with pytest.raises(UnitganError, match="img_000.png' is too large to decode safely"):
            ImageFolderDomain(folder, 3, crop_size=16)
        with pytest.raises(UnitganError, match="too large to decode safely"):
            load_image(big, 3)
        with pytest.raises(UnitganError, match="too large"):
            image_size(big)


def test_symlink_loops_and_dangling_links(tmp_path):
    folder = tmp_path / "A"
    write_images(folder / "sub", 2)
    (folder / "sub" / "up").symlink_to(folder)  # a directory loop
    (folder / "self.png").symlink_to(folder / "self.png")  # a file link to itself
    (folder / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    files = list_images(folder)
    assert {p.name for p in files} == {"img_000.png", "img_001.png", "self.png", "gone.jpg"}
    with pytest.raises(UnitganError, match=r"gone.jpg' cannot be read: No such file"):
        ImageFolderDomain(folder, 3, crop_size=16)
    (folder / "gone.jpg").unlink()
    with pytest.raises(UnitganError, match=r"self.png' cannot be read: Too many levels of symbolic links"):
        ImageFolderDomain(folder, 3, crop_size=16)
    ds = ImageFolderDomain(folder, 3, crop_size=16, bad_images="skip")
    assert len(ds) == 2 and ds.bad_count == 1


def _deny(monkeypatch, name: str) -> None:
    """Reading ``name`` fails as it would for chmod 000 without root."""
    real_open = io_mod.Image.open

    def fake_open(fp, *a, **k):
        if os.path.basename(str(fp)) == name:
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *a, **k)

    monkeypatch.setattr(io_mod.Image, "open", fake_open)


def test_unreadable_files(tmp_path, monkeypatch):
    folder = tmp_path / "A"
    write_images(folder, 3)
    locked = folder / "img_001.png"
    if os.geteuid() != 0:
        locked.chmod(0)
    else:  # root reads anything: simulate the permission error
        _deny(monkeypatch, locked.name)
    try:
        with pytest.raises(UnitganError, match=r"img_001.png' cannot be read: Permission denied"):
            ImageFolderDomain(folder, 3, crop_size=16)
        ds = ImageFolderDomain(folder, 3, crop_size=16, bad_images="skip")
        assert len(ds) == 2 and ds.bad_count == 1
    finally:
        locked.chmod(0o644)


def test_unlistable_folder(tmp_path, monkeypatch):
    folder = tmp_path / "A"
    write_images(folder / "sub", 1)
    real_scandir = os.scandir

    def fake_scandir(path):
        if os.path.basename(str(path)) == "sub":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", fake_scandir)
    with pytest.raises(UnitganError, match=r"folder '.*sub' cannot be listed: Permission denied"):
        list_images(folder)


def _messy_root(tmp_path):
    root = tmp_path / "data"
    write_images(root / "trainA", 4, mode="L", seed=1)
    write_images(root / "trainB", 4, mode="RGB", seed=2)
    _write_bad(root / "trainA", "zero.png")  # found by the header check
    _write_bad(root / "trainB", "truncated.png")  # found when decoded
    return root


@pytest.mark.parametrize("workers", [0, 1])
def test_training_with_bad_images(tmp_path, capsys, caplog, workers):
    root = _messy_root(tmp_path)
    overrides = folder_overrides(root, tmp_path / "run", **{"data.num_workers": workers, "train.steps": 6})
    # error (the default): one line naming the file, also when a loader worker process finds it
    code = main(["train", "demo", "--no-progress", *overrides])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: image '") and "zero.png" in err and "\n" not in err, err
    (root / "trainA" / "zero.png").unlink()
    code = main(["train", "demo", "--no-progress", *overrides])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "truncated.png' cannot be read" in err and "\n" not in err, err
    # skip: trains, warns once per file, reports the count
    _write_bad(root / "trainA", "zero.png")
    cfg = load_config("demo", [*overrides, "data.bad_images=skip"])
    with caplog.at_level(logging.WARNING):
        result = train(cfg, progress=False)
    assert result.step == 6
    assert caplog.text.count("zero.png") == 1
    if workers == 0:  # (a worker process logs to the handlers it inherited, which caplog does not see)
        assert caplog.text.count("truncated.png") == 1
    assert "2 unreadable image(s) were skipped" in caplog.text
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["bad_images_skipped"] == 2
