"""Large image folders: the file list is scanned once and cached, the paths take about a byte per
character, and the cache notices changes to the folder."""

from __future__ import annotations

import gc
import io
import logging
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unitgan.data import ImageFolderDomain
from unitgan.data import filelist as filelist_module
from unitgan.data.filelist import list_images


def _png_bytes(size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((size, size, 3), dtype=np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()


def make_folder(root: Path, n: int, per_dir: int = 1000) -> Path:
    """``n`` tiny PNGs in sub-folders of ``per_dir``, with directory times set in the past."""
    data = _png_bytes()
    for i in range(n):
        d = root / f"part{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        (d / f"img_{i:06d}.png").write_bytes(data)
    _age(root)
    return root


def _age(root: Path, seconds: float = 60) -> None:
    """Backdate every directory, so that the cache does not treat just-written folders as racy."""
    t = time.time() - seconds
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.utime(d, (t, t))


def _build(folder: Path, cache: Path) -> tuple[ImageFolderDomain, float]:
    """The data set and the seconds to build it."""
    t0 = time.perf_counter()
    ds = ImageFolderDomain(folder, 3, 8, cache_dir=cache)
    return ds, time.perf_counter() - t0


def _check_large_folder(tmp_path: Path, n: int, caplog) -> dict[str, float]:
    folder = make_folder(tmp_path / "trainA", n)
    cache = tmp_path / "cache"
    reads = {"n": 0}
    real = filelist_module.image_size

    def counting(path, max_pixels=0):
        reads["n"] += 1
        return real(path, max_pixels)

    gc.collect()
    tracemalloc.start()
    try:
        with caplog.at_level(logging.INFO, logger="unitgan.data.filelist"):
            filelist_module.image_size = counting
            try:
                first, t_scan = _build(folder, cache)
                assert "scanning" in caplog.text and f"found {n} images" in caplog.text
                caplog.clear()
                second, t_cached = _build(folder, cache)
            finally:
                filelist_module.image_size = real
        assert "scanning" not in caplog.text  # from the cache: no scan, no header read
        assert reads["n"] == n
        assert len(first) == len(second) == n
        for i in (0, 1, n // 2, n - 1):
            assert first.files[i] == second.files[i] == folder / f"part{i // 1000:04d}" / f"img_{i:06d}.png"
        assert first[n - 1].shape == (3, 8, 8)  # read lazily, when asked for
        # what the scanned data set holds: the traced memory its release frees. Whatever code allocated it
        # (pathlib included), and nothing that other threads or earlier tests' handlers keep (they made a
        # snapshot-based count read 117 B/file in the slow suite's long process, 40 B/file alone)
        gc.collect()
        with_first = tracemalloc.get_traced_memory()[0]
        del first
        gc.collect()
        kept = with_first - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return {"scan_s": t_scan, "cached_s": t_cached, "bytes_per_file": kept / n}


def test_5k_files_scanned_once_cached_and_compact(tmp_path, caplog):
    stats = _check_large_folder(tmp_path, 5000, caplog)
    # "part0001/img_001234.png" is 23 characters; +8 bytes of offset; + fixed overheads
    assert 23 < stats["bytes_per_file"] < 60, stats  # above the path text itself: the release was measured
    assert stats["cached_s"] < stats["scan_s"], stats


@pytest.mark.slow
def test_100k_files_memory_stays_flat(tmp_path, caplog):
    small = _check_large_folder(tmp_path / "small", 5000, caplog)
    large = _check_large_folder(tmp_path / "large", 100_000, caplog)
    print(f"5k: {small}\n100k: {large}")
    assert 23 < large["bytes_per_file"] < 48, large  # ~23 path bytes + 8 offset + 8 size; was ~360 with Path objects
    assert large["bytes_per_file"] <= small["bytes_per_file"] + 1
    assert large["cached_s"] < 5, large


def test_same_order_as_list_images_and_cache_sees_changes(tmp_path):
    root = tmp_path / "trainB"
    data = _png_bytes()
    for rel in ["b.png", "a-c.png", "a/b.png", "a/z.JPG", "a/sub/x.png", "notes.txt", "z.webp"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    _age(root)
    cache = tmp_path / "cache"
    ds = ImageFolderDomain(root, 3, 8, cache_dir=cache)
    assert list(ds.files) == list_images(root)  # the order (and so the sampling) of before the cache

    (root / "a" / "sub" / "new.png").write_bytes(data)  # an added file changes its folder's mtime
    assert len(ImageFolderDomain(root, 3, 8, cache_dir=cache)) == len(ds) + 1
    _age(root)
    (root / "a" / "z.JPG").unlink()
    again = ImageFolderDomain(root, 3, 8, cache_dir=cache)
    assert list(again.files) == list_images(root)


def test_cached_sizes_still_apply_the_bad_image_policy(tmp_path):
    root = tmp_path / "trainA"
    make_folder(root, 5)
    (root / "part0000" / "broken.png").write_bytes(b"not a png")
    (root / "part0000" / "tiny.png").write_bytes(_png_bytes(4))
    _age(root)
    cache = tmp_path / "cache"
    for _ in range(2):  # a fresh scan and then the cache give the same verdicts
        ds = ImageFolderDomain(root, 3, 8, bad_images="skip", cache_dir=cache)
        assert len(ds) == 5 and ds.header_bad == 2
        assert not {"broken.png", "tiny.png"} & {Path(p).name for p in ds.files}
        with pytest.raises(Exception, match="broken.png"):
            ImageFolderDomain(root, 3, 8, bad_images="error", cache_dir=cache)


def test_paths_pickle_compactly_for_workers(tmp_path):
    import pickle

    ds = ImageFolderDomain(make_folder(tmp_path / "trainA", 2000), 3, 8, cache_dir=tmp_path / "cache")
    blob = pickle.dumps(ds.files)
    assert len(blob) < 2000 * 40
    assert list(pickle.loads(blob)) == list(ds.files)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1)
    assert next(iter(loader)).shape == (4, 3, 8, 8)
