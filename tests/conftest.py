"""Shared fixtures: tiny configs that train in a fraction of a second on a CPU."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unitgan.config import Config, load_config

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_child_process_outlives_its_test():
    """A test that leaves a child process running fails, and the child is killed. Loader workers ignore SIGTERM,
    so a leaked one made the whole test process hang at exit (a CI run timed out that way)."""
    yield
    left = multiprocessing.active_children()
    for p in left:
        p.kill()
        p.join(5)
    assert not left, f"child processes still running after the test: {left}"


def tiny_model_overrides(**extra) -> list[str]:
    """Overrides that shrink the demo preset to a network of a few thousand parameters (no run folder)."""
    values = {
        "train.steps": 4,
        "train.ckpt_every": 2,
        "train.log_every": 1,
        "train.image_every": 2,
        "train.image_rows": 2,
        "model.ch": 4,
        "model.n_res": 2,
        "model.n_shared": 1,
        "model.dis_ch": 4,
        "model.dis_n_layers": 2,
        "data.crop_size": 16,
        "data.batch_size": 2,
        "data.num_workers": 0,
        "data.synthetic_train": 32,
        "data.synthetic_test": 4,
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


def tiny_overrides(out_dir: Path | str, **extra) -> list[str]:
    """``tiny_model_overrides`` with the run folder ``out_dir``."""
    return [f"train.out_dir={out_dir}", *tiny_model_overrides(**extra)]


def assert_cli_error(capsys, args: list, *fragments: str) -> str:
    """``unitgan ARGS`` exits 2 with one ``error: ...`` line on stderr that contains every fragment."""
    from unitgan.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    line = err.strip()
    assert line.startswith("error: ") and "\n" not in line and "Traceback" not in line, err
    for f in fragments:
        assert f in line, line
    return line


def tiny_config(out_dir: Path | str, **extra) -> Config:
    return load_config("demo", tiny_overrides(out_dir, **extra))


def write_images(
    folder: Path, n: int, size: tuple[int, int] = (20, 20), mode: str = "RGB", seed: int = 0
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        c = 3 if mode == "RGB" else 1
        arr = rng.integers(0, 256, (size[1], size[0], c), dtype=np.uint8)
        img = Image.fromarray(arr[:, :, 0] if c == 1 else arr, "L" if c == 1 else "RGB")
        p = folder / f"img_{i:03d}.png"
        img.save(p)
        paths.append(p)
    return paths


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """A tiny unpaired data set in the usual layout (A grey, B colour)."""
    root = tmp_path / "data"
    write_images(root / "trainA", 6, mode="L", seed=1)
    write_images(root / "trainB" / "nested", 5, mode="RGB", seed=2)
    write_images(root / "testA", 3, size=(24, 18), mode="L", seed=3)
    write_images(root / "testB", 3, mode="RGB", seed=4)
    return root


def folder_overrides(root: Path, out_dir: Path, **extra) -> list[str]:
    return tiny_overrides(
        out_dir,
        **{
            "data.source": "folder",
            "data.root": str(root),
            "data.crop_size": 16,
            "data.load_size": 0,
            "data.cache_dir": str(Path(out_dir) / "cache"),  # file-list caches stay out of the home folder
            **extra,
        },
    )


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nothing can be created in, even by root: ``chmod 555`` (non-root) or ``chattr +i`` (root).

    Real file-system refusals (EACCES / EPERM), not a monkeypatch. Skipped where neither works."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    immutable = False
    if _writable(d) and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode == 0
    if _writable(d):
        d.chmod(0o755)
        pytest.skip("cannot make a read-only folder here (root without chattr +i)")
    yield d
    if immutable:
        subprocess.run(["chattr", "-i", str(d)], check=False)
    d.chmod(0o755)


def _writable(d: Path) -> bool:
    try:
        (d / ".probe").touch()
    except OSError:
        return False
    (d / ".probe").unlink()
    return True
